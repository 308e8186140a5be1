//! Durability of the real service: `crm-sync serve` killed with SIGKILL in the middle of a push
//! and started again finishes the job — no local contact lost, none in HubSpot twice — on
//! SQLite and PostgreSQL.
//!
//! Nothing is shortened for the test: the restarted process gets the job back through the same
//! orphan recovery production relies on (the dead worker misses its heartbeats, about 15–20 s),
//! so each backend takes about half a minute. It runs under every way HubSpot may answer
//! (`HubSpotProfile`): with conflicts reported per input, the creates a restarted run repeats
//! come back as 207 conflicts, and must end linked, not failed.

mod common;

use common::TestDb;
use common::process::{Running, crm_sync, free_port};
use common::pushed::{assert_one_hubspot_contact_per_row, linked_rows};
use crm_sync::sandbox::{HubSpotProfile, Sandbox, SandboxArgs, SandboxHandle};
use crm_sync::store::{NewContact, Store};
use crm_sync::sync::keys::ExternalKeys;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Local contacts to push: enough pages that a kill lands in the middle.
const CONTACTS: u64 = 3000;
/// Every 10th local contact has no email (HubSpot finds those by the external key).
const WITHOUT_EMAIL_EVERY: u64 = 10;
/// Each HubSpot answer takes this long, so that the push lasts several seconds.
const HUBSPOT_LATENCY_MS: u64 = 600;
/// How long a job may take to get somewhere on a loaded 2-core machine, orphan recovery
/// included.
const PATIENCE: Duration = Duration::from_secs(180);
const API_TOKEN: &str = "serve-killed-test-token";

profile_tests! {
    async fn a_serve_killed_mid_push_finishes_the_job_after_a_restart_without_duplicates_or_losses(db: TestDb, profile: HubSpotProfile) {
        let store = db.store().await;
        insert_people(&store).await;
        let hubspot = slow_hubspot(profile).await;
        let dir = tempfile::tempdir().expect("a working directory");

        let first = Service::start(dir.path(), &db, &hubspot).await;
        let id = first.enqueue_push().await["id"].as_str().expect("a job id").to_owned();
        let seen = first
            .wait_for(&id, "a quarter of the contacts committed", |job| {
                job["progress"]["processed"].as_u64() >= Some(CONTACTS / 4)
            })
            .await;
        assert_eq!(seen["status"], "running", "{seen:#}");
        first.kill();

        // What the dead process left: the job still `running`, part of its pages committed.
        let left = store.get_job(id.parse().expect("a job id")).await.unwrap().unwrap();
        let committed = left.progress.processed;
        assert!(committed > 0 && committed < CONTACTS, "killed mid-job: {left:#?}");
        let linked = linked_rows(&store).await.iter().filter(|r| r.hs_object_id.is_some()).count();
        assert_eq!(linked as u64, committed, "committed pages and links agree");

        let second = Service::start(dir.path(), &db, &hubspot).await;
        let done = second
            .wait_for(&id, "the job to end", |job| {
                !matches!(job["status"].as_str(), Some("queued" | "running" | "retrying"))
            })
            .await;

        assert_eq!(done["status"], "succeeded", "{done:#}");
        assert_eq!(done["attempts"], 2, "resumed once, by the restarted process: {done:#}");
        assert_eq!(
            done["portal_id"],
            hubspot.portal_id(),
            "the job names the account the private-app token reaches: {done:#}"
        );
        let counts = &done["counts"];
        assert_eq!(counts["total"], CONTACTS, "{counts}");
        assert_eq!(counts["failed"], 0, "{done:#}");
        assert_eq!(counts["updated"], 0, "{counts}");
        assert_eq!(
            counts["created"].as_u64().unwrap() + counts["linked"].as_u64().unwrap(),
            CONTACTS,
            "every contact created or linked exactly once: {counts}"
        );
        assert!(
            counts["linked"].as_u64() > Some(0),
            "pages HubSpot applied after the kill were found again, not created twice: {counts}"
        );
        assert_eq!(done["progress"]["processed"], CONTACTS, "{done:#}");
        let rows = linked_rows(&store).await;
        assert_eq!(rows.len() as u64, CONTACTS);
        assert_eq!(hubspot.contact_count() as u64, CONTACTS, "one HubSpot contact per row");
        let keys = ExternalKeys::new(&store.installation().await.expect("installation"));
        assert_one_hubspot_contact_per_row(&rows, &hubspot.contacts(), &keys);

        // Nothing is left to push, and a second push writes nothing to HubSpot.
        let writes = hubspot_writes(&hubspot);
        let rerun = second.enqueue_push().await["id"].as_str().expect("a job id").to_owned();
        assert_ne!(rerun, id, "the first job is over, so this is a new one");
        let rerun = second
            .wait_for(&rerun, "the second push to end", |job| job["status"] == "succeeded")
            .await;
        assert_eq!(rerun["counts"]["total"], 0, "{rerun:#}");
        assert_eq!(hubspot_writes(&hubspot), writes, "no write call to HubSpot");
        assert!(second.process.terminate().success(), "SIGTERM ends serve with 0");
    }
}

