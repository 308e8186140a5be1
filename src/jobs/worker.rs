//! The worker runtime: Apalis workers that run sync jobs, with the retry, resume and shutdown
//! rules, plus the schedulers, under one Apalis `Monitor`.
//!
//! How a delivery is handled ([`process`]):
//! 1. Claim the job under a fresh lease (only the job's current delivery may, and only while
//!    it is active). A finished job or a stale delivery is acknowledged and ignored; a job left
//!    `running` by a dead worker is claimed again and resumes from its checkpoint.
//! 2. Run the [`JobRunner`] on its own task (a panic fails the job instead of the worker).
//! 3. Settle: success → `succeeded`; [`RunError::Fatal`] or a transient error on the last
//!    attempt → `failed` with the reason (counts and errors kept); [`RunError::Transient`]
//!    otherwise → `retrying`, with a new task pushed to run after an exponential backoff;
//!    [`RunError::Interrupted`] → `queued` again with a new task (the run does not count as an
//!    attempt). The handler then returns `Ok`, so Apalis never re-runs a task by itself except
//!    when the database failed us mid-way (then Apalis' own re-fetch resumes the job).
//!
//! A handler Apalis drops mid-run (its worker stopped because a queue poll or heartbeat failed,
//! or the shutdown deadline passed) aborts the run and hands the job back in the background
//! without counting the attempt (`RunningJob`); the restarted worker waits for that.
//!
//! A worker killed with SIGKILL leaves its task `Running` in Apalis; once its heartbeat is
//! `heartbeat_interval × missed_heartbeats` old, any other worker's heartbeat re-enqueues it.

use crate::ids::{DeliveryId, JobId, LeaseId};
use crate::jobs::metrics;
use crate::jobs::model::{Job, JobStatus, Trigger};
use crate::jobs::queue::{self, QUEUE, QueueError, SyncTask};
use crate::jobs::runner::{JobRunner, Progress, RunError, StopCheck};
use crate::jobs::schedule::{self, Schedule};
use crate::store::jobs::{Tx, is_transient};
use crate::store::{Pool, Store, StoreError};
use apalis::prelude::{
    BackendExt, BoxDynError, Data, Event, Monitor, WorkerBuilder, WorkerContext,
};
use apalis_cron::{CronScheduler, Tick};
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use chrono::Utc;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use ulid::Ulid;

/// How jobs are retried after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Runs a job may start in all; a transient failure of the last one fails the job.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub base_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `attempt`-th run failed transiently (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20);
        self.base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }
}

/// Settings of the worker runtime.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `serve` or `worker`: the first part of worker names (`role-host-pid-n`).
    pub role: String,
    /// How often an idle SQLite worker looks for work (there is no notification on SQLite).
    pub sqlite_poll_interval: Duration,
    /// How often an idle PostgreSQL worker looks for delayed work (new work wakes it at once
    /// through LISTEN/NOTIFY).
    pub postgres_poll_interval: Duration,
    /// How often a worker proves it is alive.
    pub heartbeat_interval: Duration,
    /// Heartbeats a worker may miss before its tasks are handed to others.
    pub missed_heartbeats: usize,
    /// Job retries.
    pub retry: RetryPolicy,
    /// How long a shutdown waits for running jobs to reach a page boundary.
    pub shutdown_timeout: Duration,
    /// How often each process checks that every active job has a live task.
    pub reconcile_interval: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            role: "worker".to_owned(),
            sqlite_poll_interval: Duration::from_millis(200),
            postgres_poll_interval: Duration::from_secs(1),
            // Orphaned after 15 s; another worker's next heartbeat (≤ 5 s later) hands the task on.
            heartbeat_interval: Duration::from_secs(5),
            missed_heartbeats: 3,
            retry: RetryPolicy::default(),
            shutdown_timeout: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(30),
        }
    }
}

