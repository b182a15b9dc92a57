//! The routing table: compiled from the configuration at one revision, immutable, swapped
//! atomically on every change. Requests in flight keep the `Arc` they started with.
//!
//! Invariants: a table is built from one consistent view (one revision); only active
//! subscriptions are in `keys`; API and operation matching follow APIM (longest path prefix,
//! version sets, `;rev=N`, most specific template).

use crate::mirror::{Change, ConfigMirror};
use crate::template::{Template, query_value};
use gatehouse_model::{Kind, StoredResource, id::split_revision};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionScheme {
    Segment,
    Query(String),
    Header(String),
}

#[derive(Debug)]
pub struct OperationRoute {
    pub id: Arc<str>,
    pub method: String,
    pub url_template: String,
    pub template: Template,
    /// A SOAP operation's action (`/?soapAction={action}`), matched against the request's.
    pub soap_action: Option<String>,
    /// A SOAP operation's Body element, for a request that names no action.
    pub soap_element: Option<String>,
}

/// What kind of API a route serves, and what that kind needs at request time.
#[derive(Debug, Clone, Default)]
pub enum ApiKind {
    #[default]
    Http,
    /// Operations chosen by the request's SOAP action.
    Soap,
    /// Queries checked against the schema (when the API has one) before they are forwarded.
    GraphQl(Option<Arc<crate::graphql::GraphQlSchema>>),
    WebSocket,
}

#[derive(Debug)]
pub struct ProductInfo {
    pub id: Arc<str>,
    pub name: String,
    pub subscription_required: bool,
    pub state: String,
}

#[derive(Debug)]
pub struct ApiRoute {
    /// The API id without `;rev=`.
    pub id: Arc<str>,
    pub name: String,
    pub revision: u32,
    pub is_current: bool,
    /// The configured path (without a version segment).
    pub path: String,
    pub service_url: Option<String>,
    /// The service URL split once, for building each request's backend URL without parsing it
    /// (`None` when it has a query or cannot be split: such URLs are parsed per request).
    pub backend_base: Option<BackendBase>,
    pub allow_http: bool,
    pub allow_https: bool,
    pub subscription_required: bool,
    /// The subscription key header (pre-parsed: looked up on every request).
    pub key_header: hyper::header::HeaderName,
    pub key_query: String,
    pub version: Option<String>,
    pub scheme: Option<VersionScheme>,
    pub operations: Vec<OperationRoute>,
    pub kind: ApiKind,
    /// Products containing this API, in id order.
    pub products: Vec<Arc<ProductInfo>>,
}

/// An API's service URL, split: every backend URL of the API starts with it.
#[derive(Debug, Clone)]
pub struct BackendBase {
    pub scheme: hyper::http::uri::Scheme,
    pub authority: hyper::http::uri::Authority,
    /// Its path, without a trailing `/` (empty for none).
    pub path: String,
}

impl BackendBase {
    fn split(url: &str) -> Option<BackendBase> {
        let parts = url.parse::<hyper::Uri>().ok()?.into_parts();
        let path_and_query = parts.path_and_query?;
        if path_and_query.query().is_some() || url.contains('#') {
            return None;
        }
        Some(BackendBase {
            scheme: parts.scheme?,
            authority: parts.authority?,
            path: path_and_query.path().trim_end_matches('/').to_string(),
        })
    }

    /// The backend URL for the path after the API's (`rest`) and the query to send.
    pub fn uri(&self, rest: &str, query: &str) -> Option<hyper::Uri> {
        let mut target = String::with_capacity(self.path.len() + rest.len() + query.len() + 2);
        target.push_str(&self.path);
        target.push_str(rest);
        if !target.starts_with('/') {
            target.insert(0, '/');
        }
        if !query.is_empty() {
            target.push('?');
            target.push_str(query);
        }
        let mut parts = hyper::http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(
            hyper::http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(target)).ok()?,
        );
        hyper::Uri::from_parts(parts).ok()
    }
}

impl ApiRoute {
    /// The first open product (no subscription required) containing the API.
    pub fn open_product(&self) -> Option<&Arc<ProductInfo>> {
        self.products.iter().find(|p| !p.subscription_required)
    }
}

#[derive(Debug)]
pub struct UserInfo {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub groups: Vec<String>,
}

#[derive(Debug)]
pub struct SubscriptionInfo {
    pub id: Arc<str>,
    pub name: String,
    /// `/`, `/apis`, `/apis/{id}` or `/products/{id}`.
    pub scope: String,
    pub owner: Option<Arc<UserInfo>>,
    /// `/users/{id}` of the owner, if any.
    pub owner_path: Option<String>,
    pub primary_key: String,
    pub secondary_key: String,
}

/// One subscription key's owner.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    pub subscription: Arc<SubscriptionInfo>,
}

/// The compiled routing table. `routes` is rebuilt only when an API-shaped resource changes;
/// `keys` is a persistent map updated per changed subscription, so a change costs O(change),
/// not O(configuration).
/// The persistent maps requests look things up in. Their keys come from the configuration only
/// (a request's path or key is looked up, never inserted), so a fast seeded hash is safe here
/// and SipHash was three hashes' worth of every request.
type ConfigMap<K, V> =
    imbl::GenericHashMap<K, V, foldhash::fast::RandomState, imbl::shared_ptr::DefaultSharedPtr>;

