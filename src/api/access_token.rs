//! `GET /api/access-token`: the current HubSpot access token, refreshed first when it is about
//! to expire — what the original sample app's `GET /` returned. Protected: it reveals a token.

use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::AppState;
use super::auth::ApiToken;
use super::error::{ApiError, ErrorCode, ErrorStatuses, Failure};
use super::tags::ApiTags;
use crate::hubspot::HubSpotError;
use crate::oauth::ConnectionProblem;

/// `{"access_token","expires_at","portal_id"}`. Its `Debug` hides the token.
#[derive(Object)]
pub struct AccessTokenView {
    /// The bearer token for HubSpot's API.
    pub access_token: String,
    /// When it expires (RFC 3339); null for a private-app token, which does not expire.
    #[oai(nullable)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The connected HubSpot account; null when not known.
    #[oai(nullable)]
    pub portal_id: Option<i64>,
}

impl std::fmt::Debug for AccessTokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokenView")
            .field("access_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("portal_id", &self.portal_id)
            .finish()
    }
}

/// What `GET /api/access-token` can answer besides the token.
pub struct TokenErrors;

impl ErrorStatuses for TokenErrors {
    const STATUSES: &'static [(u16, &'static str)] = &[
        (401, "Missing or wrong bearer token (code `unauthorized`)"),
        (
            404,
            "No HubSpot account is connected (code `not_connected`)",
        ),
        (
            409,
            "HubSpot refused the refresh token: install the app again (code \
             `hubspot_connection_broken`)",
        ),
        (500, "Internal error (details in the server log)"),
        (
            502,
            "HubSpot did not answer the token refresh (code `hubspot_unavailable`)",
        ),
        (
            503,
            "The database does not answer, or the stored tokens do not decrypt (codes \
             `database_unavailable`, `hubspot_tokens_unreadable`)",
        ),
    ];
}

/// The HubSpot connection's token.
pub struct AccessTokenApi {
    pub(super) state: AppState,
}

#[OpenApi(tag = "ApiTags::HubSpot")]
impl AccessTokenApi {
    /// The current HubSpot access token, refreshed first when it is about to expire.
    ///
    /// 404 `not_connected` when no HubSpot account is connected; 409
    /// `hubspot_connection_broken` when HubSpot refused the refresh token (install the app
    /// again at `/api/install`); 502 `hubspot_unavailable` when HubSpot did not answer.
    #[oai(
        path = "/api/access-token",
        method = "get",
        operation_id = "getAccessToken"
    )]
    async fn access_token(
        &self,
        _token: ApiToken,
    ) -> Result<Json<AccessTokenView>, Failure<TokenErrors>> {
        let Some(client) = &self.state.hubspot else {
            return Err(not_connected(
                "HubSpot is not configured: set hubspot.client_id and hubspot.client_secret \
                 and install the app at /api/install (or set hubspot.access_token)",
            )
            .into());
        };
        // The store, not this process's cache, says whether an account is still connected
        // (`crm-sync disconnect` may have run in another process).
        if let Err(e) = client.check_connection().await {
            return Err(self.failure(&e).await.into());
        }
        match client.access_token().await {
            Ok(info) => Ok(Json(AccessTokenView {
                access_token: info.access_token.expose().to_owned(),
                expires_at: info.expires_at,
                portal_id: info.portal_id.map(|p| p.0),
            })),
            Err(e) => Err(self.failure(&e).await.into()),
        }
    }
}

impl AccessTokenApi {
    async fn failure(&self, error: &HubSpotError) -> ApiError {
        if let Some(tokens) = &self.state.tokens
            && let Err(e) = tokens.note_client_error(error).await
        {
            tracing::error!(error = %e, "cannot mark the HubSpot connection broken");
        }
        match ConnectionProblem::of(error) {
            Some(ConnectionProblem::NotConnected) => {
                not_connected("no HubSpot account is connected: install the app at /api/install")
            }
            Some(ConnectionProblem::Broken) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::HubspotConnectionBroken,
                "HubSpot refused the refresh token (the app was probably uninstalled): \
                 install the app again at /api/install",
            ),
            Some(ConnectionProblem::Unreadable) => {
                tracing::error!(%error, "stored HubSpot tokens cannot be decrypted");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::HubspotTokensUnreadable,
                    "the stored HubSpot tokens do not decrypt with the configured \
                     security.encryption_key; configure the key they were written with, or \
                     install the app again at /api/install",
                )
            }
            None => match error {
                HubSpotError::TokenStore(_) => ApiError::internal("reading HubSpot tokens", error),
                _ => {
                    tracing::warn!(%error, "cannot get a HubSpot access token");
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        ErrorCode::HubspotUnavailable,
                        "HubSpot did not answer the token refresh; try again shortly",
                    )
                }
            },
        }
    }
}

fn not_connected(message: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotConnected, message)
}
