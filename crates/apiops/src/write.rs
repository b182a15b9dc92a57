//! Resources → a folder's files, as APIOps's extractor writes them.
//!
//! The caller passes resources with their secrets already removed (as the API renders them);
//! this module leaves out what APIOps leaves out (the built-in `master` subscription, system
//! groups, operations — the specification carries them) and notes what it cannot carry.

use crate::item::{Files, Item, Skipped, Specification};
use crate::json;
use crate::layout::{self, Content};
use gatehouse_model::props::{Access, fields};
use gatehouse_model::{Kind, ResourcePath};
use gatehouse_policy::doc::unescape_xml_expressions;
use serde_json::{Map, Value, json};

/// The files of an export and what it left out.
#[derive(Debug, Default)]
pub struct Export {
    pub files: Files,
    pub skipped: Vec<Skipped>,
}

/// Writes `resources` (secrets removed) and the APIs' specifications.
pub fn export(resources: &[Item], specifications: &[Specification]) -> Export {
    let mut out = Export::default();
    for res in resources {
        let Ok(path) = ResourcePath::parse_stored(&res.path) else {
            continue;
        };
        if left_out(res) {
            continue;
        }
        if res.kind == Kind::Certificate {
            out.skipped.push(Skipped {
                file: format!("certificates/{}", path.id()),
                reason:
                    "certificates hold private keys: carry them with a backup, or upload them again"
                        .into(),
            });
            continue;
        }
        for entry in layout::entries_of(res.kind) {
            let file = layout::file_of(entry, &path);
            let bytes = contents(entry.content, res);
            out.files.insert(file, bytes);
        }
        if res.kind == Kind::NamedValue && res.properties.get("secret") == Some(&json!(true)) {
            out.skipped.push(Skipped {
                file: layout::file_of(&layout::ENTRIES[0], &path),
                reason: "the secret value is left out: give it in an override file".into(),
            });
        }
    }
    for spec in specifications {
        let id = spec.api.trim_start_matches("/apis/");
        out.files.insert(
            format!("apis/{id}/specification.{}", spec.extension),
            spec.text.clone().into_bytes(),
        );
    }
    out.skipped.sort();
    out
}

/// What APIOps's extractor never writes: the built-in all-access subscription, system groups,
/// and operations (their API's specification holds them).
fn left_out(res: &Item) -> bool {
    match res.kind {
        Kind::Operation => true,
        Kind::Subscription => res.path == "/subscriptions/master",
        Kind::Group => res.properties.get("builtIn") == Some(&json!(true)),
        _ => false,
    }
}

fn contents(content: Content, res: &Item) -> Vec<u8> {
    match content {
        Content::Policy | Content::FragmentValue => raw_policy(&res.properties).into_bytes(),
        Content::Info(_) if res.kind.is_link() => json::info_file(&Map::new()),
        Content::Info(_) => json::info_file(&exported_properties(res)),
    }
}

/// A policy in APIM's raw form, as `GET …?format=rawxml` answers and APIOps stores it.
fn raw_policy(props: &Map<String, Value>) -> String {
    let value = props.get("value").and_then(Value::as_str).unwrap_or("");
    match props.get("format").and_then(Value::as_str) {
        Some(f) if f.starts_with("rawxml") => value.to_string(),
        _ => unescape_xml_expressions(value),
    }
}

/// The properties a file carries: configuration only, without what the server computes
/// (creation dates, thumbprints), and a fragment's text goes to its `policy.xml`.
pub(crate) fn exported_properties(res: &Item) -> Map<String, Value> {
    let schema = fields(res.kind);
    let mut props = res.properties.clone();
    props.retain(|name, _| {
        schema
            .iter()
            .find(|f| f.name == name)
            .is_some_and(|f| f.access != Access::ReadOnly)
    });
    if res.kind == Kind::PolicyFragment {
        props.remove("value");
        props.remove("format");
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::read;

    fn item(path: &str, kind: Kind, props: Value) -> Item {
        Item::from_json(path, kind, props)
    }

    #[test]
    fn an_export_reads_back_as_the_same_resources() {
        let resources = vec![
            item(
                "/apis/echo",
                Kind::Api,
                json!({"displayName": "Echo", "path": "echo", "protocols": ["https"]}),
            ),
            item(
                "/apis/echo;rev=2",
                Kind::Api,
                json!({"displayName": "Echo", "path": "echo", "apiRevision": "2"}),
            ),
            item(
                "/apis/echo/operations/get",
                Kind::Operation,
                json!({"displayName": "get"}),
            ),
            item(
                "/apis/echo/operations/get/policies/policy",
                Kind::OperationPolicy,
                json!({"value": "<policies><inbound><set-header name=\"a\"><value>@(&quot;x&quot;)</value></set-header></inbound></policies>", "format": "xml"}),
            ),
            item(
                "/policyFragments/f",
                Kind::PolicyFragment,
                json!({"value": "<fragment/>", "format": "xml", "description": "d", "provisioningState": "Succeeded"}),
            ),
            item(
                "/subscriptions/master",
                Kind::Subscription,
                json!({"displayName": "all", "scope": "/apis"}),
            ),
            item(
                "/subscriptions/s1",
                Kind::Subscription,
                json!({"displayName": "s", "scope": "/apis", "createdDate": "2026-01-01T00:00:00Z"}),
            ),
            item(
                "/groups/developers",
                Kind::Group,
                json!({"displayName": "Developers", "builtIn": true}),
            ),
            item("/products/p/apis/echo", Kind::ProductApi, json!({})),
            item("/products/p", Kind::Product, json!({"displayName": "P"})),
            item(
                "/namedValues/pw",
                Kind::NamedValue,
                json!({"displayName": "pw", "secret": true}),
            ),
            item("/certificates/c", Kind::Certificate, json!({})),
        ];
        let out = export(&resources, &[]);
        let names: Vec<&str> = out.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "apis/echo/apiInformation.json",
                "apis/echo/operations/get/policy.xml",
                "apis/echo;rev=2/apiInformation.json",
                "named values/pw/namedValueInformation.json",
                "policy fragments/f/policy.xml",
                "policy fragments/f/policyFragmentInformation.json",
                "products/p/apis/echo/productApiInformation.json",
                "products/p/productInformation.json",
                "subscriptions/s1/subscriptionInformation.json",
            ]
        );
        assert_eq!(
            String::from_utf8_lossy(&out.files["apis/echo/operations/get/policy.xml"]),
            "<policies><inbound><set-header name=\"a\"><value>@(\"x\")</value></set-header></inbound></policies>"
        );
        assert_eq!(out.skipped.len(), 2, "{:?}", out.skipped);
        let back = read(&out.files, None).unwrap();
        let sub = back
            .items
            .iter()
            .find(|i| i.path == "/subscriptions/s1")
            .unwrap();
        assert!(!sub.properties.contains_key("createdDate"));
        let frag = back
            .items
            .iter()
            .find(|i| i.path == "/policyFragments/f")
            .unwrap();
        assert_eq!(frag.properties["value"], "<fragment/>");
        assert_eq!(frag.properties["description"], "d");
        assert_eq!(back.skipped, vec![]);
        let again = export(&back.items, &[]);
        assert_eq!(again.files, out.files);
    }
}
