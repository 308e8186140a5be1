//! A faithful offline HubSpot: OAuth, CRM v3 contacts and companies (list, single, batch,
//! search, merge), v4 associations between them, their properties and property groups,
//! account info, HubSpot's rate limits and error bodies,
//! seeded fault injection, v3-signed webhooks, and admin endpoints under `/_sandbox/`.
//!
//! `crm-sync sandbox` runs it alone ([`run`]); `crm-sync serve --sandbox` and the tests run
//! it in-process ([`Sandbox::start`]).
//!
//! It shares no code with crm-sync's HubSpot client (it is what that client is tested
//! against, so it must not share the client's assumptions) and depends on nothing else of
//! crm-sync. Where HubSpot's documentation leaves a behaviour open, [`Variants`] plays each
//! documented answer.
//!
//! ```
//! use crm_sync_sandbox::{Sandbox, SandboxArgs};
//! use std::collections::BTreeMap;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sandbox = Sandbox::start(SandboxArgs::default(), "127.0.0.1:0".parse()?).await?;
//! let email = BTreeMap::from([("email".to_owned(), "ada@example.com".to_owned())]);
//! let ids = sandbox.insert_contacts(vec![email]);
//! // Any HTTP client reaches it as it would reach HubSpot.
//! let url = format!("{}/crm/v3/objects/contacts/{}", sandbox.base_url(), ids[0]);
//! let contact: serde_json::Value = reqwest::Client::new()
//!     .get(url)
//!     .bearer_auth(sandbox.access_token())
//!     .send()
//!     .await?
//!     .json()
//!     .await?;
//! assert_eq!(contact["properties"]["email"], "ada@example.com");
//! # Ok(())
//! # }
//! ```

mod admin;
mod api;
mod assoc_api;
mod associations;
mod clock;
mod conn;
mod credential;
mod crm;
mod errors;
mod faults;
mod limits;
mod oauth;
mod objects;
mod persist;
mod properties;
mod routes;
mod search;
mod seed;
mod server;
mod state;
mod store;
mod variants;
mod webhooks;
mod wire;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::credential::Credential;
use persist::{Origin, StartMode};
use server::SandboxEndpoint;
use state::Persist;
use state::{Config, State, Stats, lock};

pub use variants::{
    CompanyVariants, ConflictReport, DomainLookup, EmptyValues, HubSpotProfile, MergeIds,
    MissingIds, PrimaryLabel, ResultOrder, SearchModified, ValidationReport, Variants,
    VariantsPatch,
};
pub use webhooks::{USER_HEADER, sign_v3};

/// The app id the sandbox's OAuth app reports (webhook events, token metadata).
pub const SANDBOX_APP_ID: i64 = 4_000_001;

