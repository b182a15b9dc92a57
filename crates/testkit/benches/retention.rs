//! Journal retention: the size of a database whose journal holds every change, before and
//! after the journal is compacted (the configuration itself unchanged). N subscriptions are
//! created, then each is changed once, in transactions of 1,000 writes — 2N journal entries.
//! The anchor is the database before compaction, in the same run.
//!
//! Run: `cargo bench -p gatehouse-testkit --bench retention` (`-- --quick`: a tenth of it).

use gatehouse_model::{Kind, ResourcePath};
use gatehouse_store::{Store, StoreError};
use serde_json::{Map, json};
use std::path::Path;
use std::time::Instant;

fn subscription(i: usize, state: &str) -> Map<String, serde_json::Value> {
    let mut p = Map::new();
    p.insert("scope".into(), json!("/apis"));
    p.insert("displayName".into(), json!(format!("Subscription {i}")));
    p.insert("state".into(), json!(state));
    p.insert("primaryKey".into(), json!(format!("{i:032x}")));
    p.insert("secondaryKey".into(), json!(format!("{:032x}", i + 1)));
    p
}

fn write_all(store: &Store, n: usize, state: &str) {
    for batch in (0..n).collect::<Vec<_>>().chunks(1_000) {
        store
            .write(|w| -> Result<(), StoreError> {
                for &i in batch {
                    let path = ResourcePath::top(Kind::Subscription, &format!("sub-{i:06}"));
                    w.put(&path, subscription(i, state), &[])?;
                }
                Ok(())
            })
            .unwrap();
    }
}

/// The database's size once every connection is closed (the write log folded in).
fn closed_size_mb(dir: &Path) -> f64 {
    let bytes: u64 = ["gatehouse.db", "gatehouse.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
        .sum();
    bytes as f64 / 1e6
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 10_000 } else { 100_000 };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).unwrap();
    write_all(&store, n, "active");
    write_all(&store, n, "suspended");
    let revision = store.revision().unwrap();
    drop(store);
    let before = closed_size_mb(dir.path());
    let store = Store::open_dir(dir.path()).unwrap();
    let started = Instant::now();
    let removed = store.compact_journal(revision).unwrap();
    let took = started.elapsed();
    let count = store.read(|r| r.resource_count()).unwrap();
    drop(store);
    let after = closed_size_mb(dir.path());
    println!(
        "Journal retention, {count} subscriptions changed twice: database {before:.1} MB with the whole journal (anchor) | {after:.1} MB after compacting {removed} entries ({:.0}% of it) in {:.0} ms",
        after / before * 100.0,
        took.as_secs_f64() * 1000.0
    );
}
