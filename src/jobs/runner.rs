//! The seam between the queue and the sync code: a [`JobRunner`] runs one job, reporting
//! through [`Progress`], and answers how it ended with a [`RunError`].
//!
//! A runner works page by page. For each page it opens a transaction ([`Progress::begin`]),
//! writes its records through it, and commits the page together with the job's counts and a
//! checkpoint ([`Progress::commit`]). A run that is interrupted — a graceful shutdown, a crash,
//! `kill -9` — is resumed later by another run that starts from [`Progress::checkpoint`], so no
//! page is lost and none is applied twice.
//!
//! # Writing a runner
//!
//! - Start from `progress.checkpoint_as::<YourCursor>()?` (`None`: from the beginning) and from
//!   `progress.counts()` (zero on a first run, the last committed page's on a resumed one).
//! - Call `progress.set_total(n)` as soon as the number of records is known.
//! - Per page: return `Err(RunError::Interrupted)` if `progress.should_stop()`; read and call
//!   HubSpot; then `let mut tx = progress.begin().await?`, write the page's rows through the
//!   store's `Tx` methods, and `progress.commit(tx, Page { counts, checkpoint,
//!   errors }).await?` — `counts` cumulative, `errors` only this page's.
//! - A page interrupted between its HubSpot writes and its commit runs again on resume, so
//!   those writes must be idempotent (upsert by email or id, search before create).
//! - Return `RunError::Transient` for what may pass (HubSpot 5xx or 429 after the client's own
//!   retries, network errors), `RunError::Fatal` for what will not (revoked token, bad
//!   configuration). Database errors convert with `?` (transient when they may pass).
//!   Propagate [`RunError::Superseded`] from `commit` as is.
//!
//! `tests/jobs_support` has a complete runner written this way (the test runner).

use crate::ids::{JobId, LeaseId, PortalId};
use crate::jobs::model::{Counts, Job, MAX_RECORD_ERRORS, Plan, RecordError};
use crate::store::jobs::{Checkpoint, JobRecord, Tx, is_transient};
use crate::store::{Store, StoreError};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

/// A boxed, sendable future (what [`JobRunner::run`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs jobs. The real runner is the sync engine (`crate::sync`); tests bring their own.
pub trait JobRunner: Send + Sync + 'static {
    /// Runs `job` to its end, starting from `progress.checkpoint()` when there is one.
    ///
    /// Return `Ok(())` when every record was handled (records that failed are counted, not
    /// errors), or the [`RunError`] that says how the run ended otherwise. Check
    /// [`Progress::should_stop`] between pages and return [`RunError::Interrupted`] when it says
    /// so; propagate errors from [`Progress`] with `?`.
    fn run<'a>(
        &'a self,
        job: &'a Job,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), RunError>>;
}

/// Why a run failed: the sentence the job's `error` shows, and the error that caused it,
/// when there is one, kept as the [`std::error::Error::source`] for logs.
#[derive(Debug, Clone)]
pub struct RunFailure {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for RunFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RunFailure {
    /// The cause itself, not the `Arc` around it, so that callers can downcast it.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl RunFailure {
    /// A failure told by `message` alone.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A failure caused by `source`: the message is `context: source`.
    pub fn caused_by(
        context: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: format!("{context}: {source}"),
            source: Some(Arc::new(source)),
        }
    }

    /// A failure that is `source` itself (its message is the error's).
    pub fn from_error(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            message: source.to_string(),
            source: Some(Arc::new(source)),
        }
    }

    /// What the job's `error` says.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Failures compare by what they say (the cause is for logs).
impl PartialEq for RunFailure {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for RunFailure {}

impl From<String> for RunFailure {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

impl From<&str> for RunFailure {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

/// How a run ended, when it did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// Might pass if tried again later (HubSpot 5xx after the client's retries, a database
    /// blip): the job waits in `retrying` and runs again from its checkpoint, a bounded number
    /// of times.
    #[error(transparent)]
    Transient(RunFailure),
    /// Will not pass by retrying (bad credentials, a bug): the job fails with this reason.
    #[error(transparent)]
    Fatal(RunFailure),
    /// The worker is shutting down and the run stopped at a page boundary; the job goes back to
    /// the queue and continues from its checkpoint.
    #[error("interrupted by shutdown")]
    Interrupted,
    /// The run no longer holds the job (it was cancelled, or taken over after this worker was
    /// presumed dead); its last page was rolled back and it must stop without touching anything.
    #[error("the job is no longer held by this run")]
    Superseded,
}

impl RunError {
    /// A transient failure told by `message`.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient(RunFailure::new(message))
    }

