//! The developer portal over real HTTP, against a real instance (its gateway and an echo
//! backend): accounts, visibility, subscriptions, try-it, content and revisions, and what must
//! never happen — another user's data shown, a script run, a form posted from elsewhere.

use gatehouse_testkit::portal::Visitor;
use gatehouse_testkit::{EchoBackend, TestInstance};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// An OpenAPI document with a path parameter, a query parameter and a response example.
fn weather_openapi() -> String {
    json!({
        "openapi": "3.0.1",
        "info": {"title": "Weather", "version": "1", "description": "Forecasts for **every** city."},
        "paths": {
            "/forecast/{city}": {"get": {
                "operationId": "forecast", "summary": "Get the forecast",
                "parameters": [
                    {"name": "city", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "days", "in": "query", "schema": {"type": "integer"}, "description": "How many days"}
                ],
                "responses": {"200": {"description": "The forecast", "content": {"application/json": {"example": {"city": "Oslo", "celsius": 4}}}}}
            }},
            "/reports": {"post": {"operationId": "report", "summary": "Send a report", "responses": {"202": {"description": "Accepted"}}}}
        }
    })
    .to_string()
}

/// An instance with the Weather API in the published product `starter` (guests and developers
/// see it), forwarding to an echo backend.
async fn instance_with_catalogue() -> (TestInstance, EchoBackend) {
    let t = TestInstance::start().await.unwrap();
    let backend = EchoBackend::start().await.unwrap();
    t.put_ok("/apis/weather", json!({"properties": {"displayName": "Weather", "path": "weather", "serviceUrl": backend.url, "protocols": ["http"], "format": "openapi+json", "value": weather_openapi()}})).await;
    t.put_ok(
        "/tags/climate",
        json!({"properties": {"displayName": "climate"}}),
    )
    .await;
    t.put_ok("/apis/weather/tags/climate", json!({})).await;
    t.put_ok("/apis/internal", json!({"properties": {"displayName": "Internal ledger", "path": "ledger", "serviceUrl": backend.url, "protocols": ["http"]}})).await;
    t.put_ok("/products/starter", json!({"properties": {"displayName": "Starter", "description": "Try things out", "state": "published", "subscriptionRequired": true}})).await;
    t.put_ok("/products/starter/apis/weather", json!({})).await;
    for g in ["guests", "developers"] {
        t.put_ok(&format!("/products/starter/groups/{g}"), json!({}))
            .await;
    }
    (t, backend)
}

/// A user in the Administrators group, signed in.
async fn admin(t: &TestInstance) -> Visitor {
    t.put_ok("/users/boss", json!({"properties": {"email": "boss@example.com", "firstName": "Grace", "lastName": "Hopper", "password": PASSWORD}})).await;
    t.put_ok("/groups/administrators/users/boss", json!({}))
        .await;
    let mut v = Visitor::new(&t.portal_url());
    let p = v.sign_in("boss@example.com", PASSWORD).await;
    assert_eq!(p.status, 303, "{}", p.html);
    v
}

