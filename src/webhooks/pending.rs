//! The durable list of HubSpot records that webhooks named and that still need a targeted
//! pull (table `webhook_pulls`).
//!
//! The webhook route records the ids before it answers HubSpot, so that nothing is lost
//! between the answer and the pull; the pull that reads them clears them. A record named
//! again while pending keeps its first request time (oldest first is the fair order).

use sqlx::types::Json;

use crate::ids::HsObjectId;
use crate::store::{Store, StoreError};

/// Records `ids` as needing a pull; ids already pending stay as they are. Returns how many
/// were new.
pub async fn record_pending_pulls(store: &Store, ids: &[HsObjectId]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = ids.iter().map(|id| id.0.as_str()).collect();
    let done = if let Some(pool) = store.pg_pool() {
        sqlx::query(
            "INSERT INTO webhook_pulls (hs_object_id) SELECT * FROM UNNEST($1::text[])
             ON CONFLICT (hs_object_id) DO NOTHING",
        )
        .bind(&ids)
        .execute(pool)
        .await?
        .rows_affected()
    } else if let Some(pool) = store.sqlite_pool() {
        sqlx::query(
            "INSERT INTO webhook_pulls (hs_object_id) SELECT value FROM json_each($1) WHERE true
             ON CONFLICT (hs_object_id) DO NOTHING",
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
    const SQL: &str = "SELECT hs_object_id FROM webhook_pulls
                        ORDER BY requested_at, hs_object_id LIMIT $1";
    let ids: Vec<String> = if let Some(pool) = store.pg_pool() {
        sqlx::query_scalar(SQL)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
    } else if let Some(pool) = store.sqlite_pool() {
        sqlx::query_scalar(SQL)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    Ok(ids.into_iter().map(HsObjectId).collect())
}

/// Clears ids that were pulled. Returns how many were pending.
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
