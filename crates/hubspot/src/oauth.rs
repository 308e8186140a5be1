//! HubSpot's OAuth endpoints through the `oauth2` crate: the authorize URL, the code exchange
//! and the refresh.
//!
//! Token calls go to `api_base_url` + [`TOKEN_PATH`]. OAuth v1 (`/oauth/v1/token`) stops on
//! 2027-02-16; HubSpot's deprecation notice names the date-versioned `/oauth/2026-03/token` as
//! its successor. `/oauth/v3/token` has the identical contract (same spec), but the
//! date-versioned path is where HubSpot publishes API versions from now on, so it is the one
//! that will stay. Parameters go in the form body (`AuthType::RequestBody`), as HubSpot asks.

use super::config::{Backoff, ClientConfig};
use super::error::{ApiErrorDetails, HubSpotError, classify};
use super::metrics::{ClientMetrics, RetryReason};
use super::retry::{Operation, backoff_delay};
use crate::ids::PortalId;
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use oauth2::basic::{
    BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AsyncHttpClient, AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EndpointNotSet, EndpointSet, ExtraTokenFields, HttpRequest, HttpResponse, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, StandardRevocableToken, StandardTokenResponse,
    TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use url::Url;

/// An OAuth connection to one HubSpot account.
#[derive(Debug, Clone)]
pub struct OAuthTokens {
    /// The bearer token (30 minutes at HubSpot; up to 512 characters).
    pub access_token: Secret,
    /// The long-lived token that gets new access tokens.
    pub refresh_token: Secret,
    /// When the access token expires (from `expires_in` at receipt).
    pub expires_at: DateTime<Utc>,
    /// The account (`hub_id`), when known.
    pub portal_id: Option<PortalId>,
    /// Granted scopes.
    pub scopes: Vec<String>,
}

/// The token endpoint, relative to `hubspot.api_base_url`.
pub const TOKEN_PATH: &str = "/oauth/2026-03/token";

/// The OAuth app: its credentials and where its install flow points.
#[derive(Debug, Clone)]
pub struct OAuthApp {
    /// `hubspot.client_id`.
    pub client_id: String,
    /// `hubspot.client_secret`.
    pub client_secret: Secret,
    /// `hubspot.authorize_url`, e.g. `https://app.hubspot.com/oauth/authorize`.
    pub authorize_url: Url,
    /// Where HubSpot sends the user back (`server.public_url` + `/oauth-callback`).
    pub redirect_uri: Url,
    /// Scopes the app requires (space-separated in the URL).
    pub scopes: Vec<String>,
    /// Scopes the app asks for if available (`optional_scope`).
    pub optional_scopes: Vec<String>,
}

/// The fields HubSpot adds to the standard token answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub(crate) struct HubSpotTokenFields {
    #[serde(default)]
    hub_id: Option<i64>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    user_id: Option<i64>,
    #[serde(default)]
    token_use: Option<String>,
}
impl ExtraTokenFields for HubSpotTokenFields {}

type HubSpotTokenResponse = StandardTokenResponse<HubSpotTokenFields, BasicTokenType>;

/// A token-endpoint error in either of HubSpot's shapes: RFC 6749 (`error`,
/// `error_description`) and HubSpot's own (`status: BAD_REFRESH_TOKEN`, `message`, ...).
///
/// Only the error code is ever read, and only when it is one of [`OAuthErrorCode`]: the
/// free-text fields can echo what was sent (a code, a refresh token) and the body may come
/// from a proxy, so no other part of it may reach an error message or a log line.
#[derive(Clone, Default, Deserialize, Serialize)]
pub(crate) struct OAuthErrorBody {
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    status: Option<serde_json::Value>,
}

