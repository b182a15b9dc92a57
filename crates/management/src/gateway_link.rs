//! The primary's side of its self-hosted gateways (`gatehouse gateway`): a configuration stream
//! and heartbeats, both authenticated by the gateway's token (`Authorization: GatewayKey
//! {token}`, as APIM's self-hosted gateway sends it) rather than by the management token,
//! which never leaves the primary.
//!
//! `GET /gateway-link/stream?since=N` answers Server-Sent Events over one long-lived
//! connection: the whole configuration when `N` is 0 or its changes are no longer in the
//! journal (`snapshot`, `resources`…, `snapshot-end`), then every committed revision as it
//! commits (`changes`), a fresh token when the current one nears its expiry (`token`), and
//! `refused` when the token stops being valid (expired, key regenerated, gateway deleted), and
//! `moved` when a move has handed the instance over to another (its management URL): the
//! gateways follow the new instance, which accepts their tokens (the gateway keys moved).
//!
//! Invariants: a `changes` event carries whole revisions; values carry their secrets in
//! plaintext (the gateway seals them with its own key), so the stream is only ever answered
//! to a valid token of an existing gateway, checked again every few seconds.

use crate::error::ApiError;
use crate::gateway_nodes::Heartbeat;
use crate::gateway_tokens::{self, TokenError};
use crate::render::opened_entry_value;
use crate::respond::{blocking, json_response};
use crate::state::AppState;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use gatehouse_model::Kind;
use gatehouse_store::{JournalEntry, Store, StoreError};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::mpsc;

/// The path prefix of the link's requests.
pub const PREFIX: &str = "/gateway-link/";

/// How often the stream checks the token again and a gateway is expected to report.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// A token is rotated once less than this is left of it.
const ROTATE_WHEN_LEFT: time::Duration = time::Duration::days(10);

/// Resources per `resources` event of a snapshot.
const SNAPSHOT_CHUNK: usize = 500;

/// Journal entries per `changes` event (whole revisions: a larger revision goes at once).
const CHANGES_CHUNK: u64 = 1000;

use gateway_tokens::Checked as Verified;

fn unauthorized(e: &TokenError) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "GatewayTokenInvalid",
        format!("The gateway token was refused: {e}."),
    )
}

fn token_of(headers: &HeaderMap) -> Result<String, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("GatewayKey "))
        .map(|t| t.trim().to_string())
        .ok_or_else(|| unauthorized(&TokenError::Malformed))
}

fn verify(store: &Store, token: &str) -> Result<Verified, TokenError> {
    let now = OffsetDateTime::now_utc();
    store
        .read(|r| -> Result<_, StoreError> { Ok(gateway_tokens::verify_detailed(r, token, now)) })
        .map_err(|e| TokenError::Store(e.to_string()))?
}

/// Serves one request below [`PREFIX`].
pub async fn serve(
    state: &Arc<AppState>,
    method: &Method,
    headers: &HeaderMap,
    rest: &str,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let token = token_of(headers)?;
    let store = state.store.clone();
    let checked = {
        let token = token.clone();
        tokio::task::spawn_blocking(move || verify(&store, &token))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
    };
    let verified = checked.map_err(|e| unauthorized(&e))?;
    match (method, rest.trim_end_matches('/')) {
        (&Method::GET, "stream") => {
            let since = match query.get("since") {
                None => 0,
                Some(v) => v.parse::<u64>().map_err(|_| {
                    ApiError::invalid("since", format!("'since' must be a revision; '{v}' is not"))
                })?,
            };
            Ok(stream(state.clone(), token, verified, since))
        }
        (&Method::POST, "heartbeat") => heartbeat(state, &verified.gateway, body).await,
        (&Method::POST, "usage") => usage(state, &verified.gateway, body).await,
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("'{rest}' is not part of the gateway link (stream, heartbeat)."),
        )),
    }
}

async fn heartbeat(
    state: &Arc<AppState>,
    gateway: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let beat: Heartbeat = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("body", format!("the heartbeat is not valid: {e}")))?;
    if beat.node.is_empty() || beat.node.len() > 256 {
        return Err(ApiError::invalid(
            "node",
            "'node' must be 1 to 256 characters",
        ));
    }
    state.gateway_nodes.report(gateway, beat);
    let revision = blocking(&state.store, |s| Ok(s.revision()?)).await?;
    Ok(json_response(StatusCode::OK, json!({"revision": revision})))
}

/// The most usage rows one report may carry.
const MAX_USAGE_ROWS: usize = 50_000;

