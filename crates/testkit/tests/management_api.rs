//! The management REST API through a real instance on port 0, over real HTTP.

use gatehouse_testkit::TestInstance;
use serde_json::{Value, json};

async fn revision(t: &TestInstance) -> u64 {
    let (_, s) = t.call("GET", "/", None).await;
    s["properties"]["revision"].as_u64().unwrap()
}

async fn api(t: &TestInstance, id: &str, path: &str) {
    let (s, b) = t
        .call(
            "PUT",
            &format!("/apis/{id}"),
            Some(json!({"properties": {"displayName": id, "path": path, "serviceUrl": "http://127.0.0.1:9"}})),
        )
        .await;
    assert!(s == 201 || s == 200, "{s} {b}");
}

async fn op(t: &TestInstance, api: &str, id: &str, method: &str, template: &str) {
    let params: Vec<Value> = template
        .split('{')
        .skip(1)
        .map(|p| json!({"name": p.split('}').next().unwrap(), "type": "string", "required": true}))
        .collect();
    let (s, b) = t
        .call(
            "PUT",
            &format!("/apis/{api}/operations/{id}"),
            Some(json!({"properties": {"displayName": id, "method": method, "urlTemplate": template, "templateParameters": params}})),
        )
        .await;
    assert!(s == 201 || s == 200, "{s} {b}");
}

