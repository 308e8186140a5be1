//! Retention: deleting rows that only record the past once they are old enough — finished
//! jobs, webhook event ids past their dedupe window, schedule ticks, finished queue tasks in
//! apalis' own tables, spent OAuth states and ended operator sessions — and, whatever their age,
//! the working rows of jobs that ended before they could clear them.
//!
//! Only finished things go: a job that is queued, running or retrying, a queue task apalis may
//! still run (pending, running, or failed with attempts left), an OAuth state or session that
//! has not expired, the newest tick of each schedule (`GET /api/schedules` shows it) and a
//! webhook event younger than [`WEBHOOK_DEDUPE_WINDOW`] are never deleted, whatever the cutoff.
//!
//! Several `serve` / `worker` processes may prune at once. On PostgreSQL one round runs in one
//! transaction under a transaction-level advisory lock that the others try and skip (two
//! overlapping `DELETE`s could otherwise deadlock); SQLite serialises writers itself, and each
//! `DELETE` removes only what is still there, so a second round finds nothing to do.

use chrono::{DateTime, Duration, Utc};

use super::apalis::{PG_PRUNE_FINISHED_TASKS, SQLITE_PRUNE_FINISHED_TASKS};
use super::time::DbTime;
use super::{Store, StoreError, Tx, on_pool, on_tx};

/// HubSpot redelivers a webhook event for up to 24 hours: an event id younger than this must be
/// kept so that a redelivery is recognised, whatever `retention.webhook_events_days` says.
pub const WEBHOOK_DEDUPE_WINDOW: Duration = Duration::hours(24);

/// Key of the advisory lock one pruning round holds on PostgreSQL (`crm-sync` prune, in ASCII).
const PG_PRUNE_LOCK: i64 = 0x6372_6d5f_7072_756e;

/// Rows older than these points in time are pruned (each per kind of row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionCutoffs {
    /// Finished jobs (`sync_jobs`) that finished before this.
    pub jobs: DateTime<Utc>,
    /// Webhook event ids received before this (never later than the dedupe window allows).
    pub webhook_events: DateTime<Utc>,
    /// Schedule ticks recorded before this (the newest tick of each schedule stays).
    pub schedule_ticks: DateTime<Utc>,
    /// Finished apalis queue tasks done before this.
    pub queue_tasks: DateTime<Utc>,
    /// OAuth states that expired before this.
    pub oauth_states: DateTime<Utc>,
    /// Operator sessions that expired or ended before this.
    pub operator_sessions: DateTime<Utc>,
}

/// How many rows one pruning round deleted, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// `sync_jobs` rows.
    pub jobs: u64,
    /// `webhook_events` rows.
    pub webhook_events: u64,
    /// `schedule_ticks` rows.
    pub schedule_ticks: u64,
    /// apalis task rows.
    pub queue_tasks: u64,
    /// `oauth_states` rows.
    pub oauth_states: u64,
    /// `operator_sessions` rows.
    pub operator_sessions: u64,
    /// Working rows (`pull_seen`, `dry_run_notes`) of jobs no longer queued, running or
    /// retrying: a full pull clears its own when its sweep ends and a dry job when its plan is
    /// complete, so these are what a failed or cancelled job left.
    pub working_rows: u64,
}

impl Pruned {
    /// All rows deleted.
    pub fn total(&self) -> u64 {
        self.jobs
            + self.webhook_events
            + self.schedule_ticks
            + self.queue_tasks
            + self.oauth_states
            + self.operator_sessions
            + self.working_rows
    }
}

/// What a pruning round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneOutcome {
    /// This process pruned; the counts say what.
    Pruned(Pruned),
    /// Another process was pruning at that moment (PostgreSQL): nothing was done here.
    Busy,
}

const JOBS: &str = "DELETE FROM sync_jobs
     WHERE status IN ('succeeded', 'failed', 'cancelled')
       AND finished_at IS NOT NULL AND finished_at < $1";
const WEBHOOK_EVENTS: &str = "DELETE FROM webhook_events WHERE received_at < $1";
const SCHEDULE_TICKS: &str = "DELETE FROM schedule_ticks
     WHERE recorded_at < $1
       AND tick_at < (SELECT MAX(newest.tick_at) FROM schedule_ticks AS newest
                       WHERE newest.schedule_key = schedule_ticks.schedule_key)";
const OAUTH_STATES: &str = "DELETE FROM oauth_states WHERE expires_at < $1";
const OPERATOR_SESSIONS: &str =
    "DELETE FROM operator_sessions WHERE COALESCE(ended_at, expires_at) < $1";