/// Errors that end the worker runtime.
#[derive(Debug, thiserror::Error)]
pub enum WorkerRuntimeError {
    /// A schedule in the configuration is invalid.
    #[error(transparent)]
    Schedule(#[from] schedule::ScheduleError),
    /// The Apalis monitor ended with an error.
    #[error("the job workers stopped: {0}")]
    Monitor(String),
}

/// What the delivery handler needs, shared by all its calls.
struct HandlerCtx {
    store: Store,
    runner: Arc<dyn JobRunner>,
    retry: RetryPolicy,
    hand_backs: HandBacks,
}

/// The hand-backs of dropped runs (see [`RunningJob`]) still under way in this process. A
/// restarted worker waits for them before it polls: otherwise its orphan recovery could deliver
/// the dead worker's task while the job still names it, and the job would be claimed again,
/// counting an attempt.
#[derive(Clone)]
struct HandBacks(Arc<tokio::sync::watch::Sender<usize>>);

impl HandBacks {
    fn new() -> Self {
        Self(Arc::new(tokio::sync::watch::channel(0).0))
    }

    fn begin(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    fn end(&self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Resolves once no hand-back is under way.
    async fn done(&self) {
        let mut pending = self.0.subscribe();
        // The sender lives in `self`: the wait cannot fail.
        let _ = pending.wait_for(|n| *n == 0).await;
    }
}

/// How a delivery was settled (stored by Apalis as the task's result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The job finished with this status.
    Finished(JobStatus),
    /// The job waits in `retrying`.
    Retrying,
    /// The job went back to `queued` (shutdown).
    Requeued,
    /// Another run holds the job now; nothing was written.
    Superseded,
    /// The delivery was stale or the job already finished; nothing was done.
    Ignored,
}

impl std::fmt::Display for Settled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Finished(s) => write!(f, "{s}"),
            Self::Retrying => f.write_str("retrying"),
            Self::Requeued => f.write_str("requeued"),
            Self::Superseded => f.write_str("superseded"),
            Self::Ignored => f.write_str("ignored"),
        }
    }
}

/// The Apalis handler: settles one delivery.
async fn handle(
    task: SyncTask,
    worker: WorkerContext,
    ctx: Data<Arc<HandlerCtx>>,
) -> Result<String, BoxDynError> {
    let stop_ctx = worker.clone();
    let stop: StopCheck = Arc::new(move || stop_ctx.is_shutting_down());
    let settled = deliver(
        &ctx.store,
        &ctx.runner,
        ctx.retry,
        Some(&ctx.hand_backs),
        &task,
        worker.name(),
        stop,
    )
    .await?;
    Ok(settled.to_string())
}

/// The run of a claimed job, owned by its delivery handler.
///
/// Apalis drops a worker's in-flight handlers when the worker stops under them: at the shutdown
/// deadline, and when a queue poll or heartbeat fails (SQLite's "database is locked" behind a
/// long write, a lost PostgreSQL connection), after which the monitor restarts the worker. In
/// a worker runtime the job's run is then aborted and the job handed back to the queue in the
/// background, like a run interrupted at a shutdown: it does not count as an attempt, so a
/// flaky queue cannot use up a job's attempts. The dead worker's task is stale from then on and is ignored when
/// orphan recovery delivers it again.
struct RunningJob {
    run: Option<tokio::task::JoinHandle<Result<(), RunError>>>,
    store: Store,
    job: JobId,
    lease: LeaseId,
    /// Where dropped runs are handed back; `None`: a dropped run is a crash.
    hand_backs: Option<HandBacks>,
}

impl RunningJob {
    /// How the run ended. Cancel-safe: until it returns, a dropped handler hands the job back.
    async fn outcome(&mut self) -> Result<(), RunError> {
        let Some(run) = self.run.as_mut() else {
            return Err(RunError::Interrupted);
        };
        let joined = run.await;
        self.run = None;
        match joined {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(RunError::fatal(format!(
                "the sync code panicked: {}",
                panic_message(e.into_panic())
            ))),
            Err(_) => Err(RunError::Interrupted),
        }
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        let Some(run) = self.run.take() else {
            return;
        };
        run.abort();
        let Some(hand_backs) = self.hand_backs.clone() else {
            return;
        };
        // No runtime left: the process is ending; orphan recovery takes the job over.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, job, lease) = (self.store.clone(), self.job, self.lease.clone());
        hand_backs.begin();
        runtime.spawn(async move {
            // The aborted run has stopped writing once it is joined.
            let _ = run.await;
            hand_back_dropped(&store, job, &lease).await;
            hand_backs.end();
        });
    }
}

