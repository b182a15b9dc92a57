//! The control plane's schema on a real PostgreSQL (Debian's, its own cluster per test binary):
//! migrations applied once when nodes start together, a newer schema refused, a server that is
//! down waited for (and said so, without the password), a refusal reported at once.

use gatehouse_store::pg::{self, PG_SCHEMA_VERSION};
use gatehouse_store::pg_engine;
use gatehouse_testkit::postgres::PostgresServer;
use std::time::{Duration, Instant};

/// A server of the test's own (stopped when the test ends, however it ends).
fn server() -> PostgresServer {
    PostgresServer::start().expect("PostgreSQL for the tests")
}

#[test]
fn migrations_run_once_when_nodes_start_together() {
    let s = server();
    let url = s.create_database("migrate_together").unwrap();
    let nodes: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut client = pg::connect(&url, Duration::from_secs(10), |_| {}).unwrap();
                pg::migrate(&mut client)
            })
        })
        .collect();
    for n in nodes {
        assert_eq!(n.join().unwrap().unwrap(), PG_SCHEMA_VERSION);
    }
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let row = client
        .query_one("SELECT count(*), max(version) FROM gatehouse_schema", &[])
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert_eq!(row.get::<_, i32>(1) as usize, PG_SCHEMA_VERSION);
    for table in [
        "meta",
        "resources",
        "refs",
        "journal",
        "usage",
        "tokens",
        "leases",
    ] {
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap_or_else(|e| panic!("{table}: {e}"));
    }
    // A node starting later finds nothing to do.
    assert_eq!(pg::migrate(&mut client).unwrap(), PG_SCHEMA_VERSION);
}

#[test]
fn a_schema_newer_than_this_build_is_refused_in_one_line() {
    let s = server();
    let url = s.create_database("migrate_newer").unwrap();
    let mut client = pg::connect(&url, Duration::from_secs(10), |_| {}).unwrap();
    pg::migrate(&mut client).unwrap();
    client
        .execute("UPDATE gatehouse_schema SET version = version + 1", &[])
        .unwrap();
    let e = pg::migrate(&mut client).unwrap_err().to_string();
    assert!(e.contains("newer than this Gatehouse knows"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn a_server_that_is_down_is_waited_for_and_the_wait_is_said() {
    let s = server();
    s.create_database("wait").unwrap();
    s.stop().unwrap();
    // trust authentication ignores the password: it is here to be kept out of messages.
    let url = format!("postgres://postgres:hunter2@127.0.0.1:{}/wait", s.port);
    let back = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            s.start_again().unwrap();
        });
        let mut said = Vec::new();
        let client = pg::connect(&url, Duration::from_secs(30), |line| {
            said.push(line.to_string())
        });
        (client, said)
    });
    let (client, said) = back;
    let mut client = client.expect("connected once the server was back");
    assert_eq!(pg::migrate(&mut client).unwrap(), PG_SCHEMA_VERSION);
    assert!(!said.is_empty(), "the wait is said");
    for line in &said {
        assert!(
            line.contains("is not reachable") && line.contains("trying again"),
            "{line}"
        );
        assert!(line.contains("postgres:***@127.0.0.1"), "{line}");
        assert!(!line.contains("hunter2"), "{line}");
    }
}

#[test]
fn a_refusal_retrying_cannot_cure_is_reported_at_once() {
    let s = server();
    let url = s.url("no_such_database");
    let started = Instant::now();
    let e = pg::connect(&url, Duration::from_secs(30), |_| {})
        .err()
        .expect("no such database")
        .to_string();
    assert!(started.elapsed() < Duration::from_secs(5), "not retried");
    assert!(e.contains("does not exist"), "{e}");
}

/// Two nodes' engines on one database: `url` migrated.
fn two_nodes(s: &PostgresServer, db: &str) -> (pg_engine::Engine, pg_engine::Engine) {
    let url = s.create_database(db).unwrap();
    let mut client = pg::connect(&url, Duration::from_secs(10), |_| {}).unwrap();
    pg::migrate(&mut client).unwrap();
    (
        pg_engine::Engine::start(&url, 0).unwrap(),
        pg_engine::Engine::start(&url, 0).unwrap(),
    )
}

