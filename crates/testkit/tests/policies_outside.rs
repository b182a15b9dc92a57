//! Policies that reach outside the gateway, through a real instance and real local peers: a
//! client-credentials token endpoint standing in for managed identity, an Entra-shaped OpenID
//! issuer for validate-azure-ad-token, `/metrics` for emit-metric, a file and an HTTP collector
//! for log-to-eventhub; and Liquid and wait, end to end.

use axum::extract::State;
use gatehouse_server::ServeConfig;
use gatehouse_testkit::{EchoBackend, TestInstance};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

struct Env {
    t: TestInstance,
    _backend: EchoBackend,
    key: String,
    _dir: tempfile::TempDir,
}

/// API `echo` (GET and POST /items) in product `starter`, with `config` changed by `tune`.
async fn env(tune: impl FnOnce(&mut ServeConfig)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::ephemeral(&dir.path().join("data"));
    tune(&mut config);
    let t = TestInstance::start_with(config).await.unwrap();
    let backend = EchoBackend::start().await.unwrap();
    t.put_ok("/apis/echo", json!({"properties": {"displayName": "Echo", "path": "echo", "serviceUrl": backend.url.clone(), "protocols": ["http"]}})).await;
    t.operation("echo", "get-item", "GET", "/items").await;
    t.operation("echo", "create-item", "POST", "/items").await;
    let (key, _) = t.starter_subscription("echo").await;
    Env {
        t,
        _backend: backend,
        key,
        _dir: dir,
    }
}

impl Env {
    async fn policy(&self, inbound: &str, outbound: &str) {
        let xml = format!(
            "<policies><inbound><base />{inbound}</inbound><backend><base /></backend><outbound><base />{outbound}</outbound><on-error><base /></on-error></policies>"
        );
        let (s, b) = self
            .t
            .call(
                "PUT",
                "/apis/echo/policies/policy",
                Some(json!({"properties": {"format": "rawxml", "value": xml}})),
            )
            .await;
        assert!(s == 200 || s == 201, "{s} {b}");
        self.t.gateway_caught_up().await;
    }

    async fn send(
        &self,
        method: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, String) {
        let mut req = self
            .t
            .http
            .request(
                method.parse().unwrap(),
                format!("{}/echo/items", self.t.gateway_url()),
            )
            .header("Ocp-Apim-Subscription-Key", &self.key);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// Starts an axum app on a free loopback port; its base URL.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

type Seen = Arc<Mutex<Vec<String>>>;

/// A client-credentials token endpoint: `svc` / `s3cret` get `token-N` (N counts grants).
async fn token_endpoint(seen: Seen) -> String {
    async fn grant(State(seen): State<Seen>, body: String) -> axum::response::Response {
        use axum::response::IntoResponse;
        let form: std::collections::HashMap<String, String> =
            form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect();
        let ok = form.get("grant_type").map(String::as_str) == Some("client_credentials")
            && form.get("client_id").map(String::as_str) == Some("svc")
            && form.get("client_secret").map(String::as_str) == Some("s3cret");
        if !ok {
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "invalid_client"})),
            )
                .into_response();
        }
        let mut seen = seen.lock().unwrap();
        seen.push(form.get("resource").cloned().unwrap_or_default());
        axum::Json(json!({"access_token": format!("token-{}", seen.len()), "expires_in": 3600, "token_type": "Bearer"})).into_response()
    }
    serve(
        axum::Router::new()
            .route("/token", axum::routing::post(grant))
            .with_state(seen),
    )
    .await
}

