//! What `/metrics` reads from the database at each scrape, so that every process of a
//! deployment reports the same: the job queue by status, the last successful sync per
//! direction and the webhook backlog, in one set-based query; and the pool's connections.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, on_pool};
use crate::model::{Direction, JobStatus};

/// The statuses of a job that is not finished: the queue.
pub const ACTIVE_STATUSES: [JobStatus; 3] =
    [JobStatus::Queued, JobStatus::Running, JobStatus::Retrying];

/// The database's side of the health gauges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueGauges {
    /// Jobs queued, running and retrying (every active status, zero included).
    pub jobs: Vec<(JobStatus, u64)>,
    /// When the newest successful push and pull finished; webhook pulls do not count (they
    /// read a few records, not the account). A direction that never succeeded is absent.
    pub last_success: Vec<(Direction, DateTime<Utc>)>,
    /// HubSpot records webhooks named that still wait for their pull.
    pub pending_webhook_pulls: u64,
    /// When the oldest of them was first named; `None` when none waits.
    pub oldest_pending_webhook_pull: Option<DateTime<Utc>>,
}

/// The pool's connections now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Checked out by a query or a transaction.
    pub in_use: u32,
    /// Open and waiting in the pool.
    pub idle: u32,
}

/// One row per part of the answer: `kind` says which, `key` a status or a direction.
type GaugeRow = (String, String, i64, Option<DateTime<Utc>>);

impl Store {
    /// Reads the queue gauges in one statement. The last-success parts are `MAX` over one
    /// direction each (real jobs only: a dry run syncs nothing), which PostgreSQL answers from the `finished_at` index without a scan.
    pub async fn queue_gauges(&self) -> Result<QueueGauges, StoreError> {
        const SQL: &str = "\
            SELECT 'active', status, COUNT(*), NULL FROM sync_jobs \
             WHERE status IN ('queued', 'running', 'retrying') GROUP BY status \
            UNION ALL \
            SELECT 'succeeded', 'push', 0, (SELECT MAX(finished_at) FROM sync_jobs \
             WHERE direction = 'push' AND status = 'succeeded' AND triggered_by <> 'webhook' \
               AND NOT dry_run) \
            UNION ALL \
            SELECT 'succeeded', 'pull', 0, (SELECT MAX(finished_at) FROM sync_jobs \
             WHERE direction = 'pull' AND status = 'succeeded' AND triggered_by <> 'webhook' \
               AND NOT dry_run) \
            UNION ALL \
            SELECT 'webhook_pulls', '', COUNT(*), MIN(requested_at) FROM webhook_pulls";
        let rows: Vec<GaugeRow> =
            on_pool!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await)?;
        let mut gauges = QueueGauges {
            jobs: ACTIVE_STATUSES.iter().map(|s| (*s, 0)).collect(),
            last_success: Vec::new(),
            pending_webhook_pulls: 0,
            oldest_pending_webhook_pull: None,
        };
        for (kind, key, n, at) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            let corrupt = |e: &dyn std::fmt::Display| {
                StoreError::InvalidData(format!("queue gauges: {kind} {key:?}: {e}"))
            };
            match kind.as_str() {
                "active" => {
                    let status: JobStatus = key.parse().map_err(|e| corrupt(&e))?;
                    if let Some(slot) = gauges.jobs.iter_mut().find(|(s, _)| *s == status) {
                        slot.1 = n;
                    }
                }
                "succeeded" => {
                    let direction: Direction = key.parse().map_err(|e| corrupt(&e))?;
                    if let Some(at) = at {
                        gauges.last_success.push((direction, at));
                    }
                }
                _ => {
                    gauges.pending_webhook_pulls = n;
                    gauges.oldest_pending_webhook_pull = at;
                }
            }
        }
        Ok(gauges)
    }

    /// The pool's connections in use and idle (no query).
    pub fn pool_usage(&self) -> PoolUsage {
        let (size, idle) = on_pool!(self, pool => (pool.size(), pool.num_idle()));
        let idle = u32::try_from(idle).unwrap_or(u32::MAX);
        PoolUsage {
            in_use: size.saturating_sub(idle),
            idle,
        }
    }
}
