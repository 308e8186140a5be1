//! Settings (INTERFACE §2): built-in defaults, `config/default.toml`, `config/local.toml`,
//! `.env`, the sample app's `DATABASE_URL` / `CLIENT_ID` / `CLIENT_SECRET`, then
//! `CRM_SYNC__<SECTION>__<KEY>` variables — later layers win.
//!
//! [`Settings::load`] checks every value and parses it once into the type it is used as
//! (addresses, URLs, durations, the database backend); a bad value is an error naming its key,
//! and nothing after loading can meet an unparsed string.

use crate::api::client_ip::{CidrError, TrustedProxies};
use crate::ids::PortalId;
use crate::mapping::ObjectMapping;
use crate::mapping::parse::RawObjectMapping;
use crate::model::SyncObject;
use crate::secret::{Secret, redact_url};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use url::Url;

/// Prefix of the service's own environment variables.
const ENV_PREFIX: &str = "CRM_SYNC";

/// Everything the service is configured with, checked and parsed once when loaded.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the local contacts and the job queue live.
    pub database: DatabaseSettings,
    /// The HTTP listener.
    pub server: ServerSettings,
    /// Access to the protected API.
    pub api: ApiSettings,
    /// The HubSpot account and app.
    pub hubspot: HubSpotSettings,
    /// Keys for data at rest.
    pub security: SecuritySettings,
    /// Recurring jobs.
    pub sync: SyncSettings,
    /// How long finished rows are kept.
    pub retention: RetentionSettings,
    /// The `crm-sync worker` process.
    pub worker: WorkerSettings,
}

/// The settings as the layers give them: strings where [`Settings`] holds parsed values, so
/// that a bad value is reported naming its key rather than as a bare deserialisation error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    database: RawDatabase,
    server: RawServer,
    #[serde(default)]
    api: ApiSettings,
    hubspot: RawHubSpot,
    #[serde(default)]
    security: SecuritySettings,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    retention: RetentionSettings,
    #[serde(default)]
    worker: RawWorker,
}

/// `worker.*`: the `crm-sync worker` process.
#[derive(Debug, Clone, Default)]
pub struct WorkerSettings {
    /// Where it serves `/healthz`, `/readyz` and `/metrics`; `None` (the default): no listener.
    pub bind: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    /// A socket address, or empty / absent for none.
    #[serde(default)]
    bind: Option<String>,
}

/// `retention.*`: how many days finished rows are kept before `serve` and `worker` prune them,
/// and how often they look. Unfinished jobs and queue tasks are never pruned, and webhook event
/// ids are kept at least for HubSpot's 24-hour redelivery window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Finished jobs (`sync_jobs`), counted from when they finished.
    pub jobs_days: u32,
    /// Webhook event ids (the dedupe table), counted from receipt.
    pub webhook_events_days: u32,
    /// Schedule ticks; the newest tick of each schedule is always kept.
    pub schedule_ticks_days: u32,
    /// Finished tasks in the job queue's own tables.
    pub queue_tasks_days: u32,
    /// OAuth states, counted from when they expired.
    pub oauth_states_days: u32,
    /// Operator sessions, counted from when they expired or ended.
    pub operator_sessions_days: u32,
    /// Minutes between two pruning rounds of one process.
    pub interval_minutes: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            jobs_days: 30,
            webhook_events_days: 7,
            schedule_ticks_days: 30,
            queue_tasks_days: 7,
            oauth_states_days: 1,
            operator_sessions_days: 1,
            interval_minutes: 60,
        }
    }
}

impl RetentionSettings {
    /// The points in time before which rows are pruned, as of `now`.
    pub fn cutoffs(&self, now: chrono::DateTime<chrono::Utc>) -> crate::store::RetentionCutoffs {
        let before = |days: u32| now - chrono::Duration::days(i64::from(days));
        crate::store::RetentionCutoffs {
            jobs: before(self.jobs_days),
            webhook_events: before(self.webhook_events_days),
            schedule_ticks: before(self.schedule_ticks_days),
            queue_tasks: before(self.queue_tasks_days),
            oauth_states: before(self.oauth_states_days),
            operator_sessions: before(self.operator_sessions_days),
        }
    }

    /// Time between two pruning rounds.
    pub fn interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.interval_minutes) * 60)
    }

    /// Every value at least 1: a zero would prune a job the moment it finished, or spin.
    fn validate(&self) -> Result<(), ConfigError> {
        let values = [
            ("retention.jobs_days", self.jobs_days),
            ("retention.webhook_events_days", self.webhook_events_days),
            ("retention.schedule_ticks_days", self.schedule_ticks_days),
            ("retention.queue_tasks_days", self.queue_tasks_days),
            ("retention.oauth_states_days", self.oauth_states_days),
            (
                "retention.operator_sessions_days",
                self.operator_sessions_days,
            ),
            ("retention.interval_minutes", self.interval_minutes),
        ];
        match values.iter().find(|(_, value)| *value == 0) {
            Some((key, _)) => Err(invalid(key, "must be at least 1")),
            None => Ok(()),
        }
    }
}

/// `database.*`
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite://...` or `postgres://...`; may hold a password, so never log it unredacted.
    pub url: String,
    /// The backend the URL names.
    pub kind: DatabaseKind,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
}

