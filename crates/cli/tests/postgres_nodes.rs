//! Several `gatehouse serve` nodes on one PostgreSQL (Debian's, a cluster of the test's own),
//! as real processes: a write on any node reaches every node's gateway, a node killed with
//! kill -9 leaves the others serving and writing, a node whose store key differs is refused,
//! and a node started while PostgreSQL is down waits for it and says so.

use gatehouse_testkit::EchoBackend;
use gatehouse_testkit::postgres::PostgresServer;
use gatehouse_testkit::process::{ServeProcess, free_port};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const TOKEN: &str = "shared-admin-token-0123456789abcdef";

struct Node {
    process: ServeProcess,
    management: String,
    gateway: String,
}

fn node(cwd: &Path, name: &str, store: &str) -> Node {
    let (m, g) = (free_port(), free_port());
    let args = [
        "--data-dir",
        name,
        "--store",
        store,
        "--management-listen",
        &format!("127.0.0.1:{m}"),
        "--gateway-listen",
        &format!("127.0.0.1:{g}"),
        "--no-portal",
    ];
    let process = ServeProcess::spawn(BIN, cwd, &args, &[("GATEHOUSE_ADMIN_TOKEN", TOKEN)]);
    Node {
        process,
        management: format!("http://127.0.0.1:{m}"),
        gateway: format!("http://127.0.0.1:{g}"),
    }
}

/// Nodes `a` and `b` of one instance on `store`: b seals with a's key, as the nodes of one
/// instance must.
fn two_nodes(cwd: &Path, store: &str) -> (Node, Node) {
    let a = node(cwd, "a", store);
    std::fs::create_dir_all(cwd.join("b")).unwrap();
    std::fs::copy(cwd.join("a/store.key"), cwd.join("b/store.key")).unwrap();
    (a, node(cwd, "b", store))
}

