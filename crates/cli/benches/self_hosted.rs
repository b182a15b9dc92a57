//! Self-hosted gateway benchmark, real processes on loopback: a primary (`gatehouse serve`)
//! with 10,000 APIs and three `gatehouse gateway` processes serving all of them. Measured:
//! - propagation: from a PUT's response on the primary until each gateway serves the change,
//!   p50/p99 over 1,000 changes — beside it, in the same run, the floor: the primary's own
//!   in-process gateway, which follows the store directly (APIM's self-hosted gateway polls
//!   every 10 s);
//! - the primary's CPU time per change with three gateways connected;
//! - each gateway's resident memory with 10,000 APIs;
//! - cold start: a gateway started with an empty data directory (the whole snapshot over the
//!   stream), and restarted from its own copy with the primary unreachable.
//!
//! Run: `cargo bench -p gatehouse-cli --bench self_hosted` (`-- --quick`: 1,000 APIs, 200 changes).

use futures::StreamExt;
use gatehouse_testkit::process::{cpu_seconds, free_port, rss_mib};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const GATEWAYS: [&str; 3] = ["west", "east", "south"];

struct Api {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn put(&self, path: &str, body: Value) {
        let r = self
            .http
            .put(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("the primary answers");
        assert!(r.status().is_success(), "PUT {path}: {}", r.status());
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("the primary answers");
        r.json().await.expect("JSON")
    }
}

// The child goes back to the caller, which kills it when the measurement ends.
#[allow(clippy::zombie_processes)]
fn spawn(cwd: &Path, args: &[&str], data_dir: &str) -> (Child, String) {
    let endpoints = cwd.join(data_dir).join("endpoints.json");
    let _ = std::fs::remove_file(&endpoints);
    let mut child = Command::new(BIN)
        .current_dir(cwd)
        .args(["--data-dir", data_dir])
        .args(args)
        .env("GATEHOUSE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gatehouse starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(text) = std::fs::read_to_string(&endpoints)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            return (child, v["gateway"].as_str().unwrap_or_default().to_string());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{data_dir} did not start");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn policy(version: usize) -> Value {
    json!({"properties": {"format": "rawxml", "value": format!(
        "<policies><inbound><return-response><set-status code=\"200\" /><set-body>v{version}</set-body></return-response></inbound><backend /><outbound /><on-error /></policies>")}})
}

async fn load(api: &Api, apis: usize) {
    let puts = (0..apis).flat_map(|i| {
        let id = format!("api{i}");
        let mut v = vec![(
            format!("/apis/{id}"),
            json!({"properties": {"displayName": id, "path": id, "serviceUrl": "http://127.0.0.1:9", "protocols": ["http"], "subscriptionRequired": false}}),
        ), (
            format!("/apis/{id}/operations/get"),
            json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/*"}}),
        )];
        for g in GATEWAYS {
            v.push((format!("/gateways/{g}/apis/{id}"), json!({})));
        }
        v
    });
    // In order per API (the API before its operation and links), 8 APIs at a time.
    let grouped: Vec<Vec<(String, Value)>> = puts
        .collect::<Vec<_>>()
        .chunks(2 + GATEWAYS.len())
        .map(<[_]>::to_vec)
        .collect();
    futures::stream::iter(grouped)
        .for_each_concurrent(8, |group| async move {
            for (path, body) in group {
                api.put(&path, body).await;
            }
        })
        .await;
}

/// Polls `url` until it answers `want`; when it did, relative to `from`.
async fn served(http: &reqwest::Client, url: &str, want: &str, from: Instant) -> Duration {
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.text().await.is_ok_and(|b| b == want)
        {
            return from.elapsed();
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (apis, changes) = if quick { (1_000, 200) } else { (10_000, 1_000) };
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (mut primary, primary_gateway) = spawn(
        cwd,
        &[
            "serve",
            "--management-listen",
            &listen,
            "--portal-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ],
        "primary",
    );
    let api = Api {
        url: format!("http://{listen}"),
        token: std::fs::read_to_string(cwd.join("primary/admin-token"))
            .unwrap()
            .trim()
            .to_string(),
        http: reqwest::Client::new(),
    };
    for g in GATEWAYS {
        api.put(
            &format!("/gateways/{g}"),
            json!({"properties": {"locationData": {"name": g}}}),
        )
        .await;
        let t = api
            .post(
                &format!("/gateways/{g}/generateToken"),
                json!({"keyType": "primary", "expiry": (time_in_days(20))}),
            )
            .await;
        std::fs::write(cwd.join(format!("{g}.token")), t["value"].as_str().unwrap()).unwrap();
    }
    let started = Instant::now();
    load(&api, apis).await;
    eprintln!(
        "loaded {apis} APIs ({} resources) in {:.1} s",
        apis * 5,
        started.elapsed().as_secs_f64()
    );

    // The primary's CPU per change with no gateway connected, polled through its own gateway:
    // the base the gateways' cost is measured against.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .build()
        .unwrap();
    let base_changes = changes / 5;
    let cpu_base_before = cpu_seconds(primary.id());
    for version in 1..=base_changes {
        api.put("/apis/api0/policies/policy", policy(version + 1_000_000))
            .await;
        let want = format!("v{}", version + 1_000_000);
        served(
            &http,
            &format!("{primary_gateway}/api0/x"),
            &want,
            Instant::now(),
        )
        .await;
    }
    let cpu_base = (cpu_seconds(primary.id()) - cpu_base_before) / base_changes as f64;

    let gateway_args = |g: &'static str| {
        vec![
            "gateway".to_string(),
            "--primary".into(),
            api.url.clone(),
            "--gateway-id".into(),
            g.into(),
            "--token-file".into(),
            format!("{g}.token"),
            "--gateway-listen".into(),
            "127.0.0.1:0".into(),
        ]
    };
    let mut nodes = Vec::new();
    let mut first_start = Vec::new();
    for g in GATEWAYS {
        let args = gateway_args(g);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let t = Instant::now();
        let (child, url) = spawn(cwd, &args, &format!("gw-{g}"));
        first_start.push(t.elapsed());
        nodes.push((child, url));
    }
    let last = format!("api{}", apis - 1);
    for (_, url) in &nodes {
        // Routed (the backend is unreachable: not 404) once the last API has arrived.
        while http
            .get(format!("{url}/{last}/x"))
            .send()
            .await
            .map_or(true, |r| r.status() == 404)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    api.put("/apis/api0/policies/policy", policy(0)).await;
    let cpu_before = cpu_seconds(primary.id());
    let (mut floor, mut regional) = (Vec::new(), Vec::new());
    for version in 1..=changes {
        api.put("/apis/api0/policies/policy", policy(version)).await;
        let from = Instant::now();
        let want = format!("v{version}");
        let local = format!("{primary_gateway}/api0/x");
        let urls: Vec<String> = nodes.iter().map(|(_, u)| format!("{u}/api0/x")).collect();
        let (f, r) = tokio::join!(
            served(&http, &local, &want, from),
            futures::future::join_all(urls.iter().map(|u| served(&http, u, &want, from)))
        );
        floor.push(f);
        regional.extend(r);
    }
    let cpu = cpu_seconds(primary.id()) - cpu_before;
    floor.sort();
    regional.sort();
    let memory: Vec<f64> = nodes.iter().map(|(c, _)| rss_mib(c.id())).collect();

    // Restarted from its own copy, with the primary unreachable.
    let _ = primary.kill();
    let _ = primary.wait();
    let (mut child, _) = nodes.remove(0);
    let _ = child.kill();
    let _ = child.wait();
    let args = gateway_args(GATEWAYS[0]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Instant::now();
    let (mut restarted, url) = spawn(cwd, &args, &format!("gw-{}", GATEWAYS[0]));
    let _ = served(&http, &format!("{url}/api0/x"), &format!("v{changes}"), t).await;
    let static_start = t.elapsed();
    let _ = restarted.kill();
    let _ = restarted.wait();
    for (mut c, _) in nodes {
        let _ = c.kill();
        let _ = c.wait();
    }

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "self-hosted gateways: {apis} APIs, {changes} changes, 3 gateways (ms from the PUT's answer until served)"
    );
    println!("  {:<52} {:>8} {:>8} {:>8}", "", "p50", "p99", "max");
    println!(
        "  {:<52} {:>8.1} {:>8.1} {:>8.1}",
        "floor: the primary's own gateway",
        percentile(&floor, 0.5),
        percentile(&floor, 0.99),
        ms(*floor.last().unwrap())
    );
    println!(
        "  {:<52} {:>8.1} {:>8.1} {:>8.1}",
        "gatehouse gateway ×3 (every gateway, every change)",
        percentile(&regional, 0.5),
        percentile(&regional, 0.99),
        ms(*regional.last().unwrap())
    );
    println!(
        "  {:<52} {:>8}",
        "APIM self-hosted gateway (polls every 10 s)", "≤10000"
    );
    println!(
        "primary CPU per change: {:.2} ms with no gateway, {:.2} ms with 3 connected ({:.2} ms per gateway); gateway memory: {:.0} MiB (max of 3); first start (snapshot of {apis} APIs over the stream): {:.0} ms (max of 3); restart from its own copy, primary down: {:.0} ms",
        cpu_base * 1000.0,
        cpu * 1000.0 / changes as f64,
        (cpu / changes as f64 - cpu_base) * 1000.0 / 3.0,
        memory.iter().copied().fold(0.0, f64::max),
        first_start.iter().map(|d| ms(*d)).fold(0.0, f64::max),
        ms(static_start)
    );
}

fn time_in_days(days: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::days(days))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}
