//! HTTP dispatch for the management API: one handler resolves the path (with or without the
//! ARM prefix) and applies APIM's semantics — PUT create-or-replace, PATCH merge, DELETE,
//! HEAD/ETag, lists with `$top`/`$skip`/`$filter`, actions such as `listSecrets`.

use crate::error::ApiError;
use crate::render::{public_properties, render, render_resolved};
use crate::respond::{
    blocking, get_service, json_response, method_not_allowed, parse_json_body, service_body,
    with_etag, with_revision,
};
use crate::rules::{self, Mode, WriteOptions, canonicalize};
use crate::state::AppState;
use crate::{openapi, service};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gatehouse_model::{
    Filter, Kind, ResourcePath, StoredResource, Target, resolve, strip_arm_prefix,
};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

pub const MAX_BODY: usize = 4 * 1024 * 1024;
const DEFAULT_PAGE: u64 = 100;
const MAX_PAGE: u64 = 1000;

type Query = HashMap<String, String>;

fn parse_query(uri: &axum::http::Uri) -> Result<Query, ApiError> {
    let q = uri.query().unwrap_or("");
    let mut out = HashMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| -> Result<String, ApiError> {
            gatehouse_model::path::percent_decode(&s.replace('+', " ")).map_err(|_| {
                ApiError::bad_request(format!(
                    "the query parameter '{k}' is not valid percent-encoding or UTF-8"
                ))
            })
        };
        out.insert(dec(k)?, dec(v)?);
    }
    Ok(out)
}

async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!(
                    "The request body is larger than the limit of {limit} bytes ({} MiB).",
                    limit >> 20
                ),
            ))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "the request body could not be read: {e}"
        ))),
    }
}

/// The `properties` object of a resource body.
fn properties_of(body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    for key in body.keys() {
        if !["properties", "id", "name", "type", "etag"].contains(&key.as_str()) {
            return Err(ApiError::invalid(
                key,
                format!(
                    "'{key}' is not allowed at the top level of the body; put resource properties inside 'properties'"
                ),
            ));
        }
    }
    match body.get("properties") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(p)) => Ok(p.clone()),
        Some(_) => Err(ApiError::invalid(
            "properties",
            "'properties' must be an object",
        )),
    }
}

fn write_options(headers: &HeaderMap, query: &Query, actor: &str) -> WriteOptions {
    WriteOptions {
        actor: actor.to_string(),
        if_match: headers
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        delete_subscriptions: query
            .get("deleteSubscriptions")
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
    }
}

/// ARM's polling headers for a long-running operation: `Location` (its result),
/// `Azure-AsyncOperation` (its status) and `Retry-After`.
fn poll_headers(resp: &mut Response, base: &str, id: &str, api_version: Option<&String>) {
    let version = api_version
        .map(|v| format!("?api-version={v}"))
        .unwrap_or_default();
    let headers = resp.headers_mut();
    for (name, url) in [
        (
            header::LOCATION.as_str(),
            format!("{base}/operationresults/{id}{version}"),
        ),
        (
            "azure-asyncoperation",
            format!("{base}/operationstatuses/{id}{version}"),
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&url) {
            headers.insert(name, v);
        }
    }
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(crate::operations::RETRY_AFTER_SECONDS),
    );
}

/// `GET /export` and `POST /import`: the configuration as a folder (see `folder`).
async fn folder_route(
    state: &Arc<AppState>,
    method: &Method,
    path: &str,
    query: &Query,
    body: &[u8],
    actor: &str,
) -> Result<Option<Response>, ApiError> {
    let trimmed = path.trim_end_matches('/');
    let flag = |name: &str| {
        query
            .get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    if trimmed.eq_ignore_ascii_case("/export") {
        if *method != Method::GET {
            return Err(method_not_allowed());
        }
        let include = query
            .get("include")
            .map(|v| {
                v.split(',')
                    .map(str::to_string)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Some(match query.get("format").map(String::as_str) {
            None | Some("apiops") => {
                let zip = crate::folder::export(state, include).await?;
                ([(header::CONTENT_TYPE, "application/zip")], zip).into_response()
            }
            Some("arm") => json_response(
                StatusCode::OK,
                crate::folder::export_template(state, include).await?,
            ),
            Some(other) => {
                return Err(ApiError::invalid(
                    "format",
                    format!(
                        "the export format '{other}' is not supported; use apiops (a zip) or arm (a template)"
                    ),
                ));
            }
        }));
    }
    if trimmed.eq_ignore_ascii_case("/import") {
        if *method != Method::POST {
            return Err(method_not_allowed());
        }
        let opts = crate::folder::ImportOptions {
            plan: flag("plan"),
            prune: flag("prune"),
            overrides: query.get("overrides").cloned(),
            actor: actor.to_string(),
        };
        let source = match query.get("format").map(String::as_str) {
            None | Some("apiops") => crate::folder::Source::Archive(body),
            Some("arm") => crate::folder::Source::Template(body),
            Some(other) => {
                return Err(ApiError::invalid(
                    "format",
                    format!(
                        "the import format '{other}' is not supported; use apiops (a zip or tar) or arm (a template)"
                    ),
                ));
            }
        };
        let plan = crate::folder::import(state, source, opts).await?;
        let value = serde_json::to_value(&plan).map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok(Some(with_revision(
            json_response(StatusCode::OK, value),
            plan.revision,
        )));
    }
    Ok(None)
}

/// The entry point for every management request.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let arm = crate::arm::prefix_of(req.uri().path());
    let resp = match handle(state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    match arm {
        Some(arm) => with_arm_ids(resp, &arm.prefix).await,
        None => resp,
    }
}

/// A JSON answer to a request through the ARM prefix, with its resources' ids and references
/// as full ARM ids (`arm::to_arm_ids`).
async fn with_arm_ids(resp: Response, prefix: &str) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal("a response body could not be read").into_response();
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    crate::arm::to_arm_ids(&mut value, prefix);
    let text = value.to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(text))
}

