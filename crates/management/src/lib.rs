//! Gatehouse's management REST API: APIM's resource model over the store.
//!
//! Invariants: every write is one store transaction (see `rules`); secrets leave only through
//! the `listSecrets`/`listValue` actions; every error leaves as the ARM envelope (`error`).
//! This crate knows nothing of the gateway's internals.

pub mod access;
pub mod certs;
pub mod error;
pub mod freeze;
pub mod handlers;
pub mod moving;
pub mod openapi;
pub mod operations;
pub mod render;
pub mod reports;
pub mod rules;
pub mod service;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use gatehouse_store::Store;
use std::sync::{Arc, RwLock};
use std::time::Instant;

pub use error::ApiError;
pub use service::{Bootstrap, bootstrap};

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
}

/// One log line per request: method, path, status, duration. Never headers or bodies.
async fn access_log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        target: "gatehouse::management",
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        duration_ms = format!("{:.2}", started.elapsed().as_secs_f64() * 1000.0),
        "request"
    );
    resp
}

/// The management API router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .fallback(handlers::dispatch)
        .with_state(state)
        .layer(axum::middleware::from_fn(access_log))
}
