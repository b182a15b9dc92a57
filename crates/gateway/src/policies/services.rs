//! What the policy engine asks of the gateway (`exec::Services`): forwarding, send-request,
//! counters, slots, caches, backends; and `context`'s members from the routing results.

use super::caches::*;
use super::exchange::*;
use super::limits::*;
use crate::body::Body;
use crate::context::{GatewayError, RequestContext};
use crate::request::RequestHeaders;
use crate::shared::Shared;
use crate::table::{ApiRoute, ProductInfo, RoutingTable, SubscriptionInfo, UserInfo};
use gatehouse_policy::exec::{
    self, BackendInfo, BoxFut, Cached, Counted, CounterKey, Exchange, Forward, Outgoing,
    ResponseParts, SendError, Services,
};
use gatehouse_policy::expr::V;
use http_body_util::BodyExt;
use hyper::header::{self};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) struct GatewayServices<'a> {
    pub(super) shared: &'a Shared,
    pub(super) ctx: &'a RequestContext,
    pub(super) tls: bool,
    /// The client's body until a forward sends it (unless a policy buffered it).
    pub(super) request_body: Mutex<Option<crate::request::RequestBody>>,
    /// The backend's body, streamed to the client when no policy needs it buffered.
    pub(super) response_stream: Mutex<Option<Body>>,
    pub(super) buffer_response: bool,
    pub(super) backend_ms: Mutex<Option<f64>>,
}

pub(super) fn outgoing(client: &reqwest::Client, req: Outgoing) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut r = client.request(method, &req.url);
    for (k, v) in &req.headers {
        if !matches!(
            k.to_ascii_lowercase().as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection"
        ) {
            r = r.header(k, v);
        }
    }
    if let Some(b) = req.body {
        r = r.body(b);
    }
    r
}

