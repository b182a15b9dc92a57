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
pub mod json;
pub mod layout;
pub mod overrides;
pub mod read;
pub mod write;

use gatehouse_model::Kind;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A folder's files: relative `/`-separated paths to their bytes, in path order.
pub type Files = BTreeMap<String, Vec<u8>>;

/// One resource as a folder describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The resource path relative to the service (`/apis/echo/policies/policy`).
    pub path: String,
    pub kind: Kind,
    pub properties: Map<String, Value>,
    /// The file it was read from (for messages).
    pub file: String,
}

/// An API's specification file.
#[derive(Debug, Clone, PartialEq)]
pub struct Specification {
    /// The API's resource path (`/apis/echo;rev=2`).
    pub api: String,
    /// `yaml`, `json`, `graphql`, `wsdl` or `wadl`.
    pub extension: String,
    pub text: String,
    pub file: String,
}

/// Something a folder holds (or an export would hold) that Gatehouse leaves out, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
}

/// A file that cannot be read, with what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {message}")]
pub struct FileError {
    pub file: String,
    pub message: String,
}

impl FileError {
    pub fn new(file: impl Into<String>, message: impl Into<String>) -> FileError {
        FileError {
            file: file.into(),
            message: message.into(),
        }
    }
}