async fn call(node: &Node, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(
            method.parse().unwrap(),
            format!("{}{path}", node.management),
        )
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("the node answers");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

async fn put_api(node: &Node, id: &str, backend: &str) {
    for (path, body) in [
        (
            format!("/apis/{id}"),
            json!({"properties": {"displayName": id, "path": id, "serviceUrl": backend, "protocols": ["http"], "subscriptionRequired": false}}),
        ),
        (
            format!("/apis/{id}/operations/get"),
            json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/*"}}),
        ),
    ] {
        let (s, b) = call(node, "PUT", &path, Some(body)).await;
        assert!(s == 200 || s == 201, "PUT {path}: {s} {b}");
    }
}

/// How long until `node`'s gateway serves `/{id}/x` (at most 10 s).
async fn until_served(node: &Node, id: &str) -> Duration {
    let started = Instant::now();
    let http = reqwest::Client::new();
    loop {
        let ok = http
            .get(format!("{}/{id}/x", node.gateway))
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200);
        if ok {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{id} never served on {}",
            node.gateway
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_postgres_share_the_instance_and_survive_each_other() {
    let pg = PostgresServer::start().unwrap();
    let url = pg.create_database("instance").unwrap();
    let backend = EchoBackend::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(dir.path(), &url);

    put_api(&a, "one", &backend.url).await;
    let seen = until_served(&b, "one").await;
    println!("a write on node a served by node b's gateway after {seen:?}");
    put_api(&b, "two", &backend.url).await;
    until_served(&a, "two").await;
    let (s, on_a) = call(&a, "GET", "/apis/two", None).await;
    assert_eq!(s, 200);
    let (_, on_b) = call(&b, "GET", "/apis/two", None).await;
    assert_eq!(on_a, on_b, "one instance, whichever node answers");

    // Node b dies mid-flight; a goes on writing and serving.
    let mut b = b;
    b.process.child.kill().unwrap();
    b.process.child.wait().unwrap();
    put_api(&a, "three", &backend.url).await;
    until_served(&a, "three").await;
    let b = node(dir.path(), "b", &url);
    until_served(&b, "three").await;

    // A node whose key is not the instance's is refused, in one line.
    let out = std::process::Command::new(BIN)
        .current_dir(dir.path())
        .args(["serve", "--data-dir", "c", "--store", &url, "--no-portal"])
        .args([
            "--management-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ])
        .env("GATEHOUSE_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("store key") && err.contains("copy store.key"),
        "{err}"
    );
    drop((a, b));
}

#[test]
fn a_node_started_while_postgres_is_down_waits_and_says_so() {
    let pg = PostgresServer::start().unwrap();
    pg.create_database("later").unwrap();
    pg.stop().unwrap();
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{}/later", pg.port);
    let dir = tempfile::tempdir().unwrap();
    let n = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_secs(2));
            pg.start_again().unwrap();
        });
        node(dir.path(), "n", &url)
    });
    let log = std::fs::read_to_string(&n.process.log).unwrap();
    assert!(
        log.contains("is not reachable") && log.contains("trying again"),
        "{log}"
    );
    assert!(log.contains("postgres:***@127.0.0.1"), "{log}");
    assert!(
        !log.contains("hunter2"),
        "the password is never written: {log}"
    );
    // And a URL that is no PostgreSQL one is refused at once.
    let out = gatehouse_testkit::process::cli(
        BIN,
        dir.path(),
        &["serve", "--data-dir", "m", "--store", "mysql://u:pw@h/db"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--store must be a PostgreSQL URL") && !err.contains(":pw@"),
        "{err}"
    );
}

/// PostgreSQL restarted under write load: writes in flight fail with 503 and succeed when
/// tried again, nothing acknowledged is lost, and the gateways serve throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_nothing_acknowledged_and_fails_no_gateway_request() {
    let pg = PostgresServer::start().unwrap();
    let url = pg.create_database("restart").unwrap();
    let backend = EchoBackend::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_nodes(dir.path(), &url);
    put_api(&a, "live", &backend.url).await;
    until_served(&b, "live").await;
    until_served(&a, "live").await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Gateway traffic on both nodes, counting failures.
    let mut readers = Vec::new();
    for gw in [a.gateway.clone(), b.gateway.clone()] {
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let (mut ok, mut failed) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http.get(format!("{gw}/live/x")).send().await {
                    Ok(r) if r.status().as_u16() == 200 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    // Writes on both nodes, each tried again on 503 until acknowledged.
    let writers: Vec<_> = [(&a, "wa"), (&b, "wb")]
        .into_iter()
        .map(|(n, prefix)| {
            let (management, stop) = (n.management.clone(), stop.clone());
            let prefix = prefix.to_string();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let (mut acknowledged, mut refused) = (Vec::new(), 0u64);
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("{prefix}{i}");
                    let body = json!({"properties": {"displayName": id, "value": "v"}});
                    let r = http
                        .put(format!("{management}/namedValues/{id}"))
                        .bearer_auth(TOKEN)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    match r.status().as_u16() {
                        200 | 201 => {
                            acknowledged.push(id);
                            i += 1;
                        }
                        503 => {
                            assert!(r.headers().contains_key("retry-after"));
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => panic!("PUT {id}: {other} {}", r.text().await.unwrap_or_default()),
                    }
                }
                (acknowledged, refused)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Kept until the end: dropping the server stops it.
    let _pg = tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        pg.start_again().unwrap();
        pg
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    let mut refused = 0;
    for w in writers {
        let (acknowledged, r) = w.await.unwrap();
        all.extend(acknowledged);
        refused += r;
    }
    let (mut served, mut failed) = (0, 0);
    for r in readers {
        let (ok, f) = r.await.unwrap();
        served += ok;
        failed += f;
    }
    println!(
        "restart under load: {} writes acknowledged, {refused} refused with 503 while PostgreSQL was down; gateways {served} requests, {failed} failed",
        all.len()
    );
    assert!(refused > 0, "some writes met the restart");
    assert_eq!(failed, 0, "the gateways served throughout");
    for id in &all {
        let (s, _) = call(&b, "GET", &format!("/namedValues/{id}"), None).await;
        assert_eq!(s, 200, "acknowledged {id} is kept");
    }
}

/// Starts a backup or restore on `node`; the operation's result path (from `Location`).
async fn start_operation(node: &Node, action: &str, body: Value) -> Result<String, (u16, Value)> {
    let resp = reqwest::Client::new()
        .post(format!("{}/{action}", node.management))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("the node answers");
    if resp.status().as_u16() != 202 {
        let status = resp.status().as_u16();
        return Err((status, resp.json().await.unwrap_or(Value::Null)));
    }
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let path = location
        .split_once("/operationresults/")
        .map(|(_, id)| format!("/operationresults/{id}"))
        .unwrap();
    Ok(path)
}

/// Polls `path` on `node` until it stops answering 202; the final status and body.
async fn until_finished(node: &Node, path: &str, within: Duration) -> (u16, Value) {
    let started = Instant::now();
    loop {
        let (s, b) = call(node, "GET", path, None).await;
        if s != 202 {
            return (s, b);
        }
        assert!(started.elapsed() < within, "{path} still running: {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A storage server that accepts connections and never answers: an upload to it hangs.
fn silent_storage() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("s3+http://{}", listener.local_addr().unwrap());
    (listener, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_one_per_instance_answered_by_any_node_and_failed_cleanly_when_its_node_dies() {
    let pg = PostgresServer::start().unwrap();
    let url = pg.create_database("instance").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut a, b) = two_nodes(dir.path(), &url);
    let backend = EchoBackend::start().await.unwrap();
    put_api(&a, "one", &backend.url).await;
    let (_held, storage) = silent_storage();
    let hanging = json!({"storageAccount": storage, "accessKey": "id:secret",
        "containerName": "c", "backupName": "b", "encryptionKey": "correct horse battery staple"});
    let path = start_operation(&a, "backup", hanging).await.unwrap();

    // Node b answers for the backup node a runs, and refuses a second one.
    let (s, running) = call(&b, "GET", &path, None).await;
    assert_eq!(s, 202, "{running}");
    assert_eq!(running["status"], "InProgress");
    let folder = format!("file://{}", dir.path().join("archives").display());
    let to_files = json!({"storageAccount": folder, "containerName": "c", "backupName": "b",
        "encryptionKey": "correct horse battery staple"});
    let (s, refused) = start_operation(&b, "backup", to_files.clone())
        .await
        .unwrap_err();
    assert_eq!(s, 409, "{refused}");
    let id = path.rsplit('/').next().unwrap().split('?').next().unwrap();
    assert!(
        refused["error"]["message"].as_str().unwrap().contains(id),
        "{refused}"
    );

    // Node a dies: within the lease's life node b reports the backup failed, and takes the next.
    a.process.child.kill().unwrap();
    let (s, failed) = until_finished(&b, &path, Duration::from_secs(20)).await;
    assert_eq!(s, 500, "{failed}");
    assert_eq!(failed["error"]["code"], "BackupFailed");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains("stopped before it finished"), "{message}");
    let next = start_operation(&b, "backup", to_files).await.unwrap();
    let (s, done) = until_finished(&b, &next, Duration::from_secs(30)).await;
    assert_eq!(s, 200, "{done}");
    assert!(done["outcome"]["entities"].as_u64().unwrap() > 0, "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_on_one_node_holds_on_every_node_and_a_deleted_service_stops_them_all() {
    let pg = PostgresServer::start().unwrap();
    let url = pg.create_database("instance").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, mut b) = two_nodes(dir.path(), &url);
    let tag = |n: &str| json!({"properties": {"displayName": n}});
    let (s, f) = call(
        &a,
        "POST",
        "/freeze",
        Some(json!({"seconds": 60, "reason": "moving to eastus"})),
    )
    .await;
    assert_eq!(s, 200, "{f}");
    let (s, refused) = call(&b, "PUT", "/tags/t", Some(tag("T"))).await;
    assert_eq!(s, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "ServiceIsBeingMoved");
    assert_eq!(call(&b, "GET", "/freeze", None).await.1["frozen"], true);
    assert_eq!(call(&b, "DELETE", "/freeze", None).await.0, 200);
    let (s, put) = call(&a, "PUT", "/tags/t", Some(tag("T"))).await;
    assert!(s == 200 || s == 201, "{s} {put}");

    let name = call(&a, "GET", "/", None).await.1["name"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, deleted) = call(&a, "DELETE", &format!("/?confirm={name}"), None).await;
    assert_eq!(s, 202, "{deleted}");
    let started = Instant::now();
    while b.process.exited().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "node b still runs after the service was deleted through node a"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
