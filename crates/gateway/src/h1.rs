//! HTTP/1.1 to plain-HTTP backends over a client connection's own backend connections (see
//! [`crate::proxy::Affinity`]).
//!
//! Why hand-written: hyper's client drives each connection from a task of its own that a
//! request reaches through channels, so every proxied request paid for a second dispatcher and
//! two task wake-ups — under callgrind, 17,000 of the gateway's 43,400 instructions per
//! request. Here the task serving the client writes the request and reads the response itself.
//! Parsing is httparse's, as in hyper; what is ours is framing and connection reuse.
//!
//! Invariants:
//! - A connection goes back to its client connection's idle list only after a complete
//!   exchange: the request sent in full, the response body read to its framed end with no byte
//!   beyond it, and neither side asking to close. Anything else drops (closes) it.
//! - Response framing is RFC 9112 §6.3's: no body after HEAD or with 1xx/204/304; a
//!   Transfer-Encoding ending in chunked wins over Content-Length (and the connection is not
//!   reused); a Transfer-Encoding not ending in chunked, or no framing at all, runs until the
//!   backend closes; differing or malformed Content-Length values are an error. Interim 1xx
//!   responses are skipped (101 is final: the gateway does not tunnel upgrades).
//! - Limits: a response head of at most 64 KiB and 100 header fields, chunk-size lines of at
//!   most 4 KiB, trailers of at most 64 KiB (dropped: the gateway passes no trailers on).
//! - The framing written is the body's own — Content-Length for an exact size, otherwise
//!   chunked — never the client's `Content-Length`/`Transfer-Encoding`; `Expect` is not passed
//!   on either (the gateway answered the client's 100-continue when it began reading the body).
//! - A backend that answers before the request body is sent in full (a 413, say) stops the
//!   upload: its answer is what the client gets, and the connection is not reused.

use crate::proxy::{Body, BoxError, ClientHeaders, HeaderEdits, is_hop_by_hop_name};
use crate::request::{RawHead, RequestHeaders, name_is};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode, Version};
use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 64 * 1024;
const READ_SIZE: usize = 8 * 1024;
/// Body frames up to this size are copied next to their chunk framing and written with it.
const COALESCE: usize = 16 * 1024;
/// The write buffer capacity a connection keeps between requests.
const WRITE_KEEP: usize = 4 * 1024;

/// One plain-TCP connection to a backend.
pub struct Connection {
    stream: TcpStream,
    read: BytesMut,
    write: Vec<u8>,
    /// The `Host` header the backend gets (made once, when connecting).
    host: HeaderValue,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum SendError {
    /// The connection ended before any byte of a response came: a kept connection the backend
    /// closed while it was idle. A request without a body can be sent again on a new one.
    NoResponse(String),
    Failed(String),
}

/// The idle connections of one client connection, one per backend authority, most recently
/// used last.
#[derive(Default)]
pub struct Idle {
    connections: Mutex<Vec<(String, Connection)>>,
}

/// How many backends a client connection keeps connections to.
const IDLE_BACKENDS: usize = 4;

impl Idle {
    /// The connection kept for `authority`, if it is still usable, with the key it was kept
    /// under (handed back with the connection, so a kept connection costs no allocation).
    pub fn take(&self, authority: &str) -> (String, Option<Connection>) {
        let mut kept = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        match kept.iter().position(|(a, _)| a == authority) {
            Some(i) => {
                let (key, conn) = kept.remove(i);
                (key, conn.is_usable().then_some(conn))
            }
            None => (authority.to_string(), None),
        }
    }

    fn put(&self, key: String, conn: Connection) {
        let mut kept = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= IDLE_BACKENDS {
            kept.remove(0);
        }
        kept.push((key, conn));
    }
}

/// Where a connection goes when its exchange is complete.
pub type ReturnTo = (Arc<Idle>, String);

/// How the request body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Debug)]
enum RequestFraming {
    None,
    Length(u64),
    Chunked,
}

/// A response head as read, with what it says about the body and the connection.
#[derive(Debug)]
pub struct Head {
    status: StatusCode,
    version: Version,
    /// Its fields, hop-by-hop ones left out.
    headers: RawHead,
    body: BodyKind,
    reusable: bool,
}

#[derive(Debug, PartialEq)]
enum BodyKind {
    Done,
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
}

impl Connection {
    pub fn new(stream: TcpStream, host: HeaderValue) -> Connection {
        Connection {
            stream,
            read: BytesMut::with_capacity(READ_SIZE),
            write: Vec::with_capacity(1024),
            host,
        }
    }

