//! The limits of one listener and the connection slots that enforce `max_connections`.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request head must arrive within this (from the connection's start for the first one,
    /// from the end of the last response for the next ones); the connection is closed after.
    pub header_read_timeout: Duration,
    /// The largest request head accepted (431 beyond it).
    pub max_header_bytes: usize,
    /// Connections served at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
}

impl Limits {
    /// The gateway's defaults: 30 s for a head (nginx's `client_header_timeout` is 60 s,
    /// `client_body_timeout` 60 s), 64 KiB of head, 10,000 connections.
    pub const GATEWAY: Limits = Limits {
        header_read_timeout: Duration::from_secs(30),
        max_header_bytes: 64 * 1024,
        max_connections: 10_000,
    };

    /// The management API's defaults: the gateway's timeout and head size, and fewer
    /// connections (its clients are operators and their tools).
    pub const MANAGEMENT: Limits = Limits {
        max_connections: 512,
        ..Limits::GATEWAY
    };
}

/// Connection slots: one is taken per connection served and given back when it ends.
#[derive(Debug, Clone)]
pub struct ConnectionSlots {
    slots: Arc<Semaphore>,
    max: usize,
}

/// A taken connection slot, given back when dropped.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl ConnectionSlots {
    pub fn new(max: usize) -> ConnectionSlots {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionSlots {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A slot for a new connection, or `None` when `max` connections are being served.
    pub fn try_take(&self) -> Option<Slot> {
        self.slots.clone().try_acquire_owned().ok().map(Slot)
    }

    /// Connections being served now.
    pub fn in_use(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Resolves once every slot is back: no connection is being served.
    pub async fn all_returned(&self) {
        let max = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(max).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_and_come_back() {
        let slots = ConnectionSlots::new(2);
        let a = slots.try_take().expect("first");
        let _b = slots.try_take().expect("second");
        assert!(slots.try_take().is_none(), "only two");
        assert_eq!(slots.in_use(), 2);
        drop(a);
        assert!(slots.try_take().is_some(), "one came back");
    }
}
