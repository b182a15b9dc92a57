//! SOAP pass-through routing by the request itself: the action a request names (SOAP 1.1's
//! `SOAPAction` header, SOAP 1.2's `action` parameter of the content type), or — when it
//! names none — the first element of its Body, as APIM routes SOAP requests.

use crate::request::RequestHeaders;

/// The largest SOAP body read to find its first element.
pub(crate) const MAX_ROUTING_BODY: usize = 4 << 20;

/// A SOAP request's action: the `SOAPAction` header (quotes removed), else the `action`
/// parameter of its content type.
pub(crate) fn action(headers: &RequestHeaders) -> Option<String> {
    if let Some(a) = headers.get_str("soapaction") {
        return Some(a.trim().trim_matches('"').to_string()).filter(|a| !a.is_empty());
    }
    let ct = headers.get_str("content-type")?;
    ct.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.eq_ignore_ascii_case("action")
            .then(|| v.trim_matches('"').to_string())
    })
}

/// The local name of the first element inside the envelope's Body (`""` when there is none,
/// or the body is not a SOAP envelope).
pub(crate) fn body_element(body: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(body) else {
        return String::new();
    };
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 100_000,
        ..Default::default()
    };
    let Ok(doc) = roxmltree::Document::parse_with_options(text, opts) else {
        return String::new();
    };
    doc.root_element()
        .children()
        .find(|c| c.is_element() && c.tag_name().name() == "Body")
        .and_then(|b| b.children().find(|c| c.is_element()))
        .map(|e| e.tag_name().name().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_its_operation() {
        let soap11 = br#"<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header/><s:Body><m:Add xmlns:m="urn:x"><a>1</a></m:Add></s:Body></s:Envelope>"#;
        assert_eq!(body_element(soap11), "Add");
        assert_eq!(body_element(b"not xml"), "");
        assert_eq!(body_element(b"<Envelope><Header/></Envelope>"), "");
    }
}
