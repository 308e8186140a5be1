//! [`DbTokenStore`]: the HubSpot client's [`TokenStore`] over the `hubspot_credentials` table,
//! with every token encrypted by a [`TokenCipher`].
//!
//! A connection whose refresh token HubSpot refused (the app was uninstalled) is marked
//! `broken` (by the client itself, through [`TokenStore::refresh_refused`], whichever call met
//! the refusal); from then on [`DbTokenStore::load_tokens`] answers [`CredentialError::Broken`]
//! without any call to HubSpot, so jobs fail at once with that reason instead of retrying.
//! Installing the app again replaces the row and makes it `connected`.

use crate::crypto::{CryptoError, TokenCipher};
use crate::hubspot::{HubSpotError, OAuthTokens, StoreFuture, TokenStore, TokenStoreError};
use crate::ids::PortalId;
use crate::secret::Secret;
use crate::store::{CredentialStatus, NewCredentials, Store, StoreError, StoredCredentials};
use chrono::{DateTime, Utc};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// How the message of a broken connection starts, so that a log reader sees the cause first.
const BROKEN_PREFIX: &str = "HubSpot connection broken:";
/// How the message of undecryptable tokens starts.
const UNREADABLE_PREFIX: &str = "stored HubSpot tokens unreadable:";

/// Which token of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenField {
    /// The short-lived bearer token.
    AccessToken,
    /// The long-lived token that gets new access tokens.
    RefreshToken,
}

impl TokenField {
    /// The column holding it (without the `_cipher` suffix).
    pub fn as_str(self) -> &'static str {
        match self {
            TokenField::AccessToken => "access_token",
            TokenField::RefreshToken => "refresh_token",
        }
    }

    /// The associated data a token is sealed with: table, portal and column, so that a
    /// ciphertext copied to another row or column does not decrypt.
    fn context(self, portal_id: PortalId) -> Vec<u8> {
        format!("hubspot_credentials/{portal_id}/{}", self.as_str()).into_bytes()
    }
}

impl fmt::Display for TokenField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenField::AccessToken => "access token",
            TokenField::RefreshToken => "refresh token",
        })
    }
}

/// Why stored credentials cannot be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// HubSpot refused the refresh token earlier; only a new installation helps.
    #[error(
        "{prefix} HubSpot refused the refresh token of portal {portal_id} (the app was probably \
         uninstalled); install the app again at /api/install",
        prefix = BROKEN_PREFIX
    )]
    Broken {
        /// The account.
        portal_id: PortalId,
    },
    /// A stored token does not decrypt with the configured keys.
    #[error(
        "{prefix} the {field} of portal {portal_id}: {source}; or install the app again at \
         /api/install to replace it",
        prefix = UNREADABLE_PREFIX
    )]
    Undecryptable {
        /// The account.
        portal_id: PortalId,
        /// Which token.
        field: TokenField,
        /// Why.
        source: CryptoError,
    },
    /// The row has no refresh token (never written by this service).
    #[error(
        "{prefix} the stored connection of portal {portal_id} has no refresh token; install the \
         app again at /api/install",
        prefix = BROKEN_PREFIX
    )]
    NoRefreshToken {
        /// The account.
        portal_id: PortalId,
    },
    /// Tokens to save do not say which account they belong to.
    #[error("cannot store HubSpot tokens without the portal id they belong to")]
    NoPortalId,
    /// Sealing a token failed.
    #[error("cannot encrypt the HubSpot {field}: {source}")]
    Encryption {
        /// Which token.
        field: TokenField,
        /// Why.
        source: CryptoError,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CredentialError> for TokenStoreError {
    /// Keeps the kind of failure across the client, which hands token-store errors back in
    /// [`HubSpotError::TokenStore`] for [`ConnectionProblem::of`] to sort.
    fn from(error: CredentialError) -> Self {
        let message = error.to_string();
        match error {
            CredentialError::Broken { .. } | CredentialError::NoRefreshToken { .. } => {
                Self::Broken(message)
            }
            CredentialError::Undecryptable { .. } => Self::Unreadable(message),
            CredentialError::NoPortalId
            | CredentialError::Encryption { .. }
            | CredentialError::Store(_) => Self::Failed(message),
        }
    }
}

/// A HubSpot call failed because of the connection itself: retrying will not help, only
/// (re)installing the app or fixing the key configuration will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionProblem {
    /// No account is connected (`GET /api/install` connects one).
    NotConnected,
    /// HubSpot refused the refresh token: the app must be installed again.
    Broken,
    /// The stored tokens do not decrypt with the configured keys.
    Unreadable,
}

