//! A write fence: every write refused, on every node of the store, until a time or until the
//! fence is lifted (a move's freeze is one).
//!
//! Invariant: the fence is read inside each write transaction after the write lock is taken,
//! and set under that lock, so a write either commits before the fence is set or is refused —
//! none slips in after a reader of the fence saw it set.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The meta key the fence is kept under.
pub(crate) const WRITE_FENCE: &str = "write_fence";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteFence {
    /// Unix seconds from which writes are accepted again; `None`: until lifted.
    pub until: Option<i64>,
    /// What a refused write is told.
    pub message: String,
    /// Whatever the one who set the fence wants its readers to see.
    #[serde(default)]
    pub context: Value,
}

impl WriteFence {
    /// Whether the fence still refuses writes at `now` (Unix seconds).
    pub fn holds_at(&self, now: i64) -> bool {
        self.until.is_none_or(|until| until > now)
    }

    /// The fence stored as `text`, if it still holds (an unreadable one holds, forever: a
    /// write must not pass because a value could not be parsed).
    pub(crate) fn parse_holding(text: &str) -> Option<WriteFence> {
        let fence = serde_json::from_str(text).unwrap_or_else(|_| WriteFence {
            until: None,
            message: format!("writes are refused: the store's write fence is unreadable ({text})"),
            context: Value::Null,
        });
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        fence.holds_at(now).then_some(fence)
    }
}
