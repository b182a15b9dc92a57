//! The gateway's side of the link to its primary: the configuration stream (Server-Sent
//! Events over one long-lived HTTP connection) read into [`LinkEvent`]s, and heartbeats.
//!
//! Invariant: a connection that carries nothing for [`SILENCE_LIMIT`] (the primary sends a
//! keep-alive every 5 s) is given up, so a primary that vanished without closing its sockets
//! is noticed and the gateway reconnects.

use crate::replica::SnapshotItem;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use gatehouse_model::ServiceSettings;
use gatehouse_store::JournalEntry;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// How long a stream may stay silent before the gateway reconnects.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(15);

/// Why talking to the primary failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The token was refused (expired, its key regenerated, the gateway deleted): the gateway
    /// must not serve on.
    #[error("the primary refused the gateway token: {0}")]
    Refused(String),
    #[error("cannot reach the primary: {0}")]
    Unreachable(String),
    #[error("the primary sent what this gateway does not understand: {0}")]
    Protocol(String),
    /// A move handed the primary over to the instance at this URL.
    #[error("the primary handed over to {0}")]
    Moved(String),
}

/// One event of the configuration stream.
#[derive(Debug)]
pub enum LinkEvent {
    /// A whole configuration follows, in `Resources` events, up to `SnapshotEnd`.
    Snapshot {
        revision: u64,
        service: Box<ServiceSettings>,
    },
    Resources(Vec<SnapshotItem>),
    SnapshotEnd {
        revision: u64,
    },
    /// Whole revisions through `revision`; the primary was at `primary_revision` then.
    Changes {
        revision: u64,
        entries: Vec<JournalEntry>,
    },
    /// A new token replacing the current one (near its expiry).
    Token(String),
    /// The token stopped being valid.
    Refused(String),
    /// The primary handed over to another instance (a move): follow that one.
    Moved(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSnapshot {
    revision: u64,
    service: ServiceSettings,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireChanges {
    revision: u64,
    entries: Vec<WireEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireEntry {
    revision: u64,
    resource_id: String,
    resource_type: String,
    operation: String,
    value: Option<Value>,
    #[serde(default)]
    references: Vec<String>,
}

impl From<WireEntry> for JournalEntry {
    fn from(e: WireEntry) -> JournalEntry {
        JournalEntry {
            seq: 0,
            revision: e.revision,
            at: String::new(),
            path: e.resource_id,
            kind: e.resource_type,
            op: e.operation,
            value: e.value,
            refs: e.references,
            actor: None,
        }
    }
}

/// The primary's management API, as a gateway reaches it. Clones share the primary's URL, so
/// that the heartbeats follow the stream to a new primary after a move.
#[derive(Debug, Clone)]
pub struct Link {
    client: reqwest::Client,
    primary: std::sync::Arc<std::sync::RwLock<String>>,
}

fn field<T: serde::de::DeserializeOwned>(name: &str, data: &str) -> Result<T, LinkError> {
    serde_json::from_str(data).map_err(|e| LinkError::Protocol(format!("'{name}' event: {e}")))
}

fn decode(name: &str, data: &str) -> Result<Option<LinkEvent>, LinkError> {
    Ok(Some(match name {
        "snapshot" => {
            let s: WireSnapshot = field(name, data)?;
            LinkEvent::Snapshot {
                revision: s.revision,
                service: Box::new(s.service),
            }
        }
        "resources" => LinkEvent::Resources(field::<Vec<SnapshotItem>>(name, data)?),
        "snapshot-end" => LinkEvent::SnapshotEnd {
            revision: field::<Value>(name, data)?["revision"]
                .as_u64()
                .ok_or_else(|| LinkError::Protocol("'snapshot-end' without a revision".into()))?,
        },
        "changes" => {
            let c: WireChanges = field(name, data)?;
            LinkEvent::Changes {
                revision: c.revision,
                entries: c.entries.into_iter().map(JournalEntry::from).collect(),
            }
        }
        "token" => LinkEvent::Token(
            field::<Value>(name, data)?["value"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
        "refused" => LinkEvent::Refused(
            field::<Value>(name, data)?["message"]
                .as_str()
                .unwrap_or("the token is no longer valid")
                .to_string(),
        ),
        "moved" => LinkEvent::Moved(
            field::<Value>(name, data)?["primary"]
                .as_str()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                .ok_or_else(|| LinkError::Protocol("'moved' without the new primary's URL".into()))?
                .to_string(),
        ),
        // Events a newer primary sends that this gateway does not know are left alone.
        _ => return Ok(None),
    }))
}

fn authorization(token: &str) -> String {
    format!("GatewayKey {token}")
}

/// The message of an error answer, for the log and the gateway's status.
async fn refusal_of(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    body["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP {status}"))
}

impl Link {
    /// `primary` is the primary's management base URL; `ca` extra trusted roots (PEM) for a
    /// primary whose certificate a private CA issued.
    pub fn new(primary: &str, ca: Option<&[u8]>) -> Result<Link, LinkError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_keepalive(Duration::from_secs(10));
        if let Some(pem) = ca {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| LinkError::Protocol(format!("the primary's CA: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| LinkError::Protocol(e.to_string()))?;
        Ok(Link {
            client,
            primary: std::sync::Arc::new(std::sync::RwLock::new(
                primary.trim_end_matches('/').to_string(),
            )),
        })
    }

    pub fn primary(&self) -> String {
        self.primary
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Follows another primary from now on (every clone does).
    pub fn repoint(&self, primary: &str) {
        *self.primary.write().unwrap_or_else(|e| e.into_inner()) =
            primary.trim_end_matches('/').to_string();
    }

    /// Opens the configuration stream from `since` (0: a whole snapshot first).
    pub async fn open(
        &self,
        token: &str,
        since: u64,
    ) -> Result<impl Stream<Item = Result<LinkEvent, LinkError>> + use<>, LinkError> {
        let url = format!("{}/gateway-link/stream?since={since}", self.primary());
        let resp = self
            .client
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, authorization(token))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| LinkError::Unreachable(e.to_string()))?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(LinkError::Refused(refusal_of(resp).await));
        }
        if !resp.status().is_success() {
            return Err(LinkError::Unreachable(refusal_of(resp).await));
        }
        let bytes = silence_limited(resp.bytes_stream());
        let events = bytes.eventsource().filter_map(|item| async move {
            match item {
                Ok(ev) => decode(&ev.event, &ev.data).transpose(),
                Err(e) => Some(Err(LinkError::Unreachable(e.to_string()))),
            }
        });
        Ok(events)
    }

    /// Sends usage rows to the primary.
    pub async fn usage(
        &self,
        token: &str,
        rows: &[gatehouse_store::UsageRow],
    ) -> Result<(), LinkError> {
        let url = format!("{}/gateway-link/usage", self.primary());
        let resp = self
            .client
            .post(&url)
            .timeout(Duration::from_secs(10))
            .header(reqwest::header::AUTHORIZATION, authorization(token))
            .json(&serde_json::json!({ "value": rows }))
            .send()
            .await
            .map_err(|e| LinkError::Unreachable(e.to_string()))?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            reqwest::StatusCode::UNAUTHORIZED => Err(LinkError::Refused(refusal_of(resp).await)),
            _ => Err(LinkError::Unreachable(refusal_of(resp).await)),
        }
    }

    /// Reports the node's state; answers the primary's current revision.
    pub async fn heartbeat(&self, token: &str, beat: &Value) -> Result<u64, LinkError> {
        let url = format!("{}/gateway-link/heartbeat", self.primary());
        let resp = self
            .client
            .post(&url)
            .timeout(Duration::from_secs(5))
            .header(reqwest::header::AUTHORIZATION, authorization(token))
            .json(beat)
            .send()
            .await
            .map_err(|e| LinkError::Unreachable(e.to_string()))?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(LinkError::Refused(refusal_of(resp).await));
        }
        let body: Value = resp
            .json()
            .await
            .map_err(|e| LinkError::Protocol(e.to_string()))?;
        Ok(body["revision"].as_u64().unwrap_or(0))
    }
}

/// Ends the byte stream with an error when nothing arrives for [`SILENCE_LIMIT`].
fn silence_limited<S>(inner: S) -> impl Stream<Item = Result<bytes::Bytes, std::io::Error>> + use<S>
where
    S: Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
{
    futures::stream::unfold(Some(inner), |state| async move {
        let mut inner = state?;
        match tokio::time::timeout(SILENCE_LIMIT, inner.next()).await {
            Ok(Some(Ok(b))) => Some((Ok(b), Some(inner))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the primary sent nothing for 15 s",
                )),
                None,
            )),
        }
    })
}
