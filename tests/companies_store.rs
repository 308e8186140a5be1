//! crm-sync's own `companies` table, specified against every available backend.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::user_table::{exec, texts};
use crm_sync::ids::{CompanyId, ContactId, LocalCompanyId};
use crm_sync::store::{CompanyLink, ContactCompanyChange, NewCompany, NewContact, Store, Tx};

async fn execute(store: &Store, sql: &'static str, id: i64) {
    if let Some(pool) = store.pg_pool() {
        sqlx::query(sql).bind(id).execute(pool).await.map(drop)
    } else {
        sqlx::query(sql)
            .bind(id)
            .execute(store.sqlite_pool().unwrap())
            .await
            .map(drop)
    }
    .expect("execute");
}

/// `n` contacts with emails and nothing else; their ids.
async fn contacts(store: &Store, n: usize) -> Vec<ContactId> {
    let rows: Vec<NewContact> = (0..n)
        .map(|i| NewContact {
            email: Some(format!("c{i}@a.io")),
            ..NewContact::default()
        })
        .collect();
    store.insert_contacts(&rows).await.unwrap();
    store
        .list_contacts(None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

fn company(name: &str, domain: &str) -> NewCompany {
    NewCompany {
        name: Some(name.to_owned()),
        domain: Some(domain.to_owned()),
    }
}

backend_tests! {
    async fn domains_are_stored_trimmed_and_lower_case_and_may_repeat(db: TestDb) {
        let store = db.store().await;
        let ids = store
            .insert_companies(&[company("A", "  Shared.IO "), company("B", "shared.io"), company("C", " ")])
            .await
            .unwrap();
        let rows = store.list_companies(None, 10).await.unwrap();
        let domains: Vec<Option<&str>> = rows.iter().map(|c| c.domain.as_deref()).collect();
        assert_eq!(domains, [Some("shared.io"), Some("shared.io"), None], "{db}");
        assert_eq!(rows.iter().map(|c| c.id).collect::<Vec<_>>(), ids, "{db}");
        let page = store.list_companies(Some(ids[0]), 1).await.unwrap();
        assert_eq!(page[0].id, ids[1], "keyset pages by id: {db}");
    }

    async fn a_local_change_makes_a_pushed_company_a_candidate_again(db: TestDb) {
        let store = db.store().await;
        let ids = store.insert_companies(&[company("A", "a.io")]).await.unwrap();
        execute(&store, "UPDATE companies SET hs_object_id = '5', pushed_version = local_version WHERE id = $1", ids[0].0).await;
        assert_eq!(store.count_company_push_candidates(LocalCompanyId(0)).await.unwrap(), 0, "{db}");
        execute(&store, "UPDATE companies SET domain = 'A.IO' WHERE id = $1", ids[0].0).await;
        assert_eq!(
            store.count_company_push_candidates(LocalCompanyId(0)).await.unwrap(), 0,
            "rewriting the domain in another case is no change: {db}"
        );
        execute(&store, "UPDATE companies SET name = 'A2' WHERE id = $1", ids[0].0).await;
        let candidates = store.company_push_candidates(LocalCompanyId(0), 10).await.unwrap();
        assert_eq!(candidates.len(), 1, "{db}");
        assert_eq!(candidates[0].name.as_deref(), Some("A2"), "{db}");
    }

    async fn deleting_a_company_leaves_its_contacts_without_one(db: TestDb) {
        let store = db.store().await;
        let ids = store.insert_companies(&[company("A", "a.io")]).await.unwrap();
        store
            .insert_contacts(&[NewContact {
                email: Some("ada@a.io".to_owned()),
                first_name: None,
                last_name: None,
            }])
            .await
            .unwrap();
        assert_eq!(store.link_contacts_to_companies_by_email_domain().await.unwrap(), 1, "{db}");
        let contact = store.list_contacts(None, 1).await.unwrap().remove(0);
        assert_eq!(store.company_of_contact(contact.id).await.unwrap(), Some(ids[0]), "{db}");
        execute(&store, "DELETE FROM companies WHERE id = $1", ids[0].0).await;
        assert_eq!(store.company_of_contact(contact.id).await.unwrap(), None, "{db}");
        assert_eq!(store.count_contacts().await.unwrap(), 1, "{db}");
    }

    async fn a_contact_inserted_with_only_its_own_fields_is_still_valid(db: TestDb) {
        let store = db.store().await;
        execute(&store, "INSERT INTO contacts (email, first_name, last_name) VALUES ('x@y.io', 'X', CAST($1 AS TEXT))", 0).await;
        assert_eq!(store.count_contacts().await.unwrap(), 1, "{db}");
    }

    async fn a_pull_page_sets_local_companies_only_where_each_is_still_as_read(db: TestDb) {
        let store = db.store().await;
        let [a, b] = store.insert_companies(&[company("A", "a.io"), company("B", "b.io")]).await.unwrap()[..] else {
            panic!("two companies")
        };
        let ids = contacts(&store, 4).await;
        let set = |contact, company: Option<LocalCompanyId>, expected| ContactCompanyChange { contact, company, expected };
        let mut tx = Tx::begin(&store).await.unwrap();
        let first = tx.set_contact_companies(&[set(ids[1], Some(a), None), set(ids[2], Some(b), None)]).await.unwrap();
        assert_eq!(first, [ids[1], ids[2]], "{db}");
        tx.commit().await.unwrap();

        let mut tx = Tx::begin(&store).await.unwrap();
        let changed = tx
            .set_contact_companies(&[
                set(ids[0], Some(b), None),    // none → B, as read
                set(ids[1], Some(b), Some(a)), // A → B, as read
                set(ids[2], None, Some(a)),    // read as A, but it is B: a local change wins
                set(ids[3], None, None),       // nothing to change, and still as read
            ])
            .await
            .unwrap();
        tx.commit().await.unwrap();

        assert_eq!(changed, [ids[0], ids[1], ids[3]], "the contacts still as read, in the order given: {db}");
        let now = [
            store.company_of_contact(ids[0]).await.unwrap(),
            store.company_of_contact(ids[1]).await.unwrap(),
            store.company_of_contact(ids[2]).await.unwrap(),
            store.company_of_contact(ids[3]).await.unwrap(),
        ];
        assert_eq!(now, [Some(b), Some(b), Some(b), None], "{db}");
    }

    async fn a_page_of_synced_companies_is_recorded_replaced_and_cleared_at_once(db: TestDb) {
        let store = db.store().await;
        let ids = contacts(&store, 3).await;
        let hs = |id: &str| Some(CompanyId(id.to_owned()));
        let mut tx = Tx::begin(&store).await.unwrap();
        tx.save_synced_companies(&[(ids[0], hs("100")), (ids[1], hs("200")), (ids[2], hs("300"))]).await.unwrap();
        tx.commit().await.unwrap();

        let mut tx = Tx::begin(&store).await.unwrap();
        tx.save_synced_companies(&[(ids[0], hs("101")), (ids[1], None), (ids[2], hs("301")), (ids[2], None)])
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let synced = [
            store.synced_company_of_contact(ids[0]).await.unwrap(),
            store.synced_company_of_contact(ids[1]).await.unwrap(),
            store.synced_company_of_contact(ids[2]).await.unwrap(),
        ];
        assert_eq!(synced, [hs("101"), None, None], "replaced, cleared, and the last mention wins: {db}");

        let mut tx = Tx::begin(&store).await.unwrap();
        tx.save_synced_companies(&[(ids[1], hs("201"))]).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(store.synced_company_of_contact(ids[1]).await.unwrap(), None, "a page that did not commit records nothing: {db}");
    }

    async fn companies_relinked_in_one_call_each_take_their_contacts_synced_links_along(db: TestDb) {
        let store = db.store().await;
        let [a, b, c] = store
            .insert_companies(&[company("A", "a.io"), company("B", "b.io"), company("C", "c.io")])
            .await
            .unwrap()[..]
        else {
            panic!("three companies")
        };
        execute(&store, "UPDATE companies SET hs_object_id = '10' WHERE id = $1", a.0).await;
        execute(&store, "UPDATE companies SET hs_object_id = '20' WHERE id = $1", b.0).await;
        execute(&store, "UPDATE companies SET hs_object_id = '30' WHERE id = $1", c.0).await;
        // Contacts last synced with A's, B's and C's HubSpot companies, and with one no local
        // company holds; the mapped table's links likewise.
        let ids = contacts(&store, 4).await;
        let hs = |id: &str| Some(CompanyId::from(id));
        let mut tx = Tx::begin(&store).await.unwrap();
        tx.save_synced_companies(&[(ids[0], hs("10")), (ids[1], hs("20")), (ids[2], hs("30")), (ids[3], hs("99"))])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        exec(&store, "INSERT INTO object_links (object, local_key, company_hs_id) VALUES \
                      ('contacts', 'u1', '10'), ('contacts', 'u2', '20'), ('contacts', 'u3', '30')").await;

        // One page moves A's link to 11 and B's to 21; C was read as 33, but it is 30 now:
        // its link stays, and so do its contacts'.
        let link = |id, read: &str, new: &str| CompanyLink {
            id,
            read_hs_object_id: Some(CompanyId::from(read)),
            hs_object_id: CompanyId::from(new),
            pushed_version: None,
        };
        let mut tx = Tx::begin(&store).await.unwrap();
        let clashes = tx.link_companies(&[link(a, "10", "11"), link(b, "20", "21"), link(c, "33", "31")]).await.unwrap();
        tx.commit().await.unwrap();
        assert!(clashes.is_empty(), "{clashes:?}: {db}");

        let linked: Vec<Option<String>> =
            store.list_companies(None, 10).await.unwrap().into_iter().map(|c| c.hs_object_id.map(|id| id.0)).collect();
        assert_eq!(linked, [Some("11".to_owned()), Some("21".to_owned()), Some("30".to_owned())], "{db}");
        let synced = [
            store.synced_company_of_contact(ids[0]).await.unwrap(),
            store.synced_company_of_contact(ids[1]).await.unwrap(),
            store.synced_company_of_contact(ids[2]).await.unwrap(),
            store.synced_company_of_contact(ids[3]).await.unwrap(),
        ];
        assert_eq!(synced, [hs("11"), hs("21"), hs("30"), hs("99")], "each moved company takes its own contacts along: {db}");
        let mapped = texts(&store, "SELECT local_key, company_hs_id FROM object_links ORDER BY local_key").await;
        let mapped: Vec<(String, String)> = mapped
            .into_iter()
            .map(|row| (row[0].clone().unwrap(), row[1].clone().unwrap()))
            .collect();
        let expected = [("u1", "11"), ("u2", "21"), ("u3", "30")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(mapped, expected, "and the mapped table's links: {db}");
    }
}