/// One authenticated request as the routes see it.
struct Call {
    state: Arc<AppState>,
    method: Method,
    headers: HeaderMap,
    raw_path: String,
    /// The path below the service (the ARM prefix stripped).
    path: String,
    query: Query,
    body: bytes::Bytes,
    /// Who makes the request, for the journal.
    actor: String,
}

impl Call {
    fn trimmed(&self) -> &str {
        self.path.trim_end_matches('/')
    }

    fn is(&self, route: &str) -> bool {
        self.trimmed().eq_ignore_ascii_case(route)
    }

    /// The base URL of this request's service, as the request addressed it (with or without
    /// the ARM prefix, without the path below the service), for URLs the answer gives.
    fn service_base(&self) -> String {
        let base = self
            .state
            .urls
            .read()
            .expect("urls lock")
            .management
            .clone();
        let raw = self.raw_path.trim_end_matches('/');
        let prefix = &raw[..raw.len() - self.trimmed().len()];
        format!("{}{}", base.trim_end_matches('/'), prefix)
    }
}

async fn handle(state: Arc<AppState>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    if parts.method == Method::GET
        && let Some(token) = parts.uri.path().strip_prefix("/exports/")
    {
        return download(&state, token);
    }
    if let Some(rest) = parts.uri.path().strip_prefix(crate::gateway_link::PREFIX) {
        let query = parse_query(&parts.uri)?;
        let body = read_body(body, MAX_BODY).await?;
        return crate::gateway_link::serve(
            &state,
            &parts.method,
            &parts.headers,
            rest,
            &query,
            &body,
        )
        .await;
    }
    let call = admit(state, parts, body).await?;
    if let Some(resp) = account_route(&call).await? {
        return Ok(resp);
    }
    if let Some(resp) = move_route(&call).await? {
        return Ok(resp);
    }
    // A plan changes nothing, so it is answered during a freeze too.
    let plan = call.is("/import")
        && call
            .query
            .get("plan")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !plan {
        let last_segment = call.trimmed().rsplit('/').next();
        call.state
            .freeze
            .check(&call.state.store, &call.method, last_segment)
            .await?;
    }
    if let Some(resp) = instance_route(&call).await? {
        return Ok(resp);
    }
    if let Some(resp) = operation_route(&call).await? {
        return Ok(resp);
    }
    resource_route(call).await
}

/// A download link of an API export: the URL is the capability (no bearer token).
fn download(state: &AppState, token: &str) -> Result<Response, ApiError> {
    let (content_type, bytes) = state.downloads.get(token).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "The download link is unknown or has expired.",
        )
    })?;
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

/// Authentication, authorization, the ARM prefix's checks, then the body (within its limit).
async fn admit(
    state: Arc<AppState>,
    parts: axum::http::request::Parts,
    body: Body,
) -> Result<Call, ApiError> {
    let caller = crate::access::authenticate(&state, &parts.headers)?;
    gatehouse_model::check_no_dot_segments(parts.uri.path())?;
    let query = parse_query(&parts.uri)?;
    let raw_path = parts.uri.path().to_string();
    let path = strip_arm_prefix(&raw_path).to_string();
    crate::access::authorize(&caller, &parts.method, &path)?;
    crate::arm::check_api_version(query.get("api-version").map(String::as_str))?;
    if let Some(arm) = crate::arm::prefix_of(&raw_path) {
        let name = blocking(&state.store, |s| {
            Ok(s.read(|r| r.service())?.map(|s| s.name))
        })
        .await?;
        crate::arm::check_service(&arm, &state.arm_scope, name.as_deref().unwrap_or_default())?;
    }
    let limit = if path.trim_end_matches('/').eq_ignore_ascii_case("/import") {
        crate::folder::MAX_IMPORT_BODY
    } else {
        MAX_BODY
    };
    let body = read_body(body, limit).await?;
    Ok(Call {
        state,
        method: parts.method,
        headers: parts.headers,
        raw_path,
        path,
        query,
        body,
        actor: caller.id,
    })
}

/// ARM's provider-level requests and the scoped tokens.
async fn account_route(call: &Call) -> Result<Option<Response>, ApiError> {
    if let Some(route) = crate::provider::provider_route(&call.raw_path) {
        let resp =
            crate::provider::serve_provider(&call.state, route, &call.method, &call.body).await?;
        return Ok(Some(resp));
    }
    match call
        .path
        .strip_prefix("/tokens")
        .filter(|r| r.is_empty() || r.starts_with('/'))
    {
        Some(rest) => Ok(Some(
            tokens(&call.state, &call.method, rest, &call.body).await?,
        )),
        None => Ok(None),
    }
}

/// What a move asks of an instance before the freeze is checked: the freeze itself, drain,
/// digest, and deleting the service (how a move retires its source, allowed while frozen).
async fn move_route(call: &Call) -> Result<Option<Response>, ApiError> {
    let (state, method) = (&call.state, &call.method);
    let resp = if call.is("/freeze") {
        match *method {
            Method::GET => json_response(StatusCode::OK, state.freeze.render(&state.store).await?),
            Method::POST => json_response(
                StatusCode::OK,
                state.freeze.start(&state.store, &call.body).await?,
            ),
            Method::DELETE => {
                state.freeze.lift(&state.store).await?;
                json_response(StatusCode::OK, state.freeze.render(&state.store).await?)
            }
            _ => return Err(method_not_allowed()),
        }
    } else if call.is("/drain") {
        crate::moving::drain(state, method, &call.body)?
    } else if call.is("/digest") {
        match *method {
            Method::POST => crate::moving::digest(state, &call.body).await?,
            _ => return Err(method_not_allowed()),
        }
    } else if *method == Method::DELETE && call.trimmed().is_empty() {
        let confirm = call.query.get("confirm").map(String::as_str);
        crate::moving::delete_service(state, confirm).await?
    } else {
        return Ok(None);
    };
    Ok(Some(resp))
}