impl ConnectionProblem {
    /// The problem behind a client error, or `None` for errors that may pass (rate limits,
    /// network, a database hiccup in the token store...).
    pub fn of(error: &HubSpotError) -> Option<Self> {
        match error {
            HubSpotError::NotConnected => Some(Self::NotConnected),
            HubSpotError::RefreshRefused { .. } => Some(Self::Broken),
            HubSpotError::TokenStore(TokenStoreError::Broken(_)) => Some(Self::Broken),
            HubSpotError::TokenStore(TokenStoreError::Unreadable(_)) => Some(Self::Unreadable),
            _ => None,
        }
    }

    /// A stable machine-readable code for API errors and job failures.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotConnected => "not_connected",
            Self::Broken => "connection_broken",
            Self::Unreadable => "tokens_unreadable",
        }
    }
}

/// What the status page shows about the connection, read without decrypting anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// No account was ever connected.
    NotConnected,
    /// Tokens are stored and usable (the access token may need a refresh).
    Connected {
        /// The account.
        portal_id: PortalId,
        /// When the stored access token expires.
        expires_at: DateTime<Utc>,
        /// Granted scopes.
        scopes: Vec<String>,
    },
    /// HubSpot refused the refresh token; the app must be installed again.
    Broken {
        /// The account.
        portal_id: PortalId,
        /// When the connection was marked broken.
        since: DateTime<Utc>,
    },
}

impl From<StoredCredentials> for ConnectionStatus {
    fn from(row: StoredCredentials) -> Self {
        match row.status {
            CredentialStatus::Connected => Self::Connected {
                portal_id: row.portal_id,
                expires_at: row.expires_at,
                scopes: row.scopes,
            },
            CredentialStatus::Broken => Self::Broken {
                portal_id: row.portal_id,
                since: row.updated_at,
            },
        }
    }
}

/// What [`DbTokenStore::reencrypt_stale`] did.
#[derive(Debug, Default)]
pub struct RekeyReport {
    /// Portals whose tokens were sealed again under the current key.
    pub reencrypted: Vec<PortalId>,
    /// Portals already under the current key.
    pub current: usize,
    /// Portals changed by someone else meanwhile (their new tokens use the current key).
    pub raced: usize,
    /// Portals whose tokens no configured key opens.
    pub unreadable: Vec<(PortalId, CredentialError)>,
}

/// The row a [`DbTokenStore::load_tokens`] last handed out: which connection a refused
/// refresh refers to.
#[derive(Debug, Clone)]
struct Loaded {
    portal_id: PortalId,
    refresh_token_cipher: Vec<u8>,
}

/// OAuth tokens in the database, encrypted. Cheap to clone; clones share what was last loaded.
#[derive(Clone)]
pub struct DbTokenStore {
    store: Store,
    cipher: Arc<TokenCipher>,
    last_loaded: Arc<Mutex<Option<Loaded>>>,
}

impl fmt::Debug for DbTokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbTokenStore")
            .field("store", &self.store)
            .field("cipher", &self.cipher)
            .finish()
    }
}

impl DbTokenStore {
    /// Tokens in `store`, sealed and opened with `cipher`.
    pub fn new(store: Store, cipher: Arc<TokenCipher>) -> Self {
        Self {
            store,
            cipher,
            last_loaded: Arc::new(Mutex::new(None)),
        }
    }

