//! What running policies works on: one request as policies see and change it ([`Exchange`]),
//! what they need from the gateway ([`Services`]), and how a section ends ([`Flow`]).
//!
//! Invariants: an [`Headers`] value with its original still attached says exactly what its
//! pairs say; nothing here does I/O (the gateway does, behind [`Services`]).

use crate::expr::{Env, EvalError, V};
use crate::position::Pos;
use std::collections::HashMap;
use std::net::IpAddr;

/// The message's headers as the gateway received them, in whatever form it keeps them.
pub type OriginalHeaders = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// Lists an original as header pairs.
pub type ListHeaders = fn(&OriginalHeaders) -> Vec<(String, String)>;

/// Calls back with each value an original has for a name (compared without case).
pub type FindHeader = fn(&OriginalHeaders, &str, &mut dyn FnMut(&str));

/// How the gateway's form of headers is read: listed whole, or one name looked up.
#[derive(Clone, Copy)]
pub struct ReadHeaders {
    pub list: ListHeaders,
    pub find: FindHeader,
}

/// Header pairs in order, as policies read and change them.
///
/// The gateway may hand over the message's header map as it arrived, with a way to list it as
/// pairs: the pairs are made only when a policy first reads them (most policies never do).
/// `set-header` on such headers records an edit instead of listing them, so the gateway can
/// send the original with the edits applied as it writes them. Any other mutable access drops
/// the original. Invariant: while the original is attached, the original with the edits
/// applied in order says exactly what the pairs say.
#[derive(Clone, Default)]
pub struct Headers {
    pairs: std::sync::OnceLock<Vec<(String, String)>>,
    original: Option<(OriginalHeaders, ReadHeaders)>,
    edits: Vec<HeaderEdit>,
}

/// A change to a header on top of an original: its values replaced (`replace`, none to
/// delete it) or more values appended.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderEdit {
    pub name: String,
    pub replace: bool,
    pub values: Vec<String>,
}

/// Edits kept on top of an original before they are applied to a listing instead.
const MAX_EDITS: usize = 32;

impl HeaderEdit {
    fn apply(&self, pairs: &mut Vec<(String, String)>) {
        if self.replace {
            pairs.retain(|(k, _)| !k.eq_ignore_ascii_case(&self.name));
        }
        pairs.extend(self.values.iter().map(|v| (self.name.clone(), v.clone())));
    }
}

impl Headers {
    /// Headers read from `original` by `read`: listed when first read whole.
    pub fn with_original(original: OriginalHeaders, read: ReadHeaders) -> Headers {
        Headers {
            pairs: std::sync::OnceLock::new(),
            original: Some((original, read)),
            edits: Vec::new(),
        }
    }

    /// Calls back with each value of `name` (compared without case), without listing an
    /// original that is still attached.
    pub fn each_value(&self, name: &str, f: &mut dyn FnMut(&str)) {
        let named = |k: &str| k.eq_ignore_ascii_case(name);
        if let Some(pairs) = self.pairs.get() {
            pairs
                .iter()
                .filter(|(k, _)| named(k))
                .for_each(|(_, v)| f(v));
            return;
        }
        let Some((original, read)) = &self.original else {
            return;
        };
        // The last edit that replaced the name decides what of the original is left.
        let start = self.edits.iter().rposition(|e| e.replace && named(&e.name));
        if start.is_none() {
            (read.find)(original, name, f);
        }
        for e in self.edits[start.unwrap_or(0)..]
            .iter()
            .filter(|e| named(&e.name))
        {
            e.values.iter().for_each(|v| f(v));
        }
    }

    /// The original, while nothing has changed the pairs.
    pub fn original(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        self.original_shared().map(|o| o.as_ref())
    }

    /// The original, shared, while nothing has changed the pairs.
    pub fn original_shared(&self) -> Option<&OriginalHeaders> {
        match &self.original {
            Some((o, _)) if self.edits.is_empty() => Some(o),
            _ => None,
        }
    }

    /// The original and the edits made on top of it, while no other change was made.
    pub fn original_with_edits(&self) -> Option<(&OriginalHeaders, &[HeaderEdit])> {
        self.original
            .as_ref()
            .map(|(o, _)| (o, self.edits.as_slice()))
    }

    /// The original, while nothing has changed the pairs; else the headers back.
    pub fn into_original(self) -> Result<OriginalHeaders, Headers> {
        match self.original {
            Some((original, _)) if self.edits.is_empty() => Ok(original),
            _ => Err(self),
        }
    }

