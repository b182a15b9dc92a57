//! Accounts: sign-up (APIM's user resource, Argon2 hashes, the Developers group), sign-in
//! (rate-limited per account and per address), sign-out, password change, account closure.
//!
//! Invariant: a failed sign-in says the same whatever was wrong (no account, wrong password),
//! so the form does not tell which emails have accounts.

use crate::error::PortalError;
use crate::session::{self, SESSION_COOKIE};
use crate::state::PortalState;
use crate::view::{Ctx, see_other};
use crate::viewer;
use crate::visit::{Portal, Remote, page};
use axum::Form;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use gatehouse_management::rules::{self, Mode, WriteOptions};
use gatehouse_model::{Kind, ResourcePath};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

pub type Fields = Form<HashMap<String, String>>;

pub fn field<'a>(f: &'a HashMap<String, String>, name: &str) -> &'a str {
    f.get(name).map(String::as_str).unwrap_or_default()
}

/// A `next` target that stays on this site.
fn local_target(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

fn check_password(p: &str) -> Result<(), PortalError> {
    let n = p.chars().count();
    if (8..=128).contains(&n) {
        Ok(())
    } else {
        Err(PortalError::Invalid(
            "The password must have between 8 and 128 characters.".into(),
        ))
    }
}

/// The response that signs `user` in and goes to `to`.
fn signed_in(
    ctx: &Ctx,
    state: &PortalState,
    user_id: &str,
    fingerprint: &str,
    to: &str,
) -> Response {
    let value = session::issue(&state.key, user_id, fingerprint, session::now_unix());
    let mut resp = see_other(to);
    resp.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(
            SESSION_COOKIE,
            &value,
            session::SESSION_LIFETIME_SECS,
            ctx.secure,
            "Lax",
        ),
    );
    resp
}

fn signed_out(ctx: &Ctx, to: &str) -> Response {
    let mut resp = see_other(to);
    resp.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(SESSION_COOKIE, "", 0, ctx.secure, "Lax"),
    );
    resp
}

pub async fn signin_form(
    axum::extract::State(state): Portal,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/signin",
        |ctx| async move {
            let next = local_target(field(&q, "next")).to_string();
            let r = ctx.render(&state, StatusCode::OK, "signin.html", json!({"next": next}));
            (ctx, r)
        },
    )
    .await
}

pub async fn signin(
    axum::extract::State(state): Portal,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/signin",
        |ctx| async move {
            let r = signin_inner(&state, &ctx, &f).await;
            (ctx, r)
        },
    )
    .await
}

async fn signin_inner(
    state: &Arc<PortalState>,
    ctx: &Ctx,
    f: &HashMap<String, String>,
) -> Result<Response, PortalError> {
    ctx.check_csrf(state, f.get("csrf").map(String::as_str))?;
    let email = field(f, "email").trim().to_string();
    let password = field(f, "password").to_string();
    if let Err(wait) = state.limiter.check(&email, &ctx.address) {
        return Err(PortalError::TooManyAttempts(
            wait.as_secs().div_ceil(60).max(1),
        ));
    }
    let lookup = email.clone();
    let user = state
        .read(move |r| {
            Ok(match viewer::find_by_email(r, &lookup)? {
                Some(res) => Some((viewer::user_of(r, &res)?, res.properties)),
                None => None,
            })
        })
        .await?;
    let hash = |p: &Map<String, Value>| {
        p.get("passwordHash")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let Some((user, props)) = user.filter(|(_, p)| rules::verify_password(&password, &hash(p)))
    else {
        state.limiter.failed(&email, &ctx.address);
        return ctx.render(
            state,
            StatusCode::UNAUTHORIZED,
            "signin.html",
            json!({
                "error": "The email or the password is not correct.", "email": email,
                "next": local_target(field(f, "next")),
            }),
        );
    };
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
    state.limiter.succeeded(&email);
    Ok(signed_in(
        ctx,
        state,
        &user.id,
        &user.fingerprint,
        local_target(field(f, "next")),
    ))
}

pub async fn signout(
    axum::extract::State(state): Portal,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/signout",
        |ctx| async move {
            let r = ctx
                .check_csrf(&state, f.get("csrf").map(String::as_str))
                .map(|()| {
                    if let Some(c) = &ctx.session {
                        state.revoked.revoke(c);
                    }
                    signed_out(&ctx, "/")
                });
            (ctx, r)
        },
    )
    .await
}

