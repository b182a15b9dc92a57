//! Requests at the resource provider's level of ARM rather than below a service: the list of
//! services (this instance) and `checkNameAvailability`.

use crate::error::ApiError;
use crate::respond::{blocking, json_response, parse_json_body, service_body};
use crate::state::AppState;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;

/// Requests at the resource provider's level rather than below a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderRoute {
    /// `GET /subscriptions/{s}[/resourceGroups/{rg}]/providers/Microsoft.ApiManagement/service`.
    ListServices,
    /// `POST /subscriptions/{s}/providers/Microsoft.ApiManagement/checkNameAvailability`.
    CheckNameAvailability,
}

/// Whether a raw path is one of the provider-level requests.
pub fn provider_route(raw: &str) -> Option<ProviderRoute> {
    let segs: Vec<&str> = raw.trim_matches('/').split('/').collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let tail: Vec<&str> = match lower.as_slice() {
        [s, _, rest @ ..] if s == "subscriptions" => rest.iter().map(String::as_str).collect(),
        _ => return None,
    };
    let tail = match tail.as_slice() {
        ["resourcegroups", _, rest @ ..] => rest.to_vec(),
        other => other.to_vec(),
    };
    match tail.as_slice() {
        ["providers", "microsoft.apimanagement", "service"] => Some(ProviderRoute::ListServices),
        [
            "providers",
            "microsoft.apimanagement",
            "checknameavailability",
        ] => Some(ProviderRoute::CheckNameAvailability),
        _ => None,
    }
}

/// Answers a provider-level request: the list holds this instance; a name is available unless
/// it is this instance's or not a valid service name.
pub async fn serve_provider(
    state: &Arc<AppState>,
    route: ProviderRoute,
    method: &Method,
    body: &[u8],
) -> Result<Response, ApiError> {
    match (route, method) {
        (ProviderRoute::ListServices, &Method::GET) => {
            let service = service_body(state).await?;
            Ok(json_response(StatusCode::OK, json!({"value": [service]})))
        }
        (ProviderRoute::CheckNameAvailability, &Method::POST) => {
            let b = parse_json_body(body)?;
            let name = b
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let ours = blocking(&state.store, |s| {
                Ok(s.read(|r| r.service())?.map(|s| s.name))
            })
            .await?;
            let answer = if let Err(e) = crate::service::validate_service_name(&name) {
                json!({"nameAvailable": false, "reason": "Invalid", "message": e})
            } else if ours.is_some_and(|o| o.eq_ignore_ascii_case(&name)) {
                json!({"nameAvailable": false, "reason": "AlreadyExists", "message": format!("The name '{name}' is already in use by this instance.")})
            } else {
                json!({"nameAvailable": true, "reason": "Valid", "message": ""})
            };
            Ok(json_response(StatusCode::OK, answer))
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not allowed here."),
        )),
    }
}
