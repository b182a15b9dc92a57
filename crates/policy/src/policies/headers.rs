//! set-header, set-query-parameter and check-header.

use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{Exchange, ExistsAction, set_pairs};
use crate::expr::Text;
use crate::node::{At, Policy, Run};
use crate::position::Section;

/// set-header (on the response in outbound and on-error, else on the request) or
/// set-query-parameter.
#[derive(Debug)]
pub struct SetHeader {
    pub name: String,
    pub action: ExistsAction,
    pub values: Vec<Text>,
    pub query: bool,
}

pub fn parse_set_header<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    let tag = node.tag_name().name();
    let query = tag == "set-query-parameter";
    if query {
        cx.allowed_in(node, section, &[Section::Inbound, Section::Backend])?;
    }
    cx.check_attrs(node, &["name", "exists-action"])?;
    let name = cx.name_attr(node, "name")?;
    let action = cx.exists_action(node)?;
    let values = cx.values(node)?;
    if values.is_empty() && action != ExistsAction::Delete {
        return cx.err(
            node,
            format!("<{tag}> needs at least one <value> unless exists-action is delete"),
        );
    }
    Ok(Box::new(SetHeader {
        name,
        action,
        values,
        query,
    }))
}

impl Policy for SetHeader {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }
}

impl SetHeader {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), crate::exchange::Flow> {
        let values = at.texts(&self.values, ex)?;
        if self.query {
            set_pairs(&mut ex.query, &self.name, self.action, values);
        } else if ex.on_response(at.section) {
            let response = ex.response.as_mut().expect("on_response");
            response.headers.set(&self.name, self.action, values);
        } else {
            ex.request_headers.set(&self.name, self.action, values);
        }
        Ok(())
    }
}

/// check-header: the request must carry the header, with one of the values if any are given.
#[derive(Debug)]
pub struct CheckHeader {
    pub name: String,
    pub status: u16,
    pub message: String,
    pub ignore_case: bool,
    pub values: Vec<String>,
}

pub fn parse_check_header<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound])?;
    cx.check_attrs(
        node,
        &[
            "name",
            "failed-check-httpcode",
            "failed-check-error-message",
            "ignore-case",
        ],
    )?;
    let name = cx.name_attr(node, "name")?;
    let values = cx.item_texts(node, "value")?;
    Ok(Box::new(CheckHeader {
        name,
        status: cx.number(node, "failed-check-httpcode", None, 599)? as u16,
        message: cx
            .literal(node, "failed-check-error-message")?
            .unwrap_or_default(),
        ignore_case: cx.boolean(node, "ignore-case", false)?,
        values,
    }))
}

impl Policy for CheckHeader {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        let present: Vec<&str> = ex
            .request_headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(&self.name))
            .map(|(_, v)| v.as_str())
            .collect();
        if present.is_empty() {
            return Run::Done(at.fail(self.status, "HeaderNotFound", self.message.clone()));
        }
        let allowed = |p: &&str| {
            self.values.iter().any(|v| {
                if self.ignore_case {
                    v.eq_ignore_ascii_case(p)
                } else {
                    v == p
                }
            })
        };
        if self.values.is_empty() || present.iter().any(allowed) {
            Run::Done(crate::exchange::Flow::Next)
        } else {
            Run::Done(at.fail(self.status, "HeaderValueNotAllowed", self.message.clone()))
        }
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
    fn set_header_changes_the_request() {
        let mut ex = get(&[("x-a", "1")]);
        let doc = inbound(
            r#"<set-header name="x-a" exists-action="append"><value>2</value></set-header>
               <set-query-parameter name="v" exists-action="override"><value>@("x" + "y")</value></set-query-parameter>"#,
        );
        let flow = run_section(&doc, Section::Inbound, &mut ex, &Fake::default());
        assert!(matches!(flow, Flow::Next));
        let values: Vec<&str> = ex.request_headers.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(ex.query, [("v".to_string(), "xy".to_string())]);
    }

    #[test]
    fn check_header_refuses_what_is_missing_or_not_listed() {
        let doc = inbound(
            r#"<check-header name="x-tier" failed-check-httpcode="401" failed-check-error-message="no tier" ignore-case="true"><value>Gold</value></check-header>"#,
        );
        let refusal = |headers: &[(&str, &str)]| match run_section(
            &doc,
            Section::Inbound,
            &mut get(headers),
            &Fake::default(),
        ) {
            Flow::Fail(f) => Some((f.status, f.reason, f.message)),
            _ => None,
        };
        assert_eq!(refusal(&[("X-Tier", "gold")]), None);
        assert_eq!(
            refusal(&[]),
            Some((401, "HeaderNotFound", "no tier".to_string()))
        );
        assert_eq!(
            refusal(&[("x-tier", "silver")]).map(|r| r.1),
            Some("HeaderValueNotAllowed")
        );
    }
}
