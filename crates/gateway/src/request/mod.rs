//! The client's request as the pipeline receives it.
//!
//! An HTTP/1.x request's header fields stay where they were read — positions in the bytes of
//! its head ([`RawHead`]) — until something needs a [`HeaderMap`]: the policy engine, or a
//! backend reached through the shared pool. Proxied without policies over the client
//! connection's own backend connection, they are looked up in place and written to the
//! backend from there. Why: building a `HeaderMap` (each name parsed and hashed, each value
//! checked, the map allocated and dropped) cost about 3,000 instructions per request.
//!
//! Invariants: a [`RawHead`]'s fields are exactly those httparse read, in order, with names
//! and values as sent (names in the client's case; compare them with [`name_is`]); its values
//! are valid header values (httparse accepts no byte that `HeaderValue` refuses), so turning
//! it into a map loses nothing.

mod body;

pub(crate) use body::RequestBody;
pub(crate) use body::{BodyFraming, ClientBody, Expect, READ_SIZE, ReadHalf, Reader, lock};
pub(crate) use gatehouse_http1::{RawHead, name_is};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Uri, Version};

/// A request's id: the client's `x-request-id` when it sent a usable one (kept as sent), else
/// one the gateway made, a UUID kept as its 36 characters — no allocation per request, and no
/// header value made until a header map needs one (the HTTP/1.x writers write the bytes).
///
/// Invariant: its bytes are valid UTF-8 and a valid header value.
#[derive(Clone, Debug)]
pub enum RequestId {
    Made([u8; 36]),
    Client(HeaderValue),
}

impl RequestId {
    /// The client's id from `headers`, when usable: not empty, at most 128 bytes, text.
    pub fn from_client(headers: &RequestHeaders) -> Option<RequestId> {
        headers
            .value("x-request-id")
            .filter(|v| {
                !v.is_empty() && v.len() <= 128 && std::str::from_utf8(v.as_bytes()).is_ok()
            })
            .map(RequestId::Client)
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Made(text) => text,
            RequestId::Client(value) => value.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    pub fn to_header_value(&self) -> HeaderValue {
        match self {
            RequestId::Made(text) => {
                HeaderValue::from_bytes(text).unwrap_or_else(|_| HeaderValue::from_static(""))
            }
            RequestId::Client(value) => value.clone(),
        }
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request's header fields: in a map (HTTP/2, or made for the policy engine), or as read.
#[derive(Clone, Debug)]
pub enum RequestHeaders {
    Map(HeaderMap),
    Raw(RawHead),
}

impl RequestHeaders {
    /// The first value of `lower` (a lowercase name).
    pub fn get(&self, lower: &str) -> Option<&[u8]> {
        match self {
            RequestHeaders::Map(m) => m.get(lower).map(HeaderValue::as_bytes),
            RequestHeaders::Raw(r) => r.get(lower),
        }
    }

    /// The first value of `lower` as text, if it is.
    pub fn get_str(&self, lower: &str) -> Option<&str> {
        self.get(lower).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of `lower` as a header value.
    pub fn value(&self, lower: &str) -> Option<HeaderValue> {
        match self {
            RequestHeaders::Map(m) => m.get(lower).cloned(),
            RequestHeaders::Raw(r) => r.value(lower),
        }
    }

    /// A copy in a map.
    pub fn to_map(&self) -> HeaderMap {
        match self {
            RequestHeaders::Map(m) => m.clone(),
            RequestHeaders::Raw(r) => r.to_map(),
        }
    }
}

/// A client's request: its head and its body.
pub(crate) struct ClientRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: RequestHeaders,
    pub body: RequestBody,
}

impl ClientRequest {
    /// Reads the whole body (at most `limit` bytes) and keeps it in the request, so that it
    /// still goes to the backend unchanged; `None` when it is larger or cannot be read (the
    /// request then has no body left to send).
    pub(crate) async fn buffer_body(&mut self, limit: usize) -> Option<bytes::Bytes> {
        use http_body_util::BodyExt;
        let body = std::mem::replace(&mut self.body, RequestBody::Empty);
        let bytes = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .ok()?
            .to_bytes();
        self.body = RequestBody::Full(Some(bytes.clone()));
        Some(bytes)
    }

    pub(crate) fn from_http(req: Request<RequestBody>) -> ClientRequest {
        let (parts, body) = req.into_parts();
        ClientRequest {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: RequestHeaders::Map(parts.headers),
            body,
        }
    }
}
