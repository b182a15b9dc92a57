//! Following the primary: connect, apply what the stream brings to the copy, reconnect with
//! backoff when it breaks, and say what state the node is in.
//!
//! Invariants: while the primary is unreachable the copy — and so the gateway — stays at its
//! last revision (fail static); only a refused token stops the gateway serving, and a
//! token that works again (a new token file, the key restored) lets it serve again.

use crate::link::{Link, LinkError, LinkEvent};
use crate::replica::{self, SnapshotPart};
use futures::StreamExt;
use gatehouse_store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What the node is doing, as its heartbeats and the gateway read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeState {
    /// The primary revision the copy is at.
    pub revision: u64,
    /// Why the gateway must not serve (its token was refused), if so.
    pub refused: Option<String>,
    /// Whether the stream is connected now.
    pub connected: bool,
}

/// A snapshot being received: its resources go to a writer thread as they arrive, which
/// writes them in one transaction (dropping this mid-way undoes it).
struct SnapshotInFlight {
    revision: u64,
    count: usize,
    parts: std::sync::mpsc::Sender<SnapshotPart>,
    writer: tokio::task::JoinHandle<Result<u64, gatehouse_store::StoreError>>,
}

/// The follower of one primary.
pub struct Follower {
    pub store: Arc<Store>,
    pub link: Link,
    pub token_file: PathBuf,
    pub gateway_id: String,
    pub state: watch::Sender<NodeState>,
}

/// Reads the token file: the `value` `generateToken` answered, for this gateway.
pub fn read_token(path: &std::path::Path, gateway_id: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.trim().to_string();
    if !is_token_of(&token, gateway_id) {
        return Err(format!(
            "{} does not hold a token of gateway '{gateway_id}' (the value generateToken answers: '{gateway_id}&yyyyMMddHHmm&signature')",
            path.display()
        ));
    }
    Ok(token)
}

const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(5);

