//! A pull makes every HubSpot read a page needs before the page's write transaction opens:
//! no transaction (on SQLite, the database's one write lock) is held while HubSpot answers,
//! which may take seconds under rate limits and retries. Shown with a full contacts pull that
//! adopts a HubSpot company no local company is linked to, against a sandbox whose every
//! answer is slow, on SQLite and PostgreSQL, under both sandbox profiles.
//!
//! The specs observe an ordering, not a duration: the test waits until the pull's read of the
//! unknown company has reached HubSpot (the sandbox records a request when it arrives, then
//! waits `HUBSPOT_LATENCY_MS` before answering), and then, while that answer is pending:
//! - takes the write lock itself (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a table lock) and
//!   finds the page not yet written — had the pull opened its transaction before the read, the
//!   lock would only be granted once the page had committed;
//! - on PostgreSQL, finds no session of the database idle inside a transaction;
//! - or writes a company of its own, linked to that HubSpot company, which the pull must then
//!   use rather than create a second one.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::TestDb;
use common::world::{World, unlimited_sandbox};
use common::write_hold::WriteHold;
use crm_sync::hubspot::{Batch, ContactCompanyLink};
use crm_sync::ids::{CompanyId, HsObjectId, JobId, LocalCompanyId};
use crm_sync::jobs::model::{Counts, Job, JobAction, JobSpec, PullCounts, PullMode, Trigger};
use crm_sync::jobs::{EnqueueRequest, enqueue};
use crm_sync::sandbox::{HubSpotProfile, SandboxArgs};
use crm_sync::store::{Backend, NewCompany};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long the sandbox takes to answer each call: the window in which the test acts while
/// the pull waits for HubSpot (generous, so that a loaded machine still acts within it).
const HUBSPOT_LATENCY_MS: u64 = 2_500;

/// HubSpot contacts, each associated with the one company crm-sync does not know.
const CONTACTS: usize = 3;

/// The path of HubSpot's batch read of companies: how the pull reads the unknown company.
const COMPANIES_BATCH_READ: &str = "/crm/v3/objects/companies/batch/read";

/// A world whose HubSpot answers slowly and holds [`CONTACTS`] contacts associated (as their
/// primary company) with a company made in HubSpot; the local database is empty. Returns the
/// world and the HubSpot company's id.
async fn world_with_an_unknown_company(
    db: TestDb,
    profile: HubSpotProfile,
) -> (Arc<World>, String) {
    let args = SandboxArgs {
        latency_ms: HUBSPOT_LATENCY_MS,
        ..unlimited_sandbox(profile, 11)
    };
    let world = World::start(db, args).await;
    let company = world.sandbox.insert_companies(vec![BTreeMap::from([
        ("name".to_owned(), "Made in HubSpot".to_owned()),
        ("domain".to_owned(), "made.example".to_owned()),
    ])]);
    let company = company[0].clone();
    let contacts = world.sandbox.insert_contacts(
        (0..CONTACTS)
            .map(|i| BTreeMap::from([("email".to_owned(), format!("c{i}@made.example"))]))
            .collect(),
    );
    let links = contacts
        .into_iter()
        .map(|contact| ContactCompanyLink {
            contact: HsObjectId(contact),
            company: CompanyId(company.clone()),
            primary: true,
        })
        .collect();
    world
        .ctx
        .hubspot
        .link_contacts_to_companies(&Batch::new(links).unwrap())
        .await
        .unwrap();
    (Arc::new(world), company)
}

/// Enqueues a full contacts pull and drives it in a task of its own.
async fn start_pull(world: &Arc<World>) -> tokio::task::JoinHandle<Job> {
    let spec = JobSpec::from(JobAction::Pull {
        mode: PullMode::Upsert,
        incremental: false,
    });
    let request = EnqueueRequest {
        spec,
        trigger: Trigger::Cli,
        force: false,
    };
    let id: JobId = enqueue(&world.store, request)
        .await
        .expect("enqueue")
        .job
        .id;
    let world = world.clone();
    tokio::spawn(async move { world.drive(id).await })
}

