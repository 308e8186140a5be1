//! Holding back a process's commits from outside it, so that a test can kill it at the one
//! moment that matters: after HubSpot applied a page's writes, before the page's local commit.

use super::TestDb;
use crm_sync::store::Backend;
use sqlx::{Connection, PgConnection, SqliteConnection};

/// A transaction of the test's own that blocks other connections' writes to a table until
/// [`WriteHold::release`]: on PostgreSQL a `SHARE` lock on the table (reads go on, writes
/// wait); on SQLite the database's one write lock (`BEGIN IMMEDIATE`; readers go on in WAL
/// mode, writers wait up to their busy timeout, 10 s in crm-sync).
pub enum WriteHold {
    /// The PostgreSQL connection holding the lock.
    Postgres(PgConnection),
    /// The SQLite connection holding the lock.
    Sqlite(SqliteConnection),
}

impl WriteHold {
    /// Blocks writes to `table` of the database `db` (and, on SQLite, to every table).
    pub async fn take(db: &TestDb, table: &str) -> WriteHold {
        match db.backend() {
            Backend::Postgres => {
                let mut conn = PgConnection::connect(db.url()).await.expect("connect");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "BEGIN; LOCK TABLE {table} IN SHARE MODE"
                )))
                .execute(&mut conn)
                .await
                .expect("lock the table");
                WriteHold::Postgres(conn)
            }
            Backend::Sqlite => {
                let mut conn = SqliteConnection::connect(db.url()).await.expect("connect");
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .expect("take the write lock");
                WriteHold::Sqlite(conn)
            }
        }
    }

    /// Ends the transaction, letting the writes it held back go on.
    pub async fn release(self) {
        match self {
            WriteHold::Postgres(mut conn) => {
                sqlx::raw_sql("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("unlock");
                conn.close().await.expect("close");
            }
            WriteHold::Sqlite(mut conn) => {
                sqlx::raw_sql("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("unlock");
                conn.close().await.expect("close");
            }
        }
    }
}
