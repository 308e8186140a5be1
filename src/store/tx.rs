//! [`Tx`]: an open transaction on either backend, the one way the store groups statements.

use super::{Pools, Store, StoreError};
use sqlx::{Postgres, Sqlite};

/// An open transaction on either backend: the store's multi-statement operations write through
/// it, and the sync code hands it from store call to store call, so that a page of records and
/// its checkpoint commit together or not at all.
pub enum Tx {
    /// A PostgreSQL transaction.
    Postgres(sqlx::Transaction<'static, Postgres>),
    /// A SQLite transaction, begun `IMMEDIATE`: it holds the write lock from the start, so it
    /// waits for other writers up front instead of failing half-way on a lock upgrade.
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

/// A transaction's connection, for a test that writes rows of its own in a job's transaction.
#[derive(Debug)]
pub enum Connection<'a> {
    /// The PostgreSQL connection.
    Postgres(&'a mut sqlx::PgConnection),
    /// The SQLite connection.
    Sqlite(&'a mut sqlx::SqliteConnection),
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Postgres(_) => "Tx::Postgres",
            Self::Sqlite(_) => "Tx::Sqlite",
        })
    }
}

impl Tx {
    /// Begins a transaction on the store's backend.
    pub async fn begin(store: &Store) -> Result<Tx, StoreError> {
        Ok(match &store.pools {
            Pools::Postgres(p) => Tx::Postgres(super::begin_postgres(p).await?),
            Pools::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Postgres(t) => t.commit().await?,
            Tx::Sqlite(t) => t.commit().await?,
        }
        Ok(())
    }

    /// Rolls back (dropping a `Tx` does too).
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self {
            Tx::Postgres(t) => t.rollback().await?,
            Tx::Sqlite(t) => t.rollback().await?,
        }
        Ok(())
    }

    /// Which engine this transaction runs on.
    pub fn backend(&self) -> super::Backend {
        match self {
            Tx::Postgres(_) => super::Backend::Postgres,
            Tx::Sqlite(_) => super::Backend::Sqlite,
        }
    }

    /// The connection, for SQL that is not the application's (a test's own tables).
    pub fn connection(&mut self) -> Connection<'_> {
        match self {
            Tx::Postgres(t) => Connection::Postgres(t),
            Tx::Sqlite(t) => Connection::Sqlite(t),
        }
    }
}
