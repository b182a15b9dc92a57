//! Policy XML → typed policies. Every element must be a policy this engine runs, in a section
//! APIM allows it in, with attributes of the right type; expressions are parsed here; named
//! values (`{{name}}`) are substituted here, and fragments included.

pub use crate::expr::Text;
use crate::expr::{self, Code};
pub use crate::jwt::{InlineKey, Jwt, RequiredClaim, TokenSource};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// Where in the document something is (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A policy document error: where and why.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyError {
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.pos)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    Inbound,
    Backend,
    Outbound,
    OnError,
}

impl Section {
    pub const ALL: [Section; 4] = [
        Section::Inbound,
        Section::Backend,
        Section::Outbound,
        Section::OnError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Section::Inbound => "inbound",
            Section::Backend => "backend",
            Section::Outbound => "outbound",
            Section::OnError => "on-error",
        }
    }

    fn of(name: &str) -> Option<Section> {
        Section::ALL.into_iter().find(|s| s.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistsAction {
    Override,
    Skip,
    Append,
    Delete,
}

/// One policy and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub name: &'static str,
    pub id: Option<String>,
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub calls: u64,
    pub period_secs: u64,
    /// `None` counts per subscription (rate-limit, quota).
    pub key: Option<Text>,
    pub condition: Option<Arc<Code>>,
    pub increment: u64,
    pub retry_after_header: Option<String>,
    pub remaining_header: Option<String>,
    pub total_header: Option<String>,
    pub retry_after_variable: Option<String>,
    pub remaining_variable: Option<String>,
    /// Per-API and per-operation limits inside rate-limit and quota (`<api>`, `<operation>`).
    pub scoped: Vec<ScopedLimit>,
}

/// A limit for one API (by name or id), or one operation of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopedLimit {
    pub api: String,
    pub operation: Option<String>,
    pub calls: u64,
    pub period_secs: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cors {
    pub allow_credentials: bool,
    pub terminate_unmatched: bool,
    pub origins: Vec<String>,
    pub methods: Vec<String>,
    pub max_age: u64,
    pub headers: Vec<String>,
    pub expose: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub condition: Arc<Code>,
    pub count: u64,
    pub interval_secs: u64,
    pub max_interval_secs: Option<u64>,
    pub delta_secs: Option<u64>,
    pub first_fast_retry: bool,
    pub body: Vec<Node>,
}

/// What send-request sets on its request, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SendStep {
    Url(Text),
    Method(Text),
    Header {
        name: String,
        action: ExistsAction,
        values: Vec<Text>,
    },
    Body(Text),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    Base,
    SetHeader {
        name: String,
        action: ExistsAction,
        values: Vec<Text>,
    },
    SetQueryParameter {
        name: String,
        action: ExistsAction,
        values: Vec<Text>,
    },
    SetMethod(Text),
    RewriteUri {
        template: Text,
        copy_unmatched: bool,
    },
    SetBackendService {
        base_url: Option<Text>,
        backend_id: Option<String>,
    },
    ForwardRequest {
        timeout_secs: u64,
        follow_redirects: bool,
    },
    SetBody(Text),
    SetStatus {
        code: Text,
        reason: Option<Text>,
    },
    ReturnResponse {
        variable: Option<String>,
        steps: Vec<Node>,
    },
    MockResponse {
        status: u16,
        content_type: Option<String>,
    },
    SetVariable {
        name: String,
        value: Text,
    },
    Choose {
        whens: Vec<(Arc<Code>, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    CheckHeader {
        name: String,
        status: u16,
        message: String,
        ignore_case: bool,
        values: Vec<String>,
    },
    IpFilter {
        allow: bool,
        addresses: Vec<IpAddr>,
        ranges: Vec<(IpAddr, IpAddr)>,
    },
    RateLimit(RateLimit),
    Quota(RateLimit),
    Cors(Cors),
    Trace {
        source: String,
        message: Text,
    },
    AuthenticationBasic {
        username: Text,
        password: Text,
    },
    Retry(Box<Retry>),
    LimitConcurrency {
        key: Text,
        max: u64,
        body: Vec<Node>,
    },
    /// send-request, or send-one-way-request when `one_way`.
    SendRequest {
        mode_copy: bool,
        variable: Option<String>,
        timeout_secs: u64,
        ignore_error: bool,
        one_way: bool,
        steps: Vec<SendStep>,
    },
    /// json-to-xml (`to_xml`) or xml-to-json.
    Convert {
        to_xml: bool,
        /// Convert only when the body's content type says JSON (XML).
        only_matching_type: bool,
        consider_accept: bool,
        direct: bool,
    },
    CacheLookup {
        vary_by_developer: bool,
        vary_by_groups: bool,
        headers: Vec<String>,
        query: Vec<String>,
    },
    CacheStore {
        duration_secs: u64,
    },
    CacheLookupValue {
        key: Text,
        variable: String,
        default: Option<Text>,
    },
    CacheStoreValue {
        key: Text,
        value: Text,
        duration_secs: u64,
    },
    CacheRemoveValue {
        key: Text,
    },
    ValidateJwt(Box<Jwt>),
    FindAndReplace {
        from: Text,
        to: Text,
    },
}

/// A parsed document: the four sections (a fragment has its policies under `Inbound`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Document {
    /// By `Section as usize` (an array, not a map: every request looks sections up).
    pub sections: [Option<Vec<Node>>; 4],
    /// Whether some expression or policy reads a message body (the gateway then buffers
    /// bodies; otherwise they stream).
    pub reads_body: bool,
}

impl Document {
    pub fn section(&self, s: Section) -> Option<&[Node]> {
        self.sections[s as usize].as_deref()
    }

    /// The OpenID configuration URLs validate-jwt policies name (the gateway fetches their keys).
    pub fn openid_urls(&self) -> Vec<String> {
        fn walk(nodes: &[Node], out: &mut Vec<String>) {
            for n in nodes {
                match &n.policy {
                    Policy::ValidateJwt(j) => out.extend(j.openid_urls.iter().cloned()),
                    Policy::Choose { whens, otherwise } => {
                        for (_, body) in whens {
                            walk(body, out);
                        }
                        walk(otherwise, out);
                    }
                    Policy::Retry(r) => walk(&r.body, out),
                    Policy::LimitConcurrency { body, .. } => walk(body, out),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        for nodes in self.sections.iter().flatten() {
            walk(nodes, &mut out);
        }
        out
    }
}

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

/// APIM policies this engine does not run yet: refused by name at write time.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "validate-azure-ad-token",
    "validate-client-certificate",
    "validate-content",
    "validate-parameters",
    "validate-headers",
    "validate-status-code",
    "validate-graphql-request",
    "authentication-certificate",
    "authentication-managed-identity",
    "xsl-transform",
    "redirect-content-urls",
    "jsonp",
    "cross-domain",
    "proxy",
    "wait",
    "log-to-eventhub",
    "emit-metric",
    "get-authorization-context",
    "set-backend-service-dapr",
    "publish-to-dapr",
    "invoke-dapr-binding",
    "llm-token-limit",
    "azure-openai-token-limit",
    "llm-emit-token-metric",
    "azure-openai-emit-token-metric",
    "llm-semantic-cache-lookup",
    "llm-semantic-cache-store",
    "azure-openai-semantic-cache-lookup",
    "azure-openai-semantic-cache-store",
    "quota-by-key-v2",
    "http-data-source",
    "publish-event",
    "set-graphql-resolver",
    "sql-data-source",
    "cosmosdb-data-source",
    "mock-response-v2",
    "trace-v2",
    "include-fragment-v2",
];

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

fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        c => out.push(c),
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
const MAX_FRAGMENT_DEPTH: u32 = 8;

/// Where each line of a document starts, so that a node's line and column are found by a
/// binary search instead of a scan from the document's start for every policy.
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn of(text: &str) -> Lines {
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

struct Ctx<'a, 'd> {
    doc: &'d roxmltree::Document<'a>,
    lines: Lines,
    resolver: &'d dyn Resolver,
    reads_body: bool,
    /// Fragments being included around this document.
    fragment_depth: u32,
    /// Policy levels around the node being compiled (see [`MAX_POLICY_NESTING`]).
    nesting: usize,
    /// Policies still allowed in the whole document, fragments included (see [`MAX_POLICIES`]).
    budget: &'d std::cell::Cell<usize>,
}

type Res<T> = Result<T, PolicyError>;

impl<'a, 'd> Ctx<'a, 'd> {
    fn pos(&self, node: roxmltree::Node) -> Pos {
        self.lines.pos(self.doc.input_text(), node.range().start)
    }

    fn err<T>(&self, node: roxmltree::Node, msg: impl Into<String>) -> Res<T> {
        Err(PolicyError {
            pos: self.pos(node),
            message: msg.into(),
        })
    }

    /// Substitutes `{{name}}` with named values.
    fn substitute(&self, node: roxmltree::Node, s: &str) -> Res<String> {
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
            match self.resolver.named_value(name) {
                Some(v) => out.push_str(&v),
                None => {
                    return self.err(node, format!("the named value '{name}' does not exist"));
                }
            }
            rest = &after[j + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn text_value(&mut self, node: roxmltree::Node, raw: &str) -> Res<Text> {
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

    fn code(&mut self, node: roxmltree::Node, raw: &str) -> Res<Arc<Code>> {
        match self.text_value(node, raw)? {
            Text::Expr(c) => Ok(c),
            Text::Lit(l) => match l.trim() {
                "true" | "True" => Ok(Arc::new(Code::Expr(expr::Expr::Lit(expr::V::Bool(true))))),
                "false" | "False" => {
                    Ok(Arc::new(Code::Expr(expr::Expr::Lit(expr::V::Bool(false)))))
                }
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

    fn attr_text(&mut self, node: roxmltree::Node, name: &str) -> Res<Option<Text>> {
        match node.attribute(name) {
            Some(v) => Ok(Some(self.text_value(node, v)?)),
            None => Ok(None),
        }
    }

    fn required(&mut self, node: roxmltree::Node, name: &str) -> Res<Text> {
        match self.attr_text(node, name)? {
            Some(t) => Ok(t),
            None => self.err(
                node,
                format!("<{}> needs the attribute '{name}'", node.tag_name().name()),
            ),
        }
    }

    fn literal(&self, node: roxmltree::Node, name: &str) -> Res<Option<String>> {
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

    fn number(
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

    fn boolean(&self, node: roxmltree::Node, name: &str, default: bool) -> Res<bool> {
        match self.literal(node, name)? {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => self.err(node, format!("'{name}' must be true or false, not '{v}'")),
            },
        }
    }

    fn check_attrs(&self, node: roxmltree::Node, allowed: &[&str]) -> Res<()> {
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

    fn children(&self, node: roxmltree::Node<'a, 'a>) -> Res<Vec<roxmltree::Node<'a, 'a>>> {
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

    fn element_text(&self, node: roxmltree::Node) -> String {
        node.children()
            .filter(|c| c.is_text())
            .filter_map(|c| c.text())
            .collect::<String>()
            .trim()
            .to_string()
    }

    fn exists_action(&self, node: roxmltree::Node) -> Res<ExistsAction> {
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

    fn values(&mut self, node: roxmltree::Node<'a, 'a>) -> Res<Vec<Text>> {
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

    fn policies(
        &mut self,
        parent: roxmltree::Node<'a, 'a>,
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
                    .try_for_each(|c| self.policy(c, section, out))
            })
        });
        self.nesting -= 1;
        result
    }

    /// Takes one policy from the document's budget.
    fn count_policy(&self, node: roxmltree::Node) -> Res<()> {
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
    fn expect_root(&self, root: roxmltree::Node, name: &str, of: &str) -> Res<()> {
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

    fn allowed_in(&self, node: roxmltree::Node, section: Section, sections: &[Section]) -> Res<()> {
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

    fn policy(
        &mut self,
        node: roxmltree::Node<'a, 'a>,
        section: Section,
        out: &mut Vec<Node>,
    ) -> Res<()> {
        let name = node.tag_name().name();
        self.count_policy(node)?;
        use Section::*;
        let policy = match name {
            "base" => {
                self.check_attrs(node, &[])?;
                Policy::Base
            }
            "include-fragment" => {
                self.check_attrs(node, &["fragment-id"])?;
                let id = self.literal(node, "fragment-id")?.unwrap_or_default();
                let Some((xml, format)) = self.resolver.fragment(&id) else {
                    return self.err(node, format!("the policy fragment '{id}' does not exist"));
                };
                if self.fragment_depth >= MAX_FRAGMENT_DEPTH {
                    return self.err(
                        node,
                        format!(
                            "fragments include each other more than {MAX_FRAGMENT_DEPTH} levels deep (a cycle?)"
                        ),
                    );
                }
                let around = Around {
                    fragment_depth: self.fragment_depth + 1,
                    nesting: self.nesting,
                    budget: self.budget,
                };
                let frag = parse_fragment_with(&xml, &format, section, self.resolver, around)
                    .map_err(|e| PolicyError {
                        pos: self.pos(node),
                        message: format!("in the fragment '{id}': {e}"),
                    })?;
                self.reads_body |= frag.1;
                out.extend(frag.0);
                return Ok(());
            }
            "set-header" | "set-query-parameter" => {
                self.check_attrs(node, &["name", "exists-action"])?;
                let pname = self.literal(node, "name")?.filter(|n| !n.is_empty());
                let Some(pname) = pname else {
                    return self.err(node, format!("<{name}> needs the attribute 'name'"));
                };
                let action = self.exists_action(node)?;
                let values = self.values(node)?;
                if values.is_empty() && action != ExistsAction::Delete {
                    return self.err(
                        node,
                        format!(
                            "<{name}> needs at least one <value> unless exists-action is delete"
                        ),
                    );
                }
                if name == "set-header" {
                    Policy::SetHeader {
                        name: pname,
                        action,
                        values,
                    }
                } else {
                    self.allowed_in(node, section, &[Inbound, Backend])?;
                    Policy::SetQueryParameter {
                        name: pname,
                        action,
                        values,
                    }
                }
            }
            "set-method" => {
                self.allowed_in(node, section, &[Inbound, OnError])?;
                self.check_attrs(node, &[])?;
                let t = self.element_text(node);
                Policy::SetMethod(self.text_value(node, &t)?)
            }
            "rewrite-uri" => {
                self.allowed_in(node, section, &[Inbound])?;
                self.check_attrs(node, &["template", "copy-unmatched-params"])?;
                Policy::RewriteUri {
                    template: self.required(node, "template")?,
                    copy_unmatched: self.boolean(node, "copy-unmatched-params", true)?,
                }
            }
            "set-backend-service" => {
                self.allowed_in(node, section, &[Inbound, Backend])?;
                self.check_attrs(node, &["base-url", "backend-id"])?;
                let base_url = self.attr_text(node, "base-url")?;
                let backend_id = self.literal(node, "backend-id")?;
                if base_url.is_some() == backend_id.is_some() {
                    return self.err(
                        node,
                        "<set-backend-service> needs exactly one of 'base-url' and 'backend-id'",
                    );
                }
                Policy::SetBackendService {
                    base_url,
                    backend_id,
                }
            }
            "forward-request" => {
                self.allowed_in(node, section, &[Backend])?;
                self.check_attrs(
                    node,
                    &[
                        "timeout",
                        "follow-redirects",
                        "buffer-request-body",
                        "buffer-response",
                        "fail-on-error-status-code",
                        "http-version",
                    ],
                )?;
                Policy::ForwardRequest {
                    timeout_secs: self.number(node, "timeout", Some(300), 240 * 100)?,
                    follow_redirects: self.boolean(node, "follow-redirects", false)?,
                }
            }
            "set-body" => {
                self.check_attrs(node, &["template", "xsi-nil", "parse-date"])?;
                if node.attribute("template").is_some_and(|t| t != "none") {
                    return self.err(
                        node,
                        "set-body templates (liquid) are not supported; use an expression",
                    );
                }
                let t = self.element_text(node);
                Policy::SetBody(self.text_value(node, &t)?)
            }
            "set-status" => {
                self.check_attrs(node, &["code", "reason"])?;
                let code = self.required(node, "code")?;
                if let Text::Lit(l) = &code
                    && !l.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c))
                {
                    return self.err(
                        node,
                        format!("'code' must be an HTTP status from 100 to 599, not '{l}'"),
                    );
                }
                Policy::SetStatus {
                    code,
                    reason: self.attr_text(node, "reason")?,
                }
            }
            "return-response" => {
                self.check_attrs(node, &["response-variable-name"])?;
                let mut steps = Vec::new();
                for c in self.children(node)? {
                    if !matches!(
                        c.tag_name().name(),
                        "set-status" | "set-header" | "set-body"
                    ) {
                        return self.err(c, "<return-response> may contain only <set-status>, <set-header> and <set-body>");
                    }
                    self.policy(c, Outbound, &mut steps)?;
                }
                Policy::ReturnResponse {
                    variable: self.literal(node, "response-variable-name")?,
                    steps,
                }
            }
            "mock-response" => {
                self.allowed_in(node, section, &[Inbound, Outbound, OnError])?;
                self.check_attrs(node, &["status-code", "content-type", "index"])?;
                let status = self.number(node, "status-code", Some(200), 599)? as u16;
                Policy::MockResponse {
                    status,
                    content_type: self.literal(node, "content-type")?,
                }
            }
            "set-variable" => {
                self.check_attrs(node, &["name", "value"])?;
                let Some(vname) = self.literal(node, "name")?.filter(|n| !n.is_empty()) else {
                    return self.err(node, "<set-variable> needs the attribute 'name'");
                };
                Policy::SetVariable {
                    name: vname,
                    value: self.required(node, "value")?,
                }
            }
            "choose" => {
                self.check_attrs(node, &[])?;
                let mut whens = Vec::new();
                let mut otherwise = Vec::new();
                let mut seen_otherwise = false;
                for c in self.children(node)? {
                    match c.tag_name().name() {
                        "when" if !seen_otherwise => {
                            self.check_attrs(c, &["condition"])?;
                            let Some(cond) = c.attribute("condition") else {
                                return self.err(c, "<when> needs the attribute 'condition'");
                            };
                            let code = self.code(c, cond)?;
                            let mut body = Vec::new();
                            self.policies(c, section, &mut body)?;
                            whens.push((code, body));
                        }
                        "otherwise" if !seen_otherwise => {
                            seen_otherwise = true;
                            self.check_attrs(c, &[])?;
                            self.policies(c, section, &mut otherwise)?;
                        }
                        other => return self.err(c, format!("<choose> may contain <when> elements, then one <otherwise>; <{other}> is out of place")),
                    }
                }
                if whens.is_empty() {
                    return self.err(node, "<choose> needs at least one <when>");
                }
                Policy::Choose { whens, otherwise }
            }
            "check-header" => {
                self.allowed_in(node, section, &[Inbound])?;
                self.check_attrs(
                    node,
                    &[
                        "name",
                        "failed-check-httpcode",
                        "failed-check-error-message",
                        "ignore-case",
                    ],
                )?;
                let hname = self.literal(node, "name")?.unwrap_or_default();
                if hname.is_empty() {
                    return self.err(node, "<check-header> needs the attribute 'name'");
                }
                let mut values = Vec::new();
                for c in self.children(node)? {
                    if c.tag_name().name() != "value" {
                        return self.err(c, "<check-header> may contain only <value> elements");
                    }
                    values.push(self.substitute(c, &self.element_text(c))?);
                }
                Policy::CheckHeader {
                    name: hname,
                    status: self.number(node, "failed-check-httpcode", None, 599)? as u16,
                    message: self
                        .literal(node, "failed-check-error-message")?
                        .unwrap_or_default(),
                    ignore_case: self.boolean(node, "ignore-case", false)?,
                    values,
                }
            }
            "ip-filter" => {
                self.allowed_in(node, section, &[Inbound])?;
                self.check_attrs(node, &["action"])?;
                let allow = match self.literal(node, "action")?.as_deref() {
                    Some("allow") => true,
                    Some("forbid") => false,
                    _ => {
                        return self.err(
                            node,
                            "<ip-filter> needs action=\"allow\" or action=\"forbid\"",
                        );
                    }
                };
                let mut addresses = Vec::new();
                let mut ranges = Vec::new();
                for c in self.children(node)? {
                    let ip = |s: &str| -> Res<IpAddr> {
                        s.trim()
                            .parse()
                            .or_else(|_| self.err(c, format!("'{s}' is not an IP address")))
                    };
                    match c.tag_name().name() {
                        "address" => addresses.push(ip(&self.element_text(c))?),
                        "address-range" => {
                            self.check_attrs(c, &["from", "to"])?;
                            ranges.push((ip(c.attribute("from").unwrap_or(""))?, ip(c.attribute("to").unwrap_or(""))?));
                        }
                        other => return self.err(c, format!("<ip-filter> may contain <address> and <address-range>, not <{other}>")),
                    }
                }
                Policy::IpFilter {
                    allow,
                    addresses,
                    ranges,
                }
            }
            "rate-limit" | "rate-limit-by-key" | "quota" | "quota-by-key" => {
                self.allowed_in(node, section, &[Inbound])?;
                let by_key = name.ends_with("by-key");
                let quota = name.starts_with("quota");
                let mut attrs = vec![
                    "calls",
                    "renewal-period",
                    "retry-after-header-name",
                    "retry-after-variable-name",
                    "remaining-calls-header-name",
                    "remaining-calls-variable-name",
                    "total-calls-header-name",
                ];
                if by_key {
                    attrs.extend(["counter-key", "increment-condition", "increment-count"]);
                }
                if quota {
                    attrs.push("bandwidth");
                }
                self.check_attrs(node, &attrs)?;
                if by_key && !self.children(node)?.is_empty() {
                    return self.err(node, format!("<{name}> has no child elements"));
                }
                if node.attribute("bandwidth").is_some() {
                    return self.err(node, "quota 'bandwidth' is not supported; use 'calls'");
                }
                let max_period = if quota { u64::MAX / 2 } else { 300 };
                let limit = RateLimit {
                    calls: self.number(node, "calls", None, u64::MAX / 2)?,
                    period_secs: self.number(node, "renewal-period", None, max_period)?,
                    key: if by_key {
                        Some(self.required(node, "counter-key")?)
                    } else {
                        None
                    },
                    condition: match node.attribute("increment-condition") {
                        Some(c) => Some(self.code(node, c)?),
                        None => None,
                    },
                    increment: self.number(node, "increment-count", Some(1), 1_000_000)?,
                    retry_after_header: self.literal(node, "retry-after-header-name")?,
                    remaining_header: self.literal(node, "remaining-calls-header-name")?,
                    total_header: self.literal(node, "total-calls-header-name")?,
                    retry_after_variable: self.literal(node, "retry-after-variable-name")?,
                    remaining_variable: self.literal(node, "remaining-calls-variable-name")?,
                    scoped: Vec::new(),
                };
                let mut limit = limit;
                if !by_key {
                    for api in self.children(node)? {
                        if api.tag_name().name() != "api" {
                            return self.err(api, format!("<{name}> may contain <api> elements, with <operation> elements inside them"));
                        }
                        self.check_attrs(api, &["name", "id", "calls", "renewal-period"])?;
                        let api_name = api
                            .attribute("name")
                            .or(api.attribute("id"))
                            .unwrap_or_default()
                            .to_string();
                        if api_name.is_empty() {
                            return self.err(api, "<api> needs 'name' or 'id'");
                        }
                        if api.attribute("calls").is_some() {
                            limit.scoped.push(ScopedLimit {
                                api: api_name.clone(),
                                operation: None,
                                calls: self.number(api, "calls", None, u64::MAX / 2)?,
                                period_secs: self.number(
                                    api,
                                    "renewal-period",
                                    None,
                                    max_period,
                                )?,
                            });
                        }
                        for op in self.children(api)? {
                            if op.tag_name().name() != "operation" {
                                return self.err(op, "<api> may contain only <operation> elements");
                            }
                            self.check_attrs(op, &["name", "id", "calls", "renewal-period"])?;
                            let op_name = op
                                .attribute("name")
                                .or(op.attribute("id"))
                                .unwrap_or_default()
                                .to_string();
                            limit.scoped.push(ScopedLimit {
                                api: api_name.clone(),
                                operation: Some(op_name),
                                calls: self.number(op, "calls", None, u64::MAX / 2)?,
                                period_secs: self.number(op, "renewal-period", None, max_period)?,
                            });
                        }
                    }
                }
                if !quota && limit.period_secs == 0 {
                    return self.err(node, "'renewal-period' must be from 1 to 300 seconds");
                }
                if quota {
                    Policy::Quota(limit)
                } else {
                    Policy::RateLimit(limit)
                }
            }
            "cors" => {
                self.allowed_in(node, section, &[Inbound])?;
                self.check_attrs(node, &["allow-credentials", "terminate-unmatched-request"])?;
                let mut cors = Cors {
                    allow_credentials: self.boolean(node, "allow-credentials", false)?,
                    terminate_unmatched: self.boolean(node, "terminate-unmatched-request", true)?,
                    origins: Vec::new(),
                    methods: Vec::new(),
                    max_age: 0,
                    headers: Vec::new(),
                    expose: Vec::new(),
                };
                for c in self.children(node)? {
                    let (list, item): (&mut Vec<String>, &str) = match c.tag_name().name() {
                        "allowed-origins" => (&mut cors.origins, "origin"),
                        "allowed-methods" => {
                            cors.max_age =
                                self.number(c, "preflight-result-max-age", Some(0), 86_400)?;
                            (&mut cors.methods, "method")
                        }
                        "allowed-headers" => (&mut cors.headers, "header"),
                        "expose-headers" => (&mut cors.expose, "header"),
                        other => return self.err(c, format!("<cors> has no element <{other}>")),
                    };
                    for i in c.children().filter(|n| n.is_element()) {
                        if i.tag_name().name() != item {
                            return self.err(
                                i,
                                format!("<{}> may contain only <{item}>", c.tag_name().name()),
                            );
                        }
                        list.push(i.text().unwrap_or("").trim().to_string());
                    }
                }
                if cors.origins.is_empty() {
                    return self.err(
                        node,
                        "<cors> needs <allowed-origins> with at least one <origin>",
                    );
                }
                if cors.allow_credentials && cors.origins.iter().any(|o| o == "*") {
                    return self.err(
                        node,
                        "allow-credentials=\"true\" cannot be combined with the origin '*'",
                    );
                }
                Policy::Cors(cors)
            }
            "trace" => {
                self.check_attrs(node, &["source", "severity"])?;
                let mut message = Text::Lit(String::new());
                for c in self.children(node)? {
                    match c.tag_name().name() {
                        "message" => {
                            let t = self.element_text(c);
                            message = self.text_value(c, &t)?;
                        }
                        "metadata" => {}
                        other => return self.err(c, format!("<trace> has no element <{other}>")),
                    }
                }
                Policy::Trace {
                    source: self.literal(node, "source")?.unwrap_or_default(),
                    message,
                }
            }
            "authentication-basic" => {
                self.allowed_in(node, section, &[Inbound])?;
                self.check_attrs(node, &["username", "password"])?;
                Policy::AuthenticationBasic {
                    username: self.required(node, "username")?,
                    password: self.required(node, "password")?,
                }
            }
            "validate-jwt" => {
                self.allowed_in(node, section, &[Inbound])?;
                self.check_attrs(
                    node,
                    &[
                        "header-name",
                        "query-parameter-name",
                        "token-value",
                        "failed-validation-httpcode",
                        "failed-validation-error-message",
                        "require-expiration-time",
                        "require-scheme",
                        "require-signed-tokens",
                        "clock-skew",
                        "output-token-variable-name",
                    ],
                )?;
                let sources = [
                    node.attribute("header-name"),
                    node.attribute("query-parameter-name"),
                    node.attribute("token-value"),
                ];
                if sources.iter().flatten().count() != 1 {
                    return self.err(node, "<validate-jwt> needs exactly one of 'header-name', 'query-parameter-name' and 'token-value'");
                }
                let source = if let Some(h) = self.literal(node, "header-name")? {
                    TokenSource::Header(h)
                } else if let Some(q) = self.literal(node, "query-parameter-name")? {
                    TokenSource::Query(q)
                } else {
                    TokenSource::Value(self.required(node, "token-value")?)
                };
                let mut jwt = Jwt {
                    source,
                    status: self.number(node, "failed-validation-httpcode", Some(401), 599)? as u16,
                    message: self.literal(node, "failed-validation-error-message")?,
                    require_expiration: self.boolean(node, "require-expiration-time", true)?,
                    require_scheme: self.literal(node, "require-scheme")?,
                    require_signed: self.boolean(node, "require-signed-tokens", true)?,
                    clock_skew_secs: self.number(node, "clock-skew", Some(0), 86_400)?,
                    output_variable: self.literal(node, "output-token-variable-name")?,
                    openid_urls: Vec::new(),
                    keys: Vec::new(),
                    audiences: Vec::new(),
                    issuers: Vec::new(),
                    claims: Vec::new(),
                    memo: Default::default(),
                };
                if !jwt.require_signed {
                    return self.err(node, "require-signed-tokens=\"false\" is not supported: Gatehouse accepts only signed tokens");
                }
                for c in self.children(node)? {
                    match c.tag_name().name() {
                        "openid-config" => {
                            self.check_attrs(c, &["url"])?;
                            let url = self.literal(c, "url")?.unwrap_or_default();
                            if !(url.starts_with("https://") || url.starts_with("http://")) {
                                return self.err(
                                    c,
                                    format!(
                                        "<openid-config url> must be an http(s) URL, not '{url}'"
                                    ),
                                );
                            }
                            jwt.openid_urls.push(url);
                        }
                        "issuer-signing-keys" => {
                            for k in self.children(c)? {
                                if k.tag_name().name() != "key" {
                                    return self
                                        .err(k, "<issuer-signing-keys> may contain only <key>");
                                }
                                if k.attribute("certificate-id").is_some() {
                                    return self.err(k, "keys by certificate-id are not supported; give n and e, a PEM public key or a base64 secret");
                                }
                                let key = match (k.attribute("n"), k.attribute("e")) {
                                    (Some(n), Some(e)) => InlineKey::Rsa {
                                        n: n.to_string(),
                                        e: e.to_string(),
                                    },
                                    _ => {
                                        let text = self.substitute(k, &self.element_text(k))?;
                                        if text.starts_with("-----BEGIN") {
                                            InlineKey::Pem(text)
                                        } else {
                                            use base64::Engine;
                                            let bytes = base64::engine::general_purpose::STANDARD
                                                .decode(text.trim())
                                                .or_else(|_| {
                                                    self.err(k, "a symmetric <key> must be base64")
                                                })?;
                                            InlineKey::Symmetric(bytes)
                                        }
                                    }
                                };
                                jwt.keys.push(key);
                            }
                        }
                        "audiences" | "issuers" => {
                            let item = if c.tag_name().name() == "audiences" {
                                "audience"
                            } else {
                                "issuer"
                            };
                            let mut list = Vec::new();
                            for a in c.children().filter(|n| n.is_element()) {
                                if a.tag_name().name() != item {
                                    return self.err(
                                        a,
                                        format!(
                                            "<{}> may contain only <{item}>",
                                            c.tag_name().name()
                                        ),
                                    );
                                }
                                list.push(self.substitute(a, a.text().unwrap_or("").trim())?);
                            }
                            if item == "audience" {
                                jwt.audiences = list
                            } else {
                                jwt.issuers = list
                            }
                        }
                        "required-claims" => {
                            for cl in self.children(c)? {
                                if cl.tag_name().name() != "claim" {
                                    return self
                                        .err(cl, "<required-claims> may contain only <claim>");
                                }
                                self.check_attrs(cl, &["name", "match", "separator"])?;
                                let match_all = match cl.attribute("match").unwrap_or("all") {
                                    "all" => true,
                                    "any" => false,
                                    o => {
                                        return self.err(
                                            cl,
                                            format!("'match' must be all or any, not '{o}'"),
                                        );
                                    }
                                };
                                let mut values = Vec::new();
                                for v in cl.children().filter(|n| n.is_element()) {
                                    values.push(self.substitute(v, v.text().unwrap_or("").trim())?);
                                }
                                jwt.claims.push(RequiredClaim {
                                    name: cl.attribute("name").unwrap_or_default().to_string(),
                                    match_all,
                                    separator: cl.attribute("separator").map(str::to_string),
                                    values,
                                });
                            }
                        }
                        "decryption-keys" => {
                            return self
                                .err(c, "encrypted tokens (decryption-keys) are not supported");
                        }
                        other => {
                            return self.err(c, format!("<validate-jwt> has no element <{other}>"));
                        }
                    }
                }
                if jwt.keys.is_empty() && jwt.openid_urls.is_empty() {
                    return self.err(node, "<validate-jwt> needs <issuer-signing-keys> or <openid-config> to check signatures with");
                }
                Policy::ValidateJwt(Box::new(jwt))
            }
            "retry" => {
                self.check_attrs(
                    node,
                    &[
                        "condition",
                        "count",
                        "interval",
                        "max-interval",
                        "delta",
                        "first-fast-retry",
                    ],
                )?;
                let Some(cond) = node.attribute("condition") else {
                    return self.err(node, "<retry> needs the attribute 'condition'");
                };
                let condition = self.code(node, cond)?;
                let count = self.number(node, "count", None, 50)?;
                if count == 0 {
                    return self.err(node, "'count' must be from 1 to 50");
                }
                // A retried forward-request sends the body again: buffer it.
                self.reads_body = true;
                let mut body = Vec::new();
                self.policies(node, section, &mut body)?;
                Policy::Retry(Box::new(Retry {
                    condition,
                    count,
                    interval_secs: self.number(node, "interval", None, 300)?,
                    max_interval_secs: node
                        .attribute("max-interval")
                        .map(|_| self.number(node, "max-interval", None, 300))
                        .transpose()?,
                    delta_secs: node
                        .attribute("delta")
                        .map(|_| self.number(node, "delta", None, 300))
                        .transpose()?,
                    first_fast_retry: self.boolean(node, "first-fast-retry", false)?,
                    body,
                }))
            }
            "limit-concurrency" => {
                self.check_attrs(node, &["key", "max-count"])?;
                let key = self.required(node, "key")?;
                let max = self.number(node, "max-count", None, 1_000_000)?;
                if max == 0 {
                    return self.err(node, "'max-count' must be at least 1");
                }
                let mut body = Vec::new();
                self.policies(node, section, &mut body)?;
                Policy::LimitConcurrency { key, max, body }
            }
            "send-request" | "send-one-way-request" => {
                let one_way = name == "send-one-way-request";
                let attrs: &[&str] = if one_way {
                    &["mode", "timeout"]
                } else {
                    &["mode", "response-variable-name", "timeout", "ignore-error"]
                };
                self.check_attrs(node, attrs)?;
                let mode_copy = match self.literal(node, "mode")?.as_deref() {
                    None | Some("new") => false,
                    Some("copy") => true,
                    Some(o) => {
                        return self.err(node, format!("'mode' must be new or copy, not '{o}'"));
                    }
                };
                let variable = self.literal(node, "response-variable-name")?;
                if !one_way && variable.is_none() {
                    return self.err(
                        node,
                        "<send-request> needs the attribute 'response-variable-name'",
                    );
                }
                let mut steps = Vec::new();
                for c in self.children(node)? {
                    let step = match c.tag_name().name() {
                        "set-url" => {
                            let t = self.element_text(c);
                            SendStep::Url(self.text_value(c, &t)?)
                        }
                        "set-method" => {
                            let t = self.element_text(c);
                            SendStep::Method(self.text_value(c, &t)?)
                        }
                        "set-header" => {
                            self.check_attrs(c, &["name", "exists-action"])?;
                            let hname = self.literal(c, "name")?.unwrap_or_default();
                            if hname.is_empty() {
                                return self.err(c, "<set-header> needs the attribute 'name'");
                            }
                            let action = self.exists_action(c)?;
                            let values = self.values(c)?;
                            SendStep::Header {
                                name: hname,
                                action,
                                values,
                            }
                        }
                        "set-body" => {
                            let t = self.element_text(c);
                            SendStep::Body(self.text_value(c, &t)?)
                        }
                        "authentication-certificate"
                        | "authentication-managed-identity"
                        | "proxy" => {
                            return self.err(
                                c,
                                format!(
                                    "<{}> inside <{name}> is not supported",
                                    c.tag_name().name()
                                ),
                            );
                        }
                        other => return self.err(c, format!("<{name}> has no element <{other}>")),
                    };
                    steps.push(step);
                }
                if !mode_copy && !steps.iter().any(|s| matches!(s, SendStep::Url(_))) {
                    return self.err(node, format!("<{name}> mode=\"new\" needs <set-url>"));
                }
                Policy::SendRequest {
                    mode_copy,
                    variable,
                    timeout_secs: self.number(node, "timeout", Some(60), 240)?,
                    ignore_error: self.boolean(node, "ignore-error", false)?,
                    one_way,
                    steps,
                }
            }
            "json-to-xml" | "xml-to-json" => {
                self.allowed_in(node, section, &[Inbound, Outbound, OnError])?;
                let to_xml = name == "json-to-xml";
                self.check_attrs(
                    node,
                    &[
                        "apply",
                        "consider-accept-header",
                        "parse-date",
                        "namespace-separator",
                        "namespace-prefix",
                        "attribute-block-name",
                        "kind",
                    ],
                )?;
                self.reads_body = true;
                let matching = if to_xml {
                    "content-type-json"
                } else {
                    "content-type-xml"
                };
                let only_matching_type = match self.literal(node, "apply")?.as_deref() {
                    None | Some("always") => false,
                    Some(a) if a == matching => true,
                    Some(a) => {
                        return self.err(
                            node,
                            format!("'apply' must be always or {matching}, not '{a}'"),
                        );
                    }
                };
                let direct = match self.literal(node, "kind")?.as_deref() {
                    None | Some("javascript-friendly") => false,
                    Some("direct") => true,
                    Some(k) => {
                        return self.err(
                            node,
                            format!("'kind' must be javascript-friendly or direct, not '{k}'"),
                        );
                    }
                };
                Policy::Convert {
                    to_xml,
                    only_matching_type,
                    consider_accept: self.boolean(node, "consider-accept-header", true)?,
                    direct,
                }
            }
            "cache-lookup" => {
                self.allowed_in(node, section, &[Inbound])?;
                self.check_attrs(
                    node,
                    &[
                        "vary-by-developer",
                        "vary-by-developer-groups",
                        "caching-type",
                        "downstream-caching-type",
                        "must-revalidate",
                        "allow-private-response-caching",
                    ],
                )?;
                if self
                    .literal(node, "caching-type")?
                    .is_some_and(|t| t == "external")
                {
                    return self.err(node, "caching-type=\"external\" is not supported: Gatehouse caches in memory (internal)");
                }
                let mut headers = Vec::new();
                let mut query = Vec::new();
                for c in self.children(node)? {
                    match c.tag_name().name() {
                        "vary-by-header" => headers.push(self.element_text(c)),
                        "vary-by-query-parameter" => query.push(self.element_text(c)),
                        other => {
                            return self.err(c, format!("<cache-lookup> has no element <{other}>"));
                        }
                    }
                }
                Policy::CacheLookup {
                    vary_by_developer: self.boolean(node, "vary-by-developer", false)?,
                    vary_by_groups: self.boolean(node, "vary-by-developer-groups", false)?,
                    headers,
                    query,
                }
            }
            "cache-store" => {
                self.allowed_in(node, section, &[Outbound])?;
                self.check_attrs(node, &["duration", "cache-response"])?;
                self.reads_body = true;
                Policy::CacheStore {
                    duration_secs: self.number(node, "duration", Some(3600), 365 * 86_400)?,
                }
            }
            "cache-lookup-value" => {
                self.check_attrs(
                    node,
                    &["key", "default-value", "variable-name", "caching-type"],
                )?;
                let Some(variable) = self
                    .literal(node, "variable-name")?
                    .filter(|v| !v.is_empty())
                else {
                    return self.err(
                        node,
                        "<cache-lookup-value> needs the attribute 'variable-name'",
                    );
                };
                Policy::CacheLookupValue {
                    key: self.required(node, "key")?,
                    variable,
                    default: self.attr_text(node, "default-value")?,
                }
            }
            "cache-store-value" => {
                self.check_attrs(node, &["key", "value", "duration", "caching-type"])?;
                Policy::CacheStoreValue {
                    key: self.required(node, "key")?,
                    value: self.required(node, "value")?,
                    duration_secs: self.number(node, "duration", None, 365 * 86_400)?,
                }
            }
            "cache-remove-value" => {
                self.check_attrs(node, &["key", "caching-type"])?;
                Policy::CacheRemoveValue {
                    key: self.required(node, "key")?,
                }
            }
            "find-and-replace" => {
                self.check_attrs(node, &["from", "to"])?;
                self.reads_body = true;
                Policy::FindAndReplace {
                    from: self.required(node, "from")?,
                    to: self.required(node, "to")?,
                }
            }
            other if KNOWN_UNSUPPORTED.contains(&other) => {
                return self.err(node, format!("policy '{other}' is not supported"));
            }
            other => return self.err(node, format!("<{other}> is not a policy")),
        };
        out.push(Node {
            pos: self.pos(node),
            name: static_name(name),
            id: node.attribute("id").map(str::to_string),
            policy,
        });
        Ok(())
    }
}

fn static_name(name: &str) -> &'static str {
    const NAMES: &[&str] = &[
        "base",
        "set-header",
        "set-query-parameter",
        "set-method",
        "rewrite-uri",
        "set-backend-service",
        "forward-request",
        "set-body",
        "set-status",
        "return-response",
        "mock-response",
        "set-variable",
        "choose",
        "check-header",
        "ip-filter",
        "rate-limit",
        "rate-limit-by-key",
        "quota",
        "quota-by-key",
        "cors",
        "trace",
        "authentication-basic",
        "validate-jwt",
        "json-to-xml",
        "xml-to-json",
        "retry",
        "limit-concurrency",
        "send-request",
        "send-one-way-request",
        "cache-lookup",
        "cache-store",
        "cache-lookup-value",
        "cache-store-value",
        "cache-remove-value",
        "find-and-replace",
    ];
    NAMES
        .iter()
        .find(|n| **n == name)
        .copied()
        .unwrap_or("policy")
}

fn abbreviate(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

fn xml_of(value: &str, format: &str) -> String {
    if format.starts_with("rawxml") {
        escape_raw_expressions(value)
    } else {
        value.to_string()
    }
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
        if nodes.iter().filter(|n| n.policy == Policy::Base).count() > 1 {
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
    };
    let root = doc.root_element();
    ctx.expect_root(root, "fragment", " of a policy fragment")?;
    let mut nodes = Vec::new();
    ctx.policies(root, section, &mut nodes)?;
    if nodes.iter().any(|n| n.policy == Policy::Base) {
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
