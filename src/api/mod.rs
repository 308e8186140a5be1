//! The HTTP API (INTERFACE §4): poem + poem-openapi, JSON errors everywhere, bearer auth on
//! every route that reads contacts, reveals a token or starts a job.
//!
//! Layers, outermost first: [`middleware::Observe`] (tracing, metrics) →
//! [`middleware::ErrorEnvelope`] (every error as `{"error":{...}}`, a 405 with `Allow`) →
//! [`middleware::BodyLimit`] → the routes: `/api-docs` (Swagger UI), `/api-docs/openapi.json`,
//! and the OpenAPI service nested at `/` so that paths are exactly those of INTERFACE §4.2; the
//! rate-limited public paths reach the same service through their limiter. Bad input follows
//! one rule (docs/api.md): 415, 400 for a body that is not JSON, 422 for anything parsed but
//! wrong ([`json_body::JsonBody`]).
//!
//! Adding a route: a public one goes into a public API type ([`health::HealthApi`],
//! [`pages::PagesApi`]); a protected one into a type listed in [`ProtectedApis`], taking
//! [`auth::ApiToken`] as its first argument. Every route is an operation of the document (only
//! `GET /`, the status page, is served around it).
//! Tests check both that every operation of a protected type declares the token and that every
//! operation of the served document either is on the public list or answers 401 without it.

pub mod access_token;
pub mod allow;
pub mod auth;
pub mod client_ip;
pub mod companies;
pub mod connection;
pub mod console;
pub mod contacts;
pub mod error;
pub mod health;
pub mod html;
pub mod job_request;
pub mod job_views;
pub mod jobs;
pub mod json_body;
pub mod metrics;
pub mod middleware;
pub mod oauth_routes;
pub mod objects;
pub mod operator;
pub mod pages;
pub mod params;
pub mod probes;
pub mod ratelimit;
mod tags;
pub mod webhook_route;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use poem::http::{Method, header};
use poem::listener::TcpAcceptor;
use poem::{Endpoint, EndpointExt, IntoEndpoint, Response, Route, Server, get};
use poem_openapi::{OpenApi, OpenApiService};
use url::Url;

use crate::hubspot::HubSpotClient;
use crate::ids::PortalId;
use crate::jobs::Schedule;
use crate::mapping::CheckedMapping;
use crate::oauth::DbTokenStore;
use crate::secret::Secret;
use crate::store::Store;
use client_ip::TrustedProxies;
use ratelimit::{Charge, KeyedLimiter, RateLimit, RateLimits, Refusal};

pub use error::{ApiError, ErrorCode};
pub use metrics::Metrics;

/// Largest request body accepted (413 above); the API's JSON bodies are tiny.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long in-flight requests may take to finish after shutdown begins before their
/// connections are cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// What the handlers share; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The bearer token of the protected routes (INTERFACE §4.1).
    pub api_token: Secret,
    /// The registry behind `/metrics`; register other modules' counters here.
    pub metrics: Arc<Metrics>,
    /// The configured schedules, for `GET /api/schedules`.
    pub schedules: Arc<Vec<Schedule>>,
    /// The object mappings in effect, checked against the database, for `GET /api/objects`.
    pub objects: Arc<Vec<CheckedMapping>>,
    /// The OAuth app's settings: the install page, the callbacks and the webhook signature
    /// check read them.
    pub oauth: Arc<OAuthSettings>,
    /// The HubSpot client: an OAuth client completes installs and serves
    /// `GET /api/access-token`; `None` when HubSpot is not configured.
    pub hubspot: Option<HubSpotClient>,
    /// The token store of that client (a clone of the one it was built with), to mark the
    /// connection broken when HubSpot refuses the refresh token.
    pub tokens: Option<DbTokenStore>,
    /// Per-client budgets of the public routes.
    pub rate_limits: RateLimits,
    /// Browser origins allowed to call the API (`server.cors_allowed_origins`); empty: no CORS.
    pub cors_origins: Arc<Vec<String>>,
    /// `server.trusted_proxies`: whose forwarding headers name the client (rate limits).
    pub trusted_proxies: Arc<TrustedProxies>,
}

/// What the OAuth and webhook routes need to know about the HubSpot app (from the settings
/// `hubspot.client_id`, `hubspot.client_secret`, `server.public_url`, `hubspot.authorize_url`).
#[derive(Clone, Debug)]
pub struct OAuthSettings {
    /// `hubspot.client_id`.
    pub client_id: Option<String>,
    /// `hubspot.client_secret` (also the webhook signing key).
    pub client_secret: Option<Secret>,
    /// `server.public_url`: where HubSpot reaches this service (redirect URI, webhook URI).
    pub public_url: Url,
    /// `hubspot.authorize_url`.
    pub authorize_url: Url,
    /// `hubspot.portal_id`: the only account that may be connected, when configured.
    pub portal_id: Option<PortalId>,
}

