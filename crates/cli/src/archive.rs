//! Continuous archives on the command line: `serve --archive …` settings, and
//! `restore --from CONTAINER --latest | --to-revision N | --to-time T` into a data directory.

use crate::args::{RestoreArgs, ServeArgs};
use anyhow::{Context, Result, anyhow, bail};
use gatehouse_archiver::{Archive, BaseSchedule, Point};
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

/// `--archive-every`: an interval (`6h`) or a cron expression (`0 */6 * * *`, `@daily`).
fn base_schedule(text: &str) -> Result<BaseSchedule> {
    let looks_like_interval =
        text.len() > 1 && text[..text.len() - 1].bytes().all(|b| b.is_ascii_digit());
    if looks_like_interval {
        return Ok(BaseSchedule::Every(duration(text, "--archive-every")?));
    }
    BaseSchedule::cron(text).map_err(|e| {
        anyhow!("--archive-every takes an interval (6h, 1d, 30m) or a cron expression in UTC (0 */6 * * *, @daily): {e}")
    })
}

/// `serve`'s continuous archiving, if `--archive` is given.
pub fn serve_settings(args: &ServeArgs) -> Result<Option<ArchiveSettings>> {
    let Some(url) = &args.archive else {
        let keeps = [
            args.keep_last,
            args.keep_hourly,
            args.keep_daily,
            args.keep_weekly,
        ];
        if args.archive_key_file.is_some() || keeps.iter().any(Option::is_some) {
            bail!("--archive-key-file and --keep-* go with --archive (where the archive goes)");
        }
        return Ok(None);
    };
    let key_file = args.archive_key_file.as_deref().ok_or_else(|| {
        anyhow!("--archive needs --archive-key-file (an age key: gatehouse backup new-key)")
    })?;
    if [
        args.keep_last,
        args.keep_hourly,
        args.keep_daily,
        args.keep_weekly,
    ]
    .contains(&Some(0))
    {
        bail!("--keep-last, --keep-hourly, --keep-daily and --keep-weekly count bases: at least 1");
    }
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
            .map(base_schedule)
            .transpose()?,
        keep: gatehouse_archiver::retention::Keep {
            last: args.keep_last,
            hourly: args.keep_hourly,
            daily: args.keep_daily,
            weekly: args.keep_weekly,
        },
    }))
}

/// `backup list URL` for a continuous archive (a folder with an `index.json`): the bases and
/// the restorable range. `false` when `url` holds no continuous archive.
pub async fn list_continuous(url: &str, access_key: Option<&str>, json: bool) -> Result<bool> {
    let local = !url.contains("://") || url.starts_with("file://");
    let folder = Path::new(url.strip_prefix("file://").unwrap_or(url));
    if local && !folder.join(gatehouse_archiver::layout::INDEX).is_file() {
        return Ok(false); // (opening a local container would make its folder)
    }
    let Ok(archive) = archive_at(url, access_key) else {
        return Ok(false);
    };
    let index = match archive.index().await {
        Ok(i) if !i.bases.is_empty() => i,
        _ => return Ok(false),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&index)?);
        return Ok(true);
    }
    for b in &index.bases {
        println!(
            "base {:<28} {}  rev {:>8}  {:>10} bytes",
            b.name, b.at, b.revision, b.bytes
        );
    }
    let oldest = &index.bases[0];
    println!(
        "restorable from revision {} ({}) to revision {} ({}): {} base(s), segments on {} day(s)",
        oldest.revision,
        oldest.at,
        index.last_revision,
        index.last_at.as_deref().unwrap_or("-"),
        index.bases.len(),
        index.days.len()
    );
    Ok(true)
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

/// What a point-in-time restore did.
pub struct Restored {
    pub service: String,
    pub point: gatehouse_archiver::PointInTime,
    pub replayed: usize,
    pub revision: u64,
    pub entities: u64,
}

