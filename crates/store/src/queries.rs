//! Reads shared by read and write transactions, on either database.

use crate::fence::{WRITE_FENCE, WriteFence};
use crate::seal::Sealer;
use crate::sql::{Arg, Db, Dialect, Row};
use crate::{DELETED_META, INDEXED_PROPERTIES, Page, Result, StoreError};
use gatehouse_model::props::secret_pointers;
use gatehouse_model::{Kind, ServiceSettings, StoredResource};
use serde_json::{Map, Value};

/// The columns every resource query selects, in [`resource_of`]'s order.
pub(crate) const RESOURCE_COLUMNS: &str = "path, kind, properties, revision";

/// A resource row (`RESOURCE_COLUMNS`), its secret fields opened.
pub(crate) fn resource_of(sealer: &Sealer, row: &Row) -> Result<StoredResource> {
    let path = row.text(0)?;
    let kind = row.text(1)?;
    let kind = Kind::from_name(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown kind '{kind}' at {path}")))?;
    let mut properties: Map<String, Value> = serde_json::from_str(&row.text(2)?)
        .map_err(|e| StoreError::Corrupt(format!("properties of {path}: {e}")))?;
    let pointers = secret_pointers(kind, &properties);
    sealer.open_fields(&mut properties, &pointers)?;
    Ok(StoredResource {
        path,
        kind,
        properties,
        revision: row.int(3)? as u64,
    })
}

pub(crate) fn get_meta(db: Db<'_>, key: &str) -> Result<Option<String>> {
    match db.first("SELECT value FROM meta WHERE key = ?1", &[Arg::Text(key)])? {
        Some(row) => Ok(Some(row.text(0)?)),
        None => Ok(None),
    }
}

pub(crate) fn set_meta(db: Db<'_>, key: &str, value: &str) -> Result<()> {
    db.exec(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[Arg::Text(key), Arg::Text(value)],
    )?;
    Ok(())
}

pub(crate) fn current_revision(db: Db<'_>) -> Result<u64> {
    match get_meta(db, "revision")? {
        None => Ok(0),
        Some(s) => s
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("revision '{s}' is not a number"))),
    }
}

/// What a write transaction starts from, read in one statement after the write lock is taken.
pub(crate) struct WriteHead {
    pub revision: u64,
    /// The write fence, if one holds.
    pub fence: Option<WriteFence>,
    /// Why the service is gone, if it was deleted.
    pub deleted: Option<String>,
}

impl WriteHead {
    /// Refuses the write if the store is fenced or its service deleted.
    pub fn admit(self) -> Result<u64> {
        if let Some(note) = self.deleted {
            return Err(StoreError::Deleted(note));
        }
        match self.fence {
            Some(fence) => Err(StoreError::Fenced(fence)),
            None => Ok(self.revision),
        }
    }
}

pub(crate) fn write_head(db: Db<'_>) -> Result<WriteHead> {
    let rows = db.rows(
        "SELECT key, value FROM meta WHERE key IN ('revision', ?1, ?2)",
        &[Arg::Text(WRITE_FENCE), Arg::Text(DELETED_META)],
    )?;
    let mut head = WriteHead {
        revision: 0,
        fence: None,
        deleted: None,
    };
    for row in rows {
        let (key, value) = (row.text(0)?, row.text(1)?);
        match key.as_str() {
            "revision" => {
                head.revision = value.parse().map_err(|_| {
                    StoreError::Corrupt(format!("revision '{value}' is not a number"))
                })?
            }
            WRITE_FENCE => head.fence = WriteFence::parse_holding(&value),
            _ => head.deleted = Some(value),
        }
    }
    Ok(head)
}

/// The meta key of the highest revision whose journal entries were compacted away.
pub(crate) const JOURNAL_FLOOR: &str = "journal_floor";

