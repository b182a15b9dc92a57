//! `gatehouse move`: moves an instance to another region, machine or cloud while it serves.
//!
//! The steps (docs/design.md "Moving an instance"): preflight → backup → restore → overlay →
//! catch-up → freeze and final delta → verify → (take the name) → DNS cutover → drain →
//! clean up. With `--delete-source-first`, APIM's order: preflight → freeze → backup →
//! delete the source → restore → overlay → verify → take the name → cutover → clean up.
//!
//! Invariants:
//! - every step is idempotent and its completion is saved in the move file before the next
//!   starts, so a crash anywhere resumes by re-running at most the step it was in;
//! - the source refuses writes from the freeze on, and every change it committed before is on
//!   the target before the target becomes authoritative (`handed_over`);
//! - nothing in DNS changes before verification passed; a failed verification lifts the freeze
//!   and leaves the source serving;
//! - this crate talks to instances only through their management API and gateways.

pub mod dns;
pub mod options;
pub mod overlay;
pub mod report;
pub mod state;

use anyhow::{Context, Result, anyhow, bail};
use dns::{Authority, RecordValue, TsigKey};
use gatehouse_client::api::{Digest, KindDigest};
use gatehouse_client::{Client, path_segment};
use options::{DnsMode, MoveOptions};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use state::{InstanceInfo, MoveState, StepRecord, StepStatus, Traffic};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// APIM's gateway status probe path.
pub const STATUS_PATH: &str = "/status-0123456789abcdef";

/// What the move tells whoever shows its progress.
#[derive(Debug, Clone)]
pub enum Event {
    StepStarted {
        name: String,
        index: usize,
        total: usize,
    },
    /// Percent of the running step (backup, restore).
    Progress {
        name: String,
        percent: u64,
    },
    /// A line for the operator.
    Note(String),
    StepDone {
        name: String,
        duration_ms: u64,
    },
}

pub type Events = Box<dyn Fn(Event) + Send + Sync>;

/// The steps of a move with these options, in order, each with what it will do.
pub fn plan(o: &MoveOptions) -> Vec<(&'static str, String)> {
    let target_name = if o.same_name {
        "the source's name"
    } else {
        "its own name"
    };
    let dns = match (&o.dns, &o.custom_domain) {
        (DnsMode::None, _) => "no custom domain: report the target's gateway URL".to_string(),
        (DnsMode::Rfc2136 { server, .. }, d) => format!(
            "RFC 2136 update (TSIG) at {server}: {}; wait until it answers, then out the old TTL",
            cutover_description(o, d.as_deref())
        ),
        (DnsMode::Manual { server, .. }, d) => format!(
            "print the record change ({}) and wait until {server} answers it, then out the old TTL",
            cutover_description(o, d.as_deref())
        ),
    };
    let overlay = match &o.overlay {
        Some(ov) if !ov.is_empty() => format!(
            "set {} backend URL(s), {} API service URL(s), {} named value(s), {} certificate(s), {} host name(s) on the target",
            ov.backends.len(),
            ov.apis.len(),
            ov.named_values.len(),
            ov.certificates.len(),
            ov.hostnames.len()
        ),
        _ => "no overlay: nothing differs between the regions".into(),
    };
    let cleanup = if o.keep_source {
        "keep the source as a read-only standby".to_string()
    } else if o.source.data_dir().is_some() {
        format!("delete the source and remove {}", o.source.describe())
    } else {
        "delete the source (it stops and is marked deleted)".into()
    };
    let archive = archive_url(o);
    let (backup, restore) = match &o.from_archive {
        Some(_) => (
            format!("wait until the source's continuous archive {archive} holds its revision"),
            format!(
                "restore that revision of {archive} into the target (a base and the changes after it)"
            ),
        ),
        None => (
            format!("back up the source to {archive}"),
            format!("restore {archive} into the target"),
        ),
    };
    let mut steps = vec![(
        "preflight",
        format!(
            "check both instances answer, tiers match{}, the target is empty{}; record DNS and traffic",
            if o.allow_tier_change {
                " (or not: --allow-tier-change)"
            } else {
                ""
            },
            if o.force { " (or not: --force)" } else { "" }
        ),
    )];
    if o.delete_source_first {
        steps.push((
            "freeze",
            "refuse writes on the source until it is deleted".into(),
        ));
        steps.push(("backup", format!("{backup} (frozen)")));
        steps.push((
            "delete-source",
            "delete the source (APIM's order: downtime starts here)".into(),
        ));
        steps.push(("restore", restore));
        steps.push(("overlay", overlay));
        steps.push((
            "verify",
            "counts and hashes per type equal the frozen source's; smoke requests through the target gateway".into(),
        ));
        steps.push((
            "take-name",
            format!("the target takes {target_name} and host names"),
        ));
        steps.push(("cutover", dns));
        steps.push(("cleanup", cleanup));
        return steps;
    }
    steps.push(("backup", format!("{backup} (serving)")));
    steps.push(("restore", restore));
    steps.push(("overlay", overlay));
    steps.push((
        "catch-up",
        "replay the source's journal after the archive's revision onto the target".into(),
    ));
    steps.push((
        "freeze",
        format!(
            "refuse writes on the source (409 ServiceIsBeingMoved, at most {} s) and replay the final delta",
            o.freeze_seconds
        ),
    ));
    steps.push((
        "verify",
        format!(
            "counts and hashes per type equal; smoke requests through the target gateway{}",
            if o.shadow {
                "; shadow GETs compared with the source"
            } else {
                ""
            }
        ),
    ));
    if o.same_name {
        steps.push((
            "take-name",
            "the target takes the source's name and host names".into(),
        ));
    }
    steps.push((
        "cutover",
        format!("the source hands over (read-only standby); {dns}"),
    ));
    steps.push((
        "drain",
        format!(
            "the source closes client connections and serves until it sees no request for {} s (at most {} s)",
            o.quiet_ms / 1000,
            o.max_drain_ms / 1000
        ),
    ));
    steps.push(("cleanup", cleanup));
    steps
}

