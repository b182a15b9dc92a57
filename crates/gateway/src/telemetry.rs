//! What the gateway tells about the requests it served: Prometheus metrics, the JSON access
//! log, and usage aggregates in 15-minute buckets (APIM's Reports).
//!
//! Invariant: nothing recorded here contains a subscription key — only subscription ids — and
//! the access log's URL has the key query parameter removed.

use gatehouse_store::UsageRow;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    /// What trace policies wrote for this request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<TraceLine>,
}

#[derive(Debug, Serialize)]
pub struct TraceLine {
    pub source: String,
    pub message: String,
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
pub(crate) fn without_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter(|p| {
            !p.is_empty()
                && p.split('=').next().map(crate::template::decode).as_deref() != Some(name)
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Counts one request into a usage row by APIM's classes: success (< 400), blocked (401, 403,
/// 429), failed (400 and 5xx), other.
fn count(row: &mut UsageRow, status: u16, api_ms: f64, service_ms: Option<f64>, bytes: u64) {
    let first = row.success + row.blocked + row.failed + row.other == 0;
    match status {
        s if s < 400 => row.success += 1,
        401 | 403 | 429 => row.blocked += 1,
        400 | 500..=599 => row.failed += 1,
        _ => row.other += 1,
    }
    row.bandwidth += bytes;
    row.api_time_sum_ms += api_ms;
    row.api_time_min_ms = if first {
        api_ms
    } else {
        row.api_time_min_ms.min(api_ms)
    };
    row.api_time_max_ms = row.api_time_max_ms.max(api_ms);
    if let Some(ms) = service_ms {
        row.service_time_min_ms = if row.service_calls == 0 {
            ms
        } else {
            row.service_time_min_ms.min(ms)
        };
        row.service_calls += 1;
        row.service_time_sum_ms += ms;
        row.service_time_max_ms = row.service_time_max_ms.max(ms);
    }
}

/// What a request is counted under. Cloning is reference counting only.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatKey {
    pub api: Option<Arc<str>>,
    pub operation: Option<Arc<str>>,
    pub product: Option<Arc<str>>,
    pub subscription: Option<Arc<str>>,
}

const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl Histogram {
    fn record(&mut self, secs: f64) {
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += secs;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum += other.sum;
    }
}

#[derive(Debug, Default)]
struct Entry {
    by_class: [u64; 5],
    total: Histogram,
    backend: Histogram,
    /// Usage not yet flushed to the store, by bucket start.
    usage: Vec<UsageRow>,
}

/// Request counts, latency histograms and usage, behind one lock taken once per request.
#[derive(Default)]
pub struct Stats {
    /// foldhash: the keys are configuration ids, not chosen by clients, and SipHash over four
    /// strings was a visible share of each request.
    entries: Mutex<HashMap<StatKey, Entry, foldhash::fast::RandomState>>,
    revision: AtomicU64,
}

fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn label(out: &mut String, name: &str, value: Option<&str>) {
    let _ = write!(out, "{name}=\"");
    for c in value.unwrap_or("").chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Stats {
    pub fn set_revision(&self, revision: u64) {
        self.revision.store(revision, Ordering::Relaxed);
    }

    /// Records one request.
    pub fn record(
        &self,
        key: StatKey,
        bucket: i64,
        status: u16,
        total_ms: f64,
        backend_ms: Option<f64>,
        bytes: u64,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let has_api = key.api.is_some();
        let e = entries.entry(key).or_default();
        e.by_class[class_index(status)] += 1;
        e.total.record(total_ms / 1000.0);
        if let Some(ms) = backend_ms {
            e.backend.record(ms / 1000.0);
        }
        if has_api {
            match e.usage.last_mut() {
                Some(row) if row.bucket == bucket => {
                    count(row, status, total_ms, backend_ms, bytes)
                }
                _ => {
                    let mut row = UsageRow {
                        bucket,
                        ..UsageRow::default()
                    };
                    count(&mut row, status, total_ms, backend_ms, bytes);
                    e.usage.push(row);
                }
            }
        }
    }

    /// Takes the usage counted since the last call.
    pub fn drain_usage(&self) -> Vec<UsageRow> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let text = |v: &Option<Arc<str>>| v.as_deref().unwrap_or("").to_string();
        let mut out = Vec::new();
        for (k, e) in entries.iter_mut() {
            for mut row in e.usage.drain(..) {
                row.api = text(&k.api);
                row.operation = text(&k.operation);
                row.product = text(&k.product);
                row.subscription = text(&k.subscription);
                out.push(row);
            }
        }
        out
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str("# HELP gatehouse_gateway_requests_total Requests served by the gateway.\n# TYPE gatehouse_gateway_requests_total counter\n");
        let mut per_api_total: HashMap<Option<&str>, Histogram> = HashMap::new();
        let mut per_api_backend: HashMap<Option<&str>, Histogram> = HashMap::new();
        for (k, e) in entries.iter() {
            for (i, n) in e.by_class.iter().enumerate() {
                if *n == 0 {
                    continue;
                }
                out.push_str("gatehouse_gateway_requests_total{");
                label(&mut out, "api", k.api.as_deref());
                out.push(',');
                label(&mut out, "operation", k.operation.as_deref());
                out.push(',');
                label(&mut out, "product", k.product.as_deref());
                out.push(',');
                label(&mut out, "subscription", k.subscription.as_deref());
                out.push(',');
                label(&mut out, "status_class", Some(CLASSES[i]));
                let _ = writeln!(out, "}} {n}");
            }
            per_api_total
                .entry(k.api.as_deref())
                .or_default()
                .merge(&e.total);
            per_api_backend
                .entry(k.api.as_deref())
                .or_default()
                .merge(&e.backend);
        }
        for (name, help, hists) in [
            (
                "gatehouse_gateway_request_duration_seconds",
                "Time from request to response headers at the gateway.",
                &per_api_total,
            ),
            (
                "gatehouse_gateway_backend_duration_seconds",
                "Time the backend took to answer.",
                &per_api_backend,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            let mut apis: Vec<_> = hists.iter().collect();
            apis.sort_by_key(|(a, _)| *a);
            for (api, h) in apis {
                let count: u64 = h.counts.iter().sum();
                if count == 0 {
                    continue;
                }
                let mut cumulative = 0;
                for (i, le) in BUCKETS
                    .iter()
                    .map(|b| b.to_string())
                    .chain(std::iter::once("+Inf".to_string()))
                    .enumerate()
                {
                    cumulative += h.counts[i];
                    let _ = write!(out, "{name}_bucket{{");
                    label(&mut out, "api", *api);
                    let _ = writeln!(out, ",le=\"{le}\"}} {cumulative}");
                }
                let _ = write!(out, "{name}_sum{{");
                label(&mut out, "api", *api);
                let _ = writeln!(out, "}} {}", h.sum);
                let _ = write!(out, "{name}_count{{");
                label(&mut out, "api", *api);
                let _ = writeln!(out, "}} {count}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP gatehouse_gateway_config_revision The configuration revision the gateway serves.\n# TYPE gatehouse_gateway_config_revision gauge\ngatehouse_gateway_config_revision {}",
            self.revision.load(Ordering::Relaxed)
        );
        out
    }
}

/// The 15-minute bucket a Unix time falls in.
pub(crate) fn bucket_of(unix_secs: i64) -> i64 {
    unix_secs - unix_secs.rem_euclid(900)
}

/// What a move needs to know about this gateway's traffic: how much it served, how much failed,
/// when it last served, and whether it is draining (every HTTP/1.1 response then carries
/// `Connection: close` and HTTP/2 connections get GOAWAY, so clients reconnect and resolve the
/// name again).
#[derive(Default)]
pub struct Traffic {
    /// Read per request; `draining_changes` tells connections that wait.
    draining: AtomicBool,
    draining_changes: tokio::sync::watch::Sender<bool>,
    served: AtomicU64,
    failed: AtomicU64,
    last_request_unix_ms: AtomicI64,
}

impl Traffic {
    /// Counts one answered request, at `now_ms` (milliseconds since the epoch).
    pub fn record(&self, status: u16, now_ms: i64) {
        self.served.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.last_request_unix_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
        self.draining_changes.send_replace(on);
    }

    /// Follows the draining switch (for connections that end when it turns on).
    pub fn watch_draining(&self) -> tokio::sync::watch::Receiver<bool> {
        self.draining_changes.subscribe()
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// `{"draining", "requests", "failedRequests", "lastRequestAt"}` (milliseconds since the
    /// epoch, 0 when nothing was served yet).
    pub fn render(&self) -> serde_json::Value {
        serde_json::json!({
            "draining": self.draining(),
            "requests": self.served.load(Ordering::Relaxed),
            "failedRequests": self.failed.load(Ordering::Relaxed),
            "lastRequestAt": self.last_request_unix_ms.load(Ordering::Relaxed),
        })
    }
}
