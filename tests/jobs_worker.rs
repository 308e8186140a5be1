//! Jobs through the real Apalis queue and workers, on SQLite and PostgreSQL: pickup, retries,
//! failures, redelivery, graceful shutdown, a worker process killed with SIGKILL, and schedules.
//!
//! The runner is THE TEST RUNNER from `jobs_support` (page-by-page over `test_items`), not the
//! sync engine.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;
#[macro_use]
mod jobs_support;

use crm_sync::jobs::model::{JobSpec, JobStatus, Trigger};
use crm_sync::jobs::queue::{QUEUE, SyncTask};
use crm_sync::jobs::schedule::{self, Fired, Schedule};
use crm_sync::jobs::worker::{RetryPolicy, WorkerConfig, WorkerRuntimeError, run_workers};
use crm_sync::jobs::{EnqueueRequest, JobRunner, enqueue};
use crm_sync::store::Store;
use jobs_support::JobsDb;
use jobs_support::{PageRunner, Shared, create_items, item_counts, push_counts, wait_for};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

backend_tests!(
    fixture = JobsDb::new;
    an_idle_worker_picks_up_a_job_and_reports_progress,
    sync_wait_follows_the_job_and_prints_its_counts,
    several_workers_run_each_job_exactly_once,
    transient_failures_are_retried_and_the_job_resumes,
    a_job_that_keeps_failing_transiently_fails_after_bounded_attempts,
    a_fatal_error_fails_the_job_at_once,
    a_panicking_runner_fails_the_job_not_the_worker,
    a_redelivered_finished_job_is_acknowledged_and_ignored,
    record_errors_are_capped_while_counts_stay_exact,
    shutdown_hands_a_running_job_back_at_a_page_boundary,
    a_failing_queue_poll_restarts_the_worker_without_costing_the_running_job_an_attempt,
    a_worker_killed_mid_job_is_resumed_without_losing_or_repeating_a_page,
    a_tick_claimed_by_two_processes_enqueues_once,
    a_tick_while_the_direction_is_active_is_recorded_skipped,
    two_schedulers_fire_each_tick_once,
);

const WAIT: Duration = Duration::from_secs(60);

/// Short heartbeats and backoffs so that orphan recovery and retries happen within seconds.
fn test_config() -> WorkerConfig {
    WorkerConfig {
        role: "test".to_owned(),
        sqlite_poll_interval: Duration::from_millis(100),
        postgres_poll_interval: Duration::from_millis(500),
        heartbeat_interval: Duration::from_secs(1),
        missed_heartbeats: 2,
        retry: RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(2),
        },
        shutdown_timeout: Duration::from_secs(20),
        reconcile_interval: Duration::from_secs(5),
    }
}

/// A worker runtime running in the background of the test, like a `crm-sync worker` process.
struct Runtime {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), WorkerRuntimeError>>,
}

