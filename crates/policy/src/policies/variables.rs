//! set-variable and trace.

use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{Exchange, Flow};
use crate::expr::Text;
use crate::node::{At, Policy, Run};
use crate::position::Section;

#[derive(Debug)]
pub struct SetVariable {
    pub name: String,
    pub value: Text,
}

pub fn parse_set_variable<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    _: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["name", "value"])?;
    Ok(Box::new(SetVariable {
        name: cx.name_attr(node, "name")?,
        value: cx.required(node, "value")?,
    }))
}

impl Policy for SetVariable {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        match at.value(&self.value, ex) {
            Ok(value) => {
                ex.variables.insert(self.name.clone(), value);
                Run::Done(Flow::Next)
            }
            Err(flow) => Run::Done(flow),
        }
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }
}

/// trace: a message to the gateway's trace log.
#[derive(Debug)]
pub struct Trace {
    pub source: String,
    pub message: Text,
}

pub fn parse_trace<'a>(cx: &mut Ctx<'a, '_>, node: XNode<'a>, _: Section) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["source", "severity"])?;
    let mut message = Text::Lit(String::new());
    // APIM takes the message as text inside <trace> too.
    let text = cx.element_text(node);
    if !text.trim().is_empty() {
        message = cx.text_value(node, text.trim())?;
    }
    for c in node.children().filter(|c| c.is_element()) {
        match c.tag_name().name() {
            "message" => {
                let text = cx.element_text(c);
                message = cx.text_value(c, &text)?;
            }
            "metadata" => {}
            other => return cx.err(c, format!("<trace> has no element <{other}>")),
        }
    }
    Ok(Box::new(Trace {
        source: cx.literal(node, "source")?.unwrap_or_default(),
        message,
    }))
}

impl Policy for Trace {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        match at.text(&self.message, ex) {
            Ok(message) => {
                at.svc.trace(&self.source, &message);
                Run::Done(Flow::Next)
            }
            Err(flow) => Run::Done(flow),
        }
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }
}
