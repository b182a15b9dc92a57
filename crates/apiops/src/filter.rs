//! APIOps extractor's filter file (`configuration.extractor.yaml`): which resources an export
//! keeps, by name per type.
//!
//! Both generations are read: v7's sections (`apis`, `products`, `namedValues`, …; an item is
//! a name, or a one-key map naming an API and its child sections) and v6's (`apiNames`,
//! `productNames`, …). A section that is absent keeps every resource of its type; a section
//! keeps only the names it lists (an API's name keeps all its revisions); an API's child
//! section (`operations`, `diagnostics`, `schemas`, `releases`) works the same below it. A link
//! (an API in a product, a tag on an API) goes when either end is filtered out.

use crate::item::{FileError, Files};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Sections, their v6 name, and the folder they filter.
const SECTIONS: &[(&str, &str, &str)] = &[
    ("apis", "apiNames", "apis"),
    ("backends", "backendNames", "backends"),
    ("diagnostics", "diagnosticNames", "diagnostics"),
    ("gateways", "gatewayNames", "gateways"),
    ("groups", "groupNames", "groups"),
    ("loggers", "loggerNames", "loggers"),
    ("namedValues", "namedValueNames", "named values"),
    ("policyFragments", "policyFragmentNames", "policy fragments"),
    ("products", "productNames", "products"),
    ("subscriptions", "subscriptionNames", "subscriptions"),
    ("tags", "tagNames", "tags"),
    ("versionSets", "versionSetNames", "version sets"),
    ("workspaces", "workspaceNames", "workspaces"),
];
const API_CHILDREN: &[&str] = &["operations", "diagnostics", "schemas", "releases"];
const MAX_NAME: usize = 256;

