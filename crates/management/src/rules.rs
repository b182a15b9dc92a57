//! The domain rules of each resource kind: defaults, generated values, references that must
//! exist, uniqueness, and what a delete takes with it.
//!
//! Invariants: every write goes through `put_resource` / `delete_resource` inside one store
//! transaction, so a rule that fails leaves nothing written; references are stored relative to
//! the service (`/apis/echo`), whatever form the caller used.

use crate::{certs, portal_content};
use gatehouse_model::props::{check_input, check_required};
use gatehouse_model::{FieldError, PathError};
use gatehouse_model::{Kind, ResourcePath, StoredResource, id::split_revision, strip_arm_prefix};
use gatehouse_store::{StoreError, WriteTx};
use rand::RngCore;
use serde_json::{Map, Value, json};

/// Why a rule refused a change, in the domain's terms; `error::ApiError` maps it to a status
/// and an envelope, in one place.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The resource, its parent, or one it references does not exist (its kind's name).
    #[error("{0} not found.")]
    NotFound(String),
    /// Fields with values the kind does not accept.
    #[error("{}", .0.first().map_or("invalid fields", |f| f.message.as_str()))]
    Invalid(Vec<FieldError>),
    /// The request as a whole does not make sense (an id that does not parse).
    #[error("{0}")]
    Malformed(String),
    /// A path that names no resource, or not in the form a resource takes.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The change conflicts with what is there (built in, in use, a restricted delete).
    #[error("{0}")]
    Conflict(String),
    /// If-Match names a version that is no longer current.
    #[error("the entity has been modified since it was read")]
    Stale,
    /// A failure below the rules (the store, hashing): not the client's doing.
    #[error("{0}")]
    Internal(String),
    /// The shared store cannot be reached now: the request may be tried again.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store refuses writes now (frozen for a move, or the service deleted).
    #[error(transparent)]
    Refused(StoreError),
}

impl RuleError {
    pub fn not_found(display: &str) -> RuleError {
        RuleError::NotFound(display.to_string())
    }

    pub fn invalid(target: &str, message: impl Into<String>) -> RuleError {
        RuleError::Invalid(vec![FieldError::new(target, message)])
    }

    pub fn malformed(message: impl Into<String>) -> RuleError {
        RuleError::Malformed(message.into())
    }

    pub fn conflict(message: impl Into<String>) -> RuleError {
        RuleError::Conflict(message.into())
    }
}

impl From<StoreError> for RuleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => RuleError::Unavailable(detail),
            e @ (StoreError::Fenced(_) | StoreError::Deleted(_)) => RuleError::Refused(e),
            e => RuleError::Internal(format!("store failure: {e}")),
        }
    }
}

/// Read access shared by read and write transactions.
pub trait Lookup {
    fn lookup(&self, path: &str) -> Result<Option<StoredResource>, StoreError>;
}

impl Lookup for WriteTx<'_> {
    fn lookup(&self, path: &str) -> Result<Option<StoredResource>, StoreError> {
        self.get(path)
    }
}

impl Lookup for gatehouse_store::ReadTx<'_> {
    fn lookup(&self, path: &str) -> Result<Option<StoredResource>, StoreError> {
        self.get(path)
    }
}

pub const SYSTEM_GROUPS: &[(&str, &str, &str)] = &[
    (
        "administrators",
        "Administrators",
        "Administrators is a built-in group containing the admin email account provided at the time of service creation. Its membership is managed by the system.",
    ),
    (
        "developers",
        "Developers",
        "Developers is a built-in group. Its membership is managed by the system. Signed-in users fall into this group.",
    ),
    (
        "guests",
        "Guests",
        "Guests is a built-in group. Its membership is managed by the system. Unauthenticated users visiting the developer portal fall into this group.",
    ),
];

pub const MASTER_SUBSCRIPTION: &str = "master";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Put,
    Patch,
}

/// Options from the query string that change what a write or delete does.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Who makes the change, for the journal (`admin` or a token's id).
    pub actor: String,
    pub if_match: Option<String>,
    pub delete_subscriptions: bool,
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatting the current time cannot fail")
}

/// A primary and a secondary key where there are none yet (subscriptions, gateways, tenant
/// access).
fn with_keys(props: &mut Map<String, Value>) {
    for field in ["primaryKey", "secondaryKey"] {
        props.entry(field).or_insert_with(|| json!(generate_key()));
    }
}

/// A new subscription key: 32 hex characters, as APIM generates them.
pub fn generate_key() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The strings of a JSON array (other items and non-arrays give nothing).
pub fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub fn etag(revision: u64) -> String {
    format!("\"r{revision}\"")
}

fn check_if_match(
    existing: Option<&StoredResource>,
    if_match: Option<&str>,
) -> Result<(), RuleError> {
    let Some(wanted) = if_match else {
        return Ok(());
    };
    let wanted = wanted.trim();
    if wanted == "*" {
        return Ok(());
    }
    let matches = existing.is_some_and(|e| {
        wanted
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| {
                t == etag(e.revision) || t.trim_matches('"') == etag(e.revision).trim_matches('"')
            })
    });
    if matches {
        Ok(())
    } else {
        Err(RuleError::Stale)
    }
}

/// Maps an API id `x;rev=N` to `x` when N is the current revision, so both address the same
/// resource as in APIM.
pub fn canonicalize(q: &impl Lookup, path: ResourcePath) -> Result<ResourcePath, RuleError> {
    let Some((collection, id)) = path.parts.first() else {
        return Ok(path);
    };
    if *collection != "apis" {
        return Ok(path);
    }
    let (base, Some(rev)) = split_revision(id).map_err(|e| RuleError::malformed(e.to_string()))?
    else {
        return Ok(path);
    };
    let base_path = format!("/apis/{base}");
    if let Some(current) = q.lookup(&base_path)?
        && current
            .properties
            .get("apiRevision")
            .and_then(Value::as_str)
            == Some(&rev.to_string())
    {
        let mut parts = path.parts.clone();
        parts[0].1 = base.to_string();
        return Ok(ResourcePath::new(path.kind, parts));
    }
    Ok(path)
}

/// Normalises a reference given as a relative path or a full ARM id into the relative form.
fn relative_ref(value: &str) -> String {
    let stripped = strip_arm_prefix(value);
    let s = if stripped.starts_with('/') {
        stripped.to_string()
    } else {
        format!("/{stripped}")
    };
    s.trim_end_matches('/').to_string()
}

