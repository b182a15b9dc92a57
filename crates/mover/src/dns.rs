//! DNS for the cutover: read a record from the zone's authoritative server, and replace it with
//! an RFC 2136 dynamic UPDATE signed with TSIG (RFC 8945).
//!
//! Invariant: an update is a compare-and-swap against the value read just before, so a record
//! someone else changed meanwhile is never overwritten; a refused update changes nothing.

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use hickory_client::client::{Client, ClientHandle};
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::runtime::TokioRuntimeProvider;
use hickory_proto::udp::UdpClientStream;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// A TSIG key as `knsupdate -y` and `nsupdate -y` take it: `[ALGORITHM:]NAME:BASE64SECRET`.
#[derive(Clone)]
pub struct TsigKey {
    pub name: String,
    pub algorithm: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TsigKey({}:{}, secret hidden)",
            self.algorithm, self.name
        )
    }
}

fn algorithm_of(name: &str) -> Option<TsigAlgorithm> {
    match name.to_ascii_lowercase().as_str() {
        "hmac-sha256" => Some(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Some(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Some(TsigAlgorithm::HmacSha512),
        _ => None,
    }
}

impl TsigKey {
    pub fn parse(text: &str) -> Result<TsigKey> {
        let parts: Vec<&str> = text.trim().split(':').collect();
        let (algorithm, name, secret) = match parts.as_slice() {
            [name, secret] => ("hmac-sha256", *name, *secret),
            [alg, name, secret] => (*alg, *name, *secret),
            _ => bail!(
                "a TSIG key must be written ALGORITHM:NAME:BASE64SECRET (as for knsupdate -y)"
            ),
        };
        if algorithm_of(algorithm).is_none() {
            bail!(
                "the TSIG algorithm '{algorithm}' is not supported; use hmac-sha256, hmac-sha384 or hmac-sha512"
            );
        }
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|_| anyhow!("the TSIG secret of key '{name}' is not base64"))?;
        if name.is_empty() || secret.is_empty() {
            bail!("the TSIG key needs a name and a secret");
        }
        Ok(TsigKey {
            name: name.to_string(),
            algorithm: algorithm.to_ascii_lowercase(),
            secret,
        })
    }

    pub fn read(path: &std::path::Path) -> Result<TsigKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the TSIG key file {}", path.display()))?;
        TsigKey::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    fn signer(&self) -> Result<TSigner> {
        let alg = algorithm_of(&self.algorithm).ok_or_else(|| anyhow!("unsupported algorithm"))?;
        let name = Name::from_ascii(&self.name)
            .with_context(|| format!("'{}' is not a valid TSIG key name", self.name))?;
        TSigner::new(self.secret.clone(), alg, name, 300)
            .map_err(|e| anyhow!("cannot use the TSIG key: {e}"))
    }
}

/// A record value the cutover writes: a CNAME to a host name, or an A record to an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value")]
pub enum RecordValue {
    #[serde(rename = "CNAME")]
    Cname(String),
    #[serde(rename = "A")]
    A(Ipv4Addr),
}

impl RecordValue {
    pub fn record_type(&self) -> RecordType {
        match self {
            RecordValue::Cname(_) => RecordType::CNAME,
            RecordValue::A(_) => RecordType::A,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            RecordValue::Cname(_) => "CNAME",
            RecordValue::A(_) => "A",
        }
    }

    fn rdata(&self) -> Result<RData> {
        Ok(match self {
            RecordValue::Cname(host) => RData::CNAME(CNAME(fqdn(host)?)),
            RecordValue::A(ip) => RData::A(A(*ip)),
        })
    }

    /// The value as a zone file writes it.
    pub fn text(&self) -> String {
        match self {
            RecordValue::Cname(h) => format!("{}.", h.trim_end_matches('.')),
            RecordValue::A(ip) => ip.to_string(),
        }
    }
}

fn fqdn(name: &str) -> Result<Name> {
    let mut n = Name::from_ascii(name.trim_end_matches('.'))
        .with_context(|| format!("'{name}' is not a valid DNS name"))?;
    n.set_fqdn(true);
    Ok(n)
}

/// What the authoritative server answered for a name and type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub value: RecordValue,
    pub ttl: u32,
}

