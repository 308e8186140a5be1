//! Start-up: everything a process builds from the settings before it works — the store, the
//! token cipher, the HubSpot client, the job runner and workers, the bound API server — and
//! the signal that stops it. The commands in `crate::cli` call these and print what they did.

mod demo;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{AppState, Metrics, OAuthSettings};
use crate::config::{ConfigError, Settings, previous_keys};
use crate::crypto::{EncryptionKey, TokenCipher};
use crate::hubspot::{Auth, ClientConfig, HubSpotClient, HubSpotError, OAuthApp};
use crate::ids::PortalId;
use crate::jobs::worker::{WorkerConfig, WorkerRuntimeError};
use crate::jobs::{JobRunner, Schedule, ScheduleError};
use crate::mapping::properties::{PropertyError, check_properties};
use crate::mapping::{CheckedMapping, MappingError, check_mappings};
use crate::oauth::DbTokenStore;
use crate::sandbox::{SandboxError, SandboxHandle};
use crate::secret::Secret;
use crate::secret_files::{SecretOrigin, resolve_api_token, resolve_encryption_key};
use crate::store::{Backend, Store, StoreError};
use crate::sync::{SyncContext, SyncRunner};

/// Why the service could not start, or stopped with an error; `Display` is the one line the
/// CLI prints.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The configuration is invalid (the message names the key).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database cannot be reached, created or migrated.
    #[error("{source}{}", database_hint(source))]
    Database {
        /// The store's error (URLs redacted).
        #[from]
        source: StoreError,
    },
    /// The API's listen address cannot be bound.
    #[error(
        "cannot listen on {addr} (server.bind): {source} — choose another address with server.bind \
         or CRM_SYNC__SERVER__BIND"
    )]
    Bind {
        /// The address from `server.bind`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The worker's probe listener address cannot be bound.
    #[error(
        "cannot listen on {addr} (worker.bind): {source} — choose another address with \
         worker.bind or CRM_SYNC__WORKER__BIND, or unset it for no listener"
    )]
    WorkerBind {
        /// The address from `worker.bind`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The sandbox could not start or stopped with an error.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The HubSpot client could not be built from the settings.
    #[error("cannot set up the HubSpot client: {0}")]
    HubSpot(#[from] HubSpotError),
    /// The HTTP server stopped with an I/O error.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// A `[[sync.schedules]]` entry cannot be scheduled.
    #[error("sync.schedules: {0}")]
    Schedule(#[from] ScheduleError),
    /// The job workers stopped with an error.
    #[error(transparent)]
    Workers(#[from] WorkerRuntimeError),
    /// A `[[sync.objects]]` mapping does not fit the database (the message names the key).
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// A mapped HubSpot property does not fit its mapping (the message names the key).
    #[error(transparent)]
    Property(#[from] PropertyError),
    /// `hubspot.access_token` reaches another account than `hubspot.portal_id`.
    #[error(
        "hubspot.access_token is a private-app token of HubSpot account {reached}, but \
         hubspot.portal_id is {pinned}: use a private-app token of account {pinned}, or change \
         hubspot.portal_id"
    )]
    PortalMismatch {
        /// `hubspot.portal_id`.
        pinned: PortalId,
        /// The account the token reaches.
        reached: PortalId,
    },
    /// `hubspot.portal_id` is set but the private-app token's account could not be learnt.
    #[error(
        "cannot check that hubspot.access_token belongs to HubSpot account {pinned} \
         (hubspot.portal_id): {source}"
    )]
    PortalUnverified {
        /// `hubspot.portal_id`.
        pinned: PortalId,
        /// Why.
        source: HubSpotError,
    },
}

/// What to do about a database error, appended to its message.
pub(crate) fn database_hint(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unreachable { .. } | StoreError::CreateFolder { .. } => {
            " — is the folder writable? set database.url or DATABASE_URL"
        }
        StoreError::UnsupportedUrl { .. } => " — set database.url or DATABASE_URL",
        _ => "",
    }
}

/// How `serve --sandbox` runs its in-process sandbox.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoSandbox {
    /// Start a new sandbox account instead of resuming the saved one.
    pub fresh: bool,
    /// The sandbox's port on 127.0.0.1 (`None`: any free port).
    pub port: Option<u16>,
}