/// `server.*`
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Listen address.
    pub bind: SocketAddr,
    /// Base for the OAuth redirect URI, webhook signatures and links.
    pub public_url: Url,
    /// Browser origins (`scheme://host[:port]`) allowed to call the API from their pages,
    /// each a bare origin as browsers send it in `Origin`; empty: no CORS headers.
    pub cors_allowed_origins: Vec<String>,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` name the client; empty: the TCP
    /// peer is the client.
    pub trusted_proxies: TrustedProxies,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    bind: String,
    public_url: String,
    /// Browser origins (`scheme://host[:port]`) allowed to call the API from their pages; empty
    /// (the default): no CORS headers, so browsers keep other sites out. From the environment,
    /// a comma-separated list.
    #[serde(default)]
    cors_allowed_origins: Vec<String>,
    /// Reverse proxies (IP addresses or CIDR blocks) whose `Forwarded` / `X-Forwarded-For`
    /// name the client, for the per-client rate limits; empty (the default): the TCP peer is
    /// the client. From the environment, a comma-separated list.
    #[serde(default)]
    trusted_proxies: Vec<String>,
}

/// `api.*`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Bearer token of the protected API; generated into `data/api-token` when absent.
    pub token: Option<Secret>,
}

/// `hubspot.*`
#[derive(Debug, Clone)]
pub struct HubSpotSettings {
    /// Every HubSpot API call, OAuth token calls included, goes here.
    pub api_base_url: Url,
    /// Where the install link points.
    pub authorize_url: Url,
    /// OAuth app id.
    pub client_id: Option<String>,
    /// OAuth app secret; also verifies webhook signatures.
    pub client_secret: Option<Secret>,
    /// A private-app token; when set, OAuth is not needed.
    pub access_token: Option<Secret>,
    /// Client-side budget for HubSpot's 10-second rolling limit.
    pub requests_per_10s: u32,
    /// Client-side budget for HubSpot's search limit (per second, per token), apart from
    /// `requests_per_10s`.
    pub search_per_second: u32,
    /// Client-side budget for HubSpot's association calls (per 10 seconds), apart from
    /// `requests_per_10s`.
    pub associations_per_10s: u32,
    /// The only HubSpot account the service may connect to (installs for another account are
    /// refused, a private-app token of another account stops start-up); unset: the first
    /// account connected pins itself until the operator disconnects it.
    pub portal_id: Option<PortalId>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHubSpot {
    api_base_url: String,
    authorize_url: String,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    access_token: Option<Secret>,
    requests_per_10s: u32,
    search_per_second: u32,
    associations_per_10s: u32,
    #[serde(default)]
    portal_id: Option<i64>,
}

/// `security.*`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// Base64 of 32 bytes; generated into `data/encryption-key` when absent.
    pub encryption_key: Option<Secret>,
    /// Older keys that still open tokens written before a rotation (docs/security.md).
    #[serde(default)]
    pub previous_encryption_keys: Vec<Secret>,
}

/// `sync.*`
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Recurring jobs; none by default.
    pub schedules: Vec<ScheduleConfig>,
    /// How far before its bookmark an incremental pull starts reading (`sync.pull_lookback`:
    /// whole seconds or a duration string; [`crate::defaults::PULL_LOOKBACK`] when unset).
    pub pull_lookback: Duration,
    /// The object mappings in effect (`[[sync.objects]]`, plus the built-in contacts mapping
    /// when no entry maps contacts); checked against the database by
    /// [`crate::mapping::check_mappings`] at start-up.
    pub objects: Vec<ObjectMapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    #[serde(default)]
    schedules: Vec<ScheduleConfig>,
    #[serde(default)]
    pull_lookback: Option<RawDuration>,
    #[serde(default)]
    objects: Vec<RawObjectMapping>,
}

/// A duration as written in configuration, checked by [`parse_duration`]: a number of
/// seconds, or a string. Any scalar is accepted here, so that a wrong one is reported with
/// its key rather than as a bare deserialisation error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    /// A TOML integer, or an environment variable made only of digits.
    Seconds(i64),
    /// Anything else numeric (refused: durations are whole seconds).
    Fraction(f64),
    /// A string such as `"5m"`.
    Text(String),
    /// `true` / `false` (refused).
    Flag(bool),
}

/// The longest `sync.pull_lookback` accepted: beyond a week an incremental pull re-reads so
/// much that a full pull is the better tool, and a larger value is more likely a typo.
const MAX_PULL_LOOKBACK: Duration = Duration::from_secs(7 * 24 * 3600);

/// One `[[sync.schedules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Cron expression with a seconds field first, e.g. `0 */15 * * * *`.
    pub cron: String,
    /// `push` or `pull`.
    pub direction: String,
    /// A mode valid for the direction; the direction's default when absent.
    pub mode: Option<String>,
    /// Pull only what changed since the last successful pull; true by default for pulls.
    pub incremental: Option<bool>,
    /// `contacts` (the default) or `companies`.
    pub object: Option<String>,
    /// Only report what the job would do (default false).
    pub dry_run: Option<bool>,
}

