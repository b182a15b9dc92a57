//! Continuous archives on the command line: `serve --archive …` settings, and
//! `restore --from CONTAINER --latest | --to-revision N | --to-time T` into a data directory.

use crate::args::{RestoreArgs, ServeArgs};
use anyhow::{Context, Result, anyhow, bail};
use gatehouse_archiver::{Archive, Point};
use gatehouse_backup::{BackupKey, RestoreOptions, storage};
use gatehouse_model::{ServiceSettings, Sku};
use gatehouse_server::ArchiveSettings;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A container URL as `--archive` and `restore --from` take it.
pub fn archive_at(url: &str, access_key: Option<&str>) -> Result<Archive> {
    let (account, container, folder) =
        gatehouse_client::storage_url::split_url(url.trim_end_matches('/'))
            .map_err(|e| anyhow!("{e}"))?;
    Ok(Archive {
        account,
        container,
        folder,
        access: storage::Access {
            key: access_key
                .map(str::to_string)
                .or_else(|| crate::env::env_value("GATEHOUSE_STORAGE_KEY")),
            region: crate::env::env_value("AWS_REGION"),
        },
    })
}

/// The archive key: an age key (a passphrase would cost a second of key derivation for every
/// segment written and read).
fn archive_key(file: &Path) -> Result<BackupKey> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the archive key file {}", file.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    match BackupKey::parse(line).map_err(|e| anyhow!("{}: {e}", file.display()))? {
        BackupKey::Passphrase(_) => bail!(
            "{}: a continuous archive needs an age key (make one with `gatehouse backup new-key`): a passphrase costs a second of key derivation for every segment",
            file.display()
        ),
        key => Ok(key),
    }
}

/// `6h`, `1d`, `30m`, `90s`.
fn duration(text: &str, flag: &str) -> Result<Duration> {
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: u64 =
        number.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            anyhow!("{flag} must be a duration such as 6h, 1d or 30m, not '{text}'")
        })?;
    Ok(Duration::from_secs(match unit {
        "d" => n * 86_400,
        "h" => n * 3_600,
        "m" => n * 60,
        "s" => n,
        _ => bail!("{flag} must end in d, h, m or s: '{text}'"),
    }))
}

/// `serve`'s continuous archiving, if `--archive` is given.
pub fn serve_settings(args: &ServeArgs) -> Result<Option<ArchiveSettings>> {
    let Some(url) = &args.archive else {
        if args.archive_key_file.is_some() {
            bail!("--archive-key-file is given without --archive (where the archive goes)");
        }
        return Ok(None);
    };
    let key_file = args.archive_key_file.as_deref().ok_or_else(|| {
        anyhow!("--archive needs --archive-key-file (an age key: gatehouse backup new-key)")
    })?;
    let seconds = args.archive_segment_seconds.unwrap_or(1.0);
    if !(0.05..=3600.0).contains(&seconds) {
        bail!("--archive-segment-seconds must be from 0.05 to 3600, not {seconds}");
    }
    Ok(Some(ArchiveSettings {
        archive: archive_at(url, None)?,
        key: Arc::new(archive_key(key_file)?),
        segment_after: Duration::from_secs_f64(seconds),
        base_every: args
            .archive_every
            .as_deref()
            .map(|t| duration(t, "--archive-every"))
            .transpose()?,
    }))
}

/// The point `restore` was asked for, if it restores from a continuous archive.
pub fn point_of(args: &RestoreArgs) -> Result<Option<Point>> {
    if args.latest {
        return Ok(Some(Point::Latest));
    }
    if let Some(n) = args.to_revision {
        return Ok(Some(Point::Revision(n)));
    }
    if let Some(t) = &args.to_time {
        let at = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
                anyhow!(
                    "--to-time must be an RFC 3339 time such as 2026-12-01T10:00:00Z, not '{t}'"
                )
            })?;
        return Ok(Some(Point::Time(at)));
    }
    if args.allow_gap {
        bail!("--allow-gap goes with --latest, --to-revision or --to-time");
    }
    Ok(None)
}

/// Restores a point of a continuous archive into the data directory `dir` (a stopped
/// instance's, or a new one, which then holds a complete instance `serve` starts).
pub async fn restore_point(
    dir: &Path,
    args: &RestoreArgs,
    point: &Point,
    json: bool,
) -> Result<()> {
    let started = Instant::now();
    let archive = archive_at(&args.from, args.access_key.as_deref())?;
    let key_file = args
        .key_file
        .as_deref()
        .ok_or_else(|| anyhow!("--key-file is required: the archive's age key"))?;
    let key = archive_key(key_file)?;
    let work = tempfile::Builder::new()
        .prefix(".gatehouse-pitr-")
        .tempdir()?;
    let fetched =
        gatehouse_archiver::fetch_point(&archive, &key, point, args.allow_gap, work.path())
            .await
            .map_err(|e| anyhow!("RestoreFailed: {e}"))?;
    let (manifest, _) = gatehouse_backup::archive::read_plain_manifest(&fetched.base_file)
        .map_err(|e| anyhow!("RestoreFailed: {}: {e}", fetched.base.name))?;
    let new = !dir.join(gatehouse_model::files::DATABASE).exists();
    std::fs::create_dir_all(dir)?;
    let _lock = gatehouse_store::DataDirLock::acquire(dir, "gatehouse restore")?;
    let store = gatehouse_store::Store::open_dir(dir)
        .with_context(|| format!("cannot open the store in {}", dir.display()))?;
    if new {
        // A new instance takes the archive's name, region and tier.
        store.write(|w| {
            w.set_service(&ServiceSettings {
                name: manifest.service_name.clone(),
                location: manifest.region.clone(),
                sku: Sku {
                    ..manifest.sku.clone()
                },
                publisher_email: "admin@example.com".into(),
                publisher_name: manifest.service_name.clone(),
                notification_sender_email: None,
                created_at_utc: manifest.created_at_utc.clone(),
                hostname_configurations: Vec::new(),
            })
        })?;
    }
    let opts = RestoreOptions {
        allow_tier_change: true,
        actor: None,
        replay: fetched.replay,
    };
    if args.dry_run {
        let plan = gatehouse_backup::verify(&store, &fetched.base_file, &key, &opts, true)
            .map_err(|e| anyhow!("RestoreFailed: {e}"))?;
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(());
    }
    let out = gatehouse_backup::restore_from_file(
        &store,
        &fetched.base_file,
        &key,
        &opts,
        &mut |_, _| {},
    )
    .map_err(|e| anyhow!("RestoreFailed: {e}"))?;
    if json {
        println!(
            "{}",
            serde_json::json!({"pointRevision": fetched.revision, "pointAt": fetched.at,
                "base": fetched.base.name, "segments": fetched.segments,
                "entities": out.entities, "revision": out.revision})
        );
    } else {
        println!(
            "restored '{}' at revision {} ({}) into {}: base {} + {} segment(s), {} change(s) replayed, {:.2} s; now at revision {}",
            manifest.service_name,
            fetched.revision,
            fetched.at,
            dir.display(),
            fetched.base.revision,
            fetched.segments,
            opts.replay.len(),
            started.elapsed().as_secs_f64(),
            out.revision
        );
    }
    Ok(())
}
