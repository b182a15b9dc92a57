//! Evaluation of parsed expressions against a request's context: a frame of slots, statements
//! with their control flow, operators, and the dispatch of member accesses and calls to the
//! library modules by the receiver's kind.
//!
//! Every evaluation is bounded: [`MAX_STEPS`] statements, loop turns and function calls;
//! [`MAX_CALL_DEPTH`] nested calls of local functions; values no longer than
//! [`super::value::MAX_LEN`].

use super::ast::{Body, Expr, Init, Lambda, New, Pattern, Place, Stmt};
use super::value::{Env, EvalError, Host, Native, R, V, arg, equal, fail, int, num};
use super::{Code, library};
use std::sync::Arc;

/// Statements, loop turns and calls one evaluation may run.
pub const MAX_STEPS: u32 = 1_000_000;
/// How deeply local functions may call each other.
pub const MAX_CALL_DEPTH: usize = 200;

/// Evaluates a compiled expression or block.
pub fn eval_code(code: &Code, env: &dyn Env) -> R {
    let mut it = Interp {
        slots: vec![V::Null; code.slots],
        env,
        steps: 0,
        thrown: None,
        active: Vec::new(),
    };
    match &code.body {
        Body::Expr(e) => it.eval(e),
        Body::Block(stmts) => match it.run(stmts)? {
            Flow::Return(v) => Ok(v),
            _ => fail("the block ended without returning a value"),
        },
    }
}

enum Flow {
    Next,
    Break,
    Continue,
    Return(V),
}

struct Interp<'e> {
    slots: Vec<V>,
    env: &'e dyn Env,
    steps: u32,
    /// The kind of the exception a `throw` raised, while it propagates.
    thrown: Option<String>,
    /// Functions being run (for saving their slots when one calls itself).
    active: Vec<usize>,
}

impl Host for Interp<'_> {
    fn env(&self) -> &dyn Env {
        self.env
    }

    fn invoke(&mut self, f: &V, args: Vec<V>) -> R {
        let V::Native(n) = f else {
            return fail(format!("a {} cannot be called", f.type_name()));
        };
        let Native::Function(lambda) = &**n else {
            return fail("only a function can be called");
        };
        self.call_lambda(lambda.clone(), args)
    }
}

