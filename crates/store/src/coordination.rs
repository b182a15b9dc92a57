//! What the nodes of one store agree on besides configuration: leases (one holder at a time
//! for a name, until it lets go or stops renewing) and the records of long-running operations
//! (so a node other than the one running an operation can report it).
//!
//! Invariants: a lease has at most one unexpired holder; on PostgreSQL its expiry is the
//! database's clock, so nodes whose clocks differ still agree. Records are operational data:
//! writing them bumps no revision.

use crate::sql::{Arg, Db, Dialect};
use crate::{Result, StoreError};
use serde_json::Value;
use std::time::Duration;

/// Who holds a lease after a node asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// The asking holder has it (taken or renewed).
    Ours,
    /// Another holder has it, unexpired.
    Theirs(String),
}

/// Records of finished operations are kept this long.
const RECORD_DAYS: i64 = 7;

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Takes `name` for `holder` until `ttl` from now, if it is free, expired or already
/// `holder`'s.
pub(crate) fn take(db: Db<'_>, name: &str, holder: &str, ttl: Duration) -> Result<Lease> {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let (take, current) = match db.dialect() {
        Dialect::Sqlite => (
            "INSERT INTO leases (name, holder, expires) VALUES (?1, ?2, ?4 + ?3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
             WHERE leases.holder = excluded.holder OR leases.expires <= ?4",
            "SELECT holder FROM leases WHERE name = ?1 AND expires > ?2",
        ),
        Dialect::Postgres => (
            "INSERT INTO leases (name, holder, expires)
             VALUES (?1, ?2, now() + ?3::bigint * interval '1 millisecond')
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
             WHERE leases.holder = excluded.holder OR leases.expires <= now()",
            "SELECT holder FROM leases WHERE name = ?1 AND expires > now()",
        ),
    };
    let now = now_ms();
    match db.dialect() {
        Dialect::Sqlite => db.exec(
            take,
            &[
                Arg::Text(name),
                Arg::Text(holder),
                Arg::Int(ttl_ms),
                Arg::Int(now),
            ],
        )?,
        Dialect::Postgres => db.exec(
            take,
            &[Arg::Text(name), Arg::Text(holder), Arg::Int(ttl_ms)],
        )?,
    };
    let held = match db.dialect() {
        Dialect::Sqlite => db.texts(current, &[Arg::Text(name), Arg::Int(now)])?,
        Dialect::Postgres => db.texts(current, &[Arg::Text(name)])?,
    };
    match held.into_iter().next() {
        Some(h) if h == holder => Ok(Lease::Ours),
        Some(h) => Ok(Lease::Theirs(h)),
        None => Err(StoreError::Corrupt(format!(
            "the lease '{name}' was neither taken nor held"
        ))),
    }
}

/// Gives `name` up, if `holder` has it.
pub(crate) fn release(db: Db<'_>, name: &str, holder: &str) -> Result<()> {
    db.exec(
        "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
        &[Arg::Text(name), Arg::Text(holder)],
    )?;
    Ok(())
}

/// The unexpired holder of `name`.
pub(crate) fn holder(db: Db<'_>, name: &str) -> Result<Option<String>> {
    let held = match db.dialect() {
        Dialect::Sqlite => db.texts(
            "SELECT holder FROM leases WHERE name = ?1 AND expires > ?2",
            &[Arg::Text(name), Arg::Int(now_ms())],
        )?,
        Dialect::Postgres => db.texts(
            "SELECT holder FROM leases WHERE name = ?1 AND expires > now()",
            &[Arg::Text(name)],
        )?,
    };
    Ok(held.into_iter().next())
}

/// Writes an operation's record (and forgets records untouched for a week).
pub(crate) fn put_record(db: Db<'_>, id: &str, body: &Value) -> Result<()> {
    let now = now_ms();
    db.exec(
        "INSERT INTO operations (id, body, updated) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated = excluded.updated",
        &[Arg::Text(id), Arg::Text(&body.to_string()), Arg::Int(now)],
    )?;
    db.exec(
        "DELETE FROM operations WHERE updated < ?1",
        &[Arg::Int(now - RECORD_DAYS * 86_400_000)],
    )?;
    Ok(())
}

pub(crate) fn record(db: Db<'_>, id: &str) -> Result<Option<Value>> {
    let Some(text) = db
        .texts(
            "SELECT body FROM operations WHERE id = ?1",
            &[Arg::Text(id)],
        )?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("the record of operation {id}: {e}")))
}
