//! Every API type APIM imports, through real instances: imported (PUT with a format, or an
//! APIOps folder), exported, and serving requests through the gateway — WADL, SOAP
//! pass-through from a WSDL (routed by SOAP action), GraphQL pass-through (queries checked
//! against the schema).

use gatehouse_testkit::{EchoBackend, TestInstance};
use serde_json::{Value, json};

const WADL: &str = r#"<application xmlns="http://wadl.dev.java.net/2009/02" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <resources base="http://unused.example/">
    <resource path="items">
      <method name="GET" id="listItems">
        <request><param name="top" style="query" type="xsd:int"/></request>
        <response status="200"><representation mediaType="application/json"/></response>
      </method>
      <resource path="{id}">
        <param name="id" style="template" type="xsd:string"/>
        <method name="GET" id="getItem"/>
      </resource>
    </resource>
  </resources>
</application>"#;

const WSDL: &str = r#"<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/" xmlns:tns="urn:calc" name="Calc">
  <message name="AddIn"><part name="parameters" element="tns:AddRequest"/></message>
  <message name="SubtractIn"><part name="parameters" element="tns:SubtractRequest"/></message>
  <portType name="CalcPort">
    <operation name="Add"><input message="tns:AddIn"/></operation>
    <operation name="Subtract"><input message="tns:SubtractIn"/></operation>
  </portType>
  <binding name="CalcSoap" type="tns:CalcPort">
    <soap:binding transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="Add"><soap:operation soapAction="http://tempuri.org/Add"/></operation>
    <operation name="Subtract"><soap:operation soapAction="http://tempuri.org/Subtract"/></operation>
  </binding>
  <service name="Calculator">
    <port name="CalcSoap" binding="tns:CalcSoap"><soap:address location="http://calc.example/calc.asmx"/></port>
  </service>
</definitions>"#;

const SDL: &str = "type Query { hello(name: String): String, count: Int }";

fn zip_files(zip: &[u8]) -> gatehouse_apiops::Files {
    gatehouse_apiops::archive::read(zip, gatehouse_apiops::archive::LIMITS).unwrap()
}

async fn export(t: &TestInstance) -> gatehouse_apiops::Files {
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
    zip_files(&zip)
}

