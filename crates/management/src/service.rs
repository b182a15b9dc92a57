//! The service resource (`GET /`, `PATCH /`) and first-start bootstrap: system groups and the
//! all-access subscription `master`.

use crate::error::ApiError;
use crate::rules::{self, MASTER_SUBSCRIPTION, SYSTEM_GROUPS};
use gatehouse_model::{
    HOSTNAME_TYPES, HostnameConfiguration, Kind, ResourcePath, SKUS, ServiceSettings, Sku,
};
use gatehouse_store::{Store, StoreError};
use serde_json::{Map, Value, json};

/// What the operator asked for at start; `None` keeps the stored (or default) value.
#[derive(Debug, Clone, Default)]
pub struct Bootstrap {
    pub name: Option<String>,
    pub region: Option<String>,
    pub sku: Option<String>,
    pub capacity: Option<u32>,
    pub publisher_email: Option<String>,
    pub publisher_name: Option<String>,
}

pub const DEFAULT_NAME: &str = "gatehouse";
pub const DEFAULT_REGION: &str = "local";

/// Validates a service name as APIM does: 1–50 characters, a letter first, letters, digits and
/// hyphens, not ending with a hyphen.
pub fn validate_service_name(name: &str) -> Result<(), String> {
    let ok = (1..=50).contains(&name.len())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the service name '{name}' is invalid: use 1-50 letters, digits and hyphens, starting with a letter and not ending with a hyphen"
        ))
    }
}

pub fn normalise_sku(name: &str) -> Result<String, String> {
    SKUS.iter()
        .find(|s| s.eq_ignore_ascii_case(name))
        .map(|s| s.to_string())
        .ok_or_else(|| {
            format!(
                "the sku '{name}' is not supported; use one of {}",
                SKUS.join(", ")
            )
        })
}

/// Writes the service settings and built-in resources if this is the first start, and applies
/// the operator's overrides. One transaction: a crash leaves either nothing or all of it.
pub fn bootstrap(store: &Store, b: &Bootstrap) -> Result<ServiceSettings, ApiError> {
    if let Some(n) = &b.name {
        validate_service_name(n).map_err(ApiError::bad_request)?;
    }
    let sku = b
        .sku
        .as_deref()
        .map(normalise_sku)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let committed = store.write(|tx| -> Result<ServiceSettings, ApiError> {
        let existing = tx.service()?;
        let mut s = existing.clone().unwrap_or_else(|| ServiceSettings {
            name: DEFAULT_NAME.into(),
            location: DEFAULT_REGION.into(),
            sku: Sku {
                name: "Developer".into(),
                capacity: 1,
            },
            publisher_email: "admin@example.com".into(),
            publisher_name: "Gatehouse".into(),
            notification_sender_email: None,
            created_at_utc: rules::now_rfc3339(),
            hostname_configurations: Vec::new(),
        });
        if let Some(v) = &b.name {
            s.name = v.clone();
        }
        if let Some(v) = &b.region {
            s.location = v.clone();
        }
        if let Some(v) = &sku {
            s.sku.name = v.clone();
        }
        if let Some(v) = b.capacity {
            s.sku.capacity = v;
        }
        if let Some(v) = &b.publisher_email {
            s.publisher_email = v.clone();
        }
        if let Some(v) = &b.publisher_name {
            s.publisher_name = v.clone();
        }
        if existing.as_ref() != Some(&s) {
            tx.set_service(&s)?;
        }
        if existing.is_none() {
            for (id, display, description) in SYSTEM_GROUPS {
                let mut p = Map::new();
                p.insert("displayName".into(), json!(display));
                p.insert("description".into(), json!(description));
                p.insert("builtIn".into(), json!(true));
                p.insert("type".into(), json!("system"));
                tx.put(&ResourcePath::top(Kind::Group, id), p, &[])?;
            }
            let mut p = Map::new();
            p.insert("scope".into(), json!("/"));
            p.insert(
                "displayName".into(),
                json!("Built-in all-access subscription"),
            );
            p.insert("state".into(), json!("active"));
            p.insert("allowTracing".into(), json!(false));
            p.insert("primaryKey".into(), json!(rules::generate_key()));
            p.insert("secondaryKey".into(), json!(rules::generate_key()));
            p.insert("createdDate".into(), json!(rules::now_rfc3339()));
            tx.put(
                &ResourcePath::top(Kind::Subscription, MASTER_SUBSCRIPTION),
                p,
                &[],
            )?;
        }
        ensure_portal_content(tx)?;
        Ok(s)
    })?;
    Ok(committed.value)
}

