//! The admin view, for members of the Administrators group: pages, the site's look, images,
//! publishing and reverting revisions, and approving what waits (subscriptions to products
//! that require approval, accounts when sign-up needs an administrator).
//!
//! Every change goes through the management rules as the API's would (same checks, same
//! journal entries, named `portal:<user>`), so the portal's content is in backups, exports and
//! moves like any other resource.

use crate::content::Content;
use crate::error::PortalError;
use crate::handler::{Fields, field};
use crate::handler::{Portal, Remote, image_response, page};
use crate::state::PortalState;
use crate::view::{Ctx, see_other};
use axum::Form;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use gatehouse_management::rules::{self, Mode, WriteOptions};
use gatehouse_model::{Kind, ResourcePath};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;

fn text(p: &Map<String, Value>, name: &str) -> String {
    p.get(name)
        .map(|v| match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

fn item_path(type_id: &str, id: &str) -> ResourcePath {
    ResourcePath::new(
        Kind::ContentItem,
        vec![
            ("contentTypes", type_id.into()),
            ("contentItems", id.into()),
        ],
    )
}

/// A resource path from an id a form or a URL gave, checked as the management API checks ids.
fn checked(collection_path: &str, id: &str, what: &str) -> Result<ResourcePath, PortalError> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        return Err(PortalError::Invalid(format!(
            "The {what} '{id}' may hold only letters, digits, '-' and '_'."
        )));
    }
    ResourcePath::parse_stored(&format!("{collection_path}/{id}"))
        .map_err(|e| PortalError::Invalid(format!("The {what} '{id}' is not valid: {e}")))
}

/// Writes through the rules as the signed-in administrator.
async fn admin_write(
    state: &Arc<PortalState>,
    ctx: &Ctx,
    path: ResourcePath,
    props: Map<String, Value>,
    mode: Mode,
) -> Result<(), PortalError> {
    let admin = ctx.viewer.require_admin()?.clone();
    state
        .write(format!("portal:{}", admin.id), move |tx| {
            rules::put_resource(tx, &path, props, mode, &WriteOptions::default())?;
            Ok(())
        })
        .await
}

fn done_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "page" => "The page was saved as a draft. Publish to show it to visitors.",
        "styles" => "The look was saved as a draft. Publish to show it to visitors.",
        "image" => "The image was uploaded.",
        "published" => "Published: visitors see the content as it is now.",
        "reverted" => "That revision is current again: visitors see its content.",
        "approved" => "Approved.",
        "rejected" => "Rejected.",
        _ => return None,
    })
}

pub async fn overview(
    State(state): Portal,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/admin",
        async move |ctx| {
            ctx.viewer.require_admin()?;
            let values = state.read(overview_values).await?;
            let mut values = values;
            values["done"] = json!(done_text(field(&q, "done")));
            ctx.render(&state, StatusCode::OK, "admin.html", values)
        },
    )
    .await
}

