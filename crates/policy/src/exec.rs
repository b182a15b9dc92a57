//! Running policies against an abstract request/response exchange. The gateway fills an
//! [`Exchange`] from the request, runs a section of the scope chain, then builds what it
//! forwards or answers from the exchange.
//!
//! Invariants: a section runs narrowest scope first, `<base/>` running the next broader scope's
//! same section in its place (a scope without a document or without the section inherits);
//! a failure stops the section and is reported with APIM's reason and the failing policy;
//! nothing here blocks or does I/O except through [`Services`].

use crate::doc::{
    Cors, Document, ExistsAction, Node, Policy, Pos, RateLimit, Section, SendStep, Text,
};
use crate::expr::{self, Env, V};
use std::collections::HashMap;
use std::net::IpAddr;

/// The message's headers as the gateway received them, in whatever form it keeps them.
pub type OriginalHeaders = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// Lists an original as header pairs.
pub type ListHeaders = fn(&OriginalHeaders) -> Vec<(String, String)>;

/// Header pairs in order, as policies read and change them.
///
/// The gateway may hand over the message's header map as it arrived, with a way to list it as
/// pairs: the pairs are made only when a policy first reads them (most policies never do), and
/// every mutable access drops the original, so an original still attached always says what the
/// pairs say and the gateway can send it as it came instead of rebuilding a map.
#[derive(Clone, Default)]
pub struct Headers {
    pairs: std::sync::OnceLock<Vec<(String, String)>>,
    original: Option<(OriginalHeaders, ListHeaders)>,
}

impl Headers {
    /// Headers listed from `original` by `pairs_of` when first read.
    pub fn with_original(original: OriginalHeaders, pairs_of: ListHeaders) -> Headers {
        Headers {
            pairs: std::sync::OnceLock::new(),
            original: Some((original, pairs_of)),
        }
    }

    /// The original, while nothing has changed the pairs.
    pub fn original(&self) -> Option<&(dyn std::any::Any + Send + Sync)> {
        self.original.as_ref().map(|(o, _)| o.as_ref())
    }

    /// The original, shared, while nothing has changed the pairs.
    pub fn original_shared(&self) -> Option<&OriginalHeaders> {
        self.original.as_ref().map(|(o, _)| o)
    }

    /// The original, while nothing has changed the pairs; else the headers back.
    pub fn into_original(self) -> Result<OriginalHeaders, Headers> {
        match self.original {
            Some((original, _)) => Ok(original),
            None => Err(self),
        }
    }
}

impl std::ops::Deref for Headers {
    type Target = Vec<(String, String)>;
    fn deref(&self) -> &Self::Target {
        self.pairs.get_or_init(|| match &self.original {
            Some((original, pairs_of)) => pairs_of(original),
            None => Vec::new(),
        })
    }
}

impl std::ops::DerefMut for Headers {
    fn deref_mut(&mut self) -> &mut Self::Target {
        let _ = std::ops::Deref::deref(self);
        self.original = None;
        self.pairs.get_mut().expect("initialised just above")
    }
}

impl From<Vec<(String, String)>> for Headers {
    fn from(pairs: Vec<(String, String)>) -> Headers {
        Headers {
            pairs: std::sync::OnceLock::from(pairs),
            original: None,
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
    fn per_subscription(node: &Node, subscription: &'a str) -> CounterKey<'a> {
        CounterKey::Subscription {
            subscription,
            policy: node.name,
            line: node.pos.line,
            column: node.pos.column,
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
    fn send(&self, req: Outgoing, timeout_secs: u64) -> BoxFut<'_, Result<ResponseParts, String>>;
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

/// The documents of a request's scopes, broadest first: global, product, API, operation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chain<'a> {
    pub levels: [Option<&'a Document>; 4],
}

impl Chain<'_> {
    pub fn is_empty(&self) -> bool {
        self.levels.iter().all(Option::is_none)
    }

    pub fn reads_body(&self) -> bool {
        self.levels.iter().flatten().any(|d| d.reads_body)
    }
}

const SCOPES: [&str; 4] = ["global", "product", "api", "operation"];

/// Runs one section of the chain.
pub async fn run<'a>(
    chain: &'a Chain<'a>,
    section: Section,
    ex: &'a mut Exchange,
    svc: &'a dyn Services,
) -> Flow {
    match locate(chain, 3, section) {
        Located::Nothing => Flow::Next,
        _ => run_level(chain, 3, section, ex, svc).await,
    }
}

/// What runs for a section from scope `level` down.
enum Located<'a> {
    /// The nodes of the nearest scope that has more than `<base />`.
    Nodes(usize, &'a [Node]),
    /// No scope has the section: APIM's default global policy (which forwards in <backend>).
    Default,
    /// Nothing: every scope's section is only `<base />`, down to the global one's.
    Nothing,
}

/// Scopes without the section, and sections that are only `<base />` (the usual case), are
/// passed over in a loop — and a section with nothing to run costs no boxed future at all.
fn locate<'c>(chain: &Chain<'c>, mut level: usize, section: Section) -> Located<'c> {
    loop {
        match chain.levels[level].and_then(|d| d.section(section)) {
            Some([only]) if matches!(only.policy, Policy::Base) => {
                if level == 0 {
                    return Located::Nothing;
                }
                level -= 1;
            }
            Some(nodes) => return Located::Nodes(level, nodes),
            None if level > 0 => level -= 1,
            None if section == Section::Backend => return Located::Default,
            None => return Located::Nothing,
        }
    }
}

/// When the chain only checks the request in inbound — limits, filters, tokens, variables — and
/// then forwards it unchanged, with nothing in outbound or on-error: the forward's settings.
/// The gateway then sends the client's request itself, as it would without policies, instead
/// of rebuilding it from the exchange (a third of the policy path's cost). A policy not listed
/// in [`leaves_request_alone`] keeps a request on the full path.
pub fn plain_forward(chain: &Chain) -> Option<Forward> {
    forward_when_inbound_is(chain, &mut |node| leaves_request_alone(&node.policy))
}

/// The most limits a [`counted_forward`] chain counts; a chain with more takes the full path,
/// which counts the same.
const MOST_COUNTED: usize = 4;

/// A chain [`counted_forward`] takes: its forward, and the limits it counts, in the order they
/// run (found once, while deciding, rather than walked again to count).
#[derive(Debug, Clone, Copy)]
pub struct CountedForward<'c> {
    pub forward: Forward,
    limits: [Option<&'c Node>; MOST_COUNTED],
}

/// When the chain is one [`plain_forward`] takes and its inbound policies are only rate-limit
/// and quota per subscription that do nothing but count (no key or condition expressions, no
/// headers of their own): the forward. The gateway then counts with
/// [`count_for_subscription`] and builds no exchange at all — DESIGN's target configuration,
/// a key and a rate limit, costs little more than the key alone.
pub fn counted_forward<'c>(chain: &Chain<'c>) -> Option<CountedForward<'c>> {
    let mut limits = [None; MOST_COUNTED];
    let mut found = 0;
    let forward = forward_when_inbound_is(chain, &mut |node| {
        let counts_only = leaves_request_alone(&node.policy)
            && matches!(&node.policy, Policy::RateLimit(l) | Policy::Quota(l)
                if l.key.is_none() && l.condition.is_none());
        if !counts_only || found == MOST_COUNTED {
            return false;
        }
        limits[found] = Some(node);
        found += 1;
        true
    })?;
    Some(CountedForward { forward, limits })
}

