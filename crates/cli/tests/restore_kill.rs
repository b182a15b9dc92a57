//! A restore killed with SIGKILL at any moment leaves the target as it was or fully restored.

use gatehouse_model::{Kind, ResourcePath, ServiceSettings, Sku};
use gatehouse_store::{Store, StoreError};
use serde_json::{Map, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const N: usize = 20_000;

fn settings(name: &str) -> ServiceSettings {
    ServiceSettings {
        name: name.into(),
        location: "westeurope".into(),
        sku: Sku {
            name: "Developer".into(),
            capacity: 1,
        },
        publisher_email: "a@b.c".into(),
        publisher_name: "p".into(),
        notification_sender_email: None,
        created_at_utc: "2026-01-01T00:00:00Z".into(),
        hostname_configurations: Vec::new(),
    }
}

/// Runs a restore to its end and fails the test if it fails.
fn restore_into(cwd: &std::path::Path, data_dir: &str, archive: &std::path::Path) {
    let out = restore_command(cwd, data_dir, archive).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn restore_command(cwd: &std::path::Path, data_dir: &str, archive: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd).args([
        "--data-dir",
        data_dir,
        "restore",
        "--from",
        archive.to_str().unwrap(),
        "--key-file",
        "k",
    ]);
    c
}

/// (has the marker of the old state, number of restored subscriptions)
fn state_of(dir: &std::path::Path) -> (bool, usize) {
    let store = Store::open_dir(dir).unwrap();
    let snap = store.snapshot().unwrap();
    let marker = snap
        .resources
        .iter()
        .any(|r| r.path == "/tags/before-restore");
    (marker, snap.of_kind(Kind::Subscription).count())
}

#[test]
fn a_restore_killed_at_any_moment_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let store = Store::open_dir(&src).unwrap();
    store
        .write(|w| -> Result<(), StoreError> {
            w.set_service(&settings("source"))?;
            for i in 0..N {
                let mut p = Map::new();
                p.insert("scope".into(), json!("/apis"));
                p.insert("displayName".into(), json!(format!("S{i}")));
                p.insert("state".into(), json!("active"));
                p.insert("primaryKey".into(), json!(format!("{i:032x}")));
                w.put(
                    &ResourcePath::top(Kind::Subscription, &format!("s{i:06}")),
                    p,
                    &[],
                )?;
            }
            Ok(())
        })
        .unwrap();
    drop(store);
    let key = gatehouse_backup::BackupKey::generate();
    std::fs::write(dir.path().join("k"), &key).unwrap();
    let archive = dir.path().join("a.ghbk");
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "--data-dir",
            "src",
            "backup",
            "--to",
            archive.to_str().unwrap(),
            "--key-file",
            "k",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dst = dir.path().join("dst");
    {
        let store = Store::open_dir(&dst).unwrap();
        store
            .write(|w| -> Result<(), StoreError> {
                w.set_service(&settings("target"))?;
                let mut p = Map::new();
                p.insert("displayName".into(), json!("Marker"));
                w.put(&ResourcePath::top(Kind::Tag, "before-restore"), p, &[])?;
                Ok(())
            })
            .unwrap();
    }
    // How long an uninterrupted restore takes, to spread the kills over it.
    let copy = dir.path().join("dst-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["gatehouse.db", "gatehouse.db-wal", "store.key"] {
        if dst.join(f).exists() {
            std::fs::copy(dst.join(f), copy.join(f)).unwrap();
        }
    }
    let started = Instant::now();
    restore_into(dir.path(), "dst-copy", &archive);
    let full = started.elapsed();
    assert_eq!(state_of(&copy), (false, N));

    let mut outcomes = (0, 0);
    for step in 1..=8u32 {
        let delay = full * step / 9;
        let mut child = restore_command(dir.path(), "dst", &archive)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        match state_of(&dst) {
            (true, 0) => outcomes.0 += 1,
            (false, n) if n == N => {
                outcomes.1 += 1;
                assert!(status.code() == Some(0) || status.code().is_none());
                break;
            }
            other => panic!("killed after {delay:?}: a half-restored target {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Interrupted or not, a final restore completes.
    restore_into(dir.path(), "dst", &archive);
    assert_eq!(state_of(&dst), (false, N));
    assert!(
        outcomes.0 > 0,
        "no kill landed before the commit ({outcomes:?}); the test proved nothing"
    );
}
