//! Between the gateway's request and response types and the policy engine's exchange: header
//! lists, responses built from an exchange, the backend request prepared from one.

use crate::body::Body;
use crate::context::{GatewayError, RequestContext};
use crate::headers::PolicyEdit;
use crate::proxy;
use crate::request::RequestHeaders;
use crate::shared::Shared;
use bytes::Bytes;
use gatehouse_policy::exec::{self, Exchange, Forward, ResponseParts};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// How the policies read the header maps handed to them ([`exec::Headers::with_original`]).
pub(super) const READ_HEADERS: exec::ReadHeaders = exec::ReadHeaders {
    list: listed,
    find: found,
};

/// The values of one header in a header map handed to the policies.
fn found(original: &exec::OriginalHeaders, name: &str, f: &mut dyn FnMut(&str)) {
    let in_map = |map: &hyper::HeaderMap, f: &mut dyn FnMut(&str)| {
        map.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .for_each(f)
    };
    let in_raw = |raw: &crate::request::RawHead, f: &mut dyn FnMut(&str)| {
        raw.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .for_each(f)
    };
    if let Some(map) = original.downcast_ref::<hyper::HeaderMap>() {
        return in_map(map, f);
    }
    if let Some(crate::headers::RawFields(raw)) =
        original.downcast_ref::<crate::headers::RawFields>()
    {
        return in_raw(raw, f);
    }
    match original.downcast_ref::<RequestHeaders>() {
        Some(RequestHeaders::Map(map)) => in_map(map, f),
        Some(RequestHeaders::Raw(raw)) => in_raw(raw, f),
        None => {}
    }
}

/// A header map handed to the policies, listed as pairs.
pub(super) fn listed(original: &exec::OriginalHeaders) -> Vec<(String, String)> {
    if let Some(map) = original.downcast_ref::<hyper::HeaderMap>() {
        return pairs_of(map);
    }
    if let Some(crate::headers::RawFields(raw)) =
        original.downcast_ref::<crate::headers::RawFields>()
    {
        return raw_pairs(raw);
    }
    match original.downcast_ref::<RequestHeaders>() {
        Some(RequestHeaders::Map(map)) => pairs_of(map),
        Some(RequestHeaders::Raw(raw)) => raw_pairs(raw),
        None => Vec::new(),
    }
}

/// Fields as read, listed with their names lowercase (as a map has them).
pub(super) fn raw_pairs(raw: &crate::request::RawHead) -> Vec<(String, String)> {
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

pub(super) fn pairs_of(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
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
pub(super) fn original_or_built(headers: &exec::Headers) -> hyper::HeaderMap {
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
pub(super) fn into_map(
    headers: exec::Headers,
    raw_allowed: bool,
) -> (hyper::HeaderMap, Option<crate::headers::RawFields>) {
    if let Some(raw) = headers
        .original()
        .and_then(|o| o.downcast_ref::<crate::headers::RawFields>())
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

pub(super) fn header_map(pairs: &[(String, String)]) -> hyper::HeaderMap {
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

pub(super) fn error_parts(
    status: u16,
    message: &str,
    headers: &[(String, String)],
) -> ResponseParts {
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

pub(super) fn build_response(
    ex: &Exchange,
    parts: ResponseParts,
    stream: Option<Body>,
) -> Response<Body> {
    let has_body = parts.body.is_some();
    let body = match (parts.body, stream) {
        (Some(b), _) => crate::body::full(b),
        (None, Some(s)) => s,
        (None, None) => crate::body::empty(),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(parts.status).unwrap_or(StatusCode::OK);
    // Fields as read carry the backend's Content-Length, which a body set here replaces.
    let (mut headers, raw) = into_map(parts.headers, !has_body);
    crate::headers::strip_hop_by_hop(&mut headers);
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
    if let Some(crate::headers::RawFields(raw)) = raw {
        resp.body_mut().set_fields(Some(raw));
    }
    resp
}

/// The method's name, without an allocation for the standard ones.
pub(super) fn static_method(method: &hyper::Method) -> std::borrow::Cow<'static, str> {
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

/// How an exchange's backend request is sent.
pub(super) struct Prepared {
    pub(super) edits: crate::headers::HeaderEdits,
    pub(super) check: proxy::TlsCheck,
    pub(super) timeout: Duration,
}

impl Prepared {
    /// Sends it. (Not an async fn: the request would be kept twice in the future.)
    pub(super) fn send<'a>(
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
            .map(move |r| r.map_err(|e| crate::context::forward_error(e, api)))
    }
}

/// The backend request of an exchange: its URL (the backend service, the rewritten path, the
/// query), method, headers and body.
#[allow(clippy::too_many_arguments)]
pub(super) fn prepare_exchange(
    shared: &Shared,
    ctx: &RequestContext,
    ex: &Exchange,
    forward: Forward,
    body: Option<crate::request::RequestBody>,
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
    let mut edits = crate::context::backend_headers(api, ctx, tls);
    edits.raw_response = true;
    let mut headers = hyper::HeaderMap::new();
    let out_body: Body = match (&ex.request_body, body) {
        (Some(b), _) => {
            headers = original_or_built(&ex.request_headers);
            headers.remove(header::CONTENT_LENGTH);
            headers.remove(header::TRANSFER_ENCODING);
            crate::body::full(Bytes::from(b.clone()))
        }
        (None, body) => {
            // The client's headers go on shared, not copied, with what set-header changed
            // applied as they are written.
            let shared_with =
                |(original, changes): (&exec::OriginalHeaders, &[exec::HeaderEdit])| {
                    let original = original.clone().downcast::<RequestHeaders>().ok()?;
                    let policy = PolicyEdit::collapse(changes, &api.key_header)?;
                    Some((original, policy))
                };
            match ex
                .request_headers
                .original_with_edits()
                .and_then(shared_with)
            {
                Some((original, policy)) => {
                    edits.headers = Some(crate::headers::ClientHeaders::Shared(original));
                    edits.policy = policy;
                }
                None => headers = header_map(&ex.request_headers),
            }
            match body {
                Some(b) => Body::new(http_body_util::Limited::new(
                    b,
                    shared.config.max_body_bytes as usize,
                )),
                None => crate::body::empty(),
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