/// `POST /gateway-link/usage` with `{"value": [usage rows]}`: a gateway's usage joins the
/// instance's (its reports then cover every region). Rows without a region are the gateway's.
async fn usage(state: &Arc<AppState>, gateway: &str, body: &[u8]) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize)]
    struct Report {
        value: Vec<gatehouse_store::UsageRow>,
    }
    let mut report: Report = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid("value", format!("the usage report is not valid: {e}")))?;
    if report.value.len() > MAX_USAGE_ROWS {
        return Err(ApiError::invalid(
            "value",
            format!("a usage report carries at most {MAX_USAGE_ROWS} rows"),
        ));
    }
    for row in &mut report.value {
        if row.region.is_empty() {
            row.region = gateway.to_string();
        }
    }
    let rows = report.value;
    let count = rows.len();
    blocking(&state.store, move |s| Ok(s.add_usage(&rows)?)).await?;
    Ok(json_response(StatusCode::OK, json!({"rows": count})))
}

fn stream(state: Arc<AppState>, token: String, verified: Verified, since: u64) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(8);
    tokio::spawn(async move {
        let gateway = verified.gateway.clone();
        if let Err(e) = produce(&state, &tx, token, verified, since).await {
            tracing::warn!(gateway = %gateway, error = %e, "gateway stream ended");
        }
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(CHECK_EVERY))
        .into_response()
}

/// Why a stream stopped sending.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("the gateway disconnected")]
    Gone,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Api(String),
}

impl From<ApiError> for StreamEnd {
    fn from(e: ApiError) -> Self {
        StreamEnd::Api(e.internal.unwrap_or(e.message))
    }
}

async fn send(tx: &mpsc::Sender<Event>, name: &str, data: &Value) -> Result<(), StreamEnd> {
    let event = Event::default().event(name).data(data.to_string());
    tx.send(event).await.map_err(|_| StreamEnd::Gone)
}

async fn produce(
    state: &Arc<AppState>,
    tx: &mpsc::Sender<Event>,
    mut token: String,
    mut verified: Verified,
    since: u64,
) -> Result<(), StreamEnd> {
    let mut revisions = state.store.subscribe();
    let mut stopping = state.stopping.clone();
    let store = state.store.clone();
    let behind = tokio::task::spawn_blocking(move || {
        store.read(|r| -> Result<bool, StoreError> {
            Ok(since == 0 || since > r.revision() || r.replaced_since(since)?)
        })
    })
    .await
    .map_err(|e| StreamEnd::Api(e.to_string()))??;
    let mut at = if behind {
        send_snapshot(state, tx).await?
    } else {
        since
    };
    // An interval, not a sleep per wait: a busy primary must not postpone the checks.
    let mut checks = tokio::time::interval(CHECK_EVERY);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    checks.tick().await;
    loop {
        if let Some(url) = state.freeze.moved_to(&state.store).await {
            send(tx, "moved", &json!({"primary": url})).await?;
            tracing::info!(gateway = %verified.gateway, to = %url, "gateway sent to the instance this one handed over to");
            return Ok(());
        }
        at = send_changes(state, tx, at).await?;
        let recheck_due = tokio::select! {
            _ = revisions.changed() => false,
            () = state.freeze.changed.notified() => false,
            _ = checks.tick() => true,
            stop = stopping.wait_for(|s| *s) => {
                drop(stop);
                return Ok(());
            }
            () = tx.closed() => return Err(StreamEnd::Gone),
        };
        if recheck_due {
            match recheck(state, tx, &token, &verified).await? {
                Some((t, v)) => (token, verified) = (t, v),
                None => return Ok(()),
            }
        }
    }
}

/// Checks the token again: `None` (after a `refused` event) when it is no longer valid; a new
/// token (sent as a `token` event) when the current one nears its expiry.
async fn recheck(
    state: &Arc<AppState>,
    tx: &mpsc::Sender<Event>,
    token: &str,
    verified: &Verified,
) -> Result<Option<(String, Verified)>, StreamEnd> {
    let store = state.store.clone();
    let t = token.to_string();
    let checked = tokio::task::spawn_blocking(move || verify(&store, &t))
        .await
        .map_err(|e| StreamEnd::Api(e.to_string()))?;
    if let Err(e) = checked {
        let code = match e {
            TokenError::Expired(_) => "GatewayTokenExpired",
            _ => "GatewayTokenInvalid",
        };
        send(
            tx,
            "refused",
            &json!({"code": code, "message": e.to_string()}),
        )
        .await?;
        return Ok(None);
    }
    let now = OffsetDateTime::now_utc();
    if verified.expiry - now > ROTATE_WHEN_LEFT {
        return Ok(Some((token.to_string(), verified.clone())));
    }
    let expiry = now + gateway_tokens::MAX_LIFETIME - time::Duration::minutes(1);
    let gateway = verified.gateway.clone();
    let field = verified.key_field;
    let key = blocking(&state.store, move |s| {
        Ok(s.read(|r| r.get(&format!("/gateways/{gateway}")))?
            .and_then(|g| {
                g.properties
                    .get(field)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }))
    })
    .await?;
    let Some(key) = key else {
        return Ok(Some((token.to_string(), verified.clone())));
    };
    let fresh = gateway_tokens::issue(&verified.gateway, &key, expiry);
    send(tx, "token", &json!({"value": fresh})).await?;
    tracing::info!(gateway = %verified.gateway, "gateway token rotated over its stream");
    let renewed = Verified {
        expiry,
        ..verified.clone()
    };
    Ok(Some((fresh, renewed)))
}