pub(crate) fn journal_floor(db: Db<'_>) -> Result<u64> {
    Ok(get_meta(db, JOURNAL_FLOOR)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Queries shared by read and write transactions.
pub(crate) trait Queries {
    /// The transaction's connection, with anything written ahead of it in place.
    fn db(&self) -> Result<Db<'_>>;
    fn sealer(&self) -> &Sealer;

    fn q_get(&self, path: &str) -> Result<Option<StoredResource>> {
        let sql = format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE path = ?1");
        match self.db()?.first(&sql, &[Arg::Text(path)])? {
            Some(row) => resource_of(self.sealer(), &row).map(Some),
            None => Ok(None),
        }
    }

    /// Streams every resource in path order (on SQLite without holding them all in memory).
    fn q_for_each_resource(&self, mut f: impl FnMut(StoredResource) -> Result<()>) -> Result<()> {
        let sql = format!("SELECT {RESOURCE_COLUMNS} FROM resources ORDER BY path");
        self.db()?
            .each(&sql, &[], |row| f(resource_of(self.sealer(), &row)?))
    }

    fn q_query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<StoredResource>> {
        let mut out = Vec::new();
        self.db()?.each(sql, args, |row| {
            out.push(resource_of(self.sealer(), &row)?);
            Ok(())
        })?;
        Ok(out)
    }

    fn q_children(&self, kind: Kind, parent: &str) -> Result<Vec<StoredResource>> {
        self.q_query(
            "SELECT path, kind, properties, revision FROM resources
             WHERE parent = ?1 AND kind = ?2 ORDER BY name",
            &[Arg::Text(parent), Arg::Text(kind.name())],
        )
    }

    fn q_all_of_kind(&self, kind: Kind) -> Result<Vec<StoredResource>> {
        self.q_query(
            "SELECT path, kind, properties, revision FROM resources WHERE kind = ?1 ORDER BY path",
            &[Arg::Text(kind.name())],
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
        // A revision's id holds ';rev=': kept out when asked, the same on both databases.
        let hide = if hide_revisions {
            "AND name NOT LIKE '%;rev=%'"
        } else {
            ""
        };
        let args = [Arg::Text(parent), Arg::Text(kind.name())];
        let total = self
            .db()?
            .int(
                &format!("SELECT count(*) FROM resources WHERE parent = ?1 AND kind = ?2 {hide}"),
                &args,
            )?
            .unwrap_or(0);
        let items = self.q_query(
            &format!(
                "SELECT path, kind, properties, revision FROM resources
                 WHERE parent = ?1 AND kind = ?2 {hide} ORDER BY name LIMIT ?3 OFFSET ?4"
            ),
            &[
                args[0],
                args[1],
                Arg::Int(top.min(i64::MAX as u64) as i64),
                Arg::Int(skip.min(i64::MAX as u64) as i64),
            ],
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
            &[Arg::Text(&lo), Arg::Text(&hi)],
        )
    }

    fn q_referrers(&self, path: &str) -> Result<Vec<String>> {
        let lo = format!("{path}/");
        let hi = format!("{path}0");
        self.db()?.texts(
            "SELECT DISTINCT from_path FROM refs
             WHERE to_path = ?1 OR (to_path >= ?2 AND to_path < ?3) ORDER BY from_path",
            &[Arg::Text(path), Arg::Text(&lo), Arg::Text(&hi)],
        )
    }

    fn q_references_of(&self, path: &str) -> Result<Vec<String>> {
        self.db()?.texts(
            "SELECT to_path FROM refs WHERE from_path = ?1 ORDER BY to_path",
            &[Arg::Text(path)],
        )
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
        // The expressions of the lookup indexes, as each database writes them.
        let property = match self.db()?.dialect() {
            Dialect::Sqlite => format!("json_extract(properties, '$.{field}')"),
            Dialect::Postgres => format!("(properties::jsonb ->> '{field}')"),
        };
        let sql = format!(
            "SELECT path, kind, properties, revision FROM resources
             WHERE kind = ?1 AND lower({property}) = lower(?2) ORDER BY path"
        );
        self.q_query(&sql, &[Arg::Text(kind.name()), Arg::Text(value)])
    }

    fn q_service(&self) -> Result<Option<ServiceSettings>> {
        get_meta(self.db()?, "service")?
            .map(|s| {
                serde_json::from_str(&s)
                    .map_err(|e| StoreError::Corrupt(format!("service settings: {e}")))
            })
            .transpose()
    }
}
