//! The XML tree `XDocument`/`XElement` work on: read with roxmltree (no DTDs, no external
//! entities), written back with the prefixes and namespace declarations it was read with.

/// A node of an element's content.
#[derive(Debug, Clone, PartialEq)]
pub enum XNode {
    Element(XElem),
    Text(String),
    CData(String),
    Comment(String),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct XElem {
    /// The expanded name: `{namespace}local`, or `local` without a namespace.
    pub name: String,
    /// The prefix the source wrote the name with, kept for writing it back.
    pub prefix: Option<String>,
    /// Attributes by expanded name, namespace declarations (`xmlns`, `xmlns:p`) among them.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<XNode>,
}

/// Most elements one parsed document may hold (the body limit bounds it too).
const MAX_DEPTH: usize = 256;

impl XElem {
    pub fn new(name: impl Into<String>) -> XElem {
        XElem {
            name: name.into(),
            ..XElem::default()
        }
    }

    pub fn local_name(&self) -> &str {
        local(&self.name)
    }

    pub fn namespace(&self) -> &str {
        namespace(&self.name)
    }

    /// `Value`: the text of the element and every descendant, in order.
    pub fn value(&self) -> String {
        let mut out = String::new();
        collect_text(self, &mut out);
        out
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_attribute(&mut self, name: &str, value: Option<String>) {
        let at = self.attrs.iter().position(|(n, _)| n == name);
        match (at, value) {
            (Some(i), Some(v)) => self.attrs[i].1 = v,
            (None, Some(v)) => self.attrs.push((name.to_string(), v)),
            (Some(i), None) => {
                self.attrs.remove(i);
            }
            (None, None) => {}
        }
    }

    /// Child elements, with their indexes among all children.
    pub fn elements(&self) -> impl Iterator<Item = (usize, &XElem)> {
        self.children
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                XNode::Element(e) => Some((i, e)),
                _ => None,
            })
    }
}

fn collect_text(e: &XElem, out: &mut String) {
    for c in &e.children {
        match c {
            XNode::Text(t) | XNode::CData(t) => out.push_str(t),
            XNode::Element(child) => crate::stack::deeper(|| collect_text(child, out)),
            XNode::Comment(_) => {}
        }
    }
}

pub fn local(name: &str) -> &str {
    match name.strip_prefix('{').and_then(|r| r.split_once('}')) {
        Some((_, l)) => l,
        None => name,
    }
}

pub fn namespace(name: &str) -> &str {
    match name.strip_prefix('{').and_then(|r| r.split_once('}')) {
        Some((ns, _)) => ns,
        None => "",
    }
}

/// Parses a document's root element.
pub fn parse(text: &str) -> Result<XElem, String> {
    let doc = roxmltree::Document::parse_with_options(
        text,
        roxmltree::ParsingOptions {
            allow_dtd: false,
            nodes_limit: 1_000_000,
            ..roxmltree::ParsingOptions::default()
        },
    )
    .map_err(|e| format!("the text is not XML: {e}"))?;
    convert(doc.root_element(), 0)
}

fn expanded(ns: Option<&str>, local: &str) -> String {
    match ns {
        Some(ns) if !ns.is_empty() => format!("{{{ns}}}{local}"),
        _ => local.to_string(),
    }
}

fn convert(node: roxmltree::Node, depth: usize) -> Result<XElem, String> {
    if depth > MAX_DEPTH {
        return Err(format!("the XML nests more than {MAX_DEPTH} elements deep"));
    }
    let tag = node.tag_name();
    let mut e = XElem::new(expanded(tag.namespace(), tag.name()));
    e.prefix = tag
        .namespace()
        .and_then(|ns| node.lookup_prefix(ns))
        .filter(|p| !p.is_empty())
        .map(str::to_string);
    for ns in node.namespaces() {
        // Declarations made on this element (not inherited from a parent).
        let inherited = node.parent_element().is_some_and(|p| {
            p.namespaces()
                .any(|n| n.name() == ns.name() && n.uri() == ns.uri())
        });
        if !inherited {
            let name = match ns.name() {
                Some(p) => format!("{{http://www.w3.org/2000/xmlns/}}{p}"),
                None => "xmlns".to_string(),
            };
            e.attrs.push((name, ns.uri().to_string()));
        }
    }
    for a in node.attributes() {
        e.attrs
            .push((expanded(a.namespace(), a.name()), a.value().to_string()));
    }
    for c in node.children() {
        match c.node_type() {
            roxmltree::NodeType::Element => e.children.push(XNode::Element(convert(c, depth + 1)?)),
            roxmltree::NodeType::Text => e
                .children
                .push(XNode::Text(c.text().unwrap_or("").to_string())),
            roxmltree::NodeType::Comment => e
                .children
                .push(XNode::Comment(c.text().unwrap_or("").to_string())),
            _ => {}
        }
    }
    Ok(e)
}

