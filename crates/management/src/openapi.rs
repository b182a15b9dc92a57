//! OpenAPI import (OpenAPI 3 and Swagger 2, JSON or YAML) and export (OpenAPI 3 JSON/YAML).
//!
//! Import is all-or-nothing: the document is parsed and turned into the API's properties and
//! its operations before anything is written; a broken document is an error naming the problem.

use crate::openapi_schemas::{Schemas, schema_reference, type_name};
use crate::rules::template_parameters;
use openapiv3::{OpenAPI, Parameter, ReferenceOr};
use serde_json::{Map, Value, json};

/// What an OpenAPI document turns into.
#[derive(Debug)]
pub struct ImportedApi {
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub service_url: Option<String>,
    pub operations: Vec<(String, Map<String, Value>)>,
    /// The API's `type` the description implies (`soap`, `graphql`), if not plain HTTP.
    pub api_type: Option<&'static str>,
    /// The description kept as the API's schema: its id and properties.
    pub schema: Option<(String, Map<String, Value>)>,
}

/// Parses JSON or YAML into a JSON value.
fn parse_text(text: &str) -> Result<Value, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(text)
            .map_err(|e| format!("the OpenAPI document is not valid JSON: {e}"));
    }
    serde_norway::from_str::<Value>(text)
        .map_err(|e| format!("the OpenAPI document is not valid YAML or JSON: {e}"))
}

/// Rewrites a Swagger 2.0 document into the OpenAPI 3.0 shape (the parts Gatehouse uses).
fn swagger2_to_openapi3(mut doc: Value) -> Result<Value, String> {
    let obj = doc.as_object_mut().ok_or("the document is not an object")?;
    let host = obj
        .get("host")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let base = obj
        .get("basePath")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let scheme = obj
        .get("schemes")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .find(|s| *s == "https")
                .or_else(|| a.first().and_then(Value::as_str))
        })
        .unwrap_or("https")
        .to_string();
    let mut produces = crate::rules::string_list(obj.get("produces"));
    if produces.is_empty() {
        produces.push("application/json".to_string());
    }
    let mut consumes = crate::rules::string_list(obj.get("consumes"));
    if consumes.is_empty() {
        consumes.push("application/json".to_string());
    }
    let mut out = Map::new();
    out.insert("openapi".into(), json!("3.0.0"));
    if let Some(definitions) = obj.get("definitions").filter(|d| d.is_object()) {
        out.insert("components".into(), json!({"schemas": definitions}));
    }
    out.insert(
        "info".into(),
        obj.get("info")
            .cloned()
            .unwrap_or(json!({"title": "", "version": ""})),
    );
    if !host.is_empty() {
        out.insert(
            "servers".into(),
            json!([{"url": format!("{scheme}://{host}{base}")}]),
        );
    }
    let mut paths = Map::new();
    if let Some(p) = obj.get("paths").and_then(Value::as_object) {
        for (path, item) in p {
            let Some(item) = item.as_object() else {
                return Err(format!("paths.{path} must be an object"));
            };
            let mut new_item = Map::new();
            for (method, op) in item {
                if method == "parameters" {
                    new_item.insert(method.clone(), convert_params(op));
                    continue;
                }
                let Some(op) = op.as_object() else {
                    return Err(format!("paths.{path}.{method} must be an object"));
                };
                let mut new_op = op.clone();
                if let Some(params) = op.get("parameters") {
                    new_op.insert("parameters".into(), convert_params(params));
                    let own = crate::rules::string_list(op.get("consumes"));
                    let types = if own.is_empty() { &consumes } else { &own };
                    if let Some(body) = body_of(params, types) {
                        new_op.insert("requestBody".into(), body);
                    }
                }
                let mut responses = Map::new();
                if let Some(r) = op.get("responses").and_then(Value::as_object) {
                    for (code, resp) in r {
                        let mut nr = Map::new();
                        nr.insert(
                            "description".into(),
                            resp.get("description").cloned().unwrap_or(json!("")),
                        );
                        let mut content = Map::new();
                        if let Some(examples) = resp.get("examples").and_then(Value::as_object) {
                            for (mime, ex) in examples {
                                content.insert(mime.clone(), json!({"example": ex, "schema": resp.get("schema").cloned().unwrap_or(json!({}))}));
                            }
                        } else if let Some(schema) = resp.get("schema") {
                            content.insert(produces[0].clone(), json!({"schema": schema}));
                        }
                        if !content.is_empty() {
                            nr.insert("content".into(), Value::Object(content));
                        }
                        responses.insert(code.clone(), Value::Object(nr));
                    }
                }
                new_op.insert("responses".into(), Value::Object(responses));
                new_op.remove("produces");
                new_op.remove("consumes");
                new_op.remove("schemes");
                new_item.insert(method.clone(), Value::Object(new_op));
            }
            paths.insert(path.clone(), Value::Object(new_item));
        }
    }
    out.insert("paths".into(), Value::Object(paths));
    let text = serde_json::to_string(&Value::Object(out)).expect("serialises");
    let text = text.replace("#/definitions/", "#/components/schemas/");
    Ok(serde_json::from_str(&text).expect("round trip"))
}

