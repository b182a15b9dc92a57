//! Deep and long inputs from short ones: `open^n core close^n` with n up to 20,000, as an
//! expression or inside a policy document. The parsers refuse what nests too deeply and never
//! overflow a stack; what they accept evaluates without one.
#![no_main]

use gatehouse_policy::exec::Exchange;
use gatehouse_policy::{NoResolver, expr, parse_document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(([mode, low, high], rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let n = usize::from(u16::from_le_bytes([*low, *high])) % 20_000;
    let mut parts = text.splitn(3, '\u{1}');
    let (open, core, close) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let body = format!("{}{core}{}", open.repeat(n), close.repeat(n));
    if body.len() > 1 << 20 {
        return;
    }
    if mode & 1 == 0 {
        if let Ok(code) = expr::parse(&format!("@({body})")) {
            let _ = expr::eval_code(&code, &Exchange::default());
        }
    } else {
        let doc = format!("<policies><inbound>{body}</inbound></policies>");
        let _ = parse_document(&doc, "rawxml", &NoResolver);
    }
});
