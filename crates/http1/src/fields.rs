//! Header fields where they were read: positions in the bytes of a head.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::ops::Range;

/// Whether header name `name` (as sent) is `lower` (lowercase).
#[inline]
pub fn name_is(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower)
}

/// A head's header fields, where they were read.
#[derive(Clone, Debug)]
pub struct RawHead {
    bytes: Bytes,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl RawHead {
    /// `fields`: name and value positions in `bytes`.
    pub fn new(bytes: Bytes, fields: Vec<(Range<usize>, Range<usize>)>) -> RawHead {
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

/// Whether header name `name` (in any case) is a hop-by-hop header.
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    // By length first: most names are ruled out without comparing a byte.
    match name.len() {
        2 => name_is(name, b"te"),
        7 => name_is(name, b"trailer") || name_is(name, b"upgrade"),
        10 => name_is(name, b"connection") || name_is(name, b"keep-alive"),
        16 => name_is(name, b"proxy-connection"),
        17 => name_is(name, b"transfer-encoding"),
        18 => name_is(name, b"proxy-authenticate"),
        19 => name_is(name, b"proxy-authorization"),
        _ => false,
    }
}
