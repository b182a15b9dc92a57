//! ARM deployment templates: APIM's "export as a template", both ways.
//!
//! Export writes one `Microsoft.ApiManagement/service` resource (name, region, tier and
//! publisher as parameters) and every resource below it, flat, each with `dependsOn` its parent
//! and what it references, references written as `resourceId(…)`, so that Azure could deploy
//! it. Import reads such a template (as Gatehouse or Azure's export writes it): parameters
//! (with a parameters file's values), `variables`, and the expressions templates use for names
//! and references — `parameters()`, `variables()`, `concat()`, `resourceId()` — are evaluated;
//! any other expression is an error naming the resource, never a literal string.

use crate::item::{FileError, Item, Skipped, Specification};
use crate::layout;
use crate::read::{Desired, complete};
use gatehouse_model::{Kind, ResourcePath};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

pub const SCHEMA: &str =
    "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#";
pub const API_VERSION: &str = "2024-05-01";
const SERVICE_TYPE: &str = "Microsoft.ApiManagement/service";
const SERVICE: &str = "[parameters('serviceName')]";

/// The instance itself, as the template's parameters describe it.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub name: String,
    pub location: String,
    pub sku: String,
    pub capacity: u32,
    pub publisher_email: String,
    pub publisher_name: String,
}

/// Reference properties: written as `resourceId(…)` and read back as paths.
const REFERENCES: &[&str] = &[
    "apiVersionSetId",
    "loggerId",
    "scope",
    "ownerId",
    "sourceApiId",
];

