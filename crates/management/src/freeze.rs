//! A write freeze: while an instance is being moved, its management API refuses writes with
//! 409 `ServiceIsBeingMoved`, saying why and until when. Reads, secret listings and the
//! freeze itself stay available. The freeze lifts itself at its deadline (so a move that dies
//! never leaves the source frozen for good) or when `DELETE /freeze` is called.

use crate::error::ApiError;
use axum::http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Mutex;
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct Freeze {
    /// `None` for a standby that has handed over to another instance: frozen until deleted.
    pub until: Option<OffsetDateTime>,
    pub reason: String,
    /// The management URL of the instance that took over, once a move has handed over.
    pub moved_to: Option<String>,
}

#[derive(Default)]
pub struct FreezeState {
    current: Mutex<Option<Freeze>>,
    /// Woken when the freeze starts or lifts (gateway streams watch for a hand-over).
    pub changed: tokio::sync::Notify,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FreezeRequest {
    /// How long writes are refused, in seconds (at most one hour). Without it (only with
    /// `movedTo`) the instance stays a read-only standby until it is deleted or unfrozen.
    #[serde(default)]
    seconds: Option<u64>,
    reason: String,
    #[serde(default)]
    moved_to: Option<String>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl FreezeState {
    /// The freeze in force, if any (an expired one is dropped).
    pub fn current(&self) -> Option<Freeze> {
        let mut g = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if g.as_ref()
            .is_some_and(|f| f.until.is_some_and(|u| u <= OffsetDateTime::now_utc()))
        {
            *g = None;
        }
        g.clone()
    }

    pub fn render(&self) -> Value {
        match self.current() {
            Some(f) => json!({
                "frozen": true,
                "until": f.until.map(rfc3339),
                "reason": f.reason,
                "movedTo": f.moved_to,
            }),
            None => json!({"frozen": false}),
        }
    }

    /// `POST /freeze` with `{"seconds", "reason"}`.
    pub fn start(&self, body: &[u8]) -> Result<Value, ApiError> {
        let req: FreezeRequest = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the freeze needs {{\"seconds\": N, \"reason\": \"…\"}}: {e}"
            ))
        })?;
        let until = match (req.seconds, &req.moved_to) {
            (Some(s), _) if (1..=3600).contains(&s) => {
                Some(OffsetDateTime::now_utc() + time::Duration::seconds(s as i64))
            }
            (None, Some(_)) => None,
            _ => {
                return Err(ApiError::invalid(
                    "seconds",
                    "'seconds' must be from 1 to 3600 (it may be left out only with 'movedTo')",
                ));
            }
        };
        if req.reason.trim().is_empty() {
            return Err(ApiError::invalid(
                "reason",
                "'reason' must say why writes are refused",
            ));
        }
        let f = Freeze {
            until,
            reason: req.reason,
            moved_to: req.moved_to,
        };
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
        self.changed.notify_waiters();
        Ok(self.render())
    }

    pub fn lift(&self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.changed.notify_waiters();
    }

    /// The management URL of the instance this one handed over to, once a move has.
    pub fn moved_to(&self) -> Option<String> {
        self.current().and_then(|f| f.moved_to)
    }

    /// Refuses a write while frozen. `action` is the last path segment of a POST (reading
    /// actions such as `listSecrets` stay allowed).
    pub fn check(&self, method: &Method, action: Option<&str>) -> Result<(), ApiError> {
        let writes = match *method {
            Method::PUT | Method::PATCH | Method::DELETE => true,
            Method::POST => !action.is_some_and(|a| {
                let a = a.to_ascii_lowercase();
                matches!(
                    a.as_str(),
                    "listsecrets" | "listvalue" | "listkeys" | "generatetoken" | "backup"
                )
            }),
            _ => false,
        };
        if !writes {
            return Ok(());
        }
        match self.current() {
            None => Ok(()),
            Some(f) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "ServiceIsBeingMoved",
                match (&f.moved_to, f.until) {
                    (Some(to), _) => format!(
                        "The service has moved to {to} ({}); this instance is a read-only standby. Send changes to {to}.",
                        f.reason
                    ),
                    (None, Some(until)) => format!(
                        "The service is being moved ({}); changes are refused until {}. Retry after that time.",
                        f.reason,
                        rfc3339(until)
                    ),
                    (None, None) => format!("The service is being moved ({}).", f.reason),
                },
            )),
        }
    }
}
