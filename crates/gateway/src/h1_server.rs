//! The gateway's HTTP/1.x server side: reads client requests off a connection, runs each through
//! [`crate::server::handle`], and writes the answers back.
//!
//! Why hand-written: under callgrind hyper's server (its dispatcher, the connection-type
//! detection of hyper-util's auto builder, its buffered IO and encoder) was a third of the
//! gateway's instructions per proxied request. Parsing is httparse's, as in hyper; framing,
//! keep-alive and limits are ours. HTTP/2 (h2c by prior knowledge, or `h2` by ALPN) stays
//! with hyper.
//!
//! Invariants:
//! - Request framing is RFC 9112 §6.3's, with the ambiguous cases refused (400, then close): a
//!   Transfer-Encoding whose last coding is not chunked, Transfer-Encoding together with
//!   Content-Length, differing or malformed Content-Length values, Transfer-Encoding on
//!   HTTP/1.0. So no request can be framed one way here and another way by a backend.
//! - A head larger than `max_header_bytes` gets 431, more than 100 header fields 431, an
//!   unreadable one 400; each ends the connection. A head (or the first byte of the next
//!   request on a kept connection) must arrive within `header_read_timeout`, or the connection
//!   is closed.
//! - A connection is kept for the next request only when the request body was read to its end
//!   (by the pipeline, or by nobody because there was none), the response was written in full
//!   with framing of its own, and neither side asked to close. A body left unread closes the
//!   connection after the response, the server reading and dropping what the client still sends
//!   for a moment so that the answer is not lost to a reset.
//! - `100 Continue` is sent when the pipeline first reads the body, never before: a request
//!   refused without its body (401, 413 …) is answered without the client sending it.
//! - A client that takes none of the response's bytes for `send_timeout` loses its connection.
//! - On shutdown an idle connection closes at once; one with a request in flight closes after
//!   that response (`Connection: close`).

use crate::context::ClientConnection;
use crate::deadline::Deadline;
use crate::h1::line;
use crate::request::{
    BodyFraming, ClientBody, ClientRequest, Expect, RawHead, ReadHalf, Reader, RequestBody,
    RequestHeaders, RequestId, lock, name_is,
};
use crate::server;
use crate::shared::Shared;
use crate::websocket;
use bytes::{Bytes, BytesMut};
use gatehouse_http1::{Refusal, RequestFraming, RequestHead};
use hyper::body::Body as _;
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode, Version};
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// Body frames up to this size are copied next to the head (or their chunk framing) and
/// written with it.
const COALESCE: usize = 16 * 1024;
/// How much a closing connection reads and drops of a body nobody read, and for how long, so
/// that the client reads the answer instead of a reset.
const LINGER_BYTES: usize = 4 * 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// What an HTTP/2 client sends first on a connection (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Parses the request head at the front of `buf`, taking it out when complete.
fn take_head(buf: &mut BytesMut, max_head: usize) -> Result<Option<RequestHead>, Refusal> {
    gatehouse_http1::take_request_head(buf, max_head)
}

/// How reading the next request head ended. (Not boxed: a head per request is the common case.)
#[allow(clippy::large_enum_variant)]
enum NextHead {
    Head(RequestHead),
    /// The client closed, the timeout passed, or the gateway stops: close quietly.
    Close,
    Refused(Refusal),
}

/// Reads the next request head, which must be in by `deadline` (else the header read timeout
/// from now).
async fn next_head(
    reader: &mut Reader,
    shared: &Shared,
    timer: &mut Deadline,
    stop: &mut watch::Receiver<bool>,
    mut deadline: Option<Instant>,
) -> NextHead {
    let max_head = shared.config.max_header_bytes;
    let timeout = shared.config.header_read_timeout;
    loop {
        if !reader.buf.is_empty() {
            match take_head(&mut reader.buf, max_head) {
                Ok(Some(head)) => return NextHead::Head(head),
                Ok(None) => {}
                Err(refusal) => return NextHead::Refused(refusal),
            }
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + timeout);
        let filled = tokio::select! {
            biased;
            filled = poll_fn(|cx| reader.poll_fill(cx)) => filled,
            () = timer.until(deadline) => return NextHead::Close,
            _ = stop.wait_for(|s| *s) => return NextHead::Close,
        };
        match filled {
            Ok(0) | Err(_) => return NextHead::Close,
            Ok(_) => {}
        }
    }
}

