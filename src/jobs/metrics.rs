//! Counters of the jobs this process ran, for `/metrics` (registered by
//! [`crate::api::Metrics::new`] on the page's registry).
//!
//! Per process: a scrape of each `serve` and `worker` process (`worker.bind`) adds up to the
//! whole; the job table itself is the place for totals over all processes. Every run a process
//! starts is counted in `crm_sync_job_runs_started_total` and, when it ends, once in
//! `crm_sync_job_runs_total` by outcome; a run the process gave up without settling (its handler
//! dropped at the shutdown deadline, or the database failed before the outcome was written) is
//! counted `abandoned`. A run whose process died is counted started only, by the process that
//! died: over all processes, started minus ended is the runs lost to crashes.

use crate::jobs::model::Direction;
use crate::model::{Counts, PullCounts, PushCounts};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::time::Instant;

/// How a run ended, as a label.
const OUTCOMES: [&str; 6] = [
    "succeeded",
    "failed",
    "retrying",
    "requeued",
    "superseded",
    "abandoned",
];

/// What happened to contacts, as labels: every count key of either direction but `total`.
const CONTACT_OUTCOMES: [&str; 6] = [
    "created",
    "linked",
    "updated",
    "unchanged",
    "skipped",
    "failed",
];

/// Upper bounds of the run-duration histogram, in seconds: from an empty incremental run to an
/// hour-long full sync of a large account.
const RUN_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RunLabels {
    direction: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

fn run_histogram() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}

struct JobMetrics {
    started: Family<DirectionLabels, Counter>,
    settled: Family<RunLabels, Counter>,
    running: Family<DirectionLabels, Gauge>,
    durations: Family<DirectionLabels, Histogram, fn() -> Histogram>,
    contacts: Family<RunLabels, Counter>,
}

/// One set per process: the workers count into it wherever they run.
static METRICS: LazyLock<JobMetrics> = LazyLock::new(|| {
    let metrics = JobMetrics {
        started: Family::default(),
        settled: Family::default(),
        running: Family::default(),
        durations: Family::new_with_constructor(run_histogram),
        contacts: Family::default(),
    };
    // Every series from the start, so that a scrape shows zeros rather than nothing.
    for direction in [Direction::Push, Direction::Pull] {
        let direction = direction.as_str();
        for outcome in OUTCOMES {
            let _ = metrics
                .settled
                .get_or_create(&RunLabels { direction, outcome });
        }
        for outcome in contact_outcomes(direction) {
            let _ = metrics
                .contacts
                .get_or_create(&RunLabels { direction, outcome });
        }
        let labels = DirectionLabels { direction };
        let _ = metrics.started.get_or_create(&labels);
        let _ = metrics.running.get_or_create(&labels);
        let _ = metrics.durations.get_or_create(&labels);
    }
    metrics
});

/// The contact outcomes a direction has (push has no `unchanged`, pull no `updated`/`skipped`).
fn contact_outcomes(direction: &'static str) -> impl Iterator<Item = &'static str> {
    CONTACT_OUTCOMES.into_iter().filter(move |o| match *o {
        "unchanged" => direction == "pull",
        "updated" | "skipped" => direction == "push",
        _ => true,
    })
}

/// Registers the job families on `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "crm_sync_job_runs_started",
        "Job runs this process started (claimed), by direction",
        METRICS.started.clone(),
    );
    registry.register(
        "crm_sync_job_runs",
        "Job runs this process ended, by direction and outcome (abandoned: given up without \
         settling)",
        METRICS.settled.clone(),
    );
    registry.register(
        "crm_sync_jobs_running",
        "Jobs running in this process, by direction",
        METRICS.running.clone(),
    );
    registry.register(
        "crm_sync_job_run_duration_seconds",
        "Time from claiming a job to settling the run, by direction",
        METRICS.durations.clone(),
    );
    registry.register(
        "crm_sync_contacts_processed",
        "Contacts in pages this process committed, by direction and outcome",
        METRICS.contacts.clone(),
    );
}

/// A run this process started: counted at once, and when it ends (or is dropped unsettled,
/// as `abandoned`) counted by outcome with its duration.
pub(crate) struct RunTracker {
    direction: Direction,
    started: Instant,
    settled: bool,
}

impl RunTracker {
    /// Counts a run of `direction` as started now.
    pub(crate) fn start(direction: Direction) -> Self {
        METRICS
            .started
            .get_or_create(&DirectionLabels {
                direction: direction.as_str(),
            })
            .inc();
        Self {
            direction,
            started: Instant::now(),
            settled: false,
        }
    }

