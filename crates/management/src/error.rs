//! The one mapping from errors to HTTP status and the ARM error envelope
//! `{"error": {"code", "message", "details": [{"code", "target", "message"}]}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gatehouse_model::{FieldError, PathError};
use gatehouse_store::StoreError;
use serde_json::json;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn not_found(display: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("{display} not found."),
        )
    }

    pub fn validation(details: Vec<FieldError>) -> Self {
        let message = match details.as_slice() {
            [one] => one.message.clone(),
            _ => "One or more fields contain incorrect values:".to_string(),
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "ValidationError",
            message,
            details,
        }
    }

    pub fn invalid(target: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(target, message)])
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message)
    }

    pub fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "The entity has been modified since it was read: the If-Match ETag does not match. Get the entity again and retry with its current ETag.",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        ApiError::internal(e.to_string())
    }
}

impl From<PathError> for ApiError {
    fn from(e: PathError) -> Self {
        match e {
            PathError::UnknownCollection(_) | PathError::NotAResource(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "ResourceNotFound", format!("{e}."))
            }
            PathError::InvalidId { .. } | PathError::Encoding(_) | PathError::DotSegment(_) => {
                ApiError::bad_request(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let details: Vec<_> = self
            .details
            .iter()
            .map(|d| json!({"code": "ValidationError", "target": d.target, "message": d.message}))
            .collect();
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "details": details,
            }
        });
        (self.status, axum::Json(body)).into_response()
    }
}
