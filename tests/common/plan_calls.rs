//! A dry run's plan against what HubSpot then answers the real run: the sandbox's operations
//! named as the plan names them, so that a spec can compare the whole map.

use crm_sync::jobs::model::Job;
use crm_sync::sandbox::SandboxHandle;
use std::collections::BTreeMap;

/// Calls the sandbox has answered so far, by its operation name.
pub fn answered(hubspot: &SandboxHandle) -> BTreeMap<String, u64> {
    hubspot.stats().by_operation.into_iter().collect()
}

/// The calls answered between `before` and `after`, named as a plan names them
/// (`contacts.batch_read` and `companies.batch_read` are both `batch_read`; a property group's
/// read is a `property_read`); the sandbox's own admin calls and the account check of a
/// private-app token (made once per process, not by a job) are left out.
pub fn as_planned(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let mut planned = BTreeMap::new();
    for (operation, n) in after {
        let n = n - before.get(operation).copied().unwrap_or(0);
        if n == 0 || operation == "admin" || operation == "account.details" {
            continue;
        }
        let (object, call) = operation.split_once('.').unwrap_or(("", operation));
        let name = match (object, call) {
            ("associations", call) => format!("association_{}", call.trim_start_matches("batch_")),
            ("properties" | "company_properties", "get" | "get_group") => "property_read".into(),
            ("properties" | "company_properties", "create" | "create_group") => {
                "property_create".into()
            }
            ("contacts" | "companies", call) => call.to_owned(),
            _ => panic!("no plan operation for the sandbox's {operation}"),
        };
        *planned.entry(name).or_default() += n;
    }
    planned
}

/// The calls a dry run's plan says the real run makes.
pub fn planned(job: &Job) -> BTreeMap<String, u64> {
    let plan = job.plan.as_ref().expect("a dry run has a plan");
    plan.calls.clone()
}
