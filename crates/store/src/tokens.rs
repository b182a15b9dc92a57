//! Scoped access tokens of the management API, beside the admin token: stored by id with a
//! SHA-256 hash of their secret (never the secret itself), a role and an optional expiry.
//! They are the instance's own credentials, not configuration: no revision, no journal entry,
//! not in backups.

use crate::{Result, Store};
use rusqlite::{OptionalExtension, params};
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

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        role: r.get(1)?,
        hash: r.get(2)?,
        created: r.get(3)?,
        expires: r.get(4)?,
        description: r.get(5)?,
    })
}

impl Store {
    /// Adds a token (its id must be new).
    pub fn add_token(&self, t: &TokenRecord) -> Result<()> {
        let conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute(
            "INSERT INTO tokens (id, role, hash, created, expires, description) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![t.id, t.role, t.hash, t.created, t.expires, t.description],
        )?;
        Ok(())
    }

    /// Revokes a token; false if there was none by that id.
    pub fn remove_token(&self, id: &str) -> Result<bool> {
        let conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        Ok(conn.execute("DELETE FROM tokens WHERE id = ?1", params![id])? > 0)
    }

    pub fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let conn = self.take_reader()?;
        let found = conn
            .query_row(
                "SELECT id, role, hash, created, expires, description FROM tokens WHERE id = ?1",
                params![id],
                record,
            )
            .optional()?;
        self.give_back(conn);
        Ok(found)
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let conn = self.take_reader()?;
        let all = conn
            .prepare("SELECT id, role, hash, created, expires, description FROM tokens ORDER BY created, id")?
            .query_map([], record)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        self.give_back(conn);
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_added_listed_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path()).unwrap();
        let t = TokenRecord {
            id: "t1".into(),
            role: "reader".into(),
            hash: "ab".into(),
            created: "2026-12-06T00:00:00Z".into(),
            expires: None,
            description: Some("ci".into()),
        };
        store.add_token(&t).unwrap();
        assert!(store.add_token(&t).is_err(), "ids are unique");
        assert_eq!(store.token("t1").unwrap(), Some(t.clone()));
        assert_eq!(store.tokens().unwrap(), vec![t]);
        assert!(store.remove_token("t1").unwrap());
        assert!(!store.remove_token("t1").unwrap());
        assert_eq!(store.token("t1").unwrap(), None);
    }
}
