//! Companies end to end: crm-sync's `companies` table in a real database (SQLite and
//! PostgreSQL), the in-process HubSpot sandbox over real HTTP, and company push and pull jobs
//! run through the real queue (`enqueue`, then the worker's `process`).

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::TestDb;
use common::world::unlimited_sandbox;
use crm_sync::hubspot::{
    Auth, Backoff, ClientConfig, HubSpotClient, MemoryTokenStore, OAuthApp, Operation,
};
use crm_sync::ids::{CompanyId, JobId, LocalCompanyId};
use crm_sync::jobs::model::{
    Counts, Job, JobAction, JobSpec, PullCounts, PullMode, PushCounts, PushMode, SyncObject,
    Trigger,
};
use crm_sync::jobs::queue::SyncTask;
use crm_sync::jobs::runner::StopCheck;
use crm_sync::jobs::worker::{Settled, process};
use crm_sync::jobs::{EnqueueRequest, JobRunner, RetryPolicy, enqueue};
use crm_sync::sandbox::{HubSpotProfile, Sandbox, SandboxArgs, SandboxCompany, SandboxHandle};
use crm_sync::secret::Secret;
use crm_sync::store::{LocalCompany, NewCompany, Store, TombstoneReason};
use crm_sync::sync::companies::COMPANY_KEY;
use crm_sync::sync::{PullSettings, SyncContext, SyncRunner};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

// ---- the test environment ------------------------------------------------------------

/// A sandbox without limits or faults unless a test asks for them, answering the way
/// `profile` says HubSpot does.
fn sandbox_args_in(profile: HubSpotProfile) -> SandboxArgs {
    unlimited_sandbox(profile, 7)
}

/// A database, a sandbox, and a company runner whose client talks to the sandbox.
struct Env {
    store: Store,
    hubspot: SandboxHandle,
    runner: Arc<SyncRunner>,
    _db: TestDb,
}

impl Env {
    async fn new(db: TestDb, profile: HubSpotProfile) -> Env {
        Env::with(db, sandbox_args_in(profile)).await
    }

    async fn with(db: TestDb, args: SandboxArgs) -> Env {
        let hubspot = Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("sandbox starts");
        let auth = Auth::PrivateApp(Secret::new(hubspot.access_token()));
        Env::assemble(db, hubspot, auth).await
    }

    /// The same with an OAuth connection granted `scopes`, installed through the sandbox's
    /// authorize page as a browser would.
    async fn with_oauth(db: TestDb, profile: HubSpotProfile, scopes: &[&str]) -> Env {
        let hubspot = Sandbox::start(
            sandbox_args_in(profile),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("sandbox starts");
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
        let env = Env::assemble(db, hubspot, auth).await;
        let link = env.client().authorize_url("state-1").expect("install link");
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("browser");
        let answer = browser.get(link).send().await.expect("authorize page");
        let location = answer.headers()["location"]
            .to_str()
            .expect("redirect")
            .to_owned();
        let code = url::Url::parse(&location)
            .expect("redirect URL")
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code");
        env.client().connect(&code).await.expect("code exchange");
        env
    }

    async fn assemble(db: TestDb, hubspot: SandboxHandle, auth: Auth) -> Env {
        let mut config = ClientConfig::new(hubspot.base_url().parse().expect("sandbox URL"));
        config.requests_per_10s = 0;
        config.search_per_second = 0;
        config.backoff = Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(50),
        };
        let client = HubSpotClient::new(config, auth).expect("client");
        // No lookback: an incremental pull reads exactly what changed since the last one.
        let settings = PullSettings {
            lookback: Duration::ZERO,
        };
        Env {
            store: db.store().await,
            hubspot,
            // The service's own runner: it hands company jobs to the company engines.
            runner: Arc::new(SyncRunner::new(SyncContext {
                pull: settings,
                ..SyncContext::new(client)
            })),
            _db: db,
        }
    }

    async fn insert(&self, companies: &[(Option<&str>, Option<&str>)]) -> Vec<LocalCompanyId> {
        let batch: Vec<NewCompany> = companies
            .iter()
            .map(|(name, domain)| NewCompany {
                name: name.map(str::to_owned),
                domain: domain.map(str::to_owned),
            })
            .collect();
        self.store.insert_companies(&batch).await.expect("insert")
    }