/// The archive a move writes and reads: the continuous archive, or `storage/backup_name`.
fn archive_url(o: &MoveOptions) -> String {
    match &o.from_archive {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => format!("{}/{}", o.storage.trim_end_matches('/'), o.backup_name),
    }
}

fn cutover_description(o: &MoveOptions, domain: Option<&str>) -> String {
    if o.same_name {
        "the source's gateway host name gets the target's address (A)".into()
    } else {
        format!(
            "CNAME {} → {}",
            domain.unwrap_or("?"),
            o.target_host
                .as_deref()
                .unwrap_or("the target's gateway host name")
        )
    }
}

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Drops an unfinished move that has not handed over: lifts the source's freeze if it froze it,
/// and removes the move file, so that a move with other options can start. A move past the
/// hand-over (the target is authoritative, or the source is deleted) can only be resumed.
pub async fn abandon(state_path: &Path) -> Result<()> {
    let state = MoveState::load(state_path)?;
    if state.outcome.is_none()
        && (state.handed_over
            || state
                .step("delete-source")
                .is_some_and(|s| s.status != StepStatus::Pending))
    {
        bail!(
            "the move in {} has handed over to the target (or deleted the source): it can only be finished, with `gatehouse move --resume --state {}`",
            state_path.display(),
            state_path.display()
        );
    }
    interrupted(state_path).await?;
    std::fs::remove_file(state_path)
        .with_context(|| format!("cannot remove {}", state_path.display()))?;
    Ok(())
}

/// A new move: writes its move file and returns where it is.
pub fn create(options: MoveOptions, state_path: &Path) -> Result<MoveState> {
    options.check()?;
    if state_path.exists() {
        let old = MoveState::load(state_path)?;
        if old.outcome.is_none() {
            bail!(
                "a move is already recorded in {} and not finished: continue it with `gatehouse move --resume --state {}`, or drop it with `gatehouse move --abandon --state {}`",
                state_path.display(),
                state_path.display(),
                state_path.display()
            );
        }
    }
    let steps = plan(&options)
        .into_iter()
        .map(|(name, _)| StepRecord {
            name: name.to_string(),
            status: StepStatus::Pending,
            attempts: 0,
            duration_ms: 0,
            waited_ms: 0,
            detail: Value::Null,
        })
        .collect();
    let id = format!("move-{}", &hex::encode(rand::random::<[u8; 6]>()));
    let state = MoveState {
        version: state::STATE_VERSION,
        id,
        started_at: now_rfc3339(),
        options,
        steps,
        source: None,
        target: None,
        archive_revision: None,
        archive_entities: 0,
        archive_bytes: 0,
        applied_through: 0,
        changes_replayed: 0,
        source_digest: None,
        source_traffic_start: None,
        target_traffic_start: None,
        source_traffic_end: None,
        target_traffic_end: None,
        dns_before: None,
        dns_changed_at_ms: None,
        source_deleted_at_ms: None,
        downtime_ms: 0,
        handed_over: false,
        overlay_applied: Vec::new(),
        smoke_requests: 0,
        outcome: None,
    };
    state.save(state_path)?;
    Ok(state)
}

/// Why a move stopped without finishing.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error(
        "verification failed, so nothing in DNS changed and the source keeps serving: {}",
        .0.join("; ")
    )]
    VerificationFailed(Vec<String>),
}

/// What a run of a move is given besides its move file: never written to it.
pub struct Runtime {
    /// Where progress is reported.
    pub events: Events,
    /// The object storage key (Azure account key, S3 `KEY_ID:SECRET`, GCS JSON), if the
    /// storage needs one.
    pub storage_key: Option<String>,
    /// Fault injection for the resume tests: the process kills itself (SIGKILL) after this
    /// step did its work and before it is recorded as done.
    pub kill_after: Option<String>,
}

impl Runtime {
    /// Reports to `events`, with no storage key and no fault.
    pub fn new(events: Events) -> Runtime {
        Runtime {
            events,
            storage_key: None,
            kill_after: None,
        }
    }
}

/// A move in progress: its state, the two instances, and where to report.
pub struct Move {
    state: MoveState,
    path: PathBuf,
    source: Option<Client>,
    target: Client,
    events: Events,
    storage_key: Option<String>,
    kill_after: Option<String>,
    http: reqwest::Client,
}

/// Runs (or resumes) the move recorded in `state_path` to its end and returns the report.
pub async fn run(state_path: &Path, runtime: Runtime) -> Result<report::Report> {
    let Runtime {
        events,
        storage_key,
        kill_after,
    } = runtime;
    let state = MoveState::load(state_path)?;
    if let Some(outcome) = &state.outcome {
        bail!(
            "the move in {} has already ended ({outcome}); start a new one",
            state_path.display()
        );
    }
    // The source may be gone already: deleted by this move before a crash. Then it is not
    // needed any more; before that point it must answer.
    let source_may_be_gone = state.handed_over
        || state
            .step("delete-source")
            .is_some_and(|s| s.status != StepStatus::Pending);
    let source = match state.options.source.client() {
        Ok(c) if !state.done("delete-source") => Some(c),
        Ok(_) => None,
        Err(_) if source_may_be_gone => None,
        Err(e) => return Err(e.context("cannot reach the source")),
    };
    let target = state.options.target.client()?;
    let mut m = Move {
        state,
        path: state_path.to_path_buf(),
        source,
        target,
        events,
        storage_key,
        kill_after,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
    };
    match m.run_steps().await {
        Ok(()) => {
            m.state.outcome = Some("completed".into());
            m.save()?;
            Ok(report::Report::of(&m.state))
        }
        Err(e) => {
            if e.downcast_ref::<MoveError>().is_some() {
                m.unfreeze_source().await;
                m.state.outcome = Some(format!("aborted: {e}"));
                m.save()?;
            }
            Err(e)
        }
    }
}

