//! Sync job rows (`sync_jobs`) and schedule ticks (`schedule_ticks`) on either backend.
//!
//! The SQL is written once: both backends accept `$N` parameters, `RETURNING` and
//! `ON CONFLICT DO NOTHING`, and every time is bound from Rust (`DbTime`), so one text serves
//! PostgreSQL and SQLite (see the rule in `store`).
//!
//! Rules the queue relies on:
//! - [`Tx::insert_job`] enforces "one active job per slot" in the database, a slot being an
//!   object, a direction and whether the job is a dry run: it inserts only when no job of that
//!   slot is active, and the partial unique index `sync_jobs_one_active_per_slot` turns a
//!   concurrent second insert into a no-op.
//! - A run holds the job under a `lease` ([`Store::claim_job`]); progress and final statuses are written
//!   only while the lease matches, so a run that was presumed dead cannot overwrite its successor.
//! - A job is carried by exactly one Apalis task at a time, named in `delivery`; a task whose id
//!   is not the job's `delivery` is stale.

/// Kept at the path its callers have always used.
pub use super::Tx;
use super::time::DbTime;
use super::{Store, StoreError, on_pool, on_tx};
use crate::ids::{DeliveryId, JobId, LeaseId, PortalId};
use crate::model::{
    Counts, Direction, Job, JobAction, JobProgress, JobSpec, JobStatus, Plan, RecordError,
    SyncObject, Trigger,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

/// Whether a store error may pass by itself (connection lost, pool timeout, lock contention),
/// as opposed to one that will happen again on retry.
pub fn is_transient(e: &StoreError) -> bool {
    match e {
        StoreError::Query(e) | StoreError::Unreachable { source: e, .. } => {
            is_transient_db_error(e)
        }
        _ => false,
    }
}

/// Whether a database error may pass by itself: I/O, pool exhaustion, a closed pool, SQLite
/// "busy/locked", or a PostgreSQL serialization failure / deadlock / admin shutdown.
pub fn is_transient_db_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLite: 5 BUSY, 6 LOCKED and their extended codes; PostgreSQL: class 08
            // (connection), 40001/40P01 (serialization, deadlock), 57P0x (shutdown), 53 (resources).
            matches!(
                code.as_ref(),
                "5" | "6" | "261" | "517" | "262" | "40001" | "40P01"
            ) || code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
        }
        _ => false,
    }
}

/// A `sync_jobs` row as stored, before it is checked into a [`Job`].
#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    id: String,
    object: String,
    direction: String,
    mode: String,
    incremental: bool,
    dry_run: bool,
    triggered_by: String,
    status: String,
    exclusive: bool,
    attempts: i32,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    counts: Json<Value>,
    errors: Json<Value>,
    checkpoint: Option<Json<Value>>,
    processed: i64,
    total: Option<i64>,
    last_error: Option<String>,
    next_attempt_at: Option<DateTime<Utc>>,
    delivery: Option<DeliveryId>,
    lease: Option<LeaseId>,
    worker: Option<String>,
    portal_id: Option<i64>,
    plan: Option<Json<Value>>,
}

/// The columns [`JobRow`] reads (the table has more, for other uses).
pub(super) const COLUMNS: &str = "id, object, direction, mode, incremental, dry_run, triggered_by, \
     status, exclusive, \
     attempts, created_at, started_at, finished_at, counts, errors, checkpoint, processed, total, \
     last_error, next_attempt_at, delivery, lease, worker, portal_id, plan";