/// The token-endpoint error codes the service recognises (RFC 6749 §5.2 and HubSpot's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OAuthErrorCode {
    /// RFC 6749 `invalid_request`.
    InvalidRequest,
    /// RFC 6749 `invalid_client`.
    InvalidClient,
    /// RFC 6749 `invalid_grant`: the code or refresh token was refused.
    InvalidGrant,
    /// RFC 6749 `unauthorized_client`.
    UnauthorizedClient,
    /// RFC 6749 `unsupported_grant_type`.
    UnsupportedGrantType,
    /// RFC 6749 `invalid_scope`.
    InvalidScope,
    /// HubSpot `BAD_REFRESH_TOKEN`.
    BadRefreshToken,
    /// HubSpot `BAD_AUTH_CODE`.
    BadAuthCode,
    /// HubSpot `BAD_CLIENT_ID`.
    BadClientId,
    /// HubSpot `BAD_CLIENT_SECRET`.
    BadClientSecret,
    /// HubSpot `BAD_REDIRECT_URI`.
    BadRedirectUri,
}

impl OAuthErrorCode {
    const ALL: [Self; 11] = [
        Self::InvalidRequest,
        Self::InvalidClient,
        Self::InvalidGrant,
        Self::UnauthorizedClient,
        Self::UnsupportedGrantType,
        Self::InvalidScope,
        Self::BadRefreshToken,
        Self::BadAuthCode,
        Self::BadClientId,
        Self::BadClientSecret,
        Self::BadRedirectUri,
    ];

    /// The code as HubSpot writes it.
    fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::BadRefreshToken => "BAD_REFRESH_TOKEN",
            Self::BadAuthCode => "BAD_AUTH_CODE",
            Self::BadClientId => "BAD_CLIENT_ID",
            Self::BadClientSecret => "BAD_CLIENT_SECRET",
            Self::BadRedirectUri => "BAD_REDIRECT_URI",
        }
    }

    /// The known code `value` is, if any; anything else is dropped unread.
    fn recognise(value: &Option<serde_json::Value>) -> Option<Self> {
        let text = value.as_ref()?.as_str()?;
        Self::ALL.into_iter().find(|code| code.as_str() == text)
    }
}

impl OAuthErrorBody {
    /// HubSpot's `status` when it is a known code, else RFC 6749's `error`.
    fn code(&self) -> Option<OAuthErrorCode> {
        OAuthErrorCode::recognise(&self.status).or_else(|| OAuthErrorCode::recognise(&self.error))
    }

    fn details(&self, http_status: Option<u16>) -> ApiErrorDetails {
        token_refusal_details(http_status, self.code())
    }

    /// `invalid_grant`, `BAD_REFRESH_TOKEN` or `BAD_AUTH_CODE`: the grant itself was refused.
    fn refuses_grant(&self) -> bool {
        matches!(
            self.code(),
            Some(
                OAuthErrorCode::InvalidGrant
                    | OAuthErrorCode::BadRefreshToken
                    | OAuthErrorCode::BadAuthCode
            )
        )
    }
}

/// What an error may say about a token-endpoint answer: its status and a recognised code,
/// never the body's text.
fn token_refusal_details(
    http_status: Option<u16>,
    code: Option<OAuthErrorCode>,
) -> ApiErrorDetails {
    ApiErrorDetails {
        http_status,
        category: code.map(|c| c.as_str().to_owned()),
        message: "the HubSpot token endpoint refused the request (its answer is not logged)"
            .to_owned(),
        ..ApiErrorDetails::default()
    }
}

// Written by hand so that even `{:?}` of the raw body prints only the recognised code.
impl fmt::Debug for OAuthErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthErrorBody")
            .field("code", &self.code())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for OAuthErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.details(None))
    }
}
impl oauth2::ErrorResponse for OAuthErrorBody {}

type HubSpotOAuthClient = oauth2::Client<
    OAuthErrorBody,
    HubSpotTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A transport failure of a token call.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct TransportError {
    message: String,
    /// The connection could not be opened: nothing was sent.
    connect: bool,
}

type TokenError = RequestTokenError<TransportError, OAuthErrorBody>;

/// HubSpot's OAuth flow for one app. Cheap to clone.
#[derive(Clone)]
pub struct OAuthFlow {
    inner: Arc<FlowInner>,
}

struct FlowInner {
    app: OAuthApp,
    oauth: HubSpotOAuthClient,
    http: reqwest::Client,
    metrics: Arc<ClientMetrics>,
    max_retries: u32,
    backoff: Backoff,
}