impl Default for OAuthSettings {
    /// INTERFACE §2's defaults, without credentials.
    fn default() -> Self {
        Self {
            client_id: None,
            client_secret: None,
            public_url: Url::parse("http://localhost:3001")
                .unwrap_or_else(|_| unreachable!("a valid literal URL")),
            authorize_url: Url::parse("https://app.hubspot.com/oauth/authorize")
                .unwrap_or_else(|_| unreachable!("a valid literal URL")),
            portal_id: None,
        }
    }
}

impl OAuthSettings {
    /// The setting names of the credentials that are not set (empty values count as unset).
    pub fn missing_credentials(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self
            .client_id
            .as_deref()
            .is_none_or(|id| id.trim().is_empty())
        {
            missing.push("hubspot.client_id");
        }
        if self
            .client_secret
            .as_ref()
            .is_none_or(|s| s.expose().trim().is_empty())
        {
            missing.push("hubspot.client_secret");
        }
        missing
    }
}

impl AppState {
    /// State with an empty metrics registry.
    pub fn new(store: Store, api_token: Secret) -> Self {
        Self {
            store,
            api_token,
            metrics: Arc::new(Metrics::new()),
            schedules: Arc::new(Vec::new()),
            objects: Arc::new(Vec::new()),
            oauth: Arc::new(OAuthSettings::default()),
            hubspot: None,
            tokens: None,
            rate_limits: RateLimits::default(),
            cors_origins: Arc::new(Vec::new()),
            trusted_proxies: Arc::new(TrustedProxies::default()),
        }
    }

    /// The same state believing the forwarding headers of `proxies` (`server.trusted_proxies`).
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = Arc::new(proxies);
        self
    }

    /// The same state with browser origins allowed to call the API (bare origins, as
    /// [`crate::config::Settings::cors_allowed_origins`] checks them).
    pub fn with_cors_origins(mut self, origins: Vec<String>) -> Self {
        self.cors_origins = Arc::new(origins);
        self
    }

    /// The same state with the OAuth app's settings.
    pub fn with_oauth(mut self, oauth: OAuthSettings) -> Self {
        self.oauth = Arc::new(oauth);
        self
    }

    /// The same state with the HubSpot client and, for an OAuth client, the token store it
    /// was built with.
    pub fn with_hubspot(mut self, client: HubSpotClient, tokens: Option<DbTokenStore>) -> Self {
        self.hubspot = Some(client);
        self.tokens = tokens;
        self
    }

    /// The same state with other rate limits for the public routes.
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Self {
        self.rate_limits = limits;
        self
    }

    /// The same state with the object mappings in effect (listed by `GET /api/objects`).
    pub fn with_objects(mut self, objects: Arc<Vec<CheckedMapping>>) -> Self {
        self.objects = objects;
        self
    }

    /// The same state with the configured schedules (listed by `GET /api/schedules`).
    pub fn with_schedules(mut self, schedules: Vec<Schedule>) -> Self {
        self.schedules = Arc::new(schedules);
        self
    }
}

/// The API types whose operations need no token.
type PublicApis = (health::HealthApi, pages::PagesApi, console::ConsoleApi);

/// The API types whose every operation requires the bearer token (a tuple once there are
/// several, e.g. `(ContactsApi, JobsApi)`).
type ProtectedApis = (
    contacts::ContactsApi,
    companies::CompaniesApi,
    jobs::JobsApi,
    access_token::AccessTokenApi,
    connection::ConnectionApi,
    objects::ObjectsApi,
);

fn public_apis(state: &AppState) -> PublicApis {
    (
        health::HealthApi {
            state: state.clone(),
        },
        pages::PagesApi {
            state: state.clone(),
        },
        console::ConsoleApi {
            state: state.clone(),
        },
    )
}

fn protected_apis(state: &AppState) -> ProtectedApis {
    (
        contacts::ContactsApi {
            state: state.clone(),
        },
        companies::CompaniesApi {
            state: state.clone(),
        },
        jobs::JobsApi {
            state: state.clone(),
        },
        access_token::AccessTokenApi {
            state: state.clone(),
        },
        connection::ConnectionApi {
            state: state.clone(),
        },
        objects::ObjectsApi {
            state: state.clone(),
        },
    )
}

/// The OpenAPI service of every documented route.
fn api_service(state: &AppState) -> OpenApiService<(PublicApis, ProtectedApis), ()> {
    OpenApiService::new(
        (public_apis(state), protected_apis(state)),
        "crm-sync",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Keeps a product database's contacts in sync with HubSpot. Protected routes take \
         `Authorization: Bearer <api.token>`; every JSON error is \
         `{\"error\":{\"code\",\"message\"}}`.\n\n\
         Bad input, one rule everywhere: **415** when a JSON body comes without \
         `Content-Type: application/json`; **400** (`invalid_body`) only when the body cannot be \
         read as JSON at all; **422** when what was read does not fit: a body with an unknown, \
         missing or wrongly typed field or a value that is not one of its choices \
         (`invalid_request`, naming the field), or a query or path parameter of the wrong type, \
         out of range or not one of its choices (`invalid_parameter`). Unknown body fields are \
         refused, never ignored. A method a path does not have is a **405** whose `Allow` \
         header lists the ones it has. The OAuth callbacks answer a refused `state` or code \
         with a 400 HTML page.",
    )
    // Relative to wherever the document is served, so "Try it out" works behind any host.
    .server("/")
}

