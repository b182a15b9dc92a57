//! Continuous archiving, side by side in one run:
//! 1. the write path (PUT of named values, 8 clients) with `--archive` off and on (goal: within
//!    10%), two rounds alternated;
//! 2. the archived bytes per 1,000 changes;
//! 3. a point-in-time restore of ~121,000 entities plus 100,000 journal entries (goal: under
//!    10 s), beside the restore of the base alone (the anchor).
//!
//! Run: `cargo bench -p gatehouse-testkit --bench continuous_archive` (`-- --quick`: a tenth).

use gatehouse_archiver::{Archive, ArchiveStatus, Point, ShipperConfig};
use gatehouse_backup::{BackupKey, RestoreOptions};
use gatehouse_model::{Kind, ResourcePath};
use gatehouse_server::ArchiveSettings;
use gatehouse_store::{Store, StoreError};
use gatehouse_testkit::{ServeConfig, TestInstance};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[path = "common/large.rs"]
mod large;

const CLIENTS: usize = 8;

fn key() -> Arc<BackupKey> {
    Arc::new(BackupKey::parse(&BackupKey::generate()).unwrap())
}

fn archive_in(dir: &Path) -> Archive {
    Archive {
        account: format!("file://{}", dir.display()),
        container: "archive".into(),
        folder: String::new(),
        access: Default::default(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// `puts` PUTs of named values from 8 clients: per second, p99 ms.
async fn put_load(node: &TestInstance, puts: usize, round: usize) -> (f64, f64) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let lists = futures::future::join_all((0..CLIENTS).map(|_| {
        let next = &next;
        async move {
            let mut took = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= puts {
                    return took;
                }
                let t = Instant::now();
                let (s, b) = node
                    .call(
                        "PUT",
                        &format!("/namedValues/r{round}nv{i}"),
                        Some(json!({"properties": {"displayName": format!("r{round}nv{i}"), "value": "v"}})),
                    )
                    .await;
                assert_eq!(s, 201, "{b}");
                took.push(t.elapsed());
            }
        }
    }))
    .await;
    let secs = started.elapsed().as_secs_f64();
    let mut all: Vec<Duration> = lists.into_iter().flatten().collect();
    all.sort();
    (puts as f64 / secs, percentile(&all, 0.99))
}

fn folder_bytes(dir: &Path, extension: &str) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == extension))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

async fn write_path(quick: bool) {
    let puts = if quick { 300 } else { 2_000 };
    let dir = tempfile::tempdir().unwrap();
    let mut results: Vec<(&str, f64, f64)> = Vec::new();
    let mut archived_bytes = 0;
    for round in 0..2 {
        for archived in [false, true] {
            let data = dir.path().join(format!("r{round}-{archived}"));
            let mut c = ServeConfig::ephemeral(&data);
            c.portal_listen = None;
            if archived {
                c.archive = Some(ArchiveSettings {
                    archive: archive_in(&data.join("storage")),
                    key: key(),
                    segment_after: Duration::from_secs(1),
                    base_every: None,
                    keep: Default::default(),
                });
            }
            let node = TestInstance::start_with(c).await.unwrap();
            let (rate, p99) = put_load(&node, puts, round).await;
            results.push((
                if archived {
                    "archive on"
                } else {
                    "archive off"
                },
                rate,
                p99,
            ));
            if archived {
                tokio::time::sleep(Duration::from_millis(2_500)).await;
                archived_bytes = folder_bytes(&data.join("storage/archive"), "ghseg");
            }
        }
    }
    println!("PUT of named values, {puts} by {CLIENTS} clients, embedded store:");
    for (label, rate, p99) in &results {
        println!("  {label:<12} {rate:>7.0}/s   p99 {p99:>6.2} ms");
    }
    let best = |l: &str| {
        results
            .iter()
            .filter(|r| r.0 == l)
            .map(|r| r.1)
            .fold(0.0, f64::max)
    };
    println!(
        "  with the archive: {:.0}% of the throughput without (best of two rounds each; goal: within 10%)",
        100.0 * best("archive on") / best("archive off")
    );
    println!(
        "archived bytes per 1,000 changes: {:.1} KB (segments of {puts} PUTs, {} bytes)",
        archived_bytes as f64 / puts as f64,
        archived_bytes
    );
}