    /// Whether a kept connection can take a request: the backend has neither closed it nor
    /// sent anything unasked. (When the socket is not marked readable this costs no syscall.)
    fn is_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends the request — its headers as `edits` change them, the path and query of its URI,
    /// the connection's `Host` — and reads the response head; the body is then read through
    /// [`Connection::into_response`].
    pub async fn request(
        &mut self,
        parts: &hyper::http::request::Parts,
        edits: &HeaderEdits,
        mut body: Body,
    ) -> Result<Head, SendError> {
        let framing = if body.is_end_stream() {
            if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
                RequestFraming::Length(0)
            } else {
                RequestFraming::None
            }
        } else {
            match body.size_hint().exact() {
                Some(n) => RequestFraming::Length(n),
                None => RequestFraming::Chunked,
            }
        };
        encode_head(&mut self.write, parts, edits, &self.host, framing);
        self.read.clear();
        let head_request = parts.method == Method::HEAD;
        let mut sent_all = self.send_buffered().await?;
        if sent_all && framing != RequestFraming::None {
            // Boxed: most requests have no body, and this keeps their future small.
            sent_all = Box::pin(self.send_body(&mut body, framing)).await?;
        }
        // A kept connection keeps a head-sized write buffer, not the largest body frame's.
        self.write.shrink_to(WRITE_KEEP);
        let mut head = self.read_head(head_request).await?;
        head.reusable &= sent_all;
        Ok(head)
    }

