//! validate-parameters, validate-headers and validate-status-code: the request's parameters and
//! the response's status and headers checked against the operation's definition (its
//! `templateParameters`, `request.queryParameters` and `request.headers`, and `responses`).
//!
//! Each finding has an action: `prevent` stops the request (400 for a request, 502 for a
//! response, as APIM), `detect` records it in `errors-variable-name` and the trace, `ignore`
//! drops it. Findings are APIM's error objects: Name, Type, ValidationRule, Details, Action.

use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{Exchange, Flow};
use crate::expr::V;
use crate::node::{At, Policy, Run};
use crate::position::Section;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Prevent,
    Detect,
    Ignore,
}

pub(crate) fn action(
    cx: &Ctx<'_, '_>,
    node: XNode<'_>,
    name: &str,
    default: Option<Action>,
) -> Res<Action> {
    match cx.literal(node, name)?.as_deref() {
        Some("prevent") => Ok(Action::Prevent),
        Some("detect") => Ok(Action::Detect),
        Some("ignore") => Ok(Action::Ignore),
        None => match default {
            Some(a) => Ok(a),
            None => cx.err(
                node,
                format!(
                    "<{}> needs the attribute '{name}' (prevent, detect or ignore)",
                    node.tag_name().name()
                ),
            ),
        },
        Some(other) => cx.err(
            node,
            format!("'{name}' must be prevent, detect or ignore, not '{other}'"),
        ),
    }
}

/// Per-name actions (`<parameter name action>`, `<header name action>`, `<status-code code action>`).
fn overrides(
    cx: &Ctx<'_, '_>,
    node: XNode<'_>,
    item: &str,
    key: &str,
) -> Res<Vec<(String, Action)>> {
    let mut out = Vec::new();
    for c in cx.children(node)? {
        if c.tag_name().name() != item {
            return cx.err(
                c,
                format!(
                    "<{}> may contain <{item}>, not <{}>",
                    node.tag_name().name(),
                    c.tag_name().name()
                ),
            );
        }
        cx.check_attrs(c, &[key, "action"])?;
        let name = cx.literal(c, key)?.unwrap_or_default();
        out.push((name, action(cx, c, "action", None)?));
    }
    Ok(out)
}

/// A finding: the error object, and what its action says.
pub(crate) struct Finding {
    error: Value,
    action: Action,
}

pub(crate) fn finding(
    name: &str,
    kind: &str,
    rule: &str,
    details: String,
    action: Action,
) -> Finding {
    let word = match action {
        Action::Prevent => "prevent",
        Action::Detect => "detect",
        Action::Ignore => "ignore",
    };
    Finding {
        error: json!({"Name": name, "Type": kind, "ValidationRule": rule, "Details": details, "Action": word}),
        action,
    }
}

/// Records the findings; the first `prevent` one stops the request.
pub(crate) fn conclude(
    at: At<'_>,
    ex: &mut Exchange,
    variable: &Option<String>,
    findings: Vec<Finding>,
    status: u16,
) -> Result<(), Flow> {
    let kept: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.action != Action::Ignore)
        .collect();
    if let Some(v) = variable
        && !kept.is_empty()
    {
        let list = kept.iter().map(|f| V::json(f.error.clone())).collect();
        ex.variables.insert(v.clone(), V::list(list));
    }
    for f in &kept {
        at.svc.trace(at.node.name, &f.error.to_string());
    }
    match kept.iter().find(|f| f.action == Action::Prevent) {
        Some(f) => {
            let details = f.error["Details"].as_str().unwrap_or("").to_string();
            let reason = if status == 400 {
                "RequestValidationFailed"
            } else {
                "ResponseValidationFailed"
            };
            Err(at.fail(status, reason, details))
        }
        None => Ok(()),
    }
}

/// The operation's definition, or the policy's error when the request has no operation.
pub(crate) fn definition(at: At<'_>) -> Result<Value, Flow> {
    at.svc.operation_definition().ok_or_else(|| {
        at.fail(
            500,
            "ValidationFailure",
            "The request matched no operation, so its definition cannot be checked.",
        )
    })
}

