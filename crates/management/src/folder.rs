//! A whole configuration as a folder of files in APIOps's layout: `GET /export` (a zip) and
//! `POST /import` (a zip or tar; plan, apply, prune).
//!
//! Invariants: an import is one store transaction — every resource goes through the same
//! rules as a PUT, so a folder with one bad file changes nothing and the error names the
//! file; a resource whose result would equal what is stored is not written (its attempt is
//! taken back), so applying a folder twice writes nothing the second time; a plan runs the
//! very same code and takes everything back. Exports hold no secret.

use crate::error::ApiError;
use crate::openapi_schemas::OPENAPI_SCHEMA;
use crate::render::public_properties;
use crate::respond::blocking;
use crate::rules::{self, Mode, WriteOptions};
use crate::state::AppState;
use crate::{openapi, specs};
use gatehouse_apiops::overrides::Overrides;
use gatehouse_apiops::read::{Desired, order_of};
use gatehouse_apiops::{Files, Item, Skipped, Specification, archive, arm, layout};
use gatehouse_model::{Kind, ResourcePath};
use gatehouse_store::WriteTx;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The largest archive `POST /import` takes.
pub const MAX_IMPORT_BODY: usize = 64 << 20;

/// What an import changes (or, for a plan, would change).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub applied: bool,
    pub revision: u64,
    pub created: Vec<Change>,
    pub updated: Vec<Change>,
    pub deleted: Vec<Change>,
    pub unchanged: Vec<String>,
    pub skipped: Vec<SkippedFile>,
    pub summary: String,
}

#[derive(Debug, Serialize)]
pub struct Change {
    pub id: String,
    /// The file that asks for it (for a deletion: why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For an update: the properties that change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SkippedFile {
    pub file: String,
    pub reason: String,
}

impl From<Skipped> for SkippedFile {
    fn from(s: Skipped) -> Self {
        SkippedFile {
            file: s.file,
            reason: s.reason,
        }
    }
}

/// How an import runs.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub plan: bool,
    pub prune: bool,
    /// The override file's path inside the archive.
    pub overrides: Option<String>,
    pub actor: String,
}

/// Operations (id, properties) by their API's path.
type Operations = BTreeMap<String, Vec<(String, Map<String, Value>)>>;

/// What an export reads: the resources (secrets removed), their references, the service.
struct Exported {
    items: Vec<Item>,
    operations: Operations,
    references: BTreeMap<String, Vec<String>>,
    service: Option<gatehouse_model::ServiceSettings>,
}

/// `GET /export`: the configuration (or the resources below `include`) as a zip.
pub async fn export(state: &Arc<AppState>, include: Vec<String>) -> Result<Vec<u8>, ApiError> {
    let files = export_files(state, include).await?;
    Ok(archive::zip(&files))
}

/// The files of an export.
pub async fn export_files(state: &Arc<AppState>, include: Vec<String>) -> Result<Files, ApiError> {
    let mut e = read_exported(state, include).await?;
    let specs = specifications(&mut e.items, &e.operations);
    Ok(gatehouse_apiops::write::export(&e.items, &specs).files)
}

/// `GET /export?format=arm`: an ARM deployment template of the configuration.
pub async fn export_template(
    state: &Arc<AppState>,
    include: Vec<String>,
) -> Result<Value, ApiError> {
    let e = read_exported(state, include).await?;
    let s = e
        .service
        .ok_or_else(|| ApiError::internal("the service has no settings"))?;
    let service = arm::ServiceInfo {
        name: s.name,
        location: s.location,
        sku: s.sku.name,
        capacity: s.sku.capacity,
        publisher_email: s.publisher_email,
        publisher_name: s.publisher_name,
    };
    Ok(arm::export(&service, &e.items, &e.references))
}

async fn read_exported(state: &Arc<AppState>, include: Vec<String>) -> Result<Exported, ApiError> {
    blocking(&state.store, move |s| {
        s.read(|r| -> Result<Exported, ApiError> {
            let mut e = Exported {
                items: Vec::new(),
                operations: BTreeMap::new(),
                references: BTreeMap::new(),
                service: r.service()?,
            };
            r.for_each_resource(|res| {
                if !included(&res.path, &include) {
                    return Ok(());
                }
                let properties = public_properties(res.kind, &res.properties);
                if res.kind == Kind::Operation {
                    let api = res.path[..res.path.find("/operations/").unwrap_or(0)].to_string();
                    e.operations
                        .entry(api)
                        .or_default()
                        .push((res.name().to_string(), properties.clone()));
                }
                e.items.push(Item {
                    path: res.path.clone(),
                    kind: res.kind,
                    properties,
                    file: String::new(),
                });
                Ok(())
            })?;
            r.for_each_ref(|from, to| {
                e.references.entry(from).or_default().push(to);
                Ok(())
            })?;
            Ok(e)
        })
    })
    .await
}