/// Instance-wide requests: adopting an identity, configuration as files, metrics, the journal,
/// reports, and the derived collections.
async fn instance_route(call: &Call) -> Result<Option<Response>, ApiError> {
    let (state, method, query) = (&call.state, &call.method, &call.query);
    if call.is("/adoptIdentity") {
        return match *method {
            Method::POST => Ok(Some(
                crate::moving::adopt_identity(state, &call.body, &call.actor).await?,
            )),
            _ => Err(method_not_allowed()),
        };
    }
    let folder = folder_route(state, method, &call.path, query, &call.body, &call.actor).await?;
    if folder.is_some() {
        return Ok(folder);
    }
    if call.path == "/metrics"
        && let Some(render) = &state.metrics
    {
        let text = render();
        return Ok(Some(
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        ));
    }
    if let Some(kind) = call.path.strip_prefix("/reports/") {
        return match *method {
            Method::GET => Ok(Some(
                reports(state, &kind.to_ascii_lowercase(), &call.raw_path, query).await?,
            )),
            _ => Err(method_not_allowed()),
        };
    }
    if let Some(resp) = journal_route(call).await? {
        return Ok(Some(resp));
    }
    derived_route(call).await
}

/// `GET /journal`, `POST /journal/listSecrets`, `POST /journal/apply`.
async fn journal_route(call: &Call) -> Result<Option<Response>, ApiError> {
    let (state, raw_path, query) = (&call.state, &call.raw_path, &call.query);
    let resp = if call.is("/journal/listSecrets") || call.is("/journal/apply") {
        if call.method != Method::POST {
            return Err(method_not_allowed());
        }
        if call.is("/journal/apply") {
            journal_apply(state, &call.body, &call.actor).await?
        } else {
            journal(state, raw_path, query, true).await?
        }
    } else if call.is("/journal") {
        match call.method {
            Method::GET => journal(state, raw_path, query, false).await?,
            _ => return Err(method_not_allowed()),
        }
    } else {
        return Ok(None);
    };
    Ok(Some(resp))
}

/// Collections derived from stored resources (`crate::catalog`).
async fn derived_route(call: &Call) -> Result<Option<Response>, ApiError> {
    if call.method != Method::GET {
        return Ok(None);
    }
    let items = match call.trimmed().to_ascii_lowercase().as_str() {
        "/apisbytags" => crate::catalog::apis_by_tags(&call.state).await?,
        "/issues" => crate::catalog::all_issues(&call.state).await?,
        _ => return Ok(None),
    };
    let (skip, top) = paging(&call.query)?;
    Ok(Some(page_response(
        &call.state,
        items,
        skip,
        top,
        &call.raw_path,
        &call.query,
    )))
}

/// APIM's long-running backup and restore: starting one, its status, its result.
async fn operation_route(call: &Call) -> Result<Option<Response>, ApiError> {
    let state = &call.state;
    for (name, kind) in [("/backup", "backup"), ("/restore", "restore")] {
        if call.is(name) {
            if call.method != Method::POST {
                return Err(method_not_allowed());
            }
            let id = crate::operations::start(state, kind, &call.body, &call.actor).await?;
            let mut resp = StatusCode::ACCEPTED.into_response();
            poll_headers(
                &mut resp,
                &call.service_base(),
                &id,
                call.query.get("api-version"),
            );
            return Ok(Some(resp));
        }
    }
    let trimmed = call.trimmed();
    let (id, results) = match (
        trimmed.strip_prefix("/operationstatuses/"),
        trimmed.strip_prefix("/operationresults/"),
    ) {
        (Some(id), _) => (id, false),
        (None, Some(id)) => (id, true),
        (None, None) => return Ok(None),
    };
    if call.method != Method::GET {
        return Err(method_not_allowed());
    }
    let op = state
        .operations
        .find(&state.store, id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                format!("Operation '{id}' not found."),
            )
        })?;
    if !results {
        let body = crate::operations::status_body(id, &op);
        return Ok(Some(json_response(StatusCode::OK, body)));
    }
    operation_result(call, id, &op).await.map(Some)
}

/// `GET …/operationresults/{id}`: 202 while running (with the polling headers), then the
/// service (with the operation's outcome) or the operation's error.
async fn operation_result(
    call: &Call,
    id: &str,
    op: &crate::operations::Operation,
) -> Result<Response, ApiError> {
    let status = op.status.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match status {
        crate::operations::OpStatus::Running => {
            let mut resp = json_response(
                StatusCode::ACCEPTED,
                crate::operations::progress_body(id, op),
            );
            poll_headers(
                &mut resp,
                &call.service_base(),
                id,
                call.query.get("api-version"),
            );
            Ok(resp)
        }
        crate::operations::OpStatus::Succeeded(None) => {
            let outcome = op.outcome.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match outcome {
                None => get_service(&call.state).await,
                Some(outcome) => {
                    let mut body = service_body(&call.state).await?;
                    body["outcome"] = outcome;
                    Ok(json_response(StatusCode::OK, body))
                }
            }
        }
        crate::operations::OpStatus::Succeeded(Some(v)) => Ok(json_response(StatusCode::OK, v)),
        crate::operations::OpStatus::Failed {
            status,
            code,
            message,
        } => Err(ApiError::new(status, code, message)),
    }
}

/// The service and its resources: collections, resources and their actions.
async fn resource_route(call: Call) -> Result<Response, ApiError> {
    let Call {
        state,
        method,
        headers,
        raw_path,
        path,
        query,
        body,
        actor,
    } = call;
    let options = || write_options(&headers, &query, &actor);
    match (method, resolve(&path)?) {
        (Method::GET, Target::Service) | (Method::HEAD, Target::Service) => {
            get_service(&state).await
        }
        (m @ (Method::PATCH | Method::PUT), Target::Service) => {
            let b = parse_json_body(&body)?;
            let actor = actor.clone();
            blocking(&state.store, move |s| {
                if m == Method::PUT {
                    service::put_service(s, &b, &actor)
                } else {
                    service::patch_service(s, &b, &actor)
                }
            })
            .await?;
            get_service(&state).await
        }
        (Method::GET, Target::Collection { kind, parent }) => {
            list(&state, kind, parent, &raw_path, &query).await
        }
        (Method::GET, Target::Resource(p)) => {
            crate::catalog::ensure_tenant_access(&state, &p).await?;
            get_resource(&state, p, &query, false).await
        }
        (Method::HEAD, Target::Resource(p)) => get_resource(&state, p, &query, true).await,
        (m @ (Method::PUT | Method::PATCH), Target::Resource(p)) => {
            let mode = if m == Method::PUT {
                Mode::Put
            } else {
                Mode::Patch
            };
            put(&state, p, parse_json_body(&body)?, mode, options()).await
        }
        (Method::DELETE, Target::Resource(p)) => delete(&state, p, options()).await,
        (m, Target::Action { path, action }) => {
            action_handler(&state, m, path, &action, &raw_path, &query, &actor, &body).await
        }
        _ => Err(method_not_allowed()),
    }
}

