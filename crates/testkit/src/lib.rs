//! Test helpers: start real instances in-process on port 0 (each with its own data directory)
//! and talk to them over real HTTP.

use anyhow::Result;
pub use gatehouse_cli::instance::{Instance, ServeConfig};
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