/// Rewrites an OpenAPI 3.1 document (JSON Schema 2020-12) into the 3.0 shape the parser reads:
/// `type: [t, "null"]` → `type: t, nullable: true`; numeric `exclusiveMinimum`/`Maximum` →
/// bounds; `const` → a one-value `enum`; a schema's `examples` list → `example`; webhooks and
/// the dialect dropped (they describe no operation of the API).
fn openapi31_to_30(mut doc: Value) -> Value {
    if let Value::Object(m) = &mut doc {
        m.insert("openapi".into(), json!("3.0.3"));
        m.remove("webhooks");
        m.remove("jsonSchemaDialect");
    }
    downgrade_schemas(&mut doc);
    doc
}

fn downgrade_schemas(v: &mut Value) {
    match v {
        Value::Array(a) => a.iter_mut().for_each(downgrade_schemas),
        Value::Object(m) => {
            if let Some(Value::Array(types)) = m.get("type").cloned() {
                let named: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
                if named.len() < types.len() {
                    m.insert("nullable".into(), json!(true));
                }
                match named.first() {
                    Some(t) => m.insert("type".into(), (*t).clone()),
                    None => m.remove("type"),
                };
            }
            for (bound, plain) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                if let Some(n) = m.get(bound).filter(|n| n.is_number()).cloned() {
                    m.insert(plain.into(), n);
                    m.insert(bound.into(), json!(true));
                }
            }
            if let Some(c) = m.remove("const") {
                m.insert("enum".into(), json!([c]));
            }
            if let Some(Value::Array(examples)) = m.get("examples").cloned() {
                m.remove("examples");
                if let Some(first) = examples.into_iter().next() {
                    m.insert("example".into(), first);
                }
            }
            m.values_mut().for_each(downgrade_schemas);
        }
        _ => {}
    }
}

fn convert_params(params: &Value) -> Value {
    let Some(arr) = params.as_array() else {
        return params.clone();
    };
    Value::Array(
        arr.iter()
            .filter(|p| {
                p.get("in").and_then(Value::as_str) != Some("body")
                    && p.get("in").and_then(Value::as_str) != Some("formData")
            })
            .map(|p| {
                let mut p = p.as_object().cloned().unwrap_or_default();
                if !p.contains_key("schema") && !p.contains_key("$ref") {
                    let mut schema = Map::new();
                    for k in ["type", "format", "enum", "items", "default"] {
                        if let Some(v) = p.remove(k) {
                            schema.insert(k.into(), v);
                        }
                    }
                    if schema.is_empty() {
                        schema.insert("type".into(), json!("string"));
                    }
                    p.insert("schema".into(), Value::Object(schema));
                }
                Value::Object(p)
            })
            .collect(),
    )
}

