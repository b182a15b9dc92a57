//! rate-limit, rate-limit-by-key, quota and quota-by-key: calls counted per subscription or
//! per key, with per-API and per-operation limits inside, refused with APIM's answers.

use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{
    Amount, Charge, Count, Counted, CounterKey, Exchange, ExistsAction, Failure, Flow, set_pairs,
};
use crate::expr::{Code, Text, V};
use crate::node::{At, Node, Policy, Run};
use crate::position::Section;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub calls: u64,
    pub period_secs: u64,
    /// `None` counts per subscription (rate-limit, quota).
    pub key: Option<Text>,
    pub condition: Option<Arc<Code>>,
    pub increment: u64,
    pub retry_after_header: Option<String>,
    pub remaining_header: Option<String>,
    pub total_header: Option<String>,
    pub retry_after_variable: Option<String>,
    pub remaining_variable: Option<String>,
    /// Per-API and per-operation limits inside rate-limit and quota (`<api>`, `<operation>`).
    pub scoped: Vec<ScopedLimit>,
    /// A quota's `bandwidth`, in kilobytes.
    pub bandwidth_kb: Option<u64>,
}

/// A limit for one API (by name or id), or one operation of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopedLimit {
    pub api: String,
    pub operation: Option<String>,
    pub calls: u64,
    pub period_secs: u64,
}

/// A rate limit (a sliding window) or a quota (a fixed one, refused with 403).
#[derive(Debug)]
pub struct Limit {
    pub limit: RateLimit,
    pub quota: bool,
}

const MOST_CALLS: u64 = u64::MAX / 2;

pub fn parse_limit<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound])?;
    let name = node.tag_name().name();
    let by_key = name.ends_with("by-key");
    let quota = name.starts_with("quota");
    let mut attrs = vec![
        "calls",
        "renewal-period",
        "retry-after-header-name",
        "retry-after-variable-name",
        "remaining-calls-header-name",
        "remaining-calls-variable-name",
        "total-calls-header-name",
    ];
    if by_key {
        attrs.extend(["counter-key", "increment-condition", "increment-count"]);
    }
    if quota {
        attrs.push("bandwidth");
    }
    cx.check_attrs(node, &attrs)?;
    if by_key && !cx.children(node)?.is_empty() {
        return cx.err(node, format!("<{name}> has no child elements"));
    }
    let bandwidth_kb = match node.attribute("bandwidth") {
        Some(_) => Some(cx.number(node, "bandwidth", None, MOST_CALLS / 1024)?),
        None => None,
    };
    // A quota may count calls, bytes, or both.
    let calls_default = bandwidth_kb.map(|_| MOST_CALLS);
    let max_period = if quota { MOST_CALLS } else { 300 };
    let mut limit = RateLimit {
        calls: cx.number(node, "calls", calls_default, MOST_CALLS)?,
        period_secs: cx.number(node, "renewal-period", None, max_period)?,
        key: if by_key {
            Some(cx.required(node, "counter-key")?)
        } else {
            None
        },
        condition: match node.attribute("increment-condition") {
            Some(c) => Some(cx.code(node, c)?),
            None => None,
        },
        increment: cx.number(node, "increment-count", Some(1), 1_000_000)?,
        retry_after_header: cx.literal(node, "retry-after-header-name")?,
        remaining_header: cx.literal(node, "remaining-calls-header-name")?,
        total_header: cx.literal(node, "total-calls-header-name")?,
        retry_after_variable: cx.literal(node, "retry-after-variable-name")?,
        remaining_variable: cx.literal(node, "remaining-calls-variable-name")?,
        scoped: Vec::new(),
        bandwidth_kb,
    };
    if !by_key {
        for api in cx.children(node)? {
            parse_scoped(cx, api, name, max_period, &mut limit.scoped)?;
        }
    }
    if !quota && limit.period_secs == 0 {
        return cx.err(node, "'renewal-period' must be from 1 to 300 seconds");
    }
    Ok(Box::new(Limit { limit, quota }))
}

/// An `<api>` inside a limit, with the `<operation>`s inside it.
fn parse_scoped<'a>(
    cx: &mut Ctx<'a, '_>,
    api: XNode<'a>,
    parent: &str,
    max_period: u64,
    out: &mut Vec<ScopedLimit>,
) -> Res<()> {
    if api.tag_name().name() != "api" {
        return cx.err(
            api,
            format!("<{parent}> may contain <api> elements, with <operation> elements inside them"),
        );
    }
    cx.check_attrs(api, &["name", "id", "calls", "renewal-period"])?;
    let named = |n: XNode<'_>| {
        n.attribute("name")
            .or(n.attribute("id"))
            .unwrap_or_default()
            .to_string()
    };
    let api_name = named(api);
    if api_name.is_empty() {
        return cx.err(api, "<api> needs 'name' or 'id'");
    }
    let scoped = |cx: &Ctx, n: XNode<'_>, operation| -> Res<ScopedLimit> {
        Ok(ScopedLimit {
            api: api_name.clone(),
            operation,
            calls: cx.number(n, "calls", None, MOST_CALLS)?,
            period_secs: cx.number(n, "renewal-period", None, max_period)?,
        })
    };
    if api.attribute("calls").is_some() {
        out.push(scoped(cx, api, None)?);
    }
    for op in cx.children(api)? {
        if op.tag_name().name() != "operation" {
            return cx.err(op, "<api> may contain only <operation> elements");
        }
        cx.check_attrs(op, &["name", "id", "calls", "renewal-period"])?;
        out.push(scoped(cx, op, Some(named(op)))?);
    }
    Ok(())
}

