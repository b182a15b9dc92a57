//! Parser of the C# subset: a precedence-climbing parser for expressions (this module) and a
//! statement parser for `@{ … }` blocks and lambda bodies (`stmt`). Names are bound as they are
//! parsed — locals to frame slots, `context` members checked, types against the allowed list,
//! members against the implemented list — so an expression that would fail to bind is a
//! write-time error naming the construct.

use super::ast::{Body, Expr, Init, Lambda, New, Pattern, Place, Slot};
use super::lex::{InterpPart, Spanned, Tok, lex};
use super::types;
use super::value::V;
use super::{ExprError, context_path_known};
use std::sync::Arc;

/// How deeply an expression may nest: operators of rising precedence, parentheses, `!`, `-` and
/// casts, member accesses and calls, conditionals, interpolation holes, lambdas and block
/// statements each count a level. Parsing and evaluation recurse once per level, so this bounds
/// the stack either needs whatever the input; chains of one operator (`a || b || …`) count once
/// however long they are (see [`Expr::Binary`]).
pub const MAX_NESTING: usize = 64;

/// Most locals, parameters and loop variables in one expression.
pub const MAX_SLOTS: usize = 4096;

pub(super) struct Parser<'a> {
    pub(super) toks: Vec<Spanned>,
    pub(super) pos: usize,
    src: &'a str,
    base: usize,
    /// Names in scope, innermost last, with their slots.
    pub(super) locals: Vec<(String, Slot)>,
    /// Local functions in scope (hoisted), with their slots.
    pub(super) functions: Vec<(String, Slot)>,
    pub(super) next_slot: Slot,
    /// The nesting level being parsed (see [`MAX_NESTING`]).
    pub(super) depth: usize,
    /// Set by a local function's declaration, for its block to hoist it.
    pub(super) was_function: bool,
    /// The nesting error, once met: it wins over whatever a look-ahead that met it reports
    /// after backing out.
    pub(super) too_deep: Option<ExprError>,
}

/// Parses an expression (`block` false) or statements; returns the body and its frame size.
pub fn parse_code(src: &str, block: bool) -> Result<(Body, usize), ExprError> {
    let mut p = Parser::new(src, 0, Vec::new(), 0, 0)?;
    let parsed = parse_body(&mut p, src, block);
    match p.too_deep {
        Some(e) => Err(e),
        None => parsed,
    }
}

fn parse_body(p: &mut Parser, src: &str, block: bool) -> Result<(Body, usize), ExprError> {
    let body = if block {
        let stmts = p.block_statements(true)?;
        if !super::stmt::returns(&stmts) {
            return Err(ExprError::at(
                src.len(),
                "not all code paths of the block return a value",
            ));
        }
        Body::Block(stmts)
    } else {
        let e = p.expr()?;
        p.end()?;
        Body::Expr(e)
    };
    Ok((body, p.next_slot))
}