/// A job with the bookkeeping only workers need.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// The job as clients see it.
    pub job: Job,
    /// Where a resumed run continues (`None`: from the start).
    pub checkpoint: Option<Value>,
    /// The Apalis task that currently carries the job.
    pub delivery: Option<DeliveryId>,
    /// The run holding the job, while one does.
    pub lease: Option<LeaseId>,
    /// The worker that ran it last.
    pub worker: Option<String>,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;
    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        let id = r.id.clone();
        let corrupt = |what: String| StoreError::InvalidData(format!("sync job {id}: {what}"));
        let job_id: JobId = r.id.parse().map_err(|e| corrupt(format!("id: {e}")))?;
        let direction: Direction = r.direction.parse().map_err(|e| corrupt(format!("{e}")))?;
        let object: SyncObject = r.object.parse().map_err(|e| corrupt(format!("{e}")))?;
        // Built as stored, without the checks of a request: a stored job is what it is.
        let spec = JobSpec {
            object,
            action: JobAction::new(direction, Some(&r.mode), r.incremental)
                .map_err(|e| corrupt(e.to_string()))?,
            dry_run: r.dry_run,
        };
        let counts = Counts::from_json(direction, r.counts.0)
            .map_err(|e| corrupt(format!("counts: {e}")))?;
        let errors: Vec<RecordError> =
            serde_json::from_value(r.errors.0).map_err(|e| corrupt(format!("errors: {e}")))?;
        let trigger: Trigger = r
            .triggered_by
            .parse()
            .map_err(|e| corrupt(format!("{e}")))?;
        let status: JobStatus = r.status.parse().map_err(|e| corrupt(format!("{e}")))?;
        let plan = r
            .plan
            .map(|p| serde_json::from_value(p.0))
            .transpose()
            .map_err(|e| corrupt(format!("plan: {e}")))?;
        let job = Job {
            id: job_id,
            spec,
            trigger,
            status,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            counts,
            errors,
            progress: JobProgress {
                processed: u64::try_from(r.processed).unwrap_or(0),
                total: r.total.and_then(|t| u64::try_from(t).ok()),
            },
            error: r.last_error,
            next_attempt_at: r.next_attempt_at,
            forced: !r.exclusive,
            portal_id: r.portal_id.map(PortalId),
            plan,
        };
        Ok(JobRecord {
            job,
            checkpoint: r.checkpoint.map(|c| c.0).filter(|c| !c.is_null()),
            delivery: r.delivery,
            lease: r.lease,
            worker: r.worker,
        })
    }
}

pub(super) fn record(row: JobRow) -> Result<JobRecord, StoreError> {
    JobRecord::try_from(row)
}

fn record_opt(row: Option<JobRow>) -> Result<Option<JobRecord>, StoreError> {
    row.map(record).transpose()
}

/// What to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The id; also the first delivery's Apalis task id.
    pub id: JobId,
    /// What the job does.
    pub spec: JobSpec,
    /// What started it.
    pub trigger: Trigger,
    /// Insert even while a job of this slot is active.
    pub force: bool,
    /// The schedule that fired it, for trigger `schedule`.
    pub schedule_key: Option<String>,
}

/// A run's progress, written as one unit.
#[derive(Debug, Clone)]
pub struct Checkpoint<'a> {
    /// Counts so far (over the whole job, not this page).
    pub counts: &'a Counts,
    /// Kept record errors (already capped).
    pub errors: &'a [RecordError],
    /// Where a resumed run continues.
    pub checkpoint: Option<&'a Value>,
    /// Records handled so far.
    pub processed: u64,
    /// Records in all, when known.
    pub total: Option<u64>,
    /// A dry run's plan so far (`None`: a real job, whose plan stays empty).
    pub plan: Option<&'a Plan>,
}

/// The outcome of a schedule tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    /// A job was enqueued.
    Queued,
    /// A job of the direction was still active; nothing was enqueued.
    Skipped,
}

impl TickOutcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Skipped => "skipped",
        }
    }
}

/// A recorded schedule tick.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TickRecord {
    /// The tick's time.
    #[serde(with = "crate::model::rfc3339")]
    pub at: DateTime<Utc>,
    /// `queued` or `skipped` (`claimed` while its transaction is open).
    pub outcome: String,
    /// The job enqueued, or the active job that made the tick skip.
    pub job_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TickRow {
    tick_at: i64,
    outcome: String,
    job_id: Option<String>,
}