#[derive(Debug, Default)]
pub struct RoutingTable {
    pub revision: u64,
    pub service_name: String,
    pub region: String,
    /// The service's `DeveloperPortal` host names, lower-cased: requests to them go to the
    /// portal (empty — the usual case — costs a request one length check).
    pub portal_hosts: Vec<String>,
    routes: Arc<Routes>,
    keys: ConfigMap<String, KeyEntry>,
    /// A self-hosted gateway's table: `keys` holds digests of the keys (`model::keys`), and a
    /// presented key is digested before it is looked up.
    keys_are_digests: bool,
    /// Active subscriptions by id (their keys and owner), to update `keys` per change.
    subs: ConfigMap<Arc<str>, Arc<SubscriptionInfo>>,
    /// Every scope's policy document, compiled; rebuilt when a policy, fragment, named value
    /// or backend changes.
    pub policies: Arc<crate::policies::Policies>,
}

#[derive(Debug, Default, Clone)]
struct Routes {
    /// Lower-cased routing path (API path, plus `/{version}` for Segment versioning) → APIs.
    by_path: ConfigMap<String, Vec<Arc<ApiRoute>>>,
    /// API id → the routing paths its revisions are under (to replace one API cheaply).
    paths_of: ConfigMap<Arc<str>, Vec<String>>,
    api_count: usize,
    /// Routes of WebSocket APIs: while there are none, no request head is looked at for an
    /// upgrade (the check stays off the request path).
    websocket_routes: usize,
}

/// What compiling API routes needs besides the API itself.
struct RouteInputs<'a> {
    version_sets: HashMap<&'a str, VersionScheme>,
    /// API stored path → its operations.
    operations: HashMap<&'a str, Vec<&'a StoredResource>>,
    /// API id → products containing it.
    products_of: HashMap<&'a str, Vec<Arc<ProductInfo>>>,
    /// API path → its GraphQL schema's SDL.
    graphql: HashMap<&'a str, &'a str>,
}

impl<'a> RouteInputs<'a> {
    /// Inputs for the APIs in `only` (all APIs when `None`).
    fn gather(mirror: &'a ConfigMirror, only: Option<&std::collections::HashSet<String>>) -> Self {
        let wanted = |api_id: &str| only.is_none_or(|o| o.contains(api_id));
        let mut version_sets = HashMap::new();
        for vs in mirror.of(Kind::ApiVersionSet) {
            let scheme = match s(&vs.properties, "versioningScheme") {
                Some("Query") => VersionScheme::Query(
                    s(&vs.properties, "versionQueryName")
                        .unwrap_or("api-version")
                        .to_string(),
                ),
                Some("Header") => VersionScheme::Header(
                    s(&vs.properties, "versionHeaderName")
                        .unwrap_or("Api-Version")
                        .to_string(),
                ),
                _ => VersionScheme::Segment,
            };
            version_sets.insert(vs.path.as_str(), scheme);
        }
        let mut products: HashMap<&str, Arc<ProductInfo>> = HashMap::new();
        let mut products_of: HashMap<&str, Vec<Arc<ProductInfo>>> = HashMap::new();
        for link in mirror.of(Kind::ProductApi) {
            if !wanted(link.name()) {
                continue;
            }
            let product_path = parent_of(&link.path);
            let info = match products.get(product_path) {
                Some(i) => i.clone(),
                None => {
                    let Some(p) = mirror.get(Kind::Product, product_path) else {
                        continue;
                    };
                    let info = Arc::new(ProductInfo {
                        id: Arc::from(p.name()),
                        name: s(&p.properties, "displayName")
                            .unwrap_or_default()
                            .to_string(),
                        subscription_required: b(&p.properties, "subscriptionRequired", true),
                        state: s(&p.properties, "state")
                            .unwrap_or("notPublished")
                            .to_string(),
                    });
                    products.insert(product_path, info.clone());
                    info
                }
            };
            products_of.entry(link.name()).or_default().push(info);
        }
        for v in products_of.values_mut() {
            v.sort_by(|a, b| a.id.cmp(&b.id));
        }
        let mut operations: HashMap<&str, Vec<&StoredResource>> = HashMap::new();
        for op in mirror.of(Kind::Operation) {
            let api_path = parent_of(&op.path);
            let api_id = api_path.rsplit('/').next().unwrap_or_default();
            let base = api_id.split(";rev=").next().unwrap_or(api_id);
            if wanted(base) {
                operations.entry(api_path).or_default().push(op);
            }
        }
        let mut graphql = HashMap::new();
        for schema in mirror.of(Kind::ApiSchema) {
            let api_path = parent_of(&schema.path);
            if let Some(sdl) = schema
                .properties
                .get("document")
                .and_then(|d| d.get("value"))
                .and_then(Value::as_str)
            {
                graphql.insert(api_path, sdl);
            }
        }
        RouteInputs {
            version_sets,
            operations,
            products_of,
            graphql,
        }
    }
}

/// Kinds whose change means the route index must be rebuilt.
fn affects_routes(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Api
            | Kind::Operation
            | Kind::Product
            | Kind::ProductApi
            | Kind::ApiVersionSet
            | Kind::ApiSchema
            | Kind::GatewayApi
    )
}

fn s<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

fn b(m: &Map<String, Value>, k: &str, default: bool) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(default)
}

