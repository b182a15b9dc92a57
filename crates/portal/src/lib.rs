//! Gatehouse's developer portal: the site where API consumers sign up, find APIs, read their
//! reference, try them with their own key and manage their subscriptions. Server-rendered HTML
//! that works without JavaScript; one small script makes the try-it console answer in place.
//!
//! Modules, bottom up: `secret` (the portal's signing key), `session` (signed session cookies,
//! CSRF fields, the sign-in limiter), `markdown` (administrators' text → sanitised HTML),
//! `error`, `viewer` (who asks), `catalog` (what they may see, by APIM's visibility rules),
//! `apidoc` (an API's reference and definition), `content` (the site's published pages, look
//! and images), `templates`, `state`, `view` (the per-request context), `handler` (what every
//! page handler shares), then the pages: `visit`, `account`, `subscribe`, `tryit`, `admin`,
//! `federated` (sign-in through an OpenID Connect provider, whose protocol is `oidc`).
//!
//! Invariants: every POST carries a CSRF field that matches its visitor's cookie; every page
//! is escaped by default and sent with a Content-Security-Policy that allows no inline script;
//! the portal reads the store and writes only through the management rules (one transaction
//! each, journaled, refused during a move's freeze).

pub mod account;
pub mod admin;
pub mod apidoc;
pub mod catalog;
pub mod content;
pub mod error;
pub mod federated;
pub mod handler;
pub mod mail;
pub mod markdown;
pub mod oidc;
pub mod secret;
pub mod session;
pub mod state;
pub mod subscribe;
pub mod templates;
pub mod tryit;
pub mod view;
pub mod viewer;
pub mod visit;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use std::sync::Arc;

pub use mail::Mailer;
pub use secret::PortalKey;
pub use state::{PortalOptions, PortalState};

/// The Content-Security-Policy of every page: scripts and styles from the portal only, images
/// from the portal (and `data:`), forms posting to the portal, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// The largest request body (an image upload of 1 MiB, base64 inflation left to the rules).
const MAX_BODY: usize = 2 * 1024 * 1024;

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The portal's routes.
pub fn router(state: Arc<PortalState>) -> Router {
    Router::new()
        .route("/apis", get(visit::apis))
        .route("/apis/{id}", get(visit::api))
        .route("/apis/{id}/definition", get(visit::definition))
        .route("/apis/{api}/operations/{op}", get(tryit::operation))
        .route("/apis/{api}/operations/{op}/try", post(tryit::try_it))
        .route("/products", get(visit::products))
        .route("/products/{id}", get(visit::product))
        .route("/products/{id}/subscribe", post(subscribe::subscribe))
        .route("/signin", get(account::signin_form).post(account::signin))
        .route("/signup", get(account::signup_form).post(account::signup))
        .route("/signout", post(account::signout))
        .route("/confirm/{token}", get(account::confirm))
        .route("/oidc/{provider}/start", get(federated::start))
        .route("/oidc/{provider}/callback", get(federated::callback))
        .route(
            "/reset",
            get(account::reset_form).post(account::reset_request),
        )
        .route(
            "/reset/{token}",
            get(account::new_password_form).post(account::new_password),
        )
        .route("/profile", get(account::profile))
        .route("/profile/password", post(account::change_password))
        .route("/profile/close", post(account::close_account))
        .route("/subscriptions", get(subscribe::list))
        .route("/subscriptions/{id}", get(subscribe::show))
        .route(
            "/subscriptions/{id}/regenerate",
            post(subscribe::regenerate),
        )
        .route("/subscriptions/{id}/rename", post(subscribe::rename))
        .route("/subscriptions/{id}/cancel", post(subscribe::cancel))
        .route("/admin", get(admin::overview))
        .route(
            "/admin/pages/{id}",
            get(admin::edit_page).post(admin::save_page),
        )
        .route("/admin/styles", post(admin::save_styles))
        .route("/admin/images", post(admin::upload_image))
        .route("/admin/media/{id}", get(admin::draft_image))
        .route("/admin/publish", post(admin::publish))
        .route("/admin/revisions/{id}/current", post(admin::make_current))
        .route(
            "/admin/subscriptions/{id}/approve",
            post(admin::approve_subscription),
        )
        .route(
            "/admin/subscriptions/{id}/reject",
            post(admin::reject_subscription),
        )
        .route("/admin/users/{id}/approve", post(admin::approve_user))
        .route("/media/{id}", get(visit::media))
        .route("/static/portal.css", get(visit::stylesheet))
        .route("/static/portal.js", get(visit::script))
        .route("/static/theme.css", get(visit::theme))
        .fallback(get(visit::content_page))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}