/// The forward, when outbound and on-error run nothing, the backend section only forwards
/// (APIM's default, or a lone forward-request without redirects), and every inbound policy
/// the chain runs is `allowed`.
fn forward_when_inbound_is<'c>(
    chain: &Chain<'c>,
    allowed: &mut dyn FnMut(&'c Node) -> bool,
) -> Option<Forward> {
    if !matches!(locate(chain, 3, Section::Outbound), Located::Nothing)
        || !matches!(locate(chain, 3, Section::OnError), Located::Nothing)
    {
        return None;
    }
    let forward = match locate(chain, 3, Section::Backend) {
        Located::Default => Forward::DEFAULT,
        Located::Nodes(_, [only]) => match only.policy {
            Policy::ForwardRequest {
                timeout_secs,
                follow_redirects: false,
            } => Forward {
                timeout_secs,
                follow_redirects: false,
            },
            _ => return None,
        },
        _ => return None,
    };
    walk_inbound(chain, 3, &mut |node| allowed(node).then_some(()).ok_or(())).ok()?;
    Some(forward)
}

/// Runs the limits of a [`counted_forward`] chain, in order, for a call of `subscription`
/// (none when the request came without a key: limits per subscription then count nothing, as
/// in APIM); `info` answers `context`'s fixed members for per-API and per-operation limits.
/// The first limit exceeded refuses the call, as the full path would.
pub fn count_for_subscription(
    counted: &CountedForward,
    subscription: Option<&str>,
    info: &dyn Fn(&str) -> Option<V>,
    count: &Count,
) -> Result<(), Failure> {
    let Some(subscription) = subscription else {
        return Ok(());
    };
    for node in counted.limits.iter().flatten() {
        let (Policy::RateLimit(limit) | Policy::Quota(limit)) = &node.policy else {
            continue;
        };
        let quota = matches!(node.policy, Policy::Quota(_));
        let key = CounterKey::per_subscription(node, subscription);
        let (c, calls) = count_calls(limit, quota, key, limit.increment, info, count);
        if !c.allowed {
            return Err(limit_refusal(node, limit, quota, &c, calls));
        }
    }
    Ok(())
}

/// Visits the inbound nodes the chain runs from scope `level` down, in order, with each
/// `<base />` standing for the broader scopes' nodes; stops at the first error.
fn walk_inbound<'c, E>(
    chain: &Chain<'c>,
    level: usize,
    visit: &mut dyn FnMut(&'c Node) -> Result<(), E>,
) -> Result<(), E> {
    let Located::Nodes(at, nodes) = locate(chain, level, Section::Inbound) else {
        return Ok(());
    };
    for node in nodes {
        match node.policy {
            Policy::Base if at > 0 => walk_inbound(chain, at - 1, visit)?,
            Policy::Base => {}
            _ => visit(node)?,
        }
    }
    Ok(())
}

/// Whether a policy in inbound leaves what is forwarded (request and response) as it is: it
/// may refuse the request, answer it, or set variables no later section reads.
fn leaves_request_alone(policy: &Policy) -> bool {
    match policy {
        Policy::RateLimit(limit) | Policy::Quota(limit) => {
            limit.remaining_header.is_none() && limit.total_header.is_none()
        }
        Policy::CheckHeader { .. }
        | Policy::IpFilter { .. }
        | Policy::ValidateJwt(_)
        | Policy::SetVariable { .. }
        | Policy::Trace { .. }
        | Policy::CacheLookupValue { .. }
        | Policy::CacheStoreValue { .. }
        | Policy::CacheRemoveValue { .. }
        // These end the request: it is not forwarded at all.
        | Policy::ReturnResponse { .. }
        | Policy::MockResponse { .. } => true,
        Policy::Choose { whens, otherwise } => whens
            .iter()
            .flat_map(|(_, nodes)| nodes)
            .chain(otherwise)
            .all(|n| leaves_request_alone(&n.policy)),
        _ => false,
    }
}

fn run_level<'a>(
    chain: &'a Chain<'a>,
    level: usize,
    section: Section,
    ex: &'a mut Exchange,
    svc: &'a dyn Services,
) -> BoxFut<'a, Flow> {
    Box::pin(async move {
        match locate(chain, level, section) {
            Located::Nodes(level, nodes) => run_nodes(chain, level, section, nodes, ex, svc).await,
            Located::Default => {
                // APIM's default global policy forwards in <backend>.
                match svc.forward(ex, Forward::DEFAULT).await {
                    Ok(()) => Flow::Next,
                    Err(failure) => Flow::Fail(failure),
                }
            }
            Located::Nothing => Flow::Next,
        }
    })
}

