//! Scoped access tokens of the management API, beside the admin token: stored by id with a
//! SHA-256 hash of their secret (never the secret itself), a role and an optional expiry.
//! They are the instance's own credentials, not configuration: no revision, no journal entry,
//! not in backups.

use crate::sql::{Arg, Row};
use crate::{Result, Store};
use serde::Serialize;

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: String,
    pub role: String,
    /// Hex SHA-256 of the secret part of the token.
    #[serde(skip)]
    pub hash: String,
    pub created: String,
    pub expires: Option<String>,
    pub description: Option<String>,
}

fn record(r: &Row) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.text(0)?,
        role: r.text(1)?,
        hash: r.text(2)?,
        created: r.text(3)?,
        expires: r.opt_text(4)?,
        description: r.opt_text(5)?,
    })
}

impl Store {
    /// Adds a token (its id must be new).
    pub fn add_token(&self, t: &TokenRecord) -> Result<()> {
        self.operational(|db| {
            db.exec(
                "INSERT INTO tokens (id, role, hash, created, expires, description) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &[
                    Arg::Text(&t.id),
                    Arg::Text(&t.role),
                    Arg::Text(&t.hash),
                    Arg::Text(&t.created),
                    Arg::OptText(t.expires.as_deref()),
                    Arg::OptText(t.description.as_deref()),
                ],
            )
            .map(|_| ())
        })
    }

    /// Revokes a token; false if there was none by that id.
    pub fn remove_token(&self, id: &str) -> Result<bool> {
        self.operational(|db| {
            Ok(db.exec("DELETE FROM tokens WHERE id = ?1", &[Arg::Text(id)])? > 0)
        })
    }

    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        self.read(|r| {
            r.db.first(
                "SELECT id, role, hash, created, expires, description FROM tokens WHERE id = ?1",
                &[Arg::Text(id)],
            )?
            .map(|row| record(&row))
            .transpose()
        })
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(|r| {
            r.db.rows(
                "SELECT id, role, hash, created, expires, description FROM tokens ORDER BY created, id",
                &[],
            )?
            .iter()
            .map(record)
            .collect()
        })
    }
}