/// Waits until the pull's read of HubSpot companies has reached the sandbox (whose answer is
/// then pending for [`HUBSPOT_LATENCY_MS`]).
async fn until_the_company_read_is_pending(world: &World) {
    for _ in 0..6_000 {
        let reads = world.sandbox.take_recorded_requests();
        if reads.iter().any(|r| r.path == COMPANIES_BATCH_READ) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the pull never read the unknown company from HubSpot");
}

/// The local company linked to the HubSpot company `hs_id`, if any.
async fn local_company_of(world: &World, hs_id: &str) -> Option<LocalCompanyId> {
    const SQL: &str = "SELECT id FROM companies WHERE hs_object_id = $1";
    let id: Option<i64> = if let Some(pool) = world.store.pg_pool() {
        sqlx::query_scalar(SQL)
            .bind(hs_id)
            .fetch_optional(pool)
            .await
    } else {
        let pool = world.store.sqlite_pool().expect("a pool");
        sqlx::query_scalar(SQL)
            .bind(hs_id)
            .fetch_optional(pool)
            .await
    }
    .expect("read the companies");
    id.map(LocalCompanyId)
}

/// The sessions of the test's PostgreSQL database that sit idle inside an open transaction.
async fn idle_in_transaction(world: &World) -> i64 {
    const SQL: &str = "SELECT count(*) FROM pg_stat_activity
                        WHERE datname = current_database() AND pid <> pg_backend_pid()
                          AND state LIKE 'idle in transaction%'";
    let pool = world.store.pg_pool().expect("a PostgreSQL store");
    sqlx::query_scalar(SQL).fetch_one(pool).await.unwrap()
}

fn pull_counts(job: &Job) -> PullCounts {
    let Counts::Pull(counts) = job.counts else {
        panic!("pull counts: {job:#?}")
    };
    counts
}

/// Every local contact has `company` as its company.
async fn assert_every_contact_has(world: &World, company: LocalCompanyId) {
    let contacts = world.store.list_contacts(None, 100).await.unwrap();
    assert_eq!(contacts.len(), CONTACTS, "{contacts:#?}");
    for contact in contacts {
        assert_eq!(
            world.store.company_of_contact(contact.id).await.unwrap(),
            Some(company),
            "{contact:#?}"
        );
    }
}

backend_tests! {
    async fn no_transaction_is_open_while_a_pull_reads_a_company_it_adopts(db: TestDb, profile: HubSpotProfile) {
        let (world, company) = world_with_an_unknown_company(db, profile).await;
        world.sandbox.set_recording(true);
        let pull = start_pull(&world).await;

        until_the_company_read_is_pending(&world).await;
        if world.db().backend() == Backend::Postgres {
            assert_eq!(idle_in_transaction(&world).await, 0, "no transaction waits on HubSpot");
        }
        // Granted at once when no transaction is open; had the pull opened its page's, only
        // after that page committed, and the company would be adopted by now.
        let hold = WriteHold::take(world.db(), "companies").await;
        assert_eq!(local_company_of(&world, &company).await, None, "the page is not written yet");
        assert_eq!(world.store.count_companies().await.unwrap(), 0);
        hold.release().await;

        let job = pull.await.expect("the pull's task");
        let counts = pull_counts(&job);
        assert_eq!(counts.associations_created, CONTACTS as u64, "{job:#?}");
        assert_eq!(counts.associations_failed, 0, "{job:#?}");
        assert_eq!(world.store.count_companies().await.unwrap(), 1, "adopted once");
        let adopted = local_company_of(&world, &company).await.expect("the company is adopted");
        assert_every_contact_has(&world, adopted).await;
    }

    async fn a_company_linked_by_another_writer_while_the_pull_reads_it_is_used_not_duplicated(db: TestDb, profile: HubSpotProfile) {
        let (world, company) = world_with_an_unknown_company(db, profile).await;
        world.sandbox.set_recording(true);
        let pull = start_pull(&world).await;

        until_the_company_read_is_pending(&world).await;
        // Another writer links a company of its own to it meanwhile: a write that goes
        // through at once, since the pull holds no transaction.
        let ours = world
            .store
            .insert_companies(&[NewCompany {
                name: Some("Ours".into()),
                domain: Some("ours.example".into()),
            }])
            .await
            .unwrap()[0];
        link(&world, ours, &company).await;
        assert_eq!(world.store.count_companies().await.unwrap(), 1);

        let job = pull.await.expect("the pull's task");
        let counts = pull_counts(&job);
        assert_eq!(counts.associations_created, CONTACTS as u64, "{job:#?}");
        assert_eq!(counts.associations_failed, 0, "{job:#?}");
        assert_eq!(world.store.count_companies().await.unwrap(), 1, "no second company");
        assert_eq!(local_company_of(&world, &company).await, Some(ours));
        assert_every_contact_has(&world, ours).await;
    }
}

/// Links the local company `local` to the HubSpot company `hs_id`, as another writer would.
async fn link(world: &World, local: LocalCompanyId, hs_id: &str) {
    const SQL: &str = "UPDATE companies SET hs_object_id = $1 WHERE id = $2";
    if let Some(pool) = world.store.pg_pool() {
        sqlx::query(SQL)
            .bind(hs_id)
            .bind(local.0)
            .execute(pool)
            .await
            .map(drop)
    } else {
        let pool = world.store.sqlite_pool().expect("a pool");
        sqlx::query(SQL)
            .bind(hs_id)
            .bind(local.0)
            .execute(pool)
            .await
            .map(drop)
    }
    .expect("link the company");
}