/// After an interrupted run (Ctrl-C): lifts the source's freeze unless it has handed over, so a
/// move that is not resumed leaves the source writable. The move file stays resumable.
pub async fn interrupted(state_path: &Path) -> Result<()> {
    let state = MoveState::load(state_path)?;
    if state.handed_over || state.done("delete-source") || state.options.delete_source_first {
        return Ok(());
    }
    if state.done("preflight") {
        let source = state.options.source.client()?;
        source.lift_freeze().await.ok();
    }
    Ok(())
}

impl Move {
    fn save(&self) -> Result<()> {
        self.state.save(&self.path)
    }

    fn note(&self, text: impl Into<String>) {
        (self.events)(Event::Note(text.into()));
    }

    fn source(&self) -> Result<&Client> {
        self.source
            .as_ref()
            .ok_or_else(|| anyhow!("the source was deleted earlier in this move"))
    }

    async fn run_steps(&mut self) -> Result<()> {
        let names: Vec<String> = self.state.steps.iter().map(|s| s.name.clone()).collect();
        let total = names.len();
        for (index, name) in names.iter().enumerate() {
            if self.state.done(name) {
                continue;
            }
            (self.events)(Event::StepStarted {
                name: name.clone(),
                index,
                total,
            });
            {
                let rec = self.state.step_mut(name);
                rec.status = StepStatus::Running;
                rec.attempts += 1;
            }
            self.save()?;
            let started = Instant::now();
            let result = self.step(name).await;
            let elapsed = started.elapsed().as_millis() as u64;
            match result {
                Ok(detail) => {
                    self.fault_point(name);
                    let rec = self.state.step_mut(name);
                    rec.status = StepStatus::Done;
                    rec.duration_ms += elapsed;
                    rec.detail = detail;
                    self.save()?;
                    (self.events)(Event::StepDone {
                        name: name.clone(),
                        duration_ms: elapsed,
                    });
                }
                Err(e) => {
                    let rec = self.state.step_mut(name);
                    rec.status = StepStatus::Failed;
                    rec.duration_ms += elapsed;
                    rec.detail = json!({"error": format!("{e:#}")});
                    self.save()?;
                    return Err(e.context(format!("step {name}")));
                }
            }
        }
        Ok(())
    }

    async fn step(&mut self, name: &str) -> Result<Value> {
        match name {
            "preflight" => self.preflight().await,
            "backup" => self.backup().await,
            "restore" => self.restore().await,
            "overlay" => self.overlay().await,
            "catch-up" => self.catch_up_step().await,
            "freeze" => self.freeze().await,
            "delete-source" => self.delete_source().await,
            "verify" => self.verify().await,
            "take-name" => self.take_name().await,
            "cutover" => self.cutover().await,
            "drain" => self.drain().await,
            "cleanup" => self.cleanup().await,
            other => bail!("the move file names an unknown step '{other}'"),
        }
    }

    async fn info(client: &Client) -> Result<InstanceInfo> {
        let s = client.service().await?;
        Ok(InstanceInfo {
            name: s.name,
            region: s.location,
            sku: s.sku.name,
            management_url: s.properties.management_api_url,
            gateway_url: s.properties.gateway_url,
            hostnames: s.properties.hostname_configurations,
        })
    }

    async fn traffic(client: &Client) -> Result<Traffic> {
        let t = client.traffic().await?;
        Ok(Traffic {
            requests: t.requests,
            failed: t.failed_requests,
        })
    }

    async fn preflight(&mut self) -> Result<Value> {
        let o = self.state.options.clone();
        let source = self.source()?;
        let src = Self::info(source)
            .await
            .with_context(|| format!("the source ({}) does not answer", o.source.describe()))?;
        let tgt = Self::info(&self.target)
            .await
            .with_context(|| format!("the target ({}) does not answer", o.target.describe()))?;
        if src.management_url == tgt.management_url {
            bail!(
                "the source and the target are the same instance ({})",
                src.management_url
            );
        }
        if src.sku != tgt.sku && !o.allow_tier_change {
            bail!(
                "the source runs the {} tier and the target {}: APIM moves need the same tier; pass --allow-tier-change to move anyway",
                src.sku,
                tgt.sku
            );
        }
        if !o.force {
            let mut found = Vec::new();
            for kind in ["apis", "products", "users", "backends", "namedValues"] {
                let n = self.target.count(kind).await?;
                if n > 0 {
                    found.push(format!("{n} {kind}"));
                }
            }
            if !found.is_empty() {
                bail!(
                    "the target is not empty ({}): the restore would replace it; pass --force to move anyway",
                    found.join(", ")
                );
            }
        }
        if let Some(ov) = &o.overlay {
            ov.check_against(source).await?;
        }
        self.state.source_traffic_start = Some(Self::traffic(source).await?);
        self.state.target_traffic_start = Some(Self::traffic(&self.target).await?);
        self.target.drain(false).await?;
        self.state.source = Some(src.clone());
        self.state.target = Some(tgt.clone());
        let mut detail = json!({
            "source": {"name": src.name, "region": src.region, "sku": src.sku},
            "target": {"name": tgt.name, "region": tgt.region, "sku": tgt.sku},
        });
        if let Some((authority, record, new)) = self.cutover_record()? {
            let before = authority.query(&record, new.record_type()).await?;
            match &before {
                Some(b) => self.note(format!(
                    "DNS: {record} {} {} (TTL {} s) now; it will be {}",
                    b.value.type_name(),
                    b.value.text(),
                    b.ttl,
                    new.text()
                )),
                None => self.note(format!(
                    "DNS: {record} has no {} record yet; the cutover creates it",
                    new.type_name()
                )),
            }
            detail["dns"] = json!({"record": record, "before": before, "after": new});
            self.state.dns_before = before;
        }
        Ok(detail)
    }

