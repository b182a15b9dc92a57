//! The request pipeline. Each request runs APIM's phases in order — inbound (route, operation,
//! subscription key), backend (forward), outbound (response headers) — and any failure jumps to
//! on-error, which answers with APIM's JSON error body. The policy engine will hook into these
//! same phases; `RequestContext` is what its `context` will read.
//!
//! Invariant: a request loads the routing table once, at its start, and uses that table to the
//! end: a configuration swap never changes a request in flight.

use crate::body::Body;
use crate::context::{
    ClientConnection, GatewayError, MSG_KEY_INVALID, MSG_KEY_MISSING, MSG_NOT_FOUND,
    MSG_OPERATION_NOT_FOUND, RequestContext, Routed, STATUS_PATH, backend_headers, forward_error,
    forward_timeout, json_error,
};
use crate::policies::Served;
use crate::proxy::{self};
use crate::request::{ClientRequest, RequestHeaders, RequestId};
use crate::shared::Shared;
use crate::table::{ApiKind, ApiRoute, RoutingTable};
use crate::telemetry::{AccessRecord, StatKey, bucket_of, without_param};
use crate::template;
use hyper::header::{self};
use hyper::{Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Inbound: API, protocol, operation, subscription key.
/// The reason inbound gives when a SOAP request names no action: its body must be read to
/// find the operation (then inbound runs again with the Body's first element).
const SOAP_BODY_NEEDED: &str = "SoapBodyNeeded";

fn inbound(
    ctx: &mut RequestContext,
    req: &ClientRequest,
    tls: bool,
    soap_element: Option<&str>,
    portal: Option<&Arc<ApiRoute>>,
) -> Result<(), GatewayError> {
    let path = req.uri.path();
    let query = req.uri.query();
    let headers = &req.headers;
    let table = ctx.table.clone();
    let found = match portal {
        Some(route) => Some((route.clone(), 0)),
        None => table.find_api_at(path, query, |name| {
            headers
                .get_str(&name.to_ascii_lowercase())
                .map(str::to_string)
        }),
    };
    let (api, rest_start) = found
        .ok_or_else(|| GatewayError::new(StatusCode::NOT_FOUND, "ApiNotFound", MSG_NOT_FOUND))?;
    let rest = crate::table::rest_of(path, rest_start);
    if (tls && !api.allow_https) || (!tls && !api.allow_http) {
        return Err(GatewayError::new(
            StatusCode::NOT_FOUND,
            "ApiNotFound",
            MSG_NOT_FOUND,
        ));
    }
    let preflight_method = (req.method == hyper::Method::OPTIONS
        && headers.get("origin").is_some())
    .then(|| headers.get_str("access-control-request-method"))
    .flatten();
    ctx.preflight = preflight_method.is_some();
    let method = preflight_method.unwrap_or(req.method.as_str());
    let soap = match api.kind {
        ApiKind::Soap => crate::soap::action(headers),
        _ => None,
    };
    let found = api.operations.iter().enumerate().find_map(|(i, op)| {
        if !(op.method.eq_ignore_ascii_case(method) || op.method == "*") {
            return None;
        }
        match (&soap, &op.soap_action, soap_element, &op.soap_element) {
            (Some(action), Some(wanted), _, _) => (action == wanted).then_some(i),
            (None, _, Some(element), Some(wanted)) => (element == wanted).then_some(i),
            _ => op.template.is_match(rest, query).then_some(i),
        }
    });
    let body_needed = matches!(api.kind, ApiKind::Soap)
        && soap.is_none()
        && soap_element.is_none()
        && api.operations.iter().any(|o| o.soap_element.is_some());
    let op_index = found.ok_or_else(|| {
        let reason = if body_needed {
            SOAP_BODY_NEEDED
        } else {
            "OperationNotFound"
        };
        GatewayError::new(StatusCode::NOT_FOUND, reason, MSG_OPERATION_NOT_FOUND)
    })?;
    ctx.operation = Some(op_index);
    ctx.rest_start = rest_start;
    ctx.api = Some(api.clone());

    if ctx.preflight {
        return Ok(());
    }
    // Subscription key: the API's header, else its query parameter.
    let key: Option<std::borrow::Cow<str>> = match headers.get_str(api.key_header.as_str()) {
        Some(k) => Some(k.into()),
        None => query
            .and_then(|q| template::query_value(q, &api.key_query))
            .map(Into::into),
    };
    match key {
        None => {
            if let Some(open) = api.open_product() {
                ctx.product = Some(open.clone());
                Ok(())
            } else if !api.subscription_required {
                Ok(())
            } else {
                Err(GatewayError::new(
                    StatusCode::UNAUTHORIZED,
                    "SubscriptionKeyNotFound",
                    MSG_KEY_MISSING,
                ))
            }
        }
        Some(key) => {
            let invalid = || {
                GatewayError::new(
                    StatusCode::UNAUTHORIZED,
                    "SubscriptionKeyInvalid",
                    MSG_KEY_INVALID,
                )
            };
            let entry = table.key(&key).ok_or_else(invalid)?;
            let sub = &entry.subscription;
            let scope = sub.scope.as_str();
            let product = if scope == "/" || scope == "/apis" {
                None
            } else if let Some(id) = scope.strip_prefix("/apis/") {
                if id != &*api.id {
                    return Err(invalid());
                }
                None
            } else if let Some(id) = scope.strip_prefix("/products/") {
                let p = api
                    .products
                    .iter()
                    .find(|p| &*p.id == id)
                    .ok_or_else(invalid)?;
                Some(p.clone())
            } else {
                return Err(invalid());
            };
            ctx.product = product;
            ctx.user = sub.owner.clone();
            ctx.subscription = Some(sub.clone());
            Ok(())
        }
    }
}

/// The schema a routed GraphQL API checks queries against, if it has one.
fn graphql_schema(ctx: &RequestContext) -> Option<Arc<crate::graphql::GraphQlSchema>> {
    match &ctx.api.as_ref()?.kind {
        ApiKind::GraphQl(schema) => schema.clone(),
        _ => None,
    }
}

/// Where a routed WebSocket handshake goes.
pub(crate) struct HandshakeTarget {
    pub url: hyper::Uri,
    /// The subscription key's header, which the backend does not get.
    pub key_header: hyper::header::HeaderName,
}

/// Routes a WebSocket handshake as any request is routed — API, protocol, operation,
/// subscription key — and says where it goes: the API's service URL with the rest of the
/// path and the query (without the key's parameter).
pub(crate) fn route_handshake(
    shared: &Shared,
    req: &ClientRequest,
    tls: bool,
    client: Arc<ClientConnection>,
) -> Result<HandshakeTarget, GatewayError> {
    let mut ctx = RequestContext::start(
        shared.next_request_id(),
        shared.table.load_full(),
        Instant::now(),
        client,
        true,
    );
    inbound(&mut ctx, req, tls, None, None)?;
    let api = ctx.api.as_ref().expect("routed");
    let base = api.service_url.as_deref().ok_or_else(|| {
        GatewayError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "BackendNotConfigured",
            "The API has no backend service URL.",
        )
    })?;
    let rest = ctx.rest(req.uri.path());
    let query = req
        .uri
        .query()
        .map(|q| without_param(q, &api.key_query))
        .unwrap_or_default();
    let mut url = format!("{base}{}", if rest == "/" { "" } else { rest });
    if url.split_once("://").is_none_or(|(_, r)| !r.contains('/')) {
        url.push('/');
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    let url = url.parse().map_err(|_| {
        GatewayError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "BackendUrlInvalid",
            "The backend URL is not valid.",
        )
    })?;
    Ok(HandshakeTarget {
        url,
        key_header: api.key_header.clone(),
    })
}