#[tokio::test]
async fn managed_identity_takes_tokens_from_the_configured_source_and_caches_them() {
    let seen: Seen = Default::default();
    let base = token_endpoint(seen.clone()).await;
    let e = env(|c| {
        c.gateway.identity = Some(gatehouse_gateway::IdentitySource::ClientCredentials {
            token_url: format!("{base}/token"),
            client_id: "svc".into(),
            client_secret: "s3cret".into(),
        })
    })
    .await;
    e.policy(
        r#"<authentication-managed-identity resource="https://storage.azure.com/" />"#,
        "",
    )
    .await;
    for _ in 0..3 {
        let (s, b) = e.send("GET", &[], None).await;
        assert_eq!(s, 200, "{b}");
        let echoed: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(echoed["headers"]["authorization"], "Bearer token-1");
    }
    assert_eq!(
        *seen.lock().unwrap(),
        ["https://storage.azure.com/"],
        "one grant, then the cached token"
    );

    // Into a variable, and inside send-request.
    e.policy(
        r#"<authentication-managed-identity resource="https://vault.azure.net" output-token-variable-name="msi" />
           <set-header name="x-token" exists-action="override"><value>@((string)context.Variables["msi"])</value></set-header>"#,
        "",
    )
    .await;
    let (s, b) = e.send("GET", &[], None).await;
    assert_eq!(s, 200, "{b}");
    let echoed: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(echoed["headers"]["x-token"], "token-2");
    assert!(echoed["headers"].get("authorization").is_none());
}