fn overview_values(r: &gatehouse_store::ReadTx<'_>) -> Result<Value, PortalError> {
    let draft = Content::draft(r)?;
    let published = Content::published(r)?.revision;
    let mut pages: Vec<Value> = draft
        .pages()
        .into_iter()
        .map(|(id, p)| json!({"id": id, "title": text(&p, "title"), "permalink": text(&p, "permalink"), "nav": text(&p, "navOrder")}))
        .collect();
    pages.sort_by_key(|p| p["permalink"].as_str().unwrap_or_default().to_string());
    let mut revisions: Vec<Value> = r
        .all_of_kind(Kind::PortalRevision)?
        .into_iter()
        .map(|rev| {
            json!({
                "id": rev.path.rsplit('/').next().unwrap_or_default(),
                "created": text(&rev.properties, "createdDateTime"),
                "description": text(&rev.properties, "description"),
                "current": rev.properties.get("isCurrent") == Some(&json!(true)),
            })
        })
        .collect();
    revisions
        .sort_by_key(|r| std::cmp::Reverse(r["created"].as_str().unwrap_or_default().to_string()));
    let mut pending_subscriptions = Vec::new();
    for s in r.children(Kind::Subscription, "")? {
        if text(&s.properties, "state") == "submitted" {
            let v = crate::subscribe::view(r, &s)?;
            let owner = text(&s.properties, "ownerId");
            let email = match r.get(&owner)? {
                Some(u) => text(&u.properties, "email"),
                None => owner,
            };
            pending_subscriptions
                .push(json!({"id": v.id, "name": v.name, "product": v.product, "owner": email}));
        }
    }
    let pending_users: Vec<Value> = r
        .children(Kind::User, "")?
        .into_iter()
        .filter(|u| text(&u.properties, "state") == "pending")
        .map(|u| json!({"id": u.path.rsplit('/').next().unwrap_or_default(), "email": text(&u.properties, "email")}))
        .collect();
    Ok(json!({
        "pages": pages, "revisions": revisions, "published": published,
        "styles": draft.items.get("styles/default").cloned().unwrap_or_default(),
        "images": draft.image_ids(),
        "pending_subscriptions": pending_subscriptions, "pending_users": pending_users,
    }))
}

pub async fn edit_page(
    State(state): Portal,
    Path(id): Path<String>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    let path = format!("/admin/pages/{id}");
    page(&state.clone(), &headers, remote, &path, async move |ctx| {
        ctx.viewer.require_admin()?;
        let new = id == "new";
        let p = if new {
            Map::new()
        } else {
            let key = format!("/contentTypes/page/contentItems/{id}");
            state
                .read(move |r| Ok(r.get(&key)?))
                .await?
                .ok_or(PortalError::NotFound)?
                .properties
        };
        ctx.render(
            &state,
            StatusCode::OK,
            "admin_page.html",
            json!({"id": id, "new": new, "page": p}),
        )
    })
    .await
}

pub async fn save_page(
    State(state): Portal,
    Path(id): Path<String>,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    let path = format!("/admin/pages/{id}");
    page(&state.clone(), &headers, remote, &path, async move |ctx| {
        ctx.check_csrf(&state, &f)?;
        let id = if id == "new" {
            field(&f, "id").to_string()
        } else {
            id
        };
        let mut props = Map::new();
        for name in ["title", "permalink", "body", "format"] {
            props.insert(name.into(), json!(field(&f, name)));
        }
        let nav = field(&f, "navOrder").trim();
        if !nav.is_empty() {
            let n: i64 = nav.parse().map_err(|_| {
                PortalError::Invalid(
                    "The position in the navigation must be a number from 0 to 1000.".into(),
                )
            })?;
            props.insert("navOrder".into(), json!(n));
        }
        let p = checked("/contentTypes/page/contentItems", &id, "page id")?;
        admin_write(&state, ctx, p, props, Mode::Put).await?;
        Ok(see_other("/admin?done=page"))
    })
    .await
}

pub async fn save_styles(
    State(state): Portal,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/admin",
        async move |ctx| {
            ctx.check_csrf(&state, &f)?;
            let mut props = Map::new();
            for name in ["siteTitle", "primaryColor", "accentColor", "logo", "footer"] {
                props.insert(name.into(), json!(field(&f, name)));
            }
            admin_write(
                &state,
                ctx,
                item_path("styles", "default"),
                props,
                Mode::Put,
            )
            .await?;
            Ok(see_other("/admin?done=styles"))
        },
    )
    .await
}

/// The multipart form's fields: text fields, and the file's bytes.
async fn read_upload(
    mut form: Multipart,
) -> Result<(HashMap<String, String>, Option<(String, Vec<u8>)>), PortalError> {
    let mut fields = HashMap::new();
    let mut file = None;
    let bad = |e: axum::extract::multipart::MultipartError| {
        PortalError::Invalid(format!("The upload could not be read: {}", e.body_text()))
    };
    while let Some(part) = form.next_field().await.map_err(bad)? {
        let name = part.name().unwrap_or_default().to_string();
        if name == "file" {
            let declared = part.content_type().unwrap_or_default().to_string();
            let bytes = part.bytes().await.map_err(bad)?;
            file = Some((declared, bytes.to_vec()));
        } else {
            fields.insert(name, part.text().await.map_err(bad)?);
        }
    }
    Ok((fields, file))
}