    /// Writes the body's frames with `framing`. False when the backend answered before all of
    /// it was sent.
    async fn send_body(
        &mut self,
        body: &mut Body,
        framing: RequestFraming,
    ) -> Result<bool, SendError> {
        let mut sent: u64 = 0;
        loop {
            // Waits for the next frame, watching for an early answer meanwhile (a slow client
            // upload must not keep a backend's 413 from the client).
            let next = tokio::select! {
                biased;
                frame = body.frame() => Some(frame),
                ready = self.stream.readable() => {
                    ready.map_err(|e| failed("waiting for the backend", &e))?;
                    None
                }
            };
            let frame = match next {
                None if self.answered_early()? => return Ok(false),
                None => continue,
                Some(None) => break,
                Some(Some(Err(e))) => {
                    return Err(SendError::Failed(format!(
                        "reading the request body failed: {e}"
                    )));
                }
                Some(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers are not passed on
            };
            if data.is_empty() {
                continue;
            }
            sent += data.len() as u64;
            if let RequestFraming::Length(declared) = framing
                && sent > declared
            {
                return Err(SendError::Failed(format!(
                    "the request body is longer than its declared {declared} bytes"
                )));
            }
            self.write.clear();
            if framing == RequestFraming::Chunked {
                self.write
                    .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            }
            let sent_all = if data.len() <= COALESCE {
                self.write.extend_from_slice(&data);
                if framing == RequestFraming::Chunked {
                    self.write.extend_from_slice(b"\r\n");
                }
                self.send_buffered().await?
            } else {
                self.send_buffered().await?
                    && self.send_all(&data).await?
                    && (framing != RequestFraming::Chunked || self.send_all(b"\r\n").await?)
            };
            if !sent_all {
                return Ok(false);
            }
        }
        match framing {
            RequestFraming::Chunked => self.send_all(b"0\r\n\r\n").await,
            RequestFraming::Length(declared) if sent != declared => Err(SendError::Failed(
                format!("the request body ended after {sent} of its declared {declared} bytes"),
            )),
            _ => Ok(true),
        }
    }

    /// Writes `self.write` out; false when the backend answered before it was all written.
    async fn send_buffered(&mut self) -> Result<bool, SendError> {
        let data = std::mem::take(&mut self.write);
        let result = self.send_all(&data).await;
        self.write = data;
        result
    }

    /// Writes `data` out; false when the backend answered before it was all written.
    async fn send_all(&mut self, data: &[u8]) -> Result<bool, SendError> {
        let mut written = 0;
        while written < data.len() {
            match self.stream.try_write(&data[written..]) {
                Ok(n) => {
                    written += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(no_response("writing the request", &e)),
            }
            let readable = tokio::select! {
                ready = self.stream.writable() => ready.map(|()| false),
                ready = self.stream.readable() => ready.map(|()| true),
            }
            .map_err(|e| failed("waiting for the backend", &e))?;
            if readable && self.answered_early()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads what the backend sent while the request was being written: true when it holds a
    /// final response head (interim 1xx heads are skipped).
    fn answered_early(&mut self) -> Result<bool, SendError> {
        self.read.reserve(READ_SIZE);
        match self.stream.try_read_buf(&mut self.read) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(failed("reading the response", &e)),
            Ok(0) => Err(SendError::Failed(
                "the backend closed the connection while the request was being sent".into(),
            )),
            Ok(_) => Ok(skip_interim(&mut self.read)?),
        }
    }

    /// Reads until a final response head is complete.
    async fn read_head(&mut self, head_request: bool) -> Result<Head, SendError> {
        let mut received = !self.read.is_empty();
        loop {
            if !self.read.is_empty()
                && let Some(head) = take_final_head(&mut self.read, head_request)?
            {
                return Ok(head);
            }
            if self.read.len() >= MAX_HEAD {
                return Err(SendError::Failed(
                    "the backend's response head is larger than 64 KiB".into(),
                ));
            }
            self.read.reserve(READ_SIZE);
            match self.stream.read_buf(&mut self.read).await {
                Ok(0) if !received => {
                    return Err(SendError::NoResponse(
                        "the backend closed the connection without answering".into(),
                    ));
                }
                Ok(0) => {
                    return Err(SendError::Failed(
                        "the backend closed the connection within the response head".into(),
                    ));
                }
                Ok(_) => received = true,
                Err(e) if !received => return Err(no_response("reading the response", &e)),
                Err(e) => return Err(failed("reading the response", &e)),
            }
        }
    }

    /// The response, its body streaming from this connection, which goes to `back` when the
    /// exchange is complete. A body the backend stops sending for `idle` ends in an error (the
    /// client's connection is then closed rather than left waiting).
    /// With `raw`, the head's fields stay as read, in the body ([`Body::fields`], for a caller
    /// that writes them out as they are); otherwise they are in the response's map.
    pub fn into_response(
        self,
        head: Head,
        back: ReturnTo,
        idle: Duration,
        raw: bool,
    ) -> Response<Body> {
        let mut resp = Response::new(());
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        let fields = if raw {
            Some(head.headers)
        } else {
            *resp.headers_mut() = head.headers.to_map();
            None
        };
        let mut body = ResponseBody {
            conn: Some(self),
            kind: head.body,
            reusable: head.reusable,
            back: Some(back),
            idle,
            idle_timer: None,
        };
        if body.kind == BodyKind::Done {
            body.finish();
        }
        let mut body = Body::new(body);
        body.set_fields(fields);
        resp.map(|()| body)
    }
}

fn failed(doing: &str, e: &io::Error) -> SendError {
    SendError::Failed(format!("{doing}: {e}"))
}

fn no_response(doing: &str, e: &io::Error) -> SendError {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionAborted => SendError::NoResponse(format!("{doing}: {e}")),
        _ => failed(doing, e),
    }
}

fn encode_head(
    out: &mut Vec<u8>,
    parts: &hyper::http::request::Parts,
    edits: &HeaderEdits,
    host: &HeaderValue,
    framing: RequestFraming,
) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    line(out, b"host", host.as_bytes());
    match &edits.headers {
        Some(ClientHeaders::Raw(raw)) => client_fields(out, || raw.lines(), edits),
        Some(ClientHeaders::Shared(shared)) => match &**shared {
            RequestHeaders::Map(map) => client_fields(out, || map_fields(map), edits),
            RequestHeaders::Raw(raw) => client_fields(out, || raw.lines(), edits),
        },
        None => client_fields(out, || map_fields(&parts.headers), edits),
    }
    if let Some(id) = &edits.request_id {
        line(out, b"x-request-id", id.as_bytes());
        line(out, b"request-id", id.as_bytes());
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => line(
            out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        ),
        RequestFraming::Chunked => line(out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes one header field.
pub(crate) fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A map's fields as [`RawHead::lines`] gives them, without the line as read.
fn map_fields(map: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8], &[u8])> {
    map.iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes(), &[][..]))
}

/// Writes the client's header fields as `edits` changes them (names compared without case:
/// raw fields keep the client's).
fn client_fields<'h, I: Iterator<Item = (&'h [u8], &'h [u8], &'h [u8])>>(
    out: &mut Vec<u8>,
    fields: impl Fn() -> I,
    edits: &HeaderEdits,
) {
    // The fields `Connection` names are hop-by-hop too.
    let mut named: Vec<&[u8]> = Vec::new();
    for (name, value, _) in fields() {
        if name_is(name, b"connection") {
            named.extend(
                value
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|t| !t.is_empty()),
            );
        }
    }
    let key_header = edits.key_header.as_str().as_bytes();
    let mut client_host = None;
    let mut forwarded_for: Option<Vec<u8>> = None;
    let mut forwarded_host: Vec<&[u8]> = Vec::new();
    for (name, value, as_read) in fields() {
        if name_is(name, b"host") {
            client_host.get_or_insert(value);
        } else if name_is(name, b"x-forwarded-for") {
            if !value.is_empty() {
                let chain = forwarded_for.get_or_insert_with(Vec::new);
                if !chain.is_empty() {
                    chain.extend_from_slice(b", ");
                }
                chain.extend_from_slice(value);
            }
        } else if name_is(name, b"x-forwarded-host") {
            forwarded_host.push(value);
        } else if name_is(name, b"content-length")
            || name_is(name, b"expect")
            || name_is(name, b"x-forwarded-proto")
            || name_is(name, key_header)
            || is_hop_by_hop_name(name)
            || (edits.request_id.is_some()
                && (name_is(name, b"x-request-id") || name_is(name, b"request-id")))
            || named.iter().any(|n| n.eq_ignore_ascii_case(name))
        {
        } else if !as_read.is_empty() {
            out.extend_from_slice(as_read);
            out.extend_from_slice(b"\r\n");
        } else {
            line(out, name, value);
        }
    }
    match forwarded_for {
        Some(mut chain) => {
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(edits.client.as_bytes());
            line(out, b"x-forwarded-for", &chain);
        }
        None => line(out, b"x-forwarded-for", edits.client.as_bytes()),
    }
    out.extend_from_slice(if edits.https {
        b"x-forwarded-proto: https\r\n"
    } else {
        b"x-forwarded-proto: http\r\n"
    });
    match client_host {
        Some(h) => line(out, b"x-forwarded-host", h),
        None => {
            for h in forwarded_host {
                line(out, b"x-forwarded-host", h);
            }
        }
    }
}

