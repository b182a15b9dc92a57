//! A backend's load-balanced pool and its circuit breaker, as APIM's `backends` resource
//! writes them (`type: Pool`, `pool.services`, `circuitBreaker.rules`): read once here for the
//! management API's checks and the gateway's routing, so both agree on what a value means.

use serde_json::{Map, Value};
use std::time::Duration;

/// APIM's limit on a pool's members.
pub const MAX_POOL_MEMBERS: usize = 30;

/// One member of a pool: a single backend, its priority group (lower first) and its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolMember {
    /// The member backend's id (`backend-1`), however the resource wrote it.
    pub backend: String,
    pub priority: u32,
    pub weight: u32,
}

/// A circuit breaker rule: when it trips, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    pub name: String,
    /// Failures within `interval` that trip it.
    pub count: Option<u32>,
    /// Or: the share of requests within `interval` that failed, in percent.
    pub percentage: Option<u32>,
    pub interval: Duration,
    /// Response statuses that count as failures.
    pub status_ranges: Vec<(u16, u16)>,
    /// Whether a request the backend did not answer (`Server errors`, a timeout, a refused
    /// connection) counts as a failure.
    pub counts_errors: bool,
    pub trip: Duration,
    pub accept_retry_after: bool,
}

/// An error in a backend's properties: the field at fault and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid<T>(field: &str, message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid {
        field: field.to_string(),
        message: message.into(),
    })
}

/// Whether the backend is a pool.
pub fn is_pool(props: &Map<String, Value>) -> bool {
    props.get("type").and_then(Value::as_str) == Some("Pool")
}

/// The backend id a pool member's `id` names: an ARM id or a path ending in
/// `/backends/{id}`, or the bare id.
pub fn member_id(id: &str) -> &str {
    id.trim_end_matches('/')
        .rsplit("/backends/")
        .next()
        .unwrap_or(id)
}

/// A pool's members, in the order written.
pub fn pool(props: &Map<String, Value>) -> Result<Vec<PoolMember>, Invalid> {
    let services = props
        .get("pool")
        .and_then(|p| p.get("services"))
        .and_then(Value::as_array);
    let Some(services) = services.filter(|s| !s.is_empty()) else {
        return invalid(
            "pool.services",
            "a Pool backend needs 'pool.services' with at least one backend",
        );
    };
    if services.len() > MAX_POOL_MEMBERS {
        return invalid(
            "pool.services",
            format!(
                "a pool has at most {MAX_POOL_MEMBERS} backends, not {}",
                services.len()
            ),
        );
    }
    let mut out = Vec::with_capacity(services.len());
    for (i, s) in services.iter().enumerate() {
        let field = format!("pool.services[{i}]");
        let Some(id) = s
            .get("id")
            .and_then(Value::as_str)
            .filter(|x| !x.is_empty())
        else {
            return invalid(
                &format!("{field}.id"),
                "each pool member needs the 'id' of a backend",
            );
        };
        let number = |name: &str| -> Result<Option<u32>, Invalid> {
            match s.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if n <= 100 => Ok(Some(n as u32)),
                    _ => invalid(
                        &format!("{field}.{name}"),
                        format!("'{name}' must be a whole number from 0 to 100"),
                    ),
                },
            }
        };
        out.push(PoolMember {
            backend: member_id(id).to_string(),
            priority: number("priority")?.unwrap_or(0),
            weight: number("weight")?.unwrap_or(1),
        });
    }
    Ok(out)
}

/// An ISO 8601 duration of days, hours, minutes and seconds (`PT1M`, `P1DT2H`, `PT0.5S`).
pub fn iso_duration(s: &str) -> Option<Duration> {
    let rest = s.trim().strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, t),
        None => (rest, ""),
    };
    let mut secs = 0f64;
    let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
            } else {
                let (_, scale) = units.iter().find(|(u, _)| *u == c)?;
                secs += number.parse::<f64>().ok()? * scale;
                number.clear();
            }
        }
        number.is_empty().then_some(())
    };
    take(days, &[('D', 86_400.0), ('W', 604_800.0)])?;
    take(time, &[('H', 3_600.0), ('M', 60.0), ('S', 1.0)])?;
    (secs.is_finite() && secs < 1e10 && !rest.is_empty() && rest != "T")
        .then(|| Duration::from_secs_f64(secs))
}

