//! The push engine end to end: local contacts in a real database (SQLite and PostgreSQL), the
//! in-process HubSpot sandbox over real HTTP, and jobs run through the real queue (`enqueue`,
//! then the worker's `process`, which builds the real `Progress`).

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::TestDb;
use crm_sync::hubspot::{
    Auth, Backoff, ClientConfig, HubSpotClient, MemoryTokenStore, OAuthApp, Operation,
};
use crm_sync::ids::{ContactId, JobId};
use crm_sync::jobs::model::{
    Counts, Job, JobAction, JobSpec, JobStatus, PushCounts, PushMode, Trigger,
};
use crm_sync::jobs::queue::SyncTask;
use crm_sync::jobs::runner::StopCheck;
use crm_sync::jobs::worker::{Settled, process};
use crm_sync::jobs::{EnqueueRequest, JobRunner, RetryPolicy, enqueue};
use crm_sync::sandbox::{HubSpotProfile, Sandbox, SandboxArgs, SandboxContact, SandboxHandle};
use crm_sync::secret::Secret;
use crm_sync::store::{NewContact, Store, Tombstone, TombstoneReason};
use crm_sync::sync::keys::ExternalKeys;
use crm_sync::sync::push::{EXTERNAL_KEY, PushConfig, Pusher};
use crm_sync::webhooks::{WebhookEvent, process_events};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

// ---- the test environment ------------------------------------------------------------

/// A sandbox without limits or faults unless a test asks for them.
fn sandbox_args() -> SandboxArgs {
    SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        rng_seed: Some(7),
        ..SandboxArgs::default()
    }
}

/// The same, answering the way `profile` says HubSpot does.
fn sandbox_args_in(profile: HubSpotProfile) -> SandboxArgs {
    SandboxArgs {
        variants: profile.variants(),
        ..sandbox_args()
    }
}

async fn start_sandbox(args: SandboxArgs) -> SandboxHandle {
    Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("sandbox starts")
}

/// A client of the sandbox with quick retries; `budget` requests per 10 s (0 = unlimited).
fn client_config(hubspot: &SandboxHandle, budget: u32) -> ClientConfig {
    let mut config = ClientConfig::new(hubspot.base_url().parse().expect("sandbox URL"));
    config.requests_per_10s = budget;
    config.search_per_second = 0;
    config.backoff = Backoff {
        base: Duration::from_millis(5),
        max: Duration::from_millis(50),
    };
    config
}

/// A database, a sandbox, and a push engine whose client talks to the sandbox.
struct Env {
    store: Store,
    hubspot: SandboxHandle,
    pusher: Arc<Pusher>,
    _db: TestDb,
}

/// One local row as stored, with its push bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct Row {
    id: i64,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    hs_object_id: Option<String>,
    local_version: i64,
    pushed_version: i64,
}

impl Env {
    async fn new(db: TestDb, profile: HubSpotProfile) -> Env {
        Env::with(db, sandbox_args_in(profile), 0, PushConfig::default()).await
    }

    /// `client_budget`: the client's requests per 10 s (0 = no client-side limit).
    async fn with(db: TestDb, args: SandboxArgs, client_budget: u32, config: PushConfig) -> Env {
        let hubspot = start_sandbox(args).await;
        let auth = Auth::PrivateApp(Secret::new(hubspot.access_token()));
        let client =
            HubSpotClient::new(client_config(&hubspot, client_budget), auth).expect("client");
        Env::assemble(db, hubspot, client, config).await
    }

    /// The same with an OAuth connection granted `scopes`, installed through the sandbox's
    /// authorize page as a browser would.
    async fn with_oauth(db: TestDb, args: SandboxArgs, scopes: &[&str], config: PushConfig) -> Env {
        let hubspot = start_sandbox(args).await;
        let app = OAuthApp {
            client_id: hubspot.client_id().to_owned(),
            client_secret: Secret::new(hubspot.client_secret()),
            authorize_url: hubspot.authorize_url().parse().expect("authorize URL"),
            redirect_uri: "http://localhost:3001/oauth-callback"
                .parse()
                .expect("redirect"),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            optional_scopes: Vec::new(),
        };
        let auth = Auth::OAuth {
            app,
            tokens: Arc::new(MemoryTokenStore::default()),
        };
        let client = HubSpotClient::new(client_config(&hubspot, 0), auth).expect("client");
        let link = client.authorize_url("state-1").expect("install link");
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("browser");
        let answer = browser.get(link).send().await.expect("authorize page");
        let location = answer.headers()["location"]
            .to_str()
            .expect("redirect")
            .to_owned();
        let back = url::Url::parse(&location).expect("redirect URL");
        let code = back
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code");
        client.connect(&code).await.expect("code exchange");
        Env::assemble(db, hubspot, client, config).await
    }

    async fn assemble(
        db: TestDb,
        hubspot: SandboxHandle,
        client: HubSpotClient,
        config: PushConfig,
    ) -> Env {
        Env {
            store: db.store().await,
            hubspot,
            pusher: Arc::new(Pusher::new(client, config)),
            _db: db,
        }
    }

    fn runner(&self) -> Arc<dyn JobRunner> {
        self.pusher.clone()
    }

    async fn insert(&self, contacts: &[(Option<&str>, Option<&str>, Option<&str>)]) {
        let batch: Vec<NewContact> = contacts
            .iter()
            .map(|(email, first, last)| NewContact {
                email: email.map(str::to_owned),
                first_name: first.map(str::to_owned),
                last_name: last.map(str::to_owned),
            })
            .collect();
        self.store.insert_contacts(&batch).await.expect("insert");
    }

    /// `n` local contacts `person{i}@acme.io` / `First{i}` / `Last{i}`, i from 1; every
    /// `without_email_every`-th has no email (0: all have one).
    async fn insert_people(&self, n: usize, without_email_every: usize) {
        let batch: Vec<NewContact> = (1..=n)
            .map(|i| NewContact {
                email: (without_email_every == 0 || i % without_email_every != 0)
                    .then(|| format!("person{i}@acme.io")),
                first_name: Some(format!("First{i}")),
                last_name: Some(format!("Last{i}")),
            })
            .collect();
        self.store.insert_contacts(&batch).await.expect("insert");
    }