/// The flags of `crm-sync sandbox` (INTERFACE §5).
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Listen port on 127.0.0.1.
    #[arg(long, default_value_t = 3002)]
    pub port: u16,
    /// A private-app token it accepts (generated and printed when absent).
    #[arg(long)]
    pub access_token: Option<String>,
    /// The OAuth app's client id (generated and printed when absent).
    #[arg(long)]
    pub client_id: Option<String>,
    /// The OAuth app's client secret (generated and printed when absent).
    #[arg(long)]
    pub client_secret: Option<String>,
    /// OAuth access-token lifetime in seconds.
    #[arg(long, default_value_t = 1800)]
    pub token_lifetime_secs: u64,
    /// Requests per rolling 10 seconds per app; 0 turns the limit off.
    #[arg(long, default_value_t = 100)]
    pub requests_per_10s: u32,
    /// Search requests per second per token; 0 turns the limit off.
    #[arg(long, default_value_t = 5)]
    pub search_per_second: u32,
    /// Batch associations requests per rolling 10 seconds per app (a budget of their own);
    /// 0 turns the limit off.
    #[arg(long, default_value_t = 100)]
    pub associations_per_10s: u32,
    /// HubSpot's account setting "Create and associate companies with contacts": a contact
    /// created or changed with an email domain is associated with the company of that domain
    /// (created when none exists), unless it has a company already.
    #[arg(long)]
    pub auto_associate_companies: bool,
    /// Generated contacts a new account starts with (a resumed one has its own).
    #[arg(long, default_value_t = 0)]
    pub contacts: usize,
    /// Probability (0..1) that a request fails with a 5xx before anything is applied.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_5xx: f64,
    /// Probability (0..1) that a write is applied and then the connection is dropped.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_drop_after_write: f64,
    /// Probability (0..1) that a read (get, list, batch read, search) is answered by dropping
    /// the connection.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub fault_drop_read: f64,
    /// The first N writes that are applied lose their answer (the connection is reset), on top
    /// of what the dice decide: a floor of lost answers that does not depend on the order in
    /// which concurrent requests arrive. Draws no dice, so the seeded sequence is unchanged.
    #[arg(long, default_value_t = 0)]
    pub fault_drop_first_writes: u64,
    /// Milliseconds added to every answer.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Seed that makes contacts and faults repeatable (random when absent, and printed).
    #[arg(long)]
    pub rng_seed: Option<u64>,
    /// Where to POST v3-signed webhook events when contacts change.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// How long a write takes to show up in search, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub search_delay_ms: u64,
    /// The account id it reports.
    #[arg(long, default_value_t = 1_000_001)]
    pub portal_id: i64,
    /// Keep the account (contacts, properties, OAuth app, tokens, portal id) in this file and
    /// resume it at the next start; without it, everything is forgotten at exit.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// With --state-file: start a new account with another portal id instead of resuming
    /// (the old file is kept as PATH.previous).
    #[arg(long, requires = "state_file")]
    pub fresh: bool,
    /// The flag that starts a new account, named when the state file is unreadable
    /// (`serve --sandbox` calls it `--sandbox-fresh`).
    #[arg(skip = "--fresh")]
    pub fresh_flag: &'static str,
    /// How it answers where HubSpot's behaviour has documented variants.
    #[command(flatten)]
    pub variants: Variants,
    /// How it answers where HubSpot's behaviour about companies and associations has
    /// documented variants.
    #[command(flatten)]
    pub company_variants: CompanyVariants,
}

impl Default for SandboxArgs {
    fn default() -> Self {
        Self {
            port: 3002,
            access_token: None,
            client_id: None,
            client_secret: None,
            token_lifetime_secs: 1800,
            requests_per_10s: 100,
            search_per_second: 5,
            associations_per_10s: 100,
            auto_associate_companies: false,
            contacts: 0,
            fault_5xx: 0.0,
            fault_drop_after_write: 0.0,
            fault_drop_read: 0.0,
            fault_drop_first_writes: 0,
            latency_ms: 0,
            rng_seed: None,
            webhook_url: None,
            search_delay_ms: 0,
            portal_id: 1_000_001,
            state_file: None,
            fresh: false,
            fresh_flag: "--fresh",
            variants: Variants::default(),
            company_variants: CompanyVariants::default(),
        }
    }
}

impl SandboxArgs {
    /// These flags with the given variants (e.g. `HubSpotProfile::variants()`).
    pub fn with_variants(mut self, variants: Variants) -> Self {
        self.variants = variants;
        self
    }

    /// These flags with every variant of `profile`, those about companies and associations
    /// included.
    pub fn with_profile(mut self, profile: HubSpotProfile) -> Self {
        self.variants = profile.variants();
        self.company_variants = profile.company_variants();
        self
    }

    fn start_mode(&self) -> StartMode {
        if self.fresh {
            StartMode::Fresh
        } else {
            StartMode::Resume
        }
    }
}

