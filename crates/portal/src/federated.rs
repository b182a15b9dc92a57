//! The pages of a sign-in through an OpenID Connect provider: the start (to the provider) and
//! the callback (the account found, linked or made, then signed in). The protocol is `oidc`'s.

use crate::account::{local_target, signed_in, signup_settings};
use crate::error::PortalError;
use crate::handler::{Portal, Remote, page};
use crate::oidc::{self, FLOW_COOKIE, Flow, Identity, Reach};
use crate::secret;
use crate::session;
use crate::state::PortalState;
use crate::view::{Ctx, see_other};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use gatehouse_management::rules::{self, Mode, WriteOptions};
use gatehouse_model::{Kind, ResourcePath};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

async fn configured(state: &Arc<PortalState>, id: &str) -> Result<oidc::Provider, PortalError> {
    let path = format!("/identityProviders/{id}");
    let res = state
        .read(move |r| Ok(r.get(&path)?))
        .await?
        .ok_or(PortalError::NotFound)?;
    oidc::provider(id, &res.properties)
}

pub async fn start(
    State(state): Portal,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/signin",
        async move |ctx| {
            let p = configured(&state, &id).await?;
            let d = state.discovery.get(&state.http, &p.issuer, false).await?;
            let flow = Flow {
                provider: id.clone(),
                state: secret::random_token(),
                nonce: secret::random_token(),
                next: local_target(q.get("next").map(String::as_str).unwrap_or("/")).to_string(),
                expires: session::now_unix() + oidc::FLOW_LIFETIME_SECS,
            };
            let mut resp = see_other(&oidc::authorization_url(&state.public_url, &p, &d, &flow));
            resp.headers_mut().append(
                header::SET_COOKIE,
                session::set_cookie(
                    FLOW_COOKIE,
                    &oidc::seal_flow(&state.key, &flow),
                    oidc::FLOW_LIFETIME_SECS,
                    ctx.secure,
                    "Lax",
                ),
            );
            Ok(resp)
        },
    )
    .await
}

pub async fn callback(
    State(state): Portal,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    let cookie = session::cookies(&headers).get(FLOW_COOKIE).cloned();
    page(
        &state.clone(),
        &headers,
        remote,
        "/signin",
        async move |ctx| {
            callback_inner(&state, ctx, &id, &q, cookie.as_deref())
                .await
                .map(|mut resp| {
                    resp.headers_mut().append(
                        header::SET_COOKIE,
                        session::set_cookie(FLOW_COOKIE, "", 0, ctx.secure, "Lax"),
                    );
                    resp
                })
        },
    )
    .await
}

async fn callback_inner(
    state: &Arc<PortalState>,
    ctx: &Ctx,
    id: &str,
    q: &HashMap<String, String>,
    cookie: Option<&str>,
) -> Result<Response, PortalError> {
    let flow = cookie
        .and_then(|c| oidc::open_flow(&state.key, c, session::now_unix()))
        .filter(|f| f.provider == id && Some(&f.state) == q.get("state"))
        .ok_or_else(|| {
            PortalError::Invalid(
                "This sign-in was not started here, or took too long. Start it again.".into(),
            )
        })?;
    if let Some(error) = q.get("error") {
        return Err(PortalError::Invalid(format!(
            "The identity provider did not sign you in ({error})."
        )));
    }
    let code = q
        .get("code")
        .ok_or_else(|| PortalError::Invalid("The identity provider sent no code.".into()))?;
    let p = configured(state, id).await?;
    let reach = Reach {
        http: &state.http,
        discovery: &state.discovery,
        public_url: &state.public_url,
    };
    let who = oidc::identity(&reach, &p, &flow, code).await?;
    let approval = signup_settings(state).await?.approval;
    let provider = id.to_string();
    let (user_id, props) = state
        .write(format!("portal:{provider}"), move |tx| {
            account_for(tx, &provider, &who, approval)
        })
        .await?;
    match props.get("state").and_then(Value::as_str) {
        Some("active") => {}
        Some("pending") => {
            return Ok(ctx.message(
                state,
                StatusCode::FORBIDDEN,
                "Not active yet",
                "Your account waits for an administrator's approval.",
            ));
        }
        _ => {
            return Ok(ctx.message(
                state,
                StatusCode::FORBIDDEN,
                "Account blocked",
                "This account is blocked. Contact the portal's administrators.",
            ));
        }
    }
    let hash = props
        .get("passwordHash")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(signed_in(
        ctx,
        state,
        &user_id,
        &session::fingerprint(hash),
        &flow.next,
    ))
}

fn has_identity(props: &Map<String, Value>, provider: &str, subject: &str) -> bool {
    props
        .get("identities")
        .and_then(Value::as_array)
        .is_some_and(|ids| {
            ids.iter()
                .any(|i| i["provider"] == provider && i["id"] == subject)
        })
}

/// The account of an identity: the one that has it, else the one with its (verified) email,
/// which then gets it, else a new one.
fn account_for(
    tx: &mut gatehouse_store::WriteTx<'_>,
    provider: &str,
    who: &Identity,
    approval: bool,
) -> Result<(String, Map<String, Value>), PortalError> {
    let id_of = |path: &str| path.rsplit('/').next().unwrap_or_default().to_string();
    for u in tx.children(Kind::User, "")? {
        if has_identity(&u.properties, provider, &who.subject) {
            return Ok((id_of(&u.path), u.properties));
        }
    }
    let identity = json!({"provider": provider, "id": who.subject});
    if let Some(u) = tx
        .find_by_property(Kind::User, "email", &who.email)?
        .into_iter()
        .next()
    {
        if !who.email_verified {
            return Err(PortalError::Invalid("An account with this email exists, and the identity provider has not verified the address: sign in with your password.".into()));
        }
        let mut ids = u
            .properties
            .get("identities")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        ids.push(identity);
        let mut patch = Map::new();
        patch.insert("identities".into(), Value::Array(ids));
        let path = ResourcePath::parse_stored(&u.path)?;
        let w = rules::put_resource(tx, &path, patch, Mode::Patch, &WriteOptions::default())?;
        return Ok((id_of(&u.path), w.resource.properties));
    }
    let user_id = uuid::Uuid::new_v4().simple().to_string();
    let mut props = Map::new();
    props.insert("email".into(), json!(who.email));
    props.insert(
        "firstName".into(),
        json!(who.first_name.chars().take(100).collect::<String>()),
    );
    props.insert(
        "lastName".into(),
        json!(who.last_name.chars().take(100).collect::<String>()),
    );
    props.insert("identities".into(), json!([identity]));
    props.insert(
        "state".into(),
        json!(if approval { "pending" } else { "active" }),
    );
    let path = ResourcePath::top(Kind::User, &user_id);
    let w = rules::put_resource(tx, &path, props, Mode::Put, &WriteOptions::default())?;
    Ok((user_id, w.resource.properties))
}
