//! Configuration as files, through the built binary: `gatehouse export` and `gatehouse
//! import` between real instances — round trips compared by digest and byte for byte, a
//! folder written by hand in APIOps's documented layout that then serves traffic, plans,
//! applying twice, all-or-nothing on a bad file, prune, overrides with secrets from the
//! environment.

use gatehouse_testkit::EchoBackend;
use gatehouse_testkit::process::ServeProcess;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

struct Node {
    process: ServeProcess,
    url: String,
    gateway: String,
    token: String,
    dir: String,
}

fn start(root: &Path, name: &str) -> Node {
    let process = ServeProcess::spawn(
        BIN,
        root,
        &[
            "--data-dir",
            name,
            "--management-listen",
            "127.0.0.1:0",
            "--portal-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let e = process.endpoints();
    Node {
        url: e["management"].as_str().unwrap().to_string(),
        gateway: e["gateway"].as_str().unwrap().to_string(),
        token: process.token(),
        dir: process.data_dir.to_string_lossy().to_string(),
        process,
    }
}

impl Node {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.url),
            )
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn put(&self, path: &str, properties: Value) {
        let (s, b) = self
            .call("PUT", path, Some(json!({ "properties": properties })))
            .await;
        assert!(s == 200 || s == 201, "PUT {path}: {s} {b}");
    }

    async fn digest(&self, exclude: &[&str]) -> Value {
        let (s, b) = self
            .call("POST", "/digest", Some(json!({ "exclude": exclude })))
            .await;
        assert_eq!(s, 200, "{b}");
        b["kinds"].clone()
    }

    async fn revision(&self) -> u64 {
        let (_, b) = self.call("POST", "/digest", None).await;
        b["revision"].as_u64().unwrap()
    }

    /// Runs a client command against this instance.
    fn cli(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir").arg(&self.dir).args(args);
        for k in ["GATEHOUSE_URL", "GATEHOUSE_TOKEN", "GATEHOUSE_DATA_DIR"] {
            cmd.env_remove(k);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    gatehouse_apiops::dir::read_dir(dir).unwrap()
}

fn write(dir: &Path, file: &str, text: &str) {
    let p = dir.join(file);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const SPEC: &str = r#"openapi: 3.0.1
info:
  title: Echo
  version: "1.0"
paths:
  /items/{id}:
    get:
      operationId: get-item
      summary: Get an item
      description: One item by its id.
      parameters:
        - name: id
          in: path
          required: true
          description: The item's id.
          schema: { type: integer }
        - name: verbose
          in: query
          required: false
          schema: { type: boolean }
      responses:
        "200":
          description: The item
          content:
            application/json:
              example: { id: 1 }
        "404":
          description: No such item
  /items:
    post:
      operationId: add-item
      summary: Add an item
      responses:
        "201":
          description: Added
"#;

/// Every resource kind the layout carries, with policies at every scope.
async fn populate(a: &Node, backend: &str) {
    a.put(
        "/namedValues/region",
        json!({"displayName": "region", "value": "westeurope"}),
    )
    .await;
    a.put(
        "/namedValues/db-password",
        json!({"displayName": "db-password", "value": "hunter2", "secret": true}),
    )
    .await;
    a.put("/tags/public", json!({"displayName": "Public"}))
        .await;
    a.put("/loggers/appinsights", json!({"loggerType": "applicationInsights", "description": "AI", "credentials": {"instrumentationKey": "k"}})).await;
    a.put(
        "/backends/orders",
        json!({"url": backend, "protocol": "http", "description": "Orders"}),
    )
    .await;
    a.put(
        "/apiVersionSets/echo-versions",
        json!({"displayName": "Echo", "versioningScheme": "Segment"}),
    )
    .await;
    a.put("/policyFragments/stamp", json!({"value": "<fragment><set-header name=\"x-stamp\" exists-action=\"override\"><value>@(\"{{region}}\")</value></set-header></fragment>", "description": "Stamps the region"})).await;
    a.put(
        "/groups/partners",
        json!({"displayName": "Partners", "description": "Our partners"}),
    )
    .await;
    a.put("/users/alice", json!({"email": "alice@example.com", "firstName": "Alice", "lastName": "A", "password": "Passw0rd!x"})).await;
    a.put("/groups/partners/users/alice", json!({})).await;
    a.put("/policies/policy", json!({"value": "<policies><inbound><include-fragment fragment-id=\"stamp\" /></inbound><backend><forward-request /></backend><outbound /><on-error /></policies>"})).await;
    a.put("/diagnostics/applicationinsights", json!({"loggerId": "/loggers/appinsights", "alwaysLog": "allErrors", "sampling": {"samplingType": "fixed", "percentage": 50}})).await;
    a.put("/products/starter", json!({"displayName": "Starter", "description": "Try it", "subscriptionRequired": true, "state": "published"})).await;
    a.put("/products/starter/policies/policy", json!({"value": "<policies><inbound><base /><rate-limit calls=\"100\" renewal-period=\"60\" /></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"})).await;
    let (s, b) = a
        .call("PUT", "/apis/echo", Some(json!({"properties": {
            "displayName": "Echo", "path": "echo", "serviceUrl": backend, "protocols": ["http", "https"],
            "apiVersion": "v1", "apiVersionSetId": "/apiVersionSets/echo-versions",
            "format": "openapi", "value": SPEC}})))
        .await;
    assert!(s == 200 || s == 201, "{b}");
    a.put("/apis/echo/policies/policy", json!({"value": "<policies><inbound><base /><set-header name=\"x-api\" exists-action=\"override\"><value>@(context.Api.Name + \"&lt;1&gt;\")</value></set-header></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>", "format": "xml"})).await;
    a.put("/apis/echo/operations/get-item/policies/policy", json!({"value": "<policies><inbound><base /><set-query-parameter name=\"seen\" exists-action=\"override\"><value>@(context.Request.Headers.GetValueOrDefault(\"x-a\", \"none\"))</value></set-query-parameter></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"})).await;
    a.put(
        "/apis/echo/diagnostics/applicationinsights",
        json!({"loggerId": "/loggers/appinsights", "verbosity": "error"}),
    )
    .await;
    a.put("/apis/echo/tags/public", json!({})).await;
    a.put("/apis/echo/operations/get-item/tags/public", json!({}))
        .await;
    a.put("/apis/echo;rev=2", json!({"displayName": "Echo", "path": "echo", "serviceUrl": backend, "apiRevisionDescription": "next", "sourceApiId": "/apis/echo"})).await;
    a.put("/products/starter/apis/echo", json!({})).await;
    a.put("/products/starter/groups/partners", json!({})).await;
    a.put("/products/starter/tags/public", json!({})).await;
    a.put("/subscriptions/s1", json!({"displayName": "Alice's", "scope": "/products/starter", "ownerId": "/users/alice", "state": "active"})).await;
    a.put(
        "/gateways/edge",
        json!({"locationData": {"name": "westeurope"}, "description": "Edge"}),
    )
    .await;
    a.put("/gateways/edge/apis/echo", json!({})).await;
}

/// What the export leaves out on purpose: secret values, keys, passwords, credentials.
const SECRET_BEARING: &[&str] = &[
    "/namedValues/db-password",
    "/subscriptions/s1",
    "/subscriptions/master",
    "/users/alice",
    "/loggers/appinsights",
    "/gateways/edge",
];

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_round_trips_through_files() {
    let root = tempfile::tempdir().unwrap();
    let backend = EchoBackend::start().await.unwrap();
    let a = start(root.path(), "a");
    let b = start(root.path(), "b");
    populate(&a, &backend.url).await;

    let first = root.path().join("first");
    let out = ok(&a.cli(&["export", "--dir", first.to_str().unwrap()], &[]));
    assert!(out.starts_with("exported "), "{out}");
    let files = tree(&first);
    for f in [
        "policy.xml",
        "apis/echo/apiInformation.json",
        "apis/echo/specification.yaml",
        "apis/echo/policy.xml",
        "apis/echo/operations/get-item/policy.xml",
        "apis/echo/diagnostics/applicationinsights/diagnosticInformation.json",
        "apis/echo;rev=2/apiInformation.json",
        "products/starter/productInformation.json",
        "products/starter/policy.xml",
        "products/starter/apis/echo/productApiInformation.json",
        "products/starter/groups/partners/productGroupInformation.json",
        "named values/region/namedValueInformation.json",
        "named values/db-password/namedValueInformation.json",
        "backends/orders/backendInformation.json",
        "loggers/appinsights/loggerInformation.json",
        "diagnostics/applicationinsights/diagnosticInformation.json",
        "policy fragments/stamp/policyFragmentInformation.json",
        "policy fragments/stamp/policy.xml",
        "version sets/echo-versions/versionSetInformation.json",
        "tags/public/tagInformation.json",
        "tags/public/apis/echo/tagApiInformation.json",
        "tags/public/products/starter/tagProductInformation.json",
        "subscriptions/s1/subscriptionInformation.json",
        "groups/partners/groupInformation.json",
        "gateways/edge/gatewayInformation.json",
        "gateways/edge/apis/echo/gatewayApiInformation.json",
    ] {
        assert!(files.contains_key(f), "{f} missing from {:?}", files.keys());
    }
    assert!(!files.keys().any(|f| f.starts_with("subscriptions/master")
        || f.starts_with("groups/developers/groupInformation")));
    let all = files
        .values()
        .map(|v| String::from_utf8_lossy(v).to_string())
        .collect::<String>();
    for secret in ["hunter2", "Passw0rd", "\"k\""] {
        assert!(
            !all.contains(secret),
            "the export holds the secret {secret}"
        );
    }
    // APIM's raw form: the entities of an xml-format expression are written as characters.
    let api_policy = String::from_utf8_lossy(&files["apis/echo/policy.xml"]).to_string();
    assert!(
        api_policy.contains("context.Api.Name + \"<1>\""),
        "{api_policy}"
    );

    // An APIOps extractor filter keeps what it names, per type.
    let filtered = root.path().join("filtered");
    let filter = root.path().join("configuration.extractor.yaml");
    std::fs::write(
        &filter,
        "apis:\n  - echo:\n      operations: []\nnamedValues: [region]\n",
    )
    .unwrap();
    ok(&a.cli(
        &[
            "export",
            "--dir",
            filtered.to_str().unwrap(),
            "--filter",
            filter.to_str().unwrap(),
        ],
        &[],
    ));
    let f = tree(&filtered);
    assert!(f.contains_key("apis/echo/apiInformation.json"));
    assert!(
        !f.keys().any(|k| k.contains("/operations/")),
        "{:?}",
        f.keys()
    );
    assert!(f.contains_key("named values/region/namedValueInformation.json"));
    assert!(!f.contains_key("named values/db-password/namedValueInformation.json"));
    assert!(f.contains_key("products/starter/productInformation.json"));

    // The secret has no value in the folder: a plan into the empty instance says so.
    let err = failed(&b.cli(&["import", "--dir", first.to_str().unwrap(), "--plan"], &[]));
    assert!(
        err.contains("named values/db-password/namedValueInformation.json")
            && err.contains("has no value"),
        "{err}"
    );

    let overrides = root.path().join("configuration.prod.yaml");
    std::fs::write(
        &overrides,
        "namedValues:\n  - name: db-password\n    properties:\n      value: \"{#DB_PASSWORD#}\"\n",
    )
    .unwrap();
    let err = failed(&b.cli(
        &[
            "import",
            "--dir",
            first.to_str().unwrap(),
            "--overrides",
            overrides.to_str().unwrap(),
        ],
        &[],
    ));
    assert!(err.contains("DB_PASSWORD"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let before = b.revision().await;
    let env = [("DB_PASSWORD", "hunter2")];
    let args = [
        "import",
        "--dir",
        first.to_str().unwrap(),
        "--overrides",
        overrides.to_str().unwrap(),
    ];
    let plan: Value = serde_json::from_str(&ok(
        &b.cli(&[&args[..], &["--plan", "--json"]].concat(), &env)
    ))
    .unwrap();
    assert_eq!(plan["applied"], false);
    assert!(plan["created"].as_array().unwrap().len() > 20, "{plan}");
    assert_eq!(b.revision().await, before, "a plan writes nothing");

    let applied = ok(&b.cli(&args, &env));
    assert!(
        applied
            .lines()
            .any(|l| l.starts_with("+ /apis/echo  (apis/echo/apiInformation.json)")),
        "{applied}"
    );
    assert_eq!(b.revision().await, before + 1, "one import is one revision");
    let (_, secret) = b
        .call("POST", "/namedValues/db-password/listValue", None)
        .await;
    assert_eq!(secret["value"], "hunter2");

    for op in [
        "/apis/echo/operations/get-item",
        "/apis/echo/operations/add-item",
        "/apis/echo;rev=2/operations/get-item",
    ] {
        let (_, x) = a.call("GET", op, None).await;
        let (_, y) = b.call("GET", op, None).await;
        assert_eq!(x, y, "{op}");
    }
    // The API's policy was stored as `xml` with entities inside an expression: it comes back
    // in APIM's raw form (`rawxml`), the same document; everything else is equal.
    let (_, policy) = b.call("GET", "/apis/echo/policies/policy", None).await;
    assert_eq!(policy["properties"]["format"], "rawxml", "{policy}");
    assert!(
        policy["properties"]["value"]
            .as_str()
            .unwrap()
            .contains("\"<1>\"")
    );
    let exclude = [
        SECRET_BEARING,
        &[
            "/apis/echo/policies/policy",
            "/apis/echo;rev=2/policies/policy",
        ],
    ]
    .concat();
    assert_eq!(a.digest(&exclude).await, b.digest(&exclude).await);

    // Applying again changes nothing and writes nothing.
    let again = ok(&b.cli(&args, &env));
    assert!(again.contains("0 created, 0 updated, 0 deleted"), "{again}");
    assert_eq!(b.revision().await, before + 1);

    // Export → import → export: the same bytes.
    let second = root.path().join("second");
    ok(&b.cli(&["export", "--dir", second.to_str().unwrap()], &[]));
    assert_eq!(tree(&first), tree(&second));

    // The same instance as an ARM template, deployed into a third, empty instance.
    let c = start(root.path(), "c");
    let template = root.path().join("template.json");
    ok(&a.cli(
        &[
            "export",
            "--format",
            "arm",
            "--out",
            template.to_str().unwrap(),
        ],
        &[],
    ));
    let t: Value = serde_json::from_str(&std::fs::read_to_string(&template).unwrap()).unwrap();
    assert_eq!(t["resources"][0]["type"], "Microsoft.ApiManagement/service");
    assert_eq!(
        t["parameters"]["namedValue_db_password"]["type"],
        "securestring"
    );
    assert!(!t.to_string().contains("hunter2"));
    let err = failed(&c.cli(&["import", "--arm", template.to_str().unwrap()], &[]));
    assert!(
        err.contains("'namedValue_db_password' has no value"),
        "{err}"
    );
    let params = root.path().join("params.json");
    std::fs::write(&params, r#"{"parameters": {"serviceName": {"value": "contoso-west"}, "namedValue_db_password": {"value": "hunter2"}}}"#).unwrap();
    let arm = [
        "import",
        "--arm",
        template.to_str().unwrap(),
        "--parameters",
        params.to_str().unwrap(),
    ];
    ok(&c.cli(&arm, &[]));
    assert_eq!(
        a.digest(SECRET_BEARING).await,
        c.digest(SECRET_BEARING).await
    );
    let again = ok(&c.cli(&arm, &[]));
    assert!(again.contains("0 created, 0 updated, 0 deleted"), "{again}");

    drop((a.process, b.process, c.process));
}

/// A folder as APIOps's extractor writes it from an APIM instance (full ARM ids, read-only
/// properties, a Swagger 2 specification, raw policy expressions, a release file).
fn apim_folder(dir: &Path, backend: &str) {
    let arm =
        "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ApiManagement/service/apim-dev";
    write(
        dir,
        "policy.xml",
        r#"<policies>
  <inbound>
    <choose>
      <when condition="@(context.Request.Headers.GetValueOrDefault("x-debug", "") == "1")">
        <set-header name="x-debug-seen" exists-action="override"><value>yes</value></set-header>
      </when>
    </choose>
  </inbound>
  <backend><forward-request /></backend>
  <outbound />
  <on-error />
</policies>"#,
    );
    write(
        dir,
        "named values/orders-key/namedValueInformation.json",
        r#"{"properties": {"displayName": "orders-key", "secret": true, "tags": []}}"#,
    );
    write(
        dir,
        "version sets/orders/versionSetInformation.json",
        r#"{"properties": {"displayName": "Orders", "versioningScheme": "Segment"}}"#,
    );
    write(
        dir,
        "apis/orders/apiInformation.json",
        &format!(
            r#"{{
  "properties": {{
    "apiRevision": "1",
    "apiVersion": "v1",
    "apiVersionSetId": "{arm}/apiVersionSets/orders",
    "authenticationSettings": {{"oAuth2AuthenticationSettings": [], "openidAuthenticationSettings": []}},
    "displayName": "Orders API",
    "isCurrent": true,
    "isOnline": true,
    "path": "orders",
    "protocols": ["http", "https"],
    "serviceUrl": "{backend}",
    "subscriptionKeyParameterNames": {{"header": "Ocp-Apim-Subscription-Key", "query": "subscription-key"}},
    "subscriptionRequired": true,
    "type": "http"
  }}
}}"#
        ),
    );
    write(
        dir,
        "apis/orders/specification.json",
        r#"{
  "swagger": "2.0",
  "info": {"title": "Orders API", "version": "v1"},
  "host": "apim-dev.azure-api.net",
  "basePath": "/orders/v1",
  "schemes": ["https"],
  "paths": {
    "/items/{id}": {
      "get": {
        "operationId": "get-item",
        "summary": "Get an item",
        "parameters": [{"name": "id", "in": "path", "required": true, "type": "string"}],
        "responses": {"200": {"description": "OK"}}
      }
    }
  }
}"#,
    );
    write(
        dir,
        "apis/orders/policy.xml",
        r#"<policies>
  <inbound>
    <base />
    <set-header name="x-orders-key" exists-action="override"><value>{{orders-key}}</value></set-header>
  </inbound>
  <backend><base /></backend>
  <outbound><base /></outbound>
  <on-error><base /></on-error>
</policies>"#,
    );
    write(
        dir,
        "apis/orders/releases/r1/apiReleaseInformation.json",
        r#"{"properties": {"notes": "first"}}"#,
    );
    write(
        dir,
        "products/orders-product/productInformation.json",
        r#"{"properties": {"displayName": "Orders", "description": "Orders for partners", "subscriptionRequired": true, "approvalRequired": false, "state": "published"}}"#,
    );
    write(
        dir,
        "products/orders-product/apis/orders/productApiInformation.json",
        "{}",
    );
    write(
        dir,
        "subscriptions/partner/subscriptionInformation.json",
        &format!(
            r#"{{"properties": {{"displayName": "Partner", "scope": "{arm}/products/orders-product", "state": "active", "allowTracing": false}}}}"#
        ),
    );
    write(
        dir,
        "tags/extra/tagInformation.json",
        r#"{"properties": {"displayName": "Extra"}}"#,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_apiops_folder_from_apim_imports_and_serves() {
    let root = tempfile::tempdir().unwrap();
    let backend = EchoBackend::start().await.unwrap();
    let node = start(root.path(), "gh");
    let folder = root.path().join("artifacts");
    apim_folder(&folder, &backend.url);
    let overrides = root.path().join("configuration.prod.yaml");
    std::fs::write(&overrides, "apimServiceName: apim-prod\nnamedValues:\n  - name: orders-key\n    properties:\n      value: \"{#ORDERS_KEY#}\"\n").unwrap();
    let dir = folder.to_str().unwrap();
    let env = [("ORDERS_KEY", "k-123")];
    let import = [
        "import",
        "--dir",
        dir,
        "--overrides",
        overrides.to_str().unwrap(),
    ];

    let out = ok(&node.cli(&import, &env));
    assert!(
        out.contains("! apis/orders/releases/r1/apiReleaseInformation.json: API releases"),
        "{out}"
    );
    assert!(
        out.contains("+ /apis/orders/operations/get-item  (apis/orders/specification.json)"),
        "{out}"
    );
    let (_, api) = node.call("GET", "/apis/orders", None).await;
    assert_eq!(
        api["properties"]["apiVersionSetId"], "/apiVersionSets/orders",
        "{api}"
    );
    let (_, keys) = node
        .call("POST", "/subscriptions/partner/listSecrets", None)
        .await;
    let key = keys["primaryKey"].as_str().unwrap().to_string();

    let gateway_get = |debug: &'static str| {
        let url = format!("{}/orders/v1/items/5", node.gateway);
        let key = key.clone();
        async move {
            let resp = reqwest::Client::new()
                .get(url)
                .header("Ocp-Apim-Subscription-Key", key)
                .header("x-debug", debug)
                .send()
                .await
                .unwrap();
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let mut served = (0, Value::Null);
    for _ in 0..50 {
        served = gateway_get("1").await;
        if served.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(served.0, 200, "{}", served.1);
    assert_eq!(served.1["path"], "/items/5");
    assert_eq!(served.1["headers"]["x-orders-key"], "k-123");
    assert_eq!(served.1["headers"]["x-debug-seen"], "yes");

    // Unchanged folder: nothing to do.
    let revision = node.revision().await;
    let again = ok(&node.cli(&import, &env));
    assert!(again.contains("0 created, 0 updated, 0 deleted"), "{again}");

    // One bad policy: nothing changes, and the error says where.
    let good = std::fs::read_to_string(folder.join("apis/orders/policy.xml")).unwrap();
    write(
        &folder,
        "products/orders-product/productInformation.json",
        r#"{"properties": {"displayName": "Orders, renamed", "subscriptionRequired": true, "state": "published"}}"#,
    );
    write(
        &folder,
        "apis/orders/policy.xml",
        "<policies>\n  <inbound>\n    <set-header name=\"a\" exists-action=\"sometimes\"><value>x</value></set-header>\n  </inbound>\n</policies>",
    );
    let err = failed(&node.cli(&import, &env));
    assert!(
        err.contains("apis/orders/policy.xml") && err.contains("line 3"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        node.revision().await,
        revision,
        "a failed import changes nothing"
    );
    let (_, product) = node.call("GET", "/products/orders-product", None).await;
    assert_eq!(product["properties"]["displayName"], "Orders");
    write(&folder, "apis/orders/policy.xml", &good);

    // The plan names the update and its property; applying it is one more revision.
    let plan = ok(&node.cli(&[&import[..], &["--plan"]].concat(), &env));
    assert!(
        plan.contains("~ /products/orders-product  description, displayName"),
        "{plan}"
    );
    ok(&node.cli(&import, &env));
    assert_eq!(node.revision().await, revision + 1);

    // Without --prune nothing is deleted; with it, the plan lists the deletion first.
    std::fs::remove_dir_all(folder.join("tags/extra")).unwrap();
    write(
        &folder,
        "tags/kept/tagInformation.json",
        r#"{"properties": {"displayName": "Kept"}}"#,
    );
    let out = ok(&node.cli(&import, &env));
    assert!(!out.contains("- /tags/extra"), "{out}");
    let plan = ok(&node.cli(&[&import[..], &["--plan", "--prune"]].concat(), &env));
    assert!(
        plan.contains("- /tags/extra  (not in the folder, and 'tags' is (prune))"),
        "{plan}"
    );
    assert!(!plan.contains("- /apis/"), "{plan}");
    let err = failed(&node.cli(&[&import[..], &["--prune"]].concat(), &env));
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(node.call("GET", "/tags/extra", None).await.0, 200);
    ok(&node.cli(&[&import[..], &["--prune", "--yes"]].concat(), &env));
    assert_eq!(node.call("GET", "/tags/extra", None).await.0, 404);
    assert_eq!(
        node.call("GET", "/subscriptions/master", None).await.0,
        200,
        "the built-in subscription stays"
    );
    drop(node.process);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_takes_zip_and_tar_and_refuses_archives_that_escape() {
    let root = tempfile::tempdir().unwrap();
    let node = start(root.path(), "api");
    let files: gatehouse_apiops::Files = [(
        "tags/t1/tagInformation.json".to_string(),
        br#"{"properties": {"displayName": "T1"}}"#.to_vec(),
    )]
    .into_iter()
    .collect();
    let post = |body: Vec<u8>, query: &'static str| {
        let url = format!("{}/import{query}", node.url);
        let token = node.token.clone();
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, plan) = post(gatehouse_apiops::archive::zip(&files), "?plan=true").await;
    assert_eq!(s, 200, "{plan}");
    assert_eq!(plan["created"][0]["id"], "/tags/t1");
    assert_eq!(plan["applied"], false);
    assert_eq!(node.call("GET", "/tags/t1", None).await.0, 404);
    // During a freeze (a move's final delta) a plan is answered, an apply refused.
    let (s, _) = node
        .call(
            "POST",
            "/freeze",
            Some(json!({"seconds": 60, "reason": "test"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, plan) = post(gatehouse_apiops::archive::zip(&files), "?plan=true").await;
    assert_eq!(s, 200, "{plan}");
    let (s, refused) = post(gatehouse_apiops::archive::zip(&files), "").await;
    assert_eq!(s, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "ServiceIsBeingMoved");
    node.call("DELETE", "/freeze", None).await;
    let (s, done) = post(gatehouse_apiops::archive::tar_gz(&files), "").await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(node.call("GET", "/tags/t1", None).await.0, 200);

    // A zip whose entry climbs out of the folder.
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("../../etc/evil", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut w, b"x").unwrap();
    let evil = w.finish().unwrap().into_inner();
    let (s, e) = post(evil, "").await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["code"], "InvalidArchive");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("../../etc/evil"),
        "{e}"
    );

    // GET /export is a zip of the same layout.
    let zip = reqwest::Client::new()
        .get(format!("{}/export", node.url))
        .bearer_auth(&node.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let exported =
        gatehouse_apiops::archive::read(&zip, gatehouse_apiops::archive::LIMITS).unwrap();
    assert_eq!(
        exported["tags/t1/tagInformation.json"],
        gatehouse_apiops::json::info_file(
            &serde_json::from_str(r#"{"displayName": "T1"}"#).unwrap()
        )
    );
    drop(node.process);
}
