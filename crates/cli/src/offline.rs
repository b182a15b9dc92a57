//! `gatehouse backup` and `gatehouse restore`: through the management API when the instance
//! runs, on its data directory when it is stopped (disaster recovery); `backup inspect`,
//! `backup list`, `backup new-key`. Archives live in a local folder or in object storage
//! (`az://ACCOUNT/CONTAINER/NAME`, `s3://BUCKET/NAME`, `s3+http://HOST:PORT/BUCKET/NAME`,
//! `gs://BUCKET/NAME`; the storage key from `--access-key` or `GATEHOUSE_STORAGE_KEY`).
//! Progress on a terminal, and one line of figures at the end.

use crate::args::{BackupAction, BackupArgs, RestoreArgs, Target};
use anyhow::{Context, Result, anyhow, bail};
use gatehouse_backup::storage::{self, Location};
use gatehouse_backup::{BackupKey, BackupOptions, Manifest, RestoreOptions, RestorePlan, archive};
use gatehouse_client::Client;
use gatehouse_store::Store;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where an archive is.
enum ArchiveAt {
    Local(PathBuf),
    Remote {
        account: String,
        container: String,
        name: String,
        key: Option<String>,
    },
}

impl ArchiveAt {
    fn parse(url: &str, access_key: Option<&str>) -> Result<ArchiveAt> {
        let remote = ["az://", "s3://", "s3+http://", "s3+https://", "gs://"]
            .iter()
            .any(|p| url.starts_with(p));
        if !remote {
            if url.contains("://") && !url.starts_with("file://") {
                bail!(
                    "'{url}' is not an archive URL: use a file path, file://, az://, s3://, s3+http(s):// or gs://"
                );
            }
            return Ok(ArchiveAt::Local(PathBuf::from(
                url.strip_prefix("file://").unwrap_or(url),
            )));
        }
        let (account, container, name) =
            gatehouse_client::storage_url::split_url(url).map_err(|e| anyhow!("{e}"))?;
        let key = access_key
            .map(str::to_string)
            .or_else(|| crate::env::env_value("GATEHOUSE_STORAGE_KEY"));
        Ok(ArchiveAt::Remote {
            account,
            container,
            name,
            key,
        })
    }

    fn location(&self) -> Result<Location> {
        match self {
            ArchiveAt::Local(p) => {
                let (a, c, n) = gatehouse_client::storage_url::split_url(&p.to_string_lossy())
                    .map_err(|e| anyhow!("{e}"))?;
                Location::new(&a, &c, &n, &storage::Access::default()).map_err(|e| anyhow!("{e}"))
            }
            ArchiveAt::Remote {
                account,
                container,
                name,
                key,
            } => Location::new(account, container, name, &access(key.clone()))
                .map_err(|e| anyhow!("{e}")),
        }
    }

    /// APIM's storage parameters for the management API.
    fn api_params(&self) -> Result<serde_json::Value> {
        let (account, container, name, key) = match self {
            ArchiveAt::Local(p) => {
                let (a, c, n) = gatehouse_client::storage_url::split_url(&p.to_string_lossy())
                    .map_err(|e| anyhow!("{e}"))?;
                (a, c, n, None)
            }
            ArchiveAt::Remote {
                account,
                container,
                name,
                key,
            } => (
                account.clone(),
                container.clone(),
                name.clone(),
                key.clone(),
            ),
        };
        let mut v = serde_json::json!({"storageAccount": account, "containerName": container, "backupName": name});
        if let Some(k) = key {
            v["accessKey"] = serde_json::json!(k);
        }
        Ok(v)
    }

