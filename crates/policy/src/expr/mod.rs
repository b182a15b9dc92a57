//! Policy expressions: `@(expression)` and `@{ statements }` in a C# subset, parsed once at
//! write time and evaluated per request without reparsing.
//!
//! Invariants: parsing never panics, whatever the input; a name that cannot bind (an unknown
//! `context` member, variable or type) is a parse error; evaluation failures are values of
//! [`EvalError`], which the gateway turns into `ExpressionValueEvaluationFailure`.

mod eval;
mod lex;
mod parse;

pub use eval::{Env, EvalError, eval_code};
pub use parse::MAX_NESTING;

use base64::Engine;

/// A parse error at a byte offset of the expression's source.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} (at character {})", .offset + 1)]
pub struct ExprError {
    pub offset: usize,
    pub message: String,
}

impl ExprError {
    pub fn at(offset: usize, message: impl Into<String>) -> ExprError {
        ExprError {
            offset,
            message: message.into(),
        }
    }

    fn shift(mut self, by: usize) -> ExprError {
        self.offset += by;
        self
    }
}

/// A runtime value.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<V>),
    Json(serde_json::Value),
    /// Seconds since the Unix epoch, UTC (DateTime).
    Time(time::OffsetDateTime),
    /// An object of the policy context, by its dotted path (`Request.Headers`).
    Ctx(String),
    /// A static type (`string`, `DateTime`, …) whose members are being reached.
    Type(String),
    /// A `StringComparison` value: true for a case-insensitive comparison.
    Comparison(bool),
}

impl V {
    pub fn truthy(&self) -> Result<bool, EvalError> {
        match self {
            V::Bool(b) => Ok(*b),
            V::Json(serde_json::Value::Bool(b)) => Ok(*b),
            other => Err(EvalError(format!("{} is not a bool", other.type_name()))),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            V::Null => "null",
            V::Bool(_) => "bool",
            V::Int(_) => "int",
            V::Double(_) => "double",
            V::Str(_) => "string",
            V::Bytes(_) => "byte[]",
            V::List(_) => "array",
            V::Json(_) => "JToken",
            V::Time(_) => "DateTime",
            V::Ctx(_) => "context object",
            V::Type(_) => "type",
            V::Comparison(_) => "StringComparison",
        }
    }