    /// Sets `name` as `action` says (see [`set_pairs`]); on an original, as an edit when the
    /// action does not depend on what is there.
    pub fn set(&mut self, name: &str, action: ExistsAction, values: Vec<String>) {
        let as_edit =
            self.original.is_some() && action != ExistsAction::Skip && self.edits.len() < MAX_EDITS;
        if !as_edit {
            return set_pairs(self, name, action, values);
        }
        let edit = HeaderEdit {
            name: name.to_string(),
            replace: action != ExistsAction::Append,
            values: if action == ExistsAction::Delete {
                Vec::new()
            } else {
                values
            },
        };
        if let Some(pairs) = self.pairs.get_mut() {
            edit.apply(pairs);
        }
        self.edits.push(edit);
    }
}

impl std::ops::Deref for Headers {
    type Target = Vec<(String, String)>;
    fn deref(&self) -> &Self::Target {
        self.pairs.get_or_init(|| match &self.original {
            Some((original, read)) => {
                let mut pairs = (read.list)(original);
                for e in &self.edits {
                    e.apply(&mut pairs);
                }
                pairs
            }
            None => Vec::new(),
        })
    }
}

impl std::ops::DerefMut for Headers {
    fn deref_mut(&mut self) -> &mut Self::Target {
        let _ = std::ops::Deref::deref(self);
        self.original = None;
        self.edits.clear();
        self.pairs.get_mut().expect("initialised just above")
    }
}

impl From<Vec<(String, String)>> for Headers {
    fn from(pairs: Vec<(String, String)>) -> Headers {
        Headers {
            pairs: std::sync::OnceLock::from(pairs),
            original: None,
            edits: Vec::new(),
        }
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::ops::Deref::deref(self).fmt(f)
    }
}

/// A response being built or returned.
#[derive(Debug, Clone, Default)]
pub struct ResponseParts {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    /// `Some` when a policy set the body or the gateway buffered it.
    pub body: Option<Vec<u8>>,
}

impl ResponseParts {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What `context.LastError` holds in on-error.
#[derive(Debug, Clone, Default)]
pub struct LastError {
    pub source: String,
    pub reason: String,
    pub message: String,
    pub section: String,
    pub path: String,
    pub policy_id: String,
    pub scope: String,
}

/// One request as policies see and change it.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// Borrowed for the standard methods (no allocation per request).
    pub method: std::borrow::Cow<'static, str>,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
    /// The client's path and query, as received.
    pub original_path: String,
    pub original_query: String,
    /// The path appended to the backend's base URL (changed by rewrite-uri).
    pub backend_path: String,
    /// The query sent to the backend, in order.
    pub query: Vec<(String, String)>,
    pub request_headers: Headers,
    /// `Some` when the gateway buffered the request body or a policy set it.
    pub request_body: Option<Vec<u8>>,
    pub request_body_changed: bool,
    pub ip: Option<IpAddr>,
    /// The backend base URL chosen by set-backend-service (the API's service URL otherwise).
    pub backend_url: Option<String>,
    /// Extra headers and query a backend entity adds (its credentials).
    pub response: Option<ResponseParts>,
    pub variables: HashMap<String, V>,
    /// Leaf members of `context` that do not change during the request (`Api.Id`, …).
    pub info: Info,
    pub matched_parameters: Vec<(String, String)>,
    pub last_error: Option<LastError>,
    /// Set by forward-request: the request goes to the backend after the backend section.
    pub forward: Option<Forward>,
    pub started: Option<std::time::Instant>,
    /// A CORS preflight: only `cors` (and the `<base/>` and `<choose>` leading to it) runs.
    pub preflight: bool,
    /// The response cache key cache-lookup computed (cache-store stores under it).
    pub cache_key: Option<String>,
    /// The chosen backend entity's `tls` checks `(chain, name)`; `None` checks everything.
    pub backend_tls: Option<(bool, bool)>,
    /// The backend entity set-backend-service chose (for its circuit breaker).
    pub backend_entity: Option<String>,
    /// Counters the request's bytes are charged to once it is answered (bandwidth quotas).
    pub charges: Vec<Charge>,
}

