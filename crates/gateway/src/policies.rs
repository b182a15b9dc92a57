//! Policies in the gateway: the documents of every scope compiled from the mirror, the
//! counters rate limits and quotas use, and the request path that runs APIM's phases through
//! the policy engine.
//!
//! Invariants: documents are compiled when the configuration changes, never per request; a
//! request with no policy at any scope takes the plain path (no cost); a document that no
//! longer compiles (a named value it used was deleted) fails its requests closed with 500
//! rather than run without, say, its ip-filter.

use crate::Shared;
use crate::proxy::{self, Body};
use crate::request::{ClientRequest, RequestHeaders};
use crate::server::{GatewayError, RequestContext, json_error};
use crate::table::{
    ApiRoute, Change, ConfigMirror, ProductInfo, RoutingTable, SubscriptionInfo, UserInfo,
};
use bytes::Bytes;
use gatehouse_model::Kind;
use gatehouse_policy::doc::Resolver;
use gatehouse_policy::exec::{
    self, BackendInfo, BoxFut, Cached, Chain, Counted, CountedForward, CounterKey, Exchange, Flow,
    Forward, Outgoing, ResponseParts, Services,
};
use gatehouse_policy::expr::V;
use gatehouse_policy::{Document, Section};
use http_body_util::BodyExt;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A scope's compiled document, or why it does not compile.
pub type Compiled = Result<Arc<Document>, String>;

/// Maps looked up on every request, keyed by configuration ids (not chosen by clients), so a
/// fast hash rather than SipHash.
type ById<T> = HashMap<String, T, foldhash::fast::RandomState>;

/// Every scope's policy document, compiled.
#[derive(Debug, Default)]
pub struct Policies {
    global: Option<Compiled>,
    /// By product id.
    products: ById<Compiled>,
    /// By the API's stored id (`echo`, `echo;rev=2`).
    apis: ById<Compiled>,
    /// By `{api stored id}/{operation id}`.
    operations: ById<Compiled>,
    backends: HashMap<String, BackendInfo>,
    /// OpenID configuration URLs of validate-jwt policies, whose keys the gateway keeps.
    pub openid_urls: Vec<String>,
}

struct MirrorResolver<'a>(&'a ConfigMirror);

impl Resolver for MirrorResolver<'_> {
    fn named_value(&self, name: &str) -> Option<String> {
        let nv = self
            .0
            .get(Kind::NamedValue, &format!("/namedValues/{name}"))
            .or_else(|| {
                self.0
                    .of(Kind::NamedValue)
                    .find(|r| r.properties.get("displayName").and_then(Value::as_str) == Some(name))
            })?;
        Some(
            nv.properties
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )
    }

    fn fragment(&self, id: &str) -> Option<(String, String)> {
        let f = self
            .0
            .get(Kind::PolicyFragment, &format!("/policyFragments/{id}"))?;
        let s = |k: &str| {
            f.properties
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Some((s("value")?, s("format").unwrap_or_else(|| "xml".into())))
    }
}