fn run_nodes<'a>(
    chain: &'a Chain<'a>,
    level: usize,
    section: Section,
    nodes: &'a [Node],
    ex: &'a mut Exchange,
    svc: &'a dyn Services,
) -> BoxFut<'a, Flow> {
    Box::pin(async move {
        for node in nodes {
            let from_base = matches!(node.policy, Policy::Base);
            let flow = if from_base {
                if level == 0 || matches!(locate(chain, level - 1, section), Located::Nothing) {
                    Flow::Next
                } else {
                    run_level(chain, level - 1, section, &mut *ex, svc).await
                }
            } else if is_simple(&node.policy) {
                if ex.preflight && !matches!(node.policy, Policy::Cors(_)) {
                    Flow::Next
                } else {
                    run_simple(section, node, ex, svc)
                }
            } else {
                // Nested policies run inside this one: their polls recurse.
                crate::stack::Deeper(run_node(chain, level, section, node, &mut *ex, svc)).await
            };
            match flow {
                Flow::Next => {}
                Flow::Fail(mut f) => {
                    // A failure inside `<base />` was recorded where it happened, with that
                    // scope; only one no scope recorded (the default forward's) is recorded here.
                    if ex.last_error.is_none() || (section != Section::OnError && !from_base) {
                        ex.last_error = Some(LastError {
                            source: f.policy.to_string(),
                            reason: f.reason.to_string(),
                            message: f.message.clone(),
                            section: section.name().to_string(),
                            path: format!("{}[{}]", f.policy, f.pos),
                            policy_id: f.policy_id.clone().unwrap_or_default(),
                            scope: SCOPES[level].to_string(),
                        });
                    }
                    f.policy_id = f.policy_id.or_else(|| node.id.clone());
                    return Flow::Fail(f);
                }
                Flow::Respond => return Flow::Respond,
            }
        }
        Flow::Next
    })
}

fn fail(node: &Node, status: u16, reason: &'static str, message: impl Into<String>) -> Flow {
    Flow::Fail(Failure {
        status,
        reason,
        message: message.into(),
        policy: node.name,
        policy_id: node.id.clone(),
        pos: node.pos,
        headers: Vec::new(),
    })
}

/// Evaluates a text; an expression failure is APIM's ExpressionValueEvaluationFailure.
fn value(node: &Node, t: &Text, ex: &Exchange) -> Result<V, Flow> {
    match t {
        Text::Lit(s) => Ok(V::Str(s.clone())),
        Text::Expr(code) => expr::eval_code(code, ex).map_err(|e| {
            fail(
                node,
                500,
                "ExpressionValueEvaluationFailure",
                format!("Expression evaluation failed. {e}"),
            )
        }),
    }
}

fn text(node: &Node, t: &Text, ex: &Exchange) -> Result<String, Flow> {
    value(node, t, ex).map(|v| v.text())
}

fn set_pairs(
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

fn run_node<'a>(
    chain: &'a Chain<'a>,
    level: usize,
    section: Section,
    node: &'a Node,
    ex: &'a mut Exchange,
    svc: &'a dyn Services,
) -> BoxFut<'a, Flow> {
    Box::pin(async move {
        macro_rules! eval {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(flow) => return flow,
                }
            };
        }
        if ex.preflight && !matches!(node.policy, Policy::Base | Policy::Cors(_)) {
            return Flow::Next;
        }
        match &node.policy {
            Policy::Base => {
                if level == 0 {
                    Flow::Next
                } else {
                    run_level(chain, level - 1, section, ex, svc).await
                }
            }
            Policy::ForwardRequest {
                timeout_secs,
                follow_redirects,
            } => {
                let f = Forward {
                    timeout_secs: *timeout_secs,
                    follow_redirects: *follow_redirects,
                };
                match svc.forward(ex, f).await {
                    Ok(()) => Flow::Next,
                    Err(mut failure) => {
                        failure.policy_id = node.id.clone();
                        failure.pos = node.pos;
                        Flow::Fail(failure)
                    }
                }
            }
            Policy::Retry(r) => {
                let mut attempt = 0u64;
                loop {
                    let flow = run_nodes(chain, level, section, &r.body, &mut *ex, svc).await;
                    if matches!(flow, Flow::Respond) {
                        return flow;
                    }
                    let again = match expr::eval_code(&r.condition, &*ex).map(|v| v.truthy()) {
                        Ok(Ok(b)) => b,
                        Ok(Err(e)) => {
                            return fail(node, 500, "ExpressionValueEvaluationFailure", e);
                        }
                        Err(e) => {
                            return fail(
                                node,
                                500,
                                "ExpressionValueEvaluationFailure",
                                format!("Expression evaluation failed. {e}"),
                            );
                        }
                    };
                    if !again || attempt >= r.count {
                        return flow;
                    }
                    attempt += 1;
                    let wait = retry_interval(r, attempt);
                    let fast = attempt == 1 && r.first_fast_retry;
                    if !fast && !wait.is_zero() {
                        svc.sleep(wait).await;
                    }
                }
            }
            Policy::LimitConcurrency { key, max, body } => {
                let k = eval!(text(node, key, ex));
                let Some(permit) = svc.acquire(&k, *max) else {
                    return fail(
                        node,
                        429,
                        "ConcurrencyLimitExceeded",
                        "Too many requests are being processed concurrently. Try again later.",
                    );
                };
                let flow = run_nodes(chain, level, section, body, &mut *ex, svc).await;
                drop(permit);
                flow
            }
            Policy::SendRequest {
                mode_copy,
                variable,
                timeout_secs,
                ignore_error,
                one_way,
                steps,
            } => {
                let mut req = if *mode_copy {
                    Outgoing {
                        method: ex.method.to_string(),
                        url: String::new(),
                        headers: ex.request_headers.to_vec(),
                        body: ex.request_body.clone(),
                    }
                } else {
                    Outgoing {
                        method: "GET".into(),
                        ..Outgoing::default()
                    }
                };
                for step in steps {
                    match step {
                        SendStep::Url(t) => req.url = eval!(text(node, t, ex)),
                        SendStep::Method(t) => {
                            req.method = eval!(text(node, t, ex)).to_ascii_uppercase()
                        }
                        SendStep::Header {
                            name,
                            action,
                            values,
                        } => {
                            let mut vs = Vec::new();
                            for v in values {
                                vs.push(eval!(text(node, v, ex)));
                            }
                            set_pairs(&mut req.headers, name, *action, vs);
                        }
                        SendStep::Body(t) => req.body = Some(eval!(text(node, t, ex)).into_bytes()),
                    }
                }
                if req.url.is_empty() {
                    return fail(
                        node,
                        500,
                        "ExpressionValueEvaluationFailure",
                        "send-request has no URL (set-url)",
                    );
                }
                if *one_way {
                    svc.send_one_way(req);
                    return Flow::Next;
                }
                match svc.send(req, *timeout_secs).await {
                    Ok(r) => {
                        if let Some(v) = variable {
                            ex.variables.insert(v.clone(), response_value(&r));
                        }
                        Flow::Next
                    }
                    Err(e) if *ignore_error => {
                        if let Some(v) = variable {
                            ex.variables.insert(v.clone(), V::Null);
                        }
                        let _ = e;
                        Flow::Next
                    }
                    Err(e) => fail(
                        node,
                        500,
                        "SendRequestFailure",
                        format!("send-request failed: {e}"),
                    ),
                }
            }
            Policy::ReturnResponse { steps, .. } => {
                let mut response = ResponseParts {
                    status: 200,
                    reason: "OK".into(),
                    headers: Vec::new().into(),
                    body: Some(Vec::new()),
                };
                let saved = ex.response.replace(response.clone());
                for step in steps {
                    match run_node(chain, level, Section::Outbound, step, &mut *ex, svc).await {
                        Flow::Next => {}
                        other => {
                            ex.response = saved;
                            return other;
                        }
                    }
                }
                response = ex.response.take().unwrap_or_default();
                ex.response = Some(response);
                Flow::Respond
            }
            Policy::Choose { whens, otherwise } => {
                for (cond, body) in whens {
                    let v = match expr::eval_code(cond, ex) {
                        Ok(v) => v,
                        Err(e) => {
                            return fail(
                                node,
                                500,
                                "ExpressionValueEvaluationFailure",
                                format!("Expression evaluation failed. {e}"),
                            );
                        }
                    };
                    match v.truthy() {
                        Ok(true) => return run_nodes(chain, level, section, body, ex, svc).await,
                        Ok(false) => {}
                        Err(e) => {
                            return fail(
                                node,
                                500,
                                "ExpressionValueEvaluationFailure",
                                format!("The condition is not a bool: {e}"),
                            );
                        }
                    }
                }
                run_nodes(chain, level, section, otherwise, ex, svc).await
            }
            _ => run_simple(section, node, ex, svc),
        }
    })
}

