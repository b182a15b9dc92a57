//! The resource commands every kind shares: list, show, create, update, delete — one table of
//! kinds (their collection path and list columns) instead of a copy per kind — and policies.

use crate::args::{Common, PolicyCmd, PolicyScope, Properties, ResourceCmd};
use crate::env::env_value;
use crate::output::{print_json, read_body, show_list};
use anyhow::{Context, Result, anyhow, bail};
use gatehouse_client::{Client, path_segment as seg};
use serde_json::{Map, Value, json};

/// One kind of resource as the CLI shows it.
pub(crate) struct Kind {
    /// What a person calls one, e.g. "named value".
    pub noun: &'static str,
    /// The collection's path under the service, e.g. "/namedValues".
    pub collection: &'static str,
    /// The list table's columns: (header, property).
    pub columns: &'static [(&'static str, &'static str)],
    /// Added to a delete, e.g. to delete a product's subscriptions with it.
    pub delete_query: &'static str,
}

pub(crate) const API: Kind = Kind {
    noun: "API",
    collection: "/apis",
    columns: &[
        ("DISPLAY NAME", "displayName"),
        ("PATH", "path"),
        ("SERVICE URL", "serviceUrl"),
        ("REVISION", "apiRevision"),
    ],
    delete_query: "",
};
pub(crate) const PRODUCT: Kind = Kind {
    noun: "product",
    collection: "/products",
    columns: &[
        ("DISPLAY NAME", "displayName"),
        ("STATE", "state"),
        ("SUBSCRIPTION REQUIRED", "subscriptionRequired"),
    ],
    delete_query: "?deleteSubscriptions=true",
};
pub(crate) const SUBSCRIPTION: Kind = Kind {
    noun: "subscription",
    collection: "/subscriptions",
    columns: &[
        ("DISPLAY NAME", "displayName"),
        ("SCOPE", "scope"),
        ("OWNER", "ownerId"),
        ("STATE", "state"),
    ],
    delete_query: "",
};
pub(crate) const USER: Kind = Kind {
    noun: "user",
    collection: "/users",
    columns: &[
        ("EMAIL", "email"),
        ("FIRST NAME", "firstName"),
        ("LAST NAME", "lastName"),
        ("STATE", "state"),
    ],
    delete_query: "?deleteSubscriptions=true",
};
pub(crate) const GROUP: Kind = Kind {
    noun: "group",
    collection: "/groups",
    columns: &[
        ("DISPLAY NAME", "displayName"),
        ("TYPE", "type"),
        ("BUILT IN", "builtIn"),
    ],
    delete_query: "",
};
pub(crate) const NAMED_VALUE: Kind = Kind {
    noun: "named value",
    collection: "/namedValues",
    columns: &[
        ("DISPLAY NAME", "displayName"),
        ("SECRET", "secret"),
        ("VALUE", "value"),
    ],
    delete_query: "",
};
pub(crate) const BACKEND: Kind = Kind {
    noun: "backend",
    collection: "/backends",
    columns: &[
        ("URL", "url"),
        ("PROTOCOL", "protocol"),
        ("DESCRIPTION", "description"),
    ],
    delete_query: "",
};
pub(crate) const CERTIFICATE: Kind = Kind {
    noun: "certificate",
    collection: "/certificates",
    columns: &[
        ("SUBJECT", "subject"),
        ("THUMBPRINT", "thumbprint"),
        ("EXPIRES", "expirationDate"),
    ],
    delete_query: "",
};
pub(crate) const TAG: Kind = Kind {
    noun: "tag",
    collection: "/tags",
    columns: &[("DISPLAY NAME", "displayName")],
    delete_query: "",
};

impl Kind {
    pub(crate) fn path_of(&self, id: &str) -> String {
        format!("{}/{}", self.collection, seg(id))
    }
}

/// Runs a resource command of a kind whose create takes properties as they are.
pub(crate) async fn run(client: &Client, kind: &Kind, cmd: ResourceCmd, json: bool) -> Result<()> {
    match cmd {
        ResourceCmd::Common(cmd) => common(client, kind, cmd, json).await,
        ResourceCmd::Create { id, props } => create(client, kind, &id, &props, json).await,
    }
}

