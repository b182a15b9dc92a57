//! Self-hosted gateways (`gatehouse gateway`) following a primary (`gatehouse serve`), all real
//! processes on loopback: changes reach them within a second, they serve on with the primary
//! killed, a gateway restarted meanwhile serves from its own copy, they catch up when the
//! primary is back, a refused token stops one serving (503) until a valid token is given, and
//! a gateway that fell behind the journal's retention takes a snapshot.

use gatehouse_testkit::EchoBackend;
use gatehouse_testkit::process::{ServeProcess, free_port};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

struct Primary {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Primary {
    fn of(process: &ServeProcess, port: u16) -> Primary {
        Primary {
            url: format!("http://127.0.0.1:{port}"),
            token: process.token(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the primary answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, path: &str, body: Value) {
        let (s, b) = self.call("PUT", path, Some(body)).await;
        assert!(s == 200 || s == 201, "PUT {path}: {s} {b}");
    }

    /// An API at path `id` on the echo backend, with a wildcard GET, served by `gateways`.
    async fn api(&self, id: &str, backend: &str, gateways: &[&str]) {
        self.put(
            &format!("/apis/{id}"),
            json!({"properties": {"displayName": id, "path": id, "serviceUrl": backend,
                   "protocols": ["http"], "subscriptionRequired": false}}),
        )
        .await;
        self.put(
            &format!("/apis/{id}/operations/get"),
            json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/*"}}),
        )
        .await;
        for g in gateways {
            self.put(&format!("/gateways/{g}/apis/{id}"), json!({}))
                .await;
        }
    }

    /// Gateways `west` (westeurope) and `east` (eastus), their tokens in `{id}.token`.
    async fn west_and_east(&self, cwd: &Path) {
        for (id, region) in [("west", "westeurope"), ("east", "eastus")] {
            self.put(
                &format!("/gateways/{id}"),
                json!({"properties": {"locationData": {"name": region}}}),
            )
            .await;
            std::fs::write(cwd.join(format!("{id}.token")), self.token_of(id).await).unwrap();
        }
    }

    async fn token_of(&self, gateway: &str) -> String {
        let expiry = (time::OffsetDateTime::now_utc() + time::Duration::days(20))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let (s, b) = self
            .call(
                "POST",
                &format!("/gateways/{gateway}/generateToken"),
                Some(json!({"keyType": "primary", "expiry": expiry})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        b["value"].as_str().unwrap().to_string()
    }
}

fn start_primary(cwd: &Path, mgmt: u16, extra: &[&str]) -> ServeProcess {
    let listen = format!("127.0.0.1:{mgmt}");
    let mut args = vec![
        "--data-dir",
        "primary",
        "--management-listen",
        &listen,
        "--portal-listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    ServeProcess::spawn(BIN, cwd, &args, &[])
}

fn start_gateway(cwd: &Path, primary: &str, id: &str, region: &str) -> ServeProcess {
    start_gateway_with(cwd, primary, id, region, &[])
}

fn start_gateway_with(
    cwd: &Path,
    primary: &str,
    id: &str,
    region: &str,
    extra: &[&str],
) -> ServeProcess {
    let (dir, token) = (format!("gw-{id}"), format!("{id}.token"));
    let mut args = vec![
        "--data-dir",
        &dir,
        "--primary",
        primary,
        "--gateway-id",
        id,
        "--token-file",
        &token,
        "--gateway-listen",
        "127.0.0.1:0",
        "--region",
        region,
    ];
    args.extend_from_slice(extra);
    ServeProcess::spawn_command(BIN, cwd, "gateway", &args, &[])
}

fn gateway_url(p: &ServeProcess) -> String {
    p.endpoints()["gateway"].as_str().unwrap().to_string()
}

async fn status_of(http: &reqwest::Client, url: &str) -> u16 {
    match http.get(url).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Waits until every URL answers `want`; the time it took.
async fn until_all(
    http: &reqwest::Client,
    urls: &[String],
    want: u16,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let mut all = true;
        for u in urls {
            all &= status_of(http, u).await == want;
        }
        if all {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{urls:?} did not all answer {want} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends requests to `urls` in a loop until told to stop; the failures seen.
fn traffic(
    http: reqwest::Client,
    urls: Vec<String>,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<(u64, Vec<String>)>,
) {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u64, Vec::new());
        while !*stopped.borrow_and_update() {
            for u in &urls {
                match http.get(u).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(format!("{u}: {}", r.status())),
                    Err(e) => failed.push(format!("{u}: {e}")),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, failed)
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regional_gateways_follow_serve_alone_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let backend = EchoBackend::start().await.unwrap();
    let mgmt = free_port();
    let mut primary_process = Some(start_primary(
        cwd,
        mgmt,
        &["--journal-retention-seconds", "2"],
    ));
    let primary = Primary::of(primary_process.as_ref().unwrap(), mgmt);
    let http = primary.http.clone();
    primary.west_and_east(cwd).await;
    primary.api("echo", &backend.url, &["west", "east"]).await;
    primary.api("westonly", &backend.url, &["west"]).await;

    // Both follow; each serves only its own APIs.
    let mut west = start_gateway_with(
        cwd,
        &primary.url,
        "west",
        "westeurope",
        &["--metrics-listen", "127.0.0.1:0"],
    );
    let mut east = Some(start_gateway(cwd, &primary.url, "east", "eastus"));
    let (w, e) = (gateway_url(&west), gateway_url(east.as_ref().unwrap()));
    until_all(
        &http,
        &[format!("{w}/echo/a"), format!("{e}/echo/a")],
        200,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&http, &format!("{w}/westonly/a")).await, 200);
    assert_eq!(
        status_of(&http, &format!("{e}/westonly/a")).await,
        404,
        "east does not serve an API linked only to west"
    );

    // Subscription keys work on a gateway, which holds only their digests: neither a wrong key
    // nor the digest itself opens the API.
    primary
        .put(
            "/apis/keyed",
            json!({"properties": {"displayName": "keyed", "path": "keyed",
              "serviceUrl": backend.url, "protocols": ["http"]}}),
        )
        .await;
    primary
        .put(
            "/apis/keyed/operations/get",
            json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/*"}}),
        )
        .await;
    primary.put("/gateways/west/apis/keyed", json!({})).await;
    primary
        .put(
            "/subscriptions/s1",
            json!({"properties": {"scope": "/apis/keyed", "displayName": "S1", "state": "active"}}),
        )
        .await;
    let (_, keys) = primary
        .call("POST", "/subscriptions/s1/listSecrets", None)
        .await;
    let key = keys["primaryKey"].as_str().unwrap().to_string();
    let keyed = |k: &str| {
        http.get(format!("{w}/keyed/a"))
            .header("Ocp-Apim-Subscription-Key", k)
            .send()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while keyed(&key).await.unwrap().status() != 200 {
        assert!(
            Instant::now() < deadline,
            "the key does not open the API on the gateway"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(keyed("wrong").await.unwrap().status(), 401);
    let digest = gatehouse_model::keys::subscription_key_digest(&key);
    assert_eq!(keyed(&digest).await.unwrap().status(), 401);

    // A change on the primary is served by both within a second.
    primary.api("second", &backend.url, &["west", "east"]).await;
    let took = until_all(
        &http,
        &[format!("{w}/second/a"), format!("{e}/second/a")],
        200,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        took < Duration::from_secs(1),
        "the change took {took:?} to reach both gateways"
    );

    // The gateway's own metrics, labelled with its region.
    let metrics_url = west.endpoints()["metrics"].as_str().unwrap().to_string();
    let metrics = http
        .get(&metrics_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gatehouse_gateway_primary_connected{region=\"westeurope\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_gateway_requests_total{region=\"westeurope\",api=\"echo\""),
        "{metrics}"
    );

    // The primary shows each node, its region and its lag.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, shown) = primary.call("GET", "/gateways/west", None).await;
    let nodes = shown["properties"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(nodes.len(), 1, "{shown}");
    assert_eq!(nodes[0]["region"], "westeurope");
    assert_eq!(nodes[0]["state"], "serving");
    assert_eq!(nodes[0]["connected"], true);
    assert_eq!(nodes[0]["lagRevisions"], 0, "{shown}");

    // The primary killed: both serve on, no request fails.
    let urls = vec![format!("{w}/echo/a"), format!("{e}/second/b")];
    let (stop, load) = traffic(http.clone(), urls);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(primary_process.take()); // SIGKILL
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send(true).unwrap();
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "requests failed with the primary gone: {failed:?}"
    );
    assert!(ok > 20, "too little traffic to tell: {ok}");

    // A gateway restarted while the primary is down serves from its own copy.
    assert!(east.take().unwrap().terminate().success());
    let east2 = start_gateway(cwd, &primary.url, "east", "eastus");
    let e2 = gateway_url(&east2);
    assert_eq!(status_of(&http, &format!("{e2}/second/a")).await, 200);

    // The primary back: both catch up. (SIGKILL left its endpoints.json behind.)
    std::fs::remove_file(cwd.join("primary/endpoints.json")).unwrap();
    primary_process = Some(start_primary(
        cwd,
        mgmt,
        &["--journal-retention-seconds", "2"],
    ));
    primary.api("third", &backend.url, &["west", "east"]).await;
    until_all(
        &http,
        &[format!("{w}/third/a"), format!("{e2}/third/a")],
        200,
        Duration::from_secs(15),
    )
    .await;

    // Usage counted on the gateways — also while the primary was down — reaches the primary's
    // reports, by region.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, report) = primary.call("GET", "/reports/byRegion", None).await;
        assert_eq!(s, 200, "{report}");
        let served_in =
            |region: &str| {
                report["value"].as_array().into_iter().flatten().any(|r| {
                    r["region"] == region && r["callCountSuccess"].as_u64().unwrap_or(0) > 0
                })
            };
        if served_in("westeurope") && served_in("eastus") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateways' usage did not reach the primary: {report}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A revoked token (its key regenerated): the gateway refuses traffic rather than serve a
    // configuration it can no longer follow; a new token makes it serve again.
    let (s, _) = primary
        .call(
            "POST",
            "/gateways/west/regenerateKey",
            Some(json!({"keyType": "primary"})),
        )
        .await;
    assert_eq!(s, 204);
    until_all(
        &http,
        &[format!("{w}/echo/a")],
        503,
        Duration::from_secs(15),
    )
    .await;
    std::fs::write(cwd.join("west.token"), primary.token_of("west").await).unwrap();
    until_all(
        &http,
        &[format!("{w}/echo/a")],
        200,
        Duration::from_secs(15),
    )
    .await;
    assert!(west.exited().is_none());

    // A gateway that fell behind the journal's retention takes a snapshot.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, shown) = primary.call("GET", "/gateways/east", None).await;
    let east_at = shown["properties"]["nodes"][0]["revision"]
        .as_u64()
        .expect("east reported");
    assert!(east2.terminate().success());
    primary.api("fourth", &backend.url, &["west", "east"]).await;
    // The stopped node's pin lapses after 15 s; then the 2 s retention removes what it lacks.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (s, _) = primary
            .call("GET", &format!("/journal?since={east_at}"), None)
            .await;
        if s == 410 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the journal was not compacted past revision {east_at}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let east3 = start_gateway(cwd, &primary.url, "east", "eastus");
    let e3 = gateway_url(&east3);
    let log = || std::fs::read_to_string(&east3.log).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(&http, &format!("{e3}/fourth/a")).await != 200 {
        assert!(
            Instant::now() < deadline,
            "east did not take a snapshot: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = log();
    assert!(
        log.contains("took the primary's whole configuration"),
        "{log}"
    );
    drop(primary_process);
}

#[test]
fn a_wrong_token_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t"), "not a token").unwrap();
    let out = std::process::Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "gateway",
            "--primary",
            "http://127.0.0.1:9",
            "--gateway-id",
            "west",
            "--token-file",
            "t",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not hold a token of gateway 'west'"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_or_forged_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let mgmt = free_port();
    let process = start_primary(cwd, mgmt, &[]);
    let primary = Primary::of(&process, mgmt);
    primary
        .put(
            "/gateways/west",
            json!({"properties": {"locationData": {"name": "w"}}}),
        )
        .await;
    let good = primary.token_of("west").await;
    let forged = format!("{}AAAA", &good[..good.len() - 4]);
    for (token, says) in [
        ("west&202001010000&AAAA".to_string(), "expired"),
        (forged, "signature"),
    ] {
        std::fs::write(cwd.join("t"), &token).unwrap();
        let out = std::process::Command::new(BIN)
            .current_dir(cwd)
            .args([
                "--data-dir",
                "g",
                "gateway",
                "--primary",
                &primary.url,
                "--gateway-id",
                "west",
                "--token-file",
                "t",
                "--gateway-listen",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("refused the gateway token") && err.contains(says),
            "{err}"
        );
    }
}

/// With `--counters redis://…`, a rate limit holds across gateways; with Redis gone, each
/// gateway counts alone and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_shared_through_redis() {
    let mut redis = gatehouse_testkit::redis::RedisServer::start().unwrap();
    let counters = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let backend = EchoBackend::start().await.unwrap();
    let mgmt = free_port();
    let _primary_process = start_primary(cwd, mgmt, &["--counters", &counters]);
    let primary = Primary::of(&_primary_process, mgmt);
    let http = primary.http.clone();
    primary.west_and_east(cwd).await;
    for (api, calls) in [("limited", 10), ("alone", 3)] {
        primary.api(api, &backend.url, &["west", "east"]).await;
        primary
            .put(
                &format!("/apis/{api}/policies/policy"),
                json!({"properties": {"format": "rawxml", "value": format!(
                    "<policies><inbound><rate-limit-by-key calls=\"{calls}\" renewal-period=\"60\" counter-key=\"{api}\" /></inbound><backend><forward-request /></backend><outbound /><on-error /></policies>")}}),
            )
            .await;
    }
    let extra = ["--counters", counters.as_str()];
    let west = start_gateway_with(cwd, &primary.url, "west", "westeurope", &extra);
    let east = start_gateway_with(cwd, &primary.url, "east", "eastus", &extra);
    let urls = [gateway_url(&west), gateway_url(&east)];
    // Rate-limit windows are fixed and aligned to the clock (as APIM's renewal periods): the
    // counting below must not straddle the start of a new 60 s window.
    let into_window = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        % 60.0;
    if into_window > 60.0 - 25.0 {
        tokio::time::sleep(Duration::from_secs_f64(60.0 - into_window + 0.2)).await;
    }
    until_all(
        &http,
        &[
            format!("{}/alone/a", urls[0]),
            format!("{}/alone/a", urls[1]),
        ],
        200,
        Duration::from_secs(5),
    )
    .await;
    // The checks above spent one call of "alone" on each gateway; "limited" is untouched.

    // 16 calls alternating between the gateways, 300 ms apart (the gateways exchange counts
    // every 100 ms): the limit of 10 holds for both together.
    let mut statuses = Vec::new();
    for i in 0..16 {
        statuses.push(status_of(&http, &format!("{}/limited/x", urls[i % 2])).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        ok, 10,
        "the shared limit let {ok} of 16 through: {statuses:?}"
    );
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");

    // Redis gone: each gateway counts alone ("alone": 3 per window, one call spent on each).
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut per_gateway = Vec::new();
    for u in &urls {
        let mut ok = 0;
        for _ in 0..4 {
            if status_of(&http, &format!("{u}/alone/y")).await == 200 {
                ok += 1;
            }
        }
        per_gateway.push(ok);
    }
    assert_eq!(
        per_gateway,
        vec![2, 2],
        "each gateway allows its own 3 (one spent) once Redis is gone"
    );
    let log = std::fs::read_to_string(&west.log).unwrap();
    assert!(log.contains("rate limits count per gateway"), "{log}");
}
