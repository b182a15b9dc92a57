//! The gateway through real sockets: an in-process instance on port 0 and a real echo backend.

use gatehouse_testkit::{EchoBackend, ServeConfig, TestInstance};
use serde_json::{Value, json};
use std::time::Duration;

const MISSING: &str = "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.";
const INVALID: &str = "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.";

async fn op(t: &TestInstance, api: &str, id: &str, method: &str, template: &str) {
    t.operation(api, id, method, template).await;
}

/// API `echo` at path `echo` → backend `/v1`, product `starter` with it, subscription `s1`.
async fn setup(t: &TestInstance, backend: &EchoBackend) -> (String, String) {
    t.put_ok("/apis/echo", json!({"properties": {"displayName": "Echo", "path": "echo", "serviceUrl": format!("{}/v1", backend.url), "protocols": ["http", "https"]}})).await;
    op(t, "echo", "get-item", "GET", "/items/{id}").await;
    op(t, "echo", "create-item", "POST", "/items").await;
    op(t, "echo", "slow", "GET", "/slow").await;
    op(t, "echo", "hang", "GET", "/hang").await;
    op(t, "echo", "search", "GET", "/search?q={term}").await;
    op(t, "echo", "files", "GET", "/files/{*path}").await;
    let keys = t.starter_subscription("echo").await;
    t.gateway_caught_up().await;
    keys
}

async fn gw(t: &TestInstance, method: &str, path: &str, key: Option<&str>) -> (u16, Value) {
    let c = reqwest::Client::new();
    let mut req = c.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        format!("{}{}", t.gateway_url(), path),
    );
    if let Some(k) = key {
        req = req.header("Ocp-Apim-Subscription-Key", k);
    }
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// API `id` at path `id` on a plain-HTTP backend, with the given operations (id, method, URL
/// template), in product `starter`; live when this returns.
async fn plain_api(t: &TestInstance, id: &str, url: &str, operations: &[(&str, &str, &str)]) {
    t.put_ok(&format!("/apis/{id}"), json!({"properties": {"displayName": id, "path": id, "serviceUrl": url, "protocols": ["http"]}})).await;
    for (op_id, method, template) in operations {
        op(t, id, op_id, method, template).await;
    }
    t.put_ok(&format!("/products/starter/apis/{id}"), json!({}))
        .await;
    t.gateway_caught_up().await;
}

/// A client that sends everything over one HTTP/1.1 connection.
fn one_connection_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .http1_only()
        .build()
        .unwrap()
}

