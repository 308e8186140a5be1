//! A user's own table in the test's database, and the mappings that point crm-sync at it:
//! raw SQL for setting it up and reading it back (as text, the same on both backends), and
//! configuration loaded the way `crm-sync` loads it.

use super::TestDb;
use super::world::World;
use crm_sync::config::Settings;
use crm_sync::mapping::check_mappings;
use crm_sync::store::Store;
use std::sync::Arc;

/// Runs `text` (one or more statements) on the store's database.
pub async fn exec(store: &Store, text: &str) {
    let sql = sqlx::AssertSqlSafe(text.to_owned());
    match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pool), _) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        (_, Some(pool)) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        _ => unreachable!("a store has one pool"),
    }
    .unwrap_or_else(|e| panic!("{text}: {e}"));
}

/// The rows of `sql`, every column read as text (cast it in the query).
pub async fn texts(store: &Store, sql: &str) -> Vec<Vec<Option<String>>> {
    use sqlx::Row;
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pool), _) => sqlx::query(sql)
            .fetch_all(pool)
            .await
            .expect("query")
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
            .collect(),
        (_, Some(pool)) => sqlx::query(sql)
            .fetch_all(pool)
            .await
            .expect("query")
            .iter()
            .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
            .collect(),
        _ => unreachable!("a store has one pool"),
    }
}

/// Settings loaded from `toml` as `config/local.toml`, with the test's database.
pub fn settings(db: &TestDb, toml: &str) -> Settings {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
    std::fs::write(dir.path().join("config/local.toml"), toml).expect("write");
    let env = [("CRM_SYNC__DATABASE__URL".to_owned(), db.url().to_owned())]
        .into_iter()
        .collect();
    Settings::load(dir.path(), &env).expect("settings load")
}

impl World {
    /// Points the world's runner at the `[[sync.objects]]` mappings of `toml`, checked
    /// against the database's catalog as start-up checks them (the tables must exist).
    pub async fn map(&mut self, toml: &str) {
        let objects = check_mappings(&self.store, &settings(self.db(), toml).sync.objects)
            .await
            .expect("the mapping fits the database");
        self.ctx.objects = Arc::new(objects);
    }
}
