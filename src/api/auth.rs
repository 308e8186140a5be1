//! Bearer-token auth for the protected routes (INTERFACE §4.1).
//!
//! Every operation of a protected API type takes [`ApiToken`] as its first argument; the
//! extractor refuses the request before any other parameter is read, and its presence is what
//! puts the security requirement into the OpenAPI document (checked by the tests).

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};

use super::AppState;

/// The `api.token` setting (generated into the data folder when none is configured), sent as
/// `Authorization: Bearer <token>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", rename = "ApiToken", checker = "check_api_token")]
pub struct ApiToken(());

/// Accepts the request when its bearer token equals the configured one (constant time).
async fn check_api_token(req: &Request, bearer: Bearer) -> Option<()> {
    let Some(state) = req.data::<AppState>() else {
        // Only a wiring mistake gets here; refuse rather than serve unprotected.
        tracing::error!("AppState missing from the request; refusing a protected route");
        return None;
    };
    // An empty configured token would let "Bearer " through; treat it as no valid token at all.
    let configured = !state.api_token.expose().is_empty();
    (configured && state.api_token.matches(&bearer.token)).then_some(())
}
