//! What the developer portal reads from visitors and administrators never panics, and what it
//! renders from an administrator's text never holds a script: session and email-link tokens,
//! the sign-in flow cookie, cookie headers, Markdown and HTML pages, content items.
#![no_main]

use gatehouse_portal::{markdown, oidc, secret::PortalKey, session};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static KEY: LazyLock<PortalKey> = LazyLock::new(PortalKey::random);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for purpose in ["session", "confirm", "reset"] {
        let _ = session::read_token(&KEY, purpose, text, 0);
    }
    let _ = oidc::open_flow(&KEY, text, 0);
    if let Ok(v) = axum::http::HeaderValue::from_str(text) {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, v);
        let _ = session::cookies(&headers);
    }
    for format in ["markdown", "html"] {
        let html = markdown::to_safe_html(text, format).to_ascii_lowercase();
        assert!(!html.contains("<script"), "a script survived: {html}");
        assert!(!html.contains(" onerror=") && !html.contains(" onload="), "{html}");
    }
    let mut props = serde_json::Map::new();
    for (i, field) in ["title", "permalink", "body", "primaryColor", "contentType", "data"].iter().enumerate() {
        props.insert((*field).into(), serde_json::Value::String(text.chars().skip(i).collect()));
    }
    for kind in ["page", "styles", "blob"] {
        let _ = gatehouse_management::portal_content::check_item(kind, &mut props.clone());
    }
});
