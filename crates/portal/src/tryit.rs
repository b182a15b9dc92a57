//! An operation's page and its try-it console. The console's request goes through the
//! instance's own gateway from the portal's side (so no CORS policy is needed), with a key of
//! one of the visitor's own active subscriptions, or none for open products.
//!
//! Invariants: the console only ever calls the instance's gateway (the URL is built here from
//! the API's path, never taken from the form); only APIs the visitor can see; only keys the
//! visitor owns; the key is sent in a header and never shown in the result; the answer shown is
//! at most [`MAX_BODY`] bytes.

use crate::apidoc::{self, OperationView};
use crate::catalog::ApiCard;
use crate::error::PortalError;
use crate::handler::{Fields, field};
use crate::handler::{Portal, Remote, page};
use crate::state::PortalState;
use crate::subscribe;
use crate::view::Ctx;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use gatehouse_model::Kind;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// The most of an answer the console shows.
pub const MAX_BODY: usize = 1024 * 1024;

/// Request headers the console does not let a visitor set.
const REFUSED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "cookie",
];

struct Loaded {
    api: ApiCard,
    op: OperationView,
    needs_key: bool,
    /// The visitor's usable subscriptions: id, name, product, primary key.
    keys: Vec<(String, String, String, String)>,
    key_header: String,
}

async fn load(
    state: &Arc<PortalState>,
    ctx: &Ctx,
    api_id: &str,
    op_id: &str,
) -> Result<Loaded, PortalError> {
    let viewer = ctx.viewer.clone();
    let cat = state.catalogs.clone();
    let (api_id, op_id) = (api_id.to_string(), op_id.to_string());
    state
        .read(move |r| {
            let catalog = cat.get(r, &viewer)?;
            let api = catalog.api(&api_id)?.clone();
            let op_res = r
                .get(&format!("/apis/{api_id}/operations/{op_id}"))?
                .filter(|o| o.kind == Kind::Operation)
                .ok_or(PortalError::NotFound)?;
            let api_res = r
                .get(&format!("/apis/{api_id}"))?
                .ok_or(PortalError::NotFound)?;
            let products = catalog.products_of(&api_id);
            let needs_key = api_res.properties.get("subscriptionRequired")
                != Some(&Value::Bool(false))
                && !products.iter().any(|p| !p.subscription_required);
            let key_header = api_res
                .properties
                .get("subscriptionKeyParameterNames")
                .and_then(|n| n.get("header"))
                .and_then(Value::as_str)
                .unwrap_or("Ocp-Apim-Subscription-Key")
                .to_string();
            let mut keys = Vec::new();
            if let Some(user) = &viewer.user {
                let scopes: Vec<String> = products
                    .iter()
                    .map(|p| format!("/products/{}", p.id))
                    .chain([format!("/apis/{api_id}"), "/apis".to_string()])
                    .collect();
                for s in subscribe::of_user(r, user)? {
                    let v = subscribe::view(r, &s)?;
                    let scope = s
                        .properties
                        .get("scope")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if v.state == "active" && scopes.iter().any(|x| x == scope) {
                        keys.push((v.id, v.name, v.product, v.primary_key));
                    }
                }
            }
            Ok(Loaded {
                api,
                op: apidoc::operation_view(&op_res),
                needs_key,
                keys,
                key_header,
            })
        })
        .await
}

fn page_values(state: &PortalState, l: &Loaded, result: Option<Value>) -> Value {
    let has_body =
        matches!(l.op.method.as_str(), "POST" | "PUT" | "PATCH") || !l.op.request.is_empty();
    let first = l.op.request.first();
    json!({
        "api": l.api, "op": l.op, "gateway": state.gateway_url(),
        "subscription_required": l.needs_key,
        "keys": l.keys.iter().map(|(id, name, product, _)| json!({"id": id, "name": name, "product": product})).collect::<Vec<_>>(),
        "has_body": has_body,
        "body_type": first.map(|r| r.content_type.clone()).filter(|t| !t.is_empty()).unwrap_or_else(|| "application/json".into()),
        "body_example": first.map(|r| r.example.clone()).unwrap_or_default(),
        "result": result,
    })
}

