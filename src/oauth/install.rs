//! Connecting an account through the OAuth app: the install link, and what a callback does
//! with what HubSpot sent back.
//!
//! A callback consumes its `state` before anything else — a refused state ends the
//! installation and no call reaches HubSpot. Then the code is exchanged, the account it names
//! checked against the one the service is tied to ([`super::account`]) — another account ends
//! it with nothing stored — and only then are the tokens stored encrypted and handed to the
//! client. The HTTP routes (`crate::api::oauth_routes`) and `crm-sync connect` only render
//! what these functions answer.

use serde::Deserialize;
use url::Url;

use super::account::{self, OtherAccount, Pin};
use super::state::{self, OneTimeValue, StateRejection};
use super::token_store::DbTokenStore;
use crate::hubspot::{HubSpotClient, HubSpotError, OAuthTokens};
use crate::ids::PortalId;
use crate::store::{Store, StoreError};

/// Who the state of an install link is issued to.
#[derive(Debug, Clone, Copy)]
pub enum LinkFor<'a> {
    /// The browser that sent this nonce in its cookie (the install page).
    Browser(&'a OneTimeValue),
    /// Whoever opens the link (`crm-sync connect` prints it on the operator's terminal).
    Anyone,
}

/// Why no install link could be made; the caller says so (a log line, a CLI error).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The state could not be stored.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The client could not build HubSpot's authorize URL.
    #[error(transparent)]
    HubSpot(#[from] HubSpotError),
}

/// Issues a state for `holder` and returns the HubSpot link that carries it.
pub async fn install_link(
    store: &Store,
    client: &HubSpotClient,
    holder: LinkFor<'_>,
) -> Result<Url, LinkError> {
    let issued = match holder {
        LinkFor::Browser(browser) => state::issue(store, browser).await,
        LinkFor::Anyone => state::issue_unbound(store).await,
    }?;
    Ok(client.authorize_url(issued.expose())?)
}

/// What HubSpot appends to the redirect URI.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl CallbackParams {
    /// The parameters as HubSpot sent them (each absent when not sent).
    pub fn new(
        code: Option<String>,
        state: Option<String>,
        error: Option<String>,
        error_description: Option<String>,
    ) -> Self {
        Self {
            code,
            state,
            error,
            error_description,
        }
    }
}

/// What a callback completes an installation with.
#[derive(Debug, Clone, Copy)]
pub struct Installer<'a> {
    /// Where states and the connection live.
    pub store: &'a Store,
    /// The server's token store; without one the tokens go through the client's own store.
    pub tokens: Option<&'a DbTokenStore>,
    /// The OAuth client, when the service has one.
    pub client: Option<&'a HubSpotClient>,
    /// `hubspot.portal_id`.
    pub configured: Option<PortalId>,
}

/// Why a callback connected no account. Every case is already logged.
#[derive(Debug)]
pub enum CallbackError {
    /// The state was refused; no call reached HubSpot.
    State(StateRejection),
    /// HubSpot did not authorize the installation (`error` in the redirect).
    NotAuthorized {
        /// HubSpot's `error`.
        error: String,
        /// HubSpot's `error_description`.
        description: Option<String>,
    },
    /// HubSpot sent no authorization code.
    NoCode,
    /// The service has no OAuth client to exchange the code with.
    NotConfigured,
    /// The code exchange, or handing the tokens to the client, failed.
    HubSpot(HubSpotError),
    /// The installation was for another account than the pinned one; nothing was stored.
    OtherAccount(OtherAccount),
    /// The stored connection was removed while the installation completed; nothing was
    /// stored.
    ConnectionChanged,
    /// The server failed (database, a code exchange that named no account).
    Internal,
}

impl Installer<'_> {
    /// Completes an installation from HubSpot's redirect; `browser` is the nonce from the
    /// browser's cookie. Returns the connected account.
    pub async fn complete(
        &self,
        params: &CallbackParams,
        browser: Option<&OneTimeValue>,
    ) -> Result<PortalId, CallbackError> {
        let checked = state::consume(self.store, params.state.as_deref(), browser)
            .await
            .map_err(|e| internal(&e, "cannot check an OAuth state"))?;
        if let Err(rejection) = checked {
            tracing::warn!(
                reason = rejection.as_str(),
                "OAuth callback refused: bad state"
            );
            return Err(CallbackError::State(rejection));
        }
        if let Some(error) = params.error.as_deref() {
            tracing::info!(error, "HubSpot did not authorize the install");
            return Err(CallbackError::NotAuthorized {
                error: error.to_owned(),
                description: params.error_description.clone(),
            });
        }
        let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) else {
            return Err(CallbackError::NoCode);
        };
        let client = self.client.ok_or(CallbackError::NotConfigured)?;
        let tokens = client
            .exchange_code(code)
            .await
            .map_err(CallbackError::HubSpot)?;
        // The account is checked before anything is stored: tokens of an account the service
        // is not tied to are dropped here, unused.
        let Some(portal_id) = tokens.portal_id else {
            tracing::error!("the code exchange named no HubSpot account");
            return Err(CallbackError::Internal);
        };
        let allowed = account::check_install(self.store, self.configured, portal_id)
            .await
            .map_err(|e| internal(&e, "cannot read the HubSpot connection"))?;
        if let Err(refused) = allowed {
            tracing::warn!(
                pinned = %refused.pinned.portal_id(),
                offered = %refused.offered,
                "OAuth callback refused: another HubSpot account than the one the service is tied to"
            );
            return Err(CallbackError::OtherAccount(refused));
        }
        self.store_tokens(client, tokens).await?;
        tracing::info!(%portal_id, "HubSpot connected through OAuth");
        Ok(portal_id)
    }

    /// Stores the tokens of a checked installation and has the client use them. Through the
    /// server's token store the write is conditional and atomic: no other account's
    /// connection may have been stored since the check.
    async fn store_tokens(
        &self,
        client: &HubSpotClient,
        tokens: OAuthTokens,
    ) -> Result<(), CallbackError> {
        let Some(store) = self.tokens else {
            return client.install(tokens).await.map_err(CallbackError::HubSpot);
        };
        let offered = tokens.portal_id;
        match store.install_tokens(&tokens).await {
            Ok(Ok(())) => {}
            Ok(Err(Some(holder))) => {
                tracing::warn!(%holder, "OAuth callback refused: another account was connected meanwhile");
                return Err(CallbackError::OtherAccount(OtherAccount {
                    pinned: Pin::Connected(holder),
                    offered: offered.unwrap_or(holder),
                }));
            }
            Ok(Err(None)) => return Err(CallbackError::ConnectionChanged),
            Err(e) => return Err(internal(&e, "cannot store the HubSpot tokens")),
        }
        client.adopt(tokens).await.map_err(CallbackError::HubSpot)
    }
}

fn internal(error: &dyn std::fmt::Display, what: &'static str) -> CallbackError {
    tracing::error!(error = %error, "{what}");
    CallbackError::Internal
}