/// Runs list, show, update or delete on a kind.
pub(crate) async fn common(client: &Client, kind: &Kind, cmd: Common, json: bool) -> Result<()> {
    match cmd {
        Common::List => show_list(client, kind.collection, json, kind.columns).await,
        Common::Show { id } => show(client, kind, &id, json).await,
        Common::Update { id, props } => update(client, kind, &id, &props, json).await,
        Common::Delete { id } => delete(client, kind, &id).await,
    }
}

async fn show(client: &Client, kind: &Kind, id: &str, json: bool) -> Result<()> {
    let resource = client.get(&kind.path_of(id)).await?;
    if json {
        print_json(&resource);
    } else {
        print_summary(&resource);
    }
    Ok(())
}

/// PUT: the resource is created, or replaced by one with just these properties.
pub(crate) async fn create(
    client: &Client,
    kind: &Kind,
    id: &str,
    props: &Properties,
    json: bool,
) -> Result<()> {
    let body = json!({"properties": properties(props)?});
    let saved = client.put(&kind.path_of(id), &body).await?;
    saved_summary(kind, id, &saved, json);
    Ok(())
}

/// PATCH: only the properties given change.
async fn update(
    client: &Client,
    kind: &Kind,
    id: &str,
    props: &Properties,
    json: bool,
) -> Result<()> {
    let changes = properties(props)?;
    if changes.is_empty() {
        bail!("nothing to update: give properties with --set NAME=VALUE or --body FILE");
    }
    let body = json!({"properties": changes});
    let saved = client
        .send(reqwest::Method::PATCH, &kind.path_of(id), Some(&body))
        .await?;
    saved_summary(kind, id, &saved, json);
    Ok(())
}

/// A delete that finds nothing is an error (the API answers 204 for it, as APIM does).
async fn delete(client: &Client, kind: &Kind, id: &str) -> Result<()> {
    let path = format!("{}{}", kind.path_of(id), kind.delete_query);
    if !client.delete(&path).await? {
        bail!("there is no {} '{id}': nothing was deleted", kind.noun);
    }
    println!("deleted {} '{id}'", kind.noun);
    Ok(())
}

fn saved_summary(kind: &Kind, id: &str, saved: &Value, json: bool) {
    if json {
        print_json(saved);
    } else {
        println!("{} '{id}' saved", kind.noun);
    }
}

/// A resource as `name: value` lines: its id, then its properties (objects as compact JSON).
fn print_summary(resource: &Value) {
    let id = resource["name"].as_str().unwrap_or_default();
    let props = resource["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let width = props.keys().map(String::len).max().unwrap_or(0).max(2);
    println!("{:width$}  {id}", "id");
    for (name, value) in &props {
        println!("{name:width$}  {}", cell(value));
    }
}

/// A property value in one line.
pub(crate) fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// The properties a create or update sends: those of `--body` (a properties object, or a
/// whole resource with `properties`), then each `--set`, `--set-file` and `--set-env`.
fn properties(p: &Properties) -> Result<Map<String, Value>> {
    let mut out = match &p.body {
        None => Map::new(),
        Some(file) => match read_body(Some(file))? {
            Value::Object(mut o) => match o.remove("properties") {
                Some(Value::Object(props)) => props,
                Some(_) => bail!("the body's 'properties' is not an object"),
                None => o,
            },
            _ => bail!("the body must be a JSON object"),
        },
    };
    for pair in &p.set {
        let (name, text) = split_pair(pair, "--set")?;
        out.insert(name.into(), literal(text));
    }
    for pair in &p.set_file {
        let (name, file) = split_pair(pair, "--set-file")?;
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
        out.insert(name.into(), Value::String(text));
    }
    for pair in &p.set_env {
        let (name, var) = split_pair(pair, "--set-env")?;
        let value =
            env_value(var).ok_or_else(|| anyhow!("the environment variable {var} is not set"))?;
        out.insert(name.into(), Value::String(value));
    }
    Ok(out)
}

fn split_pair<'a>(pair: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    match pair.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name, value)),
        _ => Err(anyhow!("{flag} takes NAME=VALUE; '{pair}' has no name")),
    }
}

