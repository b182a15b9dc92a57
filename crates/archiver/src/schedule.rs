//! When base archives are taken besides the first one: every fixed interval (`6h`), or on a
//! cron schedule (`0 */6 * * *`, `@daily`), evaluated in UTC.
//!
//! Invariant: a schedule only says whether a base is due given when the last one was taken; a
//! missed occurrence (the process was down) makes one base due, not one per occurrence missed.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub enum BaseSchedule {
    Every(Duration),
    Cron(Box<croner::Cron>),
}

impl BaseSchedule {
    /// A schedule from a cron expression: five fields (minute granularity), six (with
    /// seconds first), or an alias such as `@hourly`, `@daily`, `@weekly`.
    pub fn cron(expression: &str) -> Result<BaseSchedule, String> {
        let cron = croner::Cron::from_str(expression.trim())
            .map_err(|e| format!("'{expression}' is not a cron expression: {e}"))?;
        // A pattern that never fires (31 February) would be accepted and never take a base.
        let epoch = chrono::DateTime::UNIX_EPOCH;
        cron.find_next_occurrence(&epoch, false)
            .map_err(|_| format!("the cron expression '{expression}' never fires"))?;
        Ok(BaseSchedule::Cron(Box::new(cron)))
    }

    /// Whether a base is due at `now` when the last one was taken at `last`.
    pub fn due(&self, last: SystemTime, now: SystemTime) -> bool {
        match self {
            BaseSchedule::Every(every) => now.duration_since(last).is_ok_and(|d| d >= *every),
            BaseSchedule::Cron(cron) => {
                let last = to_chrono(last);
                cron.find_next_occurrence(&last, false)
                    .is_ok_and(|next| to_chrono(now) >= next)
            }
        }
    }

    /// How the schedule reads in logs and status.
    pub fn describe(&self) -> String {
        match self {
            BaseSchedule::Every(every) => format!("every {} s", every.as_secs()),
            BaseSchedule::Cron(cron) => format!("cron '{}' (UTC)", cron.pattern),
        }
    }
}

fn to_chrono(at: SystemTime) -> chrono::DateTime<chrono::Utc> {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    chrono::DateTime::from_timestamp(since.as_secs() as i64, since.subsec_nanos())
        .unwrap_or(chrono::DateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
        UNIX_EPOCH + Duration::from_secs(t.timestamp() as u64)
    }

    #[test]
    fn cron_is_due_once_its_next_occurrence_after_the_last_base_has_passed() {
        let every_six_hours = BaseSchedule::cron("0 */6 * * *").unwrap();
        let last = at("2026-12-07T06:00:00Z");
        assert!(!every_six_hours.due(last, at("2026-12-07T11:59:59Z")));
        assert!(every_six_hours.due(last, at("2026-12-07T12:00:00Z")));
        // Down for a day: one base is due, now.
        assert!(every_six_hours.due(last, at("2026-12-08T09:13:00Z")));
        let daily = BaseSchedule::cron("@daily").unwrap();
        assert!(!daily.due(at("2026-12-07T00:00:01Z"), at("2026-12-07T23:59:00Z")));
        assert!(daily.due(at("2026-12-07T00:00:01Z"), at("2026-12-08T00:00:00Z")));
    }

    #[test]
    fn bad_and_impossible_expressions_are_refused_by_name() {
        let e = BaseSchedule::cron("0 */6 * *").unwrap_err();
        assert!(e.contains("'0 */6 * *' is not a cron expression"), "{e}");
        let e = BaseSchedule::cron("0 0 31 2 *").unwrap_err();
        assert!(e.contains("never fires"), "{e}");
        assert!(BaseSchedule::cron("61 * * * *").is_err());
    }

    #[test]
    fn an_interval_is_due_after_it_has_elapsed() {
        let every = BaseSchedule::Every(Duration::from_secs(3600));
        let last = at("2026-12-07T06:00:00Z");
        assert!(!every.due(last, at("2026-12-07T06:59:59Z")));
        assert!(every.due(last, at("2026-12-07T07:00:00Z")));
    }
}
