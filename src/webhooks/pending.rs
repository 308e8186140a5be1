//! The durable list of HubSpot records that webhooks named and that still need a targeted
//! pull (table `webhook_pulls`).
//!
//! The webhook route records the ids before it answers HubSpot, so that nothing is lost
//! between the answer and the pull; the webhook pull job takes them oldest first and clears
//! them in the transaction that writes what it read. A record named again while pending keeps
//! its first request time (oldest first is the fair order) and counts one more request; the
//! pull clears a row only when that count is still the one it took, so a change announced
//! while the record was being read is read again instead of being cleared unread.

use sqlx::types::Json;

use crate::ids::HsObjectId;
use crate::store::jobs::Tx;
use crate::store::{Store, StoreError};

/// A pending record as the pull took it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingPull {
    /// The HubSpot record.
    pub hs_object_id: HsObjectId,
    /// How many times webhooks had named it when it was taken.
    pub requests: i64,
}

/// Records `ids` as needing a pull; an id already pending keeps its place in line and
/// counts one more request. Returns how many ids were recorded.
pub async fn record_pending_pulls(store: &Store, ids: &[HsObjectId]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = ids.iter().map(|id| id.0.as_str()).collect();
    let done = if let Some(pool) = store.pg_pool() {
        sqlx::query(
            "INSERT INTO webhook_pulls (hs_object_id) SELECT * FROM UNNEST($1::text[])
             ON CONFLICT (hs_object_id) DO UPDATE SET requests = webhook_pulls.requests + 1",
        )
        .bind(&ids)
        .execute(pool)
        .await?
        .rows_affected()
    } else if let Some(pool) = store.sqlite_pool() {
        sqlx::query(
            "INSERT INTO webhook_pulls (hs_object_id) SELECT value FROM json_each($1) WHERE true
             ON CONFLICT (hs_object_id) DO UPDATE SET requests = webhook_pulls.requests + 1",
        )
        .bind(Json(&ids))
        .execute(pool)
        .await?
        .rows_affected()
    } else {
        0
    };
    Ok(done)
}

/// Up to `limit` pending ids, oldest request first.
pub async fn pending_pulls(store: &Store, limit: u32) -> Result<Vec<HsObjectId>, StoreError> {
    Ok(take_pending_pulls(store, limit)
        .await?
        .into_iter()
        .map(|p| p.hs_object_id)
        .collect())
}

/// Up to `limit` pending records with their request counts, oldest request first (what a
/// pull reads, then clears with [`clear_pulled`]).
pub async fn take_pending_pulls(store: &Store, limit: u32) -> Result<Vec<PendingPull>, StoreError> {
    const SQL: &str = "SELECT hs_object_id, requests FROM webhook_pulls
                        ORDER BY requested_at, hs_object_id LIMIT $1";
    Ok(if let Some(pool) = store.pg_pool() {
        sqlx::query_as(SQL)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
    } else if let Some(pool) = store.sqlite_pool() {
        sqlx::query_as(SQL)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    })
}

/// How many records are pending.
pub async fn count_pending_pulls(store: &Store) -> Result<u64, StoreError> {
    const SQL: &str = "SELECT COUNT(*) FROM webhook_pulls";
    let n: i64 = if let Some(pool) = store.pg_pool() {
        sqlx::query_scalar(SQL).fetch_one(pool).await?
    } else if let Some(pool) = store.sqlite_pool() {
        sqlx::query_scalar(SQL).fetch_one(pool).await?
    } else {
        0
    };
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Clears, in `tx`, the records a pull read — each only if no webhook named it again since it
/// was taken. Returns how many rows were cleared.
pub async fn clear_pulled(tx: &mut Tx, pulled: &[PendingPull]) -> Result<u64, StoreError> {
    if pulled.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = pulled.iter().map(|p| p.hs_object_id.0.as_str()).collect();
    let requests: Vec<i64> = pulled.iter().map(|p| p.requests).collect();
    let done = if let Some(conn) = tx.postgres() {
        sqlx::query(
            "DELETE FROM webhook_pulls w USING UNNEST($1::text[], $2::bigint[]) AS t(id, n)
              WHERE w.hs_object_id = t.id AND w.requests = t.n",
        )
        .bind(&ids)
        .bind(&requests)
        .execute(conn)
        .await?
        .rows_affected()
    } else if let Some(conn) = tx.sqlite() {
        let pairs: Vec<(&str, i64)> = ids.into_iter().zip(requests).collect();
        sqlx::query(
            "DELETE FROM webhook_pulls WHERE EXISTS (
                SELECT 1 FROM json_each($1) AS t
                 WHERE json_extract(t.value, '$[0]') = webhook_pulls.hs_object_id
                   AND json_extract(t.value, '$[1]') = webhook_pulls.requests)",
        )
        .bind(Json(&pairs))
        .execute(conn)
        .await?
        .rows_affected()
    } else {
        0
    };
    Ok(done)
}

/// Clears ids whatever their request count (e.g. an operator dropping a backlog). Returns how
/// many were pending.
pub async fn clear_pending_pulls(store: &Store, ids: &[HsObjectId]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = ids.iter().map(|id| id.0.as_str()).collect();
    let done = if let Some(pool) = store.pg_pool() {
        sqlx::query("DELETE FROM webhook_pulls WHERE hs_object_id = ANY($1)")
            .bind(&ids)
            .execute(pool)
            .await?
            .rows_affected()
    } else if let Some(pool) = store.sqlite_pool() {
        sqlx::query(
            "DELETE FROM webhook_pulls WHERE hs_object_id IN (SELECT value FROM json_each($1))",
        )
        .bind(Json(&ids))
        .execute(pool)
        .await?
        .rows_affected()
    } else {
        0
    };
    Ok(done)
}
