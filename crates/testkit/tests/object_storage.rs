//! Backup and restore through real object storage servers started by scripts/test-deps.sh:
//! Azurite (Azure Blob Storage) and s3s-fs (S3, signatures checked).

use gatehouse_testkit::{EchoBackend, ServeConfig, TestInstance};
use serde_json::{Value, json};

/// Fails loudly when a storage server the test needs is not running.
fn require(port: u16, what: &str) {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        panic!("{what} is not running on 127.0.0.1:{port}: run `bash scripts/test-deps.sh` first");
    }
}

async fn instance(dir: &std::path::Path) -> TestInstance {
    TestInstance::start_with(ServeConfig::ephemeral(dir))
        .await
        .unwrap()
}

async fn round_trip(storage: Value) {
    let backend = EchoBackend::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = instance(&dir.path().join("src")).await;
    src.put_ok("/apis/echo", json!({"properties": {"displayName": "Echo", "path": "echo", "serviceUrl": backend.url, "protocols": ["http"]}})).await;
    src.put_ok(
        "/apis/echo/operations/get",
        json!({"properties": {"displayName": "Get", "method": "GET", "urlTemplate": "/"}}),
    )
    .await;
    let (key, _) = src.subscription("s1", "/apis").await;
    let mut params = storage.clone();
    params["backupName"] = json!(format!("test-{}.ghbk", uuid_like()));
    params["encryptionKey"] = json!("object storage test passphrase");
    let (s, b) = src.run_operation("backup", &params).await;
    assert_eq!(s, 200, "{b}");
    let dst = instance(&dir.path().join("dst")).await;
    let (s, b) = dst.run_operation("restore", &params).await;
    assert_eq!(s, 200, "{b}");
    dst.gateway_caught_up().await;
    let r = reqwest::Client::new()
        .get(format!("{}/echo", dst.gateway_url()))
        .header("Ocp-Apim-Subscription-Key", key.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn uuid_like() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[tokio::test]
async fn azure_blob_storage_through_azurite() {
    require(10000, "Azurite");
    // APIM's parameters: the account name, the container, the blob, the account key.
    round_trip(json!({
        "storageAccount": "devstoreaccount1",
        "containerName": "backups",
        "accessKey": "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
    }))
    .await;
}

#[tokio::test]
async fn s3_through_s3s_fs() {
    require(8014, "s3s-fs");
    round_trip(json!({"storageAccount": "s3+http://127.0.0.1:8014", "containerName": "backups", "accessKey": "test:test"})).await;
}

#[tokio::test]
async fn storage_failures_leave_no_archive_and_say_why() {
    require(8014, "s3s-fs");
    let dir = tempfile::tempdir().unwrap();
    let t = instance(&dir.path().join("i")).await;
    let name = format!("bad-{}.ghbk", uuid_like());
    // Wrong secret: the server refuses the signature.
    let params = json!({"storageAccount": "s3+http://127.0.0.1:8014", "containerName": "backups", "backupName": name, "accessKey": "test:wrong", "encryptionKey": "object storage test passphrase"});
    let (s, e) = t.run_operation("backup", &params).await;
    assert!(s >= 400, "{e}");
    assert_eq!(e["error"]["code"], "BackupFailed");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("storage error"),
        "{e}"
    );
    // Nothing under the final name.
    let ok = json!({"storageAccount": "s3+http://127.0.0.1:8014", "containerName": "backups", "backupName": name, "accessKey": "test:test", "encryptionKey": "object storage test passphrase"});
    let (s, e) = t.run_operation("restore", &ok).await;
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{e}"
    );
    // A storage server that is down: BackupFailed naming the connection error, after retries.
    let down = json!({"storageAccount": "s3+http://127.0.0.1:9", "containerName": "backups", "backupName": name, "accessKey": "test:test", "encryptionKey": "object storage test passphrase"});
    let (s, e) = t.run_operation("backup", &down).await;
    assert_eq!(s, 500, "{e}");
    assert_eq!(e["error"]["code"], "BackupFailed");
    // Bad parameters are refused at once.
    let (s, _) = t.run_operation("backup", &json!({"storageAccount": "ftp://x", "containerName": "backups", "backupName": "b", "encryptionKey": "object storage test passphrase"})).await;
    assert_eq!(s, 400);
    let (s, _) = t.run_operation("backup", &json!({"storageAccount": "myaccount", "containerName": "backups", "backupName": "b", "encryptionKey": "object storage test passphrase"})).await;
    assert_eq!(s, 400, "an Azure account needs its access key");
}

#[tokio::test]
async fn storage_accounts_configured_on_the_server_by_name() {
    require(8014, "s3s-fs");
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::ephemeral(&dir.path().join("i"));
    config.storage_accounts.insert(
        "archive".into(),
        serde_json::from_value(
            json!({"url": "s3+http://127.0.0.1:8014", "access-key": "test:test"}),
        )
        .unwrap(),
    );
    let t = TestInstance::start_with(config).await.unwrap();
    t.put_ok(
        "/tags/named",
        json!({"properties": {"displayName": "Named"}}),
    )
    .await;
    // APIM's body, with the account's key held by the server.
    let params = json!({"storageAccount": "archive", "containerName": "backups", "backupName": format!("named-{}.ghbk", uuid_like()), "encryptionKey": "object storage test passphrase"});
    let (s, b) = t.run_operation("backup", &params).await;
    assert_eq!(s, 200, "{b}");
    t.call("DELETE", "/tags/named", None).await;
    let (s, b) = t.run_operation("restore", &params).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(t.call("GET", "/tags/named", None).await.0, 200);
}

#[tokio::test]
async fn a_storage_server_dying_mid_upload_fails_the_backup_and_leaves_no_archive() {
    require(8014, "s3s-fs");
    let dir = tempfile::tempdir().unwrap();
    let t = instance(&dir.path().join("i")).await;
    // Enough incompressible content that the upload is cut in its middle.
    for i in 0..400 {
        let noise: String = (0..40)
            .map(|j| format!("{:x}", (i * 7919 + j * 104729) % 65521))
            .collect();
        t.put_ok(
            &format!("/tags/t{i}"),
            json!({"properties": {"displayName": noise.chars().take(160).collect::<String>()}}),
        )
        .await;
    }
    let proxy = gatehouse_testkit::DyingProxy::start("127.0.0.1:8014".parse().unwrap(), 20_000)
        .await
        .unwrap();
    let name = format!("dying-{}.ghbk", uuid_like());
    let params = json!({"storageAccount": format!("s3+http://{}", proxy.addr), "containerName": "backups", "backupName": name, "accessKey": "test:test", "encryptionKey": "object storage test passphrase"});
    let (s, e) = t.run_operation("backup", &params).await;
    assert!(s >= 400, "{e}");
    assert_eq!(e["error"]["code"], "BackupFailed");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("storage error"),
        "{e}"
    );
    // Straight to the server: nothing under the final name.
    let direct = json!({"storageAccount": "s3+http://127.0.0.1:8014", "containerName": "backups", "backupName": name, "accessKey": "test:test", "encryptionKey": "object storage test passphrase"});
    let (s, e) = t.run_operation("restore", &direct).await;
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{e}"
    );
    // And the instance still backs up fine once storage is back.
    let (s, b) = t.run_operation("backup", &direct).await;
    assert_eq!(s, 200, "{b}");
}