    fn describe(&self) -> String {
        match self {
            ArchiveAt::Local(p) => p.display().to_string(),
            ArchiveAt::Remote {
                account,
                container,
                name,
                ..
            } => format!("{account}/{container}/{name}"),
        }
    }
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
        None => match crate::env::env_value("GATEHOUSE_BACKUP_KEY") {
            Some(k) => k.trim().to_string(),
            None => bail!(
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
    if target.url.is_some() || gatehouse_store::DataDirLock::holder(&dir).is_some() {
        return Ok(Mode::Online(Client::locate(
            target.url.as_deref(),
            target.token.as_deref(),
            &dir,
            target.ca_file.as_deref(),
        )?));
    }
    Ok(Mode::Offline(dir))
}

fn bar(label: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(label.to_string());
    Some(pb)
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
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

/// The stopped instance's store, with its data directory locked for `purpose` so that no
/// `serve` starts on it meanwhile.
fn open_store(dir: &Path, purpose: &str) -> Result<(Store, gatehouse_store::DataDirLock)> {
    if !dir.join(gatehouse_model::files::DATABASE).exists() {
        bail!(
            "{} holds no instance: start it once with `gatehouse serve --data-dir {}` to create it (with its own name, region and tier)",
            dir.display(),
            dir.display()
        );
    }
    let lock = gatehouse_store::DataDirLock::acquire(dir, purpose)?;
    let store = Store::open_dir(dir)
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    Ok((store, lock))
}

/// The manifest of a stored archive (plain copy) and its size.
async fn stored_manifest(at: &ArchiveAt) -> Result<(Manifest, u64)> {
    match at {
        ArchiveAt::Local(p) => {
            let (m, _) = archive::read_plain_manifest(p).map_err(|e| anyhow!("{e}"))?;
            Ok((m, std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)))
        }
        remote => {
            let loc = remote.location()?;
            let m = loc.plain_manifest().await.map_err(|e| anyhow!("{e}"))?;
            Ok((m, 0))
        }
    }
}

fn print_backup_line(m: &Manifest, bytes: u64, secs: f64, at: &ArchiveAt) {
    let size = if bytes > 0 {
        format!(", {}", human_bytes(bytes))
    } else {
        String::new()
    };
    println!(
        "backup of '{}' at revision {}: {} entities{size}, {secs:.2} s → {}",
        m.service_name,
        m.source_revision,
        m.entity_count,
        at.describe()
    );
}

/// `backup new-key`: a new key into a new 0600 file, or on standard output.
fn new_key(out: Option<&Path>) -> Result<()> {
    let key = BackupKey::generate();
    let Some(path) = out else {
        if !std::io::stdout().is_terminal() {
            eprintln!(
                "note: a file made by redirecting this output is readable by others under the usual umask; `gatehouse backup new-key --out FILE` creates it readable only by you"
            );
        }
        println!("{key}");
        return Ok(());
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            anyhow!("{} exists: a key file is never overwritten", path.display())
        }
        _ => anyhow!("cannot create {}: {e}", path.display()),
    })?;
    std::io::Write::write_all(&mut file, format!("{key}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "wrote a new backup key to {} (readable only by you); keep it apart from the archives",
        path.display()
    );
    Ok(())
}

pub async fn backup(target: &Target, args: &BackupArgs, json: bool) -> Result<()> {
    match &args.action {
        Some(BackupAction::NewKey { out }) => return new_key(out.as_deref()),
        Some(BackupAction::Inspect { url, key_file }) => {
            return inspect(
                &ArchiveAt::parse(url, args.access_key.as_deref())?,
                key_file.as_deref(),
                json,
            )
            .await;
        }
        Some(BackupAction::List { url }) => {
            return list(url, args.access_key.as_deref(), json).await;
        }
        None => {}
    }
    let to = args
        .to
        .as_deref()
        .ok_or_else(|| anyhow!("--to is required: where the archive goes"))?;
    let at = ArchiveAt::parse(to, args.access_key.as_deref())?;
    let started = Instant::now();
    let dir = match mode(target)? {
        Mode::Online(client) => {
            let mut body = at.api_params()?;
            body["encryptionKey"] = serde_json::json!(load_key_text(args.key_file.as_deref())?);
            if let Some(d) = args.expires_after_days {
                body["expiresAfter"] = serde_json::json!(d);
            }
            if let Some(i) = &args.include {
                body["include"] = serde_json::json!(i);
            }
            run_online(&client, "backup", body, "backup")
                .await
                .map_err(|e| failed("BackupFailed", e))?;
            let (manifest, bytes) = stored_manifest(&at).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&manifest)?);
            } else {
                print_backup_line(&manifest, bytes, started.elapsed().as_secs_f64(), &at);
            }
            return Ok(());
        }
        Mode::Offline(dir) => dir,
    };
    let key = load_key(args.key_file.as_deref())?;
    let (store, _lock) = open_store(&dir, "gatehouse backup")?;
    let tmp = tempfile::Builder::new()
        .prefix(".gatehouse-backup-")
        .tempfile()
        .context("cannot create a temporary file")?;
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
        include: args.include.clone(),
    };
    let manifest = gatehouse_backup::backup_to_file(&store, tmp.path(), &key, &opts, &mut progress)
        .map_err(|e| failed("BackupFailed", e))?;
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    // The archive appears under its final name only when complete (multipart upload, or a
    // staged file renamed in the target folder).
    let bytes = at
        .location()?
        .upload(tmp.path())
        .await
        .map_err(|e| failed("BackupFailed", e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    } else {
        print_backup_line(&manifest, bytes, started.elapsed().as_secs_f64(), &at);
    }
    Ok(())
}

