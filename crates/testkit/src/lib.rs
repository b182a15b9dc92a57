//! Test helpers: start real instances in-process on port 0 (each with its own data directory)
//! and talk to them over real HTTP.

pub mod dns;
pub mod oidc;
pub mod portal;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod smtp;

use anyhow::Result;
pub use gatehouse_server::{Instance, ServeConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A running instance with its data directory, stopped (gracefully) on `stop`.
pub struct TestInstance {
    pub instance: Option<Instance>,
    pub url: String,
    pub token: String,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
}

impl TestInstance {
    /// A fresh instance in a new temporary directory.
    pub async fn start() -> Result<TestInstance> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_path_buf();
        let mut t = Self::start_in(&path).await?;
        t._dir = Some(dir);
        Ok(t)
    }

    /// An instance on an existing data directory (e.g. after a restart).
    pub async fn start_in(data_dir: &Path) -> Result<TestInstance> {
        Self::start_with(ServeConfig::ephemeral(data_dir)).await
    }

    pub async fn start_with(config: ServeConfig) -> Result<TestInstance> {
        let data_dir = config.data_dir.clone();
        let instance = Instance::start(config).await?;
        Ok(TestInstance {
            url: instance.management_url.clone(),
            token: instance.token.clone(),
            instance: Some(instance),
            data_dir,
            _dir: None,
            http: reqwest::Client::new(),
        })
    }

    /// Keeps the temporary directory alive past `stop` (for restart tests).
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self._dir.take()
    }

    pub async fn stop(&mut self) -> Result<()> {
        if let Some(i) = self.instance.take() {
            i.shutdown().await?;
        }
        Ok(())
    }

    /// Sends a request with the admin token; returns status and JSON body (Null if empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, path, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .http
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body read");
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }
}