/// Fetches `point` and applies it to the data directory `dir` (a stopped instance's, or a new
/// one, which then holds a complete instance `serve` starts). With `dry_run`, prints the plan.
async fn restore_into(
    dir: &Path,
    archive: &Archive,
    key: &BackupKey,
    point: &Point,
    allow_gap: bool,
    dry_run: bool,
    json: bool,
) -> Result<Option<Restored>> {
    let work = tempfile::Builder::new()
        .prefix(".gatehouse-pitr-")
        .tempdir()?;
    let fetched = gatehouse_archiver::fetch_point(archive, key, point, allow_gap, work.path())
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
    let replayed = fetched.replay.len();
    let opts = RestoreOptions {
        allow_tier_change: true,
        actor: None,
        replay: fetched.replay.clone(),
    };
    if dry_run {
        let plan = gatehouse_backup::verify(&store, &fetched.base_file, key, &opts, true)
            .map_err(|e| anyhow!("RestoreFailed: {e}"))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            println!(
                "dry run: revision {} ({}) = base {} + {} change(s) in {} segment(s); against this instance:",
                fetched.revision, fetched.at, fetched.base.name, replayed, fetched.segments
            );
            crate::output::print_plan(&plan);
        }
        return Ok(None);
    }
    let out =
        gatehouse_backup::restore_from_file(&store, &fetched.base_file, key, &opts, &mut |_, _| {})
            .map_err(|e| anyhow!("RestoreFailed: {e}"))?;
    Ok(Some(Restored {
        service: manifest.service_name,
        point: fetched,
        replayed,
        revision: out.revision,
        entities: out.entities,
    }))
}

/// Restores a point of a continuous archive into the data directory `dir`.
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
    let Some(r) = restore_into(
        dir,
        &archive,
        &key,
        point,
        args.allow_gap,
        args.dry_run,
        json,
    )
    .await?
    else {
        return Ok(());
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"pointRevision": r.point.revision, "pointAt": r.point.at,
                "base": r.point.base.name, "segments": r.point.segments,
                "entities": r.entities, "revision": r.revision})
        );
    } else {
        println!(
            "restored '{}' at revision {} ({}) into {}: base {} + {} segment(s), {} change(s) replayed, {:.2} s; now at revision {}",
            r.service,
            r.point.revision,
            r.point.at,
            dir.display(),
            r.point.base.revision,
            r.point.segments,
            r.replayed,
            started.elapsed().as_secs_f64(),
            r.revision
        );
    }
    Ok(())
}

/// `gatehouse drill`: the latest point restored into a temporary instance that is started and
/// probed; RPO (age of the last archived change) and RTO (time to a serving instance) printed,
/// and checked against the limits given.
pub async fn drill(
    args: &crate::args::DrillArgs,
    live: Option<gatehouse_client::Client>,
    json: bool,
) -> Result<()> {
    let started = Instant::now();
    let archive = archive_at(&args.from, args.access_key.as_deref())?;
    let key = archive_key(&args.key_file)?;
    let index = archive.index().await.map_err(|e| anyhow!("{e}"))?;
    let last_at = index
        .last_at
        .as_deref()
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .ok_or_else(|| anyhow!("the continuous archive at {} holds nothing yet", args.from))?;
    let rpo = (time::OffsetDateTime::now_utc() - last_at)
        .as_seconds_f64()
        .max(0.0);
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-drill-")
        .tempdir()?;
    let restored = restore_into(
        dir.path(),
        &archive,
        &key,
        &Point::Latest,
        false,
        false,
        false,
    )
    .await?
    .ok_or_else(|| anyhow!("the drill restored nothing"))?;
    let mut config = gatehouse_server::ServeConfig::ephemeral(dir.path());
    config.portal_listen = None;
    let instance = gatehouse_server::Instance::start(config).await?;
    let (smoke, answered) = smoke(&instance).await;
    let rto = started.elapsed().as_secs_f64();
    let restored_client = gatehouse_client::Client::new(&instance.management_url, &instance.token)?;
    let digest = restored_client.digest(&[]).await.ok();
    instance.shutdown().await?;
    let revision = digest.as_ref().map(|d| d.revision);
    let mut problems = Vec::new();
    let compared = match (&live, &digest) {
        (Some(live), Some(digest)) => {
            compare_with_live(live, restored.point.revision, digest, &mut problems).await?
        }
        _ => "not compared with a live instance (give --url and --token)".to_string(),
    };
    if answered < smoke {
        problems.push(format!(
            "{} of {smoke} smoke requests got no answer from the restored gateway",
            smoke - answered
        ));
    }
    if revision != Some(restored.revision) {
        problems.push(format!(
            "the restored instance reports revision {revision:?}, not {}",
            restored.revision
        ));
    }
    if let Some(max) = args.max_rpo_seconds.filter(|m| rpo > *m) {
        problems.push(format!("RPO {rpo:.1} s exceeds --max-rpo-seconds {max}"));
    }
    if let Some(max) = args.max_rto_seconds.filter(|m| rto > *m) {
        problems.push(format!("RTO {rto:.1} s exceeds --max-rto-seconds {max}"));
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"revision": restored.point.revision, "at": restored.point.at,
            "entities": restored.entities, "replayed": restored.replayed, "rpoSeconds": rpo,
            "rtoSeconds": rto, "smokeRequests": smoke, "answered": answered,
            "digest": digest.as_ref().map(|d| serde_json::json!({"revision": d.revision, "total": d.total})),
            "live": compared, "problems": problems})
        );
    } else {
        println!(
            "drill: '{}' restored at revision {} ({}): a base of {} entities + {} changes; serving after {rto:.1} s (RTO); last archived change {rpo:.1} s old (RPO); {answered}/{smoke} smoke requests answered; {compared}",
            restored.service,
            restored.point.revision,
            restored.point.at,
            restored.entities,
            restored.replayed
        );
    }
    if !problems.is_empty() {
        bail!("drill failed: {}", problems.join("; "));
    }
    Ok(())
}

