//! APIOps publisher's per-environment override files (`configuration.<env>.yaml`).
//!
//! Every section is a list of objects matched by `name` (the resource's id; an API's name
//! covers all its revisions); an object's `properties` are merged over the folder's: objects
//! merge recursively, scalars and arrays replace. `{#TOKEN#}` placeholders are replaced before
//! parsing ([`substitute_tokens`], from the environment of whoever runs the import); one left
//! in the file is an error, never a literal value.

use crate::item::{FileError, Item, Skipped};
use gatehouse_model::{Kind, ResourcePath};
use serde_json::{Map, Value};

/// A parsed override file.
#[derive(Debug, Clone)]
pub struct Overrides {
    pub file: String,
    root: Map<String, Value>,
}

/// Top-level sections and the kind each overrides.
const SECTIONS: &[(&str, Kind)] = &[
    ("namedValues", Kind::NamedValue),
    ("tags", Kind::Tag),
    ("versionSets", Kind::ApiVersionSet),
    ("backends", Kind::Backend),
    ("loggers", Kind::Logger),
    ("diagnostics", Kind::Diagnostic),
    ("policyFragments", Kind::PolicyFragment),
    ("products", Kind::Product),
    ("groups", Kind::Group),
    ("subscriptions", Kind::Subscription),
    ("apis", Kind::Api),
    ("gateways", Kind::Gateway),
    ("policies", Kind::GlobalPolicy),
    ("servicePolicies", Kind::GlobalPolicy),
];

/// Sections inside an entry of a parent section.
const CHILD_SECTIONS: &[(Kind, &str, Kind)] = &[
    (Kind::Api, "diagnostics", Kind::ApiDiagnostic),
    (Kind::Api, "policies", Kind::ApiPolicy),
    (Kind::Api, "operations", Kind::Operation),
    (Kind::Operation, "policies", Kind::OperationPolicy),
    (Kind::Product, "policies", Kind::ProductPolicy),
];

/// Sections APIOps knows that Gatehouse does not hold.
const NOT_HELD: &[&str] = &["workspaces", "releases"];

/// Replaces every `{#NAME#}` with `lookup(NAME)`; a name without a value is an error naming it.
pub fn substitute_tokens(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{#") {
        let Some(len) = rest[start + 2..].find("#}") else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        let value = lookup(name).ok_or_else(|| {
            format!(
                "the placeholder {{#{name}#}} has no value: set the environment variable {name}"
            )
        })?;
        out.push_str(&rest[..start]);
        out.push_str(&value);
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn find_placeholder(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let start = s.find("{#")?;
            let end = s[start..].find("#}")?;
            Some(s[start..start + end + 2].to_string())
        }
        Value::Array(a) => a.iter().find_map(find_placeholder),
        Value::Object(m) => m.values().find_map(find_placeholder),
        _ => None,
    }
}

/// Deep merge: objects recursively, everything else replaces.
pub fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

impl Overrides {
    /// Parses an override file (YAML or JSON) whose placeholders were already substituted.
    pub fn parse(file: &str, text: &str) -> Result<Overrides, FileError> {
        let err = |m: String| FileError::new(file, m);
        let value: Value = serde_norway::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                .unwrap_or_default();
            err(format!("{at}the file is not valid YAML: {e}"))
        })?;
        let root = match value {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            _ => return Err(err("the file must hold a mapping of sections".into())),
        };
        if let Some(p) = find_placeholder(&Value::Object(root.clone())) {
            return Err(err(format!(
                "the placeholder {p} was not replaced: `gatehouse import --overrides` replaces it from the environment variable it names"
            )));
        }
        for (key, section) in &root {
            if key == "apimServiceName" || NOT_HELD.contains(&key.as_str()) {
                continue;
            }
            if !SECTIONS.iter().any(|(name, _)| name == key) {
                return Err(err(format!("unknown section '{key}'")));
            }
            check_section(key, section).map_err(err)?;
        }
        Ok(Overrides {
            file: file.to_string(),
            root,
        })
    }

    /// Merges the overrides into `items`; returns what matched nothing or is not held, as
    /// notes (APIOps's publisher ignores them too, but silently).
    pub fn apply(&self, items: &mut [Item]) -> Vec<Skipped> {
        let mut notes = Vec::new();
        for (key, section) in &self.root {
            if NOT_HELD.contains(&key.as_str()) {
                notes.push(self.note(format!("section '{key}': not part of Gatehouse's model")));
                continue;
            }
            if let Some((_, kind)) = SECTIONS.iter().find(|(name, _)| name == key) {
                self.apply_section(key, section, *kind, &[], items, &mut notes);
            }
        }
        notes
    }

    fn note(&self, reason: String) -> Skipped {
        Skipped {
            file: self.file.clone(),
            reason,
        }
    }

    fn apply_section(
        &self,
        at: &str,
        section: &Value,
        kind: Kind,
        parents: &[String],
        items: &mut [Item],
        notes: &mut Vec<Skipped>,
    ) {
        for entry in section.as_array().into_iter().flatten() {
            let Some(name) = entry.get("name").and_then(Value::as_str) else {
                continue;
            };
            let mut chain = parents.to_vec();
            chain.push(name.to_string());
            let mut matched = false;
            if let Some(props) = entry.get("properties").and_then(Value::as_object) {
                let mut props = props.clone();
                if kind == Kind::Api {
                    props.remove("apiRevision");
                    props.remove("isCurrent");
                }
                for item in items.iter_mut().filter(|i| matches(i, kind, &chain)) {
                    merge(&mut item.properties, &props);
                    matched = true;
                }
            } else {
                matched = items.iter().any(|i| matches(i, kind, &chain));
            }
            if !matched && kind != Kind::Operation {
                notes.push(self.note(format!(
                    "{at} '{name}': nothing in the folder has that name; not applied"
                )));
            }
            for (parent, child_key, child_kind) in CHILD_SECTIONS {
                if *parent == kind
                    && let Some(child) = entry.get(*child_key)
                {
                    let at = format!("{at} '{name}' {child_key}");
                    self.apply_section(&at, child, *child_kind, &chain, items, notes);
                }
            }
        }
    }
}

