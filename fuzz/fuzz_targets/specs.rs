//! Every API description an import reads never panics: OpenAPI 2/3.0/3.1 (JSON or YAML), WADL,
//! WSDL and GraphQL SDL.
#![no_main]

use gatehouse_management::specs::{SpecKind, import};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for kind in [SpecKind::OpenApi, SpecKind::Wadl, SpecKind::Wsdl, SpecKind::GraphQl] {
        let _ = import(kind, text);
    }
});