#[tokio::test]
async fn managed_identity_failures_answer_500_or_are_ignored_and_never_show_the_secret() {
    let e = env(|c| {
        c.gateway.identity = Some(gatehouse_gateway::IdentitySource::ClientCredentials {
            token_url: "http://127.0.0.1:9/token".into(),
            client_id: "svc".into(),
            client_secret: "very-secret-value".into(),
        })
    })
    .await;
    e.policy(
        r#"<authentication-managed-identity resource="https://storage.azure.com/" />"#,
        "",
    )
    .await;
    let (s, b) = e.send("GET", &[], None).await;
    assert_eq!(s, 500, "{b}");
    assert!(!b.contains("very-secret-value"), "{b}");
    e.policy(r#"<authentication-managed-identity resource="https://storage.azure.com/" ignore-error="true" />"#, "").await;
    let (s, b) = e.send("GET", &[], None).await;
    assert_eq!(s, 200, "{b}");
}

/// An Entra-shaped issuer for tenant `contoso`: its OpenID configuration and keys.
async fn entra_issuer() -> String {
    let n = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt-rs256.n"
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = json!({"issuer": format!("{base}/contoso/v2.0"), "jwks_uri": format!("{base}/contoso/discovery/v2.0/keys")});
    let jwk = json!({"kty": "RSA", "kid": "k1", "use": "sig", "n": n.trim(), "e": "AQAB"});
    let app = axum::Router::new()
        .route(
            "/contoso/v2.0/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(config) }),
        )
        .route(
            "/contoso/discovery/v2.0/keys",
            axum::routing::get(move || async move { axum::Json(json!({"keys": [jwk]})) }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn rs256(claims: Value) -> String {
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt-rs256.pem"
    ))
    .unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    encode(&header, &claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn validate_azure_ad_token_checks_tenant_issuer_signature_client_and_claims() {
    let base = entra_issuer().await;
    let authority = base.clone();
    let e = env(move |c| c.gateway.entra_authority = Some(authority)).await;
    e.policy(
        r#"<validate-azure-ad-token tenant-id="contoso" output-token-variable-name="jwt">
             <client-application-ids><application-id>11111111-1111-1111-1111-111111111111</application-id></client-application-ids>
             <audiences><audience>api://orders</audience></audiences>
             <required-claims><claim name="roles" match="any"><value>Orders.Read</value></claim></required-claims>
           </validate-azure-ad-token>"#,
        "",
    )
    .await;
    let claims = |over: Value| {
        let mut c = json!({"iss": format!("{base}/contoso/v2.0"), "aud": "api://orders", "azp": "11111111-1111-1111-1111-111111111111", "roles": ["Orders.Read"], "exp": now() + 300, "sub": "u"});
        for (k, v) in over.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let call = |token: String| {
        let e = &e;
        async move {
            e.send(
                "GET",
                &[("Authorization", &format!("Bearer {token}"))],
                None,
            )
            .await
            .0
        }
    };
    // The gateway fetches the tenant's keys when the policy is compiled.
    let good = rs256(claims(json!({})));
    let mut status = 0;
    for _ in 0..100 {
        status = call(good.clone()).await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(
        call(rs256(claims(
            json!({"azp": "22222222-2222-2222-2222-222222222222"})
        )))
        .await,
        401,
        "another client application"
    );
    assert_eq!(
        call(rs256(claims(
            json!({"iss": format!("{base}/fabrikam/v2.0")})
        )))
        .await,
        401,
        "another tenant's issuer"
    );
    assert_eq!(
        call(rs256(claims(json!({"aud": "api://other"})))).await,
        401,
        "another audience"
    );
    assert_eq!(
        call(rs256(claims(json!({"roles": ["Orders.Write"]})))).await,
        401,
        "a claim missing"
    );
    assert_eq!(
        call(rs256(claims(json!({"exp": now() - 60})))).await,
        401,
        "expired"
    );
    assert_eq!(e.send("GET", &[], None).await.0, 401, "no token");
}

#[tokio::test]
async fn emit_metric_shows_in_metrics_and_log_to_eventhub_writes_to_its_sinks() {
    let collected: Seen = Default::default();
    async fn collect(State(seen): State<Seen>, body: String) -> &'static str {
        seen.lock().unwrap().push(body);
        "ok"
    }
    let collector = serve(
        axum::Router::new()
            .route("/events", axum::routing::post(collect))
            .with_state(collected.clone()),
    )
    .await;
    let e = env(|_| {}).await;
    let file = e._dir.path().join("events.log");
    for (id, url) in [
        ("file-logger", format!("file://{}", file.display())),
        ("http-logger", format!("{collector}/events")),
    ] {
        e.t.put_ok(&format!("/loggers/{id}"), json!({"properties": {"loggerType": "azureEventHub", "credentials": {"name": "hub", "connectionString": url}}})).await;
    }
    e.policy(
        r#"<emit-metric name="Orders" value="@(2.5)" namespace="shop"><dimension name="API ID" /><dimension name="Tier" value="@(context.Request.Headers.GetValueOrDefault("X-Tier", "none"))" /></emit-metric>
           <log-to-eventhub logger-id="file-logger">@(string.Join(",", context.Request.Method, context.Api.Id))</log-to-eventhub>
           <log-to-eventhub logger-id="http-logger">@(new JObject(new JProperty("api", context.Api.Id)).ToString(Newtonsoft.Json.Formatting.None))</log-to-eventhub>
           <log-to-eventhub logger-id="no-such-logger">lost</log-to-eventhub>"#,
        "",
    )
    .await;
    for _ in 0..2 {
        assert_eq!(e.send("GET", &[("X-Tier", "gold")], None).await.0, 200);
    }
    let (s, text) = e.t.call("GET", "/metrics", None).await;
    assert_eq!(s, 200);
    let text = text.as_str().unwrap().to_string();
    assert!(text.contains(r#"gatehouse_policy_metric_sum{namespace="shop",name="Orders",api_id="echo",tier="gold"} 5"#), "{text}");
    assert!(text.contains(r#"gatehouse_policy_metric_count{namespace="shop",name="Orders",api_id="echo",tier="gold"} 2"#), "{text}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "GET,echo\nGET,echo\n"
    );
    for _ in 0..100 {
        if collected.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        *collected.lock().unwrap(),
        [r#"{"api":"echo"}"#, r#"{"api":"echo"}"#]
    );
    // The logger's connection string is a secret: never shown.
    let (_, logger) = e.t.call("GET", "/loggers/http-logger", None).await;
    assert!(!logger.to_string().contains(&collector), "{logger}");
}

#[tokio::test]
async fn liquid_templates_and_wait_run_in_the_gateway() {
    let e = env(|_| {}).await;
    e.policy(
        r#"<set-body template="liquid">{"order": {"id": "{{body.customer.purchase.identifier}}", "summary": "{{body.customer.purchase.orderShortDesc | Upcase}}", "method": "{{context.Request.Method}}", "none": "{{body.missing.field}}"}}</set-body>
           <wait for="all">
             <send-request mode="new" response-variable-name="a" timeout="20" ignore-error="false"><set-url>@(context.Api.ServiceUrl.Scheme + "://" + context.Api.ServiceUrl.Host + ":" + context.Api.ServiceUrl.Port + "/fixed")</set-url></send-request>
             <send-request mode="new" response-variable-name="b" timeout="20" ignore-error="false"><set-url>@(context.Api.ServiceUrl.Scheme + "://" + context.Api.ServiceUrl.Host + ":" + context.Api.ServiceUrl.Port + "/slow?ms=50")</set-url></send-request>
           </wait>
           <set-header name="x-both" exists-action="override"><value>@(((IResponse)context.Variables["a"]).StatusCode + "," + ((IResponse)context.Variables["b"]).StatusCode)</value></set-header>"#,
        "",
    )
    .await;
    let (s, b) = e
        .send(
            "POST",
            &[("Content-Type", "application/json")],
            Some(r#"{"customer":{"purchase":{"identifier":"p-1","orderShortDesc":"short"}}}"#),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let echoed: Value = serde_json::from_str(&b).unwrap();
    let sent: Value = serde_json::from_str(echoed["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent,
        json!({"order": {"id": "p-1", "summary": "SHORT", "method": "POST", "none": ""}})
    );
    assert_eq!(echoed["headers"]["x-both"], "200,200");
}

#[tokio::test]
async fn pools_balance_by_weight_and_priority_and_breakers_open_and_answer_503() {
    let e = env(|_| {}).await;
    let echo = e._backend.url.clone();
    let breaker = json!({"rules": [{"name": "five-hundreds", "failureCondition": {"count": 2, "interval": "PT1M", "statusCodeRanges": [{"min": 500, "max": 599}], "errorReasons": ["Server errors"]}, "tripDuration": "PT1M"}]});
    for (id, path) in [("one", "/one"), ("two", "/two"), ("three", "/three")] {
        e.t.put_ok(&format!("/backends/{id}"), json!({"properties": {"url": format!("{echo}{path}"), "protocol": "http", "circuitBreaker": breaker}})).await;
    }
    e.t.put_ok("/backends/pool", json!({"properties": {"type": "Pool", "pool": {"services": [
        {"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.ApiManagement/service/x/backends/one", "priority": 1, "weight": 3},
        {"id": "/backends/two", "priority": 1, "weight": 1},
        {"id": "/backends/three", "priority": 2}
    ]}}})).await;
    e.policy(r#"<set-backend-service backend-id="pool" />"#, "")
        .await;
    let mut hits = std::collections::HashMap::<String, usize>::new();
    for _ in 0..8 {
        let (s, b) = e.send("GET", &[], None).await;
        assert_eq!(s, 200, "{b}");
        let path = serde_json::from_str::<Value>(&b).unwrap()["path"]
            .as_str()
            .unwrap()
            .to_string();
        *hits.entry(path).or_default() += 1;
    }
    assert_eq!((hits["/one/items"], hits["/two/items"]), (6, 2), "{hits:?}");
    // `one` stops answering: two failures open its breaker; `two` takes the group's traffic.
    e.t.put_ok("/backends/one", json!({"properties": {"url": "http://127.0.0.1:9/one", "protocol": "http", "circuitBreaker": breaker}})).await;
    e.t.gateway_caught_up().await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(e.send("GET", &[], None).await.0);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s != 200).count(),
        2,
        "{statuses:?}"
    );
    assert!(
        statuses[statuses.len() - 4..].iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    // `two` too: the lower priority group, `three`, takes over.
    e.t.put_ok("/backends/two", json!({"properties": {"url": "http://127.0.0.1:9/two", "protocol": "http", "circuitBreaker": breaker}})).await;
    e.t.gateway_caught_up().await;
    for _ in 0..4 {
        e.send("GET", &[], None).await;
    }
    let (s, b) = e.send("GET", &[], None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["path"],
        "/three/items"
    );
    // And `three`: nothing is left, so 503 with the time to wait.
    e.t.put_ok("/backends/three", json!({"properties": {"url": "http://127.0.0.1:9/three", "protocol": "http", "circuitBreaker": breaker}})).await;
    e.t.gateway_caught_up().await;
    for _ in 0..2 {
        e.send("GET", &[], None).await;
    }
    let r =
        e.t.http
            .get(format!("{}/echo/items", e.t.gateway_url()))
            .header("Ocp-Apim-Subscription-Key", &e.key)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

#[tokio::test]
async fn pool_and_breaker_definitions_are_checked_when_written() {
    let e = env(|_| {}).await;
    let echo = e._backend.url.clone();
    e.t.put_ok(
        "/backends/one",
        json!({"properties": {"url": format!("{echo}/one"), "protocol": "http"}}),
    )
    .await;
    e.t.put_ok(
        "/backends/pool",
        json!({"properties": {"type": "Pool", "pool": {"services": [{"id": "/backends/one"}]}}}),
    )
    .await;
    for (body, says) in [
        (
            json!({"type": "Pool", "pool": {"services": [{"id": "/backends/pool"}]}}),
            "is a pool",
        ),
        (
            json!({"type": "Pool", "pool": {"services": [{"id": "/backends/nope"}]}}),
            "does not exist",
        ),
        (
            json!({"type": "Pool", "pool": {"services": []}}),
            "at least one backend",
        ),
        (
            json!({"type": "Pool", "url": "http://x", "pool": {"services": [{"id": "/backends/one"}]}}),
            "has no 'url'",
        ),
        (
            json!({"url": "http://x", "protocol": "http", "circuitBreaker": {"rules": [{}, {}]}}),
            "at most one",
        ),
        (
            json!({"url": "http://x", "protocol": "http", "circuitBreaker": {"rules": [{"failureCondition": {"count": 1, "interval": "1 minute", "statusCodeRanges": [{"min": 500, "max": 599}]}, "tripDuration": "PT1M"}]}}),
            "ISO 8601",
        ),
        (
            json!({"url": "http://x", "protocol": "http", "circuitBreaker": {"rules": [{"failureCondition": {"interval": "PT1M", "statusCodeRanges": [{"min": 500, "max": 599}]}, "tripDuration": "PT1M"}]}}),
            "'count' and 'percentage'",
        ),
    ] {
        let (s, b) =
            e.t.call("PUT", "/backends/bad", Some(json!({"properties": body})))
                .await;
        assert_eq!(s, 400, "{b}");
        assert!(b.to_string().contains(says), "{says}: {b}");
    }
    let (s, _) = e.t.call("GET", "/backends/bad", None).await;
    assert_eq!(s, 404, "nothing was written");
}

#[tokio::test]
async fn validation_policies_check_against_the_operations_definition() {
    let e = env(|_| {}).await;
    e.t.put_ok("/apis/echo/operations/get-item", json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/items",
        "request": {"queryParameters": [{"name": "page", "type": "integer", "required": false}], "headers": [{"name": "X-Tenant", "type": "string", "required": true}]},
        "responses": [{"statusCode": 200, "headers": [{"name": "X-Page", "type": "integer"}]}]}})).await;
    e.policy(
        r#"<validate-parameters specified-parameter-action="prevent" unspecified-parameter-action="ignore" errors-variable-name="requestErrors" />"#,
        r#"<validate-status-code unspecified-status-code-action="prevent" errors-variable-name="statusErrors" />"#,
    )
    .await;
    let get = |path: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let e = &e;
        async move {
            let mut req =
                e.t.http
                    .get(format!("{}/echo/{path}", e.t.gateway_url()))
                    .header("Ocp-Apim-Subscription-Key", &e.key);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("items?page=2", vec![("X-Tenant", "t1")]).await.0, 200);
    let (s, b) = get("items?page=two", vec![("X-Tenant", "t1")]).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("'page' is not of type integer"), "{b}");
    let (s, b) = get("items", vec![]).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("'X-Tenant' is required"), "{b}");
    // A status the operation does not declare is refused as a bad gateway.
    e.t.put_ok(
        "/apis/echo/operations/get-item",
        json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/items",
        "responses": [{"statusCode": 201}]}}),
    )
    .await;
    e.t.gateway_caught_up().await;
    let (s, b) = get("items", vec![]).await;
    assert_eq!(s, 502, "{b}");
    assert!(b.contains("status 200 is not defined"), "{b}");
    // detect: recorded in the variable, the response goes on.
    e.policy(
        "",
        r#"<validate-status-code unspecified-status-code-action="detect" errors-variable-name="statusErrors" />
           <set-header name="x-errors" exists-action="override"><value>@(((List<object>)context.Variables["statusErrors"]).Count.ToString())</value></set-header>"#,
    )
    .await;
    let r =
        e.t.http
            .get(format!("{}/echo/items", e.t.gateway_url()))
            .header("Ocp-Apim-Subscription-Key", &e.key)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-errors"], "1");
}

/// An OpenAPI description whose request and response bodies have schemas: one named in
/// `components`, one inline (nullable, as OpenAPI 3.0 writes it).
const ORDERS_OPENAPI: &str = r##"{"openapi": "3.0.1", "info": {"title": "Orders", "version": "1"},
  "paths": {"/orders": {"post": {"operationId": "create-order",
    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}}},
    "responses": {"200": {"description": "ok", "content": {"application/json": {"schema":
      {"type": "object", "required": ["method", "path"], "properties": {"method": {"type": "string", "enum": ["POST"]}, "note": {"type": "string", "nullable": true}}}}}}}}}},
  "components": {"schemas": {"Order": {"type": "object", "required": ["id", "lines"], "properties": {
    "id": {"type": "integer"}, "lines": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Line"}}}},
    "Line": {"type": "object", "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}}}}}"##;

#[tokio::test]
async fn validate_content_checks_bodies_against_the_imported_definition_and_stored_schemas() {
    let e = env(|_| {}).await;
    let backend = e._backend.url.clone();
    e.t.put_ok("/apis/orders", json!({"properties": {"path": "orders-api", "format": "openapi+json", "value": ORDERS_OPENAPI, "serviceUrl": backend, "protocols": ["http"]}})).await;
    e.t.put_ok("/products/starter/apis/orders", json!({})).await;
    // The import keeps the types, as APIM does: one schema, representations naming them.
    let (s, op) =
        e.t.call("GET", "/apis/orders/operations/create-order", None)
            .await;
    assert_eq!(s, 200, "{op}");
    let rep = &op["properties"]["request"]["representations"][0];
    assert_eq!(
        (rep["schemaId"].as_str(), rep["typeName"].as_str()),
        (Some("openapi"), Some("Order"))
    );
    let response_type = op["properties"]["responses"][0]["representations"][0]["typeName"].clone();
    assert_eq!(response_type, "CreateOrderResponse200");
    let (s, schema) = e.t.call("GET", "/apis/orders/schemas/openapi", None).await;
    assert_eq!(s, 200, "{schema}");
    assert!(schema["properties"]["document"]["components"]["schemas"]["Line"].is_object());
    let policy = r#"<policies><inbound><base /><validate-content unspecified-content-type-action="prevent" max-size="1024" size-exceeded-action="prevent" errors-variable-name="bodyErrors"><content type="application/json" validate-as="json" action="prevent" /></validate-content></inbound><backend><base /></backend><outbound><base /><validate-content unspecified-content-type-action="ignore" max-size="4096" size-exceeded-action="prevent"><content type="application/json" validate-as="json" action="prevent" /></validate-content></outbound><on-error><base /></on-error></policies>"#;
    e.t.put_ok(
        "/apis/orders/policies/policy",
        json!({"properties": {"format": "rawxml", "value": policy}}),
    )
    .await;
    e.t.gateway_caught_up().await;
    let post = |ct: &'static str, body: String| {
        let e = &e;
        async move {
            let r =
                e.t.http
                    .post(format!("{}/orders-api/orders", e.t.gateway_url()))
                    .header("Ocp-Apim-Subscription-Key", &e.key)
                    .header("Content-Type", ct)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (s, b) = post(
        "application/json",
        r#"{"id": 1, "lines": [{"sku": "a", "qty": 2}]}"#.into(),
    )
    .await;
    assert_eq!(
        s, 200,
        "a conforming body passes, and so does the echo's answer: {b}"
    );
    let (s, b) = post(
        "application/json",
        r#"{"id": "one", "lines": [{"sku": "a", "qty": 2}]}"#.into(),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("does not conform to the definition which is associated with the content type application/json"), "{b}");
    assert!(b.contains("Path: 'id'"), "{b}");
    let (s, b) = post(
        "application/json",
        r#"{"id": 1, "lines": [{"qty": 0}]}"#.into(),
    )
    .await;
    assert_eq!(
        s, 400,
        "a referenced type inside the type is checked too: {b}"
    );
    assert!(b.contains("lines.0.qty"), "{b}");
    let (s, b) = post("text/plain", "hello".into()).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b.contains("Unspecified content type text/plain is not allowed"),
        "{b}"
    );
    let (s, b) = post(
        "application/json",
        format!(r#"{{"id": 1, "lines": [], "pad": "{}"}}"#, "x".repeat(2000)),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b.contains("exceeds the configured limit of 1024 bytes"),
        "{b}"
    );

    // A stored schema of the instance, named by schema-id with a reference into it.
    let (s, b) = e.t.call("PUT", "/schemas/order-v2", Some(json!({"properties": {"schemaType": "json",
        "document": {"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"order": {"type": "object", "required": ["ref"], "properties": {"ref": {"type": "string", "pattern": "^O-[0-9]+$"}}}}}}}))).await;
    assert!(s == 200 || s == 201, "{s} {b}");
    let (s, b) =
        e.t.call(
            "PUT",
            "/schemas/broken",
            Some(json!({"properties": {"schemaType": "json", "document": {"type": 12}}})),
        )
        .await;
    assert_eq!(
        s, 400,
        "a schema that is not one is refused when written: {b}"
    );
    let policy = r##"<policies><inbound><base /><validate-content unspecified-content-type-action="prevent" max-size="1024" size-exceeded-action="prevent" errors-variable-name="bodyErrors"><content type="application/json" validate-as="json" action="detect" schema-id="order-v2" schema-ref="#/definitions/order" /></validate-content><set-header name="x-errors" exists-action="override"><value>@(context.Variables.ContainsKey("bodyErrors") ? ((List<object>)context.Variables["bodyErrors"]).Count.ToString() : "0")</value></set-header></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"##;
    e.t.put_ok(
        "/apis/orders/policies/policy",
        json!({"properties": {"format": "rawxml", "value": policy}}),
    )
    .await;
    e.t.gateway_caught_up().await;
    let (s, b) = post("application/json", r#"{"ref": "X-1"}"#.into()).await;
    assert_eq!(s, 200, "detect lets the request go on: {b}");
    let echoed: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(echoed["headers"]["x-errors"], "1", "{b}");
    let (_, b) = post("application/json", r#"{"ref": "O-17"}"#.into()).await;
    let echoed: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(echoed["headers"]["x-errors"], "0", "{b}");
    // A policy naming an XML schema is refused when written, saying why.
    let (s, b) = e.t.call("PUT", "/apis/orders/policies/policy", Some(json!({"properties": {"format": "rawxml",
        "value": r#"<policies><inbound><validate-content unspecified-content-type-action="prevent" max-size="1024" size-exceeded-action="prevent"><content type="text/xml" validate-as="xml" action="prevent" /></validate-content></inbound></policies>"#}}))).await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("XML Schema validator"), "{b}");
}

#[tokio::test]
async fn a_bandwidth_quota_counts_bytes_both_ways_and_refuses_once_spent() {
    let e = env(|_| {}).await;
    e.policy(
        r#"<quota-by-key calls="1000" bandwidth="2" renewal-period="3600" counter-key="@(context.Subscription.Id)" />"#,
        "",
    )
    .await;
    // Each exchange is ~1 KB: a 700-byte body goes out and comes back inside the echo.
    let body = "x".repeat(700);
    let mut answered = Vec::new();
    for _ in 0..4 {
        answered.push(e.send("POST", &[], Some(&body)).await);
    }
    assert_eq!(answered[0].0, 200, "{}", answered[0].1);
    assert_eq!(
        answered[1].0, 200,
        "the call that crosses the quota goes through"
    );
    let (s, b) = &answered[2];
    assert_eq!(*s, 403, "{b}");
    assert!(
        b.contains("Out of bandwidth quota. Quota will be replenished in"),
        "{b}"
    );
    assert_eq!(answered[3].0, 403);
}

#[tokio::test]
async fn an_increment_condition_on_the_response_counts_only_the_calls_it_selects() {
    let e = env(|_| {}).await;
    e.t.operation("echo", "status", "GET", "/items/status/{code}")
        .await;
    e.policy(
        r#"<rate-limit-by-key calls="2" renewal-period="60" counter-key="@(context.Subscription.Id)" increment-condition="@(context.Response.StatusCode >= 200 && context.Response.StatusCode < 300)" />"#,
        "",
    )
    .await;
    let get = |code: u16| {
        let e = &e;
        async move {
            e.t.http
                .get(format!("{}/echo/items/status/{code}", e.t.gateway_url()))
                .header("Ocp-Apim-Subscription-Key", &e.key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for _ in 0..5 {
        assert_eq!(get(500).await, 500, "failures are not counted");
    }
    assert_eq!(get(200).await, 200);
    assert_eq!(get(200).await, 200);
    assert_eq!(get(200).await, 429, "two successes spend the limit");
    assert_eq!(get(500).await, 429);
}

#[tokio::test]
async fn set_header_edits_reach_the_backend_over_the_clients_headers() {
    let e = env(|_| {}).await;
    let edits = r#"<set-header name="User-Agent" exists-action="override"><value>gatehouse-test</value></set-header>
           <set-header name="X-Drop" exists-action="delete" />
           <set-header name="Accept" exists-action="append"><value>text/plain</value></set-header>
           <set-header name="X-New" exists-action="override"><value>@(context.Request.Headers.GetValueOrDefault("X-Tier", "none"))</value></set-header>
           <set-header name="X-Count" exists-action="override"><value>@(context.Request.Headers.Count.ToString())</value></set-header>"#;
    // Edits on the client's headers as they arrived, and (with a skip, which must look at
    // them) on headers the policies listed: the backend sees the same.
    let skip =
        r#"<set-header name="X-Skipped" exists-action="skip"><value>policy</value></set-header>"#;
    for inbound in [edits.to_string(), format!("{skip}{edits}")] {
        e.policy(&inbound, "").await;
        let (s, b) = e
            .send(
                "GET",
                &[
                    ("User-Agent", "client"),
                    ("X-Drop", "1"),
                    ("Accept", "application/json"),
                    ("X-Tier", "gold"),
                    ("X-Skipped", "client"),
                ],
                None,
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let echoed: Value = serde_json::from_str(&b).unwrap();
        let h = &echoed["headers"];
        assert_eq!(h["user-agent"], "gatehouse-test", "{h}");
        assert!(h.get("x-drop").is_none(), "{h}");
        assert_eq!(
            h["accept"], "text/plain",
            "the appended value comes after the client's: {h}"
        );
        assert_eq!(h["x-new"], "gold");
        assert_eq!(h["x-skipped"], "client");
        assert!(h.get("ocp-apim-subscription-key").is_none(), "{h}");
        assert!(h["x-forwarded-for"].is_string(), "{h}");
        assert_eq!(
            h["x-count"], "7",
            "the client's six headers less X-Drop, with User-Agent and X-New, and the key: {h}"
        );
    }
}
