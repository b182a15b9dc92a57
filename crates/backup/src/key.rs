//! Backup keys: a passphrase (wrapped with age's scrypt KDF) or an age X25519 key
//! (`AGE-SECRET-KEY-1…`, e.g. from a key file). The per-archive data key is age's file key,
//! wrapped by whichever of the two the operator gives.

use age::secrecy::SecretString;
use std::str::FromStr;

/// How an archive's data key is wrapped.
pub enum BackupKey {
    Passphrase(SecretString),
    X25519(Box<age::x25519::Identity>),
}

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupKey::Passphrase(_) => f.write_str("BackupKey::Passphrase(..)"),
            BackupKey::X25519(_) => f.write_str("BackupKey::X25519(..)"),
        }
    }
}

/// scrypt work factor (log2 N) for passphrases: about a second on a server, as age intends.
const WORK_FACTOR: u8 = 18;

impl BackupKey {
    /// Parses a key given as text: an age secret key, else a passphrase (at least 12
    /// characters, so a backup is never protected by something guessable at a glance).
    pub fn parse(text: &str) -> Result<BackupKey, String> {
        let t = text.trim();
        if t.starts_with("AGE-SECRET-KEY-") {
            return age::x25519::Identity::from_str(t)
                .map(|i| BackupKey::X25519(Box::new(i)))
                .map_err(|e| {
                    format!("the backup key looks like an age key but is not valid: {e}")
                });
        }
        if t.chars().count() < 12 {
            return Err("the backup passphrase must have at least 12 characters".into());
        }
        Ok(BackupKey::Passphrase(SecretString::from(t.to_string())))
    }

    /// Reads a key file (an age identity file, comments allowed, or a passphrase on one line).
    pub fn from_file(path: &std::path::Path) -> Result<BackupKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| format!("the key file {} is empty", path.display()))?;
        BackupKey::parse(line)
    }

    /// A fresh age X25519 key, as text to put in a key file.
    pub fn generate() -> String {
        use age::secrecy::ExposeSecret;
        age::x25519::Identity::generate()
            .to_string()
            .expose_secret()
            .to_string()
    }

    pub(crate) fn encryptor(&self) -> age::Encryptor {
        match self {
            BackupKey::Passphrase(p) => {
                let mut r = age::scrypt::Recipient::new(p.clone());
                r.set_work_factor(WORK_FACTOR);
                age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
                    .expect("one scrypt recipient is a valid recipient set")
            }
            BackupKey::X25519(id) => {
                let r = id.to_public();
                age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
                    .expect("one X25519 recipient is a valid recipient set")
            }
        }
    }

    pub(crate) fn identity(&self) -> Box<dyn age::Identity> {
        match self {
            BackupKey::Passphrase(p) => {
                let mut i = age::scrypt::Identity::new(p.clone());
                i.set_max_work_factor(WORK_FACTOR + 2);
                Box::new(i)
            }
            BackupKey::X25519(id) => Box::new((**id).clone()),
        }
    }
}
