//! What every handler is given: the store, the token, the instance's URLs, and the hooks the
//! hosting process provides (metrics, the gateway's drain, deleting the instance).

use crate::{freeze, operations};
use gatehouse_store::Store;
use std::sync::{Arc, RwLock};

/// The base URLs the instance is reachable at (known once the listeners are bound).
#[derive(Debug, Clone, Default)]
pub struct Urls {
    pub management: String,
    pub gateway: String,
}

/// Renders Prometheus text for `GET /metrics`.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// Turns the gateway's drain mode on or off (`Some`) and reports its traffic as JSON.
pub type TrafficControl = Arc<dyn Fn(Option<bool>) -> serde_json::Value + Send + Sync>;

/// Reports how far continuous archiving has come (`continuousArchive` in `GET /`).
pub type StatusView = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Stops the hosting instance and marks it deleted.
pub type DeleteHook = Arc<dyn Fn() + Send + Sync>;

pub struct AppState {
    pub store: Arc<Store>,
    /// The admin bearer token.
    pub token: String,
    pub urls: RwLock<Urls>,
    /// Renders Prometheus metrics for `GET /metrics` (the gateway's, when one runs here).
    pub metrics: Option<MetricsRenderer>,
    /// Backups and restores in progress or done.
    pub operations: operations::Operations,
    /// A write freeze during a move.
    pub freeze: freeze::FreezeState,
    /// The gateway's drain mode and traffic counters, when a gateway runs here.
    pub traffic: Option<TrafficControl>,
    /// Called by `DELETE /`, when the host allows deleting the instance.
    pub delete: Option<DeleteHook>,
    /// Documents behind API export download links.
    pub downloads: crate::export::Downloads,
    /// The subscription and resource group the ARM-prefixed paths must name.
    pub arm_scope: crate::arm::ArmScope,
    /// Where secret-store named values are read from (`--secret-source`).
    pub secret_source: Option<crate::secret_source::SecretSource>,
    /// What the nodes of self-hosted gateways last reported.
    pub gateway_nodes: crate::gateway_nodes::Nodes,
    /// Continuous archiving's progress, when the instance runs with `--archive`.
    pub archive_status: Option<StatusView>,
    /// Turns `true` when the instance stops: long-lived answers (gateway streams) end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}
