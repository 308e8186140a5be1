//! A real crm-sync server on 127.0.0.1 wired to an in-process HubSpot sandbox, and a
//! "browser" that follows the OAuth install flow by hand (cookies included), for the OAuth
//! and webhook route tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crm_sync::api::ratelimit::RateLimits;
use crm_sync::api::{self, AppState, OAuthSettings};
use crm_sync::crypto::{EncryptionKey, TokenCipher};
use crm_sync::hubspot::{Auth, Backoff, ClientConfig, HubSpotClient, OAuthApp};
use crm_sync::ids::PortalId;
use crm_sync::oauth::DbTokenStore;
use crm_sync::sandbox::{Sandbox, SandboxArgs, SandboxHandle};
use crm_sync::secret::Secret;
use crm_sync::startup::HUBSPOT_SCOPES;
use crm_sync::store::Store;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

/// The protected routes' bearer token in these tests.
pub const TOKEN: &str = "routes-test-token-5b1d";
/// The sandbox's OAuth app.
pub const CLIENT_ID: &str = "routes-client-id";
/// Its secret (also the webhook signing key).
pub const CLIENT_SECRET: &str = "routes-client-secret-9e2f";

/// How a test wants the server.
#[derive(Clone)]
pub struct Options {
    /// Give the server the OAuth app's id and secret.
    pub credentials: bool,
    /// Budgets of the public routes.
    pub rate_limits: RateLimits,
    /// The HubSpot client is a private-app client instead of an OAuth one.
    pub private_app: bool,
    /// The HubSpot client's 10-second budget (`hubspot.requests_per_10s`: HubSpot's 100 by
    /// default; 0 is unthrottled).
    pub requests_per_10s: u32,
    /// `hubspot.portal_id`: the only account the server may connect to.
    pub portal_id: Option<i64>,
    /// `server.public_url` (default: `http://` + the bound address).
    pub public_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            credentials: true,
            // Generous: tests that are not about the limit never meet it.
            rate_limits: RateLimits {
                pages: api::ratelimit::Quota {
                    burst: 1000,
                    per_minute: 6000,
                },
                webhooks: api::ratelimit::Quota {
                    burst: 1000,
                    per_minute: 6000,
                },
            },
            private_app: false,
            requests_per_10s: 100,
            portal_id: None,
            public_url: None,
        }
    }
}

/// Sandbox flags for these tests: no limits, the fixed OAuth app.
pub fn sandbox_args() -> SandboxArgs {
    SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        rng_seed: Some(5),
        client_id: Some(CLIENT_ID.to_owned()),
        client_secret: Some(CLIENT_SECRET.to_owned()),
        ..SandboxArgs::default()
    }
}

/// Starts a sandbox on a free loopback port.
pub async fn start_sandbox(args: SandboxArgs) -> SandboxHandle {
    Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("sandbox starts")
}

/// The key tokens are encrypted with in these tests.
pub fn cipher() -> Arc<TokenCipher> {
    Arc::new(TokenCipher::new(&EncryptionKey::from_bytes([7; 32]), &[]))
}

/// A token store over `store` with the tests' key, as a fresh process would open it.
pub fn cipher_store(store: &Store) -> DbTokenStore {
    DbTokenStore::new(store.clone(), cipher())
}

/// A running server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its database.
    pub store: Store,
    /// The token store its HubSpot client uses.
    pub tokens: DbTokenStore,
    /// Its HubSpot client.
    pub client: HubSpotClient,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

/// Binds a free loopback port (so that the sandbox can be told where to send webhooks before
/// the server starts).
pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free loopback port")
}

