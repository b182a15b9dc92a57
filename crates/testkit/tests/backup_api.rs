//! APIM's backup/restore contract through real instances: 202 + Location, polling, the service
//! resource at the end, failures as BackupFailed/RestoreFailed, one operation at a time, and a
//! restored instance serving the source's APIs with the source's keys.

use gatehouse_testkit::{EchoBackend, ServeConfig, TestInstance};
use serde_json::{Value, json};

async fn instance(dir: &std::path::Path, name: &str, sku: &str) -> TestInstance {
    let mut c = ServeConfig::ephemeral(dir);
    c.bootstrap.name = Some(name.into());
    c.bootstrap.sku = Some(sku.into());
    TestInstance::start_with(c).await.unwrap()
}

#[tokio::test]
async fn backup_and_restore_between_instances_through_the_api() {
    let backend = EchoBackend::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", dir.path().join("storage").display());
    let src = instance(&dir.path().join("src"), "contoso", "Standard").await;
    src.put_ok("/apis/echo", json!({"properties": {"displayName": "Echo", "path": "echo", "serviceUrl": backend.url, "protocols": ["http"]}})).await;
    src.put_ok("/apis/echo/operations/get", json!({"properties": {"displayName": "Get", "method": "GET", "urlTemplate": "/items/{id}", "templateParameters": [{"name": "id", "type": "string"}]}})).await;
    let (key, _) = src.subscription("s1", "/apis/echo").await;
    let pass = "a backup passphrase for tests";
    let params = json!({"storageAccount": storage, "containerName": "backups", "backupName": "contoso.ghbk", "encryptionKey": pass});

    let location = src
        .start_operation("backup", &params.clone())
        .await
        .unwrap();
    assert!(
        location.starts_with(&src.url) && location.contains("/operationresults/"),
        "{location}"
    );
    // One backup or restore at a time.
    let (s, e) = src
        .start_operation("backup", &params.clone())
        .await
        .unwrap_err();
    assert_eq!(s, 409, "{e}");
    let (s, done) = src.wait_operation(&location).await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["type"], "Microsoft.ApiManagement/service");
    assert_eq!(done["name"], "contoso");
    assert!(dir.path().join("storage/backups/contoso.ghbk").is_file());

    // Restore into a running instance of another name: the gateway serves it at once, with
    // the source's keys.
    let dst = instance(&dir.path().join("dst"), "fabrikam", "Standard").await;
    let dry = dst.start_operation("restore", &json!({"storageAccount": storage, "containerName": "backups", "backupName": "contoso.ghbk", "encryptionKey": pass, "dryRun": true})).await.unwrap();
    let (s, plan) = dst.wait_operation(&dry).await;
    assert_eq!(s, 200, "{plan}");
    assert_eq!(plan["changes"]["api"]["added"], json!(["/apis/echo"]));
    assert_eq!(
        dst.call("GET", "/apis/echo", None).await.0,
        404,
        "a dry run changes nothing"
    );
    let location = dst
        .start_operation("restore", &params.clone())
        .await
        .unwrap();
    let (s, svc) = dst.wait_operation(&location).await;
    assert_eq!(s, 200, "{svc}");
    assert_eq!(svc["name"], "fabrikam", "the target keeps its name");
    dst.gateway_caught_up().await;
    let r = reqwest::Client::new()
        .get(format!("{}/echo/items/9", dst.gateway_url()))
        .header("Ocp-Apim-Subscription-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the source's key works on the target");

    // Failures: wrong key, missing archive, tier mismatch, bad parameters.
    let wrong = dst.start_operation("restore", &json!({"storageAccount": storage, "containerName": "backups", "backupName": "contoso.ghbk", "encryptionKey": "not the passphrase at all"})).await.unwrap();
    let (s, e) = dst.wait_operation(&wrong).await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["code"], "RestoreFailed");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wrong backup key"),
        "{e}"
    );
    let (s, e) = dst.start_operation("restore", &json!({"storageAccount": storage, "containerName": "backups", "backupName": "nope.ghbk", "encryptionKey": pass})).await.unwrap_err();
    assert_eq!(s, 400, "{e}");
    let basic = instance(&dir.path().join("basic"), "basic", "Basic").await;
    let loc = basic
        .start_operation("restore", &params.clone())
        .await
        .unwrap();
    let (s, e) = basic.wait_operation(&loc).await;
    assert_eq!(s, 400);
    assert_eq!(
        e["error"]["message"],
        "Cannot restore: current SKU is 'Basic', backup SKU is 'Standard'"
    );
    let (s, _) = basic
        .start_operation(
            "backup",
            &json!({"storageAccount": storage, "containerName": "x"}),
        )
        .await
        .unwrap_err();
    assert_eq!(s, 400);
    // A stock APIM client sends no key: the first such backup makes one in the data directory
    // (0600, named in the outcome), and a restore without a key uses it.
    let (s, done) = basic
        .run_operation(
            "backup",
            &json!({"storageAccount": storage, "containerName": "backups", "backupName": "nokey.ghbk"}),
        )
        .await;
    assert_eq!(s, 200, "{done}");
    let made = done["outcome"]["keyCreated"]
        .as_str()
        .expect("keyCreated")
        .to_string();
    assert!(made.ends_with("backup.key"), "{made}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&made).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (s, again) = basic
        .run_operation(
            "backup",
            &json!({"storageAccount": storage, "containerName": "backups", "backupName": "nokey2.ghbk"}),
        )
        .await;
    assert_eq!(s, 200, "{again}");
    assert!(again["outcome"].get("keyCreated").is_none(), "made once");
    let (s, restored) = basic
        .run_operation(
            "restore",
            &json!({"storageAccount": storage, "containerName": "backups", "backupName": "nokey.ghbk"}),
        )
        .await;
    assert_eq!(s, 200, "{restored}");
    let (s, _) = basic.start_operation("backup", &json!({"storageAccount": storage, "containerName": "..", "backupName": "b", "encryptionKey": pass})).await.unwrap_err();
    assert_eq!(s, 400);
    assert_eq!(
        basic.call("GET", "/operationresults/unknown", None).await.0,
        404
    );

    // `include`: a selective archive of one API with what it needs.
    let subset = json!({"storageAccount": storage, "containerName": "backups", "backupName": "subset.ghbk", "encryptionKey": pass, "include": ["/apis/echo"]});
    let loc = src.start_operation("backup", &subset).await.unwrap();
    assert_eq!(src.wait_operation(&loc).await.0, 200);
    let (m, _) = gatehouse_backup::archive::read_plain_manifest(
        &dir.path().join("storage/backups/subset.ghbk"),
    )
    .unwrap();
    assert_eq!(m.include, Some(vec!["/apis/echo".to_string()]));
    assert!(
        m.sections
            .iter()
            .any(|s| s.name == "subscription" && s.count == 1),
        "the API's subscription comes along"
    );
}

