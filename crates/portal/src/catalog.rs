//! What a visitor may see of the instance's APIs and products, by APIM's rules: a product is
//! visible when it is published and one of its groups is the visitor's (guests, developers —
//! every signed-in user —, administrators, custom groups); an API is visible through a visible
//! product. Administrators see everything.
//!
//! Invariant: every page that shows an API or a product gets it through [`Catalog`], so no
//! page can show what the visitor is not allowed to see. Reads are a handful of bulk queries
//! whatever the number of APIs (a catalogue of 1,000 APIs renders in a few milliseconds).

use crate::error::PortalError;
use crate::viewer::Viewer;
use gatehouse_model::{Kind, StoredResource};
use gatehouse_store::ReadTx;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

fn text(props: &Map<String, Value>, name: &str) -> String {
    props
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn last_id(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_string()
}

/// The id two levels up of a link path (`/products/p/apis/a` → `p`).
fn owner_id(path: &str) -> String {
    path.split('/').nth(2).unwrap_or_default().to_string()
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiCard {
    pub id: String,
    pub name: String,
    pub description: String,
    pub path: String,
    pub tags: Vec<String>,
    /// http, soap, graphql or websocket.
    pub kind: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProductCard {
    pub id: String,
    pub name: String,
    pub description: String,
    pub terms: String,
    pub subscription_required: bool,
    pub approval_required: bool,
    pub subscriptions_limit: Option<i64>,
    pub published: bool,
    pub apis: Vec<ApiCard>,
}

/// The instance's products and APIs as one visitor may see them.
pub struct Catalog {
    pub products: Vec<ProductCard>,
    /// Visible APIs by id.
    pub apis: BTreeMap<String, ApiCard>,
}

fn api_card(api: &StoredResource, tags: &BTreeMap<String, Vec<String>>) -> ApiCard {
    let id = last_id(&api.path);
    let p = &api.properties;
    let kind = match text(p, "type").as_str() {
        "" => "http".to_string(),
        t => t.to_string(),
    };
    ApiCard {
        name: match text(p, "displayName") {
            n if n.is_empty() => id.clone(),
            n => n,
        },
        description: text(p, "description"),
        path: text(p, "path"),
        tags: tags.get(&id).cloned().unwrap_or_default(),
        kind,
        id,
    }
}

fn product_card(p: &StoredResource, apis: Vec<ApiCard>) -> ProductCard {
    let props = &p.properties;
    ProductCard {
        id: last_id(&p.path),
        name: text(props, "displayName"),
        description: text(props, "description"),
        terms: text(props, "terms"),
        subscription_required: props.get("subscriptionRequired") != Some(&Value::Bool(false)),
        approval_required: props.get("approvalRequired") == Some(&Value::Bool(true)),
        subscriptions_limit: props.get("subscriptionsLimit").and_then(Value::as_i64),
        published: text(props, "state") == "published",
        apis,
    }
}

/// Links of one kind grouped by their owner's id (`/products/p/apis/a` → p: [a]).
fn links(r: &ReadTx<'_>, kind: Kind) -> Result<BTreeMap<String, Vec<String>>, PortalError> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in r.all_of_kind(kind)? {
        out.entry(owner_id(&l.path))
            .or_default()
            .push(last_id(&l.path));
    }
    Ok(out)
}

impl Catalog {
    pub fn load(r: &ReadTx<'_>, viewer: &Viewer) -> Result<Catalog, PortalError> {
        let groups: BTreeSet<String> = viewer.groups().into_iter().collect();
        let admin = viewer.is_admin();
        let tags = links(r, Kind::ApiTag)?;
        let all_apis: BTreeMap<String, ApiCard> = r
            .children(Kind::Api, "")?
            .iter()
            .filter(|a| !a.path.contains(";rev="))
            .map(|a| (last_id(&a.path), api_card(a, &tags)))
            .collect();
        let product_groups = links(r, Kind::ProductGroup)?;
        let product_apis = links(r, Kind::ProductApi)?;
        let mut products = Vec::new();
        let mut apis = BTreeMap::new();
        for p in r.children(Kind::Product, "")? {
            let id = last_id(&p.path);
            let published = text(&p.properties, "state") == "published";
            let in_group = product_groups
                .get(&id)
                .is_some_and(|gs| gs.iter().any(|g| groups.contains(g)));
            if !(admin || (published && in_group)) {
                continue;
            }
            let cards: Vec<ApiCard> = product_apis
                .get(&id)
                .into_iter()
                .flatten()
                .filter_map(|a| all_apis.get(a).cloned())
                .collect();
            for c in &cards {
                apis.insert(c.id.clone(), c.clone());
            }
            products.push(product_card(&p, cards));
        }
        if admin {
            apis = all_apis;
        }
        Ok(Catalog { products, apis })
    }

    /// APIs matching a search (name, description or path, without case) and a tag.
    pub fn search(&self, query: &str, tag: &str) -> Vec<&ApiCard> {
        let q = query.trim().to_lowercase();
        self.apis
            .values()
            .filter(|a| tag.is_empty() || a.tags.iter().any(|t| t == tag))
            .filter(|a| {
                q.is_empty()
                    || a.name.to_lowercase().contains(&q)
                    || a.description.to_lowercase().contains(&q)
                    || a.path.to_lowercase().contains(&q)
            })
            .collect()
    }

    /// Every tag of a visible API, sorted.
    pub fn tags(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.apis.values().flat_map(|a| &a.tags).collect();
        set.into_iter().cloned().collect()
    }

    pub fn api(&self, id: &str) -> Result<&ApiCard, PortalError> {
        self.apis.get(id).ok_or(PortalError::NotFound)
    }

    pub fn product(&self, id: &str) -> Result<&ProductCard, PortalError> {
        self.products
            .iter()
            .find(|p| p.id == id)
            .ok_or(PortalError::NotFound)
    }

    /// The visible products an API is in.
    pub fn products_of(&self, api: &str) -> Vec<&ProductCard> {
        self.products
            .iter()
            .filter(|p| p.apis.iter().any(|a| a.id == api))
            .collect()
    }
}

/// Catalogs by the store revision and the groups they were made for: pages between two changes
/// share them instead of reading every API again. Only the current revision's are kept.
#[derive(Clone, Default)]
pub struct CatalogCache(Arc<Mutex<Cached>>);

/// The revision the catalogs are of, and the catalogs by (sorted groups, administrator).
type Cached = (u64, HashMap<(Vec<String>, bool), Arc<Catalog>>);

/// The most group sets remembered per revision (each visitor's groups are one).
const MAX_CACHED: usize = 256;

impl CatalogCache {
    pub fn get(&self, r: &ReadTx<'_>, viewer: &Viewer) -> Result<Arc<Catalog>, PortalError> {
        let mut groups = viewer.groups();
        groups.sort();
        let key = (groups, viewer.is_admin());
        {
            let cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if cache.0 == r.revision()
                && let Some(c) = cache.1.get(&key)
            {
                return Ok(c.clone());
            }
        }
        let catalog = Arc::new(Catalog::load(r, viewer)?);
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if cache.0 != r.revision() || cache.1.len() >= MAX_CACHED {
            *cache = (r.revision(), HashMap::new());
        }
        cache.1.insert(key, catalog.clone());
        Ok(catalog)
    }
}