/// Sign-up settings: APIM's `/portalsettings/signup` (`enabled`, `termsOfService`) and
/// Gatehouse's `approval`.
struct SignupSettings {
    enabled: bool,
    terms: String,
    terms_required: bool,
    approval: bool,
}

async fn signup_settings(state: &Arc<PortalState>) -> Result<SignupSettings, PortalError> {
    let res = state.read(|r| Ok(r.get("/portalsettings/signup")?)).await?;
    let p = res
        .map(|r| Value::Object(r.properties))
        .unwrap_or(Value::Null);
    let terms = &p["termsOfService"];
    let terms_on = terms["enabled"] == json!(true);
    Ok(SignupSettings {
        enabled: p["enabled"] != json!(false),
        terms: if terms_on {
            terms["text"].as_str().unwrap_or_default().to_string()
        } else {
            String::new()
        },
        terms_required: terms_on && terms["consentRequired"] == json!(true),
        approval: p["approval"] == json!("administrator"),
    })
}

pub async fn signup_form(
    axum::extract::State(state): Portal,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    page(&state.clone(), &headers, remote, "/signup", |ctx| async move {
        let r = async {
            let s = signup_settings(&state).await?;
            ctx.render(&state, StatusCode::OK, "signup.html", json!({
                "enabled": s.enabled, "terms": s.terms, "terms_required": s.terms_required, "form": {},
            }))
        }
        .await;
        (ctx, r)
    })
    .await
}

pub async fn signup(
    axum::extract::State(state): Portal,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    page(&state.clone(), &headers, remote, "/signup", |ctx| async move {
        let r = match signup_inner(&state, &ctx, &f).await {
            Err(PortalError::Invalid(message)) => signup_settings(&state).await.and_then(|s| {
                ctx.render(&state, StatusCode::BAD_REQUEST, "signup.html", json!({
                    "enabled": s.enabled, "terms": s.terms, "terms_required": s.terms_required,
                    "error": message,
                    "form": {"email": field(&f, "email"), "first_name": field(&f, "first_name"), "last_name": field(&f, "last_name")},
                }))
            }),
            other => other,
        };
        (ctx, r)
    })
    .await
}

async fn signup_inner(
    state: &Arc<PortalState>,
    ctx: &Ctx,
    f: &HashMap<String, String>,
) -> Result<Response, PortalError> {
    ctx.check_csrf(state, f.get("csrf").map(String::as_str))?;
    let settings = signup_settings(state).await?;
    if !settings.enabled {
        return Err(PortalError::Forbidden);
    }
    if settings.terms_required && field(f, "terms") != "yes" {
        return Err(PortalError::Invalid(
            "Agree to the terms of use to sign up.".into(),
        ));
    }
    let password = field(f, "password").to_string();
    check_password(&password)?;
    let (first, last) = (field(f, "first_name").trim(), field(f, "last_name").trim());
    if first.is_empty()
        || last.is_empty()
        || first.chars().count() > 100
        || last.chars().count() > 100
    {
        return Err(PortalError::Invalid(
            "First and last name are required (at most 100 characters each).".into(),
        ));
    }
    let mut props = Map::new();
    props.insert("email".into(), json!(field(f, "email").trim()));
    props.insert("firstName".into(), json!(first));
    props.insert("lastName".into(), json!(last));
    props.insert("password".into(), json!(password));
    props.insert(
        "state".into(),
        json!(if settings.approval {
            "pending"
        } else {
            "active"
        }),
    );
    let id = uuid::Uuid::new_v4().simple().to_string();
    let path = ResourcePath::top(Kind::User, &id);
    let user = state
        .write("portal".into(), move |tx| {
            rules::put_resource(tx, &path, props, Mode::Put, &WriteOptions::default())?;
            let res = tx.get(&path.as_string())?.ok_or(PortalError::NotFound)?;
            Ok(res.properties)
        })
        .await?;
    if settings.approval {
        return Ok(ctx.message(
            state,
            StatusCode::OK,
            "Thank you",
            "Your account was created. It can be used once an administrator approves it.",
        ));
    }
    let hash = user
        .get("passwordHash")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(signed_in(
        ctx,
        state,
        &id,
        &session::fingerprint(hash),
        "/apis",
    ))
}