/// The policies that never wait: run without a boxed future.
fn is_simple(policy: &Policy) -> bool {
    !matches!(
        policy,
        Policy::Base
            | Policy::ForwardRequest { .. }
            | Policy::Retry(_)
            | Policy::LimitConcurrency { .. }
            | Policy::SendRequest { .. }
            | Policy::ReturnResponse { .. }
            | Policy::Choose { .. }
    )
}

fn run_simple(section: Section, node: &Node, ex: &mut Exchange, svc: &dyn Services) -> Flow {
    macro_rules! eval {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(flow) => return flow,
            }
        };
    }
    match &node.policy {
        Policy::SetHeader {
            name,
            action,
            values,
        } => {
            let mut vs = Vec::new();
            for v in values {
                vs.push(eval!(text(node, v, ex)));
            }
            let on_response =
                matches!(section, Section::Outbound | Section::OnError) && ex.response.is_some();
            if on_response {
                let r = ex.response.as_mut().expect("checked");
                set_pairs(&mut r.headers, name, *action, vs);
            } else {
                set_pairs(&mut ex.request_headers, name, *action, vs);
            }
            Flow::Next
        }
        Policy::SetQueryParameter {
            name,
            action,
            values,
        } => {
            let mut vs = Vec::new();
            for v in values {
                vs.push(eval!(text(node, v, ex)));
            }
            set_pairs(&mut ex.query, name, *action, vs);
            Flow::Next
        }
        Policy::SetMethod(t) => {
            let m = eval!(text(node, t, ex)).trim().to_ascii_uppercase();
            if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphabetic()) {
                return fail(
                    node,
                    500,
                    "ExpressionValueEvaluationFailure",
                    format!("'{m}' is not an HTTP method"),
                );
            }
            ex.method = m.into();
            Flow::Next
        }
        Policy::RewriteUri {
            template,
            copy_unmatched,
        } => {
            let t = eval!(text(node, template, ex));
            let (path_t, query_t) = t.split_once('?').unwrap_or((t.as_str(), ""));
            let params = &ex.matched_parameters;
            let fill = |s: &str| -> String {
                let mut out = s.to_string();
                for (k, v) in params {
                    out = out.replace(&format!("{{{k}}}"), v);
                }
                out
            };
            let path = fill(path_t);
            let mut query: Vec<(String, String)> = query_t
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (fill(k), fill(v))
                })
                .collect();
            if *copy_unmatched {
                for (k, v) in &ex.query {
                    let matched = params.iter().any(|(p, _)| p == k);
                    if !matched && !query.iter().any(|(q, _)| q == k) {
                        query.push((k.clone(), v.clone()));
                    }
                }
            }
            ex.backend_path = if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            };
            ex.query = query;
            Flow::Next
        }
        Policy::SetBackendService {
            base_url,
            backend_id,
        } => {
            if let Some(u) = base_url {
                ex.backend_url = Some(eval!(text(node, u, ex)));
                ex.backend_tls = None;
            } else if let Some(id) = backend_id {
                let Some(b) = svc.backend(id) else {
                    return fail(
                        node,
                        500,
                        "BackendNotFound",
                        format!("The backend '{id}' does not exist."),
                    );
                };
                ex.backend_url = Some(b.url);
                ex.backend_tls = Some((b.validate_chain, b.validate_name));
                for (k, v) in b.headers {
                    set_pairs(&mut ex.request_headers, &k, ExistsAction::Override, vec![v]);
                }
                for (k, v) in b.query {
                    set_pairs(&mut ex.query, &k, ExistsAction::Override, vec![v]);
                }
                if let Some((scheme, param)) = b.authorization {
                    set_pairs(
                        &mut ex.request_headers,
                        "Authorization",
                        ExistsAction::Override,
                        vec![format!("{scheme} {param}")],
                    );
                }
            }
            Flow::Next
        }
        Policy::SetBody(t) => {
            let body = eval!(text(node, t, ex)).into_bytes();
            match (section, ex.response.as_mut()) {
                (Section::Outbound | Section::OnError, Some(r)) => r.body = Some(body),
                _ => {
                    ex.request_body = Some(body);
                    ex.request_body_changed = true;
                }
            }
            Flow::Next
        }
        Policy::SetStatus { code, reason } => {
            let c = eval!(text(node, code, ex));
            let Ok(status) = c.trim().parse::<u16>() else {
                return fail(
                    node,
                    500,
                    "ExpressionValueEvaluationFailure",
                    format!("'{c}' is not an HTTP status"),
                );
            };
            if !(100..=599).contains(&status) {
                return fail(
                    node,
                    500,
                    "ExpressionValueEvaluationFailure",
                    format!("{status} is not an HTTP status"),
                );
            }
            let reason = match reason {
                Some(r) => eval!(text(node, r, ex)),
                None => String::new(),
            };
            let r = ex.response.get_or_insert_with(ResponseParts::default);
            r.status = status;
            r.reason = reason;
            Flow::Next
        }
        Policy::MockResponse {
            status,
            content_type,
        } => {
            let (ct, body) = svc
                .example(*status, content_type.as_deref())
                .unwrap_or_else(|| (content_type.clone().unwrap_or_default(), String::new()));
            let mut headers = Vec::new();
            if !ct.is_empty() {
                headers.push(("Content-Type".to_string(), ct));
            }
            ex.response = Some(ResponseParts {
                status: *status,
                reason: String::new(),
                headers: headers.into(),
                body: Some(body.into_bytes()),
            });
            Flow::Respond
        }
        Policy::SetVariable { name, value: v } => {
            let val = eval!(value(node, v, ex));
            ex.variables.insert(name.clone(), val);
            Flow::Next
        }
        Policy::CheckHeader {
            name,
            status,
            message,
            ignore_case,
            values,
        } => {
            let present: Vec<&str> = ex
                .request_headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect();
            if present.is_empty() {
                return fail(node, *status, "HeaderNotFound", message.clone());
            }
            let ok = values.is_empty()
                || present.iter().any(|p| {
                    values.iter().any(|v| {
                        if *ignore_case {
                            v.eq_ignore_ascii_case(p)
                        } else {
                            v == p
                        }
                    })
                });
            if ok {
                Flow::Next
            } else {
                fail(node, *status, "HeaderValueNotAllowed", message.clone())
            }
        }
        Policy::IpFilter {
            allow,
            addresses,
            ranges,
        } => {
            let Some(ip) = ex.ip else {
                return fail(
                    node,
                    403,
                    "FailedToParseCallerIP",
                    "Failed to parse the caller IP address.",
                );
            };
            let listed =
                addresses.contains(&ip) || ranges.iter().any(|(from, to)| in_range(ip, *from, *to));
            match (*allow, listed) {
                (true, true) | (false, false) => Flow::Next,
                (true, false) => fail(
                    node,
                    403,
                    "CallerIpNotAllowed",
                    format!("Caller IP address {ip} is not allowed."),
                ),
                (false, true) => fail(
                    node,
                    403,
                    "CallerIpBlocked",
                    format!("Caller IP address {ip} is blocked."),
                ),
            }
        }
        Policy::RateLimit(limit) => limit_calls(node, limit, false, ex, svc),
        Policy::Quota(limit) => limit_calls(node, limit, true, ex, svc),
        Policy::Cors(cors) => run_cors(cors, ex),
        Policy::Trace { source, message } => {
            let m = eval!(text(node, message, ex));
            svc.trace(source, &m);
            Flow::Next
        }
        Policy::AuthenticationBasic { username, password } => {
            use base64::Engine;
            let u = eval!(text(node, username, ex));
            let p = eval!(text(node, password, ex));
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            set_pairs(
                &mut ex.request_headers,
                "Authorization",
                ExistsAction::Override,
                vec![format!("Basic {token}")],
            );
            Flow::Next
        }
        Policy::ValidateJwt(jwt) => {
            let value = match &jwt.source {
                crate::doc::TokenSource::Value(t) => Some(eval!(text(node, t, ex))),
                _ => None,
            };
            let query = |q: &str| {
                ex.query
                    .iter()
                    .find(|(k, _)| k == q)
                    .map(|(_, v)| v.clone())
            };
            let result =
                crate::jwt::extract(jwt, |h| header(ex, h).map(str::to_string), query, value)
                    .and_then(|token| {
                        let mut keys = Vec::new();
                        for url in &jwt.openid_urls {
                            keys.extend(svc.openid_keys(url).unwrap_or_default());
                        }
                        crate::jwt::validate(jwt, &token, &keys)
                    });
            match result {
                Ok(claims) => {
                    if let Some(v) = &jwt.output_variable {
                        ex.variables
                            .insert(v.clone(), crate::jwt::as_variable(claims));
                    }
                    Flow::Next
                }
                Err(r) => {
                    let message = jwt.message.clone().unwrap_or(r.message);
                    fail(node, jwt.status, r.reason, message)
                }
            }
        }
        Policy::Convert {
            to_xml,
            only_matching_type,
            consider_accept,
            direct,
        } => {
            let want = if *to_xml { "xml" } else { "json" };
            let have = if *to_xml { "json" } else { "xml" };
            let on_response =
                matches!(section, Section::Outbound | Section::OnError) && ex.response.is_some();
            if *consider_accept
                && on_response
                && !header(ex, "Accept").is_some_and(|a| a.to_ascii_lowercase().contains(want))
            {
                return Flow::Next;
            }
            let content_type = if on_response {
                ex.response
                    .as_ref()
                    .and_then(|r| r.header("Content-Type"))
                    .map(str::to_string)
            } else {
                header(ex, "Content-Type").map(str::to_string)
            };
            if *only_matching_type
                && !content_type.is_some_and(|c| c.to_ascii_lowercase().contains(have))
            {
                return Flow::Next;
            }
            let body = if on_response {
                ex.response.as_ref().and_then(|r| r.body.clone())
            } else {
                ex.request_body.clone()
            };
            let Some(body) = body.filter(|b| !b.is_empty()) else {
                return Flow::Next;
            };
            let text = String::from_utf8_lossy(&body);
            let converted = if *to_xml {
                crate::convert::json_to_xml(&text)
            } else {
                crate::convert::xml_to_json(&text, *direct)
            };
            let converted = match converted {
                Ok(c) => c.into_bytes(),
                Err(e) => return fail(node, 500, "ConversionFailure", e),
            };
            let new_type = if *to_xml {
                "application/xml"
            } else {
                "application/json"
            };
            if on_response {
                let r = ex.response.as_mut().expect("checked");
                r.body = Some(converted);
                set_pairs(
                    &mut r.headers,
                    "Content-Type",
                    ExistsAction::Override,
                    vec![new_type.into()],
                );
            } else {
                ex.request_body = Some(converted);
                ex.request_body_changed = true;
                set_pairs(
                    &mut ex.request_headers,
                    "Content-Type",
                    ExistsAction::Override,
                    vec![new_type.into()],
                );
            }
            Flow::Next
        }
        Policy::CacheLookup {
            vary_by_developer,
            vary_by_groups,
            headers,
            query,
        } => {
            if ex.method != "GET" {
                return Flow::Next;
            }
            let info = |k: &str| ex.info.get(k).map(|v| v.text()).unwrap_or_default();
            let mut key = format!(
                "response|{}|{}|{}",
                info("Api.Id"),
                info("Operation.Id"),
                ex.backend_path
            );
            for q in query {
                let v = ex
                    .query
                    .iter()
                    .filter(|(k, _)| k == q)
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                key.push_str(&format!("|q:{q}={v}"));
            }
            for h in headers {
                key.push_str(&format!(
                    "|h:{}={}",
                    h.to_ascii_lowercase(),
                    header(ex, h).unwrap_or("")
                ));
            }
            if *vary_by_developer {
                key.push_str(&format!("|u:{}", info("User.Id")));
            }
            if *vary_by_groups {
                key.push_str(&format!("|g:{}", info("User.Groups")));
            }
            if let Some(Cached::Response(r)) = svc.cache_get(&key) {
                ex.response = Some(r);
                return Flow::Respond;
            }
            ex.cache_key = Some(key);
            Flow::Next
        }
        Policy::CacheStore { duration_secs } => {
            if let (Some(key), Some(r)) = (&ex.cache_key, &ex.response)
                && r.status == 200
                && r.body.is_some()
            {
                svc.cache_put(key, Cached::Response(r.clone()), *duration_secs);
            }
            Flow::Next
        }
        Policy::CacheLookupValue {
            key,
            variable,
            default,
        } => {
            let k = eval!(text(node, key, ex));
            let v = match svc.cache_get(&format!("value|{k}")) {
                Some(Cached::Value(v)) => Some(v),
                _ => match default {
                    Some(d) => Some(eval!(value(node, d, ex))),
                    None => None,
                },
            };
            if let Some(v) = v {
                ex.variables.insert(variable.clone(), v);
            }
            Flow::Next
        }
        Policy::CacheStoreValue {
            key,
            value: v,
            duration_secs,
        } => {
            let k = eval!(text(node, key, ex));
            let val = eval!(value(node, v, ex));
            svc.cache_put(&format!("value|{k}"), Cached::Value(val), *duration_secs);
            Flow::Next
        }
        Policy::CacheRemoveValue { key } => {
            let k = eval!(text(node, key, ex));
            svc.cache_remove(&format!("value|{k}"));
            Flow::Next
        }
        Policy::FindAndReplace { from, to } => {
            let f = eval!(text(node, from, ex));
            let t = eval!(text(node, to, ex));
            let body = match (section, ex.response.as_mut()) {
                (Section::Outbound | Section::OnError, Some(r)) => &mut r.body,
                _ => {
                    ex.request_body_changed = true;
                    &mut ex.request_body
                }
            };
            if let Some(b) = body.as_mut()
                && !f.is_empty()
            {
                *b = String::from_utf8_lossy(b).replace(&f, &t).into_bytes();
            }
            Flow::Next
        }
        _ => Flow::Next,
    }
}