/// A configuration problem, always naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is present but wrong.
    #[error("invalid configuration: {key}: {problem}")]
    Invalid {
        /// Dotted key, e.g. `server.bind`.
        key: String,
        /// What is wrong and what would be right.
        problem: String,
    },
    /// A file or variable could not be read or has an unknown key.
    #[error("invalid configuration: {0}")]
    Load(String),
    /// A value of the wrong kind for its key, such as a word where a number belongs.
    #[error("invalid configuration: {key}{origin} must be {expected}, got {got}")]
    WrongType {
        /// Dotted key, e.g. `hubspot.requests_per_10s`.
        key: String,
        /// Where the value was written.
        origin: ValueOrigin,
        /// The form a value of this key takes, e.g. "a whole number".
        expected: String,
        /// The value found, as written.
        got: String,
    },
    /// PostgreSQL without `security.encryption_key`: a key generated on one host would leave
    /// the tokens it seals unreadable on every other host sharing the database.
    #[error(
        "security.encryption_key is required with PostgreSQL (every host sharing the database \
         must use the same key): run `crm-sync keygen` and set what it prints as \
         security.encryption_key or CRM_SYNC__SECURITY__ENCRYPTION_KEY on every host"
    )]
    EncryptionKeyRequired,
    /// A generated secret could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    SecretFile {
        /// What was attempted.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Where a configuration value was written, as an error message names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueOrigin {
    /// An environment variable (or `.env` line) of this name.
    Variable(String),
    /// A file, relative to the working directory when it is under it.
    File(PathBuf),
    /// Unknown (the built-in defaults never are of the wrong kind).
    Unknown,
}

impl std::fmt::Display for ValueOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Variable(name) => write!(f, " (environment variable {name})"),
            Self::File(path) => write!(f, " (in {})", path.display()),
            Self::Unknown => Ok(()),
        }
    }
}

/// Turns the `config` crate's error into one that names the key, where its value was written
/// and the form it takes, in place of serde's words ("invalid type: string, expected an
/// integer for key ...").
fn explain_load_error(
    e: config::ConfigError,
    dir: &Path,
    env: &HashMap<String, String>,
) -> ConfigError {
    let (key, file, expected, got) = match e {
        config::ConfigError::Type {
            origin,
            unexpected,
            expected,
            key: Some(key),
        } => (key, origin, expected.to_owned(), unexpected.to_string()),
        // serde's own type errors (a number where a list belongs) arrive as its message.
        config::ConfigError::At {
            error,
            origin,
            key: Some(key),
        } => match error.to_string().strip_prefix("invalid type: ") {
            Some(rest) => match rest.split_once(", expected ") {
                Some((got, expected)) => (key, origin, expected.to_owned(), got.to_owned()),
                None => return ConfigError::Load(format!("{key}: {error}")),
            },
            None => return ConfigError::Load(format!("{key}: {error}")),
        },
        other => return ConfigError::Load(other.to_string()),
    };
    let key = dotted(&key);
    let variable = env_variable_of(&key).filter(|name| env.contains_key(name));
    let (origin, got) = match (variable, file) {
        // The variable's own text says more than the parsed value ("lots", not `string "lots"`).
        (Some(name), _) => {
            let got = format!(
                "{:?}",
                env.get(&name).map(String::as_str).unwrap_or_default()
            );
            (ValueOrigin::Variable(name), got)
        }
        (None, Some(file)) => {
            let path = Path::new(&file);
            let shown = path.strip_prefix(dir).unwrap_or(path).to_path_buf();
            (ValueOrigin::File(shown), got)
        }
        (None, None) => (ValueOrigin::Unknown, got),
    };
    ConfigError::WrongType {
        key,
        origin,
        expected: form_of(&expected),
        got,
    }
}

/// The key as written in files: the `config` crate leaves out the dot after a list index
/// (`sync.schedules[0]incremental`).
fn dotted(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    let mut after_index = false;
    for c in key.chars() {
        if after_index && c != '.' && c != '[' {
            out.push('.');
        }
        after_index = c == ']';
        out.push(c);
    }
    out
}

/// `CRM_SYNC__SECTION__KEY` for a dotted key (list entries name their list's variable).
fn env_variable_of(key: &str) -> Option<String> {
    let path = key.split('[').next()?;
    let parts: Vec<String> = path.split('.').map(str::to_uppercase).collect();
    Some(format!("{ENV_PREFIX}__{}", parts.join("__")))
}

/// The form of a value as users write it, for what the `config` crate or serde expected.
fn form_of(expected: &str) -> String {
    match expected {
        e if e.starts_with("an unsigned") || e.starts_with('u') && e[1..].parse::<u8>().is_ok() => {
            "a whole number, 0 or more"
        }
        e if e.contains("integer") || e.starts_with('i') && e[1..].parse::<u8>().is_ok() => {
            "a whole number"
        }
        "a boolean" => "true or false",
        e if e.contains("float") => "a number",
        e if e.contains("map") || e.starts_with("struct") => "a table of keys",
        e if e.contains("array") || e.contains("sequence") => "a list",
        other => other,
    }
    .to_owned()
}

/// A [`ConfigError::Invalid`] naming `key`.
pub(crate) fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// Built-in defaults (INTERFACE §2).
const DEFAULTS: &[(&str, &str)] = &[
    ("database.url", "sqlite://data/crm-sync.db"),
    ("server.bind", "127.0.0.1:3001"),
    ("server.public_url", "http://localhost:3001"),
    ("hubspot.api_base_url", "https://api.hubapi.com"),
    (
        "hubspot.authorize_url",
        "https://app.hubspot.com/oauth/authorize",
    ),
];

/// The sample app's variables and the keys they set.
const COMPAT_VARS: &[(&str, &str)] = &[
    ("DATABASE_URL", "database__url"),
    ("CLIENT_ID", "hubspot__client_id"),
    ("CLIENT_SECRET", "hubspot__client_secret"),
];

impl Settings {
    /// Loads from `dir` (the working directory: `config/`, `.env`) and the process environment.
    pub fn load_from_process(dir: &Path) -> Result<Self, ConfigError> {
        load_dotenv(dir)?;
        Self::load(dir, &std::env::vars().collect())
    }