fn parse_probability(raw: &str) -> Result<f64, String> {
    let p: f64 = raw
        .parse()
        .map_err(|_| format!("'{raw}' is not a number"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability between 0 and 1"))
    }
}

/// Why the sandbox could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A flag value is unusable.
    #[error("invalid sandbox setting: {0}")]
    InvalidArgs(String),
    /// The server stopped with an I/O error.
    #[error("sandbox server failed: {0}")]
    Server(#[from] std::io::Error),
    /// The state file exists but cannot be resumed (never silently replaced by an empty one).
    #[error(
        "cannot resume the sandbox from its state file {}: {problem} — repair or move the file, \
         or start a new sandbox account with {fresh_flag}",
        path.display()
    )]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// The flag that starts a new account.
        fresh_flag: &'static str,
    },
    /// The state file cannot be written.
    #[error("cannot write the sandbox's state file {}: {source}", path.display())]
    StateWrite {
        /// The state file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// A contact as the sandbox holds it (for tests and demos).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxContact {
    /// Record id.
    pub id: String,
    /// Property values.
    pub properties: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Archived flag.
    pub archived: bool,
}

impl SandboxContact {
    fn from_store(c: &store::Record) -> Self {
        let at = |ms: i64| Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
        Self {
            id: c.id.to_string(),
            properties: c.properties.clone(),
            created_at: at(c.created_ms),
            updated_at: at(c.updated_ms),
            archived: c.archived_ms.is_some(),
        }
    }

    /// The email, when set.
    pub fn email(&self) -> Option<&str> {
        self.properties.get("email").map(String::as_str)
    }
}

/// A company as the sandbox holds it (for tests and demos).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCompany {
    /// Record id.
    pub id: String,
    /// Property values.
    pub properties: BTreeMap<String, String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl SandboxCompany {
    fn from_store(c: &store::Record) -> Self {
        let at = |ms: i64| Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
        Self {
            id: c.id.to_string(),
            properties: c.properties.clone(),
            created_at: at(c.created_ms),
            updated_at: at(c.updated_ms),
        }
    }

    /// The `domain`, when set.
    pub fn domain(&self) -> Option<&str> {
        self.properties.get("domain").map(String::as_str)
    }

    /// The `name`, when set.
    pub fn name(&self) -> Option<&str> {
        self.properties.get("name").map(String::as_str)
    }
}

/// A record on the other side of an association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxAssociation {
    /// The associated record's id.
    pub id: String,
    /// Whether it is the contact's primary company (types 1 / 2).
    pub primary: bool,
}

/// A request the sandbox received while recording (conformance tests validate these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Counters of a running sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStats {
    /// Requests served.
    pub requests: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Injected 5xx answers.
    pub faults_5xx: u64,
    /// Connections dropped after a write.
    pub dropped_after_write: u64,
    /// Reads answered by dropping the connection.
    pub dropped_reads: u64,
    /// Requests per operation (`contacts.batch_create`, ...).
    pub by_operation: BTreeMap<String, u64>,
    /// Webhook events delivered.
    pub webhook_events_delivered: u64,
}

/// The HubSpot sandbox.
pub struct Sandbox;

impl Sandbox {
    /// Starts on the given address (port 0 = any free port) in the current tokio runtime.
    pub async fn start(args: SandboxArgs, bind: SocketAddr) -> Result<SandboxHandle, SandboxError> {
        for (name, p) in [
            ("fault-5xx", args.fault_5xx),
            ("fault-drop-after-write", args.fault_drop_after_write),
            ("fault-drop-read", args.fault_drop_read),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(SandboxError::InvalidArgs(format!(
                    "--{name} must be between 0 and 1, got {p}"
                )));
            }
        }
        if let Some(url) = &args.webhook_url {
            url::Url::parse(url)
                .map_err(|e| SandboxError::InvalidArgs(format!("--webhook-url {url}: {e}")))?;
        }
        // Bound before the state file is touched: a fresh start moves the old file aside,
        // which must not happen for a start that then fails.
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| SandboxError::Bind { addr: bind, source })?;
        let addr = listener.local_addr()?;
        let origin = match &args.state_file {
            Some(path) => persist::open(path, args.start_mode(), args.portal_id, args.fresh_flag)?,
            None => Origin::New {
                portal_id: args.portal_id,
            },
        };
        let resumed = matches!(origin, Origin::Resumed(_));
        let state = Arc::new(build_state(&args, origin));
        // A resumed account has its contacts; seeding again would add strangers.
        if args.contacts > 0 && !resumed {
            admin::seed(&state, args.contacts);
        }
        // A new account is on disk before the first answer, so that even a crash right
        // after start resumes the same portal and credentials; and the file says the sandbox
        // is running, so that a crash from now on moves the id counters on at the next start.
        let first = state.clone();
        tokio::task::spawn_blocking(move || persist::save(&first, persist::SaveAt::Start))
            .await
            .map_err(std::io::Error::other)??;
        let (saver_stop, saver_rx) = oneshot::channel::<()>();
        let saver = tokio::spawn(persist::keep_saved(state.clone(), saver_rx));
        let acceptor = conn::KillableAcceptor::new(listener, state.connections.clone())?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let endpoint = SandboxEndpoint {
            state: state.clone(),
        };
        let task = tokio::spawn(async move {
            poem::Server::new_with_acceptor(acceptor)
                .run_with_graceful_shutdown(
                    endpoint,
                    async {
                        let _ = stop_rx.await;
                    },
                    Some(Duration::from_secs(2)),
                )
                .await
        });
        Ok(SandboxHandle {
            state,
            addr,
            resumed,
            stop: Some(stop_tx),
            task: Some(task),
            saver_stop: Some(saver_stop),
            saver: Some(saver),
        })
    }
}

