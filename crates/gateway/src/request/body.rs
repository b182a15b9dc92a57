//! A client's request body: read from the client's HTTP/1.x connection by whoever polls it
//! (the backend exchange, or a policy that buffers it), or hyper's for HTTP/2. The connection's
//! read side (`Reader`) is shared between the body and the connection's task, which sends a
//! `100 Continue` when the body is first read and reads the next request head after it.

use crate::body::{BoxError, ClientBodyError};
use bytes::{Bytes, BytesMut};
use gatehouse_http1::{ChunkState, ChunkStep, RequestFraming, take_counted};
use hyper::body::{Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use tokio::io::AsyncRead;

pub(crate) const READ_SIZE: usize = 8 * 1024;

/// The read half of a client connection.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;

/// The read side of a client connection: the socket's read half, what was read of it but not
/// used yet, and where the request body being read stands.
pub(crate) struct Reader {
    pub(crate) io: ReadHalf,
    pub(crate) buf: BytesMut,
    pub(crate) body: BodyFraming,
    pub(crate) expect: Expect,
    /// The connection's task, woken when the body asks for a `100 Continue`.
    pub(crate) connection_task: Option<Waker>,
    /// The task reading the body, woken when the `100 Continue` is out.
    pub(crate) body_task: Option<Waker>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum BodyFraming {
    Done,
    Length(u64),
    Chunked(ChunkState),
    /// The body failed (malformed, or the client went away): the connection cannot be reused.
    Broken,
}

impl From<RequestFraming> for BodyFraming {
    fn from(framing: RequestFraming) -> BodyFraming {
        match framing {
            RequestFraming::Done => BodyFraming::Done,
            RequestFraming::Length(n) => BodyFraming::Length(n),
            RequestFraming::Chunked(state) => BodyFraming::Chunked(state),
        }
    }
}

/// Where a `100-continue` expectation stands.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Expect {
    /// Not expected, or already answered.
    None,
    /// Expected; nobody has read the body yet.
    Owed,
    /// The body wants to be read: the connection's task is to send `100 Continue`.
    Wanted,
}

impl Reader {
    pub(crate) fn new(io: ReadHalf, buf: BytesMut) -> Reader {
        Reader {
            io,
            buf,
            body: BodyFraming::Done,
            expect: Expect::None,
            connection_task: None,
            body_task: None,
        }
    }

    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

pub(crate) fn lock(reader: &Mutex<Reader>) -> std::sync::MutexGuard<'_, Reader> {
    reader.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request body: read from the client connection by whoever polls it, or hyper's (HTTP/2).
pub(crate) enum RequestBody {
    Empty,
    Hyper(hyper::body::Incoming),
    Client(ClientBody),
    /// Read whole already (a GraphQL query that was checked); yielded once.
    Full(Option<Bytes>),
}

/// A request body read from an HTTP/1.x client connection.
pub(crate) struct ClientBody {
    pub(crate) reader: Arc<Mutex<Reader>>,
    /// The declared length, if any.
    pub(crate) length: Option<u64>,
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Hyper(incoming) => Pin::new(incoming)
                .poll_frame(cx)
                .map_err(|e| client_body(format!("the request body could not be read: {e}"))),
            RequestBody::Client(body) => body.poll_frame(cx),
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Hyper(incoming) => incoming.is_end_stream(),
            RequestBody::Client(_) => false,
            RequestBody::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Hyper(incoming) => incoming.size_hint(),
            RequestBody::Client(body) => body
                .length
                .map_or_else(SizeHint::default, SizeHint::with_exact),
            RequestBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl ClientBody {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut guard = lock(&self.reader);
        let reader = &mut *guard;
        match reader.expect {
            Expect::None => {}
            Expect::Owed | Expect::Wanted => {
                reader.expect = Expect::Wanted;
                reader.body_task = Some(cx.waker().clone());
                if let Some(task) = &reader.connection_task {
                    task.wake_by_ref();
                }
                return Poll::Pending;
            }
        }
        loop {
            match &mut reader.body {
                BodyFraming::Done => return Poll::Ready(None),
                BodyFraming::Broken => {
                    return Poll::Ready(Some(Err(client_body(
                        "the request body could not be read".into(),
                    ))));
                }
                BodyFraming::Length(left) if !reader.buf.is_empty() => {
                    let data = take_counted(&mut reader.buf, left);
                    if *left == 0 {
                        reader.body = BodyFraming::Done;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyFraming::Length(_) => {}
                BodyFraming::Chunked(state) => match state.step(&mut reader.buf) {
                    Err(e) => {
                        reader.body = BodyFraming::Broken;
                        return Poll::Ready(Some(Err(client_body(format!(
                            "the request body is not valid chunked: {e}"
                        )))));
                    }
                    Ok(ChunkStep::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(ChunkStep::End) => {
                        reader.body = BodyFraming::Done;
                        return Poll::Ready(None);
                    }
                    Ok(ChunkStep::NeedMore) => {}
                },
            }
            match ready!(reader.poll_fill(cx)) {
                Ok(0) => {
                    reader.body = BodyFraming::Broken;
                    return Poll::Ready(Some(Err(client_body(
                        "the client closed the connection within the request body".into(),
                    ))));
                }
                Ok(_) => {}
                Err(e) => {
                    reader.body = BodyFraming::Broken;
                    return Poll::Ready(Some(Err(client_body(format!(
                        "reading the request body failed: {e}"
                    )))));
                }
            }
        }
    }
}

fn client_body(message: String) -> BoxError {
    Box::new(ClientBodyError(message))
}