    /// The current connection's tokens, decrypted; `None` when no account was connected.
    /// A broken connection or an undecryptable token is an error that names the cause.
    pub async fn load_tokens(&self) -> Result<Option<OAuthTokens>, CredentialError> {
        let Some(row) = self.store.current_credentials().await? else {
            *self.last_loaded() = None;
            return Ok(None);
        };
        let portal_id = row.portal_id;
        if row.status == CredentialStatus::Broken {
            return Err(CredentialError::Broken { portal_id });
        }
        let refresh_cipher = row
            .refresh_token_cipher
            .ok_or(CredentialError::NoRefreshToken { portal_id })?;
        let access_token =
            self.open(&row.access_token_cipher, portal_id, TokenField::AccessToken)?;
        let refresh_token = self.open(&refresh_cipher, portal_id, TokenField::RefreshToken)?;
        *self.last_loaded() = Some(Loaded {
            portal_id,
            refresh_token_cipher: refresh_cipher,
        });
        Ok(Some(OAuthTokens {
            access_token,
            refresh_token,
            expires_at: row.expires_at,
            portal_id: Some(portal_id),
            scopes: row.scopes,
        }))
    }

    /// Encrypts and stores tokens for their portal, replacing earlier ones, and marks the
    /// connection connected. Always seals under the current key, so saving completes a key
    /// rotation for that portal.
    pub async fn save_tokens(&self, tokens: &OAuthTokens) -> Result<(), CredentialError> {
        let portal_id = tokens.portal_id.ok_or(CredentialError::NoPortalId)?;
        let access = self.seal(&tokens.access_token, portal_id, TokenField::AccessToken)?;
        let refresh = self.seal(&tokens.refresh_token, portal_id, TokenField::RefreshToken)?;
        self.store
            .upsert_credentials(&NewCredentials {
                portal_id,
                access_token_cipher: access,
                refresh_token_cipher: Some(refresh),
                expires_at: tokens.expires_at,
                scopes: tokens.scopes.clone(),
            })
            .await?;
        Ok(())
    }

    /// Encrypts and stores the tokens of a new installation, unless another account's
    /// connection is stored: then nothing is written and that account is returned (`None`
    /// when it was removed again meanwhile: the operator retries). The check and the write are
    /// atomic ([`Store::install_credentials`]), so of two installations racing for different
    /// accounts only one is stored.
    pub async fn install_tokens(
        &self,
        tokens: &OAuthTokens,
    ) -> Result<Result<(), Option<PortalId>>, CredentialError> {
        let portal_id = tokens.portal_id.ok_or(CredentialError::NoPortalId)?;
        let access = self.seal(&tokens.access_token, portal_id, TokenField::AccessToken)?;
        let refresh = self.seal(&tokens.refresh_token, portal_id, TokenField::RefreshToken)?;
        let new = NewCredentials {
            portal_id,
            access_token_cipher: access,
            refresh_token_cipher: Some(refresh),
            expires_at: tokens.expires_at,
            scopes: tokens.scopes.clone(),
        };
        if self.store.install_credentials(&new).await?.is_some() {
            return Ok(Ok(()));
        }
        let holder = self.store.current_credentials().await?;
        Ok(Err(holder.map(|row| row.portal_id)))
    }

    /// The state of the current connection, without decrypting anything.
    pub async fn status(&self) -> Result<ConnectionStatus, StoreError> {
        Ok(self
            .store
            .current_credentials()
            .await?
            .map_or(ConnectionStatus::NotConnected, ConnectionStatus::from))
    }

    /// Marks broken the connection whose refresh token [`DbTokenStore::load_tokens`] last
    /// handed out (the client always loads right before it refreshes), unless new tokens
    /// were saved since. Returns the portal that was marked.
    pub async fn mark_refresh_refused(&self) -> Result<Option<PortalId>, StoreError> {
        let Some(loaded) = self.last_loaded().clone() else {
            return Ok(None);
        };
        let marked = self
            .store
            .mark_credentials_broken(loaded.portal_id, &loaded.refresh_token_cipher)
            .await?;
        if !marked {
            return Ok(None);
        }
        tracing::warn!(
            portal_id = %loaded.portal_id,
            "HubSpot refused the refresh token; the connection is marked broken until the app is installed again"
        );
        Ok(Some(loaded.portal_id))
    }

    /// To be called with the error of any failed HubSpot call: a refused refresh token marks
    /// the connection broken (see [`DbTokenStore::mark_refresh_refused`]), so that the jobs
    /// after it fail at once with that reason; other errors change nothing.
    pub async fn note_client_error(&self, error: &HubSpotError) -> Result<(), StoreError> {
        if matches!(error, HubSpotError::RefreshRefused { .. }) {
            self.mark_refresh_refused().await?;
        }
        Ok(())
    }

