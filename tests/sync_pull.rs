//! Pull (HubSpot → local) end to end, on SQLite and PostgreSQL: the in-process HubSpot sandbox
//! over real HTTP on 127.0.0.1, the real HubSpot client, the sync runner, and the jobs
//! engineer's real queue (`enqueue`, then `process` — what a worker does with a delivery — or
//! the worker runtime itself), so every page goes through the real `Progress`.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::oauth::approve;

use common::TestDb;
use crm_sync::hubspot::{Auth, Backoff, ClientConfig, HubSpotClient, MemoryTokenStore, OAuthApp};
use crm_sync::ids::{ContactId, HsObjectId, JobId};
use crm_sync::jobs::model::{
    Counts, Job, JobAction, JobSpec, JobStatus, PullCounts, PullMode, PushCounts, PushMode, Trigger,
};
use crm_sync::jobs::queue::SyncTask;
use crm_sync::jobs::runner::StopCheck;
use crm_sync::jobs::worker::{RetryPolicy, WorkerConfig, process, run_workers};
use crm_sync::jobs::{EnqueueRequest, JobRunner, enqueue};
use crm_sync::sandbox::{
    HubSpotProfile, Sandbox, SandboxArgs, SandboxHandle, SearchModified, Variants,
};
use crm_sync::secret::Secret;
use crm_sync::store::{Backend, NewContact, Store, Tombstone, TombstoneReason};
use crm_sync::sync::keys::ExternalKeys;
use crm_sync::sync::pull::pull_ids;
use crm_sync::sync::push::EXTERNAL_KEY;
use crm_sync::sync::{SyncContext, SyncRunner};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use url::Url;

// ---- the world a test runs in ---------------------------------------------------------

/// A sandbox without limits or faults unless a test asks for them, answering the way
/// `profile` says HubSpot does.
fn args_in(profile: HubSpotProfile) -> SandboxArgs {
    SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        rng_seed: Some(7),
        variants: profile.variants(),
        ..SandboxArgs::default()
    }
}

/// HubSpot's client defaults pointed at the sandbox, with short backoff steps.
fn client_config(sb: &SandboxHandle) -> ClientConfig {
    let mut config = ClientConfig::new(Url::parse(&sb.base_url()).expect("sandbox url"));
    config.backoff = Backoff {
        base: Duration::from_millis(5),
        max: Duration::from_millis(50),
    };
    config.max_retries = 8;
    config
}

/// A migrated database, a running sandbox and the sync context pointed at it.
struct World {
    store: Store,
    sandbox: Arc<SandboxHandle>,
    ctx: SyncContext,
    _db: TestDb,
}

impl World {
    /// With a private-app token.
    async fn new(db: TestDb, args: SandboxArgs) -> World {
        let sandbox = start_sandbox(args).await;
        let client = HubSpotClient::new(
            client_config(&sandbox),
            Auth::PrivateApp(Secret::new(sandbox.access_token())),
        )
        .expect("client");
        Self::with_client(db, sandbox, client).await
    }

    async fn with_client(db: TestDb, sandbox: SandboxHandle, client: HubSpotClient) -> World {
        World {
            store: db.store().await,
            sandbox: Arc::new(sandbox),
            ctx: SyncContext::new(client),
            _db: db,
        }
    }

    fn runner(&self) -> Arc<dyn JobRunner> {
        Arc::new(SyncRunner::new(self.ctx.clone()))
    }

    /// Enqueues a push and runs it to its end; its counts.
    async fn push(&self, mode: PushMode) -> PushCounts {
        let job = enqueue(
            &self.store,
            EnqueueRequest {
                spec: JobSpec::from(JobAction::Push { mode }),
                trigger: Trigger::Cli,
                force: false,
            },
        )
        .await
        .expect("enqueue")
        .job;
        let job = self.drive(job.id, never_stop()).await;
        assert_eq!(job.status, JobStatus::Succeeded, "{job:#?}");
        match job.counts {
            Counts::Push(c) => c,
            Counts::Pull(_) => panic!("not a push: {job:?}"),
        }
    }

    /// Inserts a local contact without email; its id.
    async fn add_local_without_email(&self, first: &str) -> i64 {
        let before: BTreeSet<i64> = self.rows().await.iter().map(|r| r.id).collect();
        let contact = NewContact {
            email: None,
            first_name: Some(first.to_owned()),
            last_name: None,
        };
        self.store
            .insert_contacts(&[contact])
            .await
            .expect("insert");
        let after = self.rows().await;
        after
            .iter()
            .map(|r| r.id)
            .find(|id| !before.contains(id))
            .expect("the new row")
    }

    /// What push leaves in HubSpot when its create was applied but the answer never came back
    /// (or came back after a pull): a contact stamped with the row's key, not linked locally.
    async fn add_pushed_but_unsaved(&self, row: i64, first: &str) -> String {
        let key = self.keys().await.key(ContactId(row));
        self.add_keyed(&key, first)
    }

    /// A HubSpot contact without email whose external key holds `key` as it is.
    fn add_keyed(&self, key: &str, first: &str) -> String {
        let record = BTreeMap::from([
            ("firstname".to_owned(), first.to_owned()),
            (EXTERNAL_KEY.to_owned(), key.to_owned()),
        ]);
        self.sandbox.insert_contacts(vec![record]).remove(0)
    }

    /// This database's external keys.
    async fn keys(&self) -> ExternalKeys {
        ExternalKeys::new(&self.store.installation().await.expect("installation"))
    }

    /// Another database (on the same backend) whose sync talks to the same HubSpot account:
    /// a second installation, or staging beside production.
    async fn beside(&self, db: TestDb) -> World {
        let client = HubSpotClient::new(
            client_config(&self.sandbox),
            Auth::PrivateApp(Secret::new(self.sandbox.access_token())),
        )
        .expect("client");
        World {
            store: db.store().await,
            sandbox: self.sandbox.clone(),
            ctx: SyncContext::new(client),
            _db: db,
        }
    }

    /// Forgets the row's link (as a lost commit or a restored backup leaves it).
    async fn unlink(&self, id: i64) {
        const SQL: &str = "UPDATE contacts SET hs_object_id = NULL WHERE id = $1";
        if let Some(p) = self.store.pg_pool() {
            sqlx::query(SQL).bind(id).execute(p).await.unwrap();
        } else if let Some(p) = self.store.sqlite_pool() {
            sqlx::query(SQL).bind(id).execute(p).await.unwrap();
        }
    }

    /// Enqueues a pull and runs it to its end.
    async fn pull(&self, mode: PullMode, incremental: bool) -> Job {
        self.pull_with(mode, incremental, never_stop()).await
    }

    /// Enqueues a pull and runs it to its end; `stop` is asked at every page boundary of the
    /// first run (tests use it to act "during" a run).
    async fn pull_with(&self, mode: PullMode, incremental: bool, stop: StopCheck) -> Job {
        let spec = JobSpec::from(JobAction::Pull { mode, incremental });
        let job = enqueue(
            &self.store,
            EnqueueRequest {
                spec,
                trigger: Trigger::Cli,
                force: false,
            },
        )
        .await
        .expect("enqueue")
        .job;
        self.drive(job.id, stop).await
    }