    /// Loads from `dir`'s `config/` files and the given environment (hermetic for tests).
    pub fn load(dir: &Path, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        for (key, value) in DEFAULTS {
            builder = builder
                .set_default(*key, *value)
                .map_err(|e| ConfigError::Load(e.to_string()))?;
        }
        builder = builder
            .set_default("hubspot.requests_per_10s", 100)
            .and_then(|b| b.set_default("hubspot.search_per_second", 5))
            .and_then(|b| b.set_default("hubspot.associations_per_10s", 100))
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        for name in ["default", "local"] {
            let path = dir.join("config").join(format!("{name}.toml"));
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(false),
            );
        }
        let compat: config::Map<String, String> = COMPAT_VARS
            .iter()
            .filter_map(|(var, key)| env.get(*var).map(|v| ((*key).to_owned(), v.clone())))
            .collect();
        builder = builder.add_source(
            config::Environment::default()
                .separator("__")
                .source(Some(compat)),
        );
        let own: config::Map<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("server.cors_allowed_origins")
                .with_list_parse_key("server.trusted_proxies")
                .source(Some(own)),
        );
        let raw = builder
            .build()
            .map_err(|e| explain_load_error(e, dir, env))?;
        raw.try_deserialize::<RawSettings>()
            .map_err(|e| explain_load_error(e, dir, env))?
            .parse()
    }

    /// The account the service is pinned to by configuration (`hubspot.portal_id`).
    pub fn pinned_portal(&self) -> Option<PortalId> {
        self.hubspot.portal_id
    }

    /// Points the HubSpot client at another HubSpot (the demo's sandbox): its API, its
    /// authorize page and its app's credentials, instead of any private-app token.
    pub fn use_hubspot_app(
        &mut self,
        api_base_url: &str,
        authorize_url: &str,
        client_id: String,
        client_secret: Secret,
    ) -> Result<(), ConfigError> {
        let hubspot = &mut self.hubspot;
        hubspot.api_base_url = parse_url("hubspot.api_base_url", api_base_url)?;
        hubspot.authorize_url = parse_url("hubspot.authorize_url", authorize_url)?;
        hubspot.access_token = None;
        hubspot.client_id = Some(client_id);
        hubspot.client_secret = Some(client_secret);
        Ok(())
    }
}

impl RawSettings {
    /// Checks every value that can be checked without connecting anywhere and parses it; the
    /// first problem found is the error, naming its key.
    fn parse(self) -> Result<Settings, ConfigError> {
        let database_kind = self.database_kind()?;
        let bind = self.bind_addr()?;
        let public_url = parse_url("server.public_url", &self.server.public_url)?;
        let cors_allowed_origins = self.cors_allowed_origins()?;
        let trusted_proxies = self.trusted_proxies()?;
        let api_base_url = parse_url("hubspot.api_base_url", &self.hubspot.api_base_url)?;
        let authorize_url = parse_url("hubspot.authorize_url", &self.hubspot.authorize_url)?;
        if self.hubspot.requests_per_10s == 0 {
            return Err(invalid(
                "hubspot.requests_per_10s",
                "must be at least 1 (HubSpot allows 100 to 250 per 10 seconds)",
            ));
        }
        if self.hubspot.search_per_second == 0 {
            return Err(invalid(
                "hubspot.search_per_second",
                "must be at least 1 (HubSpot allows 5 searches per second)",
            ));
        }
        if self.hubspot.associations_per_10s == 0 {
            return Err(invalid(
                "hubspot.associations_per_10s",
                "must be at least 1 (HubSpot allows 100 to 150 association calls per 10 seconds)",
            ));
        }
        if self.hubspot.portal_id.is_some_and(|p| p <= 0) {
            return Err(invalid(
                "hubspot.portal_id",
                "must be a HubSpot account id (a positive number), or unset",
            ));
        }
        if let Some(key) = &self.security.encryption_key {
            decode_key(key)?;
        }
        for (i, key) in self.security.previous_encryption_keys.iter().enumerate() {
            decode_key(key).map_err(|_| {
                invalid(
                    &format!("security.previous_encryption_keys[{i}]"),
                    "must be base64 of 32 bytes",
                )
            })?;
        }
        for (i, schedule) in self.sync.schedules.iter().enumerate() {
            schedule.validate(&format!("sync.schedules[{i}]"))?;
        }
        let pull_lookback = self.pull_lookback()?;
        let objects = crate::mapping::parse::parse_all(&self.sync.objects, database_kind)?;
        self.retention.validate()?;
        let worker = WorkerSettings {
            bind: self.worker_bind()?,
        };
        let hubspot = self.hubspot;
        Ok(Settings {
            database: DatabaseSettings {
                url: self.database.url,
                kind: database_kind,
            },
            server: ServerSettings {
                bind,
                public_url,
                cors_allowed_origins,
                trusted_proxies,
            },
            api: self.api,
            hubspot: HubSpotSettings {
                api_base_url,
                authorize_url,
                client_id: hubspot.client_id,
                client_secret: hubspot.client_secret,
                access_token: hubspot.access_token,
                requests_per_10s: hubspot.requests_per_10s,
                search_per_second: hubspot.search_per_second,
                associations_per_10s: hubspot.associations_per_10s,
                portal_id: hubspot.portal_id.map(PortalId),
            },
            security: self.security,
            sync: SyncSettings {
                schedules: self.sync.schedules,
                pull_lookback,
                objects,
            },
            retention: self.retention,
            worker,
        })
    }