/// A named value read from a secret store (APIM's Key Vault reference): always secret; its
/// value is what the secret source last answered (`keyvault`), kept while the reference is the
/// same, with the outcome of the last read in `keyVault.lastStatus`.
fn key_vault_rules(
    props: &mut Map<String, Value>,
    existing: Option<&StoredResource>,
) -> Result<(), RuleError> {
    let id = props
        .get("keyVault")
        .and_then(|k| k.get("secretIdentifier"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if id.is_empty() || id.len() > 2000 {
        return Err(RuleError::invalid(
            "keyVault.secretIdentifier",
            "'keyVault.secretIdentifier' must name the secret (e.g. https://contoso.vault.azure.net/secrets/db-password)",
        ));
    }
    props.insert("secret".into(), json!(true));
    let same = existing.filter(|e| {
        e.properties
            .get("keyVault")
            .and_then(|k| k.get("secretIdentifier"))
            .and_then(Value::as_str)
            == Some(id.as_str())
    });
    if let Some(e) = same {
        if !props.contains_key("value")
            && let Some(v) = e.properties.get("value")
        {
            props.insert("value".into(), v.clone());
        }
        let had = e
            .properties
            .get("keyVault")
            .and_then(|k| k.get("lastStatus"))
            .cloned();
        if let (Some(kv), Some(status)) = (
            props.get_mut("keyVault").and_then(Value::as_object_mut),
            had,
        ) {
            kv.entry("lastStatus").or_insert(status);
        }
    }
    Ok(())
}

/// A self-hosted gateway: not the reserved `managed`, and where it is (`locationData.name`
/// required, each part at most 256 characters).
fn gateway_rules(path: &ResourcePath, props: &Map<String, Value>) -> Result<(), RuleError> {
    if path.id().eq_ignore_ascii_case("managed") {
        return Err(RuleError::malformed(
            "'managed' is the name of the built-in gateway; choose another gateway id",
        ));
    }
    let location = props.get("locationData").and_then(Value::as_object);
    let name = location.and_then(|l| l.get("name")).and_then(Value::as_str);
    if name.is_none_or(str::is_empty) {
        return Err(RuleError::invalid(
            "locationData.name",
            "'locationData.name' is required: where the gateway runs (e.g. a region)",
        ));
    }
    for (key, v) in location.into_iter().flatten() {
        let ok = match key.as_str() {
            "name" | "city" | "district" | "countryOrRegion" => {
                v.as_str().is_some_and(|s| s.chars().count() <= 256) || v.is_null()
            }
            _ => false,
        };
        if !ok {
            return Err(RuleError::invalid(
                &format!("locationData.{key}"),
                format!(
                    "'locationData.{key}' must be a string of at most 256 characters (name, city, district, countryOrRegion)"
                ),
            ));
        }
    }
    Ok(())
}

/// The ids APIM allows for a kind whose resources have fixed names./// The ids APIM allows for a kind whose resources have fixed names./// The ids APIM allows for a kind whose resources have fixed names.
fn check_fixed_id(path: &ResourcePath, allowed: &[&str]) -> Result<(), RuleError> {
    if allowed.contains(&path.id()) {
        return Ok(());
    }
    Err(RuleError::malformed(format!(
        "'{}' is not a {} name; use one of {}",
        path.id(),
        path.kind.spec().display,
        allowed.join(", ")
    )))
}

/// APIM's email templates, by name.
const EMAIL_TEMPLATES: &[&str] = &[
    "applicationApprovedNotificationMessage",
    "accountClosedDeveloper",
    "quotaLimitApproachingDeveloperNotificationMessage",
    "newDeveloperNotificationMessage",
    "emailChangeIdentityDefault",
    "inviteUserNotificationMessage",
    "newCommentNotificationMessage",
    "confirmSignUpIdentityDefault",
    "newIssueNotificationMessage",
    "purchaseDeveloperNotificationMessage",
    "passwordResetIdentityDefault",
    "passwordResetByAdminNotificationMessage",
    "rejectDeveloperNotificationMessage",
    "requestDeveloperNotificationMessage",
];

/// The developer portal's resources, stored with APIM's shapes (the portal is not built yet):
/// fixed names where APIM fixes them, references that must exist.
fn portal_rules(
    tx: &WriteTx<'_>,
    path: &ResourcePath,
    props: &mut Map<String, Value>,
    refs: &mut Vec<String>,
) -> Result<(), RuleError> {
    match path.kind {
        Kind::IdentityProvider => {
            check_fixed_id(path, gatehouse_model::props::IDENTITY_PROVIDERS)?;
            props.insert("type".into(), json!(path.id()));
        }
        Kind::EmailTemplate => {
            check_fixed_id(path, EMAIL_TEMPLATES)?;
            props.insert("isDefault".into(), json!(false));
        }
        Kind::PortalSetting => check_fixed_id(path, &["signin", "signup", "delegation"])?,
        Kind::ApiWiki | Kind::ProductWiki => check_fixed_id(path, &["default"])?,
        Kind::ApiRelease => {
            let api = str_of(props, "apiId").unwrap_or_default().to_string();
            let rel = require_exists(tx, &api, "apiId", "the API", &[Kind::Api])?;
            refs.push(rel.clone());
            props.insert("apiId".into(), json!(rel));
            let now = now_rfc3339();
            props.entry("createdDateTime").or_insert(json!(now.clone()));
            props.insert("updatedDateTime".into(), json!(now));
        }
        Kind::ApiIssue => {
            let user = str_of(props, "userId").unwrap_or_default().to_string();
            let rel = require_exists(tx, &user, "userId", "the user", &[Kind::User])?;
            refs.push(rel.clone());
            props.insert("userId".into(), json!(rel));
            props.insert("apiId".into(), json!(path.parent_string()));
            props.entry("state").or_insert(json!("proposed"));
            props
                .entry("createdDate")
                .or_insert_with(|| json!(now_rfc3339()));
        }
        _ => {}
    }
    Ok(())
}

fn require_exists(
    q: &impl Lookup,
    target: &str,
    field: &str,
    what: &str,
    expected: &[Kind],
) -> Result<String, RuleError> {
    let rel = relative_ref(target);
    let ok = match gatehouse_model::resolve(&rel) {
        Ok(gatehouse_model::Target::Resource(p)) if expected.contains(&p.kind) => {
            q.lookup(&p.as_string())?.is_some()
        }
        _ => false,
    };
    if ok {
        Ok(rel)
    } else {
        Err(RuleError::invalid(
            field,
            format!("'{field}' refers to {what} '{target}', which does not exist"),
        ))
    }
}

/// RFC 7396 merge of `patch` into `target`.
fn merge(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        match (target.get_mut(&k), v) {
            (_, Value::Null) => {
                target.remove(&k);
            }
            (Some(Value::Object(t)), Value::Object(p)) => merge(t, p),
            (_, v) => {
                target.insert(k, v);
            }
        }
    }
}

/// A pool backend: its members exist and are single backends (a pool holds no pool); a pool
/// has no URL of its own.
fn pool_rules(
    tx: &impl Lookup,
    path: &str,
    props: &mut Map<String, Value>,
    refs: &mut Vec<String>,
) -> Result<(), RuleError> {
    use gatehouse_model::backend;
    let members = backend::pool(props).map_err(|e| RuleError::invalid(&e.field, e.message))?;
    backend::circuit_breaker(props).map_err(|e| RuleError::invalid(&e.field, e.message))?;
    if props.get("url").is_some_and(|u| !u.is_null()) {
        return Err(RuleError::invalid(
            "url",
            "a Pool backend has no 'url': its members have theirs",
        ));
    }
    for (i, m) in members.iter().enumerate() {
        let field = format!("pool.services[{i}].id");
        let member_path = format!("/backends/{}", m.backend);
        if member_path == path {
            return Err(RuleError::invalid(&field, "a pool cannot contain itself"));
        }
        let Some(member) = tx.lookup(&member_path)? else {
            return Err(RuleError::invalid(
                &field,
                format!(
                    "'{field}' refers to the backend '{}', which does not exist",
                    m.backend
                ),
            ));
        };
        if backend::is_pool(&member.properties) {
            return Err(RuleError::invalid(
                &field,
                format!(
                    "the backend '{}' is a pool: a pool's members are single backends",
                    m.backend
                ),
            ));
        }
        refs.push(member_path);
    }
    Ok(())
}

fn str_of<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

/// The outcome of a write.
pub struct Written {
    pub resource: StoredResource,
    pub created: bool,
}

/// Creates, replaces (PUT) or merges into (PATCH) one resource, applying the kind's rules.
pub fn put_resource(
    tx: &mut WriteTx<'_>,
    path: &ResourcePath,
    input: Map<String, Value>,
    mode: Mode,
    opts: &WriteOptions,
) -> Result<Written, RuleError> {
    let key = path.as_string();
    let existing = tx.get(&key)?;
    check_if_match(existing.as_ref(), opts.if_match.as_deref())?;
    if mode == Mode::Patch && existing.is_none() {
        return Err(RuleError::not_found(path.kind.spec().display));
    }
    if let Some(parent) = path.ancestor(path.parts.len() - 1)
        && tx.get(&parent.as_string())?.is_none()
    {
        return Err(RuleError::not_found(parent.kind.spec().display));
    }
    let input = check_input(path.kind, &input).map_err(RuleError::Invalid)?;
    let mut props = match (&existing, mode) {
        (Some(e), Mode::Patch) => {
            let mut p = e.properties.clone();
            merge(&mut p, input.clone());
            p
        }
        _ => input.clone(),
    };
    let refs = apply_rules(tx, path, &mut props, &input, existing.as_ref())?;
    check_required(path.kind, &props).map_err(RuleError::Invalid)?;
    let revision = tx.put(path, props.clone(), &refs)?;
    after_put(tx, path, existing.as_ref())?;
    let resource = tx.get(&key)?.unwrap_or(StoredResource {
        path: key,
        kind: path.kind,
        properties: props,
        revision,
    });
    Ok(Written {
        resource,
        created: existing.is_none(),
    })
}

/// Kind rules: fills defaults and generated values, checks references and uniqueness, returns
/// the paths this resource references.
fn apply_rules(
    tx: &mut WriteTx<'_>,
    path: &ResourcePath,
    props: &mut Map<String, Value>,
    input: &Map<String, Value>,
    existing: Option<&StoredResource>,
) -> Result<Vec<String>, RuleError> {
    let mut refs = Vec::new();
    // Server-kept fields survive a PUT that does not mention them.
    let keep = |props: &mut Map<String, Value>, names: &[&str]| {
        if let Some(e) = existing {
            for n in names {
                if !props.contains_key(*n)
                    && let Some(v) = e.properties.get(*n)
                {
                    props.insert((*n).to_string(), v.clone());
                }
            }
        }
    };
    match path.kind {
        Kind::Api => api_rules(tx, path, props, existing, &mut refs)?,
        Kind::Operation => operation_rules(tx, path, props)?,
        Kind::ContentType => {
            props.entry("version").or_insert(json!("1.0.0"));
        }
        Kind::ContentItem => content_item_rules(tx, path, props, &mut refs)?,
        Kind::PortalRevision => portal_revision_rules(tx, path, props, input, existing)?,
        k if k.is_policy() => {
            let format = str_of(props, "format").unwrap_or("xml").to_string();
            let value = str_of(props, "value").unwrap_or_default().to_string();
            let resolver = TxResolver::new(tx);
            let parsed = gatehouse_policy::parse_document(&value, &format, &resolver);
            resolver.failure()?;
            parsed.map_err(|e| RuleError::invalid("value", e.to_string()))?;
            props.insert("format".into(), json!(format.trim_end_matches("-link")));
        }
        Kind::PolicyFragment => {
            let format = str_of(props, "format").unwrap_or("xml").to_string();
            let value = str_of(props, "value").unwrap_or_default().to_string();
            let resolver = TxResolver::new(tx);
            let checked = gatehouse_policy::doc::check_fragment(&value, &format, &resolver);
            resolver.failure()?;
            checked.map_err(|e| RuleError::invalid("value", e.to_string()))?;
            props.insert("format".into(), json!(format));
        }
        Kind::Product => {
            props.entry("subscriptionRequired").or_insert(json!(true));
            props.entry("approvalRequired").or_insert(json!(false));
            props.entry("state").or_insert(json!("notPublished"));
            if props.get("subscriptionRequired") == Some(&json!(false))
                && props.get("approvalRequired") == Some(&json!(true))
            {
                return Err(RuleError::invalid(
                    "approvalRequired",
                    "'approvalRequired' can be true only when 'subscriptionRequired' is true",
                ));
            }
        }
        Kind::Subscription => {
            keep(props, &["primaryKey", "secondaryKey", "createdDate"]);
            if path.id() == MASTER_SUBSCRIPTION && existing.is_some() {
                // The all-access subscription keeps its scope.
                props.insert("scope".into(), json!("/"));
            } else {
                let scope = str_of(props, "scope").unwrap_or_default().to_string();
                let rel = relative_ref(&scope);
                let normalised = if rel == "/apis" {
                    rel
                } else {
                    require_exists(tx, &scope, "scope", "the scope", &[Kind::Api, Kind::Product])
                        .map_err(|_| {
                            RuleError::invalid(
                                "scope",
                                format!("Subscription scope '{scope}' is invalid: it must be '/apis', '/apis/{{apiId}}' or '/products/{{productId}}' of an existing API or product"),
                            )
                        })?
                };
                if normalised.contains(";rev=") {
                    return Err(RuleError::invalid(
                        "scope",
                        "A subscription cannot be scoped to an API revision",
                    ));
                }
                if normalised != "/apis" {
                    refs.push(normalised.clone());
                }
                props.insert("scope".into(), json!(normalised));
            }
            if let Some(owner) = str_of(props, "ownerId").map(str::to_string) {
                let rel = require_exists(tx, &owner, "ownerId", "the user", &[Kind::User])?;
                refs.push(rel.clone());
                props.insert("ownerId".into(), json!(rel));
            }
            props.entry("state").or_insert(json!("submitted"));
            props.entry("allowTracing").or_insert(json!(false));
            with_keys(props);
            props
                .entry("createdDate")
                .or_insert_with(|| json!(now_rfc3339()));
        }
        Kind::User => {
            keep(props, &["passwordHash", "registrationDate"]);
            let email = str_of(props, "email").unwrap_or_default().to_string();
            if !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
                return Err(RuleError::invalid(
                    "email",
                    format!("'{email}' is not a valid email address"),
                ));
            }
            for other in tx.find_by_property(Kind::User, "email", &email)? {
                if other.path != path.as_string()
                    && str_of(&other.properties, "email")
                        .is_some_and(|e| e.eq_ignore_ascii_case(&email))
                {
                    return Err(RuleError::invalid(
                        "email",
                        format!("Email '{email}' is already in use by another user"),
                    ));
                }
            }
            if let Some(password) = props.remove("password") {
                let password = password.as_str().unwrap_or_default();
                props.insert("passwordHash".into(), json!(hash_password(password)?));
            }
            props.entry("state").or_insert(json!("active"));
            props.remove("appType");
            props.remove("confirmation");
            props
                .entry("registrationDate")
                .or_insert_with(|| json!(now_rfc3339()));
        }
        Kind::Group => {
            if let Some(e) = existing
                && e.properties.get("builtIn") == Some(&json!(true))
            {
                return Err(RuleError::conflict(format!(
                    "The built-in group '{}' cannot be changed.",
                    path.id()
                )));
            }
            match str_of(input, "type") {
                Some("system") => {
                    return Err(RuleError::invalid(
                        "type",
                        "'type' can be 'custom' or 'external'; system groups are built in",
                    ));
                }
                None => {
                    props.entry("type").or_insert(json!("custom"));
                }
                _ => {}
            }
            props.insert("builtIn".into(), json!(false));
        }
        Kind::NamedValue => {
            let name = str_of(props, "displayName").unwrap_or_default().to_string();
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            {
                return Err(RuleError::invalid(
                    "displayName",
                    format!(
                        "'displayName' may contain only letters, digits, '-', '.' and '_'; '{name}' does not match ^[A-Za-z0-9-._]+$"
                    ),
                ));
            }
            for other in tx.find_by_property(Kind::NamedValue, "displayName", &name)? {
                if other.path != path.as_string()
                    && str_of(&other.properties, "displayName")
                        .is_some_and(|d| d.eq_ignore_ascii_case(&name))
                {
                    return Err(RuleError::invalid(
                        "displayName",
                        format!(
                            "A named value with displayName '{name}' already exists ({})",
                            other.path
                        ),
                    ));
                }
            }
            if props.contains_key("keyVault") {
                key_vault_rules(props, existing)?;
            } else if !props.contains_key("value") {
                return Err(RuleError::invalid("value", "'value' is required"));
            }
            props.entry("secret").or_insert(json!(false));
        }
        Kind::Backend if gatehouse_model::backend::is_pool(props) => {
            pool_rules(tx, &path.as_string(), props, &mut refs)?;
        }
        Kind::Backend => {
            props.entry("protocol").or_insert(json!("http"));
            gatehouse_model::backend::circuit_breaker(props)
                .map_err(|e| RuleError::invalid(&e.field, e.message))?;
            let url = str_of(props, "url").unwrap_or_default();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(RuleError::invalid(
                    "url",
                    format!("'url' must be an absolute http or https URL; '{url}' is not"),
                ));
            }
            let cert_ids = string_list(
                props
                    .get("credentials")
                    .and_then(|c| c.get("certificateIds")),
            );
            for id in cert_ids {
                refs.push(require_exists(
                    tx,
                    &id,
                    "credentials.certificateIds",
                    "the certificate",
                    &[Kind::Certificate],
                )?);
            }
        }
        Kind::Certificate => {
            if props.contains_key("keyVault") {
                return Err(RuleError::invalid(
                    "keyVault",
                    "Key Vault certificates are not supported by Gatehouse; upload the PFX ('data' and 'password') or PEM ('data')",
                ));
            }
            match props.remove("data") {
                Some(Value::String(data)) => {
                    let password = props.remove("password");
                    let password = password
                        .as_ref()
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let parsed =
                        certs::parse(&data, password).map_err(|e| RuleError::invalid("data", e))?;
                    props.insert("subject".into(), json!(parsed.subject));
                    props.insert("thumbprint".into(), json!(parsed.thumbprint));
                    props.insert("expirationDate".into(), json!(parsed.expiration_date));
                    props.insert("certificatePem".into(), json!(parsed.certificate_pem));
                    if let Some(key) = parsed.private_key_pem {
                        props.insert("privateKey".into(), json!(key));
                    }
                }
                _ => {
                    props.remove("password");
                    if existing.is_none() {
                        return Err(RuleError::invalid(
                            "data",
                            "'data' is required: a base64-encoded PFX (with 'password') or a PEM certificate",
                        ));
                    }
                    keep(
                        props,
                        &[
                            "subject",
                            "thumbprint",
                            "expirationDate",
                            "certificatePem",
                            "privateKey",
                        ],
                    );
                }
            }
        }
        Kind::ApiVersionSet => {
            let scheme = str_of(props, "versioningScheme").unwrap_or_default();
            let needed = match scheme {
                "Query" => Some("versionQueryName"),
                "Header" => Some("versionHeaderName"),
                _ => None,
            };
            if let Some(field) = needed
                && !props.contains_key(field)
            {
                return Err(RuleError::invalid(
                    field,
                    format!("'{field}' is required when 'versioningScheme' is '{scheme}'"),
                ));
            }
        }
        Kind::Logger => {
            props.entry("isBuffered").or_insert(json!(true));
        }
        Kind::ApiSchema => schema_rules(props)?,
        Kind::GlobalSchema => global_schema_rules(props)?,
        Kind::TenantAccess => {
            check_fixed_id(path, &["access", "gitAccess"])?;
            keep(props, &["primaryKey", "secondaryKey"]);
            with_keys(props);
            props.entry("enabled").or_insert(json!(false));
        }
        Kind::Gateway => {
            gateway_rules(path, props)?;
            keep(props, &["primaryKey", "secondaryKey"]);
            with_keys(props);
        }
        Kind::GatewayHostnameConfiguration => {
            if let Some(cert) = str_of(props, "certificateId").map(str::to_string)
                && !cert.is_empty()
            {
                let rel = require_exists(
                    tx,
                    &cert,
                    "certificateId",
                    "the certificate",
                    &[Kind::Certificate],
                )?;
                refs.push(rel.clone());
                props.insert("certificateId".into(), json!(rel));
            }
        }
        Kind::GatewayCertificateAuthority => {
            let cert = format!("/certificates/{}", path.id());
            refs.push(require_exists(
                tx,
                &cert,
                "certificateId",
                "the certificate",
                &[Kind::Certificate],
            )?);
            props.entry("isTrusted").or_insert(json!(false));
        }
        Kind::IdentityProvider
        | Kind::EmailTemplate
        | Kind::PortalSetting
        | Kind::ApiWiki
        | Kind::ProductWiki
        | Kind::ApiRelease
        | Kind::ApiIssue => portal_rules(tx, path, props, &mut refs)?,
        Kind::Diagnostic | Kind::ApiDiagnostic => {
            let logger = str_of(props, "loggerId").unwrap_or_default().to_string();
            let rel = require_exists(tx, &logger, "loggerId", "the logger", &[Kind::Logger])?;
            refs.push(rel.clone());
            props.insert("loggerId".into(), json!(rel));
        }
        Kind::ProductApi
        | Kind::ApiTag
        | Kind::OperationTag
        | Kind::ProductTag
        | Kind::ProductGroup
        | Kind::GroupUser => {
            let target_kind = path.kind.spec().link_target.expect("link kind");
            let id = path.id();
            if target_kind == Kind::Api && id.contains(";rev=") {
                return Err(RuleError::malformed(
                    "A product contains APIs, not API revisions; link the API id without ';rev='",
                ));
            }
            let target = ResourcePath::top(target_kind, id).as_string();
            if tx.get(&target)?.is_none() {
                return Err(RuleError::not_found(target_kind.spec().display));
            }
            props.clear();
            refs.push(target);
        }
        _ => {}
    }
    Ok(refs)
}

