//! The configuration store: SQLite in WAL mode, one revision counter, a change journal.
//!
//! Invariants:
//! - every write transaction that changes anything bumps the revision by exactly one and
//!   appends one journal row per changed resource, all in the same SQLite transaction;
//! - a resource's `revision` column is the revision that last wrote it (its ETag);
//! - secret fields (per `model::props::secret_pointers`) are sealed in `resources` and in the
//!   journal, and opened only when read back through this crate;
//! - readers use their own connections inside a read transaction, so they see one consistent
//!   revision while writers go on (WAL snapshot isolation).

mod lock;
mod migrations;
pub mod pg;
pub mod pg_engine;
mod seal;
mod tokens;

use gatehouse_model::props::secret_pointers;
use gatehouse_model::{Kind, ResourcePath, ServiceSettings, Snapshot, StoredResource};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use lock::{DataDirLock, LOCK_FILE, LockError};
pub use migrations::SCHEMA_VERSION;
pub use seal::{SealError, Sealer, remove_fields};
pub use tokens::TokenRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("store I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("the store has not been initialised with a service")]
    NoService,
    #[error(
        "the store has schema version {found}, newer than this Gatehouse knows ({known}): run the release that wrote it, or a newer one"
    )]
    SchemaTooNew { found: usize, known: usize },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Properties that `find_by_property` can look up through an index.
pub const INDEXED_PROPERTIES: &[&str] = &["path", "email", "displayName"];

/// One row of the change journal.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub seq: u64,
    pub revision: u64,
    /// RFC 3339 UTC time of the commit.
    pub at: String,
    pub path: String,
    /// The kind's store name, or `"service"` for the service resource.
    pub kind: String,
    /// `"put"` or `"delete"`.
    pub op: String,
    /// The new value with secrets sealed; `None` for deletes.
    pub value: Option<Value>,
    /// The paths the new value references (so the entry can be replayed exactly).
    pub refs: Vec<String>,
    /// Who made the change: `admin`, a token's id, or `system` (start-up, restores run by
    /// the store's own tools); `None` for entries written before this was recorded.
    pub actor: Option<String>,
}

/// The journal's actor for changes no caller made (bootstrap, offline tools).
pub const SYSTEM_ACTOR: &str = "system";

/// Usage counters of one 15-minute bucket for one (API, operation, product, subscription).
/// Usage is operational data, not configuration: writing it does not bump the revision.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UsageRow {
    /// Unix seconds of the bucket start.
    pub bucket: i64,
    pub api: String,
    pub operation: String,
    pub product: String,
    pub subscription: String,
    pub success: u64,
    pub blocked: u64,
    pub failed: u64,
    pub other: u64,
    pub bandwidth: u64,
    pub api_time_sum_ms: f64,
    pub api_time_min_ms: f64,
    pub api_time_max_ms: f64,
    pub service_time_sum_ms: f64,
    pub service_time_min_ms: f64,
    pub service_time_max_ms: f64,
    pub service_calls: u64,
    /// Where the calls were served: the gateway's region (`""` for rows from before regions).
    #[serde(default)]
    pub region: String,
}

/// A page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<StoredResource>,
    pub total: u64,
}

pub struct Store {
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    db_path: PathBuf,
    sealer: Sealer,
    /// The latest committed revision, for whoever follows changes (the gateway).
    committed: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("db_path", &self.db_path)
            .finish()
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatting the current time cannot fail")
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    // What a write removes or replaces is overwritten, not left in free space: a value that
    // became secret must not survive in plaintext in the file.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`: `gatehouse.db` and the sealing key
    /// `store.key` (mode 0600).
    pub fn open_dir(data_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let key = load_or_create_key(&data_dir.join(gatehouse_model::files::STORE_KEY))?;
        Store::open(&data_dir.join(gatehouse_model::files::DATABASE), &key)
    }

    pub fn open(db_path: &Path, key: &[u8; 32]) -> Result<Store> {
        let mut conn = Connection::open(db_path)?;
        configure(&conn)?;
        use_incremental_vacuum(&conn)?;
        migrations::migrate(&mut conn)?;
        let revision = current_revision(&conn)?;
        Ok(Store {
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            db_path: db_path.to_path_buf(),
            sealer: Sealer::new(key),
            committed: tokio::sync::watch::channel(revision).0,
        })
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Runs `f` in one write transaction. If `f` changed anything, the revision is bumped by one
    /// and the transaction commits; if `f` fails, nothing is written.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut WriteTx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<Committed<T>, E> {
        self.write_as(SYSTEM_ACTOR, f)
    }

    /// [`Store::write`] on behalf of `actor` (a token's id, never its value), which every
    /// journal entry of the transaction records.
    pub fn write_as<T, E: From<StoreError>>(
        &self,
        actor: &str,
        f: impl FnOnce(&mut WriteTx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<Committed<T>, E> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let current = current_revision(&tx)?;
        let mut w = WriteTx {
            tx,
            sealer: &self.sealer,
            next: current + 1,
            at: now_rfc3339(),
            changes: 0,
            scrub: false,
            actor,
        };
        let value = f(&mut w)?;
        let changed = w.changes > 0;
        let revision = if changed { w.next } else { current };
        if changed {
            w.tx.execute(
                "INSERT INTO meta (key, value) VALUES ('revision', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![revision.to_string()],
            )
            .map_err(StoreError::from)?;
        }
        let scrub = {
            let w = w; // ends here, and with it the transaction's borrow of the connection
            let scrub = w.scrub;
            w.tx.commit().map_err(StoreError::from)?;
            scrub
        };
        if scrub {
            // The write log still holds the pages as they were, plaintext included: copy the
            // new pages into the database and empty the log.
            // The change is committed either way: a checkpoint that cannot finish (readers
            // kept busy past the timeout) is reported, and SQLite's own checkpoints follow.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "the write log could not be emptied after a value became secret");
            }
        }
        if changed {
            // Still under the writer lock, so followers never see revisions go backwards.
            self.committed.send_replace(revision);
        }
        Ok(Committed {
            value,
            revision,
            changed,
        })
    }

