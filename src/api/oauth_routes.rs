//! The OAuth install flow over HTTP: `GET /api/install` (the page with the install link) and
//! the callbacks `GET /oauth-callback` and `GET /api/install/oauth-callback`.
//!
//! The install page shows its link only to the operator (bearer token or session, see
//! [`super::operator`]) and binds its `state` to the browser by the [`BROWSER_COOKIE`]. What a
//! callback does is [`crate::oauth::install`]'s; these handlers only answer with its outcome
//! as a page (a refusal is a 400 page with nothing stored, success a redirect to `/`).
//!
//! These are public HTML routes (documented as operations of [`super::pages::PagesApi`]); they
//! never show a token.

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Request, Response};

use super::AppState;
use super::html::{Page, escape, redirect};
use super::operator::{cookie_value, operator_of};
use crate::hubspot::{HubSpotClient, HubSpotError};
use crate::oauth::account;
use crate::oauth::install::{
    CallbackError, CallbackParams, Installer, LinkError, LinkFor, install_link,
};
use crate::oauth::state::{BROWSER_COOKIE, OneTimeValue, STATE_LIFETIME, StateRejection};

/// The path HubSpot redirects to (`server.public_url` + this is the `redirect_uri`).
pub const CALLBACK_PATH: &str = "/oauth-callback";
/// The same callback under the install page's path, as the original sample app had it.
pub const INSTALL_CALLBACK_PATH: &str = "/api/install/oauth-callback";

/// `GET /api/install`: for the operator the install link; for anyone else how to connect;
/// what configuration is missing when the app is not configured.
pub(crate) async fn install(req: &Request, state: &AppState) -> Response {
    let missing = state.oauth.missing_credentials();
    if !missing.is_empty() {
        return not_configured_page(&missing).into_response();
    }
    let Some(client) = oauth_client(state) else {
        return Page::new("Install unavailable")
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .para(
                "This service talks to HubSpot with a private-app token (hubspot.access_token), \
                 so there is no app to install. Remove hubspot.access_token to connect through \
                 OAuth instead.",
            )
            .into_response();
    };
    if operator_of(req, state).await.is_none() {
        // The state is the key to connecting an account: only the operator gets one.
        return sign_in_page().into_response();
    }
    let browser = browser_nonce(req).unwrap_or_else(OneTimeValue::generate);
    let link = match install_link(&state.store, client, LinkFor::Browser(&browser)).await {
        Ok(link) => link,
        Err(LinkError::Store(e)) => {
            tracing::error!(error = %e, "cannot store an OAuth state");
            return server_error_page().into_response();
        }
        Err(LinkError::HubSpot(e)) => {
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
        .raw(&pinned_note(state).await)
        .header(header::SET_COOKIE, browser_cookie(state, &browser))
        .into_response()
}

/// Tells the operator, before they approve, which account an installation must be for.
async fn pinned_note(state: &AppState) -> String {
    match account::pinned_account(&state.store, state.oauth.portal_id).await {
        Ok(Some(pinned)) => format!(
            "<p id=\"pinned\">This service is tied to {}: an installation for another account \
             is refused; to connect one, {}.</p>",
            escape(&pinned.to_string()),
            escape(pinned.remedy())
        ),
        Ok(None) => String::new(),
        Err(e) => {
            // The callback checks again; the note is only a courtesy.
            tracing::warn!(error = %e, "cannot read the HubSpot connection for the install page");
            String::new()
        }
    }
}

/// `GET /oauth-callback` and `GET /api/install/oauth-callback`.
pub(crate) async fn callback(req: &Request, state: &AppState, params: CallbackParams) -> Response {
    let installer = Installer {
        store: &state.store,
        tokens: state.tokens.as_ref(),
        client: oauth_client(state),
        configured: state.oauth.portal_id,
    };
    let refusal = match installer
        .complete(&params, browser_nonce(req).as_ref())
        .await
    {
        Ok(_) => return redirect("/"),
        Err(refusal) => refusal,
    };
    match refusal {
        CallbackError::State(rejection) => state_refused_page(rejection),
        CallbackError::NotAuthorized { error, description } => {
            authorization_refused_page(&error, description.as_deref())
        }
        CallbackError::NoCode => retry_page(
            "No authorization code",
            StatusCode::BAD_REQUEST,
            "HubSpot sent the browser back without an authorization code.",
        ),
        CallbackError::NotConfigured => not_configured_page(&state.oauth.missing_credentials()),
        CallbackError::HubSpot(e) => exchange_failed_page(&e),
        CallbackError::OtherAccount(refused) => other_account_page(&refused),
        CallbackError::ConnectionChanged => retry_page(
            "The connection changed",
            StatusCode::CONFLICT,
            "The HubSpot connection changed while this installation completed; nothing was \
             stored.",
        ),
        CallbackError::Internal => server_error_page(),
    }
    .into_response()
}

/// What an anonymous visitor of the install page reads: how the operator connects, and no
/// link (no state is issued to them).
fn sign_in_page() -> Page {
    Page::new("Connect HubSpot")
        .status(StatusCode::UNAUTHORIZED)
        .para(
            "Connecting a HubSpot account is the operator's act. Sign in with the API token on \
             the status page, then come back here; or run crm-sync connect where the service \
             is installed, which prints a one-time install link.",
        )
        .raw("<p><a href=\"/\">Sign in on the status page</a>.</p>")
}

fn other_account_page(refused: &account::OtherAccount) -> Page {
    Page::new("Another HubSpot account")
        .status(StatusCode::BAD_REQUEST)
        .para(&format!(
            "This installation was for HubSpot account {offered}, but this service is tied to \
             {pinned}. Nothing was stored; the service still syncs with account {kept}.",
            offered = refused.offered,
            pinned = refused.pinned,
            kept = refused.pinned.portal_id(),
        ))
        .para(&format!("To connect: {}.", refused.pinned.remedy()))
}

/// The OAuth client, when the service has one (the credentials are set and no private-app
/// token replaces OAuth).
fn oauth_client(state: &AppState) -> Option<&HubSpotClient> {
    state.hubspot.as_ref().filter(|c| c.oauth().is_some())
}

/// The browser nonce from the request's cookie, when it is one this service could have set.
fn browser_nonce(req: &Request) -> Option<OneTimeValue> {
    cookie_value(req, BROWSER_COOKIE)
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
