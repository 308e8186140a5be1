//! The `installation` table: this database's installation id, which namespaces the external
//! key push writes to HubSpot, and how far bare keys written by earlier versions are this
//! database's own (see `crate::sync::keys` and docs/security.md).

use super::{Store, StoreError, on_pool};
use crate::ids::ContactId;

/// This database's installation, as its migration recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    /// Random, generated once per database: 16 lowercase hex characters.
    pub id: String,
    /// Bare external keys (a local id alone, as versions before the installation id wrote
    /// them) are this database's own for rows up to this id; `None`: no bare key is.
    pub legacy_keys_through: Option<ContactId>,
}

impl Store {
    /// This database's installation. The migration creates it; should the row be gone (deleted
    /// by hand), a new id is generated, race-free (insert if absent, then read back), and bare
    /// keys are no longer recognised.
    pub async fn installation(&self) -> Result<Installation, StoreError> {
        const READ: &str = "SELECT id, legacy_keys_through FROM installation";
        const PG_CREATE: &str = "INSERT INTO installation (singleton, id)
             VALUES (TRUE, substr(md5(gen_random_uuid()::text), 1, 16))
             ON CONFLICT DO NOTHING";
        // singleton aliases the rowid: without it each insert would get a new one (and fail
        // the CHECK) instead of conflicting.
        const SQLITE_CREATE: &str = "INSERT INTO installation (singleton, id)
             VALUES (1, lower(hex(randomblob(8))))
             ON CONFLICT DO NOTHING";
        let row: Option<(String, Option<i64>)> =
            on_pool!(self, pool => sqlx::query_as(READ).fetch_optional(pool).await?);
        let row = match row {
            Some(row) => Some(row),
            None => {
                let create = on_pool!(self, _pool => postgres: PG_CREATE, sqlite: SQLITE_CREATE);
                on_pool!(self, pool => {
                    sqlx::query(create).execute(pool).await?;
                    sqlx::query_as(READ).fetch_optional(pool).await?
                })
            }
        };
        let (id, legacy) = row.ok_or_else(|| {
            StoreError::InvalidData("the installation row cannot be created".to_owned())
        })?;
        Ok(Installation {
            id,
            legacy_keys_through: legacy.map(ContactId),
        })
    }
}
