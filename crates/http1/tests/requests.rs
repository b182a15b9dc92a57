//! Request heads as clients send them: what frames the body, what keeps the connection, what is
//! refused (and with which status), and never a panic on mutated input.

use bytes::BytesMut;
use gatehouse_http1::{ChunkState, ChunkStep, RequestFraming, RequestHead, take_request_head};
use http::StatusCode;

fn head(raw: &str) -> Result<(RequestHead, BytesMut), StatusCode> {
    let mut buf = BytesMut::from(raw.as_bytes());
    match take_request_head(&mut buf, 16 * 1024) {
        Ok(Some(h)) => Ok((h, buf)),
        Ok(None) => Err(StatusCode::CONTINUE),
        Err(r) => Err(r.status),
    }
}

#[test]
fn request_framing_refuses_what_could_be_read_two_ways() {
    let (h, rest) =
        head("POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET").unwrap();
    assert_eq!(h.body, RequestFraming::Length(3));
    assert!(h.keep_alive && !h.expect_continue);
    assert_eq!(h.uri.path(), "/a");
    assert_eq!(h.uri.query(), Some("b=1"));
    assert_eq!(h.headers.get("host"), Some(&b"x"[..]));
    assert_eq!(
        &rest[..],
        b"abcGET",
        "the body and what follows stay unread"
    );
    let (h, _) = head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap();
    assert_eq!(h.body, RequestFraming::Chunked(ChunkState::Size));
    let (h, _) = head("GET / HTTP/1.1\r\nContent-Length: 0, 0\r\n\r\n").unwrap();
    assert_eq!(h.body, RequestFraming::Done);
    let (h, _) =
        head("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 9\r\n\r\n").unwrap();
    assert!(h.expect_continue);
    let (h, _) = head("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").unwrap();
    assert!(!h.expect_continue, "nothing to continue without a body");
    for (raw, status) in [
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            400,
        ),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            400,
        ),
        ("POST / HTTP/1.1\r\nContent-Length: -3\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            400,
        ),
        ("POST / HTTP/1.1\r\nContent-Length: 3 3\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nExpect: something\r\n\r\n", 417),
        ("GET / HTTP/2.0\r\n\r\n", 400),
        ("GET  / HTTP/1.1\r\n\r\n", 400),
        ("G\u{1}T / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
    ] {
        assert_eq!(
            head(raw).err(),
            Some(StatusCode::from_u16(status).unwrap()),
            "{raw:?}"
        );
    }
}

#[test]
fn connection_tokens_and_versions_decide_keep_alive() {
    for (raw, keep) in [
        ("GET / HTTP/1.1\r\n\r\n", true),
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        (
            "GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n",
            false,
        ),
        ("GET / HTTP/1.0\r\n\r\n", false),
        ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
    ] {
        assert_eq!(head(raw).unwrap().0.keep_alive, keep, "{raw:?}");
    }
}

#[test]
fn heads_over_the_limits_get_431_and_partial_heads_wait() {
    assert_eq!(
        head("GET / HTTP/1.1\r\nHost: x\r\n").err(),
        Some(StatusCode::CONTINUE)
    );
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20 * 1024));
    assert_eq!(
        head(&big).err(),
        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
    let unfinished = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(20 * 1024));
    assert_eq!(
        head(&unfinished).err(),
        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).err(),
        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
}

#[test]
fn mutated_requests_never_panic() {
    let seeds: [&[u8]; 3] = [
        b"POST /api/x?y=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
        b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5;a=b\r\nhello\r\n0\r\nT: v\r\n\r\n",
        b"GET http://h:80/p HTTP/1.0\r\nX: a, b\r\n\r\n",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..40_000 {
        let mut bytes = seeds[i % seeds.len()].to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % bytes.len();
            match next() % 3 {
                0 => bytes[at] = next() as u8,
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, b"\r\n:;, 0fF"[(next() % 9) as usize]),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let mut buf = BytesMut::from(&bytes[..]);
        if let Ok(Some(h)) = take_request_head(&mut buf, 16 * 1024)
            && let RequestFraming::Chunked(mut state) = h.body
        {
            while let Ok(ChunkStep::Data(_)) = state.step(&mut buf) {}
        }
    }
}
