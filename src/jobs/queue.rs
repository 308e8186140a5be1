//! The Apalis side of jobs: enqueueing, and the storage workers fetch from.
//!
//! The `sync_jobs` row is the source of truth; an Apalis task only carries a job id to a
//! worker (a "delivery"). A job's first task has the job's own ULID as its task id; a retry or
//! a hand-back after shutdown gets a fresh task whose id the job records as its `delivery`.
//! Every task is pushed in the same database transaction that creates or updates the job row,
//! so a job can never exist without a task that delivers it, nor a task without its job.

use crate::ids::{DeliveryId, JobId};
use crate::jobs::model::{Job, JobAction, JobSpec, SyncObject, Trigger};
use crate::store::jobs::{NewJob, Tx, is_transient};
use crate::store::{Store, StoreError};
use apalis::prelude::{TaskBuilder, TaskId};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use ulid::Ulid;

/// The Apalis queue (`job_type`) that carries sync jobs.
pub const QUEUE: &str = "crm-sync-sync";

/// How many times Apalis itself may hand one task to a handler that errs or whose worker died.
/// Job-level retries are counted on the job; this only bounds a task that keeps crashing its
/// worker or keeps meeting a dead database.
pub const TASK_MAX_ATTEMPTS: usize = 10;

/// The payload of a task: which job, and which delivery of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncTask {
    /// The job to run.
    pub job_id: JobId,
    /// This task's id, which must still be the job's `delivery` for the run to go ahead.
    pub delivery: DeliveryId,
}

/// Queue errors.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The job store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Apalis refused the task.
    #[error("could not enqueue the task: {0}")]
    Push(String),
    /// Recording how a run ended stopped half-way (a panic, or the runtime shutting down).
    #[error("recording how the run ended stopped: {0}")]
    Settle(String),
}

impl From<sqlx::Error> for QueueError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

impl QueueError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(e) => is_transient(e),
            Self::Push(_) => true,
            Self::Settle(_) => false,
        }
    }
}

/// A request to run a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnqueueRequest {
    /// What to run.
    pub spec: JobSpec,
    /// Who asks.
    pub trigger: Trigger,
    /// Enqueue even while a job of this slot (object, direction, dry run) is queued or running.
    pub force: bool,
}

/// The answer to an [`EnqueueRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    /// The new job, or the active job of the slot (object, direction, dry run) that made this
    /// request a no-op.
    pub job: Job,
    /// Whether `job` was created by this request.
    pub created: bool,
}

/// Enqueues a job, unless one of its slot is active and `force` is off, in which case the
/// active job is returned instead. A slot is an object, a direction and whether the job is a
/// dry run: a dry run is never answered with a real job, nor a real request with a dry run. Safe against any number of processes racing.
///
/// A request with trigger `webhook` is [`enqueue_webhook_pull`] whatever its other fields.
pub async fn enqueue(store: &Store, req: EnqueueRequest) -> Result<Enqueued, QueueError> {
    if req.trigger == Trigger::Webhook {
        return enqueue_webhook_pull(store).await;
    }
    // A lost race whose winner finished before we could read it leaves the slot free again;
    // a few rounds settle it.
    for _ in 0..5 {
        let mut tx = Tx::begin(store).await?;
        if let Some(found) = enqueue_in(&mut tx, req, None).await? {
            tx.commit().await?;
            return Ok(found);
        }
        tx.rollback().await?;
    }
    Err(QueueError::Push(format!(
        "the {} {} slot kept changing hands; try again",
        req.spec.object,
        req.spec.direction()
    )))
}

/// [`enqueue`] inside `tx` (as its first statement). `None`: the slot was taken and freed
/// again while we looked; roll back and retry.
pub(crate) async fn enqueue_in(
    tx: &mut Tx,
    req: EnqueueRequest,
    schedule_key: Option<&str>,
) -> Result<Option<Enqueued>, QueueError> {
    let new = NewJob {
        id: JobId::generate(),
        spec: req.spec,
        trigger: req.trigger,
        force: req.force,
        schedule_key: schedule_key.map(str::to_owned),
    };
    if let Some(inserted) = tx.insert_job(&new).await? {
        push_delivery(tx, new.id, new.id.0, None).await?;
        return Ok(Some(Enqueued {
            job: inserted.job,
            created: true,
        }));
    }
    Ok(tx.active_job(&req.spec).await?.map(|active| Enqueued {
        job: active.job,
        created: false,
    }))
}