impl fmt::Debug for OAuthFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthFlow")
            .field("client_id", &self.inner.app.client_id)
            .field("token_url", self.inner.oauth.token_uri())
            .finish()
    }
}

impl OAuthFlow {
    pub(crate) fn new(
        config: &ClientConfig,
        app: OAuthApp,
        http: reqwest::Client,
        metrics: Arc<ClientMetrics>,
    ) -> Result<Self, HubSpotError> {
        let token_url = join_url(&config.api_base_url, TOKEN_PATH)?;
        let oauth = oauth2::Client::new(ClientId::new(app.client_id.clone()))
            .set_client_secret(ClientSecret::new(app.client_secret.expose().to_owned()))
            .set_auth_uri(AuthUrl::from_url(app.authorize_url.clone()))
            .set_token_uri(TokenUrl::from_url(token_url))
            .set_redirect_uri(RedirectUrl::from_url(app.redirect_uri.clone()))
            .set_auth_type(AuthType::RequestBody);
        Ok(Self {
            inner: Arc::new(FlowInner {
                app,
                oauth,
                http,
                metrics,
                max_retries: config.max_retries,
                backoff: config.backoff,
            }),
        })
    }

    /// The app this flow is for.
    pub fn app(&self) -> &OAuthApp {
        &self.inner.app
    }

    /// The install link: `authorize_url?response_type=code&client_id=..&state=..&
    /// redirect_uri=..&scope=a+b[&optional_scope=c+d]`.
    pub fn authorize_url(&self, state: &str) -> Url {
        let app = &self.inner.app;
        let state = state.to_owned();
        let mut request = self
            .inner
            .oauth
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(app.scopes.iter().cloned().map(Scope::new));
        if !app.optional_scopes.is_empty() {
            request = request.add_extra_param("optional_scope", app.optional_scopes.join(" "));
        }
        request.url().0
    }

    /// Exchanges an authorization code for tokens. A refused code is
    /// [`HubSpotError::Validation`] with category `BAD_AUTH_CODE` / `invalid_grant`. Not
    /// repeated when the answer was lost (a code works once).
    pub async fn exchange_code(&self, code: &str) -> Result<OAuthTokens, HubSpotError> {
        let code = AuthorizationCode::new(code.to_owned());
        let mut retries = 0;
        loop {
            let status = AtomicU16::new(0);
            let result = self
                .inner
                .oauth
                .exchange_code(code.clone())
                .request_async(&MeteredHttp {
                    inner: &self.inner,
                    status: &status,
                })
                .await;
            let status = status.load(Ordering::Relaxed);
            let nothing_sent = matches!(
                &result,
                Err(RequestTokenError::Request(TransportError {
                    connect: true,
                    ..
                }))
            );
            let refusal = match result {
                Ok(response) => return self.tokens_from(response, None),
                Err(err) => token_error(err, status),
            };
            match refusal {
                // Repeat only when the code cannot have been used: nothing was sent, or
                // HubSpot answered with a 5xx/429 of its own.
                Refusal::Retryable(cause, _)
                    if (nothing_sent || status != 0) && retries < self.inner.max_retries =>
                {
                    retries += 1;
                    self.wait_before_retry(retries, RetryReason::ServerError, &cause)
                        .await;
                }
                Refusal::Grant(details) => return Err(classify(details)),
                Refusal::Retryable(cause, details) => {
                    return Err(HubSpotError::Transient {
                        operation: Operation::OAuthToken,
                        attempts: retries + 1,
                        cause,
                        details: details.map(Box::new),
                    });
                }
                Refusal::Final(err) => return Err(err),
            }
        }
    }

