//! Durability of a contacts push with companies in the real service: `crm-sync serve` killed
//! with SIGKILL while the push links the contacts' companies, or while it writes their
//! associations, and started again, finishes the job — every company and every contact in
//! HubSpot exactly once, each contact with exactly its local company as primary — on SQLite
//! and PostgreSQL, under every way HubSpot may answer (`HubSpotProfile`).
//!
//! A contacts push runs three phases: link the companies its contacts name (found by external
//! key, by a single domain match, or created), push the contacts, write the associations.
//! Each spec kills at the worst moment of its phase: the test holds the page's local commit
//! back (`WriteHold`: a table lock on PostgreSQL, the write lock on SQLite) until HubSpot has
//! applied the page's writes, then kills — so the restarted run always meets writes it made
//! but did not record, and must find them again rather than make them twice.
//! Nothing is shortened for the test: the restarted process gets the job back through the
//! orphan recovery production relies on (the dead worker misses its heartbeats, about
//! 15–20 s), so each run takes about half a minute.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::associated::{
    ContactWithCompany, assert_each_contact_has_only_its_company_as_primary,
    assert_one_hubspot_company_per_local_company, contacts_with_companies, linked_companies,
};
use common::process::Serve;
use common::pushed::{assert_one_hubspot_contact_per_row, linked_rows};
use common::watch::{operations, until};
use common::world::slow_sandbox;
use common::write_hold::WriteHold;
use crm_sync::hubspot::{Auth, ClientConfig, HubSpotClient};
use crm_sync::jobs::model::Counts;
use crm_sync::sandbox::SandboxHandle;
use crm_sync::secret::Secret;
use crm_sync::store::{NewCompany, NewContact, Store};
use crm_sync::sync::companies::COMPANY_KEY;
use crm_sync::sync::keys::ExternalKeys;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Local companies: three pages of the company phase, so that a kill lands in the middle.
const COMPANIES: u64 = 300;
/// Every company has this many contacts (`contacts.company_id`), by email domain.
const CONTACTS_PER_COMPANY: u64 = 3;
/// Local contacts: nine pages of the association phase.
const CONTACTS: u64 = COMPANIES * CONTACTS_PER_COMPANY;
/// Every `FOUND_BY_DOMAIN_EVERY`-th company is in HubSpot already, made by someone else without
/// crm-sync's key: the push must find it by its domain and link it, not create a second one.
const FOUND_BY_DOMAIN_EVERY: u64 = 30;
/// Each HubSpot answer takes this long, so that each phase lasts a few seconds.
const HUBSPOT_LATENCY_MS: u64 = 300;

