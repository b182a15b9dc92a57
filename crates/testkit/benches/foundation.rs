//! Foundation benchmarks, printed side by side with their physical floor:
//! 1. PUT throughput of APIs with 10 operations each (over HTTP, in-process server);
//! 2. list latency with 10,000 APIs loaded;
//! 3. time and peak memory to read a consistent snapshot of 100,000 entities (in a child
//!    process, so the peak is the snapshot's own), next to reading the database file raw.
//!
//! Run: `cargo bench -p gatehouse-testkit --bench foundation` (add `-- --quick` for a smoke run).

use gatehouse_model::{Kind, ResourcePath};
use gatehouse_store::Store;
use gatehouse_testkit::TestInstance;
use serde_json::{Map, json};
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

fn vm_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn put_api_with_ops(t: &TestInstance, i: usize) {
    let (s, _) = t
        .call(
            "PUT",
            &format!("/apis/api-{i:05}"),
            Some(json!({"properties": {"displayName": format!("API {i}"), "path": format!("p{i:05}"), "serviceUrl": "http://127.0.0.1:9"}})),
        )
        .await;
    assert_eq!(s, 201);
    for o in 0..10 {
        let (s, _) = t
            .call(
                "PUT",
                &format!("/apis/api-{i:05}/operations/op{o}"),
                Some(json!({"properties": {"displayName": format!("Op {o}"), "method": "GET", "urlTemplate": format!("/r{o}/{{id}}"), "templateParameters": [{"name": "id", "type": "string", "required": true}]}})),
            )
            .await;
        assert_eq!(s, 201);
    }
}

async fn put_throughput(quick: bool) {
    let t = TestInstance::start().await.unwrap();
    let apis = if quick { 20 } else { 300 };
    let concurrency = 8;
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    futures::future::join_all((0..concurrency).map(|_| async {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= apis {
                break;
            }
            put_api_with_ops(&t, i).await;
        }
    }))
    .await;
    let secs = started.elapsed().as_secs_f64();
    let requests = apis * 11;
    // The floor: the same number of empty write transactions straight on the store.
    let store = t.instance.as_ref().unwrap().store.clone();
    let floor_started = Instant::now();
    let floor = tokio::task::spawn_blocking(move || {
        for i in 0..requests {
            store
                .write(|w| -> Result<u64, gatehouse_store::StoreError> {
                    let mut p = Map::new();
                    p.insert("displayName".into(), json!("x"));
                    w.put(&ResourcePath::top(Kind::Tag, &format!("floor{i}")), p, &[])
                })
                .unwrap();
        }
    });
    floor.await.unwrap();
    let floor_secs = floor_started.elapsed().as_secs_f64();
    println!(
        "PUT APIs with 10 operations: {apis} APIs in {secs:.2} s = {:.0} APIs/s ({:.0} PUT/s over HTTP, {concurrency} clients) | floor: {requests} bare store commits {:.0}/s",
        apis as f64 / secs,
        requests as f64 / secs,
        requests as f64 / floor_secs
    );
}