/// The zone's authoritative server, and the key updates are signed with.
#[derive(Debug, Clone)]
pub struct Authority {
    pub server: SocketAddr,
    pub zone: String,
    pub key: Option<TsigKey>,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl Authority {
    async fn client(&self, signed: bool) -> Result<Client> {
        let signer = match (&self.key, signed) {
            (Some(k), true) => {
                Some(Arc::new(k.signer()?) as Arc<dyn hickory_proto::op::MessageFinalizer>)
            }
            _ => None,
        };
        let stream = UdpClientStream::builder(self.server, TokioRuntimeProvider::default())
            .with_timeout(Some(TIMEOUT))
            .with_signer(signer)
            .build();
        let (client, background) = Client::connect(stream)
            .await
            .with_context(|| format!("cannot reach the DNS server {}", self.server))?;
        tokio::spawn(background);
        Ok(client)
    }

    /// The record of `name` with the type of `kind` (a CNAME or an A record), if there is one.
    pub async fn query(&self, name: &str, kind: RecordType) -> Result<Option<Answer>> {
        let mut client = self.client(false).await?;
        let response = client
            .query(fqdn(name)?, DNSClass::IN, kind)
            .await
            .with_context(|| format!("the DNS server {} did not answer", self.server))?;
        if !matches!(
            response.response_code(),
            ResponseCode::NoError | ResponseCode::NXDomain
        ) {
            bail!(
                "the DNS server {} answered {} for {name} {kind}",
                self.server,
                response.response_code()
            );
        }
        let want = fqdn(name)?;
        for r in response.answers() {
            if r.name() != &want {
                continue;
            }
            let value = match r.data() {
                RData::CNAME(c) if kind == RecordType::CNAME => {
                    RecordValue::Cname(c.0.to_ascii().trim_end_matches('.').to_string())
                }
                RData::A(a) if kind == RecordType::A => RecordValue::A(a.0),
                _ => continue,
            };
            return Ok(Some(Answer {
                value,
                ttl: r.ttl(),
            }));
        }
        Ok(None)
    }

    /// Replaces `name`'s record (of `new`'s type) with `new`, keeping the TTL `ttl`: a
    /// compare-and-swap against `current` (or a create when there was none). Returns false when
    /// the record already had the new value (a resumed cutover).
    pub async fn replace(
        &self,
        name: &str,
        current: Option<&Answer>,
        new: &RecordValue,
        ttl: u32,
    ) -> Result<bool> {
        if self.key.is_none() {
            bail!("a dynamic update needs a TSIG key (--dns-key-file)");
        }
        if let Some(c) = current
            && c.value == *new
        {
            return Ok(false);
        }
        let owner = fqdn(name)?;
        let zone = fqdn(&self.zone)?;
        if !zone.zone_of(&owner) {
            bail!("{name} is not in the zone {}", self.zone);
        }
        let mut client = self.client(true).await?;
        let new_record = Record::from_rdata(owner.clone(), ttl, new.rdata()?);
        let response = match current {
            Some(c) => {
                let old = Record::from_rdata(owner.clone(), c.ttl, c.value.rdata()?);
                client.compare_and_swap(old, new_record, zone).await
            }
            None => client.create(new_record, zone).await,
        }
        .with_context(|| {
            format!(
                "the DNS update of {name} got no answer from {}",
                self.server
            )
        })?;
        match response.response_code() {
            ResponseCode::NoError => Ok(true),
            ResponseCode::NotAuth | ResponseCode::Refused => bail!(
                "the DNS server {} refused the update of {name} ({}): check the TSIG key and the zone's update policy",
                self.server,
                response.response_code()
            ),
            ResponseCode::NXRRSet | ResponseCode::YXRRSet => bail!(
                "the record {name} changed while the move was updating it ({}); nothing was written",
                response.response_code()
            ),
            other => bail!(
                "the DNS server {} refused the update of {name}: {other}",
                self.server
            ),
        }
    }

    /// Waits until the server answers `value` for `name`, up to `limit`.
    pub async fn wait_for(&self, name: &str, value: &RecordValue, limit: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(a) = self.query(name, value.record_type()).await?
                && a.value == *value
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{name} does not answer {} {} after {} s",
                    value.type_name(),
                    value.text(),
                    limit.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_formats() {
        let k = TsigKey::parse("hmac-sha256:move-key:c2VjcmV0c2VjcmV0").unwrap();
        assert_eq!(k.name, "move-key");
        assert!(!format!("{k:?}").contains("c2Vj"));
        assert!(TsigKey::parse("move-key:c2VjcmV0").is_ok());
        let e = TsigKey::parse("hmac-md5:k:c2VjcmV0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not supported"), "{e}");
        assert!(TsigKey::parse("k:%%%").is_err());
        assert!(TsigKey::parse("").is_err());
    }
}
