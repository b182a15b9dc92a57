//! Rate-limit and quota counts shared between gateways through Redis (`--counters
//! redis://HOST`). Each gateway counts locally as always and, every [`SYNC_EVERY`], adds what it
//! counted to one Redis counter per limit and wall-clock window (`INCRBY`, expiring after two
//! windows) and reads back the totals: what the other gateways counted is added to its own
//! count when it decides. So a limit holds across gateways to within what they count in one
//! sync interval, and the request path never waits for Redis.
//!
//! Invariants: while Redis cannot be reached, each gateway counts alone (it says so once in
//! the log and in `gatehouse_gateway_counters_shared 0`); what it counted meanwhile is not
//! replayed later (the windows have moved on); keys are Redis keys of their own
//! (`gatehouse:count:…`), never names a client chooses unhashed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often counts are exchanged with Redis.
pub(crate) const SYNC_EVERY: Duration = Duration::from_millis(100);

#[derive(Default)]
struct State {
    /// Counted here and not yet sent: by Redis key, (calls, the window's end in Unix seconds).
    pending: HashMap<String, (u64, u64)>,
    /// By Redis key: (what this gateway sent, what the others counted, the window's end).
    known: HashMap<String, (u64, u64, u64)>,
}

/// The counts of this gateway and of the others, for limits shared through Redis.
#[derive(Default)]
pub(crate) struct SharedCounts {
    state: Mutex<State>,
    /// Whether the last exchange with Redis worked.
    connected: AtomicBool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The Redis key of a limit's current window, and when that window ends. The limit's own key
/// is hashed, so whatever a client put in a counter key stays a fixed-size Redis key.
pub(crate) fn window_key(limit: &str, period_secs: u64) -> (String, u64) {
    use sha2::Digest;
    let period = period_secs.max(1);
    let window = unix_now() / period;
    // Every gateway, of any version, must name a limit alike: a fixed hash, not std's.
    let digest = hex::encode(&sha2::Sha256::digest(limit.as_bytes())[..12]);
    (
        format!("gatehouse:count:{digest}:{period}:{window}"),
        (window + 1) * period,
    )
}

impl SharedCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the other gateways counted in this window of a limit (0 while Redis is away).
    pub(crate) fn others(&self, key: &str) -> u64 {
        if !self.connected.load(Ordering::Relaxed) {
            return 0;
        }
        self.lock().known.get(key).map_or(0, |k| k.1)
    }

    /// Records calls counted here, for the next exchange.
    pub(crate) fn add(&self, key: String, calls: u64, window_end: u64) {
        let mut s = self.lock();
        let e = s.pending.entry(key).or_insert((0, window_end));
        e.0 += calls;
    }

    /// Whether the counts are shared now (for metrics).
    pub(crate) fn is_shared(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Exchanges counts with Redis every [`SYNC_EVERY`] until `stop` turns true.
    pub(crate) async fn sync_forever(
        self: std::sync::Arc<Self>,
        url: String,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let client = match redis::Client::open(url.as_str()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the counters' Redis URL is not valid; rate limits count per gateway");
                return;
            }
        };
        let mut connection = None;
        let mut tick = tokio::time::interval(SYNC_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if connection.is_none() {
                connection = client.get_multiplexed_async_connection().await.ok();
            }
            let outcome = match connection.as_mut() {
                Some(c) => self.exchange(c).await,
                None => Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "cannot connect",
                ))),
            };
            if outcome.is_err() {
                connection = None;
            }
            self.note(outcome);
        }
    }

    /// Says when sharing starts or stops working (once per change, not per attempt).
    fn note(&self, outcome: redis::RedisResult<()>) {
        let was = self.connected.swap(outcome.is_ok(), Ordering::Relaxed);
        match outcome {
            Ok(()) if !was => tracing::info!("rate-limit counters are shared through Redis"),
            Err(e) if was || self.lock().known.is_empty() => {
                self.lock().pending.clear();
                tracing::warn!(error = %e, "Redis is unreachable: rate limits count per gateway until it is back");
            }
            Err(_) => {
                self.lock().pending.clear();
            }
            Ok(()) => {}
        }
    }

    async fn exchange(&self, c: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<()> {
        let now = unix_now();
        let (pending, keys) = {
            let mut s = self.lock();
            s.known.retain(|_, k| k.2 > now);
            let pending: Vec<(String, u64, u64)> =
                s.pending.drain().map(|(k, (n, end))| (k, n, end)).collect();
            let keys: Vec<String> = s.known.keys().cloned().collect();
            (pending, keys)
        };
        let mut pipe = redis::pipe();
        for (key, n, end) in &pending {
            let ttl = end.saturating_sub(now).max(1) * 2;
            pipe.cmd("INCRBY").arg(key).arg(*n);
            pipe.cmd("EXPIRE").arg(key).arg(ttl).ignore();
        }
        for key in &keys {
            pipe.cmd("GET").arg(key);
        }
        let totals: Vec<Option<u64>> = pipe.query_async(c).await?;
        let mut s = self.lock();
        let (sent, read) = totals.split_at(pending.len().min(totals.len()));
        for ((key, n, end), total) in pending.into_iter().zip(sent) {
            let k = s.known.entry(key).or_insert((0, 0, end));
            k.0 += n;
            k.1 = total.unwrap_or(0).saturating_sub(k.0);
        }
        for (key, total) in keys.iter().zip(read) {
            if let Some(k) = s.known.get_mut(key) {
                k.1 = total.unwrap_or(0).saturating_sub(k.0);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keys_are_fixed_size_and_per_window() {
        let (a, end) = window_key("rate-limit:1:2:sub1", 60);
        let (b, _) = window_key(&"x".repeat(10_000), 60);
        assert!(a.starts_with("gatehouse:count:") && b.len() < 64, "{b}");
        assert!(end > unix_now() && end <= unix_now() + 60);
        assert_ne!(a, window_key("rate-limit:1:2:sub2", 60).0);
    }

    #[test]
    fn others_count_only_while_connected() {
        let counts = SharedCounts::default();
        counts.lock().known.insert("k".into(), (3, 7, u64::MAX));
        assert_eq!(counts.others("k"), 0, "not connected yet");
        counts.connected.store(true, Ordering::Relaxed);
        assert_eq!(counts.others("k"), 7);
    }
}
