//! The region overlay: what must differ on the target (backend URLs, API service URLs, named
//! values, host names and their certificates), read from YAML or JSON.
//!
//! Invariant: applying an overlay is idempotent (each item is a PATCH or PUT of fixed values),
//! so a resumed move applies it again safely, and again after every catch-up round.

use anyhow::{Context, Result, bail};
use base64::Engine;
use gatehouse_client::{Client, path_segment};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Overlay {
    /// Backend id → its URL in the target region.
    #[serde(default)]
    pub backends: BTreeMap<String, UrlSetting>,
    /// API id → its `serviceUrl` in the target region.
    #[serde(default)]
    pub apis: BTreeMap<String, ServiceUrlSetting>,
    /// Named value id → its value in the target region.
    #[serde(default)]
    pub named_values: BTreeMap<String, ValueSetting>,
    /// Certificates to upload to the target (for its host names), by id.
    #[serde(default)]
    pub certificates: BTreeMap<String, CertificateSetting>,
    /// Host names the target answers to (custom domains), with their certificates.
    #[serde(default)]
    pub hostnames: Vec<HostnameSetting>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UrlSetting {
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceUrlSetting {
    pub service_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValueSetting {
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateSetting {
    /// A PFX (PKCS#12) or PEM file, relative to the overlay file.
    pub file: String,
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostnameSetting {
    #[serde(rename = "type", default = "proxy")]
    pub kind: String,
    pub host_name: String,
    /// A certificate id (from `certificates` here or already in the archive).
    #[serde(default)]
    pub certificate: Option<String>,
}

fn proxy() -> String {
    "Proxy".into()
}

/// One change the overlay makes, for the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub resource: String,
    pub setting: String,
}

impl Overlay {
    /// Reads an overlay file (YAML, of which JSON is a subset); certificate files are read
    /// relative to it and kept inline, so a resumed move does not depend on the working folder.
    pub fn read(path: &Path) -> Result<Overlay> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the overlay {}", path.display()))?;
        let mut o: Overlay = serde_norway::from_str(&text)
            .with_context(|| format!("the overlay {} is not valid", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for (id, c) in o.certificates.iter_mut() {
            let file = base.join(&c.file);
            let bytes = std::fs::read(&file).with_context(|| {
                format!("cannot read the certificate '{id}' file {}", file.display())
            })?;
            c.file = format!(
                "base64:{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            );
        }
        o.check()?;
        Ok(o)
    }

    fn check(&self) -> Result<()> {
        for h in &self.hostnames {
            if let Some(c) = &h.certificate
                && c.contains('/')
            {
                bail!(
                    "host name {}: 'certificate' is a certificate id, not a path ('{c}')",
                    h.host_name
                );
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self == &Overlay::default()
    }

    /// The resources the overlay changes on purpose: their contents differ between source and
    /// target, so verification compares them against the overlay instead.
    pub fn paths(&self) -> Vec<String> {
        let mut p: Vec<String> = Vec::new();
        p.extend(self.backends.keys().map(|id| format!("/backends/{id}")));
        p.extend(self.apis.keys().map(|id| format!("/apis/{id}")));
        p.extend(
            self.named_values
                .keys()
                .map(|id| format!("/namedValues/{id}")),
        );
        p.extend(
            self.certificates
                .keys()
                .map(|id| format!("/certificates/{id}")),
        );
        p
    }

    /// Checks that what the overlay names exists on the source (a typo would otherwise create
    /// nothing and go unnoticed).
    pub async fn check_against(&self, source: &Client) -> Result<()> {
        for path in self.paths() {
            if path.starts_with("/certificates/") {
                continue;
            }
            source
                .get(&path)
                .await
                .with_context(|| format!("the overlay names {path}, which the source lacks"))?;
        }
        Ok(())
    }

    /// Applies the overlay to the target. `hostnames` are the target's own host names, which
    /// the overlay's are added to.
    pub async fn apply(&self, target: &Client, own_hostnames: &[Value]) -> Result<Vec<Applied>> {
        let mut done = Vec::new();
        let patch = reqwest::Method::PATCH;
        for (id, s) in &self.backends {
            let path = format!("/backends/{}", path_segment(id));
            target
                .send(
                    patch.clone(),
                    &path,
                    Some(&json!({"properties": {"url": s.url}})),
                )
                .await?;
            done.push(Applied {
                resource: path,
                setting: format!("url = {}", s.url),
            });
        }
        for (id, s) in &self.apis {
            let path = format!("/apis/{}", path_segment(id));
            target
                .send(
                    patch.clone(),
                    &path,
                    Some(&json!({"properties": {"serviceUrl": s.service_url}})),
                )
                .await?;
            done.push(Applied {
                resource: path,
                setting: format!("serviceUrl = {}", s.service_url),
            });
        }
        for (id, s) in &self.named_values {
            let path = format!("/namedValues/{}", path_segment(id));
            target
                .send(
                    patch.clone(),
                    &path,
                    Some(&json!({"properties": {"value": s.value}})),
                )
                .await?;
            done.push(Applied {
                resource: path,
                setting: "value = (set)".into(),
            });
        }
        for (id, c) in &self.certificates {
            let path = format!("/certificates/{}", path_segment(id));
            let data = c.file.strip_prefix("base64:").unwrap_or(&c.file);
            let mut props = json!({"data": data});
            if let Some(p) = &c.password {
                props["password"] = json!(p);
            }
            target.put(&path, &json!({"properties": props})).await?;
            done.push(Applied {
                resource: path,
                setting: "certificate uploaded".into(),
            });
        }
        if !self.hostnames.is_empty() {
            let mut list: Vec<Value> = own_hostnames
                .iter()
                .filter(|h| {
                    let name = h["hostName"].as_str().unwrap_or("");
                    !self
                        .hostnames
                        .iter()
                        .any(|o| o.host_name.eq_ignore_ascii_case(name))
                })
                .cloned()
                .collect();
            for h in &self.hostnames {
                let mut v = json!({"type": h.kind, "hostName": h.host_name});
                if let Some(c) = &h.certificate {
                    v["certificateId"] = json!(format!("/certificates/{c}"));
                }
                list.push(v);
                done.push(Applied {
                    resource: "/".into(),
                    setting: format!("host name {} ({})", h.host_name, h.kind),
                });
            }
            target
                .send(
                    patch,
                    "/",
                    Some(&json!({"properties": {"hostnameConfigurations": list}})),
                )
                .await?;
        }
        Ok(done)
    }

    /// Checks the target holds what the overlay set; returns the differences.
    pub async fn verify(&self, target: &Client) -> Result<Vec<String>> {
        let mut diffs = Vec::new();
        for (id, s) in &self.backends {
            let v = target
                .get(&format!("/backends/{}", path_segment(id)))
                .await?;
            if v["properties"]["url"].as_str() != Some(s.url.as_str()) {
                diffs.push(format!("/backends/{id}: url is not {}", s.url));
            }
        }
        for (id, s) in &self.apis {
            let v = target.get(&format!("/apis/{}", path_segment(id))).await?;
            if v["properties"]["serviceUrl"].as_str() != Some(s.service_url.as_str()) {
                diffs.push(format!("/apis/{id}: serviceUrl is not {}", s.service_url));
            }
        }
        for (id, s) in &self.named_values {
            let v = target
                .send(
                    reqwest::Method::POST,
                    &format!("/namedValues/{}/listValue", path_segment(id)),
                    None,
                )
                .await?;
            if v["value"].as_str() != Some(s.value.as_str()) {
                diffs.push(format!(
                    "/namedValues/{id}: the value differs from the overlay"
                ));
            }
        }
        if !self.hostnames.is_empty() {
            let service = target.get("/").await?;
            let have = service["properties"]["hostnameConfigurations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for h in &self.hostnames {
                if !have.iter().any(|x| {
                    x["hostName"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(&h.host_name))
                }) {
                    diffs.push(format!("host name {} is not configured", h.host_name));
                }
            }
        }
        Ok(diffs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yaml_and_refuses_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.yaml");
        std::fs::write(
            &p,
            "backends:\n  orders: {url: 'http://eastus'}\napis:\n  echo:\n    serviceUrl: http://e\nhostnames:\n  - hostName: api.contoso.test\n",
        )
        .unwrap();
        let o = Overlay::read(&p).unwrap();
        assert_eq!(o.backends["orders"].url, "http://eastus");
        assert_eq!(o.hostnames[0].kind, "Proxy");
        assert_eq!(o.paths(), vec!["/backends/orders", "/apis/echo"]);
        std::fs::write(&p, "backend:\n  orders: {url: x}\n").unwrap();
        let e = format!("{:#}", Overlay::read(&p).unwrap_err());
        assert!(e.contains("unknown field `backend`"), "{e}");
    }
}
