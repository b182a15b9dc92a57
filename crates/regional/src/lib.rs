//! `gatehouse gateway`: a self-hosted gateway that runs only the gateway (the same code as
//! `gatehouse serve`), configured from a primary instance over one stream, serving from its own
//! copy of the configuration — also when the primary is gone, also across its own restart —
//! and reporting its state to the primary every few seconds.
//!
//! Modules, bottom up: `replica` (the local copy in the data directory), `link` (the stream and
//! heartbeats over HTTP), `follow` (the loop that ties them and reconnects).
//!
//! Invariants: the gateway serves only once it has a configuration (its copy, or the first
//! snapshot); `endpoints.json` is written only after the listener is bound; the data
//! directory is locked for the process's life.

pub mod follow;
pub mod link;
pub mod metrics;
pub mod replica;

use anyhow::{Context, Result};
use follow::{Follower, NodeState};
use gatehouse_gateway::{Gateway, GatewayConfig};
use gatehouse_store::{DataDirLock, Store};
use link::Link;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Usage rows per report to the primary (a row is about 300 bytes of JSON).
const USAGE_ROWS_PER_REPORT: usize = 5_000;

/// How often a node reports to its primary (also at once after each revision it applies).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Everything `gatehouse gateway` needs.
#[derive(Debug, Clone)]
pub struct RegionalConfig {
    /// The primary's management base URL.
    pub primary: String,
    pub gateway_id: String,
    /// Holds the `value` `generateToken` answered; rotated tokens are written back to it.
    pub token_file: PathBuf,
    pub data_dir: PathBuf,
    pub gateway_listen: SocketAddr,
    pub region: Option<String>,
    /// Extra trusted roots (PEM) for a primary whose certificate a private CA issued.
    pub primary_ca: Option<PathBuf>,
    /// Where `GET /metrics` (Prometheus, no token) is served; `None`: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    pub gateway: GatewayConfig,
}

impl RegionalConfig {
    /// A configuration for tests: loopback, port 0.
    pub fn ephemeral(primary: &str, gateway_id: &str, token_file: &Path, data_dir: &Path) -> Self {
        RegionalConfig {
            primary: primary.to_string(),
            gateway_id: gateway_id.to_string(),
            token_file: token_file.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            gateway_listen: "127.0.0.1:0".parse().expect("valid"),
            region: None,
            primary_ca: None,
            metrics_listen: None,
            gateway: GatewayConfig::default(),
        }
    }
}

/// A running self-hosted gateway.
pub struct RegionalGateway {
    pub gateway_url: String,
    /// Where the metrics are served, with `--metrics-listen`.
    pub metrics_url: Option<String>,
    pub gateway: Gateway,
    pub store: Arc<Store>,
    pub state: watch::Receiver<NodeState>,
    data_dir: PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _lock: DataDirLock,
}

