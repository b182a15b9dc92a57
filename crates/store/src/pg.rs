//! The store's schema on PostgreSQL, for the control plane shared by several `serve` nodes:
//! connecting (waiting with backoff while the server is unreachable, saying so), and the
//! versioned migrations applied by one node at a time.
//!
//! Invariants: migrations run in one transaction under a transaction-scoped advisory lock, so
//! nodes starting together apply each exactly once and none reads a half-made schema; a
//! database whose schema is newer than this build knows is refused, not misread; connection
//! URLs appear in messages only without their password.
//!
//! The tables are SQLite's (`crate::migrations`), in PostgreSQL's types, plus `leases` (which
//! node owns a long-running operation).

use crate::{Result, StoreError};
use std::time::{Duration, Instant};

/// The advisory lock key under which schema migrations run ("gh-schema" as a number).
const MIGRATION_LOCK: i64 = 0x6768_2d73_6368_656d;

/// The migrations, in order. Append only: never change one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: SQLite's schema as of its version 4, and leases.
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE resources (
    path TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    parent TEXT NOT NULL,
    name TEXT NOT NULL,
    properties TEXT NOT NULL,
    revision BIGINT NOT NULL
);
CREATE INDEX resources_by_parent ON resources (parent, kind, name);
CREATE INDEX resources_by_path_prop ON resources (kind, lower(properties::jsonb ->> 'path'));
CREATE INDEX resources_by_email ON resources (kind, lower(properties::jsonb ->> 'email'));
CREATE INDEX resources_by_display_name ON resources (kind, lower(properties::jsonb ->> 'displayName'));
CREATE TABLE refs (
    from_path TEXT NOT NULL,
    to_path TEXT NOT NULL,
    PRIMARY KEY (from_path, to_path)
);
CREATE INDEX refs_by_target ON refs (to_path);
CREATE TABLE journal (
    seq BIGSERIAL PRIMARY KEY,
    revision BIGINT NOT NULL,
    at TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    op TEXT NOT NULL,
    value TEXT,
    refs TEXT,
    actor TEXT
);
CREATE INDEX journal_by_revision ON journal (revision);
CREATE INDEX journal_by_path ON journal (path);
CREATE TABLE usage (
    bucket BIGINT NOT NULL,
    api TEXT NOT NULL,
    operation TEXT NOT NULL,
    product TEXT NOT NULL,
    subscription TEXT NOT NULL,
    success BIGINT NOT NULL,
    blocked BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    other BIGINT NOT NULL,
    bandwidth BIGINT NOT NULL,
    api_time_sum DOUBLE PRECISION NOT NULL,
    api_time_min DOUBLE PRECISION NOT NULL,
    api_time_max DOUBLE PRECISION NOT NULL,
    service_time_sum DOUBLE PRECISION NOT NULL,
    service_time_min DOUBLE PRECISION NOT NULL,
    service_time_max DOUBLE PRECISION NOT NULL,
    service_calls BIGINT NOT NULL,
    region TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (bucket, api, operation, product, subscription, region)
);
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT,
    description TEXT
);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires TIMESTAMPTZ NOT NULL
);"#,
    // 2: long-running operations' records, readable on every node.
    "CREATE TABLE operations (id TEXT PRIMARY KEY, body TEXT NOT NULL, updated BIGINT NOT NULL);",
];

/// The PostgreSQL schema version this build knows.
pub const PG_SCHEMA_VERSION: usize = MIGRATIONS.len();

/// A store URL as the driver takes it, and the TLS it connects with.
///
/// `sslmode` is libpq's: `disable`, `prefer` (the default), `require`, and `verify-ca` /
/// `verify-full` (the same as `require` here: the server's certificate and name are always
/// checked when TLS is used). `sslrootcert=/path/ca.pem` adds roots to the public web ones.
pub struct Target {
    pub url: String,
    pub tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut root_file = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslrootcert", path)) => root_file = Some(path.to_string()),
                Some(("sslmode", "verify-ca" | "verify-full")) => {
                    kept.push("sslmode=require".into())
                }
                _ => kept.push(pair.to_string()),
            }
        }
        let url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok(Target {
            url,
            tls: tls(root_file.as_deref())?,
        })
    }
}

