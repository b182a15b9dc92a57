//! The management API's bodies that clients read, as types, and the calls that return them.
//! A field a client relies on that is missing is an error naming the field (serde's "missing
//! field `gatewayUrl`"), never a silent empty value.

use crate::transport::Client;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::PathBuf;

/// `<data-dir>/endpoints.json`: where a running instance listens, written by `serve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoints {
    pub management: String,
    pub gateway: String,
    /// The management API's certificate (PEM) when it is served over HTTPS, so that clients
    /// finding the instance through its data directory trust it.
    #[serde(
        rename = "managementCertificate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub management_certificate: Option<PathBuf>,
    /// A self-hosted gateway's metrics URL (`gatehouse gateway --metrics-listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// The developer portal's URL (`gatehouse serve --portal-listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    pub name: String,
    pub region: String,
    pub pid: u32,
}

/// `GET /`: the service resource.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Service {
    pub name: String,
    pub location: String,
    pub sku: ServiceSku,
    pub properties: ServiceProperties,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServiceSku {
    pub name: String,
    pub capacity: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceProperties {
    pub gateway_url: String,
    pub management_api_url: String,
    pub revision: u64,
    #[serde(default)]
    pub hostname_configurations: Vec<Value>,
    /// Present when the instance ships its journal to a continuous archive (`serve --archive`).
    #[serde(default)]
    pub continuous_archive: Option<Value>,
}

/// `GET|POST /drain`: the gateway's traffic counters and drain mode.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficReport {
    pub draining: bool,
    pub requests: u64,
    pub failed_requests: u64,
    /// When the last request came (milliseconds since the Unix epoch; 0: none yet).
    pub last_request_at: u64,
}

/// `POST /digest`: per resource type, a count and a SHA-256 of the contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    pub revision: u64,
    pub total: u64,
    pub kinds: std::collections::BTreeMap<String, KindDigest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindDigest {
    pub count: u64,
    pub hash: String,
}

/// A page of the journal (`GET /journal`, `POST /journal/listSecrets`): entries are passed on
/// as they are (a move replays them on the target).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalPage {
    pub value: Vec<Value>,
    #[serde(default)]
    pub next_link: Option<String>,
}

/// A list page's total (`count`), for "is there anything here?".
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct ListCount {
    count: u64,
}

/// Parses a body the client relies on, naming the call when a field is missing.
fn typed<T: serde::de::DeserializeOwned>(call: &str, body: Value) -> Result<T> {
    serde_json::from_value(body).with_context(|| format!("the answer to {call} is not as expected"))
}

impl Client {
    pub async fn service(&self) -> Result<Service> {
        typed("GET /", self.get("/").await?)
    }

    pub async fn traffic(&self) -> Result<TrafficReport> {
        typed("GET /drain", self.get("/drain").await?)
    }

    /// Turns the gateway's drain mode on or off.
    pub async fn drain(&self, on: bool) -> Result<TrafficReport> {
        let body = self
            .send(
                reqwest::Method::POST,
                "/drain",
                Some(&json!({"enabled": on})),
            )
            .await?;
        typed("POST /drain", body)
    }

    /// Counts and hashes per type, leaving out the resources at `exclude`.
    pub async fn digest(&self, exclude: &[String]) -> Result<Digest> {
        let body = self
            .send(
                reqwest::Method::POST,
                "/digest",
                Some(&json!({"exclude": exclude})),
            )
            .await?;
        typed("POST /digest", body)
    }

    /// How many resources of a top-level collection (`apis`, `products`, …) there are.
    pub async fn count(&self, collection: &str) -> Result<u64> {
        let path = format!("/{collection}?$top=1");
        let page: ListCount = typed(&format!("GET {path}"), self.get(&path).await?)?;
        Ok(page.count)
    }

    /// A page of the journal after `since`, with secrets and references (for replaying).
    pub async fn journal_with_secrets(
        &self,
        since: u64,
        skip: u64,
        top: u64,
    ) -> Result<JournalPage> {
        let path = format!("/journal/listSecrets?since={since}&$skip={skip}&$top={top}");
        let body = self.send(reqwest::Method::POST, &path, None).await?;
        typed(&format!("POST {path}"), body)
    }

    /// Replays journal entries from another instance in one transaction; the new revision.
    pub async fn apply_journal(&self, entries: &[Value]) -> Result<Value> {
        self.send(
            reqwest::Method::POST,
            "/journal/apply",
            Some(&json!({"value": entries})),
        )
        .await
    }

    /// Freezes writes (`seconds`), or hands the instance over to `moved_to` for good.
    pub async fn freeze(&self, body: &Value) -> Result<Value> {
        self.send(reqwest::Method::POST, "/freeze", Some(body))
            .await
    }

    pub async fn lift_freeze(&self) -> Result<Value> {
        self.send(reqwest::Method::DELETE, "/freeze", None).await
    }

    /// The target of a same-name move takes the source's name and host names.
    pub async fn adopt_identity(&self, name: &str, hostnames: &[Value]) -> Result<Value> {
        self.send(
            reqwest::Method::POST,
            "/adoptIdentity",
            Some(&json!({"name": name, "hostnameConfigurations": hostnames})),
        )
        .await
    }

    /// Deletes the instance, confirming with its name.
    pub async fn delete_service(&self, name: &str) -> Result<Value> {
        let path = format!("/?confirm={}", crate::transport::path_segment(name));
        self.send(reqwest::Method::DELETE, &path, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_field_is_named() {
        let e = typed::<Service>(
            "GET /",
            json!({"name": "x", "location": "l", "sku": {"name": "Developer", "capacity": 1},
                   "properties": {"managementApiUrl": "http://m", "revision": 3}}),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("gatewayUrl"), "{e:#}");
    }
}