    /// Refreshes `previous` (keeping its refresh token and portal when HubSpot omits them).
    /// Retried with backoff on 5xx, 429 and network failures; a refused refresh token is
    /// [`HubSpotError::RefreshRefused`].
    pub async fn refresh(&self, previous: &OAuthTokens) -> Result<OAuthTokens, HubSpotError> {
        let refresh_token = RefreshToken::new(previous.refresh_token.expose().to_owned());
        let mut retries = 0;
        loop {
            let status = AtomicU16::new(0);
            let result = self
                .inner
                .oauth
                .exchange_refresh_token(&refresh_token)
                .request_async(&MeteredHttp {
                    inner: &self.inner,
                    status: &status,
                })
                .await;
            let status = status.load(Ordering::Relaxed);
            let refusal = match result {
                Ok(response) => return self.tokens_from(response, Some(previous)),
                Err(err) => token_error(err, status),
            };
            match refusal {
                Refusal::Grant(details) => {
                    return Err(HubSpotError::RefreshRefused {
                        details: Box::new(details),
                    });
                }
                Refusal::Retryable(cause, _) if retries < self.inner.max_retries => {
                    retries += 1;
                    self.wait_before_retry(retries, RetryReason::ServerError, &cause)
                        .await;
                }
                Refusal::Retryable(cause, details) => {
                    return Err(HubSpotError::Transient {
                        operation: Operation::OAuthToken,
                        attempts: retries + 1,
                        cause,
                        details: details.map(Box::new),
                    });
                }
                Refusal::Final(err) => return Err(err),
            }
        }
    }

    async fn wait_before_retry(&self, retry: u32, reason: RetryReason, cause: &str) {
        let delay = backoff_delay(&self.inner.backoff, retry);
        self.inner
            .metrics
            .record_retry(Operation::OAuthToken, reason, delay);
        tracing::warn!(retry, ?delay, cause, "retrying the HubSpot token call");
        tokio::time::sleep(delay).await;
    }

    fn tokens_from(
        &self,
        response: HubSpotTokenResponse,
        previous: Option<&OAuthTokens>,
    ) -> Result<OAuthTokens, HubSpotError> {
        let unexpected = |problem: &str| HubSpotError::UnexpectedResponse {
            operation: Operation::OAuthToken,
            status: 200,
            problem: problem.to_owned(),
        };
        let expires_in = response
            .expires_in()
            .ok_or_else(|| unexpected("the token answer has no expires_in"))?;
        let refresh_token = match (response.refresh_token(), previous) {
            (Some(token), _) => Secret::new(token.secret().clone()),
            (None, Some(previous)) => previous.refresh_token.clone(),
            (None, None) => return Err(unexpected("the token answer has no refresh_token")),
        };
        let extra = response.extra_fields();
        let scopes = extra
            .scopes
            .clone()
            .or_else(|| {
                response
                    .scopes()
                    .map(|s| s.iter().map(|scope| scope.to_string()).collect())
            })
            .or_else(|| previous.map(|p| p.scopes.clone()))
            .unwrap_or_default();
        let expires_in = chrono::Duration::from_std(expires_in).unwrap_or(chrono::Duration::zero());
        Ok(OAuthTokens {
            access_token: Secret::new(response.access_token().secret().clone()),
            refresh_token,
            expires_at: Utc::now() + expires_in,
            portal_id: extra
                .hub_id
                .map(PortalId)
                .or(previous.and_then(|p| p.portal_id)),
            scopes,
        })
    }
}

/// The `oauth2` HTTP client: the shared reqwest pool, with metrics and the answer's status
/// kept for the retry decision. A named type with a boxed `Send` future, because a closure
/// here makes the caller's future fail rustc's `Send` check (higher-ranked lifetimes).
struct MeteredHttp<'a> {
    inner: &'a FlowInner,
    status: &'a AtomicU16,
}

impl<'c> AsyncHttpClient<'c> for MeteredHttp<'_> {
    type Error = TransportError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, TransportError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(send(self.inner, request, self.status))
    }
}

