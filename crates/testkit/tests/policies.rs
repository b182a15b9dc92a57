//! Policies through the real gateway and a real backend: each policy's effect and its failure,
//! scopes composed with <base/>, named values, fragments and on-error.

use gatehouse_testkit::{EchoBackend, TestInstance};
use serde_json::{Value, json};

struct Env {
    t: TestInstance,
    backend: EchoBackend,
    key: String,
    http: reqwest::Client,
}

/// API `echo` (path `echo`) with operations GET /items/{id}, POST /items and GET /mocked (with
/// a response example), in product `starter`, subscription `s1`.
async fn env() -> Env {
    let t = TestInstance::start().await.unwrap();
    let backend = EchoBackend::start().await.unwrap();
    t.put_ok("/apis/echo", json!({"properties": {"displayName": "Echo", "path": "echo", "serviceUrl": format!("{}/v1", backend.url), "protocols": ["http"]}})).await;
    t.operation("echo", "get-item", "GET", "/items/{id}").await;
    t.operation("echo", "create-item", "POST", "/items").await;
    t.put_ok("/apis/echo/operations/mocked", json!({"properties": {"displayName": "mocked", "method": "GET", "urlTemplate": "/mocked", "responses": [{"statusCode": 200, "representations": [{"contentType": "application/json", "examples": {"default": {"value": {"mock": true}}}}]}]}})).await;
    let (key, _) = t.starter_subscription("echo").await;
    t.gateway_caught_up().await;
    Env {
        t,
        backend,
        key,
        http: reqwest::Client::new(),
    }
}

