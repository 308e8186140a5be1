//! HubSpot OAuth credentials, one row per portal. Tokens arrive and leave as ciphertext: the
//! encryption module owns the key, this table only keeps opaque bytes.

use super::time::DbTime;
use super::{Store, StoreError, Tx, on_pool, on_tx};
use crate::ids::PortalId;
use chrono::{DateTime, Utc};

/// The columns every credentials query returns, in [`CredentialsRow`] order.
macro_rules! credential_columns {
    () => {
        "portal_id, access_token_cipher, refresh_token_cipher, expires_at, scopes, status, created_at, updated_at"
    };
}

/// Whether stored credentials can still be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialStatus {
    /// Usable (the access token may need a refresh).
    Connected,
    /// HubSpot refused the refresh token; the app must be installed again.
    Broken,
}

impl CredentialStatus {
    fn as_str(self) -> &'static str {
        match self {
            CredentialStatus::Connected => "connected",
            CredentialStatus::Broken => "broken",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "connected" => Ok(CredentialStatus::Connected),
            "broken" => Ok(CredentialStatus::Broken),
            other => Err(StoreError::InvalidData(format!(
                "unknown credential status {other:?} in hubspot_credentials"
            ))),
        }
    }
}

/// The end of an insert of a portal's credentials: a portal already stored gets the new tokens
/// (keeping its refresh token when none came), is marked connected, and the row is returned.
macro_rules! replace_credentials {
    () => {
        concat!(
            " ON CONFLICT (portal_id) DO UPDATE SET
                 access_token_cipher = excluded.access_token_cipher,
                 refresh_token_cipher = COALESCE(excluded.refresh_token_cipher,
                                                 hubspot_credentials.refresh_token_cipher),
                 expires_at = excluded.expires_at,
                 scopes = excluded.scopes,
                 status = 'connected',
                 updated_at = excluded.updated_at
             RETURNING ",
            credential_columns!()
        )
    };
}

/// Credentials to store for a portal, tokens already encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCredentials {
    /// The HubSpot account.
    pub portal_id: PortalId,
    /// Encrypted access token.
    pub access_token_cipher: Vec<u8>,
    /// Encrypted refresh token; `None` keeps the one already stored.
    pub refresh_token_cipher: Option<Vec<u8>>,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
    /// Granted OAuth scopes.
    pub scopes: Vec<String>,
}

/// Credentials as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    /// The HubSpot account.
    pub portal_id: PortalId,
    /// Encrypted access token.
    pub access_token_cipher: Vec<u8>,
    /// Encrypted refresh token, when one was ever stored.
    pub refresh_token_cipher: Option<Vec<u8>>,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
    /// Granted OAuth scopes.
    pub scopes: Vec<String>,
    /// Whether they can still be used.
    pub status: CredentialStatus,
    /// When the portal was first connected.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
}

