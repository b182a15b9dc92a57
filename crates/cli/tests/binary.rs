//! The built `gatehouse` binary: `serve` with and without arguments, configuration sources,
//! the client commands of the quickstart, errors as one line and a non-zero exit, SIGTERM.

use gatehouse_testkit::process::ServeProcess;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

struct Server;

impl Server {
    fn spawn(cwd: &Path, args: &[&str], envs: &[(&str, &str)]) -> ServeProcess {
        ServeProcess::spawn(BIN, cwd, args, envs)
    }

    /// `serve` in `cwd` with both listeners on free ports.
    fn on_free_ports(cwd: &Path) -> ServeProcess {
        let ports = [
            "--management-listen",
            "127.0.0.1:0",
            "--portal-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ];
        Server::spawn(cwd, &ports, &[])
    }
}

fn cli(cwd: &Path, args: &[&str]) -> std::process::Output {
    gatehouse_testkit::process::cli(BIN, cwd, args)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A blocking GET (these tests are synchronous).
fn get(url: &str, token: &str) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    })
}

#[test]
fn serve_with_no_arguments_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(dir.path(), &[], &[]);
    let ep = server.endpoints();
    assert_eq!(ep["management"], "http://127.0.0.1:8001");
    assert_eq!(ep["gateway"], "http://127.0.0.1:8000");
    let token_file = dir.path().join("gatehouse-data/admin-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(dir.path().join("gatehouse-data/gatehouse.db").exists());
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let (s, svc) = get("http://127.0.0.1:8001/", &token);
    assert_eq!(s, 200);
    assert_eq!(svc["name"], "gatehouse");
    let (s, body) = get("http://127.0.0.1:8000/anything", "");
    assert_eq!(s, 404);
    assert_eq!(body["message"], "Resource not found");
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status}");
}