    /// A fatal failure told by `message`.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal(RunFailure::new(message))
    }
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        if is_transient(&e) {
            Self::Transient(RunFailure::from_error(e))
        } else {
            Self::Fatal(RunFailure::from_error(e))
        }
    }
}

impl From<sqlx::Error> for RunError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

/// One page's worth of progress.
#[derive(Debug, Clone)]
pub struct Page {
    /// The job's counts so far, over all pages (start from [`Progress::counts`]).
    pub counts: Counts,
    /// Where to continue after this page (opaque to the queue; `Value::Null` for "from the
    /// start").
    pub checkpoint: Value,
    /// This page's failed records (appended to the job's list, up to its cap).
    pub errors: Vec<RecordError>,
}

/// What a run knows and reports about its job.
pub struct Progress {
    store: Store,
    job_id: JobId,
    lease: LeaseId,
    stop: StopCheck,
    state: Mutex<State>,
}

/// Says whether the worker wants runs to stop at the next page boundary.
pub type StopCheck = Arc<dyn Fn() -> bool + Send + Sync>;

struct State {
    counts: Counts,
    errors: Vec<RecordError>,
    checkpoint: Option<Value>,
    total: Option<u64>,
    /// A dry run's plan so far; `None` for a real job.
    plan: Option<Plan>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("job_id", &self.job_id)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Progress {
    /// Progress for a run that holds `record` under `lease`.
    pub(crate) fn new(store: Store, record: &JobRecord, lease: LeaseId, stop: StopCheck) -> Self {
        Self {
            store,
            job_id: record.job.id,
            lease,
            stop,
            state: Mutex::new(State {
                counts: record.job.counts,
                errors: record.job.errors.clone(),
                checkpoint: record.checkpoint.clone().filter(|c| !c.is_null()),
                total: record.job.progress.total,
                plan: record
                    .job
                    .spec
                    .dry_run
                    .then(|| record.job.plan.clone().unwrap_or_default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is replaced whole under the lock, so a poisoned lock still holds a
        // consistent value.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where to resume: the checkpoint of the last committed page, or `None` to start from the
    /// beginning.
    pub fn checkpoint(&self) -> Option<Value> {
        self.state().checkpoint.clone()
    }

    /// The checkpoint decoded as `T`; a checkpoint that does not decode fails the job (it was
    /// written by different code and resuming from it would guess).
    pub fn checkpoint_as<T: DeserializeOwned>(&self) -> Result<Option<T>, RunError> {
        self.checkpoint()
            .map(|v| {
                serde_json::from_value(v).map_err(|e| {
                    RunError::Fatal(RunFailure::caused_by(
                        "the job's checkpoint is unreadable",
                        e,
                    ))
                })
            })
            .transpose()
    }

    /// The job's counts so far (zero on a first run, the last page's on a resumed one).
    pub fn counts(&self) -> Counts {
        self.state().counts
    }

    /// Whether the run should stop at this page boundary (return [`RunError::Interrupted`]).
    pub fn should_stop(&self) -> bool {
        (self.stop)()
    }

    /// The store, for the runner's reads outside page transactions.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The job being run.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// The lease this run holds the job under (what its claims on shared work are made with).
    pub fn lease(&self) -> &LeaseId {
        &self.lease
    }

    /// Opens a transaction for one page's writes.
    pub async fn begin(&self) -> Result<Tx, RunError> {
        Ok(Tx::begin(&self.store).await?)
    }

    /// Saves `page` in `tx` and commits both. [`RunError::Superseded`] (after rolling back)
    /// when the run no longer holds the job.
    pub async fn commit(&self, tx: Tx, page: Page) -> Result<(), RunError> {
        self.commit_planned(tx, page, None).await
    }

    /// [`Progress::commit`] for a dry run's page: `plan` (this page's calls and planned
    /// actions) is added to the job's plan in the same transaction.
    pub async fn commit_planned(
        &self,
        mut tx: Tx,
        page: Page,
        plan: Option<Plan>,
    ) -> Result<(), RunError> {
        let (errors, total, plan) = {
            let state = self.state();
            if page.counts.direction() != state.counts.direction() {
                return Err(RunError::fatal(format!(
                    "the sync code reported {} counts for a {} job",
                    page.counts.direction(),
                    state.counts.direction()
                )));
            }
            let mut errors = state.errors.clone();
            let room = MAX_RECORD_ERRORS.saturating_sub(errors.len());
            errors.extend(page.errors.into_iter().take(room));
            // Only a dry run keeps a plan; a real job's page never carries one.
            let plan = state.plan.clone().map(|mut whole| {
                whole.merge(plan.unwrap_or_default());
                whole
            });
            (errors, state.total, plan)
        };
        if !page.counts.is_consistent() {
            return Err(RunError::fatal(format!(
                "the sync code reported inconsistent counts {:?}",
                page.counts
            )));
        }
        let checkpoint = Some(&page.checkpoint).filter(|c| !c.is_null());
        let saved = tx
            .save_job_progress(
                self.job_id,
                &self.lease,
                &Checkpoint {
                    counts: &page.counts,
                    errors: &errors,
                    checkpoint,
                    processed: page.counts.total(),
                    total,
                    plan: plan.as_ref(),
                },
            )
            .await?;
        if !saved {
            let _ = tx.rollback().await;
            return Err(RunError::Superseded);
        }
        tx.commit().await?;
        let mut state = self.state();
        // A dry run's counts are what would have been done: the metrics count what was.
        if state.plan.is_none() {
            crate::jobs::metrics::contacts_committed(&state.counts, &page.counts);
        }
        *state = State {
            counts: page.counts,
            errors,
            checkpoint: checkpoint.cloned(),
            total,
            plan,
        };
        Ok(())
    }

    /// Saves `page` on its own (for a page that wrote nothing else).
    pub async fn save(&self, page: Page) -> Result<(), RunError> {
        let tx = self.begin().await?;
        self.commit(tx, page).await
    }

    /// Records the HubSpot account the run syncs with.
    pub async fn set_portal(&self, portal: PortalId) -> Result<(), RunError> {
        if self
            .store
            .set_job_portal(self.job_id, &self.lease, portal)
            .await?
        {
            Ok(())
        } else {
            Err(RunError::Superseded)
        }
    }

    /// Records how many records the job will handle in all, as soon as it is known, so that
    /// clients can show a bar.
    pub async fn set_total(&self, total: u64) -> Result<(), RunError> {
        let (counts, errors, checkpoint) = {
            let state = self.state();
            (state.counts, state.errors.clone(), state.checkpoint.clone())
        };
        let mut tx = self.begin().await?;
        let saved = tx
            .save_job_progress(
                self.job_id,
                &self.lease,
                &Checkpoint {
                    counts: &counts,
                    errors: &errors,
                    checkpoint: checkpoint.as_ref(),
                    processed: counts.total(),
                    total: Some(total),
                    plan: None,
                },
            )
            .await?;
        if !saved {
            let _ = tx.rollback().await;
            return Err(RunError::Superseded);
        }
        tx.commit().await?;
        self.state().total = Some(total);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_says_its_cause_and_keeps_it_as_the_source() {
        let cause = std::io::Error::other("disk full");
        let e = RunError::Fatal(RunFailure::caused_by("saving the page", cause));
        assert_eq!(e.to_string(), "saving the page: disk full");
        let source = std::error::Error::source(&e).expect("the cause");
        assert_eq!(source.to_string(), "disk full");
        assert_eq!(
            e,
            RunError::fatal("saving the page: disk full"),
            "compared by message"
        );
    }

    #[test]
    fn a_database_failure_keeps_the_store_error() {
        let e = RunError::from(StoreError::from(sqlx::Error::PoolTimedOut));
        assert!(matches!(e, RunError::Transient(_)), "{e:?}");
        let source = std::error::Error::source(&e).expect("the store error");
        assert!(source.downcast_ref::<StoreError>().is_some());
    }
}