    /// The value as text, as C#'s `ToString()` would give it.
    pub fn text(&self) -> String {
        match self {
            V::Null => String::new(),
            V::Bool(b) => if *b { "True" } else { "False" }.into(),
            V::Int(n) => n.to_string(),
            V::Double(d) => d.to_string(),
            V::Str(s) => s.clone(),
            V::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b),
            V::List(l) => l.iter().map(V::text).collect::<Vec<_>>().join(","),
            V::Json(serde_json::Value::String(s)) => s.clone(),
            V::Json(j) => j.to_string(),
            V::Time(t) => t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            V::Ctx(p) => p.clone(),
            V::Type(t) => t.clone(),
            V::Comparison(_) => "StringComparison".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(V),
    Interp(Vec<Expr>),
    Context,
    Local(String),
    Static(String),
    Member(Box<Expr>, String),
    /// `target?.member` and `target?.Method(…)`: null when the target is null.
    NullSafe(Box<Expr>, Box<Expr>),
    /// The placeholder of the target inside a `NullSafe` access.
    Target,
    /// `out var name` (or `out T name`) in TryParse calls: the local it assigns.
    OutVar(String),
    /// target.Method<T>(args)
    Call(Box<Expr>, String, Option<String>, Vec<Expr>),
    Index(Box<Expr>, Box<Expr>),
    Unary(&'static str, Box<Expr>),
    /// `first op₁ x₁ op₂ x₂ …`, applied from the left: the left-associative binary operators
    /// of one expression level kept flat, so that a chain of any length (an allow-list written
    /// as 5,000 `||`) costs neither recursion nor a deep tree.
    Binary(Box<Expr>, Vec<(&'static str, Expr)>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    Cast(String, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Var(String, Expr),
    Assign(String, Expr),
    If(Expr, Vec<Stmt>, Vec<Stmt>),
    Foreach(String, Expr, Vec<Stmt>),
    Return(Expr),
    Expr(Expr),
}

/// A value that is a literal or an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Text {
    Lit(String),
    Expr(std::sync::Arc<Code>),
}

impl Text {
    pub fn literal(&self) -> Option<&str> {
        match self {
            Text::Lit(s) => Some(s),
            Text::Expr(_) => None,
        }
    }
}

/// A compiled expression: `@(…)` or `@{…}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Code {
    Expr(Expr),
    Block(Vec<Stmt>),
}

impl Code {
    /// Whether evaluating this may read a message body (the gateway then buffers it).
    pub fn reads_body(&self) -> bool {
        format!("{self:?}").contains("\"Body\"")
    }
}

/// Parses `@(…)` or `@{…}` (with its `@` and brackets).
pub fn parse(src: &str) -> Result<Code, ExprError> {
    let t = src.trim();
    if let Some(inner) = t.strip_prefix("@(").and_then(|r| r.strip_suffix(')')) {
        let lead = src.len() - src.trim_start().len() + 2;
        return parse::parse_code(inner, false).map_err(|e| e.shift(lead));
    }
    if let Some(inner) = t.strip_prefix("@{").and_then(|r| r.strip_suffix('}')) {
        let lead = src.len() - src.trim_start().len() + 2;
        return parse::parse_code(inner, true).map_err(|e| e.shift(lead));
    }
    Err(ExprError::at(0, "an expression is written @(…) or @{ … }"))
}

/// Whether a text is an expression (starts with `@(` or `@{`).
pub fn is_expression(text: &str) -> bool {
    let t = text.trim_start();
    t.starts_with("@(") || t.starts_with("@{")
}

/// The members of APIM's `context` this engine provides, by dotted path.
const CONTEXT_MEMBERS: &[&str] = &[
    "Api",
    "Api.Id",
    "Api.Name",
    "Api.Path",
    "Api.ServiceUrl",
    "Api.Revision",
    "Api.Version",
    "Api.IsCurrentRevision",
    "Deployment",
    "Deployment.Region",
    "Deployment.ServiceName",
    "Deployment.GatewayId",
    "Elapsed",
    "LastError",
    "LastError.Source",
    "LastError.Reason",
    "LastError.Message",
    "LastError.Scope",
    "LastError.Section",
    "LastError.Path",
    "LastError.PolicyId",
    "Operation",
    "Operation.Id",
    "Operation.Method",
    "Operation.Name",
    "Operation.UrlTemplate",
    "Product",
    "Product.Id",
    "Product.Name",
    "Product.State",
    "Product.SubscriptionRequired",
    "Request",
    "Request.Body",
    "Request.Headers",
    "Request.IpAddress",
    "Request.MatchedParameters",
    "Request.Method",
    "Request.OriginalUrl",
    "Request.Url",
    "Request.Url.Host",
    "Request.Url.Path",
    "Request.Url.Port",
    "Request.Url.Query",
    "Request.Url.QueryString",
    "Request.Url.Scheme",
    "Request.OriginalUrl.Host",
    "Request.OriginalUrl.Path",
    "Request.OriginalUrl.Port",
    "Request.OriginalUrl.Query",
    "Request.OriginalUrl.QueryString",
    "Request.OriginalUrl.Scheme",
    "RequestId",
    "Response",
    "Response.Body",
    "Response.Headers",
    "Response.StatusCode",
    "Response.StatusReason",
    "Subscription",
    "Subscription.Id",
    "Subscription.Key",
    "Subscription.Name",
    "Subscription.PrimaryKey",
    "Subscription.SecondaryKey",
    "Subscription.CreatedDate",
    "Timestamp",
    "User",
    "User.Id",
    "User.Email",
    "User.FirstName",
    "User.LastName",
    "User.Groups",
    "Variables",
];

pub fn context_path_known(path: &str) -> bool {
    CONTEXT_MEMBERS.contains(&path)
}

#[cfg(test)]
mod tests;
