//! The command line: every command and flag, with its help.

use crate::moving;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "gatehouse",
    version,
    about = "Self-hosted API management in one binary"
)]
pub struct Cli {
    #[command(flatten)]
    pub target: Target,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// How client commands find their instance.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Management API base URL of the instance.
    #[arg(long, env = "GATEHOUSE_URL", global = true)]
    pub url: Option<String>,
    /// Admin bearer token.
    #[arg(
        long,
        env = "GATEHOUSE_TOKEN",
        global = true,
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub token: Option<String>,
    /// Data directory of the instance (its endpoints.json and admin-token are read).
    #[arg(long, env = "GATEHOUSE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// PEM certificates to trust for a management API over HTTPS (its CA, or its own
    /// certificate); with --data-dir, the certificate endpoints.json names is trusted anyway.
    #[arg(long, env = "GATEHOUSE_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run an instance (management API and gateway) on the embedded store.
    Serve(Box<ServeArgs>),
    /// Run a self-hosted gateway that follows a primary instance (APIM's self-hosted gateway):
    /// only the gateway, configured over one stream, serving from its own copy when the
    /// primary is unreachable. Its data directory is --data-dir; --ca-file trusts the primary.
    Gateway(Box<GatewayArgs>),
    /// GET a path of the management API (relative to the service).
    Get {
        /// The resource path, e.g. /apis/echo (or a full ARM path).
        path: String,
    },
    /// PUT a path with a JSON body.
    Put {
        /// The resource path, e.g. /namedValues/region.
        path: String,
        /// File with the JSON body, or - for standard input.
        #[arg(long)]
        body: Option<String>,
    },
    /// PATCH a path with a JSON body.
    Patch {
        /// The resource path.
        path: String,
        /// File with the JSON body, or - for standard input.
        #[arg(long)]
        body: Option<String>,
    },
    /// DELETE a path.
    Delete {
        /// The resource path.
        path: String,
    },
    /// The service resource; `service delete --yes` deletes the instance.
    Service {
        #[command(subcommand)]
        action: Option<ServiceCmd>,
    },
    /// APIs.
    #[command(subcommand)]
    Api(ApiCmd),
    /// Products.
    #[command(subcommand)]
    Product(ProductCmd),
    /// Subscriptions.
    #[command(subcommand)]
    Subscription(SubscriptionCmd),
    /// Users.
    #[command(subcommand)]
    User(UserCmd),
    /// Groups of users.
    #[command(subcommand)]
    Group(ResourceCmd),
    /// Named values (use --set-env for a secret's value).
    #[command(subcommand, name = "namedvalue")]
    NamedValue(ResourceCmd),
    /// Backends: the services APIs forward to.
    #[command(subcommand)]
    Backend(ResourceCmd),
    /// Certificates (PEM via --set-file data=FILE, or a PFX as base64 with its password).
    #[command(subcommand)]
    Certificate(ResourceCmd),
    /// Tags.
    #[command(subcommand)]
    Tag(ResourceCmd),
    /// Policies: the global one, a product's, an API's or an operation's.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Back up an instance's data directory to an archive, or inspect and list archives.
    Backup(BackupArgs),
    /// Restore the latest point of a continuous archive into a temporary instance, start it,
    /// probe it, and print RPO and RTO (non-zero exit past --max-rpo-seconds / --max-rto-seconds);
    /// with --url and --token, compare it with that live instance as a move's verification does.
    Drill(DrillArgs),
    /// Restore an archive into a running instance: its configuration is replaced at once
    /// (or merged, for a partial archive), without a restart.
    Restore(RestoreArgs),
    /// Move the instance to another region, machine or cloud: back up, restore into the
    /// target, replay later changes, verify, switch DNS, drain and delete the source.
    Move(Box<moving::MoveArgs>),
    /// Write the configuration as a folder in APIOps's layout (policy.xml, apis/, products/,
    /// named values/, …): what Git holds and APIOps's publisher applies. No secret is written.
    Export(crate::folder::ExportArgs),
    /// Apply a folder in APIOps's layout (from `gatehouse export` or APIOps's extractor) in
    /// one transaction: all of it or nothing. --plan shows the changes and makes none.
    Import(crate::folder::ImportArgs),
    /// Scoped access tokens of the management API (the admin token manages them).
    #[command(subcommand)]
    Token(TokenCmd),
    /// The change journal after a revision.
    Journal {
        /// Show the changes after this revision (0: all that the journal keeps).
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
}

/// The gateway listener's flags, shared by `serve` and `gateway`.
#[derive(Args, Debug, Clone, Default)]
pub struct GatewayFlags {
    /// Share rate limits and quotas with other gateways through this Redis server
    /// (`redis://HOST:PORT`); without it each gateway counts alone, as APIM's do.
    #[arg(long, env = "GATEHOUSE_COUNTERS")]
    pub counters: Option<String>,
    /// Gateway listen address (port 0 picks a free port).
    #[arg(long, env = "GATEHOUSE_GATEWAY_LISTEN")]
    pub gateway_listen: Option<SocketAddr>,
    /// PEM certificate chain for HTTPS on the gateway listener (with --gateway-tls-key).
    #[arg(long, env = "GATEHOUSE_GATEWAY_TLS_CERT")]
    pub gateway_tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS on the gateway listener.
    #[arg(long, env = "GATEHOUSE_GATEWAY_TLS_KEY")]
    pub gateway_tls_key: Option<PathBuf>,
    /// JSON access log of the gateway: `stdout` or a file path (default: off).
    #[arg(long, env = "GATEHOUSE_ACCESS_LOG")]
    pub access_log: Option<String>,
    /// Extra trusted root certificates (PEM) for HTTPS backends.
    #[arg(long, env = "GATEHOUSE_BACKEND_CA")]
    pub backend_ca: Option<PathBuf>,
    /// Gateway worker threads, each serving its share of client connections (default: one per
    /// CPU).
    #[arg(long, env = "GATEHOUSE_GATEWAY_WORKERS")]
    pub gateway_workers: Option<usize>,
    /// authentication-managed-identity's tokens: an OAuth 2.0 token endpoint that grants
    /// client credentials (with --identity-client-id and a secret).
    #[arg(long, env = "GATEHOUSE_IDENTITY_TOKEN_URL")]
    pub identity_token_url: Option<String>,
    /// The client id sent to --identity-token-url.
    #[arg(long, env = "GATEHOUSE_IDENTITY_CLIENT_ID")]
    pub identity_client_id: Option<String>,
    /// File holding the client secret for --identity-token-url (or GATEHOUSE_IDENTITY_CLIENT_SECRET).
    #[arg(long, env = "GATEHOUSE_IDENTITY_CLIENT_SECRET_FILE")]
    pub identity_client_secret_file: Option<PathBuf>,
    /// Take managed-identity tokens from Azure's instance metadata service (in Azure).
    #[arg(long, env = "GATEHOUSE_IDENTITY_IMDS")]
    pub identity_imds: bool,
    /// Where validate-azure-ad-token reads tenants' OpenID configurations (default: Entra ID's
    /// public authority, https://login.microsoftonline.com).
    #[arg(long, env = "GATEHOUSE_ENTRA_AUTHORITY")]
    pub entra_authority: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub gateway: GatewayFlags,
    /// The primary's management API base URL, e.g. https://primary.example.com:8001.
    #[arg(long, env = "GATEHOUSE_PRIMARY")]
    pub primary: String,
    /// The gateway resource this process serves as (`/gateways/{id}` on the primary).
    #[arg(long, env = "GATEHOUSE_GATEWAY_ID")]
    pub gateway_id: String,
    /// File holding the gateway token (the `value` of `POST /gateways/{id}/generateToken`);
    /// tokens rotated by the primary are written back to it.
    #[arg(long, env = "GATEHOUSE_GATEWAY_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// Serve Prometheus metrics (`GET /metrics`, no token, labelled with the region) on this
    /// address; keep it on loopback or a private network (default: not served).
    #[arg(long, env = "GATEHOUSE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// The region this gateway serves in (reported to the primary).
    #[arg(long, env = "GATEHOUSE_REGION")]
    pub region: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub gateway: GatewayFlags,
    /// Configuration file (default: ./gatehouse.toml if present).
    #[arg(long, env = "GATEHOUSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Service name.
    #[arg(long, env = "GATEHOUSE_NAME")]
    pub name: Option<String>,
    /// Region (location) of this instance.
    #[arg(long, env = "GATEHOUSE_REGION")]
    pub region: Option<String>,
    /// Pricing tier: Developer, Basic, Standard or Premium.
    #[arg(long, env = "GATEHOUSE_SKU")]
    pub sku: Option<String>,
    /// Units of the tier.
    #[arg(long, env = "GATEHOUSE_CAPACITY")]
    pub capacity: Option<u32>,
    /// The publisher's email address (APIM's publisherEmail; notifications come from it).
    #[arg(long, env = "GATEHOUSE_PUBLISHER_EMAIL")]
    pub publisher_email: Option<String>,
    /// The publisher's name, shown in the developer portal.
    #[arg(long, env = "GATEHOUSE_PUBLISHER_NAME")]
    pub publisher_name: Option<String>,
    /// Management API listen address (port 0 picks a free port).
    #[arg(long, env = "GATEHOUSE_MANAGEMENT_LISTEN")]
    pub management_listen: Option<SocketAddr>,
    /// Developer portal listen address (default 127.0.0.1:8002; port 0 picks a free port).
    #[arg(long, env = "GATEHOUSE_PORTAL_LISTEN")]
    pub portal_listen: Option<SocketAddr>,
    /// The portal's public URL (behind a proxy), for the links in its emails.
    #[arg(long, env = "GATEHOUSE_PORTAL_URL")]
    pub portal_url: Option<String>,
    /// SMTP server for the portal's emails (sign-up confirmation, password reset):
    /// `smtp://[user:password@]host[:port]`, `…?tls=starttls`, or `smtps://…`.
    #[arg(long, env = "GATEHOUSE_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The portal's email sender (default: the publisher email).
    #[arg(long, env = "GATEHOUSE_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// Serve no developer portal.
    #[arg(long, env = "GATEHOUSE_NO_PORTAL", conflicts_with = "portal_listen")]
    pub no_portal: bool,
    /// Largest request head the gateway and the management API accept, in bytes (431 beyond
    /// it; default 65536).
    #[arg(long, env = "GATEHOUSE_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Seconds a client has to send a request head on either listener, from the connection's
    /// start or its last response (default 30); the connection is closed after.
    #[arg(long, env = "GATEHOUSE_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<u64>,
    /// Client connections the gateway serves at once (default 10000).
    #[arg(long, env = "GATEHOUSE_GATEWAY_MAX_CONNECTIONS")]
    pub gateway_max_connections: Option<usize>,
    /// Connections the management API serves at once (default 512).
    #[arg(long, env = "GATEHOUSE_MANAGEMENT_MAX_CONNECTIONS")]
    pub management_max_connections: Option<usize>,
    /// PEM certificate chain for HTTPS on the management listener (with
    /// --management-tls-key); reloaded when the file changes.
    #[arg(long, env = "GATEHOUSE_MANAGEMENT_TLS_CERT")]
    pub management_tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS on the management listener.
    #[arg(long, env = "GATEHOUSE_MANAGEMENT_TLS_KEY")]
    pub management_tls_key: Option<PathBuf>,
    /// Serve the management API in plain HTTP on an address other than loopback (only behind a
    /// TLS proxy or on a trusted network: its requests carry the token and secrets).
    #[arg(long, env = "GATEHOUSE_INSECURE_MANAGEMENT")]
    pub insecure_management: bool,
    /// The default backup key: an age key file or a file holding a passphrase (else
    /// GATEHOUSE_BACKUP_KEY).
    #[arg(long, env = "GATEHOUSE_BACKUP_KEY_FILE")]
    pub backup_key_file: Option<PathBuf>,
    /// The shared store: a PostgreSQL URL (`postgres://user@host/db?sslmode=…`) several
    /// `serve` nodes share; without it, the embedded store in the data directory.
    #[arg(long, env = "GATEHOUSE_STORE")]
    pub store: Option<String>,
    /// Continuous archiving: the journal shipped, as it is written, to this storage container
    /// (as for `backup --to`, without a name: file:///folder/container, az://ACCOUNT/CONTAINER,
    /// s3+http://HOST:PORT/BUCKET …), next to base archives.
    #[arg(long, env = "GATEHOUSE_ARCHIVE")]
    pub archive: Option<String>,
    /// The age key file the continuous archive is encrypted with (`gatehouse backup new-key`).
    #[arg(long, env = "GATEHOUSE_ARCHIVE_KEY_FILE")]
    pub archive_key_file: Option<PathBuf>,
    /// A segment of the archive is closed and uploaded at most this long after its first
    /// change (seconds, default 1).
    #[arg(long, env = "GATEHOUSE_ARCHIVE_SEGMENT_SECONDS")]
    pub archive_segment_seconds: Option<f64>,
    /// Full base archives besides the first one: an interval (`6h`, `1d`, `30m`) or a cron
    /// expression in UTC (`0 */6 * * *`, `@daily`).
    #[arg(long, env = "GATEHOUSE_ARCHIVE_EVERY")]
    pub archive_every: Option<String>,
    /// Retention of the continuous archive, as restic's forget: keep the newest N bases …
    #[arg(long)]
    pub keep_last: Option<usize>,
    /// … and the newest base of each of the last N hours that have one …
    #[arg(long)]
    pub keep_hourly: Option<usize>,
    /// … of each of the last N days …
    #[arg(long)]
    pub keep_daily: Option<usize>,
    /// … and of each of the last N weeks (segments go when no kept base needs them).
    #[arg(long)]
    pub keep_weekly: Option<usize>,
    /// How long to wait for the shared store while it does not answer (default 600).
    #[arg(long, env = "GATEHOUSE_STORE_WAIT_SECONDS")]
    pub store_wait_seconds: Option<u64>,
    /// The Azure subscription id the ARM-prefixed paths must name (default: any).
    #[arg(long, env = "GATEHOUSE_ARM_SUBSCRIPTION_ID")]
    pub arm_subscription_id: Option<String>,
    /// The resource group the ARM-prefixed paths must name (default: any).
    #[arg(long, env = "GATEHOUSE_ARM_RESOURCE_GROUP")]
    pub arm_resource_group: Option<String>,
    /// Where Key Vault named values are read from: an https:// base URL answering
    /// GET {base}/{name} with {"value": …} (Key Vault's secrets endpoint), or a file:// folder
    /// with one file per secret.
    #[arg(long, env = "GATEHOUSE_SECRET_SOURCE")]
    pub secret_source: Option<String>,
    /// A file holding the bearer token for an https:// secret source.
    #[arg(long, env = "GATEHOUSE_SECRET_SOURCE_TOKEN_FILE")]
    pub secret_source_token_file: Option<PathBuf>,
    /// Seconds between reads of every Key Vault named value (default 14400, APIM's four hours).
    #[arg(long, env = "GATEHOUSE_SECRET_REFRESH_SECONDS")]
    pub secret_refresh_seconds: Option<u64>,
    /// Seconds journal entries are kept at least (default 604800, a week); longer while a
    /// connected self-hosted gateway has not applied them.
    #[arg(long, env = "GATEHOUSE_JOURNAL_RETENTION_SECONDS")]
    pub journal_retention_seconds: Option<u64>,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub action: Option<BackupAction>,
    /// Where the archive goes: a file path, file://, az://ACCOUNT/CONTAINER/NAME, s3://BUCKET/NAME,
    /// s3+http://HOST:PORT/BUCKET/NAME or gs://BUCKET/NAME.
    #[arg(long)]
    pub to: Option<String>,
    /// The backup key: an age key file (AGE-SECRET-KEY-…) or a file holding a passphrase.
    /// Default: the GATEHOUSE_BACKUP_KEY environment variable.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Make the archive unrestorable after this many days.
    #[arg(long)]
    pub expires_after_days: Option<u64>,
    /// Back up only these APIs and products (/apis/ID,/products/ID) with what they need;
    /// restoring such an archive merges it into the target.
    #[arg(long, value_delimiter = ',')]
    pub include: Option<Vec<String>>,
    /// The object storage key (Azure account key, S3 KEY_ID:SECRET, GCS service account JSON);
    /// default GATEHOUSE_STORAGE_KEY.
    #[arg(long, global = true, hide_env_values = true)]
    pub access_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum BackupAction {
    /// Print an archive's manifest (verified when a key is given).
    Inspect {
        /// The archive: a file path or an object storage URL.
        url: String,
        /// The backup key, to verify the archive's contents against its manifest.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// List the archives in a folder with their manifests.
    List {
        /// The folder: a directory or an object storage URL (az://, s3://, gs://).
        url: String,
    },
    /// Make a new random backup key (an age X25519 key): into a new file readable only by
    /// you with --out, else on standard output.
    NewKey {
        /// The key file to create (mode 0600); an existing file is never overwritten.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The archive: a file path or an object storage URL (as for `backup --to`).
    #[arg(long)]
    pub from: String,
    /// The backup key the archive was made with; default GATEHOUSE_BACKUP_KEY.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Restore into a different tier than the archive's.
    #[arg(long)]
    pub allow_tier_change: bool,
    /// Show what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The object storage key; default GATEHOUSE_STORAGE_KEY.
    #[arg(long)]
    pub access_key: Option<String>,
    /// From a continuous archive (`--from` names its container): the newest point in it.
    #[arg(long, conflicts_with_all = ["to_revision", "to_time"])]
    pub latest: bool,
    /// From a continuous archive: the state at this revision.
    #[arg(long, conflicts_with = "to_time")]
    pub to_revision: Option<u64>,
    /// From a continuous archive: the state at this time (RFC 3339, e.g. 2026-12-01T10:00:00Z).
    #[arg(long)]
    pub to_time: Option<String>,
    /// With a gap in the continuous archive, restore to the last revision before it.
    #[arg(long)]
    pub allow_gap: bool,
}

#[derive(Args, Debug)]
pub struct DrillArgs {
    /// The continuous archive (as `serve --archive`).
    #[arg(long)]
    pub from: String,
    /// The archive's age key file.
    #[arg(long)]
    pub key_file: PathBuf,
    /// Fail when the last archived change is older than this.
    #[arg(long)]
    pub max_rpo_seconds: Option<f64>,
    /// Fail when restoring and starting the instance takes longer than this.
    #[arg(long)]
    pub max_rto_seconds: Option<f64>,
    /// The object storage key; default GATEHOUSE_STORAGE_KEY.
    #[arg(long)]
    pub access_key: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token; its value is printed this once.
    Create {
        /// reader (GET only, no secrets), contributor (changes resources) or operator
        /// (backup, restore, freeze, move).
        #[arg(long)]
        role: String,
        /// When it stops working: a duration (30d, 12h, 90m) or an RFC 3339 time.
        #[arg(long)]
        expires: Option<String>,
        /// What the token is for, shown by `token list`.
        #[arg(long)]
        description: Option<String>,
    },
    /// List the tokens: id, role, expiry, description (never their values).
    List,
    /// Revoke a token by its id: it stops working at once.
    Revoke {
        /// The token's id, as `token list` shows it.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Delete the instance: it stops serving, and its data directory is marked deleted so that
    /// it does not start again by accident.
    Delete {
        /// Confirm the deletion (nothing is deleted without it).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApiCmd {
    #[command(flatten)]
    Common(Common),
    /// Create or replace an API from an OpenAPI (3.x or Swagger 2) document, JSON or YAML.
    Import {
        /// The API's id.
        #[arg(long)]
        id: String,
        /// The document's file (OpenAPI 3.x or Swagger 2, JSON or YAML).
        #[arg(long)]
        openapi: String,
        /// URL path suffix of the API on the gateway (default: the id).
        #[arg(long)]
        path: Option<String>,
        /// The backend's base URL (default: the document's first server).
        #[arg(long)]
        service_url: Option<String>,
        /// Protocols the gateway serves the API on (APIM's default: https only).
        #[arg(long, value_delimiter = ',', default_value = "https")]
        protocols: Vec<String>,
    },
    /// Create or replace an API from its properties (displayName, path, serviceUrl, protocols).
    Create {
        /// The API's id.
        id: String,
        #[command(flatten)]
        props: Properties,
    },
    /// Print the API as an OpenAPI 3 document.
    Export {
        /// The API's id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProductCmd {
    #[command(flatten)]
    Common(Common),
    /// Create or replace a product.
    Create {
        /// The product's id.
        id: String,
        /// The name developers see.
        #[arg(long)]
        display_name: String,
        /// Open product: no subscription key needed.
        #[arg(long)]
        open: bool,
        /// Publish it (developers can see it and subscribe); else it stays notPublished.
        #[arg(long)]
        publish: bool,
    },
    /// Add an API to a product.
    AddApi {
        /// The product's id.
        product: String,
        /// The API's id.
        api: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SubscriptionCmd {
    #[command(flatten)]
    Common(Common),
    /// Create a subscription with new random keys.
    Create {
        /// The subscription's id.
        id: String,
        /// /apis, /apis/{id} or /products/{id}
        #[arg(long)]
        scope: String,
        /// The subscription's name (default: the id).
        #[arg(long)]
        display_name: Option<String>,
        /// Owner user id.
        #[arg(long)]
        owner: Option<String>,
        /// Leave the subscription in state 'submitted' instead of 'active'.
        #[arg(long)]
        submitted: bool,
    },
    /// Show the subscription's primary and secondary keys.
    Keys {
        /// The subscription's id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    #[command(flatten)]
    Common(Common),
    /// Create or replace a user.
    Create {
        /// The user's id.
        id: String,
        /// The user's email address (unique on the instance).
        #[arg(long)]
        email: String,
        /// The user's first name.
        #[arg(long)]
        first_name: String,
        /// The user's last name.
        #[arg(long)]
        last_name: String,
        /// Read the password from this environment variable (never from a flag).
        #[arg(long)]
        password_env: Option<String>,
    },
}

/// The commands of a kind of resource whose create takes its properties as they are.
#[derive(Subcommand, Debug)]
pub enum ResourceCmd {
    #[command(flatten)]
    Common(Common),
    /// Create one, or replace it, with the properties given.
    Create {
        /// Its id.
        id: String,
        #[command(flatten)]
        props: Properties,
    },
}

/// The commands every kind of resource has (create's flags differ by kind).
#[derive(Subcommand, Debug)]
pub enum Common {
    /// List them (a table; every property with --json).
    List,
    /// Show one.
    Show {
        /// Its id.
        id: String,
    },
    /// Change the properties given and keep the others.
    Update {
        /// Its id.
        id: String,
        #[command(flatten)]
        props: Properties,
    },
    /// Delete one.
    Delete {
        /// Its id.
        id: String,
    },
}

/// A resource's properties, as APIM names them (displayName, url, secret …).
#[derive(Args, Debug, Clone, Default)]
pub struct Properties {
    /// A property: NAME=VALUE; VALUE is JSON when it is a number, true/false, null, array or
    /// object, else text (quote it as JSON to force text). Repeatable.
    #[arg(long, value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// A property whose value is a file's text (a PEM certificate, say): NAME=FILE. Repeatable.
    #[arg(long, value_name = "NAME=FILE")]
    pub set_file: Vec<String>,
    /// A property whose value is an environment variable's, so that a secret never sits on
    /// the command line: NAME=VARIABLE. Repeatable.
    #[arg(long, value_name = "NAME=VARIABLE")]
    pub set_env: Vec<String>,
    /// A JSON file with the properties object (or a whole resource body), - for standard
    /// input; --set and its kin apply after it.
    #[arg(long)]
    pub body: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Print a policy's XML (the global policy without a scope flag).
    Show(PolicyScope),
    /// Create or replace a policy from an XML file; it is checked before it is saved.
    #[command(visible_aliases = ["create", "update"])]
    Set {
        #[command(flatten)]
        scope: PolicyScope,
        /// The policy document (XML), or - for standard input.
        #[arg(long)]
        file: String,
    },
    /// Delete a policy: the scope then runs only what its parents' policies do.
    Delete(PolicyScope),
}

/// Which policy: none of the flags for the global one.
#[derive(Args, Debug, Clone, Default)]
pub struct PolicyScope {
    /// An API's policy (with --operation: one of its operations').
    #[arg(long)]
    pub api: Option<String>,
    /// An operation's policy (with --api).
    #[arg(long)]
    pub operation: Option<String>,
    /// A product's policy.
    #[arg(long)]
    pub product: Option<String>,
}
