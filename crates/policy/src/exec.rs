//! Running policies: a section of a request's scope chain, narrowest scope first. The gateway
//! fills an [`Exchange`] from the request, runs a section of the chain, then builds what it
//! forwards or answers from the exchange — or, for chains that only check the request, takes
//! a shorter path ([`plain_forward`], [`counted_forward`]).
//!
//! Invariants: `<base/>` runs the next broader scope's same section in its place (a scope
//! without a document or without the section inherits); a failure stops the section and is
//! recorded with APIM's reason, the failing policy and its scope; nothing here blocks or does
//! I/O except through [`Services`]; this runner knows no policy by name — only the [`Policy`]
//! trait.

pub use crate::exchange::{
    BackendInfo, BoxFut, Cached, Charge, Count, Counted, CounterKey, ENTRA_AUTHORITY, Exchange,
    Failure, Flow, Forward, HeaderEdit, Headers, Info, InfoSource, LastError, ListHeaders, Metric,
    OriginalHeaders, Outgoing, ReadHeaders, ResponseParts, SchemaDocument, SendError, Services,
    query_string,
};
use crate::expr::V;
pub use crate::node::{At, Chain, Kind, Node, Policy, Run};
pub use crate::policies::cors::cors_response_headers;
use crate::position::Section;

const SCOPES: [&str; 4] = ["global", "product", "api", "operation"];

/// Runs one section of the chain.
pub async fn run<'a>(
    chain: &'a Chain<'a>,
    section: Section,
    ex: &'a mut Exchange,
    svc: &'a dyn Services,
) -> Flow {
    match locate(chain, 3, section) {
        Located::Nothing => Flow::Next,
        _ => run_level(chain, 3, section, ex, svc).await,
    }
}

/// What runs for a section from scope `level` down.
enum Located<'a> {
    /// The nodes of the nearest scope that has more than `<base />`.
    Nodes(usize, &'a [Node]),
    /// No scope has the section: APIM's default global policy (which forwards in <backend>).
    Default,
    /// Nothing: every scope's section is only `<base />`, down to the global one's.
    Nothing,
}

/// Scopes without the section, and sections that are only `<base />` (the usual case), are
/// passed over in a loop — and a section with nothing to run costs no boxed future at all.
fn locate<'c>(chain: &Chain<'c>, mut level: usize, section: Section) -> Located<'c> {
    loop {
        match chain.levels[level].and_then(|d| d.section(section)) {
            Some([only]) if only.is_base() => {
                if level == 0 {
                    return Located::Nothing;
                }
                level -= 1;
            }
            Some(nodes) => return Located::Nodes(level, nodes),
            None if level > 0 => level -= 1,
            None if section == Section::Backend => return Located::Default,
            None => return Located::Nothing,
        }
    }
}

/// When the chain only checks the request in inbound — limits, filters, tokens, variables — and
/// then forwards it unchanged, with nothing in outbound or on-error: the forward's settings.
/// The gateway then sends the client's request itself, as it would without policies, instead
/// of rebuilding it from the exchange (a third of the policy path's cost). A policy that does
/// not say it [`Policy::leaves_request_alone`] keeps a request on the full path.
pub fn plain_forward(chain: &Chain) -> Option<Forward> {
    forward_when_inbound_is(chain, &mut |policy, _| policy.leaves_request_alone())
}

/// The most limits a [`counted_forward`] chain counts; a chain with more takes the full path,
/// which counts the same.
const MOST_COUNTED: usize = 4;

/// A chain [`counted_forward`] takes: its forward, and the limits it counts, in the order they
/// run (found once, while deciding, rather than walked again to count).
#[derive(Debug, Clone, Copy)]
pub struct CountedForward<'c> {
    pub forward: Forward,
    limits: [Option<&'c Node>; MOST_COUNTED],
}

/// When the chain is one [`plain_forward`] takes and its inbound policies are only limits per
/// subscription that do nothing but count ([`Policy::counts_only`]): the forward. The gateway
/// then counts with [`count_for_subscription`] and builds no exchange at all — DESIGN's target
/// configuration, a key and a rate limit, costs little more than the key alone.
pub fn counted_forward<'c>(chain: &Chain<'c>) -> Option<CountedForward<'c>> {
    let mut limits = [None; MOST_COUNTED];
    let mut found = 0;
    let forward = forward_when_inbound_is(chain, &mut |policy, node| {
        if !policy.counts_only() || found == MOST_COUNTED {
            return false;
        }
        limits[found] = Some(node);
        found += 1;
        true
    })?;
    Some(CountedForward { forward, limits })
}

/// The forward, when outbound and on-error run nothing, the backend section only forwards
/// (APIM's default, or a lone forward-request the gateway can make itself), and every inbound
/// policy the chain runs is `allowed`.
fn forward_when_inbound_is<'c>(
    chain: &Chain<'c>,
    allowed: &mut dyn FnMut(&'c dyn Policy, &'c Node) -> bool,
) -> Option<Forward> {
    if !matches!(locate(chain, 3, Section::Outbound), Located::Nothing)
        || !matches!(locate(chain, 3, Section::OnError), Located::Nothing)
    {
        return None;
    }
    let forward = match locate(chain, 3, Section::Backend) {
        Located::Default => Forward::DEFAULT,
        Located::Nodes(_, [only]) => only.policy()?.plain_forward()?,
        _ => return None,
    };
    walk_inbound(chain, 3, &mut |node, policy| {
        allowed(policy, node).then_some(()).ok_or(())
    })
    .ok()?;
    Some(forward)
}