    /// The DNS server, the record the cutover changes, and its new value.
    fn cutover_record(&self) -> Result<Option<(Authority, String, RecordValue)>> {
        let o = &self.state.options;
        let (server, zone, key) = match &o.dns {
            DnsMode::None => return Ok(None),
            DnsMode::Rfc2136 {
                server,
                zone,
                key_file,
            } => (*server, zone.clone(), Some(TsigKey::read(key_file)?)),
            DnsMode::Manual { server, zone } => (*server, zone.clone(), None),
        };
        let authority = Authority { server, zone, key };
        let src = self
            .state
            .source
            .as_ref()
            .ok_or_else(|| anyhow!("preflight has not recorded the source"))?;
        let tgt = self
            .state
            .target
            .as_ref()
            .ok_or_else(|| anyhow!("preflight has not recorded the target"))?;
        if o.same_name {
            let record = proxy_hostnames(&src.hostnames, o.custom_domain.as_deref())
                .into_iter()
                .next()
                .ok_or_else(|| {
                    anyhow!(
                        "the source '{}' has no gateway (Proxy) host name to give the target; set hostnameConfigurations on it",
                        src.name
                    )
                })?;
            let address = match o.target_address {
                Some(a) => a,
                None => gateway_ipv4(&tgt.gateway_url).ok_or_else(|| {
                    anyhow!(
                        "the target's gateway URL {} has no IPv4 address; pass --target-address",
                        tgt.gateway_url
                    )
                })?,
            };
            return Ok(Some((authority, record, RecordValue::A(address))));
        }
        let domain = o
            .custom_domain
            .clone()
            .ok_or_else(|| anyhow!("--dns needs --custom-domain"))?;
        let host = match &o.target_host {
            Some(h) => h.clone(),
            None => proxy_hostnames(&tgt.hostnames, Some(&domain))
                .into_iter()
                .next()
                .ok_or_else(|| {
                    anyhow!(
                        "the target '{}' has no gateway host name for {domain} to point at: pass --target-host or set its hostnameConfigurations",
                        tgt.name
                    )
                })?,
        };
        Ok(Some((authority, domain, RecordValue::Cname(host))))
    }

    fn storage_body(&self) -> Result<Value> {
        let o = &self.state.options;
        let url = archive_url(o);
        let (account, container, name) =
            gatehouse_client::storage_url::split_url(&url).map_err(|e| anyhow!("{e}"))?;
        let key = std::fs::read_to_string(&o.key_file).with_context(|| {
            format!("cannot read the archive key file {}", o.key_file.display())
        })?;
        let mut body = json!({
            "storageAccount": account,
            "containerName": container,
            "backupName": name,
            // The key's line (a key file of `backup new-key` or age-keygen has comments).
            "encryptionKey": key.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or_default(),
        });
        if let Some(k) = &self.storage_key {
            body["accessKey"] = json!(k);
        }
        Ok(body)
    }

    /// Fault injection for the resume tests ([`Runtime::kill_after`]).
    fn fault_point(&self, step: &str) {
        if self.kill_after.as_deref() == Some(step) {
            eprintln!("fault injection: kill -9 after the work of step {step}");
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            std::process::abort();
        }
    }

    async fn operation(&self, client: &Client, path: &str, body: &Value) -> Result<Value> {
        let location = client.start_operation(path, body).await?;
        let name = path.trim_start_matches('/').to_string();
        let events = &self.events;
        client
            .wait_operation(&location, |percent| {
                events(Event::Progress {
                    name: name.clone(),
                    percent,
                })
            })
            .await
    }

    async fn backup(&mut self) -> Result<Value> {
        if self.state.options.from_archive.is_some() {
            let outcome = self.wait_archived().await?;
            if self.state.options.delete_source_first {
                self.state.source_digest = Some(self.source()?.digest(&[]).await?);
            }
            return Ok(outcome);
        }
        let body = self.storage_body()?;
        let result = self.operation(self.source()?, "/backup", &body).await?;
        let outcome = &result["outcome"];
        self.state.archive_revision = outcome["revision"].as_u64();
        self.state.archive_entities = outcome["entities"].as_u64().unwrap_or(0);
        self.state.archive_bytes = outcome["bytes"].as_u64().unwrap_or(0);
        if self.state.archive_revision.is_none() {
            bail!("the source's backup did not report its revision");
        }
        if self.state.options.delete_source_first {
            self.state.source_digest = Some(self.source()?.digest(&[]).await?);
        }
        Ok(outcome.clone())
    }

