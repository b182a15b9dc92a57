//! The whole configuration of an instance at one revision.
//!
//! Invariant: a `Snapshot` is immutable and self-consistent — every resource in it was read in
//! one store transaction at `revision`. Secret fields are in plaintext here (it lives only in
//! memory); whoever persists or prints it must seal or drop them (see `props::secret_pointers`).

use crate::kind::Kind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The pricing tiers an instance can run as.
pub const SKUS: &[&str] = &["Developer", "Basic", "Standard", "Premium"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sku {
    pub name: String,
    pub capacity: u32,
}

/// The service's own settings: what `GET /` shows besides the computed URLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSettings {
    pub name: String,
    pub location: String,
    pub sku: Sku,
    pub publisher_email: String,
    pub publisher_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_sender_email: Option<String>,
    pub created_at_utc: String,
    /// The host names the instance answers to (APIM's `hostnameConfigurations`). A restore
    /// leaves the target's own, as APIM does; a move's overlay sets them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostname_configurations: Vec<HostnameConfiguration>,
}

/// One host name of the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostnameConfiguration {
    /// `Proxy` (the gateway), `Management`, `Portal`, `DeveloperPortal`, `Scm`.
    #[serde(rename = "type")]
    pub kind: String,
    pub host_name: String,
    /// `/certificates/{id}` holding the TLS certificate for this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_id: Option<String>,
    #[serde(default)]
    pub default_ssl_binding: bool,
}

/// The host name types APIM knows.
pub const HOSTNAME_TYPES: &[&str] = &["Proxy", "Management", "Portal", "DeveloperPortal", "Scm"];

/// One resource as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    /// Canonical path relative to the service, e.g. `/apis/echo/operations/get`.
    pub path: String,
    pub kind: Kind,
    pub properties: Map<String, Value>,
    /// The revision at which this resource was last written (its ETag).
    pub revision: u64,
}

impl StoredResource {
    /// The resource's own id (last path segment).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub revision: u64,
    pub service: ServiceSettings,
    pub resources: Vec<StoredResource>,
}

impl Snapshot {
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &StoredResource> {
        self.resources.iter().filter(move |r| r.kind == kind)
    }
}
