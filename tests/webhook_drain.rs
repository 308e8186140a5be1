//! Webhooks at scale, end to end over real HTTP on SQLite and PostgreSQL: however many
//! deliveries race, one webhook pull drains `webhook_pulls` at a time; each pending id is read
//! once (once more only when a webhook names it again while it is read) and none is left
//! behind; a drain ends after a bounded amount of work and the next one picks up the rest; and a
//! scheduled pull is never skipped because webhook pulls keep coming.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;
mod routes_support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::TestDb;
use crm_sync::jobs::model::{Counts, Job, JobStatus};
use crm_sync::jobs::schedule::{Fired, Schedule, fire};
use crm_sync::jobs::{EnqueueRequest, JobSpec, Trigger, enqueue, queue};
use crm_sync::sandbox::{SandboxArgs, SandboxHandle};
use crm_sync::secret::Secret;
use crm_sync::store::{NewContact, Store};
use crm_sync::sync::webhook_pull::MAX_BATCHES;
use crm_sync::webhooks::{count_pending_pulls, record_pending_pulls, sign_v3};
use reqwest::StatusCode;
use routes_support::{
    CLIENT_SECRET, Options, Server, Workers, all_jobs_ended, bind, sandbox_args, start_sandbox,
    webhooked_world,
};
use serde_json::{Value, json};

const PORTAL: u64 = 1_000_001;

/// A sandbox holding `n` contacts (inserted directly: they send no webhooks) and a server on
/// the test database; the contacts' HubSpot ids.
async fn world(db: &TestDb, n: usize, args: SandboxArgs) -> (SandboxHandle, Server, Vec<u64>) {
    world_with(db, n, args, Options::default()).await
}

/// [`world`] with the server's `options` (its client is a private-app client whatever they
/// say).
async fn world_with(
    db: &TestDb,
    n: usize,
    args: SandboxArgs,
    options: Options,
) -> (SandboxHandle, Server, Vec<u64>) {
    let sandbox = start_sandbox(args).await;
    let ids = sandbox
        .insert_contacts(
            (0..n)
                .map(|i| BTreeMap::from([("email".to_owned(), format!("c{i}@drain-example.com"))]))
                .collect(),
        )
        .into_iter()
        .map(|id| id.parse().unwrap())
        .collect();
    let options = Options {
        private_app: true,
        ..options
    };
    let server = Server::start(bind().await, db.store().await, &sandbox, options).await;
    (sandbox, server, ids)
}

/// A `contact.creation` event from another source than this app (a user, an import).
fn created(event_id: u64, object_id: u64) -> Value {
    json!({
        "eventId": event_id, "subscriptionId": 7, "portalId": PORTAL, "appId": 4_000_001,
        "occurredAt": 1_700_000_000_000_i64 + event_id as i64,
        "subscriptionType": "contact.creation", "attemptNumber": 0, "objectId": object_id,
        "changeSource": "CRM_UI", "sourceId": "userId:42"
    })
}

/// Posts a signed batch on a connection of its own.
async fn deliver(server: &Server, events: Vec<Value>) -> (StatusCode, Value) {
    deliver_to(server.url("/webhooks/hubspot"), events).await
}

/// Posts a signed batch to `url` on a connection of its own.
async fn deliver_to(url: String, events: Vec<Value>) -> (StatusCode, Value) {
    let body = serde_json::to_vec(&Value::Array(events)).unwrap();
    let ts = Utc::now().timestamp_millis();
    let signature = sign_v3("POST", &url, &body, ts, &Secret::new(CLIENT_SECRET));
    let resp = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("X-HubSpot-Signature-v3", signature)
        .header("X-HubSpot-Request-Timestamp", ts.to_string())
        .body(body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    (status, resp.json().await.expect("a JSON answer"))
}

fn webhook_pulls(jobs: &[Job]) -> Vec<&Job> {
    let mut pulls: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.trigger == Trigger::Webhook)
        .collect();
    pulls.sort_by_key(|j| j.id);
    pulls
}

