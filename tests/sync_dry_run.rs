//! Dry runs end to end: a real database (SQLite and PostgreSQL), the in-process HubSpot
//! sandbox over real HTTP, and jobs run through the real queue and the real sync runner. A dry
//! run writes nothing but its job row, and its counts are those of the real run that follows
//! it with nothing changed in between.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::TestDb;
use crm_sync::hubspot::{Auth, Backoff, ClientConfig, HubSpotClient, HubSpotError};
use crm_sync::ids::JobId;
use crm_sync::jobs::model::{
    Job, JobAction, JobSpec, JobStatus, PlannedKind, PullMode, PushMode, Trigger,
};
use crm_sync::jobs::queue::SyncTask;
use crm_sync::jobs::worker::{RetryPolicy, process};
use crm_sync::jobs::{EnqueueRequest, JobRunner, enqueue};
use crm_sync::sandbox::{Sandbox, SandboxArgs, SandboxContact, SandboxHandle};
use crm_sync::secret::Secret;
use crm_sync::store::{NewContact, Store};
use crm_sync::sync::push::EXTERNAL_KEY;
use crm_sync::sync::{SyncContext, SyncRunner};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

// ---- the world a test runs in ---------------------------------------------------------

/// A database, a sandbox without limits or faults, and the real sync runner pointed at it.
struct World {
    store: Store,
    sandbox: SandboxHandle,
    ctx: SyncContext,
    _db: TestDb,
}

/// One local row as stored, with its sync bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct Row {
    id: i64,
    email: Option<String>,
    first_name: Option<String>,
    hs_object_id: Option<String>,
    local_version: i64,
    pushed_version: i64,
    /// The tombstone's reason, when HubSpot deleted the contact.
    hubspot_deleted_reason: Option<String>,
}

/// Everything a dry run must leave as it found it: HubSpot's contacts, the local rows (their
/// links, pushed versions and tombstones) and the incremental pull's bookmark.
#[derive(Debug, PartialEq)]
struct Snapshot {
    hubspot: Vec<SandboxContact>,
    rows: Vec<Row>,
    bookmark: Option<chrono::DateTime<chrono::Utc>>,
}

impl World {
    async fn new(db: TestDb) -> World {
        let args = SandboxArgs {
            requests_per_10s: 0,
            search_per_second: 0,
            rng_seed: Some(7),
            ..SandboxArgs::default()
        };
        let sandbox = Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("sandbox starts");
        let mut config = ClientConfig::new(Url::parse(&sandbox.base_url()).expect("url"));
        config.backoff = Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(50),
        };
        let client = HubSpotClient::new(
            config,
            Auth::PrivateApp(Secret::new(sandbox.access_token())),
        )
        .expect("client");
        World {
            store: db.store().await,
            sandbox,
            ctx: SyncContext::new(client),
            _db: db,
        }
    }

    /// Enqueues the job and runs it to its end through the worker's code.
    async fn run(&self, spec: JobSpec) -> Job {
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
        let job = self.drive(job.id).await;
        assert_eq!(job.status, JobStatus::Succeeded, "{job:#?}");
        assert_eq!(job.spec, spec);
        job
    }

    async fn drive(&self, id: JobId) -> Job {
        let runner: Arc<dyn JobRunner> = Arc::new(SyncRunner::new(self.ctx.clone()));
        let retry = RetryPolicy {
            max_attempts: 20,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        for _ in 0..50 {
            let record = self.store.get_job_record(id).await.unwrap().unwrap();
            if record.job.status.is_terminal() {
                return record.job;
            }
            let task = SyncTask {
                job_id: id,
                delivery: record.delivery.expect("an active job has a delivery"),
            };
            process(
                &self.store,
                &runner,
                retry,
                &task,
                "test-worker",
                Arc::new(|| false),
            )
            .await
            .expect("the delivery is settled");
        }
        panic!("job {id} did not end");
    }

    async fn add_local(&self, contacts: &[(Option<&str>, &str)]) {
        let batch: Vec<NewContact> = contacts
            .iter()
            .map(|(email, first)| NewContact {
                email: email.map(str::to_owned),
                first_name: Some((*first).to_owned()),
                last_name: None,
            })
            .collect();
        self.store.insert_contacts(&batch).await.expect("insert");
    }

    fn add_hubspot(&self, contacts: &[(&str, &str)]) {
        self.sandbox.insert_contacts(
            contacts
                .iter()
                .map(|(email, first)| {
                    BTreeMap::from([
                        ("email".to_owned(), (*email).to_owned()),
                        ("firstname".to_owned(), (*first).to_owned()),
                    ])
                })
                .collect(),
        );
    }

    async fn execute(&self, sql: &'static str, text: &str) {
        if let Some(p) = self.store.pg_pool() {
            sqlx::query(sql).bind(text).execute(p).await.unwrap();
        } else {
            let p = self.store.sqlite_pool().unwrap();
            sqlx::query(sql).bind(text).execute(p).await.unwrap();
        }
    }

    async fn rows(&self) -> Vec<Row> {
        const SQL: &str = "SELECT id, email, first_name, hs_object_id, \
             CAST(local_version AS BIGINT) AS local_version, \
             CAST(pushed_version AS BIGINT) AS pushed_version, hubspot_deleted_reason \
             FROM contacts ORDER BY id";
        if let Some(p) = self.store.pg_pool() {
            sqlx::query_as(SQL).fetch_all(p).await.unwrap()
        } else {
            let p = self.store.sqlite_pool().unwrap();
            sqlx::query_as(SQL).fetch_all(p).await.unwrap()
        }
    }

    async fn snapshot(&self) -> Snapshot {
        Snapshot {
            hubspot: self.sandbox.contacts(),
            rows: self.rows().await,
            bookmark: self.store.pull_bookmark().await.unwrap(),
        }
    }

    async fn key_property_exists(&self) -> bool {
        match self.ctx.hubspot.get_property(EXTERNAL_KEY).await {
            Ok(_) => true,
            Err(HubSpotError::NotFound { .. }) => false,
            Err(e) => panic!("reading the property: {e}"),
        }
    }
}

