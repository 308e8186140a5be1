//! The durable list of HubSpot records that webhooks named and that still need a targeted
//! pull (table `webhook_pulls`), and its claims.
//!
//! Each row says what to read ([`PendingObject`]): a contact, a company, or a contact's
//! company associations; the object is part of the key, so the three are never confused (a
//! contact and a company may share an id). The functions without an object are the
//! contacts' (their original meaning).
//!
//! The webhook route records the ids before it answers HubSpot, so that nothing is lost
//! between the answer and the pull. The webhook pull claims them oldest first
//! ([`Store::claim_pending_pulls`]: one statement, `FOR UPDATE SKIP LOCKED` on PostgreSQL, the
//! single writer on SQLite), so no id is read by two runs, and clears them in the transaction
//! that writes what it read ([`Tx::clear_pulled`]). A record named again while pending keeps
//! its first request time (oldest first is the fair order) and counts one more request; the
//! pull clears a row only when that count is still the one it claimed, so a change announced
//! while the record was being read is released and read again instead of being cleared unread.

use sqlx::types::Json;

use super::{Store, StoreError, Tx, on_pool, on_tx};
use crate::ids::{HsObjectId, JobId, LeaseId};

/// What a pending webhook read is about (column `object`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PendingObject {
    /// A HubSpot contact to read (created, changed, restored, a merge's survivor).
    Contact,
    /// A HubSpot company to read (created, changed or restored by someone else).
    Company,
    /// A HubSpot contact whose company associations to read (an association changed).
    ContactAssociations,
}

impl PendingObject {
    /// The value stored in `webhook_pulls.object`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contact => "contact",
            Self::Company => "company",
            Self::ContactAssociations => "contact_associations",
        }
    }
}

/// A pending record as a pull took it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingPull {
    /// The HubSpot record.
    pub hs_object_id: HsObjectId,
    /// How many times webhooks had named it when it was taken.
    pub requests: i64,
}

/// Up to `$1` unclaimed (or stale-claimed) rows, oldest request first. A claim is stale when
/// its lease no longer holds a running job: the run that made it died or was superseded.
const CLAIMABLE: &str = "SELECT hs_object_id FROM webhook_pulls w
     WHERE w.object = $4
       AND (w.claimed_by IS NULL
            OR NOT EXISTS (SELECT 1 FROM sync_jobs j WHERE j.lease = w.claimed_by AND j.status = 'running'))
     ORDER BY w.requested_at, w.hs_object_id LIMIT $1";

/// Claims rows of object `$4` under lease `$2` of job `$3`, only while that lease still holds
/// the running job, so a run presumed dead cannot take ids from its successor.
const CLAIM: &str = "UPDATE webhook_pulls SET claimed_by = $2
     WHERE object = $4 AND hs_object_id IN (CLAIMABLE)
       AND EXISTS (SELECT 1 FROM sync_jobs WHERE id = $3 AND lease = $2 AND status = 'running')
     RETURNING hs_object_id, requests";

impl Store {
    /// Records contacts `ids` as needing a pull (see [`Store::record_pending`]).
    pub async fn record_pending_pulls(&self, ids: &[HsObjectId]) -> Result<u64, StoreError> {
        self.record_pending(PendingObject::Contact, ids).await
    }

    /// Records `ids` as needing a read of `object`; an id already pending for it keeps its
    /// place in line and counts one more request. Returns how many ids were recorded.
    pub async fn record_pending(
        &self,
        object: PendingObject,
        ids: &[HsObjectId],
    ) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        // One order for every delivery: concurrent upserts of overlapping ids then lock their
        // rows in the same order and wait for each other instead of deadlocking.
        let mut ids: Vec<&str> = ids.iter().map(|id| id.0.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        const PG: &str = "INSERT INTO webhook_pulls (object, hs_object_id)
             SELECT $2, id FROM UNNEST($1::text[]) AS t(id)
             ON CONFLICT (object, hs_object_id) DO UPDATE SET requests = webhook_pulls.requests + 1";
        const SQLITE: &str = "INSERT INTO webhook_pulls (object, hs_object_id)
             SELECT $2, value FROM json_each($1) WHERE true
             ON CONFLICT (object, hs_object_id) DO UPDATE SET requests = webhook_pulls.requests + 1";
        let object = object.as_str();
        let done = on_pool!(self, pool =>
            postgres: sqlx::query(PG).bind(&ids).bind(object).execute(pool).await?.rows_affected(),
            sqlite: sqlx::query(SQLITE).bind(Json(&ids)).bind(object).execute(pool).await?.rows_affected(),
        );
        Ok(done)
    }

