//! Response heads as a backend may send them (interim ones first), with the body after them:
//! never a panic, and what is accepted is consistent — a taken head leaves exactly the bytes
//! after it, hop-by-hop fields never stay, a body never yields more than was sent.
#![no_main]

use bytes::BytesMut;
use gatehouse_http1::{
    ChunkStep, ResponseFraming, is_hop_by_hop_name, take_counted, take_response_head,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let mut buf = BytesMut::from(data);
    let Ok(Some(head)) = take_response_head(&mut buf, flags & 1 == 1) else {
        return;
    };
    assert!(data.ends_with(&buf), "the bytes after the head stay");
    assert!(
        head.headers
            .iter()
            .all(|(name, _)| !is_hop_by_hop_name(name))
    );
    let _ = head.headers.to_map();
    let mut body_bytes = 0usize;
    match head.body {
        ResponseFraming::Done => {}
        ResponseFraming::UntilClose => body_bytes = buf.len(),
        ResponseFraming::Length(n) => {
            let mut left = n;
            body_bytes = take_counted(&mut buf, &mut left).len();
        }
        ResponseFraming::Chunked(mut state) => loop {
            match state.step(&mut buf) {
                Ok(ChunkStep::Data(d)) => body_bytes += d.len(),
                Ok(ChunkStep::End) | Ok(ChunkStep::NeedMore) | Err(_) => break,
            }
        },
    }
    assert!(body_bytes <= data.len());
});