/// A counter charged once the response is known: a bandwidth quota's (the request's and
/// response's bytes), or a by-key limit's whose `increment-condition` is evaluated against
/// the response, as APIM does. The request that crosses the limit goes through; the next is
/// refused.
#[derive(Debug, Clone)]
pub struct Charge {
    pub key: String,
    /// The limit, in bytes or calls.
    pub limit: u64,
    pub period_secs: u64,
    pub sliding: bool,
    pub amount: Amount,
}

#[derive(Debug, Clone)]
pub enum Amount {
    Bytes,
    Calls {
        increment: u64,
        condition: std::sync::Arc<crate::expr::Code>,
    },
}

impl Charge {
    /// What to add, with the exchange's response in place and `bytes` exchanged (a condition
    /// that fails to evaluate counts nothing).
    pub fn amount(&self, ex: &Exchange, bytes: u64) -> u64 {
        match &self.amount {
            Amount::Bytes => bytes,
            Amount::Calls {
                increment,
                condition,
            } => {
                let counted = crate::expr::eval_code(condition, ex).and_then(|v| v.truthy());
                if counted.unwrap_or(false) {
                    *increment
                } else {
                    0
                }
            }
        }
    }
}

/// Where the request's fixed facts come from: the gateway's routing results, read only when a
/// policy asks (building them all up front cost more than a simple policy's own work).
pub trait InfoSource: Send + Sync {
    /// The value of a leaf member such as `Api.Id` or `Subscription.Key`.
    fn get(&self, member: &str) -> Option<V>;
    /// Whether the request has the object `prefix` names (`Subscription`, `User`, `Product`).
    fn has(&self, object: &str) -> bool;
}

/// The leaf members of `context` that do not change during a request: values set here, else
/// the source's.
#[derive(Clone, Default)]
pub struct Info {
    values: HashMap<&'static str, V>,
    source: Option<std::sync::Arc<dyn InfoSource>>,
}

impl std::fmt::Debug for Info {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Info")
            .field("values", &self.values)
            .field("source", &self.source.is_some())
            .finish()
    }
}

impl Info {
    pub fn from_source(source: std::sync::Arc<dyn InfoSource>) -> Info {
        Info {
            values: HashMap::new(),
            source: Some(source),
        }
    }

    pub fn insert(&mut self, member: &'static str, value: V) {
        self.values.insert(member, value);
    }

    pub fn get(&self, member: &str) -> Option<V> {
        match self.values.get(member) {
            Some(v) => Some(v.clone()),
            None => self.source.as_ref()?.get(member),
        }
    }

    /// Whether the request has the object `object` (some member `object.…` has a value).
    pub fn has(&self, object: &str) -> bool {
        self.values.keys().any(|k| {
            k.len() > object.len() + 1
                && k.starts_with(object)
                && k.as_bytes()[object.len()] == b'.'
        }) || self.source.as_ref().is_some_and(|s| s.has(object))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub timeout_secs: u64,
    pub follow_redirects: bool,
}

impl Forward {
    /// The forward of APIM's default global policy (no scope has a `<backend>` section).
    pub const DEFAULT: Forward = Forward {
        timeout_secs: 300,
        follow_redirects: false,
    };
}

/// A backend entity as set-backend-service backend-id uses it.
#[derive(Debug, Clone, Default)]
pub struct BackendInfo {
    pub url: String,
    /// The backend's `tls` settings: check the certificate's chain, and its name.
    pub validate_chain: bool,
    pub validate_name: bool,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub authorization: Option<(String, String)>,
    /// The backend entity the request goes to (a pool's chosen member): its circuit breaker
    /// counts the outcome.
    pub entity: String,
    /// Set when no backend can take the request (its circuit breaker is open, or every member
    /// of the pool's is): the seconds until one may.
    pub unavailable: Option<u64>,
}

/// The outcome of counting a call against a limit.
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    pub allowed: bool,
    pub remaining: u64,
    pub retry_after_secs: u64,
}

/// The counter a call counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CounterKey<'a> {
    /// A rate-limit or quota per subscription: the subscription and the policy's place in its
    /// document (name, line, column), so that two such policies count apart and keep their
    /// counts over configuration changes that do not move them. Subscription ids are
    /// configuration, not what a client sends.
    Subscription {
        subscription: &'a str,
        policy: &'static str,
        line: u32,
        column: u32,
    },
    /// A counter named by text: `key:` and a by-key policy's counter-key value (which a client
    /// can choose), or a per-API/operation limit inside a limit (its parent's key, API and
    /// operation).
    Text(&'a str),
}

