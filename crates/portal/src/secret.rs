//! The portal's own secret: it signs session cookies, CSRF tokens and the links in emails.
//!
//! Invariants: the key file is written 0600 and never logged; a signature is compared in
//! constant time; every signed value names its purpose, so a token made for one use (a CSRF
//! token) is never accepted for another (a session).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::path::Path;

/// The file in the data directory that holds the portal's key.
pub const KEY_FILE: &str = "portal.key";

#[derive(Clone)]
pub struct PortalKey([u8; 32]);

impl std::fmt::Debug for PortalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortalKey(…)")
    }
}

impl PortalKey {
    /// A key of its own for one process (sessions end with it).
    pub fn random() -> PortalKey {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        PortalKey(k)
    }

    /// The key in `dir/portal.key`, made on first use, so sessions survive a restart.
    pub fn load_or_create(dir: &Path) -> std::io::Result<PortalKey> {
        let path = dir.join(KEY_FILE);
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(bytes) = B64.decode(text.trim())
            && let Ok(k) = <[u8; 32]>::try_from(bytes.as_slice())
        {
            return Ok(PortalKey(k));
        }
        let key = PortalKey::random();
        gatehouse_store::write_private_file(&path, format!("{}\n", B64.encode(key.0)).as_bytes())?;
        Ok(key)
    }

    fn mac(&self, purpose: &str, value: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("any key length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac
    }

    /// A signature of `value` for `purpose`, URL-safe.
    pub fn sign(&self, purpose: &str, value: &str) -> String {
        B64.encode(self.mac(purpose, value).finalize().into_bytes())
    }

    /// Whether `signature` is `sign(purpose, value)`, compared in constant time.
    pub fn verify(&self, purpose: &str, value: &str, signature: &str) -> bool {
        let Ok(sig) = B64.decode(signature) else {
            return false;
        };
        self.mac(purpose, value).verify_slice(&sig).is_ok()
    }
}

/// A random URL-safe token (a CSRF cookie, a session's id).
pub fn random_token() -> String {
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    B64.encode(b)
}

/// Encodes text for a dot-separated signed value.
pub fn encode(text: &str) -> String {
    B64.encode(text.as_bytes())
}

/// The text [`encode`] made.
pub fn decode(text: &str) -> Option<String> {
    String::from_utf8(B64.decode(text).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_only_for_its_purpose_and_value() {
        let k = PortalKey::random();
        let s = k.sign("session", "u1");
        assert!(k.verify("session", "u1", &s));
        assert!(!k.verify("csrf", "u1", &s));
        assert!(!k.verify("session", "u2", &s));
        assert!(!PortalKey::random().verify("session", "u1", &s));
        assert!(!k.verify("session", "u1", "not base64!"));
    }

    #[test]
    fn the_key_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = PortalKey::load_or_create(dir.path()).unwrap();
        let b = PortalKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.0, b.0);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
