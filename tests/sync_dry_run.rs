//! Dry runs end to end: a real database (SQLite and PostgreSQL), the in-process HubSpot
//! sandbox over real HTTP, and jobs run through the real queue and the real sync runner. A dry
//! run writes nothing but its job row, and its counts are those of the real run that follows
//! it with nothing changed in between.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::TestDb;
use common::world::{World, unlimited_sandbox};
use crm_sync::hubspot::HubSpotError;
use crm_sync::jobs::model::{
    Job, JobAction, JobSpec, JobStatus, PlannedKind, PullMode, PushMode, Trigger,
};
use crm_sync::jobs::{EnqueueRequest, enqueue};
use crm_sync::sandbox::{HubSpotProfile, SandboxContact};
use crm_sync::store::NewContact;
use crm_sync::sync::push::EXTERNAL_KEY;
use std::collections::BTreeMap;

// ---- the world a test runs in ---------------------------------------------------------

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

/// What a dry-run spec needs of the shared [`World`] beyond it.
trait DryRunWorld {
    async fn run(&self, spec: JobSpec) -> Job;
    async fn add_local(&self, contacts: &[(Option<&str>, &str)]);
    fn add_hubspot(&self, contacts: &[(&str, &str)]);
    async fn execute(&self, sql: &'static str, text: &str);
    async fn rows(&self) -> Vec<Row>;
    async fn snapshot(&self) -> Snapshot;
    async fn key_property_exists(&self) -> bool;
}

/// A world answering as `profile` says HubSpot does.
async fn world(db: TestDb, profile: HubSpotProfile) -> World {
    World::start(db, unlimited_sandbox(profile, 7)).await
}

impl DryRunWorld for World {
    /// Enqueues the job and runs it to its end through the worker's code.
    async fn run(&self, spec: JobSpec) -> Job {
        let job = self
            .enqueue_and_drive(EnqueueRequest {
                spec,
                trigger: Trigger::Cli,
                force: false,
            })
            .await;
        assert_eq!(job.status, JobStatus::Succeeded, "{job:#?}");
        assert_eq!(job.spec, spec);
        job
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
    async fn a_dry_push_writes_nothing_and_counts_what_the_push_then_does(db: TestDb, profile: HubSpotProfile) {
        for mode in [PushMode::Link, PushMode::Upsert] {
            let w = world(db_for(&db).await, profile).await;
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

    async fn a_dry_pull_writes_nothing_and_counts_what_the_pull_then_does(db: TestDb, profile: HubSpotProfile) {
        for mode in [PullMode::Upsert, PullMode::Verbose] {
            let w = world(db_for(&db).await, profile).await;
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

    async fn a_dry_incremental_pull_leaves_the_bookmark_where_it_was(db: TestDb, profile: HubSpotProfile) {
        let w = world(db, profile).await;
        w.add_hubspot(&[("old@acme.io", "Old")]);
        w.run(pull(PullMode::Upsert, false)).await;
        let bookmark = w.store.pull_bookmark().await.unwrap();
        assert!(bookmark.is_some());
        w.add_hubspot(&[("later@acme.io", "Later")]);

        let planned = dry_then_real(&w, pull(PullMode::Upsert, true)).await;
        assert!(planned.plan.unwrap().calls["search"] >= 1);
        assert_ne!(w.store.pull_bookmark().await.unwrap(), bookmark, "the real run moves it");
    }

}

// ---- the job slots alone (no HubSpot) --------------------------------------------------

// Only the queue's one-active-job slot is at stake: no job runs and the sandbox is never
// asked anything, so there is no HubSpot answer to vary.
backend_tests! {
    async fn a_dry_run_while_a_real_push_is_active_is_a_job_of_its_own(db: TestDb) {
        let store = db.store().await;
        let request = |spec| EnqueueRequest {
            spec,
            trigger: Trigger::Api,
            force: false,
        };
        let real = enqueue(&store, request(push(PushMode::Link))).await.unwrap();
        let dry_run = enqueue(&store, request(dry(push(PushMode::Link)))).await.unwrap();
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
