//! `gatehouse backup` and `gatehouse restore` on a data directory (disaster recovery with the
//! server stopped), `backup inspect` and `backup list`. Progress on a terminal, and one line of
//! figures at the end.

use crate::{BackupAction, BackupArgs, RestoreArgs, Target};
use anyhow::{Context, Result, anyhow, bail};
use gatehouse_backup::{BackupKey, BackupOptions, Manifest, RestoreOptions, archive};
use gatehouse_store::Store;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A local archive location: a path or a `file://` URL.
fn local_path(url: &str) -> Result<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Ok(PathBuf::from(rest));
    }
    if url.contains("://") {
        bail!(
            "'{url}': only file paths and file:// URLs are supported by this build; object storage (az://, s3://, gs://) is not yet available"
        );
    }
    Ok(PathBuf::from(url))
}

fn load_key(file: Option<&Path>) -> Result<BackupKey> {
    match file {
        Some(f) => BackupKey::from_file(f).map_err(|e| anyhow!(e)),
        None => match std::env::var("GATEHOUSE_BACKUP_KEY") {
            Ok(k) if !k.trim().is_empty() => BackupKey::parse(&k).map_err(|e| anyhow!(e)),
            _ => bail!(
                "no backup key: pass --key-file FILE or set GATEHOUSE_BACKUP_KEY (create one with `gatehouse backup new-key`)"
            ),
        },
    }
}

fn data_dir(target: &Target) -> Result<PathBuf> {
    target
        .data_dir
        .clone()
        .ok_or_else(|| anyhow!("--data-dir is required: the data directory of the instance"))
}

/// Whether the instance of this data directory is running (its endpoints.json names a live pid).
fn running_pid(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("endpoints.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let pid = v.get("pid")?.as_u64()? as u32;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn bar(total_label: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} entities ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(total_label.to_string());
    Some(pb)
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub fn backup(target: &Target, args: &BackupArgs, json: bool) -> Result<()> {
    match &args.action {
        Some(BackupAction::NewKey) => {
            println!("{}", BackupKey::generate());
            return Ok(());
        }
        Some(BackupAction::Inspect { url, key_file }) => {
            return inspect(url, key_file.as_deref(), json);
        }
        Some(BackupAction::List { url }) => return list(url, json),
        None => {}
    }
    let dir = data_dir(target)?;
    let to = args
        .to
        .as_deref()
        .ok_or_else(|| anyhow!("--to is required: where the archive goes"))?;
    let dest = local_path(to)?;
    let key = load_key(args.key_file.as_deref())?;
    if !dir.join("gatehouse.db").exists() {
        bail!("{} holds no instance (no gatehouse.db)", dir.display());
    }
    let store = Store::open_dir(&dir)
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    // The archive appears under its final name only when complete.
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".gatehouse-backup-")
        .tempfile_in(parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    let started = Instant::now();
    let pb = bar("backup");
    let mut progress = |done: u64, total: u64| {
        if let Some(pb) = &pb {
            pb.set_length(total);
            pb.set_position(done);
        }
    };
    let opts = BackupOptions {
        expires_after: args
            .expires_after_days
            .map(|d| std::time::Duration::from_secs(d * 86400)),
    };
    let manifest = gatehouse_backup::backup_to_file(&store, tmp.path(), &key, &opts, &mut progress)
        .map_err(|e| anyhow!("BackupFailed: {e}"))?;
    tmp.persist(&dest)
        .with_context(|| format!("cannot move the archive to {}", dest.display()))?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let bytes = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
    if json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        println!(
            "backup of '{}' at revision {}: {} entities, {}, {:.2} s → {}",
            manifest.service_name,
            manifest.source_revision,
            manifest.entity_count,
            human_bytes(bytes),
            started.elapsed().as_secs_f64(),
            dest.display()
        );
    }
    Ok(())
}

pub fn restore(target: &Target, args: &RestoreArgs, json: bool) -> Result<()> {
    let dir = data_dir(target)?;
    let from = local_path(&args.from)?;
    let key = load_key(args.key_file.as_deref())?;
    if let Some(pid) = running_pid(&dir) {
        bail!(
            "the instance in {} is running (pid {pid}); stop it first, or restore through its management API",
            dir.display()
        );
    }
    if !dir.join("gatehouse.db").exists() {
        bail!(
            "{} holds no instance: start it once with `gatehouse serve --data-dir {}` to create it (with its own name, region and tier), then restore",
            dir.display(),
            dir.display()
        );
    }
    let store = Store::open_dir(&dir)
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    let opts = RestoreOptions {
        allow_tier_change: args.allow_tier_change,
    };
    let started = Instant::now();
    if args.dry_run {
        let plan = gatehouse_backup::verify(&store, &from, &key, &opts, true)
            .map_err(|e| anyhow!("RestoreFailed: {e}"))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            if plan.changes.is_empty() {
                println!("dry run: the archive matches the instance; nothing would change");
            }
            for (kind, d) in &plan.changes {
                println!(
                    "{kind:<16} +{} added  ~{} changed  -{} removed",
                    d.added.len(),
                    d.changed.len(),
                    d.removed.len()
                );
            }
        }
        return Ok(());
    }
    let pb = bar("restore");
    let mut progress = |done: u64, total: u64| {
        if let Some(pb) = &pb {
            pb.set_length(total);
            pb.set_position(done);
        }
    };
    let out = gatehouse_backup::restore_from_file(&store, &from, &key, &opts, &mut progress)
        .map_err(|e| anyhow!("RestoreFailed: {e}"))?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let bytes = std::fs::metadata(&from).map(|m| m.len()).unwrap_or(0);
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "restored '{}' (revision {}) into {}: {} entities, {}, {:.2} s; now at revision {}",
            out.manifest.service_name,
            out.manifest.source_revision,
            dir.display(),
            out.entities,
            human_bytes(bytes),
            started.elapsed().as_secs_f64(),
            out.revision
        );
    }
    Ok(())
}

