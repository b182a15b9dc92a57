//! HTTP/1.x on the wire, without IO: request and response heads (httparse parses them), what
//! their fields say about the body and the connection (RFC 9112 §6.3, §9.3), and chunked
//! bodies. The gateway's client side (`h1_server`) and backend side (`h1`) read with these.
//!
//! Why a crate of its own: these parsers read whatever clients and backends send, so they are
//! fuzzed (`fuzz/`), and a fuzz build of this crate needs only httparse, bytes and http.
//!
//! Invariants:
//! - Nothing here panics on any input.
//! - A request that could be framed two ways is refused (Transfer-Encoding with
//!   Content-Length, a Transfer-Encoding not ending in chunked, Transfer-Encoding on HTTP/1.0,
//!   differing or malformed lengths), so no request is framed one way here and another way by
//!   a backend.
//! - A head's [`RawHead`] holds exactly the fields httparse read, in order, names and values as
//!   sent (a response's without its hop-by-hop fields); its values are valid header values.
//! - A parsed head is taken off the front of the buffer; the bytes after it stay.

mod fields;
mod framing;
mod request;
mod response;

pub use fields::{RawHead, is_hop_by_hop_name, name_is};
pub use framing::{ChunkState, ChunkStep, Framing, LengthFault, parse_decimal, take_counted};
pub use request::{Refusal, RequestFraming, RequestHead, take_request_head};
pub use response::{ResponseFraming, ResponseHead, skip_interim, take_response_head};