/// The data folder (generated secrets) under the working directory.
pub fn data_dir(working_dir: &Path) -> PathBuf {
    working_dir.join("data")
}

/// Connects to `database.url` and applies the migrations.
pub async fn open_store(settings: &Settings) -> Result<Store, StartupError> {
    let store = Store::connect(&settings.database.url).await?;
    store.migrate().await?;
    Ok(store)
}

/// Checks the object mappings in effect (`sync.objects`) against the database, so that a
/// process that runs or enqueues syncs refuses to start with one line naming the key at fault.
pub async fn checked_mappings(
    settings: &Settings,
    store: &Store,
) -> Result<Arc<Vec<CheckedMapping>>, StartupError> {
    let checked = check_mappings(store, &settings.sync.objects).await?;
    crate::sync::mapped::check_runnable(store, &checked).await?;
    Ok(Arc::new(checked))
}

/// Opens `database.url` for a command that only reads or changes existing rows: it never
/// creates a database nor migrates one, and says so when there is none set up at that URL.
pub async fn open_existing_store(settings: &Settings) -> Result<Store, StartupError> {
    let store = Store::open_existing(&settings.database.url).await?;
    if let Err(e) = store.check_migrated().await {
        store.close().await;
        return Err(e.into());
    }
    Ok(store)
}

/// The scopes the install link asks for: only those the service uses. A feature that needs
/// another scope adds it here with that feature (an unused scope is access an attacker with the
/// tokens would get for nothing).
pub const HUBSPOT_SCOPES: &[&str] = &[
    // account-info (which portal a token reaches) and the token calls themselves
    "oauth",
    // pull, webhook effects (read) and push (write)
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    // the crm_sync_contact_id property push creates and checks
    "crm.schemas.contacts.read",
    "crm.schemas.contacts.write",
    // company pull (read) and push (write)
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    // the crm_sync_company_id property company push creates and checks
    "crm.schemas.companies.read",
    "crm.schemas.companies.write",
];

/// The HubSpot client the settings describe: a private-app client when
/// `hubspot.access_token` is set; an OAuth client whose tokens live encrypted in the database
/// when `hubspot.client_id` and `hubspot.client_secret` are set; `None` otherwise.
pub fn hubspot_client_from_settings(
    settings: &Settings,
    store: &Store,
    cipher: Arc<TokenCipher>,
) -> Result<Option<(HubSpotClient, Option<DbTokenStore>)>, StartupError> {
    let mut config = ClientConfig::new(settings.hubspot.api_base_url.clone());
    config.requests_per_10s = settings.hubspot.requests_per_10s;
    config.search_per_second = settings.hubspot.search_per_second;
    config.associations_per_10s = settings.hubspot.associations_per_10s;
    let mut tokens = None;
    let auth = if let Some(token) = &settings.hubspot.access_token {
        Auth::PrivateApp(token.clone())
    } else if let Some(app) = oauth_app_from_settings(settings)? {
        // The API and the client share one store, so both know which tokens were last
        // handed out when HubSpot refuses a refresh.
        let store = DbTokenStore::new(store.clone(), cipher);
        tokens = Some(store.clone());
        Auth::OAuth {
            app,
            tokens: Arc::new(store),
        }
    } else {
        return Ok(None);
    };
    Ok(Some((HubSpotClient::new(config, auth)?, tokens)))
}

/// The OAuth app of `hubspot.client_id` and `hubspot.client_secret`, when both are set.
pub(crate) fn oauth_app_from_settings(
    settings: &Settings,
) -> Result<Option<OAuthApp>, StartupError> {
    let (Some(client_id), Some(client_secret)) =
        (&settings.hubspot.client_id, &settings.hubspot.client_secret)
    else {
        return Ok(None);
    };
    let redirect_uri = settings
        .server
        .public_url
        .join("/oauth-callback")
        .map_err(|e| ConfigError::Invalid {
            key: "server.public_url".into(),
            problem: e.to_string(),
        })?;
    Ok(Some(OAuthApp {
        client_id: client_id.clone(),
        client_secret: client_secret.clone(),
        authorize_url: settings.hubspot.authorize_url.clone(),
        redirect_uri,
        scopes: HUBSPOT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
        optional_scopes: Vec::new(),
    }))
}

