//! crm-sync's `object_links` table (the sync state of a `[[sync.objects]]` mapping to a user's
//! table) as the mapped push and pull write it a page at a time, specified against every
//! available backend.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::collections::BTreeMap;

use crm_sync::ids::HsObjectId;
use crm_sync::mapping::{ColumnName, TableRef};
use crm_sync::store::{KeyKind, LinkHeld, LinkWrite, LocalTable, Store, Tx};

/// A link row as a test reads it: key, HubSpot id, pushed hash, synced values, deleted.
type Row = (String, Option<String>, Option<String>, String, bool);

/// A link row as the database answers it: the same, with the deleted mark as a word.
type RawRow = (String, Option<String>, Option<String>, String, String);

/// The `contacts` link rows, by key.
async fn links(store: &Store) -> Vec<Row> {
    const SQL: &str = "SELECT local_key, hs_object_id, pushed_hash, synced_values, \
         CASE WHEN hubspot_deleted_at IS NULL THEN 'live' ELSE 'deleted' END \
         FROM object_links WHERE object = 'contacts' ORDER BY local_key";
    let rows: Vec<RawRow> = match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pool), _) => sqlx::query_as(SQL).fetch_all(pool).await,
        (_, Some(pool)) => sqlx::query_as(SQL).fetch_all(pool).await,
        _ => unreachable!("a store has one pool"),
    }
    .expect("read object_links");
    rows.into_iter()
        .map(|(k, id, hash, synced, state)| (k, id, hash, synced, state == "deleted"))
        .collect()
}

fn row(key: &str, id: Option<&str>, hash: Option<&str>, synced: &str) -> Row {
    (
        key.to_owned(),
        id.map(str::to_owned),
        hash.map(str::to_owned),
        synced.to_owned(),
        false,
    )
}

/// A link of `key` to `id` with `hash` pushed and `email` synced.
fn link(key: &str, id: Option<&str>, hash: Option<&str>, email: &str) -> LinkWrite {
    LinkWrite {
        key: key.to_owned(),
        hs_object_id: id.map(HsObjectId::from),
        pushed_hash: hash.map(str::to_owned),
        synced: BTreeMap::from([("email".to_owned(), email.to_owned())]),
    }
}

fn held(key: &str, id: &str, holder: &str) -> LinkHeld {
    LinkHeld {
        key: key.to_owned(),
        hs_object_id: HsObjectId::from(id),
        holder: holder.to_owned(),
    }
}

/// Saves one page of links in its own transaction; what was held.
async fn save(store: &Store, page: &[LinkWrite]) -> Vec<LinkHeld> {
    let mut tx = Tx::begin(store).await.unwrap();
    let held = tx.save_object_links("contacts", page).await.unwrap();
    tx.commit().await.unwrap();
    held
}

async fn exec(store: &Store, sql: &'static str) {
    match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pool), _) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        (_, Some(pool)) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        _ => unreachable!("a store has one pool"),
    }
    .expect(sql);
}

/// A user's table keyed by text, with a whole-number and a text id column; its mapping's
/// view of it.
async fn people(store: &Store) -> LocalTable {
    exec(
        store,
        "CREATE TABLE people (code TEXT PRIMARY KEY, hs_number BIGINT, hs_text TEXT); \
         INSERT INTO people (code, hs_number, hs_text) VALUES ('a', 1, 'x'), ('b', 2, 'y'), ('c', 3, 'z')",
    )
    .await;
    LocalTable {
        object: "contacts",
        table: TableRef::parse("people").unwrap(),
        key: ColumnName::parse("code").unwrap(),
        key_kind: KeyKind::Text,
        columns: Vec::new(),
    }
}

/// `people` as (code, hs_number, hs_text) text.
async fn people_ids(store: &Store) -> Vec<(String, Option<String>, Option<String>)> {
    const SQL: &str = "SELECT code, CAST(hs_number AS TEXT), hs_text FROM people ORDER BY code";
    match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pool), _) => sqlx::query_as(SQL).fetch_all(pool).await,
        (_, Some(pool)) => sqlx::query_as(SQL).fetch_all(pool).await,
        _ => unreachable!("a store has one pool"),
    }
    .expect("read people")
}

fn person(
    code: &str,
    number: Option<&str>,
    text: Option<&str>,
) -> (String, Option<String>, Option<String>) {
    (
        code.to_owned(),
        number.map(str::to_owned),
        text.map(str::to_owned),
    )
}

