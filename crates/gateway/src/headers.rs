//! Header fields on the way between client and backend: the hop-by-hop ones (removed), the
//! ones the gateway adds (`X-Forwarded-*`, request ids), and `HeaderEdits`, what changes in a
//! client's headers on the way to the backend.

use crate::request::{RawHead, RequestHeaders, RequestId};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// APIM's correlation header.
pub(crate) static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers, including those named in `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names decides (the names are
    // pre-parsed, so no lookup hashes a string).
    let mut present = [false; HOP_BY_HOP.len()];
    let mut named = Vec::new();
    for (k, v) in headers.iter() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == k) {
            present[i] = true;
            if i == 0 {
                connection_tokens(v, &mut named);
            }
        }
    }
    for n in named {
        headers.remove(n);
    }
    for (h, present) in HOP_BY_HOP.into_iter().zip(present) {
        if present {
            headers.remove(h);
        }
    }
}

/// What the gateway changes in a client's headers on the way to the backend: hop-by-hop
/// headers (and those `Connection` names) and the subscription key header go, the client's
/// `Host` goes on as `X-Forwarded-Host`, `X-Forwarded-For` gets the client's address appended,
/// `X-Forwarded-Proto` is set, and the request id goes on as `x-request-id` and `Request-Id`.
///
/// Applied to the header map for pooled backends ([`HeaderEdits::apply`]); a client
/// connection's own backend connections apply it while writing the request head
/// ([`crate::h1`]), so that the map is neither searched nor changed per request. Both give the
/// same headers (tested in `h1`).
pub struct HeaderEdits {
    pub key_header: HeaderName,
    /// The client's address (see [`forwarded_for`]).
    pub client: HeaderValue,
    pub https: bool,
    pub request_id: Option<RequestId>,
    /// The client's headers, when the request does not carry them itself: a policy exchange
    /// keeps them shared (policies may read them after the forward), and copying the map per
    /// request would cost more than the rest of the edits.
    pub headers: Option<ClientHeaders>,
    /// Whether the response's fields may stay as read ([`Body::fields`]): for a caller that
    /// writes them to the client as they are, rather than reading them.
    pub raw_response: bool,
    /// What set-header policies changed, one entry per name (see [`PolicyEdit::collapse`]).
    pub policy: Vec<PolicyEdit>,
}

/// A header a policy set: the client's values dropped (`replace`) or kept, then `values` after.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyEdit {
    pub name: HeaderName,
    pub replace: bool,
    pub values: Vec<HeaderValue>,
}

/// Names the gateway itself writes or removes on the way: a policy edit naming one is sent
/// the slower way (a map built from the policies' pairs) so that both ways agree.
fn gateway_owned(name: &HeaderName, key_header: &HeaderName) -> bool {
    name == key_header
        || is_hop_by_hop(name)
        || [
            &hyper::header::HOST,
            &hyper::header::CONTENT_LENGTH,
            &hyper::header::EXPECT,
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &X_REQUEST_ID,
            &REQUEST_ID,
        ]
        .contains(&name)
}

impl PolicyEdit {
    /// A policy exchange's edits in order, as one entry per name; `None` when one cannot be
    /// applied on the way (a name the gateway owns, a name or value that is not valid).
    pub fn collapse(
        edits: &[gatehouse_policy::exec::HeaderEdit],
        key_header: &HeaderName,
    ) -> Option<Vec<PolicyEdit>> {
        let mut out: Vec<PolicyEdit> = Vec::with_capacity(edits.len());
        for e in edits {
            let name = HeaderName::from_bytes(e.name.as_bytes()).ok()?;
            if gateway_owned(&name, key_header) {
                return None;
            }
            let values = e
                .values
                .iter()
                .map(|v| HeaderValue::from_str(v).ok())
                .collect::<Option<Vec<_>>>()?;
            match out.iter_mut().find(|p| p.name == name) {
                Some(p) if e.replace => {
                    p.replace = true;
                    p.values = values;
                }
                Some(p) => p.values.extend(values),
                None => out.push(PolicyEdit {
                    name,
                    replace: e.replace,
                    values,
                }),
            }
        }
        Some(out)
    }

    /// Whether a client's field is replaced by a policy.
    pub(crate) fn replaces(edits: &[PolicyEdit], name: &[u8]) -> bool {
        edits
            .iter()
            .any(|p| p.replace && p.name.as_str().as_bytes().eq_ignore_ascii_case(name))
    }
}

/// A backend response's fields as read, as a policy exchange keeps them (its original
/// headers) until a policy reads or changes them.
#[derive(Clone)]
pub(crate) struct RawFields(pub RawHead);

/// Where the client's headers are, when not in the request's own map.
pub enum ClientHeaders {
    /// Shared with a policy exchange (policies may read them after the forward).
    Shared(std::sync::Arc<RequestHeaders>),
    /// As read from an HTTP/1.x client (see [`crate::request`]).
    Raw(RawHead),
}

impl HeaderEdits {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for p in &self.policy {
            if p.replace {
                headers.remove(&p.name);
            }
            for v in &p.values {
                headers.append(p.name.clone(), v.clone());
            }
        }
        strip_hop_by_hop(headers);
        headers.remove(&self.key_header);
        let host = headers.remove(hyper::header::HOST);
        add_forwarded(
            headers,
            &self.client,
            if self.https { "https" } else { "http" },
            host,
        );
        if let Some(id) = &self.request_id {
            let value = id.to_header_value();
            headers.insert(X_REQUEST_ID.clone(), value.clone());
            headers.insert(REQUEST_ID.clone(), value);
        }
    }
}

/// Whether `name` is a hop-by-hop header (those named in `Connection` aside).
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name)
}

pub(crate) use gatehouse_http1::is_hop_by_hop_name;

static HOP_BY_HOP: [&HeaderName; 9] = [
    &hyper::header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &hyper::header::PROXY_AUTHENTICATE,
    &hyper::header::PROXY_AUTHORIZATION,
    &hyper::header::TE,
    &hyper::header::TRAILER,
    &hyper::header::TRANSFER_ENCODING,
    &hyper::header::UPGRADE,
];

/// Adds the header names one `Connection` value lists to `named` (its usual tokens,
/// `keep-alive` and `close`, name none).
fn connection_tokens(value: &HeaderValue, named: &mut Vec<HeaderName>) {
    for token in value.as_bytes().split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.is_empty()
            || token.eq_ignore_ascii_case(b"keep-alive")
            || token.eq_ignore_ascii_case(b"close")
        {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token) {
            named.push(name);
        }
    }
}

/// The client's address as `X-Forwarded-For` carries it (made once per client connection).
pub(crate) fn forwarded_for(client_ip: std::net::IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client_ip.to_string()).expect("an IP address is a valid header value")
}

/// Appends the client address (see [`forwarded_for`]) to `X-Forwarded-For` and sets
/// `X-Forwarded-Proto`/`-Host`.
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &str,
    host: Option<HeaderValue>,
) {
    let chained = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|p| !p.is_empty())
        .map(|prev| format!("{prev}, {}", client_ip.to_str().unwrap_or_default()))
        .and_then(|v| HeaderValue::from_str(&v).ok());
    headers.insert(
        X_FORWARDED_FOR.clone(),
        chained.unwrap_or_else(|| client_ip.clone()),
    );
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if proto == "https" { "https" } else { "http" }),
    );
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST.clone(), h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_are_known_in_any_case() {
        for h in HOP_BY_HOP {
            let name = h.as_str();
            assert!(is_hop_by_hop_name(name.as_bytes()), "{name}");
            assert!(
                is_hop_by_hop_name(name.to_ascii_uppercase().as_bytes()),
                "{name}"
            );
        }
        for other in [
            "host",
            "tE2",
            "trailers",
            "connections",
            "x-upgrade",
            "",
            "keep-alivE-",
        ] {
            assert!(!is_hop_by_hop_name(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Session"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-session", "abc"),
            ("x-other", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/plain"),
            ("x-kept", "yes"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-kept"]);
        // Nothing to remove: the map is left as it was.
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn forwarded_headers_append_to_a_previous_proxy_chain() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        add_forwarded(
            &mut h,
            &forwarded_for("192.0.2.7".parse().unwrap()),
            "https",
            Some(HeaderValue::from_static("api.contoso.com")),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 192.0.2.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "api.contoso.com");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, &forwarded_for("::1".parse().unwrap()), "http", None);
        assert_eq!(h[&X_FORWARDED_FOR], "::1");
        assert!(!h.contains_key(&X_FORWARDED_HOST));
    }
}
