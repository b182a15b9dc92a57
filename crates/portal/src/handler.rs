//! What every page handler shares: the extractors (`Portal`, `Remote`, `Fields`), and `page`,
//! which loads the request's context and turns a failure into its page (or, for a visitor who
//! must sign in, a redirect to the sign-in page that comes back).

use crate::error::PortalError;
use crate::state::PortalState;
use crate::view::Ctx;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Arc;

pub type Portal = State<Arc<PortalState>>;
/// The client's address, when the listener knows it (the sign-in limiter counts by it).
#[derive(Debug, Clone, Copy)]
pub struct Remote(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Remote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Remote(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// Loads the request's context and turns a failure into its page.
pub async fn page<F>(
    state: &Arc<PortalState>,
    headers: &HeaderMap,
    remote: Remote,
    path: &str,
    f: F,
) -> Response
where
    F: AsyncFnOnce(&Ctx) -> Result<Response, PortalError>,
{
    let ctx = match Ctx::load(state, headers, remote.0, path).await {
        Ok(c) => c,
        Err(e) => return (e.status(), e.to_string()).into_response(),
    };
    let result = f(&ctx).await;
    match result {
        Ok(mut resp) => {
            ctx.add_cookies(resp.headers_mut());
            resp
        }
        Err(PortalError::SignInRequired) if !path.starts_with("/signin") => {
            let mut resp = crate::view::see_other(&format!("/signin?next={}", urlencode(path)));
            ctx.add_cookies(resp.headers_mut());
            resp
        }
        Err(e) => ctx.error_page(state, &e),
    }
}

pub fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

pub type Fields = Form<HashMap<String, String>>;

pub fn field<'a>(f: &'a HashMap<String, String>, name: &str) -> &'a str {
    f.get(name).map(String::as_str).unwrap_or_default()
}

pub fn image_response(image: Result<Option<(String, Vec<u8>)>, PortalError>) -> Response {
    match image {
        Ok(Some((media, bytes))) => {
            let mut resp = bytes.into_response();
            if let Ok(v) = HeaderValue::from_str(&media) {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such image").into_response(),
        Err(e) => (e.status(), e.to_string()).into_response(),
    }
}