#[tokio::test]
async fn routes_checks_keys_and_forwards() {
    let backend = EchoBackend::start().await.unwrap();
    let t = TestInstance::start().await.unwrap();
    let (primary, secondary) = setup(&t, &backend).await;

    let (s, b) = gw(&t, "GET", "/echo/items/42?x=1", Some(&primary)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["path"], "/v1/items/42");
    assert_eq!(b["query"], "x=1");
    let h = &b["headers"];
    assert!(
        h.get("ocp-apim-subscription-key").is_none(),
        "the key is not forwarded"
    );
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(
        h["x-forwarded-host"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(!h["x-request-id"].as_str().unwrap().is_empty());
    assert_eq!(h["request-id"], h["x-request-id"]);

    // The secondary key, the query parameter (not forwarded), a POST with a body.
    assert_eq!(
        gw(&t, "GET", "/echo/items/1", Some(&secondary)).await.0,
        200
    );
    let (s, b) = gw(
        &t,
        "GET",
        &format!("/echo/items/1?a=b&subscription-key={primary}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["query"], "a=b");
    let r = reqwest::Client::new()
        .post(format!("{}/echo/items", t.gateway_url()))
        .header("Ocp-Apim-Subscription-Key", &primary)
        .body("hello body")
        .send()
        .await
        .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["body"], "hello body");
    assert_eq!(b["method"], "POST");
    // Templates: query parameters and wildcards.
    assert_eq!(
        gw(&t, "GET", "/echo/search?q=cats", Some(&primary)).await.0,
        200
    );
    assert_eq!(gw(&t, "GET", "/echo/search", Some(&primary)).await.0, 404);
    let (s, b) = gw(&t, "GET", "/echo/files/a/b/c.txt", Some(&primary)).await;
    assert_eq!(
        (s, b["path"].as_str().unwrap()),
        (200, "/v1/files/a/b/c.txt")
    );

    // APIM's errors, verbatim.
    assert_eq!(
        gw(&t, "GET", "/echo/items/1", None).await,
        (401, json!({"statusCode": 401, "message": MISSING}))
    );
    assert_eq!(
        gw(&t, "GET", "/echo/items/1", Some("nope")).await,
        (401, json!({"statusCode": 401, "message": INVALID}))
    );
    assert_eq!(
        gw(&t, "GET", "/nothing/here", Some(&primary)).await,
        (
            404,
            json!({"statusCode": 404, "message": "Resource not found"})
        )
    );
    assert_eq!(
        gw(&t, "DELETE", "/echo/items/1", Some(&primary)).await,
        (
            404,
            json!({"statusCode": 404, "message": "Unable to match incoming request to an operation."})
        )
    );
    // Errors carry the request id too, once: the gateway's, or the client's.
    for client_id in [None, Some("client-chosen-id")] {
        let mut sent = reqwest::Client::new().get(format!("{}/echo/items/1", t.gateway_url()));
        if let Some(id) = client_id {
            sent = sent.header("x-request-id", id);
        }
        let r = sent.send().await.unwrap();
        assert_eq!(r.status(), 401);
        let ids: Vec<_> = r.headers().get_all("x-request-id").iter().collect();
        assert_eq!(ids.len(), 1, "{ids:?}");
        match client_id {
            Some(id) => assert_eq!(ids[0], id),
            None => assert_eq!(ids[0].len(), 36, "a UUID: {ids:?}"),
        }
    }
    // The health probe needs no key.
    let r = reqwest::get(format!("{}/status-0123456789abcdef", t.gateway_url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn subscription_scopes_states_and_open_products() {
    let backend = EchoBackend::start().await.unwrap();
    let t = TestInstance::start().await.unwrap();
    let (primary, _) = setup(&t, &backend).await;
    t.put_ok("/apis/other", json!({"properties": {"displayName": "Other", "path": "other", "serviceUrl": backend.url, "protocols": ["http"], "subscriptionKeyParameterNames": {"header": "X-Key", "query": "key"}}})).await;
    op(&t, "other", "get", "GET", "/").await;
    t.put_ok(
        "/subscriptions/all",
        json!({"properties": {"scope": "/apis", "displayName": "All", "state": "active"}}),
    )
    .await;
    t.put_ok(
        "/subscriptions/only-other",
        json!({"properties": {"scope": "/apis/other", "displayName": "O", "state": "active"}}),
    )
    .await;
    t.put_ok(
        "/subscriptions/pending",
        json!({"properties": {"scope": "/apis", "displayName": "P"}}),
    )
    .await;
    let key = |id: &'static str| {
        let t = &t;
        async move {
            let (_, k) = t
                .call("POST", &format!("/subscriptions/{id}/listSecrets"), None)
                .await;
            k["primaryKey"].as_str().unwrap().to_string()
        }
    };
    let (all, only_other, pending, master) = (
        key("all").await,
        key("only-other").await,
        key("pending").await,
        key("master").await,
    );
    t.gateway_caught_up().await;
    assert_eq!(
        gw(&t, "GET", "/echo/items/1", Some(&all)).await.0,
        200,
        "/apis scope"
    );
    assert_eq!(
        gw(&t, "GET", "/echo/items/1", Some(&master)).await.0,
        200,
        "the master subscription"
    );
    assert_eq!(
        gw(&t, "GET", "/echo/items/1", Some(&only_other)).await.0,
        401,
        "another API's scope"
    );
    assert_eq!(
        gw(&t, "GET", "/echo/items/1", Some(&pending)).await.0,
        401,
        "a submitted subscription"
    );
    assert_eq!(
        gw(&t, "GET", "/other", Some(&primary)).await.0,
        401,
        "a product without the API"
    );
    // The API's own key names.
    let r = reqwest::Client::new()
        .get(format!("{}/other", t.gateway_url()))
        .header("X-Key", &only_other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        reqwest::get(format!("{}/other?key={only_other}", t.gateway_url()))
            .await
            .unwrap()
            .status(),
        200
    );

    // Suspending or regenerating takes effect with the next revision.
    t.put_ok("/subscriptions/s1", json!({"properties": {"scope": "/products/starter", "displayName": "S1", "state": "suspended"}})).await;
    t.gateway_caught_up().await;
    assert_eq!(gw(&t, "GET", "/echo/items/1", Some(&primary)).await.0, 401);
    t.call("POST", "/subscriptions/all/regeneratePrimaryKey", None)
        .await;
    t.gateway_caught_up().await;
    assert_eq!(gw(&t, "GET", "/echo/items/1", Some(&all)).await.0, 401);
    assert_eq!(
        gw(&t, "GET", "/echo/items/1", Some(&key("all").await))
            .await
            .0,
        200
    );

    // An open product, or an API that needs no subscription, lets requests without a key in.
    assert_eq!(gw(&t, "GET", "/other", None).await.0, 401);
    t.put_ok("/products/free", json!({"properties": {"displayName": "Free", "subscriptionRequired": false, "state": "published"}})).await;
    t.put_ok("/products/free/apis/other", json!({})).await;
    t.gateway_caught_up().await;
    assert_eq!(gw(&t, "GET", "/other", None).await.0, 200);
    t.call(
        "PATCH",
        "/apis/echo",
        Some(json!({"properties": {"subscriptionRequired": false}})),
    )
    .await;
    t.gateway_caught_up().await;
    assert_eq!(gw(&t, "GET", "/echo/items/1", None).await.0, 200);
}

#[tokio::test]
async fn versions_and_revisions() {
    let backend = EchoBackend::start().await.unwrap();
    let t = TestInstance::start().await.unwrap();
    let (_, _) = setup(&t, &backend).await;
    let (_, m) = t
        .call("POST", "/subscriptions/master/listSecrets", None)
        .await;
    let master = m["primaryKey"].as_str().unwrap().to_string();
    for (scheme, extra) in [
        ("Segment", json!({})),
        ("Query", json!({"versionQueryName": "api-version"})),
        ("Header", json!({"versionHeaderName": "Api-Version"})),
    ] {
        let mut props = json!({"displayName": scheme, "versioningScheme": scheme});
        props
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        t.put_ok(
            &format!("/apiVersionSets/{scheme}"),
            json!({"properties": props}),
        )
        .await;
        for v in ["v1", "v2"] {
            let id = format!("{}-{v}", scheme.to_lowercase());
            t.put_ok(&format!("/apis/{id}"), json!({"properties": {"displayName": id, "path": scheme.to_lowercase(), "apiVersion": v, "apiVersionSetId": format!("/apiVersionSets/{scheme}"), "serviceUrl": format!("{}/{v}", backend.url), "protocols": ["http"]}})).await;
            op(&t, &id, "get", "GET", "/thing").await;
        }
    }
    t.gateway_caught_up().await;
    assert_eq!(
        gw(&t, "GET", "/segment/v2/thing", Some(&master)).await.1["path"],
        "/v2/thing"
    );
    assert_eq!(
        gw(&t, "GET", "/query/thing?api-version=v1", Some(&master))
            .await
            .1["path"],
        "/v1/thing"
    );
    let r = reqwest::Client::new()
        .get(format!("{}/header/thing", t.gateway_url()))
        .header("Ocp-Apim-Subscription-Key", &master)
        .header("Api-Version", "v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["path"], "/v2/thing");
    assert_eq!(
        gw(&t, "GET", "/query/thing?api-version=v9", Some(&master))
            .await
            .0,
        404
    );

    // A non-current revision is reachable with ;rev=N, with its own operations.
    t.put_ok(
        "/apis/echo;rev=2",
        json!({"properties": {"apiRevisionDescription": "next"}}),
    )
    .await;
    op(&t, "echo;rev=2", "new-op", "GET", "/new").await;
    t.gateway_caught_up().await;
    assert_eq!(gw(&t, "GET", "/echo;rev=2/new", Some(&master)).await.0, 200);
    assert_eq!(gw(&t, "GET", "/echo/new", Some(&master)).await.0, 404);
    t.call(
        "PATCH",
        "/apis/echo;rev=2",
        Some(json!({"properties": {"isCurrent": true}})),
    )
    .await;
    t.gateway_caught_up().await;
    assert_eq!(gw(&t, "GET", "/echo/new", Some(&master)).await.0, 200);
}

#[tokio::test]
async fn backend_failures_limits_and_timeouts() {
    let backend = EchoBackend::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::ephemeral(dir.path());
    config.gateway.backend_response_timeout = Duration::from_millis(500);
    config.gateway.max_header_bytes = 16 * 1024;
    config.gateway.max_body_bytes = 1024 * 1024;
    config.gateway.header_read_timeout = Duration::from_millis(500);
    let t = TestInstance::start_with(config).await.unwrap();
    let (key, _) = setup(&t, &backend).await;
    // A backend that hangs: 504, and other requests are not hurt meanwhile.
    let hung = tokio::spawn({
        let url = format!("{}/echo/hang", t.gateway_url());
        let key = key.clone();
        async move {
            reqwest::Client::new()
                .get(url)
                .header("Ocp-Apim-Subscription-Key", key)
                .send()
                .await
                .unwrap()
        }
    });
    assert_eq!(gw(&t, "GET", "/echo/items/1", Some(&key)).await.0, 200);
    let r = hung.await.unwrap();
    assert_eq!(r.status(), 504);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["statusCode"], 504);
    // A backend that is down: 502.
    t.put_ok("/apis/down", json!({"properties": {"displayName": "Down", "path": "down", "serviceUrl": "http://127.0.0.1:9", "protocols": ["http"]}})).await;
    op(&t, "down", "get", "GET", "/").await;
    t.put_ok("/products/starter/apis/down", json!({})).await;
    t.gateway_caught_up().await;
    let (s, b) = gw(&t, "GET", "/down", Some(&key)).await;
    assert_eq!((s, b["statusCode"].as_u64()), (502, Some(502)));
    // A backend that stops in the middle of a body: the client's read fails once the backend
    // has been silent for the response timeout, instead of waiting for ever.
    let (stalling_url, _) = counting_backend(|mut s, _| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    plain_api(&t, "stalling", &stalling_url, &[("get", "GET", "/")]).await;
    let started = std::time::Instant::now();
    let r = reqwest::Client::new()
        .get(format!("{}/stalling", t.gateway_url()))
        .header("Ocp-Apim-Subscription-Key", &key)
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 200);
        let body = tokio::time::timeout(Duration::from_secs(10), r.bytes()).await;
        assert!(
            matches!(body, Ok(Err(_))),
            "the body must fail, not end short or hang"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed after {:?}",
        started.elapsed()
    );
    // Oversized headers: 431; oversized body: 413.
    let r = reqwest::Client::new()
        .get(format!("{}/echo/items/1", t.gateway_url()))
        .header("Ocp-Apim-Subscription-Key", &key)
        .header("X-Big", "a".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    // (Sent raw: the gateway answers as soon as the declared length is over the limit, and a
    // client still writing the rest could see its connection closed before reading the answer.)
    let mut oversized = format!("POST /echo/items HTTP/1.1\r\nHost: x\r\nOcp-Apim-Subscription-Key: {key}\r\nContent-Length: {}\r\n\r\n", 2 * 1024 * 1024).into_bytes();
    oversized.extend_from_slice(&[b'x'; 1024]);
    let answer = raw_gateway(&t, &oversized).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A slow client that never finishes its headers is cut off; others go on.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = t.gateway_url().trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /echo/items/1 HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert_eq!(gw(&t, "GET", "/echo/items/1", Some(&key)).await.0, 200);
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the slow connection was closed by the header read timeout"
    );
    // Malformed HTTP gets a 400 and does not disturb the gateway.
    let mut bad = tokio::net::TcpStream::connect(&addr).await.unwrap();
    bad.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut buf)).await;
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(gw(&t, "GET", "/echo/items/1", Some(&key)).await.0, 200);
}

#[tokio::test]
async fn hot_reload_under_traffic_drops_nothing() {
    let backend = EchoBackend::start().await.unwrap();
    let t = TestInstance::start().await.unwrap();
    let (key, _) = setup(&t, &backend).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let url = format!("{}/echo/items/7", t.gateway_url());
        let key = key.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c
                    .get(&url)
                    .header("Ocp-Apim-Subscription-Key", &key)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    for i in 0..100 {
        // Changes that touch the routing table: new APIs, operations, products, subscriptions.
        t.put_ok(&format!("/apis/extra{i}"), json!({"properties": {"displayName": "X", "path": format!("extra{i}"), "serviceUrl": backend.url, "protocols": ["http"]}})).await;
        if i % 3 == 0 {
            op(
                &t,
                "echo",
                &format!("op{i}"),
                "GET",
                &format!("/generated/{i}"),
            )
            .await;
        }
        if i % 5 == 0 {
            t.put_ok(
                &format!("/subscriptions/x{i}"),
                json!({"properties": {"scope": "/apis", "displayName": "X", "state": "active"}}),
            )
            .await;
        }
    }
    t.gateway_caught_up().await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (ok, failed) = c.await.unwrap();
        assert!(
            failed.is_empty(),
            "failed requests during reloads: {failed:?}"
        );
        total += ok;
    }
    assert!(total > 100, "traffic kept flowing ({total} requests)");
    // The last change is live.
    assert_eq!(gw(&t, "GET", "/echo/generated/99", Some(&key)).await.0, 200);
}

#[tokio::test]
async fn tls_http2_and_h2c() {
    let backend = EchoBackend::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("gw.crt");
    let keyf = dir.path().join("gw.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&keyf, ck.signing_key.serialize_pem()).unwrap();
    let mut config = ServeConfig::ephemeral(&dir.path().join("data"));
    config.gateway.tls = Some((cert, keyf));
    let t = TestInstance::start_with(config).await.unwrap();
    let (key, _) = setup(&t, &backend).await;
    let url = t.gateway_url().replace("127.0.0.1", "localhost");
    assert!(url.starts_with("https://"));
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .get(format!("{url}/echo/items/1"))
        .header("Ocp-Apim-Subscription-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "HTTP/2 by ALPN");
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["headers"]["x-forwarded-proto"], "https");

    // Plain listener: HTTP/2 with prior knowledge (h2c).
    let t2 = TestInstance::start().await.unwrap();
    let (key2, _) = setup(&t2, &backend).await;
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2c
        .get(format!("{}/echo/items/1", t2.gateway_url()))
        .header("Ocp-Apim-Subscription-Key", &key2)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    // The request id the backend got comes back, once, over HTTP/2 too.
    let ids: Vec<String> = r
        .headers()
        .get_all("x-request-id")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let b: Value = r.json().await.unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(b["headers"]["x-request-id"], ids[0]);
}

#[tokio::test]
async fn metrics_access_log_usage_reports_and_draining() {
    let backend = EchoBackend::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut config = ServeConfig::ephemeral(&dir.path().join("data"));
    config.gateway.access_log = Some(log.to_str().unwrap().to_string());
    let mut t = TestInstance::start_with(config).await.unwrap();
    let (key, _) = setup(&t, &backend).await;
    for _ in 0..3 {
        assert_eq!(
            gw(
                &t,
                "GET",
                &format!("/echo/items/1?subscription-key={key}&z=9"),
                None
            )
            .await
            .0,
            200
        );
    }
    assert_eq!(gw(&t, "GET", "/echo/items/1", Some("bad")).await.0, 401);

    let (s, text) = t.call("GET", "/metrics", None).await;
    assert_eq!(s, 200);
    let text = text.as_str().unwrap().to_string();
    assert!(text.contains("gatehouse_gateway_requests_total{api=\"echo\",operation=\"get-item\",product=\"starter\",subscription=\"s1\",status_class=\"2xx\"}"), "{text}");
    assert!(text.contains("gatehouse_gateway_request_duration_seconds_bucket"));
    assert!(text.contains("gatehouse_gateway_backend_duration_seconds"));
    assert!(text.contains("gatehouse_gateway_config_revision"));
    assert!(!text.contains(&key));

    let lines = std::fs::read_to_string(&log).unwrap();
    let entries: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0]["subscriptionId"], "s1");
    assert_eq!(entries[0]["api"], "echo");
    assert_eq!(entries[0]["operation"], "get-item");
    assert_eq!(entries[0]["url"], "/echo/items/1?z=9");
    assert!(entries[0]["backendMs"].as_f64().is_some());
    assert_eq!(entries[3]["status"], 401);
    assert!(
        !lines.contains(&key),
        "the key never reaches the access log"
    );

    // A request in flight when shutdown starts still completes.
    let slow = tokio::spawn({
        let url = format!("{}/echo/slow?ms=400", t.gateway_url());
        let key = key.clone();
        async move {
            reqwest::Client::new()
                .get(url)
                .header("Ocp-Apim-Subscription-Key", key)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let data_dir = t.data_dir.clone();
    t.stop().await.unwrap();
    assert_eq!(slow.await.unwrap().unwrap(), 200);

    // Usage was flushed at shutdown and is reported after a restart.
    let t2 = TestInstance::start_in(&data_dir).await.unwrap();
    let (s, by_api) = t2
        .call(
            "GET",
            "/reports/byApi?$filter=timestamp%20ge%20datetime'2020-01-01T00:00:00'",
            None,
        )
        .await;
    assert_eq!(s, 200, "{by_api}");
    let rec = &by_api["value"][0];
    assert_eq!(rec["name"], "echo");
    assert_eq!(rec["callCountSuccess"], 4);
    assert_eq!(rec["callCountBlocked"], 1);
    assert_eq!(rec["callCountTotal"], 5);
    let (_, by_sub) = t2.call("GET", "/reports/bySubscription", None).await;
    assert_eq!(by_sub["value"][0]["name"], "s1");
    let (_, by_time) = t2.call("GET", "/reports/byTime?interval=PT15M", None).await;
    assert_eq!(by_time["value"][0]["callCountTotal"], 5);
    assert_eq!(by_time["value"][0]["interval"], "PT15M");
    assert_eq!(
        t2.call("GET", "/reports/byTime?interval=PT7M", None)
            .await
            .0,
        400
    );
    assert_eq!(t2.call("GET", "/reports/byNothing", None).await.0, 404);
}

#[tokio::test]
async fn https_backends_with_a_private_ca_over_http2() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let backend = EchoBackend::start_tls(&ck.cert.pem(), &ck.signing_key.serialize_pem())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let mut config = ServeConfig::ephemeral(&dir.path().join("data"));
    config.gateway.backend_ca = Some(ca);
    let t = TestInstance::start_with(config).await.unwrap();
    let (key, _) = setup(&t, &backend).await;
    let (s, b) = gw(&t, "GET", "/echo/items/5", Some(&key)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["path"], "/v1/items/5");
    assert_eq!(b["version"], "HTTP/2.0", "HTTP/2 to the backend by ALPN");
    // Without the private CA the backend's certificate is not trusted: 502, not a silent pass.
    let t2 = TestInstance::start().await.unwrap();
    let (key2, _) = setup(&t2, &backend).await;
    assert_eq!(gw(&t2, "GET", "/echo/items/5", Some(&key2)).await.0, 502);
}

/// What a raw test backend does with a connection after answering a request on it.
#[derive(Clone, Copy)]
enum AfterAnswer {
    /// Closes it after a while without saying so (a backend whose keep-alive timeout ends).
    Linger(Duration),
    /// Says `Connection: close` and closes it.
    Close,
    /// Keeps it for the next request.
    Keep,
}

/// A loopback backend that serves each accepted connection with `serve` (given the stream and
/// its number, from 1) and counts them.
async fn counting_backend<F, Fut>(
    serve: F,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream, usize) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            tokio::spawn(serve(s, n));
        }
    });
    (url, accepted)
}

