//! Statements of `@{ … }` blocks and lambda bodies: declarations, assignments, `if`, loops,
//! `switch`, `try`/`catch`/`finally`, `throw`, and local functions (hoisted to the start of
//! their block, as C# lets a block call a function declared below the call).

use super::ExprError;
use super::ast::{Body, Case, Catch, Expr, Lambda, Stmt};
use super::lex::Tok;
use super::parse::{Parser, compound};
use super::value::V;
use std::sync::Arc;

/// Whether every path through `stmts` ends in `return` or `throw`.
pub fn returns(stmts: &[Stmt]) -> bool {
    stmts.iter().any(|s| match s {
        Stmt::Return(_) | Stmt::Throw(_) => true,
        Stmt::If(_, a, b) => returns(a) && returns(b),
        Stmt::Block(b) => returns(b),
        Stmt::Try(body, catches, finally) => {
            returns(finally) || (returns(body) && catches.iter().all(|c| returns(&c.body)))
        }
        Stmt::Switch(_, cases) => {
            cases.iter().any(|c| c.is_default) && cases.iter().all(|c| returns(&c.body))
        }
        Stmt::While(Expr::Lit(V::Bool(true)), body) | Stmt::For(_, None, _, body) => !breaks(body),
        _ => false,
    })
}

/// Whether a loop body has a `break` of its own (not one of a nested loop or switch).
fn breaks(stmts: &[Stmt]) -> bool {
    stmts.iter().any(|s| match s {
        Stmt::Break => true,
        Stmt::If(_, a, b) => breaks(a) || breaks(b),
        Stmt::Block(b) => breaks(b),
        Stmt::Try(a, c, f) => breaks(a) || breaks(f) || c.iter().any(|c| breaks(&c.body)),
        _ => false,
    })
}

