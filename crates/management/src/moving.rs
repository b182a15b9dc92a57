//! What a move asks of an instance besides backup, restore and the journal: a digest of its
//! configuration to compare with another instance, the gateway's drain mode and traffic
//! counters, taking over another instance's name, and deleting the instance.
//!
//! Invariant: the digest of two instances is equal exactly when they hold the same resources
//! with the same properties (secrets compared in plaintext, key order ignored) and the same
//! references; it never contains a secret, only hashes.

use crate::error::ApiError;
use crate::respond::{blocking, json_response, parse_json_body};
use crate::service;
use crate::state::AppState;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// Serialises a value with object keys sorted, so equal content hashes equally whatever order
/// its keys were written in.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push(b'{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(v, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

#[derive(Default)]
struct KindDigest {
    count: u64,
    hasher: Sha256,
}

/// `POST /digest` with `{"exclude": [resource ids]}`: per resource type, the number of resources
/// and a SHA-256 over their ids and contents in id order. Excluded resources (those a move's
/// overlay changes on purpose) are counted but their contents are not hashed.
pub async fn digest(state: &Arc<AppState>, body: &[u8]) -> Result<Response, ApiError> {
    let exclude: HashSet<String> = if body.iter().all(u8::is_ascii_whitespace) {
        HashSet::new()
    } else {
        let b = parse_json_body(body)?;
        match b.get("exclude") {
            None | Some(Value::Null) => HashSet::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        ApiError::invalid("exclude", "'exclude' must be a list of resource ids")
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ApiError::invalid(
                    "exclude",
                    "'exclude' must be a list of resource ids",
                ));
            }
        }
    };
    let sealer_store = state.store.clone();
    let (revision, kinds) = blocking(&state.store, move |s| {
        s.read(|r| {
            let sealer = sealer_store.sealer();
            let mut kinds: BTreeMap<String, KindDigest> = BTreeMap::new();
            let mut buf = Vec::new();
            r.for_each_resource(|res| {
                let d = kinds.entry(res.kind.name().to_string()).or_default();
                d.count += 1;
                if exclude.contains(&res.path) {
                    return Ok(());
                }
                let mut props: Map<String, Value> = res.properties;
                let pointers = gatehouse_model::props::secret_pointers(res.kind, &props);
                sealer.open_fields(&mut props, &pointers)?;
                buf.clear();
                buf.extend_from_slice(res.path.as_bytes());
                buf.push(0);
                canonical(&Value::Object(props), &mut buf);
                buf.push(b'\n');
                d.hasher.update(&buf);
                Ok(())
            })?;
            r.for_each_ref(|from, to| {
                let d = kinds.entry("references".to_string()).or_default();
                d.count += 1;
                d.hasher.update(format!("{from}\0{to}\n").as_bytes());
                Ok(())
            })?;
            Ok::<_, gatehouse_store::StoreError>((r.revision(), kinds))
        })
        .map_err(ApiError::from)
    })
    .await?;
    let mut out = Map::new();
    let mut total = 0;
    for (kind, d) in kinds {
        total += d.count;
        out.insert(
            kind,
            json!({"count": d.count, "hash": hex::encode(d.hasher.finalize())}),
        );
    }
    Ok(json_response(
        StatusCode::OK,
        json!({"revision": revision, "total": total, "kinds": out}),
    ))
}

/// `GET /drain` reports the gateway's traffic; `POST /drain {"enabled": bool}` turns drain mode
/// on or off (HTTP/1.1 responses then close their connection, so clients resolve anew).
pub fn drain(state: &AppState, method: &Method, body: &[u8]) -> Result<Response, ApiError> {
    let Some(traffic) = &state.traffic else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "This instance runs no gateway to drain.",
        ));
    };
    let enabled =
        match *method {
            Method::GET => None,
            Method::POST => {
                let b = parse_json_body(body)?;
                Some(b.get("enabled").and_then(Value::as_bool).ok_or_else(|| {
                    ApiError::invalid("enabled", "'enabled' must be true or false")
                })?)
            }
            _ => return Err(crate::respond::method_not_allowed()),
        };
    Ok(json_response(StatusCode::OK, traffic(enabled)))
}

/// `POST /adoptIdentity {"name", "hostnameConfigurations"}`: the target of a same-name move
/// takes the source's service name and host names (APIM's option 2, without deleting first).
pub async fn adopt_identity(
    state: &Arc<AppState>,
    body: &[u8],
    actor: &str,
) -> Result<Response, ApiError> {
    let actor = actor.to_string();
    let b = parse_json_body(body)?;
    let name = b
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("name", "'name' must be the service name to take"))?
        .to_string();
    service::validate_service_name(&name).map_err(|m| ApiError::invalid("name", m))?;
    let hostnames = match b.get("hostnameConfigurations") {
        None | Some(Value::Null) => None,
        Some(v) => Some(service::parse_hostnames(v).map_err(|e| ApiError::validation(vec![e]))?),
    };
    blocking(&state.store, move |s| {
        s.write_as(&actor, |tx| -> Result<(), ApiError> {
            let mut settings = tx
                .service()?
                .ok_or(gatehouse_store::StoreError::NoService)?;
            let before = settings.clone();
            settings.name = name;
            if let Some(h) = hostnames {
                settings.hostname_configurations = h;
            }
            if settings != before {
                tx.set_service(&settings)?;
            }
            Ok(())
        })
    })
    .await?;
    crate::respond::get_service(state).await
}

/// `DELETE /?confirm={service name}`: the instance stops serving and is marked deleted, so it
/// does not start again by accident (APIM deletes the service; a move deletes the source this
/// way). The confirmation names the service, so no path that a client normalised into `/`
/// (`/products/..`) and no request meant for another instance deletes this one.
pub async fn delete_service(
    state: &Arc<AppState>,
    confirm: Option<&str>,
) -> Result<Response, ApiError> {
    let Some(delete) = &state.delete else {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "This instance cannot be deleted through its API.",
        ));
    };
    let name = blocking(&state.store, |s| {
        s.read(|r| Ok(r.service()?.map(|svc| svc.name).unwrap_or_default()))
    })
    .await?;
    if confirm != Some(name.as_str()) {
        return Err(ApiError::invalid(
            "confirm",
            format!(
                "Deleting the service '{name}' stops it and marks its data deleted: send DELETE /?confirm={name} to confirm (the CLI: gatehouse service delete --yes)"
            ),
        ));
    }
    delete();
    Ok(json_response(
        StatusCode::ACCEPTED,
        json!({"status": "Deleting", "message": "The service stops serving and is marked deleted."}),
    ))
}