/// `/tokens`: the admin lists (`GET`), creates (`POST`, the value shown this once) and revokes
/// (`DELETE /tokens/{id}`) scoped tokens (see [`crate::access`]).
async fn tokens(
    state: &Arc<AppState>,
    method: &Method,
    rest: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    use crate::access;
    let id = rest.trim_matches('/').to_string();
    let not_found = |id: &str| ApiError::not_found(&format!("Token '{id}'"));
    match (method, id.is_empty()) {
        (&Method::GET, true) => {
            let all = blocking(&state.store, |s| Ok(s.tokens()?)).await?;
            let value: Vec<Value> = all.iter().map(access::render).collect();
            Ok(json_response(
                StatusCode::OK,
                json!({"value": value, "count": value.len()}),
            ))
        }
        (&Method::POST, true) => {
            let (role, expires, description) = access::token_request(&parse_json_body(body)?)?;
            let (record, value) = access::issue(role, expires, description);
            let stored = record.clone();
            blocking(&state.store, move |s| Ok(s.add_token(&stored)?)).await?;
            let mut out = access::render(&record);
            out["value"] = json!(value);
            Ok(json_response(StatusCode::CREATED, out))
        }
        (&Method::GET, false) => {
            let found = blocking(&state.store, {
                let id = id.clone();
                move |s| Ok(s.token(&id)?)
            })
            .await?;
            let t = found.ok_or_else(|| not_found(&id))?;
            Ok(json_response(StatusCode::OK, access::render(&t)))
        }
        (&Method::DELETE, false) => {
            let removed = blocking(&state.store, {
                let id = id.clone();
                move |s| Ok(s.remove_token(&id)?)
            })
            .await?;
            if !removed {
                return Err(not_found(&id));
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(method_not_allowed()),
    }
}

fn next_link(raw_path: &str, query: &Query, base: &str, skip: u64, top: u64) -> String {
    let mut q: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k.as_str() != "$skip" && k.as_str() != "$top")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    q.sort();
    q.push(("$top".into(), top.to_string()));
    q.push(("$skip".into(), skip.to_string()));
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z'
                | b'a'..=b'z'
                | b'0'..=b'9'
                | b'-'
                | b'_'
                | b'.'
                | b'~'
                | b'$'
                | b'/'
                | b';'
                | b'=' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let qs: Vec<String> = q
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    format!(
        "{}{}?{}",
        base.trim_end_matches('/'),
        raw_path,
        qs.join("&")
    )
}

fn paging(query: &Query) -> Result<(u64, u64), ApiError> {
    let top = match query.get("$top") {
        None => DEFAULT_PAGE,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(
                    "$top",
                    format!("'$top' must be a whole number from 1 to {MAX_PAGE}; '{v}' is not"),
                ));
            }
        },
    };
    let skip = match query.get("$skip") {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::invalid(
                "$skip",
                format!("'$skip' must be a whole number from 0; '{v}' is not"),
            )
        })?,
    };
    Ok((skip, top))
}

fn list_envelope(
    items: Vec<Value>,
    total: u64,
    skip: u64,
    top: u64,
    raw_path: &str,
    query: &Query,
    base: &str,
) -> Value {
    let count = items.len() as u64;
    let next = (skip + count < total && count > 0)
        .then(|| next_link(raw_path, query, base, skip + count, top));
    json!({"value": items, "count": total, "nextLink": next})
}

/// One page of an in-memory list, in the list envelope.
fn page_response(
    state: &AppState,
    items: Vec<Value>,
    skip: u64,
    top: u64,
    raw_path: &str,
    query: &Query,
) -> Response {
    let total = items.len() as u64;
    let page: Vec<Value> = items
        .into_iter()
        .skip(skip as usize)
        .take(top as usize)
        .collect();
    let base = state.urls.read().expect("urls lock").management.clone();
    json_response(
        StatusCode::OK,
        list_envelope(page, total, skip, top, raw_path, query, &base),
    )
}

async fn list(
    state: &Arc<AppState>,
    kind: Kind,
    parent: Option<ResourcePath>,
    raw_path: &str,
    query: &Query,
) -> Result<Response, ApiError> {
    let (skip, top) = paging(query)?;
    let filter = query
        .get("$filter")
        .map(|f| Filter::parse(f).map_err(|e| ApiError::invalid("$filter", e.to_string())))
        .transpose()?;
    let (items, total) = blocking(&state.store, move |s| {
        s.read(|r| -> Result<(Vec<Value>, u64), ApiError> {
            let parent = match parent {
                None => String::new(),
                Some(p) => {
                    let p = canonicalize(r, p)?;
                    if r.get(&p.as_string())?.is_none() {
                        return Err(ApiError::not_found(p.kind.spec().display));
                    }
                    p.as_string()
                }
            };
            let hide_revisions = kind == Kind::Api && parent.is_empty();
            if filter.is_none() && !kind.is_link() {
                let page = r.page(kind, &parent, skip, top, hide_revisions)?;
                return Ok((page.items.iter().map(render).collect(), page.total));
            }
            let mut all = Vec::new();
            for res in r.children(kind, &parent)? {
                if hide_revisions && res.name().contains(";rev=") {
                    continue;
                }
                let Some(v) = render_resolved(r, &res)? else {
                    continue;
                };
                if let Some(f) = &filter {
                    let props = v.get("properties").cloned().unwrap_or(Value::Null);
                    if !f.matches(res.name(), &props) {
                        continue;
                    }
                }
                all.push(v);
            }
            let total = all.len() as u64;
            Ok((
                all.into_iter()
                    .skip(skip as usize)
                    .take(top as usize)
                    .collect(),
                total,
            ))
        })
    })
    .await?;
    let base = state.urls.read().expect("urls lock").management.clone();
    Ok(json_response(
        StatusCode::OK,
        list_envelope(items, total, skip, top, raw_path, query, &base),
    ))
}