    /// Companies already in HubSpot (name, domain), made there directly as HubSpot itself or
    /// a person would.
    fn in_hubspot(&self, companies: &[(&str, &str)]) -> Vec<String> {
        self.hubspot.insert_companies(
            companies
                .iter()
                .map(|(name, domain)| {
                    BTreeMap::from([
                        ("name".to_owned(), (*name).to_owned()),
                        ("domain".to_owned(), (*domain).to_owned()),
                    ])
                })
                .collect(),
        )
    }

    async fn push(&self, mode: PushMode) -> (Job, PushCounts) {
        let job = self.run(companies(JobAction::Push { mode })).await;
        let Counts::Push(counts) = job.counts else {
            panic!("push counts: {job:#?}")
        };
        assert!(counts.is_consistent(), "{counts:?}");
        (job, counts)
    }

    async fn pull(&self, incremental: bool) -> (Job, PullCounts) {
        let job = self
            .run(companies(JobAction::Pull {
                mode: PullMode::Upsert,
                incremental,
            }))
            .await;
        let Counts::Pull(counts) = job.counts else {
            panic!("pull counts: {job:#?}")
        };
        assert!(counts.is_consistent(), "{counts:?}");
        (job, counts)
    }

    /// Enqueues a job and runs it to its end through the worker's code, as often as the
    /// queue would (a transient failure hands the job back; the next run resumes it).
    async fn run(&self, spec: JobSpec) -> Job {
        let id = self.enqueue(spec).await;
        self.run_to_end(id).await
    }

    async fn enqueue(&self, spec: JobSpec) -> JobId {
        let enqueued = enqueue(
            &self.store,
            EnqueueRequest {
                spec,
                trigger: Trigger::Cli,
                force: false,
            },
        )
        .await
        .expect("enqueue");
        assert!(enqueued.created, "no other job of that direction is active");
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
        let job = self.store.get_job(id).await.unwrap().unwrap();
        assert!(job.status.is_terminal(), "the job ended: {job:#?}");
        job
    }

    async fn run_once(&self, id: JobId, stop: StopCheck) -> Settled {
        let record = self.store.get_job_record(id).await.unwrap().unwrap();
        let task = SyncTask {
            job_id: id,
            delivery: record.delivery.expect("the job has a delivery"),
        };
        let retry = RetryPolicy {
            max_attempts: 30,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
        };
        let runner: Arc<dyn JobRunner> = self.runner.clone();
        process(&self.store, &runner, retry, &task, "test-worker", stop)
            .await
            .expect("settle the run")
    }

    async fn company(&self, id: LocalCompanyId) -> LocalCompany {
        self.store
            .get_company(id)
            .await
            .unwrap()
            .expect("row exists")
    }

    async fn companies(&self) -> Vec<LocalCompany> {
        self.store.list_companies(None, 1000).await.unwrap()
    }

    fn client(&self) -> &HubSpotClient {
        &self.runner.context().hubspot
    }

    fn hubspot_company(&self, id: &CompanyId) -> SandboxCompany {
        self.hubspot
            .company(&id.0)
            .expect("HubSpot has the company")
    }

    /// Every write call the client made so far.
    fn writes(&self) -> u64 {
        [
            Operation::BatchCreateCompanies,
            Operation::BatchUpdateCompanies,
            Operation::BatchUpsertCompanies,
            Operation::CreateProperty,
        ]
        .into_iter()
        .map(|op| self.calls_of(op))
        .sum()
    }

    fn calls_of(&self, op: Operation) -> u64 {
        let metrics = self.client().metrics();
        ["2xx", "3xx", "4xx", "429", "5xx", "network"]
            .iter()
            .map(|class| metrics.requests(op, class))
            .sum()
    }

    async fn execute(&self, sql: &'static str, text: &str, id: i64) {
        if let Some(pool) = self.store.pg_pool() {
            sqlx::query(sql)
                .bind(text)
                .bind(id)
                .execute(pool)
                .await
                .map(drop)
        } else {
            let pool = self.store.sqlite_pool().expect("a pool");
            sqlx::query(sql)
                .bind(text)
                .bind(id)
                .execute(pool)
                .await
                .map(drop)
        }
        .expect("execute");
    }
}

