//! Database access on SQLite (the zero-setup default) and PostgreSQL (production).
//!
//! One [`Store`] API over both backends, chosen by the URL scheme. This module and its children
//! hold every SQL statement of the application, the reads of Apalis' own tables included
//! (those only in `apalis.rs`); code outside `store` calls methods, never `sqlx::query`.
//!
//! # One way to speak two dialects
//!
//! The active backend is a two-variant enum: the store's pool ([`Store`]) or an open
//! transaction ([`Tx`]). A query reaches a connection through exactly one of two macros, each
//! an exhaustive `match` over those two variants, so no query exists for one backend only and
//! no "neither" arm is ever written:
//!
//! - `on_pool!(store, pool => body)` / `on_tx!(tx, conn => body)`: the same SQL text on both.
//!   Prefer this: both dialects accept `$N` parameters, `ON CONFLICT`, `RETURNING`, and every
//!   time is bound from Rust (`time::DbTime`).
//! - `on_pool!(store, pool => postgres: pg_body, sqlite: sqlite_body)`, and the same for
//!   `on_tx!`: where the SQL must differ (arrays vs. `json_each`, clock functions, locks). Keep
//!   the two texts side by side in the same function, as `PG_…` / `SQLITE_…` constants.
//!
//! When adding a query:
//! - When only the text differs, pick it with the two-armed form
//!   (`let sql = on_pool!(self, _pool => postgres: PG, sqlite: SQLITE)`) and run it once with
//!   the one-body form, so the binds are not written twice.
//! - A write that callers run both on their own and inside a larger transaction is written
//!   once, as a method on [`Tx`]; the [`Store`] method of the same name begins a short
//!   transaction ([`Tx::begin`]) and calls it. Never write a pool twin of a `Tx` write. (A read
//!   needed both ways shares one SQL text between its two methods instead: a short transaction
//!   would take SQLite's write lock for a read.)
//! - A SQLite statement that finds a page's rows from a JSON key list is a module constant
//!   listed in `plans.rs`, whose spec reads its plan and requires every table searched by key
//!   (SQLite's planner may otherwise walk all rows of the table for each page).
//! - Several statements that must hold together run in a [`Tx`], never on a bare pool.
//! - Never match on `Pools` or `Tx` variants by hand outside this file and `tx.rs`, nor use
//!   [`Store::pg_pool`] / [`Store::sqlite_pool`] (tests' fixtures) in the application; the
//!   Apalis storages take [`Store::pool`].
//! - Transactions begin through [`Tx::begin`] only (PostgreSQL's in a task of its own, see
//!   `begin_postgres`; SQLite's `IMMEDIATE`).

mod associations;
mod catalog;
mod companies;
mod contacts;
mod credential_ciphers;
mod credentials;
mod dry_runs;
mod gauges;
mod installation;
mod link_companies;
mod link_portal;
mod link_rule;
mod oauth_states;
mod object_links;
mod overview;
mod pg_connect;
mod plans;
mod retention;
mod schema;
mod sessions;
mod time;
mod tombstones;
mod tx;
mod unicode_lower;
mod webhook_pulls;
mod webhooks;

pub mod apalis;
pub mod jobs;
pub mod pull;
pub mod push;

pub use associations::{AssociationRow, ContactCompanyChange};
pub use catalog::{ColumnInfo, ColumnKind, Relation, TableInfo};
pub use companies::{
    CompanyCandidate, CompanyLink, CompanyLinkClash, CompanyMatch, LocalCompany, NewCompany,
    PulledCompany,
};
pub use contacts::{Contact, DeletedFilter, NewContact};
pub use credential_ciphers::CredentialCiphers;
pub use credentials::{CredentialStatus, NewCredentials, StoredCredentials};
pub use gauges::{ACTIVE_STATUSES, PoolUsage, QueueGauges};
pub use installation::Installation;
pub use link_companies::{CompanyKeyState, CompanyLinkRow};
pub use link_portal::LinkPortal;
pub use oauth_states::{StateBinding, StateFacts};
pub use object_links::{
    ColumnValue, KeyKind, LinkHeld, LinkWrite, LocalRecord, LocalTable, ObjectLink,
};
pub use overview::{ContactOverview, WebhookPullSummary};
pub use pg_connect::PgConnectFailure;
pub use retention::{PruneOutcome, Pruned, RetentionCutoffs, WEBHOOK_DEDUPE_WINDOW};
pub use tombstones::{Restore, SweepTable, Tombstone, TombstoneReason};
pub use tx::{Connection, Tx};
pub use webhook_pulls::{PendingObject, PendingPull};
pub use webhooks::{LinkedRow, MergeOutcome, WebhookEventKey};