    /// Hands the job's deliveries to `process`, as a worker would, until it ends.
    async fn drive(&self, id: JobId, first_stop: StopCheck) -> Job {
        let runner = self.runner();
        let retry = RetryPolicy {
            max_attempts: 20,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        let mut stop = first_stop;
        for _ in 0..50 {
            let record = self
                .store
                .get_job_record(id)
                .await
                .expect("read job")
                .expect("job exists");
            if record.job.status.is_terminal() {
                return record.job;
            }
            let task = SyncTask {
                job_id: id,
                delivery: record.delivery.expect("an active job has a delivery"),
            };
            process(&self.store, &runner, retry, &task, "test-worker", stop)
                .await
                .expect("the delivery is settled");
            stop = never_stop();
        }
        panic!("job {id} did not end after 50 deliveries");
    }

    async fn rows(&self) -> Vec<Row> {
        rows(&self.store).await
    }

    async fn add_local(&self, contacts: &[(&str, &str, &str)]) {
        let batch: Vec<NewContact> = contacts
            .iter()
            .map(|(email, first, last)| NewContact {
                email: Some((*email).to_owned()),
                first_name: Some((*first).to_owned()),
                last_name: Some((*last).to_owned()),
            })
            .collect();
        self.store.insert_contacts(&batch).await.expect("insert");
    }

    /// Links the local row with `email` to `hs` directly (as an earlier sync would have).
    async fn link_local(&self, email: &str, hs: &str) {
        const SQL: &str = "UPDATE contacts SET hs_object_id = $1 WHERE email = $2";
        if let Some(p) = self.store.pg_pool() {
            sqlx::query(SQL)
                .bind(hs)
                .bind(email)
                .execute(p)
                .await
                .unwrap();
        } else if let Some(p) = self.store.sqlite_pool() {
            sqlx::query(SQL)
                .bind(hs)
                .bind(email)
                .execute(p)
                .await
                .unwrap();
        }
    }

    /// Inserts contacts into HubSpot directly; returns their ids.
    fn add_hubspot(&self, contacts: &[(Option<&str>, &str, &str)]) -> Vec<String> {
        self.sandbox.insert_contacts(
            contacts
                .iter()
                .map(|(email, first, last)| {
                    let mut p = BTreeMap::new();
                    if let Some(email) = email {
                        p.insert("email".to_owned(), (*email).to_owned());
                    }
                    p.insert("firstname".to_owned(), (*first).to_owned());
                    p.insert("lastname".to_owned(), (*last).to_owned());
                    p
                })
                .collect(),
        )
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

    /// Rows left in `pull_seen`.
    async fn pull_seen(&self) -> i64 {
        const SQL: &str = "SELECT COUNT(*) FROM pull_seen";
        if let Some(p) = self.store.pg_pool() {
            sqlx::query_scalar(SQL).fetch_one(p).await.unwrap()
        } else {
            let p = self.store.sqlite_pool().unwrap();
            sqlx::query_scalar(SQL).fetch_one(p).await.unwrap()
        }
    }

    fn requests(&self) -> u64 {
        self.sandbox.stats().requests
    }

    fn calls(&self, operation: &str) -> u64 {
        self.sandbox
            .stats()
            .by_operation
            .get(operation)
            .copied()
            .unwrap_or(0)
    }
}

async fn start_sandbox(args: SandboxArgs) -> SandboxHandle {
    Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("sandbox starts")
}

fn never_stop() -> StopCheck {
    Arc::new(|| false)
}

/// A local row with the columns these tests look at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
struct Row {
    id: i64,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    hs_object_id: Option<String>,
    local_version: i64,
    pushed_version: i64,
}

impl Row {
    /// What push would consider "changed since the last push".
    fn needs_push(&self) -> bool {
        self.hs_object_id.is_none() || self.local_version > self.pushed_version
    }
}

async fn rows(store: &Store) -> Vec<Row> {
    const SQL: &str = "SELECT id, email, first_name, last_name, hs_object_id, \
         CAST(local_version AS BIGINT) AS local_version, \
         CAST(pushed_version AS BIGINT) AS pushed_version FROM contacts ORDER BY id";
    if let Some(p) = store.pg_pool() {
        sqlx::query_as(SQL).fetch_all(p).await.unwrap()
    } else {
        let p = store.sqlite_pool().unwrap();
        sqlx::query_as(SQL).fetch_all(p).await.unwrap()
    }
}

fn counts(job: &Job) -> PullCounts {
    match job.counts {
        Counts::Pull(c) => c,
        Counts::Push(_) => panic!("not a pull: {job:?}"),
    }
}

fn succeeded(job: &Job) -> PullCounts {
    assert_eq!(job.status, JobStatus::Succeeded, "{job:#?}");
    let c = counts(job);
    assert!(job.counts.is_consistent(), "{c:?}");
    assert_eq!(
        job.progress.processed, c.total,
        "progress follows the counts"
    );
    c
}

fn by_email<'a>(rows: &'a [Row], email: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.email.as_deref() == Some(email))
        .unwrap_or_else(|| panic!("no local row with {email}"))
}

/// `n` HubSpot contacts with emails `{prefix}{i}@acme-mail.com`.
fn emails(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}{i}@acme-mail.com"))
        .collect()
}

// ---- specifications -------------------------------------------------------------------