/// A real (not dry-run) job of companies.
fn companies(action: JobAction) -> JobSpec {
    JobSpec::from(action)
        .for_object(SyncObject::Companies)
        .expect("companies sync")
}

fn linked(company: &LocalCompany) -> CompanyId {
    company.hs_object_id.clone().expect("the row is linked")
}

// ---- push ------------------------------------------------------------------------------

backend_tests! {
    async fn link_mode_links_a_single_domain_match_creates_the_rest_and_updates_local_changes(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let existing = env.in_hubspot(&[("Acme in HubSpot", "acme.io")]);
        let ids = env
            .insert(&[(Some("Acme"), Some(" ACME.io ")), (Some("Bolt"), Some("bolt.dev")), (Some("Nodomain"), None)])
            .await;

        let (job, counts) = env.push(PushMode::Link).await;
        assert_eq!((counts.total, counts.linked, counts.created, counts.failed), (3, 1, 2, 0), "{job:#?}");
        let acme = env.company(ids[0]).await;
        assert_eq!(acme.domain.as_deref(), Some("acme.io"), "stored trimmed and lower-case");
        assert_eq!(linked(&acme).0, existing[0], "linked to the one company with its domain");
        assert_eq!(
            env.hubspot_company(&linked(&acme)).properties["name"], "Acme in HubSpot",
            "link mode leaves a matched company's properties alone"
        );
        let bolt = env.hubspot_company(&linked(&env.company(ids[1]).await));
        assert_eq!(bolt.properties["name"], "Bolt");
        assert_eq!(bolt.properties["domain"], "bolt.dev");
        assert!(bolt.properties[COMPANY_KEY].ends_with(&format!(":{}", ids[1])), "{bolt:?}");
        assert_eq!(env.hubspot.companies().len(), 3);

        env.execute("UPDATE companies SET name = $1 WHERE id = $2", "Bolt Labs", ids[1].0).await;
        let (_, counts) = env.push(PushMode::Link).await;
        assert_eq!((counts.total, counts.updated), (1, 1));
        let bolt = env.hubspot_company(&linked(&env.company(ids[1]).await));
        assert_eq!(bolt.properties["name"], "Bolt Labs", "a linked company changed locally is updated");

        let before = env.writes();
        let (_, counts) = env.push(PushMode::Link).await;
        assert_eq!(counts.total, 0);
        assert_eq!(env.writes(), before, "a re-run with nothing changed makes no write call");
    }

    async fn a_dry_run_writes_nothing_and_counts_what_the_real_run_then_does(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.in_hubspot(&[("Acme in HubSpot", "acme.io"), ("Twin One", "twin.io"), ("Twin Two", "twin.io")]);
        let ids = env
            .insert(&[(Some("Acme"), Some("acme.io")), (Some("Bolt"), Some("bolt.dev")), (Some("Twin"), Some("twin.io")), (Some("Nodomain"), None)])
            .await;
        let dry = |action| companies(action).with_dry_run(true).expect("companies have dry runs");
        let push = JobAction::Push { mode: PushMode::Link };
        let pull = JobAction::Pull { mode: PullMode::Upsert, incremental: false };

        // Push: the external key property does not exist yet, and must not be created.
        let writes = env.writes();
        let planned = env.run(dry(push)).await;
        assert_eq!(env.writes(), writes, "a dry run makes no write call: {planned:#?}");
        assert_eq!(env.hubspot.companies().len(), 3, "nothing created");
        assert!(env.companies().await.iter().all(|c| c.hs_object_id.is_none()), "nothing linked");
        let (real, counts) = env.push(PushMode::Link).await;
        assert_eq!(planned.counts, Counts::Push(counts), "{planned:#?}\n{real:#?}");
        assert_eq!((counts.linked, counts.created, counts.failed), (1, 2, 1));
        let plan = planned.plan.as_ref().expect("a dry run keeps its plan");
        assert_eq!(plan.calls.get("batch_create"), Some(&1), "{plan:?}");
        assert_eq!(plan.actions.len(), 4, "one action per company: {plan:?}");

        // A local change, a company deleted in HubSpot: update and skip, planned as done.
        env.execute("UPDATE companies SET name = $1 WHERE id = $2", "Bolt Labs", ids[1].0).await;
        let acme = linked(&env.company(ids[0]).await);
        env.client().archive_company(&acme).await.expect("deleted in HubSpot");
        env.execute("UPDATE companies SET name = $1 WHERE id = $2", "Acme Corp", ids[0].0).await;
        let planned = env.run(dry(push)).await;
        assert_eq!(env.company(ids[0]).await.hubspot_deleted, None, "no tombstone in a dry run");
        let (_, counts) = env.push(PushMode::Link).await;
        assert_eq!(planned.counts, Counts::Push(counts));
        assert_eq!((counts.updated, counts.skipped, counts.failed), (1, 1, 1));

        // Pull: a company only HubSpot has, and the sweep finding nothing more.
        env.in_hubspot(&[("Only in HubSpot", "only.io")]);
        let rows = env.companies().await;
        let planned = env.run(dry(pull)).await;
        assert_eq!(env.companies().await, rows, "the local rows are as they were");
        let (_, counts) = env.pull(false).await;
        assert_eq!(planned.counts, Counts::Pull(counts), "{planned:#?}");
        assert!(counts.created >= 1, "{counts:?}");
        let (_, again) = env.pull(true).await;
        assert_eq!(again.created, 0, "the dry run moved no bookmark that hid a change");
    }

    async fn several_companies_with_the_domain_fail_the_record_naming_every_candidate(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let dupes = env.in_hubspot(&[("Twin One", "twin.io"), ("Twin Two", "twin.io")]);
        let ids = env.insert(&[(Some("Twin"), Some("twin.io"))]).await;

        let (job, counts) = env.push(PushMode::Link).await;
        assert_eq!((counts.total, counts.failed, counts.created, counts.linked), (1, 1, 0, 0));
        let error = &job.errors[0];
        assert_eq!(error.company_id, Some(ids[0]));
        for id in &dupes {
            assert!(error.reason.contains(id.as_str()), "names {id}: {}", error.reason);
        }
        assert_eq!(env.company(ids[0]).await.hs_object_id, None, "never a guess");
        assert_eq!(env.hubspot.companies().len(), 2, "nothing created");
    }

    async fn upsert_mode_goes_by_the_external_key_never_by_domain(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let theirs = env.in_hubspot(&[("Someone else's", "shared.io")]);
        let ids = env.insert(&[(Some("Ours"), Some("shared.io"))]).await;

        let (_, counts) = env.push(PushMode::Upsert).await;
        assert_eq!((counts.total, counts.created), (1, 1));
        assert_eq!(env.calls_of(Operation::SearchCompanies), 0, "no domain search in upsert mode");
        let ours = linked(&env.company(ids[0]).await);
        assert_ne!(ours.0, theirs[0]);
        assert_eq!(
            env.hubspot.company(&theirs[0]).unwrap().properties["name"], "Someone else's",
            "the company that merely shares the domain is untouched"
        );

        env.execute("UPDATE companies SET name = $1 WHERE id = $2", "Ours Renamed", ids[0].0).await;
        let (_, counts) = env.push(PushMode::Upsert).await;
        assert_eq!((counts.total, counts.updated), (1, 1));
        assert_eq!(env.hubspot_company(&ours).properties["name"], "Ours Renamed");
        assert_eq!(env.hubspot.companies().len(), 2);
    }

    async fn creates_whose_answers_were_lost_are_found_by_key_and_never_made_twice(db: TestDb, profile: HubSpotProfile) {
        // Every write is applied, then its connection dropped (its answer lost); search lags a minute, so only
        // the external key can find what the lost creates made.
        let args = SandboxArgs {
            fault_drop_after_write: 1.0,
            search_delay_ms: 60_000,
            ..sandbox_args_in(profile)
        };
        let env = Env::with(db, args).await;
        let rows: Vec<(Option<&str>, Option<&str>)> = vec![(Some("Dropped"), Some("dropped.io")); 30];
        let ids = env.insert(&rows).await;

        let (job, counts) = env.push(PushMode::Link).await;
        assert_eq!((counts.total, counts.created, counts.failed), (30, 30, 0), "{job:#?}");
        assert!(
            env.client()
                .metrics()
                .requests(Operation::BatchCreateCompanies, "network")
                >= 1,
            "the create's answer was lost, and settled by reading the keys"
        );
        let hubspot = env.hubspot.companies();
        assert_eq!(hubspot.len(), 30, "one HubSpot company per local company");
        let mut keys: Vec<&String> = hubspot.iter().map(|c| &c.properties[COMPANY_KEY]).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 30, "no key twice");
        for id in ids {
            let company = env.company(id).await;
            let record = env.hubspot_company(&linked(&company));
            assert!(record.properties[COMPANY_KEY].ends_with(&format!(":{id}")));
        }
    }

    async fn a_linked_company_merged_away_in_hubspot_follows_its_survivor_and_is_never_created_again(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let ids = env.insert(&[(Some("Merged"), Some("merged.io"))]).await;
        env.push(PushMode::Link).await;
        let ours = linked(&env.company(ids[0]).await);
        let theirs = env.in_hubspot(&[("Survivor", "survivor.io")]);
        // Under some profiles the merge's result gets a new id: read it, never assume.
        let survivor = env
            .client()
            .merge_companies(&CompanyId(theirs[0].clone()), &ours)
            .await
            .expect("merge")
            .id;
        env.execute("UPDATE companies SET name = $1 WHERE id = $2", "Merged Renamed", ids[0].0).await;

        let dry = companies(JobAction::Push { mode: PushMode::Link }).with_dry_run(true).expect("dry run");
        let planned = env.run(dry).await;
        let (job, counts) = env.push(PushMode::Link).await;
        assert_eq!(planned.counts, Counts::Push(counts), "the dry run foresaw it: {planned:#?}");
        assert_eq!((counts.total, counts.linked, counts.skipped, counts.failed), (1, 1, 0, 0), "{job:#?}");
        assert_eq!(linked(&env.company(ids[0]).await), survivor, "re-linked to the survivor");
        assert_eq!(env.company(ids[0]).await.hubspot_deleted, None, "a merge is not a deletion");
        assert_eq!(env.hubspot.companies().len(), 1, "nothing created again");

        let (_, counts) = env.push(PushMode::Link).await;
        assert_eq!((counts.total, counts.updated), (1, 1), "the next push gives the survivor the local values");
        assert_eq!(env.hubspot_company(&survivor).properties["name"], "Merged Renamed");
        assert_eq!(env.hubspot.companies().len(), 1);
    }

    async fn a_company_hubspot_deleted_is_tombstoned_by_pull_and_never_created_again(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let ids = env.insert(&[(Some("Gone Soon"), Some("gone.io"))]).await;
        env.push(PushMode::Link).await;
        let hs = linked(&env.company(ids[0]).await);
        env.client().archive_company(&hs).await.unwrap();

        let (_, counts) = env.pull(false).await;
        assert_eq!(counts.unlinked, 1);
        let row = env.company(ids[0]).await;
        assert_eq!(row.hs_object_id, None);
        let tombstone = row.hubspot_deleted.expect("tombstoned");
        assert_eq!(tombstone.reason, TombstoneReason::Deleted);

        let (_, counts) = env.push(PushMode::Link).await;
        assert_eq!(counts.total, 0, "never created again");
        assert!(env.hubspot.companies().is_empty());

        // HubSpot restores it from its recycle bin: pull leaves the marked row alone.
        env.hubspot.restore_company(&hs.0, "7").unwrap();
        let (_, counts) = env.pull(false).await;
        assert_eq!((counts.created, counts.linked, counts.unchanged), (0, 0, 1));
        assert_eq!(env.companies().await.len(), 1, "no second row");

        // A user's restore lets push go on: it finds the company by its key, never a second.
        assert!(env.store.restore_company(ids[0]).await.unwrap());
        let (_, counts) = env.push(PushMode::Link).await;
        assert_eq!((counts.total, counts.failed), (1, 0));
        assert_eq!(linked(&env.company(ids[0]).await), hs);
        assert_eq!(env.hubspot.companies().len(), 1);
    }
}

