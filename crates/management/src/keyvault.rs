//! Named values read from a secret store (APIM's Key Vault references): `keyVault.
//! secretIdentifier` names the secret; the configured secret source answers its value — an
//! HTTP endpoint with a bearer token (Key Vault's own `GET {base}/{name}[/{version}]`, answering
//! `{"value": …}`), or a folder holding one file per secret. Values are read when such a named
//! value is written, on `refreshSecret`, and on a schedule (APIM's: every four hours).
//!
//! Invariants: a value read is stored sealed like any secret and never rendered; a failed read
//! keeps the last value and says why in `keyVault.lastStatus`; a read that changes nothing
//! writes nothing (no revision every four hours).

use crate::error::ApiError;
use crate::respond::blocking;
use crate::rules::{self, Mode, WriteOptions};
use crate::state::AppState;
use gatehouse_model::{Kind, ResourcePath};
use serde_json::{Map, Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Who the journal says refreshed a secret.
const ACTOR: &str = "secret-refresh";

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

fn identifier_of(props: &Map<String, Value>) -> Option<String> {
    props
        .get("keyVault")?
        .get("secretIdentifier")?
        .as_str()
        .map(str::to_string)
}

/// Reads one named value's secret and stores the outcome; `Ok(false)` when it is not a
/// secret-store reference.
pub async fn refresh_one(state: &Arc<AppState>, path: ResourcePath) -> Result<bool, ApiError> {
    let key = path.as_string();
    let current = blocking(&state.store, {
        let key = key.clone();
        move |s| Ok(s.read(|r| r.get(&key))?)
    })
    .await?;
    let Some(identifier) = current.as_ref().and_then(|r| identifier_of(&r.properties)) else {
        return Ok(false);
    };
    let outcome = match &state.secret_source {
        Some(source) => source.fetch(&identifier).await,
        None => {
            Err("no secret source is configured: start the instance with --secret-source".into())
        }
    };
    blocking(&state.store, move |s| {
        s.write_as(ACTOR, |tx| -> Result<(), ApiError> {
            let Some(res) = tx.get(&key)? else {
                return Ok(());
            };
            if identifier_of(&res.properties).as_deref() != Some(identifier.as_str()) {
                return Ok(()); // changed meanwhile: its own write reads it
            }
            let Some(props) = with_outcome(&res.properties, &outcome) else {
                return Ok(());
            };
            rules::put_resource(tx, &path, props, Mode::Put, &WriteOptions::default())?;
            Ok(())
        })
    })
    .await?;
    Ok(true)
}

/// The properties after a read, or `None` when nothing would change (the same value and the
/// same status as last time).
fn with_outcome(
    props: &Map<String, Value>,
    outcome: &Result<String, String>,
) -> Option<Map<String, Value>> {
    let (code, message) = match outcome {
        Ok(_) => ("Success", String::new()),
        Err(e) => ("Failed", e.clone()),
    };
    let last = props.get("keyVault").and_then(|k| k.get("lastStatus"));
    let same_status = last.and_then(|l| l.get("code")).and_then(Value::as_str) == Some(code)
        && last.and_then(|l| l.get("message")).and_then(Value::as_str) == Some(message.as_str());
    let same_value = match outcome {
        Ok(v) => props.get("value").and_then(Value::as_str) == Some(v.as_str()),
        Err(_) => true,
    };
    if same_status && same_value {
        return None;
    }
    let mut out = props.clone();
    if let Ok(v) = outcome {
        out.insert("value".into(), json!(v));
    }
    let now = crate::rules::now_rfc3339();
    if let Some(kv) = out.get_mut("keyVault").and_then(Value::as_object_mut) {
        kv.insert(
            "lastStatus".into(),
            json!({"code": code, "message": message, "timeStampUtc": now}),
        );
    }
    Some(out)
}

/// Refreshes every secret-store named value now and then every `interval`, for as long as the
/// instance runs.
pub async fn refresh_forever(state: Arc<AppState>, interval: Duration) {
    loop {
        let paths = blocking(&state.store, |s| {
            s.read(|r| -> Result<Vec<String>, ApiError> {
                Ok(r.children(Kind::NamedValue, "")?
                    .into_iter()
                    .filter(|n| identifier_of(&n.properties).is_some())
                    .map(|n| n.path)
                    .collect())
            })
        })
        .await
        .unwrap_or_default();
        for p in paths {
            if let Ok(path) = ResourcePath::parse_stored(&p)
                && let Err(e) = refresh_one(&state, path).await
            {
                tracing::warn!(named_value = %p, error = %e, "a secret could not be refreshed");
            }
        }
        tokio::time::sleep(interval).await;
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

    #[test]
    fn only_a_change_is_written() {
        let props = json!({"keyVault": {"secretIdentifier": "x", "lastStatus": {"code": "Success", "message": "", "timeStampUtc": "t"}}, "value": "v"});
        let props = props.as_object().unwrap();
        assert!(with_outcome(props, &Ok("v".into())).is_none());
        let changed = with_outcome(props, &Ok("w".into())).unwrap();
        assert_eq!(changed["value"], "w");
        let failed = with_outcome(props, &Err("gone".into())).unwrap();
        assert_eq!(failed["value"], "v", "the last value is kept");
        assert_eq!(failed["keyVault"]["lastStatus"]["code"], "Failed");
    }
}