/// `GET /`.
pub fn render_service(
    s: &ServiceSettings,
    revision: u64,
    management_url: &str,
    gateway_url: &str,
) -> Value {
    json!({
        "id": "/",
        "name": s.name,
        "type": "Microsoft.ApiManagement/service",
        "location": s.location,
        "etag": crate::rules::etag(revision).trim_matches('"'),
        "sku": {"name": s.sku.name, "capacity": s.sku.capacity},
        "properties": {
            "publisherEmail": s.publisher_email,
            "publisherName": s.publisher_name,
            "notificationSenderEmail": s.notification_sender_email,
            "provisioningState": "Succeeded",
            "targetProvisioningState": "",
            "createdAtUtc": s.created_at_utc,
            "gatewayUrl": gateway_url,
            "managementApiUrl": management_url,
            "hostnameConfigurations": s.hostname_configurations,
            "disableGateway": false,
            "revision": revision,
        }
    })
}

/// `PATCH /`: publisher settings and the sku; the name and region belong to the instance.
/// `PUT` of the service (ARM's create-or-update) on a running instance: the instance exists,
/// so this updates it — its name and location must be this instance's (a move changes them,
/// not a PUT); tier and settings are applied as a PATCH applies them.
pub fn put_service(store: &Store, body: &Map<String, Value>, actor: &str) -> Result<(), ApiError> {
    let current = store
        .read(|r| r.service())?
        .ok_or_else(|| ApiError::internal("the service has no settings"))?;
    let same = |a: &str, b: &str| {
        let norm = |s: &str| s.replace(' ', "").to_ascii_lowercase();
        norm(a) == norm(b)
    };
    let mut rest = body.clone();
    for (key, have) in [("name", &current.name), ("location", &current.location)] {
        if let Some(v) = rest.remove(key) {
            match v.as_str() {
                Some(given) if same(given, have) => {}
                _ => {
                    return Err(ApiError::invalid(
                        key,
                        format!(
                            "'{key}' must be this instance's ('{have}'): a service's {key} is not changed by PUT (a move changes it)"
                        ),
                    ));
                }
            }
        }
    }
    patch_service(store, &rest, actor)
}

