//! A user's subscriptions: subscribe to a product (waiting as `submitted` where the product
//! requires approval; at most `subscriptionsLimit`), list, keys, regenerate, rename, cancel,
//! and usage over the last 90 days from the instance's reports.
//!
//! Invariant: every subscription page and action loads the subscription through [`own`], which
//! answers "not found" for any subscription the user does not own — another user's
//! subscriptions are never shown, named or changed.

use crate::error::PortalError;
use crate::handler::{Fields, field};
use crate::handler::{Portal, Remote, page};
use crate::view::see_other;
use crate::viewer::User;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use gatehouse_management::rules::{self, Mode, WriteOptions};
use gatehouse_model::{Kind, ResourcePath, StoredResource};
use gatehouse_store::{ReadTx, WriteTx};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// States in which a subscription counts toward the product's limit.
const HELD: &[&str] = &["active", "submitted", "suspended"];

fn text(p: &Map<String, Value>, name: &str) -> String {
    p.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn id_of(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_string()
}

/// The user's subscriptions (through the references to the user, checked by `ownerId`).
pub fn of_user(r: &ReadTx<'_>, user: &User) -> Result<Vec<StoredResource>, PortalError> {
    let owner = user.path();
    let mut out = Vec::new();
    for referrer in r.referrers(&owner)? {
        if referrer.starts_with("/subscriptions/")
            && let Some(s) = r.get(&referrer)?
            && text(&s.properties, "ownerId") == owner
        {
            out.push(s);
        }
    }
    Ok(out)
}

/// How many subscriptions to the product the user holds.
pub fn held(r: &ReadTx<'_>, user: &User, product: &str) -> Result<usize, PortalError> {
    let scope = format!("/products/{product}");
    Ok(of_user(r, user)?
        .iter()
        .filter(|s| {
            text(&s.properties, "scope") == scope
                && HELD.contains(&text(&s.properties, "state").as_str())
        })
        .count())
}

/// The subscription, if this user owns it.
fn own(r: &ReadTx<'_>, user: &User, id: &str) -> Result<StoredResource, PortalError> {
    let s = r
        .get(&format!("/subscriptions/{id}"))?
        .ok_or(PortalError::NotFound)?;
    if s.kind != Kind::Subscription || text(&s.properties, "ownerId") != user.path() {
        return Err(PortalError::NotFound);
    }
    Ok(s)
}

fn own_in_write(tx: &WriteTx<'_>, user: &User, id: &str) -> Result<ResourcePath, PortalError> {
    let path = format!("/subscriptions/{id}");
    let s = tx.get(&path)?.ok_or(PortalError::NotFound)?;
    if s.kind != Kind::Subscription || text(&s.properties, "ownerId") != user.path() {
        return Err(PortalError::NotFound);
    }
    Ok(ResourcePath::top(Kind::Subscription, id))
}

#[derive(Serialize)]
pub struct SubscriptionView {
    pub id: String,
    pub name: String,
    pub product: String,
    pub product_id: String,
    pub state: String,
    pub created: String,
    pub primary_key: String,
    pub secondary_key: String,
}

pub fn view(r: &ReadTx<'_>, s: &StoredResource) -> Result<SubscriptionView, PortalError> {
    let p = &s.properties;
    let scope = text(p, "scope");
    let product = match r.get(&scope)? {
        Some(res) => text(&res.properties, "displayName"),
        None => scope.clone(),
    };
    Ok(SubscriptionView {
        id: id_of(&s.path),
        name: text(p, "displayName"),
        product,
        product_id: scope
            .strip_prefix("/products/")
            .unwrap_or_default()
            .to_string(),
        state: text(p, "state"),
        created: text(p, "createdDate").chars().take(10).collect(),
        primary_key: text(p, "primaryKey"),
        secondary_key: text(p, "secondaryKey"),
    })
}

fn done_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "created" => "Your subscription was created.",
        "submitted" => "Your subscription request was sent; an administrator approves it.",
        "regenerated" => "The key was regenerated; the old one no longer works.",
        "renamed" => "The subscription was renamed.",
        "cancelled" => "The subscription was cancelled.",
        _ => return None,
    })
}

