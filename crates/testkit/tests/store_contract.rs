//! The store's contract, the same on both stores: the embedded SQLite file and PostgreSQL
//! (Debian's, its own cluster per test). Each scenario is one function over a `Store`, run
//! once per backend; PostgreSQL adds what only several nodes can show.

use gatehouse_model::{Kind, ResourcePath, ServiceSettings, Sku};
use gatehouse_store::{
    Committed, Lease, Result, Store, StoreError, TokenRecord, UsageRow, WriteFence, pg,
};
use gatehouse_testkit::postgres::PostgresServer;
use serde_json::{Map, Value, json};
use std::time::Duration;

const KEY: [u8; 32] = [7; 32];

fn settings() -> ServiceSettings {
    ServiceSettings {
        name: "contoso".into(),
        location: "westeurope".into(),
        sku: Sku {
            name: "Developer".into(),
            capacity: 1,
        },
        publisher_email: "a@b.c".into(),
        publisher_name: "A".into(),
        notification_sender_email: None,
        created_at_utc: "2026-12-07T10:00:00Z".into(),
        hostname_configurations: Vec::new(),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn tag(id: &str) -> ResourcePath {
    ResourcePath::top(Kind::Tag, id)
}

/// A store on SQLite in a temporary directory.
fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("gatehouse.db"), &KEY).unwrap();
    (store, dir)
}

/// A database on a server of the test's own, migrated.
fn postgres_url(server: &PostgresServer) -> String {
    let url = server.create_database("gatehouse").unwrap();
    let mut client = pg::connect(&url, Duration::from_secs(10), |_| {}).unwrap();
    pg::migrate(&mut client).unwrap();
    url
}

/// Runs a scenario on SQLite and on PostgreSQL.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $name() { let (s, _dir) = super::sqlite(); super::$name(&s); })*
        }
        mod on_postgres {
            $(#[test] fn $name() {
                let server = super::PostgresServer::start().unwrap();
                let s = super::Store::open_postgres(&super::postgres_url(&server), &super::KEY).unwrap();
                super::$name(&s);
            })*
        }
    };
}

on_both!(
    an_attempt_taken_back_leaves_no_trace,
    writes_bump_the_revision_and_the_journal_seals_secrets,
    a_failed_transaction_changes_nothing_and_reads_are_consistent,
    compaction_keeps_the_configuration_and_tells_followers_to_reload,
    trees_references_lookups_and_pages,
    a_replace_and_a_moved_tree_keep_references,
    tokens_usage_and_meta_are_operational,
    a_lease_has_one_holder_until_released_or_expired,
    operation_records_are_kept_and_a_fence_refuses_every_write,
);

fn an_attempt_taken_back_leaves_no_trace(store: &Store) {
    let c = store
        .write(|w| -> Result<()> {
            w.attempt(|w| {
                Ok::<_, StoreError>((
                    w.put(&tag("kept"), obj(json!({"displayName": "k"})), &[])?,
                    true,
                ))
            })?;
            w.attempt(|w| {
                Ok::<_, StoreError>((
                    w.put(&tag("undone"), obj(json!({"displayName": "u"})), &[])?,
                    false,
                ))
            })?;
            let failed: Result<()> = w.attempt(|w| {
                w.put(&tag("failed"), obj(json!({"displayName": "f"})), &[])?;
                Err(StoreError::Corrupt("on purpose".into()))
            });
            assert!(failed.is_err());
            Ok(())
        })
        .unwrap();
    assert!(c.changed);
    let (kept, undone, failed, journal) = store
        .read(|r| -> Result<_> {
            Ok((
                r.get("/tags/kept")?.is_some(),
                r.get("/tags/undone")?.is_some(),
                r.get("/tags/failed")?.is_some(),
                r.changed_paths_since(0)?,
            ))
        })
        .unwrap();
    assert!(kept && !undone && !failed);
    assert_eq!(journal, vec!["/tags/kept".to_string()]);
    let c = store
        .write(|w| -> Result<()> {
            w.attempt(|w| {
                Ok::<_, StoreError>((
                    w.put(&tag("undone"), obj(json!({"displayName": "u"})), &[])?,
                    false,
                ))
            })?;
            Ok(())
        })
        .unwrap();
    assert!(!c.changed, "an attempt taken back is no change");
}

