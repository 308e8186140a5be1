//! The job store and enqueueing, on SQLite and PostgreSQL.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;
#[macro_use]
mod jobs_support;

use crm_sync::ids::{DeliveryId, JobId, LeaseId};
use crm_sync::jobs::model::{Counts, JobSpec, JobStatus, PushCounts, SyncObject, Trigger};
use crm_sync::jobs::queue::{QUEUE, TASK_MAX_ATTEMPTS};
use crm_sync::jobs::{EnqueueRequest, enqueue};
use crm_sync::store::RetentionCutoffs;
use crm_sync::store::apalis::{STATUS_DONE, STATUS_FAILED, STATUS_KILLED};
use crm_sync::store::jobs::{Checkpoint, Tx};
use jobs_support::JobsDb;

backend_tests!(
    fixture = JobsDb::new;
    an_enqueued_job_is_queued_with_zeroed_counts,
    a_second_request_gets_the_active_job_unless_it_forces,
    racing_requests_create_one_job,
    jobs_list_newest_first_and_filter_by_status,
    a_run_holds_its_job_under_a_lease,
    a_stale_delivery_cannot_claim_a_job,
    cancelling_frees_the_direction,
    object_direction_and_dry_run_each_have_their_own_slot,
    the_jobs_command_lists_recent_jobs_and_shows_one,
    apalis_tables_are_what_the_store_reads,
    a_dry_pulls_notes_are_kept_per_page_and_forgotten_with_the_job,
);

fn req(spec: JobSpec, force: bool) -> EnqueueRequest {
    EnqueueRequest {
        spec,
        trigger: Trigger::Api,
        force,
    }
}

async fn an_enqueued_job_is_queued_with_zeroed_counts(db: &JobsDb) {
    let e = enqueue(&db.store, req(JobSpec::push(), false))
        .await
        .unwrap();
    assert!(e.created);
    let job = db.store.get_job(e.job.id).await.unwrap().unwrap();
    assert_eq!(job, e.job);
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.attempts, 0);
    assert_eq!(job.counts, Counts::Push(PushCounts::default()));
    assert!(job.started_at.is_none() && job.finished_at.is_none());
    let json = serde_json::to_value(&job).unwrap();
    assert_eq!(json["direction"], "push");
    assert_eq!(json["mode"], "link");
    assert_eq!(json["trigger"], "api");
    assert_eq!(json["counts"]["skipped"], 0);
}

async fn a_second_request_gets_the_active_job_unless_it_forces(db: &JobsDb) {
    let first = enqueue(&db.store, req(JobSpec::pull(), false))
        .await
        .unwrap();
    let second = enqueue(&db.store, req(JobSpec::pull(), false))
        .await
        .unwrap();
    assert!(!second.created);
    assert_eq!(second.job.id, first.job.id);

    // The other direction has its own slot.
    let push = enqueue(&db.store, req(JobSpec::push(), false))
        .await
        .unwrap();
    assert!(push.created);

    let forced = enqueue(&db.store, req(JobSpec::pull(), true))
        .await
        .unwrap();
    assert!(forced.created);
    assert_ne!(forced.job.id, first.job.id);
    assert!(forced.job.forced);

    // Still one slot holder: a plain request keeps getting the first job.
    let again = enqueue(&db.store, req(JobSpec::pull(), false))
        .await
        .unwrap();
    assert_eq!(again.job.id, first.job.id);
}