/// A Swagger 2 `in: body` parameter as an OpenAPI 3 request body.
fn body_of(params: &Value, consumes: &[String]) -> Option<Value> {
    let body = params
        .as_array()?
        .iter()
        .find(|p| p.get("in").and_then(Value::as_str) == Some("body"))?;
    let schema = body.get("schema").cloned().unwrap_or(json!({}));
    let content: Map<String, Value> = consumes
        .iter()
        .map(|ct| (ct.clone(), json!({"schema": schema})))
        .collect();
    Some(
        json!({"content": content, "required": body.get("required").cloned().unwrap_or(json!(false))}),
    )
}

/// An operation id from a name a document gives: letters, digits, `-`, `_` and `.`, at most
/// 80 characters.
pub(crate) fn sanitize_id(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-').to_string();
    let s: String = s.chars().take(80).collect();
    if s.is_empty() { "operation".into() } else { s }
}

fn resolve_param<'a>(
    doc: &'a OpenAPI,
    p: &'a ReferenceOr<Parameter>,
) -> Result<&'a Parameter, String> {
    match p {
        ReferenceOr::Item(p) => Ok(p),
        ReferenceOr::Reference { reference } => {
            let name = reference
                .strip_prefix("#/components/parameters/")
                .ok_or_else(|| format!("unsupported parameter reference '{reference}'"))?;
            match doc.components.as_ref().and_then(|c| c.parameters.get(name)) {
                Some(ReferenceOr::Item(p)) => Ok(p),
                _ => Err(format!(
                    "the parameter reference '{reference}' does not resolve"
                )),
            }
        }
    }
}

fn schema_type(p: &Parameter) -> String {
    let data = p.parameter_data_ref();
    if let openapiv3::ParameterSchemaOrContent::Schema(ReferenceOr::Item(s)) = &data.format {
        let v = serde_json::to_value(s).unwrap_or(Value::Null);
        if let Some(t) = v.get("type").and_then(Value::as_str) {
            return t.to_string();
        }
    }
    "string".into()
}

fn param_json(p: &Parameter) -> Value {
    let d = p.parameter_data_ref();
    let mut o =
        json!({"name": d.name, "type": schema_type(p), "required": d.required, "values": []});
    if let openapiv3::ParameterSchemaOrContent::Schema(ReferenceOr::Item(s)) = &d.format {
        let schema = serde_json::to_value(s).unwrap_or(Value::Null);
        if let Some(values) = schema.get("enum").filter(|v| v.is_array()) {
            o["values"] = values.clone();
        }
        if let Some(default) = schema.get("default") {
            o["defaultValue"] = default.clone();
        }
    }
    if let Some(desc) = &d.description {
        o["description"] = json!(desc);
    }
    o
}

