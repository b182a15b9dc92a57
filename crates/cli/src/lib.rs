//! The `gatehouse` binary: `serve` runs an instance; every other command is a client of a
//! running instance's management API. Argument parsing, wiring and output only — the rules
//! live in the management crate.

pub use gatehouse_client as client;
pub mod instance;
mod moving;
mod offline;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Parser, Subcommand};
use client::{Client, path_segment as seg};
use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use gatehouse_gateway::GatewayConfig;
use gatehouse_management::Bootstrap;
use instance::{Instance, ServeConfig};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// GET a path of the management API (relative to the service).
    Get { path: String },
    /// PUT a path with a JSON body.
    Put {
        path: String,
        /// File with the JSON body, or - for standard input.
        #[arg(long)]
        body: Option<String>,
    },
    /// PATCH a path with a JSON body.
    Patch {
        path: String,
        #[arg(long)]
        body: Option<String>,
    },
    /// DELETE a path.
    Delete { path: String },
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
    /// Groups.
    #[command(subcommand)]
    Group(ListOnly),
    /// Named values.
    #[command(subcommand, name = "namedvalue")]
    NamedValue(ListOnly),
    /// Back up an instance's data directory to an archive, or inspect and list archives.
    Backup(BackupArgs),
    /// Restore an archive into an instance's data directory (the instance must be stopped).
    Restore(RestoreArgs),
    /// Move the instance to another region, machine or cloud: back up, restore into the
    /// target, replay later changes, verify, switch DNS, drain and delete the source.
    Move(Box<moving::MoveArgs>),
    /// Scoped access tokens of the management API (the admin token manages them).
    #[command(subcommand)]
    Token(TokenCmd),
    /// The change journal after a revision.
    Journal {
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
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
    #[arg(long, env = "GATEHOUSE_PUBLISHER_EMAIL")]
    pub publisher_email: Option<String>,
    #[arg(long, env = "GATEHOUSE_PUBLISHER_NAME")]
    pub publisher_name: Option<String>,
    /// Management API listen address (port 0 picks a free port).
    #[arg(long, env = "GATEHOUSE_MANAGEMENT_LISTEN")]
    pub management_listen: Option<SocketAddr>,
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
    /// Extra trusted root certificates (PEM) for HTTPS backends.
    #[arg(long, env = "GATEHOUSE_BACKEND_CA")]
    pub backend_ca: Option<PathBuf>,
    /// Gateway worker threads, each serving its share of client connections (default: one per
    /// CPU).
    #[arg(long, env = "GATEHOUSE_GATEWAY_WORKERS")]
    pub gateway_workers: Option<usize>,
    /// The default backup key: an age key file or a file holding a passphrase (else
    /// GATEHOUSE_BACKUP_KEY).
    #[arg(long, env = "GATEHOUSE_BACKUP_KEY_FILE")]
    pub backup_key_file: Option<PathBuf>,
}