#[test]
fn quickstart_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::spawn(
        dir.path(),
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
            "--region",
            "westeurope",
            "--sku",
            "standard",
        ],
        &[],
    );
    let spec = dir.path().join("petstore.yaml");
    std::fs::write(
        &spec,
        "openapi: 3.0.0\ninfo: {title: Petstore, version: '1'}\nservers: [{url: 'http://127.0.0.1:9'}]\npaths:\n  /pets: {get: {operationId: listPets, responses: {'200': {description: ok}}}}\n  /pets/{petId}: {get: {operationId: showPet, parameters: [{name: petId, in: path, required: true, schema: {type: string}}], responses: {'200': {description: ok}}}}\n",
    )
    .unwrap();
    let d = ["--data-dir", "d"];
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = d.to_vec();
        all.extend_from_slice(args);
        cli(dir.path(), &all)
    };
    let out = ok(&run(&[
        "api",
        "import",
        "--id",
        "petstore",
        "--openapi",
        spec.to_str().unwrap(),
        "--protocols",
        "http,https",
    ]));
    assert!(out.contains("2 operation(s)"), "{out}");
    let api: Value = serde_json::from_str(&ok(&run(&["get", "/apis/petstore"]))).unwrap();
    assert_eq!(
        api["properties"]["protocols"],
        serde_json::json!(["http", "https"])
    );
    let out = ok(&run(&["api", "list"]));
    assert!(
        out.contains("petstore") && out.contains("Petstore"),
        "{out}"
    );
    ok(&run(&[
        "product",
        "create",
        "starter",
        "--display-name",
        "Starter",
        "--publish",
    ]));
    ok(&run(&["product", "add-api", "starter", "petstore"]));
    ok(&run(&[
        "subscription",
        "create",
        "dev1",
        "--scope",
        "/products/starter",
    ]));
    let keys: Value =
        serde_json::from_str(&ok(&run(&["subscription", "keys", "dev1", "--json"]))).unwrap();
    assert_eq!(keys["primaryKey"].as_str().unwrap().len(), 32);
    let subs: Value = serde_json::from_str(&ok(&run(&["subscription", "list", "--json"]))).unwrap();
    assert_eq!(subs.as_array().unwrap().len(), 2);
    let svc = ok(&run(&["service"]));
    assert!(
        svc.contains("contoso") && svc.contains("westeurope") && svc.contains("Standard"),
        "{svc}"
    );
    let raw: Value = serde_json::from_str(&ok(&run(&["get", "/products/starter/apis"]))).unwrap();
    assert_eq!(raw["count"], 1);

    // Errors: one readable line, non-zero exit.
    let out = run(&["get", "/apis/nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ResourceNotFound: Api not found."),
        "{err}"
    );
    let out = run(&["subscription", "create", "bad", "--scope", "/apis/ghost"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("scope") && err.lines().count() == 1, "{err}");
    let body = dir.path().join("bad.json");
    std::fs::write(&body, "{not json").unwrap();
    let out = run(&["put", "/tags/x", "--body", body.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("not valid JSON")
    );
    let out = cli(dir.path(), &["--data-dir", "nowhere", "api", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("no running instance found")
    );
    drop(server);
}

#[test]
fn admin_token_from_the_environment_and_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        format!(
            "name = \"fromfile\"\nregion = \"eastus\"\nsku = \"Premium\"\nmanagement-listen = \"127.0.0.1:0\"\ngateway-listen = \"127.0.0.1:0\"\n\n[storage-accounts.local]\nurl = \"file://{}\"\n",
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let server = Server::spawn(
        dir.path(),
        &["--region", "northeurope"],
        &[("GATEHOUSE_ADMIN_TOKEN", "env-token-123")],
    );
    assert!(
        !server.data_dir.join("admin-token").exists(),
        "no token file when the token is given"
    );
    let ep = server.endpoints();
    let url = ep["management"].as_str().unwrap();
    let (s, svc) = get(&format!("{url}/"), "env-token-123");
    assert_eq!(s, 200);
    assert_eq!(svc["name"], "fromfile");
    assert_eq!(svc["location"], "northeurope", "flags win over the file");
    assert_eq!(svc["sku"]["name"], "Premium");
    // A storage account named in gatehouse.toml serves APIM's backup body.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let c = reqwest::Client::new();
        let r = c
            .post(format!("{url}/backup"))
            .bearer_auth("env-token-123")
            .json(&serde_json::json!({"storageAccount": "local", "containerName": "c", "backupName": "b.ghbk", "encryptionKey": "a passphrase for the test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let location = r.headers()["location"].to_str().unwrap().to_string();
        loop {
            let r = c.get(&location).bearer_auth("env-token-123").send().await.unwrap();
            if r.status() != 202 {
                return r.status().as_u16();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(status, 200);
    assert!(dir.path().join("store/c/b.ghbk").is_file());
    let (s, _) = get(&format!("{url}/"), "other");
    assert_eq!(s, 401);
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "--url",
            url,
            "--token",
            "env-token-123",
            "group",
            "list",
            "--json",
        ])
        .output()
        .unwrap();
    let groups: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(groups.as_array().unwrap().len(), 3);
    drop(server);

    // A bad setting fails at start with one line.
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["serve", "--sku", "Gold", "--data-dir", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("sku 'Gold' is not supported"), "{err}");
}

#[test]
fn offline_backup_inspect_list_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let listen = [
        "--management-listen",
        "127.0.0.1:0",
        "--portal-listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
    ];
    // Source instance with an API and a subscription.
    let mut args = vec![
        "--data-dir",
        "a",
        "--name",
        "contoso",
        "--region",
        "westeurope",
        "--sku",
        "Standard",
    ];
    args.extend_from_slice(&listen);
    let a = Server::spawn(dir.path(), &args, &[]);
    let ep = a.endpoints();
    let url = ep["management"].as_str().unwrap().to_string();
    let token = std::fs::read_to_string(dir.path().join("a/admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let run_a = |args: &[&str]| {
        let mut all = vec!["--url", url.as_str(), "--token", token.as_str()];
        all.extend_from_slice(args);
        cli(dir.path(), &all)
    };
    let body = dir.path().join("api.json");
    std::fs::write(
        &body,
        r#"{"properties": {"displayName": "Echo", "path": "echo"}}"#,
    )
    .unwrap();
    ok(&run_a(&[
        "put",
        "/apis/echo",
        "--body",
        body.to_str().unwrap(),
    ]));
    ok(&run_a(&[
        "subscription",
        "create",
        "s1",
        "--scope",
        "/apis/echo",
    ]));
    let keys: Value =
        serde_json::from_str(&ok(&run_a(&["subscription", "keys", "s1", "--json"]))).unwrap();
    let key = ok(&cli(dir.path(), &["backup", "new-key"]));
    assert!(key.starts_with("AGE-SECRET-KEY-"));
    std::fs::write(dir.path().join("backup.key"), &key).unwrap();
    std::fs::create_dir_all(dir.path().join("archives")).unwrap();
    // While the instance runs, the same command goes through its management API.
    let out = ok(&cli(
        dir.path(),
        &[
            "--data-dir",
            "a",
            "backup",
            "--to",
            "archives/online.ghbk",
            "--key-file",
            "backup.key",
        ],
    ));
    assert!(
        out.starts_with("backup of 'contoso'") && out.trim_end().lines().count() == 1,
        "{out}"
    );
    assert!(a.terminate().success());
    let archive = format!("file://{}/archives/contoso.ghbk", dir.path().display());
    let out = ok(&cli(
        dir.path(),
        &[
            "--data-dir",
            "a",
            "backup",
            "--to",
            &archive,
            "--key-file",
            "backup.key",
        ],
    ));
    assert!(
        out.starts_with("backup of 'contoso' at revision")
            && out.contains("entities")
            && out.trim_end().lines().count() == 1,
        "{out}"
    );
    let out = ok(&cli(
        dir.path(),
        &["backup", "inspect", "archives/contoso.ghbk"],
    ));
    assert!(
        out.contains("contoso (westeurope, Standard") && out.contains("verified:   no"),
        "{out}"
    );
    let out = ok(&cli(
        dir.path(),
        &[
            "backup",
            "inspect",
            "archives/contoso.ghbk",
            "--key-file",
            "backup.key",
        ],
    ));
    assert!(out.contains("verified:   yes"), "{out}");
    let out = ok(&cli(dir.path(), &["backup", "list", "archives"]));
    assert!(
        out.contains("contoso.ghbk") && out.contains("2 archive(s)") && out.contains("online.ghbk"),
        "{out}"
    );

    // Target instance: its own name, same tier. Created, then stopped.
    let mut args = vec![
        "--data-dir",
        "b",
        "--name",
        "fabrikam",
        "--region",
        "eastus",
        "--sku",
        "Standard",
    ];
    args.extend_from_slice(&listen);
    let b = Server::spawn(dir.path(), &args, &[]);
    // A running target is restored through its API: here a dry run, which changes nothing.
    let out = ok(&cli(
        dir.path(),
        &[
            "--data-dir",
            "b",
            "restore",
            "--from",
            "archives/online.ghbk",
            "--key-file",
            "backup.key",
            "--dry-run",
        ],
    ));
    // The same short summary as on a stopped instance (below).
    assert!(out.contains("api") && out.contains("+1 added"), "{out}");
    assert!(b.terminate().success());
    let out = ok(&cli(
        dir.path(),
        &[
            "--data-dir",
            "b",
            "restore",
            "--from",
            "archives/contoso.ghbk",
            "--key-file",
            "backup.key",
            "--dry-run",
        ],
    ));
    assert!(out.contains("api") && out.contains("+1 added"), "{out}");
    // A wrong key: one line, non-zero, nothing restored.
    std::fs::write(
        dir.path().join("wrong.key"),
        ok(&cli(dir.path(), &["backup", "new-key"])),
    )
    .unwrap();
    let out = cli(
        dir.path(),
        &[
            "--data-dir",
            "b",
            "restore",
            "--from",
            "archives/contoso.ghbk",
            "--key-file",
            "wrong.key",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("RestoreFailed: wrong backup key"), "{err}");
    let out = ok(&cli(
        dir.path(),
        &[
            "--data-dir",
            "b",
            "restore",
            "--from",
            "archives/contoso.ghbk",
            "--key-file",
            "backup.key",
        ],
    ));
    assert!(out.starts_with("restored 'contoso'"), "{out}");

    // The target serves the source's configuration, keys unchanged, under its own name.
    let mut args = vec!["--data-dir", "b"];
    args.extend_from_slice(&listen);
    let b = Server::spawn(dir.path(), &args, &[]);
    let ep = b.endpoints();
    let url_b = ep["management"].as_str().unwrap().to_string();
    let token_b = std::fs::read_to_string(dir.path().join("b/admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let (s, svc) = get(&format!("{url_b}/"), &token_b);
    assert_eq!(s, 200);
    assert_eq!(svc["name"], "fabrikam");
    assert_eq!(svc["location"], "eastus");
    let keys_b: Value = serde_json::from_str(&ok(&cli(
        dir.path(),
        &[
            "--url",
            &url_b,
            "--token",
            &token_b,
            "subscription",
            "keys",
            "s1",
            "--json",
        ],
    )))
    .unwrap();
    assert_eq!(keys, keys_b);
    drop(b);
}

/// The CLI a person uses: a delete that finds nothing fails, an error is said once (and as JSON
/// with --json), a dry run reads the same whether the instance runs or not, the server's log has
/// no colour codes in a file, and a move that would delete its source asks first.
#[test]
fn errors_deletes_and_confirmations_read_well() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::on_free_ports(dir.path());
    let out = cli(dir.path(), &["api", "delete", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("there is no API 'nope'") && err.lines().count() == 1,
        "{err}"
    );

    let out = cli(dir.path(), &["--json", "get", "/apis/nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stderr).expect("a JSON error");
    assert_eq!(err["error"]["code"], "ResourceNotFound");
    assert_eq!(err["error"]["status"], 404);

    // Through the running instance: a wrong key said once, a dry run as a short summary.
    ok(&cli(
        dir.path(),
        &["backup", "new-key", "--out", "backup.key"],
    ));
    ok(&cli(
        dir.path(),
        &["backup", "new-key", "--out", "wrong.key"],
    ));
    ok(&cli(
        dir.path(),
        &[
            "backup",
            "--to",
            "archives/a.ghbk",
            "--key-file",
            "backup.key",
        ],
    ));
    let out = cli(
        dir.path(),
        &[
            "restore",
            "--from",
            "archives/a.ghbk",
            "--key-file",
            "wrong.key",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("RestoreFailed").count(), 1, "{err}");
    assert!(
        err.starts_with("error: RestoreFailed: wrong backup key"),
        "{err}"
    );
    let dry = ok(&cli(
        dir.path(),
        &[
            "restore",
            "--from",
            "archives/a.ghbk",
            "--key-file",
            "backup.key",
            "--dry-run",
        ],
    ));
    assert!(
        dry.contains("nothing would change") && !dry.contains("formatVersion"),
        "{dry}"
    );

    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("instance started") && !log.contains('\u{1b}'),
        "{log}"
    );

    // A move that would delete its source needs --yes when nobody can be asked.
    let out = cli(
        dir.path(),
        &[
            "move",
            "--source-data-dir",
            "gatehouse-data",
            "--target-data-dir",
            "other",
            "--storage",
            "archives",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--yes") && err.contains("--keep-source"),
        "{err}"
    );
    assert!(
        !dir.path().join("gatehouse-move.json").exists(),
        "nothing was recorded"
    );

    // A move whose preflight failed (no target) can be dropped and started again otherwise.
    let attempt = |target: &str| {
        cli(
            dir.path(),
            &[
                "move",
                "--keep-source",
                "--source-data-dir",
                "gatehouse-data",
                "--target-data-dir",
                target,
                "--storage",
                "archives",
            ],
        )
    };
    assert!(!attempt("missing").status.success());
    let again = attempt("also-missing");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("--abandon") && err.contains("gatehouse-move.json"),
        "{err}"
    );
    ok(&cli(dir.path(), &["move", "--abandon"]));
    assert!(!dir.path().join("gatehouse-move.json").exists());
    let err = String::from_utf8_lossy(&attempt("also-missing").stderr).to_string();
    assert!(
        !err.contains("already recorded"),
        "a new move started: {err}"
    );
}

/// Every kind of resource has list, show, create, update and delete; a policy has show, set
/// and delete at each scope; a secret comes from the environment, never the command line.
#[test]
fn every_kind_is_managed_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let _server = Server::on_free_ports(dir.path());
    let run = |args: &[&str]| ok(&cli(dir.path(), args));

    run(&["group", "create", "ops", "--set", "displayName=Operations"]);
    run(&["group", "update", "ops", "--set", "description=On call"]);
    let shown = run(&["group", "show", "ops"]);
    assert!(
        shown.contains("Operations") && shown.contains("On call"),
        "{shown}"
    );
    assert!(run(&["group", "list"]).contains("Operations"));

    let secret = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "namedvalue",
            "create",
            "db",
            "--set",
            "displayName=db",
            "--set",
            "secret=true",
            "--set-env",
            "value=DB_PASSWORD",
        ])
        .env("DB_PASSWORD", "s3cret-value")
        .env_remove("GATEHOUSE_URL")
        .env_remove("GATEHOUSE_TOKEN")
        .output()
        .unwrap();
    ok(&secret);
    let listed = run(&["namedvalue", "list"]);
    assert!(
        listed.contains("db") && !listed.contains("s3cret-value"),
        "{listed}"
    );

    run(&[
        "backend",
        "create",
        "orders",
        "--set",
        "url=http://127.0.0.1:9/orders",
        "--set",
        "protocol=http",
    ]);
    run(&[
        "backend",
        "update",
        "orders",
        "--set",
        "description=Orders service",
    ]);
    let backend: Value =
        serde_json::from_str(&run(&["--json", "backend", "show", "orders"])).unwrap();
    assert_eq!(backend["properties"]["url"], "http://127.0.0.1:9/orders");
    assert_eq!(backend["properties"]["description"], "Orders service");

    let cert = rcgen::generate_simple_self_signed(vec!["api.example.com".to_string()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    run(&[
        "certificate",
        "create",
        "edge",
        "--set-file",
        "data=cert.pem",
    ]);
    let listed = run(&["certificate", "list"]);
    assert!(
        listed.contains("edge") && listed.contains("CN="),
        "{listed}"
    );

    run(&["tag", "create", "public", "--set", "displayName=Public"]);
    assert!(run(&["tag", "show", "public"]).contains("Public"));

    run(&[
        "api",
        "create",
        "echo",
        "--set",
        "displayName=Echo",
        "--set",
        "path=echo",
        "--set",
        "serviceUrl=http://127.0.0.1:9",
        "--set",
        r#"protocols=["http"]"#,
    ]);
    assert!(run(&["api", "show", "echo"]).contains("http://127.0.0.1:9"));
    std::fs::write(
        dir.path().join("policy.xml"),
        r#"<policies><inbound><base /><set-header name="x-team" exists-action="override"><value>ops</value></set-header></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>"#,
    )
    .unwrap();
    run(&["policy", "set", "--api", "echo", "--file", "policy.xml"]);
    assert!(run(&["policy", "show", "--api", "echo"]).contains("x-team"));
    run(&["policy", "delete", "--api", "echo"]);
    let out = cli(dir.path(), &["policy", "show", "--api", "echo"]);
    assert!(!out.status.success());

    let bad = cli(
        dir.path(),
        &["policy", "set", "--file", "policy.xml", "--operation", "x"],
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--operation needs --api"), "{err}");
    let bad = cli(dir.path(), &["backend", "update", "orders"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nothing to update"));

    for (kind, id) in [
        ("group", "ops"),
        ("namedvalue", "db"),
        ("backend", "orders"),
        ("certificate", "edge"),
        ("tag", "public"),
    ] {
        run(&[kind, "delete", id]);
        let again = cli(dir.path(), &[kind, "delete", id]);
        assert_eq!(again.status.code(), Some(1), "{kind}");
    }
}