/// The active job of the slot object `$1`, direction `$2`, dry run `$3`: the slot holder
/// (exclusive) first, then the oldest. Webhook pulls are not among them: they drain
/// `webhook_pulls` beside the user's jobs and never stand in for a requested or scheduled one.
fn active_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM sync_jobs WHERE object = $1 AND direction = $2 AND dry_run = $3 \
         AND triggered_by <> 'webhook' AND status IN ('queued', 'running', 'retrying') \
         ORDER BY exclusive DESC, id LIMIT 1"
    )
}

/// The active webhook pull (at most one: index `sync_jobs_one_active_webhook_pull`).
fn active_webhook_pull_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM sync_jobs WHERE triggered_by = 'webhook' \
         AND status IN ('queued', 'running', 'retrying') LIMIT 1"
    )
}

/// What a guarded `UPDATE` checks the row still holds.
enum Guard<'a> {
    /// The run's lease.
    Lease(&'a LeaseId),
    /// The task that carries the job.
    Delivery(&'a DeliveryId),
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Tx {
    /// Inserts the job as `queued` unless a job of its slot (object, direction, dry run) is
    /// active (and `force` is off). Returns the inserted job, or `None` when the slot was taken
    /// (possibly by a concurrent insert that this one waited for). Run it as the first
    /// statement of the transaction.
    ///
    /// Any active job of the slot counts, a forced one too, except webhook pulls: they
    /// never make a requested or scheduled job wait. A webhook pull is inserted only when no
    /// other is active (index `sync_jobs_one_active_webhook_pull`; `None` otherwise).
    pub async fn insert_job(&mut self, new: &NewJob) -> Result<Option<JobRecord>, StoreError> {
        // RETURNING the shared column list, so the row reads like every other.
        const INSERT: &str = "INSERT INTO sync_jobs (id, direction, mode, incremental, triggered_by, \
             status, exclusive, attempts, created_at, updated_at, counts, errors, processed, \
             delivery, schedule_key, object, dry_run) \
             SELECT $1, $2, $3, $4, $5, 'queued', NOT $9, 0, $6, $6, $7, $8, 0, $1, $10, $11, $12 \
             WHERE $9 OR NOT EXISTS (SELECT 1 FROM sync_jobs WHERE object = $11 \
                 AND direction = $2 AND dry_run = $12 \
                 AND triggered_by <> 'webhook' AND status IN ('queued', 'running', 'retrying')) \
             ON CONFLICT DO NOTHING \
             RETURNING ";
        let counts = serde_json::to_value(new.spec.empty_counts())
            .map_err(|e| StoreError::InvalidData(e.to_string()))?;
        let row: Option<JobRow> = on_tx!(self, c => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!("{INSERT}{COLUMNS}")))
                .bind(new.id.to_string())
                .bind(new.spec.direction().as_str())
                .bind(new.spec.mode_str())
                .bind(new.spec.incremental())
                .bind(new.trigger.as_str())
                .bind(DbTime(Utc::now()))
                .bind(Json(&counts))
                .bind(Json(Value::Array(vec![])))
                .bind(new.force)
                .bind(new.schedule_key.as_deref())
                .bind(new.spec.object.as_str())
                .bind(new.spec.dry_run)
                .fetch_optional(c)
                .await?
        });
        record_opt(row)
    }

    /// The active job of the slot `spec` belongs to (its object, direction and dry run; mode
    /// and `incremental` do not matter): the slot holder first, then the oldest.
    pub async fn active_job(&mut self, spec: &JobSpec) -> Result<Option<JobRecord>, StoreError> {
        let row: Option<JobRow> = on_tx!(self, c => {
            sqlx::query_as(sqlx::AssertSqlSafe(active_sql()))
                .bind(spec.object.as_str())
                .bind(spec.direction().as_str())
                .bind(spec.dry_run)
                .fetch_optional(c)
                .await?
        });
        record_opt(row)
    }

    /// The active webhook pull, if any.
    pub async fn active_webhook_pull(&mut self) -> Result<Option<JobRecord>, StoreError> {
        let row: Option<JobRow> = on_tx!(self, c => {
            sqlx::query_as(sqlx::AssertSqlSafe(active_webhook_pull_sql()))
                .fetch_optional(c)
                .await?
        });
        record_opt(row)
    }

    /// Ends a run with a terminal status (see [`Store::finish_job`]); in a transaction of the
    /// caller's when a finishing webhook pull queues its successor with it.
    pub async fn finish_job(
        &mut self,
        id: JobId,
        lease: &LeaseId,
        status: JobStatus,
        error: Option<&str>,
    ) -> Result<Option<Job>, StoreError> {
        let sql = format!(
            "UPDATE sync_jobs SET status = $3, last_error = $4, finished_at = $5, updated_at = $5, \
             lease = NULL, next_attempt_at = NULL \
             WHERE id = $1 AND lease = $2 AND status = 'running' RETURNING {COLUMNS}"
        );
        let row: Option<JobRow> = on_tx!(self, c => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id.to_string())
                .bind(lease)
                .bind(status.as_str())
                .bind(error)
                .bind(DbTime(Utc::now()))
                .fetch_optional(c)
                .await?
        });
        Ok(record_opt(row)?.map(|r| r.job))
    }

    /// Saves progress under the run's lease. `false`: the lease is gone (the job was taken
    /// over, cancelled or finished); the caller must roll back and stop.
    pub async fn save_job_progress(
        &mut self,
        id: JobId,
        lease: &LeaseId,
        cp: &Checkpoint<'_>,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE sync_jobs SET counts = $3, errors = $4, checkpoint = $5, \
             processed = $6, total = $7, updated_at = $8, plan = COALESCE($9, plan) \
             WHERE id = $1 AND lease = $2 AND status = 'running'";
        let counts =
            serde_json::to_value(cp.counts).map_err(|e| StoreError::InvalidData(e.to_string()))?;
        let errors =
            serde_json::to_value(cp.errors).map_err(|e| StoreError::InvalidData(e.to_string()))?;
        let plan = cp
            .plan
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| StoreError::InvalidData(e.to_string()))?;
        let n = on_tx!(self, c => {
            sqlx::query(SQL)
                .bind(id.to_string())
                .bind(lease)
                .bind(Json(&counts))
                .bind(Json(&errors))
                .bind(cp.checkpoint.map(Json))
                .bind(to_i64(cp.processed))
                .bind(cp.total.map(to_i64))
                .bind(DbTime(Utc::now()))
                .bind(plan.as_ref().map(Json))
                .execute(c)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Ends a run with a transient failure: the job waits in `retrying` until
    /// `next_attempt_at`, to be carried by the new task `delivery` (push that task in this
    /// transaction). `false`: the lease is gone.
    pub async fn mark_job_retrying(
        &mut self,
        id: JobId,
        lease: &LeaseId,
        reason: &str,
        next_attempt_at: DateTime<Utc>,
        delivery: &DeliveryId,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE sync_jobs SET status = 'retrying', last_error = $3, \
             next_attempt_at = $4, delivery = $5, lease = NULL, updated_at = $6 \
             WHERE id = $1 AND lease = $2 AND status = 'running'";
        let n = on_tx!(self, c => {
            sqlx::query(SQL)
                .bind(id.to_string())
                .bind(lease)
                .bind(reason)
                .bind(DbTime(next_attempt_at))
                .bind(delivery)
                .bind(DbTime(Utc::now()))
                .execute(c)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Hands an interrupted run back to the queue (graceful shutdown at a page boundary): the
    /// job is `queued` again for the new task `delivery` (push it in this transaction), and the
    /// run does not count as an attempt. `false`: the lease is gone.
    pub async fn requeue_job(
        &mut self,
        id: JobId,
        lease: &LeaseId,
        delivery: &DeliveryId,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE sync_jobs SET status = 'queued', attempts = attempts - 1, \
             delivery = $3, lease = NULL, updated_at = $4 \
             WHERE id = $1 AND lease = $2 AND status = 'running'";
        self.update_job_guarded(SQL, id, Guard::Lease(lease), delivery)
            .await
    }

    /// Points an active job at a new task `delivery` when its current one can no longer
    /// deliver it (see the queue's reconciliation). Conditional on the old delivery, so it is
    /// race-safe.
    pub async fn redeliver_job(
        &mut self,
        id: JobId,
        old_delivery: &DeliveryId,
        new_delivery: &DeliveryId,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE sync_jobs SET delivery = $3, updated_at = $4 \
             WHERE id = $1 AND delivery = $2 AND status IN ('queued', 'running', 'retrying')";
        self.update_job_guarded(SQL, id, Guard::Delivery(old_delivery), new_delivery)
            .await
    }

    /// Runs a guarded single-job `UPDATE` whose parameters are the job id, a guard (`$2`: the
    /// lease or delivery the caller holds), the new delivery (`$3`) and the time (`$4`); `true`
    /// when the guard still held and the row changed.
    async fn update_job_guarded(
        &mut self,
        sql: &'static str,
        id: JobId,
        guard: Guard<'_>,
        delivery: &DeliveryId,
    ) -> Result<bool, StoreError> {
        let guard = match guard {
            Guard::Lease(lease) => lease.0.as_str(),
            Guard::Delivery(delivery) => delivery.0.as_str(),
        };
        let n = on_tx!(self, c => {
            sqlx::query(sql)
                .bind(id.to_string())
                .bind(guard)
                .bind(delivery)
                .bind(DbTime(Utc::now()))
                .execute(c)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Claims a schedule tick: `true` for the one process that inserted it first (and must act
    /// on it in this transaction), `false` for every other. Run it as the first statement.
    pub async fn claim_schedule_tick(
        &mut self,
        key: &str,
        tick_at: i64,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "INSERT INTO schedule_ticks (schedule_key, tick_at, outcome, recorded_at) \
             VALUES ($1, $2, 'claimed', $3) ON CONFLICT DO NOTHING";
        let n = on_tx!(self, c => {
            sqlx::query(SQL)
                .bind(key)
                .bind(tick_at)
                .bind(DbTime(Utc::now()))
                .execute(c)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Records what a claimed tick did.
    pub async fn set_schedule_tick_outcome(
        &mut self,
        key: &str,
        tick_at: i64,
        outcome: TickOutcome,
        job_id: JobId,
    ) -> Result<(), StoreError> {
        const SQL: &str = "UPDATE schedule_ticks SET outcome = $3, job_id = $4 \
             WHERE schedule_key = $1 AND tick_at = $2";
        on_tx!(self, c => {
            sqlx::query(SQL)
                .bind(key)
                .bind(tick_at)
                .bind(outcome.as_str())
                .bind(job_id.to_string())
                .execute(c)
                .await?
                .rows_affected()
        });
        Ok(())
    }
}

impl Store {
    /// One job, or `None` when there is no such id.
    pub async fn get_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self.get_job_record(id).await?.map(|r| r.job))
    }

    /// One job with its bookkeeping.
    pub async fn get_job_record(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM sync_jobs WHERE id = $1");
        let row: Option<JobRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        });
        record_opt(row)
    }

    /// Recent jobs, newest first, optionally only those of one status.
    pub async fn list_jobs(
        &self,
        status: Option<JobStatus>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sync_jobs WHERE ($1 IS NULL OR status = $1) \
             ORDER BY id DESC LIMIT $2"
        );
        let rows: Vec<JobRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(status.map(JobStatus::as_str))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(|r| record(r).map(|r| r.job)).collect()
    }

    /// The active job of the slot `spec` belongs to (see [`Tx::active_job`]).
    pub async fn active_job(&self, spec: &JobSpec) -> Result<Option<Job>, StoreError> {
        let row: Option<JobRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(active_sql()))
                .bind(spec.object.as_str())
                .bind(spec.direction().as_str())
                .bind(spec.dry_run)
                .fetch_optional(pool)
                .await?
        });
        Ok(record_opt(row)?.map(|r| r.job))
    }

    /// Active jobs with their bookkeeping, oldest first.
    pub async fn active_job_records(&self) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sync_jobs \
             WHERE status IN ('queued', 'running', 'retrying') ORDER BY id"
        );
        let rows: Vec<JobRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?
        });
        rows.into_iter().map(record).collect()
    }

    /// Starts a run: the job becomes `running` under `lease`, `attempts` rises by one and
    /// `started_at` is set on the first run. Only the job's current `delivery` may claim it,
    /// and only while it is active; a job left `running` by a dead worker is claimed again (its
    /// checkpoint says where to resume). `None`: a stale delivery, or a finished job.
    pub async fn claim_job(
        &self,
        id: JobId,
        delivery: &DeliveryId,
        lease: &LeaseId,
        worker: &str,
    ) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!(
            "UPDATE sync_jobs SET status = 'running', attempts = attempts + 1, \
             started_at = COALESCE(started_at, $3), updated_at = $3, lease = $4, worker = $5, \
             next_attempt_at = NULL \
             WHERE id = $1 AND delivery = $2 AND status IN ('queued', 'running', 'retrying') \
             RETURNING {COLUMNS}"
        );
        let row: Option<JobRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id.to_string())
                .bind(delivery)
                .bind(DbTime(Utc::now()))
                .bind(lease)
                .bind(worker)
                .fetch_optional(pool)
                .await?
        });
        record_opt(row)
    }

    /// Records the HubSpot account a run syncs with, under its lease. `false`: the lease is
    /// gone.
    pub async fn set_job_portal(
        &self,
        id: JobId,
        lease: &LeaseId,
        portal: PortalId,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE sync_jobs SET portal_id = $3 WHERE id = $1 AND lease = $2";
        let n = on_pool!(self, pool => {
            sqlx::query(SQL)
                .bind(id.to_string())
                .bind(lease)
                .bind(portal.0)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Ends a run with a terminal status (`succeeded` or `failed`, with the job-level reason),
    /// under its lease. Counts and errors stay. `None`: the lease is gone.
    pub async fn finish_job(
        &self,
        id: JobId,
        lease: &LeaseId,
        status: JobStatus,
        error: Option<&str>,
    ) -> Result<Option<Job>, StoreError> {
        let mut tx = Tx::begin(self).await?;
        let job = tx.finish_job(id, lease, status, error).await?;
        tx.commit().await?;
        Ok(job)
    }

    /// Cancels an active job. A running job stops at its next checkpoint (its lease no longer
    /// matches a `running` row). `None`: no such job, or it had already finished.
    pub async fn cancel_job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        let sql = format!(
            "UPDATE sync_jobs SET status = 'cancelled', finished_at = $2, updated_at = $2, \
             lease = NULL, next_attempt_at = NULL \
             WHERE id = $1 AND status IN ('queued', 'running', 'retrying') RETURNING {COLUMNS}"
        );
        let row: Option<JobRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id.to_string())
                .bind(DbTime(Utc::now()))
                .fetch_optional(pool)
                .await?
        });
        Ok(record_opt(row)?.map(|r| r.job))
    }

    /// The ticks of a schedule, newest first.
    pub async fn recent_schedule_ticks(
        &self,
        key: &str,
        limit: u32,
    ) -> Result<Vec<TickRecord>, StoreError> {
        const SQL: &str = "SELECT tick_at, outcome, job_id FROM schedule_ticks \
             WHERE schedule_key = $1 ORDER BY tick_at DESC LIMIT $2";
        let rows: Vec<TickRow> = on_pool!(self, pool => {
            sqlx::query_as(SQL)
                .bind(key)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| TickRecord {
                at: DateTime::from_timestamp(r.tick_at, 0).unwrap_or_default(),
                outcome: r.outcome,
                job_id: r.job_id,
            })
            .collect())
    }
}