async fn object_direction_and_dry_run_each_have_their_own_slot(db: &JobsDb) {
    // Built as a stored row would be: the request checks (which refuse what this version
    // cannot run) are not the store's.
    let dry = JobSpec {
        dry_run: true,
        ..JobSpec::push()
    };
    let companies = JobSpec {
        object: SyncObject::Companies,
        ..JobSpec::push()
    };
    let real = enqueue(&db.store, req(JobSpec::push(), false))
        .await
        .unwrap();
    assert!(real.created);

    // A dry run while a real push is active is its own job, and says what it is.
    let dry_run = enqueue(&db.store, req(dry, false)).await.unwrap();
    assert!(
        dry_run.created,
        "a dry run is never answered with the real job"
    );
    assert_ne!(dry_run.job.id, real.job.id);
    let json = serde_json::to_value(&dry_run.job).unwrap();
    assert_eq!(
        (&json["dry_run"], &json["object"]),
        (&true.into(), &"contacts".into())
    );
    let stored = db.store.get_job(dry_run.job.id).await.unwrap().unwrap();
    assert_eq!(stored.spec, dry);

    // Each slot keeps its own holder.
    let again = enqueue(&db.store, req(dry, false)).await.unwrap();
    assert_eq!((again.created, again.job.id), (false, dry_run.job.id));
    let real_again = enqueue(&db.store, req(JobSpec::push(), false))
        .await
        .unwrap();
    assert_eq!(
        (real_again.created, real_again.job.id),
        (false, real.job.id)
    );
    assert_eq!(
        db.store.active_job(&dry).await.unwrap().unwrap().id,
        dry_run.job.id
    );

    // Another object has its own slot too.
    let company_push = enqueue(&db.store, req(companies, false)).await.unwrap();
    assert!(company_push.created);
    assert_eq!(
        db.store
            .get_job(company_push.job.id)
            .await
            .unwrap()
            .unwrap()
            .spec
            .object,
        SyncObject::Companies
    );

    // A dry run does not block a real job either: with only the dry run left active, a real
    // push request makes a new job.
    db.store.cancel_job(real.job.id).await.unwrap().unwrap();
    let fresh = enqueue(&db.store, req(JobSpec::push(), false))
        .await
        .unwrap();
    assert!(fresh.created);
    assert!(!fresh.job.spec.dry_run);
}

async fn racing_requests_create_one_job(db: &JobsDb) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = db.store.clone();
            tokio::spawn(async move { enqueue(&store, req(JobSpec::push(), false)).await })
        })
        .collect();
    let mut ids = Vec::new();
    let mut created = 0;
    for t in tasks {
        let e = t.await.unwrap().unwrap();
        created += usize::from(e.created);
        ids.push(e.job.id);
    }
    ids.dedup();
    assert_eq!(created, 1, "exactly one request creates the job");
    assert_eq!(ids.len(), 1, "every request answers with the same job");

    let forced = enqueue(&db.store, req(JobSpec::push(), true))
        .await
        .unwrap();
    assert!(forced.created);
    let active = db
        .store
        .list_jobs(Some(JobStatus::Queued), 10)
        .await
        .unwrap();
    assert_eq!(active.len(), 2, "force adds a second job");
}

async fn jobs_list_newest_first_and_filter_by_status(db: &JobsDb) {
    let a = enqueue(&db.store, req(JobSpec::push(), false))
        .await
        .unwrap()
        .job;
    let b = enqueue(&db.store, req(JobSpec::pull(), false))
        .await
        .unwrap()
        .job;
    db.store.cancel_job(a.id).await.unwrap().unwrap();

    let all = db.store.list_jobs(None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![b.id, a.id]
    );
    let cancelled = db
        .store
        .list_jobs(Some(JobStatus::Cancelled), 10)
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].id, a.id);
    assert_eq!(db.store.list_jobs(None, 1).await.unwrap().len(), 1);
}

