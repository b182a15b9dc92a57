//! `gatehouse move` end to end, through the built binary: two instances standing for
//! westeurope and eastus, each gateway on its own loopback address with the same port, so that
//! DNS alone decides where traffic goes; Knot DNS serving `contoso.test`; a client resolving
//! through it with the records' TTL and sending keyed requests all along; a writer changing
//! APIs, products and subscriptions all along. Then the move, and the checks: no failed
//! request, no lost change, DNS points to eastus, eastus serves, the source is gone.

use gatehouse_mover::dns::RecordValue;
use gatehouse_testkit::EchoBackend;
use gatehouse_testkit::dns::{Knot, RecordType, TtlResolver};
use gatehouse_testkit::process::ServeProcess;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const ZONE: &str = "contoso.test";

/// A port free on both 127.0.0.2 and 127.0.0.3.
fn shared_port() -> u16 {
    for _ in 0..50 {
        let a = std::net::TcpListener::bind("127.0.0.2:0").expect("127.0.0.2 is usable");
        let port = a.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.3", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

struct Side {
    process: ServeProcess,
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Side {
    /// An instance in `cwd/dir`, on the embedded store or on the shared `store`.
    fn start(
        cwd: &Path,
        dir: &str,
        name: &str,
        region: &str,
        gateway: &str,
        extra: &[&str],
    ) -> Side {
        let mut args = vec![
            "--data-dir",
            dir,
            "--name",
            name,
            "--region",
            region,
            "--management-listen",
            "127.0.0.1:0",
            "--portal-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            gateway,
        ];
        args.extend_from_slice(extra);
        let process = ServeProcess::spawn(BIN, cwd, &args, &[("GATEHOUSE_LOG", "warn")]);
        let url = process.endpoints()["management"]
            .as_str()
            .unwrap()
            .to_string();
        let token = process.token();
        Side {
            process,
            url,
            token,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.http, &self.url, &self.token, method, path, body).await
    }

    async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (s, v) = self.call(method, path, Some(body)).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }
}

async fn call(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http
        .request(method.parse().unwrap(), format!("{url}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    match req.send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!(e.to_string())),
    }
}

/// Configuration on the source: an API to the echo backend with a GET operation, a product,
/// a subscription for the client.
async fn configure(source: &Side, backend: &EchoBackend) -> String {
    source
        .ok(
            "PUT",
            "/apis/echo",
            json!({"properties": {"displayName": "Echo", "path": "echo", "serviceUrl": backend.url, "protocols": ["http", "https"]}}),
        )
        .await;
    source
        .ok(
            "PUT",
            "/apis/echo/operations/status",
            json!({"properties": {"displayName": "Status", "method": "GET", "urlTemplate": "/fixed"}}),
        )
        .await;
    source
        .ok(
            "PUT",
            "/products/starter",
            json!({"properties": {"displayName": "Starter", "state": "published", "subscriptionRequired": true}}),
        )
        .await;
    source
        .ok("PUT", "/products/starter/apis/echo", json!({}))
        .await;
    // The developer portal's content, published: APIM's move leaves it to be redone by hand.
    source
        .ok(
            "PUT",
            "/contentTypes/page/contentItems/home",
            json!({"properties": {"title": "Home", "permalink": "/", "body": "# Contoso APIs, moved with the instance"}}),
        )
        .await;
    source
        .ok(
            "PUT",
            "/portalRevisions/before-move",
            json!({"properties": {"description": "before the move"}}),
        )
        .await;
    source
        .ok(
            "PUT",
            "/subscriptions/client",
            json!({"properties": {"displayName": "Client", "scope": "/products/starter", "state": "active"}}),
        )
        .await;
    let keys = source
        .ok("POST", "/subscriptions/client/listSecrets", json!({}))
        .await;
    keys["primaryKey"].as_str().unwrap().to_string()
}

#[derive(Default)]
struct ClientStats {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

/// Keyed requests to the custom domain, resolved through the DNS server, until `stop`.
fn client(
    knot: &Knot,
    port: u16,
    key: String,
    stop: Arc<AtomicBool>,
    stats: Arc<ClientStats>,
) -> tokio::task::JoinHandle<()> {
    let http = reqwest::Client::builder()
        .dns_resolver(Arc::new(TtlResolver::new(knot.addr, ZONE)))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let r = http
                .get(format!("http://api.{ZONE}:{port}/echo/fixed"))
                .header("Ocp-Apim-Subscription-Key", &key)
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    stats
                        .errors
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status()));
                }
                Err(e) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    stats.errors.lock().unwrap().push(format!("{e:?}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Changes APIs, products and subscriptions on whichever instance is authoritative: the
/// source until it answers that the service has moved, then the target. Returns every
/// acknowledged change: (path, displayName).
fn writer(
    source: (&str, &str),
    target: (&str, &str),
    backend_url: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let (su, st) = (source.0.to_string(), source.1.to_string());
    let (tu, tt) = (target.0.to_string(), target.1.to_string());
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut on_target = false;
        let mut problems = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            i += 1;
            let name = format!("w{i}");
            let (path, body) = match i % 3 {
                0 => (
                    format!("/apis/{name}"),
                    json!({"properties": {"displayName": name, "path": name, "serviceUrl": backend_url, "protocols": ["http"]}}),
                ),
                1 => (
                    format!("/products/{name}"),
                    json!({"properties": {"displayName": name, "state": "published"}}),
                ),
                _ => (
                    format!("/subscriptions/{name}"),
                    json!({"properties": {"displayName": name, "scope": "/products/starter"}}),
                ),
            };
            loop {
                let (url, token) = if on_target { (&tu, &tt) } else { (&su, &st) };
                let (s, v) = call(&http, url, token, "PUT", &path, Some(body.clone())).await;
                if (200..300).contains(&s) {
                    acked.lock().await.push((path.clone(), name.clone()));
                    break;
                }
                let msg = v["error"]["message"].as_str().unwrap_or("").to_string();
                if s == 409 && msg.contains("has moved to") {
                    on_target = true;
                    continue;
                }
                if s == 409 || s == 0 {
                    // Frozen for the final delta (or the source restarting): retry shortly.
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                problems.push(format!("PUT {path}: {s} {v}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        problems
    })
}

/// Self-hosted gateways following the source (`gatehouse gateway`), with traffic on them.
struct Regional {
    processes: Vec<ServeProcess>,
    urls: Vec<String>,
    stats: Arc<ClientStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Regional {
    async fn start(env: &Env, stop: Arc<AtomicBool>) -> Regional {
        let cwd = env.cwd();
        let mut processes = Vec::new();
        for g in ["west", "east"] {
            env.source
                .ok(
                    "PUT",
                    &format!("/gateways/{g}"),
                    json!({"properties": {"locationData": {"name": g}}}),
                )
                .await;
            env.source
                .ok("PUT", &format!("/gateways/{g}/apis/echo"), json!({}))
                .await;
            let t = env
                .source
                .ok(
                    "POST",
                    &format!("/gateways/{g}/generateToken"),
                    json!({"keyType": "primary", "expiry": soon(20)}),
                )
                .await;
            std::fs::write(cwd.join(format!("{g}.token")), t["value"].as_str().unwrap()).unwrap();
            let (dir, token) = (format!("gw-{g}"), format!("{g}.token"));
            processes.push(ServeProcess::spawn_command(
                BIN,
                cwd,
                "gateway",
                &[
                    "--data-dir",
                    &dir,
                    "--primary",
                    &env.source.url,
                    "--gateway-id",
                    g,
                    "--token-file",
                    &token,
                    "--gateway-listen",
                    "127.0.0.1:0",
                ],
                &[("GATEHOUSE_LOG", "info")],
            ));
        }
        let urls: Vec<String> = processes
            .iter()
            .map(|p| p.endpoints()["gateway"].as_str().unwrap().to_string())
            .collect();
        let stats = Arc::new(ClientStats::default());
        let (key, targets, st) = (env.key.clone(), urls.clone(), stats.clone());
        let task = tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                for u in &targets {
                    let r = http
                        .get(format!("{u}/echo/fixed"))
                        .header("Ocp-Apim-Subscription-Key", &key)
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            st.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            st.failed.fetch_add(1, Ordering::Relaxed);
                            let what = other
                                .map(|r| r.status().to_string())
                                .unwrap_or_else(|e| e.to_string());
                            st.errors.lock().unwrap().push(format!("{u}: {what}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Regional {
            processes,
            urls,
            stats,
            task,
        }
    }

    /// No request failed on the gateways; they follow the target now.
    async fn check(self, target: &Side) {
        self.task.await.unwrap();
        let (ok, failed) = (
            self.stats.ok.load(Ordering::Relaxed),
            self.stats.failed.load(Ordering::Relaxed),
        );
        eprintln!("self-hosted gateways: {ok} ok, {failed} failed");
        assert!(ok > 20, "too little traffic on the gateways: {ok}");
        assert_eq!(
            failed,
            0,
            "requests failed on the gateways: {:?}",
            self.stats.errors.lock().unwrap()
        );
        target
            .ok("PUT", "/apis/after", json!({"properties": {"displayName": "After", "path": "after", "serviceUrl": "http://127.0.0.1:9", "protocols": ["http"], "subscriptionRequired": false}}))
            .await;
        target
            .ok(
                "PUT",
                "/apis/after/operations/get",
                json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/*"}}),
            )
            .await;
        for g in ["west", "east"] {
            target
                .ok("PUT", &format!("/gateways/{g}/apis/after"), json!({}))
                .await;
        }
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        for (u, p) in self.urls.iter().zip(&self.processes) {
            // Routed (the backend is unreachable: not 404) once the gateway follows the target.
            while http
                .get(format!("{u}/after/x"))
                .send()
                .await
                .map_or(true, |r| r.status() == 404)
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{u} does not follow the target: {}",
                    std::fs::read_to_string(&p.log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn soon(days: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::days(days))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

struct Scenario {
    same_name: bool,
    /// APIM's order: delete the source, then restore (with downtime).
    delete_first: bool,
    /// Kill the move (kill -9) after this step's work, then resume it.
    fault: Option<String>,
    /// Keep a client and a writer busy all along.
    traffic: bool,
    /// Move with a region overlay (a second backend, a named value, the custom host name).
    overlay: bool,
    /// Two self-hosted gateways follow the source, with keyed traffic on them all along.
    gateways: bool,
    /// The target's control plane on PostgreSQL (the source's stays embedded).
    target_on_postgres: bool,
    /// The source's control plane on PostgreSQL (the target's embedded): the move back.
    source_on_postgres: bool,
    /// The source keeps a continuous archive and the move starts from it (no backup).
    from_archive: bool,
}

impl Scenario {
    fn plain(same_name: bool) -> Scenario {
        Scenario {
            same_name,
            delete_first: false,
            fault: None,
            traffic: true,
            overlay: false,
            gateways: false,
            target_on_postgres: false,
            source_on_postgres: false,
            from_archive: false,
        }
    }
}

fn run_move(args: &[String], fault: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args);
    cmd.env_remove("GATEHOUSE_MOVE_FAULT");
    if let Some(f) = fault {
        cmd.env("GATEHOUSE_MOVE_FAULT", f);
    }
    cmd.output().expect("gatehouse move runs")
}

/// Two regions, DNS, a backend and the source's configuration, ready to move.
struct Env {
    dir: tempfile::TempDir,
    port: u16,
    backend: EchoBackend,
    knot: Knot,
    source: Side,
    target: Side,
    key: String,
    /// The PostgreSQL of a side on it (stopped when the test ends), and the source's database.
    _postgres: Option<gatehouse_testkit::postgres::PostgresServer>,
    source_store: Option<String>,
    /// The source's continuous archive, when it keeps one: the move starts from it.
    archive: Option<String>,
}

impl Env {
    async fn start(same_name: bool) -> Env {
        Env::start_on(same_name, (false, false), false).await
    }

    /// With `on_postgres`, the source's (first) or the target's (second) control plane on a
    /// PostgreSQL of the test's own.
    /// With `archiving`, the source ships its journal to a continuous archive in
    /// `archives/continuous` (its key in `archive.key`).
    async fn start_on(same_name: bool, on_postgres: (bool, bool), archiving: bool) -> Env {
        let postgres = (on_postgres.0 || on_postgres.1)
            .then(|| gatehouse_testkit::postgres::PostgresServer::start().unwrap());
        let store_of = |wanted: bool, db: &str| {
            postgres
                .as_ref()
                .filter(|_| wanted)
                .map(|pg| pg.create_database(db).unwrap())
        };
        let source_store = store_of(on_postgres.0, "westeurope");
        let target_store = store_of(on_postgres.1, "eastus");
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        let port = shared_port();
        let backend = EchoBackend::start().await.unwrap();
        let (source_name, target_name) = if same_name {
            ("contoso-apim", "contoso-apim-eastus")
        } else {
            ("contoso-westeurope", "contoso-eastus")
        };
        let records = if same_name {
            "contoso-apim 1 A 127.0.0.2\ngw-eastus 1 A 127.0.0.3\napi 1 CNAME contoso-apim"
        } else {
            "gw-westeurope 1 A 127.0.0.2\ngw-eastus 1 A 127.0.0.3\napi 1 CNAME gw-westeurope"
        };
        let knot = Knot::start(ZONE, records).await.unwrap();
        let mut source_args: Vec<String> = Vec::new();
        if let Some(url) = &source_store {
            source_args.extend(["--store".into(), url.clone()]);
        }
        let archive = archiving.then(|| {
            let out = gatehouse_testkit::process::cli(BIN, cwd, &["backup", "new-key"]);
            assert!(out.status.success());
            std::fs::write(cwd.join("archive.key"), &out.stdout).unwrap();
            let url = format!("file://{}/archives/continuous", cwd.display());
            source_args.extend([
                "--archive".into(),
                url.clone(),
                "--archive-key-file".into(),
                cwd.join("archive.key").display().to_string(),
            ]);
            url
        });
        let target_args: Vec<String> = target_store
            .iter()
            .flat_map(|url| ["--store".to_string(), url.clone()])
            .collect();
        let source = Side::start(
            cwd,
            "westeurope",
            source_name,
            "westeurope",
            &format!("127.0.0.2:{port}"),
            &source_args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let target = Side::start(
            cwd,
            "eastus",
            target_name,
            "eastus",
            &format!("127.0.0.3:{port}"),
            &target_args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let source_host = if same_name {
            "contoso-apim"
        } else {
            "gw-westeurope"
        };
        source
            .ok(
                "PATCH",
                "/",
                json!({"properties": {"hostnameConfigurations": [{"type": "Proxy", "hostName": format!("{source_host}.{ZONE}")}]}}),
            )
            .await;
        target
            .ok(
                "PATCH",
                "/",
                json!({"properties": {"hostnameConfigurations": [{"type": "Proxy", "hostName": format!("gw-eastus.{ZONE}")}]}}),
            )
            .await;
        let key = configure(&source, &backend).await;
        source
            .ok(
                "PUT",
                "/namedValues/region",
                json!({"properties": {"displayName": "region", "value": "westeurope", "secret": true}}),
            )
            .await;
        Env {
            dir,
            port,
            backend,
            knot,
            source,
            target,
            key,
            _postgres: postgres,
            source_store,
            archive,
        }
    }

    fn cwd(&self) -> &Path {
        self.dir.path()
    }

    fn state(&self) -> PathBuf {
        self.cwd().join("gatehouse-move.json")
    }

    fn move_args(&self, same_name: bool, extra: &[&str]) -> Vec<String> {
        let cwd = self.cwd();
        let mut args: Vec<String> = [
            "move",
            "--json",
            "--source-data-dir",
            &cwd.join("westeurope").display().to_string(),
            "--target-data-dir",
            &cwd.join("eastus").display().to_string(),
            "--state",
            &self.state().display().to_string(),
            "--dns",
            &format!("rfc2136://{}", self.knot.addr),
            "--dns-zone",
            ZONE,
            "--dns-key-file",
            &self.knot.key_file().display().to_string(),
            "--quiet-seconds",
            "1",
            "--max-drain-seconds",
            "20",
            "--freeze-seconds",
            "10",
            "--yes",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        match &self.archive {
            Some(url) => args.extend([
                "--from-archive".to_string(),
                url.clone(),
                "--key-file".to_string(),
                cwd.join("archive.key").display().to_string(),
            ]),
            None => args.extend([
                "--storage".to_string(),
                cwd.join("archives").display().to_string(),
            ]),
        }
        if same_name {
            // Same-name moves also compare GET responses of both sides (--shadow).
            args.extend(["--same-name".to_string(), "--shadow".to_string()]);
        } else {
            args.extend(["--custom-domain".to_string(), format!("api.{ZONE}")]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }
}

async fn scenario(s: Scenario) {
    let env = Env::start_on(
        s.same_name,
        (s.source_on_postgres, s.target_on_postgres),
        s.from_archive,
    )
    .await;
    let (cwd, port, key) = (env.cwd().to_path_buf(), env.port, env.key.clone());
    let eastus_backend = EchoBackend::start().await.unwrap();
    let mut extra: Vec<String> = Vec::new();
    if s.overlay {
        let overlay = cwd.join("eastus.yaml");
        std::fs::write(
            &overlay,
            format!(
                "apis:\n  echo:\n    serviceUrl: {}\nnamedValues:\n  region:\n    value: eastus\nhostnames:\n  - hostName: api.{ZONE}\n",
                eastus_backend.url
            ),
        )
        .unwrap();
        extra.extend(["--overlay".to_string(), overlay.display().to_string()]);
    }
    if s.delete_first {
        extra.push("--delete-source-first".into());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let regional = if s.gateways {
        Some(Regional::start(&env, stop.clone()).await)
    } else {
        None
    };
    let stats = Arc::new(ClientStats::default());
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (client_task, writer_task) = if s.traffic {
        let c = client(&env.knot, port, key.clone(), stop.clone(), stats.clone());
        let w = writer(
            (&env.source.url, &env.source.token),
            (&env.target.url, &env.target.token),
            env.backend.url.clone(),
            stop.clone(),
            acked.clone(),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        (Some(c), Some(w))
    } else {
        (None, None)
    };

    let extra_refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let args = env.move_args(s.same_name, &extra_refs);
    let output = {
        let fault = s.fault.clone();
        tokio::task::spawn_blocking(move || run_move(&args, fault.as_deref()))
            .await
            .unwrap()
    };
    let output = if let Some(step) = &s.fault {
        assert!(
            !output.status.success(),
            "the move was to die after {step}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let resume: Vec<String> = vec![
            "move".into(),
            "--json".into(),
            "--resume".into(),
            "--state".into(),
            env.state().display().to_string(),
        ];
        tokio::task::spawn_blocking(move || run_move(&resume, None))
            .await
            .unwrap()
    } else {
        output
    };
    assert!(
        output.status.success(),
        "the move failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("the report is JSON");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(report["outcome"], "completed", "{report}");
    assert_eq!(report["changesLost"], 0, "{report}");
    assert_eq!(report["manualStepsLeft"], json!([]), "{report}");
    if s.from_archive {
        // No backup was made: the target restored a revision of the continuous archive.
        let archives = std::fs::read_dir(cwd.join("archives")).unwrap();
        let names: Vec<String> = archives
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["continuous"], "{names:?}");
        let state: Value = serde_json::from_slice(&std::fs::read(env.state()).unwrap()).unwrap();
        let backup = state["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "backup")
            .unwrap();
        assert!(
            backup["detail"]["archive"]
                .as_str()
                .unwrap()
                .ends_with("archives/continuous"),
            "{backup}"
        );
        assert!(
            backup["detail"]["revision"].as_u64().unwrap() > 1,
            "{backup}"
        );
    }
    if s.delete_first {
        assert!(
            report["downtimeMs"].as_u64().unwrap() > 0,
            "APIM's order has downtime, and the report says how much: {report}"
        );
    } else {
        assert_eq!(report["failedRequests"], 0, "{report}");
        assert_eq!(report["downtimeMs"], 0, "{report}");
    }
    let target = &env.target;

    // The target's portal shows the source's published content.
    let portal = target.process.endpoints()["portal"]
        .as_str()
        .unwrap()
        .to_string();
    let home = reqwest::get(&portal).await.unwrap().text().await.unwrap();
    assert!(
        home.contains("Contoso APIs, moved with the instance"),
        "{home}"
    );
    assert!(
        report["carried"]
            .to_string()
            .contains("developer portal content"),
        "{report}"
    );

    // DNS now sends clients to eastus.
    if s.same_name {
        assert_eq!(
            env.knot
                .lookup(&format!("contoso-apim.{ZONE}"), RecordType::A)
                .await,
            Some(RecordValue::A("127.0.0.3".parse().unwrap()))
        );
        let (_, svc) = target.call("GET", "/", None).await;
        assert_eq!(
            svc["name"], "contoso-apim",
            "the target took the source's name"
        );
    } else {
        assert_eq!(
            env.knot
                .lookup(&format!("api.{ZONE}"), RecordType::CNAME)
                .await,
            Some(RecordValue::Cname(format!("gw-eastus.{ZONE}")))
        );
    }
    if s.overlay {
        let (_, api) = target.call("GET", "/apis/echo", None).await;
        assert_eq!(
            api["properties"]["serviceUrl"].as_str(),
            Some(eastus_backend.url.as_str())
        );
        let (_, nv) = target
            .call("POST", "/namedValues/region/listValue", None)
            .await;
        assert_eq!(nv["value"], "eastus");
        let (_, svc) = target.call("GET", "/", None).await;
        let hosts = svc["properties"]["hostnameConfigurations"].to_string();
        assert!(hosts.contains(&format!("api.{ZONE}")), "{hosts}");
        assert!(
            report["carried"]
                .to_string()
                .contains("set by the overlay: 0 backend(s), 1 API(s)"),
            "{report}"
        );
    }

    // Keep the client going a moment: eastus serves it all.
    let (_, before) = target.call("GET", "/drain", None).await;
    tokio::time::sleep(Duration::from_millis(if s.traffic { 700 } else { 0 })).await;
    stop.store(true, Ordering::Relaxed);
    if let Some(c) = client_task {
        c.await.unwrap();
    }
    let writer_problems = match writer_task {
        Some(w) => w.await.unwrap(),
        None => Vec::new(),
    };
    let (_, after) = target.call("GET", "/drain", None).await;
    let acked = acked.lock().await.clone();
    eprintln!(
        "client: {} ok, {} failed; writer: {} changes acknowledged",
        stats.ok.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        acked.len()
    );
    if s.traffic {
        assert!(
            after["requests"].as_u64() > before["requests"].as_u64(),
            "eastus served the client at the end: {before} → {after}"
        );
        assert!(stats.ok.load(Ordering::Relaxed) > 20);
        assert_eq!(
            stats.failed.load(Ordering::Relaxed),
            0,
            "failed requests: {:?}",
            stats.errors.lock().unwrap()
        );
        assert!(writer_problems.is_empty(), "{writer_problems:?}");
        assert!(acked.len() > 10, "the writer made changes: {}", acked.len());
    }

    if let Some(r) = regional {
        r.check(target).await;
    }

    // Every acknowledged change is on the target, with its last value.
    let echo = ("/apis/echo".to_string(), "Echo".to_string());
    for (path, name) in acked.iter().chain(std::iter::once(&echo)) {
        let (st, v) = target.call("GET", path, None).await;
        assert_eq!(st, 200, "{path} is on the target");
        assert_eq!(
            v["properties"]["displayName"].as_str(),
            Some(name.as_str()),
            "{path}"
        );
    }
    // The client's subscription key works on the target.
    let (_, k) = target
        .call("POST", "/subscriptions/client/listSecrets", None)
        .await;
    assert_eq!(k["primaryKey"].as_str(), Some(key.as_str()));

    // The source is gone: its process ended and its data directory was removed.
    let mut source = env.source;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while source.process.exited().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the source still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !cwd.join("westeurope").exists(),
        "the source's data directory was removed"
    );
    // A source on PostgreSQL is marked deleted there: no node starts on it again.
    if let Some(url) = &env.source_store {
        let out = gatehouse_testkit::process::cli(
            BIN,
            &cwd,
            &[
                "serve",
                "--data-dir",
                "again",
                "--store",
                url,
                "--no-portal",
            ],
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("was deleted through the management API"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_to_another_region_keeps_its_own_name() {
    scenario(Scenario {
        overlay: true,
        gateways: true,
        ..Scenario::plain(false)
    })
    .await;
}

/// A move from the source's continuous archive: no backup, the target restores the revision
/// the source had when the move began (a base and the changes after it), then catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_from_the_continuous_archive_without_a_backup() {
    scenario(Scenario {
        from_archive: true,
        ..Scenario::plain(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_with_the_same_name_without_downtime() {
    scenario(Scenario::plain(true)).await;
}

/// The move onto a control plane on PostgreSQL, and back, keeps every promise: no failed
/// request, no lost change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_from_the_embedded_store_onto_postgres() {
    scenario(Scenario {
        target_on_postgres: true,
        ..Scenario::plain(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_from_postgres_back_to_the_embedded_store() {
    scenario(Scenario {
        source_on_postgres: true,
        ..Scenario::plain(true)
    })
    .await;
}

fn plan_steps(same_name: bool) -> Vec<String> {
    let mut args = vec![
        "move",
        "--plan",
        "--json",
        "--source-data-dir",
        "/x",
        "--target-data-dir",
        "/y",
        "--storage",
        "file:///tmp/plan-only",
    ];
    if same_name {
        args.push("--same-name");
    }
    let out = std::process::Command::new(BIN)
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_move_killed_at_any_step_resumes_to_the_same_end() {
    let steps = plan_steps(false);
    assert!(steps.len() >= 10, "{steps:?}");
    for step in steps {
        eprintln!("kill after {step}, then resume");
        scenario(Scenario {
            fault: Some(step),
            ..Scenario::plain(false)
        })
        .await;
    }
}

#[test]
fn plan_changes_nothing_and_lists_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "move",
            "--plan",
            "--source-data-dir",
            "/nowhere/a",
            "--target-data-dir",
            "/nowhere/b",
            "--storage",
        ])
        .arg(dir.path().join("arch"))
        .args(["--same-name"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for step in [
        "preflight",
        "backup",
        "restore",
        "overlay",
        "catch-up",
        "freeze",
        "verify",
        "take-name",
        "cutover",
        "drain",
        "cleanup",
    ] {
        assert!(text.contains(step), "{step} missing from:\n{text}");
    }
    assert!(
        !dir.path().join("arch/gatehouse-move.json").exists(),
        "--plan wrote a move file"
    );
    let _: PathBuf = dir.path().to_path_buf();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apims_order_deletes_first_and_reports_the_downtime() {
    scenario(Scenario {
        delete_first: true,
        traffic: false,
        ..Scenario::plain(true)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_verification_changes_no_dns_and_leaves_the_source_serving() {
    let env = Env::start(false).await;
    // A move from a continuous archive the source does not keep stops at its backup step and
    // says why; dropped, it leaves nothing behind.
    let key = gatehouse_testkit::process::cli(BIN, env.cwd(), &["backup", "new-key"]);
    std::fs::write(env.cwd().join("archive.key"), &key.stdout).unwrap();
    let mut args = env.move_args(false, &[]);
    let storage = args.iter().position(|a| a == "--storage").unwrap();
    args.splice(
        storage..storage + 2,
        [
            "--from-archive".to_string(),
            format!("file://{}/archives/continuous", env.cwd().display()),
            "--key-file".to_string(),
            env.cwd().join("archive.key").display().to_string(),
        ],
    );
    let out = tokio::task::spawn_blocking(move || run_move(&args, None))
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("keeps no continuous archive: start it with --archive"),
        "{err}"
    );
    let state = env.state().display().to_string();
    let abandon = ["move", "--abandon", "--state", &state].map(String::from);
    let out = tokio::task::spawn_blocking(move || run_move(&abandon, None))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The overlay points the target's API at a backend that does not answer: the smoke
    // requests through the target gateway fail.
    let overlay = env.cwd().join("broken.yaml");
    std::fs::write(
        &overlay,
        "apis:\n  echo:\n    serviceUrl: http://127.0.0.1:9\n",
    )
    .unwrap();
    let args = env.move_args(false, &["--overlay", &overlay.display().to_string()]);
    let out = tokio::task::spawn_blocking(move || run_move(&args, None))
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("{err}");
    assert!(err.contains("verification failed"), "{err}");
    assert!(err.contains("GET /echo/fixed"), "{err}");
    // DNS untouched, the source writable and serving.
    assert_eq!(
        env.knot
            .lookup(&format!("api.{ZONE}"), RecordType::CNAME)
            .await,
        Some(RecordValue::Cname(format!("gw-westeurope.{ZONE}")))
    );
    let (_, f) = env.source.call("GET", "/freeze", None).await;
    assert_eq!(f["frozen"], false, "{f}");
    env.source
        .ok(
            "PUT",
            "/products/after",
            json!({"properties": {"displayName": "after"}}),
        )
        .await;
    let r = reqwest::Client::builder()
        .dns_resolver(Arc::new(TtlResolver::new(env.knot.addr, ZONE)))
        .build()
        .unwrap()
        .get(format!("http://api.{ZONE}:{}/echo/fixed", env.port))
        .header("Ocp-Apim-Subscription-Key", &env.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The move file records the abort; it cannot be resumed into a cutover.
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(env.state()).unwrap()).unwrap();
    assert!(
        state["outcome"].as_str().unwrap().starts_with("aborted"),
        "{state}"
    );
}

/// The move's arguments with `--dns manual://` instead of the RFC 2136 update.
fn manual_dns_args(env: &Env) -> Vec<String> {
    env.move_args(false, &[])
        .into_iter()
        .map(|a| a.replace("rfc2136://", "manual://"))
        .collect()
}

/// What the operator does at their DNS provider in manual mode: points the custom domain at
/// eastus. Returns the record's value before.
async fn operator_switches_the_record(env: &Env) -> Option<RecordValue> {
    let authority = env.knot.authority();
    let name = format!("api.{ZONE}");
    let current = authority.query(&name, RecordType::CNAME).await.unwrap();
    authority
        .replace(
            &name,
            current.as_ref(),
            &RecordValue::Cname(format!("gw-eastus.{ZONE}")),
            1,
        )
        .await
        .unwrap();
    current.map(|a| a.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manual_dns_prints_the_change_and_waits_until_it_answers() {
    let env = Env::start(false).await;
    let args = manual_dns_args(&env);
    let mover = tokio::task::spawn_blocking(move || run_move(&args, None));
    // The operator changes the record at their provider a while later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        operator_switches_the_record(&env).await,
        Some(RecordValue::Cname(format!("gw-westeurope.{ZONE}"))),
        "the move did not touch the record itself"
    );
    let out = mover.await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "Change this record at your DNS provider now:  api.{ZONE}. 1 IN CNAME gw-eastus.{ZONE}."
        )),
        "{err}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "completed");
    assert!(
        report["steps"][7]["durationMs"].as_u64().unwrap() > 1000,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keep_source_leaves_a_read_only_standby() {
    let env = Env::start(false).await;
    let args = env.move_args(false, &["--keep-source"]);
    let out = tokio::task::spawn_blocking(move || run_move(&args, None))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The source still answers reads, refuses writes naming the target, and its data stays.
    let (s, v) = env.source.call("GET", "/apis/echo", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, e) = env
        .source
        .call(
            "PUT",
            "/tags/late",
            Some(json!({"properties": {"displayName": "late"}})),
        )
        .await;
    assert_eq!(s, 409);
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&env.target.url), "{msg}");
    assert!(env.cwd().join("westeurope/gatehouse.db").exists());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctrl_c_stops_the_move_resumably() {
    let env = Env::start(false).await;
    let args = manual_dns_args(&env);
    // The move waits at the cutover for the operator's DNS change; Ctrl-C it there.
    let child = std::process::Command::new(BIN)
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let state = env.state();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&state).unwrap_or_default();
        if text.contains("\"handedOver\": true") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the move never reached the cutover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("interrupted") && err.contains("--resume"),
        "{err}"
    );
    // The operator changes the record, then resumes: the move ends where it would have.
    operator_switches_the_record(&env).await;
    let resume = vec![
        "move".to_string(),
        "--json".into(),
        "--resume".into(),
        "--state".into(),
        state.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || run_move(&resume, None))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "completed");
    assert!(!env.cwd().join("westeurope").exists());
}
