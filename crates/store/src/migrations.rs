//! The store's schema as an ordered list of migrations: `PRAGMA user_version` counts those that
//! have run, each runs in the transaction that bumps it, and a store whose version is newer
//! than this list is refused rather than misread.

use crate::{Result, StoreError};
use rusqlite::Connection;

/// The migrations, in order. Append only: never change one that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: the tables of the first release.
    r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    path TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    parent TEXT NOT NULL,
    name TEXT NOT NULL,
    properties TEXT NOT NULL,
    revision INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS resources_by_parent ON resources (parent, kind, name);
CREATE TABLE IF NOT EXISTS refs (
    from_path TEXT NOT NULL,
    to_path TEXT NOT NULL,
    PRIMARY KEY (from_path, to_path)
);
CREATE INDEX IF NOT EXISTS refs_by_target ON refs (to_path);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    revision INTEGER NOT NULL,
    at TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    op TEXT NOT NULL,
    value TEXT
);
CREATE INDEX IF NOT EXISTS journal_by_revision ON journal (revision);
CREATE TABLE IF NOT EXISTS usage (
    bucket INTEGER NOT NULL,
    api TEXT NOT NULL,
    operation TEXT NOT NULL,
    product TEXT NOT NULL,
    subscription TEXT NOT NULL,
    success INTEGER NOT NULL,
    blocked INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    other INTEGER NOT NULL,
    bandwidth INTEGER NOT NULL,
    api_time_sum REAL NOT NULL,
    api_time_min REAL NOT NULL,
    api_time_max REAL NOT NULL,
    service_time_sum REAL NOT NULL,
    service_time_min REAL NOT NULL,
    service_time_max REAL NOT NULL,
    service_calls INTEGER NOT NULL,
    PRIMARY KEY (bucket, api, operation, product, subscription)
);
CREATE INDEX IF NOT EXISTS resources_by_path_prop ON resources (kind, lower(json_extract(properties, '$.path')));
CREATE INDEX IF NOT EXISTS resources_by_email ON resources (kind, lower(json_extract(properties, '$.email')));
CREATE INDEX IF NOT EXISTS resources_by_display_name ON resources (kind, lower(json_extract(properties, '$.displayName')));"#,
    // 2: journal entries keep the references of the value (a move replays them exactly).
    "ALTER TABLE journal ADD COLUMN refs TEXT;",
    // 3: who made each change; scoped tokens; the journal by resource (sealing a value's
    // history when it becomes secret).
    r#"ALTER TABLE journal ADD COLUMN actor TEXT;
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    hash TEXT NOT NULL,
    created TEXT NOT NULL,
    expires TEXT,
    description TEXT
);
CREATE INDEX IF NOT EXISTS journal_by_path ON journal (path);"#,
    // 4: usage by region (self-hosted gateways report theirs to the primary): the region joins
    // the key, so the table is made again with it.
    r#"CREATE TABLE usage_by_region (
    bucket INTEGER NOT NULL,
    api TEXT NOT NULL,
    operation TEXT NOT NULL,
    product TEXT NOT NULL,
    subscription TEXT NOT NULL,
    success INTEGER NOT NULL,
    blocked INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    other INTEGER NOT NULL,
    bandwidth INTEGER NOT NULL,
    api_time_sum REAL NOT NULL,
    api_time_min REAL NOT NULL,
    api_time_max REAL NOT NULL,
    service_time_sum REAL NOT NULL,
    service_time_min REAL NOT NULL,
    service_time_max REAL NOT NULL,
    service_calls INTEGER NOT NULL,
    region TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (bucket, api, operation, product, subscription, region)
);
INSERT INTO usage_by_region SELECT *, '' FROM usage;
DROP TABLE usage;
ALTER TABLE usage_by_region RENAME TO usage;"#,
    // 5: leases and long-running operations' records (shared by the nodes of a store).
    r#"CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires INTEGER NOT NULL);
CREATE TABLE operations (id TEXT PRIMARY KEY, body TEXT NOT NULL, updated INTEGER NOT NULL);"#,
];

/// The schema version this build knows.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Brings the store's schema to [`SCHEMA_VERSION`].
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let recorded: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let mut version = version_of(conn)?;
    if recorded == 0 && version > 0 {
        // A store from before versions were kept: the first migration only creates what is
        // missing (every statement is IF NOT EXISTS), so it brings it up to the first release.
        conn.execute_batch(MIGRATIONS[0])?;
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    while version < SCHEMA_VERSION {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version])?;
        version += 1;
        tx.pragma_update(None, "user_version", version as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// The store's schema version; for a store from before versions were kept, what its tables
/// show.
fn version_of(conn: &Connection) -> Result<usize> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > 0 {
        return Ok(usize::try_from(version).unwrap_or(usize::MAX));
    }
    let has = |sql: &str| -> Result<bool> { Ok(conn.prepare(sql)?.exists([])?) };
    if !has("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'journal'")? {
        return Ok(0);
    }
    let column = |name: &str| {
        has(&format!(
            "SELECT 1 FROM pragma_table_info('journal') WHERE name = '{name}'"
        ))
    };
    Ok(if column("actor")? {
        3
    } else if column("refs")? {
        2
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_from_a_newer_release_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut conn = Connection::open(&path).unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(version_of(&conn).unwrap(), SCHEMA_VERSION);
        migrate(&mut conn).unwrap();
        conn.pragma_update(None, "user_version", (SCHEMA_VERSION + 1) as i64)
            .unwrap();
        let e = migrate(&mut conn).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
    }

    #[test]
    fn a_store_from_before_versions_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("db")).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        assert_eq!(version_of(&conn).unwrap(), 2);
        migrate(&mut conn).unwrap();
        assert_eq!(version_of(&conn).unwrap(), SCHEMA_VERSION);
    }
}
