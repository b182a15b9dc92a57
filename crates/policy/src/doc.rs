//! Policy XML → a compiled [`Document`]: the document's and fragments' structure (sections,
//! `<base/>`, `<include-fragment>`), each element compiled by its policy's parser
//! ([`crate::policies::TABLE`]) with named values substituted and expressions parsed.
//!
//! Invariants: every element must be a policy this engine runs, in a section APIM allows it
//! in, with attributes of the right type — anything else is a [`PolicyError`] with its line
//! and column; a policy APIM has and Gatehouse does not run is refused by name, never skipped.

use crate::compile::{Ctx, Lines, MAX_FRAGMENT_DEPTH, Res, XNode};
pub use crate::compile::{MAX_POLICIES, MAX_POLICY_NESTING, NoResolver, PolicyError, Resolver};
pub use crate::exchange::ExistsAction;
pub use crate::expr::Text;
pub use crate::node::{Document, Kind, Node, Policy};
use crate::policies;
pub use crate::position::{Pos, Section};

/// Compiles one element of `section` into `out`: `<base/>`, a fragment's policies, or a
/// policy from the table.
fn compile_one<'a>(
    cx: &mut Ctx<'a, '_>,
    el: XNode<'a>,
    section: Section,
    out: &mut Vec<Node>,
) -> Res<()> {
    let name = el.tag_name().name();
    cx.count_policy(el)?;
    let (name, kind) = match name {
        "base" => {
            cx.check_attrs(el, &[])?;
            ("base", Kind::Base)
        }
        "include-fragment" => return include_fragment(cx, el, section, out),
        _ => match policies::find(name) {
            Some((name, parse)) => (name, Kind::Policy(parse(cx, el, section)?)),
            None if policies::KNOWN_UNSUPPORTED.contains(&name) => {
                return cx.err(el, format!("policy '{name}' is not supported"));
            }
            None => return cx.err(el, format!("<{name}> is not a policy")),
        },
    };
    out.push(Node {
        pos: cx.pos(el),
        name,
        id: el.attribute("id").map(str::to_string),
        kind,
    });
    Ok(())
}

/// `<include-fragment>`: the fragment's policies, compiled here, in place of the element.
fn include_fragment<'a>(
    cx: &mut Ctx<'a, '_>,
    el: XNode<'a>,
    section: Section,
    out: &mut Vec<Node>,
) -> Res<()> {
    cx.check_attrs(el, &["fragment-id"])?;
    let id = cx.literal(el, "fragment-id")?.unwrap_or_default();
    let Some((xml, format)) = cx.resolver.fragment(&id) else {
        return cx.err(el, format!("the policy fragment '{id}' does not exist"));
    };
    if cx.fragment_depth >= MAX_FRAGMENT_DEPTH {
        return cx.err(
            el,
            format!(
                "fragments include each other more than {MAX_FRAGMENT_DEPTH} levels deep (a cycle?)"
            ),
        );
    }
    let around = Around {
        fragment_depth: cx.fragment_depth + 1,
        nesting: cx.nesting,
        budget: cx.budget,
    };
    let (nodes, reads_body) = parse_fragment_with(&xml, &format, section, cx.resolver, around)
        .map_err(|e| PolicyError {
            pos: cx.pos(el),
            message: format!("in the fragment '{id}': {e}"),
        })?;
    cx.reads_body |= reads_body;
    out.extend(nodes);
    Ok(())
}

/// Escapes `&`, `<`, `>` and `"` inside `@(…)` and `@{…}` so a rawxml document parses as XML.
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

