//! APIM's Reports (`/reports/byApi`, `byOperation`, `byProduct`, `bySubscription`, `byTime`)
//! over the usage aggregates the gateway keeps in 15-minute buckets.
//!
//! `$filter` takes APIM's time window: `timestamp ge datetime'2026-01-01T00:00:00' and
//! timestamp le datetime'2026-01-02T00:00:00'` (both bounds optional here).

use crate::error::ApiError;
use gatehouse_store::UsageRow;
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn parse_time(text: &str) -> Result<i64, ApiError> {
    let t = text.trim();
    let with_zone = if t.ends_with('Z') || t.contains('+') {
        t.to_string()
    } else {
        format!("{t}Z")
    };
    time::OffsetDateTime::parse(&with_zone, &time::format_description::well_known::Rfc3339)
        .map(|d| d.unix_timestamp())
        .map_err(|_| {
            ApiError::invalid(
                "$filter",
                format!("'{text}' is not a date and time such as 2026-01-01T00:00:00"),
            )
        })
}

/// The `[from, to)` window in Unix seconds from a reports `$filter`.
pub fn time_window(filter: Option<&str>) -> Result<(i64, i64), ApiError> {
    let mut from = i64::MIN / 2;
    let mut to = i64::MAX / 2;
    let Some(f) = filter else {
        return Ok((from, to));
    };
    for clause in f.split(" and ") {
        let c = clause.trim();
        let lower = c.to_ascii_lowercase();
        if !lower.starts_with("timestamp ") {
            return Err(ApiError::invalid(
                "$filter",
                format!("reports filter on 'timestamp' only; '{c}' is not supported"),
            ));
        }
        let value = c
            .split_once("datetime'")
            .and_then(|(_, v)| v.strip_suffix('\''))
            .ok_or_else(|| {
                ApiError::invalid(
                    "$filter",
                    format!("expected timestamp ge|gt|le|lt datetime'…' in '{c}'"),
                )
            })?;
        let t = parse_time(value)?;
        match lower.split_whitespace().nth(1) {
            Some("ge") | Some("gt") => from = from.max(t - t.rem_euclid(900)),
            Some("le") => to = to.min(t + 1),
            Some("lt") => to = to.min(t),
            _ => {
                return Err(ApiError::invalid(
                    "$filter",
                    format!("unsupported operator in '{c}'"),
                ));
            }
        }
    }
    Ok((from, to))
}

#[derive(Default)]
struct Agg {
    success: u64,
    blocked: u64,
    failed: u64,
    other: u64,
    bandwidth: u64,
    api_sum: f64,
    api_min: Option<f64>,
    api_max: f64,
    svc_sum: f64,
    svc_min: Option<f64>,
    svc_max: f64,
    svc_calls: u64,
}

impl Agg {
    fn add(&mut self, r: &UsageRow) {
        self.success += r.success;
        self.blocked += r.blocked;
        self.failed += r.failed;
        self.other += r.other;
        self.bandwidth += r.bandwidth;
        self.api_sum += r.api_time_sum_ms;
        self.api_min = Some(
            self.api_min
                .map_or(r.api_time_min_ms, |m| m.min(r.api_time_min_ms)),
        );
        self.api_max = self.api_max.max(r.api_time_max_ms);
        if r.service_calls > 0 {
            self.svc_sum += r.service_time_sum_ms;
            self.svc_min = Some(
                self.svc_min
                    .map_or(r.service_time_min_ms, |m| m.min(r.service_time_min_ms)),
            );
            self.svc_max = self.svc_max.max(r.service_time_max_ms);
            self.svc_calls += r.service_calls;
        }
    }

    fn record(&self) -> serde_json::Map<String, Value> {
        let total = self.success + self.blocked + self.failed + self.other;
        let v = json!({
            "callCountSuccess": self.success,
            "callCountBlocked": self.blocked,
            "callCountFailed": self.failed,
            "callCountOther": self.other,
            "callCountTotal": total,
            "bandwidth": self.bandwidth,
            "cacheHitCount": 0,
            "cacheMissCount": 0,
            "apiTimeAvg": if total > 0 { self.api_sum / total as f64 } else { 0.0 },
            "apiTimeMin": self.api_min.unwrap_or(0.0),
            "apiTimeMax": self.api_max,
            "serviceTimeAvg": if self.svc_calls > 0 { self.svc_sum / self.svc_calls as f64 } else { 0.0 },
            "serviceTimeMin": self.svc_min.unwrap_or(0.0),
            "serviceTimeMax": self.svc_max,
        });
        v.as_object().cloned().unwrap_or_default()
    }
}

