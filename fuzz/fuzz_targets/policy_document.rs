//! The policy XML parser never panics, whatever the document, in either format.
#![no_main]

use gatehouse_policy::doc::{NoResolver, check_fragment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = gatehouse_policy::parse_document(text, "rawxml", &NoResolver);
        let _ = gatehouse_policy::parse_document(text, "xml", &NoResolver);
        let _ = check_fragment(text, "rawxml", &NoResolver);
    }
});