impl Runtime {
    fn start(store: &Store, runner: Arc<dyn JobRunner>, schedules: Vec<Schedule>) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(run_workers(
            store.clone(),
            runner,
            schedules,
            test_config(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self { stop, handle }
    }

    async fn shut_down(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap().unwrap();
    }
}

fn push(trigger: Trigger) -> EnqueueRequest {
    EnqueueRequest {
        spec: JobSpec::push(),
        trigger,
        force: false,
    }
}

async fn an_idle_worker_picks_up_a_job_and_reports_progress(db: &JobsDb) {
    create_items(&db.store, 10).await;
    let runner = Arc::new(PageRunner::new(2, Duration::from_millis(150)));
    let rt = Runtime::start(&db.store, Arc::new(Shared(runner.clone())), vec![]);
    // Let the worker go idle first: the job must wake it, not be found at start.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let job = enqueue(&db.store, push(Trigger::Cli)).await.unwrap().job;

    let (mid, _) = wait_for(&db.store, job.id, WAIT, |j| {
        j.status == JobStatus::Running && j.progress.processed >= 2
    })
    .await;
    assert_eq!(
        mid.progress.total,
        Some(10),
        "total is visible while it runs"
    );

    let (done, statuses) = wait_for(&db.store, job.id, WAIT, |j| j.status.is_terminal()).await;
    rt.shut_down().await;
    assert_eq!(statuses, vec![JobStatus::Running, JobStatus::Succeeded]);
    assert_eq!(done.attempts, 1);
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    assert_eq!(push_counts(&done).total, 10);
    assert_eq!(push_counts(&done).created, 10);
    assert_eq!(done.progress.processed, 10);
    assert_eq!(item_counts(&db.store).await, vec![1; 10]);
}

async fn sync_wait_follows_the_job_and_prints_its_counts(db: &JobsDb) {
    use crm_sync::jobs::commands::{self, JobShortfall, SyncOutcome};
    create_items(&db.store, 6).await;
    let mut runner = PageRunner::new(2, Duration::from_millis(50));
    runner.fail_every = 3;
    let rt = Runtime::start(&db.store, runner.arc(), vec![]);
    let mut out = Vec::new();
    let outcome = commands::sync(&db.store, JobSpec::push(), false, true, None, &mut out)
        .await
        .unwrap();
    rt.shut_down().await;
    let SyncOutcome::Finished(job) = &outcome else {
        panic!("waited for: {outcome:?}");
    };
    assert_eq!(job.status, JobStatus::Succeeded);
    assert!(
        !outcome.is_success(),
        "every third record failed, so --wait does not report a full success"
    );
    assert_eq!(
        outcome.failure().map(|(why, _)| why),
        Some(JobShortfall::RecordsFailed)
    );
    let printed = String::from_utf8(out).unwrap();
    assert!(printed.contains("succeeded"), "{printed}");
    let row = |key: &str, value: &str| {
        printed
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [key, value])
    };
    assert!(
        row("total", "6") && row("created", "4") && row("failed", "2"),
        "{printed}"
    );
    assert!(printed.contains("contact 3: item 3 refused"), "{printed}");
}

async fn several_workers_run_each_job_exactly_once(db: &JobsDb) {
    create_items(&db.store, 10).await;
    let runner = Arc::new(PageRunner::new(2, Duration::from_millis(20)));
    let workers: Vec<_> = (0..3)
        .map(|_| Runtime::start(&db.store, Arc::new(Shared(runner.clone())), vec![]))
        .collect();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let forced = EnqueueRequest {
            force: true,
            ..push(Trigger::Api)
        };
        ids.push(enqueue(&db.store, forced).await.unwrap().job.id);
    }
    for id in &ids {
        let (done, _) = wait_for(&db.store, *id, WAIT, |j| j.status.is_terminal()).await;
        assert_eq!(done.status, JobStatus::Succeeded);
        assert_eq!(done.attempts, 1);
    }
    for w in workers {
        w.shut_down().await;
    }
    assert_eq!(runner.runs.load(Ordering::SeqCst), 4, "each job ran once");
    assert_eq!(item_counts(&db.store).await, vec![4; 10]);
}

async fn transient_failures_are_retried_and_the_job_resumes(db: &JobsDb) {
    create_items(&db.store, 10).await;
    let runner = PageRunner::new(2, Duration::from_millis(10));
    runner.transient_failures.store(2, Ordering::SeqCst);
    let runner = Arc::new(runner);
    let job = enqueue(&db.store, push(Trigger::Api)).await.unwrap().job;
    let rt = Runtime::start(&db.store, Arc::new(Shared(runner.clone())), vec![]);

    let (retrying, _) =
        wait_for(&db.store, job.id, WAIT, |j| j.status == JobStatus::Retrying).await;
    assert_eq!(retrying.error.as_deref(), Some("HubSpot answered 503"));
    assert!(retrying.next_attempt_at.is_some());

    let (done, _) = wait_for(&db.store, job.id, WAIT, |j| j.status.is_terminal()).await;
    rt.shut_down().await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.attempts, 3);
    assert_eq!(runner.runs.load(Ordering::SeqCst), 3);
    assert_eq!(push_counts(&done).total, 10);
    assert_eq!(
        item_counts(&db.store).await,
        vec![1; 10],
        "each retry resumed from the checkpoint"
    );
}