    /// Up to `limit` pending contacts with their request counts, oldest request first,
    /// claimed or not (a look, not a claim).
    pub async fn peek_pending_pulls(&self, limit: u32) -> Result<Vec<PendingPull>, StoreError> {
        self.peek_pending(PendingObject::Contact, limit).await
    }

    /// [`Store::peek_pending_pulls`] for reads of `object`.
    pub async fn peek_pending(
        &self,
        object: PendingObject,
        limit: u32,
    ) -> Result<Vec<PendingPull>, StoreError> {
        const SQL: &str = "SELECT hs_object_id, requests FROM webhook_pulls WHERE object = $2
                            ORDER BY requested_at, hs_object_id LIMIT $1";
        let rows = on_pool!(self, pool => {
            sqlx::query_as(SQL)
                .bind(i64::from(limit))
                .bind(object.as_str())
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Claims up to `limit` pending contacts (see [`Store::claim_pending`]).
    pub async fn claim_pending_pulls(
        &self,
        job: JobId,
        lease: &LeaseId,
        limit: u32,
    ) -> Result<Vec<PendingPull>, StoreError> {
        self.claim_pending(PendingObject::Contact, job, lease, limit)
            .await
    }

    /// Claims up to `limit` pending reads of `object`, oldest request first, for the run of
    /// `job` holding `lease`, in one statement: rows another live run claimed are skipped, so
    /// no record is read by two runs. Empty when nothing is claimable or the lease no longer
    /// holds the job.
    pub async fn claim_pending(
        &self,
        object: PendingObject,
        job: JobId,
        lease: &LeaseId,
        limit: u32,
    ) -> Result<Vec<PendingPull>, StoreError> {
        let sql = on_pool!(self, _pool =>
            // SKIP LOCKED: a row another transaction is clearing or claiming right now is left
            // to it instead of waited for.
            postgres: CLAIM.replace("CLAIMABLE", &format!("{CLAIMABLE} FOR UPDATE SKIP LOCKED")),
            // One statement is one write transaction: SQLite's single writer makes it atomic.
            sqlite: CLAIM.replace("CLAIMABLE", CLAIMABLE),
        );
        let rows: Vec<PendingPull> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(i64::from(limit))
                .bind(lease)
                .bind(job.to_string())
                .bind(object.as_str())
                .fetch_all(pool)
                .await?
        });
        // The oldest requests were chosen; the order within one batch read does not matter.
        Ok(rows)
    }

    /// How many reads are pending (claimed or not), of every object.
    pub async fn count_pending_pulls(&self) -> Result<u64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM webhook_pulls";
        let n: i64 = on_pool!(self, pool => sqlx::query_scalar(SQL).fetch_one(pool).await?);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// How many reads of `object` are pending (claimed or not).
    pub async fn count_pending(&self, object: PendingObject) -> Result<u64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM webhook_pulls WHERE object = $1";
        let n: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(SQL).bind(object.as_str()).fetch_one(pool).await?
        });
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Clears contacts' ids whatever their request count (e.g. an operator dropping a
    /// backlog). Returns how many were pending.
    pub async fn clear_pending_pulls(&self, ids: &[HsObjectId]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = ids.iter().map(|id| id.0.as_str()).collect();
        const PG: &str =
            "DELETE FROM webhook_pulls WHERE object = 'contact' AND hs_object_id = ANY($1)";
        const SQLITE: &str = "DELETE FROM webhook_pulls
             WHERE object = 'contact' AND hs_object_id IN (SELECT value FROM json_each($1))";
        let done = on_pool!(self, pool =>
            postgres: sqlx::query(PG).bind(&ids).execute(pool).await?.rows_affected(),
            sqlite: sqlx::query(SQLITE).bind(Json(&ids)).execute(pool).await?.rows_affected(),
        );
        Ok(done)
    }
}