fn iso(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Builds the report records for `kind` (`byApi`, …) from usage rows.
pub fn report(kind: &str, rows: &[UsageRow], interval_secs: i64) -> Result<Vec<Value>, ApiError> {
    let key = |r: &UsageRow| -> Option<String> {
        Some(match kind {
            "byapi" => r.api.clone(),
            "byoperation" => format!("{}\u{0}{}", r.api, r.operation),
            "byproduct" => r.product.clone(),
            "bysubscription" => r.subscription.clone(),
            "bytime" => (r.bucket - r.bucket.rem_euclid(interval_secs)).to_string(),
            "byregion" => r.region.clone(),
            _ => return None,
        })
    };
    let mut groups: BTreeMap<String, Agg> = BTreeMap::new();
    for r in rows {
        let k = key(r).ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!("Report '{kind}' is not available; use byApi, byOperation, byProduct, bySubscription, byRegion or byTime."),
            )
        })?;
        if kind != "bytime" && k.is_empty() {
            continue;
        }
        groups.entry(k).or_default().add(r);
    }
    if rows.is_empty() && key(&UsageRow::default()).is_none() {
        return Err(ApiError::not_found("Report"));
    }
    Ok(groups
        .into_iter()
        .map(|(k, agg)| {
            let mut rec = agg.record();
            match kind {
                "byapi" => {
                    rec.insert("name".into(), json!(k));
                    rec.insert("apiId".into(), json!(format!("/apis/{k}")));
                }
                "byoperation" => {
                    let (api, op) = k.split_once('\u{0}').unwrap_or((&k, ""));
                    rec.insert("name".into(), json!(op));
                    rec.insert("apiId".into(), json!(format!("/apis/{api}")));
                    rec.insert(
                        "operationId".into(),
                        json!(format!("/apis/{api}/operations/{op}")),
                    );
                }
                "byproduct" => {
                    rec.insert("name".into(), json!(k));
                    rec.insert("productId".into(), json!(format!("/products/{k}")));
                }
                "byregion" => {
                    rec.insert("name".into(), json!(k));
                    rec.insert("region".into(), json!(k));
                }
                "bysubscription" => {
                    rec.insert("name".into(), json!(k));
                    rec.insert(
                        "subscriptionId".into(),
                        json!(format!("/subscriptions/{k}")),
                    );
                }
                _ => {
                    let t: i64 = k.parse().unwrap_or(0);
                    rec.insert("timestamp".into(), json!(iso(t)));
                    rec.insert(
                        "interval".into(),
                        json!(format!("PT{}M", interval_secs / 60)),
                    );
                }
            }
            Value::Object(rec)
        })
        .collect())
}

/// Parses an ISO 8601 interval of whole minutes (`PT15M`, `PT1H`); it must be a multiple of 15
/// minutes, as in APIM.
pub fn parse_interval(text: Option<&str>) -> Result<i64, ApiError> {
    let Some(t) = text else { return Ok(900) };
    let upper = t.to_ascii_uppercase();
    let secs = if let Some(m) = upper.strip_prefix("PT").and_then(|r| r.strip_suffix('M')) {
        m.parse::<i64>().ok().map(|m| m * 60)
    } else if let Some(h) = upper.strip_prefix("PT").and_then(|r| r.strip_suffix('H')) {
        h.parse::<i64>().ok().map(|h| h * 3600)
    } else if let Some(d) = upper.strip_prefix('P').and_then(|r| r.strip_suffix('D')) {
        d.parse::<i64>().ok().map(|d| d * 86400)
    } else {
        None
    };
    match secs {
        Some(s) if s > 0 && s % 900 == 0 => Ok(s),
        _ => Err(ApiError::invalid(
            "interval",
            format!(
                "'interval' must be a multiple of 15 minutes such as PT15M or PT1H; '{t}' is not"
            ),
        )),
    }
}
