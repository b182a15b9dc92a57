//! A write transaction: resources put and deleted with their references, each change
//! journaled at the transaction's revision, secrets sealed, on either database.

use crate::pg_engine::PgTx;
use crate::queries::{Queries, set_meta};
use crate::seal::Sealer;
use crate::sql::{Arg, Db, Dialect};
use crate::{JournalEntry, Result, StoreError, UsageRow, upsert_usage};
use gatehouse_model::props::secret_pointers;
use gatehouse_model::{Kind, ResourcePath, ServiceSettings, StoredResource};
use serde_json::{Map, Value};

/// The transaction a write runs in.
pub(crate) enum WriteConn<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Pg(PgTx<'a>),
}

impl WriteConn<'_> {
    pub(crate) fn db(&self) -> Db<'_> {
        match self {
            WriteConn::Sqlite(t) => Db::Sqlite(t),
            WriteConn::Pg(t) => Db::Pg(t),
        }
    }
}

pub struct WriteTx<'a> {
    pub(crate) conn: WriteConn<'a>,
    pub(crate) sealer: &'a Sealer,
    pub(crate) next: u64,
    pub(crate) at: String,
    pub(crate) changes: u64,
    /// A value became secret in this transaction: empty the write log after the commit.
    pub(crate) scrub: bool,
    /// Who makes the change, as the journal records it.
    pub(crate) actor: &'a str,
    /// Rows a restore wrote ahead, inserted many to a statement on PostgreSQL (one round trip
    /// per row would make a restore take minutes); in place before anything else runs.
    pub(crate) pending: std::cell::RefCell<Pending>,
}

/// Restored rows not inserted yet.
#[derive(Default)]
pub(crate) struct Pending {
    /// path, kind, parent, name, properties.
    resources: Vec<[String; 5]>,
    refs: Vec<[String; 2]>,
}

/// Resources per `COPY` (a few megabytes held at a time).
const RESOURCES_PER_COPY: usize = 5_000;
/// References per multi-row insert (PostgreSQL takes at most 65,535 parameters).
const REFS_PER_INSERT: usize = 2_000;

/// Appends one row in `COPY`'s text format: fields separated by tabs, the row ended by a
/// newline, backslashes and control characters that would end a field escaped.
fn copy_row(out: &mut Vec<u8>, fields: &[&str]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        for b in field.bytes() {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b => out.push(b),
            }
        }
    }
    out.push(b'\n');
}

/// `INSERT INTO table (columns) VALUES ($1, …), (…)` for `rows` rows.
fn multi_row_insert(table_columns: &str, columns: usize, rows: usize, tail: &str) -> String {
    let mut sql = format!("INSERT INTO {table_columns} VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("?{}", r * columns + c + 1));
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

impl Queries for WriteTx<'_> {
    fn db(&self) -> Result<Db<'_>> {
        self.settle()?;
        Ok(self.conn.db())
    }
    fn sealer(&self) -> &Sealer {
        self.sealer
    }
}

impl<'a> WriteTx<'a> {
    /// A write transaction on `conn`, which will commit as the revision after `current`.
    pub(crate) fn new(
        conn: WriteConn<'a>,
        sealer: &'a Sealer,
        current: u64,
        actor: &'a str,
    ) -> WriteTx<'a> {
        let at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("formatting the current time cannot fail");
        WriteTx {
            conn,
            sealer,
            next: current + 1,
            at,
            changes: 0,
            scrub: false,
            actor,
            pending: Default::default(),
        }
    }
}

