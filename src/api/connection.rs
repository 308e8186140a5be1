//! `POST /api/connection/disconnect`: the operator's way to release the connected HubSpot
//! account, so that another one may be installed (INTERFACE §4.2: a different account is
//! refused until then). Protected by the bearer token.

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::AppState;
use super::auth::ApiToken;
use super::error::{ApiError, Failure, NoInput};
use super::tags::ApiTags;
use crate::oauth::disconnect;

/// What a disconnect did.
#[derive(Debug, Object)]
pub struct DisconnectedView {
    /// Whether a connection was removed (`false`: none was stored).
    pub disconnected: bool,
    /// The accounts whose stored tokens were removed.
    pub portal_ids: Vec<i64>,
}

/// The HubSpot connection's lifecycle.
pub struct ConnectionApi {
    pub(super) state: AppState,
}

#[OpenApi(tag = "ApiTags::HubSpot")]
impl ConnectionApi {
    /// Disconnects HubSpot: removes the stored tokens, so that no job or API call uses them
    /// and the install page may connect another account.
    ///
    /// Links already made (`hs_object_id`) stay tied to the account they were made with: a
    /// sync against another account is refused (see docs/security.md).
    #[oai(
        path = "/api/connection/disconnect",
        method = "post",
        operation_id = "disconnectHubSpot"
    )]
    async fn disconnect(
        &self,
        _token: ApiToken,
    ) -> Result<Json<DisconnectedView>, Failure<NoInput>> {
        let removed = disconnect(&self.state.store)
            .await
            .map_err(|e| ApiError::from_store("removing the HubSpot connection", &e))?;
        if let Some(client) = &self.state.hubspot {
            client.forget_tokens().await;
        }
        Ok(Json(DisconnectedView {
            disconnected: !removed.is_empty(),
            portal_ids: removed.iter().map(|p| p.0).collect(),
        }))
    }
}
