//! Where each resource kind lives in APIOps's artifact tree, in both directions.
//!
//! Invariant: [`folder_of`] and [`recognize`] are inverses for every entry of [`ENTRIES`]:
//! a resource written to a file is read back from that file as the same resource path.
//! Folder and file names are exactly APIOps's (`named values`, `policy fragments` and
//! `version sets` hold spaces); entries marked `extension` are Gatehouse's own additions for
//! what APIOps does not carry (users, group members, operation tags), which APIOps's
//! publisher does not read.

use gatehouse_model::{Kind, ResourcePath};

/// What a file holds for its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// `<kind>Information.json`: `{"properties": {…}}`.
    Info(&'static str),
    /// `policy.xml`: a policy document in APIM's raw form.
    Policy,
    /// `policy.xml` beside a fragment's information file: the fragment's `value`.
    FragmentValue,
}

/// One kind's place in the tree.
#[derive(Debug, PartialEq)]
pub struct Entry {
    pub kind: Kind,
    /// Folder segments from the root; `*` stands for an id.
    pub folder: &'static [&'static str],
    pub content: Content,
    /// The ids in the folder are in the reverse order of the resource path's (tags hold the
    /// APIs and products they are attached to).
    pub swapped: bool,
    /// Gatehouse's own addition to the layout.
    pub extension: bool,
}

const fn entry(kind: Kind, folder: &'static [&'static str], content: Content) -> Entry {
    Entry {
        kind,
        folder,
        content,
        swapped: false,
        extension: false,
    }
}

const fn info(kind: Kind, folder: &'static [&'static str], file: &'static str) -> Entry {
    entry(kind, folder, Content::Info(file))
}

/// Every kind the layout carries, in the order a folder is applied (what a resource refers
/// to comes before it). Operations come from the API's specification, not from this table.
pub static ENTRIES: &[Entry] = &[
    info(
        Kind::NamedValue,
        &["named values", "*"],
        "namedValueInformation.json",
    ),
    info(Kind::Tag, &["tags", "*"], "tagInformation.json"),
    info(Kind::Logger, &["loggers", "*"], "loggerInformation.json"),
    info(Kind::Backend, &["backends", "*"], "backendInformation.json"),
    info(
        Kind::ApiVersionSet,
        &["version sets", "*"],
        "versionSetInformation.json",
    ),
    info(
        Kind::PolicyFragment,
        &["policy fragments", "*"],
        "policyFragmentInformation.json",
    ),
    entry(
        Kind::PolicyFragment,
        &["policy fragments", "*"],
        Content::FragmentValue,
    ),
    info(Kind::Group, &["groups", "*"], "groupInformation.json"),
    info(
        Kind::GlobalSchema,
        &["schemas", "*"],
        "schemaInformation.json",
    ),
    Entry {
        extension: true,
        ..info(Kind::User, &["users", "*"], "userInformation.json")
    },
    Entry {
        extension: true,
        ..info(
            Kind::GroupUser,
            &["groups", "*", "users", "*"],
            "groupUserInformation.json",
        )
    },
    entry(Kind::GlobalPolicy, &[], Content::Policy),
    info(
        Kind::Diagnostic,
        &["diagnostics", "*"],
        "diagnosticInformation.json",
    ),
    info(Kind::Product, &["products", "*"], "productInformation.json"),
    info(Kind::Api, &["apis", "*"], "apiInformation.json"),
    info(
        Kind::ApiSchema,
        &["apis", "*", "schemas", "*"],
        "apiSchemaInformation.json",
    ),
    entry(Kind::ApiPolicy, &["apis", "*"], Content::Policy),
    entry(
        Kind::OperationPolicy,
        &["apis", "*", "operations", "*"],
        Content::Policy,
    ),
    Entry {
        extension: true,
        ..info(
            Kind::OperationTag,
            &["apis", "*", "operations", "*", "tags", "*"],
            "operationTagInformation.json",
        )
    },
    info(
        Kind::ApiDiagnostic,
        &["apis", "*", "diagnostics", "*"],
        "diagnosticInformation.json",
    ),
    Entry {
        swapped: true,
        ..info(
            Kind::ApiTag,
            &["tags", "*", "apis", "*"],
            "tagApiInformation.json",
        )
    },
    entry(Kind::ProductPolicy, &["products", "*"], Content::Policy),
    info(
        Kind::ProductApi,
        &["products", "*", "apis", "*"],
        "productApiInformation.json",
    ),
    info(
        Kind::ProductGroup,
        &["products", "*", "groups", "*"],
        "productGroupInformation.json",
    ),
    Entry {
        swapped: true,
        ..info(
            Kind::ProductTag,
            &["tags", "*", "products", "*"],
            "tagProductInformation.json",
        )
    },
    info(
        Kind::Subscription,
        &["subscriptions", "*"],
        "subscriptionInformation.json",
    ),
    info(Kind::Gateway, &["gateways", "*"], "gatewayInformation.json"),
    info(
        Kind::GatewayApi,
        &["gateways", "*", "apis", "*"],
        "gatewayApiInformation.json",
    ),
    // The developer portal's content: APIOps leaves it out (APIM's backup too); Gatehouse
    // carries it in a `portal/` folder.
    Entry {
        extension: true,
        ..info(
            Kind::ContentType,
            &["portal", "contentTypes", "*"],
            "contentTypeInformation.json",
        )
    },
    Entry {
        extension: true,
        ..info(
            Kind::ContentItem,
            &["portal", "contentTypes", "*", "contentItems", "*"],
            "contentItemInformation.json",
        )
    },
    Entry {
        extension: true,
        ..info(
            Kind::PortalRevision,
            &["portal", "revisions", "*"],
            "portalRevisionInformation.json",
        )
    },
];

