//! Durable sync jobs: the job model, the Apalis queue that delivers jobs to workers, the
//! worker runtime with its retry and resume rules, and cron schedules.

pub mod commands;
pub mod metrics;
/// The job model lives at the crate root ([`crate::model`]) so that the store, which the
/// queue uses, can depend on it without depending on the queue.
pub use crate::model;
pub mod queue;
pub mod retention;
pub mod runner;
pub mod schedule;
pub mod worker;

pub use model::{
    Counts, Direction, Job, JobAction, JobProgress, JobSpec, JobStatus, PullCounts, PullMode,
    PullOutcome, PushCounts, PushMode, PushOutcome, RecordError, SpecError, SyncObject, Trigger,
};
pub use queue::{EnqueueRequest, Enqueued, QueueError, enqueue};
pub use runner::{BoxFuture, JobRunner, Page, Progress, RunError, RunFailure};
pub use schedule::{Schedule, ScheduleError};
pub use worker::{RetryPolicy, WorkerConfig, run_workers};