/// Parses the head at the front of `buf`: its length, status code, minor version, and the
/// headers as positions in `buf` (so that their values can share its bytes) — `None` while it
/// is incomplete.
#[allow(clippy::type_complexity)]
fn parse_head(
    buf: &[u8],
) -> Result<Option<(usize, u16, u8, Vec<(Range<usize>, Range<usize>)>)>, SendError> {
    // Uninitialised: zeroing 100 header slots per response would cost more than parsing it.
    let mut slots = [std::mem::MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(SendError::Failed(
                "the backend's response has more than 100 headers".into(),
            ));
        }
        Err(e) => {
            return Err(SendError::Failed(format!(
                "the backend's response is not valid HTTP/1.1: {e}"
            )));
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
) -> Result<Option<(usize, u16, u8, Vec<(Range<usize>, Range<usize>)>)>, SendError> {
    loop {
        match parse_head(buf)? {
            Some((len, code, ..)) if (100..200).contains(&code) && code != 101 => buf.advance(len),
            parsed => return Ok(parsed),
        }
    }
}

/// Drops complete interim heads from the front of `buf`; true when a complete final head is
/// there.
fn skip_interim(buf: &mut BytesMut) -> Result<bool, SendError> {
    Ok(final_head(buf)?.is_some())
}

/// Takes the final head from the front of `buf`, dropping interim heads before it; `None`
/// while it is incomplete.
fn take_final_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, SendError> {
    let Some((len, code, minor, spans)) = final_head(buf)? else {
        return Ok(None);
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code)
        .map_err(|_| SendError::Failed(format!("the backend answered status {code}")))?;
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
            return Err(SendError::Failed(
                "the backend's Content-Length is not a number".into(),
            ));
        }
        Some(LengthFault::Differing) => {
            return Err(SendError::Failed(
                "the backend sent differing Content-Length values".into(),
            ));
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
        BodyKind::Done
    } else {
        match (chunked, length) {
            (Some(true), Some(_)) => {
                keep_alive = false;
                BodyKind::Chunked(ChunkState::Size)
            }
            (Some(true), None) => BodyKind::Chunked(ChunkState::Size),
            (Some(false), _) | (None, None) => {
                keep_alive = false;
                BodyKind::UntilClose
            }
            (None, Some(0)) => BodyKind::Done,
            (None, Some(n)) => BodyKind::Length(n),
        }
    };
    Ok(Some(Head {
        status,
        version,
        headers,
        body,
        reusable: keep_alive,
    }))
}

