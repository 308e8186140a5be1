//! Durable sync jobs: the job model, the Apalis queue that delivers jobs to workers, the
//! worker runtime with its retry and resume rules, and cron schedules.

pub mod model;

pub use model::{
    Counts, Direction, Job, JobProgress, JobSpec, JobStatus, PullCounts, PullMode, PullOutcome,
    PushCounts, PushMode, PushOutcome, RecordError, SpecError, Trigger,
};
