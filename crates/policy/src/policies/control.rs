//! choose, retry and limit-concurrency: policies that run the policies inside them.

use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{Exchange, Flow};
use crate::expr::{Code, Text};
use crate::node::{At, Node, Num, Policy, Run};
use crate::position::Section;
use std::sync::Arc;
use std::time::Duration;

/// choose: the first `<when>` whose condition holds, else `<otherwise>`.
#[derive(Debug)]
pub struct Choose {
    pub whens: Vec<(Arc<Code>, Vec<Node>)>,
    pub otherwise: Vec<Node>,
}

pub fn parse_choose<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &[])?;
    let mut whens = Vec::new();
    let mut otherwise = None;
    for c in cx.children(node)? {
        match c.tag_name().name() {
            "when" if otherwise.is_none() => {
                cx.check_attrs(c, &["condition"])?;
                let Some(condition) = c.attribute("condition") else {
                    return cx.err(c, "<when> needs the attribute 'condition'");
                };
                let condition = cx.code(c, condition)?;
                whens.push((condition, cx.nested(c, section)?));
            }
            "otherwise" if otherwise.is_none() => {
                cx.check_attrs(c, &[])?;
                otherwise = Some(cx.nested(c, section)?);
            }
            other => {
                return cx.err(
                    c,
                    format!("<choose> may contain <when> elements, then one <otherwise>; <{other}> is out of place"),
                );
            }
        }
    }
    if whens.is_empty() {
        return cx.err(node, "<choose> needs at least one <when>");
    }
    Ok(Box::new(Choose {
        whens,
        otherwise: otherwise.unwrap_or_default(),
    }))
}

impl Policy for Choose {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::Wait(Box::pin(async move {
            for (condition, body) in &self.whens {
                match at.condition(condition, ex) {
                    Ok(true) => return at.nested(body, ex).await,
                    Ok(false) => {}
                    Err(flow) => return flow,
                }
            }
            at.nested(&self.otherwise, ex).await
        }))
    }

    fn leaves_request_alone(&self) -> bool {
        self.whens
            .iter()
            .flat_map(|(_, nodes)| nodes)
            .chain(&self.otherwise)
            .all(|n| n.policy().is_some_and(|p| p.leaves_request_alone()))
    }

    fn nested(&self, visit: &mut dyn FnMut(&[Node])) {
        for (_, body) in &self.whens {
            visit(body);
        }
        visit(&self.otherwise);
    }
}

/// retry: runs its policies again while the condition holds, up to `count` more times.
#[derive(Debug)]
pub struct Retry {
    pub condition: Arc<Code>,
    pub count: Num,
    pub interval_secs: Num,
    pub max_interval_secs: Option<u64>,
    pub delta_secs: Option<u64>,
    pub first_fast_retry: bool,
    pub body: Vec<Node>,
}

pub fn parse_retry<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(
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
    let Some(condition) = node.attribute("condition") else {
        return cx.err(node, "<retry> needs the attribute 'condition'");
    };
    let condition = cx.code(node, condition)?;
    let count = cx.number_or_expr(node, "count", None, 50)?;
    if matches!(count, Num::Lit(0)) {
        return cx.err(node, "'count' must be from 1 to 50");
    }
    // A retried forward-request sends the body again: buffer it.
    cx.reads_body = true;
    let body = cx.nested(node, section)?;
    let optional = |cx: &Ctx, name| {
        node.attribute(name)
            .map(|_| cx.number(node, name, None, 300))
            .transpose()
    };
    Ok(Box::new(Retry {
        condition,
        count,
        interval_secs: cx.number_or_expr(node, "interval", None, 300)?,
        max_interval_secs: optional(cx, "max-interval")?,
        delta_secs: optional(cx, "delta")?,
        first_fast_retry: cx.boolean(node, "first-fast-retry", false)?,
        body,
    }))
}

impl Policy for Retry {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::Wait(Box::pin(async move {
            let mut attempt = 0u64;
            loop {
                let flow = at.nested(&self.body, &mut *ex).await;
                if matches!(flow, Flow::Respond) {
                    return flow;
                }
                let limits = at
                    .number(&self.count, ex)
                    .and_then(|c| Ok((c, at.number(&self.interval_secs, ex)?)));
                let (count, interval) = match limits {
                    Ok(l) => l,
                    Err(failed) => return failed,
                };
                match at.condition(&self.condition, ex) {
                    Ok(true) if attempt < count => {}
                    Ok(_) => return flow,
                    Err(failed) => return failed,
                }
                attempt += 1;
                let wait = self.interval(interval, attempt);
                let fast = attempt == 1 && self.first_fast_retry;
                if !fast && !wait.is_zero() {
                    at.svc.sleep(wait).await;
                }
            }
        }))
    }

    fn nested(&self, visit: &mut dyn FnMut(&[Node])) {
        visit(&self.body);
    }
}

impl Retry {
    /// The wait before attempt `n` (1-based): fixed, linear or exponential, capped.
    fn interval(&self, interval_secs: u64, n: u64) -> Duration {
        let base = interval_secs as f64;
        let secs = match (self.delta_secs, self.max_interval_secs) {
            (None, _) => base,
            (Some(d), None) => base + n.saturating_sub(1) as f64 * d as f64,
            (Some(d), Some(max)) => {
                let exponential = base + (2f64.powi(n.min(30) as i32) - 1.0) * d as f64;
                exponential.min(max as f64)
            }
        };
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// limit-concurrency: its policies run for at most `max` requests with the same key at once.
#[derive(Debug)]
pub struct LimitConcurrency {
    pub key: Text,
    pub max: u64,
    pub body: Vec<Node>,
}

pub fn parse_limit_concurrency<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["key", "max-count"])?;
    let key = cx.required(node, "key")?;
    let max = cx.number(node, "max-count", None, 1_000_000)?;
    if max == 0 {
        return cx.err(node, "'max-count' must be at least 1");
    }
    let body = cx.nested(node, section)?;
    Ok(Box::new(LimitConcurrency { key, max, body }))
}