/// The row as both drivers decode it; status and scopes are plain text in the table.
#[derive(sqlx::FromRow)]
struct CredentialsRow {
    portal_id: PortalId,
    access_token_cipher: Vec<u8>,
    refresh_token_cipher: Option<Vec<u8>>,
    expires_at: DateTime<Utc>,
    scopes: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<CredentialsRow> for StoredCredentials {
    type Error = StoreError;

    fn try_from(row: CredentialsRow) -> Result<Self, StoreError> {
        Ok(StoredCredentials {
            portal_id: row.portal_id,
            access_token_cipher: row.access_token_cipher,
            refresh_token_cipher: row.refresh_token_cipher,
            expires_at: row.expires_at,
            scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
            status: CredentialStatus::parse(&row.status)?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Binds `$1`–`$6` of a credentials insert: the portal, both token ciphers, the expiry, the
/// scopes and now (one place for both statements and both dialects).
macro_rules! bind_new_credentials {
    ($query:expr, $new:expr, $scopes:expr) => {
        $query
            .bind($new.portal_id)
            .bind(&$new.access_token_cipher)
            .bind(&$new.refresh_token_cipher)
            .bind(DbTime($new.expires_at))
            .bind($scopes)
            .bind(DbTime(Utc::now()))
    };
}

impl Store {
    /// Stores the credentials of a portal, replacing earlier ones, and marks them connected.
    pub async fn upsert_credentials(
        &self,
        new: &NewCredentials,
    ) -> Result<StoredCredentials, StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO hubspot_credentials
                 (portal_id, access_token_cipher, refresh_token_cipher, expires_at, scopes, status, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'connected', $6)
",
            replace_credentials!()
        );
        let scopes = new.scopes.join(" ");
        let row = on_pool!(self, pool => {
            bind_new_credentials!(sqlx::query_as::<_, CredentialsRow>(SQL), new, &scopes)
                .fetch_one(pool)
                .await
        })?;
        row.try_into()
    }

    /// Stores a portal's credentials like [`Store::upsert_credentials`], but only while no
    /// other portal's credentials are stored; `None`, with nothing written, otherwise.
    ///
    /// The check and the write are one statement, and on PostgreSQL the table is locked
    /// against other writers first (under READ COMMITTED two concurrent inserts for different
    /// portals would both see an empty table); on SQLite the single writer serialises them. So
    /// two installations racing for different accounts cannot both be stored.
    pub async fn install_credentials(
        &self,
        new: &NewCredentials,
    ) -> Result<Option<StoredCredentials>, StoreError> {
        const SQL: &str = concat!(
            "INSERT INTO hubspot_credentials
                 (portal_id, access_token_cipher, refresh_token_cipher, expires_at, scopes, status, updated_at)
             SELECT $1, $2, $3, $4, $5, 'connected', $6
              WHERE NOT EXISTS (SELECT 1 FROM hubspot_credentials WHERE portal_id <> $1)
",
            replace_credentials!()
        );
        let scopes = new.scopes.join(" ");
        let mut tx = Tx::begin(self).await?;
        on_tx!(&mut tx, c =>
            // The `NOT EXISTS` check and the insert must see the same table: no other portal's
            // row may arrive in between. (SQLite's `IMMEDIATE` transaction already holds the
            // one write lock.)
            postgres: {
                sqlx::query("LOCK TABLE hubspot_credentials IN SHARE ROW EXCLUSIVE MODE")
                    .execute(c)
                    .await?;
            },
            sqlite: (),
        );
        let row = on_tx!(&mut tx, c => {
            bind_new_credentials!(sqlx::query_as::<_, CredentialsRow>(SQL), new, &scopes)
                .fetch_optional(c)
                .await?
        });
        tx.commit().await?;
        row.map(TryInto::try_into).transpose()
    }

    /// The credentials of one portal.
    pub async fn get_credentials(
        &self,
        portal_id: PortalId,
    ) -> Result<Option<StoredCredentials>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            credential_columns!(),
            " FROM hubspot_credentials WHERE portal_id = $1"
        );
        let row = on_pool!(self, pool => {
            sqlx::query_as::<_, CredentialsRow>(SQL).bind(portal_id).fetch_optional(pool).await
        })?;
        row.map(TryInto::try_into).transpose()
    }

    /// The current connection: the most recently written credentials, whatever their status
    /// (a broken connection is something to show, not to hide).
    pub async fn current_credentials(&self) -> Result<Option<StoredCredentials>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            credential_columns!(),
            " FROM hubspot_credentials ORDER BY updated_at DESC, portal_id DESC LIMIT 1"
        );
        let row = on_pool!(self, pool => {
            sqlx::query_as::<_, CredentialsRow>(SQL).fetch_optional(pool).await
        })?;
        row.map(TryInto::try_into).transpose()
    }

    /// Sets the status of a portal's credentials; `false` when the portal has none.
    pub async fn set_credentials_status(
        &self,
        portal_id: PortalId,
        status: CredentialStatus,
    ) -> Result<bool, StoreError> {
        const SQL: &str =
            "UPDATE hubspot_credentials SET status = $2, updated_at = $3 WHERE portal_id = $1";
        let changed = on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(portal_id)
                .bind(status.as_str())
                .bind(DbTime(Utc::now()))
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(changed > 0)
    }

    /// Removes every stored connection (tokens included) and returns the accounts removed:
    /// after a disconnect no account is connected, and any account may be installed.
    pub async fn delete_credentials(&self) -> Result<Vec<PortalId>, StoreError> {
        const SQL: &str = "DELETE FROM hubspot_credentials RETURNING portal_id";
        let removed = on_pool!(self, pool => {
            sqlx::query_scalar::<_, PortalId>(SQL).fetch_all(pool).await
        })?;
        Ok(removed)
    }
}
