//! Changes made in HubSpot by someone else reach the local database without a full pull:
//! contact→company associations through an incremental pull and through association webhooks,
//! companies through company webhooks and a targeted read; the echoes of crm-sync's own writes
//! cause no read. Real SQLite and PostgreSQL, the service's webhook route and job workers over
//! real HTTP, the sandbox sending signed webhooks, under both of HubSpot's answer profiles; and
//! the pending list keeping contacts, companies and association reads apart.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;
mod routes_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use crm_sync::ids::{ContactId, JobId, LocalCompanyId};
use crm_sync::jobs::model::{Counts, Job, JobAction, PullCounts, PullMode, PushMode};
use crm_sync::jobs::worker::{WorkerConfig, run_workers};
use crm_sync::jobs::{EnqueueRequest, JobSpec, Trigger, enqueue};
use crm_sync::sandbox::{HubSpotProfile, SandboxArgs, SandboxHandle, USER_HEADER};
use crm_sync::store::{NewCompany, NewContact, PendingObject, Store, Tx};
use crm_sync::sync::{PullSettings, SyncContext, SyncRunner};
use crm_sync::webhooks::{count_pending_pulls, record_pending};
use routes_support::{Options, Server, all_jobs_ended, bind, sandbox_args, start_sandbox};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The person whose changes in HubSpot's UI the tests make (`CRM_UI`, not this app).
const PERSON: &str = "42";

/// How long a change may take to arrive (generous: this is not a speed test).
const PATIENCE: Duration = Duration::from_secs(60);

/// Whether the sandbox sends webhooks to the service.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Webhooks {
    On,
    Off,
}

/// A database, a sandbox playing `profile`, the service's API (webhook route included) and
/// its job workers, with a pull lookback of zero so that an incremental pull reads only what
/// changed.
struct World {
    sandbox: SandboxHandle,
    server: Server,
    stop: Option<oneshot::Sender<()>>,
    workers: Option<JoinHandle<Result<(), crm_sync::jobs::worker::WorkerRuntimeError>>>,
    _db: TestDb,
}

impl World {
    async fn new(db: TestDb, profile: HubSpotProfile, webhooks: Webhooks) -> World {
        let listener = bind().await;
        let addr = listener.local_addr().unwrap();
        let args = SandboxArgs {
            webhook_url: (webhooks == Webhooks::On)
                .then(|| format!("http://{addr}/webhooks/hubspot")),
            associations_per_10s: 0,
            ..sandbox_args()
        }
        .with_profile(profile);
        let sandbox = start_sandbox(args).await;
        let options = Options {
            private_app: true,
            ..Options::default()
        };
        let server = Server::start(listener, db.store().await, &sandbox, options).await;
        let runner = Arc::new(SyncRunner::new(SyncContext {
            pull: PullSettings {
                lookback: Duration::ZERO,
            },
            ..SyncContext::new(server.client.clone())
        }));
        let (stop, stop_rx) = oneshot::channel::<()>();
        let config = WorkerConfig {
            role: "test".to_owned(),
            sqlite_poll_interval: Duration::from_millis(50),
            postgres_poll_interval: Duration::from_millis(200),
            ..WorkerConfig::default()
        };
        let workers = tokio::spawn(run_workers(
            server.store.clone(),
            runner,
            vec![],
            config,
            async move {
                let _ = stop_rx.await;
            },
        ));
        World {
            sandbox,
            server,
            stop: Some(stop),
            workers: Some(workers),
            _db: db,
        }
    }

    fn store(&self) -> &Store {
        &self.server.store
    }