/// The parent path of a stored path (`/apis/a/operations/o` → `/apis/a`).
fn parent_of(path: &str) -> &str {
    let mut it = path.rmatch_indices('/');
    it.next();
    match it.next() {
        Some((i, _)) => &path[..i],
        None => "",
    }
}

impl Routes {
    fn compile(mirror: &ConfigMirror) -> Routes {
        let inputs = RouteInputs::gather(mirror, None);
        let mut routes = Routes::default();
        for api in mirror.of(Kind::Api).filter(|a| mirror.serves_api(a)) {
            routes.add(api, &inputs);
        }
        routes
    }

    /// Replaces the routes of the given API ids with what the mirror now says.
    fn update(&mut self, mirror: &ConfigMirror, ids: &std::collections::HashSet<String>) {
        for id in ids {
            if let Some(paths) = self.paths_of.remove(id.as_str()) {
                for p in paths {
                    if let Some(list) = self.by_path.get_mut(&p) {
                        list.retain(|a| {
                            let gone = &*a.id == id.as_str();
                            if gone && a.is_current {
                                self.api_count -= 1;
                            }
                            if gone && matches!(a.kind, ApiKind::WebSocket) {
                                self.websocket_routes -= 1;
                            }
                            !gone
                        });
                        if list.is_empty() {
                            self.by_path.remove(&p);
                        }
                    }
                }
            }
        }
        let inputs = RouteInputs::gather(mirror, Some(ids));
        for api in mirror.of(Kind::Api).filter(|a| mirror.serves_api(a)) {
            let base = api.name().split(";rev=").next().unwrap_or_default();
            if ids.contains(base) {
                self.add(api, &inputs);
            }
        }
    }

