//! Which HubSpot account the service is tied to, and who may change it.
//!
//! The account is pinned by `hubspot.portal_id` when configured, else by the stored
//! connection once one exists (whatever its status: a broken connection is repaired by
//! installing the same account again). Installing another account is refused until the
//! operator disconnects (`POST /api/connection/disconnect`, `crm-sync disconnect`); a
//! configured pin cannot be lifted that way at all.

use std::fmt;

use crate::hubspot::{HubSpotClient, HubSpotError};
use crate::ids::PortalId;
use crate::store::{Store, StoreError};

/// What ties the service to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// `hubspot.portal_id`.
    Configured(PortalId),
    /// The stored connection.
    Connected(PortalId),
}

impl Pin {
    /// The pinned account.
    pub fn portal_id(self) -> PortalId {
        match self {
            Self::Configured(p) | Self::Connected(p) => p,
        }
    }

    /// What the operator does to connect another account instead.
    pub fn remedy(self) -> &'static str {
        match self {
            Self::Configured(_) => {
                "install the app in that account, or change hubspot.portal_id if the service \
                 really should use another account"
            }
            Self::Connected(_) => {
                "install the app in that account again, or disconnect it first \
                 (POST /api/connection/disconnect or crm-sync disconnect) to connect another one"
            }
        }
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Configured(p) => write!(f, "HubSpot account {p} (hubspot.portal_id)"),
            Self::Connected(p) => write!(f, "the connected HubSpot account {p}"),
        }
    }
}

/// An installation for an account other than the pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this service is tied to {pinned}, not to account {offered}: {}", pinned.remedy())]
pub struct OtherAccount {
    /// The account the service is tied to.
    pub pinned: Pin,
    /// The account the installation was for.
    pub offered: PortalId,
}

/// The account the service is tied to, if any.
pub async fn pinned_account(
    store: &Store,
    configured: Option<PortalId>,
) -> Result<Option<Pin>, StoreError> {
    if let Some(portal) = configured {
        return Ok(Some(Pin::Configured(portal)));
    }
    Ok(store
        .current_credentials()
        .await?
        .map(|row| Pin::Connected(row.portal_id)))
}

/// Whether tokens for `offered` may be stored: `Err` names the pinned account when they may
/// not. Called after the code exchange and before anything is stored.
pub async fn check_install(
    store: &Store,
    configured: Option<PortalId>,
    offered: PortalId,
) -> Result<Result<(), OtherAccount>, StoreError> {
    Ok(match pinned_account(store, configured).await? {
        Some(pinned) if pinned.portal_id() != offered => Err(OtherAccount { pinned, offered }),
        _ => Ok(()),
    })
}

/// Removes the stored connection (the operator's act: the API's disconnect route and
/// `crm-sync disconnect`); returns the accounts whose tokens were removed.
pub async fn disconnect(store: &Store) -> Result<Vec<PortalId>, StoreError> {
    let removed = store.delete_credentials().await?;
    for portal_id in &removed {
        tracing::info!(%portal_id, "HubSpot disconnected: its stored tokens were removed");
    }
    Ok(removed)
}

/// Why the connected account could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// HubSpot did not say which account the private-app token reaches.
    #[error("cannot learn which HubSpot account the private-app token reaches: {0}")]
    HubSpot(#[from] HubSpotError),
}

/// The account the service syncs with: `hubspot.portal_id` when configured; else the account
/// the client's own credentials reach — a private-app token's (asked once per process), or
/// the stored OAuth connection's; else none. A private-app client ignores stored OAuth
/// tokens (left from an earlier setup), so they do not name its account.
pub async fn connected_account(
    store: &Store,
    configured: Option<PortalId>,
    client: Option<&HubSpotClient>,
) -> Result<Option<PortalId>, AccountError> {
    if configured.is_some() {
        return Ok(configured);
    }
    match client {
        Some(client) if client.oauth().is_none() => Ok(Some(client.learn_portal_id().await?)),
        _ => Ok(store.current_credentials().await?.map(|row| row.portal_id)),
    }
}