fn subscription_id(location: &str) -> String {
    location
        .trim_start_matches("/subscriptions/")
        .split('?')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_visitor_signs_up_finds_an_api_subscribes_and_calls_it_from_the_console() {
    let (t, _backend) = instance_with_catalogue().await;
    let mut v = Visitor::new(&t.portal_url());
    let home = v.get("/").await;
    assert_eq!(home.status, 200, "{}", home.html);
    assert!(home.html.contains("Welcome"), "{}", home.html);
    // Guests see the catalogue of the products they may see, searchable and by tag.
    let list = v.get("/apis?q=weath").await;
    assert!(list.html.contains("/apis/weather"), "{}", list.html);
    assert!(
        !list.html.contains("Internal ledger"),
        "an API in no visible product is hidden"
    );
    assert!(
        !v.get("/apis?q=nothing-like-this")
            .await
            .html
            .contains("/apis/weather\"")
    );
    assert!(
        v.get("/apis?tag=climate")
            .await
            .html
            .contains("/apis/weather")
    );
    assert_eq!(v.get("/apis/internal").await.status, 404);
    let api = v.get("/apis/weather").await;
    assert!(
        api.html.contains("<strong>every</strong>"),
        "the description is Markdown"
    );
    assert!(api.html.contains("Get the forecast"));
    let op = v.get("/apis/weather/operations/forecast").await;
    assert!(
        op.html.contains("How many days") && op.html.contains("&quot;celsius&quot;: 4"),
        "{}",
        op.html
    );
    let def = v.get("/apis/weather/definition").await;
    assert_eq!(def.status, 200);
    let doc: Value = serde_json::from_str(&def.html).unwrap();
    assert!(doc["paths"]["/forecast/{city}"]["get"].is_object(), "{doc}");

    let signed_up = v.sign_up("ada@example.com", PASSWORD).await;
    assert_eq!(signed_up.status, 303, "{}", signed_up.html);
    let cookie = signed_up
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().to_string())
        .find(|c| c.starts_with("gh_session="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    // The account is APIM's user resource, in the Developers group.
    let (s, users) = t
        .call("GET", "/users?$filter=email eq 'ada@example.com'", None)
        .await;
    assert_eq!(s, 200);
    let user_id = users["value"][0]["name"].as_str().unwrap().to_string();
    let (s, _) = t
        .call("GET", &format!("/groups/developers/users/{user_id}"), None)
        .await;
    assert_eq!(s, 200);

    v.get("/products/starter").await;
    let sub = v
        .post("/products/starter/subscribe", &[("name", "My app")])
        .await;
    assert_eq!(sub.status, 303, "{}", sub.html);
    let id = subscription_id(sub.location.as_deref().unwrap());
    let page = v.get(&format!("/subscriptions/{id}")).await;
    assert!(
        page.html.contains("My app") && page.html.contains("primary-key"),
        "{}",
        page.html
    );
    let (_, keys) = t
        .call("POST", &format!("/subscriptions/{id}/listSecrets"), None)
        .await;
    let key = keys["primaryKey"].as_str().unwrap();
    assert!(page.html.contains(key), "the user sees their key");

    // The console calls the gateway with the user's key; the backend's answer is shown.
    t.gateway_caught_up().await;
    let console = v.get("/apis/weather/operations/forecast").await;
    assert!(
        console.html.contains("My app"),
        "the user's subscription is offered"
    );
    let result = v
        .post(
            "/apis/weather/operations/forecast/try",
            &[
                ("subscription", &id),
                ("path.city", "Oslo"),
                ("query.days", "3"),
                ("headers", "X-Trace: yes"),
            ],
        )
        .await;
    assert_eq!(result.status, 200);
    assert!(result.html.contains("HTTP 200"), "{}", result.html);
    // (minijinja escapes '/' as &#x2f;)
    assert!(
        result.html.contains("forecast&#x2f;Oslo?days=3"),
        "{}",
        result.html
    );
    assert!(
        result.html.contains("&quot;x-trace&quot;: &quot;yes&quot;"),
        "{}",
        result.html
    );
    assert!(
        !result.html.contains(key),
        "the key is never shown in the result"
    );
    let mut fetch = v
        .post(
            "/apis/weather/operations/forecast/try",
            &[("subscription", &id), ("path.city", "Rome")],
        )
        .await;
    assert!(
        fetch.html.contains("<html"),
        "without the fragment header the whole page comes back"
    );
    fetch = v.get("/subscriptions").await;
    assert!(fetch.html.contains("My app"));

    // Usage: the calls show on the subscription's page once the gateway has flushed them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let p = v.get(&format!("/subscriptions/{id}")).await;
        if p.html.contains("2 calls") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "usage never showed: {}",
            p.html
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    // Regenerate, rename, cancel.
    v.post(
        &format!("/subscriptions/{id}/regenerate"),
        &[("key", "primary")],
    )
    .await;
    let (_, keys2) = t
        .call("POST", &format!("/subscriptions/{id}/listSecrets"), None)
        .await;
    assert_ne!(keys2["primaryKey"], keys["primaryKey"]);
    assert_eq!(keys2["secondaryKey"], keys["secondaryKey"]);
    v.post(
        &format!("/subscriptions/{id}/rename"),
        &[("name", "Renamed app")],
    )
    .await;
    v.post(&format!("/subscriptions/{id}/cancel"), &[]).await;
    let (_, s) = t.call("GET", &format!("/subscriptions/{id}"), None).await;
    assert_eq!(s["properties"]["displayName"], "Renamed app");
    assert_eq!(s["properties"]["state"], "cancelled");
}

#[tokio::test]
async fn products_and_apis_are_seen_by_their_groups_only() {
    let (t, _backend) = instance_with_catalogue().await;
    t.put_ok(
        "/groups/partners",
        json!({"properties": {"displayName": "Partners"}}),
    )
    .await;
    t.put_ok(
        "/products/partner",
        json!({"properties": {"displayName": "Partner deals", "state": "published"}}),
    )
    .await;
    t.put_ok("/products/partner/groups/partners", json!({}))
        .await;
    t.put_ok("/products/partner/apis/internal", json!({})).await;
    t.put_ok(
        "/products/draft",
        json!({"properties": {"displayName": "Draft product", "state": "notPublished"}}),
    )
    .await;
    t.put_ok("/products/draft/groups/developers", json!({}))
        .await;

    let mut guest = Visitor::new(&t.portal_url());
    let products = guest.get("/products").await.html;
    assert!(
        products.contains("Starter")
            && !products.contains("Partner deals")
            && !products.contains("Draft product")
    );
    let mut dev = Visitor::new(&t.portal_url());
    dev.sign_up("dev@example.com", PASSWORD).await;
    assert!(!dev.get("/products").await.html.contains("Partner deals"));
    assert_eq!(dev.get("/products/partner").await.status, 404);
    assert_eq!(dev.get("/apis/internal").await.status, 404);
    assert_eq!(dev.get("/apis/internal/operations/x").await.status, 404);
    assert_eq!(dev.get("/apis/internal/definition").await.status, 404);
    assert_eq!(
        dev.get("/products/draft").await.status,
        404,
        "unpublished products are hidden"
    );
    // Added to the partners group, the same user sees the product and its API.
    let (_, users) = t
        .call("GET", "/users?$filter=email eq 'dev@example.com'", None)
        .await;
    let uid = users["value"][0]["name"].as_str().unwrap();
    t.put_ok(&format!("/groups/partners/users/{uid}"), json!({}))
        .await;
    assert!(dev.get("/products").await.html.contains("Partner deals"));
    assert_eq!(dev.get("/apis/internal").await.status, 200);
    // Administrators see everything, published or not.
    let mut boss = admin(&t).await;
    let all = boss.get("/products").await.html;
    assert!(all.contains("Draft product") && all.contains("Partner deals"));
}

#[tokio::test]
async fn approval_and_subscription_limits_hold() {
    let (t, _backend) = instance_with_catalogue().await;
    t.put_ok("/products/gold", json!({"properties": {"displayName": "Gold", "state": "published", "approvalRequired": true, "subscriptionsLimit": 1, "terms": "Be nice."}})).await;
    t.put_ok("/products/gold/groups/developers", json!({}))
        .await;
    t.put_ok("/products/gold/apis/weather", json!({})).await;
    let mut v = Visitor::new(&t.portal_url());
    v.sign_up("eve@example.com", PASSWORD).await;
    let page = v.get("/products/gold").await;
    assert!(page.html.contains("Be nice.") && page.html.contains("approves each subscription"));
    let refused = v.post("/products/gold/subscribe", &[("name", "x")]).await;
    assert_eq!(refused.status, 400, "the terms must be accepted");
    let sub = v
        .post(
            "/products/gold/subscribe",
            &[("name", "Gold app"), ("terms", "yes")],
        )
        .await;
    let id = subscription_id(sub.location.as_deref().unwrap());
    let waiting = v.get(&format!("/subscriptions/{id}")).await;
    assert!(
        waiting.html.contains("waits for an administrator")
            && !waiting.html.contains("primary-key")
    );
    let (_, s) = t.call("GET", &format!("/subscriptions/{id}"), None).await;
    assert_eq!(s["properties"]["state"], "submitted");
    v.get("/products/gold").await;
    let second = v
        .post(
            "/products/gold/subscribe",
            &[("name", "Another"), ("terms", "yes")],
        )
        .await;
    assert_eq!(second.status, 400);
    assert!(
        second.html.contains("the most it allows"),
        "{}",
        second.html
    );
    // An administrator approves it in the portal's admin view; the key then shows.
    let mut boss = admin(&t).await;
    let overview = boss.get("/admin").await;
    assert!(overview.html.contains("Gold app") && overview.html.contains("eve@example.com"));
    let approved = boss
        .post(&format!("/admin/subscriptions/{id}/approve"), &[])
        .await;
    assert_eq!(approved.status, 303, "{}", approved.html);
    assert!(
        v.get(&format!("/subscriptions/{id}"))
            .await
            .html
            .contains("primary-key")
    );
    // A developer cannot approve.
    v.get("/subscriptions").await;
    assert_eq!(
        v.post(&format!("/admin/subscriptions/{id}/reject"), &[])
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn a_user_never_sees_or_changes_another_users_subscription() {
    let (t, _backend) = instance_with_catalogue().await;
    let mut alice = Visitor::new(&t.portal_url());
    alice.sign_up("alice@example.com", PASSWORD).await;
    alice.get("/products/starter").await;
    let sub = alice
        .post(
            "/products/starter/subscribe",
            &[("name", "Alice secret app")],
        )
        .await;
    let id = subscription_id(sub.location.as_deref().unwrap());
    let (_, keys) = t
        .call("POST", &format!("/subscriptions/{id}/listSecrets"), None)
        .await;

    let mut bob = Visitor::new(&t.portal_url());
    bob.sign_up("bob@example.com", PASSWORD).await;
    assert!(
        !bob.get("/subscriptions")
            .await
            .html
            .contains("Alice secret app")
    );
    let page = bob.get(&format!("/subscriptions/{id}")).await;
    assert_eq!(page.status, 404);
    assert!(!page.html.contains(keys["primaryKey"].as_str().unwrap()));
    bob.get("/subscriptions").await;
    for (action, fields) in [
        ("regenerate", vec![("key", "primary")]),
        ("rename", vec![("name", "pwned")]),
        ("cancel", vec![]),
    ] {
        let r = bob
            .post(&format!("/subscriptions/{id}/{action}"), &fields)
            .await;
        assert_eq!(r.status, 404, "{action}");
    }
    // Bob's console does not offer (or accept) Alice's key.
    let console = bob.get("/apis/weather/operations/forecast").await;
    assert!(!console.html.contains("Alice secret app"));
    let tried = bob
        .post(
            "/apis/weather/operations/forecast/try",
            &[("subscription", &id), ("path.city", "x")],
        )
        .await;
    assert!(
        tried
            .html
            .contains("Choose one of your active subscriptions"),
        "{}",
        tried.html
    );
    let (_, after) = t
        .call("POST", &format!("/subscriptions/{id}/listSecrets"), None)
        .await;
    assert_eq!(after, keys);
    let (_, s) = t.call("GET", &format!("/subscriptions/{id}"), None).await;
    assert_eq!(s["properties"]["state"], "active");
    assert_eq!(s["properties"]["displayName"], "Alice secret app");
}

#[tokio::test]
async fn forms_need_their_csrf_field_and_sessions_end_when_they_should() {
    let (t, _backend) = instance_with_catalogue().await;
    let mut v = Visitor::new(&t.portal_url());
    v.sign_up("sam@example.com", PASSWORD).await;
    v.get("/products/starter").await;
    let forged = v
        .post(
            "/products/starter/subscribe",
            &[("name", "x"), ("csrf", "forged")],
        )
        .await;
    assert_eq!(forged.status, 403);
    // A form from another visitor's page does not work with this visitor's cookie either.
    let mut other = Visitor::new(&t.portal_url());
    let other_csrf = other.get("/signin").await.csrf().unwrap();
    assert_eq!(
        v.post(
            "/products/starter/subscribe",
            &[("name", "x"), ("csrf", &other_csrf)]
        )
        .await
        .status,
        403
    );

    // A second session of the same account; a password change ends it, not the one changing.
    let mut second = Visitor::new(&t.portal_url());
    second.sign_in("sam@example.com", PASSWORD).await;
    assert_eq!(second.get("/profile").await.status, 200);
    v.get("/profile").await;
    let changed = v
        .post(
            "/profile/password",
            &[("current", PASSWORD), ("password", "a new long password")],
        )
        .await;
    assert_eq!(changed.status, 303);
    assert_eq!(v.get("/profile").await.status, 200);
    assert_eq!(
        second.get("/profile").await.status,
        303,
        "redirected to sign in"
    );
    // Signing out revokes the cookie even if it is replayed.
    let cookie = v.cookies.get("gh_session").cloned().unwrap();
    v.post("/signout", &[]).await;
    let mut replay = Visitor::new(&t.portal_url());
    replay.cookies.insert("gh_session".into(), cookie);
    assert_eq!(replay.get("/profile").await.status, 303);

    // Failed sign-ins: five per account, then 429 with Retry-After — even with the right password.
    let mut attacker = Visitor::new(&t.portal_url());
    attacker.get("/signin").await;
    for _ in 0..5 {
        let p = attacker
            .post(
                "/signin",
                &[("email", "sam@example.com"), ("password", "wrong password")],
            )
            .await;
        assert_eq!(p.status, 401);
        assert!(p.html.contains("The email or the password is not correct."));
    }
    let blocked = attacker
        .post(
            "/signin",
            &[
                ("email", "sam@example.com"),
                ("password", "a new long password"),
            ],
        )
        .await;
    assert_eq!(blocked.status, 429);
    assert!(blocked.headers.contains_key("retry-after"));
    // An unknown email fails the same way as a wrong password.
    let unknown = attacker
        .post(
            "/signin",
            &[("email", "nobody@example.com"), ("password", "whatever1")],
        )
        .await;
    assert!(
        unknown
            .html
            .contains("The email or the password is not correct.")
    );

    // Closing the account deletes the user and their subscriptions.
    let mut leaver = Visitor::new(&t.portal_url());
    leaver.sign_up("leaver@example.com", PASSWORD).await;
    leaver.get("/products/starter").await;
    let sub = leaver
        .post("/products/starter/subscribe", &[("name", "x")])
        .await;
    let id = subscription_id(sub.location.as_deref().unwrap());
    leaver.get("/profile").await;
    let closed = leaver
        .post("/profile/close", &[("password", PASSWORD)])
        .await;
    assert_eq!(closed.status, 200, "{}", closed.html);
    assert_eq!(
        t.call("GET", &format!("/subscriptions/{id}"), None).await.0,
        404
    );
    let (_, users) = t
        .call("GET", "/users?$filter=email eq 'leaver@example.com'", None)
        .await;
    assert_eq!(users["value"].as_array().unwrap().len(), 0);
}

const XSS: &str = "<script>alert(1)</script>";

#[tokio::test]
async fn whatever_admins_and_users_write_is_escaped_and_pages_carry_a_csp() {
    let (t, _backend) = instance_with_catalogue().await;
    let x = XSS;
    t.put_ok("/apis/weather", json!({"properties": {"displayName": format!("W {x}"), "description": format!("D {x}"), "path": "weather", "serviceUrl": "http://127.0.0.1:9", "protocols": ["http"]}})).await;
    t.put_ok("/apis/weather/operations/forecast", json!({"properties": {"displayName": format!("O {x}"), "description": format!("OD {x}"), "method": "GET", "urlTemplate": "/f/{city}", "templateParameters": [{"name": "city", "type": "string", "required": true, "description": format!("P {x}")}]}})).await;
    t.put_ok("/products/starter", json!({"properties": {"displayName": format!("P {x}"), "description": format!("PD {x}"), "terms": format!("T {x}"), "state": "published"}})).await;
    t.put_ok(
        "/tags/climate",
        json!({"properties": {"displayName": "climate"}}),
    )
    .await;
    t.put_ok("/contentTypes/page/contentItems/home", json!({"properties": {"title": format!("H {x}"), "permalink": "/", "body": format!("B {x} <img src=x onerror=alert(2)> [l](javascript:alert(3))")}})).await;
    t.put_ok("/contentTypes/page/contentItems/about", json!({"properties": {"title": format!("A {x}"), "permalink": "/about", "format": "html", "navOrder": 1, "body": format!("<p onclick=\"alert(4)\">hi</p>{x}")}})).await;
    t.put_ok(
        "/contentTypes/styles/contentItems/default",
        json!({"properties": {"siteTitle": format!("S {x}"), "footer": format!("F {x}")}}),
    )
    .await;
    let mut v = Visitor::new(&t.portal_url());
    v.get("/signup").await;
    v.post(
        "/signup",
        &[
            ("email", "x@example.com"),
            ("first_name", x),
            ("last_name", x),
            ("password", PASSWORD),
        ],
    )
    .await;
    v.get("/products/starter").await;
    let sub = v
        .post(
            "/products/starter/subscribe",
            &[("name", &format!("N {x}")), ("terms", "yes")],
        )
        .await;
    let id = subscription_id(sub.location.as_deref().unwrap());
    let mut boss = admin(&t).await;
    for (who, path) in [
        ("v", "/"),
        ("v", "/about"),
        ("v", "/apis"),
        ("v", "/apis/weather"),
        ("v", "/apis/weather/operations/forecast"),
        ("v", "/products"),
        ("v", "/products/starter"),
        ("v", "/subscriptions"),
        ("v", &format!("/subscriptions/{id}")),
        ("v", "/profile"),
        ("b", "/admin"),
        ("b", "/admin/pages/home"),
    ] {
        let page = if who == "v" {
            v.get(path).await
        } else {
            boss.get(path).await
        };
        assert_eq!(page.status, 200, "{path}: {}", page.html);
        assert!(
            !page.html.contains("<script>alert"),
            "{path} has an unescaped script"
        );
        assert!(
            !page.html.contains("<img src=x onerror")
                && !page.html.contains("<p onclick")
                && !page.html.contains("href=\"javascript:"),
            "{path}"
        );
        assert!(
            page.html.contains("&lt;script&gt;") || path == "/about" || path == "/",
            "{path} shows the text escaped"
        );
        let csp = page
            .headers
            .get("content-security-policy")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(
            page.headers.get("x-content-type-options").unwrap(),
            "nosniff"
        );
    }
    let result = v
        .post(
            "/apis/weather/operations/forecast/try",
            &[("subscription", &id), ("path.city", x)],
        )
        .await;
    assert!(!result.html.contains("<script>alert"));
}

/// A PNG of 1×1 pixel.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99=\x1d\x00\x00\x00\x00IEND\xaeB`\x82";

#[tokio::test]
async fn admins_edit_publish_and_revert_the_portals_content() {
    let (t, _backend) = instance_with_catalogue().await;
    let mut boss = admin(&t).await;
    let mut visitor = Visitor::new(&t.portal_url());
    boss.get("/admin/pages/home").await;
    let saved = boss
        .post(
            "/admin/pages/home",
            &[
                ("title", "Home"),
                ("permalink", "/"),
                ("format", "markdown"),
                ("body", "# First version"),
            ],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.html);
    assert!(
        visitor.get("/").await.html.contains("First version"),
        "before any publish, visitors see the drafts"
    );
    boss.get("/admin").await;
    assert_eq!(
        boss.post("/admin/publish", &[("description", "v1")])
            .await
            .status,
        303
    );
    boss.get("/admin/pages/home").await;
    boss.post(
        "/admin/pages/home",
        &[
            ("title", "Home"),
            ("permalink", "/"),
            ("format", "markdown"),
            ("body", "# Second version"),
        ],
    )
    .await;
    assert!(
        visitor.get("/").await.html.contains("First version"),
        "a draft is not shown once something is published"
    );
    boss.get("/admin").await;
    boss.post("/admin/publish", &[("description", "v2")]).await;
    assert!(visitor.get("/").await.html.contains("Second version"));
    // The revisions are APIM's portalRevisions; making the first current reverts.
    let (_, revs) = t.call("GET", "/portalRevisions", None).await;
    let revs = revs["value"].as_array().unwrap().clone();
    assert_eq!(revs.len(), 2);
    let first = revs
        .iter()
        .find(|r| r["properties"]["description"] == "v1")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    boss.get("/admin").await;
    assert_eq!(
        boss.post(&format!("/admin/revisions/{first}/current"), &[])
            .await
            .status,
        303
    );
    assert!(visitor.get("/").await.html.contains("First version"));
    // A new page in the navigation; a logo image; colours.
    boss.get("/admin/pages/new").await;
    let created = boss
        .post(
            "/admin/pages/new",
            &[
                ("id", "guide"),
                ("title", "Getting started"),
                ("permalink", "/getting-started"),
                ("navOrder", "1"),
                ("format", "markdown"),
                ("body", "Step one."),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.html);
    boss.get("/admin").await;
    assert_eq!(
        boss.upload("/admin/images", "logo", "image/png", PNG.to_vec())
            .await
            .status,
        303
    );
    boss.get("/admin").await;
    let fake = boss
        .upload(
            "/admin/images",
            "fake",
            "image/png",
            b"<svg onload=alert(1)>".to_vec(),
        )
        .await;
    assert_eq!(fake.status, 400);
    assert!(
        fake.html.contains("is not a image&#x2f;png image"),
        "{}",
        fake.html
    );
    boss.get("/admin").await;
    let huge = boss
        .upload(
            "/admin/images",
            "huge",
            "image/png",
            [PNG, &vec![0u8; 1024 * 1024]].concat(),
        )
        .await;
    assert_eq!(huge.status, 400, "{}", huge.html);
    boss.get("/admin").await;
    boss.post(
        "/admin/styles",
        &[
            ("siteTitle", "Contoso APIs"),
            ("primaryColor", "#aa0000"),
            ("accentColor", "#ffeeee"),
            ("logo", "logo"),
            ("footer", "© Contoso"),
        ],
    )
    .await;
    boss.get("/admin").await;
    let bad = boss
        .post(
            "/admin/styles",
            &[("siteTitle", "x"), ("primaryColor", "red")],
        )
        .await;
    assert_eq!(bad.status, 400);
    boss.get("/admin").await;
    boss.post("/admin/publish", &[("description", "v3")]).await;
    let home = visitor.get("/").await;
    assert!(
        home.html.contains("Contoso APIs")
            && home.html.contains("&#x2f;getting-started")
            && home.html.contains("&#x2f;media&#x2f;logo"),
        "{}",
        home.html
    );
    assert!(
        visitor
            .get("/getting-started")
            .await
            .html
            .contains("Step one.")
    );
    let logo = visitor.get("/media/logo").await;
    assert_eq!(logo.headers.get("content-type").unwrap(), "image/png");
    assert!(
        visitor
            .get("/static/theme.css")
            .await
            .html
            .contains("#aa0000")
    );
    // Developers have no admin view.
    let mut dev = Visitor::new(&t.portal_url());
    dev.sign_up("dev@example.com", PASSWORD).await;
    assert_eq!(dev.get("/admin").await.status, 403);
}

#[tokio::test]
async fn sign_up_can_wait_for_an_administrator_or_be_closed() {
    let (t, _backend) = instance_with_catalogue().await;
    t.put_ok("/portalsettings/signup", json!({"properties": {"enabled": true, "approval": "administrator", "termsOfService": {"enabled": true, "consentRequired": true, "text": "Our terms."}}})).await;
    let mut v = Visitor::new(&t.portal_url());
    v.get("/signup").await;
    let no_consent = v
        .post(
            "/signup",
            &[
                ("email", "p@example.com"),
                ("first_name", "P"),
                ("last_name", "Q"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(no_consent.status, 400);
    let waits = v
        .post(
            "/signup",
            &[
                ("email", "p@example.com"),
                ("first_name", "P"),
                ("last_name", "Q"),
                ("password", PASSWORD),
                ("terms", "yes"),
            ],
        )
        .await;
    assert_eq!(waits.status, 200, "{}", waits.html);
    let pending = v.sign_in("p@example.com", PASSWORD).await;
    assert_eq!(pending.status, 403);
    assert!(pending.html.contains("waits for an administrator"));
    let mut boss = admin(&t).await;
    let (_, users) = t
        .call("GET", "/users?$filter=email eq 'p@example.com'", None)
        .await;
    let uid = users["value"][0]["name"].as_str().unwrap().to_string();
    boss.get("/admin").await;
    boss.post(&format!("/admin/users/{uid}/approve"), &[]).await;
    assert_eq!(v.sign_in("p@example.com", PASSWORD).await.status, 303);
    // Weak passwords and taken emails are refused with a reason, and nothing is created.
    let mut w = Visitor::new(&t.portal_url());
    w.get("/signup").await;
    let weak = w
        .post(
            "/signup",
            &[
                ("email", "w@example.com"),
                ("first_name", "W"),
                ("last_name", "W"),
                ("password", "short"),
                ("terms", "yes"),
            ],
        )
        .await;
    assert!(weak.status == 400 && weak.html.contains("between 8 and 128"));
    let taken = w
        .post(
            "/signup",
            &[
                ("email", "P@example.com"),
                ("first_name", "W"),
                ("last_name", "W"),
                ("password", PASSWORD),
                ("terms", "yes"),
            ],
        )
        .await;
    assert!(
        taken.status == 400 && taken.html.contains("already in use"),
        "{}",
        taken.html
    );
    t.put_ok(
        "/portalsettings/signup",
        json!({"properties": {"enabled": false}}),
    )
    .await;
    assert!(w.get("/signup").await.html.contains("Sign-up is closed"));
}

#[tokio::test]
async fn portal_content_travels_in_backups_and_exports() {
    let (t, _backend) = instance_with_catalogue().await;
    let mut boss = admin(&t).await;
    boss.get("/admin/pages/home").await;
    boss.post(
        "/admin/pages/home",
        &[
            ("title", "Home"),
            ("permalink", "/"),
            ("format", "markdown"),
            ("body", "# Carried by the backup"),
        ],
    )
    .await;
    boss.get("/admin").await;
    boss.post("/admin/publish", &[("description", "before the move")])
        .await;
    // Backup → restore into another instance: the same portal.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let (s, b) = t.run_operation("backup", &json!({"storageAccount": url, "containerName": "c", "backupName": "b", "encryptionKey": "a passphrase for tests"})).await;
    assert_eq!(s, 200, "{b}");
    let other = TestInstance::start().await.unwrap();
    let (s, b) = other.run_operation("restore", &json!({"storageAccount": url, "containerName": "c", "backupName": "b", "encryptionKey": "a passphrase for tests"})).await;
    assert_eq!(s, 200, "{b}");
    let mut visitor = Visitor::new(&other.portal_url());
    assert!(
        visitor
            .get("/")
            .await
            .html
            .contains("Carried by the backup")
    );
    let (_, revs) = other.call("GET", "/portalRevisions", None).await;
    assert_eq!(
        revs["value"][0]["properties"]["description"],
        "before the move"
    );
    // The export has a portal/ folder.
    let zip = t
        .http
        .get(format!("{}/export", t.url))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let files = gatehouse_apiops::archive::read(&zip, gatehouse_apiops::archive::LIMITS).unwrap();
    assert!(
        files
            .keys()
            .any(|k| k.starts_with("portal/contentTypes/page/contentItems/home/")),
        "{:?}",
        files.keys().collect::<Vec<_>>()
    );
    assert!(files.keys().any(|k| k.starts_with("portal/revisions/")));
}

/// The portal's link in an email (`/confirm/…` or `/reset/…`), as a path.
fn link_in(mail: &str, portal: &str, kind: &str) -> String {
    let text = mail.replace("=\n", "");
    let at = text
        .find(&format!("{portal}/{kind}/"))
        .unwrap_or_else(|| panic!("no {kind} link in {mail}"));
    let link: String = text[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    link.trim_start_matches(portal).to_string()
}

#[tokio::test]
async fn with_smtp_accounts_confirm_their_email_and_reset_forgotten_passwords() {
    let smtp = gatehouse_testkit::smtp::SmtpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = gatehouse_testkit::ServeConfig::ephemeral(dir.path());
    config.smtp_url = Some(smtp.url());
    config.smtp_from = Some("portal@example.com".into());
    let t = TestInstance::start_with(config).await.unwrap();
    let portal = t.portal_url();
    let mut v = Visitor::new(&portal);
    let signed_up = v.sign_up("mia@example.com", PASSWORD).await;
    assert!(
        signed_up.html.contains("We sent you a link"),
        "{}",
        signed_up.html
    );
    assert!(
        !v.cookies.contains_key("gh_session"),
        "not signed in before confirming"
    );
    let first = smtp.wait_for("mia@example.com", 1).await;
    assert!(
        first.contains("From: portal@example.com") && first.contains("Confirm your email"),
        "{first}"
    );
    // Signing in before confirming sends a new link.
    let early = v.sign_in("mia@example.com", PASSWORD).await;
    assert_eq!(early.status, 403);
    assert!(early.html.contains("We sent you a new link"));
    smtp.wait_for("mia@example.com", 2).await;
    let confirmed = v.get(&link_in(&first, &portal, "confirm")).await;
    assert_eq!(confirmed.status, 303, "{}", confirmed.html);
    assert_eq!(v.get("/profile").await.status, 200);
    let (_, users) = t
        .call("GET", "/users?$filter=email eq 'mia@example.com'", None)
        .await;
    assert_eq!(users["value"][0]["properties"]["state"], "active");
    assert_eq!(v.get("/confirm/forged.token.x.y").await.status, 400);

    // A forgotten password: the link works once, and an unknown address gets the same answer.
    let mut forgot = Visitor::new(&portal);
    forgot.get("/reset").await;
    let asked = forgot.post("/reset", &[("email", "mia@example.com")]).await;
    assert!(asked.html.contains("If an account uses this address"));
    forgot.get("/reset").await;
    let unknown = forgot
        .post("/reset", &[("email", "nobody@example.com")])
        .await;
    assert_eq!(
        unknown.html,
        asked.html.replace("mia@example.com", "nobody@example.com")
    );
    let reset_mail = smtp.wait_for("mia@example.com", 3).await;
    let link = link_in(&reset_mail, &portal, "reset");
    forgot.get(&link).await;
    let done = forgot
        .post(&link, &[("password", "a brand new password")])
        .await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert_eq!(forgot.get("/profile").await.status, 200);
    forgot.get("/reset").await;
    assert_eq!(
        forgot.get(&link).await.status,
        400,
        "a reset link works once"
    );
    assert_eq!(
        Visitor::new(&portal)
            .sign_in("mia@example.com", "a brand new password")
            .await
            .status,
        303
    );
    assert!(
        !smtp
            .messages()
            .iter()
            .any(|m| m.contains("nobody@example.com"))
    );
    // The old session (signed in before the reset) ended with the password change.
    assert_eq!(v.get("/profile").await.status, 303);
}

#[tokio::test]
async fn the_gateway_serves_the_portal_on_its_developer_portal_host_name() {
    let (t, _backend) = instance_with_catalogue().await;
    // A global policy that refuses every API call: the portal's pages are not an API call.
    t.put_ok("/policies/policy", json!({"properties": {"value": "<policies><inbound><return-response><set-status code=\"403\" reason=\"Closed\" /></return-response></inbound><backend><forward-request /></backend><outbound /><on-error /></policies>"}})).await;
    let (s, b) = t.call("PATCH", "/", Some(json!({"properties": {"hostnameConfigurations": [{"type": "DeveloperPortal", "hostName": "developer.contoso.test"}]}}))).await;
    assert!(s == 200 || s == 202, "{s} {b}");
    t.gateway_caught_up().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let gateway = t.gateway_url();
    let get = |path: &str, host: &str| {
        http.get(format!("{gateway}{path}"))
            .header("host", host)
            .send()
    };
    for host in ["developer.contoso.test", "Developer.Contoso.TEST:443"] {
        let home = get("/", host).await.unwrap();
        assert_eq!(home.status(), 200, "{host}");
        assert!(home.headers().contains_key("content-security-policy"));
        assert!(home.text().await.unwrap().contains("Welcome"));
    }
    let apis = get("/apis?q=weather", "developer.contoso.test")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(apis.contains("Weather"), "{apis}");
    // A form posts through the gateway too (cookies and CSRF pass as they came).
    let form = get("/signin", "developer.contoso.test").await.unwrap();
    let cookie = form
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = gatehouse_testkit::portal::Page {
        status: 200,
        html: form.text().await.unwrap(),
        headers: Default::default(),
        location: None,
    };
    let posted = http
        .post(format!("{gateway}/signin"))
        .header("host", "developer.contoso.test")
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={}&email=nobody%40example.com&password=whatever1",
            page.csrf().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        posted.status(),
        401,
        "a failed sign-in, answered by the portal"
    );
    // Any other host is the gateway's as before: an API call without a key is refused, with
    // a key it meets the global policy.
    let api = get("/weather/forecast/Oslo", "api.contoso.test")
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    let (key, _) = t.subscription("k1", "/products/starter").await;
    t.gateway_caught_up().await;
    let keyed = http
        .get(format!("{gateway}/weather/forecast/Oslo"))
        .header("host", "api.contoso.test")
        .header("ocp-apim-subscription-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 403);
    assert_eq!(get("/", "api.contoso.test").await.unwrap().status(), 404);
}
