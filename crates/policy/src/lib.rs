//! APIM policy documents: XML → compiled policies → a pipeline the gateway runs, and the
//! C#-subset expression language (`expr`).
//!
//! Invariants: a document that compiles here is one the gateway can run — every element is a
//! known, supported policy in a section APIM allows it in, every attribute has its type, every
//! expression parsed and bound; nothing here panics on any input. This crate knows neither
//! sockets nor the store: the gateway supplies the request through `expr::Env` and `exec`.
//!
//! Modules, bottom up: `stack` (recursion on enough stack), `expr`, `convert` and `jwt` (the
//! expression language, body conversion, token checks), `position`, `exchange` (what running
//! works on), `node` (a compiled document and the `Policy` trait), `compile` (reading an
//! element), `policies` (every policy, one module per family, and their table), `doc`
//! (parsing a document), `exec` (running a chain).

pub mod compile;
pub mod convert;
#[cfg(test)]
mod corpus;
pub mod doc;
pub mod exchange;
pub mod exec;
pub mod expr;
pub mod jwt;
pub mod liquid_body;
pub mod node;
pub mod policies;
pub mod position;
mod stack;
#[cfg(test)]
mod testing;

pub use doc::{
    Document, NoResolver, Node, Policy, PolicyError, Pos, Resolver, Section, Text, parse_document,
};