impl Services for GatewayServices<'_> {
    fn forward<'a>(
        &'a self,
        ex: &'a mut Exchange,
        forward: Forward,
    ) -> BoxFut<'a, Result<(), exec::Failure>> {
        Box::pin(async move {
            let body = lock(&self.request_body).take();
            let started = Instant::now();
            let to_failure = |e: GatewayError| exec::Failure {
                status: e.status.as_u16(),
                reason: e.reason,
                message: e.message,
                policy: "forward-request",
                policy_id: None,
                pos: Default::default(),
                headers: Vec::new(),
            };
            let (request, prepared) =
                prepare_exchange(self.shared, self.ctx, ex, forward, body, self.tls, None)
                    .map_err(to_failure)?;
            let sent = prepared.send(request, self.shared, self.ctx).await;
            let answer = sent.as_ref().ok().map(|r| {
                let retry_after = match r.body().fields() {
                    Some(raw) => raw.get("retry-after"),
                    None => r.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
                };
                let secs = retry_after
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                (r.status().as_u16(), secs.map(Duration::from_secs))
            });
            self.count_for_breaker(ex, answer);
            let mut resp = sent.map_err(to_failure)?;
            // follow-redirects: up to 5 hops; 301/302/303 become GETs without a body.
            let mut hops = 0;
            while forward.follow_redirects && resp.status().is_redirection() && hops < 5 {
                let location = match resp.body().fields() {
                    Some(raw) => raw.get("location"),
                    None => resp.headers().get(header::LOCATION).map(|v| v.as_bytes()),
                };
                let Some(location) = location
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::to_string)
                else {
                    break;
                };
                let mut next = ex.clone();
                if matches!(resp.status().as_u16(), 301..=303) {
                    next.method = "GET".into();
                    next.request_body = None;
                }
                hops += 1;
                // Boxed: redirects are rare, and this keeps every request's future small.
                let (request, prepared) = prepare_exchange(
                    self.shared,
                    self.ctx,
                    &next,
                    forward,
                    None,
                    self.tls,
                    Some(location),
                )
                .map_err(to_failure)?;
                resp = Box::pin(prepared.send(request, self.shared, self.ctx))
                    .await
                    .map_err(to_failure)?;
            }
            *lock(&self.backend_ms) = Some(started.elapsed().as_secs_f64() * 1000.0);
            ex.forward = Some(forward);
            let (rparts, mut rbody) = resp.into_parts();
            // The backend's fields stay as read until a policy reads or changes them.
            let original: exec::OriginalHeaders = match rbody.take_fields() {
                Some(raw) => Arc::new(crate::headers::RawFields(raw)),
                None => Arc::new(rparts.headers),
            };
            let mut out = ResponseParts {
                status: rparts.status.as_u16(),
                reason: rparts.status.canonical_reason().unwrap_or("").to_string(),
                headers: exec::Headers::with_original(original, READ_HEADERS),
                body: None,
            };
            if self.buffer_response {
                let limit = self.shared.config.max_body_bytes as usize;
                let limited = http_body_util::Limited::new(rbody, limit);
                let bytes = limited.collect().await.map_err(|_| exec::Failure {
                    status: 502,
                    reason: "BackendConnectionFailure",
                    message: "Bad gateway: the backend's response could not be read, or is larger than a policy may read.".into(),
                    policy: "forward-request",
                    policy_id: None,
                    pos: Default::default(),
                    headers: Vec::new(),
                })?;
                out.body = Some(bytes.to_bytes().to_vec());
                *lock(&self.response_stream) = None;
            } else {
                *lock(&self.response_stream) = Some(rbody);
            }
            ex.response = Some(out);
            Ok(())
        })
    }

    fn send(
        &self,
        req: Outgoing,
        timeout_secs: u64,
    ) -> BoxFut<'_, Result<ResponseParts, SendError>> {
        Box::pin(async move {
            let timeout = timeout_secs.max(1);
            let r = outgoing(&self.shared.outbound, req)
                .timeout(Duration::from_secs(timeout))
                .send()
                .await
                .map_err(|e| {
                    if e.is_timeout() {
                        SendError::Timeout(timeout)
                    } else {
                        SendError::Unreachable(e.to_string())
                    }
                })?;
            let status = r.status();
            let headers = pairs_of(r.headers());
            let body = read_limited(r, self.shared.config.max_body_bytes)
                .await
                .map_err(SendError::Unreadable)?;
            Ok(ResponseParts {
                status: status.as_u16(),
                reason: status.canonical_reason().unwrap_or("").to_string(),
                headers: headers.into(),
                body: Some(body.to_vec()),
            })
        })
    }

    fn send_one_way(&self, req: Outgoing) {
        let r = outgoing(&self.shared.outbound, req).timeout(Duration::from_secs(60));
        tokio::spawn(async move {
            if let Err(e) = r.send().await {
                tracing::warn!(error = %e, "send-one-way-request failed");
            }
        });
    }

    fn sleep(&self, duration: Duration) -> BoxFut<'_, ()> {
        Box::pin(tokio::time::sleep(duration))
    }

    fn acquire(&self, key: &str, max: u64) -> Option<Box<dyn std::any::Any + Send>> {
        self.shared
            .concurrency
            .acquire(key, max)
            .map(|s| Box::new(s) as Box<dyn std::any::Any + Send>)
    }

    fn count(
        &self,
        key: CounterKey<'_>,
        calls: u64,
        period_secs: u64,
        increment: u64,
        sliding: bool,
    ) -> Counted {
        self.shared
            .counters
            .count(key, calls, period_secs, increment, sliding, Instant::now())
    }

    fn backend(&self, id: &str) -> Option<BackendInfo> {
        let policies = &self.ctx.table.policies;
        let health = &self.shared.backend_health;
        let now = Instant::now();
        if let Some(members) = policies.pools.get(id) {
            return Some(match health.choose(id, members, now) {
                Ok(m) => policies.backends.get(&m.backend)?.clone(),
                Err(wait) => BackendInfo {
                    url: String::new(),
                    validate_chain: true,
                    validate_name: true,
                    headers: Vec::new(),
                    query: Vec::new(),
                    authorization: None,
                    entity: id.to_string(),
                    unavailable: Some(wait.as_secs().max(1)),
                },
            });
        }
        let mut b = policies.backends.get(id)?.clone();
        b.unavailable = health.open_for(id, now).map(|d| d.as_secs().max(1));
        Some(b)
    }

    fn example(&self, status: u16, content_type: Option<&str>) -> Option<(String, String)> {
        // Read when asked (mock-response is rare): the table does not keep response examples.
        let resource = self.operation_resource()?;
        let r = resource
            .properties
            .get("responses")?
            .as_array()?
            .iter()
            .find(|r| r.get("statusCode").and_then(Value::as_u64) == Some(status as u64))?;
        let reps = r.get("representations")?.as_array()?;
        let rep = reps.iter().find(|x| {
            content_type.is_none_or(|c| x.get("contentType").and_then(Value::as_str) == Some(c))
        })?;
        let ct = rep
            .get("contentType")
            .and_then(Value::as_str)
            .unwrap_or("application/json")
            .to_string();
        let example = rep
            .get("examples")
            .and_then(|e| e.as_object())
            .and_then(|m| m.values().next())
            .and_then(|e| e.get("value"))
            .or_else(|| rep.get("sample"))?;
        let body = match example {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Some((ct, body))
    }

    fn operation_definition(&self) -> Option<Value> {
        Some(Value::Object(self.operation_resource()?.properties))
    }

    fn content_schema(&self, id: &str, global: bool) -> Option<exec::SchemaDocument> {
        let path = if global {
            format!("/schemas/{id}")
        } else {
            format!("{}/schemas/{id}", self.api_path()?)
        };
        let stored = self.shared.store.read(|r| r.get(&path)).ok()??;
        let props = &stored.properties;
        let document = match props.get("document") {
            Some(d) if d.is_object() => d.clone(),
            // A schema given as text (`value`) is read as JSON.
            _ => serde_json::from_str(props.get("value")?.as_str()?).ok()?,
        };
        Some(exec::SchemaDocument {
            key: format!("{path}@{}", stored.revision),
            document,
        })
    }

    fn cache_get(&self, key: &str) -> Option<Cached> {
        self.shared.cache.get(key)
    }

    fn cache_put(&self, key: &str, value: Cached, ttl_secs: u64) {
        self.shared.cache.put(key, value, ttl_secs)
    }

    fn cache_remove(&self, key: &str) {
        self.shared.cache.remove(key)
    }

    fn openid_keys(&self, config_url: &str) -> Option<Vec<Value>> {
        self.shared.jwks.keys(config_url)
    }

    fn emit_metric(&self, metric: exec::Metric) {
        self.shared.custom_metrics.record(metric);
    }

    fn log_to(&self, logger: &str, message: String) -> Result<(), String> {
        let sink = match self.ctx.table.policies.loggers.get(logger) {
            None => return Err(format!("the logger '{logger}' does not exist")),
            Some(Err(why)) => return Err(format!("the logger '{logger}': {why}")),
            Some(Ok(sink)) => sink,
        };
        self.shared
            .log_sinks
            .write(sink, message, &self.shared.outbound)
            .inspect_err(|why| tracing::warn!(logger, error = %why, "log-to-eventhub: a message was not written"))
    }

    fn identity_token<'a>(
        &'a self,
        resource: &'a str,
        client_id: Option<&'a str>,
    ) -> BoxFut<'a, Result<String, String>> {
        Box::pin(self.shared.identity.token(resource, client_id))
    }

    fn entra_authority(&self) -> String {
        self.shared
            .config
            .entra_authority
            .clone()
            .map(|a| a.trim_end_matches('/').to_string())
            .unwrap_or_else(|| exec::ENTRA_AUTHORITY.into())
    }

    fn trace(&self, source: &str, message: &str) {
        if let Ok(mut t) = self.ctx.traces.lock() {
            t.push((source.to_string(), message.to_string()));
        }
        tracing::info!(target: "gatehouse::trace", request_id = %self.ctx.request_id, source, message, "trace");
    }
}