impl<'a> CounterKey<'a> {
    /// The counter of a per-subscription limit: the policy's name and place, and the
    /// subscription.
    pub fn per_subscription(
        policy: &'static str,
        pos: Pos,
        subscription: &'a str,
    ) -> CounterKey<'a> {
        CounterKey::Subscription {
            subscription,
            policy,
            line: pos.line,
            column: pos.column,
        }
    }
}

impl std::fmt::Display for CounterKey<'_> {
    /// The counter's name as text (a per-subscription counter's is `sub:<id>:<policy>:<line>:<column>`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CounterKey::Subscription {
                subscription,
                policy,
                line,
                column,
            } => write!(f, "sub:{subscription}:{policy}:{line}:{column}"),
            CounterKey::Text(text) => f.write_str(text),
        }
    }
}

/// A boxed future (the policy runner recurses through async calls).
pub type BoxFut<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A request send-request or send-one-way-request makes.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// What running policies needs from the gateway.
pub trait Services: Sync {
    /// Forwards the exchange's request to its backend and puts the answer in `ex.response`.
    fn forward<'a>(
        &'a self,
        ex: &'a mut Exchange,
        forward: Forward,
    ) -> BoxFut<'a, Result<(), Failure>>;
    /// Sends a request and waits for its answer (send-request).
    fn send(
        &self,
        req: Outgoing,
        timeout_secs: u64,
    ) -> BoxFut<'_, Result<ResponseParts, SendError>>;
    /// Sends a request without waiting (send-one-way-request).
    fn send_one_way(&self, req: Outgoing);
    fn sleep(&self, duration: std::time::Duration) -> BoxFut<'_, ()>;
    /// A slot of `max` for `key` (limit-concurrency), released when dropped; `None` when full.
    fn acquire(&self, key: &str, max: u64) -> Option<Box<dyn std::any::Any + Send>>;
    /// Counts `increment` calls for `key` against `calls` per `period_secs`; a sliding window
    /// for rate limits, a fixed one for quotas.
    fn count(
        &self,
        key: CounterKey<'_>,
        calls: u64,
        period_secs: u64,
        increment: u64,
        sliding: bool,
    ) -> Counted;
    fn backend(&self, id: &str) -> Option<BackendInfo>;
    /// The operation's example response for a status: content type and body.
    fn example(&self, status: u16, content_type: Option<&str>) -> Option<(String, String)>;
    fn trace(&self, source: &str, message: &str);
    /// The JWKS keys of an OpenID provider, once fetched (the gateway fetches them when a
    /// policy naming the provider is compiled, and refreshes them).
    fn openid_keys(&self, config_url: &str) -> Option<Vec<serde_json::Value>>;
    /// The in-memory cache of the gateway (responses and values), by key.
    fn cache_get(&self, key: &str) -> Option<Cached>;
    fn cache_put(&self, key: &str, value: Cached, ttl_secs: u64);
    fn cache_remove(&self, key: &str);
    /// emit-metric: one sample of a custom metric.
    fn emit_metric(&self, _metric: Metric) {}
    /// log-to-eventhub: a message to the logger `logger` (a logger resource); `Err` says why it
    /// was not taken (the request goes on: APIM logs asynchronously too).
    fn log_to(&self, logger: &str, _message: String) -> Result<(), String> {
        Err(format!("the logger '{logger}' does not exist"))
    }
    /// authentication-managed-identity: an access token for `resource` from the instance's
    /// token source (and the client id of a user-assigned identity).
    fn identity_token<'a>(
        &'a self,
        _resource: &'a str,
        _client_id: Option<&'a str>,
    ) -> BoxFut<'a, Result<String, String>> {
        Box::pin(async { Err("this gateway has no identity token source configured".into()) })
    }
    /// The matched operation's definition (its `templateParameters`, `request` and
    /// `responses`, as the management API stores them), for the validate-* policies.
    fn operation_definition(&self) -> Option<serde_json::Value> {
        None
    }
    /// A schema for validate-content: the matched API's schema `id` (`/apis/{api}/schemas/{id}`,
    /// whose document holds `components`), or with `global` the instance's (`/schemas/{id}`).
    fn content_schema(&self, _id: &str, _global: bool) -> Option<SchemaDocument> {
        None
    }
    /// Where Entra ID tenants' OpenID configurations are read (validate-azure-ad-token).
    fn entra_authority(&self) -> String {
        ENTRA_AUTHORITY.into()
    }
}

