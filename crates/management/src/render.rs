//! Turning stored resources into APIM's ARM shape `{id, type, name, properties}`.
//!
//! Invariant: nothing rendered here contains a secret or a server-private field
//! (`props::secret_pointers` and `props::hidden_fields` are removed first).

use crate::error::ApiError;
use crate::rules::Lookup;
use gatehouse_model::props::{hidden_fields, secret_pointers};
use gatehouse_model::{Kind, ResourcePath, StoredResource};
use gatehouse_store::remove_fields;
use serde_json::{Map, Value, json};

pub const ARM_TYPE_PREFIX: &str = "Microsoft.ApiManagement/service";

/// Removes secrets and server-private fields.
pub fn public_properties(kind: Kind, props: &Map<String, Value>) -> Map<String, Value> {
    let mut p = props.clone();
    let pointers = secret_pointers(kind, props);
    remove_fields(&mut p, &pointers);
    for h in hidden_fields(kind) {
        p.remove(*h);
    }
    p
}

pub fn render(res: &StoredResource) -> Value {
    let mut props = public_properties(res.kind, &res.properties);
    if res.kind == Kind::Api {
        props.insert("isOnline".into(), json!(true));
    }
    if res.kind == Kind::Group {
        props.entry("builtIn").or_insert(json!(false));
    }
    json!({
        "id": res.path,
        "type": format!("{ARM_TYPE_PREFIX}/{}", res.kind.spec().arm_type),
        "name": res.name(),
        "properties": props,
    })
}

/// Renders a resource; a link renders as the entity it points at, as APIM's link
/// collections (`/products/{id}/apis`) list APIs, not link records.
pub fn render_resolved(q: &impl Lookup, res: &StoredResource) -> Result<Option<Value>, ApiError> {
    match res.kind.spec().link_target {
        None => Ok(Some(render(res))),
        Some(target) => {
            let path = ResourcePath::top(target, res.name()).as_string();
            Ok(q.lookup(&path)?.map(|t| render(&t)))
        }
    }
}

/// A journal entry's value with its secrets opened, for whoever replays it elsewhere (a
/// move's catch-up, a regional gateway). Entries written before a field became secret were
/// sealed when it did, so every field that may be secret is opened.
pub fn opened_entry_value(
    sealer: &gatehouse_store::Sealer,
    kind: &str,
    value: Option<Value>,
) -> Result<Option<Value>, ApiError> {
    match (Kind::from_name(kind), value) {
        (Some(kind), Some(Value::Object(mut m))) => {
            let mut pointers = secret_pointers(kind, &m);
            pointers.extend(gatehouse_model::props::possible_secret_pointers(kind));
            pointers.sort_unstable();
            pointers.dedup();
            sealer
                .open_fields(&mut m, &pointers)
                .map_err(|err| ApiError::internal(err.to_string()))?;
            Ok(Some(Value::Object(m)))
        }
        (_, v) => Ok(v),
    }
}
