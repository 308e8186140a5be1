//! Shared fixtures for the integration tests: a fresh database per test, on every backend.
//!
//! SQLite runs always. PostgreSQL runs when `TEST_DATABASE_URL` is set (then it is mandatory:
//! an unreachable server fails the test) or when a server answers on 127.0.0.1:5432; otherwise
//! the Postgres half of a test prints one line and passes.
//!
//! ```ignore
//! mod common;
//!
//! backend_tests! {
//!     async fn counts_start_at_zero(db: TestDb) {
//!         let store = db.store().await;
//!         assert_eq!(store.count_contacts().await.unwrap(), 0, "{db}");
//!     }
//! }
//! ```
//! generates `counts_start_at_zero::sqlite` and `counts_start_at_zero::postgres`.
#![allow(dead_code)]

pub mod associated;
pub mod log_capture;
pub mod mapped;
pub mod oauth;
pub mod process;
pub mod pushed;
pub mod user_table;
pub mod watch;
pub mod world;
pub mod write_hold;

use crm_sync::store::{Backend, Store};
use sqlx::Connection;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The server used when `TEST_DATABASE_URL` is unset (trust auth, user `postgres`).
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of its own for one test, removed when dropped (also when the test panics).
pub struct TestDb {
    backend: Backend,
    url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    /// The temporary folder holding the SQLite file; deleting it deletes the database.
    Sqlite(tempfile::TempDir),
    /// A database created on a PostgreSQL server, dropped on drop.
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    /// A fresh SQLite file in a temporary folder.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temporary folder");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        TestDb {
            backend: Backend::Sqlite,
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A fresh PostgreSQL database on the server of `TEST_DATABASE_URL` (or [`DEFAULT_PG_URL`]).
    /// Panics when the server cannot be reached.
    pub async fn postgres() -> TestDb {
        let admin_url = pg_admin_url();
        let name = unique_db_name();
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect to the test PostgreSQL server {admin_url}: {e}"));
        // template0 never has connections, so parallel CREATEs never wait for each other.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            r#"CREATE DATABASE "{name}" TEMPLATE template0"#
        )))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
        let _ = admin.close().await;
        TestDb {
            backend: Backend::Postgres,
            url: with_database(&admin_url, &name),
            cleanup: Cleanup::Postgres { admin_url, name },
        }
    }

    /// [`TestDb::postgres`] when PostgreSQL is available, `None` (after saying so) when it is not.
    /// With `TEST_DATABASE_URL` set, PostgreSQL is mandatory and this never returns `None`.
    pub async fn postgres_if_available() -> Option<TestDb> {
        if std::env::var_os("TEST_DATABASE_URL").is_some() || local_postgres_answers().await {
            Some(TestDb::postgres().await)
        } else {
            eprintln!(
                "PostgreSQL skipped: TEST_DATABASE_URL unset and nothing answers on 127.0.0.1:5432"
            );
            None
        }
    }

    /// Every available backend: SQLite, then PostgreSQL when available.
    pub async fn all() -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite().await];
        dbs.extend(TestDb::postgres_if_available().await);
        dbs
    }

    /// Which backend this database is on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL to give the service (`database.url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A store connected to this database and migrated.
    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect to {self}: {e}"));
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("migrate {self}: {e}"));
        store
    }
}

impl fmt::Display for TestDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} test database {}", self.backend, self.url)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Cleanup::Postgres { admin_url, name } = &self.cleanup else {
            return; // the TempDir deletes the SQLite file itself
        };
        // Drop cannot await, and may run inside the test's runtime: drop the database from a
        // thread with a runtime of its own. FORCE ends the connections the test's pools still hold.
        let (admin_url, name) = (admin_url.clone(), name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                )))
                .execute(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.url),
            Err(_) => eprintln!("dropping test database {} panicked", self.url),
        }
    }
}

/// The maintenance URL of the test server.
pub fn pg_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// `url` pointing at database `name` instead.
fn with_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("TEST_DATABASE_URL is a valid URL");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

