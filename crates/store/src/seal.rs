//! Sealing of secret fields at rest (AES-256-GCM with a per-instance key).
//!
//! Invariant: a sealed value is a string `sealed:v1:<base64(nonce ‖ ciphertext)>` whose
//! plaintext is the JSON encoding of the original value, so any JSON value (a key, an object
//! of credentials) can be sealed and restored exactly.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use serde_json::{Map, Value};

const PREFIX: &str = "sealed:v1:";

#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "a sealed secret could not be opened: {0} (is the store key the one this store was written with?)"
)]
pub struct SealError(&'static str);

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Self {
        Sealer {
            cipher: Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(key)),
        }
    }

    pub fn generate_key() -> [u8; 32] {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        key
    }

    pub fn seal(&self, value: &Value) -> Value {
        let plaintext = serde_json::to_vec(value).expect("a JSON value serialises");
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_ref())
            .expect("AES-GCM encryption of an in-memory buffer does not fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Value::String(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// Whether a value is sealed (`sealed:v1:…`).
    pub fn is_sealed(value: &Value) -> bool {
        value.as_str().is_some_and(|s| s.starts_with(PREFIX))
    }

    pub fn open(&self, value: &Value) -> Result<Value, SealError> {
        let Some(s) = value.as_str().and_then(|s| s.strip_prefix(PREFIX)) else {
            // Not sealed (written before the field became secret): pass through.
            return Ok(value.clone());
        };
        let raw = STANDARD.decode(s).map_err(|_| SealError("not base64"))?;
        if raw.len() < 12 {
            return Err(SealError("too short"));
        }
        let (nonce, ct) = raw.split_at(12);
        let pt = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| SealError("authentication failed"))?;
        serde_json::from_slice(&pt).map_err(|_| SealError("not JSON"))
    }

    /// Seals the fields at `pointers` in place.
    pub fn seal_fields(&self, props: &mut Map<String, Value>, pointers: &[&str]) {
        for p in pointers {
            if let Some(slot) = pointer_mut(props, p)
                && !slot.is_null()
            {
                *slot = self.seal(slot);
            }
        }
    }

    /// Opens the fields at `pointers` in place.
    pub fn open_fields(
        &self,
        props: &mut Map<String, Value>,
        pointers: &[&str],
    ) -> Result<(), SealError> {
        for p in pointers {
            if let Some(slot) = pointer_mut(props, p) {
                *slot = self.open(slot)?;
            }
        }
        Ok(())
    }
}

fn pointer_mut<'a>(props: &'a mut Map<String, Value>, pointer: &str) -> Option<&'a mut Value> {
    let mut parts = pointer.trim_start_matches('/').split('/');
    let first = parts.next()?;
    let mut cur = props.get_mut(first)?;
    for part in parts {
        cur = cur.as_object_mut()?.get_mut(part)?;
    }
    Some(cur)
}

/// Removes the fields at `pointers` (used when rendering).
pub fn remove_fields(props: &mut Map<String, Value>, pointers: &[&str]) {
    for p in pointers {
        let trimmed = p.trim_start_matches('/');
        match trimmed.rsplit_once('/') {
            None => {
                props.remove(trimmed);
            }
            Some((parent, leaf)) => {
                if let Some(obj) = pointer_mut(props, parent).and_then(Value::as_object_mut) {
                    obj.remove(leaf);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seal_round_trip_and_tamper() {
        let s = Sealer::new(&Sealer::generate_key());
        let v = json!({"k": [1, "two"]});
        let sealed = s.seal(&v);
        assert!(sealed.as_str().unwrap().starts_with(PREFIX));
        assert!(!sealed.as_str().unwrap().contains("two"));
        assert_eq!(s.open(&sealed).unwrap(), v);
        let other = Sealer::new(&Sealer::generate_key());
        assert!(other.open(&sealed).is_err());
        let mut props = json!({"proxy": {"password": "p", "url": "u"}})
            .as_object()
            .unwrap()
            .clone();
        s.seal_fields(&mut props, &["/proxy/password"]);
        assert_ne!(props["proxy"]["password"], "p");
        s.open_fields(&mut props, &["/proxy/password"]).unwrap();
        assert_eq!(props["proxy"]["password"], "p");
        remove_fields(&mut props, &["/proxy/password"]);
        assert_eq!(
            props,
            json!({"proxy": {"url": "u"}}).as_object().unwrap().clone()
        );
    }
}