    /// `worker.bind` as a socket address; empty or absent: no listener.
    fn worker_bind(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(bind) = self.worker.bind.as_deref().map(str::trim) else {
            return Ok(None);
        };
        if bind.is_empty() {
            return Ok(None);
        }
        SocketAddr::from_str(bind).map(Some).map_err(|_| {
            invalid(
                "worker.bind",
                format!(
                    "{bind:?} is not a socket address like 127.0.0.1:9464 (leave it unset for no \
                     listener)"
                ),
            )
        })
    }

    /// `sync.pull_lookback`, or [`crate::defaults::PULL_LOOKBACK`] when unset.
    fn pull_lookback(&self) -> Result<Duration, ConfigError> {
        const KEY: &str = "sync.pull_lookback";
        let Some(raw) = &self.sync.pull_lookback else {
            return Ok(crate::defaults::PULL_LOOKBACK);
        };
        let lookback = match raw {
            RawDuration::Seconds(s) => u64::try_from(*s)
                .map(Duration::from_secs)
                .map_err(|_| format!("{s} is negative; use a number of seconds >= 0")),
            RawDuration::Text(text) => parse_duration(text),
            RawDuration::Fraction(f) => Err(format!(
                "{f} is not a whole number of seconds; write e.g. 90 or \"90s\""
            )),
            RawDuration::Flag(b) => Err(format!("{b} is not a duration; write e.g. 300 or \"5m\"")),
        }
        .map_err(|problem| invalid(KEY, problem))?;
        if lookback > MAX_PULL_LOOKBACK {
            return Err(invalid(
                KEY,
                format!(
                    "{}s is more than a week; run a full pull instead of a longer lookback",
                    lookback.as_secs()
                ),
            ));
        }
        Ok(lookback)
    }

    /// The database backend named by `database.url`.
    fn database_kind(&self) -> Result<DatabaseKind, ConfigError> {
        let url = &self.database.url;
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(DatabaseKind::Sqlite),
            "postgres" | "postgresql" => {
                Url::parse(url).map_err(|e| {
                    invalid(
                        "database.url",
                        format!("cannot parse {}: {e}", redact_url(url)),
                    )
                })?;
                Ok(DatabaseKind::Postgres)
            }
            _ if !url.contains(':') => Err(invalid(
                "database.url",
                format!("{url:?} is not a URL; expected sqlite://... or postgres://..."),
            )),
            other => Err(invalid(
                "database.url",
                format!("unknown scheme {other:?}; expected sqlite://... or postgres://..."),
            )),
        }
    }

    /// `server.bind` as a socket address.
    fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        SocketAddr::from_str(&self.server.bind).map_err(|_| {
            invalid(
                "server.bind",
                format!(
                    "{:?} is not a socket address like 127.0.0.1:3001",
                    self.server.bind
                ),
            )
        })
    }

    /// `server.cors_allowed_origins`, each checked to be a bare origin as browsers send it in
    /// `Origin` (no path, query or trailing slash), so that a typo cannot silently match nothing.
    fn cors_allowed_origins(&self) -> Result<Vec<String>, ConfigError> {
        self.server
            .cors_allowed_origins
            .iter()
            .enumerate()
            .map(|(i, origin)| {
                let key = format!("server.cors_allowed_origins[{i}]");
                let url = parse_url(&key, origin)?;
                let bare = url.origin().ascii_serialization();
                if url.host_str().is_none()
                    || bare != origin.trim_end_matches('/')
                    || origin.ends_with('/')
                {
                    return Err(invalid(
                        &key,
                        format!(
                            "{origin:?} is not an origin: write scheme://host[:port], e.g. {bare:?}"
                        ),
                    ));
                }
                Ok(bare)
            })
            .collect()
    }

    /// `server.trusted_proxies` parsed; an entry that is not an address or block is refused,
    /// naming it.
    fn trusted_proxies(&self) -> Result<TrustedProxies, ConfigError> {
        self.server
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                entry.parse().map_err(|e: CidrError| {
                    invalid(&format!("server.trusted_proxies[{i}]"), e.to_string())
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies::new)
    }
}

/// Adds `dir/.env` (when present) to the process environment; a variable that is already set
/// keeps its value. Idempotent, so the CLI can call it before logging starts (for `RUST_LOG`).
pub fn load_dotenv(dir: &Path) -> Result<(), ConfigError> {
    match dotenvy::from_path(dir.join(".env")) {
        Ok(()) => Ok(()),
        Err(e) if e.not_found() => Ok(()),
        Err(e) => Err(ConfigError::Load(format!(".env: {e}"))),
    }
}

