//! `POST /webhooks/hubspot` over real HTTP, on SQLite and PostgreSQL: the v3 signature over
//! `server.public_url` + path and query, redelivery dedupe, deletions and merges applied to the
//! local rows, the pull enqueued for the named records — and the whole loop with the sandbox
//! sending real webhooks and a worker pulling the change (only the named records, by id).
//! Events about another HubSpot account than the connected one are acknowledged and ignored.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;
mod routes_support;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::TestDb;
use crm_sync::api::ratelimit::{Quota, RateLimits};
use crm_sync::ids::{ContactId, HsObjectId, PortalId};
use crm_sync::jobs::model::{Counts, Job, JobAction, JobStatus, PullMode, PushMode};
use crm_sync::jobs::worker::{WorkerConfig, run_workers};
use crm_sync::jobs::{EnqueueRequest, JobSpec, Trigger, enqueue};
use crm_sync::sandbox::SandboxHandle;
use crm_sync::secret::Secret;
use crm_sync::store::{NewContact, NewCredentials, Store, TombstoneReason};
use crm_sync::sync::{SyncContext, SyncRunner};
use crm_sync::webhooks::{count_pending_pulls, pending_pulls, sign_v3};
use reqwest::StatusCode;
use routes_support::{
    CLIENT_SECRET, Options, Server, Workers, all_jobs_ended, bind, sandbox_args, start_sandbox,
    webhooked_world,
};
use serde_json::{Value, json};

const PORTAL: u64 = 1_000_001;

/// A server tied to [`PORTAL`] (`hubspot.portal_id`), the account the events are about.
async fn world(db: &TestDb, options: Options) -> (SandboxHandle, Server) {
    let options = Options {
        portal_id: Some(PORTAL as i64),
        ..options
    };
    let sandbox = start_sandbox(sandbox_args()).await;
    let server = Server::start(bind().await, db.store().await, &sandbox, options).await;
    (sandbox, server)
}

fn event(event_id: u64, kind: &str, object_id: u64, extra: Value) -> Value {
    let mut value = json!({
        "eventId": event_id, "subscriptionId": 7, "portalId": PORTAL, "appId": 4_000_001,
        "occurredAt": 1_700_000_000_000_i64 + event_id as i64, "subscriptionType": kind,
        "attemptNumber": 0, "objectId": object_id, "changeSource": "CRM"
    });
    if let (Some(map), Value::Object(more)) = (value.as_object_mut(), extra) {
        map.extend(more);
    }
    value
}

/// How the request is signed.
enum Signing<'a> {
    /// Correctly, now.
    Valid,
    /// With this secret.
    Secret(&'a str),
    /// Correctly, but this many ms ago.
    Aged(i64),
    /// Over another URI than the one called.
    Uri(&'a str),
    /// Not at all.
    Unsigned,
}

async fn post(
    server: &Server,
    path: &str,
    body: &Value,
    signing: Signing<'_>,
) -> (StatusCode, Value) {
    let body = serde_json::to_vec(body).unwrap();
    let url = server.url(path);
    let mut ts = Utc::now().timestamp_millis();
    let mut secret = CLIENT_SECRET;
    let mut signed_uri = url.clone();
    let mut unsigned = false;
    match signing {
        Signing::Valid => {}
        Signing::Secret(s) => secret = s,
        Signing::Aged(ms) => ts -= ms,
        Signing::Uri(u) => signed_uri = u.to_owned(),
        Signing::Unsigned => unsigned = true,
    }
    let mut req = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone());
    if !unsigned {
        let signature = sign_v3("POST", &signed_uri, &body, ts, &Secret::new(secret));
        req = req
            .header("X-HubSpot-Signature-v3", signature)
            .header("X-HubSpot-Request-Timestamp", ts.to_string());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.expect("a JSON answer"))
}

