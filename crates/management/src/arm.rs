//! APIM's contract at the ARM level: requests through the prefix
//! `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ApiManagement/service/{name}`
//! are checked (the service must be this one, the api-version one Gatehouse speaks) and
//! answered with full ARM ids.
//!
//! Invariant: references are stored relative to the service (so a configuration moves into an
//! instance of another name); only what is rendered changes — under the prefix, `id` and the
//! reference properties carry the prefix the request used, on the short paths they stay
//! relative.

use crate::error::ApiError;
use axum::http::StatusCode;
use serde_json::Value;

/// The api-versions whose contract Gatehouse answers (APIM's GA versions since 2019, and the
/// previews tools still send).
pub const API_VERSIONS: &[&str] = &[
    "2019-12-01",
    "2020-12-01",
    "2021-04-01-preview",
    "2021-08-01",
    "2022-04-01-preview",
    "2022-08-01",
    "2022-09-01-preview",
    "2023-03-01-preview",
    "2023-05-01-preview",
    "2023-09-01-preview",
    "2024-05-01",
    "2024-06-01-preview",
];

/// Reference properties, rendered as ARM ids under the prefix.
const REFERENCES: &[&str] = &[
    "scope",
    "apiVersionSetId",
    "loggerId",
    "ownerId",
    "sourceApiId",
    "userId",
    "apiId",
    "groupId",
];

/// The ARM prefix a request used, and its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmPrefix {
    /// As the request wrote it, without a trailing `/`.
    pub prefix: String,
    pub subscription: String,
    pub resource_group: String,
    pub service: String,
}

/// The ARM prefix of a raw request path, if it has one.
pub fn prefix_of(raw: &str) -> Option<ArmPrefix> {
    let segs: Vec<&str> = raw.trim_start_matches('/').split('/').collect();
    let is = |i: usize, name: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(name));
    if !(is(0, "subscriptions")
        && is(2, "resourceGroups")
        && is(4, "providers")
        && is(5, "Microsoft.ApiManagement")
        && is(6, "service"))
    {
        return None;
    }
    let service = segs.get(7).filter(|s| !s.is_empty())?;
    Some(ArmPrefix {
        prefix: format!("/{}", segs[..8].join("/")),
        subscription: segs[1].to_string(),
        resource_group: segs[3].to_string(),
        service: (*service).to_string(),
    })
}

/// The subscription and resource group an instance answers to under the ARM prefix (`None`:
/// any, the default — an instance outside Azure has neither).
#[derive(Debug, Clone, Default)]
pub struct ArmScope {
    pub subscription: Option<String>,
    pub resource_group: Option<String>,
}

/// ARM's answer for a prefix that names another subscription, resource group or service.
pub fn check_service(arm: &ArmPrefix, scope: &ArmScope, name: &str) -> Result<(), ApiError> {
    if let Some(s) = &scope.subscription
        && !s.eq_ignore_ascii_case(&arm.subscription)
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!(
                "The subscription '{}' could not be found.",
                arm.subscription
            ),
        ));
    }
    if let Some(rg) = &scope.resource_group
        && !rg.eq_ignore_ascii_case(&arm.resource_group)
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            format!(
                "Resource group '{}' could not be found.",
                arm.resource_group
            ),
        ));
    }
    if arm.service.eq_ignore_ascii_case(name) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource 'Microsoft.ApiManagement/service/{}' under resource group '{}' was not found.",
            arm.service, arm.resource_group
        ),
    ))
}

/// ARM's answer for an api-version outside the supported set.
pub fn check_api_version(version: Option<&str>) -> Result<(), ApiError> {
    match version {
        Some(v) if !API_VERSIONS.contains(&v) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{v}' is invalid. The supported versions are '{}'.",
                API_VERSIONS.join(",")
            ),
        )),
        _ => Ok(()),
    }
}

fn full(prefix: &str, relative: &str) -> String {
    if relative == "/" {
        prefix.to_string()
    } else {
        format!("{prefix}{relative}")
    }
}

