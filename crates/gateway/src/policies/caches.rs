//! The OpenID providers' keys validate-jwt uses, and the in-memory cache of cache-lookup,
//! cache-store and the value policies.

use gatehouse_policy::exec::Cached;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The keys of OpenID providers that validate-jwt policies name: fetched when a policy naming
/// one is compiled, refreshed every hour, and at most every five minutes when a token names a
/// key the cache does not have.
#[derive(Default)]
pub struct JwksCache {
    entries: Mutex<HashMap<String, JwksEntry>>,
    /// Entra ID's authority as configured: configurations under the public authority are
    /// read from here instead (the cache stays keyed by the URL policies name).
    entra_authority: Option<String>,
}

pub(super) struct JwksEntry {
    pub(super) keys: Option<Arc<Vec<Value>>>,
    pub(super) fetched: Option<Instant>,
    pub(super) fetching: bool,
}

pub(super) const JWKS_REFRESH: Duration = Duration::from_secs(3600);

pub(super) const JWKS_RETRY: Duration = Duration::from_secs(300);

impl JwksCache {
    pub fn with_authority(entra_authority: Option<String>) -> JwksCache {
        JwksCache {
            entries: Mutex::default(),
            entra_authority: entra_authority.map(|a| a.trim_end_matches('/').to_string()),
        }
    }

    /// Where `url`'s configuration is read.
    fn source(&self, url: &str) -> String {
        match (
            &self.entra_authority,
            url.strip_prefix(gatehouse_policy::exec::ENTRA_AUTHORITY),
        ) {
            (Some(authority), Some(rest)) => format!("{authority}{rest}"),
            _ => url.to_string(),
        }
    }

    /// Starts fetching the keys of every URL not fetched yet (from async context).
    pub fn ensure(self: &Arc<Self>, urls: &[String]) {
        for url in urls {
            self.fetch_if_due(url, Duration::ZERO);
        }
    }

    pub(super) fn fetch_if_due(self: &Arc<Self>, url: &str, min_age: Duration) {
        {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let e = entries.entry(url.to_string()).or_insert(JwksEntry {
                keys: None,
                fetched: None,
                fetching: false,
            });
            let due = e.fetched.is_none_or(|f| f.elapsed() >= min_age)
                && (e.keys.is_none() || min_age > Duration::ZERO);
            if e.fetching || !due {
                return;
            }
            e.fetching = true;
        }
        let me = self.clone();
        let url = url.to_string();
        let source = self.source(&url);
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            let result = fetch_jwks(&source).await;
            let mut entries = me.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = entries.get_mut(&url) {
                e.fetching = false;
                e.fetched = Some(Instant::now());
                match result {
                    Ok(keys) => e.keys = Some(Arc::new(keys)),
                    Err(err) => tracing::warn!(url = %url, error = %err, "cannot fetch the OpenID provider's keys"),
                }
            }
        });
    }

    /// The keys of `url` if fetched; schedules a refresh when they are old.
    pub fn keys(self: &Arc<Self>, url: &str) -> Option<Vec<Value>> {
        let keys = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.get(url).and_then(|e| e.keys.clone())
        };
        match &keys {
            None => self.fetch_if_due(url, JWKS_RETRY),
            Some(_) => self.fetch_if_due(url, JWKS_REFRESH),
        }
        keys.map(|k| k.as_ref().clone())
    }
}

/// A response body, refused once it passes `max` bytes (it is held in memory).
pub(super) async fn read_limited(mut r: reqwest::Response, max: u64) -> Result<Vec<u8>, String> {
    let too_large = || format!("the response is larger than {max} bytes");
    if r.content_length().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| e.to_string())? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The largest OpenID configuration or key set fetched.
pub(super) const MAX_JWKS_BYTES: u64 = 1024 * 1024;

pub(super) async fn fetch_jwks(config_url: &str) -> Result<Vec<Value>, String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let get_json = |url: &str| {
        let request = http.get(url);
        async move {
            let r = request
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| e.to_string())?;
            let body = read_limited(r, MAX_JWKS_BYTES).await?;
            serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string())
        }
    };
    let config = get_json(config_url).await?;
    let jwks_uri = config
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or("the OpenID configuration has no jwks_uri")?;
    let jwks = get_json(jwks_uri).await?;
    Ok(jwks
        .get("keys")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

/// The gateway's in-memory cache (cache-lookup/cache-store and the value policies): each entry
/// expires after its own duration; at most `CACHE_ENTRIES` are kept, the least useful evicted
/// first (moka's TinyLFU), so a full cache costs no scan per insert.
pub struct PolicyCache {
    entries: moka::sync::Cache<String, (Duration, Cached)>,
}

pub(super) const CACHE_ENTRIES: usize = 10_000;

/// Each entry lives as long as the policy that stored it said.
struct OwnDuration;

impl moka::Expiry<String, (Duration, Cached)> for OwnDuration {
    fn expire_after_create(
        &self,
        _: &String,
        value: &(Duration, Cached),
        _: Instant,
    ) -> Option<Duration> {
        Some(value.0)
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &(Duration, Cached),
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.0)
    }
}

impl Default for PolicyCache {
    fn default() -> PolicyCache {
        PolicyCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(CACHE_ENTRIES as u64)
                .expire_after(OwnDuration)
                .build(),
        }
    }
}

impl PolicyCache {
    pub(super) fn get(&self, key: &str) -> Option<Cached> {
        self.entries.get(key).map(|(_, v)| v)
    }

    pub(super) fn put(&self, key: &str, value: Cached, ttl_secs: u64) {
        self.entries
            .insert(key.to_string(), (Duration::from_secs(ttl_secs), value));
    }

    pub(super) fn remove(&self, key: &str) {
        self.entries.invalidate(key);
    }
}