/// The webhook pull's request: a pull of the records webhooks named (forced: it runs beside
/// any other pull).
pub const WEBHOOK_PULL: EnqueueRequest = EnqueueRequest {
    spec: JobSpec {
        object: SyncObject::Contacts,
        action: JobAction::Pull {
            mode: crate::jobs::model::PullMode::Upsert,
            incremental: false,
        },
        dry_run: false,
    },
    trigger: Trigger::Webhook,
    force: true,
};

/// Makes sure a webhook pull is active: inserts one unless one is queued, running or retrying
/// (then that one is returned, `created: false`). The database settles races between any
/// number of deliveries and processes (index `sync_jobs_one_active_webhook_pull`).
pub async fn enqueue_webhook_pull(store: &Store) -> Result<Enqueued, QueueError> {
    for _ in 0..5 {
        let mut tx = Tx::begin(store).await?;
        if let Some(found) = enqueue_webhook_pull_in(&mut tx).await? {
            tx.commit().await?;
            return Ok(found);
        }
        tx.rollback().await?;
    }
    Err(QueueError::Push(
        "the webhook pull slot kept changing hands; try again".to_owned(),
    ))
}

/// [`enqueue_webhook_pull`] inside `tx`. `None`: the active webhook pull ended while we
/// looked; roll back and retry.
pub(crate) async fn enqueue_webhook_pull_in(tx: &mut Tx) -> Result<Option<Enqueued>, QueueError> {
    let new = NewJob {
        id: JobId::generate(),
        spec: WEBHOOK_PULL.spec,
        trigger: Trigger::Webhook,
        force: true,
        schedule_key: None,
    };
    if let Some(inserted) = tx.insert_job(&new).await? {
        push_delivery(tx, new.id, new.id.0, None).await?;
        return Ok(Some(Enqueued {
            job: inserted.job,
            created: true,
        }));
    }
    Ok(tx.active_webhook_pull().await?.map(|active| Enqueued {
        job: active.job,
        created: false,
    }))
}

/// Pushes the task `delivery` for `job_id` in `tx`, to run now or after `delay`.
pub(crate) async fn push_delivery(
    tx: &mut Tx,
    job_id: JobId,
    delivery: Ulid,
    delay: Option<Duration>,
) -> Result<(), QueueError> {
    let payload = SyncTask {
        job_id,
        delivery: DeliveryId::from(delivery),
    };
    let bytes = serde_json::to_vec(&payload).map_err(|e| QueueError::Push(e.to_string()))?;
    let mut builder = TaskBuilder::new(bytes)
        .task_id(TaskId::from_ulid(delivery))
        .max_attempts(TASK_MAX_ATTEMPTS);
    if let Some(delay) = delay {
        builder = builder.run_after(delay);
    }
    let task = builder.build();
    tx.push_apalis_task(QUEUE, task)
        .await
        .map_err(QueueError::Push)
}

/// Repairs active jobs whose delivery task can no longer deliver them (missing, or finished
/// in Apalis without the job having ended — e.g. its attempts ran out while the database was
/// away): each gets a fresh task. Returns how many were repaired. Safe to run anywhere, any
/// time: the switch is conditional on the old delivery.
pub async fn reconcile(store: &Store) -> Result<usize, QueueError> {
    let mut repaired = 0;
    for record in store.active_job_records().await? {
        let Some(old) = record.delivery.as_ref() else {
            continue;
        };
        let finished = match store.apalis_task(QUEUE, old).await? {
            None => true,
            Some(state) => state.is_finished(),
        };
        if !finished {
            continue;
        }
        let mut tx = Tx::begin(store).await?;
        let fresh = Ulid::generate();
        if tx
            .redeliver_job(record.job.id, old, &DeliveryId::from(fresh))
            .await?
        {
            push_delivery(&mut tx, record.job.id, fresh, None).await?;
            tx.commit().await?;
            tracing::warn!(job = %record.job.id, old_task = %old, new_task = %fresh,
                "job had no live delivery task; re-enqueued it");
            repaired += 1;
        } else {
            tx.rollback().await?;
        }
    }
    Ok(repaired)
}