/// Parses a document and maps it to an API and its operations.
pub fn import(text: &str) -> Result<ImportedApi, String> {
    let raw = parse_text(text)?;
    let raw = if raw
        .get("swagger")
        .and_then(Value::as_str)
        .is_some_and(|v| v.starts_with('2'))
    {
        swagger2_to_openapi3(raw)?
    } else if raw
        .get("openapi")
        .and_then(Value::as_str)
        .is_some_and(|v| v.starts_with("3.1"))
    {
        openapi31_to_30(raw)
    } else if raw
        .get("openapi")
        .and_then(Value::as_str)
        .is_some_and(|v| v.starts_with('3'))
    {
        raw
    } else {
        return Err(
            "the document is neither OpenAPI 3 ('openapi: 3.x') nor Swagger 2 ('swagger: \"2.0\"')"
                .into(),
        );
    };
    let doc: OpenAPI = serde_path_to_error::deserialize(raw.clone()).map_err(|e| {
        format!(
            "the OpenAPI document is invalid at '{}': {}",
            e.path(),
            e.inner()
        )
    })?;
    let mut operations: Vec<(String, Map<String, Value>)> = Vec::new();
    let mut schemas = Schemas::of_document(&raw);
    for (path, item) in doc.paths.iter() {
        let ReferenceOr::Item(item) = item else {
            return Err(format!(
                "path item references are not supported (at '{path}')"
            ));
        };
        if !path.starts_with('/') {
            return Err(format!("the path '{path}' must start with '/'"));
        }
        template_parameters(path).map_err(|e| format!("the path '{path}' is invalid: {e}"))?;
        for (method, op) in item.iter() {
            let method = method.to_ascii_uppercase();
            let mut template_params = Vec::new();
            let mut query_params = Vec::new();
            let mut headers = Vec::new();
            for p in item.parameters.iter().chain(op.parameters.iter()) {
                let p = resolve_param(&doc, p)?;
                match p {
                    Parameter::Path { .. } => template_params.push(param_json(p)),
                    Parameter::Query { .. } => query_params.push(param_json(p)),
                    Parameter::Header { .. } => headers.push(param_json(p)),
                    Parameter::Cookie { .. } => {}
                }
            }
            let used = template_parameters(path).unwrap_or_default();
            for name in &used {
                if !template_params.iter().any(|p| p["name"] == json!(name)) {
                    template_params.push(
                        json!({"name": name, "type": "string", "required": true, "values": []}),
                    );
                }
            }
            template_params.retain(|p| used.iter().any(|u| p["name"] == json!(u)));
            let base_name = op
                .operation_id
                .as_deref()
                .map(sanitize_id)
                .unwrap_or_else(|| {
                    sanitize_id(&format!(
                        "{}{}",
                        method.to_lowercase(),
                        path.replace('/', "-")
                    ))
                });
            let mut name = base_name.clone();
            let mut n = 2;
            while operations.iter().any(|(id, _)| id == &name) {
                name = format!("{}-{n}", base_name.chars().take(75).collect::<String>());
                n += 1;
            }
            let responses = responses_of(&op.responses, &mut schemas, &name);
            let request_reps = request_representations(&doc, op, &mut schemas, &name)?;
            let display = op
                .summary
                .clone()
                .or_else(|| op.operation_id.clone())
                .unwrap_or_else(|| format!("{method} {path}"));
            let display: String = display.chars().take(300).collect();
            let mut props = Map::new();
            props.insert("displayName".into(), json!(display));
            props.insert("method".into(), json!(method));
            props.insert("urlTemplate".into(), json!(path));
            props.insert("templateParameters".into(), json!(template_params));
            if let Some(d) = &op.description {
                props.insert(
                    "description".into(),
                    json!(d.chars().take(1000).collect::<String>()),
                );
            }
            props.insert(
                "request".into(),
                json!({"queryParameters": query_params, "headers": headers, "representations": request_reps}),
            );
            props.insert("responses".into(), json!(responses));
            operations.push((name, props));
        }
    }
    Ok(ImportedApi {
        display_name: Some(doc.info.title.clone()).filter(|t| !t.is_empty()),
        description: doc.info.description.clone(),
        service_url: doc.servers.first().map(|s| s.url.clone()),
        operations,
        api_type: None,
        schema: schemas.kept(),
    })
}

/// An operation's responses with their representations (content type, type, examples).
fn responses_of(responses: &openapiv3::Responses, schemas: &mut Schemas, op: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (code, resp) in &responses.responses {
        let ReferenceOr::Item(resp) = resp else {
            continue;
        };
        let status = match code {
            openapiv3::StatusCode::Code(c) => *c,
            openapiv3::StatusCode::Range(r) => *r * 100,
        };
        let suffix = format!("Response{status}");
        let reps: Vec<Value> = resp
            .content
            .iter()
            .map(|(ct, media)| {
                let mut rep = schemas.representation(ct, media, &type_name(op, &suffix));
                if let Some(examples) = examples_of(media) {
                    rep.insert("examples".into(), examples);
                }
                Value::Object(rep)
            })
            .collect();
        out.push(json!({"statusCode": status, "description": resp.description, "representations": reps, "headers": []}));
    }
    out
}