// ---- pull ------------------------------------------------------------------------------

backend_tests! {
    async fn pull_links_by_domain_creates_the_rest_and_never_changes_local_names(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let ids = env
            .insert(&[(Some("Local Name"), Some("match.io")), (Some("Twin A"), Some("twin.io")), (Some("Twin B"), Some("twin.io"))])
            .await;
        // Made by HubSpot (or a person) on its own: crm-sync never wrote them.
        let hs = env.in_hubspot(&[
            ("HubSpot Name", "match.io"),
            ("Only In HubSpot", "new.io"),
            ("Twin In HubSpot", "twin.io"),
        ]);

        let (job, counts) = env.pull(false).await;
        assert_eq!(
            (counts.total, counts.linked, counts.created, counts.failed),
            (3, 1, 1, 1),
            "{job:#?}"
        );
        let matched = env.company(ids[0]).await;
        assert_eq!(linked(&matched).0, hs[0]);
        assert_eq!(matched.name.as_deref(), Some("Local Name"), "local names are the local database's");
        let created: Vec<LocalCompany> = env
            .companies()
            .await
            .into_iter()
            .filter(|c| c.hs_object_id.as_ref().map(|h| h.0.as_str()) == Some(hs[1].as_str()))
            .collect();
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].name.as_deref(), Some("Only In HubSpot"));
        assert_eq!(created[0].domain.as_deref(), Some("new.io"));
        let reason = &job.errors[0].reason;
        assert!(reason.contains(&ids[1].to_string()) && reason.contains(&ids[2].to_string()), "{reason}");

    }

    async fn an_incremental_pull_reads_what_changed_and_a_second_pull_changes_nothing(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.in_hubspot(&[("First", "first.io")]);
        let (job, counts) = env.pull(true).await;
        assert_eq!(counts.created, 1, "no bookmark yet: a full pull");
        assert_eq!(job.progress.total, Some(1), "the bar knew the total");

        tokio::time::sleep(Duration::from_millis(20)).await;
        env.in_hubspot(&[("Second", "second.io")]);
        let (_, counts) = env.pull(true).await;
        assert_eq!((counts.total, counts.created), (1, 1), "only what changed since the last pull");
        assert_eq!(env.companies().await.len(), 2);

        let (_, counts) = env.pull(false).await;
        assert_eq!((counts.total, counts.unchanged, counts.created), (2, 2, 0));
    }

    async fn pull_finds_a_pushed_company_by_its_key_and_push_then_has_nothing_to_do(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let ids = env.insert(&[(Some("Keyed"), Some("keyed.io"))]).await;
        env.push(PushMode::Upsert).await;
        let hs = linked(&env.company(ids[0]).await);
        // The link is lost locally (a restore from backup, a hand edit).
        env.execute("UPDATE companies SET hs_object_id = $1 WHERE id = $2", "999999999", ids[0].0).await;

        let (_, counts) = env.pull(false).await;
        assert_eq!((counts.linked, counts.created), (1, 0), "re-linked by key, not duplicated");
        assert_eq!(linked(&env.company(ids[0]).await), hs);
        assert_eq!(env.companies().await.len(), 1);
        let (_, counts) = env.push(PushMode::Link).await;
        assert_eq!(counts.total, 0, "nothing changed locally since push created it");
    }

    async fn companies_hubspot_creates_on_its_own_are_pulled_and_linked_never_duplicated(db: TestDb, profile: HubSpotProfile) {
        // HubSpot's "create and associate companies with contacts": pushing contacts makes a
        // company per email domain that crm-sync never wrote.
        let args = SandboxArgs {
            auto_associate_companies: true,
            ..sandbox_args_in(profile)
        };
        let env = Env::with(db, args).await;
        env.store
            .insert_contacts(&[
                crm_sync::store::NewContact {
                    email: Some("ada@acme.io".to_owned()),
                    ..Default::default()
                },
                crm_sync::store::NewContact {
                    email: Some("bob@bolt.dev".to_owned()),
                    ..Default::default()
                },
            ])
            .await
            .unwrap();
        let ours = env.insert(&[(Some("Acme (ours)"), Some("acme.io"))]).await;
        let job = env.run(JobSpec::push()).await;
        assert_eq!(job.counts.total(), 2, "the contacts push: {job:#?}");
        assert_eq!(env.hubspot.companies().len(), 2, "HubSpot made acme.io and bolt.dev");

        // Push does not fight them: our acme.io links to HubSpot's own, no second company.
        let (_, counts) = env.push(PushMode::Link).await;
        assert_eq!((counts.total, counts.linked, counts.created), (1, 1, 0));
        assert_eq!(env.hubspot.companies().len(), 2);
        assert_eq!(
            env.company(ours[0]).await.name.as_deref(),
            Some("Acme (ours)"),
            "the local name stays"
        );

        // Pull accepts the one HubSpot made alone.
        let (_, counts) = env.pull(false).await;
        assert_eq!((counts.total, counts.unchanged, counts.created), (2, 1, 1));
        let local = env.companies().await;
        assert_eq!(local.len(), 2);
        assert!(local.iter().any(|c| c.domain.as_deref() == Some("bolt.dev") && c.hs_object_id.is_some()));
    }

    async fn a_push_stopped_after_a_page_resumes_from_its_checkpoint_and_creates_nothing_twice(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let rows: Vec<(Option<&str>, Option<&str>)> = vec![(Some("Many"), None); 150];
        env.insert(&rows).await;
        let id = env.enqueue(companies(JobAction::Push { mode: PushMode::Link })).await;
        // The worker is asked to stop once the first page of 100 is committed.
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop: StopCheck = {
            let asked = asked.clone();
            Arc::new(move || asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 1)
        };
        let settled = env.run_once(id, stop).await;
        assert!(matches!(settled, Settled::Requeued), "{settled}");
        assert_eq!(env.hubspot.companies().len(), 100, "one page went through");

        let job = env.run_to_end(id).await;
        let Counts::Push(counts) = job.counts else { panic!() };
        assert_eq!((counts.total, counts.created), (150, 150), "{job:#?}");
        assert_eq!(env.hubspot.companies().len(), 150, "none twice");
        assert!(env.companies().await.iter().all(|c| c.hs_object_id.is_some()));
    }

    async fn a_connection_without_company_scopes_fails_the_job_at_once_saying_to_connect_again(db: TestDb, profile: HubSpotProfile) {
        // Installed before companies were synced: contact scopes only.
        let env = Env::with_oauth(
            db,
            profile,
            &["crm.objects.contacts.read", "crm.objects.contacts.write", "crm.schemas.contacts.read", "crm.schemas.contacts.write"],
        )
        .await;
        env.insert(&[(Some("Scoped"), Some("scoped.io"))]).await;
        let (job, counts) = env.push(PushMode::Link).await;
        assert_eq!(job.status, crm_sync::jobs::model::JobStatus::Failed, "{job:#?}");
        assert_eq!(job.attempts, 1, "retrying cannot help");
        let error = job.error.unwrap_or_default();
        assert!(error.contains("connect again"), "{error}");
        assert_eq!(counts.total, 0);
        assert!(env.hubspot.companies().is_empty());
    }
}

