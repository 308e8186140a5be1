//! Tombstones: the mark a contact deleted in HubSpot leaves on its local row (INTERFACE §4.4).
//!
//! A tombstoned row keeps its own data (the local database owns it) and loses its
//! `hs_object_id`, which the tombstone keeps for reference. Push never considers it until a
//! user restores it ([`Store::restore_contact`]). A HubSpot restore of the same record (the row
//! linked to its deleted id again by a pull) clears the mark, except after a privacy deletion,
//! which is never undone automatically.
//!
//! Also here: the HubSpot ids a full pull has seen (`pull_seen`), so that after its last page
//! it can find the linked rows whose record it did not read, set-based.

use super::retention::ENDED_JOBS_WORKING_ROWS;
use super::time::DbTime;
use super::{Store, StoreError, Tx, on_pool, on_tx};
use crate::ids::{ContactId, HsObjectId};
use chrono::{DateTime, Utc};
use sqlx::types::Json;

/// Why HubSpot no longer has a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TombstoneReason {
    /// Deleted (a `contact.deletion` webhook, a 404, or found gone by a full pull).
    Deleted,
    /// Deleted for privacy (GDPR, `contact.privacyDeletion`): never undone automatically.
    PrivacyDeletion,
    /// Merged into another record that cannot be found.
    MergedAwayWithoutSurvivor,
    /// Archived (in HubSpot's recycle bin).
    Archived,
}

impl TombstoneReason {
    /// Every reason, in a fixed order (for counts).
    pub const ALL: [TombstoneReason; 4] = [
        Self::Deleted,
        Self::PrivacyDeletion,
        Self::MergedAwayWithoutSurvivor,
        Self::Archived,
    ];

    /// The stored (and wire) form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::PrivacyDeletion => "privacy_deletion",
            Self::MergedAwayWithoutSurvivor => "merged_away_without_survivor",
            Self::Archived => "archived",
        }
    }

    /// Reads the stored form.
    pub fn parse(raw: &str) -> Result<Self, StoreError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| StoreError::InvalidData(format!("unknown tombstone reason {raw:?}")))
    }
}

impl std::fmt::Display for TombstoneReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The mark on a row whose HubSpot contact was deleted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Tombstone {
    /// When crm-sync learnt of the deletion.
    pub at: DateTime<Utc>,
    /// Why.
    pub reason: TombstoneReason,
    /// The HubSpot record that was deleted (kept for reference).
    pub hs_object_id: Option<HsObjectId>,
}

/// What [`Store::restore_contact`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// The tombstone was removed; the row as it is now.
    Restored(super::Contact),
    /// The row carries no tombstone.
    NotTombstoned(super::Contact),
    /// No row has that id.
    Unknown,
}

/// PostgreSQL: tombstones the rows linked to any of `$1`. A privacy deletion is never turned
/// into a lesser reason (HubSpot may send a deletion after it).
const PG_TOMBSTONE: &str = "
    UPDATE contacts
       SET hubspot_deleted_at = $2,
           hubspot_deleted_reason = CASE WHEN hubspot_deleted_reason = 'privacy_deletion'
                                         THEN hubspot_deleted_reason ELSE $3 END,
           hubspot_deleted_id = hs_object_id,
           hs_object_id = NULL
     WHERE hs_object_id = ANY($1::text[])
 RETURNING id";

/// SQLite: the same, `$1` a JSON array of ids.
const SQLITE_TOMBSTONE: &str = "
    UPDATE contacts
       SET hubspot_deleted_at = $2,
           hubspot_deleted_reason = CASE WHEN hubspot_deleted_reason = 'privacy_deletion'
                                         THEN hubspot_deleted_reason ELSE $3 END,
           hubspot_deleted_id = hs_object_id,
           hs_object_id = NULL
     WHERE hs_object_id IN (SELECT value FROM json_each($1))
 RETURNING id";

/// PostgreSQL: a privacy deletion of a record whose row is tombstoned already (a deletion came
/// first) makes the mark a privacy deletion, so that no restore undoes it.
const PG_MAKE_PRIVATE: &str = "
    UPDATE contacts SET hubspot_deleted_reason = 'privacy_deletion'
     WHERE hubspot_deleted_at IS NOT NULL AND hs_object_id IS NULL
       AND hubspot_deleted_id = ANY($1::text[])
 RETURNING id";

