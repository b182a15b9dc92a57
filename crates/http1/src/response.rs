//! Response heads as backends send them.

use crate::fields::{RawHead, is_hop_by_hop_name};
use crate::framing::{ChunkState, Framing, LengthFault};
use crate::request::MAX_HEADERS;
use bytes::{Buf, BytesMut};
use http::{StatusCode, Version};
use std::ops::Range;

/// A backend's final response head, with what it says about its body and the connection.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    /// Its fields, hop-by-hop ones (and those `Connection` names) left out.
    pub headers: RawHead,
    pub body: ResponseFraming,
    /// Whether the connection can carry another exchange after this one's body.
    pub reusable: bool,
}

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResponseFraming {
    Done,
    Length(u64),
    Chunked(ChunkState),
    /// Until the backend closes the connection.
    UntilClose,
}

/// Parses the head at the front of `buf`: its length, status code, minor version, and the
/// headers as positions in `buf` (so that their values can share its bytes) — `None` while it
/// is incomplete.
#[allow(clippy::type_complexity)]
fn parse_head(
    buf: &[u8],
) -> Result<Option<(usize, u16, u8, Vec<(Range<usize>, Range<usize>)>)>, String> {
    // Uninitialised: zeroing 100 header slots per response would cost more than parsing it.
    let mut slots = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err("the backend's response has more than 100 headers".to_string());
        }
        Err(e) => {
            return Err(format!("the backend's response is not valid HTTP/1.1: {e}"));
        }
    };
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let headers = resp
        .headers
        .iter()
        .map(|h| (span(h.name.as_bytes()), span(h.value)))
        .collect();
    Ok(Some((
        len,
        resp.code.unwrap_or_default(),
        resp.version.unwrap_or_default(),
        headers,
    )))
}

/// Drops complete interim (1xx but 101) heads from the front of `buf`, and parses the final
/// head after them (left in `buf`) once it is complete.
#[allow(clippy::type_complexity)]
fn final_head(
    buf: &mut BytesMut,
) -> Result<Option<(usize, u16, u8, Vec<(Range<usize>, Range<usize>)>)>, String> {
    loop {
        match parse_head(buf)? {
            Some((len, code, ..)) if (100..200).contains(&code) && code != 101 => buf.advance(len),
            parsed => return Ok(parsed),
        }
    }
}

/// Drops complete interim heads from the front of `buf`; true when a complete final head is
/// there.
pub fn skip_interim(buf: &mut BytesMut) -> Result<bool, String> {
    Ok(final_head(buf)?.is_some())
}

/// Takes the final head from the front of `buf`, dropping interim heads before it; `None`
/// while it is incomplete.
pub fn take_response_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, String> {
    let Some((len, code, minor, spans)) = final_head(buf)? else {
        return Ok(None);
    };
    let head = buf.split_to(len).freeze();
    let status =
        StatusCode::from_u16(code).map_err(|_| format!("the backend answered status {code}"))?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Hop-by-hop headers (and those `Connection` names) stay out: they are about this
    // connection, not the client's.
    let mut framing = Framing::new(version);
    let mut fields = spans;
    // One pass: reads what frames the body, and keeps the end-to-end fields.
    fields.retain(|(name, value)| {
        let name = &head[name.clone()];
        framing.read(name, &head[value.clone()]);
        !is_hop_by_hop_name(name)
    });
    match framing.fault {
        Some(LengthFault::NotANumber) => {
            return Err("the backend's Content-Length is not a number".into());
        }
        Some(LengthFault::Differing) => {
            return Err("the backend sent differing Content-Length values".into());
        }
        None => {}
    }
    if !framing.named.is_empty() {
        fields.retain(|(name, _)| {
            let name = &head[name.clone()];
            !framing.named.iter().any(|t| t.eq_ignore_ascii_case(name))
        });
    }
    let (mut keep_alive, chunked, length) = (framing.keep_alive, framing.chunked, framing.length);
    let headers = RawHead::new(head, fields);
    let code = status.as_u16();
    let body = if head_request || code < 200 || code == 204 || code == 304 {
        if code == 101 {
            keep_alive = false;
        }
        ResponseFraming::Done
    } else {
        match (chunked, length) {
            (Some(true), Some(_)) => {
                keep_alive = false;
                ResponseFraming::Chunked(ChunkState::Size)
            }
            (Some(true), None) => ResponseFraming::Chunked(ChunkState::Size),
            (Some(false), _) | (None, None) => {
                keep_alive = false;
                ResponseFraming::UntilClose
            }
            (None, Some(0)) => ResponseFraming::Done,
            (None, Some(n)) => ResponseFraming::Length(n),
        }
    };
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        body,
        reusable: keep_alive,
    }))
}
