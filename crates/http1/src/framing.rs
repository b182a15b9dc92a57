//! What a head's fields say about its body and its connection, and chunked bodies.

use crate::fields::name_is;
use bytes::{Buf, Bytes, BytesMut};
use http::Version;

/// Longest chunk-size line (with its extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Most trailer bytes after a chunked body.
const MAX_TRAILERS: usize = 64 * 1024;

/// A Content-Length that cannot frame a body.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum LengthFault {
    NotANumber,
    Differing,
}

/// What a message head's fields say about its framing and its connection (RFC 9112 §6.3, §9.3),
/// read field by field.
pub struct Framing<'h> {
    version: Version,
    pub keep_alive: bool,
    /// Whether the last coding of the last Transfer-Encoding is chunked.
    pub chunked: Option<bool>,
    pub length: Option<u64>,
    pub fault: Option<LengthFault>,
    /// The field names `Connection` lists (besides `close` and `keep-alive`).
    pub named: Vec<&'h [u8]>,
}

impl<'h> Framing<'h> {
    pub fn new(version: Version) -> Framing<'h> {
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
    pub fn read(&mut self, name: &[u8], value: &'h [u8]) {
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

pub fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Where a chunked body's decoder stands.
#[derive(Debug, PartialEq, Clone, Copy)]
pub enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    /// Trailer bytes seen so far.
    Trailers(usize),
}

pub enum ChunkStep {
    Data(Bytes),
    End,
    NeedMore,
}

impl ChunkState {
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<ChunkStep, String> {
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

/// Takes what `buf` holds of a body with `left` bytes to come (counting them off).
pub fn take_counted(buf: &mut BytesMut, left: &mut u64) -> Bytes {
    let n = (*left).min(buf.len() as u64);
    *left -= n;
    buf.split_to(n as usize).freeze()
}
