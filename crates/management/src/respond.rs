//! The HTTP plumbing handlers share: store work off the async runtime, JSON responses with
//! ETags and the revision, JSON bodies, and the service resource as `GET /` answers it.

use crate::error::ApiError;
use crate::state::AppState;
use crate::{rules, service};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_store::Store;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Runs blocking store work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

pub(crate) fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

pub(crate) fn with_etag(mut resp: Response, revision: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&rules::etag(revision)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

pub(crate) fn with_revision(mut resp: Response, revision: u64) -> Response {
    resp.headers_mut()
        .insert("x-gatehouse-revision", HeaderValue::from(revision));
    resp
}

pub(crate) fn parse_json_body(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!("The request body is not valid JSON: {e}"),
        )
    })?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            format!(
                "The request body must be a JSON object, not {}",
                match other {
                    Value::Array(_) => "an array",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "null",
                }
            ),
        )),
    }
}

pub(crate) fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "The HTTP method is not supported on this resource.",
    )
}

pub(crate) async fn get_service(state: &Arc<AppState>) -> Result<Response, ApiError> {
    let (body, rev) = service_body_at(state).await?;
    Ok(with_etag(json_response(StatusCode::OK, body), rev))
}

pub(crate) async fn service_body(state: &Arc<AppState>) -> Result<Value, ApiError> {
    Ok(service_body_at(state).await?.0)
}

pub(crate) async fn service_body_at(state: &Arc<AppState>) -> Result<(Value, u64), ApiError> {
    let (s, rev) = blocking(&state.store, |s| {
        s.read(|r| -> Result<_, ApiError> {
            Ok((
                r.service()?
                    .ok_or_else(|| ApiError::internal("the service is not initialised"))?,
                r.revision(),
            ))
        })
    })
    .await?;
    let urls = state.urls.read().expect("urls lock").clone();
    let mut body = service::render_service(&s, rev, &urls.management, &urls.gateway);
    if let Some(archive) = &state.archive_status {
        body["properties"]["continuousArchive"] = archive();
    }
    Ok((body, rev))
}