/// The database backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl ScheduleConfig {
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        cron::Schedule::from_str(&self.cron).map_err(|e| {
            invalid(
                &format!("{key}.cron"),
                format!(
                    "{:?} is not a cron expression (seconds first, e.g. \"0 */15 * * * *\"): {e}",
                    self.cron
                ),
            )
        })?;
        let modes: &[&str] = match self.direction.as_str() {
            "push" => &["link", "upsert"],
            "pull" => &["upsert", "verbose"],
            other => {
                return Err(invalid(
                    &format!("{key}.direction"),
                    format!("{other:?} is neither \"push\" nor \"pull\""),
                ));
            }
        };
        if let Some(mode) = &self.mode
            && !modes.contains(&mode.as_str())
        {
            return Err(invalid(
                &format!("{key}.mode"),
                format!(
                    "{mode:?} is not a {} mode; use one of {}",
                    self.direction,
                    modes.join(", ")
                ),
            ));
        }
        let object = match self.object.as_deref() {
            None => SyncObject::Contacts,
            Some(name) => name.parse().map_err(|_| {
                invalid(
                    &format!("{key}.object"),
                    format!("{name:?} is neither \"contacts\" nor \"companies\""),
                )
            })?,
        };
        if !object.is_available() {
            return Err(invalid(
                &format!("{key}.object"),
                format!("{object} sync is not available in this version"),
            ));
        }
        if self.dry_run == Some(true) && !object.has_dry_run() {
            return Err(invalid(
                &format!("{key}.dry_run"),
                format!("dry runs of {object} are not available in this version"),
            ));
        }
        Ok(())
    }
}

/// Parses a duration written as whole seconds (`"300"`) or as numbers with units `h`, `m`,
/// `s`, largest first (`"90s"`, `"5m"`, `"1h30m"`); the error says what is wrong with it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let bad = || {
        format!(
            "{text:?} is not a duration; write seconds (300) or e.g. \"90s\", \"5m\", \"1h30m\""
        )
    };
    if trimmed.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = trimmed.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut rest = trimmed;
    let mut last_unit = u64::MAX;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit_len = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - digits);
        let unit = match &rest[digits..digits + unit_len] {
            "h" => 3600,
            "m" => 60,
            "s" => 1,
            _ => return Err(bad()),
        };
        if unit >= last_unit {
            return Err(bad());
        }
        last_unit = unit;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[digits + unit_len..];
    }
    Ok(Duration::from_secs(total))
}

fn parse_url(key: &str, value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| invalid(key, format!("cannot parse {}: {e}", redact_url(value))))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(
            key,
            format!("scheme {:?} is not http or https", url.scheme()),
        ));
    }
    Ok(url)
}

/// The key bytes of every `security.previous_encryption_keys` entry (validated at load).
pub fn previous_keys(settings: &Settings) -> Result<Vec<[u8; 32]>, ConfigError> {
    settings
        .security
        .previous_encryption_keys
        .iter()
        .map(decode_key)
        .collect()
}