    /// Seals every stored token that is still under a previous key again under the current
    /// key (the last step of a key rotation, see docs/security.md); meant to run at start-up,
    /// after migrations. Safe while the service works: a row saved meanwhile is left alone.
    /// Broken connections are re-encrypted too, so that the old key can be dropped. Logs
    /// what it did.
    pub async fn reencrypt_stale(&self) -> Result<RekeyReport, StoreError> {
        let mut report = RekeyReport::default();
        for row in self.store.list_credential_ciphers().await? {
            let portal_id = row.portal_id;
            let stale = !self
                .cipher
                .is_sealed_with_current_key(&row.access_token_cipher)
                || row
                    .refresh_token_cipher
                    .as_deref()
                    .is_some_and(|c| !self.cipher.is_sealed_with_current_key(c));
            if !stale {
                report.current += 1;
                continue;
            }
            let resealed = self.reseal(
                portal_id,
                &row.access_token_cipher,
                row.refresh_token_cipher.as_deref(),
            );
            let (access, refresh) = match resealed {
                Ok(ciphers) => ciphers,
                Err(e) => {
                    report.unreadable.push((portal_id, e));
                    continue;
                }
            };
            let replaced = self
                .store
                .replace_credential_ciphers(
                    portal_id,
                    &row.access_token_cipher,
                    &access,
                    refresh.as_deref(),
                )
                .await?;
            if replaced {
                report.reencrypted.push(portal_id);
            } else {
                report.raced += 1;
            }
        }
        if !report.reencrypted.is_empty() {
            tracing::info!(
                rows = report.reencrypted.len(),
                key_id = %self.cipher.current_key_id(),
                "re-encrypted stored HubSpot tokens under the current key"
            );
        }
        for (portal_id, error) in &report.unreadable {
            tracing::warn!(%portal_id, %error, "stored HubSpot tokens cannot be re-encrypted");
        }
        Ok(report)
    }

    fn reseal(
        &self,
        portal_id: PortalId,
        access: &[u8],
        refresh: Option<&[u8]>,
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), CredentialError> {
        let access = self.open(access, portal_id, TokenField::AccessToken)?;
        let access = self.seal(&access, portal_id, TokenField::AccessToken)?;
        let refresh = match refresh {
            Some(cipher) => {
                let token = self.open(cipher, portal_id, TokenField::RefreshToken)?;
                Some(self.seal(&token, portal_id, TokenField::RefreshToken)?)
            }
            None => None,
        };
        Ok((access, refresh))
    }

    fn open(
        &self,
        sealed: &[u8],
        portal_id: PortalId,
        field: TokenField,
    ) -> Result<Secret, CredentialError> {
        self.cipher
            .open_secret(sealed, &field.context(portal_id))
            .map(|(secret, _stale)| secret)
            .map_err(|source| CredentialError::Undecryptable {
                portal_id,
                field,
                source,
            })
    }

    fn seal(
        &self,
        token: &Secret,
        portal_id: PortalId,
        field: TokenField,
    ) -> Result<Vec<u8>, CredentialError> {
        self.cipher
            .seal_secret(token, &field.context(portal_id))
            .map_err(|source| CredentialError::Encryption { field, source })
    }

    fn last_loaded(&self) -> MutexGuard<'_, Option<Loaded>> {
        self.last_loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl TokenStore for DbTokenStore {
    fn load(&self) -> StoreFuture<'_, Option<OAuthTokens>> {
        Box::pin(async move { self.load_tokens().await.map_err(TokenStoreError::from) })
    }

    fn save<'a>(&'a self, tokens: &'a OAuthTokens) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.save_tokens(tokens)
                .await
                .map_err(TokenStoreError::from)
        })
    }

    /// Marks the connection broken: the client calls this at the one place it refreshes, so
    /// every HubSpot call (a job's, the API's) that meets the refusal marks it.
    fn refresh_refused<'a>(&'a self, _tokens: &'a OAuthTokens) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.mark_refresh_refused()
                .await
                .map(drop)
                .map_err(TokenStoreError::failed)
        })
    }
}