pub async fn upload_image(
    State(state): Portal,
    headers: HeaderMap,
    remote: Remote,
    form: Multipart,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/admin",
        async move |ctx| {
            let (f, file) = read_upload(form).await?;
            ctx.check_csrf(&state, &f)?;
            let (declared, bytes) =
                file.ok_or_else(|| PortalError::Invalid("Choose an image file to upload.".into()))?;
            let id = field(&f, "id").to_string();
            let p = checked("/contentTypes/blob/contentItems", &id, "image name")?;
            let mut props = Map::new();
            props.insert("contentType".into(), json!(declared));
            props.insert(
                "data".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
            admin_write(&state, ctx, p, props, Mode::Put).await?;
            Ok(see_other("/admin?done=image"))
        },
    )
    .await
}

/// A draft image, for the admin view.
pub async fn draft_image(
    State(state): Portal,
    Path(id): Path<String>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    let ctx = match Ctx::load(&state, &headers, remote.0, "/admin").await {
        Ok(c) => c,
        Err(e) => return image_response(Err(e)),
    };
    if let Err(e) = ctx.viewer.require_admin() {
        return image_response(Err(e));
    }
    image_response(state.read(move |r| Ok(Content::draft(r)?.image(&id))).await)
}

pub async fn publish(
    State(state): Portal,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/admin",
        async move |ctx| {
            ctx.check_csrf(&state, &f)?;
            let stamp = time::OffsetDateTime::now_utc();
            let id = format!("{}{:03}", stamp.unix_timestamp(), stamp.millisecond());
            let mut props = Map::new();
            props.insert("description".into(), json!(field(&f, "description")));
            props.insert("isCurrent".into(), json!(true));
            admin_write(
                &state,
                ctx,
                ResourcePath::top(Kind::PortalRevision, &id),
                props,
                Mode::Put,
            )
            .await?;
            Ok(see_other("/admin?done=published"))
        },
    )
    .await
}

pub async fn make_current(
    State(state): Portal,
    Path(id): Path<String>,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/admin",
        async move |ctx| {
            ctx.check_csrf(&state, &f)?;
            let mut props = Map::new();
            props.insert("isCurrent".into(), json!(true));
            admin_write(
                &state,
                ctx,
                checked("/portalRevisions", &id, "revision")?,
                props,
                Mode::Patch,
            )
            .await?;
            Ok(see_other("/admin?done=reverted"))
        },
    )
    .await
}

async fn set_state(
    state: Arc<PortalState>,
    headers: HeaderMap,
    remote: Remote,
    f: HashMap<String, String>,
    path: (&'static str, String),
    to: &'static str,
    done: &'static str,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/admin",
        async move |ctx| {
            ctx.check_csrf(&state, &f)?;
            let path = checked(path.0, &path.1, "id")?;
            let mut props = Map::new();
            props.insert("state".into(), json!(to));
            admin_write(&state, ctx, path, props, Mode::Patch).await?;
            Ok(see_other(&format!("/admin?done={done}")))
        },
    )
    .await
}

pub async fn approve_subscription(
    State(state): Portal,
    Path(id): Path<String>,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    set_state(
        state,
        headers,
        remote,
        f,
        ("/subscriptions", id),
        "active",
        "approved",
    )
    .await
}

pub async fn reject_subscription(
    State(state): Portal,
    Path(id): Path<String>,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    set_state(
        state,
        headers,
        remote,
        f,
        ("/subscriptions", id),
        "rejected",
        "rejected",
    )
    .await
}

pub async fn approve_user(
    State(state): Portal,
    Path(id): Path<String>,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    set_state(
        state,
        headers,
        remote,
        f,
        ("/users", id),
        "active",
        "approved",
    )
    .await
}
