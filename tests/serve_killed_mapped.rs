//! Durability of a push from the user's own tables in the real service: `crm-sync serve`, with
//! `[[sync.objects]]` mapping companies to `orgs` and contacts to `users`, killed with SIGKILL
//! after HubSpot applied a page's creates and before the page's links were saved, then started
//! again, finishes the job with every row in HubSpot exactly once and exact counts — on SQLite
//! and PostgreSQL, under every way HubSpot may answer (`HubSpotProfile`).
//!
//! The test holds the page's local commit back (`WriteHold` on `object_links`: a table lock
//! on PostgreSQL, the write lock on SQLite) until HubSpot has applied the page's writes, then
//! kills, so the restarted run always meets creates it made but did not record: it must find
//! them again (companies by crm-sync's external key, contacts by email), never make them
//! twice. The restarted process gets the job back through production's orphan recovery (the
//! dead worker misses its heartbeats, about 15–20 s).

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use common::TestDb;
use common::mapped::{DOMAIN_BOTH_WAYS, orgs_mapping};
use common::process::Serve;
use common::user_table::{exec, texts};
use common::watch::{operations, until};
use common::world::slow_sandbox;
use common::write_hold::WriteHold;
use crm_sync::sandbox::{HubSpotProfile, SandboxHandle};
use crm_sync::store::Store;
use crm_sync::sync::companies::COMPANY_KEY;
use serde_json::{Value, json};

/// Rows of each table: three pages, so that the kill lands in the middle.
const ROWS: u64 = 300;
/// Every `FOUND_BY_DOMAIN_EVERY`-th org is in HubSpot already, made by someone else without
/// crm-sync's key: the push links it by its domain.
const FOUND_BY_DOMAIN_EVERY: u64 = 30;
/// Each HubSpot answer takes this long, so that a push lasts a few seconds.
const HUBSPOT_LATENCY_MS: u64 = 300;

/// Companies mapped to `orgs` (with a push-only field), contacts to `users`.
fn mappings() -> String {
    let seats = "seats = { property = \"org_seats\", direction = \"push\" }\n";
    format!("{}{USERS_MAPPING}", orgs_mapping(DOMAIN_BOTH_WAYS, seats))
}

const USERS_MAPPING: &str = r#"
[[sync.objects]]
object = "contacts"
table = "users"
key_column = "id"
create_properties = true

[sync.objects.fields]
email = { property = "email", direction = "both", owner = "local" }
full_name = { property = "firstname", direction = "both", owner = "local" }
"#;

backend_tests! {
    async fn a_serve_killed_mid_push_of_a_mapped_companies_table_creates_each_company_once(db: TestDb, profile: HubSpotProfile) {
        let (store, hubspot, dir) = setup(&db, profile).await;
        let known = hubspot.companies().len() as u64;
        let first = Serve::start(dir.path(), db.url(), &hubspot.base_url(), hubspot.access_token()).await;
        let id = job_id(&first.enqueue(json!({"direction": "push", "object": "companies"})).await);
        // The first page was read by key and searched by domain: its create is on its way.
        until("the first domain search", || operations(&hubspot, "companies.search") > 0).await;
        let hold = WriteHold::take(&db, "object_links").await;
        until("companies created in HubSpot", || hubspot.companies().len() as u64 > known).await;
        first.kill();
        hold.release().await;
        assert!(
            links(&store, "companies").await < hubspot.companies().len() as u64 - known,
            "HubSpot applied creates whose links the kill lost"
        );

        let (second, done) = restart_and_finish(dir.path(), &db, &hubspot, &id).await;
        // A company the dead run created carries the row's key and values: counted created,
        // as without the kill.
        let counts = &done["counts"];
        assert_eq!((counts["created"].as_u64(), counts["linked"].as_u64()), (Some(ROWS - known), Some(known)), "{counts}");
        let keys = company_keys(&hubspot);
        assert_eq!(keys.len() as u64, ROWS - known, "one company per created row: {keys:?}");
        assert_eq!(links(&store, "companies").await, ROWS);
        assert_eq!(hubspot.companies().len() as u64, ROWS, "nothing created twice");
        assert_a_second_push_writes_nothing(&second, &hubspot, "companies").await;
    }

    async fn a_serve_killed_mid_push_of_a_mapped_contacts_table_creates_each_contact_once(db: TestDb, profile: HubSpotProfile) {
        let (store, hubspot, dir) = setup(&db, profile).await;
        let first = Serve::start(dir.path(), db.url(), &hubspot.base_url(), hubspot.access_token()).await;
        let id = job_id(&first.enqueue(json!({"direction": "push", "object": "contacts"})).await);
        // The first page was read by email: its create is on its way.
        until("the first read by email", || operations(&hubspot, "contacts.batch_read") > 0).await;
        let hold = WriteHold::take(&db, "object_links").await;
        until("contacts created in HubSpot", || hubspot.contact_count() > 0).await;
        first.kill();
        hold.release().await;
        assert!(
            links(&store, "contacts").await < hubspot.contact_count() as u64,
            "HubSpot applied creates whose links the kill lost"
        );

        restart_and_finish(dir.path(), &db, &hubspot, &id).await;
        let emails: HashSet<String> = hubspot
            .contacts()
            .into_iter()
            .filter_map(|c| c.properties.get("email").cloned())
            .collect();
        assert_eq!(emails.len() as u64, ROWS, "every row's email once");
        assert_eq!(hubspot.contact_count() as u64, ROWS, "nothing created twice");
        assert_eq!(links(&store, "contacts").await, ROWS);
    }
}