fn examples_of(media: &openapiv3::MediaType) -> Option<Value> {
    let mut examples = Map::new();
    if let Some(ex) = &media.example {
        examples.insert("default".into(), json!({"value": ex}));
    }
    for (name, ex) in &media.examples {
        if let ReferenceOr::Item(ex) = ex
            && let Some(v) = &ex.value
        {
            let mut e = json!({"value": v});
            if let Some(summary) = &ex.summary {
                e["summary"] = json!(summary);
            }
            examples.insert(name.clone(), e);
        }
    }
    (!examples.is_empty()).then_some(Value::Object(examples))
}

/// The representations of an operation's request body (a reference into
/// `components.requestBodies` is followed).
fn request_representations(
    doc: &OpenAPI,
    op: &openapiv3::Operation,
    schemas: &mut Schemas,
    name: &str,
) -> Result<Vec<Value>, String> {
    let body = match &op.request_body {
        None => return Ok(Vec::new()),
        Some(ReferenceOr::Item(body)) => body,
        Some(ReferenceOr::Reference { reference }) => {
            let key = reference
                .strip_prefix("#/components/requestBodies/")
                .ok_or_else(|| {
                    format!("the request body reference '{reference}' is not supported")
                })?;
            match doc
                .components
                .as_ref()
                .and_then(|c| c.request_bodies.get(key))
            {
                Some(ReferenceOr::Item(body)) => body,
                _ => {
                    return Err(format!(
                        "the request body reference '{reference}' does not resolve"
                    ));
                }
            }
        }
    };
    let suggested = type_name(name, "Request");
    Ok(body
        .content
        .iter()
        .map(|(ct, media)| {
            let mut rep = schemas.representation(ct, media, &suggested);
            if let Some(examples) = examples_of(media) {
                rep.insert("examples".into(), examples);
            }
            Value::Object(rep)
        })
        .collect())
}

/// An operation's request representations as an OpenAPI request body.
fn request_body_out(request: Option<&Value>) -> Option<Value> {
    let reps = request?.get("representations")?.as_array()?;
    let content: Map<String, Value> = reps
        .iter()
        .filter_map(|rep| {
            let ct = rep.get("contentType")?.as_str()?;
            let mut media = Map::new();
            if let Some(schema) = schema_reference(rep) {
                media.insert("schema".into(), schema);
            }
            Some((ct.to_string(), Value::Object(media)))
        })
        .collect();
    (!content.is_empty()).then(|| json!({"content": content}))
}

/// An operation's parameter as OpenAPI writes it: what the import reads back unchanged
/// (description, allowed values as `enum`, the default).
fn parameter_out(place: &str, p: &Value) -> Value {
    let required = place == "path" || p.get("required") == Some(&json!(true));
    let mut schema = json!({"type": p.get("type").cloned().unwrap_or(json!("string"))});
    if let Some(values) = p
        .get("values")
        .and_then(Value::as_array)
        .filter(|v| !v.is_empty())
    {
        schema["enum"] = Value::Array(values.clone());
    }
    if let Some(d) = p.get("defaultValue").filter(|d| !d.is_null()) {
        schema["default"] = d.clone();
    }
    let mut out = json!({"name": p["name"], "in": place, "required": required, "schema": schema});
    if let Some(d) = p.get("description").filter(|d| !d.is_null()) {
        out["description"] = d.clone();
    }
    out
}