/// A Content-Length that cannot frame a body.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum LengthFault {
    NotANumber,
    Differing,
}

/// What a message head's fields say about its framing and its connection (RFC 9112 §6.3, §9.3),
/// read field by field.
pub(crate) struct Framing<'h> {
    version: Version,
    pub(crate) keep_alive: bool,
    /// Whether the last coding of the last Transfer-Encoding is chunked.
    pub(crate) chunked: Option<bool>,
    pub(crate) length: Option<u64>,
    pub(crate) fault: Option<LengthFault>,
    /// The field names `Connection` lists (besides `close` and `keep-alive`).
    pub(crate) named: Vec<&'h [u8]>,
}

impl<'h> Framing<'h> {
    pub(crate) fn new(version: Version) -> Framing<'h> {
        Framing {
            version,
            keep_alive: version == Version::HTTP_11,
            chunked: None,
            length: None,
            fault: None,
            named: Vec::new(),
        }
    }

    /// Takes in one field (other fields are passed over).
    pub(crate) fn read(&mut self, name: &[u8], value: &'h [u8]) {
        if name_is(name, b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    self.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive |= self.version == Version::HTTP_10;
                } else if !token.is_empty() {
                    self.named.push(token);
                }
            }
        } else if name_is(name, b"transfer-encoding") {
            if let Some(last) = value.rsplit(|&b| b == b',').next() {
                self.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        } else if name_is(name, b"content-length") {
            for part in value.split(|&b| b == b',') {
                match parse_decimal(part.trim_ascii()) {
                    None => self.fault = Some(LengthFault::NotANumber),
                    Some(n) if self.length.is_some_and(|l| l != n) => {
                        self.fault = Some(LengthFault::Differing)
                    }
                    Some(n) => self.length = Some(n),
                }
            }
        }
    }
}

pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Where a chunked body's decoder stands.
#[derive(Debug, PartialEq, Clone, Copy)]
pub(crate) enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    /// Trailer bytes seen so far.
    Trailers(usize),
}

pub(crate) enum ChunkStep {
    Data(Bytes),
    End,
    NeedMore,
}

impl ChunkState {
    pub(crate) fn step(&mut self, buf: &mut BytesMut) -> Result<ChunkStep, String> {
        loop {
            match *self {
                ChunkState::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(ChunkStep::NeedMore);
                    };
                    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                    let rest = line[digits..].trim_ascii_start();
                    if digits == 0 || digits > 16 || !(rest.is_empty() || rest[0] == b';') {
                        return Err("a chunk size is not valid".into());
                    }
                    let size = line[..digits].iter().fold(0u64, |n, &d| {
                        (n << 4) | u64::from((d as char).to_digit(16).unwrap_or(0))
                    });
                    *self = if size == 0 {
                        ChunkState::Trailers(0)
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(ChunkStep::NeedMore);
                    }
                    let n = left.min(buf.len() as u64);
                    let data = buf.split_to(n as usize).freeze();
                    *self = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                    return Ok(ChunkStep::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(ChunkStep::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("a chunk is longer than its size".into());
                    }
                    buf.advance(2);
                    *self = ChunkState::Size;
                }
                ChunkState::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_TRAILERS.saturating_sub(seen))? else {
                        return Ok(ChunkStep::NeedMore);
                    };
                    if line.is_empty() {
                        return Ok(ChunkStep::End);
                    }
                    *self = ChunkState::Trailers(seen + line.len() + 2);
                }
            }
        }
    }
}