fn writes_bump_the_revision_and_the_journal_seals_secrets(store: &Store) {
    let c = store
        .write(|w| -> Result<()> { w.set_service(&settings()) })
        .unwrap();
    assert_eq!(c.revision, 1);
    let sub = ResourcePath::top(Kind::Subscription, "s1");
    let c = store
        .write(|w| -> Result<u64> {
            w.put(
                &sub,
                obj(json!({"scope": "/apis", "displayName": "S", "primaryKey": "topsecret"})),
                &["/apis".into()],
            )
        })
        .unwrap();
    assert_eq!(c.revision, 2);
    let c = store.write(|_w| -> Result<()> { Ok(()) }).unwrap();
    assert_eq!((c.revision, c.changed), (2, false), "no change, no bump");
    let got = store.read(|r| r.get("/subscriptions/s1")).unwrap().unwrap();
    assert_eq!(got.properties["primaryKey"], "topsecret");
    assert_eq!(got.revision, 2);
    let (entries, total) = store.read(|r| r.journal(1, 0, 100)).unwrap();
    assert_eq!(total, 1);
    assert_eq!(entries[0].path, "/subscriptions/s1");
    let sealed = entries[0].value.as_ref().unwrap()["primaryKey"]
        .as_str()
        .unwrap();
    assert!(sealed.starts_with("sealed:v1:"), "{sealed}");
    assert_eq!(
        store.read(|r| r.service()).unwrap().unwrap().name,
        "contoso"
    );
}

fn a_failed_transaction_changes_nothing_and_reads_are_consistent(store: &Store) {
    store
        .write(|w| -> Result<()> { w.set_service(&settings()) })
        .unwrap();
    let r: std::result::Result<Committed<()>, StoreError> = store.write(|w| {
        w.put(&tag("t"), obj(json!({"displayName": "T"})), &[])?;
        Err(StoreError::Corrupt("boom".into()))
    });
    assert!(r.is_err());
    assert!(store.read(|r| r.get("/tags/t")).unwrap().is_none());
    assert_eq!(store.revision().unwrap(), 1);
    // A reader holding a view does not see a later write.
    store
        .read(|r| -> Result<()> {
            let _ = r.get("/tags/u")?; // the view is taken by its first read
            store.write(|w| -> Result<u64> {
                w.put(&tag("u"), obj(json!({"displayName": "U"})), &[])
            })?;
            assert!(r.get("/tags/u")?.is_none());
            assert_eq!(r.revision(), 1);
            Ok(())
        })
        .unwrap();
    assert!(store.read(|r| r.get("/tags/u")).unwrap().is_some());
}

fn compaction_keeps_the_configuration_and_tells_followers_to_reload(store: &Store) {
    for i in 0..10 {
        store
            .write(|w| -> Result<()> {
                w.put(
                    &tag(&format!("t{i}")),
                    obj(json!({"displayName": "x"})),
                    &[],
                )?;
                w.put(
                    &tag(&format!("u{i}")),
                    obj(json!({"displayName": "y"})),
                    &[],
                )?;
                Ok(())
            })
            .unwrap();
    }
    // Whole revisions only: 4 entries are 2 revisions; 3 are only the first.
    let first = store.read(|r| r.journal_revisions(0, 4)).unwrap();
    assert_eq!(first.len(), 4);
    assert_eq!(first.last().unwrap().revision, 2);
    assert_eq!(store.read(|r| r.journal_revisions(0, 3)).unwrap().len(), 2);
    // A revision larger than the limit still comes whole.
    assert_eq!(store.read(|r| r.journal_revisions(0, 1)).unwrap().len(), 2);
    assert_eq!(store.compact_journal(6).unwrap(), 12);
    assert_eq!(store.compact_journal(6).unwrap(), 0, "nothing twice");
    store
        .read(|r| -> Result<()> {
            assert_eq!(r.journal_floor()?, 6);
            assert!(r.replaced_since(5)?, "a follower at 5 must reload");
            assert!(!r.replaced_since(6)?);
            assert_eq!(r.resource_count()?, 20, "the configuration is untouched");
            assert_eq!(r.journal(6, 0, 100)?.1, 8);
            Ok(())
        })
        .unwrap();
    assert_eq!(store.revision().unwrap(), 10, "compaction is no revision");
}