/// An OpenAPI 3 document of an API and its operations.
/// `kept` is the document of the API's kept `openapi` schema (`{"components": …}`), whose
/// types the representations name.
pub fn export(
    api: &Map<String, Value>,
    gateway_url: &str,
    operations: &[(String, Map<String, Value>)],
    kept: Option<&Value>,
) -> Value {
    let path = api.get("path").and_then(Value::as_str).unwrap_or("");
    let mut paths = Map::new();
    for (id, op) in operations {
        let template = op.get("urlTemplate").and_then(Value::as_str).unwrap_or("/");
        let url_path = template.split('?').next().unwrap_or(template);
        let method = op
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("GET")
            .to_lowercase();
        let mut params = Vec::new();
        let request = op.get("request");
        let lists = [
            ("path", op.get("templateParameters")),
            ("query", request.and_then(|r| r.get("queryParameters"))),
            ("header", request.and_then(|r| r.get("headers"))),
        ];
        for (place, list) in lists {
            for p in list.and_then(Value::as_array).into_iter().flatten() {
                params.push(parameter_out(place, p));
            }
        }
        let mut responses = Map::new();
        for r in op
            .get("responses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let code = r
                .get("statusCode")
                .map(|c| c.to_string())
                .unwrap_or_else(|| "200".into());
            let mut content = Map::new();
            for rep in r
                .get("representations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let ct = rep
                    .get("contentType")
                    .and_then(Value::as_str)
                    .unwrap_or("application/json");
                let mut media = Map::new();
                if let Some(ex) = rep.get("examples").and_then(Value::as_object) {
                    let exs: Map<String, Value> = ex
                        .iter()
                        .map(|(k, v)| {
                            let mut ex =
                                json!({"value": v.get("value").cloned().unwrap_or(Value::Null)});
                            if let Some(s) = v.get("summary").filter(|s| !s.is_null()) {
                                ex["summary"] = s.clone();
                            }
                            (k.clone(), ex)
                        })
                        .collect();
                    media.insert("examples".into(), Value::Object(exs));
                }
                if let Some(schema) = schema_reference(rep) {
                    media.insert("schema".into(), schema);
                }
                content.insert(ct.to_string(), Value::Object(media));
            }
            let mut resp =
                json!({"description": r.get("description").cloned().unwrap_or(json!(""))});
            if !content.is_empty() {
                resp["content"] = Value::Object(content);
            }
            responses.insert(code, resp);
        }
        if responses.is_empty() {
            responses.insert("200".into(), json!({"description": ""}));
        }
        let mut o = json!({
            "operationId": id,
            "summary": op.get("displayName").cloned().unwrap_or(json!(id)),
            "parameters": params,
            "responses": responses,
        });
        if let Some(d) = op.get("description") {
            o["description"] = d.clone();
        }
        if let Some(body) = request_body_out(request) {
            o["requestBody"] = body;
        }
        let entry = paths
            .entry(url_path.to_string())
            .or_insert_with(|| json!({}));
        entry[method] = o;
    }
    let server = format!("{}/{}", gateway_url.trim_end_matches('/'), path);
    let mut doc = json!({
        "openapi": "3.0.1",
        "info": {
            "title": api.get("displayName").cloned().unwrap_or(json!("")),
            "description": api.get("description").cloned().unwrap_or(json!("")),
            "version": api.get("apiVersion").and_then(Value::as_str).unwrap_or("1.0"),
        },
        "servers": [{"url": server.trim_end_matches('/')}],
        "paths": paths,
    });
    if let Some(components) = kept.and_then(|k| k.get("components")) {
        doc["components"] = components.clone();
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    const PETSTORE3: &str = r#"
openapi: 3.0.0
info: {title: Petstore, version: "1.0"}
servers: [{url: "http://petstore.example.com/v1"}]
paths:
  /pets:
    get:
      operationId: listPets
      summary: List all pets
      parameters:
        - {name: limit, in: query, required: false, schema: {type: integer}}
      responses:
        "200":
          description: A list
          content:
            application/json:
              example: [{"id": 1, "name": "rex"}]
  /pets/{petId}:
    get:
      operationId: showPetById
      parameters:
        - {name: petId, in: path, required: true, schema: {type: string}}
      responses:
        "200": {description: ok}
    delete:
      responses:
        "204": {description: gone}
"#;

    #[test]
    fn imports_openapi3_yaml() {
        let api = import(PETSTORE3).unwrap();
        assert_eq!(api.display_name.as_deref(), Some("Petstore"));
        assert_eq!(
            api.service_url.as_deref(),
            Some("http://petstore.example.com/v1")
        );
        assert_eq!(api.operations.len(), 3);
        let (id, list) = &api.operations[0];
        assert_eq!(id, "listPets");
        assert_eq!(
            list["responses"][0]["representations"][0]["examples"]["default"]["value"][0]["name"],
            "rex"
        );
        let (id, del) = &api.operations[2];
        assert_eq!(id, "delete-pets-petId");
        assert_eq!(del["templateParameters"][0]["name"], "petId");
    }

    #[test]
    fn imports_swagger2_json() {
        let doc = r#"{"swagger":"2.0","info":{"title":"S","version":"1"},"host":"api.example.com","basePath":"/v2","schemes":["https"],
          "paths":{"/items/{id}":{"get":{"operationId":"getItem","parameters":[{"name":"id","in":"path","required":true,"type":"string"}],
          "responses":{"200":{"description":"ok","examples":{"application/json":{"id":"a"}}}}}}}}"#;
        let api = import(doc).unwrap();
        assert_eq!(
            api.service_url.as_deref(),
            Some("https://api.example.com/v2")
        );
        assert_eq!(
            api.operations[0].1["responses"][0]["representations"][0]["examples"]["default"]["value"]
                ["id"],
            "a"
        );
    }

    /// Types travel: Swagger 2's `definitions` and body parameters, OpenAPI 3's components and
    /// inline schemas, into the kept schema and back out as references.
    #[test]
    fn body_types_are_kept_and_exported() {
        let doc = r##"{"swagger":"2.0","info":{"title":"S","version":"1"},"consumes":["application/json"],
          "definitions":{"Item":{"type":"object","required":["id"],"properties":{"id":{"type":"string"}}}},
          "paths":{"/items":{"post":{"operationId":"add-item","parameters":[{"name":"body","in":"body","schema":{"$ref":"#/definitions/Item"}}],
          "responses":{"201":{"description":"ok","schema":{"type":"object","properties":{"ok":{"type":"boolean"}}}}}}}}}"##;
        let api = import(doc).unwrap();
        let op = &api.operations[0].1;
        assert_eq!(op["request"]["representations"][0]["typeName"], "Item");
        assert_eq!(
            op["responses"][0]["representations"][0]["typeName"],
            "AddItemResponse201"
        );
        let (id, schema) = api.schema.unwrap();
        assert_eq!(id, "openapi");
        let types = &schema["document"]["components"]["schemas"];
        assert!(types["Item"].is_object() && types["AddItemResponse201"].is_object());
        let out = export(&Map::new(), "", &api.operations, schema.get("document"));
        let post = &out["paths"]["/items"]["post"];
        assert_eq!(
            post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Item"
        );
        assert_eq!(out["components"]["schemas"]["Item"]["required"][0], "id");
        let again = import(&out.to_string()).unwrap();
        assert_eq!(again.operations[0].1["request"], op["request"]);
    }

    use proptest::prelude::*;

    /// JSON trees made of OpenAPI's own words, so the fuzzer reaches deep into the importer.
    fn openapi_like() -> impl Strategy<Value = Value> {
        let words = prop::sample::select(vec![
            "swagger",
            "openapi",
            "info",
            "title",
            "version",
            "paths",
            "/a",
            "/a/{id}",
            "/{x}/b",
            "get",
            "post",
            "parameters",
            "in",
            "path",
            "query",
            "header",
            "name",
            "id",
            "required",
            "schema",
            "type",
            "responses",
            "200",
            "default",
            "description",
            "content",
            "application/json",
            "example",
            "examples",
            "value",
            "produces",
            "servers",
            "url",
            "host",
            "basePath",
            "schemes",
            "operationId",
            "summary",
            "$ref",
            "#/components/parameters/p",
            "components",
            "2.0",
            "3.0.0",
            "3.1.0",
            "",
        ]);
        let leaf = prop_oneof![
            words.clone().prop_map(|w| Value::String(w.to_string())),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            Just(Value::Null),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((words.clone(), inner), 0..6).prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_importer_never_panics(doc in openapi_like(), version in prop::sample::select(vec!["swagger", "openapi"])) {
            let mut doc = doc;
            if let Value::Object(m) = &mut doc {
                m.insert(version.to_string(), json!(if version == "swagger" { "2.0" } else { "3.0.0" }));
            }
            let _ = import(&doc.to_string());
        }
    }

    #[test]
    fn an_empty_produces_list_does_not_panic() {
        let doc = r#"{"swagger":"2.0","info":{"title":"S","version":"1"},"produces":[],
          "paths":{"/a":{"get":{"responses":{"200":{"description":"ok","schema":{"type":"string"}}}}}}}"#;
        let api = import(doc).unwrap();
        assert_eq!(
            api.operations[0].1["responses"][0]["representations"][0]["contentType"],
            "application/json"
        );
    }

    #[test]
    fn broken_documents_name_the_problem() {
        assert!(import("{not json").unwrap_err().contains("not valid JSON"));
        assert!(
            import("openapi: 3.0.0\ninfo: {title: x}\npaths: {}")
                .unwrap_err()
                .contains("info")
        );
        assert!(
            import("hello: world")
                .unwrap_err()
                .contains("neither OpenAPI 3")
        );
    }
}