/// APIOps files Gatehouse knows of but does not hold, with the reason.
pub static NOT_HELD: &[(&[&str], &str, &str)] = &[(
    &["apis", "*", "releases", "*"],
    "apiReleaseInformation.json",
    "API releases (change logs) are not part of Gatehouse's model",
)];

pub const POLICY_FILE: &str = "policy.xml";

/// The extensions of an API's specification file, by type.
pub const SPEC_EXTENSIONS: &[&str] = &["yaml", "yml", "json", "graphql", "wsdl", "wadl"];

fn file_name(content: Content) -> &'static str {
    match content {
        Content::Info(f) => f,
        Content::Policy | Content::FragmentValue => POLICY_FILE,
    }
}

/// The ids of a resource path as its folder lists them.
fn folder_ids(entry: &Entry, path: &ResourcePath) -> Vec<String> {
    let mut ids: Vec<String> = path.parts.iter().map(|(_, id)| id.clone()).collect();
    if entry.kind.is_policy() {
        ids.pop();
    }
    if entry.swapped {
        ids.reverse();
    }
    ids
}

/// The file (relative, `/`-separated) that holds `path`'s `content`.
pub fn file_of(entry: &Entry, path: &ResourcePath) -> String {
    let mut ids = folder_ids(entry, path).into_iter();
    let mut segs: Vec<String> = entry
        .folder
        .iter()
        .map(|s| match *s {
            "*" => ids.next().unwrap_or_default(),
            lit => lit.to_string(),
        })
        .collect();
    segs.push(file_name(entry.content).to_string());
    segs.join("/")
}

/// The entries that write `kind` (a fragment has two: information and value).
pub fn entries_of(kind: Kind) -> impl Iterator<Item = &'static Entry> {
    ENTRIES.iter().filter(move |e| e.kind == kind)
}

/// What a file of a folder is.
#[derive(Debug, PartialEq)]
pub enum Recognized {
    /// A resource's file, with its resource path's ids in path order.
    Resource(&'static Entry, Vec<String>),
    /// An API's specification: the API's id and the file's extension.
    Specification(String, String),
    /// A file APIOps writes that Gatehouse does not hold.
    NotHeld(&'static str),
    /// Anything else.
    Unknown,
}

fn match_folder(pattern: &[&str], folder: &[&str]) -> Option<Vec<String>> {
    if pattern.len() != folder.len() {
        return None;
    }
    let mut ids = Vec::new();
    for (p, f) in pattern.iter().zip(folder) {
        match *p {
            "*" => ids.push((*f).to_string()),
            lit if lit == *f => {}
            _ => return None,
        }
    }
    Some(ids)
}

/// Classifies a relative, `/`-separated file path.
pub fn recognize(file: &str) -> Recognized {
    let segs: Vec<&str> = file.split('/').collect();
    let (name, folder) = segs.split_last().expect("split yields one item at least");
    for e in ENTRIES {
        if file_name(e.content) == *name
            && let Some(mut ids) = match_folder(e.folder, folder)
        {
            if e.swapped {
                ids.reverse();
            }
            return Recognized::Resource(e, ids);
        }
    }
    if let Some(ext) = name.strip_prefix("specification.")
        && SPEC_EXTENSIONS.contains(&ext)
        && let Some(ids) = match_folder(&["apis", "*"], folder)
    {
        return Recognized::Specification(ids[0].clone(), ext.to_string());
    }
    for (pattern, file, reason) in NOT_HELD {
        if file == name && match_folder(pattern, folder).is_some() {
            return Recognized::NotHeld(reason);
        }
    }
    if segs.first() == Some(&"workspaces") {
        return Recognized::NotHeld("workspaces are not part of Gatehouse's model");
    }
    Recognized::Unknown
}

/// The resource path of an entry's resource from its ids in path order.
pub fn resource_path(entry: &Entry, ids: Vec<String>) -> ResourcePath {
    let collections = entry.kind.spec().collections;
    let mut ids = ids;
    if entry.kind.is_policy() {
        ids.push("policy".to_string());
    }
    ResourcePath::new(entry.kind, collections.iter().copied().zip(ids).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_reads_back_what_it_writes() {
        for e in ENTRIES {
            let n = e.folder.iter().filter(|s| **s == "*").count();
            let ids: Vec<String> = (0..n).map(|i| format!("id{i};rev=2")).collect();
            let path = resource_path(e, ids.clone());
            let file = file_of(e, &path);
            match recognize(&file) {
                Recognized::Resource(got, got_ids) => {
                    let back = resource_path(got, got_ids);
                    assert_eq!(back.as_string(), path.as_string(), "{file}");
                    assert_eq!(got.kind, e.kind, "{file}");
                }
                other => panic!("{file}: {other:?}"),
            }
        }
    }

    #[test]
    fn names_are_apiops_names() {
        let nv = resource_path(&ENTRIES[0], vec!["db-password".into()]);
        assert_eq!(
            file_of(&ENTRIES[0], &nv),
            "named values/db-password/namedValueInformation.json"
        );
        assert_eq!(
            recognize("apis/echo/specification.yaml"),
            Recognized::Specification("echo".into(), "yaml".into())
        );
        assert!(matches!(
            recognize("tags/t1/apis/echo/tagApiInformation.json"),
            Recognized::Resource(e, ids) if e.kind == Kind::ApiTag && ids == ["echo", "t1"]
        ));
        assert!(matches!(
            recognize("apis/echo/releases/r1/apiReleaseInformation.json"),
            Recognized::NotHeld(_)
        ));
        assert_eq!(recognize("README.md"), Recognized::Unknown);
    }
}
