//! What compiling a policy element needs: reading its attributes and children with their
//! types, named values substituted, expressions parsed, positions for errors — the [`Ctx`]
//! every policy module's parser gets — and the limits on a document's size and nesting.
//!
//! Invariants: every error names the line and column of the element at fault and never quotes
//! a named value's value (it may be a secret); nesting and the number of policies are bounded
//! ([`MAX_POLICY_NESTING`], [`MAX_POLICIES`]), and each nested level is compiled on enough
//! stack ([`crate::stack`]).

use crate::exchange::ExistsAction;
use crate::expr::{self, Code, Text};
use crate::node::{Node, Num, Policy};
use crate::position::{Pos, Section};
use std::sync::Arc;

/// Decodes XML's predefined and numeric character entities; anything else is kept as written.
pub fn decode_entities(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('&') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let entity = tail.find(';').filter(|e| *e <= 10).map(|e| &tail[1..e]);
        let decoded = entity.and_then(|e| match e {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            n if n.starts_with("#x") || n.starts_with("#X") => u32::from_str_radix(&n[2..], 16)
                .ok()
                .and_then(char::from_u32),
            n if n.starts_with('#') => n[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        });
        match (decoded, entity) {
            (Some(c), Some(e)) => {
                out.push(c);
                rest = &tail[e.len() + 2..];
            }
            _ => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// A policy document error: where and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} ({pos})")]
pub struct PolicyError {
    pub pos: Pos,
    pub message: String,
}

pub type Res<T> = Result<T, PolicyError>;

/// An element of the document being compiled.
pub type XNode<'a> = roxmltree::Node<'a, 'a>;

/// A policy module's parser: the element (in `section`) → the policy.
pub type Parse = for<'a, 'd> fn(&mut Ctx<'a, 'd>, XNode<'a>, Section) -> Res<Box<dyn Policy>>;

/// Compiles one element into `out` (a policy, `<base/>`, or a fragment's policies). The
/// document parser's own, handed to the context so that a policy holding others (choose,
/// retry, …) compiles them without this layer knowing every policy.
pub type CompileOne =
    for<'a, 'd> fn(&mut Ctx<'a, 'd>, XNode<'a>, Section, &mut Vec<Node>) -> Res<()>;

/// What a document may refer to outside itself.
pub trait Resolver {
    /// The value of a named value by its name or display name.
    fn named_value(&self, name: &str) -> Option<String>;
    /// A fragment's document and its format (`xml` or `rawxml`), as stored.
    fn fragment(&self, id: &str) -> Option<(String, String)>;
}

/// A resolver with nothing: any `{{name}}` or fragment is an error.
pub struct NoResolver;

impl Resolver for NoResolver {
    fn named_value(&self, _: &str) -> Option<String> {
        None
    }
    fn fragment(&self, _: &str) -> Option<(String, String)> {
        None
    }
}

/// How deeply policies may nest inside each other (`<choose>` in `<when>`, `<retry>`,
/// `<limit-concurrency>`, fragments included), counting the section as the first level.
/// Compiling and running a document recurse once per level.
pub const MAX_POLICY_NESTING: usize = 32;

/// How many policies one document may hold once its fragments are included: a fragment
/// included in a fragment included … multiplies, and this keeps the compiled document small.
pub const MAX_POLICIES: usize = 10_000;

/// How deeply fragments may include each other.
pub const MAX_FRAGMENT_DEPTH: u32 = 8;

/// Where each line of a document starts, so that a node's line and column are found by a
/// binary search instead of a scan from the document's start for every policy.
pub struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub fn of(text: &str) -> Lines {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { starts }
    }

    /// The 1-based line and column (in characters) of a byte offset, as roxmltree counts them.
    fn pos(&self, text: &str, offset: usize) -> Pos {
        let line = self.starts.partition_point(|start| *start <= offset);
        let start = self.starts[line.saturating_sub(1)];
        let column = text.get(start..offset).map_or(0, |s| s.chars().count()) + 1;
        Pos {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }
}

/// The state of compiling one document (a fragment included has its own, sharing the budget).
pub struct Ctx<'a, 'd> {
    pub doc: &'d roxmltree::Document<'a>,
    pub lines: Lines,
    pub resolver: &'d dyn Resolver,
    /// Whether some expression or policy reads a message body.
    pub reads_body: bool,
    /// Fragments being included around this document.
    pub fragment_depth: u32,
    /// Policy levels around the node being compiled (see [`MAX_POLICY_NESTING`]).
    pub nesting: usize,
    /// Policies still allowed in the whole document, fragments included (see [`MAX_POLICIES`]).
    pub budget: &'d std::cell::Cell<usize>,
    pub compile_one: CompileOne,
}

impl<'a, 'd> Ctx<'a, 'd> {
    pub fn pos(&self, node: roxmltree::Node) -> Pos {
        self.lines.pos(self.doc.input_text(), node.range().start)
    }

    pub fn err<T>(&self, node: roxmltree::Node, msg: impl Into<String>) -> Res<T> {
        Err(PolicyError {
            pos: self.pos(node),
            message: msg.into(),
        })
    }

    /// Substitutes `{{name}}` with named values.
    pub fn substitute(&self, node: roxmltree::Node, s: &str) -> Res<String> {
        if !s.contains("{{") {
            return Ok(s.to_string());
        }
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("{{") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(j) = after.find("}}") else {
                out.push_str(&rest[i..]);
                return Ok(out);
            };
            let name = after[..j].trim();
            // APIM puts named values into the document before reading it as XML, so an
            // entity in one (`&lt;=` in an expression) is read as its character.
            match self.resolver.named_value(name) {
                Some(v) => out.push_str(&decode_entities(&v)),
                None => {
                    return self.err(node, format!("the named value '{name}' does not exist"));
                }
            }
            rest = &after[j + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    pub fn text_value(&mut self, node: roxmltree::Node, raw: &str) -> Res<Text> {
        let s = self.substitute(node, raw)?;
        if expr::is_expression(&s) {
            let code = expr::parse(&s).map_err(|e| {
                // Named values may be secrets: the message quotes the text as written, and
                // a position only when nothing was substituted.
                let message = if s == raw {
                    format!("the expression {} does not parse: {e}", abbreviate(raw))
                } else {
                    format!(
                        "the expression {} does not parse once its named values are substituted: {}",
                        abbreviate(raw),
                        e.message
                    )
                };
                PolicyError {
                    pos: self.pos(node),
                    message,
                }
            })?;
            if code.reads_body() {
                self.reads_body = true;
            }
            Ok(Text::Expr(Arc::new(code)))
        } else {
            Ok(Text::Lit(s))
        }
    }

    pub fn code(&mut self, node: roxmltree::Node, raw: &str) -> Res<Arc<Code>> {
        match self.text_value(node, raw)? {
            Text::Expr(c) => Ok(c),
            Text::Lit(l) => match l.trim() {
                "true" | "True" => Ok(Arc::new(Code::literal(expr::V::Bool(true)))),
                "false" | "False" => Ok(Arc::new(Code::literal(expr::V::Bool(false)))),
                _ => self.err(
                    node,
                    format!(
                        "a condition must be an expression @(…), not '{}'",
                        abbreviate(&l)
                    ),
                ),
            },
        }
    }

    pub fn attr_text(&mut self, node: roxmltree::Node, name: &str) -> Res<Option<Text>> {
        match node.attribute(name) {
            Some(v) => Ok(Some(self.text_value(node, v)?)),
            None => Ok(None),
        }
    }

    pub fn required(&mut self, node: roxmltree::Node, name: &str) -> Res<Text> {
        match self.attr_text(node, name)? {
            Some(t) => Ok(t),
            None => self.err(
                node,
                format!("<{}> needs the attribute '{name}'", node.tag_name().name()),
            ),
        }
    }

    pub fn literal(&self, node: roxmltree::Node, name: &str) -> Res<Option<String>> {
        match node.attribute(name) {
            None => Ok(None),
            Some(v) => {
                let s = self.substitute(node, v)?;
                if expr::is_expression(&s) {
                    return self.err(
                        node,
                        format!(
                            "the attribute '{name}' of <{}> does not take an expression",
                            node.tag_name().name()
                        ),
                    );
                }
                Ok(Some(s))
            }
        }
    }

    pub fn number(
        &self,
        node: roxmltree::Node,
        name: &str,
        default: Option<u64>,
        max: u64,
    ) -> Res<u64> {
        match self.literal(node, name)? {
            None => match default {
                Some(d) => Ok(d),
                None => self.err(
                    node,
                    format!("<{}> needs the attribute '{name}'", node.tag_name().name()),
                ),
            },
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                Ok(n) => self.err(node, format!("'{name}' must be at most {max}, not {n}")),
                Err(_) => self.err(node, format!("'{name}' must be a whole number, not '{v}'")),
            },
        }
    }

    /// A whole number where APIM allows a policy expression too (`duration`, `timeout`,
    /// `count`, …): a literal is checked now, an expression when it runs.
    pub fn number_or_expr(
        &mut self,
        node: roxmltree::Node,
        name: &'static str,
        default: Option<u64>,
        max: u64,
    ) -> Res<Num> {
        let substituted = match node.attribute(name) {
            Some(v) => Some(self.substitute(node, v)?),
            None => None,
        };
        match substituted {
            Some(s) if expr::is_expression(&s) => {
                let raw = node.attribute(name).unwrap_or_default();
                let code = self.code(node, raw)?;
                Ok(Num::Expr { code, name, max })
            }
            _ => self.number(node, name, default, max).map(Num::Lit),
        }
    }

    pub fn boolean(&self, node: roxmltree::Node, name: &str, default: bool) -> Res<bool> {
        match self.literal(node, name)? {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => self.err(node, format!("'{name}' must be true or false, not '{v}'")),
            },
        }
    }

    pub fn check_attrs(&self, node: roxmltree::Node, allowed: &[&str]) -> Res<()> {
        for a in node.attributes() {
            if a.name() != "id" && !allowed.contains(&a.name()) {
                return self.err(
                    node,
                    format!(
                        "<{}> has no attribute '{}'",
                        node.tag_name().name(),
                        a.name()
                    ),
                );
            }
        }
        Ok(())
    }

    pub fn children(&self, node: XNode<'a>) -> Res<Vec<XNode<'a>>> {
        let mut out = Vec::new();
        for c in node.children() {
            if c.is_element() {
                out.push(c);
            } else if c.is_text() && c.text().is_some_and(|t| !t.trim().is_empty()) {
                return self.err(
                    c,
                    format!("text is not allowed inside <{}>", node.tag_name().name()),
                );
            }
        }
        Ok(out)
    }

    pub fn element_text(&self, node: roxmltree::Node) -> String {
        node.children()
            .filter(|c| c.is_text())
            .filter_map(|c| c.text())
            .collect::<String>()
            .trim()
            .to_string()
    }

    pub fn exists_action(&self, node: roxmltree::Node) -> Res<ExistsAction> {
        match self.literal(node, "exists-action")?.as_deref() {
            None | Some("override") => Ok(ExistsAction::Override),
            Some("skip") => Ok(ExistsAction::Skip),
            Some("append") => Ok(ExistsAction::Append),
            Some("delete") => Ok(ExistsAction::Delete),
            Some(o) => self.err(
                node,
                format!("'exists-action' must be override, skip, append or delete, not '{o}'"),
            ),
        }
    }

    pub fn values(&mut self, node: XNode<'a>) -> Res<Vec<Text>> {
        let mut out = Vec::new();
        for c in self.children(node)? {
            if c.tag_name().name() != "value" {
                return self.err(
                    c,
                    format!(
                        "<{}> may contain only <value> elements",
                        node.tag_name().name()
                    ),
                );
            }
            let t = self.element_text(c);
            out.push(self.text_value(c, &t)?);
        }
        Ok(out)
    }

    pub fn policies(
        &mut self,
        parent: XNode<'a>,
        section: Section,
        out: &mut Vec<Node>,
    ) -> Res<()> {
        if self.nesting >= MAX_POLICY_NESTING {
            return self.err(
                parent,
                format!(
                    "policies nest more than {MAX_POLICY_NESTING} levels deep here (<choose>, <retry>, <limit-concurrency> or fragments inside each other)"
                ),
            );
        }
        self.nesting += 1;
        let result = crate::stack::deeper(|| {
            self.children(parent).and_then(|children| {
                children
                    .into_iter()
                    .try_for_each(|c| (self.compile_one)(self, c, section, out))
            })
        });
        self.nesting -= 1;
        result
    }

    /// Takes one policy from the document's budget.
    pub fn count_policy(&self, node: roxmltree::Node) -> Res<()> {
        match self.budget.get().checked_sub(1) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => self.err(
                node,
                format!(
                    "the policy document holds more than {MAX_POLICIES} policies once its fragments are included"
                ),
            ),
        }
    }

    /// The document's root must be `<name>`.
    pub fn expect_root(&self, root: roxmltree::Node, name: &str, of: &str) -> Res<()> {
        if root.tag_name().name() == name {
            return Ok(());
        }
        self.err(
            root,
            format!(
                "the root element{of} must be <{name}>, not <{}>",
                root.tag_name().name()
            ),
        )
    }

    pub fn allowed_in(
        &self,
        node: roxmltree::Node,
        section: Section,
        sections: &[Section],
    ) -> Res<()> {
        if sections.contains(&section) {
            return Ok(());
        }
        self.err(
            node,
            format!(
                "the policy '{}' is not allowed in <{}>; APIM allows it in {}",
                node.tag_name().name(),
                section.name(),
                sections
                    .iter()
                    .map(|s| format!("<{}>", s.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    }

    /// Compiles one element as a policy of `section` into `out` (return-response's steps).
    pub fn compile(&mut self, node: XNode<'a>, section: Section, out: &mut Vec<Node>) -> Res<()> {
        (self.compile_one)(self, node, section, out)
    }

    /// The policies inside `node`, as a nested level of `section`.
    pub fn nested(&mut self, node: XNode<'a>, section: Section) -> Res<Vec<Node>> {
        let mut out = Vec::new();
        self.policies(node, section, &mut out)?;
        Ok(out)
    }

    /// A required literal attribute that may not be empty.
    pub fn name_attr(&self, node: roxmltree::Node, name: &str) -> Res<String> {
        match self.literal(node, name)?.filter(|v| !v.is_empty()) {
            Some(v) => Ok(v),
            None => self.err(
                node,
                format!("<{}> needs the attribute '{name}'", node.tag_name().name()),
            ),
        }
    }

    /// A literal attribute that must be one of `choices` (the first when absent).
    pub fn choice(
        &self,
        node: roxmltree::Node,
        name: &str,
        choices: &[&'static str],
    ) -> Res<&'static str> {
        let Some(v) = self.literal(node, name)? else {
            return Ok(choices[0]);
        };
        match choices.iter().find(|c| **c == v) {
            Some(c) => Ok(c),
            None => self.err(
                node,
                format!("'{name}' must be {}, not '{v}'", or_list(choices)),
            ),
        }
    }

    /// The text of each child element named `item` (named values substituted).
    pub fn item_texts(&self, node: XNode<'a>, item: &str) -> Res<Vec<String>> {
        let mut out = Vec::new();
        for c in self.children(node)? {
            if c.tag_name().name() != item {
                return self.err(
                    c,
                    format!(
                        "<{}> may contain only <{item}> elements",
                        node.tag_name().name()
                    ),
                );
            }
            out.push(self.substitute(c, &self.element_text(c))?);
        }
        Ok(out)
    }
}

/// `a, b or c`.
fn or_list(choices: &[&str]) -> String {
    match choices {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

pub fn abbreviate(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}
