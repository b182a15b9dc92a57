//! A real authoritative DNS server for tests (Knot DNS from Debian, installed by
//! `scripts/test-deps.sh`), and an HTTP client resolver that asks it and honours TTLs, as a
//! client behind a caching resolver would.

use anyhow::{Context, Result, bail};
use gatehouse_mover::dns::{Authority, RecordValue, TsigKey};
pub use hickory_proto::rr::RecordType;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The TSIG key the test zones accept updates with (`ALGORITHM:NAME:SECRET`).
pub const TEST_KEY: &str =
    "hmac-sha256:gatehouse-move:Z2F0ZWhvdXNlLW1vdmUtdGVzdC1rZXktMDEyMzQ1Njc=";

/// A knotd serving one zone on a free loopback port, killed on drop.
pub struct Knot {
    pub addr: SocketAddr,
    pub zone: String,
    dir: tempfile::TempDir,
    child: Child,
}

/// A loopback port free for both UDP and TCP: knotd listens on both, and a port free for UDP
/// can be held on the TCP side (a connection's local end, e.g. after a benchmark's churn).
fn free_dns_port() -> Result<u16> {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no loopback port is free for both UDP and TCP")
}

impl Knot {
    /// Starts knotd with `zone` holding `records` (zone-file lines relative to the origin,
    /// e.g. `api 1 CNAME gw-westeurope`); updates signed with [`TEST_KEY`] are accepted.
    pub async fn start(zone: &str, records: &str) -> Result<Knot> {
        if Command::new("knotd").arg("-V").output().is_err() {
            bail!("knotd is not installed: run scripts/test-deps.sh (it installs Debian's knot)");
        }
        // A port can still be taken between choosing it and knotd binding it: then knotd
        // exits at once, and another port is tried.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut knot = Knot::spawn(zone, records)?;
            let authority = knot.authority();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = authority.query(&format!("ns.{zone}"), RecordType::A).await {
                    return Ok(knot);
                }
                let exited = matches!(knot.child.try_wait(), Ok(Some(_)));
                if exited && attempt < 5 {
                    break;
                }
                if exited || Instant::now() > deadline {
                    bail!(
                        "knotd did not answer on {}: {}",
                        knot.addr,
                        std::fs::read_to_string(knot.dir.path().join("knot.log"))
                            .unwrap_or_default()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Starts knotd on a free port, without waiting for it to answer.
    fn spawn(zone: &str, records: &str) -> Result<Knot> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let port = free_dns_port()?;
        let (_, name, secret) = {
            let mut p = TEST_KEY.splitn(3, ':');
            (
                p.next().unwrap_or_default(),
                p.next().unwrap_or_default(),
                p.next().unwrap_or_default(),
            )
        };
        std::fs::write(
            d.join(format!("{zone}.zone")),
            format!(
                "$ORIGIN {zone}.\n$TTL 1\n@ SOA ns admin 1 60 60 600 1\n@ NS ns\nns A 127.0.0.1\n{records}\n"
            ),
        )?;
        std::fs::write(
            d.join("knot.conf"),
            format!(
                "server:\n  listen: 127.0.0.1@{port}\n  rundir: {dir}\n  pidfile: {dir}/knot.pid\n  user: root:root\n\
                 log:\n  - target: stderr\n    any: warning\n\
                 database:\n  storage: {dir}\n\
                 key:\n  - id: {name}\n    algorithm: hmac-sha256\n    secret: {secret}\n\
                 acl:\n  - id: update\n    key: {name}\n    action: update\n\
                 template:\n  - id: default\n    storage: {dir}\n    file: \"%s.zone\"\n    zonefile-sync: -1\n    journal-content: changes\n\
                 zone:\n  - domain: {zone}\n    acl: update\n",
                dir = d.display()
            ),
        )?;
        let child = Command::new("knotd")
            .arg("-c")
            .arg(d.join("knot.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(d.join("knot.log"))?))
            .spawn()
            .context("cannot start knotd")?;
        let knot = Knot {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            zone: zone.to_string(),
            dir,
            child,
        };
        Ok(knot)
    }

    pub fn authority(&self) -> Authority {
        Authority {
            server: self.addr,
            zone: self.zone.clone(),
            key: Some(TsigKey::parse(TEST_KEY).expect("the test key parses")),
        }
    }

    /// A file holding the TSIG key, for `gatehouse move --dns-key-file`.
    pub fn key_file(&self) -> PathBuf {
        let p = self.dir.path().join("tsig.key");
        std::fs::write(&p, TEST_KEY).expect("key file");
        p
    }

    /// The record of `name` of the type of `like`, as the server answers now.
    pub async fn lookup(&self, name: &str, kind: RecordType) -> Option<RecordValue> {
        self.authority()
            .query(name, kind)
            .await
            .ok()
            .flatten()
            .map(|a| a.value)
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Addresses of a name, good until the instant.
type Cached = (Vec<SocketAddr>, Instant);

/// Resolves host names through one DNS server, following CNAMEs and caching each answer for
/// its TTL: what a client behind a caching resolver sees during a cutover.
#[derive(Clone)]
pub struct TtlResolver {
    authority: Authority,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

impl TtlResolver {
    pub fn new(server: SocketAddr, zone: &str) -> TtlResolver {
        TtlResolver {
            authority: Authority {
                server,
                zone: zone.to_string(),
                key: None,
            },
            cache: Default::default(),
        }
    }

    async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>> {
        if let Some((addrs, until)) = self.cache.lock().expect("cache").get(host)
            && Instant::now() < *until
        {
            return Ok(addrs.clone());
        }
        let mut name = host.to_string();
        let mut ttl = u32::MAX;
        for _ in 0..8 {
            if let Some(a) = self.authority.query(&name, RecordType::CNAME).await? {
                ttl = ttl.min(a.ttl);
                if let RecordValue::Cname(next) = a.value {
                    name = next;
                    continue;
                }
            }
            let Some(a) = self.authority.query(&name, RecordType::A).await? else {
                bail!("{host} does not resolve (no A record for {name})");
            };
            ttl = ttl.min(a.ttl);
            let RecordValue::A(ip) = a.value else {
                bail!("{name}: not an A record");
            };
            let addrs = vec![SocketAddr::from((ip, 0))];
            self.cache.lock().expect("cache").insert(
                host.to_string(),
                (
                    addrs.clone(),
                    Instant::now() + Duration::from_secs(ttl as u64),
                ),
            );
            return Ok(addrs);
        }
        bail!("{host}: too many CNAMEs")
    }
}

impl reqwest::dns::Resolve for TtlResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let me = self.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = me
                .lookup(&host)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