/// Backend: builds the backend request from the client's, with the edits its headers get on
/// the way ([`handle`] forwards it: built here rather than in an async fn of its own, the
/// request would be kept twice in every request's future).
fn backend_request(
    shared: &Shared,
    ctx: &RequestContext,
    req: ClientRequest,
    tls: bool,
) -> Result<(Request<Body>, crate::headers::HeaderEdits), GatewayError> {
    let api = ctx.api.as_ref().expect("routed");
    let Some(service_url) = api.service_url.as_deref() else {
        return Err(GatewayError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "BackendNotConfigured",
            "The API has no backend service URL.",
        ));
    };
    // A declared Content-Length is the body's exact size hint (no header lookup needed).
    if hyper::body::Body::size_hint(&req.body).lower() > shared.config.max_body_bytes {
        return Err(GatewayError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!(
                "The request body is larger than the limit of {} bytes.",
                shared.config.max_body_bytes
            ),
        ));
    }
    let rest = ctx.rest(req.uri.path());
    let query = match req.uri.query() {
        Some(q) => without_param(q, &api.key_query),
        None => String::new(),
    };
    let uri = match &api.backend_base {
        Some(base) => base.uri(rest, &query),
        None => {
            let mut url = String::with_capacity(service_url.len() + rest.len() + query.len() + 1);
            url.push_str(service_url);
            if rest != "/" || !service_url.ends_with('/') {
                url.push_str(rest);
            }
            if !query.is_empty() {
                url.push('?');
                url.push_str(&query);
            }
            url.parse::<hyper::Uri>().ok()
        }
    };
    let uri = uri.ok_or_else(|| {
        GatewayError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "BackendUrlInvalid",
            "The backend URL is not valid.",
        )
    })?;
    let limit = shared.config.max_body_bytes as usize;
    let body = Body::new(http_body_util::Limited::new(req.body, limit));
    let mut out = Request::new(body);
    *out.method_mut() = req.method;
    *out.uri_mut() = uri;
    let mut edits = backend_headers(api, ctx, tls);
    edits.raw_response = true;
    match req.headers {
        RequestHeaders::Map(map) => *out.headers_mut() = map,
        RequestHeaders::Raw(raw) => edits.headers = Some(crate::headers::ClientHeaders::Raw(raw)),
    }
    Ok((out, edits))
}

