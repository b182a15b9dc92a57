//! The parsed form of an expression: names already bound (locals to frame slots, types to
//! the allowed list), so evaluating never looks a name up.

use super::value::V;
use std::sync::Arc;

/// A frame slot: every local, parameter and loop variable of one expression has its own.
pub type Slot = usize;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(V),
    Interp(Vec<(Expr, Option<String>)>),
    Context,
    /// A member of `context` bound to its whole dotted path when parsed
    /// (`context.Request.Headers` → `Request.Headers`): read in one step.
    CtxPath(String),
    Local(Slot),
    Static(String),
    Member(Box<Expr>, String),
    /// `target?.member` and `target?.Method(…)`: null when the target is null.
    NullSafe(Box<Expr>, Box<Expr>),
    /// The placeholder of the target inside a `NullSafe` access, in its slot.
    Target(Slot),
    /// `out var name` (or `out T name`): the local a call assigns.
    OutVar(Slot),
    /// target.Method<T>(args)
    Call(Box<Expr>, String, Option<String>, Vec<Expr>),
    /// A local function called by name.
    Invoke(Slot, Vec<Expr>),
    Index(Box<Expr>, Vec<Expr>),
    Unary(&'static str, Box<Expr>),
    /// `first op₁ x₁ op₂ x₂ …`, applied from the left: the left-associative binary operators
    /// of one expression level kept flat, so that a chain of any length (an allow-list written
    /// as 5,000 `||`) costs neither recursion nor a deep tree.
    Binary(Box<Expr>, Vec<(&'static str, Expr)>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    Cast(String, Box<Expr>),
    /// `x as T`: the value when it is a T, else null.
    As(Box<Expr>, String),
    /// `x is T [name]`, `x is null`, `x is not null`.
    Is(Box<Expr>, Box<Pattern>),
    /// `new T(args) { initializers }`, `new T[n]`, `new[] { … }`, `new { a = 1 }`.
    New(Box<New>),
    Lambda(Arc<Lambda>),
    /// `x = value` (and `x += value`, …) used as an expression: its value is the value set.
    Assign(Box<Place>, Box<Expr>),
    /// `x++`/`x--` after the operand: the value before.
    PostStep(Box<Place>, &'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    Type(String, Option<Slot>),
    Null,
    NotNull,
    Value(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub enum New {
    Object(String, Vec<Expr>, Vec<Init>),
    /// `new T[n]` (sized, filled with T's default).
    Sized(String, Expr),
    /// `new T[] { … }` and `new[] { … }`.
    Array(Vec<Expr>),
    Anonymous(Vec<(String, Expr)>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// `{ a, b }` or a lone item: a call of `Add`.
    Add(Vec<Expr>),
    /// `[key] = value`
    Keyed(Expr, Expr),
    /// `Name = value`
    Property(String, Expr),
}

/// What an assignment writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    Local(Slot),
    Index(Expr, Vec<Expr>),
    Member(Expr, String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lambda {
    pub params: Vec<Slot>,
    /// The slots a call of this function uses (its parameters and locals): saved and put back
    /// around a call, so a local function may call itself.
    pub slots: std::ops::Range<Slot>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Expr(Expr),
    Block(Vec<Stmt>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Var(Slot, Expr),
    Assign(Place, Expr),
    If(Expr, Vec<Stmt>, Vec<Stmt>),
    Foreach(Slot, Expr, Vec<Stmt>),
    For(Vec<Stmt>, Option<Expr>, Vec<Stmt>, Vec<Stmt>),
    While(Expr, Vec<Stmt>),
    DoWhile(Vec<Stmt>, Expr),
    Switch(Expr, Vec<Case>),
    Try(Vec<Stmt>, Vec<Catch>, Vec<Stmt>),
    Throw(Option<Expr>),
    Break,
    Continue,
    Return(Expr),
    Expr(Expr),
    Block(Vec<Stmt>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// The labels' values; empty for `default:`.
    pub labels: Vec<Expr>,
    pub is_default: bool,
    pub body: Vec<Stmt>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Catch {
    /// The exception type caught (`Exception` catches all), and the slot it is named in.
    pub kind: Option<String>,
    pub slot: Option<Slot>,
    pub when: Option<Expr>,
    pub body: Vec<Stmt>,
}
