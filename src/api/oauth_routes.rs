//! The OAuth install flow over HTTP: `GET /api/install` (the page with the install link) and
//! the callbacks `GET /oauth-callback` and `GET /api/install/oauth-callback`.
//!
//! The install page issues a `state` bound to the browser by the [`BROWSER_COOKIE`]; a
//! callback consumes it before anything else — a refused state ends on a 400 page and no
//! call reaches HubSpot. Then the code is exchanged, the tokens stored encrypted (through the
//! client's token store), and the browser sent to `/`.
//!
//! These are public HTML routes: they are not in the OpenAPI document (which describes the
//! JSON API), and they never show a token.

use poem::http::{HeaderValue, StatusCode, header};
use poem::web::{Data, Query};
use poem::{IntoResponse, Request, Response, handler};
use serde::Deserialize;

use super::AppState;
use super::html::{Page, escape, redirect};
use super::oauth_state::{self, BROWSER_COOKIE, OneTimeValue, STATE_LIFETIME, StateRejection};
use crate::hubspot::{HubSpotClient, HubSpotError};

/// The path HubSpot redirects to (`server.public_url` + this is the `redirect_uri`).
pub const CALLBACK_PATH: &str = "/oauth-callback";
/// The same callback under the install page's path, as the original sample app had it.
pub const INSTALL_CALLBACK_PATH: &str = "/api/install/oauth-callback";

/// `GET /api/install`: the install link, or what configuration is missing.
#[handler]
pub async fn install(req: &Request, state: Data<&AppState>) -> Response {
    let missing = state.oauth.missing_credentials();
    if !missing.is_empty() {
        return not_configured_page(&missing).into_response();
    }
    let Some(client) = oauth_client(&state) else {
        return Page::new("Install unavailable")
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .para(
                "This service talks to HubSpot with a private-app token (hubspot.access_token), \
                 so there is no app to install. Remove hubspot.access_token to connect through \
                 OAuth instead.",
            )
            .into_response();
    };
    let browser = browser_nonce(req).unwrap_or_else(OneTimeValue::generate);
    let issued = match oauth_state::issue(&state.store, &browser).await {
        Ok(issued) => issued,
        Err(e) => {
            tracing::error!(error = %e, "cannot store an OAuth state");
            return server_error_page().into_response();
        }
    };
    let link = match client.authorize_url(issued.expose()) {
        Ok(link) => link,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HubSpot install link");
            return server_error_page().into_response();
        }
    };
    let scopes: String = client
        .oauth()
        .map(|flow| flow.app().scopes.clone())
        .unwrap_or_default()
        .iter()
        .map(|s| format!("<li><code>{}</code></li>", escape(s)))
        .collect();
    let minutes = STATE_LIFETIME.as_secs() / 60;
    Page::new("Connect HubSpot")
        .para("Install the crm-sync app in your HubSpot account to let this service sync contacts.")
        .raw(&format!(
            "<p><a class=\"button\" id=\"install\" href=\"{}\">Install in HubSpot</a></p>",
            escape(link.as_str())
        ))
        .para(&format!(
            "The link works once, for {minutes} minutes, and only in this browser. \
             Reload this page for a new one."
        ))
        .raw(&format!(
            "<p>The app asks for these scopes:</p><ul>{scopes}</ul>"
        ))
        .header(header::SET_COOKIE, browser_cookie(&state, &browser))
        .into_response()
}

/// What HubSpot appends to the redirect URI.
#[derive(Debug, Default, Deserialize)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /oauth-callback` and `GET /api/install/oauth-callback`.
#[handler]
pub async fn callback(
    req: &Request,
    state: Data<&AppState>,
    Query(params): Query<CallbackParams>,
) -> Response {
    let browser = browser_nonce(req);
    let checked =
        match oauth_state::consume(&state.store, params.state.as_deref(), browser.as_ref()).await {
            Ok(checked) => checked,
            Err(e) => {
                tracing::error!(error = %e, "cannot check an OAuth state");
                return server_error_page().into_response();
            }
        };
    if let Err(rejection) = checked {
        tracing::warn!(
            reason = rejection.as_str(),
            "OAuth callback refused: bad state"
        );
        return state_refused_page(rejection).into_response();
    }
    if let Some(error) = params.error.as_deref() {
        tracing::info!(error, "HubSpot did not authorize the install");
        return authorization_refused_page(error, params.error_description.as_deref())
            .into_response();
    }
    let Some(code) = params.code.as_deref().filter(|c| !c.is_empty()) else {
        return retry_page(
            "No authorization code",
            StatusCode::BAD_REQUEST,
            "HubSpot sent the browser back without an authorization code.",
        )
        .into_response();
    };
    let Some(client) = oauth_client(&state) else {
        return not_configured_page(&state.oauth.missing_credentials()).into_response();
    };
    match client.connect(code).await {
        Ok(tokens) => {
            tracing::info!(
                portal_id = ?tokens.portal_id.map(|p| p.0),
                "HubSpot connected through OAuth"
            );
            redirect("/")
        }
        Err(e) => exchange_failed_page(&e).into_response(),
    }
}

