//! Configuration: flags over `GATEHOUSE_*` variables over `gatehouse.toml` over defaults. The
//! one place that reads the environment (`env_value`): the libraries are given what they need.

use crate::args::{ServeArgs, Target};
pub(crate) use crate::env::env_value;
use anyhow::{Context, Result, anyhow};
use gatehouse_gateway::GatewayConfig;
use gatehouse_management::Bootstrap;
use gatehouse_server::ServeConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    pub portal_listen: Option<SocketAddr>,
    pub portal_url: Option<String>,
    pub smtp_url: Option<String>,
    pub smtp_from: Option<String>,
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
    pub arm_subscription_id: Option<String>,
    pub arm_resource_group: Option<String>,
    pub secret_source: Option<String>,
    pub secret_source_token_file: Option<PathBuf>,
    pub secret_refresh_seconds: Option<u64>,
    pub journal_retention_seconds: Option<u64>,
    pub identity_token_url: Option<String>,
    pub identity_client_id: Option<String>,
    pub identity_client_secret_file: Option<PathBuf>,
    pub identity_imds: Option<bool>,
    pub entra_authority: Option<String>,
    pub store: Option<String>,
    pub store_wait_seconds: Option<u64>,
}

/// The shared store's URL, checked: PostgreSQL's, or none for the embedded store.
fn store_url(args: &ServeArgs, f: Option<&FileConfig>) -> Result<Option<String>> {
    let Some(url) = args
        .store
        .clone()
        .or_else(|| f.and_then(|f| f.store.clone()))
    else {
        return Ok(None);
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Some(url));
    }
    Err(anyhow!(
        "--store must be a PostgreSQL URL (postgres://user@host/database), not '{}'; without --store the embedded store in the data directory is used",
        gatehouse_store::pg::redact_url(&url)
    ))
}

/// authentication-managed-identity's token source, from the flags (over `gatehouse.toml`).
fn identity_source(
    flags: &crate::args::GatewayFlags,
    f: Option<&FileConfig>,
) -> Result<Option<gatehouse_gateway::IdentitySource>> {
    if flags.identity_imds || f.and_then(|f| f.identity_imds).unwrap_or(false) {
        return Ok(Some(gatehouse_gateway::IdentitySource::Imds {
            endpoint: gatehouse_gateway::IMDS_ENDPOINT.into(),
        }));
    }
    let Some(token_url) = flags
        .identity_token_url
        .clone()
        .or_else(|| f.and_then(|f| f.identity_token_url.clone()))
    else {
        return Ok(None);
    };
    if !(token_url.starts_with("https://") || token_url.starts_with("http://")) {
        return Err(anyhow!(
            "--identity-token-url must be an http(s) URL, not '{token_url}'"
        ));
    }
    let client_id = flags
        .identity_client_id
        .clone()
        .or_else(|| f.and_then(|f| f.identity_client_id.clone()))
        .ok_or_else(|| anyhow!("--identity-token-url needs --identity-client-id"))?;
    let secret_file = flags
        .identity_client_secret_file
        .clone()
        .or_else(|| f.and_then(|f| f.identity_client_secret_file.clone()));
    let client_secret = match secret_file {
        Some(path) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the identity client secret file {}", path.display()))?
            .trim()
            .to_string(),
        None => env_value("GATEHOUSE_IDENTITY_CLIENT_SECRET").ok_or_else(|| {
            anyhow!("--identity-token-url needs a client secret: --identity-client-secret-file or GATEHOUSE_IDENTITY_CLIENT_SECRET")
        })?,
    };
    Ok(Some(gatehouse_gateway::IdentitySource::ClientCredentials {
        token_url,
        client_id,
        client_secret,
    }))
}

/// `--secret-source` with its token file, if any.
fn secret_source(
    args: &ServeArgs,
    f: Option<&FileConfig>,
) -> Result<Option<gatehouse_management::secret_source::SecretSource>> {
    let Some(url) = args
        .secret_source
        .clone()
        .or_else(|| f.and_then(|f| f.secret_source.clone()))
    else {
        return Ok(None);
    };
    let token = match args
        .secret_source_token_file
        .clone()
        .or_else(|| f.and_then(|f| f.secret_source_token_file.clone()))
    {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "cannot read the secret source token file {}",
                        path.display()
                    )
                })?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    gatehouse_management::secret_source::SecretSource::parse(&url, token)
        .map(Some)
        .map_err(|e| anyhow!("--secret-source: {e}"))
}

