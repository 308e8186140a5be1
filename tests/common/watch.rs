//! Watching an in-process sandbox from a test: waiting until it reaches a state, and counting
//! the calls it answered, so that a test can act at the moment that matters (e.g. kill a
//! process after HubSpot applied a page's writes).

use crm_sync::sandbox::SandboxHandle;
use std::time::{Duration, Instant};

/// How long a test waits for the sandbox to reach a state.
pub const SANDBOX_PATIENCE: Duration = Duration::from_secs(120);

/// Polls `done` every 10 ms (the sandbox is in this process: no HTTP); fails after
/// [`SANDBOX_PATIENCE`], naming `what` it waited for.
pub async fn until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < SANDBOX_PATIENCE,
            "waited {SANDBOX_PATIENCE:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Calls of `operation` (e.g. `companies.search`) the sandbox has answered so far.
pub fn operations(hubspot: &SandboxHandle, operation: &str) -> u64 {
    hubspot
        .stats()
        .by_operation
        .get(operation)
        .copied()
        .unwrap_or(0)
}

/// The association calls the sandbox has answered so far: batch reads, creates, archives.
pub fn association_calls(hubspot: &SandboxHandle) -> [u64; 3] {
    [
        "associations.batch_read",
        "associations.batch_create",
        "associations.batch_archive",
    ]
    .map(|operation| operations(hubspot, operation))
}

/// The association calls a dry run's plan says the real run makes, as
/// [`association_calls`] counts them.
pub fn planned_association_calls(job: &crm_sync::jobs::model::Job) -> [u64; 3] {
    let plan = job.plan.as_ref().expect("a dry run has a plan");
    [
        "association_read",
        "association_create",
        "association_archive",
    ]
    .map(|operation| plan.calls.get(operation).copied().unwrap_or(0))
}
