//! Credentials: a private-app token, or OAuth tokens from a [`TokenStore`] that are refreshed
//! shortly before they expire.
//!
//! HubSpot says a 401 is not the cue to refresh: the client refreshes from `expires_in`, and
//! refreshes once more only as a safety net when HubSpot answers `EXPIRED_AUTHENTICATION`.
//! One mutex guards the cached tokens, so concurrent callers share one refresh; a refreshed
//! token is saved to the store before anyone uses it.

use super::error::{HubSpotError, TokenStoreError};
use super::metrics::ClientMetrics;
use super::oauth::{OAuthApp, OAuthFlow, OAuthTokens};
use crate::ids::PortalId;
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// What `GET /api/access-token` shows: the current token and, for OAuth, its expiry.
#[derive(Debug, Clone)]
pub struct AccessTokenInfo {
    /// The bearer token.
    pub access_token: Secret,
    /// When it expires (`None` for a private-app token).
    pub expires_at: Option<DateTime<Utc>>,
    /// The account, when known.
    pub portal_id: Option<PortalId>,
}

/// A boxed future of a token store (object-safe async).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TokenStoreError>> + Send + 'a>>;

/// Where OAuth tokens live between runs (the database, in the app).
pub trait TokenStore: Send + Sync {
    /// The stored tokens, or `None` when the app was never installed (or was disconnected).
    fn load(&self) -> StoreFuture<'_, Option<OAuthTokens>>;
    /// Replaces the stored tokens.
    fn save<'a>(&'a self, tokens: &'a OAuthTokens) -> StoreFuture<'a, ()>;

    /// HubSpot refused the refresh token of `tokens` (the tokens [`TokenStore::load`] just
    /// returned): a store that can remember it marks the connection broken, so that later
    /// calls fail at once without asking HubSpot. Does nothing by default.
    fn refresh_refused<'a>(&'a self, tokens: &'a OAuthTokens) -> StoreFuture<'a, ()> {
        let _ = tokens;
        Box::pin(async { Ok(()) })
    }
}

/// A token store in memory: for tests and the sandbox demo.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    tokens: std::sync::Mutex<Option<OAuthTokens>>,
    saves: std::sync::atomic::AtomicU64,
}