pub fn patch_service(
    store: &Store,
    body: &Map<String, Value>,
    actor: &str,
) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    for key in body.keys() {
        match key.as_str() {
            "properties" | "sku" | "id" | "type" | "etag" | "tags" => {}
            "name" | "location" => errors.push(gatehouse_model::FieldError::new(
                key.clone(),
                format!("'{key}' cannot be changed by PATCH: it belongs to the running instance (set it with `gatehouse serve --{}`)", if key == "name" { "name" } else { "region" }),
            )),
            other => errors.push(gatehouse_model::FieldError::new(other, format!("'{other}' is not a property of the service"))),
        }
    }
    let props = match body.get("properties") {
        None => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                "properties",
                "'properties' must be an object",
            ));
        }
    };
    for (k, v) in &props {
        match k.as_str() {
            "publisherEmail" | "publisherName" | "notificationSenderEmail" => match v.as_str() {
                Some(s) if !s.is_empty() && s.chars().count() <= 100 => {}
                _ => errors.push(gatehouse_model::FieldError::new(
                    k.clone(),
                    format!("'{k}' must be a string of 1 to 100 characters"),
                )),
            },
            "hostnameConfigurations" => {
                if let Err(e) = parse_hostnames(v) {
                    errors.push(e)
                }
            }
            "provisioningState"
            | "targetProvisioningState"
            | "createdAtUtc"
            | "gatewayUrl"
            | "managementApiUrl"
            | "disableGateway"
            | "revision" => {}
            other => errors.push(gatehouse_model::FieldError::new(
                other,
                format!("'{other}' is not a property of the service"),
            )),
        }
    }
    let mut sku: Option<Sku> = None;
    if let Some(s) = body.get("sku") {
        let name = s.get("name").and_then(Value::as_str);
        let capacity = s.get("capacity").map(|c| c.as_u64());
        match (name.map(normalise_sku), capacity) {
            (Some(Err(e)), _) => errors.push(gatehouse_model::FieldError::new("sku.name", e)),
            (_, Some(None)) => errors.push(gatehouse_model::FieldError::new(
                "sku.capacity",
                "'sku.capacity' must be a whole number",
            )),
            (n, c) => {
                sku = Some(Sku {
                    name: n.and_then(Result::ok).unwrap_or_default(),
                    capacity: c.flatten().map(|c| c as u32).unwrap_or(0),
                })
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    store.write_as(actor, |tx| -> Result<(), ApiError> {
        let mut s = tx.service()?.ok_or(StoreError::NoService)?;
        let before = s.clone();
        if let Some(v) = props.get("publisherEmail").and_then(Value::as_str) {
            s.publisher_email = v.to_string();
        }
        if let Some(v) = props.get("publisherName").and_then(Value::as_str) {
            s.publisher_name = v.to_string();
        }
        if let Some(v) = props.get("notificationSenderEmail").and_then(Value::as_str) {
            s.notification_sender_email = Some(v.to_string());
        }
        if let Some(k) = &sku {
            if !k.name.is_empty() {
                s.sku.name = k.name.clone();
            }
            if k.capacity > 0 {
                s.sku.capacity = k.capacity;
            }
        }
        if let Some(v) = props.get("hostnameConfigurations") {
            let hostnames = parse_hostnames(v).map_err(|e| ApiError::validation(vec![e]))?;
            for h in &hostnames {
                if let Some(cert) = &h.certificate_id {
                    let path = gatehouse_model::resolve(cert).ok().and_then(|t| match t {
                        gatehouse_model::Target::Resource(p) if p.kind == Kind::Certificate => {
                            Some(p)
                        }
                        _ => None,
                    });
                    let exists = match &path {
                        Some(p) => tx.get(&p.as_string())?.is_some(),
                        None => false,
                    };
                    if !exists {
                        return Err(ApiError::invalid(
                            "hostnameConfigurations",
                            format!(
                                "the certificate '{cert}' for host name '{}' does not exist; upload it to /certificates first",
                                h.host_name
                            ),
                        ));
                    }
                }
            }
            s.hostname_configurations = hostnames;
        }
        if s != before {
            tx.set_service(&s)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Checks `hostnameConfigurations`: a list of `{type, hostName, certificateId?, defaultSslBinding?}`
/// with APIM's types, valid DNS names and no name twice.
pub fn parse_hostnames(
    v: &Value,
) -> Result<Vec<HostnameConfiguration>, gatehouse_model::FieldError> {
    let field = "hostnameConfigurations";
    let bad = |m: String| gatehouse_model::FieldError::new(field, m);
    let list: Vec<HostnameConfiguration> = serde_json::from_value(v.clone()).map_err(|e| {
        bad(format!(
            "'{field}' must be a list of {{\"type\", \"hostName\", \"certificateId\"}}: {e}"
        ))
    })?;
    let mut seen = std::collections::HashSet::new();
    for h in &list {
        if !HOSTNAME_TYPES.contains(&h.kind.as_str()) {
            return Err(bad(format!(
                "the host name type '{}' is not supported; use one of {}",
                h.kind,
                HOSTNAME_TYPES.join(", ")
            )));
        }
        if !valid_dns_name(&h.host_name) {
            return Err(bad(format!("'{}' is not a valid host name", h.host_name)));
        }
        if !seen.insert(h.host_name.to_ascii_lowercase()) {
            return Err(bad(format!(
                "the host name '{}' is listed twice",
                h.host_name
            )));
        }
    }
    Ok(list)
}

/// A DNS host name: labels of 1-63 letters, digits and hyphens, 253 characters at most.
pub fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The portal's built-in content types, and its default home page and styles, on the first
/// start (also of an instance made before the portal existed). Changes nothing once they exist.
fn ensure_portal_content(tx: &mut gatehouse_store::WriteTx<'_>) -> Result<(), ApiError> {
    use crate::portal_content::{BUILT_IN_TYPES, default_items};
    let mut created = false;
    for (id, name, description) in BUILT_IN_TYPES {
        let path = ResourcePath::top(Kind::ContentType, id);
        if tx.get(&path.as_string())?.is_none() {
            let mut p = Map::new();
            p.insert("name".into(), json!(name));
            p.insert("description".into(), json!(description));
            p.insert("version".into(), json!("1.0.0"));
            tx.put(&path, p, &[])?;
            created = true;
        }
    }
    if created {
        for (type_id, item_id, props) in default_items() {
            let path = ResourcePath::new(
                Kind::ContentItem,
                vec![
                    ("contentTypes", type_id.to_string()),
                    ("contentItems", item_id.to_string()),
                ],
            );
            if tx.get(&path.as_string())?.is_none() {
                tx.put(&path, props, &[])?;
            }
        }
    }
    Ok(())
}