/// The tables, their rows, the mappings in the working directory's configuration, and a slow
/// HubSpot holding every `FOUND_BY_DOMAIN_EVERY`-th org already.
async fn setup(db: &TestDb, profile: HubSpotProfile) -> (Store, SandboxHandle, tempfile::TempDir) {
    let store = db.store().await;
    exec(
        &store,
        "CREATE TABLE orgs (id BIGINT PRIMARY KEY, name TEXT, domain TEXT, seats INTEGER)",
    )
    .await;
    exec(
        &store,
        "CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT UNIQUE, full_name TEXT)",
    )
    .await;
    let orgs: Vec<String> = (1..=ROWS)
        .map(|i| format!("({i}, 'Org {i}', 'org{i}.io', {i})"))
        .collect();
    exec(
        &store,
        &format!("INSERT INTO orgs VALUES {}", orgs.join(", ")),
    )
    .await;
    let users: Vec<String> = (1..=ROWS)
        .map(|i| format!("({i}, 'user{i}@org{i}.io', 'User {i}')"))
        .collect();
    exec(
        &store,
        &format!("INSERT INTO users VALUES {}", users.join(", ")),
    )
    .await;
    let hubspot = slow_sandbox(profile, HUBSPOT_LATENCY_MS, 15).await;
    let known: Vec<BTreeMap<String, String>> = (1..=ROWS)
        .filter(|i| i % FOUND_BY_DOMAIN_EVERY == 0)
        .map(|i| {
            BTreeMap::from([
                ("name".to_owned(), format!("Org {i} (made in HubSpot)")),
                ("domain".to_owned(), format!("org{i}.io")),
            ])
        })
        .collect();
    hubspot.insert_companies(known);
    let dir = tempfile::tempdir().expect("a working directory");
    std::fs::create_dir_all(dir.path().join("config")).expect("config directory");
    std::fs::write(dir.path().join("config/local.toml"), mappings()).expect("mappings");
    (store, hubspot, dir)
}

fn job_id(job: &Value) -> String {
    job["id"].as_str().expect("a job id").to_owned()
}

/// Rows of `object`'s mapping linked to a HubSpot record.
async fn links(store: &Store, object: &str) -> u64 {
    let rows = texts(
        store,
        &format!(
            "SELECT CAST(COUNT(*) AS TEXT) FROM object_links WHERE object = '{object}' \
             AND hs_object_id IS NOT NULL"
        ),
    )
    .await;
    rows[0][0]
        .as_deref()
        .unwrap_or("0")
        .parse()
        .expect("a count")
}

/// The distinct external keys HubSpot's companies carry.
fn company_keys(hubspot: &SandboxHandle) -> HashSet<String> {
    let keys: Vec<String> = hubspot
        .companies()
        .into_iter()
        .filter_map(|c| c.properties.get(COMPANY_KEY).cloned())
        .collect();
    let distinct: HashSet<String> = keys.iter().cloned().collect();
    assert_eq!(distinct.len(), keys.len(), "no key twice: {keys:?}");
    distinct
}

/// Starts `serve` again and waits until it has taken the dead process's job back and finished
/// it: succeeded on the second attempt, every row created or linked exactly once.
async fn restart_and_finish(
    dir: &Path,
    db: &TestDb,
    hubspot: &SandboxHandle,
    id: &str,
) -> (Serve, Value) {
    let second = Serve::start(dir, db.url(), &hubspot.base_url(), hubspot.access_token()).await;
    let done = second
        .wait_for(id, "the job to end", |job| {
            !matches!(
                job["status"].as_str(),
                Some("queued" | "running" | "retrying")
            )
        })
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        done["attempts"], 2,
        "resumed once, by the restarted process: {done:#}"
    );
    let counts = &done["counts"];
    let count = |name: &str| counts[name].as_u64().expect(name);
    assert_eq!(count("total"), ROWS, "{counts}");
    assert_eq!(
        (count("failed"), count("updated"), count("skipped")),
        (0, 0, 0),
        "{done:#}"
    );
    assert_eq!(count("created") + count("linked"), ROWS, "{counts}");
    assert_eq!(done["progress"]["processed"], ROWS, "{done:#}");
    (second, done)
}

/// Nothing is left to push: a second push counts nothing and sends HubSpot no write.
async fn assert_a_second_push_writes_nothing(serve: &Serve, hubspot: &SandboxHandle, object: &str) {
    let before = hubspot.stats().by_operation;
    let rerun = job_id(
        &serve
            .enqueue(json!({"direction": "push", "object": object}))
            .await,
    );
    let rerun = serve
        .wait_for(&rerun, "the second push to end", |job| {
            job["status"] == "succeeded"
        })
        .await;
    assert_eq!(rerun["counts"]["total"], 0, "{rerun:#}");
    let after = hubspot.stats().by_operation;
    let writes = |ops: &BTreeMap<String, u64>| -> u64 {
        ops.iter()
            .filter(|(op, _)| op.contains("create") || op.contains("update"))
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(writes(&after), writes(&before), "no write call to HubSpot");
}