/// A real HTTP backend on loopback that echoes what it receives as JSON
/// (`{"method", "path", "query", "headers", "body"}`), with a few special paths:
/// `/slow?ms=N` answers after N ms, `/hang` never answers, `/status/{code}` answers that status,
/// `/fixed` answers the same body to every request (for comparing two gateways' answers).
pub struct EchoBackend {
    pub url: String,
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

async fn echo(req: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    if path.ends_with("/fixed") {
        return axum::Json(serde_json::json!({"fixed": true})).into_response();
    }
    if path.ends_with("/hang") {
        std::future::pending::<()>().await;
    }
    if path.ends_with("/slow") {
        let ms: u64 = query
            .split('&')
            .find_map(|p| p.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let status = path
        .rsplit_once("/status/")
        .and_then(|(_, c)| c.parse::<u16>().ok())
        .and_then(|c| axum::http::StatusCode::from_u16(c).ok())
        .unwrap_or(axum::http::StatusCode::OK);
    let bytes = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    let out = serde_json::json!({
        "method": parts.method.as_str(),
        "path": path,
        "query": query,
        "headers": headers,
        "body": String::from_utf8_lossy(&bytes),
        "version": format!("{:?}", parts.version),
    });
    (status, axum::Json(out)).into_response()
}

impl EchoBackend {
    pub async fn start() -> Result<EchoBackend> {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Result<EchoBackend> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(echo);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(EchoBackend {
            url: format!("http://{addr}"),
            addr,
            task,
        })
    }

    /// The same backend over HTTPS (HTTP/2 by ALPN, or HTTP/1.1), with the given PEM
    /// certificate and key; its URL uses the host name `localhost`.
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Result<EchoBackend> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let certs =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(echo);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Ok(EchoBackend {
            url: format!("https://localhost:{}", addr.port()),
            addr,
            task,
        })
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestInstance {
    /// The developer portal's base URL.
    pub fn portal_url(&self) -> String {
        let inst = self.instance.as_ref().expect("running");
        inst.portal_url.clone().expect("the portal is served")
    }

    /// The gateway's base URL.
    pub fn gateway_url(&self) -> String {
        self.instance.as_ref().expect("running").gateway_url.clone()
    }

    /// Waits until the gateway serves the store's current revision (changes are asynchronous).
    pub async fn gateway_caught_up(&self) {
        let inst = self.instance.as_ref().expect("running");
        let want = inst.store.revision().expect("store readable");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while inst.gateway.revision() < want {
            assert!(
                std::time::Instant::now() < deadline,
                "the gateway did not reach revision {want}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
}

/// Fault injection: a TCP proxy that forwards to `target` until `cut_after` bytes have gone
/// upstream, then drops every connection and refuses new ones — a storage server dying in the
/// middle of an upload.
pub struct DyingProxy {
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl DyingProxy {
    pub async fn start(target: std::net::SocketAddr, cut_after: u64) -> Result<DyingProxy> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sent = Arc::new(AtomicU64::new(0));
        let dead = Arc::new(AtomicBool::new(false));
        let (kill_tx, kill_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if dead.load(Ordering::SeqCst) {
                    // Once dead, the listener is dropped: new connections are refused.
                    return;
                }
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (sent, dead, kill_tx, mut kill_rx) =
                    (sent.clone(), dead.clone(), kill_tx.clone(), kill_rx.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match cr.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                            if total > cut_after {
                                dead.store(true, Ordering::SeqCst);
                                let _ = kill_tx.send(true);
                                return;
                            }
                            if sw.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let down = async {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    };
                    tokio::select! {
                        _ = up => {},
                        _ = down => {},
                        _ = kill_rx.wait_for(|k| *k) => {},
                    }
                });
            }
        });
        Ok(DyingProxy { addr, task })
    }
}

impl Drop for DyingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestInstance {
    /// PUTs a resource and fails the test unless it was created or replaced.
    pub async fn put_ok(&self, path: &str, body: Value) {
        let (s, b) = self.call("PUT", path, Some(body)).await;
        assert!(s == 200 || s == 201, "PUT {path}: {s} {b}");
    }

    /// An API at path `id` forwarding to `service_url`, over `protocols`.
    pub async fn api(&self, id: &str, service_url: &str, protocols: &[&str]) {
        self.put_ok(
            &format!("/apis/{id}"),
            serde_json::json!({"properties": {"displayName": id, "path": id, "serviceUrl": service_url, "protocols": protocols}}),
        )
        .await;
    }

    /// An operation of `api`; its template parameters are declared from the template.
    pub async fn operation(&self, api: &str, id: &str, method: &str, template: &str) {
        let params: Vec<Value> = template
            .split('{')
            .skip(1)
            .filter_map(|p| p.split('}').next())
            .map(|p| serde_json::json!({"name": p.trim_start_matches('*'), "type": "string", "required": true}))
            .collect();
        self.put_ok(
            &format!("/apis/{api}/operations/{id}"),
            serde_json::json!({"properties": {"displayName": id, "method": method, "urlTemplate": template, "templateParameters": params}}),
        )
        .await;
    }

    /// A published product `starter` holding `api`, and an active subscription `s1` to it:
    /// the subscription's primary and secondary keys.
    pub async fn starter_subscription(&self, api: &str) -> (String, String) {
        self.put_ok(
            "/products/starter",
            serde_json::json!({"properties": {"displayName": "Starter", "state": "published"}}),
        )
        .await;
        self.put_ok(
            &format!("/products/starter/apis/{api}"),
            serde_json::json!({}),
        )
        .await;
        self.subscription("s1", "/products/starter").await
    }

    /// An active subscription `id` to `scope`, named as its id in capitals (so that a test tells
    /// `Subscription.Id` from `Subscription.Name`): its primary and secondary keys.
    pub async fn subscription(&self, id: &str, scope: &str) -> (String, String) {
        self.put_ok(
            &format!("/subscriptions/{id}"),
            serde_json::json!({"properties": {"scope": scope, "displayName": id.to_uppercase(), "state": "active"}}),
        )
        .await;
        let (_, keys) = self
            .call("POST", &format!("/subscriptions/{id}/listSecrets"), None)
            .await;
        let key = |k: &str| keys[k].as_str().expect("a key").to_string();
        (key("primaryKey"), key("secondaryKey"))
    }

    /// Starts a long-running operation (`/backup`, `/restore`): the `Location` to poll, or the
    /// status and body it was refused with.
    pub async fn start_operation(
        &self,
        action: &str,
        body: &Value,
    ) -> Result<String, (u16, Value)> {
        let r = self
            .http
            .post(format!("{}/{action}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("request sent");
        if r.status() == 202 {
            return Ok(r.headers()["location"]
                .to_str()
                .expect("ASCII location")
                .to_string());
        }
        let s = r.status().as_u16();
        Err((s, r.json().await.unwrap_or(Value::Null)))
    }

    /// Polls an operation until it ends; while it runs, checks APIM's 202 progress body.
    pub async fn wait_operation(&self, location: &str) -> (u16, Value) {
        for _ in 0..3000 {
            let r = self
                .http
                .get(location)
                .bearer_auth(&self.token)
                .send()
                .await
                .expect("poll sent");
            let s = r.status().as_u16();
            let b: Value = r.json().await.unwrap_or(Value::Null);
            if s != 202 {
                return (s, b);
            }
            assert_eq!(b["status"], "InProgress");
            assert!(b["percentComplete"].as_u64().expect("percentComplete") < 100);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the operation at {location} did not finish");
    }

    /// Starts an operation and waits for its end.
    pub async fn run_operation(&self, action: &str, body: &Value) -> (u16, Value) {
        match self.start_operation(action, body).await {
            Ok(location) => self.wait_operation(&location).await,
            Err(refused) => refused,
        }
    }
}
