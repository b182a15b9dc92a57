//! One running instance wired together: the store, the management listener, the gateway listener,
//! `endpoints.json` and `admin-token`. Tests start it in-process on port 0.
//!
//! Invariant: `endpoints.json` is written only after both listeners are bound, so whoever reads
//! it can connect at once; the admin token file is mode 0600.

use anyhow::{Context, Result};
use gatehouse_gateway::{Gateway, GatewayConfig};
use gatehouse_management::{AppState, Bootstrap, Urls};
use gatehouse_store::{DataDirLock, Store, write_private_file};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Everything `gatehouse serve` needs, after flags, environment and `gatehouse.toml` are merged.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    /// The shared store (`postgres://…`, several nodes on one instance); `None`: the embedded
    /// SQLite store in `data_dir`. Never logged with its password.
    pub store_url: Option<String>,
    /// How long `serve` waits for an unreachable shared store before giving up.
    pub store_wait: std::time::Duration,
    pub bootstrap: Bootstrap,
    pub management_listen: SocketAddr,
    pub gateway_listen: SocketAddr,
    /// The developer portal's listener (`None`: no portal).
    pub portal_listen: Option<SocketAddr>,
    /// The portal's public URL, for the links in its emails (default: its listener's URL).
    pub portal_url: Option<String>,
    /// The SMTP server the portal sends email through (`smtp://…`, `smtps://…`).
    pub smtp_url: Option<String>,
    /// The portal's email sender (default: the service's publisher email).
    pub smtp_from: Option<String>,
    /// From `GATEHOUSE_ADMIN_TOKEN`; otherwise the token in `admin-token` (created if absent).
    pub admin_token: Option<String>,
    pub gateway: GatewayConfig,
    /// The key archives are encrypted with when a request gives none (a passphrase or an age
    /// secret key).
    pub backup_key: Option<String>,
    /// The subscription and resource group ARM-prefixed paths must name (default: any).
    pub arm_scope: gatehouse_management::arm::ArmScope,
    /// Where secret-store (Key Vault) named values are read from, and how often.
    pub secret_source: Option<gatehouse_management::secret_source::SecretSource>,
    pub secret_refresh: std::time::Duration,
    /// How long journal entries are kept at least (longer while a gateway needs them).
    pub journal_retention: std::time::Duration,
    /// Storage accounts requests can name as `storageAccount`.
    pub storage_accounts:
        std::collections::HashMap<String, gatehouse_management::operations::StorageAccount>,
    /// The region of S3 storage accounts (`AWS_REGION`).
    pub s3_region: Option<String>,
    /// The management listener's limits (the gateway's are in `gateway`).
    pub management_limits: gatehouse_listen::Limits,
    /// HTTPS for the management API: its certificate and key, reloaded when they change.
    pub management_tls: Option<gatehouse_listen::tls::PemFiles>,
    /// Serve the management API in plain HTTP on an address other than loopback (its requests
    /// carry the token and secrets: only behind a TLS proxy or on a trusted network).
    pub insecure_management: bool,
    /// Continuous archiving (`--archive`): where, with which key, how often.
    pub archive: Option<ArchiveSettings>,
}

/// `--archive URL --archive-key-file F`: the journal shipped to object storage.
#[derive(Clone, Debug)]
pub struct ArchiveSettings {
    pub archive: gatehouse_archiver::Archive,
    pub key: Arc<gatehouse_backup::BackupKey>,
    /// A segment is closed at most this long after its first change.
    pub segment_after: std::time::Duration,
    /// When full base archives are taken (besides the first and one after each restore).
    pub base_every: Option<gatehouse_archiver::BaseSchedule>,
    /// Which bases retention keeps (`--keep-last`, `--keep-hourly`, …).
    pub keep: gatehouse_archiver::retention::Keep,
}

impl ServeConfig {
    /// A configuration for tests: loopback, port 0.
    pub fn ephemeral(data_dir: &Path) -> Self {
        ServeConfig {
            data_dir: data_dir.to_path_buf(),
            store_url: None,
            store_wait: DEFAULT_STORE_WAIT,
            bootstrap: Bootstrap::default(),
            management_listen: "127.0.0.1:0".parse().expect("valid"),
            gateway_listen: "127.0.0.1:0".parse().expect("valid"),
            portal_listen: Some("127.0.0.1:0".parse().expect("valid")),
            portal_url: None,
            smtp_url: None,
            smtp_from: None,
            admin_token: None,
            gateway: GatewayConfig::default(),
            backup_key: None,
            storage_accounts: Default::default(),
            arm_scope: Default::default(),
            secret_source: None,
            secret_refresh: std::time::Duration::from_secs(4 * 3600),
            journal_retention: DEFAULT_JOURNAL_RETENTION,
            s3_region: None,
            management_limits: gatehouse_listen::Limits::MANAGEMENT,
            management_tls: None,
            insecure_management: false,
            archive: None,
        }
    }
}