impl<'a> Parser<'a> {
    pub(super) fn new(
        src: &'a str,
        base: usize,
        locals: Vec<(String, Slot)>,
        next_slot: Slot,
        depth: usize,
    ) -> Result<Parser<'a>, ExprError> {
        let toks = lex(src).map_err(|e| e.shift(base))?;
        Ok(Parser {
            toks,
            pos: 0,
            src,
            base,
            locals,
            functions: Vec::new(),
            next_slot,
            depth,
            was_function: false,
            too_deep: None,
        })
    }

    /// Enters one nesting level; fails past [`MAX_NESTING`] before anything recurses further.
    pub(super) fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            let e = self.err(format!(
                "the expression nests more than {MAX_NESTING} levels deep (parentheses, operators, calls, conditionals or blocks inside each other)"
            ));
            self.too_deep.get_or_insert(e.clone());
            return Err(e);
        }
        Ok(())
    }

    /// Runs `parse` one nesting level deeper.
    pub(super) fn nested<T>(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<T, ExprError>,
    ) -> Result<T, ExprError> {
        self.enter()?;
        let out = crate::stack::deeper(|| parse(self));
        self.depth -= 1;
        out
    }

    pub(super) fn offset(&self) -> usize {
        self.base + self.toks.get(self.pos).map_or(self.src.len(), |t| t.1)
    }

    pub(super) fn err(&self, msg: impl Into<String>) -> ExprError {
        ExprError::at(self.offset(), msg)
    }

    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    pub(super) fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|t| &t.0)
    }

    pub(super) fn is(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::Punct(q)) if *q == p)
    }

    pub(super) fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(q)) if q == w)
    }

    pub(super) fn eat(&mut self, p: &str) -> bool {
        if self.is(p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn eat_word(&mut self, w: &str) -> bool {
        if self.is_word(w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn expect(&mut self, p: &str) -> Result<(), ExprError> {
        if self.eat(p) {
            Ok(())
        } else {
            Err(self.err(format!("'{p}' expected")))
        }
    }

    pub(super) fn end(&self) -> Result<(), ExprError> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(self.err(format!("unexpected {} after the expression", describe(t)))),
        }
    }

    pub(super) fn ident(&mut self) -> Result<String, ExprError> {
        match self.peek().cloned() {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s)
            }
            Some(t) => Err(self.err(format!("a name expected, not {}", describe(&t)))),
            None => Err(self.err("a name expected at the end")),
        }
    }

    /// A new local in the innermost scope.
    pub(super) fn declare(&mut self, name: String) -> Result<Slot, ExprError> {
        let slot = self.new_slot()?;
        self.locals.push((name, slot));
        Ok(slot)
    }

    pub(super) fn new_slot(&mut self) -> Result<Slot, ExprError> {
        if self.next_slot >= MAX_SLOTS {
            return Err(self.err(format!(
                "the expression declares more than {MAX_SLOTS} variables"
            )));
        }
        self.next_slot += 1;
        Ok(self.next_slot - 1)
    }

    pub(super) fn local(&self, name: &str) -> Option<Slot> {
        self.locals
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
    }

    /// Runs `f`; on failure puts the position back and gives `None` (for the places where C#
    /// needs a look ahead: casts, declarations, lambdas, generic arguments).
    pub(super) fn attempt<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ExprError>,
    ) -> Option<T> {
        let (pos, locals, next) = (self.pos, self.locals.len(), self.next_slot);
        match f(self) {
            Ok(v) => Some(v),
            Err(_) => {
                self.pos = pos;
                self.locals.truncate(locals);
                self.next_slot = next;
                None
            }
        }
    }

    /// A type as written: `string`, `System.Text.Encoding`, `Dictionary<string, List<int>>`,
    /// `int?`, `byte[]`. Gives the name without namespace, type arguments kept.
    pub(super) fn type_name(&mut self) -> Result<String, ExprError> {
        let at = self.offset();
        let mut name = self.ident()?;
        while types::is_namespace(&name) && self.is(".") {
            self.pos += 1;
            let next = self.ident()?;
            name = format!("{name}.{next}");
            if !types::is_namespace(&name) {
                name = next;
                break;
            }
        }
        if types::is_namespace(&name) {
            return Err(ExprError::at(at, format!("a type expected after {name}")));
        }
        if !types::is_type(&name) {
            return Err(ExprError::at(at, types::refusal(&name)));
        }
        if self.is("<") {
            self.pos += 1;
            let args = self.nested(|p| {
                let mut args = vec![p.type_name()?];
                while p.eat(",") {
                    args.push(p.type_name()?);
                }
                Ok(args)
            })?;
            self.expect(">")?;
            name = format!("{name}<{}>", args.join(","));
        }
        if self.eat("?") {
            name.push('?');
        }
        while self.is("[") && matches!(self.peek_at(1), Some(Tok::Punct("]"))) {
            self.pos += 2;
            name.push_str("[]");
        }
        Ok(name)
    }

    pub fn expr(&mut self) -> Result<Expr, ExprError> {
        if self.is("(") || matches!(self.peek_at(1), Some(Tok::Punct("=>"))) {
            let at = self.pos;
            match self.lambda() {
                Ok(l) => return Ok(l),
                Err(e) if self.pos != at => return Err(e),
                Err(_) => {}
            }
        }
        let start = self.pos;
        let cond = self.conditional()?;
        const ASSIGN: &[&str] = &["=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "??="];
        if let Some(Tok::Punct(op)) = self.peek().cloned()
            && ASSIGN.contains(&op)
        {
            let place = self.place_of(cond, start)?;
            self.pos += 1;
            // `a = b = c …` nests to the right: each assignment one level deeper.
            let value = self.nested(|p| p.expr())?;
            return Ok(Expr::Assign(
                Box::new(place.clone()),
                Box::new(compound(&place, op, value)),
            ));
        }
        Ok(cond)
    }

    /// What an assignment's left side writes.
    pub(super) fn place_of(&self, e: Expr, start: usize) -> Result<Place, ExprError> {
        let at = self.base + self.toks.get(start).map_or(0, |t| t.1);
        match e {
            Expr::Local(s) => Ok(Place::Local(s)),
            Expr::Index(t, i) => Ok(Place::Index(*t, i)),
            Expr::Member(t, n) if !matches!(*t, Expr::Context) => Ok(Place::Member(*t, n)),
            _ => Err(ExprError::at(
                at,
                "only a local variable, an indexer or a property can be assigned",
            )),
        }
    }

    fn conditional(&mut self) -> Result<Expr, ExprError> {
        let cond = self.binary(0)?;
        if self.eat("?") {
            return self.nested(|p| {
                let a = p.expr()?;
                p.expect(":")?;
                let b = p.expr()?;
                Ok(Expr::Cond(Box::new(cond), Box::new(a), Box::new(b)))
            });
        }
        Ok(cond)
    }

    /// The binary operator at the cursor and its precedence (shifts read from two adjacent
    /// `<`/`>` tokens).
    fn operator(&self) -> Option<(&'static str, u8, usize)> {
        match self.peek()? {
            Tok::Ident(w) if w == "is" || w == "as" => {
                Some((if w == "is" { "is" } else { "as" }, 8, 1))
            }
            Tok::Punct(op) => {
                let adjacent = |p: &str| {
                    matches!(self.peek_at(1), Some(Tok::Punct(q)) if *q == p)
                        && self.toks.get(self.pos + 1).map(|t| t.1)
                            == self.toks.get(self.pos).map(|t| t.1 + 1)
                };
                Some(match *op {
                    "??" => ("??", 1, 1),
                    "||" => ("||", 2, 1),
                    "&&" => ("&&", 3, 1),
                    "|" => ("|", 4, 1),
                    "^" => ("^", 5, 1),
                    "&" => ("&", 6, 1),
                    "==" | "!=" => (op, 7, 1),
                    "<" if adjacent("<") => ("<<", 9, 2),
                    ">" if adjacent(">") => (">>", 9, 2),
                    "<" | ">" | "<=" | ">=" => (op, 8, 1),
                    "+" | "-" => (op, 10, 1),
                    "*" | "/" | "%" => (op, 11, 1),
                    _ => return None,
                })
            }
            _ => None,
        }
    }

    /// Operators from precedence `min` up, by precedence climbing. Every operator this loop
    /// meets applies to what is on its left so far, so the operators are kept as one flat
    /// list: a chain of any length nests one level. (`??` is right-associative in C#, but
    /// `(a ?? b) ?? c` and `a ?? (b ?? c)` both give the first of a, b, c that is not null,
    /// evaluated in the same order, so it is folded from the left too.)
    fn binary(&mut self, min: u8) -> Result<Expr, ExprError> {
        self.nested(|p| {
            let mut first = p.unary()?;
            let mut rest: Vec<(&'static str, Expr)> = Vec::new();
            while let Some((op, prec, width)) = p.operator() {
                if prec < min {
                    break;
                }
                p.pos += width;
                if op == "is" || op == "as" {
                    let left = fold(first, std::mem::take(&mut rest));
                    first = if op == "as" {
                        Expr::As(Box::new(left), p.type_name()?)
                    } else {
                        Expr::Is(Box::new(left), Box::new(p.pattern()?))
                    };
                    continue;
                }
                rest.push((op, p.binary(prec + 1)?));
            }
            Ok(fold(first, rest))
        })
    }

    fn pattern(&mut self) -> Result<Pattern, ExprError> {
        if self.eat_word("null") {
            return Ok(Pattern::Null);
        }
        if self.is_word("not") && matches!(self.peek_at(1), Some(Tok::Ident(n)) if n == "null") {
            self.pos += 2;
            return Ok(Pattern::NotNull);
        }
        if let Some(t) = self.attempt(Self::type_name) {
            let slot = match self.peek().cloned() {
                Some(Tok::Ident(n)) if !matches!(n.as_str(), "and" | "or" | "when") => {
                    self.pos += 1;
                    Some(self.declare(n)?)
                }
                _ => None,
            };
            return Ok(Pattern::Type(t, slot));
        }
        Ok(Pattern::Value(self.unary()?))
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        for op in ["!", "-", "~", "+"] {
            if self.eat(op) {
                let operand = self.nested(Self::unary)?;
                return Ok(if op == "+" {
                    operand
                } else {
                    Expr::Unary(op, Box::new(operand))
                });
            }
        }
        for op in ["++", "--"] {
            let start = self.pos + 1;
            if self.eat(op) {
                let target = self.nested(Self::unary)?;
                let place = self.place_of(target, start)?;
                let step = compound(
                    &place,
                    if op == "++" { "+=" } else { "-=" },
                    Expr::Lit(V::Int(1)),
                );
                return Ok(Expr::Assign(Box::new(place), Box::new(step)));
            }
        }
        // A cast is committed once `(type)` is read before an operand: the operand's errors are
        // its own, and nothing is parsed twice (which nested casts would make exponential).
        if self.is("(")
            && let Some(t) = self.attempt(Self::cast_head)
        {
            let operand = self.nested(Self::unary)?;
            return Ok(Expr::Cast(t, Box::new(operand)));
        }
        self.postfix()
    }

    /// `(type)operand`, when what follows the parentheses can start an operand.
    fn cast_head(&mut self) -> Result<String, ExprError> {
        self.expect("(")?;
        let t = self.type_name()?;
        self.expect(")")?;
        let starts_operand = match self.peek() {
            Some(Tok::Ident(w)) => !matches!(w.as_str(), "is" | "as"),
            Some(Tok::Str(_) | Tok::Int(_) | Tok::Double(_) | Tok::Interp(_) | Tok::Char(_)) => {
                true
            }
            Some(Tok::Punct(p)) => matches!(*p, "(" | "!" | "~"),
            None => false,
        };
        if !starts_operand {
            return Err(self.err("not a cast"));
        }
        Ok(t)
    }

    /// `x => …`, `(x, y) => …`, `(string x) => …`, `() => …`. Once `=>` is read the lambda
    /// is committed: an error in its body is reported as such.
    fn lambda(&mut self) -> Result<Expr, ExprError> {
        let scope = self.locals.len();
        let first = self.next_slot;
        let Some(params) = self.attempt(Self::lambda_head) else {
            return Err(self.err("not a lambda"));
        };
        let body = self.nested(|p| {
            if p.is("{") {
                p.pos += 1;
                let stmts = p.block_statements(false)?;
                p.expect("}")?;
                Ok(Body::Block(stmts))
            } else {
                p.expr().map(Body::Expr)
            }
        });
        let body = body?;
        self.locals.truncate(scope);
        Ok(Expr::Lambda(Arc::new(Lambda {
            params,
            slots: first..self.next_slot,
            body,
        })))
    }

    /// A lambda's parameters and its `=>`, declared as locals.
    fn lambda_head(&mut self) -> Result<Vec<Slot>, ExprError> {
        let mut params = Vec::new();
        if let Some(Tok::Ident(name)) = self.peek().cloned()
            && matches!(self.peek_at(1), Some(Tok::Punct("=>")))
        {
            self.pos += 2;
            params.push(self.declare(name)?);
            return Ok(params);
        }
        self.expect("(")?;
        if !self.eat(")") {
            loop {
                let mut name = self.ident()?;
                if matches!(self.peek(), Some(Tok::Ident(_))) || self.is("<") || self.is("[") {
                    // A typed parameter: what was read is the type.
                    self.pos -= 1;
                    self.type_name()?;
                    name = self.ident()?;
                }
                params.push(self.declare(name)?);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        self.expect("=>")?;
        Ok(params)
    }

    pub(super) fn args(&mut self) -> Result<Vec<Expr>, ExprError> {
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            // Named arguments (preserveContent: true) are accepted and their names ignored.
            if matches!(self.peek(), Some(Tok::Ident(_)))
                && matches!(self.peek_at(1), Some(Tok::Punct(":")))
            {
                self.pos += 2;
            }
            if self.eat_word("out") {
                // `out var n` / `out int n` / `out n`.
                let slot = if matches!(self.peek_at(1), Some(Tok::Ident(_))) || self.is_word("var")
                {
                    if !self.eat_word("var") {
                        self.type_name()?;
                    }
                    let name = self.ident()?;
                    self.declare(name)?
                } else {
                    let name = self.ident()?;
                    self.local(&name)
                        .ok_or_else(|| self.err(format!("'{name}' is not a local variable")))?
                };
                args.push(Expr::OutVar(slot));
            } else {
                self.eat_word("ref");
                args.push(self.expr()?);
            }
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    /// `<T, U>` after a method name, when it is followed by `(`.
    fn generic(&mut self) -> Option<String> {
        if !self.is("<") {
            return None;
        }
        self.attempt(|p| {
            p.pos += 1;
            let mut args = vec![p.type_name()?];
            while p.eat(",") {
                args.push(p.type_name()?);
            }
            p.expect(">")?;
            if !p.is("(") {
                return Err(p.err("not a generic call"));
            }
            Ok(args.join(","))
        })
    }

    /// A primary expression and its chain of member accesses, calls and indexes. Each step
    /// wraps what came before, so each counts a nesting level until the chain ends.
    fn postfix(&mut self) -> Result<Expr, ExprError> {
        let depth = self.depth;
        let chain = self.postfix_chain();
        self.depth = depth;
        chain
    }

    fn postfix_chain(&mut self) -> Result<Expr, ExprError> {
        let start = self.offset();
        let first = self.pos;
        let mut e = self.primary()?;
        loop {
            if self.is(".") || self.is("?.") || self.is("[") || self.is("?[") {
                self.enter()?;
            }
            if self.eat(".") {
                let ctx = context_chain(&e);
                e = self.member(e, start, ctx)?;
            } else if self.eat("?.") {
                let slot = self.new_slot()?;
                let ctx = context_chain(&e);
                let access = self.member(Expr::Target(slot), start, None)?;
                if ctx.is_some() {
                    rebase_context(&access, &e, start)?;
                }
                e = Expr::NullSafe(Box::new(e), Box::new(access));
            } else if self.eat("[") {
                e = Expr::Index(Box::new(e), self.index_args()?);
            } else if self.eat("?[") {
                let slot = self.new_slot()?;
                let access = Expr::Index(Box::new(Expr::Target(slot)), self.index_args()?);
                e = Expr::NullSafe(Box::new(e), Box::new(access));
            } else if self.is("++") || self.is("--") {
                let op = if self.is("++") { "+=" } else { "-=" };
                let place = self.place_of(e, first)?;
                self.pos += 1;
                return Ok(Expr::PostStep(Box::new(place), op));
            } else if self.is("!")
                && !matches!(self.peek_at(1), Some(Tok::Punct("=")))
                && self.null_forgiving()
            {
                self.pos += 1;
            } else {
                return Ok(e);
            }
        }
    }

    /// A `!` after an operand that is C#'s null-forgiving operator (`x!.Length`), not a
    /// negation starting the next operand (which cannot follow an operand anyway).
    fn null_forgiving(&self) -> bool {
        matches!(
            self.peek_at(1),
            Some(Tok::Punct("." | ")" | "," | ";" | "]")) | None
        )
    }

    fn index_args(&mut self) -> Result<Vec<Expr>, ExprError> {
        let mut args = vec![self.expr()?];
        while self.eat(",") {
            args.push(self.expr()?);
        }
        self.expect("]")?;
        Ok(args)
    }

    /// `.name`, `.Method(…)` or `.Method<T>(…)` on `e`, the `.` taken.
    fn member(
        &mut self,
        e: Expr,
        start: usize,
        context: Option<String>,
    ) -> Result<Expr, ExprError> {
        let at = self.offset();
        let name = self.ident()?;
        let generic = self.generic();
        let call = self.is("(");
        if (context.is_none() || call) && !types::is_member(&name) {
            return Err(ExprError::at(
                at,
                format!("'{name}' is not a member that policy expressions support"),
            ));
        }
        if self.eat("(") {
            let args = self.args()?;
            return Ok(Expr::Call(Box::new(e), name, generic, args));
        }
        if let Some(path) = context {
            let full = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            if !context_path_known(&full) {
                return Err(ExprError::at(
                    start,
                    format!("context.{full} is not a member of the policy context"),
                ));
            }
            // A member of the context itself (not of a value it gives) is read in one step
            // (past an object a request may lack, reading fails as a null reference would:
            // `library::context_path`).
            let foldable =
                matches!(e, Expr::Context | Expr::CtxPath(_)) && super::is_context_member(&full);
            if foldable {
                return Ok(Expr::CtxPath(full));
            }
        }
        Ok(Expr::Member(Box::new(e), name))
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let tok = self.peek().cloned();
        let at = self.offset();
        match tok {
            None => Err(self.err("an expression expected at the end")),
            Some(Tok::Int(n)) => {
                self.pos += 1;
                Ok(Expr::Lit(V::Int(n)))
            }
            Some(Tok::Double(n)) => {
                self.pos += 1;
                Ok(Expr::Lit(V::Double(n)))
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Expr::Lit(V::Str(s)))
            }
            Some(Tok::Char(c)) => {
                self.pos += 1;
                Ok(Expr::Lit(V::Str(c.to_string())))
            }
            Some(Tok::Interp(parts)) => {
                self.pos += 1;
                self.interpolation(parts)
            }
            Some(Tok::Punct("(")) => {
                self.pos += 1;
                let e = self.expr()?;
                if self.eat(",") {
                    // A tuple: (a, b).
                    let mut items = vec![e, self.expr()?];
                    while self.eat(",") {
                        items.push(self.expr()?);
                    }
                    self.expect(")")?;
                    return Ok(Expr::New(Box::new(New::Object(
                        "Tuple".into(),
                        items,
                        Vec::new(),
                    ))));
                }
                self.expect(")")?;
                Ok(e)
            }
            Some(Tok::Ident(name)) => self.name(name, at),
            Some(t) => Err(self.err(format!("unexpected {}", describe(&t)))),
        }
    }

    fn name(&mut self, name: String, at: usize) -> Result<Expr, ExprError> {
        match name.as_str() {
            "true" => return self.word(Expr::Lit(V::Bool(true))),
            "false" => return self.word(Expr::Lit(V::Bool(false))),
            "null" => return self.word(Expr::Lit(V::Null)),
            "context" => return self.word(Expr::Context),
            "new" => {
                self.pos += 1;
                return self.nested(Self::new_expr);
            }
            "default" if matches!(self.peek_at(1), Some(Tok::Punct("("))) => {
                self.pos += 2;
                let t = self.type_name()?;
                self.expect(")")?;
                return Ok(Expr::Lit(super::value::default_of(&t)));
            }
            "typeof" | "nameof" | "await" | "this" | "base" | "stackalloc" | "checked"
            | "unchecked" | "sizeof" => {
                return Err(ExprError::at(
                    at,
                    format!("'{name}' is not supported in policy expressions"),
                ));
            }
            _ => {}
        }
        if let Some(slot) = self.local(&name) {
            self.pos += 1;
            return Ok(Expr::Local(slot));
        }
        if let Some(slot) = self
            .functions
            .iter()
            .rev()
            .find(|f| f.0 == name)
            .map(|f| f.1)
            && matches!(self.peek_at(1), Some(Tok::Punct("(")))
        {
            self.pos += 2;
            return Ok(Expr::Invoke(slot, self.args()?));
        }
        let t = self.type_name()?;
        if !self.is(".") {
            return Err(ExprError::at(
                at,
                format!("'{t}' is a type: a member of it expected"),
            ));
        }
        let base = t.split('<').next().unwrap_or(&t).to_string();
        Ok(Expr::Static(base))
    }

    fn word(&mut self, e: Expr) -> Result<Expr, ExprError> {
        self.pos += 1;
        Ok(e)
    }

    fn interpolation(&mut self, parts: Vec<InterpPart>) -> Result<Expr, ExprError> {
        let mut out = Vec::new();
        for p in parts {
            match p {
                InterpPart::Lit(s) => out.push((Expr::Lit(V::Str(s)), None)),
                InterpPart::Hole(src, off) => {
                    let base = self.base + off;
                    let (src, format) = split_format(&src);
                    let mut p = Parser::new(
                        src,
                        base,
                        self.locals.clone(),
                        self.next_slot,
                        self.depth + 1,
                    )?;
                    p.functions = self.functions.clone();
                    let parsed = p.expr().and_then(|e| p.end().map(|_| e));
                    if let Some(e) = p.too_deep {
                        self.too_deep.get_or_insert(e.clone());
                        return Err(e);
                    }
                    let e = parsed?;
                    self.next_slot = p.next_slot;
                    out.push((e, format.map(str::to_string)));
                }
            }
        }
        Ok(Expr::Interp(out))
    }

    /// After `new`.
    fn new_expr(&mut self) -> Result<Expr, ExprError> {
        if self.eat("[") {
            self.expect("]")?;
            return Ok(Expr::New(Box::new(New::Array(self.array_items()?))));
        }
        if self.is("{") {
            return self.anonymous();
        }
        let t = self.type_name()?;
        if let Some(element) = t.strip_suffix("[]") {
            if self.is("{") {
                return Ok(Expr::New(Box::new(New::Array(self.array_items()?))));
            }
            return Err(self.err(format!("new {element}[] needs its items in {{ … }}")));
        }
        if self.eat("[") {
            let size = self.expr()?;
            self.expect("]")?;
            return Ok(Expr::New(Box::new(New::Sized(t, size))));
        }
        let args = if self.eat("(") {
            self.args()?
        } else {
            Vec::new()
        };
        let inits = if self.is("{") {
            self.initializers()?
        } else {
            Vec::new()
        };
        super::construct::check(&t, args.len()).map_err(|m| self.err(m))?;
        Ok(Expr::New(Box::new(New::Object(t, args, inits))))
    }

    fn array_items(&mut self) -> Result<Vec<Expr>, ExprError> {
        self.expect("{")?;
        let mut items = Vec::new();
        while !self.eat("}") {
            items.push(self.expr()?);
            if !self.eat(",") {
                self.expect("}")?;
                break;
            }
        }
        Ok(items)
    }

    fn initializers(&mut self) -> Result<Vec<Init>, ExprError> {
        self.expect("{")?;
        let mut inits = Vec::new();
        while !self.eat("}") {
            let init = if self.eat("{") {
                let mut items = vec![self.expr()?];
                while self.eat(",") {
                    items.push(self.expr()?);
                }
                self.expect("}")?;
                Init::Add(items)
            } else if self.eat("[") {
                let key = self.expr()?;
                self.expect("]")?;
                self.expect("=")?;
                Init::Keyed(key, self.expr()?)
            } else if matches!(self.peek(), Some(Tok::Ident(_)))
                && matches!(self.peek_at(1), Some(Tok::Punct("=")))
            {
                let name = self.ident()?;
                self.pos += 1;
                Init::Property(name, self.expr()?)
            } else {
                Init::Add(vec![self.expr()?])
            };
            inits.push(init);
            if !self.eat(",") {
                self.expect("}")?;
                break;
            }
        }
        Ok(inits)
    }

    /// `new { a = 1, b, x.Name }`: an anonymous object, which expressions use as JSON.
    fn anonymous(&mut self) -> Result<Expr, ExprError> {
        self.expect("{")?;
        let mut fields = Vec::new();
        while !self.eat("}") {
            if matches!(self.peek(), Some(Tok::Ident(_)))
                && matches!(self.peek_at(1), Some(Tok::Punct("=")))
            {
                let name = self.ident()?;
                self.pos += 1;
                fields.push((name, self.expr()?));
            } else {
                let e = self.expr()?;
                let name = match &e {
                    Expr::Member(_, n) => n.clone(),
                    Expr::Local(s) => self
                        .locals
                        .iter()
                        .find(|l| l.1 == *s)
                        .map(|l| l.0.clone())
                        .unwrap_or_default(),
                    _ => return Err(self.err("a member of an anonymous object needs a name")),
                };
                fields.push((name, e));
            }
            if !self.eat(",") {
                self.expect("}")?;
                break;
            }
        }
        Ok(Expr::New(Box::new(New::Anonymous(fields))))
    }
}

fn fold(first: Expr, rest: Vec<(&'static str, Expr)>) -> Expr {
    if rest.is_empty() {
        first
    } else {
        Expr::Binary(Box::new(first), rest)
    }
}

/// The value `op=` writes into `place`.
pub(super) fn compound(place: &Place, op: &'static str, value: Expr) -> Expr {
    let read = match place {
        Place::Local(s) => Expr::Local(*s),
        Place::Index(t, i) => Expr::Index(Box::new(t.clone()), i.clone()),
        Place::Member(t, n) => Expr::Member(Box::new(t.clone()), n.clone()),
    };
    match op {
        "=" => value,
        "??=" => Expr::Binary(Box::new(read), vec![("??", value)]),
        _ => Expr::Binary(Box::new(read), vec![(&op[..op.len() - 1], value)]),
    }
}

/// Splits `{value:format}` into the value's source and the format (a `:` inside a string,
/// parentheses or a conditional is not one).
fn split_format(hole: &str) -> (&str, Option<&str>) {
    let (mut depth, mut in_str) = (0i32, false);
    let mut question = false;
    for (i, c) in hole.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '(' | '[' | '{' if !in_str => depth += 1,
            ')' | ']' | '}' if !in_str => depth -= 1,
            '?' if !in_str && depth == 0 => question = true,
            ':' if !in_str && depth == 0 && !question => {
                return (&hole[..i], Some(&hole[i + 1..]));
            }
            ':' if !in_str && depth == 0 => question = false,
            _ => {}
        }
    }
    (hole, None)
}

/// `context.X?.Y`: the access after `?.` names a context member too; it is checked here.
fn rebase_context(access: &Expr, target: &Expr, start: usize) -> Result<(), ExprError> {
    if let (Some(path), Expr::Member(_, name)) = (context_chain(target), access) {
        let full = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        if !context_path_known(&full) {
            return Err(ExprError::at(
                start,
                format!("context.{full} is not a member of the policy context"),
            ));
        }
    }
    Ok(())
}

/// The dotted path of a member chain starting at `context`, if `e` is one.
pub(super) fn context_chain(e: &Expr) -> Option<String> {
    let join = |p: String, name: &str| {
        if p.is_empty() {
            name.to_string()
        } else {
            format!("{p}.{name}")
        }
    };
    match e {
        Expr::Context => Some(String::new()),
        Expr::CtxPath(p) => Some(p.clone()),
        Expr::NullSafe(inner, access) => match access.as_ref() {
            Expr::Member(_, name) => context_chain(inner).map(|p| join(p, name)),
            _ => None,
        },
        Expr::Member(inner, name) => context_chain(inner).map(|p| join(p, name)),
        _ => None,
    }
}

pub(super) fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Int(n) => format!("the number {n}"),
        Tok::Double(n) => format!("the number {n}"),
        Tok::Str(_) | Tok::Interp(_) => "a string".into(),
        Tok::Char(_) => "a char".into(),
        Tok::Punct(p) => format!("'{p}'"),
    }
}
