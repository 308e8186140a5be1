//! Apalis' own tables: the one place that knows their names, columns and status strings.
//!
//! Apalis exposes no query for "what became of task X", and its `vacuum` is not bounded by age,
//! so the store reads and prunes those tables itself. An Apalis upgrade may rename any of it;
//! `tests/jobs_store.rs` (`apalis_tables_are_what_the_store_reads`) checks every name used here against the installed version on
//! both backends and fails with a message naming what changed.

use super::{Store, StoreError, Tx, on_pool, on_tx};
use crate::ids::DeliveryId;
use apalis::prelude::Task;

/// The status Apalis writes for a task that succeeded (`apalis::prelude::Status::Done`).
pub const STATUS_DONE: &str = "Done";
/// The status Apalis writes for a task it killed (`Status::Killed`).
pub const STATUS_KILLED: &str = "Killed";
/// The status Apalis writes for a task whose last attempt failed (`Status::Failed`); it runs
/// the task again while `attempts < max_attempts`.
pub const STATUS_FAILED: &str = "Failed";

/// The task table: a table of the `apalis` schema on PostgreSQL...
const PG_TASK_STATE: &str =
    "SELECT status, attempts, max_attempts FROM apalis.jobs WHERE id = $1 AND job_type = $2";
/// ...and `Jobs` on SQLite.
const SQLITE_TASK_STATE: &str =
    "SELECT status, attempts, max_attempts FROM Jobs WHERE id = $1 AND job_type = $2";

/// Apalis' own notion of finished (its `vacuum` query): done, killed, or failed with no attempt
/// left; anything else it may still run. `done_at` (`$1`) is a timestamp on PostgreSQL...
pub(super) const PG_PRUNE_FINISHED_TASKS: &str = "DELETE FROM apalis.jobs
     WHERE (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))
       AND done_at IS NOT NULL AND done_at < $1";
/// ...and seconds since the epoch on SQLite.
pub(super) const SQLITE_PRUNE_FINISHED_TASKS: &str = "DELETE FROM Jobs
     WHERE (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))
       AND done_at IS NOT NULL AND done_at < $1";

/// What Apalis knows about one task.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApalisTask {
    /// Apalis' status, e.g. `Pending`, `Running`, [`STATUS_DONE`].
    pub status: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
}

impl ApalisTask {
    /// Whether Apalis will never hand this task to a handler again.
    pub fn is_finished(&self) -> bool {
        match self.status.as_str() {
            STATUS_DONE | STATUS_KILLED => true,
            STATUS_FAILED => self.attempts >= self.max_attempts,
            _ => false,
        }
    }
}

impl Tx {
    /// Pushes a task onto Apalis queue `queue` in this transaction, through Apalis' own insert,
    /// so that the job row and the task that delivers it commit together.
    pub async fn push_apalis_task(
        &mut self,
        queue: &str,
        task: Task<Vec<u8>>,
    ) -> Result<(), String> {
        on_tx!(self, c =>
            postgres: apalis_postgres::queries::push_tasks(c, queue, vec![task])
                .await
                .map_err(|e| e.to_string()),
            sqlite: apalis_sqlite::queries::push_tasks(c, queue, &[task])
                .await
                .map_err(|e| e.to_string()),
        )
    }
}

impl Store {
    /// The state of task `id` of queue `queue`; `None` when Apalis has no such task (never
    /// pushed, or pruned).
    pub async fn apalis_task(
        &self,
        queue: &str,
        id: &DeliveryId,
    ) -> Result<Option<ApalisTask>, StoreError> {
        let sql = on_pool!(self, _pool => postgres: PG_TASK_STATE, sqlite: SQLITE_TASK_STATE);
        let task = on_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(id)
                .bind(queue)
                .fetch_optional(pool)
                .await?
        });
        Ok(task)
    }
}