/// How long `serve` waits for a shared store that does not answer: a PostgreSQL restarted
/// with the nodes, or failing over, comes back well within it.
pub const DEFAULT_STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Journal entries are kept a week by default: long enough for a move, a gateway offline over
/// a weekend, and `gatehouse journal` audits of recent changes.
pub const DEFAULT_JOURNAL_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);

/// Refuses a management API in plain HTTP on an address other than loopback: every request
/// carries the token, and `listSecrets`, backups and restores carry keys.
fn check_management_exposure(config: &ServeConfig) -> Result<()> {
    let addr = config.management_listen;
    if config.management_tls.is_none() && !addr.ip().is_loopback() && !config.insecure_management {
        anyhow::bail!(
            "refusing to serve the management API on {addr} without TLS: its requests carry the admin token and secrets; give --management-tls-cert and --management-tls-key, or --insecure-management if a TLS proxy or a private network protects it"
        );
    }
    Ok(())
}

pub use gatehouse_client::Endpoints;

pub struct Instance {
    pub management_url: String,
    pub gateway_url: String,
    /// The developer portal's URL, when it is served.
    pub portal_url: Option<String>,
    pub token: String,
    pub data_dir: PathBuf,
    pub store: Arc<Store>,
    pub gateway: Gateway,
    shutdown: watch::Sender<bool>,
    deleted: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    /// Held while the instance runs: no other process serves, backs up or restores its data
    /// directory meanwhile.
    _lock: DataDirLock,
}

/// The marker a deleted instance leaves in its data directory; `serve` refuses to start there.
pub use gatehouse_model::files::DELETED_MARKER;

fn new_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    // A letter first, so the token is never mistaken for a flag on a command line.
    format!(
        "gh{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

fn load_or_create_token(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(gatehouse_model::files::ADMIN_TOKEN);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        Ok(_) | Err(_) => {
            let token = new_token();
            write_private_file(&path, format!("{token}\n").as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(token)
        }
    }
}

fn base_url(scheme: &str, addr: SocketAddr) -> String {
    format!("{scheme}://{addr}")
}

/// The management API's TLS acceptor, its certificate watched until `stop`.
fn management_acceptor(
    files: &gatehouse_listen::tls::PemFiles,
    stop: watch::Receiver<bool>,
) -> Result<tokio_rustls::TlsAcceptor> {
    let tls = gatehouse_listen::tls::Reloading::load(files.clone(), "management API")?;
    let acceptor = tls.acceptor(&[b"h2", b"http/1.1"])?;
    tls.watch(std::time::Duration::from_secs(1), stop);
    Ok(acceptor)
}

/// The node's store: the embedded one in the data directory, or the shared one, waited for
/// (saying so) while it does not answer.
/// On a shared store: stops this node when another node deletes the service (checked every
/// second; the mark is what stops any node from starting on it again).
async fn follow_deletion(store: Arc<Store>, deleted: watch::Sender<bool>) {
    let mut checks = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        checks.tick().await;
        if *deleted.borrow() {
            return;
        }
        let store = store.clone();
        if let Ok(Ok(Some(note))) = tokio::task::spawn_blocking(move || store.deleted()).await {
            tracing::warn!(note = %note, "the service was deleted through another node: this node stops serving it");
            let _ = deleted.send(true);
            return;
        }
    }
}

async fn open_store(config: &ServeConfig) -> Result<Store> {
    let dir = config.data_dir.clone();
    let url = config.store_url.clone();
    let wait = config.store_wait;
    let opened = tokio::task::spawn_blocking(move || {
        Store::open_for_node(&dir, url.as_deref(), wait, |line| tracing::warn!("{line}"))
    })
    .await?;
    match &config.store_url {
        None => opened
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display())),
        Some(url) => opened.with_context(|| {
            format!(
                "cannot open the store at {}",
                gatehouse_store::pg::redact_url(url)
            )
        }),
    }
}

