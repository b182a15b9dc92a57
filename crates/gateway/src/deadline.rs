//! A timer for deadlines that recur on one connection (the header read timeout between
//! requests, a backend's response timeout per exchange).
//!
//! Why: arming a fresh tokio timer per request registers and removes a wheel entry each time
//! (under callgrind about 700 instructions per proxied request). A [`Deadline`] keeps one
//! timer armed and moves it only when it fires before the deadline being waited for, or when
//! a shorter deadline is asked for — so with a constant timeout it is re-armed about once per
//! timeout period, not once per request.

use std::pin::Pin;
use tokio::time::{Instant, Sleep};

#[derive(Default)]
pub(crate) struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    /// Resolves once `deadline` has passed.
    pub(crate) async fn until(&mut self, deadline: Instant) {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            sleep.as_mut().await;
            if Instant::now() >= deadline {
                return;
            }
            sleep.as_mut().reset(deadline);
        }
    }
}
