//! The `crm-sync` commands (INTERFACE §1): one [`Command`] variant and one match arm in [`run`]
//! per subcommand. `main.rs` only parses, runs and reports the error.
//!
//! Every failure is a [`CliError`] whose message is one actionable line: what went wrong,
//! naming the configuration key or flag at fault, and what to do about it.

mod demo;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;

use crate::api::{AppState, OAuthSettings};
use crate::config::{
    ConfigError, SecretOrigin, Settings, load_dotenv, previous_keys, resolve_api_token,
    resolve_encryption_key,
};
use crate::crypto::{EncryptionKey, TokenCipher};
use crate::hubspot::{Auth, ClientConfig, HubSpotClient, HubSpotError, MemoryTokenStore, OAuthApp};
use crate::ids::{ContactId, PortalId};
use crate::jobs::commands::{CommandError, JobShortfall, JobsArgs, SyncArgs};
use crate::jobs::worker::{WorkerConfig, WorkerRuntimeError};
use crate::jobs::{JobRunner, Schedule, ScheduleError, SpecError};
use crate::oauth::DbTokenStore;
use crate::oauth::install::{LinkError, LinkFor, install_link};
use crate::sandbox::{SandboxArgs, SandboxError, SandboxHandle};
use crate::secret::Secret;
use crate::seed::{Catalog, SeedError};
use crate::store::{Backend, Restore, Store, StoreError};
use crate::sync::{SyncContext, SyncRunner};
use crate::telemetry::LogFormat;

/// Contacts a new sandbox account of `serve --sandbox` starts with, so a pull has work to do
/// (a resumed one has its own).
const DEMO_SANDBOX_CONTACTS: usize = 250;

/// `crm-sync`: keeps a product database's contacts in sync with HubSpot.
#[derive(Debug, Parser)]
#[command(name = "crm-sync", version, about, propagate_version = true)]
pub struct Cli {
    /// Format of the log lines on stderr (filter them with RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (the default way to run the service).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Insert N generated contacts of an industry from seed-data/.
    Seed(SeedArgs),
    /// Run the HubSpot sandbox on its own.
    Sandbox {
        /// The sandbox's flags (INTERFACE §5).
        #[command(flatten)]
        args: SandboxArgs,
    },
    /// Enqueue a push or pull job; with --wait, follow it and print its counts.
    #[command(after_help = SYNC_EXIT_STATUS)]
    Sync(SyncArgs),
    /// List recent jobs, or show one.
    Jobs(JobsArgs),
    /// Run the job workers and the scheduler, without HTTP (run several to scale out).
    Worker,
    /// Print a one-time link that connects a HubSpot account (the operator's alternative to
    /// signing in on the status page).
    Connect,
    /// Disconnect HubSpot: remove the stored tokens, so that another account may be connected.
    Disconnect,
    /// Restore a contact HubSpot deleted: remove its mark, so that the next push may create it
    /// in HubSpot again.
    Restore {
        /// The local contact id.
        id: i64,
    },
    /// Print a fresh encryption key (base64 of 32 random bytes) for security.encryption_key;
    /// required with PostgreSQL, where every host must share one key.
    Keygen,
}

/// Flags of `crm-sync serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Also run a HubSpot sandbox in-process and point the HubSpot client at it (zero-setup demo);
    /// it keeps its account in data/sandbox-state.json and resumes it at the next start.
    #[arg(long)]
    pub sandbox: bool,
    /// With --sandbox: start a new sandbox account (another portal id, 250 new contacts)
    /// instead of resuming the saved one, which is kept as data/sandbox-state.json.previous.
    #[arg(long, requires = "sandbox")]
    pub sandbox_fresh: bool,
    /// With --sandbox: the sandbox's port on 127.0.0.1 (default: any free port).
    #[arg(long, requires = "sandbox", value_name = "P")]
    pub sandbox_port: Option<u16>,
}

/// Flags of `crm-sync seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// Industry whose vocabulary to use (asked for on a terminal when absent).
    #[arg(long, value_name = "NAME")]
    pub industry: Option<String>,
    /// How many new contacts to insert (at least 1).
    #[arg(long, value_name = "N")]
    pub count: u64,
    /// Makes the generated contacts repeatable (random when absent, and printed).
    #[arg(long, value_name = "S")]
    pub rng_seed: Option<u64>,
}