impl GatewayServices<'_> {
    /// The matched operation as stored, read when a policy asks (the table keeps only what
    /// routing needs).
    /// The stored path of the matched API revision.
    fn api_path(&self) -> Option<String> {
        let api = self.ctx.api.as_ref()?;
        Some(if api.is_current {
            format!("/apis/{}", api.id)
        } else {
            format!("/apis/{};rev={}", api.id, api.revision)
        })
    }

    fn operation_resource(&self) -> Option<gatehouse_model::StoredResource> {
        let op = self.ctx.operation()?;
        let path = format!("{}/operations/{}", self.api_path()?, op.id);
        self.shared.store.read(|r| r.get(&path)).ok()?
    }

    /// Counts a call to the backend entity set-backend-service chose against its circuit
    /// breaker: its status, or `None` when it did not answer.
    fn count_for_breaker(&self, ex: &Exchange, answer: Option<(u16, Option<Duration>)>) {
        let Some(entity) = &ex.backend_entity else {
            return;
        };
        let Some(rule) = self.ctx.table.policies.breakers.get(entity) else {
            return;
        };
        self.shared.backend_health.record(
            entity,
            rule,
            answer.map(|(s, _)| s),
            answer.and_then(|(_, r)| r),
            Instant::now(),
        );
    }
}