/// retry's wait before attempt `n` (1-based): fixed, linear or exponential, capped.
fn retry_interval(r: &crate::doc::Retry, n: u64) -> std::time::Duration {
    let secs = match (r.delta_secs, r.max_interval_secs) {
        (None, _) => r.interval_secs as f64,
        (Some(d), None) => r.interval_secs as f64 + (n.saturating_sub(1)) as f64 * d as f64,
        (Some(d), Some(max)) => {
            let exp = r.interval_secs as f64 + (2f64.powi(n.min(30) as i32) - 1.0) * d as f64;
            exp.min(max as f64)
        }
    };
    std::time::Duration::from_secs_f64(secs.max(0.0))
}

/// A send-request answer as the variable holds it: `StatusCode`, `Headers`, `Body`.
fn response_value(r: &ResponseParts) -> V {
    let headers: serde_json::Map<String, serde_json::Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    V::Json(serde_json::json!({
        "StatusCode": r.status,
        "StatusReason": r.reason,
        "Headers": headers,
        "Body": r.body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(),
    }))
}

fn in_range(ip: IpAddr, from: IpAddr, to: IpAddr) -> bool {
    match (ip, from, to) {
        (IpAddr::V4(i), IpAddr::V4(f), IpAddr::V4(t)) => {
            (u32::from(f)..=u32::from(t)).contains(&u32::from(i))
        }
        (IpAddr::V6(i), IpAddr::V6(f), IpAddr::V6(t)) => {
            (u128::from(f)..=u128::from(t)).contains(&u128::from(i))
        }
        _ => false,
    }
}