/// Why a command failed; `Display` is the one line printed after `error: `.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
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
    /// Loading the vocabularies or seeding failed (unknown industries list the valid ones).
    #[error(transparent)]
    Seed(#[from] SeedError),
    /// `seed` without `--industry` and no terminal to ask on.
    #[error("missing --industry NAME; valid industries: {}", valid.join(", "))]
    MissingIndustry {
        /// Every industry the catalog has.
        valid: Vec<String>,
    },
    /// `seed --count 0`.
    #[error("--count must be at least 1")]
    InvalidCount,
    /// The interactive industry choice failed or was cancelled.
    #[error("no industry chosen ({0}); pass --industry NAME")]
    Prompt(String),
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
    /// The sandbox could not start or stopped with an error.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The HubSpot client could not be built from the settings.
    #[error("cannot set up the HubSpot client: {0}")]
    HubSpot(#[from] HubSpotError),
    /// The HTTP server stopped with an I/O error.
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// `sync` flags that make no job (the message names the valid choices).
    #[error("{0} (see crm-sync sync --help)")]
    JobSpec(#[from] SpecError),
    /// A job command failed: enqueueing, reading jobs, an unknown job id.
    #[error(transparent)]
    Jobs(#[from] CommandError),
    /// `restore` of an unknown contact, or of one HubSpot did not delete.
    #[error("{0}")]
    Restore(String),
    /// `sync --wait` followed a job that did not succeed (the line says why).
    #[error("{0}")]
    JobFailed(String),
    /// `sync --wait` followed a job that succeeded with failed records (the line counts them).
    #[error("{0}")]
    RecordsFailed(String),
    /// A `[[sync.schedules]]` entry cannot be scheduled.
    #[error("sync.schedules: {0}")]
    Schedule(#[from] ScheduleError),
    /// The job workers stopped with an error.
    #[error(transparent)]
    Workers(#[from] WorkerRuntimeError),
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
    /// `connect` without an OAuth app to install.
    #[error("{0}")]
    NoOAuthApp(String),
    /// The working directory (where `config/`, `.env` and `data/` live) is unknown.
    #[error("cannot determine the working directory: {0}")]
    WorkingDir(std::io::Error),
}

/// The exit statuses of `crm-sync sync`, shown by its `--help`.
const SYNC_EXIT_STATUS: &str = "Exit status:
  0  the job was enqueued; with --wait, it succeeded and every record went through
  1  crm-sync could not do what was asked (configuration, database, enqueueing)
  2  the command line is wrong
  3  with --wait: the job ended failed or cancelled
  4  with --wait: the job succeeded, but some records failed (`crm-sync jobs ID` lists them)";

/// Exit status of a run that failed for any reason but the two below.
pub const EXIT_ERROR: u8 = 1;
/// Exit status of `sync --wait` when the job ended `failed` or `cancelled`.
pub const EXIT_JOB_FAILED: u8 = 3;
/// Exit status of `sync --wait` when the job succeeded but some of its records failed.
pub const EXIT_RECORDS_FAILED: u8 = 4;

impl CliError {
    /// The process exit status for this error (usage errors exit 2, from clap).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::JobFailed(_) => EXIT_JOB_FAILED,
            Self::RecordsFailed(_) => EXIT_RECORDS_FAILED,
            _ => EXIT_ERROR,
        }
    }

    /// The message on one line, as `main` prints it (nested causes may contain line breaks).
    pub fn one_line(&self) -> String {
        self.to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What to do about a database error, appended to its message.
fn database_hint(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unreachable { url, .. } if url.starts_with("postgres") => {
            " — is PostgreSQL running and does the database exist? set database.url or DATABASE_URL"
        }
        StoreError::Unreachable { .. } | StoreError::CreateFolder { .. } => {
            " — is the folder writable? set database.url or DATABASE_URL"
        }
        StoreError::UnsupportedUrl { .. } => " — set database.url or DATABASE_URL",
        _ => "",
    }
}

/// Installs logging and runs one command to completion.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Keygen = cli.command {
        // Needs no configuration: it is how one makes the key a configuration lacks.
        println!("{}", crate::config::generate_encryption_key());
        return Ok(());
    }
    let dir = std::env::current_dir().map_err(CliError::WorkingDir)?;
    // `.env` first, so that a `RUST_LOG` kept there filters the logs too.
    load_dotenv(&dir)?;
    crate::telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(&dir, &args).await,
        Command::Migrate => migrate(&dir).await,
        Command::Seed(args) => seed(&dir, args).await,
        Command::Sandbox { args } => Ok(crate::sandbox::run(args).await?),
        Command::Sync(args) => sync(&dir, args).await,
        Command::Jobs(args) => jobs(&dir, args).await,
        Command::Worker => worker(&dir).await,
        Command::Connect => connect(&dir).await,
        Command::Disconnect => disconnect(&dir).await,
        Command::Restore { id } => restore(&dir, ContactId(id)).await,
        Command::Keygen => Ok(()),
    }
}

/// The data folder (generated secrets) under the working directory.
pub fn data_dir(working_dir: &Path) -> PathBuf {
    working_dir.join("data")
}

/// Connects to `database.url` and applies the migrations.
pub async fn open_store(settings: &Settings) -> Result<Store, CliError> {
    let store = Store::connect(&settings.database.url).await?;
    store.migrate().await?;
    Ok(store)
}

async fn migrate(dir: &Path) -> Result<(), CliError> {
    let settings = Settings::load_from_process(dir)?;
    let store = open_store(&settings).await?;
    // The installation id namespaces the external key push writes to HubSpot
    // (docs/security.md); shown so that an operator can tell two databases apart.
    let installation = store.installation().await?;
    println!(
        "migrated the {} database at {} (installation {})",
        store.backend(),
        store.redacted_url(),
        installation.id
    );
    store.close().await;
    Ok(())
}

async fn seed(dir: &Path, args: SeedArgs) -> Result<(), CliError> {
    if args.count == 0 {
        return Err(CliError::InvalidCount);
    }
    let settings = Settings::load_from_process(dir)?;
    let catalog = Catalog::load(dir)?;
    let name = match args.industry {
        Some(name) => name,
        None => choose_industry(&catalog).await?,
    };
    let industry = catalog.industry(&name)?;
    let store = open_store(&settings).await?;
    let rng_seed = args.rng_seed.unwrap_or_else(rand::random);
    tracing::info!(
        industry = %name,
        count = args.count,
        rng_seed,
        database = %store.redacted_url(),
        "seeding contacts"
    );
    let bar = progress_bar(args.count);
    let report = crate::seed::seed(&store, industry, args.count, rng_seed, |inserted| {
        bar.set_position(inserted)
    })
    .await;
    bar.finish_and_clear();
    let report = report?;
    println!(
        "inserted {} {name} contacts ({} generated) into the {} database at {} in {:.1}s; \
         repeat with --rng-seed {rng_seed}",
        report.inserted,
        report.generated,
        store.backend(),
        store.redacted_url(),
        report.elapsed.as_secs_f64(),
    );
    store.close().await;
    Ok(())
}

/// A bar on stderr when it is a terminal, nothing otherwise (logs and pipes stay clean).
fn progress_bar(count: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(count);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} contacts ({per_sec})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Asks for an industry on a terminal, as the original app did; without one, an error that
/// names `--industry` and lists the choices.
async fn choose_industry(catalog: &Catalog) -> Result<String, CliError> {
    let names: Vec<String> = catalog.names().into_iter().map(str::to_owned).collect();
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(CliError::MissingIndustry { valid: names });
    }
    // dialoguer blocks on the terminal; keep it off the runtime's worker threads.
    tokio::task::spawn_blocking(move || {
        let picked = dialoguer::Select::new()
            .with_prompt("Industry to seed (or pass --industry NAME)")
            .items(&names)
            .default(0)
            .interact_opt()
            .map_err(|e| CliError::Prompt(e.to_string()))?;
        picked
            .and_then(|i| names.get(i).cloned())
            .ok_or_else(|| CliError::Prompt("cancelled".into()))
    })
    .await
    .map_err(|e| CliError::Prompt(e.to_string()))?
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
];

