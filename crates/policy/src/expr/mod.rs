//! Policy expressions: `@(expression)` and `@{ statements }` in a C# subset, parsed once at
//! write time and evaluated per request without reparsing.
//!
//! Invariants: parsing never panics, whatever the input; a name that cannot bind (an unknown
//! `context` member, variable or type) is a parse error; evaluation failures are values of
//! [`EvalError`], which the gateway turns into `ExpressionValueEvaluationFailure`.

mod ast;
mod clock;
mod construct;
mod eval;
mod lex;
mod library;
mod parse;
mod stmt;
mod types;
mod value;
mod xtree;

pub use ast::{Body, Expr, Stmt};
pub use eval::{MAX_CALL_DEPTH, MAX_STEPS, eval_code};
pub use parse::MAX_NESTING;
pub use value::{Env, EvalError, Json, V};

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

/// A compiled expression: `@(…)` or `@{…}`, with the size of the frame its locals need.
#[derive(Debug, Clone, PartialEq)]
pub struct Code {
    pub body: Body,
    pub slots: usize,
}

impl Code {
    /// A constant.
    pub fn literal(v: V) -> Code {
        Code {
            body: Body::Expr(Expr::Lit(v)),
            slots: 0,
        }
    }

    /// Whether evaluating this may read a message body (the gateway then buffers it).
    pub fn reads_body(&self) -> bool {
        // `"Body"` as a member, or the end of a bound path (`"Request.Body"`).
        format!("{:?}", self.body).contains("Body\"")
    }
}

/// Parses `@(…)` or `@{…}` (with its `@` and brackets).
pub fn parse(src: &str) -> Result<Code, ExprError> {
    let t = src.trim();
    if let Some(inner) = t.strip_prefix("@(").and_then(|r| r.strip_suffix(')')) {
        let lead = src.len() - src.trim_start().len() + 2;
        let (body, slots) = parse::parse_code(inner, false).map_err(|e| e.shift(lead))?;
        return Ok(Code { body, slots });
    }
    if let Some(inner) = t.strip_prefix("@{").and_then(|r| r.strip_suffix('}')) {
        let lead = src.len() - src.trim_start().len() + 2;
        let (body, slots) = parse::parse_code(inner, true).map_err(|e| e.shift(lead))?;
        return Ok(Code { body, slots });
    }
    Err(ExprError::at(0, "an expression is written @(…) or @{ … }"))
}

/// A date in text (ISO 8601, RFC 1123, `/Date(ms)/`, …) written with a .NET format string, as
/// Liquid's `Date` filter in APIM does; `None` when the text is not a date.
pub fn format_date(text: &str, format: &str) -> Option<String> {
    let t = match text
        .trim()
        .strip_prefix("/Date(")
        .and_then(|r| r.strip_suffix(")/"))
    {
        Some(ms) => time::OffsetDateTime::from_unix_timestamp_nanos(
            ms.split(['+', '-']).next()?.parse::<i128>().ok()? * 1_000_000,
        )
        .ok()?,
        None => clock::parse(text)?,
    };
    Some(clock::format(t, format))
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
    "Api.Protocols",
    "Api.SubscriptionKeyParameterNames",
    "Api.SubscriptionKeyParameterNames.Header",
    "Api.SubscriptionKeyParameterNames.Query",
    "Backend",
    "Backend.Id",
    "Backend.Type",
    "Deployment.Gateway",
    "Deployment.Gateway.Id",
    "Deployment.Gateway.InstanceId",
    "Deployment.Gateway.IsManaged",
    "Deployment.ServiceId",
    "Workspace",
    "Workspace.Id",
    "Workspace.Name",
    "Tracing",
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
    "Product.ApprovalRequired",
    "Product.SubscriptionsLimit",
    "Product.SubscriptionLimit",
    "Product.Groups",
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
    // Without a client certificate (the gateway does not ask for one) this is null.
    "Request.Certificate",
    "Request.Certificate.Thumbprint",
    "Request.Certificate.Subject",
    "Request.Certificate.Issuer",
    "Request.Certificate.NotAfter",
    "Request.Certificate.NotBefore",
    "Request.Certificate.SerialNumber",
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
    "Subscription.StartDate",
    "Subscription.EndDate",
    "Timestamp",
    "User",
    "User.Id",
    "User.Email",
    "User.FirstName",
    "User.LastName",
    "User.Groups",
    "User.Note",
    "User.RegistrationDate",
    "User.Identities",
    "Variables",
];

/// Whether `context.<path>` can be read: a member of the context, a member of a map
/// (`Headers.Count`), or a member of a value the context gives (`Timestamp.Year`,
/// `Request.Method.Length`, `Elapsed.TotalMilliseconds`).
/// Whether `path` is a member of the context itself (not a member of a value it gives).
pub(crate) fn is_context_member(path: &str) -> bool {
    CONTEXT_MEMBERS.contains(&path)
}

pub fn context_path_known(path: &str) -> bool {
    if CONTEXT_MEMBERS.contains(&path) {
        return true;
    }
    let Some((parent, name)) = path.rsplit_once('.') else {
        return false;
    };
    const OBJECTS: &[&str] = &[
        "Api",
        "Deployment",
        "LastError",
        "Operation",
        "Product",
        "Request",
        "Response",
        "Subscription",
        "User",
        "Request.Url",
        "Request.OriginalUrl",
        "Request.Body",
        "Response.Body",
        "Backend",
        "Workspace",
        "Deployment.Gateway",
        "Api.SubscriptionKeyParameterNames",
    ];
    if library::is_context_map(parent) {
        return matches!(name, "Count" | "Keys" | "Values");
    }
    CONTEXT_MEMBERS.contains(&parent) && !OBJECTS.contains(&parent) && types::is_member(name)
        || (!CONTEXT_MEMBERS.contains(&parent)
            && context_path_known(parent)
            && types::is_member(name))
}

#[cfg(test)]
mod tests;