fn trees_references_lookups_and_pages(store: &Store) {
    store
        .write(|w| -> Result<()> {
            w.put(
                &ResourcePath::top(Kind::Api, "a"),
                obj(json!({"path": "Orders"})),
                &[],
            )?;
            w.put(
                &ResourcePath::top(Kind::Api, "ab"),
                obj(json!({"path": "b"})),
                &[],
            )?;
            w.put(
                &ResourcePath::top(Kind::Api, "a;rev=2"),
                obj(json!({"path": "Orders"})),
                &[],
            )?;
            let op = ResourcePath::new(
                Kind::Operation,
                vec![("apis", "a".into()), ("operations", "o".into())],
            );
            w.put(&op, obj(json!({})), &[])?;
            w.put(
                &ResourcePath::top(Kind::Subscription, "s"),
                obj(json!({})),
                &["/apis/a".into()],
            )?;
            assert_eq!(w.descendants("/apis/a")?.len(), 1);
            assert_eq!(
                w.referrers("/apis/a")?,
                vec!["/subscriptions/s".to_string()]
            );
            assert!(w.referrers("/apis/ab")?.is_empty());
            Ok(())
        })
        .unwrap();
    store
        .read(|r| -> Result<()> {
            let found = r.find_by_property(Kind::Api, "path", "orders")?;
            let ids: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
            assert_eq!(ids, ["/apis/a", "/apis/a;rev=2"], "case ignored");
            let page = r.page(Kind::Api, "", 0, 10, true)?;
            assert_eq!(page.total, 2, "revisions hidden");
            let page = r.page(Kind::Api, "", 1, 1, false)?;
            assert_eq!(
                (page.total, page.items[0].path.as_str()),
                (3, "/apis/a;rev=2")
            );
            assert_eq!(r.all_of_kind(Kind::Operation)?.len(), 1);
            assert_eq!(r.children(Kind::Operation, "/apis/a")?.len(), 1);
            assert_eq!(
                r.references_of("/subscriptions/s")?,
                vec!["/apis/a".to_string()]
            );
            let mut n = 0;
            r.for_each_resource(|_| {
                n += 1;
                Ok(())
            })?;
            assert_eq!(n, 5);
            Ok(())
        })
        .unwrap();
}

const TRICKY: &str = "T \\ \\N \t tab \n line \r \"q\" é ☃ \\.";

fn a_replace_and_a_moved_tree_keep_references(store: &Store) {
    store
        .write(|w| -> Result<()> {
            w.set_service(&settings())?;
            w.put(
                &ResourcePath::top(Kind::Api, "a;rev=2"),
                obj(json!({"path": "p"})),
                &[],
            )?;
            let op = ResourcePath::new(
                Kind::Operation,
                vec![("apis", "a;rev=2".into()), ("operations", "o".into())],
            );
            w.put(&op, obj(json!({})), &[])?;
            w.put(
                &ResourcePath::top(Kind::Subscription, "s"),
                obj(json!({})),
                &["/apis/a;rev=2/operations/o".into()],
            )?;
            w.move_tree(
                &ResourcePath::top(Kind::Api, "a;rev=2"),
                &ResourcePath::top(Kind::Api, "a"),
                true,
            )
        })
        .unwrap();
    store
        .read(|r| -> Result<()> {
            assert!(r.get("/apis/a/operations/o")?.is_some());
            assert!(r.get("/apis/a;rev=2")?.is_none());
            assert_eq!(
                r.references_of("/subscriptions/s")?,
                vec!["/apis/a/operations/o".to_string()]
            );
            Ok(())
        })
        .unwrap();
    let before = store.revision().unwrap();
    let c = store
        .write(|w| -> Result<()> {
            w.replace_all(&json!({"from": "archive"}))?;
            w.restore_service(&settings())?;
            // What a bulk copy escapes: backslashes, tabs, line ends, quotes, non-ASCII.
            w.restore_resource(
                &ResourcePath::top(Kind::Tag, "t"),
                obj(json!({"displayName": TRICKY})),
            )?;
            w.restore_ref("/tags/t", "/apis/x")?;
            w.restore_ref("/tags/t", "/apis/x")?;
            Ok(())
        })
        .unwrap();
    assert_eq!(c.revision, before + 1);
    store
        .read(|r| -> Result<()> {
            assert_eq!(r.resource_count()?, 1);
            let t = r.get("/tags/t")?.unwrap();
            assert_eq!(t.properties["displayName"], TRICKY);
            assert_eq!(r.references_of("/tags/t")?, vec!["/apis/x".to_string()]);
            assert!(r.replaced_since(before)?);
            Ok(())
        })
        .unwrap();
}