fn hash_password(password: &str) -> Result<String, RuleError> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| RuleError::Internal(format!("password hashing failed: {e}")))
}

/// Checks a password against a stored Argon2 hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn api_rules(
    tx: &mut WriteTx<'_>,
    path: &ResourcePath,
    props: &mut Map<String, Value>,
    existing: Option<&StoredResource>,
    refs: &mut Vec<String>,
) -> Result<(), RuleError> {
    let (base, rev) = split_revision(path.id()).map_err(|e| RuleError::malformed(e.to_string()))?;
    if let Some(rev) = rev {
        // A non-current revision: it starts as a copy of the current one.
        let current = tx
            .get(&format!("/apis/{base}"))?
            .ok_or_else(|| RuleError::not_found("Api"))?;
        if existing.is_none() {
            for (k, v) in &current.properties {
                if !props.contains_key(k) && k != "isCurrent" && k != "apiRevisionDescription" {
                    props.insert(k.clone(), v.clone());
                }
            }
        }
        props.insert("apiRevision".into(), json!(rev.to_string()));
        props.insert("isCurrent".into(), json!(false));
        props.remove("sourceApiId");
    } else {
        props.entry("apiRevision").or_insert(json!("1"));
        props.insert("isCurrent".into(), json!(true));
    }
    props.entry("type").or_insert(json!("http"));
    props.entry("subscriptionRequired").or_insert(json!(true));
    props.entry("protocols").or_insert(json!(["https"]));
    let names = props
        .entry("subscriptionKeyParameterNames")
        .or_insert(json!({}));
    if let Some(names) = names.as_object_mut() {
        names
            .entry("header")
            .or_insert(json!("Ocp-Apim-Subscription-Key"));
        names.entry("query").or_insert(json!("subscription-key"));
    }
    if let Some(protocols) = props.get("protocols").and_then(Value::as_array) {
        for p in protocols {
            let ok = p
                .as_str()
                .is_some_and(|p| ["http", "https", "ws", "wss"].contains(&p));
            if !ok {
                return Err(RuleError::invalid(
                    "protocols",
                    format!("'protocols' items must be http, https, ws or wss; {p} is not"),
                ));
            }
        }
    }
    if let Some(url) = str_of(props, "serviceUrl")
        && !url.is_empty()
        && !(url.starts_with("http://")
            || url.starts_with("https://")
            || url.starts_with("ws://")
            || url.starts_with("wss://"))
    {
        return Err(RuleError::invalid(
            "serviceUrl",
            format!("'serviceUrl' must be an absolute URL; '{url}' is not"),
        ));
    }
    let api_path = str_of(props, "path")
        .unwrap_or_default()
        .trim_matches('/')
        .to_string();
    if props.contains_key("path") {
        props.insert("path".into(), json!(api_path));
    }
    if let Some(vs) = str_of(props, "apiVersionSetId").map(str::to_string) {
        let rel = require_exists(
            tx,
            &vs,
            "apiVersionSetId",
            "the version set",
            &[Kind::ApiVersionSet],
        )?;
        refs.push(rel.clone());
        props.insert("apiVersionSetId".into(), json!(rel));
    }
    if rev.is_none() {
        // The path must be unique among current APIs, except versions of one version set.
        let my_set = str_of(props, "apiVersionSetId").map(str::to_string);
        let my_version = str_of(props, "apiVersion").unwrap_or_default().to_string();
        for other in tx.find_by_property(Kind::Api, "path", &api_path)? {
            if other.path == path.as_string() || other.path.contains(";rev=") {
                continue;
            }
            let same_path = str_of(&other.properties, "path")
                .is_some_and(|p| p.eq_ignore_ascii_case(&api_path));
            if !same_path {
                continue;
            }
            let other_set = str_of(&other.properties, "apiVersionSetId").map(str::to_string);
            let other_version = str_of(&other.properties, "apiVersion").unwrap_or_default();
            let distinct_versions =
                my_set.is_some() && my_set == other_set && other_version != my_version;
            if !distinct_versions {
                return Err(RuleError::invalid(
                    "path",
                    format!(
                        "The path '{api_path}' is already used by {}; API paths must be unique (versions of one version set excepted)",
                        other.path
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn operation_rules(
    tx: &mut WriteTx<'_>,
    path: &ResourcePath,
    props: &mut Map<String, Value>,
) -> Result<(), RuleError> {
    let method = str_of(props, "method")
        .unwrap_or_default()
        .to_ascii_uppercase();
    if method.is_empty() || !method.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(RuleError::invalid(
            "method",
            format!("'method' must be an HTTP method; '{method}' is not"),
        ));
    }
    props.insert("method".into(), json!(method));
    let template = str_of(props, "urlTemplate").unwrap_or_default().to_string();
    if !template.starts_with('/') {
        return Err(RuleError::invalid(
            "urlTemplate",
            format!("'urlTemplate' must start with '/'; '{template}' does not"),
        ));
    }
    let used = template_parameters(&template).map_err(|e| RuleError::invalid("urlTemplate", e))?;
    let path_part = template.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path_part.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(i) = segments
        .iter()
        .position(|s| *s == "*" || s.starts_with("{*"))
        .filter(|i| i + 1 < segments.len())
    {
        return Err(RuleError::invalid(
            "urlTemplate",
            format!(
                "the wildcard '{}' must be the last segment of the urlTemplate '{template}': it matches the rest of the path",
                segments[i]
            ),
        ));
    }
    let declared: Vec<String> = props
        .get("templateParameters")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for name in &used {
        if !declared.iter().any(|d| d == name) {
            return Err(RuleError::invalid(
                "templateParameters",
                format!(
                    "All template parameters used in the UriTemplate must be defined in the Operation: '{name}' is not"
                ),
            ));
        }
    }
    for name in &declared {
        if !used.iter().any(|u| u == name) {
            return Err(RuleError::invalid(
                "templateParameters",
                format!("Template parameter '{name}' is not used in the urlTemplate '{template}'"),
            ));
        }
    }
    let parent = path.parent_string();
    for other in tx.children(Kind::Operation, &parent)? {
        if other.path != path.as_string()
            && str_of(&other.properties, "method") == Some(method.as_str())
            && str_of(&other.properties, "urlTemplate")
                .is_some_and(|t| t.eq_ignore_ascii_case(&template))
        {
            return Err(RuleError::invalid(
                "urlTemplate",
                format!(
                    "Operation {} already has method {method} and urlTemplate '{template}'",
                    other.path
                ),
            ));
        }
    }
    props.entry("templateParameters").or_insert(json!([]));
    props.entry("responses").or_insert(json!([]));
    Ok(())
}

/// The `{name}` parameters of a URL template (path and query part).
pub fn template_parameters(template: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in urlTemplate '{template}'"))?;
        let name = after[..close].trim_start_matches('*');
        if name.is_empty() || name.contains('{') {
            return Err(format!(
                "empty or nested parameter in urlTemplate '{template}'"
            ));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("unmatched '}}' in urlTemplate '{template}'"));
    }
    Ok(out)
}

/// Side effects of a write that touch other resources.
/// A content item of a built-in type is checked as the portal will use it; a style's logo
/// must name an image, which is then kept from deletion by the reference.
fn content_item_rules(
    tx: &mut WriteTx<'_>,
    path: &ResourcePath,
    props: &mut Map<String, Value>,
    refs: &mut Vec<String>,
) -> Result<(), RuleError> {
    let type_id = path.parts[0].1.clone();
    portal_content::check_item(&type_id, props)
        .map_err(|e| RuleError::invalid(e.field, e.message))?;
    if type_id == "page" {
        let permalink = str_of(props, "permalink").unwrap_or_default().to_string();
        for other in tx.children(Kind::ContentItem, "/contentTypes/page")? {
            if other.path != path.as_string()
                && str_of(&other.properties, "permalink") == Some(permalink.as_str())
            {
                return Err(RuleError::invalid(
                    "permalink",
                    format!(
                        "The permalink '{permalink}' is already used by {}",
                        other.path
                    ),
                ));
            }
        }
    }
    if type_id == "styles"
        && let Some(logo) = str_of(props, "logo").filter(|l| !l.is_empty())
    {
        let blob = format!("/contentTypes/blob/contentItems/{logo}");
        if tx.get(&blob)?.is_none() {
            return Err(RuleError::invalid(
                "logo",
                format!("'logo' names the image '{logo}', which does not exist ({blob})"),
            ));
        }
        refs.push(blob);
    }
    Ok(())
}

/// Publishing: a new revision captures every content item (unless it brings its own copy, as an
/// import does) and becomes current. Making an older revision current is a revert.
fn portal_revision_rules(
    tx: &mut WriteTx<'_>,
    path: &ResourcePath,
    props: &mut Map<String, Value>,
    input: &Map<String, Value>,
    existing: Option<&StoredResource>,
) -> Result<(), RuleError> {
    let now = now_rfc3339();
    if let Some(e) = existing {
        for k in ["content", "createdDateTime", "status"] {
            if let Some(v) = e.properties.get(k) {
                props.entry(k).or_insert(v.clone());
            }
        }
        if input.get("isCurrent") == Some(&json!(false))
            && e.properties.get("isCurrent") == Some(&json!(true))
        {
            return Err(RuleError::invalid(
                "isCurrent",
                "The current revision stays current until another revision is made current",
            ));
        }
    }
    if !props.contains_key("content") {
        let mut content = Map::new();
        for item in tx.all_of_kind(Kind::ContentItem)? {
            let p = ResourcePath::parse_stored(&item.path).map_err(RuleError::from)?;
            content.insert(
                portal_content::content_key(&p.parts[0].1, p.id()),
                Value::Object(item.properties),
            );
        }
        props.insert("content".into(), Value::Object(content));
    }
    props
        .entry("isCurrent")
        .or_insert(json!(existing.is_none()));
    props.insert("status".into(), json!("completed"));
    props.entry("statusDetails").or_insert(json!("Published"));
    props.entry("createdDateTime").or_insert(json!(now.clone()));
    props.insert("updatedDateTime".into(), json!(now));
    if props.get("isCurrent") == Some(&json!(true)) {
        for other in tx.all_of_kind(Kind::PortalRevision)? {
            if other.path != path.as_string()
                && other.properties.get("isCurrent") == Some(&json!(true))
            {
                let mut p = other.properties.clone();
                p.insert("isCurrent".into(), json!(false));
                let refs = tx.references_of(&other.path)?;
                let other_path =
                    ResourcePath::parse_stored(&other.path).map_err(RuleError::from)?;
                tx.put(&other_path, p, &refs)?;
            }
        }
    }
    Ok(())
}

fn after_put(
    tx: &mut WriteTx<'_>,
    path: &ResourcePath,
    existing: Option<&StoredResource>,
) -> Result<(), RuleError> {
    match path.kind {
        Kind::User if existing.is_none() => {
            // New users are developers, as in APIM.
            let link = ResourcePath::new(
                Kind::GroupUser,
                vec![
                    ("groups", "developers".into()),
                    ("users", path.id().to_string()),
                ],
            );
            if tx.get("/groups/developers")?.is_some() {
                tx.put(&link, Map::new(), &[path.as_string()])?;
            }
        }
        Kind::Api => {
            let (base, rev) =
                split_revision(path.id()).map_err(|e| RuleError::malformed(e.to_string()))?;
            if rev.is_some() && existing.is_none() {
                // Copy the current revision's operations and policies into the new revision.
                let base_path = format!("/apis/{base}");
                for child in tx.descendants(&base_path)? {
                    if matches!(
                        child.kind,
                        Kind::Operation | Kind::ApiPolicy | Kind::OperationPolicy
                    ) {
                        let new_path =
                            format!("{}{}", path.as_string(), &child.path[base_path.len()..]);
                        let p = ResourcePath::parse_stored(&new_path).map_err(RuleError::from)?;
                        tx.put(&p, child.properties, &[])?;
                    }
                }
            }
        }
        Kind::NamedValue | Kind::PolicyFragment => {
            if let Some(written) = tx.get(&path.as_string())? {
                check_policies_using(tx, &written)
                    .map_err(|b| b.into_rule_error(|m| RuleError::invalid("value", m)))?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Why a change to a named value or fragment is refused: a policy using it would not compile,
/// or the store could not be read to tell.
#[derive(Debug)]
enum PolicyBreak {
    Breaks(String),
    Store(StoreError),
}

impl From<StoreError> for PolicyBreak {
    fn from(e: StoreError) -> PolicyBreak {
        PolicyBreak::Store(e)
    }
}

impl PolicyBreak {
    /// As the rules answer it: `refuse` says how a break is refused.
    fn into_rule_error(self, refuse: impl FnOnce(String) -> RuleError) -> RuleError {
        match self {
            PolicyBreak::Breaks(m) => refuse(m),
            PolicyBreak::Store(e) => e.into(),
        }
    }
}

/// The names a policy may use a named value or fragment by: its id, and a named value's
/// display name.
fn names_of(res: &StoredResource) -> Vec<String> {
    let mut names = vec![res.name().to_string()];
    if res.kind == Kind::NamedValue
        && let Some(d) = str_of(&res.properties, "displayName")
    {
        names.push(d.to_string());
    }
    names
}

/// Compiles again, in this transaction, every policy and fragment that uses the named value
/// or fragment `changed` (just written or deleted): a change that would leave one of them
/// unable to compile — an expression that no longer parses, a fragment nested too deeply, one
/// that is gone — is refused, naming it, instead of failing that API's requests later.
fn check_policies_using(tx: &WriteTx<'_>, changed: &StoredResource) -> Result<(), PolicyBreak> {
    let names = names_of(changed);
    let uses = |value: &str| match changed.kind {
        Kind::PolicyFragment => names.iter().any(|n| {
            value.contains(&format!("fragment-id=\"{n}\""))
                || value.contains(&format!("fragment-id='{n}'"))
        }),
        _ => names
            .iter()
            .any(|n| value.contains(&format!("{{{{{n}}}}}"))),
    };
    let kinds = [
        Kind::GlobalPolicy,
        Kind::ProductPolicy,
        Kind::ApiPolicy,
        Kind::OperationPolicy,
        Kind::PolicyFragment,
    ];
    for kind in kinds {
        for user in tx.all_of_kind(kind)? {
            let value = str_of(&user.properties, "value").unwrap_or_default();
            if user.path == changed.path || !uses(value) {
                continue;
            }
            let format = str_of(&user.properties, "format").unwrap_or("xml");
            let resolver = TxResolver::new(tx);
            let compiled = if kind == Kind::PolicyFragment {
                gatehouse_policy::doc::check_fragment(value, format, &resolver)
            } else {
                gatehouse_policy::parse_document(value, format, &resolver).map(|_| ())
            };
            resolver.failure()?;
            if let Err(e) = compiled {
                return Err(PolicyBreak::Breaks(format!(
                    "this change would break {} ({}), which uses {}: {e}",
                    user.path,
                    kind.spec().display,
                    changed.path
                )));
            }
        }
    }
    Ok(())
}

/// Makes the revision at `rev_path` (`/apis/x;rev=N`) the current one: the current API moves
/// to `/apis/x;rev=M` and the revision takes its place. Links to `/apis/x` keep pointing at the
/// API, now served by the new current revision.
pub fn make_current(tx: &mut WriteTx<'_>, rev_path: &ResourcePath) -> Result<(), RuleError> {
    let (base, _) =
        split_revision(rev_path.id()).map_err(|e| RuleError::malformed(e.to_string()))?;
    let base_path = ResourcePath::top(Kind::Api, base);
    let current = tx
        .get(&base_path.as_string())?
        .ok_or_else(|| RuleError::not_found("Api"))?;
    let old_rev = str_of(&current.properties, "apiRevision")
        .unwrap_or("1")
        .to_string();
    let old_path = ResourcePath::top(Kind::Api, &format!("{base};rev={old_rev}"));
    tx.move_tree(&base_path, &old_path, false)?;
    let mut old = tx.get(&old_path.as_string())?.expect("just moved");
    old.properties.insert("isCurrent".into(), json!(false));
    let old_refs = tx.references_of(&old.path)?;
    tx.put(&old_path, old.properties, &old_refs)?;
    tx.move_tree(rev_path, &base_path, false)?;
    let mut new = tx.get(&base_path.as_string())?.expect("just moved");
    new.properties.insert("isCurrent".into(), json!(true));
    let new_refs = tx.references_of(&new.path)?;
    tx.put(&base_path, new.properties, &new_refs)?;
    Ok(())
}

/// What happens to a resource that references one being deleted.
enum OnDelete {
    Cascade,
    Restrict(String),
}

fn on_delete(referrer: &StoredResource, target_kind: Kind, opts: &WriteOptions) -> OnDelete {
    match referrer.kind {
        k if k.is_link() => OnDelete::Cascade,
        Kind::Subscription => match target_kind {
            Kind::Api => OnDelete::Cascade,
            Kind::Product | Kind::User if opts.delete_subscriptions => OnDelete::Cascade,
            Kind::Product | Kind::User => OnDelete::Restrict(format!(
                "{} has subscriptions (such as {}); delete them first or repeat with deleteSubscriptions=true",
                target_kind.spec().display,
                referrer.path
            )),
            _ => OnDelete::Cascade,
        },
        // A user's issues go with the user; a release goes with its API.
        Kind::ApiIssue | Kind::ApiRelease => OnDelete::Cascade,
        _ => OnDelete::Restrict(format!(
            "{} is in use by {}; remove that reference first",
            target_kind.spec().display,
            referrer.path
        )),
    }
}

/// The content type of a GraphQL API's schema (APIM's).
pub const GRAPHQL_CONTENT_TYPE: &str = "application/vnd.ms-azure-apim.graphql.schema";

/// A schema's document is an object; a GraphQL schema's SDL must be valid, since the gateway
/// checks every query against it.
fn schema_rules(props: &Map<String, Value>) -> Result<(), RuleError> {
    if str_of(props, "contentType") == Some(GRAPHQL_CONTENT_TYPE) {
        let sdl = props
            .get("document")
            .and_then(|d| d.get("value"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                RuleError::invalid(
                    "document",
                    "a GraphQL schema's 'document.value' must hold its SDL",
                )
            })?;
        check_graphql_schema(sdl).map_err(|e| RuleError::invalid("document", e))?;
    }
    Ok(())
}

/// A service-level schema: a JSON one holds a usable JSON schema in `document` (or as text in
/// `value`); an XML one holds its text in `value`.
fn global_schema_rules(props: &Map<String, Value>) -> Result<(), RuleError> {
    let document = match (props.get("document"), str_of(props, "value")) {
        (Some(d), _) => Some(d.clone()),
        (None, Some(text)) if str_of(props, "schemaType") == Some("json") => Some(
            serde_json::from_str(text)
                .map_err(|e| RuleError::invalid("value", format!("the schema is not JSON: {e}")))?,
        ),
        (None, Some(_)) => None,
        (None, None) => {
            return Err(RuleError::invalid(
                "document",
                "a schema needs its 'document' (JSON) or 'value' (XML)",
            ));
        }
    };
    if str_of(props, "schemaType") == Some("json") {
        let document = document
            .ok_or_else(|| RuleError::invalid("document", "a JSON schema needs its 'document'"))?;
        gatehouse_policy::policies::content::check_schema(&document)
            .map_err(|e| RuleError::invalid("document", e))?;
    }
    Ok(())
}

/// Whether `sdl` is a valid GraphQL schema; the first problems, with line and column.
pub fn check_graphql_schema(sdl: &str) -> Result<(), String> {
    apollo_compiler::Schema::parse_and_validate(sdl, "schema.graphql")
        .map(|_| ())
        .map_err(|e| {
            let problems: Vec<String> = e
                .errors
                .iter()
                .take(3)
                .map(|d| {
                    let j = d.to_json();
                    let at = j
                        .locations
                        .first()
                        .map(|l| format!("line {}, column {}: ", l.line, l.column))
                        .unwrap_or_default();
                    format!("{at}{}", j.message)
                })
                .collect();
            format!("the GraphQL schema is not valid: {}", problems.join("; "))
        })
}

/// Deletes a resource with everything APIM deletes with it, in the caller's transaction.
/// Returns false when it did not exist.
pub fn delete_resource(
    tx: &mut WriteTx<'_>,
    path: &ResourcePath,
    opts: &WriteOptions,
) -> Result<bool, RuleError> {
    let key = path.as_string();
    let Some(existing) = tx.get(&key)? else {
        return Ok(false);
    };
    check_if_match(Some(&existing), opts.if_match.as_deref())?;
    match path.kind {
        Kind::Group if existing.properties.get("builtIn") == Some(&json!(true)) => {
            return Err(RuleError::conflict(format!(
                "The built-in group '{}' cannot be deleted.",
                path.id()
            )));
        }
        Kind::Subscription if path.id() == MASTER_SUBSCRIPTION => {
            return Err(RuleError::conflict(
                "The built-in all-access subscription 'master' cannot be deleted.",
            ));
        }
        Kind::ContentType
            if portal_content::BUILT_IN_TYPES
                .iter()
                .any(|t| t.0 == path.id()) =>
        {
            return Err(RuleError::conflict(format!(
                "The built-in content type '{}' cannot be deleted.",
                path.id()
            )));
        }
        Kind::PortalRevision if existing.properties.get("isCurrent") == Some(&json!(true)) => {
            return Err(RuleError::conflict(
                "The current portal revision cannot be deleted; make another revision current first.",
            ));
        }
        _ => {}
    }
    let mut roots = vec![existing];
    if path.kind == Kind::Api && !path.id().contains(";rev=") {
        // Deleting an API deletes all its revisions.
        let prefix = format!("/apis/{};rev=", path.id());
        for api in tx.children(Kind::Api, "")? {
            if api.path.starts_with(&prefix) {
                roots.push(api);
            }
        }
    }
    let mut doomed: Vec<StoredResource> = Vec::new();
    let mut queue = roots;
    while let Some(res) = queue.pop() {
        if doomed.iter().any(|d| d.path == res.path) {
            continue;
        }
        for child in tx.descendants(&res.path)? {
            if !doomed.iter().any(|d| d.path == child.path) {
                queue.push(child);
            }
        }
        for referrer in tx.referrers(&res.path)? {
            if doomed.iter().any(|d| d.path == referrer)
                || referrer.starts_with(&format!("{}/", res.path))
            {
                continue;
            }
            let Some(r) = tx.get(&referrer)? else {
                continue;
            };
            match on_delete(&r, res.kind, opts) {
                OnDelete::Cascade => queue.push(r),
                OnDelete::Restrict(msg) => return Err(RuleError::conflict(msg)),
            }
        }
        doomed.push(res);
    }
    // Children first, so the journal reads naturally when replayed.
    doomed.sort_by(|a, b| b.path.len().cmp(&a.path.len()).then(a.path.cmp(&b.path)));
    for d in &doomed {
        tx.delete(&d.path)?;
    }
    for d in doomed
        .iter()
        .filter(|d| matches!(d.kind, Kind::NamedValue | Kind::PolicyFragment))
    {
        check_policies_using(tx, d).map_err(|b| b.into_rule_error(RuleError::conflict))?;
    }
    Ok(true)
}

/// Named values and fragments as a policy being written sees them: in the same transaction.
/// A store that cannot be read is not a missing value: the failure is kept for the caller
/// ([`TxResolver::failure`]), which answers it rather than the compiler's complaint.
struct TxResolver<'a, 'b> {
    tx: &'a WriteTx<'b>,
    failed: std::cell::RefCell<Option<StoreError>>,
}

impl<'a, 'b> TxResolver<'a, 'b> {
    fn new(tx: &'a WriteTx<'b>) -> Self {
        TxResolver {
            tx,
            failed: std::cell::RefCell::new(None),
        }
    }

    /// The store failure met while resolving, if any.
    fn failure(&self) -> Result<(), StoreError> {
        match self.failed.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn kept<T>(&self, read: Result<T, StoreError>) -> Option<T> {
        read.map_err(|e| *self.failed.borrow_mut() = Some(e)).ok()
    }
}

impl gatehouse_policy::Resolver for TxResolver<'_, '_> {
    fn named_value(&self, name: &str) -> Option<String> {
        let path = ResourcePath::top(Kind::NamedValue, name).as_string();
        let by_id = self.kept(self.tx.get(&path)).flatten();
        let found = match by_id {
            Some(r) => Some(r),
            None => self
                .kept(
                    self.tx
                        .find_by_property(Kind::NamedValue, "displayName", name),
                )
                .and_then(|v| v.into_iter().next()),
        }?;
        Some(
            found
                .properties
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )
    }

    fn fragment(&self, id: &str) -> Option<(String, String)> {
        let path = ResourcePath::top(Kind::PolicyFragment, id).as_string();
        let f = self.kept(self.tx.get(&path)).flatten()?;
        let s = |k: &str| {
            f.properties
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Some((s("value")?, s("format").unwrap_or_else(|| "xml".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parameters_are_named_once_and_checked() {
        assert_eq!(
            template_parameters("/users/{id}/orders/{oid}?date={date}&again={id}").unwrap(),
            vec!["id", "oid", "date"]
        );
        assert_eq!(template_parameters("/files/{*rest}").unwrap(), vec!["rest"]);
        assert!(template_parameters("/a/{id").is_err());
        assert!(template_parameters("/a/}").is_err());
        assert!(template_parameters("/a/{}").is_err());
        assert!(template_parameters("/*").unwrap().is_empty());
    }

    #[test]
    fn references_are_kept_relative_to_the_service() {
        let arm = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ApiManagement/service/contoso/products/p1";
        assert_eq!(relative_ref(arm), "/products/p1");
        assert_eq!(relative_ref("products/p1/"), "/products/p1");
        assert_eq!(relative_ref("/apis"), "/apis");
    }

    #[test]
    fn generated_keys_are_long_and_distinct() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert!(
            a.len() >= 32 && a.chars().all(|c| c.is_ascii_hexdigit()),
            "{a}"
        );
        assert_eq!(etag(7), etag(7));
        assert_ne!(etag(7), etag(8));
    }
}
