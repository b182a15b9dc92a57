//! Requests with policies: the full path through inbound, backend, outbound and on-error, and
//! the counted path that only counts calls per subscription.

use super::exchange::*;
use super::limits::*;
use super::services::*;
use crate::body::Body;
use crate::context::{RequestContext, json_error};
use crate::request::ClientRequest;
use crate::shared::Shared;
use gatehouse_policy::Section;
use gatehouse_policy::exec::{
    self, Chain, CountedForward, CounterKey, Exchange, Flow, ResponseParts,
};
use gatehouse_policy::expr::V;
use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a policy-run request ends with: the response, plus the on-error reason if any.
pub(crate) struct Outcome {
    pub response: Response<Body>,
    pub backend_ms: Option<f64>,
    pub error_reason: Option<&'static str>,
}

/// A call a limit refused: APIM's default error answer (the chain has no on-error) and why.
pub(crate) struct Refused {
    pub response: Response<Body>,
    pub reason: &'static str,
}

/// Counts a call against the limits of an [`exec::counted_forward`] chain.
pub(crate) fn count_call(
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
pub(crate) enum Served {
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
pub(crate) async fn serve(
    shared: &Shared,
    ctx: &RequestContext,
    chain: Chain<'_>,
    req: ClientRequest,
    routed: crate::context::Routed,
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
        request_headers: exec::Headers::with_original(headers.clone(), READ_HEADERS),
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
                let detail =
                    crate::body::client_body_error(e.as_ref()).unwrap_or_else(|| e.to_string());
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
                        crate::context::MSG_OPERATION_NOT_FOUND,
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
                timeout: crate::context::forward_timeout(&forward),
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
    if !ex.charges.is_empty() {
        settle_charges(shared, &ex);
    }
    let parts = ex.response.take().unwrap_or_default();
    Served::Answered(Outcome {
        response: build_response(&ex, parts, stream),
        backend_ms,
        error_reason,
    })
}

/// Charges the counters the request was let through on, now that its answer is known: a
/// bandwidth quota with the body bytes both ways (the buffered or declared request length,
/// the response's buffered length or its Content-Length), a conditional limit with its
/// increment if the condition holds. A charge never takes a counter past its limit.
fn settle_charges(shared: &Shared, ex: &Exchange) {
    let declared = |v: Option<&str>| v.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    let request = match &ex.request_body {
        Some(b) => b.len() as u64,
        None => declared(ex.header("content-length")),
    };
    let answer = ex.response.as_ref().map_or(0, |r| match &r.body {
        Some(b) => b.len() as u64,
        None => declared(r.header("content-length")),
    });
    let now = std::time::Instant::now();
    for c in &ex.charges {
        let amount = c.amount(ex, request + answer);
        if amount == 0 {
            continue;
        }
        let key = CounterKey::Text(&c.key);
        let left = shared
            .counters
            .count(key, c.limit, c.period_secs, 0, c.sliding, now)
            .remaining;
        let key = CounterKey::Text(&c.key);
        shared.counters.count(
            key,
            c.limit,
            c.period_secs,
            amount.min(left),
            c.sliding,
            now,
        );
    }
}
