//! What HubSpot webhooks change in the database: the `webhook_events` dedupe table, and the
//! local effects of deletions and merges on `contacts.hs_object_id`.

use super::time::DbTime;
use super::{Store, StoreError, Tx, on_pool, on_tx};
use crate::ids::{ContactId, HsObjectId, LocalCompanyId, PortalId};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use std::collections::HashSet;

/// What identifies a received webhook event, as recorded in `webhook_events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEventKey {
    /// The dedupe key: equal for a redelivery of the same event, different otherwise.
    pub dedupe_key: String,
    /// The account the event is about.
    pub portal_id: PortalId,
    /// HubSpot's `eventId` (not unique on its own).
    pub event_id: String,
    /// HubSpot's `subscriptionType`, e.g. `contact.creation`.
    pub subscription_type: String,
    /// The record the event is about, when it names one.
    pub object_id: Option<HsObjectId>,
    /// HubSpot's `occurredAt`, milliseconds since the epoch.
    pub occurred_at_ms: i64,
}

/// What a merge did to the local rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOutcome<R = ContactId> {
    /// The HubSpot id that survived the merge.
    pub survivor: HsObjectId,
    /// The local row linked to the survivor after the merge, if any.
    pub linked: Option<R>,
    /// True when that row held a merged-away id and was re-linked by this merge; false when it
    /// already held the survivor (or no row is linked).
    pub relinked: bool,
    /// Rows that held a merged-away id and were unlinked, because another row already holds
    /// (or now holds) the survivor and a HubSpot id links at most one row.
    pub unlinked: Vec<R>,
}

/// PostgreSQL: the events as one array per column; `RETURNING` names the keys that were new.
const PG_RECORD_EVENTS: &str = "
    INSERT INTO webhook_events
        (dedupe_key, portal_id, event_id, subscription_type, object_id, occurred_at_ms)
    SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::int8[])
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING dedupe_key";

/// SQLite: the events as one JSON array of arrays (`WHERE true` disambiguates the upsert).
const SQLITE_RECORD_EVENTS: &str = "
    INSERT INTO webhook_events
        (dedupe_key, portal_id, event_id, subscription_type, object_id, occurred_at_ms)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
           json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]')
      FROM json_each($1)
     WHERE true
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING dedupe_key";

const UNLINK_PG: &str = "UPDATE contacts SET hs_object_id = NULL
                          WHERE hs_object_id = ANY($1) RETURNING id";
const UNLINK_SQLITE: &str = "UPDATE contacts SET hs_object_id = NULL
                              WHERE hs_object_id IN (SELECT value FROM json_each($1)) RETURNING id";

impl Tx {
    /// Clears `hs_object_id` on the rows linked to any of `ids` (HubSpot deleted those
    /// records). The contacts themselves stay. Returns the rows unlinked. A targeted pull
    /// unlinks the records HubSpot no longer has in the transaction of the page it writes.
    pub async fn unlink_hs_objects(
        &mut self,
        ids: &[HsObjectId],
    ) -> Result<Vec<ContactId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(|id| id.0.as_str()).collect();
        let mut unlinked: Vec<ContactId> = on_tx!(self, c =>
            postgres: sqlx::query_scalar(UNLINK_PG).bind(&ids).fetch_all(c).await?,
            sqlite: sqlx::query_scalar(UNLINK_SQLITE).bind(Json(&ids)).fetch_all(c).await?,
        );
        unlinked.sort();
        Ok(unlinked)
    }
}

/// A local row linked to a HubSpot record, with the fields a webhook may report a change of.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LinkedRow {
    /// The HubSpot record.
    pub hs_object_id: HsObjectId,
    /// The local contact linked to it.
    pub id: ContactId,
    /// Its email (stored lower-case).
    pub email: Option<String>,
    /// Its first name.
    pub first_name: Option<String>,
    /// Its last name.
    pub last_name: Option<String>,
}