/// The backend's circuit breaker (APIM allows one rule), if it has one.
pub fn circuit_breaker(props: &Map<String, Value>) -> Result<Option<CircuitBreaker>, Invalid> {
    let Some(rules) = props.get("circuitBreaker").and_then(|c| c.get("rules")) else {
        return Ok(None);
    };
    let Some(rules) = rules.as_array() else {
        return invalid(
            "circuitBreaker.rules",
            "'circuitBreaker.rules' must be an array",
        );
    };
    match rules.len() {
        0 => return Ok(None),
        1 => {}
        _ => {
            return invalid(
                "circuitBreaker.rules",
                "a backend has at most one circuit breaker rule",
            );
        }
    }
    let rule = &rules[0];
    let f = "circuitBreaker.rules[0]";
    let condition = rule.get("failureCondition").cloned().unwrap_or(Value::Null);
    let duration = |v: Option<&Value>, field: &str| -> Result<Duration, Invalid> {
        match v.and_then(Value::as_str).and_then(iso_duration) {
            Some(d) if !d.is_zero() => Ok(d),
            _ => invalid(
                &format!("{f}.{field}"),
                format!("'{field}' must be an ISO 8601 duration such as PT1M"),
            ),
        }
    };
    let count = condition
        .get("count")
        .and_then(Value::as_u64)
        .map(|c| c as u32);
    let percentage = condition
        .get("percentage")
        .and_then(Value::as_u64)
        .map(|p| p as u32);
    if count.is_none() == percentage.is_none() {
        return invalid(
            &format!("{f}.failureCondition"),
            "the failure condition needs one of 'count' and 'percentage'",
        );
    }
    if percentage.is_some_and(|p| p == 0 || p > 100) {
        return invalid(
            &format!("{f}.failureCondition.percentage"),
            "'percentage' must be from 1 to 100",
        );
    }
    let mut status_ranges = Vec::new();
    for (i, r) in condition
        .get("statusCodeRanges")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let (min, max) = (
            r.get("min").and_then(Value::as_u64),
            r.get("max").and_then(Value::as_u64),
        );
        match (min, max) {
            (Some(a), Some(b)) if (100..=599).contains(&a) && (a..=599).contains(&b) => {
                status_ranges.push((a as u16, b as u16))
            }
            _ => {
                return invalid(
                    &format!("{f}.failureCondition.statusCodeRanges[{i}]"),
                    "a status range needs 'min' and 'max' from 100 to 599, min ≤ max",
                );
            }
        }
    }
    let reasons: Vec<String> = condition
        .get("errorReasons")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if status_ranges.is_empty() && reasons.is_empty() {
        return invalid(
            &format!("{f}.failureCondition"),
            "the failure condition needs 'statusCodeRanges' or 'errorReasons'",
        );
    }
    Ok(Some(CircuitBreaker {
        name: rule
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("breaker")
            .to_string(),
        count,
        percentage,
        interval: duration(condition.get("interval"), "failureCondition.interval")?,
        status_ranges,
        counts_errors: !reasons.is_empty(),
        trip: duration(rule.get("tripDuration"), "tripDuration")?,
        accept_retry_after: rule
            .get("acceptRetryAfter")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_pools_and_breakers_read_as_apim_writes_them() {
        assert_eq!(iso_duration("PT1M"), Some(Duration::from_secs(60)));
        assert_eq!(iso_duration("P1DT2H30M"), Some(Duration::from_secs(95_400)));
        assert_eq!(iso_duration("PT0.5S"), Some(Duration::from_millis(500)));
        assert_eq!(iso_duration("1 minute"), None);
        assert_eq!(iso_duration("P"), None);
        let props = json!({"type": "Pool", "pool": {"services": [
            {"id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.ApiManagement/service/x/backends/b1", "priority": 1, "weight": 3},
            {"id": "/backends/b2"}
        ]}});
        let members = pool(props.as_object().unwrap()).unwrap();
        assert_eq!(
            members[0],
            PoolMember {
                backend: "b1".into(),
                priority: 1,
                weight: 3
            }
        );
        assert_eq!(
            members[1],
            PoolMember {
                backend: "b2".into(),
                priority: 0,
                weight: 1
            }
        );
        let bad = json!({"pool": {"services": [{"id": "b1", "weight": 101}]}});
        assert_eq!(
            pool(bad.as_object().unwrap()).unwrap_err().field,
            "pool.services[0].weight"
        );
        let cb = json!({"circuitBreaker": {"rules": [{"name": "r", "failureCondition": {"count": 3, "interval": "PT1M", "statusCodeRanges": [{"min": 500, "max": 599}]}, "tripDuration": "PT30S", "acceptRetryAfter": true}]}});
        let b = circuit_breaker(cb.as_object().unwrap()).unwrap().unwrap();
        assert_eq!(
            (b.count, b.interval, b.trip, b.accept_retry_after),
            (
                Some(3),
                Duration::from_secs(60),
                Duration::from_secs(30),
                true
            )
        );
        let two = json!({"circuitBreaker": {"rules": [{}, {}]}});
        assert!(circuit_breaker(two.as_object().unwrap()).is_err());
    }
}