/// Outbound: response headers as the client should see them (the request id aside: see
/// [`Answer`]).
fn outbound(mut resp: Response<Body>) -> Response<Body> {
    crate::headers::strip_hop_by_hop(resp.headers_mut());
    resp
}

/// Where a request stands after inbound (and the policies, if any).
enum Step {
    Answered(Response<Body>),
    /// To the backend as the client sent it, answering within the given timeout (else the
    /// gateway's).
    Forward(ClientRequest, Option<std::time::Duration>),
}

/// A request's response, and the id its `x-request-id` header is to carry. The connection's
/// writer adds the header ([`Answer::into_response`] for hyper's): inserted into the
/// response's header map — empty on the plain path, whose fields stay as the backend sent
/// them — it would cost that map's two allocations per request. The writer leaves out any
/// other `x-request-id` field (the backend's, a policy's): the gateway's id wins.
pub(crate) struct Answer {
    pub response: Response<Body>,
    /// None for the health probe's answer.
    pub request_id: Option<RequestId>,
}

impl Answer {
    /// The response with its `x-request-id` header, for a writer that takes a header map.
    pub(crate) fn into_response(self) -> Response<Body> {
        let mut response = self.response;
        if let Some(id) = self.request_id {
            response
                .headers_mut()
                .insert(crate::headers::X_REQUEST_ID.clone(), id.to_header_value());
        }
        response
    }
}

/// The portal's route, when the request is for one of the service's `DeveloperPortal` host
/// names and the portal runs here. With no such host name (the usual case) this is one check.
fn portal_route<'a>(
    shared: &'a Shared,
    table: &RoutingTable,
    req: &ClientRequest,
) -> Option<&'a Arc<ApiRoute>> {
    if table.portal_hosts.is_empty() {
        return None;
    }
    let route = shared.portal_route.as_ref()?;
    let host = req
        .headers
        .get_str("host")
        .or_else(|| req.uri.authority().map(|a| a.as_str()))?;
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    table
        .portal_hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
        .then_some(route)
}

