//! Named values read from a secret store (APIM's Key Vault references): the value is read when
//! the named value is written, on `refreshSecret` and on a schedule; it never shows in GET; a
//! failed read keeps the last value and says why in `keyVault.lastStatus`; policies use it.

use gatehouse_management::secret_source::SecretSource;
use gatehouse_testkit::{EchoBackend, ServeConfig, TestInstance};
use serde_json::{Value, json};

const ID: &str = "https://contoso.vault.azure.net/secrets/db-password";

#[tokio::test]
async fn a_folder_source_feeds_a_secret_named_value() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("db-password"), "first\n").unwrap();
    let mut config = ServeConfig::ephemeral(&dir.path().join("data"));
    config.secret_source = Some(SecretSource::Folder(secrets.clone()));
    let t = TestInstance::start_with(config).await.unwrap();
    let backend = EchoBackend::start().await.unwrap();

    let (s, nv) = t
        .call(
            "PUT",
            "/namedValues/db",
            Some(
                json!({"properties": {"displayName": "db", "keyVault": {"secretIdentifier": ID}}}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{nv}");
    assert_eq!(nv["properties"]["secret"], true);
    assert!(nv["properties"].get("value").is_none());
    assert_eq!(
        nv["properties"]["keyVault"]["lastStatus"]["code"], "Success",
        "{nv}"
    );
    let (_, v) = t.call("POST", "/namedValues/db/listValue", None).await;
    assert_eq!(v["value"], "first");

    // A policy uses it.
    t.api("echo", &backend.url, &["http"]).await;
    t.operation("echo", "get", "GET", "/").await;
    t.put_ok("/apis/echo", json!({"properties": {"displayName": "echo", "path": "echo", "serviceUrl": backend.url, "protocols": ["http"], "subscriptionRequired": false}})).await;
    t.put_ok("/apis/echo/policies/policy", json!({"properties": {"value": "<policies><inbound><base /><set-header name=\"x-db\" exists-action=\"override\"><value>{{db}}</value></set-header></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"}})).await;
    t.gateway_caught_up().await;
    let echoed: Value = t
        .http
        .get(format!("{}/echo/", t.gateway_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-db"], "first");

    // Rotated in the store: refreshSecret reads it, and the gateway follows.
    std::fs::write(secrets.join("db-password"), "second").unwrap();
    let (s, after) = t.call("POST", "/namedValues/db/refreshSecret", None).await;
    assert_eq!(s, 200, "{after}");
    assert_eq!(
        t.call("POST", "/namedValues/db/listValue", None).await.1["value"],
        "second"
    );
    t.gateway_caught_up().await;
    let echoed: Value = t
        .http
        .get(format!("{}/echo/", t.gateway_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["headers"]["x-db"], "second");

    // Gone from the store: the last value stays, the status says why.
    let revision = t.call("POST", "/digest", None).await.1["revision"].clone();
    std::fs::remove_file(secrets.join("db-password")).unwrap();
    let (_, failed) = t.call("POST", "/namedValues/db/refreshSecret", None).await;
    assert_eq!(
        failed["properties"]["keyVault"]["lastStatus"]["code"],
        "Failed"
    );
    assert!(
        failed["properties"]["keyVault"]["lastStatus"]["message"]
            .as_str()
            .unwrap()
            .contains("db-password")
    );
    assert_eq!(
        t.call("POST", "/namedValues/db/listValue", None).await.1["value"],
        "second"
    );
    // The same failure again writes nothing.
    let before = t.call("POST", "/digest", None).await.1["revision"].clone();
    assert_ne!(before, revision);
    t.call("POST", "/namedValues/db/refreshSecret", None).await;
    assert_eq!(t.call("POST", "/digest", None).await.1["revision"], before);

    // A plain named value has nothing to refresh.
    t.put_ok(
        "/namedValues/plain",
        json!({"properties": {"displayName": "plain", "value": "x"}}),
    )
    .await;
    assert_eq!(
        t.call("POST", "/namedValues/plain/refreshSecret", None)
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn an_https_source_is_asked_with_its_token() {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/secrets/{name}",
        get(
            |headers: axum::http::HeaderMap,
             axum::extract::Path(name): axum::extract::Path<String>| async move {
                if headers.get("authorization").and_then(|v| v.to_str().ok())
                    != Some("Bearer vault-token")
                {
                    return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({})))
                        .into_response();
                }
                axum::Json(json!({"value": format!("value-of-{name}")})).into_response()
            },
        ),
    );
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::ephemeral(&dir.path().join("data"));
    config.secret_source = Some(
        SecretSource::parse(
            &format!("http://{addr}/secrets"),
            Some("vault-token".into()),
        )
        .unwrap(),
    );
    let t = TestInstance::start_with(config).await.unwrap();
    t.put_ok("/namedValues/api-key", json!({"properties": {"displayName": "api-key", "keyVault": {"secretIdentifier": "https://x.vault.azure.net/secrets/api-key"}}})).await;
    assert_eq!(
        t.call("POST", "/namedValues/api-key/listValue", None)
            .await
            .1["value"],
        "value-of-api-key"
    );
    let (_, got) = t.call("GET", "/namedValues/api-key", None).await;
    assert!(!got.to_string().contains("value-of-api-key"), "{got}");
}