fn check_section(key: &str, section: &Value) -> Result<(), String> {
    let Some(entries) = section.as_array() else {
        return Err(format!("section '{key}' must be a list"));
    };
    for (i, e) in entries.iter().enumerate() {
        let ok = e.get("name").is_some_and(Value::is_string)
            && e.get("properties").is_none_or(Value::is_object);
        if !ok {
            return Err(format!(
                "section '{key}', item {}: each item needs a 'name' and, optionally, 'properties' as a mapping",
                i + 1
            ));
        }
    }
    Ok(())
}

/// Whether `item` is the resource of `kind` whose ids are `chain` (an API's revisions match
/// its root name; a policy's own id, `policy`, is matched too).
fn matches(item: &Item, kind: Kind, chain: &[String]) -> bool {
    if item.kind != kind {
        return false;
    }
    let Ok(path) = ResourcePath::parse_stored(&item.path) else {
        return false;
    };
    let ids: Vec<&str> = path.parts.iter().map(|(_, id)| id.as_str()).collect();
    let ids = if kind.is_policy() && ids.len() == chain.len() + 1 {
        &ids[..chain.len()]
    } else {
        &ids[..]
    };
    ids.len() == chain.len()
        && ids.iter().zip(chain).enumerate().all(|(i, (id, name))| {
            let root = if i == 0 && path.parts[0].0 == "apis" {
                id.split(";rev=").next().unwrap_or(id)
            } else {
                id
            };
            root == name
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(path: &str, kind: Kind, props: Value) -> Item {
        Item::from_json(path, kind, props)
    }

    #[test]
    fn overrides_merge_by_name_into_every_revision() {
        let text = r#"
apimServiceName: prod
namedValues:
  - name: db-password
    properties:
      value: s3cret
apis:
  - name: echo
    properties:
      serviceUrl: https://prod.example
      apiRevision: "9"
    diagnostics:
      - name: applicationinsights
        properties: { verbosity: error }
    policies:
      - name: policy
        properties: { format: rawxml, value: "<policies/>" }
backends:
  - name: missing
    properties: { url: https://x }
"#;
        let o = Overrides::parse("configuration.prod.yaml", text).unwrap();
        let mut items = vec![
            item(
                "/namedValues/db-password",
                Kind::NamedValue,
                json!({"displayName": "db", "secret": true}),
            ),
            item(
                "/apis/echo",
                Kind::Api,
                json!({"serviceUrl": "https://dev", "apiRevision": "1"}),
            ),
            item(
                "/apis/echo;rev=2",
                Kind::Api,
                json!({"serviceUrl": "https://dev"}),
            ),
            item(
                "/apis/echo/diagnostics/applicationinsights",
                Kind::ApiDiagnostic,
                json!({"verbosity": "verbose", "sampling": {"percentage": 100}}),
            ),
            item(
                "/apis/echo/policies/policy",
                Kind::ApiPolicy,
                json!({"value": "<policies><inbound/></policies>"}),
            ),
        ];
        let notes = o.apply(&mut items);
        assert_eq!(items[0].properties["value"], "s3cret");
        assert_eq!(items[1].properties["serviceUrl"], "https://prod.example");
        assert_eq!(items[1].properties["apiRevision"], "1");
        assert_eq!(items[2].properties["serviceUrl"], "https://prod.example");
        assert_eq!(items[3].properties["verbosity"], "error");
        assert_eq!(items[3].properties["sampling"]["percentage"], 100);
        assert_eq!(items[4].properties["value"], "<policies/>");
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].reason.contains("'missing'"));
    }

    #[test]
    fn placeholders_come_from_the_environment_or_fail() {
        let lookup = |n: &str| (n == "DB").then(|| "pw".to_string());
        assert_eq!(
            substitute_tokens("value: {#DB#} and {#DB#}", lookup).unwrap(),
            "value: pw and pw"
        );
        let e = substitute_tokens("value: {#NOPE#}", lookup).unwrap_err();
        assert!(e.contains("NOPE"), "{e}");
        let e = Overrides::parse(
            "c.yaml",
            "namedValues:\n  - name: a\n    properties: {value: '{#X#}'}\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("{#X#} was not replaced"), "{e}");
    }

    #[test]
    fn bad_files_say_where() {
        let e = Overrides::parse("c.yaml", "apis: [\n").unwrap_err();
        assert!(e.to_string().starts_with("c.yaml: line"), "{e}");
        let e = Overrides::parse("c.yaml", "bogus: []").unwrap_err();
        assert!(e.to_string().contains("unknown section 'bogus'"), "{e}");
        let e = Overrides::parse("c.yaml", "apis:\n  - properties: {}\n").unwrap_err();
        assert!(e.to_string().contains("item 1"), "{e}");
    }
}
