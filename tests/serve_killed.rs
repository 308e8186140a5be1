//! Durability of the real service: `crm-sync serve` killed with SIGKILL in the middle of a push
//! and started again finishes the job — no local contact lost, none in HubSpot twice — on
//! SQLite and PostgreSQL.
//!
//! Nothing is shortened for the test: the restarted process gets the job back through the same
//! orphan recovery production relies on (the dead worker misses its heartbeats, about 15–20 s),
//! so each backend takes about half a minute. It runs under every way HubSpot may answer
//! (`HubSpotProfile`): with conflicts reported per input, the creates a restarted run repeats
//! come back as 207 conflicts, and must end linked, not failed.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::process::Serve;
use common::pushed::{assert_one_hubspot_contact_per_row, linked_rows};
use common::world::slow_sandbox;
use crm_sync::sandbox::SandboxHandle;
use crm_sync::store::{NewContact, Store};
use crm_sync::sync::keys::ExternalKeys;

/// Local contacts to push: enough pages that a kill lands in the middle.
const CONTACTS: u64 = 3000;
/// Every 10th local contact has no email (HubSpot finds those by the external key).
const WITHOUT_EMAIL_EVERY: u64 = 10;
/// Each HubSpot answer takes this long, so that the push lasts several seconds.
const HUBSPOT_LATENCY_MS: u64 = 600;

backend_tests! {
    async fn a_serve_killed_mid_push_finishes_the_job_after_a_restart_without_duplicates_or_losses(db: TestDb, profile: HubSpotProfile) {
        let store = db.store().await;
        insert_people(&store).await;
        let hubspot = slow_sandbox(profile, HUBSPOT_LATENCY_MS, 4).await;
        let dir = tempfile::tempdir().expect("a working directory");

        let first = Serve::start(dir.path(), db.url(), &hubspot.base_url(), hubspot.access_token()).await;
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

        let second = Serve::start(dir.path(), db.url(), &hubspot.base_url(), hubspot.access_token()).await;
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
