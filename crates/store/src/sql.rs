//! One way for the store's queries to reach either database: statements are written once in
//! SQLite's dialect with numbered parameters (`?1`), and run as they are on SQLite or with
//! `$1` parameters on PostgreSQL; the few that differ more are given in both dialects
//! ([`Db::dialect`]). Rows come back as [`Row`]s of plain values.
//!
//! Invariant: a statement's parameters and columns mean the same on both databases
//! (integers are 64-bit, times and JSON are text).

use crate::pg_engine::{Param, PgTx};
use crate::{Result, StoreError};
use rusqlite::types::ValueRef;

/// A statement's parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    Real(f64),
}

/// A column's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

#[derive(Debug)]
pub(crate) struct Row(Vec<Cell>);

impl Row {
    fn cell(&self, i: usize) -> Result<&Cell> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("a row has no column {i}")))
    }

    pub fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} is null")))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Text(s) => Ok(Some(s.clone())),
            other => Err(StoreError::Corrupt(format!(
                "column {i} is {other:?}, not text"
            ))),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} is null")))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.cell(i)? {
            Cell::Null => Ok(None),
            Cell::Int(n) => Ok(Some(*n)),
            other => Err(StoreError::Corrupt(format!(
                "column {i} is {other:?}, not an integer"
            ))),
        }
    }

    pub fn real(&self, i: usize) -> Result<f64> {
        match self.cell(i)? {
            Cell::Real(x) => Ok(*x),
            Cell::Int(n) => Ok(*n as f64),
            other => Err(StoreError::Corrupt(format!(
                "column {i} is {other:?}, not a number"
            ))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection inside a transaction, of either database.
#[derive(Clone, Copy)]
pub(crate) enum Db<'a> {
    Sqlite(&'a rusqlite::Connection),
    Pg(&'a PgTx<'a>),
}

/// `?N` parameters as PostgreSQL's `$N` (statements hold no `?` elsewhere).
fn to_pg(sql: &str) -> String {
    sql.replace('?', "$")
}

fn sqlite_args<'a>(args: &'a [Arg<'a>]) -> Vec<rusqlite::types::ToSqlOutput<'a>> {
    use rusqlite::types::{ToSqlOutput, Value};
    args.iter()
        .map(|a| match *a {
            Arg::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::OptText(None) => ToSqlOutput::Owned(Value::Null),
            Arg::OptText(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::Int(n) => ToSqlOutput::Owned(Value::Integer(n)),
            Arg::Real(x) => ToSqlOutput::Owned(Value::Real(x)),
        })
        .collect()
}

fn pg_args(args: &[Arg<'_>]) -> Vec<Param> {
    args.iter()
        .map(|a| -> Param {
            match *a {
                Arg::Text(s) => Box::new(s.to_string()),
                Arg::OptText(s) => Box::new(s.map(str::to_string)),
                Arg::Int(n) => Box::new(n),
                Arg::Real(x) => Box::new(x),
            }
        })
        .collect()
}

fn sqlite_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let n = r.as_ref().column_count();
    let mut cells = Vec::with_capacity(n);
    for i in 0..n {
        cells.push(match r.get_ref(i)? {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(n) => Cell::Int(n),
            ValueRef::Real(x) => Cell::Real(x),
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                Cell::Text(String::from_utf8_lossy(t).into_owned())
            }
        });
    }
    Ok(Row(cells))
}

fn pg_row(r: &tokio_postgres::Row) -> Result<Row> {
    use tokio_postgres::types::Type;
    let mut cells = Vec::with_capacity(r.len());
    for (i, column) in r.columns().iter().enumerate() {
        let bad = |e: tokio_postgres::Error| StoreError::Postgres(e.to_string());
        let cell = match *column.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i).map_err(bad)?.map(Cell::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)
                .map_err(bad)?
                .map(|n| Cell::Int(n.into())),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)
                .map_err(bad)?
                .map(|n| Cell::Int(n.into())),
            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i).map_err(bad)?.map(Cell::Real),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)
                .map_err(bad)?
                .map(|b| Cell::Int(b.into())),
            _ => r
                .try_get::<_, Option<String>>(i)
                .map_err(bad)?
                .map(Cell::Text),
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(Row(cells))
}

impl Db<'_> {
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Pg(_) => Dialect::Postgres,
        }
    }

    /// Runs a statement; how many rows it changed.
    pub fn exec(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        match self {
            Db::Sqlite(c) => {
                let params = sqlite_args(args);
                let n = c
                    .prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(params.iter()))?;
                Ok(n as u64)
            }
            Db::Pg(tx) => tx.execute(&to_pg(sql), pg_args(args)),
        }
    }

    /// Runs statements without parameters.
    pub fn batch(&self, sql: &str) -> Result<()> {
        match self {
            Db::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Db::Pg(tx) => tx.batch(sql),
        }
    }

    /// Calls `f` with each row of a query, in order (SQLite streams them).
    pub fn each(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        mut f: impl FnMut(Row) -> Result<()>,
    ) -> Result<()> {
        match self {
            Db::Sqlite(c) => {
                let params = sqlite_args(args);
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
                while let Some(r) = rows.next()? {
                    f(sqlite_row(r)?)?;
                }
                Ok(())
            }
            Db::Pg(tx) => {
                for r in tx.query(&to_pg(sql), pg_args(args))? {
                    f(pg_row(&r)?)?;
                }
                Ok(())
            }
        }
    }

    pub fn rows(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>> {
        let mut out = Vec::new();
        self.each(sql, args, |r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row of a query, if any.
    pub fn first(&self, sql: &str, args: &[Arg<'_>]) -> Result<Option<Row>> {
        Ok(self.rows(sql, args)?.into_iter().next())
    }

    /// The first column of each row, as text.
    pub fn texts(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<String>> {
        self.rows(sql, args)?.iter().map(|r| r.text(0)).collect()
    }

    /// A query's single integer (a count, a maximum), null as `None`.
    pub fn int(&self, sql: &str, args: &[Arg<'_>]) -> Result<Option<i64>> {
        match self.first(sql, args)? {
            Some(r) => r.opt_int(0),
            None => Ok(None),
        }
    }
}
