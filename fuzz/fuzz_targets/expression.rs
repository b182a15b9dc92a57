//! The expression parser never panics, and neither does evaluating what it accepts; nor does
//! a Liquid template (set-body template="liquid"), compiled or rendered.
#![no_main]

use gatehouse_policy::exec::Exchange;
use gatehouse_policy::{expr, liquid_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for src in [format!("@({text})"), format!("@{{{text}}}")] {
            if let Ok(code) = expr::parse(&src) {
                let mut ex = Exchange::default();
                ex.method = "GET".into();
                ex.request_headers.push(("x-a".into(), "1".into()));
                ex.request_body = Some(br#"{"a":[1,{"b":"c"}],"d":"2026-12-07T10:00:00Z"}"#.to_vec());
                let _ = expr::eval_code(&code, &ex);
            }
        }
        if let Ok(t) = liquid_body::compile(text) {
            let body = serde_json::json!({"a": [1, {"b": "c"}], "d": "2026-12-07T10:00:00Z"});
            let _ = liquid_body::render(&t, body, serde_json::json!({"Request": {"Method": "GET"}}));
        }
    }
});