/// How long [`hand_back_dropped`] keeps trying before it leaves the job to orphan recovery.
const DROPPED_HAND_BACK_PATIENCE: Duration = Duration::from_secs(150);

/// Hands back a job whose handler was dropped. Its worker stopped because the database failed
/// it, so this keeps trying for a while, on any error: what stopped the worker need not be an
/// error [`with_db_retry`] takes for transient (a queue table gone for a moment is a missing
/// relation). One loop around [`try_hand_back`], not around [`hand_back`], whose own retries
/// would multiply these; its quick first retries are this backoff's first steps. If the
/// database stays away longer, the job is left `running` and orphan recovery delivers it again
/// (counting the attempt, as after a crash).
async fn hand_back_dropped(store: &Store, job: JobId, lease: &LeaseId) {
    let give_up = tokio::time::Instant::now() + DROPPED_HAND_BACK_PATIENCE;
    let mut delay = Duration::from_millis(250);
    loop {
        match try_hand_back(store, job, lease, None).await {
            Ok(settled) => {
                tracing::warn!(%job, %settled, "the job's worker stopped under it; handed back without counting the attempt");
                return;
            }
            Err(error) if tokio::time::Instant::now() + delay < give_up => {
                tracing::warn!(%job, %error, "could not hand back the job of a stopped worker; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            Err(error) => {
                tracing::error!(%job, %error, "gave up handing back the job of a stopped worker; orphan recovery will deliver it again");
                return;
            }
        }
    }
}

/// Settles one delivery of a job (see the module docs). Errors only when the database failed
/// before the outcome could be recorded; the caller should let the delivery be retried.
///
/// Dropping the future mid-run is a crash, not a hand-back: the run is aborted and the job
/// left `running` for orphan recovery (tests simulate `kill -9` so). Only the worker runtime,
/// whose workers Apalis may restart under a run, hands the job back.
pub async fn process(
    store: &Store,
    runner: &Arc<dyn JobRunner>,
    retry: RetryPolicy,
    task: &SyncTask,
    worker_name: &str,
    stop: StopCheck,
) -> Result<Settled, QueueError> {
    deliver(store, runner, retry, None, task, worker_name, stop).await
}

/// [`process`], and within a worker runtime (`hand_backs`, which its restarted workers wait
/// for) a run dropped mid-way is handed back.
async fn deliver(
    store: &Store,
    runner: &Arc<dyn JobRunner>,
    retry: RetryPolicy,
    hand_backs: Option<&HandBacks>,
    task: &SyncTask,
    worker_name: &str,
    stop: StopCheck,
) -> Result<Settled, QueueError> {
    let lease = LeaseId::generate();
    let claimed =
        with_db_retry(|| store.claim_job(task.job_id, &task.delivery, &lease, worker_name)).await?;
    let Some(record) = claimed else {
        tracing::debug!(job = %task.job_id, delivery = %task.delivery, "stale or finished; ignored");
        return Ok(Settled::Ignored);
    };
    let job = record.job.clone();
    // Counted from the claim, which is what raises `attempts`: every attempt is a run started.
    let tracker = metrics::RunTracker::start(job.direction());
    if job.attempts > retry.max_attempts {
        let reason = format!(
            "gave up after {} attempts: the worker running it stopped without finishing",
            retry.max_attempts
        );
        let settled = finish(store, job.id, &lease, JobStatus::Failed, Some(&reason)).await?;
        tracker.settled(settled);
        return Ok(settled);
    }
    if job.attempts > 1 && record.checkpoint.is_some() {
        tracing::info!(job = %job.id, attempt = job.attempts, "resuming from checkpoint");
    }

    let _running = metrics::running(job.direction());
    let progress = Arc::new(Progress::new(store.clone(), &record, lease.clone(), stop));
    let mut run = {
        let runner = runner.clone();
        let progress = progress.clone();
        let running = job.clone();
        RunningJob {
            run: Some(tokio::spawn(async move {
                runner.run(&running, &progress).await
            })),
            store: store.clone(),
            job: job.id,
            lease: lease.clone(),
            hand_backs: hand_backs.cloned(),
        }
    };
    let outcome = run.outcome().await;

    // Settled on a task of its own, so that a handler dropped now (its worker stopped) does not
    // leave the outcome unrecorded.
    let settled = {
        let store = store.clone();
        tokio::spawn(async move { settle(&store, &job, &lease, retry, outcome).await })
            .await
            .map_err(|e| QueueError::Settle(e.to_string()))??
    };
    tracker.settled(settled);
    Ok(settled)
}

/// Records how a run ended.
async fn settle(
    store: &Store,
    job: &Job,
    lease: &LeaseId,
    retry: RetryPolicy,
    outcome: Result<(), RunError>,
) -> Result<Settled, QueueError> {
    match outcome {
        Ok(()) if job.trigger == Trigger::Webhook => finish_drain(store, job.id, lease).await,
        Ok(()) => finish(store, job.id, lease, JobStatus::Succeeded, None).await,
        Err(RunError::Fatal(reason)) => {
            finish(
                store,
                job.id,
                lease,
                JobStatus::Failed,
                Some(reason.message()),
            )
            .await
        }
        Err(RunError::Transient(reason)) if job.attempts >= retry.max_attempts => {
            let reason = format!("{reason} (gave up after {} attempts)", job.attempts);
            finish(store, job.id, lease, JobStatus::Failed, Some(&reason)).await
        }
        Err(RunError::Transient(reason)) => {
            let delay = retry.backoff(job.attempts);
            tracing::warn!(job = %job.id, attempt = job.attempts, ?delay, %reason, "retrying");
            hand_back(store, job.id, lease, Some((reason.message(), delay))).await
        }
        Err(RunError::Interrupted) => hand_back(store, job.id, lease, None).await,
        Err(RunError::Superseded) => Ok(Settled::Superseded),
    }
}

/// Writes a terminal status under the lease.
async fn finish(
    store: &Store,
    id: JobId,
    lease: &LeaseId,
    status: JobStatus,
    reason: Option<&str>,
) -> Result<Settled, QueueError> {
    let done = with_db_retry(|| store.finish_job(id, lease, status, reason)).await?;
    Ok(match done {
        Some(_) => Settled::Finished(status),
        None => Settled::Superseded,
    })
}

/// Ends a webhook pull that succeeded and, in the same transaction, queues its successor when
/// ids are still pending (a bounded drain stopped early, or ids arrived after its last look).
/// A delivery that records ids after this commits finds no active webhook pull and queues one;
/// one that recorded them before is seen here. So no pending id is left without a drain.
async fn finish_drain(store: &Store, id: JobId, lease: &LeaseId) -> Result<Settled, QueueError> {
    with_db_retry(|| async {
        let mut tx = Tx::begin(store).await?;
        if tx
            .finish_job(id, lease, JobStatus::Succeeded, None)
            .await?
            .is_none()
        {
            tx.rollback().await?;
            return Ok(Settled::Superseded);
        }
        if tx.has_pending_pulls().await? {
            let next = queue::enqueue_webhook_pull_in(&mut tx).await?;
            if let Some(next) = next.filter(|n| n.created) {
                tracing::debug!(job = %id, next = %next.job.id, "webhook pull hands over to its successor");
            }
        }
        tx.commit().await?;
        Ok(Settled::Finished(JobStatus::Succeeded))
    })
    .await
}

/// Gives the job back to the queue with a new delivery task: `retrying` after a delay
/// (`Some((reason, delay))`), or `queued` at once (`None`, a shutdown).
async fn hand_back(
    store: &Store,
    id: JobId,
    lease: &LeaseId,
    retry: Option<(&str, Duration)>,
) -> Result<Settled, QueueError> {
    with_db_retry(|| try_hand_back(store, id, lease, retry)).await
}

/// [`hand_back`] once, in one transaction.
async fn try_hand_back(
    store: &Store,
    id: JobId,
    lease: &LeaseId,
    retry: Option<(&str, Duration)>,
) -> Result<Settled, QueueError> {
    let mut tx = Tx::begin(store).await?;
    let task = Ulid::generate();
    let delivery = DeliveryId::from(task);
    let held = match retry {
        Some((reason, delay)) => {
            let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            tx.mark_job_retrying(id, lease, reason, at, &delivery)
                .await?
        }
        None => tx.requeue_job(id, lease, &delivery).await?,
    };
    if !held {
        tx.rollback().await?;
        return Ok(Settled::Superseded);
    }
    queue::push_delivery(&mut tx, id, task, retry.map(|(_, d)| d)).await?;
    tx.commit().await?;
    Ok(match retry {
        Some(_) => Settled::Retrying,
        None => Settled::Requeued,
    })
}

/// Retries a database step a few times on transient errors (a blip should not cost a run).
async fn with_db_retry<T, E, F, Fut>(mut step: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: TransientError,
{
    let mut delay = Duration::from_millis(250);
    for _ in 0..4 {
        match step().await {
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "database step failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    step().await
}

/// An error that may pass by itself.
trait TransientError: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

impl TransientError for StoreError {
    fn is_transient(&self) -> bool {
        is_transient(self)
    }
}

impl TransientError for QueueError {
    fn is_transient(&self) -> bool {
        QueueError::is_transient(self)
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// Runs one job here and now, without Apalis: claims it (with its current delivery), runs it
/// and settles it exactly as a worker would. For tests of runners, and for tools.
pub async fn run_job_here(
    store: &Store,
    runner: &Arc<dyn JobRunner>,
    retry: RetryPolicy,
    id: JobId,
) -> Result<Settled, QueueError> {
    let Some(record) = store.get_job_record(id).await? else {
        return Ok(Settled::Ignored);
    };
    let Some(delivery) = record.delivery else {
        return Ok(Settled::Ignored);
    };
    let task = SyncTask {
        job_id: id,
        delivery,
    };
    process(
        store,
        runner,
        retry,
        &task,
        &worker_name("inline"),
        Arc::new(|| false),
    )
    .await
}

/// A worker name unique to this process and call: `role-host-pid-n`. Apalis keys orphan
/// recovery on the name, so two live workers must never share one.
pub fn worker_name(role: &str) -> String {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{role}-{}-{}-{n}", host_name(), std::process::id())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The wait before a crashed worker (usually: the database went away) starts again.
fn restart_delay(restarts: usize) -> Duration {
    Duration::from_secs(u64::try_from(restarts.min(30)).unwrap_or(30))
}

fn pg_config(config: &WorkerConfig) -> apalis_postgres::Config {
    apalis_postgres::Config::default()
        .queue(QUEUE)
        .batch_size(1)
        .heartbeat_interval(config.heartbeat_interval)
        .missed_heartbeats(config.missed_heartbeats)
}

fn sqlite_config(config: &WorkerConfig) -> apalis_sqlite::Config {
    apalis_sqlite::Config::default()
        .queue(QUEUE)
        .batch_size(1)
        .heartbeat_interval(config.heartbeat_interval)
        .missed_heartbeats(config.missed_heartbeats)
}

/// Registers the job worker on `$monitor` over the backend `$backend` makes (anew at each
/// restart, which first waits [`restart_delay`] and for the hand-backs of the runs the stopped
/// worker dropped). A macro rather than a function: the two
/// storages' backend types differ, and Apalis' `Monitor::register` bounds would have to be
/// spelled out for each.
macro_rules! register_job_worker {
    ($monitor:expr, $ctx:expr, $base:expr, $backend:expr) => {{
        let (ctx, base, backend) = ($ctx.clone(), $base.clone(), $backend);
        $monitor.register(move |restarts| {
            let delay = restart_delay(restarts);
            let hand_backs = ctx.hand_backs.clone();
            let backend = backend().before_start(move |_| {
                let hand_backs = hand_backs.clone();
                async move {
                    tokio::time::sleep(delay).await;
                    hand_backs.done().await;
                    Ok(())
                }
            });
            WorkerBuilder::new(format!("{base}-r{restarts}"))
                .backend(backend)
                .data(ctx.clone())
                .build(handle)
        })
    }};
}

/// Runs the job workers and the schedulers of this process until `shutdown` resolves, then
/// lets running jobs stop at a page boundary (at most `shutdown_timeout`).
///
/// This is what `crm-sync worker` runs, and what `crm-sync serve` runs next to the API.
pub async fn run_workers<S>(
    store: Store,
    runner: Arc<dyn JobRunner>,
    schedules: Vec<Schedule>,
    config: WorkerConfig,
    shutdown: S,
) -> Result<(), WorkerRuntimeError>
where
    S: Future<Output = ()> + Send + 'static,
{
    let ctx = Arc::new(HandlerCtx {
        store: store.clone(),
        runner,
        retry: config.retry,
        hand_backs: HandBacks::new(),
    });
    let base = worker_name(&config.role);
    let mut monitor = Monitor::new()
        .should_restart(|worker, error| {
            tracing::error!(worker = worker.name(), %error, "job worker stopped; restarting");
            !worker.is_shutting_down()
        })
        .on_event(|worker, event| {
            if let Event::Error(e) = event {
                tracing::error!(worker = worker.name(), error = %e, "job handler error");
            }
        })
        .shutdown_timeout(config.shutdown_timeout);

    match store.pool() {
        Pool::Postgres(pool) => {
            let storage = PostgresStorage::<SyncTask>::new(pool).with_config(pg_config(&config));
            let poll = config.postgres_poll_interval;
            monitor = register_job_worker!(monitor, ctx, base, move || storage
                .clone()
                .with_pubsub()
                .poll_with_interval(poll));
        }
        Pool::Sqlite(pool) => {
            let storage = SqliteStorage::<SyncTask>::new(pool).with_config(sqlite_config(&config));
            let poll = config.sqlite_poll_interval;
            monitor = register_job_worker!(monitor, ctx, base, move || storage
                .clone()
                .poll_with_interval(poll));
        }
    }

    for (i, sched) in schedules.into_iter().enumerate() {
        let sched = Arc::new(sched);
        let tick_ctx = Arc::new(schedule::TickCtx {
            store: store.clone(),
            schedule: sched.clone(),
        });
        let name = format!("{base}-cron{i}");
        monitor = monitor.register(move |restarts| {
            WorkerBuilder::new(format!("{name}-r{restarts}"))
                .backend(CronScheduler::new(sched.cron().clone()))
                .data(tick_ctx.clone())
                .build(on_tick)
        });
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reconciler = tokio::spawn(reconcile_loop(store, config.reconcile_interval, stop_rx));
    let result = monitor
        .run_with_signal(async move {
            shutdown.await;
            tracing::info!("shutting down: running jobs stop at their next page");
            let _ = stop_tx.send(true);
            Ok(())
        })
        .await;
    reconciler.abort();
    result.map_err(|e| WorkerRuntimeError::Monitor(e.to_string()))
}

/// The cron handler: one tick of one schedule.
async fn on_tick(tick: Tick, ctx: Data<Arc<schedule::TickCtx>>) -> Result<String, BoxDynError> {
    let at = i64::try_from(tick.get_timestamp()).unwrap_or(i64::MAX);
    let outcome = schedule::fire(&ctx.store, &ctx.schedule, at).await?;
    Ok(format!("{outcome:?}"))
}

/// Re-delivers jobs that lost their task, at start and then every `every`.
async fn reconcile_loop(
    store: Store,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = queue::reconcile(&store).await {
            tracing::warn!(error = %e, "could not check jobs for lost tasks");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}
