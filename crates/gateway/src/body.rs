//! A message body as the gateway passes it along, and the error a client's request body fails
//! with. Leaf module: it knows no other part of the gateway.

use bytes::Bytes;
use http_body_util::{BodyExt, combinators::BoxBody};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body the gateway sends or receives. A response read on one of the gateway's own backend
/// connections for a caller that asked for its fields raw ([`HeaderEdits::raw_response`])
/// carries them here ([`Body::fields`]): fields in the response's map come in addition and
/// win — a raw field whose name the map has is not written. (Here rather than in the
/// response's extensions: inserting there allocates a map per response.)
pub struct Body {
    inner: BoxBody<Bytes, BoxError>,
    fields: Option<gatehouse_http1::RawHead>,
}

impl Body {
    pub fn new<B>(body: B) -> Body
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        Body {
            inner: body.map_err(Into::into).boxed(),
            fields: None,
        }
    }

    /// The response head's fields as read (hop-by-hop ones left out), if kept raw.
    pub fn fields(&self) -> Option<&gatehouse_http1::RawHead> {
        self.fields.as_ref()
    }

    pub fn take_fields(&mut self) -> Option<gatehouse_http1::RawHead> {
        self.fields.take()
    }

    pub fn set_fields(&mut self, fields: Option<gatehouse_http1::RawHead>) {
        self.fields = fields;
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The client's request body could not be read (not valid chunked, shorter than declared, the
/// client gone): the client's fault, not the backend's. Request bodies fail with this error so
/// that a forward that failed because of it can be told apart however deep it is wrapped.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ClientBodyError(pub String);

/// The message of a [`ClientBodyError`] anywhere in `error`'s source chain.
pub(crate) fn client_body_error(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(body) = e.downcast_ref::<ClientBodyError>() {
            return Some(body.0.clone());
        }
        next = e.source();
    }
    None
}

pub(crate) fn empty() -> Body {
    Body::new(http_body_util::Empty::new())
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Body::new(http_body_util::Full::new(bytes.into()))
}