async fn import(t: &TestInstance, files: &gatehouse_apiops::Files) -> Value {
    let resp = t
        .http
        .post(format!("{}/import", t.url))
        .bearer_auth(&t.token)
        .body(gatehouse_apiops::archive::zip(files))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_wadl_imports_as_operations_and_serves() {
    let t = TestInstance::start().await.unwrap();
    let backend = EchoBackend::start().await.unwrap();
    t.put_ok("/apis/items", json!({"properties": {"displayName": "Items", "path": "items-api", "serviceUrl": backend.url, "protocols": ["http"], "subscriptionRequired": false, "format": "wadl-xml", "value": WADL}})).await;
    let (_, ops) = t.call("GET", "/apis/items/operations", None).await;
    let names: Vec<&str> = ops["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["getItem", "listItems"]);
    t.gateway_caught_up().await;
    let r = t
        .http
        .get(format!("{}/items-api/items/7", t.gateway_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(echoed["path"], "/items/7");
    let files = export(&t).await;
    assert!(files.contains_key("apis/items/specification.yaml"));
    assert!(files.contains_key("apis/items/schemas/wadl/apiSchemaInformation.json"));
}

#[tokio::test]
async fn a_wsdl_is_a_soap_pass_through_routed_by_action() {
    let t = TestInstance::start().await.unwrap();
    let backend = EchoBackend::start().await.unwrap();
    t.put_ok("/apis/calc", json!({"properties": {"displayName": "Calc", "path": "calc", "serviceUrl": backend.url, "protocols": ["http"], "subscriptionRequired": false, "format": "wsdl", "value": WSDL}})).await;
    let (_, api) = t.call("GET", "/apis/calc", None).await;
    assert_eq!(api["properties"]["type"], "soap");
    for (op, marker) in [("Add", "add"), ("Subtract", "subtract")] {
        t.put_ok(
            &format!("/apis/calc/operations/{op}/policies/policy"),
            json!({"properties": {"value": format!("<policies><inbound><base /><set-header name=\"x-op\" exists-action=\"override\"><value>{marker}</value></set-header></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>")}}),
        )
        .await;
    }
    t.gateway_caught_up().await;
    let envelope = "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><Add><a>1</a><b>2</b></Add></soap:Body></soap:Envelope>";
    let send = |headers: Vec<(&'static str, &'static str)>| {
        let mut req = t
            .http
            .post(format!("{}/calc", t.gateway_url()))
            .body(envelope);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (s, b) = send(vec![
        ("SOAPAction", "\"http://tempuri.org/Add\""),
        ("content-type", "text/xml"),
    ])
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-op"], "add");
    assert_eq!(b["body"], envelope);
    let (s, b) = send(vec![(
        "content-type",
        "application/soap+xml; charset=utf-8; action=\"http://tempuri.org/Subtract\"",
    )])
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-op"], "subtract");
    let (s, _) = send(vec![("SOAPAction", "http://tempuri.org/Multiply")]).await;
    assert_eq!(s, 404);
    // No action at all: the Body's first element names the operation (its input element).
    let by_body = "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><c:SubtractRequest xmlns:c=\"urn:calc\"><a>5</a></c:SubtractRequest></s:Body></s:Envelope>";
    let r = t
        .http
        .post(format!("{}/calc", t.gateway_url()))
        .header("content-type", "text/xml")
        .body(by_body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["headers"]["x-op"], "subtract");
    assert_eq!(b["body"], by_body, "the backend gets the body as sent");
    let r = t
        .http
        .post(format!("{}/calc", t.gateway_url()))
        .body("<s:Envelope xmlns:s=\"x\"><s:Body><Divide/></s:Body></s:Envelope>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Exported as the WSDL it came as, and imported from it into another instance.
    let files = export(&t).await;
    assert_eq!(
        std::str::from_utf8(&files["apis/calc/specification.wsdl"]).unwrap(),
        WSDL
    );
    assert!(!files.contains_key("apis/calc/specification.yaml"));
    let other = TestInstance::start().await.unwrap();
    let plan = import(&other, &files).await;
    assert!(
        plan["created"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "/apis/calc/operations/Add"),
        "{plan}"
    );
    let (_, op) = other
        .call("GET", "/apis/calc/operations/Subtract", None)
        .await;
    assert_eq!(
        op["properties"]["urlTemplate"],
        "/?soapAction=http://tempuri.org/Subtract"
    );
}

#[tokio::test]
async fn a_graphql_pass_through_checks_queries_against_its_schema() {
    let t = TestInstance::start().await.unwrap();
    let backend = EchoBackend::start().await.unwrap();
    t.put_ok("/apis/gql", json!({"properties": {"displayName": "GQL", "path": "gql", "type": "graphql", "serviceUrl": backend.url, "protocols": ["http"], "subscriptionRequired": false}})).await;
    let (s, e) = t
        .call("PUT", "/apis/gql/schemas/graphql", Some(json!({"properties": {"contentType": "application/vnd.ms-azure-apim.graphql.schema", "document": {"value": "type Query { x: Missing }"}}})))
        .await;
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1, column"),
        "{e}"
    );
    t.put_ok("/apis/gql/schemas/graphql", json!({"properties": {"contentType": "application/vnd.ms-azure-apim.graphql.schema", "document": {"value": SDL}}})).await;
    t.gateway_caught_up().await;

    let url = format!("{}/gql", t.gateway_url());
    let good = json!({"query": "{ hello(name: \"a\") count }"}).to_string();
    let r = t
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echoed: Value = r.json().await.unwrap();
    assert_eq!(echoed["body"], good, "the backend gets the body as sent");

    let r = t
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(json!({"query": "{ nope }"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let refused: Value = r.json().await.unwrap();
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nope"),
        "{refused}"
    );
    assert_eq!(refused["errors"][0]["locations"][0]["line"], 1);

    let r = t
        .http
        .get(format!("{url}?query=%7B%20count%20%7D"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = t
        .http
        .post(&url)
        .header("content-type", "application/graphql")
        .body("{ count(")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The schema travels as specification.graphql, and the other instance checks with it.
    let files = export(&t).await;
    assert_eq!(
        std::str::from_utf8(&files["apis/gql/specification.graphql"]).unwrap(),
        SDL
    );
    assert!(!files.contains_key("apis/gql/schemas/graphql/apiSchemaInformation.json"));
    let other = TestInstance::start().await.unwrap();
    import(&other, &files).await;
    other.gateway_caught_up().await;
    let r = other
        .http
        .post(format!("{}/gql", other.gateway_url()))
        .header("content-type", "application/json")
        .body(json!({"query": "{ nope }"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        export(&other).await,
        files,
        "export → import → export is the same"
    );
}

#[tokio::test]
async fn openapi_31_yaml_and_swagger_json_import() {
    let t = TestInstance::start().await.unwrap();
    let v31 = "openapi: 3.1.0\ninfo: {title: P, version: '1'}\npaths:\n  /p/{id}:\n    get:\n      operationId: getP\n      parameters: [{name: id, in: path, required: true, schema: {type: [integer, 'null']}}]\n      responses: {'200': {description: ok}}\n";
    t.put_ok(
        "/apis/p31",
        json!({"properties": {"path": "p31", "format": "openapi", "value": v31}}),
    )
    .await;
    let (_, op) = t.call("GET", "/apis/p31/operations/getP", None).await;
    assert_eq!(op["properties"]["templateParameters"][0]["type"], "integer");
    let v2 = json!({"swagger": "2.0", "info": {"title": "S", "version": "1"}, "paths": {"/s": {"post": {"operationId": "postS", "responses": {"201": {"description": "made"}}}}}}).to_string();
    t.put_ok(
        "/apis/s2",
        json!({"properties": {"path": "s2", "format": "swagger-json", "value": v2}}),
    )
    .await;
    let (s, _) = t.call("GET", "/apis/s2/operations/postS", None).await;
    assert_eq!(s, 200);
}

/// A WebSocket echo backend: answers each text frame with "echo: " + it, and reports the
/// handshake's path and headers as its first message. (Its handshake callback's error type is
/// tungstenite's, large by its design.)
#[allow(clippy::result_large_err)]
async fn websocket_backend() -> String {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = String::new();
                let callback = |req: &Request, resp: Response| {
                    let key = req.headers().get("ocp-apim-subscription-key").is_some();
                    seen = format!("{} key:{key}", req.uri());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                let _ = ws.send(Message::text(seen)).await;
                while let Some(Ok(msg)) = ws.next().await {
                    match msg {
                        Message::Text(t) => {
                            let _ = ws.send(Message::text(format!("echo: {t}"))).await;
                        }
                        Message::Binary(b) => {
                            let _ = ws.send(Message::binary(b)).await;
                        }
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
            });
        }
    });
    format!("ws://{addr}")
}

#[tokio::test]
async fn a_websocket_api_tunnels_frames_after_checking_the_key() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let t = TestInstance::start().await.unwrap();
    let backend = websocket_backend().await;
    t.put_ok("/apis/chat", json!({"properties": {"displayName": "Chat", "path": "chat", "type": "websocket", "serviceUrl": backend, "protocols": ["ws"]}})).await;
    let (key, _) = t.starter_subscription("chat").await;
    t.gateway_caught_up().await;
    let ws_url = t.gateway_url().replacen("http://", "ws://", 1);

    // Without a key: refused on the handshake, nothing reaches the backend.
    let err = tokio_tungstenite::connect_async(format!("{ws_url}/chat"))
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 401),
        other => panic!("{other}"),
    }

    let mut req = format!("{ws_url}/chat/room1?x=1")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Ocp-Apim-Subscription-Key", key.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    let first = ws.next().await.unwrap().unwrap();
    assert_eq!(
        first.into_text().unwrap().as_str(),
        "/room1?x=1 key:false",
        "the key is not passed on"
    );
    for i in 0..20 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let got = ws.next().await.unwrap().unwrap();
        assert_eq!(
            got.into_text().unwrap().as_str(),
            format!("echo: hello {i}")
        );
    }
    let big = vec![7u8; 300_000];
    ws.send(Message::binary(big.clone())).await.unwrap();
    let got = ws.next().await.unwrap().unwrap();
    assert_eq!(got.into_data().as_ref(), big.as_slice());
    ws.close(None).await.unwrap();

    // A plain HTTP request to the same API still routes (and is not an upgrade).
    let r = t
        .http
        .get(format!("{}/chat", t.gateway_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
