//! A dry run's plan names every HubSpot call the real run that follows it makes, by operation
//! and number: the companies a contacts push links first (found by key, searched by domain,
//! created), the properties and the property group it creates, the contacts and their
//! associations. Against the sandbox, on both backends and under both sandbox profiles, with
//! more companies than one page holds.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::mapped::{MappedEnv, pull_action, push_action};
use common::watch::{calls_between, sync_calls};
use crm_sync::jobs::model::{Counts, JobSpec, SyncObject};
use std::collections::BTreeMap;

/// Runs a dry push and then the real one with nothing changed in between; checks that their
/// counts agree and that the plan's calls are exactly those HubSpot answered the real run.
async fn dry_then_real_push(env: &MappedEnv) -> Counts {
    dry_then_real(env, JobSpec::from(push_action())).await
}

/// [`dry_then_real_push`] for any job.
async fn dry_then_real(env: &MappedEnv, spec: JobSpec) -> Counts {
    let dry = spec.with_dry_run(true).expect("the object has dry runs");
    let planned_job = env.run_spec(dry).await;
    let before = sync_calls(&env.hubspot);
    let real = env.run_spec(spec).await;
    let made = calls_between(&before, &sync_calls(&env.hubspot));
    assert_eq!(
        planned_job.counts, real.counts,
        "the dry run's counts are the real run's"
    );
    let plan = planned_job.plan.expect("a dry run has a plan");
    assert_eq!(plan.calls, made, "the plan names the real run's calls");
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

/// People add 150 contacts in HubSpot, none with a company.
fn people_add_contacts_in_hubspot(env: &MappedEnv) {
    let people: Vec<BTreeMap<String, String>> = (1..=150)
        .map(|i| BTreeMap::from([("email".to_owned(), format!("person{i}@example.com"))]))
        .collect();
    env.hubspot.insert_contacts(people);
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

    async fn a_dry_push_of_a_companies_table_of_your_own_plans_every_call_of_the_real_run(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &own_tables(), OWN_MAPPING).await;
        let spec = JobSpec::from(push_action()).for_object(SyncObject::Companies).expect("companies");
        let Counts::Push(counts) = dry_then_real(&env, spec).await else { panic!("push counts") };
        assert_eq!(counts.created, 250);
    }

    async fn a_dry_push_of_crm_syncs_own_companies_plans_every_call_of_the_real_run(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables(), "").await;
        let spec = JobSpec::from(push_action()).for_object(SyncObject::Companies).expect("companies");
        let Counts::Push(counts) = dry_then_real(&env, spec).await else { panic!("push counts") };
        assert_eq!(counts.created, 250);
    }

    async fn a_dry_full_pull_of_crm_syncs_own_contacts_plans_every_call_of_the_real_run(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables(), "").await;
        env.push().await;
        people_add_contacts_in_hubspot(&env);
        let Counts::Pull(counts) = dry_then_real(&env, JobSpec::from(pull_action(false))).await else {
            panic!("pull counts")
        };
        assert_eq!((counts.total, counts.created), (750, 150));
    }

    async fn a_dry_full_pull_of_a_table_of_your_own_plans_every_call_of_the_real_run(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &own_tables(), OWN_MAPPING).await;
        env.push().await;
        people_add_contacts_in_hubspot(&env);
        let Counts::Pull(counts) = dry_then_real(&env, JobSpec::from(pull_action(false))).await else {
            panic!("pull counts")
        };
        // A pull never adds rows to a table of the user's own.
        assert_eq!((counts.total, counts.unchanged), (750, 750));
    }
}