backend_tests! {
    async fn a_serve_killed_while_linking_companies_finishes_the_push_with_each_company_once(db: TestDb, profile: HubSpotProfile) {
        let store = db.store().await;
        let hubspot = slow_sandbox(profile, HUBSPOT_LATENCY_MS, 14).await;
        seed(&store, &hubspot).await;
        let known = hubspot.companies().len() as u64;
        let dir = tempfile::tempdir().expect("a working directory");

        let first = Serve::start(dir.path(), db.url(), &hubspot.base_url(), hubspot.access_token()).await;
        let id = job_id(&first.enqueue_push().await);
        // The first page of companies was read by key and searched by domain: its create is
        // on its way. Its links cannot commit from now on, so the kill lands after HubSpot
        // applied the create and before the links were saved.
        until("the first domain search of the company phase", || {
            operations(&hubspot, "companies.search") > 0
        })
        .await;
        let hold = WriteHold::take(&db, "companies").await;
        until("companies created in HubSpot", || hubspot.companies().len() as u64 > known).await;
        first.kill();
        hold.release().await;

        // What the dead process left: companies HubSpot holds with our key whose local rows
        // are not linked; no contact pushed yet.
        let keys = ExternalKeys::new(&store.installation().await.expect("installation"));
        let unlinked = created_but_not_linked(&store, &hubspot, &keys).await;
        assert!(unlinked > 0, "HubSpot applied a page whose links the kill lost");
        assert!(
            (hubspot.companies().len() as u64) < COMPANIES,
            "killed before the last company"
        );
        assert_eq!(hubspot.contact_count(), 0, "killed before the contact phase");
        let left = store.get_job(id.parse().expect("a job id")).await.unwrap().unwrap();
        assert_eq!(left.progress.processed, 0, "{left:#?}");

        let second = restart_and_finish(dir.path(), &db, &hubspot, &id).await;
        assert_pushed_once_each(&store, &hubspot).await;
        assert_a_second_push_writes_nothing(&second, &hubspot).await;
    }

    async fn a_serve_killed_while_writing_associations_finishes_the_push_with_each_pair_once(db: TestDb, profile: HubSpotProfile) {
        let store = db.store().await;
        let hubspot = slow_sandbox(profile, HUBSPOT_LATENCY_MS, 14).await;
        seed(&store, &hubspot).await;
        let dir = tempfile::tempdir().expect("a working directory");

        let first = Serve::start(dir.path(), db.url(), &hubspot.base_url(), hubspot.access_token()).await;
        let id = job_id(&first.enqueue_push().await);
        first
            .wait_for(&id, "the first page of associations committed", |job| {
                job["counts"]["associations_created"].as_u64() >= Some(100)
            })
            .await;
        // No association page commits from now on: the kill lands after HubSpot applied the
        // next page's pairs and before their state rows and counts were saved.
        let hold = WriteHold::take(&db, "contact_company_links").await;
        let committed = associations_created(&store, &id).await;
        assert!(committed < CONTACTS, "the phase is not over yet: {committed}");
        let contacts = contacts_with_companies(&store).await;
        until("HubSpot holding pairs beyond the committed ones", || {
            contacts_with_a_company(&hubspot, &contacts) > committed
        })
        .await;
        first.kill();
        hold.release().await;

        // What the dead process left: companies and contacts pushed, more pairs in HubSpot
        // than the job counted.
        assert_eq!(hubspot.companies().len() as u64, COMPANIES);
        assert_eq!(hubspot.contact_count() as u64, CONTACTS);
        assert_eq!(associations_created(&store, &id).await, committed, "nothing committed since");
        let in_hubspot = contacts_with_a_company(&hubspot, &contacts);
        assert!(
            committed > 0 && committed < in_hubspot && in_hubspot < CONTACTS,
            "killed mid-phase with a page applied but not committed: {committed} committed, \
             {in_hubspot} in HubSpot"
        );

        let second = restart_and_finish(dir.path(), &db, &hubspot, &id).await;
        assert_pushed_once_each(&store, &hubspot).await;
        assert_a_second_push_writes_nothing(&second, &hubspot).await;
    }
}

/// The job's committed `associations_created`, read from the database.
async fn associations_created(store: &Store, id: &str) -> u64 {
    let job = store
        .get_job(id.parse().expect("a job id"))
        .await
        .unwrap()
        .unwrap();
    let Counts::Push(counts) = job.counts else {
        panic!("push counts: {job:#?}")
    };
    counts.associations_created
}

/// How many of `contacts` HubSpot associates with a company.
fn contacts_with_a_company(hubspot: &SandboxHandle, contacts: &[ContactWithCompany]) -> u64 {
    contacts
        .iter()
        .filter_map(|c| c.hs_object_id.as_deref())
        .filter(|id| !hubspot.companies_of_contact(id).is_empty())
        .count() as u64
}

/// How many HubSpot companies carry the external key of a local company that is not linked.
async fn created_but_not_linked(
    store: &Store,
    hubspot: &SandboxHandle,
    keys: &ExternalKeys,
) -> usize {
    let unlinked: HashSet<i64> = linked_companies(store)
        .await
        .into_iter()
        .filter(|c| c.hs_object_id.is_none())
        .map(|c| c.id)
        .collect();
    hubspot
        .companies()
        .iter()
        .filter_map(|c| c.properties.get(COMPANY_KEY))
        .filter_map(|key| keys.parse_company(key))
        .filter(|id| unlinked.contains(&id.0))
        .count()
}

/// `COMPANIES` local companies `Company {i}` at `co{i}.io`, each with
/// `CONTACTS_PER_COMPANY` contacts `person{j}@co{i}.io` linked to it by their email's
/// domain; every `FOUND_BY_DOMAIN_EVERY`-th company also in HubSpot already, without key.
async fn seed(store: &Store, hubspot: &SandboxHandle) {
    let companies: Vec<NewCompany> = (1..=COMPANIES)
        .map(|i| NewCompany {
            name: Some(format!("Company {i}")),
            domain: Some(format!("co{i}.io")),
        })
        .collect();
    store.insert_companies(&companies).await.expect("companies");
    let contacts: Vec<NewContact> = (0..CONTACTS)
        .map(|j| NewContact {
            email: Some(format!("person{j}@co{}.io", j % COMPANIES + 1)),
            first_name: Some(format!("First{j}")),
            last_name: Some(format!("Last{j}")),
        })
        .collect();
    assert_eq!(
        store.insert_contacts(&contacts).await.expect("contacts"),
        CONTACTS
    );
    let linked = store
        .link_contacts_to_companies_by_email_domain()
        .await
        .expect("link contacts to companies");
    assert_eq!(linked, CONTACTS, "every contact has a company");
    let known: Vec<BTreeMap<String, String>> = (1..=COMPANIES)
        .filter(|i| i % FOUND_BY_DOMAIN_EVERY == 0)
        .map(|i| {
            BTreeMap::from([
                ("name".to_owned(), format!("Company {i} (made in HubSpot)")),
                ("domain".to_owned(), format!("co{i}.io")),
            ])
        })
        .collect();
    hubspot.insert_companies(known);
}