impl Policy for LimitConcurrency {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::Wait(Box::pin(async move {
            let key = match at.text(&self.key, ex) {
                Ok(k) => k,
                Err(flow) => return flow,
            };
            let Some(permit) = at.svc.acquire(&key, self.max) else {
                return at.fail(
                    429,
                    "ConcurrencyLimitExceeded",
                    "Too many requests are being processed concurrently. Try again later.",
                );
            };
            let flow = at.nested(&self.body, ex).await;
            drop(permit);
            flow
        }))
    }

    fn nested(&self, visit: &mut dyn FnMut(&[Node])) {
        visit(&self.body);
    }
}

/// wait: its policies (send-request, cache-lookup-value, choose) run at once; the section goes
/// on when all of them (`for="all"`) or the first (`for="any"`) finished. Each runs on its own
/// copy of the request, and what it set in `context.Variables` is kept — that is how these
/// policies give their results. The first failure or response among those finished wins.
#[derive(Debug)]
pub struct Wait {
    pub any: bool,
    pub body: Vec<Node>,
}

pub fn parse_wait<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["for"])?;
    let any = cx.choice(node, "for", &["all", "any"])? == "any";
    for c in cx.children(node)? {
        let name = c.tag_name().name();
        if !matches!(name, "send-request" | "cache-lookup-value" | "choose") {
            return cx.err(
                c,
                format!("<wait> may contain <send-request>, <cache-lookup-value> and <choose>, not <{name}>"),
            );
        }
    }
    Ok(Box::new(Wait {
        any,
        body: cx.nested(node, section)?,
    }))
}

impl Policy for Wait {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::Wait(Box::pin(async move {
            let runs = self.body.iter().map(|node| {
                let mut copy = ex.clone();
                Box::pin(async move {
                    let flow = at.nested(std::slice::from_ref(node), &mut copy).await;
                    (flow, copy.variables)
                })
            });
            let finished = if self.body.is_empty() {
                Vec::new()
            } else if self.any {
                let (first, _, _) = futures::future::select_all(runs).await;
                vec![first]
            } else {
                futures::future::join_all(runs).await
            };
            let mut outcome = Flow::Next;
            for (flow, variables) in finished {
                for (k, v) in variables {
                    if ex.variables.get(&k) != Some(&v) {
                        ex.variables.insert(k, v);
                    }
                }
                if matches!(outcome, Flow::Next) {
                    outcome = flow;
                }
            }
            outcome
        }))
    }

    fn nested(&self, visit: &mut dyn FnMut(&[Node])) {
        visit(&self.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(interval: u64, delta: Option<u64>, max: Option<u64>) -> Retry {
        Retry {
            condition: Arc::new(crate::expr::parse("@(true)").unwrap()),
            count: Num::Lit(5),
            interval_secs: Num::Lit(interval),
            max_interval_secs: max,
            delta_secs: delta,
            first_fast_retry: false,
            body: Vec::new(),
        }
    }

    #[test]
    fn retry_intervals_are_fixed_linear_or_exponential() {
        let secs = |r: &Retry, n| match r.interval_secs {
            Num::Lit(i) => r.interval(i, n).as_secs(),
            _ => unreachable!("literal intervals"),
        };
        let fixed = retry(2, None, None);
        assert_eq!((secs(&fixed, 1), secs(&fixed, 4)), (2, 2));
        let linear = retry(1, Some(3), None);
        assert_eq!((secs(&linear, 1), secs(&linear, 3)), (1, 7));
        let exponential = retry(1, Some(1), Some(10));
        assert_eq!((secs(&exponential, 1), secs(&exponential, 2)), (2, 4));
        assert_eq!(secs(&exponential, 20), 10, "capped by max-interval");
    }
}

#[cfg(test)]
mod run_tests {
    use crate::exchange::Flow;
    use crate::expr::V;
    use crate::position::Section;
    use crate::testing::{Fake, get, inbound, run_section};

    #[test]
    fn choose_runs_the_first_branch_that_holds() {
        let doc = inbound(
            r#"<choose>
                 <when condition="@(context.Request.Headers.GetValueOrDefault("x-tier", "") == "gold")"><set-variable name="tier" value="gold" /></when>
                 <when condition="@(true)"><set-variable name="tier" value="other" /></when>
                 <otherwise><set-variable name="tier" value="never" /></otherwise>
               </choose>"#,
        );
        let tier = |headers: &[(&str, &str)]| {
            let mut ex = get(headers);
            run_section(&doc, Section::Inbound, &mut ex, &Fake::default());
            ex.variables.get("tier").cloned()
        };
        assert_eq!(tier(&[("x-tier", "gold")]), Some(V::Str("gold".into())));
        assert_eq!(tier(&[]), Some(V::Str("other".into())));
    }

    #[test]
    fn retry_runs_its_policies_again_while_the_condition_holds() {
        let doc = inbound(
            r#"<retry condition="@((int)context.Variables.GetValueOrDefault("n", 0) < 3)" count="5" interval="1">
                 <set-variable name="n" value="@((int)context.Variables.GetValueOrDefault("n", 0) + 1)" />
               </retry>"#,
        );
        let mut ex = get(&[]);
        let flow = run_section(&doc, Section::Inbound, &mut ex, &Fake::default());
        assert!(matches!(flow, Flow::Next));
        assert_eq!(ex.variables.get("n"), Some(&V::Int(3)));
    }
}