/// A raw HTTP/1.1 backend (requests without bodies) that counts the connections it accepted.
async fn raw_backend(
    after: AfterAnswer,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    counting_backend(move |mut s, n| async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let body = format!("{{\"connection\":{n}}}");
                    let close = match after {
                        AfterAnswer::Close => "Connection: close\r\n",
                        _ => "",
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{close}\r\n",
                        body.len()
                    );
                    let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
                    match after {
                        AfterAnswer::Keep => {}
                        AfterAnswer::Close => return,
                        AfterAnswer::Linger(d) => {
                            tokio::time::sleep(d).await;
                            return;
                        }
                    }
                }
    })
    .await
}

#[tokio::test]
async fn client_connections_keep_their_backend_connections_and_survive_their_closing() {
    let echo = EchoBackend::start().await.unwrap();
    let t = TestInstance::start().await.unwrap();
    let (key, _) = setup(&t, &echo).await;
    let (lingering, lingering_count) =
        raw_backend(AfterAnswer::Linger(Duration::from_millis(30))).await;
    let (closing, closing_count) = raw_backend(AfterAnswer::Close).await;
    let (users, users_count) = raw_backend(AfterAnswer::Keep).await;
    let (orders, orders_count) = raw_backend(AfterAnswer::Keep).await;
    for (id, url) in [
        ("lingering", &lingering),
        ("closing", &closing),
        ("users", &users),
        ("orders", &orders),
    ] {
        plain_api(&t, id, url, &[("get", "GET", "/")]).await;
    }
    // One client connection for everything below.
    let client = one_connection_client();
    let get = |path: &str| {
        client
            .get(format!("{}{path}", t.gateway_url()))
            .header("Ocp-Apim-Subscription-Key", &key)
            .send()
    };
    // The backend closes each connection after a while without saying so: the request after
    // the close goes over a new connection, and none fails.
    for _ in 0..5 {
        let r = get("/lingering").await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert_eq!(
        lingering_count.load(std::sync::atomic::Ordering::SeqCst),
        5,
        "one backend connection per request, as the backend closed each"
    );
    // `Connection: close` from the backend: the same.
    for _ in 0..5 {
        assert_eq!(get("/closing").await.unwrap().status(), 200);
    }
    assert_eq!(closing_count.load(std::sync::atomic::Ordering::SeqCst), 5);
    // Alternating between two backends on one client connection, and back-to-back requests
    // to a backend that keeps its connections: all answered, by the right backend.
    for i in 0..20 {
        let r = get(&format!("/echo/items/{i}")).await.unwrap();
        assert_eq!(r.status(), 200);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["path"], format!("/v1/items/{i}"), "{b}");
        assert_eq!(get("/closing").await.unwrap().status(), 200);
    }
    assert_eq!(closing_count.load(std::sync::atomic::Ordering::SeqCst), 25);
    // A client alternating between APIs on two backends that keep their connections: one
    // backend connection each, kept the whole time.
    for _ in 0..10 {
        let r = get("/users").await.unwrap();
        assert_eq!(r.text().await.unwrap(), r#"{"connection":1}"#);
        let r = get("/orders").await.unwrap();
        assert_eq!(r.text().await.unwrap(), r#"{"connection":1}"#);
    }
    assert_eq!(users_count.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(orders_count.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Reads one HTTP/1.1 request (head, and a Content-Length or chunked body) from `buf`/`s`;
/// `None` when the connection ends first. The body comes back dechunked, with how it was framed;
/// requests whose line contains `unread` keep their body unread.
async fn read_request(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    unread: &str,
) -> Option<(String, String, &'static str, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    async fn more(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<()> {
        let mut chunk = [0u8; 65536];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => None,
            Ok(k) => {
                buf.extend_from_slice(&chunk[..k]);
                Some(())
            }
        }
    }
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        more(s, buf).await?;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    buf.drain(..end);
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let read_body = !request_line.contains(unread);
    let lower = head.to_ascii_lowercase();
    let header = |name: &str| {
        lower
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
    };
    let mut body = Vec::new();
    let framing = if let Some(n) = header("content-length") {
        let n: usize = n.trim().parse().unwrap();
        if read_body {
            while buf.len() < n {
                more(s, buf).await?;
            }
            body = buf.drain(..n).collect();
        }
        "length"
    } else if header("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            while !buf.windows(2).any(|w| w == b"\r\n") {
                more(s, buf).await?;
            }
            let line_end = buf.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(
                std::str::from_utf8(&buf[..line_end])
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap(),
                16,
            )
            .unwrap();
            while buf.len() < line_end + 2 + size + 2 {
                more(s, buf).await?;
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
        "chunked"
    } else {
        "none"
    };
    Some((request_line, lower, framing, body))
}

/// A backend that answers each path with a scripted raw response, to check how the gateway
/// frames and reuses its own HTTP/1.1 backend connections. Counts accepted connections.
async fn scripted_backend() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    counting_backend(|mut s, _| async move {
                let mut buf = Vec::new();
                loop {
                    // /early answers before reading the body, so it reads only the head.
                    let Some((line, head, framing, body)) =
                        read_request(&mut s, &mut buf, "/early").await
                    else {
                        return;
                    };
                    let early = line.contains("/early");
                    let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                    let (answer, close): (Vec<u8>, bool) = match path.as_str() {
                        "/chunked" => (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(), false),
                        "/until-close" => (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end".to_vec(), true),
                        "/http10" => (b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n1.0!".to_vec(), true),
                        "/interim" => (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(), false),
                        "/no-content" => (b"HTTP/1.1 204 No Content\r\nX-Done: yes\r\n\r\n".to_vec(), false),
                        "/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec(), false),
                        "/hop" => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nX-Request-Id: backend-chosen\r\nX-Custom: 1\r\nx-custom: 2\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\n\r\nok".to_vec(), false),
                        "/bad-length" => (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc".to_vec(), true),
                        "/short" => (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(), true),
                        "/early" => (b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!".to_vec(), false),
                        _ => {
                            let sum: u64 = body.iter().map(|&b| u64::from(b)).sum();
                            let expect = head.contains("\r\nexpect:");
                            let text = format!("{framing}:{}:{sum}:expect={expect}", body.len());
                            (format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len()).into_bytes(), false)
                        }
                    };
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                    if early {
                        // Reads nothing more: the rest of the upload is never taken.
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        return;
                    }
                    if close {
                        return;
                    }
                }
    })
    .await
}

/// Sends raw bytes to the gateway and reads the answer up to the end of its head and
/// `body_bytes` of body (or until the gateway closes).
async fn raw_gateway(t: &TestInstance, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = t.gateway_url().trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let read = tokio::time::timeout_at(deadline, s.read(&mut chunk)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(k)) => out.extend_from_slice(&chunk[..k]),
        }
        let text = String::from_utf8_lossy(&out);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end].to_ascii_lowercase().lines().find_map(|l| {
                l.strip_prefix("content-length: ")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if length.is_some_and(|n| out.len() >= end + 4 + n) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn backend_http1_framing_interim_answers_and_early_answers() {
    let echo = EchoBackend::start().await.unwrap();
    let t = TestInstance::start().await.unwrap();
    let (key, _) = setup(&t, &echo).await;
    let (url, connections) = scripted_backend().await;
    let any = "/{*rest}";
    plain_api(
        &t,
        "raw",
        &url,
        &[
            ("get", "GET", any),
            ("post", "POST", any),
            ("head", "HEAD", any),
        ],
    )
    .await;
    let client = one_connection_client();
    let send = |method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{}/raw{path}", t.gateway_url()))
            .header("Ocp-Apim-Subscription-Key", &key)
    };
    let count = || connections.load(std::sync::atomic::Ordering::SeqCst);

    // A chunked body (with a chunk extension and trailers) arrives whole, and the connection
    // is reused after it; so after interim 1xx answers, which the client never sees.
    for _ in 0..3 {
        let r = send(reqwest::Method::GET, "/chunked").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "hello world");
        let r = send(reqwest::Method::GET, "/interim").send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("link").is_none());
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    assert_eq!(
        count(),
        1,
        "chunked and interim exchanges leave the connection reusable"
    );
    // HEAD: the backend's Content-Length describes a body that is not sent; 204 has none.
    let r = send(reqwest::Method::HEAD, "/head").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "100");
    let r = send(reqwest::Method::GET, "/no-content")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["x-done"], "yes");
    // The backend's fields reach the client as sent — but hop-by-hop ones (and those its
    // Connection names), and with the gateway's request id.
    let r = send(reqwest::Method::GET, "/hop")
        .header("x-request-id", "client-chosen")
        .send()
        .await
        .unwrap();
    let h = r.headers();
    let customs: Vec<_> = h.get_all("x-custom").iter().collect();
    assert_eq!(customs, ["1", "2"]);
    assert_eq!(h["x-request-id"], "client-chosen");
    assert_eq!(h.get_all("date").iter().count(), 1);
    assert_eq!(h["date"], "Tue, 01 Jan 2030 00:00:00 GMT");
    assert!(
        h.get("x-hop").is_none() && h.get("keep-alive").is_none(),
        "{h:?}"
    );
    assert_eq!(r.text().await.unwrap(), "ok");
    assert_eq!(count(), 1);
    // A body that runs until the backend closes, and an HTTP/1.0 answer: whole, and each on a
    // connection of its own.
    let r = send(reqwest::Method::GET, "/until-close")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "until the end");
    let r = send(reqwest::Method::GET, "/http10").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "1.0!");
    let r = send(reqwest::Method::GET, "/chunked").send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello world");
    assert_eq!(count(), 3);
    // Conflicting lengths: 502 with APIM's body; a body cut short: the client's read fails
    // rather than receiving a shorter body as if whole.
    let r = send(reqwest::Method::GET, "/bad-length")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["statusCode"], 502, "{b}");
    // (The head and the partial body may still sit in the gateway's write buffer when it
    // aborts: then the client sees no response at all.)
    if let Ok(r) = send(reqwest::Method::GET, "/short").send().await {
        assert!(
            r.text().await.is_err(),
            "a truncated body must not look complete"
        );
    }

    // Request bodies: an exact length goes as Content-Length, a streamed one chunked; the
    // client's Expect is not passed on; every byte arrives.
    let big: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let sum: u64 = big.iter().map(|&b| u64::from(b)).sum();
    let r = send(reqwest::Method::POST, "/upload")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        format!("length:1048576:{sum}:expect=false")
    );
    let r = send(reqwest::Method::POST, "/upload").send().await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "length:0:0:expect=false",
        "an empty POST says Content-Length: 0"
    );
    let mut chunked = format!("POST /raw/upload HTTP/1.1\r\nHost: x\r\nOcp-Apim-Subscription-Key: {key}\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").into_bytes();
    for piece in big.chunks(100_000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_gateway(&t, &chunked).await;
    assert!(
        answer.contains(&format!("chunked:1048576:{sum}:expect=false")),
        "{}",
        &answer[..answer.len().min(400)]
    );

    // A backend that answers before taking the body: the client gets that answer at once,
    // while its upload is still unfinished.
    let started = std::time::Instant::now();
    let mut early = format!("POST /raw/early HTTP/1.1\r\nHost: x\r\nOcp-Apim-Subscription-Key: {key}\r\nContent-Length: 8000000\r\n\r\n").into_bytes();
    early.extend_from_slice(&[b'x'; 1000]);
    let answer = raw_gateway(&t, &early).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.ends_with("too big!"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered in {:?}",
        started.elapsed()
    );
}