impl Store {
    /// Which of these HubSpot companies a local company is linked to: a webhook about one of
    /// them needs no read (a pull never changes a linked company's own fields).
    pub async fn companies_linked_among(
        &self,
        ids: &[HsObjectId],
    ) -> Result<Vec<HsObjectId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = ids.iter().map(|id| id.0.as_str()).collect();
        const PG: &str = "SELECT hs_object_id FROM companies WHERE hs_object_id = ANY($1)";
        const SQLITE: &str = "SELECT hs_object_id FROM companies
                               WHERE hs_object_id IN (SELECT value FROM json_each($1))";
        let linked: Vec<String> = on_pool!(self, pool =>
            postgres: sqlx::query_scalar(PG).bind(&ids).fetch_all(pool).await?,
            sqlite: sqlx::query_scalar(SQLITE).bind(Json(&ids)).fetch_all(pool).await?,
        );
        Ok(linked.into_iter().map(HsObjectId).collect())
    }
}

impl Tx {
    /// Clears the contacts a pull read (see [`Tx::clear_read`]).
    pub async fn clear_pulled(&mut self, pulled: &[PendingPull]) -> Result<u64, StoreError> {
        self.clear_read(PendingObject::Contact, pulled).await
    }

    /// Clears the reads of `object` a pull made — each only if no webhook named it again since
    /// it was taken — and releases the claim on those that were named again, so they are read
    /// once more. Returns how many rows were cleared.
    pub async fn clear_read(
        &mut self,
        object: PendingObject,
        pulled: &[PendingPull],
    ) -> Result<u64, StoreError> {
        if pulled.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = pulled.iter().map(|p| p.hs_object_id.0.as_str()).collect();
        let requests: Vec<i64> = pulled.iter().map(|p| p.requests).collect();
        let object = object.as_str();
        let cleared = on_tx!(self, c =>
            postgres: {
                let cleared = sqlx::query(
                    "DELETE FROM webhook_pulls w USING UNNEST($1::text[], $2::bigint[]) AS t(id, n)
                      WHERE w.object = $3 AND w.hs_object_id = t.id AND w.requests = t.n",
                )
                .bind(&ids)
                .bind(&requests)
                .bind(object)
                .execute(&mut *c)
                .await?
                .rows_affected();
                sqlx::query(
                    "UPDATE webhook_pulls SET claimed_by = NULL
                      WHERE object = $2 AND hs_object_id = ANY($1)",
                )
                .bind(&ids)
                .bind(object)
                .execute(c)
                .await?;
                cleared
            },
            sqlite: {
                let pairs: Vec<(&str, i64)> = ids.iter().copied().zip(requests).collect();
                let cleared = sqlx::query(
                    "DELETE FROM webhook_pulls WHERE object = $2 AND EXISTS (
                        SELECT 1 FROM json_each($1) AS t
                         WHERE json_extract(t.value, '$[0]') = webhook_pulls.hs_object_id
                           AND json_extract(t.value, '$[1]') = webhook_pulls.requests)",
                )
                .bind(Json(&pairs))
                .bind(object)
                .execute(&mut *c)
                .await?
                .rows_affected();
                sqlx::query(
                    "UPDATE webhook_pulls SET claimed_by = NULL
                      WHERE object = $2 AND hs_object_id IN (SELECT value FROM json_each($1))",
                )
                .bind(Json(&ids))
                .bind(object)
                .execute(c)
                .await?;
                cleared
            },
        );
        Ok(cleared)
    }

    /// Whether any record is pending, as this transaction sees it (a finishing drain asks, to
    /// queue its successor in the same transaction).
    pub async fn has_pending_pulls(&mut self) -> Result<bool, StoreError> {
        const SQL: &str = "SELECT EXISTS (SELECT 1 FROM webhook_pulls)";
        let any: bool = on_tx!(self, c => sqlx::query_scalar(SQL).fetch_one(c).await?);
        Ok(any)
    }
}
