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
    std::process::Command::new(BIN)
        .current_dir(cwd)
        .args(args)
        .env_remove("GATEHOUSE_URL")
        .env_remove("GATEHOUSE_TOKEN")
        .env_remove("GATEHOUSE_DATA_DIR")
        .output()
        .unwrap()
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
