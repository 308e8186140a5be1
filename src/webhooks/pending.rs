//! The durable list of HubSpot records that webhooks named and that still need a targeted
//! pull (table `webhook_pulls`; the SQL and its rules are in `crate::store`).
//!
//! These free functions keep the webhook side's vocabulary; each is one store call.

use crate::ids::HsObjectId;
use crate::store::jobs::Tx;
use crate::store::{Store, StoreError};

pub use crate::store::{PendingObject, PendingPull};

/// Records `ids` as needing a pull (see [`Store::record_pending_pulls`]).
pub async fn record_pending_pulls(store: &Store, ids: &[HsObjectId]) -> Result<u64, StoreError> {
    store.record_pending_pulls(ids).await
}

/// Records `ids` as needing a read of `object` (see [`Store::record_pending`]).
pub async fn record_pending(
    store: &Store,
    object: PendingObject,
    ids: &[HsObjectId],
) -> Result<u64, StoreError> {
    store.record_pending(object, ids).await
}

/// Up to `limit` pending ids, oldest request first.
pub async fn pending_pulls(store: &Store, limit: u32) -> Result<Vec<HsObjectId>, StoreError> {
    Ok(take_pending_pulls(store, limit)
        .await?
        .into_iter()
        .map(|p| p.hs_object_id)
        .collect())
}

/// Up to `limit` pending records with their request counts, oldest request first, without
/// claiming them (the webhook pull claims with [`Store::claim_pending_pulls`]).
pub async fn take_pending_pulls(store: &Store, limit: u32) -> Result<Vec<PendingPull>, StoreError> {
    store.peek_pending_pulls(limit).await
}

/// How many records are pending.
pub async fn count_pending_pulls(store: &Store) -> Result<u64, StoreError> {
    store.count_pending_pulls().await
}

/// Clears, in `tx`, the records a pull read (see [`Tx::clear_pulled`]).
pub async fn clear_pulled(tx: &mut Tx, pulled: &[PendingPull]) -> Result<u64, StoreError> {
    tx.clear_pulled(pulled).await
}

/// Clears ids whatever their request count (see [`Store::clear_pending_pulls`]).
pub async fn clear_pending_pulls(store: &Store, ids: &[HsObjectId]) -> Result<u64, StoreError> {
    store.clear_pending_pulls(ids).await
}
