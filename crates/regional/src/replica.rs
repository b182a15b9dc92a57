//! The gateway's own copy of its primary's configuration: a store in its data directory that
//! takes the primary's snapshots and revisions, so that the same gateway code as `serve`
//! follows it, and a restart while the primary is gone starts from it.
//!
//! Invariants: a snapshot or a batch of whole revisions is applied in one store transaction,
//! together with the primary revision it brings the copy to (so the copy is never between two
//! primary revisions); secret values are sealed with the gateway's own key (`store.key`).

use gatehouse_model::{ResourcePath, ServiceSettings};
use gatehouse_store::{JournalEntry, Store, StoreError};
use serde_json::{Map, Value, json};

/// The meta key of the primary revision the copy is at.
const PRIMARY_REVISION: &str = "primary_revision";

/// Local journal entries kept behind the newest: the in-process gateway follows at once, so a
/// short history is enough (one that falls behind reloads).
const LOCAL_HISTORY: u64 = 1000;

/// One resource of a snapshot.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotItem {
    pub resource_id: String,
    pub value: Map<String, Value>,
    #[serde(default)]
    pub references: Vec<String>,
}

/// The meta keys of the `--primary` the gateway was started with, and of the primary it
/// follows now (another after a move handed over).
const CONFIGURED_PRIMARY: &str = "configured_primary";
const FOLLOWED_PRIMARY: &str = "followed_primary";

/// The primary to follow: the one a move sent the gateway to, as long as it is started with the
/// same `--primary` as then; otherwise `configured` (the operator chose another).
pub fn effective_primary(store: &Store, configured: &str) -> Result<String, StoreError> {
    let (was, followed) = store
        .read(|r| Ok::<_, StoreError>((r.meta(CONFIGURED_PRIMARY)?, r.meta(FOLLOWED_PRIMARY)?)))?;
    if was.as_deref() == Some(configured)
        && let Some(followed) = followed
    {
        return Ok(followed);
    }
    store.set_meta(CONFIGURED_PRIMARY, configured)?;
    store.set_meta(FOLLOWED_PRIMARY, configured)?;
    Ok(configured.to_string())
}

/// Remembers the primary a move handed over to.
pub fn set_followed_primary(store: &Store, url: &str) -> Result<(), StoreError> {
    store.set_meta(FOLLOWED_PRIMARY, url)
}

/// The primary revision the copy is at (0: no copy yet).
pub fn primary_revision(store: &Store) -> Result<u64, StoreError> {
    store.read(|r| {
        Ok(r.meta(PRIMARY_REVISION)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    })
}

/// A part of a snapshot as it arrives: resources, then the end. A channel closed before the
/// end (the stream broke) undoes everything.
pub enum SnapshotPart {
    Items(Vec<SnapshotItem>),
    End,
}

/// Replaces the copy with a snapshot whose resources arrive on `parts` while it is written —
/// in one transaction, so the copy is the old configuration or the whole new one.
pub fn apply_streamed(
    store: &Store,
    revision: u64,
    service: &ServiceSettings,
    parts: std::sync::mpsc::Receiver<SnapshotPart>,
) -> Result<u64, StoreError> {
    store.write(|w| {
        w.replace_all(&json!({"primaryRevision": revision}))?;
        w.restore_service(service)?;
        loop {
            match parts.recv() {
                Ok(SnapshotPart::Items(items)) => {
                    for item in items {
                        let path = parse(&item.resource_id)?;
                        for to in &item.references {
                            w.restore_ref(&item.resource_id, to)?;
                        }
                        w.restore_resource(&path, item.value)?;
                    }
                }
                Ok(SnapshotPart::End) => break,
                Err(_) => {
                    return Err(StoreError::Corrupt(
                        "the snapshot was cut off before its end".into(),
                    ));
                }
            }
        }
        w.set_meta(PRIMARY_REVISION, &revision.to_string())
    })?;
    compact(store)?;
    Ok(revision)
}

/// Applies whole primary revisions, through `revision`, in one transaction.
pub fn apply_changes(
    store: &Store,
    revision: u64,
    entries: &[JournalEntry],
) -> Result<(), StoreError> {
    store.write(|w| {
        for e in entries {
            if e.path == "/" && e.op == "put" {
                let settings: ServiceSettings = serde_json::from_value(
                    e.value.clone().unwrap_or(Value::Null),
                )
                .map_err(|err| StoreError::Corrupt(format!("the service's settings: {err}")))?;
                w.set_service(&settings)?;
            } else {
                w.apply_entry(e)?;
            }
        }
        w.set_meta(PRIMARY_REVISION, &revision.to_string())
    })?;
    compact(store)
}

fn compact(store: &Store) -> Result<(), StoreError> {
    let local = store.revision()?;
    if local > 2 * LOCAL_HISTORY && local % LOCAL_HISTORY == 0 {
        store.compact_journal(local - LOCAL_HISTORY)?;
    }
    Ok(())
}

fn parse(path: &str) -> Result<ResourcePath, StoreError> {
    ResourcePath::parse_stored(path)
        .map_err(|e| StoreError::Corrupt(format!("the primary sent '{path}': {e}")))
}
