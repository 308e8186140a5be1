//! Counters of the jobs this process ran, in the Prometheus text format, for `/metrics`:
//! register with `state.metrics.register(Arc::new(crm_sync::jobs::metrics::render))`.
//!
//! Per process (a scrape of each `serve` / `worker` process adds up to the whole); the job
//! table itself is the place for totals over all processes.

use crate::jobs::model::Direction;
use crate::jobs::worker::Settled;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// How a run ended, as a label.
const OUTCOMES: [&str; 5] = ["succeeded", "failed", "retrying", "requeued", "superseded"];

struct Counters {
    settled: [[AtomicU64; OUTCOMES.len()]; 2],
    running: [AtomicI64; 2],
}

static COUNTERS: Counters = Counters {
    settled: [
        [const { AtomicU64::new(0) }; OUTCOMES.len()],
        [const { AtomicU64::new(0) }; OUTCOMES.len()],
    ],
    running: [const { AtomicI64::new(0) }; 2],
};

fn direction_index(d: Direction) -> usize {
    match d {
        Direction::Push => 0,
        Direction::Pull => 1,
    }
}

/// Counts a settled delivery.
pub(crate) fn settled(direction: Direction, how: Settled) {
    let label = how.to_string();
    if let Some(i) = OUTCOMES.iter().position(|o| *o == label) {
        COUNTERS.settled[direction_index(direction)][i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Marks a run of `direction` as started in this process until the guard drops.
pub(crate) fn running(direction: Direction) -> RunningGuard {
    COUNTERS.running[direction_index(direction)].fetch_add(1, Ordering::Relaxed);
    RunningGuard(direction)
}

/// Decrements the running gauge when dropped.
pub(crate) struct RunningGuard(Direction);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        COUNTERS.running[direction_index(self.0)].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Appends the job metrics to a `/metrics` page.
pub fn render(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP crm_sync_job_runs_total Job deliveries settled by this process, by direction and outcome."
    );
    let _ = writeln!(out, "# TYPE crm_sync_job_runs_total counter");
    for d in [Direction::Push, Direction::Pull] {
        for (i, outcome) in OUTCOMES.iter().enumerate() {
            let n = COUNTERS.settled[direction_index(d)][i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "crm_sync_job_runs_total{{direction=\"{d}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP crm_sync_jobs_running Jobs running in this process, by direction."
    );
    let _ = writeln!(out, "# TYPE crm_sync_jobs_running gauge");
    for d in [Direction::Push, Direction::Pull] {
        let n = COUNTERS.running[direction_index(d)].load(Ordering::Relaxed);
        let _ = writeln!(out, "crm_sync_jobs_running{{direction=\"{d}\"}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::model::JobStatus;

    #[test]
    fn settled_runs_show_up_by_direction_and_outcome() {
        settled(Direction::Pull, Settled::Finished(JobStatus::Failed));
        let guard = running(Direction::Push);
        let mut page = String::new();
        render(&mut page);
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
