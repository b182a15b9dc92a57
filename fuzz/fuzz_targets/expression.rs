//! The expression parser never panics, and neither does evaluating what it accepts.
#![no_main]

use gatehouse_policy::exec::Exchange;
use gatehouse_policy::expr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for src in [format!("@({text})"), format!("@{{{text}}}")] {
            if let Ok(code) = expr::parse(&src) {
                let mut ex = Exchange::default();
                ex.method = "GET".into();
                ex.request_headers.push(("x-a".into(), "1".into()));
                let _ = expr::eval_code(&code, &ex);
            }
        }
    }
});