/// Kinds whose change means the policies must be compiled again.
pub fn affects_policies(kind: Kind) -> bool {
    kind.is_policy()
        || matches!(
            kind,
            Kind::PolicyFragment | Kind::NamedValue | Kind::Backend
        )
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

impl Policies {
    pub fn compile(mirror: &ConfigMirror) -> Policies {
        let resolver = MirrorResolver(mirror);
        let mut p = Policies::default();
        for kind in POLICY_KINDS {
            for r in mirror.of(kind) {
                p.place(kind, &r.path, Some(compile_one(&resolver, r)));
            }
        }
        p.backends = backends(mirror);
        p.collect_openid_urls();
        p
    }

    /// The policies after `changes`: only the documents a change touches are compiled again —
    /// a changed policy; the policies naming a changed named value (`{{…}}`) or including a
    /// changed fragment — and backends are re-read only when one changed.
    pub fn next(&self, mirror: &ConfigMirror, changes: &[Change]) -> Policies {
        let resolver = MirrorResolver(mirror);
        let mut p = Policies {
            global: self.global.clone(),
            products: self.products.clone(),
            apis: self.apis.clone(),
            operations: self.operations.clone(),
            backends: self.backends.clone(),
            openid_urls: Vec::new(),
        };
        let mut named: Vec<String> = Vec::new();
        let mut fragments_changed = false;
        for c in changes {
            let r = c.new.as_ref().or(c.old.as_ref());
            match c.kind {
                k if k.is_policy() => {
                    let path = r.map(|r| r.path.as_str()).unwrap_or_default();
                    p.place(k, path, c.new.as_ref().map(|n| compile_one(&resolver, n)));
                }
                Kind::NamedValue => {
                    for res in [&c.old, &c.new].into_iter().flatten() {
                        named.push(res.name().to_string());
                        if let Some(d) = res.properties.get("displayName").and_then(Value::as_str) {
                            named.push(d.to_string());
                        }
                    }
                }
                Kind::PolicyFragment => fragments_changed = true,
                Kind::Backend => p.backends = backends(mirror),
                _ => {}
            }
        }
        if !named.is_empty() || fragments_changed {
            for kind in POLICY_KINDS {
                for r in mirror.of(kind) {
                    let value = r
                        .properties
                        .get("value")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    // Fragments may hold named values and other fragments: a policy including
                    // any fragment is compiled again whenever a fragment or named value changes.
                    let touched = value.contains("include-fragment")
                        || named
                            .iter()
                            .any(|n| value.contains(&format!("{{{{{n}}}}}")));
                    if touched {
                        p.place(kind, &r.path, Some(compile_one(&resolver, r)));
                    }
                }
            }
        }
        p.collect_openid_urls();
        p
    }

    fn place(&mut self, kind: Kind, path: &str, compiled: Option<Compiled>) {
        let seg = segments(path);
        match (kind, seg.as_slice()) {
            (Kind::GlobalPolicy, _) => self.global = compiled,
            (Kind::ProductPolicy, ["products", id, ..]) => {
                put(&mut self.products, id.to_string(), compiled)
            }
            (Kind::ApiPolicy, ["apis", id, ..]) => put(&mut self.apis, id.to_string(), compiled),
            (Kind::OperationPolicy, ["apis", api, "operations", op, ..]) => {
                put(&mut self.operations, format!("{api}/{op}"), compiled)
            }
            _ => {}
        }
    }

    fn collect_openid_urls(&mut self) {
        let docs = self
            .global
            .iter()
            .chain(self.products.values())
            .chain(self.apis.values())
            .chain(self.operations.values());
        let mut urls: Vec<String> = docs.flatten().flat_map(|d| d.openid_urls()).collect();
        urls.sort();
        urls.dedup();
        self.openid_urls = urls;
    }

    pub fn is_empty(&self) -> bool {
        self.global.is_none()
            && self.products.is_empty()
            && self.apis.is_empty()
            && self.operations.is_empty()
    }

    /// The chain of documents for a routed request, or the message of one that does not compile.
    pub fn chain(&self, ctx: &RequestContext) -> Result<Chain<'_>, String> {
        let mut chain = Chain::default();
        fn pick(c: Option<&Compiled>) -> Result<Option<&Document>, String> {
            match c {
                None => Ok(None),
                Some(Ok(d)) => Ok(Some(d.as_ref())),
                Some(Err(e)) => Err(e.clone()),
            }
        }
        chain.levels[0] = pick(self.global.as_ref())?;
        if let Some(p) = &ctx.product {
            chain.levels[1] = pick(self.products.get(&*p.id))?;
        }
        if let Some(api) = &ctx.api {
            let stored = if api.is_current {
                std::borrow::Cow::Borrowed(&*api.id)
            } else {
                std::borrow::Cow::Owned(format!("{};rev={}", api.id, api.revision))
            };
            chain.levels[2] = pick(self.apis.get(&*stored))?;
            // Most instances have no operation policies: no key to build then.
            if !self.operations.is_empty()
                && let Some(op) = ctx.operation()
            {
                let mut key = String::with_capacity(stored.len() + 1 + op.id.len());
                key.push_str(&stored);
                key.push('/');
                key.push_str(&op.id);
                chain.levels[3] = pick(self.operations.get(&key))?;
            }
        }
        Ok(chain)
    }
}