async fn get_resource(
    state: &Arc<AppState>,
    path: ResourcePath,
    query: &Query,
    head: bool,
) -> Result<Response, ApiError> {
    let export = query
        .get("export")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        && path.kind == Kind::Api;
    let format = query.get("format").cloned().unwrap_or_default();
    let gateway = state.urls.read().expect("urls lock").gateway.clone();
    let (resource, rendered, ops, schemas) = blocking(&state.store, move |s| {
        s.read(|r| -> Result<_, ApiError> {
            let path = canonicalize(r, path)?;
            let res = r
                .get(&path.as_string())?
                .ok_or_else(|| ApiError::not_found(path.kind.spec().display))?;
            let rendered = render_resolved(r, &res)?
                .ok_or_else(|| ApiError::not_found(path.kind.spec().display))?;
            let (ops, schemas) = if export {
                let ops = r
                    .children(Kind::Operation, &res.path)?
                    .into_iter()
                    .map(|o| (o.name().to_string(), o.properties))
                    .collect();
                (ops, r.children(Kind::ApiSchema, &res.path)?)
            } else {
                (Vec::new(), Vec::new())
            };
            Ok((res, rendered, ops, schemas))
        })
    })
    .await?;
    if head {
        return Ok(with_etag(StatusCode::OK.into_response(), resource.revision));
    }
    if export {
        let resp = export_answer(state, &resource, &ops, &schemas, &format, &gateway)?;
        return Ok(with_etag(resp, resource.revision));
    }
    let mut rendered = rendered;
    if resource.kind == Kind::Gateway {
        rendered["properties"]["nodes"] = json!(gateway_nodes(state, resource.name()).await?);
    }
    Ok(with_etag(
        json_response(StatusCode::OK, rendered),
        resource.revision,
    ))
}

/// The nodes of a self-hosted gateway as they last reported, with their lag behind this
/// instance in revisions and in time.
async fn gateway_nodes(state: &Arc<AppState>, gateway: &str) -> Result<Vec<Value>, ApiError> {
    let (state, gateway) = (state.clone(), gateway.to_string());
    blocking(&state.store.clone(), move |s| {
        s.read(|r| -> Result<_, ApiError> {
            let committed_at = |after: u64| {
                r.first_commit_after(after).ok().flatten().and_then(|at| {
                    time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                        .ok()
                        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                })
            };
            Ok(state
                .gateway_nodes
                .render(&gateway, r.revision(), committed_at))
        })
    })
    .await
}

/// APIM's export answer, `{"id", "format", "value"}` (`crate::export`).
fn export_answer(
    state: &Arc<AppState>,
    api: &gatehouse_model::StoredResource,
    ops: &[(String, Map<String, Value>)],
    schemas: &[gatehouse_model::StoredResource],
    format: &str,
    gateway: &str,
) -> Result<Response, ApiError> {
    let (doc, link, named) = crate::export::parse_format(format).ok_or_else(|| {
        ApiError::invalid(
            "format",
            format!(
                "the export format '{format}' is not supported; use one of {}",
                crate::export::FORMATS
            ),
        )
    })?;
    let kept = |id: &str| {
        schemas
            .iter()
            .find(|s| s.name() == id)
            .and_then(|s| s.properties.get("document")?.get("value")?.as_str())
    };
    let source = crate::export::Source {
        api: &api.properties,
        operations: ops,
        wsdl: kept("wsdl"),
        wadl: kept("wadl"),
        components: schemas
            .iter()
            .find(|s| s.name() == crate::openapi_schemas::OPENAPI_SCHEMA.0)
            .and_then(|s| s.properties.get("document")),
        gateway,
    };
    let (document, content_type) =
        crate::export::document(doc, &source).map_err(|e| ApiError::invalid("format", e))?;
    let value = if link {
        let bytes = match &document {
            Value::String(text) => text.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        };
        let token = state.downloads.put(content_type, bytes);
        let base = state.urls.read().expect("urls lock").management.clone();
        json!({"link": format!("{}/exports/{token}", base.trim_end_matches('/'))})
    } else {
        document
    };
    Ok(json_response(
        StatusCode::OK,
        json!({"id": api.path, "format": named, "value": value}),
    ))
}

/// Fetches `value` when a `*-link` format names a URL.
async fn fetch_link(url: &str) -> Result<String, ApiError> {
    let resp = reqwest::Client::new()
        .get(url)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| {
            ApiError::invalid(
                "value",
                format!("the document at '{url}' could not be fetched: {e}"),
            )
        })?;
    if !resp.status().is_success() {
        return Err(ApiError::invalid(
            "value",
            format!(
                "the document at '{url}' could not be fetched: HTTP {}",
                resp.status()
            ),
        ));
    }
    resp.text().await.map_err(|e| {
        ApiError::invalid(
            "value",
            format!("the document at '{url}' could not be read: {e}"),
        )
    })
}