pub async fn subscribe(
    State(state): Portal,
    Path(product): Path<String>,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    let path = format!("/products/{product}");
    page(&state.clone(), &headers, remote, &path, async move |ctx| {
        ctx.check_csrf(&state, &f)?;
        let user = ctx.viewer.require_user()?.clone();
        let viewer = ctx.viewer.clone();
        let cat = state.catalogs.clone();
        let pid = product.clone();
        let card = state
            .read(move |r| Ok(cat.get(r, &viewer)?.product(&pid)?.clone()))
            .await?;
        if !card.subscription_required {
            return Err(PortalError::Invalid(
                "This product is open: its APIs need no key.".into(),
            ));
        }
        if !card.terms.is_empty() && field(&f, "terms") != "yes" {
            return Err(PortalError::Invalid(
                "Agree to the product's terms of use to subscribe.".into(),
            ));
        }
        let name = field(&f, "name").trim().to_string();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(PortalError::Invalid(
                "The subscription's name must have 1 to 100 characters.".into(),
            ));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let sid = id.clone();
        state
            .write(format!("portal:{}", user.id), move |tx| {
                let scope = format!("/products/{}", card.id);
                let held = tx
                    .all_of_kind(Kind::Subscription)?
                    .iter()
                    .filter(|s| {
                        text(&s.properties, "ownerId") == user.path()
                            && text(&s.properties, "scope") == scope
                            && HELD.contains(&text(&s.properties, "state").as_str())
                    })
                    .count();
                if let Some(limit) = card.subscriptions_limit
                    && held as i64 >= limit
                {
                    return Err(PortalError::Invalid(format!(
                        "You already hold {held} subscription(s) to {}, the most it allows.",
                        card.name
                    )));
                }
                let mut props = Map::new();
                props.insert("scope".into(), json!(scope));
                props.insert("ownerId".into(), json!(user.path()));
                props.insert("displayName".into(), json!(name));
                props.insert(
                    "state".into(),
                    json!(if card.approval_required {
                        "submitted"
                    } else {
                        "active"
                    }),
                );
                let path = ResourcePath::top(Kind::Subscription, &sid);
                rules::put_resource(tx, &path, props, Mode::Put, &WriteOptions::default())?;
                Ok(card.approval_required)
            })
            .await
            .map(|waits| {
                see_other(&format!(
                    "/subscriptions/{id}?done={}",
                    if waits { "submitted" } else { "created" }
                ))
            })
    })
    .await
}