/// Rate-limit and quota counters, by key.
#[derive(Default)]
pub struct Counters {
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    /// Limits per subscription, by the policy's place (name, line, column), then by
    /// subscription: no key text to build per call, and configuration ids, which clients do
    /// not choose, hashed with foldhash.
    per_subscription: HashMap<(&'static str, u32, u32), ById<Window>, foldhash::fast::RandomState>,
    /// Counters named by text, which clients can choose (by-key limits): SipHash, which
    /// chosen collisions do not slow down.
    named: HashMap<String, Window>,
    /// When `named` holds this many, windows that count nothing any more are dropped (so keys
    /// clients make up cannot grow it without bound).
    sweep_at: usize,
}

/// The fewest named windows at which a sweep runs.
const SWEEP_FLOOR: usize = 4096;

struct Window {
    start: Instant,
    count: u64,
    previous: u64,
    period: Duration,
}

impl Counters {
    /// Counts a call made at `now`.
    fn count(
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
        let count = |w: &mut Window| w.count(now, period, calls, increment, sliding);
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
    fn sweep_if_due(&mut self, now: Instant) {
        if self.named.len() < self.sweep_at.max(SWEEP_FLOOR) {
            return;
        }
        self.named.retain(|_, w| !w.is_spent(now));
        self.sweep_at = (self.named.len() * 2).max(SWEEP_FLOOR);
    }
}

/// Counts in the window named `name`, a new one from `now` when there is none; looked up
/// before inserting, so that the name is copied only for a new window.
fn count_in<S: std::hash::BuildHasher>(
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
    fn is_spent(&self, now: Instant) -> bool {
        now.duration_since(self.start) >= self.period.saturating_mul(2)
    }

    fn count(
        &mut self,
        now: Instant,
        period: Duration,
        calls: u64,
        increment: u64,
        sliding: bool,
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
        let used = w.count as f64 + w.previous as f64 * weight;
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

struct GatewayServices<'a> {
    shared: &'a Shared,
    ctx: &'a RequestContext,
    tls: bool,
    /// The client's body until a forward sends it (unless a policy buffered it).
    request_body: Mutex<Option<crate::h1_server::RequestBody>>,
    /// The backend's body, streamed to the client when no policy needs it buffered.
    response_stream: Mutex<Option<Body>>,
    buffer_response: bool,
    backend_ms: Mutex<Option<f64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn outgoing(client: &reqwest::Client, req: Outgoing) -> reqwest::RequestBuilder {
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

/// limit-concurrency's slots, by key; a slot is given back when its guard drops.
#[derive(Default)]
pub struct Concurrency {
    in_use: Mutex<HashMap<String, Arc<std::sync::atomic::AtomicU64>>>,
    /// When `in_use` holds this many keys, those no request holds are dropped (keys may come
    /// from clients), and the next sweep waits for twice as many.
    sweep_at: std::sync::atomic::AtomicUsize,
}

struct Slot(Arc<std::sync::atomic::AtomicU64>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Concurrency {
    fn acquire(&self, key: &str, max: u64) -> Option<Slot> {
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
            let mut resp = prepared
                .send(request, self.shared, self.ctx)
                .await
                .map_err(to_failure)?;
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
                Some(raw) => Arc::new(proxy::RawFields(raw)),
                None => Arc::new(rparts.headers),
            };
            let mut out = ResponseParts {
                status: rparts.status.as_u16(),
                reason: rparts.status.canonical_reason().unwrap_or("").to_string(),
                headers: exec::Headers::with_original(original, listed),
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

    fn send(&self, req: Outgoing, timeout_secs: u64) -> BoxFut<'_, Result<ResponseParts, String>> {
        Box::pin(async move {
            let r = outgoing(&self.shared.outbound, req)
                .timeout(Duration::from_secs(timeout_secs.max(1)))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let headers = pairs_of(r.headers());
            let body = read_limited(r, self.shared.config.max_body_bytes).await?;
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
        self.ctx.table.policies.backends.get(id).cloned()
    }

    fn example(&self, status: u16, content_type: Option<&str>) -> Option<(String, String)> {
        // Read when asked (mock-response is rare): the table does not keep response examples.
        let api = self.ctx.api.as_ref()?;
        let op = self.ctx.operation()?;
        let stored = if api.is_current {
            api.id.to_string()
        } else {
            format!("{};rev={}", api.id, api.revision)
        };
        let path = format!("/apis/{stored}/operations/{}", op.id);
        let resource = self.shared.store.read(|r| r.get(&path)).ok()??;
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

    fn trace(&self, source: &str, message: &str) {
        if let Ok(mut t) = self.ctx.traces.lock() {
            t.push((source.to_string(), message.to_string()));
        }
        tracing::info!(target: "gatehouse::trace", request_id = %self.ctx.request_id, source, message, "trace");
    }
}

/// The request's fixed `context` members, answered from the routing results when a policy
/// reads one (most policies read none or a few).
struct RequestInfo {
    request_id: String,
    /// When the request came (`context.Timestamp` is worked out from it when read).
    started: Instant,
    table: Arc<RoutingTable>,
    api: Option<Arc<ApiRoute>>,
    operation: Option<usize>,
    product: Option<Arc<ProductInfo>>,
    subscription: Option<Arc<SubscriptionInfo>>,
    /// The client's headers, for the key the request came with (read only when a policy
    /// asks for `Subscription.Key`).
    headers: Arc<RequestHeaders>,
    user: Option<Arc<UserInfo>>,
}

impl RequestInfo {
    fn new(ctx: &RequestContext, headers: Arc<RequestHeaders>) -> RequestInfo {
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
                    "Groups" => Some(V::List(
                        u.groups.iter().map(|g| V::Str(g.clone())).collect(),
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

/// A header map handed to the policies ([`exec::Headers::with_original`]), listed as pairs.
fn listed(original: &exec::OriginalHeaders) -> Vec<(String, String)> {
    if let Some(map) = original.downcast_ref::<hyper::HeaderMap>() {
        return pairs_of(map);
    }
    if let Some(proxy::RawFields(raw)) = original.downcast_ref::<proxy::RawFields>() {
        return raw_pairs(raw);
    }
    match original.downcast_ref::<RequestHeaders>() {
        Some(RequestHeaders::Map(map)) => pairs_of(map),
        Some(RequestHeaders::Raw(raw)) => raw_pairs(raw),
        None => Vec::new(),
    }
}

/// Fields as read, listed with their names lowercase (as a map has them).
fn raw_pairs(raw: &crate::request::RawHead) -> Vec<(String, String)> {
    raw.iter()
        .filter_map(|(k, v)| {
            let v = std::str::from_utf8(v).ok()?;
            Some((
                String::from_utf8_lossy(k).to_ascii_lowercase(),
                v.to_string(),
            ))
        })
        .collect()
}

fn pairs_of(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_string(), v.to_string()))
        })
        .collect()
}

/// The message's header map as it arrived when no policy changed it, else one built from the
/// pairs the policies left.
fn original_or_built(headers: &exec::Headers) -> hyper::HeaderMap {
    match headers
        .original()
        .and_then(|o| o.downcast_ref::<RequestHeaders>())
    {
        Some(original) => original.to_map(),
        None => header_map(headers),
    }
}

/// Like [`original_or_built`], taking the original rather than copying it when no one else
/// holds it; a backend's fields as read stay so (returned apart, the map then empty) when
/// `raw_allowed`.
fn into_map(
    headers: exec::Headers,
    raw_allowed: bool,
) -> (hyper::HeaderMap, Option<proxy::RawFields>) {
    if let Some(raw) = headers
        .original()
        .and_then(|o| o.downcast_ref::<proxy::RawFields>())
    {
        return if raw_allowed {
            (hyper::HeaderMap::new(), Some(raw.clone()))
        } else {
            (raw.0.to_map(), None)
        };
    }
    if !headers
        .original()
        .is_some_and(|o| o.is::<hyper::HeaderMap>())
    {
        return (header_map(&headers), None);
    }
    match headers
        .into_original()
        .map(|o| o.downcast::<hyper::HeaderMap>())
    {
        Ok(Ok(map)) => (
            Arc::try_unwrap(map).unwrap_or_else(|shared| (*shared).clone()),
            None,
        ),
        // Not reached: checked just above.
        _ => (hyper::HeaderMap::new(), None),
    }
}

fn header_map(pairs: &[(String, String)]) -> hyper::HeaderMap {
    let mut h = hyper::HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.append(n, v);
        }
    }
    h
}

fn error_parts(status: u16, message: &str, headers: &[(String, String)]) -> ResponseParts {
    let mut h = vec![(
        "Content-Type".to_string(),
        "application/json; charset=utf-8".to_string(),
    )];
    h.extend(headers.iter().cloned());
    ResponseParts {
        status,
        reason: String::new(),
        headers: h.into(),
        body: Some(
            serde_json::json!({"statusCode": status, "message": message})
                .to_string()
                .into_bytes(),
        ),
    }
}

/// What a policy-run request ends with: the response, plus the on-error reason if any.
pub struct Outcome {
    pub response: Response<Body>,
    pub backend_ms: Option<f64>,
    pub error_reason: Option<&'static str>,
}

fn build_response(ex: &Exchange, parts: ResponseParts, stream: Option<Body>) -> Response<Body> {
    let has_body = parts.body.is_some();
    let body = match (parts.body, stream) {
        (Some(b), _) => proxy::full(b),
        (None, Some(s)) => s,
        (None, None) => proxy::empty(),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(parts.status).unwrap_or(StatusCode::OK);
    // Fields as read carry the backend's Content-Length, which a body set here replaces.
    let (mut headers, raw) = into_map(parts.headers, !has_body);
    proxy::strip_hop_by_hop(&mut headers);
    if has_body {
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
    }
    for (k, v) in exec::cors_response_headers(ex) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            headers.insert(n, v);
        }
    }
    *resp.headers_mut() = headers;
    if let Some(proxy::RawFields(raw)) = raw {
        resp.body_mut().set_fields(Some(raw));
    }
    resp
}

/// The method's name, without an allocation for the standard ones.
fn static_method(method: &hyper::Method) -> std::borrow::Cow<'static, str> {
    use hyper::Method;
    let name = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => return method.as_str().to_string().into(),
    };
    name.into()
}

/// A call a limit refused: APIM's default error answer (the chain has no on-error) and why.
pub struct Refused {
    pub response: Response<Body>,
    pub reason: &'static str,
}

/// Counts a call against the limits of an [`exec::counted_forward`] chain.
pub fn count_call(
    shared: &Shared,
    ctx: &RequestContext,
    counted: &CountedForward<'_>,
) -> Result<(), Box<Refused>> {
    // Per-API and per-operation limits name the request's API and operation.
    let info = |member: &str| -> Option<V> {
        let api = ctx.api.as_ref()?;
        let name: &str = match member {
            "Api.Id" => &api.id,
            "Api.Name" => &api.name,
            "Operation.Id" | "Operation.Name" => &api.operations[ctx.operation?].id,
            _ => return None,
        };
        Some(V::Str(name.to_string()))
    };
    // The call is counted when it arrived: no other clock read.
    let count = |key: CounterKey<'_>, calls, period, increment, sliding| {
        shared
            .counters
            .count(key, calls, period, increment, sliding, ctx.started)
    };
    let subscription = ctx.subscription.as_ref().map(|s| &*s.id);
    exec::count_for_subscription(counted, subscription, &info, &count).map_err(|refused| {
        let status = StatusCode::from_u16(refused.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
        let mut resp = json_error(status, &refused.message);
        for (name, value) in &refused.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                resp.headers_mut().insert(n, v);
            }
        }
        Box::new(Refused {
            response: resp,
            reason: refused.reason,
        })
    })
}

/// How the policy path ends.
pub enum Served {
    /// With the response: the policies' own, or the backend's after them.
    Answered(Outcome),
    /// Inbound let the request through and nothing runs after it ([`exec::plain_forward`]):
    /// the caller forwards it as it does without policies, answering within `timeout`.
    Forward {
        request: ClientRequest,
        timeout: Duration,
    },
}

/// Serves a routed request through the policy chain: inbound, backend (forwarding when
/// forward-request ran), outbound, and on-error for any failure.
pub async fn serve(
    shared: &Shared,
    ctx: &RequestContext,
    chain: Chain<'_>,
    req: ClientRequest,
    routed: crate::server::Routed,
    remote: SocketAddr,
    tls: bool,
) -> Served {
    let api = ctx.api.as_ref().expect("routed");
    let ClientRequest {
        method,
        uri,
        version,
        headers,
        body,
    } = req;
    let host_header = headers.get_str("host").unwrap_or("");
    let (host, port) = match host_header.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_string(), p.parse().unwrap_or(0)),
        _ => (host_header.to_string(), if tls { 443 } else { 80 }),
    };
    let original_query = uri.query().unwrap_or("").to_string();
    let headers = Arc::new(headers);
    let mut ex = Exchange {
        method: static_method(&method),
        scheme: if tls { "https" } else { "http" },
        host,
        port,
        original_path: uri.path().to_string(),
        original_query: original_query.clone(),
        backend_path: routed.rest,
        query: original_query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .filter(|(k, _)| k != &api.key_query)
            .collect(),
        request_headers: exec::Headers::with_original(headers.clone(), listed),
        ip: Some(remote.ip()),
        info: exec::Info::from_source(Arc::new(RequestInfo::new(ctx, headers.clone()))),
        matched_parameters: routed.parameters,
        started: Some(ctx.started),
        ..Exchange::default()
    };
    let svc = GatewayServices {
        shared,
        ctx,
        tls,
        request_body: Mutex::new(None),
        response_stream: Mutex::new(None),
        buffer_response: chain.reads_body(),
        backend_ms: Mutex::new(None),
    };
    // The forward of a chain that only checks the request, with the body it sends.
    let mut plain = None;
    if chain.reads_body() {
        let limited = http_body_util::Limited::new(body, shared.config.max_body_bytes as usize);
        match limited.collect().await {
            Ok(b) => ex.request_body = Some(b.to_bytes().to_vec()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Served::Answered(Outcome {
                    response: json_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "The request body is larger than the limit.",
                    ),
                    backend_ms: None,
                    error_reason: Some("RequestEntityTooLarge"),
                });
            }
            Err(e) => {
                let detail = proxy::client_body_error(e.as_ref()).unwrap_or_else(|| e.to_string());
                return Served::Answered(Outcome {
                    response: json_error(
                        StatusCode::BAD_REQUEST,
                        &format!("Bad request: {detail}."),
                    ),
                    backend_ms: None,
                    error_reason: Some("ClientConnectionFailure"),
                });
            }
        }
    } else {
        match exec::plain_forward(&chain) {
            Some(forward) if !ctx.preflight => plain = Some((forward, body)),
            _ => *lock(&svc.request_body) = Some(body),
        }
    }
    if ctx.preflight {
        // Only cors runs for a preflight; if none answers it, the request is not routed.
        ex.preflight = true;
        return Served::Answered(
            match exec::run(&chain, Section::Inbound, &mut ex, &svc).await {
                Flow::Respond => {
                    let parts = ex.response.take().unwrap_or_default();
                    Outcome {
                        response: build_response(&ex, parts, None),
                        backend_ms: None,
                        error_reason: None,
                    }
                }
                _ => Outcome {
                    response: json_error(
                        StatusCode::NOT_FOUND,
                        crate::server::MSG_OPERATION_NOT_FOUND,
                    ),
                    backend_ms: None,
                    error_reason: Some("OperationNotFound"),
                },
            },
        );
    }
    let flow = 'phases: {
        match exec::run(&chain, Section::Inbound, &mut ex, &svc).await {
            Flow::Next => {}
            other => break 'phases other,
        }
        if let Some((forward, body)) = plain {
            // The exchange held the only other references to the headers.
            drop(ex);
            let headers = Arc::try_unwrap(headers).unwrap_or_else(|shared| (*shared).clone());
            return Served::Forward {
                request: ClientRequest {
                    method,
                    uri,
                    version,
                    headers,
                    body,
                },
                timeout: crate::server::forward_timeout(&forward),
            };
        }
        match exec::run(&chain, Section::Backend, &mut ex, &svc).await {
            Flow::Next => {}
            other => break 'phases other,
        }
        if ex.forward.is_none() {
            // No forward-request ran: the response is whatever the policies set.
            ex.response.get_or_insert(ResponseParts {
                status: 200,
                reason: String::new(),
                headers: Vec::new().into(),
                body: Some(Vec::new()),
            });
        }
        exec::run(&chain, Section::Outbound, &mut ex, &svc).await
    };
    let mut stream = lock(&svc.response_stream).take();
    let backend_ms = *lock(&svc.backend_ms);
    let mut error_reason = None;
    if let Flow::Fail(f) = flow {
        error_reason = Some(f.reason);
        stream = None;
        ex.response = Some(error_parts(f.status, &f.message, &f.headers));
        if let Flow::Fail(again) = exec::run(&chain, Section::OnError, &mut ex, &svc).await {
            // An error inside on-error: APIM answers 500 without running on-error again.
            tracing::warn!(reason = again.reason, message = %again.message, "a policy failed in on-error");
            ex.response = Some(error_parts(500, "Internal server error", &[]));
        }
    }
    let parts = ex.response.take().unwrap_or_default();
    Served::Answered(Outcome {
        response: build_response(&ex, parts, stream),
        backend_ms,
        error_reason,
    })
}