impl Policy for Limit {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }

    fn leaves_request_alone(&self) -> bool {
        // A bandwidth quota needs the full path: its charge is made when the answer is sent.
        // So does a condition: it is evaluated against the response.
        self.limit.remaining_header.is_none()
            && self.limit.total_header.is_none()
            && self.limit.bandwidth_kb.is_none()
            && self.limit.condition.is_none()
    }

    fn counts_only(&self) -> bool {
        self.leaves_request_alone() && self.limit.key.is_none() && self.limit.condition.is_none()
    }

    fn count_call(
        &self,
        node: &Node,
        subscription: &str,
        info: &dyn Fn(&str) -> Option<V>,
        count: &Count,
    ) -> Result<(), Failure> {
        let key = CounterKey::per_subscription(node.name, node.pos, subscription);
        let (c, calls) = self.count(key, self.limit.increment, info, count);
        if c.allowed {
            Ok(())
        } else {
            Err(self.refusal(node, &c, calls))
        }
    }
}

impl Limit {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let limit = &self.limit;
        let (named, subscription);
        let key = match &limit.key {
            Some(k) => {
                named = format!("key:{}", at.text(k, ex)?);
                CounterKey::Text(&named)
            }
            None => {
                // Per subscription; APIM applies it only when a subscription key was used.
                let Some(V::Str(id)) = ex.info.get("Subscription.Id") else {
                    return Ok(());
                };
                subscription = id;
                CounterKey::per_subscription(at.node.name, at.node.pos, &subscription)
            }
        };
        // With an increment-condition the call is counted once answered (the condition may
        // read the response); here it is only checked against what is counted so far.
        let increment = if limit.condition.is_some() {
            0
        } else {
            limit.increment
        };
        let count = |key: CounterKey<'_>, calls, period, increment, sliding| {
            at.svc.count(key, calls, period, increment, sliding)
        };
        if let Some(kb) = limit.bandwidth_kb {
            self.check_bandwidth(at, ex, &key, kb)?;
        }
        let (mut c, calls) = self.count(key, increment, &|k| ex.info.get(k), &count);
        if let Some(condition) = &limit.condition {
            c.allowed &= c.remaining > 0;
            ex.charges.push(Charge {
                key: key.to_string(),
                limit: limit.calls,
                period_secs: limit.period_secs,
                sliding: !self.quota,
                amount: Amount::Calls {
                    increment: limit.increment,
                    condition: condition.clone(),
                },
            });
        }
        if let Some(v) = &limit.remaining_variable {
            ex.variables.insert(v.clone(), V::Int(c.remaining as i64));
        }
        if !c.allowed {
            if let Some(v) = &limit.retry_after_variable {
                ex.variables
                    .insert(v.clone(), V::Int(c.retry_after_secs as i64));
            }
            return Err(Flow::Fail(self.refusal(at.node, &c, calls)));
        }
        let mut tell = |header: &Option<String>, value: u64| {
            if let Some(h) = header {
                let value = vec![value.to_string()];
                set_pairs(&mut ex.request_headers, h, ExistsAction::Override, value);
            }
        };
        tell(&limit.remaining_header, c.remaining);
        tell(&limit.total_header, calls);
        Ok(())
    }

    /// Refuses the call when the bandwidth counter is spent; else charges the request's bytes to
    /// it once answered.
    fn check_bandwidth(
        &self,
        at: At<'_>,
        ex: &mut Exchange,
        key: &CounterKey<'_>,
        kb: u64,
    ) -> Result<(), Flow> {
        let charge = Charge {
            key: format!("bandwidth:{key}"),
            limit: kb.saturating_mul(1024),
            period_secs: self.limit.period_secs,
            sliding: false,
            amount: Amount::Bytes,
        };
        let c = at.svc.count(
            CounterKey::Text(&charge.key),
            charge.limit,
            charge.period_secs,
            0,
            false,
        );
        if c.remaining == 0 {
            let s = c.retry_after_secs;
            let left = format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
            return Err(Flow::Fail(Failure {
                status: 403,
                reason: "QuotaExceeded",
                message: format!("Out of bandwidth quota. Quota will be replenished in {left}."),
                policy: at.node.name,
                policy_id: at.node.id.clone(),
                pos: at.node.pos,
                headers: vec![("Retry-After".into(), s.to_string())],
            }));
        }
        ex.charges.push(charge);
        Ok(())
    }

    /// Counts a call against the limit's counter `key`, then against the per-API and
    /// per-operation limits inside it that apply (`info` names the request's API and
    /// operation): the tightest outcome, and the number of calls its limit allows.
    fn count(
        &self,
        key: CounterKey<'_>,
        increment: u64,
        info: &dyn Fn(&str) -> Option<V>,
        count: &Count,
    ) -> (Counted, u64) {
        let limit = &self.limit;
        let sliding = !self.quota;
        let mut c = count(key, limit.calls, limit.period_secs, increment, sliding);
        let mut calls = limit.calls;
        if limit.scoped.is_empty() {
            return (c, calls);
        }
        // The names are looked up only when there are such limits.
        let name = |k: &str| info(k).map(|v| v.text()).unwrap_or_default();
        let (api_id, api_name) = (name("Api.Id"), name("Api.Name"));
        let (op_id, op_name) = (name("Operation.Id"), name("Operation.Name"));
        for s in &limit.scoped {
            if !c.allowed {
                break;
            }
            let api_matches = s.api == api_id || s.api == api_name;
            let op_matches = s
                .operation
                .as_ref()
                .is_none_or(|o| *o == op_id || *o == op_name);
            if !(api_matches && op_matches) {
                continue;
            }
            let scoped_key = format!("{key}:{}:{}", s.api, s.operation.as_deref().unwrap_or(""));
            let sc = count(
                CounterKey::Text(&scoped_key),
                s.calls,
                s.period_secs,
                increment,
                sliding,
            );
            if !sc.allowed || sc.remaining < c.remaining {
                c = sc;
                calls = s.calls;
            }
        }
        (c, calls)
    }

    /// APIM's answer to a call over a limit: 429 (rate limit) or 403 (quota) with the time to
    /// wait.
    fn refusal(&self, node: &Node, c: &Counted, calls: u64) -> Failure {
        let limit = &self.limit;
        let retry_after = limit.retry_after_header.as_deref().unwrap_or("Retry-After");
        let mut headers = vec![(retry_after.to_string(), c.retry_after_secs.to_string())];
        if let Some(h) = &limit.remaining_header {
            headers.push((h.clone(), "0".into()));
        }
        if let Some(h) = &limit.total_header {
            headers.push((h.clone(), calls.to_string()));
        }
        let s = c.retry_after_secs;
        let (status, reason, message) = if self.quota {
            let left = format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
            let message = format!("Out of call volume quota. Quota will be replenished in {left}.");
            (403, "QuotaExceeded", message)
        } else {
            let message = format!("Rate limit is exceeded. Try again in {s} seconds.");
            (429, "RateLimitExceeded", message)
        };
        Failure {
            status,
            reason,
            message,
            policy: node.name,
            policy_id: node.id.clone(),
            pos: node.pos,
            headers,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::exchange::Flow;
    use crate::position::Section;
    use crate::testing::{Fake, get, inbound, run_section};

    #[test]
    fn calls_over_a_limit_are_refused_with_apims_answers() {
        let svc = Fake::default();
        let doc = inbound(
            r#"<rate-limit-by-key calls="2" renewal-period="60" counter-key="@(context.Request.Headers.GetValueOrDefault("x-client", "anon"))" remaining-calls-variable-name="left" />"#,
        );
        let call = |client: &str| {
            let mut ex = get(&[("x-client", client)]);
            let flow = run_section(&doc, Section::Inbound, &mut ex, &svc);
            (flow, ex.variables.get("left").cloned())
        };
        assert!(matches!(call("a").0, Flow::Next));
        assert!(matches!(
            call("a"),
            (Flow::Next, Some(crate::expr::V::Int(0)))
        ));
        match call("a").0 {
            Flow::Fail(f) => {
                assert_eq!((f.status, f.reason), (429, "RateLimitExceeded"));
                assert_eq!(f.headers, [("Retry-After".to_string(), "60".to_string())]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(call("b").0, Flow::Next),
            "another key counts apart"
        );
    }

    #[test]
    fn quotas_refuse_with_403_and_the_time_left() {
        let svc = Fake::default();
        let doc = inbound(r#"<quota-by-key calls="1" renewal-period="3700" counter-key="k" />"#);
        let call = || run_section(&doc, Section::Inbound, &mut get(&[]), &svc);
        assert!(matches!(call(), Flow::Next));
        match call() {
            Flow::Fail(f) => {
                assert_eq!((f.status, f.reason), (403, "QuotaExceeded"));
                assert!(
                    f.message.ends_with("replenished in 01:01:40."),
                    "{}",
                    f.message
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