/// The whole app: routes, docs, error envelope, body limit, tracing and metrics.
pub fn router(state: AppState) -> impl Endpoint<Output = Response> + 'static {
    let service = api_service(&state);
    // Both must be taken before nesting, which consumes the service.
    let swagger_ui = service.swagger_ui();
    let spec = service.spec_endpoint();
    let metrics = state.metrics.clone();
    // Public routes that anyone can call are rate-limited per client address; the pages
    // (install, login, logout, callbacks) share one budget; on the webhook route only requests
    // failing the signature check spend theirs, so HubSpot's deliveries are never held back.
    let pages = Arc::new(KeyedLimiter::new(state.rate_limits.pages));
    let hooks = Arc::new(KeyedLimiter::new(state.rate_limits.webhooks));
    let proxies = state.trusted_proxies.clone();
    let limited = |limiter: &Arc<KeyedLimiter>, refusal| {
        RateLimit::new(limiter.clone(), refusal, proxies.clone())
    };
    let cors = cors(&state.cors_origins);
    let allowed = allowed_methods();
    // One service answers every documented path; the rate-limited ones reach it through their
    // limiter (mounted with `at`, which keeps the path for the service's own router).
    let api = Arc::new(service.into_endpoint());
    // Reached through `at`, the service would append its own route pattern to the outer one
    // (`/login/login`); forgetting the outer one keeps the metrics' route label the path's.
    let behind_limiter = || {
        api.clone().before(|mut req: poem::Request| async move {
            req.extensions_mut().remove::<poem::PathPattern>();
            Ok(req)
        })
    };
    let page = |path| (path, behind_limiter().with(limited(&pages, Refusal::Html)));
    let mut routes = Route::new()
        .nest("/api-docs", get(swagger_ui))
        .at("/api-docs/openapi.json", get(spec));
    for (path, limited_page) in [
        page("/api/install"),
        page("/login"),
        page("/logout"),
        page("/disconnect"),
        page(oauth_routes::CALLBACK_PATH),
        page(oauth_routes::INSTALL_CALLBACK_PATH),
    ] {
        routes = routes.at(path, limited_page);
    }
    routes
        .at(
            webhook_route::WEBHOOK_PATH,
            behind_limiter().with(limited(&hooks, Refusal::Json).charging(Charge::Unauthorized)),
        )
        .nest("/", api)
        .data(state)
        .with_if(cors.is_some(), cors.unwrap_or_default())
        .with(middleware::BodyLimit::new(MAX_BODY_BYTES))
        .with(middleware::ErrorEnvelope::new(allowed))
        .with(middleware::Observe::new(metrics))
}

/// The methods of every path: the documented operations and the docs routes.
fn allowed_methods() -> allow::AllowedMethods {
    let mut meta = <PublicApis as OpenApi>::meta();
    meta.extend(<ProtectedApis as OpenApi>::meta());
    let mut allowed = allow::AllowedMethods::of(&meta);
    for path in ["/api-docs", "/api-docs/openapi.json"] {
        allowed.add(path, Method::GET);
    }
    allowed
}

/// CORS for the configured origins, or `None` (no CORS headers at all) when none are.
///
/// Only what a browser client of the API needs: the bearer token travels in `Authorization`
/// (never cookies, so no credentials), JSON bodies, and the methods the API has. A request from
/// any other origin is refused with the error envelope.
fn cors(origins: &[String]) -> Option<poem::middleware::Cors> {
    if origins.is_empty() {
        return None;
    }
    Some(
        poem::middleware::Cors::new()
            .allow_origins(origins.iter().map(String::as_str))
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_header(header::LOCATION)
            .allow_credentials(false)
            .max_age(600),
    )
}

/// Serves the app on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish (for up to [`SHUTDOWN_GRACE`]).
///
/// Takes a bound listener so callers (and tests, with port 0) know the address before serving.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    Server::new_with_acceptor(acceptor)
        .name("crm-sync")
        .run_with_graceful_shutdown(router(state), shutdown, Some(SHUTDOWN_GRACE))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_protected_operation_requires_the_token() {
        let apis = <ProtectedApis as OpenApi>::meta();
        let operations: Vec<_> = apis
            .iter()
            .flat_map(|api| &api.paths)
            .flat_map(|path| path.operations.iter().map(move |op| (&path.path, op)))
            .collect();
        assert!(!operations.is_empty());
        for (path, op) in operations {
            assert!(
                op.security.iter().any(|s| s.contains_key("ApiToken")),
                "{} {path} is in a protected API type but takes no ApiToken",
                op.method
            );
        }
    }

    #[test]
    fn no_public_operation_asks_for_the_token() {
        // A token argument on a public type would make the route protected while the code
        // claims it is public: keep the two lists honest.
        for api in <PublicApis as OpenApi>::meta() {
            for path in &api.paths {
                for op in &path.operations {
                    assert!(op.security.is_empty(), "{} {}", op.method, path.path);
                }
            }
        }
    }
}