/// TLS trusting the public web roots and those in `root_file` (PEM).
fn tls(root_file: Option<&str>) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let bad = |m: String| StoreError::Postgres(m);
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = root_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(format!("cannot read sslrootcert {path}: {e}")))?;
        for cert in certs {
            let cert = cert.map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// `url` without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or("");
            let hidden = if user_info.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// Connects to `url`; while the server cannot be reached, retries with a backoff (100 ms
/// doubling up to 5 s) until `wait` has passed, telling `waiting` each time why and when it
/// tries again. A refusal that retrying cannot cure (bad credentials, no such database) ends
/// at once.
pub fn connect(
    url: &str,
    wait: Duration,
    mut waiting: impl FnMut(&str),
) -> Result<postgres::Client> {
    let target = Target::parse(url)?;
    let deadline = Instant::now() + wait;
    let mut delay = Duration::from_millis(100);
    loop {
        match postgres::Client::connect(&target.url, target.tls.clone()) {
            Ok(client) => return Ok(client),
            Err(e) if retryable(&e) && Instant::now() + delay < deadline => {
                waiting(&format!(
                    "PostgreSQL at {} is not reachable ({}); trying again in {} ms",
                    redact_url(url),
                    reason(&e),
                    delay.as_millis()
                ));
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(StoreError::Postgres(format!(
                    "cannot connect to PostgreSQL at {}: {}",
                    redact_url(url),
                    reason(&e)
                )));
            }
        }
    }
}

/// Whether a failed connection may succeed later: the server is down or starting, not
/// refusing us.
fn retryable(e: &postgres::Error) -> bool {
    match e.as_db_error() {
        // 57P03: the database system is starting up (or shutting down).
        Some(db) => db.code().code() == "57P03",
        None => true,
    }
}

/// An error's own words, with its cause (the driver's top line alone says little).
fn reason(e: &postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => db.message().to_string(),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

fn pg(e: postgres::Error) -> StoreError {
    StoreError::Postgres(reason(&e))
}

/// Brings the database's schema to [`PG_SCHEMA_VERSION`], one node at a time; the version the
/// database is at afterwards.
pub fn migrate(client: &mut postgres::Client) -> Result<usize> {
    let mut tx = client.transaction().map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(pg)?;
    // Made once (asked first, so that later starts log no "already exists" notice).
    let made: Option<String> = tx
        .query_one("SELECT to_regclass('gatehouse_schema')::text", &[])
        .map_err(pg)?
        .get(0);
    if made.is_none() {
        tx.batch_execute(
            "CREATE TABLE gatehouse_schema (id INT PRIMARY KEY CHECK (id = 1), version INT NOT NULL)",
        )
        .map_err(pg)?;
    }
    let found: i32 = tx
        .query_opt("SELECT version FROM gatehouse_schema WHERE id = 1", &[])
        .map_err(pg)?
        .map_or(0, |row| row.get(0));
    let found = usize::try_from(found).unwrap_or(0);
    if found > PG_SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            known: PG_SCHEMA_VERSION,
        });
    }
    for migration in &MIGRATIONS[found..] {
        tx.batch_execute(migration).map_err(pg)?;
    }
    if found < PG_SCHEMA_VERSION {
        tx.execute(
            "INSERT INTO gatehouse_schema (id, version) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            &[&(PG_SCHEMA_VERSION as i32)],
        )
        .map_err(pg)?;
    }
    tx.commit().map_err(pg)?;
    Ok(PG_SCHEMA_VERSION)
}

/// An operational value of the store (`meta`), read before the store is opened.
pub fn meta(client: &mut postgres::Client, key: &str) -> Result<Option<String>> {
    Ok(client
        .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
        .map_err(pg)?
        .map(|row| row.get(0)))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            (
                "postgres://ann:s3cr%40t@db.example:5432/gh?sslmode=require",
                "postgres://ann:***@db.example:5432/gh?sslmode=require",
            ),
            ("postgres://ann@db/gh", "postgres://ann@db/gh"),
            ("postgresql://db.example/gh", "postgresql://db.example/gh"),
            ("postgres://a:b@c@h/d", "postgres://a:***@h/d"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }
}