/// SQLite: the same.
const SQLITE_MAKE_PRIVATE: &str = "
    UPDATE contacts SET hubspot_deleted_reason = 'privacy_deletion'
     WHERE hubspot_deleted_at IS NOT NULL AND hs_object_id IS NULL
       AND hubspot_deleted_id IN (SELECT value FROM json_each($1))
 RETURNING id";

/// PostgreSQL: rows of `$1` linked again to the very record they were tombstoned for (HubSpot
/// restored it). Probes the unique `hs_object_id` index once per id; no scan, whatever the
/// planner knows of the table.
const PG_CLEAR_RESTORED: &str = "
    UPDATE contacts
       SET hubspot_deleted_at = NULL, hubspot_deleted_reason = NULL, hubspot_deleted_id = NULL
     WHERE hs_object_id = ANY($1::text[])
       AND hubspot_deleted_at IS NOT NULL
       AND hubspot_deleted_reason <> 'privacy_deletion'
       AND hs_object_id = hubspot_deleted_id";

/// SQLite: the same, `$1` a JSON array of ids.
const SQLITE_CLEAR_RESTORED: &str = "
    UPDATE contacts
       SET hubspot_deleted_at = NULL, hubspot_deleted_reason = NULL, hubspot_deleted_id = NULL
     WHERE hs_object_id IN (SELECT value FROM json_each($1))
       AND hubspot_deleted_at IS NOT NULL
       AND hubspot_deleted_reason <> 'privacy_deletion'
       AND hs_object_id = hubspot_deleted_id";

impl Tx {
    /// Tombstones the rows linked to any of `ids` for `reason`, clearing their link (the
    /// tombstone keeps it); returns the rows, by id.
    pub async fn tombstone_hs_objects(
        &mut self,
        ids: &[HsObjectId],
        reason: TombstoneReason,
    ) -> Result<Vec<ContactId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(|id| id.0.as_str()).collect();
        let now = DbTime(Utc::now());
        let private = reason == TombstoneReason::PrivacyDeletion;
        let mut rows: Vec<ContactId> = on_tx!(&mut *self, c =>
            postgres: sqlx::query_scalar(PG_TOMBSTONE)
                .bind(&ids)
                .bind(now)
                .bind(reason.as_str())
                .fetch_all(c)
                .await?,
            sqlite: sqlx::query_scalar(SQLITE_TOMBSTONE)
                .bind(Json(&ids))
                .bind(now)
                .bind(reason.as_str())
                .fetch_all(c)
                .await?,
        );
        if private {
            let made_private: Vec<ContactId> = on_tx!(self, c =>
                postgres: sqlx::query_scalar(PG_MAKE_PRIVATE).bind(&ids).fetch_all(c).await?,
                sqlite: sqlx::query_scalar(SQLITE_MAKE_PRIVATE)
                    .bind(Json(&ids))
                    .fetch_all(c)
                    .await?,
            );
            rows.extend(made_private);
        }
        rows.sort();
        rows.dedup();
        Ok(rows)
    }

    /// Clears the tombstones of the rows linked to any of `ids` whose link is again the
    /// record they were tombstoned for (a HubSpot restore of the same id, read by a pull);
    /// never those of a privacy deletion. Returns how many.
    pub async fn clear_restored_tombstones(&mut self, ids: &[&str]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let done = on_tx!(self, c =>
            postgres: sqlx::query(PG_CLEAR_RESTORED).bind(ids).execute(c).await?.rows_affected(),
            sqlite: sqlx::query(SQLITE_CLEAR_RESTORED)
                .bind(Json(ids))
                .execute(c)
                .await?
                .rows_affected(),
        );
        Ok(done)
    }

    /// Records that the full pull `job` read these HubSpot ids (idempotent: a page written
    /// again after a crash adds nothing).
    pub async fn mark_pull_seen(&mut self, job: &str, ids: &[&str]) -> Result<(), StoreError> {
        const PG: &str = "INSERT INTO pull_seen (job_id, hs_object_id)
                          SELECT $1, id FROM UNNEST($2::text[]) AS t(id)
                          ON CONFLICT DO NOTHING";
        const SQLITE: &str = "INSERT INTO pull_seen (job_id, hs_object_id)
                              SELECT $1, value FROM json_each($2) WHERE true
                              ON CONFLICT DO NOTHING";
        if ids.is_empty() {
            return Ok(());
        }
        on_tx!(self, c =>
            postgres: sqlx::query(PG).bind(job).bind(ids).execute(c).await.map(drop)?,
            sqlite: sqlx::query(SQLITE).bind(job).bind(Json(ids)).execute(c).await.map(drop)?,
        );
        Ok(())
    }

    /// Forgets what the full pull `job` has seen (its sweep is over).
    pub async fn forget_pull_seen(&mut self, job: &str) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM pull_seen WHERE job_id = $1";
        on_tx!(self, c => sqlx::query(SQL).bind(job).execute(c).await.map(drop)?);
        Ok(())
    }
}