backend_tests! {
    async fn a_pull_into_an_empty_database_creates_a_row_per_hubspot_contact(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        w.sandbox.seed_contacts(240);
        w.add_hubspot(&[(None, "No", "Email"); 10]);

        let job = w.pull(PullMode::Upsert, false).await;

        let c = succeeded(&job);
        assert_eq!(
            c,
            PullCounts {
                total: 250,
                created: 250,
                created_without_email: 10,
                linked: 0,
                upserted: 240,
                unchanged: 0,
                failed: 0,
                unlinked: 0,
                ..PullCounts::default()
            }
        );
        assert_eq!(job.progress.total, Some(250), "the total was announced");
        let local = w.rows().await;
        assert_eq!(local.len(), 250);
        for hs in w.sandbox.contacts() {
            let row = local
                .iter()
                .find(|r| r.hs_object_id.as_deref() == Some(hs.id.as_str()))
                .unwrap_or_else(|| panic!("HubSpot contact {} has a local row", hs.id));
            assert_eq!(row.email.as_deref(), hs.email());
            assert_eq!(row.first_name.as_ref(), hs.properties.get("firstname"));
            assert_eq!(row.last_name.as_ref(), hs.properties.get("lastname"));
            assert!(!row.needs_push(), "rows that came from HubSpot have nothing to push: {row:?}");
        }
        assert!(w.store.pull_bookmark().await.unwrap().is_some(), "a successful pull leaves a bookmark");
    }

    async fn a_local_row_with_the_same_email_in_another_case_is_linked_and_keeps_its_names(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        w.add_local(&[("ANN.Lee@Acme-Mail.com", "Local Ann", "Local Lee"), ("only-local@acme-mail.com", "Only", "Local")]).await;
        let ids = w.add_hubspot(&[
            (Some("ann.lee@ACME-mail.com"), "HubSpot Ann", "HubSpot Lee"),
            (Some("new@acme-mail.com"), "New", "One"),
        ]);

        let c = succeeded(&w.pull(PullMode::Upsert, false).await);

        assert_eq!((c.total, c.linked, c.created, c.upserted), (2, 1, 1, 2));
        let local = w.rows().await;
        let ann = by_email(&local, "ann.lee@acme-mail.com");
        assert_eq!(ann.hs_object_id.as_deref(), Some(ids[0].as_str()));
        assert_eq!(
            (ann.first_name.as_deref(), ann.last_name.as_deref()),
            (Some("Local Ann"), Some("Local Lee")),
            "pull never changes a local contact's own fields"
        );
        assert!(!ann.needs_push(), "linking by pull is not a local change to push: {ann:?}");
        let only = by_email(&local, "only-local@acme-mail.com");
        assert_eq!(only.hs_object_id, None);
        assert_eq!(local.len(), 3);
    }

    async fn a_linked_row_stays_linked_and_unchanged_when_its_email_changes_in_hubspot(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        let ids = w.add_hubspot(&[(Some("before@acme-mail.com"), "Bo", "Fore")]);
        succeeded(&w.pull(PullMode::Upsert, false).await);
        // In HubSpot the contact now has another email, which a local unlinked row also has.
        w.add_local(&[("after@acme-mail.com", "Af", "Ter")]).await;
        let props = BTreeMap::from([("email".to_owned(), "after@acme-mail.com".to_owned())]);
        w.ctx
            .hubspot
            .update_contact(&HsObjectId::from(ids[0].as_str()), &props)
            .await
            .expect("update in HubSpot");

        let c = succeeded(&w.pull(PullMode::Upsert, false).await);

        assert_eq!((c.total, c.unchanged, c.linked, c.created), (1, 1, 0, 0));
        let local = w.rows().await;
        let linked = by_email(&local, "before@acme-mail.com");
        assert_eq!(linked.hs_object_id.as_deref(), Some(ids[0].as_str()), "the link stays");
        assert_eq!(by_email(&local, "after@acme-mail.com").hs_object_id, None);
    }

    async fn a_rerun_finds_everything_unchanged_and_duplicates_nothing(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        w.sandbox.seed_contacts(130);
        w.add_hubspot(&[(None, "Nameless", "One"), (None, "Nameless", "Two"), (None, "Nameless", "Two")]);
        let first = succeeded(&w.pull(PullMode::Upsert, false).await);
        assert_eq!((first.created, first.created_without_email), (133, 3));
        let before = w.rows().await;

        for mode in [PullMode::Upsert, PullMode::Verbose] {
            let again = succeeded(&w.pull(mode, false).await);
            assert_eq!(
                again,
                PullCounts { total: 133, unchanged: 133, ..PullCounts::default() },
                "{mode:?}"
            );
        }
        let after = w.rows().await;
        assert_eq!(after, before, "not a row added or touched");
    }

    async fn upsert_and_verbose_reach_the_same_rows_and_count_in_their_own_way(db: TestDb, profile: HubSpotProfile) {
        let backend = db.backend();
        let other_db = match backend {
            crm_sync::store::Backend::Sqlite => TestDb::sqlite().await,
            crm_sync::store::Backend::Postgres => TestDb::postgres().await,
        };
        let upsert = World::new(db, args_in(profile)).await;
        let verbose = World::new(other_db, args_in(profile)).await;
        for w in [&upsert, &verbose] {
            let mut hubspot: Vec<(Option<&str>, &str, &str)> = Vec::new();
            let addresses = emails("person", 120);
            for e in &addresses {
                hubspot.push((Some(e.as_str()), "Hub", "Spot"));
            }
            hubspot.extend([(None, "No", "Email"); 5]);
            hubspot.push((Some("taken@acme-mail.com"), "Taken", "Elsewhere"));
            w.add_hubspot(&hubspot);
            let locals: Vec<(&str, &str, &str)> =
                addresses[..10].iter().map(|e| (e.as_str(), "Local", "Name")).collect();
            w.add_local(&locals).await;
            w.add_local(&[("taken@acme-mail.com", "Mine", "Already"), ("only-local@acme-mail.com", "Only", "Local")]).await;
            // Linked to a contact HubSpot still has, under another email now.
            let moved = w.add_hubspot(&[(Some("moved@acme-mail.com"), "Moved", "Away")]).remove(0);
            w.link_local("taken@acme-mail.com", &moved).await;
        }

        let u = upsert.pull(PullMode::Upsert, false).await;
        let v = verbose.pull(PullMode::Verbose, false).await;

        let expected = PullCounts {
            total: 127,
            created: 115,
            created_without_email: 5,
            linked: 10,
            upserted: 0,
            unchanged: 1,
            failed: 1,
            unlinked: 0,
            ..PullCounts::default()
        };
        assert_eq!(succeeded(&v), expected, "verbose separates created with and without email and linked");
        assert_eq!(
            succeeded(&u),
            PullCounts { upserted: 120, ..expected },
            "upsert: 110 created with email + 10 linked went through the upsert"
        );
        for job in [&u, &v] {
            let [error] = &job.errors[..] else { panic!("one error entry: {:?}", job.errors) };
            assert_eq!(error.email.as_deref(), Some("taken@acme-mail.com"));
            assert!(error.hs_object_id.is_some());
            assert!(error.contact_id.is_some(), "names the local row in the way");
            assert!(error.reason.contains("HubSpot still has that contact"), "{}", error.reason);
        }
        let shape = |rows: Vec<Row>| -> BTreeSet<_> {
            rows.into_iter()
                .map(|r| (r.email.clone(), r.first_name.clone(), r.last_name.clone(), r.hs_object_id.clone(), r.needs_push()))
                .collect()
        };
        assert_eq!(shape(upsert.rows().await), shape(verbose.rows().await));
        assert_eq!(upsert.rows().await.len(), 127);
    }

    async fn a_row_linked_to_a_contact_merged_away_follows_the_survivor_in_both_modes(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        w.add_hubspot(&[(Some("merged@acme-mail.com"), "Mer", "Ged")]);
        succeeded(&w.pull(PullMode::Upsert, false).await);
        let before = by_email(&w.rows().await, "merged@acme-mail.com").clone();
        for mode in [PullMode::Verbose, PullMode::Upsert] {
            // A new contact without email absorbs the linked one, and takes its email.
            let survivor = w.add_hubspot(&[(None, "Sur", "Vivor")]).remove(0);
            let linked = w.rows().await.into_iter().find(|r| r.id == before.id).unwrap();
            let absorbed = HsObjectId::from(linked.hs_object_id.as_deref().unwrap());
            w.ctx
                .hubspot
                .merge_contacts(&HsObjectId::from(survivor.as_str()), &absorbed)
                .await
                .expect("merge in HubSpot");

            let c = succeeded(&w.pull(mode, false).await);

            assert_eq!((c.total, c.linked, c.created, c.failed), (1, 1, 0, 0), "{mode:?}: {c:?}");
            let after = by_email(&w.rows().await, "merged@acme-mail.com").clone();
            assert_eq!(after.hs_object_id.as_deref(), Some(survivor.as_str()), "{mode:?}");
            assert_eq!(
                (after.id, &after.first_name, after.pushed_version),
                (before.id, &before.first_name, before.pushed_version),
                "{mode:?}: same row, own fields and push state untouched"
            );
        }
    }

    async fn a_row_linked_to_a_contact_hubspot_no_longer_has_is_relinked_to_the_live_contact_with_its_email(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        w.add_local(&[
            ("old-portal@acme-mail.com", "Old", "Portal"),
            ("deleted@acme-mail.com", "Del", "Eted"),
            ("fine@acme-mail.com", "Fine", "Row"),
        ])
        .await;
        // One row holds an id this portal never had (another portal's, an old backup's), one
        // the id of a contact since deleted (archived) in HubSpot.
        w.link_local("old-portal@acme-mail.com", "999999999").await;
        let deleted = w.add_hubspot(&[(Some("deleted-before@acme-mail.com"), "Del", "Eted")]).remove(0);
        w.ctx.hubspot.archive_contact(&HsObjectId::from(deleted.as_str())).await.expect("delete in HubSpot");
        w.link_local("deleted@acme-mail.com", &deleted).await;
        let before = w.rows().await;
        let live = w.add_hubspot(&[
            (Some("old-portal@acme-mail.com"), "Old", "Portal"),
            (Some("deleted@acme-mail.com"), "Del", "Eted"),
            (Some("fine@acme-mail.com"), "Fine", "Row"),
        ]);

        let c = succeeded(&w.pull(PullMode::Upsert, false).await);

        assert_eq!(
            c,
            PullCounts { total: 3, linked: 3, upserted: 3, ..PullCounts::default() },
            "re-linked, counted linked, nothing failed or created"
        );
        assert_eq!(w.calls("contacts.batch_read"), 1, "one batch read asks about the page's stale links");
        let after = w.rows().await;
        assert_eq!(after.len(), 3, "no second identity");
        for (email, hs) in [
            ("old-portal@acme-mail.com", &live[0]),
            ("deleted@acme-mail.com", &live[1]),
            ("fine@acme-mail.com", &live[2]),
        ] {
            assert_eq!(by_email(&after, email).hs_object_id.as_deref(), Some(hs.as_str()), "{email}");
        }
        for email in ["old-portal@acme-mail.com", "deleted@acme-mail.com"] {
            let (was, now) = (by_email(&before, email), by_email(&after, email));
            assert_eq!(
                (now.id, now.pushed_version, &now.first_name),
                (was.id, was.pushed_version, &was.first_name),
                "{email}: the same row, push state and own fields untouched"
            );
        }

        let again = succeeded(&w.pull(PullMode::Upsert, false).await);
        assert_eq!((again.total, again.unchanged), (3, 3));
        assert_eq!(w.calls("contacts.batch_read"), 1, "a page without clashes asks HubSpot nothing more");

        // The same in verbose mode, which links by UPDATE rather than by upsert.
        w.add_local(&[("restored@acme-mail.com", "Res", "Tored")]).await;
        w.link_local("restored@acme-mail.com", "888888888").await;
        let restored = w.add_hubspot(&[(Some("restored@acme-mail.com"), "Res", "Tored")]).remove(0);
        let verbose = succeeded(&w.pull(PullMode::Verbose, false).await);
        assert_eq!(
            verbose,
            PullCounts { total: 4, linked: 1, unchanged: 3, ..PullCounts::default() },
            "verbose re-links the same way"
        );
        let after = w.rows().await;
        assert_eq!(by_email(&after, "restored@acme-mail.com").hs_object_id.as_deref(), Some(restored.as_str()));
        assert_eq!(after.len(), 4);
    }

    async fn an_email_held_by_a_row_linked_to_a_contact_hubspot_still_has_fails_naming_the_row_and_both_contacts(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        w.add_local(&[("taken@acme-mail.com", "Mine", "Already"), ("merged@acme-mail.com", "Mer", "Ged")]).await;
        // The first row is linked to a live contact that has another email now; the second to
        // a contact HubSpot merged into a third one (which keeps its own email).
        let ids = w.add_hubspot(&[
            (Some("elsewhere@acme-mail.com"), "Else", "Where"),
            (Some("absorbed@acme-mail.com"), "Ab", "Sorbed"),
            (Some("survivor@acme-mail.com"), "Sur", "Vivor"),
            (Some("taken@acme-mail.com"), "Taken", "Too"),
            (Some("merged@acme-mail.com"), "Mer", "Ged"),
        ]);
        let (live, absorbed, survivor) = (&ids[0], &ids[1], &ids[2]);
        w.link_local("taken@acme-mail.com", live).await;
        w.link_local("merged@acme-mail.com", absorbed).await;
        w.ctx
            .hubspot
            .merge_contacts(&HsObjectId::from(survivor.as_str()), &HsObjectId::from(absorbed.as_str()))
            .await
            .expect("merge in HubSpot");
        let before = w.rows().await;
        let asked = [HsObjectId::from(ids[3].as_str()), HsObjectId::from(ids[4].as_str())];

        let done = pull_ids(&w.ctx, &w.store, &asked, PullMode::Verbose).await.expect("targeted pull");

        assert_eq!((done.counts.total, done.counts.failed, done.counts.linked), (2, 2, 0), "{done:?}");
        assert_eq!(w.rows().await, before, "links to contacts HubSpot still has are never moved");
        let row = |email: &str| by_email(&before, email).id.to_string();
        for (email, named) in [
            ("taken@acme-mail.com", vec![row("taken@acme-mail.com"), live.clone(), ids[3].clone()]),
            ("merged@acme-mail.com", vec![row("merged@acme-mail.com"), absorbed.clone(), survivor.clone(), ids[4].clone()]),
        ] {
            let error = done
                .errors
                .iter()
                .find(|e| e.email.as_deref() == Some(email))
                .unwrap_or_else(|| panic!("an error entry for {email}: {:?}", done.errors));
            assert_eq!(error.contact_id.map(|c| c.0.to_string()), Some(row(email)));
            for id in named {
                assert!(error.reason.contains(&id), "{email}: the reason names {id}: {}", error.reason);
            }
        }
    }

    async fn a_row_written_by_hand_with_a_non_ascii_upper_case_email_is_linked_not_duplicated(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        const SQL: &str = "INSERT INTO contacts (email, first_name) VALUES \
             ('ÉLODIE@example.com', 'Élodie'), ('ÅSA@Example.com', 'Åsa'), ('STRASSE@example.com', 'Upper')";
        if let Some(p) = w.store.pg_pool() {
            // As in a database created with the C locale, where lower() folds ASCII only.
            sqlx::query(r#"ALTER TABLE contacts ALTER COLUMN email TYPE text COLLATE "C""#)
                .execute(p)
                .await
                .unwrap();
            sqlx::query(SQL).execute(p).await.unwrap();
        } else if let Some(p) = w.store.sqlite_pool() {
            sqlx::query(SQL).execute(p).await.unwrap();
        }
        let ids = w.add_hubspot(&[
            (Some("élodie@example.com"), "Elodie", "HubSpot"),
            (Some("åsa@example.com"), "Asa", "HubSpot"),
            (Some("straße@example.com"), "Strasse", "HubSpot"),
        ]);

        let c = succeeded(&w.pull(PullMode::Upsert, false).await);

        assert_eq!((c.total, c.linked, c.created, c.failed), (3, 2, 1, 0), "{c:?}");
        let local = w.rows().await;
        assert_eq!(local.len(), 4, "{local:#?}");
        assert_eq!(by_email(&local, "élodie@example.com").first_name.as_deref(), Some("Élodie"));
        assert_eq!(by_email(&local, "élodie@example.com").hs_object_id.as_deref(), Some(ids[0].as_str()));
        assert_eq!(by_email(&local, "åsa@example.com").hs_object_id.as_deref(), Some(ids[1].as_str()));
        assert_eq!(
            by_email(&local, "strasse@example.com").hs_object_id, None,
            "lower-cased, not case-folded: straße is another email"
        );
        assert_eq!(by_email(&local, "straße@example.com").hs_object_id.as_deref(), Some(ids[2].as_str()));
    }

    async fn an_id_hubspot_refuses_to_read_fails_alone_and_the_others_arrive(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        let ids = w.add_hubspot(&[
            (Some("one@acme-mail.com"), "One", "A"),
            (Some("two@acme-mail.com"), "Two", "B"),
        ]);
        // An id so long that a batch read naming it is over HubSpot's request size (the
        // sandbox answers a merely non-numeric id with a 207 "not found"): refused whole.
        let refused = HsObjectId(format!("7{}", "0".repeat(17 * 1024 * 1024)));
        let asked = [HsObjectId::from(ids[0].as_str()), refused.clone(), HsObjectId::from(ids[1].as_str())];

        let done = pull_ids(&w.ctx, &w.store, &asked, PullMode::Upsert).await.expect("targeted pull");

        assert_eq!((done.counts.total, done.counts.created, done.counts.failed), (3, 2, 1), "{done:?}");
        let [error] = &done.errors[..] else { panic!("one error entry: {:?}", done.errors) };
        assert_eq!(error.hs_object_id.as_ref(), Some(&refused));
        assert!(error.reason.contains("refused"), "{}", error.reason);
        assert!(done.missing.is_empty(), "refused is not deleted: {:?}", done.missing);
        assert_eq!(w.rows().await.len(), 2);
    }

    async fn records_that_cannot_be_stored_fail_one_by_one_and_the_page_goes_through(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        w.add_local(&[("taken@acme-mail.com", "Mine", "Already")]).await;
        let moved = w.add_hubspot(&[(Some("moved@acme-mail.com"), "Moved", "Away")]).remove(0);
        w.link_local("taken@acme-mail.com", &moved).await;
        w.add_hubspot(&[
            (Some("taken@acme-mail.com"), "Taken", "Elsewhere"),
            (Some("fine@acme-mail.com"), "Fine", "One"),
            (Some("nul@acme-mail.com"), "Nul\0Byte", "Name"),
            (None, "Fine", "Nameless"),
        ]);

        let job = w.pull(PullMode::Upsert, false).await;

        let c = succeeded(&job);
        assert_eq!((c.total, c.created, c.unchanged, c.failed), (5, 2, 1, 2));
        assert_eq!(job.errors.len(), 2, "one error entry per failed record");
        let reasons: Vec<&str> = job.errors.iter().map(|e| e.reason.as_str()).collect();
        assert!(reasons.iter().any(|r| r.contains("NUL")), "{reasons:?}");
        let linked = format!("linked to HubSpot contact {moved}");
        assert!(reasons.iter().any(|r| r.contains(&linked)), "{reasons:?}");
        let again = succeeded(&w.pull(PullMode::Upsert, false).await);
        assert_eq!((again.failed, again.unchanged), (2, 3), "failures are reported again, never skipped");
    }

    async fn a_pull_interrupted_between_pages_resumes_from_its_checkpoint(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        w.sandbox.seed_contacts(1_000);
        let boundaries = Arc::new(AtomicUsize::new(0));
        let seen = boundaries.clone();
        // The worker is asked to shut down at the fourth page boundary.
        let stop: StopCheck = Arc::new(move || seen.fetch_add(1, Ordering::SeqCst) >= 3);

        let job = w.pull_with(PullMode::Upsert, false, stop).await;

        let c = succeeded(&job);
        assert_eq!((c.total, c.created), (1_000, 1_000));
        assert_eq!(job.attempts, 1, "a shutdown does not count as an attempt");
        let local = w.rows().await;
        assert_eq!(local.len(), 1_000);
        let distinct: BTreeSet<_> = local.iter().map(|r| r.hs_object_id.clone()).collect();
        assert_eq!(distinct.len(), 1_000, "no contact written twice");
        assert!(
            w.calls("contacts.list") <= 10 + 2,
            "resumed at the checkpoint instead of starting over ({} list calls)",
            w.calls("contacts.list")
        );
    }

    async fn an_incremental_pull_reads_past_the_search_cap_and_a_quiet_rerun_costs_one_call(db: TestDb, profile: HubSpotProfile) {
        let mut w = World::new(db, args_in(profile)).await;
        w.ctx.pull.lookback = Duration::ZERO;
        // No bookmark yet: the first incremental pull is a full one.
        let first = succeeded(&w.pull(PullMode::Upsert, true).await);
        assert_eq!(first.total, 0);
        let bookmark = w.store.pull_bookmark().await.unwrap().expect("bookmark");
        // 12,000 changes since: an import at one instant, then some edits one by one.
        let ids = w.sandbox.seed_contacts(12_000);
        for id in ids.iter().step_by(1_000) {
            let props = BTreeMap::from([("lastname".to_owned(), "Edited".to_owned())]);
            w.ctx.hubspot.update_contact(&HsObjectId::from(id.as_str()), &props).await.unwrap();
        }

        let searches = w.calls("contacts.search");
        let second = w.pull(PullMode::Upsert, true).await;

        let c = succeeded(&second);
        assert_eq!((c.total, c.created), (12_000, 12_000), "every change arrived, each once");
        assert_eq!(second.progress.total, Some(12_000));
        let searched = w.calls("contacts.search") - searches;
        assert!(
            (60..=70).contains(&searched),
            "about one search call per 200 contacts ({searched})"
        );
        let local = w.rows().await;
        assert_eq!(local.len(), 12_000);
        let local_ids: BTreeSet<_> = local.iter().filter_map(|r| r.hs_object_id.clone()).collect();
        assert_eq!(local_ids, ids.iter().cloned().collect::<BTreeSet<_>>());
        let moved = w.store.pull_bookmark().await.unwrap().expect("bookmark");
        assert!(moved > bookmark, "the bookmark advanced");

        let before = w.requests();
        let quiet = succeeded(&w.pull(PullMode::Upsert, true).await);
        assert_eq!(quiet.total, 0);
        assert!(w.requests() - before <= 2, "a no-change re-run makes a handful of calls at most");
    }

    async fn search_results_without_lastmodifieddate_are_read_as_changed_now_and_the_pull_ends(db: TestDb, profile: HubSpotProfile) {
        // HubSpot may leave `lastmodifieddate` out of search results altogether (the profile's
        // own variant sends it as `null`); either way the incremental pull reads every change
        // once and ends.
        let variants = Variants { search_modified: SearchModified::Omitted, ..profile.variants() };
        let w = World::new(db, SandboxArgs { variants, ..args_in(profile) }).await;
        succeeded(&w.pull(PullMode::Upsert, true).await);
        let ids = w.sandbox.seed_contacts(450);

        let c = succeeded(&w.pull(PullMode::Upsert, true).await);

        assert_eq!((c.total, c.created, c.failed), (450, 450, 0), "{c:?}");
        let local: BTreeSet<_> = w.rows().await.iter().filter_map(|r| r.hs_object_id.clone()).collect();
        assert_eq!(local, ids.iter().cloned().collect::<BTreeSet<_>>());
    }

    async fn a_change_hubspot_indexes_during_a_run_is_read_by_the_next_run(db: TestDb, profile: HubSpotProfile) {
        // Search shows a write a minute late (until flushed), as HubSpot's index lags.
        let w = World::new(db, SandboxArgs { search_delay_ms: 60_000, ..args_in(profile) }).await;
        succeeded(&w.pull(PullMode::Upsert, true).await);
        w.sandbox.seed_contacts(450);
        w.sandbox.flush_search_index();
        let sandbox = w.sandbox.clone();
        let once = Arc::new(AtomicUsize::new(0));
        let stop: StopCheck = Arc::new(move || {
            if once.fetch_add(1, Ordering::SeqCst) == 1 {
                let late = BTreeMap::from([
                    ("email".to_owned(), "late@acme-mail.com".to_owned()),
                    ("firstname".to_owned(), "Late".to_owned()),
                ]);
                sandbox.insert_contacts(vec![late]);
            }
            false
        });

        let during = succeeded(&w.pull_with(PullMode::Upsert, true, stop).await);
        assert_eq!(during.created, 450);
        assert!(w.rows().await.iter().all(|r| r.email.as_deref() != Some("late@acme-mail.com")),
            "not yet searchable while that run went on");

        w.sandbox.flush_search_index();
        let next = succeeded(&w.pull(PullMode::Upsert, true).await);
        assert_eq!(next.created, 1, "{next:?}");
        assert_eq!(by_email(&w.rows().await, "late@acme-mail.com").first_name.as_deref(), Some("Late"));
    }

    async fn a_full_pull_through_5xx_dropped_connections_429_and_an_expired_token_ends_as_a_clean_one(db: TestDb, profile: HubSpotProfile) {
        // Pull only reads, so its dropped connections are dropped reads (a dropped write is
        // push's fault: tests/sync_push.rs).
        let sandbox = start_sandbox(SandboxArgs {
            fault_5xx: 0.15,
            fault_drop_read: 0.1,
            requests_per_10s: 6,
            rng_seed: Some(11),
            ..args_in(profile)
        })
        .await;
        let tokens = Arc::new(MemoryTokenStore::default());
        let client = HubSpotClient::new(
            client_config(&sandbox),
            Auth::OAuth { app: oauth_app(&sandbox), tokens: tokens.clone() },
        )
        .expect("client");
        let code = approve(&client, "pull-test").await;
        client.connect(&code).await.expect("install");
        // Another client of the same app, which will spend the app's budget mid-run.
        let rival = HubSpotClient::new(
            client_config(&sandbox),
            Auth::OAuth { app: oauth_app(&sandbox), tokens },
        )
        .expect("rival client");
        let w = World::with_client(db, sandbox, client).await;
        let addresses = emails("faulty", 430);
        let mut hubspot: Vec<(Option<&str>, &str, &str)> =
            addresses.iter().map(|e| (Some(e.as_str()), "F", "T")).collect();
        hubspot.extend([(None, "No", "Email"); 20]);
        w.add_hubspot(&hubspot);
        let locals: Vec<(&str, &str, &str)> =
            addresses[..50].iter().map(|e| (e.as_str(), "L", "N")).collect();
        w.add_local(&locals).await;
        let sandbox = w.sandbox.clone();
        let boundaries = Arc::new(AtomicUsize::new(0));
        let stop: StopCheck = Arc::new(move || {
            match boundaries.fetch_add(1, Ordering::SeqCst) {
                // A burst from the rival: the app's 10-second budget is gone at once.
                1 => {
                    for _ in 0..8 {
                        let rival = rival.clone();
                        tokio::spawn(async move { rival.account_details().await });
                    }
                }
                2 => sandbox.expire_access_tokens(),
                _ => {}
            }
            false
        });

        let job = w.pull_with(PullMode::Upsert, false, stop).await;

        let c = succeeded(&job);
        assert_eq!(
            c,
            PullCounts {
                total: 450,
                created: 400,
                created_without_email: 20,
                linked: 50,
                upserted: 430,
                unchanged: 0,
                failed: 0,
                unlinked: 0,
                ..PullCounts::default()
            }
        );
        let stats = w.sandbox.stats();
        assert!(stats.faults_5xx > 0, "5xx were injected: {stats:?}");
        assert!(stats.dropped_reads > 0, "connections were dropped: {stats:?}");
        assert!(stats.rate_limited > 0, "429s were met: {stats:?}");
        assert!(w.ctx.hubspot.metrics().token_refreshes() >= 1, "the expired token was refreshed");
        let local = w.rows().await;
        assert_eq!(local.len(), 450);
        let distinct: BTreeSet<_> = local.iter().map(|r| r.hs_object_id.clone()).collect();
        assert_eq!(distinct.len(), 450);
    }

    async fn a_contact_push_created_but_never_saved_is_linked_by_its_external_key_not_duplicated(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        // A first push makes the external key property exist, as it does in any account
        // crm-sync has pushed to.
        w.add_local(&[("ann@acme-mail.com", "Ann", "Lee")]).await;
        assert_eq!(w.push(PushMode::Link).await.created, 1);
        let ada = w.add_local_without_email("Ada").await;
        let eve = w.add_local_without_email("Eve").await;
        // Push created both in HubSpot, but its answer was lost before the links were saved.
        let ada_hs = w.add_pushed_but_unsaved(ada, "Ada").await;
        let eve_hs = w.add_pushed_but_unsaved(eve, "Eve").await;

        let upsert = succeeded(&w.pull(PullMode::Upsert, false).await);
        assert_eq!(
            upsert,
            PullCounts { total: 3, linked: 2, upserted: 2, unchanged: 1, ..PullCounts::default() },
            "linked by external key, nothing created"
        );
        let local = w.rows().await;
        assert_eq!(local.len(), 3, "no duplicate row: {local:#?}");
        let row = |id: i64| local.iter().find(|r| r.id == id).expect("row").clone();
        assert_eq!(row(ada).hs_object_id.as_deref(), Some(ada_hs.as_str()));
        assert_eq!(row(eve).hs_object_id.as_deref(), Some(eve_hs.as_str()));
        let again = succeeded(&w.pull(PullMode::Verbose, false).await);
        assert_eq!((again.total, again.unchanged), (3, 3));

        // Push again: the links are there, so it creates nothing; it brings the contacts it
        // created up to date once, since it cannot know which version its lost create held.
        let before = w.sandbox.contact_count();
        let push = w.push(PushMode::Link).await;
        assert_eq!((push.created, push.linked, push.failed), (0, 0, 0), "{push:?}");
        assert_eq!(w.sandbox.contact_count(), before, "no duplicate in HubSpot");
        assert!(w.rows().await.iter().all(|r| !r.needs_push()));
        assert_eq!(w.push(PushMode::Link).await.total, 0, "then nothing is left to push");
    }

    async fn an_external_key_is_not_trusted_when_its_row_is_gone_or_linked_elsewhere(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        w.add_local(&[("ann@acme-mail.com", "Ann", "Lee")]).await;
        assert_eq!(w.push(PushMode::Link).await.created, 1);
        // Bob's row is linked to a HubSpot contact that carries no key (linked by email).
        w.add_local(&[("bob@acme-mail.com", "Bob", "Ray")]).await;
        let bob_hs = w.add_hubspot(&[(Some("bob@acme-mail.com"), "Bob", "Ray")]).remove(0);
        w.link_local("bob@acme-mail.com", &bob_hs).await;
        let bob = by_email(&w.rows().await, "bob@acme-mail.com").clone();
        // A contact naming a row that does not exist (deleted here, or stamped by another
        // database), and one naming Bob's row, which is linked to another contact.
        w.add_pushed_but_unsaved(bob.id + 1000, "Gone").await;
        let stale = w.add_pushed_but_unsaved(bob.id, "Stale").await;

        for mode in [PullMode::Verbose, PullMode::Upsert] {
            let c = succeeded(&w.pull(mode, false).await);
            assert_eq!(c.linked, 0, "{mode:?}: {c:?}");
        }
        let local = w.rows().await;
        assert_eq!(local.len(), 4, "each became a row of its own: {local:#?}");
        let bob_now = local.iter().find(|r| r.id == bob.id).expect("bob");
        assert_eq!(bob_now.hs_object_id.as_deref(), Some(bob_hs.as_str()), "a link is never moved");
        assert!(local.iter().any(|r| r.hs_object_id.as_deref() == Some(stale.as_str())
            && r.first_name.as_deref() == Some("Stale")));
        assert!(local.iter().any(|r| r.first_name.as_deref() == Some("Gone")));
    }

    async fn a_targeted_pull_writes_just_the_contacts_it_is_given(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        w.add_local(&[("known@acme-mail.com", "Known", "Local")]).await;
        let ids = w.add_hubspot(&[
            (Some("known@acme-mail.com"), "Known", "HubSpot"),
            (Some("new@acme-mail.com"), "New", "HubSpot"),
            (Some("other@acme-mail.com"), "Other", "HubSpot"),
        ]);
        let asked: Vec<HsObjectId> =
            [ids[0].as_str(), ids[1].as_str(), "987654321"].into_iter().map(HsObjectId::from).collect();

        let done = pull_ids(&w.ctx, &w.store, &asked, PullMode::Upsert).await.expect("targeted pull");

        assert_eq!((done.counts.total, done.counts.linked, done.counts.created), (2, 1, 1));
        assert_eq!(done.missing, vec![HsObjectId::from("987654321")]);
        let local = w.rows().await;
        assert_eq!(local.len(), 2, "the contact not asked for stays in HubSpot only");
        assert_eq!(by_email(&local, "known@acme-mail.com").hs_object_id.as_deref(), Some(ids[0].as_str()));
        assert_eq!(by_email(&local, "new@acme-mail.com").hs_object_id.as_deref(), Some(ids[1].as_str()));
        let again = pull_ids(&w.ctx, &w.store, &asked, PullMode::Verbose).await.expect("again");
        assert_eq!((again.counts.total, again.counts.unchanged), (2, 2));
    }

    async fn a_full_pull_tombstones_rows_whose_contact_hubspot_deleted_without_a_webhook(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        let ids = w.add_hubspot(&[
            (Some("stays@acme-mail.com"), "Stays", "Here"),
            (Some("gone@acme-mail.com"), "Gone", "Quietly"),
            (None, "No", "Email"),
        ]);
        succeeded(&w.pull(PullMode::Upsert, false).await);
        for id in [&ids[1], &ids[2]] {
            w.ctx.hubspot.archive_contact(&HsObjectId::from(id.as_str())).await.expect("delete in HubSpot");
        }
        let reads = w.calls("contacts.batch_read");

        let incremental = succeeded(&w.pull(PullMode::Upsert, true).await);
        assert_eq!(incremental.unlinked, 0, "an incremental pull reads only changes: it finds no deletion");
        assert!(w.rows().await.iter().all(|r| r.hs_object_id.is_some()));

        let c = succeeded(&w.pull(PullMode::Verbose, false).await);

        assert_eq!(c, PullCounts { total: 1, unchanged: 1, unlinked: 2, ..PullCounts::default() });
        assert_eq!(w.calls("contacts.batch_read"), reads + 1, "one batch read confirms the unseen links");
        let rows = w.rows().await;
        assert_eq!(rows.len(), 3, "every row stays");
        assert_eq!(by_email(&rows, "stays@acme-mail.com").hs_object_id.as_deref(), Some(ids[0].as_str()));
        for (i, row) in rows.iter().enumerate().skip(1) {
            assert_eq!(row.hs_object_id, None, "row {i} is unlinked");
            let tombstone = w.tombstone(row.id).await.expect("tombstoned");
            assert_eq!(tombstone.reason, TombstoneReason::Deleted);
        }
        assert_eq!(w.pull_seen().await, 0, "the job forgets what it saw");

        assert_eq!(w.push(PushMode::Link).await.total, 0, "push never creates them again");
        let again = succeeded(&w.pull(PullMode::Upsert, false).await);
        assert_eq!((again.total, again.unlinked), (1, 0));
        assert_eq!(w.calls("contacts.batch_read"), reads + 1, "nothing left to confirm");
    }

    async fn a_record_back_in_hubspot_under_its_id_clears_the_tombstone_but_a_privacy_deletion_stays(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        let ids = w.add_hubspot(&[
            (Some("restored@acme-mail.com"), "Res", "Tored"),
            (Some("private@acme-mail.com"), "Pri", "Vate"),
        ]);
        succeeded(&w.pull(PullMode::Upsert, false).await);
        // HubSpot deleted both, and restored the records since (the same ids are back).
        w.store.tombstone_hs_objects(&[HsObjectId::from(ids[0].as_str())], TombstoneReason::Deleted).await.expect("deleted");
        w.store.tombstone_hs_objects(&[HsObjectId::from(ids[1].as_str())], TombstoneReason::PrivacyDeletion).await.expect("deleted");

        let c = succeeded(&w.pull(PullMode::Upsert, false).await);

        assert_eq!((c.total, c.linked, c.unlinked), (2, 2, 0));
        let rows = w.rows().await;
        let restored = by_email(&rows, "restored@acme-mail.com");
        assert_eq!(restored.hs_object_id.as_deref(), Some(ids[0].as_str()), "re-linked to its record");
        assert_eq!(w.tombstone(restored.id).await, None, "the record is back: nothing to keep");
        let private = by_email(&rows, "private@acme-mail.com");
        assert_eq!(
            w.tombstone(private.id).await.map(|t| t.reason),
            Some(TombstoneReason::PrivacyDeletion),
            "a privacy deletion is never undone automatically"
        );
        assert_eq!(w.push(PushMode::Upsert).await.total, 0);
    }

    async fn a_pull_job_runs_on_the_worker_runtime(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, args_in(profile)).await;
        w.sandbox.seed_contacts(300);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let config = WorkerConfig {
            role: "test".to_owned(),
            sqlite_poll_interval: Duration::from_millis(50),
            postgres_poll_interval: Duration::from_millis(200),
            ..WorkerConfig::default()
        };
        let workers = tokio::spawn(run_workers(w.store.clone(), w.runner(), vec![], config, async move {
            let _ = stop_rx.await;
        }));
        let job = enqueue(&w.store, EnqueueRequest { spec: JobSpec::pull(), trigger: Trigger::Api, force: false })
            .await
            .unwrap()
            .job;

        let started = std::time::Instant::now();
        let done = loop {
            let job = w.store.get_job(job.id).await.unwrap().unwrap();
            if job.status.is_terminal() {
                break job;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the job ends: {job:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let _ = stop_tx.send(());
        workers.await.unwrap().unwrap();

        assert_eq!(succeeded(&done).created, 300);
        assert_eq!(w.rows().await.len(), 300);
    }
}

// ---- two installations, one portal; keys written by earlier versions ------------------

/// A second, empty database on `db`'s backend.
async fn another(db: &TestDb) -> TestDb {
    match db.backend() {
        Backend::Sqlite => TestDb::sqlite().await,
        Backend::Postgres => TestDb::postgres().await,
    }
}

/// The first names of the HubSpot contacts `rows` are linked to, by row id.
fn linked_names(w: &World, rows: &[Row]) -> BTreeMap<i64, Option<String>> {
    rows.iter()
        .filter_map(|r| {
            let contact = w.sandbox.contact(r.hs_object_id.as_deref()?)?;
            Some((r.id, contact.properties.get("firstname").cloned()))
        })
        .collect()
}

/// Every row is linked, to a contact holding the row's first name.
fn assert_each_row_holds_its_own_contact(w: &World, rows: &[Row], who: &str) {
    let names = linked_names(w, rows);
    for row in rows {
        assert_eq!(
            names.get(&row.id),
            Some(&row.first_name),
            "{who}: row {} is linked to a contact of its own: {rows:#?}",
            row.id
        );
    }
}

/// Migrates `store` as a version from before the installation id left its databases: every
/// migration older than it.
async fn migrate_as_before_installation_ids(store: &Store) {
    const FIRST_WITH_INSTALLATION: i64 = 20261206160000;
    let mut migrator = match store.backend() {
        Backend::Postgres => sqlx::migrate!("migrations/postgres"),
        Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
    };
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version < FIRST_WITH_INSTALLATION)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    migrator.set_ignore_missing(true);
    if let Some(p) = store.pg_pool() {
        migrator.run(p).await.expect("old migrations");
    } else {
        migrator
            .run(store.sqlite_pool().unwrap())
            .await
            .expect("old migrations");
    }
}

backend_tests! {
    async fn two_databases_pushing_to_one_portal_never_take_each_others_contacts(db: TestDb, profile: HubSpotProfile) {
        // Production and staging, say: their local ids overlap (1, 2, 3, ...).
        let b_db = another(&db).await;
        let a = World::new(db, args_in(profile)).await;
        let b = a.beside(b_db).await;
        a.add_local(&[("ann@a-mail.com", "Ann", "A")]).await;
        a.add_local_without_email("Ada").await;
        b.add_local(&[("bob@b-mail.com", "Bob", "B")]).await;
        b.add_local_without_email("Bea").await;
        b.add_local_without_email("Cy").await;
        b.add_local_without_email("Dan").await;
        let a_key = a.keys().await;
        let b_key = b.keys().await;
        assert_ne!(a_key.installation(), b_key.installation(), "each database has its own id");
        assert_eq!(
            a.store.installation().await.unwrap().legacy_keys_through,
            None,
            "a fresh database claims no bare key"
        );

        let pushed = a.push(PushMode::Link).await;
        assert_eq!((pushed.created, pushed.failed), (2, 0), "{pushed:?}");
        // Upsert mode: a contact found by its key is written over. B's rows 1 and 2 must not
        // find A's contacts 1 and 2.
        let pushed = b.push(PushMode::Upsert).await;
        assert_eq!((pushed.created, pushed.updated, pushed.linked, pushed.failed), (4, 0, 0, 0), "{pushed:?}");
        // Link mode: A's new row 3 must not find B's contact 3.
        let dee = a.add_local_without_email("Dee").await;
        let pushed = a.push(PushMode::Link).await;
        assert_eq!((pushed.created, pushed.linked, pushed.failed), (1, 0, 0), "{pushed:?}");

        assert_eq!(a.sandbox.contact_count(), 7, "one contact per row of either database");
        let a_rows = a.rows().await;
        let b_rows = b.rows().await;
        assert_each_row_holds_its_own_contact(&a, &a_rows, "A");
        assert_each_row_holds_its_own_contact(&b, &b_rows, "B");
        let a_links: BTreeSet<_> = a_rows.iter().map(|r| r.hs_object_id.clone()).collect();
        assert!(b_rows.iter().all(|r| !a_links.contains(&r.hs_object_id)), "no contact shared");
        let dee_hs = a_rows.iter().find(|r| r.id == dee).unwrap().hs_object_id.clone().unwrap();
        assert_eq!(
            a.sandbox.contact(&dee_hs).unwrap().properties.get(EXTERNAL_KEY),
            Some(&a_key.key(ContactId(dee)))
        );

        // A's row 4 was never pushed; B's contact 4 (Dan) carries B's key for its row 4.
        let eve = a.add_local_without_email("Eve").await;
        let pulled = succeeded(&a.pull(PullMode::Upsert, false).await);
        assert_eq!((pulled.linked, pulled.created, pulled.failed), (0, 4, 0), "{pulled:?}");
        let a_after = a.rows().await;
        let eve_row = a_after.iter().find(|r| r.id == eve).unwrap();
        assert_eq!((eve_row.first_name.as_deref(), eve_row.hs_object_id.as_deref()), (Some("Eve"), None));
        for before in &a_rows {
            assert_eq!(a_after.iter().find(|r| r.id == before.id), Some(before), "A's rows untouched");
        }
        let pulled = succeeded(&b.pull(PullMode::Upsert, false).await);
        assert_eq!((pulled.linked, pulled.created, pulled.failed), (0, 3, 0), "{pulled:?}");
        let b_after = b.rows().await;
        for before in &b_rows {
            assert_eq!(b_after.iter().find(|r| r.id == before.id), Some(before), "B's rows untouched");
        }
        assert_eq!(a.sandbox.contact_count(), 7, "pulls write nothing to HubSpot");
    }

    async fn bare_keys_an_earlier_version_wrote_are_still_this_databases_own(db: TestDb, profile: HubSpotProfile) {
        // The database as an earlier version left it: rows 1-3 pushed with the bare local id as
        // key; the links of rows 2 and 3 were never saved (the answer lost).
        let old = Store::connect(db.url()).await.expect("connect");
        migrate_as_before_installation_ids(&old).await;
        old.insert_contacts(&[
            NewContact { email: Some("ann@old-mail.com".to_owned()), first_name: Some("Ann".to_owned()), last_name: None },
            NewContact { email: None, first_name: Some("Bo".to_owned()), last_name: None },
            NewContact { email: None, first_name: Some("Cy".to_owned()), last_name: None },
        ])
        .await
        .expect("insert");
        // Row 1's push was saved (the rest of its link is set below, once HubSpot has it).
        const PUSHED: &str = "UPDATE contacts SET pushed_version = local_version WHERE id = 1";
        if let Some(p) = old.pg_pool() {
            sqlx::query(PUSHED).execute(p).await.unwrap();
        } else {
            sqlx::query(PUSHED).execute(old.sqlite_pool().unwrap()).await.unwrap();
        }
        old.close().await;
        let w = World::new(db, args_in(profile)).await;
common::pushed::create_key_property(&w.ctx.hubspot).await;
        let ann_hs = w.sandbox.insert_contacts(vec![BTreeMap::from([
            ("email".to_owned(), "ann@old-mail.com".to_owned()),
            ("firstname".to_owned(), "Ann".to_owned()),
            (EXTERNAL_KEY.to_owned(), "1".to_owned()),
        ])]).remove(0);
        w.link_local("ann@old-mail.com", &ann_hs).await;
        let bo_hs = w.add_keyed("2", "Bo");
        let cy_hs = w.add_keyed("3", "Cy");
        assert_eq!(
            w.store.installation().await.unwrap().legacy_keys_through,
            Some(ContactId(3)),
            "the migration found a database that had pushed, with rows up to 3"
        );

        // Row 4 is new since: a bare "4" is another (old) installation's; so is a foreign
        // namespaced key for row 2.
        let dee = w.add_local_without_email("Dee").await;
        assert_eq!(dee, 4);
        let other_hs = w.add_keyed("4", "Other");
        let foreign_hs = w.add_keyed("fedcba9876543210:2", "Foreign");

        let pulled = succeeded(&w.pull(PullMode::Upsert, false).await);
        assert_eq!((pulled.linked, pulled.created, pulled.failed), (2, 2, 0), "{pulled:?}");
        let link_of = |rows: &[Row], id: i64| rows.iter().find(|r| r.id == id).unwrap().hs_object_id.clone();
        let rows = w.rows().await;
        assert_eq!(rows.len(), 6, "{rows:#?}");
        assert_eq!(link_of(&rows, 2), Some(bo_hs.clone()), "linked by its bare key");
        assert_eq!(link_of(&rows, 3), Some(cy_hs.clone()), "linked by its bare key");
        assert_eq!(link_of(&rows, 4), None, "a bare key of a row created since is not ours");
        for (hs, name) in [(&other_hs, "Other"), (&foreign_hs, "Foreign")] {
            let row = rows.iter().find(|r| r.hs_object_id.as_ref() == Some(hs)).expect("a row of its own");
            assert_eq!(row.first_name.as_deref(), Some(name));
            assert!(row.id > 4);
        }

        // The links are lost again: push finds its own contacts by their bare keys.
        w.unlink(2).await;
        w.unlink(3).await;
        let before = w.sandbox.contact_count();
        let pushed = w.push(PushMode::Link).await;
        assert_eq!((pushed.created, pushed.linked, pushed.failed), (1, 2, 0), "{pushed:?}");
        assert_eq!(w.sandbox.contact_count(), before + 1, "only row 4 was created");
        let rows = w.rows().await;
        assert_eq!(link_of(&rows, 2), Some(bo_hs.clone()));
        assert_eq!(link_of(&rows, 3), Some(cy_hs.clone()));
        let dee_hs = link_of(&rows, 4).expect("row 4 pushed");
        assert!(dee_hs != other_hs && dee_hs != foreign_hs);
        let keys = w.keys().await;
        assert_eq!(w.sandbox.contact(&dee_hs).unwrap().properties.get(EXTERNAL_KEY), Some(&keys.key(ContactId(4))));
        assert_eq!(w.sandbox.contact(&other_hs).unwrap().properties["firstname"], "Other", "untouched");

        // Upsert mode writes over what it finds by a bare key, giving it the new key.
        w.unlink(2).await;
        let pushed = w.push(PushMode::Upsert).await;
        assert_eq!((pushed.created, pushed.failed), (0, 0), "{pushed:?}");
        assert_eq!(w.sandbox.contact_count(), before + 1);
        assert_eq!(link_of(&w.rows().await, 2), Some(bo_hs.clone()));
        assert_eq!(w.sandbox.contact(&bo_hs).unwrap().properties.get(EXTERNAL_KEY), Some(&keys.key(ContactId(2))));
    }
}

// ---- OAuth, for the token-expiry test ---------------------------------------------------

fn oauth_app(sb: &SandboxHandle) -> OAuthApp {
    OAuthApp {
        client_id: sb.client_id().to_owned(),
        client_secret: Secret::new(sb.client_secret()),
        authorize_url: Url::parse(&sb.authorize_url()).expect("authorize url"),
        redirect_uri: Url::parse("http://localhost:3001/oauth-callback").expect("redirect"),
        scopes: vec![
            "crm.objects.contacts.read".to_owned(),
            "crm.objects.contacts.write".to_owned(),
        ],
        optional_scopes: Vec::new(),
    }
}
