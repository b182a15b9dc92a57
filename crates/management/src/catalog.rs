//! Collections and actions APIM clients call that are derived from other resources rather than
//! stored: an API's products, APIs by tag, every API's issues, the secrets of the portal's
//! identity resources, a user's shared-access token and single sign-on URL.
//!
//! Invariant: these read the store only; secrets leave only through `listSecrets`, opened here
//! from the resource the request names.

use crate::error::ApiError;
use crate::render::render;
use crate::respond::blocking;
use crate::state::AppState;
use gatehouse_model::props::{hidden_fields, secret_pointers};
use gatehouse_model::{Kind, ResourcePath};
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The kinds whose secrets `POST …/listSecrets` returns.
pub fn has_secrets(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::IdentityProvider
            | Kind::AuthorizationServer
            | Kind::OpenIdConnectProvider
            | Kind::TenantAccess
            | Kind::PortalSetting
    )
}

/// `POST …/listSecrets`: the resource's secret fields, in plaintext.
pub async fn list_secrets(state: &Arc<AppState>, path: ResourcePath) -> Result<Value, ApiError> {
    blocking(&state.store, move |s| {
        s.read(|r| -> Result<Value, ApiError> {
            let res = r
                .get(&path.as_string())?
                .ok_or_else(|| ApiError::not_found(path.kind.spec().display))?;
            let mut out = Map::new();
            let secret: Vec<&str> = secret_pointers(res.kind, &res.properties)
                .iter()
                .map(|p| p.trim_start_matches('/'))
                .collect();
            for field in hidden_fields(res.kind)
                .iter()
                .filter(|f| secret.contains(f))
            {
                if let Some(v) = res.properties.get(*field) {
                    out.insert((*field).to_string(), v.clone());
                }
            }
            if res.kind == Kind::TenantAccess {
                out.insert("id".into(), json!(res.name()));
                out.insert("principalId".into(), json!(res.name()));
                out.insert(
                    "enabled".into(),
                    res.properties
                        .get("enabled")
                        .cloned()
                        .unwrap_or(json!(false)),
                );
            }
            Ok(Value::Object(out))
        })
    })
    .await
}

/// `GET /apis/{id}/products`: the products that contain the API.
pub async fn api_products(
    state: &Arc<AppState>,
    api: ResourcePath,
) -> Result<Vec<Value>, ApiError> {
    blocking(&state.store, move |s| {
        s.read(|r| -> Result<Vec<Value>, ApiError> {
            let key = api.as_string();
            r.get(&key)?.ok_or_else(|| ApiError::not_found("Api"))?;
            let mut out = Vec::new();
            for link in r.referrers(&key)? {
                let Some(product) = link.strip_suffix(&format!("/apis/{}", api.id())) else {
                    continue;
                };
                if let Some(p) = r.get(product)?.filter(|p| p.kind == Kind::Product) {
                    out.push(render(&p));
                }
            }
            Ok(out)
        })
    })
    .await
}

/// `GET /apisByTags`: each tag on each API, as APIM's `TagResourceContract`.
pub async fn apis_by_tags(state: &Arc<AppState>) -> Result<Vec<Value>, ApiError> {
    blocking(&state.store, move |s| {
        s.read(|r| -> Result<Vec<Value>, ApiError> {
            let mut out = Vec::new();
            r.for_each_resource(|res| {
                if res.kind == Kind::ApiTag {
                    out.push(res.path.clone());
                }
                Ok(())
            })?;
            let mut items = Vec::new();
            for link in out {
                let Some((api_path, tag)) = link.rsplit_once("/tags/") else {
                    continue;
                };
                let (Some(api), Some(t)) = (r.get(api_path)?, r.get(&format!("/tags/{tag}"))?)
                else {
                    continue;
                };
                let mut api_view = render(&api)["properties"].clone();
                api_view["id"] = json!(api.path);
                api_view["name"] = json!(api.name());
                items.push(json!({
                    "tag": {"id": t.path, "name": t.properties.get("displayName")},
                    "api": api_view,
                }));
            }
            Ok(items)
        })
    })
    .await
}

