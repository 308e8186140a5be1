//! Contact→company associations end to end: `contacts.company_id` in a real database (SQLite
//! and PostgreSQL) pushed to and pulled from the in-process HubSpot sandbox over real HTTP,
//! through contact push and pull jobs run by the real queue.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::TestDb;
use common::watch::{association_calls_of, calls_between, sync_calls};
use common::world::unlimited_sandbox;
use crm_sync::hubspot::{
    Auth, Backoff, ClientConfig, ContactCompanyLink, HubSpotClient, Operation,
};
use crm_sync::ids::{CompanyId, ContactId, HsObjectId, JobId, LocalCompanyId};
use crm_sync::jobs::model::{
    Counts, Job, JobAction, JobSpec, PullCounts, PullMode, PushCounts, PushMode, Trigger,
};
use crm_sync::jobs::queue::SyncTask;
use crm_sync::jobs::worker::{Settled, process};
use crm_sync::jobs::{EnqueueRequest, JobRunner, RetryPolicy, enqueue};
use crm_sync::sandbox::{HubSpotProfile, Sandbox, SandboxHandle};
use crm_sync::secret::Secret;
use crm_sync::store::{NewCompany, NewContact, Store};
use crm_sync::sync::{PullSettings, SyncContext, SyncRunner};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A database, a sandbox without limits answering as a profile says HubSpot does, and the
/// service's runner talking to it.
struct Env {
    store: Store,
    hubspot: Arc<SandboxHandle>,
    runner: Arc<SyncRunner>,
    _db: TestDb,
}

impl Env {
    async fn new(db: TestDb, profile: HubSpotProfile) -> Env {
        let hubspot = Sandbox::start(
            unlimited_sandbox(profile, 7),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("sandbox starts");
        let mut config = ClientConfig::new(hubspot.base_url().parse().expect("sandbox URL"));
        config.requests_per_10s = 0;
        config.search_per_second = 0;
        config.backoff = Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(50),
        };
        let auth = Auth::PrivateApp(Secret::new(hubspot.access_token()));
        let client = HubSpotClient::new(config, auth).expect("client");
        Env {
            store: db.store().await,
            hubspot: Arc::new(hubspot),
            runner: Arc::new(SyncRunner::new(SyncContext {
                pull: PullSettings {
                    lookback: Duration::ZERO,
                },
                ..SyncContext::new(client)
            })),
            _db: db,
        }
    }

