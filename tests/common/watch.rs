//! Watching an in-process sandbox from a test: waiting until it reaches a state, and counting
//! the calls it answered, so that a test can act at the moment that matters (e.g. kill a
//! process after HubSpot applied a page's writes).

use crm_sync::sandbox::SandboxHandle;
use std::collections::BTreeMap;
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

/// The calls of a sync among the sandbox's operations, under the names a dry run's plan gives
/// them (`contacts.batch_read` and `companies.batch_read` are both `batch_read`); `None` for
/// what is not a call of the sync. An operation no plan names keeps the sandbox's name, so a
/// comparison with a plan shows it.
fn planned_name(operation: &str) -> Option<String> {
    let name = match operation {
        // A person's actions in the sandbox's UI (a spec's own changes), not the app's.
        "person" => return None,
        "associations.batch_read" => "association_read",
        "associations.batch_create" => "association_create",
        "associations.batch_archive" => "association_archive",
        // A property group's read and create count as property calls.
        "properties.get"
        | "company_properties.get"
        | "properties.get_group"
        | "company_properties.get_group" => "property_read",
        "contacts.get" | "companies.get" => "get",
        "properties.create"
        | "company_properties.create"
        | "properties.create_group"
        | "company_properties.create_group" => "property_create",
        _ => match operation.split_once('.') {
            Some(("contacts" | "companies", call))
                if matches!(
                    call,
                    "batch_read"
                        | "batch_create"
                        | "batch_update"
                        | "batch_upsert"
                        | "list"
                        | "search"
                ) =>
            {
                call
            }
            _ => operation,
        },
    };
    Some(name.to_owned())
}

/// Every call of a sync the sandbox has answered so far, by the names a plan gives them.
pub fn sync_calls(hubspot: &SandboxHandle) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for (operation, n) in hubspot.stats().by_operation {
        if let Some(name) = planned_name(&operation) {
            *calls.entry(name).or_default() += n;
        }
    }
    calls
}

/// The calls answered between two readings of [`sync_calls`] (none of an operation: left out,
/// as a plan leaves it out).
pub fn calls_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The association calls among `calls` (as [`sync_calls`] names them): reads, creates, archives.
pub fn association_calls_of(calls: &BTreeMap<String, u64>) -> [u64; 3] {
    [
        "association_read",
        "association_create",
        "association_archive",
    ]
    .map(|operation| calls.get(operation).copied().unwrap_or(0))
}
