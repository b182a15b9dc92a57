//! The developer portal in a real browser: headless Chromium driven through WebDriver
//! (Debian's `chromium` and `chromium-driver`, installed by `scripts/test-deps.sh`). A visitor
//! signs up, finds an API by search, subscribes, sees the key, calls an operation from the
//! try-it console (its script answers in place) and sees the backend's answer; a product that
//! needs approval; an administrator edits the home page and a visitor sees it; the instance
//! restored elsewhere (what a move does) shows the same portal. Screenshots of the main pages
//! are saved under `target/portal-screenshots/`.

use fantoccini::{Client, ClientBuilder, Locator};
use gatehouse_testkit::{EchoBackend, TestInstance};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery";

/// chromedriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = gatehouse_testkit::process::free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (scripts/test-deps.sh installs Debian's chromium-driver)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, port }
    }

    async fn browser(&self, profile: &std::path::Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.display())],
            }),
        );
        ClientBuilder::rustls()
            .expect("a TLS config")
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/portal-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn fill(c: &Client, css: &str, text: &str) {
    let e = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The page's text; empty while a navigation replaces the page.
async fn body(c: &Client) -> String {
    match c.find(Locator::Css("body")).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the page's text contains `needle`.
async fn wait_text(c: &Client, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = body(c).await;
        if text.contains(needle) {
            return;
        }
        assert!(Instant::now() < deadline, "'{needle}' never showed: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn catalogue(t: &TestInstance, backend: &EchoBackend) {
    let spec = json!({
        "openapi": "3.0.1", "info": {"title": "Weather", "version": "1", "description": "Forecasts for every city."},
        "paths": {"/forecast/{city}": {"get": {"operationId": "forecast", "summary": "Get the forecast",
            "parameters": [{"name": "city", "in": "path", "required": true, "schema": {"type": "string"}},
                           {"name": "days", "in": "query", "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "The forecast", "content": {"application/json": {"example": {"city": "Oslo", "celsius": 4}}}}}}}}
    });
    t.put_ok("/apis/weather", json!({"properties": {"displayName": "Weather", "path": "weather", "serviceUrl": backend.url, "protocols": ["http"], "format": "openapi+json", "value": spec.to_string()}})).await;
    t.put_ok("/apis/billing", json!({"properties": {"displayName": "Billing", "description": "Invoices and payments", "path": "billing", "serviceUrl": backend.url, "protocols": ["http"]}})).await;
    t.put_ok("/products/starter", json!({"properties": {"displayName": "Starter", "description": "Everything to get going", "state": "published"}})).await;
    t.put_ok("/products/starter/apis/weather", json!({})).await;
    t.put_ok("/products/starter/apis/billing", json!({})).await;
    t.put_ok("/products/gold", json!({"properties": {"displayName": "Gold", "description": "Higher limits, reviewed by us", "state": "published", "approvalRequired": true}})).await;
    t.put_ok("/products/gold/apis/weather", json!({})).await;
    for p in ["starter", "gold"] {
        for g in ["guests", "developers"] {
            t.put_ok(&format!("/products/{p}/groups/{g}"), json!({}))
                .await;
        }
    }
    t.put_ok("/users/boss", json!({"properties": {"email": "boss@example.com", "firstName": "Grace", "lastName": "Hopper", "password": PASSWORD}})).await;
    t.put_ok("/groups/administrators/users/boss", json!({}))
        .await;
}

#[tokio::test]
async fn a_visitor_and_an_administrator_use_the_portal_in_a_browser() {
    let t = TestInstance::start().await.unwrap();
    let backend = EchoBackend::start().await.unwrap();
    catalogue(&t, &backend).await;
    t.gateway_caught_up().await;
    let portal = t.portal_url();
    let driver = Driver::start();
    let profiles = tempfile::tempdir().unwrap();
    let c = driver.browser(&profiles.path().join("visitor")).await;

    c.goto(&portal).await.unwrap();
    wait_text(&c, "Welcome").await;
    shot(&c, "home").await;
    click(&c, "a.button[href='/signup']").await;
    fill(&c, "#email", "ada@example.com").await;
    fill(&c, "#first", "Ada").await;
    fill(&c, "#last", "Lovelace").await;
    fill(&c, "#password", PASSWORD).await;
    click(&c, "main form button[type=submit]").await;
    wait_text(&c, "Subscriptions").await;

    // Search the catalogue.
    fill(&c, "#q", "forecast").await;
    click(&c, "form.search button").await;
    wait_text(&c, "1 of 2 APIs").await;
    shot(&c, "apis").await;
    click(&c, "a[href='/apis/weather']").await;
    wait_text(&c, "Get the forecast").await;

    // Subscribe to Starter; the key shows.
    c.goto(&format!("{portal}/products/starter")).await.unwrap();
    fill(&c, "#name", "Ada's app").await;
    click(&c, "main form button[type=submit]").await;
    wait_text(&c, "Your subscription was created.").await;
    let key = text_of(&c, "#primary-key").await;
    assert_eq!(key.len(), 32, "a subscription key: {key}");
    shot(&c, "subscription").await;

    // The console sends the request through the gateway and shows the answer in place.
    c.goto(&format!("{portal}/apis/weather/operations/forecast"))
        .await
        .unwrap();
    fill(&c, "input[name='path.city']", "Oslo").await;
    fill(&c, "input[name='query.days']", "3").await;
    let before = c.current_url().await.unwrap();
    click(&c, "#tryit-form button[type=submit]").await;
    wait_text(&c, "HTTP 200 OK").await;
    let result = text_of(&c, "#tryit-result").await;
    assert!(
        result.contains("\"path\": \"/forecast/Oslo\"") && result.contains("days=3"),
        "{result}"
    );
    // 200 from an API that requires a subscription: the gateway took the user's key (and,
    // as always, did not pass it on to the backend).
    assert!(!result.contains(&key), "{result}");
    assert_eq!(
        c.current_url().await.unwrap(),
        before,
        "the script answered in place"
    );
    shot(&c, "try-it").await;

    // Gold needs an administrator's approval.
    c.goto(&format!("{portal}/products/gold")).await.unwrap();
    fill(&c, "#name", "Ada gold").await;
    click(&c, "main form button[type=submit]").await;
    wait_text(&c, "waits for an administrator's approval").await;
    let waiting = c.current_url().await.unwrap();

    // The administrator approves it and edits the home page in their own browser.
    let admin = driver.browser(&profiles.path().join("admin")).await;
    admin.goto(&format!("{portal}/signin")).await.unwrap();
    fill(&admin, "#email", "boss@example.com").await;
    fill(&admin, "#password", PASSWORD).await;
    click(&admin, "main form button[type=submit]").await;
    wait_text(&admin, "Sign out").await;
    admin.goto(&format!("{portal}/admin")).await.unwrap();
    wait_text(&admin, "Ada gold").await;
    click(&admin, "form[action$='/approve'] button").await;
    wait_text(&admin, "Approved.").await;
    admin
        .goto(&format!("{portal}/admin/pages/home"))
        .await
        .unwrap();
    fill(
        &admin,
        "#page-body",
        "# Welcome to Contoso\n\nOur APIs, one key.",
    )
    .await;
    click(&admin, "main form button[type=submit]").await;
    wait_text(&admin, "saved as a draft").await;
    fill(&admin, "#description", "New home page").await;
    click(&admin, "form[action='/admin/publish'] button").await;
    wait_text(&admin, "Published").await;
    shot(&admin, "admin").await;
    admin.close().await.unwrap();

    c.goto(waiting.as_str()).await.unwrap();
    wait_text(&c, "Primary key").await;
    c.goto(&portal).await.unwrap();
    wait_text(&c, "Welcome to Contoso").await;

    // The instance restored elsewhere — a move's backup and restore — shows the same portal.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    let params = json!({"storageAccount": url, "containerName": "c", "backupName": "b", "encryptionKey": "a passphrase for tests"});
    assert_eq!(t.run_operation("backup", &params).await.0, 200);
    let moved = TestInstance::start().await.unwrap();
    assert_eq!(moved.run_operation("restore", &params).await.0, 200);
    c.goto(&moved.portal_url()).await.unwrap();
    wait_text(&c, "Welcome to Contoso").await;
    c.goto(&format!("{}/signin", moved.portal_url()))
        .await
        .unwrap();
    fill(&c, "#email", "ada@example.com").await;
    fill(&c, "#password", PASSWORD).await;
    click(&c, "main form button[type=submit]").await;
    wait_text(&c, "Sign out").await;
    c.goto(&format!("{}/subscriptions", moved.portal_url()))
        .await
        .unwrap();
    wait_text(&c, "Ada's app").await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn an_employee_signs_in_through_the_company_identity_provider() {
    let t = TestInstance::start().await.unwrap();
    let portal = t.portal_url();
    let idp = gatehouse_testkit::oidc::OidcProvider::start(
        "gatehouse-portal",
        "an idp client secret",
        &format!("{portal}/oidc/aad/callback"),
    );
    // APIM's identity provider resource; `authority` as a URL names the company's own issuer.
    t.put_ok("/identityProviders/aad", json!({"properties": {"clientId": "gatehouse-portal", "clientSecret": "an idp client secret", "authority": idp.issuer}})).await;
    // An existing account with the same (verified) email gets the identity linked.
    t.put_ok("/users/bob", json!({"properties": {"email": "bob@idp.example.com", "firstName": "Bob", "lastName": "Builder", "password": PASSWORD}})).await;
    let driver = Driver::start();
    let profiles = tempfile::tempdir().unwrap();
    for (login, expected_name) in [("alice", "Alice Federated"), ("bob", "Bob Builder")] {
        let c = driver.browser(&profiles.path().join(login)).await;
        c.goto(&format!("{portal}/signin?next=/subscriptions"))
            .await
            .unwrap();
        click(&c, "a[href^='/oidc/aad/start']").await;
        // The provider's own login page, then its consent page.
        fill(&c, "input[name=login]", login).await;
        fill(&c, "input[name=password]", "anything").await;
        click(&c, "button[type=submit]").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c.current_url().await.unwrap().as_str().starts_with(&portal) {
            if let Ok(button) = c.find(Locator::Css("button[type=submit]")).await {
                let _ = button.click().await;
            }
            assert!(
                Instant::now() < deadline,
                "never came back from the provider: {}",
                body(&c).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        wait_text(&c, "Your subscriptions").await;
        c.goto(&format!("{portal}/profile")).await.unwrap();
        wait_text(&c, expected_name).await;
        wait_text(&c, &format!("{login}@idp.example.com")).await;
        c.close().await.unwrap();
    }
    let (_, users) = t
        .call(
            "GET",
            "/users?$filter=email eq 'alice@idp.example.com'",
            None,
        )
        .await;
    assert_eq!(
        users["value"][0]["properties"]["identities"],
        json!([{"provider": "aad", "id": "alice"}])
    );
    let (_, bob) = t.call("GET", "/users/bob", None).await;
    assert_eq!(
        bob["properties"]["identities"],
        json!([{"provider": "aad", "id": "bob"}])
    );
    // A forged callback (no flow cookie, made-up state) is refused.
    let forged = reqwest::get(format!("{portal}/oidc/aad/callback?code=x&state=y"))
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
}
