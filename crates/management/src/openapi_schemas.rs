//! The schemas of an imported OpenAPI document, kept as APIM keeps them: one API schema
//! (`/apis/{id}/schemas/openapi`, content type `application/vnd.oai.openapi.components+json`,
//! document `{"components": {"schemas": {...}}}`) and, on each request and response
//! representation, the `schemaId` and `typeName` its body is defined by.
//!
//! A body schema given inline in an operation gets a type name of its own
//! (`{operationId}Request`, `{operationId}Response{status}`), so that every representation
//! names a type and the gateway's `validate-content` finds it the same way.

use openapiv3::{MediaType, ReferenceOr};
use serde_json::{Map, Value, json};

/// The id of the kept schema and its content type.
pub const OPENAPI_SCHEMA: (&str, &str) = ("openapi", "application/vnd.oai.openapi.components+json");

const COMPONENT_PREFIX: &str = "#/components/schemas/";

/// The named schemas of one document while it is imported.
#[derive(Debug, Default)]
pub struct Schemas {
    named: Map<String, Value>,
}

impl Schemas {
    /// The document's `components.schemas`, as written (before any typed parsing drops
    /// keywords the typed model does not know).
    pub fn of_document(raw: &Value) -> Schemas {
        let named = raw
            .pointer("/components/schemas")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Schemas { named }
    }

    /// A representation for `content_type`: its `schemaId` and `typeName` when the media type
    /// has a schema (a reference names its type; an inline schema is named `suggested`).
    pub fn representation(
        &mut self,
        content_type: &str,
        media: &MediaType,
        suggested: &str,
    ) -> Map<String, Value> {
        let mut rep = Map::new();
        rep.insert("contentType".into(), json!(content_type));
        if let Some(name) = media
            .schema
            .as_ref()
            .and_then(|s| self.type_of(s, suggested))
        {
            rep.insert("schemaId".into(), json!(OPENAPI_SCHEMA.0));
            rep.insert("typeName".into(), json!(name));
        }
        rep
    }

    fn type_of(
        &mut self,
        schema: &ReferenceOr<openapiv3::Schema>,
        suggested: &str,
    ) -> Option<String> {
        match schema {
            ReferenceOr::Reference { reference } => {
                reference.strip_prefix(COMPONENT_PREFIX).map(str::to_string)
            }
            ReferenceOr::Item(inline) => {
                let value = serde_json::to_value(inline).ok()?;
                let mut name = suggested.to_string();
                let mut n = 2;
                while self.named.get(&name).is_some_and(|v| v != &value) {
                    name = format!("{suggested}{n}");
                    n += 1;
                }
                self.named.insert(name.clone(), value);
                Some(name)
            }
        }
    }

    /// The API schema to keep, if the document defines any type.
    pub fn kept(self) -> Option<(String, Map<String, Value>)> {
        if self.named.is_empty() {
            return None;
        }
        let props = json!({
            "contentType": OPENAPI_SCHEMA.1,
            "document": {"components": {"schemas": self.named}},
        });
        Some((
            OPENAPI_SCHEMA.0.to_string(),
            props.as_object().cloned().unwrap_or_default(),
        ))
    }
}

/// A name made of an operation id and a suffix, as a type name (letters, digits, `_`).
pub fn type_name(operation: &str, suffix: &str) -> String {
    let mut out = String::new();
    let mut upper = true;
    for c in operation.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(if upper { c.to_ascii_uppercase() } else { c });
            upper = false;
        } else {
            upper = true;
        }
    }
    out.push_str(suffix);
    out
}

/// The exported form of a representation's type: a reference into `components.schemas`.
pub fn schema_reference(rep: &Value) -> Option<Value> {
    let name = rep.get("typeName")?.as_str()?;
    (rep.get("schemaId").and_then(Value::as_str) == Some(OPENAPI_SCHEMA.0))
        .then(|| json!({"$ref": format!("{COMPONENT_PREFIX}{name}")}))
}
