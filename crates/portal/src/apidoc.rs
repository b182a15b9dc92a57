//! An API's reference as the portal shows it: operations with their parameters, request and
//! response representations and examples (from the stored operations, which an OpenAPI,
//! WSDL, WADL or GraphQL import filled), and the API's definition to download.

use crate::error::PortalError;
use crate::markdown;
use gatehouse_management::export::{self, Document, Source};
use gatehouse_model::{Kind, StoredResource};
use gatehouse_store::ReadTx;
use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Serialize)]
pub struct Param {
    pub name: String,
    /// path, query or header.
    pub place: &'static str,
    pub type_name: String,
    pub required: bool,
    pub description: String,
    pub default: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Representation {
    pub content_type: String,
    pub type_name: String,
    pub example: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResponseView {
    pub status: i64,
    pub description: String,
    pub representations: Vec<Representation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OperationView {
    pub id: String,
    pub name: String,
    pub method: String,
    pub url_template: String,
    /// Sanitised HTML.
    pub description_html: String,
    pub params: Vec<Param>,
    pub request: Vec<Representation>,
    pub responses: Vec<ResponseView>,
}

fn text(v: &Value, name: &str) -> String {
    match v.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn params(op: &Map<String, Value>) -> Vec<Param> {
    let lists: [(&'static str, Option<&Value>); 3] = [
        ("path", op.get("templateParameters")),
        (
            "query",
            op.get("request").and_then(|r| r.get("queryParameters")),
        ),
        ("header", op.get("request").and_then(|r| r.get("headers"))),
    ];
    let mut out = Vec::new();
    for (place, list) in lists {
        for p in list.and_then(Value::as_array).into_iter().flatten() {
            out.push(Param {
                name: text(p, "name"),
                place,
                type_name: text(p, "type"),
                required: place == "path" || p.get("required") == Some(&Value::Bool(true)),
                description: text(p, "description"),
                default: text(p, "defaultValue"),
                values: p
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .map(|v| text(&serde_json::json!({"v": v}), "v"))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    out
}

/// The first example of a representation, pretty-printed when it is JSON.
fn example_of(rep: &Value) -> String {
    let first = rep
        .get("examples")
        .and_then(Value::as_object)
        .and_then(|m| m.values().next())
        .and_then(|e| e.get("value"))
        .or_else(|| rep.get("sample"));
    match first {
        Some(Value::String(s)) => s.clone(),
        Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        None => String::new(),
    }
}

fn representations(v: Option<&Value>) -> Vec<Representation> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|rep| Representation {
            content_type: text(rep, "contentType"),
            type_name: text(rep, "typeName"),
            example: example_of(rep),
        })
        .collect()
}

pub fn operation_view(res: &StoredResource) -> OperationView {
    let op = &res.properties;
    let v = Value::Object(op.clone());
    let responses = op
        .get("responses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| ResponseView {
            status: r.get("statusCode").and_then(Value::as_i64).unwrap_or(200),
            description: text(r, "description"),
            representations: representations(r.get("representations")),
        })
        .collect();
    OperationView {
        id: res.path.rsplit('/').next().unwrap_or_default().to_string(),
        name: text(&v, "displayName"),
        method: text(&v, "method"),
        url_template: text(&v, "urlTemplate"),
        description_html: markdown::to_safe_html(&text(&v, "description"), "markdown"),
        params: params(op),
        request: representations(op.get("request").and_then(|r| r.get("representations"))),
        responses,
    }
}

/// An API's operations, sorted by name.
pub fn operations(r: &ReadTx<'_>, api_id: &str) -> Result<Vec<OperationView>, PortalError> {
    let mut ops: Vec<OperationView> = r
        .children(Kind::Operation, &format!("/apis/{api_id}"))?
        .iter()
        .map(operation_view)
        .collect();
    ops.sort_by_key(|a| a.name.to_lowercase());
    Ok(ops)
}

/// The API's definition to download: its file name, media type and bytes — the WSDL of a SOAP
/// API, the SDL of a GraphQL API, OpenAPI 3 (JSON) otherwise.
pub fn definition(
    r: &ReadTx<'_>,
    api_id: &str,
    gateway: &str,
) -> Result<(String, &'static str, Vec<u8>), PortalError> {
    let api = r
        .get(&format!("/apis/{api_id}"))?
        .ok_or(PortalError::NotFound)?;
    let schemas = r.children(Kind::ApiSchema, &format!("/apis/{api_id}"))?;
    let kept = |id: &str| {
        schemas
            .iter()
            .find(|s| s.path.ends_with(&format!("/schemas/{id}")))
            .and_then(|s| s.properties.get("document")?.get("value")?.as_str())
            .map(str::to_string)
    };
    if let Some(sdl) = kept("graphql") {
        return Ok((
            format!("{api_id}.graphql"),
            "application/graphql",
            sdl.into_bytes(),
        ));
    }
    let ops: Vec<(String, Map<String, Value>)> = r
        .children(Kind::Operation, &format!("/apis/{api_id}"))?
        .into_iter()
        .map(|o| {
            (
                o.path.rsplit('/').next().unwrap_or_default().to_string(),
                o.properties,
            )
        })
        .collect();
    let (wsdl, wadl) = (kept("wsdl"), kept("wadl"));
    let source = Source {
        api: &api.properties,
        operations: &ops,
        wsdl: wsdl.as_deref(),
        wadl: wadl.as_deref(),
        components: schemas
            .iter()
            .find(|s| s.path.ends_with("/schemas/openapi"))
            .and_then(|s| s.properties.get("document")),
        gateway,
    };
    let (doc, ext) = if wsdl.is_some() {
        (Document::Wsdl, "wsdl")
    } else {
        (Document::OpenApiJson, "openapi.json")
    };
    let (value, media) = export::document(doc, &source).map_err(PortalError::internal)?;
    let bytes = match value {
        Value::String(s) => s.into_bytes(),
        other => serde_json::to_vec_pretty(&other).map_err(PortalError::internal)?,
    };
    Ok((format!("{api_id}.{ext}"), media, bytes))
}