/// Whether a text has a parameter's declared type.
fn of_type(value: &str, ty: &str) -> bool {
    match ty {
        "integer" => value.trim().parse::<i64>().is_ok(),
        "number" => value.trim().parse::<f64>().is_ok(),
        "boolean" => matches!(value.trim().to_ascii_lowercase().as_str(), "true" | "false"),
        _ => true,
    }
}

#[derive(Debug)]
struct Scope {
    specified: Action,
    unspecified: Action,
    overrides: Vec<(String, Action)>,
}

#[derive(Debug)]
pub struct ValidateParameters {
    headers: Scope,
    query: Scope,
    path: Scope,
    variable: Option<String>,
}

pub fn parse_validate_parameters<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound])?;
    cx.check_attrs(
        node,
        &[
            "specified-parameter-action",
            "unspecified-parameter-action",
            "errors-variable-name",
        ],
    )?;
    let specified = action(cx, node, "specified-parameter-action", None)?;
    let unspecified = action(cx, node, "unspecified-parameter-action", None)?;
    let scope = |o| Scope {
        specified,
        unspecified,
        overrides: o,
    };
    let mut p = ValidateParameters {
        headers: scope(Vec::new()),
        query: scope(Vec::new()),
        path: scope(Vec::new()),
        variable: cx.literal(node, "errors-variable-name")?,
    };
    for c in cx.children(node)? {
        cx.check_attrs(
            c,
            &["specified-parameter-action", "unspecified-parameter-action"],
        )?;
        let s = Scope {
            specified: action(cx, c, "specified-parameter-action", Some(specified))?,
            unspecified: action(cx, c, "unspecified-parameter-action", Some(unspecified))?,
            overrides: overrides(cx, c, "parameter", "name")?,
        };
        match c.tag_name().name() {
            "headers" => p.headers = s,
            "query" => p.query = s,
            "path" => p.path = s,
            other => return cx.err(
                c,
                format!(
                    "<validate-parameters> may contain <headers>, <query> and <path>, not <{other}>"
                ),
            ),
        }
    }
    Ok(Box::new(p))
}

/// Request fields that are the gateway's, never an operation's parameters.
const GATEWAY_FIELDS: &[&str] = &[
    "ocp-apim-subscription-key",
    "subscription-key",
    "ocp-apim-trace",
];

impl Scope {
    fn action_for(&self, name: &str, specified: bool) -> Action {
        self.overrides
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, a)| *a)
            .unwrap_or(if specified {
                self.specified
            } else {
                self.unspecified
            })
    }

    /// The findings for `given` against the declared `params` (`name`, `required`, `type`).
    fn check(
        &self,
        kind: &str,
        params: &[Value],
        given: &[(String, String)],
        findings: &mut Vec<Finding>,
    ) {
        for p in params {
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
            let value = given
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v);
            let action = self.action_for(name, true);
            match value {
                None if p.get("required").and_then(Value::as_bool).unwrap_or(false) => findings
                    .push(finding(
                        name,
                        kind,
                        "IncorrectMessage",
                        format!("The {kind} parameter '{name}' is required but missing."),
                        action,
                    )),
                Some(v)
                    if !of_type(v, p.get("type").and_then(Value::as_str).unwrap_or("string")) =>
                {
                    findings.push(finding(
                        name,
                        kind,
                        "IncorrectMessage",
                        format!(
                            "The {kind} parameter '{name}' is not of type {}.",
                            p["type"].as_str().unwrap_or("string")
                        ),
                        action,
                    ))
                }
                _ => {}
            }
        }
        for (k, _) in given {
            let declared = params.iter().any(|p| {
                p.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.eq_ignore_ascii_case(k))
            });
            if !declared && !GATEWAY_FIELDS.contains(&k.to_ascii_lowercase().as_str()) {
                findings.push(finding(
                    k,
                    kind,
                    "IncorrectMessage",
                    format!("The {kind} parameter '{k}' is not defined for this operation."),
                    self.action_for(k, false),
                ));
            }
        }
    }
}

impl Policy for ValidateParameters {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }
}