/// The OAuth client, when the service has one (the credentials are set and no private-app
/// token replaces OAuth).
fn oauth_client(state: &AppState) -> Option<&HubSpotClient> {
    state.hubspot.as_ref().filter(|c| c.oauth().is_some())
}

/// The browser nonce from the request's cookie, when it is one this service could have set.
fn browser_nonce(req: &Request) -> Option<OneTimeValue> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == BROWSER_COOKIE)
        .find_map(|(_, value)| OneTimeValue::parse(value.trim()))
}

/// The cookie binding states to this browser: sent back on HubSpot's top-level redirect
/// (`SameSite=Lax`), unreadable by scripts, HTTPS-only when the service is served over HTTPS.
fn browser_cookie(state: &AppState, browser: &OneTimeValue) -> HeaderValue {
    let secure = if state.oauth.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{BROWSER_COOKIE}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        browser.expose(),
        STATE_LIFETIME.as_secs()
    );
    // A base64url value and fixed attributes are always a valid header value.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn not_configured_page(missing: &[&'static str]) -> Page {
    let items: String = missing
        .iter()
        .map(|key| {
            let (env, compat) = match *key {
                "hubspot.client_id" => ("CRM_SYNC__HUBSPOT__CLIENT_ID", "CLIENT_ID"),
                _ => ("CRM_SYNC__HUBSPOT__CLIENT_SECRET", "CLIENT_SECRET"),
            };
            format!(
                "<li><code>{key}</code> is not set: set the environment variable \
                 <code>{env}</code> (or <code>{compat}</code>), or <code>{key}</code> in \
                 <code>config/local.toml</code>, then restart.</li>",
                key = escape(key),
            )
        })
        .collect();
    Page::new("HubSpot app not configured")
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .para(
            "The install link needs the OAuth app's credentials, from the app's Auth tab in \
             your HubSpot developer account:",
        )
        .raw(&format!("<ul>{items}</ul>"))
}

fn state_refused_page(rejection: StateRejection) -> Page {
    retry_page(
        "Install link not accepted",
        StatusCode::BAD_REQUEST,
        rejection.explanation(),
    )
}

fn authorization_refused_page(error: &str, description: Option<&str>) -> Page {
    let what = if error == "access_denied" {
        "The installation was declined in HubSpot, so no account was connected.".to_owned()
    } else {
        let detail = description.map(|d| format!(" ({d})")).unwrap_or_default();
        format!("HubSpot did not authorize the installation: {error}{detail}.")
    };
    retry_page("HubSpot not connected", StatusCode::BAD_REQUEST, &what)
}

fn exchange_failed_page(error: &HubSpotError) -> Page {
    match error {
        HubSpotError::Transient { .. }
        | HubSpotError::RateLimited { .. }
        | HubSpotError::Ambiguous { .. }
        | HubSpotError::UnexpectedResponse { .. } => {
            tracing::warn!(%error, "the OAuth code exchange failed");
            retry_page(
                "HubSpot did not answer",
                StatusCode::BAD_GATEWAY,
                "HubSpot could not complete the installation right now.",
            )
        }
        HubSpotError::TokenStore(_) => {
            tracing::error!(%error, "cannot store the HubSpot tokens");
            server_error_page()
        }
        _ => {
            tracing::warn!(%error, "HubSpot refused the OAuth code");
            retry_page(
                "HubSpot refused the installation",
                StatusCode::BAD_REQUEST,
                "HubSpot refused the authorization code: it may have expired or been used \
                 already.",
            )
        }
    }
}

/// An error page that says what happened and links back to the install page.
fn retry_page(title: &str, status: StatusCode, what: &str) -> Page {
    Page::new(title)
        .status(status)
        .para(what)
        .raw("<p><a href=\"/api/install\">Start the installation again</a>.</p>")
}

fn server_error_page() -> Page {
    Page::new("Something went wrong")
        .status(StatusCode::INTERNAL_SERVER_ERROR)
        .para("The server could not complete this step; the details are in its log.")
        .raw("<p><a href=\"/api/install\">Try again</a>.</p>")
}
