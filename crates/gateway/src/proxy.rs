//! Forwarding to backends: pooled HTTP/1.1 and HTTP/2 (ALPN) connections over plain TCP or
//! rustls, bodies streamed both ways, connect and response timeouts, hop-by-hop headers removed.

use bytes::Bytes;
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the backend could not be reached: {0}")]
    Connect(String),
    #[error("the backend did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the backend connection failed: {0}")]
    Other(String),
}

type Pool = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

#[derive(Clone)]
pub struct Backend {
    client: Pool,
    /// For backend entities whose `tls` says not to check the certificate's name
    /// (`validateCertificateName: false`) or its chain (`validateCertificateChain: false`).
    lenient_name: Pool,
    lenient_chain: Pool,
    pub response_timeout: Duration,
}

/// How strictly a backend's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsCheck {
    #[default]
    Full,
    /// The chain must be trusted, but the name may differ (APIM's validateCertificateName=false).
    ChainOnly,
    /// Nothing is checked (validateCertificateChain=false): for self-signed test backends.
    None,
}

/// A verifier that relaxes the standard one as a backend entity asks.
#[derive(Debug)]
struct Lenient {
    inner: std::sync::Arc<rustls::client::WebPkiServerVerifier>,
    check: TlsCheck,
}

impl rustls::client::danger::ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.check == TlsCheck::None {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

impl Backend {
    /// A pooled client; `extra_roots` (PEM) are trusted besides the public web roots.
    pub fn new(
        connect_timeout: Duration,
        response_timeout: Duration,
        extra_roots: Option<&std::path::Path>,
    ) -> anyhow::Result<Backend> {
        use anyhow::Context;
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = extra_roots {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read the backend CA file {}", path.display()))?
            {
                let cert =
                    cert.with_context(|| format!("{} is not PEM certificates", path.display()))?;
                roots.add(cert).with_context(|| {
                    format!(
                        "a certificate in {} cannot be used as a root",
                        path.display()
                    )
                })?;
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = std::sync::Arc::new(roots);
        let pool = |check: TlsCheck| -> anyhow::Result<Pool> {
            let mut http = HttpConnector::new();
            http.set_connect_timeout(Some(connect_timeout));
            http.set_nodelay(true);
            http.enforce_http(false);
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .context("default TLS versions are supported")?;
            let tls = match check {
                TlsCheck::Full => builder
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth(),
                relaxed => {
                    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                        roots.clone(),
                        provider.clone(),
                    )
                    .build()
                    .context("the backend certificate verifier")?;
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(std::sync::Arc::new(Lenient {
                            inner,
                            check: relaxed,
                        }))
                        .with_no_client_auth()
                }
            };
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http);
            Ok(Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256)
                .build(https))
        };
        Ok(Backend {
            client: pool(TlsCheck::Full)?,
            lenient_name: pool(TlsCheck::ChainOnly)?,
            lenient_chain: pool(TlsCheck::None)?,
            response_timeout,
        })
    }

    /// Sends the request; the response body streams from the backend.
    pub async fn forward(
        &self,
        req: hyper::Request<Body>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ForwardError> {
        self.forward_checked(req, TlsCheck::Full).await
    }

    /// Like `forward`, checking an HTTPS backend's certificate as `check` says.
    pub async fn forward_checked(
        &self,
        req: hyper::Request<Body>,
        check: TlsCheck,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ForwardError> {
        let client = match check {
            TlsCheck::Full => &self.client,
            TlsCheck::ChainOnly => &self.lenient_name,
            TlsCheck::None => &self.lenient_chain,
        };
        match tokio::time::timeout(self.response_timeout, client.request(req)).await {
            Err(_) => Err(ForwardError::Timeout(self.response_timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => Err(ForwardError::Connect(source_chain(&e))),
            Ok(Err(e)) => Err(ForwardError::Other(source_chain(&e))),
        }
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

/// Appends the client address to `X-Forwarded-For` and sets `X-Forwarded-Proto`/`-Host`.
pub fn add_forwarded(headers: &mut HeaderMap, client_ip: &str, proto: &str, host: Option<&str>) {
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => format!("{prev}, {client_ip}"),
        _ => client_ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if proto == "https" { "https" } else { "http" }),
    );
    if let Some(h) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert("x-forwarded-host", h);
    }
}