/// Reads from `s` until `n` complete responses (heads with a Content-Length body) have come,
/// or the gateway closes, or 10 s pass; returns the text.
async fn read_responses(s: &mut tokio::net::TcpStream, n: usize) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&out).to_string();
        let mut complete = 0;
        let mut at = 0;
        while let Some(end) = text[at..].find("\r\n\r\n") {
            let head = text[at..at + end].to_ascii_lowercase();
            if head.starts_with("http/1.1 100") {
                at += end + 4;
                continue;
            }
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if text.len() < at + end + 4 + length {
                break;
            }
            at += end + 4 + length;
            complete += 1;
        }
        if complete >= n {
            return text;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return text,
            Ok(Ok(k)) => out.extend_from_slice(&chunk[..k]),
        }
    }
}

#[tokio::test]
async fn client_connections_pipeline_continue_and_frame_their_bodies() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = EchoBackend::start().await.unwrap();
    let t = TestInstance::start().await.unwrap();
    let (key, _) = setup(&t, &backend).await;
    let addr = t.gateway_url().trim_start_matches("http://").to_string();
    let connect = || tokio::net::TcpStream::connect(addr.clone());

    // Pipelined: three requests in one write, answered in order on the one connection.
    let mut s = connect().await.unwrap();
    let mut burst = String::new();
    for id in ["a", "b", "c"] {
        burst.push_str(&format!(
            "GET /echo/items/{id} HTTP/1.1\r\nHost: x\r\nOcp-Apim-Subscription-Key: {key}\r\n\r\n"
        ));
    }
    s.write_all(burst.as_bytes()).await.unwrap();
    let text = read_responses(&mut s, 3).await;
    let order: Vec<usize> = ["/v1/items/a", "/v1/items/b", "/v1/items/c"]
        .iter()
        .map(|p| {
            text.find(p)
                .unwrap_or_else(|| panic!("{p} missing: {text}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");

    // A chunked upload on the same connection reaches the backend whole.
    s.write_all(
        format!("POST /echo/items HTTP/1.1\r\nHost: x\r\nOcp-Apim-Subscription-Key: {key}\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let text = read_responses(&mut s, 1).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#""body":"hello world""#), "{text}");

    // Expect: 100-continue — refused without a key: 401 and no 100 (the body is never asked
    // for); with a key: 100 first, then the answer.
    let mut s = connect().await.unwrap();
    s.write_all(b"POST /echo/items HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let text = read_responses(&mut s, 1).await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    let mut s = connect().await.unwrap();
    s.write_all(format!("POST /echo/items HTTP/1.1\r\nHost: x\r\nOcp-Apim-Subscription-Key: {key}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut first))
        .await
        .expect("100 Continue in time")
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    let text = read_responses(&mut s, 1).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#""body":"hello""#), "{text}");

    // HTTP/1.0: closed after the answer unless it asks to keep the connection.
    let mut s = connect().await.unwrap();
    s.write_all(
        format!("GET /echo/items/1 HTTP/1.0\r\nOcp-Apim-Subscription-Key: {key}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("closed after an HTTP/1.0 answer")
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("connection: close"),
        "{text}"
    );
    let mut s = connect().await.unwrap();
    let keep = format!(
        "GET /echo/items/1 HTTP/1.0\r\nConnection: keep-alive\r\nOcp-Apim-Subscription-Key: {key}\r\n\r\n"
    );
    s.write_all(keep.as_bytes()).await.unwrap();
    let text = read_responses(&mut s, 1).await;
    assert!(text.contains("connection: keep-alive"), "{text}");
    s.write_all(keep.as_bytes()).await.unwrap();
    assert!(read_responses(&mut s, 1).await.starts_with("HTTP/1.1 200"));

    // Framing that two parties could read two ways is refused, and the connection closed.
    for smuggled in [
        "POST /echo/items HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /echo/items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "POST /echo/items HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ] {
        let answer = raw_gateway(&t, smuggled.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{smuggled:?}: {answer}");
        assert!(answer.contains("connection: close"), "{answer}");
    }

    // A body left unread (refused for its key) closes the connection after the answer,
    // which the client still gets whole.
    let mut s = connect().await.unwrap();
    s.write_all(b"POST /echo/items HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[b'x'; 50_000]).await.unwrap();
    let text = read_responses(&mut s, 1).await;
    assert!(
        text.starts_with("HTTP/1.1 401") && text.contains("connection: close"),
        "{text}"
    );
    assert!(text.contains(MISSING), "{text}");
}

/// A client that asks for a large response and stops reading loses its connection after the
/// send timeout, which also ends the backend exchange behind it; other clients go on.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_send_timeout() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = EchoBackend::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::ephemeral(dir.path());
    config.gateway.send_timeout = Duration::from_millis(500);
    let t = TestInstance::start_with(config).await.unwrap();
    let (key, _) = setup(&t, &echo).await;
    // A backend streaming 256 MiB, noting when the gateway stops taking it.
    let cut = std::sync::Arc::new(AtomicBool::new(false));
    let (url, _) = counting_backend({
        let cut = cut.clone();
        move |mut s, _| {
            let cut = cut.clone();
            async move {
                let mut head = [0u8; 4096];
                let _ = s.read(&mut head).await;
                let total = 256 * 1024 * 1024;
                let sent = s
                    .write_all(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").as_bytes(),
                    )
                    .await;
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = total;
                while sent.is_ok() && left > 0 {
                    if s.write_all(&chunk).await.is_err() {
                        break;
                    }
                    left -= chunk.len();
                }
                cut.store(left > 0, Ordering::SeqCst);
            }
        }
    })
    .await;
    plain_api(&t, "huge", &url, &[("get", "GET", "/")]).await;
    let addr = t.gateway_url().trim_start_matches("http://").to_string();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(
            format!("GET /huge HTTP/1.1\r\nHost: x\r\nOcp-Apim-Subscription-Key: {key}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    // The client reads nothing; the buffers between fill up, then the timeout runs.
    let started = std::time::Instant::now();
    while !cut.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gateway still holds a client that reads nothing"
        );
        assert_eq!(gw(&t, "GET", "/echo/items/1", Some(&key)).await.0, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What the client gets is the start of the body and then the end of the connection.
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut got)).await;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert!(got.len() < 256 * 1024 * 1024, "{} bytes", got.len());
}

/// The header read timeout counts from the connection's start: a client that waits before its
/// first byte does not get the timeout a second time for the rest of its head.
#[tokio::test]
async fn the_first_head_is_due_one_header_timeout_after_connecting() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = EchoBackend::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::ephemeral(dir.path());
    config.gateway.header_read_timeout = Duration::from_secs(2);
    let t = TestInstance::start_with(config).await.unwrap();
    let (key, _) = setup(&t, &echo).await;
    let addr = t.gateway_url().trim_start_matches("http://").to_string();
    let started = std::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    slow.write_all(b"GET /echo/items/1 HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "never closed");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1900) && after < Duration::from_millis(2800),
        "closed {after:?} after connecting"
    );
    // A client that is on time is served.
    assert_eq!(gw(&t, "GET", "/echo/items/1", Some(&key)).await.0, 200);
}