/// With `hubspot.portal_id` set, checks that a private-app token reaches that account (asking
/// HubSpot's account info once), so that `serve` and `worker` never start syncing with
/// another account. OAuth clients are checked at each installation instead.
pub async fn check_pinned_account(
    settings: &Settings,
    client: &HubSpotClient,
) -> Result<(), StartupError> {
    let Some(pinned) = settings.pinned_portal() else {
        return Ok(());
    };
    if client.oauth().is_some() {
        return Ok(());
    }
    let reached = client
        .learn_portal_id()
        .await
        .map_err(|source| StartupError::PortalUnverified { pinned, source })?;
    if reached != pinned {
        return Err(StartupError::PortalMismatch { pinned, reached });
    }
    Ok(())
}

/// How long start-up waits for HubSpot to answer the check of the mapped properties.
const PROPERTY_CHECK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// With a HubSpot connection, checks each user mapping's properties as its jobs check them
/// (reads only: a property the mapping may create passes), so that `serve` and `worker` refuse
/// to start with the one line such a job would fail with (a missing property it may not
/// create, a type its column cannot hold, a match key HubSpot does not keep unique). When
/// HubSpot cannot tell (no account connected yet, not answering) each job checks them instead.
pub async fn check_mapped_properties(
    client: &HubSpotClient,
    objects: &[CheckedMapping],
) -> Result<(), StartupError> {
    let user_mappings = objects
        .iter()
        .filter(|m| !crate::sync::mapped::is_built_in(&m.mapping));
    for checked in user_mappings {
        let checking = check_properties(client, checked);
        match tokio::time::timeout(PROPERTY_CHECK_PATIENCE, checking).await {
            Ok(Ok(_)) => {}
            Ok(Err(PropertyError::HubSpot { context, source })) => {
                tracing::warn!(%context, error = %source, "the mapped HubSpot properties are checked by each job instead of at start-up");
                return Ok(());
            }
            Ok(Err(unfit)) => return Err(unfit.into()),
            Err(_) => {
                tracing::warn!(
                    patience = ?PROPERTY_CHECK_PATIENCE,
                    "HubSpot did not answer the check of the mapped properties; each job checks them"
                );
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Everything `crm-sync serve` runs, connected and bound but not yet serving, so that the
/// caller can print where it listens before [`Service::run`] serves the API and, next to it,
/// runs the workers, and stops them together.
pub struct Service {
    /// The effective settings (pointing at the sandbox under `--sandbox`).
    pub settings: Settings,
    /// The API's shared state: store, API token, metrics registry.
    pub state: AppState,
    /// The HubSpot client, when the settings give credentials.
    pub hubspot: Option<HubSpotClient>,
    /// Seals and opens HubSpot tokens at rest, under `security.encryption_key` (configured,
    /// or generated once into `data/`).
    pub token_cipher: Arc<TokenCipher>,
    /// The API's bound listener.
    pub listener: TcpListener,
    /// The in-process sandbox of `--sandbox`; stops when dropped.
    pub sandbox: Option<SandboxHandle>,
    /// Whether the service installs itself in the sandbox once it listens (`--sandbox` with
    /// OAuth, see [`demo`]).
    connect_sandbox: bool,
    token_origin: SecretOrigin,
    token_file: PathBuf,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("store", &self.state.store)
            .field("listener", &self.listener.local_addr().ok())
            .field("hubspot", &self.hubspot.is_some())
            .field(
                "sandbox",
                &self.sandbox.as_ref().map(SandboxHandle::base_url),
            )
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Loads the settings from `dir`, starts the sandbox when `demo` asks for it, resolves the API
    /// token and encryption key, connects and migrates, builds the HubSpot client and binds
    /// `server.bind`.
    pub async fn build(dir: &Path, demo: Option<DemoSandbox>) -> Result<Service, StartupError> {
        let mut settings = Settings::load_from_process(dir)?;
        let data = data_dir(dir);
        let sandbox = match demo {
            Some(options) => Some(demo::start_sandbox(&mut settings, &data, options).await?),
            None => None,
        };
        let (token, token_origin) = resolve_api_token(&settings, &data)?;
        let token_cipher = token_cipher(&settings, &data)?;
        let store = open_store(&settings).await?;
        let objects = checked_mappings(&settings, &store).await?;
        let demo_auth = match &sandbox {
            Some(sandbox) => Some(demo::choose_auth(&mut settings, &store, sandbox).await?),
            None => None,
        };
        let state = AppState::new(store, token)
            .with_objects(objects)
            .with_cors_origins(settings.server.cors_allowed_origins.clone())
            .with_trusted_proxies(settings.server.trusted_proxies.clone());
        let state = state.with_oauth(OAuthSettings {
            client_id: settings.hubspot.client_id.clone(),
            client_secret: settings.hubspot.client_secret.clone(),
            public_url: settings.server.public_url.clone(),
            authorize_url: settings.hubspot.authorize_url.clone(),
            portal_id: settings.pinned_portal(),
        });
        let built = hubspot_client_from_settings(&settings, &state.store, token_cipher.clone())?;
        let (state, hubspot) = match built {
            Some((client, tokens)) => {
                check_pinned_account(&settings, &client).await?;
                check_mapped_properties(&client, &state.objects).await?;
                state.metrics.register_client(client.metrics());
                (state.with_hubspot(client.clone(), tokens), Some(client))
            }
            None => (state, None),
        };
        let addr = settings.server.bind;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Service {
            settings,
            state,
            hubspot,
            token_cipher,
            listener,
            sandbox,
            connect_sandbox: demo_auth == Some(demo::DemoAuth::OAuth),
            token_origin,
            token_file: data.join("api-token"),
        })
    }

    /// Under `--sandbox`, the second line printed at start: where the sandbox is (so that one
    /// can change contacts in it) and where it sends its webhooks.
    pub fn sandbox_line(&self) -> Option<String> {
        let sandbox = self.sandbox.as_ref()?;
        let public = self
            .settings
            .server
            .public_url
            .as_str()
            .trim_end_matches('/');
        Some(format!(
            "HubSpot sandbox at {} (portal {}); it sends its webhooks to {public}{}",
            sandbox.base_url(),
            sandbox.portal_id(),
            crate::api::webhook_route::WEBHOOK_PATH,
        ))
    }

    /// The line printed at start: where the API listens and how to get its token.
    pub fn start_line(&self) -> String {
        let url = match self.listener.local_addr() {
            Ok(addr) => format!("http://{addr}"),
            Err(_) => self
                .settings
                .server
                .public_url
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
        };
        let token = match self.token_origin {
            SecretOrigin::Configured => "the configured api.token".to_owned(),
            SecretOrigin::File | SecretOrigin::Generated => {
                format!("the token in {}", self.token_file.display())
            }
        };
        let backend = match self.state.store.backend() {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        };
        format!(
            "crm-sync serving {url} (docs: {url}/api-docs) on {backend} at {}; \
             send 'Authorization: Bearer <token>' with {token}",
            self.state.store.redacted_url()
        )
    }

    /// Serves the API and runs the job workers and the scheduler next to it until
    /// SIGINT/SIGTERM, then stops the sandbox and closes the database.
    pub async fn run(self) -> Result<(), StartupError> {
        let schedules = Schedule::all_from(&self.settings)?;
        let runner = runner_for(
            &self.settings,
            self.hubspot.clone(),
            self.state.objects.clone(),
        )?;
        let Service {
            settings,
            state,
            listener,
            sandbox,
            connect_sandbox,
            ..
        } = self;
        let addr = listener.local_addr().map_err(StartupError::Serve)?;
        let state = state.with_schedules(schedules.clone());
        let config = WorkerConfig {
            role: "serve".to_owned(),
            ..WorkerConfig::default()
        };
        let pruner = crate::jobs::retention::spawn(state.store.clone(), settings.retention.clone());
        // One signal stops both sides.
        let (stop_api, stop_workers) = shared_shutdown();
        let (api, workers) = tokio::join!(
            crate::api::serve(listener, state.clone(), stop_api),
            async {
                // The demo connects before any job runs: a job left queued by an earlier run
                // would otherwise meet the earlier sandbox's tokens (or none) and fail.
                if connect_sandbox {
                    connect_to_sandbox(addr, &state.api_token).await;
                }
                crate::jobs::run_workers(
                    state.store.clone(),
                    runner,
                    schedules,
                    config,
                    stop_workers,
                )
                .await
            },
        );
        pruner.abort();
        if let Some(sandbox) = sandbox {
            sandbox.shutdown().await?;
        }
        state.store.close().await;
        api.map_err(StartupError::Serve)?;
        Ok(workers?)
    }
}

/// Installs the service in the demo sandbox; a failure leaves the service running, not
/// connected, with the install page to connect by hand.
async fn connect_to_sandbox(addr: SocketAddr, api_token: &Secret) {
    match demo::connect(addr, api_token).await {
        Ok(()) => tracing::info!("connected to the sandbox through its OAuth install flow"),
        Err(e) => tracing::warn!(
            error = %e,
            "could not connect to the sandbox by itself; open http://{addr}/api/install to \
             connect"
        ),
    }
}

/// The job workers and the schedulers (`crm-sync worker`), until SIGINT/SIGTERM; running jobs
/// stop at a page boundary and go back to the queue. With `worker.bind` set it also serves
/// `/healthz`, `/readyz` and `/metrics` there (no API).
pub async fn run_worker(dir: &Path) -> Result<(), StartupError> {
    let settings = Settings::load_from_process(dir)?;
    let schedules = Schedule::all_from(&settings)?;
    // Before connecting: a missing key is a configuration error, whatever the database says.
    let cipher = token_cipher(&settings, &data_dir(dir))?;
    let store = open_store(&settings).await?;
    let objects = checked_mappings(&settings, &store).await?;
    let probes = match settings.worker.bind {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::WorkerBind { addr, source })?,
        ),
        None => None,
    };
    let client = hubspot_client_from_settings(&settings, &store, cipher)?.map(|(c, _)| c);
    if let Some(client) = &client {
        check_pinned_account(&settings, client).await?;
        check_mapped_properties(client, &objects).await?;
    }
    let metrics = Arc::new(Metrics::new());
    if let Some(client) = &client {
        metrics.register_client(client.metrics());
    }
    let runner = runner_for(&settings, client, objects)?;
    tracing::info!(
        database = %store.redacted_url(),
        schedules = schedules.len(),
        probes = ?probes.as_ref().and_then(|l| l.local_addr().ok()),
        "crm-sync worker started"
    );
    let config = WorkerConfig {
        role: "worker".to_owned(),
        ..WorkerConfig::default()
    };
    let pruner = crate::jobs::retention::spawn(store.clone(), settings.retention.clone());
    let (stop_probes, stop_workers) = shared_shutdown();
    // The listener also stops when the workers end by themselves (an error), so that the
    // process exits rather than answering probes with nothing behind them.
    let (workers_done, mut workers_ended) = tokio::sync::watch::channel(false);
    let serving = async {
        let Some(listener) = probes else {
            return Ok(());
        };
        let stop = async move {
            tokio::select! {
                () = stop_probes => {}
                _ = workers_ended.wait_for(|done| *done) => {}
            }
        };
        crate::api::probes::serve_probes(listener, store.clone(), metrics, stop).await
    };
    let working = async {
        let ran =
            crate::jobs::run_workers(store.clone(), runner, schedules, config, stop_workers).await;
        let _ = workers_done.send(true);
        ran
    };
    let (served, ran) = tokio::join!(serving, working);
    pruner.abort();
    store.close().await;
    served.map_err(StartupError::Serve)?;
    Ok(ran?)
}

/// The runner that workers hand jobs to: the sync engine, built from the settings (the same
/// runner serves `serve` and `worker`).
pub async fn job_runner(
    settings: &Settings,
    store: &Store,
    cipher: Arc<TokenCipher>,
) -> Result<Arc<dyn JobRunner>, StartupError> {
    let objects = checked_mappings(settings, store).await?;
    let client = hubspot_client_from_settings(settings, store, cipher)?.map(|(client, _)| client);
    if let Some(client) = &client {
        check_pinned_account(settings, client).await?;
    }
    runner_for(settings, client, objects)
}

/// The cipher for HubSpot tokens at rest: `security.encryption_key` (or on SQLite the key
/// generated into `data_dir`) plus the previous keys still accepted for opening.
pub fn token_cipher(
    settings: &Settings,
    data_dir: &Path,
) -> Result<Arc<TokenCipher>, StartupError> {
    let (key, _) = resolve_encryption_key(settings, data_dir)?;
    let previous: Vec<EncryptionKey> = previous_keys(settings)?
        .into_iter()
        .map(EncryptionKey::from_bytes)
        .collect();
    Ok(Arc::new(TokenCipher::new(
        &EncryptionKey::from_bytes(key),
        &previous,
    )))
}

/// The sync engine over `client`, or, with no HubSpot configured, a runner that fails each job
/// at once saying how to configure it (rather than leaving jobs queued forever).
fn runner_for(
    settings: &Settings,
    client: Option<HubSpotClient>,
    objects: Arc<Vec<CheckedMapping>>,
) -> Result<Arc<dyn JobRunner>, StartupError> {
    Ok(match client {
        Some(client) => {
            learn_portal_in_background(&client);
            let mut ctx = sync_context(settings, client)?;
            ctx.objects = objects;
            Arc::new(SyncRunner::new(ctx))
        }
        None => Arc::new(HubSpotNotConfigured),
    })
}

/// What the sync engine runs with: `client` and the `sync.*` tunables of `settings`.
pub fn sync_context(
    settings: &Settings,
    client: HubSpotClient,
) -> Result<SyncContext, StartupError> {
    let mut ctx = SyncContext::new(client);
    ctx.pull.lookback = settings.sync.pull_lookback;
    Ok(ctx)
}

/// Asks HubSpot once which account a private-app token reaches, so that jobs record their
/// portal id (OAuth tokens name it themselves). Off the start-up path: HubSpot being slow or
/// down must not delay the service; a failure is logged and only the job rows miss the id.
fn learn_portal_in_background(client: &HubSpotClient) {
    if client.oauth().is_some() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let client = client.clone();
    runtime.spawn(async move {
        match client.learn_portal_id().await {
            Ok(portal) => tracing::info!(portal_id = %portal, "the private-app token reaches this HubSpot account"),
            Err(e) => tracing::warn!(error = %e, "cannot tell which HubSpot account the private-app token reaches; jobs will not record it"),
        }
    });
}

/// Fails every job: no HubSpot account is configured.
struct HubSpotNotConfigured;

impl JobRunner for HubSpotNotConfigured {
    fn run<'a>(
        &'a self,
        _job: &'a crate::jobs::model::Job,
        _progress: &'a crate::jobs::runner::Progress,
    ) -> crate::jobs::runner::BoxFuture<'a, Result<(), crate::jobs::runner::RunError>> {
        Box::pin(async {
            Err(crate::jobs::runner::RunError::fatal(
                "HubSpot is not configured: set hubspot.access_token (a private-app token), or \
                 hubspot.client_id and hubspot.client_secret and install the app at /api/install",
            ))
        })
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Two futures that resolve together on the first SIGINT or SIGTERM: the API and the workers
/// of `serve` each take one, and the signal is logged once.
fn shared_shutdown() -> (
    impl Future<Output = ()> + Send + 'static,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone, which only happens after it sent.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    (stopped(rx.clone()), stopped(rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hubspot::MemoryTokenStore;
    use std::collections::HashMap;

    #[test]
    fn the_install_link_asks_only_for_the_scopes_the_service_uses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env: HashMap<String, String> = [
            ("CRM_SYNC__HUBSPOT__CLIENT_ID", "client-1"),
            ("CRM_SYNC__HUBSPOT__CLIENT_SECRET", "secret-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings = Settings::load(dir.path(), &env).expect("settings");
        let app = oauth_app_from_settings(&settings)
            .expect("valid")
            .expect("an OAuth app");
        let client = HubSpotClient::new(
            ClientConfig::new(settings.hubspot.api_base_url.clone()),
            Auth::OAuth {
                app,
                tokens: Arc::new(MemoryTokenStore::default()),
            },
        )
        .expect("client");
        let link = client.authorize_url("st").expect("link");
        let query: HashMap<_, _> = link.query_pairs().into_owned().collect();
        assert_eq!(
            query["scope"],
            "oauth crm.objects.contacts.read crm.objects.contacts.write \
             crm.schemas.contacts.read crm.schemas.contacts.write \
             crm.objects.companies.read crm.objects.companies.write \
             crm.schemas.companies.read crm.schemas.companies.write"
        );
        assert!(!query.contains_key("optional_scope"));
    }
}