    /// The backup step of a move from the continuous archive: the source's revision now, once
    /// the archive holds it. The source must be shipping to that archive.
    async fn wait_archived(&mut self) -> Result<Value> {
        const PATIENCE: Duration = Duration::from_secs(300);
        let url = archive_url(&self.state.options);
        let (_, container, folder) =
            gatehouse_client::storage_url::split_url(&url).map_err(|e| anyhow!("{e}"))?;
        let source = self.source()?;
        let wanted = source.service().await?.properties.revision;
        let started = Instant::now();
        loop {
            let properties = source.service().await?.properties;
            let status = properties.continuous_archive.ok_or_else(|| {
                anyhow!("the source ({}) keeps no continuous archive: start it with --archive {url}, or move with --storage (a fresh backup)", self.state.options.source.describe())
            })?;
            let destination = status["destination"].as_str().unwrap_or_default();
            if !destination.ends_with(&format!("/{container}/{folder}")) {
                bail!(
                    "the source archives to {destination}, not to {url}: give --from-archive the URL its --archive names"
                );
            }
            let archived = status["lastArchivedRevision"].as_u64().unwrap_or(0);
            (self.events)(Event::Progress {
                name: "backup".into(),
                percent: (archived.min(wanted) * 100)
                    .checked_div(wanted)
                    .unwrap_or(100),
            });
            if archived >= wanted {
                let waited_ms = started.elapsed().as_millis() as u64;
                self.state.archive_revision = Some(wanted);
                return Ok(json!({"revision": wanted, "archive": url, "waitedMs": waited_ms}));
            }
            if started.elapsed() > PATIENCE {
                bail!(
                    "the source's continuous archive holds revision {archived}, not yet {wanted}, after {} s (lag {} s, last error: {}): see the source's GET / continuousArchive",
                    PATIENCE.as_secs(),
                    status["lagSeconds"],
                    status["lastError"].as_str().unwrap_or("none")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn restore(&mut self) -> Result<Value> {
        let mut body = self.storage_body()?;
        body["allowTierChange"] = json!(self.state.options.allow_tier_change);
        if self.state.options.from_archive.is_some() {
            body["revision"] = json!(self.state.archive_revision);
        }
        let result = self.operation(&self.target, "/restore", &body).await?;
        self.state.applied_through = self.state.archive_revision.unwrap_or(0);
        self.state.changes_replayed = 0;
        Ok(result["outcome"].clone())
    }

    async fn apply_overlay(&mut self) -> Result<Vec<overlay::Applied>> {
        let Some(ov) = self.state.options.overlay.clone() else {
            return Ok(Vec::new());
        };
        let own = Self::info(&self.target).await?.hostnames;
        ov.apply(&self.target, &own).await
    }

    async fn overlay(&mut self) -> Result<Value> {
        let applied = self.apply_overlay().await?;
        self.state.overlay_applied = applied.clone();
        Ok(json!({"applied": applied.len()}))
    }

    /// Replays the source's journal after `applied_through` onto the target until a round finds
    /// nothing new (or `max_rounds` rounds). Returns the entries replayed.
    async fn catch_up(&mut self, max_rounds: usize) -> Result<u64> {
        const PAGE: usize = 1000;
        let mut replayed = 0;
        for _ in 0..max_rounds {
            let since = self.state.applied_through;
            let mut skip = 0;
            let mut last = since;
            let mut round = 0;
            loop {
                let entries = self
                    .source()?
                    .journal_with_secrets(since, skip as u64, PAGE as u64)
                    .await?
                    .value;
                if entries.is_empty() {
                    break;
                }
                for e in &entries {
                    let revision = e["revision"].as_u64().with_context(|| {
                        format!("a journal entry of the source has no revision: {e}")
                    })?;
                    last = last.max(revision);
                }
                self.target.apply_journal(&entries).await?;
                skip += entries.len();
                round += entries.len() as u64;
                if entries.len() < PAGE {
                    break;
                }
            }
            self.state.applied_through = last;
            self.state.changes_replayed += round;
            replayed += round;
            self.save()?;
            if round == 0 {
                break;
            }
        }
        if replayed > 0 && self.state.options.overlay.is_some() {
            // A replayed change may have overwritten what the overlay set.
            self.apply_overlay().await?;
        }
        Ok(replayed)
    }

    async fn catch_up_step(&mut self) -> Result<Value> {
        let n = self.catch_up(20).await?;
        Ok(json!({"replayed": n, "through": self.state.applied_through}))
    }

    async fn freeze_source(&self) -> Result<()> {
        let t = self.state.target.as_ref();
        let reason = format!(
            "moving to {} in {}",
            t.map_or("the target", |t| t.name.as_str()),
            t.map_or("another region", |t| t.region.as_str())
        );
        self.source()?
            .freeze(&json!({"seconds": self.state.options.freeze_seconds, "reason": reason}))
            .await?;
        Ok(())
    }

    async fn unfreeze_source(&self) {
        if self.state.handed_over || self.state.options.delete_source_first {
            return;
        }
        if let Some(s) = &self.source {
            let _ = s.lift_freeze().await;
        }
    }

    /// Before hand-over: the source is frozen and everything it committed is on the target.
    async fn ensure_frozen_and_caught_up(&mut self) -> Result<u64> {
        if self.state.handed_over || self.state.options.delete_source_first {
            return Ok(0);
        }
        self.freeze_source().await?;
        self.catch_up(50).await
    }

    async fn freeze(&mut self) -> Result<Value> {
        if self.state.options.delete_source_first {
            self.freeze_source().await?;
            return Ok(json!({"frozen": true}));
        }
        let started = Instant::now();
        let n = self.ensure_frozen_and_caught_up().await?;
        Ok(
            json!({"finalDelta": n, "through": self.state.applied_through, "ms": started.elapsed().as_millis() as u64}),
        )
    }

    async fn delete_source(&mut self) -> Result<Value> {
        self.retire_source().await?;
        if self.state.source_deleted_at_ms.is_none() {
            self.state.source_deleted_at_ms = Some(now_ms());
        }
        self.source = None;
        Ok(json!({"deleted": true}))
    }

    /// `DELETE /` on the source, then waits until it no longer answers.
    async fn retire_source(&self) -> Result<()> {
        let Some(source) = &self.source else {
            return Ok(());
        };
        let Ok(service) = source.service().await else {
            return Ok(()); // already gone (a resumed move)
        };
        source.delete_service(&service.name).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut waits = gatehouse_client::polling(Duration::from_millis(200));
        while source.get("/").await.is_ok() {
            if Instant::now() > deadline {
                bail!("the source still answers 60 s after it was deleted");
            }
            tokio::time::sleep(waits.next().unwrap_or(Duration::from_millis(200))).await;
        }
        Ok(())
    }

    async fn verify(&mut self) -> Result<Value> {
        let delta = self.ensure_frozen_and_caught_up().await?;
        self.target.drain(false).await?;
        let ov = self.state.options.overlay.clone().unwrap_or_default();
        let exclude = ov.paths();
        let target_digest = self.target.digest(&exclude).await?;
        // A delete-first move compares with the digest the frozen source gave before it was
        // deleted, taken whole: the kinds the overlay changes are compared by count only.
        let (compared, whole) = match &self.state.source_digest {
            Some(d) if self.state.options.delete_source_first => (d.clone(), true),
            _ => (self.source()?.digest(&exclude).await?, false),
        };
        let overlay_paths = ov.paths();
        let overlay_kinds: Vec<&str> = overlay_paths
            .iter()
            .filter_map(|p| p.split('/').nth(1))
            .map(kind_of_collection)
            .collect();
        let mut problems = compare_digests(&compared, &target_digest, |kind| {
            let certs_added = kind == "certificate" && !ov.certificates.is_empty();
            (
                certs_added,
                certs_added || (whole && overlay_kinds.contains(&kind)),
            )
        });
        let kinds_compared = target_digest.kinds.len();
        problems.extend(ov.verify(&self.target).await?);
        let smoke = self.smoke().await?;
        problems.extend(smoke.1.iter().cloned());
        if !problems.is_empty() {
            return Err(MoveError::VerificationFailed(problems).into());
        }
        Ok(json!({
            "finalDelta": delta,
            "kindsCompared": kinds_compared,
            "entities": target_digest.total,
            "smokeRequests": smoke.0,
        }))
    }

    /// Smoke requests through the target's gateway: the status probe, then each API's GET
    /// operations without template parameters (at most 50), with the master subscription key.
    /// Compared with the source (status; body hash with `--shadow`) while it still serves.
    async fn smoke(&mut self) -> Result<(u64, Vec<String>)> {
        let mut problems = Vec::new();
        let mut sent = 0u64;
        let tgt = Self::info(&self.target).await?;
        let probe = self
            .http
            .get(format!("{}{STATUS_PATH}", tgt.gateway_url))
            .send()
            .await;
        sent += 1;
        match probe {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => problems.push(format!(
                "the target gateway's status probe answered {}",
                r.status()
            )),
            Err(e) => problems.push(format!("the target gateway does not answer: {e}")),
        }
        // The built-in all-access subscription, when the instance has one.
        let key = self
            .target
            .send(
                reqwest::Method::POST,
                "/subscriptions/master/listSecrets",
                None,
            )
            .await
            .ok()
            .and_then(|v| v["primaryKey"].as_str().map(str::to_string));
        let source_gateway = match &self.source {
            Some(s) if !self.state.options.delete_source_first => {
                Some(Self::info(s).await?.gateway_url)
            }
            _ => None,
        };
        let apis = self.target.list_all("/apis").await?;
        let mut budget = 50;
        for api in apis {
            let id = api["name"]
                .as_str()
                .with_context(|| format!("an API of the target has no name: {api}"))?
                .to_string();
            if id.contains(";rev=") || api["properties"]["isCurrent"] == json!(false) {
                continue;
            }
            let api_path = api["properties"]["path"]
                .as_str()
                .with_context(|| format!("the API {id} of the target has no path"))?
                .to_string();
            let header = api["properties"]["subscriptionKeyParameterNames"]["header"]
                .as_str()
                .unwrap_or("Ocp-Apim-Subscription-Key")
                .to_string();
            let ops = self
                .target
                .list_all(&format!("/apis/{}/operations", path_segment(&id)))
                .await?;
            for op in ops {
                let p = &op["properties"];
                let template = p["urlTemplate"].as_str().unwrap_or("/");
                if p["method"].as_str() != Some("GET") || template.contains('{') {
                    continue;
                }
                if budget == 0 {
                    break;
                }
                budget -= 1;
                let path = format!(
                    "/{}/{}",
                    api_path.trim_matches('/'),
                    template.trim_start_matches('/')
                )
                .replace("//", "/");
                let fetch = |base: String| {
                    let mut req = self.http.get(format!("{base}{path}"));
                    if let Some(k) = &key {
                        req = req.header(&header, k);
                    }
                    async move {
                        let r = req.send().await?;
                        let status = r.status().as_u16();
                        let body = r.bytes().await?;
                        Ok::<_, reqwest::Error>((status, hex::encode(Sha256::digest(&body))))
                    }
                };
                sent += 1;
                let t = match fetch(tgt.gateway_url.clone()).await {
                    Ok(t) => t,
                    Err(e) => {
                        problems.push(format!("GET {path} through the target failed: {e}"));
                        continue;
                    }
                };
                if t.0 >= 500 {
                    problems.push(format!("GET {path} through the target answered {}", t.0));
                    continue;
                }
                if let Some(sg) = &source_gateway {
                    sent += 1;
                    if let Ok(s) = fetch(sg.clone()).await {
                        if s.0 != t.0 {
                            problems.push(format!(
                                "GET {path}: the source answered {}, the target {}",
                                s.0, t.0
                            ));
                        } else if self.state.options.shadow && s.1 != t.1 {
                            problems.push(format!(
                                "GET {path}: the source and the target answered different bodies"
                            ));
                        }
                    }
                }
            }
        }
        self.state.smoke_requests += sent;
        Ok((sent, problems))
    }

    async fn take_name(&mut self) -> Result<Value> {
        let src = self
            .state
            .source
            .clone()
            .ok_or_else(|| anyhow!("preflight has not recorded the source"))?;
        let own = Self::info(&self.target).await?.hostnames;
        let mut hostnames = src.hostnames.clone();
        for h in own {
            let name = h["hostName"].as_str().ok_or_else(|| {
                anyhow!("the target's hostnameConfigurations has an entry without hostName")
            })?;
            if !hostnames.iter().any(|x| {
                x["hostName"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            }) {
                hostnames.push(h);
            }
        }
        self.target.adopt_identity(&src.name, &hostnames).await?;
        Ok(json!({"name": src.name}))
    }

    async fn cutover(&mut self) -> Result<Value> {
        let mut detail = json!({});
        if !self.state.options.delete_source_first && !self.state.handed_over {
            self.ensure_frozen_and_caught_up().await?;
            let target_url = self
                .state
                .target
                .as_ref()
                .map(|t| t.management_url.clone())
                .ok_or_else(|| anyhow!("preflight has not recorded the target"))?;
            self.source()?
                .freeze(&json!({"reason": "moved", "movedTo": target_url}))
                .await?;
            self.state.handed_over = true;
            self.save()?;
        }
        let Some((authority, record, new)) = self.cutover_record()? else {
            let gw = self
                .state
                .target
                .as_ref()
                .map(|t| t.gateway_url.clone())
                .unwrap_or_default();
            self.note(format!(
                "no custom domain to switch: clients must now use the target's gateway, {gw}"
            ));
            return Ok(json!({"dns": "none", "targetGateway": gw}));
        };
        let old_ttl = self.state.dns_before.as_ref().map_or(0, |b| b.ttl);
        let ttl = if old_ttl > 0 { old_ttl } else { 300 };
        match &self.state.options.dns {
            DnsMode::Rfc2136 { .. } => {
                let current = authority.query(&record, new.record_type()).await?;
                let changed = authority
                    .replace(&record, current.as_ref(), &new, ttl)
                    .await?;
                if changed || self.state.dns_changed_at_ms.is_none() {
                    self.state.dns_changed_at_ms.get_or_insert(now_ms());
                    self.save()?;
                }
                authority
                    .wait_for(
                        &record,
                        &new,
                        Duration::from_millis(self.state.options.dns_wait_ms),
                    )
                    .await?;
                self.note(format!(
                    "DNS: {record} {} {} at {}",
                    new.type_name(),
                    new.text(),
                    authority.server
                ));
            }
            DnsMode::Manual { .. } => {
                self.note(format!(
                    "Change this record at your DNS provider now:  {record}. {ttl} IN {} {}  (waiting until {} answers it)",
                    new.type_name(),
                    new.text(),
                    authority.server
                ));
                authority
                    .wait_for(
                        &record,
                        &new,
                        Duration::from_millis(self.state.options.dns_wait_ms),
                    )
                    .await?;
                self.state.dns_changed_at_ms.get_or_insert(now_ms());
                self.save()?;
            }
            DnsMode::None => {}
        }
        // Resolvers may serve the old answer until its TTL runs out.
        let changed_at = self.state.dns_changed_at_ms.unwrap_or_else(now_ms);
        let until = changed_at + old_ttl as i64 * 1000 + 500;
        let wait = (until - now_ms()).max(0) as u64;
        if wait > 0 {
            self.note(format!(
                "waiting {:.1} s for the old TTL to run out",
                wait as f64 / 1000.0
            ));
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        self.state.step_mut("cutover").waited_ms = wait;
        if let Some(deleted) = self.state.source_deleted_at_ms {
            self.state.downtime_ms = (now_ms() - deleted).max(0) as u64;
        }
        detail["record"] = json!(record);
        detail["value"] = json!(new);
        detail["ttlWaitMs"] = json!(wait);
        if self.state.options.delete_source_first {
            // Nothing was served by the target before now; what it serves next is after the move.
            self.state.target_traffic_end = Some(Self::traffic(&self.target).await?);
        }
        Ok(detail)
    }

    async fn drain(&mut self) -> Result<Value> {
        let source = self.source()?.clone();
        source.drain(true).await?;
        let started = Instant::now();
        let quiet = self.state.options.quiet();
        let limit = self.state.options.max_drain();
        let mut last_count = None;
        let mut quiet_since = Instant::now();
        loop {
            let count = source.traffic().await?.requests;
            if last_count != Some(count) {
                last_count = Some(count);
                quiet_since = Instant::now();
            }
            if quiet_since.elapsed() >= quiet {
                break;
            }
            if started.elapsed() >= limit {
                self.note(format!(
                    "the source still served requests after {} s; the drain ends at its limit",
                    limit.as_secs()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.state.source_traffic_end = Some(Self::traffic(&source).await?);
        Ok(json!({"quietAfterMs": started.elapsed().as_millis() as u64}))
    }

    async fn cleanup(&mut self) -> Result<Value> {
        let mut detail = json!({});
        if let Some(source) = &self.source {
            if let Ok(j) = source
                .get(&format!(
                    "/journal?since={}&$top=1",
                    self.state.applied_through
                ))
                .await
            {
                let lost = j["count"].as_u64().unwrap_or(0);
                detail["changesLost"] = json!(lost);
            }
            if self.state.source_traffic_end.is_none() {
                self.state.source_traffic_end = Self::traffic(source).await.ok();
            }
        }
        self.state.target_traffic_end = Some(Self::traffic(&self.target).await?);
        if self.state.options.keep_source {
            self.note("the source stays as a read-only standby (--keep-source)");
            detail["source"] = json!("standby");
            return Ok(detail);
        }
        self.retire_source().await?;
        self.source = None;
        if let Some(dir) = self.state.options.source.data_dir() {
            // The instance removes endpoints.json when it has stopped.
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut waits = gatehouse_client::polling(Duration::from_millis(200));
            while dir.join(gatehouse_model::files::ENDPOINTS).exists() && Instant::now() < deadline
            {
                tokio::time::sleep(waits.next().unwrap_or(Duration::from_millis(200))).await;
            }
            if dir.exists() {
                std::fs::remove_dir_all(dir)
                    .with_context(|| format!("cannot remove {}", dir.display()))?;
            }
            detail["removed"] = json!(dir.display().to_string());
        }
        detail["source"] = json!("deleted");
        Ok(detail)
    }
}

/// The differences between two digests, per type. `lenient(kind)` says whether to skip the
/// count and the hash comparison of a type.
fn compare_digests(
    source: &Digest,
    target: &Digest,
    lenient: impl Fn(&str) -> (bool, bool),
) -> Vec<String> {
    let (skinds, tkinds) = (&source.kinds, &target.kinds);
    let kinds: std::collections::BTreeSet<&String> = skinds.keys().chain(tkinds.keys()).collect();
    let mut problems = Vec::new();
    for kind in kinds {
        let (skip_count, skip_hash) = lenient(kind);
        let count = |m: &std::collections::BTreeMap<String, KindDigest>| {
            m.get(kind.as_str()).map_or(0, |d| d.count)
        };
        let hash = |m: &std::collections::BTreeMap<String, KindDigest>| {
            m.get(kind.as_str()).map(|d| d.hash.clone())
        };
        let (sc, tc) = (count(skinds), count(tkinds));
        if sc != tc && !skip_count {
            problems.push(format!("{kind}: {sc} on the source, {tc} on the target"));
        } else if hash(skinds) != hash(tkinds) && !skip_hash {
            problems.push(format!("{kind}: the contents differ"));
        }
    }
    problems
}

/// The gateway host names (type Proxy) of an instance, leaving out `except`.
fn proxy_hostnames(hostnames: &[Value], except: Option<&str>) -> Vec<String> {
    hostnames
        .iter()
        .filter(|h| h["type"].as_str().unwrap_or("Proxy") == "Proxy")
        .filter_map(|h| h["hostName"].as_str())
        .filter(|n| except.is_none_or(|e| !n.eq_ignore_ascii_case(e)))
        .map(str::to_string)
        .collect()
}

fn gateway_ipv4(url: &str) -> Option<std::net::Ipv4Addr> {
    let rest = url.split("://").nth(1)?;
    let host = rest.split(['/', ':']).next()?;
    host.parse().ok()
}

/// The digest's type name for a collection segment (`namedValues` → `namedValue`).
fn kind_of_collection(segment: &str) -> &str {
    match segment {
        "apis" => "api",
        "backends" => "backend",
        "namedValues" => "namedValue",
        "certificates" => "certificate",
        other => other,
    }
}

/// A random archive passphrase for a move whose operator gave none, kept beside the move file.
pub fn new_key_file(state_path: &Path) -> Result<PathBuf> {
    let path = state_path.with_extension("key");
    let key = format!(
        "move-{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            rand::random::<[u8; 24]>()
        )
    );
    state::write_private(&path, key.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(kinds: &[(&str, u64, &str)]) -> Digest {
        Digest {
            revision: 1,
            total: kinds.iter().map(|k| k.1).sum(),
            kinds: kinds
                .iter()
                .map(|(k, count, hash)| {
                    (
                        k.to_string(),
                        KindDigest {
                            count: *count,
                            hash: hash.to_string(),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn digests_compare_by_count_then_contents() {
        let source = digest(&[("api", 2, "a"), ("backend", 1, "b")]);
        assert!(compare_digests(&source, &source, |_| (false, false)).is_empty());
        let fewer = digest(&[("api", 1, "a"), ("backend", 1, "b")]);
        assert_eq!(
            compare_digests(&source, &fewer, |_| (false, false)),
            vec!["api: 2 on the source, 1 on the target"]
        );
        let changed = digest(&[("api", 2, "a"), ("backend", 1, "x")]);
        assert_eq!(
            compare_digests(&source, &changed, |_| (false, false)),
            vec!["backend: the contents differ"]
        );
        // What the overlay changes is compared leniently.
        assert!(compare_digests(&source, &changed, |k| (false, k == "backend")).is_empty());
        let missing = digest(&[("api", 2, "a")]);
        assert_eq!(
            compare_digests(&source, &missing, |_| (false, false)).len(),
            1
        );
    }

    #[test]
    fn gateway_host_names_and_addresses() {
        let hostnames = vec![
            json!({"type": "Proxy", "hostName": "api.contoso.com"}),
            json!({"type": "Management", "hostName": "mgmt.contoso.com"}),
            json!({"hostName": "old.contoso.com"}),
        ];
        assert_eq!(
            proxy_hostnames(&hostnames, Some("OLD.contoso.com")),
            vec!["api.contoso.com"]
        );
        assert_eq!(
            gateway_ipv4("http://127.0.0.3:8000/"),
            Some("127.0.0.3".parse().unwrap())
        );
        assert_eq!(gateway_ipv4("https://gw.example.com"), None);
        assert_eq!(kind_of_collection("namedValues"), "namedValue");
        assert_eq!(kind_of_collection("products"), "products");
    }
}
