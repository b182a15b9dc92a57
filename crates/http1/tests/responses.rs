//! Response heads and chunked bodies as backends send them: framed as RFC 9112 says, refused
//! when they cannot be read one way only, and never a panic on mutated input.

use bytes::BytesMut;
use gatehouse_http1::{ChunkState, ChunkStep, ResponseFraming, ResponseHead, take_response_head};
use http::Version;
use http::header::HeaderName;

fn head(raw: &str, head_request: bool) -> Result<(ResponseHead, BytesMut), String> {
    let mut buf = BytesMut::from(raw.as_bytes());
    match take_response_head(&mut buf, head_request) {
        Ok(Some(h)) => Ok((h, buf)),
        Ok(None) => Err("incomplete".into()),
        Err(e) => Err(e),
    }
}

#[test]
fn response_framing_follows_rfc_9112() {
    let (h, rest) = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false).unwrap();
    assert_eq!(h.body, ResponseFraming::Length(5));
    assert!(h.reusable);
    assert_eq!(&rest[..], b"hello");
    let (h, _) = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).unwrap();
    assert_eq!(h.body, ResponseFraming::Done, "no body after HEAD");
    assert!(h.reusable);
    for status in ["204 No Content", "304 Not Modified"] {
        let (h, _) = head(
            &format!("HTTP/1.1 {status}\r\nContent-Length: 9\r\n\r\n"),
            false,
        )
        .unwrap();
        assert_eq!(h.body, ResponseFraming::Done);
    }
    let (h, _) = head(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(h.body, ResponseFraming::Chunked(ChunkState::Size));
    assert!(h.reusable);
    // Transfer-Encoding wins over Content-Length, and such a connection is not reused.
    let (h, _) = head(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(h.body, ResponseFraming::Chunked(ChunkState::Size));
    assert!(!h.reusable);
    let (h, _) = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).unwrap();
    assert_eq!(h.body, ResponseFraming::UntilClose);
    assert!(!h.reusable);
    let (h, _) = head("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", false).unwrap();
    assert_eq!(h.body, ResponseFraming::UntilClose);
    assert!(!h.reusable);
    let (h, _) = head(
        "HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\nConnection: close\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(h.body, ResponseFraming::Length(4));
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
    let body = b"5\r\nhello\r\n1;ext=\"a b\"\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
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
    let long_line = format!("5;{}\r\n", "e".repeat(4 * 1024));
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
        if let Ok(Some(_)) = take_response_head(&mut buf, next() % 2 == 0) {
            assert!(input.ends_with(&buf), "the body bytes stay after the head");
        }
        let piece = 1 + (next() % 7) as usize;
        if let Ok(out) = decode(&input, piece) {
            assert!(out.len() <= input.len());
        }
    }
}