    /// Seed-like data: companies, and contacts linked to them by their email's domain.
    async fn seed(&self) -> (Vec<LocalCompanyId>, Vec<ContactId>) {
        let companies = self
            .store
            .insert_companies(&[
                NewCompany {
                    name: Some("Acme".into()),
                    domain: Some("acme.io".into()),
                },
                NewCompany {
                    name: Some("Bolt".into()),
                    domain: Some("bolt.dev".into()),
                },
            ])
            .await
            .unwrap();
        let emails = ["ann@acme.io", "bob@acme.io", "cy@bolt.dev", "di@gmail.com"];
        let contacts: Vec<NewContact> = emails
            .iter()
            .map(|e| NewContact {
                email: Some((*e).to_owned()),
                ..NewContact::default()
            })
            .collect();
        self.store.insert_contacts(&contacts).await.unwrap();
        self.store
            .link_contacts_to_companies_by_email_domain()
            .await
            .unwrap();
        let ids = self
            .store
            .list_contacts(None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        (companies, ids)
    }

    async fn push(&self) -> (Job, PushCounts) {
        self.push_stopping(Arc::new(|| false)).await
    }

    async fn push_stopping(&self, stop: Arc<dyn Fn() -> bool + Send + Sync>) -> (Job, PushCounts) {
        let job = self
            .run(
                JobAction::Push {
                    mode: PushMode::Link,
                },
                stop,
            )
            .await;
        let Counts::Push(counts) = job.counts else {
            panic!("push counts: {job:#?}")
        };
        (job, counts)
    }

    async fn pull(&self) -> (Job, PullCounts) {
        let action = JobAction::Pull {
            mode: PullMode::Upsert,
            incremental: false,
        };
        let job = self.run(action, Arc::new(|| false)).await;
        let Counts::Pull(counts) = job.counts else {
            panic!("pull counts: {job:#?}")
        };
        (job, counts)
    }

    /// Enqueues a contacts job and runs it to its end as the worker would (an interrupted or
    /// retried run is resumed from its checkpoint by the next).
    async fn run(&self, action: JobAction, stop: Arc<dyn Fn() -> bool + Send + Sync>) -> Job {
        self.run_spec(JobSpec::from(action), stop).await
    }

    /// A dry-run push in `link` mode.
    async fn push_dry(&self) -> Job {
        let spec = JobSpec::from(JobAction::Push {
            mode: PushMode::Link,
        })
        .with_dry_run(true)
        .expect("contacts have dry runs");
        self.run_spec(spec, Arc::new(|| false)).await
    }

    async fn run_spec(&self, spec: JobSpec, stop: Arc<dyn Fn() -> bool + Send + Sync>) -> Job {
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
        let id = enqueued.job.id;
        for _ in 0..30 {
            match self.run_once(id, stop.clone()).await {
                Settled::Finished(_) => break,
                _ => continue,
            }
        }
        let job = self.store.get_job(id).await.unwrap().unwrap();
        assert!(job.status.is_terminal(), "the job ended: {job:#?}");
        assert!(job.counts.is_consistent(), "{job:#?}");
        job
    }

    async fn run_once(&self, id: JobId, stop: Arc<dyn Fn() -> bool + Send + Sync>) -> Settled {
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

    async fn hs_contact(&self, id: ContactId) -> String {
        let contact = self.store.get_contact(id).await.unwrap().unwrap();
        contact.hs_object_id.expect("the contact is linked").0
    }

    async fn hs_company(&self, id: LocalCompanyId) -> String {
        let company = self.store.get_company(id).await.unwrap().unwrap();
        company.hs_object_id.expect("the company is linked").0
    }

    /// `(company, primary)` of a contact in HubSpot.
    async fn hubspot_companies(&self, contact: ContactId) -> Vec<(String, bool)> {
        self.hubspot
            .companies_of_contact(&self.hs_contact(contact).await)
            .into_iter()
            .map(|a| (a.id, a.primary))
            .collect()
    }

    async fn set_company(&self, contact: ContactId, company: Option<LocalCompanyId>) {
        const SQL: &str = "UPDATE contacts SET company_id = $1 WHERE id = $2";
        let company = company.map(|c| c.0);
        if let Some(pool) = self.store.pg_pool() {
            sqlx::query(SQL)
                .bind(company)
                .bind(contact.0)
                .execute(pool)
                .await
                .map(drop)
        } else {
            let pool = self.store.sqlite_pool().expect("a pool");
            sqlx::query(SQL)
                .bind(company)
                .bind(contact.0)
                .execute(pool)
                .await
                .map(drop)
        }
        .expect("update");
    }

    /// `n` companies made in HubSpot (names and domains numbered from `first`).
    fn hubspot_companies_made(&self, first: usize, n: usize) -> Vec<String> {
        self.hubspot.insert_companies(
            (first..first + n)
                .map(|i| {
                    BTreeMap::from([
                        ("name".to_owned(), format!("Company {i}")),
                        ("domain".to_owned(), format!("company{i}.example")),
                    ])
                })
                .collect(),
        )
    }

    /// Associates HubSpot contacts with HubSpot companies, 100 pairs a call.
    async fn associate_in_hubspot(&self, pairs: &[(String, String, bool)]) {
        let links: Vec<ContactCompanyLink> = pairs
            .iter()
            .map(|(contact, company, primary)| ContactCompanyLink {
                contact: HsObjectId(contact.clone()),
                company: CompanyId(company.clone()),
                primary: *primary,
            })
            .collect();
        for chunk in links.chunks(100) {
            let batch = crm_sync::hubspot::Batch::new(chunk.to_vec()).unwrap();
            self.runner
                .context()
                .hubspot
                .link_contacts_to_companies(&batch)
                .await
                .unwrap();
        }
    }

    /// Runs `spec` as a dry run, then for real with nothing changed in between: the counts
    /// agree, and the calls the plan counts, all of them, are the ones HubSpot then answers.
    /// Returns the real job and the association calls among them (reads, creates, archives).
    async fn dry_then_real_calls(&self, spec: JobSpec) -> (Job, [u64; 3]) {
        let (real, made) = self.dry_then_real_made(spec).await;
        (real, association_calls_of(&made))
    }

    /// [`Env::dry_then_real_calls`], returning every call of the real run by operation.
    async fn dry_then_real_made(&self, spec: JobSpec) -> (Job, BTreeMap<String, u64>) {
        let dry = self
            .run_spec(
                spec.with_dry_run(true).expect("contacts have dry runs"),
                Arc::new(|| false),
            )
            .await;
        let before = sync_calls(&self.hubspot);
        let real = self.run_spec(spec, Arc::new(|| false)).await;
        let made = calls_between(&before, &sync_calls(&self.hubspot));
        assert_eq!(dry.counts, real.counts, "{dry:#?}");
        let plan = dry.plan.as_ref().expect("a dry run has a plan");
        assert_eq!(plan.calls, made, "the plan's calls are the real run's");
        (real, made)
    }

    fn association_writes(&self) -> u64 {
        let metrics = self.runner.context().hubspot.metrics();
        [
            Operation::CreateAssociations,
            Operation::ArchiveAssociations,
        ]
        .into_iter()
        .flat_map(|op| ["2xx", "4xx", "5xx"].map(|class| metrics.requests(op, class)))
        .sum()
    }
}

fn assoc(created: u64, removed: u64, failed: u64) -> (u64, u64, u64) {
    (created, removed, failed)
}

fn of_push(c: &PushCounts) -> (u64, u64, u64) {
    (
        c.associations_created,
        c.associations_removed,
        c.associations_failed,
    )
}

fn of_pull(c: &PullCounts) -> (u64, u64, u64) {
    (
        c.associations_created,
        c.associations_removed,
        c.associations_failed,
    )
}

backend_tests! {
    async fn a_push_links_companies_then_contacts_then_writes_each_primary_company(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let (companies, contacts) = env.seed().await;

        let (job, counts) = env.push().await;
        assert_eq!((counts.total, counts.created), (4, 4), "{job:#?}");
        assert_eq!(of_push(&counts), assoc(3, 0, 0), "{job:#?}");
        let acme = env.hs_company(companies[0]).await;
        let bolt = env.hs_company(companies[1]).await;
        assert_eq!(env.hubspot_companies(contacts[0]).await, vec![(acme.clone(), true)]);
        assert_eq!(env.hubspot_companies(contacts[1]).await, vec![(acme.clone(), true)]);
        assert_eq!(env.hubspot_companies(contacts[2]).await, vec![(bolt.clone(), true)]);
        assert!(env.hubspot_companies(contacts[3]).await.is_empty(), "no company, no association");
        assert_eq!(env.hubspot.companies().len(), 2, "each company made once");

        let writes = env.association_writes();
        let (_, counts) = env.push().await;
        assert_eq!((counts.total, of_push(&counts)), (0, assoc(0, 0, 0)));
        assert_eq!(env.association_writes(), writes, "a re-run with nothing changed writes nothing");
    }

    async fn a_dry_run_plans_the_companies_and_associations_the_push_then_writes(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let (companies, contacts) = env.seed().await;
        let dry = env.push_dry().await;
        assert_eq!(env.hubspot.companies().len() + env.hubspot.contact_count(), 0, "a dry run writes nothing");
        assert!(env.store.list_contacts(None, 100).await.unwrap().iter().all(|c| c.hs_object_id.is_none()));
        let (real, counts) = env.push().await;
        assert_eq!(dry.counts, real.counts, "{dry:#?}");
        assert_eq!(of_push(&counts), assoc(3, 0, 0));

        // A changed company and a cleared one: planned the same way.
        env.set_company(contacts[0], Some(companies[1])).await;
        env.set_company(contacts[1], None).await;
        let dry = env.push_dry().await;
        let (real, counts) = env.push().await;
        assert_eq!(dry.counts, real.counts, "{dry:#?}");
        assert_eq!(of_push(&counts), assoc(1, 2, 0));
    }

    async fn a_dry_pull_counts_the_companies_of_the_contacts_it_would_link_by_email(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let (companies, contacts) = env.seed().await;
        // Nothing pushed: HubSpot has Ann (by email) with a primary company of its own.
        let ann = env.hubspot.insert_contacts(vec![BTreeMap::from([
            ("email".to_owned(), "ann@acme.io".to_owned()),
        ])]);
        let made = env.hubspot.insert_companies(vec![BTreeMap::from([
            ("name".to_owned(), "Acme (HubSpot)".to_owned()),
            ("domain".to_owned(), "acme-hq.example".to_owned()),
        ])]);
        let client = &env.runner.context().hubspot;
        let link = ContactCompanyLink {
            contact: HsObjectId(ann[0].clone()),
            company: CompanyId(made[0].clone()),
            primary: true,
        };
        client.link_contacts_to_companies(&crm_sync::hubspot::Batch::new(vec![link]).unwrap()).await.unwrap();
        env.set_company(contacts[0], None).await;
        let spec = JobSpec::from(JobAction::Pull { mode: PullMode::Upsert, incremental: false })
            .with_dry_run(true)
            .expect("contacts have dry runs");
        let dry = env.run_spec(spec, Arc::new(|| false)).await;
        assert!(env.store.list_contacts(None, 100).await.unwrap().iter().all(|c| c.hs_object_id.is_none()), "nothing linked");
        let (real, counts) = env.pull().await;
        assert_eq!(dry.counts, real.counts, "{dry:#?}");
        assert_eq!(counts.linked, 1, "{real:#?}");
        assert_eq!(of_pull(&counts), assoc(1, 0, 0), "{real:#?}");
        let ann_company = env.store.company_of_contact(contacts[0]).await.unwrap().expect("a company");
        assert_eq!(env.hs_company(ann_company).await, made[0], "Ann takes HubSpot's primary");
        assert_ne!(ann_company, companies[0]);
        let (_, again) = env.pull().await;
        assert_eq!(of_pull(&again), assoc(0, 0, 0), "a second pull changes nothing");
    }

    async fn a_changed_company_moves_the_primary_and_a_cleared_one_removes_the_pair(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let (companies, contacts) = env.seed().await;
        env.push().await;
        let acme = env.hs_company(companies[0]).await;
        let bolt = env.hs_company(companies[1]).await;

        env.set_company(contacts[0], Some(companies[1])).await;
        let (job, counts) = env.push().await;
        assert_eq!(of_push(&counts), assoc(1, 1, 0), "{job:#?}");
        assert_eq!(env.hubspot_companies(contacts[0]).await, vec![(bolt.clone(), true)], "old pair removed, new one primary");

        env.set_company(contacts[1], None).await;
        let (job, counts) = env.push().await;
        assert_eq!(of_push(&counts), assoc(0, 1, 0), "{job:#?}");
        assert!(env.hubspot_companies(contacts[1]).await.is_empty());
        assert_eq!(env.hubspot.contacts_of_company(&acme).len(), 0);
    }

    async fn a_contact_whose_company_cannot_be_linked_is_an_association_failure(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        env.hubspot.insert_companies(vec![
            BTreeMap::from([("name".to_owned(), "Acme A".to_owned()), ("domain".to_owned(), "acme.io".to_owned())]),
            BTreeMap::from([("name".to_owned(), "Acme B".to_owned()), ("domain".to_owned(), "acme.io".to_owned())]),
        ]);
        let (_, contacts) = env.seed().await;

        let (job, counts) = env.push().await;
        assert_eq!(counts.created, 4, "the contacts are pushed all the same");
        assert_eq!(of_push(&counts), assoc(1, 0, 2), "{job:#?}");
        let failed: Vec<_> = job.errors.iter().filter_map(|e| e.contact_id).collect();
        assert_eq!(failed, vec![contacts[0], contacts[1]]);
        assert!(job.errors[0].reason.contains("acme.io"), "{:?}", job.errors[0]);
    }

    async fn a_push_stopped_after_companies_and_contacts_resumes_with_exact_counts(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let (companies, contacts) = env.seed().await;
        // Stop at the first page boundary after the contacts reached HubSpot: the companies
        // and contacts are pushed, no association page has committed.
        let hubspot = env.hubspot.clone();
        let stop = Arc::new(move || hubspot.contact_count() >= 4);
        let (first, _) = {
            let enqueued = enqueue(&env.store, EnqueueRequest {
                spec: JobSpec::from(JobAction::Push { mode: PushMode::Link }),
                trigger: Trigger::Cli,
                force: false,
            }).await.unwrap();
            let settled = env.run_once(enqueued.job.id, stop).await;
            (enqueued.job.id, settled)
        };
        let stopped = env.store.get_job(first).await.unwrap().unwrap();
        assert!(!stopped.status.is_terminal(), "{stopped:#?}");
        assert_eq!(env.hubspot.companies().len(), 2);
        // A write the stopped run made whose commit was lost (as a kill -9 would lose it).
        let acme = env.hs_company(companies[0]).await;
        env.runner.context().hubspot.link_contacts_to_companies(
            &crm_sync::hubspot::Batch::new(vec![ContactCompanyLink {
                contact: HsObjectId(env.hs_contact(contacts[0]).await),
                company: CompanyId(acme.clone()),
                primary: true,
            }]).unwrap(),
        ).await.unwrap();

        for _ in 0..10 {
            if let Settled::Finished(_) = env.run_once(first, Arc::new(|| false)).await {
                break;
            }
        }
        let job = env.store.get_job(first).await.unwrap().unwrap();
        let Counts::Push(counts) = job.counts else { panic!("push counts") };
        assert_eq!((counts.total, counts.created), (4, 4), "{job:#?}");
        assert_eq!(of_push(&counts), assoc(3, 0, 0), "{job:#?}");
        assert_eq!(env.hubspot.companies().len(), 2, "no company made twice");
        assert_eq!(env.hubspot.contact_count(), 4, "no contact made twice");
        assert_eq!(env.hubspot_companies(contacts[0]).await, vec![(acme, true)]);
    }

    async fn a_pull_sets_the_local_company_from_hubspots_primary_without_duplicates(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let (companies, contacts) = env.seed().await;
        env.push().await;
        let bolt = env.hs_company(companies[1]).await;
        // In HubSpot: di@gmail.com gets a company made there, Ann moves to Bolt.
        let made = env.hubspot.insert_companies(vec![BTreeMap::from([
            ("name".to_owned(), "Gmail fans".to_owned()),
            ("domain".to_owned(), "fans.example".to_owned()),
        ])]);
        let client = &env.runner.context().hubspot;
        let links = vec![
            ContactCompanyLink {
                contact: HsObjectId(env.hs_contact(contacts[3]).await),
                company: CompanyId(made[0].clone()),
                primary: true,
            },
            ContactCompanyLink {
                contact: HsObjectId(env.hs_contact(contacts[0]).await),
                company: CompanyId(bolt.clone()),
                primary: true,
            },
        ];
        client.link_contacts_to_companies(&crm_sync::hubspot::Batch::new(links).unwrap()).await.unwrap();

        // A dry pull counts what the pull then does, and writes nothing.
        let spec = JobSpec::from(JobAction::Pull { mode: PullMode::Upsert, incremental: false })
            .with_dry_run(true)
            .expect("contacts have dry runs");
        let dry = env.run_spec(spec, Arc::new(|| false)).await;
        assert_eq!(env.store.count_companies().await.unwrap(), 2, "a dry run adopts no company");
        assert_eq!(env.store.company_of_contact(contacts[0]).await.unwrap(), Some(companies[0]));
        let (job, counts) = env.pull().await;
        assert_eq!(dry.counts, job.counts, "{dry:#?}");
        assert_eq!(of_pull(&counts), assoc(2, 0, 0), "{job:#?}");
        let fans = env.store.company_of_contact(contacts[3]).await.unwrap().expect("a company");
        assert_eq!(env.hs_company(fans).await, made[0]);
        assert_eq!(env.store.company_of_contact(contacts[0]).await.unwrap(), Some(companies[1]));
        assert_eq!(env.store.count_companies().await.unwrap(), 3, "one new local company, no duplicate");

        let (_, counts) = env.pull().await;
        assert_eq!(of_pull(&counts), assoc(0, 0, 0), "a second pull changes nothing");
        let writes = env.association_writes();
        let (_, counts) = env.push().await;
        assert_eq!(of_push(&counts), assoc(0, 0, 0), "push does not fight what pull accepted");
        assert_eq!(env.association_writes(), writes);
    }

    async fn a_local_change_wins_over_hubspots_when_both_changed(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let (companies, contacts) = env.seed().await;
        env.push().await;
        let bolt = env.hs_company(companies[1]).await;
        env.runner.context().hubspot.link_contacts_to_companies(
            &crm_sync::hubspot::Batch::new(vec![ContactCompanyLink {
                contact: HsObjectId(env.hs_contact(contacts[1]).await),
                company: CompanyId(bolt),
                primary: true,
            }]).unwrap(),
        ).await.unwrap();
        env.set_company(contacts[1], None).await;

        let (_, counts) = env.pull().await;
        assert_eq!(of_pull(&counts), assoc(0, 0, 0));
        assert_eq!(env.store.company_of_contact(contacts[1]).await.unwrap(), None, "the local change stays");
    }
    async fn a_dry_full_pull_plans_the_association_reads_of_the_real_pulls_phase(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        // 1,001 contacts only in HubSpot, each with a primary company: the real pull reads their
        // companies after its 11 pages, 1,000 contacts a call. The first also has 500 more
        // companies than the sandbox's read page (500) holds: its read goes on once.
        let companies = env.hubspot_companies_made(0, 503);
        let contacts = env.hubspot.insert_contacts(
            (0..1001)
                .map(|i| BTreeMap::from([("email".to_owned(), format!("person{i}@acme.io"))]))
                .collect(),
        );
        let mut pairs: Vec<(String, String, bool)> = contacts
            .iter()
            .enumerate()
            .map(|(i, contact)| (contact.clone(), companies[i % 3].clone(), true))
            .collect();
        pairs.extend(companies[3..].iter().map(|company| (contacts[0].clone(), company.clone(), false)));
        env.associate_in_hubspot(&pairs).await;

        let spec = JobSpec::from(JobAction::Pull { mode: PullMode::Upsert, incremental: false });
        let (real, made) = env.dry_then_real_calls(spec).await;
        assert_eq!(made, [3, 0, 0], "two reads for the first 1,000 contacts, one for the last");
        let Counts::Pull(counts) = real.counts else { panic!("pull counts") };
        assert_eq!((counts.created, of_pull(&counts)), (1001, assoc(1001, 0, 0)), "{real:#?}");
    }

    async fn a_dry_pull_plans_the_company_reads_the_real_pull_makes_to_adopt_companies(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        // 250 contacts only in HubSpot, each with a primary company no local company holds,
        // 150 companies in all: the real full pull adopts them after its three pages, reading
        // the 150 in two calls of 100 (a read with each page would make three).
        let companies = env.hubspot_companies_made(0, 150);
        let contacts = env.hubspot.insert_contacts(
            (0..250)
                .map(|i| BTreeMap::from([("email".to_owned(), format!("person{i}@acme.io"))]))
                .collect(),
        );
        let pairs: Vec<(String, String, bool)> = contacts
            .iter()
            .enumerate()
            .map(|(i, contact)| (contact.clone(), companies[i % 150].clone(), true))
            .collect();
        env.associate_in_hubspot(&pairs).await;
        let full = JobSpec::from(JobAction::Pull { mode: PullMode::Upsert, incremental: false });
        let (real, made) = env.dry_then_real_made(full).await;
        assert_eq!(made.get("batch_read"), Some(&2), "{made:?}");
        let Counts::Pull(counts) = real.counts else { panic!("pull counts") };
        assert_eq!(of_pull(&counts), assoc(250, 0, 0), "{real:#?}");

        // An incremental pull reads the companies with each page: two new contacts whose
        // primary companies are new too, adopted in one read.
        let more = env.hubspot_companies_made(150, 2);
        let new = env.hubspot.insert_contacts(
            (0..2)
                .map(|i| BTreeMap::from([("email".to_owned(), format!("late{i}@acme.io"))]))
                .collect(),
        );
        let pairs: Vec<(String, String, bool)> =
            new.into_iter().zip(more).map(|(contact, company)| (contact, company, true)).collect();
        env.associate_in_hubspot(&pairs).await;
        let incremental = JobSpec::from(JobAction::Pull { mode: PullMode::Upsert, incremental: true });
        let (real, made) = env.dry_then_real_made(incremental).await;
        assert_eq!(made.get("batch_read"), Some(&1), "{made:?}");
        let Counts::Pull(counts) = real.counts else { panic!("pull counts") };
        assert_eq!(of_pull(&counts), assoc(2, 0, 0), "{real:#?}");

        // 250 more, all with one new company, come in two search pages: the real run adopts
        // the company on the first and holds it on the second; the dry run, whose first page
        // is rolled back, reads it twice but plans one read.
        let shared = env.hubspot_companies_made(152, 1).remove(0);
        let many = env.hubspot.insert_contacts(
            (0..250)
                .map(|i| BTreeMap::from([("email".to_owned(), format!("crowd{i}@acme.io"))]))
                .collect(),
        );
        let pairs: Vec<(String, String, bool)> =
            many.into_iter().map(|contact| (contact, shared.clone(), true)).collect();
        env.associate_in_hubspot(&pairs).await;
        let (real, made) = env.dry_then_real_made(incremental).await;
        assert_eq!(made.get("batch_read"), Some(&1), "{made:?}");
        let Counts::Pull(counts) = real.counts else { panic!("pull counts") };
        assert_eq!(of_pull(&counts), assoc(250, 0, 0), "{real:#?}");
    }

    async fn a_dry_push_plans_the_association_calls_of_the_real_runs_pages(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile).await;
        let (companies, contacts) = env.seed().await;
        env.push().await;
        // Ann (linked) moves to Bolt, and a new contact with Acme is to be created: the real
        // run links the new one first, then writes both associations in one page. Ann also has
        // more companies in HubSpot than a read page holds: her read goes on once.
        env.set_company(contacts[0], Some(companies[1])).await;
        env.store
            .insert_contacts(&[NewContact { email: Some("eve@acme.io".to_owned()), ..NewContact::default() }])
            .await
            .unwrap();
        let eve = env.store.list_contacts(None, 100).await.unwrap().last().unwrap().id;
        assert!(eve > contacts[0]);
        env.set_company(eve, Some(companies[0])).await;
        let ann = env.hs_contact(contacts[0]).await;
        let more: Vec<(String, String, bool)> = env
            .hubspot_companies_made(100, 500)
            .into_iter()
            .map(|company| (ann.clone(), company, false))
            .collect();
        env.associate_in_hubspot(&more).await;

        let spec = JobSpec::from(JobAction::Push { mode: PushMode::Link });
        let (real, made) = env.dry_then_real_calls(spec).await;
        assert_eq!(made, [2, 1, 1], "one page: Ann's read goes on, one create, one archive");
        let Counts::Push(counts) = real.counts else { panic!("push counts") };
        assert_eq!(of_push(&counts), assoc(2, 1, 0), "{real:#?}");
        assert_eq!(env.hubspot_companies(eve).await, vec![(env.hs_company(companies[0]).await, true)]);
    }
}