fn contents(
    t: &TestInstance,
) -> std::collections::BTreeMap<String, serde_json::Map<String, Value>> {
    let snap = t.instance.as_ref().unwrap().store.snapshot().unwrap();
    snap.resources
        .into_iter()
        .map(|r| (r.path, r.properties))
        .collect()
}

#[tokio::test]
async fn changes_after_a_backup_replay_onto_the_restored_target() {
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", dir.path().join("storage").display());
    let src = instance(&dir.path().join("src"), "contoso", "Developer").await;
    src.put_ok(
        "/apis/echo",
        json!({"properties": {"displayName": "Echo", "path": "echo"}}),
    )
    .await;
    src.put_ok(
        "/tags/doomed",
        json!({"properties": {"displayName": "Doomed"}}),
    )
    .await;
    src.put_ok(
        "/subscriptions/s1",
        json!({"properties": {"scope": "/apis/echo", "displayName": "S1", "state": "active"}}),
    )
    .await;
    let params = json!({"storageAccount": storage, "containerName": "b", "backupName": "a.ghbk", "encryptionKey": "a passphrase for the catch-up test"});
    let loc = src
        .start_operation("backup", &params.clone())
        .await
        .unwrap();
    assert_eq!(src.wait_operation(&loc).await.0, 200);
    let (m, _) =
        gatehouse_backup::archive::read_plain_manifest(&dir.path().join("storage/b/a.ghbk"))
            .unwrap();
    // Changes the archive does not have: every kind of write, secrets included.
    src.put_ok(
        "/apis/new",
        json!({"properties": {"displayName": "New", "path": "new"}}),
    )
    .await;
    src.put_ok(
        "/apis/new/operations/get",
        json!({"properties": {"displayName": "Get", "method": "GET", "urlTemplate": "/x"}}),
    )
    .await;
    assert_eq!(
        src.call("POST", "/subscriptions/s1/regeneratePrimaryKey", None)
            .await
            .0,
        204
    );
    assert_eq!(src.call("DELETE", "/tags/doomed", None).await.0, 200);
    src.put_ok("/users/late", json!({"properties": {"email": "late@x.test", "firstName": "L", "lastName": "T", "password": "a late password"}})).await;
    src.put_ok(
        "/namedValues/k",
        json!({"properties": {"displayName": "k", "value": "late-secret", "secret": true}}),
    )
    .await;

    let dst = instance(&dir.path().join("dst"), "fabrikam", "Developer").await;
    let loc = dst.start_operation("restore", &params).await.unwrap();
    assert_eq!(dst.wait_operation(&loc).await.0, 200);
    assert_ne!(contents(&dst), contents(&src));
    // Catch-up: the source's journal after the archive's revision, secrets and references
    // included, replayed on the target in one transaction.
    let (s, changes) = src
        .call(
            "POST",
            &format!("/journal/listSecrets?since={}&$top=1000", m.source_revision),
            None,
        )
        .await;
    assert_eq!(s, 200, "{changes}");
    assert!(
        changes.to_string().contains("late-secret"),
        "the replay carries secrets"
    );
    let (s, applied) = dst
        .call(
            "POST",
            "/journal/apply",
            Some(json!({"value": changes["value"]})),
        )
        .await;
    assert_eq!(s, 200, "{applied}");
    assert_eq!(contents(&dst), contents(&src), "no change is lost");
    // Replaying again changes nothing (a resumed move may replay twice).
    dst.call(
        "POST",
        "/journal/apply",
        Some(json!({"value": changes["value"]})),
    )
    .await;
    assert_eq!(contents(&dst), contents(&src));
    // The journal read without listSecrets never shows them.
    let (_, plain) = src
        .call(
            "GET",
            &format!("/journal?since={}", m.source_revision),
            None,
        )
        .await;
    assert!(!plain.to_string().contains("late-secret"));
    // Malformed replays are refused and change nothing.
    let before = contents(&dst);
    assert_eq!(dst.call("POST", "/journal/apply", Some(json!({"value": [{"resourceId": "/widgets/x", "resourceType": "x", "operation": "put", "value": {}}]}))).await.0, 400);
    assert_eq!(
        dst.call("POST", "/journal/apply", Some(json!({"nope": 1})))
            .await
            .0,
        400
    );
    assert_eq!(contents(&dst), before);
}

