//! set-status, return-response and mock-response: the response's status, or an answer made
//! without the backend.

use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{Exchange, Flow, ResponseParts};
use crate::expr::Text;
use crate::node::{At, Node, Policy, Run};
use crate::position::Section;

#[derive(Debug)]
pub struct SetStatus {
    pub code: Text,
    pub reason: Option<Text>,
}

pub fn parse_set_status<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    _: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["code", "reason"])?;
    let code = cx.required(node, "code")?;
    if let Text::Lit(l) = &code
        && !l.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c))
    {
        return cx.err(
            node,
            format!("'code' must be an HTTP status from 100 to 599, not '{l}'"),
        );
    }
    Ok(Box::new(SetStatus {
        code,
        reason: cx.attr_text(node, "reason")?,
    }))
}

impl Policy for SetStatus {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }
}

impl SetStatus {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let code = at.text(&self.code, ex)?;
        let status = code
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|s| (100..=599).contains(s));
        let Some(status) = status else {
            return Err(at.fail(
                500,
                "ExpressionValueEvaluationFailure",
                format!("'{code}' is not an HTTP status"),
            ));
        };
        let reason = match &self.reason {
            Some(r) => at.text(r, ex)?,
            None => String::new(),
        };
        let response = ex.response.get_or_insert_with(ResponseParts::default);
        response.status = status;
        response.reason = reason;
        Ok(())
    }
}

/// return-response: a response built by set-status, set-header and set-body, sent at once.
#[derive(Debug)]
pub struct ReturnResponse {
    pub variable: Option<String>,
    pub steps: Vec<Node>,
}

pub fn parse_return_response<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    _: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["response-variable-name"])?;
    let mut steps = Vec::new();
    for c in cx.children(node)? {
        if !matches!(
            c.tag_name().name(),
            "set-status" | "set-header" | "set-body"
        ) {
            return cx.err(
                c,
                "<return-response> may contain only <set-status>, <set-header> and <set-body>",
            );
        }
        cx.compile(c, Section::Outbound, &mut steps)?;
    }
    Ok(Box::new(ReturnResponse {
        variable: cx.literal(node, "response-variable-name")?,
        steps,
    }))
}

impl Policy for ReturnResponse {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::Wait(Box::pin(async move {
            let fresh = ResponseParts {
                status: 200,
                reason: "OK".into(),
                headers: Vec::new().into(),
                body: Some(Vec::new()),
            };
            let saved = ex.response.replace(fresh);
            for step in &self.steps {
                let Some(policy) = step.policy() else {
                    continue;
                };
                let flow = match policy.run(at.with(step, Section::Outbound), &mut *ex) {
                    Run::Done(flow) => flow,
                    Run::Wait(f) => f.await,
                };
                if !matches!(flow, Flow::Next) {
                    ex.response = saved;
                    return flow;
                }
            }
            ex.response.get_or_insert_with(ResponseParts::default);
            Flow::Respond
        }))
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }
}

/// mock-response: the operation's example for a status, or an empty body.
#[derive(Debug)]
pub struct MockResponse {
    pub status: u16,
    pub content_type: Option<String>,
}

pub fn parse_mock_response<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(
        node,
        section,
        &[Section::Inbound, Section::Outbound, Section::OnError],
    )?;
    cx.check_attrs(node, &["status-code", "content-type", "index"])?;
    Ok(Box::new(MockResponse {
        status: cx.number(node, "status-code", Some(200), 599)? as u16,
        content_type: cx.literal(node, "content-type")?,
    }))
}

impl Policy for MockResponse {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        let (content_type, body) = at
            .svc
            .example(self.status, self.content_type.as_deref())
            .unwrap_or_else(|| (self.content_type.clone().unwrap_or_default(), String::new()));
        let mut headers = Vec::new();
        if !content_type.is_empty() {
            headers.push(("Content-Type".to_string(), content_type));
        }
        ex.response = Some(ResponseParts {
            status: self.status,
            reason: String::new(),
            headers: headers.into(),
            body: Some(body.into_bytes()),
        });
        Run::Done(Flow::Respond)
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::exchange::Flow;
    use crate::position::Section;
    use crate::testing::{Fake, get, inbound, run_section};

    #[test]
    fn return_response_answers_without_the_backend() {
        let doc = inbound(
            r#"<return-response><set-status code="418" reason="Teapot" /><set-header name="x-made" exists-action="override"><value>here</value></set-header><set-body>@("short and " + "stout")</set-body></return-response>"#,
        );
        let mut ex = get(&[]);
        let flow = run_section(&doc, Section::Inbound, &mut ex, &Fake::default());
        assert!(matches!(flow, Flow::Respond));
        let r = ex.response.expect("a response");
        assert_eq!((r.status, r.reason.as_str()), (418, "Teapot"));
        assert_eq!(r.header("x-made"), Some("here"));
        assert_eq!(r.body.as_deref(), Some(&b"short and stout"[..]));
    }

    #[test]
    fn a_status_from_an_expression_must_be_one() {
        let doc = inbound(r#"<set-status code="@("999")" />"#);
        match run_section(&doc, Section::Inbound, &mut get(&[]), &Fake::default()) {
            Flow::Fail(f) => assert_eq!(f.reason, "ExpressionValueEvaluationFailure"),
            other => panic!("{other:?}"),
        }
    }
}
