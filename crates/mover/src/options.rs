//! What a move was asked to do. Kept in the move file so `--resume` needs nothing else; it
//! holds paths to token and key files, never the secrets themselves.

use crate::overlay::Overlay;
use anyhow::{Context, Result, bail};
use gatehouse_client::Client;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to reach one side of the move.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    /// A running instance's data directory (its `endpoints.json` and `admin-token`).
    DataDir(PathBuf),
    /// A management URL and a file holding its admin token (and, for a management API over
    /// HTTPS with a certificate of its own, the CA file to trust).
    Url {
        url: String,
        token_file: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_file: Option<PathBuf>,
    },
}

impl Side {
    pub fn client(&self) -> Result<Client> {
        match self {
            Side::DataDir(d) => Client::locate(None, None, d, None),
            Side::Url {
                url,
                token_file,
                ca_file,
            } => {
                let token = std::fs::read_to_string(token_file).with_context(|| {
                    format!("cannot read the token file {}", token_file.display())
                })?;
                Client::trusting(url, token.trim(), ca_file.as_deref())
            }
        }
    }

    pub fn data_dir(&self) -> Option<&Path> {
        match self {
            Side::DataDir(d) => Some(d),
            Side::Url { .. } => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Side::DataDir(d) => format!("the instance in {}", d.display()),
            Side::Url { url, .. } => url.clone(),
        }
    }
}

/// How the custom domain moves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum DnsMode {
    /// No custom domain: the report gives the target's gateway URL.
    None,
    /// RFC 2136 dynamic update to the zone's authoritative server, signed with TSIG.
    Rfc2136 {
        server: SocketAddr,
        zone: String,
        key_file: PathBuf,
    },
    /// The operator changes the record; the move prints the change and waits until `server`
    /// answers it.
    Manual { server: SocketAddr, zone: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MoveOptions {
    pub source: Side,
    pub target: Side,
    /// Where the archive goes: a folder path or URL (`file:///…`, `az://…`, `s3://…`, `s3+http://…`).
    pub storage: String,
    /// The archive's name inside `storage`.
    pub backup_name: String,
    /// The archive key file (a passphrase or an age secret key).
    pub key_file: PathBuf,
    /// Start from the source's continuous archive (the URL it was given as `--archive`)
    /// instead of a fresh backup: the backup step waits until the archive holds the source's
    /// revision, and the target restores exactly that revision from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_archive: Option<String>,
    /// APIM's option 2: the target takes the source's name and host names.
    #[serde(default)]
    pub same_name: bool,
    /// APIM's order for option 2: back up, delete the source, restore (downtime).
    #[serde(default)]
    pub delete_source_first: bool,
    #[serde(default)]
    pub keep_source: bool,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub allow_tier_change: bool,
    #[serde(default)]
    pub overlay: Option<Overlay>,
    pub dns: DnsMode,
    /// The custom domain whose CNAME moves (option 1), e.g. `api.contoso.com`.
    #[serde(default)]
    pub custom_domain: Option<String>,
    /// The target gateway's host name the CNAME points to; default: its first `Proxy` host
    /// name that is not the custom domain.
    #[serde(default)]
    pub target_host: Option<String>,
    /// The target gateway's IPv4 address, for a same-name move's A record; default: the host
    /// of its gateway URL.
    #[serde(default)]
    pub target_address: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    pub shadow: bool,
    /// How long the source refuses writes while the final delta is replayed.
    pub freeze_seconds: u64,
    /// The drain ends when the source gateway has served nothing for this long…
    pub quiet_ms: u64,
    /// …or after this long in any case.
    pub max_drain_ms: u64,
    /// The longest the cutover waits for the authoritative server to answer the new record.
    pub dns_wait_ms: u64,
}

impl MoveOptions {
    pub fn check(&self) -> Result<()> {
        if self.delete_source_first && !self.same_name {
            bail!("--delete-source-first is APIM's order for --same-name; add --same-name");
        }
        if self.delete_source_first && self.keep_source {
            bail!("--delete-source-first and --keep-source contradict each other");
        }
        if self.freeze_seconds == 0 || self.freeze_seconds > 3600 {
            bail!("--freeze-seconds must be from 1 to 3600");
        }
        match (&self.dns, &self.custom_domain, self.same_name) {
            (DnsMode::None, Some(d), _) => bail!(
                "--custom-domain {d} needs --dns (rfc2136://SERVER:PORT or manual://SERVER:PORT) to switch it"
            ),
            (DnsMode::Rfc2136 { .. } | DnsMode::Manual { .. }, None, false) => {
                bail!("--dns needs --custom-domain: the name whose CNAME moves to the target")
            }
            _ => {}
        }
        Ok(())
    }

    pub fn quiet(&self) -> Duration {
        Duration::from_millis(self.quiet_ms)
    }

    pub fn max_drain(&self) -> Duration {
        Duration::from_millis(self.max_drain_ms)
    }
}

/// Parses `--dns`: `rfc2136://HOST:PORT`, `manual://HOST:PORT` (the server to check against).
pub fn parse_dns(
    spec: Option<&str>,
    zone: Option<&str>,
    key_file: Option<&Path>,
) -> Result<DnsMode> {
    let Some(spec) = spec else {
        return Ok(DnsMode::None);
    };
    let zone = zone
        .ok_or_else(|| anyhow::anyhow!("--dns needs --dns-zone, the zone the record is in"))?
        .trim_end_matches('.')
        .to_string();
    let addr = |rest: &str| -> Result<SocketAddr> {
        let with_port = if rest.contains(':') {
            rest.to_string()
        } else {
            format!("{rest}:53")
        };
        with_port.parse().with_context(|| {
            format!("'{rest}' is not an address of a DNS server (use IP:PORT, e.g. 127.0.0.1:53)")
        })
    };
    if let Some(rest) = spec.strip_prefix("rfc2136://") {
        let key_file = key_file.ok_or_else(|| {
            anyhow::anyhow!(
                "--dns rfc2136:// needs --dns-key-file (ALGORITHM:NAME:SECRET, as for knsupdate -y)"
            )
        })?;
        crate::dns::TsigKey::read(key_file)?;
        return Ok(DnsMode::Rfc2136 {
            server: addr(rest)?,
            zone,
            key_file: key_file.to_path_buf(),
        });
    }
    if let Some(rest) = spec.strip_prefix("manual://") {
        return Ok(DnsMode::Manual {
            server: addr(rest)?,
            zone,
        });
    }
    bail!("--dns must be rfc2136://SERVER:PORT or manual://SERVER:PORT, not '{spec}'")
}
