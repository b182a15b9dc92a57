//! Accounts: sign-up (APIM's user resource, Argon2 hashes, the Developers group), sign-in
//! (rate-limited per account and per address), sign-out, password change, account closure.
//!
//! Invariant: a failed sign-in says the same whatever was wrong (no account, wrong password),
//! so the form does not tell which emails have accounts.

use crate::error::PortalError;
use crate::handler::{Fields, Portal, Remote, field, page};
use crate::session::{self, SESSION_COOKIE};
use crate::state::PortalState;
use crate::view::{Ctx, see_other};
use crate::viewer;
use axum::Form;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use gatehouse_management::rules::{self, Mode, WriteOptions};
use gatehouse_model::{Kind, ResourcePath};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// A `next` target that stays on this site.
pub fn local_target(next: &str) -> &str {
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
pub fn signed_in(
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

/// The identity providers the sign-in page offers: id and button label (those that speak
/// OpenID Connect).
async fn identity_providers(state: &Arc<PortalState>) -> Result<Vec<Value>, PortalError> {
    let list = state
        .read(|r| Ok(r.children(Kind::IdentityProvider, "")?))
        .await?;
    Ok(list
        .iter()
        .map(|p| p.path.rsplit('/').next().unwrap_or_default().to_string())
        .filter(|id| crate::oidc::provider(id, &Map::new()).is_ok())
        .map(|id| json!({"id": id, "label": crate::oidc::label(&id)}))
        .collect())
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
        async move |ctx| {
            let next = local_target(field(&q, "next")).to_string();
            match identity_providers(&state).await {
                Ok(providers) => ctx.render(
                    &state,
                    StatusCode::OK,
                    "signin.html",
                    json!({"next": next, "providers": providers}),
                ),
                Err(e) => Err(e),
            }
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
        async move |ctx| signin_inner(&state, ctx, &f).await,
    )
    .await
}

async fn signin_inner(
    state: &Arc<PortalState>,
    ctx: &Ctx,
    f: &HashMap<String, String>,
) -> Result<Response, PortalError> {
    ctx.check_csrf(state, f)?;
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
        let providers = identity_providers(state).await?;
        return ctx.render(
            state,
            StatusCode::UNAUTHORIZED,
            "signin.html",
            json!({
                "error": "The email or the password is not correct.", "email": email,
                "next": local_target(field(f, "next")), "providers": providers,
            }),
        );
    };
    match props.get("state").and_then(Value::as_str) {
        Some("active") => {}
        Some("pending") => return pending_sign_in(state, ctx, &user).await,
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
        async move |ctx| {
            ctx.check_csrf(&state, &f).map(|()| {
                if let Some(c) = &ctx.session {
                    state.revoked.revoke(c);
                }
                signed_out(ctx, "/")
            })
        },
    )
    .await
}

/// Sign-up settings: APIM's `/portalsettings/signup` (`enabled`, `termsOfService`) and
/// Gatehouse's `approval`.
pub struct SignupSettings {
    pub enabled: bool,
    pub terms: String,
    pub terms_required: bool,
    pub approval: bool,
}

pub async fn signup_settings(state: &Arc<PortalState>) -> Result<SignupSettings, PortalError> {
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
    page(&state.clone(), &headers, remote, "/signup", async move |ctx| {
            let s = signup_settings(&state).await?;
            ctx.render(&state, StatusCode::OK, "signup.html", json!({
                "enabled": s.enabled, "terms": s.terms, "terms_required": s.terms_required, "form": {},
            }))
    })
    .await
}

pub async fn signup(
    axum::extract::State(state): Portal,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    page(&state.clone(), &headers, remote, "/signup", async move |ctx| {
        match signup_inner(&state, ctx, &f).await {
            Err(PortalError::Invalid(message)) => signup_settings(&state).await.and_then(|s| {
                ctx.render(&state, StatusCode::BAD_REQUEST, "signup.html", json!({
                    "enabled": s.enabled, "terms": s.terms, "terms_required": s.terms_required,
                    "error": message,
                    "form": {"email": field(&f, "email"), "first_name": field(&f, "first_name"), "last_name": field(&f, "last_name")},
                }))
            }),
            other => other,
        }
    })
    .await
}

async fn signup_inner(
    state: &Arc<PortalState>,
    ctx: &Ctx,
    f: &HashMap<String, String>,
) -> Result<Response, PortalError> {
    ctx.check_csrf(state, f)?;
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
    let confirm_by_mail = !settings.approval && state.mailer.is_some();
    let pending = settings.approval || confirm_by_mail;
    props.insert(
        "state".into(),
        json!(if pending { "pending" } else { "active" }),
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
    if confirm_by_mail {
        let email = user
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        return Ok(match send_confirmation(state, &id, &email).await {
            Ok(()) => ctx.message(state, StatusCode::OK, "Confirm your email", "We sent you a link to confirm your email address. Open it to start using your account."),
            Err(_) => ctx.message(state, StatusCode::SERVICE_UNAVAILABLE, "Email not sent", "Your account was created, but the confirmation email could not be sent. Sign in later to get a new link."),
        });
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
        async move |ctx| {
            ctx.viewer.require_user().and_then(|u| {
                let done =
                    (field(&q, "done") == "password").then_some("Your password was changed.");
                ctx.render(
                    &state,
                    StatusCode::OK,
                    "profile.html",
                    json!({"user": u, "done": done}),
                )
            })
        },
    )
    .await
}

/// Sets a user's password (as a PATCH through the rules: Argon2, journaled); the new hash.
async fn set_password(
    state: &Arc<PortalState>,
    user_id: &str,
    password: String,
) -> Result<String, PortalError> {
    let path = ResourcePath::top(Kind::User, user_id);
    state
        .write(format!("portal:{user_id}"), move |tx| {
            let mut props = Map::new();
            props.insert("password".into(), json!(password));
            let w = rules::put_resource(tx, &path, props, Mode::Patch, &WriteOptions::default())?;
            Ok(w.resource
                .properties
                .get("passwordHash")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string())
        })
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
        async move |ctx| {
            ctx.check_csrf(&state, &f)?;
            let user = ctx.viewer.require_user()?.clone();
            recheck_password(&state, &user.id, field(&f, "current")).await?;
            let password = field(&f, "password").to_string();
            check_password(&password)?;
            let hash = set_password(&state, &user.id, password).await?;
            // Every other session of the account ends (their fingerprint no longer matches);
            // this one goes on with a new cookie.
            Ok(signed_in(
                ctx,
                &state,
                &user.id,
                &session::fingerprint(&hash),
                "/profile?done=password",
            ))
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
        async move |ctx| {
            ctx.check_csrf(&state, &f)?;
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
        },
    )
    .await
}

/// How long the link of a confirmation email works.
const CONFIRM_LIFETIME_SECS: i64 = 48 * 3600;
/// How long the link of a password-reset email works.
const RESET_LIFETIME_SECS: i64 = 3600;

async fn send_confirmation(
    state: &Arc<PortalState>,
    user_id: &str,
    email: &str,
) -> Result<(), PortalError> {
    let mailer = state.mailer.as_ref().ok_or(PortalError::Forbidden)?;
    let token = session::issue_token(
        &state.key,
        "confirm",
        user_id,
        "",
        session::now_unix() + CONFIRM_LIFETIME_SECS,
    );
    let body = format!(
        "Welcome!\n\nConfirm your email address to start using your account:\n\n{}/confirm/{token}\n\nThe link works for 48 hours. If you did not sign up, ignore this email.\n",
        state.public_url
    );
    mailer
        .send(email, "Confirm your email address", body)
        .await
        .map_err(PortalError::Invalid)
}

/// A sign-in with the right password to an account that is not active yet: it waits for an
/// administrator, or for its email to be confirmed — then a new link is sent.
async fn pending_sign_in(
    state: &Arc<PortalState>,
    ctx: &Ctx,
    user: &viewer::User,
) -> Result<Response, PortalError> {
    let settings = signup_settings(state).await?;
    if settings.approval || state.mailer.is_none() {
        return Ok(ctx.message(
            state,
            StatusCode::FORBIDDEN,
            "Not active yet",
            "Your account waits for an administrator's approval.",
        ));
    }
    Ok(match send_confirmation(state, &user.id, &user.email).await {
        Ok(()) => ctx.message(state, StatusCode::FORBIDDEN, "Confirm your email", "Your email address is not confirmed yet. We sent you a new link."),
        Err(_) => ctx.message(state, StatusCode::SERVICE_UNAVAILABLE, "Email not sent", "Your email address is not confirmed yet, and a new link could not be sent. Try again later."),
    })
}

pub async fn confirm(
    axum::extract::State(state): Portal,
    axum::extract::Path(token): axum::extract::Path<String>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    page(&state.clone(), &headers, remote, "/confirm", async move |ctx| {
            let claim = session::read_token(&state.key, "confirm", &token, session::now_unix())
                .ok_or_else(|| PortalError::Invalid("This confirmation link is not valid or has expired. Sign in to get a new one.".into()))?;
            let path = ResourcePath::top(Kind::User, &claim.user_id);
            let hash = state
                .write(format!("portal:{}", claim.user_id), move |tx| {
                    let existing = tx.get(&path.as_string())?.ok_or(PortalError::NotFound)?;
                    let p = &existing.properties;
                    if p.get("state").and_then(Value::as_str) == Some("pending") {
                        let mut props = Map::new();
                        props.insert("state".into(), json!("active"));
                        rules::put_resource(tx, &path, props, Mode::Patch, &WriteOptions::default())?;
                    }
                    Ok(p.get("passwordHash").and_then(Value::as_str).unwrap_or_default().to_string())
                })
                .await?;
            Ok(signed_in(ctx, &state, &claim.user_id, &session::fingerprint(&hash), "/apis"))
    })
    .await
}

pub async fn reset_form(
    axum::extract::State(state): Portal,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/reset",
        async move |ctx| {
            ctx.render(
                &state,
                StatusCode::OK,
                "reset.html",
                json!({"can_mail": state.mailer.is_some()}),
            )
        },
    )
    .await
}

/// Sends a reset link if the account exists and is active; answers the same either way, so the
/// form does not tell which emails have accounts. Requests count against the sign-in limiter.
pub async fn reset_request(
    axum::extract::State(state): Portal,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    page(&state.clone(), &headers, remote, "/reset", async move |ctx| {
            ctx.check_csrf(&state, &f)?;
            let mailer = state.mailer.clone().ok_or(PortalError::Forbidden)?;
            let email = field(&f, "email").trim().to_string();
            if let Err(wait) = state.limiter.check(&email, &ctx.address) {
                return Err(PortalError::TooManyAttempts(wait.as_secs().div_ceil(60).max(1)));
            }
            state.limiter.failed(&email, &ctx.address);
            let lookup = email.clone();
            let user = state
                .read(move |r| {
                    Ok(match viewer::find_by_email(r, &lookup)? {
                        Some(res) if res.properties.get("state").and_then(Value::as_str) == Some("active") => Some(viewer::user_of(r, &res)?),
                        _ => None,
                    })
                })
                .await?;
            if let Some(user) = user {
                let token = session::issue_token(&state.key, "reset", &user.id, &user.fingerprint, session::now_unix() + RESET_LIFETIME_SECS);
                let body = format!(
                    "Someone asked to reset the password of your account.\n\nChoose a new password here:\n\n{}/reset/{token}\n\nThe link works for one hour, once. If it was not you, ignore this email: your password stays as it is.\n",
                    state.public_url
                );
                // A failure is logged; the answer stays the same.
                let _ = mailer.send(&user.email, "Reset your password", body).await;
            }
            Ok(ctx.message(&state, StatusCode::OK, "Check your email", "If an account uses this address, we sent it a link to choose a new password."))
    })
    .await
}

/// The user a reset link names, while the link holds (unexpired, password unchanged since).
async fn reset_claim(state: &Arc<PortalState>, token: &str) -> Result<viewer::User, PortalError> {
    let invalid = || {
        PortalError::Invalid(
            "This link is not valid any more: it has expired or was used. Ask for a new one."
                .into(),
        )
    };
    let claim =
        session::read_token(&state.key, "reset", token, session::now_unix()).ok_or_else(invalid)?;
    let path = format!("/users/{}", claim.user_id);
    let user = state
        .read(move |r| {
            Ok(match r.get(&path)? {
                Some(res) => Some(viewer::user_of(r, &res)?),
                None => None,
            })
        })
        .await?
        .ok_or_else(invalid)?;
    if user.fingerprint != claim.fingerprint {
        return Err(invalid());
    }
    Ok(user)
}

pub async fn new_password_form(
    axum::extract::State(state): Portal,
    axum::extract::Path(token): axum::extract::Path<String>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/reset",
        async move |ctx| match reset_claim(&state, &token).await {
            Ok(_) => ctx.render(
                &state,
                StatusCode::OK,
                "new_password.html",
                json!({"token": token}),
            ),
            Err(e) => Err(e),
        },
    )
    .await
}

pub async fn new_password(
    axum::extract::State(state): Portal,
    axum::extract::Path(token): axum::extract::Path<String>,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/reset",
        async move |ctx| {
            ctx.check_csrf(&state, &f)?;
            let user = reset_claim(&state, &token).await?;
            let password = field(&f, "password").to_string();
            check_password(&password)?;
            let hash = set_password(&state, &user.id, password).await?;
            state.limiter.succeeded(&user.email);
            Ok(signed_in(
                ctx,
                &state,
                &user.id,
                &session::fingerprint(&hash),
                "/profile?done=password",
            ))
        },
    )
    .await
}