fn limit_calls(
    node: &Node,
    limit: &RateLimit,
    quota: bool,
    ex: &mut Exchange,
    svc: &dyn Services,
) -> Flow {
    let (named, subscription);
    let key = match &limit.key {
        Some(k) => match text(node, k, ex) {
            Ok(k) => {
                named = format!("key:{k}");
                CounterKey::Text(&named)
            }
            Err(flow) => return flow,
        },
        None => {
            // Per subscription; APIM applies it only when a subscription key was used.
            let Some(V::Str(id)) = ex.info.get("Subscription.Id") else {
                return Flow::Next;
            };
            subscription = id;
            CounterKey::per_subscription(node, &subscription)
        }
    };
    let increment = match &limit.condition {
        None => limit.increment,
        Some(c) => match expr::eval_code(c, ex).map(|v| v.truthy()) {
            Ok(Ok(true)) => limit.increment,
            Ok(Ok(false)) => 0,
            Ok(Err(e)) => return fail(node, 500, "ExpressionValueEvaluationFailure", e),
            Err(e) => {
                return fail(
                    node,
                    500,
                    "ExpressionValueEvaluationFailure",
                    format!("Expression evaluation failed. {e}"),
                );
            }
        },
    };
    let count = |key: CounterKey<'_>, calls, period, increment, sliding| {
        svc.count(key, calls, period, increment, sliding)
    };
    let (c, calls) = count_calls(limit, quota, key, increment, &|k| ex.info.get(k), &count);
    if let Some(v) = &limit.remaining_variable {
        ex.variables.insert(v.clone(), V::Int(c.remaining as i64));
    }
    if c.allowed {
        if let Some(h) = &limit.remaining_header {
            set_pairs(
                &mut ex.request_headers,
                h,
                ExistsAction::Override,
                vec![c.remaining.to_string()],
            );
        }
        if let Some(h) = &limit.total_header {
            set_pairs(
                &mut ex.request_headers,
                h,
                ExistsAction::Override,
                vec![calls.to_string()],
            );
        }
        return Flow::Next;
    }
    if let Some(v) = &limit.retry_after_variable {
        ex.variables
            .insert(v.clone(), V::Int(c.retry_after_secs as i64));
    }
    Flow::Fail(limit_refusal(node, limit, quota, &c, calls))
}

