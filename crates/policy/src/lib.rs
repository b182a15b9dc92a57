//! APIM policy documents: XML → typed policies → a pipeline the gateway runs, and the C#-subset
//! expression language (`expr`).
//!
//! Invariants: a document that parses here is one the gateway can run — every element is a
//! known, supported policy in a section APIM allows it in, every attribute has its type, every
//! expression parsed and bound; nothing here panics on any input. This crate knows neither
//! sockets nor the store: the gateway supplies the request through `expr::Env` and `exec`.

pub mod convert;
pub mod doc;
pub mod expr;

pub use doc::{
    Document, NoResolver, Node, Policy, PolicyError, Pos, Resolver, Section, Text, parse_document,
};
pub mod exec;
pub mod jwt;
mod stack;
