//! What hostile and newcomer testing found, through the built binary: each test failed on the
//! release that shipped the defect and guards against its return.

use gatehouse_testkit::EchoBackend;
use gatehouse_testkit::process::ServeProcess;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

const PORT_ZERO: &[&str] = &[
    "--management-listen",
    "127.0.0.1:0",
    "--portal-listen",
    "127.0.0.1:0",
    "--gateway-listen",
    "127.0.0.1:0",
];

/// A `gatehouse serve` process and a client of its management API and gateway.
struct Served {
    process: ServeProcess,
    management: String,
    gateway: String,
    token: String,
    http: reqwest::Client,
}

impl Served {
    fn start(cwd: &Path, extra: &[&str]) -> Served {
        let mut args = PORT_ZERO.to_vec();
        args.extend_from_slice(extra);
        let process = ServeProcess::spawn(BIN, cwd, &args, &[]);
        let ep = process.endpoints();
        Served {
            management: ep["management"].as_str().unwrap().to_string(),
            gateway: ep["gateway"].as_str().unwrap().to_string(),
            token: process.token(),
            process,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.management),
            )
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("the management API answers");
        let s = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (
            s,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn put_ok(&self, path: &str, body: Value) {
        let (s, b) = self.call("PUT", path, Some(body)).await;
        assert!(s == 200 || s == 201, "PUT {path}: {s} {b}");
    }

    async fn policy(&self, path: &str, xml: &str) -> (u16, Value) {
        self.call(
            "PUT",
            path,
            Some(json!({"properties": {"format": "rawxml", "value": xml}})),
        )
        .await
    }

    async fn gateway_get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.gateway))
            .send()
            .await
            .expect("the gateway answers");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }

    /// Waits until a gateway GET answers `status` (configuration changes apply asynchronously).
    async fn gateway_until(&self, path: &str, status: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (s, body) = self.gateway_get(path).await;
            if s == status {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "GET {path} answered {s} (not {status}): {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn alive(&mut self) {
        assert!(
            self.process.exited().is_none(),
            "the server died: {}",
            std::fs::read_to_string(&self.process.log).unwrap_or_default()
        );
    }

    async fn echo_api(&self, id: &str, backend: &EchoBackend) {
        self.put_ok(
            &format!("/apis/{id}"),
            json!({"properties": {"displayName": id, "path": id, "serviceUrl": backend.url,
                   "protocols": ["http"], "subscriptionRequired": false}}),
        )
        .await;
        self.put_ok(
            &format!("/apis/{id}/operations/get"),
            json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/x"}}),
        )
        .await;
    }
}

fn policy_with(inbound: &str) -> String {
    format!(
        "<policies><inbound><base />{inbound}</inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"
    )
}

fn header_policy(name: &str, expression: &str) -> String {
    policy_with(&format!(
        "<set-header name=\"{name}\" exists-action=\"override\"><value>{expression}</value></set-header>"
    ))
}

fn chain(term: impl Fn(usize) -> String, op: &str, n: usize) -> String {
    (0..n).map(term).collect::<Vec<_>>().join(op)
}

fn nested_choose(levels: usize) -> String {
    format!(
        "{}<set-header name=\"x\"><value>1</value></set-header>{}",
        "<choose><when condition=\"@(true)\">".repeat(levels),
        "</when></choose>".repeat(levels)
    )
}

/// A long text cut for an assertion message.
fn short(text: &str) -> String {
    text.chars().take(300).collect()
}

fn echoed_header(body: &str, name: &str) -> Value {
    let v: Value = serde_json::from_str(body).expect("the echo backend's JSON");
    v["headers"][name].clone()
}