fn tokens_usage_and_meta_are_operational(store: &Store) {
    let t = TokenRecord {
        id: "t1".into(),
        role: "reader".into(),
        hash: "ab".into(),
        created: "2026-12-06T00:00:00Z".into(),
        expires: None,
        description: Some("ci".into()),
    };
    store.add_token(&t).unwrap();
    assert!(store.add_token(&t).is_err(), "ids are unique");
    assert_eq!(store.token("t1").unwrap(), Some(t.clone()));
    assert_eq!(store.tokens().unwrap(), vec![t]);
    assert!(store.remove_token("t1").unwrap());
    assert!(!store.remove_token("t1").unwrap());
    let row = |calls: u64, ms: f64| UsageRow {
        bucket: 900,
        api: "a".into(),
        success: calls,
        api_time_sum_ms: ms * calls as f64,
        api_time_min_ms: ms,
        api_time_max_ms: ms,
        service_calls: calls,
        service_time_min_ms: ms,
        service_time_max_ms: ms,
        ..UsageRow::default()
    };
    store.add_usage(&[row(2, 5.0), row(1, 1.0)]).unwrap();
    let usage = store.read(|r| r.usage(0, 1000)).unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!(
        (
            usage[0].success,
            usage[0].api_time_min_ms,
            usage[0].api_time_max_ms
        ),
        (3, 1.0, 5.0)
    );
    assert_eq!(store.take_usage().unwrap().len(), 1);
    assert!(store.take_usage().unwrap().is_empty());
    store.set_meta("k", "v").unwrap();
    assert_eq!(store.read(|r| r.meta("k")).unwrap().as_deref(), Some("v"));
    assert_eq!(store.revision().unwrap(), 0, "none of it is configuration");
}

fn a_lease_has_one_holder_until_released_or_expired(store: &Store) {
    let ttl = Duration::from_millis(400);
    assert_eq!(store.take_lease("op", "a", ttl).unwrap(), Lease::Ours);
    assert_eq!(
        store.take_lease("op", "b", ttl).unwrap(),
        Lease::Theirs("a".into())
    );
    assert_eq!(
        store.take_lease("op", "a", ttl).unwrap(),
        Lease::Ours,
        "renewed"
    );
    store.release_lease("op", "b").unwrap();
    assert_eq!(store.lease_holder("op").unwrap().as_deref(), Some("a"));
    std::thread::sleep(ttl + Duration::from_millis(200));
    assert_eq!(store.lease_holder("op").unwrap(), None, "expired");
    assert_eq!(store.take_lease("op", "b", ttl).unwrap(), Lease::Ours);
    store.release_lease("op", "b").unwrap();
    assert_eq!(store.lease_holder("op").unwrap(), None);
    assert_eq!(store.take_lease("op", "a", ttl).unwrap(), Lease::Ours);
    assert_eq!(store.revision().unwrap(), 0, "leases are not configuration");
}

