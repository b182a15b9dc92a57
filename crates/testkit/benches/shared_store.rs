//! The control plane on PostgreSQL against the embedded store, side by side in one run (a
//! PostgreSQL of the benchmark's own: Debian's, its own cluster, fsync off as in the tests):
//! 1. PUT throughput and p99 with 8 clients: the embedded store; PostgreSQL with 1, 2 and 3
//!    nodes (the clients spread over them); the floor — bare PostgreSQL commits of the same
//!    rows (a resource and its journal entry under the write lock) from 8 connections;
//! 2. a write on node A until node B's gateway serves it (p50, p99);
//! 3. backup and restore of ~121,000 entities on each store.
//!
//! Run: `cargo bench -p gatehouse-testkit --bench shared_store` (`-- --quick`: a tenth).

use gatehouse_backup::{BackupKey, BackupOptions, RestoreOptions};
use gatehouse_store::{Store, StoreError, pg};
use gatehouse_testkit::postgres::PostgresServer;
use gatehouse_testkit::{EchoBackend, ServeConfig, TestInstance};
use serde_json::json;
use std::time::{Duration, Instant};

#[path = "common/large.rs"]
mod large;

const KEY: [u8; 32] = [9; 32];
const CLIENTS: usize = 8;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    ms(sorted[((sorted.len() as f64 - 1.0) * p).round() as usize])
}

/// A migrated database on `pg` (from any thread: the synchronous client runs its own runtime).
fn database(pg: &PostgresServer, name: &str) -> String {
    let url = pg.create_database(name).unwrap();
    let migrate_at = url.clone();
    std::thread::spawn(move || {
        let mut client = pg::connect(&migrate_at, Duration::from_secs(10), |_| {}).unwrap();
        pg::migrate(&mut client).unwrap();
    })
    .join()
    .unwrap();
    url
}

/// `n` nodes of one instance: embedded when `url` is `None`.
async fn nodes(dir: &std::path::Path, url: Option<&str>, n: usize) -> Vec<TestInstance> {
    let mut out = Vec::new();
    for i in 0..n {
        let data = dir.join(format!("node{i}"));
        if i > 0 {
            std::fs::create_dir_all(&data).unwrap();
            std::fs::copy(dir.join("node0/store.key"), data.join("store.key")).unwrap();
        }
        let mut c = ServeConfig::ephemeral(&data);
        c.store_url = url.map(str::to_string);
        c.portal_listen = None;
        c.admin_token = Some("bench-token".into());
        out.push(TestInstance::start_with(c).await.unwrap());
    }
    out
}