/// A `--set` value: JSON when it is a JSON number, boolean, null, array or object, else text
/// (so `secret=true` is a boolean and `displayName=Echo API` is text; quote to force text).
fn literal(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if !v.is_string() || text.trim_start().starts_with('"') => v,
        _ => Value::String(text.to_string()),
    }
}

fn policy_path(scope: &PolicyScope) -> Result<String> {
    let base = match (&scope.api, &scope.operation, &scope.product) {
        (None, None, None) => String::new(),
        (Some(api), None, None) => format!("/apis/{}", seg(api)),
        (Some(api), Some(op), None) => format!("/apis/{}/operations/{}", seg(api), seg(op)),
        (None, None, Some(product)) => format!("/products/{}", seg(product)),
        (None, Some(_), _) => bail!("--operation needs --api, the API the operation is in"),
        (Some(_), _, Some(_)) => bail!("a policy is at one scope: give --api or --product"),
    };
    Ok(format!("{base}/policies/policy"))
}

fn scope_name(scope: &PolicyScope) -> String {
    match (&scope.api, &scope.operation, &scope.product) {
        (Some(api), Some(op), _) => format!("operation '{op}' of API '{api}'"),
        (Some(api), None, _) => format!("API '{api}'"),
        (None, _, Some(product)) => format!("product '{product}'"),
        _ => "the global scope".into(),
    }
}

/// `policy show|set|delete`: the document as XML in and out.
pub(crate) async fn policy(client: &Client, cmd: PolicyCmd, json: bool) -> Result<()> {
    match cmd {
        PolicyCmd::Show(scope) => {
            let p = client.get(&policy_path(&scope)?).await?;
            if json {
                print_json(&p);
            } else {
                println!("{}", p["properties"]["value"].as_str().unwrap_or_default());
            }
        }
        PolicyCmd::Set { scope, file } => {
            let xml = match file.as_str() {
                "-" => std::io::read_to_string(std::io::stdin())
                    .context("cannot read standard input")?,
                f => std::fs::read_to_string(f).with_context(|| format!("cannot read {f}"))?,
            };
            let body = json!({"properties": {"format": "rawxml", "value": xml}});
            let saved = client.put(&policy_path(&scope)?, &body).await?;
            if json {
                print_json(&saved);
            } else {
                println!("policy of {} saved", scope_name(&scope));
            }
        }
        PolicyCmd::Delete(scope) => {
            if !client.delete(&policy_path(&scope)?).await? {
                bail!("{} has no policy: nothing was deleted", scope_name(&scope));
            }
            println!("deleted the policy of {}", scope_name(&scope));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_are_json_literals_or_text() {
        assert_eq!(literal("true"), json!(true));
        assert_eq!(literal("42"), json!(42));
        assert_eq!(literal("[\"a\"]"), json!(["a"]));
        assert_eq!(literal("Echo API"), json!("Echo API"));
        assert_eq!(literal("\"42\""), json!("42"));
        assert_eq!(literal(""), json!(""));
        assert!(split_pair("=x", "--set").is_err());
        assert_eq!(split_pair("a=b=c", "--set").unwrap(), ("a", "b=c"));
    }

    #[test]
    fn policy_scopes() {
        let scope = |api: Option<&str>, operation: Option<&str>, product: Option<&str>| {
            policy_path(&PolicyScope {
                api: api.map(Into::into),
                operation: operation.map(Into::into),
                product: product.map(Into::into),
            })
        };
        assert_eq!(scope(None, None, None).unwrap(), "/policies/policy");
        assert_eq!(
            scope(Some("a"), Some("o"), None).unwrap(),
            "/apis/a/operations/o/policies/policy"
        );
        assert_eq!(
            scope(None, None, Some("p")).unwrap(),
            "/products/p/policies/policy"
        );
        assert!(scope(None, Some("o"), None).is_err());
        assert!(scope(Some("a"), None, Some("p")).is_err());
    }
}