fn operation_records_are_kept_and_a_fence_refuses_every_write(store: &Store) {
    store
        .write(|w| -> Result<()> { w.set_service(&settings()) })
        .unwrap();
    assert_eq!(store.operation("x").unwrap(), None);
    store
        .put_operation("x", &json!({"status": "Running"}))
        .unwrap();
    store
        .put_operation("x", &json!({"status": "Succeeded"}))
        .unwrap();
    assert_eq!(
        store.operation("x").unwrap(),
        Some(json!({"status": "Succeeded"}))
    );
    let fence = WriteFence {
        until: None,
        message: "moving".into(),
        context: json!({"reason": "r"}),
    };
    store.set_write_fence(Some(&fence)).unwrap();
    assert_eq!(store.write_fence().unwrap(), Some(fence.clone()));
    let refused = store.write(|w| w.put(&tag("f"), obj(json!({"displayName": "F"})), &[]));
    assert!(
        matches!(&refused, Err(StoreError::Fenced(f)) if f.message == "moving"),
        "{refused:?}"
    );
    assert!(store.read(|r| r.get("/tags/f")).unwrap().is_none());
    assert_eq!(store.revision().unwrap(), 1);
    // A fence past its time refuses nothing.
    let past = time::OffsetDateTime::now_utc().unix_timestamp() - 1;
    store
        .set_write_fence(Some(&WriteFence {
            until: Some(past),
            ..fence
        }))
        .unwrap();
    assert_eq!(store.write_fence().unwrap(), None);
    store
        .write(|w| w.put(&tag("f"), obj(json!({"displayName": "F"})), &[]))
        .unwrap();
    store.set_write_fence(None).unwrap();
    store
        .write(|w| w.put(&tag("g"), obj(json!({"displayName": "G"})), &[]))
        .unwrap();
    assert_eq!(store.revision().unwrap(), 3);
}

/// Two nodes on one database: every write on either is seen by both, revisions are shared,
/// and a node's followers hear of the other's commits.
#[test]
fn nodes_on_one_database_share_revisions_and_hear_each_others_commits() {
    let server = PostgresServer::start().unwrap();
    let url = postgres_url(&server);
    let a = Store::open_postgres(&url, &KEY).unwrap();
    let b = Store::open_postgres(&url, &KEY).unwrap();
    let mut follower = b.subscribe();
    std::thread::scope(|scope| {
        for (node, prefix) in [(&a, "a"), (&b, "b"), (&a, "c"), (&b, "d")] {
            scope.spawn(move || {
                for i in 0..20 {
                    node.write(|w| -> Result<u64> {
                        w.put(
                            &tag(&format!("{prefix}{i}")),
                            obj(json!({"displayName": "x", "secret": "s"})),
                            &[],
                        )
                    })
                    .unwrap();
                }
            });
        }
    });
    assert_eq!(a.revision().unwrap(), 80);
    assert_eq!(b.revision().unwrap(), 80);
    let (entries, total) = b.read(|r| r.journal(0, 0, 1000)).unwrap();
    assert_eq!(total, 80);
    let revisions: Vec<u64> = entries.iter().map(|e| e.revision).collect();
    assert_eq!(
        revisions,
        (1..=80).collect::<Vec<u64>>(),
        "no gap, no duplicate"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), follower.wait_for(|r| *r == 80))
            .await
            .expect("node b heard of every commit")
            .unwrap();
    });
    // The same key seals and opens on both nodes.
    a.write(|w| -> Result<u64> {
        w.put(
            &ResourcePath::top(Kind::Subscription, "s"),
            obj(json!({"scope": "/apis", "primaryKey": "topsecret"})),
            &[],
        )
    })
    .unwrap();
    let got = b.read(|r| r.get("/subscriptions/s")).unwrap().unwrap();
    assert_eq!(got.properties["primaryKey"], "topsecret");
    let mut raw = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for table in ["resources", "journal"] {
        let text: String = raw
            .query_one(
                &format!("SELECT string_agg(coalesce(t::text, ''), '') FROM {table} t"),
                &[],
            )
            .unwrap()
            .get(0);
        assert!(!text.contains("topsecret"), "sealed at rest in {table}");
    }
}
