//! A dry run's plan names every HubSpot call the real run that follows it makes, by operation
//! and number: the companies a contacts push links first (found by key, searched by domain,
//! created), the properties and the property group it creates, the contacts and their
//! associations. Against the sandbox, on both backends and under both sandbox profiles, with
//! more companies than one page holds.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::mapped::{MappedEnv, push_action};
use common::plan_calls::{answered, as_planned, planned};
use crm_sync::jobs::model::{Counts, JobSpec};

/// Runs a dry push and then the real one with nothing changed in between; checks that their
/// counts agree and that the plan's calls are exactly those HubSpot answered the real run.
async fn dry_then_real_push(env: &MappedEnv) -> Counts {
    let dry = JobSpec::from(push_action())
        .with_dry_run(true)
        .expect("contacts have dry runs");
    let planned_job = env.run_spec(dry).await;
    let before = answered(&env.hubspot);
    let real = env.run_spec(JobSpec::from(push_action())).await;
    let made = as_planned(&before, &answered(&env.hubspot));
    assert_eq!(
        planned_job.counts, real.counts,
        "the dry run's counts are the real run's"
    );
    assert_eq!(
        planned(&planned_job),
        made,
        "the plan names the real run's calls"
    );
    real.counts
}

/// `n` rows numbered from 1, as `WITH RECURSIVE` (both backends).
fn numbers(n: u32) -> String {
    format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})")
}

/// 250 organisations of the user's own, none in HubSpot yet (three pages of companies), and
/// 600 users naming them, mapped with a property HubSpot does not have yet.
fn own_tables() -> String {
    format!(
        "CREATE TABLE orgs (id BIGINT PRIMARY KEY, name TEXT NOT NULL, domain TEXT); \
         CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT UNIQUE, plan TEXT, org_id BIGINT); \
         {} INSERT INTO orgs SELECT i, 'Org ' || i, 'org' || i || '.example.com' FROM n; \
         {} INSERT INTO users SELECT i, 'user' || i || '@example.com', 'pro', 1 + i % 250 FROM n",
        numbers(250),
        numbers(600)
    )
}

const OWN_MAPPING: &str = r#"
[[sync.objects]]
object = "companies"
table = "orgs"
key_column = "id"
create_properties = true

[sync.objects.fields]
name = { property = "name", direction = "both", owner = "local" }
domain = { property = "domain", direction = "push" }

[[sync.objects]]
object = "contacts"
table = "users"
key_column = "id"
create_properties = true
company_column = "org_id"

[sync.objects.fields]
email = { property = "email", direction = "both", owner = "local" }
plan = { property = "plan_tier", direction = "push" }
"#;

/// crm-sync's own tables: 250 companies, none in HubSpot yet, and 600 contacts naming them.
fn built_in_tables() -> String {
    format!(
        "{} INSERT INTO companies (name, domain) SELECT 'Org ' || i, 'org' || i || '.example.com' FROM n; \
         {} INSERT INTO contacts (email, first_name, company_id) \
            SELECT 'user' || i || '@example.com', 'User', 1 + i % 250 FROM n",
        numbers(250),
        numbers(600)
    )
}

backend_tests! {
    async fn a_dry_push_of_a_table_of_your_own_plans_every_call_of_the_real_run(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &own_tables(), OWN_MAPPING).await;
        let Counts::Push(counts) = dry_then_real_push(&env).await else { panic!("push counts") };
        assert_eq!((counts.created, counts.associations_created), (600, 600));
    }

    async fn a_dry_push_of_crm_syncs_own_contacts_plans_every_call_of_the_real_run(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables(), "").await;
        let Counts::Push(counts) = dry_then_real_push(&env).await else { panic!("push counts") };
        assert_eq!((counts.created, counts.associations_created), (600, 600));
    }
}