    /// Contacts already in HubSpot (email, first name, last name).
    fn in_hubspot(&self, contacts: &[(&str, &str, &str)]) -> Vec<String> {
        self.hubspot.insert_contacts(
            contacts
                .iter()
                .map(|(email, first, last)| {
                    BTreeMap::from([
                        ("email".to_owned(), (*email).to_owned()),
                        ("firstname".to_owned(), (*first).to_owned()),
                        ("lastname".to_owned(), (*last).to_owned()),
                    ])
                })
                .collect(),
        )
    }

    /// Enqueues a push and runs it to its end through the worker's code, as often as the queue
    /// would (a transient failure hands the job back; the next run resumes it).
    async fn push(&self, mode: PushMode) -> Job {
        let id = self.enqueue(mode).await;
        self.run_to_end(id).await
    }

    async fn enqueue(&self, mode: PushMode) -> JobId {
        let enqueued = enqueue(
            &self.store,
            EnqueueRequest {
                spec: JobSpec::from(JobAction::Push { mode }),
                trigger: Trigger::Cli,
                force: false,
            },
        )
        .await
        .expect("enqueue");
        assert!(enqueued.created, "no other push is active");
        enqueued.job.id
    }

    async fn run_to_end(&self, id: JobId) -> Job {
        for _ in 0..30 {
            match self.run_once(id, Arc::new(|| false)).await {
                Settled::Finished(_) => break,
                Settled::Retrying | Settled::Requeued => continue,
                other => panic!("unexpected settlement {other}"),
            }
        }
        let job = self.job(id).await;
        assert!(job.status.is_terminal(), "the job ended: {job:#?}");
        job
    }

    /// One run of the job, as a worker's delivery handler makes it.
    async fn run_once(&self, id: JobId, stop: StopCheck) -> Settled {
        let record = self
            .store
            .get_job_record(id)
            .await
            .expect("read job")
            .expect("job exists");
        let task = SyncTask {
            job_id: id,
            delivery: record.delivery.expect("the job has a delivery"),
        };
        let retry = RetryPolicy {
            max_attempts: 30,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        };
        process(
            &self.store,
            &self.runner(),
            retry,
            &task,
            "test-worker",
            stop,
        )
        .await
        .expect("settle the run")
    }

    async fn job(&self, id: JobId) -> Job {
        self.store
            .get_job(id)
            .await
            .expect("read job")
            .expect("job exists")
    }

    async fn rows(&self) -> Vec<Row> {
        const SQL: &str = "SELECT id, email, first_name, last_name, hs_object_id, \
                           local_version, pushed_version FROM contacts ORDER BY id";
        if let Some(pool) = self.store.pg_pool() {
            sqlx::query_as(SQL).fetch_all(pool).await.expect("rows")
        } else {
            let pool = self.store.sqlite_pool().expect("a pool");
            sqlx::query_as(SQL).fetch_all(pool).await.expect("rows")
        }
    }

    async fn execute(&self, sql: &'static str, a: Option<&str>, b: i64) {
        if let Some(pool) = self.store.pg_pool() {
            sqlx::query(sql)
                .bind(a)
                .bind(b)
                .execute(pool)
                .await
                .map(drop)
        } else {
            let pool = self.store.sqlite_pool().expect("a pool");
            sqlx::query(sql)
                .bind(a)
                .bind(b)
                .execute(pool)
                .await
                .map(drop)
        }
        .expect("execute");
    }

    /// The row's tombstone, if HubSpot deleted its contact.
    async fn tombstone(&self, id: i64) -> Option<Tombstone> {
        self.store
            .get_contact(ContactId(id))
            .await
            .expect("read contact")
            .expect("row exists")
            .hubspot_deleted
    }

    async fn set_first_name(&self, id: i64, name: &str) {
        self.execute(
            "UPDATE contacts SET first_name = $1 WHERE id = $2",
            Some(name),
            id,
        )
        .await;
    }

    async fn set_email(&self, id: i64, email: Option<&str>) {
        self.execute("UPDATE contacts SET email = $1 WHERE id = $2", email, id)
            .await;
    }

    /// Sets a row's link by hand (as a pull or a lost commit might leave it).
    async fn set_link(&self, id: i64, hs_object_id: Option<&str>) {
        self.execute(
            "UPDATE contacts SET hs_object_id = $1 WHERE id = $2",
            hs_object_id,
            id,
        )
        .await;
    }

    async fn mark_pushed(&self, id: i64) {
        const SQL: &str = "UPDATE contacts SET pushed_version = local_version WHERE id = $1";
        if let Some(pool) = self.store.pg_pool() {
            sqlx::query(SQL).bind(id).execute(pool).await.map(drop)
        } else {
            let pool = self.store.sqlite_pool().expect("a pool");
            sqlx::query(SQL).bind(id).execute(pool).await.map(drop)
        }
        .expect("mark pushed");
    }

    fn hubspot_by_id(&self) -> HashMap<String, SandboxContact> {
        self.hubspot
            .contacts()
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect()
    }

    fn writes(&self) -> u64 {
        let metrics = self.pusher.client().metrics();
        [
            Operation::BatchCreate,
            Operation::BatchUpdate,
            Operation::BatchUpsert,
            Operation::CreateProperty,
        ]
        .iter()
        .map(|op| {
            ["2xx", "3xx", "4xx", "429", "5xx", "network"]
                .iter()
                .map(|class| metrics.requests(*op, class))
                .sum::<u64>()
        })
        .sum()
    }

