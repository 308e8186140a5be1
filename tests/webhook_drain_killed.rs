//! Durability of the webhook drain in the real service: `crm-sync serve` killed with SIGKILL
//! while a webhook pull reads, then started again, reads every pending id — none lost, and none
//! whose page had committed read again (only the page in flight at the kill is read twice) — on
//! SQLite and PostgreSQL.
//!
//! As in `serve_killed.rs`, nothing is shortened: the restarted process gets the drain back
//! through the orphan recovery production relies on (about 15–20 s).

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::process::Serve;
use crm_sync::ids::HsObjectId;
use crm_sync::jobs::model::JobStatus;
use crm_sync::jobs::queue;
use crm_sync::sandbox::{Sandbox, SandboxArgs, SandboxHandle};
use crm_sync::store::Store;
use crm_sync::webhooks::{count_pending_pulls, record_pending_pulls};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Ids webhooks named: 15 batch reads, fewer than one drain's bound.
const NAMED: usize = 1500;
/// Each HubSpot answer takes this long, so that the drain lasts several seconds.
const HUBSPOT_LATENCY_MS: u64 = 500;
const PATIENCE: Duration = Duration::from_secs(180);

backend_tests! {
    async fn a_serve_killed_mid_drain_reads_the_rest_after_a_restart_and_nothing_twice(db: TestDb) {
        let store = db.store().await;
        let hubspot = slow_hubspot().await;
        let ids: Vec<HsObjectId> = hubspot
            .insert_contacts(
                (0..NAMED)
                    .map(|i| BTreeMap::from([("email".to_owned(), format!("w{i}@acme.io"))]))
                    .collect(),
            )
            .into_iter()
            .map(HsObjectId)
            .collect();
        // What the webhook route leaves for a drain: the ids, and the webhook pull to read them.
        record_pending_pulls(&store, &ids).await.unwrap();
        let drain = queue::enqueue_webhook_pull(&store).await.unwrap().job.id;
        hubspot.set_recording(true);
        let dir = tempfile::tempdir().expect("a working directory");

        let first = Serve::start(dir.path(), db.url(), &hubspot.base_url(), hubspot.access_token()).await;
        wait_until(&store, "a few pages committed", async |store: &Store| {
            let job = store.get_job(drain).await.unwrap().unwrap();
            job.progress.processed >= 300
        })
        .await;
        first.kill();
        let job = store.get_job(drain).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Running, "killed mid-drain: {job:#?}");
        let pending_at_kill = count_pending_pulls(&store).await.unwrap();
        let committed: BTreeSet<String> = linked_ids(&store).await;
        assert_eq!(committed.len() as u64 + pending_at_kill, NAMED as u64, "committed pages cleared their ids, the rest wait");

        let second = Serve::start(dir.path(), db.url(), &hubspot.base_url(), hubspot.access_token()).await;
        wait_until(&store, "every id read", async |store: &Store| {
            let active = store.active_job_records().await.unwrap();
            count_pending_pulls(store).await.unwrap() == 0 && active.is_empty()
        })
        .await;
        let done = store.get_job(drain).await.unwrap().unwrap();
        assert_eq!(done.status, JobStatus::Succeeded, "{done:#?}");
        assert_eq!(done.attempts, 2, "resumed once, by the restarted process");
        assert_eq!(store.count_contacts().await.unwrap() as usize, NAMED, "none lost");

        // Reads over both processes, wherever the sandbox got to recording the page the killed
        // process had in flight (a busy machine may record it after the kill returned).
        let reads = reads_per_id(&hubspot);
        assert_eq!(reads.len(), NAMED, "every id was read");
        let committed_read_again: Vec<&String> =
            committed.iter().filter(|id| reads[*id] > 1).collect();
        assert!(
            committed_read_again.is_empty(),
            "ids whose page committed before the kill are not read again: {committed_read_again:?}"
        );
        // The page in flight at the kill is read again; two drains reading the same ids would
        // show as more.
        let twice: Vec<(&String, &usize)> = reads.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.len() <= 100 && twice.iter().all(|(_, n)| **n == 2),
            "only the page in flight at the kill is read twice: {twice:?}"
        );
        drop(second);
    }
}

/// A HubSpot sandbox that answers slowly but never refuses.
async fn slow_hubspot() -> SandboxHandle {
    let args = SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        latency_ms: HUBSPOT_LATENCY_MS,
        rng_seed: Some(9),
        ..SandboxArgs::default()
    };
    Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the sandbox starts")
}

/// The HubSpot ids of the local contacts (linked by the pages that committed).
async fn linked_ids(store: &Store) -> BTreeSet<String> {
    store
        .list_contacts(None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.hs_object_id.map(|id| id.0))
        .collect()
}

/// How many times each id was asked for in batch reads since the last call.
fn reads_per_id(hubspot: &SandboxHandle) -> BTreeMap<String, usize> {
    let mut reads = BTreeMap::new();
    for request in hubspot.take_recorded_requests() {
        if !request.path.ends_with("/batch/read") {
            continue;
        }
        let body: Value = serde_json::from_slice(&request.body).expect("a JSON body");
        for input in body["inputs"].as_array().expect("inputs") {
            let id = input["id"].as_str().expect("an id").to_owned();
            *reads.entry(id).or_insert(0) += 1;
        }
    }
    reads
}

/// Polls `done` until it holds; fails after [`PATIENCE`].
async fn wait_until(store: &Store, what: &str, done: impl AsyncFn(&Store) -> bool) {
    let started = Instant::now();
    while !done(store).await {
        assert!(
            started.elapsed() < PATIENCE,
            "waited {PATIENCE:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
