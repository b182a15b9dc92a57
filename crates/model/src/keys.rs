//! What a self-hosted gateway holds of a subscription key: a digest, never the key. The primary
//! sends digests; the gateway digests the key a request presents and looks that up, so a copy
//! of a gateway's configuration does not hold a key that opens an API.
//!
//! Invariant: a gateway in digest mode never compares a presented key with a stored value
//! directly (a stolen digest presented as a key matches nothing).

use sha2::{Digest, Sha256};

/// The prefix of a digest, so that one is never mistaken for a key.
pub const DIGEST_PREFIX: &str = "sha256:";

/// The digest of a subscription key (domain-separated SHA-256, hex).
pub fn subscription_key_digest(key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"gatehouse subscription key\n");
    h.update(key.as_bytes());
    format!("{DIGEST_PREFIX}{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_stable_and_distinct() {
        let a = subscription_key_digest("k1");
        assert_eq!(a, subscription_key_digest("k1"));
        assert_ne!(a, subscription_key_digest("k2"));
        assert!(a.starts_with(DIGEST_PREFIX) && a.len() == DIGEST_PREFIX.len() + 64);
        assert_ne!(subscription_key_digest(&a), a);
    }
}