/// The inverse of [`escape_raw_expressions`]: turns a document stored as `xml` into its
/// `rawxml` form, with the entities inside `@(…)` and `@{…}` written as the characters they
/// stand for (what APIM answers for `format=rawxml`, and what APIOps keeps in `policy.xml`).
pub fn unescape_xml_expressions(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(at) = rest.find("@(").into_iter().chain(rest.find("@{")).min() {
        out.push_str(&rest[..at]);
        let (open, close) = if rest[at + 1..].starts_with('(') {
            ('(', ')')
        } else {
            ('{', '}')
        };
        out.push('@');
        out.push(open);
        rest = &rest[at + 2..];
        let mut depth = 1;
        let mut in_str: Option<char> = None;
        let mut escaped = false;
        while depth > 0 {
            let Some((d, len)) = decode_one(rest) else {
                break;
            };
            rest = &rest[len..];
            match in_str {
                Some(_) if escaped => escaped = false,
                Some(_) if d == '\\' => escaped = true,
                Some(q) if d == q => in_str = None,
                Some(_) => {}
                None if d == '"' || d == '\'' => in_str = Some(d),
                None if d == open => depth += 1,
                None if d == close => depth -= 1,
                None => {}
            }
            out.push(d);
        }
    }
    out.push_str(rest);
    out
}

/// How a document in APIM's raw form (a `policy.xml` of APIOps) is best stored: `xml` when the
/// text is well-formed XML whose expressions hold no entity (then both readings agree and the
/// text is kept as it is), `rawxml` otherwise.
pub fn stored_format_of_raw(raw: &str) -> &'static str {
    if unescape_xml_expressions(raw) == raw && roxmltree::Document::parse(raw).is_ok() {
        "xml"
    } else {
        "rawxml"
    }
}