// ---- pull modes ------------------------------------------------------------------------

backend_tests! {
    async fn a_verbose_pull_writes_what_an_upsert_pull_writes_and_counts_only_the_breakdown(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let ids = env.insert(&[(Some("Local Name"), Some("match.io"))]).await;
        let hs = env.in_hubspot(&[("HubSpot Name", "match.io"), ("Only In HubSpot", "new.io")]);

        let job = env
            .run(companies(JobAction::Pull {
                mode: PullMode::Verbose,
                incremental: false,
            }))
            .await;
        assert_eq!(job.status, crm_sync::jobs::model::JobStatus::Succeeded, "{job:#?}");
        let Counts::Pull(counts) = job.counts else {
            panic!("pull counts: {job:#?}")
        };
        assert!(counts.is_consistent(), "{counts:?}");
        assert_eq!(
            (counts.total, counts.linked, counts.created, counts.upserted),
            (2, 1, 1, 0),
            "the breakdown says it all: {counts:?}"
        );
        assert_eq!(linked(&env.company(ids[0]).await).0, hs[0]);
        let hs_ids: Vec<Option<String>> =
            env.companies().await.into_iter().map(|c| c.hs_object_id.map(|h| h.0)).collect();
        assert!(hs_ids.contains(&Some(hs[1].clone())), "{hs_ids:?}");
        assert_eq!(hs_ids.len(), 2, "one row per company: {hs_ids:?}");

        // The same pull again in the default mode finds nothing to do.
        let (_, again) = env.pull(false).await;
        assert_eq!((again.unchanged, again.upserted), (2, 0), "{again:?}");
    }
}