/// A stored schema as validate-content reads it.
#[derive(Debug, Clone)]
pub struct SchemaDocument {
    /// Changes whenever the schema does (its path and revision): compiled validators are
    /// cached under it.
    pub key: String,
    /// The JSON document (a JSON schema, or `{"components": …}` for an API's OpenAPI types).
    pub document: serde_json::Value,
}

/// Entra ID's (Azure AD's) public authority.
pub const ENTRA_AUTHORITY: &str = "https://login.microsoftonline.com";

/// A custom metric's sample (emit-metric).
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub namespace: String,
    pub name: String,
    pub value: f64,
    pub dimensions: Vec<(String, String)>,
}

/// What the cache policies keep.
#[derive(Debug, Clone)]
pub enum Cached {
    Response(ResponseParts),
    Value(V),
}

/// Why a section stopped: APIM's reason, the status and message of the default error answer.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
    pub policy: &'static str,
    pub policy_id: Option<String>,
    pub pos: Pos,
    /// Headers of the default error answer (Retry-After, …).
    pub headers: Vec<(String, String)>,
}

#[derive(Debug)]
pub enum Flow {
    /// The section ran to its end.
    Next,
    /// A policy produced the response (return-response, mock-response, cors preflight): send it.
    Respond,
    Fail(Failure),
}

/// Why send-request got no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("the request could not be sent: {0}")]
    Unreachable(String),
    #[error("the answer could not be read: {0}")]
    Unreadable(String),
}

/// [`Services::count`]'s signature: key, calls, period (seconds), increment, sliding.
pub type Count<'a> = dyn Fn(CounterKey<'_>, u64, u64, u64, bool) -> Counted + 'a;

/// How set-header, set-query-parameter and their kin treat a name that is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistsAction {
    Override,
    Skip,
    Append,
    Delete,
}

/// Sets `name` among `pairs` as `action` says (names compare without case).
pub fn set_pairs(
    pairs: &mut Vec<(String, String)>,
    name: &str,
    action: ExistsAction,
    values: Vec<String>,
) {
    let exists = pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    match action {
        ExistsAction::Delete => pairs.retain(|(k, _)| !k.eq_ignore_ascii_case(name)),
        ExistsAction::Skip if exists => {}
        ExistsAction::Append => pairs.extend(values.into_iter().map(|v| (name.to_string(), v))),
        ExistsAction::Override | ExistsAction::Skip => {
            pairs.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            pairs.extend(values.into_iter().map(|v| (name.to_string(), v)));
        }
    }
}

impl Exchange {
    /// A request header's first value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.request_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The message a policy in `section` works on has a response: outbound and on-error
    /// once the backend (or a policy) answered.
    pub fn on_response(&self, section: crate::position::Section) -> bool {
        section.is_response() && self.response.is_some()
    }
}

fn headers_lookup(headers: &Headers, key: &str) -> Option<V> {
    let mut vals = Vec::new();
    headers.each_value(key, &mut |v| vals.push(V::Str(v.to_string())));
    (!vals.is_empty()).then(|| V::list(vals))
}

fn pairs_lookup(pairs: &[(String, String)], key: &str) -> Option<V> {
    let vals: Vec<V> = pairs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| V::Str(v.clone()))
        .collect();
    (!vals.is_empty()).then(|| V::list(vals))
}

/// Pairs grouped by name (first appearance order), each with its list of values.
fn pairs_entries(pairs: &[(String, String)], lists: bool) -> Vec<(String, V)> {
    let mut out: Vec<(String, Vec<V>)> = Vec::new();
    for (k, v) in pairs {
        match out.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(k)) {
            Some((_, vals)) => vals.push(V::Str(v.clone())),
            None => out.push((k.clone(), vec![V::Str(v.clone())])),
        }
    }
    out.into_iter()
        .map(|(k, mut vals)| {
            let v = if !lists && vals.len() == 1 {
                vals.remove(0)
            } else {
                V::list(vals)
            };
            (k, v)
        })
        .collect()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

