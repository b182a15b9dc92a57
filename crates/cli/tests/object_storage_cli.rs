//! The CLI's backup, list, inspect and restore against a real S3 server (s3s-fs, started by
//! scripts/test-deps.sh), offline and through a running instance.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

fn require(port: u16, what: &str) {
    if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        panic!("{what} is not running on 127.0.0.1:{port}: run `bash scripts/test-deps.sh` first");
    }
}

fn run(cwd: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    gatehouse_testkit::process::cli_with_storage(BIN, cwd, args)
}

/// Starts `gatehouse serve` on a data directory and waits until it is up.
fn serve(cwd: &std::path::Path, data_dir: &str, name: &str) -> std::process::Child {
    let child = Command::new(BIN)
        .current_dir(cwd)
        .args([
            "serve",
            "--data-dir",
            data_dir,
            "--name",
            name,
            "--management-listen",
            "127.0.0.1:0",
            "--portal-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cwd.join(data_dir).join("endpoints.json").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "gatehouse serve did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

#[test]
fn offline_backup_list_inspect_and_restore_through_s3() {
    require(8014, "s3s-fs");
    let dir = tempfile::tempdir().unwrap();
    // Create a stopped instance with some configuration: start once, then stop.
    let mut child = serve(dir.path(), "src", "s3src");
    let body = dir.path().join("tag.json");
    std::fs::write(&body, r#"{"properties": {"displayName": "From S3"}}"#).unwrap();
    let (ok, _, err) = run(
        dir.path(),
        &[
            "--data-dir",
            "src",
            "put",
            "/tags/s3tag",
            "--body",
            body.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let (ok, key, _) = run(dir.path(), &["backup", "new-key"]);
    assert!(ok);
    std::fs::write(dir.path().join("k"), key).unwrap();
    let stamp = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let url = format!("s3+http://127.0.0.1:8014/backups/cli-{stamp}.ghbk");
    // Through the running instance's API.
    let (ok, out, err) = run(
        dir.path(),
        &[
            "--data-dir",
            "src",
            "backup",
            "--to",
            &url,
            "--key-file",
            "k",
        ],
    );
    assert!(ok && out.starts_with("backup of 's3src'"), "{out}{err}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    // Offline, to another object.
    let url2 = format!("s3+http://127.0.0.1:8014/backups/cli-{stamp}-offline.ghbk");
    let (ok, out, err) = run(
        dir.path(),
        &[
            "--data-dir",
            "src",
            "backup",
            "--to",
            &url2,
            "--key-file",
            "k",
        ],
    );
    assert!(ok && out.contains("entities"), "{out}{err}");
    let (ok, out, err) = run(
        dir.path(),
        &["backup", "list", "s3+http://127.0.0.1:8014/backups/"],
    );
    assert!(
        ok && out.contains(&format!("cli-{stamp}.ghbk"))
            && out.contains(&format!("cli-{stamp}-offline.ghbk")),
        "{out}{err}"
    );
    let (ok, out, err) = run(dir.path(), &["backup", "inspect", &url2, "--key-file", "k"]);
    assert!(
        ok && out.contains("s3src") && out.contains("verified:   yes"),
        "{out}{err}"
    );
    // Restore offline into a new stopped instance (created by starting and stopping it).
    let mut child = serve(dir.path(), "dst", "s3dst");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    let (ok, out, err) = run(
        dir.path(),
        &[
            "--data-dir",
            "dst",
            "restore",
            "--from",
            &url2,
            "--key-file",
            "k",
        ],
    );
    assert!(ok && out.starts_with("restored 's3src'"), "{out}{err}");
    let store = gatehouse_store::Store::open_dir(&dir.path().join("dst")).unwrap();
    let tag = store.read(|r| r.get("/tags/s3tag")).unwrap().unwrap();
    assert_eq!(tag.properties["displayName"], "From S3");
    assert_eq!(store.read(|r| r.service()).unwrap().unwrap().name, "s3dst");
    // A wrong storage key: one line, non-zero.
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "--data-dir",
            "dst",
            "restore",
            "--from",
            &url2,
            "--key-file",
            "k",
        ])
        .env("GATEHOUSE_STORAGE_KEY", "test:wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: RestoreFailed"), "{err}");
}