/// Serves HTTP/1.x requests on a connection until either side closes it. `buf` holds what was
/// already read from it; the first request's head must be in by `first_deadline` (the header
/// read timeout counts from the connection's start, not from the protocol sniff or the TLS
/// handshake).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<W: AsyncWrite + Unpin>(
    read: ReadHalf,
    buf: BytesMut,
    write: W,
    shared: Arc<Shared>,
    remote: SocketAddr,
    tls: bool,
    mut stop: watch::Receiver<bool>,
    first_deadline: Instant,
) {
    let mut deadline = Some(first_deadline);
    let client = Arc::new(ClientConnection::new(remote));
    let mut write = SendTimeout::new(write, shared.config.send_timeout);
    let mut reader = Reader::new(read, buf);
    let mut timer = Deadline::default();
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let head = match next_head(&mut reader, &shared, &mut timer, &mut stop, deadline.take())
            .await
        {
            NextHead::Head(head) => head,
            NextHead::Close => return,
            NextHead::Refused(refusal) => {
                let answer = server::Answer {
                    response: crate::context::json_error(refusal.status, refusal.message),
                    request_id: Some(shared.next_request_id()),
                };
                let _ =
                    write_response(&mut write, &mut out, answer, Version::HTTP_11, false, false)
                        .await;
                linger(&mut reader, &mut write).await;
                return;
            }
        };
        if websocket::wants_tunnel(&shared, &head) {
            tunnel(&shared, head, reader, write, remote, tls).await;
            return;
        }
        let version = head.version;
        let head_request = head.method == Method::HEAD;
        let mut keep_alive = head.keep_alive;
        let request = |body| ClientRequest {
            method: head.method,
            uri: head.uri,
            version,
            headers: RequestHeaders::Raw(head.headers),
            body,
        };
        // The body is read through a shared reader while the pipeline runs; the connection
        // takes the reader back afterwards.
        let (resp, body_finished) = if head.body == RequestFraming::Done {
            let req = request(RequestBody::Empty);
            let resp = server::handle(shared.clone(), req, remote, tls, client.clone()).await;
            (resp, true)
        } else {
            let length = match head.body {
                RequestFraming::Length(n) => Some(n),
                _ => None,
            };
            reader.body = BodyFraming::from(head.body);
            reader.expect = if head.expect_continue {
                Expect::Owed
            } else {
                Expect::None
            };
            let shared_reader = Arc::new(Mutex::new(reader));
            let req = request(RequestBody::Client(ClientBody {
                reader: shared_reader.clone(),
                length,
            }));
            let handled = server::handle(shared.clone(), req, remote, tls, client.clone());
            let resp = with_continue(handled, &shared_reader, &mut write).await;
            match Arc::try_unwrap(shared_reader) {
                Ok(r) => {
                    reader = r.into_inner().unwrap_or_else(|e| e.into_inner());
                    reader.connection_task = None;
                    reader.body_task = None;
                    (resp, reader.body == BodyFraming::Done)
                }
                Err(still_read) => {
                    // Someone still reads the body (a backend exchange that outlives its
                    // response): answer, then close.
                    let _ =
                        write_response(&mut write, &mut out, resp, version, false, head_request)
                            .await;
                    drop(still_read);
                    return;
                }
            }
        };
        keep_alive &= body_finished && !*stop.borrow();
        let kept = write_response(
            &mut write,
            &mut out,
            resp,
            version,
            keep_alive,
            head_request,
        )
        .await
        .unwrap_or(false);
        if !kept {
            if !body_finished {
                linger(&mut reader, &mut write).await;
            } else {
                let _ = write.shutdown().await;
            }
            return;
        }
        // A kept connection keeps a head-sized write buffer, not the largest body's.
        out.shrink_to(4 * 1024);
    }
}