pub async fn list(
    State(state): Portal,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    page(
        &state.clone(),
        &headers,
        remote,
        "/subscriptions",
        async move |ctx| {
            let user = ctx.viewer.require_user()?.clone();
            let subs = state
                .read(move |r| {
                    of_user(r, &user)?
                        .iter()
                        .map(|s| view(r, s))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await?;
            ctx.render(
                &state,
                StatusCode::OK,
                "subscriptions.html",
                json!({"subscriptions": subs, "done": done_text(field(&q, "done"))}),
            )
        },
    )
    .await
}

#[derive(Serialize, Default)]
struct Day {
    day: String,
    calls: u64,
    success: u64,
    blocked: u64,
    failed: u64,
    bandwidth: u64,
}

/// Calls, errors and bytes per day over the last 90 days.
fn usage(r: &ReadTx<'_>, id: &str) -> Result<Value, PortalError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let rows = r.usage(now - 90 * 86_400, now + 900)?;
    let mut days: BTreeMap<i64, Day> = BTreeMap::new();
    for row in rows.iter().filter(|row| row.subscription == id) {
        let day_start = row.bucket - row.bucket.rem_euclid(86_400);
        let d = days.entry(day_start).or_default();
        d.success += row.success;
        d.blocked += row.blocked;
        d.failed += row.failed;
        d.calls += row.success + row.blocked + row.failed + row.other;
        d.bandwidth += row.bandwidth;
    }
    let mut list: Vec<Day> = Vec::new();
    for (start, mut d) in days.into_iter().rev() {
        d.day = time::OffsetDateTime::from_unix_timestamp(start)
            .map(|t| t.date().to_string())
            .unwrap_or_default();
        list.push(d);
    }
    let calls: u64 = list.iter().map(|d| d.calls).sum();
    let errors: u64 = list.iter().map(|d| d.failed + d.blocked).sum();
    let bandwidth: u64 = list.iter().map(|d| d.bandwidth).sum();
    Ok(json!({"days": list, "calls": calls, "errors": errors, "bandwidth": bandwidth}))
}

pub async fn show(
    State(state): Portal,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    remote: Remote,
) -> Response {
    let path = format!("/subscriptions/{id}");
    page(&state.clone(), &headers, remote, &path, async move |ctx| {
        let user = ctx.viewer.require_user()?.clone();
        let (sub, usage) = state
            .read(move |r| {
                let s = own(r, &user, &id)?;
                Ok((view(r, &s)?, usage(r, &id)?))
            })
            .await?;
        ctx.render(
            &state,
            StatusCode::OK,
            "subscription.html",
            json!({"sub": sub, "usage": usage, "done": done_text(field(&q, "done"))}),
        )
    })
    .await
}

/// Reads a form into the change it asks for and the confirmation to show.
type ChangeOf = fn(&HashMap<String, String>) -> Result<(Change, &'static str), PortalError>;

/// What a subscription action changes.
enum Change {
    Regenerate(&'static str),
    Rename(String),
    Cancel,
}

async fn change(
    state: Portal,
    id: String,
    headers: HeaderMap,
    remote: Remote,
    f: HashMap<String, String>,
    what: ChangeOf,
) -> Response {
    let State(state) = state;
    let path = format!("/subscriptions/{id}");
    page(
        &state.clone(),
        &headers,
        remote,
        &path.clone(),
        async move |ctx| {
            ctx.check_csrf(&state, &f)?;
            let user = ctx.viewer.require_user()?.clone();
            let (change, done) = what(&f)?;
            let sid = id.clone();
            state
                .write(format!("portal:{}", user.id), move |tx| {
                    let p = own_in_write(tx, &user, &sid)?;
                    let mut props = Map::new();
                    match change {
                        Change::Regenerate(field) => {
                            props.insert(field.into(), json!(rules::generate_key()));
                        }
                        Change::Rename(name) => {
                            props.insert("displayName".into(), json!(name));
                        }
                        Change::Cancel => {
                            props.insert("state".into(), json!("cancelled"));
                        }
                    }
                    rules::put_resource(tx, &p, props, Mode::Patch, &WriteOptions::default())?;
                    Ok(())
                })
                .await?;
            Ok(see_other(&format!("/subscriptions/{id}?done={done}")))
        },
    )
    .await
}

pub async fn regenerate(
    state: Portal,
    Path(id): Path<String>,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    change(state, id, headers, remote, f, |f| match field(f, "key") {
        "primary" => Ok((Change::Regenerate("primaryKey"), "regenerated")),
        "secondary" => Ok((Change::Regenerate("secondaryKey"), "regenerated")),
        _ => Err(PortalError::Invalid(
            "Say which key to regenerate: primary or secondary.".into(),
        )),
    })
    .await
}

pub async fn rename(
    state: Portal,
    Path(id): Path<String>,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    change(state, id, headers, remote, f, |f| {
        let name = field(f, "name").trim().to_string();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(PortalError::Invalid(
                "The subscription's name must have 1 to 100 characters.".into(),
            ));
        }
        Ok((Change::Rename(name), "renamed"))
    })
    .await
}

pub async fn cancel(
    state: Portal,
    Path(id): Path<String>,
    headers: HeaderMap,
    remote: Remote,
    Form(f): Fields,
) -> Response {
    change(state, id, headers, remote, f, |_| {
        Ok((Change::Cancel, "cancelled"))
    })
    .await
}
