//! The developer portal's content as resources: APIM's content types and items
//! (`/contentTypes/{type}/contentItems/{item}`) and portal revisions (`/portalRevisions/{id}`).
//!
//! Gatehouse's built-in content types are `page` (Markdown or HTML pages, the home page among
//! them), `styles` (site title, colours, logo, footer) and `blob` (images). They are created at
//! first start (and on the first start of an instance made before the portal existed), and the
//! portal renders what they hold. A revision keeps a copy of every content item as it was when
//! it was published (`content`); the portal shows the current revision's copy, or the items
//! themselves while nothing was published.
//!
//! Invariants: an image is PNG, JPEG, GIF or WebP by its first bytes (not only by what it
//! claims) and at most [`MAX_IMAGE_BYTES`]; a page's permalink is a path of lower-case letters,
//! digits, `-` and `/`; colours are `#rrggbb`. The checks here are pure; `rules` runs them
//! inside the write.

use base64::Engine;
use serde_json::{Map, Value, json};

/// The built-in content types: id, name, description.
pub const BUILT_IN_TYPES: &[(&str, &str, &str)] = &[
    (
        "page",
        "Page",
        "A page of the developer portal: title, permalink, Markdown or HTML body",
    ),
    (
        "styles",
        "Styles",
        "The portal's look: site title, colours, logo and footer",
    ),
    (
        "blob",
        "Image",
        "An image the portal's pages and styles use",
    ),
];

/// The largest image the portal stores.
pub const MAX_IMAGE_BYTES: usize = 1024 * 1024;

/// The image types the portal serves, with the bytes each starts with.
const IMAGE_TYPES: &[(&str, &[u8])] = &[
    ("image/png", b"\x89PNG\r\n\x1a\n"),
    ("image/jpeg", b"\xff\xd8\xff"),
    ("image/gif", b"GIF8"),
    ("image/webp", b"RIFF"),
];

/// What is wrong with a content item: the property and the message.
#[derive(Debug, PartialEq)]
pub struct ContentError {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> ContentError {
    ContentError {
        field,
        message: message.into(),
    }
}

fn text<'a>(props: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    props.get(name).and_then(Value::as_str)
}

/// Checks a content item of one of the built-in types (items of other types are free-form).
pub fn check_item(type_id: &str, props: &mut Map<String, Value>) -> Result<(), ContentError> {
    match type_id {
        "page" => check_page(props),
        "styles" => check_styles(props),
        "blob" => check_image(props),
        _ => Ok(()),
    }
}

fn check_page(props: &mut Map<String, Value>) -> Result<(), ContentError> {
    let title = text(props, "title").unwrap_or_default();
    if title.trim().is_empty() {
        return Err(invalid("title", "'title' is required for a page"));
    }
    let permalink = text(props, "permalink").unwrap_or_default();
    if !permalink.starts_with('/')
        || !permalink
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '/'))
        || permalink.contains("//")
    {
        return Err(invalid(
            "permalink",
            format!(
                "'permalink' must be a path such as '/getting-started' (lower-case letters, digits, '-' and '/'); '{permalink}' is not"
            ),
        ));
    }
    if RESERVED_PATHS
        .iter()
        .any(|r| permalink == *r || permalink.starts_with(&format!("{r}/")))
    {
        return Err(invalid(
            "permalink",
            format!("'{permalink}' is one of the portal's own pages; choose another permalink"),
        ));
    }
    props.entry("format").or_insert(json!("markdown"));
    Ok(())
}

/// Paths the portal serves itself; a page cannot take them.
pub const RESERVED_PATHS: &[&str] = &[
    "/apis",
    "/products",
    "/signin",
    "/signup",
    "/signout",
    "/profile",
    "/subscriptions",
    "/admin",
    "/static",
    "/media",
    "/confirm",
    "/reset",
    "/try",
    "/oidc",
];

fn check_colour(props: &Map<String, Value>, field: &'static str) -> Result<(), ContentError> {
    let Some(c) = text(props, field) else {
        return Ok(());
    };
    let ok = c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|h| h.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("'{field}' must be a colour such as '#0b5cad'; '{c}' is not"),
        ))
    }
}

fn check_styles(props: &mut Map<String, Value>) -> Result<(), ContentError> {
    check_colour(props, "primaryColor")?;
    check_colour(props, "accentColor")
}

