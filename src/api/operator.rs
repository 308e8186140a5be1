//! Who the operator is: a request carrying the API token (`Authorization: Bearer`), or a
//! browser signed in with it through `POST /login` (INTERFACE §4.1). Connecting HubSpot is
//! the operator's act, so the install page shows its link only to them.
//!
//! A session is a random value in the [`SESSION_COOKIE`] (HttpOnly, `SameSite=Strict`,
//! `Secure` when `server.public_url` is https, expiring after [`SESSION_LIFETIME`]); the
//! database keeps only its SHA-256 (`operator_sessions`), and `POST /logout` ends it there, so
//! a copied or replayed cookie is dead after logout.

use std::time::Duration;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Request, Response};

use super::AppState;
use super::html::{Page, see_other};
use crate::oauth::state::OneTimeValue;

/// The cookie that carries an operator session.
pub const SESSION_COOKIE: &str = "crm_sync_session";

/// How long a session lasts after login.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// How a request proved it comes from the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `Authorization: Bearer <api.token>`.
    BearerToken,
    /// A live session cookie from `POST /login`.
    Session,
}

/// The operator behind `req`, or `None` for an anonymous request (also when the session
/// cannot be checked because the database does not answer: no answer is no proof).
pub async fn operator_of(req: &Request, state: &AppState) -> Option<Operator> {
    if bearer_matches(req, state) {
        return Some(Operator::BearerToken);
    }
    let session = cookie_value(req, SESSION_COOKIE)?;
    match state.store.operator_session_is_live(&session.hash()).await {
        Ok(true) => Some(Operator::Session),
        Ok(false) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot check an operator session");
            None
        }
    }
}

/// Whether the request carries the configured API token as a bearer token (constant time).
fn bearer_matches(req: &Request, state: &AppState) -> bool {
    let Some(token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    token_matches(state, token.trim())
}

/// Whether `candidate` is the API token; an empty configured token matches nothing.
fn token_matches(state: &AppState, candidate: &str) -> bool {
    !state.api_token.expose().is_empty() && state.api_token.matches(candidate)
}

/// A cookie of this service's shape (a [`OneTimeValue`]) from the request.
pub(crate) fn cookie_value(req: &Request, name: &str) -> Option<OneTimeValue> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(cookie, _)| *cookie == name)
        .find_map(|(_, value)| OneTimeValue::parse(value.trim()))
}

/// `POST /login` with the form's `token` (`None` when the form has none): a right token opens
/// a session and sends the browser to `/`; a wrong or missing one gets a 401 page and sets
/// nothing.
pub(crate) async fn login(state: &AppState, token: Option<&str>) -> Response {
    if !token.is_some_and(|token| token_matches(state, token.trim())) {
        tracing::warn!("operator login refused: wrong API token");
        return Page::new("Sign-in refused")
            .status(StatusCode::UNAUTHORIZED)
            .para("That is not this service's API token.")
            .raw("<p><a href=\"/\">Back</a>.</p>")
            .into_response();
    }
    let session = OneTimeValue::generate();
    let lifetime = SESSION_LIFETIME.as_secs() as i64;
    if let Err(e) = state
        .store
        .open_operator_session(&session.hash(), lifetime)
        .await
    {
        tracing::error!(error = %e, "cannot store an operator session");
        return Page::new("Something went wrong")
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .para("The server could not sign you in; the details are in its log.")
            .into_response();
    }
    tracing::info!("operator signed in");
    let cookie = session_cookie(state, session.expose(), SESSION_LIFETIME.as_secs());
    with_cookie(see_other("/"), cookie)
}

/// `POST /logout`: ends the session in the database (a replayed cookie is refused from now
/// on) and clears the cookie.
pub(crate) async fn logout(req: &Request, state: &AppState) -> Response {
    if let Some(session) = cookie_value(req, SESSION_COOKIE) {
        match state.store.end_operator_session(&session.hash()).await {
            Ok(true) => tracing::info!("operator signed out"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot end an operator session");
                return Page::new("Something went wrong")
                    .status(StatusCode::INTERNAL_SERVER_ERROR)
                    .para("The server could not sign you out; the details are in its log.")
                    .into_response();
            }
        }
    }
    with_cookie(see_other("/"), session_cookie(state, "", 0))
}

/// The session cookie (`max_age` 0 with an empty value clears it).
fn session_cookie(state: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let secure = if state.oauth.public_url.scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    // A base64url value and fixed attributes are always a valid header value.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn with_cookie(mut resp: Response, cookie: HeaderValue) -> Response {
    resp.headers_mut().append(header::SET_COOKIE, cookie);
    resp
}