/// How an exchange's backend request is sent.
struct Prepared {
    edits: proxy::HeaderEdits,
    check: proxy::TlsCheck,
    timeout: Duration,
}

impl Prepared {
    /// Sends it. (Not an async fn: the request would be kept twice in the future.)
    fn send<'a>(
        &'a self,
        request: Request<Body>,
        shared: &'a Shared,
        ctx: &'a RequestContext,
    ) -> impl std::future::Future<Output = Result<Response<Body>, GatewayError>> + Send + 'a {
        use futures::FutureExt;
        let api = ctx.api.as_deref().expect("routed");
        shared
            .backend
            .forward_checked(
                request,
                &self.edits,
                self.check,
                ctx.affinity(),
                Some(self.timeout),
            )
            .map(move |r| r.map_err(|e| crate::server::forward_error(e, api)))
    }
}

/// The backend request of an exchange: its URL (the backend service, the rewritten path, the
/// query), method, headers and body.
#[allow(clippy::too_many_arguments)]
fn prepare_exchange(
    shared: &Shared,
    ctx: &RequestContext,
    ex: &Exchange,
    forward: Forward,
    body: Option<crate::h1_server::RequestBody>,
    tls: bool,
    // A redirect's Location: absolute, or a path on the same backend.
    location: Option<String>,
) -> Result<(Request<Body>, Prepared), GatewayError> {
    let api = ctx.api.as_ref().expect("routed");
    let base = ex
        .backend_url
        .as_deref()
        .or(api.service_url.as_deref())
        .ok_or_else(|| {
            GatewayError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "BackendNotConfigured",
                "The API has no backend service URL.",
            )
        })?;
    let base = base.trim_end_matches('/');
    let mut url = String::with_capacity(base.len() + ex.backend_path.len() + 32);
    url.push_str(base);
    if ex.backend_path != "/" || !base.ends_with('/') {
        url.push_str(&ex.backend_path);
    }
    let q = exec::query_string(&ex.query);
    if !q.is_empty() {
        url.push('?');
        url.push_str(&q);
    }
    if let Some(l) = location {
        url = if l.starts_with("http://") || l.starts_with("https://") {
            l
        } else {
            let origin: String = base.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
            format!("{origin}/{}", l.trim_start_matches('/'))
        };
    }
    let uri: hyper::Uri = url.parse().map_err(|_| {
        GatewayError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "BackendUrlInvalid",
            "The backend URL is not valid.",
        )
    })?;
    let mut edits = crate::server::backend_headers(api, ctx, tls);
    edits.raw_response = true;
    let mut headers = hyper::HeaderMap::new();
    let out_body: Body = match (&ex.request_body, body) {
        (Some(b), _) => {
            headers = original_or_built(&ex.request_headers);
            headers.remove(header::CONTENT_LENGTH);
            headers.remove(header::TRANSFER_ENCODING);
            proxy::full(Bytes::from(b.clone()))
        }
        (None, body) => {
            // Unchanged headers go on shared, not copied.
            match ex
                .request_headers
                .original_shared()
                .and_then(|o| o.clone().downcast::<RequestHeaders>().ok())
            {
                Some(original) => edits.headers = Some(proxy::ClientHeaders::Shared(original)),
                None => headers = header_map(&ex.request_headers),
            }
            match body {
                Some(b) => Body::new(http_body_util::Limited::new(
                    b,
                    shared.config.max_body_bytes as usize,
                )),
                None => proxy::empty(),
            }
        }
    };
    let mut out = Request::new(out_body);
    *out.method_mut() =
        hyper::Method::from_bytes(ex.method.as_bytes()).unwrap_or(hyper::Method::GET);
    *out.uri_mut() = uri;
    *out.headers_mut() = headers;
    let timeout = Duration::from_secs(forward.timeout_secs.max(1));
    let check = match ex.backend_tls {
        Some((false, _)) => proxy::TlsCheck::None,
        Some((true, false)) => proxy::TlsCheck::ChainOnly,
        _ => proxy::TlsCheck::Full,
    };
    Ok((
        out,
        Prepared {
            edits,
            check,
            timeout,
        },
    ))
}