pub async fn operation(
    State(state): Portal,
    Path((api, op)): Path<(String, String)>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    let path = format!("/apis/{api}/operations/{op}");
    page(&state.clone(), &headers, remote, &path, async move |ctx| {
        let l = load(&state, ctx, &api, &op).await?;
        ctx.render(
            &state,
            StatusCode::OK,
            "operation.html",
            page_values(&state, &l, None),
        )
    })
    .await
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The gateway URL of the operation with the form's path and query parameters.
fn target_url(
    gateway: &str,
    l: &Loaded,
    f: &HashMap<String, String>,
) -> Result<String, PortalError> {
    let mut template = l.op.url_template.clone();
    for p in l.op.params.iter().filter(|p| p.place == "path") {
        let v = field(f, &format!("path.{}", p.name));
        if v.is_empty() {
            return Err(PortalError::Invalid(format!(
                "The path parameter '{}' is required.",
                p.name
            )));
        }
        template = template.replace(&format!("{{{}}}", p.name), &encode(v));
    }
    let mut url = format!(
        "{}/{}{}",
        gateway.trim_end_matches('/'),
        l.api.path.trim_matches('/'),
        template
    );
    let query: Vec<String> =
        l.op.params
            .iter()
            .filter(|p| p.place == "query")
            .filter_map(|p| {
                let v = field(f, &format!("query.{}", p.name));
                (!v.is_empty()).then(|| format!("{}={}", encode(&p.name), encode(v)))
            })
            .collect();
    if !query.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&query.join("&"));
    }
    Ok(url)
}

/// The request headers: the form's header parameters, the free lines, the content type.
fn request_headers(
    l: &Loaded,
    f: &HashMap<String, String>,
) -> Result<Vec<(String, String)>, PortalError> {
    let mut out = Vec::new();
    for p in l.op.params.iter().filter(|p| p.place == "header") {
        let v = field(f, &format!("header.{}", p.name));
        if !v.is_empty() {
            out.push((p.name.clone(), v.to_string()));
        }
    }
    for line in field(f, "headers").lines().filter(|l| !l.trim().is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(PortalError::Invalid(format!(
                "'{line}' is not a header line ('Name: value')."
            )));
        };
        let name = name.trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(PortalError::Invalid(format!(
                "'{name}' is not a header name."
            )));
        }
        if REFUSED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(PortalError::Invalid(format!(
                "The console sets '{name}' itself."
            )));
        }
        out.push((name.to_string(), value.trim().to_string()));
    }
    Ok(out)
}

async fn send(
    state: &PortalState,
    l: &Loaded,
    f: &HashMap<String, String>,
) -> Result<Value, PortalError> {
    let url = target_url(&state.gateway_url(), l, f)?;
    let method = reqwest::Method::from_bytes(l.op.method.as_bytes())
        .map_err(|_| PortalError::Invalid("The operation's method is not valid.".into()))?;
    let mut req = state.http.request(method, &url);
    for (n, v) in request_headers(l, f)? {
        req = req.header(n, v);
    }
    if l.needs_key || !field(f, "subscription").is_empty() {
        let chosen = field(f, "subscription");
        let key = l.keys.iter().find(|k| k.0 == chosen).map(|k| k.3.clone());
        match key {
            Some(k) => req = req.header(l.key_header.as_str(), k),
            None if l.needs_key => {
                return Err(PortalError::Invalid(
                    "Choose one of your active subscriptions for this API.".into(),
                ));
            }
            None => {}
        }
    }
    let body = field(f, "body");
    if !body.is_empty() {
        let ct = match field(f, "content_type") {
            "" => "application/json",
            t => t,
        };
        req = req.header("content-type", ct).body(body.to_string());
    }
    let started = Instant::now();
    let shown_url = url.clone();
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return Ok(
                json!({"method": l.op.method, "url": shown_url, "error": format!("The gateway could not be reached: {}", without_url(e))}),
            );
        }
    };
    let status = resp.status();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(n, _)| n.as_str() != "set-cookie")
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut bytes = Vec::new();
    let mut truncated = false;
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_BODY - bytes.len();
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() > room {
            truncated = true;
            break;
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let body = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.into_owned());
    Ok(json!({
        "method": l.op.method, "url": shown_url,
        "status": format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("")),
        "millis": started.elapsed().as_millis(),
        "headers": headers, "body": body, "truncated": truncated, "limit": MAX_BODY,
    }))
}

fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

pub async fn try_it(
    State(state): Portal,
    Path((api, op)): Path<(String, String)>,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    let fragment = headers.get("x-portal-fragment").is_some();
    let path = format!("/apis/{api}/operations/{op}");
    page(&state.clone(), &headers, remote, &path, async move |ctx| {
        ctx.check_csrf(&state, &f)?;
        let l = load(&state, ctx, &api, &op).await?;
        let result = match send(&state, &l, &f).await {
            Ok(v) => v,
            Err(PortalError::Invalid(m)) => {
                json!({"method": l.op.method, "url": "", "error": m})
            }
            Err(e) => return Err(e),
        };
        if fragment {
            let html = state
                .templates
                .render("tryit_result.html", &json!({"result": result}))?;
            return Ok((StatusCode::OK, Html(html)).into_response());
        }
        ctx.render(
            &state,
            StatusCode::OK,
            "operation.html",
            page_values(&state, &l, Some(result)),
        )
    })
    .await
}
