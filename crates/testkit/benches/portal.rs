//! Developer portal pages with 1,000 APIs (5 operations each, in 10 published products), side by
//! side with the floor: a static asset through the same router, listener and HTTP client, which
//! is what any page costs before the portal reads the store or renders. Times are from the
//! request's start to its last byte on loopback, sequential, for a guest and a signed-in user.
//!
//! Run: `cargo bench -p gatehouse-testkit --bench portal` (add `-- --quick` for a smoke run).

use gatehouse_testkit::TestInstance;
use gatehouse_testkit::portal::Visitor;
use serde_json::json;
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn load(t: &TestInstance, apis: usize) {
    let started = Instant::now();
    let products = 10;
    for p in 0..products {
        t.put_ok(&format!("/products/p{p}"), json!({"properties": {"displayName": format!("Product {p}"), "description": "A product of the benchmark", "state": "published"}})).await;
        t.put_ok(&format!("/products/p{p}/groups/guests"), json!({}))
            .await;
        t.put_ok(&format!("/products/p{p}/groups/developers"), json!({}))
            .await;
    }
    t.put_ok(
        "/tags/bench",
        json!({"properties": {"displayName": "bench"}}),
    )
    .await;
    let next = std::sync::atomic::AtomicUsize::new(0);
    futures::future::join_all((0..8).map(|_| async {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= apis {
                return;
            }
            t.put_ok(&format!("/apis/api{i:04}"), json!({"properties": {"displayName": format!("Orders API {i}"), "description": format!("Orders, invoices and shipments, number {i}."), "path": format!("orders{i:04}"), "serviceUrl": "http://127.0.0.1:9", "protocols": ["http"]}})).await;
            for o in 0..5 {
                t.put_ok(&format!("/apis/api{i:04}/operations/op{o}"), json!({"properties": {"displayName": format!("Operation {o}"), "method": "GET", "urlTemplate": format!("/items{o}/{{id}}"), "templateParameters": [{"name": "id", "type": "string", "required": true, "description": "The item"}],
                    "responses": [{"statusCode": 200, "description": "OK", "representations": [{"contentType": "application/json", "examples": {"default": {"value": {"id": 1, "name": "x"}}}}]}]}})).await;
            }
            t.put_ok(&format!("/products/p{}/apis/api{i:04}", i % products), json!({})).await;
            if i.is_multiple_of(10) {
                t.put_ok(&format!("/apis/api{i:04}/tags/bench"), json!({})).await;
            }
        }
    }))
    .await;
    eprintln!(
        "loaded {apis} APIs × 5 operations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// p50 and p99 of `n` sequential GETs of `path`.
async fn measure(v: &mut Visitor, path: &str, n: usize) -> (f64, f64, usize) {
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let started = Instant::now();
        let page = v.get(path).await;
        times.push(started.elapsed());
        assert_eq!(page.status, 200, "{path}");
        bytes = page.html.len();
    }
    times.sort();
    let p = |q: f64| ms(times[((times.len() - 1) as f64 * q).round() as usize]);
    (p(0.5), p(0.99), bytes)
}

/// p50 and p99 of GETs of `path`, each right after a change (the portal's caches are cold:
/// it reads the catalogue and the content again).
async fn measure_cold(t: &TestInstance, v: &mut Visitor, path: &str, n: usize) -> (f64, f64) {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        t.put_ok(
            &format!("/tags/cold-{}", i % 8),
            json!({"properties": {"displayName": format!("cold {i}")}}),
        )
        .await;
        let started = Instant::now();
        assert_eq!(v.get(path).await.status, 200);
        times.push(started.elapsed());
    }
    times.sort();
    let p = |q: f64| ms(times[((times.len() - 1) as f64 * q).round() as usize]);
    (p(0.5), p(0.99))
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (apis, n) = if quick { (50, 20) } else { (1000, 200) };
    let t = TestInstance::start().await.unwrap();
    load(&t, apis).await;
    t.put_ok("/users/dev", json!({"properties": {"email": "dev@example.com", "firstName": "D", "lastName": "V", "password": "a long bench password"}})).await;
    let mut guest = Visitor::new(&t.portal_url());
    let mut user = Visitor::new(&t.portal_url());
    assert_eq!(
        user.sign_in("dev@example.com", "a long bench password")
            .await
            .status,
        303
    );
    let pages = [
        ("floor: static asset", "/static/portal.css"),
        ("home", "/"),
        ("API catalogue (all)", "/apis"),
        ("catalogue search", "/apis?q=number+99"),
        ("catalogue by tag", "/apis?tag=bench"),
        ("an API", "/apis/api0500"),
        ("an operation + console", "/apis/api0500/operations/op3"),
        ("products", "/products"),
        ("a product", "/products/p5"),
    ];
    println!(
        "Portal pages, {apis} APIs × 5 operations, {n} sequential requests each (ms, request to last byte):"
    );
    println!(
        "{:<26} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "page", "guest p50", "guest p99", "user p50", "user p99", "bytes"
    );
    let mut worst: f64 = 0.0;
    for (name, path) in pages {
        let path = if quick {
            path.replace("0500", "0005").replace("99", "9")
        } else {
            path.to_string()
        };
        let (g50, g99, bytes) = measure(&mut guest, &path, n).await;
        let (u50, u99, _) = measure(&mut user, &path, n).await;
        if !name.starts_with("floor") {
            worst = worst.max(g99).max(u99);
        }
        println!("{name:<26} {g50:>10.2} {g99:>10.2} {u50:>10.2} {u99:>10.2} {bytes:>9}");
    }
    let api_page = if quick {
        "/apis/api0005"
    } else {
        "/apis/api0500"
    };
    for (name, path) in [("API catalogue (all)", "/apis"), ("an API", api_page)] {
        let (c50, c99) = measure_cold(&t, &mut guest, path, n / 2).await;
        worst = worst.max(c99);
        println!(
            "{:<26} {c50:>10.2} {c99:>10.2}   (guest, right after a change: caches cold)",
            format!("{name}, cold")
        );
    }
    println!(
        "result: every page p99 ≤ {worst:.1} ms with {apis} APIs, caches cold or warm (target < 50 ms)"
    );
}
