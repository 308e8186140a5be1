//! `GET /`: the operator's console — the HubSpot connection, the contacts at a glance, each
//! direction's running job (with its progress, rate and time left), last success and next
//! scheduled run, the recent jobs with webhook pulls summed into one line, and, for the
//! signed-in operator only, the latest failed records and the connection's controls.
//!
//! Server-rendered and complete without JavaScript; one small inline script (allowed by its
//! hash in the page's Content-Security-Policy, nothing else may run) fetches
//! `/?fragment=live` every few seconds and swaps the live part in. Public like the install
//! page: anyone may see states and counts, never a token, and never a contact (failed records
//! name them) unless signed in.
//!
//! `POST /disconnect` is the console's disconnect button: the same act as
//! `POST /api/connection/disconnect`, for a browser signed in as the operator.

mod render;
mod snapshot;

use std::sync::LazyLock;

use base64::Engine as _;
use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response};
use poem_openapi::param::Query;
use poem_openapi::payload::{Html, Json};
use poem_openapi::{ApiResponse, Enum, OpenApi};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ErrorBody;
use super::html::{Page, see_other, with_security_headers};
use super::operator::operator_of;
use super::tags::ApiTags;
use crate::oauth::ConnectionStatus;
use snapshot::Snapshot;

/// The console's Content-Security-Policy: the pages' own, plus the one script by its hash and
/// fetches of this origin (the refresh).
static CONSOLE_CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(render::SCRIPT));
    format!(
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{hash}'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
});

/// Which part of the console to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "ConsoleFragment", rename_all = "lowercase")]
pub enum Fragment {
    /// Only the part that refreshes (what the page's script fetches).
    Live,
}

/// The answers of `GET /`.
#[derive(ApiResponse)]
pub enum ConsoleAnswer {
    /// The console, or its live part with `fragment=live`.
    #[oai(status = 200)]
    Page(Html<String>),
    /// `fragment` is not one of its choices (code `invalid_parameter`; answered by the
    /// parameter check before this operation runs).
    #[oai(status = 422)]
    InvalidParameter(Json<ErrorBody>),
    /// The database does not answer; the page says so (details in the server log).
    #[oai(status = 503)]
    Unavailable(Html<String>),
}

/// The console; public (states and counts for anyone, contacts only for the operator).
pub struct ConsoleApi {
    pub(super) state: AppState,
}

#[OpenApi(tag = "ApiTags::Console")]
impl ConsoleApi {
    /// The operator's console (HTML): connection, contacts at a glance, running jobs with
    /// progress, last successes, next scheduled runs, recent jobs, and — signed in as the
    /// operator (API token as bearer, or the session of `POST /login`) — the latest failed
    /// records and the connect/disconnect controls.
    #[oai(
        path = "/",
        method = "get",
        operation_id = "console",
        transform = "console_headers"
    )]
    async fn console(
        &self,
        req: &Request,
        /// `live`: only the part that refreshes, as an HTML fragment.
        fragment: Query<Option<Fragment>>,
    ) -> ConsoleAnswer {
        let operator = operator_of(req, &self.state).await;
        let Ok(snapshot) = Snapshot::read(&self.state, operator).await else {
            return ConsoleAnswer::Unavailable(Html(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
                 <title>crm-sync</title></head><body><h1>crm-sync</h1><p id=\"connection\">\
                 The database does not answer; the details are in the server log.</p>\
                 </body></html>"
                    .to_owned(),
            ));
        };
        ConsoleAnswer::Page(Html(match fragment.0 {
            Some(Fragment::Live) => render::live(&snapshot),
            None => render::document(&snapshot),
        }))
    }
}

/// The pages' security headers, with the console's own policy (it runs its one script).
fn console_headers(ep: impl Endpoint) -> impl Endpoint<Output = Response> {
    ep.map_to_response().map(|resp| async move {
        let mut resp = with_security_headers(resp);
        if let Ok(csp) = HeaderValue::from_str(&CONSOLE_CSP) {
            resp.headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, csp);
        }
        resp
    })
}

/// The connection as the console shows it; `Err` when the database does not answer.
pub(crate) async fn connection_status(state: &AppState) -> Result<ConnectionStatus, ()> {
    match state.store.current_credentials().await {
        Ok(row) => Ok(row.map_or(ConnectionStatus::NotConnected, ConnectionStatus::from)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the HubSpot connection");
            Err(())
        }
    }
}

/// `POST /disconnect`: the console's disconnect button. Only the operator (session or bearer
/// token) may use it; the session cookie is `SameSite=Strict`, so another site cannot post it.
/// `confirmed`: the form's confirmation box was ticked.
pub(crate) async fn disconnect(req: &Request, state: &AppState, confirmed: bool) -> Response {
    if operator_of(req, state).await.is_none() {
        return Page::new("Not signed in")
            .status(StatusCode::UNAUTHORIZED)
            .para("Only the operator may disconnect HubSpot: sign in on the console first.")
            .raw("<p><a href=\"/\">Back to the console</a>.</p>")
            .into_response();
    }
    if !confirmed {
        return Page::new("Not disconnected")
            .status(StatusCode::UNPROCESSABLE_ENTITY)
            .para("Tick the confirmation box to disconnect HubSpot.")
            .raw("<p><a href=\"/\">Back to the console</a>.</p>")
            .into_response();
    }
    match crate::oauth::disconnect(&state.store).await {
        Ok(removed) => {
            if let Some(client) = &state.hubspot {
                client.forget_tokens().await;
            }
            tracing::info!(accounts = removed.len(), "operator disconnected HubSpot");
            see_other("/")
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot remove the HubSpot connection");
            Page::new("Something went wrong")
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .para("The server could not disconnect HubSpot; the details are in its log.")
                .into_response()
        }
    }
}
