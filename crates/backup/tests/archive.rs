//! Backup archives against real SQLite stores: round trip, secrets, tampering, keys, expiry,
//! tiers, dry runs and consistency under concurrent writes.

use gatehouse_backup::{
    ArchiveError, BackupError, BackupKey, BackupOptions, RestoreOptions, backup_to_file,
    restore_from_file, verify,
};
use gatehouse_model::{Kind, ResourcePath, ServiceSettings, Sku};
use gatehouse_store::{Store, StoreError, UsageRow};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;

fn settings(name: &str, region: &str, sku: &str) -> ServiceSettings {
    ServiceSettings {
        name: name.into(),
        location: region.into(),
        sku: Sku {
            name: sku.into(),
            capacity: 1,
        },
        publisher_email: format!("ops@{name}.test"),
        publisher_name: name.into(),
        notification_sender_email: None,
        created_at_utc: "2026-01-01T00:00:00Z".into(),
        hostname_configurations: Vec::new(),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn store_with(dir: &Path, s: ServiceSettings) -> Store {
    let store = Store::open_dir(dir).unwrap();
    store
        .write(|w| -> Result<(), StoreError> { w.set_service(&s) })
        .unwrap();
    store
}

fn populate(store: &Store) {
    store
        .write(|w| -> Result<(), StoreError> {
            w.put(&ResourcePath::top(Kind::Api, "echo"), obj(json!({"displayName": "Echo", "path": "echo"})), &[])?;
            for i in 0..20 {
                let op = ResourcePath::new(Kind::Operation, vec![("apis", "echo".into()), ("operations", format!("op{i}"))]);
                w.put(&op, obj(json!({"displayName": "Op", "method": "GET", "urlTemplate": format!("/r{i}")})), &[])?;
            }
            w.put(&ResourcePath::top(Kind::User, "alice"), obj(json!({"email": "a@x", "firstName": "A", "lastName": "L", "passwordHash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"})), &[])?;
            w.put(&ResourcePath::top(Kind::Product, "p"), obj(json!({"displayName": "P"})), &[])?;
            w.put(&ResourcePath::new(Kind::ProductApi, vec![("products", "p".into()), ("apis", "echo".into())]), Map::new(), &["/apis/echo".into()])?;
            w.put(
                &ResourcePath::top(Kind::Subscription, "s1"),
                obj(json!({"scope": "/products/p", "displayName": "S", "state": "active", "ownerId": "/users/alice", "primaryKey": "pk-topsecret-0001", "secondaryKey": "sk-topsecret-0002"})),
                &["/products/p".into(), "/users/alice".into()],
            )?;
            w.put(&ResourcePath::top(Kind::NamedValue, "nv"), obj(json!({"displayName": "nv", "value": "nv-topsecret-value", "secret": true})), &[])?;
            w.put(&ResourcePath::top(Kind::Certificate, "c"), obj(json!({"subject": "CN=x", "thumbprint": "AB", "privateKey": "-----BEGIN PRIVATE KEY-----\nkey-topsecret\n-----END PRIVATE KEY-----\n"})), &[])?;
            Ok(())
        })
        .unwrap();
    store
        .add_usage(&[UsageRow {
            bucket: 900,
            api: "echo".into(),
            operation: "op1".into(),
            success: 7,
            ..Default::default()
        }])
        .unwrap();
}

fn contents(store: &Store) -> BTreeMap<String, Map<String, Value>> {
    store
        .snapshot()
        .unwrap()
        .resources
        .into_iter()
        .map(|r| (r.path, r.properties))
        .collect()
}

fn key() -> BackupKey {
    BackupKey::parse(&BackupKey::generate()).unwrap()
}

fn no_progress() -> impl FnMut(u64, u64) {
    |_, _| {}
}

#[test]
fn round_trip_keeps_everything_and_the_target_keeps_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let source = store_with(
        &dir.path().join("src"),
        settings("contoso", "westeurope", "Standard"),
    );
    populate(&source);
    let archive = dir.path().join("a.ghbk");
    let k = key();
    let m = backup_to_file(
        &source,
        &archive,
        &k,
        &BackupOptions::default(),
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(m.service_name, "contoso");
    assert_eq!(m.source_revision, source.revision().unwrap());
    assert_eq!(m.entity_count, contents(&source).len() as u64);
    assert!(
        m.sections
            .iter()
            .any(|s| s.name == "subscription" && s.count == 1)
    );

    // Secrets are never in plaintext in the archive.
    let bytes = std::fs::read(&archive).unwrap();
    for secret in [
        "pk-topsecret-0001",
        "nv-topsecret-value",
        "key-topsecret",
        "argon2id",
    ] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} leaked"
        );
    }

    let target = store_with(
        &dir.path().join("dst"),
        settings("fabrikam", "eastus", "Standard"),
    );
    target
        .write(|w| -> Result<u64, StoreError> {
            w.put(
                &ResourcePath::top(Kind::Tag, "old"),
                obj(json!({"displayName": "Old"})),
                &[],
            )
        })
        .unwrap();
    let before = target.revision().unwrap();
    let out = restore_from_file(
        &target,
        &archive,
        &k,
        &RestoreOptions::default(),
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(out.revision, before + 1, "one transaction, one revision");
    assert_eq!(
        contents(&target),
        contents(&source),
        "ids, keys and secrets come across unchanged"
    );
    let s = target.read(|r| r.service()).unwrap().unwrap();
    assert_eq!(
        (s.name.as_str(), s.location.as_str()),
        ("fabrikam", "eastus"),
        "the target keeps its name and region"
    );
    assert_eq!(s.publisher_email, "ops@contoso.test");
    let usage = target.read(|r| r.usage(0, 10_000)).unwrap();
    assert_eq!(usage[0].success, 7);
    let (entries, _) = target.read(|r| r.journal(before, 0, 10)).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].op, "replace");
    assert!(target.read(|r| r.replaced_since(before)).unwrap());
    // References were restored: the product link still protects the API.
    assert_eq!(
        target.read(|r| r.referrers("/apis/echo")).unwrap(),
        vec!["/products/p/apis/echo".to_string()]
    );
}