/// Writes on both nodes at once take turns: every revision is used exactly once, in order.
#[test]
fn writes_from_several_nodes_get_revisions_without_gaps_or_duplicates() {
    let s = server();
    let (a, b) = two_nodes(&s, "revisions");
    std::thread::scope(|scope| {
        for engine in [&a, &a, &b, &b] {
            scope.spawn(move || {
                for _ in 0..25 {
                    let (tx, current) = engine.begin_write().unwrap();
                    let next = current + 1;
                    tx.execute(
                        "INSERT INTO journal (revision, at, path, kind, op) VALUES ($1, '', '/x', 'api', 'put')",
                        vec![Box::new(next as i64)],
                    )
                    .unwrap();
                    engine.commit_write(tx, next).unwrap();
                }
            });
        }
    });
    let (tx, revision) = a.begin_write().unwrap();
    assert_eq!(revision, 100);
    let rows = tx
        .query("SELECT revision FROM journal ORDER BY seq", Vec::new())
        .unwrap();
    let revisions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        revisions,
        (1..=100).collect::<Vec<i64>>(),
        "in commit order, each once"
    );
}

/// A transaction that is dropped without committing leaves nothing behind.
#[test]
fn a_write_not_committed_changes_nothing() {
    let s = server();
    let (a, _b) = two_nodes(&s, "rollback");
    {
        let (tx, _) = a.begin_write().unwrap();
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('half', 'written')",
            Vec::new(),
        )
        .unwrap();
    }
    let tx = a.begin().unwrap();
    let rows = tx
        .query("SELECT value FROM meta WHERE key = 'half'", Vec::new())
        .unwrap();
    assert!(rows.is_empty());
}

/// A commit on one node reaches the other's followers through NOTIFY, not polling; the
/// figures are printed (the benchmark measures them properly).
#[test]
fn a_commit_on_one_node_reaches_the_others_followers() {
    let s = server();
    let (a, b) = two_nodes(&s, "notify");
    let mut follower = b.subscribe();
    let mut waits = Vec::new();
    for _ in 0..100 {
        let (tx, current) = a.begin_write().unwrap();
        let started = Instant::now();
        a.commit_write(tx, current + 1).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), follower.wait_for(|r| *r > current))
                .await
                .expect("seen on the other node within 5 s")
                .unwrap();
        });
        waits.push(started.elapsed());
    }
    waits.sort();
    println!(
        "commit on node A seen by node B's followers: p50 {:?}, p99 {:?} (100 commits)",
        waits[49], waits[98]
    );
    // After PostgreSQL restarts, the follower listens again.
    s.stop().unwrap();
    s.start_again().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (tx, current) = loop {
            match a.begin_write() {
                Ok(w) => break w,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => panic!("no write after the restart: {e}"),
            }
        };
        a.commit_write(tx, current + 1).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        if *follower.borrow() == current + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never listened again"
        );
    }
}

/// TLS to PostgreSQL as `sslmode` and `sslrootcert` in the URL say: the server's certificate
/// checked against the given roots, refused when it is not trusted.
#[test]
fn tls_is_used_as_the_url_says_and_an_untrusted_server_is_refused() {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let s = PostgresServer::start_with_tls(&cert.cert.pem(), &cert.signing_key.serialize_pem())
        .unwrap();
    let url = s.create_database("tls").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let trusted = format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display());
    let mut client = pg::connect(&trusted, Duration::from_secs(10), |_| {}).unwrap();
    pg::migrate(&mut client).unwrap();
    let engine = pg_engine::Engine::start(&trusted, 0).unwrap();
    let tx = engine.begin().unwrap();
    let rows = tx
        .query(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            Vec::new(),
        )
        .unwrap();
    let on_tls: bool = rows[0].get(0);
    assert!(on_tls, "the store's connections use TLS");
    drop(tx);
    let e = pg::connect(
        &format!("{url}?sslmode=require"),
        Duration::from_secs(10),
        |_| {},
    )
    .err()
    .expect("a server certificate no root vouches for is refused")
    .to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
}
