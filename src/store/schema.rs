//! Whether a database already holds this version's tables, for the commands that only read or
//! change existing rows and so must never create or migrate a database themselves.

use super::{Store, StoreError, on_pool};
use std::collections::HashSet;

/// Whether the application's migrations table exists.
const PG_HAS_MIGRATIONS: &str = "SELECT to_regclass('public._sqlx_migrations') IS NOT NULL";
const SQLITE_HAS_MIGRATIONS: &str = "SELECT EXISTS (SELECT 1 FROM sqlite_master \
     WHERE type = 'table' AND name = '_sqlx_migrations')";
/// The versions applied (on SQLite Apalis' are in the same table; they are simply not asked for).
const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success";

impl Store {
    /// Checks that every migration of this version was applied: a database that `migrate` or
    /// `serve` never set up is [`StoreError::NotSetUp`], one an older version set up is
    /// [`StoreError::Outdated`].
    pub async fn check_migrated(&self) -> Result<(), StoreError> {
        let sql =
            on_pool!(self, _pool => postgres: PG_HAS_MIGRATIONS, sqlite: SQLITE_HAS_MIGRATIONS);
        let has_table: bool =
            on_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await?);
        let applied: HashSet<i64> = if has_table {
            on_pool!(self, pool => sqlx::query_scalar(APPLIED).fetch_all(pool).await?)
                .into_iter()
                .collect()
        } else {
            HashSet::new()
        };
        let wanted = self.app_migration_versions();
        let missing = wanted.iter().filter(|v| !applied.contains(v)).count();
        let url = self.redacted_url.to_string();
        if missing == 0 {
            Ok(())
        } else if missing == wanted.len() {
            Err(StoreError::NotSetUp { url })
        } else {
            Err(StoreError::Outdated {
                url,
                missing,
                total: wanted.len(),
            })
        }
    }

    /// The versions of the application's own migrations for this backend.
    fn app_migration_versions(&self) -> Vec<i64> {
        let migrator = on_pool!(self, _pool => postgres: super::pg_migrator(), sqlite: super::sqlite_migrator());
        migrator.iter().map(|m| m.version).collect()
    }
}
