//! Continuous archiving end to end, through the real binary: an instance runs with
//! `--archive` while a writer commits changes; its machine is "lost" (kill -9, the data
//! directory deleted); `restore --latest` into a new directory holds every change acknowledged
//! more than the segment interval before the loss, and `--to-revision` / `--to-time` land
//! exactly on the state at that point. A damaged or missing segment is refused by name.

use gatehouse_store::Store;
use gatehouse_testkit::process::ServeProcess;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

fn run(cwd: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    gatehouse_testkit::process::cli_with_storage(BIN, cwd, args)
}

/// One acknowledged write: the tag, the revision it committed, when it was acknowledged.
struct Ack {
    tag: usize,
    revision: u64,
    at: Instant,
    wall: SystemTime,
}

/// PUTs tags one after another for `how_long`, numbered from `first`; what was acknowledged.
async fn write_for(management: &str, token: &str, how_long: Duration, first: usize) -> Vec<Ack> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut acks = Vec::new();
    let mut i = first;
    while started.elapsed() < how_long {
        let resp = http
            .put(format!("{management}/tags/t{i}"))
            .bearer_auth(token)
            .json(&serde_json::json!({"properties": {"displayName": format!("T{i}")}}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let etag = resp.headers()["etag"].to_str().unwrap().to_string();
        let revision = etag
            .trim_matches('"')
            .trim_start_matches('r')
            .parse()
            .unwrap();
        acks.push(Ack {
            tag: i,
            revision,
            at: Instant::now(),
            wall: SystemTime::now(),
        });
        i += 1;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    acks
}

/// The tags of the writes acknowledged at or before `revision`.
fn tags_through(acks: &[Ack], revision: u64) -> BTreeSet<usize> {
    acks.iter()
        .filter(|a| a.revision <= revision)
        .map(|a| a.tag)
        .collect()
}

/// The tags in a stopped instance's data directory.
fn tags_in(dir: &Path) -> BTreeSet<usize> {
    let store = Store::open_dir(dir).unwrap();
    let snap = store.snapshot().unwrap();
    snap.resources
        .iter()
        .filter_map(|r| r.path.strip_prefix("/tags/t")?.parse().ok())
        .collect()
}

fn restore(cwd: &Path, archive: &str, into: &str, point: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "--data-dir",
        into,
        "restore",
        "--from",
        archive,
        "--key-file",
        "k",
    ];
    args.extend_from_slice(point);
    run(cwd, &args)
}

/// An archive key in `cwd/k`, as `gatehouse backup new-key` makes it.
fn new_key(cwd: &Path) {
    let (ok, key, err) = run(cwd, &["backup", "new-key"]);
    assert!(ok, "{err}");
    std::fs::write(cwd.join("k"), key).unwrap();
}

/// The S3 test server's port, which must answer.
fn s3_port() -> u16 {
    let s3 = 8014;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", s3)).is_ok(),
        "the S3 server is not running on 127.0.0.1:{s3}: run `bash scripts/test-deps.sh` first"
    );
    s3
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_machine_is_restored_to_its_last_second_and_to_any_point() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    new_key(cwd);
    let archive = format!("file://{}/archives/continuous", cwd.display());
    let mut source = archiving_with(cwd, "src", &archive, &["--name", "lost"], &[]);
    let management = source.endpoints()["management"]
        .as_str()
        .unwrap()
        .to_string();
    let acks = write_for(&management, &source.token(), Duration::from_secs(5), 0).await;
    assert!(acks.len() > 50, "only {} writes", acks.len());
    let (_, status, _) = run(
        cwd,
        &["--url", &management, "--token", &source.token(), "get", "/"],
    );
    assert!(status.contains("continuousArchive"), "{status}");

    // The machine is lost.
    source.child.kill().unwrap();
    let lost_at = Instant::now();
    source.child.wait().unwrap();
    std::fs::remove_dir_all(cwd.join("src")).unwrap();

    let (ok, out, err) = restore(cwd, &archive, "latest", &["--latest"]);
    assert!(ok, "{out}{err}");
    println!("{}", out.trim());
    let restored = tags_in(&cwd.join("latest"));
    let safe: Vec<&Ack> = acks
        .iter()
        .filter(|a| lost_at.duration_since(a.at) > Duration::from_secs(2))
        .collect();
    assert!(!safe.is_empty());
    for a in &safe {
        assert!(
            restored.contains(&a.tag),
            "t{} (acknowledged more than 2 s before the loss) is missing",
            a.tag
        );
    }
    let lost = acks.len() - acks.iter().filter(|a| restored.contains(&a.tag)).count();
    println!(
        "acknowledged {}, restored {}, lost {lost} (those of the last second)",
        acks.len(),
        restored.len()
    );
    // The new directory holds a whole instance that serves.
    let served = ServeProcess::spawn(
        BIN,
        cwd,
        &[
            "--data-dir",
            "latest",
            "--no-portal",
            "--management-listen",
            "127.0.0.1:0",
            "--gateway-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let (ok, out, err) = run(
        cwd,
        &[
            "--url",
            served.endpoints()["management"].as_str().unwrap(),
            "--token",
            &served.token(),
            "get",
            "/tags/t0",
        ],
    );
    assert!(ok && out.contains("T0"), "{out}{err}");
    // A point-in-time restore into the running instance, through its API (POST /restore).
    let early = &acks[acks.len() / 4];
    let (served_url, served_token) = (
        served.endpoints()["management"]
            .as_str()
            .unwrap()
            .to_string(),
        served.token(),
    );
    let (ok, out, err) = run(
        cwd,
        &[
            "--url",
            &served_url,
            "--token",
            &served_token,
            "restore",
            "--from",
            &archive,
            "--key-file",
            "k",
            "--to-revision",
            &early.revision.to_string(),
        ],
    );
    assert!(ok, "{out}{err}");
    let listed: serde_json::Value = reqwest::Client::new()
        .get(format!("{served_url}/tags?$top=1000"))
        .bearer_auth(&served_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let online: BTreeSet<usize> = listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str()?.strip_prefix('t')?.parse().ok())
        .collect();
    let expected = tags_through(&acks, early.revision);
    assert_eq!(online, expected);
    drop(served);

    // A dry run to a later revision shows what the replayed changes would do (the base alone,
    // taken before any write, would remove every tag), and changes nothing.
    let middle = &acks[acks.len() / 2];
    let (ok, out, err) = restore(
        cwd,
        &archive,
        "latest",
        &[
            "--to-revision",
            &middle.revision.to_string(),
            "--dry-run",
            "--json",
        ],
    );
    assert!(ok, "{out}{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tags_listed = |how: &str| -> BTreeSet<usize> {
        let changes = plan["changes"].as_object().unwrap();
        changes
            .values()
            .flat_map(|d| d[how].as_array().unwrap().iter())
            .filter_map(|p| p.as_str()?.strip_prefix("/tags/t")?.parse().ok())
            .collect()
    };
    let would_add: BTreeSet<usize> = tags_through(&acks, middle.revision)
        .difference(&expected)
        .copied()
        .collect();
    assert_eq!(tags_listed("added"), would_add, "{out}");
    assert!(tags_listed("removed").is_empty(), "{out}");
    assert_eq!(
        tags_in(&cwd.join("latest")),
        expected,
        "a dry run changed the instance"
    );
    let (ok, out, err) = restore(
        cwd,
        &archive,
        "latest",
        &["--to-revision", &middle.revision.to_string(), "--dry-run"],
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with(&format!("dry run: revision {} (", middle.revision)),
        "{out}"
    );
    assert!(
        out.contains(&format!("+{} added", would_add.len())),
        "{out}"
    );

    // A revision and a time in the middle land exactly there.
    let (ok, out, err) = restore(
        cwd,
        &archive,
        "at-revision",
        &["--to-revision", &middle.revision.to_string()],
    );
    assert!(ok, "{out}{err}");
    let expected = tags_through(&acks, middle.revision);
    assert_eq!(tags_in(&cwd.join("at-revision")), expected);
    let early = &acks[acks.len() / 3];
    let (ok, out, err) = restore(
        cwd,
        &archive,
        "at-time",
        &["--to-time", &rfc3339(early.wall)],
    );
    assert!(ok, "{out}{err}");
    let expected: BTreeSet<usize> = (0..=early.tag).collect();
    assert_eq!(tags_in(&cwd.join("at-time")), expected);

    let (ok, out, err) = run(cwd, &["backup", "list", &archive]);
    assert!(ok && out.contains("restorable from revision"), "{out}{err}");

    // A recovery drill: restored, started and probed; RPO and RTO against limits.
    let (ok, out, err) = run(
        cwd,
        &[
            "drill",
            "--from",
            &archive,
            "--key-file",
            "k",
            "--max-rpo-seconds",
            "600",
            "--max-rto-seconds",
            "60",
        ],
    );
    assert!(
        ok && out.contains("(RTO)") && out.contains("(RPO)"),
        "{out}{err}"
    );
    println!("{}", out.trim());
    let (ok, out, err) = run(
        cwd,
        &[
            "drill",
            "--from",
            &archive,
            "--key-file",
            "k",
            "--max-rpo-seconds",
            "0.001",
        ],
    );
    assert!(
        !ok && err.contains("exceeds --max-rpo-seconds"),
        "{out}{err}"
    );

    // A restored instance is another instance: it may not write into this archive.
    let index_before = std::fs::read(cwd.join("archives/continuous/index.json")).unwrap();
    let intruder = archiving(cwd, "at-time", &archive);
    let started = Instant::now();
    loop {
        let s = archive_status(&intruder).await;
        if s["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("belongs to another instance"))
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(intruder);
    assert_eq!(
        std::fs::read(cwd.join("archives/continuous/index.json")).unwrap(),
        index_before
    );

    // A flipped byte in a segment, then a missing one: refused, by name.
    let folder = cwd.join("archives/continuous");
    let mut segments: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ghseg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");
    let victim = &segments[segments.len() / 2];
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();
    let original = std::fs::read(victim).unwrap();
    let mut flipped = original.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x40;
    std::fs::write(victim, &flipped).unwrap();
    let (ok, out, err) = restore(cwd, &archive, "damaged", &["--latest"]);
    assert!(!ok && err.contains(&name), "{out}{err}");
    assert!(
        !cwd.join("damaged").join("gatehouse.db").exists(),
        "nothing is written before the archive is verified"
    );
    std::fs::remove_file(victim).unwrap();
    let (ok, out, err) = restore(cwd, &archive, "missing", &["--latest"]);
    assert!(!ok && err.contains(&name), "{out}{err}");

    // The index is not encrypted: one that names an object outside the archive is refused
    // before anything is read or written by that name.
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("index.json")).unwrap()).unwrap();
    let newest = index["bases"].as_array().unwrap().last().unwrap().clone();
    let mut outside = newest.clone();
    outside["name"] = "../../escaped.ghbk".into();
    outside["revision"] = (newest["revision"].as_u64().unwrap() + 1).into();
    index["bases"].as_array_mut().unwrap().push(outside);
    std::fs::write(folder.join("index.json"), index.to_string()).unwrap();
    let (ok, out, err) = restore(cwd, &archive, "tampered", &["--latest"]);
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("index.json is damaged") && err.contains("../../escaped.ghbk"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// A TCP proxy in front of the S3 server that can be taken down (connections refused, open
/// ones cut) and brought back: storage unreachable, for fault injection.
struct Switch {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Switch {
    async fn start(to: u16) -> Switch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (u, o) = (up.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !u.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                o.lock().unwrap().push(task);
            }
        });
        Switch { port, up, open }
    }

    fn set(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        if !up {
            for t in self.open.lock().unwrap().drain(..) {
                t.abort();
            }
        }
    }
}

fn stamp() -> String {
    format!(
        "{:x}",
        SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn archiving(cwd: &Path, data_dir: &str, archive: &str) -> ServeProcess {
    archiving_with(
        cwd,
        data_dir,
        archive,
        &[],
        &[("GATEHOUSE_STORAGE_KEY", STORAGE_KEY)],
    )
}

/// `serve` on `data_dir` archiving to `archive` (key file `k`), with `extra` arguments.
fn archiving_with(
    cwd: &Path,
    data_dir: &str,
    archive: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> ServeProcess {
    let mut args = vec![
        "--data-dir",
        data_dir,
        "--no-portal",
        "--management-listen",
        "127.0.0.1:0",
        "--gateway-listen",
        "127.0.0.1:0",
        "--archive",
        archive,
        "--archive-key-file",
        "k",
    ];
    args.extend_from_slice(extra);
    ServeProcess::spawn(BIN, cwd, &args, env)
}

const STORAGE_KEY: &str = "test:test";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The instance's `continuousArchive` status.
async fn archive_status(p: &ServeProcess) -> serde_json::Value {
    let management = p.endpoints()["management"].as_str().unwrap().to_string();
    status_at(&management, &p.token()).await
}

/// The `continuousArchive` status of the node whose management API is at `management`.
async fn status_at(management: &str, token: &str) -> serde_json::Value {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{management}/"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["properties"]["continuousArchive"].clone()
}

/// Waits until everything up to `revision` is in storage.
async fn until_archived(p: &ServeProcess, revision: u64, within: Duration) -> Duration {
    let management = p.endpoints()["management"].as_str().unwrap().to_string();
    until_archived_at(&management, &p.token(), revision, within).await
}

/// Waits until the node at `management` has uploaded everything up to `revision`.
async fn until_archived_at(
    management: &str,
    token: &str,
    revision: u64,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let s = status_at(management, token).await;
        if s["lastArchivedRevision"].as_u64().unwrap_or(0) >= revision && s["queuedFiles"] == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "not archived through {revision}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_down_for_30_s_and_a_restart_lose_nothing_and_the_queue_drains() {
    let s3 = s3_port();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    new_key(cwd);
    let switch = Switch::start(s3).await;
    let folder = format!("backups/outage-{}", stamp());
    let through_switch = format!("s3+http://127.0.0.1:{}/{folder}", switch.port);
    let mut p = archiving(cwd, "src", &through_switch);
    let token = p.token();
    let management = p.endpoints()["management"].as_str().unwrap().to_string();
    let mut acks = write_for(&management, &token, Duration::from_secs(2), 0).await;
    until_archived(&p, acks.last().unwrap().revision, Duration::from_secs(20)).await;

    // Storage goes away for 30 s; writes go on; the node is killed and started again meanwhile.
    switch.set(false);
    let down = Instant::now();
    acks.extend(write_for(&management, &token, Duration::from_secs(3), acks.len()).await);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let s = archive_status(&p).await;
    assert!(
        s["lagSeconds"].as_f64().unwrap() > 10.0 && s["queuedFiles"].as_u64().unwrap() > 0,
        "{s}"
    );
    assert!(s["lastError"].is_string(), "{s}");
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let queued = std::fs::read_dir(cwd.join("src/archive-queue"))
        .unwrap()
        .count();
    assert!(queued > 0, "the queue is on disk");
    // What the killed process left for its clients is not the new one's.
    std::fs::remove_file(cwd.join("src/endpoints.json")).unwrap();
    let mut p = archiving(cwd, "src", &through_switch);
    let management = p.endpoints()["management"].as_str().unwrap().to_string();
    acks.extend(write_for(&management, &token, Duration::from_secs(2), acks.len()).await);
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(down.elapsed())).await;
    switch.set(true);
    let drained = until_archived(&p, acks.last().unwrap().revision, Duration::from_secs(60)).await;
    println!(
        "storage down {:.0} s; {} changes; the queue drained {:.1} s after it came back",
        down.elapsed().as_secs_f64() - drained.as_secs_f64(),
        acks.len(),
        drained.as_secs_f64()
    );

    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let direct = format!("s3+http://127.0.0.1:{s3}/{folder}");
    let out = Command::new(BIN)
        .current_dir(cwd)
        .args([
            "--data-dir",
            "restored",
            "restore",
            "--from",
            &direct,
            "--key-file",
            "k",
            "--latest",
        ])
        .env("GATEHOUSE_STORAGE_KEY", STORAGE_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = tags_in(&cwd.join("restored"));
    let missing: Vec<usize> = acks
        .iter()
        .map(|a| a.tag)
        .filter(|t| !restored.contains(t))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not restored: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_in_azurite_restores_what_was_acknowledged() {
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", 10000)).is_ok(),
        "Azurite is not running on 127.0.0.1:10000: run `bash scripts/test-deps.sh` first"
    );
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    new_key(cwd);
    let archive = format!("az://devstoreaccount1/backups/archive-{}", stamp());
    let mut p = archiving_with(
        cwd,
        "src",
        &archive,
        // Segments 5 s apart: the drill below reads the archive before a change just made
        // can be in it.
        &["--name", "azure", "--archive-segment-seconds", "5"],
        &[("GATEHOUSE_STORAGE_KEY", AZURITE_KEY)],
    );
    let management = p.endpoints()["management"].as_str().unwrap().to_string();
    let acks = write_for(&management, &p.token(), Duration::from_secs(3), 0).await;
    until_archived(&p, acks.last().unwrap().revision, Duration::from_secs(20)).await;
    // A drill against the live instance, idle since its last archived change: the restored
    // instance equals it, type by type (the move's verification); one change more, and the
    // drill says it did not compare.
    let token = p.token();
    let drill = |cwd: &Path| {
        let live = ["--url", management.as_str(), "--token", token.as_str()];
        let args = [
            "drill",
            "--from",
            &archive,
            "--key-file",
            "k",
            "--access-key",
            AZURITE_KEY,
        ];
        run(cwd, &[&live[..], &args[..]].concat())
    };
    let (ok, out, err) = drill(cwd);
    assert!(
        ok && out.contains("equal to the live instance"),
        "{out}{err}"
    );
    write_for(
        &management,
        &token,
        Duration::from_millis(1),
        acks.len() + 1000,
    )
    .await;
    let (ok, out, err) = drill(cwd);
    assert!(
        ok && out.contains("not compared: the live instance is at revision"),
        "{out}{err}"
    );
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let out = Command::new(BIN)
        .current_dir(cwd)
        .args([
            "--data-dir",
            "restored",
            "restore",
            "--from",
            &archive,
            "--key-file",
            "k",
            "--latest",
        ])
        .env("GATEHOUSE_STORAGE_KEY", AZURITE_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        tags_in(&cwd.join("restored")),
        acks.iter().map(|a| a.tag).collect()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_only_what_no_kept_base_needs() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    new_key(cwd);
    let archive = format!("file://{}/archives/kept", cwd.display());
    // A schedule that is neither an interval nor a cron expression, or a passphrase for a key,
    // is refused in one line before anything starts.
    std::fs::write(cwd.join("passphrase"), "correct horse battery staple").unwrap();
    for (schedule, key_file, expected) in [
        ("0 */6 * *", "k", "'0 */6 * *' is not a cron expression"),
        ("0 0 31 2 *", "k", "never fires"),
        ("6x", "k", "--archive-every must end in d, h, m or s"),
        ("6h", "passphrase", "needs an age key"),
    ] {
        let (ok, _, err) = run(
            cwd,
            &[
                "serve",
                "--data-dir",
                "refused",
                "--no-portal",
                "--archive",
                &archive,
                "--archive-key-file",
                key_file,
                "--archive-every",
                schedule,
            ],
        );
        assert!(!ok && err.contains(expected), "{schedule}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    assert!(!cwd.join("archives/kept").exists());
    // A cron expression with seconds: a base every two seconds.
    let extra = [
        "--name",
        "kept",
        "--archive-every",
        "*/2 * * * * *",
        "--keep-last",
        "2",
    ];
    let mut p = archiving_with(cwd, "src", &archive, &extra, &[]);
    let management = p.endpoints()["management"].as_str().unwrap().to_string();
    let acks = write_for(&management, &p.token(), Duration::from_secs(7), 0).await;
    until_archived(&p, acks.last().unwrap().revision, Duration::from_secs(20)).await;
    p.child.kill().unwrap();
    p.child.wait().unwrap();

    let folder = cwd.join("archives/kept");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("index.json")).unwrap()).unwrap();
    let bases: Vec<u64> = index["bases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(bases.len(), 2, "{index}");
    let oldest = *bases.iter().min().unwrap();
    let files: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".ghbk")).count(),
        2,
        "{files:?}"
    );
    for f in files.iter().filter(|f| f.ends_with(".ghseg")) {
        let last: u64 = f
            .trim_end_matches(".ghseg")
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            last > oldest,
            "{f} is needed by no kept base (the oldest is at {oldest})"
        );
    }
    // Every point from the oldest kept base on restores exactly; one before it is refused.
    let after = acks.iter().find(|a| a.revision > oldest).unwrap();
    let (ok, out, err) = restore(
        cwd,
        &archive,
        "after",
        &["--to-revision", &after.revision.to_string()],
    );
    assert!(ok, "{out}{err}");
    let expected = tags_through(&acks, after.revision);
    assert_eq!(tags_in(&cwd.join("after")), expected);
    let before = acks.iter().find(|a| a.revision < oldest).unwrap();
    let (ok, out, err) = restore(
        cwd,
        &archive,
        "before",
        &["--to-revision", &before.revision.to_string()],
    );
    assert!(!ok && err.contains("oldest base"), "{out}{err}");
}

const SHARED_TOKEN: &str = "shared-admin-token-0123456789abcdef";

/// A node of the instance on the shared `store`, archiving to `archive`.
fn shared_node(cwd: &Path, data_dir: &str, store: &str, archive: &str) -> (ServeProcess, String) {
    let p = archiving_with(
        cwd,
        data_dir,
        archive,
        &["--store", store],
        &[
            ("GATEHOUSE_STORAGE_KEY", STORAGE_KEY),
            ("GATEHOUSE_ADMIN_TOKEN", SHARED_TOKEN),
        ],
    );
    let management = p.endpoints()["management"].as_str().unwrap().to_string();
    (p, management)
}

fn kill(p: &mut ServeProcess, cwd: &Path, data_dir: &str) {
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    // What the killed process left for its clients is not the next one's.
    let _ = std::fs::remove_file(cwd.join(data_dir).join("endpoints.json"));
}

/// On a shared store one node ships at a time (a lease). The shipping node dies with segments
/// it could not upload; the other takes over and cuts them again from the journal; the first
/// comes back with its old queue and, when its turn comes again, drops what the archive
/// already holds. The archive has every change, in one chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_shared_store_the_next_node_takes_over_the_archive_without_a_gap() {
    let s3 = s3_port();
    let pg = gatehouse_testkit::postgres::PostgresServer::start().unwrap();
    let store = pg.create_database("archived").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    new_key(cwd);
    let switch = Switch::start(s3).await;
    let folder = format!("backups/nodes-{}", stamp());
    let via_switch = format!("s3+http://127.0.0.1:{}/{folder}", switch.port);
    let direct = format!("s3+http://127.0.0.1:{s3}/{folder}");
    // a starts first and ships; b serves beside it.
    let (mut a, a_url) = shared_node(cwd, "a", &store, &via_switch);
    std::fs::create_dir_all(cwd.join("b")).unwrap();
    std::fs::copy(cwd.join("a/store.key"), cwd.join("b/store.key")).unwrap();
    let (mut b, b_url) = shared_node(cwd, "b", &store, &direct);
    let mut acks = write_for(&b_url, SHARED_TOKEN, Duration::from_secs(2), 0).await;
    let last = |acks: &[Ack]| acks.last().unwrap().revision;
    until_archived_at(&a_url, SHARED_TOKEN, last(&acks), Duration::from_secs(20)).await;

    // a loses its storage: it cuts into its queue and uploads nothing; then it dies.
    switch.set(false);
    acks.extend(write_for(&b_url, SHARED_TOKEN, Duration::from_secs(3), acks.len()).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = status_at(&a_url, SHARED_TOKEN).await;
    assert!(s["queuedFiles"].as_u64().unwrap() > 0, "{s}");
    kill(&mut a, cwd, "a");
    let stale = std::fs::read_dir(cwd.join("a/archive-queue"))
        .unwrap()
        .count();
    assert!(stale > 0);
    // b takes over once a's lease lapses, and ships what a had only queued.
    acks.extend(write_for(&b_url, SHARED_TOKEN, Duration::from_secs(2), acks.len()).await);
    let took = until_archived_at(&b_url, SHARED_TOKEN, last(&acks), Duration::from_secs(30)).await;
    println!(
        "b archived what a had queued ({stale} files) {:.1} s after a died",
        took.as_secs_f64()
    );

    // a comes back with its old queue while b ships; then b dies and it is a's turn.
    switch.set(true);
    let (mut a, a_url) = shared_node(cwd, "a", &store, &via_switch);
    acks.extend(write_for(&a_url, SHARED_TOKEN, Duration::from_secs(2), acks.len()).await);
    until_archived_at(&b_url, SHARED_TOKEN, last(&acks), Duration::from_secs(20)).await;
    // a, which does not ship now, reports the instance's archive as b ships it.
    let shipping = status_at(&b_url, SHARED_TOKEN).await["shippedBy"].clone();
    assert!(shipping.is_string(), "{shipping}");
    let started = Instant::now();
    loop {
        let s = status_at(&a_url, SHARED_TOKEN).await;
        if s["lastArchivedRevision"].as_u64().unwrap() >= last(&acks) {
            assert_eq!(s["shippedBy"], shipping, "{s}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    kill(&mut b, cwd, "b");
    acks.extend(write_for(&a_url, SHARED_TOKEN, Duration::from_secs(2), acks.len()).await);
    until_archived_at(&a_url, SHARED_TOKEN, last(&acks), Duration::from_secs(30)).await;
    assert_eq!(
        std::fs::read_dir(cwd.join("a/archive-queue"))
            .unwrap()
            .count(),
        0
    );
    kill(&mut a, cwd, "a");

    // One chain: each segment follows the one before it, none overlaps another (a node's old
    // queue was not uploaded over what the other node had archived).
    let archive = gatehouse_archiver::Archive {
        account: format!("s3+http://127.0.0.1:{s3}"),
        container: "backups".into(),
        folder: folder.trim_start_matches("backups/").into(),
        access: gatehouse_backup::storage::Access {
            key: Some(STORAGE_KEY.into()),
            region: None,
        },
    };
    let index = archive.index().await.unwrap();
    let mut segments = Vec::new();
    for day in &index.days {
        segments.extend(archive.day(day).await.unwrap().segments);
    }
    segments.sort_by_key(|s| s.range.first);
    for pair in segments.windows(2) {
        assert_eq!(
            pair[1].range.previous, pair[0].range.last,
            "{} does not follow {}",
            pair[1].name, pair[0].name
        );
    }
    let (ok, out, err) = restore(cwd, &direct, "restored", &["--latest"]);
    assert!(ok, "{out}{err}");
    let expected: BTreeSet<usize> = acks.iter().map(|a| a.tag).collect();
    assert_eq!(tags_in(&cwd.join("restored")), expected);
}