    /// Runs `f` against one consistent read view of the store.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&ReadTx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let conn = self.take_reader()?;
        let result = (|| {
            let tx = conn.unchecked_transaction().map_err(StoreError::from)?;
            // The first read pins the WAL snapshot for the whole transaction.
            let revision = current_revision(&tx)?;
            let r = ReadTx {
                tx: &tx,
                sealer: &self.sealer,
                revision,
            };
            let out = f(&r);
            drop(tx);
            out
        })();
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        result
    }

    fn give_back(&self, conn: Connection) {
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }

    fn take_reader(&self) -> Result<Connection> {
        if let Some(c) = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(c);
        }
        let conn = Connection::open(&self.db_path)?;
        configure(&conn)?;
        Ok(conn)
    }

    /// The whole configuration at one revision.
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.read(|r| {
            let service = r.service()?.ok_or(StoreError::NoService)?;
            let mut resources = Vec::new();
            r.for_each_resource(|res| {
                resources.push(res);
                Ok(())
            })?;
            Ok(Snapshot {
                revision: r.revision(),
                service,
                resources,
            })
        })
    }

    pub fn revision(&self) -> Result<u64> {
        self.read(|r| Ok(r.revision()))
    }

    /// Adds usage counters to the stored aggregates (sums add, minima and maxima merge).
    pub fn add_usage(&self, rows: &[UsageRow]) -> Result<()> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for r in rows {
            upsert_usage(&tx, r)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Takes every usage row out of the store, in one transaction (a self-hosted gateway
    /// sending its usage to its primary; on failure it adds them back).
    pub fn take_usage(&self) -> Result<Vec<UsageRow>> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows = {
            let mut stmt = tx.prepare_cached("SELECT * FROM usage")?;
            let rows = stmt.query_map([], usage_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.execute("DELETE FROM usage", [])?;
        tx.commit()?;
        Ok(rows)
    }

    /// Copies the database file with SQLite's online backup API (the physical floor a logical
    /// backup is measured against).
    pub fn copy_database_to(&self, dest: &Path) -> Result<()> {
        let src = Connection::open(&self.db_path)?;
        let mut dst = Connection::open(dest)?;
        let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
        backup.run_to_completion(1024, std::time::Duration::ZERO, None)?;
        Ok(())
    }

    /// Removes the journal entries of revisions up to `through` (they are history no one
    /// needs any more: the configuration itself is untouched, no revision is bumped) and
    /// records the floor, so a consumer asking for changes since an older revision is told to
    /// take a snapshot instead. Returns how many entries were removed.
    pub fn compact_journal(&self, through: u64) -> Result<u64> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let floor = journal_floor(&tx)?;
        let through = through.min(current_revision(&tx)?);
        if through <= floor {
            return Ok(0);
        }
        let removed = tx.execute(
            "DELETE FROM journal WHERE revision <= ?1",
            params![through as i64],
        )?;
        set_meta(&tx, JOURNAL_FLOOR, &through.to_string())?;
        tx.commit()?;
        // Give the freed pages back to the file system (the database is in incremental
        // auto-vacuum mode), so the file shrinks rather than only stopping to grow.
        // Stepped to its end: each step frees pages, one call to `execute` would stop early.
        let mut vacuum = conn.prepare("PRAGMA incremental_vacuum")?;
        let mut steps = vacuum.query([])?;
        while steps.next()?.is_some() {}
        Ok(removed as u64)
    }

    /// Drops the indexes that serve the management API's lookups by property (uniqueness of
    /// paths, emails, display names): a read-only copy — a self-hosted gateway's — never makes
    /// them, and without them it takes a snapshot faster. Lookups still work, by scanning.
    pub fn drop_lookup_indexes(&self) -> Result<()> {
        let conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute_batch(
            "DROP INDEX IF EXISTS resources_by_path_prop;
             DROP INDEX IF EXISTS resources_by_email;
             DROP INDEX IF EXISTS resources_by_display_name;",
        )?;
        Ok(())
    }

    /// Sets an operational value (not configuration: no revision, no journal entry).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        let conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        set_meta(&conn, key, value)
    }

    /// Follows committed revisions: the receiver sees every new revision (possibly coalesced).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
    }
}

/// Puts the database in incremental auto-vacuum mode (once: a database made before this mode
/// is rewritten by one VACUUM), so that compacting the journal can shrink the file.
fn use_incremental_vacuum(conn: &Connection) -> Result<()> {
    const INCREMENTAL: i64 = 2;
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode != INCREMENTAL {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        conn.execute_batch("VACUUM")?;
    }
    Ok(())
}

/// The meta key of the highest revision whose journal entries were compacted away.
const JOURNAL_FLOOR: &str = "journal_floor";

fn journal_floor(conn: &Connection) -> Result<u64> {
    Ok(get_meta(conn, JOURNAL_FLOOR)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

fn get_meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
            r.get(0)
        })
        .optional()?)
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn load_or_create_key(path: &Path) -> Result<[u8; 32]> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let decoded = hex_decode(text.trim()).ok_or_else(|| {
                StoreError::Corrupt(format!("{} is not a 64-digit hex key", path.display()))
            })?;
            Ok(decoded)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Sealer::generate_key();
            let text: String = key.iter().map(|b| format!("{b:02x}")).collect();
            write_private_file(path, format!("{text}\n").as_bytes()).map_err(io)?;
            Ok(key)
        }
        Err(e) => Err(io(e)),
    }
}