async fn put(
    state: &Arc<AppState>,
    path: ResourcePath,
    body: Map<String, Value>,
    mode: Mode,
    opts: WriteOptions,
) -> Result<Response, ApiError> {
    let mut props = properties_of(&body)?;
    let mut import: Option<openapi::ImportedApi> = None;
    if path.kind == Kind::Api
        && let Some(format) = props
            .get("format")
            .and_then(Value::as_str)
            .map(str::to_string)
    {
        let (kind, link) = crate::specs::SpecKind::from_format(&format).ok_or_else(|| {
            ApiError::invalid(
                "format",
                format!(
                    "the import format '{format}' is not supported; use one of {}",
                    crate::specs::FORMATS
                ),
            )
        })?;
        let value = props
            .remove("value")
            .and_then(|v| v.as_str().map(str::to_string))
            .ok_or_else(|| {
                ApiError::invalid(
                    "value",
                    "'value' must hold the document (or its URL for -link formats)",
                )
            })?;
        props.remove("format");
        let text = if link {
            fetch_link(&value).await?
        } else {
            value
        };
        let api = crate::specs::import(kind, &text).map_err(|e| ApiError::invalid("value", e))?;
        if let Some(t) = api.api_type
            && !props.contains_key("type")
        {
            props.insert("type".into(), json!(t));
        }
        if !props.contains_key("displayName")
            && let Some(t) = &api.display_name
        {
            props.insert("displayName".into(), json!(t));
        }
        if !props.contains_key("description")
            && let Some(d) = &api.description
        {
            props.insert("description".into(), json!(d));
        }
        if !props.contains_key("serviceUrl")
            && let Some(u) = &api.service_url
            && (u.starts_with("http://") || u.starts_with("https://"))
        {
            props.insert("serviceUrl".into(), json!(u));
        }
        import = Some(api);
    }
    if path.kind.is_policy()
        && let Some(format) = props
            .get("format")
            .and_then(Value::as_str)
            .map(str::to_string)
        && format.ends_with("-link")
    {
        let url = props
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let text = fetch_link(&url).await?;
        props.insert("value".into(), json!(text));
        props.insert("format".into(), json!(format.trim_end_matches("-link")));
    }
    let make_current = path.kind == Kind::Api
        && path.id().contains(";rev=")
        && props.get("isCurrent") == Some(&json!(true));
    let committed = blocking(&state.store, move |s| {
        s.write_as(
            &opts.actor.clone(),
            |tx| -> Result<(rules::Written, ResourcePath), ApiError> {
                let path = canonicalize(tx, path)?;
                let mut written = rules::put_resource(tx, &path, props, mode, &opts)?;
                if let Some(api) = import {
                    if let Some((id, schema)) = api.schema {
                        let mut parts = path.parts.clone();
                        parts.push(("schemas", id));
                        let schema_path = ResourcePath::new(Kind::ApiSchema, parts);
                        rules::put_resource(
                            tx,
                            &schema_path,
                            schema,
                            Mode::Put,
                            &WriteOptions::default(),
                        )?;
                    }
                    // A re-import replaces the operations.
                    for op in tx.children(Kind::Operation, &path.as_string())? {
                        let p = ResourcePath::parse_stored(&op.path)?;
                        rules::delete_resource(tx, &p, &WriteOptions::default())?;
                    }
                    for (id, op_props) in api.operations {
                        let mut parts = path.parts.clone();
                        parts.push(("operations", id));
                        let op_path = ResourcePath::new(Kind::Operation, parts);
                        rules::put_resource(
                            tx,
                            &op_path,
                            op_props,
                            Mode::Put,
                            &WriteOptions::default(),
                        )
                        .map_err(|e| {
                            ApiError::invalid("value", format!("operation '{}': {e}", op_path.id()))
                        })?;
                    }
                }
                let mut final_path = path.clone();
                if make_current {
                    rules::make_current(tx, &path)?;
                    final_path = ResourcePath::top(
                        Kind::Api,
                        gatehouse_model::id::split_revision(path.id())
                            .expect("validated")
                            .0,
                    );
                    written.resource = tx
                        .get(&final_path.as_string())?
                        .expect("current revision exists");
                }
                Ok((written, final_path))
            },
        )
    })
    .await?;
    let (mut written, _) = committed.value;
    let mut revision = committed.revision;
    if written.resource.kind == Kind::NamedValue
        && written.resource.properties.contains_key("keyVault")
    {
        // A secret-store reference is read at once, so the answer says how that went.
        let path = ResourcePath::parse_stored(&written.resource.path)?;
        crate::keyvault::refresh_one(state, path).await?;
        let key = written.resource.path.clone();
        let (res, rev) = blocking(&state.store, move |s| {
            Ok(s.read(|r| Ok::<_, gatehouse_store::StoreError>((r.get(&key)?, r.revision())))?)
        })
        .await?;
        if let Some(res) = res {
            written.resource = res;
        }
        revision = rev;
    }
    let kind = written.resource.kind;
    // APIM's contract: the portal settings and tenant access answer 200 to a PUT that creates
    // them (they always exist in APIM); a PATCH of the portal settings, 204.
    let singleton = matches!(kind, Kind::PortalSetting | Kind::TenantAccess);
    if kind == Kind::PortalSetting && mode == Mode::Patch {
        return Ok(with_revision(
            StatusCode::NO_CONTENT.into_response(),
            revision,
        ));
    }
    let status = if written.created && !singleton {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let state2 = state.clone();
    let resource = written.resource;
    let rendered = blocking(&state2.store, move |s| {
        s.read(|r| render_resolved(r, &resource).map(|v| (v, resource.revision)))
    })
    .await?;
    let (body, rev) = rendered;
    Ok(with_revision(
        with_etag(json_response(status, body.unwrap_or(Value::Null)), rev),
        revision,
    ))
}

async fn delete(
    state: &Arc<AppState>,
    path: ResourcePath,
    opts: WriteOptions,
) -> Result<Response, ApiError> {
    let committed = blocking(&state.store, move |s| {
        s.write_as(&opts.actor.clone(), |tx| -> Result<bool, ApiError> {
            let path = canonicalize(tx, path)?;
            Ok(rules::delete_resource(tx, &path, &opts)?)
        })
    })
    .await?;
    let status = if committed.value {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    };
    Ok(with_revision(status.into_response(), committed.revision))
}

fn require(res: &Option<StoredResource>, kind: Kind) -> Result<&StoredResource, ApiError> {
    res.as_ref()
        .ok_or_else(|| ApiError::not_found(kind.spec().display))
}

#[allow(clippy::too_many_arguments)]
async fn action_handler(
    state: &Arc<AppState>,
    method: Method,
    path: ResourcePath,
    action: &str,
    raw_path: &str,
    query: &Query,
    actor: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let action_l = action.to_ascii_lowercase();
    let actor = actor.to_string();
    match (method, path.kind, action_l.as_str()) {
        (Method::POST, kind, "listsecrets") if crate::catalog::has_secrets(kind) => {
            crate::catalog::ensure_tenant_access(state, &path).await?;
            Ok(json_response(
                StatusCode::OK,
                crate::catalog::list_secrets(state, path).await?,
            ))
        }
        (Method::POST, Kind::Gateway, "listkeys" | "generatetoken" | "regeneratekey") => {
            crate::catalog::gateway_action(state, path, &action_l, body, &actor).await
        }
        (Method::GET, Kind::Api, "products") => {
            let (skip, top) = paging(query)?;
            let items = crate::catalog::api_products(state, path).await?;
            Ok(page_response(state, items, skip, top, raw_path, query))
        }
        (Method::POST, Kind::User, "token") => {
            let b = parse_json_body(body)?;
            let b = b
                .get("properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or(b);
            Ok(json_response(
                StatusCode::OK,
                crate::catalog::user_token(state, path, &b).await?,
            ))
        }
        (Method::POST, Kind::User, "generatessourl") => Ok(json_response(
            StatusCode::OK,
            crate::catalog::sso_url(state, path).await?,
        )),
        (Method::POST, Kind::Subscription, "listsecrets") => {
            let keys = blocking(&state.store, move |s| {
                s.read(|r| -> Result<Value, ApiError> {
                    let res = r.get(&path.as_string())?;
                    let res = require(&res, Kind::Subscription)?;
                    Ok(json!({
                        "primaryKey": res.properties.get("primaryKey"),
                        "secondaryKey": res.properties.get("secondaryKey"),
                    }))
                })
            })
            .await?;
            Ok(json_response(StatusCode::OK, keys))
        }
        (Method::POST, Kind::Subscription, "regenerateprimarykey" | "regeneratesecondarykey") => {
            let field = if action_l == "regenerateprimarykey" {
                "primaryKey"
            } else {
                "secondaryKey"
            };
            let committed = blocking(&state.store, move |s| {
                s.write_as(&actor, |tx| -> Result<(), ApiError> {
                    let res = tx.get(&path.as_string())?;
                    let res = require(&res, Kind::Subscription)?.clone();
                    let mut props = res.properties.clone();
                    props.insert(field.into(), json!(rules::generate_key()));
                    let refs = tx.references_of(&res.path)?;
                    tx.put(&path, props, &refs)?;
                    Ok(())
                })
            })
            .await?;
            Ok(with_revision(
                StatusCode::NO_CONTENT.into_response(),
                committed.revision,
            ))
        }
        (Method::POST, Kind::NamedValue, "refreshsecret") => {
            if !crate::keyvault::refresh_one(state, path.clone()).await? {
                return Err(ApiError::bad_request(
                    "The named value is not a Key Vault reference: it has no secret to refresh.",
                ));
            }
            get_resource(state, path, query, false).await
        }
        (Method::POST, Kind::NamedValue, "listvalue") => {
            let v = blocking(&state.store, move |s| {
                s.read(|r| -> Result<Value, ApiError> {
                    let res = r.get(&path.as_string())?;
                    let res = require(&res, Kind::NamedValue)?;
                    Ok(json!({"value": res.properties.get("value")}))
                })
            })
            .await?;
            Ok(json_response(StatusCode::OK, v))
        }
        (Method::GET, Kind::Api, "revisions") => {
            let (skip, top) = paging(query)?;
            let items = blocking(&state.store, move |s| {
                s.read(|r| -> Result<Vec<Value>, ApiError> {
                    let (base, _) = gatehouse_model::id::split_revision(path.id()).map_err(|e| ApiError::bad_request(e.to_string()))?;
                    let current = r.get(&format!("/apis/{base}"))?;
                    let current = require(&current, Kind::Api)?.clone();
                    let mut revs = vec![current];
                    let prefix = format!("/apis/{base};rev=");
                    revs.extend(r.children(Kind::Api, "")?.into_iter().filter(|a| a.path.starts_with(&prefix)));
                    let mut out: Vec<Value> = revs
                        .iter()
                        .map(|a| {
                            let rev = a.properties.get("apiRevision").cloned().unwrap_or(json!("1"));
                            json!({
                                "apiId": format!("/apis/{base};rev={}", rev.as_str().unwrap_or("1")),
                                "apiRevision": rev,
                                "isCurrent": a.properties.get("isCurrent").cloned().unwrap_or(json!(false)),
                                "isOnline": true,
                                "description": a.properties.get("apiRevisionDescription"),
                            })
                        })
                        .collect();
                    out.sort_by_key(|v| v["apiRevision"].as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0));
                    Ok(out)
                })
            })
            .await?;
            Ok(page_response(state, items, skip, top, raw_path, query))
        }
        (Method::GET, Kind::User | Kind::Product, "subscriptions")
        | (Method::GET, Kind::User, "groups") => {
            let (skip, top) = paging(query)?;
            let want_groups = action_l == "groups";
            let items = blocking(&state.store, move |s| {
                s.read(|r| -> Result<Vec<Value>, ApiError> {
                    let me = r.get(&path.as_string())?;
                    require(&me, path.kind)?;
                    let mut out = Vec::new();
                    for referrer in r.referrers(&path.as_string())? {
                        let Some(res) = r.get(&referrer)? else {
                            continue;
                        };
                        if want_groups && res.kind == Kind::GroupUser {
                            let group = res
                                .path
                                .rsplitn(3, '/')
                                .nth(2)
                                .unwrap_or_default()
                                .to_string();
                            if let Some(g) = r.get(&group)? {
                                out.push(render(&g));
                            }
                        } else if !want_groups && res.kind == Kind::Subscription {
                            out.push(render(&res));
                        }
                    }
                    Ok(out)
                })
            })
            .await?;
            Ok(page_response(state, items, skip, top, raw_path, query))
        }
        (_, kind, _) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "'{action}' is not an action or collection of {}.",
                kind.spec().display
            ),
        )),
    }
}