/// Inserts contacts linked to HubSpot ids with the user's own SQL; returns their ids.
async fn linked(store: &Store, rows: &[(&str, &str)]) -> Vec<ContactId> {
    let new: Vec<NewContact> = rows
        .iter()
        .map(|(email, _)| NewContact {
            email: Some((*email).to_owned()),
            ..NewContact::default()
        })
        .collect();
    store.insert_contacts(&new).await.unwrap();
    const SQL: &str = "UPDATE contacts SET hs_object_id = $2 WHERE email = $1";
    for (email, hs_id) in rows {
        if let Some(pg) = store.pg_pool() {
            sqlx::query(SQL)
                .bind(email)
                .bind(hs_id)
                .execute(pg)
                .await
                .unwrap();
        } else if let Some(lite) = store.sqlite_pool() {
            sqlx::query(SQL)
                .bind(email)
                .bind(hs_id)
                .execute(lite)
                .await
                .unwrap();
        }
    }
    let all = store.list_contacts(None, 1000).await.unwrap();
    rows.iter()
        .map(|(email, _)| {
            all.iter()
                .find(|c| c.email.as_deref() == Some(*email))
                .unwrap()
                .id
        })
        .collect()
}

async fn hs_id(store: &Store, id: ContactId) -> Option<String> {
    store
        .get_contact(id)
        .await
        .unwrap()
        .unwrap()
        .hs_object_id
        .map(|h| h.0)
}

/// Everything a refused webhook could have changed.
async fn snapshot(store: &Store) -> (Vec<Option<String>>, usize, usize) {
    let rows = store.list_contacts(None, 1000).await.unwrap();
    let jobs = store.list_jobs(None, 100).await.unwrap().len();
    let pending = pending_pulls(store, 1000).await.unwrap().len();
    (
        rows.into_iter()
            .map(|c| c.hs_object_id.map(|h| h.0))
            .collect(),
        jobs,
        pending,
    )
}

fn pull_total(job: &Job) -> u64 {
    match job.counts {
        Counts::Pull(c) => c.total,
        Counts::Push(_) => panic!("a pull has pull counts"),
    }
}

fn sandbox_calls(sandbox: &SandboxHandle, operation: &str) -> u64 {
    sandbox
        .stats()
        .by_operation
        .get(operation)
        .copied()
        .unwrap_or(0)
}