#[cfg(test)]
mod yaml_bombs {
    /// Aliases that expand to 9^9 items are refused quickly, not expanded.
    #[test]
    fn an_alias_bomb_is_refused_quickly() {
        let mut doc = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let refs = vec![format!("*{}", w[0]); 9].join(",");
            doc.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
        }
        let started = std::time::Instant::now();
        let e = super::parse_text(&doc).unwrap_err();
        assert!(e.contains("repetition limit"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}

#[cfg(test)]
mod openapi_31 {
    use super::import;

    /// OpenAPI 3.1 (JSON Schema 2020-12): type arrays, numeric exclusive bounds, `const`,
    /// schema `examples` lists, webhooks, `$ref` with siblings.
    #[test]
    fn an_openapi_31_document_imports() {
        let doc = r##"
openapi: 3.1.0
jsonSchemaDialect: https://json-schema.org/draft/2020-12/schema
info: {title: Pets, version: "1", summary: Pets API, license: {name: MIT, identifier: MIT}}
webhooks:
  newPet:
    post:
      responses: {"200": {description: ok}}
paths:
  /pets/{id}:
    get:
      operationId: getPet
      parameters:
        - name: id
          in: path
          required: true
          schema: {type: [integer, "null"], exclusiveMinimum: 0, examples: [1, 2]}
        - name: kind
          in: query
          schema: {const: dog}
      responses:
        "200":
          description: A pet
          content:
            application/json:
              schema:
                $ref: "#/components/schemas/Pet"
                description: the pet
components:
  schemas:
    Pet:
      type: object
      properties:
        name: {type: [string, "null"]}
"##;
        let api = import(doc).unwrap();
        assert_eq!(api.operations.len(), 1);
        let op = &api.operations[0].1;
        assert_eq!(op["templateParameters"][0]["type"], "integer");
        assert_eq!(op["request"]["queryParameters"][0]["values"][0], "dog");
    }
}
