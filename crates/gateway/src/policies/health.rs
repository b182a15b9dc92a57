//! Backend pools and circuit breakers, per gateway (as APIM keeps them per gateway instance):
//! which member of a pool takes a request — the first priority group with an available
//! member, round-robin by weight within it — and each backend's breaker, which opens when its
//! failures within the rule's interval reach the count (or percentage) and stays open for the
//! trip duration (or the backend's `Retry-After`, when the rule accepts it).
//!
//! Invariants: a request chooses in O(members); the failures kept per backend are bounded by
//! the window; a backend with no rule is never unavailable.

use gatehouse_model::backend::{CircuitBreaker, PoolMember};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Outcomes kept per backend at most (older ones are dropped first).
const MAX_OUTCOMES: usize = 10_000;

#[derive(Default)]
struct Breaker {
    /// (when, failed) of the requests within the rule's interval.
    outcomes: VecDeque<(Instant, bool)>,
    open_until: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct BackendHealth {
    breakers: Mutex<HashMap<String, Breaker>>,
    /// Requests each pool handed out, for round-robin.
    turns: Mutex<HashMap<String, u64>>,
}

impl BackendHealth {
    /// How long until `backend` may be called again; `None` when it may now.
    pub(crate) fn open_for(&self, backend: &str, now: Instant) -> Option<Duration> {
        let breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        breakers
            .get(backend)
            .and_then(|b| b.open_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// The pool member to call, or how long until one may be called.
    pub(crate) fn choose<'m>(
        &self,
        pool: &str,
        members: &'m [PoolMember],
        now: Instant,
    ) -> Result<&'m PoolMember, Duration> {
        let mut groups: Vec<u32> = members.iter().map(|m| m.priority).collect();
        groups.sort_unstable();
        groups.dedup();
        for priority in groups {
            let available: Vec<&PoolMember> = members
                .iter()
                .filter(|m| m.priority == priority && m.weight > 0)
                .filter(|m| self.open_for(&m.backend, now).is_none())
                .collect();
            if available.is_empty() {
                continue;
            }
            let total: u64 = available.iter().map(|m| u64::from(m.weight)).sum();
            let turn = {
                let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
                let t = turns.entry(pool.to_string()).or_default();
                *t = t.wrapping_add(1);
                *t - 1
            };
            let mut pick = turn % total;
            for m in &available {
                if pick < u64::from(m.weight) {
                    return Ok(m);
                }
                pick -= u64::from(m.weight);
            }
        }
        let soonest = members
            .iter()
            .filter_map(|m| self.open_for(&m.backend, now))
            .min()
            .unwrap_or(Duration::from_secs(1));
        Err(soonest)
    }

    /// Counts one call's outcome against the backend's rule; opens the breaker when it trips.
    pub(crate) fn record(
        &self,
        backend: &str,
        rule: &CircuitBreaker,
        status: Option<u16>,
        retry_after: Option<Duration>,
        now: Instant,
    ) {
        let failed = match status {
            Some(s) => rule
                .status_ranges
                .iter()
                .any(|(lo, hi)| (*lo..=*hi).contains(&s)),
            None => rule.counts_errors,
        };
        let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let b = breakers.entry(backend.to_string()).or_default();
        while b
            .outcomes
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > rule.interval)
        {
            b.outcomes.pop_front();
        }
        if b.outcomes.len() >= MAX_OUTCOMES {
            b.outcomes.pop_front();
        }
        b.outcomes.push_back((now, failed));
        if !failed {
            return;
        }
        let failures = b.outcomes.iter().filter(|(_, f)| *f).count() as u64;
        let trips = match (rule.count, rule.percentage) {
            (Some(count), _) => failures >= u64::from(count),
            (None, Some(pct)) => failures * 100 >= u64::from(pct) * b.outcomes.len() as u64,
            (None, None) => false,
        };
        if trips {
            let trip = match (rule.accept_retry_after, retry_after) {
                (true, Some(r)) => r,
                _ => rule.trip,
            };
            b.open_until = Some(now + trip);
            b.outcomes.clear();
            tracing::warn!(backend, rule = %rule.name, seconds = trip.as_secs_f64(), "a backend's circuit breaker opened");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, priority: u32, weight: u32) -> PoolMember {
        PoolMember {
            backend: id.into(),
            priority,
            weight,
        }
    }

    fn rule(count: u32) -> CircuitBreaker {
        CircuitBreaker {
            name: "r".into(),
            count: Some(count),
            percentage: None,
            interval: Duration::from_secs(60),
            status_ranges: vec![(500, 599)],
            counts_errors: true,
            trip: Duration::from_secs(30),
            accept_retry_after: false,
        }
    }

    #[test]
    fn weights_priorities_and_open_breakers_choose_the_member() {
        let h = BackendHealth::default();
        let now = Instant::now();
        let pool = [member("a", 1, 3), member("b", 1, 1), member("c", 2, 1)];
        let picks: Vec<&str> = (0..8)
            .map(|_| h.choose("p", &pool, now).unwrap().backend.as_str())
            .collect();
        assert_eq!(picks.iter().filter(|p| **p == "a").count(), 6);
        assert_eq!(picks.iter().filter(|p| **p == "b").count(), 2);
        for _ in 0..2 {
            h.record("a", &rule(2), Some(503), None, now);
            h.record("b", &rule(1), None, None, now);
        }
        assert_eq!(
            h.choose("p", &pool, now).unwrap().backend,
            "c",
            "the lower group once the first is open"
        );
        h.record("c", &rule(1), Some(500), Some(Duration::from_secs(5)), now);
        assert_eq!(
            h.choose("p", &pool, now).unwrap_err(),
            Duration::from_secs(30)
        );
        let later = now + Duration::from_secs(31);
        assert!(
            h.choose("p", &pool, later).is_ok(),
            "breakers close after the trip duration"
        );
        h.record("d", &rule(2), Some(200), None, now);
        h.record("d", &rule(2), Some(500), None, now);
        assert!(h.open_for("d", now).is_none(), "one failure of two allowed");
    }
}
