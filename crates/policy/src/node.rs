//! A compiled document: sections of [`Node`]s, each `<base/>` or a [`Policy`] — the one trait
//! every policy implements, so that the runner and the document walks know no policy by name.
//! A chain of documents ([`Chain`]) is what a request runs; [`At`] is where one policy runs.
//!
//! Invariants: a policy that finishes at once answers [`Run::Done`] (no allocation); only
//! policies that wait or hold others answer a boxed future. Policies nested inside another
//! are run through the runner [`At`] carries, never by a policy module calling another.

use crate::exchange::{BoxFut, Count, Exchange, Failure, Flow, Forward, Services};
use crate::expr::{self, Code, Text, V};
use crate::position::{Pos, Section};
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// One compiled policy element.
pub trait Policy: fmt::Debug + Send + Sync + Any {
    /// Runs it on the exchange.
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a>;

    /// In inbound: whether it leaves what is forwarded (request and response) as it is — it
    /// may refuse the request, answer it, or set variables no later section reads. The gateway
    /// then forwards the client's request as it came ([`crate::exec::plain_forward`]).
    fn leaves_request_alone(&self) -> bool {
        false
    }

    /// The forward, when this policy is a lone forward-request the gateway can make itself.
    fn plain_forward(&self) -> Option<Forward> {
        None
    }

    /// Whether it is a limit per subscription that does nothing but count (no expressions, no
    /// headers of its own): the gateway then counts with [`Policy::count_call`] and builds no
    /// exchange ([`crate::exec::counted_forward`]).
    fn counts_only(&self) -> bool {
        false
    }

    /// Counts a call of `subscription` (for a policy that [`Policy::counts_only`]).
    fn count_call(
        &self,
        _node: &Node,
        _subscription: &str,
        _info: &dyn Fn(&str) -> Option<V>,
        _count: &Count,
    ) -> Result<(), Failure> {
        Ok(())
    }

    /// Whether it runs for a CORS preflight (only cors does).
    fn runs_in_preflight(&self) -> bool {
        false
    }

    /// Shows `visit` the policies nested inside this one.
    fn nested(&self, _visit: &mut dyn FnMut(&[Node])) {}

    /// The OpenID configuration URLs whose keys it needs (fetched by the gateway).
    fn openid_urls(&self) -> &[String] {
        &[]
    }
}

/// What running a policy gives.
pub enum Run<'a> {
    /// It finished.
    Done(Flow),
    /// It waits (for the backend, a timer, nested policies): poll this.
    Wait(BoxFut<'a, Flow>),
}

impl Run<'_> {
    /// A policy's step that finished: `Ok` goes on to the next policy, `Err` ends the section
    /// with that flow (a failure, or a response to send).
    pub fn of(step: Result<(), Flow>) -> Run<'static> {
        Run::Done(step.err().unwrap_or(Flow::Next))
    }
}

/// One element of a section, and where it is.
#[derive(Debug)]
pub struct Node {
    pub pos: Pos,
    pub name: &'static str,
    pub id: Option<String>,
    pub kind: Kind,
}

#[derive(Debug)]
pub enum Kind {
    /// `<base/>`: the next broader scope's same section runs here.
    Base,
    Policy(Box<dyn Policy>),
}

impl Node {
    pub fn is_base(&self) -> bool {
        matches!(self.kind, Kind::Base)
    }

    pub fn policy(&self) -> Option<&dyn Policy> {
        match &self.kind {
            Kind::Policy(p) => Some(p.as_ref()),
            Kind::Base => None,
        }
    }

    /// The policy as its own type, when it is a `T`.
    pub fn policy_as<T: Policy>(&self) -> Option<&T> {
        let any: &dyn Any = self.policy()?;
        any.downcast_ref()
    }
}

/// A parsed document: the four sections (a fragment has its policies under `Inbound`).
#[derive(Debug, Default)]
pub struct Document {
    /// By `Section as usize` (an array, not a map: every request looks sections up).
    pub sections: [Option<Vec<Node>>; 4],
    /// Whether some expression or policy reads a message body (the gateway then buffers
    /// bodies; otherwise they stream).
    pub reads_body: bool,
}

impl Document {
    pub fn section(&self, s: Section) -> Option<&[Node]> {
        self.sections[s as usize].as_deref()
    }

    /// The OpenID configuration URLs validate-jwt policies name (the gateway fetches their keys).
    pub fn openid_urls(&self) -> Vec<String> {
        fn walk(nodes: &[Node], out: &mut Vec<String>) {
            for policy in nodes.iter().filter_map(Node::policy) {
                out.extend(policy.openid_urls().iter().cloned());
                policy.nested(&mut |inner| walk(inner, out));
            }
        }
        let mut out = Vec::new();
        for nodes in self.sections.iter().flatten() {
            walk(nodes, &mut out);
        }
        out
    }
}