use crate::secret::redact_url;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// How long connecting to PostgreSQL may take before the database counts as unreachable.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a SQLite statement waits for another writer before giving up with "database is locked".
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// SQLite has one writer at a time anyway; a few connections are enough for concurrent readers.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
/// Enough for the HTTP API, a few workers and the scheduler in one process.
const PG_MAX_CONNECTIONS: u32 = 10;

/// The application's PostgreSQL migrations, embedded at compile time (append-only, see `migrations/`).
fn pg_migrator() -> Migrator {
    sqlx::migrate!("migrations/postgres")
}

/// The application's SQLite migrations, embedded at compile time.
fn sqlite_migrator() -> Migrator {
    sqlx::migrate!("migrations/sqlite")
}

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// Errors of the storage layer. Messages name the database by its redacted URL only.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL has a scheme or form this service cannot use.
    #[error("unsupported database URL {url}: {reason}")]
    UnsupportedUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The folder for a SQLite file could not be created.
    #[error("cannot create the folder {} for the SQLite database: {source}", path.display())]
    CreateFolder {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// PostgreSQL could not be connected to; the failure says why and what to do.
    #[error("cannot connect to PostgreSQL at {url}: {failure}")]
    PostgresConnect {
        /// The URL, password redacted.
        url: String,
        /// Why, in the operator's words.
        failure: PgConnectFailure,
    },
    /// A command that must not create a database found no SQLite file at the URL.
    #[error(
        "no database at {url}: there is no file {} (run `crm-sync migrate` or `crm-sync serve` \
         to create it, or point database.url at the existing one)",
        path.display()
    )]
    NoDatabase {
        /// The URL, password redacted.
        url: String,
        /// The file the URL names, made absolute so that a wrong working directory shows.
        path: PathBuf,
    },
    /// The database exists but `migrate` or `serve` never set it up.
    #[error(
        "the database at {url} has no crm-sync tables (run `crm-sync migrate` or `crm-sync \
         serve` first, or point database.url at the service's database)"
    )]
    NotSetUp {
        /// The URL, password redacted.
        url: String,
    },
    /// The database was set up by an older version: some of this version's migrations are
    /// missing.
    #[error(
        "the database at {url} lacks {missing} of this version's {total} migrations (run \
         `crm-sync migrate` first)"
    )]
    Outdated {
        /// The URL, password redacted.
        url: String,
        /// How many migrations were not applied.
        missing: usize,
        /// How many this version has.
        total: usize,
    },
    /// The first SQLite connection failed (unreadable file, not a database, ...).
    #[error("cannot connect to the database at {url}: {source}")]
    Unreachable {
        /// The URL, password redacted.
        url: String,
        /// Why.
        source: sqlx::Error,
    },
    /// Applying migrations failed.
    #[error("migrating the database at {url} failed: {source}")]
    Migration {
        /// The URL, password redacted.
        url: String,
        /// Why.
        source: MigrateError,
    },
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A stored value cannot be read back (e.g. an unknown status written by hand).
    #[error("invalid data in the database: {0}")]
    InvalidData(String),
}

/// The connection pool of whichever backend is active.
#[derive(Clone)]
enum Pools {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs an expression on whichever pool is active (see the module docs): either one body for
/// both, `on_pool!(self, pool => query.fetch_all(pool).await)`, compiled once per backend, or
/// one per dialect, `on_pool!(self, pool => postgres: pg_body, sqlite: sqlite_body)`.
macro_rules! on_pool {
    ($store:expr, $pool:ident => postgres: $pg:expr, sqlite: $lite:expr $(,)?) => {
        match &$store.pools {
            // One dialect may only pick a text (`_pool`) or have nothing to do.
            #[allow(unused_variables)]
            $crate::store::Pools::Postgres($pool) => $pg,
            #[allow(unused_variables)]
            $crate::store::Pools::Sqlite($pool) => $lite,
        }
    };
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pools {
            $crate::store::Pools::Postgres($pool) => $body,
            $crate::store::Pools::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Runs an expression with `$c` bound to a transaction's connection, in the two forms of
/// [`on_pool!`]: `on_tx!(tx, c => body)` or `on_tx!(tx, c => postgres: pg, sqlite: lite)`.
macro_rules! on_tx {
    ($tx:expr, $c:ident => postgres: $pg:expr, sqlite: $lite:expr $(,)?) => {
        match $tx {
            $crate::store::Tx::Postgres(t) => {
                // One dialect may have nothing to do (`sqlite: ()`), leaving its binding unused.
                #[allow(unused_variables)]
                let $c: &mut sqlx::PgConnection = &mut **t;
                $pg
            }
            $crate::store::Tx::Sqlite(t) => {
                #[allow(unused_variables)]
                let $c: &mut sqlx::SqliteConnection = &mut **t;
                $lite
            }
        }
    };
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            $crate::store::Tx::Postgres(t) => {
                let $c: &mut sqlx::PgConnection = &mut **t;
                $body
            }
            $crate::store::Tx::Sqlite(t) => {
                let $c: &mut sqlx::SqliteConnection = &mut **t;
                $body
            }
        }
    };
}
pub(crate) use on_tx;

/// The active pool, for what needs the backend's own types (the Apalis storages).
#[derive(Debug, Clone, Copy)]
pub enum Pool<'a> {
    /// The PostgreSQL pool.
    Postgres(&'a PgPool),
    /// The SQLite pool.
    Sqlite(&'a SqlitePool),
}

/// Handle to the database; cheap to clone (pools are shared).
#[derive(Clone)]
pub struct Store {
    pools: Pools,
    redacted_url: Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .field("url", &self.redacted_url)
            .finish()
    }
}

/// Whether connecting may create a SQLite database that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Creation {
    /// Create the folder and file when missing (`migrate`, `serve`, ...).
    IfMissing,
    /// Only open an existing file ([`StoreError::NoDatabase`] otherwise).
    Never,
}