impl Store {
    /// [`Tx::tombstone_hs_objects`] in a transaction of its own.
    pub async fn tombstone_hs_objects(
        &self,
        ids: &[HsObjectId],
        reason: TombstoneReason,
    ) -> Result<Vec<ContactId>, StoreError> {
        let mut tx = Tx::begin(self).await?;
        let rows = tx.tombstone_hs_objects(ids, reason).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Removes a row's tombstone, so that push may create its contact again (a user's act).
    pub async fn restore_contact(&self, id: ContactId) -> Result<Restore, StoreError> {
        const SQL: &str = "UPDATE contacts SET hubspot_deleted_at = NULL,
                                  hubspot_deleted_reason = NULL, hubspot_deleted_id = NULL
                            WHERE id = $1 AND hubspot_deleted_at IS NOT NULL";
        let done = on_pool!(self, pool => {
            sqlx::query(SQL).bind(id).execute(pool).await.map(|d| d.rows_affected())
        })?;
        let Some(contact) = self.get_contact(id).await? else {
            return Ok(Restore::Unknown);
        };
        Ok(if done == 1 {
            Restore::Restored(contact)
        } else {
            Restore::NotTombstoned(contact)
        })
    }

    /// How many rows carry a tombstone, by reason (every reason, zero included).
    pub async fn count_tombstones(&self) -> Result<Vec<(TombstoneReason, i64)>, StoreError> {
        const SQL: &str = "SELECT hubspot_deleted_reason, COUNT(*) FROM contacts
                            WHERE hubspot_deleted_at IS NOT NULL GROUP BY hubspot_deleted_reason";
        let rows: Vec<(String, i64)> =
            on_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await)?;
        let mut counts: Vec<(TombstoneReason, i64)> =
            TombstoneReason::ALL.iter().map(|r| (*r, 0)).collect();
        for (raw, n) in rows {
            let reason = TombstoneReason::parse(&raw)?;
            if let Some(slot) = counts.iter_mut().find(|(r, _)| *r == reason) {
                slot.1 = n;
            }
        }
        Ok(counts)
    }

    /// Forgets what full pulls that are no longer active saw, and what dry ones noted (a job
    /// that failed or was cancelled before its sweep ended leaves its rows; a pruning round
    /// forgets them too).
    pub async fn forget_stale_pull_seen(&self) -> Result<(), StoreError> {
        for sql in ENDED_JOBS_WORKING_ROWS {
            on_pool!(self, pool => sqlx::query(sql).execute(pool).await.map(drop))?;
        }
        Ok(())
    }

    /// Brings PostgreSQL's statistics of `table` and `pull_seen` up to date before a sweep's
    /// first anti-join: a full pull has just filled `pull_seen` (and a push may have filled
    /// `table`) far beyond what autovacuum last measured, and with the stale figures the planner
    /// picks a plan that rescans `pull_seen` for every linked row (54 s for one page of a
    /// 50,000-row sweep). SQLite plans by its indexes and needs nothing.
    pub async fn refresh_sweep_statistics(&self, table: SweepTable) -> Result<(), StoreError> {
        if let Some(pool) = self.pg_pool() {
            let sql = match table {
                SweepTable::Contacts => "ANALYZE contacts, pull_seen",
                SweepTable::Companies => "ANALYZE companies, pull_seen",
                SweepTable::ObjectLinks => "ANALYZE object_links, pull_seen",
            };
            sqlx::query(sql).execute(pool).await?;
        }
        Ok(())
    }

    /// The next `limit` rows, by id after `after`, linked to a HubSpot id the full pull `job`
    /// did not read: one keyset anti-join over `contacts` and `pull_seen`.
    pub async fn linked_unseen(
        &self,
        job: &str,
        after: ContactId,
        limit: u32,
    ) -> Result<Vec<(ContactId, HsObjectId)>, StoreError> {
        const SQL: &str = "SELECT c.id, c.hs_object_id FROM contacts c
                            WHERE c.hs_object_id IS NOT NULL AND c.id > $2
                              AND NOT EXISTS (SELECT 1 FROM pull_seen s
                                               WHERE s.job_id = $1
                                                 AND s.hs_object_id = c.hs_object_id)
                            ORDER BY c.id LIMIT $3";
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, (ContactId, HsObjectId)>(SQL)
                .bind(job)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }
}

