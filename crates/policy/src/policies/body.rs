//! set-body, find-and-replace, json-to-xml and xml-to-json: the message's body.

use crate::compile::{Ctx, Res, XNode};
use crate::convert;
use crate::exchange::{Exchange, ExistsAction, Flow, set_pairs};
use crate::expr::Text;
use crate::node::{At, Policy, Run};
use crate::position::Section;

/// The body a policy in `section` works on: the response's once there is one in outbound and
/// on-error, else the request's (marked changed, so the gateway sends the new one).
fn body_of(section: Section, ex: &mut Exchange) -> &mut Option<Vec<u8>> {
    if ex.on_response(section) {
        return &mut ex.response.as_mut().expect("on_response").body;
    }
    ex.request_body_changed = true;
    &mut ex.request_body
}

#[derive(Debug)]
pub struct SetBody(pub Text);

pub fn parse_set_body<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    _: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["template", "xsi-nil", "parse-date"])?;
    if node.attribute("template").is_some_and(|t| t != "none") {
        return cx.err(
            node,
            "set-body templates (liquid) are not supported; use an expression",
        );
    }
    let text = cx.element_text(node);
    Ok(Box::new(SetBody(cx.text_value(node, &text)?)))
}

impl Policy for SetBody {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        match at.text(&self.0, ex) {
            Ok(body) => {
                *body_of(at.section, ex) = Some(body.into_bytes());
                Run::Done(Flow::Next)
            }
            Err(flow) => Run::Done(flow),
        }
    }
}

#[derive(Debug)]
pub struct FindAndReplace {
    pub from: Text,
    pub to: Text,
}

pub fn parse_find_and_replace<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    _: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["from", "to"])?;
    cx.reads_body = true;
    Ok(Box::new(FindAndReplace {
        from: cx.required(node, "from")?,
        to: cx.required(node, "to")?,
    }))
}

impl Policy for FindAndReplace {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }
}

impl FindAndReplace {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let from = at.text(&self.from, ex)?;
        let to = at.text(&self.to, ex)?;
        if let Some(body) = body_of(at.section, ex).as_mut()
            && !from.is_empty()
        {
            *body = String::from_utf8_lossy(body)
                .replace(&from, &to)
                .into_bytes();
        }
        Ok(())
    }
}

/// json-to-xml (`to_xml`) or xml-to-json.
#[derive(Debug)]
pub struct Convert {
    pub to_xml: bool,
    /// Convert only when the body's content type says JSON (XML).
    pub only_matching_type: bool,
    pub consider_accept: bool,
    pub direct: bool,
}

pub fn parse_convert<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(
        node,
        section,
        &[Section::Inbound, Section::Outbound, Section::OnError],
    )?;
    let to_xml = node.tag_name().name() == "json-to-xml";
    cx.check_attrs(
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
    cx.reads_body = true;
    let matching = if to_xml {
        "content-type-json"
    } else {
        "content-type-xml"
    };
    let apply = cx.choice(node, "apply", &["always", matching])?;
    let kind = cx.choice(node, "kind", &["javascript-friendly", "direct"])?;
    Ok(Box::new(Convert {
        to_xml,
        only_matching_type: apply != "always",
        consider_accept: cx.boolean(node, "consider-accept-header", true)?,
        direct: kind == "direct",
    }))
}

impl Policy for Convert {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }
}

impl Convert {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let (want, have) = if self.to_xml {
            ("xml", "json")
        } else {
            ("json", "xml")
        };
        let on_response = ex.on_response(at.section);
        let accepts = |ex: &Exchange| {
            ex.header("Accept")
                .is_some_and(|a| a.to_ascii_lowercase().contains(want))
        };
        if self.consider_accept && on_response && !accepts(ex) {
            return Ok(());
        }
        let content_type = match &ex.response {
            Some(r) if on_response => r.header("Content-Type"),
            _ => ex.header("Content-Type"),
        };
        let typed = content_type.is_some_and(|c| c.to_ascii_lowercase().contains(have));
        if self.only_matching_type && !typed {
            return Ok(());
        }
        let source = match &ex.response {
            Some(r) if on_response => r.body.as_deref(),
            _ => ex.request_body.as_deref(),
        };
        let Some(bytes) = source.filter(|b| !b.is_empty()) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(bytes);
        let converted = if self.to_xml {
            convert::json_to_xml(&text)
        } else {
            convert::xml_to_json(&text, self.direct)
        };
        let converted = converted.map_err(|e| at.fail(500, "ConversionFailure", e.to_string()))?;
        *body_of(at.section, ex) = Some(converted.into_bytes());
        let new_type = if self.to_xml {
            "application/xml"
        } else {
            "application/json"
        };
        let headers = match ex.response.as_mut() {
            Some(r) if on_response => &mut *r.headers,
            _ => &mut *ex.request_headers,
        };
        set_pairs(
            headers,
            "Content-Type",
            ExistsAction::Override,
            vec![new_type.into()],
        );
        Ok(())
    }
}