fn job_id(job: &Value) -> String {
    job["id"].as_str().expect("a job id").to_owned()
}

/// Starts `serve` again on the same database and waits until it has taken the dead process's
/// job back and finished it: succeeded on the second attempt, with exact counts.
async fn restart_and_finish(
    dir: &Path,
    db: &common::TestDb,
    hubspot: &SandboxHandle,
    id: &str,
) -> Serve {
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
    assert_eq!(count("total"), CONTACTS, "{counts}");
    assert_eq!(count("failed"), 0, "{done:#}");
    assert_eq!(count("updated") + count("skipped"), 0, "{counts}");
    assert_eq!(
        count("created") + count("linked"),
        CONTACTS,
        "every contact created or linked exactly once: {counts}"
    );
    assert_eq!(
        (
            count("associations_created"),
            count("associations_removed"),
            count("associations_failed")
        ),
        (CONTACTS, 0, 0),
        "one primary pair per contact, counted once though a kill cut a page short: {counts}"
    );
    assert_eq!(done["progress"]["processed"], CONTACTS, "{done:#}");
    second
}

/// Every local company and contact in HubSpot exactly once, and each contact associated with
/// exactly its local company, as primary.
async fn assert_pushed_once_each(store: &Store, hubspot: &SandboxHandle) {
    let keys = ExternalKeys::new(&store.installation().await.expect("installation"));
    let companies = linked_companies(store).await;
    assert_eq!(companies.len() as u64, COMPANIES);
    assert_one_hubspot_company_per_local_company(&companies, &hubspot.companies(), &keys);
    let rows = linked_rows(store).await;
    assert_eq!(rows.len() as u64, CONTACTS);
    assert_eq!(
        hubspot.contact_count() as u64,
        CONTACTS,
        "one HubSpot contact per row"
    );
    assert_one_hubspot_contact_per_row(&rows, &hubspot.contacts(), &keys);
    let contacts = contacts_with_companies(store).await;
    assert_eq!(contacts.len() as u64, CONTACTS);
    assert_each_contact_has_only_its_company_as_primary(&client(hubspot), &contacts).await;
}

/// Nothing is left to push: a second push counts nothing and sends HubSpot no write.
async fn assert_a_second_push_writes_nothing(serve: &Serve, hubspot: &SandboxHandle) {
    let writes = hubspot_writes(hubspot);
    let rerun = job_id(&serve.enqueue_push().await);
    let rerun = serve
        .wait_for(&rerun, "the second push to end", |job| {
            job["status"] == "succeeded"
        })
        .await;
    let counts = &rerun["counts"];
    assert_eq!(counts["total"], 0, "{rerun:#}");
    assert_eq!(counts["associations_created"], 0, "{rerun:#}");
    assert_eq!(counts["associations_removed"], 0, "{rerun:#}");
    assert_eq!(hubspot_writes(hubspot), writes, "no write call to HubSpot");
}

/// A client of the test's own, to read HubSpot's associations as they are.
fn client(hubspot: &SandboxHandle) -> HubSpotClient {
    let mut config = ClientConfig::new(hubspot.base_url().parse().expect("sandbox URL"));
    config.requests_per_10s = 0;
    config.search_per_second = 0;
    HubSpotClient::new(
        config,
        Auth::PrivateApp(Secret::new(hubspot.access_token())),
    )
    .expect("a client")
}

/// Write calls (contacts, companies, associations) HubSpot has answered so far.
fn hubspot_writes(hubspot: &SandboxHandle) -> u64 {
    let writes = ["create", "update", "archive", "merge", "associate", "put_"];
    hubspot
        .stats()
        .by_operation
        .iter()
        .filter(|(op, _)| {
            let verb = op.split_once('.').map_or(op.as_str(), |(_, verb)| verb);
            writes.iter().any(|w| verb.contains(w))
        })
        .map(|(_, n)| n)
        .sum()
}
