//! Backup benchmark: an instance of about 120,000 entities (1,000 APIs × 10 operations,
//! 10,000 users, 100,000 subscriptions), side by side in one run: backup time, restore time,
//! archive size and peak memory (each in its own process), and the physical floor — copying
//! the SQLite file with its online backup API and compressing it with zstd.
//!
//! Run: `cargo bench -p gatehouse-testkit --bench backup` (`-- --quick` for a tenth of it).

use gatehouse_backup::{BackupKey, BackupOptions, RestoreOptions};
use gatehouse_store::{Store, StoreError};
use std::path::Path;
use std::time::Instant;

#[path = "common/large.rs"]
mod large;
use large::{populate, settings};

fn peak_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn child(args: &[String]) {
    let mode = args[0].as_str();
    let key = BackupKey::parse(&args[3]).unwrap();
    let started = Instant::now();
    match mode {
        "backup" => {
            let store = Store::open_dir(Path::new(&args[1])).unwrap();
            let m = gatehouse_backup::backup_to_file(
                &store,
                Path::new(&args[2]),
                &key,
                &BackupOptions::default(),
                &mut |_, _| {},
            )
            .unwrap();
            println!(
                "{} {} {}",
                started.elapsed().as_secs_f64(),
                peak_mb(),
                m.entity_count
            );
        }
        _ => {
            let store = Store::open_dir(Path::new(&args[1])).unwrap();
            let out = gatehouse_backup::restore_from_file(
                &store,
                Path::new(&args[2]),
                &key,
                &RestoreOptions::default(),
                &mut |_, _| {},
            )
            .unwrap();
            println!(
                "{} {} {}",
                started.elapsed().as_secs_f64(),
                peak_mb(),
                out.entities
            );
        }
    }
}

fn run_child(mode: &str, data: &Path, archive: &Path, key: &str) -> (f64, f64, u64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--child",
            mode,
            data.to_str().unwrap(),
            archive.to_str().unwrap(),
            key,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let v: Vec<&str> = text.split_whitespace().collect();
    (
        v[0].parse().unwrap(),
        v[1].parse().unwrap(),
        v[2].parse().unwrap(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1..]);
        return;
    }
    let scale = if args.iter().any(|a| a == "--quick") {
        10
    } else {
        1
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let t = Instant::now();
    populate(&src, scale);
    let populate_s = t.elapsed().as_secs_f64();
    let key = BackupKey::generate();
    let archive = dir.path().join("instance.ghbk");
    let (backup_s, backup_mb, entities) = run_child("backup", &src, &archive, &key);
    let size = std::fs::metadata(&archive).unwrap().len();
    let dst = dir.path().join("dst");
    {
        let store = Store::open_dir(&dst).unwrap();
        store
            .write(|w| -> Result<(), StoreError> { w.set_service(&settings("target")) })
            .unwrap();
    }
    let (restore_s, restore_mb, restored) = run_child("restore", &dst, &archive, &key);
    assert_eq!(entities, restored);
    // The floor: SQLite's online backup of the file, then zstd (level 3) of the copy.
    let store = Store::open_dir(&src).unwrap();
    let copy = dir.path().join("copy.db");
    let t = Instant::now();
    store.copy_database_to(&copy).unwrap();
    let copy_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let raw = std::fs::read(&copy).unwrap();
    let compressed = zstd::encode_all(raw.as_slice(), 3).unwrap();
    let zstd_s = t.elapsed().as_secs_f64();
    println!("instance: {entities} entities (populated in {populate_s:.1} s)");
    println!(
        "{:<34} {:>10} {:>14} {:>12}",
        "", "seconds", "peak memory", "bytes"
    );
    println!(
        "{:<34} {:>10.2} {:>11.0} MB {:>12}",
        "gatehouse backup (encrypted)", backup_s, backup_mb, size
    );
    println!(
        "{:<34} {:>10.2} {:>11.0} MB {:>12}",
        "gatehouse restore (verify + apply)", restore_s, restore_mb, size
    );
    println!(
        "{:<34} {:>10.2} {:>14} {:>12}",
        "floor: SQLite online backup + zstd",
        copy_s + zstd_s,
        "-",
        compressed.len()
    );
    println!(
        "targets: backup < 5 s, restore < 10 s, peak memory < 500 MB; database {} bytes",
        raw.len()
    );
}
