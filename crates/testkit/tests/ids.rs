//! No id addresses a resource other than itself: ids generated from the characters that mean
//! something in a path (`%`, `/`, `\`, `.`, `?`, `#`, `;`, spaces, non-ASCII), put into paths as
//! the CLI does (one percent-encoded segment each), either are refused — and nothing changes —
//! or create exactly the resource they name, which a GET and a DELETE of the same path reach,
//! while the resources beside it stay.

use gatehouse_client::{Client, path_segment};
use gatehouse_testkit::TestInstance;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

fn ids() -> impl Strategy<Value = String> {
    let piece = proptest::sample::select(vec![
        "a", "Z", "0", "-", "_", "~", ".", "..", "/", "\\", "%", "%2e", "%2E%2e", "%2F", "%25",
        "?", "#", ";", ";rev=1", "=", " ", "ü", "日本", "+", "&", "'", "\"", "apis", "products",
        "*", ":", "@", "!", "$",
    ]);
    proptest::collection::vec(piece, 1..6).prop_map(|pieces| pieces.concat())
}

async fn names(client: &Client, collection: &str) -> Vec<String> {
    client
        .list_all(collection)
        .await
        .expect("list")
        .iter()
        .map(|v| v["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_id_addresses_a_resource_other_than_itself() {
    let t = TestInstance::start().await.unwrap();
    let client = Client::new(&t.url, &t.token).unwrap();
    client
        .put(
            "/apis/bystander",
            &json!({"properties": {"displayName": "B", "path": "b"}}),
        )
        .await
        .unwrap();
    client
        .put(
            "/products/bystander",
            &json!({"properties": {"displayName": "B"}}),
        )
        .await
        .unwrap();
    let products_before = names(&client, "/products").await;
    let apis_before = names(&client, "/apis").await;
    let mut runner = TestRunner::default();
    let (mut created, mut refused) = (0, 0);
    for _ in 0..300 {
        let id = ids().new_tree(&mut runner).unwrap().current();
        let path = format!("/products/{}", path_segment(&id));
        let body = json!({"properties": {"displayName": "generated"}});
        match client.put(&path, &body).await {
            Ok(put) => {
                created += 1;
                assert_eq!(put["name"], json!(id), "PUT {path}");
                let got = client.get(&path).await.expect("GET what was created");
                assert_eq!(got["name"], json!(id), "GET {path}");
                let mut expected = products_before.clone();
                expected.push(id.clone());
                expected.sort();
                let mut now = names(&client, "/products").await;
                now.sort();
                assert_eq!(now, expected, "exactly {id:?} was added");
                client
                    .send(reqwest::Method::DELETE, &path, None)
                    .await
                    .expect("DELETE what was created");
            }
            Err(_) => refused += 1,
        }
        // A subscription by the same id: deleting it never reaches anything else.
        let _ = client
            .send(
                reqwest::Method::DELETE,
                &format!("/subscriptions/{}", path_segment(&id)),
                None,
            )
            .await;
        assert_eq!(
            names(&client, "/products").await,
            products_before,
            "after {id:?}"
        );
        assert_eq!(names(&client, "/apis").await, apis_before, "after {id:?}");
        let service: Value = client.get("/").await.expect("the service is still there");
        assert_eq!(service["name"], "gatehouse");
    }
    assert!(
        created > 20 && refused > 20,
        "both kinds were tried: {created} created, {refused} refused"
    );
}
