//! The gateway's in-memory copy of the configuration (only the kinds and properties it uses),
//! which the routing table and the policies are compiled from, and one change between two
//! revisions.

use gatehouse_model::{Kind, ServiceSettings, StoredResource};
use std::collections::HashMap;

/// The in-memory mirror of the configuration the table is compiled from, by kind.
#[derive(Debug, Clone, Default)]
pub struct ConfigMirror {
    pub revision: u64,
    pub service: Option<ServiceSettings>,
    /// A self-hosted gateway's id: only the APIs linked to it (`/gateways/{id}/apis/{api}`)
    /// are served. `None` is the built-in gateway, which serves every API.
    pub serves: Option<String>,
    by_kind: HashMap<Kind, HashMap<String, StoredResource>>,
}

impl ConfigMirror {
    pub fn new(
        revision: u64,
        service: Option<ServiceSettings>,
        resources: impl IntoIterator<Item = StoredResource>,
    ) -> Self {
        let mut m = ConfigMirror {
            revision,
            service,
            serves: None,
            by_kind: HashMap::new(),
        };
        for r in resources {
            m.insert(r);
        }
        m
    }

    pub fn of(&self, kind: Kind) -> impl Iterator<Item = &StoredResource> {
        self.by_kind.get(&kind).into_iter().flat_map(|m| m.values())
    }

    /// Whether this gateway serves the API (any revision of it).
    pub fn serves_api(&self, api: &StoredResource) -> bool {
        let Some(gateway) = &self.serves else {
            return true;
        };
        let base = api.name().split(";rev=").next().unwrap_or_default();
        self.get(
            Kind::GatewayApi,
            &format!("/gateways/{gateway}/apis/{base}"),
        )
        .is_some()
    }

    pub fn get(&self, kind: Kind, path: &str) -> Option<&StoredResource> {
        self.by_kind.get(&kind).and_then(|m| m.get(path))
    }

    /// Keeps the resource if the gateway uses its kind, with only the properties it reads.
    /// Subscriptions are not mirrored: the table's `subs` map holds what the gateway needs of
    /// them, so 100,000 subscriptions are held once, compactly.
    pub fn insert(&mut self, mut r: StoredResource) -> Option<StoredResource> {
        let keep: &[&str] = match r.kind {
            Kind::Api
            | Kind::ApiVersionSet
            | Kind::ProductApi
            | Kind::GroupUser
            | Kind::GatewayApi => &[],
            // A SOAP operation's request names the Body element that routes it.
            Kind::Operation if is_soap_operation(&r) => &["method", "urlTemplate", "request"],
            Kind::Operation => &["method", "urlTemplate"],
            Kind::Product => &["displayName", "subscriptionRequired", "state"],
            Kind::User => &["email", "firstName", "lastName"],
            k if k.is_policy() || k == Kind::PolicyFragment => &["value", "format"],
            Kind::NamedValue => &["displayName", "value"],
            Kind::Backend => &[
                "url",
                "credentials",
                "tls",
                "type",
                "pool",
                "circuitBreaker",
            ],
            // log-to-eventhub's sinks.
            Kind::Logger => &["credentials"],
            // Only a GraphQL API's schema: the gateway checks queries against it.
            Kind::ApiSchema if r.path.ends_with("/schemas/graphql") => &["document"],
            _ => return None,
        };
        if !keep.is_empty() {
            r.properties.retain(|k, _| keep.contains(&k.as_str()));
        }
        self.by_kind
            .entry(r.kind)
            .or_default()
            .insert(r.path.clone(), r)
    }

    pub fn remove(&mut self, kind: Kind, path: &str) -> Option<StoredResource> {
        self.by_kind.get_mut(&kind).and_then(|m| m.remove(path))
    }

    pub fn len(&self) -> usize {
        self.by_kind.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn is_soap_operation(r: &StoredResource) -> bool {
    r.properties
        .get("urlTemplate")
        .and_then(serde_json::Value::as_str)
        .is_some_and(|t| t.contains("soapAction="))
}

/// One resource that changed between two revisions.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: Kind,
    pub old: Option<StoredResource>,
    pub new: Option<StoredResource>,
}
