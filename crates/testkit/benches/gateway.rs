//! Gateway benchmark, side by side in one run on loopback:
//! - the backend alone (nginx `return 200`, the physical floor),
//! - nginx as a reverse proxy to it (the target's anchor), and nginx configured to send the
//!   backend what Gatehouse sends (X-Forwarded-For/-Proto/-Host, X-Request-Id, Request-Id),
//! - Gatehouse with one API and a required subscription key,
//! - Gatehouse with 10,000 APIs and 100,000 subscriptions loaded,
//! - Gatehouse with one API and a realistic policy stack: set-header, rate-limit-by-key,
//!   validate-jwt (RS256) and a choose on a header.
//!
//! Throughput and latency under full load come from wrk, in interleaved rounds (every target
//! once per round; the median round is reported) because the shared two-core machine drifts
//! by ±10% within minutes; the CPU time the proxy process spent per request (user + system,
//! from /proc) is the figure least moved by that drift. Latency at half load (an open-loop
//! fixed rate, as wrk2 makes it, at half of each target's throughput — at most half the nginx
//! reverse proxy's) and at 5,000 requests/s, each beside the backend alone measured at the
//! same time, comes from a small load generator here (`fixed_rate`), in interleaved rounds as
//! well (median shown). RSS comes from /proc; the reload time is from a PUT to the new API
//! answering through the gateway.
//!
//! Run with `bash scripts/bench-gateway.sh` (installs nginx and wrk, builds the release binary);
//! `-- --rounds N` for more rounds, `--quick` for a short run.

use gatehouse_model::{Kind, ResourcePath, ServiceSettings, Sku};
use gatehouse_store::Store;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ORIGIN_PORT: u16 = 18180;
const PROXY_PORT: u16 = 18181;
const PROXY_HEADERS_PORT: u16 = 18182;