backend_tests! {
    async fn a_pull_reads_its_rows_again_locked_so_no_other_writer_changes_them_before_its_write(db: TestDb) {
        let store = db.store().await;
        let mut table = people(&store).await;
        table.columns = vec![ColumnName::parse("hs_text").unwrap(), ColumnName::parse("hs_number").unwrap()];
        let mut tx = Tx::begin(&store).await.unwrap();
        let mut values = tx
            .local_values_locked(&table, &["c".to_owned(), "a".to_owned(), "zz".to_owned()])
            .await
            .unwrap();
        values.sort();
        assert_eq!(
            values,
            vec![
                ("a".to_owned(), vec![Some("x".to_owned()), Some("1".to_owned())]),
                ("c".to_owned(), vec![Some("z".to_owned()), Some("3".to_owned())]),
            ],
            "the rows' mapped columns as text, in the table's column order: {db}"
        );
        // Another session's change of a locked row waits for the pull's transaction.
        let other = store.clone();
        let writer = tokio::spawn(async move {
            exec(&other, "UPDATE people SET hs_text = 'changed' WHERE code = 'a'").await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!writer.is_finished(), "the other writer waits while the rows are locked: {db}");
        tx.commit().await.unwrap();
        writer.await.unwrap();
        assert_eq!(people_ids(&store).await[0], person("a", Some("1"), Some("changed")));
    }

    async fn a_page_of_id_column_values_is_written_with_the_last_value_of_each_key(db: TestDb) {
        let store = db.store().await;
        let table = people(&store).await;
        let values = |pairs: &[(&str, Option<&str>)]| -> Vec<(String, Option<String>)> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned))).collect()
        };
        let mut tx = Tx::begin(&store).await.unwrap();
        let number = ColumnName::parse("hs_number").unwrap();
        tx.update_local_column(&table, &number, KeyKind::Integer,
            &values(&[("a", Some("101")), ("b", None), ("a", Some("111")), ("zz", Some("9"))]))
            .await
            .unwrap();
        let text = ColumnName::parse("hs_text").unwrap();
        tx.update_local_column(&table, &text, KeyKind::Text, &values(&[("c", Some("303")), ("b", Some("202"))]))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            people_ids(&store).await,
            [
                person("a", Some("111"), Some("x")),
                person("b", None, Some("202")),
                person("c", Some("3"), Some("303")),
            ],
            "only the given rows and column change; an unknown key changes nothing: {db}"
        );

        let mut tx = Tx::begin(&store).await.unwrap();
        let refused = tx
            .update_local_column(&table, &number, KeyKind::Integer, &values(&[("a", Some("not a number"))]))
            .await;
        assert!(refused.is_err(), "a text value for a whole-number column is refused: {db}");
    }

    async fn a_hubspot_id_another_key_holds_is_reported_and_not_taken(db: TestDb) {
        let store = db.store().await;
        assert!(save(&store, &[link("1", Some("101"), Some("h1"), "a@x.io")]).await.is_empty());

        let page = [link("2", Some("101"), Some("h2"), "b@x.io")];
        assert_eq!(save(&store, &page).await, [held("2", "101", "1")], "{db}");
        assert_eq!(
            links(&store).await,
            [row("1", Some("101"), Some("h1"), r#"{"email":"a@x.io"}"#)],
            "the holder keeps its link and the asker gets no row: {db}"
        );
    }

    async fn saving_the_same_links_again_changes_nothing(db: TestDb) {
        let store = db.store().await;
        let page = [
            link("1", Some("101"), Some("h1"), "a@x.io"),
            link("2", None, Some("h2"), "b@x.io"),
        ];
        assert!(save(&store, &page).await.is_empty());
        let first = links(&store).await;
        assert!(save(&store, &page).await.is_empty(), "a key holding its own id is no clash: {db}");
        assert_eq!(links(&store).await, first, "{db}");
        assert_eq!(
            first,
            [
                row("1", Some("101"), Some("h1"), r#"{"email":"a@x.io"}"#),
                row("2", None, Some("h2"), r#"{"email":"b@x.io"}"#),
            ],
            "{db}"
        );
    }

    async fn a_page_mixing_new_changed_and_clashing_links_writes_all_but_the_clashes(db: TestDb) {
        let store = db.store().await;
        save(&store, &[
            link("1", Some("101"), Some("h1"), "a@x.io"),
            link("2", Some("102"), Some("h2"), "b@x.io"),
            link("3", Some("103"), Some("h3"), "c@x.io"),
        ])
        .await;

        let page = [
            // Changed: a new hash and new synced values.
            link("1", Some("101"), Some("h1b"), "a2@x.io"),
            // Changed, no new hash: the stored one stays.
            link("2", Some("102"), None, "b2@x.io"),
            // Clashing with a key outside the page's writes.
            link("4", Some("103"), Some("h4"), "d@x.io"),
            // New.
            link("5", Some("105"), Some("h5"), "e@x.io"),
            // Clashing with a key linked earlier in the same page.
            link("6", Some("105"), Some("h6"), "f@x.io"),
            // Moves to a new record, letting 3's old record go...
            link("3", Some("107"), Some("h3b"), "c2@x.io"),
            // ...which a later key of the page then takes.
            link("7", Some("103"), Some("h7"), "g@x.io"),
            // New, without a HubSpot id.
            link("8", None, Some("h8"), "h@x.io"),
        ];
        assert_eq!(
            save(&store, &page).await,
            [held("4", "103", "3"), held("6", "105", "5")],
            "{db}"
        );
        assert_eq!(
            links(&store).await,
            [
                row("1", Some("101"), Some("h1b"), r#"{"email":"a2@x.io"}"#),
                row("2", Some("102"), Some("h2"), r#"{"email":"b2@x.io"}"#),
                row("3", Some("107"), Some("h3b"), r#"{"email":"c2@x.io"}"#),
                row("5", Some("105"), Some("h5"), r#"{"email":"e@x.io"}"#),
                row("7", Some("103"), Some("h7"), r#"{"email":"g@x.io"}"#),
                row("8", None, Some("h8"), r#"{"email":"h@x.io"}"#),
            ],
            "{db}"
        );
    }

    async fn two_keys_trading_their_records_in_one_page_both_stay_as_they_were(db: TestDb) {
        let store = db.store().await;
        save(&store, &[
            link("1", Some("101"), Some("h1"), "a@x.io"),
            link("2", Some("102"), Some("h2"), "b@x.io"),
        ])
        .await;
        let before = links(&store).await;

        let page = [
            link("1", Some("102"), Some("h1b"), "a@x.io"),
            link("2", Some("101"), Some("h2b"), "b@x.io"),
        ];
        assert_eq!(
            save(&store, &page).await,
            [held("1", "102", "2"), held("2", "101", "1")],
            "each asks for a record the other still holds: {db}"
        );
        assert_eq!(links(&store).await, before, "{db}");
    }

    async fn a_key_written_twice_in_a_page_keeps_its_last_write_and_first_hash(db: TestDb) {
        let store = db.store().await;
        let page = [
            link("1", Some("101"), Some("h1"), "a@x.io"),
            link("1", Some("102"), None, "a2@x.io"),
            // 1 let 101 go: it is free again.
            link("2", Some("101"), Some("h2"), "b@x.io"),
        ];
        assert!(save(&store, &page).await.is_empty(), "{db}");
        assert_eq!(
            links(&store).await,
            [
                row("1", Some("102"), Some("h1"), r#"{"email":"a2@x.io"}"#),
                row("2", Some("101"), Some("h2"), r#"{"email":"b@x.io"}"#),
            ],
            "{db}"
        );
    }

    async fn marking_deleted_drops_the_link_and_creates_rows_for_unlinked_keys(db: TestDb) {
        let store = db.store().await;
        save(&store, &[link("1", Some("101"), Some("h1"), "a@x.io")]).await;

        let mut tx = Tx::begin(&store).await.unwrap();
        let keys = ["1".to_owned(), "2".to_owned(), "1".to_owned()];
        tx.mark_deleted_in_hubspot("contacts", &keys).await.unwrap();
        tx.commit().await.unwrap();

        let mut gone = row("1", None, Some("h1"), r#"{"email":"a@x.io"}"#);
        gone.4 = true;
        let mut never_linked = row("2", None, None, "{}");
        never_linked.4 = true;
        assert_eq!(links(&store).await, [gone, never_linked], "{db}");
        assert!(
            save(&store, &[link("3", Some("101"), Some("h3"), "c@x.io")]).await.is_empty(),
            "the deleted record's id is free: {db}"
        );
    }

    async fn relinking_to_survivors_moves_rows_and_reports_survivors_already_held(db: TestDb) {
        let store = db.store().await;
        save(&store, &[
            link("1", Some("101"), Some("h1"), "a@x.io"),
            link("2", Some("102"), Some("h2"), "b@x.io"),
            link("3", Some("103"), Some("h3"), "c@x.io"),
            link("4", Some("200"), Some("h4"), "d@x.io"),
        ])
        .await;

        let survivor = |id: &str| HsObjectId::from(id);
        let moves = [
            // 101 and 102 merged into 300: the first moves, the second is reported.
            ("1".to_owned(), survivor("300")),
            ("2".to_owned(), survivor("300")),
            // Merged into a record another key holds.
            ("3".to_owned(), survivor("200")),
            // A key without a link row gets none.
            ("9".to_owned(), survivor("900")),
        ];
        let mut tx = Tx::begin(&store).await.unwrap();
        let reported = tx.relink_objects("contacts", &moves).await.unwrap();
        tx.commit().await.unwrap();

        assert_eq!(reported, [held("2", "300", "1"), held("3", "200", "4")], "{db}");
        assert_eq!(
            links(&store).await,
            [
                row("1", Some("300"), Some("h1"), r#"{"email":"a@x.io"}"#),
                row("2", Some("102"), Some("h2"), r#"{"email":"b@x.io"}"#),
                row("3", Some("103"), Some("h3"), r#"{"email":"c@x.io"}"#),
                row("4", Some("200"), Some("h4"), r#"{"email":"d@x.io"}"#),
            ],
            "{db}"
        );
    }
}