/// A stock client backing up with a managed identity: the identity is the server's own
/// credential for the account, the storage account configured under that name.
#[tokio::test]
async fn a_managed_identity_uses_the_account_configured_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut config = gatehouse_testkit::ServeConfig::ephemeral(&data);
    config.storage_accounts.insert(
        "archive".into(),
        gatehouse_management::operations::StorageAccount {
            url: format!("file://{}", dir.path().join("storage").display()),
            access_key: None,
        },
    );
    let t = TestInstance::start_with(config).await.unwrap();
    let (s, done) = t
        .run_operation(
            "backup",
            &json!({"storageAccount": "archive", "containerName": "backups", "backupName": "mi.ghbk", "accessType": "SystemAssignedManagedIdentity"}),
        )
        .await;
    assert_eq!(s, 200, "{done}");
    assert!(dir.path().join("storage/backups/mi.ghbk").is_file());
    let (s, e) = t
        .start_operation(
            "backup",
            &json!({"storageAccount": "elsewhere", "containerName": "backups", "backupName": "x", "accessType": "UserAssignedManagedIdentity", "clientId": "c"}),
        )
        .await
        .unwrap_err();
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[storage-accounts.elsewhere]"),
        "{e}"
    );
}

/// An archive of an instance on the embedded store restores into one on PostgreSQL, and the
/// other way, each serving the source's API with its keys and secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_restore_across_the_embedded_store_and_postgres() {
    let backend = EchoBackend::start().await.unwrap();
    let pg = gatehouse_testkit::postgres::PostgresServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", dir.path().join("storage").display());
    let pass = "a backup passphrase for tests";
    let on = |data: &str, store: Option<String>| {
        let mut c = ServeConfig::ephemeral(&dir.path().join(data));
        c.store_url = store;
        c
    };
    let sqlite = TestInstance::start_with(on("sqlite", None)).await.unwrap();
    sqlite.put_ok("/apis/echo", json!({"properties": {"displayName": "Echo", "path": "echo", "serviceUrl": backend.url, "protocols": ["http"]}})).await;
    sqlite
        .put_ok(
            "/apis/echo/operations/get",
            json!({"properties": {"displayName": "Get", "method": "GET", "urlTemplate": "/*"}}),
        )
        .await;
    sqlite
        .put_ok(
            "/namedValues/token",
            json!({"properties": {"displayName": "token", "value": "s3cret", "secret": true}}),
        )
        .await;
    let (key, _) = sqlite.subscription("s1", "/apis/echo").await;
    let postgres = TestInstance::start_with(on("pg", Some(pg.create_database("target").unwrap())))
        .await
        .unwrap();
    for (from, to, name) in [
        (&sqlite, &postgres, "to-pg.ghbk"),
        (&postgres, &sqlite, "back.ghbk"),
    ] {
        let params = json!({"storageAccount": storage, "containerName": "backups", "backupName": name, "encryptionKey": pass});
        let (s, done) = from.run_operation("backup", &params).await;
        assert_eq!(s, 200, "{done}");
        let (s, done) = to.run_operation("restore", &params).await;
        assert_eq!(s, 200, "{done}");
        to.gateway_caught_up().await;
        let r = reqwest::Client::new()
            .get(format!("{}/echo/x", to.gateway_url()))
            .header("Ocp-Apim-Subscription-Key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}: the source's key works");
        let (_, v) = to.call("POST", "/namedValues/token/listValue", None).await;
        assert_eq!(v["value"], "s3cret", "{name}");
    }
}
