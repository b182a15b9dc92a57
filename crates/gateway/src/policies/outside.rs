//! What policies send out of the gateway besides requests: access tokens for
//! authentication-managed-identity (from the configured token source, cached until shortly
//! before they expire), emit-metric's samples (summed per series, shown in `/metrics`), and
//! log-to-eventhub's messages (to a logger's sink: a file or an HTTP endpoint).
//!
//! Invariants: the identity's client secret and loggers' credentials appear in no log line and
//! no error; metric series and queued log messages are bounded; a sink that fails never fails
//! the request.

use crate::config::IdentitySource;
use gatehouse_policy::exec::Metric;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Cached tokens by (resource, client id): the token and when to renew it.
type Tokens = HashMap<(String, Option<String>), (String, Instant)>;

/// Tokens from the configured source, by (resource, client id).
pub(crate) struct Identity {
    source: Option<IdentitySource>,
    http: reqwest::Client,
    tokens: Mutex<Tokens>,
}

/// A token is renewed this long before it expires (or at half its life when it is shorter).
const RENEW_BEFORE: Duration = Duration::from_secs(300);

impl Identity {
    pub(crate) fn new(source: Option<IdentitySource>) -> Identity {
        Identity {
            source,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap_or_default(),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) async fn token(
        &self,
        resource: &str,
        client_id: Option<&str>,
    ) -> Result<String, String> {
        let key = (resource.to_string(), client_id.map(str::to_string));
        if let Some((token, until)) = self.lock().get(&key)
            && *until > Instant::now()
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.fetch(resource, client_id).await?;
        let renew = lifetime.saturating_sub(RENEW_BEFORE.min(lifetime / 2));
        let mut tokens = self.lock();
        if tokens.len() > 1000 {
            tokens.retain(|_, (_, until)| *until > Instant::now());
        }
        tokens.insert(key, (token.clone(), Instant::now() + renew));
        Ok(token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn fetch(
        &self,
        resource: &str,
        client_id: Option<&str>,
    ) -> Result<(String, Duration), String> {
        let request = match &self.source {
            None => return Err("this gateway has no identity token source configured (--identity-token-url or --identity-imds)".into()),
            Some(IdentitySource::ClientCredentials { token_url, client_id: own, client_secret }) => {
                let scope = format!("{}/.default", resource.trim_end_matches('/'));
                let mut form = vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.unwrap_or(own)),
                    ("client_secret", client_secret.as_str()),
                ];
                // Entra ID's v2 endpoint takes only a scope; v1 endpoints and other servers
                // take the resource (RFC 8707).
                if token_url.contains("/v2.0/") {
                    form.push(("scope", &scope));
                } else {
                    form.push(("resource", resource));
                    if !token_url.contains("/oauth2/token") {
                        form.push(("scope", &scope));
                    }
                }
                let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish();
                self.http
                    .post(token_url)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body)
            }
            Some(IdentitySource::Imds { endpoint }) => {
                let mut query = vec![("api-version", "2018-02-01"), ("resource", resource)];
                if let Some(c) = client_id {
                    query.push(("client_id", c));
                }
                let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(&query).finish();
                self.http.get(format!("{endpoint}?{query}")).header("Metadata", "true")
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| format!("the token endpoint cannot be reached: {}", e.without_url()))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|_| format!("the token endpoint answered {status} without a token"))?;
        if !status.is_success() {
            let error = body
                .get("error")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("no error code");
            return Err(format!("the token endpoint answered {status} ({error})"));
        }
        let token = body
            .get("access_token")
            .and_then(serde_json::Value::as_str)
            .ok_or("the token endpoint's answer has no access_token")?;
        let expires_in = body
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(3600);
        Ok((token.to_string(), Duration::from_secs(expires_in)))
    }
}

/// The most series emit-metric may create; samples of further ones are counted as dropped.
const MAX_SERIES: usize = 10_000;

type SeriesKey = (String, String, Vec<(String, String)>);

/// emit-metric's samples: a sum and a count per (namespace, name, dimensions).
#[derive(Default)]
pub(crate) struct CustomMetrics {
    series: Mutex<HashMap<SeriesKey, (f64, u64)>>,
    dropped: std::sync::atomic::AtomicU64,
}

