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
