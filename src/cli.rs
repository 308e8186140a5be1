//! The `crm-sync` commands (INTERFACE §1): one [`Command`] variant and one match arm in [`run`]
//! per subcommand. `main.rs` only parses, runs and reports the error.
//!
//! Every failure is a [`CliError`] whose message is one actionable line: what went wrong,
//! naming the configuration key or flag at fault, and what to do about it.

use std::io::IsTerminal as _;
use std::num::NonZeroU64;
use std::path::Path;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, Settings, load_dotenv};
use crate::hubspot::{Auth, ClientConfig, HubSpotClient, HubSpotError, MemoryTokenStore, OAuthApp};
use crate::ids::ContactId;
use crate::jobs::commands::{
    CommandError, JobShortfall, JobsArgs, SyncArgs, SyncFlagsError, SyncRequest,
};
use crate::oauth::install::{LinkError, LinkFor, install_link};
use crate::sandbox::{SandboxArgs, SandboxError};
use crate::seed::{Catalog, SeedError};
use crate::startup::{
    DemoSandbox, Service, StartupError, database_hint, oauth_app_from_settings,
    open_existing_store, open_store,
};
use crate::store::{Restore, Store, StoreError};
use crate::telemetry::LogFormat;

/// `crm-sync`: keeps a product database's contacts in sync with HubSpot.
#[derive(Debug, Parser)]
#[command(
    name = "crm-sync",
    version,
    about,
    propagate_version = true,
    after_help = LOG_FORMAT_HELP
)]
pub struct Cli {
    /// Format of the log lines on stderr (see the help's last lines).
    // Global, so that `crm-sync serve --log-format json` works as well as
    // `crm-sync --log-format json serve`; hidden, because clap would repeat a global flag in
    // every subcommand's help: the top-level help describes it once instead.
    #[arg(long, global = true, hide = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level help's description of `--log-format`, the one flag every command takes.
const LOG_FORMAT_HELP: &str = "Every command also takes:
      --log-format <text|json>  Format of the log lines on stderr, before or after the command
                                (filter them with RUST_LOG) [default: text]";

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
    /// Enqueue a push or pull job; with --wait, follow it and print its counts (--job ID
    /// follows a job already enqueued).
    #[command(after_help = SYNC_EXIT_STATUS)]
    Sync(SyncArgs),
    /// List recent jobs, or show one.
    Jobs(JobsArgs),
    /// Cancel a queued, running or retrying job (a running one stops at its next page).
    #[command(after_help = CANCEL_EXIT_STATUS)]
    Cancel {
        /// The job's id (see `crm-sync jobs`).
        id: String,
    },
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
        #[arg(allow_negative_numbers = true, value_parser = crate::args::positive_id)]
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
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        value_parser = crate::args::positive_number
    )]
    pub count: NonZeroU64,
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
    /// The interactive industry choice failed or was cancelled.
    #[error("no industry chosen ({0}); pass --industry NAME")]
    Prompt(String),
    /// The sandbox could not start or stopped with an error.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The HubSpot client could not be built from the settings.
    #[error("cannot set up the HubSpot client: {0}")]
    HubSpot(#[from] HubSpotError),
    /// `sync` flags that make no job (the message names the valid choices).
    #[error("{0} (see crm-sync sync --help)")]
    JobSpec(#[from] SyncFlagsError),
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
    /// `sync --wait --timeout` gave up waiting; the job keeps going (the line names it).
    #[error("{0}")]
    TimedOut(String),
    /// `connect` without an OAuth app to install.
    #[error("{0}")]
    NoOAuthApp(String),
    /// Building or running the service failed.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// The working directory (where `config/`, `.env` and `data/` live) is unknown.
    #[error("cannot determine the working directory: {0}")]
    WorkingDir(std::io::Error),
}

/// The exit statuses of `crm-sync sync`, shown by its `--help`.
const SYNC_EXIT_STATUS: &str = "Exit status:
  0  the job was enqueued; with --wait or --job, it succeeded and every record went through
  1  crm-sync could not do what was asked (configuration, database, enqueueing)
  2  the command line is wrong
  3  with --wait or --job: the job ended failed or cancelled
  4  with --wait or --job: the job succeeded, but some records failed (`crm-sync jobs ID` lists
     them)
  5  with --timeout: the time was up while the job was still queued, running or retrying
     (it keeps going; nothing was cancelled)";

/// The exit statuses of `crm-sync cancel`, shown by its `--help`.
const CANCEL_EXIT_STATUS: &str = "Exit status:
  0  the job was cancelled
  1  crm-sync could not do what was asked (no such job, configuration, database)
  2  the command line is wrong
  6  the job had already ended (succeeded, failed or cancelled); nothing was changed";

/// Exit status of a run that failed for any reason but those below (usage errors exit 2).
pub const EXIT_ERROR: u8 = 1;
/// Exit status of `sync --wait` when the job ended `failed` or `cancelled`.
pub const EXIT_JOB_FAILED: u8 = 3;
/// Exit status of `sync --wait` when the job succeeded but some of its records failed.
pub const EXIT_RECORDS_FAILED: u8 = 4;
/// Exit status of `sync --wait --timeout` when the time was up before the job ended.
pub const EXIT_TIMED_OUT: u8 = 5;
/// Exit status of `cancel` when the job had already ended.
pub const EXIT_ALREADY_FINISHED: u8 = 6;

impl CliError {
    /// The process exit status for this error (usage errors exit 2, from clap).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::JobFailed(_) => EXIT_JOB_FAILED,
            Self::RecordsFailed(_) => EXIT_RECORDS_FAILED,
            Self::TimedOut(_) => EXIT_TIMED_OUT,
            Self::Jobs(CommandError::AlreadyFinished(_)) => EXIT_ALREADY_FINISHED,
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

/// Installs logging and runs one command to completion.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Keygen = cli.command {
        // Needs no configuration: it is how one makes the key a configuration lacks.
        println!("{}", crate::secret_files::generate_encryption_key());
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
        Command::Cancel { id } => cancel(&dir, &id).await,
        Command::Worker => Ok(crate::startup::run_worker(&dir).await?),
        Command::Connect => connect(&dir).await,
        Command::Disconnect => disconnect(&dir).await,
        Command::Restore { id } => restore(&dir, ContactId(id)).await,
        Command::Keygen => Ok(()),
    }
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
    let count = args.count.get();
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
        count,
        rng_seed,
        database = %store.redacted_url(),
        "seeding contacts"
    );
    let bar = progress_bar(count);
    let report = crate::seed::seed(&store, industry, count, rng_seed, |inserted| {
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
    println!(
        "added {} {name} companies; {} contacts linked to their company by email domain",
        report.companies_inserted, report.contacts_linked,
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

/// `crm-sync serve`: builds the [`Service`], prints where it listens, and runs it until
/// SIGINT/SIGTERM.
async fn serve(dir: &Path, args: &ServeArgs) -> Result<(), CliError> {
    let demo = args.sandbox.then_some(DemoSandbox {
        fresh: args.sandbox_fresh,
        port: args.sandbox_port,
    });
    let service = Service::build(dir, demo).await?;
    println!("{}", service.start_line());
    if let Some(line) = service.sandbox_line() {
        println!("{line}");
    }
    Ok(service.run().await?)
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
    // The link's state must land in the database `serve` uses, never in a new one.
    let store = open_existing_store(&settings).await?;
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
        ClientConfig::new(settings.hubspot.api_base_url.clone()),
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
    let store = open_existing_store(&settings).await?;
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
/// fails unless it succeeded. `sync --job ID` follows an existing job and, like every command
/// that only reads, never creates or migrates a database.
async fn sync(dir: &Path, args: SyncArgs) -> Result<(), CliError> {
    let request = args.request()?;
    let settings = Settings::load_from_process(dir)?;
    let mut out = std::io::stdout();
    let outcome = match request {
        SyncRequest::Enqueue { spec, force, wait } => {
            let store = open_store(&settings).await?;
            // A job the workers would refuse to start is not worth enqueueing.
            crate::startup::checked_mappings(&settings, &store).await?;
            let outcome =
                crate::jobs::commands::sync(&store, spec, force, wait, args.timeout, &mut out)
                    .await;
            store.close().await;
            outcome
        }
        SyncRequest::Follow(id) => {
            let store = open_existing_store(&settings).await?;
            let outcome =
                crate::jobs::commands::follow_existing(&store, &id, args.timeout, &mut out).await;
            store.close().await;
            outcome
        }
    }?;
    match outcome.failure() {
        Some((JobShortfall::JobFailed, line)) => Err(CliError::JobFailed(line)),
        Some((JobShortfall::RecordsFailed, line)) => Err(CliError::RecordsFailed(line)),
        Some((JobShortfall::TimedOut, line)) => Err(CliError::TimedOut(line)),
        None => Ok(()),
    }
}

/// `crm-sync cancel ID`: the CLI's `POST /api/jobs/{id}/cancel`.
async fn cancel(dir: &Path, id: &str) -> Result<(), CliError> {
    let settings = Settings::load_from_process(dir)?;
    let store = open_existing_store(&settings).await?;
    let mut out = std::io::stdout();
    let cancelled = crate::jobs::commands::cancel(&store, id, &mut out).await;
    store.close().await;
    cancelled?;
    Ok(())
}

/// `crm-sync restore ID`: the user's restore of a contact HubSpot deleted.
async fn restore(dir: &Path, id: ContactId) -> Result<(), CliError> {
    let settings = Settings::load_from_process(dir)?;
    let store = open_existing_store(&settings).await?;
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
    let store = open_existing_store(&settings).await?;
    let mut out = std::io::stdout();
    let shown = crate::jobs::commands::jobs(&store, args.id.as_deref(), args.limit, &mut out).await;
    store.close().await;
    Ok(shown?)
}