/// The 32 key bytes of a base64 `security.encryption_key`.
pub fn decode_key(key: &Secret) -> Result<[u8; 32], ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.expose().trim())
        .map_err(|_| invalid("security.encryption_key", "is not valid base64"))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        invalid(
            "security.encryption_key",
            format!("must be 32 bytes of base64, found {} bytes", b.len()),
        )
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An environment of `pairs` (also the secret files' tests).
    pub(crate) fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// A working directory, with `config/local.toml` holding `local` when given.
    pub(crate) fn dir_with(local: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(text) = local {
            std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
            std::fs::write(dir.path().join("config/local.toml"), text).expect("write");
        }
        dir
    }

    fn error_of(local: Option<&str>, vars: &[(&str, &str)]) -> String {
        let dir = dir_with(local);
        Settings::load(dir.path(), &env(vars))
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn the_worker_listener_is_off_unless_worker_bind_names_an_address() {
        let dir = dir_with(None);
        let off = Settings::load(dir.path(), &HashMap::new()).expect("defaults load");
        assert_eq!(off.worker.bind, None);
        let empty = Settings::load(dir.path(), &env(&[("CRM_SYNC__WORKER__BIND", "")]))
            .expect("empty is off");
        assert_eq!(empty.worker.bind, None);
        let on = Settings::load(
            dir.path(),
            &env(&[("CRM_SYNC__WORKER__BIND", "127.0.0.1:9464")]),
        )
        .expect("an address");
        assert_eq!(
            on.worker.bind.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9464")
        );
        let e = error_of(Some("[worker]\nbind = \"localhost\"\n"), &[]);
        assert!(e.contains("worker.bind") && e.contains("localhost"), "{e}");
    }

    #[test]
    fn defaults_match_the_interface() {
        let dir = dir_with(None);
        let s = Settings::load(dir.path(), &HashMap::new()).expect("defaults load");
        assert_eq!(s.database.url, "sqlite://data/crm-sync.db");
        assert_eq!(s.database.kind, DatabaseKind::Sqlite);
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:3001");
        assert_eq!(s.server.public_url.as_str(), "http://localhost:3001/");
        assert_eq!(s.hubspot.api_base_url.as_str(), "https://api.hubapi.com/");
        assert_eq!(
            s.hubspot.authorize_url.as_str(),
            "https://app.hubspot.com/oauth/authorize"
        );
        assert_eq!(s.hubspot.requests_per_10s, 100);
        assert_eq!(s.hubspot.search_per_second, 5);
        assert_eq!(s.hubspot.associations_per_10s, 100);
        assert!(s.api.token.is_none() && s.hubspot.access_token.is_none());
        assert!(s.sync.schedules.is_empty());
    }

    #[test]
    fn own_variables_win_over_compat_variables_which_win_over_files() {
        let dir = dir_with(Some(
            "[database]\nurl = \"sqlite://from-file.db\"\n[hubspot]\nclient_id = \"file-id\"\n",
        ));
        let s = Settings::load(
            dir.path(),
            &env(&[
                ("DATABASE_URL", "sqlite://compat.db"),
                ("CLIENT_ID", "compat-id"),
            ]),
        )
        .unwrap();
        assert_eq!(s.database.url, "sqlite://compat.db");
        assert_eq!(s.hubspot.client_id.as_deref(), Some("compat-id"));
        let s = Settings::load(
            dir.path(),
            &env(&[
                ("DATABASE_URL", "sqlite://compat.db"),
                ("CRM_SYNC__DATABASE__URL", "sqlite://own.db"),
                ("CLIENT_SECRET", "compat-secret"),
                ("CRM_SYNC__HUBSPOT__REQUESTS_PER_10S", "190"),
            ]),
        )
        .unwrap();
        assert_eq!(s.database.url, "sqlite://own.db");
        assert_eq!(
            s.hubspot.client_secret.as_ref().map(Secret::expose),
            Some("compat-secret")
        );
        assert_eq!(s.hubspot.requests_per_10s, 190);
    }

    #[test]
    fn search_and_association_budgets_are_set_apart_and_never_zero() {
        let dir = dir_with(Some(
            "[hubspot]\nsearch_per_second = 4\nassociations_per_10s = 150\n",
        ));
        let s = Settings::load(dir.path(), &env(&[])).unwrap();
        assert_eq!(s.hubspot.search_per_second, 4);
        assert_eq!(s.hubspot.associations_per_10s, 150);
        assert_eq!(s.hubspot.requests_per_10s, 100);
        for key in ["SEARCH_PER_SECOND", "ASSOCIATIONS_PER_10S"] {
            let e = error_of(None, &[(&format!("CRM_SYNC__HUBSPOT__{key}"), "0")]);
            assert!(
                e.contains(&format!("hubspot.{}", key.to_lowercase())),
                "{e}"
            );
        }
    }

    #[test]
    fn numeric_client_ids_stay_strings() {
        let dir = dir_with(None);
        let s = Settings::load(
            dir.path(),
            &env(&[("CRM_SYNC__HUBSPOT__CLIENT_ID", "12345")]),
        )
        .unwrap();
        assert_eq!(s.hubspot.client_id.as_deref(), Some("12345"));
    }

    #[test]
    fn an_unknown_key_in_a_file_is_named() {
        let e = error_of(Some("[server]\nbindd = \"1.2.3.4:1\"\n"), &[]);
        assert!(e.contains("bindd"), "{e}");
        let e = error_of(Some("[serverr]\nbind = \"1.2.3.4:1\"\n"), &[]);
        assert!(e.contains("serverr"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = error_of(None, &[("CRM_SYNC__DATABASE__URL", "mysql://x@h/db")]);
        assert!(e.contains("database.url") && e.contains("mysql"), "{e}");
        let e = error_of(None, &[("DATABASE_URL", "not a url")]);
        assert!(e.contains("database.url"), "{e}");
        let e = error_of(None, &[("CRM_SYNC__SERVER__BIND", "localhost")]);
        assert!(e.contains("server.bind"), "{e}");
        let e = error_of(None, &[("CRM_SYNC__SERVER__PUBLIC_URL", "::nope")]);
        assert!(e.contains("server.public_url"), "{e}");
        let e = error_of(None, &[("CRM_SYNC__HUBSPOT__REQUESTS_PER_10S", "0")]);
        assert!(e.contains("hubspot.requests_per_10s"), "{e}");
        let e = error_of(None, &[("CRM_SYNC__SECURITY__ENCRYPTION_KEY", "c2hvcnQ=")]);
        assert!(e.contains("security.encryption_key"), "{e}");
    }

    #[test]
    fn postgres_passwords_never_reach_the_message() {
        let e = error_of(
            None,
            &[("DATABASE_URL", "postgres://u:hunter2@h:notaport/db")],
        );
        assert!(e.contains("database.url") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn schedules_are_checked() {
        let ok = "[[sync.schedules]]\ncron = \"0 */15 * * * *\"\ndirection = \"pull\"\nincremental = true\n";
        let dir = dir_with(Some(ok));
        let s = Settings::load(dir.path(), &HashMap::new()).unwrap();
        assert_eq!(s.sync.schedules.len(), 1);
        let e = error_of(
            Some("[[sync.schedules]]\ncron = \"every minute\"\ndirection = \"pull\"\n"),
            &[],
        );
        assert!(e.contains("sync.schedules[0].cron"), "{e}");
        let e = error_of(
            Some(
                "[[sync.schedules]]\ncron = \"0 * * * * *\"\ndirection = \"push\"\nmode = \"verbose\"\n",
            ),
            &[],
        );
        assert!(e.contains("sync.schedules[0].mode"), "{e}");
        let e = error_of(
            Some("[[sync.schedules]]\ncron = \"0 * * * * *\"\ndirection = \"sideways\"\n"),
            &[],
        );
        assert!(e.contains("sync.schedules[0].direction"), "{e}");
        for (line, key) in [
            (
                "object = \"deals\"\ndirection = \"push\"",
                "sync.schedules[0].object",
            ),
            (
                "object = \"companies\"\ndirection = \"pull\"\nmode = \"sideways\"",
                "sync.schedules[0].mode",
            ),
        ] {
            let e = error_of(
                Some(&format!(
                    "[[sync.schedules]]\ncron = \"0 * * * * *\"\n{line}\n"
                )),
                &[],
            );
            assert!(e.contains(key), "{line}: {e}");
        }
    }

    #[test]
    fn cors_origins_come_from_files_or_a_comma_separated_variable_and_must_be_bare_origins() {
        let dir = dir_with(None);
        let s = Settings::load(dir.path(), &HashMap::new()).unwrap();
        assert!(
            s.server.cors_allowed_origins.is_empty(),
            "no CORS by default"
        );
        let dir = dir_with(Some(
            "[server]\ncors_allowed_origins = [\"https://app.example.com\"]\n",
        ));
        let s = Settings::load(dir.path(), &HashMap::new()).unwrap();
        assert_eq!(s.server.cors_allowed_origins, ["https://app.example.com"]);
        let s = Settings::load(
            dir_with(None).path(),
            &env(&[(
                "CRM_SYNC__SERVER__CORS_ALLOWED_ORIGINS",
                "https://a.example.com,http://localhost:5173",
            )]),
        )
        .unwrap();
        assert_eq!(
            s.server.cors_allowed_origins,
            ["https://a.example.com", "http://localhost:5173"]
        );
        for bad in [
            "https://app.example.com/",
            "https://app.example.com/app",
            "app.example.com",
        ] {
            let file =
                format!("[server]\ncors_allowed_origins = [\"https://ok.example\", {bad:?}]\n");
            let e = error_of(Some(&file), &[]);
            assert!(e.contains("server.cors_allowed_origins[1]"), "{bad}: {e}");
        }
    }

    #[test]
    fn trusted_proxies_come_from_a_comma_separated_variable_and_bad_ones_are_named() {
        let dir = dir_with(None);
        let s = Settings::load(dir.path(), &HashMap::new()).unwrap();
        assert_eq!(s.server.trusted_proxies.clone(), TrustedProxies::default());
        let s = Settings::load(
            dir.path(),
            &env(&[("CRM_SYNC__SERVER__TRUSTED_PROXIES", "10.0.0.0/8,192.0.2.7")]),
        )
        .unwrap();
        let proxies = s.server.trusted_proxies.clone();
        assert!(proxies.trusts("10.9.8.7".parse().unwrap()));
        assert!(proxies.trusts("192.0.2.7".parse().unwrap()));
        assert!(!proxies.trusts("192.0.2.8".parse().unwrap()));
        let e = error_of(
            Some("[server]\ntrusted_proxies = [\"10.0.0.1\", \"proxy.local\"]\n"),
            &[],
        );
        assert!(e.contains("server.trusted_proxies[1]"), "{e}");
    }

    #[test]
    fn retention_has_defaults_takes_variables_and_refuses_zero() {
        let dir = dir_with(None);
        let s = Settings::load(dir.path(), &HashMap::new()).unwrap();
        assert_eq!(
            (s.retention.jobs_days, s.retention.webhook_events_days),
            (30, 7)
        );
        assert_eq!(s.retention.interval(), Duration::from_secs(3600));
        let s = Settings::load(
            dir.path(),
            &env(&[("CRM_SYNC__RETENTION__JOBS_DAYS", "90")]),
        )
        .unwrap();
        assert_eq!(s.retention.jobs_days, 90);
        let e = error_of(Some("[retention]\nwebhook_events_days = 0\n"), &[]);
        assert!(e.contains("retention.webhook_events_days"), "{e}");
        let e = error_of(Some("[retention]\njob_days = 3\n"), &[]);
        assert!(e.contains("job_days"), "{e}");
    }

    #[test]
    fn the_pull_lookback_is_seconds_or_a_duration_and_defaults_to_five_minutes() {
        let dir = dir_with(None);
        let s = Settings::load(dir.path(), &HashMap::new()).unwrap();
        assert_eq!(s.sync.pull_lookback, crate::defaults::PULL_LOOKBACK);
        for (text, secs) in [
            ("pull_lookback = 90", 90),
            ("pull_lookback = 0", 0),
            ("pull_lookback = \"45s\"", 45),
            ("pull_lookback = \"10m\"", 600),
            ("pull_lookback = \"1h30m\"", 5400),
            ("pull_lookback = \"120\"", 120),
        ] {
            let dir = dir_with(Some(&format!("[sync]\n{text}\n")));
            let s = Settings::load(dir.path(), &HashMap::new()).unwrap();
            assert_eq!(s.sync.pull_lookback, Duration::from_secs(secs), "{text}");
        }
        let s =
            Settings::load(dir.path(), &env(&[("CRM_SYNC__SYNC__PULL_LOOKBACK", "30")])).unwrap();
        assert_eq!(s.sync.pull_lookback, Duration::from_secs(30));
        let s =
            Settings::load(dir.path(), &env(&[("CRM_SYNC__SYNC__PULL_LOOKBACK", "2m")])).unwrap();
        assert_eq!(s.sync.pull_lookback, Duration::from_secs(120));
    }

    #[test]
    fn a_bad_pull_lookback_is_refused_naming_the_key() {
        for bad in [
            "pull_lookback = -5",
            "pull_lookback = 1.5",
            "pull_lookback = true",
            "pull_lookback = \"five minutes\"",
            "pull_lookback = \"5x\"",
            "pull_lookback = \"m\"",
            "pull_lookback = \"\"",
            "pull_lookback = \"30s5m\"",
            "pull_lookback = \"8d\"",
            "pull_lookback = \"200h\"",
        ] {
            let e = error_of(Some(&format!("[sync]\n{bad}\n")), &[]);
            assert!(e.contains("sync.pull_lookback"), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1, "one line: {e}");
        }
        let e = error_of(None, &[("CRM_SYNC__SYNC__PULL_LOOKBACK", "soon")]);
        assert!(
            e.contains("sync.pull_lookback") && e.contains("soon"),
            "{e}"
        );
    }
}