struct Proc(Child);
impl Drop for Proc {
    /// SIGTERM first: nginx's master then stops its worker too (SIGKILL would orphan it).
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nginx(dir: &Path, name: &str, body: &str) -> Proc {
    let conf = dir.join(format!("{name}.conf"));
    let tmp = dir.join(format!("tmp-{name}"));
    std::fs::create_dir_all(&tmp).unwrap();
    let t = tmp.display();
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\npid {d}/{name}.pid;\nerror_log {d}/{name}.err warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n access_log off;\n client_body_temp_path {t}; proxy_temp_path {t}; fastcgi_temp_path {t}; uwsgi_temp_path {t}; scgi_temp_path {t};\n keepalive_requests 1000000;\n {body}\n}}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .args(["-c", conf.to_str().unwrap(), "-p", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx runs (scripts/bench-gateway.sh installs it)");
    Proc(child)
}

/// The pid of nginx's worker (the child of the master `master`).
fn nginx_worker(master: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "nginx {master} has no worker");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes an instance's configuration straight into a data directory.
fn populate(dir: &Path, apis: usize, subscriptions: usize) -> String {
    let store = Store::open_dir(dir).unwrap();
    let origin = format!("http://127.0.0.1:{ORIGIN_PORT}");
    store
        .write(|w| -> Result<(), gatehouse_store::StoreError> {
            w.set_service(&ServiceSettings {
                name: "bench".into(),
                location: "local".into(),
                sku: Sku { name: "Developer".into(), capacity: 1 },
                publisher_email: "a@b.c".into(),
                publisher_name: "bench".into(),
                notification_sender_email: None,
                created_at_utc: "2026-01-01T00:00:00Z".into(),
                hostname_configurations: Vec::new(),
            })?;
            let obj = |v: Value| -> Map<String, Value> { v.as_object().unwrap().clone() };
            for i in 0..apis {
                let id = if i == 0 { "bench".to_string() } else { format!("api{i:05}") };
                let api = ResourcePath::top(Kind::Api, &id);
                w.put(&api, obj(json!({"displayName": id, "path": id, "serviceUrl": origin, "protocols": ["http"], "apiRevision": "1", "isCurrent": true, "subscriptionRequired": true})), &[])?;
                let op = ResourcePath::new(Kind::Operation, vec![("apis", id.clone()), ("operations", "get".into())]);
                w.put(&op, obj(json!({"displayName": "get", "method": "GET", "urlTemplate": "/{*rest}", "templateParameters": [{"name": "rest"}]})), &[])?;
            }
            for i in 0..subscriptions {
                let sub = ResourcePath::top(Kind::Subscription, &format!("sub{i:06}"));
                w.put(&sub, obj(json!({"scope": "/apis", "displayName": "s", "state": "active", "primaryKey": format!("key{i:029}"), "secondaryKey": format!("alt{i:029}")})), &[])?;
            }
            Ok(())
        })
        .unwrap();
    "key00000000000000000000000000000".to_string()
}

/// Sets the `bench` API's policy.
fn set_api_policy(dir: &Path, policy: &str) {
    gatehouse_policy::parse_document(policy, "rawxml", &gatehouse_policy::doc::NoResolver)
        .expect("the benchmark's policy is valid");
    let store = Store::open_dir(dir).unwrap();
    store
        .write(|w| -> Result<(), gatehouse_store::StoreError> {
            let path = ResourcePath::new(
                Kind::ApiPolicy,
                vec![("apis", "bench".into()), ("policies", "policy".into())],
            );
            let props = json!({"format": "rawxml", "value": policy});
            w.put(&path, props.as_object().unwrap().clone(), &[])?;
            Ok(())
        })
        .unwrap();
}

/// The API policy of the policy-stack target, and a token it accepts.
fn add_policy_stack(dir: &Path) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let n = std::fs::read_to_string(format!("{fixtures}/jwt-rs256.n")).unwrap();
    let pem = std::fs::read(format!("{fixtures}/jwt-rs256.pem")).unwrap();
    let policy = format!(
        r#"<policies><inbound><base />
  <validate-jwt header-name="Authorization"><issuer-signing-keys><key n="{}" e="AQAB" /></issuer-signing-keys><audiences><audience>api://bench</audience></audiences></validate-jwt>
  <rate-limit-by-key calls="1000000000" renewal-period="60" counter-key="@(context.Subscription.Id)" />
  <choose><when condition="@(context.Request.Headers.GetValueOrDefault("x-tier", "") == "gold")"><set-header name="x-priority" exists-action="override"><value>high</value></set-header></when><otherwise><set-header name="x-priority" exists-action="override"><value>normal</value></set-header></otherwise></choose>
  <set-header name="x-request-region" exists-action="override"><value>@(context.Deployment.Region)</value></set-header>
</inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#,
        n.trim()
    );
    set_api_policy(dir, &policy);
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 86_400;
    encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "bench", "aud": "api://bench", "exp": exp}),
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