impl Store {
    /// The local rows linked to any of `ids` (one query; ids linked to no row are absent).
    pub async fn linked_rows(&self, ids: &[HsObjectId]) -> Result<Vec<LinkedRow>, StoreError> {
        const PG: &str = "SELECT hs_object_id, id, email, first_name, last_name FROM contacts
                           WHERE hs_object_id = ANY($1)";
        const SQLITE: &str = "SELECT hs_object_id, id, email, first_name, last_name FROM contacts
                               WHERE hs_object_id IN (SELECT value FROM json_each($1))";
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(|id| id.0.as_str()).collect();
        Ok(on_pool!(self, pool =>
            postgres: sqlx::query_as(PG).bind(&ids).fetch_all(pool).await?,
            sqlite: sqlx::query_as(SQLITE).bind(Json(&ids)).fetch_all(pool).await?,
        ))
    }

    /// Records received events in one statement and says, for each in input order, whether it
    /// is new (`true`) or was seen before, in an earlier request or earlier in this slice.
    pub async fn record_new_events(
        &self,
        events: &[WebhookEventKey],
    ) -> Result<Vec<bool>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let inserted: Vec<String> = on_pool!(self, pool =>
            postgres: {
                let keys: Vec<&str> = events.iter().map(|e| e.dedupe_key.as_str()).collect();
                let portals: Vec<i64> = events.iter().map(|e| e.portal_id.0).collect();
                let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
                let types: Vec<&str> = events
                    .iter()
                    .map(|e| e.subscription_type.as_str())
                    .collect();
                let objects: Vec<Option<&str>> = events
                    .iter()
                    .map(|e| e.object_id.as_ref().map(|id| id.0.as_str()))
                    .collect();
                let times: Vec<i64> = events.iter().map(|e| e.occurred_at_ms).collect();
                sqlx::query_scalar(PG_RECORD_EVENTS)
                    .bind(&keys)
                    .bind(&portals)
                    .bind(&ids)
                    .bind(&types)
                    .bind(&objects)
                    .bind(&times)
                    .fetch_all(pool)
                    .await?
            },
            sqlite: {
                let rows: Vec<_> = events
                    .iter()
                    .map(|e| {
                        (
                            &e.dedupe_key,
                            e.portal_id.0,
                            &e.event_id,
                            &e.subscription_type,
                            e.object_id.as_ref().map(|id| &id.0),
                            e.occurred_at_ms,
                        )
                    })
                    .collect();
                sqlx::query_scalar(SQLITE_RECORD_EVENTS)
                    .bind(Json(rows))
                    .fetch_all(pool)
                    .await?
            },
        );
        // A key inserted now is new at its first occurrence in the slice only.
        let mut fresh: HashSet<String> = inserted.into_iter().collect();
        Ok(events.iter().map(|e| fresh.remove(&e.dedupe_key)).collect())
    }

    /// Forgets recorded events, so that HubSpot's redelivery is processed again (used when
    /// processing failed after the events were recorded). Returns how many were forgotten.
    pub async fn forget_events(&self, dedupe_keys: &[String]) -> Result<u64, StoreError> {
        const PG: &str = "DELETE FROM webhook_events WHERE dedupe_key = ANY($1)";
        const SQLITE: &str =
            "DELETE FROM webhook_events WHERE dedupe_key IN (SELECT value FROM json_each($1))";
        if dedupe_keys.is_empty() {
            return Ok(0);
        }
        let done = on_pool!(self, pool =>
            postgres: sqlx::query(PG).bind(dedupe_keys).execute(pool).await?.rows_affected(),
            sqlite: sqlx::query(SQLITE)
                .bind(Json(dedupe_keys))
                .execute(pool)
                .await?
                .rows_affected(),
        );
        Ok(done)
    }

    /// Deletes events received before `before` (HubSpot stops redelivering after 24 hours).
    /// Returns how many were deleted.
    pub async fn prune_webhook_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM webhook_events WHERE received_at < $1";
        let done = on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(DbTime(before))
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(done)
    }

    /// [`Tx::unlink_hs_objects`] in a transaction of its own.
    pub async fn unlink_hs_objects(
        &self,
        ids: &[HsObjectId],
    ) -> Result<Vec<ContactId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = Tx::begin(self).await?;
        let unlinked = tx.unlink_hs_objects(ids).await?;
        tx.commit().await?;
        Ok(unlinked)
    }

    /// Applies a HubSpot merge: the rows linked to `merged` ids (the records merged away, in
    /// order of preference) are re-linked to `survivor`. A HubSpot id links at most one row,
    /// so when a row already holds the survivor it keeps it and the others are unlinked;
    /// otherwise the row holding the earliest id of `merged` is re-linked and any others are
    /// unlinked. One transaction; the rows are locked while deciding.
    pub async fn relink_merged(
        &self,
        survivor: &HsObjectId,
        merged: &[HsObjectId],
    ) -> Result<MergeOutcome, StoreError> {
        self.relink_merged_in(&CONTACT_MERGE, survivor, merged)
            .await
    }

    /// [`Self::relink_merged`] for crm-sync's `companies` (a `company.merge` event).
    pub async fn relink_merged_companies(
        &self,
        survivor: &HsObjectId,
        merged: &[HsObjectId],
    ) -> Result<MergeOutcome<LocalCompanyId>, StoreError> {
        self.relink_merged_in(&COMPANY_MERGE, survivor, merged)
            .await
    }

    async fn relink_merged_in<R>(
        &self,
        sql: &MergeSql,
        survivor: &HsObjectId,
        merged: &[HsObjectId],
    ) -> Result<MergeOutcome<R>, StoreError>
    where
        R: Copy + Ord + Into<i64> + Send + Unpin,
        R: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
        R: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        let mut wanted: Vec<&str> = vec![survivor.0.as_str()];
        wanted.extend(merged.iter().map(|id| id.0.as_str()));
        // The lock read and the writes share one transaction (SQLite's is IMMEDIATE: it holds
        // the write lock before reading), so the rows cannot change between decision and writes.
        let mut tx = Tx::begin(self).await?;
        let rows: Vec<(R, HsObjectId)> = on_tx!(&mut tx, c =>
            postgres: sqlx::query_as(sql.pg_lock).bind(&wanted).fetch_all(c).await?,
            sqlite: sqlx::query_as(sql.sqlite_lock).bind(Json(&wanted)).fetch_all(c).await?,
        );
        let plan = MergePlan::new(survivor, merged, rows);
        if !plan.unlink.is_empty() {
            let ids: Vec<i64> = plan.unlink.iter().map(|id| (*id).into()).collect();
            on_tx!(&mut tx, c =>
                postgres: sqlx::query(sql.pg_unlink).bind(&ids).execute(c).await.map(drop)?,
                sqlite: sqlx::query(sql.sqlite_unlink).bind(Json(&ids)).execute(c).await.map(drop)?,
            );
        }
        if let Some(row) = plan.relink {
            let row: i64 = row.into();
            on_tx!(&mut tx, c => {
                sqlx::query(sql.link).bind(row).bind(survivor).execute(c).await.map(drop)?
            });
        }
        tx.commit().await?;
        Ok(MergeOutcome {
            survivor: survivor.clone(),
            linked: plan.keeper,
            relinked: plan.relink.is_some(),
            unlinked: plan.unlink,
        })
    }
}