fn push(mode: PushMode) -> JobSpec {
    JobSpec::from(JobAction::Push { mode })
}

fn pull(mode: PullMode, incremental: bool) -> JobSpec {
    JobSpec::from(JobAction::Pull { mode, incremental })
}

fn dry(spec: JobSpec) -> JobSpec {
    spec.with_dry_run(true).expect("contacts have dry runs")
}

/// Runs `spec` as a dry run, checks it changed nothing, then runs it for real and checks the
/// counts agree; the dry run.
async fn dry_then_real(w: &World, spec: JobSpec) -> Job {
    let before = w.snapshot().await;
    let planned = w.run(dry(spec)).await;
    assert_eq!(w.snapshot().await, before, "a dry run writes nothing");
    let real = w.run(spec).await;
    assert_eq!(
        planned.counts, real.counts,
        "the dry run's counts are the real run's: {planned:#?}"
    );
    assert!(real.plan.is_none(), "a real job has no plan");
    let plan = planned.plan.clone().expect("a dry run has a plan");
    assert_eq!(
        plan.actions.len() as u64,
        planned.counts.total() + pull_unlinked(&planned),
        "one planned action per record: {plan:#?}"
    );
    assert_eq!(planned.errors.len() as u64, planned.counts.failed());
    planned
}

fn pull_unlinked(job: &Job) -> u64 {
    match job.counts {
        crm_sync::jobs::model::Counts::Pull(c) => c.unlinked,
        crm_sync::jobs::model::Counts::Push(_) => 0,
    }
}

// ---- specifications -------------------------------------------------------------------

