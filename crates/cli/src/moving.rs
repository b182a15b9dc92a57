//! `gatehouse move`: argument handling, progress on the terminal, and the report. The
//! workflow itself is `gatehouse_mover`.

use anyhow::{Context, Result, bail};
use clap::Args;
use gatehouse_mover::options::{MoveOptions, Side, parse_dns};
use gatehouse_mover::overlay::Overlay;
use gatehouse_mover::{Event, report::Report};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Args, Debug, Clone)]
pub struct MoveArgs {
    /// The source instance's data directory (it must be running).
    #[arg(long)]
    pub source_data_dir: Option<PathBuf>,
    /// The source's management URL (with --source-token-file).
    #[arg(long)]
    pub source: Option<String>,
    /// A file holding the source's operator or admin token.
    #[arg(long)]
    pub source_token_file: Option<PathBuf>,
    /// The target instance's data directory (it must be running).
    #[arg(long)]
    pub target_data_dir: Option<PathBuf>,
    /// The target's management URL (with --target-token-file).
    #[arg(long)]
    pub target: Option<String>,
    /// A file holding the target's admin token.
    #[arg(long)]
    pub target_token_file: Option<PathBuf>,
    /// Where the archive goes: a folder, file:///…, az://ACCOUNT/CONTAINER, s3://BUCKET,
    /// s3+http://HOST:PORT/BUCKET, gs://BUCKET.
    #[arg(long)]
    pub storage: Option<String>,
    /// Start from the source's continuous archive (the URL of its `serve --archive`) instead
    /// of a fresh backup; --key-file is that archive's key.
    #[arg(long, conflicts_with_all = ["storage", "backup_name"], requires = "key_file")]
    pub from_archive: Option<String>,
    /// The archive's name (default: move-<time>.ghbak).
    #[arg(long)]
    pub backup_name: Option<String>,
    /// The archive key (a passphrase of 12+ characters or an age secret key); default: a new
    /// random one, kept beside the move file. Never inside the storage folder.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The move file (default: gatehouse-move.json here, in the working directory).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Continue the move recorded in the move file.
    #[arg(long)]
    pub resume: bool,
    /// Drop the unfinished move recorded in the move file (before it handed over), lifting
    /// the source's freeze, so that a move with other options can start.
    #[arg(long, conflicts_with = "resume")]
    pub abandon: bool,
    /// Confirm that the source is deleted when the move ends (asked on a terminal otherwise;
    /// not needed with --keep-source).
    #[arg(long)]
    pub yes: bool,
    /// Print the steps and what each will do; change nothing.
    #[arg(long)]
    pub plan: bool,
    /// The target takes the source's name and host names (APIM's option 2, without downtime).
    #[arg(long)]
    pub same_name: bool,
    /// With --same-name: APIM's order (back up, delete the source, restore), with downtime.
    #[arg(long)]
    pub delete_source_first: bool,
    /// Keep the source as a read-only standby instead of deleting it.
    #[arg(long)]
    pub keep_source: bool,
    /// Move into a target that is not empty (its configuration is replaced).
    #[arg(long)]
    pub force: bool,
    /// Move into a target of a different tier than the source's.
    #[arg(long)]
    pub allow_tier_change: bool,
    /// What differs in the target region (YAML or JSON): backends, apis, namedValues,
    /// certificates, hostnames.
    #[arg(long)]
    pub overlay: Option<PathBuf>,
    /// The custom domain's DNS: rfc2136://SERVER:PORT (dynamic update with TSIG) or
    /// manual://SERVER:PORT (you change the record; the move checks SERVER).
    #[arg(long)]
    pub dns: Option<String>,
    /// The DNS zone the custom domain's record is in (with --dns), e.g. example.com.
    #[arg(long)]
    pub dns_zone: Option<String>,
    /// The TSIG key, as for knsupdate -y: ALGORITHM:NAME:BASE64SECRET.
    #[arg(long)]
    pub dns_key_file: Option<PathBuf>,
    /// The custom domain whose CNAME moves to the target (option 1).
    #[arg(long)]
    pub custom_domain: Option<String>,
    /// The target gateway's host name for the CNAME (default: its first Proxy host name).
    #[arg(long)]
    pub target_host: Option<String>,
    /// The target gateway's IPv4 address for a same-name move (default: from its URL).
    #[arg(long)]
    pub target_address: Option<std::net::Ipv4Addr>,
    /// Also compare GET responses of source and target (status and body hash).
    #[arg(long)]
    pub shadow: bool,
    /// The longest the source stays frozen (read-only) for the handover, 1 to 3600 seconds; the
    /// freeze lifts by itself after it, so a move that dies never leaves the source frozen.
    #[arg(long, default_value_t = 60)]
    pub freeze_seconds: u64,
    /// The drain ends after this long without a request to the source…
    #[arg(long, default_value_t = 10.0)]
    pub quiet_seconds: f64,
    /// …or after this long in any case.
    #[arg(long, default_value_t = 300.0)]
    pub max_drain_seconds: f64,
    /// How long the cutover waits for the DNS server to answer the new record.
    #[arg(long, default_value_t = 60.0)]
    pub dns_wait_seconds: f64,
}

