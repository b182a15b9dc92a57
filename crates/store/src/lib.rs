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

mod coordination;
mod fence;
mod lock;
mod migrations;
pub mod pg;
pub mod pg_engine;
mod queries;
mod read;
mod seal;
mod sql;
mod tokens;
mod write;

use gatehouse_model::{Snapshot, StoredResource};
use queries::{JOURNAL_FLOOR, current_revision, get_meta, journal_floor, set_meta, write_head};
use rusqlite::{Connection, TransactionBehavior};
use serde_json::Value;
use sql::{Arg, Db};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use coordination::Lease;
pub use fence::WriteFence;
pub use lock::{DataDirLock, LOCK_FILE, LockError};
pub use migrations::SCHEMA_VERSION;
pub use read::ReadTx;
pub use seal::{SealError, Sealer, remove_fields};
pub use tokens::TokenRecord;
use write::WriteConn;
pub use write::WriteTx;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Writes are refused for now: the store's write fence holds (a move's freeze).
    #[error("{}", .0.message)]
    Fenced(WriteFence),
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
    /// The service in a shared store was deleted (`DELETE /`): no node serves it again.
    #[error(
        "the service there was {0}; no node serves it again (restore its backup into another database)"
    )]
    Deleted(String),
    /// The shared store cannot be reached now (down, restarting, the connection cut): the
    /// operation may be tried again.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store has not been initialised with a service")]
    NoService,
    #[error(
        "the store has schema version {found}, newer than this Gatehouse knows ({known}): run the release that wrote it, or a newer one"
    )]
    SchemaTooNew { found: usize, known: usize },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The meta key that marks a shared store's service deleted.
pub const DELETED_META: &str = "deleted";

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

/// Where an instance's configuration lives.
enum Backend {
    /// The embedded store: one SQLite file, a writer and a pool of readers.
    Sqlite {
        writer: Mutex<Connection>,
        readers: Mutex<Vec<Connection>>,
        db_path: PathBuf,
        /// The latest committed revision, for whoever follows changes (the gateway).
        committed: tokio::sync::watch::Sender<u64>,
    },
    /// PostgreSQL, shared by several nodes.
    Postgres(pg_engine::Engine),
}