/// The next CRLF-ended line (without the CRLF), if complete; an error past `limit` bytes.
fn take_line(buf: &mut BytesMut, limit: usize) -> Result<Option<Bytes>, String> {
    let end = buf.iter().position(|&b| b == b'\n');
    if end.unwrap_or(buf.len()) >= limit {
        return Err("a line of a chunked body is too long".into());
    }
    match end {
        Some(end) if end > 0 && buf[end - 1] == b'\r' => {
            let line = buf.split_to(end + 1).freeze();
            Ok(Some(line.slice(..end - 1)))
        }
        Some(_) => Err("a line of a chunked body is not valid".into()),
        None => Ok(None),
    }
}

/// A response body read from its connection by the task that polls it.
struct ResponseBody {
    conn: Option<Connection>,
    kind: BodyKind,
    reusable: bool,
    back: Option<ReturnTo>,
    idle: Duration,
    /// Made the first time the body waits for the backend (most bodies never do: they come
    /// with the head).
    idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ResponseBody {
    /// The body has ended: the connection goes back if the exchange left it clean.
    fn finish(&mut self) {
        self.kind = BodyKind::Done;
        if let (Some(conn), Some((idle, key))) = (self.conn.take(), self.back.take())
            && self.reusable
            && conn.read.is_empty()
        {
            idle.put(key, conn);
        }
    }
}

/// Takes what `buf` holds of a body with `left` bytes to come (counting them off).
pub(crate) fn take_counted(buf: &mut BytesMut, left: &mut u64) -> Bytes {
    let n = (*left).min(buf.len() as u64);
    *left -= n;
    buf.split_to(n as usize).freeze()
}

fn poll_fill(conn: &mut Connection, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    conn.read.reserve(READ_SIZE);
    loop {
        ready!(conn.stream.poll_read_ready(cx))?;
        match conn.stream.try_read_buf(&mut conn.read) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            result => return Poll::Ready(result),
        }
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.kind {
                BodyKind::Done => return Poll::Ready(None),
                BodyKind::Length(left) if !conn.read.is_empty() => {
                    let data = take_counted(&mut conn.read, left);
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyKind::UntilClose if !conn.read.is_empty() => {
                    let data = conn.read.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyKind::Chunked(state) => match state.step(&mut conn.read) {
                    Err(e) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    Ok(ChunkStep::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(ChunkStep::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(ChunkStep::NeedMore) => {}
                },
                BodyKind::Length(_) | BodyKind::UntilClose => {}
            }
            let filled = match poll_fill(conn, cx) {
                Poll::Ready(filled) => filled,
                Poll::Pending => {
                    let idle = this.idle;
                    let timer = this
                        .idle_timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                    if timer.as_mut().poll(cx).is_ready() {
                        this.conn = None;
                        return Poll::Ready(Some(Err(format!(
                            "the backend sent nothing of the response body for {idle:?}"
                        )
                        .into())));
                    }
                    return Poll::Pending;
                }
            };
            if let Some(timer) = this.idle_timer.as_mut() {
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + this.idle);
            }
            match filled {
                Ok(0) if this.kind == BodyKind::UntilClose => {
                    this.kind = BodyKind::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(
                        "the backend closed the connection before the response body ended".into(),
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.kind == BodyKind::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.kind {
            BodyKind::Done => SizeHint::with_exact(0),
            BodyKind::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{self, HeaderName};

    fn head(raw: &str, head_request: bool) -> Result<(Head, BytesMut), String> {
        let mut buf = BytesMut::from(raw.as_bytes());
        match take_final_head(&mut buf, head_request) {
            Ok(Some(h)) => Ok((h, buf)),
            Ok(None) => Err("incomplete".into()),
            Err(SendError::Failed(e) | SendError::NoResponse(e)) => Err(e),
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let (h, rest) = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false).unwrap();
        assert_eq!(h.body, BodyKind::Length(5));
        assert!(h.reusable);
        assert_eq!(&rest[..], b"hello");
        let (h, _) = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap();
        assert_eq!(h.body, BodyKind::Done, "no body after HEAD");
        assert!(h.reusable);
        for status in ["204 No Content", "304 Not Modified"] {
            let (h, _) = head(
                &format!("HTTP/1.1 {status}\r\nContent-Length: 9\r\n\r\n"),
                false,
            )
            .unwrap();
            assert_eq!(h.body, BodyKind::Done);
        }
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.body, BodyKind::Chunked(ChunkState::Size));
        assert!(h.reusable);
        // Transfer-Encoding wins over Content-Length, and such a connection is not reused.
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.body, BodyKind::Chunked(ChunkState::Size));
        assert!(!h.reusable);
        let (h, _) = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).unwrap();
        assert_eq!(h.body, BodyKind::UntilClose);
        assert!(!h.reusable);
        let (h, _) = head("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", false).unwrap();
        assert_eq!(h.body, BodyKind::UntilClose);
        assert!(!h.reusable);
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\nConnection: close\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.body, BodyKind::Length(4));
        assert!(!h.reusable, "the backend said close");
        let (h, _) = head("HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n", false).unwrap();
        assert!(!h.reusable, "HTTP/1.0 closes unless it says keep-alive");
        let (h, _) = head(
            "HTTP/1.0 200 OK\r\nContent-Length: 4\r\nConnection: Keep-Alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nX-End: 2\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(h.reusable);
        let map = h.headers.to_map();
        let names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            ["content-length", "x-end"],
            "hop-by-hop headers stay out"
        );
        assert_eq!(h.version, Version::HTTP_10);
        // Interim responses are skipped; the final one counts.
        let (h, rest) = head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nok", false).unwrap();
        assert_eq!(h.status, 201);
        assert_eq!(h.headers.get("x-a"), Some(&b"1"[..]));
        assert!(h.headers.get("link").is_none());
        assert_eq!(&rest[..], b"ok");
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 4, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
        ] {
            assert!(head(bad, false).is_err(), "{bad:?} must be refused");
        }
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        let e = head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false).unwrap_err();
        assert!(e.contains("more than 100 headers"), "{e}");
    }

    fn decode(mut input: &[u8], piece: usize) -> Result<Vec<u8>, String> {
        let mut state = ChunkState::Size;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        loop {
            match state.step(&mut buf)? {
                ChunkStep::Data(d) => out.extend_from_slice(&d),
                ChunkStep::End if !buf.is_empty() || !input.is_empty() => {
                    return Err("bytes after the end".into());
                }
                ChunkStep::End => return Ok(out),
                ChunkStep::NeedMore if input.is_empty() => return Err("truncated".into()),
                ChunkStep::NeedMore => {
                    let n = piece.min(input.len());
                    buf.extend_from_slice(&input[..n]);
                    input = &input[n..];
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let body =
            b"5\r\nhello\r\n1;ext=\"a b\"\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
        for piece in [1, 2, 3, 7, 1000] {
            assert_eq!(
                decode(body, piece).unwrap(),
                b"hello 0123456789",
                "pieces of {piece}"
            );
        }
        for bad in [
            &b"5\r\nhello world\r\n0\r\n\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhel",
        ] {
            assert!(
                decode(bad, 3).is_err(),
                "{:?} must be refused",
                String::from_utf8_lossy(bad)
            );
        }
        let long_line = format!("5;{}\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert!(
            decode(long_line.as_bytes(), 1000)
                .unwrap_err()
                .contains("too long")
        );
    }

    /// Mutated responses (bytes flipped, inserted, removed, cut) never panic the head parser or
    /// the chunked decoder, and what they accept is consistent: a parsed head leaves exactly the
    /// bytes after it, a decoded body never exceeds the input.
    #[test]
    fn mutated_responses_never_panic_the_parsers() {
        let seeds: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3, 3\r\n\r\n5;a=b\r\nhello\r\n0\r\nT: 1\r\n\r\n",
            b"3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..40_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % (input.len() + 1);
                match next() % 4 {
                    0 if at < input.len() => input[at] = next() as u8,
                    1 => input.insert(at, b"\r\n:;0 fF\x00\xff"[(next() % 10) as usize]),
                    2 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.truncate(at),
                }
            }
            let mut buf = BytesMut::from(&input[..]);
            if let Ok(Some(_)) = take_final_head(&mut buf, next() % 2 == 0) {
                assert!(input.ends_with(&buf), "the body bytes stay after the head");
            }
            let piece = 1 + (next() % 7) as usize;
            if let Ok(out) = decode(&input, piece) {
                assert!(out.len() <= input.len());
            }
        }
    }

    /// The head written for a client connection's own backend connection carries the same
    /// headers as the map that `HeaderEdits::apply` makes for pooled backends.
    #[test]
    fn written_heads_carry_the_headers_that_apply_makes() {
        let key_header = HeaderName::from_static("ocp-apim-subscription-key");
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![
                ("host", "api.contoso.com"),
                ("accept", "*/*"),
                ("ocp-apim-subscription-key", "secret"),
            ],
            vec![
                ("host", "api.contoso.com"),
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "old"),
                ("connection", "keep-alive, X-Session"),
                ("x-session", "abc"),
                ("te", "trailers"),
                ("keep-alive", "timeout=5"),
                ("x-request-id", "client-chosen"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
            ],
            vec![
                ("x-forwarded-host", "kept without a Host"),
                ("x-forwarded-for", ""),
            ],
        ];
        for (case, pairs) in cases.iter().enumerate() {
            let mut headers = HeaderMap::new();
            for (k, v) in pairs {
                headers.append(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            // The same fields as a client sent them, names in its own case.
            let mut text = Vec::new();
            let mut fields = Vec::new();
            for (k, v) in pairs {
                let name = k
                    .split('-')
                    .map(|w| w[..1].to_uppercase() + &w[1..])
                    .collect::<Vec<_>>()
                    .join("-");
                let start = text.len();
                text.extend_from_slice(name.as_bytes());
                let name_range = start..text.len();
                text.extend_from_slice(b": ");
                let value_start = text.len();
                text.extend_from_slice(v.as_bytes());
                fields.push((name_range, value_start..text.len()));
                text.extend_from_slice(b"\r\n");
            }
            let raw = crate::request::RawHead::new(Bytes::from(text), fields);
            let sources = [
                None,
                Some(ClientHeaders::Raw(raw)),
                Some(ClientHeaders::Shared(Arc::new(RequestHeaders::Map(
                    headers.clone(),
                )))),
            ];
            for (request_id, source) in [None, Some(HeaderValue::from_static("rid-1"))]
                .into_iter()
                .flat_map(|id| sources.iter().map(move |s| (id.clone(), s)))
            {
                let edits = HeaderEdits {
                    key_header: key_header.clone(),
                    client: HeaderValue::from_static("192.0.2.7"),
                    https: case == 1,
                    request_id,
                    headers: match source {
                        None => None,
                        Some(ClientHeaders::Raw(r)) => Some(ClientHeaders::Raw(r.clone())),
                        Some(ClientHeaders::Shared(m)) => Some(ClientHeaders::Shared(m.clone())),
                    },
                    raw_response: false,
                };
                let mut applied = headers.clone();
                edits.apply(&mut applied);
                applied.insert(header::HOST, HeaderValue::from_static("backend:8080"));
                let mut expected: Vec<(String, String)> = applied
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                    .collect();
                expected.sort();

                let mut req = hyper::Request::new(());
                *req.uri_mut() = "http://backend:8080/v1/items?x=1".parse().unwrap();
                if source.is_none() {
                    *req.headers_mut() = headers.clone();
                }
                let (parts, ()) = req.into_parts();
                let mut out = Vec::new();
                let host = HeaderValue::from_static("backend:8080");
                encode_head(&mut out, &parts, &edits, &host, RequestFraming::None);
                let mut slots = [httparse::EMPTY_HEADER; 32];
                let mut parsed = httparse::Request::new(&mut slots);
                assert!(parsed.parse(&out).unwrap().is_complete());
                assert_eq!(parsed.path, Some("/v1/items?x=1"));
                let mut written: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).to_string(),
                        )
                    })
                    .collect();
                written.sort();
                assert_eq!(written, expected, "case {case}");
            }
        }
    }
}
