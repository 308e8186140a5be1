//! What the sandbox's handlers share: its fixed settings, its CRM data and OAuth app, limits,
//! faults, webhooks, counters, the variants in force, and the handle that keeps the state file
//! up to date. A leaf for the handlers (`server`, `api`, `admin`, `persist`): it depends on
//! none of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use poem::http::StatusCode;
use tokio::sync::Notify;

use super::RecordedRequest;
use super::conn::Connections;
use super::crm::Crm;
use super::faults::Faults;
use super::limits::Limits;
use super::oauth::OAuthApp;
use super::seed::ContactGenerator;
use super::variants::{CompanyVariants, Shuffler, Variants};
use super::webhooks::Webhooks;
use crate::credential::Credential;

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Account id.
    pub portal_id: i64,
    /// The private-app token.
    pub access_token: Credential,
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: Credential,
    /// Added to every HubSpot answer.
    pub latency: Duration,
    /// Seed of contacts and faults.
    pub rng_seed: u64,
    /// Index lag of search.
    pub search_delay_ms: u64,
}

/// Request counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// All requests.
    pub requests: AtomicU64,
    /// 429 answers.
    pub rate_limited: AtomicU64,
    /// Injected 5xx answers.
    pub faults_5xx: AtomicU64,
    /// Connections dropped after a write.
    pub dropped: AtomicU64,
    /// Reads answered by dropping the connection.
    pub dropped_reads: AtomicU64,
    /// 401 answers.
    pub unauthorized: AtomicU64,
    /// Requests per operation name.
    pub by_op: Mutex<BTreeMap<&'static str, u64>>,
    /// Answers per status code.
    pub by_status: Mutex<BTreeMap<u16, u64>>,
}

impl Stats {
    pub(crate) fn count(&self, op: Option<&'static str>, status: StatusCode) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(op) = op {
            *lock(&self.by_op).entry(op).or_default() += 1;
        }
        *lock(&self.by_status).entry(status.as_u16()).or_default() += 1;
    }

    /// Zeroes every counter.
    pub(crate) fn reset(&self) {
        for c in [
            &self.requests,
            &self.rate_limited,
            &self.faults_5xx,
            &self.dropped,
            &self.unauthorized,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        lock(&self.by_op).clear();
        lock(&self.by_status).clear();
    }
}

/// The operation name under which the stats count a person's requests ([`super::USER_HEADER`]):
/// they stand for actions in HubSpot's UI, not the app's calls.
pub(crate) const PERSON_OP: &str = "person";

/// Locks a mutex, surviving a poisoned one (a panicked handler must not stop the sandbox).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct State {
    /// Fixed settings.
    pub cfg: Config,
    /// CRM data: contacts, companies, associations.
    pub store: Mutex<Crm>,
    /// HubSpot's account setting "Create and associate companies with contacts".
    pub auto_associate: AtomicBool,
    /// The OAuth app.
    pub oauth: OAuthApp,
    /// Rate limits.
    pub limits: Limits,
    /// Fault dice.
    pub faults: Faults,
    /// Webhook sender, when a URL is configured.
    pub webhooks: Option<Webhooks>,
    /// Killable connections.
    pub connections: Connections,
    /// Counters.
    pub stats: Stats,
    /// Requests kept for conformance tests, when recording.
    pub recorder: Mutex<Option<Vec<RecordedRequest>>>,
    /// Generator of seeded contacts.
    pub generator: Mutex<ContactGenerator>,
    /// How the open choices are answered now (the admin API changes them at run time).
    pub variants: Mutex<Variants>,
    /// How the open choices about companies and associations are answered now.
    pub company_variants: Mutex<CompanyVariants>,
    /// Shuffles batch results under `--result-order shuffled`.
    pub shuffler: Shuffler,
    /// The state file kept up to date, under `--state-file`.
    pub persist: Option<Persist>,
}

impl State {
    /// The variants in force; a request reads them once, so a change applies from the next.
    pub(crate) fn variants(&self) -> Variants {
        *lock(&self.variants)
    }

    /// The company and association variants in force.
    pub(crate) fn company_variants(&self) -> CompanyVariants {
        *lock(&self.company_variants)
    }

    /// Whether HubSpot associates contacts with the company of their email domain.
    pub(crate) fn auto_associates(&self) -> bool {
        self.auto_associate.load(Ordering::Relaxed)
    }

    /// Notes that the account may have changed, so that the state file is saved again.
    pub(crate) fn changed(&self) {
        if let Some(persist) = &self.persist {
            persist.changed();
        }
    }
}

/// Keeps a running sandbox's state file up to date.
#[derive(Debug)]
pub(crate) struct Persist {
    pub(crate) path: PathBuf,
    /// Bumped by every change.
    pub(crate) changes: AtomicU64,
    /// The value of `changes` that the file holds.
    pub(crate) saved: AtomicU64,
    pub(crate) wake: Notify,
    /// One save at a time: two would share the temporary file.
    pub(crate) saving: Mutex<()>,
}

impl Persist {
    /// Saves into `path`, which does not hold this state yet.
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            changes: AtomicU64::new(1),
            saved: AtomicU64::new(0),
            wake: Notify::new(),
            saving: Mutex::new(()),
        }
    }

    /// Saves into `path`, which holds this state already (it was just read from there).
    pub(crate) fn saved(path: PathBuf) -> Self {
        let persist = Self::new(path);
        persist.saved.store(1, Ordering::Release);
        persist
    }

    /// The state file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Notes a change: it is saved within [`super::persist::DEBOUNCE`] plus at most two saves' time (one may
    /// be under way).
    pub(crate) fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
    }
}