fn hex_decode(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Writes a file readable only by its owner (a temporary file, created 0600, renamed into
/// place once written and synced: no reader ever sees half of it).
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// One row of the usage table, as read.
fn usage_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UsageRow> {
    Ok(UsageRow {
        bucket: r.get(0)?,
        api: r.get(1)?,
        operation: r.get(2)?,
        product: r.get(3)?,
        subscription: r.get(4)?,
        success: r.get::<_, i64>(5)? as u64,
        blocked: r.get::<_, i64>(6)? as u64,
        failed: r.get::<_, i64>(7)? as u64,
        other: r.get::<_, i64>(8)? as u64,
        bandwidth: r.get::<_, i64>(9)? as u64,
        api_time_sum_ms: r.get(10)?,
        api_time_min_ms: r.get(11)?,
        api_time_max_ms: r.get(12)?,
        service_time_sum_ms: r.get(13)?,
        service_time_min_ms: r.get(14)?,
        service_time_max_ms: r.get(15)?,
        service_calls: r.get::<_, i64>(16)? as u64,
        region: r.get(17)?,
    })
}

/// Adds one usage row to its bucket's aggregate (or inserts it).
fn upsert_usage(conn: &Connection, r: &UsageRow) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO usage VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
         ON CONFLICT (bucket, api, operation, product, subscription, region) DO UPDATE SET
           success = success + excluded.success,
           blocked = blocked + excluded.blocked,
           failed = failed + excluded.failed,
           other = other + excluded.other,
           bandwidth = bandwidth + excluded.bandwidth,
           api_time_sum = api_time_sum + excluded.api_time_sum,
           api_time_min = min(api_time_min, excluded.api_time_min),
           api_time_max = max(api_time_max, excluded.api_time_max),
           service_time_sum = service_time_sum + excluded.service_time_sum,
           service_time_min = CASE WHEN service_calls = 0 THEN excluded.service_time_min
                                   WHEN excluded.service_calls = 0 THEN service_time_min
                                   ELSE min(service_time_min, excluded.service_time_min) END,
           service_time_max = max(service_time_max, excluded.service_time_max),
           service_calls = service_calls + excluded.service_calls",
    )?
    .execute(params![
        r.bucket,
        r.api,
        r.operation,
        r.product,
        r.subscription,
        r.success as i64,
        r.blocked as i64,
        r.failed as i64,
        r.other as i64,
        r.bandwidth as i64,
        r.api_time_sum_ms,
        r.api_time_min_ms,
        r.api_time_max_ms,
        r.service_time_sum_ms,
        r.service_time_min_ms,
        r.service_time_max_ms,
        r.service_calls as i64,
        r.region
    ])?;
    Ok(())
}

fn current_revision(conn: &Connection) -> Result<u64> {
    let v: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match v {
        None => Ok(0),
        Some(s) => s
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("revision '{s}' is not a number"))),
    }
}

/// The result of a write transaction.
#[derive(Debug)]
pub struct Committed<T> {
    pub value: T,
    /// The store's revision after the transaction.
    pub revision: u64,
    /// Whether anything was written (and the revision bumped).
    pub changed: bool,
}

