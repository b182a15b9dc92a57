//! What a move asks of an instance's management API: the digest that verification compares,
//! the gateway's drain mode, host names, the hand-over freeze, taking the source's name, and
//! deleting the instance.

use gatehouse_testkit::{EchoBackend, ServeConfig, TestInstance};
use serde_json::{Value, json};

async fn instance(dir: &std::path::Path, name: &str) -> TestInstance {
    let mut c = ServeConfig::ephemeral(dir);
    c.bootstrap.name = Some(name.into());
    TestInstance::start_with(c).await.unwrap()
}

async fn digest(t: &TestInstance, exclude: &[&str]) -> Value {
    let (s, d) = t
        .call("POST", "/digest", Some(json!({"exclude": exclude})))
        .await;
    assert_eq!(s, 200, "{d}");
    d
}

#[tokio::test]
async fn digests_are_equal_exactly_when_the_contents_are() {
    let dir = tempfile::tempdir().unwrap();
    let a = instance(&dir.path().join("a"), "a").await;
    let b = instance(&dir.path().join("b"), "b").await;
    for t in [&a, &b] {
        t.put_ok(
            "/apis/echo",
            json!({"properties": {"displayName": "Echo", "path": "echo", "serviceUrl": "http://x"}}),
        )
        .await;
        t.put_ok(
            "/namedValues/secret",
            json!({"properties": {"displayName": "secret", "value": "s3cret", "secret": true}}),
        )
        .await;
    }
    // Each instance bootstrapped its own master subscription keys: subscriptions differ.
    let (da, db) = (digest(&a, &[]).await, digest(&b, &[]).await);
    assert_eq!(da["kinds"]["api"], db["kinds"]["api"]);
    assert_eq!(
        da["kinds"]["namedValue"], db["kinds"]["namedValue"],
        "secrets compare in plaintext, not as sealed bytes"
    );
    assert_ne!(
        da["kinds"]["subscription"]["hash"],
        db["kinds"]["subscription"]["hash"]
    );
    assert_eq!(da["kinds"]["api"]["count"], 1);
    assert!(
        !da.to_string().contains("s3cret"),
        "a digest holds no secret"
    );

    // A different secret value changes the hash; excluding the resource hides the difference.
    b.put_ok(
        "/namedValues/secret",
        json!({"properties": {"displayName": "secret", "value": "other", "secret": true}}),
    )
    .await;
    let (da, db) = (digest(&a, &[]).await, digest(&b, &[]).await);
    assert_ne!(
        da["kinds"]["namedValue"]["hash"],
        db["kinds"]["namedValue"]["hash"]
    );
    let (da, db) = (
        digest(&a, &["/namedValues/secret"]).await,
        digest(&b, &["/namedValues/secret"]).await,
    );
    assert_eq!(da["kinds"]["namedValue"], db["kinds"]["namedValue"]);

    let (s, e) = a
        .call("POST", "/digest", Some(json!({"exclude": "all"})))
        .await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["details"][0]["target"], "exclude", "{e}");
}

/// API `echo` (no key needed) with `GET /echo/x`, live when this returns.
async fn open_echo_api(t: &TestInstance, backend: &EchoBackend) {
    t.put_ok(
        "/apis/echo",
        json!({"properties": {"displayName": "Echo", "path": "echo", "serviceUrl": backend.url, "protocols": ["http"], "subscriptionRequired": false}}),
    )
    .await;
    t.put_ok(
        "/apis/echo/operations/get",
        json!({"properties": {"displayName": "Get", "method": "GET", "urlTemplate": "/x"}}),
    )
    .await;
    t.gateway_caught_up().await;
}

#[tokio::test]
async fn drain_mode_closes_client_connections() {
    let backend = EchoBackend::start().await.unwrap();
    let t = TestInstance::start().await.unwrap();
    open_echo_api(&t, &backend).await;
    let http = reqwest::Client::new();
    let url = format!("{}/echo/x", t.gateway_url());
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("connection").is_none());

    let (s, d) = t
        .call("POST", "/drain", Some(json!({"enabled": true})))
        .await;
    assert_eq!(s, 200);
    assert_eq!(d["draining"], true);
    assert!(d["requests"].as_u64().unwrap() >= 1);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "a draining gateway still serves");
    assert_eq!(r.headers()["connection"], "close");
    let (_, d) = t.call("GET", "/drain", None).await;
    assert!(d["lastRequestAt"].as_i64().unwrap() > 0);
    assert_eq!(d["failedRequests"], 0);

    let (s, _) = t
        .call("POST", "/drain", Some(json!({"enabled": "yes"})))
        .await;
    assert_eq!(s, 400);
    t.call("POST", "/drain", Some(json!({"enabled": false})))
        .await;
    let r = http.get(&url).send().await.unwrap();
    assert!(r.headers().get("connection").is_none());
}

