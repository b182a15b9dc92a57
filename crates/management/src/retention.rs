//! Journal retention: entries are kept while a retention window, a connected self-hosted
//! gateway or a move in progress needs them, and removed after (`Store::compact_journal`), so a
//! busy instance's database stops growing with every write. Whoever asks for changes older
//! than what is kept is told to take a snapshot instead.
//!
//! Invariant: nothing a gateway that reported within `gateway_nodes::STALE_AFTER` has not yet
//! applied is removed, nor anything during a freeze (a move's hand-over reads the journal), nor,
//! with `--archive`, anything the continuous archive does not hold yet.

use crate::state::AppState;
use gatehouse_store::StoreError;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Removes what the retention no longer needs; returns how many entries went.
pub fn compact_once(state: &AppState, window: Duration) -> Result<u64, StoreError> {
    if state.store.write_fence()?.is_some() {
        return Ok(0);
    }
    let cutoff = OffsetDateTime::now_utc() - window;
    let cutoff = cutoff
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let Some(mut through) = state.store.read(|r| r.last_revision_before(&cutoff))? else {
        return Ok(0);
    };
    if let Some(live) = state.gateway_nodes.lowest_live_revision() {
        through = through.min(live);
    }
    if state.archive_status.is_some() {
        // Nothing the continuous archive does not hold yet.
        through = through.min(gatehouse_archiver::archived_through(&state.store)?);
    }
    state.store.compact_journal(through)
}

/// Applies the retention every half window (at most every minute) until the instance stops.
pub async fn retain_forever(state: Arc<AppState>, window: Duration) {
    let every = (window / 2).clamp(Duration::from_millis(200), Duration::from_secs(60));
    let mut stopping = state.stopping.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let s = state.clone();
        match tokio::task::spawn_blocking(move || compact_once(&s, window)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(entries = n, "journal compacted"),
            Ok(Err(e)) => tracing::warn!(error = %e, "journal retention failed; it is tried again"),
            Err(e) => tracing::error!(error = %e, "journal retention panicked"),
        }
    }
}