/// Rewrites a response body's resources (one, or a list's `value`) to full ARM ids.
pub fn to_arm_ids(body: &mut Value, prefix: &str) {
    if let Some(list) = body.get_mut("value").and_then(Value::as_array_mut) {
        for item in list {
            resource_to_arm(item, prefix);
        }
    }
    resource_to_arm(body, prefix);
}

fn resource_to_arm(v: &mut Value, prefix: &str) {
    let is_resource = v
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.starts_with("Microsoft.ApiManagement/service"));
    if !is_resource {
        return;
    }
    if let Some(Value::String(id)) = v.get_mut("id")
        && id.starts_with('/')
    {
        *id = full(prefix, id);
    }
    let Some(props) = v.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for field in REFERENCES {
        if let Some(Value::String(r)) = props.get_mut(*field)
            && r.starts_with('/')
            && !r.starts_with("/subscriptions/")
        {
            *r = full(prefix, r);
        }
    }
    if let Some(Value::String(id)) = props.get_mut("apiVersionSet").and_then(|s| s.get_mut("id"))
        && id.starts_with('/')
        && !id.starts_with("/subscriptions/")
    {
        *id = full(prefix, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_prefix_is_read_as_written() {
        let p = prefix_of("/subscriptions/s1/resourceGroups/RG/providers/Microsoft.ApiManagement/service/contoso/apis/echo").unwrap();
        assert_eq!(
            p.prefix,
            "/subscriptions/s1/resourceGroups/RG/providers/Microsoft.ApiManagement/service/contoso"
        );
        assert_eq!(
            (
                p.subscription.as_str(),
                p.resource_group.as_str(),
                p.service.as_str()
            ),
            ("s1", "RG", "contoso")
        );
        assert!(prefix_of("/apis/echo").is_none());
        assert!(
            prefix_of(
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.ApiManagement/service"
            )
            .is_none()
        );
        let any = ArmScope::default();
        assert!(check_service(&p, &any, "CONTOSO").is_ok());
        assert_eq!(
            check_service(&p, &any, "other").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        let pinned = ArmScope {
            subscription: Some("s1".into()),
            resource_group: Some("other-rg".into()),
        };
        let e = check_service(&p, &pinned, "contoso").unwrap_err();
        assert_eq!(e.code, "ResourceGroupNotFound");
        let pinned = ArmScope {
            subscription: Some("s2".into()),
            resource_group: None,
        };
        let e = check_service(&p, &pinned, "contoso").unwrap_err();
        assert_eq!(e.code, "SubscriptionNotFound");
        assert!(check_api_version(Some("2024-05-01")).is_ok());
        assert!(check_api_version(None).is_ok());
        let e = check_api_version(Some("2099-01-01")).unwrap_err();
        assert_eq!(e.code, "InvalidApiVersionParameter");
        assert!(e.message.contains("2024-05-01"));
    }

    #[test]
    fn ids_and_references_become_arm_ids() {
        let p = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ApiManagement/service/x";
        let mut one = json!({"id": "/subscriptions/s1", "type": "Microsoft.ApiManagement/service/subscriptions", "properties": {"scope": "/apis", "ownerId": "/users/u"}});
        to_arm_ids(&mut one, p);
        assert_eq!(one["id"], format!("{p}/subscriptions/s1"));
        assert_eq!(one["properties"]["scope"], format!("{p}/apis"));
        assert_eq!(one["properties"]["ownerId"], format!("{p}/users/u"));
        let mut list = json!({"value": [{"id": "/", "type": "Microsoft.ApiManagement/service"}], "nextLink": "x"});
        to_arm_ids(&mut list, p);
        assert_eq!(list["value"][0]["id"], p);
        let mut other = json!({"id": "/x", "type": "something else"});
        to_arm_ids(&mut other, p);
        assert_eq!(other["id"], "/x");
    }
}