fn side(
    dir: &Option<PathBuf>,
    url: &Option<String>,
    token: &Option<PathBuf>,
    which: &str,
    ca_file: Option<&Path>,
) -> Result<Side> {
    match (dir, url, token) {
        (Some(d), None, None) => Ok(Side::DataDir(std::path::absolute(d)?)),
        (None, Some(u), Some(t)) => Ok(Side::Url {
            url: u.clone(),
            token_file: std::path::absolute(t)?,
            ca_file: ca_file.map(std::path::absolute).transpose()?,
        }),
        (None, Some(_), None) => bail!("--{which} needs --{which}-token-file"),
        (None, None, _) => bail!("give the {which} with --{which}-data-dir or --{which} URL"),
        _ => bail!("give the {which} either by --{which}-data-dir or by --{which} URL, not both"),
    }
}

/// A local folder named by `--storage`, if it is one.
fn local_folder(storage: &str) -> Option<PathBuf> {
    if let Some(p) = storage.strip_prefix("file://") {
        return Some(PathBuf::from(p));
    }
    (!storage.contains("://")).then(|| PathBuf::from(storage))
}

/// The move file: `--state`, else `gatehouse-move.json` in the working directory — never in
/// the storage folder by default, because the move's generated key is kept beside it.
fn state_path(args: &MoveArgs) -> Result<PathBuf> {
    let path = args
        .state
        .clone()
        .unwrap_or_else(|| PathBuf::from("gatehouse-move.json"));
    Ok(std::path::absolute(path)?)
}

/// Whether `path` is inside the local storage folder `storage` (after resolving links).
fn inside_storage(path: &Path, storage: Option<&Path>) -> bool {
    let Some(storage) = storage.and_then(|s| std::fs::canonicalize(s).ok()) else {
        return false;
    };
    let resolved = std::fs::canonicalize(path).ok().or_else(|| {
        let parent = std::fs::canonicalize(path.parent()?).ok()?;
        Some(parent.join(path.file_name()?))
    });
    resolved.is_some_and(|p| p.starts_with(&storage))
}

/// The archive key's file: `--key-file`, else a new random key beside the move file. Neither
/// may be inside the storage folder: whoever can read the archives must not find their key.
fn key_file(args: &MoveArgs, state: &Path, storage: Option<&Path>) -> Result<PathBuf> {
    if let Some(k) = &args.key_file {
        if inside_storage(k, storage) {
            bail!(
                "the key file {} is inside the storage folder: whoever reads the archive there would find its key; keep it elsewhere",
                k.display()
            );
        }
        let text = std::fs::read_to_string(k)
            .with_context(|| format!("cannot read the key file {}", k.display()))?;
        gatehouse_backup::BackupKey::parse(text.trim())
            .map_err(|e| anyhow::anyhow!("{}: {e}", k.display()))?;
        return Ok(std::path::absolute(k)?);
    }
    if inside_storage(state, storage) {
        bail!(
            "the move file {} is inside the storage folder, and the move's key would be written beside it: give --state outside the storage folder (or --key-file)",
            state.display()
        );
    }
    if args.plan {
        return Ok(state.with_extension("key"));
    }
    gatehouse_mover::new_key_file(state)
}

fn options(args: &MoveArgs, state: &Path, ca_file: Option<&Path>) -> Result<MoveOptions> {
    let storage = args
        .storage
        .clone()
        .or_else(|| args.from_archive.clone())
        .context("--storage is needed: where the archive goes (or --from-archive: the source's continuous archive)")?;
    let storage = match local_folder(&storage) {
        Some(dir) => {
            if !args.plan {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            std::path::absolute(&dir)?.display().to_string()
        }
        None => storage,
    };
    let from_archive = args.from_archive.as_ref().map(|_| storage.clone());
    let backup_name = args.backup_name.clone().unwrap_or_else(|| {
        format!(
            "move-{}.ghbak",
            time::OffsetDateTime::now_utc().unix_timestamp()
        )
    });
    let key_file = key_file(args, state, local_folder(&storage).as_deref())?;
    let overlay = match &args.overlay {
        Some(p) => Some(Overlay::read(p)?),
        None => None,
    };
    let opts = MoveOptions {
        source: side(
            &args.source_data_dir,
            &args.source,
            &args.source_token_file,
            "source",
            ca_file,
        )?,
        target: side(
            &args.target_data_dir,
            &args.target,
            &args.target_token_file,
            "target",
            ca_file,
        )?,
        storage,
        backup_name,
        key_file,
        from_archive,
        same_name: args.same_name,
        delete_source_first: args.delete_source_first,
        keep_source: args.keep_source,
        force: args.force,
        allow_tier_change: args.allow_tier_change,
        overlay,
        dns: parse_dns(
            args.dns.as_deref(),
            args.dns_zone.as_deref(),
            args.dns_key_file.as_deref(),
        )?,
        custom_domain: args.custom_domain.clone(),
        target_host: args.target_host.clone(),
        target_address: args.target_address,
        shadow: args.shadow,
        freeze_seconds: args.freeze_seconds,
        quiet_ms: (args.quiet_seconds * 1000.0) as u64,
        max_drain_ms: (args.max_drain_seconds * 1000.0) as u64,
        dns_wait_ms: (args.dns_wait_seconds * 1000.0) as u64,
    };
    opts.check()?;
    Ok(opts)
}

/// A move deletes its source at the end: asked on a terminal, `--yes` otherwise.
fn confirm_source_deletion(opts: &gatehouse_mover::options::MoveOptions, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    let what = format!(
        "this move deletes the source ({}) when it ends",
        opts.source.describe()
    );
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        bail!("{what}: pass --yes to confirm, or --keep-source to keep it as a read-only standby");
    }
    eprint!("{what}. Continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
        bail!("not confirmed: nothing was done");
    }
    Ok(())
}

