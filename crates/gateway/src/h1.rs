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

use crate::body::{Body, BoxError};
use crate::headers::{ClientHeaders, HeaderEdits, PolicyEdit, is_hop_by_hop_name};
use crate::request::{RequestHeaders, name_is};
use bytes::{Bytes, BytesMut};
use gatehouse_http1::{ChunkStep, ResponseFraming, ResponseHead, take_counted};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Response};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const MAX_HEAD: usize = 64 * 1024;
const READ_SIZE: usize = 8 * 1024;
/// Body frames up to this size are copied next to their chunk framing and written with it.
const COALESCE: usize = 16 * 1024;
/// The write buffer capacity a connection keeps between requests.
const WRITE_KEEP: usize = 4 * 1024;

/// One plain-TCP connection to a backend.
pub(crate) struct Connection {
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
    /// The client's request body could not be read ([`crate::body::ClientBodyError`]).
    ClientBody(String),
}

/// The idle connections of one client connection, one per backend authority, most recently
/// used last.
#[derive(Default)]
pub(crate) struct Idle {
    connections: Mutex<Vec<(String, Connection)>>,
}

/// How many backends a client connection keeps connections to.
const IDLE_BACKENDS: usize = 4;

impl Idle {
    /// The connection kept for `authority`, if it is still usable, with the key it was kept
    /// under (handed back with the connection, so a kept connection costs no allocation).
    pub(crate) fn take(&self, authority: &str) -> (String, Option<Connection>) {
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
pub(crate) type ReturnTo = (Arc<Idle>, String);

/// How the request body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Debug)]
enum RequestFraming {
    None,
    Length(u64),
    Chunked,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream, host: HeaderValue) -> Connection {
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
    pub(crate) async fn request(
        &mut self,
        parts: &hyper::http::request::Parts,
        edits: &HeaderEdits,
        mut body: Body,
    ) -> Result<ResponseHead, SendError> {
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
                    return Err(match crate::body::client_body_error(e.as_ref()) {
                        Some(detail) => SendError::ClientBody(detail),
                        None => SendError::Failed(format!("reading the request body failed: {e}")),
                    });
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
            Ok(_) => gatehouse_http1::skip_interim(&mut self.read).map_err(SendError::Failed),
        }
    }

    /// Reads until a final response head is complete.
    async fn read_head(&mut self, head_request: bool) -> Result<ResponseHead, SendError> {
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
    pub(crate) fn into_response(
        self,
        head: ResponseHead,
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
        if body.kind == ResponseFraming::Done {
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
            || PolicyEdit::replaces(&edits.policy, name)
        {
        } else if !as_read.is_empty() {
            out.extend_from_slice(as_read);
            out.extend_from_slice(b"\r\n");
        } else {
            line(out, name, value);
        }
    }
    for p in &edits.policy {
        for v in &p.values {
            line(out, p.name.as_str().as_bytes(), v.as_bytes());
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

/// Takes the final head from the front of `buf`, dropping interim heads before it; `None`
/// while it is incomplete.
fn take_final_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, SendError> {
    gatehouse_http1::take_response_head(buf, head_request).map_err(SendError::Failed)
}

/// A response body read from its connection by the task that polls it.
struct ResponseBody {
    conn: Option<Connection>,
    kind: ResponseFraming,
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
        self.kind = ResponseFraming::Done;
        if let (Some(conn), Some((idle, key))) = (self.conn.take(), self.back.take())
            && self.reusable
            && conn.read.is_empty()
        {
            idle.put(key, conn);
        }
    }
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
                ResponseFraming::Done => return Poll::Ready(None),
                ResponseFraming::Length(left) if !conn.read.is_empty() => {
                    let data = take_counted(&mut conn.read, left);
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                ResponseFraming::UntilClose if !conn.read.is_empty() => {
                    let data = conn.read.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                ResponseFraming::Chunked(state) => match state.step(&mut conn.read) {
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
                ResponseFraming::Length(_) | ResponseFraming::UntilClose => {}
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
                Ok(0) if this.kind == ResponseFraming::UntilClose => {
                    this.kind = ResponseFraming::Done;
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
        self.kind == ResponseFraming::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.kind {
            ResponseFraming::Done => SizeHint::with_exact(0),
            ResponseFraming::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{self, HeaderName};

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
            for (request_id, source) in [
                None,
                Some(crate::request::RequestId::Client(HeaderValue::from_static(
                    "rid-1",
                ))),
            ]
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
                    policy: vec![
                        PolicyEdit {
                            name: HeaderName::from_static("cookie"),
                            replace: true,
                            values: vec![HeaderValue::from_static("c=3")],
                        },
                        PolicyEdit {
                            name: HeaderName::from_static("accept"),
                            replace: false,
                            values: vec![HeaderValue::from_static("text/plain")],
                        },
                        PolicyEdit {
                            name: HeaderName::from_static("x-priority"),
                            replace: true,
                            values: vec![],
                        },
                    ],
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
