//! What the other modules pass around: a folder's files, the resources it describes, API
//! specifications, what is left out and why, and errors that name a file.

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

#[cfg(test)]
impl Item {
    /// A resource from a JSON object of properties, read from no file (for tests).
    pub(crate) fn from_json(path: &str, kind: Kind, properties: Value) -> Item {
        Item {
            path: path.into(),
            kind,
            properties: properties.as_object().cloned().unwrap_or_default(),
            file: String::new(),
        }
    }
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
