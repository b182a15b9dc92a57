//! The counters of rate limits and quotas, and limit-concurrency's slots.

use super::compile::ById;
use gatehouse_policy::exec::{Counted, CounterKey};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Rate-limit and quota counters, by key; with Redis, also what other gateways counted.
#[derive(Default)]
pub struct Counters {
    windows: Mutex<Windows>,
    shared: Option<Arc<crate::counters::SharedCounts>>,
}

#[derive(Default)]
pub(super) struct Windows {
    /// Limits per subscription, by the policy's place (name, line, column), then by
    /// subscription: no key text to build per call, and configuration ids, which clients do
    /// not choose, hashed with foldhash.
    pub(super) per_subscription:
        HashMap<(&'static str, u32, u32), ById<Window>, foldhash::fast::RandomState>,
    /// Counters named by text, which clients can choose (by-key limits): SipHash, which
    /// chosen collisions do not slow down.
    pub(super) named: HashMap<String, Window>,
    /// When `named` holds this many, windows that count nothing any more are dropped (so keys
    /// clients make up cannot grow it without bound).
    pub(super) sweep_at: usize,
}

/// The fewest named windows at which a sweep runs.
pub(super) const SWEEP_FLOOR: usize = 4096;

pub(super) struct Window {
    pub(super) start: Instant,
    pub(super) count: u64,
    pub(super) previous: u64,
    pub(super) period: Duration,
}

impl Counters {
    /// Counters that add what other gateways counted (`--counters redis://…`).
    pub(crate) fn shared_with(shared: Arc<crate::counters::SharedCounts>) -> Counters {
        Counters {
            windows: Mutex::default(),
            shared: Some(shared),
        }
    }

    /// Whether counts are shared through Redis now (`None`: not configured).
    pub fn sharing(&self) -> Option<bool> {
        self.shared.as_ref().map(|s| s.is_shared())
    }

    /// The Redis key of this limit's window and its end, and what other gateways counted in it,
    /// when counts are shared (a limit without a period is not: it never renews).
    fn shared_window(
        &self,
        key: &CounterKey<'_>,
        period_secs: u64,
    ) -> Option<(&crate::counters::SharedCounts, String, u64, u64)> {
        let shared = self.shared.as_deref().filter(|_| period_secs > 0)?;
        let limit = match key {
            CounterKey::Subscription {
                subscription,
                policy,
                line,
                column,
            } => format!("{policy}:{line}:{column}:{subscription}"),
            CounterKey::Text(t) => format!("text:{t}"),
        };
        let (redis_key, end) = crate::counters::window_key(&limit, period_secs);
        let others = shared.others(&redis_key);
        Some((shared, redis_key, end, others))
    }

    /// Counts a call made at `now`.
    pub(super) fn count(
        &self,
        key: CounterKey<'_>,
        calls: u64,
        period_secs: u64,
        increment: u64,
        sliding: bool,
        now: Instant,
    ) -> Counted {
        let period = if period_secs == 0 {
            Duration::from_secs(u64::MAX / 4)
        } else {
            Duration::from_secs(period_secs)
        };
        let shared = self.shared_window(&key, period_secs);
        let others = shared.as_ref().map_or(0, |s| s.3);
        let count = |w: &mut Window| w.count(now, period, calls, increment, sliding, others);
        let counted = self.count_locally(key, now, count);
        if counted.allowed
            && let Some((counts, redis_key, end, _)) = shared
        {
            counts.add(redis_key, increment, end);
        }
        counted
    }

    fn count_locally(
        &self,
        key: CounterKey<'_>,
        now: Instant,
        count: impl FnOnce(&mut Window) -> Counted,
    ) -> Counted {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match key {
            CounterKey::Subscription {
                subscription,
                policy,
                line,
                column,
            } => {
                let policy = windows
                    .per_subscription
                    .entry((policy, line, column))
                    .or_default();
                count_in(policy, subscription, now, count)
            }
            CounterKey::Text(name) => {
                windows.sweep_if_due(now);
                count_in(&mut windows.named, name, now, count)
            }
        }
    }