impl Parser<'_> {
    /// The statements of a block up to its `}` (or the end, at the top): local functions first.
    pub(super) fn block_statements(&mut self, top: bool) -> Result<Vec<Stmt>, ExprError> {
        let scope = (self.locals.len(), self.functions.len());
        self.hoist_functions()?;
        let mut functions = Vec::new();
        let mut out = Vec::new();
        loop {
            if self.peek().is_none() {
                if top {
                    break;
                }
                return Err(self.err("'}' expected"));
            }
            if !top && self.is("}") {
                break;
            }
            match self.statement()? {
                s @ Stmt::Var(_, Expr::Lambda(_)) if self.was_function => {
                    self.was_function = false;
                    functions.push(s)
                }
                s => out.push(s),
            }
        }
        self.locals.truncate(scope.0);
        self.functions.truncate(scope.1);
        functions.extend(out);
        Ok(functions)
    }

    /// Declares the local functions of the block about to be parsed, so calls before their
    /// declaration bind.
    fn hoist_functions(&mut self) -> Result<(), ExprError> {
        let scope_start = self.functions.len();
        let (mut i, mut depth) = (self.pos, 0i32);
        while let Some((tok, _)) = self.toks.get(i).cloned() {
            match tok {
                Tok::Punct("{" | "(" | "[") => depth += 1,
                Tok::Punct("}" | ")" | "]") => {
                    depth -= 1;
                    if depth < 0 {
                        break;
                    }
                }
                Tok::Punct(";") if depth == 0 => {}
                Tok::Ident(ref name) if depth == 0 => {
                    let save = self.pos;
                    self.pos = i;
                    let found = self.attempt(|p| p.function_head()).map(|(n, _)| n);
                    self.pos = save;
                    let _ = name;
                    if let Some(n) = found
                        && !self.functions[scope_start..].iter().any(|f| f.0 == n)
                    {
                        let slot = self.new_slot()?;
                        self.functions.push((n, slot));
                    }
                }
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }

    /// `Type Name(` … with the name, when the cursor is at a local function's declaration.
    fn function_head(&mut self) -> Result<(String, usize), ExprError> {
        let start = self.pos;
        self.eat_word("static");
        if !self.eat_word("void") {
            self.type_name()?;
        }
        let name = self.ident()?;
        if !self.is("(") {
            return Err(self.err("not a function"));
        }
        // The parameter list must be followed by a body.
        let (mut j, mut depth) = (self.pos, 0);
        while let Some((t, _)) = self.toks.get(j) {
            match t {
                Tok::Punct("(") => depth += 1,
                Tok::Punct(")") => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        match self.toks.get(j + 1).map(|t| &t.0) {
            Some(Tok::Punct("{" | "=>")) => Ok((name, start)),
            _ => Err(self.err("not a function")),
        }
    }

    fn body(&mut self) -> Result<Vec<Stmt>, ExprError> {
        let depth = self.locals.len();
        let stmts = if self.eat("{") {
            let s = self.block_statements(false)?;
            self.expect("}")?;
            s
        } else {
            vec![self.statement()?]
        };
        self.locals.truncate(depth);
        Ok(stmts)
    }

    pub(super) fn statement(&mut self) -> Result<Stmt, ExprError> {
        self.nested(Self::statement_here)
    }

    fn statement_here(&mut self) -> Result<Stmt, ExprError> {
        let word = match self.peek() {
            Some(Tok::Ident(w)) => w.clone(),
            Some(Tok::Punct("{")) => {
                self.pos += 1;
                let s = self.block_statements(false)?;
                self.expect("}")?;
                return Ok(Stmt::Block(s));
            }
            Some(Tok::Punct(";")) => {
                self.pos += 1;
                return Ok(Stmt::Block(Vec::new()));
            }
            _ => String::new(),
        };
        match word.as_str() {
            "return" => {
                self.pos += 1;
                let e = if self.is(";") {
                    Expr::Lit(V::Null)
                } else {
                    self.expr()?
                };
                self.expect(";")?;
                Ok(Stmt::Return(e))
            }
            "if" => self.if_statement(),
            "foreach" => self.foreach(),
            "for" => self.for_loop(),
            "while" => {
                self.pos += 1;
                let c = self.condition()?;
                Ok(Stmt::While(c, self.body()?))
            }
            "do" => {
                self.pos += 1;
                let body = self.body()?;
                if !self.eat_word("while") {
                    return Err(self.err("'while' expected after do { … }"));
                }
                let c = self.condition()?;
                self.expect(";")?;
                Ok(Stmt::DoWhile(body, c))
            }
            "switch" => self.switch(),
            "try" => self.try_statement(),
            "throw" => {
                self.pos += 1;
                let e = if self.is(";") {
                    None
                } else {
                    Some(self.expr()?)
                };
                self.expect(";")?;
                Ok(Stmt::Throw(e))
            }
            "break" | "continue" => {
                self.pos += 1;
                self.expect(";")?;
                Ok(if word == "break" {
                    Stmt::Break
                } else {
                    Stmt::Continue
                })
            }
            "using" => self.using(),
            "goto" | "lock" | "unsafe" | "fixed" | "yield" => Err(self.err(format!(
                "'{word}' statements are not supported in policy expressions"
            ))),
            _ => self.simple_statement(),
        }
    }

    /// A declaration, a local function or an expression statement.
    fn simple_statement(&mut self) -> Result<Stmt, ExprError> {
        if let Some((name, _)) = self.attempt(|p| {
            let save = p.pos;
            let head = p.function_head();
            p.pos = save;
            head
        }) && let Some(slot) = self
            .functions
            .iter()
            .rev()
            .find(|f| f.0 == name)
            .map(|f| f.1)
        {
            return self.function(slot);
        }
        if let Some(t) = self.attempt(Self::declaration_head) {
            return self.declaration(t);
        }
        let e = self.expr()?;
        self.expect(";")?;
        Ok(match e {
            Expr::Assign(place, value) => Stmt::Assign(*place, *value),
            other => Stmt::Expr(other),
        })
    }

    /// `T name` followed by `=`, `;` or `,`: the start of a declaration.
    fn declaration_head(&mut self) -> Result<String, ExprError> {
        let t = if self.eat_word("var") {
            "var".to_string()
        } else {
            self.type_name()?
        };
        if !matches!(self.peek(), Some(Tok::Ident(_)))
            || !matches!(self.peek_at(1), Some(Tok::Punct("=" | ";" | ",")))
        {
            return Err(self.err("not a declaration"));
        }
        Ok(t)
    }

    /// `var x = …;`, `T x;`, `T x = …, y = …;` (several become a block of declarations).
    /// Committed once its head is read.
    fn declaration(&mut self, t: String) -> Result<Stmt, ExprError> {
        let mut decls = Vec::new();
        loop {
            let name = self.ident()?;
            if !(self.is("=") || self.is(";") || self.is(",")) {
                return Err(self.err("'=' or ';' expected in a declaration"));
            }
            let value = if self.eat("=") {
                let v = self.expr()?;
                if t.starts_with("XNamespace") {
                    Expr::Cast("XNamespace".into(), Box::new(v))
                } else {
                    v
                }
            } else {
                Expr::Lit(super::value::default_of(&t))
            };
            let slot = self.declare(name)?;
            decls.push(Stmt::Var(slot, value));
            if !self.eat(",") {
                break;
            }
        }
        self.expect(";")?;
        Ok(if decls.len() == 1 {
            decls.remove(0)
        } else {
            // Not a new scope: the names stay declared after it.
            Stmt::Block(decls)
        })
    }

    /// A local function's declaration, its slot already declared.
    fn function(&mut self, slot: usize) -> Result<Stmt, ExprError> {
        self.eat_word("static");
        if !self.eat_word("void") {
            self.type_name()?;
        }
        self.ident()?;
        self.expect("(")?;
        let scope = self.locals.len();
        let first = self.next_slot;
        let mut params = Vec::new();
        if !self.eat(")") {
            loop {
                self.type_name()?;
                let name = self.ident()?;
                params.push(self.declare(name)?);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        let body = if self.eat("=>") {
            let e = self.expr()?;
            self.expect(";")?;
            Body::Expr(e)
        } else {
            self.expect("{")?;
            let s = self.block_statements(false)?;
            self.expect("}")?;
            Body::Block(s)
        };
        self.locals.truncate(scope);
        self.was_function = true;
        Ok(Stmt::Var(
            slot,
            Expr::Lambda(Arc::new(Lambda {
                params,
                slots: first..self.next_slot,
                body,
            })),
        ))
    }

    /// `using (var h = new HMACSHA256(k)) { … }` and `using var h = …;`: nothing here holds
    /// a resource to release, so it is the declaration and its block.
    fn using(&mut self) -> Result<Stmt, ExprError> {
        self.pos += 1;
        let scope = self.locals.len();
        let mut out = Vec::new();
        if self.eat("(") {
            match self.attempt(Self::declaration_head) {
                Some(t) => {
                    let d = self.declaration_in_parens(t)?;
                    out.push(d);
                }
                None => {
                    out.push(Stmt::Expr(self.expr()?));
                    self.expect(")")?;
                }
            }
            out.extend(self.body()?);
            self.locals.truncate(scope);
            return Ok(Stmt::Block(out));
        }
        let t = self.declaration_head()?;
        self.declaration(t)
    }

    /// The declaration of `using (T x = …)`, up to its `)`.
    fn declaration_in_parens(&mut self, _t: String) -> Result<Stmt, ExprError> {
        let name = self.ident()?;
        self.expect("=")?;
        let value = self.expr()?;
        self.expect(")")?;
        let slot = self.declare(name)?;
        Ok(Stmt::Var(slot, value))
    }

    fn condition(&mut self) -> Result<Expr, ExprError> {
        self.expect("(")?;
        let c = self.expr()?;
        self.expect(")")?;
        Ok(c)
    }

    fn if_statement(&mut self) -> Result<Stmt, ExprError> {
        self.pos += 1;
        let scope = self.locals.len();
        let c = self.condition()?;
        let then = self.body()?;
        let otherwise = if self.eat_word("else") {
            self.body()?
        } else {
            Vec::new()
        };
        // Pattern variables (`x is JObject o`) stay in scope after an if in C# only in
        // narrow cases; keeping them is harmless since names are unique per scope.
        let _ = scope;
        Ok(Stmt::If(c, then, otherwise))
    }

    fn foreach(&mut self) -> Result<Stmt, ExprError> {
        self.pos += 1;
        self.expect("(")?;
        if !self.eat_word("var") {
            self.type_name()?;
        }
        let name = self.ident()?;
        if !self.eat_word("in") {
            return Err(self.err("'in' expected"));
        }
        let list = self.expr()?;
        self.expect(")")?;
        let scope = self.locals.len();
        let slot = self.declare(name)?;
        let body = self.body()?;
        self.locals.truncate(scope);
        Ok(Stmt::Foreach(slot, list, body))
    }

    fn for_loop(&mut self) -> Result<Stmt, ExprError> {
        self.pos += 1;
        self.expect("(")?;
        let scope = self.locals.len();
        let mut init = Vec::new();
        if !self.eat(";") {
            match self.attempt(Self::declaration_head) {
                Some(t) => init.push(self.declaration(t)?),
                None => {
                    init.extend(self.expression_list()?);
                    self.expect(";")?;
                }
            }
        }
        let cond = if self.is(";") {
            None
        } else {
            Some(self.expr()?)
        };
        self.expect(";")?;
        let step = if self.is(")") {
            Vec::new()
        } else {
            self.expression_list()?
        };
        self.expect(")")?;
        let body = self.body()?;
        self.locals.truncate(scope);
        Ok(Stmt::For(init, cond, step, body))
    }

    fn expression_list(&mut self) -> Result<Vec<Stmt>, ExprError> {
        let mut out = Vec::new();
        loop {
            out.push(match self.expr()? {
                Expr::Assign(p, v) => Stmt::Assign(*p, *v),
                Expr::PostStep(p, op) => {
                    let value = compound(&p, op, Expr::Lit(V::Int(1)));
                    Stmt::Assign(*p, value)
                }
                e => Stmt::Expr(e),
            });
            if !self.eat(",") {
                return Ok(out);
            }
        }
    }

    fn switch(&mut self) -> Result<Stmt, ExprError> {
        self.pos += 1;
        let subject = self.condition()?;
        self.expect("{")?;
        let mut cases: Vec<Case> = Vec::new();
        while !self.eat("}") {
            let mut case = Case {
                labels: Vec::new(),
                is_default: false,
                body: Vec::new(),
            };
            loop {
                if self.eat_word("case") {
                    case.labels.push(self.expr()?);
                    self.expect(":")?;
                } else if self.eat_word("default") {
                    self.expect(":")?;
                    case.is_default = true;
                } else {
                    break;
                }
            }
            if case.labels.is_empty() && !case.is_default {
                return Err(self.err("'case' or 'default' expected in a switch"));
            }
            let scope = self.locals.len();
            while !(self.is_word("case") || self.is_word("default") || self.is("}")) {
                if self.peek().is_none() {
                    return Err(self.err("'}' expected at the end of the switch"));
                }
                case.body.push(self.statement()?);
            }
            self.locals.truncate(scope);
            cases.push(case);
        }
        Ok(Stmt::Switch(subject, cases))
    }

    fn try_statement(&mut self) -> Result<Stmt, ExprError> {
        self.pos += 1;
        let body = self.braced()?;
        let mut catches = Vec::new();
        while self.eat_word("catch") {
            let scope = self.locals.len();
            let (mut kind, mut slot) = (None, None);
            if self.eat("(") {
                kind = Some(self.ident()?);
                if let Some(Tok::Ident(n)) = self.peek().cloned() {
                    self.pos += 1;
                    slot = Some(self.declare(n)?);
                }
                self.expect(")")?;
            }
            let when = if self.eat_word("when") {
                Some(self.condition()?)
            } else {
                None
            };
            let body = self.braced()?;
            self.locals.truncate(scope);
            catches.push(Catch {
                kind,
                slot,
                when,
                body,
            });
        }
        let finally = if self.eat_word("finally") {
            self.braced()?
        } else {
            Vec::new()
        };
        if catches.is_empty() && finally.is_empty() {
            return Err(self.err("'catch' or 'finally' expected after try { … }"));
        }
        Ok(Stmt::Try(body, catches, finally))
    }

    fn braced(&mut self) -> Result<Vec<Stmt>, ExprError> {
        self.expect("{")?;
        let s = self.block_statements(false)?;
        self.expect("}")?;
        Ok(s)
    }
}