/// The image's bytes, checked: its declared type is one the portal serves and its first bytes
/// say the same.
pub fn image_bytes(props: &Map<String, Value>) -> Result<(&str, Vec<u8>), ContentError> {
    let declared = text(props, "contentType").unwrap_or_default();
    let Some((_, magic)) = IMAGE_TYPES.iter().find(|(t, _)| *t == declared) else {
        return Err(invalid(
            "contentType",
            format!(
                "'contentType' must be one of image/png, image/jpeg, image/gif, image/webp; '{declared}' is not"
            ),
        ));
    };
    let data = base64::engine::general_purpose::STANDARD
        .decode(text(props, "data").unwrap_or_default())
        .map_err(|e| invalid("data", format!("'data' is not valid base64: {e}")))?;
    if data.len() > MAX_IMAGE_BYTES {
        return Err(invalid(
            "data",
            format!(
                "the image is {} bytes; the largest allowed is {MAX_IMAGE_BYTES}",
                data.len()
            ),
        ));
    }
    let webp_ok = declared != "image/webp" || data.get(8..12) == Some(b"WEBP");
    if !data.starts_with(magic) || !webp_ok {
        return Err(invalid(
            "data",
            format!("the data is not a {declared} image (its first bytes say otherwise)"),
        ));
    }
    Ok((declared, data))
}

fn check_image(props: &mut Map<String, Value>) -> Result<(), ContentError> {
    image_bytes(props).map(|_| ())
}

/// The content items a new instance starts with: a home page and the default styles.
pub fn default_items() -> Vec<(&'static str, &'static str, Map<String, Value>)> {
    let home = json!({
        "title": "Home",
        "permalink": "/",
        "format": "markdown",
        "body": "# Welcome\n\nFind the APIs you need, subscribe to a product and try its operations with your own key.\n\n[Browse the APIs](/apis) · [See the products](/products)",
    });
    let styles = json!({
        "siteTitle": "Developer portal",
        "primaryColor": "#0b5cad",
        "accentColor": "#e8f0fb",
        "footer": "Served by Gatehouse",
    });
    let as_map = |v: Value| match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    vec![
        ("page", "home", as_map(home)),
        ("styles", "default", as_map(styles)),
    ]
}

/// The key a content item has in a revision's `content`: `type/item`.
pub fn content_key(type_id: &str, item_id: &str) -> String {
    format!("{type_id}/{item_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn pages_need_a_title_and_a_plain_permalink() {
        let mut ok = map(json!({"title": "Start", "permalink": "/getting-started"}));
        assert_eq!(check_item("page", &mut ok), Ok(()));
        assert_eq!(ok["format"], json!("markdown"));
        let mut bad = map(json!({"title": "x", "permalink": "/a b"}));
        assert_eq!(check_item("page", &mut bad).unwrap_err().field, "permalink");
        let mut reserved = map(json!({"title": "x", "permalink": "/apis/foo"}));
        assert_eq!(
            check_item("page", &mut reserved).unwrap_err().field,
            "permalink"
        );
        let mut untitled = map(json!({"permalink": "/x"}));
        assert_eq!(
            check_item("page", &mut untitled).unwrap_err().field,
            "title"
        );
    }

    #[test]
    fn images_are_checked_by_their_bytes_and_size() {
        let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\nrest");
        let mut ok = map(json!({"contentType": "image/png", "data": png}));
        assert_eq!(check_item("blob", &mut ok), Ok(()));
        let html = base64::engine::general_purpose::STANDARD.encode(b"<svg onload=alert(1)>");
        let mut liar = map(json!({"contentType": "image/png", "data": html}));
        assert_eq!(check_item("blob", &mut liar).unwrap_err().field, "data");
        let mut svg = map(json!({"contentType": "image/svg+xml", "data": html}));
        assert_eq!(
            check_item("blob", &mut svg).unwrap_err().field,
            "contentType"
        );
        let big = vec![0x89u8; MAX_IMAGE_BYTES + 1];
        let mut huge = map(json!({"contentType": "image/png",
            "data": base64::engine::general_purpose::STANDARD.encode(big)}));
        assert!(
            check_item("blob", &mut huge)
                .unwrap_err()
                .message
                .contains("largest")
        );
    }

    #[test]
    fn colours_are_hex() {
        let mut bad = map(json!({"primaryColor": "red"}));
        assert_eq!(
            check_item("styles", &mut bad).unwrap_err().field,
            "primaryColor"
        );
        let mut ok = map(json!({"primaryColor": "#A0b1C2"}));
        assert_eq!(check_item("styles", &mut ok), Ok(()));
    }
}