fn row_to_resource(
    sealer: &Sealer,
    path: String,
    kind: String,
    props: String,
    revision: i64,
) -> Result<StoredResource> {
    let kind = Kind::from_name(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown kind '{kind}' at {path}")))?;
    let mut properties: Map<String, Value> = serde_json::from_str(&props)
        .map_err(|e| StoreError::Corrupt(format!("properties of {path}: {e}")))?;
    let pointers = secret_pointers(kind, &properties);
    sealer.open_fields(&mut properties, &pointers)?;
    Ok(StoredResource {
        path,
        kind,
        properties,
        revision: revision as u64,
    })
}

/// Queries shared by read and write transactions.
trait Queries {
    fn conn(&self) -> &Connection;
    fn sealer(&self) -> &Sealer;

    fn q_get(&self, path: &str) -> Result<Option<StoredResource>> {
        let row = self
            .conn()
            .query_row(
                "SELECT kind, properties, revision FROM resources WHERE path = ?1",
                params![path],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(k, p, rev)| row_to_resource(self.sealer(), path.to_string(), k, p, rev))
            .transpose()
    }

    fn q_query(&self, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<StoredResource>> {
        let mut stmt = self.conn().prepare_cached(sql)?;
        let rows = stmt.query_map(args, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (path, kind, props, rev) = row?;
            out.push(row_to_resource(self.sealer(), path, kind, props, rev)?);
        }
        Ok(out)
    }

    fn q_children(&self, kind: Kind, parent: &str) -> Result<Vec<StoredResource>> {
        self.q_query(
            "SELECT path, kind, properties, revision FROM resources
             WHERE parent = ?1 AND kind = ?2 ORDER BY name",
            &[&parent, &kind.name()],
        )
    }

    fn q_page(
        &self,
        kind: Kind,
        parent: &str,
        skip: u64,
        top: u64,
        hide_revisions: bool,
    ) -> Result<Page> {
        let hide = hide_revisions as i64;
        let total: i64 = self.conn().query_row(
            "SELECT count(*) FROM resources WHERE parent = ?1 AND kind = ?2
             AND (?3 = 0 OR instr(name, ';rev=') = 0)",
            params![parent, kind.name(), hide],
            |r| r.get(0),
        )?;
        let items = self.q_query(
            "SELECT path, kind, properties, revision FROM resources
             WHERE parent = ?1 AND kind = ?2 AND (?5 = 0 OR instr(name, ';rev=') = 0)
             ORDER BY name LIMIT ?3 OFFSET ?4",
            &[&parent, &kind.name(), &(top as i64), &(skip as i64), &hide],
        )?;
        Ok(Page {
            items,
            total: total as u64,
        })
    }

    fn q_descendants(&self, path: &str) -> Result<Vec<StoredResource>> {
        let lo = format!("{path}/");
        let hi = format!("{path}0"); // '0' sorts right after '/'
        self.q_query(
            "SELECT path, kind, properties, revision FROM resources
             WHERE path >= ?1 AND path < ?2 ORDER BY path",
            &[&lo, &hi],
        )
    }

    fn q_referrers(&self, path: &str) -> Result<Vec<String>> {
        let lo = format!("{path}/");
        let hi = format!("{path}0");
        let mut stmt = self.conn().prepare_cached(
            "SELECT DISTINCT from_path FROM refs
             WHERE to_path = ?1 OR (to_path >= ?2 AND to_path < ?3) ORDER BY from_path",
        )?;
        let rows = stmt.query_map(params![path, lo, hi], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn q_references_of(&self, path: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT to_path FROM refs WHERE from_path = ?1 ORDER BY to_path")?;
        let rows = stmt.query_map(params![path], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn q_find_by_property(
        &self,
        kind: Kind,
        field: &str,
        value: &str,
    ) -> Result<Vec<StoredResource>> {
        if !INDEXED_PROPERTIES.contains(&field) {
            return Err(StoreError::Corrupt(format!(
                "'{field}' is not an indexed property"
            )));
        }
        let sql = format!(
            "SELECT path, kind, properties, revision FROM resources
             WHERE kind = ?1 AND lower(json_extract(properties, '$.{field}')) = lower(?2) ORDER BY path"
        );
        self.q_query(&sql, &[&kind.name(), &value])
    }

    fn q_service(&self) -> Result<Option<ServiceSettings>> {
        let v: Option<String> = self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = 'service'", [], |r| {
                r.get(0)
            })
            .optional()?;
        v.map(|s| {
            serde_json::from_str(&s)
                .map_err(|e| StoreError::Corrupt(format!("service settings: {e}")))
        })
        .transpose()
    }
}

pub struct WriteTx<'a> {
    tx: rusqlite::Transaction<'a>,
    sealer: &'a Sealer,
    next: u64,
    at: String,
    changes: u64,
    /// A value became secret in this transaction: empty the write log after the commit.
    scrub: bool,
    /// Who makes the change, as the journal records it.
    actor: &'a str,
}

impl Queries for WriteTx<'_> {
    fn conn(&self) -> &Connection {
        &self.tx
    }
    fn sealer(&self) -> &Sealer {
        self.sealer
    }
}

impl WriteTx<'_> {
    /// Runs `f` inside a savepoint of this transaction. `f` answers whether to keep what it
    /// did; when it says no, or fails, everything it wrote is undone (journal included) as
    /// if it had not run — so a caller can try a change, look at the result, and take it back
    /// (an import's plan, or skipping a change that turns out to change nothing).
    pub fn attempt<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Self) -> std::result::Result<(T, bool), E>,
    ) -> std::result::Result<T, E> {
        self.tx
            .execute_batch("SAVEPOINT attempt")
            .map_err(StoreError::from)?;
        let (changes, scrub) = (self.changes, self.scrub);
        let outcome = f(self);
        let keep = matches!(outcome, Ok((_, true)));
        let sql = if keep {
            "RELEASE attempt"
        } else {
            self.changes = changes;
            self.scrub = scrub;
            "ROLLBACK TO attempt; RELEASE attempt"
        };
        self.tx.execute_batch(sql).map_err(StoreError::from)?;
        outcome.map(|(value, _)| value)
    }

    /// Sets an operational value in this transaction (no journal entry, no change counted),
    /// e.g. the primary revision a regional gateway's copy has reached with these changes.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        set_meta(&self.tx, key, value)
    }

    /// The revision this transaction will commit as, if it changes anything.
    pub fn next_revision(&self) -> u64 {
        self.next
    }

    pub fn get(&self, path: &str) -> Result<Option<StoredResource>> {
        self.q_get(path)
    }

    pub fn children(&self, kind: Kind, parent: &str) -> Result<Vec<StoredResource>> {
        self.q_children(kind, parent)
    }

    /// All resources below `path` (not `path` itself), in path order.
    pub fn descendants(&self, path: &str) -> Result<Vec<StoredResource>> {
        self.q_descendants(path)
    }

    /// Paths of resources that reference `path` or anything below it.
    pub fn referrers(&self, path: &str) -> Result<Vec<String>> {
        self.q_referrers(path)
    }

    /// Resources of `kind` whose string property `field` (one of `INDEXED_PROPERTIES`) equals
    /// `value`, ignoring case. Uses an expression index, so uniqueness checks stay fast at scale.
    pub fn find_by_property(
        &self,
        kind: Kind,
        field: &str,
        value: &str,
    ) -> Result<Vec<StoredResource>> {
        self.q_find_by_property(kind, field, value)
    }

    /// All resources of a kind anywhere in the tree.
    pub fn all_of_kind(&self, kind: Kind) -> Result<Vec<StoredResource>> {
        self.q_query(
            "SELECT path, kind, properties, revision FROM resources WHERE kind = ?1 ORDER BY path",
            &[&kind.name()],
        )
    }

    pub fn service(&self) -> Result<Option<ServiceSettings>> {
        self.q_service()
    }

    fn journal(&mut self, path: &str, kind: &str, op: &str, value: Option<&str>) -> Result<()> {
        self.journal_with_refs(path, kind, op, value, &[])
    }

    fn journal_with_refs(
        &mut self,
        path: &str,
        kind: &str,
        op: &str,
        value: Option<&str>,
        refs: &[String],
    ) -> Result<()> {
        let refs = (!refs.is_empty()).then(|| serde_json::to_string(refs).expect("refs serialise"));
        self.tx
            .prepare_cached("INSERT INTO journal (revision, at, path, kind, op, value, refs, actor) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")?
            .execute(params![self.next as i64, self.at, path, kind, op, value, refs, self.actor])?;
        self.changes += 1;
        Ok(())
    }

    pub fn set_service(&mut self, settings: &ServiceSettings) -> Result<()> {
        let text = serde_json::to_string(settings).expect("settings serialise");
        self.tx.execute(
            "INSERT INTO meta (key, value) VALUES ('service', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![text],
        )?;
        self.journal("/", "service", "put", Some(&text))
    }

    /// Creates or replaces one resource, with the paths it references. Returns its new revision.
    pub fn put(
        &mut self,
        path: &ResourcePath,
        mut properties: Map<String, Value>,
        references: &[String],
    ) -> Result<u64> {
        let key = path.as_string();
        let pointers = secret_pointers(path.kind, &properties);
        self.seal_history_of(&key, path.kind, &pointers)?;
        self.sealer.seal_fields(&mut properties, &pointers);
        let text = serde_json::to_string(&properties).expect("properties serialise");
        self.tx.execute(
            "INSERT INTO resources (path, kind, parent, name, properties, revision)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (path) DO UPDATE SET properties = excluded.properties,
                                              revision = excluded.revision",
            params![
                key,
                path.kind.name(),
                path.parent_string(),
                path.id(),
                text,
                self.next as i64
            ],
        )?;
        self.tx
            .execute("DELETE FROM refs WHERE from_path = ?1", params![key])?;
        for r in references {
            self.tx.execute(
                "INSERT OR IGNORE INTO refs (from_path, to_path) VALUES (?1, ?2)",
                params![key, r],
            )?;
        }
        self.journal_with_refs(&key, path.kind.name(), "put", Some(&text), references)?;
        Ok(self.next)
    }

    /// When a field of `path` becomes secret (a named value turned `secret: true`), the
    /// journal entries written before still hold it in plaintext: they are sealed in this
    /// same transaction, and the write log is emptied after it commits.
    fn seal_history_of(&mut self, path: &str, kind: Kind, secret: &[&str]) -> Result<()> {
        let maybe = gatehouse_model::props::possible_secret_pointers(kind);
        if secret.is_empty() || maybe.is_empty() {
            return Ok(());
        }
        let rows: Vec<(i64, String)> = {
            let mut stmt = self.tx.prepare_cached(
                "SELECT seq, value FROM journal WHERE path = ?1 AND value IS NOT NULL",
            )?;
            stmt.query_map(params![path], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        for (seq, text) in rows {
            let Ok(Value::Object(mut props)) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let plain: Vec<&str> = secret
                .iter()
                .copied()
                .filter(|p| maybe.contains(p))
                .filter(|p| {
                    props
                        .get(p.trim_start_matches('/'))
                        .is_some_and(|v| !v.is_null() && !Sealer::is_sealed(v))
                })
                .collect();
            if plain.is_empty() {
                continue;
            }
            self.sealer.seal_fields(&mut props, &plain);
            let sealed = serde_json::to_string(&props).expect("properties serialise");
            self.tx
                .prepare_cached("UPDATE journal SET value = ?1 WHERE seq = ?2")?
                .execute(params![sealed, seq])?;
            self.scrub = true;
        }
        Ok(())
    }

    /// Starts replacing the whole configuration (a restore): removes every resource,
    /// reference and usage row, and journals one `replace` entry. Follow with
    /// `restore_resource`/`restore_ref`/`restore_usage`; all of it commits or none does.
    pub fn replace_all(&mut self, summary: &Value) -> Result<()> {
        self.tx.execute("DELETE FROM resources", [])?;
        self.tx.execute("DELETE FROM refs", [])?;
        self.tx.execute("DELETE FROM usage", [])?;
        let text = serde_json::to_string(summary).expect("summary serialises");
        self.journal("/", "service", "replace", Some(&text))
    }

    /// Inserts one resource during a replace (journaled by the `replace` entry, not one by one).
    pub fn restore_resource(
        &mut self,
        path: &ResourcePath,
        mut properties: Map<String, Value>,
    ) -> Result<()> {
        let pointers = secret_pointers(path.kind, &properties);
        self.sealer.seal_fields(&mut properties, &pointers);
        let text = serde_json::to_string(&properties).expect("properties serialise");
        self.tx
            .prepare_cached(
                "INSERT INTO resources (path, kind, parent, name, properties, revision) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![path.as_string(), path.kind.name(), path.parent_string(), path.id(), text, self.next as i64])?;
        Ok(())
    }

    /// Inserts one reference during a replace.
    pub fn restore_ref(&mut self, from: &str, to: &str) -> Result<()> {
        self.tx
            .prepare_cached("INSERT OR IGNORE INTO refs (from_path, to_path) VALUES (?1, ?2)")?
            .execute(params![from, to])?;
        Ok(())
    }

    /// Inserts one usage row during a replace.
    pub fn restore_usage(&mut self, r: &UsageRow) -> Result<()> {
        upsert_usage(&self.tx, r)
    }

    /// Replaces the service settings without a journal entry of their own (during a replace).
    pub fn restore_service(&mut self, settings: &ServiceSettings) -> Result<()> {
        let text = serde_json::to_string(settings).expect("settings serialise");
        self.tx.execute(
            "INSERT INTO meta (key, value) VALUES ('service', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![text],
        )?;
        Ok(())
    }

    /// Replays one journal entry of another instance (a move's catch-up): the resource as it
    /// was written there, with its references; secret fields arrive in plaintext and are
    /// sealed with this store's key. Entries of the service itself are region-bound and are
    /// skipped; a `replace` (a restore on the source) cannot be replayed piecewise.
    pub fn apply_entry(&mut self, entry: &JournalEntry) -> Result<()> {
        if entry.path == "/" {
            if entry.op == "replace" {
                return Err(StoreError::Corrupt(format!(
                    "revision {} restored a whole archive on the source; it cannot be replayed entry by entry (take a new backup)",
                    entry.revision
                )));
            }
            return Ok(());
        }
        let path = ResourcePath::parse_stored(&entry.path)
            .map_err(|e| StoreError::Corrupt(format!("journal entry {}: {e}", entry.seq)))?;
        match (entry.op.as_str(), &entry.value) {
            ("put", Some(Value::Object(props))) => {
                self.put(&path, props.clone(), &entry.refs)?;
            }
            ("delete", _) => {
                self.delete(&entry.path)?;
            }
            (op, _) => {
                return Err(StoreError::Corrupt(format!(
                    "journal entry {}: cannot replay '{op}' without a value",
                    entry.seq
                )));
            }
        }
        Ok(())
    }

    /// Deletes one resource (not its descendants). Returns whether it existed.
    pub fn delete(&mut self, path: &str) -> Result<bool> {
        let kind: Option<String> = self
            .tx
            .query_row(
                "SELECT kind FROM resources WHERE path = ?1",
                params![path],
                |r| r.get(0),
            )
            .optional()?;
        let Some(kind) = kind else {
            return Ok(false);
        };
        self.tx
            .execute("DELETE FROM resources WHERE path = ?1", params![path])?;
        self.tx
            .execute("DELETE FROM refs WHERE from_path = ?1", params![path])?;
        self.journal(path, &kind, "delete", None)?;
        Ok(true)
    }

    /// The paths a resource references.
    pub fn references_of(&self, path: &str) -> Result<Vec<String>> {
        self.q_references_of(path)
    }

    /// Renames every resource at or below `from` to live below `to` (same kinds), e.g. when an
    /// API revision becomes current. With `rewrite_refs`, whoever referenced the old paths
    /// references the new ones afterwards.
    pub fn move_tree(
        &mut self,
        from: &ResourcePath,
        to: &ResourcePath,
        rewrite_refs: bool,
    ) -> Result<()> {
        let from_s = from.as_string();
        let to_s = to.as_string();
        let mut all = Vec::new();
        if let Some(root) = self.get(&from_s)? {
            all.push(root);
        }
        all.extend(self.descendants(&from_s)?);
        for res in all {
            let new_path = format!("{to_s}{}", &res.path[from_s.len()..]);
            let parsed = ResourcePath::parse_stored(&new_path)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let refs = self.references_of(&res.path)?;
            self.delete(&res.path)?;
            self.put(&parsed, res.properties, &refs)?;
        }
        if !rewrite_refs {
            return Ok(());
        }
        self.tx.execute(
            "UPDATE OR IGNORE refs SET to_path = ?2 || substr(to_path, length(?1) + 1)
             WHERE to_path = ?1 OR to_path LIKE ?1 || '/%'",
            params![from_s, to_s],
        )?;
        Ok(())
    }
}

pub struct ReadTx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    sealer: &'a Sealer,
    revision: u64,
}

impl Queries for ReadTx<'_> {
    fn conn(&self) -> &Connection {
        self.tx
    }
    fn sealer(&self) -> &Sealer {
        self.sealer
    }
}

