//! The routing rules of `docs/routing.md`, one test case per row of its table: the table is
//! read from the document, so the documentation and the behaviour cannot drift apart.

use gatehouse_testkit::{EchoBackend, TestInstance};
use serde_json::{Value, json};

struct Row {
    rule: String,
    operations: Vec<(String, String)>,
    method: String,
    path: String,
    answered_by: Option<String>,
}

fn unquote(cell: &str) -> &str {
    cell.trim().trim_matches('`')
}

fn method_and_target(cell: &str) -> (String, String) {
    let (m, t) = unquote(cell).split_once(' ').expect("METHOD target");
    (m.trim().to_string(), t.trim().to_string())
}

fn rows() -> Vec<Row> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/routing.md"
    ))
    .expect("docs/routing.md");
    let table = doc
        .split("| rule | operations | request | answered by |")
        .nth(1)
        .expect("the table of rules");
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
            assert_eq!(cells.len(), 4, "four cells: {line}");
            let operations = unquote(cells[1])
                .split(';')
                .map(method_and_target)
                .collect();
            let (method, path) = method_and_target(cells[2]);
            let answer = unquote(cells[3]);
            Row {
                rule: cells[0].trim().to_string(),
                operations,
                method,
                path,
                answered_by: (answer != "404").then(|| answer.to_string()),
            }
        })
        .collect()
}

async fn setup(t: &TestInstance, backend: &EchoBackend, row: &Row) {
    t.call("DELETE", "/apis/api", None).await;
    t.put_ok("/apis/api", json!({"properties": {"displayName": "api", "path": "api", "serviceUrl": backend.url, "protocols": ["http"], "subscriptionRequired": false}})).await;
    for (i, (method, template)) in row.operations.iter().enumerate() {
        let params: Vec<Value> = gatehouse_management::rules::template_parameters(template)
            .expect("a valid template")
            .into_iter()
            .map(|name| json!({"name": name, "type": "string", "required": true}))
            .collect();
        t.put_ok(
            &format!("/apis/api/operations/op{i}"),
            json!({"properties": {"displayName": format!("op{i}"), "method": method, "urlTemplate": template, "templateParameters": params}}),
        )
        .await;
    }
    t.put_ok(
        "/apis/api/policies/policy",
        json!({"properties": {"format": "rawxml", "value": "<policies><inbound><base /><set-header name=\"x-matched\" exists-action=\"override\"><value>@(context.Operation.Method + \" \" + context.Operation.UrlTemplate)</value></set-header></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"}}),
    )
    .await;
    t.gateway_caught_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_of_the_routing_table_holds() {
    let t = TestInstance::start().await.unwrap();
    let backend = EchoBackend::start().await.unwrap();
    let http = reqwest::Client::new();
    let rows = rows();
    assert!(rows.len() >= 20, "the table was read: {} rows", rows.len());
    let mut failures = Vec::new();
    for row in &rows {
        setup(&t, &backend, row).await;
        let r = http
            .request(
                row.method.parse().unwrap(),
                format!("{}{}", t.gateway_url(), row.path),
            )
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let outcome = match status {
            200 => body["headers"]["x-matched"].as_str().map(str::to_string),
            404 if body["message"] == "Unable to match incoming request to an operation." => None,
            other => Some(format!("status {other}: {body}")),
        };
        if outcome != row.answered_by {
            failures.push(format!(
                "{}: {} {} answered by {outcome:?}, expected {:?}",
                row.rule, row.method, row.path, row.answered_by
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_wildcard_that_is_not_last_is_refused() {
    let t = TestInstance::start().await.unwrap();
    t.put_ok(
        "/apis/api",
        json!({"properties": {"displayName": "api", "path": "api"}}),
    )
    .await;
    for template in ["/a/*/b", "/{*rest}/x"] {
        let params = if template.contains("rest") {
            json!([{"name": "rest", "type": "string", "required": true}])
        } else {
            json!([])
        };
        let (s, e) = t
            .call(
                "PUT",
                "/apis/api/operations/w",
                Some(json!({"properties": {"displayName": "w", "method": "GET", "urlTemplate": template, "templateParameters": params}})),
            )
            .await;
        assert_eq!(s, 400, "{template}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("must be the last segment"),
            "{e}"
        );
    }
}