/// The node's id, kept in its data directory so that it stays the same across restarts.
fn node_id(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let id = uuid::Uuid::new_v4().to_string();
    gatehouse_store::write_private_file(&path, format!("{id}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

impl RegionalGateway {
    /// Opens the copy, starts following the primary, and serves once a configuration is there.
    pub async fn start(config: RegionalConfig) -> Result<RegionalGateway> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let lock = DataDirLock::acquire(&data_dir, "gatehouse gateway")?;
        follow::read_token(&config.token_file, &config.gateway_id).map_err(anyhow::Error::msg)?;
        let store = {
            let dir = data_dir.clone();
            Arc::new(
                tokio::task::spawn_blocking(move || {
                    let store = Store::open_dir(&dir)?;
                    store.drop_lookup_indexes()?;
                    Ok::<_, gatehouse_store::StoreError>(store)
                })
                .await?
                .with_context(|| {
                    format!("cannot open the gateway's copy in {}", data_dir.display())
                })?,
            )
        };
        let ca = match &config.primary_ca {
            Some(p) => {
                Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)
            }
            None => None,
        };
        let primary = replica::effective_primary(&store, &config.primary)?;
        if primary != config.primary {
            tracing::info!(configured = %config.primary, following = %primary, "following the instance a move handed over to");
        }
        let link = Link::new(&primary, ca.as_deref())?;
        let revision = replica::primary_revision(&store)?;
        let (state_tx, state) = watch::channel(NodeState {
            revision,
            ..Default::default()
        });
        let (stop, stop_rx) = watch::channel(false);
        let follower = Follower {
            store: store.clone(),
            link: link.clone(),
            token_file: config.token_file.clone(),
            gateway_id: config.gateway_id.clone(),
            state: state_tx,
        };
        let mut tasks = vec![tokio::spawn(follower.run(stop_rx.clone()))];
        if revision == 0 {
            first_configuration(state.clone()).await?;
        } else {
            tracing::info!(
                revision,
                "serving the local copy of the configuration while the primary is reached"
            );
        }
        let listener = TcpListener::bind(config.gateway_listen)
            .await
            .with_context(|| format!("cannot listen on {} (gateway)", config.gateway_listen))?;
        let scheme = if config.gateway.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let gateway_url = format!("{scheme}://{}", listener.local_addr()?);
        let mut gw_config = config.gateway.clone();
        gw_config.serves_gateway = Some(config.gateway_id.clone());
        gw_config.region = config.region.clone();
        let gateway = Gateway::start(store.clone(), listener, gw_config).await?;
        tasks.push(tokio::spawn(mirror_refusal(
            state.clone(),
            gateway.shared.clone(),
            stop_rx.clone(),
        )));
        let reporter = Reporter {
            shared: gateway.shared.clone(),
            link,
            token_file: config.token_file.clone(),
            gateway_id: config.gateway_id.clone(),
            node: node_id(&data_dir)?,
            region: config.region.clone(),
            address: gateway_url.clone(),
        };
        tasks.push(tokio::spawn(reporter.run(
            store.clone(),
            state.clone(),
            stop_rx,
        )));
        let metrics_url = match config.metrics_listen {
            Some(addr) => {
                let region = config
                    .region
                    .clone()
                    .unwrap_or_else(|| config.gateway_id.clone());
                let (url, task) = serve_metrics(
                    addr,
                    gateway.shared.clone(),
                    state.clone(),
                    region,
                    stop.subscribe(),
                )
                .await?;
                tasks.push(task);
                Some(url)
            }
            None => None,
        };
        write_endpoints(&config, &store, &gateway_url, metrics_url.clone())?;
        tracing::info!(gateway = %gateway_url, primary = %config.primary, id = %config.gateway_id, "self-hosted gateway started");
        Ok(RegionalGateway {
            gateway_url,
            metrics_url,
            gateway,
            store,
            state,
            data_dir,
            stop,
            tasks,
            _lock: lock,
        })
    }

    /// Stops following, drains requests in flight, removes `endpoints.json`.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.gateway.shutdown().await;
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        let _ = std::fs::remove_file(self.data_dir.join(gatehouse_model::files::ENDPOINTS));
    }
}

/// Serves `GET /metrics` on `addr` until `stop`.
async fn serve_metrics(
    addr: SocketAddr,
    shared: Arc<gatehouse_gateway::Shared>,
    state: watch::Receiver<NodeState>,
    region: String,
    stop: watch::Receiver<bool>,
) -> Result<(String, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (metrics)"))?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let render = move || {
        let text = shared.render_metrics() + &metrics::link_state(&state.borrow());
        metrics::with_region(&text, &region)
    };
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = render();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    body,
                )
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = gatehouse_listen::serve_router(
            listener,
            app,
            gatehouse_listen::Limits::MANAGEMENT,
            None,
            "metrics",
            stop,
        )
        .await
        {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok((url, task))
}