/// Issue 17, item 1: long expressions run, deep ones are refused at write time with their
/// position, and a stored policy that no longer compiles fails only its own API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_cannot_overflow_a_stack() {
    let dir = tempfile::tempdir().unwrap();
    let backend = EchoBackend::start().await.unwrap();
    let mut s = Served::start(dir.path(), &[]);
    s.echo_api("calc", &backend).await;
    s.echo_api("other", &backend).await;
    let api_policy = "/apis/calc/policies/policy";

    // Long chains of one operator: accepted, and the gateway runs them.
    let long = [
        (
            "x-sum",
            format!("@(({}).ToString())", chain(|_| "1".into(), "+", 5_000)),
        ),
        (
            "x-allowed",
            format!(
                "@(({}).ToString())",
                chain(
                    |i| format!(
                        "context.Request.IpAddress == \"10.9.{}.{}\"",
                        i / 250,
                        i % 250
                    ),
                    " || ",
                    4_999
                ) + " || context.Request.IpAddress == \"127.0.0.1\""
            ),
        ),
        (
            "x-all",
            format!(
                "@(({}).ToString())",
                chain(|_| "true".into(), " && ", 5_000)
            ),
        ),
        (
            "x-concat",
            format!("@({})", chain(|_| "\"a\"".into(), " + ", 5_000)),
        ),
    ];
    for (name, expression) in &long {
        let (status, body) = s.policy(api_policy, &header_policy(name, expression)).await;
        assert!(status == 200 || status == 201, "{name}: {}", body["error"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let echoed = loop {
            let body = s.gateway_until("/calc/x", 200).await;
            let echoed = echoed_header(&body, name);
            if !echoed.is_null() || Instant::now() > deadline {
                break echoed;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let expected = match *name {
            "x-sum" => "5000".to_string(),
            "x-concat" => "a".repeat(5_000),
            _ => "True".to_string(),
        };
        assert!(
            echoed == json!(expected),
            "{name}: {}",
            short(&echoed.to_string())
        );
        s.alive();
    }

    // Deep nesting: refused with the limit and a position, and nothing is stored.
    let deep = [
        ("nested choose", policy_with(&nested_choose(1_000))),
        (
            "nested parentheses",
            header_policy(
                "x",
                &format!("@({}1{})", "(".repeat(10_000), ")".repeat(10_000)),
            ),
        ),
        (
            "nested ternaries",
            header_policy(
                "x",
                &format!("@({}1{})", "true ? ".repeat(10_000), " : 0".repeat(10_000)),
            ),
        ),
        (
            "nested if blocks",
            header_policy(
                "x",
                &format!(
                    "@{{{}return \"1\";{} return \"0\";}}",
                    "if (true) {".repeat(10_000),
                    "}".repeat(10_000)
                ),
            ),
        ),
    ];
    for (what, xml) in &deep {
        let (status, body) = s.policy(api_policy, xml).await;
        assert_eq!(status, 400, "{what}: {}", short(&body.to_string()));
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("levels deep"), "{what}: {message}");
        assert!(message.contains("line 1, column"), "{what}: {message}");
        s.alive();
    }
    let fragment = format!("<fragment>{}</fragment>", nested_choose(10_000));
    let (status, body) = s
        .call(
            "PUT",
            "/policyFragments/deep",
            Some(json!({"properties": {"format": "rawxml", "value": fragment}})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 32 levels deep")
    );
    s.alive();
    // The last accepted policy is still the one in force.
    let (_, stored) = s.call("GET", api_policy, None).await;
    assert!(
        stored["properties"]["value"]
            .as_str()
            .unwrap()
            .contains("x-concat")
    );

    // A policy stored by an older release that this one cannot compile (written into the
    // database while the server is stopped): the server starts, serves the other APIs, and
    // answers this API with 500 and a log line that says why.
    let data_dir = s.process.data_dir.clone();
    let log = s.process.log.clone();
    let status = s.process.terminate();
    assert!(status.success());
    let db = rusqlite::Connection::open(data_dir.join("gatehouse.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE resources SET properties = json_set(properties, '$.value', ?1) WHERE path = ?2",
            rusqlite::params![policy_with(&nested_choose(1_000)), api_policy],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let mut s = Served::start(dir.path(), &[]);
    s.gateway_until("/other/x", 200).await;
    let body = s.gateway_until("/calc/x", 500).await;
    assert!(body.contains("Internal server error"), "{body}");
    s.alive();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("does not compile") && log.contains(api_policy),
        "the log says which policy and why: {log}"
    );
}

/// Sends one raw HTTP/1.1 request (so that nothing normalises its path) and returns the status
/// and the body.
async fn raw_request(base: &str, method: &str, target: &str, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = if method == "PUT" {
        r#"{"properties": {"displayName": "dots"}}"#
    } else {
        ""
    };
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

fn cli(cwd: &Path, args: &[&str]) -> std::process::Output {
    gatehouse_testkit::process::cli(BIN, cwd, args)
}

/// Issue 17, item 2: `.` and `..` are never ids, no path resolves dot segments, the CLI encodes
/// ids, and deleting the service takes its name as confirmation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_never_address_another_resource() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Served::start(dir.path(), &[]);
    let backend = EchoBackend::start().await.unwrap();
    s.echo_api("victim", &backend).await;
    s.put_ok(
        "/products/p1",
        json!({"properties": {"displayName": "P1", "state": "published"}}),
    )
    .await;

    for (method, target) in [
        ("PUT", "/products/.."),
        ("PUT", "/products/."),
        ("PUT", "/products/%2e%2e"),
        ("PUT", "/products/%2E"),
        ("DELETE", "/products/.."),
        ("DELETE", "/products/%2e%2e"),
        ("DELETE", "/products/p1/.."),
        ("DELETE", "/subscriptions/../apis/victim"),
        ("DELETE", "/products/x/../../apis/victim"),
        ("GET", "/apis/victim/operations/.."),
    ] {
        let (status, body) = raw_request(&s.management, method, target, &s.token).await;
        assert_eq!(status, 400, "{method} {target}: {body}");
        assert!(body.contains("'.' or '..'"), "{method} {target}: {body}");
        s.alive();
    }
    // An encoded slash stays inside its segment: here, an action that does not exist.
    for target in [
        "/subscriptions/x/..%2F..%2Fapis%2Fvictim",
        "/products/p1%2F..%2F..%2Fapis%2Fvictim",
    ] {
        let (status, body) = raw_request(&s.management, "DELETE", target, &s.token).await;
        assert!(status == 400 || status == 404, "DELETE {target}: {body}");
        s.alive();
    }
    // DELETE / without the service's name as confirmation changes nothing.
    for target in ["/", "/?confirm=true", "/?confirm=someone-else"] {
        let (status, body) = raw_request(&s.management, "DELETE", target, &s.token).await;
        assert_eq!(status, 400, "DELETE {target}: {body}");
        assert!(body.contains("confirm=gatehouse"), "{body}");
    }
    let (status, _) = s.call("GET", "/apis/victim", None).await;
    assert_eq!(status, 200, "the API is still there");
    let (status, _) = s.call("GET", "/products/p1", None).await;
    assert_eq!(status, 200);

    // The CLI: ids are one path segment each, and '.' and '..' are refused before sending.
    let d = s.process.data_dir.to_str().unwrap().to_string();
    for args in [
        vec!["subscription", "delete", "../apis/victim"],
        vec!["product", "delete", ".."],
        vec!["product", "delete", "."],
        vec!["product", "create", "..", "--display-name", "x"],
        vec!["api", "delete", "victim/.."],
        vec!["delete", "/products/.."],
        vec!["delete", "/products/x/../../apis/victim"],
        vec!["service", "delete"],
    ] {
        let mut all = vec!["--data-dir", d.as_str()];
        all.extend(args.iter().copied());
        let out = cli(dir.path(), &all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: one line: {stderr}"
        );
        s.alive();
    }
    // An id with a slash is one segment: it names a subscription that does not exist.
    let out = cli(
        dir.path(),
        &[
            "--data-dir",
            &d,
            "subscription",
            "delete",
            "a/../../apis/victim",
        ],
    );
    assert!(!out.status.success());
    let (status, _) = s.call("GET", "/apis/victim", None).await;
    assert_eq!(status, 200, "the API is still there");
    let (status, _) = s.call("GET", "/", None).await;
    assert_eq!(status, 200, "the service is still there");

    // The deliberate deletion works.
    let out = cli(
        dir.path(),
        &["--data-dir", &d, "service", "delete", "--yes"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.process.exited().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.process.exited().is_some(), "the deleted service stopped");
}

/// Writes raw bytes to `base` (a gateway URL), half-closes when asked, and reads until the
/// server closes the connection (at most 10 s: a connection left open fails the test).
async fn raw_exchange(base: &str, bytes: &[u8], half_close: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    if half_close {
        stream.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    String::from_utf8_lossy(&answer).to_string()
}

/// Issue 17, item 4: an invalid chunked request body is the client's error — 400, the
/// connection closed, a 4xx in the metrics — whether the body streams to the backend or a
/// policy reads it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunked_bodies_are_client_errors() {
    let dir = tempfile::tempdir().unwrap();
    let backend = EchoBackend::start().await.unwrap();
    let s = Served::start(dir.path(), &[]);
    for api in ["streamed", "buffered"] {
        s.echo_api(api, &backend).await;
        s.put_ok(
            &format!("/apis/{api}/operations/post"),
            json!({"properties": {"displayName": "post", "method": "POST", "urlTemplate": "/x"}}),
        )
        .await;
    }
    let (status, body) = s
        .policy(
            "/apis/buffered/policies/policy",
            &header_policy(
                "x-length",
                "@(context.Request.Body.As<string>().Length.ToString())",
            ),
        )
        .await;
    assert!(status == 200 || status == 201, "{body}");
    s.gateway_until("/buffered/x", 200).await;
    let head = |api: &str| {
        format!("POST /{api}/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n")
    };
    for api in ["streamed", "buffered"] {
        for (what, chunks, half_close) in [
            ("a size that is not hex", "ZZZ\r\nabc\r\n0\r\n\r\n", false),
            (
                "a size that overflows",
                "FFFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
                false,
            ),
            ("a chunk without its CRLF", "3\r\nabcXY0\r\n\r\n", false),
            ("a chunk cut short", "a\r\nabc", true),
        ] {
            let answer = raw_exchange(
                &s.gateway,
                format!("{}{chunks}", head(api)).as_bytes(),
                half_close,
            )
            .await;
            assert!(
                answer.starts_with("HTTP/1.1 400 "),
                "{api}, {what}: {}",
                short(&answer)
            );
            assert!(
                !answer.contains("BackendConnectionFailure")
                    && !answer.contains("could not be reached"),
                "{api}, {what}: {answer}"
            );
        }
    }
    // A valid chunked body still goes through, on a connection that stays usable.
    let valid = format!("{}3\r\nabc\r\n0\r\n\r\n", head("streamed"));
    let answer = raw_exchange(
        &s.gateway,
        format!(
            "{valid}{}",
            valid.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n")
        )
        .as_bytes(),
        false,
    )
    .await;
    assert_eq!(
        answer.matches("HTTP/1.1 200 ").count(),
        2,
        "{}",
        short(&answer)
    );

    let (_, metrics) = s.call("GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    for api in ["streamed", "buffered"] {
        let line = |class: &str| {
            metrics
                .lines()
                .find(|l| {
                    l.starts_with("gatehouse_gateway_requests_total{")
                        && l.contains(&format!("api=\"{api}\""))
                        && l.contains("operation=\"post\"")
                        && l.contains(&format!("status_class=\"{class}\""))
                })
                .map(str::to_string)
        };
        assert!(
            line("4xx").is_some_and(|l| l.ends_with(" 4")),
            "{api}: {metrics}"
        );
        assert!(line("5xx").is_none(), "{api}: {metrics}");
    }
}

/// Opens `n` connections that send a request head one byte every 200 ms; returns, for each,
/// after how long the server closed it (None: still open after `patience`).
async fn slow_clients(base: &str, n: usize, patience: Duration) -> Vec<Option<Duration>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_string();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
                return Some(Duration::ZERO);
            };
            let head = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let mut buf = [0u8; 1024];
            for byte in head.iter().cycle() {
                if started.elapsed() > patience {
                    return None;
                }
                if stream.write_all(&[*byte]).await.is_err() {
                    return Some(started.elapsed());
                }
                // Closed by the server: a read answers at once with 0 bytes (or a reset).
                match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                    Ok(Ok(_)) => {} // an error answer (408) before the close
                    Err(_) => {}
                }
            }
            None
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Issue 17, item 5 (and the gateway's missing connection limit): both listeners cut a client
/// that trickles its head, refuse heads over the limit, and serve at most so many connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_listeners_have_limits() {
    let dir = tempfile::tempdir().unwrap();
    let backend = EchoBackend::start().await.unwrap();
    let mut s = Served::start(
        dir.path(),
        &[
            "--header-read-timeout",
            "2",
            "--max-header-bytes",
            "16384",
            "--management-max-connections",
            "8",
            "--gateway-max-connections",
            "8",
        ],
    );
    s.echo_api("a", &backend).await;
    for base in [s.management.clone(), s.gateway.clone()] {
        // 20 slow clients: 8 are served until the 2 s head timeout, 12 refused at once.
        let closed = slow_clients(&base, 20, Duration::from_secs(8)).await;
        assert!(
            closed.iter().all(Option::is_some),
            "{base}: all closed: {closed:?}"
        );
        let late = closed
            .iter()
            .flatten()
            .filter(|d| **d >= Duration::from_millis(1_500))
            .count();
        assert!(late <= 8, "{base}: at most 8 served: {closed:?}");
        assert!(
            closed.iter().flatten().all(|d| *d < Duration::from_secs(5)),
            "{base}: {closed:?}"
        );
        s.alive();
    }
    let (status, _) = s.call("GET", "/", None).await;
    assert_eq!(status, 200, "the management API serves again");
    s.gateway_until("/a/x", 200).await;

    // A head over 16 KiB: 431 from both.
    let big = "x".repeat(20_000);
    let r = s
        .http
        .get(format!("{}/", s.management))
        .bearer_auth(&s.token)
        .header("x-big", &big)
        .send()
        .await;
    assert!(
        r.as_ref().map_or(true, |r| r.status().as_u16() == 431),
        "management: {:?}",
        r.map(|r| r.status())
    );
    let r = s
        .http
        .get(format!("{}/a/x", s.gateway))
        .header("x-big", &big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 431);
    s.alive();
}

fn write_pair(dir: &Path, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let (c, k) = (dir.join("mgmt-cert.pem"), dir.join("mgmt-key.pem"));
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k)
}

/// Issue 17, item 10 (transport): the management API over HTTPS with a certificate reloaded
/// when it changes, a refusal to serve it in plain HTTP beyond loopback, and a CLI that trusts
/// the CA it is given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_api_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    // Plain HTTP on every interface: refused with one line, unless asked for.
    let out = std::process::Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "serve",
            "--data-dir",
            "open",
            "--management-listen",
            "0.0.0.0:0",
            "--portal-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without TLS") && stderr.contains("--insecure-management"),
        "{stderr}"
    );
    let insecure = ServeProcess::spawn(
        BIN,
        dir.path(),
        &[
            "--data-dir",
            "insecure",
            "--management-listen",
            "0.0.0.0:0",
            "--portal-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--insecure-management",
        ],
        &[],
    );
    drop(insecure);

    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (cert, key) = write_pair(&certs, &["127.0.0.1", "localhost"]);
    let s = Served::start(
        dir.path(),
        &[
            "--management-tls-cert",
            cert.to_str().unwrap(),
            "--management-tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        s.management.starts_with("https://127.0.0.1:"),
        "{}",
        s.management
    );
    let d = s.process.data_dir.to_str().unwrap().to_string();
    // Through the data directory, the CLI trusts the certificate endpoints.json names.
    let out = cli(dir.path(), &["--data-dir", &d, "api", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // By URL, only with the CA given.
    let by_url = |ca: Option<&Path>| {
        let mut args = vec![
            "--url".to_string(),
            s.management.clone(),
            "--token".into(),
            s.token.clone(),
        ];
        if let Some(ca) = ca {
            args.extend(["--ca-file".into(), ca.to_str().unwrap().to_string()]);
        }
        args.extend(["api".into(), "list".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(dir.path(), &args)
    };
    let out = by_url(None);
    assert!(
        !out.status.success(),
        "an unknown certificate is not trusted"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
    let first_ca = dir.path().join("first-ca.pem");
    std::fs::copy(&cert, &first_ca).unwrap();
    let out = by_url(Some(&first_ca));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP on the TLS port gets nothing useful.
    let plain = reqwest::Client::new()
        .get(s.management.replace("https://", "http://"))
        .bearer_auth(&s.token)
        .send()
        .await;
    assert!(plain.map_or(true, |r| !r.status().is_success()));

    // A renewed certificate is served without a restart; the old CA no longer verifies it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (cert, _) = write_pair(&certs, &["127.0.0.1", "renewed.example"]);
    let second_ca = dir.path().join("second-ca.pem");
    std::fs::copy(&cert, &second_ca).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if by_url(Some(&second_ca)).status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is served within seconds"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!by_url(Some(&first_ca)).status.success());
}

/// Issue 17, item 6: one process per data directory — a second `serve` fails naming the first
/// one's PID, and the first keeps its endpoints.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_has_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Served::start(dir.path(), &[]);
    let endpoints = std::fs::read_to_string(first.process.data_dir.join("endpoints.json")).unwrap();
    let pid = first.process.child.id().to_string();
    let out = std::process::Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "serve",
            "--management-listen",
            "127.0.0.1:0",
            "--portal-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&pid) && stderr.contains("in use"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(first.process.data_dir.join("endpoints.json")).unwrap(),
        endpoints,
        "the first instance's endpoints.json is untouched"
    );
    first.alive();
    let (status, _) = first.call("GET", "/", None).await;
    assert_eq!(status, 200);
    // Once the first has stopped, the directory is free again.
    assert!(first.process.terminate().success());
    let second = Served::start(dir.path(), &[]);
    let (status, _) = second.call("GET", "/", None).await;
    assert_eq!(status, 200);
}

/// Issue 17, item 7: a move keeps its generated key with its move file, never beside the
/// archive; a key file or a move file inside the storage folder is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moves_key_never_sits_beside_its_archive() {
    let dir = tempfile::tempdir().unwrap();
    let source = ServeProcess::spawn(
        BIN,
        dir.path(),
        &[
            "--data-dir",
            "src",
            "--management-listen",
            "127.0.0.1:0",
            "--portal-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let target = ServeProcess::spawn(
        BIN,
        dir.path(),
        &[
            "--data-dir",
            "dst",
            "--management-listen",
            "127.0.0.1:0",
            "--portal-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let archives = dir.path().join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    let key_in_storage = archives.join("mine.key");
    std::fs::write(&key_in_storage, "a long passphrase for this archive").unwrap();
    let base = |extra: &[&str]| {
        let mut args = vec![
            "move",
            "--source-data-dir",
            "src",
            "--target-data-dir",
            "dst",
            "--storage",
            "archives",
            "--quiet-seconds",
            "0.5",
            "--max-drain-seconds",
            "5",
        ];
        args.extend_from_slice(extra);
        cli(dir.path(), &args)
    };
    for (extra, says) in [
        (
            vec!["--key-file", key_in_storage.to_str().unwrap()],
            "key file",
        ),
        (vec!["--state", "archives/m.json"], "move file"),
    ] {
        let out = base(&extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?}");
        assert!(
            stderr.contains(says) && stderr.contains("inside the storage folder"),
            "{stderr}"
        );
        let listed: Vec<String> = std::fs::read_dir(&archives)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            listed,
            vec!["mine.key".to_string()],
            "nothing was written: {listed:?}"
        );
    }
    let out = base(&["--keep-source"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    let key = dir.path().join("gatehouse-move.key");
    assert!(key.exists(), "the key is kept beside the move file");
    assert!(
        report.contains(&key.display().to_string()),
        "the report says where: {report}"
    );
    for entry in std::fs::read_dir(&archives).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            name == "mine.key" || name.ends_with(".ghbak"),
            "only archives in storage: {name}"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    drop((source, target));
}

/// Whether any file under `dir` contains `needle`.
fn found_in_files(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            hits.extend(found_in_files(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            hits.push(path.display().to_string());
        }
    }
    hits
}

/// Issue 17, item 8: a named value that becomes secret leaves no plaintext behind — not in
/// the journal the API shows, not in the database or its write log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_made_secret_leaves_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::start(dir.path(), &[]);
    let old = "plain-old-value-4f1c9a";
    s.put_ok(
        "/namedValues/token",
        json!({"properties": {"displayName": "token", "value": old, "secret": false}}),
    )
    .await;
    // Other writes between, so the old value is in several pages and journal entries.
    for i in 0..20 {
        s.put_ok(
            &format!("/namedValues/other{i}"),
            json!({"properties": {"displayName": format!("other{i}"), "value": "x", "secret": false}}),
        )
        .await;
    }
    s.put_ok(
        "/namedValues/token",
        json!({"properties": {"displayName": "token", "value": old, "tags": ["changed"], "secret": false}}),
    )
    .await;
    let data_dir = s.process.data_dir.clone();
    assert!(
        !found_in_files(&data_dir, old.as_bytes()).is_empty(),
        "the test sees plaintext before"
    );

    s.put_ok(
        "/namedValues/token",
        json!({"properties": {"displayName": "token", "value": old, "secret": true}}),
    )
    .await;
    let (_, journal) = s.call("GET", "/journal?since=0", None).await;
    assert!(
        !journal.to_string().contains(old),
        "GET /journal shows no plaintext"
    );
    let (_, with_secrets) = s.call("POST", "/journal/listSecrets?since=0", None).await;
    assert!(
        with_secrets.to_string().contains(old),
        "listSecrets still opens it"
    );
    let (_, value) = s.call("POST", "/namedValues/token/listValue", None).await;
    assert_eq!(value["value"], old);
    let hits = found_in_files(&data_dir, old.as_bytes());
    assert!(hits.is_empty(), "plaintext left in {hits:?}");
}

/// Issue 17, item 9: `backup new-key --out` makes a key file only its owner can read, and never
/// overwrites one.
#[test]
fn new_backup_keys_are_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(dir.path(), &["backup", "new-key", "--out", "backup.key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.path().join("backup.key");
    let key = std::fs::read_to_string(&path).unwrap();
    assert!(key.starts_with("AGE-SECRET-KEY-"), "{key}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let again = cli(dir.path(), &["backup", "new-key", "--out", "backup.key"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("never overwritten") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        key,
        "the first key stays"
    );
    // The key works for a backup of a stopped instance.
    drop(ServeProcess::spawn(BIN, dir.path(), PORT_ZERO, &[]));
    let out = cli(
        dir.path(),
        &["backup", "--to", "archive.ghbk", "--key-file", "backup.key"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 17, item 10 (scoped tokens): reader, contributor and operator tokens, created, listed
/// and revoked by the admin through the CLI, stored hashed; each change journaled with the id
/// of the token that made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_can_only_do_their_part() {
    let dir = tempfile::tempdir().unwrap();
    let s = Served::start(dir.path(), &[]);
    let d = s.process.data_dir.to_str().unwrap().to_string();
    let create = |role: &str, extra: &[&str]| -> (String, String) {
        let mut args = vec![
            "--data-dir",
            d.as_str(),
            "--json",
            "token",
            "create",
            "--role",
            role,
        ];
        args.extend_from_slice(extra);
        let out = cli(dir.path(), &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            v["id"].as_str().unwrap().into(),
            v["value"].as_str().unwrap().into(),
        )
    };
    let (reader_id, reader) = create("reader", &["--description", "dashboards"]);
    let (contributor_id, contributor) = create("contributor", &[]);
    let (operator_id, operator) = create("operator", &["--expires", "30d"]);
    let (_, short_lived) = create("reader", &["--expires", "2s"]);
    let as_token = |token: &str, method: &str, path: &str, body: Option<Value>| {
        let mut req = s
            .http
            .request(method.parse().unwrap(), format!("{}{path}", s.management))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let api = json!({"properties": {"displayName": "A", "path": "a"}});
    // What each role may do: (token, method, path, body, status).
    let cases = [
        (&reader, "GET", "/apis", None, 200),
        (&reader, "PUT", "/apis/a", Some(api.clone()), 403),
        (
            &reader,
            "POST",
            "/subscriptions/master/listSecrets",
            None,
            403,
        ),
        (&reader, "POST", "/journal/listSecrets?since=0", None, 403),
        (&reader, "GET", "/tokens", None, 403),
        (&contributor, "PUT", "/apis/a", Some(api.clone()), 201),
        (
            &contributor,
            "POST",
            "/subscriptions/master/listSecrets",
            None,
            200,
        ),
        (
            &contributor,
            "POST",
            "/freeze",
            Some(json!({"seconds": 5})),
            403,
        ),
        (
            &contributor,
            "POST",
            "/tokens",
            Some(json!({"role": "reader"})),
            403,
        ),
        (&contributor, "DELETE", "/?confirm=gatehouse", None, 403),
        (&operator, "PUT", "/apis/b", Some(api.clone()), 403),
        (
            &operator,
            "POST",
            "/freeze",
            Some(json!({"seconds": 5, "reason": "test"})),
            200,
        ),
        (&operator, "DELETE", "/freeze", None, 200),
    ];
    for (token, method, path, body, expected) in cases {
        let (status, answer) = as_token(token, method, path, body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        if status == 403 {
            assert_eq!(answer["error"]["code"], "AuthorizationFailed");
        }
    }
    let (_, refused) = as_token(&reader, "PUT", "/apis/a", Some(api)).await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&reader_id)
    );
    let archives = dir.path().join("archives");
    std::fs::create_dir_all(&archives).unwrap();
    let backup = json!({"storageAccount": format!("file://{}", archives.display()), "containerName": "c", "backupName": "b.ghbk", "encryptionKey": "a long passphrase for this archive"});
    assert_eq!(
        as_token(&operator, "POST", "/backup", Some(backup)).await.0,
        202
    );

    // The journal names the token that made each change, never a token's value.
    let (_, journal) = s.call("GET", "/journal?since=0", None).await;
    let entry = journal["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resourceId"] == "/apis/a")
        .expect("the API's entry");
    assert_eq!(entry["actor"], json!(contributor_id));
    let text = journal.to_string();
    for value in [&reader, &contributor, &operator] {
        assert!(!text.contains(value.as_str()));
    }
    // Listed without values; stored hashed.
    let out = cli(dir.path(), &["--data-dir", &d, "token", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&reader_id)
            && listed.contains(&operator_id)
            && listed.contains("dashboards"),
        "{listed}"
    );
    assert!(!listed.contains("ght_"), "{listed}");
    for value in [&reader, &contributor, &operator] {
        let secret = value.rsplit('_').next().unwrap();
        assert!(found_in_files(&s.process.data_dir, secret.as_bytes()).is_empty());
    }
    // Expired and revoked tokens stop working.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, e) = as_token(&short_lived, "GET", "/apis", None).await;
    assert_eq!(status, 401, "{e}");
    let out = cli(
        dir.path(),
        &["--data-dir", &d, "token", "revoke", &reader_id],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(as_token(&reader, "GET", "/apis", None).await.0, 401);
    // A bad role is refused with one line.
    let out = cli(
        dir.path(),
        &["--data-dir", &d, "token", "create", "--role", "owner"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reader, contributor or operator"));
}
