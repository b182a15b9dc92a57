//! Resolving a request path below the service into what it addresses.
//!
//! Invariant: every `ResourcePath` produced here is canonical — collection names in APIM's
//! casing, ids percent-decoded and validated — so the same resource always has the same key
//! in the store.

use crate::id::IdError;
use crate::kind::Kind;
use thiserror::Error;

/// A canonical path of one resource relative to the service, e.g. `/apis/echo/operations/get`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourcePath {
    pub kind: Kind,
    /// `(collection, id)` pairs from the root.
    pub parts: Vec<(&'static str, String)>,
}

impl ResourcePath {
    pub fn new(kind: Kind, parts: Vec<(&'static str, String)>) -> Self {
        ResourcePath { kind, parts }
    }

    /// A top-level resource such as `/apis/echo`.
    pub fn top(kind: Kind, id: &str) -> Self {
        ResourcePath {
            kind,
            parts: vec![(kind.collection(), id.to_string())],
        }
    }

    pub fn id(&self) -> &str {
        &self.parts.last().expect("non-empty path").1
    }

    /// The path string as stored: `/apis/echo/operations/get`.
    pub fn as_string(&self) -> String {
        let mut s = String::new();
        for (c, id) in &self.parts {
            s.push('/');
            s.push_str(c);
            s.push('/');
            s.push_str(id);
        }
        s
    }

    /// The parent resource path string (`""` for top-level resources).
    pub fn parent_string(&self) -> String {
        let mut s = String::new();
        for (c, id) in &self.parts[..self.parts.len() - 1] {
            s.push('/');
            s.push_str(c);
            s.push('/');
            s.push_str(id);
        }
        s
    }

    /// The path of the ancestor with the given number of parts.
    pub fn ancestor(&self, len: usize) -> Option<ResourcePath> {
        if len == 0 || len >= self.parts.len() {
            return None;
        }
        let chain: Vec<&str> = self.parts[..len].iter().map(|(c, _)| *c).collect();
        let kind = Kind::from_collections(&chain)?;
        Some(ResourcePath {
            kind,
            parts: self.parts[..len].to_vec(),
        })
    }

    /// Parses a stored path string back (it is canonical, so no decoding is needed).
    pub fn parse_stored(s: &str) -> Result<ResourcePath, PathError> {
        match resolve(s)? {
            Target::Resource(p) => Ok(p),
            _ => Err(PathError::NotAResource(s.to_string())),
        }
    }
}

impl std::fmt::Display for ResourcePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_string())
    }
}

/// What a path below the service addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/`: the service resource itself.
    Service,
    /// A collection, e.g. `/apis` or `/apis/echo/operations`; `parent` is `""` at the top.
    Collection {
        kind: Kind,
        parent: Option<ResourcePath>,
    },
    Resource(ResourcePath),
    /// A POST action on a resource, e.g. `/subscriptions/s1/listSecrets`.
    Action {
        path: ResourcePath,
        action: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("'{0}' is not a resource collection of this service")]
    UnknownCollection(String),
    #[error("invalid id '{id}' for {kind}: {error}")]
    InvalidId {
        kind: &'static str,
        id: String,
        error: IdError,
    },
    #[error("'{0}' does not name a resource")]
    NotAResource(String),
    #[error("the path segment '{0}' is not valid percent-encoding or UTF-8")]
    Encoding(String),
    #[error(
        "the path '{0}' has a '.' or '..' segment: paths are taken as written, and '.' and '..' are never ids"
    )]
    DotSegment(String),
}

const ARM_PROVIDER: &str = "providers/Microsoft.ApiManagement/service/";

/// Strips an ARM prefix `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ApiManagement/service/{name}`
/// and returns the rest of the path (starting with `/`, or `/` alone).
pub fn strip_arm_prefix(path: &str) -> &str {
    let lower = path.to_ascii_lowercase();
    if !lower.starts_with("/subscriptions/") || !lower.contains("/resourcegroups/") {
        return path;
    }
    let provider = ARM_PROVIDER.to_ascii_lowercase();
    if let Some(pos) = lower.find(&provider) {
        let after = &path[pos + provider.len()..];
        // Skip the service name.
        return match after.find('/') {
            Some(slash) => &after[slash..],
            None => "/",
        };
    }
    path
}

/// Decodes `%XX` escapes; fails on a malformed escape or bytes that are not UTF-8.
pub fn percent_decode(seg: &str) -> Result<String, PathError> {
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = seg
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| PathError::Encoding(seg.to_string()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::Encoding(seg.to_string()))
}

/// Fails when any segment of `path`, percent-decoded, is `.` or `..`: a path addresses what it
/// says, never what resolving its dot segments would give.
pub fn check_no_dot_segments(path: &str) -> Result<(), PathError> {
    let path_only = path.split(['?', '#']).next().unwrap_or_default();
    for raw in path_only.split('/') {
        let decoded = percent_decode(raw).unwrap_or_else(|_| raw.to_string());
        if crate::id::is_dot_segment(&decoded) {
            return Err(PathError::DotSegment(path_only.to_string()));
        }
    }
    Ok(())
}