/// `puts` PUTs of named values from 8 clients spread over `nodes`: per second, and p99 ms.
async fn put_load(nodes: &[TestInstance], puts: usize) -> (f64, f64) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let lists = futures::future::join_all((0..CLIENTS).map(|c| {
        let (node, next) = (&nodes[c % nodes.len()], &next);
        async move {
            let mut took = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= puts {
                    return took;
                }
                let t = Instant::now();
                let (s, b) = node
                    .call(
                        "PUT",
                        &format!("/namedValues/nv{i}"),
                        Some(
                            json!({"properties": {"displayName": format!("nv{i}"), "value": "v"}}),
                        ),
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

/// The floor: the same rows committed straight into PostgreSQL, 8 connections at once.
fn bare_commits(url: &str, commits: usize) -> (f64, f64) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let mut all: Vec<Duration> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let next = &next;
                scope.spawn(move || {
                    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
                    let mut took = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= commits {
                            return took;
                        }
                        let t = Instant::now();
                        let mut tx = c.transaction().unwrap();
                        tx.execute("SELECT pg_advisory_xact_lock(1)", &[]).unwrap();
                        let path = format!("/floor/f{i}");
                        let props = r#"{"displayName":"x","value":"v"}"#;
                        tx.execute(
                            "INSERT INTO resources (path, kind, parent, name, properties, revision) VALUES ($1, 'namedValue', '', $1, $2, $3)",
                            &[&path, &props, &(i as i64)],
                        )
                        .unwrap();
                        tx.execute(
                            "INSERT INTO journal (revision, at, path, kind, op, value) VALUES ($1, '', $2, 'namedValue', 'put', $3)",
                            &[&(i as i64), &path, &props],
                        )
                        .unwrap();
                        tx.commit().unwrap();
                        took.push(t.elapsed());
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    (commits as f64 / secs, percentile(&all, 0.99))
}

async fn put_throughput(pg: &PostgresServer, quick: bool) {
    let puts = if quick { 200 } else { 2_000 };
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let embedded = nodes(&dir.path().join("embedded"), None, 1).await;
    rows.push((
        "embedded store, 1 node".to_string(),
        put_load(&embedded, puts).await,
    ));
    drop(embedded);
    for n in 1..=3 {
        let url = database(pg, &format!("put{n}"));
        let on = nodes(&dir.path().join(format!("pg{n}")), Some(&url), n).await;
        rows.push((
            format!("PostgreSQL, {n} node(s)"),
            put_load(&on, puts).await,
        ));
    }
    let floor_url = database(pg, "floor");
    let floor = tokio::task::spawn_blocking(move || bare_commits(&floor_url, puts))
        .await
        .unwrap();
    rows.push(("floor: bare PostgreSQL commits".to_string(), floor));
    println!("PUT of named values, {puts} by {CLIENTS} clients:");
    for (label, (per_sec, p99)) in &rows {
        println!("  {label:<34} {per_sec:>8.0}/s   p99 {p99:>7.2} ms");
    }
}

async fn propagation(pg: &PostgresServer, quick: bool) {
    let writes = if quick { 20 } else { 200 };
    let dir = tempfile::tempdir().unwrap();
    let url = database(pg, "propagation");
    let on = nodes(dir.path(), Some(&url), 2).await;
    let backend = EchoBackend::start().await.unwrap();
    let http = reqwest::Client::new();
    let mut took = Vec::new();
    for i in 0..writes {
        let id = format!("p{i}");
        on[0]
            .put_ok(&format!("/apis/{id}"), json!({"properties": {"displayName": id, "path": id, "serviceUrl": backend.url, "protocols": ["http"], "subscriptionRequired": false}}))
            .await;
        let written = Instant::now();
        on[0]
            .put_ok(
                &format!("/apis/{id}/operations/get"),
                json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/*"}}),
            )
            .await;
        loop {
            let r = http
                .get(format!("{}/{id}/x", on[1].gateway_url()))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().as_u16() == 200) {
                break;
            }
            assert!(written.elapsed() < Duration::from_secs(10), "never served");
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        took.push(written.elapsed());
    }
    took.sort();
    println!(
        "a write on node A served by node B's gateway ({writes} writes): p50 {:.1} ms, p99 {:.1} ms (goal: p99 under 100 ms)",
        percentile(&took, 0.5),
        percentile(&took, 0.99)
    );
}

/// Backup, then restore into an empty store of the same kind: seconds each, and entities.
fn backup_restore(source: &Store, target: &Store, archive: &std::path::Path) -> (f64, f64, u64) {
    let key = BackupKey::parse(&BackupKey::generate()).unwrap();
    let t = Instant::now();
    let m = gatehouse_backup::backup_to_file(
        source,
        archive,
        &key,
        &BackupOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let backup = t.elapsed().as_secs_f64();
    target
        .write(|w| -> Result<(), StoreError> { w.set_service(&large::settings("target")) })
        .unwrap();
    let t = Instant::now();
    gatehouse_backup::restore_from_file(
        target,
        archive,
        &key,
        &RestoreOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    (backup, t.elapsed().as_secs_f64(), m.entity_count)
}

fn large_instance(pg: &PostgresServer, quick: bool) {
    let scale = if quick { 10 } else { 1 };
    let dir = tempfile::tempdir().unwrap();
    large::populate(&dir.path().join("src"), scale);
    let embedded = backup_restore(
        &Store::open_dir(&dir.path().join("src")).unwrap(),
        &Store::open_dir(&dir.path().join("dst")).unwrap(),
        &dir.path().join("embedded.ghbk"),
    );
    let source = Store::open_postgres(&database(pg, "large_src"), &KEY).unwrap();
    let t = Instant::now();
    large::populate_store(&source, scale);
    let populated = t.elapsed().as_secs_f64();
    let target = Store::open_postgres(&database(pg, "large_dst"), &KEY).unwrap();
    let on_pg = backup_restore(&source, &target, &dir.path().join("pg.ghbk"));
    println!(
        "backup and restore of {} entities (PostgreSQL populated in {populated:.1} s):",
        embedded.2
    );
    for (label, (b, r, _)) in [("embedded store", embedded), ("PostgreSQL", on_pg)] {
        println!("  {label:<34} backup {b:>6.2} s   restore {r:>6.2} s");
    }
    println!(
        "  PostgreSQL against embedded: backup {:.1}x, restore {:.1}x (goal: within 2x)",
        on_pg.0 / embedded.0,
        on_pg.1 / embedded.1
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let pg = PostgresServer::start().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `--large`: only the backup and restore of the large instance.
    if !std::env::args().any(|a| a == "--large") {
        rt.block_on(put_throughput(&pg, quick));
        rt.block_on(propagation(&pg, quick));
    }
    large_instance(&pg, quick);
}