/// The account of a new sandbox: from the flags, generated where they are absent.
fn new_account(args: &SandboxArgs, portal_id: i64) -> persist::Account {
    persist::Account {
        portal_id,
        access_token: args
            .access_token
            .clone()
            .unwrap_or_else(|| format!("pat-na1-{}", errors::uuid_v4())),
        client_id: args.client_id.clone().unwrap_or_else(errors::uuid_v4),
        client_secret: args.client_secret.clone().unwrap_or_else(errors::uuid_v4),
        rng_seed: args.rng_seed.unwrap_or_else(rand::random),
        generated: 0,
    }
}

/// The parts of a sandbox that outlive a restart, new or read back.
struct Kept {
    account: persist::Account,
    store: crm::Crm,
    tokens: oauth::Tokens,
    variants: Variants,
    company_variants: CompanyVariants,
}

impl Kept {
    /// A resumed account keeps its identity and variants; the flags for those apply to new
    /// accounts only (changing them under a client would not be a restart but another account).
    fn from_origin(args: &SandboxArgs, origin: Origin) -> Self {
        match origin {
            Origin::New { portal_id } => Self {
                account: new_account(args, portal_id),
                store: crm::Crm::new(args.search_delay_ms),
                tokens: oauth::Tokens::default(),
                variants: args.variants,
                company_variants: args.company_variants,
            },
            Origin::Resumed(snapshot) => {
                let snapshot = *snapshot;
                let mut store = persist::Snapshot::crm(
                    snapshot.store,
                    snapshot.companies,
                    snapshot.associations,
                    args.search_delay_ms,
                );
                if !snapshot.stopped_cleanly {
                    // The last moments before a crash may have issued ids the file does not
                    // hold, and a client may hold them: never issue them again.
                    store.contacts.skip_ids(persist::CRASH_ID_GAP);
                    store.companies.skip_ids(persist::CRASH_ID_GAP);
                    tracing::warn!(
                        gap = persist::CRASH_ID_GAP,
                        "the sandbox did not stop cleanly last time: changes of its last moment \
                         may be lost, as after a restore from backup; new ids skip ahead so that \
                         none a client holds is issued again"
                    );
                }
                Self {
                    account: snapshot.account,
                    store,
                    tokens: snapshot.oauth,
                    variants: snapshot.variants,
                    company_variants: snapshot.company_variants,
                }
            }
        }
    }
}

