//! Seeding test data, specified against every available backend (see `tests/common`).

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::TestDb;
use crm_sync::seed::{Catalog, Industry, seed};
use crm_sync::store::Store;

fn catalog() -> Catalog {
    // An empty working directory: the vocabularies built into the binary.
    let dir = tempfile::tempdir().expect("create a temporary folder");
    Catalog::load(dir.path()).expect("the built-in vocabularies load")
}

/// (email, first name, last name) of every contact, in insertion order.
async fn rows(store: &Store) -> Vec<(Option<String>, Option<String>, Option<String>)> {
    let total = store.count_contacts().await.unwrap();
    let limit = u32::try_from(total).expect("a test-sized table");
    let contacts = store.list_contacts(None, limit).await.unwrap();
    assert_eq!(contacts.len() as i64, total);
    contacts
        .into_iter()
        .map(|c| (c.email, c.first_name, c.last_name))
        .collect()
}

async fn seed_quietly(store: &Store, industry: &Industry, count: u64, rng_seed: u64) -> u64 {
    seed(store, industry, count, rng_seed, |_| {})
        .await
        .unwrap()
        .inserted
}

backend_tests! {
    async fn seeding_inserts_exactly_the_requested_count(db: TestDb) {
        let store = db.store().await;
        let catalog = catalog();
        let mut progress = Vec::new();
        let report = seed(&store, catalog.industry("saas").unwrap(), 1_000, 42, |n| progress.push(n))
            .await
            .unwrap();
        assert_eq!(report.inserted, 1_000, "{db}");
        assert_eq!(report.generated, 1_000, "{db}");
        assert_eq!(store.count_contacts().await.unwrap(), 1_000, "{db}");
        assert_eq!(progress.last(), Some(&1_000), "{db}");
    }

    async fn seeding_twice_with_the_same_seed_adds_new_contacts(db: TestDb) {
        let store = db.store().await;
        let catalog = catalog();
        let retail = catalog.industry("retail").unwrap();
        assert_eq!(seed_quietly(&store, retail, 1_000, 7).await, 1_000, "{db}");

        let again = seed(&store, retail, 1_000, 7, |_| {}).await.unwrap();
        assert_eq!(again.inserted, 1_000, "{db}");
        assert!(again.generated > 1_000, "the replayed rows were skipped, not counted: {again:?}");
        assert_eq!(store.count_contacts().await.unwrap(), 2_000, "{db}");
    }

    async fn seeding_many_batches_reports_progress_after_each(db: TestDb) {
        let store = db.store().await;
        let catalog = catalog();
        let mut progress = Vec::new();
        seed(&store, catalog.industry("finance").unwrap(), 12_000, 1, |n| progress.push(n))
            .await
            .unwrap();
        assert_eq!(progress, [5_000, 10_000, 12_000], "{db}");
        let emails: Vec<String> = rows(&store).await.into_iter().filter_map(|r| r.0).collect();
        assert!(emails.iter().all(|e| *e == e.to_lowercase()), "{db}");
        let without = 12_000 - emails.len();
        assert!((120..=600).contains(&without), "{without} of 12,000 without email on {db}");
    }

    async fn seeding_nothing_inserts_nothing(db: TestDb) {
        let store = db.store().await;
        let catalog = catalog();
        let report = seed(&store, catalog.industry("education").unwrap(), 0, 1, |_| {})
            .await
            .unwrap();
        assert_eq!((report.inserted, report.generated), (0, 0), "{db}");
        assert_eq!(store.count_contacts().await.unwrap(), 0, "{db}");
    }
}

/// Same seed on two fresh databases → the same rows in the same order.
async fn same_rows_on_two_databases(first: TestDb, second: TestDb) {
    let catalog = catalog();
    let health = catalog.industry("healthcare").unwrap();
    let (a, b) = (first.store().await, second.store().await);
    seed_quietly(&a, health, 1_000, 2024).await;
    seed_quietly(&b, health, 1_000, 2024).await;
    let (rows_a, rows_b) = (rows(&a).await, rows(&b).await);
    assert_eq!(rows_a.len(), 1_000);
    assert_eq!(rows_a, rows_b, "{first} vs {second}");
}

#[tokio::test]
async fn the_same_seed_gives_identical_rows_on_fresh_sqlite_databases() {
    same_rows_on_two_databases(TestDb::sqlite().await, TestDb::sqlite().await).await;
}

#[tokio::test]
async fn the_same_seed_gives_identical_rows_on_fresh_postgres_databases() {
    let Some(first) = TestDb::postgres_if_available().await else {
        return;
    };
    let Some(second) = TestDb::postgres_if_available().await else {
        return;
    };
    same_rows_on_two_databases(first, second).await;
}

#[tokio::test]
async fn the_same_seed_gives_identical_rows_across_backends() {
    let Some(postgres) = TestDb::postgres_if_available().await else {
        return;
    };
    same_rows_on_two_databases(TestDb::sqlite().await, postgres).await;
}

/// The speed figure of the README: `cargo test --release --test seed -- --ignored --nocapture`.
/// Prints, never asserts a time (speed belongs to benchmarks, not pass/fail).
#[tokio::test]
#[ignore = "benchmark: 100,000 contacts; run in release with --ignored --nocapture"]
async fn benchmark_seeding_100k_contacts() {
    let catalog = catalog();
    let saas = catalog.industry("saas").unwrap();
    for db in TestDb::all().await {
        let store = db.store().await;
        let report = seed(&store, saas, 100_000, 1, |_| {}).await.unwrap();
        assert_eq!(store.count_contacts().await.unwrap(), 100_000);
        println!(
            "{}: seeded {} contacts in {:.2} s",
            db.backend(),
            report.inserted,
            report.elapsed.as_secs_f64()
        );
    }
}

backend_tests! {
    async fn seeding_fills_the_industrys_companies_and_links_contacts_by_email_domain(db: TestDb) {
        let store = db.store().await;
        let catalog = catalog();
        let saas = catalog.industry("saas").unwrap();
        let report = seed(&store, saas, 200, 3, |_| {}).await.unwrap();
        assert_eq!(report.companies_inserted, saas.companies.len() as u64, "{db}");
        // Every seeded email is on an industry domain; the few contacts without email have none.
        assert!(report.contacts_linked > 100 && report.contacts_linked <= 200, "{report:?} {db}");
        let companies = store.list_companies(None, 1000).await.unwrap();
        let keystone = companies.iter().find(|c| c.name.as_deref() == Some("Keystone CRM")).unwrap();
        assert_eq!(keystone.domain.as_deref(), Some("keystonecrm.com"), "{db}");

        let contacts = store.list_contacts(None, 1).await.unwrap();
        let company = store.company_of_contact(contacts[0].id).await.unwrap().expect("linked");
        let company = store.get_company(company).await.unwrap().unwrap();
        let email = contacts[0].email.clone().unwrap();
        assert!(email.ends_with(&format!("@{}", company.domain.unwrap())), "{db}");

        let again = seed(&store, saas, 10, 4, |_| {}).await.unwrap();
        assert_eq!(again.companies_inserted, 0, "the same companies are not seeded twice: {db}");
        assert!(again.contacts_linked <= 10, "only the new contacts are linked: {db}");
        assert_eq!(store.count_companies().await.unwrap(), saas.companies.len() as i64, "{db}");
    }
}