pub async fn restore(target: &Target, args: &RestoreArgs, json: bool) -> Result<()> {
    if let Some(point) = crate::archive::point_of(args)? {
        return match mode(target)? {
            Mode::Offline(dir) => crate::archive::restore_point(&dir, args, &point, json).await,
            Mode::Online(client) => {
                let archive = crate::archive::archive_at(&args.from, args.access_key.as_deref())?;
                let mut body = serde_json::json!({
                    "storageAccount": archive.account, "containerName": archive.container,
                    "backupName": archive.folder,
                    "encryptionKey": load_key_text(args.key_file.as_deref())?,
                    "dryRun": args.dry_run, "allowTierChange": true,
                });
                if let Some(k) = archive.access.key {
                    body["accessKey"] = serde_json::json!(k);
                }
                match point {
                    gatehouse_archiver::Point::Latest => body["latest"] = serde_json::json!(true),
                    gatehouse_archiver::Point::Revision(n) => {
                        body["revision"] = serde_json::json!(n)
                    }
                    gatehouse_archiver::Point::Time(_) => {
                        body["pointInTime"] = serde_json::json!(args.to_time)
                    }
                }
                let result = run_online(&client, "restore", body, "restore")
                    .await
                    .map_err(|e| failed("RestoreFailed", e))?;
                if json || args.dry_run {
                    println!("{}", serde_json::to_string_pretty(&result)?);
                } else {
                    println!(
                        "restored '{}' to {} of {}: now at revision {}",
                        result["name"].as_str().unwrap_or(""),
                        gatehouse_archiver::pitr::describe(&point),
                        args.from,
                        result["properties"]["revision"]
                    );
                }
                Ok(())
            }
        };
    }
    let at = ArchiveAt::parse(&args.from, args.access_key.as_deref())?;
    let started = Instant::now();
    let dir = match mode(target)? {
        Mode::Online(client) => {
            let mut body = at.api_params()?;
            body["encryptionKey"] = serde_json::json!(load_key_text(args.key_file.as_deref())?);
            body["dryRun"] = serde_json::json!(args.dry_run);
            body["allowTierChange"] = serde_json::json!(args.allow_tier_change);
            let result = run_online(&client, "restore", body, "restore")
                .await
                .map_err(|e| failed("RestoreFailed", e))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else if args.dry_run {
                let plan: RestorePlan = serde_json::from_value(result.clone())
                    .context("the dry run's answer is not a restore plan")?;
                crate::output::print_plan(&plan);
            } else {
                let (m, bytes) = stored_manifest(&at).await?;
                println!(
                    "restored '{}' (revision {}) into '{}': {} entities, {}, {:.2} s; now at revision {}",
                    m.service_name,
                    m.source_revision,
                    result["name"].as_str().unwrap_or(""),
                    m.entity_count,
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
    let (store, _lock) = open_store(&dir, "gatehouse restore")?;
    // A remote archive is downloaded first; nothing is restored before it is all verified.
    let downloaded;
    let from: PathBuf = match &at {
        ArchiveAt::Local(p) => p.clone(),
        remote => {
            downloaded = tempfile::Builder::new()
                .prefix(".gatehouse-restore-")
                .tempfile()?;
            remote
                .location()?
                .download(downloaded.path())
                .await
                .map_err(|e| failed("RestoreFailed", e))?;
            downloaded.path().to_path_buf()
        }
    };
    let opts = RestoreOptions {
        allow_tier_change: args.allow_tier_change,
        actor: None,
        ..Default::default()
    };
    if args.dry_run {
        let plan = gatehouse_backup::verify(&store, &from, &key, &opts, true)
            .map_err(|e| failed("RestoreFailed", e))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            crate::output::print_plan(&plan);
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
        .map_err(|e| failed("RestoreFailed", e))?;
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

async fn inspect(at: &ArchiveAt, key_file: Option<&Path>, json: bool) -> Result<()> {
    let key = match key_file {
        Some(_) => Some(load_key(key_file)?),
        None => {
            crate::env::env_value("GATEHOUSE_BACKUP_KEY").and_then(|k| BackupKey::parse(&k).ok())
        }
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
            let downloaded;
            let path = match at {
                ArchiveAt::Local(p) => p.clone(),
                remote => {
                    downloaded = tempfile::Builder::new()
                        .prefix(".gatehouse-inspect-")
                        .tempfile()?;
                    remote
                        .location()?
                        .download(downloaded.path())
                        .await
                        .map_err(|e| anyhow!("{e}"))?;
                    downloaded.path().to_path_buf()
                }
            };
            (
                archive::read_verified(&path, &k, &mut Ignore).map_err(|e| anyhow!("{e}"))?,
                true,
            )
        }
        None => (stored_manifest(at).await?.0, false),
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

/// An error of a backup or restore, said once: an error the API answered already names its
/// code (`RestoreFailed: …`); any other gets `code` in front.
fn failed(code: &str, e: impl Into<anyhow::Error>) -> anyhow::Error {
    let e = e.into();
    if e.downcast_ref::<gatehouse_client::ApiFailure>().is_some() {
        return e;
    }
    anyhow!("{code}: {e:#}")
}

/// What a restore would change, per type, in one line each (the same whether the instance
/// runs or not).
/// How to reach object storage: the key, and the S3 region from `AWS_REGION`.
fn access(key: Option<String>) -> storage::Access {
    storage::Access {
        key,
        region: crate::env::env_value("AWS_REGION"),
    }
}

async fn list(url: &str, access_key: Option<&str>, json: bool) -> Result<()> {
    if crate::archive::list_continuous(url, access_key, json).await? {
        return Ok(());
    }
    let mut found: Vec<(String, Manifest, u64)> = Vec::new();
    let remote = ["az://", "s3://", "s3+http://", "s3+https://", "gs://"]
        .iter()
        .any(|p| url.starts_with(p));
    if remote {
        let with_name = format!("{}/x", url.trim_end_matches('/'));
        let (account, container, _) =
            gatehouse_client::storage_url::split_url(&with_name).map_err(|e| anyhow!("{e}"))?;
        let key = access_key
            .map(str::to_string)
            .or_else(|| crate::env::env_value("GATEHOUSE_STORAGE_KEY"));
        let access = access(key);
        for (name, size) in storage::list(&account, &container, &access)
            .await
            .map_err(|e| anyhow!("{e}"))?
        {
            if name.contains('/') {
                continue; // in a folder: a continuous archive's, or someone else's
            }
            let loc =
                Location::new(&account, &container, &name, &access).map_err(|e| anyhow!("{e}"))?;
            if let Ok(m) = loc.plain_manifest().await {
                found.push((name, m, size));
            }
        }
    } else {
        let dir = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let path = entry?.path();
            if !path.is_file() {
                continue;
            }
            if let Ok((m, _)) = archive::read_plain_manifest(&path) {
                let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                found.push((name, m, bytes));
            }
        }
    }
    found.sort_by(|a, b| a.1.created_at_utc.cmp(&b.1.created_at_utc));
    if json {
        let v: Vec<_> = found
            .iter()
            .map(|(n, m, b)| serde_json::json!({"name": n, "bytes": b, "manifest": m}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (n, m, b) in &found {
            println!(
                "{:<32} {}  {:<16} {:<12} {:<10} rev {:>6}  {:>8} entities  {}",
                n,
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