fn build_state(args: &SandboxArgs, origin: Origin) -> State {
    let persist = args.state_file.clone().map(|path| match origin {
        // The file holds exactly this state: nothing to write until it changes.
        Origin::Resumed(_) => Persist::saved(path),
        Origin::New { .. } => Persist::new(path),
    });
    let Kept {
        account,
        store,
        tokens,
        variants,
        company_variants,
    } = Kept::from_origin(args, origin);
    let rng_seed = account.rng_seed;
    let client_id = account.client_id;
    let client_secret = Credential::new(account.client_secret);
    let cfg = Config {
        portal_id: account.portal_id,
        access_token: Credential::new(account.access_token),
        client_id: client_id.clone(),
        client_secret: client_secret.clone(),
        latency: Duration::from_millis(args.latency_ms),
        rng_seed,
        search_delay_ms: args.search_delay_ms,
    };
    let webhooks = args.webhook_url.clone().map(|url| {
        webhooks::Webhooks::start(url, client_secret.clone(), cfg.portal_id, SANDBOX_APP_ID)
    });
    State {
        store: Mutex::new(store),
        auto_associate: std::sync::atomic::AtomicBool::new(args.auto_associate_companies),
        oauth: oauth::OAuthApp::new(
            client_id,
            client_secret,
            args.token_lifetime_secs,
            cfg.portal_id,
            SANDBOX_APP_ID,
        )
        .with_tokens(tokens),
        limits: limits::Limits::new(
            args.requests_per_10s,
            args.search_per_second,
            args.associations_per_10s,
        ),
        faults: faults::Faults::new(
            args.fault_5xx,
            args.fault_drop_after_write,
            args.fault_drop_read,
            rng_seed,
        )
        .dropping_first_writes(args.fault_drop_first_writes),
        webhooks,
        connections: conn::Connections::default(),
        stats: Stats::default(),
        recorder: Mutex::new(None),
        generator: Mutex::new(seed::ContactGenerator::resumed(rng_seed, account.generated)),
        variants: Mutex::new(variants),
        company_variants: Mutex::new(company_variants),
        shuffler: variants::Shuffler::new(rng_seed),
        persist,
        cfg,
    }
}

/// A running sandbox.
pub struct SandboxHandle {
    state: Arc<State>,
    addr: SocketAddr,
    resumed: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    saver_stop: Option<oneshot::Sender<()>>,
    saver: Option<JoinHandle<()>>,
}