/// Waits for the first snapshot; a refused token with no copy to serve ends the start.
async fn first_configuration(mut state: watch::Receiver<NodeState>) -> Result<()> {
    tracing::info!("no local copy yet: waiting for the primary's configuration");
    let s = state
        .wait_for(|s| s.revision > 0 || s.refused.is_some())
        .await
        .context("the follower stopped")?
        .clone();
    match s.refused {
        Some(why) if s.revision == 0 => {
            anyhow::bail!("the primary refused the gateway token: {why}")
        }
        _ => Ok(()),
    }
}

/// The gateway answers 503 while its token is refused, and serves again once it is not.
async fn mirror_refusal(
    mut state: watch::Receiver<NodeState>,
    shared: Arc<gatehouse_gateway::Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let refused = state.borrow_and_update().refused.clone();
        shared.refuse(refused);
        tokio::select! {
            r = state.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

fn write_endpoints(
    config: &RegionalConfig,
    store: &Store,
    gateway_url: &str,
    metrics: Option<String>,
) -> Result<()> {
    let name = store
        .read(|r| r.service())
        .ok()
        .flatten()
        .map(|s| s.name)
        .unwrap_or_default();
    let endpoints = gatehouse_client::Endpoints {
        portal: None,
        management: config.primary.clone(),
        gateway: gateway_url.to_string(),
        management_certificate: None,
        metrics,
        name,
        region: config.region.clone().unwrap_or_default(),
        pid: std::process::id(),
    };
    let text = serde_json::to_string_pretty(&endpoints)?;
    gatehouse_store::write_private_file(
        &config.data_dir.join(gatehouse_model::files::ENDPOINTS),
        text.as_bytes(),
    )
    .context("cannot write endpoints.json")
}

/// Sends heartbeats: every [`HEARTBEAT_EVERY`] and after each change of the node's state.
struct Reporter {
    shared: Arc<gatehouse_gateway::Shared>,
    link: Link,
    token_file: PathBuf,
    gateway_id: String,
    node: String,
    region: Option<String>,
    address: String,
}

impl Reporter {
    async fn run(
        self,
        store: Arc<Store>,
        mut state: watch::Receiver<NodeState>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let now = state.borrow_and_update().clone();
            self.report(&now).await;
            self.ship_usage(&store).await;
            tokio::select! {
                _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
                r = state.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
        }
    }

    /// Sends the usage the gateway counted since the last time; kept for the next time when
    /// the primary cannot take it.
    async fn ship_usage(&self, store: &Arc<Store>) {
        let Ok(token) = follow::read_token(&self.token_file, &self.gateway_id) else {
            return;
        };
        let s = store.clone();
        let rows = match tokio::task::spawn_blocking(move || s.take_usage()).await {
            Ok(Ok(rows)) if !rows.is_empty() => rows,
            _ => return,
        };
        // In parts that stay well inside the primary's request size limit.
        for (i, part) in rows.chunks(USAGE_ROWS_PER_REPORT).enumerate() {
            if let Err(e) = self.link.usage(&token, part).await {
                let unsent = rows[i * USAGE_ROWS_PER_REPORT..].to_vec();
                tracing::debug!(error = %e, rows = unsent.len(), "usage not delivered; kept for the next report");
                let s = store.clone();
                let _ = tokio::task::spawn_blocking(move || s.add_usage(&unsent)).await;
                return;
            }
        }
    }

    async fn report(&self, now: &NodeState) {
        let Ok(token) = follow::read_token(&self.token_file, &self.gateway_id) else {
            return;
        };
        let beat = json!({
            "node": self.node,
            "region": self.region,
            "version": env!("CARGO_PKG_VERSION"),
            "address": self.address,
            "revision": now.revision,
            "state": if now.refused.is_some() { "refusing" } else { "serving" },
            "failures": self.shared.policy_failures(),
        });
        if let Err(e) = self.link.heartbeat(&token, &beat).await {
            tracing::debug!(error = %e, "heartbeat not delivered");
        }
    }
}