/// Serves a WebSocket upgrade to its end: the refusal, or the tunnel until it closes.
async fn tunnel<W: AsyncWrite + Unpin>(
    shared: &Shared,
    head: RequestHead,
    reader: Reader,
    mut write: SendTimeout<W>,
    remote: SocketAddr,
    tls: bool,
) {
    match websocket::open_tunnel(shared, head, remote, tls).await {
        Ok(opened) => {
            if write.write_all(&opened.answer).await.is_ok()
                && write.write_all(&opened.early).await.is_ok()
            {
                websocket::join(reader, write, opened).await;
            }
        }
        Err(response) => {
            let answer = server::Answer {
                response,
                request_id: Some(shared.next_request_id()),
            };
            let mut out = Vec::new();
            let _ =
                write_response(&mut write, &mut out, answer, Version::HTTP_11, false, false).await;
            let _ = write.shutdown().await;
        }
    }
}

/// Runs the pipeline for a request with a body, sending `100 Continue` when the body is first
/// read if the client asked for it.
async fn with_continue<F, W>(handled: F, reader: &Mutex<Reader>, write: &mut W) -> F::Output
where
    F: Future,
    W: AsyncWrite + Unpin,
{
    let mut handled = pin!(handled);
    let mut sent = 0usize;
    poll_fn(|cx| {
        loop {
            if let Poll::Ready(out) = handled.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            let mut r = lock(reader);
            match r.expect {
                Expect::None => return Poll::Pending,
                Expect::Owed => {
                    r.connection_task = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Expect::Wanted => {}
            }
            while sent < CONTINUE.len() {
                match Pin::new(&mut *write).poll_write(cx, &CONTINUE[sent..]) {
                    Poll::Ready(Ok(n)) if n > 0 => sent += n,
                    Poll::Ready(_) => {
                        // The client is gone; the body read will tell.
                        sent = CONTINUE.len();
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if Pin::new(&mut *write).poll_flush(cx).is_pending() {
                return Poll::Pending;
            }
            r.expect = Expect::None;
            if let Some(task) = r.body_task.take() {
                task.wake();
            }
        }
    })
    .await
}

/// Reads and drops what the client still sends (up to a limit, for a moment) after the answer,
/// then closes: closing with unread data would reset the connection and could destroy the
/// answer before the client reads it.
async fn linger<W: AsyncWrite + Unpin>(reader: &mut Reader, write: &mut W) {
    let _ = write.shutdown().await;
    let mut dropped = 0usize;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while dropped < LINGER_BYTES {
            reader.buf.clear();
            match poll_fn(|cx| reader.poll_fill(cx)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => dropped += n,
            }
        }
    })
    .await;
}

thread_local! {
    /// The `Date` header value of the current second.
    static DATE: std::cell::RefCell<(u64, HeaderValue)> =
        const { std::cell::RefCell::new((0, HeaderValue::from_static(""))) };
}

fn date_now() -> HeaderValue {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if let Ok(v) = HeaderValue::from_str(&text) {
                *cached = (secs, v);
            }
        }
        cached.1.clone()
    })
}

/// How the response body goes on the wire.
#[derive(Clone, Copy, PartialEq)]
enum ResponseFraming {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Writes the response; true when the connection can take another request.
async fn write_response<W: AsyncWrite + Unpin>(
    write: &mut W,
    out: &mut Vec<u8>,
    answer: server::Answer,
    version: Version,
    mut keep_alive: bool,
    head_request: bool,
) -> io::Result<bool> {
    let (parts, mut body) = answer.response.into_parts();
    let status = parts.status;
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless || head_request {
        ResponseFraming::None
    } else if let Some(n) = body.size_hint().exact() {
        ResponseFraming::Length(n)
    } else if version == Version::HTTP_11 {
        ResponseFraming::Chunked
    } else {
        keep_alive = false;
        ResponseFraming::UntilClose
    };
    if let Some(connection) = parts.headers.get(header::CONNECTION)
        && connection
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    {
        keep_alive = false;
    }
    let fields = body.take_fields();
    encode_head(
        out,
        &parts,
        fields.as_ref(),
        answer.request_id.as_ref(),
        framing,
        keep_alive,
        version,
        head_request,
    );
    if framing == ResponseFraming::None {
        write.write_all(out).await?;
        write.flush().await?;
        return Ok(keep_alive);
    }
    let mut written: u64 = 0;
    loop {
        // Frames ready now join what is buffered; the buffer goes out before waiting.
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    write.write_all(out).await?;
                    write.flush().await?;
                    out.clear();
                }
                poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "the response body failed; closing the connection");
                if !out.is_empty() {
                    write.write_all(out).await?;
                }
                write.flush().await?;
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue, // trailers are not passed on
            },
        };
        written += data.len() as u64;
        if let ResponseFraming::Length(declared) = framing
            && written > declared
        {
            write.write_all(out).await?;
            return Ok(false);
        }
        if framing == ResponseFraming::Chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if data.len() <= COALESCE {
            out.extend_from_slice(&data);
        } else {
            write.write_all(out).await?;
            out.clear();
            write.write_all(&data).await?;
        }
        if framing == ResponseFraming::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= COALESCE {
            write.write_all(out).await?;
            out.clear();
        }
    }
    match framing {
        ResponseFraming::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        ResponseFraming::Length(declared) if written != declared => keep_alive = false,
        _ => {}
    }
    write.write_all(out).await?;
    write.flush().await?;
    out.clear();
    Ok(keep_alive && framing != ResponseFraming::UntilClose)
}