/// Progress: a bar on a terminal, one line per step otherwise (both on standard error).
fn progress() -> gatehouse_mover::Events {
    let bar: Arc<Mutex<Option<ProgressBar>>> = Arc::new(Mutex::new(None));
    let terminal = std::io::stderr().is_terminal();
    Box::new(move |e| {
        let mut b = bar.lock().unwrap_or_else(|e| e.into_inner());
        match e {
            Event::StepStarted { name, index, total } => {
                if terminal {
                    let pb = ProgressBar::new(100);
                    pb.set_style(
                        ProgressStyle::with_template(
                            "[{prefix}] {msg:<10} [{bar:30}] {pos}% {elapsed}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    pb.set_prefix(format!("{}/{total}", index + 1));
                    pb.set_message(name);
                    pb.enable_steady_tick(std::time::Duration::from_millis(200));
                    *b = Some(pb);
                } else {
                    eprintln!("[{}/{total}] {name} …", index + 1);
                }
            }
            Event::Progress { percent, .. } => {
                if let Some(pb) = b.as_ref() {
                    pb.set_position(percent);
                }
            }
            Event::Note(text) => match b.as_ref() {
                Some(pb) => pb.println(format!("  {text}")),
                None => eprintln!("  {text}"),
            },
            Event::StepDone { name, duration_ms } => {
                if let Some(pb) = b.take() {
                    pb.set_position(100);
                    pb.finish_with_message(format!(
                        "{name} ({:.2} s)",
                        duration_ms as f64 / 1000.0
                    ));
                } else {
                    eprintln!("  {name} done in {:.2} s", duration_ms as f64 / 1000.0);
                }
            }
        }
    })
}

pub async fn run(args: &MoveArgs, json_out: bool, ca_file: Option<&Path>) -> Result<()> {
    let state = state_path(args)?;
    if args.plan {
        let opts = options(args, &state, ca_file)?;
        let steps = gatehouse_mover::plan(&opts);
        if json_out {
            let v: Vec<_> = steps
                .iter()
                .map(|(n, w)| serde_json::json!({"step": n, "does": w}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!(
                "move {} → {} (nothing is changed by --plan):",
                opts.source.describe(),
                opts.target.describe()
            );
            for (i, (n, w)) in steps.iter().enumerate() {
                println!("  {:>2}. {n:<13} {w}", i + 1);
            }
        }
        return Ok(());
    }
    if args.abandon {
        gatehouse_mover::abandon(&state).await?;
        println!("abandoned the move recorded in {}", state.display());
        return Ok(());
    }
    if !args.resume {
        let opts = options(args, &state, ca_file)?;
        if !opts.keep_source {
            confirm_source_deletion(&opts, args.yes)?;
        }
        gatehouse_mover::create(opts, &state)?;
    } else if !state.exists() {
        bail!(
            "no move to resume: {} does not exist (pass --state)",
            state.display()
        );
    }
    let runtime = gatehouse_mover::Runtime {
        events: progress(),
        storage_key: crate::env::env_value("GATEHOUSE_STORAGE_KEY"),
        kill_after: crate::env::env_value("GATEHOUSE_MOVE_FAULT"),
    };
    let result = tokio::select! {
        r = gatehouse_mover::run(&state, runtime) => r,
        _ = tokio::signal::ctrl_c() => {
            gatehouse_mover::interrupted(&state).await.ok();
            bail!(
                "interrupted; the source's freeze was lifted. Continue with: gatehouse move --resume --state {}",
                state.display()
            );
        }
    };
    let report: Report = match result {
        Ok(r) => r,
        Err(e) if e.downcast_ref::<gatehouse_mover::MoveError>().is_some() => {
            return Err(e.context(format!(
                "the move was called off (recorded in {}); fix the cause and start a new move",
                state.display()
            )));
        }
        Err(e) => {
            return Err(e.context(format!(
                "the move stopped (its state is in {}); after fixing the cause, continue with --resume",
                state.display()
            )));
        }
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.human());
    }
    Ok(())
}