/// The statements of a merge, per table (the tables' names are fixed, never input).
struct MergeSql {
    pg_lock: &'static str,
    pg_unlink: &'static str,
    sqlite_lock: &'static str,
    sqlite_unlink: &'static str,
    link: &'static str,
}

const CONTACT_MERGE: MergeSql = MergeSql {
    pg_lock: "SELECT id, hs_object_id FROM contacts
               WHERE hs_object_id = ANY($1) ORDER BY id FOR UPDATE",
    pg_unlink: "UPDATE contacts SET hs_object_id = NULL WHERE id = ANY($1)",
    sqlite_lock: "SELECT id, hs_object_id FROM contacts
                   WHERE hs_object_id IN (SELECT value FROM json_each($1)) ORDER BY id",
    sqlite_unlink: "UPDATE contacts SET hs_object_id = NULL
                     WHERE id IN (SELECT value FROM json_each($1))",
    link: "UPDATE contacts SET hs_object_id = $2 WHERE id = $1",
};

/// A company unlinked by a merge keeps its external key: the next push finds the survivor by
/// that key or by its domain, never a second company.
const COMPANY_MERGE: MergeSql = MergeSql {
    pg_lock: "SELECT id, hs_object_id FROM companies
               WHERE hs_object_id = ANY($1) ORDER BY id FOR UPDATE",
    pg_unlink: "UPDATE companies SET hs_object_id = NULL WHERE id = ANY($1)",
    sqlite_lock: "SELECT id, hs_object_id FROM companies
                   WHERE hs_object_id IN (SELECT value FROM json_each($1)) ORDER BY id",
    sqlite_unlink: "UPDATE companies SET hs_object_id = NULL
                     WHERE id IN (SELECT value FROM json_each($1))",
    link: "UPDATE companies SET hs_object_id = $2 WHERE id = $1",
};