/// 100,000 changes (named values, 100 to a transaction) on top of the large instance.
fn changes(store: &Store, n: usize) {
    for batch in 0..n / 100 {
        store
            .write(|w| -> Result<(), StoreError> {
                for i in 0..100 {
                    let id = format!("c{}", batch * 100 + i);
                    w.put(
                        &ResourcePath::top(Kind::NamedValue, &id),
                        json!({"displayName": id, "value": "changed"})
                            .as_object()
                            .unwrap()
                            .clone(),
                        &[],
                    )?;
                }
                Ok(())
            })
            .unwrap();
    }
}

async fn point_in_time(quick: bool) {
    let scale = if quick { 10 } else { 1 };
    let journal = if quick { 10_000 } else { 100_000 };
    let dir = tempfile::tempdir().unwrap();
    large::populate(&dir.path().join("src"), scale);
    let store = Arc::new(Store::open_dir(&dir.path().join("src")).unwrap());
    let key = key();
    let archive = archive_in(&dir.path().join("storage"));
    let status = Arc::new(ArchiveStatus::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let shipper = tokio::spawn(gatehouse_archiver::ship_forever(
        store.clone(),
        ShipperConfig {
            archive: archive.clone(),
            key: key.clone(),
            segment_after: Duration::from_secs(1),
            max_segment_entries: 10_000,
            queue_dir: dir.path().join("queue"),
            max_queued: 100_000,
            base_every: None,
            keep: Default::default(),
            node: "bench".into(),
        },
        status.clone(),
        stop,
    ));
    let base_revision = store.revision().unwrap();
    while status.archived_revision.load(Ordering::Relaxed) < base_revision {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let writer = store.clone();
    tokio::task::spawn_blocking(move || changes(&writer, journal))
        .await
        .unwrap();
    let last = store.revision().unwrap();
    while status.archived_revision.load(Ordering::Relaxed) < last {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    let _ = shipper.await;
    let target = |name: &str| {
        let t = Store::open_dir(&dir.path().join(name)).unwrap();
        t.write(|w| w.set_service(&large::settings("target")))
            .unwrap();
        t
    };
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let t = Instant::now();
    let point = gatehouse_archiver::fetch_point(&archive, &key, &Point::Latest, false, &work)
        .await
        .unwrap();
    let fetched = t.elapsed().as_secs_f64();
    let (base_file, replayed, segments) =
        (point.base_file.clone(), point.replay.len(), point.segments);
    let into = target("pitr");
    let opts = RestoreOptions {
        allow_tier_change: true,
        actor: None,
        replay: point.replay,
    };
    let k = key.clone();
    let bf = base_file.clone();
    let restored = tokio::task::spawn_blocking(move || {
        gatehouse_backup::restore_from_file(&into, &bf, &k, &opts, &mut |_, _| {}).unwrap()
    })
    .await
    .unwrap();
    let pitr = t.elapsed().as_secs_f64();
    let anchor_into = target("anchor");
    let t = Instant::now();
    let k = key.clone();
    tokio::task::spawn_blocking(move || {
        gatehouse_backup::restore_from_file(
            &anchor_into,
            &base_file,
            &k,
            &RestoreOptions {
                allow_tier_change: true,
                ..Default::default()
            },
            &mut |_, _| {},
        )
        .unwrap()
    })
    .await
    .unwrap();
    let anchor = t.elapsed().as_secs_f64();
    println!(
        "point-in-time restore of {} entities + {replayed} journal entries ({segments} segments):",
        restored.manifest.entity_count
    );
    println!("  base alone (anchor)       {anchor:>6.2} s");
    println!(
        "  base + segments           {pitr:>6.2} s   (fetched and verified in {fetched:.2} s; goal: under 10 s)"
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(write_path(quick));
    rt.block_on(point_in_time(quick));
}