#[test]
fn passphrases_work_and_wrong_keys_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = store_with(
        &dir.path().join("src"),
        settings("contoso", "westeurope", "Developer"),
    );
    populate(&source);
    let archive = dir.path().join("a.ghbk");
    let pass = BackupKey::parse("correct horse battery staple").unwrap();
    backup_to_file(
        &source,
        &archive,
        &pass,
        &BackupOptions::default(),
        &mut no_progress(),
    )
    .unwrap();
    let target = store_with(
        &dir.path().join("dst"),
        settings("t", "eastus", "Developer"),
    );
    let before = contents(&target);
    for wrong in [BackupKey::parse("not the right passphrase").unwrap(), key()] {
        let e = restore_from_file(
            &target,
            &archive,
            &wrong,
            &RestoreOptions::default(),
            &mut no_progress(),
        )
        .unwrap_err();
        assert!(
            matches!(e, BackupError::Archive(ArchiveError::WrongKey)),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "wrong backup key: the archive cannot be decrypted with the key given"
        );
    }
    assert_eq!(contents(&target), before);
    restore_from_file(
        &target,
        &archive,
        &pass,
        &RestoreOptions::default(),
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(contents(&target), contents(&source));
    assert!(BackupKey::parse("short").is_err());
}

#[test]
fn tampering_and_truncation_are_detected_before_anything_changes() {
    let dir = tempfile::tempdir().unwrap();
    let source = store_with(
        &dir.path().join("src"),
        settings("contoso", "westeurope", "Developer"),
    );
    populate(&source);
    let archive = dir.path().join("a.ghbk");
    let k = key();
    backup_to_file(
        &source,
        &archive,
        &k,
        &BackupOptions::default(),
        &mut no_progress(),
    )
    .unwrap();
    let good = std::fs::read(&archive).unwrap();
    let target = store_with(
        &dir.path().join("dst"),
        settings("t", "eastus", "Developer"),
    );
    let before = contents(&target);
    let bad = dir.path().join("bad.ghbk");
    // A flipped byte anywhere: header, encryption header, body, plain manifest, end marker.
    let len = good.len();
    for pos in [0, 9, 40, 200, len / 2, len - 40, len - 5] {
        let mut b = good.clone();
        b[pos] ^= 0x01;
        std::fs::write(&bad, &b).unwrap();
        let e = restore_from_file(
            &target,
            &bad,
            &k,
            &RestoreOptions::default(),
            &mut no_progress(),
        );
        assert!(
            e.is_err(),
            "a flipped byte at {pos} of {len} went unnoticed"
        );
        assert_eq!(contents(&target), before);
    }
    // Truncations.
    for cut in [5, 100, len / 2, len - 13, len - 1] {
        std::fs::write(&bad, &good[..cut]).unwrap();
        assert!(
            restore_from_file(
                &target,
                &bad,
                &k,
                &RestoreOptions::default(),
                &mut no_progress()
            )
            .is_err(),
            "cut at {cut}"
        );
    }
    // Not an archive at all.
    std::fs::write(&bad, b"hello").unwrap();
    let e = restore_from_file(
        &target,
        &bad,
        &k,
        &RestoreOptions::default(),
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("not a Gatehouse backup archive"),
        "{e}"
    );
    assert_eq!(contents(&target), before);
}

