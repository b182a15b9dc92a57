//! Where secret-store named values (APIM's Key Vault references) are read from: an HTTP
//! endpoint with a bearer token (Key Vault's own `GET {base}/{name}[/{version}]`, answering
//! `{"value": …}`), or a folder holding one file per secret.
//!
//! Invariant: a secret's name is letters, digits, `-` and `_` only, so a folder source never
//! reads outside its folder.

use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Where secrets are read from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// `GET {base}/{name}[/{version}]?api-version=7.4` with `Authorization: Bearer {token}`.
    Http { base: String, token: Option<String> },
    /// One file per secret, named as the secret.
    Folder(PathBuf),
}

/// The secret's name and version in an identifier (`https://v.vault.azure.net/secrets/n/ver`,
/// or a bare name).
fn name_of(identifier: &str) -> Result<(String, Option<String>), String> {
    let rest = match identifier.find("/secrets/") {
        Some(i) => &identifier[i + "/secrets/".len()..],
        None => identifier,
    };
    let mut parts = rest.trim_end_matches('/').split('/');
    let name = parts.next().unwrap_or_default().to_string();
    let version = parts.next().map(str::to_string).filter(|v| !v.is_empty());
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !ok(&name) || version.as_deref().is_some_and(|v| !ok(v)) {
        return Err(format!(
            "'{identifier}' does not name a secret (letters, digits, '-' and '_')"
        ));
    }
    Ok((name, version))
}

impl SecretSource {
    /// Parses `https://…`, `http://…` or `file:///folder`.
    pub fn parse(url: &str, token: Option<String>) -> Result<SecretSource, String> {
        if let Some(dir) = url.strip_prefix("file://") {
            return Ok(SecretSource::Folder(PathBuf::from(dir)));
        }
        if url.starts_with("https://") || url.starts_with("http://") {
            return Ok(SecretSource::Http {
                base: url.trim_end_matches('/').to_string(),
                token,
            });
        }
        Err(format!(
            "the secret source '{url}' must be an https:// URL or a file:// folder"
        ))
    }

    /// The secret's current value.
    pub async fn fetch(&self, identifier: &str) -> Result<String, String> {
        let (name, version) = name_of(identifier)?;
        match self {
            SecretSource::Folder(dir) => {
                let path = dir.join(&name);
                tokio::fs::read_to_string(&path)
                    .await
                    .map(|v| v.trim_end_matches(['\r', '\n']).to_string())
                    .map_err(|e| {
                        format!(
                            "the secret '{name}' could not be read from {}: {e}",
                            dir.display()
                        )
                    })
            }
            SecretSource::Http { base, token } => {
                let url = match &version {
                    Some(v) => format!("{base}/{name}/{v}?api-version=7.4"),
                    None => format!("{base}/{name}?api-version=7.4"),
                };
                let mut req = reqwest::Client::new()
                    .get(&url)
                    .timeout(Duration::from_secs(10));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| format!("the secret source could not be reached: {e}"))?;
                let status = resp.status();
                if !status.is_success() {
                    return Err(format!("the secret source answered {status} for '{name}'"));
                }
                let body: Value = resp
                    .json()
                    .await
                    .map_err(|e| format!("the secret source's answer is not JSON: {e}"))?;
                body.get("value")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        format!("the secret source's answer for '{name}' has no 'value'")
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_name_secrets() {
        assert_eq!(
            name_of("https://v.vault.azure.net/secrets/db-pw").unwrap(),
            ("db-pw".into(), None)
        );
        assert_eq!(
            name_of("https://v.vault.azure.net/secrets/db-pw/abc123").unwrap(),
            ("db-pw".into(), Some("abc123".into()))
        );
        assert_eq!(name_of("plain").unwrap(), ("plain".into(), None));
        assert!(name_of("https://v/secrets/../etc").is_err());
        assert!(name_of("").is_err());
    }
}