pub struct Store {
    backend: Backend,
    sealer: Sealer,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Sqlite { db_path, .. } => {
                f.debug_struct("Store").field("db_path", db_path).finish()
            }
            Backend::Postgres(_) => f.debug_struct("Store").field("on", &"postgres").finish(),
        }
    }
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
        let revision = current_revision(Db::Sqlite(&conn))?;
        Ok(Store {
            backend: Backend::Sqlite {
                writer: Mutex::new(conn),
                readers: Mutex::new(Vec::new()),
                db_path: db_path.to_path_buf(),
                committed: tokio::sync::watch::channel(revision).0,
            },
            sealer: Sealer::new(key),
        })
    }

    /// Opens the store on PostgreSQL at `url` (whose schema [`pg::migrate`] brought up to
    /// date), sealing with `key` — the same key on every node of the instance.
    pub fn open_postgres(url: &str, key: &[u8; 32]) -> Result<Store> {
        let engine = pg_engine::Engine::start(url, 0)?;
        let revision = {
            let tx = engine.begin()?;
            current_revision(Db::Pg(&tx))?
        };
        engine.committed(revision);
        Ok(Store {
            backend: Backend::Postgres(engine),
            sealer: Sealer::new(key),
        })
    }

    /// Opens the store a node serves from: the embedded SQLite file in `data_dir`, or with a
    /// `postgres://` URL the shared database (waited for while unreachable — `waiting` hears
    /// why —, migrated, and checked to seal with this node's key, `data_dir`'s `store.key`).
    pub fn open_for_node(
        data_dir: &Path,
        url: Option<&str>,
        wait: std::time::Duration,
        waiting: impl FnMut(&str),
    ) -> Result<Store> {
        let Some(url) = url else {
            return Store::open_dir(data_dir);
        };
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let key_path = data_dir.join(gatehouse_model::files::STORE_KEY);
        let key = load_or_create_key(&key_path)?;
        let mut client = pg::connect(url, wait, waiting)?;
        pg::migrate(&mut client)?;
        if let Some(note) = pg::meta(&mut client, DELETED_META)? {
            return Err(StoreError::Deleted(note));
        }
        drop(client);
        let store = Store::open_postgres(url, &key)?;
        store.check_key(&key_path)?;
        Ok(store)
    }

    /// Makes sure every node seals with the same key: the first to open the database leaves a
    /// sealed value in it, and a node whose key cannot open it is refused.
    fn check_key(&self, key_path: &Path) -> Result<()> {
        const CHECK: &str = "seal_check";
        let mut probe = serde_json::Map::new();
        probe.insert("check".into(), Value::String("gatehouse".into()));
        self.sealer.seal_fields(&mut probe, &["/check"]);
        let sealed = Value::Object(probe).to_string();
        // The first node's probe stays (nodes starting together race to write it).
        let found = self.operational(|db| {
            db.exec(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                &[Arg::Text(CHECK), Arg::Text(&sealed)],
            )?;
            queries::get_meta(db, CHECK)
        })?;
        let mut probe: serde_json::Map<String, Value> = found
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        let opened = self.sealer.open_fields(&mut probe, &["/check"]).is_ok()
            && probe.get("check") == Some(&Value::String("gatehouse".into()));
        if opened {
            return Ok(());
        }
        Err(StoreError::Corrupt(format!(
            "this node's store key ({}) is not the one the instance's other nodes seal with: copy store.key from one of them",
            key_path.display()
        )))
    }

    /// The SQLite file, for the embedded store.
    pub fn db_path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite { db_path, .. } => Some(db_path),
            Backend::Postgres(_) => None,
        }
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
        self.run_write(actor, Commit::Yes, f)
    }

    /// Runs `f` in a write transaction that is always taken back: what a change would do (an
    /// import's plan, a point-in-time restore's dry run). It commits nothing, so a write fence
    /// does not refuse it.
    pub fn trial_as<T, E: From<StoreError>>(
        &self,
        actor: &str,
        f: impl FnOnce(&mut WriteTx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<Committed<T>, E> {
        self.run_write(actor, Commit::No, f)
    }

    fn run_write<T, E: From<StoreError>>(
        &self,
        actor: &str,
        commit: Commit,
        f: impl FnOnce(&mut WriteTx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<Committed<T>, E> {
        match &self.backend {
            Backend::Sqlite {
                writer, committed, ..
            } => {
                let mut conn = writer.lock().unwrap_or_else(|e| e.into_inner());
                sqlite_write(&mut conn, &self.sealer, actor, committed, commit, f)
            }
            Backend::Postgres(engine) => pg_write(engine, &self.sealer, actor, commit, f),
        }
    }

    /// Runs `f` against one consistent read view of the store.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&ReadTx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        match &self.backend {
            Backend::Sqlite {
                readers, db_path, ..
            } => {
                let conn = take_reader(readers, db_path)?;
                let result = (|| {
                    let tx = conn.unchecked_transaction().map_err(StoreError::from)?;
                    // The first read pins the WAL snapshot for the whole transaction.
                    let revision = current_revision(Db::Sqlite(&tx))?;
                    let r = ReadTx {
                        db: Db::Sqlite(&tx),
                        sealer: &self.sealer,
                        revision,
                    };
                    let out = f(&r);
                    drop(tx);
                    out
                })();
                readers.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
                result
            }
            Backend::Postgres(engine) => {
                let tx = engine.begin_read()?;
                let revision = current_revision(Db::Pg(&tx))?;
                let r = ReadTx {
                    db: Db::Pg(&tx),
                    sealer: &self.sealer,
                    revision,
                };
                f(&r)
            }
        }
    }

    /// Runs `f` in a transaction that changes no configuration (no revision, no journal):
    /// operational data — usage, tokens, meta values.
    pub(crate) fn operational<T>(&self, f: impl FnOnce(Db<'_>) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite { writer, .. } => {
                let mut conn = writer.lock().unwrap_or_else(|e| e.into_inner());
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let out = f(Db::Sqlite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Backend::Postgres(engine) => {
                let tx = engine.begin()?;
                let out = f(Db::Pg(&tx))?;
                tx.commit()?;
                Ok(out)
            }
        }
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

    /// Adds usage rows to their buckets' aggregates (no revision, no journal).
    pub fn add_usage(&self, rows: &[UsageRow]) -> Result<()> {
        self.operational(|db| rows.iter().try_for_each(|r| upsert_usage(db, r)))
    }

    /// Takes every usage row out of the store (a self-hosted gateway's, sent to its primary).
    pub fn take_usage(&self) -> Result<Vec<UsageRow>> {
        self.operational(|db| {
            let rows = db.rows("SELECT * FROM usage ORDER BY bucket", &[])?;
            db.exec("DELETE FROM usage", &[])?;
            rows.iter().map(usage_of).collect()
        })
    }

    /// Copies the database file with SQLite's online backup API (the physical floor a logical
    /// backup is measured against).
    pub fn copy_database_to(&self, dest: &Path) -> Result<()> {
        let Backend::Sqlite { db_path, .. } = &self.backend else {
            return Err(StoreError::Postgres(
                "a PostgreSQL store has no database file to copy (use pg_dump)".into(),
            ));
        };
        let src = Connection::open(db_path)?;
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
        let removed = match &self.backend {
            Backend::Sqlite { writer, .. } => {
                let mut conn = writer.lock().unwrap_or_else(|e| e.into_inner());
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let removed = compact(Db::Sqlite(&tx), through)?;
                tx.commit()?;
                if removed > 0 {
                    incremental_vacuum(&conn)?;
                }
                removed
            }
            Backend::Postgres(engine) => {
                // Under the write lock, so that no write commits a revision in between.
                let (tx, _) = engine.begin_write()?;
                let removed = compact(Db::Pg(&tx), through)?;
                tx.commit()?;
                removed
            }
        };
        Ok(removed)
    }

    /// Drops the indexes that serve the management API's lookups by property (uniqueness of
    /// paths, emails, display names): a read-only copy — a self-hosted gateway's — never makes
    /// them, and without them it takes a snapshot faster. Lookups still work, by scanning.
    pub fn drop_lookup_indexes(&self) -> Result<()> {
        self.operational(|db| {
            db.batch(
                "DROP INDEX IF EXISTS resources_by_path_prop;
                 DROP INDEX IF EXISTS resources_by_email;
                 DROP INDEX IF EXISTS resources_by_display_name;",
            )
        })
    }

    /// Sets an operational value (not configuration: no revision, no journal entry).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.operational(|db| set_meta(db, key, value))
    }

    /// Sets (`Some`) or lifts (`None`) the write fence, under the write lock: a write in
    /// progress commits first, every later one on any node is refused while it holds.
    pub fn set_write_fence(&self, fence: Option<&WriteFence>) -> Result<()> {
        let apply = |db: Db<'_>| match fence {
            Some(f) => {
                let text = serde_json::to_string(f)
                    .map_err(|e| StoreError::Corrupt(format!("write fence: {e}")))?;
                set_meta(db, fence::WRITE_FENCE, &text)
            }
            None => db
                .exec(
                    "DELETE FROM meta WHERE key = ?1",
                    &[Arg::Text(fence::WRITE_FENCE)],
                )
                .map(drop),
        };
        match &self.backend {
            Backend::Sqlite { .. } => self.operational(apply),
            Backend::Postgres(engine) => {
                let tx = engine.begin_locked()?;
                apply(Db::Pg(&tx))?;
                tx.commit()
            }
        }
    }

    /// The write fence, if one holds now.
    pub fn write_fence(&self) -> Result<Option<WriteFence>> {
        let text = self.read(|r| get_meta(r.db, fence::WRITE_FENCE))?;
        Ok(text.as_deref().and_then(WriteFence::parse_holding))
    }

    /// Why the service was deleted, if it was (on a shared store, by any node).
    pub fn deleted(&self) -> Result<Option<String>> {
        self.read(|r| get_meta(r.db, DELETED_META))
    }

    /// Opens the secret fields of a journal entry's value, for replaying it elsewhere (an
    /// archive's segment, another instance): every field that is or may have been secret,
    /// since entries written before a field became secret were sealed when it did.
    pub fn open_entry(&self, entry: &mut JournalEntry) -> Result<()> {
        let Some(kind) = gatehouse_model::Kind::from_name(&entry.kind) else {
            return Ok(());
        };
        if let Some(Value::Object(m)) = entry.value.as_mut() {
            let mut pointers = gatehouse_model::props::secret_pointers(kind, m);
            pointers.extend(gatehouse_model::props::possible_secret_pointers(kind));
            pointers.sort_unstable();
            pointers.dedup();
            self.sealer.open_fields(m, &pointers)?;
        }
        Ok(())
    }

    /// Whether other nodes may share this store (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Takes or renews the lease `name` for `holder` until `ttl` from now; who holds it if
    /// another does.
    pub fn take_lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<Lease> {
        self.operational(|db| coordination::take(db, name, holder, ttl))
    }

    /// Gives the lease `name` up, if `holder` has it.
    pub fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.operational(|db| coordination::release(db, name, holder))
    }

    /// The unexpired holder of the lease `name`.
    pub fn lease_holder(&self, name: &str) -> Result<Option<String>> {
        self.read(|r| coordination::holder(r.db, name))
    }

    /// Writes the record of a long-running operation, readable on every node.
    pub fn put_operation(&self, id: &str, body: &Value) -> Result<()> {
        self.operational(|db| coordination::put_record(db, id, body))
    }

    /// The record of a long-running operation.
    pub fn operation(&self, id: &str) -> Result<Option<Value>> {
        self.read(|r| coordination::record(r.db, id))
    }

    /// Follows committed revisions: the receiver sees every new revision (possibly coalesced);
    /// on PostgreSQL, every node's.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        match &self.backend {
            Backend::Sqlite { committed, .. } => committed.subscribe(),
            Backend::Postgres(engine) => engine.subscribe(),
        }
    }
}