/// `gatehouse.toml`: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub name: Option<String>,
    pub region: Option<String>,
    pub sku: Option<String>,
    pub capacity: Option<u32>,
    pub publisher_email: Option<String>,
    pub publisher_name: Option<String>,
    pub management_listen: Option<SocketAddr>,
    pub gateway_listen: Option<SocketAddr>,
    /// `[storage-accounts.NAME]` tables: `url` and `access-key`.
    #[serde(default)]
    pub storage_accounts:
        std::collections::HashMap<String, gatehouse_management::operations::StorageAccount>,
    pub gateway_tls_cert: Option<PathBuf>,
    pub gateway_tls_key: Option<PathBuf>,
    pub access_log: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub header_read_timeout: Option<u64>,
    pub gateway_max_connections: Option<usize>,
    pub management_max_connections: Option<usize>,
    pub management_tls_cert: Option<PathBuf>,
    pub management_tls_key: Option<PathBuf>,
    pub insecure_management: Option<bool>,
    pub backend_ca: Option<PathBuf>,
    pub gateway_workers: Option<usize>,
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
        url: String,
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// List the archives in a folder with their manifests.
    List { url: String },
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
        #[arg(long)]
        description: Option<String>,
    },
    List,
    /// Revoke a token by its id: it stops working at once.
    Revoke {
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
    List,
    Show {
        id: String,
    },
    /// Create or replace an API from an OpenAPI (3.x or Swagger 2) document, JSON or YAML.
    Import {
        #[arg(long)]
        id: String,
        #[arg(long)]
        openapi: String,
        /// URL path suffix of the API on the gateway (default: the id).
        #[arg(long)]
        path: Option<String>,
        #[arg(long)]
        service_url: Option<String>,
        /// Protocols the gateway serves the API on (APIM's default: https only).
        #[arg(long, value_delimiter = ',', default_value = "https")]
        protocols: Vec<String>,
    },
    /// Print the API as an OpenAPI 3 document.
    Export {
        id: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProductCmd {
    List,
    Create {
        id: String,
        #[arg(long)]
        display_name: String,
        /// Open product: no subscription key needed.
        #[arg(long)]
        open: bool,
        #[arg(long)]
        publish: bool,
    },
    /// Add an API to a product.
    AddApi {
        product: String,
        api: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SubscriptionCmd {
    List,
    Create {
        id: String,
        /// /apis, /apis/{id} or /products/{id}
        #[arg(long)]
        scope: String,
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
        id: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    List,
    Create {
        id: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        first_name: String,
        #[arg(long)]
        last_name: String,
        /// Read the password from this environment variable (never from a flag).
        #[arg(long)]
        password_env: Option<String>,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ListOnly {
    List,
}

/// A non-empty environment variable. The CLI is the one place that reads the environment
/// (configuration); the library crates are given what they need.
#[allow(clippy::disallowed_methods)]
pub(crate) fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Parses arguments, runs the command and maps failure to one line and exit code 1.
pub fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let json_out = cli.json;
    match runtime.block_on(execute(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            report_error(&e, json_out);
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error on standard error: one line (`error: CODE: message`), or with `--json` one JSON
/// object `{"error": {"code", "message", "status"}}` (the status when the API answered).
fn report_error(e: &anyhow::Error, json_out: bool) {
    let api = e.downcast_ref::<client::ApiFailure>();
    let message = match api {
        Some(f) => format!("{}{}", f.message, f.details),
        None => format!("{e:#}"),
    };
    if json_out {
        let body = json!({"error": {
            "code": api.map_or("Error", |f| f.code.as_str()),
            "message": message,
            "status": api.map(|f| f.status),
        }});
        eprintln!("{body}");
    } else {
        match api {
            Some(f) => eprintln!("error: {}: {message}", f.code),
            None => eprintln!("error: {message}"),
        }
    }
}

fn data_dir_of(target: &Target, file: Option<&FileConfig>) -> PathBuf {
    target
        .data_dir
        .clone()
        .or_else(|| file.and_then(|f| f.data_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("./gatehouse-data"))
}

fn load_file_config(path: Option<&Path>) -> Result<Option<FileConfig>> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from("gatehouse.toml"), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let cfg: FileConfig =
                toml::from_str(&text).with_context(|| format!("{} is invalid", path.display()))?;
            Ok(Some(cfg))
        }
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// A certificate and key given together, or neither.
fn pem_pair(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    flag: &str,
) -> Result<Option<(PathBuf, PathBuf)>> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        _ => anyhow::bail!("--{flag}-tls-cert and --{flag}-tls-key go together"),
    }
}

/// The management listener's settings: limits, TLS, and whether plain HTTP may leave loopback.
fn management_listener(
    args: &ServeArgs,
    f: Option<&FileConfig>,
) -> Result<(
    gatehouse_listen::Limits,
    Option<gatehouse_listen::tls::PemFiles>,
    bool,
)> {
    let defaults = gatehouse_listen::Limits::MANAGEMENT;
    let limits = gatehouse_listen::Limits {
        header_read_timeout: args
            .header_read_timeout
            .or_else(|| f.and_then(|f| f.header_read_timeout))
            .map_or(defaults.header_read_timeout, std::time::Duration::from_secs),
        max_header_bytes: args
            .max_header_bytes
            .or_else(|| f.and_then(|f| f.max_header_bytes))
            .unwrap_or(defaults.max_header_bytes),
        max_connections: args
            .management_max_connections
            .or_else(|| f.and_then(|f| f.management_max_connections))
            .unwrap_or(defaults.max_connections),
    };
    let tls = pem_pair(
        args.management_tls_cert
            .clone()
            .or_else(|| f.and_then(|f| f.management_tls_cert.clone())),
        args.management_tls_key
            .clone()
            .or_else(|| f.and_then(|f| f.management_tls_key.clone())),
        "management",
    )?
    .map(|(cert, key)| gatehouse_listen::tls::PemFiles { cert, key });
    let insecure =
        args.insecure_management || f.and_then(|f| f.insecure_management).unwrap_or(false);
    Ok((limits, tls, insecure))
}

/// Merges flags/environment (clap) over `gatehouse.toml` over defaults.
pub fn serve_config(target: &Target, args: &ServeArgs) -> Result<ServeConfig> {
    let file = load_file_config(args.config.as_deref())?;
    let f = file.as_ref();
    let (management_limits, management_tls, insecure_management) = management_listener(args, f)?;
    let pick = |a: &Option<String>, b: Option<&Option<String>>| {
        a.clone().or_else(|| b.and_then(|x| x.clone()))
    };
    Ok(ServeConfig {
        data_dir: data_dir_of(target, f),
        bootstrap: Bootstrap {
            name: pick(&args.name, f.map(|f| &f.name)),
            region: pick(&args.region, f.map(|f| &f.region)),
            sku: pick(&args.sku, f.map(|f| &f.sku)),
            capacity: args.capacity.or_else(|| f.and_then(|f| f.capacity)),
            publisher_email: pick(&args.publisher_email, f.map(|f| &f.publisher_email)),
            publisher_name: pick(&args.publisher_name, f.map(|f| &f.publisher_name)),
        },
        management_listen: args
            .management_listen
            .or_else(|| f.and_then(|f| f.management_listen))
            .unwrap_or_else(|| "127.0.0.1:8001".parse().expect("valid")),
        gateway_listen: args
            .gateway_listen
            .or_else(|| f.and_then(|f| f.gateway_listen))
            .unwrap_or_else(|| "127.0.0.1:8000".parse().expect("valid")),
        admin_token: env_value("GATEHOUSE_ADMIN_TOKEN"),
        storage_accounts: f.map(|f| f.storage_accounts.clone()).unwrap_or_default(),
        backup_key: match &args.backup_key_file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read the backup key file {}", f.display()))?;
                let line = text
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('#'))
                    .unwrap_or("")
                    .to_string();
                gatehouse_backup::BackupKey::parse(&line)
                    .map_err(|e| anyhow!("{}: {e}", f.display()))?;
                Some(line)
            }
            None => env_value("GATEHOUSE_BACKUP_KEY"),
        },
        s3_region: env_value("AWS_REGION"),
        management_limits,
        management_tls,
        insecure_management,
        gateway: GatewayConfig {
            tls: pem_pair(
                args.gateway_tls_cert
                    .clone()
                    .or_else(|| f.and_then(|f| f.gateway_tls_cert.clone())),
                args.gateway_tls_key
                    .clone()
                    .or_else(|| f.and_then(|f| f.gateway_tls_key.clone())),
                "gateway",
            )?,
            header_read_timeout: management_limits.header_read_timeout,
            max_connections: args
                .gateway_max_connections
                .or_else(|| f.and_then(|f| f.gateway_max_connections))
                .unwrap_or(gatehouse_listen::Limits::GATEWAY.max_connections),
            access_log: pick(&args.access_log, f.map(|f| &f.access_log)),
            max_header_bytes: args
                .max_header_bytes
                .or_else(|| f.and_then(|f| f.max_header_bytes))
                .unwrap_or(GatewayConfig::default().max_header_bytes),
            backend_ca: args
                .backend_ca
                .clone()
                .or_else(|| f.and_then(|f| f.backend_ca.clone())),
            workers: args
                .gateway_workers
                .or_else(|| f.and_then(|f| f.gateway_workers))
                .unwrap_or(0),
            ..GatewayConfig::default()
        },
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve(target: &Target, args: &ServeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = serve_config(target, args)?;
    let instance = Instance::start(config).await?;
    println!("management API: {}", instance.management_url);
    println!("gateway:        {}", instance.gateway_url);
    println!(
        "admin token:    {}",
        instance
            .data_dir
            .join(gatehouse_model::files::ADMIN_TOKEN)
            .display()
    );
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down: finishing requests in flight"),
        _ = instance.deleted() => tracing::info!("the service was deleted: finishing requests in flight"),
    }
    instance.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

fn read_body(arg: Option<&str>) -> Result<Value> {
    let text = match arg {
        None => return Ok(json!({})),
        Some("-") => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("cannot read standard input")?;
            s
        }
        Some(file) => {
            std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
        }
    };
    serde_json::from_str(&text).map_err(|e| anyhow!("the body is not valid JSON: {e}"))
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints resources as a table with the given property columns.
fn print_table(items: &[Value], columns: &[(&str, &str)]) {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic);
    let mut header = vec!["ID"];
    header.extend(columns.iter().map(|(h, _)| *h));
    t.set_header(header);
    for item in items {
        let mut row = vec![
            item.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ];
        for (_, field) in columns {
            let v = item
                .get("properties")
                .and_then(|p| p.get(*field))
                .cloned()
                .unwrap_or(Value::Null);
            row.push(match v {
                Value::Null => String::new(),
                Value::String(s) => s,
                Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            });
        }
        t.add_row(row);
    }
    println!("{t}");
    println!("{} item(s)", items.len());
}

async fn show_list(
    client: &Client,
    path: &str,
    json_out: bool,
    columns: &[(&str, &str)],
) -> Result<()> {
    let items = client.list_all(path).await?;
    if json_out {
        print_json(&Value::Array(items));
    } else {
        print_table(&items, columns);
    }
    Ok(())
}

async fn execute(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Serve(args) => return serve(&cli.target, args).await,
        Command::Backup(args) => return offline::backup(&cli.target, args, cli.json).await,
        Command::Restore(args) => return offline::restore(&cli.target, args, cli.json).await,
        Command::Move(args) => {
            return moving::run(args, cli.json, cli.target.ca_file.as_deref()).await;
        }
        _ => {}
    }
    let data_dir = data_dir_of(&cli.target, None);
    let client = Client::locate(
        cli.target.url.as_deref(),
        cli.target.token.as_deref(),
        &data_dir,
        cli.target.ca_file.as_deref(),
    )?;
    let j = cli.json;
    match cli.command {
        Command::Serve(_) | Command::Backup(_) | Command::Restore(_) | Command::Move(_) => {
            unreachable!("handled above")
        }
        Command::Get { path } => print_json(&client.get(&path).await?),
        Command::Put { path, body } => {
            print_json(&client.put(&path, &read_body(body.as_deref())?).await?)
        }
        Command::Patch { path, body } => print_json(
            &client
                .send(
                    reqwest::Method::PATCH,
                    &path,
                    Some(&read_body(body.as_deref())?),
                )
                .await?,
        ),
        Command::Delete { path } => {
            deleted(client.delete(&path).await?, &path)?;
            println!("deleted {path}");
        }
        Command::Service {
            action: Some(ServiceCmd::Delete { yes }),
        } => {
            let s = client.get("/").await?;
            let name = s["name"].as_str().unwrap_or_default();
            if !yes {
                return Err(anyhow!(
                    "deleting the service '{name}' stops it and marks its data deleted: run again with --yes to confirm"
                ));
            }
            client
                .send(
                    reqwest::Method::DELETE,
                    &format!("/?confirm={}", seg(name)),
                    None,
                )
                .await?;
            println!("deleted the service '{name}'");
        }
        Command::Service { action: None } => {
            let s = client.get("/").await?;
            if j {
                print_json(&s);
            } else {
                let p = &s["properties"];
                println!("name:       {}", s["name"].as_str().unwrap_or(""));
                println!("region:     {}", s["location"].as_str().unwrap_or(""));
                println!(
                    "sku:        {} ({} unit(s))",
                    s["sku"]["name"].as_str().unwrap_or(""),
                    s["sku"]["capacity"]
                );
                println!("gateway:    {}", p["gatewayUrl"].as_str().unwrap_or(""));
                println!(
                    "management: {}",
                    p["managementApiUrl"].as_str().unwrap_or("")
                );
                println!("revision:   {}", p["revision"]);
            }
        }
        Command::Api(cmd) => match cmd {
            ApiCmd::List => {
                show_list(
                    &client,
                    "/apis",
                    j,
                    &[
                        ("DISPLAY NAME", "displayName"),
                        ("PATH", "path"),
                        ("SERVICE URL", "serviceUrl"),
                        ("REVISION", "apiRevision"),
                    ],
                )
                .await?
            }
            ApiCmd::Show { id } => print_json(&client.get(&format!("/apis/{}", seg(&id))).await?),
            ApiCmd::Import {
                id,
                openapi,
                path,
                service_url,
                protocols,
            } => {
                let doc = std::fs::read_to_string(&openapi)
                    .with_context(|| format!("cannot read {openapi}"))?;
                let format = if doc.trim_start().starts_with('{') {
                    if doc.contains("\"swagger\"") {
                        "swagger-json"
                    } else {
                        "openapi+json"
                    }
                } else {
                    "openapi"
                };
                let mut props = json!({"format": format, "value": doc, "path": path.unwrap_or_else(|| id.clone()), "protocols": protocols});
                if let Some(u) = service_url {
                    props["serviceUrl"] = json!(u);
                }
                let api = client
                    .put(
                        &format!("/apis/{}", seg(&id)),
                        &json!({"properties": props}),
                    )
                    .await?;
                let ops = client
                    .list_all(&format!("/apis/{}/operations", seg(&id)))
                    .await?;
                if j {
                    print_json(&api);
                } else {
                    println!(
                        "imported API '{id}' ({}) at path '/{}' with {} operation(s)",
                        api["properties"]["displayName"].as_str().unwrap_or(""),
                        api["properties"]["path"].as_str().unwrap_or(""),
                        ops.len()
                    );
                }
            }
            ApiCmd::Export { id } => print_json(
                &client
                    .get(&format!(
                        "/apis/{}?export=true&format=openapi%2Bjson",
                        seg(&id)
                    ))
                    .await?,
            ),
            ApiCmd::Delete { id } => {
                let gone = client.delete(&format!("/apis/{}", seg(&id))).await?;
                deleted(gone, &format!("API '{id}'"))?;
                println!("deleted API '{id}'");
            }
        },
        Command::Product(cmd) => match cmd {
            ProductCmd::List => {
                show_list(
                    &client,
                    "/products",
                    j,
                    &[
                        ("DISPLAY NAME", "displayName"),
                        ("STATE", "state"),
                        ("SUBSCRIPTION REQUIRED", "subscriptionRequired"),
                    ],
                )
                .await?
            }
            ProductCmd::Create {
                id,
                display_name,
                open,
                publish,
            } => {
                let body = json!({"properties": {"displayName": display_name, "subscriptionRequired": !open, "state": if publish {"published"} else {"notPublished"}}});
                let p = client
                    .put(&format!("/products/{}", seg(&id)), &body)
                    .await?;
                if j {
                    print_json(&p)
                } else {
                    println!("product '{id}' saved")
                }
            }
            ProductCmd::AddApi { product, api } => {
                client
                    .put(
                        &format!("/products/{}/apis/{}", seg(&product), seg(&api)),
                        &json!({}),
                    )
                    .await?;
                println!("API '{api}' added to product '{product}'");
            }
            ProductCmd::Delete { id } => {
                let gone = client
                    .delete(&format!("/products/{}?deleteSubscriptions=true", seg(&id)))
                    .await?;
                deleted(gone, &format!("product '{id}'"))?;
                println!("deleted product '{id}'");
            }
        },
        Command::Subscription(cmd) => match cmd {
            SubscriptionCmd::List => {
                show_list(
                    &client,
                    "/subscriptions",
                    j,
                    &[
                        ("DISPLAY NAME", "displayName"),
                        ("SCOPE", "scope"),
                        ("OWNER", "ownerId"),
                        ("STATE", "state"),
                    ],
                )
                .await?
            }
            SubscriptionCmd::Create {
                id,
                scope,
                display_name,
                owner,
                submitted,
            } => {
                let mut props = json!({"scope": scope, "displayName": display_name.unwrap_or_else(|| id.clone()), "state": if submitted {"submitted"} else {"active"}});
                if let Some(o) = owner {
                    props["ownerId"] = json!(format!("/users/{}", seg(&o)));
                }
                let s = client
                    .put(
                        &format!("/subscriptions/{}", seg(&id)),
                        &json!({"properties": props}),
                    )
                    .await?;
                if j {
                    print_json(&s)
                } else {
                    println!(
                        "subscription '{id}' saved (state {})",
                        s["properties"]["state"].as_str().unwrap_or("")
                    )
                }
            }
            SubscriptionCmd::Keys { id } => {
                let k = client
                    .post(&format!("/subscriptions/{}/listSecrets", seg(&id)))
                    .await?;
                if j {
                    print_json(&k);
                } else {
                    println!("primary:   {}", k["primaryKey"].as_str().unwrap_or(""));
                    println!("secondary: {}", k["secondaryKey"].as_str().unwrap_or(""));
                }
            }
            SubscriptionCmd::Delete { id } => {
                let gone = client
                    .delete(&format!("/subscriptions/{}", seg(&id)))
                    .await?;
                deleted(gone, &format!("subscription '{id}'"))?;
                println!("deleted subscription '{id}'");
            }
        },
        Command::User(cmd) => match cmd {
            UserCmd::List => {
                show_list(
                    &client,
                    "/users",
                    j,
                    &[
                        ("EMAIL", "email"),
                        ("FIRST NAME", "firstName"),
                        ("LAST NAME", "lastName"),
                        ("STATE", "state"),
                    ],
                )
                .await?
            }
            UserCmd::Create {
                id,
                email,
                first_name,
                last_name,
                password_env,
            } => {
                let mut props =
                    json!({"email": email, "firstName": first_name, "lastName": last_name});
                if let Some(var) = password_env {
                    let pw = env_value(&var)
                        .ok_or_else(|| anyhow!("the environment variable {var} is not set"))?;
                    props["password"] = json!(pw);
                }
                let u = client
                    .put(
                        &format!("/users/{}", seg(&id)),
                        &json!({"properties": props}),
                    )
                    .await?;
                if j {
                    print_json(&u)
                } else {
                    println!("user '{id}' saved")
                }
            }
            UserCmd::Delete { id } => {
                let gone = client
                    .delete(&format!("/users/{}?deleteSubscriptions=true", seg(&id)))
                    .await?;
                deleted(gone, &format!("user '{id}'"))?;
                println!("deleted user '{id}'");
            }
        },
        Command::Group(ListOnly::List) => {
            show_list(
                &client,
                "/groups",
                j,
                &[
                    ("DISPLAY NAME", "displayName"),
                    ("TYPE", "type"),
                    ("BUILT IN", "builtIn"),
                ],
            )
            .await?
        }
        Command::NamedValue(ListOnly::List) => {
            show_list(
                &client,
                "/namedValues",
                j,
                &[
                    ("DISPLAY NAME", "displayName"),
                    ("SECRET", "secret"),
                    ("VALUE", "value"),
                ],
            )
            .await?
        }
        Command::Token(cmd) => token(&client, cmd, j).await?,
        Command::Journal { since } => {
            let items = client.list_all(&format!("/journal?since={since}")).await?;
            if j {
                print_json(&Value::Array(items));
            } else {
                let mut t = Table::new();
                t.load_preset(UTF8_BORDERS_ONLY);
                t.set_header(vec!["REVISION", "TIME", "OPERATION", "RESOURCE"]);
                for e in &items {
                    t.add_row(vec![
                        e["revision"].to_string(),
                        e["timestamp"].as_str().unwrap_or("").to_string(),
                        e["operation"].as_str().unwrap_or("").to_string(),
                        e["resourceId"].as_str().unwrap_or("").to_string(),
                    ]);
                }
                println!("{t}");
                println!("{} entries", items.len());
            }
        }
    }
    Ok(())
}

/// An expiry as an RFC 3339 time: given as one, or as a duration from now (`30d`, `12h`,
/// `90m`, `600s`).
fn expiry(text: &str) -> Result<String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t.format(&Rfc3339)?);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| anyhow!("--expires must be a duration such as 30d, 12h or 90m, or an RFC 3339 time; '{text}' is neither"))?;
    let span = match unit {
        "d" => time::Duration::days(n),
        "h" => time::Duration::hours(n),
        "m" => time::Duration::minutes(n),
        "s" => time::Duration::seconds(n),
        _ => anyhow::bail!("--expires must end in d, h, m or s (or be an RFC 3339 time): '{text}'"),
    };
    Ok((time::OffsetDateTime::now_utc() + span).format(&Rfc3339)?)
}

async fn token(client: &Client, cmd: TokenCmd, json_out: bool) -> Result<()> {
    match cmd {
        TokenCmd::Create {
            role,
            expires,
            description,
        } => {
            let mut body = json!({"role": role, "description": description});
            if let Some(e) = expires {
                body["expires"] = json!(expiry(&e)?);
            }
            let t = client
                .send(reqwest::Method::POST, "/tokens", Some(&body))
                .await?;
            if json_out {
                print_json(&t);
            } else {
                println!(
                    "token {} ({}, expires {}):",
                    t["id"].as_str().unwrap_or(""),
                    t["role"].as_str().unwrap_or(""),
                    t["expires"].as_str().unwrap_or("never")
                );
                println!("{}", t["value"].as_str().unwrap_or(""));
                eprintln!("the value is shown only now: keep it safe");
            }
        }
        TokenCmd::List => {
            let list = client.get("/tokens").await?;
            if json_out {
                print_json(&list);
                return Ok(());
            }
            let mut t = Table::new();
            t.load_preset(UTF8_BORDERS_ONLY);
            t.set_header(vec!["ID", "ROLE", "CREATED", "EXPIRES", "DESCRIPTION"]);
            for item in list["value"].as_array().into_iter().flatten() {
                let cell = |k: &str| item[k].as_str().unwrap_or("").to_string();
                t.add_row(vec![
                    cell("id"),
                    cell("role"),
                    cell("created"),
                    cell("expires"),
                    cell("description"),
                ]);
            }
            println!("{t}");
        }
        TokenCmd::Revoke { id } => {
            client.delete(&format!("/tokens/{}", seg(&id))).await?;
            println!("revoked token '{id}'");
        }
    }
    Ok(())
}

/// A delete that found nothing is an error (the API answers 204 for it, as APIM does).
fn deleted(found: bool, what: &str) -> Result<()> {
    if found {
        Ok(())
    } else {
        Err(anyhow!("there is no {what}: nothing was deleted"))
    }
}