fn gatehouse(bin: &Path, data: &Path, port: u16, mgmt: u16) -> Proc {
    let child = Command::new(bin)
        .args([
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--portal-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            &format!("127.0.0.1:{port}"),
            "--management-listen",
            &format!("127.0.0.1:{mgmt}"),
        ])
        .env("GATEHOUSE_GATEWAY_WORKERS", "1")
        .env("TOKIO_WORKER_THREADS", "1")
        .env("GATEHOUSE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    Proc(child)
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non2xx: u64,
}

fn parse_ms(s: &str) -> f64 {
    if let Some(v) = s.strip_suffix("us") {
        v.parse::<f64>().unwrap_or(f64::NAN) / 1000.0
    } else if let Some(v) = s.strip_suffix("ms") {
        v.parse().unwrap_or(f64::NAN)
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse::<f64>().unwrap_or(f64::NAN) * 1000.0
    } else {
        f64::NAN
    }
}

fn wrk(url: &str, headers: &[(String, String)], secs: u32) -> WrkResult {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", "-c50", &format!("-d{secs}s"), "--latency"]);
    for (k, v) in headers {
        cmd.args(["-H", &format!("{k}: {v}")]);
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("wrk runs (scripts/bench-gateway.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |label: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(parse_ms)
            .unwrap_or(f64::NAN)
    };
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let non2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses:"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    WrkResult {
        rps,
        p50_ms: find("50%"),
        p99_ms: find("99%"),
        non2xx,
    }
}

/// Keep-alive connections of the fixed-rate generator, as many as wrk's.
const FIXED_RATE_CONNECTIONS: usize = 50;

/// Open-loop load at a fixed rate, as wrk2 makes it: request `i` is due at `i / rate` whatever
/// became of the ones before, over keep-alive connections on one thread with raw HTTP/1.1 (a
/// request costs this generator a write and a read, so that it holds half the nginx proxy's
/// rate beside the servers). A request is sent when it is due, on an idle
/// connection; its latency runs from then — or from when it was due, if it had to wait for a
/// connection because all were busy (the server's delay, which a closed loop would hide:
/// "coordinated omission"). tokio's timer ticks in milliseconds, so a quiet loop sends a
/// millisecond's requests together; each one's latency starts as it is written, so that the
/// generator's own queue is not counted, only the server's.
/// Returns (p50, p99) in ms and the number of failed requests.
async fn fixed_rate(
    url: &str,
    headers: &[(String, String)],
    rate: f64,
    secs: f64,
) -> (f64, f64, usize) {
    use futures::stream::{FuturesUnordered, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let request: std::sync::Arc<[u8]> = request.into_bytes().into();

    struct Conn {
        stream: tokio::net::TcpStream,
        buf: Vec<u8>,
    }
    async fn connect(authority: &str) -> Conn {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .unwrap_or_else(|e| panic!("{authority}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Conn {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }
    /// Sends the request and reads the response (a Content-Length body): the connection back,
    /// and the latency from `from` (else from the write), or `None` for a failure.
    async fn exchange(
        mut conn: Conn,
        request: std::sync::Arc<[u8]>,
        from: Option<Instant>,
    ) -> (Option<Conn>, Option<Duration>) {
        let from = from.unwrap_or_else(Instant::now);
        if conn.stream.write_all(&request).await.is_err() {
            return (None, None);
        }
        conn.buf.clear();
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut fields);
            if let Ok(httparse::Status::Complete(head)) = response.parse(&conn.buf) {
                let ok = response.code.is_some_and(|c| (200..300).contains(&c));
                let length: usize = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .expect("the benchmark's responses carry a Content-Length");
                if conn.buf.len() >= head + length {
                    let took = from.elapsed();
                    return (Some(conn), ok.then_some(took));
                }
            }
            if matches!(conn.stream.read_buf(&mut conn.buf).await, Ok(0) | Err(_)) {
                return (None, None);
            }
        }
    }

    let mut idle = Vec::with_capacity(FIXED_RATE_CONNECTIONS);
    for _ in 0..FIXED_RATE_CONNECTIONS {
        idle.push(connect(authority).await);
    }
    let total = (rate * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let due = |i: usize| start + interval.mul_f64(i as f64);
    let mut in_flight = FuturesUnordered::new();
    let (mut next, mut done, mut failed) = (0, 0, 0);
    let mut latencies = Vec::with_capacity(total);
    // Whether requests are waiting for a connection: their latency then runs from when due.
    let mut starved = false;
    while done < total {
        let now = Instant::now();
        while next < total && due(next) <= now {
            let Some(conn) = idle.pop() else {
                starved = true;
                break;
            };
            let from = starved.then(|| due(next));
            in_flight.push(exchange(conn, request.clone(), from));
            next += 1;
        }
        if next == total || due(next) > now {
            starved = false;
        }
        let wait_for_due = next < total && !idle.is_empty();
        tokio::select! {
            Some((conn, took)) = in_flight.next() => {
                done += 1;
                match took {
                    Some(took) => latencies.push(took),
                    None => failed += 1,
                }
                match conn {
                    Some(conn) => idle.push(conn),
                    None if failed <= total / 100 => idle.push(connect(authority).await),
                    None => panic!("{url}: over 1% of requests failed at {rate:.0} requests/s"),
                }
            }
            _ = tokio::time::sleep_until(due(next.min(total - 1))), if wait_for_due => {}
            else => unreachable!("nothing in flight, nothing due, yet not done"),
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p) as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    (pct(0.5), pct(0.99), failed)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let secs = if quick { 3 } else { 10 };
    // `--rounds N`: more rounds, steadier medians on a drifting machine.
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(if quick { 1 } else { 3 });
    // A benchmark is a program of its own: its configuration comes from its environment.
    #[allow(clippy::disallowed_methods)]
    let bin = PathBuf::from(
        std::env::var("GATEHOUSE_BIN").unwrap_or_else(|_| "target/release/gatehouse".into()),
    );
    assert!(
        bin.exists(),
        "{} not found: build it with cargo build --release -p gatehouse-cli",
        bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let origin = nginx(
        dir.path(),
        "origin",
        &format!(
            "server {{ listen 127.0.0.1:{ORIGIN_PORT}; location / {{ default_type text/plain; return 200 'ok'; }} }}"
        ),
    );
    let proxy = nginx(
        dir.path(),
        "proxy",
        &format!(
            "upstream origin {{ server 127.0.0.1:{ORIGIN_PORT}; keepalive 64; }}\n server {{ listen 127.0.0.1:{PROXY_PORT}; location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"
        ),
    );
    let proxy_headers = nginx(
        dir.path(),
        "proxy-headers",
        &format!(
            "upstream origin {{ server 127.0.0.1:{ORIGIN_PORT}; keepalive 64; }}\n server {{ listen 127.0.0.1:{PROXY_HEADERS_PORT}; location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Forwarded-Host $http_host; proxy_set_header X-Request-Id $request_id; proxy_set_header Request-Id $request_id; add_header X-Request-Id $request_id; }} }}"
        ),
    );
    wait_port(ORIGIN_PORT);
    wait_port(PROXY_PORT);
    wait_port(PROXY_HEADERS_PORT);

    let one_dir = dir.path().join("one");
    let key = populate(&one_dir, 1, 1);
    let (gw1, m1) = (
        gatehouse_testkit::process::free_port(),
        gatehouse_testkit::process::free_port(),
    );
    let g1 = gatehouse(&bin, &one_dir, gw1, m1);

    let (apis, subs) = if quick {
        (1_000, 10_000)
    } else {
        (10_000, 100_000)
    };
    let big_dir = dir.path().join("big");
    let started = Instant::now();
    populate(&big_dir, apis, subs);
    let populate_s = started.elapsed().as_secs_f64();
    let (gw2, m2) = (
        gatehouse_testkit::process::free_port(),
        gatehouse_testkit::process::free_port(),
    );
    let g2 = gatehouse(&bin, &big_dir, gw2, m2);

    // docs/design.md's target configuration: a required key and a rate-limit policy.
    let limited_dir = dir.path().join("rate-limited");
    populate(&limited_dir, 1, 1);
    set_api_policy(
        &limited_dir,
        r#"<policies><inbound><base /><rate-limit calls="1000000000" renewal-period="60" /></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#,
    );
    let (gw4, m4) = (
        gatehouse_testkit::process::free_port(),
        gatehouse_testkit::process::free_port(),
    );
    let g4 = gatehouse(&bin, &limited_dir, gw4, m4);

    let policy_dir = dir.path().join("policies");
    populate(&policy_dir, 1, 1);
    let token = add_policy_stack(&policy_dir);
    let (gw3, m3) = (
        gatehouse_testkit::process::free_port(),
        gatehouse_testkit::process::free_port(),
    );
    let g3 = gatehouse(&bin, &policy_dir, gw3, m3);

    let keyed = vec![("Ocp-Apim-Subscription-Key".to_string(), key.clone())];
    let mut with_jwt = keyed.clone();
    with_jwt.push(("Authorization".into(), format!("Bearer {token}")));
    with_jwt.push(("x-tier".into(), "gold".into()));
    let origin_worker = nginx_worker(origin.0.id());
    // (label, URL, request headers, the serving process: (pid, whether its RSS is reported))
    type Target = (String, String, Vec<(String, String)>, (u32, bool));
    let targets: Vec<Target> = vec![
        (
            "backend alone (nginx return 200, floor)".into(),
            format!("http://127.0.0.1:{ORIGIN_PORT}/bench/x"),
            Vec::new(),
            (origin_worker, false),
        ),
        (
            "nginx reverse proxy".into(),
            format!("http://127.0.0.1:{PROXY_PORT}/bench/x"),
            Vec::new(),
            (nginx_worker(proxy.0.id()), false),
        ),
        (
            "nginx reverse proxy + Gatehouse's headers".into(),
            format!("http://127.0.0.1:{PROXY_HEADERS_PORT}/bench/x"),
            Vec::new(),
            (nginx_worker(proxy_headers.0.id()), false),
        ),
        (
            "gatehouse, 1 API, key required".into(),
            format!("http://127.0.0.1:{gw1}/bench/x"),
            keyed.clone(),
            (g1.0.id(), true),
        ),
        (
            "gatehouse, 1 API, key + rate-limit policy".into(),
            format!("http://127.0.0.1:{gw4}/bench/x"),
            keyed.clone(),
            (g4.0.id(), true),
        ),
        (
            format!("gatehouse, {apis} APIs + {subs} subscriptions"),
            format!("http://127.0.0.1:{gw2}/bench/x"),
            keyed.clone(),
            (g2.0.id(), true),
        ),
        (
            "gatehouse, 1 API + policy stack".into(),
            format!("http://127.0.0.1:{gw3}/bench/x"),
            with_jwt,
            (g3.0.id(), true),
        ),
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "wrk -t1 -c50 -d{secs}s --latency, {rounds} interleaved round(s), median shown; every server on 1 worker (nginx worker_processes 1, GATEHOUSE_GATEWAY_WORKERS=1); 2 cores shared with the load generator"
    );
    // Full load: every target once per round, so that drift hits all alike.
    let mut runs: Vec<Vec<(WrkResult, f64)>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (i, (label, url, headers, (pid, _))) in targets.iter().enumerate() {
            let cpu_before = gatehouse_testkit::process::cpu_seconds(*pid);
            let r = wrk(url, headers, secs);
            let cpu_us = (gatehouse_testkit::process::cpu_seconds(*pid) - cpu_before)
                / (r.rps * secs as f64)
                * 1e6;
            assert_eq!(r.non2xx, 0, "{label}: non-2xx responses under load");
            runs[i].push((r, cpu_us));
        }
    }
    let medians: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| {
            (
                median(&mut r.iter().map(|r| r.0.rps).collect::<Vec<_>>()),
                median(&mut r.iter().map(|r| r.1).collect::<Vec<_>>()),
            )
        })
        .collect();
    // Half of each target's own throughput, but at most half the anchor's: half the backend's
    // own is beyond one generator thread sharing two cores with it (on loopback a request
    // costs the client about as much CPU as the server). Then a light load, 5,000/s, where
    // queueing behind the machine's stalls matters little.
    let anchor_half = medians[1].0 / 2.0;
    let half_rate = |i: usize| (medians[i].0 / 2.0).min(anchor_half);
    const LIGHT_RATE: f64 = 5_000.0;
    // What a target adds is measured against the backend alone at the same time: a tenth of
    // the rate goes straight to the backend alongside, so that the machine's stalls (each of
    // this VM's vCPUs pauses for 1–4 ms a few times a second, idle or not) hit both. In interleaved
    // rounds too; per target, the medians of the rounds' figures and of their differences.
    // [p50, p99, p50 added, p99 added] at half load, then at the light load.
    let mut at_rate: Vec<Vec<[f64; 8]>> = targets.iter().map(|_| Vec::new()).collect();
    let floor_url = &targets[0].1;
    let half_secs = secs as f64 / 2.0;
    let measure = |url: &str, headers: &[(String, String)], rate: f64| -> [f64; 4] {
        let ((p50, p99, errors), (f50, f99, floor_errors)) = rt.block_on(async {
            tokio::join!(
                fixed_rate(url, headers, rate, half_secs),
                fixed_rate(floor_url, &[], rate / 10.0, half_secs),
            )
        });
        assert_eq!(
            errors + floor_errors,
            0,
            "{url}: errors at {rate:.0} requests/s"
        );
        [p50, p99, p50 - f50, p99 - f99]
    };
    for _ in 0..rounds {
        for (i, (_, url, headers, _)) in targets.iter().enumerate() {
            let half = measure(url, headers, half_rate(i));
            let light = measure(url, headers, LIGHT_RATE);
            at_rate[i].push(std::array::from_fn(|k| {
                if k < 4 { half[k] } else { light[k - 4] }
            }));
        }
    }
    let at_rate: Vec<[f64; 8]> = at_rate
        .iter()
        .map(|h| std::array::from_fn(|k| median(&mut h.iter().map(|h| h[k]).collect::<Vec<_>>())))
        .collect();
    println!(
        "half load: open loop at half of each target's median req/s, at most half the nginx reverse proxy's ({anchor_half:.0}/s); light load: {LIGHT_RATE:.0}/s; over {FIXED_RATE_CONNECTIONS} connections, {half_secs:.1} s per round; latency from each request's write (from its due time when it waited for a connection); (+x): added to the backend's, measured alongside"
    );
    println!(
        "{:<46} {:>10} {:>8} {:>9} {:>9} {:>16} {:>16} {:>16} {:>9}",
        "target",
        "req/s",
        "CPU µs",
        "p50 ms",
        "p99 ms",
        "half-load p50",
        "half-load p99",
        "p99 at 5,000/s",
        "RSS MB"
    );
    for (i, (label, _, _, (pid, show_rss))) in targets.iter().enumerate() {
        let pick = |f: &dyn Fn(&(WrkResult, f64)) -> f64| {
            median(&mut runs[i].iter().map(f).collect::<Vec<_>>())
        };
        let (rps, cpu_us) = medians[i];
        let (p50, p99) = (pick(&|r| r.0.p50_ms), pick(&|r| r.0.p99_ms));
        let [h50, h99, added50, added99, _, l99, _, light_added99] = at_rate[i];
        let rss = if *show_rss {
            format!("{:.1}", rss_mb(*pid))
        } else {
            "-".into()
        };
        println!(
            "{:<46} {:>10.0} {:>8.1} {:>9.2} {:>9.2} {:>16} {:>16} {:>16} {:>9}",
            label,
            rps,
            cpu_us,
            p50,
            p99,
            format!("{h50:.2} ({added50:+.2})"),
            format!("{h99:.2} ({added99:+.2})"),
            format!("{l99:.2} ({light_added99:+.2})"),
            rss
        );
    }
    println!(
        "added p99 at half load (docs/design.md: under 1 ms): nginx reverse proxy {:+.2} ms, gatehouse with a key {:+.2} ms, with a key and a rate limit {:+.2} ms; at {LIGHT_RATE:.0}/s {:+.2}, {:+.2}, {:+.2} ms",
        at_rate[1][3], at_rate[3][3], at_rate[4][3], at_rate[1][7], at_rate[3][7], at_rate[4][7]
    );
    let per_round = |t: usize| -> Vec<String> {
        runs[t]
            .iter()
            .zip(&runs[1])
            .map(|(g, n)| format!("{:.0}%", 100.0 * g.0.rps / n.0.rps))
            .collect()
    };
    for (t, what) in [(3, "1 API, key"), (4, "key + rate-limit")] {
        println!(
            "gatehouse ({what}) against nginx reverse proxy: {:.0}% of its req/s (rounds: {}), {:.0}% against nginx with the same headers; CPU per request {:.1} µs against {:.1} µs",
            100.0 * medians[t].0 / medians[1].0,
            per_round(t).join(", "),
            100.0 * medians[t].0 / medians[2].0,
            medians[t].1,
            medians[1].1,
        );
    }
    // Reload: a new API goes live through the gateway with the big configuration loaded.
    let token = std::fs::read_to_string(big_dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let c = reqwest::Client::new();
    let t0 = Instant::now();
    rt.block_on(async {
        let base = format!("http://127.0.0.1:{m2}");
        let r = c.put(format!("{base}/apis/fresh")).bearer_auth(&token).json(&json!({"properties": {"displayName": "fresh", "path": "fresh", "serviceUrl": format!("http://127.0.0.1:{ORIGIN_PORT}"), "protocols": ["http"]}})).send().await.unwrap();
        assert!(r.status().is_success());
        let r = c.put(format!("{base}/apis/fresh/operations/get")).bearer_auth(&token).json(&json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/x"}})).send().await.unwrap();
        assert!(r.status().is_success());
    });
    let committed = t0.elapsed();
    let t1 = Instant::now();
    rt.block_on(async {
        loop {
            let r = c
                .get(format!("http://127.0.0.1:{gw2}/fresh/x"))
                .header("Ocp-Apim-Subscription-Key", &key)
                .send()
                .await
                .unwrap();
            if r.status() == 200 {
                break;
            }
            assert!(
                t1.elapsed() < Duration::from_secs(10),
                "the new API never went live"
            );
        }
    });
    println!(
        "reload with {apis} APIs + {subs} subscriptions: live {:.0} ms after the last PUT returned (2 PUTs took {:.0} ms); data populated in {populate_s:.1} s",
        t1.elapsed().as_secs_f64() * 1000.0,
        committed.as_secs_f64() * 1000.0
    );
}