    fn add(&mut self, api: &StoredResource, inputs: &RouteInputs<'_>) {
        let p = &api.properties;
        let Ok((base, rev)) = split_revision(api.name()) else {
            return;
        };
        let protocols: Vec<&str> = p
            .get("protocols")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_else(|| vec!["https"]);
        let names = p.get("subscriptionKeyParameterNames");
        let scheme = s(p, "apiVersionSetId")
            .and_then(|id| inputs.version_sets.get(id))
            .cloned();
        let version = s(p, "apiVersion")
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        let path = s(p, "path")
            .unwrap_or_default()
            .trim_matches('/')
            .to_string();
        let mut operations: Vec<OperationRoute> = inputs
            .operations
            .get(api.path.as_str())
            .map(|ops| {
                ops.iter()
                    .map(|op| {
                        let template = s(&op.properties, "urlTemplate").unwrap_or("/").to_string();
                        OperationRoute {
                            id: Arc::from(op.name()),
                            method: s(&op.properties, "method")
                                .unwrap_or("GET")
                                .to_ascii_uppercase(),
                            template: Template::parse(&template),
                            soap_action: soap_action_of(&template),
                            soap_element: op
                                .properties
                                .get("request")
                                .and_then(|r| r.get("representations"))
                                .and_then(|r| r.get(0))
                                .and_then(|r| r.get("typeName"))
                                .and_then(Value::as_str)
                                .map(str::to_string),
                            url_template: template,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let kind = api_kind(p, inputs.graphql.get(api.path.as_str()).copied());
        implicit_operations(&kind, &mut operations);
        // Most specific first, so the first match wins.
        operations.sort_by(|a, b| {
            b.template
                .specificity()
                .cmp(&a.template.specificity())
                .then(a.id.cmp(&b.id))
        });
        let id: Arc<str> = Arc::from(base);
        let route = ApiRoute {
            id: id.clone(),
            name: s(p, "displayName").unwrap_or_default().to_string(),
            revision: rev.unwrap_or_else(|| {
                s(p, "apiRevision")
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(1)
            }),
            is_current: rev.is_none(),
            path: path.clone(),
            service_url: s(p, "serviceUrl")
                .filter(|u| !u.is_empty())
                .map(|u| u.trim_end_matches('/').to_string()),
            backend_base: s(p, "serviceUrl")
                .filter(|u| !u.is_empty())
                .and_then(|u| BackendBase::split(u.trim_end_matches('/'))),
            allow_http: protocols.contains(&"http") || protocols.contains(&"ws"),
            allow_https: protocols.contains(&"https") || protocols.contains(&"wss"),
            subscription_required: b(p, "subscriptionRequired", true),
            key_header: names
                .and_then(|n| n.get("header"))
                .and_then(Value::as_str)
                .and_then(|h| hyper::header::HeaderName::from_bytes(h.as_bytes()).ok())
                .unwrap_or_else(|| {
                    hyper::header::HeaderName::from_static("ocp-apim-subscription-key")
                }),
            key_query: names
                .and_then(|n| n.get("query"))
                .and_then(Value::as_str)
                .unwrap_or("subscription-key")
                .to_string(),
            operations,
            kind,
            products: inputs.products_of.get(base).cloned().unwrap_or_default(),
            version: version.clone(),
            scheme: scheme.clone(),
        };
        let key = match (&scheme, &version) {
            (Some(VersionScheme::Segment), Some(v)) if path.is_empty() => v.to_ascii_lowercase(),
            (Some(VersionScheme::Segment), Some(v)) => {
                format!("{}/{}", path.to_ascii_lowercase(), v.to_ascii_lowercase())
            }
            _ => path.to_ascii_lowercase(),
        };
        if route.is_current {
            self.api_count += 1;
        }
        if matches!(route.kind, ApiKind::WebSocket) {
            self.websocket_routes += 1;
        }
        let paths = self.paths_of.entry(id).or_default();
        if !paths.contains(&key) {
            paths.push(key.clone());
        }
        self.by_path.entry(key).or_default().push(Arc::new(route));
    }
}

/// `/?soapAction=urn:x` → `urn:x` (how a SOAP pass-through operation names its action).
fn soap_action_of(template: &str) -> Option<String> {
    let query = template.split_once('?')?.1;
    query
        .split('&')
        .find_map(|p| p.strip_prefix("soapAction="))
        .map(str::to_string)
}

fn api_kind(p: &Map<String, Value>, graphql_sdl: Option<&str>) -> ApiKind {
    match s(p, "type") {
        Some("soap") => ApiKind::Soap,
        Some("websocket") => ApiKind::WebSocket,
        Some("graphql") => ApiKind::GraphQl(graphql_sdl.and_then(|sdl| match crate::graphql::GraphQlSchema::parse(sdl) {
            Ok(schema) => Some(Arc::new(schema)),
            Err(e) => {
                tracing::error!(error = %e, "a GraphQL API's schema does not parse: its queries are forwarded unchecked");
                None
            }
        })),
        _ => ApiKind::Http,
    }
}

/// A pass-through GraphQL API answers at its root (POST and GET), a WebSocket API's handshake
/// is a GET of its root: when such an API has no operations of its own, these stand in.
fn implicit_operations(kind: &ApiKind, operations: &mut Vec<OperationRoute>) {
    if !operations.is_empty() {
        return;
    }
    let implicit: &[(&str, &str, &str)] = match kind {
        ApiKind::GraphQl(_) => &[("query", "POST", "/"), ("query-get", "GET", "/")],
        ApiKind::WebSocket => &[("onHandshake", "GET", "/*")],
        _ => &[],
    };
    for (id, method, template) in implicit {
        operations.push(OperationRoute {
            id: Arc::from(*id),
            method: (*method).to_string(),
            url_template: (*template).into(),
            template: Template::parse(template),
            soap_action: None,
            soap_element: None,
        });
    }
}

/// The API ids whose routes a change touches.
fn affected_apis(mirror: &ConfigMirror, changes: &[Change]) -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    let api_of_path = |path: &str| -> String {
        let first = path
            .trim_start_matches('/')
            .split('/')
            .nth(1)
            .unwrap_or_default();
        first.split(";rev=").next().unwrap_or_default().to_string()
    };
    for c in changes {
        for r in [&c.old, &c.new].into_iter().flatten() {
            match c.kind {
                Kind::Api | Kind::Operation | Kind::ApiSchema => {
                    ids.insert(api_of_path(&r.path));
                }
                Kind::ProductApi | Kind::GatewayApi => {
                    ids.insert(r.name().to_string());
                }
                Kind::Product => {
                    for link in mirror.of(Kind::ProductApi) {
                        if parent_of(&link.path) == r.path {
                            ids.insert(link.name().to_string());
                        }
                    }
                }
                Kind::ApiVersionSet => {
                    for api in mirror.of(Kind::Api) {
                        if s(&api.properties, "apiVersionSetId") == Some(r.path.as_str()) {
                            ids.insert(api_of_path(&api.path));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    ids
}

fn user_info(mirror: &ConfigMirror, user_path: &str) -> Option<Arc<UserInfo>> {
    let u = mirror.get(Kind::User, user_path)?;
    let id = u.name();
    let groups = mirror
        .of(Kind::GroupUser)
        .filter(|l| l.name() == id)
        .map(|l| {
            parent_of(&l.path)
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    Some(Arc::new(UserInfo {
        id: id.to_string(),
        email: s(&u.properties, "email").unwrap_or_default().to_string(),
        first_name: s(&u.properties, "firstName")
            .unwrap_or_default()
            .to_string(),
        last_name: s(&u.properties, "lastName").unwrap_or_default().to_string(),
        groups,
    }))
}

fn subscription_info(
    sub: &StoredResource,
    owner: Option<Arc<UserInfo>>,
) -> Option<Arc<SubscriptionInfo>> {
    let p = &sub.properties;
    if s(p, "state") != Some("active") {
        return None;
    }
    Some(Arc::new(SubscriptionInfo {
        id: Arc::from(sub.name()),
        name: s(p, "displayName").unwrap_or_default().to_string(),
        scope: s(p, "scope").unwrap_or("/").to_string(),
        owner,
        owner_path: s(p, "ownerId").map(str::to_string),
        primary_key: s(p, "primaryKey").unwrap_or_default().to_string(),
        secondary_key: s(p, "secondaryKey").unwrap_or_default().to_string(),
    }))
}

fn insert_keys(keys: &mut ConfigMap<String, KeyEntry>, info: Arc<SubscriptionInfo>) {
    for k in [&info.primary_key, &info.secondary_key] {
        if !k.is_empty() {
            keys.insert(
                k.clone(),
                KeyEntry {
                    subscription: info.clone(),
                },
            );
        }
    }
}

fn remove_keys_of(keys: &mut ConfigMap<String, KeyEntry>, info: &SubscriptionInfo) {
    for k in [&info.primary_key, &info.secondary_key] {
        if keys
            .get(k.as_str())
            .is_some_and(|e| e.subscription.id == info.id)
        {
            keys.remove(k.as_str());
        }
    }
}

/// The service's `DeveloperPortal` host names, lower-cased.
fn portal_hosts(mirror: &ConfigMirror) -> Vec<String> {
    mirror
        .service
        .iter()
        .flat_map(|s| &s.hostname_configurations)
        .filter(|h| h.kind.eq_ignore_ascii_case("DeveloperPortal"))
        .map(|h| h.host_name.to_ascii_lowercase())
        .collect()
}

/// The route of requests to the developer portal's host names: every method and path, no
/// subscription, no key looked for, forwarded to the portal as they came.
pub(crate) fn portal_route(url: &str) -> ApiRoute {
    ApiRoute {
        id: Arc::from(PORTAL_ROUTE_ID),
        name: "Developer portal".into(),
        revision: 1,
        is_current: true,
        path: String::new(),
        service_url: Some(url.trim_end_matches('/').to_string()),
        backend_base: BackendBase::split(url.trim_end_matches('/')),
        allow_http: true,
        allow_https: true,
        subscription_required: false,
        // No request carries this header: a visitor's request is never taken for a key.
        key_header: hyper::header::HeaderName::from_static("x-gatehouse-portal-no-key"),
        key_query: String::new(),
        version: None,
        scheme: None,
        operations: vec![OperationRoute {
            id: Arc::from("any"),
            method: "*".into(),
            url_template: "/*".into(),
            template: Template::parse("/*"),
            soap_action: None,
            soap_element: None,
        }],
        kind: ApiKind::Http,
        products: Vec::new(),
    }
}

/// The id the portal's route goes by (in metrics and the access log).
pub(crate) const PORTAL_ROUTE_ID: &str = "developer-portal";

fn service_names(mirror: &ConfigMirror) -> (String, String) {
    mirror
        .service
        .as_ref()
        .map(|s| (s.name.clone(), s.location.clone()))
        .unwrap_or_default()
}

impl RoutingTable {
    /// Compiles the whole table: routes from the mirror, keys from the subscriptions.
    pub fn compile<'s>(
        mirror: &ConfigMirror,
        subscriptions: impl IntoIterator<Item = &'s StoredResource>,
    ) -> RoutingTable {
        Self::compile_streaming(mirror, |feed| {
            for sub in subscriptions {
                feed(sub);
            }
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {})
    }

    /// Like `compile`, with subscriptions fed one by one (streamed from the store, never all
    /// in memory as resources).
    pub fn compile_streaming<E>(
        mirror: &ConfigMirror,
        subscriptions: impl FnOnce(&mut dyn FnMut(&StoredResource)) -> Result<(), E>,
    ) -> Result<RoutingTable, E> {
        let mut users: HashMap<&str, Arc<UserInfo>> = HashMap::new();
        let mut groups_of: HashMap<&str, Vec<String>> = HashMap::new();
        for link in mirror.of(Kind::GroupUser) {
            let group = parent_of(&link.path)
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            groups_of.entry(link.name()).or_default().push(group);
        }
        for u in mirror.of(Kind::User) {
            users.insert(
                u.path.as_str(),
                Arc::new(UserInfo {
                    id: u.name().to_string(),
                    email: s(&u.properties, "email").unwrap_or_default().to_string(),
                    first_name: s(&u.properties, "firstName")
                        .unwrap_or_default()
                        .to_string(),
                    last_name: s(&u.properties, "lastName").unwrap_or_default().to_string(),
                    groups: groups_of.remove(u.name()).unwrap_or_default(),
                }),
            );
        }
        let mut keys = ConfigMap::default();
        let mut subs = ConfigMap::default();
        subscriptions(&mut |sub: &StoredResource| {
            let owner = s(&sub.properties, "ownerId")
                .and_then(|o| users.get(o))
                .cloned();
            if let Some(info) = subscription_info(sub, owner) {
                subs.insert(info.id.clone(), info.clone());
                insert_keys(&mut keys, info);
            }
        })?;
        let (service_name, region) = service_names(mirror);
        Ok(RoutingTable {
            revision: mirror.revision,
            service_name,
            region,
            portal_hosts: portal_hosts(mirror),
            routes: Arc::new(Routes::compile(mirror)),
            keys,
            keys_are_digests: mirror.serves.is_some(),
            subs,
            policies: Arc::new(crate::policies::Policies::compile(mirror)),
        })
    }

    /// The next table after `changes` were applied to `mirror`: routes are rebuilt only for the
    /// APIs a change touches; keys are updated per changed subscription or user.
    pub fn next(&self, mirror: &ConfigMirror, changes: &[Change]) -> RoutingTable {
        let routes = if changes.iter().any(|c| affects_routes(c.kind)) {
            let mut r = (*self.routes).clone();
            r.update(mirror, &affected_apis(mirror, changes));
            Arc::new(r)
        } else {
            self.routes.clone()
        };
        let mut keys = self.keys.clone();
        let mut subs = self.subs.clone();
        let mut owners_changed: Vec<String> = Vec::new();
        for c in changes {
            match c.kind {
                Kind::Subscription => {
                    let Some(id) = c
                        .new
                        .as_ref()
                        .or(c.old.as_ref())
                        .map(|r| r.name().to_string())
                    else {
                        continue;
                    };
                    if let Some(old) = subs.remove(id.as_str()) {
                        remove_keys_of(&mut keys, &old);
                    }
                    if let Some(new) = &c.new {
                        let owner =
                            s(&new.properties, "ownerId").and_then(|o| user_info(mirror, o));
                        if let Some(info) = subscription_info(new, owner) {
                            subs.insert(info.id.clone(), info.clone());
                            insert_keys(&mut keys, info);
                        }
                    }
                }
                Kind::User => {
                    if let Some(r) = c.new.as_ref().or(c.old.as_ref()) {
                        owners_changed.push(r.path.clone());
                    }
                }
                Kind::GroupUser => {
                    if let Some(r) = c.new.as_ref().or(c.old.as_ref()) {
                        owners_changed.push(format!("/users/{}", r.name()));
                    }
                }
                _ => {}
            }
        }
        if !owners_changed.is_empty() {
            let affected: Vec<Arc<SubscriptionInfo>> = subs
                .values()
                .filter(|i| {
                    i.owner_path
                        .as_ref()
                        .is_some_and(|o| owners_changed.contains(o))
                })
                .cloned()
                .collect();
            for old in affected {
                let owner = old.owner_path.as_deref().and_then(|o| user_info(mirror, o));
                let info = Arc::new(SubscriptionInfo {
                    id: old.id.clone(),
                    name: old.name.clone(),
                    scope: old.scope.clone(),
                    owner,
                    owner_path: old.owner_path.clone(),
                    primary_key: old.primary_key.clone(),
                    secondary_key: old.secondary_key.clone(),
                });
                subs.insert(info.id.clone(), info.clone());
                insert_keys(&mut keys, info);
            }
        }
        let (service_name, region) = service_names(mirror);
        let policies = if changes
            .iter()
            .any(|c| crate::policies::affects_policies(c.kind))
        {
            Arc::new(self.policies.next(mirror, changes))
        } else {
            self.policies.clone()
        };
        RoutingTable {
            revision: mirror.revision,
            service_name,
            region,
            portal_hosts: portal_hosts(mirror),
            routes,
            keys,
            keys_are_digests: self.keys_are_digests,
            subs,
            policies,
        }
    }

    pub fn api_count(&self) -> usize {
        self.routes.api_count
    }

    /// Whether any API is a WebSocket API.
    pub fn has_websocket_apis(&self) -> bool {
        self.routes.websocket_routes > 0
    }

    pub fn key(&self, key: &str) -> Option<&KeyEntry> {
        if self.keys_are_digests {
            return self
                .keys
                .get(&gatehouse_model::keys::subscription_key_digest(key));
        }
        self.keys.get(key)
    }

    /// Finds the API for a request path: the longest matching path prefix, then the version
    /// (Query/Header schemes) and the revision (`;rev=N` on the last API path segment).
    /// Returns the API and the rest of the path (starting with `/`).
    pub fn find_api<'a>(
        &self,
        path: &'a str,
        query: Option<&str>,
        header: impl Fn(&str) -> Option<String>,
    ) -> Option<(Arc<ApiRoute>, &'a str)> {
        self.find_api_at(path, query, header)
            .map(|(api, start)| (api, rest_of(path, start)))
    }

    /// [`RoutingTable::find_api`], with where the rest of the path starts ([`rest_of`]):
    /// a position keeps the request's context free of a copy of the path.
    pub fn find_api_at(
        &self,
        path: &str,
        query: Option<&str>,
        header: impl Fn(&str) -> Option<String>,
    ) -> Option<(Arc<ApiRoute>, usize)> {
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        // Candidate prefix ends: each '/' boundary, longest first.
        let ends = std::iter::once(trimmed.len())
            .chain(trimmed.rmatch_indices('/').map(|(i, _)| i))
            .chain(std::iter::once(0));
        for end in ends {
            let prefix = &trimmed[..end];
            let rev_at = if prefix.contains(';') {
                prefix.rfind(";rev=")
            } else {
                None
            };
            let (prefix_key, rev) = match rev_at {
                Some(i) if !prefix[i..].contains('/') => {
                    (&prefix[..i], prefix[i + 5..].parse::<u32>().ok())
                }
                _ => (prefix, None),
            };
            // Paths are stored lower-case; most requests' already are.
            let found = if prefix_key.bytes().any(|b| b.is_ascii_uppercase()) {
                self.routes.by_path.get(&prefix_key.to_ascii_lowercase())
            } else {
                self.routes.by_path.get(prefix_key)
            };
            let Some(candidates) = found else {
                continue;
            };
            if let Some(api) = select(candidates, rev, query, &header) {
                return Some((api, path.len() - trimmed.len() + end));
            }
        }
        None
    }
}

/// The rest of a request path after its API's path, from where [`RoutingTable::find_api_at`]
/// found it to start: `/` when nothing is left.
pub(crate) fn rest_of(path: &str, start: usize) -> &str {
    match path.get(start..) {
        Some(rest) if !rest.is_empty() => rest,
        _ => "/",
    }
}

fn select(
    candidates: &[Arc<ApiRoute>],
    rev: Option<u32>,
    query: Option<&str>,
    header: &impl Fn(&str) -> Option<String>,
) -> Option<Arc<ApiRoute>> {
    if let [only] = candidates {
        let wanted = match rev {
            Some(r) => only.revision == r,
            None => only.is_current,
        };
        return wanted.then(|| only.clone());
    }
    // Pick the API (version) first.
    let mut ids: Vec<&str> = candidates.iter().map(|a| &*a.id).collect();
    ids.sort();
    ids.dedup();
    let chosen_id: &str = if ids.len() == 1 {
        ids[0]
    } else {
        let wanted = candidates.iter().find_map(|a| match &a.scheme {
            Some(VersionScheme::Query(name)) => query.and_then(|q| query_value(q, name)),
            Some(VersionScheme::Header(name)) => header(name),
            _ => None,
        });
        let by_version = |v: Option<&str>| {
            candidates
                .iter()
                .find(|a| {
                    a.is_current
                        && a.version.as_deref().map(str::to_ascii_lowercase)
                            == v.map(str::to_ascii_lowercase)
                })
                .map(|a| &*a.id)
        };
        match wanted {
            Some(v) => by_version(Some(&v))?,
            None => by_version(None)?,
        }
    };
    candidates
        .iter()
        .filter(|a| &*a.id == chosen_id)
        .find(|a| match rev {
            Some(r) => a.revision == r,
            None => a.is_current,
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_model::ResourcePath;
    use serde_json::json;

    /// Backend URLs built from the split service URL are those the string form parses to.
    #[test]
    fn backend_urls_from_the_split_service_url() {
        for (service, rest, query, expected) in [
            (
                "http://h:8080/v1",
                "/items/1",
                "a=1&b=2",
                "http://h:8080/v1/items/1?a=1&b=2",
            ),
            ("http://h:8080/v1", "", "", "http://h:8080/v1"),
            ("http://h:8080/v1", "/", "", "http://h:8080/v1/"),
            ("http://h", "", "", "http://h/"),
            (
                "https://h.example.com/a/b",
                "/c%20d",
                "x=%2F",
                "https://h.example.com/a/b/c%20d?x=%2F",
            ),
        ] {
            let base = BackendBase::split(service).unwrap();
            let uri = base.uri(rest, query).unwrap();
            assert_eq!(uri.to_string(), expected);
            let parsed: hyper::Uri = expected.parse().unwrap();
            assert_eq!(uri, parsed);
        }
        assert!(
            BackendBase::split("http://h/v1?fixed=1").is_none(),
            "a query: parsed per request"
        );
        assert!(BackendBase::split("not a url").is_none());
        let base = BackendBase::split("http://h/v1").unwrap();
        assert!(
            base.uri("/a b", "").is_none(),
            "an invalid target is refused"
        );
    }

    fn res(path: &str, props: Value) -> StoredResource {
        let p = ResourcePath::parse_stored(path).unwrap();
        StoredResource {
            path: path.into(),
            kind: p.kind,
            properties: props.as_object().unwrap().clone(),
            revision: 1,
        }
    }

    fn mirror(items: Vec<StoredResource>) -> ConfigMirror {
        ConfigMirror::new(1, None, items)
    }

    #[test]
    fn longest_prefix_versions_and_revisions() {
        let m = mirror(vec![
            res("/apis/a", json!({"path": "shop", "apiRevision": "1"})),
            res("/apis/a;rev=2", json!({"path": "shop", "apiRevision": "2"})),
            res("/apis/b", json!({"path": "shop/admin"})),
            res("/apis/root", json!({"path": ""})),
            res(
                "/apiVersionSets/vs",
                json!({"versioningScheme": "Query", "versionQueryName": "api-version"}),
            ),
            res(
                "/apis/v1",
                json!({"path": "things", "apiVersion": "v1", "apiVersionSetId": "/apiVersionSets/vs"}),
            ),
            res(
                "/apis/v2",
                json!({"path": "things", "apiVersion": "v2", "apiVersionSetId": "/apiVersionSets/vs"}),
            ),
            res(
                "/apiVersionSets/seg",
                json!({"versioningScheme": "Segment"}),
            ),
            res(
                "/apis/s1",
                json!({"path": "seg", "apiVersion": "v1", "apiVersionSetId": "/apiVersionSets/seg"}),
            ),
        ]);
        let t = RoutingTable::compile(&m, []);
        let none = |_: &str| None;
        let (api, rest) = t.find_api("/shop/items/1", None, none).unwrap();
        assert_eq!((&*api.id, api.revision, rest), ("a", 1, "/items/1"));
        for bare in ["/shop", "/shop/", "/Shop;rev=2"] {
            let (api, rest) = t.find_api(bare, None, none).unwrap();
            assert_eq!((&*api.id, rest), ("a", "/"), "{bare}");
        }
        let (api, rest) = t.find_api("/shop;rev=2/items", None, none).unwrap();
        assert_eq!((&*api.id, api.revision, rest), ("a", 2, "/items"));
        let (api, rest) = t.find_api("/Shop/Admin/x", None, none).unwrap();
        assert_eq!((&*api.id, rest), ("b", "/x"));
        let (api, _) = t.find_api("/elsewhere", None, none).unwrap();
        assert_eq!(&*api.id, "root");
        let (api, _) = t
            .find_api("/things/x", Some("api-version=v2"), none)
            .unwrap();
        assert_eq!(&*api.id, "v2");
        // No version given and no unversioned API in the set: fall back to the root API.
        let (api, _) = t.find_api("/things/x", None, none).unwrap();
        assert_eq!(&*api.id, "root");
        let (api, rest) = t.find_api("/seg/v1/z", None, none).unwrap();
        assert_eq!((&*api.id, rest), ("s1", "/z"));
    }

    #[test]
    fn incremental_key_updates_match_a_full_compile() {
        let mut m = mirror(vec![res(
            "/users/u",
            json!({"email": "u@x", "firstName": "U", "lastName": "X"}),
        )]);
        let subs = [
            res(
                "/subscriptions/a",
                json!({"scope": "/apis", "state": "active", "primaryKey": "ka1", "secondaryKey": "ka2", "ownerId": "/users/u"}),
            ),
            res(
                "/subscriptions/b",
                json!({"scope": "/apis", "state": "active", "primaryKey": "kb1", "secondaryKey": "kb2"}),
            ),
        ];
        let t0 = RoutingTable::compile(&m, &subs);
        assert_eq!(
            t0.key("ka1")
                .unwrap()
                .subscription
                .owner
                .as_ref()
                .unwrap()
                .email,
            "u@x"
        );
        // Regenerate a's primary key, suspend b, rename the user.
        let new_subs = [
            res(
                "/subscriptions/a",
                json!({"scope": "/apis", "state": "active", "primaryKey": "ka3", "secondaryKey": "ka2", "ownerId": "/users/u"}),
            ),
            res(
                "/subscriptions/b",
                json!({"scope": "/apis", "state": "suspended", "primaryKey": "kb1", "secondaryKey": "kb2"}),
            ),
        ];
        let user = res(
            "/users/u",
            json!({"email": "new@x", "firstName": "U", "lastName": "X"}),
        );
        let mut changes: Vec<Change> = new_subs
            .iter()
            .map(|n| Change {
                kind: n.kind,
                old: None,
                new: Some(n.clone()),
            })
            .collect();
        changes.push(Change {
            kind: Kind::User,
            old: m.insert(user.clone()),
            new: Some(user),
        });
        let t1 = t0.next(&m, &changes);
        let full = RoutingTable::compile(&m, &new_subs);
        for k in ["ka1", "ka2", "ka3", "kb1", "kb2"] {
            assert_eq!(
                t1.key(k).map(|e| e.subscription.id.to_string()),
                full.key(k).map(|e| e.subscription.id.to_string()),
                "{k}"
            );
        }
        assert!(t1.key("ka1").is_none() && t1.key("kb1").is_none());
        assert_eq!(
            t1.key("ka2")
                .unwrap()
                .subscription
                .owner
                .as_ref()
                .unwrap()
                .email,
            "new@x"
        );
        // The old table is untouched (requests in flight keep it).
        assert!(t0.key("kb1").is_some());
    }

    #[test]
    fn incremental_routes_match_a_full_compile() {
        let mut m = mirror(vec![
            res("/apis/a", json!({"path": "a", "protocols": ["http"]})),
            res(
                "/apis/a/operations/get",
                json!({"method": "GET", "urlTemplate": "/x"}),
            ),
            res("/apis/b", json!({"path": "b"})),
            res(
                "/products/p",
                json!({"displayName": "P", "subscriptionRequired": false}),
            ),
        ]);
        let t0 = RoutingTable::compile(&m, []);
        let apply = |m: &mut ConfigMirror,
                     new: Vec<StoredResource>,
                     gone: Vec<(Kind, &str)>|
         -> Vec<Change> {
            let mut changes: Vec<Change> = new
                .into_iter()
                .map(|n| Change {
                    kind: n.kind,
                    old: m.insert(n.clone()),
                    new: Some(n),
                })
                .collect();
            for (k, p) in gone {
                changes.push(Change {
                    kind: k,
                    old: m.remove(k, p),
                    new: None,
                });
            }
            changes
        };
        let c1 = apply(
            &mut m,
            vec![
                res("/apis/a", json!({"path": "moved", "protocols": ["http"]})),
                res(
                    "/apis/a/operations/post",
                    json!({"method": "POST", "urlTemplate": "/y"}),
                ),
                res("/products/p/apis/a", json!({})),
            ],
            vec![(Kind::Api, "/apis/b")],
        );
        let t1 = t0.next(&m, &c1);
        let full = RoutingTable::compile(&m, []);
        let none = |_: &str| None;
        for path in ["/a/x", "/moved/x", "/moved/y", "/b/z"] {
            let inc = t1.find_api(path, None, none).map(|(a, r)| {
                (
                    a.id.to_string(),
                    r.to_string(),
                    a.operations.len(),
                    a.products.len(),
                )
            });
            let all = full.find_api(path, None, none).map(|(a, r)| {
                (
                    a.id.to_string(),
                    r.to_string(),
                    a.operations.len(),
                    a.products.len(),
                )
            });
            assert_eq!(inc, all, "{path}");
        }
        assert!(
            t1.find_api("/moved/x", None, none)
                .unwrap()
                .0
                .open_product()
                .is_some()
        );
        assert!(t1.find_api("/b/z", None, none).is_none());
        assert_eq!(t1.api_count(), 1);
        // Changing the product changes the routes of the APIs in it.
        let c2 = apply(
            &mut m,
            vec![res(
                "/products/p",
                json!({"displayName": "P", "subscriptionRequired": true}),
            )],
            vec![],
        );
        let t2 = t1.next(&m, &c2);
        assert!(
            t2.find_api("/moved/x", None, none)
                .unwrap()
                .0
                .open_product()
                .is_none()
        );
        assert!(
            t1.find_api("/moved/x", None, none)
                .unwrap()
                .0
                .open_product()
                .is_some(),
            "old table untouched"
        );
    }
}
