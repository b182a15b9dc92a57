//! A read view pinned to one revision, on either database.

use crate::queries::{Queries, RESOURCE_COLUMNS, get_meta, journal_floor, resource_of};
use crate::seal::Sealer;
use crate::sql::{Arg, Db, Row};
use crate::{JournalEntry, Page, Result, StoreError, UsageRow, usage_of};
use gatehouse_model::{Kind, ServiceSettings, StoredResource};

pub struct ReadTx<'a> {
    pub(crate) db: Db<'a>,
    pub(crate) sealer: &'a Sealer,
    pub(crate) revision: u64,
}

impl Queries for ReadTx<'_> {
    fn db(&self) -> Result<Db<'_>> {
        Ok(self.db)
    }
    fn sealer(&self) -> &Sealer {
        self.sealer
    }
}

fn journal_entry(row: &Row) -> Result<JournalEntry> {
    let seq = row.int(0)?;
    let corrupt = |e: serde_json::Error| StoreError::Corrupt(format!("journal entry {seq}: {e}"));
    let value = row
        .opt_text(6)?
        .map(|v| serde_json::from_str(&v))
        .transpose()
        .map_err(corrupt)?;
    let refs = row
        .opt_text(7)?
        .map(|v| serde_json::from_str(&v))
        .transpose()
        .map_err(corrupt)?
        .unwrap_or_default();
    Ok(JournalEntry {
        seq: seq as u64,
        revision: row.int(1)? as u64,
        at: row.text(2)?,
        path: row.text(3)?,
        kind: row.text(4)?,
        op: row.text(5)?,
        value,
        refs,
        actor: row.opt_text(8)?,
    })
}

/// A revision as a statement's parameter.
fn rev(r: u64) -> Arg<'static> {
    Arg::Int(r.min(i64::MAX as u64) as i64)
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
        self.q_all_of_kind(kind)
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

    /// Streams every resource in path order (on SQLite without holding them all in memory).
    pub fn for_each_resource(&self, f: impl FnMut(StoredResource) -> Result<()>) -> Result<()> {
        self.q_for_each_resource(f)
    }

    /// Usage rows with `from <= bucket < to` (Unix seconds).
    pub fn usage(&self, from: i64, to: i64) -> Result<Vec<UsageRow>> {
        let rows = self.db.rows(
            "SELECT * FROM usage WHERE bucket >= ?1 AND bucket < ?2 ORDER BY bucket, api, operation, product, subscription, region",
            &[Arg::Int(from), Arg::Int(to)],
        )?;
        rows.iter().map(usage_of).collect()
    }

    /// The distinct paths changed after revision `since` (`"/"` is the service settings).
    pub fn changed_paths_since(&self, since: u64) -> Result<Vec<String>> {
        self.db.texts(
            "SELECT DISTINCT path FROM journal WHERE revision > ?1",
            &[rev(since)],
        )
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
        Ok(self
            .db
            .int("SELECT count(*) FROM resources", &[])?
            .unwrap_or(0) as u64)
    }

    /// Streams every reference `(from, to)`.
    pub fn for_each_ref(&self, mut f: impl FnMut(String, String) -> Result<()>) -> Result<()> {
        self.db.each(
            "SELECT from_path, to_path FROM refs ORDER BY from_path, to_path",
            &[],
            |row| f(row.text(0)?, row.text(1)?),
        )
    }

    /// When the first revision after `revision` was committed (RFC 3339), if the journal has it.
    pub fn first_commit_after(&self, revision: u64) -> Result<Option<String>> {
        match self.db.first(
            "SELECT at FROM journal WHERE revision > ?1 ORDER BY seq LIMIT 1",
            &[rev(revision)],
        )? {
            Some(row) => Ok(Some(row.text(0)?)),
            None => Ok(None),
        }
    }

    /// The last revision committed before `at` (RFC 3339 UTC, as the journal records times).
    pub fn last_revision_before(&self, at: &str) -> Result<Option<u64>> {
        Ok(self
            .db
            .int(
                "SELECT max(revision) FROM journal WHERE at < ?1",
                &[Arg::Text(at)],
            )?
            .map(|r| r as u64))
    }

    /// An operational value set with `set_meta`.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        get_meta(self.db, key)
    }

    /// The highest revision whose journal entries were compacted away (0: none were): the
    /// changes after an older revision can no longer be read from the journal.
    pub fn journal_floor(&self) -> Result<u64> {
        journal_floor(self.db)
    }

    /// Whether the changes after `since` cannot be replayed from the journal: a
    /// whole-configuration replace (a restore) was committed after it, or the journal was
    /// compacted past it. Whoever follows from `since` must reload everything.
    pub fn replaced_since(&self, since: u64) -> Result<bool> {
        if since < self.journal_floor()? {
            return Ok(true);
        }
        let n = self.db.int(
            "SELECT count(*) FROM journal WHERE revision > ?1 AND op = 'replace'",
            &[rev(since)],
        )?;
        Ok(n.unwrap_or(0) > 0)
    }

    /// Streams every resource of one kind in path order.
    pub fn for_each_of_kind(
        &self,
        kind: Kind,
        mut f: impl FnMut(StoredResource) -> Result<()>,
    ) -> Result<()> {
        let sql = format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE kind = ?1 ORDER BY path");
        self.db.each(&sql, &[Arg::Text(kind.name())], |row| {
            f(resource_of(self.sealer, &row)?)
        })
    }

    /// The journal entries of whole revisions after `since`, oldest first: as many revisions
    /// as fit in about `max_entries` entries, and always at least the first one, however large
    /// (a consumer applies a revision at once or not at all).
    pub fn journal_revisions(&self, since: u64, max_entries: u64) -> Result<Vec<JournalEntry>> {
        let at_limit = self.db.int(
            "SELECT revision FROM journal WHERE revision > ?1 ORDER BY seq LIMIT 1 OFFSET ?2",
            &[rev(since), rev(max_entries)],
        )?;
        let through = match at_limit {
            None => u64::MAX,
            Some(at) => {
                let first = self
                    .db
                    .int(
                        "SELECT min(revision) FROM journal WHERE revision > ?1",
                        &[rev(since)],
                    )?
                    .unwrap_or(at);
                if at == first {
                    at as u64
                } else {
                    at as u64 - 1
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
        let total = self
            .db
            .int(
                "SELECT count(*) FROM journal WHERE revision > ?1 AND revision <= ?2",
                &[rev(since), rev(through)],
            )?
            .unwrap_or(0);
        let mut out = Vec::new();
        self.db.each(
            "SELECT seq, revision, at, path, kind, op, value, refs, actor FROM journal
             WHERE revision > ?1 AND revision <= ?2 ORDER BY seq LIMIT ?3 OFFSET ?4",
            &[rev(since), rev(through), rev(top), rev(skip)],
            |row| {
                out.push(journal_entry(&row)?);
                Ok(())
            },
        )?;
        Ok((out, total as u64))
    }
}