#[test]
fn expiry_tiers_and_dry_runs() {
    let dir = tempfile::tempdir().unwrap();
    let source = store_with(
        &dir.path().join("src"),
        settings("contoso", "westeurope", "Standard"),
    );
    populate(&source);
    let k = key();
    let expired = dir.path().join("expired.ghbk");
    backup_to_file(
        &source,
        &expired,
        &k,
        &BackupOptions {
            expires_after: Some(std::time::Duration::from_secs(0)),
            ..Default::default()
        },
        &mut no_progress(),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let target = store_with(&dir.path().join("dst"), settings("t", "eastus", "Standard"));
    let e = restore_from_file(
        &target,
        &expired,
        &k,
        &RestoreOptions::default(),
        &mut no_progress(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "Cannot restore: backup expired");

    let archive = dir.path().join("a.ghbk");
    backup_to_file(
        &source,
        &archive,
        &k,
        &BackupOptions::default(),
        &mut no_progress(),
    )
    .unwrap();
    let basic = store_with(&dir.path().join("basic"), settings("b", "eastus", "Basic"));
    let e = restore_from_file(
        &basic,
        &archive,
        &k,
        &RestoreOptions::default(),
        &mut no_progress(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Cannot restore: current SKU is 'Basic', backup SKU is 'Standard'"
    );
    restore_from_file(
        &basic,
        &archive,
        &k,
        &RestoreOptions {
            allow_tier_change: true,
            actor: None,
            ..Default::default()
        },
        &mut no_progress(),
    )
    .unwrap();
    assert_eq!(
        basic.read(|r| r.service()).unwrap().unwrap().sku.name,
        "Basic"
    );

    // Dry run: what would be added, changed and removed; nothing changes.
    target
        .write(|w| -> Result<(), StoreError> {
            w.put(
                &ResourcePath::top(Kind::Tag, "only-here"),
                obj(json!({"displayName": "X"})),
                &[],
            )?;
            w.put(
                &ResourcePath::top(Kind::Product, "p"),
                obj(json!({"displayName": "Different"})),
                &[],
            )?;
            Ok(())
        })
        .unwrap();
    let before = contents(&target);
    let plan = verify(&target, &archive, &k, &RestoreOptions::default(), true).unwrap();
    assert_eq!(
        plan.changes["tag"].removed,
        vec!["/tags/only-here".to_string()]
    );
    assert_eq!(
        plan.changes["product"].changed,
        vec!["/products/p".to_string()]
    );
    assert_eq!(plan.changes["operation"].added.len(), 20);
    assert_eq!(contents(&target), before);
}

#[test]
fn a_backup_is_one_consistent_revision_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let source = std::sync::Arc::new(store_with(
        &dir.path().join("src"),
        settings("contoso", "westeurope", "Developer"),
    ));
    populate(&source);
    let base = source.revision().unwrap();
    let writer = {
        let s = source.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                s.write(|w| -> Result<u64, StoreError> {
                    w.put(
                        &ResourcePath::top(Kind::Tag, &format!("t{i:03}")),
                        obj(json!({"displayName": "T"})),
                        &[],
                    )
                })
                .unwrap();
            }
        })
    };
    let k = key();
    let mut checked = 0;
    while !writer.is_finished() {
        let archive = dir.path().join(format!("a{checked}.ghbk"));
        let m = backup_to_file(
            &source,
            &archive,
            &k,
            &BackupOptions::default(),
            &mut no_progress(),
        )
        .unwrap();
        let tags = m.sections.iter().find(|s| s.name == "tag").unwrap().count;
        // Every tag write is one revision after `base`: the archive holds exactly those up to N,
        // and the journal after N holds the rest, so nothing is lost.
        assert_eq!(
            tags,
            m.source_revision - base,
            "archive at revision {}",
            m.source_revision
        );
        let (after, _) = source
            .read(|r| r.journal(m.source_revision, 0, 1000))
            .unwrap();
        assert!(after.iter().all(|e| e.revision > m.source_revision));
        checked += 1;
    }
    writer.join().unwrap();
    assert!(checked > 0);
}