impl Interp<'_> {
    fn step(&mut self) -> Result<(), EvalError> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return fail("the expression ran too long (more than a million steps)");
        }
        Ok(())
    }

    fn call_lambda(&mut self, lambda: Arc<Lambda>, args: Vec<V>) -> R {
        self.step()?;
        if lambda.slots.end > self.slots.len() {
            return fail("a function was called outside the expression that made it");
        }
        if self.active.len() >= MAX_CALL_DEPTH {
            return fail(format!(
                "functions call each other more than {MAX_CALL_DEPTH} deep"
            ));
        }
        let id = Arc::as_ptr(&lambda) as usize;
        let saved = self
            .active
            .contains(&id)
            .then(|| self.slots[lambda.slots.clone()].to_vec());
        self.active.push(id);
        for (slot, value) in lambda.params.iter().zip(args) {
            self.slots[*slot] = value;
        }
        let out = crate::stack::deeper(|| match &lambda.body {
            Body::Expr(e) => self.eval(e),
            Body::Block(stmts) => match self.run(stmts)? {
                Flow::Return(v) => Ok(v),
                _ => Ok(V::Null),
            },
        });
        self.active.pop();
        if let Some(saved) = saved {
            self.slots[lambda.slots.clone()].clone_from_slice(&saved);
        }
        out
    }

    fn run(&mut self, stmts: &[Stmt]) -> Result<Flow, EvalError> {
        for s in stmts {
            self.step()?;
            match crate::stack::deeper(|| self.statement(s))? {
                Flow::Next => {}
                other => return Ok(other),
            }
        }
        Ok(Flow::Next)
    }

    fn statement(&mut self, s: &Stmt) -> Result<Flow, EvalError> {
        match s {
            Stmt::Var(slot, e) => {
                let v = self.eval(e)?;
                self.slots[*slot] = v;
            }
            Stmt::Assign(place, e) => {
                let v = self.eval(e)?;
                self.assign(place, v)?;
            }
            Stmt::Expr(e) => {
                self.eval(e)?;
            }
            Stmt::Return(e) => return Ok(Flow::Return(self.eval(e)?)),
            Stmt::Block(b) => return self.run(b),
            Stmt::If(c, a, b) => {
                let branch = if self.eval(c)?.truthy()? { a } else { b };
                return self.run(branch);
            }
            Stmt::Foreach(slot, list, body) => {
                let list = self.eval(list)?;
                let items = library::enumerate(self.env, list)?;
                for item in items {
                    self.slots[*slot] = item;
                    match self.run(body)? {
                        Flow::Break => break,
                        Flow::Return(v) => return Ok(Flow::Return(v)),
                        Flow::Next | Flow::Continue => {}
                    }
                }
            }
            Stmt::For(init, cond, step, body) => {
                self.run(init)?;
                loop {
                    if let Some(c) = cond
                        && !self.eval(c)?.truthy()?
                    {
                        break;
                    }
                    match self.run(body)? {
                        Flow::Break => break,
                        Flow::Return(v) => return Ok(Flow::Return(v)),
                        Flow::Next | Flow::Continue => {}
                    }
                    self.run(step)?;
                }
            }
            Stmt::While(cond, body) => {
                while self.eval(cond)?.truthy()? {
                    self.step()?;
                    match self.run(body)? {
                        Flow::Break => break,
                        Flow::Return(v) => return Ok(Flow::Return(v)),
                        Flow::Next | Flow::Continue => {}
                    }
                }
            }
            Stmt::DoWhile(body, cond) => loop {
                self.step()?;
                match self.run(body)? {
                    Flow::Break => break,
                    Flow::Return(v) => return Ok(Flow::Return(v)),
                    Flow::Next | Flow::Continue => {}
                }
                if !self.eval(cond)?.truthy()? {
                    break;
                }
            },
            Stmt::Switch(subject, cases) => return self.switch(subject, cases),
            Stmt::Try(body, catches, finally) => return self.try_statement(body, catches, finally),
            Stmt::Throw(e) => {
                let (kind, message) = match e {
                    None => (
                        self.thrown.clone().unwrap_or_else(|| "Exception".into()),
                        "rethrown".to_string(),
                    ),
                    Some(e) => match self.eval(e)? {
                        V::Native(n) => match &*n {
                            Native::Exception { kind, message } => (kind.clone(), message.clone()),
                            _ => ("Exception".into(), V::Native(n.clone()).text()),
                        },
                        v => ("Exception".into(), v.text()),
                    },
                };
                self.thrown = Some(kind);
                return fail(message);
            }
            Stmt::Break => return Ok(Flow::Break),
            Stmt::Continue => return Ok(Flow::Continue),
        }
        Ok(Flow::Next)
    }

    fn switch(&mut self, subject: &Expr, cases: &[super::ast::Case]) -> Result<Flow, EvalError> {
        let v = self.eval(subject)?;
        let mut chosen = None;
        'find: for (i, case) in cases.iter().enumerate() {
            for label in &case.labels {
                if equal(&v, &self.eval(label)?) {
                    chosen = Some(i);
                    break 'find;
                }
            }
        }
        let chosen = chosen.or_else(|| cases.iter().position(|c| c.is_default));
        let Some(i) = chosen else {
            return Ok(Flow::Next);
        };
        match self.run(&cases[i].body)? {
            Flow::Break | Flow::Next => Ok(Flow::Next),
            other => Ok(other),
        }
    }

    fn try_statement(
        &mut self,
        body: &[Stmt],
        catches: &[super::ast::Catch],
        finally: &[Stmt],
    ) -> Result<Flow, EvalError> {
        let mut out = self.run(body);
        if let Err(e) = &out
            && !e.0.starts_with(LIMIT_PREFIX)
            && self.steps <= MAX_STEPS
        {
            let kind = self.thrown.take().unwrap_or_else(|| "Exception".into());
            let error = e.0.clone();
            for c in catches {
                let matches = match c.kind.as_deref() {
                    None | Some("Exception") => true,
                    Some(k) => k == kind || kind == "Exception",
                };
                if !matches {
                    continue;
                }
                if let Some(slot) = c.slot {
                    self.slots[slot] = V::native(Native::Exception {
                        kind: kind.clone(),
                        message: error.clone(),
                    });
                }
                if let Some(w) = &c.when
                    && !self.eval(w)?.truthy()?
                {
                    continue;
                }
                out = self.run(&c.body);
                break;
            }
        }
        if !finally.is_empty() {
            match self.run(finally)? {
                Flow::Next => {}
                other => return Ok(other),
            }
        }
        out
    }

    fn eval(&mut self, e: &Expr) -> R {
        crate::stack::deeper(|| self.eval_here(e))
    }

    fn eval_here(&mut self, e: &Expr) -> R {
        match e {
            Expr::Lit(v) => Ok(v.clone()),
            Expr::Interp(parts) => {
                let mut s = String::new();
                for (p, format) in parts {
                    let v = self.eval(p)?;
                    match format {
                        None => s.push_str(&v.text()),
                        Some(f) => s.push_str(&library::format_value(&v, f)?),
                    }
                }
                Ok(V::Str(s))
            }
            Expr::Context => Ok(V::Ctx(String::new())),
            Expr::CtxPath(path) => library::context_path(self.env, path),
            Expr::Local(s) | Expr::Target(s) => Ok(self.slots[*s].clone()),
            Expr::Static(t) => Ok(V::Type(t.clone())),
            Expr::Member(target, name) => {
                let t = self.eval(target)?;
                library::member(self, t, name)
            }
            Expr::Index(target, index) => {
                let t = self.eval(target)?;
                let i = self.eval_all(index)?;
                library::index(self, t, &i)
            }
            Expr::NullSafe(target, access) => {
                let t = self.eval(target)?;
                if t.is_null() {
                    return Ok(V::Null);
                }
                if let Some(slot) = target_slot(access) {
                    self.slots[slot] = t;
                }
                self.eval(access)
            }
            Expr::OutVar(_) => fail("out is only allowed as an argument"),
            Expr::Call(target, name, generic, args) => {
                if let Some(Expr::OutVar(out)) = args.last() {
                    return self.try_call(target, name, generic.as_deref(), args, *out);
                }
                let t = self.eval(target)?;
                let a = self.eval_all(args)?;
                library::call(self, t, name, generic.as_deref(), a)
            }
            Expr::Invoke(slot, args) => {
                let f = self.slots[*slot].clone();
                let a = self.eval_all(args)?;
                self.invoke(&f, a)
            }
            Expr::Lambda(l) => Ok(V::native(Native::Function(l.clone()))),
            Expr::Unary(op, x) => {
                let v = self.eval(x)?;
                unary(op, v)
            }
            Expr::Cond(c, a, b) => {
                if self.eval(c)?.truthy()? {
                    self.eval(a)
                } else {
                    self.eval(b)
                }
            }
            Expr::Binary(first, rest) => {
                let mut acc = self.eval(first)?;
                for (op, operand) in rest {
                    acc = match *op {
                        "&&" => V::Bool(acc.truthy()? && self.eval(operand)?.truthy()?),
                        "||" => V::Bool(acc.truthy()? || self.eval(operand)?.truthy()?),
                        "??" if acc.is_null() => self.eval(operand)?,
                        "??" => acc,
                        _ => {
                            let right = self.eval(operand)?;
                            library::binary(op, acc, right)?
                        }
                    };
                }
                Ok(acc)
            }
            Expr::Cast(t, x) => {
                let v = self.eval(x)?;
                library::cast(t, v)
            }
            Expr::As(x, t) => {
                let v = self.eval(x)?;
                Ok(if library::is_type(&v, t) { v } else { V::Null })
            }
            Expr::Is(x, pattern) => {
                let v = self.eval(x)?;
                self.is(v, pattern)
            }
            Expr::New(n) => self.construct(n),
            Expr::Assign(place, value) => {
                let v = self.eval(value)?;
                self.assign(place, v.clone())?;
                Ok(v)
            }
            Expr::PostStep(place, op) => {
                let before = self.read_place(place)?;
                let after = library::binary(&op[..1], before.clone(), V::Int(1))?;
                self.assign(place, after)?;
                Ok(before)
            }
        }
    }

    fn eval_all(&mut self, args: &[Expr]) -> Result<Vec<V>, EvalError> {
        args.iter().map(|a| self.eval(a)).collect()
    }

    fn is(&mut self, v: V, pattern: &Pattern) -> R {
        Ok(V::Bool(match pattern {
            Pattern::Null => v.is_null(),
            Pattern::NotNull => !v.is_null(),
            Pattern::Value(e) => {
                let p = self.eval(e)?;
                equal(&v, &p)
            }
            Pattern::Type(t, slot) => {
                let m = !v.is_null() && library::is_type(&v, t);
                if let (true, Some(s)) = (m, slot) {
                    self.slots[*s] = library::cast(t, v).unwrap_or(V::Null);
                }
                m
            }
        }))
    }

    fn construct(&mut self, n: &New) -> R {
        match n {
            New::Array(items) => Ok(V::list(self.eval_all(items)?)),
            New::Sized(t, size) => {
                let n = int(&self.eval(size)?)
                    .ok_or_else(|| EvalError("an array size must be a number".into()))?;
                super::construct::sized(t, n)
            }
            New::Anonymous(fields) => {
                let mut map = serde_json::Map::new();
                for (name, e) in fields {
                    let v = self.eval(e)?;
                    map.insert(name.clone(), super::value::to_json(&v));
                }
                Ok(V::json(serde_json::Value::Object(map)))
            }
            New::Object(t, args, inits) => {
                let a = self.eval_all(args)?;
                let obj = super::construct::object(t, a)?;
                for init in inits {
                    match init {
                        Init::Add(items) => {
                            let items = self.eval_all(items)?;
                            library::call(self, obj.clone(), "Add", None, items)?;
                        }
                        Init::Keyed(k, v) => {
                            let (k, v) = (self.eval(k)?, self.eval(v)?);
                            library::set_index(&obj, &[k], v)?;
                        }
                        Init::Property(name, v) => {
                            let v = self.eval(v)?;
                            library::set_member(&obj, name, v)?;
                        }
                    }
                }
                Ok(obj)
            }
        }
    }

    fn read_place(&mut self, place: &Place) -> R {
        match place {
            Place::Local(s) => Ok(self.slots[*s].clone()),
            Place::Index(t, i) => {
                let t = self.eval(t)?;
                let i = self.eval_all(i)?;
                library::index(self, t, &i)
            }
            Place::Member(t, n) => {
                let t = self.eval(t)?;
                library::member(self, t, n)
            }
        }
    }

    fn assign(&mut self, place: &Place, v: V) -> Result<(), EvalError> {
        match place {
            Place::Local(s) => {
                self.slots[*s] = v;
                Ok(())
            }
            Place::Index(t, i) => {
                let t = self.eval(t)?;
                let i = self.eval_all(i)?;
                library::set_index(&t, &i, v)
            }
            Place::Member(t, n) => {
                let t = self.eval(t)?;
                library::set_member(&t, n, v)
            }
        }
    }

    /// `X.TryParse(text, out v)`, `d.TryGetValue(k, out v)`, `s.TryParseJwt(out j)`, …: the
    /// value (or the type's default) into the out variable, and whether it worked.
    fn try_call(
        &mut self,
        target: &Expr,
        name: &str,
        generic: Option<&str>,
        args: &[Expr],
        out: usize,
    ) -> R {
        let t = self.eval(target)?;
        let a = self.eval_all(&args[..args.len() - 1])?;
        let (value, ok) = match name {
            "TryGetValue" => match library::try_get(self, &t, &arg(&a, 0, name)?) {
                Some(v) => (v, true),
                None => (V::Null, false),
            },
            _ => {
                let method = match name {
                    "TryParse" => "Parse",
                    "TryParseExact" => "ParseExact",
                    "TryCreate" => "Create",
                    "TryParseJwt" => "AsJwt",
                    "TryParseBasic" => "AsBasic",
                    "TryFormat" | "TryDequeue" | "TryPop" | "TryPeek" | "TryAdd" => &name[3..],
                    n => return fail(format!("{n} does not take an out argument")),
                };
                let default = match &t {
                    V::Type(ty) => super::value::default_of(ty),
                    _ => V::Null,
                };
                match library::call(self, t, method, generic, a) {
                    Ok(v) if !v.is_null() => (v, true),
                    _ => (default, false),
                }
            }
        };
        self.thrown = None;
        self.slots[out] = value;
        Ok(V::Bool(ok))
    }
}

/// Errors that no `catch` may swallow: the evaluation's own limits.
const LIMIT_PREFIX: &str = "the expression ran too long";

fn target_slot(access: &Expr) -> Option<usize> {
    match access {
        Expr::Member(t, _) | Expr::Call(t, ..) | Expr::Index(t, _) => match **t {
            Expr::Target(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

fn unary(op: &str, v: V) -> R {
    match (op, &v) {
        ("!", _) => Ok(V::Bool(!v.truthy()?)),
        ("-", V::Int(n)) => n
            .checked_neg()
            .map(V::Int)
            .ok_or_else(|| EvalError("arithmetic overflow".into())),
        ("-", V::Double(d)) => Ok(V::Double(-d)),
        ("-", V::Span(d)) => Ok(V::Span(-*d)),
        ("-", V::Json(_)) => match (int(&v), num(&v)) {
            (Some(i), _) => Ok(V::Int(-i)),
            (None, Some(d)) => Ok(V::Double(-d)),
            _ => fail("'-' cannot apply to this JToken"),
        },
        ("~", V::Int(n)) => Ok(V::Int(!n)),
        _ => fail(format!("'{op}' cannot apply to {}", v.type_name())),
    }
}