#[tokio::test]
async fn service_resource_and_built_ins() {
    let t = TestInstance::start().await.unwrap();
    let (s, svc) = t.call("GET", "/", None).await;
    assert_eq!(s, 200);
    assert_eq!(svc["name"], "gatehouse");
    assert_eq!(svc["type"], "Microsoft.ApiManagement/service");
    assert_eq!(svc["location"], "local");
    assert_eq!(svc["sku"], json!({"name": "Developer", "capacity": 1}));
    let p = &svc["properties"];
    assert_eq!(p["provisioningState"], "Succeeded");
    assert_eq!(p["managementApiUrl"], json!(t.url));
    assert!(
        p["gatewayUrl"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    assert!(p["createdAtUtc"].as_str().unwrap().ends_with('Z'));
    assert!(p["revision"].as_u64().unwrap() >= 1);

    let (_, groups) = t.call("GET", "/groups", None).await;
    let names: Vec<&str> = groups["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["administrators", "developers", "guests"]);
    for g in groups["value"].as_array().unwrap() {
        assert_eq!(g["properties"]["builtIn"], true);
        assert_eq!(g["properties"]["type"], "system");
    }
    let (s, master) = t.call("GET", "/subscriptions/master", None).await;
    assert_eq!(s, 200);
    assert_eq!(master["properties"]["scope"], "/");
    assert_eq!(master["properties"]["state"], "active");
    assert!(master["properties"].get("primaryKey").is_none());
    let (s, e) = t.call("DELETE", "/subscriptions/master", None).await;
    assert_eq!(s, 409, "{e}");
    let (s, _) = t.call("DELETE", "/groups/developers", None).await;
    assert_eq!(s, 409);
    let (s, _) = t
        .call(
            "PUT",
            "/groups/guests",
            Some(json!({"properties": {"displayName": "x"}})),
        )
        .await;
    assert_eq!(s, 409);

    // PATCH / changes the publisher, refuses the name.
    let (s, svc) = t.call("PATCH", "/", Some(json!({"properties": {"publisherName": "Contoso"}, "sku": {"name": "standard", "capacity": 2}}))).await;
    assert_eq!(s, 200, "{svc}");
    assert_eq!(svc["properties"]["publisherName"], "Contoso");
    assert_eq!(svc["sku"], json!({"name": "Standard", "capacity": 2}));
    let (s, e) = t.call("PATCH", "/", Some(json!({"name": "other"}))).await;
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be changed")
    );
}

#[tokio::test]
async fn authentication_is_required() {
    let t = TestInstance::start().await.unwrap();
    let c = reqwest::Client::new();
    let r = c.get(format!("{}/apis", t.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "AuthenticationFailed");
    let r = c
        .get(format!("{}/apis", t.url))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "InvalidAuthenticationToken");
}

#[tokio::test]
async fn put_get_patch_head_delete_with_etags() {
    let t = TestInstance::start().await.unwrap();
    let body = json!({"properties": {"displayName": "Echo", "path": "echo", "serviceUrl": "http://127.0.0.1:9/"}});
    let (s, a) = t.call("PUT", "/apis/echo", Some(body.clone())).await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["id"], "/apis/echo");
    assert_eq!(a["name"], "echo");
    assert_eq!(a["type"], "Microsoft.ApiManagement/service/apis");
    let p = &a["properties"];
    assert_eq!(p["subscriptionRequired"], true);
    assert_eq!(p["protocols"], json!(["https"]));
    assert_eq!(p["isCurrent"], true);
    assert_eq!(p["apiRevision"], "1");
    assert_eq!(
        p["subscriptionKeyParameterNames"],
        json!({"header": "Ocp-Apim-Subscription-Key", "query": "subscription-key"})
    );
    let (s, _) = t.call("PUT", "/apis/echo", Some(body.clone())).await;
    assert_eq!(s, 200);

    let r = t
        .http
        .get(format!("{}/apis/echo", t.url))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let r = t
        .http
        .head(format!("{}/apis/echo", t.url))
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);

    // PATCH merges; a stale If-Match is refused.
    let (s, a) = t
        .call_with(
            "PATCH",
            "/apis/echo",
            Some(json!({"properties": {"displayName": "Echo 2"}})),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["properties"]["displayName"], "Echo 2");
    assert_eq!(a["properties"]["path"], "echo");
    let (s, e) = t
        .call_with(
            "PATCH",
            "/apis/echo",
            Some(json!({"properties": {"displayName": "Echo 3"}})),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(s, 412);
    assert_eq!(e["error"]["code"], "PreconditionFailed");
    let (s, _) = t
        .call_with(
            "PUT",
            "/apis/echo",
            Some(body.clone()),
            &[("If-Match", "*")],
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = t
        .call_with("DELETE", "/apis/echo", None, &[("If-Match", "\"r1\"")])
        .await;
    assert_eq!(s, 412);
    let (s, _) = t
        .call("PATCH", "/apis/nope", Some(json!({"properties": {}})))
        .await;
    assert_eq!(s, 404);

    let (s, _) = t.call("DELETE", "/apis/echo", None).await;
    assert_eq!(s, 200);
    let (s, _) = t.call("DELETE", "/apis/echo", None).await;
    assert_eq!(s, 204);
    let (s, e) = t.call("GET", "/apis/echo", None).await;
    assert_eq!(s, 404);
    assert_eq!(
        e,
        json!({"error": {"code": "ResourceNotFound", "message": "Api not found.", "details": []}})
    );
}

#[tokio::test]
async fn bad_input_is_rejected_and_changes_nothing() {
    let t = TestInstance::start().await.unwrap();
    let before = revision(&t).await;
    // Malformed JSON.
    let r = t
        .http
        .put(format!("{}/apis/x", t.url))
        .bearer_auth(&t.token)
        .header("content-type", "application/json")
        .body("{\"properties\": {")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "InvalidRequestContent");
    assert!(e["error"]["message"].as_str().unwrap().contains("line 1"));
    // A wrong type, an unknown property, a missing required one.
    let (s, e) = t
        .call(
            "PUT",
            "/apis/x",
            Some(json!({"properties": {"displayName": 5, "path": "x", "colour": "red"}})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["code"], "ValidationError");
    let targets: Vec<&str> = e["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["target"].as_str().unwrap())
        .collect();
    assert!(
        targets.contains(&"displayName") && targets.contains(&"colour"),
        "{e}"
    );
    let (s, e) = t
        .call(
            "PUT",
            "/apis/x",
            Some(json!({"properties": {"displayName": "X"}})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["details"][0]["target"], "path");
    let (s, _) = t.call("PUT", "/apis/x", Some(json!([1, 2]))).await;
    assert_eq!(s, 400);
    // Ids over the limit or with forbidden characters.
    let long = "a".repeat(81);
    let (s, e) = t
        .call(
            "PUT",
            &format!("/apis/{long}"),
            Some(json!({"properties": {"displayName": "X", "path": "x"}})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 80"),
        "{e}"
    );
    let (s, e) = t
        .call(
            "PUT",
            "/tags/a%2Ab",
            Some(json!({"properties": {"displayName": "X"}})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("forbidden character '*'"),
        "{e}"
    );
    // An unknown collection.
    let (s, _) = t.call("GET", "/widgets", None).await;
    assert_eq!(s, 404);
    // A body over 4 MiB.
    let big = json!({"properties": {"displayName": "X", "path": "x", "description": "d".repeat(4 * 1024 * 1024)}});
    let (s, e) = t.call("PUT", "/apis/x", Some(big)).await;
    assert_eq!(s, 413);
    assert_eq!(e["error"]["code"], "RequestEntityTooLarge");
    // Dangling references.
    let (s, e) = t
        .call(
            "PUT",
            "/subscriptions/s",
            Some(json!({"properties": {"scope": "/apis/ghost", "displayName": "S"}})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["details"][0]["target"], "scope");
    let (s, e) = t.call("PUT", "/subscriptions/s", Some(json!({"properties": {"scope": "/apis", "displayName": "S", "ownerId": "/users/ghost"}}))).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["error"]["details"][0]["target"], "ownerId");
    let (s, _) = t
        .call(
            "PUT",
            "/products/p",
            Some(json!({"properties": {"displayName": "P"}})),
        )
        .await;
    assert_eq!(s, 201);
    let mid = revision(&t).await;
    let (s, e) = t.call("PUT", "/products/p/apis/ghost", None).await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["message"], "Api not found.");
    let (s, _) = t
        .call(
            "PUT",
            "/diagnostics/applicationinsights",
            Some(json!({"properties": {"loggerId": "/loggers/ghost"}})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = t
        .call(
            "PUT",
            "/apis/nope/operations/o",
            Some(json!({"properties": {"displayName": "O", "method": "GET", "urlTemplate": "/"}})),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(revision(&t).await, mid);
    assert_eq!(mid, before + 1);
    let (_, apis) = t.call("GET", "/apis", None).await;
    assert_eq!(apis["count"], 0);
}

#[tokio::test]
async fn deleting_an_api_cascades_in_one_transaction() {
    let t = TestInstance::start().await.unwrap();
    api(&t, "echo", "echo").await;
    op(&t, "echo", "get-item", "GET", "/items/{id}").await;
    let policy = json!({"properties": {"value": "<policies><inbound><base /></inbound></policies>", "format": "xml"}});
    assert_eq!(
        t.call("PUT", "/apis/echo/policies/policy", Some(policy.clone()))
            .await
            .0,
        201
    );
    assert_eq!(
        t.call(
            "PUT",
            "/apis/echo/operations/get-item/policies/policy",
            Some(policy)
        )
        .await
        .0,
        201
    );
    assert_eq!(
        t.call(
            "PUT",
            "/tags/public",
            Some(json!({"properties": {"displayName": "Public"}}))
        )
        .await
        .0,
        201
    );
    assert_eq!(t.call("PUT", "/apis/echo/tags/public", None).await.0, 201);
    assert_eq!(
        t.call("PUT", "/apis/echo/operations/get-item/tags/public", None)
            .await
            .0,
        201
    );
    assert_eq!(
        t.call(
            "PUT",
            "/products/p",
            Some(json!({"properties": {"displayName": "P"}}))
        )
        .await
        .0,
        201
    );
    let (s, linked) = t.call("PUT", "/products/p/apis/echo", None).await;
    assert_eq!(s, 201);
    assert_eq!(linked["id"], "/apis/echo");
    assert_eq!(
        t.call(
            "PUT",
            "/subscriptions/api-sub",
            Some(json!({"properties": {"scope": "/apis/echo", "displayName": "A"}}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        t.call(
            "PUT",
            "/subscriptions/prod-sub",
            Some(json!({"properties": {"scope": "/products/p", "displayName": "P"}}))
        )
        .await
        .0,
        201
    );
    let (_, prod_apis) = t.call("GET", "/products/p/apis", None).await;
    assert_eq!(prod_apis["count"], 1);
    assert_eq!(prod_apis["value"][0]["properties"]["displayName"], "echo");

    let before = revision(&t).await;
    assert_eq!(t.call("DELETE", "/apis/echo", None).await.0, 200);
    assert_eq!(
        revision(&t).await,
        before + 1,
        "one transaction, one revision"
    );
    for p in [
        "/apis/echo/operations/get-item",
        "/apis/echo/policies/policy",
        "/subscriptions/api-sub",
        "/apis/echo/tags/public",
    ] {
        assert_eq!(t.call("GET", p, None).await.0, 404, "{p} should be gone");
    }
    let (_, prod_apis) = t.call("GET", "/products/p/apis", None).await;
    assert_eq!(prod_apis["count"], 0);
    assert_eq!(t.call("GET", "/subscriptions/prod-sub", None).await.0, 200);
    assert_eq!(t.call("GET", "/tags/public", None).await.0, 200);
    let (_, journal) = t
        .call("GET", &format!("/journal?since={before}"), None)
        .await;
    let deleted: Vec<&str> = journal["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resourceId"].as_str().unwrap())
        .collect();
    assert!(
        deleted.contains(&"/apis/echo") && deleted.contains(&"/subscriptions/api-sub"),
        "{deleted:?}"
    );

    // A product with subscriptions is deleted only with deleteSubscriptions=true.
    let (s, e) = t.call("DELETE", "/products/p", None).await;
    assert_eq!(s, 409);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deleteSubscriptions")
    );
    assert_eq!(
        t.call("DELETE", "/products/p?deleteSubscriptions=true", None)
            .await
            .0,
        200
    );
    assert_eq!(t.call("GET", "/subscriptions/prod-sub", None).await.0, 404);

    // Something in use elsewhere is not deleted from under its user.
    assert_eq!(t.call("PUT", "/loggers/ai", Some(json!({"properties": {"loggerType": "applicationInsights", "credentials": {"instrumentationKey": "k"}}}))).await.0, 201);
    assert_eq!(
        t.call(
            "PUT",
            "/diagnostics/applicationinsights",
            Some(json!({"properties": {"loggerId": "/loggers/ai"}}))
        )
        .await
        .0,
        201
    );
    let (s, e) = t.call("DELETE", "/loggers/ai", None).await;
    assert_eq!(s, 409, "{e}");
    let (_, logger) = t.call("GET", "/loggers/ai", None).await;
    assert!(logger["properties"].get("credentials").is_none());
}

#[tokio::test]
async fn subscription_keys_are_secret() {
    let t = TestInstance::start().await.unwrap();
    api(&t, "echo", "echo").await;
    let (s, sub) = t.call("PUT", "/subscriptions/s1", Some(json!({"properties": {"scope": "/apis/echo", "displayName": "S1", "state": "active"}}))).await;
    assert_eq!(s, 201);
    assert!(sub["properties"].get("primaryKey").is_none());
    assert_eq!(sub["properties"]["scope"], "/apis/echo");
    let (_, keys) = t.call("POST", "/subscriptions/s1/listSecrets", None).await;
    let primary = keys["primaryKey"].as_str().unwrap().to_string();
    assert_eq!(primary.len(), 32);
    assert_ne!(primary, keys["secondaryKey"].as_str().unwrap());
    let (s, p) = t
        .call(
            "PATCH",
            "/subscriptions/s1",
            Some(json!({"properties": {"displayName": "S one"}})),
        )
        .await;
    assert_eq!(s, 200);
    assert!(p["properties"].get("primaryKey").is_none());
    let (_, keys2) = t.call("POST", "/subscriptions/s1/listSecrets", None).await;
    assert_eq!(
        keys2["primaryKey"],
        primary.as_str(),
        "keys survive an update"
    );
    assert_eq!(
        t.call("POST", "/subscriptions/s1/regeneratePrimaryKey", None)
            .await
            .0,
        204
    );
    let (_, keys3) = t.call("POST", "/subscriptions/s1/listSecrets", None).await;
    assert_ne!(keys3["primaryKey"], primary.as_str());
    assert_eq!(keys3["secondaryKey"], keys2["secondaryKey"]);
    // Caller-given keys; scope with the full ARM id.
    let arm = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ApiManagement/service/contoso/apis/echo";
    let (s, sub) = t.call("PUT", "/subscriptions/s2", Some(json!({"properties": {"scope": arm, "displayName": "S2", "primaryKey": "my-own-key-1", "secondaryKey": "my-own-key-2"}}))).await;
    assert_eq!(s, 201, "{sub}");
    assert_eq!(sub["properties"]["scope"], "/apis/echo");
    assert_eq!(sub["properties"]["state"], "submitted");
    let (_, keys) = t.call("POST", "/subscriptions/s2/listSecrets", None).await;
    assert_eq!(keys["primaryKey"], "my-own-key-1");
    // The journal never shows a key.
    let (_, journal) = t.call("GET", "/journal?since=0&$top=1000", None).await;
    let text = journal.to_string();
    assert!(!text.contains("my-own-key-1") && !text.contains(&primary));
}

#[tokio::test]
async fn users_groups_named_values_and_policies() {
    let t = TestInstance::start().await.unwrap();
    let (s, u) = t.call("PUT", "/users/alice", Some(json!({"properties": {"email": "alice@example.com", "firstName": "Alice", "lastName": "L", "password": "correct horse battery"}}))).await;
    assert_eq!(s, 201, "{u}");
    assert!(
        u["properties"].get("password").is_none() && u["properties"].get("passwordHash").is_none()
    );
    assert_eq!(u["properties"]["state"], "active");
    let (s, e) = t.call("PUT", "/users/alice2", Some(json!({"properties": {"email": "ALICE@example.com", "firstName": "A", "lastName": "L"}}))).await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["details"][0]["target"], "email");
    let (_, groups) = t.call("GET", "/users/alice/groups", None).await;
    assert_eq!(groups["value"][0]["name"], "developers");
    assert_eq!(
        t.call(
            "PUT",
            "/groups/partners",
            Some(json!({"properties": {"displayName": "Partners"}}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        t.call("PUT", "/groups/partners/users/alice", None).await.0,
        201
    );
    let (_, members) = t.call("GET", "/groups/partners/users", None).await;
    assert_eq!(
        members["value"][0]["properties"]["email"],
        "alice@example.com"
    );

    // Named values: secrets hidden, listValue reveals.
    let (s, nv) = t.call("PUT", "/namedValues/backend-key", Some(json!({"properties": {"displayName": "backend-key", "value": "s3cr3t-value", "secret": true}}))).await;
    assert_eq!(s, 201);
    assert!(nv["properties"].get("value").is_none());
    let (_, v) = t
        .call("POST", "/namedValues/backend-key/listValue", None)
        .await;
    assert_eq!(v["value"], "s3cr3t-value");
    let (s, _) = t
        .call(
            "PUT",
            "/namedValues/other",
            Some(json!({"properties": {"displayName": "backend-key", "value": "x"}})),
        )
        .await;
    assert_eq!(s, 400, "displayName is unique");
    let (s, _) = t
        .call(
            "PUT",
            "/namedValues/bad",
            Some(json!({"properties": {"displayName": "has space", "value": "x"}})),
        )
        .await;
    assert_eq!(s, 400);
    let (_, plain) = t
        .call(
            "PUT",
            "/namedValues/region",
            Some(json!({"properties": {"displayName": "region", "value": "westeurope"}})),
        )
        .await;
    assert_eq!(plain["properties"]["value"], "westeurope");

    // Nothing secret or hashed-from-plaintext on disk.
    let mut disk = std::fs::read(t.data_dir.join("gatehouse.db")).unwrap();
    disk.extend(std::fs::read(t.data_dir.join("gatehouse.db-wal")).unwrap_or_default());
    let has = |needle: &[u8]| disk.windows(needle.len()).any(|w| w == needle);
    assert!(!has(b"s3cr3t-value"));
    assert!(!has(b"correct horse battery"));
    assert!(has(b"$argon2"));

    // Policies: well-formed, only the four sections; the error says where.
    let (s, _) = t.call("PUT", "/policies/policy", Some(json!({"properties": {"value": "<policies><inbound/><backend><forward-request/></backend><outbound/><on-error/></policies>", "format": "xml"}}))).await;
    assert_eq!(s, 201);
    let (s, e) = t.call("PUT", "/policies/policy", Some(json!({"properties": {"value": "<policies>\n  <inbound/>\n  <middle/>\n</policies>"}}))).await;
    assert_eq!(s, 400);
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("<middle>") && msg.contains("line 3, column 3"),
        "{msg}"
    );
    let raw = r#"<policies><inbound><set-header name="x" exists-action="override"><value>@(context.Request.Headers.GetValueOrDefault("a","") + "<b>")</value></set-header></inbound></policies>"#;
    assert_eq!(
        t.call(
            "PUT",
            "/policies/policy",
            Some(json!({"properties": {"value": raw, "format": "rawxml"}}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        t.call(
            "PUT",
            "/policies/other",
            Some(json!({"properties": {"value": "<policies/>"}}))
        )
        .await
        .0,
        400
    );
    assert_eq!(t.call("PUT", "/policyFragments/auth-headers", Some(json!({"properties": {"value": "<fragment><set-header name=\"a\" exists-action=\"override\"><value>b</value></set-header></fragment>"}}))).await.0, 201);
    assert_eq!(
        t.call(
            "PUT",
            "/policyFragments/-bad",
            Some(json!({"properties": {"value": "<fragment/>"}}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        t.call(
            "PUT",
            "/policyFragments/nofrag",
            Some(json!({"properties": {"value": "<policies/>"}}))
        )
        .await
        .0,
        400
    );

    // Version sets need their scheme's parameter name.
    assert_eq!(
        t.call(
            "PUT",
            "/apiVersionSets/vs",
            Some(json!({"properties": {"displayName": "V", "versioningScheme": "Query"}}))
        )
        .await
        .0,
        400
    );
    assert_eq!(t.call("PUT", "/apiVersionSets/vs", Some(json!({"properties": {"displayName": "V", "versioningScheme": "Query", "versionQueryName": "api-version"}}))).await.0, 201);
    let (s, v1) = t.call("PUT", "/apis/v1", Some(json!({"properties": {"displayName": "V1", "path": "things", "apiVersion": "v1", "apiVersionSetId": "/apiVersionSets/vs"}}))).await;
    assert_eq!(s, 201, "{v1}");
    assert_eq!(t.call("PUT", "/apis/v2", Some(json!({"properties": {"displayName": "V2", "path": "things", "apiVersion": "v2", "apiVersionSetId": "/apiVersionSets/vs"}}))).await.0, 201);
    let (s, e) = t
        .call(
            "PUT",
            "/apis/v3",
            Some(json!({"properties": {"displayName": "V3", "path": "things"}})),
        )
        .await;
    assert_eq!(s, 400, "a path is unique outside the version set: {e}");
    assert_eq!(t.call("DELETE", "/apiVersionSets/vs", None).await.0, 409);
}

#[tokio::test]
async fn lists_page_and_filter() {
    let t = TestInstance::start().await.unwrap();
    for i in 0..25 {
        let name = if i % 2 == 0 {
            format!("Alpha {i:02}")
        } else {
            format!("Beta {i:02}")
        };
        let (s, _) = t
            .call(
                "PUT",
                &format!("/tags/t{i:02}"),
                Some(json!({"properties": {"displayName": name}})),
            )
            .await;
        assert_eq!(s, 201);
    }
    let (_, page) = t.call("GET", "/tags?$top=10&$skip=5", None).await;
    assert_eq!(page["count"], 25);
    assert_eq!(page["value"].as_array().unwrap().len(), 10);
    assert_eq!(page["value"][0]["name"], "t05");
    let next = page["nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&t.url) && next.contains("$skip=15"),
        "{next}"
    );
    let r: Value = t
        .http
        .get(next)
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["value"][0]["name"], "t15");
    let (_, last) = t.call("GET", "/tags?$skip=20", None).await;
    assert!(last["nextLink"].is_null());
    let (_, f) = t
        .call(
            "GET",
            "/tags?$filter=startswith(properties/displayName,'alpha')",
            None,
        )
        .await;
    assert_eq!(f["count"], 13);
    let (_, f) = t.call("GET", "/tags?$filter=name%20eq%20't03'", None).await;
    assert_eq!(f["count"], 1);
    let (_, f) = t.call("GET", "/tags?$filter=contains(properties/displayName,'2')%20and%20startswith(name,'t2')&$top=2", None).await;
    assert_eq!(f["count"], 5);
    assert_eq!(f["value"].as_array().unwrap().len(), 2);
    let (s, e) = t.call("GET", "/tags?$filter=name%20gt%20'a'", None).await;
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("position"),
        "{e}"
    );
    assert_eq!(t.call("GET", "/tags?$top=0", None).await.0, 400);
    assert_eq!(t.call("GET", "/tags?$skip=-1", None).await.0, 400);
}

#[tokio::test]
async fn revisions_and_arm_paths() {
    let t = TestInstance::start().await.unwrap();
    api(&t, "echo", "echo").await;
    op(&t, "echo", "get", "GET", "/items").await;
    let (s, r2) = t
        .call(
            "PUT",
            "/apis/echo;rev=2",
            Some(json!({"properties": {"apiRevisionDescription": "next"}})),
        )
        .await;
    assert_eq!(s, 201, "{r2}");
    assert_eq!(r2["properties"]["isCurrent"], false);
    assert_eq!(r2["properties"]["apiRevision"], "2");
    assert_eq!(r2["properties"]["path"], "echo");
    let (_, ops) = t.call("GET", "/apis/echo;rev=2/operations", None).await;
    assert_eq!(
        ops["count"], 1,
        "operations are copied into the new revision"
    );
    op(&t, "echo;rev=2", "post", "POST", "/items").await;
    let (_, list) = t.call("GET", "/apis", None).await;
    assert_eq!(list["count"], 1, "revisions are not listed as APIs");
    let (_, revs) = t.call("GET", "/apis/echo/revisions", None).await;
    assert_eq!(revs["count"], 2);
    // ;rev=1 addresses the current revision.
    let (s, r1) = t.call("GET", "/apis/echo;rev=1", None).await;
    assert_eq!(s, 200);
    assert_eq!(r1["id"], "/apis/echo");
    // Make revision 2 current.
    let (s, cur) = t
        .call(
            "PATCH",
            "/apis/echo;rev=2",
            Some(json!({"properties": {"isCurrent": true}})),
        )
        .await;
    assert_eq!(s, 200, "{cur}");
    let (_, cur) = t.call("GET", "/apis/echo", None).await;
    assert_eq!(cur["properties"]["apiRevision"], "2");
    let (_, ops) = t.call("GET", "/apis/echo/operations", None).await;
    assert_eq!(ops["count"], 2);
    let (s, old) = t.call("GET", "/apis/echo;rev=1", None).await;
    assert_eq!(s, 200);
    assert_eq!(old["properties"]["isCurrent"], false);
    let (_, old_ops) = t.call("GET", "/apis/echo;rev=1/operations", None).await;
    assert_eq!(old_ops["count"], 1);
    // The ARM-prefixed path and api-version work as the short ones, with full ARM ids; another
    // service name is ARM's 404, an api-version Gatehouse does not speak ARM's 400.
    let other = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/contoso";
    let (s, e) = t
        .call(
            "GET",
            &format!("{other}/apis/echo?api-version=2024-05-01"),
            None,
        )
        .await;
    assert_eq!(s, 404);
    assert!(
        e["error"]["message"].as_str().unwrap().contains(
            "'Microsoft.ApiManagement/service/contoso' under resource group 'rg1' was not found"
        ),
        "{e}"
    );
    let (s, e) = t
        .call("GET", "/apis/echo?api-version=2001-01-01", None)
        .await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["code"], "InvalidApiVersionParameter");
    let arm = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/gatehouse";
    let (s, a) = t
        .call(
            "GET",
            &format!("{arm}/apis/echo?api-version=2024-05-01"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(a["properties"]["apiRevision"], "2");
    assert_eq!(a["id"], format!("{arm}/apis/echo"));
    let (_, short) = t.call("GET", "/apis/echo", None).await;
    assert_eq!(short["id"], "/apis/echo", "relative on the short path");
    let (s, svc) = t
        .call("GET", &format!("{arm}?api-version=2024-05-01"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(svc["type"], "Microsoft.ApiManagement/service");
    // Deleting the API removes every revision.
    assert_eq!(t.call("DELETE", "/apis/echo", None).await.0, 200);
    assert_eq!(t.call("GET", "/apis/echo;rev=1", None).await.0, 404);
    assert_eq!(
        t.call("GET", "/apis/echo;rev=1/operations/get", None)
            .await
            .0,
        404
    );
}

const PETSTORE_JSON: &str = r#"{
  "openapi": "3.0.1",
  "info": {"title": "Swagger Petstore", "version": "1.0.0", "description": "pets"},
  "servers": [{"url": "http://petstore.local/v1"}],
  "paths": {
    "/pets": {
      "get": {"operationId": "listPets", "summary": "List all pets",
              "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}}],
              "responses": {"200": {"description": "ok", "content": {"application/json": {"example": [{"id": 1, "name": "rex"}]}}}}},
      "post": {"operationId": "createPets", "responses": {"201": {"description": "created"}}}
    },
    "/pets/{petId}": {
      "get": {"operationId": "showPetById", "parameters": [{"name": "petId", "in": "path", "required": true, "schema": {"type": "string"}}],
              "responses": {"200": {"description": "ok"}}}
    }
  }
}"#;

#[tokio::test]
async fn openapi_import_and_export() {
    let t = TestInstance::start().await.unwrap();
    let (s, a) = t.call("PUT", "/apis/petstore", Some(json!({"properties": {"format": "openapi+json", "value": PETSTORE_JSON, "path": "pets"}}))).await;
    assert_eq!(s, 201, "{a}");
    assert_eq!(a["properties"]["displayName"], "Swagger Petstore");
    assert_eq!(a["properties"]["serviceUrl"], "http://petstore.local/v1");
    let (_, ops) = t.call("GET", "/apis/petstore/operations", None).await;
    let names: Vec<&str> = ops["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["createPets", "listPets", "showPetById"]);
    let (_, show) = t
        .call("GET", "/apis/petstore/operations/showPetById", None)
        .await;
    assert_eq!(show["properties"]["urlTemplate"], "/pets/{petId}");
    assert_eq!(show["properties"]["templateParameters"][0]["name"], "petId");
    let (_, list) = t
        .call("GET", "/apis/petstore/operations/listPets", None)
        .await;
    assert_eq!(
        list["properties"]["request"]["queryParameters"][0]["name"],
        "limit"
    );
    assert_eq!(
        list["properties"]["responses"][0]["representations"][0]["examples"]["default"]["value"][0]
            ["name"],
        "rex"
    );

    // Export, then import the export as another API: same operations.
    let (s, answer) = t
        .call(
            "GET",
            "/apis/petstore?export=true&format=openapi%2Bjson",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(answer["format"], "openapi+json");
    let doc = answer["value"].clone();
    assert_eq!(doc["openapi"], "3.0.1");
    assert!(doc["paths"]["/pets/{petId}"]["get"].is_object());
    assert!(
        doc["servers"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/pets")
    );
    let (s, _) = t.call("PUT", "/apis/copy", Some(json!({"properties": {"format": "openapi+json", "value": doc.to_string(), "path": "copy"}}))).await;
    assert_eq!(s, 201);
    let (_, copy_ops) = t.call("GET", "/apis/copy/operations", None).await;
    assert_eq!(copy_ops["count"], 3);

    // YAML, Swagger 2 and the -link form (fetched from a real HTTP server).
    let yaml = "openapi: 3.0.0\ninfo: {title: Y, version: '1'}\npaths:\n  /a: {get: {responses: {'200': {description: ok}}}}\n";
    assert_eq!(
        t.call(
            "PUT",
            "/apis/y",
            Some(json!({"properties": {"format": "openapi", "value": yaml, "path": "y"}}))
        )
        .await
        .0,
        201
    );
    let swagger = r#"{"swagger":"2.0","info":{"title":"S","version":"1"},"host":"h.local","paths":{"/b":{"get":{"operationId":"getB","responses":{"200":{"description":"ok"}}}}}}"#;
    let (s, sw) = t
        .call(
            "PUT",
            "/apis/s",
            Some(json!({"properties": {"format": "swagger-json", "value": swagger, "path": "s"}})),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(sw["properties"]["serviceUrl"], "https://h.local");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app =
        axum::Router::new().route("/spec.json", axum::routing::get(|| async { PETSTORE_JSON }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (s, l) = t.call("PUT", "/apis/linked", Some(json!({"properties": {"format": "openapi+json-link", "value": format!("http://{addr}/spec.json"), "path": "linked"}}))).await;
    assert_eq!(s, 201, "{l}");

    // A broken document is a 400 naming the problem, and nothing is written.
    let before = revision(&t).await;
    let broken = PETSTORE_JSON.replace("\"info\": {\"title\": \"Swagger Petstore\", \"version\": \"1.0.0\", \"description\": \"pets\"},", "");
    let (s, e) = t.call("PUT", "/apis/broken", Some(json!({"properties": {"format": "openapi+json", "value": broken, "path": "broken"}}))).await;
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("info"),
        "{e}"
    );
    let (s, _) = t.call("PUT", "/apis/broken", Some(json!({"properties": {"format": "openapi+json", "value": "{nope", "path": "broken"}}))).await;
    assert_eq!(s, 400);
    let (s, _) = t.call("PUT", "/apis/broken", Some(json!({"properties": {"format": "openapi+json-link", "value": format!("http://{addr}/missing"), "path": "broken"}}))).await;
    assert_eq!(s, 400);
    assert_eq!(revision(&t).await, before);
    assert_eq!(t.call("GET", "/apis/broken", None).await.0, 404);
}

#[tokio::test]
async fn journal_pages_oldest_first() {
    let t = TestInstance::start().await.unwrap();
    let start = revision(&t).await;
    for i in 0..5 {
        t.call(
            "PUT",
            &format!("/tags/j{i}"),
            Some(json!({"properties": {"displayName": format!("J{i}")}})),
        )
        .await;
    }
    t.call("DELETE", "/tags/j0", None).await;
    let (_, j) = t
        .call("GET", &format!("/journal?since={start}&$top=4"), None)
        .await;
    assert_eq!(j["count"], 6);
    let entries = j["value"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0]["revision"], start + 1);
    assert_eq!(entries[0]["resourceId"], "/tags/j0");
    assert_eq!(entries[0]["operation"], "put");
    assert_eq!(entries[0]["value"]["displayName"], "J0");
    let next = j["nextLink"].as_str().unwrap();
    let rest: Value = t
        .http
        .get(next)
        .bearer_auth(&t.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last = rest["value"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["operation"], "delete");
    assert_eq!(last["revision"], start + 6);
    assert!(last["value"].is_null());
    assert_eq!(t.call("GET", "/journal?since=abc", None).await.0, 400);
}

#[tokio::test]
async fn concurrent_writers_never_lose_an_update() {
    let t = TestInstance::start().await.unwrap();
    assert_eq!(
        t.call(
            "PUT",
            "/products/counter",
            Some(json!({"properties": {"displayName": "C", "description": "0"}}))
        )
        .await
        .0,
        201
    );
    let writers = 12;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let url = t.url.clone();
        let token = t.token.clone();
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            loop {
                let r = c
                    .get(format!("{url}/products/counter"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                let etag = r.headers()["etag"].to_str().unwrap().to_string();
                let v: Value = r.json().await.unwrap();
                let n: u64 = v["properties"]["description"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let r = c
                    .patch(format!("{url}/products/counter"))
                    .bearer_auth(&token)
                    .header("If-Match", etag)
                    .json(&json!({"properties": {"description": (n + 1).to_string()}}))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    200 => return,
                    412 => continue,
                    other => panic!("unexpected {other}"),
                }
            }
        }));
    }
    // Meanwhile, plain concurrent creates.
    let creates = futures::future::join_all((0..40).map(|i| {
        let t = &t;
        async move {
            t.call(
                "PUT",
                &format!("/tags/c{i}"),
                Some(json!({"properties": {"displayName": "C"}})),
            )
            .await
            .0
        }
    }))
    .await;
    assert!(creates.iter().all(|s| *s == 201));
    for task in tasks {
        task.await.unwrap();
    }
    let (_, p) = t.call("GET", "/products/counter", None).await;
    assert_eq!(p["properties"]["description"], writers.to_string());
    let (_, tags) = t.call("GET", "/tags", None).await;
    assert_eq!(tags["count"], 40);
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let mut t = TestInstance::start().await.unwrap();
    let dir = t.take_dir().unwrap();
    api(&t, "echo", "echo").await;
    op(&t, "echo", "get", "GET", "/items/{id}").await;
    t.call(
        "PUT",
        "/products/p",
        Some(json!({"properties": {"displayName": "P", "state": "published"}})),
    )
    .await;
    t.call("PUT", "/products/p/apis/echo", None).await;
    t.call(
        "PUT",
        "/subscriptions/s",
        Some(
            json!({"properties": {"scope": "/products/p", "displayName": "S", "state": "active"}}),
        ),
    )
    .await;
    t.call(
        "PUT",
        "/namedValues/nv",
        Some(json!({"properties": {"displayName": "nv", "value": "v", "secret": true}})),
    )
    .await;
    let (_, keys) = t.call("POST", "/subscriptions/s/listSecrets", None).await;
    let rev = revision(&t).await;
    let token = t.token.clone();
    t.stop().await.unwrap();
    assert!(
        !dir.path().join("endpoints.json").exists(),
        "endpoints.json is removed on shutdown"
    );

    let t2 = TestInstance::start_in(dir.path()).await.unwrap();
    assert_eq!(t2.token, token, "the admin token is kept");
    assert_eq!(revision(&t2).await, rev);
    assert_eq!(
        t2.call("GET", "/apis/echo/operations/get", None).await.0,
        200
    );
    let (_, prod_apis) = t2.call("GET", "/products/p/apis", None).await;
    assert_eq!(prod_apis["count"], 1);
    let (_, keys2) = t2.call("POST", "/subscriptions/s/listSecrets", None).await;
    assert_eq!(keys, keys2);
    let (_, v) = t2.call("POST", "/namedValues/nv/listValue", None).await;
    assert_eq!(v["value"], "v");
    let (_, groups) = t2.call("GET", "/groups", None).await;
    assert_eq!(groups["count"], 3, "bootstrap does not run twice");
}

#[tokio::test]
async fn snapshots_are_consistent_while_writes_go_on() {
    let t = TestInstance::start().await.unwrap();
    let store = t.instance.as_ref().unwrap().store.clone();
    let base = revision(&t).await;
    let writer = {
        let url = t.url.clone();
        let token = t.token.clone();
        tokio::spawn(async move {
            let c = reqwest::Client::new();
            for i in 0..150 {
                let r = c
                    .put(format!("{url}/tags/w{i:03}"))
                    .bearer_auth(&token)
                    .json(&json!({"properties": {"displayName": "W"}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
    };
    let mut seen = 0;
    while !writer.is_finished() {
        let s = store.clone();
        let snap = tokio::task::spawn_blocking(move || s.snapshot().unwrap())
            .await
            .unwrap();
        let tags = snap.of_kind(gatehouse_model::Kind::Tag).count() as u64;
        // Each tag PUT is one revision after `base`: a consistent view has exactly as many.
        assert_eq!(
            tags,
            snap.revision - base,
            "snapshot at {} has {tags} tags",
            snap.revision
        );
        assert!(snap.resources.iter().all(|r| r.revision <= snap.revision));
        seen += 1;
    }
    writer.await.unwrap();
    assert!(seen > 0);
}

#[tokio::test]
async fn a_freeze_refuses_writes_until_lifted_or_expired() {
    let t = TestInstance::start().await.unwrap();
    t.call(
        "PUT",
        "/tags/a",
        Some(json!({"properties": {"displayName": "A"}})),
    )
    .await;
    let (s, f) = t
        .call(
            "POST",
            "/freeze",
            Some(json!({"seconds": 60, "reason": "moving to eastus"})),
        )
        .await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["frozen"], true);
    let before = revision(&t).await;
    let (s, e) = t
        .call(
            "PUT",
            "/tags/b",
            Some(json!({"properties": {"displayName": "B"}})),
        )
        .await;
    assert_eq!(s, 409);
    assert_eq!(e["error"]["code"], "ServiceIsBeingMoved");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("moving to eastus") && msg.contains(f["until"].as_str().unwrap()),
        "{msg}"
    );
    assert_eq!(t.call("DELETE", "/tags/a", None).await.0, 409);
    assert_eq!(
        t.call("POST", "/subscriptions/master/regeneratePrimaryKey", None)
            .await
            .0,
        409
    );
    // Reads and secret listings go on.
    assert_eq!(t.call("GET", "/tags/a", None).await.0, 200);
    assert_eq!(
        t.call("POST", "/subscriptions/master/listSecrets", None)
            .await
            .0,
        200
    );
    assert_eq!(revision(&t).await, before, "nothing was written");
    // Lifted by DELETE.
    assert_eq!(t.call("DELETE", "/freeze", None).await.1["frozen"], false);
    assert_eq!(
        t.call(
            "PUT",
            "/tags/b",
            Some(json!({"properties": {"displayName": "B"}}))
        )
        .await
        .0,
        201
    );
    // A freeze lifts itself at its deadline, so a dead move never leaves the source frozen.
    t.call(
        "POST",
        "/freeze",
        Some(json!({"seconds": 1, "reason": "short"})),
    )
    .await;
    assert_eq!(
        t.call(
            "PUT",
            "/tags/c",
            Some(json!({"properties": {"displayName": "C"}}))
        )
        .await
        .0,
        409
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        t.call(
            "PUT",
            "/tags/c",
            Some(json!({"properties": {"displayName": "C"}}))
        )
        .await
        .0,
        201
    );
    // Bad freezes are refused.
    assert_eq!(
        t.call(
            "POST",
            "/freeze",
            Some(json!({"seconds": 0, "reason": "x"}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        t.call("POST", "/freeze", Some(json!({"seconds": 10})))
            .await
            .0,
        400
    );
    assert_eq!(t.call("GET", "/freeze", None).await.1["frozen"], false);
}