/// `GET /issues`: every API's issues.
pub async fn all_issues(state: &Arc<AppState>) -> Result<Vec<Value>, ApiError> {
    blocking(&state.store, move |s| {
        s.read(|r| -> Result<Vec<Value>, ApiError> {
            let mut out = Vec::new();
            r.for_each_resource(|res| {
                if res.kind == Kind::ApiIssue {
                    out.push(render(&res));
                }
                Ok(())
            })?;
            Ok(out)
        })
    })
    .await
}

/// `POST /users/{id}/token` (`{"keyType", "expiry"}`): APIM's shared-access token for the user,
/// `{id}&{expiry yyyyMMddHHmm}&{signature}`, signed with the tenant's access key (made when
/// there is none). Gatehouse issues it; the developer portal that would accept it is not built
/// yet.
pub async fn user_token(
    state: &Arc<AppState>,
    user: ResourcePath,
    body: &Map<String, Value>,
) -> Result<Value, ApiError> {
    let expiry = body.get("expiry").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid(
            "expiry",
            "'expiry' (an ISO 8601 time, at most 30 days ahead) is required",
        )
    })?;
    let at = time::OffsetDateTime::parse(expiry, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::invalid("expiry", format!("'{expiry}' is not an ISO 8601 time")))?;
    let now = time::OffsetDateTime::now_utc();
    if at <= now || at - now > time::Duration::days(30) {
        return Err(ApiError::invalid(
            "expiry",
            "'expiry' must be in the future and at most 30 days ahead",
        ));
    }
    let secondary = body.get("keyType").and_then(Value::as_str) == Some("secondary");
    let stamp = crate::gateway_tokens::stamp(at);
    let key = tenant_key(state, secondary).await?;
    blocking(&state.store, {
        let user = user.clone();
        move |s| {
            s.read(|r| r.get(&user.as_string()))?
                .ok_or_else(|| ApiError::not_found("User"))
                .map(|_| ())
        }
    })
    .await?;
    let payload = format!("{}\n{stamp}", user.id());
    let mut mac = <hmac::Hmac<sha2::Sha512> as hmac::KeyInit>::new_from_slice(key.as_bytes())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    hmac::Mac::update(&mut mac, payload.as_bytes());
    let signature = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        hmac::Mac::finalize(mac).into_bytes(),
    );
    Ok(json!({"value": format!("{}&{stamp}&{signature}", user.id())}))
}

/// The tenant access key that signs user tokens, made (with its resource) when missing.
async fn tenant_key(state: &Arc<AppState>, secondary: bool) -> Result<String, ApiError> {
    let field = if secondary {
        "secondaryKey"
    } else {
        "primaryKey"
    };
    let path = ResourcePath::top(Kind::TenantAccess, "access");
    ensure_tenant_access(state, &path).await?;
    let res = blocking(&state.store, move |s| {
        Ok(s.read(|r| r.get(&path.as_string()))?)
    })
    .await?
    .ok_or_else(|| ApiError::internal("tenant access missing"))?;
    Ok(res
        .properties
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string())
}

/// APIM always has `tenant/access` and `tenant/gitAccess`: made (disabled, with keys) the
/// first time anything reads one.
pub async fn ensure_tenant_access(
    state: &Arc<AppState>,
    path: &ResourcePath,
) -> Result<(), ApiError> {
    if path.kind != Kind::TenantAccess || !matches!(path.id(), "access" | "gitAccess") {
        return Ok(());
    }
    let path = path.clone();
    blocking(&state.store, move |s| {
        s.write(|tx| -> Result<(), ApiError> {
            if tx.get(&path.as_string())?.is_none() {
                crate::rules::put_resource(
                    tx,
                    &path,
                    Map::new(),
                    crate::rules::Mode::Put,
                    &Default::default(),
                )?;
            }
            Ok(())
        })
    })
    .await?;
    Ok(())
}

