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
use std::sync::Arc;
use std::time::Duration;

/// Who the journal says refreshed a secret.
const ACTOR: &str = "secret-refresh";

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