    /// Acme and Bolt; Ann and Bob at Acme, Cy at Bolt, Di with none (linked by email domain).
    async fn seed(&self) -> ([LocalCompanyId; 2], [ContactId; 4]) {
        let companies = self
            .store()
            .insert_companies(&[company("Acme", "acme.io"), company("Bolt", "bolt.dev")])
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
        self.store().insert_contacts(&contacts).await.unwrap();
        self.store()
            .link_contacts_to_companies_by_email_domain()
            .await
            .unwrap();
        let ids: Vec<ContactId> = self
            .store()
            .list_contacts(None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        (
            companies.try_into().unwrap(),
            ids.try_into().expect("four contacts"),
        )
    }

    /// Runs a contacts job through the queue and the workers to its end.
    async fn run(&self, action: JobAction) -> Job {
        let enqueued = enqueue(
            self.store(),
            EnqueueRequest {
                spec: JobSpec::from(action),
                trigger: Trigger::Cli,
                force: false,
            },
        )
        .await
        .expect("enqueue");
        self.until_ended(enqueued.job.id).await
    }

    async fn until_ended(&self, id: JobId) -> Job {
        let started = Instant::now();
        loop {
            let job = self.store().get_job(id).await.unwrap().unwrap();
            if job.status.is_terminal() {
                assert!(job.counts.is_consistent(), "{job:#?}");
                return job;
            }
            assert!(started.elapsed() < PATIENCE, "the job ends: {job:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn push(&self) -> Job {
        self.run(JobAction::Push {
            mode: PushMode::Link,
        })
        .await
    }

    async fn pull(&self, incremental: bool) -> (Job, PullCounts) {
        let job = self
            .run(JobAction::Pull {
                mode: PullMode::Upsert,
                incremental,
            })
            .await;
        let Counts::Pull(counts) = job.counts else {
            panic!("pull counts: {job:#?}")
        };
        (job, counts)
    }

    async fn hs_contact(&self, id: ContactId) -> String {
        let contact = self.store().get_contact(id).await.unwrap().unwrap();
        contact.hs_object_id.expect("the contact is linked").0
    }

    async fn hs_company(&self, id: LocalCompanyId) -> String {
        let company = self.store().get_company(id).await.unwrap().unwrap();
        company.hs_object_id.expect("the company is linked").0
    }

    async fn company_of(&self, contact: ContactId) -> Option<LocalCompanyId> {
        self.store().company_of_contact(contact).await.unwrap()
    }

    /// A request to the sandbox's API as a person in HubSpot's UI.
    async fn as_person(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.request(Some(PERSON), method, path, body).await
    }

    /// A request to the sandbox's API as `person`, or as this app (its own write) for `None`.
    async fn request(
        &self,
        person: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.sandbox.base_url()))
            .bearer_auth(self.sandbox.access_token());
        if let Some(person) = person {
            request = request.header(USER_HEADER, person);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request.send().await.unwrap();
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
        answer.json().await.unwrap_or(Value::Null)
    }

    /// A person makes `company` the contact's primary company.
    async fn person_associates(&self, contact: &str, company: &str) {
        let types = json!([
            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279},
            {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1},
        ]);
        self.as_person(
            reqwest::Method::PUT,
            &format!("/crm/v4/objects/contacts/{contact}/associations/companies/{company}"),
            Some(types),
        )
        .await;
    }

    /// A person removes the pair.
    async fn person_dissociates(&self, contact: &str, company: &str) {
        self.as_person(
            reqwest::Method::DELETE,
            &format!("/crm/v4/objects/contacts/{contact}/associations/companies/{company}"),
            None,
        )
        .await;
    }

    /// A person edits the contact (HubSpot moves its modification time).
    async fn person_renames_contact(&self, contact: &str, first_name: &str) {
        self.as_person(
            reqwest::Method::PATCH,
            &format!("/crm/v3/objects/contacts/{contact}"),
            Some(json!({"properties": {"firstname": first_name}})),
        )
        .await;
    }

    /// A person creates a company in HubSpot; its id.
    async fn person_creates_company(&self, name: &str, domain: &str) -> String {
        let made = self
            .as_person(
                reqwest::Method::POST,
                "/crm/v3/objects/companies",
                Some(json!({"properties": {"name": name, "domain": domain}})),
            )
            .await;
        made["id"].as_str().unwrap().to_owned()
    }

    /// How many calls of `operation` the sandbox served.
    fn calls(&self, operation: &str) -> u64 {
        self.sandbox
            .stats()
            .by_operation
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until the sandbox has delivered every webhook it queued and the jobs those
    /// deliveries queued have ended.
    async fn settle(&self) -> Vec<Job> {
        let started = Instant::now();
        let mut last = self.sandbox.stats().webhook_events_delivered;
        let mut quiet = 0;
        while quiet < 5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.sandbox.stats().webhook_events_delivered;
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
            assert!(started.elapsed() < PATIENCE, "webhooks settle");
        }
        all_jobs_ended(self.store()).await
    }

    /// Waits until `done` holds.
    async fn until<F, Fut>(&self, what: &str, done: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !done().await {
            assert!(started.elapsed() < PATIENCE, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(workers) = self.workers.take() {
            workers.await.unwrap().unwrap();
        }
    }
}

fn company(name: &str, domain: &str) -> NewCompany {
    NewCompany {
        name: Some(name.to_owned()),
        domain: Some(domain.to_owned()),
    }
}

fn of_pull(c: &PullCounts) -> (u64, u64, u64) {
    (
        c.associations_created,
        c.associations_removed,
        c.associations_failed,
    )
}

/// The pull counts of the webhook pulls among `jobs`, summed.
fn webhook_counts(jobs: &[Job]) -> PullCounts {
    let mut sum = PullCounts::default();
    for job in jobs.iter().filter(|j| j.trigger == Trigger::Webhook) {
        let Counts::Pull(c) = job.counts else {
            panic!("a webhook pull has pull counts: {job:#?}")
        };
        sum.total += c.total;
        sum.created += c.created;
        sum.linked += c.linked;
        sum.unchanged += c.unchanged;
        sum.failed += c.failed;
        sum.associations_created += c.associations_created;
        sum.associations_removed += c.associations_removed;
        sum.associations_failed += c.associations_failed;
    }
    sum
}

backend_tests! {
    async fn an_incremental_pull_brings_the_associations_of_the_contacts_it_reads(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, profile, Webhooks::Off).await;
        let ([acme, bolt], [ann, bob, cy, di]) = w.seed().await;
        w.push().await;
        w.pull(false).await; // leaves the bookmark
        let (hs_acme, hs_bolt) = (w.hs_company(acme).await, w.hs_company(bolt).await);
        let (hs_ann, hs_bob, hs_di) = (w.hs_contact(ann).await, w.hs_contact(bob).await, w.hs_contact(di).await);

        // A person in HubSpot moves Ann to Bolt, removes Bob's company and gives Di a company
        // made there; each contact is edited too, so that it is among the changed contacts.
        w.person_associates(&hs_ann, &hs_bolt).await;
        w.person_dissociates(&hs_ann, &hs_acme).await;
        w.person_dissociates(&hs_bob, &hs_acme).await;
        let cargo = w.person_creates_company("Cargo", "cargo.example").await;
        w.person_associates(&hs_di, &cargo).await;
        for (contact, name) in [(&hs_ann, "Ann"), (&hs_bob, "Bob"), (&hs_di, "Di")] {
            w.person_renames_contact(contact, name).await;
        }
        w.sandbox.flush_search_index();

        let reads = w.calls("associations.batch_read");
        let (job, counts) = w.pull(true).await;
        assert_eq!(of_pull(&counts), (2, 1, 0), "{job:#?}");
        assert_eq!(w.calls("associations.batch_read"), reads + 1, "one association read for the page of changed contacts");
        assert_eq!(w.company_of(ann).await, Some(bolt), "moved in HubSpot, unchanged locally");
        assert_eq!(w.company_of(bob).await, None, "removed in HubSpot");
        assert_eq!(w.company_of(cy).await, Some(bolt), "not changed, not touched");
        let adopted = w.company_of(di).await.expect("Di's new company");
        assert_eq!(w.hs_company(adopted).await, cargo);
        assert_eq!(w.store().count_companies().await.unwrap(), 3, "HubSpot's company adopted once");

        let (job, counts) = w.pull(true).await;
        assert_eq!(of_pull(&counts), (0, 0, 0), "nothing changed since: {job:#?}");
        assert_eq!(w.store().count_companies().await.unwrap(), 3);
        w.stop().await;
    }

    async fn an_association_changed_in_hubspot_reaches_the_local_company_through_a_webhook(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, profile, Webhooks::On).await;
        let ([acme, bolt], [ann, bob, cy, _di]) = w.seed().await;
        let push = w.push().await;
        let Counts::Push(pushed) = push.counts else { panic!("push counts") };
        assert_eq!(pushed.associations_created, 3, "{push:#?}");
        let jobs = w.settle().await;
        assert!(
            jobs.iter().all(|j| j.trigger != Trigger::Webhook),
            "the echoes of the push's own contacts, companies and associations cause no read: {jobs:#?}"
        );
        let (hs_acme, hs_bolt) = (w.hs_company(acme).await, w.hs_company(bolt).await);
        let (hs_ann, hs_bob) = (w.hs_contact(ann).await, w.hs_contact(bob).await);

        // A person moves Ann to Bolt and removes Bob's company; neither contact is edited.
        w.person_associates(&hs_ann, &hs_bolt).await;
        w.person_dissociates(&hs_ann, &hs_acme).await;
        w.person_dissociates(&hs_bob, &hs_acme).await;
        w.until("the association changes arrive", || async {
            w.company_of(ann).await == Some(bolt) && w.company_of(bob).await.is_none()
        })
        .await;
        let jobs = w.settle().await;
        let counts = webhook_counts(&jobs);
        assert_eq!(of_pull(&counts), (1, 1, 0), "{jobs:#?}");
        assert_eq!(w.company_of(cy).await, Some(bolt), "not named, not touched");
        assert_eq!(w.calls("contacts.search") + w.calls("contacts.list"), 0, "read by id, never a scan");
        assert_eq!(count_pending_pulls(w.store()).await.unwrap(), 0, "nothing left pending");

        // The next push does not fight what the webhook accepted.
        let push = w.push().await;
        let Counts::Push(pushed) = push.counts else { panic!("push counts") };
        assert_eq!((pushed.associations_created, pushed.associations_removed), (0, 0), "{push:#?}");
        w.stop().await;
    }

    async fn a_company_created_in_hubspot_by_someone_else_arrives_through_a_webhook_without_a_duplicate(db: TestDb, profile: HubSpotProfile) {
        let w = World::new(db, profile, Webhooks::On).await;
        let local = w.store().insert_companies(&[company("Cargo", "cargo.example")]).await.unwrap()[0];

        // A person creates, in HubSpot, the company the product already has, and another one.
        let cargo = w.person_creates_company("Cargo Inc", "cargo.example").await;
        let delta = w.person_creates_company("Delta", "delta.example").await;
        w.until("both companies arrive", || async {
            let rows = w.store().list_companies(None, 10).await.unwrap();
            rows.iter().filter(|c| c.hs_object_id.is_some()).count() == 2
        })
        .await;
        let jobs = w.settle().await;
        assert_eq!(w.hs_company(local).await, cargo, "linked to the row with its domain, not duplicated");
        let rows = w.store().list_companies(None, 10).await.unwrap();
        assert_eq!(rows.len(), 2, "{rows:#?}");
        let made = rows.iter().find(|c| c.id != local).unwrap();
        assert_eq!(made.hs_object_id.as_ref().map(|h| h.0.as_str()), Some(delta.as_str()));
        assert_eq!(made.name.as_deref(), Some("Delta"));
        assert_eq!(rows.iter().find(|c| c.id == local).unwrap().name.as_deref(), Some("Cargo"), "a pull never changes a local company's own fields");
        let counts = webhook_counts(&jobs);
        assert_eq!((counts.total, counts.linked, counts.created, counts.failed), (2, 1, 1, 0), "{jobs:#?}");
        assert_eq!(w.calls("companies.list") + w.calls("companies.search"), 0, "read by id, never a scan");

        // Changes to companies linked here, and this app's own company writes, need no read.
        let reads = w.calls("companies.batch_read");
        w.as_person(
            reqwest::Method::PATCH,
            &format!("/crm/v3/objects/companies/{delta}"),
            Some(json!({"properties": {"name": "Delta Renamed"}})),
        )
        .await;
        w.request(
            None,
            reqwest::Method::POST,
            "/crm/v3/objects/companies",
            Some(json!({"properties": {"name": "Ours", "domain": "ours.example"}})),
        )
        .await;
        let jobs = w.settle().await;
        assert_eq!(w.calls("companies.batch_read"), reads, "no read: {jobs:#?}");
        assert_eq!(w.store().count_companies().await.unwrap(), 2);
        assert_eq!(count_pending_pulls(w.store()).await.unwrap(), 0);
        w.stop().await;
    }
}

// ---- the pending list alone (no HubSpot) ------------------------------------------------

backend_tests! {
    async fn one_id_pending_as_a_contact_a_company_and_a_contacts_associations_is_three_reads(db: TestDb) {
        let store = db.store().await;
        let id = [crm_sync::ids::HsObjectId::from("501")];
        for object in [PendingObject::Contact, PendingObject::Company, PendingObject::ContactAssociations] {
            record_pending(&store, object, &id).await.unwrap();
        }
        record_pending(&store, PendingObject::Company, &id).await.unwrap();
        assert_eq!(count_pending_pulls(&store).await.unwrap(), 3, "three reads, not one");
        for object in [PendingObject::Contact, PendingObject::ContactAssociations] {
            assert_eq!(store.count_pending(object).await.unwrap(), 1);
        }
        let companies = store.peek_pending(PendingObject::Company, 10).await.unwrap();
        assert_eq!((companies.len(), companies[0].requests), (1, 2), "named twice, read once");

        // Clearing the company read leaves the contact and its associations pending.
        let mut tx = Tx::begin(&store).await.unwrap();
        assert_eq!(tx.clear_read(PendingObject::Company, &companies).await.unwrap(), 1);
        tx.commit().await.unwrap();
        assert_eq!(store.count_pending(PendingObject::Company).await.unwrap(), 0);
        assert_eq!(store.count_pending(PendingObject::Contact).await.unwrap(), 1);
        assert_eq!(store.count_pending(PendingObject::ContactAssociations).await.unwrap(), 1);
        assert_eq!(
            store.peek_pending_pulls(10).await.unwrap().len(),
            1,
            "the contacts' own functions see contacts only"
        );
    }
}