/// `CONTACTS` local contacts `person{i}@acme.io`, every `WITHOUT_EMAIL_EVERY`-th without email.
async fn insert_people(store: &Store) {
    let batch: Vec<NewContact> = (1..=CONTACTS)
        .map(|i| NewContact {
            email: (i % WITHOUT_EMAIL_EVERY != 0).then(|| format!("person{i}@acme.io")),
            first_name: Some(format!("First{i}")),
            last_name: Some(format!("Last{i}")),
        })
        .collect();
    let inserted = store.insert_contacts(&batch).await.expect("insert");
    assert_eq!(inserted, CONTACTS);
}

/// A HubSpot sandbox on loopback that answers slowly, the way `profile` says, but never refuses
/// or fails, so that the only thing interrupting the push is the kill.
async fn slow_hubspot(profile: HubSpotProfile) -> SandboxHandle {
    let args = SandboxArgs {
        variants: profile.variants(),
        requests_per_10s: 0,
        search_per_second: 0,
        latency_ms: HUBSPOT_LATENCY_MS,
        rng_seed: Some(4),
        ..SandboxArgs::default()
    };
    Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the sandbox starts")
}

/// Write calls HubSpot has answered so far.
fn hubspot_writes(hubspot: &SandboxHandle) -> u64 {
    let stats = hubspot.stats();
    [
        "contacts.create",
        "contacts.update",
        "contacts.batch_create",
        "contacts.batch_update",
        "contacts.batch_upsert",
    ]
    .iter()
    .filter_map(|op| stats.by_operation.get(*op))
    .sum()
}

/// One `crm-sync serve` process of the test, configured through the environment only, and
/// its API.
struct Service {
    process: Running,
    base: String,
    http: reqwest::Client,
}

impl Service {
    /// Starts `crm-sync serve` in `dir` on `db`, pointed at `hubspot` with its private-app
    /// token, and waits until it answers.
    async fn start(dir: &Path, db: &TestDb, hubspot: &SandboxHandle) -> Service {
        let port = free_port();
        let mut cmd: Command = crm_sync(dir);
        cmd.arg("serve")
            .env("CRM_SYNC__DATABASE__URL", db.url())
            .env("CRM_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("CRM_SYNC__API__TOKEN", API_TOKEN)
            .env("CRM_SYNC__HUBSPOT__API_BASE_URL", hubspot.base_url())
            .env("CRM_SYNC__HUBSPOT__ACCESS_TOKEN", hubspot.access_token());
        let mut process = Running::start(cmd, dir);
        let base = format!("http://127.0.0.1:{port}");
        process.wait_healthy(&base).await;
        Service {
            process,
            base,
            http: reqwest::Client::new(),
        }
    }

    /// `POST /api/jobs {"direction":"push"}`; the job it answers with.
    async fn enqueue_push(&self) -> Value {
        let answer = self
            .http
            .post(format!("{}/api/jobs", self.base))
            .bearer_auth(API_TOKEN)
            .json(&json!({"direction": "push"}))
            .send()
            .await
            .expect("POST /api/jobs");
        assert_eq!(answer.status(), 202, "{:?}", self.process.output());
        answer.json().await.expect("a job")
    }

    /// `GET /api/jobs/{id}`.
    async fn job(&self, id: &str) -> Value {
        let answer = self
            .http
            .get(format!("{}/api/jobs/{id}", self.base))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("GET /api/jobs/{id}");
        assert_eq!(answer.status(), 200, "{:?}", self.process.output());
        answer.json().await.expect("a job")
    }

    /// Polls the job until `done` holds; fails after [`PATIENCE`], naming `what` it waited
    /// for and showing the job and the process's output.
    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "waited {PATIENCE:?} for {what}: {job:#}\n{:?}",
                self.process.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no signal handler runs, no page boundary is reached, nothing is handed back.
    fn kill(self) {
        self.process.kill();
    }
}
