//! The state every worker holds: the routing table, the backend client, the settings, logs
//! and counters, the policies' caches and limits.

use crate::config::GatewayConfig;
use crate::table::RoutingTable;
use crate::telemetry::{AccessLog, Stats, Traffic};
use crate::{policies, proxy, request};
use arc_swap::ArcSwap;
use gatehouse_store::Store;
use std::sync::Arc;
use tokio::sync::watch;

/// State shared by every request.
pub struct Shared {
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// Whether the table has WebSocket APIs: read for every request head, so kept beside the
    /// table rather than behind it (set with each table, by `set_table`).
    pub(crate) websocket_apis: std::sync::atomic::AtomicBool,
    pub backend: proxy::Backend,
    pub config: GatewayConfig,
    pub access_log: AccessLog,
    pub stats: Stats,
    pub traffic: Traffic,
    /// Rate-limit and quota counters (per gateway, as APIM counts per regional gateway).
    pub counters: policies::Counters,
    pub jwks: Arc<policies::JwksCache>,
    pub cache: policies::PolicyCache,
    pub concurrency: policies::Concurrency,
    /// The client of send-request and send-one-way-request.
    pub outbound: reqwest::Client,
    pub store: Arc<Store>,
    pub(crate) request_ids: RequestIds,
    /// Set when the gateway must not serve (a self-hosted gateway whose token its primary
    /// refused): every request is answered 503 with this reason rather than from a
    /// configuration that may be stale.
    pub(crate) refusal: Refusal,
    /// Where requests to the developer portal's host names go (`GatewayConfig::portal`).
    pub(crate) portal_route: Option<Arc<crate::table::ApiRoute>>,
    /// authentication-managed-identity's token source and its cached tokens.
    pub(crate) identity: policies::Identity,
    /// emit-metric's series.
    pub(crate) custom_metrics: policies::CustomMetrics,
    /// log-to-eventhub's sinks.
    pub(crate) log_sinks: policies::LogSinks,
    /// Pools' turns and backends' circuit breakers.
    pub(crate) backend_health: policies::BackendHealth,
}

/// Whether the gateway refuses traffic, and why; read per request through one atomic load.
#[derive(Default)]
pub(crate) struct Refusal {
    on: std::sync::atomic::AtomicBool,
    reason: std::sync::Mutex<String>,
}

impl Refusal {
    pub(crate) fn reason(&self) -> Option<String> {
        if !self.on.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        Some(
            self.reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Request ids without a system call per request: a random prefix per process start and a
/// counter, in UUID form.
pub(crate) struct RequestIds {
    prefix: u64,
    counter: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Refuses every request with 503 and `reason` from now on (`None`: serve again).
    pub fn refuse(&self, reason: Option<String>) {
        let on = reason.is_some();
        *self
            .refusal
            .reason
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = reason.unwrap_or_default();
        self.refusal
            .on
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The policies of the table being served that did not compile: `{resourceId, error,
    /// serving}` (`previous`: the scope runs its last good document; `none`: its requests get
    /// 500 `PolicyNotCompiled`).
    pub fn policy_failures(&self) -> Vec<serde_json::Value> {
        let table = self.table.load();
        table
            .policies
            .failures
            .iter()
            .map(|(path, (error, kept))| {
                serde_json::json!({
                    "resourceId": path,
                    "error": error,
                    "serving": if *kept { "previous" } else { "none" },
                })
            })
            .collect()
    }

    /// Whether the gateway refuses traffic (see [`Shared::refuse`]).
    pub fn refusing(&self) -> bool {
        self.refusal.reason().is_some()
    }

    /// Serves `table` from now on.
    pub(crate) fn set_table(&self, table: RoutingTable) {
        self.websocket_apis.store(
            table.has_websocket_apis(),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.table.store(Arc::new(table));
    }

    pub fn next_request_id(&self) -> request::RequestId {
        let n = self
            .request_ids
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
        uuid::Uuid::from_u64_pair(self.request_ids.prefix, n)
            .hyphenated()
            .encode_lower(&mut text);
        request::RequestId::Made(text)
    }

    /// Seconds since the Unix epoch.
    pub fn clock_secs(&self) -> i64 {
        self.clock_ms() / 1000
    }

    /// Milliseconds since the Unix epoch.
    pub fn clock_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    /// Prometheus text for this gateway.
    pub fn render_metrics(&self) -> String {
        let mut out = self.stats.render();
        self.custom_metrics.render(&mut out);
        if let Some(on) = self.counters.sharing() {
            out.push_str("# HELP gatehouse_gateway_counters_shared Whether rate limits are counted with the other gateways through Redis now (0: this gateway counts alone).\n# TYPE gatehouse_gateway_counters_shared gauge\n");
            out.push_str(&format!(
                "gatehouse_gateway_counters_shared {}\n",
                u8::from(on)
            ));
        }
        out
    }

    /// Turns drain mode on or off and reports the traffic (see [`Traffic`]).
    pub fn drain(&self, on: Option<bool>) -> serde_json::Value {
        if let Some(on) = on {
            self.traffic.set_draining(on);
        }
        self.traffic.render()
    }
}

impl RequestIds {
    pub(crate) fn new() -> RequestIds {
        RequestIds {
            prefix: uuid::Uuid::new_v4().as_u64_pair().0,
            counter: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// Resolves when `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