#[allow(clippy::too_many_arguments)]
fn encode_head(
    out: &mut Vec<u8>,
    parts: &hyper::http::response::Parts,
    fields: Option<&RawHead>,
    request_id: Option<&RequestId>,
    framing: ResponseFraming,
    keep_alive: bool,
    version: Version,
    head_request: bool,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    // A HEAD or 304 answer says how long the body would be; others get the body's.
    let length_as_sent = framing == ResponseFraming::None
        && (head_request || parts.status == StatusCode::NOT_MODIFIED);
    if let Some(raw) = fields {
        for (name, value, as_read) in raw.lines() {
            if name_is(name, b"content-length") {
                if length_as_sent {
                    line(out, b"content-length", value);
                }
            } else if parts
                .headers
                .keys()
                .any(|n| name_is(name, n.as_str().as_bytes()))
                || (request_id.is_some() && name_is(name, b"x-request-id"))
            {
                // The map's fields win, and the gateway's request id.
            } else {
                dated |= name_is(name, b"date");
                out.extend_from_slice(as_read);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH {
            if length_as_sent {
                line(out, b"content-length", value.as_bytes());
            }
        } else if name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || crate::headers::is_hop_by_hop(name)
            || (request_id.is_some() && name == crate::headers::X_REQUEST_ID)
        {
        } else {
            dated |= name == header::DATE;
            line(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if let Some(id) = request_id {
        line(out, b"x-request-id", id.as_bytes());
    }
    if !dated {
        line(out, b"date", date_now().as_bytes());
    }
    match framing {
        ResponseFraming::Length(n) => {
            let mut digits = itoa::Buffer::new();
            line(out, b"content-length", digits.format(n).as_bytes());
        }
        ResponseFraming::Chunked => line(out, b"transfer-encoding", b"chunked"),
        ResponseFraming::None | ResponseFraming::UntilClose => {}
    }
    if !keep_alive {
        line(out, b"connection", b"close");
    } else if version == Version::HTTP_10 {
        line(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// The client side's writes, failing with `TimedOut` when the client takes none of the bytes
/// for `timeout` (nginx's `send_timeout`): a client that stops reading does not hold its
/// connection, its backend exchange and their buffers until shutdown. Writes that go through
/// at once cost no timer.
pub(crate) struct SendTimeout<W> {
    io: W,
    timeout: Duration,
    /// Armed when a write first waits; disarmed by any progress.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

impl<W> SendTimeout<W> {
    pub(crate) fn new(io: W, timeout: Duration) -> SendTimeout<W> {
        SendTimeout {
            io,
            timeout,
            sleep: None,
            waiting: false,
        }
    }

    /// After the write side answered `Pending`: whether the client has waited too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.timeout;
        if !self.waiting {
            self.waiting = true;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }

    fn progress<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.waiting = false;
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing within the send timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for SendTimeout<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.progress(cx, polled)
    }
}

/// A connection whose first bytes were read before knowing which protocol it speaks: those
/// bytes are read again first.
pub(crate) struct Rewind<T> {
    first: Bytes,
    io: T,
}

impl<T> Rewind<T> {
    pub(crate) fn new(first: Bytes, io: T) -> Rewind<T> {
        Rewind { first, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            let first = self.first.split_to(n);
            buf.put_slice(&first);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Reads the first bytes of a plain connection: whether it opens with HTTP/2's preface (h2c
/// by prior knowledge), and what was read. `None`: it closed or said nothing in time.
pub(crate) async fn sniff(
    stream: &mut tokio::net::TcpStream,
    deadline: Instant,
) -> Option<(bool, BytesMut)> {
    use tokio::io::AsyncReadExt;
    let mut buf = BytesMut::with_capacity(crate::request::READ_SIZE);
    let read = async {
        loop {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] != H2_PREFACE[..n] {
                return Some(false);
            }
            if n == H2_PREFACE.len() {
                return Some(true);
            }
        }
    };
    let h2 = tokio::time::timeout_at(deadline, read)
        .await
        .ok()
        .flatten()?;
    Some((h2, buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Body;
    use hyper::Response;

    #[test]
    fn response_heads_carry_their_own_framing() {
        let encode = |resp: Response<Body>, version, keep_alive, head_request| {
            let (parts, body) = resp.into_parts();
            let framing = match body.size_hint().exact() {
                _ if head_request => ResponseFraming::None,
                Some(n) => ResponseFraming::Length(n),
                None => ResponseFraming::Chunked,
            };
            let mut out = Vec::new();
            encode_head(
                &mut out,
                &parts,
                None,
                None,
                framing,
                keep_alive,
                version,
                head_request,
            );
            String::from_utf8(out).unwrap()
        };
        let mut resp = Response::new(crate::body::full("hello"));
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        resp.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        resp.headers_mut()
            .insert("x-a", HeaderValue::from_static("1"));
        let text = encode(resp, Version::HTTP_11, true, false);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\ncontent-length: 5\r\n"), "{text}");
        assert!(!text.contains("99") && !text.contains("chunked"), "{text}");
        assert!(
            text.contains("\r\nx-a: 1\r\n") && text.contains("\r\ndate: "),
            "{text}"
        );
        assert!(!text.contains("connection"), "{text}");
        let mut resp = Response::new(crate::body::empty());
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        let text = encode(resp, Version::HTTP_10, true, true);
        assert!(
            text.contains("\r\ncontent-length: 42\r\n"),
            "HEAD keeps the length: {text}"
        );
        assert!(text.contains("\r\nconnection: keep-alive\r\n"), "{text}");
        let text = encode(
            Response::new(crate::body::empty()),
            Version::HTTP_11,
            false,
            false,
        );
        assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    }

    #[test]
    fn the_gateways_request_id_wins_over_the_responses() {
        let backend_head = b"HTTP/1.1 200 OK\r\nX-Request-Id: from-backend\r\nx-b: 2\r\n\r\n";
        let mut buf = bytes::BytesMut::from(&backend_head[..]);
        let head = gatehouse_http1::take_response_head(&mut buf, false)
            .unwrap()
            .unwrap();
        let mut resp = Response::new(crate::body::empty());
        resp.headers_mut().insert(
            crate::headers::X_REQUEST_ID.clone(),
            HeaderValue::from_static("from-policy"),
        );
        let (parts, _) = resp.into_parts();
        let id = RequestId::Client(HeaderValue::from_static("rid-7"));
        let mut out = Vec::new();
        for (fields, request_id, expected) in [
            (Some(&head.headers), Some(&id), "rid-7"),
            (Some(&head.headers), None, "from-policy"),
        ] {
            encode_head(
                &mut out,
                &parts,
                fields,
                request_id,
                ResponseFraming::Length(0),
                true,
                Version::HTTP_11,
                false,
            );
            let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
            assert_eq!(text.matches("x-request-id").count(), 1, "{text}");
            assert!(
                text.contains(&format!("\r\nx-request-id: {expected}\r\n")),
                "{text}"
            );
            assert!(text.contains("\r\nx-b: 2\r\n"), "{text}");
        }
    }
}