/// `GET /journal?since=N`: the changes after N, oldest first, secrets left out. With
/// `with_secrets` (`POST /journal/listSecrets`), the values carry their secrets in plaintext and
/// their references, so another instance can replay them exactly (`POST /journal/apply`).
async fn journal(
    state: &Arc<AppState>,
    raw_path: &str,
    query: &Query,
    with_secrets: bool,
) -> Result<Response, ApiError> {
    let (skip, top) = paging(query)?;
    let since = match query.get("since") {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::invalid(
                "since",
                format!("'since' must be a revision number; '{v}' is not"),
            )
        })?,
    };
    let (entries, total) = blocking(&state.store, move |s| {
        s.read(|r| {
            // Since 0 lists what is kept; a later revision asks for every change after it.
            let floor = r.journal_floor()?;
            if since > 0 && since < floor {
                return Err(ApiError::new(
                    StatusCode::GONE,
                    "JournalCompacted",
                    format!("The journal no longer holds the changes after revision {since}: it was compacted through revision {floor}. Take a snapshot (a backup) instead."),
                ));
            }
            r.journal(since, skip, top).map_err(ApiError::from)
        })
    })
    .await?;
    let sealer = state.store.sealer();
    let mut items = Vec::with_capacity(entries.len());
    for e in entries {
        let value = match (Kind::from_name(&e.kind), e.value) {
            (_, v) if with_secrets => crate::render::opened_entry_value(sealer, &e.kind, v)?,
            // Entries written before a field became secret were sealed when it did: they are
            // left out of the public journal, like the others.
            (Some(kind), Some(Value::Object(mut m))) => {
                for p in gatehouse_model::props::possible_secret_pointers(kind) {
                    let field = p.trim_start_matches('/');
                    if m.get(field).is_some_and(gatehouse_store::Sealer::is_sealed) {
                        m.remove(field);
                    }
                }
                Some(Value::Object(public_properties(kind, &m)))
            }
            (_, v) => v,
        };
        let mut item = json!({
            "revision": e.revision,
            "sequence": e.seq,
            "timestamp": e.at,
            "resourceId": e.path,
            "resourceType": e.kind,
            "operation": e.op,
            "value": value,
            "actor": e.actor,
        });
        if with_secrets {
            item["references"] = json!(e.refs);
        }
        items.push(item);
    }
    let base = state.urls.read().expect("urls lock").management.clone();
    Ok(json_response(
        StatusCode::OK,
        list_envelope(items, total, skip, top, raw_path, query, &base),
    ))
}

