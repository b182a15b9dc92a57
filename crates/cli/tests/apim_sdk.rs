//! APIM's own JavaScript SDK (`@azure/arm-apimanagement`, api-version 2024-05-01) against the
//! built binary: `tests/apim-sdk/run.mjs` makes each call a pipeline or script makes and checks
//! the answer; every call must pass. `scripts/test-deps.sh` installs the SDK.

use gatehouse_testkit::EchoBackend;
use gatehouse_testkit::process::ServeProcess;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

#[tokio::test(flavor = "multi_thread")]
async fn apims_javascript_sdk_works_unchanged() {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/apim-sdk");
    assert!(
        sdk.join("node_modules/@azure/arm-apimanagement").is_dir(),
        "APIM's JavaScript SDK is not installed: run `bash scripts/test-deps.sh`"
    );
    let root = tempfile::tempdir().unwrap();
    let backend = EchoBackend::start().await.unwrap();
    let server = ServeProcess::spawn(
        BIN,
        root.path(),
        &[
            "--data-dir",
            "d",
            "--management-listen",
            "127.0.0.1:0",
            "--portal-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
            "--name",
            "contoso",
        ],
        &[],
    );
    let endpoints = server.endpoints();
    let out = tokio::process::Command::new("node")
        .arg("run.mjs")
        .current_dir(&sdk)
        .env("GATEHOUSE_URL", endpoints["management"].as_str().unwrap())
        .env("GATEHOUSE_TOKEN", server.token())
        .env("GATEHOUSE_SERVICE", "contoso")
        .env("BACKEND_URL", &backend.url)
        .env(
            "STORAGE_URL",
            format!("file://{}", root.path().join("storage").display()),
        )
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the SDK's calls failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    drop(server);
}