impl ValidateParameters {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let op = definition(at)?;
        let list = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
        let request = op.get("request");
        let mut findings = Vec::new();
        self.path.check(
            "path",
            &list(op.get("templateParameters")),
            &ex.matched_parameters,
            &mut findings,
        );
        let query: Vec<(String, String)> = form_urlencoded::parse(ex.original_query.as_bytes())
            .into_owned()
            .collect();
        self.query.check(
            "query",
            &list(request.and_then(|r| r.get("queryParameters"))),
            &query,
            &mut findings,
        );
        let headers: Vec<(String, String)> = ex
            .request_headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.headers.check(
            "header",
            &list(request.and_then(|r| r.get("headers"))),
            &headers,
            &mut findings,
        );
        conclude(at, ex, &self.variable, findings, 400)
    }
}

/// Response headers every response may carry, whatever its definition says.
const TRANSPORT_HEADERS: &[&str] = &[
    "content-length",
    "content-type",
    "date",
    "server",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "vary",
    "cache-control",
    "etag",
    "last-modified",
    "expires",
    "pragma",
    "content-encoding",
    "request-context",
];

#[derive(Debug)]
pub struct ValidateHeaders {
    specified: Action,
    unspecified: Action,
    overrides: Vec<(String, Action)>,
    variable: Option<String>,
}

pub fn parse_validate_headers<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Outbound, Section::OnError])?;
    cx.check_attrs(
        node,
        &[
            "specified-header-action",
            "unspecified-header-action",
            "errors-variable-name",
        ],
    )?;
    Ok(Box::new(ValidateHeaders {
        specified: action(cx, node, "specified-header-action", None)?,
        unspecified: action(cx, node, "unspecified-header-action", None)?,
        overrides: overrides(cx, node, "header", "name")?,
        variable: cx.literal(node, "errors-variable-name")?,
    }))
}

/// The operation's declared response for a status (an exact code, or `default`).
pub(crate) fn response_for(op: &Value, status: u16) -> Option<&Value> {
    let responses = op.get("responses")?.as_array()?;
    responses
        .iter()
        .find(|r| r.get("statusCode").and_then(Value::as_u64) == Some(status as u64))
}

impl Policy for ValidateHeaders {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }
}

impl ValidateHeaders {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let op = definition(at)?;
        let Some(response) = ex.response.as_ref() else {
            return Ok(());
        };
        let declared: Vec<Value> = response_for(&op, response.status)
            .and_then(|r| r.get("headers"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let scope = Scope {
            specified: self.specified,
            unspecified: self.unspecified,
            overrides: self.overrides.clone(),
        };
        let given: Vec<(String, String)> = response
            .headers
            .iter()
            .filter(|(k, _)| !TRANSPORT_HEADERS.contains(&k.to_ascii_lowercase().as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut findings = Vec::new();
        scope.check("header", &declared, &given, &mut findings);
        conclude(at, ex, &self.variable, findings, 502)
    }
}

#[derive(Debug)]
pub struct ValidateStatusCode {
    unspecified: Action,
    overrides: Vec<(String, Action)>,
    variable: Option<String>,
}

pub fn parse_validate_status_code<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Outbound, Section::OnError])?;
    cx.check_attrs(
        node,
        &["unspecified-status-code-action", "errors-variable-name"],
    )?;
    let overrides = overrides(cx, node, "status-code", "code")?;
    for (code, _) in &overrides {
        if code
            .parse::<u16>()
            .map_or(true, |c| !(100..=599).contains(&c))
        {
            return cx.err(
                node,
                format!("<status-code code> must be a status from 100 to 599, not '{code}'"),
            );
        }
    }
    Ok(Box::new(ValidateStatusCode {
        unspecified: action(cx, node, "unspecified-status-code-action", None)?,
        overrides,
        variable: cx.literal(node, "errors-variable-name")?,
    }))
}

impl Policy for ValidateStatusCode {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }
}

impl ValidateStatusCode {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let op = definition(at)?;
        let Some(status) = ex.response.as_ref().map(|r| r.status) else {
            return Ok(());
        };
        if response_for(&op, status).is_some() {
            return Ok(());
        }
        let action = self
            .overrides
            .iter()
            .find(|(c, _)| c.parse::<u16>().ok() == Some(status))
            .map_or(self.unspecified, |(_, a)| *a);
        let f = finding(
            &status.to_string(),
            "statuscode",
            "IncorrectMessage",
            format!("The response status {status} is not defined for this operation."),
            action,
        );
        conclude(at, ex, &self.variable, vec![f], 502)
    }
}