/// The keys of OpenID providers that validate-jwt policies name: fetched when a policy naming
/// one is compiled, refreshed every hour, and at most every five minutes when a token names a
/// key the cache does not have.
#[derive(Default)]
pub struct JwksCache {
    entries: Mutex<HashMap<String, JwksEntry>>,
}

struct JwksEntry {
    keys: Option<Arc<Vec<Value>>>,
    fetched: Option<Instant>,
    fetching: bool,
}

const JWKS_REFRESH: Duration = Duration::from_secs(3600);
const JWKS_RETRY: Duration = Duration::from_secs(300);

impl JwksCache {
    /// Starts fetching the keys of every URL not fetched yet (from async context).
    pub fn ensure(self: &Arc<Self>, urls: &[String]) {
        for url in urls {
            self.fetch_if_due(url, Duration::ZERO);
        }
    }

    fn fetch_if_due(self: &Arc<Self>, url: &str, min_age: Duration) {
        {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let e = entries.entry(url.to_string()).or_insert(JwksEntry {
                keys: None,
                fetched: None,
                fetching: false,
            });
            let due = e.fetched.is_none_or(|f| f.elapsed() >= min_age)
                && (e.keys.is_none() || min_age > Duration::ZERO);
            if e.fetching || !due {
                return;
            }
            e.fetching = true;
        }
        let me = self.clone();
        let url = url.to_string();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            let result = fetch_jwks(&url).await;
            let mut entries = me.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = entries.get_mut(&url) {
                e.fetching = false;
                e.fetched = Some(Instant::now());
                match result {
                    Ok(keys) => e.keys = Some(Arc::new(keys)),
                    Err(err) => tracing::warn!(url = %url, error = %err, "cannot fetch the OpenID provider's keys"),
                }
            }
        });
    }

    /// The keys of `url` if fetched; schedules a refresh when they are old.
    pub fn keys(self: &Arc<Self>, url: &str) -> Option<Vec<Value>> {
        let keys = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.get(url).and_then(|e| e.keys.clone())
        };
        match &keys {
            None => self.fetch_if_due(url, JWKS_RETRY),
            Some(_) => self.fetch_if_due(url, JWKS_REFRESH),
        }
        keys.map(|k| k.as_ref().clone())
    }
}