impl Env for Exchange {
    fn member(&self, path: &str) -> Result<V, EvalError> {
        let s = |v: &str| Ok(V::Str(v.to_string()));
        match path {
            "Request.Method" => s(&self.method),
            "Request.IpAddress" => Ok(self.ip.map_or(V::Null, |i| V::Str(i.to_string()))),
            "Request.Url.Path" => s(&self.backend_path),
            "Request.Url.QueryString" => Ok(V::Str(query_string(&self.query))),
            "Request.Url.Host" | "Request.OriginalUrl.Host" => s(&self.host),
            "Request.Url.Port" | "Request.OriginalUrl.Port" => Ok(V::Int(self.port as i64)),
            "Request.Url.Scheme" | "Request.OriginalUrl.Scheme" => s(self.scheme),
            "Request.OriginalUrl.Path" => s(&self.original_path),
            "Request.OriginalUrl.QueryString" => s(&self.original_query),
            "Response.StatusCode" => Ok(self
                .response
                .as_ref()
                .map_or(V::Null, |r| V::Int(r.status as i64))),
            "Response.StatusReason" => Ok(self
                .response
                .as_ref()
                .map_or(V::Null, |r| V::Str(r.reason.clone()))),
            "RequestId"
            | "Timestamp"
            | "Deployment.Region"
            | "Deployment.ServiceName"
            | "Deployment.GatewayId" => Ok(self.info.get(path).unwrap_or(V::Null)),
            "Elapsed" => Ok(V::Double(
                self.started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
            )),
            p if p.starts_with("LastError.") => {
                let Some(e) = &self.last_error else {
                    return Ok(V::Null);
                };
                s(match &p[10..] {
                    "Source" => &e.source,
                    "Reason" => &e.reason,
                    "Message" => &e.message,
                    "Section" => &e.section,
                    "Path" => &e.path,
                    "PolicyId" => &e.policy_id,
                    "Scope" => &e.scope,
                    _ => "",
                })
            }
            p if let Some(v) = self.info.get(p) => Ok(v),
            "Subscription" | "User" | "Product" => {
                // Absent when the request has none (context.Subscription is null in APIM).
                let present = self.info.has(path);
                Ok(if present {
                    V::Ctx(path.to_string())
                } else {
                    V::Null
                })
            }
            p if p.contains('.')
                && !matches!(
                    p,
                    "Request.Headers"
                        | "Request.Url"
                        | "Request.Url.Query"
                        | "Request.OriginalUrl"
                        | "Request.OriginalUrl.Query"
                        | "Request.Body"
                        | "Request.MatchedParameters"
                        | "Response.Headers"
                        | "Response.Body"
                ) =>
            {
                Ok(V::Null)
            }
            p => Ok(V::Ctx(p.to_string())),
        }
    }

    fn lookup(&self, map: &str, key: &str) -> Option<V> {
        match map {
            "Request.Headers" => headers_lookup(&self.request_headers, key),
            "Response.Headers" => self
                .response
                .as_ref()
                .and_then(|r| headers_lookup(&r.headers, key)),
            "Request.Url.Query" => pairs_lookup(&self.query, key).map(|v| match v {
                V::List(l) if l.lock().len() == 1 => l.lock().remove(0),
                v => v,
            }),
            "Request.OriginalUrl.Query" => pairs_lookup(&parse_query(&self.original_query), key)
                .map(|v| match v {
                    V::List(l) if l.lock().len() == 1 => l.lock().remove(0),
                    v => v,
                }),
            "Request.MatchedParameters" => self
                .matched_parameters
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| V::Str(v.clone())),
            "Variables" => self.variables.get(key).cloned(),
            _ => None,
        }
    }

    fn entries(&self, map: &str) -> Vec<(String, V)> {
        match map {
            "Request.Headers" => pairs_entries(&self.request_headers, true),
            "Response.Headers" => self
                .response
                .as_ref()
                .map(|r| pairs_entries(&r.headers, true))
                .unwrap_or_default(),
            "Request.Url.Query" => pairs_entries(&self.query, false),
            "Request.OriginalUrl.Query" => pairs_entries(&parse_query(&self.original_query), false),
            "Request.MatchedParameters" => self
                .matched_parameters
                .iter()
                .map(|(k, v)| (k.clone(), V::Str(v.clone())))
                .collect(),
            "Variables" => {
                let mut vars: Vec<(String, V)> = self
                    .variables
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                vars.sort_by(|a, b| a.0.cmp(&b.0));
                vars
            }
            _ => Vec::new(),
        }
    }

    fn body(&self, message: &str) -> Result<String, EvalError> {
        let body = if message == "Response" {
            self.response.as_ref().and_then(|r| r.body.as_ref())
        } else {
            self.request_body.as_ref()
        };
        Ok(body
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default())
    }
}