/// Unique across parallel tests and test binaries of several engineers on one server.
fn unique_db_name() -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "crm_sync_test_{}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        ulid::Ulid::generate().to_string().to_lowercase()
    )
}

async fn local_postgres_answers() -> bool {
    let probe = tokio::net::TcpStream::connect(("127.0.0.1", 5432));
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Ok(_))
    )
}

/// The one "run on both backends" macro. Two forms:
///
/// - Specs written inside it, `async fn NAME(db: TestDb) { .. }`: one `#[tokio::test]` per
///   backend, `NAME::sqlite` and `NAME::postgres`, each with a fresh [`TestDb`].
/// - Specs written inside it, `async fn NAME(db: TestDb, profile: HubSpotProfile) { .. }`: one
///   test per backend and per way HubSpot answers, `NAME::documented_sqlite`,
///   `NAME::documented_postgres`, `NAME::alternative_sqlite` and `NAME::alternative_postgres`;
///   `profile` is the [`crm_sync::sandbox::HubSpotProfile`] the test's sandbox must play:
///   HubSpot's documented answers, or every other answer its docs leave open (207 conflicts,
///   silently omitted ids, first-only validation errors, `null` values, shuffled results). One
///   spec, every variant: a guarantee the engine cannot keep under a profile is a failing test,
///   never a skipped one.
/// - `backend_tests!(fixture = BUILD; NAME, ..)`: the named `async fn NAME(db: &F)` of the
///   invoking file, each run as `sqlite::NAME` and `postgres::NAME` on a multi-threaded runtime
///   (for workers and child processes), with `F` built from a fresh [`TestDb`] by the async fn
///   `BUILD` ([`same_db`] when the spec takes the `TestDb` itself).
///
/// The Postgres variant passes with a note when PostgreSQL is not available (and fails when
/// `TEST_DATABASE_URL` is set but the server is unreachable).
#[macro_export]
macro_rules! backend_tests {
    (fixture = $fixture:path; $($name:ident),* $(,)?) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $fixture($crate::common::TestDb::sqlite().await).await;
                    super::$name(&db).await
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::common::TestDb::postgres_if_available().await else {
                        return;
                    };
                    super::$name(&$fixture(db).await).await
                }
            )*
        }
    };
    ($( $(#[$meta:meta])* async fn $name:ident($db:ident : TestDb, $profile:ident : HubSpotProfile) $body:block )*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                use crm_sync::sandbox::HubSpotProfile;

                async fn spec($db: $crate::common::TestDb, $profile: HubSpotProfile) $body

                $(#[$meta])*
                #[tokio::test]
                async fn documented_sqlite() {
                    spec($crate::common::TestDb::sqlite().await, HubSpotProfile::Documented).await
                }

                $(#[$meta])*
                #[tokio::test]
                async fn documented_postgres() {
                    let Some(db) = $crate::common::TestDb::postgres_if_available().await else {
                        return;
                    };
                    spec(db, HubSpotProfile::Documented).await
                }

                $(#[$meta])*
                #[tokio::test]
                async fn alternative_sqlite() {
                    spec($crate::common::TestDb::sqlite().await, HubSpotProfile::Alternative).await
                }

                $(#[$meta])*
                #[tokio::test]
                async fn alternative_postgres() {
                    let Some(db) = $crate::common::TestDb::postgres_if_available().await else {
                        return;
                    };
                    spec(db, HubSpotProfile::Alternative).await
                }
            }
        )*
    };
    ($( $(#[$meta:meta])* async fn $name:ident($db:ident : TestDb) $body:block )*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                $(#[$meta])*
                #[tokio::test]
                async fn sqlite() {
                    let $db = $crate::common::TestDb::sqlite().await;
                    $body
                }

                $(#[$meta])*
                #[tokio::test]
                async fn postgres() {
                    let Some($db) = $crate::common::TestDb::postgres_if_available().await else {
                        return;
                    };
                    $body
                }
            }
        )*
    };
}

/// The fixture of `backend_tests!(fixture = ..)` specs that take the [`TestDb`] itself.
pub async fn same_db(db: TestDb) -> TestDb {
    db
}
