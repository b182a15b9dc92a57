//! Text an administrator writes (pages, descriptions) → HTML safe to put in a page.
//!
//! Invariant: whatever goes in, what comes out has passed `ammonia`'s allow-list — no
//! scripts, no event attributes, no `javascript:` URLs, no styles — so a page can only hold
//! what its author could write in Markdown.

use pulldown_cmark::{Options, Parser, html};

/// Markdown (or HTML, when `format` is `html`) as sanitised HTML.
pub fn to_safe_html(text: &str, format: &str) -> String {
    let raw = if format == "html" {
        text.to_string()
    } else {
        let mut out = String::with_capacity(text.len() * 2);
        let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
        html::push_html(&mut out, Parser::new_ext(text, opts));
        out
    };
    ammonia::Builder::default()
        .link_rel(Some("noopener noreferrer"))
        .clean(&raw)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_renders_and_scripts_do_not() {
        let html = to_safe_html(
            "# Hi\n\n**b** [x](javascript:alert(1))\n\n<script>alert(1)</script>",
            "markdown",
        );
        assert!(html.contains("<h1>Hi</h1>"));
        assert!(html.contains("<strong>b</strong>"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("javascript:"));
    }

    #[test]
    fn html_loses_its_event_handlers() {
        let html = to_safe_html(
            "<p onclick=\"x()\">t</p><img src=x onerror=alert(1)>",
            "html",
        );
        assert!(html.contains("<p>t</p>"));
        assert!(!html.contains("onerror") && !html.contains("onclick"));
    }
}
