//! What visitors read: the home page and the site's pages, the API catalogue, an API's
//! reference and definition, products, images, and the portal's own stylesheet and script.

use crate::apidoc;
use crate::error::PortalError;
use crate::handler::{Portal, Remote, image_response, page};
use crate::markdown;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

/// The home page and the administrator's pages, by permalink.
pub async fn content_page(
    State(state): Portal,
    uri: Uri,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    let path = uri.path().to_string();
    page(
        &state.clone(),
        &headers,
        remote,
        &path.clone(),
        async move |ctx| {
            let st = state.clone();
            let permalink = path.clone();
            let found = state
                .read(move |r| Ok(st.content.get(r)?.page(&permalink)))
                .await;
            match found? {
                Some(p) => ctx.render(&state, StatusCode::OK, "page.html", json!({"page": p})),
                None => Err(PortalError::NotFound),
            }
        },
    )
    .await
}

#[derive(Deserialize, Default)]
pub struct CatalogQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    tag: String,
}

pub async fn apis(
    State(state): Portal,
    Query(query): Query<CatalogQuery>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/apis",
        async move |ctx| {
            let viewer = ctx.viewer.clone();
            let cat = state.catalogs.clone();
            let catalog = state.read(move |r| cat.get(r, &viewer)).await?;
            let found = catalog.search(&query.q, &query.tag);
            ctx.render(
                &state,
                StatusCode::OK,
                "apis.html",
                json!({
                    "apis": found, "total": catalog.apis.len(), "tags": catalog.tags(),
                    "q": query.q, "tag": query.tag,
                }),
            )
        },
    )
    .await
}

pub async fn api(
    State(state): Portal,
    Path(id): Path<String>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    let path = format!("/apis/{id}");
    page(&state.clone(), &headers, remote, &path, async move |ctx| {
        let viewer = ctx.viewer.clone();
        let cat = state.catalogs.clone();
        let (catalog, ops, description) = state
            .read({
                let id = id.clone();
                move |r| {
                    let catalog = cat.get(r, &viewer)?;
                    let card = catalog.api(&id)?.clone();
                    let ops = apidoc::operations(r, &id)?;
                    Ok((catalog, ops, card.description))
                }
            })
            .await?;
        let api = catalog.api(&id)?;
        ctx.render(
            &state,
            StatusCode::OK,
            "api.html",
            json!({
                "api": api, "operations": ops, "products": catalog.products_of(&id),
                "description_html": markdown::to_safe_html(&description, "markdown"),
                "gateway": state.gateway_url(),
            }),
        )
    })
    .await
}

pub async fn definition(
    State(state): Portal,
    Path(id): Path<String>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    let path = format!("/apis/{id}/definition");
    page(&state.clone(), &headers, remote, &path, async move |ctx| {
        let viewer = ctx.viewer.clone();
        let cat = state.catalogs.clone();
        let gateway = state.gateway_url();
        state
            .read(move |r| {
                cat.get(r, &viewer)?.api(&id)?;
                apidoc::definition(r, &id, &gateway)
            })
            .await
            .map(|(name, media, bytes)| {
                let mut resp = bytes.into_response();
                let h = resp.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
                if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
                    h.insert(header::CONTENT_DISPOSITION, v);
                }
                resp
            })
    })
    .await
}

pub async fn products(State(state): Portal, headers: HeaderMap, remote: Remote) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/products",
        async move |ctx| {
            let viewer = ctx.viewer.clone();
            let cat = state.catalogs.clone();
            let catalog = state.read(move |r| cat.get(r, &viewer)).await?;
            ctx.render(
                &state,
                StatusCode::OK,
                "products.html",
                json!({"products": catalog.products}),
            )
        },
    )
    .await
}

pub async fn product(
    State(state): Portal,
    Path(id): Path<String>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    let path = format!("/products/{id}");
    page(&state.clone(), &headers, remote, &path, async move |ctx| {
        let viewer = ctx.viewer.clone();
        let cat = state.catalogs.clone();
        let pid = id.clone();
        let (catalog, held) = state
            .read(move |r| {
                let held = match &viewer.user {
                    Some(u) => crate::subscribe::held(r, u, &pid)?,
                    None => 0,
                };
                Ok((cat.get(r, &viewer)?, held))
            })
            .await?;
        let product = catalog.product(&id)?;
        ctx.render(
            &state,
            StatusCode::OK,
            "product.html",
            json!({"product": product, "held": held}),
        )
    })
    .await
}

/// A published image, by id.
pub async fn media(State(state): Portal, Path(id): Path<String>) -> Response {
    let st = state.clone();
    let image = state.read(move |r| Ok(st.content.get(r)?.image(&id))).await;
    image_response(image)
}

fn asset(media: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    resp
}

pub async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../static/portal.css"),
    )
}

pub async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../static/portal.js"),
    )
}

fn hex_colour(c: &str, fallback: &'static str) -> String {
    let ok = c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|h| h.is_ascii_hexdigit());
    if ok {
        c.to_string()
    } else {
        fallback.to_string()
    }
}

/// The site's colours as CSS variables (a stylesheet, so the CSP needs no inline styles).
pub async fn theme(State(state): Portal) -> Response {
    let st = state.clone();
    let site = state.read(move |r| Ok(st.content.get(r)?.site())).await;
    let Ok(site) = site else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response();
    };
    let css = format!(
        ":root {{ --primary: {}; --accent: {}; }}\n",
        hex_colour(&site.primary, "#0b5cad"),
        hex_colour(&site.accent, "#e8f0fb")
    );
    let mut resp = css.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