fn pull_total(job: &Job) -> u64 {
    match job.counts {
        Counts::Pull(c) => c.total,
        Counts::Push(_) => panic!("a pull has pull counts"),
    }
}

/// No two webhook pulls ran at the same time: each started after the previous one finished.
fn assert_one_at_a_time(pulls: &[&Job]) {
    let spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = pulls
        .iter()
        .filter_map(|j| Some((j.started_at?, j.finished_at?)))
        .collect();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "webhook pulls overlapped: {pair:?}");
    }
}

/// How many times each id was asked for in batch reads, from the sandbox's recorded requests.
fn reads_per_id(sandbox: &SandboxHandle) -> BTreeMap<String, usize> {
    let mut reads = BTreeMap::new();
    for request in sandbox.take_recorded_requests() {
        if !request.path.ends_with("/batch/read") {
            continue;
        }
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        for input in body["inputs"].as_array().unwrap() {
            let id = input["id"].as_str().unwrap().to_owned();
            *reads.entry(id).or_insert(0) += 1;
        }
    }
    reads
}

/// Waits until the sandbox has sent every webhook (its count stops moving) and every job ended.
async fn webhooks_settled(sandbox: &SandboxHandle, store: &Store) -> Vec<Job> {
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let delivered = sandbox.stats().webhook_events_delivered;
        let jobs = all_jobs_ended(store).await;
        if delivered == last {
            return jobs;
        }
        last = delivered;
    }
}