pub(crate) fn data_dir_of(target: &Target, file: Option<&FileConfig>) -> PathBuf {
    target
        .data_dir
        .clone()
        .or_else(|| file.and_then(|f| f.data_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("./gatehouse-data"))
}

pub(crate) fn load_file_config(path: Option<&Path>) -> Result<Option<FileConfig>> {
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
pub(crate) fn pem_pair(
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
pub(crate) fn management_listener(
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
        store_url: store_url(args, f)?,
        archive: crate::archive::serve_settings(args)?,
        store_wait: std::time::Duration::from_secs(
            args.store_wait_seconds
                .or_else(|| f.and_then(|f| f.store_wait_seconds))
                .unwrap_or(gatehouse_server::DEFAULT_STORE_WAIT.as_secs()),
        ),
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
            .gateway
            .gateway_listen
            .or_else(|| f.and_then(|f| f.gateway_listen))
            .unwrap_or_else(|| "127.0.0.1:8000".parse().expect("valid")),
        portal_listen: (!args.no_portal).then(|| {
            args.portal_listen
                .or_else(|| f.and_then(|f| f.portal_listen))
                .unwrap_or_else(|| "127.0.0.1:8002".parse().expect("valid"))
        }),
        portal_url: pick(&args.portal_url, f.map(|f| &f.portal_url)),
        smtp_url: pick(&args.smtp_url, f.map(|f| &f.smtp_url)),
        smtp_from: pick(&args.smtp_from, f.map(|f| &f.smtp_from)),
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
        secret_source: secret_source(args, f)?,
        journal_retention: args
            .journal_retention_seconds
            .or_else(|| f.and_then(|f| f.journal_retention_seconds))
            .map_or(
                gatehouse_server::DEFAULT_JOURNAL_RETENTION,
                std::time::Duration::from_secs,
            ),
        secret_refresh: std::time::Duration::from_secs(
            args.secret_refresh_seconds
                .or_else(|| f.and_then(|f| f.secret_refresh_seconds))
                .unwrap_or(4 * 3600)
                .max(1),
        ),
        arm_scope: gatehouse_management::arm::ArmScope {
            subscription: pick(&args.arm_subscription_id, f.map(|f| &f.arm_subscription_id)),
            resource_group: pick(&args.arm_resource_group, f.map(|f| &f.arm_resource_group)),
        },
        management_limits,
        management_tls,
        insecure_management,
        gateway: GatewayConfig {
            tls: pem_pair(
                args.gateway
                    .gateway_tls_cert
                    .clone()
                    .or_else(|| f.and_then(|f| f.gateway_tls_cert.clone())),
                args.gateway
                    .gateway_tls_key
                    .clone()
                    .or_else(|| f.and_then(|f| f.gateway_tls_key.clone())),
                "gateway",
            )?,
            header_read_timeout: management_limits.header_read_timeout,
            max_connections: args
                .gateway_max_connections
                .or_else(|| f.and_then(|f| f.gateway_max_connections))
                .unwrap_or(gatehouse_listen::Limits::GATEWAY.max_connections),
            access_log: pick(&args.gateway.access_log, f.map(|f| &f.access_log)),
            max_header_bytes: args
                .max_header_bytes
                .or_else(|| f.and_then(|f| f.max_header_bytes))
                .unwrap_or(GatewayConfig::default().max_header_bytes),
            backend_ca: args
                .gateway
                .backend_ca
                .clone()
                .or_else(|| f.and_then(|f| f.backend_ca.clone())),
            counters: counters_url(&args.gateway)?,
            workers: args
                .gateway
                .gateway_workers
                .or_else(|| f.and_then(|f| f.gateway_workers))
                .unwrap_or(0),
            identity: identity_source(&args.gateway, f)?,
            entra_authority: args
                .gateway
                .entra_authority
                .clone()
                .or_else(|| f.and_then(|f| f.entra_authority.clone())),
            ..GatewayConfig::default()
        },
    })
}

/// What `gatehouse gateway` runs, from its flags and environment.
pub fn regional_config(
    target: &Target,
    args: &crate::args::GatewayArgs,
) -> Result<gatehouse_regional::RegionalConfig> {
    Ok(gatehouse_regional::RegionalConfig {
        primary: args.primary.clone(),
        gateway_id: args.gateway_id.clone(),
        token_file: args.token_file.clone(),
        data_dir: data_dir_of(target, None),
        gateway_listen: args
            .gateway
            .gateway_listen
            .unwrap_or_else(|| "127.0.0.1:8000".parse().expect("valid")),
        region: args.region.clone(),
        primary_ca: target.ca_file.clone(),
        metrics_listen: args.metrics_listen,
        gateway: GatewayConfig {
            tls: pem_pair(
                args.gateway.gateway_tls_cert.clone(),
                args.gateway.gateway_tls_key.clone(),
                "gateway",
            )?,
            access_log: args.gateway.access_log.clone(),
            backend_ca: args.gateway.backend_ca.clone(),
            workers: args.gateway.gateway_workers.unwrap_or(0),
            counters: counters_url(&args.gateway)?,
            identity: identity_source(&args.gateway, None)?,
            entra_authority: args.gateway.entra_authority.clone(),
            ..GatewayConfig::default()
        },
    })
}

/// `--counters`: a `redis://` URL (checked here, so a typo stops the start with one line).
fn counters_url(flags: &crate::args::GatewayFlags) -> Result<Option<String>> {
    match &flags.counters {
        Some(url) if !url.starts_with("redis://") => Err(anyhow!(
            "--counters must be a redis:// URL (redis://HOST:PORT), not '{url}'"
        )),
        other => Ok(other.clone()),
    }
}