/// Sends one token request over the shared connection pool, counting it in the metrics.
async fn send(
    inner: &FlowInner,
    request: HttpRequest,
    status: &AtomicU16,
) -> Result<HttpResponse, TransportError> {
    let request = reqwest::Request::try_from(request).map_err(|e| TransportError {
        message: format!("cannot build the token request: {e}"),
        connect: true,
    })?;
    let started = tokio::time::Instant::now();
    let outcome = async {
        let response = inner.http.execute(request).await?;
        let mut builder = oauth2::http::Response::builder().status(response.status());
        for (name, value) in response.headers() {
            builder = builder.header(name, value);
        }
        let code = response.status().as_u16();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((code, builder.body(body.to_vec())))
    }
    .await;
    match outcome {
        Ok((code, built)) => {
            status.store(code, Ordering::Relaxed);
            inner
                .metrics
                .record_request(Operation::OAuthToken, Some(code), started.elapsed());
            built.map_err(|e| TransportError {
                message: format!("cannot read the token answer: {e}"),
                connect: false,
            })
        }
        Err(e) => {
            inner
                .metrics
                .record_request(Operation::OAuthToken, None, started.elapsed());
            Err(TransportError {
                message: format!("token request failed: {e}"),
                connect: e.is_connect(),
            })
        }
    }
}

/// How a failed token call is to be treated.
enum Refusal {
    /// HubSpot refused the code or refresh token itself.
    Grant(ApiErrorDetails),
    /// Worth another try: 5xx, 429, network failure.
    Retryable(String, Option<ApiErrorDetails>),
    /// Anything else.
    Final(HubSpotError),
}

fn token_error(err: TokenError, status: u16) -> Refusal {
    let http_status = (status != 0).then_some(status);
    let retryable_status = status == 429 || status >= 500;
    match err {
        RequestTokenError::ServerResponse(body) => {
            let details = body.details(http_status);
            if retryable_status {
                Refusal::Retryable(format!("HTTP {status}: {details}"), Some(details))
            } else if body.refuses_grant() {
                Refusal::Grant(details)
            } else {
                Refusal::Final(classify(details))
            }
        }
        RequestTokenError::Request(transport) => Refusal::Retryable(transport.message, None),
        // Neither the body nor the parser's message (which quotes values) may be shown.
        RequestTokenError::Parse(_, _) if status == 200 => {
            Refusal::Final(HubSpotError::UnexpectedResponse {
                operation: Operation::OAuthToken,
                status,
                problem: "the token answer is not a valid token response".to_owned(),
            })
        }
        RequestTokenError::Parse(_, _) if retryable_status => Refusal::Retryable(
            format!("HTTP {status} with an unreadable body"),
            Some(token_refusal_details(http_status, None)),
        ),
        RequestTokenError::Parse(_, _) => {
            Refusal::Final(classify(token_refusal_details(http_status, None)))
        }
        RequestTokenError::Other(message) if retryable_status => {
            Refusal::Retryable(format!("HTTP {status}: {message}"), None)
        }
        RequestTokenError::Other(message) => Refusal::Final(classify(ApiErrorDetails {
            http_status,
            message,
            ..ApiErrorDetails::default()
        })),
    }
}