impl Store {
    /// Connects; for sqlite creates the folder and file when missing; does not migrate.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Self::connect_with(url, Creation::IfMissing).await
    }

    /// Connects to a database that must already exist: a missing SQLite file is
    /// [`StoreError::NoDatabase`] and nothing is created. Does not migrate; see
    /// [`Store::check_migrated`].
    pub async fn open_existing(url: &str) -> Result<Store, StoreError> {
        Self::connect_with(url, Creation::Never).await
    }

    async fn connect_with(url: &str, creation: Creation) -> Result<Store, StoreError> {
        let redacted = redact_url(url);
        let pools = match scheme_of(url) {
            Some("postgres" | "postgresql") => {
                Pools::Postgres(connect_postgres(url, &redacted).await?)
            }
            Some("sqlite") => Pools::Sqlite(connect_sqlite(url, &redacted, creation).await?),
            _ => {
                return Err(StoreError::UnsupportedUrl {
                    url: redacted,
                    reason: "expected sqlite://PATH or postgres://USER@HOST/DB".into(),
                });
            }
        };
        Ok(Store {
            pools,
            redacted_url: redacted.into(),
        })
    }

    /// App migrations plus the apalis storage migrations (apalis-postgres / apalis-sqlite `migrations()`), idempotent.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let failed = |source| StoreError::Migration {
            url: self.redacted_url.to_string(),
            source,
        };
        match &self.pools {
            Pools::Postgres(pool) => {
                // apalis keeps its history in apalis._sqlx_migrations, ours is public._sqlx_migrations.
                apalis_postgres::PostgresStorage::<()>::migrations()
                    .run(pool)
                    .await
                    .map_err(failed)?;
                pg_migrator().run(pool).await.map_err(failed)?;
            }
            Pools::Sqlite(pool) => {
                // On SQLite apalis and the app share one _sqlx_migrations table, so each migrator
                // must tolerate the other's versions. apalis' own `setup` is skipped on purpose:
                // it would fail on our versions and sets synchronous=OFF; WAL is set at connect.
                let mut apalis = apalis_sqlite::SqliteStorage::<()>::migrations();
                apalis.set_ignore_missing(true);
                apalis.run(pool).await.map_err(failed)?;
                let mut app = sqlite_migrator();
                app.set_ignore_missing(true);
                app.run(pool).await.map_err(failed)?;
            }
        }
        Ok(())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    /// Which engine this store talks to.
    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Postgres(_) => Backend::Postgres,
            Pools::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The database URL with its password redacted, for logs and messages.
    pub fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// The active pool, for the Apalis storages (one exhaustive `match` for both backends).
    pub fn pool(&self) -> Pool<'_> {
        match &self.pools {
            Pools::Postgres(pool) => Pool::Postgres(pool),
            Pools::Sqlite(pool) => Pool::Sqlite(pool),
        }
    }

    /// The PostgreSQL pool, for tests' fixtures; `None` on SQLite.
    pub fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.pools {
            Pools::Postgres(pool) => Some(pool),
            Pools::Sqlite(_) => None,
        }
    }

    /// The SQLite pool, for tests' fixtures; `None` on PostgreSQL.
    pub fn sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        match &self.pools {
            Pools::Sqlite(pool) => Some(pool),
            Pools::Postgres(_) => None,
        }
    }

    /// Closes every connection, waiting for checked-out ones to come back.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }
}

