//! Configuration as files: a whole instance as APIOps's artifact tree (the extractor's layout,
//! which APIOps's publisher applies), per-environment override files, and the archives
//! (zip, tar) that carry such a tree over HTTP.
//!
//! This crate turns files into resources and back; it never touches a store. The management
//! API decides what a folder changes (plan) and applies it in one transaction.
//!
//! Invariants: [`write::export`] is deterministic (sorted keys, fixed indentation, sorted
//! files), so exporting the same configuration twice gives the same bytes; [`read::read`]
//! either accounts for every file of a folder (a resource, a specification, or a
//! [`Skipped`] entry with its reason) or fails naming the file — nothing is dropped silently.

pub mod archive;
pub mod arm;
pub mod dir;
pub mod filter;
pub mod item;
pub mod json;
pub mod layout;
pub mod overrides;
pub mod read;
pub mod write;

pub use item::{FileError, Files, Item, Skipped, Specification};