fn arm_type(kind: Kind) -> String {
    format!("{SERVICE_TYPE}/{}", kind.spec().collections.join("/"))
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `resourceId('…/apis/operations', parameters('serviceName'), 'echo', 'get')` for a path.
fn resource_id(path: &ResourcePath) -> String {
    let ids: Vec<String> = path.parts.iter().map(|(_, id)| quote(id)).collect();
    format!(
        "[resourceId({}, parameters('serviceName'), {})]",
        quote(&arm_type(path.kind)),
        ids.join(", ")
    )
}

fn name_of(path: &ResourcePath) -> String {
    let ids: Vec<String> = path
        .parts
        .iter()
        .map(|(_, id)| quote(&format!("/{id}")))
        .collect();
    format!("[concat(parameters('serviceName'), {})]", ids.join(", "))
}

/// A template of `items` (secrets removed, as an export writes them); `references` are the
/// paths each resource refers to.
pub fn export(
    service: &ServiceInfo,
    items: &[Item],
    references: &BTreeMap<String, Vec<String>>,
) -> Value {
    let exported: std::collections::BTreeSet<&str> = items
        .iter()
        .filter(|i| exportable(i))
        .map(|i| i.path.as_str())
        .collect();
    let mut resources = vec![service_resource()];
    for item in items.iter().filter(|i| exportable(i)) {
        let Ok(path) = ResourcePath::parse_stored(&item.path) else {
            continue;
        };
        let mut depends = vec![format!(
            "[resourceId('{SERVICE_TYPE}', parameters('serviceName'))]"
        )];
        let parent = path.ancestor(path.parts.len() - 1);
        let refs = references.get(&item.path).into_iter().flatten();
        for dep in parent
            .iter()
            .map(ResourcePath::as_string)
            .chain(refs.cloned())
        {
            if exported.contains(dep.as_str())
                && let Ok(p) = ResourcePath::parse_stored(&dep)
            {
                depends.push(resource_id(&p));
            }
        }
        depends.dedup();
        resources.push(json!({
            "type": arm_type(item.kind),
            "apiVersion": API_VERSION,
            "name": name_of(&path),
            "dependsOn": depends,
            "properties": template_properties(item),
        }));
    }
    let mut params = parameters(service);
    for r in resources
        .iter_mut()
        .filter(|r| r["type"] == arm_type(Kind::NamedValue))
    {
        secret_parameter(r, &mut params);
    }
    json!({
        "$schema": SCHEMA,
        "contentVersion": "1.0.0.0",
        "parameters": params,
        "resources": resources,
    })
}

/// A secret named value's value becomes a `securestring` parameter without a default, as
/// Azure's own templates do: whoever deploys the template gives it.
fn secret_parameter(resource: &mut Value, params: &mut Value) {
    let props = &resource["properties"];
    if props.get("secret") != Some(&json!(true))
        || props.get("value").is_some()
        || props.get("keyVault").is_some()
    {
        return;
    }
    let name = resource["name"].as_str().unwrap_or_default().to_string();
    let id = name
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches("')]");
    let param: String = format!("namedValue_{id}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    resource["properties"]["value"] = json!(format!("[parameters('{param}')]"));
    params[&param] = json!({"type": "securestring"});
}

fn exportable(item: &Item) -> bool {
    match item.kind {
        Kind::Certificate => false,
        Kind::Subscription => item.path != "/subscriptions/master",
        Kind::Group => item.properties.get("builtIn") != Some(&json!(true)),
        _ => true,
    }
}

fn parameters(s: &ServiceInfo) -> Value {
    let p =
        |v: Value| json!({"type": if v.is_number() { "int" } else { "string" }, "defaultValue": v});
    json!({
        "serviceName": p(json!(s.name)),
        "location": p(json!(s.location)),
        "skuName": p(json!(s.sku)),
        "skuCapacity": p(json!(s.capacity)),
        "publisherEmail": p(json!(s.publisher_email)),
        "publisherName": p(json!(s.publisher_name)),
    })
}

fn service_resource() -> Value {
    json!({
        "type": SERVICE_TYPE,
        "apiVersion": API_VERSION,
        "name": SERVICE,
        "location": "[parameters('location')]",
        "sku": {"name": "[parameters('skuName')]", "capacity": "[parameters('skuCapacity')]"},
        "properties": {
            "publisherEmail": "[parameters('publisherEmail')]",
            "publisherName": "[parameters('publisherName')]",
        },
    })
}

/// Configuration properties (server-computed ones left out, as the files do), references as
/// `resourceId(…)`.
fn template_properties(item: &Item) -> Value {
    let mut props = crate::write::exported_properties(item);
    if item.kind == Kind::PolicyFragment {
        props.insert("value".into(), item.properties["value"].clone());
        if let Some(f) = item.properties.get("format") {
            props.insert("format".into(), f.clone());
        }
    }
    for field in REFERENCES {
        if let Some(Value::String(r)) = props.get(*field)
            && r.starts_with('/')
            && let Ok(p) = ResourcePath::parse_stored(r)
        {
            props.insert((*field).into(), json!(resource_id(&p)));
        }
    }
    Value::Object(props)
}

/// The values a template's expressions see.
struct Scope {
    parameters: Map<String, Value>,
    variables: Map<String, Value>,
}

/// Reads a template (and a parameters file's `{"parameters": {name: {"value": …}}}`).
pub fn read(template: &Value, parameters: Option<&Value>) -> Result<Desired, Vec<FileError>> {
    let err = |at: &str, m: String| vec![FileError::new(at, m)];
    let resources = template
        .get("resources")
        .and_then(Value::as_array)
        .ok_or_else(|| err("template", "a template needs a 'resources' list".into()))?;
    let scope = scope_of(template, parameters).map_err(|m| err("parameters", m))?;
    let mut desired = Desired::default();
    let mut items: Vec<Item> = Vec::new();
    let mut errors = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        let at = format!("resources[{i}]");
        let read = match resource(r, &scope, &at) {
            Ok(Some(read)) | Err(read) => read,
            Ok(None) => continue,
        };
        match read {
            Read::Item(item) => items.push(*item),
            Read::Spec(both) => {
                let (item, spec) = *both;
                items.push(item);
                desired.specifications.push(spec);
            }
            Read::Skipped(s) => desired.skipped.push(s),
            Read::Error(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for item in &items {
        if let Ok(path) = ResourcePath::parse_stored(&item.path)
            && let Some(entry) = layout::entries_of(item.kind).next()
        {
            let file = layout::file_of(entry, &path);
            let segs: Vec<&str> = file.split('/').collect();
            if segs.len() > 1 {
                desired.folders.insert(segs[0].to_string());
            }
            if segs.len() > 2 {
                desired.folders.insert(format!("{}/{}", segs[0], segs[1]));
            }
        }
    }
    Ok(complete(desired, items, None))
}

enum Read {
    Item(Box<Item>),
    Spec(Box<(Item, Specification)>),
    Skipped(Skipped),
    Error(FileError),
}

fn scope_of(template: &Value, parameters: Option<&Value>) -> Result<Scope, String> {
    let mut values = Map::new();
    let given = parameters
        .and_then(|p| p.get("parameters").or(Some(p)))
        .and_then(Value::as_object);
    for (name, decl) in template
        .get("parameters")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let value = given
            .and_then(|g| g.get(name))
            .and_then(|v| v.get("value"))
            .or_else(|| decl.get("defaultValue"))
            .ok_or_else(|| format!("the parameter '{name}' has no value and no default"))?;
        values.insert(name.clone(), value.clone());
    }
    let mut scope = Scope {
        parameters: values,
        variables: Map::new(),
    };
    for (name, v) in template
        .get("variables")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let value = eval_value(v, &scope).map_err(|e| format!("variables.{name}: {e}"))?;
        scope.variables.insert(name.clone(), value);
    }
    Ok(scope)
}

fn resource(r: &Value, scope: &Scope, at: &str) -> Result<Option<Read>, Read> {
    let error = |m: String| Read::Error(FileError::new(at, m));
    let ty = r
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| error("no 'type'".into()))?;
    let Some(chain) = ty.strip_prefix(SERVICE_TYPE) else {
        return Err(Read::Skipped(Skipped {
            file: at.into(),
            reason: format!("'{ty}' is not an API Management resource"),
        }));
    };
    if chain.is_empty() {
        return Ok(None);
    }
    if r.get("resources")
        .is_some_and(|n| n.as_array().is_some_and(|a| !a.is_empty()))
    {
        return Err(error("nested 'resources' are not supported: list each resource at the top, as an export does".into()));
    }
    let collections: Vec<&str> = chain.trim_start_matches('/').split('/').collect();
    let Some(kind) = Kind::from_collections(&collections) else {
        return Err(Read::Skipped(Skipped {
            file: at.into(),
            reason: format!("'{ty}' is not part of Gatehouse's model"),
        }));
    };
    let name = eval_value(r.get("name").unwrap_or(&Value::Null), scope)
        .map_err(|e| error(format!("name: {e}")))?;
    let name = name
        .as_str()
        .ok_or_else(|| error("the name must be a string".into()))?;
    let ids: Vec<&str> = name.split('/').skip(1).collect();
    if ids.len() != collections.len() {
        return Err(error(format!(
            "the name '{name}' must be the service's name and {} id(s) for '{ty}'",
            collections.len()
        )));
    }
    let spec = kind.spec();
    let parts = spec
        .collections
        .iter()
        .copied()
        .zip(ids.iter().map(|s| (*s).to_string()))
        .collect();
    let path = ResourcePath::new(kind, parts);
    let props = eval_value(r.get("properties").unwrap_or(&json!({})), scope)
        .map_err(|e| error(format!("properties: {e}")))?;
    let Value::Object(mut properties) = props else {
        return Err(error("'properties' must be an object".into()));
    };
    for field in REFERENCES {
        if let Some(Value::String(s)) = properties.get(*field)
            && let Some(rel) = relative(s)
        {
            properties.insert((*field).into(), json!(rel));
        }
    }
    let item = |properties| Item {
        path: path.as_string(),
        kind,
        properties,
        file: at.to_string(),
    };
    if kind == Kind::Api
        && let (Some(format), Some(Value::String(value))) =
            (properties.remove("format"), properties.remove("value"))
    {
        let extension = match format.as_str() {
            Some("openapi" | "openapi+json" | "swagger-json") => "json",
            Some("wsdl") => "wsdl",
            Some("wadl-xml") => "wadl",
            other => {
                return Err(error(format!(
                    "the API import format {other:?} is not supported in a template; use openapi, openapi+json, swagger-json, wsdl or wadl-xml (a document, not a link)"
                )));
            }
        };
        let spec = Specification {
            api: path.as_string(),
            extension: extension.into(),
            text: value,
            file: at.into(),
        };
        return Ok(Some(Read::Spec(Box::new((item(properties), spec)))));
    }
    Ok(Some(Read::Item(Box::new(item(properties)))))
}

/// A full ARM id below a service (`/subscriptions/…/service/x/apis/echo`) as a path relative
/// to the service (`/apis/echo`).
fn relative(id: &str) -> Option<String> {
    let lower = id.to_ascii_lowercase();
    let at = lower.find("/providers/microsoft.apimanagement/service/")?;
    let rest = &id[at + "/providers/microsoft.apimanagement/service/".len()..];
    rest.find('/').map(|i| rest[i..].to_string())
}

fn eval_value(v: &Value, scope: &Scope) -> Result<Value, String> {
    match v {
        Value::String(s) if s.starts_with('[') && !s.starts_with("[[") && s.ends_with(']') => {
            let mut p = Parser {
                text: &s[1..s.len() - 1],
                at: 0,
                scope,
                depth: 0,
            };
            let value = p.expr()?;
            p.skip_ws();
            if p.at != p.text.len() {
                return Err(format!("unexpected text at {} in '{s}'", p.at + 1));
            }
            Ok(value)
        }
        Value::String(s) if s.starts_with("[[") => Ok(json!(s[1..])),
        Value::Array(a) => a
            .iter()
            .map(|x| eval_value(x, scope))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| eval_value(x, scope).map(|x| (k.clone(), x)))
            .collect::<Result<Map<_, _>, _>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

/// The expressions templates use for names and references; nothing else.
struct Parser<'a> {
    text: &'a str,
    at: usize,
    scope: &'a Scope,
    depth: usize,
}

/// How deep calls may nest in one expression (templates nest a handful).
const MAX_DEPTH: usize = 32;

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.text[self.at..].starts_with(' ') {
            self.at += 1;
        }
    }

    fn expr(&mut self) -> Result<Value, String> {
        self.skip_ws();
        let rest = &self.text[self.at..];
        if rest.starts_with('\'') {
            return self.string();
        }
        let end = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        let name = &rest[..end];
        self.at += end;
        if name.is_empty() {
            return Err(format!("expected a value at {}", self.at + 1));
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("calls nest deeper than {MAX_DEPTH}"));
        }
        let args = self.args()?;
        self.depth -= 1;
        match (name, args.as_slice()) {
            ("parameters", [Value::String(n)]) => self
                .scope
                .parameters
                .get(n)
                .cloned()
                .ok_or_else(|| format!("no parameter '{n}'")),
            ("variables", [Value::String(n)]) => self
                .scope
                .variables
                .get(n)
                .cloned()
                .ok_or_else(|| format!("no variable '{n}'")),
            ("concat", parts) => Ok(json!(
                parts
                    .iter()
                    .map(|p| match p {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<String>()
            )),
            ("resourceId", [Value::String(ty), rest @ ..]) => resource_id_path(ty, rest),
            _ => Err(format!(
                "the template function '{name}' is not supported here (parameters, variables, concat and resourceId are)"
            )),
        }
    }

    fn args(&mut self) -> Result<Vec<Value>, String> {
        self.skip_ws();
        if !self.text[self.at..].starts_with('(') {
            return Err(format!("expected '(' at {}", self.at + 1));
        }
        self.at += 1;
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            if self.text[self.at..].starts_with(')') {
                self.at += 1;
                return Ok(out);
            }
            if !out.is_empty() {
                if !self.text[self.at..].starts_with(',') {
                    return Err(format!("expected ',' or ')' at {}", self.at + 1));
                }
                self.at += 1;
            }
            if out.len() > 64 {
                return Err("too many arguments".into());
            }
            out.push(self.expr()?);
        }
    }

    fn string(&mut self) -> Result<Value, String> {
        let mut out = String::new();
        let mut chars = self.text[self.at + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if self.text[self.at + 1 + i + 1..].starts_with('\'') {
                    out.push('\'');
                    chars.next();
                    continue;
                }
                self.at += i + 2;
                return Ok(json!(out));
            }
            out.push(c);
        }
        Err("a string is not closed".into())
    }
}

