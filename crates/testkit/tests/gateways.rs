//! APIM's self-hosted gateway resources on the primary: gateways with their location, the APIs
//! they serve, host names and trusted CAs; keys, regeneration and tokens in APIM's format.

use gatehouse_management::gateway_tokens::{self, TokenError};
use gatehouse_testkit::TestInstance;
use serde_json::json;

#[tokio::test]
async fn gateways_their_apis_keys_and_tokens() {
    let t = TestInstance::start().await.unwrap();
    let (s, e) = t
        .call(
            "PUT",
            "/gateways/managed",
            Some(json!({"properties": {"locationData": {"name": "x"}}})),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = t
        .call(
            "PUT",
            "/gateways/gw1",
            Some(json!({"properties": {"description": "d"}})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        e["error"]["details"][0]["target"], "locationData.name",
        "{e}"
    );
    let (s, e) = t
        .call(
            "PUT",
            "/gateways/gw1",
            Some(json!({"properties": {"locationData": {"city": "Paris"}}})),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("locationData.name"),
        "{e}"
    );
    let (s, g) = t
        .call("PUT", "/gateways/gw1", Some(json!({"properties": {"locationData": {"name": "westeurope", "city": "Amsterdam"}, "description": "Edge"}})))
        .await;
    assert_eq!(s, 201, "{g}");
    assert!(
        g["properties"].get("primaryKey").is_none(),
        "no key in a GET: {g}"
    );

    t.put_ok(
        "/apis/echo",
        json!({"properties": {"displayName": "Echo", "path": "echo"}}),
    )
    .await;
    let (s, api) = t
        .call(
            "PUT",
            "/gateways/gw1/apis/echo",
            Some(json!({"properties": {"provisioningState": "created"}})),
        )
        .await;
    assert_eq!(s, 201, "{api}");
    assert_eq!(
        api["properties"]["path"], "echo",
        "the API's contract: {api}"
    );
    let (_, list) = t.call("GET", "/gateways/gw1/apis", None).await;
    assert_eq!(list["value"][0]["name"], "echo");
    t.put_ok(
        "/gateways/gw1/hostnameConfigurations/default",
        json!({"properties": {"hostname": "*", "http2Enabled": true}}),
    )
    .await;

    let (_, keys) = t.call("POST", "/gateways/gw1/listKeys", None).await;
    let primary = keys["primary"].as_str().unwrap().to_string();
    assert_eq!(primary.len(), 32);
    let expiry = (time::OffsetDateTime::now_utc() + time::Duration::days(7))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (s, token) = t
        .call(
            "POST",
            "/gateways/gw1/generateToken",
            Some(json!({"keyType": "primary", "expiry": expiry})),
        )
        .await;
    assert_eq!(s, 200, "{token}");
    let value = token["value"].as_str().unwrap().to_string();
    let parts: Vec<&str> = value.splitn(3, '&').collect();
    assert_eq!(parts[0], "gw1");
    assert_eq!(parts[1].len(), 12);
    let store = &t.instance.as_ref().unwrap().store;
    let now = time::OffsetDateTime::now_utc();
    let verify = |v: &str| {
        store
            .read(|r| -> Result<_, gatehouse_store::StoreError> {
                Ok(gateway_tokens::verify(r, v, now))
            })
            .unwrap()
    };
    assert_eq!(verify(&value), Ok("gw1".to_string()));
    assert_eq!(
        verify("gw1&202001010000&AAAA"),
        Err(TokenError::Expired("202001010000".into()))
    );
    assert_eq!(verify("nope"), Err(TokenError::Malformed));
    let forged = value.replace("gw1&", "gw2&");
    assert!(matches!(
        verify(&forged),
        Err(TokenError::UnknownGateway(_))
    ));

    let (s, _) = t
        .call(
            "POST",
            "/gateways/gw1/generateToken",
            Some(json!({"keyType": "primary", "expiry": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(s, 400, "at most 30 days");

    // Regenerating the key revokes the tokens made with it.
    let (s, _) = t
        .call(
            "POST",
            "/gateways/gw1/regenerateKey",
            Some(json!({"keyType": "primary"})),
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(verify(&value), Err(TokenError::BadSignature));
}

/// The gateway link on the primary: only a valid gateway token opens it (never the admin
/// token), the stream starts with the whole configuration, heartbeats show on the gateway, and
/// what they show cannot be written.
#[tokio::test]
async fn the_gateway_link_takes_gateway_tokens_and_shows_nodes() {
    let t = TestInstance::start().await.unwrap();
    t.put_ok(
        "/gateways/west",
        json!({"properties": {"locationData": {"name": "westeurope"}}}),
    )
    .await;
    let expiry = (time::OffsetDateTime::now_utc() + time::Duration::days(20))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, token) = t
        .call(
            "POST",
            "/gateways/west/generateToken",
            Some(json!({"keyType": "secondary", "expiry": expiry})),
        )
        .await;
    let token = token["value"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();
    let link = |path: &str, auth: Option<String>| {
        let mut r = http.get(format!("{}/gateway-link/{path}", t.url));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r
    };
    // Neither nothing nor the admin token opens the stream.
    for auth in [None, Some(format!("Bearer {}", t.token))] {
        let r = link("stream", auth).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "GatewayTokenInvalid", "{body}");
    }
    // A valid token: the stream opens with a snapshot of the configuration.
    let mut r = link("stream?since=0", Some(format!("GatewayKey {token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    while !seen.contains("event: snapshot-end") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), r.chunk())
            .await
            .expect("the snapshot arrives")
            .unwrap()
            .expect("more of the stream");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.starts_with("event: snapshot\n"), "{seen}");
    assert!(seen.contains("/gateways/west"), "{seen}");
    drop(r);

    // A heartbeat shows on the gateway; a malformed one is refused.
    let beat = |body: serde_json::Value| {
        http.post(format!("{}/gateway-link/heartbeat", t.url))
            .header("authorization", format!("GatewayKey {token}"))
            .json(&body)
            .send()
    };
    let r = beat(json!({"node": "", "revision": 1})).await.unwrap();
    assert_eq!(r.status(), 400);
    let r = beat(json!({"node": "n1", "region": "westeurope", "version": "1", "revision": 1, "state": "serving"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, g) = t.call("GET", "/gateways/west", None).await;
    let nodes = &g["properties"]["nodes"];
    assert_eq!(nodes[0]["node"], "n1", "{g}");
    assert_eq!(nodes[0]["connected"], true);
    assert!(nodes[0]["lagRevisions"].as_u64().unwrap() >= 1, "{g}");
    // What nodes report is not configuration: a PUT of it is ignored.
    let mut props = g["properties"].clone();
    props["nodes"] = json!([{"node": "forged"}]);
    t.put_ok("/gateways/west", json!({"properties": props}))
        .await;
    let (_, g) = t.call("GET", "/gateways/west", None).await;
    assert_eq!(g["properties"]["nodes"][0]["node"], "n1", "{g}");
}

/// Changes after a compacted revision are refused with a clear error, not answered partially.
#[tokio::test]
async fn a_compacted_journal_says_so() {
    let t = TestInstance::start().await.unwrap();
    for i in 0..3 {
        t.put_ok(
            &format!("/tags/t{i}"),
            json!({"properties": {"displayName": "t"}}),
        )
        .await;
    }
    let store = &t.instance.as_ref().unwrap().store;
    let revision = store.revision().unwrap();
    assert!(store.compact_journal(revision - 1).unwrap() > 0);
    let (s, e) = t.call("GET", "/journal?since=1", None).await;
    assert_eq!(s, 410, "{e}");
    assert_eq!(e["error"]["code"], "JournalCompacted");
    let (s, e) = t
        .call("GET", &format!("/journal?since={}", revision - 1), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(e["value"].as_array().unwrap().len(), 1, "{e}");
    let (s, e) = t.call("GET", "/journal?since=0", None).await;
    assert_eq!((s, e["value"].as_array().unwrap().len()), (200, 1));
}