/// Whether a write transaction commits, or is a trial always taken back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Commit {
    Yes,
    No,
}

/// The revision a write starts from: refused while fenced or deleted, unless it is a trial.
fn start_revision(db: Db<'_>, commit: Commit) -> Result<u64> {
    let head = write_head(db)?;
    match commit {
        Commit::Yes => head.admit(),
        Commit::No => Ok(head.revision),
    }
}

/// A write on SQLite: one IMMEDIATE transaction; the revision bumped iff something changed.
fn sqlite_write<T, E: From<StoreError>>(
    connection: &mut Connection,
    sealer: &Sealer,
    actor: &str,
    committed: &tokio::sync::watch::Sender<u64>,
    commit: Commit,
    f: impl FnOnce(&mut WriteTx<'_>) -> std::result::Result<T, E>,
) -> std::result::Result<Committed<T>, E> {
    let (value, revision, changed, scrub) = {
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let current = start_revision(Db::Sqlite(&tx), commit)?;
        let mut w = WriteTx::new(WriteConn::Sqlite(tx), sealer, current, actor);
        let value = f(&mut w)?;
        if commit == Commit::No {
            return Ok(Committed {
                value,
                revision: current,
                changed: false,
            }); // dropped: rolled back
        }
        let changed = w.changes > 0;
        let revision = if changed { w.next } else { current };
        if changed {
            set_meta(w.conn.db(), "revision", &revision.to_string())?;
        }
        let WriteTx { conn, scrub, .. } = w;
        let WriteConn::Sqlite(tx) = conn else {
            unreachable!("made above as SQLite")
        };
        tx.commit().map_err(StoreError::from)?;
        (value, revision, changed, scrub)
    };
    if scrub {
        // The write log still holds the pages as they were, plaintext included: copy the
        // new pages into the database and empty the log.
        // The change is committed either way: a checkpoint that cannot finish (readers
        // kept busy past the timeout) is reported, and SQLite's own checkpoints follow.
        if let Err(e) = connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "the write log could not be emptied after a value became secret");
        }
    }
    if changed {
        // Still under the writer lock, so followers never see revisions go backwards.
        committed.send_replace(revision);
    }
    Ok(Committed {
        value,
        revision,
        changed,
    })
}

