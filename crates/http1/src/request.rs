//! Request heads as clients send them.

use crate::fields::{RawHead, name_is};
use crate::framing::{ChunkState, Framing, LengthFault};
use bytes::BytesMut;
use http::{Method, StatusCode, Uri, Version};

/// Most header fields in a head.
pub(crate) const MAX_HEADERS: usize = 100;

/// A request head refused: the status and message of the answer (the connection then ends).
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: &'static str,
}

fn refuse(status: StatusCode, message: &'static str) -> Refusal {
    Refusal { status, message }
}

/// A parsed request head, with what it says about its body and the connection.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: RawHead,
    pub body: RequestFraming,
    /// Whether the client lets the connection carry another request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body.
    pub expect_continue: bool,
}

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RequestFraming {
    Done,
    Length(u64),
    Chunked(ChunkState),
}

/// Parses the request head at the front of `buf`, taking it out when complete (`None` while
/// it is incomplete). A head over `max_head` bytes or 100 fields is refused with 431.
pub fn take_request_head(
    buf: &mut BytesMut,
    max_head: usize,
) -> Result<Option<RequestHead>, Refusal> {
    // Uninitialised: zeroing 100 header slots per request would cost more than parsing it.
    let mut slots = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) if len > max_head => {
            return Err(refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "The request headers are larger than the gateway's limit.",
            ));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => {
            return Err(refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "The request headers are larger than the gateway's limit.",
            ));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "The request has more than 100 header fields.",
            ));
        }
        Err(_) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "The request is not valid HTTP/1.1.",
            ));
        }
    };
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "The request method is not valid."))?;
    let target = span(parsed.path.unwrap_or_default().as_bytes());
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        fields.push((span(h.name.as_bytes()), span(h.value)));
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target))
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "The request target is not valid."))?;
    let mut framing = Framing::new(version);
    let mut expect_continue = false;
    for (name, value) in &fields {
        let (name, value) = (&head[name.clone()], &head[value.clone()]);
        framing.read(name, value);
        if name_is(name, b"expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") {
                return Err(refuse(
                    StatusCode::EXPECTATION_FAILED,
                    "The request's expectation cannot be met.",
                ));
            }
            expect_continue = version == Version::HTTP_11;
        }
    }
    match framing.fault {
        Some(LengthFault::NotANumber) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "The request's Content-Length is not a number.",
            ));
        }
        Some(LengthFault::Differing) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "The request has differing Content-Length values.",
            ));
        }
        None => {}
    }
    let (keep_alive, chunked, length) = (framing.keep_alive, framing.chunked, framing.length);
    let body = match (chunked, length) {
        (Some(_), _) if version == Version::HTTP_10 => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Transfer-Encoding is not allowed in an HTTP/1.0 request.",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "The request has both Transfer-Encoding and Content-Length.",
            ));
        }
        (Some(false), None) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "The request's Transfer-Encoding does not end in chunked.",
            ));
        }
        (Some(true), None) => RequestFraming::Chunked(ChunkState::Size),
        (None, None | Some(0)) => RequestFraming::Done,
        (None, Some(n)) => RequestFraming::Length(n),
    };
    Ok(Some(RequestHead {
        method,
        uri,
        version,
        headers: RawHead::new(head, fields),
        expect_continue: expect_continue && body != RequestFraming::Done,
        body,
        keep_alive,
    }))
}
