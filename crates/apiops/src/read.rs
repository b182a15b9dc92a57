//! A folder's files → the resources it describes.
//!
//! Every file ends up as a resource (or part of one), an API's specification, or a
//! [`Skipped`] note with its reason; a file that cannot be read is an error naming it, and
//! all such errors are reported together.

use crate::item::{FileError, Files, Item, Skipped, Specification};
use crate::json;
use crate::layout::{self, Content, Recognized};
use crate::overrides::Overrides;
use gatehouse_model::props::{Access, fields};
use gatehouse_model::{Kind, ResourcePath};
use gatehouse_policy::doc::stored_format_of_raw;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// What a folder asks for.
#[derive(Debug, Default)]
pub struct Desired {
    /// In the order they are applied (see [`layout::ENTRIES`]), then by path.
    pub items: Vec<Item>,
    pub specifications: Vec<Specification>,
    pub skipped: Vec<Skipped>,
    /// The folders present: each top-level folder (`apis`) and each resource folder
    /// (`apis/echo`). Prune deletes only below folders the folder has.
    pub folders: BTreeSet<String>,
    /// Secret named values with neither a value nor a Key Vault reference.
    pub secrets_without_value: Vec<Item>,
}

/// Reads a folder, with the overrides (if any) merged in.
pub fn read(files: &Files, overrides: Option<&Overrides>) -> Result<Desired, Vec<FileError>> {
    let mut desired = Desired::default();
    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    let mut errors = Vec::new();
    for (file, bytes) in files {
        let segs: Vec<&str> = file.split('/').collect();
        if segs.len() > 1 {
            desired.folders.insert(segs[0].to_string());
        }
        if segs.len() > 2 {
            desired.folders.insert(format!("{}/{}", segs[0], segs[1]));
        }
        if let Err(message) = read_file(file, bytes, &mut items, &mut desired) {
            errors.push(FileError::new(file.clone(), message));
        }
    }
    for spec in &desired.specifications {
        if !items.contains_key(&spec.api) {
            errors.push(FileError::new(
                spec.file.clone(),
                "a specification needs apiInformation.json beside it",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(complete(desired, items.into_values().collect(), overrides))
}

/// Completes what a source (a folder, a template) asks for: the overrides merged in, the
/// properties kept to the model, secrets without a value found, the items in order.
pub fn complete(
    mut desired: Desired,
    mut items: Vec<Item>,
    overrides: Option<&Overrides>,
) -> Desired {
    if let Some(o) = overrides {
        desired.skipped.extend(o.apply(&mut items));
    }
    for item in &mut items {
        finish(item, &mut desired.skipped);
        if is_secret_without_value(item) {
            desired.secrets_without_value.push(item.clone());
        }
    }
    items.sort_by_key(|i| (order_of(i.kind), i.path.clone()));
    desired.items = items;
    desired.skipped.sort();
    desired
}

fn read_file(
    file: &str,
    bytes: &[u8],
    items: &mut BTreeMap<String, Item>,
    desired: &mut Desired,
) -> Result<(), String> {
    match layout::recognize(file) {
        Recognized::Resource(entry, ids) => {
            let path = layout::resource_path(entry, ids);
            check_ids(&path)?;
            let props = match entry.content {
                Content::Info(_) => json::parse_info(bytes)?,
                Content::Policy | Content::FragmentValue => {
                    let text = std::str::from_utf8(bytes).map_err(|_| "the file is not UTF-8")?;
                    let mut m = Map::new();
                    m.insert("value".into(), json!(text.trim_start_matches('\u{feff}')));
                    m
                }
            };
            let key = path.as_string();
            let item = items.entry(key.clone()).or_insert_with(|| Item {
                path: key,
                kind: entry.kind,
                properties: Map::new(),
                file: file.to_string(),
            });
            if matches!(entry.content, Content::Info(_)) {
                item.file = file.to_string();
            }
            item.properties.extend(props);
        }
        Recognized::Specification(api, extension) => {
            let path = ResourcePath::top(Kind::Api, &api);
            check_ids(&path)?;
            let text = String::from_utf8(bytes.to_vec()).map_err(|_| "the file is not UTF-8")?;
            desired.specifications.push(Specification {
                api: path.as_string(),
                extension,
                text,
                file: file.to_string(),
            });
        }
        Recognized::NotHeld(reason) => desired.skipped.push(Skipped {
            file: file.to_string(),
            reason: reason.to_string(),
        }),
        Recognized::Unknown => desired.skipped.push(Skipped {
            file: file.to_string(),
            reason: "not a file of APIOps's layout".to_string(),
        }),
    }
    Ok(())
}

/// Every id of the path is valid for its kind (folder names are ids).
fn check_ids(path: &ResourcePath) -> Result<(), String> {
    for i in 1..=path.parts.len() {
        let chain: Vec<&str> = path.parts[..i].iter().map(|(c, _)| *c).collect();
        let kind = Kind::from_collections(&chain).expect("layout paths are model paths");
        let id = &path.parts[i - 1].1;
        kind.spec().id_rule.validate(id).map_err(|e| {
            format!(
                "the folder name '{id}' is not a valid {} id: {e}",
                kind.spec().display
            )
        })?;
    }
    Ok(())
}

/// Keeps the properties Gatehouse holds: read-only ones (computed by the server) are dropped
/// as a PUT drops them; unknown ones are noted. Policies get the format their text needs.
fn finish(item: &mut Item, skipped: &mut Vec<Skipped>) {
    if item.kind.is_policy() || item.kind == Kind::PolicyFragment {
        let value = item
            .properties
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or("");
        let format = match item.properties.get("format").and_then(Value::as_str) {
            Some("xml") => "xml",
            _ => stored_format_of_raw(value),
        };
        item.properties.insert("format".into(), json!(format));
    }
    if item.kind.is_link() {
        item.properties.clear();
        return;
    }
    let schema = fields(item.kind);
    let display = item.kind.spec().display;
    item.properties
        .retain(|name, _| match schema.iter().find(|f| f.name == name) {
            Some(f) => f.access != Access::ReadOnly,
            None => {
                skipped.push(Skipped {
                    file: item.file.clone(),
                    reason: format!(
                        "property '{name}' is not part of Gatehouse's {display}; left out"
                    ),
                });
                false
            }
        });
}

fn is_secret_without_value(item: &Item) -> bool {
    let p = &item.properties;
    item.kind == Kind::NamedValue
        && p.get("secret") == Some(&json!(true))
        && p.get("value").is_none_or(Value::is_null)
        && p.get("keyVault").is_none_or(Value::is_null)
}

/// Where a kind comes in the order of application: the layout's order, with operations
/// (which a template lists, and a folder's specification implies) right after APIs.
pub fn order_of(kind: Kind) -> usize {
    let of = |k: Kind| layout::ENTRIES.iter().position(|e| e.kind == k);
    match kind {
        Kind::Operation => of(Kind::Api).map(|p| 2 * p + 1),
        k => of(k).map(|p| 2 * p),
    }
    .unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Files {
        list.iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_folder_reads_into_resources_in_dependency_order() {
        let f = files(&[
            (
                "apis/echo/apiInformation.json",
                r#"{"properties": {"displayName": "Echo", "path": "echo", "isOnline": true, "fancy": 1}}"#,
            ),
            (
                "apis/echo/policy.xml",
                "<policies><inbound><base /></inbound></policies>",
            ),
            ("apis/echo/specification.yaml", "openapi: 3.0.1\n"),
            (
                "named values/pw/namedValueInformation.json",
                r#"{"properties": {"displayName": "pw", "secret": true}}"#,
            ),
            (
                "policy fragments/f/policyFragmentInformation.json",
                r#"{"properties": {"description": "d"}}"#,
            ),
            (
                "policy fragments/f/policy.xml",
                r#"<fragment><set-header name="a"><value>@(1 < 2 ? "a" : "b")</value></set-header></fragment>"#,
            ),
            ("tags/t/apis/echo/tagApiInformation.json", "{}"),
            ("README.md", "hello"),
        ]);
        let d = read(&f, None).unwrap();
        let order: Vec<&str> = d.items.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            order,
            [
                "/namedValues/pw",
                "/policyFragments/f",
                "/apis/echo",
                "/apis/echo/policies/policy",
                "/apis/echo/tags/t"
            ]
        );
        assert_eq!(d.items[1].properties["format"], "rawxml");
        assert_eq!(d.items[3].properties["format"], "xml");
        assert!(!d.items[2].properties.contains_key("isOnline"));
        assert_eq!(d.secrets_without_value.len(), 1);
        assert_eq!(d.specifications[0].api, "/apis/echo");
        let reasons: Vec<String> = d
            .skipped
            .iter()
            .map(|s| format!("{}: {}", s.file, s.reason))
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("README.md"));
        assert!(reasons[1].contains("'fancy'"));
        assert!(d.folders.contains("apis") && d.folders.contains("apis/echo"));
    }

    #[test]
    fn every_bad_file_is_named() {
        let f = files(&[
            ("apis/echo/apiInformation.json", "{ nope"),
            ("apis/a?b/apiInformation.json", r#"{"properties": {}}"#),
            ("apis/x/specification.json", "{}"),
        ]);
        let errs = read(&f, None).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(
            text.iter()
                .any(|t| t.starts_with("apis/echo/apiInformation.json: line 1"))
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("apis/a?b/apiInformation.json: the folder name"))
        );
        assert!(text.iter().any(|t| t.contains("needs apiInformation.json")));
    }
}