impl MemoryTokenStore {
    /// A store holding `tokens`.
    pub fn new(tokens: Option<OAuthTokens>) -> Self {
        Self {
            tokens: std::sync::Mutex::new(tokens),
            saves: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// What the store holds now.
    pub fn current(&self) -> Option<OAuthTokens> {
        self.lock().clone()
    }

    /// How many times tokens were saved.
    pub fn save_count(&self) -> u64 {
        self.saves.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OAuthTokens>> {
        self.tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl TokenStore for MemoryTokenStore {
    fn load(&self) -> StoreFuture<'_, Option<OAuthTokens>> {
        let tokens = self.current();
        Box::pin(async move { Ok(tokens) })
    }

    fn save<'a>(&'a self, tokens: &'a OAuthTokens) -> StoreFuture<'a, ()> {
        *self.lock() = Some(tokens.clone());
        self.saves
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// How the client authenticates.
// Built once per process; boxing the app would only add noise at the call sites.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Auth {
    /// A private-app token (`hubspot.access_token`).
    PrivateApp(Secret),
    /// An OAuth app; tokens come from (and refreshed tokens go to) `tokens`.
    OAuth {
        /// The app's credentials and install settings.
        app: OAuthApp,
        /// Where the tokens are kept.
        tokens: Arc<dyn TokenStore>,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PrivateApp(_) => f.write_str("Auth::PrivateApp([redacted])"),
            Self::OAuth { app, .. } => f
                .debug_struct("Auth::OAuth")
                .field("client_id", &app.client_id)
                .finish(),
        }
    }
}

/// The credentials in use by a client.
pub(crate) enum Credentials {
    Static(Secret),
    OAuth(TokenManager),
}

impl Credentials {
    /// The token to send now (refreshed first when it is about to expire).
    pub(crate) async fn bearer(&self, metrics: &ClientMetrics) -> Result<Secret, HubSpotError> {
        match self {
            Self::Static(token) => Ok(token.clone()),
            Self::OAuth(manager) => Ok(manager.current(metrics).await?.access_token),
        }
    }
}

/// The cached tokens and how long the last issued ones lived.
struct Cache {
    tokens: Option<OAuthTokens>,
    /// Lifetime of the last token issued to this process; bounds the refresh margin.
    lifetime: Option<Duration>,
}

/// Loads, refreshes and saves OAuth tokens; one refresh at a time.
pub(crate) struct TokenManager {
    pub(crate) flow: OAuthFlow,
    store: Arc<dyn TokenStore>,
    cache: tokio::sync::Mutex<Cache>,
    refresh_ahead: Duration,
}

impl TokenManager {
    pub(crate) fn new(
        flow: OAuthFlow,
        store: Arc<dyn TokenStore>,
        refresh_ahead: Duration,
    ) -> Self {
        Self {
            flow,
            store,
            cache: tokio::sync::Mutex::new(Cache {
                tokens: None,
                lifetime: None,
            }),
            refresh_ahead,
        }
    }

    /// Tokens whose access token is not about to expire.
    pub(crate) async fn current(
        &self,
        metrics: &ClientMetrics,
    ) -> Result<OAuthTokens, HubSpotError> {
        let mut cache = self.cache.lock().await;
        if cache.tokens.is_none() {
            cache.tokens = self.load().await?;
        }
        match &cache.tokens {
            None => Err(HubSpotError::NotConnected),
            Some(tokens) if !self.needs_refresh(tokens, cache.lifetime) => Ok(tokens.clone()),
            Some(_) => self.refresh_locked(&mut cache, None, metrics).await,
        }
    }

    /// The safety net after HubSpot answered `EXPIRED_AUTHENTICATION` to `rejected`: fresh
    /// tokens, refreshed unless another caller already did.
    pub(crate) async fn after_expired(
        &self,
        rejected: &Secret,
        metrics: &ClientMetrics,
    ) -> Result<OAuthTokens, HubSpotError> {
        let mut cache = self.cache.lock().await;
        if let Some(tokens) = &cache.tokens
            && !tokens.access_token.matches(rejected.expose())
            && !self.needs_refresh(tokens, cache.lifetime)
        {
            return Ok(tokens.clone());
        }
        self.refresh_locked(&mut cache, Some(rejected), metrics)
            .await
    }

    /// Loads the stored tokens (not the cache) to learn whether the connection is usable;
    /// a store that knows the connection is broken answers with that error.
    ///
    /// The cache follows what the store says: tokens of another account (the operator
    /// disconnected and installed another one, maybe from another process) or none at all
    /// replace what this process held, so a job never runs on a connection that was removed.
    pub(crate) async fn check(&self) -> Result<(), HubSpotError> {
        let stored = self.load().await?;
        let mut cache = self.cache.lock().await;
        let same_account = matches!(
            (&cache.tokens, &stored),
            (Some(held), Some(now)) if held.portal_id == now.portal_id
        );
        if !same_account {
            cache.tokens.clone_from(&stored);
            cache.lifetime = None;
        }
        match stored {
            Some(_) => Ok(()),
            None => Err(HubSpotError::NotConnected),
        }
    }

    /// Forgets the cached tokens; the next call loads them from the store.
    pub(crate) async fn forget(&self) {
        let mut cache = self.cache.lock().await;
        cache.tokens = None;
        cache.lifetime = None;
    }

    /// Saves tokens of a new installation and uses them from now on.
    pub(crate) async fn install(&self, tokens: OAuthTokens) -> Result<(), HubSpotError> {
        let mut cache = self.cache.lock().await;
        self.store.save(&tokens).await.map_err(store_error)?;
        cache.lifetime = remaining(&tokens);
        cache.tokens = Some(tokens);
        Ok(())
    }

    /// Uses tokens someone else already saved to the store (a checked installation).
    pub(crate) async fn adopt(&self, tokens: OAuthTokens) {
        let mut cache = self.cache.lock().await;
        cache.lifetime = remaining(&tokens);
        cache.tokens = Some(tokens);
    }

    async fn refresh_locked(
        &self,
        cache: &mut Cache,
        rejected: Option<&Secret>,
        metrics: &ClientMetrics,
    ) -> Result<OAuthTokens, HubSpotError> {
        // Another process (a second worker) may have refreshed already: its tokens are in the store.
        let stored = self.load().await?;
        let Some(stored) = stored else {
            cache.tokens = None;
            return Err(HubSpotError::NotConnected);
        };
        let rejected_by_hubspot = rejected.is_some_and(|r| stored.access_token.matches(r.expose()));
        if !rejected_by_hubspot && !self.needs_refresh(&stored, cache.lifetime) {
            cache.tokens = Some(stored.clone());
            return Ok(stored);
        }
        let fresh = match self.flow.refresh(&stored).await {
            Ok(fresh) => fresh,
            Err(refused @ HubSpotError::RefreshRefused { .. }) => {
                // Only a new installation helps: forget the tokens (the next call loads what
                // the store says now) and let the store remember the refusal. The refusal is
                // the error to report even if remembering it failed.
                cache.tokens = None;
                if let Err(e) = self.store.refresh_refused(&stored).await {
                    tracing::warn!(error = %e, "could not mark the HubSpot connection broken");
                }
                return Err(refused);
            }
            Err(e) => return Err(e),
        };
        metrics.record_refresh();
        self.store.save(&fresh).await.map_err(store_error)?;
        tracing::info!(expires_at = %fresh.expires_at, "refreshed the HubSpot access token");
        cache.lifetime = remaining(&fresh);
        cache.tokens = Some(fresh.clone());
        Ok(fresh)
    }

    async fn load(&self) -> Result<Option<OAuthTokens>, HubSpotError> {
        self.store.load().await.map_err(store_error)
    }

    /// True when the token expires within the refresh margin: `refresh_ahead`, but at most half
    /// the token's lifetime (so a short-lived token is not refreshed on every call).
    fn needs_refresh(&self, tokens: &OAuthTokens, lifetime: Option<Duration>) -> bool {
        let margin = lifetime.map_or(self.refresh_ahead, |l| self.refresh_ahead.min(l / 2));
        let margin = chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::zero());
        tokens.expires_at - margin <= Utc::now()
    }
}

fn remaining(tokens: &OAuthTokens) -> Option<Duration> {
    (tokens.expires_at - Utc::now()).to_std().ok()
}

fn store_error(e: TokenStoreError) -> HubSpotError {
    HubSpotError::TokenStore(e)
}
