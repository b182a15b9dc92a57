//! The site's own content — pages, styles, images — as the portal serves it: the current
//! portal revision's copy once something was published, the content items themselves before.
//!
//! Invariant: visitors only ever see published content (or, before the first publish, the
//! items as they are); an administrator's draft is shown in the admin view only.

use crate::error::PortalError;
use crate::markdown;
use gatehouse_management::portal_content::{content_key, image_bytes};
use gatehouse_model::{Kind, ResourcePath};
use gatehouse_store::ReadTx;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Content items by `type/item`.
#[derive(Debug, Default)]
pub struct Content {
    pub items: BTreeMap<String, Map<String, Value>>,
    /// The published revision shown, if any.
    pub revision: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NavLink {
    pub title: String,
    pub href: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Site {
    pub title: String,
    pub primary: String,
    pub accent: String,
    pub logo: Option<String>,
    pub footer: String,
    pub nav: Vec<NavLink>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PageView {
    pub id: String,
    pub title: String,
    pub permalink: String,
    pub html: String,
}

fn text(props: &Map<String, Value>, name: &str) -> String {
    props
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl Content {
    /// The content items as they are now (the draft).
    pub fn draft(r: &ReadTx<'_>) -> Result<Content, PortalError> {
        let mut items = BTreeMap::new();
        for item in r.all_of_kind(Kind::ContentItem)? {
            let p = ResourcePath::parse_stored(&item.path)?;
            items.insert(content_key(&p.parts[0].1, p.id()), item.properties);
        }
        Ok(Content {
            items,
            revision: None,
        })
    }

    /// What visitors see: the current revision's copy, else the draft.
    pub fn published(r: &ReadTx<'_>) -> Result<Content, PortalError> {
        for rev in r.all_of_kind(Kind::PortalRevision)? {
            if rev.properties.get("isCurrent") == Some(&Value::Bool(true)) {
                let items = rev
                    .properties
                    .get("content")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_object()?.clone())))
                    .collect();
                return Ok(Content {
                    items,
                    revision: Some(rev.path.rsplit('/').next().unwrap_or_default().into()),
                });
            }
        }
        Content::draft(r)
    }

    fn of_type<'a>(
        &'a self,
        type_id: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Map<String, Value>)> {
        self.items.iter().filter_map(move |(k, v)| {
            let (t, id) = k.split_once('/')?;
            (t == type_id).then_some((id, v))
        })
    }

    pub fn site(&self) -> Site {
        let styles = self
            .items
            .get("styles/default")
            .cloned()
            .unwrap_or_default();
        let or = |v: String, d: &str| if v.is_empty() { d.to_string() } else { v };
        let mut nav: Vec<(i64, NavLink)> = self
            .of_type("page")
            .filter_map(|(_, p)| {
                let order = p.get("navOrder")?.as_i64()?;
                Some((
                    order,
                    NavLink {
                        title: text(p, "title"),
                        href: text(p, "permalink"),
                    },
                ))
            })
            .collect();
        nav.sort_by_key(|(o, _)| *o);
        let logo = text(&styles, "logo");
        Site {
            title: or(text(&styles, "siteTitle"), "Developer portal"),
            primary: or(text(&styles, "primaryColor"), "#0b5cad"),
            accent: or(text(&styles, "accentColor"), "#e8f0fb"),
            logo: (!logo.is_empty() && self.items.contains_key(&format!("blob/{logo}")))
                .then(|| format!("/media/{logo}")),
            footer: text(&styles, "footer"),
            nav: nav.into_iter().map(|(_, l)| l).collect(),
        }
    }

    /// The page at a permalink, its body as sanitised HTML.
    pub fn page(&self, permalink: &str) -> Option<PageView> {
        self.of_type("page")
            .find(|(_, p)| text(p, "permalink") == permalink)
            .map(|(id, p)| PageView {
                id: id.to_string(),
                title: text(p, "title"),
                permalink: text(p, "permalink"),
                html: markdown::to_safe_html(&text(p, "body"), &text(p, "format")),
            })
    }

    /// Every page, for the admin view.
    pub fn pages(&self) -> Vec<(String, Map<String, Value>)> {
        self.of_type("page")
            .map(|(id, p)| (id.to_string(), p.clone()))
            .collect()
    }

    /// An image's media type and bytes.
    pub fn image(&self, id: &str) -> Option<(String, Vec<u8>)> {
        let item = self.items.get(&format!("blob/{id}"))?;
        image_bytes(item)
            .ok()
            .map(|(t, bytes)| (t.to_string(), bytes))
    }

    pub fn image_ids(&self) -> Vec<String> {
        self.of_type("blob").map(|(id, _)| id.to_string()).collect()
    }
}

/// The published content, read once per store revision.
#[derive(Default)]
pub struct ContentCache(Mutex<Option<(u64, Arc<Content>)>>);

impl ContentCache {
    pub fn get(&self, r: &ReadTx<'_>) -> Result<Arc<Content>, PortalError> {
        let revision = r.revision();
        if let Some((rev, c)) = &*self.0.lock().unwrap_or_else(|e| e.into_inner())
            && *rev == revision
        {
            return Ok(c.clone());
        }
        let content = Arc::new(Content::published(r)?);
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((revision, content.clone()));
        Ok(content)
    }
}