async fn list_latency(quick: bool) {
    let t = TestInstance::start().await.unwrap();
    let n = if quick { 1_000 } else { 10_000 };
    let store = t.instance.as_ref().unwrap().store.clone();
    tokio::task::spawn_blocking(move || {
        store
            .write(|w| -> Result<(), gatehouse_store::StoreError> {
                for i in 0..n {
                    let mut p = Map::new();
                    p.insert("displayName".into(), json!(format!("API {i}")));
                    p.insert("path".into(), json!(format!("p{i:05}")));
                    p.insert("apiRevision".into(), json!("1"));
                    p.insert("isCurrent".into(), json!(true));
                    w.put(
                        &ResourcePath::top(Kind::Api, &format!("api-{i:05}")),
                        p,
                        &[],
                    )?;
                }
                Ok(())
            })
            .unwrap();
    })
    .await
    .unwrap();
    let samples = if quick { 20 } else { 200 };
    let mut rows = Vec::new();
    for (label, path) in [
        ("first page ($top=100)", "/apis?$top=100".to_string()),
        (
            "middle page ($skip=5000)",
            format!("/apis?$top=100&$skip={}", n / 2),
        ),
        (
            "$filter startswith(name)",
            "/apis?$filter=startswith(name,'api-009')".to_string(),
        ),
        ("no-op round trip (floor)", "/widgets".to_string()),
    ] {
        let mut times = Vec::with_capacity(samples);
        for _ in 0..samples {
            let started = Instant::now();
            // The floor is an authenticated round trip that does no store work (a 404 path).
            let (s, _) = t.call("GET", &path, None).await;
            assert!(s == 200 || s == 404);
            times.push(started.elapsed());
        }
        times.sort();
        rows.push(format!(
            "{label}: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        ));
    }
    println!("List latency with {n} APIs: {}", rows.join(" | "));
}

fn populate_snapshot_store(dir: &std::path::Path, n: usize) {
    let store = Store::open_dir(dir).unwrap();
    store
        .write(|w| -> Result<(), gatehouse_store::StoreError> {
            w.set_service(&gatehouse_model::ServiceSettings {
                name: "bench".into(),
                location: "local".into(),
                sku: gatehouse_model::Sku {
                    name: "Developer".into(),
                    capacity: 1,
                },
                publisher_email: "a@b.c".into(),
                publisher_name: "b".into(),
                notification_sender_email: None,
                created_at_utc: "2026-01-01T00:00:00Z".into(),
                hostname_configurations: Vec::new(),
            })?;
            for i in 0..n {
                let mut p = Map::new();
                p.insert("scope".into(), json!("/apis"));
                p.insert("displayName".into(), json!(format!("Subscription {i}")));
                p.insert("state".into(), json!("active"));
                p.insert("primaryKey".into(), json!(format!("{i:032x}")));
                p.insert("secondaryKey".into(), json!(format!("{:032x}", i + 1)));
                w.put(
                    &ResourcePath::top(Kind::Subscription, &format!("sub-{i:06}")),
                    p,
                    &[],
                )?;
            }
            Ok(())
        })
        .unwrap();
}

/// Child-process mode: read one snapshot and report time and peak memory.
fn snapshot_child(dir: &str) {
    let store = Store::open_dir(std::path::Path::new(dir)).unwrap();
    let before = vm_kb("VmRSS:");
    let started = Instant::now();
    let snap = store.snapshot().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let peak = vm_kb("VmHWM:");
    println!(
        "{} {} {secs} {}",
        snap.resources.len(),
        snap.revision,
        peak.saturating_sub(before)
    );
    // Streaming read (no Vec of everything): the path backups use.
    drop(snap);
    let started = Instant::now();
    let mut count = 0u64;
    store
        .read(|r| {
            r.for_each_resource(|_| {
                count += 1;
                Ok(())
            })
        })
        .unwrap();
    println!("{count} {}", started.elapsed().as_secs_f64());
}

fn snapshot_bench(quick: bool) {
    let n = if quick { 10_000 } else { 100_000 };
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    populate_snapshot_store(dir.path(), n);
    let populate = started.elapsed().as_secs_f64();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--snapshot-child", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let a: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let b: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let secs: f64 = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    let peak_kb: u64 = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let stream_secs: f64 = b.get(1).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
    // The floor: reading the database files' bytes.
    let floor_started = Instant::now();
    let mut bytes = 0usize;
    for f in ["gatehouse.db", "gatehouse.db-wal"] {
        bytes += std::fs::read(dir.path().join(f))
            .map(|b| b.len())
            .unwrap_or(0);
    }
    let floor = floor_started.elapsed().as_secs_f64();
    println!(
        "Consistent snapshot of {} entities: {:.0} ms, peak +{:.1} MB (streaming read: {:.0} ms) | floor: read {:.1} MB of database files in {:.0} ms | (populated in {populate:.1} s)",
        a.first().map(String::as_str).unwrap_or("?"),
        secs * 1000.0,
        peak_kb as f64 / 1024.0,
        stream_secs * 1000.0,
        bytes as f64 / 1e6,
        floor * 1000.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--snapshot-child") {
        snapshot_child(&args[i + 1]);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(put_throughput(quick));
    rt.block_on(list_latency(quick));
    snapshot_bench(quick);
}