/// The tombstone statements of the `companies` table: the same marks as on contacts, keyed by
/// the company's own HubSpot id (a company id and a contact id may be the same number).
mod companies {
    /// PostgreSQL: tombstones the companies linked to any of `$1` (see [`super::PG_TOMBSTONE`]).
    pub(super) const PG_TOMBSTONE: &str = "
        UPDATE companies
           SET hubspot_deleted_at = $2,
               hubspot_deleted_reason = CASE WHEN hubspot_deleted_reason = 'privacy_deletion'
                                             THEN hubspot_deleted_reason ELSE $3 END,
               hubspot_deleted_id = hs_object_id,
               hs_object_id = NULL
         WHERE hs_object_id = ANY($1::text[])
     RETURNING id";

    /// SQLite: the same, `$1` a JSON array of ids.
    pub(super) const SQLITE_TOMBSTONE: &str = "
        UPDATE companies
           SET hubspot_deleted_at = $2,
               hubspot_deleted_reason = CASE WHEN hubspot_deleted_reason = 'privacy_deletion'
                                             THEN hubspot_deleted_reason ELSE $3 END,
               hubspot_deleted_id = hs_object_id,
               hs_object_id = NULL
         WHERE hs_object_id IN (SELECT value FROM json_each($1))
     RETURNING id";

    /// A user's restore of a company: the mark goes, the next push may create it again.
    pub(super) const RESTORE: &str = "
        UPDATE companies SET hubspot_deleted_at = NULL, hubspot_deleted_reason = NULL,
                             hubspot_deleted_id = NULL
         WHERE id = $1 AND hubspot_deleted_at IS NOT NULL";
}

impl Tx {
    /// Tombstones the companies linked to any of `ids` for `reason`, clearing their link (the
    /// tombstone keeps it): push never creates them again until a user restores them.
    /// Returns the rows, by id.
    pub async fn tombstone_companies(
        &mut self,
        ids: &[crate::ids::CompanyId],
        reason: TombstoneReason,
    ) -> Result<Vec<crate::ids::LocalCompanyId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(|id| id.0.as_str()).collect();
        let now = DbTime(Utc::now());
        let mut rows: Vec<crate::ids::LocalCompanyId> = on_tx!(self, c =>
            postgres: sqlx::query_scalar(companies::PG_TOMBSTONE)
                .bind(&ids)
                .bind(now)
                .bind(reason.as_str())
                .fetch_all(c)
                .await?,
            sqlite: sqlx::query_scalar(companies::SQLITE_TOMBSTONE)
                .bind(Json(&ids))
                .bind(now)
                .bind(reason.as_str())
                .fetch_all(c)
                .await?,
        );
        rows.sort();
        Ok(rows)
    }
}

impl Store {
    /// Removes a company's tombstone, so that push may create it again (a user's act).
    /// `Ok(false)` when the row carries none (or does not exist).
    pub async fn restore_company(
        &self,
        id: crate::ids::LocalCompanyId,
    ) -> Result<bool, StoreError> {
        let done = on_pool!(self, pool => {
            sqlx::query(companies::RESTORE).bind(id).execute(pool).await.map(|d| d.rows_affected())
        })?;
        Ok(done == 1)
    }
}

/// The table whose linked rows a sweep checks against `pull_seen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepTable {
    /// crm-sync's `contacts`.
    Contacts,
    /// crm-sync's `companies`.
    Companies,
    /// The links of a mapping to a table of your own.
    ObjectLinks,
}
