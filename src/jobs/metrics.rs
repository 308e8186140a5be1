//! Counters of the jobs this process ran, for `/metrics` (registered by
//! [`crate::api::Metrics::new`] on the page's registry).
//!
//! Per process (a scrape of each `serve` / `worker` process adds up to the whole); the job
//! table itself is the place for totals over all processes.

use crate::jobs::model::Direction;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

/// How a run ended, as a label.
const OUTCOMES: [&str; 5] = ["succeeded", "failed", "retrying", "requeued", "superseded"];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RunLabels {
    direction: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

struct JobMetrics {
    settled: Family<RunLabels, Counter>,
    running: Family<DirectionLabels, Gauge>,
}

/// One set per process: the workers count into it wherever they run.
static METRICS: LazyLock<JobMetrics> = LazyLock::new(|| {
    let metrics = JobMetrics {
        settled: Family::default(),
        running: Family::default(),
    };
    // Every series from the start, so that a scrape shows zeros rather than nothing.
    for direction in [Direction::Push, Direction::Pull] {
        let direction = direction.as_str();
        for outcome in OUTCOMES {
            let _ = metrics
                .settled
                .get_or_create(&RunLabels { direction, outcome });
        }
        let _ = metrics
            .running
            .get_or_create(&DirectionLabels { direction });
    }
    metrics
});

/// Registers the job families on `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "crm_sync_job_runs",
        "Job deliveries settled by this process, by direction and outcome",
        METRICS.settled.clone(),
    );
    registry.register(
        "crm_sync_jobs_running",
        "Jobs running in this process, by direction",
        METRICS.running.clone(),
    );
}

/// Counts a settled delivery; `how` is the worker's outcome (its `Display` is the label).
pub(crate) fn settled(direction: Direction, how: impl std::fmt::Display) {
    let label = how.to_string();
    if let Some(outcome) = OUTCOMES.iter().find(|o| **o == label) {
        METRICS
            .settled
            .get_or_create(&RunLabels {
                direction: direction.as_str(),
                outcome,
            })
            .inc();
    }
}

/// Marks a run of `direction` as started in this process until the guard drops.
pub(crate) fn running(direction: Direction) -> RunningGuard {
    running_gauge(direction).inc();
    RunningGuard(direction)
}

fn running_gauge(direction: Direction) -> Gauge {
    METRICS.running.get_or_create_owned(&DirectionLabels {
        direction: direction.as_str(),
    })
}

/// Decrements the running gauge when dropped.
pub(crate) struct RunningGuard(Direction);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        running_gauge(self.0).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::model::JobStatus;
    use crate::jobs::worker::Settled;

    #[test]
    fn settled_runs_show_up_by_direction_and_outcome() {
        settled(Direction::Pull, Settled::Finished(JobStatus::Failed));
        let guard = running(Direction::Push);
        let mut registry = Registry::default();
        register(&mut registry);
        let mut page = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut page, &registry).unwrap();
        drop(guard);
        let failed = page
            .lines()
            .find(|l| {
                l.starts_with("crm_sync_job_runs_total{direction=\"pull\",outcome=\"failed\"}")
            })
            .unwrap();
        assert!(!failed.ends_with(" 0"), "{page}");
        assert!(page.contains("# TYPE crm_sync_jobs_running gauge"));
    }
}
