//! Write-time checks of policy documents: well-formed XML, `<policies>` with only APIM's four
//! sections, each at most once; fragments rooted at `<fragment>`. The policy engine (a later
//! crate) compiles them; this module only guarantees that what is stored can be parsed.
//!
//! `rawxml` documents carry C# expressions unescaped (`condition="@(a && b)"`), which is not
//! well-formed XML; `escape_raw_expressions` escapes the inside of `@(…)` and `@{…}` first.

const SECTIONS: &[&str] = &["inbound", "backend", "outbound", "on-error"];

/// Escapes `&`, `<`, `>` and `"` inside policy expressions so the document parses as XML.
pub fn escape_raw_expressions(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '@' && matches!(chars.get(i + 1), Some('(') | Some('{')) {
            let (open, close) = if chars[i + 1] == '(' {
                ('(', ')')
            } else {
                ('{', '}')
            };
            out.push('@');
            out.push(open);
            let mut depth = 1;
            let mut j = i + 2;
            let mut in_str: Option<char> = None;
            while j < chars.len() && depth > 0 {
                let d = chars[j];
                match in_str {
                    Some(q) => {
                        if d == '\\' && j + 1 < chars.len() {
                            push_escaped(&mut out, d);
                            push_escaped(&mut out, chars[j + 1]);
                            j += 2;
                            continue;
                        }
                        if d == q {
                            in_str = None;
                        }
                    }
                    None => {
                        if d == '"' || d == '\'' {
                            in_str = Some(d);
                        } else if d == open {
                            depth += 1;
                        } else if d == close {
                            depth -= 1;
                        }
                    }
                }
                if depth > 0 {
                    push_escaped(&mut out, d);
                }
                j += 1;
            }
            if depth == 0 {
                out.push(close);
            }
            i = j;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        c => out.push(c),
    }
}

fn parse_with<T>(
    value: &str,
    format: &str,
    check: impl FnOnce(&roxmltree::Document) -> Result<T, String>,
) -> Result<T, String> {
    let text = if format.starts_with("rawxml") {
        escape_raw_expressions(value)
    } else {
        value.to_string()
    };
    let doc = roxmltree::Document::parse(&text)
        .map_err(|e| format!("the policy document is not well-formed XML: {e}"))?;
    check(&doc)
}

fn pos(doc: &roxmltree::Document, node: roxmltree::Node) -> String {
    let p = doc.text_pos_at(node.range().start);
    format!("line {}, column {}", p.row, p.col)
}

/// Checks a policy document (any scope).
pub fn check_policy_document(value: &str, format: &str) -> Result<(), String> {
    parse_with(value, format, |doc| {
        let root = doc.root_element();
        if root.tag_name().name() != "policies" {
            return Err(format!(
                "the root element must be <policies>, not <{}> ({})",
                root.tag_name().name(),
                pos(doc, root)
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for child in root.children().filter(|n| n.is_element()) {
            let name = child.tag_name().name();
            if !SECTIONS.contains(&name) {
                return Err(format!(
                    "<{name}> is not a policy section; <policies> may contain only <inbound>, <backend>, <outbound> and <on-error> ({})",
                    pos(doc, child)
                ));
            }
            if seen.contains(&name) {
                return Err(format!(
                    "the section <{name}> appears twice ({})",
                    pos(doc, child)
                ));
            }
            seen.push(name);
        }
        for child in root.children().filter(|n| n.is_text()) {
            if child.text().is_some_and(|t| !t.trim().is_empty()) {
                return Err(format!(
                    "text is not allowed directly inside <policies> ({})",
                    pos(doc, child)
                ));
            }
        }
        Ok(())
    })
}

/// Checks a policy fragment document.
pub fn check_fragment(value: &str, format: &str) -> Result<(), String> {
    parse_with(value, format, |doc| {
        let root = doc.root_element();
        if root.tag_name().name() != "fragment" {
            return Err(format!(
                "the root element of a policy fragment must be <fragment>, not <{}> ({})",
                root.tag_name().name(),
                pos(doc, root)
            ));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn checks_never_panic(doc in "(<|>|@\\(|@\\{|\\)|\\}|\"|'|&|policies|inbound|/| |[a-z]){0,80}") {
            let _ = check_policy_document(&doc, "rawxml");
            let _ = check_policy_document(&doc, "xml");
            let _ = check_fragment(&doc, "rawxml");
        }
    }

    #[test]
    fn policy_documents() {
        let ok = "<policies><inbound><base /></inbound><backend><forward-request /></backend><outbound/><on-error/></policies>";
        assert!(check_policy_document(ok, "xml").is_ok());
        let e = check_policy_document("<policies><inbound></inbound><foo/></policies>", "xml")
            .unwrap_err();
        assert!(
            e.contains("<foo>") && e.contains("line 1, column 30"),
            "{e}"
        );
        assert!(check_policy_document("<policies><inbound/><inbound/></policies>", "xml").is_err());
        assert!(
            check_policy_document("<policies><inbound>", "xml")
                .unwrap_err()
                .contains("not well-formed")
        );
        let raw = r#"<policies><inbound><choose><when condition="@(context.Request.Headers.GetValueOrDefault("a","") == "b" && 1 < 2)"><set-header name="x" exists-action="override"><value>@{ return "<y>"; }</value></set-header></when></choose></inbound></policies>"#;
        assert!(check_policy_document(raw, "xml").is_err());
        assert!(check_policy_document(raw, "rawxml").is_ok());
        assert!(check_fragment("<fragment><set-header name=\"a\"/></fragment>", "xml").is_ok());
        assert!(check_fragment("<policies/>", "xml").is_err());
    }
}