/// The documents of a request's scopes, broadest first: global, product, API, operation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chain<'a> {
    pub levels: [Option<&'a Document>; 4],
}

impl Chain<'_> {
    pub fn is_empty(&self) -> bool {
        self.levels.iter().all(Option::is_none)
    }

    pub fn reads_body(&self) -> bool {
        self.levels.iter().flatten().any(|d| d.reads_body)
    }
}

/// How the runner runs a list of nodes at a place (its own function, handed to policies).
pub type RunNodes = for<'x> fn(At<'x>, &'x [Node], &'x mut Exchange) -> BoxFut<'x, Flow>;

/// Where a policy runs: the chain and the scope level, the section, the node, the gateway's
/// services, and the runner for the policies nested in it.
#[derive(Clone, Copy)]
pub struct At<'a> {
    pub chain: &'a Chain<'a>,
    pub level: usize,
    pub section: Section,
    pub node: &'a Node,
    pub svc: &'a dyn Services,
    run_nodes: RunNodes,
}

impl<'a> At<'a> {
    pub fn new(
        chain: &'a Chain<'a>,
        level: usize,
        section: Section,
        node: &'a Node,
        svc: &'a dyn Services,
        run_nodes: RunNodes,
    ) -> At<'a> {
        At {
            chain,
            level,
            section,
            node,
            svc,
            run_nodes,
        }
    }

    /// Runs `nodes` here, as the runner runs a section's nodes.
    pub fn nested<'b>(self, nodes: &'b [Node], ex: &'b mut Exchange) -> BoxFut<'b, Flow>
    where
        'a: 'b,
    {
        (self.run_nodes)(self, nodes, ex)
    }

    /// The same place for another node (in another section).
    pub fn with(self, node: &'a Node, section: Section) -> At<'a> {
        At {
            node,
            section,
            ..self
        }
    }

    /// The section stops here with APIM's `reason`.
    pub fn fail(&self, status: u16, reason: &'static str, message: impl Into<String>) -> Flow {
        Flow::Fail(self.failure(status, reason, message))
    }

    pub fn failure(
        &self,
        status: u16,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Failure {
        Failure {
            status,
            reason,
            message: message.into(),
            policy: self.node.name,
            policy_id: self.node.id.clone(),
            pos: self.node.pos,
            headers: Vec::new(),
        }
    }

    /// Evaluates a text; an expression failure is APIM's ExpressionValueEvaluationFailure.
    pub fn value(&self, t: &Text, ex: &Exchange) -> Result<V, Flow> {
        match t {
            Text::Lit(s) => Ok(V::Str(s.clone())),
            Text::Expr(code) => expr::eval_code(code, ex).map_err(|e| self.eval_failure(e)),
        }
    }

    pub fn text(&self, t: &Text, ex: &Exchange) -> Result<String, Flow> {
        self.value(t, ex).map(|v| v.text())
    }

    pub fn texts(&self, ts: &[Text], ex: &Exchange) -> Result<Vec<String>, Flow> {
        ts.iter().map(|t| self.text(t, ex)).collect()
    }

    /// Evaluates a condition, which must be a bool.
    pub fn condition(&self, code: &Code, ex: &Exchange) -> Result<bool, Flow> {
        expr::eval_code(code, ex)
            .and_then(|value| value.truthy())
            .map_err(|e| self.eval_failure(e))
    }

    fn eval_failure(&self, e: expr::EvalError) -> Flow {
        self.fail(
            500,
            "ExpressionValueEvaluationFailure",
            format!("Expression evaluation failed. {e}"),
        )
    }
}

/// A whole-number attribute where APIM allows a policy expression: a literal checked when the
/// document is saved, or an expression whose value is checked against the same bound when it
/// runs (a value out of range fails the request as APIM's evaluation failure does).
#[derive(Debug, Clone)]
pub enum Num {
    Lit(u64),
    Expr {
        code: Arc<Code>,
        name: &'static str,
        max: u64,
    },
}

impl At<'_> {
    pub fn number(&self, n: &Num, ex: &Exchange) -> Result<u64, Flow> {
        let (code, name, max) = match n {
            Num::Lit(v) => return Ok(*v),
            Num::Expr { code, name, max } => (code, name, *max),
        };
        let v = expr::eval_code(code, ex).map_err(|e| self.eval_failure(e))?;
        let n = match &v {
            V::Int(i) => Some(*i),
            V::Double(d) if d.fract() == 0.0 => Some(*d as i64),
            V::Str(s) => s.trim().parse().ok(),
            _ => None,
        };
        match n.and_then(|n| u64::try_from(n).ok()) {
            Some(n) if n <= max => Ok(n),
            _ => Err(self.eval_failure(expr::EvalError(format!(
                "'{name}' must be a whole number from 0 to {max}, not '{}'",
                v.text()
            )))),
        }
    }
}