/// A person changes a property of a HubSpot contact (the sandbox reports it as `CRM_UI`).
async fn user_changes(sandbox: &SandboxHandle, hs_id: &str, property: &str, value: &str) {
    let resp = reqwest::Client::new()
        .patch(format!(
            "{}/crm/v3/objects/contacts/{hs_id}",
            sandbox.base_url()
        ))
        .bearer_auth(sandbox.access_token())
        .header(crm_sync::sandbox::USER_HEADER, "42")
        .json(&json!({"properties": {property: value}}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

fn batch_reads(sandbox: &SandboxHandle) -> u64 {
    sandbox
        .stats()
        .by_operation
        .get("contacts.batch_read")
        .copied()
        .unwrap_or(0)
}

backend_tests! {
    async fn echoes_of_a_push_make_no_hubspot_call_and_a_persons_change_is_read(db: TestDb) {
        let (sandbox, server) = webhooked_world(db.store().await).await;
        let contacts: Vec<NewContact> = (0..250)
            .map(|i| NewContact {
                email: Some(format!("p{i}@echo-example.com")),
                first_name: Some(format!("P{i}")),
                last_name: Some("Echo".to_owned()),
            })
            .collect();
        server.store.insert_contacts(&contacts).await.unwrap();
        let workers = Workers::start(&server);
        let push = enqueue_push(&server.store).await;
        let jobs = webhooks_settled(&sandbox, &server.store).await;
        let push = jobs.iter().find(|j| j.id == push.id).unwrap();
        assert_eq!(push.status, JobStatus::Succeeded, "{:?}", push.error);
        assert!(
            sandbox.stats().webhook_events_delivered >= 250,
            "HubSpot told us about every contact the push created: {:?}", sandbox.stats()
        );
        assert_eq!(batch_reads(&sandbox), 0, "no echo of the push is read back");
        assert!(webhook_pulls(&jobs).is_empty(), "no webhook pull for echoes: {jobs:?}");

        // A person's changes: a property no pull reads needs no read; a new name does.
        let linked = server.store.list_contacts(None, 1).await.unwrap().remove(0);
        let hs_id = linked.hs_object_id.unwrap().0;
        user_changes(&sandbox, &hs_id, "phone", "+1 555 0100").await;
        webhooks_settled(&sandbox, &server.store).await;
        assert_eq!(batch_reads(&sandbox), 0, "an unread property needs no read");
        user_changes(&sandbox, &hs_id, "firstname", "Renamed").await;
        let jobs = webhooks_settled(&sandbox, &server.store).await;
        workers.stop().await;
        assert_eq!(batch_reads(&sandbox), 1, "a person's change of a name we read is read");
        assert_eq!(webhook_pulls(&jobs).len(), 1);
        assert_eq!(count_pending_pulls(&server.store).await.unwrap(), 0);
    }

    async fn concurrent_deliveries_of_the_same_and_overlapping_ids_make_one_drain_that_reads_each_id_once(db: TestDb) {
        let (sandbox, server, ids) = world(&db, 300, sandbox_args()).await;
        // Twelve deliveries on twelve connections at once: windows of 60 ids overlapping by
        // 40, every one also naming the first id.
        let deliveries = (0..12).map(|k| {
            let mut events = vec![created(10_000 + k, ids[0])];
            events.extend(
                ids.iter()
                    .skip(k as usize * 20)
                    .take(60)
                    .enumerate()
                    .map(|(i, id)| created(k * 1000 + i as u64, *id)),
            );
            tokio::spawn(deliver_to(server.url("/webhooks/hubspot"), events))
        }).collect::<Vec<_>>();
        let mut answers = Vec::new();
        for delivery in deliveries {
            answers.push(delivery.await.unwrap());
        }
        for (status, body) in &answers {
            assert_eq!(*status, StatusCode::OK, "{body}");
        }
        let job_ids: std::collections::BTreeSet<&str> =
            answers.iter().map(|(_, b)| b["job_id"].as_str().unwrap()).collect();
        assert_eq!(job_ids.len(), 1, "every delivery names the one drain: {job_ids:?}");
        let active: Vec<Job> = server.store.active_job_records().await.unwrap()
            .into_iter().map(|r| r.job).collect();
        assert_eq!(active.len(), 1, "one webhook pull is active: {active:?}");

        sandbox.set_recording(true);
        let workers = Workers::start(&server);
        let jobs = all_jobs_ended(&server.store).await;
        workers.stop().await;

        let pulls = webhook_pulls(&jobs);
        assert_eq!(pulls.len(), 1, "{pulls:?}");
        assert_eq!(pulls[0].status, JobStatus::Succeeded, "{:?}", pulls[0].error);
        let named = 11 * 20 + 60;
        assert_eq!(pull_total(pulls[0]), named as u64);
        let reads = reads_per_id(&sandbox);
        assert_eq!(reads.len(), named, "every named id is read");
        assert!(reads.values().all(|n| *n == 1), "no id is read twice: {reads:?}");
        assert_eq!(count_pending_pulls(&server.store).await.unwrap(), 0, "none is left behind");
        assert_eq!(server.store.count_contacts().await.unwrap(), named as i64);
    }

    async fn a_delivery_while_a_drain_runs_is_read_after_it_and_nothing_is_lost(db: TestDb) {
        // Slow answers keep the drain busy while more webhooks arrive.
        let args = SandboxArgs { latency_ms: 300, ..sandbox_args() };
        let (sandbox, server, ids) = world(&db, 150, args).await;
        sandbox.set_recording(true);
        let workers = Workers::start(&server);
        let first: Vec<Value> = ids[..100].iter().enumerate().map(|(i, id)| created(i as u64, *id)).collect();
        let (status, body) = deliver(&server, first).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let drain = body["job_id"].as_str().unwrap().to_owned();
        wait_until_running(&server.store, &drain).await;

        // Half the ids again (one more request each) and 50 new ones, while the drain reads.
        let second: Vec<Value> = ids[50..].iter().enumerate().map(|(i, id)| created(500 + i as u64, *id)).collect();
        let (status, body) = deliver(&server, second).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["job_id"], drain, "the running drain is the active webhook pull");

        let jobs = all_jobs_ended(&server.store).await;
        workers.stop().await;
        let pulls = webhook_pulls(&jobs);
        assert!(pulls.iter().all(|j| j.status == JobStatus::Succeeded), "{pulls:?}");
        assert_one_at_a_time(&pulls);
        let reads = reads_per_id(&sandbox);
        for (i, id) in ids.iter().enumerate() {
            let n = reads.get(&id.to_string()).copied().unwrap_or(0);
            let named_twice = (50..100).contains(&i);
            if named_twice {
                assert!((1..=2).contains(&n), "id {id} named twice is read once or twice: {n}");
            } else {
                assert_eq!(n, 1, "id {id} named once is read once");
            }
        }
        assert_eq!(count_pending_pulls(&server.store).await.unwrap(), 0, "none is left behind");
        assert_eq!(server.store.count_contacts().await.unwrap(), 150);
    }

    async fn a_drain_ends_after_a_bounded_number_of_reads_and_its_successor_reads_the_rest(db: TestDb) {
        let n = MAX_BATCHES * 100 + 250;
        let (sandbox, server, ids) = world(&db, n, sandbox_args()).await;
        let named: Vec<_> = ids.iter().map(|id| crm_sync::ids::HsObjectId(id.to_string())).collect();
        record_pending_pulls(&server.store, &named).await.unwrap();
        queue::enqueue_webhook_pull(&server.store).await.unwrap();
        sandbox.set_recording(true);
        let workers = Workers::start(&server);
        let jobs = all_jobs_ended(&server.store).await;
        workers.stop().await;

        let pulls = webhook_pulls(&jobs);
        assert_eq!(pulls.len(), 2, "the first drain hands over once: {pulls:?}");
        assert!(pulls.iter().all(|j| j.status == JobStatus::Succeeded), "{pulls:?}");
        assert_eq!(pull_total(pulls[0]), (MAX_BATCHES * 100) as u64, "bounded");
        assert_eq!(pull_total(pulls[1]), 250, "the successor reads the rest");
        assert_one_at_a_time(&pulls);
        let reads = reads_per_id(&sandbox);
        assert_eq!(reads.len(), n);
        assert!(reads.values().all(|r| *r == 1), "no id is read twice");
        assert_eq!(count_pending_pulls(&server.store).await.unwrap(), 0);
    }

    async fn a_push_keeps_the_whole_rate_budget_while_the_webhook_drain_waits(db: TestDb) {
        // A budget of 60 calls per 10 s, and slow answers: the drain is still reading when the
        // push starts, with more than half of the budget free.
        let options = Options { requests_per_10s: 60, ..Options::default() };
        let args = SandboxArgs { latency_ms: 150, ..sandbox_args() };
        let (sandbox, server, ids) = world_with(&db, 1_500, args, options).await;
        let contacts: Vec<NewContact> = (0..1_500)
            .map(|i| NewContact {
                email: Some(format!("u{i}@budget-example.com")),
                first_name: Some(format!("U{i}")),
                last_name: None,
            })
            .collect();
        server.store.insert_contacts(&contacts).await.unwrap();
        let workers = Workers::start(&server);
        sandbox.set_recording(true);
        for (k, chunk) in ids.chunks(100).enumerate() {
            let events = chunk
                .iter()
                .enumerate()
                .map(|(i, id)| created((k * 100 + i) as u64, *id))
                .collect();
            assert_eq!(deliver(&server, events).await.0, StatusCode::OK);
        }
        wait_for_a_running_webhook_pull(&server.store).await;
        let push = enqueue_push(&server.store).await;
        let jobs = all_jobs_ended(&server.store).await;
        let push = jobs.iter().find(|j| j.id == push.id).unwrap();
        assert_eq!(push.status, JobStatus::Succeeded, "{:?}", push.error);
        wait_until_nothing_pending(&server.store).await;
        workers.stop().await;

        // In the order the sandbox received them: the drain's reads (of the webhooks' ids) that
        // fell between the push's first and last write.
        let webhooked: std::collections::BTreeSet<String> =
            ids.iter().map(u64::to_string).collect();
        let calls: Vec<&'static str> = sandbox
            .take_recorded_requests()
            .iter()
            .filter_map(|r| {
                if r.path.ends_with("/batch/create") {
                    return Some("push");
                }
                let body: Value = serde_json::from_slice(&r.body).ok()?;
                let first = body["inputs"][0]["id"].as_str()?;
                (r.path.ends_with("/batch/read") && webhooked.contains(first)).then_some("drain")
            })
            .collect();
        let first = calls.iter().position(|c| *c == "push").expect("the push wrote");
        let last = calls.iter().rposition(|c| *c == "push").unwrap();
        assert_eq!(calls[first..=last].iter().filter(|c| **c == "push").count(), 15);
        let during = calls[first..=last].iter().filter(|c| **c == "drain").count();
        // One read may have been under way when the push began; no other.
        assert!(during <= 1, "the drain read {during} times during the push: {calls:?}");
        let drained = calls.iter().filter(|c| **c == "drain").count();
        assert_eq!(drained, 15, "every webhook's id is read once, the rest after the push");
    }

    async fn a_scheduled_pull_runs_during_a_steady_webhook_stream(db: TestDb) {
        // Slow answers keep each webhook pull running for a while.
        let args = SandboxArgs { latency_ms: 300, ..sandbox_args() };
        let (_sandbox, server, ids) = world(&db, 40, args).await;
        let workers = Workers::start(&server);
        // A delivery every 50 ms for the whole test.
        let stream = {
            let url_server = server.url("/webhooks/hubspot");
            let ids = ids.clone();
            tokio::spawn(async move {
                for (k, id) in ids.iter().cycle().take(400).enumerate() {
                    deliver_to(url_server.clone(), vec![created(k as u64, *id)]).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        wait_for_a_running_webhook_pull(&server.store).await;
        let schedule = Schedule::new("0 */15 * * * *", "pull", None, None).unwrap();
        let fired = fire(&server.store, &schedule, Utc::now().timestamp()).await.unwrap();
        let Fired::Queued(job_id) = fired else {
            panic!("the tick is not skipped for a webhook pull: {fired:?}");
        };
        let started = std::time::Instant::now();
        let job = loop {
            let job = server.store.get_job(job_id).await.unwrap().unwrap();
            if job.status.is_terminal() {
                break job;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{job:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
        assert_eq!(job.trigger, Trigger::Schedule);
        stream.abort();
        all_jobs_ended(&server.store).await;
        workers.stop().await;
    }
}

/// Polls until job `id` is running.
async fn wait_until_running(store: &Store, id: &str) {
    let id = id.parse().unwrap();
    let started = std::time::Instant::now();
    loop {
        let job = store.get_job(id).await.unwrap().unwrap();
        if job.status == JobStatus::Running {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{job:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until a webhook pull is running.
async fn wait_for_a_running_webhook_pull(store: &Store) {
    let started = std::time::Instant::now();
    loop {
        let running = store.list_jobs(Some(JobStatus::Running), 50).await.unwrap();
        if running.iter().any(|j| j.trigger == Trigger::Webhook) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a webhook pull runs"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls until no webhook id is pending and every job ended.
async fn wait_until_nothing_pending(store: &Store) {
    let started = std::time::Instant::now();
    while count_pending_pulls(store).await.unwrap() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the drain reads every pending id"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    all_jobs_ended(store).await;
}

/// Queues a push as the CLI does; the job.
async fn enqueue_push(store: &Store) -> Job {
    let request = EnqueueRequest {
        spec: JobSpec::push(),
        trigger: Trigger::Cli,
        force: false,
    };
    enqueue(store, request).await.unwrap().job
}