/// The HubSpot client the settings describe: a private-app client when
/// `hubspot.access_token` is set; an OAuth client whose tokens live encrypted in the database
/// when `hubspot.client_id` and `hubspot.client_secret` are set; `None` otherwise.
pub fn hubspot_client_from_settings(
    settings: &Settings,
    store: &Store,
    cipher: Arc<TokenCipher>,
) -> Result<Option<(HubSpotClient, Option<DbTokenStore>)>, CliError> {
    let mut config = ClientConfig::new(settings.hubspot_api_base_url()?);
    config.requests_per_10s = settings.hubspot.requests_per_10s;
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
fn oauth_app_from_settings(settings: &Settings) -> Result<Option<OAuthApp>, CliError> {
    let (Some(client_id), Some(client_secret)) =
        (&settings.hubspot.client_id, &settings.hubspot.client_secret)
    else {
        return Ok(None);
    };
    let redirect_uri = settings
        .public_url()?
        .join("/oauth-callback")
        .map_err(|e| ConfigError::Invalid {
            key: "server.public_url".into(),
            problem: e.to_string(),
        })?;
    Ok(Some(OAuthApp {
        client_id: client_id.clone(),
        client_secret: client_secret.clone(),
        authorize_url: settings.hubspot_authorize_url()?,
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
) -> Result<(), CliError> {
    let Some(pinned) = settings.pinned_portal() else {
        return Ok(());
    };
    if client.oauth().is_some() {
        return Ok(());
    }
    let reached = client
        .learn_portal_id()
        .await
        .map_err(|source| CliError::PortalUnverified { pinned, source })?;
    if reached != pinned {
        return Err(CliError::PortalMismatch { pinned, reached });
    }
    Ok(())
}

/// Everything `crm-sync serve` runs, connected and bound but not yet serving, so that the
/// caller can run the API and, next to it, the workers, and stop them together.
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
    /// Loads the settings from `dir`, starts the sandbox under `--sandbox`, resolves the API
    /// token and encryption key, connects and migrates, builds the HubSpot client and binds
    /// `server.bind`.
    pub async fn build(dir: &Path, args: &ServeArgs) -> Result<Service, CliError> {
        let mut settings = Settings::load_from_process(dir)?;
        let data = data_dir(dir);
        let sandbox = if args.sandbox {
            Some(demo::start_sandbox(&mut settings, &data, args).await?)
        } else {
            None
        };
        let (token, token_origin) = resolve_api_token(&settings, &data)?;
        let token_cipher = token_cipher(&settings, &data)?;
        let store = open_store(&settings).await?;
        let demo_auth = match &sandbox {
            Some(sandbox) => Some(demo::choose_auth(&mut settings, &store, sandbox).await?),
            None => None,
        };
        let state = AppState::new(store, token)
            .with_cors_origins(settings.cors_allowed_origins()?)
            .with_trusted_proxies(settings.trusted_proxies()?);
        let state = state.with_oauth(OAuthSettings {
            client_id: settings.hubspot.client_id.clone(),
            client_secret: settings.hubspot.client_secret.clone(),
            public_url: settings.public_url()?,
            authorize_url: settings.hubspot_authorize_url()?,
            portal_id: settings.pinned_portal(),
        });
        let built = hubspot_client_from_settings(&settings, &state.store, token_cipher.clone())?;
        let (state, hubspot) = match built {
            Some((client, tokens)) => {
                check_pinned_account(&settings, &client).await?;
                let metrics_client = client.clone();
                state.metrics.register(Arc::new(move |out: &mut String| {
                    metrics_client.metrics().render_prometheus(out)
                }));
                (state.with_hubspot(client.clone(), tokens), Some(client))
            }
            None => (state, None),
        };
        let addr = settings.bind_addr()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| CliError::Bind { addr, source })?;
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
        let public = self.settings.server.public_url.trim_end_matches('/');
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
            Err(_) => self.settings.server.public_url.clone(),
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
}

/// `crm-sync serve`: builds the [`Service`], serves the API and runs the job workers and the
/// scheduler next to it until SIGINT/SIGTERM, then stops the sandbox and closes the database.
async fn serve(dir: &Path, args: &ServeArgs) -> Result<(), CliError> {
    let service = Service::build(dir, args).await?;
    println!("{}", service.start_line());
    if let Some(line) = service.sandbox_line() {
        println!("{line}");
    }
    let schedules = Schedule::all_from(&service.settings)?;
    let runner = runner_for(&service.settings, service.hubspot.clone())?;
    let Service {
        settings,
        state,
        listener,
        sandbox,
        connect_sandbox,
        ..
    } = service;
    let addr = listener.local_addr().map_err(CliError::Serve)?;
    let state = state.with_schedules(schedules.clone());
    state
        .metrics
        .register(Arc::new(crate::jobs::metrics::render));
    let config = WorkerConfig {
        role: "serve".to_owned(),
        ..WorkerConfig::default()
    };
    let pruner = crate::jobs::retention::spawn(state.store.clone(), settings.retention.clone());
    // Each side listens for the signal itself, so one SIGTERM stops both.
    let (api, workers) = tokio::join!(
        crate::api::serve(listener, state.clone(), crate::api::shutdown_signal()),
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
                crate::jobs::worker::shutdown_signal(),
            )
            .await
        },
    );
    pruner.abort();
    if let Some(sandbox) = sandbox {
        sandbox.shutdown().await?;
    }
    state.store.close().await;
    api.map_err(CliError::Serve)?;
    Ok(workers?)
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

/// `crm-sync connect`: prints a one-time install link. Its state is not bound to a browser
/// (the operator may open the link anywhere) but is single-use and expires like the install
/// page's; only someone who can write to the database can issue one.
async fn connect(dir: &Path) -> Result<(), CliError> {
    let settings = Settings::load_from_process(dir)?;
    if settings.hubspot.access_token.is_some() {
        return Err(CliError::NoOAuthApp(
            "hubspot.access_token is set, so there is no app to install: the private-app \
             token already connects the service (remove it to connect through OAuth)"
                .to_owned(),
        ));
    }
    let Some(app) = oauth_app_from_settings(&settings)? else {
        return Err(CliError::NoOAuthApp(
            "set hubspot.client_id and hubspot.client_secret (CRM_SYNC__HUBSPOT__CLIENT_ID, \
             CRM_SYNC__HUBSPOT__CLIENT_SECRET) to the OAuth app's credentials first"
                .to_owned(),
        ));
    };
    let store = open_store(&settings).await?;
    let outcome = print_install_link(&settings, &store, app).await;
    store.close().await;
    outcome
}

async fn print_install_link(
    settings: &Settings,
    store: &Store,
    app: OAuthApp,
) -> Result<(), CliError> {
    // Only the link is needed: no tokens are read or written here.
    let client = HubSpotClient::new(
        ClientConfig::new(settings.hubspot_api_base_url()?),
        Auth::OAuth {
            app,
            tokens: Arc::new(MemoryTokenStore::default()),
        },
    )?;
    let pinned = crate::oauth::account::pinned_account(store, settings.pinned_portal()).await?;
    let link = install_link(store, &client, LinkFor::Anyone)
        .await
        .map_err(|e| match e {
            LinkError::Store(e) => CliError::from(e),
            LinkError::HubSpot(e) => CliError::from(e),
        })?;
    if let Some(pinned) = pinned {
        println!(
            "This service is tied to {pinned}; installing in another account is refused \
             ({}).",
            pinned.remedy()
        );
    }
    println!(
        "Open this link to connect HubSpot; it works once, within {} minutes:",
        crate::oauth::state::STATE_LIFETIME.as_secs() / 60
    );
    println!("{link}");
    Ok(())
}

/// `crm-sync disconnect`: removes the stored HubSpot connection.
async fn disconnect(dir: &Path) -> Result<(), CliError> {
    let settings = Settings::load_from_process(dir)?;
    let store = open_store(&settings).await?;
    let removed = crate::oauth::disconnect(&store).await;
    store.close().await;
    let removed = removed?;
    if removed.is_empty() {
        println!("no HubSpot account was connected");
    } else {
        let ids: Vec<String> = removed.iter().map(ToString::to_string).collect();
        println!(
            "disconnected HubSpot account {}: its stored tokens were removed; run crm-sync \
             connect to connect an account",
            ids.join(", ")
        );
    }
    Ok(())
}

/// `crm-sync sync push|pull`: enqueues with trigger `cli`; with `--wait`, follows the job and
/// fails unless it succeeded.
async fn sync(dir: &Path, args: SyncArgs) -> Result<(), CliError> {
    let spec = args.spec()?;
    let settings = Settings::load_from_process(dir)?;
    let store = open_store(&settings).await?;
    let mut out = std::io::stdout();
    let outcome = crate::jobs::commands::sync(&store, spec, args.force, args.wait, &mut out).await;
    store.close().await;
    let outcome = outcome?;
    match outcome.failure() {
        Some((JobShortfall::JobFailed, line)) => Err(CliError::JobFailed(line)),
        Some((JobShortfall::RecordsFailed, line)) => Err(CliError::RecordsFailed(line)),
        None => Ok(()),
    }
}

/// `crm-sync restore ID`: the user's restore of a contact HubSpot deleted.
async fn restore(dir: &Path, id: ContactId) -> Result<(), CliError> {
    let settings = Settings::load_from_process(dir)?;
    let store = open_store(&settings).await?;
    let restored = store.restore_contact(id).await;
    store.close().await;
    match restored? {
        Restore::Restored(contact) => {
            println!(
                "restored contact {} ({}); the next push creates it in HubSpot again",
                contact.id,
                contact.email.as_deref().unwrap_or("no email")
            );
            Ok(())
        }
        Restore::NotTombstoned(_) => Err(CliError::Restore(format!(
            "contact {id} is not marked deleted in HubSpot; nothing to restore"
        ))),
        Restore::Unknown => Err(CliError::Restore(format!("no contact with id {id}"))),
    }
}

/// `crm-sync jobs [ID]`.
async fn jobs(dir: &Path, args: JobsArgs) -> Result<(), CliError> {
    let settings = Settings::load_from_process(dir)?;
    let store = open_store(&settings).await?;
    let mut out = std::io::stdout();
    let shown = crate::jobs::commands::jobs(&store, args.id.as_deref(), args.limit, &mut out).await;
    store.close().await;
    Ok(shown?)
}

/// `crm-sync worker`: the job workers and the schedulers until SIGINT/SIGTERM; running jobs
/// stop at a page boundary and go back to the queue.
async fn worker(dir: &Path) -> Result<(), CliError> {
    let settings = Settings::load_from_process(dir)?;
    let schedules = Schedule::all_from(&settings)?;
    // Before connecting: a missing key is a configuration error, whatever the database says.
    let cipher = token_cipher(&settings, &data_dir(dir))?;
    let store = open_store(&settings).await?;
    let runner = job_runner(&settings, &store, cipher).await?;
    tracing::info!(
        database = %store.redacted_url(),
        schedules = schedules.len(),
        "crm-sync worker started"
    );
    let config = WorkerConfig {
        role: "worker".to_owned(),
        ..WorkerConfig::default()
    };
    let pruner = crate::jobs::retention::spawn(store.clone(), settings.retention.clone());
    let ran = crate::jobs::run_workers(
        store.clone(),
        runner,
        schedules,
        config,
        crate::jobs::worker::shutdown_signal(),
    )
    .await;
    pruner.abort();
    store.close().await;
    Ok(ran?)
}

/// The runner that workers hand jobs to: the sync engine, built from the settings (the same
/// runner serves `serve` and `worker`).
pub async fn job_runner(
    settings: &Settings,
    store: &Store,
    cipher: Arc<TokenCipher>,
) -> Result<Arc<dyn JobRunner>, CliError> {
    let client = hubspot_client_from_settings(settings, store, cipher)?.map(|(client, _)| client);
    if let Some(client) = &client {
        check_pinned_account(settings, client).await?;
    }
    runner_for(settings, client)
}

/// The cipher for HubSpot tokens at rest: `security.encryption_key` (or on SQLite the key
/// generated into `data_dir`) plus the previous keys still accepted for opening.
pub fn token_cipher(settings: &Settings, data_dir: &Path) -> Result<Arc<TokenCipher>, CliError> {
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
) -> Result<Arc<dyn JobRunner>, CliError> {
    Ok(match client {
        Some(client) => {
            learn_portal_in_background(&client);
            Arc::new(SyncRunner::new(sync_context(settings, client)?))
        }
        None => Arc::new(HubSpotNotConfigured),
    })
}

/// What the sync engine runs with: `client` and the `sync.*` tunables of `settings`.
pub fn sync_context(settings: &Settings, client: HubSpotClient) -> Result<SyncContext, CliError> {
    let mut ctx = SyncContext::new(client);
    ctx.pull.lookback = settings.pull_lookback()?;
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
            Err(crate::jobs::runner::RunError::Fatal(
                "HubSpot is not configured: set hubspot.access_token (a private-app token), or \
                 hubspot.client_id and hubspot.client_secret and install the app at /api/install"
                    .to_owned(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            ClientConfig::new(settings.hubspot_api_base_url().expect("url")),
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
             crm.schemas.contacts.read crm.schemas.contacts.write"
        );
        assert!(!query.contains_key("optional_scope"));
    }
}