impl WriteTx<'_> {
    /// Inserts the rows a restore wrote ahead.
    pub(crate) fn settle(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        let db = self.conn.db();
        let revision = self.next as i64;
        if !pending.resources.is_empty() {
            let WriteConn::Pg(tx) = &self.conn else {
                unreachable!("rows are written ahead on PostgreSQL only")
            };
            let revision = revision.to_string();
            let mut data = Vec::with_capacity(pending.resources.len() * 512);
            for [path, kind, parent, name, properties] in &pending.resources {
                copy_row(
                    &mut data,
                    &[path, kind, parent, name, properties, &revision],
                );
            }
            tx.copy_in(
                "COPY resources (path, kind, parent, name, properties, revision) FROM STDIN",
                data,
            )?;
        }
        for chunk in pending.refs.chunks(REFS_PER_INSERT) {
            let sql = multi_row_insert(
                "refs (from_path, to_path)",
                2,
                chunk.len(),
                " ON CONFLICT DO NOTHING",
            );
            let args: Vec<Arg<'_>> = chunk.iter().flatten().map(|v| Arg::Text(v)).collect();
            db.exec(&sql, &args)?;
        }
        Ok(())
    }

    /// Whether restored rows are written ahead (PostgreSQL), rather than one by one.
    fn writes_ahead(&self) -> bool {
        self.conn.db().dialect() == Dialect::Postgres
    }

    /// Runs `f` inside a savepoint of this transaction. `f` answers whether to keep what it
    /// did; when it says no, or fails, everything it wrote is undone (journal included) as
    /// if it had not run — so a caller can try a change, look at the result, and take it back
    /// (an import's plan, or skipping a change that turns out to change nothing).
    pub fn attempt<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&mut Self) -> std::result::Result<(T, bool), E>,
    ) -> std::result::Result<T, E> {
        self.db()?.batch("SAVEPOINT attempt")?;
        let (changes, scrub) = (self.changes, self.scrub);
        let outcome = f(self);
        let keep = matches!(outcome, Ok((_, true)));
        let sql = if keep {
            "RELEASE SAVEPOINT attempt"
        } else {
            self.changes = changes;
            self.scrub = scrub;
            "ROLLBACK TO SAVEPOINT attempt; RELEASE SAVEPOINT attempt"
        };
        self.db()?.batch(sql)?;
        outcome.map(|(value, _)| value)
    }

    /// Sets an operational value in this transaction (no journal entry, no change counted),
    /// e.g. the primary revision a regional gateway's copy has reached with these changes.
    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<()> {
        set_meta(self.db()?, key, value)
    }

    /// The revision this transaction will commit as, if it changes anything.
    pub fn next_revision(&self) -> u64 {
        self.next
    }

    pub fn get(&self, path: &str) -> Result<Option<StoredResource>> {
        self.q_get(path)
    }

    /// Every resource as this transaction sees it, in path order.
    pub fn for_each_resource(&self, f: impl FnMut(StoredResource) -> Result<()>) -> Result<()> {
        self.q_for_each_resource(f)
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
        self.q_all_of_kind(kind)
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
        self.db()?.exec(
            "INSERT INTO journal (revision, at, path, kind, op, value, refs, actor) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            &[
                Arg::Int(self.next as i64),
                Arg::Text(&self.at),
                Arg::Text(path),
                Arg::Text(kind),
                Arg::Text(op),
                Arg::OptText(value),
                Arg::OptText(refs.as_deref()),
                Arg::Text(self.actor),
            ],
        )?;
        self.changes += 1;
        Ok(())
    }

    pub fn set_service(&mut self, settings: &ServiceSettings) -> Result<()> {
        let text = serde_json::to_string(settings).expect("settings serialise");
        set_meta(self.db()?, "service", &text)?;
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
        let (parent, next) = (path.parent_string(), self.next as i64);
        self.db()?.exec(
            "INSERT INTO resources (path, kind, parent, name, properties, revision)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (path) DO UPDATE SET properties = excluded.properties,
                                              revision = excluded.revision",
            &[
                Arg::Text(&key),
                Arg::Text(path.kind.name()),
                Arg::Text(&parent),
                Arg::Text(path.id()),
                Arg::Text(&text),
                Arg::Int(next),
            ],
        )?;
        self.db()?
            .exec("DELETE FROM refs WHERE from_path = ?1", &[Arg::Text(&key)])?;
        for r in references {
            self.insert_ref(&key, r)?;
        }
        self.journal_with_refs(&key, path.kind.name(), "put", Some(&text), references)?;
        Ok(self.next)
    }

    fn insert_ref(&self, from: &str, to: &str) -> Result<()> {
        self.db()?.exec(
            "INSERT INTO refs (from_path, to_path) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            &[Arg::Text(from), Arg::Text(to)],
        )?;
        Ok(())
    }

    /// When a field of `path` becomes secret (a named value turned `secret: true`), the
    /// journal entries written before still hold it in plaintext: they are sealed in this
    /// same transaction, and the write log is emptied after it commits.
    fn seal_history_of(&mut self, path: &str, kind: Kind, secret: &[&str]) -> Result<()> {
        let maybe = gatehouse_model::props::possible_secret_pointers(kind);
        if secret.is_empty() || maybe.is_empty() {
            return Ok(());
        }
        let rows = self.db()?.rows(
            "SELECT seq, value FROM journal WHERE path = ?1 AND value IS NOT NULL",
            &[Arg::Text(path)],
        )?;
        for row in rows {
            let (seq, text) = (row.int(0)?, row.text(1)?);
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
            self.db()?.exec(
                "UPDATE journal SET value = ?1 WHERE seq = ?2",
                &[Arg::Text(&sealed), Arg::Int(seq)],
            )?;
            self.scrub = true;
        }
        Ok(())
    }

    /// Starts replacing the whole configuration (a restore): removes every resource,
    /// reference and usage row, and journals one `replace` entry. Follow with
    /// `restore_resource`/`restore_ref`/`restore_usage`; all of it commits or none does.
    pub fn replace_all(&mut self, summary: &Value) -> Result<()> {
        self.db()?
            .batch("DELETE FROM resources; DELETE FROM refs; DELETE FROM usage;")?;
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
        let (key, parent) = (path.as_string(), path.parent_string());
        if self.writes_ahead() {
            let row = [key, path.kind.name().into(), parent, path.id().into(), text];
            let full = {
                let mut pending = self.pending.borrow_mut();
                pending.resources.push(row);
                pending.resources.len() >= RESOURCES_PER_COPY
            };
            return if full { self.settle() } else { Ok(()) };
        }
        self.db()?.exec(
            "INSERT INTO resources (path, kind, parent, name, properties, revision) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &[
                Arg::Text(&key),
                Arg::Text(path.kind.name()),
                Arg::Text(&parent),
                Arg::Text(path.id()),
                Arg::Text(&text),
                Arg::Int(self.next as i64),
            ],
        )?;
        Ok(())
    }

    /// Inserts one reference during a replace.
    pub fn restore_ref(&mut self, from: &str, to: &str) -> Result<()> {
        if !self.writes_ahead() {
            return self.insert_ref(from, to);
        }
        let full = {
            let mut pending = self.pending.borrow_mut();
            pending.refs.push([from.to_string(), to.to_string()]);
            pending.refs.len() >= REFS_PER_INSERT
        };
        if full { self.settle() } else { Ok(()) }
    }

    /// Inserts one usage row during a replace.
    pub fn restore_usage(&mut self, r: &UsageRow) -> Result<()> {
        upsert_usage(self.db()?, r)
    }

    /// Replaces the service settings without a journal entry of their own (during a replace).
    pub fn restore_service(&mut self, settings: &ServiceSettings) -> Result<()> {
        let text = serde_json::to_string(settings).expect("settings serialise");
        set_meta(self.db()?, "service", &text)
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
        let Some(row) = self.db()?.first(
            "SELECT kind FROM resources WHERE path = ?1",
            &[Arg::Text(path)],
        )?
        else {
            return Ok(false);
        };
        let kind = row.text(0)?;
        self.db()?
            .exec("DELETE FROM resources WHERE path = ?1", &[Arg::Text(path)])?;
        self.db()?
            .exec("DELETE FROM refs WHERE from_path = ?1", &[Arg::Text(path)])?;
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
        if rewrite_refs {
            self.rewrite_refs(&from_s, &to_s)?;
        }
        Ok(())
    }

    /// Points the references to `from` and below it at `to` instead (a reference that would
    /// then exist twice is kept once).
    fn rewrite_refs(&self, from: &str, to: &str) -> Result<()> {
        let sql = match self.db()?.dialect() {
            Dialect::Sqlite => {
                "UPDATE OR IGNORE refs SET to_path = ?2 || substr(to_path, length(?1) + 1)
                 WHERE to_path = ?1 OR to_path LIKE ?1 || '/%'"
            }
            Dialect::Postgres => {
                "INSERT INTO refs (from_path, to_path)
                 SELECT from_path, ?2::text || substr(to_path, length(?1::text) + 1) FROM refs
                 WHERE to_path = ?1::text OR to_path LIKE ?1::text || '/%'
                 ON CONFLICT DO NOTHING;"
            }
        };
        self.db()?.exec(sql, &[Arg::Text(from), Arg::Text(to)])?;
        if self.db()?.dialect() == Dialect::Postgres {
            self.db()?.exec(
                "DELETE FROM refs WHERE to_path = $1::text OR to_path LIKE $1::text || '/%'",
                &[Arg::Text(from)],
            )?;
        }
        Ok(())
    }
}