/// Deletes the working rows of jobs that are no longer active: what a full pull has read
/// (`pull_seen`) and what a dry job has noted (`dry_run_notes`). Nothing in them is worth
/// keeping once the job cannot resume, and a job that can resume keeps them.
pub(super) const ENDED_JOBS_WORKING_ROWS: [&str; 2] = [
    "DELETE FROM pull_seen WHERE job_id NOT IN (
         SELECT id FROM sync_jobs WHERE status IN ('queued', 'running', 'retrying'))",
    "DELETE FROM dry_run_notes WHERE job_id NOT IN (
         SELECT id FROM sync_jobs WHERE status IN ('queued', 'running', 'retrying'))",
];

impl RetentionCutoffs {
    /// The webhook cutoff, moved back so that no event inside the dedupe window goes.
    fn webhook_events_cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.webhook_events.min(now - WEBHOOK_DEDUPE_WINDOW)
    }
}

impl Store {
    /// Deletes what `cutoffs` says is old enough (see the module documentation for what is
    /// never deleted). Safe to run from several processes at once.
    pub async fn prune_retained(
        &self,
        cutoffs: &RetentionCutoffs,
    ) -> Result<PruneOutcome, StoreError> {
        let mut cutoffs = *cutoffs;
        cutoffs.webhook_events = cutoffs.webhook_events_cutoff(Utc::now());
        on_pool!(self, pool =>
            postgres: prune_postgres(self, &cutoffs).await,
            sqlite: prune_sqlite(pool, &cutoffs).await.map(PruneOutcome::Pruned),
        )
    }
}

/// One round in one transaction under the pruning lock (see the module docs).
async fn prune_postgres(
    store: &Store,
    cutoffs: &RetentionCutoffs,
) -> Result<PruneOutcome, StoreError> {
    const LOCK: &str = "SELECT pg_try_advisory_xact_lock($1)";
    let mut tx = Tx::begin(store).await?;
    let locked: bool =
        on_tx!(&mut tx, c => sqlx::query_scalar(LOCK).bind(PG_PRUNE_LOCK).fetch_one(c).await?);
    if !locked {
        return Ok(PruneOutcome::Busy);
    }
    let mut run = async |sql: &'static str, before: DateTime<Utc>| {
        on_tx!(&mut tx, c => {
            sqlx::query(sql)
                .bind(DbTime(before))
                .execute(c)
                .await
                .map(|done| done.rows_affected())
        })
    };
    let mut pruned = Pruned {
        jobs: run(JOBS, cutoffs.jobs).await?,
        webhook_events: run(WEBHOOK_EVENTS, cutoffs.webhook_events).await?,
        schedule_ticks: run(SCHEDULE_TICKS, cutoffs.schedule_ticks).await?,
        queue_tasks: run(PG_PRUNE_FINISHED_TASKS, cutoffs.queue_tasks).await?,
        oauth_states: run(OAUTH_STATES, cutoffs.oauth_states).await?,
        operator_sessions: run(OPERATOR_SESSIONS, cutoffs.operator_sessions).await?,
        working_rows: 0,
    };
    for sql in ENDED_JOBS_WORKING_ROWS {
        pruned.working_rows +=
            on_tx!(&mut tx, c => sqlx::query(sql).execute(c).await?.rows_affected());
    }
    tx.commit().await?;
    Ok(PruneOutcome::Pruned(pruned))
}

/// One round of autocommit `DELETE`s (see the module docs).
async fn prune_sqlite(
    pool: &sqlx::SqlitePool,
    cutoffs: &RetentionCutoffs,
) -> Result<Pruned, StoreError> {
    let run = async |sql: &'static str, before: DateTime<Utc>| {
        sqlx::query(sql)
            .bind(DbTime(before))
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    };
    let queue_tasks = sqlx::query(SQLITE_PRUNE_FINISHED_TASKS)
        .bind(cutoffs.queue_tasks.timestamp())
        .execute(pool)
        .await?
        .rows_affected();
    let mut pruned = Pruned {
        jobs: run(JOBS, cutoffs.jobs).await?,
        webhook_events: run(WEBHOOK_EVENTS, cutoffs.webhook_events).await?,
        schedule_ticks: run(SCHEDULE_TICKS, cutoffs.schedule_ticks).await?,
        queue_tasks,
        oauth_states: run(OAUTH_STATES, cutoffs.oauth_states).await?,
        operator_sessions: run(OPERATOR_SESSIONS, cutoffs.operator_sessions).await?,
        working_rows: 0,
    };
    for sql in ENDED_JOBS_WORKING_ROWS {
        pruned.working_rows += sqlx::query(sql).execute(pool).await?.rows_affected();
    }
    Ok(pruned)
}