/// Writes an element; `indent` as `XElement.ToString()` does (two spaces, elements with
/// only text kept on one line).
pub fn write(e: &XElem, indent: bool) -> String {
    let mut out = String::new();
    let mut prefixes = Vec::new();
    write_into(e, indent, 0, &mut prefixes, &mut out);
    out
}

fn qualified(name: &str, prefix: Option<&str>, prefixes: &[(String, String)]) -> String {
    let (ns, l) = (namespace(name), local(name));
    if ns.is_empty() {
        return l.to_string();
    }
    if let Some(p) = prefix {
        return format!("{p}:{l}");
    }
    match prefixes.iter().rev().find(|(_, uri)| uri == ns) {
        Some((p, _)) if !p.is_empty() => format!("{p}:{l}"),
        _ => l.to_string(),
    }
}

fn write_into(
    e: &XElem,
    indent: bool,
    level: usize,
    prefixes: &mut Vec<(String, String)>,
    out: &mut String,
) {
    let mark = prefixes.len();
    let mut declared_default = false;
    for (n, v) in &e.attrs {
        if n == "xmlns" {
            prefixes.push((String::new(), v.clone()));
            declared_default = true;
        } else if let Some(p) = n.strip_prefix("{http://www.w3.org/2000/xmlns/}") {
            prefixes.push((p.to_string(), v.clone()));
        }
    }
    let tag = qualified(&e.name, e.prefix.as_deref(), prefixes);
    out.push('<');
    out.push_str(&tag);
    // An element in a namespace nobody declared declares it (as XElement writes it).
    let ns = namespace(&e.name);
    if e.prefix.is_none()
        && !ns.is_empty()
        && !declared_default
        && !prefixes.iter().any(|(_, u)| u == ns)
    {
        out.push_str(&format!(" xmlns=\"{}\"", escape(ns, true)));
        prefixes.push((String::new(), ns.to_string()));
    }
    for (n, v) in &e.attrs {
        let name = if n == "xmlns" {
            n.clone()
        } else if let Some(p) = n.strip_prefix("{http://www.w3.org/2000/xmlns/}") {
            format!("xmlns:{p}")
        } else {
            qualified(n, None, prefixes)
        };
        out.push_str(&format!(" {name}=\"{}\"", escape(v, true)));
    }
    if e.children.is_empty() {
        out.push_str(" />");
        prefixes.truncate(mark);
        return;
    }
    out.push('>');
    let elements_only = e
        .children
        .iter()
        .all(|c| matches!(c, XNode::Element(_) | XNode::Comment(_)));
    for c in &e.children {
        if indent && elements_only {
            out.push('\n');
            out.push_str(&"  ".repeat(level + 1));
        }
        match c {
            XNode::Element(child) => {
                crate::stack::deeper(|| write_into(child, indent, level + 1, prefixes, out))
            }
            XNode::Text(t) => out.push_str(&escape(t, false)),
            XNode::CData(t) => out.push_str(&format!("<![CDATA[{t}]]>")),
            XNode::Comment(t) => out.push_str(&format!("<!--{t}-->")),
        }
    }
    if indent && elements_only {
        out.push('\n');
        out.push_str(&"  ".repeat(level));
    }
    out.push_str(&format!("</{tag}>"));
    prefixes.truncate(mark);
}

pub fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' if attribute => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}