/// `POST /users/{id}/generateSsoUrl`: where the user would sign in to the developer portal
/// without a password. The portal is not built yet: the URL names the management listener's
/// base, and nothing answers it.
pub async fn sso_url(state: &Arc<AppState>, user: ResourcePath) -> Result<Value, ApiError> {
    let token = user_token(
        state,
        user,
        &json!({"keyType": "primary", "expiry": (time::OffsetDateTime::now_utc() + time::Duration::minutes(5)).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )
    .await?;
    let base = state.urls.read().expect("urls lock").management.clone();
    let value = token["value"].as_str().unwrap_or_default().to_string();
    let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
    Ok(json!({"value": format!("{}/signin-sso?token={encoded}", base.trim_end_matches('/'))}))
}

/// A self-hosted gateway's keys and tokens: `listKeys` (`{primary, secondary}`),
/// `regenerateKey` (`{keyType}`; 204, the tokens made with the old key stop working) and
/// `generateToken` (`{keyType, expiry}` at most 30 days ahead; `{value}`).
pub async fn gateway_action(
    state: &Arc<AppState>,
    path: ResourcePath,
    action: &str,
    body: &[u8],
    actor: &str,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let b = crate::respond::parse_json_body(body)?;
    let b = b
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or(b);
    let key_field = |b: &Map<String, Value>| -> Result<&'static str, ApiError> {
        match b.get("keyType").and_then(Value::as_str) {
            Some("primary") => Ok("primaryKey"),
            Some("secondary") => Ok("secondaryKey"),
            _ => Err(ApiError::invalid(
                "keyType",
                "'keyType' must be primary or secondary",
            )),
        }
    };
    let key = path.as_string();
    let read = {
        let key = key.clone();
        blocking(&state.store, move |s| {
            s.read(|r| r.get(&key))?
                .ok_or_else(|| ApiError::not_found("Gateway"))
        })
    };
    match action {
        "listkeys" => {
            let g = read.await?;
            let keys = json!({"primary": g.properties.get("primaryKey"), "secondary": g.properties.get("secondaryKey")});
            Ok(crate::respond::json_response(
                axum::http::StatusCode::OK,
                keys,
            ))
        }
        "generatetoken" => {
            let field = key_field(&b)?;
            let expiry = b
                .get("expiry")
                .and_then(Value::as_str)
                .and_then(|e| {
                    time::OffsetDateTime::parse(e, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .ok_or_else(|| ApiError::invalid("expiry", "'expiry' must be an ISO 8601 time"))?;
            let now = time::OffsetDateTime::now_utc();
            if expiry <= now || expiry - now > crate::gateway_tokens::MAX_LIFETIME {
                return Err(ApiError::invalid(
                    "expiry",
                    "'expiry' must be in the future and at most 30 days ahead",
                ));
            }
            let g = read.await?;
            let secret = g
                .properties
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default();
            let value = crate::gateway_tokens::issue(path.id(), secret, expiry);
            Ok(crate::respond::json_response(
                axum::http::StatusCode::OK,
                json!({"value": value}),
            ))
        }
        _ => {
            let field = key_field(&b)?;
            let actor = actor.to_string();
            blocking(&state.store, move |s| {
                s.write_as(&actor, |tx| -> Result<(), ApiError> {
                    let g = tx
                        .get(&key)?
                        .ok_or_else(|| ApiError::not_found("Gateway"))?;
                    let mut props = g.properties.clone();
                    props.insert(field.into(), json!(crate::rules::generate_key()));
                    let refs = tx.references_of(&key)?;
                    tx.put(&path, props, &refs)?;
                    Ok(())
                })
            })
            .await?;
            Ok(axum::http::StatusCode::NO_CONTENT.into_response())
        }
    }
}