/// The move's verification against the live instance: per resource type, counts and content
/// hashes equal — when the live instance is at the restored `point` (nothing changed since the
/// last archived change); otherwise it says why it did not compare.
async fn compare_with_live(
    live: &gatehouse_client::Client,
    point: u64,
    restored: &gatehouse_client::api::Digest,
    problems: &mut Vec<String>,
) -> Result<String> {
    let theirs = live
        .digest(&[])
        .await
        .context("the live instance (--url) did not give its digest")?;
    if theirs.revision != point {
        return Ok(format!(
            "not compared: the live instance is at revision {}, the archive's latest point at {point}",
            theirs.revision
        ));
    }
    let differing: Vec<&String> = theirs
        .kinds
        .iter()
        .filter(|(kind, d)| restored.kinds.get(*kind) != Some(*d))
        .map(|(kind, _)| kind)
        .chain(
            restored
                .kinds
                .keys()
                .filter(|k| !theirs.kinds.contains_key(*k)),
        )
        .collect();
    if differing.is_empty() {
        return Ok(format!(
            "equal to the live instance ({} resources, every type's hash)",
            theirs.total
        ));
    }
    let names: Vec<&str> = differing.iter().map(|k| k.as_str()).collect();
    problems.push(format!(
        "the restored instance differs from the live one at revision {} in: {}",
        theirs.revision,
        names.join(", ")
    ));
    Ok("differs from the live instance".into())
}

/// The gateway's status probe and one request per API (at most 20): how many were sent, and
/// how many the gateway answered (any status: a backend out of reach is not the drill's).
async fn smoke(instance: &gatehouse_server::Instance) -> (u64, u64) {
    let http = reqwest::Client::new();
    let mut targets = vec![format!("{}/status-0123456789abcdef", instance.gateway_url)];
    let apis: serde_json::Value = match http
        .get(format!("{}/apis?$top=20", instance.management_url))
        .bearer_auth(&instance.token)
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    };
    for api in apis["value"].as_array().into_iter().flatten() {
        if let Some(path) = api["properties"]["path"].as_str() {
            targets.push(format!("{}/{path}/", instance.gateway_url));
        }
    }
    let mut answered = 0;
    for url in &targets {
        let sent = http.get(url).timeout(Duration::from_secs(10)).send().await;
        if sent.is_ok() {
            answered += 1;
        }
    }
    (targets.len() as u64, answered)
}