/// `a=1&b=2` from pairs.
pub fn query_string(q: &[(String, String)]) -> String {
    q.iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod headers_tests {
    use super::Headers;
    use std::sync::Arc;

    #[test]
    fn an_attached_original_lasts_until_the_pairs_change() {
        let pairs = vec![("a".to_string(), "1".to_string())];
        let list = |o: &super::OriginalHeaders| {
            let n = o.downcast_ref::<u32>().unwrap();
            vec![("a".to_string(), n.to_string())]
        };
        let find = |o: &super::OriginalHeaders, name: &str, f: &mut dyn FnMut(&str)| {
            if name.eq_ignore_ascii_case("a") {
                f(&o.downcast_ref::<u32>().unwrap().to_string())
            }
        };
        let mut h = Headers::with_original(Arc::new(1u32), super::ReadHeaders { list, find });
        assert_eq!(*h, pairs, "listed when first read");
        assert_eq!(h.original().and_then(|o| o.downcast_ref::<u32>()), Some(&1));
        let copy = h.clone();
        h.push(("b".into(), "2".into()));
        assert!(h.original().is_none(), "a change drops it");
        assert!(
            copy.original().is_some(),
            "a copy made before keeps its own"
        );
        assert!(Headers::from(pairs).original().is_none());
    }

    /// Edits on an original read the same before and after it is listed, and say what
    /// set_pairs would have made of the listing.
    #[test]
    fn edits_on_an_original_read_as_the_listing_changed_in_order() {
        use super::{ExistsAction, ReadHeaders, set_pairs};
        type Pairs = Vec<(String, String)>;
        let list = |o: &super::OriginalHeaders| o.downcast_ref::<Pairs>().unwrap().clone();
        let find = |o: &super::OriginalHeaders, name: &str, f: &mut dyn FnMut(&str)| {
            for (k, v) in o.downcast_ref::<Pairs>().unwrap() {
                if k.eq_ignore_ascii_case(name) {
                    f(v)
                }
            }
        };
        let original: Pairs = [("a", "1"), ("b", "2"), ("a", "3")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let steps = [
            ("A", ExistsAction::Append, vec!["4"]),
            ("b", ExistsAction::Override, vec!["5", "6"]),
            ("c", ExistsAction::Append, vec!["7"]),
            ("a", ExistsAction::Delete, vec![]),
            ("a", ExistsAction::Append, vec!["8"]),
        ];
        let mut h = Headers::with_original(Arc::new(original.clone()), ReadHeaders { list, find });
        let mut expected = original;
        for (name, action, values) in steps {
            let values: Vec<String> = values.into_iter().map(String::from).collect();
            h.set(name, action, values.clone());
            set_pairs(&mut expected, name, action, values);
            assert!(h.original().is_none() && h.original_with_edits().is_some());
            for n in ["a", "B", "c", "d"] {
                let mut seen = Vec::new();
                h.each_value(n, &mut |v| seen.push(v.to_string()));
                let want: Vec<String> = expected
                    .iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.clone())
                    .collect();
                assert_eq!(seen, want, "{n} after {name}");
            }
        }
        let names = |p: &Pairs| {
            p.iter()
                .map(|(k, v)| format!("{}={v}", k.to_lowercase()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&h), names(&expected), "listed with the edits applied");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_keep_their_encoding() {
        let pairs = parse_query("a=1&b=x%20y&&c");
        assert_eq!(
            pairs,
            vec![
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "x%20y".to_string()),
                ("c".to_string(), String::new()),
            ]
        );
        assert_eq!(query_string(&pairs), "a=1&b=x%20y&c");
    }

    #[test]
    fn exists_actions() {
        let pairs = || vec![("A".to_string(), "1".to_string())];
        let set = |action, values: &[&str]| {
            let mut p = pairs();
            set_pairs(
                &mut p,
                "a",
                action,
                values.iter().map(|v| v.to_string()).collect(),
            );
            p
        };
        let one = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(set(ExistsAction::Override, &["2"]), vec![one("a", "2")]);
        assert_eq!(set(ExistsAction::Skip, &["2"]), vec![one("A", "1")]);
        assert_eq!(
            set(ExistsAction::Append, &["2"]),
            vec![one("A", "1"), one("a", "2")]
        );
        assert_eq!(set(ExistsAction::Delete, &[]), vec![]);
    }
}
