//! The pruning loop that `serve` and `worker` run next to the job workers: one round at start,
//! then one per `retention.interval_minutes`. Rounds of several processes may overlap; the
//! store makes that safe ([`Store::prune_retained`]).

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::RetentionSettings;
use crate::store::{PruneOutcome, Store};

/// Starts pruning in the background; abort the handle to stop it (a round cut short rolls
/// back on PostgreSQL and deletes nothing half-way on SQLite, each `DELETE` being atomic).
pub fn spawn(store: Store, settings: RetentionSettings) -> JoinHandle<()> {
    tokio::spawn(run(store, settings))
}

async fn run(store: Store, settings: RetentionSettings) {
    let mut every = tokio::time::interval(settings.interval());
    // After a long pause (a suspended laptop) one round is enough, not a burst of them.
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        round(&store, &settings).await;
    }
}

/// One pruning round; a failure is logged and the next round tries again.
async fn round(store: &Store, settings: &RetentionSettings) {
    match store.prune_retained(&settings.cutoffs(Utc::now())).await {
        Ok(PruneOutcome::Pruned(pruned)) if pruned.total() > 0 => tracing::info!(
            jobs = pruned.jobs,
            webhook_events = pruned.webhook_events,
            schedule_ticks = pruned.schedule_ticks,
            queue_tasks = pruned.queue_tasks,
            oauth_states = pruned.oauth_states,
            operator_sessions = pruned.operator_sessions,
            working_rows = pruned.working_rows,
            "pruned rows past their retention"
        ),
        Ok(PruneOutcome::Pruned(_)) => tracing::debug!("nothing past its retention"),
        Ok(PruneOutcome::Busy) => {
            tracing::debug!("another process is pruning; skipped this round")
        }
        Err(e) => tracing::warn!(error = %e, "pruning old rows failed; will try again"),
    }
}