impl ReadTx<'_> {
    /// The revision this read view is at.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn get(&self, path: &str) -> Result<Option<StoredResource>> {
        self.q_get(path)
    }

    pub fn children(&self, kind: Kind, parent: &str) -> Result<Vec<StoredResource>> {
        self.q_children(kind, parent)
    }

    /// All resources of a kind anywhere in the tree, in path order.
    pub fn all_of_kind(&self, kind: Kind) -> Result<Vec<StoredResource>> {
        self.q_query(
            "SELECT path, kind, properties, revision FROM resources WHERE kind = ?1 ORDER BY path",
            &[&kind.name()],
        )
    }

    /// One page of a collection in id order; `hide_revisions` leaves out `;rev=` API ids.
    pub fn page(
        &self,
        kind: Kind,
        parent: &str,
        skip: u64,
        top: u64,
        hide_revisions: bool,
    ) -> Result<Page> {
        self.q_page(kind, parent, skip, top, hide_revisions)
    }

    pub fn service(&self) -> Result<Option<ServiceSettings>> {
        self.q_service()
    }

    pub fn referrers(&self, path: &str) -> Result<Vec<String>> {
        self.q_referrers(path)
    }

    /// Streams every resource in path order without holding them all in memory.
    pub fn for_each_resource(&self, mut f: impl FnMut(StoredResource) -> Result<()>) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare("SELECT path, kind, properties, revision FROM resources ORDER BY path")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let res = row_to_resource(
                self.sealer,
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
            )?;
            f(res)?;
        }
        Ok(())
    }

    /// Usage rows with `from <= bucket < to` (Unix seconds).
    pub fn usage(&self, from: i64, to: i64) -> Result<Vec<UsageRow>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT * FROM usage WHERE bucket >= ?1 AND bucket < ?2 ORDER BY bucket, api, operation, product, subscription, region",
        )?;
        let rows = stmt.query_map(params![from, to], usage_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The distinct paths changed after revision `since` (`"/"` is the service settings).
    pub fn changed_paths_since(&self, since: u64) -> Result<Vec<String>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT DISTINCT path FROM journal WHERE revision > ?1")?;
        let rows = stmt.query_map(params![since as i64], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// All resources below `path` (not `path` itself), in path order.
    pub fn descendants(&self, path: &str) -> Result<Vec<StoredResource>> {
        self.q_descendants(path)
    }

    /// The paths a resource references.
    pub fn references_of(&self, path: &str) -> Result<Vec<String>> {
        self.q_references_of(path)
    }

    /// Resources of `kind` whose indexed string property equals `value`, ignoring case.
    pub fn find_by_property(
        &self,
        kind: Kind,
        field: &str,
        value: &str,
    ) -> Result<Vec<StoredResource>> {
        self.q_find_by_property(kind, field, value)
    }

    /// How many resources the store holds.
    pub fn resource_count(&self) -> Result<u64> {
        let n: i64 = self
            .tx
            .query_row("SELECT count(*) FROM resources", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Streams every reference `(from, to)`.
    pub fn for_each_ref(&self, mut f: impl FnMut(String, String) -> Result<()>) -> Result<()> {
        let mut stmt = self
            .tx
            .prepare("SELECT from_path, to_path FROM refs ORDER BY from_path, to_path")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            f(row.get(0)?, row.get(1)?)?;
        }
        Ok(())
    }

    /// When the first revision after `revision` was committed (RFC 3339), if the journal has it.
    pub fn first_commit_after(&self, revision: u64) -> Result<Option<String>> {
        Ok(self
            .tx
            .query_row(
                "SELECT at FROM journal WHERE revision > ?1 ORDER BY seq LIMIT 1",
                params![revision as i64],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The last revision committed before `at` (RFC 3339 UTC, as the journal records times).
    pub fn last_revision_before(&self, at: &str) -> Result<Option<u64>> {
        let rev: Option<i64> = self.tx.query_row(
            "SELECT max(revision) FROM journal WHERE at < ?1",
            params![at],
            |r| r.get(0),
        )?;
        Ok(rev.map(|r| r as u64))
    }

    /// An operational value set with `set_meta`.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        get_meta(self.tx, key)
    }

    /// The highest revision whose journal entries were compacted away (0: none were): the
    /// changes after an older revision can no longer be read from the journal.
    pub fn journal_floor(&self) -> Result<u64> {
        journal_floor(self.tx)
    }

    /// Whether the changes after `since` cannot be replayed from the journal: a
    /// whole-configuration replace (a restore) was committed after it, or the journal was
    /// compacted past it. Whoever follows from `since` must reload everything.
    pub fn replaced_since(&self, since: u64) -> Result<bool> {
        if since < self.journal_floor()? {
            return Ok(true);
        }
        let n: i64 = self.tx.query_row(
            "SELECT count(*) FROM journal WHERE revision > ?1 AND op = 'replace'",
            params![since as i64],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Streams every resource of one kind in path order.
    pub fn for_each_of_kind(
        &self,
        kind: Kind,
        mut f: impl FnMut(StoredResource) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.tx.prepare(
            "SELECT path, kind, properties, revision FROM resources WHERE kind = ?1 ORDER BY path",
        )?;
        let mut rows = stmt.query(params![kind.name()])?;
        while let Some(row) = rows.next()? {
            f(row_to_resource(
                self.sealer,
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
            )?)?;
        }
        Ok(())
    }

    /// The journal entries of whole revisions after `since`, oldest first: as many revisions
    /// as fit in about `max_entries` entries, and always at least the first one, however large
    /// (a consumer applies a revision at once or not at all).
    pub fn journal_revisions(&self, since: u64, max_entries: u64) -> Result<Vec<JournalEntry>> {
        let at_limit: Option<i64> = self
            .tx
            .query_row(
                "SELECT revision FROM journal WHERE revision > ?1 ORDER BY seq LIMIT 1 OFFSET ?2",
                params![since as i64, max_entries as i64],
                |r| r.get(0),
            )
            .optional()?;
        let through = match at_limit {
            None => u64::MAX,
            Some(rev) => {
                let first: i64 = self.tx.query_row(
                    "SELECT min(revision) FROM journal WHERE revision > ?1",
                    params![since as i64],
                    |r| r.get(0),
                )?;
                if rev == first {
                    rev as u64
                } else {
                    rev as u64 - 1
                }
            }
        };
        let (entries, _) = self.journal_between(since, through, 0, u64::MAX >> 1)?;
        Ok(entries)
    }

    /// Journal entries with revision greater than `since`, oldest first, at most `top`,
    /// skipping `skip` entries.
    pub fn journal(&self, since: u64, skip: u64, top: u64) -> Result<(Vec<JournalEntry>, u64)> {
        self.journal_between(since, u64::MAX >> 1, skip, top)
    }

    fn journal_between(
        &self,
        since: u64,
        through: u64,
        skip: u64,
        top: u64,
    ) -> Result<(Vec<JournalEntry>, u64)> {
        let through = through.min(i64::MAX as u64) as i64;
        let total: i64 = self.tx.query_row(
            "SELECT count(*) FROM journal WHERE revision > ?1 AND revision <= ?2",
            params![since as i64, through],
            |r| r.get(0),
        )?;
        let mut stmt = self.tx.prepare_cached(
            "SELECT seq, revision, at, path, kind, op, value, refs, actor FROM journal
             WHERE revision > ?1 AND revision <= ?2 ORDER BY seq LIMIT ?3 OFFSET ?4",
        )?;
        let rows = stmt.query_map(
            params![
                since as i64,
                through,
                top.min(i64::MAX as u64) as i64,
                skip.min(i64::MAX as u64) as i64
            ],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, revision, at, path, kind, op, value, refs, actor) = row?;
            let corrupt =
                |e: serde_json::Error| StoreError::Corrupt(format!("journal entry {seq}: {e}"));
            let value = value
                .map(|v| serde_json::from_str(&v))
                .transpose()
                .map_err(corrupt)?;
            let refs = refs
                .map(|v| serde_json::from_str(&v))
                .transpose()
                .map_err(corrupt)?
                .unwrap_or_default();
            out.push(JournalEntry {
                seq: seq as u64,
                revision: revision as u64,
                at,
                path,
                kind,
                op,
                value,
                refs,
                actor,
            });
        }
        Ok((out, total as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_model::Sku;
    use serde_json::json;

    fn settings() -> ServiceSettings {
        ServiceSettings {
            name: "contoso".into(),
            location: "westeurope".into(),
            sku: Sku {
                name: "Developer".into(),
                capacity: 1,
            },
            publisher_email: "a@b.c".into(),
            publisher_name: "A".into(),
            notification_sender_email: None,
            created_at_utc: now_rfc3339(),
            hostname_configurations: Vec::new(),
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn an_attempt_taken_back_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        let tag = |id: &str| ResourcePath::top(Kind::Tag, id);
        let c = store
            .write(|w| -> Result<()> {
                w.attempt(|w| {
                    Ok::<_, StoreError>((
                        w.put(&tag("kept"), obj(json!({"displayName": "k"})), &[])?,
                        true,
                    ))
                })?;
                w.attempt(|w| {
                    Ok::<_, StoreError>((
                        w.put(&tag("undone"), obj(json!({"displayName": "u"})), &[])?,
                        false,
                    ))
                })?;
                let failed: Result<()> = w.attempt(|w| {
                    w.put(&tag("failed"), obj(json!({"displayName": "f"})), &[])?;
                    Err(StoreError::Corrupt("on purpose".into()))
                });
                assert!(failed.is_err());
                Ok(())
            })
            .unwrap();
        assert!(c.changed);
        let (kept, undone, failed, journal) = store
            .read(|r| -> Result<_> {
                Ok((
                    r.get("/tags/kept")?.is_some(),
                    r.get("/tags/undone")?.is_some(),
                    r.get("/tags/failed")?.is_some(),
                    r.changed_paths_since(0)?,
                ))
            })
            .unwrap();
        assert!(kept && !undone && !failed);
        assert_eq!(journal, vec!["/tags/kept".to_string()]);
        let c = store
            .write(|w| -> Result<()> {
                w.attempt(|w| {
                    Ok::<_, StoreError>((
                        w.put(&tag("undone"), obj(json!({"displayName": "u"})), &[])?,
                        false,
                    ))
                })?;
                Ok(())
            })
            .unwrap();
        assert!(!c.changed, "an attempt taken back is no change");
    }

    #[test]
    fn writes_bump_revision_and_journal_seals_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        let c = store
            .write(|w| -> Result<()> { w.set_service(&settings()) })
            .unwrap();
        assert_eq!(c.revision, 1);
        let sub = ResourcePath::top(Kind::Subscription, "s1");
        let c = store
            .write(|w| -> Result<u64> {
                w.put(
                    &sub,
                    obj(json!({"scope": "/apis", "displayName": "S", "primaryKey": "topsecret"})),
                    &["/apis".into()],
                )
            })
            .unwrap();
        assert_eq!(c.revision, 2);
        // No change → no bump.
        let c = store.write(|_w| -> Result<()> { Ok(()) }).unwrap();
        assert_eq!(c.revision, 2);
        assert!(!c.changed);
        let got = store.read(|r| r.get("/subscriptions/s1")).unwrap().unwrap();
        assert_eq!(got.properties["primaryKey"], "topsecret");
        assert_eq!(got.revision, 2);
        // Sealed on disk and in the journal.
        let raw = std::fs::read(store.db_path()).unwrap();
        let wal = std::fs::read(store.db_path().with_extension("db-wal")).unwrap_or_default();
        let hay = [raw, wal].concat();
        assert!(!hay.windows(9).any(|w| w == b"topsecret"));
        let (entries, total) = store.read(|r| r.journal(1, 0, 100)).unwrap();
        assert_eq!(total, 1);
        assert_eq!(entries[0].path, "/subscriptions/s1");
        assert!(
            entries[0].value.as_ref().unwrap()["primaryKey"]
                .as_str()
                .unwrap()
                .starts_with("sealed:v1:")
        );
    }

    #[test]
    fn failed_transaction_changes_nothing_and_reads_are_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        store
            .write(|w| -> Result<()> { w.set_service(&settings()) })
            .unwrap();
        let r: std::result::Result<Committed<()>, StoreError> = store.write(|w| {
            w.put(
                &ResourcePath::top(Kind::Tag, "t"),
                obj(json!({"displayName": "T"})),
                &[],
            )?;
            Err(StoreError::Corrupt("boom".into()))
        });
        assert!(r.is_err());
        assert!(store.read(|r| r.get("/tags/t")).unwrap().is_none());
        assert_eq!(store.revision().unwrap(), 1);

        // A reader holding a view does not see a later write.
        store
            .read(|r| -> Result<()> {
                store.write(|w| -> Result<u64> {
                    w.put(
                        &ResourcePath::top(Kind::Tag, "u"),
                        obj(json!({"displayName": "U"})),
                        &[],
                    )
                })?;
                assert!(r.get("/tags/u")?.is_none());
                assert_eq!(r.revision(), 1);
                Ok(())
            })
            .unwrap();
        assert!(store.read(|r| r.get("/tags/u")).unwrap().is_some());
    }

    #[test]
    fn compaction_keeps_the_configuration_and_tells_followers_to_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        let tag = |id: &str| ResourcePath::top(Kind::Tag, id);
        for i in 0..10 {
            store
                .write(|w| -> Result<()> {
                    w.put(
                        &tag(&format!("t{i}")),
                        obj(json!({"displayName": "x"})),
                        &[],
                    )?;
                    w.put(
                        &tag(&format!("u{i}")),
                        obj(json!({"displayName": "y"})),
                        &[],
                    )?;
                    Ok(())
                })
                .unwrap();
        }
        // Whole revisions only: 4 entries are 2 revisions; 3 are only the first.
        let first = store.read(|r| r.journal_revisions(0, 4)).unwrap();
        assert_eq!(first.len(), 4);
        assert_eq!(first.last().unwrap().revision, 2);
        assert_eq!(store.read(|r| r.journal_revisions(0, 3)).unwrap().len(), 2);
        // A revision larger than the limit still comes whole.
        let one = store.read(|r| r.journal_revisions(0, 1)).unwrap();
        assert_eq!(one.len(), 2);

        assert_eq!(store.compact_journal(6).unwrap(), 12);
        assert_eq!(store.compact_journal(6).unwrap(), 0, "nothing twice");
        store
            .read(|r| -> Result<()> {
                assert_eq!(r.journal_floor()?, 6);
                assert!(r.replaced_since(5)?, "a follower at 5 must reload");
                assert!(!r.replaced_since(6)?);
                assert_eq!(r.resource_count()?, 20, "the configuration is untouched");
                assert_eq!(r.journal(6, 0, 100)?.1, 8);
                Ok(())
            })
            .unwrap();
        assert_eq!(store.revision().unwrap(), 10, "compaction is no revision");
    }

    #[test]
    fn descendants_and_referrers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        store
            .write(|w| -> Result<()> {
                w.put(&ResourcePath::top(Kind::Api, "a"), obj(json!({})), &[])?;
                w.put(&ResourcePath::top(Kind::Api, "ab"), obj(json!({})), &[])?;
                let op = ResourcePath::new(
                    Kind::Operation,
                    vec![("apis", "a".into()), ("operations", "o".into())],
                );
                w.put(&op, obj(json!({})), &[])?;
                w.put(
                    &ResourcePath::top(Kind::Subscription, "s"),
                    obj(json!({})),
                    &["/apis/a".into()],
                )?;
                assert_eq!(w.descendants("/apis/a")?.len(), 1);
                assert_eq!(
                    w.referrers("/apis/a")?,
                    vec!["/subscriptions/s".to_string()]
                );
                assert!(w.referrers("/apis/ab")?.is_empty());
                Ok(())
            })
            .unwrap();
    }
}
