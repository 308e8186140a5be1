//! The client itself: one connection pool, the rate budgets, the credentials, and the loop
//! that sends a request until it succeeds, fails for good, or may not be repeated.

use super::auth::{AccessTokenInfo, Auth, Credentials, TokenManager};
use super::config::ClientConfig;
use super::error::{ApiErrorDetails, HubSpotError, RateLimitPolicy, classify, snippet};
use super::metrics::{ClientMetrics, RetryReason};
use super::oauth::{OAuthFlow, OAuthTokens, join_url};
use super::ratelimit::SlidingWindow;
use super::retry::{Budget, Operation, RetryClass, backoff_delay, parse_retry_after};
use crate::ids::PortalId;
use crate::secret::Secret;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// The HubSpot client. Cheap to clone: clones share the pool, the budgets, the token cache
/// and the metrics.
#[derive(Clone)]
pub struct HubSpotClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    http: reqwest::Client,
    credentials: Credentials,
    /// The 10-second rolling budget (every call but search).
    limiter: SlidingWindow,
    /// The search budget (per second).
    search_limiter: SlidingWindow,
    /// The budget of the associations API's batch calls (10 seconds).
    associations_limiter: SlidingWindow,
    metrics: Arc<ClientMetrics>,
    /// The account a private-app token reaches, once asked ([`HubSpotClient::learn_portal_id`]).
    portal: std::sync::OnceLock<PortalId>,
    /// How many [`ForegroundWork`] guards are alive: pushes and pulls of this process running.
    foreground: AtomicUsize,
}

/// A push or pull of this process is running while this guard lives (see
/// [`HubSpotClient::foreground`]).
#[must_use = "the work counts as running only while the guard lives"]
pub struct ForegroundWork {
    inner: Arc<Inner>,
}

impl Drop for ForegroundWork {
    fn drop(&mut self) {
        self.inner.foreground.fetch_sub(1, Ordering::AcqRel);
    }
}

impl fmt::Debug for ForegroundWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForegroundWork").finish_non_exhaustive()
    }
}

impl fmt::Debug for HubSpotClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSpotClient")
            .field("api_base_url", &self.inner.config.api_base_url.as_str())
            .field("requests_per_10s", &self.inner.config.requests_per_10s)
            .finish_non_exhaustive()
    }
}

/// One request, ready to be sent (again).
pub(crate) struct Call {
    pub op: Operation,
    pub method: Method,
    pub url: Url,
    pub body: Option<Vec<u8>>,
    /// Send this token instead of the client's credentials (right after a code exchange).
    pub token: Option<Secret>,
}

/// A HubSpot answer with a 2xx status.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// What to do after a failed attempt.
enum Next {
    Retry {
        reason: RetryReason,
        wait: RetryWait,
        problem: String,
        details: Option<ApiErrorDetails>,
    },
    Fail(HubSpotError),
}

/// How long the next attempt waits, and who does the waiting.
#[derive(Debug, Clone, Copy)]
enum RetryWait {
    /// The client's exponential backoff (with jitter).
    Backoff,
    /// Exactly this long (`Retry-After`, or at once after a token refresh).
    Sleep(Duration),
    /// The rate limiter holds every caller of the budget back this long after a 429: the
    /// attempt waits there, not in a sleep of its own, but this is still its wait.
    HeldBack(Duration),
}

/// HubSpot's rolling `window` as this client's limiters keep it: 2.5 % longer (250 ms of
/// 10 s). HubSpot counts a request when it arrives, the limiter when it is sent; when an
/// earlier request spent longer in flight than a later one (a busy machine, a slow network),
/// a window of the exact length lets the later request reach HubSpot before the earlier one
/// has left HubSpot's window, and it meets a 429.
fn as_kept(window: Duration) -> Duration {
    window + window / 40
}

