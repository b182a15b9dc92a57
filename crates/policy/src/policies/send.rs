//! send-request and send-one-way-request: a request of the policy's own, made while the
//! client's waits.

use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{Exchange, ExistsAction, Flow, Outgoing, ResponseParts, set_pairs};
use crate::expr::{Text, V};
use crate::node::{At, Num, Policy, Run};
use crate::position::Section;

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
    /// The token of authentication-managed-identity into the request's Authorization header.
    Identity(super::access::ManagedIdentity),
}

/// send-request, or send-one-way-request when `one_way`.
#[derive(Debug)]
pub struct SendRequest {
    pub mode_copy: bool,
    pub variable: Option<String>,
    pub timeout_secs: Num,
    pub ignore_error: bool,
    pub one_way: bool,
    pub steps: Vec<SendStep>,
}

pub fn parse_send_request<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    _: Section,
) -> Res<Box<dyn Policy>> {
    let name = node.tag_name().name();
    let one_way = name == "send-one-way-request";
    let attrs: &[&str] = if one_way {
        &["mode", "timeout"]
    } else {
        &["mode", "response-variable-name", "timeout", "ignore-error"]
    };
    cx.check_attrs(node, attrs)?;
    let mode_copy = cx.choice(node, "mode", &["new", "copy"])? == "copy";
    let variable = cx.literal(node, "response-variable-name")?;
    if !one_way && variable.is_none() {
        return cx.err(
            node,
            "<send-request> needs the attribute 'response-variable-name'",
        );
    }
    let mut steps = Vec::new();
    for c in cx.children(node)? {
        steps.push(parse_step(cx, c, name)?);
    }
    if !mode_copy && !steps.iter().any(|s| matches!(s, SendStep::Url(_))) {
        return cx.err(node, format!("<{name}> mode=\"new\" needs <set-url>"));
    }
    Ok(Box::new(SendRequest {
        mode_copy,
        variable,
        timeout_secs: cx.number_or_expr(node, "timeout", Some(60), 240)?,
        ignore_error: cx.boolean(node, "ignore-error", false)?,
        one_way,
        steps,
    }))
}

fn parse_step<'a>(cx: &mut Ctx<'a, '_>, c: XNode<'a>, parent: &str) -> Res<SendStep> {
    let text = |cx: &mut Ctx<'a, '_>| {
        let t = cx.element_text(c);
        cx.text_value(c, &t)
    };
    Ok(match c.tag_name().name() {
        "set-url" => SendStep::Url(text(cx)?),
        "set-method" => SendStep::Method(text(cx)?),
        "set-body" => SendStep::Body(text(cx)?),
        "set-header" => {
            cx.check_attrs(c, &["name", "exists-action"])?;
            SendStep::Header {
                name: cx.name_attr(c, "name")?,
                action: cx.exists_action(c)?,
                values: cx.values(c)?,
            }
        }
        "authentication-managed-identity" => {
            SendStep::Identity(super::access::parse_managed_identity(cx, c)?)
        }
        inner @ ("authentication-certificate" | "proxy") => {
            return cx.err(c, format!("<{inner}> inside <{parent}> is not supported"));
        }
        other => return cx.err(c, format!("<{parent}> has no element <{other}>")),
    })
}

impl Policy for SendRequest {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::Wait(Box::pin(async move {
            let (mut req, timeout) = match self
                .request(at, ex)
                .and_then(|r| Ok((r, at.number(&self.timeout_secs, ex)?)))
            {
                Ok(r) => r,
                Err(flow) => return flow,
            };
            for step in &self.steps {
                if let SendStep::Identity(identity) = step {
                    match identity.token(at, ex).await {
                        Ok(Some(token)) => set_pairs(
                            &mut req.headers,
                            "Authorization",
                            ExistsAction::Override,
                            vec![format!("Bearer {token}")],
                        ),
                        Ok(None) => {}
                        Err(flow) => return flow,
                    }
                }
            }
            if self.one_way {
                at.svc.send_one_way(req);
                return Flow::Next;
            }
            let answer = match at.svc.send(req, timeout).await {
                Ok(r) => response_value(&r),
                Err(_) if self.ignore_error => V::Null,
                Err(e) => {
                    return at.fail(
                        500,
                        "SendRequestFailure",
                        format!("send-request failed: {e}"),
                    );
                }
            };
            if let Some(v) = &self.variable {
                ex.variables.insert(v.clone(), answer);
            }
            Flow::Next
        }))
    }
}

impl SendRequest {
    /// The request the steps build (from a copy of the client's with mode="copy").
    fn request(&self, at: At<'_>, ex: &Exchange) -> Result<Outgoing, Flow> {
        let mut req = if self.mode_copy {
            Outgoing {
                method: ex.method.to_string(),
                url: String::new(),
                headers: ex.request_headers.to_vec(),
                body: ex.request_body.clone(),
            }
        } else {
            Outgoing {
                method: "GET".into(),
                ..Outgoing::default()
            }
        };
        for step in &self.steps {
            match step {
                SendStep::Url(t) => req.url = at.text(t, ex)?,
                SendStep::Method(t) => req.method = at.text(t, ex)?.to_ascii_uppercase(),
                SendStep::Header {
                    name,
                    action,
                    values,
                } => set_pairs(&mut req.headers, name, *action, at.texts(values, ex)?),
                SendStep::Body(t) => req.body = Some(at.text(t, ex)?.into_bytes()),
                SendStep::Identity(_) => {}
            }
        }
        if req.url.is_empty() {
            return Err(at.fail(
                500,
                "ExpressionValueEvaluationFailure",
                "send-request has no URL (set-url)",
            ));
        }
        Ok(req)
    }
}

/// A send-request answer as the variable holds it: `StatusCode`, `Headers`, `Body`.
fn response_value(r: &ResponseParts) -> V {
    let headers: serde_json::Map<String, serde_json::Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    V::json(serde_json::json!({
        "StatusCode": r.status,
        "StatusReason": r.reason,
        "Headers": headers,
        "Body": r.body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(),
    }))
}