/// Serves one request through the phases and records what happened.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    mut req: ClientRequest,
    remote: SocketAddr,
    tls: bool,
    client: Arc<ClientConnection>,
) -> Answer {
    let started = Instant::now();
    let http1 = req.version < hyper::Version::HTTP_2;
    if req.uri.path() == STATUS_PATH {
        let mut resp = Response::new(crate::body::empty());
        *resp.status_mut() = StatusCode::OK;
        close_if_draining(&shared, http1, &mut resp);
        return Answer {
            response: resp,
            request_id: None,
        };
    }
    let request_id =
        RequestId::from_client(&req.headers).unwrap_or_else(|| shared.next_request_id());
    // What the access log needs of the request, kept only when there is an access log.
    let logged = shared.access_log.enabled().then(|| LoggedRequest {
        method: req.method.to_string(),
        path: req.uri.path().to_string(),
        query: req.uri.query().map(str::to_string),
    });
    let mut ctx =
        RequestContext::start(request_id, shared.table.load_full(), started, client, http1);
    let mut backend_ms = None;
    let mut answered = None;
    let mut error_reason = None;
    let portal = portal_route(&shared, &ctx.table, &req);
    let mut routed = match shared.refusal.reason() {
        None => inbound(&mut ctx, &req, tls, None, portal),
        Some(reason) => Err(GatewayError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "GatewayUnavailable",
            format!("This gateway does not serve: {reason}"),
        )),
    };
    if matches!(&routed, Err(e) if e.reason == SOAP_BODY_NEEDED) {
        let element = match req.buffer_body(crate::soap::MAX_ROUTING_BODY).await {
            Some(body) => crate::soap::body_element(&body),
            None => String::new(),
        };
        routed = inbound(&mut ctx, &req, tls, Some(&element), portal);
    }
    let refused = match (&routed, graphql_schema(&ctx)) {
        (Ok(()), Some(schema)) if !ctx.preflight => {
            crate::graphql::check(&schema, &mut req, shared.config.max_body_bytes)
                .await
                .err()
        }
        _ => None,
    };
    let table = ctx.table.clone();
    let chain = match &routed {
        // The portal's own pages are not an API: the service's policies do not apply to them.
        Ok(()) if !table.policies.is_empty() && portal.is_none() => {
            Some(table.policies.chain(&ctx.scopes()))
        }
        _ => None,
    };
    let step = match refused {
        Some(refusal) => {
            error_reason = Some("GraphQlQueryInvalid");
            Ok(Step::Answered(refusal))
        }
        None => match (routed, chain) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(Err(broken))) => {
                tracing::error!(error = %broken, "request refused: its policy does not compile");
                Err(GatewayError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "PolicyNotCompiled",
                    "Internal server error",
                ))
            }
            (Ok(()), Some(Ok(chain)))
                if !ctx.preflight
                    && let Some(counted) = gatehouse_policy::exec::counted_forward(&chain) =>
            {
                // Only limits to count, then the request goes as it came: no exchange to build.
                match crate::policies::count_call(&shared, &ctx, &counted) {
                    Ok(()) => Ok(Step::Forward(req, Some(forward_timeout(&counted.forward)))),
                    Err(refused) => {
                        error_reason = Some(refused.reason);
                        Ok(Step::Answered(refused.response))
                    }
                }
            }
            (Ok(()), Some(Ok(chain))) if !chain.is_empty() => {
                // Boxed: the policy path's future is large, and every request's future would
                // otherwise be as large (and copied whole each time a request starts).
                let rest = ctx.rest(req.uri.path());
                let routed = Routed {
                    // Taken here: routing only asked whether the template matches.
                    parameters: ctx
                        .operation()
                        .and_then(|op| op.template.matches(rest, req.uri.query()))
                        .unwrap_or_default(),
                    rest: rest.to_string(),
                };
                let served = Box::pin(crate::policies::serve(
                    &shared, &ctx, chain, req, routed, remote, tls,
                ))
                .await;
                match served {
                    Served::Answered(out) => {
                        backend_ms = out.backend_ms;
                        error_reason = out.error_reason;
                        Ok(Step::Answered(out.response))
                    }
                    // The request is the client's, unchanged: routing's results still hold.
                    Served::Forward { request, timeout } => {
                        Ok(Step::Forward(request, Some(timeout)))
                    }
                }
            }
            (Ok(()), _) if ctx.preflight => Err(GatewayError::new(
                StatusCode::NOT_FOUND,
                "OperationNotFound",
                MSG_OPERATION_NOT_FOUND,
            )),
            (Ok(()), _) => Ok(Step::Forward(req, None)),
        },
    };
    let result = match step {
        Ok(Step::Answered(resp)) => Ok(resp),
        Ok(Step::Forward(req, timeout)) => match backend_request(&shared, &ctx, req, tls) {
            Ok((out, edits)) => {
                let forwarded = Instant::now();
                let sent = shared.backend.forward_checked(
                    out,
                    &edits,
                    proxy::TlsCheck::Full,
                    ctx.affinity(),
                    timeout,
                );
                match sent.await {
                    Ok(resp) => {
                        let now = Instant::now();
                        backend_ms = Some((now - forwarded).as_secs_f64() * 1000.0);
                        answered = Some(now);
                        Ok(outbound(resp))
                    }
                    Err(e) => Err(forward_error(e, ctx.api.as_deref().expect("routed"))),
                }
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            error_reason = Some(e.reason);
            json_error(e.status, &e.message)
        }
    };
    let status = resp.status().as_u16();
    // One clock read for the backend's time and the total when the backend answered.
    let total_ms = (answered.unwrap_or_else(Instant::now) - started).as_secs_f64() * 1000.0;
    let key = StatKey {
        api: ctx.api.as_ref().map(|a| a.id.clone()),
        operation: ctx.operation().map(|o| o.id.clone()),
        product: ctx.product.as_ref().map(|p| p.id.clone()),
        subscription: ctx.subscription.as_ref().map(|s| s.id.clone()),
    };
    // The body's declared length (Content-Length, or a body built here).
    let bytes = hyper::body::Body::size_hint(resp.body())
        .exact()
        .unwrap_or(0);
    // One clock read per request, for the usage bucket and the traffic counters.
    let now_ms = shared.clock_ms();
    let bucket = bucket_of(now_ms / 1000);
    if let Some(logged) = logged {
        write_access_log(
            &shared,
            &ctx,
            &key,
            logged,
            remote,
            status,
            total_ms,
            backend_ms,
            error_reason,
        );
    }
    shared
        .stats
        .record(key, bucket, status, total_ms, backend_ms, bytes);
    shared.traffic.record(status, now_ms);
    close_if_draining(&shared, http1, &mut resp);
    Answer {
        response: resp,
        request_id: Some(ctx.request_id),
    }
}