pub async fn profile(
    axum::extract::State(state): Portal,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/profile",
        |ctx| async move {
            let r = ctx.viewer.require_user().and_then(|u| {
                let done =
                    (field(&q, "done") == "password").then_some("Your password was changed.");
                ctx.render(
                    &state,
                    StatusCode::OK,
                    "profile.html",
                    json!({"user": u, "done": done}),
                )
            });
            (ctx, r)
        },
    )
    .await
}

/// Checks the signed-in user's password again (for changes that need it).
async fn recheck_password(
    state: &Arc<PortalState>,
    user_id: &str,
    password: &str,
) -> Result<(), PortalError> {
    let path = format!("/users/{user_id}");
    let res = state
        .read(move |r| Ok(r.get(&path)?))
        .await?
        .ok_or(PortalError::SignInRequired)?;
    let hash = res
        .properties
        .get("passwordHash")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if rules::verify_password(password, hash) {
        Ok(())
    } else {
        Err(PortalError::Invalid("The password is not correct.".into()))
    }
}

pub async fn change_password(
    axum::extract::State(state): Portal,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/profile",
        |ctx| async move {
            let r = async {
                ctx.check_csrf(&state, f.get("csrf").map(String::as_str))?;
                let user = ctx.viewer.require_user()?.clone();
                recheck_password(&state, &user.id, field(&f, "current")).await?;
                let password = field(&f, "password").to_string();
                check_password(&password)?;
                let path = ResourcePath::top(Kind::User, &user.id);
                let hash = state
                    .write(format!("portal:{}", user.id), move |tx| {
                        let mut props = Map::new();
                        props.insert("password".into(), json!(password));
                        let w = rules::put_resource(
                            tx,
                            &path,
                            props,
                            Mode::Patch,
                            &WriteOptions::default(),
                        )?;
                        Ok(w.resource
                            .properties
                            .get("passwordHash")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string())
                    })
                    .await?;
                // Every other session of the account ends (their fingerprint no longer matches);
                // this one goes on with a new cookie.
                Ok(signed_in(
                    &ctx,
                    &state,
                    &user.id,
                    &session::fingerprint(&hash),
                    "/profile?done=password",
                ))
            }
            .await;
            (ctx, r)
        },
    )
    .await
}

pub async fn close_account(
    axum::extract::State(state): Portal,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/profile",
        |ctx| async move {
            let r = async {
                ctx.check_csrf(&state, f.get("csrf").map(String::as_str))?;
                let user = ctx.viewer.require_user()?.clone();
                recheck_password(&state, &user.id, field(&f, "password")).await?;
                let path = ResourcePath::top(Kind::User, &user.id);
                state
                    .write(format!("portal:{}", user.id), move |tx| {
                        let opts = WriteOptions {
                            delete_subscriptions: true,
                            ..WriteOptions::default()
                        };
                        rules::delete_resource(tx, &path, &opts)?;
                        Ok(())
                    })
                    .await?;
                if let Some(c) = &ctx.session {
                    state.revoked.revoke(c);
                }
                let mut resp = ctx.message(
                    &state,
                    StatusCode::OK,
                    "Account closed",
                    "Your account and its subscriptions were deleted.",
                );
                resp.headers_mut().append(
                    header::SET_COOKIE,
                    session::set_cookie(SESSION_COOKIE, "", 0, ctx.secure, "Lax"),
                );
                Ok(resp)
            }
            .await;
            (ctx, r)
        },
    )
    .await
}