/// Which rows a merge keeps, re-links and unlinks.
#[derive(Debug, PartialEq, Eq)]
struct MergePlan<R> {
    /// The row linked to the survivor afterwards.
    keeper: Option<R>,
    /// The keeper, when it must be re-linked (it held a merged-away id).
    relink: Option<R>,
    /// Rows that lose their merged-away id.
    unlink: Vec<R>,
}

impl<R: Copy + Ord> MergePlan<R> {
    fn new(survivor: &HsObjectId, merged: &[HsObjectId], rows: Vec<(R, HsObjectId)>) -> Self {
        let holder = rows
            .iter()
            .find(|(_, id)| id == survivor)
            .map(|(row, _)| *row);
        let preference =
            |id: &HsObjectId| merged.iter().position(|m| m == id).unwrap_or(usize::MAX);
        let (keeper, relink) = match holder {
            Some(row) => (Some(row), None),
            None => {
                let best = rows
                    .iter()
                    .min_by_key(|(row, id)| (preference(id), *row))
                    .map(|(row, _)| *row);
                (best, best)
            }
        };
        let unlink = rows
            .iter()
            .map(|(row, _)| *row)
            .filter(|row| Some(*row) != keeper)
            .collect();
        Self {
            keeper,
            relink,
            unlink,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> HsObjectId {
        HsObjectId::from(s)
    }

    #[test]
    fn a_merge_keeps_the_row_already_holding_the_survivor() {
        let rows = vec![(ContactId(1), id("20")), (ContactId(2), id("10"))];
        let plan = MergePlan::new(&id("10"), &[id("20")], rows);
        assert_eq!(
            plan,
            MergePlan {
                keeper: Some(ContactId(2)),
                relink: None,
                unlink: vec![ContactId(1)],
            }
        );
    }

    #[test]
    fn without_a_holder_the_most_preferred_merged_id_is_relinked() {
        let rows = vec![(ContactId(1), id("30")), (ContactId(2), id("20"))];
        let plan = MergePlan::new(&id("10"), &[id("20"), id("30")], rows);
        assert_eq!(plan.keeper, Some(ContactId(2)));
        assert_eq!(plan.relink, Some(ContactId(2)));
        assert_eq!(plan.unlink, vec![ContactId(1)]);
    }

    #[test]
    fn no_linked_row_means_nothing_to_do() {
        let plan = MergePlan::<ContactId>::new(&id("10"), &[id("20")], Vec::new());
        assert_eq!(
            plan,
            MergePlan {
                keeper: None,
                relink: None,
                unlink: Vec::new()
            }
        );
    }
}