/// [`Services::count`]'s signature: key, calls, period (seconds), increment, sliding.
pub type Count<'a> = dyn Fn(CounterKey<'_>, u64, u64, u64, bool) -> Counted + 'a;

/// Counts a call against a limit's counter `key`, then against the per-API and per-operation
/// limits inside it that apply (`info` names the request's API and operation): the tightest
/// outcome, and the number of calls its limit allows.
fn count_calls(
    limit: &RateLimit,
    quota: bool,
    key: CounterKey<'_>,
    increment: u64,
    info: &dyn Fn(&str) -> Option<V>,
    count: &Count,
) -> (Counted, u64) {
    let mut c = count(key, limit.calls, limit.period_secs, increment, !quota);
    let mut calls = limit.calls;
    // The names are looked up only when there are such limits.
    let name = |k: &str| info(k).map(|v| v.text()).unwrap_or_default();
    let (api_id, api_name, op_id, op_name) = if limit.scoped.is_empty() {
        Default::default()
    } else {
        (
            name("Api.Id"),
            name("Api.Name"),
            name("Operation.Id"),
            name("Operation.Name"),
        )
    };
    for s in &limit.scoped {
        if !c.allowed {
            break;
        }
        let api_matches = s.api == api_id || s.api == api_name;
        let op_matches = s
            .operation
            .as_ref()
            .is_none_or(|o| *o == op_id || *o == op_name);
        if api_matches && op_matches {
            let scoped_key = format!("{key}:{}:{}", s.api, s.operation.as_deref().unwrap_or(""));
            let sc = count(
                CounterKey::Text(&scoped_key),
                s.calls,
                s.period_secs,
                increment,
                !quota,
            );
            if !sc.allowed || sc.remaining < c.remaining {
                c = sc;
                calls = s.calls;
            }
        }
    }
    (c, calls)
}

/// APIM's answer to a call over a limit: 429 (rate limit) or 403 (quota) with the time to wait.
fn limit_refusal(node: &Node, limit: &RateLimit, quota: bool, c: &Counted, calls: u64) -> Failure {
    let mut headers = vec![(
        limit
            .retry_after_header
            .clone()
            .unwrap_or_else(|| "Retry-After".into()),
        c.retry_after_secs.to_string(),
    )];
    if let Some(h) = &limit.remaining_header {
        headers.push((h.clone(), "0".into()));
    }
    if let Some(h) = &limit.total_header {
        headers.push((h.clone(), calls.to_string()));
    }
    let (status, reason, message) = if quota {
        let s = c.retry_after_secs;
        (
            403,
            "QuotaExceeded",
            format!(
                "Out of call volume quota. Quota will be replenished in {:02}:{:02}:{:02}.",
                s / 3600,
                (s / 60) % 60,
                s % 60
            ),
        )
    } else {
        (
            429,
            "RateLimitExceeded",
            format!(
                "Rate limit is exceeded. Try again in {} seconds.",
                c.retry_after_secs
            ),
        )
    };
    Failure {
        status,
        reason,
        message,
        policy: node.name,
        policy_id: node.id.clone(),
        pos: node.pos,
        headers,
    }
}