impl Instance {
    /// Opens the store, bootstraps the service, binds both listeners and starts serving.
    pub async fn start(config: ServeConfig) -> Result<Instance> {
        check_management_exposure(&config)?;
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let lock = DataDirLock::acquire(&data_dir, "gatehouse serve")?;
        let marker = data_dir.join(DELETED_MARKER);
        if let Ok(text) = std::fs::read_to_string(&marker) {
            anyhow::bail!(
                "the service in {} was deleted ({}); remove {} to start it again",
                data_dir.display(),
                text.trim(),
                marker.display()
            );
        }
        let store = open_store(&config).await?;
        let store = Arc::new(store);
        let settings = {
            let store = store.clone();
            let b = config.bootstrap.clone();
            tokio::task::spawn_blocking(move || gatehouse_management::bootstrap(&store, &b))
                .await?
                .map_err(|e| anyhow::anyhow!("{}", e.internal.clone().unwrap_or(e.message)))?
        };
        let token = match &config.admin_token {
            Some(t) => t.clone(),
            None => load_or_create_token(&data_dir)?,
        };
        let mgmt_listener = TcpListener::bind(config.management_listen)
            .await
            .with_context(|| {
                format!("cannot listen on {} (management)", config.management_listen)
            })?;
        let gw_listener = TcpListener::bind(config.gateway_listen)
            .await
            .with_context(|| format!("cannot listen on {} (gateway)", config.gateway_listen))?;
        let portal_listener = match config.portal_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (developer portal)"))?,
            ),
            None => None,
        };
        let (tx, rx) = watch::channel(false);
        let management_tls = match &config.management_tls {
            Some(files) => Some(management_acceptor(files, rx.clone())?),
            None => None,
        };
        let scheme = |tls: bool| if tls { "https" } else { "http" };
        let management_url = base_url(
            scheme(management_tls.is_some()),
            mgmt_listener.local_addr()?,
        );
        let gateway_url = base_url(
            scheme(config.gateway.tls.is_some()),
            gw_listener.local_addr()?,
        );
        let mut gateway_config = config.gateway.clone();
        if let Some(listener) = &portal_listener {
            // Requests to the service's DeveloperPortal host names reach the portal through
            // the gateway's listener too.
            gateway_config.portal = Some(base_url("http", listener.local_addr()?));
        }
        let gateway = Gateway::start(store.clone(), gw_listener, gateway_config).await?;
        let gateway_shared = gateway.shared.clone();
        let traffic_shared = gateway.shared.clone();
        let (deleted_tx, deleted) = watch::channel(false);
        let deletion_seen = deleted_tx.clone();
        let delete_marker = marker.clone();
        let deleted_store = store.clone();
        let archive_status = config
            .archive
            .as_ref()
            .map(|_| Arc::new(gatehouse_archiver::ArchiveStatus::default()));
        let archive_view = archive_status.clone();
        let archive_metrics = archive_status.clone();
        let state = Arc::new(AppState {
            store: store.clone(),
            token: token.clone(),
            urls: RwLock::new(Urls {
                management: management_url.clone(),
                gateway: gateway_url.clone(),
            }),
            metrics: Some(Arc::new(move || {
                let mut text = gateway_shared.render_metrics();
                if let Some(a) = &archive_metrics {
                    text.push_str(&a.metrics());
                }
                text
            })),
            archive_status: archive_view
                .map(|a| Arc::new(move || a.render()) as gatehouse_management::StatusView),
            operations: gatehouse_management::operations::Operations::new(
                config.backup_key.clone(),
                config.storage_accounts.clone(),
            )
            .with_s3_region(config.s3_region.clone())
            .with_key_file(config.data_dir.join(gatehouse_model::files::BACKUP_KEY)),
            freeze: Default::default(),
            downloads: Default::default(),
            arm_scope: config.arm_scope.clone(),
            secret_source: config.secret_source.clone(),
            gateway_nodes: Default::default(),
            stopping: rx.clone(),
            traffic: Some(Arc::new(move |on| traffic_shared.drain(on))),
            delete: Some(Arc::new(move || {
                let note = format!(
                    "deleted through the management API at {}",
                    time::OffsetDateTime::now_utc()
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default()
                );
                if let Err(e) = write_private_file(&delete_marker, note.as_bytes()) {
                    tracing::error!(error = %e, "cannot write the deleted marker");
                }
                // A shared store is marked too: no node starts on it again.
                if deleted_store.db_path().is_none()
                    && let Err(e) = deleted_store.set_meta(gatehouse_store::DELETED_META, &note)
                {
                    tracing::error!(error = %e, "cannot mark the shared store deleted");
                }
                let _ = deleted_tx.send(true);
            })),
        });
        {
            // A deleted instance stops serving at once, whoever hosts it.
            let (management_stop, gateway_stop) = (tx.clone(), gateway.stopper());
            let mut deleted = deleted.clone();
            let endpoints = data_dir.join(gatehouse_model::files::ENDPOINTS);
            tokio::spawn(async move {
                if deleted.wait_for(|d| *d).await.is_ok() {
                    let _ = management_stop.send(true);
                    let _ = gateway_stop.send(true);
                    let _ = std::fs::remove_file(endpoints);
                }
            });
        }
        if store.is_shared() {
            tokio::spawn(follow_deletion(store.clone(), deletion_seen));
        }
        if let (Some(settings), Some(status)) = (&config.archive, archive_status) {
            let shipper = gatehouse_archiver::ShipperConfig {
                archive: settings.archive.clone(),
                key: settings.key.clone(),
                segment_after: settings.segment_after,
                max_segment_entries: 10_000,
                queue_dir: config.data_dir.join("archive-queue"),
                max_queued: 100_000,
                base_every: settings.base_every.clone(),
                keep: settings.keep,
                node: state.operations.node.clone(),
            };
            tokio::spawn(gatehouse_archiver::ship_forever(
                store.clone(),
                shipper,
                status,
                rx.clone(),
            ));
        }
        if state.secret_source.is_some() {
            // Secret-store named values: read at start, then on APIM's schedule. Stopped with
            // the runtime (the task holds nothing that must be finished).
            let refresher = gatehouse_management::keyvault::refresh_forever(
                state.clone(),
                config.secret_refresh,
            );
            let mut stop = deleted.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = refresher => {}
                    _ = stop.wait_for(|d| *d) => {}
                }
            });
        }
        tokio::spawn(gatehouse_management::retention::retain_forever(
            state.clone(),
            config.journal_retention,
        ));
        let mut tasks = Vec::new();
        let portal_url = match portal_listener {
            Some(listener) => {
                let url = base_url("http", listener.local_addr()?);
                let key = gatehouse_portal::PortalKey::load_or_create(&data_dir)
                    .context("cannot read or write the portal's key (portal.key)")?;
                let mailer =
                    match &config.smtp_url {
                        Some(smtp) => {
                            let from = config
                                .smtp_from
                                .clone()
                                .unwrap_or_else(|| settings.publisher_email.clone());
                            Some(gatehouse_portal::Mailer::new(smtp, &from).map_err(|e| {
                                anyhow::anyhow!("cannot send the portal's email: {e}")
                            })?)
                        }
                        None => None,
                    };
                let options = gatehouse_portal::PortalOptions {
                    mailer,
                    public_url: config.portal_url.clone().unwrap_or_else(|| url.clone()),
                    https: config
                        .portal_url
                        .as_deref()
                        .is_some_and(|u| u.starts_with("https://")),
                };
                let portal = gatehouse_portal::PortalState::new(state.clone(), key, options);
                tasks.push(tokio::spawn(gatehouse_listen::serve_router(
                    listener,
                    gatehouse_portal::router(portal),
                    gatehouse_listen::Limits::MANAGEMENT,
                    None,
                    "developer portal",
                    rx.clone(),
                )));
                Some(url)
            }
            None => None,
        };
        tasks.push(tokio::spawn(gatehouse_listen::serve_router(
            mgmt_listener,
            gatehouse_management::router(state),
            config.management_limits,
            management_tls,
            "management API",
            rx,
        )));
        let endpoints = Endpoints {
            management: management_url.clone(),
            gateway: gateway_url.clone(),
            management_certificate: config
                .management_tls
                .as_ref()
                .map(|f| std::path::absolute(&f.cert))
                .transpose()?,
            metrics: None,
            portal: portal_url.clone(),
            name: settings.name.clone(),
            region: settings.location.clone(),
            pid: std::process::id(),
        };
        let text = serde_json::to_string_pretty(&endpoints)?;
        write_private_file(
            &data_dir.join(gatehouse_model::files::ENDPOINTS),
            text.as_bytes(),
        )
        .context("cannot write endpoints.json")?;
        tracing::info!(
            name = %settings.name,
            region = %settings.location,
            sku = %settings.sku.name,
            management = %management_url,
            gateway = %gateway_url,
            portal = %portal_url.as_deref().unwrap_or("off"),
            data_dir = %data_dir.display(),
            "instance started"
        );
        Ok(Instance {
            management_url,
            gateway_url,
            portal_url,
            token,
            data_dir,
            store,
            gateway,
            shutdown: tx,
            deleted,
            tasks,
            _lock: lock,
        })
    }

    /// Resolves once the service was deleted through its API (`DELETE /`).
    pub async fn deleted(&self) {
        let mut d = self.deleted.clone();
        let _ = d.wait_for(|v| *v).await;
    }

    /// Stops accepting connections, lets requests in flight finish, and waits for the listeners.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        self.gateway.shutdown().await;
        for t in self.tasks {
            t.await??;
        }
        let _ = std::fs::remove_file(self.data_dir.join(gatehouse_model::files::ENDPOINTS));
        Ok(())
    }
}