/// The request's fixed `context` members, answered from the routing results when a policy
/// reads one (most policies read none or a few).
pub(super) struct RequestInfo {
    pub(super) request_id: String,
    /// When the request came (`context.Timestamp` is worked out from it when read).
    pub(super) started: Instant,
    pub(super) table: Arc<RoutingTable>,
    pub(super) api: Option<Arc<ApiRoute>>,
    pub(super) operation: Option<usize>,
    pub(super) product: Option<Arc<ProductInfo>>,
    pub(super) subscription: Option<Arc<SubscriptionInfo>>,
    /// The client's headers, for the key the request came with (read only when a policy
    /// asks for `Subscription.Key`).
    pub(super) headers: Arc<RequestHeaders>,
    pub(super) user: Option<Arc<UserInfo>>,
}

impl RequestInfo {
    pub(super) fn new(ctx: &RequestContext, headers: Arc<RequestHeaders>) -> RequestInfo {
        RequestInfo {
            request_id: ctx.request_id.to_string(),
            started: ctx.started,
            table: ctx.table.clone(),
            api: ctx.api.clone(),
            operation: ctx.operation,
            product: ctx.product.clone(),
            subscription: ctx.subscription.clone(),
            headers,
            user: ctx.user.clone(),
        }
    }
}

impl exec::InfoSource for RequestInfo {
    fn get(&self, member: &str) -> Option<V> {
        let s = |v: &str| Some(V::Str(v.to_string()));
        let (object, leaf) = member.split_once('.').unwrap_or((member, ""));
        match (object, leaf) {
            ("RequestId", "") => s(&self.request_id),
            ("Timestamp", "") => Some(V::Time(
                time::OffsetDateTime::now_utc() - self.started.elapsed(),
            )),
            ("Deployment", "Region") => s(&self.table.region),
            ("Deployment", "ServiceName") => s(&self.table.service_name),
            ("Deployment", "GatewayId") => s("managed"),
            ("Api", leaf) => {
                let api = self.api.as_ref()?;
                match leaf {
                    "Id" => s(&api.id),
                    "Name" => s(&api.name),
                    "Path" => s(&api.path),
                    "ServiceUrl" => s(api.service_url.as_deref().unwrap_or("")),
                    "Revision" => s(&api.revision.to_string()),
                    "Version" => s(api.version.as_deref().unwrap_or("")),
                    "IsCurrentRevision" => Some(V::Bool(api.is_current)),
                    _ => None,
                }
            }
            ("Operation", leaf) => {
                let op = &self.api.as_ref()?.operations[self.operation?];
                match leaf {
                    "Id" | "Name" => s(&op.id),
                    "Method" => s(&op.method),
                    "UrlTemplate" => s(&op.url_template),
                    _ => None,
                }
            }
            ("Product", leaf) => {
                let p = self.product.as_ref()?;
                match leaf {
                    "Id" => s(&p.id),
                    "Name" => s(&p.name),
                    "State" => s(&p.state),
                    "SubscriptionRequired" => Some(V::Bool(p.subscription_required)),
                    _ => None,
                }
            }
            ("Subscription", leaf) => {
                let sub = self.subscription.as_ref()?;
                match leaf {
                    "Id" => s(&sub.id),
                    "Name" => s(&sub.name),
                    "Key" => {
                        let header = self.api.as_ref().map(|a| a.key_header.as_str());
                        let sent = header.and_then(|h| self.headers.get_str(h));
                        s(sent.unwrap_or(&sub.primary_key))
                    }
                    "PrimaryKey" => s(&sub.primary_key),
                    "SecondaryKey" => s(&sub.secondary_key),
                    _ => None,
                }
            }
            ("User", leaf) => {
                let u = self.user.as_ref()?;
                match leaf {
                    "Id" => s(&u.id),
                    "Email" => s(&u.email),
                    "FirstName" => s(&u.first_name),
                    "LastName" => s(&u.last_name),
                    // IEnumerable<IGroup>: each with its Id and Name.
                    "Groups" => Some(V::list(
                        u.groups
                            .iter()
                            .map(|g| V::json(serde_json::json!({ "Id": g, "Name": g })))
                            .collect(),
                    )),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn has(&self, object: &str) -> bool {
        match object {
            "Api" => self.api.is_some(),
            "Operation" => self.operation.is_some(),
            "Product" => self.product.is_some(),
            "Subscription" => self.subscription.is_some(),
            "User" => self.user.is_some(),
            _ => false,
        }
    }
}