    /// Counts the run as ended; `how` is the worker's outcome (its `Display` is the label).
    pub(crate) fn settled(mut self, how: impl std::fmt::Display) {
        self.settled = true;
        self.end(&how.to_string());
    }

    fn end(&self, label: &str) {
        let direction = self.direction.as_str();
        if let Some(outcome) = OUTCOMES.iter().find(|o| **o == label) {
            METRICS
                .settled
                .get_or_create(&RunLabels { direction, outcome })
                .inc();
        }
        METRICS
            .durations
            .get_or_create(&DirectionLabels { direction })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for RunTracker {
    fn drop(&mut self) {
        if !self.settled {
            self.end("abandoned");
        }
    }
}

/// Counts the contacts of a committed page: the difference between the job's counts before
/// (`was`) and after it (`now`).
pub(crate) fn contacts_committed(was: &Counts, now: &Counts) {
    let direction = now.direction();
    let label = direction.as_str();
    for (outcome, n) in outcome_deltas(was, now) {
        if n > 0 {
            METRICS
                .contacts
                .get_or_create(&RunLabels {
                    direction: label,
                    outcome,
                })
                .inc_by(n);
        }
    }
}

fn outcome_deltas(was: &Counts, now: &Counts) -> Vec<(&'static str, u64)> {
    match (was, now) {
        (Counts::Push(was), Counts::Push(now)) => push_outcomes(now)
            .into_iter()
            .zip(push_outcomes(was))
            .map(|((o, n), (_, w))| (o, n.saturating_sub(w)))
            .collect(),
        (Counts::Pull(was), Counts::Pull(now)) => pull_outcomes(now)
            .into_iter()
            .zip(pull_outcomes(was))
            .map(|((o, n), (_, w))| (o, n.saturating_sub(w)))
            .collect(),
        // The runner refuses counts of the other direction before committing.
        _ => Vec::new(),
    }
}

fn push_outcomes(c: &PushCounts) -> [(&'static str, u64); 5] {
    [
        ("created", c.created),
        ("linked", c.linked),
        ("updated", c.updated),
        ("skipped", c.skipped),
        ("failed", c.failed),
    ]
}

fn pull_outcomes(c: &PullCounts) -> [(&'static str, u64); 4] {
    [
        ("created", c.created),
        ("linked", c.linked),
        ("unchanged", c.unchanged),
        ("failed", c.failed),
    ]
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

    fn page() -> String {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut page = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut page, &registry).unwrap();
        page
    }

    fn sample(page: &str, series: &str) -> f64 {
        page.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} in {page}"))
    }

    #[test]
    fn settled_runs_show_up_by_direction_and_outcome() {
        RunTracker::start(Direction::Pull).settled(Settled::Finished(JobStatus::Failed));
        let guard = running(Direction::Push);
        let page = page();
        drop(guard);
        let failed = "crm_sync_job_runs_total{direction=\"pull\",outcome=\"failed\"}";
        assert!(sample(&page, failed) >= 1.0, "{page}");
        assert!(page.contains("# TYPE crm_sync_jobs_running gauge"));
        assert!(page.contains("crm_sync_job_run_duration_seconds_count{direction=\"pull\"}"));
    }

    #[test]
    fn a_run_dropped_without_settling_is_counted_abandoned() {
        let series = "crm_sync_job_runs_total{direction=\"push\",outcome=\"abandoned\"}";
        let before = sample(&page(), series);
        drop(RunTracker::start(Direction::Push));
        assert!(sample(&page(), series) >= before + 1.0);
    }

    #[test]
    fn committed_pages_count_their_contacts_by_outcome() {
        let series = "crm_sync_contacts_processed_total{direction=\"pull\",outcome=\"unchanged\"}";
        let before = sample(&page(), series);
        let was = Counts::Pull(PullCounts {
            total: 3,
            unchanged: 3,
            ..PullCounts::default()
        });
        let now = Counts::Pull(PullCounts {
            total: 10,
            created: 2,
            unchanged: 8,
            ..PullCounts::default()
        });
        contacts_committed(&was, &now);
        assert!(sample(&page(), series) >= before + 5.0);
        let page = page();
        assert!(
            !page.contains("direction=\"pull\",outcome=\"updated\""),
            "{page}"
        );
    }
}