/// The URL scheme, lower-cased, or `None` when there is none.
fn scheme_of(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let valid = !scheme.is_empty()
        && scheme.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '+' || c == '-' || c == '.'
        });
    valid.then_some(scheme)
}

async fn connect_postgres(url: &str, redacted: &str) -> Result<PgPool, StoreError> {
    let unsupported = |reason: String| StoreError::UnsupportedUrl {
        url: redacted.to_owned(),
        reason,
    };
    // sqlx falls back to a user named "anonymous", which only yields a puzzling auth error.
    if !names_a_pg_user(url) {
        return Err(unsupported(
            "the URL names no user; write postgres://USER@HOST/DB (or set PGUSER)".into(),
        ));
    }
    let options = PgConnectOptions::from_str(url).map_err(|e| unsupported(e.to_string()))?;
    // The first connection is bounded here rather than by acquire_timeout, so that later,
    // busy moments may still wait the default 30 s for a free connection.
    pg_connect::probe(&options, PG_CONNECT_TIMEOUT)
        .await
        .map_err(|failure| StoreError::PostgresConnect {
            url: redacted.to_owned(),
            failure,
        })?;
    Ok(PgPoolOptions::new()
        .max_connections(PG_MAX_CONNECTIONS)
        .connect_lazy_with(options))
}

/// Begins a PostgreSQL transaction in a task of its own, so that a caller cancelled while the
/// `BEGIN` is in flight (a handler dropped at a shutdown deadline, an aborted run, a client
/// gone) cannot put a connection still inside that transaction back into the pool.
///
/// sqlx queues its rollback only once `BEGIN` was answered: a `begin` future dropped before
/// then returns the connection with the transaction open, and every later autocommit statement
/// on it (a job claim, say) runs inside a transaction nobody commits, which a later `ROLLBACK`
/// silently undoes. Here the spawned task always finishes its `begin`; if the caller has gone,
/// the `Transaction` is dropped there and rolls back properly. (A known sqlx bug, fixed
/// upstream after 0.9.0; this can go once the fixed release is in.)
async fn begin_postgres(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let pool = pool.clone();
    match tokio::spawn(async move { pool.begin().await }).await {
        Ok(begun) => begun,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels the task; nothing was begun for the caller.
        Err(_) => Err(sqlx::Error::WorkerCrashed),
    }
}

/// Whether a PostgreSQL URL (or the environment) says which user to connect as.
fn names_a_pg_user(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return true; // let sqlx report what is wrong with it
    };
    !parsed.username().is_empty()
        || parsed
            .query_pairs()
            .any(|(k, v)| k == "user" && !v.is_empty())
        || std::env::var_os("PGUSER").is_some_and(|u| !u.is_empty())
}

async fn connect_sqlite(
    url: &str,
    redacted: &str,
    creation: Creation,
) -> Result<SqlitePool, StoreError> {
    let unsupported = |reason: &str| StoreError::UnsupportedUrl {
        url: redacted.to_owned(),
        reason: reason.to_owned(),
    };
    // A pool of in-memory databases would be several unrelated databases; refuse it plainly.
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Err(unsupported(
            "in-memory SQLite is not supported; give a file path such as sqlite://data/crm-sync.db",
        ));
    }
    let options = SqliteConnectOptions::from_str(url).map_err(|e| unsupported(&e.to_string()))?;
    let file = options.get_filename().to_path_buf();
    if file.as_os_str().is_empty() {
        return Err(unsupported("no file path; use sqlite://data/crm-sync.db"));
    }
    match creation {
        Creation::IfMissing => create_parent_folder(&file)?,
        Creation::Never if !file.exists() => {
            return Err(StoreError::NoDatabase {
                url: redacted.to_owned(),
                path: std::path::absolute(&file).unwrap_or(file),
            });
        }
        Creation::Never => {}
    }
    let options = options
        .create_if_missing(creation == Creation::IfMissing)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        // NORMAL is durable across application crashes in WAL mode, and much faster than FULL.
        .synchronous(SqliteSynchronous::Normal);
    SqlitePoolOptions::new()
        .max_connections(SQLITE_MAX_CONNECTIONS)
        // Before any statement (migrations and their triggers included) runs on it: emails
        // are lower-cased in Unicode, as in Rust and on PostgreSQL.
        .after_connect(|conn, _| Box::pin(unicode_lower::register(conn)))
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Unreachable {
            url: redacted.to_owned(),
            source,
        })
}

fn create_parent_folder(file: &Path) -> Result<(), StoreError> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateFolder {
                path: dir.to_path_buf(),
                source,
            })
        }
        _ => Ok(()),
    }
}
