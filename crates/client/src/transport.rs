//! A client of a running instance's management API, found by `--url`/`--token`, by
//! `GATEHOUSE_URL`/`GATEHOUSE_TOKEN`, or by a data directory's `endpoints.json` and `admin-token`.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::path::Path;

/// An id as one path segment: every byte but ASCII letters, digits, `-`, `_`, `.` and `~`
/// percent-encoded, so that no id can add a segment (`/`, `\\`), a query (`?`) or a fragment
/// (`#`) to the path it is put in.
pub fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The certificate of a management API served over HTTPS, as `endpoints.json` names it.
fn management_certificate(data_dir: &Path) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string(data_dir.join(gatehouse_model::files::ENDPOINTS)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.get("managementCertificate")
        .and_then(Value::as_str)
        .map(std::path::PathBuf::from)
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// An error the API answered with, as one readable line.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}{details}")]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub details: String,
}

/// The API's error envelope as an [`ApiFailure`]; with several details, each is listed.
fn failure(status: u16, text: &str) -> ApiFailure {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let err = v.get("error");
    let details = err
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .filter(|d| d.len() > 1)
        .map(|d| {
            let parts: Vec<String> = d
                .iter()
                .map(|x| {
                    format!(
                        "{}: {}",
                        x.get("target").and_then(Value::as_str).unwrap_or(""),
                        x.get("message").and_then(Value::as_str).unwrap_or("")
                    )
                })
                .collect();
            format!(" ({})", parts.join("; "))
        })
        .unwrap_or_default();
    ApiFailure {
        status,
        code: err
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .unwrap_or("Error")
            .to_string(),
        message: err
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(200).collect()),
        details,
    }
}

impl Client {
    pub fn new(base: &str, token: &str) -> Result<Client> {
        Client::trusting(base, token, None)
    }

