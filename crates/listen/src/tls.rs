//! TLS for a listener: a certificate chain and its private key from PEM files, reloaded when
//! either file changes — so a renewed certificate (certbot, cert-manager, an operator's copy)
//! is served without a restart. A pair that does not load (half-written, not matching) is
//! logged and ignored: the certificate in use stays until a good pair replaces it.

use anyhow::{Context, Result, anyhow};
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// Where a listener's certificate chain and key are, in PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What the files looked like when last read: a change in either reloads them.
type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp_of(files: &PemFiles) -> Stamp {
    let of = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [of(&files.cert), of(&files.key)]
}

/// A certificate resolver that serves the last good pair read from [`PemFiles`].
#[derive(Debug)]
pub struct Reloading {
    files: PemFiles,
    what: &'static str,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    stamp: Mutex<Stamp>,
}

impl Reloading {
    /// Loads the pair, failing with a message that names the file and what is wrong with it.
    /// `what` names the listener in messages ("gateway", "management API").
    pub fn load(files: PemFiles, what: &'static str) -> Result<Arc<Reloading>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let stamp = stamp_of(&files);
        let key = certified_key(&files, what, &provider)?;
        Ok(Arc::new(Reloading {
            files,
            what,
            provider,
            current: ArcSwap::from_pointee(key),
            stamp: Mutex::new(stamp),
        }))
    }

    /// A TLS acceptor serving this certificate, offering `alpn` protocols.
    pub fn acceptor(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsAcceptor> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// Reloads the pair if either file changed since it was last read; true if a new pair is
    /// now served.
    pub fn refresh(&self) -> bool {
        let now = stamp_of(&self.files);
        {
            let mut seen = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match certified_key(&self.files, self.what, &self.provider) {
            Ok(key) => {
                self.current.store(Arc::new(key));
                tracing::info!(cert = %self.files.cert.display(), "{}: TLS certificate reloaded", self.what);
                true
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "{}: the changed TLS certificate does not load; the one in use stays", self.what);
                false
            }
        }
    }

    /// Checks the files every `every` until `stop`.
    pub fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => { self.refresh(); }
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
    }

    /// The end-entity certificate being served (DER), for tests and status pages.
    pub fn current_certificate(&self) -> Vec<u8> {
        self.current
            .load()
            .cert
            .first()
            .map(|c| c.to_vec())
            .unwrap_or_default()
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn certified_key(files: &PemFiles, what: &str, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| {
            format!(
                "cannot read the {what} certificate {}",
                files.cert.display()
            )
        })?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", files.cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{} holds no PEM certificate", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("cannot read the {what} private key {}", files.key.display()))?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        anyhow!(
            "the {what} certificate {} and key {} do not go together: {e}",
            files.cert.display(),
            files.key.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PemFiles, Vec<u8>) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let files = PemFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
        (files, cert.cert.der().to_vec())
    }

    #[test]
    fn reloads_a_changed_pair_and_keeps_the_old_one_when_the_new_does_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let (files, first) = pair(dir.path(), "one.test");
        let tls = Reloading::load(files.clone(), "test").unwrap();
        assert_eq!(tls.current_certificate(), first);
        assert!(!tls.refresh(), "nothing changed");
        std::thread::sleep(Duration::from_millis(20));
        let (_, second) = pair(dir.path(), "two.test.example");
        assert!(tls.refresh());
        assert_eq!(tls.current_certificate(), second);
        // A key that is not the certificate's: refused, the second pair stays.
        let other = rcgen::generate_simple_self_signed(vec!["x.test".into()]).unwrap();
        std::fs::write(&files.key, other.signing_key.serialize_pem()).unwrap();
        assert!(!tls.refresh());
        assert_eq!(tls.current_certificate(), second);
        std::fs::write(&files.cert, "not PEM").unwrap();
        assert!(!tls.refresh());
        assert_eq!(tls.current_certificate(), second);
    }

    #[test]
    fn a_bad_pair_is_refused_at_load_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = PemFiles {
            cert: dir.path().join("missing.pem"),
            key: dir.path().join("key.pem"),
        };
        let e = Reloading::load(files, "management API").unwrap_err();
        assert!(format!("{e:#}").contains("missing.pem"), "{e:#}");
    }
}