fn header<'a>(ex: &'a Exchange, name: &str) -> Option<&'a str> {
    ex.request_headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn run_cors(cors: &Cors, ex: &mut Exchange) -> Flow {
    let Some(origin) = header(ex, "Origin").map(str::to_string) else {
        return Flow::Next;
    };
    let origin_ok = cors
        .origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(&origin));
    let preflight = ex.method == "OPTIONS" && header(ex, "Access-Control-Request-Method").is_some();
    let methods: Vec<String> = if cors.methods.is_empty() {
        vec!["GET".into(), "POST".into()]
    } else {
        cors.methods.clone()
    };
    let allow_origin = if cors.origins.iter().any(|o| o == "*") && !cors.allow_credentials {
        "*".to_string()
    } else {
        origin.clone()
    };
    if preflight {
        let method = header(ex, "Access-Control-Request-Method")
            .unwrap_or("")
            .to_string();
        let method_ok = methods
            .iter()
            .any(|m| m == "*" || m.eq_ignore_ascii_case(&method));
        let requested: Vec<String> = header(ex, "Access-Control-Request-Headers")
            .map(|h| {
                h.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let headers_ok = requested.iter().all(|r| {
            cors.headers
                .iter()
                .any(|h| h == "*" || h.eq_ignore_ascii_case(r))
        });
        let mut headers = Vec::new();
        if origin_ok && method_ok && headers_ok {
            headers.push(("Access-Control-Allow-Origin".to_string(), allow_origin));
            headers.push((
                "Access-Control-Allow-Methods".to_string(),
                methods.join(","),
            ));
            if !requested.is_empty() {
                headers.push((
                    "Access-Control-Allow-Headers".to_string(),
                    requested.join(","),
                ));
            }
            if cors.allow_credentials {
                headers.push((
                    "Access-Control-Allow-Credentials".to_string(),
                    "true".into(),
                ));
            }
            if cors.max_age > 0 {
                headers.push((
                    "Access-Control-Max-Age".to_string(),
                    cors.max_age.to_string(),
                ));
            }
        } else if !cors.terminate_unmatched {
            return Flow::Next;
        }
        ex.response = Some(ResponseParts {
            status: 200,
            reason: "OK".into(),
            headers: headers.into(),
            body: Some(Vec::new()),
        });
        return Flow::Respond;
    }
    if origin_ok {
        ex.variables.insert("__cors".into(), V::Str(allow_origin));
        if cors.allow_credentials {
            ex.variables
                .insert("__cors_credentials".into(), V::Bool(true));
        }
        if !cors.expose.is_empty() {
            ex.variables
                .insert("__cors_expose".into(), V::Str(cors.expose.join(",")));
        }
    }
    Flow::Next
}

/// Headers a CORS policy asks to add to the final response (for an allowed origin).
pub fn cors_response_headers(ex: &Exchange) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(V::Str(o)) = ex.variables.get("__cors") {
        out.push(("Access-Control-Allow-Origin".to_string(), o.clone()));
        if ex.variables.contains_key("__cors_credentials") {
            out.push((
                "Access-Control-Allow-Credentials".to_string(),
                "true".into(),
            ));
        }
        if let Some(V::Str(e)) = ex.variables.get("__cors_expose") {
            out.push(("Access-Control-Expose-Headers".to_string(), e.clone()));
        }
    }
    out
}

fn pairs_lookup(pairs: &[(String, String)], key: &str) -> Option<V> {
    let vals: Vec<V> = pairs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| V::Str(v.clone()))
        .collect();
    (!vals.is_empty()).then_some(V::List(vals))
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
    fn member(&self, path: &str) -> Result<V, String> {
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
            "Request.Headers" => pairs_lookup(&self.request_headers, key),
            "Response.Headers" => self
                .response
                .as_ref()
                .and_then(|r| pairs_lookup(&r.headers, key)),
            "Request.Url.Query" => pairs_lookup(&self.query, key).map(|v| match v {
                V::List(mut l) if l.len() == 1 => l.remove(0),
                v => v,
            }),
            "Request.OriginalUrl.Query" => pairs_lookup(&parse_query(&self.original_query), key)
                .map(|v| match v {
                    V::List(mut l) if l.len() == 1 => l.remove(0),
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

    fn body(&self, message: &str) -> Result<String, String> {
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
        let mut h = Headers::with_original(Arc::new(1u32), list);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(interval: u64, delta: Option<u64>, max: Option<u64>) -> crate::doc::Retry {
        crate::doc::Retry {
            condition: std::sync::Arc::new(crate::expr::parse("@(true)").unwrap()),
            count: 5,
            interval_secs: interval,
            max_interval_secs: max,
            delta_secs: delta,
            first_fast_retry: false,
            body: Vec::new(),
        }
    }

    #[test]
    fn retry_intervals_are_fixed_linear_or_exponential() {
        let secs = |r: &crate::doc::Retry, n| retry_interval(r, n).as_secs();
        let fixed = retry(2, None, None);
        assert_eq!((secs(&fixed, 1), secs(&fixed, 4)), (2, 2));
        let linear = retry(1, Some(3), None);
        assert_eq!((secs(&linear, 1), secs(&linear, 3)), (1, 7));
        let exponential = retry(1, Some(1), Some(10));
        assert_eq!((secs(&exponential, 1), secs(&exponential, 2)), (2, 4));
        assert_eq!(secs(&exponential, 20), 10, "capped by max-interval");
    }

    #[test]
    fn ip_ranges_compare_within_one_family() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_range(ip("10.0.0.5"), ip("10.0.0.1"), ip("10.0.0.9")));
        assert!(!in_range(ip("10.0.1.0"), ip("10.0.0.1"), ip("10.0.0.9")));
        assert!(in_range(ip("::5"), ip("::1"), ip("::9")));
        assert!(!in_range(ip("::5"), ip("10.0.0.1"), ip("10.0.0.9")));
    }

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
}
