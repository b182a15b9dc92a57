//! Pages: the templates (embedded in the binary, escaped by default) and the per-request
//! context every page is rendered with — the site's look, the visitor, the CSRF field.
//!
//! Invariant: every value a template prints is HTML-escaped unless it is HTML this crate made
//! safe (`markdown::to_safe_html`), which templates mark with `|safe` — and nothing else is.

use crate::content::Site;
use crate::error::PortalError;
use crate::session::{self, CSRF_COOKIE, SESSION_COOKIE};
use crate::state::PortalState;
use crate::viewer::{self, Viewer};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;

/// One request as the pages see it.
pub struct Ctx {
    pub viewer: Viewer,
    pub site: Site,
    pub address: String,
    /// Whether the visitor reached the portal over HTTPS (cookies are then `Secure`).
    pub secure: bool,
    csrf_cookie: String,
    new_csrf: bool,
    /// The signature of the visitor's session cookie, if it is valid.
    pub session: Option<session::Claim>,
    pub path: String,
}

impl Ctx {
    /// Reads the session and the site in one view of the store.
    pub async fn load(
        state: &Arc<PortalState>,
        headers: &HeaderMap,
        remote: Option<SocketAddr>,
        path: &str,
    ) -> Result<Ctx, PortalError> {
        let cookies = session::cookies(headers);
        let now = session::now_unix();
        let claim = cookies
            .get(SESSION_COOKIE)
            .and_then(|v| session::read(&state.key, v, now))
            .filter(|c| !state.revoked.is_revoked(c));
        let (csrf_cookie, new_csrf) = match cookies.get(CSRF_COOKIE) {
            Some(v) if v.len() >= 16 && v.len() <= 64 => (v.clone(), false),
            _ => (crate::secret::random_token(), true),
        };
        let st = state.clone();
        let claim_for_read = claim.clone();
        let (user, site) = state
            .read(move |r| {
                let user = match &claim_for_read {
                    Some(c) => viewer::from_claim(r, c)?,
                    None => None,
                };
                Ok((user, st.content.get(r)?.site()))
            })
            .await?;
        let secure = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
            || state.https;
        Ok(Ctx {
            session: claim.filter(|_| user.is_some()),
            viewer: Viewer { user },
            site,
            address: remote.map(|a| a.ip().to_string()).unwrap_or_default(),
            secure,
            csrf_cookie,
            new_csrf,
            path: path.to_string(),
        })
    }

    /// Refuses a form whose CSRF field (`csrf`) does not match the visitor's cookie.
    pub fn check_csrf(
        &self,
        state: &PortalState,
        form: &std::collections::HashMap<String, String>,
    ) -> Result<(), PortalError> {
        let field = form.get("csrf").map(String::as_str);
        if !self.new_csrf && session::csrf_ok(&state.key, Some(&self.csrf_cookie), field) {
            Ok(())
        } else {
            Err(PortalError::Csrf)
        }
    }

    fn common(&self, state: &PortalState) -> Value {
        let viewer = match &self.viewer.user {
            Some(u) => json!({
                "signed_in": true,
                "name": format!("{} {}", u.first_name, u.last_name).trim().to_string(),
                "email": u.email,
                "admin": u.is_admin(),
            }),
            None => json!({"signed_in": false}),
        };
        json!({
            "site": self.site,
            "viewer": viewer,
            "csrf": session::csrf_field(&state.key, &self.csrf_cookie),
            "path": self.path,
        })
    }

    /// A page: `extra`'s fields beside the common ones.
    pub fn render(
        &self,
        state: &PortalState,
        status: StatusCode,
        template: &str,
        extra: Value,
    ) -> Result<Response, PortalError> {
        let mut ctx = self.common(state);
        if let (Some(c), Value::Object(e)) = (ctx.as_object_mut(), extra) {
            c.extend(e);
        }
        let html = state.templates.render(template, &ctx)?;
        let mut resp = (status, Html(html)).into_response();
        self.add_cookies(resp.headers_mut());
        Ok(resp)
    }

    pub fn add_cookies(&self, headers: &mut HeaderMap) {
        if self.new_csrf {
            headers.append(
                header::SET_COOKIE,
                session::set_cookie(
                    CSRF_COOKIE,
                    &self.csrf_cookie,
                    7 * 24 * 3600,
                    self.secure,
                    "Strict",
                ),
            );
        }
    }

    /// A page with a title and a message (errors, confirmations).
    pub fn message(
        &self,
        state: &PortalState,
        status: StatusCode,
        title: &str,
        text: &str,
    ) -> Response {
        self.render(
            state,
            status,
            "message.html",
            json!({"title": title, "text": text}),
        )
        .unwrap_or_else(|_| (status, text.to_string()).into_response())
    }

    /// The page an error leads to.
    pub fn error_page(&self, state: &PortalState, e: &PortalError) -> Response {
        let title = match e {
            PortalError::NotFound => "Not found",
            PortalError::SignInRequired => "Sign in",
            PortalError::Invalid(_) => "Please check what you entered",
            _ => "Sorry",
        };
        let mut resp = self.message(state, e.status(), title, &e.to_string());
        if let PortalError::TooManyAttempts(minutes) = e
            && let Ok(v) = HeaderValue::from_str(&(minutes * 60).to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// A redirect after a form (303, so the browser GETs the next page).
pub fn see_other(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}
