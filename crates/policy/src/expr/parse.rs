//! Parser of the C# subset: a Pratt parser for expressions and a small statement parser for
//! `@{ … }` blocks. Names are checked as they are parsed (locals, `context` members, the
//! allowed static types), so an expression that would fail to bind is a write-time error.

use super::lex::{InterpPart, Spanned, Tok, lex};
use super::{Code, Expr, ExprError, Stmt, V, context_path_known};

const TYPES: &[&str] = &[
    "string",
    "String",
    "int",
    "Int32",
    "long",
    "Int64",
    "bool",
    "Boolean",
    "double",
    "Double",
    "object",
    "JObject",
    "JArray",
    "JToken",
    "DateTime",
    "char",
    "IResponse",
    "Jwt",
];
const STATICS: &[&str] = &[
    "string",
    "String",
    "int",
    "Int32",
    "long",
    "Int64",
    "bool",
    "Boolean",
    "double",
    "Double",
    "DateTime",
    "Convert",
    "Encoding",
    "StringComparison",
    "Math",
    "TimeSpan",
    "Guid",
    "JObject",
    "JArray",
];

/// How deeply an expression may nest: operators of rising precedence, parentheses, `!`, `-` and
/// casts, member accesses and calls, conditionals, interpolation holes and block statements each
/// count a level. Parsing and evaluation recurse once per level, so this bounds the stack either
/// needs whatever the input; chains of one operator (`a || b || …`) count once however long
/// they are (see [`Expr::Binary`]).
pub const MAX_NESTING: usize = 64;

struct Parser<'a> {
    toks: Vec<Spanned>,
    pos: usize,
    src: &'a str,
    base: usize,
    locals: Vec<String>,
    /// The nesting level being parsed (see [`MAX_NESTING`]).
    depth: usize,
}

pub fn parse_code(src: &str, block: bool) -> Result<Code, ExprError> {
    let mut p = Parser::new(src, 0, Vec::new(), 0)?;
    if block {
        let stmts = p.statements(true)?;
        if !returns(&stmts) {
            return Err(ExprError::at(
                src.len(),
                "not all code paths of the block return a value",
            ));
        }
        Ok(Code::Block(stmts))
    } else {
        let e = p.expr()?;
        p.end()?;
        Ok(Code::Expr(e))
    }
}

fn returns(stmts: &[Stmt]) -> bool {
    stmts.iter().any(|s| match s {
        Stmt::Return(_) => true,
        Stmt::If(_, a, b) => returns(a) && returns(b),
        _ => false,
    })
}