impl HubSpotClient {
    /// Builds a client: one pooled reqwest client (rustls, gzip, connect and total timeouts,
    /// no redirects, as `oauth2` requires), the rate budgets and the credentials.
    pub fn new(config: ClientConfig, auth: Auth) -> Result<Self, HubSpotError> {
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.timeouts.connect)
            .timeout(config.timeouts.request)
            .gzip(true)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .map_err(|e| {
                HubSpotError::InvalidRequest(format!("cannot build the HTTP client: {e}"))
            })?;
        let metrics = Arc::new(ClientMetrics::default());
        let credentials = match auth {
            Auth::PrivateApp(token) => Credentials::Static(token),
            Auth::OAuth { app, tokens } => {
                let flow = OAuthFlow::new(&config, app, http.clone(), metrics.clone())?;
                Credentials::OAuth(TokenManager::new(flow, tokens, config.refresh_ahead))
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                limiter: SlidingWindow::new(
                    config.requests_per_10s,
                    as_kept(Duration::from_secs(10)),
                ),
                search_limiter: SlidingWindow::new(
                    config.search_per_second,
                    as_kept(Duration::from_secs(1)),
                ),
                associations_limiter: SlidingWindow::new(
                    config.associations_per_10s,
                    as_kept(Duration::from_secs(10)),
                ),
                config,
                http,
                credentials,
                metrics,
                portal: std::sync::OnceLock::new(),
                foreground: AtomicUsize::new(0),
            }),
        })
    }

    /// The client's counters (put them on a page with [`ClientMetrics::register`]).
    pub fn metrics(&self) -> &ClientMetrics {
        &self.inner.metrics
    }

    /// The settings the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The OAuth flow, when the client uses OAuth.
    pub fn oauth(&self) -> Option<&OAuthFlow> {
        match &self.inner.credentials {
            Credentials::OAuth(manager) => Some(&manager.flow),
            Credentials::Static(_) => None,
        }
    }

    /// The install link with `state`; an error when the client uses a private-app token.
    pub fn authorize_url(&self, state: &str) -> Result<Url, HubSpotError> {
        self.oauth()
            .map(|flow| flow.authorize_url(state))
            .ok_or_else(not_oauth)
    }

    /// Completes an installation: [`HubSpotClient::exchange_code`], then
    /// [`HubSpotClient::install`].
    pub async fn connect(&self, code: &str) -> Result<OAuthTokens, HubSpotError> {
        let tokens = self.exchange_code(code).await?;
        self.install(tokens.clone()).await?;
        Ok(tokens)
    }

    /// Exchanges an authorization code for tokens and learns their portal id (from `hub_id`,
    /// else from account info), without storing or using them: the caller decides first
    /// whether that account may be connected.
    pub async fn exchange_code(&self, code: &str) -> Result<OAuthTokens, HubSpotError> {
        let Credentials::OAuth(manager) = &self.inner.credentials else {
            return Err(not_oauth());
        };
        let mut tokens = manager.flow.exchange_code(code).await?;
        if tokens.portal_id.is_none() {
            let details = self
                .account_details_with(tokens.access_token.clone())
                .await?;
            tokens.portal_id = Some(details.portal_id);
        }
        Ok(tokens)
    }

    /// Saves the tokens of a new installation to the store and uses them from now on.
    pub async fn install(&self, tokens: OAuthTokens) -> Result<(), HubSpotError> {
        let Credentials::OAuth(manager) = &self.inner.credentials else {
            return Err(not_oauth());
        };
        manager.install(tokens).await
    }

    /// Uses tokens of a new installation that the caller already stored in the client's
    /// token store (after checking which account they are for).
    pub async fn adopt(&self, tokens: OAuthTokens) -> Result<(), HubSpotError> {
        let Credentials::OAuth(manager) = &self.inner.credentials else {
            return Err(not_oauth());
        };
        manager.adopt(tokens).await;
        Ok(())
    }

    /// Drops the tokens this client holds in memory (after a disconnect), so that the next
    /// call asks the token store, which no longer has them. Nothing for a private-app token.
    pub async fn forget_tokens(&self) {
        if let Credentials::OAuth(manager) = &self.inner.credentials {
            manager.forget().await;
        }
    }

    /// Whether the stored connection is usable, asking only the token store (never HubSpot):
    /// `NotConnected` when no account is installed, the store's error when it says the
    /// connection is broken. Always fine with a private-app token. A job calls it first, so
    /// that once a refresh was refused every job fails at once, in any process.
    pub async fn check_connection(&self) -> Result<(), HubSpotError> {
        match &self.inner.credentials {
            Credentials::Static(_) => Ok(()),
            Credentials::OAuth(manager) => manager.check().await,
        }
    }

    /// The current access token, refreshed first when it is about to expire.
    pub async fn access_token(&self) -> Result<AccessTokenInfo, HubSpotError> {
        match &self.inner.credentials {
            Credentials::Static(token) => Ok(AccessTokenInfo {
                access_token: token.clone(),
                expires_at: None,
                portal_id: self.inner.portal.get().copied(),
            }),
            Credentials::OAuth(manager) => {
                let tokens = manager.current(&self.inner.metrics).await?;
                Ok(AccessTokenInfo {
                    access_token: tokens.access_token,
                    expires_at: Some(tokens.expires_at),
                    portal_id: tokens.portal_id,
                })
            }
        }
    }

    /// The account the credentials reach, when known without a call of its own: OAuth tokens
    /// name it (a refresh may happen first, as for any call); a private-app token only once
    /// [`HubSpotClient::learn_portal_id`] asked. `None` when it is not known or the tokens
    /// cannot be had (the caller's own calls will report why).
    pub async fn known_portal_id(&self) -> Option<PortalId> {
        match &self.inner.credentials {
            Credentials::Static(_) => self.inner.portal.get().copied(),
            Credentials::OAuth(_) => self.access_token().await.ok().and_then(|t| t.portal_id),
        }
    }

    /// The account the credentials reach, asking HubSpot's account info once when they do not
    /// say (a private-app token); the answer is kept for the client's life.
    pub async fn learn_portal_id(&self) -> Result<PortalId, HubSpotError> {
        if let Some(portal) = self.known_portal_id().await {
            return Ok(portal);
        }
        let portal = self.account_details().await?.portal_id;
        let _ = self.inner.portal.set(portal);
        Ok(portal)
    }

    /// `api_base_url` + `path` (+ one percent-encoded segment).
    pub(crate) fn endpoint(&self, path: &str, segment: Option<&str>) -> Result<Url, HubSpotError> {
        let mut url = join_url(&self.inner.config.api_base_url, path)?;
        if let Some(segment) = segment {
            url.path_segments_mut()
                .map_err(|()| {
                    HubSpotError::InvalidRequest(format!("{path} cannot take a path segment"))
                })?
                .push(segment);
        }
        Ok(url)
    }

    /// Sends `call` and parses a 2xx answer as `T`.
    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        call: Call,
    ) -> Result<T, HubSpotError> {
        let op = call.op;
        let answer = self.execute(call).await?;
        serde_json::from_slice(&answer.body).map_err(|e| HubSpotError::UnexpectedResponse {
            operation: op,
            status: answer.status,
            problem: format!("{e}; the body starts: {}", snippet(&answer.body)),
        })
    }

    /// Sends `call` and ignores the body of a 2xx answer (204s).
    pub(crate) async fn call_empty(&self, call: Call) -> Result<(), HubSpotError> {
        self.execute(call).await.map(|_| ())
    }

    /// The retry loop. Every attempt first waits for its budget; see the module docs of
    /// [`super`] for which failures are retried.
    async fn execute(&self, call: Call) -> Result<Answer, HubSpotError> {
        let metrics = &self.inner.metrics;
        let mut attempts = 0u32;
        let mut failures = 0u32;
        let mut rate_limited = 0u32;
        let mut refreshed = false;
        loop {
            self.limiter_for(call.op).acquire().await;
            let token = match &call.token {
                Some(token) => token.clone(),
                None => self.inner.credentials.bearer(metrics).await?,
            };
            attempts += 1;
            let started = Instant::now();
            let sent = self.send_once(&call, &token).await;
            let next = match sent {
                Err(error) => {
                    metrics.record_request(call.op, None, started.elapsed());
                    self.after_network_error(&call, &error)
                }
                Ok((status, headers, body)) => {
                    metrics.record_request(call.op, Some(status.as_u16()), started.elapsed());
                    if !call.op.is_search() {
                        self.observe_budget(call.op, &headers);
                    }
                    if status.is_success() {
                        return Ok(Answer {
                            status: status.as_u16(),
                            body,
                        });
                    }
                    let correlation = header_str(&headers, "x-hubspot-correlation-id");
                    let details = ApiErrorDetails::parse(Some(status.as_u16()), correlation, &body);
                    self.after_error_status(
                        &call,
                        status,
                        &headers,
                        details,
                        &token,
                        &mut refreshed,
                        &mut rate_limited,
                    )
                    .await?
                }
            };
            match next {
                Next::Fail(error) => return Err(error),
                Next::Retry {
                    reason,
                    wait,
                    problem,
                    details,
                } => {
                    if reason != RetryReason::RateLimited && reason != RetryReason::ExpiredToken {
                        if failures >= self.inner.config.max_retries {
                            return Err(HubSpotError::Transient {
                                operation: call.op,
                                attempts,
                                cause: problem,
                                details: details.map(Box::new),
                            });
                        }
                        failures += 1;
                    }
                    let (wait, sleep) = match wait {
                        RetryWait::Backoff => {
                            let d = backoff_delay(&self.inner.config.backoff, failures.max(1));
                            (d, d)
                        }
                        RetryWait::Sleep(d) => (d, d),
                        RetryWait::HeldBack(d) => (d, Duration::ZERO),
                    };
                    metrics.record_retry(call.op, reason, wait);
                    tracing::warn!(operation = %call.op, attempt = attempts, ?wait, problem, "retrying a HubSpot call");
                    tokio::time::sleep(sleep).await;
                }
            }
        }
    }

    async fn send_once(
        &self,
        call: &Call,
        token: &Secret,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), reqwest::Error> {
        let mut request = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .bearer_auth(token.expose())
            .header(ACCEPT, "application/json");
        if let Some(body) = &call.body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok((status, headers, body.to_vec()))
    }

    /// A request without answer: repeat it if nothing was sent or it is safe to repeat.
    fn after_network_error(&self, call: &Call, error: &reqwest::Error) -> Next {
        let problem = describe(error);
        // The request could not be built (a URL the HTTP stack refuses, such as an id too long
        // for a URI): nothing was sent, and sending it again would fail the same way.
        if error.is_builder() {
            return Next::Fail(HubSpotError::InvalidRequest(format!(
                "{} cannot be sent: {problem}",
                call.op
            )));
        }
        // A connect error means nothing reached HubSpot.
        if !error.is_connect() && call.op.retry_class() == RetryClass::NotIdempotent {
            self.inner.metrics.record_ambiguous(call.op);
            tracing::warn!(operation = %call.op, problem, "HubSpot write may have been applied; not retrying");
            return Next::Fail(HubSpotError::Ambiguous {
                operation: call.op,
                cause: problem,
            });
        }
        Next::Retry {
            reason: RetryReason::Network,
            wait: RetryWait::Backoff,
            problem,
            details: None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn after_error_status(
        &self,
        call: &Call,
        status: StatusCode,
        headers: &HeaderMap,
        details: ApiErrorDetails,
        token: &Secret,
        refreshed: &mut bool,
        rate_limited: &mut u32,
    ) -> Result<Next, HubSpotError> {
        let retry_after = header_str(headers, "retry-after")
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let problem = format!("HTTP {}: {details}", status.as_u16());
        let next = match status.as_u16() {
            429 => {
                let policy = RateLimitPolicy::from_details(&details);
                self.inner.metrics.record_429(policy);
                if policy == RateLimitPolicy::Daily
                    || *rate_limited >= self.inner.config.max_rate_limit_retries
                {
                    return Ok(Next::Fail(HubSpotError::RateLimited {
                        policy,
                        retry_after,
                        details: Box::new(details),
                    }));
                }
                *rate_limited += 1;
                // The limiter does the waiting, so every caller waits, not just this one.
                let held = self.hold_back(call.op, policy, retry_after);
                Next::Retry {
                    reason: RetryReason::RateLimited,
                    wait: RetryWait::HeldBack(held),
                    problem,
                    details: Some(details),
                }
            }
            401 if details.category.as_deref() == Some("EXPIRED_AUTHENTICATION")
                && !*refreshed
                && call.token.is_none() =>
            {
                let Credentials::OAuth(manager) = &self.inner.credentials else {
                    return Ok(Next::Fail(classify(details)));
                };
                *refreshed = true;
                manager.after_expired(token, &self.inner.metrics).await?;
                Next::Retry {
                    reason: RetryReason::ExpiredToken,
                    wait: RetryWait::Sleep(Duration::ZERO),
                    problem,
                    details: Some(details),
                }
            }
            // Locked (burst writes to the same record) and data migration: refused, so safe.
            423 | 477 => Next::Retry {
                reason: RetryReason::ServerError,
                wait: RetryWait::Sleep(retry_after.unwrap_or(Duration::from_secs(2))),
                problem,
                details: Some(details),
            },
            // A gateway lost the origin's answer: the write may have been applied.
            502 | 504 if call.op.retry_class() == RetryClass::NotIdempotent => {
                self.inner.metrics.record_ambiguous(call.op);
                Next::Fail(HubSpotError::Ambiguous {
                    operation: call.op,
                    cause: problem,
                })
            }
            s if s >= 500 => Next::Retry {
                reason: RetryReason::ServerError,
                wait: retry_after.map_or(RetryWait::Backoff, RetryWait::Sleep),
                problem,
                details: Some(details),
            },
            _ => Next::Fail(classify(details)),
        };
        Ok(next)
    }

    /// After a 429: make every caller of the same budget wait as HubSpot asks. Returns how long
    /// the budget now holds the next request back (what the retry waits).
    fn hold_back(
        &self,
        op: Operation,
        policy: RateLimitPolicy,
        retry_after: Option<Duration>,
    ) -> Duration {
        let limiter = self.limiter_for(op);
        match (retry_after, policy) {
            (Some(wait), _) => limiter.pause_for(wait),
            (None, RateLimitPolicy::Secondly) => limiter.pause_for(Duration::from_secs(1)),
            (None, _) if op.is_search() => limiter.pause_for(Duration::from_secs(1)),
            (None, _) => limiter.saturate(),
        }
        limiter.wait_ahead()
    }

    /// Marks a push or pull as running in this process until the guard drops: while one runs,
    /// background reads ([`HubSpotClient::has_spare_budget`]) wait.
    pub fn foreground(&self) -> ForegroundWork {
        self.inner.foreground.fetch_add(1, Ordering::AcqRel);
        ForegroundWork {
            inner: self.inner.clone(),
        }
    }

    /// Whether background reads (the webhook drain) may spend the budget now: never while a
    /// push or pull of this process runs ([`HubSpotClient::foreground`]), which keeps the whole
    /// pace the limit allows for its own calls (and, unthrottled, the CPU and the database);
    /// otherwise when at least half of the 10-second budget is free, which also leaves room to
    /// jobs of other processes sharing the app's budget (HubSpot's rate-limit headers show
    /// their calls). Unthrottled, the budget is always free.
    pub fn has_spare_budget(&self) -> bool {
        self.inner.foreground.load(Ordering::Acquire) == 0 && self.inner.limiter.half_free()
    }

    /// The budget `op` spends: searches and association batches have their own.
    fn limiter_for(&self, op: Operation) -> &SlidingWindow {
        match op.budget() {
            Budget::TenSecondly => &self.inner.limiter,
            Budget::Search => &self.inner.search_limiter,
            Budget::Associations => &self.inner.associations_limiter,
        }
    }

    /// Takes HubSpot's count of `op`'s 10-second window from the rate-limit headers.
    fn observe_budget(&self, op: Operation, headers: &HeaderMap) {
        let number =
            |name: &str| header_str(headers, name).and_then(|v| v.trim().parse::<u32>().ok());
        let interval = number("x-hubspot-ratelimit-interval-milliseconds");
        if interval.is_some_and(|ms| ms != 10_000) {
            return;
        }
        if let Some(remaining) = number("x-hubspot-ratelimit-remaining") {
            self.limiter_for(op)
                .observe(remaining, number("x-hubspot-ratelimit-max"));
        }
    }

    /// `GET /account-info/v3/details` with an explicit token (during installation).
    async fn account_details_with(
        &self,
        token: Secret,
    ) -> Result<super::models::AccountDetails, HubSpotError> {
        self.call_json(Call {
            op: Operation::AccountDetails,
            method: Method::GET,
            url: self.endpoint("/account-info/v3/details", None)?,
            body: None,
            token: Some(token),
        })
        .await
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn not_oauth() -> HubSpotError {
    HubSpotError::InvalidRequest(
        "OAuth is not configured: the client uses a private-app token".to_owned(),
    )
}

/// A reqwest error as its kind and its causes (its own text would repeat the whole URL).
fn describe(error: &reqwest::Error) -> String {
    use std::error::Error as _;
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the answer was cut off"
    } else {
        "the connection failed"
    };
    let mut text = kind.to_owned();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, ContactCreate, ListContacts, MemoryTokenStore, OAuthApp, SearchRequest};

    fn is_send<T: Send>(_: T) {}

    /// Workers spawn these futures: they must be `Send` (a closure in the oauth2 call once
    /// made them fail rustc's check for every caller).
    #[test]
    fn every_call_is_a_send_future() {
        let base = Url::parse("http://127.0.0.1:9").expect("url");
        let app = OAuthApp {
            client_id: "c".into(),
            client_secret: Secret::new("s"),
            authorize_url: base.clone(),
            redirect_uri: base.clone(),
            scopes: Vec::new(),
            optional_scopes: Vec::new(),
        };
        let auth = Auth::OAuth {
            app,
            tokens: Arc::new(MemoryTokenStore::default()),
        };
        let client = HubSpotClient::new(ClientConfig::new(base), auth).expect("client");
        let batch = Batch::new(vec![ContactCreate::default()]).expect("1 input");
        is_send(client.list_contacts(&ListContacts::default()));
        is_send(client.batch_create(&batch));
        is_send(client.search_contacts(&SearchRequest::default()));
        is_send(client.connect("code"));
        is_send(client.access_token());
    }
}
