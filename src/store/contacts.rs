//! The local `contacts` table (INTERFACE §3).

use super::tombstones::{Tombstone, TombstoneReason};
use super::{Store, StoreError, Tx, on_pool, on_tx};
use crate::ids::{ContactId, Email, HsObjectId};
use chrono::{DateTime, Utc};
use sqlx::types::Json;

/// Rows per INSERT statement. Both statements take whole columns as one parameter each (arrays
/// on PostgreSQL, a JSON document on SQLite), so bind limits never apply; the chunk only bounds
/// the size of a single statement.
const INSERT_CHUNK: usize = 5_000;

/// The columns every contact query returns, in [`Contact`] order.
macro_rules! contact_columns {
    () => {
        "id, email, first_name, last_name, hs_object_id, created_at, updated_at, \
         hubspot_deleted_at, hubspot_deleted_reason, hubspot_deleted_id"
    };
}

/// A contact as stored locally.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contact {
    /// Local primary key.
    pub id: ContactId,
    /// Trimmed, lower-case; `None` when the contact has no email.
    pub email: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// The HubSpot record id once the contact is linked.
    pub hs_object_id: Option<HsObjectId>,
    /// When the row was inserted.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// Set when HubSpot deleted the contact: push leaves it alone until a user restores it.
    pub hubspot_deleted: Option<Tombstone>,
}

/// A `contacts` row as the columns of [`contact_columns!`] hold it.
#[derive(sqlx::FromRow)]
struct ContactRow {
    id: ContactId,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    hs_object_id: Option<HsObjectId>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    hubspot_deleted_at: Option<DateTime<Utc>>,
    hubspot_deleted_reason: Option<String>,
    hubspot_deleted_id: Option<HsObjectId>,
}

impl TryFrom<ContactRow> for Contact {
    type Error = StoreError;

    fn try_from(row: ContactRow) -> Result<Self, StoreError> {
        let hubspot_deleted = match (row.hubspot_deleted_at, row.hubspot_deleted_reason) {
            (Some(at), Some(reason)) => Some(Tombstone {
                at,
                reason: TombstoneReason::parse(&reason)?,
                hs_object_id: row.hubspot_deleted_id,
            }),
            _ => None,
        };
        Ok(Contact {
            id: row.id,
            email: row.email,
            first_name: row.first_name,
            last_name: row.last_name,
            hs_object_id: row.hs_object_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
            hubspot_deleted,
        })
    }
}

/// Which contacts a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeletedFilter {
    /// Every contact.
    #[default]
    Any,
    /// Only contacts HubSpot deleted (tombstoned).
    OnlyDeleted,
    /// Only contacts without a tombstone.
    NotDeleted,
}

/// A contact to insert; the email is normalised on the way in.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct NewContact {
    /// Any case, any surrounding whitespace; blank means no email.
    pub email: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
}

/// PostgreSQL: one array per column, unnested in input order, so ids follow the input.
const PG_INSERT: &str = "
    INSERT INTO contacts (email, first_name, last_name)
    SELECT email, first_name, last_name
      FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS t(email, first_name, last_name, n)
     ORDER BY n
    ON CONFLICT (email) DO NOTHING";

/// SQLite: the rows as one JSON array of `[email, first, last]`, read back in input order.
/// (`WHERE true` is SQLite's required disambiguation between a SELECT and an upsert clause.)
const SQLITE_INSERT: &str = "
    INSERT INTO contacts (email, first_name, last_name)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
      FROM json_each($1)
     WHERE true
     ORDER BY key
    ON CONFLICT (email) DO NOTHING";

impl Store {
    /// Inserts in batches inside one transaction, normalising emails; rows whose email already
    /// exists (in the table or earlier in the batch) are skipped, not an error. Returns rows inserted.
    pub async fn insert_contacts(&self, batch: &[NewContact]) -> Result<u64, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut inserted = 0;
        let mut tx = Tx::begin(self).await?;
        for chunk in batch.chunks(INSERT_CHUNK) {
            let done = on_tx!(&mut tx, c =>
                postgres: {
                    let mut emails = Vec::with_capacity(chunk.len());
                    let mut firsts = Vec::with_capacity(chunk.len());
                    let mut lasts = Vec::with_capacity(chunk.len());
                    for contact in chunk {
                        emails.push(contact.email.as_deref().and_then(Email::parse).map(Email::into_string));
                        firsts.push(contact.first_name.as_deref());
                        lasts.push(contact.last_name.as_deref());
                    }
                    sqlx::query(PG_INSERT)
                        .bind(&emails)
                        .bind(&firsts)
                        .bind(&lasts)
                        .execute(c)
                        .await?
                        .rows_affected()
                },
                sqlite: {
                    let rows: Vec<_> = chunk
                        .iter()
                        .map(|contact| {
                            (
                                contact.email.as_deref().and_then(Email::parse).map(Email::into_string),
                                contact.first_name.as_deref(),
                                contact.last_name.as_deref(),
                            )
                        })
                        .collect();
                    sqlx::query(SQLITE_INSERT)
                        .bind(Json(rows))
                        .execute(c)
                        .await?
                        .rows_affected()
                },
            );
            inserted += done;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Keyset page ordered by id ascending, ids > after.
    pub async fn list_contacts(
        &self,
        after: Option<ContactId>,
        limit: u32,
    ) -> Result<Vec<Contact>, StoreError> {
        self.list_contacts_where(after, limit, DeletedFilter::Any)
            .await
    }

    /// Keyset page ordered by id ascending, ids > after, of the contacts `filter` shows.
    pub async fn list_contacts_where(
        &self,
        after: Option<ContactId>,
        limit: u32,
        filter: DeletedFilter,
    ) -> Result<Vec<Contact>, StoreError> {
        const ANY: &str = concat!(
            "SELECT ",
            contact_columns!(),
            " FROM contacts WHERE id > $1 ORDER BY id LIMIT $2"
        );
        const DELETED: &str = concat!(
            "SELECT ",
            contact_columns!(),
            " FROM contacts WHERE hubspot_deleted_at IS NOT NULL AND id > $1 ORDER BY id LIMIT $2"
        );
        const NOT_DELETED: &str = concat!(
            "SELECT ",
            contact_columns!(),
            " FROM contacts WHERE hubspot_deleted_at IS NULL AND id > $1 ORDER BY id LIMIT $2"
        );
        let sql = match filter {
            DeletedFilter::Any => ANY,
            DeletedFilter::OnlyDeleted => DELETED,
            DeletedFilter::NotDeleted => NOT_DELETED,
        };
        let after = after.unwrap_or(ContactId(i64::MIN));
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, ContactRow>(sql)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter().map(Contact::try_from).collect()
    }

    /// How many contacts there are.
    pub async fn count_contacts(&self) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM contacts";
        let n = on_pool!(self, pool => sqlx::query_scalar::<_, i64>(SQL).fetch_one(pool).await)?;
        Ok(n)
    }

    /// One contact by its local id.
    pub async fn get_contact(&self, id: ContactId) -> Result<Option<Contact>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            contact_columns!(),
            " FROM contacts WHERE id = $1"
        );
        let row = on_pool!(self, pool => {
            sqlx::query_as::<_, ContactRow>(SQL).bind(id).fetch_optional(pool).await
        })?;
        row.map(Contact::try_from).transpose()
    }
}