    /// A client that also trusts the certificates in `ca_file` (PEM): the CA of a management
    /// API served over HTTPS with a certificate of its own, or that certificate itself.
    pub fn trusting(base: &str, token: &str, ca_file: Option<&Path>) -> Result<Client> {
        let mut http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(120));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA file {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not a PEM certificate bundle", path.display()))?;
            if certs.is_empty() {
                bail!("{} holds no PEM certificate", path.display());
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: http.build()?,
        })
    }

    /// Finds the instance: explicit URL and token first, else the data directory's files. The
    /// client trusts `ca_file`, else the certificate the data directory's `endpoints.json`
    /// names for a management API over HTTPS.
    pub fn locate(
        url: Option<&str>,
        token: Option<&str>,
        data_dir: &Path,
        ca_file: Option<&Path>,
    ) -> Result<Client> {
        let from_dir_url = || -> Result<String> {
            let path = data_dir.join(gatehouse_model::files::ENDPOINTS);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "no running instance found: cannot read {} (start one with `gatehouse serve`, or pass --url and --token)",
                    path.display()
                )
            })?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?;
            v.get("management")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| anyhow!("{} has no 'management' URL", path.display()))
        };
        let from_dir_token = || -> Result<String> {
            let path = data_dir.join(gatehouse_model::files::ADMIN_TOKEN);
            let t = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "no admin token: cannot read {} (pass --token or set GATEHOUSE_TOKEN)",
                    path.display()
                )
            })?;
            Ok(t.trim().to_string())
        };
        let from_dir = url.is_none();
        let url = match url {
            Some(u) => u.to_string(),
            None => from_dir_url()?,
        };
        let token = match token {
            Some(t) => t.to_string(),
            None => from_dir_token()?,
        };
        let certificate = match ca_file {
            Some(f) => Some(f.to_path_buf()),
            None if from_dir => management_certificate(data_dir),
            None => None,
        };
        Client::trusting(&url, &token, certificate.as_deref())
    }

    /// The URL of a path below the service. A path with a `.` or `..` segment is refused here:
    /// URL parsing would resolve it into another path (`/products/..` into `/`), so the request
    /// would address something other than what was asked for.
    fn url(&self, path: &str) -> Result<String> {
        if path.starts_with("http://") || path.starts_with("https://") {
            return Ok(path.to_string());
        }
        let p = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let path_only = p.split('?').next().unwrap_or_default();
        if gatehouse_model::check_no_dot_segments(path_only).is_err() || path_only.contains('\\') {
            bail!(
                "the path '{p}' has a '.', '..' or '\\' segment, which would address another resource: ids cannot be '.' or '..'"
            );
        }
        Ok(format!("{}{}", self.base, p))
    }

    /// Sends a request; returns the JSON body (or `Null` for an empty one).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        Ok(self.exchange(method, path, body).await?.1)
    }

    /// Deletes what `path` names; false when there was nothing (APIM answers 204 then).
    pub async fn delete(&self, path: &str) -> Result<bool> {
        let (status, _) = self.exchange(reqwest::Method::DELETE, path, None).await?;
        Ok(status != 204)
    }

    /// Sends a request; returns the success status and the JSON body (`Null` if empty), or
    /// the API's error as an [`ApiFailure`].
    pub async fn exchange(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method.clone(), self.url(path)?)
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let (status, bytes) = self.send_bytes(req).await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if text.trim().is_empty() {
            return Ok((status, Value::Null));
        }
        match serde_json::from_str(&text) {
            Ok(v) => Ok((status, v)),
            Err(_) => Ok((status, Value::String(text))),
        }
    }

    /// Sends a request; the success status and the body's bytes, or the API's error as an
    /// [`ApiFailure`].
    async fn send_bytes(&self, req: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>)> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the management API at {}", self.base))?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("cannot read the response")?;
        if !status.is_success() {
            return Err(failure(status.as_u16(), &String::from_utf8_lossy(&bytes)).into());
        }
        Ok((status.as_u16(), bytes.to_vec()))
    }

    /// GETs `path` and returns the body as bytes (an export's zip).
    pub async fn download(&self, path: &str) -> Result<Vec<u8>> {
        let req = self.http.get(self.url(path)?).bearer_auth(&self.token);
        Ok(self.send_bytes(req).await?.1)
    }

    /// POSTs `bytes` as `content_type` (an import's archive); returns the JSON answer.
    pub async fn upload(&self, path: &str, bytes: Vec<u8>, content_type: &str) -> Result<Value> {
        let req = self
            .http
            .post(self.url(path)?)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes);
        let (_, answer) = self.send_bytes(req).await?;
        serde_json::from_slice(&answer).context("the answer is not JSON")
    }

    /// Starts a long-running operation (`POST` answered with 202 and a `Location`); returns the
    /// `Location` to poll.
    pub async fn start_operation(&self, path: &str, body: &Value) -> Result<String> {
        let resp = self
            .http
            .post(self.url(path)?)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the management API at {}", self.base))?;
        if resp.status().as_u16() == 202 {
            return resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("the service accepted the operation but gave no Location"));
        }
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        Err(ApiFailure {
            status,
            code: v["error"]["code"].as_str().unwrap_or("Error").to_string(),
            message: v["error"]["message"].as_str().unwrap_or("").to_string(),
            details: String::new(),
        }
        .into())
    }

    /// Polls an operation's `Location` until it ends; `progress` gets the percentage.
    pub async fn wait_operation(
        &self,
        location: &str,
        mut progress: impl FnMut(u64),
    ) -> Result<Value> {
        let mut waits = polling(std::time::Duration::from_millis(500));
        loop {
            let resp = self
                .http
                .get(location)
                .bearer_auth(&self.token)
                .send()
                .await
                .with_context(|| format!("cannot reach the management API at {}", self.base))?;
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            match status {
                202 => {
                    progress(v["percentComplete"].as_u64().unwrap_or(0));
                    if let Some(wait) = waits.next() {
                        tokio::time::sleep(wait).await;
                    }
                }
                200 => return Ok(v),
                _ => {
                    return Err(ApiFailure {
                        status,
                        code: v["error"]["code"].as_str().unwrap_or("Error").to_string(),
                        message: v["error"]["message"].as_str().unwrap_or("").to_string(),
                        details: String::new(),
                    }
                    .into());
                }
            }
        }
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn post(&self, path: &str) -> Result<Value> {
        self.send(reqwest::Method::POST, path, None).await
    }

    /// Every item of a list, following `nextLink`.
    pub async fn list_all(&self, path: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(p) = next {
            let page = self.get(&p).await?;
            let Some(items) = page.get("value").and_then(Value::as_array) else {
                bail!("the response of {p} is not a list");
            };
            out.extend(items.iter().cloned());
            next = page
                .get("nextLink")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        Ok(out)
    }
}

/// The waits between polls of something that is usually done soon: 10 ms, then doubling up to
/// `max`, without end — a small operation is seen done within milliseconds, a long one costs
/// a request every `max`.
pub fn polling(max: std::time::Duration) -> impl Iterator<Item = std::time::Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(10))
        .with_max_delay(max)
        .without_max_times()
        .build()
}
