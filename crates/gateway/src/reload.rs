//! Following the store: load the configuration once, then apply each new revision's changes
//! to the in-memory mirror, recompile the routing table and swap it in.
//!
//! Invariant: the mirror only ever moves to a revision read in one store transaction, so every
//! table the gateway serves is a consistent configuration.

use crate::mirror::{Change, ConfigMirror};
use crate::shared::{Shared, stopped};
use crate::table::RoutingTable;
use gatehouse_model::{Kind, ResourcePath};
use gatehouse_store::{Store, StoreError};
use std::sync::Arc;
use std::time::Instant;

/// Reads the whole configuration, in one read transaction, into a mirror and a first table.
/// Resources are streamed: the whole configuration is never held in memory at once.
pub(crate) fn load(
    store: &Store,
    serves: Option<&str>,
) -> Result<(ConfigMirror, RoutingTable), StoreError> {
    store.read(|r| {
        let mut mirror = ConfigMirror::new(r.revision(), r.service()?, []);
        mirror.serves = serves.map(str::to_string);
        r.for_each_resource(|res| {
            if res.kind != Kind::Subscription {
                mirror.insert(res);
            }
            Ok(())
        })?;
        let table = RoutingTable::compile_streaming(&mirror, |feed| {
            r.for_each_of_kind(Kind::Subscription, |res| {
                feed(&res);
                Ok(())
            })
        })?;
        Ok((mirror, table))
    })
}

/// Moves the mirror to the store's current revision by re-reading what changed since; returns
/// the changes (`None` when already current).
pub(crate) fn catch_up(
    store: &Store,
    mirror: &mut ConfigMirror,
) -> Result<Option<Vec<Change>>, StoreError> {
    store.read(|r| {
        if r.revision() == mirror.revision {
            return Ok(None);
        }
        let mut changes = Vec::new();
        for path in r.changed_paths_since(mirror.revision)? {
            if path == "/" {
                mirror.service = r.service()?;
                continue;
            }
            let Ok(parsed) = ResourcePath::parse_stored(&path) else {
                continue;
            };
            let old = mirror.remove(parsed.kind, &path);
            let new = r.get(&path)?;
            if let Some(n) = &new {
                mirror.insert(n.clone());
            }
            changes.push(Change {
                kind: parsed.kind,
                old,
                new,
            });
        }
        mirror.revision = r.revision();
        Ok(Some(changes))
    })
}

/// The table for the store's current revision, or `None` if nothing changed. After a
/// whole-configuration replace (a restore) the mirror is reloaded from scratch.
fn advance(
    store: &Store,
    mirror: &mut ConfigMirror,
    current: &RoutingTable,
) -> Result<Option<RoutingTable>, StoreError> {
    if store.read(|r| r.replaced_since(mirror.revision))? {
        let (m, table) = load(store, mirror.serves.as_deref())?;
        *mirror = m;
        return Ok(Some(table));
    }
    Ok(catch_up(store, mirror)?.map(|changes| current.next(mirror, &changes)))
}

/// How soon a reload that failed is tried again.
const RELOAD_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

/// Follows the store until `stop` fires, swapping a new table in after each change.
pub(crate) async fn follow(
    store: Arc<Store>,
    mut mirror: ConfigMirror,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut revisions = store.subscribe();
    // A revision committed between the first load and this subscription is caught up at once.
    revisions.mark_changed();
    loop {
        tokio::select! {
            changed = revisions.changed() => if changed.is_err() { return },
            _ = stopped(&mut stop) => return,
        }
        let started = Instant::now();
        let s = store.clone();
        let current = shared.table.load_full();
        let result = tokio::task::spawn_blocking(move || {
            let compiled = advance(&s, &mut mirror, &current);
            (mirror, compiled)
        })
        .await;
        match result {
            Ok((m, compiled)) => {
                mirror = m;
                match compiled {
                    Ok(Some(t)) => {
                        let rev = t.revision;
                        shared.jwks.ensure(&t.policies.openid_urls);
                        shared.set_table(t);
                        shared.stats.set_revision(rev);
                        tracing::debug!(
                            revision = rev,
                            ms = started.elapsed().as_secs_f64() * 1000.0,
                            "configuration reloaded"
                        );
                    }
                    Ok(None) => {}
                    // Tried again shortly (a shared store restarting comes back), and at the
                    // next revision; meanwhile the previous table keeps serving.
                    Err(e) => {
                        tracing::error!(error = %e, "configuration reload failed; still serving the previous revision");
                        tokio::select! {
                            _ = tokio::time::sleep(RELOAD_RETRY) => revisions.mark_changed(),
                            _ = stopped(&mut stop) => return,
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration reload panicked");
                return;
            }
        }
    }
}
