//! Configuration-as-files benchmark: a folder in APIOps's layout with 1,000 APIs × 10
//! operations (an OpenAPI specification each), a policy on every API and every operation, and
//! 100 products holding 10 APIs each — imported into an empty instance over `POST /import`,
//! planned again unchanged, exported with `GET /export`; beside it, in the same run, the floor:
//! the store's bare write of the same resources in one transaction (no rules, no policy
//! compilation, no HTTP).
//!
//! Run: `cargo bench -p gatehouse-testkit --bench folder` (`-- --quick` for a tenth of it).

use gatehouse_apiops::{Files, archive};
use gatehouse_model::{Kind, ResourcePath};
use gatehouse_store::{Store, StoreError};
use gatehouse_testkit::TestInstance;
use serde_json::{Map, Value, json};
use std::fmt::Write;
use std::time::Instant;

const POLICY: &str = r#"<policies>
  <inbound>
    <base />
    <set-header name="x-api" exists-action="override"><value>@(context.Api.Name)</value></set-header>
  </inbound>
  <backend><base /></backend>
  <outbound><base /></outbound>
  <on-error><base /></on-error>
</policies>"#;

fn spec(api: &str) -> String {
    let mut s = format!("openapi: 3.0.1\ninfo:\n  title: {api}\n  version: '1'\npaths:\n");
    for o in 0..10 {
        let _ = write!(
            s,
            "  /r{o}/{{id}}:\n    get:\n      operationId: op{o}\n      summary: Operation {o}\n      parameters:\n        - name: id\n          in: path\n          required: true\n          schema: {{type: string}}\n      responses:\n        '200':\n          description: OK\n"
        );
    }
    s
}

fn folder(apis: usize, products: usize) -> Files {
    let mut f = Files::new();
    let mut add = |p: String, t: String| {
        f.insert(p, t.into_bytes());
    };
    for a in 0..apis {
        let api = format!("api{a:04}");
        add(
            format!("apis/{api}/apiInformation.json"),
            json!({"properties": {"displayName": api, "path": api, "serviceUrl": "https://backend.example.com", "protocols": ["https"]}}).to_string(),
        );
        add(format!("apis/{api}/specification.yaml"), spec(&api));
        add(format!("apis/{api}/policy.xml"), POLICY.into());
        for o in 0..10 {
            add(
                format!("apis/{api}/operations/op{o}/policy.xml"),
                POLICY.into(),
            );
        }
    }
    for p in 0..products {
        let product = format!("product{p:03}");
        add(
            format!("products/{product}/productInformation.json"),
            json!({"properties": {"displayName": product, "subscriptionRequired": true, "state": "published"}}).to_string(),
        );
        add(format!("products/{product}/policy.xml"), POLICY.into());
        for i in 0..10 {
            let api = format!("api{:04}", (p * 10 + i) % apis);
            add(
                format!("products/{product}/apis/{api}/productApiInformation.json"),
                "{}".into(),
            );
        }
    }
    f
}

/// The same resources written straight into a store in one transaction.
fn floor(apis: usize, products: usize) -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_dir(dir.path()).unwrap();
    let obj = |v: Value| -> Map<String, Value> { v.as_object().unwrap().clone() };
    let policy = || obj(json!({"value": POLICY, "format": "xml"}));
    let started = Instant::now();
    let committed = store
        .write(|w| -> Result<u64, StoreError> {
            let mut n = 0;
            for a in 0..apis {
                let api = format!("api{a:04}");
                w.put(&ResourcePath::top(Kind::Api, &api), obj(json!({"displayName": api, "path": api, "serviceUrl": "https://backend.example.com", "protocols": ["https"]})), &[])?;
                let parts = |c: &'static str, id: String| vec![("apis", api.clone()), (c, id)];
                w.put(&ResourcePath::new(Kind::ApiPolicy, parts("policies", "policy".into())), policy(), &[])?;
                for o in 0..10 {
                    let op = parts("operations", format!("op{o}"));
                    w.put(&ResourcePath::new(Kind::Operation, op.clone()), obj(json!({"displayName": format!("Operation {o}"), "method": "GET", "urlTemplate": format!("/r{o}/{{id}}"), "templateParameters": [{"name": "id", "type": "string", "required": true, "values": []}], "request": {"queryParameters": [], "headers": [], "representations": []}, "responses": [{"statusCode": 200, "description": "OK", "representations": [], "headers": []}]})), &[])?;
                    let mut pp = op;
                    pp.push(("policies", "policy".into()));
                    w.put(&ResourcePath::new(Kind::OperationPolicy, pp), policy(), &[])?;
                    n += 2;
                }
                n += 2;
            }
            for p in 0..products {
                let product = format!("product{p:03}");
                w.put(&ResourcePath::top(Kind::Product, &product), obj(json!({"displayName": product, "subscriptionRequired": true, "state": "published"})), &[])?;
                w.put(&ResourcePath::new(Kind::ProductPolicy, vec![("products", product.clone()), ("policies", "policy".into())]), policy(), &[])?;
                for i in 0..10 {
                    let api = format!("api{:04}", (p * 10 + i) % apis);
                    w.put(&ResourcePath::new(Kind::ProductApi, vec![("products", product.clone()), ("apis", api.clone())]), Map::new(), &[format!("/apis/{api}")])?;
                }
                n += 12;
            }
            Ok(n)
        })
        .unwrap();
    (started.elapsed().as_secs_f64(), committed.value)
}

async fn post(t: &TestInstance, query: &str, body: Vec<u8>) -> (f64, Value) {
    let started = Instant::now();
    let resp = t
        .http
        .post(format!("{}/import{query}", t.url))
        .bearer_auth(&t.token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let plan: Value = resp.json().await.unwrap();
    (started.elapsed().as_secs_f64(), plan)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (apis, products) = if quick { (100, 10) } else { (1_000, 100) };
    let files = folder(apis, products);
    let body = archive::tar_gz(&files);
    let t = TestInstance::start().await.unwrap();

    let (import_s, plan) = post(&t, "", body.clone()).await;
    let created = plan["created"].as_array().unwrap().len();
    let (plan_s, again) = post(&t, "?plan=true", body).await;
    assert_eq!(again["created"].as_array().unwrap().len(), 0);
    assert_eq!(again["updated"].as_array().unwrap().len(), 0);

    let started = Instant::now();
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
    let export_s = started.elapsed().as_secs_f64();
    let exported = archive::read(&zip, archive::LIMITS).unwrap().len();
    let (floor_s, floor_n) = floor(apis, products);

    println!(
        "folder: {} files, {apis} APIs × 10 operations, {products} products; {created} resources created",
        files.len()
    );
    println!("{:<44} {:>10}", "", "seconds");
    println!(
        "{:<44} {import_s:>10.2}",
        "POST /import (apply, one transaction)"
    );
    println!(
        "{:<44} {plan_s:>10.2}",
        "POST /import?plan=true (unchanged)"
    );
    println!(
        "{:<44} {export_s:>10.2}",
        format!("GET /export ({exported} files)")
    );
    println!(
        "{:<44} {floor_s:>10.2}",
        format!("floor: bare store write of {floor_n} resources")
    );
    println!(
        "import {:.1}× the floor; targets (full size): import < 5 s, export < 2 s, plan < 2 s",
        import_s / floor_s
    );
}