impl CustomMetrics {
    pub(crate) fn record(&self, m: Metric) {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let key = (m.namespace, m.name, m.dimensions);
        if !series.contains_key(&key) && series.len() >= MAX_SERIES {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let e = series.entry(key).or_insert((0.0, 0));
        e.0 += m.value;
        e.1 += 1;
    }

    /// Prometheus text: `gatehouse_policy_metric_sum` and `_count` with the namespace, the
    /// name, and each dimension as a label (its name in snake case).
    pub(crate) fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if series.is_empty() {
            return;
        }
        let mut rows: Vec<_> = series.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        for (suffix, help) in [
            ("sum", "The sum of the values emit-metric policies emitted."),
            ("count", "The samples emit-metric policies emitted."),
        ] {
            let _ = writeln!(
                out,
                "# HELP gatehouse_policy_metric_{suffix} {help}\n# TYPE gatehouse_policy_metric_{suffix} counter"
            );
            for ((namespace, name, dims), (sum, count)) in &rows {
                let _ = write!(
                    out,
                    "gatehouse_policy_metric_{suffix}{{namespace=\"{}\",name=\"{}\"",
                    escape(namespace),
                    escape(name)
                );
                for (k, v) in dims {
                    let _ = write!(out, ",{}=\"{}\"", label_name(k), escape(v));
                }
                let value = if suffix == "sum" {
                    sum.to_string()
                } else {
                    count.to_string()
                };
                let _ = writeln!(out, "}} {value}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP gatehouse_policy_metric_dropped_total Samples of new series past the {MAX_SERIES} kept.\n# TYPE gatehouse_policy_metric_dropped_total counter\ngatehouse_policy_metric_dropped_total {}",
            self.dropped.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}

/// A dimension's name as a Prometheus label: `User ID` → `user_id`.
fn label_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit())
        || out.is_empty()
        || out == "namespace"
        || out == "name"
    {
        out.insert_str(0, "dim_");
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Where a logger's messages go: the logger's `credentials.connectionString` as a URL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sink {
    /// `file:///var/log/apim-events.log`: one message per line, appended.
    File(std::path::PathBuf),
    /// `https://collector.example/events`: each message POSTed as the request body.
    Http(String),
}

impl Sink {
    /// The sink a logger's connection string names, or why it names none.
    pub(crate) fn of(connection: &str) -> Result<Sink, String> {
        let c = connection.trim();
        if let Some(path) = c.strip_prefix("file://") {
            return Ok(Sink::File(path.into()));
        }
        if c.starts_with("https://") || c.starts_with("http://") {
            return Ok(Sink::Http(c.to_string()));
        }
        if c.starts_with("Endpoint=sb://") {
            return Err("Azure Event Hubs connection strings are not supported: give a file:// or http(s):// URL as the logger's connectionString".into());
        }
        Err("the logger's connectionString is not a file:// or http(s):// URL".into())
    }
}

/// Messages queued for HTTP sinks at most (beyond: dropped and counted).
const MAX_QUEUED: usize = 10_000;

/// Writes log-to-eventhub messages to their sinks.
pub(crate) struct LogSinks {
    files: Mutex<HashMap<std::path::PathBuf, std::fs::File>>,
    queue: tokio::sync::mpsc::Sender<(String, String)>,
    receiver: Mutex<Option<tokio::sync::mpsc::Receiver<(String, String)>>>,
    pub(crate) dropped: std::sync::atomic::AtomicU64,
}

impl Default for LogSinks {
    fn default() -> Self {
        let (queue, receiver) = tokio::sync::mpsc::channel(MAX_QUEUED);
        LogSinks {
            files: Mutex::new(HashMap::new()),
            queue,
            receiver: Mutex::new(Some(receiver)),
            dropped: Default::default(),
        }
    }
}

impl LogSinks {
    pub(crate) fn write(
        &self,
        sink: &Sink,
        message: String,
        http: &reqwest::Client,
    ) -> Result<(), String> {
        match sink {
            Sink::File(path) => {
                use std::io::Write;
                let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
                if !files.contains_key(path) {
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|e| {
                            format!("cannot open the logger's file {}: {e}", path.display())
                        })?;
                    files.insert(path.clone(), f);
                }
                let file = files.get_mut(path).ok_or("the logger's file is not open")?;
                let line = message.replace('\n', " ");
                writeln!(file, "{line}").map_err(|e| format!("cannot write the logger's file: {e}"))
            }
            Sink::Http(url) => {
                self.start_sender(http);
                self.queue.try_send((url.clone(), message)).map_err(|_| {
                    self.dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    "the logger's queue is full".to_string()
                })
            }
        }
    }

    /// The task that POSTs queued messages, started on the first one.
    fn start_sender(&self, http: &reqwest::Client) {
        let Some(mut receiver) = self
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let http = http.clone();
        tokio::spawn(async move {
            while let Some((url, message)) = receiver.recv().await {
                let sent = http
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(message)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                if let Err(e) = sent.and_then(|r| r.error_for_status()) {
                    tracing::warn!(error = %e.without_url(), "log-to-eventhub could not deliver a message");
                }
            }
        });
    }
}