async fn a_job_that_keeps_failing_transiently_fails_after_bounded_attempts(db: &JobsDb) {
    create_items(&db.store, 20).await;
    let mut runner = PageRunner::new(2, Duration::from_millis(10));
    runner.always_transient = true;
    let runner = Arc::new(runner);
    let job = enqueue(&db.store, push(Trigger::Api)).await.unwrap().job;
    let rt = Runtime::start(&db.store, Arc::new(Shared(runner.clone())), vec![]);

    let (done, statuses) = wait_for(&db.store, job.id, WAIT, |j| j.status.is_terminal()).await;
    rt.shut_down().await;
    assert_eq!(done.status, JobStatus::Failed);
    assert!(statuses.contains(&JobStatus::Retrying));
    assert_eq!(done.attempts, 3);
    assert_eq!(runner.runs.load(Ordering::SeqCst), 3);
    let reason = done.error.clone().unwrap();
    assert!(reason.contains("HubSpot answered 503"), "{reason}");
    assert!(reason.contains("gave up after 3 attempts"), "{reason}");
    // Each run committed one page before failing: the failed job keeps those counts.
    assert_eq!(push_counts(&done).total, 6);
    assert_eq!(item_counts(&db.store).await.iter().sum::<i64>(), 6);
    assert!(done.finished_at.is_some());
}

async fn a_fatal_error_fails_the_job_at_once(db: &JobsDb) {
    create_items(&db.store, 4).await;
    let mut runner = PageRunner::new(2, Duration::ZERO);
    runner.fatal = true;
    let runner = Arc::new(runner);
    let job = enqueue(&db.store, push(Trigger::Api)).await.unwrap().job;
    let rt = Runtime::start(&db.store, Arc::new(Shared(runner.clone())), vec![]);
    let (done, _) = wait_for(&db.store, job.id, WAIT, |j| j.status.is_terminal()).await;
    rt.shut_down().await;
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(done.attempts, 1);
    assert_eq!(done.error.as_deref(), Some("the HubSpot token was revoked"));
}

async fn a_panicking_runner_fails_the_job_not_the_worker(db: &JobsDb) {
    let mut runner = PageRunner::new(2, Duration::ZERO);
    runner.panics = true;
    let first = enqueue(&db.store, push(Trigger::Api)).await.unwrap().job;
    let rt = Runtime::start(&db.store, runner.arc(), vec![]);
    let (done, _) = wait_for(&db.store, first.id, WAIT, |j| j.status.is_terminal()).await;
    assert_eq!(done.status, JobStatus::Failed);
    assert!(done.error.unwrap().contains("panicked"));

    // The worker is still there for the next job.
    let second = enqueue(&db.store, push(Trigger::Api)).await.unwrap().job;
    let (done, _) = wait_for(&db.store, second.id, WAIT, |j| j.status.is_terminal()).await;
    rt.shut_down().await;
    assert_eq!(done.status, JobStatus::Failed);
}

/// Pushes an extra Apalis task that delivers `job_id` under its current delivery id (what a
/// duplicate or orphan redelivery looks like), returning the new task's id.
async fn push_duplicate_delivery(store: &Store, job_id: crm_sync::ids::JobId) -> String {
    let record = store.get_job_record(job_id).await.unwrap().unwrap();
    let payload = SyncTask {
        job_id,
        delivery: record.delivery.unwrap(),
    };
    let task_id = ulid::Ulid::generate();
    let task = apalis::prelude::TaskBuilder::new(serde_json::to_vec(&payload).unwrap())
        .task_id(apalis::prelude::TaskId::from_ulid(task_id))
        .max_attempts(3)
        .build();
    if let Some(p) = store.pg_pool() {
        let mut c = p.acquire().await.unwrap();
        apalis_postgres::queries::push_tasks(&mut *c, QUEUE, vec![task])
            .await
            .unwrap();
    } else {
        let mut c = store.sqlite_pool().unwrap().acquire().await.unwrap();
        apalis_sqlite::queries::push_tasks(&mut *c, QUEUE, &[task])
            .await
            .unwrap();
    }
    task_id.to_string()
}

