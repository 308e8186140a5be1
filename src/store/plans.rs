//! SQLite's plans of the statements that find a page's rows from a JSON list.
//!
//! SQLite has no arrays, so a page's keys reach it as one JSON document read with `json_each`.
//! How it joins that list to a table is the planner's choice, and one wrong choice (scanning
//! every row of the table for each page, as an `UPDATE … FROM json_each` on `object_links`
//! once did) holds the write lock for seconds at 20,000 rows while the result stays right, so
//! no functional spec notices. These specs read each statement's plan on a migrated database
//! and require every real table to be searched by a key, never scanned.

#[cfg(test)]
mod specs {
    use crate::mapping::{ColumnName, TableRef};
    use crate::store::object_links::{KeyKind, LocalTable, sqlite_set_column};
    use crate::store::{Store, associations, companies, link_companies, object_links, pull, push};

    /// A migrated SQLite database in a temporary folder, with two user tables: one keyed by
    /// a text column under a UNIQUE constraint, one by an integer primary key.
    async fn migrated() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let url = format!("sqlite://{}", dir.path().join("plans.db").display());
        let store = Store::connect(&url).await.expect("open");
        store.migrate().await.expect("migrate");
        let pool = store.sqlite_pool().expect("SQLite");
        for ddl in [
            "CREATE TABLE users (account TEXT NOT NULL UNIQUE, plan TEXT)",
            "CREATE TABLE orgs (id INTEGER PRIMARY KEY, tier TEXT)",
        ] {
            sqlx::query(ddl).execute(pool).await.expect("create");
        }
        (store, dir)
    }

    /// The plan's lines that read more of a table than the page's rows: a scan of a real table
    /// (a `json_each` list or a subquery's result may be scanned: that is the page itself), or
    /// a search of `object_links` by the object alone (every link row of the object).
    async fn table_scans(store: &Store, sql: &str) -> Vec<String> {
        let pool = store.sqlite_pool().expect("SQLite");
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .fetch_all(pool)
                .await
                .unwrap_or_else(|e| panic!("cannot plan {sql}: {e}"));
        let page_itself = [
            "SCAN json_each",
            "SCAN (subquery",
            "SCAN v",
            "SCAN u VIRTUAL",
        ];
        plan.into_iter()
            .map(|(_, _, _, detail)| detail)
            .filter(|d| {
                let scan = d.starts_with("SCAN ") && !page_itself.iter().any(|p| d.starts_with(p));
                scan || d.ends_with("(object=?)")
            })
            .collect()
    }

    fn user_table(table: &str, key: &str, kind: KeyKind) -> LocalTable {
        LocalTable {
            object: "contacts",
            table: TableRef::parse(table).expect("a table name"),
            key: ColumnName::parse(key).expect("a column name"),
            key_kind: kind,
            columns: Vec::new(),
        }
    }

    #[tokio::test]
    async fn every_statement_of_a_json_key_list_searches_its_tables_by_key() {
        let (store, _dir) = migrated().await;
        let statements: Vec<(&str, String)> = vec![
            ("associations::OF_IDS", associations::SQLITE_OF_IDS.into()),
            (
                "associations::OF_CONTACTS",
                associations::SQLITE_OF_CONTACTS.into(),
            ),
            (
                "associations::SAVE_SYNCED",
                associations::SQLITE_SAVE_SYNCED.into(),
            ),
            (
                "associations::FORGET_SYNCED",
                associations::SQLITE_FORGET_SYNCED.into(),
            ),
            (
                "associations::SET_COMPANIES",
                associations::SQLITE_SET_COMPANIES.into(),
            ),
            ("companies::LINK", companies::SQLITE_LINK.into()),
            ("companies::HOLDERS", companies::SQLITE_HOLDERS.into()),
            ("companies::BY_IDS", companies::SQLITE_BY_IDS.into()),
            (
                "companies::RELINK_CONTACTS",
                companies::SQLITE_RELINK_CONTACTS.into(),
            ),
            (
                "companies::RELINK_MAPPED",
                companies::SQLITE_RELINK_MAPPED.into(),
            ),
            (
                "link_companies::KEY_STATES",
                link_companies::SQLITE_KEY_STATES.into(),
            ),
            (
                "link_companies::COMPANY_HOLDERS",
                link_companies::SQLITE_COMPANY_HOLDERS.into(),
            ),
            (
                "link_companies::SAVE_COMPANIES",
                link_companies::SQLITE_SAVE_COMPANIES.into(),
            ),
            ("object_links::HOLDERS", object_links::SQLITE_HOLDERS.into()),
            ("object_links::RELEASE", object_links::SQLITE_RELEASE.into()),
            (
                "object_links::SAVE_LINKS",
                object_links::SQLITE_SAVE_LINKS.into(),
            ),
            (
                "object_links::MARK_DELETED",
                object_links::SQLITE_MARK_DELETED.into(),
            ),
            ("object_links::RELINK", object_links::SQLITE_RELINK.into()),
            ("pull::HOLDERS", pull::SQLITE_HOLDERS.into()),
            ("pull::LINK_ROWS", pull::SQLITE_LINK_ROWS.into()),
            ("push::HOLDERS", push::SQLITE_HOLDERS.into()),
            ("push::SAVE", push::SQLITE_SAVE.into()),
            (
                "object_links::set_column (text key)",
                sqlite_set_column(
                    &user_table("users", "account", KeyKind::Text),
                    &ColumnName::parse("plan").expect("a column name"),
                ),
            ),
            (
                "object_links::set_column (integer key)",
                sqlite_set_column(
                    &user_table("orgs", "id", KeyKind::Integer),
                    &ColumnName::parse("tier").expect("a column name"),
                ),
            ),
        ];
        let mut scanning = Vec::new();
        for (name, sql) in &statements {
            let scans = table_scans(&store, sql).await;
            if !scans.is_empty() {
                scanning.push(format!("{name}: {scans:?}"));
            }
        }
        assert!(
            scanning.is_empty(),
            "statements that scan a table:\n{}",
            scanning.join("\n")
        );
    }
}