/// While draining, HTTP/1.1 clients are told to close the connection after this response, so
/// their next request opens a new one and resolves the host name again (after a DNS cutover,
/// to the new instance). HTTP/2 has no such header: its connections get GOAWAY
/// when draining starts (`serve_h2`).
fn close_if_draining(shared: &Shared, http1: bool, resp: &mut Response<Body>) {
    if http1 && shared.traffic.draining() {
        resp.headers_mut().insert(
            header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
}

struct LoggedRequest {
    method: String,
    path: String,
    query: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn write_access_log(
    shared: &Shared,
    ctx: &RequestContext,
    key: &StatKey,
    logged: LoggedRequest,
    remote: SocketAddr,
    status: u16,
    total_ms: f64,
    backend_ms: Option<f64>,
    error_reason: Option<&str>,
) {
    {
        // The subscription key's query parameter never reaches the log.
        let url = match &logged.query {
            None => logged.path,
            Some(query) => {
                let key_query = ctx
                    .api
                    .as_ref()
                    .map(|a| a.key_query.as_str())
                    .unwrap_or("subscription-key");
                let q = without_param(query, key_query);
                if q.is_empty() {
                    logged.path
                } else {
                    format!("{}?{q}", logged.path)
                }
            }
        };
        shared.access_log.write(&AccessRecord {
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            request_id: ctx.request_id.as_str(),
            client_ip: remote.ip().to_string(),
            method: &logged.method,
            url,
            api: key.api.as_deref(),
            operation: key.operation.as_deref(),
            product: key.product.as_deref(),
            subscription_id: key.subscription.as_deref(),
            status,
            total_ms,
            backend_ms,
            error_reason,
            trace: ctx
                .traces
                .lock()
                .map(|t| {
                    t.iter()
                        .map(|(source, message)| crate::telemetry::TraceLine {
                            source: source.clone(),
                            message: message.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
}
