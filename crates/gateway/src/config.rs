//! The gateway's settings.

use std::path::PathBuf;
use std::time::Duration;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// PEM certificate chain and private key: serve HTTPS (HTTP/2 by ALPN) instead of plain
    /// HTTP/1.1 and h2c.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    /// How long an HTTP/1.x client may take none of its response's bytes before its
    /// connection is closed (nginx's `send_timeout`).
    pub send_timeout: Duration,
    pub backend_connect_timeout: Duration,
    pub backend_response_timeout: Duration,
    /// `stdout`, a file path, or `None` for no access log.
    pub access_log: Option<String>,
    /// How long shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// Extra trusted root certificates (PEM) for HTTPS backends, e.g. an internal CA.
    pub backend_ca: Option<PathBuf>,
    /// Threads serving client connections, each running its own single-threaded event loop
    /// (0: one per CPU). A connection stays on the thread it was given at accept.
    pub workers: usize,
    /// Client connections served at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// A self-hosted gateway's id: serve only the APIs linked to it. `None`: every API.
    pub serves_gateway: Option<String>,
    /// The region reported in metrics (`gatehouse gateway --region`).
    pub region: Option<String>,
    /// A Redis server (`redis://HOST:PORT`) through which rate limits and quotas are shared
    /// with other gateways; `None`: this gateway counts alone (as APIM's self-hosted gateways).
    pub counters: Option<String>,
    /// The developer portal's base URL (`http://127.0.0.1:8002`): requests whose host is one of
    /// the service's `DeveloperPortal` host names are passed to it. `None`: no portal here.
    pub portal: Option<String>,
    /// Where authentication-managed-identity gets tokens (`None`: the policy fails, or is
    /// skipped with ignore-error).
    pub identity: Option<IdentitySource>,
    /// Where validate-azure-ad-token reads tenants' OpenID configurations and expects their
    /// issuers: Entra ID's public authority unless set (a sovereign cloud, or a test issuer).
    pub entra_authority: Option<String>,
}

/// A token source standing in for Azure's managed identity.
#[derive(Clone, PartialEq)]
pub enum IdentitySource {
    /// OAuth 2.0 client credentials at a token endpoint (Entra ID's, or any server's).
    ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: String,
    },
    /// Azure's instance metadata service, when Gatehouse runs in Azure.
    Imds { endpoint: String },
}

impl std::fmt::Debug for IdentitySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentitySource::ClientCredentials {
                token_url,
                client_id,
                ..
            } => f
                .debug_struct("ClientCredentials")
                .field("token_url", token_url)
                .field("client_id", client_id)
                .field("client_secret", &"***")
                .finish(),
            IdentitySource::Imds { endpoint } => {
                f.debug_struct("Imds").field("endpoint", endpoint).finish()
            }
        }
    }
}

/// Azure's instance metadata token endpoint.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            tls: None,
            max_header_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            backend_connect_timeout: Duration::from_secs(10),
            backend_response_timeout: Duration::from_secs(240),
            access_log: None,
            drain_timeout: Duration::from_secs(30),
            backend_ca: None,
            workers: 0,
            max_connections: gatehouse_listen::Limits::GATEWAY.max_connections,
            serves_gateway: None,
            region: None,
            counters: None,
            identity: None,
            entra_authority: None,
            portal: None,
        }
    }
}