/// The first character of `s`, decoding one XML entity; with the bytes it took.
fn decode_one(s: &str) -> Option<(char, usize)> {
    for (entity, c) in [
        ("&amp;", '&'),
        ("&lt;", '<'),
        ("&gt;", '>'),
        ("&quot;", '"'),
        ("&apos;", '\''),
    ] {
        if s.starts_with(entity) {
            return Some((c, entity.len()));
        }
    }
    s.chars().next().map(|c| (c, c.len_utf8()))
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

fn xml_of(value: &str, format: &str) -> String {
    let value = tolerate_comments(value);
    if format.starts_with("rawxml") {
        escape_raw_expressions(&value)
    } else {
        value.into_owned()
    }
}

/// APIM accepts comments that XML does not (`<!-- a -- b -->`, `<!-- x --->`): their `--`
/// become `- ` — the same length, so positions in errors stay true — and the comments are
/// dropped as any comment is.
fn tolerate_comments(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains("<!--") {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start + 4]);
        let body_and_rest = &rest[start + 4..];
        let Some(end) = body_and_rest.find("-->") else {
            out.push_str(body_and_rest);
            return std::borrow::Cow::Owned(out);
        };
        let mut body = body_and_rest[..end].replace("--", "- ");
        if body.ends_with('-') {
            body.pop();
            body.push(' ');
        }
        out.push_str(&body);
        out.push_str("-->");
        rest = &body_and_rest[end + 3..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

fn not_xml(e: roxmltree::Error) -> PolicyError {
    let p = e.pos();
    PolicyError {
        pos: Pos {
            line: p.row,
            column: p.col,
        },
        message: format!("the policy document is not well-formed XML: {e}"),
    }
}

/// Parses a policy document (`<policies>`), as stored in `format` (`xml` or `rawxml`).
pub fn parse_document(
    value: &str,
    format: &str,
    resolver: &dyn Resolver,
) -> Result<Document, PolicyError> {
    let text = xml_of(value, format);
    let doc = roxmltree::Document::parse(&text).map_err(not_xml)?;
    let budget = std::cell::Cell::new(MAX_POLICIES);
    let mut ctx = Ctx {
        doc: &doc,
        lines: Lines::of(&text),
        resolver,
        reads_body: false,
        fragment_depth: 0,
        nesting: 0,
        budget: &budget,
        compile_one,
    };
    let root = doc.root_element();
    ctx.expect_root(root, "policies", "")?;
    let mut out = Document::default();
    for child in ctx.children(root)? {
        let name = child.tag_name().name();
        let Some(section) = Section::of(name) else {
            return ctx.err(child, format!("<{name}> is not a policy section; <policies> may contain only <inbound>, <backend>, <outbound> and <on-error>"));
        };
        if out.sections[section as usize].is_some() {
            return ctx.err(child, format!("the section <{name}> appears twice"));
        }
        let mut nodes = Vec::new();
        ctx.policies(child, section, &mut nodes)?;
        if nodes.iter().filter(|n| n.is_base()).count() > 1 {
            return ctx.err(child, format!("<base/> appears more than once in <{name}>"));
        }
        out.sections[section as usize] = Some(nodes);
    }
    out.reads_body = ctx.reads_body;
    Ok(out)
}

/// Where a fragment is being compiled: inside how many fragments and policy levels, and the
/// including document's policy budget.
struct Around<'d> {
    fragment_depth: u32,
    nesting: usize,
    budget: &'d std::cell::Cell<usize>,
}

fn parse_fragment_with(
    value: &str,
    format: &str,
    section: Section,
    resolver: &dyn Resolver,
    around: Around<'_>,
) -> Result<(Vec<Node>, bool), PolicyError> {
    let text = xml_of(value, format);
    let doc = roxmltree::Document::parse(&text).map_err(not_xml)?;
    let mut ctx = Ctx {
        doc: &doc,
        lines: Lines::of(&text),
        resolver,
        reads_body: false,
        fragment_depth: around.fragment_depth,
        nesting: around.nesting,
        budget: around.budget,
        compile_one,
    };
    let root = doc.root_element();
    ctx.expect_root(root, "fragment", " of a policy fragment")?;
    let mut nodes = Vec::new();
    ctx.policies(root, section, &mut nodes)?;
    if nodes.iter().any(Node::is_base) {
        return ctx.err(root, "<base/> is not allowed in a policy fragment");
    }
    Ok((nodes, ctx.reads_body))
}

/// Checks a policy fragment (`<fragment>`). Its policies are checked as if in `<inbound>` for
/// element and attribute types; where it may be included is checked when a policy includes it.
pub fn check_fragment(
    value: &str,
    format: &str,
    resolver: &dyn Resolver,
) -> Result<(), PolicyError> {
    // Any section will do for the types; try them in turn so a backend-only fragment passes.
    let mut last = None;
    for s in Section::ALL {
        let budget = std::cell::Cell::new(MAX_POLICIES);
        let around = Around {
            fragment_depth: 0,
            nesting: 0,
            budget: &budget,
        };
        match parse_fragment_with(value, format, s, resolver, around) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("four sections tried"))
}

#[cfg(test)]
mod tests {
    use super::{escape_raw_expressions, stored_format_of_raw, unescape_xml_expressions};
    use proptest::prelude::*;

    #[test]
    fn a_stored_xml_document_turns_raw_and_back() {
        let xml = r#"<policies><inbound><choose><when condition="@(context.Variables.GetValueOrDefault&lt;string&gt;(&quot;a&quot;) == &quot;b&quot; &amp;&amp; 1 &lt; 2)"><set-body>@{ return "x &lt; \"y\""; }</set-body></when></choose></inbound></policies>"#;
        let raw = unescape_xml_expressions(xml);
        assert!(
            raw.contains(r#"GetValueOrDefault<string>("a") == "b" && 1 < 2)"#),
            "{raw}"
        );
        assert!(raw.contains(r#"return "x < \"y\""; }"#), "{raw}");
        assert_eq!(stored_format_of_raw(&raw), "rawxml");
        let plain = "<policies><inbound><set-header name=\"a\"><value>@(\"b\")</value></set-header></inbound></policies>";
        assert_eq!(unescape_xml_expressions(plain), plain);
        assert_eq!(stored_format_of_raw(plain), "xml");
    }

    proptest! {
        #[test]
        fn unescaping_undoes_escaping(raw in r#"[a-z<>&"'\\(){}@ ;=]{0,40}"#) {
            prop_assert_eq!(unescape_xml_expressions(&escape_raw_expressions(&raw)), raw);
        }
    }
}