fn included(path: &str, include: &[String]) -> bool {
    include.is_empty()
        || include.iter().any(|p| {
            let p = p.trim_end_matches('/');
            path == p
                || path.starts_with(&format!("{p}/"))
                || path.starts_with(&format!("{p};rev="))
        })
}

/// Each API's description: a GraphQL API's schema, a SOAP API's WSDL, else an OpenAPI
/// document with a server relative to the gateway (so that the same configuration exports the
/// same bytes from any instance). The schemas written this way are left out of `items`.
fn specifications(items: &mut Vec<Item>, operations: &Operations) -> Vec<Specification> {
    let document = |api: &Item, id: &str| -> Option<(String, String)> {
        let path = format!("{}/schemas/{id}", api.path);
        items
            .iter()
            .find(|i| i.path == path)
            .and_then(|s| s.properties.get("document")?.get("value")?.as_str())
            .map(|text| (path, text.to_string()))
    };
    let mut specs = Vec::new();
    let mut carried = BTreeSet::new();
    for api in items.iter().filter(|i| i.kind == Kind::Api) {
        let kind = api.properties.get("type").and_then(Value::as_str);
        if kind == Some("websocket") {
            continue; // described by its API alone, as APIM exports it
        }
        let kept = match kind {
            Some("graphql") => document(api, specs::GRAPHQL_SCHEMA.0).map(|d| (d, "graphql")),
            Some("soap") => document(api, specs::WSDL_SCHEMA.0).map(|d| (d, "wsdl")),
            _ => None,
        };
        let (extension, text) = match kept {
            Some(((schema, text), ext)) => {
                carried.insert(schema);
                (ext, text)
            }
            None => {
                let ops = operations.get(&api.path).map(Vec::as_slice).unwrap_or(&[]);
                let schema = format!("{}/schemas/{}", api.path, OPENAPI_SCHEMA.0);
                let components = items
                    .iter()
                    .find(|i| i.path == schema)
                    .and_then(|s| s.properties.get("document"));
                if components.is_some() {
                    carried.insert(schema);
                }
                let doc = openapi::export(&api.properties, "", ops, components);
                (
                    "yaml",
                    serde_norway::to_string(&doc).expect("JSON values serialise as YAML"),
                )
            }
        };
        specs.push(Specification {
            api: api.path.clone(),
            extension: extension.into(),
            text,
            file: String::new(),
        });
    }
    items.retain(|i| !carried.contains(&i.path));
    specs
}

/// What an import reads: a folder's archive, or an ARM template (with its parameters).
pub enum Source<'a> {
    Archive(&'a [u8]),
    Template(&'a [u8]),
}

/// `POST /import`: reads the source, then plans or applies it.
pub async fn import(
    state: &Arc<AppState>,
    source: Source<'_>,
    opts: ImportOptions,
) -> Result<Plan, ApiError> {
    let desired = match source {
        Source::Archive(body) => read_archive(body, &opts)?,
        Source::Template(body) => read_template(body)?,
    };
    let parsed = parse_specifications(&desired)?;
    blocking(&state.store, move |s| {
        let actor = opts.actor.clone();
        // A plan is a trial, always taken back: it is answered during a freeze too.
        let done = if opts.plan {
            s.trial_as(&actor, |tx| apply(tx, &desired, &parsed, &opts))?
        } else {
            s.write_as(&actor, |tx| apply(tx, &desired, &parsed, &opts))?
        };
        let (mut plan, revision) = (done.value, done.revision);
        plan.applied = !opts.plan;
        plan.revision = revision;
        plan.skipped = desired.skipped.iter().cloned().map(Into::into).collect();
        plan.summary = summary(&plan);
        Ok(plan)
    })
    .await
}

fn read_archive(body: &[u8], opts: &ImportOptions) -> Result<Desired, ApiError> {
    let mut files = archive::read(body, archive::LIMITS).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "InvalidArchive",
            e.to_string(),
        )
    })?;
    let overrides = match &opts.overrides {
        None => None,
        Some(name) => {
            let bytes = files.remove(name).ok_or_else(|| {
                ApiError::invalid("overrides", format!("the archive holds no file '{name}'"))
            })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                ApiError::invalid("overrides", format!("{name}: the file is not UTF-8"))
            })?;
            Some(Overrides::parse(name, &text).map_err(|e| file_errors(vec![e]))?)
        }
    };
    gatehouse_apiops::read::read(&files, overrides.as_ref()).map_err(file_errors)
}

