//! Gatehouse's management REST API: APIM's resource model over the store.
//!
//! Invariants: every write is one store transaction (see `rules`); secrets leave only through
//! the `listSecrets`/`listValue` actions; every error leaves as the ARM envelope (`error`).
//! This crate knows nothing of the gateway's internals.

pub mod access;
pub mod arm;
pub mod catalog;
pub mod certs;
pub mod error;
pub mod export;
pub mod folder;
pub mod freeze;
pub mod gateway_link;
pub mod gateway_nodes;
pub mod gateway_tokens;
pub mod handlers;
pub mod keyvault;
pub mod long_running;
pub mod moving;
pub mod openapi;
pub mod openapi_schemas;
pub mod operations;
pub mod portal_content;
pub mod provider;
pub mod render;
pub mod reports;
mod respond;
pub mod retention;
pub mod rules;
pub mod secret_source;
pub mod service;
pub mod specs;
mod state;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

pub use error::ApiError;
pub use service::{Bootstrap, bootstrap};
pub use state::{AppState, DeleteHook, MetricsRenderer, StatusView, TrafficControl, Urls};

/// One log line per request: its id, method, path, status, duration — never headers or
/// bodies. The id (a UUID, also answered as `x-ms-request-id`, as ARM does) is what an internal
/// error's message names, so that its details can be found in the log.
async fn access_log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let id = uuid::Uuid::new_v4().to_string();
    let mut resp = error::REQUEST_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-ms-request-id", v);
    }
    tracing::info!(
        target: "gatehouse::management",
        request_id = %id,
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
