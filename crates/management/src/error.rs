//! The one mapping from errors to HTTP status and the ARM error envelope
//! `{"error": {"code", "message", "details": [{"code", "target", "message"}]}}`.
//!
//! Invariant: what went wrong inside (store and SQL text, file paths, library errors) never
//! reaches a client: an internal error answers 500 with a generic message that carries the
//! request's id, and the details go to the log under that id.

use crate::rules::RuleError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gatehouse_model::{FieldError, PathError};
use gatehouse_store::StoreError;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
    /// For an internal error: what went wrong, for the log only.
    pub internal: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.internal {
            Some(detail) => write!(f, "{}: {detail}", self.code),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl std::error::Error for ApiError {}

tokio::task_local! {
    /// The id of the management request being served (set by the router's middleware).
    pub static REQUEST_ID: String;
}

/// The id of the request being served, if one is.
pub fn request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            internal: None,
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
            internal: None,
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

    /// An error inside the server: `detail` is logged with the request's id, never answered.
    pub fn internal(detail: impl Into<String>) -> Self {
        ApiError {
            internal: Some(detail.into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "The server could not complete the request.",
            )
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => ApiError {
                internal: Some(format!("store unavailable: {detail}")),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The configuration store cannot be reached at the moment, so the request was not confirmed. Try again.",
                )
            },
            // The only fence is a move's freeze (`freeze`), which words the message.
            StoreError::Fenced(fence) => {
                ApiError::new(StatusCode::CONFLICT, "ServiceIsBeingMoved", fence.message)
            }
            StoreError::Deleted(note) => ApiError::new(
                StatusCode::GONE,
                "ServiceDeleted",
                format!("The service was deleted ({note}); this node no longer takes changes."),
            ),
            e => ApiError::internal(format!("store failure: {e}")),
        }
    }
}

impl From<RuleError> for ApiError {
    fn from(e: RuleError) -> Self {
        match e {
            RuleError::NotFound(display) => ApiError::not_found(&display),
            RuleError::Invalid(details) => ApiError::validation(details),
            RuleError::Malformed(message) => ApiError::bad_request(message),
            RuleError::Path(e) => e.into(),
            RuleError::Conflict(message) => ApiError::conflict(message),
            RuleError::Stale => ApiError::precondition_failed(),
            RuleError::Internal(detail) => ApiError::internal(detail),
            RuleError::Unavailable(detail) => StoreError::Unavailable(detail).into(),
            RuleError::Refused(e) => e.into(),
        }
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
    fn into_response(mut self) -> Response {
        let unavailable = self.status == StatusCode::SERVICE_UNAVAILABLE;
        if let Some(detail) = &self.internal {
            let id = request_id().unwrap_or_else(|| "-".into());
            if unavailable {
                tracing::warn!(request_id = %id, error = %detail, "the store is unavailable");
            } else {
                tracing::error!(request_id = %id, error = %detail, "internal error");
                self.message = format!(
                    "The server could not complete the request; its log has the details under request id {id}."
                );
            }
        }
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
        let mut response = (self.status, axum::Json(body)).into_response();
        if unavailable {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_details_stay_in_the_log() {
        let secret_detail = "no such table: resources (/var/lib/gatehouse/gatehouse.db)";
        let response = REQUEST_ID
            .scope("req-123".into(), async {
                ApiError::from(StoreError::Corrupt(secret_detail.into())).into_response()
            })
            .await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("gatehouse.db") && !text.contains("no such table"),
            "{text}"
        );
        assert!(text.contains("req-123"), "{text}");
    }

    #[test]
    fn each_rule_error_has_one_status_and_code() {
        let cases = [
            (
                RuleError::not_found("Api"),
                404,
                "ResourceNotFound",
                "Api not found.",
            ),
            (
                RuleError::invalid("path", "too long"),
                400,
                "ValidationError",
                "too long",
            ),
            (
                RuleError::malformed("bad revision"),
                400,
                "ValidationError",
                "bad revision",
            ),
            (RuleError::conflict("in use"), 409, "Conflict", "in use"),
            (RuleError::Stale, 412, "PreconditionFailed", ""),
            (RuleError::Internal("disk".into()), 500, "InternalError", ""),
        ];
        for (rule, status, code, message) in cases {
            let api = ApiError::from(rule);
            assert_eq!((api.status.as_u16(), api.code), (status, code));
            assert!(api.message.starts_with(message), "{}", api.message);
        }
        let stored = ApiError::from(RuleError::Internal("disk".into()));
        assert_eq!(
            stored.internal.as_deref(),
            Some("disk"),
            "logged, not answered"
        );
    }
}
