//! Request heads as a client may send them, pipelined, with the bodies after them: never a
//! panic, and what is accepted is consistent — a taken head leaves exactly the bytes after it,
//! its fields make a header map, a body never yields more than was sent.
#![no_main]

use bytes::BytesMut;
use gatehouse_http1::{ChunkStep, RequestFraming, take_counted, take_request_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut body_bytes = 0usize;
    loop {
        let before = buf.len();
        let Ok(Some(head)) = take_request_head(&mut buf, 16 * 1024) else {
            return;
        };
        assert!(buf.len() < before, "a head was taken");
        assert!(data.ends_with(&buf), "the bytes after the head stay");
        let map = head.headers.to_map();
        assert_eq!(map.len(), head.headers.iter().count());
        let _ = (head.uri.path(), head.uri.query());
        match head.body {
            RequestFraming::Done => {}
            RequestFraming::Length(n) => {
                let mut left = n;
                let body = take_counted(&mut buf, &mut left);
                assert_eq!(body.len() as u64 + left, n);
                body_bytes += body.len();
            }
            RequestFraming::Chunked(mut state) => loop {
                match state.step(&mut buf) {
                    Ok(ChunkStep::Data(d)) => body_bytes += d.len(),
                    Ok(ChunkStep::End) => break,
                    Ok(ChunkStep::NeedMore) | Err(_) => return,
                }
            },
        }
        assert!(body_bytes <= data.len());
    }
});