/// Runs the limits of a [`counted_forward`] chain, in order, for a call of `subscription`
/// (none when the request came without a key: limits per subscription then count nothing, as
/// in APIM); `info` answers `context`'s fixed members for per-API and per-operation limits.
/// The first limit exceeded refuses the call, as the full path would.
pub fn count_for_subscription(
    counted: &CountedForward,
    subscription: Option<&str>,
    info: &dyn Fn(&str) -> Option<V>,
    count: &Count,
) -> Result<(), Failure> {
    let Some(subscription) = subscription else {
        return Ok(());
    };
    for node in counted.limits.iter().flatten() {
        if let Some(policy) = node.policy() {
            policy.count_call(node, subscription, info, count)?;
        }
    }
    Ok(())
}

/// Visits the inbound policies the chain runs from scope `level` down, in order, with each
/// `<base />` standing for the broader scopes' nodes; stops at the first error.
fn walk_inbound<'c, E>(
    chain: &Chain<'c>,
    level: usize,
    visit: &mut dyn FnMut(&'c Node, &'c dyn Policy) -> Result<(), E>,
) -> Result<(), E> {
    let Located::Nodes(at, nodes) = locate(chain, level, Section::Inbound) else {
        return Ok(());
    };
    for node in nodes {
        match &node.kind {
            Kind::Base if at > 0 => walk_inbound(chain, at - 1, visit)?,
            Kind::Base => {}
            Kind::Policy(policy) => visit(node, policy.as_ref())?,
        }
    }
    Ok(())
}

fn run_level<'a>(
    chain: &'a Chain<'a>,
    level: usize,
    section: Section,
    ex: &'a mut Exchange,
    svc: &'a dyn Services,
) -> BoxFut<'a, Flow> {
    Box::pin(async move {
        match locate(chain, level, section) {
            Located::Nodes(level, nodes) => run_nodes(chain, level, section, nodes, ex, svc).await,
            Located::Default => {
                // APIM's default global policy forwards in <backend>.
                match svc.forward(ex, Forward::DEFAULT).await {
                    Ok(()) => Flow::Next,
                    Err(failure) => Flow::Fail(failure),
                }
            }
            Located::Nothing => Flow::Next,
        }
    })
}

/// [`run_nodes`] where a policy runs the policies nested in it.
fn run_nested<'a>(at: At<'a>, nodes: &'a [Node], ex: &'a mut Exchange) -> BoxFut<'a, Flow> {
    run_nodes(at.chain, at.level, at.section, nodes, ex, at.svc)
}

fn run_nodes<'a>(
    chain: &'a Chain<'a>,
    level: usize,
    section: Section,
    nodes: &'a [Node],
    ex: &'a mut Exchange,
    svc: &'a dyn Services,
) -> BoxFut<'a, Flow> {
    Box::pin(async move {
        for node in nodes {
            let flow = match &node.kind {
                Kind::Base => {
                    if level == 0 || matches!(locate(chain, level - 1, section), Located::Nothing) {
                        Flow::Next
                    } else {
                        run_level(chain, level - 1, section, &mut *ex, svc).await
                    }
                }
                Kind::Policy(p) if ex.preflight && !p.runs_in_preflight() => Flow::Next,
                Kind::Policy(p) => {
                    let at = At::new(chain, level, section, node, svc, run_nested);
                    match p.run(at, &mut *ex) {
                        Run::Done(flow) => flow,
                        // Nested policies run inside this one: their polls recurse.
                        Run::Wait(waiting) => crate::stack::Deeper(waiting).await,
                    }
                }
            };
            match flow {
                Flow::Next => {}
                Flow::Fail(failure) => {
                    return Flow::Fail(record(failure, node, level, section, ex));
                }
                Flow::Respond => return Flow::Respond,
            }
        }
        Flow::Next
    })
}

/// Records a failure as `context.LastError`. A failure inside `<base />` was recorded where it
/// happened, with that scope; only one no scope recorded (the default forward's) is recorded
/// here.
fn record(
    mut f: Failure,
    node: &Node,
    level: usize,
    section: Section,
    ex: &mut Exchange,
) -> Failure {
    if ex.last_error.is_none() || (section != Section::OnError && !node.is_base()) {
        ex.last_error = Some(LastError {
            source: f.policy.to_string(),
            reason: f.reason.to_string(),
            message: f.message.clone(),
            section: section.name().to_string(),
            path: format!("{}[{}]", f.policy, f.pos),
            policy_id: f.policy_id.clone().unwrap_or_default(),
            scope: SCOPES[level].to_string(),
        });
    }
    f.policy_id = f.policy_id.or_else(|| node.id.clone());
    f
}