/// A body `{"template": {…}, "parameters": {…}}` (or the template alone).
fn read_template(body: &[u8]) -> Result<Desired, ApiError> {
    let body = crate::respond::parse_json_body(body)?;
    let (template, parameters) = match body.get("template") {
        Some(t) => (t.clone(), body.get("parameters").cloned()),
        None => (Value::Object(body), None),
    };
    arm::read(&template, parameters.as_ref()).map_err(file_errors)
}

/// Errors in files: each detail's target is its file; one error's message names it too.
fn file_errors(errors: Vec<gatehouse_apiops::FileError>) -> ApiError {
    let mut e = ApiError::validation(
        errors
            .iter()
            .map(|e| gatehouse_model::FieldError::new(&e.file, &e.message))
            .collect(),
    );
    e.message = match errors.as_slice() {
        [one] => one.to_string(),
        many => format!("{} files have errors:", many.len()),
    };
    e
}

/// What each specification describes, by API path; an unreadable one is an error naming its
/// file.
type Parsed = BTreeMap<String, openapi::ImportedApi>;

fn parse_specifications(desired: &Desired) -> Result<Parsed, ApiError> {
    let mut out = Parsed::new();
    let mut errors = Vec::new();
    for spec in &desired.specifications {
        let Some(kind) = specs::SpecKind::from_extension(&spec.extension) else {
            continue;
        };
        match specs::import(kind, &spec.text) {
            Ok(api) => {
                out.insert(spec.api.clone(), api);
            }
            Err(e) => errors.push(gatehouse_apiops::FileError::new(spec.file.clone(), e)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(file_errors(errors))
    }
}

fn apply(
    tx: &mut WriteTx<'_>,
    desired: &Desired,
    parsed: &Parsed,
    opts: &ImportOptions,
) -> Result<Plan, ApiError> {
    let mut plan = Plan::default();
    let secrets = kept_secrets(tx, desired)?;
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for item in &desired.items {
        let mut props = item.properties.clone();
        if let Some(value) = secrets.get(&item.path) {
            props.insert("value".into(), value.clone());
        }
        let spec = parsed.get(&item.path).filter(|_| item.kind == Kind::Api);
        if let Some(t) = spec.and_then(|s| s.api_type) {
            props.entry("type").or_insert(Value::String(t.into()));
        }
        let path = ResourcePath::parse_stored(&item.path).map_err(ApiError::from)?;
        put_one(tx, &path, props, &item.file, &mut plan)?;
        wanted.insert(item.path.clone());
        if let Some(spec) = spec {
            let file = spec_file(desired, &item.path);
            if let Some((id, schema)) = &spec.schema {
                let mut parts = path.parts.clone();
                parts.push(("schemas", id.clone()));
                let schema_path = ResourcePath::new(Kind::ApiSchema, parts);
                put_one(tx, &schema_path, schema.clone(), &file, &mut plan)?;
                wanted.insert(schema_path.as_string());
            }
            apply_operations(tx, &path, &spec.operations, &file, &mut plan, &mut wanted)?;
        }
    }
    if opts.prune {
        prune(tx, desired, &wanted, &mut plan)?;
    }
    Ok(plan)
}

fn spec_file(desired: &Desired, api: &str) -> String {
    desired
        .specifications
        .iter()
        .find(|s| s.api == api)
        .map(|s| s.file.clone())
        .unwrap_or_default()
}

/// Secret named values the folder gives no value: the instance's own value is kept; one the
/// instance does not have is an error (never an empty secret).
fn kept_secrets(tx: &WriteTx<'_>, desired: &Desired) -> Result<BTreeMap<String, Value>, ApiError> {
    let mut kept = BTreeMap::new();
    let mut missing = Vec::new();
    for item in &desired.secrets_without_value {
        match tx.get(&item.path)?.and_then(|r| r.properties.get("value").cloned()) {
            Some(v) if !v.is_null() => {
                kept.insert(item.path.clone(), v);
            }
            _ => missing.push(gatehouse_apiops::FileError::new(
                &item.file,
                format!(
                    "the secret named value '{}' has no value: give it one in the overrides file (namedValues: - name: {0}, properties: {{value: …}}), e.g. from an environment variable as {{#TOKEN#}}",
                    item.path.trim_start_matches("/namedValues/")
                ),
            )),
        }
    }
    if missing.is_empty() {
        Ok(kept)
    } else {
        Err(file_errors(missing))
    }
}

/// Puts one resource as PUT does, keeping the write only if it changes something.
fn put_one(
    tx: &mut WriteTx<'_>,
    path: &ResourcePath,
    props: Map<String, Value>,
    file: &str,
    plan: &mut Plan,
) -> Result<(), ApiError> {
    let key = path.as_string();
    let before = tx.get(&key)?.map(|r| r.properties);
    if before.as_ref() == Some(&props) {
        // Stored exactly as asked (policies, operations): a PUT would store the same.
        plan.unchanged.push(key);
        return Ok(());
    }
    let changed = tx.attempt(|tx| {
        rules::put_resource(tx, path, props, Mode::Put, &WriteOptions::default())
            .map_err(|e| in_file(file, e.into()))?;
        let after = tx.get(&key)?.map(|r| r.properties).unwrap_or_default();
        let changed = match &before {
            None => Some(Vec::new()),
            Some(b) => Some(changed_properties(b, &after)).filter(|c| !c.is_empty()),
        };
        let keep = changed.is_some();
        Ok::<_, ApiError>((changed, keep))
    })?;
    let change = |properties| Change {
        id: key.clone(),
        file: Some(file.to_string()),
        reason: None,
        properties,
    };
    match (before.is_some(), changed) {
        (false, _) => plan.created.push(change(Vec::new())),
        (true, Some(props)) => plan.updated.push(change(props)),
        (true, None) => plan.unchanged.push(key),
    }
    Ok(())
}

fn in_file(file: &str, mut e: ApiError) -> ApiError {
    e.message = format!("{file}: {}", e.message);
    for d in &mut e.details {
        d.message = format!("{file}: {}", d.message);
    }
    e
}

/// The top-level properties whose values differ.
fn changed_properties(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<String> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}

/// An API's operations become exactly those of its specification, as APIM's import does.
fn apply_operations(
    tx: &mut WriteTx<'_>,
    api: &ResourcePath,
    ops: &[(String, Map<String, Value>)],
    file: &str,
    plan: &mut Plan,
    wanted: &mut BTreeSet<String>,
) -> Result<(), ApiError> {
    let api_key = api.as_string();
    for existing in tx.children(Kind::Operation, &api_key)? {
        if !ops.iter().any(|(id, _)| existing.name() == id) {
            let p = ResourcePath::parse_stored(&existing.path).map_err(ApiError::from)?;
            rules::delete_resource(tx, &p, &WriteOptions::default())
                .map_err(|e| in_file(file, e.into()))?;
            plan.deleted.push(Change {
                id: existing.path.clone(),
                file: Some(file.to_string()),
                reason: Some("not in the API's specification".into()),
                properties: Vec::new(),
            });
        }
    }
    for (id, props) in ops {
        let mut parts = api.parts.clone();
        parts.push(("operations", id.clone()));
        let path = ResourcePath::new(Kind::Operation, parts);
        put_one(tx, &path, props.clone(), file, plan)?;
        wanted.insert(path.as_string());
    }
    Ok(())
}

/// Deletes what the folder's present folders hold in the instance but not in the folder.
fn prune(
    tx: &mut WriteTx<'_>,
    desired: &Desired,
    wanted: &BTreeSet<String>,
    plan: &mut Plan,
) -> Result<(), ApiError> {
    let mut doomed = Vec::new();
    let kinds: BTreeSet<Kind> = layout::ENTRIES.iter().map(|e| e.kind).collect();
    for kind in kinds {
        let entry = layout::entries_of(kind).next().expect("listed");
        for res in tx.all_of_kind(kind)? {
            if wanted.contains(&res.path) || never_pruned(&res) {
                continue;
            }
            let path = ResourcePath::parse_stored(&res.path).map_err(ApiError::from)?;
            let file = layout::file_of(entry, &path);
            let segs: Vec<&str> = file.split('/').collect();
            let owner = match entry.folder.len() {
                0 => continue,
                2 => segs[0].to_string(),
                _ => format!("{}/{}", segs[0], segs[1]),
            };
            if desired.folders.contains(&owner) {
                doomed.push((order_of(kind), path, owner));
            }
        }
    }
    doomed.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| a.1.as_string().cmp(&b.1.as_string()))
    });
    for (_, path, owner) in doomed {
        let key = path.as_string();
        if rules::delete_resource(tx, &path, &WriteOptions::default())
            .map_err(|e| in_file(&owner, e.into()))?
        {
            plan.deleted.push(Change {
                id: key,
                file: None,
                reason: Some(format!("not in the folder, and '{owner}' is (prune)")),
                properties: Vec::new(),
            });
        }
    }
    Ok(())
}

/// What an export never writes, so a prune never deletes it.
fn never_pruned(res: &gatehouse_model::StoredResource) -> bool {
    (res.kind == Kind::Group && res.properties.get("builtIn") == Some(&Value::Bool(true)))
        || res.path == format!("/subscriptions/{}", rules::MASTER_SUBSCRIPTION)
}

fn summary(plan: &Plan) -> String {
    format!(
        "{}{} created, {} updated, {} deleted, {} unchanged; {} files left out",
        if plan.applied { "" } else { "plan: " },
        plan.created.len(),
        plan.updated.len(),
        plan.deleted.len(),
        plan.unchanged.len(),
        plan.skipped.len()
    )
}