/// What a filter file keeps.
#[derive(Debug, Default)]
pub struct Filter {
    /// Folder → the names kept (absent: all).
    kept: BTreeMap<&'static str, BTreeSet<String>>,
    /// API name → child section → the names kept (absent: all).
    children: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Filter {
    /// Parses a filter file (YAML or JSON); any mistake fails with the file's name.
    pub fn parse(file: &str, text: &str) -> Result<Filter, FileError> {
        let err = |m: String| FileError::new(file, m);
        let root: Value = serde_norway::from_str(text)
            .map_err(|e| err(format!("the file is not valid YAML: {e}")))?;
        let Value::Object(root) = root else {
            return Err(err("the file must hold a mapping of sections".into()));
        };
        let mut filter = Filter::default();
        for (key, section) in &root {
            let Some((v7, _, folder)) = SECTIONS.iter().find(|(v7, v6, _)| v7 == key || v6 == key)
            else {
                return Err(err(format!("unknown section '{key}'")));
            };
            let names = filter
                .section(v7, section)
                .map_err(|m| err(format!("section '{key}': {m}")))?;
            filter.kept.insert(folder, names);
        }
        Ok(filter)
    }

    fn section(&mut self, key: &str, section: &Value) -> Result<BTreeSet<String>, String> {
        let items = section.as_array().ok_or("must be a list")?;
        let mut names = BTreeSet::new();
        for item in items {
            let name =
                match item {
                    Value::String(n) => n.clone(),
                    Value::Object(m) if m.len() == 1 && key == "apis" => {
                        let (name, children) = m.iter().next().expect("one key");
                        self.api_children(name, children)?;
                        name.clone()
                    }
                    _ => return Err(
                        "each item must be a name (or, for an API, a name with its child sections)"
                            .into(),
                    ),
                };
            check_name(&name)?;
            if !names.insert(name.clone()) {
                return Err(format!("'{name}' is listed twice"));
            }
        }
        Ok(names)
    }

    fn api_children(&mut self, api: &str, children: &Value) -> Result<(), String> {
        let Value::Object(children) = children else {
            return Err(format!("the API '{api}' must map to its child sections"));
        };
        let mut out = BTreeMap::new();
        for (child, list) in children {
            if !API_CHILDREN.contains(&child.as_str()) {
                return Err(format!(
                    "unknown child section '{child}' of the API '{api}'"
                ));
            }
            let names = list
                .as_array()
                .ok_or(format!("'{child}' of the API '{api}' must be a list"))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or(format!("'{child}' of the API '{api}' must list names"))
                })
                .collect::<Result<BTreeSet<_>, _>>()?;
            out.insert(child.clone(), names);
        }
        self.children.insert(api.to_string(), out);
        Ok(())
    }

    /// Whether the resource named `name` in `folder` is kept (an API by its root name).
    fn keeps(&self, folder: &str, name: &str) -> bool {
        let name = if folder == "apis" {
            name.split(";rev=").next().unwrap_or(name)
        } else {
            name
        };
        self.kept
            .get(folder)
            .is_none_or(|names| names.contains(name))
    }

    /// The files the filter keeps.
    pub fn apply(&self, files: Files) -> Files {
        files
            .into_iter()
            .filter(|(path, _)| self.keeps_file(path))
            .collect()
    }

    fn keeps_file(&self, path: &str) -> bool {
        let segs: Vec<&str> = path.split('/').collect();
        if segs.len() < 3 {
            return true;
        }
        if !self.keeps(segs[0], segs[1]) {
            return false;
        }
        let link = |other: &str| segs.len() >= 5 && !self.keeps(other, segs[3]);
        match (segs[0], segs.get(2).copied()) {
            ("products", Some("apis")) | ("tags", Some("apis")) => !link("apis"),
            ("products", Some("groups")) => !link("groups"),
            ("tags", Some("products")) => !link("products"),
            ("apis", Some(child)) if segs.len() >= 5 => {
                let root = segs[1].split(";rev=").next().unwrap_or(segs[1]);
                self.children
                    .get(root)
                    .and_then(|c| c.get(child))
                    .is_none_or(|names| names.contains(segs[3]))
            }
            _ => true,
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "the name '{name}' must have 1 to {MAX_NAME} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(paths: &[&str]) -> Files {
        paths.iter().map(|p| (p.to_string(), Vec::new())).collect()
    }

    #[test]
    fn sections_keep_what_they_name_and_links_follow() {
        let f = Filter::parse(
            "configuration.extractor.yaml",
            "apis:\n  - echo:\n      operations: [get]\n  - orders\nproducts: [starter]\n",
        )
        .unwrap();
        let kept = f.apply(files(&[
            "policy.xml",
            "apis/echo/apiInformation.json",
            "apis/echo;rev=2/apiInformation.json",
            "apis/echo/operations/get/policy.xml",
            "apis/echo/operations/post/policy.xml",
            "apis/other/apiInformation.json",
            "apis/orders/operations/any/policy.xml",
            "products/starter/apis/echo/productApiInformation.json",
            "products/starter/apis/other/productApiInformation.json",
            "products/gold/productInformation.json",
            "tags/t/apis/other/tagApiInformation.json",
            "tags/t/tagInformation.json",
            "named values/x/namedValueInformation.json",
        ]));
        let kept: Vec<&str> = kept.keys().map(String::as_str).collect();
        assert_eq!(
            kept,
            [
                "apis/echo/apiInformation.json",
                "apis/echo/operations/get/policy.xml",
                "apis/echo;rev=2/apiInformation.json",
                "apis/orders/operations/any/policy.xml",
                "named values/x/namedValueInformation.json",
                "policy.xml",
                "products/starter/apis/echo/productApiInformation.json",
                "tags/t/tagInformation.json",
            ]
        );
    }

    #[test]
    fn version_6_names_and_mistakes() {
        let f = Filter::parse("f.yaml", "apiNames: [a]\nnamedValueNames: [n]\n").unwrap();
        let kept = f.apply(files(&[
            "apis/a/apiInformation.json",
            "apis/b/apiInformation.json",
            "named values/m/namedValueInformation.json",
        ]));
        assert_eq!(kept.len(), 1);
        assert!(
            Filter::parse("f.yaml", "apis: [a, a]")
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(
            Filter::parse("f.yaml", "nope: []")
                .unwrap_err()
                .to_string()
                .contains("unknown section 'nope'")
        );
        assert!(
            Filter::parse("f.yaml", "apis:\n  - a: {bogus: []}\n")
                .unwrap_err()
                .to_string()
                .contains("bogus")
        );
    }
}