impl Env {
    async fn policy(&self, path: &str, xml: &str) {
        let (s, b) = self
            .t
            .call(
                "PUT",
                path,
                Some(json!({"properties": {"format": "rawxml", "value": xml}})),
            )
            .await;
        assert!(s == 200 || s == 201, "PUT {path}: {s} {b}");
        self.t.gateway_caught_up().await;
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut req = self
            .http
            .request(
                method.parse().unwrap(),
                format!("{}{path}", self.t.gateway_url()),
            )
            .header("Ocp-Apim-Subscription-Key", &self.key);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let s = r.status().as_u16();
        let h = r.headers().clone();
        (s, h, r.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
        self.send("GET", path, &[], None).await
    }
}

fn echo(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not the echo backend's JSON: {body}"))
}

const API: &str = "/apis/echo/policies/policy";

#[tokio::test]
async fn headers_query_method_and_uri() {
    let e = env().await;
    e.policy(API, r#"<policies>
      <inbound>
        <base />
        <set-header name="x-region" exists-action="override"><value>@(context.Deployment.Region)</value></set-header>
        <set-header name="x-drop" exists-action="delete" />
        <set-header name="x-multi" exists-action="append"><value>a</value><value>b</value></set-header>
        <set-query-parameter name="api-version" exists-action="override"><value>2024-01-01</value></set-query-parameter>
        <rewrite-uri template="/things/{id}?full=true" />
        <set-method>POST</set-method>
      </inbound>
      <backend><base /></backend>
      <outbound>
        <base />
        <set-header name="x-served-by" exists-action="override"><value>@(context.Api.Name + "/" + context.Operation.Id)</value></set-header>
        <set-header name="x-status" exists-action="override"><value>@(context.Response.StatusCode.ToString())</value></set-header>
      </outbound>
    </policies>"#).await;
    let (s, h, b) = e
        .send("GET", "/echo/items/42?keep=1", &[("x-drop", "gone")], None)
        .await;
    assert_eq!(s, 200, "{b}");
    let v = echo(&b);
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/v1/things/42");
    assert!(v["query"].as_str().unwrap().contains("full=true"), "{v}");
    assert!(
        v["query"].as_str().unwrap().contains("keep=1"),
        "unmatched parameters are copied: {v}"
    );
    assert!(
        v["query"]
            .as_str()
            .unwrap()
            .contains("api-version=2024-01-01"),
        "{v}"
    );
    assert_eq!(v["headers"]["x-region"], "local");
    assert!(v["headers"].get("x-drop").is_none());
    assert!(
        v["headers"].get("ocp-apim-subscription-key").is_none(),
        "the key is never forwarded"
    );
    assert_eq!(h["x-served-by"], "Echo/get-item");
    assert_eq!(h["x-status"], "200");
}

#[tokio::test]
async fn scopes_compose_with_base_and_without_it() {
    let e = env().await;
    // Each scope appends its name to the header as it runs.
    let header = |name: &str, value: &str| {
        format!(
            r#"<set-header name="{name}" exists-action="override"><value>@(context.Request.Headers.GetValueOrDefault("{name}", "") + "{value};")</value></set-header>"#
        )
    };
    e.policy("/policies/policy", &format!("<policies><inbound>{}</inbound><backend><forward-request /></backend><outbound /><on-error /></policies>", header("x-order", "global"))).await;
    e.policy("/products/starter/policies/policy", &format!("<policies><inbound><base />{}</inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>", header("x-order", "product"))).await;
    e.policy(API, &format!("<policies><inbound>{}<base /></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>", header("x-order", "api"))).await;
    let (_, _, b) = e.get("/echo/items/1").await;
    assert_eq!(
        echo(&b)["headers"]["x-order"],
        "api;global;product;",
        "<base/> places the parent's section where it stands"
    );
    // An operation without <base/> drops what the broader scopes do.
    e.policy("/apis/echo/operations/get-item/policies/policy", &format!("<policies><inbound>{}</inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>", header("x-order", "operation"))).await;
    let (_, _, b) = e.get("/echo/items/1").await;
    assert_eq!(echo(&b)["headers"]["x-order"], "operation;");
    // Other operations still inherit.
    let (_, _, b) = e.send("POST", "/echo/items", &[], Some("{}")).await;
    assert_eq!(echo(&b)["headers"]["x-order"], "api;global;product;");
}

#[tokio::test]
async fn choose_variables_and_the_regional_backend_pattern() {
    let e = env().await;
    let other = EchoBackend::start().await.unwrap();
    e.policy(API, &format!(r#"<policies><inbound><base />
        <set-variable name="tier" value="@(context.Request.Headers.GetValueOrDefault("x-tier", "free"))" />
        <choose>
          <when condition="@(context.Deployment.Region == "westus")"><set-backend-service base-url="http://127.0.0.1:9/never" /></when>
          <when condition="@((string)context.Variables["tier"] == "gold")">
            <set-backend-service base-url="{}/gold" />
          </when>
          <otherwise><set-header name="x-tier" exists-action="override"><value>@($"tier:{{context.Variables["tier"]}}")</value></set-header></otherwise>
        </choose>
      </inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#, other.url)).await;
    let (_, _, b) = e
        .send("GET", "/echo/items/7", &[("x-tier", "gold")], None)
        .await;
    assert_eq!(echo(&b)["path"], "/gold/items/7", "the gold backend");
    let (_, _, b) = e.get("/echo/items/7").await;
    let v = echo(&b);
    assert_eq!(v["path"], "/v1/items/7");
    assert_eq!(v["headers"]["x-tier"], "tier:free");
}

#[tokio::test]
async fn return_response_mock_response_and_bodies() {
    let e = env().await;
    e.policy("/apis/echo/operations/get-item/policies/policy", r#"<policies><inbound><base />
        <choose><when condition="@(context.Request.MatchedParameters["id"] == "0")">
          <return-response>
            <set-status code="404" reason="Not Found" />
            <set-header name="Content-Type" exists-action="override"><value>application/json</value></set-header>
            <set-body>@("{\"error\": \"no item " + context.Request.MatchedParameters["id"] + "\"}")</set-body>
          </return-response>
        </when></choose>
      </inbound><backend><base /></backend>
      <outbound><base /><find-and-replace from="/v1" to="/hidden" /></outbound><on-error><base /></on-error></policies>"#).await;
    e.policy("/apis/echo/operations/mocked/policies/policy", r#"<policies><inbound><base /><mock-response status-code="200" content-type="application/json" /></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    e.policy("/apis/echo/operations/create-item/policies/policy", r#"<policies><inbound><base />
        <set-body>@{ var body = context.Request.Body.As<JObject>(preserveContent: true); return "{\"name\": \"" + body["name"].ToString().ToUpper() + "\"}"; }</set-body>
      </inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    let (s, h, b) = e.get("/echo/items/0").await;
    assert_eq!((s, b.as_str()), (404, "{\"error\": \"no item 0\"}"));
    assert_eq!(h["content-type"], "application/json");
    let (s, _, b) = e.get("/echo/items/5").await;
    assert_eq!(s, 200);
    assert!(
        b.contains("/hidden/items/5") && !b.contains("/v1/"),
        "find-and-replace on the response: {b}"
    );
    let (s, h, b) = e.get("/echo/mocked").await;
    assert_eq!(
        (s, b.as_str()),
        (200, "{\"mock\":true}"),
        "the operation's example, no backend call"
    );
    assert_eq!(h["content-type"], "application/json");
    let (s, _, b) = e
        .send("POST", "/echo/items", &[], Some(r#"{"name": "widget"}"#))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        echo(&b)["body"],
        r#"{"name": "WIDGET"}"#,
        "set-body from the parsed request body"
    );
}

#[tokio::test]
async fn check_header_and_ip_filter() {
    let e = env().await;
    e.policy(API, r#"<policies><inbound><base />
        <check-header name="x-client" failed-check-httpcode="401" failed-check-error-message="Client not allowed" ignore-case="true"><value>web</value><value>mobile</value></check-header>
      </inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    let (s, _, b) = e.get("/echo/items/1").await;
    assert_eq!(s, 401);
    assert_eq!(echo(&b)["message"], "Client not allowed");
    let (s, _, _) = e
        .send("GET", "/echo/items/1", &[("x-client", "tv")], None)
        .await;
    assert_eq!(s, 401);
    let (s, _, _) = e
        .send("GET", "/echo/items/1", &[("x-client", "WEB")], None)
        .await;
    assert_eq!(s, 200);

    e.policy(API, r#"<policies><inbound><base /><ip-filter action="allow"><address>10.1.1.1</address><address-range from="192.168.0.1" to="192.168.0.9" /></ip-filter></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    let (s, _, b) = e.get("/echo/items/1").await;
    assert_eq!(s, 403, "{b}");
    assert!(b.contains("127.0.0.1 is not allowed"), "{b}");
    e.policy(API, r#"<policies><inbound><base /><ip-filter action="forbid"><address-range from="127.0.0.0" to="127.255.255.255" /></ip-filter></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    assert_eq!(e.get("/echo/items/1").await.0, 403);
    e.policy(API, r#"<policies><inbound><base /><ip-filter action="allow"><address>127.0.0.1</address></ip-filter></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    assert_eq!(e.get("/echo/items/1").await.0, 200);
}

#[tokio::test]
async fn rate_limits_and_quotas_answer_as_apim() {
    let e = env().await;
    e.policy(API, r#"<policies><inbound><base />
        <rate-limit-by-key calls="2" renewal-period="60" counter-key="@(context.Request.Headers.GetValueOrDefault("x-user", "anon"))" remaining-calls-header-name="x-remaining" />
      </inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    let alice = [("x-user", "alice")];
    assert_eq!(e.send("GET", "/echo/items/1", &alice, None).await.0, 200);
    assert_eq!(e.send("GET", "/echo/items/1", &alice, None).await.0, 200);
    let (s, h, b) = e.send("GET", "/echo/items/1", &alice, None).await;
    assert_eq!(s, 429);
    let v = echo(&b);
    assert_eq!(v["statusCode"], 429);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("Rate limit is exceeded. Try again in "),
        "{v}"
    );
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(h["x-remaining"], "0");
    assert_eq!(
        e.send("GET", "/echo/items/1", &[("x-user", "bob")], None)
            .await
            .0,
        200,
        "another key, another counter"
    );

    e.policy("/products/starter/policies/policy", r#"<policies><inbound><base /><quota calls="1" renewal-period="3600" /></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    assert_eq!(
        e.send("GET", "/echo/items/1", &[("x-user", "carol")], None)
            .await
            .0,
        200
    );
    let (s, h, b) = e
        .send("GET", "/echo/items/1", &[("x-user", "dave")], None)
        .await;
    assert_eq!(s, 403);
    assert!(
        echo(&b)["message"]
            .as_str()
            .unwrap()
            .starts_with("Out of call volume quota. Quota will be replenished in 00:59:"),
        "{b}"
    );
    assert!(h.contains_key("retry-after"));
}

#[tokio::test]
async fn on_error_sees_last_error() {
    let e = env().await;
    e.policy(API, r#"<policies><inbound><base />
        <set-variable name="n" value="@(int.Parse(context.Request.Headers.GetValueOrDefault("x-n", "x")))" />
      </inbound><backend><base /></backend><outbound><base /></outbound>
      <on-error><base />
        <set-header name="x-error" exists-action="override"><value>@(context.LastError.Reason + "|" + context.LastError.Source + "|" + context.LastError.Section + "|" + context.LastError.Scope)</value></set-header>
        <set-status code="400" reason="Bad Request" />
      </on-error></policies>"#).await;
    // The operation's inbound reaches the API's through <base />: the error's scope is the
    // API's, where the failing policy is.
    e.policy(
        "/apis/echo/operations/get-item/policies/policy",
        r#"<policies><inbound><base /><set-header name="x-op" exists-action="override"><value>1</value></set-header></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#,
    )
    .await;
    let (s, h, b) = e.get("/echo/items/1").await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        h["x-error"],
        "ExpressionValueEvaluationFailure|set-variable|inbound|api"
    );
    assert!(b.contains("Expression evaluation failed"), "{b}");
    let (s, _, _) = e.send("GET", "/echo/items/1", &[("x-n", "3")], None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn named_values_fragments_and_backends() {
    let e = env().await;
    let other = EchoBackend::start().await.unwrap();
    e.t.put_ok(
        "/namedValues/greeting",
        json!({"properties": {"displayName": "greeting", "value": "hello", "secret": true}}),
    )
    .await;
    e.t.put_ok("/policyFragments/stamp", json!({"properties": {"format": "xml", "value": "<fragment><set-header name=\"x-stamp\" exists-action=\"override\"><value>{{greeting}}</value></set-header></fragment>"}})).await;
    e.t.put_ok("/backends/billing", json!({"properties": {"url": format!("{}/billing", other.url), "protocol": "http", "credentials": {"header": {"x-backend-key": ["s3cret"]}}}})).await;
    e.policy(API, r#"<policies><inbound><base /><include-fragment fragment-id="stamp" /><set-backend-service backend-id="billing" /><authentication-basic username="svc" password="{{greeting}}" /></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    let (_, _, b) = e.get("/echo/items/3").await;
    let v = echo(&b);
    assert_eq!(v["path"], "/billing/items/3");
    assert_eq!(v["headers"]["x-stamp"], "hello");
    assert_eq!(v["headers"]["x-backend-key"], "s3cret");
    assert_eq!(v["headers"]["authorization"], "Basic c3ZjOmhlbGxv");
    // A named value's new value is live with the next revision.
    e.t.put_ok(
        "/namedValues/greeting",
        json!({"properties": {"displayName": "greeting", "value": "bonjour", "secret": true}}),
    )
    .await;
    e.t.gateway_caught_up().await;
    let (_, _, b) = e.get("/echo/items/3").await;
    assert_eq!(echo(&b)["headers"]["x-stamp"], "bonjour");
    let _ = &e.backend;
}

#[tokio::test]
async fn cors_preflight_and_simple_requests() {
    let e = env().await;
    e.policy("/policies/policy", r#"<policies><inbound><cors allow-credentials="true"><allowed-origins><origin>https://app.contoso.com</origin></allowed-origins><allowed-methods preflight-result-max-age="300"><method>GET</method><method>POST</method></allowed-methods><allowed-headers><header>content-type</header><header>ocp-apim-subscription-key</header></allowed-headers><expose-headers><header>x-request-id</header></expose-headers></cors></inbound><backend><forward-request /></backend><outbound /><on-error /></policies>"#).await;
    let (s, h, _) = e
        .send(
            "OPTIONS",
            "/echo/items/1",
            &[
                ("Origin", "https://app.contoso.com"),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            None,
        )
        .await;
    // The API has no OPTIONS operation: the preflight is routed by the method it asks about,
    // needs no key, and only cors runs.
    assert_eq!(s, 200);
    assert_eq!(h["access-control-allow-origin"], "https://app.contoso.com");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(h["access-control-allow-headers"], "content-type");
    assert_eq!(h["access-control-max-age"], "300");
    let (s, h, _) = e
        .send(
            "OPTIONS",
            "/echo/items/1",
            &[
                ("Origin", "https://evil.example"),
                ("Access-Control-Request-Method", "GET"),
            ],
            None,
        )
        .await;
    assert_eq!(s, 200, "terminate-unmatched-request answers an empty 200");
    assert!(h.get("access-control-allow-origin").is_none());
    let (s, h, _) = e
        .send(
            "GET",
            "/echo/items/1",
            &[("Origin", "https://app.contoso.com")],
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["access-control-allow-origin"], "https://app.contoso.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-expose-headers"], "x-request-id");
    let (_, h, _) = e
        .send(
            "GET",
            "/echo/items/1",
            &[("Origin", "https://evil.example")],
            None,
        )
        .await;
    assert!(h.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn bad_policies_are_refused_through_the_api_with_a_position() {
    let e = env().await;
    for (xml, says) in [
        (
            "<policies><inbound><xsl-transform /></inbound></policies>",
            "policy 'xsl-transform' is not supported (line 1, column 20)",
        ),
        (
            "<policies><inbound>\n  <set-header name=\"a\"><value>@(context.Nope)</value></set-header></inbound></policies>",
            "line 2",
        ),
        (
            "<policies><inbound><set-header name=\"a\"><value>{{nope}}</value></set-header></inbound></policies>",
            "the named value 'nope' does not exist",
        ),
    ] {
        let (s, b) =
            e.t.call(
                "PUT",
                API,
                Some(json!({"properties": {"format": "rawxml", "value": xml}})),
            )
            .await;
        assert_eq!(s, 400, "{b}");
        assert!(b.to_string().contains(says), "{xml}: {b}");
    }
    let (s, _) = e.t.call("GET", API, None).await;
    assert_eq!(s, 404, "nothing was stored");
}

mod jwt {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

    const SECRET: &[u8] = b"a-test-secret-of-enough-length-32b";

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn hs256(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    async fn call(e: &Env, token: Option<&str>) -> (u16, reqwest::header::HeaderMap, String) {
        match token {
            Some(t) => {
                e.send(
                    "GET",
                    "/echo/items/1",
                    &[("Authorization", &format!("Bearer {t}"))],
                    None,
                )
                .await
            }
            None => e.get("/echo/items/1").await,
        }
    }

    #[tokio::test]
    async fn hs256_inline_key_with_audience_issuer_and_claims() {
        use base64::Engine;
        let e = env().await;
        let key = base64::engine::general_purpose::STANDARD.encode(SECRET);
        e.policy(API, &format!(r#"<policies><inbound><base />
            <validate-jwt header-name="Authorization" require-scheme="Bearer" output-token-variable-name="jwt">
              <issuer-signing-keys><key>{key}</key></issuer-signing-keys>
              <audiences><audience>api://echo</audience></audiences>
              <issuers><issuer>https://login.contoso.test/</issuer></issuers>
              <required-claims><claim name="roles" match="any"><value>reader</value><value>admin</value></claim></required-claims>
            </validate-jwt>
            <set-header name="x-sub" exists-action="override"><value>@(((JObject)context.Variables["jwt"])["sub"].ToString())</value></set-header>
          </inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#)).await;
        let good = json!({"sub": "alice", "aud": "api://echo", "iss": "https://login.contoso.test/", "exp": now() + 60, "roles": ["reader"]});
        let (s, _, b) = call(&e, Some(&hs256(good.clone()))).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(echo(&b)["headers"]["x-sub"], "alice");

        let cases: Vec<(Option<String>, &str)> = vec![
            (None, "JWT not present."),
            (Some("not.a.jwt".into()), "JWT is not valid."),
            (
                Some(hs256(
                    json!({"sub": "a", "aud": "api://echo", "iss": "https://login.contoso.test/", "exp": now() - 120, "roles": ["reader"]}),
                )),
                "expired",
            ),
            (
                Some(hs256(
                    json!({"sub": "a", "aud": "api://other", "iss": "https://login.contoso.test/", "exp": now() + 60, "roles": ["reader"]}),
                )),
                "Audience validation failed.",
            ),
            (
                Some(hs256(
                    json!({"sub": "a", "aud": "api://echo", "iss": "https://evil/", "exp": now() + 60, "roles": ["reader"]}),
                )),
                "Issuer validation failed.",
            ),
            (
                Some(hs256(
                    json!({"sub": "a", "aud": "api://echo", "iss": "https://login.contoso.test/", "exp": now() + 60, "roles": ["guest"]}),
                )),
                "'roles' claim has a value",
            ),
            (
                Some(hs256(
                    json!({"sub": "a", "aud": "api://echo", "iss": "https://login.contoso.test/", "exp": now() + 60}),
                )),
                "no 'roles' claim",
            ),
            (
                Some(
                    encode(
                        &Header::new(Algorithm::HS256),
                        &good,
                        &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
                    )
                    .unwrap(),
                ),
                "signature is invalid",
            ),
        ];
        for (token, says) in cases {
            let (s, _, b) = call(&e, token.as_deref()).await;
            assert_eq!(s, 401, "{token:?}: {b}");
            assert!(
                echo(&b)["message"].as_str().unwrap().contains(says),
                "{token:?}: {b}"
            );
        }
    }

    #[tokio::test]
    async fn rs256_inline_modulus_and_a_configured_failure_answer() {
        let e = env().await;
        let pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jwt-rs256.pem"
        ))
        .unwrap();
        let n = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jwt-rs256.n"
        ))
        .unwrap();
        e.policy(API, &format!(r#"<policies><inbound><base />
            <validate-jwt header-name="Authorization" failed-validation-httpcode="403" failed-validation-error-message="Forbidden, sorry">
              <issuer-signing-keys><key n="{}" e="AQAB" /></issuer-signing-keys>
            </validate-jwt>
          </inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#, n.trim())).await;
        let token = encode(
            &Header::new(Algorithm::RS256),
            &json!({"sub": "svc", "exp": now() + 60}),
            &EncodingKey::from_rsa_pem(&pem).unwrap(),
        )
        .unwrap();
        let (s, _, b) = call(&e, Some(&token)).await;
        assert_eq!(s, 200, "{b}");
        let (s, _, b) = call(&e, Some(&hs256(json!({"sub": "svc", "exp": now() + 60})))).await;
        assert_eq!(s, 403);
        assert_eq!(echo(&b)["message"], "Forbidden, sorry");
    }

    #[tokio::test]
    async fn es256_keys_from_an_openid_provider() {
        use base64::Engine;
        let e = env().await;
        let pair = rcgen::KeyPair::generate().unwrap();
        let raw = pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let config = json!({"issuer": "https://idp.test/", "jwks_uri": format!("{base}/keys")});
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(config) }),
            )
            .route(
                "/keys",
                axum::routing::get(move || async move { axum::Json(json!({"keys": [jwk]})) }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        e.policy(API, &format!(r#"<policies><inbound><base />
            <validate-jwt header-name="Authorization"><openid-config url="{base}/.well-known/openid-configuration" /></validate-jwt>
          </inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#)).await;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let token = encode(&header, &json!({"sub": "x", "exp": now() + 60}), &key).unwrap();
        // The gateway fetches the provider's keys when the policy is compiled.
        let mut status = 0;
        for _ in 0..100 {
            status = call(&e, Some(&token)).await.0;
            if status == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(status, 200);
        let other = rcgen::KeyPair::generate().unwrap();
        let forged = encode(
            &header,
            &json!({"sub": "x", "exp": now() + 60}),
            &EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(call(&e, Some(&forged)).await.0, 401);
    }
}

#[tokio::test]
async fn response_and_value_caches() {
    let e = env().await;
    e.policy("/apis/echo/operations/get-item/policies/policy", r#"<policies>
      <inbound><base />
        <cache-lookup vary-by-developer="false" vary-by-developer-groups="false"><vary-by-header>Accept-Language</vary-by-header><vary-by-query-parameter>v</vary-by-query-parameter></cache-lookup>
      </inbound><backend><base /></backend>
      <outbound><base /><cache-store duration="60" /></outbound><on-error><base /></on-error></policies>"#).await;
    let req_id = |b: &str| {
        echo(b)["headers"]["x-request-id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (_, _, first) = e.get("/echo/items/1?v=1").await;
    let (_, _, again) = e.get("/echo/items/1?v=1").await;
    assert_eq!(
        req_id(&first),
        req_id(&again),
        "the second answer came from the cache"
    );
    let (_, _, other_v) = e.get("/echo/items/1?v=2").await;
    assert_ne!(req_id(&first), req_id(&other_v), "vary-by-query-parameter");
    let (_, _, other_lang) = e
        .send(
            "GET",
            "/echo/items/1?v=1",
            &[("Accept-Language", "fr")],
            None,
        )
        .await;
    assert_ne!(req_id(&first), req_id(&other_lang), "vary-by-header");

    e.policy("/apis/echo/operations/create-item/policies/policy", r#"<policies>
      <inbound><base />
        <cache-lookup-value key="@("counter-" + context.Request.Headers.GetValueOrDefault("x-who", ""))" default-value="0" variable-name="seen" />
        <cache-store-value key="@("counter-" + context.Request.Headers.GetValueOrDefault("x-who", ""))" value="@((int.Parse(context.Variables.GetValueOrDefault<string>("seen", "0")) + 1).ToString())" duration="60" />
        <set-header name="x-seen" exists-action="override"><value>@(context.Variables.GetValueOrDefault<string>("seen", "?"))</value></set-header>
        <choose><when condition="@(context.Request.Headers.GetValueOrDefault("x-reset", "") == "yes")"><cache-remove-value key="@("counter-" + context.Request.Headers.GetValueOrDefault("x-who", ""))" /></when></choose>
      </inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    let seen = |b: &str| echo(b)["headers"]["x-seen"].as_str().unwrap().to_string();
    let ann = [("x-who", "ann")];
    assert_eq!(
        seen(&e.send("POST", "/echo/items", &ann, Some("{}")).await.2),
        "0"
    );
    assert_eq!(
        seen(&e.send("POST", "/echo/items", &ann, Some("{}")).await.2),
        "1"
    );
    assert_eq!(
        seen(&e.send("POST", "/echo/items", &ann, Some("{}")).await.2),
        "2"
    );
    assert_eq!(
        seen(
            &e.send("POST", "/echo/items", &[("x-who", "ben")], Some("{}"))
                .await
                .2
        ),
        "0"
    );
    e.send(
        "POST",
        "/echo/items",
        &[("x-who", "ann"), ("x-reset", "yes")],
        Some("{}"),
    )
    .await;
    assert_eq!(
        seen(&e.send("POST", "/echo/items", &ann, Some("{}")).await.2),
        "0",
        "removed"
    );
}

/// A backend that answers 503 to its first `failures` requests, then echoes; it counts requests
/// and remembers their bodies.
async fn flaky(failures: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |body: String| {
        let s = s.clone();
        async move {
            let n = {
                let mut v = s.lock().unwrap();
                v.push(body);
                v.len()
            };
            if n <= failures {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    format!("fail {n}"),
                )
            } else {
                (axum::http::StatusCode::OK, format!("ok {n}"))
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn retry_send_request_and_limit_concurrency() {
    let e = env().await;
    let (flaky_url, seen) = flaky(2).await;
    e.policy("/apis/echo/operations/create-item/policies/policy", &format!(r#"<policies><inbound><base /><set-backend-service base-url="{flaky_url}" /></inbound>
      <backend><retry condition="@(context.Response.StatusCode == 503)" count="3" interval="0" first-fast-retry="true"><forward-request timeout="10" /></retry></backend>
      <outbound><base /></outbound><on-error><base /></on-error></policies>"#)).await;
    let (s, _, b) = e.send("POST", "/echo/items", &[], Some("payload")).await;
    assert_eq!((s, b.as_str()), (200, "ok 3"), "two failures retried");
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["payload"; 3],
        "the body was sent each time"
    );

    let (recorder, calls) = flaky(0).await;
    e.policy("/apis/echo/operations/get-item/policies/policy", &format!(r#"<policies><inbound><base />
        <send-request mode="new" response-variable-name="lookup" timeout="10">
          <set-url>@("{}/lookup/" + context.Request.MatchedParameters["id"])</set-url>
          <set-method>POST</set-method>
          <set-header name="x-from" exists-action="override"><value>gateway</value></set-header>
          <set-body>question</set-body>
        </send-request>
        <set-header name="x-lookup" exists-action="override"><value>@(((IResponse)context.Variables["lookup"]).Body.As<JObject>()["path"].ToString())</value></set-header>
        <set-header name="x-lookup-status" exists-action="override"><value>@(((IResponse)context.Variables["lookup"]).StatusCode.ToString())</value></set-header>
        <send-one-way-request mode="new"><set-url>{recorder}/audit</set-url><set-method>POST</set-method><set-body>@("seen " + context.Request.MatchedParameters["id"])</set-body></send-one-way-request>
      </inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#, e.backend.url)).await;
    let (s, _, b) = e.get("/echo/items/9").await;
    assert_eq!(s, 200, "{b}");
    let v = echo(&b);
    assert_eq!(v["headers"]["x-lookup"], "/lookup/9");
    assert_eq!(v["headers"]["x-lookup-status"], "200");
    let mut recorded = false;
    for _ in 0..100 {
        if calls.lock().unwrap().iter().any(|c| c == "seen 9") {
            recorded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(recorded, "send-one-way-request reached its target");

    e.policy("/apis/echo/operations/mocked/policies/policy", &format!(r#"<policies><inbound><base /><set-backend-service base-url="{}" /><rewrite-uri template="/slow?ms=400" /></inbound>
      <backend><limit-concurrency key="slow" max-count="1"><forward-request /></limit-concurrency></backend>
      <outbound><base /></outbound><on-error><base /></on-error></policies>"#, e.backend.url)).await;
    let (a, b) = tokio::join!(e.get("/echo/mocked"), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        e.get("/echo/mocked").await
    });
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 429],
        "one slot: the second request is refused while the first runs"
    );
    assert_eq!(e.get("/echo/mocked").await.0, 200, "the slot is free again");
}

#[tokio::test]
async fn json_and_xml_conversions() {
    let e = env().await;
    e.policy("/apis/echo/operations/create-item/policies/policy", r#"<policies>
      <inbound><base /><json-to-xml apply="content-type-json" consider-accept-header="false" /></inbound>
      <backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    let (s, _, b) = e
        .send(
            "POST",
            "/echo/items",
            &[("Content-Type", "application/json")],
            Some(r#"{"name": "widget", "tags": ["a", "b"]}"#),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let v = echo(&b);
    assert_eq!(
        v["body"],
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Document><name>widget</name><tags>a</tags><tags>b</tags></Document>"
    );
    assert_eq!(v["headers"]["content-type"], "application/xml");
    // Not JSON by its content type: left alone.
    let (_, _, b) = e
        .send(
            "POST",
            "/echo/items",
            &[("Content-Type", "text/plain")],
            Some("{}"),
        )
        .await;
    assert_eq!(echo(&b)["body"], "{}");

    // A backend that answers XML, turned into JSON for a client that asks for JSON.
    let app = axum::Router::new().fallback(|| async {
        (
            [("content-type", "application/xml")],
            r#"<order id="7"><item>a</item><item>b</item></order>"#,
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xml_backend = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    e.policy("/apis/echo/operations/get-item/policies/policy", &format!(r#"<policies>
      <inbound><base /><set-backend-service base-url="{xml_backend}" /></inbound><backend><base /></backend>
      <outbound><base /><xml-to-json kind="javascript-friendly" apply="content-type-xml" consider-accept-header="true" /></outbound>
      <on-error><base /></on-error></policies>"#)).await;
    let (_, h, b) = e
        .send(
            "GET",
            "/echo/items/1",
            &[("Accept", "application/json")],
            None,
        )
        .await;
    assert_eq!(b, r#"{"order":{"@id":"7","item":["a","b"]}}"#);
    assert_eq!(h["content-type"], "application/json");
    let (_, _, b) = e
        .send(
            "GET",
            "/echo/items/1",
            &[("Accept", "application/xml")],
            None,
        )
        .await;
    assert!(
        b.starts_with("<order"),
        "consider-accept-header: XML asked, XML given: {b}"
    );
}

#[tokio::test]
async fn trace_goes_to_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut config = gatehouse_testkit::ServeConfig::ephemeral(&dir.path().join("data"));
    config.gateway.access_log = Some(log.display().to_string());
    let t = TestInstance::start_with(config).await.unwrap();
    let backend = EchoBackend::start().await.unwrap();
    t.put_ok("/apis/echo", json!({"properties": {"displayName": "Echo", "path": "echo", "serviceUrl": backend.url, "protocols": ["http"], "subscriptionRequired": false}})).await;
    t.put_ok(
        "/apis/echo/operations/get",
        json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/x"}}),
    )
    .await;
    t.put_ok("/apis/echo/policies/policy", json!({"properties": {"format": "rawxml", "value": r#"<policies><inbound><base /><trace source="orders" severity="information"><message>@("method " + context.Request.Method)</message></trace></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#}})).await;
    t.gateway_caught_up().await;
    let r = reqwest::get(format!("{}/echo/x", t.gateway_url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut line = String::new();
    for _ in 0..100 {
        line = std::fs::read_to_string(&log).unwrap_or_default();
        if line.contains("\"trace\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let record: Value = serde_json::from_str(line.lines().last().unwrap_or("{}")).unwrap();
    assert_eq!(
        record["trace"],
        json!([{"source": "orders", "message": "method GET"}]),
        "{line}"
    );
}

#[tokio::test]
async fn forward_request_follows_redirects_when_asked() {
    let e = env().await;
    let app = axum::Router::new()
        .route(
            "/old/items/{id}",
            axum::routing::get(|| async {
                (axum::http::StatusCode::FOUND, [("location", "/new")], "")
            }),
        )
        .route("/new", axum::routing::get(|| async { "arrived" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let policy = |follow: bool| {
        format!(
            r#"<policies><inbound><base /><set-backend-service base-url="{base}/old" /></inbound><backend><forward-request follow-redirects="{follow}" /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#
        )
    };
    e.policy(API, &policy(true)).await;
    let (s, _, b) = e.get("/echo/items/1").await;
    assert_eq!((s, b.as_str()), (200, "arrived"));
    e.policy(API, &policy(false)).await;
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/echo/items/1", e.t.gateway_url()))
        .header("Ocp-Apim-Subscription-Key", &e.key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        302,
        "without follow-redirects the client gets the redirect"
    );
}

#[tokio::test]
async fn rate_limit_per_api_and_operation_inside_the_subscription_limit() {
    let e = env().await;
    e.policy("/products/starter/policies/policy", r#"<policies><inbound><base />
        <rate-limit calls="100" renewal-period="60"><api name="Echo" calls="50" renewal-period="60"><operation name="get-item" calls="1" renewal-period="60" /></api></rate-limit>
      </inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    assert_eq!(e.get("/echo/items/1").await.0, 200);
    let (s, h, b) = e.get("/echo/items/1").await;
    assert_eq!(s, 429, "the operation's own limit of 1: {b}");
    assert!(h.contains_key("retry-after"));
    assert_eq!(
        e.send("POST", "/echo/items", &[], Some("{}")).await.0,
        200,
        "another operation has room"
    );
}

#[tokio::test]
async fn backend_entities_tls_checks() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let tls_backend = EchoBackend::start_tls(&ck.cert.pem(), &ck.signing_key.serialize_pem())
        .await
        .unwrap();
    let port = tls_backend.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    // The certificate's chain is trusted here (private CA); its name is "localhost".
    let mut config = gatehouse_testkit::ServeConfig::ephemeral(&dir.path().join("data"));
    config.gateway.backend_ca = Some(ca);
    let t = TestInstance::start_with(config).await.unwrap();
    t.put_ok("/apis/echo", json!({"properties": {"displayName": "Echo", "path": "echo", "serviceUrl": "http://127.0.0.1:9", "protocols": ["http"], "subscriptionRequired": false}})).await;
    t.put_ok(
        "/apis/echo/operations/get",
        json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/x"}}),
    )
    .await;
    let backend = |id: &str, tls: Value| json!({"properties": {"url": format!("https://127.0.0.1:{port}/{id}"), "protocol": "http", "tls": tls}});
    t.put_ok(
        "/backends/strict",
        backend(
            "strict",
            json!({"validateCertificateChain": true, "validateCertificateName": true}),
        ),
    )
    .await;
    t.put_ok(
        "/backends/noname",
        backend(
            "noname",
            json!({"validateCertificateChain": true, "validateCertificateName": false}),
        ),
    )
    .await;
    let use_backend = |id: &str| json!({"properties": {"format": "rawxml", "value": format!(r#"<policies><inbound><base /><set-backend-service backend-id="{id}" /></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#)}});
    let get = || async {
        reqwest::get(format!("{}/echo/x", t.gateway_url()))
            .await
            .unwrap()
    };
    t.put_ok("/apis/echo/policies/policy", use_backend("strict"))
        .await;
    t.gateway_caught_up().await;
    assert_eq!(
        get().await.status(),
        502,
        "127.0.0.1 is not the certificate's name"
    );
    t.put_ok("/apis/echo/policies/policy", use_backend("noname"))
        .await;
    t.gateway_caught_up().await;
    let r = get().await;
    assert_eq!(r.status(), 200, "validateCertificateName=false");
    assert_eq!(echo(&r.text().await.unwrap())["path"], "/noname/x");

    // An untrusted chain passes only with validateCertificateChain=false.
    let t2 = TestInstance::start().await.unwrap();
    t2.put_ok("/apis/echo", json!({"properties": {"displayName": "Echo", "path": "echo", "serviceUrl": "http://127.0.0.1:9", "protocols": ["http"], "subscriptionRequired": false}})).await;
    t2.put_ok(
        "/apis/echo/operations/get",
        json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/x"}}),
    )
    .await;
    t2.put_ok(
        "/backends/noname",
        backend(
            "noname",
            json!({"validateCertificateChain": true, "validateCertificateName": false}),
        ),
    )
    .await;
    t2.put_ok(
        "/backends/trustall",
        backend(
            "trustall",
            json!({"validateCertificateChain": false, "validateCertificateName": false}),
        ),
    )
    .await;
    let get2 = || async {
        reqwest::get(format!("{}/echo/x", t2.gateway_url()))
            .await
            .unwrap()
            .status()
    };
    t2.put_ok("/apis/echo/policies/policy", use_backend("noname"))
        .await;
    t2.gateway_caught_up().await;
    assert_eq!(get2().await, 502, "the chain is still checked");
    t2.put_ok("/apis/echo/policies/policy", use_backend("trustall"))
        .await;
    t2.gateway_caught_up().await;
    assert_eq!(get2().await, 200, "validateCertificateChain=false");
}

#[tokio::test]
async fn retries_run_out_and_send_request_fails_or_is_ignored() {
    let e = env().await;
    let (always_failing, seen) = flaky(usize::MAX).await;
    e.policy("/apis/echo/operations/create-item/policies/policy", &format!(r#"<policies><inbound><base /><set-backend-service base-url="{always_failing}" /></inbound>
      <backend><retry condition="@(context.Response.StatusCode >= 500)" count="2" interval="0"><forward-request /></retry></backend>
      <outbound><base /></outbound><on-error><base /></on-error></policies>"#)).await;
    let (s, _, b) = e.send("POST", "/echo/items", &[], Some("x")).await;
    assert_eq!(
        (s, b.as_str()),
        (503, "fail 3"),
        "the last answer after 1 + 2 attempts"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);

    let send = |ignore: bool| {
        format!(
            r#"<policies><inbound><base />
        <send-request mode="new" response-variable-name="r" timeout="2" ignore-error="{ignore}"><set-url>http://127.0.0.1:9/nothing</set-url></send-request>
        <set-header name="x-r" exists-action="override"><value>@(context.Variables["r"] == null ? "none" : "some")</value></set-header>
      </inbound><backend><base /></backend><outbound><base /></outbound>
      <on-error><base /><set-header name="x-reason" exists-action="override"><value>@(context.LastError.Reason)</value></set-header></on-error></policies>"#
        )
    };
    e.policy(API, &send(false)).await;
    let (s, h, _) = e.get("/echo/items/1").await;
    assert_eq!(s, 500);
    assert_eq!(h["x-reason"], "SendRequestFailure");
    e.policy(API, &send(true)).await;
    let (s, _, b) = e.get("/echo/items/1").await;
    assert_eq!(s, 200);
    assert_eq!(
        echo(&b)["headers"]["x-r"],
        "none",
        "ignore-error leaves the variable null"
    );
}

#[tokio::test]
async fn context_members_of_the_routed_request() {
    let e = env().await;
    // A second subscription owned by a user, to the same product.
    e.t.put_ok("/users/alice", json!({"properties": {"email": "alice@example.com", "firstName": "Alice", "lastName": "Liddell"}})).await;
    e.t.put_ok("/subscriptions/owned", json!({"properties": {"scope": "/products/starter", "displayName": "Owned", "state": "active", "ownerId": "/users/alice"}})).await;
    let (_, owned) =
        e.t.call("POST", "/subscriptions/owned/listSecrets", None)
            .await;
    let secondary = owned["secondaryKey"].as_str().unwrap().to_string();
    let members = [
        (
            "x-api",
            "context.Api.Id + \"|\" + context.Api.Path + \"|\" + context.Api.Revision + \"|\" + context.Api.IsCurrentRevision",
        ),
        (
            "x-operation",
            "context.Operation.Method + \" \" + context.Operation.UrlTemplate",
        ),
        (
            "x-product",
            "context.Product.Id + \"|\" + context.Product.Name",
        ),
        (
            "x-subscription",
            "context.Subscription.Id + \"|\" + context.Subscription.Name",
        ),
        (
            "x-key-matches",
            "(context.Subscription.Key == context.Request.Headers.GetValueOrDefault(\"Ocp-Apim-Subscription-Key\", \"\")).ToString()",
        ),
        (
            "x-user",
            "context.User == null ? \"none\" : context.User.Email + \"|\" + context.User.FirstName",
        ),
        ("x-service", "context.Deployment.ServiceName"),
        ("x-rid", "context.RequestId"),
    ];
    let sets: String = members
        .iter()
        .map(|(name, expr)| {
            format!(r#"<set-header name="{name}" exists-action="override"><value>@({expr})</value></set-header>"#)
        })
        .collect();
    e.policy(
        API,
        &format!(
            "<policies><inbound><base />{sets}</inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"
        )
        .replace('&', "&amp;"),
    )
    .await;
    // Without an owner: no user.
    let (s, _, b) = e.get("/echo/items/7").await;
    assert_eq!(s, 200, "{b}");
    let v = echo(&b);
    let h = &v["headers"];
    assert_eq!(h["x-api"], "echo|echo|1|True");
    assert_eq!(h["x-operation"], "GET /items/{id}");
    assert_eq!(h["x-product"], "starter|Starter");
    assert_eq!(h["x-subscription"], "s1|S1");
    assert_eq!(h["x-key-matches"], "True");
    assert_eq!(h["x-user"], "none");
    assert_eq!(h["x-rid"], h["x-request-id"], "{v}");
    assert!(!h["x-service"].as_str().unwrap().is_empty(), "{v}");
    // With the owned subscription's secondary key: its user, and Key is the key used.
    e.t.gateway_caught_up().await;
    let r = e
        .http
        .get(format!("{}/echo/items/7", e.t.gateway_url()))
        .header("Ocp-Apim-Subscription-Key", &secondary)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = echo(&r.text().await.unwrap());
    let h = &v["headers"];
    assert_eq!(h["x-subscription"], "owned|Owned");
    assert_eq!(h["x-user"], "alice@example.com|Alice");
    assert_eq!(h["x-key-matches"], "True");
}

#[tokio::test]
async fn forward_request_timeout_answers_504_in_time() {
    let e = env().await;
    e.t.put_ok(
        "/apis/echo/operations/hang",
        json!({"properties": {"displayName": "hang", "method": "GET", "urlTemplate": "/hang"}}),
    )
    .await;
    e.policy(
        API,
        r#"<policies><inbound><base /></inbound><backend><forward-request timeout="1" /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#,
    )
    .await;
    let started = std::time::Instant::now();
    let (s, _, b) = e.get("/echo/hang").await;
    let took = started.elapsed();
    assert_eq!(s, 504, "{b}");
    assert_eq!(echo(&b)["statusCode"], 504);
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(5),
        "the policy's 1 s timeout, not the gateway's: {took:?}"
    );
    // Other requests on the API are unaffected.
    assert_eq!(e.get("/echo/items/1").await.0, 200);
}

/// A chain that only checks the request (here a rate limit and a header check) is forwarded
/// the way a request without policies is: the backend sees the same request, the client the
/// same answer, and the checks still refuse what they refuse.
#[tokio::test]
async fn checking_policies_forward_the_request_as_without_policies() {
    let e = env().await;
    let headers = [
        ("x-tenant", "a"),
        ("x-tenant", "b"),
        ("x-request-id", "fixed-id"),
    ];
    let body = "x".repeat(70_000);
    let send = || {
        e.send(
            "POST",
            "/echo/items?b=2&subscription-key=nope&a=1",
            &headers,
            Some(&body),
        )
    };
    let (s, plain_headers, plain_body) = send().await;
    assert_eq!(s, 200, "{plain_body}");
    e.policy(API, r#"<policies><inbound><base />
        <rate-limit calls="3" renewal-period="60" />
        <check-header name="x-tenant" failed-check-httpcode="401" failed-check-error-message="No tenant" ignore-case="true" />
      </inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    let (s, checked_headers, checked_body) = send().await;
    assert_eq!(s, 200, "{checked_body}");
    let (plain, checked) = (echo(&plain_body), echo(&checked_body));
    for field in ["method", "path", "query", "headers", "body"] {
        assert_eq!(plain[field], checked[field], "{field}");
    }
    assert_eq!(
        checked["query"], "b=2&a=1",
        "the key's query parameter is not forwarded"
    );
    assert_eq!(checked["headers"]["x-request-id"], "fixed-id");
    assert_eq!(checked_headers["x-request-id"], "fixed-id");
    assert_eq!(
        plain_headers.get("content-type"),
        checked_headers.get("content-type")
    );
    // The checks still refuse: a missing header, then the limit (3 calls: the checked one
    // above, the refused one, and one more).
    let (s, _, b) = e.send("GET", "/echo/items/1", &[], None).await;
    assert_eq!((s, echo(&b)["message"].as_str()), (401, Some("No tenant")));
    let tenant = [("x-tenant", "a")];
    assert_eq!(e.send("GET", "/echo/items/1", &tenant, None).await.0, 200);
    let (s, h, _) = e.send("GET", "/echo/items/1", &tenant, None).await;
    assert_eq!(s, 429);
    assert!(h.contains_key("retry-after"));
}

/// Limits per subscription that only count (DESIGN's target: a key and a rate limit) are
/// counted without an exchange; the backend still sees the request as without policies, and
/// the limits refuse as APIM does — the tightest first, in scope order, quota with 403.
#[tokio::test]
async fn counting_only_limits_forward_the_request_as_without_policies() {
    let e = env().await;
    let headers = [("x-tenant", "a"), ("x-tenant", "b")];
    let body = "y".repeat(10_000);
    let send = || {
        e.send(
            "POST",
            "/echo/items?b=2&subscription-key=nope",
            &headers,
            Some(&body),
        )
    };
    let (s, _, plain_body) = send().await;
    assert_eq!(s, 200, "{plain_body}");
    e.policy("/products/starter/policies/policy", r#"<policies><inbound><base />
        <quota calls="4" renewal-period="3600" />
      </inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    e.policy(API, r#"<policies><inbound><base />
        <rate-limit calls="2" renewal-period="60" />
      </inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    let (s, h, counted_body) = send().await;
    assert_eq!(s, 200, "{counted_body}");
    assert!(h.contains_key("x-request-id"));
    let (plain, counted) = (echo(&plain_body), echo(&counted_body));
    for field in ["method", "path", "query", "body"] {
        assert_eq!(plain[field], counted[field], "{field}");
    }
    let mut seen = counted["headers"].clone();
    let mut before = plain["headers"].clone();
    for h in [&mut seen, &mut before] {
        h.as_object_mut().unwrap().remove("x-request-id");
        h.as_object_mut().unwrap().remove("request-id");
    }
    assert_eq!(before, seen, "the backend sees the same headers");
    assert_eq!(e.get("/echo/items/1").await.0, 200);
    let (s, h, b) = e.get("/echo/items/1").await;
    assert_eq!(s, 429, "the API's rate limit of 2: {b}");
    assert!(
        echo(&b)["message"]
            .as_str()
            .unwrap()
            .starts_with("Rate limit is exceeded. Try again in ")
    );
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    // Without the API's limit, the product's quota (4 calls, 3 counted so far) runs out.
    e.policy(API, r#"<policies><inbound><base /></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#).await;
    assert_eq!(e.get("/echo/items/1").await.0, 200);
    let (s, _, b) = e.get("/echo/items/1").await;
    assert_eq!(s, 403, "{b}");
    assert!(
        echo(&b)["message"]
            .as_str()
            .unwrap()
            .starts_with("Out of call volume quota. Quota will be replenished in "),
        "{b}"
    );
}

#[tokio::test]
async fn a_subscription_limit_keeps_its_count_over_changes_that_leave_it_in_place() {
    let e = env().await;
    // Counted without an exchange: nothing but the limit runs.
    let counted = r#"<policies><inbound><base /><rate-limit calls="3" renewal-period="60" /></inbound>
<backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#;
    // The same limit at the same place, run by the full policy path (outbound changes the
    // response).
    let full = r#"<policies><inbound><base /><rate-limit calls="3" renewal-period="60" /></inbound>
<backend><base /></backend><outbound><base /><set-header name="x-full" exists-action="override"><value>1</value></set-header></outbound><on-error><base /></on-error></policies>"#;
    // A second limit, at another place, counts apart.
    let moved = r#"<policies><inbound><base />
<rate-limit calls="3" renewal-period="60" /></inbound>
<backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#;
    e.policy(API, counted).await;
    assert_eq!(e.get("/echo/items/1").await.0, 200);
    assert_eq!(e.get("/echo/items/1").await.0, 200);
    e.policy(API, full).await;
    let (s, h, _) = e.get("/echo/items/1").await;
    assert_eq!((s, h.contains_key("x-full")), (200, true), "the third call");
    assert_eq!(
        e.get("/echo/items/1").await.0,
        429,
        "the fourth, on either path"
    );
    e.policy(API, counted).await;
    assert_eq!(e.get("/echo/items/1").await.0, 429);
    e.policy(API, moved).await;
    assert_eq!(e.get("/echo/items/1").await.0, 200, "a limit elsewhere");
}

/// A change to a named value or fragment that would leave a policy using it unable to compile
/// is refused, naming the policy; the gateway never ends up serving a broken policy.
#[tokio::test]
async fn changes_that_would_break_a_policy_are_refused() {
    let e = env().await;
    e.t.put_ok(
        "/namedValues/tier",
        json!({"properties": {"displayName": "tier", "value": "gold"}}),
    )
    .await;
    e.t.put_ok("/policyFragments/stamp", json!({"properties": {"format": "rawxml", "value": "<fragment><set-header name=\"x-stamp\"><value>{{tier}}</value></set-header></fragment>"}})).await;
    e.policy(API, "<policies><inbound><base /><include-fragment fragment-id=\"stamp\" /><set-header name=\"x-tier\"><value>@(\"{{tier}}\".ToUpper())</value></set-header></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>").await;
    let (s, _, body) = e.get("/echo/items/1").await;
    assert_eq!(s, 200);
    assert_eq!(echo(&body)["headers"]["x-tier"], "GOLD");

    // A value that breaks the expression it is substituted into.
    let (s, err) =
        e.t.call(
            "PUT",
            "/namedValues/tier",
            Some(json!({"properties": {"displayName": "tier", "value": "gold\" + ("}})),
        )
        .await;
    assert_eq!(s, 400, "{err}");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(msg.contains("/apis/echo/policies/policy"), "{msg}");
    // A fragment that nests too deeply where it is included.
    let deep = format!(
        "<fragment>{}<set-header name=\"x\"><value>1</value></set-header>{}</fragment>",
        "<choose><when condition=\"@(true)\">".repeat(31),
        "</when></choose>".repeat(31)
    );
    let (s, err) =
        e.t.call(
            "PUT",
            "/policyFragments/stamp",
            Some(json!({"properties": {"format": "rawxml", "value": deep}})),
        )
        .await;
    assert_eq!(s, 400, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("levels deep"),
        "{err}"
    );
    // Deleting what a policy uses.
    let (s, err) = e.t.call("DELETE", "/policyFragments/stamp", None).await;
    assert_eq!(s, 409, "{err}");
    let (s, _) = e.t.call("DELETE", "/namedValues/tier", None).await;
    assert_eq!(s, 409);
    // Nothing changed: the policy still runs as before.
    e.t.gateway_caught_up().await;
    let (s, _, body) = e.get("/echo/items/1").await;
    assert_eq!(s, 200);
    assert_eq!(echo(&body)["headers"]["x-stamp"], "gold");
}

/// What a policy reads of a response is held in memory, so it is bounded like a request body:
/// a backend (or a send-request target) answering more fails the request, not the gateway.
#[tokio::test]
async fn responses_a_policy_reads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = gatehouse_testkit::ServeConfig::ephemeral(dir.path());
    config.gateway.max_body_bytes = 1024 * 1024;
    let t = TestInstance::start_with(config).await.unwrap();
    let big = axum::Router::new().fallback(|| async { "x".repeat(3 * 1024 * 1024) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, big).await.unwrap() });
    t.put_ok("/apis/big", json!({"properties": {"displayName": "big", "path": "big", "serviceUrl": url, "protocols": ["http"], "subscriptionRequired": false}})).await;
    t.put_ok(
        "/apis/big/operations/get",
        json!({"properties": {"displayName": "get", "method": "GET", "urlTemplate": "/*"}}),
    )
    .await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", t.gateway_url())).send();

    // Streamed as it comes when no policy reads it: any size.
    t.gateway_caught_up().await;
    let r = get("/big/plain").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 3 * 1024 * 1024);

    // A policy reading the backend's body: 502, not a 3 MiB buffer.
    let (s, b) = t.call("PUT", "/apis/big/policies/policy", Some(json!({"properties": {"format": "rawxml", "value": "<policies><inbound><base /></inbound><backend><base /></backend><outbound><base /><set-header name=\"x-len\"><value>@(context.Response.Body.As<string>().Length.ToString())</value></set-header></outbound><on-error><base /></on-error></policies>"}}))).await;
    assert!(s == 200 || s == 201, "{b}");
    t.gateway_caught_up().await;
    let r = get("/big/read").await.unwrap();
    assert_eq!(r.status().as_u16(), 502);

    // send-request's answer too.
    let policy = format!(
        "<policies><inbound><base /><send-request mode=\"new\" response-variable-name=\"r\" timeout=\"10\"><set-url>{url}/x</set-url></send-request></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /><set-header name=\"x-reason\" exists-action=\"override\"><value>@(context.LastError.Reason)</value></set-header></on-error></policies>"
    );
    let (s, b) = t
        .call(
            "PUT",
            "/apis/big/policies/policy",
            Some(json!({"properties": {"format": "rawxml", "value": policy}})),
        )
        .await;
    assert!(s == 200 || s == 201, "{b}");
    t.gateway_caught_up().await;
    let r = get("/big/send").await.unwrap();
    assert_eq!(r.status().as_u16(), 500);
    assert_eq!(r.headers()["x-reason"], "SendRequestFailure");
}