#[tokio::test]
async fn host_names_are_checked_before_anything_changes() {
    let t = TestInstance::start().await.unwrap();
    for (body, says) in [
        (
            json!([{"type": "Gateway", "hostName": "api.contoso.com"}]),
            "not supported",
        ),
        (
            json!([{"type": "Proxy", "hostName": "api..contoso.com"}]),
            "not a valid host name",
        ),
        (
            json!([{"type": "Proxy", "hostName": "a.contoso.com"}, {"type": "Proxy", "hostName": "A.contoso.com"}]),
            "listed twice",
        ),
        (
            json!([{"type": "Proxy", "hostName": "a.contoso.com", "certificateId": "/certificates/none"}]),
            "does not exist",
        ),
        (json!({"hostName": "a"}), "must be a list"),
    ] {
        let (s, e) = t
            .call(
                "PATCH",
                "/",
                Some(json!({"properties": {"hostnameConfigurations": body}})),
            )
            .await;
        assert_eq!(s, 400, "{body}: {e}");
        assert!(e.to_string().contains(says), "{body}: {e}");
    }
    let (_, svc) = t.call("GET", "/", None).await;
    assert_eq!(
        svc["properties"]["hostnameConfigurations"],
        json!([]),
        "nothing was changed"
    );
    let (s, svc) = t
        .call(
            "PATCH",
            "/",
            Some(json!({"properties": {"hostnameConfigurations": [{"type": "Proxy", "hostName": "gw.contoso.com"}]}})),
        )
        .await;
    assert_eq!(s, 200, "{svc}");
    assert_eq!(
        svc["properties"]["hostnameConfigurations"][0]["hostName"],
        "gw.contoso.com"
    );
}

#[tokio::test]
async fn hand_over_freeze_points_writers_to_the_new_instance() {
    let t = TestInstance::start().await.unwrap();
    let (s, f) = t
        .call(
            "POST",
            "/freeze",
            Some(json!({"reason": "moved to eastus", "movedTo": "http://eastus:9000"})),
        )
        .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["until"], Value::Null, "a hand-over freeze has no end");
    let (s, e) = t
        .call(
            "PUT",
            "/tags/t",
            Some(json!({"properties": {"displayName": "t"}})),
        )
        .await;
    assert_eq!(s, 409);
    assert_eq!(e["error"]["code"], "ServiceIsBeingMoved");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(msg.contains("has moved to http://eastus:9000"), "{msg}");
    // Without movedTo, a freeze needs its length.
    let (s, _) = t
        .call("POST", "/freeze", Some(json!({"reason": "x"})))
        .await;
    assert_eq!(s, 400);
    // Reads, digests and the drain report still answer.
    assert_eq!(t.call("GET", "/apis", None).await.0, 200);
    assert_eq!(t.call("POST", "/digest", None).await.0, 200);
}

#[tokio::test]
async fn the_target_takes_the_name_and_a_deleted_instance_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = instance(&dir.path().join("t"), "contoso-eastus").await;
    let (s, e) = t
        .call("POST", "/adoptIdentity", Some(json!({"name": "-bad"})))
        .await;
    assert_eq!(s, 400, "{e}");
    let (s, svc) = t
        .call(
            "POST",
            "/adoptIdentity",
            Some(json!({"name": "contoso", "hostnameConfigurations": [{"type": "Proxy", "hostName": "contoso.gw.test"}]})),
        )
        .await;
    assert_eq!(s, 200, "{svc}");
    assert_eq!(svc["name"], "contoso");
    assert_eq!(
        svc["properties"]["hostnameConfigurations"][0]["hostName"],
        "contoso.gw.test"
    );

    // Only with the service's name as the confirmation.
    let (s, e) = t.call("DELETE", "/", None).await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("?confirm=contoso"),
        "{e}"
    );
    let (s, _) = t.call("DELETE", "/?confirm=someone-else", None).await;
    assert_eq!(s, 400);
    let (s, _) = t.call("GET", "/", None).await;
    assert_eq!(s, 200, "still serving");
    let (s, _) = t.call("DELETE", "/?confirm=contoso", None).await;
    assert_eq!(s, 202);
    // It stops answering, and refuses to start again on its data directory.
    let mut gone = false;
    for _ in 0..100 {
        if reqwest::Client::new().get(&t.url).send().await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "a deleted instance stops serving");
    t.stop().await.unwrap();
    let again = TestInstance::start_in(&dir.path().join("t")).await;
    let err = format!(
        "{:#}",
        again.err().expect("a deleted instance does not start")
    );
    assert!(err.contains("was deleted"), "{err}");
}

/// An HTTP/2 (prior knowledge) client connection to `addr`: the sender, and the connection's
/// future (it ends when the connection does).
async fn h2_connect(
    addr: &str,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    impl std::future::Future<Output = hyper::Result<()>> + Send + 'static,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap()
}

/// HTTP/2 has no `Connection: close`: draining sends GOAWAY instead, after which the client's
/// connection ends (its requests in flight done) and the next request opens a new one.
#[tokio::test]
async fn drain_mode_sends_http2_clients_goaway() {
    use http_body_util::{BodyExt, Empty};
    let backend = EchoBackend::start().await.unwrap();
    let t = TestInstance::start().await.unwrap();
    open_echo_api(&t, &backend).await;
    let addr = t.gateway_url().trim_start_matches("http://").to_string();
    let (mut sender, connection) = h2_connect(&addr).await;
    let mut connection = tokio::spawn(connection);
    let get = || {
        hyper::Request::get(format!("http://{addr}/echo/x"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let r = sender.send_request(get()).await.unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), &mut connection)
            .await
            .is_err(),
        "the connection stays open while the gateway is not draining"
    );

    let (s, _) = t
        .call("POST", "/drain", Some(json!({"enabled": true})))
        .await;
    assert_eq!(s, 200);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), &mut connection).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "GOAWAY ends the connection cleanly: {ended:?}"
    );
    // A new connection is served as before.
    let (mut sender, connection) = h2_connect(&addr).await;
    tokio::spawn(connection);
    assert_eq!(sender.send_request(get()).await.unwrap().status(), 200);
}