/// `resourceId('Microsoft.ApiManagement/service/apis', service, 'echo')` → `/apis/echo`.
fn resource_id_path(ty: &str, args: &[Value]) -> Result<Value, String> {
    let chain = ty
        .strip_prefix(SERVICE_TYPE)
        .map(|c| c.trim_start_matches('/'))
        .ok_or_else(|| format!("resourceId of '{ty}' is not an API Management resource"))?;
    let ids: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect();
    if chain.is_empty() {
        return Ok(json!("/"));
    }
    let collections: Vec<&str> = chain.split('/').collect();
    if collections.len() != ids.len() {
        return Err(format!(
            "resourceId('{ty}', …) needs the service's name and {} id(s)",
            collections.len()
        ));
    }
    Ok(json!(
        collections
            .iter()
            .zip(&ids)
            .map(|(c, id)| format!("/{c}/{id}"))
            .collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(path: &str, kind: Kind, props: Value) -> Item {
        Item::from_json(path, kind, props)
    }

    #[test]
    fn a_template_reads_back_as_what_it_was_written_from() {
        let service = ServiceInfo {
            name: "contoso".into(),
            location: "westeurope".into(),
            sku: "Developer".into(),
            capacity: 1,
            publisher_email: "a@b.c".into(),
            publisher_name: "A".into(),
        };
        let items = vec![
            item(
                "/apiVersionSets/vs",
                Kind::ApiVersionSet,
                json!({"displayName": "V's", "versioningScheme": "Segment"}),
            ),
            item(
                "/apis/echo",
                Kind::Api,
                json!({"displayName": "Echo", "path": "echo", "apiVersionSetId": "/apiVersionSets/vs"}),
            ),
            item(
                "/apis/echo/operations/get",
                Kind::Operation,
                json!({"displayName": "get", "method": "GET", "urlTemplate": "/"}),
            ),
            item(
                "/apis/echo/policies/policy",
                Kind::ApiPolicy,
                json!({"value": "<policies/>", "format": "xml"}),
            ),
            item(
                "/subscriptions/master",
                Kind::Subscription,
                json!({"displayName": "all", "scope": "/apis"}),
            ),
        ];
        let refs = BTreeMap::from([(
            "/apis/echo".to_string(),
            vec!["/apiVersionSets/vs".to_string()],
        )]);
        let t = export(&service, &items, &refs);
        let resources = t["resources"].as_array().unwrap();
        assert_eq!(resources.len(), 5);
        let secret = export(
            &service,
            &[item(
                "/namedValues/db-pw",
                Kind::NamedValue,
                json!({"displayName": "pw", "secret": true}),
            )],
            &refs,
        );
        assert_eq!(
            secret["resources"][1]["properties"]["value"],
            "[parameters('namedValue_db_pw')]"
        );
        assert_eq!(
            secret["parameters"]["namedValue_db_pw"]["type"],
            "securestring"
        );
        let e = read(&secret, None).unwrap_err();
        assert!(
            e[0].to_string().contains("'namedValue_db_pw' has no value"),
            "{}",
            e[0]
        );
        assert_eq!(
            resources[2]["dependsOn"][1],
            "[resourceId('Microsoft.ApiManagement/service/apiVersionSets', parameters('serviceName'), 'vs')]"
        );
        assert_eq!(
            resources[2]["properties"]["apiVersionSetId"],
            resources[2]["dependsOn"][1]
        );
        assert_eq!(
            resources[3]["name"],
            "[concat(parameters('serviceName'), '/echo', '/get')]"
        );
        let params = json!({"parameters": {"serviceName": {"value": "other"}}});
        let back = read(&t, Some(&params)).unwrap();
        let paths: Vec<&str> = back.items.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/apiVersionSets/vs",
                "/apis/echo",
                "/apis/echo/operations/get",
                "/apis/echo/policies/policy"
            ]
        );
        assert_eq!(
            back.items[1].properties["apiVersionSetId"],
            "/apiVersionSets/vs"
        );
        assert_eq!(back.items[0].properties["displayName"], "V's");
        assert!(back.folders.contains("apis/echo"));
    }

    #[test]
    fn azure_exports_and_unsupported_expressions() {
        let t = json!({
            "parameters": {"service_apim_name": {"type": "String", "defaultValue": "apim"}},
            "variables": {"prefix": "[concat('x', '-')]"},
            "resources": [
                {"type": "Microsoft.ApiManagement/service/namedValues", "name": "[concat(parameters('service_apim_name'), '/', variables('prefix'), 'nv')]", "properties": {"displayName": "nv", "value": "v"}},
                {"type": "Microsoft.ApiManagement/service/diagnostics", "name": "apim/applicationinsights", "properties": {"loggerId": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ApiManagement/service/apim/loggers/ai"}},
                {"type": "Microsoft.Insights/components", "name": "ai"}
            ]
        });
        let d = read(&t, None).unwrap();
        assert_eq!(d.items[0].path, "/namedValues/x-nv");
        assert_eq!(d.items[1].properties["loggerId"], "/loggers/ai");
        assert_eq!(d.skipped.len(), 1);
        let bad = json!({"resources": [{"type": "Microsoft.ApiManagement/service/tags", "name": "[format('{0}/t', 'a')]", "properties": {}}]});
        let e = read(&bad, None).unwrap_err();
        assert!(
            e[0].to_string()
                .starts_with("resources[0]: name: the template function 'format'"),
            "{}",
            e[0]
        );
    }
}