/// `base` + `path`, keeping any path prefix of `base`.
pub(crate) fn join_url(base: &Url, path: &str) -> Result<Url, HubSpotError> {
    let joined = format!("{}{}", base.as_str().trim_end_matches('/'), path);
    Url::parse(&joined)
        .map_err(|e| HubSpotError::InvalidRequest(format!("bad HubSpot URL {joined}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> OAuthFlow {
        let config = ClientConfig::new(Url::parse("http://127.0.0.1:9/").expect("url"));
        let app = OAuthApp {
            client_id: "client-1".into(),
            client_secret: Secret::new("s3cret"),
            authorize_url: Url::parse("https://app.hubspot.com/oauth/authorize").expect("url"),
            redirect_uri: Url::parse("http://localhost:3001/oauth-callback").expect("url"),
            scopes: vec!["oauth".into(), "crm.objects.contacts.read".into()],
            optional_scopes: vec!["crm.objects.contacts.write".into()],
        };
        OAuthFlow::new(&config, app, reqwest::Client::new(), Arc::default()).expect("flow")
    }

    #[test]
    fn the_authorize_url_carries_client_redirect_scopes_and_state() {
        let url = flow().authorize_url("st-42");
        assert_eq!(url.host_str(), Some("app.hubspot.com"));
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["client_id"], "client-1");
        assert_eq!(
            query["redirect_uri"],
            "http://localhost:3001/oauth-callback"
        );
        assert_eq!(query["scope"], "oauth crm.objects.contacts.read");
        assert_eq!(query["optional_scope"], "crm.objects.contacts.write");
        assert_eq!(query["state"], "st-42");
        assert_eq!(query["response_type"], "code");
        assert!(!url.as_str().contains("s3cret"));
    }

    #[test]
    fn the_token_url_is_the_v1_successor_under_the_api_base() {
        let f = flow();
        assert_eq!(
            f.inner.oauth.token_uri().as_str(),
            "http://127.0.0.1:9/oauth/2026-03/token"
        );
    }

    #[test]
    fn hubspot_token_answers_parse_with_hub_id_and_scopes() {
        let body = r#"{"token_type":"bearer","refresh_token":"r-1","access_token":"a-1","expires_in":1800,
            "hub_id":1000001,"scopes":["oauth","crm.objects.contacts.read"],"user_id":5,"token_use":"access_token"}"#;
        let response: HubSpotTokenResponse =
            serde_json::from_str(body).expect("valid token answer");
        let tokens = flow().tokens_from(response, None).expect("complete");
        assert_eq!(tokens.access_token.expose(), "a-1");
        assert_eq!(tokens.refresh_token.expose(), "r-1");
        assert_eq!(tokens.portal_id, Some(PortalId(1000001)));
        assert_eq!(tokens.scopes.len(), 2);
        let remaining = tokens.expires_at - Utc::now();
        assert!(
            remaining > chrono::Duration::seconds(1790)
                && remaining <= chrono::Duration::seconds(1800)
        );
    }

    #[test]
    fn a_refresh_answer_without_refresh_token_keeps_the_old_one_and_missing_expiry_is_an_error() {
        let previous = OAuthTokens {
            access_token: Secret::new("a-0"),
            refresh_token: Secret::new("r-0"),
            expires_at: Utc::now(),
            portal_id: Some(PortalId(7)),
            scopes: vec!["oauth".into()],
        };
        let response: HubSpotTokenResponse =
            serde_json::from_str(r#"{"token_type":"bearer","access_token":"a-1","expires_in":60}"#)
                .expect("valid");
        let tokens = flow()
            .tokens_from(response, Some(&previous))
            .expect("complete");
        assert_eq!(tokens.refresh_token.expose(), "r-0");
        assert_eq!(tokens.portal_id, Some(PortalId(7)));
        let response: HubSpotTokenResponse =
            serde_json::from_str(r#"{"token_type":"bearer","access_token":"a-1"}"#).expect("valid");
        assert!(matches!(
            flow().tokens_from(response, Some(&previous)),
            Err(HubSpotError::UnexpectedResponse { .. })
        ));
    }

    /// A token endpoint that answers every request with `status` and `body`.
    async fn token_endpoint(status: u16, body: &'static str) -> Url {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = vec![0u8; 8192];
                let _ = socket.read(&mut request).await;
                let answer = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        Url::parse(&format!("http://{addr}/")).expect("url")
    }

    thread_local! {
        static CAPTURED: std::cell::RefCell<Option<Arc<std::sync::Mutex<Vec<u8>>>>> =
            const { std::cell::RefCell::new(None) };
    }

    /// Captures what this thread logs from now on. One global subscriber, installed once,
    /// hands each line to the logging thread's capture: a scoped `set_default` subscriber
    /// misses events now and then, because `tracing` caches a callsite's interest from
    /// whichever thread reaches it first (tokio-rs/tracing#3611), and a sibling test without
    /// a subscriber caches it as "never".
    fn capture_this_thread() -> Arc<std::sync::Mutex<Vec<u8>>> {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(|| ToThisThreadsCapture)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("the only global one");
        });
        let log = Arc::default();
        CAPTURED.with(|captured| *captured.borrow_mut() = Some(Arc::clone(&log)));
        log
    }

    /// Appends to the logging thread's capture, or drops the line when it has none.
    struct ToThisThreadsCapture;

    impl std::io::Write for ToThisThreadsCapture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            CAPTURED.with(|captured| {
                if let Some(log) = &*captured.borrow() {
                    log.lock().expect("lock").extend_from_slice(buf);
                }
            });
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn no_part_of_a_token_error_body_reaches_the_error_or_the_logs() {
        const LEAK: &str = "tok-LEAKED-1f2e3d";
        let bodies: [(u16, &'static str); 4] = [
            (
                400,
                r#"{"status":"BAD_AUTH_CODE","message":"code tok-LEAKED-1f2e3d unknown","correlationId":"tok-LEAKED-1f2e3d"}"#,
            ),
            (
                401,
                r#"{"error":"tok-LEAKED-1f2e3d","error_description":"tok-LEAKED-1f2e3d"}"#,
            ),
            (
                503,
                r#"{"status":"error","message":"echo refresh_token=tok-LEAKED-1f2e3d"}"#,
            ),
            (
                502,
                "<html>proxy saw refresh_token=tok-LEAKED-1f2e3d</html>",
            ),
        ];
        let logs = capture_this_thread();
        for (status, body) in bodies {
            let mut config = ClientConfig::new(token_endpoint(status, body).await);
            config.max_retries = 1;
            config.backoff = Backoff {
                base: std::time::Duration::from_millis(1),
                max: std::time::Duration::from_millis(1),
            };
            let mut app = flow().inner.app.clone();
            app.client_secret = Secret::new("s3cret");
            let flow =
                OAuthFlow::new(&config, app, reqwest::Client::new(), Arc::default()).expect("flow");
            let err = flow.exchange_code("a-code").await.expect_err("refused");
            tracing::error!(error = %err, "as the callback logs it");
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains(LEAK), "HTTP {status}: {shown}");
            }
            let previous = OAuthTokens {
                access_token: Secret::new("a-0"),
                refresh_token: Secret::new("r-0"),
                expires_at: Utc::now(),
                portal_id: None,
                scopes: Vec::new(),
            };
            let err = flow.refresh(&previous).await.expect_err("refused");
            tracing::error!(error = %err, "as the token store logs it");
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains(LEAK), "HTTP {status}: {shown}");
            }
        }
        let logged = String::from_utf8(logs.lock().expect("lock").clone()).expect("utf-8");
        assert!(
            logged.contains("retrying the HubSpot token call"),
            "{logged}"
        );
        assert!(!logged.contains(LEAK), "{logged}");
    }

    #[test]
    fn a_refused_code_keeps_its_recognised_category() {
        let body: OAuthErrorBody =
            serde_json::from_str(r#"{"status":"BAD_AUTH_CODE","message":"x"}"#).expect("valid");
        assert!(
            matches!(token_error(RequestTokenError::ServerResponse(body), 400), Refusal::Grant(d) if d.category.as_deref() == Some("BAD_AUTH_CODE"))
        );
    }

    #[test]
    fn refused_grants_are_recognised_in_both_error_shapes() {
        let v1: OAuthErrorBody = serde_json::from_str(
            r#"{"status":"BAD_REFRESH_TOKEN","message":"missing or unknown refresh token","correlationId":"c"}"#,
        )
        .expect("valid");
        assert!(
            matches!(token_error(RequestTokenError::ServerResponse(v1), 400), Refusal::Grant(d) if d.category.as_deref() == Some("BAD_REFRESH_TOKEN"))
        );
        let rfc: OAuthErrorBody =
            serde_json::from_str(r#"{"error":"invalid_grant","error_description":"refresh token is invalid, expired or revoked"}"#)
                .expect("valid");
        assert!(matches!(
            token_error(RequestTokenError::ServerResponse(rfc), 400),
            Refusal::Grant(_)
        ));
        let busy: OAuthErrorBody =
            serde_json::from_str(r#"{"status":"error","message":"internal"}"#).expect("valid");
        assert!(matches!(
            token_error(RequestTokenError::ServerResponse(busy), 503),
            Refusal::Retryable(..)
        ));
    }
}
