//! Which HubSpot account the local links (`contacts.hs_object_id`) belong to: one row of
//! `sync_state`, written by the first sync that knows its account. HubSpot record ids are only
//! meaningful within one account, so a sync against another account must not use them.

use super::{Store, StoreError, on_pool};
use crate::ids::PortalId;

/// The `sync_state` key of the account the links were made with.
const LINK_PORTAL_KEY: &str = "links.portal_id";

/// What [`Store::claim_link_portal`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPortal {
    /// No account was recorded; this one is now.
    Claimed,
    /// The links were made with this same account.
    Same,
    /// The links were made with another account.
    Other(PortalId),
}

impl Store {
    /// Records `portal` as the links' account unless one is recorded already, and says how
    /// `portal` relates to the recorded one. Insert-if-absent, so two first syncs racing
    /// agree on one account.
    pub async fn claim_link_portal(&self, portal: PortalId) -> Result<LinkPortal, StoreError> {
        const CLAIM: &str = "INSERT INTO sync_state (key, value) VALUES ($1, $2) \
                             ON CONFLICT (key) DO NOTHING RETURNING key";
        let value = portal.0.to_string();
        let claimed: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar(CLAIM)
                .bind(LINK_PORTAL_KEY)
                .bind(&value)
                .fetch_optional(pool)
                .await
        })?;
        if claimed.is_some() {
            return Ok(LinkPortal::Claimed);
        }
        match self.link_portal().await? {
            Some(recorded) if recorded == portal => Ok(LinkPortal::Same),
            Some(recorded) => Ok(LinkPortal::Other(recorded)),
            // Deleted between the two statements by hand: nothing to protect; retry the claim.
            None => Box::pin(self.claim_link_portal(portal)).await,
        }
    }

    /// The account the local links were made with, once a sync recorded it.
    pub async fn link_portal(&self) -> Result<Option<PortalId>, StoreError> {
        const SQL: &str = "SELECT value FROM sync_state WHERE key = $1";
        let value: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar(SQL).bind(LINK_PORTAL_KEY).fetch_optional(pool).await
        })?;
        value
            .map(|v| {
                v.parse::<i64>().map(PortalId).map_err(|e| {
                    StoreError::InvalidData(format!("sync_state {LINK_PORTAL_KEY} {v:?}: {e}"))
                })
            })
            .transpose()
    }
}