    /// Named windows being kept (for tests and metrics).
    pub fn named_windows(&self) -> usize {
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .named
            .len()
    }
}

impl Windows {
    /// Drops the named windows that count nothing any more once there are `sweep_at` of them;
    /// the next sweep waits until twice as many remain, so sweeping costs O(1) per call.
    pub(super) fn sweep_if_due(&mut self, now: Instant) {
        if self.named.len() < self.sweep_at.max(SWEEP_FLOOR) {
            return;
        }
        self.named.retain(|_, w| !w.is_spent(now));
        self.sweep_at = (self.named.len() * 2).max(SWEEP_FLOOR);
    }
}

/// Counts in the window named `name`, a new one from `now` when there is none; looked up
/// before inserting, so that the name is copied only for a new window.
pub(super) fn count_in<S: std::hash::BuildHasher>(
    map: &mut HashMap<String, Window, S>,
    name: &str,
    now: Instant,
    count: impl FnOnce(&mut Window) -> Counted,
) -> Counted {
    if let Some(w) = map.get_mut(name) {
        return count(w);
    }
    count(map.entry(name.to_string()).or_insert(Window {
        start: now,
        count: 0,
        previous: 0,
        period: Duration::ZERO,
    }))
}

impl Window {
    /// Whether the window and the one before it are over: it counts nothing any more.
    pub(super) fn is_spent(&self, now: Instant) -> bool {
        now.duration_since(self.start) >= self.period.saturating_mul(2)
    }

    pub(super) fn count(
        &mut self,
        now: Instant,
        period: Duration,
        calls: u64,
        increment: u64,
        sliding: bool,
        others: u64,
    ) -> Counted {
        let w = self;
        w.period = period;
        let mut elapsed = now.duration_since(w.start);
        if elapsed >= period {
            let periods = (elapsed.as_secs_f64() / period.as_secs_f64()).floor() as u32;
            w.previous = if periods == 1 { w.count } else { 0 };
            w.count = 0;
            w.start += period * periods;
            elapsed = now.duration_since(w.start);
        }
        // A sliding window: the previous window's calls weigh by how much of it still overlaps.
        let weight = if sliding {
            1.0 - elapsed.as_secs_f64() / period.as_secs_f64()
        } else {
            0.0
        };
        let used = (w.count + others) as f64 + w.previous as f64 * weight;
        let retry_after = (period - elapsed).as_secs().max(1);
        if used + increment as f64 > calls as f64 {
            return Counted {
                allowed: false,
                remaining: 0,
                retry_after_secs: retry_after,
            };
        }
        w.count += increment;
        Counted {
            allowed: true,
            remaining: (calls as f64 - used - increment as f64).max(0.0) as u64,
            retry_after_secs: retry_after,
        }
    }
}

/// limit-concurrency's slots, by key; a slot is given back when its guard drops.
#[derive(Default)]
pub struct Concurrency {
    in_use: Mutex<HashMap<String, Arc<std::sync::atomic::AtomicU64>>>,
    /// When `in_use` holds this many keys, those no request holds are dropped (keys may come
    /// from clients), and the next sweep waits for twice as many.
    sweep_at: std::sync::atomic::AtomicUsize,
}

pub(super) struct Slot(Arc<std::sync::atomic::AtomicU64>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Concurrency {
    pub(super) fn acquire(&self, key: &str, max: u64) -> Option<Slot> {
        let counter = {
            let mut in_use = lock(&self.in_use);
            let sweep_at = self.sweep_at.load(std::sync::atomic::Ordering::Relaxed);
            if in_use.len() >= sweep_at.max(SWEEP_FLOOR) {
                in_use.retain(|_, c| Arc::strong_count(c) > 1);
                self.sweep_at.store(
                    (in_use.len() * 2).max(SWEEP_FLOOR),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            in_use.entry(key.to_string()).or_default().clone()
        };
        let mut current = counter.load(std::sync::atomic::Ordering::Acquire);
        loop {
            if current >= max {
                return None;
            }
            match counter.compare_exchange(
                current,
                current + 1,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            ) {
                Ok(_) => return Some(Slot(counter)),
                Err(now) => current = now,
            }
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys clients make up do not grow the counters without bound: spent windows are dropped.
    #[test]
    fn spent_named_windows_are_swept() {
        let counters = Counters::default();
        let start = Instant::now();
        for i in 0..50_000u64 {
            // A new key every call, each window 1 s long, a millisecond apart.
            let now = start + Duration::from_millis(i);
            counters.count(
                CounterKey::Text(&format!("client-{i}")),
                10,
                1,
                1,
                true,
                now,
            );
        }
        assert!(
            counters.named_windows() < 3 * SWEEP_FLOOR,
            "{} windows kept",
            counters.named_windows()
        );
    }

    #[test]
    fn concurrency_keys_nobody_holds_are_swept() {
        let slots = Concurrency::default();
        let held = slots.acquire("kept", 1).expect("a slot");
        for i in 0..50_000 {
            drop(slots.acquire(&format!("client-{i}"), 1));
        }
        let keys = lock(&slots.in_use).len();
        assert!(keys < 3 * SWEEP_FLOOR, "{keys} keys kept");
        assert!(
            slots.acquire("kept", 1).is_none(),
            "the held slot still counts"
        );
        drop(held);
        assert!(slots.acquire("kept", 1).is_some());
    }
}