/// A response body, refused once it passes `max` bytes (it is held in memory).
async fn read_limited(mut r: reqwest::Response, max: u64) -> Result<Vec<u8>, String> {
    let too_large = || format!("the response is larger than {max} bytes");
    if r.content_length().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| e.to_string())? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The largest OpenID configuration or key set fetched.
const MAX_JWKS_BYTES: u64 = 1024 * 1024;

async fn fetch_jwks(config_url: &str) -> Result<Vec<Value>, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let get_json = |url: &str| {
        let request = http.get(url);
        async move {
            let r = request
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| e.to_string())?;
            let body = read_limited(r, MAX_JWKS_BYTES).await?;
            serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string())
        }
    };
    let config = get_json(config_url).await?;
    let jwks_uri = config
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or("the OpenID configuration has no jwks_uri")?;
    let jwks = get_json(jwks_uri).await?;
    Ok(jwks
        .get("keys")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

/// The gateway's in-memory cache (cache-lookup/cache-store and the value policies): entries
/// expire after their duration; at most `CACHE_ENTRIES` are kept, expired ones dropped first.
#[derive(Default)]
pub struct PolicyCache {
    entries: Mutex<HashMap<String, (Instant, Cached)>>,
}

const CACHE_ENTRIES: usize = 10_000;

impl PolicyCache {
    fn get(&self, key: &str) -> Option<Cached> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((until, v)) if *until > Instant::now() => Some(v.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&self, key: &str, value: Cached, ttl_secs: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_ENTRIES && !entries.contains_key(key) {
            let now = Instant::now();
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= CACHE_ENTRIES {
                // Still full: drop the entry that expires first.
                if let Some(k) = entries
                    .iter()
                    .min_by_key(|(_, (u, _))| *u)
                    .map(|(k, _)| k.clone())
                {
                    entries.remove(&k);
                }
            }
        }
        entries.insert(
            key.to_string(),
            (Instant::now() + Duration::from_secs(ttl_secs), value),
        );
    }

    fn remove(&self, key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

const POLICY_KINDS: [Kind; 4] = [
    Kind::GlobalPolicy,
    Kind::ProductPolicy,
    Kind::ApiPolicy,
    Kind::OperationPolicy,
];

fn put(map: &mut ById<Compiled>, key: String, compiled: Option<Compiled>) {
    match compiled {
        Some(c) => {
            map.insert(key, c);
        }
        None => {
            map.remove(&key);
        }
    }
}

fn compile_one(resolver: &MirrorResolver<'_>, r: &gatehouse_model::StoredResource) -> Compiled {
    let value = r
        .properties
        .get("value")
        .and_then(Value::as_str)
        .unwrap_or("");
    let format = r
        .properties
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or("xml");
    gatehouse_policy::parse_document(value, format, resolver)
        .map(Arc::new)
        .map_err(|e| {
            tracing::error!(policy = %r.path, error = %e, "a policy does not compile; its requests fail until it is fixed");
            format!("the policy {} does not compile: {e}", r.path)
        })
}

fn backends(mirror: &ConfigMirror) -> HashMap<String, BackendInfo> {
    let mut out = HashMap::new();
    for b in mirror.of(Kind::Backend) {
        let props = &b.properties;
        let creds = props.get("credentials");
        let pairs = |field: &str| -> Vec<(String, String)> {
            creds
                .and_then(|c| c.get(field))
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .flat_map(|(k, v)| {
                            let vals: Vec<String> = match v {
                                Value::Array(a) => a
                                    .iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect(),
                                Value::String(s) => vec![s.clone()],
                                _ => Vec::new(),
                            };
                            vals.into_iter().map(move |x| (k.clone(), x))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let authorization = creds.and_then(|c| c.get("authorization")).and_then(|a| {
            Some((
                a.get("scheme")?.as_str()?.to_string(),
                a.get("parameter")?.as_str()?.to_string(),
            ))
        });
        out.insert(
            b.name().to_string(),
            BackendInfo {
                url: props
                    .get("url")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .to_string(),
                headers: pairs("header"),
                query: pairs("query"),
                authorization,
                validate_chain: props
                    .get("tls")
                    .and_then(|t| t.get("validateCertificateChain"))
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
                validate_name: props
                    .get("tls")
                    .and_then(|t| t.get("validateCertificateName"))
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            },
        );
    }
    out
}

#[cfg(test)]
mod counter_tests {
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

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_model::StoredResource;
    use serde_json::json;

    fn res(kind: Kind, path: &str, props: Value) -> StoredResource {
        StoredResource {
            path: path.into(),
            kind,
            properties: props.as_object().cloned().unwrap_or_default(),
            revision: 1,
        }
    }

    fn policy(path: &str, header_value: &str) -> StoredResource {
        let kind = if path.starts_with("/policies") {
            Kind::GlobalPolicy
        } else {
            Kind::ApiPolicy
        };
        res(
            kind,
            path,
            json!({"format": "rawxml", "value": format!(r#"<policies><inbound><set-header name="x" exists-action="override"><value>{header_value}</value></set-header></inbound></policies>"#)}),
        )
    }

    #[test]
    fn a_change_recompiles_only_what_it_touches() {
        let nv = res(
            Kind::NamedValue,
            "/namedValues/greeting",
            json!({"displayName": "greeting", "value": "hello"}),
        );
        let a = policy("/apis/a/policies/policy", "{{greeting}}");
        let b = policy("/apis/b/policies/policy", "plain");
        let mut mirror = ConfigMirror::new(1, None, [nv.clone(), a.clone(), b.clone()]);
        let first = Policies::compile(&mirror);
        let doc = |p: &Policies, id: &str| p.apis[id].clone().unwrap();
        // A named value changes: the policy naming it is compiled again, the other kept as is.
        let nv2 = res(
            Kind::NamedValue,
            "/namedValues/greeting",
            json!({"displayName": "greeting", "value": "bonjour"}),
        );
        mirror.insert(nv2.clone());
        let second = first.next(
            &mirror,
            &[Change {
                kind: Kind::NamedValue,
                old: Some(nv),
                new: Some(nv2),
            }],
        );
        assert!(!Arc::ptr_eq(&doc(&first, "a"), &doc(&second, "a")));
        assert!(Arc::ptr_eq(&doc(&first, "b"), &doc(&second, "b")));
        assert!(format!("{:?}", doc(&second, "a")).contains("bonjour"));
        // A policy is deleted: only it goes.
        mirror.remove(Kind::ApiPolicy, &b.path);
        let third = second.next(
            &mirror,
            &[Change {
                kind: Kind::ApiPolicy,
                old: Some(b),
                new: None,
            }],
        );
        assert!(!third.apis.contains_key("b"));
        assert!(Arc::ptr_eq(&doc(&second, "a"), &doc(&third, "a")));
        // The same result as compiling everything.
        assert_eq!(
            format!("{:?}", Policies::compile(&mirror).apis["a"]),
            format!("{:?}", third.apis["a"])
        );
    }
}