#[test]
fn a_selective_backup_carries_what_the_subset_needs_and_merges_on_restore() {
    let dir = tempfile::tempdir().unwrap();
    let source = store_with(
        &dir.path().join("src"),
        settings("contoso", "westeurope", "Developer"),
    );
    populate(&source);
    source
        .write(|w| -> Result<(), StoreError> {
            w.put(&ResourcePath::top(Kind::Api, "other"), obj(json!({"displayName": "Other", "path": "other"})), &[])?;
            w.put(&ResourcePath::top(Kind::NamedValue, "used"), obj(json!({"displayName": "backend-url", "value": "http://b"})), &[])?;
            w.put(&ResourcePath::top(Kind::NamedValue, "unused"), obj(json!({"displayName": "unused", "value": "x"})), &[])?;
            w.put(&ResourcePath::top(Kind::PolicyFragment, "frag"), obj(json!({"value": "<fragment/>"})), &[])?;
            let pol = ResourcePath::new(Kind::ApiPolicy, vec![("apis", "echo".into()), ("policies", "policy".into())]);
            w.put(&pol, obj(json!({"value": "<policies><inbound><set-backend-service base-url=\"{{backend-url}}\" /><include-fragment fragment-id=\"frag\" /></inbound></policies>", "format": "xml"})), &[])?;
            Ok(())
        })
        .unwrap();
    let k = key();
    let archive = dir.path().join("subset.ghbk");
    let opts = BackupOptions {
        include: Some(vec!["/products/p".into()]),
        ..Default::default()
    };
    let m = backup_to_file(&source, &archive, &k, &opts, &mut no_progress()).unwrap();
    assert_eq!(m.include, Some(vec!["/products/p".to_string()]));
    let count = |name: &str| {
        m.sections
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.count)
            .unwrap_or(0)
    };
    assert_eq!(count("product"), 1);
    assert_eq!(count("api"), 1, "the product's API, not the other one");
    assert_eq!(count("operation"), 20);
    assert_eq!(count("subscription"), 1);
    assert_eq!(count("user"), 1, "the subscription's owner");
    assert_eq!(
        count("namedValue"),
        1,
        "only the named value the policy uses"
    );
    assert_eq!(count("policyFragment"), 1);
    assert_eq!(count("apiPolicy"), 1);
    assert_eq!(count("certificate"), 0);

    // Restoring merges: the target keeps what it had.
    let target = store_with(
        &dir.path().join("dst"),
        settings("t", "eastus", "Developer"),
    );
    target
        .write(|w| -> Result<u64, StoreError> {
            w.put(
                &ResourcePath::top(Kind::Tag, "mine"),
                obj(json!({"displayName": "Mine"})),
                &[],
            )
        })
        .unwrap();
    let plan = verify(&target, &archive, &k, &RestoreOptions::default(), true).unwrap();
    assert!(
        plan.changes.values().all(|d| d.removed.is_empty()),
        "a merge removes nothing"
    );
    restore_from_file(
        &target,
        &archive,
        &k,
        &RestoreOptions::default(),
        &mut no_progress(),
    )
    .unwrap();
    let after = contents(&target);
    assert!(after.contains_key("/tags/mine"));
    assert!(after.contains_key("/apis/echo") && !after.contains_key("/apis/other"));
    assert_eq!(
        after["/subscriptions/s1"]["primaryKey"],
        "pk-topsecret-0001"
    );
    assert_eq!(target.read(|r| r.service()).unwrap().unwrap().name, "t");
    // The merge is journaled resource by resource (followers see each change).
    let (entries, _) = target.read(|r| r.journal(2, 0, 1000)).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.path == "/apis/echo" && e.op == "put")
    );
    // An include that names nothing of the instance is refused.
    let e = backup_to_file(
        &source,
        &dir.path().join("x.ghbk"),
        &k,
        &BackupOptions {
            include: Some(vec!["/apis/ghost".into()]),
            ..Default::default()
        },
        &mut no_progress(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("/apis/ghost does not exist"), "{e}");
}