impl Server {
    /// Serves on `listener` with a HubSpot client pointed at `sandbox`.
    pub async fn start(
        listener: TcpListener,
        store: Store,
        sandbox: &SandboxHandle,
        options: Options,
    ) -> Server {
        let addr = listener.local_addr().expect("bound address");
        let public_url = options
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let public_url = Url::parse(&public_url).expect("public url");
        let tokens = DbTokenStore::new(store.clone(), cipher());
        let mut config = ClientConfig::new(Url::parse(&sandbox.base_url()).expect("sandbox"));
        config.requests_per_10s = options.requests_per_10s;
        config.backoff = Backoff {
            base: std::time::Duration::from_millis(5),
            max: std::time::Duration::from_millis(50),
        };
        let auth = if options.private_app {
            Auth::PrivateApp(Secret::new(sandbox.access_token()))
        } else {
            Auth::OAuth {
                app: OAuthApp {
                    client_id: CLIENT_ID.to_owned(),
                    client_secret: Secret::new(CLIENT_SECRET),
                    authorize_url: Url::parse(&sandbox.authorize_url()).expect("authorize url"),
                    redirect_uri: public_url.join("/oauth-callback").expect("redirect uri"),
                    scopes: HUBSPOT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
                    optional_scopes: Vec::new(),
                },
                tokens: Arc::new(tokens.clone()),
            }
        };
        let client = HubSpotClient::new(config, auth).expect("client");
        let oauth = OAuthSettings {
            client_id: options.credentials.then(|| CLIENT_ID.to_owned()),
            client_secret: options.credentials.then(|| Secret::new(CLIENT_SECRET)),
            public_url,
            authorize_url: Url::parse(&sandbox.authorize_url()).expect("authorize url"),
            portal_id: options.portal_id.map(PortalId),
        };
        let mut state = AppState::new(store.clone(), Secret::new(TOKEN))
            .with_oauth(oauth)
            .with_rate_limits(options.rate_limits);
        if options.credentials || options.private_app {
            let store_for_client = (!options.private_app).then(|| tokens.clone());
            state = state.with_hubspot(client.clone(), store_for_client);
        }
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(api::serve(listener, state, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            store,
            tokens,
            client,
            shutdown: Some(tx),
            task,
        }
    }

    /// `http://127.0.0.1:<port>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops serving and waits.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

/// A page as the browser received it.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body text.
    pub body: String,
}

impl Answer {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

/// A browser that does not follow redirects and keeps the two cookies that matter by hand:
/// the OAuth browser nonce and the operator session.
pub struct Browser {
    http: reqwest::Client,
    /// The `crm_sync_oauth` cookie value, once set.
    pub cookie: Option<String>,
    /// The `crm_sync_session` cookie value, once set (and until cleared).
    pub session: Option<String>,
    /// Sent as `Authorization: Bearer` on every request, for an operator's script.
    pub bearer: Option<String>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    /// An anonymous browser with no cookies.
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(0)
                .build()
                .expect("HTTP client"),
            cookie: None,
            session: None,
            bearer: None,
        }
    }

    /// The operator, sending the API token as a bearer token with every request.
    pub fn operator() -> Self {
        Self {
            bearer: Some(TOKEN.to_owned()),
            ..Self::new()
        }
    }

    /// GET `url`, sending the cookies; a `Set-Cookie` for either is kept.
    pub async fn get(&mut self, url: &str) -> Answer {
        let req = self.http.get(url);
        self.send(req).await
    }

    /// POST `fields` as a form to `url`, sending the cookies.
    pub async fn post_form(&mut self, url: &str, fields: &[(&str, &str)]) -> Answer {
        let req = self.http.post(url).form(fields);
        self.send(req).await
    }

    /// Signs in on `server` with `token` through `POST /login`; the answer to the post.
    pub async fn sign_in(&mut self, server: &Server, token: &str) -> Answer {
        self.post_form(&server.url("/login"), &[("token", token)])
            .await
    }

