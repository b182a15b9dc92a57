//! emit-metric and log-to-eventhub: what a policy tells the outside about a request. Neither
//! fails the request when its sink does not take the sample: APIM sends both asynchronously.

use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{Exchange, Flow, Metric};
use crate::expr::Text;
use crate::node::{At, Policy, Run};
use crate::position::Section;

/// APIM's limit on an emit-metric's dimensions.
const MAX_DIMENSIONS: usize = 5;

/// Dimensions APIM fills in when their value is omitted, and the `context` member each reads.
const DEFAULT_DIMENSIONS: &[(&str, &str)] = &[
    ("API ID", "Api.Id"),
    ("Operation ID", "Operation.Id"),
    ("Product ID", "Product.Id"),
    ("User ID", "User.Id"),
    ("Subscription ID", "Subscription.Id"),
    ("Location", "Deployment.Region"),
    ("Gateway ID", "Deployment.GatewayId"),
];

#[derive(Debug)]
pub struct EmitMetric {
    pub name: String,
    pub namespace: String,
    pub value: Option<Text>,
    /// Each dimension's name, and its value (or the `context` member a default reads).
    pub dimensions: Vec<(String, Dimension)>,
}

#[derive(Debug)]
pub enum Dimension {
    Value(Text),
    Context(&'static str),
}

pub fn parse_emit_metric<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    _: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["name", "namespace", "value"])?;
    let mut dimensions = Vec::new();
    for c in cx.children(node)? {
        if c.tag_name().name() != "dimension" {
            return cx.err(
                c,
                format!(
                    "<emit-metric> may contain only <dimension>, not <{}>",
                    c.tag_name().name()
                ),
            );
        }
        cx.check_attrs(c, &["name", "value"])?;
        let name = cx.name_attr(c, "name")?;
        let dimension = match cx.attr_text(c, "value")? {
            Some(v) => Dimension::Value(v),
            None => match DEFAULT_DIMENSIONS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            {
                Some((_, member)) => Dimension::Context(member),
                None if name.eq_ignore_ascii_case("Client IP") => {
                    Dimension::Context("Request.IpAddress")
                }
                None => {
                    return cx.err(
                        c,
                        format!(
                            "the dimension '{name}' needs a value: only {} have defaults",
                            DEFAULT_DIMENSIONS
                                .iter()
                                .map(|d| d.0)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            },
        };
        dimensions.push((name, dimension));
    }
    if dimensions.len() > MAX_DIMENSIONS {
        return cx.err(
            node,
            format!("<emit-metric> may have at most {MAX_DIMENSIONS} dimensions"),
        );
    }
    Ok(Box::new(EmitMetric {
        name: cx.name_attr(node, "name")?,
        namespace: cx
            .literal(node, "namespace")?
            .unwrap_or_else(|| "API Management".into()),
        value: cx.attr_text(node, "value")?,
        dimensions,
    }))
}

impl Policy for EmitMetric {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }
}

impl EmitMetric {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let value = match &self.value {
            None => 1.0,
            Some(t) => {
                let text = at.text(t, ex)?;
                text.trim().parse::<f64>().map_err(|_| {
                    at.fail(
                        500,
                        "ExpressionValueEvaluationFailure",
                        format!("emit-metric's value must be a number, not '{text}'"),
                    )
                })?
            }
        };
        let mut dimensions = Vec::with_capacity(self.dimensions.len());
        for (name, d) in &self.dimensions {
            let v = match d {
                Dimension::Value(t) => at.text(t, ex)?,
                Dimension::Context(member) => match *member {
                    "Request.IpAddress" => ex.ip.map(|i| i.to_string()).unwrap_or_default(),
                    m => ex.info.get(m).map(|v| v.text()).unwrap_or_default(),
                },
            };
            dimensions.push((name.clone(), v));
        }
        at.svc.emit_metric(Metric {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            value,
            dimensions,
        });
        Ok(())
    }
}

/// log-to-eventhub: the message to a logger resource's sink.
#[derive(Debug)]
pub struct LogToEventHub {
    pub logger: String,
    pub message: Text,
}

pub fn parse_log_to_eventhub<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    _: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["logger-id", "partition-id", "partition-key"])?;
    let text = cx.element_text(node);
    let message = cx.text_value(node, text.trim())?;
    Ok(Box::new(LogToEventHub {
        logger: cx.name_attr(node, "logger-id")?,
        message,
    }))
}

impl Policy for LogToEventHub {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        match at.text(&self.message, ex) {
            Ok(message) => {
                if let Err(why) = at.svc.log_to(&self.logger, message) {
                    at.svc.trace("log-to-eventhub", &why);
                }
                Run::Done(Flow::Next)
            }
            Err(flow) => Run::Done(flow),
        }
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }
}