/// A write on PostgreSQL: a transaction holding the instance's write lock (so nodes take
/// turns); the revision bumped and announced iff something changed.
fn pg_write<T, E: From<StoreError>>(
    engine: &pg_engine::Engine,
    sealer: &Sealer,
    actor: &str,
    commit: Commit,
    f: impl FnOnce(&mut WriteTx<'_>) -> std::result::Result<T, E>,
) -> std::result::Result<Committed<T>, E> {
    let tx = engine.begin_locked()?;
    let current = start_revision(Db::Pg(&tx), commit)?;
    let mut w = WriteTx::new(WriteConn::Pg(tx), sealer, current, actor);
    let value = f(&mut w)?;
    if commit == Commit::No {
        return Ok(Committed {
            value,
            revision: current,
            changed: false,
        }); // dropped: rolled back
    }
    w.settle()?;
    let changed = w.changes > 0;
    let revision = if changed { w.next } else { current };
    let WriteTx { conn, scrub, .. } = w;
    let WriteConn::Pg(tx) = conn else {
        unreachable!("made above as PostgreSQL")
    };
    if changed {
        engine.commit_write(tx, revision)?;
    } else {
        tx.commit()?;
    }
    if scrub {
        // Old row versions keep the plaintext until vacuumed.
        if let Err(e) = engine.vacuum("journal") {
            tracing::warn!(error = %e, "the journal could not be vacuumed after a value became secret");
        }
    }
    Ok(Committed {
        value,
        revision,
        changed,
    })
}

/// Removes the journal up to `through` (at most the current revision) and records the floor.
fn compact(db: Db<'_>, through: u64) -> Result<u64> {
    let floor = journal_floor(db)?;
    let through = through.min(current_revision(db)?);
    if through <= floor {
        return Ok(0);
    }
    let removed = db.exec(
        "DELETE FROM journal WHERE revision <= ?1",
        &[Arg::Int(through as i64)],
    )?;
    set_meta(db, JOURNAL_FLOOR, &through.to_string())?;
    Ok(removed)
}

/// Gives the freed pages back to the file system (the database is in incremental auto-vacuum
/// mode), so the file shrinks rather than only stopping to grow. Stepped to its end: each
/// step frees pages, one call to `execute` would stop early.
fn incremental_vacuum(conn: &Connection) -> Result<()> {
    let mut vacuum = conn.prepare("PRAGMA incremental_vacuum")?;
    let mut steps = vacuum.query([])?;
    while steps.next()?.is_some() {}
    Ok(())
}

fn take_reader(readers: &Mutex<Vec<Connection>>, db_path: &Path) -> Result<Connection> {
    if let Some(c) = readers.lock().unwrap_or_else(|e| e.into_inner()).pop() {
        return Ok(c);
    }
    let conn = Connection::open(db_path)?;
    configure(&conn)?;
    Ok(conn)
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
fn usage_of(r: &sql::Row) -> Result<UsageRow> {
    Ok(UsageRow {
        bucket: r.int(0)?,
        api: r.text(1)?,
        operation: r.text(2)?,
        product: r.text(3)?,
        subscription: r.text(4)?,
        success: r.int(5)? as u64,
        blocked: r.int(6)? as u64,
        failed: r.int(7)? as u64,
        other: r.int(8)? as u64,
        bandwidth: r.int(9)? as u64,
        api_time_sum_ms: r.real(10)?,
        api_time_min_ms: r.real(11)?,
        api_time_max_ms: r.real(12)?,
        service_time_sum_ms: r.real(13)?,
        service_time_min_ms: r.real(14)?,
        service_time_max_ms: r.real(15)?,
        service_calls: r.int(16)? as u64,
        region: r.text(17)?,
    })
}

/// Adds one usage row to its bucket's aggregate (or inserts it).
fn upsert_usage(db: Db<'_>, r: &UsageRow) -> Result<()> {
    // Two-argument min/max: SQLite's scalar functions, PostgreSQL's LEAST and GREATEST.
    let (min, max) = match db.dialect() {
        sql::Dialect::Sqlite => ("min", "max"),
        sql::Dialect::Postgres => ("LEAST", "GREATEST"),
    };
    let statement = format!(
        "INSERT INTO usage VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
         ON CONFLICT (bucket, api, operation, product, subscription, region) DO UPDATE SET
           success = usage.success + excluded.success,
           blocked = usage.blocked + excluded.blocked,
           failed = usage.failed + excluded.failed,
           other = usage.other + excluded.other,
           bandwidth = usage.bandwidth + excluded.bandwidth,
           api_time_sum = usage.api_time_sum + excluded.api_time_sum,
           api_time_min = {min}(usage.api_time_min, excluded.api_time_min),
           api_time_max = {max}(usage.api_time_max, excluded.api_time_max),
           service_time_sum = usage.service_time_sum + excluded.service_time_sum,
           service_time_min = CASE WHEN usage.service_calls = 0 THEN excluded.service_time_min
                                   WHEN excluded.service_calls = 0 THEN usage.service_time_min
                                   ELSE {min}(usage.service_time_min, excluded.service_time_min) END,
           service_time_max = {max}(usage.service_time_max, excluded.service_time_max),
           service_calls = usage.service_calls + excluded.service_calls"
    );
    let int = |n: u64| Arg::Int(n.min(i64::MAX as u64) as i64);
    db.exec(
        &statement,
        &[
            Arg::Int(r.bucket),
            Arg::Text(&r.api),
            Arg::Text(&r.operation),
            Arg::Text(&r.product),
            Arg::Text(&r.subscription),
            int(r.success),
            int(r.blocked),
            int(r.failed),
            int(r.other),
            int(r.bandwidth),
            Arg::Real(r.api_time_sum_ms),
            Arg::Real(r.api_time_min_ms),
            Arg::Real(r.api_time_max_ms),
            Arg::Real(r.service_time_sum_ms),
            Arg::Real(r.service_time_min_ms),
            Arg::Real(r.service_time_max_ms),
            int(r.service_calls),
            Arg::Text(&r.region),
        ],
    )?;
    Ok(())
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

#[cfg(test)]
mod tests {
    //! The contract both stores keep is tested in `gatehouse-testkit`'s `store_contract`
    //! (against SQLite and PostgreSQL); here, what only the SQLite file shows.
    use super::*;
    use gatehouse_model::{Kind, ResourcePath};
    use serde_json::json;

    #[test]
    fn secrets_are_sealed_in_the_file_and_its_write_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        let sub = ResourcePath::top(Kind::Subscription, "s1");
        let props = json!({"scope": "/apis", "displayName": "S", "primaryKey": "topsecret"});
        store
            .write(|w| w.put(&sub, props.as_object().unwrap().clone(), &[]))
            .unwrap();
        let got = store.read(|r| r.get("/subscriptions/s1")).unwrap().unwrap();
        assert_eq!(got.properties["primaryKey"], "topsecret");
        let db_path = store.db_path().unwrap();
        let raw = std::fs::read(db_path).unwrap();
        let wal = std::fs::read(db_path.with_extension("db-wal")).unwrap_or_default();
        let hay = [raw, wal].concat();
        assert!(!hay.windows(9).any(|w| w == b"topsecret"));
    }
}