fn print_manifest(m: &Manifest, verified: bool) {
    println!(
        "service:    {} ({}, {} × {})",
        m.service_name, m.region, m.sku.name, m.sku.capacity
    );
    println!("revision:   {}", m.source_revision);
    println!("created:    {}", m.created_at_utc);
    println!(
        "expires:    {}",
        m.expires_at_utc.as_deref().unwrap_or("never")
    );
    println!(
        "format:     v{} (Gatehouse {})",
        m.format_version, m.gatehouse_version
    );
    println!("entities:   {}", m.entity_count);
    println!(
        "verified:   {}",
        if verified {
            "yes (decrypted, every hash checked)"
        } else {
            "no (pass --key-file to verify)"
        }
    );
    for s in &m.sections {
        if s.count > 0 {
            println!(
                "  {:<18} {:>8}  sha256 {}",
                s.name,
                s.count,
                &s.sha256[..16]
            );
        }
    }
}

fn inspect(url: &str, key_file: Option<&Path>, json: bool) -> Result<()> {
    let path = local_path(url)?;
    let key = match key_file {
        Some(_) => Some(load_key(key_file)?),
        None => std::env::var("GATEHOUSE_BACKUP_KEY")
            .ok()
            .and_then(|k| BackupKey::parse(&k).ok()),
    };
    let (manifest, verified) = match key {
        Some(k) => {
            struct Ignore;
            impl archive::Visitor for Ignore {
                fn section(&mut self, _: &str) -> Result<(), archive::ArchiveError> {
                    Ok(())
                }
                fn line(&mut self, _: &[u8]) -> Result<(), archive::ArchiveError> {
                    Ok(())
                }
            }
            (
                archive::read_verified(&path, &k, &mut Ignore).map_err(|e| anyhow!("{e}"))?,
                true,
            )
        }
        None => (
            archive::read_plain_manifest(&path)
                .map_err(|e| anyhow!("{e}"))?
                .0,
            false,
        ),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"manifest": manifest, "verified": verified})
            )?
        );
    } else {
        print_manifest(&manifest, verified);
    }
    Ok(())
}

fn list(url: &str, json: bool) -> Result<()> {
    let dir = local_path(url)?;
    let mut found = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        if let Ok((m, _)) = archive::read_plain_manifest(&path) {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            found.push((path, m, bytes));
        }
    }
    found.sort_by(|a, b| a.1.created_at_utc.cmp(&b.1.created_at_utc));
    if json {
        let v: Vec<_> = found
            .iter()
            .map(|(p, m, b)| serde_json::json!({"name": p.file_name().map(|n| n.to_string_lossy()), "bytes": b, "manifest": m}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (p, m, b) in &found {
            println!(
                "{:<32} {}  {:<16} {:<12} {:<10} rev {:>6}  {:>8} entities  {}",
                p.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
                m.created_at_utc,
                m.service_name,
                m.region,
                m.sku.name,
                m.source_revision,
                m.entity_count,
                human_bytes(*b)
            );
        }
        println!("{} archive(s)", found.len());
    }
    Ok(())
}