async fn a_run_holds_its_job_under_a_lease(db: &JobsDb) {
    let job = enqueue(&db.store, req(JobSpec::push(), false))
        .await
        .unwrap()
        .job;
    let delivery = DeliveryId(job.id.to_string());
    let run = db
        .store
        .claim_job(job.id, &delivery, &LeaseId("lease-1".into()), "w1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.job.status, JobStatus::Running);
    assert_eq!(run.job.attempts, 1);
    assert!(run.job.started_at.is_some());

    let mut counts = PushCounts::default();
    counts.add(crm_sync::jobs::PushOutcome::Created);
    let counts = Counts::Push(counts);
    let cursor = serde_json::json!({"after": 1});
    let cp = Checkpoint {
        counts: &counts,
        errors: &[],
        checkpoint: Some(&cursor),
        processed: 1,
        total: Some(10),
        plan: None,
    };
    let mut tx = Tx::begin(&db.store).await.unwrap();
    assert!(
        tx.save_job_progress(job.id, &LeaseId("lease-1".into()), &cp)
            .await
            .unwrap()
    );
    assert!(
        !tx.save_job_progress(job.id, &LeaseId("someone-else".into()), &cp)
            .await
            .unwrap(),
        "another lease writes nothing"
    );
    tx.commit().await.unwrap();

    let seen = db.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(seen.counts, counts);
    assert_eq!(seen.progress.processed, 1);
    assert_eq!(seen.progress.total, Some(10));

    // A worker presumed dead is taken over: the new run gets a new lease, the old one loses.
    let taken = db
        .store
        .claim_job(job.id, &delivery, &LeaseId("lease-2".into()), "w2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.job.attempts, 2);
    assert_eq!(taken.checkpoint, Some(cursor));
    assert!(
        db.store
            .finish_job(
                job.id,
                &LeaseId("lease-1".into()),
                JobStatus::Succeeded,
                None
            )
            .await
            .unwrap()
            .is_none()
    );
    let done = db
        .store
        .finish_job(
            job.id,
            &LeaseId("lease-2".into()),
            JobStatus::Succeeded,
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert!(done.finished_at.is_some());
    assert_eq!(done.counts, counts, "counts survive the end of the run");

    // A finished job cannot be claimed again.
    assert!(
        db.store
            .claim_job(job.id, &delivery, &LeaseId("lease-3".into()), "w3")
            .await
            .unwrap()
            .is_none()
    );
}

async fn a_stale_delivery_cannot_claim_a_job(db: &JobsDb) {
    let job = enqueue(&db.store, req(JobSpec::pull(), false))
        .await
        .unwrap()
        .job;
    let other = DeliveryId(JobId::generate().to_string());
    assert!(
        db.store
            .claim_job(job.id, &other, &LeaseId("l".into()), "w")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        db.store.get_job(job.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
}

async fn cancelling_frees_the_direction(db: &JobsDb) {
    let job = enqueue(&db.store, req(JobSpec::push(), false))
        .await
        .unwrap()
        .job;
    let cancelled = db.store.cancel_job(job.id).await.unwrap().unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(db.store.cancel_job(job.id).await.unwrap().is_none());
    assert!(
        db.store
            .active_job(&JobSpec::push())
            .await
            .unwrap()
            .is_none()
    );
    let next = enqueue(&db.store, req(JobSpec::push(), false))
        .await
        .unwrap();
    assert!(next.created);
}

async fn the_jobs_command_lists_recent_jobs_and_shows_one(db: &JobsDb) {
    use crm_sync::jobs::commands::{self, CommandError, SyncOutcome};
    let mut out = Vec::new();
    commands::jobs(&db.store, None, 20, &mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out).starts_with("no jobs yet"));

    let mut out = Vec::new();
    let outcome = commands::sync(&db.store, JobSpec::pull(), false, false, None, &mut out)
        .await
        .unwrap();
    let SyncOutcome::Enqueued(job) = &outcome else {
        panic!("not waited for: {outcome:?}");
    };
    assert!(outcome.is_success());
    assert_eq!(job.trigger, Trigger::Cli);
    assert!(String::from_utf8_lossy(&out).contains(&job.id.to_string()));

    let mut out = Vec::new();
    commands::jobs(&db.store, None, 20, &mut out).await.unwrap();
    let table = String::from_utf8(out).unwrap();
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table.lines().nth(1).unwrap().contains("queued"), "{table}");

    let mut out = Vec::new();
    commands::jobs(&db.store, Some(&job.id.to_string()), 20, &mut out)
        .await
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(shown["id"], job.id.to_string());

    for bad in ["nonsense", &JobId::generate().to_string()] {
        let err = commands::jobs(&db.store, Some(bad), 20, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::NotFound(_)), "{err}");
    }
}

/// `store::apalis` reads Apalis' own tables; an Apalis upgrade that renames them, their columns
/// or its status strings must fail here, loudly, rather than leave reconciliation blind.
async fn apalis_tables_are_what_the_store_reads(db: &JobsDb) {
    use apalis::prelude::Status;
    const UPDATE: &str = "Apalis changed its storage: update src/store/apalis.rs";
    for (ours, theirs) in [
        (STATUS_DONE, Status::Done),
        (STATUS_KILLED, Status::Killed),
        (STATUS_FAILED, Status::Failed),
    ] {
        assert_eq!(
            ours,
            theirs.to_string(),
            "{UPDATE}: status {theirs:?} is spelled differently"
        );
    }

    let job = enqueue(&db.store, req(JobSpec::push(), false))
        .await
        .unwrap()
        .job;
    let delivery = DeliveryId(job.id.to_string());
    let task = db
        .store
        .apalis_task(QUEUE, &delivery)
        .await
        .unwrap_or_else(|e| panic!("{UPDATE}: its task table or columns are gone ({e})"))
        .unwrap_or_else(|| {
            panic!("{UPDATE}: a task it was just given is not found by id and queue ({QUEUE})")
        });
    assert_eq!(
        task.status.parse::<Status>().ok(),
        Some(Status::Pending),
        "{UPDATE}: a new task's status reads {:?}",
        task.status
    );
    assert_eq!(
        task.attempts, 0,
        "{UPDATE}: `attempts` no longer counts from 0"
    );
    assert_eq!(
        i64::from(task.max_attempts),
        TASK_MAX_ATTEMPTS as i64,
        "{UPDATE}: `max_attempts` no longer holds the task's limit"
    );
    assert!(!task.is_finished(), "a pending task is not finished");
    let missing = DeliveryId(JobId::generate().to_string());
    assert!(
        db.store
            .apalis_task(QUEUE, &missing)
            .await
            .unwrap()
            .is_none()
    );

    // Retention prunes the task table by `done_at`, `status` and the attempt columns; a pending
    // task survives whatever the cutoff.
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let cutoffs = RetentionCutoffs {
        jobs: later,
        webhook_events: later,
        schedule_ticks: later,
        queue_tasks: later,
        oauth_states: later,
        operator_sessions: later,
    };
    db.store
        .prune_retained(&cutoffs)
        .await
        .unwrap_or_else(|e| panic!("{UPDATE}: pruning finished tasks failed ({e})"));
    assert!(
        db.store
            .apalis_task(QUEUE, &delivery)
            .await
            .unwrap()
            .is_some(),
        "pruning must keep a task Apalis may still run"
    );
}

async fn a_dry_pulls_notes_are_kept_per_page_and_forgotten_with_the_job(db: &JobsDb) {
    let dry = JobSpec::pull().with_dry_run(true).unwrap();
    let active = enqueue(&db.store, req(dry, false)).await.unwrap().job.id;
    let ended = enqueue(&db.store, req(JobSpec::pull(), false))
        .await
        .unwrap()
        .job
        .id;
    let (active_key, ended_key) = (active.to_string(), ended.to_string());
    let mut tx = Tx::begin(&db.store).await.unwrap();
    tx.save_dry_notes(&active_key, 2, "second").await.unwrap();
    tx.save_dry_notes(&active_key, 1, "first").await.unwrap();
    tx.save_dry_notes(&ended_key, 1, "other").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        db.store.dry_notes(&active_key).await.unwrap(),
        ["first", "second"],
        "read in page order"
    );
    assert_eq!(db.store.last_dry_page(&active_key).await.unwrap(), Some(2));

    // A page written again after a crash replaces its notes.
    let mut tx = Tx::begin(&db.store).await.unwrap();
    tx.save_dry_notes(&active_key, 2, "second again")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        db.store.dry_notes(&active_key).await.unwrap(),
        ["first", "second again"]
    );

    // A job no longer active leaves nothing behind; an active one keeps its notes.
    db.store.cancel_job(ended).await.unwrap().unwrap();
    db.store.forget_stale_pull_seen().await.unwrap();
    assert!(db.store.dry_notes(&ended_key).await.unwrap().is_empty());
    assert_eq!(db.store.dry_notes(&active_key).await.unwrap().len(), 2);

    // The job's plan complete, its notes go.
    let mut tx = Tx::begin(&db.store).await.unwrap();
    tx.forget_dry_notes(&active_key).await.unwrap();
    tx.commit().await.unwrap();
    assert!(db.store.dry_notes(&active_key).await.unwrap().is_empty());
    assert_eq!(db.store.last_dry_page(&active_key).await.unwrap(), None);
}
