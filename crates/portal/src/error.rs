//! What can go wrong answering a portal request, and the status each one is.
//!
//! Invariant: a message shown to the visitor never holds a secret or another user's data; an
//! internal error's details go to the log, the page only says that something failed.

use axum::http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("The page you asked for does not exist.")]
    NotFound,
    #[error("Sign in to see this page.")]
    SignInRequired,
    #[error("You are not allowed to see this page.")]
    Forbidden,
    /// What the visitor sent is wrong; the message says what and where.
    #[error("{0}")]
    Invalid(String),
    #[error("This form has expired. Go back, reload the page and try again.")]
    Csrf,
    #[error("Too many failed sign-in attempts. Try again in {0} minutes.")]
    TooManyAttempts(u64),
    #[error(
        "The service is being moved or updated; changes are paused for a moment. Try again shortly."
    )]
    Frozen,
    #[error("Something went wrong on our side; the administrators can find it in the log as {0}.")]
    Internal(String),
}

impl PortalError {
    pub fn status(&self) -> StatusCode {
        match self {
            PortalError::NotFound => StatusCode::NOT_FOUND,
            PortalError::SignInRequired => StatusCode::UNAUTHORIZED,
            PortalError::Forbidden | PortalError::Csrf => StatusCode::FORBIDDEN,
            PortalError::Invalid(_) => StatusCode::BAD_REQUEST,
            PortalError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            PortalError::Frozen => StatusCode::SERVICE_UNAVAILABLE,
            PortalError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// An internal failure: logged with an id, which the page shows.
    pub fn internal(what: impl std::fmt::Display) -> PortalError {
        let id = uuid::Uuid::new_v4().to_string();
        tracing::error!(target: "gatehouse::portal", error_id = %id, error = %what, "portal request failed");
        PortalError::Internal(id)
    }
}

impl From<gatehouse_store::StoreError> for PortalError {
    fn from(e: gatehouse_store::StoreError) -> Self {
        match e {
            gatehouse_store::StoreError::Fenced(_) => PortalError::Frozen,
            e => PortalError::internal(e),
        }
    }
}

impl From<gatehouse_management::rules::RuleError> for PortalError {
    fn from(e: gatehouse_management::rules::RuleError) -> Self {
        use gatehouse_management::rules::RuleError;
        match e {
            RuleError::Invalid(fields) => PortalError::Invalid(
                fields
                    .iter()
                    .map(|f| f.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            RuleError::NotFound(_) => PortalError::NotFound,
            RuleError::Internal(m) => PortalError::internal(m),
            RuleError::Refused(e) => e.into(),
            other => PortalError::Invalid(other.to_string()),
        }
    }
}

impl From<gatehouse_model::PathError> for PortalError {
    fn from(_: gatehouse_model::PathError) -> Self {
        PortalError::NotFound
    }
}
