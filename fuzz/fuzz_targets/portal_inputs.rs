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
        // Text comes out escaped, so every '<' left opens a real tag: none may be a script,
        // carry an event attribute or a javascript: URL.
        for tag in html.split('<').skip(1).map(|t| t.split('>').next().unwrap_or_default()) {
            assert!(!tag.starts_with("script") && !tag.starts_with("style"), "{html}");
            // Attribute names only: quoted values are text.
            let attrs: String = tag
                .split('"')
                .step_by(2)
                .collect::<Vec<_>>()
                .join(" ")
                .replace(['\n', '\t', '/'], " ");
            assert!(
                !attrs.split(' ').any(|a| a.starts_with("on") && a.contains('=')),
                "an event attribute survived: {html}"
            );
            // A URL attribute's scheme (a relative URL may hold "javascript:" in its path).
            for (i, _) in tag.match_indices("=\"") {
                let value = tag[i + 2..].trim_start();
                assert!(!value.starts_with("javascript:"), "a javascript: URL survived: {html}");
            }
        }
    }
    let mut props = serde_json::Map::new();
    for (i, field) in ["title", "permalink", "body", "primaryColor", "contentType", "data"].iter().enumerate() {
        props.insert((*field).into(), serde_json::Value::String(text.chars().skip(i).collect()));
    }
    for kind in ["page", "styles", "blob"] {
        let _ = gatehouse_management::portal_content::check_item(kind, &mut props.clone());
    }
});
