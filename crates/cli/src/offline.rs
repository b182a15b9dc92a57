//! `gatehouse backup` and `gatehouse restore` on a data directory (disaster recovery with the
//! server stopped), `backup inspect` and `backup list`. Progress on a terminal, and one line of
//! figures at the end.

use crate::client::Client;
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

/// The key as text (for the API), checked.
fn load_key_text(file: Option<&Path>) -> Result<String> {
    let text = match file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the key file {}", f.display()))?;
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .ok_or_else(|| anyhow!("the key file {} is empty", f.display()))?
                .to_string()
        }
        None => match std::env::var("GATEHOUSE_BACKUP_KEY") {
            Ok(k) if !k.trim().is_empty() => k.trim().to_string(),
            _ => bail!(
                "no backup key: pass --key-file FILE or set GATEHOUSE_BACKUP_KEY (create one with `gatehouse backup new-key`)"
            ),
        },
    };
    BackupKey::parse(&text).map_err(|e| anyhow!(e))?;
    Ok(text)
}

fn load_key(file: Option<&Path>) -> Result<BackupKey> {
    BackupKey::parse(&load_key_text(file)?).map_err(|e| anyhow!(e))
}

/// Where a backup or restore runs: through a running instance's API, or on a stopped
/// instance's data directory.
enum Mode {
    Online(Client),
    Offline(PathBuf),
}

fn mode(target: &Target) -> Result<Mode> {
    let dir = target
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./gatehouse-data"));
    if target.url.is_some() || running_pid(&dir).is_some() {
        return Ok(Mode::Online(Client::locate(
            target.url.as_deref(),
            target.token.as_deref(),
            &dir,
        )?));
    }
    Ok(Mode::Offline(dir))
}

/// The API's storage parameters for a local archive path (the server writes or reads it).
fn storage_params(path: &Path) -> Result<serde_json::Value> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let name = abs
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("'{}' has no file name", abs.display()))?;
    let container_dir = abs
        .parent()
        .ok_or_else(|| anyhow!("'{}' has no folder", abs.display()))?;
    let container = container_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("'{}' must be inside a folder", abs.display()))?;
    let account = container_dir
        .parent()
        .ok_or_else(|| anyhow!("'{}' must be inside a folder", abs.display()))?;
    Ok(serde_json::json!({
        "storageAccount": format!("file://{}", account.display()),
        "containerName": container,
        "backupName": name,
    }))
}

async fn run_online(
    client: &Client,
    action: &str,
    body: serde_json::Value,
    label: &str,
) -> Result<serde_json::Value> {
    let location = client.start_operation(&format!("/{action}"), &body).await?;
    let pb = bar(label);
    if let Some(pb) = &pb {
        pb.set_length(100);
    }
    let result = client
        .wait_operation(&location, |pct| {
            if let Some(pb) = &pb {
                pb.set_position(pct);
            }
        })
        .await;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    result
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

pub async fn backup(target: &Target, args: &BackupArgs, json: bool) -> Result<()> {
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
    let to = args
        .to
        .as_deref()
        .ok_or_else(|| anyhow!("--to is required: where the archive goes"))?;
    let dest = local_path(to)?;
    let dir = match mode(target)? {
        Mode::Online(client) => {
            let mut body = storage_params(&dest)?;
            body["encryptionKey"] = serde_json::json!(load_key_text(args.key_file.as_deref())?);
            if let Some(d) = args.expires_after_days {
                body["expiresAfter"] = serde_json::json!(d);
            }
            let started = Instant::now();
            run_online(&client, "backup", body, "backup")
                .await
                .map_err(|e| anyhow!("BackupFailed: {e}"))?;
            let (manifest, _) = archive::read_plain_manifest(&dest).map_err(|e| anyhow!("{e}"))?;
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
            return Ok(());
        }
        Mode::Offline(dir) => dir,
    };
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

pub async fn restore(target: &Target, args: &RestoreArgs, json: bool) -> Result<()> {
    let from = local_path(&args.from)?;
    let dir = match mode(target)? {
        Mode::Online(client) => {
            let mut body = storage_params(&from)?;
            body["encryptionKey"] = serde_json::json!(load_key_text(args.key_file.as_deref())?);
            body["dryRun"] = serde_json::json!(args.dry_run);
            body["allowTierChange"] = serde_json::json!(args.allow_tier_change);
            let started = Instant::now();
            let result = run_online(&client, "restore", body, "restore")
                .await
                .map_err(|e| anyhow!("RestoreFailed: {e}"))?;
            if json || args.dry_run {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                let (manifest, _) =
                    archive::read_plain_manifest(&from).map_err(|e| anyhow!("{e}"))?;
                let bytes = std::fs::metadata(&from).map(|m| m.len()).unwrap_or(0);
                println!(
                    "restored '{}' (revision {}) into '{}': {} entities, {}, {:.2} s; now at revision {}",
                    manifest.service_name,
                    manifest.source_revision,
                    result["name"].as_str().unwrap_or(""),
                    manifest.entity_count,
                    human_bytes(bytes),
                    started.elapsed().as_secs_f64(),
                    result["properties"]["revision"]
                );
            }
            return Ok(());
        }
        Mode::Offline(dir) => dir,
    };
    let key = load_key(args.key_file.as_deref())?;
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
