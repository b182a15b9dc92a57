//! What the gateway tells about the requests it served: Prometheus metrics, the JSON access
//! log, and usage aggregates in 15-minute buckets (APIM's Reports).
//!
//! Invariant: nothing recorded here contains a subscription key — only subscription ids — and
//! the access log's URL has the key query parameter removed.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let buckets = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let builder = PrometheusBuilder::new()
            .set_buckets(&buckets)
            .expect("bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by an embedding program); then our
        // handle renders nothing, which is visible rather than wrong.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Renders the metrics in Prometheus text format.
pub fn render_metrics() -> String {
    prometheus().render()
}

/// One access-log line.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRecord<'a> {
    pub time: String,
    pub request_id: &'a str,
    pub client_ip: String,
    pub method: &'a str,
    pub url: String,
    pub api: Option<&'a str>,
    pub operation: Option<&'a str>,
    pub product: Option<&'a str>,
    pub subscription_id: Option<&'a str>,
    pub status: u16,
    pub total_ms: f64,
    pub backend_ms: Option<f64>,
    pub error_reason: Option<&'a str>,
}

/// Where access-log lines go.
pub enum AccessLog {
    Off,
    Stdout,
    File(Mutex<std::io::BufWriter<std::fs::File>>),
}

impl AccessLog {
    pub fn open(spec: Option<&str>) -> std::io::Result<AccessLog> {
        match spec {
            None | Some("") | Some("off") => Ok(AccessLog::Off),
            Some("stdout") | Some("-") => Ok(AccessLog::Stdout),
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                Ok(AccessLog::File(Mutex::new(std::io::BufWriter::new(f))))
            }
        }
    }

    pub fn enabled(&self) -> bool {
        !matches!(self, AccessLog::Off)
    }

    pub fn write(&self, record: &AccessRecord<'_>) {
        let Ok(mut line) = serde_json::to_vec(record) else {
            return;
        };
        line.push(b'\n');
        match self {
            AccessLog::Off => {}
            AccessLog::Stdout => {
                let _ = std::io::stdout().lock().write_all(&line);
            }
            AccessLog::File(f) => {
                let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
                let _ = f.write_all(&line);
                let _ = f.flush();
            }
        }
    }
}

/// Removes one query parameter (the subscription key) from a query string.
pub fn without_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|p| {
            !p.is_empty()
                && p.split('=').next().map(crate::template::decode).as_deref() != Some(name)
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Usage aggregates per 15-minute bucket and (API, operation, product, subscription).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UsageCounters {
    pub success: u64,
    pub blocked: u64,
    pub failed: u64,
    pub other: u64,
    pub bandwidth: u64,
    pub api_time_sum_ms: f64,
    pub api_time_min_ms: f64,
    pub api_time_max_ms: f64,
    pub service_time_sum_ms: f64,
    pub service_time_min_ms: f64,
    pub service_time_max_ms: f64,
    pub service_calls: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UsageKey {
    /// Unix seconds of the bucket start (a multiple of 900).
    pub bucket: i64,
    pub api: String,
    pub operation: String,
    pub product: String,
    pub subscription: String,
}

#[derive(Default)]
pub struct Usage {
    pending: Mutex<HashMap<UsageKey, UsageCounters>>,
}

impl Usage {
    /// Counts one request by APIM's classes: success (< 400 and 304/307), blocked (401, 403,
    /// 429), failed (400 and 5xx), other.
    pub fn record(
        &self,
        key: UsageKey,
        status: u16,
        api_ms: f64,
        service_ms: Option<f64>,
        bytes: u64,
    ) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let c = pending.entry(key).or_default();
        match status {
            s if s < 400 => c.success += 1,
            401 | 403 | 429 => c.blocked += 1,
            400 | 500..=599 => c.failed += 1,
            _ => c.other += 1,
        }
        let first = c.success + c.blocked + c.failed + c.other == 1;
        c.bandwidth += bytes;
        c.api_time_sum_ms += api_ms;
        c.api_time_min_ms = if first {
            api_ms
        } else {
            c.api_time_min_ms.min(api_ms)
        };
        c.api_time_max_ms = c.api_time_max_ms.max(api_ms);
        if let Some(ms) = service_ms {
            c.service_time_min_ms = if c.service_calls == 0 {
                ms
            } else {
                c.service_time_min_ms.min(ms)
            };
            c.service_calls += 1;
            c.service_time_sum_ms += ms;
            c.service_time_max_ms = c.service_time_max_ms.max(ms);
        }
    }

    /// Takes what was counted since the last call.
    pub fn drain(&self) -> HashMap<UsageKey, UsageCounters> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The 15-minute bucket a Unix time falls in.
pub fn bucket_of(unix_secs: i64) -> i64 {
    unix_secs - unix_secs.rem_euclid(900)
}
