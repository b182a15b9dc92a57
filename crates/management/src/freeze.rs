//! A write freeze: while an instance is being moved, its management API refuses writes with
//! 409 `ServiceIsBeingMoved`, saying why and until when. Reads, secret listings and the
//! freeze itself stay available. The freeze lifts itself at its deadline (so a move that dies
//! never leaves the source frozen for good) or when `DELETE /freeze` is called.
//!
//! Invariant: the freeze is the store's write fence, so it holds on every node of a shared
//! store, and a write either committed before the freeze started or is refused.

use crate::error::ApiError;
use crate::respond::blocking;
use axum::http::Method;
use gatehouse_store::{Store, WriteFence};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
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
    /// Woken when this node starts or lifts the freeze (gateway streams watch for a
    /// hand-over; those on other nodes see it at their next check).
    pub changed: tokio::sync::Notify,
}

impl Freeze {
    /// The freeze a write fence stands for.
    pub fn of_fence(fence: &WriteFence) -> Freeze {
        let text = |key: &str| {
            fence
                .context
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Freeze {
            until: fence
                .until
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()),
            reason: text("reason").unwrap_or_default(),
            moved_to: text("movedTo"),
        }
    }

    fn to_fence(&self) -> WriteFence {
        WriteFence {
            until: self.until.map(OffsetDateTime::unix_timestamp),
            message: self.refusal_message(),
            context: json!({"reason": self.reason, "movedTo": self.moved_to}),
        }
    }

    fn refusal_message(&self) -> String {
        match (&self.moved_to, self.until) {
            (Some(to), _) => format!(
                "The service has moved to {to} ({}); this instance is a read-only standby. Send changes to {to}.",
                self.reason
            ),
            (None, Some(until)) => format!(
                "The service is being moved ({}); changes are refused until {}. Retry after that time.",
                self.reason,
                rfc3339(until)
            ),
            (None, None) => format!("The service is being moved ({}).", self.reason),
        }
    }

    fn render(freeze: Option<&Freeze>) -> Value {
        match freeze {
            Some(f) => json!({
                "frozen": true,
                "until": f.until.map(rfc3339),
                "reason": f.reason,
                "movedTo": f.moved_to,
            }),
            None => json!({"frozen": false}),
        }
    }
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
    /// The freeze in force, if any (an expired one is none).
    pub async fn current(&self, store: &Arc<Store>) -> Result<Option<Freeze>, ApiError> {
        let fence = blocking(store, |s| Ok(s.write_fence()?)).await?;
        Ok(fence.as_ref().map(Freeze::of_fence))
    }

    pub async fn render(&self, store: &Arc<Store>) -> Result<Value, ApiError> {
        Ok(Freeze::render(self.current(store).await?.as_ref()))
    }

    /// `POST /freeze` with `{"seconds", "reason"}`.
    pub async fn start(&self, store: &Arc<Store>, body: &[u8]) -> Result<Value, ApiError> {
        let freeze = parse_request(body)?;
        let fence = freeze.to_fence();
        blocking(store, move |s| Ok(s.set_write_fence(Some(&fence))?)).await?;
        self.changed.notify_waiters();
        Ok(Freeze::render(Some(&freeze)))
    }

    pub async fn lift(&self, store: &Arc<Store>) -> Result<(), ApiError> {
        blocking(store, |s| Ok(s.set_write_fence(None)?)).await?;
        self.changed.notify_waiters();
        Ok(())
    }

    /// The management URL of the instance this one handed over to, once a move has.
    pub async fn moved_to(&self, store: &Arc<Store>) -> Option<String> {
        self.current(store)
            .await
            .ok()
            .flatten()
            .and_then(|f| f.moved_to)
    }

    /// Refuses a write while frozen, before any work starts (the store refuses it again when
    /// it would commit). `action` is the last path segment of a POST (reading actions such as
    /// `listSecrets` stay allowed).
    pub async fn check(
        &self,
        store: &Arc<Store>,
        method: &Method,
        action: Option<&str>,
    ) -> Result<(), ApiError> {
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
        match self.current(store).await? {
            None => Ok(()),
            Some(f) => Err(gatehouse_store::StoreError::Fenced(f.to_fence()).into()),
        }
    }
}

/// The freeze a `POST /freeze` body asks for.
fn parse_request(body: &[u8]) -> Result<Freeze, ApiError> {
    let req: FreezeRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the freeze needs {{\"seconds\": N, \"reason\": \"…\"}}: {e}"
        ))
    })?;
    let until = match (req.seconds, &req.moved_to) {
        (Some(s), _) if (1..=3600).contains(&s) => {
            // Whole seconds: the fence keeps Unix seconds, and what this answer shows must be
            // what every later refusal says.
            let now = OffsetDateTime::now_utc().unix_timestamp();
            OffsetDateTime::from_unix_timestamp(now + s as i64).ok()
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
    Ok(Freeze {
        until,
        reason: req.reason,
        moved_to: req.moved_to,
    })
}