/// Sends the whole configuration at one revision; returns that revision.
async fn send_snapshot(state: &Arc<AppState>, tx: &mpsc::Sender<Event>) -> Result<u64, StreamEnd> {
    let (store, events) = (state.store.clone(), tx.clone());
    tokio::task::spawn_blocking(move || stream_snapshot(&store, &events))
        .await
        .map_err(|e| StreamEnd::Api(e.to_string()))?
}

/// Reads the configuration in one read transaction and sends it while it reads, so the
/// gateway writes the first resources while the last are read. The bounded channel holds the
/// reader back to the connection's pace (the read transaction stays open that long: writers
/// go on, the write log is checkpointed only after).
fn stream_snapshot(store: &Store, tx: &mpsc::Sender<Event>) -> Result<u64, StreamEnd> {
    let send = |name: &str, data: &Value| {
        tx.blocking_send(Event::default().event(name).data(data.to_string()))
            .map_err(|_| StoreError::Corrupt("the gateway disconnected during a snapshot".into()))
    };
    let revision = store.read(|r| -> Result<u64, StoreError> {
        let mut refs: HashMap<String, Vec<String>> = HashMap::new();
        r.for_each_ref(|from, to| {
            refs.entry(from).or_default().push(to);
            Ok(())
        })?;
        let service = serde_json::to_value(r.service()?.ok_or(StoreError::NoService)?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let head =
            json!({"revision": r.revision(), "service": service, "resources": r.resource_count()?});
        send("snapshot", &head)?;
        let mut chunk = Vec::with_capacity(SNAPSHOT_CHUNK);
        r.for_each_resource(|res| {
            let references = refs.remove(&res.path).unwrap_or_default();
            let mut value = res.properties;
            if res.kind == Kind::Subscription {
                digest_keys(&mut value);
            }
            chunk.push(json!({"resourceId": res.path, "value": value, "references": references}));
            if chunk.len() >= SNAPSHOT_CHUNK {
                send("resources", &Value::Array(std::mem::take(&mut chunk)))?;
            }
            Ok(())
        })?;
        if !chunk.is_empty() {
            send("resources", &Value::Array(chunk))?;
        }
        send("snapshot-end", &json!({"revision": r.revision()}))?;
        Ok(r.revision())
    })?;
    Ok(revision)
}

/// Sends every revision after `at` that is committed now; returns the last one sent. A
/// restore on the primary (a `replace` entry) or a compacted journal sends a snapshot.
async fn send_changes(
    state: &Arc<AppState>,
    tx: &mpsc::Sender<Event>,
    mut at: u64,
) -> Result<u64, StreamEnd> {
    loop {
        let store = state.store.clone();
        let (entries, current, snapshot) = tokio::task::spawn_blocking(move || {
            store.read(|r| -> Result<_, StoreError> {
                if r.replaced_since(at)? {
                    return Ok((Vec::new(), r.revision(), true));
                }
                Ok((r.journal_revisions(at, CHANGES_CHUNK)?, r.revision(), false))
            })
        })
        .await
        .map_err(|e| StreamEnd::Api(e.to_string()))??;
        if snapshot {
            at = send_snapshot(state, tx).await?;
            continue;
        }
        let Some(last) = entries.last().map(|e| e.revision) else {
            return Ok(at);
        };
        let sealer = state.store.sealer();
        let items = entries
            .into_iter()
            .map(|e| entry_json(sealer, e))
            .collect::<Result<Vec<_>, ApiError>>()?;
        send(
            tx,
            "changes",
            &json!({"revision": last, "primaryRevision": current, "entries": items}),
        )
        .await?;
        at = last;
    }
}

/// A subscription's keys as a gateway gets them: digests (`gatehouse_model::keys`).
fn digest_keys(props: &mut serde_json::Map<String, Value>) {
    for field in ["primaryKey", "secondaryKey"] {
        if let Some(Value::String(key)) = props.get_mut(field) {
            *key = gatehouse_model::keys::subscription_key_digest(key);
        }
    }
}

fn entry_json(sealer: &gatehouse_store::Sealer, e: JournalEntry) -> Result<Value, ApiError> {
    let mut value = opened_entry_value(sealer, &e.kind, e.value)?;
    if Kind::from_name(&e.kind) == Some(Kind::Subscription)
        && let Some(Value::Object(props)) = value.as_mut()
    {
        digest_keys(props);
    }
    Ok(json!({
        "revision": e.revision,
        "resourceId": e.path,
        "resourceType": e.kind,
        "operation": e.op,
        "value": value,
        "references": e.refs,
    }))
}