backend_tests! {
    async fn a_signed_batch_applies_deletions_and_merges_and_queues_a_pull_of_the_rest(db: TestDb) {
        let (_sandbox, server) = world(&db, Options::default()).await;
        let ids = linked(&server.store, &[("gone@x.io", "101"), ("merged@x.io", "201")]).await;
        let batch = json!([
            event(1, "contact.creation", 301, json!({})),
            event(2, "contact.propertyChange", 302, json!({"propertyName": "email", "propertyValue": "n@x.io"})),
            event(3, "contact.propertyChange", 301, json!({"propertyName": "firstname", "propertyValue": "N"})),
            event(4, "contact.deletion", 101, json!({})),
            event(5, "contact.merge", 202, json!({"primaryObjectId": 202, "mergedObjectIds": [201]})),
        ]);
        let (status, body) = post(&server, "/webhooks/hubspot", &batch, Signing::Valid).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["new_events"], 5);
        assert_eq!(hs_id(&server.store, ids[0]).await, None, "deletion unlinks");
        assert_eq!(hs_id(&server.store, ids[1]).await.as_deref(), Some("202"), "merge relinks");

        let pending = pending_pulls(&server.store, 100).await.unwrap();
        let mut pending: Vec<&str> = pending.iter().map(|h| h.0.as_str()).collect();
        pending.sort_unstable();
        assert_eq!(pending, ["202", "301", "302"], "each named record once");
        let jobs = server.store.list_jobs(None, 10).await.unwrap();
        let [job] = jobs.as_slice() else { panic!("one pull job: {jobs:?}") };
        assert_eq!(job.trigger, Trigger::Webhook);
        assert!(matches!(job.spec.action, JobAction::Pull { .. }));
        assert_eq!(body["job_id"], job.id.to_string());

        // A second batch while that pull waits adds no job.
        let more = json!([event(6, "contact.creation", 303, json!({}))]);
        let (status, _) = post(&server, "/webhooks/hubspot", &more, Signing::Valid).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(server.store.list_jobs(None, 10).await.unwrap().len(), 1);
    }

    async fn a_redelivered_batch_is_processed_once(db: TestDb) {
        let (_sandbox, server) = world(&db, Options::default()).await;
        let ids = linked(&server.store, &[("a@x.io", "11")]).await;
        let batch = json!([event(1, "contact.deletion", 11, json!({}))]);
        let (_, first) = post(&server, "/webhooks/hubspot", &batch, Signing::Valid).await;
        assert_eq!(first["new_events"], 1);
        // The user links the contact again; HubSpot redelivers the old deletion.
        const SQL: &str = "UPDATE contacts SET hs_object_id = '11'";
        if let Some(pg) = server.store.pg_pool() {
            sqlx::query(SQL).execute(pg).await.unwrap();
        } else if let Some(lite) = server.store.sqlite_pool() {
            sqlx::query(SQL).execute(lite).await.unwrap();
        }
        let redelivered = json!([event(1, "contact.deletion", 11, json!({"attemptNumber": 1}))]);
        let (status, again) = post(&server, "/webhooks/hubspot", &redelivered, Signing::Valid).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again["duplicates"], 1);
        assert_eq!(again["new_events"], 0);
        assert_eq!(hs_id(&server.store, ids[0]).await.as_deref(), Some("11"), "not applied twice");
        let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
        assert!(metrics.contains("crm_sync_webhook_events_received_total 2\n"), "{metrics}");
        assert!(metrics.contains("crm_sync_webhook_events_duplicate_total 1\n"), "{metrics}");
    }

    async fn a_signed_body_that_is_json_but_not_a_batch_is_a_422(db: TestDb) {
        let (_sandbox, server) = world(&db, Options::default()).await;
        let before = snapshot(&server.store).await;
        for body in [json!({"events": []}), json!("contact.creation")] {
            let (status, answer) = post(&server, "/webhooks/hubspot", &body, Signing::Valid).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
            assert_eq!(answer["error"]["code"], "invalid_request", "{body}");
        }
        assert_eq!(snapshot(&server.store).await, before, "nothing changed");
    }

    async fn unsigned_badly_signed_or_stale_requests_get_401_and_change_nothing(db: TestDb) {
        let (_sandbox, server) = world(&db, Options::default()).await;
        linked(&server.store, &[("a@x.io", "11")]).await;
        let batch = json!([
            event(1, "contact.deletion", 11, json!({})),
            event(2, "contact.creation", 12, json!({})),
        ]);
        let before = snapshot(&server.store).await;
        let other_uri = format!("https://elsewhere.example{}", "/webhooks/hubspot");
        for (what, signing) in [
            ("unsigned", Signing::Unsigned),
            ("wrong secret", Signing::Secret("not-the-secret")),
            ("stale", Signing::Aged(6 * 60 * 1000)),
            ("another URI", Signing::Uri(&other_uri)),
        ] {
            let (status, body) = post(&server, "/webhooks/hubspot", &batch, signing).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
            assert_eq!(body["error"]["code"], "invalid_signature", "{what}");
            assert_eq!(snapshot(&server.store).await, before, "{what} changed nothing");
        }
        // The query string is part of what is signed.
        let (status, _) = post(&server, "/webhooks/hubspot?x=1", &batch, Signing::Valid).await;
        assert_eq!(status, StatusCode::OK, "a signature over path and query verifies");
        let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
        assert!(
            metrics.contains("crm_sync_webhook_requests_rejected_total{reason=\"bad_signature\"} 4\n"),
            "each refused request is counted: {metrics}"
        );
        assert!(metrics.contains("crm_sync_webhook_events_received_total 2\n"), "only the verified batch's events: {metrics}");
    }

    async fn only_requests_failing_the_signature_check_spend_a_clients_webhook_budget(db: TestDb) {
        let options = Options {
            rate_limits: RateLimits {
                webhooks: Quota { burst: 2, per_minute: 1 },
                ..Options::default().rate_limits
            },
            ..Options::default()
        };
        let (_sandbox, server) = world(&db, options).await;
        let batch = json!([]);
        // HubSpot's deliveries during a big push come faster than any per-client budget.
        for _ in 0..20 {
            let (status, _) = post(&server, "/webhooks/hubspot", &batch, Signing::Valid).await;
            assert_eq!(status, StatusCode::OK, "a signed delivery is never limited");
        }
        let unsigned = || {
            reqwest::Client::new()
                .post(server.url("/webhooks/hubspot"))
                .body("[]")
                .send()
        };
        for _ in 0..2 {
            assert_eq!(unsigned().await.unwrap().status(), StatusCode::UNAUTHORIZED);
        }
        let resp = unsigned().await.unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(resp.headers().contains_key("retry-after"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
        // The client that spent its budget on bad requests is refused before its body is read.
        let (status, _) = post(&server, "/webhooks/hubspot", &batch, Signing::Valid).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    }

    async fn a_contact_created_in_hubspot_shows_up_locally_through_a_webhook(db: TestDb) {
        let listener = bind().await;
        let addr = listener.local_addr().unwrap();
        let args = crm_sync::sandbox::SandboxArgs {
            webhook_url: Some(format!("http://{addr}/webhooks/hubspot")),
            ..sandbox_args()
        };
        let sandbox = start_sandbox(args).await;
        let options = Options { private_app: true, ..Options::default() };
        let server = Server::start(listener, db.store().await, &sandbox, options).await;
        let runner = Arc::new(SyncRunner::new(SyncContext::new(server.client.clone())));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let config = WorkerConfig {
            role: "test".to_owned(),
            sqlite_poll_interval: Duration::from_millis(50),
            postgres_poll_interval: Duration::from_millis(200),
            ..WorkerConfig::default()
        };
        let workers = tokio::spawn(run_workers(server.store.clone(), runner, vec![], config, async move {
            let _ = stop_rx.await;
        }));

        let created = reqwest::Client::new()
            .post(format!("{}/crm/v3/objects/contacts", sandbox.base_url()))
            .bearer_auth(sandbox.access_token())
            // A person's change in HubSpot, not this app's own write (which needs no read).
            .header("x-sandbox-user-id", "42")
            .json(&json!({"properties": {"email": "webhooked@example.com", "firstname": "Web"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let hs: Value = created.json().await.unwrap();
        let hs_id = HsObjectId(hs["id"].as_str().unwrap().to_owned());

        let started = std::time::Instant::now();
        let row = loop {
            let rows = server.store.list_contacts(None, 100).await.unwrap();
            if let Some(row) = rows.into_iter().find(|c| c.hs_object_id.as_ref() == Some(&hs_id)) {
                break row;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the contact arrives");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(row.email.as_deref(), Some("webhooked@example.com"));
        let jobs = server.store.list_jobs(None, 10).await.unwrap();
        assert!(jobs.iter().any(|j| j.trigger == Trigger::Webhook), "a webhook-triggered pull: {jobs:?}");
        let _ = stop_tx.send(());
        workers.await.unwrap().unwrap();
    }

    async fn a_contact_changed_in_hubspot_is_linked_locally_through_a_webhook_read_by_id(db: TestDb) {
        let (sandbox, server) = webhooked_world(db.store().await).await;
        // HubSpot has a contact under an old address (inserted directly: no webhook); the
        // product database knows the person under the new one, not yet linked.
        let hs_id = sandbox.insert_contacts(vec![
            [("email".to_owned(), "old-address@example.com".to_owned())].into(),
        ])[0]
            .clone();
        server
            .store
            .insert_contacts(&[NewContact {
                email: Some("new-address@example.com".to_owned()),
                ..NewContact::default()
            }])
            .await
            .unwrap();
        let workers = Workers::start(&server);

        // Someone changes the contact's email in HubSpot.
        let changed = reqwest::Client::new()
            .patch(format!("{}/crm/v3/objects/contacts/{hs_id}", sandbox.base_url()))
            .bearer_auth(sandbox.access_token())
            // A person's change in HubSpot, not this app's own write (which needs no read).
            .header("x-sandbox-user-id", "42")
            .json(&json!({"properties": {"email": "new-address@example.com"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), StatusCode::OK);

        let started = std::time::Instant::now();
        loop {
            let rows = server.store.list_contacts(None, 100).await.unwrap();
            if rows.iter().any(|c| c.hs_object_id.as_ref().map(|h| h.0.as_str()) == Some(hs_id.as_str())) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the change arrives: {rows:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let jobs = all_jobs_ended(&server.store).await;
        workers.stop().await;

        assert!(jobs.iter().all(|j| j.trigger == Trigger::Webhook && j.status == JobStatus::Succeeded), "{jobs:?}");
        assert_eq!(sandbox_calls(&sandbox, "contacts.list"), 0, "no full scan");
        assert_eq!(sandbox_calls(&sandbox, "contacts.search"), 0, "no search");
        assert!(sandbox_calls(&sandbox, "contacts.batch_read") >= 1);
        assert_eq!(count_pending_pulls(&server.store).await.unwrap(), 0, "webhook_pulls is empty");
    }

    async fn a_contact_deleted_in_hubspot_is_tombstoned_through_the_real_webhook_and_never_pushed_again(db: TestDb) {
        let (sandbox, server) = webhooked_world(db.store().await).await;
        let hs_id = sandbox.insert_contacts(vec![
            [("email".to_owned(), "leaving@example.com".to_owned())].into(),
        ])[0]
            .clone();
        let ids = linked(&server.store, &[("leaving@example.com", hs_id.as_str())]).await;
        let workers = Workers::start(&server);

        // Someone deletes the contact in HubSpot; HubSpot sends `contact.deletion`.
        let deleted = reqwest::Client::new()
            .delete(format!("{}/crm/v3/objects/contacts/{hs_id}", sandbox.base_url()))
            .bearer_auth(sandbox.access_token())
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        let started = std::time::Instant::now();
        let tombstone = loop {
            let row = server.store.get_contact(ids[0]).await.unwrap().expect("the row stays");
            if let Some(tombstone) = row.hubspot_deleted {
                assert_eq!(row.hs_object_id, None, "the link is cleared");
                assert_eq!(row.email.as_deref(), Some("leaving@example.com"), "its data stays");
                break tombstone;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the deletion arrives");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(tombstone.reason, TombstoneReason::Deleted);
        assert_eq!(tombstone.hs_object_id.map(|h| h.0), Some(hs_id.clone()));

        let push = enqueue(
            &server.store,
            EnqueueRequest { spec: JobSpec::from(JobAction::Push { mode: PushMode::Link }), trigger: Trigger::Api, force: false },
        )
        .await
        .unwrap()
        .job;
        all_jobs_ended(&server.store).await;
        workers.stop().await;

        let push = server.store.get_job(push.id).await.unwrap().unwrap();
        assert_eq!(push.status, JobStatus::Succeeded, "{push:?}");
        assert!(matches!(push.counts, Counts::Push(c) if c.total == 0), "no candidate: {:?}", push.counts);
        assert_eq!(sandbox_calls(&sandbox, "contacts.batch_create"), 0, "nothing created again");
        assert!(sandbox.contacts().is_empty(), "HubSpot has no live contact");
    }

    async fn a_redelivered_creation_is_pulled_once(db: TestDb) {
        let (sandbox, server) = world(&db, Options { private_app: true, ..Options::default() }).await;
        let hs_id: u64 = sandbox.insert_contacts(vec![
            [("email".to_owned(), "once@example.com".to_owned())].into(),
        ])[0]
            .parse()
            .unwrap();
        let batch = json!([event(1, "contact.creation", hs_id, json!({}))]);
        let (_, first) = post(&server, "/webhooks/hubspot", &batch, Signing::Valid).await;
        let redelivered = json!([event(1, "contact.creation", hs_id, json!({"attemptNumber": 1}))]);
        let (status, again) = post(&server, "/webhooks/hubspot", &redelivered, Signing::Valid).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again["duplicates"], 1);
        assert_eq!(again["to_pull"], 0);
        assert!(first["job_id"].is_string(), "{first}");
        assert_eq!(count_pending_pulls(&server.store).await.unwrap(), 1);

        let workers = Workers::start(&server);
        let jobs = all_jobs_ended(&server.store).await;
        workers.stop().await;

        let [job] = jobs.as_slice() else { panic!("one webhook pull: {jobs:?}") };
        assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
        assert_eq!(pull_total(job), 1, "read once");
        assert_eq!(sandbox_calls(&sandbox, "contacts.batch_read"), 1);
        assert_eq!(server.store.list_contacts(None, 10).await.unwrap().len(), 1);
        assert_eq!(count_pending_pulls(&server.store).await.unwrap(), 0);
    }

    async fn a_webhook_during_another_pull_queues_a_webhook_pull_beside_it(db: TestDb) {
        let (sandbox, server) = world(&db, Options { private_app: true, ..Options::default() }).await;
        let hs_id: u64 = sandbox.insert_contacts(vec![
            [("email".to_owned(), "behind@example.com".to_owned())].into(),
        ])[0]
            .parse()
            .unwrap();
        // A full pull from the API is waiting; it does not read webhook_pulls.
        let api_pull = enqueue(&server.store, EnqueueRequest {
            spec: JobSpec::from(JobAction::Pull { mode: PullMode::Upsert, incremental: false }),
            trigger: Trigger::Api,
            force: false,
        })
        .await
        .unwrap()
        .job;

        let batch = json!([event(1, "contact.creation", hs_id, json!({}))]);
        let (status, body) = post(&server, "/webhooks/hubspot", &batch, Signing::Valid).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let queued = server.store.list_jobs(Some(JobStatus::Queued), 10).await.unwrap();
        assert_eq!(queued.len(), 2, "{queued:?}");
        let webhook_job = queued.iter().find(|j| j.id != api_pull.id).unwrap();
        assert_eq!(webhook_job.trigger, Trigger::Webhook);
        assert!(webhook_job.forced, "it does not wait for the pull slot");
        assert_eq!(body["job_id"], webhook_job.id.to_string());

        // A second batch reuses the waiting webhook pull.
        let more = json!([event(2, "contact.propertyChange", hs_id, json!({"propertyName": "firstname", "propertyValue": "B"}))]);
        let (_, body) = post(&server, "/webhooks/hubspot", &more, Signing::Valid).await;
        assert_eq!(body["job_id"], webhook_job.id.to_string());

        let workers = Workers::start(&server);
        let jobs = all_jobs_ended(&server.store).await;
        workers.stop().await;
        assert_eq!(jobs.len(), 2);
        assert!(jobs.iter().all(|j| j.status == JobStatus::Succeeded), "{jobs:?}");
        assert_eq!(count_pending_pulls(&server.store).await.unwrap(), 0, "no id is stranded");
    }

    async fn a_pull_request_while_a_webhook_pull_is_active_is_queued_beside_it(db: TestDb) {
        let (_sandbox, server) = world(&db, Options { private_app: true, ..Options::default() }).await;
        let batch = json!([event(1, "contact.creation", 77, json!({}))]);
        let (status, body) = post(&server, "/webhooks/hubspot", &batch, Signing::Valid).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let webhook_job = body["job_id"].as_str().expect("a webhook pull").to_owned();

        // A webhook pull never stands in for the user's pull: the request is queued.
        let request = EnqueueRequest {
            spec: JobSpec::from(JobAction::Pull { mode: PullMode::Upsert, incremental: false }),
            trigger: Trigger::Cli,
            force: false,
        };
        let answered = enqueue(&server.store, request).await.unwrap();
        assert!(answered.created, "the requested pull is queued beside the webhook pull");
        assert_eq!(answered.job.trigger, Trigger::Cli);
        assert_ne!(answered.job.id.to_string(), webhook_job);

        // INTERFACE §4.2 still holds between requested pulls: the next request gets that one.
        let again = enqueue(&server.store, request).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.job.id, answered.job.id);
    }

    async fn events_about_another_account_are_acknowledged_and_ignored(db: TestDb) {
        let (_sandbox, server) = world(&db, Options::default()).await;
        let ids = linked(&server.store, &[("ours@x.io", "11"), ("gone@x.io", "21")]).await;
        let stranger = |mut e: Value| {
            e["portalId"] = json!(999_999);
            e
        };
        let batch = json!([
            stranger(event(1, "contact.deletion", 11, json!({}))),
            stranger(event(2, "contact.merge", 31, json!({"primaryObjectId": 31, "mergedObjectIds": [11]}))),
            stranger(event(3, "contact.creation", 41, json!({}))),
            event(4, "contact.deletion", 21, json!({})),
        ]);
        let (status, body) = post(&server, "/webhooks/hubspot", &batch, Signing::Valid).await;
        assert_eq!(status, StatusCode::OK, "acknowledged, so HubSpot does not redeliver: {body}");
        assert_eq!(hs_id(&server.store, ids[0]).await.as_deref(), Some("11"), "neither unlinked nor relinked");
        assert_eq!(hs_id(&server.store, ids[1]).await, None, "the connected account's deletion applies");
        assert_eq!(count_pending_pulls(&server.store).await.unwrap(), 0, "nothing to pull from a stranger");
        assert!(server.store.list_jobs(None, 10).await.unwrap().is_empty(), "no job");
        assert_eq!(body["received"], 4);
        assert_eq!(body["ignored"], 3);
        assert_eq!(body["new_events"], 1);

        let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
        assert!(metrics.contains("crm_sync_webhook_events_ignored_total{reason=\"other_portal\"} 3"), "{metrics}");
    }

    async fn with_no_account_connected_events_are_ignored(db: TestDb) {
        let sandbox = start_sandbox(sandbox_args()).await;
        let server = Server::start(bind().await, db.store().await, &sandbox, Options::default()).await;
        let ids = linked(&server.store, &[("ours@x.io", "11")]).await;
        let batch = json!([event(1, "contact.deletion", 11, json!({}))]);
        let (status, body) = post(&server, "/webhooks/hubspot", &batch, Signing::Valid).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(hs_id(&server.store, ids[0]).await.as_deref(), Some("11"), "not known to be ours");
        assert_eq!(body["ignored"], 1);
        let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
        assert!(metrics.contains("crm_sync_webhook_events_ignored_total{reason=\"not_connected\"} 1"), "{metrics}");
    }

    async fn a_private_app_service_takes_its_token_accounts_events_whatever_oauth_tokens_linger(db: TestDb) {
        let sandbox = start_sandbox(sandbox_args()).await;
        let options = Options { private_app: true, ..Options::default() };
        let server = Server::start(bind().await, db.store().await, &sandbox, options).await;
        // Tokens of an earlier OAuth setup, for another account, are still in the database.
        server
            .store
            .upsert_credentials(&NewCredentials {
                portal_id: PortalId(999_999),
                access_token_cipher: vec![1],
                refresh_token_cipher: Some(vec![2]),
                expires_at: Utc::now(),
                scopes: vec![],
            })
            .await
            .unwrap();
        let ids = linked(&server.store, &[("ours@x.io", "11"), ("theirs@x.io", "12")]).await;
        let mut theirs = event(2, "contact.deletion", 12, json!({}));
        theirs["portalId"] = json!(999_999);
        let batch = json!([event(1, "contact.deletion", 11, json!({})), theirs]);
        let (status, body) = post(&server, "/webhooks/hubspot", &batch, Signing::Valid).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(hs_id(&server.store, ids[0]).await, None, "the token's account ({PORTAL}) is the connected one");
        assert_eq!(hs_id(&server.store, ids[1]).await.as_deref(), Some("12"), "the lingering tokens' account is not");
        assert_eq!(body["ignored"], 1);
    }
}