impl<'a> Parser<'a> {
    fn new(
        src: &'a str,
        base: usize,
        locals: Vec<String>,
        depth: usize,
    ) -> Result<Parser<'a>, ExprError> {
        let toks = lex(src).map_err(|e| e.shift(base))?;
        Ok(Parser {
            toks,
            pos: 0,
            src,
            base,
            locals,
            depth,
        })
    }

    /// Enters one nesting level; fails past [`MAX_NESTING`] before anything recurses further.
    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.err(format!(
                "the expression nests more than {MAX_NESTING} levels deep (parentheses, operators, calls, conditionals or blocks inside each other)"
            )));
        }
        Ok(())
    }

    fn leave(&mut self, levels: usize) {
        self.depth -= levels;
    }

    /// Runs `parse` one nesting level deeper.
    fn nested<T>(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<T, ExprError>,
    ) -> Result<T, ExprError> {
        self.enter()?;
        let out = crate::stack::deeper(|| parse(self));
        self.leave(1);
        out
    }

    fn offset(&self) -> usize {
        self.base + self.toks.get(self.pos).map_or(self.src.len(), |t| t.1)
    }

    fn err(&self, msg: impl Into<String>) -> ExprError {
        ExprError::at(self.offset(), msg)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|t| &t.0)
    }

    fn is(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::Punct(q)) if *q == p)
    }

    fn eat(&mut self, p: &str) -> bool {
        if self.is(p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), ExprError> {
        if self.eat(p) {
            Ok(())
        } else {
            Err(self.err(format!("'{p}' expected")))
        }
    }

    fn end(&self) -> Result<(), ExprError> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(self.err(format!("unexpected {} after the expression", describe(t)))),
        }
    }

    fn ident(&mut self) -> Result<String, ExprError> {
        match self.peek().cloned() {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s)
            }
            Some(t) => Err(self.err(format!("a name expected, not {}", describe(&t)))),
            None => Err(self.err("a name expected at the end")),
        }
    }

    fn statements(&mut self, top: bool) -> Result<Vec<Stmt>, ExprError> {
        let mut out = Vec::new();
        loop {
            if self.peek().is_none() {
                if top {
                    return Ok(out);
                }
                return Err(self.err("'}' expected"));
            }
            if !top && self.is("}") {
                return Ok(out);
            }
            out.push(self.statement()?);
        }
    }

    fn body(&mut self) -> Result<Vec<Stmt>, ExprError> {
        let depth = self.locals.len();
        let stmts = if self.eat("{") {
            let s = self.statements(false)?;
            self.expect("}")?;
            s
        } else {
            vec![self.statement()?]
        };
        self.locals.truncate(depth);
        Ok(stmts)
    }

    fn statement(&mut self) -> Result<Stmt, ExprError> {
        self.nested(Self::statement_here)
    }

    fn statement_here(&mut self) -> Result<Stmt, ExprError> {
        match self.peek().cloned() {
            Some(Tok::Ident(k)) if k == "return" => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect(";")?;
                Ok(Stmt::Return(e))
            }
            Some(Tok::Ident(k)) if k == "if" => {
                self.pos += 1;
                self.expect("(")?;
                let c = self.expr()?;
                self.expect(")")?;
                let then = self.body()?;
                let otherwise = if matches!(self.peek(), Some(Tok::Ident(e)) if e == "else") {
                    self.pos += 1;
                    self.body()?
                } else {
                    Vec::new()
                };
                Ok(Stmt::If(c, then, otherwise))
            }
            Some(Tok::Ident(k)) if k == "foreach" => {
                self.pos += 1;
                self.expect("(")?;
                let first = self.ident()?;
                let name = if matches!(self.peek(), Some(Tok::Ident(_))) {
                    self.ident()?
                } else {
                    first
                };
                match self.peek() {
                    Some(Tok::Ident(i)) if i == "in" => self.pos += 1,
                    _ => return Err(self.err("'in' expected")),
                }
                let list = self.expr()?;
                self.expect(")")?;
                self.locals.push(name.clone());
                let body = self.body()?;
                self.locals.pop();
                Ok(Stmt::Foreach(name, list, body))
            }
            Some(Tok::Ident(k))
                if (k == "var" || TYPES.contains(&k.as_str()))
                    && matches!(self.peek_at(1), Some(Tok::Ident(_)))
                    && matches!(
                        self.peek_at(2),
                        Some(Tok::Punct("=")) | Some(Tok::Punct(";"))
                    ) =>
            {
                self.pos += 1;
                let name = self.ident()?;
                let value = if self.eat("=") {
                    self.expr()?
                } else {
                    Expr::Lit(V::Null)
                };
                self.expect(";")?;
                self.locals.push(name.clone());
                Ok(Stmt::Var(name, value))
            }
            Some(Tok::Ident(name))
                if self.locals.contains(&name)
                    && matches!(
                        self.peek_at(1),
                        Some(Tok::Punct("=" | "+=" | "-=" | "++" | "--"))
                    ) =>
            {
                self.pos += 1;
                let op = match self.peek() {
                    Some(Tok::Punct(p)) => *p,
                    _ => unreachable!("checked above"),
                };
                self.pos += 1;
                let value = match op {
                    "=" => self.expr()?,
                    "+=" | "-=" => {
                        let rhs = self.expr()?;
                        Expr::Binary(Box::new(Expr::Local(name.clone())), vec![(&op[..1], rhs)])
                    }
                    _ => Expr::Binary(
                        Box::new(Expr::Local(name.clone())),
                        vec![(&op[..1], Expr::Lit(V::Int(1)))],
                    ),
                };
                self.expect(";")?;
                Ok(Stmt::Assign(name, value))
            }
            _ => {
                let e = self.expr()?;
                self.expect(";")?;
                Ok(Stmt::Expr(e))
            }
        }
    }

    pub fn expr(&mut self) -> Result<Expr, ExprError> {
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

    /// Operators from precedence `min` up, by precedence climbing. Every operator this loop
    /// meets applies to what is on its left so far, so the operators are kept as one flat
    /// list: a chain of any length nests one level. (`??` is right-associative in C#, but
    /// `(a ?? b) ?? c` and `a ?? (b ?? c)` both give the first of a, b, c that is not null,
    /// evaluated in the same order, so it is folded from the left too.)
    fn binary(&mut self, min: u8) -> Result<Expr, ExprError> {
        self.nested(|p| {
            let first = p.unary()?;
            let mut rest = Vec::new();
            while let Some(Tok::Punct(op)) = p.peek().cloned() {
                let prec = match op {
                    "??" => 1,
                    "||" => 2,
                    "&&" => 3,
                    "==" | "!=" => 4,
                    "<" | ">" | "<=" | ">=" => 5,
                    "+" | "-" => 6,
                    "*" | "/" | "%" => 7,
                    _ => break,
                };
                if prec < min {
                    break;
                }
                p.pos += 1;
                rest.push((op, p.binary(prec + 1)?));
            }
            Ok(if rest.is_empty() {
                first
            } else {
                Expr::Binary(Box::new(first), rest)
            })
        })
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat("!") {
            return Ok(Expr::Unary("!", Box::new(self.nested(Self::unary)?)));
        }
        if self.eat("-") {
            return Ok(Expr::Unary("-", Box::new(self.nested(Self::unary)?)));
        }
        // A cast: (type)operand.
        if self.is("(")
            && let Some(Tok::Ident(t)) = self.peek_at(1).cloned()
            && TYPES.contains(&t.as_str())
        {
            let array = matches!(self.peek_at(2), Some(Tok::Punct("[")))
                && matches!(self.peek_at(3), Some(Tok::Punct("]")));
            let close = if array { 4 } else { 2 };
            if matches!(self.peek_at(close), Some(Tok::Punct(")")))
                && matches!(
                    self.peek_at(close + 1),
                    Some(
                        Tok::Ident(_)
                            | Tok::Str(_)
                            | Tok::Int(_)
                            | Tok::Double(_)
                            | Tok::Interp(_)
                            | Tok::Punct("(")
                            | Tok::Punct("!")
                    )
                )
            {
                self.pos += close + 1;
                let operand = self.nested(Self::unary)?;
                let t = if array { format!("{t}[]") } else { t };
                return Ok(Expr::Cast(t, Box::new(operand)));
            }
        }
        self.postfix()
    }

    fn args(&mut self) -> Result<Vec<Expr>, ExprError> {
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
            // `out var n` / `out int n` (TryParse): declares the local it assigns.
            if matches!(self.peek(), Some(Tok::Ident(o)) if o == "out") {
                self.pos += 1;
                let first = self.ident()?;
                let name = if matches!(self.peek(), Some(Tok::Ident(_))) {
                    self.ident()?
                } else {
                    first
                };
                self.locals.push(name.clone());
                args.push(Expr::OutVar(name));
            } else {
                args.push(self.expr()?);
            }
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    /// `<T>` after a method name, when it is followed by `(`.
    fn generic(&mut self) -> Option<String> {
        if self.is("<")
            && let Some(Tok::Ident(t)) = self.peek_at(1).cloned()
        {
            let (close, name) = if matches!(self.peek_at(2), Some(Tok::Punct("[")))
                && matches!(self.peek_at(3), Some(Tok::Punct("]")))
            {
                (4, format!("{t}[]"))
            } else {
                (2, t)
            };
            if matches!(self.peek_at(close), Some(Tok::Punct(">")))
                && matches!(self.peek_at(close + 1), Some(Tok::Punct("(")))
            {
                self.pos += close + 1;
                return Some(name);
            }
        }
        None
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
        let mut e = self.primary()?;
        loop {
            if self.is(".") || self.is("?.") || self.is("[") {
                self.enter()?;
            }
            if self.eat(".") {
                let name = self.ident()?;
                let generic = self.generic();
                if self.eat("(") {
                    let args = self.args()?;
                    e = Expr::Call(Box::new(e), name, generic, args);
                } else {
                    if let Some(path) = context_chain(&e) {
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
                    e = Expr::Member(Box::new(e), name);
                }
            } else if self.eat("?.") {
                let name = self.ident()?;
                let generic = self.generic();
                let access = if self.eat("(") {
                    let args = self.args()?;
                    Expr::Call(Box::new(Expr::Target), name, generic, args)
                } else {
                    if let Some(path) = context_chain(&e) {
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
                    Expr::Member(Box::new(Expr::Target), name)
                };
                e = Expr::NullSafe(Box::new(e), Box::new(access));
            } else if self.eat("[") {
                let i = self.expr()?;
                self.expect("]")?;
                e = Expr::Index(Box::new(e), Box::new(i));
            } else {
                return Ok(e);
            }
        }
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
                let mut out = Vec::new();
                for p in parts {
                    match p {
                        InterpPart::Lit(s) => out.push(Expr::Lit(V::Str(s))),
                        InterpPart::Hole(src, off) => {
                            let base = self.base + off;
                            // A format suffix ({x:yyyy}) is accepted and ignored.
                            let src = split_format(&src);
                            let mut p =
                                Parser::new(src, base, self.locals.clone(), self.depth + 1)?;
                            let e = p.expr()?;
                            p.end()?;
                            out.push(e);
                        }
                    }
                }
                Ok(Expr::Interp(out))
            }
            Some(Tok::Punct("(")) => {
                self.pos += 1;
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                match name.as_str() {
                    "true" => return Ok(Expr::Lit(V::Bool(true))),
                    "false" => return Ok(Expr::Lit(V::Bool(false))),
                    "null" => return Ok(Expr::Lit(V::Null)),
                    "context" => return Ok(Expr::Context),
                    "new" => {
                        return Err(ExprError::at(
                            at,
                            "'new' is not supported in policy expressions here",
                        ));
                    }
                    _ => {}
                }
                if self.locals.contains(&name) {
                    return Ok(Expr::Local(name));
                }
                if STATICS.contains(&name.as_str()) {
                    return Ok(Expr::Static(name));
                }
                Err(ExprError::at(
                    at,
                    format!(
                        "'{name}' is not known here: use context, a local variable or an allowed type"
                    ),
                ))
            }
            Some(t) => Err(self.err(format!("unexpected {}", describe(&t)))),
        }
    }
}

fn split_format(hole: &str) -> &str {
    // `{a ? b : c}` has a colon too; only a trailing `:format` without spaces is a format.
    match hole.rfind(':') {
        Some(i)
            if !hole[i + 1..].contains(' ')
                && !hole[..i].contains('?')
                && !hole[i + 1..].is_empty() =>
        {
            &hole[..i]
        }
        _ => hole,
    }
}

/// The dotted path of a member chain starting at `context`, if `e` is one.
fn context_chain(e: &Expr) -> Option<String> {
    match e {
        Expr::Context => Some(String::new()),
        Expr::NullSafe(inner, access) => match access.as_ref() {
            Expr::Member(_, name) => context_chain(inner).map(|p| {
                if p.is_empty() {
                    name.clone()
                } else {
                    format!("{p}.{name}")
                }
            }),
            _ => None,
        },
        Expr::Member(inner, name) => context_chain(inner).map(|p| {
            if p.is_empty() {
                name.clone()
            } else {
                format!("{p}.{name}")
            }
        }),
        _ => None,
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Int(n) => format!("the number {n}"),
        Tok::Double(n) => format!("the number {n}"),
        Tok::Str(_) | Tok::Interp(_) => "a string".into(),
        Tok::Char(_) => "a char".into(),
        Tok::Punct(p) => format!("'{p}'"),
    }
}