    fn sandbox_calls(&self, operation: &str) -> u64 {
        self.hubspot
            .stats()
            .by_operation
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Every local row is linked to its own HubSpot contact, and HubSpot holds no contact
    /// twice (see `common::pushed`).
    /// Waits up to `patience` for the sandbox to hold at least `count` contacts.
    async fn hubspot_reaches(&self, count: u64, patience: Duration) -> bool {
        let until = std::time::Instant::now() + patience;
        while (self.hubspot.contact_count() as u64) < count {
            if std::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    async fn assert_one_hubspot_contact_per_row(&self) {
        let rows = common::pushed::linked_rows(&self.store).await;
        common::pushed::assert_one_hubspot_contact_per_row(
            &rows,
            &self.hubspot.contacts(),
            &self.keys().await,
        );
    }

    /// This database's external keys.
    async fn keys(&self) -> ExternalKeys {
        ExternalKeys::new(&self.store.installation().await.expect("installation"))
    }
}

/// Another session holding the contacts table's write lock: the push still reads candidates and
/// talks to HubSpot, but its page commits wait.
enum WriteLock {
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

impl WriteLock {
    async fn take(store: &Store) -> WriteLock {
        if let Some(pool) = store.pg_pool() {
            let mut tx = pool.begin().await.expect("begin");
            sqlx::query("LOCK TABLE contacts IN EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .expect("lock contacts");
            WriteLock::Postgres(tx)
        } else {
            let pool = store.sqlite_pool().expect("a pool");
            WriteLock::Sqlite(
                pool.begin_with("BEGIN IMMEDIATE")
                    .await
                    .expect("write lock"),
            )
        }
    }

    async fn release(self) {
        match self {
            WriteLock::Postgres(tx) => tx.rollback().await.expect("unlock"),
            WriteLock::Sqlite(tx) => tx.rollback().await.expect("unlock"),
        }
    }
}

fn push_counts(job: &Job) -> PushCounts {
    match job.counts {
        Counts::Push(c) => c,
        Counts::Pull(_) => panic!("not a push: {job:?}"),
    }
}

/// A HubSpot deletion webhook event (`kind`: `contact.deletion` or `contact.privacyDeletion`).
fn deletion_event(event_id: u64, kind: &str, hs_object_id: &str) -> WebhookEvent {
    let value = serde_json::json!({
        "eventId": event_id, "subscriptionId": 1, "portalId": 1000001,
        "occurredAt": 1_700_000_000_000_i64 + event_id as i64, "subscriptionType": kind,
        "attemptNumber": 0, "objectId": hs_object_id.parse::<u64>().expect("numeric id"),
        "changeSource": "CRM", "appId": 1,
    });
    WebhookEvent::from_json(value).expect("a webhook event")
}

fn counts(total: u64, created: u64, linked: u64, updated: u64, failed: u64) -> PushCounts {
    PushCounts {
        total,
        created,
        linked,
        updated,
        failed,
        skipped: 0,
        ..PushCounts::default()
    }
}

/// Uses up the sandbox's 10-second window (until one call is refused), so that the next job
/// meets 429s however slowly this machine runs; returns the 429 count at that point. Reads
/// the sandbox drops (an injected fault) count like any other call.
async fn fill_rate_window(sandbox: &SandboxHandle) -> u64 {
    let http = reqwest::Client::new();
    let url = format!("{}/crm/v3/objects/contacts?limit=1", sandbox.base_url());
    for _ in 0..1_000 {
        let answer = http
            .get(&url)
            .bearer_auth(sandbox.access_token())
            .send()
            .await;
        if answer.is_ok_and(|a| a.status() == reqwest::StatusCode::TOO_MANY_REQUESTS) {
            break;
        }
    }
    let limited = sandbox.stats().rate_limited;
    assert!(limited > 0, "the window filled up");
    limited
}

/// A push into a HubSpot that may or may not have its contacts: everything is linked, nothing
/// failed, and `created + linked` is everything.
fn assert_all_pushed(job: &Job, n: u64) {
    assert_eq!(job.status, JobStatus::Succeeded, "{job:#?}");
    let c = push_counts(job);
    assert!(c.is_consistent(), "{c:?}");
    assert_eq!(c.total, n, "{c:?}");
    assert_eq!(c.failed, 0, "{:#?}", job.errors);
    assert_eq!(c.created + c.linked + c.updated, n, "{c:?}");
    assert_eq!(job.progress.processed, n);
    assert_eq!(job.progress.total, Some(n));
}

// ---- link mode -----------------------------------------------------------------------

backend_tests! {
    async fn link_mode_creates_new_contacts_with_names_and_the_external_key(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.insert(&[
            (Some("ada@acme.io"), Some("Ada"), Some("Lovelace")),
            (Some("grace@acme.io"), Some("Grace"), None),
            (None, Some("Alan"), Some("Turing")),
        ])
        .await;

        let job = env.push(PushMode::Link).await;

        assert_eq!(job.status, JobStatus::Succeeded, "{job:#?}");
        assert_eq!(push_counts(&job), counts(3, 3, 0, 0, 0));
        assert!(job.errors.is_empty());
        let hubspot = env.hubspot_by_id();
        let keys = env.keys().await;
        for row in env.rows().await {
            let id = row.hs_object_id.clone().expect("linked");
            let contact = &hubspot[&id];
            assert_eq!(contact.email(), row.email.as_deref());
            assert_eq!(contact.properties.get("firstname"), row.first_name.as_ref());
            assert_eq!(contact.properties.get("lastname"), row.last_name.as_ref());
            assert_eq!(contact.properties.get(EXTERNAL_KEY), Some(&keys.key(ContactId(row.id))));
            assert_eq!(row.pushed_version, row.local_version, "marked pushed: {row:?}");
        }
        assert_eq!(env.hubspot.contact_count(), 3);
    }

    async fn contacts_already_in_hubspot_are_linked_and_their_properties_left_alone(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let existing = env.in_hubspot(&[
            ("Ada@ACME.io", "Augusta Ada", "King"),
            ("grace@acme.io", "Grace Brewster", "Hopper"),
        ]);
        env.insert(&[
            (Some("ada@acme.io"), Some("Ada"), Some("Lovelace")),
            (Some("GRACE@acme.io "), Some("Grace"), Some("Hopper")),
        ])
        .await;

        let job = env.push(PushMode::Link).await;

        assert_eq!(push_counts(&job), counts(2, 0, 2, 0, 0));
        let rows = env.rows().await;
        assert_eq!(rows[0].hs_object_id.as_ref(), Some(&existing[0]));
        assert_eq!(rows[1].hs_object_id.as_ref(), Some(&existing[1]));
        let ada = env.hubspot.contact(&existing[0]).expect("still there");
        assert_eq!(ada.properties["firstname"], "Augusta Ada");
        assert_eq!(ada.properties["lastname"], "King");
        assert!(!ada.properties.contains_key(EXTERNAL_KEY), "not touched");
        assert_eq!(env.hubspot.contact_count(), 2);
        assert!(rows.iter().all(|r| r.pushed_version == r.local_version));
    }

    async fn a_batch_mixing_known_and_new_contacts_links_the_known_and_creates_the_rest(db: TestDb, profile: HubSpotProfile) {
        // One page at a time, so that the first page meets the existing contacts by creating
        // (HubSpot refuses the batch) and the later pages read by email first.
        let config = PushConfig { pages_in_flight: 1, ..PushConfig::default() };
        let env = Env::with(db, sandbox_args_in(profile), 0, config).await;
        env.insert_people(250, 0).await;
        let known: Vec<(String, &str, &str)> = (1..=250)
            .filter(|i| i % 3 == 0)
            .map(|i| (format!("Person{i}@Acme.io"), "Known", "Before"))
            .collect();
        let known_refs: Vec<(&str, &str, &str)> =
            known.iter().map(|(e, f, l)| (e.as_str(), *f, *l)).collect();
        env.in_hubspot(&known_refs);

        let job = env.push(PushMode::Link).await;

        assert_eq!(push_counts(&job), counts(250, 167, 83, 0, 0));
        assert_eq!(env.hubspot.contact_count(), 250);
        env.assert_one_hubspot_contact_per_row().await;
        let hubspot = env.hubspot_by_id();
        for row in env.rows().await {
            let contact = &hubspot[row.hs_object_id.as_deref().expect("linked")];
            if row.id % 3 == 0 {
                assert_eq!(contact.properties["firstname"], "Known", "left alone");
            } else {
                assert_eq!(contact.properties.get("firstname"), row.first_name.as_ref());
            }
        }
        assert!(
            env.sandbox_calls("contacts.batch_read") >= 3,
            "pages after the first conflict read by email first"
        );
    }

    async fn contacts_without_email_are_pushed_and_never_duplicated(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.insert(&[
            (None, Some("Alan"), Some("Turing")),
            (None, Some("Kurt"), None),
            (Some("ada@acme.io"), Some("Ada"), None),
        ])
        .await;
        let first = env.push(PushMode::Link).await;
        assert_eq!(push_counts(&first), counts(3, 3, 0, 0, 0));

        // As if the first job's commit had been lost after HubSpot applied its creates: the
        // rows are candidates again, and only the external key can find them in HubSpot.
        for row in env.rows().await {
            env.set_link(row.id, None).await;
        }
        let again = env.push(PushMode::Link).await;

        assert_eq!(push_counts(&again), counts(3, 0, 3, 0, 0));
        assert_eq!(env.hubspot.contact_count(), 3, "no duplicate");
        env.assert_one_hubspot_contact_per_row().await;
        let rerun = env.push(PushMode::Link).await;
        assert_eq!(push_counts(&rerun), counts(0, 0, 0, 0, 0));
    }

    async fn invalid_emails_fail_with_hubspots_reason_while_the_rest_is_pushed(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.insert_people(120, 0).await;
        env.insert(&[
            (Some("ada@acme.test"), Some("Ada"), None),
            (Some("not-an-email"), Some("Bob"), None),
        ])
        .await;

        let job = env.push(PushMode::Link).await;

        assert_eq!(job.status, JobStatus::Succeeded, "partial failures do not fail the job");
        assert_eq!(push_counts(&job), counts(122, 120, 0, 0, 2));
        assert_eq!(job.errors.len(), 2);
        let rows = env.rows().await;
        for (error, email) in job.errors.iter().zip(["ada@acme.test", "not-an-email"]) {
            assert_eq!(error.email.as_deref(), Some(email));
            let row = rows.iter().find(|r| Some(r.id) == error.contact_id.map(|c| c.0));
            let row = row.expect("the error names its row");
            assert_eq!(row.hs_object_id, None);
            assert_eq!(row.pushed_version, 0, "not marked pushed");
            assert!(
                error.reason.contains("email") && error.reason.contains(email),
                "HubSpot's reason: {}",
                error.reason
            );
        }
        assert_eq!(env.hubspot.contact_count(), 120);

        // Failed records stay candidates for the next job.
        let again = env.push(PushMode::Link).await;
        assert_eq!(push_counts(&again), counts(2, 0, 0, 0, 2));
    }

    async fn a_rerun_with_nothing_changed_considers_nothing_and_calls_hubspot_not_at_all(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.insert_people(150, 7).await;
        let first = env.push(PushMode::Link).await;
        assert_eq!(push_counts(&first).created, 150);
        let calls = env.pusher.client().metrics().requests_total();
        let writes = env.writes();

        let rerun = env.push(PushMode::Link).await;

        assert_eq!(rerun.status, JobStatus::Succeeded);
        assert_eq!(push_counts(&rerun), counts(0, 0, 0, 0, 0));
        assert_eq!(rerun.progress.total, Some(0));
        assert_eq!(env.writes(), writes, "no write call");
        assert_eq!(env.pusher.client().metrics().requests_total(), calls, "no call at all");
    }

    async fn a_local_edit_of_a_linked_contact_updates_hubspot(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.insert_people(5, 0).await;
        env.push(PushMode::Link).await;
        let rows = env.rows().await;
        env.set_first_name(rows[1].id, "Renamed").await;
        env.set_email(rows[3].id, Some("New.Address@Acme.io")).await;
        env.set_email(rows[4].id, None).await;

        let job = env.push(PushMode::Link).await;

        assert_eq!(push_counts(&job), counts(3, 0, 0, 3, 0));
        let hubspot = env.hubspot_by_id();
        let after = env.rows().await;
        let contact = |i: usize| &hubspot[after[i].hs_object_id.as_deref().expect("linked")];
        assert_eq!(contact(1).properties["firstname"], "Renamed");
        assert_eq!(contact(3).email(), Some("new.address@acme.io"));
        assert_eq!(contact(4).email(), None, "a removed email is cleared in HubSpot");
        assert_eq!(contact(0).properties["firstname"], "First1");
        assert!(after.iter().all(|r| r.pushed_version == r.local_version));
        assert_eq!(after.iter().map(|r| &r.hs_object_id).collect::<Vec<_>>(),
                   rows.iter().map(|r| &r.hs_object_id).collect::<Vec<_>>(), "links kept");
        let rerun = env.push(PushMode::Link).await;
        assert_eq!(push_counts(&rerun).total, 0);
    }

    async fn a_linked_contact_deleted_in_hubspot_is_tombstoned_skipped_and_never_created_again(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.insert_people(3, 0).await;
        env.push(PushMode::Link).await;
        let rows = env.rows().await;
        let old = rows[0].hs_object_id.clone().expect("linked");
        env.pusher
            .client()
            .archive_contact(&crm_sync::ids::HsObjectId(old.clone()))
            .await
            .expect("delete in HubSpot");
        env.set_first_name(rows[0].id, "Back").await;

        let job = env.push(PushMode::Link).await;

        assert_eq!(push_counts(&job), PushCounts { skipped: 1, ..counts(1, 0, 0, 0, 0) });
        assert_eq!(env.hubspot.contacts().len(), 2, "nothing created in HubSpot");
        let row = &env.rows().await[0];
        assert_eq!(row.hs_object_id, None, "the link is cleared");
        assert_eq!(row.first_name.as_deref(), Some("Back"), "the row's own data stays");
        let tombstone = env.tombstone(rows[0].id).await.expect("tombstoned");
        assert_eq!(tombstone.reason, TombstoneReason::Deleted);
        assert_eq!(tombstone.hs_object_id.map(|h| h.0), Some(old));

        let rerun = env.push(PushMode::Upsert).await;
        assert_eq!(push_counts(&rerun).total, 0, "a tombstoned contact is no candidate, in any mode");
        assert_eq!(env.hubspot.contacts().len(), 2);

        // Only a user's restore lets push create it again.
        env.store.restore_contact(ContactId(rows[0].id)).await.expect("restore");
        let restored = env.push(PushMode::Link).await;
        assert_eq!(push_counts(&restored), counts(1, 1, 0, 0, 0));
        let row = &env.rows().await[0];
        let new = row.hs_object_id.clone().expect("linked again");
        assert_eq!(env.hubspot.contact(&new).expect("created").properties["firstname"], "Back");
        assert_eq!(env.tombstone(rows[0].id).await, None);
    }

    async fn contacts_deleted_by_webhook_are_never_pushed_again_and_a_privacy_deletion_stays(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.insert_people(3, 0).await;
        env.push(PushMode::Link).await;
        let rows = env.rows().await;
        let hs = |i: usize| rows[i].hs_object_id.clone().expect("linked");
        for i in [0, 1] {
            env.pusher.client().archive_contact(&crm_sync::ids::HsObjectId(hs(i))).await.expect("delete");
        }
        let events = [
            deletion_event(1, "contact.deletion", &hs(0)),
            deletion_event(2, "contact.privacyDeletion", &hs(1)),
        ];
        let outcome = process_events(&env.store, &events).await.expect("apply the webhooks");
        assert_eq!(outcome.unlinked, vec![ContactId(rows[0].id), ContactId(rows[1].id)]);
        env.set_first_name(rows[0].id, "Changed").await;
        env.set_first_name(rows[1].id, "Changed").await;
        let creates = env.sandbox_calls("contacts.batch_create");

        let job = env.push(PushMode::Link).await;

        assert_eq!(push_counts(&job).total, 0, "neither is a candidate");
        assert_eq!(env.sandbox_calls("contacts.batch_create"), creates, "nothing created");
        assert_eq!(env.tombstone(rows[0].id).await.map(|t| t.reason), Some(TombstoneReason::Deleted));
        let private = env.tombstone(rows[1].id).await.expect("tombstoned");
        assert_eq!(private.reason, TombstoneReason::PrivacyDeletion);
        assert_eq!(private.hs_object_id.map(|h| h.0), Some(hs(1)), "the deleted id is kept for reference");
        // A deletion HubSpot sends after the privacy deletion never makes it a lesser one.
        process_events(&env.store, &[deletion_event(3, "contact.deletion", &hs(1))]).await.expect("apply");
        assert_eq!(env.tombstone(rows[1].id).await.map(|t| t.reason), Some(TombstoneReason::PrivacyDeletion));
    }

    async fn two_local_contacts_cannot_claim_one_hubspot_contact(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let ids = env.in_hubspot(&[("shared@acme.io", "Shared", "Person")]);
        env.insert(&[
            (None, Some("Holder"), None),
            (Some("shared@acme.io"), Some("Claimant"), None),
            (Some("other@acme.io"), Some("Other"), None),
        ])
        .await;
        let rows = env.rows().await;
        // The first row holds the HubSpot contact already (as a pull might have linked it).
        env.set_link(rows[0].id, Some(&ids[0])).await;
        env.mark_pushed(rows[0].id).await;

        let job = env.push(PushMode::Link).await;

        assert_eq!(push_counts(&job), counts(2, 1, 0, 0, 1));
        assert_eq!(job.errors.len(), 1);
        assert_eq!(job.errors[0].contact_id.map(|c| c.0), Some(rows[1].id));
        assert!(
            job.errors[0].reason.contains(&format!("already linked to local contact {}", rows[0].id)),
            "{}",
            job.errors[0].reason
        );
        let after = env.rows().await;
        assert_eq!(after[0].hs_object_id.as_ref(), Some(&ids[0]));
        assert_eq!(after[1].hs_object_id, None);
        assert!(after[2].hs_object_id.is_some());
    }

    async fn a_first_push_costs_one_call_per_100_new_contacts(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.insert_people(300, 0).await;

        let job = env.push(PushMode::Link).await;

        assert_eq!(push_counts(&job), counts(300, 300, 0, 0, 0));
        assert_eq!(env.sandbox_calls("contacts.batch_create"), 3);
        assert_eq!(env.sandbox_calls("contacts.batch_read"), 0);
        assert_eq!(env.sandbox_calls("properties.get"), 1);
        assert_eq!(env.sandbox_calls("properties.create"), 1);
    }

    async fn access_tokens_expiring_during_a_push_are_refreshed_without_losing_a_contact(db: TestDb, profile: HubSpotProfile) {
        let args = SandboxArgs { latency_ms: 5, ..sandbox_args_in(profile) };
        let scopes = [
            "crm.objects.contacts.read",
            "crm.objects.contacts.write",
            "crm.schemas.contacts.read",
            "crm.schemas.contacts.write",
        ];
        let config = PushConfig { page_size: 20, ..PushConfig::default() };
        let env = Env::with_oauth(db, args, &scopes, config).await;
        env.insert_people(600, 10).await;
        let id = env.enqueue(PushMode::Link).await;
        // Every access token HubSpot issued expires, again and again, while the push runs.
        let expiring = {
            let expire = format!("{}/_sandbox/expire-tokens", env.hubspot.base_url());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let _ = http.post(&expire).send().await;
                }
            })
        };

        let job = env.run_to_end(id).await;
        expiring.abort();

        assert_all_pushed(&job, 600);
        assert!(env.pusher.client().metrics().token_refreshes() >= 2, "refreshed mid-push");
        assert_eq!(env.hubspot.contact_count(), 600);
        env.assert_one_hubspot_contact_per_row().await;
    }

    async fn a_connection_without_the_write_scope_fails_the_job_with_the_reason(db: TestDb, profile: HubSpotProfile) {
        let scopes = ["crm.objects.contacts.read"];
        let env = Env::with_oauth(db, sandbox_args_in(profile), &scopes, PushConfig::default()).await;
        env.insert_people(3, 0).await;

        let job = env.push(PushMode::Link).await;

        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.attempts, 1, "not retried: it cannot pass by itself");
        let reason = job.error.clone().unwrap_or_default();
        assert!(reason.contains("scope"), "{reason}");
        assert!(env.rows().await.iter().all(|r| r.hs_object_id.is_none()));
    }
}

// ---- upsert mode ---------------------------------------------------------------------

backend_tests! {
    async fn upsert_mode_overwrites_hubspots_values_and_creates_the_rest(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let existing = env.in_hubspot(&[("ada@acme.io", "Augusta Ada", "King")]);
        env.insert(&[
            (Some("ADA@acme.io"), Some("Ada"), Some("Lovelace")),
            (Some("grace@acme.io"), Some("Grace"), Some("Hopper")),
            (None, Some("Alan"), Some("Turing")),
            (Some("bad@acme.test"), Some("Bad"), None),
        ])
        .await;

        let job = env.push(PushMode::Upsert).await;

        assert_eq!(job.status, JobStatus::Succeeded);
        assert_eq!(push_counts(&job), counts(4, 2, 0, 1, 1));
        assert_eq!(job.errors[0].email.as_deref(), Some("bad@acme.test"));
        let ada = env.hubspot.contact(&existing[0]).expect("same contact");
        assert_eq!(ada.properties["firstname"], "Ada");
        assert_eq!(ada.properties["lastname"], "Lovelace");
        let rows = env.rows().await;
        assert_eq!(rows[0].hs_object_id.as_ref(), Some(&existing[0]));
        assert_eq!(
            ada.properties.get(EXTERNAL_KEY),
            Some(&env.keys().await.key(ContactId(rows[0].id))),
            "the external key is written too"
        );
        assert_eq!(env.hubspot.contact_count(), 3);
        assert_eq!(env.sandbox_calls("contacts.batch_upsert"), 2, "by email, by external key");

        // A contact without email is upserted by its external key: a lost link finds it again.
        env.set_link(rows[2].id, None).await;
        let again = env.push(PushMode::Upsert).await;
        assert_eq!(push_counts(&again), counts(2, 0, 0, 1, 1));
        assert_eq!(env.hubspot.contact_count(), 3);
        assert_eq!(env.rows().await[2].hs_object_id, rows[2].hs_object_id);
    }

    async fn a_clash_on_the_external_key_links_the_earlier_create_and_upsert_overwrites_it(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.insert_people(40, 0).await;
        // HubSpot already holds the external key of contact 17 on a contact with another
        // email (an earlier create, its email since changed in HubSpot): upserting contact 17
        // by its email clashes on the key, as a 409 for the batch or per input in a 207.
        common::pushed::create_key_property(env.pusher.client()).await;
        let rows = env.rows().await;
        let culprit = rows[16].id;
        let earlier = env.hubspot.insert_contacts(vec![BTreeMap::from([
            ("email".to_owned(), "elsewhere@acme.io".to_owned()),
            (EXTERNAL_KEY.to_owned(), env.keys().await.key(ContactId(culprit))),
        ])]);

        let job = env.push(PushMode::Upsert).await;

        assert_eq!(push_counts(&job), counts(40, 39, 0, 1, 0), "{:#?}", job.errors);
        let rows = env.rows().await;
        assert_eq!(rows[16].hs_object_id.as_ref(), Some(&earlier[0]), "linked to its own create");
        let record = env.hubspot.contact(&earlier[0]).expect("still there");
        assert_eq!(record.email(), Some("person17@acme.io"), "local values won");
        assert_eq!(env.hubspot.contact_count(), 40, "nothing created twice");
        env.assert_one_hubspot_contact_per_row().await;
        if profile == HubSpotProfile::Documented {
            assert!(env.sandbox_calls("contacts.batch_upsert") > 2, "the refused batch was split");
        }
        let rerun = env.push(PushMode::Upsert).await;
        assert_eq!(push_counts(&rerun).total, 0);
    }
}

// ---- conflicts and silence, however HubSpot reports them -----------------------------

backend_tests! {
    async fn two_thousand_contacts_of_which_300_exist_by_email_link_300_and_fail_none(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.insert_people(2000, 0).await;
        let known: Vec<(String, &str, &str)> = (1..=2000)
            .filter(|i| i % 20 < 3)
            .map(|i| (format!("PERSON{i}@acme.io"), "Known", "Before"))
            .collect();
        assert_eq!(known.len(), 300);
        let refs: Vec<(&str, &str, &str)> =
            known.iter().map(|(e, f, l)| (e.as_str(), *f, *l)).collect();
        env.in_hubspot(&refs);

        let job = env.push(PushMode::Link).await;

        assert_eq!(push_counts(&job), counts(2000, 1700, 300, 0, 0), "{:#?}", job.errors);
        assert!(job.errors.is_empty());
        assert_eq!(env.hubspot.contact_count(), 2000);
        env.assert_one_hubspot_contact_per_row().await;
        let hubspot = env.hubspot_by_id();
        for row in env.rows().await.iter().filter(|r| r.id % 20 < 3) {
            let contact = &hubspot[row.hs_object_id.as_deref().expect("linked")];
            assert_eq!(contact.properties["firstname"], "Known", "link mode leaves it alone");
        }
        let rerun = env.push(PushMode::Link).await;
        assert_eq!(push_counts(&rerun).total, 0);
    }

    async fn a_linked_contact_merged_away_in_hubspot_follows_the_survivor_and_is_never_created_again(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.insert_people(2, 0).await;
        let survivor = env.in_hubspot(&[("someone@acme.io", "Some", "One")]).remove(0);
        env.push(PushMode::Link).await;
        let rows = env.rows().await;
        let merged = rows[0].hs_object_id.clone().expect("linked");
        env.pusher
            .client()
            .merge_contacts(
                &crm_sync::ids::HsObjectId(survivor.clone()),
                &crm_sync::ids::HsObjectId(merged.clone()),
            )
            .await
            .expect("merge in HubSpot");
        // A local change makes the row a candidate; its new email is unknown to HubSpot, so a
        // push that took silence for deletion would create a second contact for the person.
        env.set_email(rows[0].id, Some("renamed@acme.io")).await;
        let before = env.hubspot.contact_count();

        let job = env.push(PushMode::Link).await;

        assert_eq!(push_counts(&job), counts(1, 0, 1, 0, 0), "{:#?}", job.errors);
        assert_eq!(env.hubspot.contact_count(), before, "no contact created");
        assert_eq!(env.rows().await[0].hs_object_id.as_ref(), Some(&survivor), "re-linked");

        // The next push writes the local values over the survivor, by its id.
        let next = env.push(PushMode::Link).await;
        assert_eq!(push_counts(&next), counts(1, 0, 0, 1, 0), "{:#?}", next.errors);
        let record = env.hubspot.contact(&survivor).expect("the survivor");
        assert_eq!(record.email(), Some("renamed@acme.io"));
        assert_eq!(env.hubspot.contact_count(), before);
    }

    async fn a_survivor_another_row_holds_is_refused_by_name_and_nothing_is_created(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.insert_people(2, 0).await;
        env.push(PushMode::Link).await;
        let rows = env.rows().await;
        let (merged, survivor) = (
            rows[0].hs_object_id.clone().expect("linked"),
            rows[1].hs_object_id.clone().expect("linked"),
        );
        env.pusher
            .client()
            .merge_contacts(
                &crm_sync::ids::HsObjectId(survivor.clone()),
                &crm_sync::ids::HsObjectId(merged),
            )
            .await
            .expect("merge in HubSpot");
        env.set_email(rows[0].id, Some("renamed@acme.io")).await;

        let job = env.push(PushMode::Link).await;

        assert_eq!(push_counts(&job), counts(1, 0, 0, 0, 1), "{:#?}", job.errors);
        let reason = &job.errors[0].reason;
        assert!(
            reason.contains(&survivor) && reason.contains(&format!("local contact {}", rows[1].id)),
            "names the survivor and its holder: {reason}"
        );
        assert_eq!(env.hubspot.contact_count(), 1, "no second contact for the person");
        assert_eq!(env.rows().await[1].hs_object_id.as_ref(), Some(&survivor));
    }

    async fn five_thousand_contacts_through_5xx_lost_answers_dropped_reads_and_429s_end_exact(db: TestDb, profile: HubSpotProfile) {
        let args = SandboxArgs {
            fault_5xx: 0.1,
            fault_drop_after_write: 0.1,
            fault_drop_read: 0.1,
            requests_per_10s: 100,
            rng_seed: Some(21),
            ..sandbox_args_in(profile)
        };
        // The client believes it may send more than HubSpot allows: HubSpot answers 429s.
        let env = Env::with(db, args, 1_000, PushConfig::default()).await;
        env.insert_people(5000, 10).await;
        let known: Vec<(String, &str, &str)> = (1..=5000)
            .filter(|i| i % 20 == 1)
            .map(|i| (format!("person{i}@acme.io"), "Known", "Before"))
            .collect();
        assert_eq!(known.len(), 250);
        let refs: Vec<(&str, &str, &str)> =
            known.iter().map(|(e, f, l)| (e.as_str(), *f, *l)).collect();
        env.in_hubspot(&refs);
        // HubSpot's window is full when the push starts (the client cannot know).
        let limited_before = fill_rate_window(&env.hubspot).await;

        let job = env.push(PushMode::Link).await;

        assert_all_pushed(&job, 5000);
        let c = push_counts(&job);
        assert!(c.linked >= 250, "the contacts that existed are linked: {c:?}");
        let stats = env.hubspot.stats();
        assert!(stats.faults_5xx > 0 && stats.dropped_after_write > 0, "{stats:?}");
        assert!(stats.rate_limited > limited_before, "the push met 429s: {stats:?}");
        assert_eq!(env.hubspot.contact_count(), 5000, "one HubSpot contact per row");
        env.assert_one_hubspot_contact_per_row().await;
    }
}

// ---- faults, limits, resume ----------------------------------------------------------

/// 1,000 local contacts, every 10th without email, 100 of them (with email) already in
/// HubSpot under other names.
async fn thousand_contacts(env: &Env) {
    env.insert_people(1000, 10).await;
    let known: Vec<(String, &str, &str)> = (1..=1000)
        .filter(|i| i % 10 == 5)
        .map(|i| (format!("person{i}@acme.io"), "Known", "Before"))
        .collect();
    let refs: Vec<(&str, &str, &str)> =
        known.iter().map(|(e, f, l)| (e.as_str(), *f, *l)).collect();
    env.in_hubspot(&refs);
}

backend_tests! {
    async fn answers_lost_after_writes_never_duplicate_a_contact_in_link_mode(db: TestDb, profile: HubSpotProfile) {
        let args = SandboxArgs {
            fault_drop_after_write: 0.3,
            // Pages run concurrently, so which requests draw the seeded drops depends on the
            // order they reach HubSpot, and a run could lose no answer at all: the first
            // write applied always loses its answer, whatever the order.
            fault_drop_first_writes: 1,
            rng_seed: Some(11),
            ..sandbox_args_in(profile)
        };
        let env = Env::with(db, args, 0, PushConfig::default()).await;
        thousand_contacts(&env).await;

        let job = env.push(PushMode::Link).await;

        assert_all_pushed(&job, 1000);
        assert!(push_counts(&job).linked >= 100, "{:?}", push_counts(&job));
        assert!(env.hubspot.stats().dropped_after_write > 0, "faults were injected");
        assert!(env.sandbox_calls("contacts.batch_read") > 0, "lost answers were re-read");
        assert_eq!(env.hubspot.contact_count(), 1000, "one HubSpot contact per local contact");
        env.assert_one_hubspot_contact_per_row().await;
        let rerun = env.push(PushMode::Link).await;
        assert_eq!(push_counts(&rerun).total, 0);
    }

    async fn answers_lost_after_writes_never_duplicate_a_contact_in_upsert_mode(db: TestDb, profile: HubSpotProfile) {
        let args = SandboxArgs {
            fault_drop_after_write: 0.3,
            // Pages run concurrently, so which requests draw the seeded drops depends on the
            // order they reach HubSpot, and a run could lose no answer at all: the first
            // write applied always loses its answer, whatever the order.
            fault_drop_first_writes: 1,
            rng_seed: Some(12),
            ..sandbox_args_in(profile)
        };
        let env = Env::with(db, args, 0, PushConfig::default()).await;
        thousand_contacts(&env).await;

        let job = env.push(PushMode::Upsert).await;

        assert_all_pushed(&job, 1000);
        assert!(env.hubspot.stats().dropped_after_write > 0, "faults were injected");
        assert_eq!(env.hubspot.contact_count(), 1000);
        env.assert_one_hubspot_contact_per_row().await;
        let hubspot = env.hubspot_by_id();
        for row in env.rows().await {
            let contact = &hubspot[row.hs_object_id.as_deref().expect("linked")];
            assert_eq!(contact.properties.get("firstname"), row.first_name.as_ref(), "local wins");
        }
    }

    async fn server_errors_and_rate_limits_keep_the_same_guarantees(db: TestDb, profile: HubSpotProfile) {
        // HubSpot allows 20 requests per 10 s, and its window is full when the push starts
        // (the client cannot know); a quarter of requests fail with a 5xx.
        let args = SandboxArgs {
            fault_5xx: 0.25,
            requests_per_10s: 20,
            rng_seed: Some(13),
            ..sandbox_args_in(profile)
        };
        let config = PushConfig { page_size: 10, ..PushConfig::default() };
        let env = Env::with(db, args, 100, config).await;
        env.insert_people(200, 10).await;
        env.in_hubspot(&[("person15@acme.io", "Known", "Before")]);
        let limited_before = fill_rate_window(&env.hubspot).await;
        let faults_before = env.hubspot.stats().faults_5xx;

        let job = env.push(PushMode::Link).await;

        assert_all_pushed(&job, 200);
        let stats = env.hubspot.stats();
        assert!(stats.rate_limited > limited_before, "the push met 429s: {stats:?}");
        assert!(stats.faults_5xx > faults_before, "the push met 5xx: {stats:?}");
        assert_eq!(env.hubspot.contact_count(), 200);
        env.assert_one_hubspot_contact_per_row().await;
    }

    async fn an_interrupted_push_resumes_from_its_checkpoint(db: TestDb, profile: HubSpotProfile) {
        let config = PushConfig { page_size: 50, ..PushConfig::default() };
        let env = Env::with(db, sandbox_args_in(profile), 0, config).await;
        env.insert_people(500, 9).await;
        let id = env.enqueue(PushMode::Link).await;

        // The worker asks runs to stop after a few pages (a graceful shutdown).
        let asked = Arc::new(AtomicUsize::new(0));
        let stop: StopCheck = {
            let asked = asked.clone();
            Arc::new(move || asked.fetch_add(1, Ordering::SeqCst) >= 3)
        };
        let settled = env.run_once(id, stop).await;

        assert!(matches!(settled, Settled::Requeued), "{settled}");
        let paused = env.job(id).await;
        let done = push_counts(&paused);
        assert!(done.is_consistent());
        assert!(done.total > 0 && done.total < 500, "stopped mid-way: {done:?}");
        assert_eq!(paused.progress.total, Some(500));
        let linked = env.rows().await.iter().filter(|r| r.hs_object_id.is_some()).count();
        assert_eq!(linked as u64, done.total, "committed pages and counts agree");

        let job = env.run_to_end(id).await;

        assert_all_pushed(&job, 500);
        assert_eq!(push_counts(&job).created, 500, "no page was pushed twice");
        assert_eq!(job.attempts, 1, "a graceful stop is not an attempt");
        assert_eq!(env.hubspot.contact_count(), 500);
        env.assert_one_hubspot_contact_per_row().await;
    }

    async fn a_push_killed_between_hubspot_and_its_commit_is_finished_without_duplicates(db: TestDb, profile: HubSpotProfile) {
        let config = PushConfig { page_size: 20, ..PushConfig::default() };
        let env = Env::with(db, sandbox_args_in(profile), 0, config).await;
        env.insert_people(400, 8).await;
        let id = env.enqueue(PushMode::Link).await;
        let run = {
            let (store, runner) = (env.store.clone(), env.runner());
            let record = env.store.get_job_record(id).await.unwrap().unwrap();
            let task = SyncTask { job_id: id, delivery: record.delivery.unwrap() };
            tokio::spawn(async move {
                process(&store, &runner, RetryPolicy::default(), &task, "doomed", Arc::new(|| false))
                    .await
            })
        };
        while env.job(id).await.progress.processed < 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        // Block the run's next commit while its pages in flight reach HubSpot, then kill it:
        // HubSpot holds contacts whose links were never committed. When the lock lands while
        // no page is in flight (the run was between pages, its next step waiting on the same
        // lock), let it go on and take the lock again.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let (lock, committed) = loop {
            let lock = WriteLock::take(&env.store).await;
            let committed = env.job(id).await.progress.processed;
            assert!(committed < 400, "the run ended before a page could be caught in flight");
            if env.hubspot_reaches(committed + 20, Duration::from_secs(2)).await {
                break (lock, committed);
            }
            lock.release().await;
            assert!(std::time::Instant::now() < deadline, "pages in flight reach HubSpot");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        run.abort(); // like kill -9: no page boundary, no hand-back
        let _ = run.await;
        lock.release().await;
        assert_eq!(env.job(id).await.progress.processed, committed);

        let job = env.run_to_end(id).await;

        assert_all_pushed(&job, 400);
        assert_eq!(job.attempts, 2);
        assert!(push_counts(&job).linked >= 20, "applied but uncommitted pages were linked");
        assert_eq!(env.hubspot.contact_count(), 400, "nothing created twice");
        env.assert_one_hubspot_contact_per_row().await;
    }
}
