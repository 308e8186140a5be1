//! The encrypted tokens of `hubspot_credentials` as opaque bytes: the compare-and-set writes
//! that key rotation and a refused refresh token need, on top of `credentials.rs`.
//!
//! Every write here is conditional on the ciphertext the caller read: a token saved in the
//! meantime (a refresh in another process, a new installation) always wins.

use super::time::DbTime;
use super::{Store, StoreError, on_pool};
use crate::ids::PortalId;
use chrono::Utc;

/// The encrypted tokens of one portal.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CredentialCiphers {
    /// The HubSpot account.
    pub portal_id: PortalId,
    /// Encrypted access token.
    pub access_token_cipher: Vec<u8>,
    /// Encrypted refresh token, when one was ever stored.
    pub refresh_token_cipher: Option<Vec<u8>>,
}

impl Store {
    /// The encrypted tokens of every portal, whatever their status, by portal id.
    pub async fn list_credential_ciphers(&self) -> Result<Vec<CredentialCiphers>, StoreError> {
        const SQL: &str = "SELECT portal_id, access_token_cipher, refresh_token_cipher
                             FROM hubspot_credentials ORDER BY portal_id";
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, CredentialCiphers>(SQL).fetch_all(pool).await
        })?;
        Ok(rows)
    }

    /// Replaces a portal's ciphertexts with the same tokens sealed again (key rotation), if
    /// its access-token ciphertext is still `expected_access` (every save writes a fresh one,
    /// so a match means nothing was saved since it was read). Status, expiry and `updated_at`
    /// are left alone: re-encrypting does not change which connection is current. `false`
    /// when the row changed or is gone.
    pub async fn replace_credential_ciphers(
        &self,
        portal_id: PortalId,
        expected_access: &[u8],
        access_token_cipher: &[u8],
        refresh_token_cipher: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE hubspot_credentials
                              SET access_token_cipher = $3,
                                  refresh_token_cipher = COALESCE($4, refresh_token_cipher)
                            WHERE portal_id = $1 AND access_token_cipher = $2";
        let changed = on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(portal_id)
                .bind(expected_access)
                .bind(access_token_cipher)
                .bind(refresh_token_cipher)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(changed > 0)
    }

    /// Marks a portal's credentials broken, if they are connected and still hold the refresh
    /// token ciphertext `refused_refresh` (the one HubSpot refused): credentials saved since,
    /// e.g. by a new installation, stay connected. `true` when the row was marked.
    pub async fn mark_credentials_broken(
        &self,
        portal_id: PortalId,
        refused_refresh: &[u8],
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE hubspot_credentials
                              SET status = 'broken', updated_at = $3
                            WHERE portal_id = $1 AND refresh_token_cipher = $2
                              AND status = 'connected'";
        let changed = on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(portal_id)
                .bind(refused_refresh)
                .bind(DbTime(Utc::now()))
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(changed > 0)
    }
}