/// Resolves a path relative to the service (already stripped of any ARM prefix).
pub fn resolve(path: &str) -> Result<Target, PathError> {
    check_no_dot_segments(path)?;
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        return Ok(Target::Service);
    }
    let mut chain: Vec<&str> = Vec::new();
    let mut parts: Vec<(&'static str, String)> = Vec::new();
    let mut i = 0;
    while i < segments.len() {
        let collection = segments[i];
        let mut try_chain = chain.clone();
        try_chain.push(collection);
        let Some(kind) = Kind::from_collections(&try_chain) else {
            // A single trailing segment after a resource is an action on it.
            if i == segments.len() - 1 && !parts.is_empty() {
                let parent = resource_path(&chain, &parts)?;
                return Ok(Target::Action {
                    path: parent,
                    action: collection.to_string(),
                });
            }
            return Err(PathError::UnknownCollection(collection.to_string()));
        };
        let canonical = *kind.spec().collections.last().expect("non-empty");
        chain.push(canonical);
        match segments.get(i + 1) {
            None => {
                let parent = if parts.is_empty() {
                    None
                } else {
                    Some(resource_path(&chain[..chain.len() - 1], &parts)?)
                };
                return Ok(Target::Collection { kind, parent });
            }
            Some(raw) => {
                let id = percent_decode(raw)?;
                kind.spec()
                    .id_rule
                    .validate(&id)
                    .map_err(|error| PathError::InvalidId {
                        kind: kind.spec().display,
                        id: id.clone(),
                        error,
                    })?;
                parts.push((canonical, id));
            }
        }
        i += 2;
    }
    Ok(Target::Resource(resource_path(&chain, &parts)?))
}

fn resource_path(
    chain: &[&str],
    parts: &[(&'static str, String)],
) -> Result<ResourcePath, PathError> {
    let kind = Kind::from_collections(chain)
        .ok_or_else(|| PathError::UnknownCollection(chain.join("/")))?;
    Ok(ResourcePath {
        kind,
        parts: parts.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn resolve_never_panics_and_round_trips(path in "(/[a-zA-Z%0-9;=*:._-]{0,12}){0,7}") {
            let stripped = strip_arm_prefix(&path);
            if let Ok(Target::Resource(p)) = resolve(stripped) {
                // A resolved path is canonical: resolving its string form gives it back.
                prop_assert_eq!(ResourcePath::parse_stored(&p.as_string()).unwrap(), p);
            }
        }
    }

    #[test]
    fn resolves_paths() {
        assert_eq!(resolve("/").unwrap(), Target::Service);
        match resolve("/apis/echo/operations/get").unwrap() {
            Target::Resource(p) => {
                assert_eq!(p.kind, Kind::Operation);
                assert_eq!(p.as_string(), "/apis/echo/operations/get");
                assert_eq!(p.parent_string(), "/apis/echo");
            }
            other => panic!("{other:?}"),
        }
        match resolve("/APIS/echo/Operations").unwrap() {
            Target::Collection { kind, parent } => {
                assert_eq!(kind, Kind::Operation);
                assert_eq!(parent.unwrap().as_string(), "/apis/echo");
            }
            other => panic!("{other:?}"),
        }
        match resolve("/subscriptions/s1/listSecrets").unwrap() {
            Target::Action { path, action } => {
                assert_eq!(path.as_string(), "/subscriptions/s1");
                assert_eq!(action, "listSecrets");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve("/widgets/x"),
            Err(PathError::UnknownCollection(_))
        ));
        assert!(matches!(
            resolve("/apis/a%3Ab"),
            Err(PathError::InvalidId { .. })
        ));
        assert!(matches!(
            resolve("/apis/echo%3Brev%3D2"),
            Ok(Target::Resource(_))
        ));
    }

    #[test]
    fn dot_segments_address_nothing() {
        for p in [
            "/products/..",
            "/products/.",
            "/products/%2e%2E",
            "/products/%2E",
            "/apis/x/../..",
            "/./apis",
            "/apis/x/operations/.%2e",
        ] {
            assert!(
                matches!(resolve(p), Err(PathError::DotSegment(_))),
                "{p}: {:?}",
                resolve(p)
            );
        }
        assert!(resolve("/products/...").is_ok());
    }

    #[test]
    fn strips_arm_prefix() {
        let p = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/contoso/apis/echo";
        assert_eq!(strip_arm_prefix(p), "/apis/echo");
        let p =
            "/subscriptions/x/resourceGroups/rg1/providers/Microsoft.ApiManagement/service/contoso";
        assert_eq!(strip_arm_prefix(p), "/");
        assert_eq!(strip_arm_prefix("/subscriptions/s1"), "/subscriptions/s1");
    }
}
