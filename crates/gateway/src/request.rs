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

use crate::h1_server::RequestBody;
use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri, Version};
use std::ops::Range;

/// Whether header name `name` (as sent) is `lower` (lowercase).
#[inline]
pub fn name_is(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower)
}

/// A request head's header fields, where they were read.
#[derive(Clone, Debug)]
pub struct RawHead {
    bytes: Bytes,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl RawHead {
    /// `fields`: name and value positions in `bytes`.
    pub(crate) fn new(bytes: Bytes, fields: Vec<(Range<usize>, Range<usize>)>) -> RawHead {
        RawHead { bytes, fields }
    }

    /// Name and value of each field, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.fields
            .iter()
            .map(|(n, v)| (&self.bytes[n.clone()], &self.bytes[v.clone()]))
    }

    /// Name, value, and the field's line as read (name to value, without its CRLF: written
    /// as it is, it is one copy instead of four), in order.
    pub fn lines(&self) -> impl Iterator<Item = (&[u8], &[u8], &[u8])> {
        self.fields.iter().map(|(n, v)| {
            (
                &self.bytes[n.clone()],
                &self.bytes[v.clone()],
                &self.bytes[n.start..v.end.max(n.end)],
            )
        })
    }

    /// The first value of `lower` (a lowercase name).
    pub fn get(&self, lower: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| name_is(n, lower.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value of `lower` as a header value sharing the head's bytes.
    pub fn value(&self, lower: &str) -> Option<HeaderValue> {
        let (_, v) = self
            .fields
            .iter()
            .find(|(n, _)| name_is(&self.bytes[n.clone()], lower.as_bytes()))?;
        HeaderValue::from_maybe_shared(self.bytes.slice(v.clone())).ok()
    }

    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.fields.len());
        for (n, v) in &self.fields {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&self.bytes[n.clone()]),
                HeaderValue::from_maybe_shared(self.bytes.slice(v.clone())),
            ) {
                map.append(name, value);
            }
        }
        map
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
pub struct ClientRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: RequestHeaders,
    pub body: RequestBody,
}

impl ClientRequest {
    pub fn from_http(req: Request<RequestBody>) -> ClientRequest {
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