async fn apalis_task_status(store: &Store, id: &str) -> Option<String> {
    if let Some(p) = store.pg_pool() {
        sqlx::query_scalar("SELECT status FROM apalis.jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(p)
            .await
            .unwrap()
    } else {
        sqlx::query_scalar("SELECT status FROM Jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(store.sqlite_pool().unwrap())
            .await
            .unwrap()
    }
}

async fn a_redelivered_finished_job_is_acknowledged_and_ignored(db: &JobsDb) {
    create_items(&db.store, 4).await;
    let runner = Arc::new(PageRunner::new(2, Duration::ZERO));
    let job = enqueue(&db.store, push(Trigger::Api)).await.unwrap().job;
    let rt = Runtime::start(&db.store, Arc::new(Shared(runner.clone())), vec![]);
    let (done, _) = wait_for(&db.store, job.id, WAIT, |j| j.status.is_terminal()).await;
    assert_eq!(done.status, JobStatus::Succeeded);

    let extra = push_duplicate_delivery(&db.store, job.id).await;
    let start = std::time::Instant::now();
    while apalis_task_status(&db.store, &extra).await.as_deref() != Some("Done") {
        assert!(
            start.elapsed() < WAIT,
            "the extra delivery was never handled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rt.shut_down().await;
    assert_eq!(
        runner.runs.load(Ordering::SeqCst),
        1,
        "the runner did not run again"
    );
    let after = db.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(after, done, "the finished job is unchanged");
    assert_eq!(item_counts(&db.store).await, vec![1; 4]);
}

async fn record_errors_are_capped_while_counts_stay_exact(db: &JobsDb) {
    create_items(&db.store, 2500).await;
    let mut runner = PageRunner::new(500, Duration::ZERO);
    runner.fail_every = 1;
    let job = enqueue(&db.store, push(Trigger::Api)).await.unwrap().job;
    let rt = Runtime::start(&db.store, runner.arc(), vec![]);
    let (done, _) = wait_for(&db.store, job.id, WAIT, |j| j.status.is_terminal()).await;
    rt.shut_down().await;
    assert_eq!(
        done.status,
        JobStatus::Succeeded,
        "failed records do not fail the job"
    );
    assert_eq!(push_counts(&done).failed, 2500);
    assert_eq!(push_counts(&done).total, 2500);
    assert_eq!(done.errors.len(), 1000);
    assert_eq!(done.errors[0].reason, "item 1 refused");
}

async fn shutdown_hands_a_running_job_back_at_a_page_boundary(db: &JobsDb) {
    create_items(&db.store, 20).await;
    let job = enqueue(&db.store, push(Trigger::Api)).await.unwrap().job;
    let first = Runtime::start(
        &db.store,
        PageRunner::new(2, Duration::from_millis(150)).arc(),
        vec![],
    );
    wait_for(&db.store, job.id, WAIT, |j| j.progress.processed >= 4).await;
    first.shut_down().await;

    let handed_back = db.store.get_job_record(job.id).await.unwrap().unwrap();
    assert_eq!(handed_back.job.status, JobStatus::Queued);
    assert_eq!(
        handed_back.job.attempts, 0,
        "an interrupted run is not an attempt"
    );
    let processed = handed_back.job.progress.processed;
    assert!(
        (4..20).contains(&processed),
        "stopped mid-way at {processed}"
    );
    assert!(handed_back.checkpoint.is_some());

    let second = Runtime::start(
        &db.store,
        PageRunner::new(2, Duration::from_millis(10)).arc(),
        vec![],
    );
    let (done, _) = wait_for(&db.store, job.id, WAIT, |j| j.status.is_terminal()).await;
    second.shut_down().await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.attempts, 1);
    assert_eq!(push_counts(&done).total, 20);
    assert_eq!(item_counts(&db.store).await, vec![1; 20]);
}

/// Makes the job queue's poll fail for a moment, as the database does to it in production:
/// on SQLite a write lock held past the busy timeout ("database is locked"), on PostgreSQL the
/// queue's table gone for two seconds.
async fn fail_the_queue_poll(store: &Store) {
    if let Some(pool) = store.sqlite_pool() {
        let mut locker = pool.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *locker)
            .await
            .unwrap();
        // The store's busy timeout is 10 s.
        tokio::time::sleep(Duration::from_secs(11)).await;
        sqlx::query("ROLLBACK").execute(&mut *locker).await.unwrap();
    } else {
        let pool = store.pg_pool().unwrap();
        sqlx::query("ALTER TABLE apalis.jobs RENAME TO jobs_away")
            .execute(pool)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        sqlx::query("ALTER TABLE apalis.jobs_away RENAME TO jobs")
            .execute(pool)
            .await
            .unwrap();
    }
}

async fn a_failing_queue_poll_restarts_the_worker_without_costing_the_running_job_an_attempt(
    db: &JobsDb,
) {
    create_items(&db.store, 20).await;
    let runner = Arc::new(PageRunner::new(2, Duration::from_millis(50)));
    let rt = Runtime::start(&db.store, Arc::new(Shared(runner.clone())), vec![]);
    let job = enqueue(&db.store, push(Trigger::Api)).await.unwrap().job;
    wait_for(&db.store, job.id, WAIT, |j| j.progress.processed >= 4).await;
    // The run waits between pages: only the queue's own poll meets the failure.
    runner.paused.store(true, Ordering::SeqCst);
    while !runner.parked.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fail_the_queue_poll(&db.store).await;

    // The restarted worker runs the handed-back job again (and parks before its next page).
    let start = std::time::Instant::now();
    while runner.runs.load(Ordering::SeqCst) < 2 {
        assert!(start.elapsed() < WAIT, "the job was not run again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = db.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(again.status, JobStatus::Running);
    assert_eq!(
        again.attempts, 1,
        "the run its stopped worker dropped was not counted"
    );
    runner.paused.store(false, Ordering::SeqCst);

    let (done, _) = wait_for(&db.store, job.id, WAIT, |j| j.status.is_terminal()).await;
    rt.shut_down().await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:#?}");
    assert_eq!(done.attempts, 1);
    assert_eq!(
        runner.runs.load(Ordering::SeqCst),
        2,
        "resumed by the restarted worker"
    );
    assert_eq!(push_counts(&done).total, 20);
    assert_eq!(
        item_counts(&db.store).await,
        vec![1; 20],
        "every page processed exactly once"
    );
}

/// Not a test of its own: the worker process that the SIGKILL test starts and kills (this
/// test binary, run again with `child_worker_process --ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by the SIGKILL tests"]
async fn child_worker_process() {
    let Ok(url) = std::env::var("CRM_SYNC_TEST_CHILD_DB") else {
        return;
    };
    let store = Store::connect(&url).await.unwrap();
    let runner = PageRunner::new(2, Duration::from_millis(300)).arc();
    run_workers(store, runner, vec![], test_config(), std::future::pending())
        .await
        .unwrap();
}

fn spawn_child_worker(url: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "child_worker_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("CRM_SYNC_TEST_CHILD_DB", url)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn a_worker_killed_mid_job_is_resumed_without_losing_or_repeating_a_page(db: &JobsDb) {
    create_items(&db.store, 20).await;
    let job = enqueue(&db.store, push(Trigger::Api)).await.unwrap().job;
    let mut child = spawn_child_worker(&db.url);
    wait_for(&db.store, job.id, WAIT, |j| {
        j.status == JobStatus::Running && j.progress.processed >= 4
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let orphaned = db.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(
        orphaned.status,
        JobStatus::Running,
        "left running by the dead worker"
    );

    let runtime = Runtime::start(
        &db.store,
        PageRunner::new(2, Duration::from_millis(10)).arc(),
        vec![],
    );
    let (done, _) = wait_for(&db.store, job.id, WAIT, |j| j.status.is_terminal()).await;
    runtime.shut_down().await;
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.attempts, 2);
    assert_eq!(push_counts(&done).total, 20);
    assert_eq!(
        item_counts(&db.store).await,
        vec![1; 20],
        "every page processed exactly once"
    );
}

async fn tick_rows(store: &Store) -> Vec<(i64, String)> {
    const SQL: &str = "SELECT tick_at, outcome FROM schedule_ticks ORDER BY tick_at";
    if let Some(p) = store.pg_pool() {
        sqlx::query_as(SQL).fetch_all(p).await.unwrap()
    } else {
        sqlx::query_as(SQL)
            .fetch_all(store.sqlite_pool().unwrap())
            .await
            .unwrap()
    }
}

async fn a_tick_claimed_by_two_processes_enqueues_once(db: &JobsDb) {
    let sched = Arc::new(Schedule::new("0 */5 * * * *", "pull", None, None).unwrap());
    let tick = 1_900_000_000;
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (store, sched) = (db.store.clone(), sched.clone());
            tokio::spawn(async move { schedule::fire(&store, &sched, tick).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for r in racers {
        outcomes.push(r.await.unwrap());
    }
    let queued: Vec<_> = outcomes
        .iter()
        .filter(|o| matches!(o, Fired::Queued(_)))
        .collect();
    assert_eq!(queued.len(), 1, "{outcomes:?}");
    assert!(outcomes.contains(&Fired::ClaimedElsewhere), "{outcomes:?}");
    assert_eq!(
        tick_rows(&db.store).await,
        vec![(tick, "queued".to_owned())]
    );

    let jobs = db.store.list_jobs(None, 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].trigger, Trigger::Schedule);
    assert!(
        jobs[0].spec.incremental(),
        "scheduled pulls are incremental"
    );
}

async fn a_tick_while_the_direction_is_active_is_recorded_skipped(db: &JobsDb) {
    let active = enqueue(&db.store, push(Trigger::Api)).await.unwrap().job;
    let sched = Schedule::new("0 0 * * * *", "push", Some("upsert"), None).unwrap();
    let fired = schedule::fire(&db.store, &sched, 1_900_000_000)
        .await
        .unwrap();
    assert_eq!(fired, Fired::Skipped(active.id));
    assert_eq!(db.store.list_jobs(None, 10).await.unwrap().len(), 1);

    let views = schedule::describe(&db.store, &[sched]).await.unwrap();
    let last = views[0].last_tick.clone().unwrap();
    assert_eq!(last.outcome, "skipped");
    assert_eq!(last.job_id, Some(active.id.to_string()));
    assert!(views[0].next_run.is_some());
}

async fn two_schedulers_fire_each_tick_once(db: &JobsDb) {
    create_items(&db.store, 0).await;
    let every_second = || vec![Schedule::new("* * * * * *", "push", None, None).unwrap()];
    let a = Runtime::start(
        &db.store,
        PageRunner::new(2, Duration::ZERO).arc(),
        every_second(),
    );
    let b = Runtime::start(
        &db.store,
        PageRunner::new(2, Duration::ZERO).arc(),
        every_second(),
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    a.shut_down().await;
    b.shut_down().await;

    let ticks = tick_rows(&db.store).await;
    assert!(ticks.len() >= 2, "{ticks:?}");
    let mut at: Vec<_> = ticks.iter().map(|t| t.0).collect();
    at.dedup();
    assert_eq!(at.len(), ticks.len(), "one row per tick");
    let scheduled = db
        .store
        .list_jobs(None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.trigger == Trigger::Schedule)
        .count();
    let queued_ticks = ticks.iter().filter(|t| t.1 == "queued").count();
    assert_eq!(
        scheduled, queued_ticks,
        "each queued tick made exactly one job"
    );
    assert!(queued_ticks >= 1);
}