impl Follower {
    /// Follows until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut wait = FIRST_RETRY;
        // After a move the new primary's revisions are not the old one's: start with a snapshot.
        let mut since_override = None;
        loop {
            let since = since_override
                .take()
                .unwrap_or_else(|| self.state.borrow().revision);
            let outcome = match read_token(&self.token_file, &self.gateway_id) {
                Ok(token) => self.session(&token, since).await,
                Err(e) => Err((LinkError::Refused(e), false)),
            };
            self.state.send_modify(|s| s.connected = false);
            let progressed = match outcome {
                Ok(()) => true,
                Err((LinkError::Moved(url), _)) => {
                    tracing::info!(gateway = %self.gateway_id, from = %self.link.primary(), to = %url, "the primary handed over after a move; following the new one");
                    self.link.repoint(&url);
                    let store = self.store.clone();
                    let followed = url.clone();
                    let saved = tokio::task::spawn_blocking(move || {
                        replica::set_followed_primary(&store, &followed)
                    })
                    .await;
                    if !matches!(saved, Ok(Ok(()))) {
                        tracing::warn!(
                            "cannot remember the new primary; a restart follows --primary"
                        );
                    }
                    since_override = Some(0);
                    true
                }
                Err((LinkError::Refused(why), progressed)) => {
                    tracing::error!(gateway = %self.gateway_id, reason = %why, "the gateway does not serve: its token was refused; put a valid token in the token file");
                    self.state.send_modify(|s| s.refused = Some(why));
                    progressed
                }
                Err((e, progressed)) => {
                    tracing::warn!(gateway = %self.gateway_id, error = %e, revision = since, "lost the primary; serving the configuration at the last revision applied");
                    progressed
                }
            };
            wait = if progressed {
                FIRST_RETRY
            } else {
                (wait * 2).min(LAST_RETRY)
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One connection: until it ends. The flag says whether it applied anything (so the next
    /// attempt need not back off).
    async fn session(&self, token: &str, since: u64) -> Result<(), (LinkError, bool)> {
        let events = self.link.open(token, since).await.map_err(|e| (e, false))?;
        self.state.send_modify(|s| {
            s.refused = None;
            s.connected = true;
        });
        tracing::info!(gateway = %self.gateway_id, primary = %self.link.primary(), since, "following the primary");
        let mut events = std::pin::pin!(events);
        let mut snapshot: Option<SnapshotInFlight> = None;
        let mut progressed = false;
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| (e, progressed))?;
            match self.on_event(event, &mut snapshot).await {
                Ok(applied) => progressed |= applied,
                Err(e) => return Err((e, progressed)),
            }
        }
        Ok(())
    }

    /// Handles one event; answers whether it applied a revision.
    async fn on_event(
        &self,
        event: LinkEvent,
        snapshot: &mut Option<SnapshotInFlight>,
    ) -> Result<bool, LinkError> {
        match event {
            LinkEvent::Snapshot { revision, service } => {
                let (parts, received) = std::sync::mpsc::channel();
                let store = self.store.clone();
                let writer = tokio::task::spawn_blocking(move || {
                    replica::apply_streamed(&store, revision, &service, received)
                });
                *snapshot = Some(SnapshotInFlight {
                    revision,
                    count: 0,
                    parts,
                    writer,
                });
            }
            LinkEvent::Resources(items) => {
                let s = snapshot
                    .as_mut()
                    .ok_or_else(|| LinkError::Protocol("resources outside a snapshot".into()))?;
                s.count += items.len();
                if s.parts.send(SnapshotPart::Items(items)).is_err() {
                    // The writer stopped: its error says why.
                    let s = snapshot.take().expect("just used");
                    return finish(s).await.map(|_| false);
                }
            }
            LinkEvent::SnapshotEnd { revision } => {
                let s = snapshot
                    .take()
                    .filter(|s| s.revision == revision)
                    .ok_or_else(|| {
                        LinkError::Protocol("a snapshot's end without its start".into())
                    })?;
                let _ = s.parts.send(SnapshotPart::End);
                let count = s.count;
                let revision = finish(s).await?;
                self.state.send_modify(|st| st.revision = revision);
                tracing::info!(
                    revision,
                    resources = count,
                    "took the primary's whole configuration"
                );
                return Ok(true);
            }
            LinkEvent::Changes { revision, entries } => {
                self.apply(move |store| {
                    replica::apply_changes(store, revision, &entries).map(|()| revision)
                })
                .await?;
                return Ok(true);
            }
            LinkEvent::Token(value) => self.save_token(&value),
            LinkEvent::Refused(why) => return Err(LinkError::Refused(why)),
            LinkEvent::Moved(url) => return Err(LinkError::Moved(url)),
        }
        Ok(false)
    }

    async fn apply(
        &self,
        f: impl FnOnce(&Store) -> Result<u64, gatehouse_store::StoreError> + Send + 'static,
    ) -> Result<(), LinkError> {
        let store = self.store.clone();
        let revision = tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| LinkError::Protocol(e.to_string()))?
            .map_err(|e| LinkError::Protocol(format!("cannot apply it to the local copy: {e}")))?;
        self.state.send_modify(|s| s.revision = revision);
        Ok(())
    }

    /// Keeps a rotated token (atomically replaced, owner-only), so a restart uses it.
    fn save_token(&self, value: &str) {
        if !is_token_of(value, &self.gateway_id) {
            tracing::warn!("the primary sent a token for another gateway; ignored");
            return;
        }
        match gatehouse_store::write_private_file(&self.token_file, format!("{value}\n").as_bytes())
        {
            Ok(()) => tracing::info!(gateway = %self.gateway_id, "gateway token rotated"),
            Err(e) => {
                tracing::error!(error = %e, file = %self.token_file.display(), "cannot save the rotated gateway token")
            }
        }
    }
}

/// Waits for a snapshot's writer: the primary revision the copy is at now.
async fn finish(s: SnapshotInFlight) -> Result<u64, LinkError> {
    drop(s.parts);
    s.writer
        .await
        .map_err(|e| LinkError::Protocol(e.to_string()))?
        .map_err(|e| {
            LinkError::Protocol(format!("cannot apply the snapshot to the local copy: {e}"))
        })
}

/// Whether `token` has the shape of a token of `gateway_id` (the primary checks the rest).
fn is_token_of(token: &str, gateway_id: &str) -> bool {
    let id = token.split('&').next().unwrap_or_default();
    token.matches('&').count() >= 2 && id.eq_ignore_ascii_case(gateway_id)
}