backend_tests! {
    async fn a_dry_push_writes_nothing_and_counts_what_the_push_then_does(db: TestDb) {
        for mode in [PushMode::Link, PushMode::Upsert] {
            let w = World::new(db_for(&db).await).await;
            // A first push before anything exists: not even the external key property is made.
            w.add_local(&[(Some("first@acme.io"), "First")]).await;
            let first = w.run(dry(push(mode))).await;
            assert!(!w.key_property_exists().await, "{mode:?}: the dry run created no property");
            assert_eq!(w.sandbox.contact_count(), 0);
            let plan = first.plan.expect("a plan");
            assert_eq!(plan.calls.get("property_create"), Some(&1), "{plan:#?}");
            assert_eq!(plan.actions[0].action, PlannedKind::Create);
            w.run(push(mode)).await;

            // Then a mix: a linked contact changed locally, one HubSpot has by email, new
            // ones with and without email, and one whose email HubSpot refuses.
            w.execute("UPDATE contacts SET first_name = $1", "Changed").await;
            w.add_hubspot(&[("known@acme.io", "Known")]);
            w.add_local(&[
                (Some("known@acme.io"), "Local"),
                (Some("new1@acme.io"), "New1"),
                (Some("new2@acme.io"), "New2"),
                (None, "NoEmail"),
                (Some("bad@example"), "Bad"),
            ])
            .await;
            let planned = dry_then_real(&w, push(mode)).await;
            let crm_sync::jobs::model::Counts::Push(c) = planned.counts else {
                panic!("push counts")
            };
            assert_eq!((c.total, c.created, c.failed), (6, 3, 1), "{mode:?}: {c:?}");
            match mode {
                PushMode::Link => assert_eq!((c.linked, c.updated), (1, 1), "{c:?}"),
                PushMode::Upsert => assert_eq!((c.linked, c.updated), (0, 2), "{c:?}"),
            }
            assert!(
                planned.errors[0].reason.contains("invalid"),
                "{:?}",
                planned.errors
            );

            // Nothing left to do: the dry run says so too.
            let idle = w.run(dry(push(mode))).await;
            assert_eq!(idle.counts.total(), 1, "only the refused contact is left");
        }
    }

    async fn a_dry_pull_writes_nothing_and_counts_what_the_pull_then_does(db: TestDb) {
        for mode in [PullMode::Upsert, PullMode::Verbose] {
            let w = World::new(db_for(&db).await).await;
            // One contact already linked and unchanged.
            w.add_local(&[(Some("same@acme.io"), "Same")]).await;
            w.add_hubspot(&[("same@acme.io", "Same")]);
            w.run(pull(mode, false)).await;
            // New in HubSpot, and one a local row can be linked to by email.
            w.add_hubspot(&[("new1@acme.io", "New1"), ("new2@acme.io", "New2")]);
            w.add_hubspot(&[("linkable@acme.io", "Link")]);
            w.add_local(&[(Some("linkable@acme.io"), "Local")]).await;

            let planned = dry_then_real(&w, pull(mode, false)).await;
            let crm_sync::jobs::model::Counts::Pull(c) = planned.counts else {
                panic!("pull counts")
            };
            assert_eq!(
                (c.total, c.created, c.linked, c.unchanged),
                (4, 2, 1, 1),
                "{mode:?}: {c:?}"
            );
            assert!(planned.plan.unwrap().calls["list"] >= 1);
        }
    }

    async fn a_dry_incremental_pull_leaves_the_bookmark_where_it_was(db: TestDb) {
        let w = World::new(db).await;
        w.add_hubspot(&[("old@acme.io", "Old")]);
        w.run(pull(PullMode::Upsert, false)).await;
        let bookmark = w.store.pull_bookmark().await.unwrap();
        assert!(bookmark.is_some());
        w.add_hubspot(&[("later@acme.io", "Later")]);

        let planned = dry_then_real(&w, pull(PullMode::Upsert, true)).await;
        assert!(planned.plan.unwrap().calls["search"] >= 1);
        assert_ne!(w.store.pull_bookmark().await.unwrap(), bookmark, "the real run moves it");
    }

    async fn a_dry_run_while_a_real_push_is_active_is_a_job_of_its_own(db: TestDb) {
        let w = World::new(db).await;
        let request = |spec| EnqueueRequest {
            spec,
            trigger: Trigger::Api,
            force: false,
        };
        let real = enqueue(&w.store, request(push(PushMode::Link))).await.unwrap();
        let dry_run = enqueue(&w.store, request(dry(push(PushMode::Link)))).await.unwrap();
        assert!(real.created && dry_run.created);
        assert_ne!(real.job.id, dry_run.job.id);
        assert!(dry_run.job.spec.dry_run && !real.job.spec.dry_run);
    }
}

/// A fresh database on the backend of `db` (each mode of a spec starts from nothing).
async fn db_for(db: &TestDb) -> TestDb {
    match db.backend() {
        crm_sync::store::Backend::Sqlite => TestDb::sqlite().await,
        crm_sync::store::Backend::Postgres => TestDb::postgres().await,
    }
}
