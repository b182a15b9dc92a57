//! What every portal handler is given, and its two ways to the store: a read at one revision
//! and a write through the management rules (one transaction, journaled, refused during a
//! move's freeze as every management write is).

use crate::error::PortalError;
use crate::secret::PortalKey;
use crate::session::{Revoked, SignInLimiter};
use gatehouse_management::AppState;
use gatehouse_store::{ReadTx, WriteTx};
use std::sync::Arc;

pub struct PortalState {
    pub app: Arc<AppState>,
    pub key: PortalKey,
    pub revoked: Revoked,
    pub limiter: SignInLimiter,
    /// The gateway the try-it console sends requests to (the instance's own).
    pub http: reqwest::Client,
    pub templates: crate::templates::Templates,
    pub content: crate::content::ContentCache,
    pub catalogs: crate::catalog::CatalogCache,
    /// The portal is served over HTTPS (its cookies are then always `Secure`).
    pub https: bool,
    /// Where email is sent through (sign-up confirmation, password reset); none without SMTP.
    pub mailer: Option<crate::mail::Mailer>,
    /// The portal's public base URL, for the links in emails (never taken from a request's
    /// `Host`, which a client chooses).
    pub public_url: String,
    /// OpenID Connect providers' discovery documents and keys.
    pub discovery: crate::oidc::DiscoveryCache,
}

/// What the hosting process tells the portal.
#[derive(Debug, Clone, Default)]
pub struct PortalOptions {
    pub mailer: Option<crate::mail::Mailer>,
    pub public_url: String,
    pub https: bool,
}

impl PortalState {
    pub fn new(app: Arc<AppState>, key: PortalKey, options: PortalOptions) -> Arc<PortalState> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Arc::new(PortalState {
            app,
            key,
            revoked: Revoked::default(),
            limiter: SignInLimiter::default(),
            http,
            templates: crate::templates::Templates::new(),
            content: Default::default(),
            catalogs: Default::default(),
            https: options.https,
            mailer: options.mailer,
            public_url: options.public_url.trim_end_matches('/').to_string(),
            discovery: Default::default(),
        })
    }

    /// Runs `f` on one consistent view of the store, off the async runtime.
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&ReadTx<'_>) -> Result<T, PortalError> + Send + 'static,
    ) -> Result<T, PortalError> {
        let store = self.app.store.clone();
        tokio::task::spawn_blocking(move || store.read(f))
            .await
            .map_err(PortalError::internal)?
    }

    /// Runs `f` in one store transaction as `actor` (the journal names who changed what).
    pub async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        actor: String,
        f: impl FnOnce(&mut WriteTx<'_>) -> Result<T, PortalError> + Send + 'static,
    ) -> Result<T, PortalError> {
        if self
            .app
            .freeze
            .check(&self.app.store, &axum::http::Method::PUT, None)
            .await
            .is_err()
        {
            return Err(PortalError::Frozen);
        }
        let store = self.app.store.clone();
        tokio::task::spawn_blocking(move || store.write_as(&actor, |tx| f(tx)).map(|c| c.value))
            .await
            .map_err(PortalError::internal)?
    }

    pub fn gateway_url(&self) -> String {
        self.app
            .urls
            .read()
            .map(|u| u.gateway.clone())
            .unwrap_or_default()
    }
}