/// `POST /journal/apply` with `{"value": [entries from /journal/listSecrets]}`: replays another
/// instance's changes in one transaction (a move's catch-up). Idempotent: replaying an entry
/// twice leaves the same state.
async fn journal_apply(
    state: &Arc<AppState>,
    body: &[u8],
    actor: &str,
) -> Result<Response, ApiError> {
    let b = parse_json_body(body)?;
    let list = b.get("value").and_then(Value::as_array).ok_or_else(|| {
        ApiError::invalid(
            "value",
            "'value' must be the list of journal entries to replay",
        )
    })?;
    let mut entries = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
        let (Some(path), Some(kind), Some(op)) =
            (s("resourceId"), s("resourceType"), s("operation"))
        else {
            return Err(ApiError::invalid(
                &format!("value[{i}]"),
                "each entry needs resourceId, resourceType and operation",
            ));
        };
        entries.push(gatehouse_store::JournalEntry {
            seq: e
                .get("sequence")
                .and_then(Value::as_u64)
                .unwrap_or(i as u64),
            revision: e.get("revision").and_then(Value::as_u64).unwrap_or(0),
            at: s("timestamp").unwrap_or_default(),
            path,
            kind,
            op,
            value: e.get("value").cloned().filter(|v| !v.is_null()),
            refs: crate::rules::string_list(e.get("references")),
            actor: None,
        });
    }
    let count = entries.len();
    let actor = actor.to_string();
    let committed = blocking(&state.store, move |s| {
        s.write_as(&actor, |tx| -> Result<(), ApiError> {
            for e in &entries {
                tx.apply_entry(e).map_err(|err| {
                    ApiError::bad_request(format!("cannot replay {}: {err}", e.path))
                })?;
            }
            Ok(())
        })
    })
    .await?;
    Ok(with_revision(
        json_response(
            StatusCode::OK,
            json!({"applied": count, "revision": committed.revision}),
        ),
        committed.revision,
    ))
}

async fn reports(
    state: &Arc<AppState>,
    kind: &str,
    raw_path: &str,
    query: &Query,
) -> Result<Response, ApiError> {
    let (skip, top) = paging(query)?;
    let (from, to) = crate::reports::time_window(query.get("$filter").map(String::as_str))?;
    let interval = crate::reports::parse_interval(query.get("interval").map(String::as_str))?;
    let rows = blocking(&state.store, move |s| {
        s.read(|r| r.usage(from, to).map_err(ApiError::from))
    })
    .await?;
    let records = crate::reports::report(kind, &rows, interval)?;
    Ok(page_response(state, records, skip, top, raw_path, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_keeps_the_query_and_moves_the_page() {
        let mut q = Query::new();
        q.insert("$filter".into(), "startswith(name,'a b')".into());
        q.insert("$skip".into(), "0".into());
        q.insert("api-version".into(), "2024-05-01".into());
        let link = next_link("/apis", &q, "http://127.0.0.1:1/", 100, 100);
        assert!(link.starts_with("http://127.0.0.1:1/apis?"), "{link}");
        assert!(
            link.contains("$top=100") && link.contains("$skip=100"),
            "{link}"
        );
        assert!(
            link.contains("$filter=startswith%28name%2C%27a%20b%27%29"),
            "{link}"
        );
        assert_eq!(link.matches("$skip=").count(), 1, "{link}");
    }

    #[test]
    fn a_query_with_broken_escapes_is_refused() {
        let uri: axum::http::Uri = "/apis?$filter=%zz".parse().unwrap();
        assert!(parse_query(&uri).is_err());
        let uri: axum::http::Uri = "/apis?$top=5&x=a+b".parse().unwrap();
        let q = parse_query(&uri).unwrap();
        assert_eq!(q["$top"], "5");
        assert_eq!(q["x"], "a b");
    }
}