impl SandboxHandle {
    /// `http://127.0.0.1:<port>`: the base for every HubSpot path (as `https://api.hubapi.com`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The authorize page (as `https://app.hubspot.com/oauth/authorize`).
    pub fn authorize_url(&self) -> String {
        format!("{}/oauth/authorize", self.base_url())
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The private-app token it accepts.
    pub fn access_token(&self) -> &str {
        self.state.cfg.access_token.expose()
    }

    /// The OAuth client id.
    pub fn client_id(&self) -> &str {
        &self.state.cfg.client_id
    }

    /// The OAuth client secret (also the webhook signing key).
    pub fn client_secret(&self) -> &str {
        self.state.cfg.client_secret.expose()
    }

    /// The account id it reports.
    pub fn portal_id(&self) -> i64 {
        self.state.cfg.portal_id
    }

    /// The seed in use (given or drawn).
    pub fn rng_seed(&self) -> u64 {
        self.state.cfg.rng_seed
    }

    /// Whether it resumed an account from its state file (rather than starting a new one).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The file it keeps its state in, when it has one.
    pub fn state_file(&self) -> Option<&Path> {
        self.state.persist.as_ref().map(Persist::path)
    }

    /// Writes the state file now (when anything changed since the last save).
    pub async fn save(&self) -> Result<(), SandboxError> {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || persist::save_now(&state))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Live contacts.
    pub fn contact_count(&self) -> usize {
        lock(&self.state.store).contacts.counts().live
    }

    /// All live contacts in id order.
    pub fn contacts(&self) -> Vec<SandboxContact> {
        lock(&self.state.store)
            .contacts
            .live()
            .map(SandboxContact::from_store)
            .collect()
    }

    /// All archived contacts in id order.
    pub fn archived_contacts(&self) -> Vec<SandboxContact> {
        lock(&self.state.store)
            .contacts
            .archived()
            .map(SandboxContact::from_store)
            .collect()
    }

    /// One live contact by id.
    pub fn contact(&self, id: &str) -> Option<SandboxContact> {
        let crm = lock(&self.state.store);
        id.parse()
            .ok()
            .and_then(|id| crm.contacts.get(id))
            .map(SandboxContact::from_store)
    }

    /// Inserts contacts directly (no HTTP, no webhooks); records whose unique values exist
    /// already are skipped. Returns the new ids.
    pub fn insert_contacts(&self, records: Vec<BTreeMap<String, String>>) -> Vec<String> {
        let ids = lock(&self.state.store)
            .contacts
            .insert_unchecked(records, clock::now_ms());
        self.state.changed();
        ids.into_iter().map(|id| id.to_string()).collect()
    }

    /// All live companies in id order.
    pub fn companies(&self) -> Vec<SandboxCompany> {
        lock(&self.state.store)
            .companies
            .live()
            .map(SandboxCompany::from_store)
            .collect()
    }

    /// One live company by id.
    pub fn company(&self, id: &str) -> Option<SandboxCompany> {
        let crm = lock(&self.state.store);
        id.parse()
            .ok()
            .and_then(|id| crm.companies.get(id))
            .map(SandboxCompany::from_store)
    }

    /// Inserts companies directly (no HTTP, no webhooks); records whose unique values exist
    /// already are skipped (a shared `domain` is no reason). Returns the new ids.
    pub fn insert_companies(&self, records: Vec<BTreeMap<String, String>>) -> Vec<String> {
        let ids = lock(&self.state.store)
            .companies
            .insert_unchecked(records, clock::now_ms());
        self.state.changed();
        ids.into_iter().map(|id| id.to_string()).collect()
    }

    /// The live companies a live contact is associated with, in id order (empty for an
    /// unknown contact).
    pub fn companies_of_contact(&self, contact_id: &str) -> Vec<SandboxAssociation> {
        self.associated(
            associations::Direction {
                from: objects::CrmObject::Contacts,
                to: objects::CrmObject::Companies,
            },
            contact_id,
        )
    }

    /// The live contacts a live company is associated with, in id order.
    pub fn contacts_of_company(&self, company_id: &str) -> Vec<SandboxAssociation> {
        self.associated(
            associations::Direction {
                from: objects::CrmObject::Companies,
                to: objects::CrmObject::Contacts,
            },
            company_id,
        )
    }

    fn associated(&self, direction: associations::Direction, id: &str) -> Vec<SandboxAssociation> {
        let crm = lock(&self.state.store);
        id.parse()
            .ok()
            .and_then(|id| crm.associated(direction, id))
            .unwrap_or_default()
            .into_iter()
            .map(|(id, primary)| SandboxAssociation {
                id: id.to_string(),
                primary,
            })
            .collect()
    }

    /// Brings an archived company back from the recycle bin as a person in HubSpot's UI
    /// would (`company.restore` with `changeSource` `CRM_UI`); its associations show again.
    pub fn restore_company(&self, id: &str, user_id: &str) -> Result<(), SandboxError> {
        let object = objects::CrmObject::Companies;
        let id: u64 = id
            .parse()
            .map_err(|_| SandboxError::InvalidArgs(format!("{id} is not a record id")))?;
        let changes = lock(&self.state.store)
            .object_mut(object)
            .restore(id, clock::now_ms())
            .map_err(|e| SandboxError::InvalidArgs(format!("cannot restore {id}: {e:?}")))?;
        self.state.changed();
        if let Some(w) = &self.state.webhooks {
            w.publish_as(&webhooks::Actor::User(user_id.to_owned()), object, &changes);
        }
        Ok(())
    }

    /// Turns HubSpot's account setting "Create and associate companies with contacts" on or
    /// off, from the next request on.
    pub fn set_auto_associate_companies(&self, on: bool) {
        self.state
            .auto_associate
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The company and association variants it plays now.
    pub fn company_variants(&self) -> CompanyVariants {
        self.state.company_variants()
    }

    /// Plays these company and association variants from the next request on.
    pub fn set_company_variants(&self, variants: CompanyVariants) {
        *lock(&self.state.company_variants) = variants;
        self.state.changed();
    }

    /// Inserts `n` generated contacts (repeatable for the seed).
    pub fn seed_contacts(&self, n: usize) -> Vec<String> {
        let ids = admin::seed(&self.state, n);
        self.state.changed();
        ids.into_iter().map(|id| id.to_string()).collect()
    }

    /// Forgets all contacts, companies, associations, custom properties and counters (tokens
    /// stay valid).
    pub fn reset(&self) {
        *lock(&self.state.store) = crm::Crm::new(self.state.cfg.search_delay_ms);
        self.state.limits.reset();
        self.state.stats.reset();
        self.state.changed();
    }

    /// Makes pending writes visible to search now.
    pub fn flush_search_index(&self) {
        lock(&self.state.store).flush_search_index();
    }

    /// The variants it plays now.
    pub fn variants(&self) -> Variants {
        self.state.variants()
    }

    /// Plays these variants from the next request on (as `PUT /_sandbox/config`).
    pub fn set_variants(&self, variants: Variants) {
        *lock(&self.state.variants) = variants;
        self.state.changed();
    }

    /// Expires every OAuth access token issued so far.
    pub fn expire_access_tokens(&self) {
        self.state.oauth.expire_all(clock::now_ms());
        self.state.changed();
    }

    /// Starts or stops keeping the requests it receives (HubSpot paths only).
    pub fn set_recording(&self, on: bool) {
        let mut rec = lock(&self.state.recorder);
        match (on, rec.is_some()) {
            (true, false) => *rec = Some(Vec::new()),
            (false, true) => *rec = None,
            _ => {}
        }
    }

    /// The requests kept since recording started (and clears them).
    pub fn take_recorded_requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.recorder)
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Request counters.
    pub fn stats(&self) -> SandboxStats {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.state.stats;
        SandboxStats {
            requests: s.requests.load(Relaxed),
            rate_limited: s.rate_limited.load(Relaxed),
            faults_5xx: s.faults_5xx.load(Relaxed),
            dropped_after_write: s.dropped.load(Relaxed),
            dropped_reads: s.dropped_reads.load(Relaxed),
            by_operation: lock(&s.by_op)
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            webhook_events_delivered: self
                .state
                .webhooks
                .as_ref()
                .map_or(0, |w| w.stats.delivered.load(Relaxed)),
        }
    }

    /// The one line `crm-sync sandbox` prints at start.
    pub fn start_line(&self) -> String {
        let state = match self.state_file() {
            Some(path) if self.resumed => format!(" | state resumed from {}", path.display()),
            Some(path) => format!(" | new state in {}", path.display()),
            None => String::new(),
        };
        format!(
            "HubSpot sandbox at {} (authorize: {}) portal {} | private-app token: {} | OAuth client_id: {} client_secret: {} | rng seed {}{state}",
            self.base_url(),
            self.authorize_url(),
            self.portal_id(),
            self.access_token(),
            self.client_id(),
            self.client_secret(),
            self.rng_seed(),
        )
    }

    /// Stops accepting, lets running requests finish (at most 2 s), saves the state file
    /// (when it has one) and waits.
    pub async fn shutdown(mut self) -> Result<(), SandboxError> {
        self.stop_now();
        self.wait().await
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server to stop, then has the saver write what is left.
    async fn wait(mut self) -> Result<(), SandboxError> {
        let served = match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result.map_err(SandboxError::from),
                Err(e) => Err(SandboxError::Server(std::io::Error::other(e))),
            },
            None => Ok(()),
        };
        self.stop_saver();
        if let Some(saver) = self.saver.take() {
            let _ = saver.await;
        }
        served?;
        // The saver logs a failed save; the caller hears of it too.
        self.save().await
    }

    fn stop_saver(&mut self) {
        if let Some(stop) = self.saver_stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        self.stop_now();
        // The saver still writes the last changes once told to stop.
        self.stop_saver();
    }
}

/// The standalone `crm-sync sandbox` command: start, print the one line, run until Ctrl-C / SIGTERM.
pub async fn run(args: SandboxArgs) -> Result<(), SandboxError> {
    let bind = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let handle = Sandbox::start(args, bind).await?;
    println!("{}", handle.start_line());
    shutdown_signal().await;
    let mut handle = handle;
    handle.stop_now();
    handle.wait().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