    async fn send(&mut self, mut req: reqwest::RequestBuilder) -> Answer {
        let cookies: Vec<String> = [
            ("crm_sync_oauth", &self.cookie),
            ("crm_sync_session", &self.session),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
        .collect();
        if !cookies.is_empty() {
            req = req.header("cookie", cookies.join("; "));
        }
        if let Some(token) = &self.bearer {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        for set in headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let Some((name, rest)) = set.split_once('=') else {
                continue;
            };
            let value = rest.split(';').next().unwrap_or_default().to_owned();
            let value = (!value.is_empty()).then_some(value);
            match name {
                "crm_sync_oauth" => self.cookie = value,
                "crm_sync_session" => self.session = value,
                _ => {}
            }
        }
        let body = resp.text().await.expect("body");
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Opens the install page and returns the install link it shows.
    pub async fn install_link(&mut self, server: &Server) -> Url {
        let page = self.get(&server.url("/api/install")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        install_link_of(&page.body).expect("the install page shows the install link")
    }

    /// Follows an install link through the sandbox's authorize page; returns the callback URL
    /// HubSpot sends the browser back to.
    pub async fn authorize(&mut self, link: &Url) -> Url {
        let answer = self.get(link.as_str()).await;
        assert!(answer.status.is_redirection(), "{answer:?}");
        Url::parse(&answer.header("location")).expect("the redirect is a URL")
    }
}

/// The `href` of the install button, unescaped.
pub fn install_link_of(page: &str) -> Option<Url> {
    let start = page.find("id=\"install\" href=\"")? + "id=\"install\" href=\"".len();
    let end = start + page[start..].find('"')?;
    Url::parse(&page[start..end].replace("&amp;", "&")).ok()
}

/// A URL's query as a map.
pub fn query_of(url: &Url) -> BTreeMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// The same URL with one query parameter replaced (or removed with `None`).
pub fn with_param(url: &Url, name: &str, value: Option<&str>) -> Url {
    let mut out = url.clone();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != name)
        .collect();
    {
        let mut pairs = out.query_pairs_mut();
        pairs.clear();
        for (k, v) in &kept {
            pairs.append_pair(k, v);
        }
        if let Some(v) = value {
            pairs.append_pair(name, v);
        }
    }
    out
}

/// Asserts the headers every HTML page carries.
pub fn assert_security_headers(answer: &Answer) {
    let csp = answer.header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "CSP: {csp:?}");
    assert!(csp.contains("frame-ancestors 'none'"), "CSP: {csp:?}");
    assert!(csp.contains("form-action 'self'"), "CSP: {csp:?}");
    assert!(csp.contains("base-uri 'none'"), "CSP: {csp:?}");
    assert_eq!(answer.header("x-content-type-options"), "nosniff");
    assert_eq!(answer.header("referrer-policy"), "no-referrer");
    assert_eq!(answer.header("x-frame-options"), "DENY");
    assert!(
        answer.header("access-control-allow-origin").is_empty(),
        "no CORS"
    );
}

/// How many OAuth calls (authorize page and token endpoint) the sandbox served.
pub fn oauth_calls(sandbox: &SandboxHandle) -> u64 {
    sandbox
        .stats()
        .by_operation
        .get("oauth")
        .copied()
        .unwrap_or(0)
}

/// The real job workers against the server's store, until stopped.
pub struct Workers {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), crm_sync::jobs::worker::WorkerRuntimeError>>,
}

impl Workers {
    /// Starts the workers with the server's HubSpot client, polling often (tests wait on them).
    pub fn start(server: &Server) -> Workers {
        use crm_sync::jobs::worker::{WorkerConfig, run_workers};
        use crm_sync::sync::{SyncContext, SyncRunner};
        let runner = Arc::new(SyncRunner::new(SyncContext::new(server.client.clone())));
        let (stop, stop_rx) = oneshot::channel::<()>();
        let config = WorkerConfig {
            role: "test".to_owned(),
            sqlite_poll_interval: std::time::Duration::from_millis(50),
            postgres_poll_interval: std::time::Duration::from_millis(200),
            ..WorkerConfig::default()
        };
        let task = tokio::spawn(run_workers(
            server.store.clone(),
            runner,
            vec![],
            config,
            async move {
                let _ = stop_rx.await;
            },
        ));
        Workers {
            stop: Some(stop),
            task,
        }
    }

    /// Stops the workers and waits until they have.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

/// Polls until every job has ended (a generous limit: this is not a speed test).
pub async fn all_jobs_ended(store: &Store) -> Vec<crm_sync::jobs::model::Job> {
    let started = std::time::Instant::now();
    loop {
        let jobs = store.list_jobs(None, 200).await.unwrap();
        if jobs.iter().all(|j| j.status.is_terminal()) {
            return jobs;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "jobs end: {jobs:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A sandbox sending a signed webhook for every change to a server on `store` (private-app
/// token, no contacts).
pub async fn webhooked_world(store: Store) -> (SandboxHandle, Server) {
    let listener = bind().await;
    let addr = listener.local_addr().expect("bound address");
    let args = SandboxArgs {
        webhook_url: Some(format!("http://{addr}/webhooks/hubspot")),
        ..sandbox_args()
    };
    let sandbox = start_sandbox(args).await;
    let options = Options {
        private_app: true,
        ..Options::default()
    };
    let server = Server::start(listener, store, &sandbox, options).await;
    (sandbox, server)
}
