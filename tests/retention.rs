//! Retention on both backends: old finished rows go, everything young or unfinished stays.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use chrono::{Duration, Utc};
use common::TestDb;
use common::process::{Running, STARTUP_LIMIT, crm_sync, free_port};
use crm_sync::store::{Backend, PruneOutcome, Pruned, RetentionCutoffs, Store};

/// A SQL expression for the time `secs` seconds ago, in the column format of `db`'s backend.
fn ago(db: &TestDb, secs: i64) -> String {
    match db.backend() {
        Backend::Postgres => format!("now() - make_interval(secs => {secs})"),
        // SQLite's modifier wants its own sign: "-600 seconds" or "+600 seconds".
        Backend::Sqlite => format!(
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '{:+} seconds')",
            -secs
        ),
    }
}

/// apalis' `done_at`: a timestamp on PostgreSQL, seconds since the epoch on SQLite.
fn done_ago(db: &TestDb, secs: i64) -> String {
    match db.backend() {
        Backend::Postgres => ago(db, secs),
        Backend::Sqlite => format!("CAST(strftime('%s', 'now') AS INTEGER) - {secs}"),
    }
}

const DAY: i64 = 24 * 3600;

async fn exec(store: &Store, sql: String) {
    let sql = sqlx::AssertSqlSafe(sql);
    if let Some(pool) = store.pg_pool() {
        sqlx::query(sql).execute(pool).await.expect("insert");
    } else if let Some(pool) = store.sqlite_pool() {
        sqlx::query(sql).execute(pool).await.expect("insert");
    }
}

async fn column(store: &Store, sql: &'static str) -> Vec<String> {
    if let Some(pool) = store.pg_pool() {
        sqlx::query_scalar(sql)
            .fetch_all(pool)
            .await
            .expect("select")
    } else if let Some(pool) = store.sqlite_pool() {
        sqlx::query_scalar(sql)
            .fetch_all(pool)
            .await
            .expect("select")
    } else {
        Vec::new()
    }
}

async fn job(store: &Store, db: &TestDb, id: &str, status: &str, finished_days: Option<i64>) {
    let finished = finished_days.map_or("NULL".to_owned(), |d| ago(db, d * DAY));
    exec(
        store,
        format!(
            "INSERT INTO sync_jobs (id, direction, mode, triggered_by, status, exclusive, created_at, finished_at)
             VALUES ('{id}', 'pull', 'upsert', 'api', '{status}', FALSE, {}, {finished})",
            ago(db, 60 * DAY)
        ),
    )
    .await;
}

async fn event(store: &Store, db: &TestDb, key: &str, received_secs: i64) {
    exec(
        store,
        format!(
            "INSERT INTO webhook_events (dedupe_key, portal_id, event_id, subscription_type, occurred_at_ms, received_at)
             VALUES ('{key}', 1, '{key}', 'contact.creation', 0, {})",
            ago(db, received_secs)
        ),
    )
    .await;
}

async fn tick(store: &Store, db: &TestDb, schedule: &str, tick_at: i64, recorded_days: i64) {
    exec(
        store,
        format!(
            "INSERT INTO schedule_ticks (schedule_key, tick_at, outcome, recorded_at)
             VALUES ('{schedule}', {tick_at}, 'queued', {})",
            ago(db, recorded_days * DAY)
        ),
    )
    .await;
}

async fn task(
    store: &Store,
    db: &TestDb,
    id: &str,
    status: &str,
    attempts: i32,
    done_days: Option<i64>,
) {
    let table = match db.backend() {
        Backend::Postgres => "apalis.jobs",
        Backend::Sqlite => "Jobs",
    };
    let done = done_days.map_or("NULL".to_owned(), |d| done_ago(db, d * DAY));
    exec(
        store,
        format!(
            "INSERT INTO {table} (job, id, job_type, status, attempts, max_attempts, done_at)
             VALUES (X'00', '{id}', 'test', '{status}', {attempts}, 25, {done})"
        )
        .replace(
            "X'00'",
            if db.backend() == Backend::Postgres {
                "'\\x00'::bytea"
            } else {
                "X'00'"
            },
        ),
    )
    .await;
}

async fn state(store: &Store, db: &TestDb, hash: &str, expired_secs: i64) {
    exec(
        store,
        format!(
            "INSERT INTO oauth_states (state_hash, browser_hash, expires_at) VALUES ('{hash}', 'b', {})",
            ago(db, expired_secs)
        ),
    )
    .await;
}

async fn session(
    store: &Store,
    db: &TestDb,
    hash: &str,
    expired_secs: i64,
    ended_secs: Option<i64>,
) {
    let ended = ended_secs.map_or("NULL".to_owned(), |s| ago(db, s));
    exec(
        store,
        format!(
            "INSERT INTO operator_sessions (session_hash, expires_at, ended_at) VALUES ('{hash}', {}, {ended})",
            ago(db, expired_secs)
        ),
    )
    .await;
}

/// The defaults' shape: jobs 30 days, webhook events 7, ticks 30, queue tasks 7, states and
/// sessions 1.
fn cutoffs() -> RetentionCutoffs {
    let now = Utc::now();
    RetentionCutoffs {
        jobs: now - Duration::days(30),
        webhook_events: now - Duration::days(7),
        schedule_ticks: now - Duration::days(30),
        queue_tasks: now - Duration::days(7),
        oauth_states: now - Duration::days(1),
        operator_sessions: now - Duration::days(1),
    }
}

/// A HubSpot id the full pull `job` has read (a working row of the job).
async fn seen(store: &Store, job: &str, id: u64) {
    let sql = format!("INSERT INTO pull_seen (job_id, hs_object_id) VALUES ('{job}', '{id}')");
    exec(store, sql).await;
}

/// The notes of page `page` of the dry job `job` (a working row of the job).
async fn dry_page(store: &Store, job: &str, page: u64) {
    let sql =
        format!("INSERT INTO dry_run_notes (job_id, page, notes) VALUES ('{job}', {page}, '{{}}')");
    exec(store, sql).await;
}

async fn fill(store: &Store, db: &TestDb) {
    job(store, db, "old-succeeded", "succeeded", Some(40)).await;
    job(store, db, "old-failed", "failed", Some(40)).await;
    job(store, db, "old-cancelled", "cancelled", Some(40)).await;
    job(store, db, "young-succeeded", "succeeded", Some(2)).await;
    job(store, db, "old-running", "running", None).await;
    job(store, db, "old-retrying", "retrying", None).await;
    job(store, db, "old-queued", "queued", None).await;
    job(store, db, "young-cancelled", "cancelled", Some(2)).await;
    seen(store, "old-failed", 101).await;
    seen(store, "young-cancelled", 102).await;
    seen(store, "old-running", 103).await;
    seen(store, "old-retrying", 104).await;
    dry_page(store, "young-cancelled", 1).await;
    dry_page(store, "no-such-job", 1).await;
    dry_page(store, "old-queued", 2).await;
    event(store, db, "ev-old", 10 * DAY).await;
    event(store, db, "ev-young", 3 * DAY).await;
    event(store, db, "ev-in-window", 3600).await;
    tick(store, db, "a", 1, 40).await;
    tick(store, db, "a", 2, 35).await;
    tick(store, db, "a", 3, 1).await;
    tick(store, db, "b", 1, 40).await;
    task(store, db, "t-done", "Done", 1, Some(10)).await;
    task(store, db, "t-killed", "Killed", 1, Some(10)).await;
    task(store, db, "t-failed-final", "Failed", 25, Some(10)).await;
    task(store, db, "t-failed-retry", "Failed", 1, Some(10)).await;
    task(store, db, "t-pending", "Pending", 0, None).await;
    task(store, db, "t-done-young", "Done", 1, Some(2)).await;
    state(store, db, "st-old", 2 * DAY).await;
    state(store, db, "st-live", -600).await;
    session(store, db, "se-expired", 2 * DAY, None).await;
    session(store, db, "se-ended", -3600, Some(2 * DAY)).await;
    session(store, db, "se-live", -3600, None).await;
}

async fn remaining(store: &Store, db: &TestDb) -> Vec<Vec<String>> {
    let tasks = match db.backend() {
        Backend::Postgres => "SELECT id FROM apalis.jobs ORDER BY id",
        Backend::Sqlite => "SELECT id FROM Jobs ORDER BY id",
    };
    vec![
        column(store, "SELECT id FROM sync_jobs ORDER BY id").await,
        column(
            store,
            "SELECT dedupe_key FROM webhook_events ORDER BY dedupe_key",
        )
        .await,
        column(
            store,
            "SELECT schedule_key || ':' || CAST(tick_at AS TEXT) FROM schedule_ticks ORDER BY 1",
        )
        .await,
        column(store, tasks).await,
        column(
            store,
            "SELECT state_hash FROM oauth_states ORDER BY state_hash",
        )
        .await,
        column(
            store,
            "SELECT session_hash FROM operator_sessions ORDER BY session_hash",
        )
        .await,
        column(
            store,
            "SELECT job_id || ':' || hs_object_id FROM pull_seen ORDER BY 1",
        )
        .await,
        column(
            store,
            "SELECT job_id || ':' || CAST(page AS TEXT) FROM dry_run_notes ORDER BY 1",
        )
        .await,
    ]
}

backend_tests! {
    async fn pruning_removes_exactly_the_old_finished_rows(db: TestDb) {
        let store = db.store().await;
        fill(&store, &db).await;
        let outcome = store.prune_retained(&cutoffs()).await.expect("prune");
        let expected = Pruned {
            jobs: 3,
            webhook_events: 1,
            schedule_ticks: 2,
            queue_tasks: 3,
            oauth_states: 1,
            operator_sessions: 2,
            working_rows: 4,
        };
        assert_eq!(outcome, PruneOutcome::Pruned(expected), "{db}");
        let left = remaining(&store, &db).await;
        assert_eq!(
            left[0],
            ["old-queued", "old-retrying", "old-running", "young-cancelled", "young-succeeded"],
            "{db}"
        );
        assert_eq!(left[1], ["ev-in-window", "ev-young"], "{db}");
        assert_eq!(left[2], ["a:3", "b:1"], "{db}: the newest tick of each schedule stays");
        assert_eq!(left[3], ["t-done-young", "t-failed-retry", "t-pending"], "{db}");
        assert_eq!(left[4], ["st-live"], "{db}");
        assert_eq!(left[5], ["se-live"], "{db}");
        assert_eq!(
            left[6],
            ["old-retrying:104", "old-running:103"],
            "{db}: a job that can resume keeps what its pull read, whatever its age"
        );
        assert_eq!(left[7], ["old-queued:2"], "{db}: and what its dry pages noted");
    }

    async fn even_a_zero_retention_keeps_unfinished_rows_and_the_dedupe_window(db: TestDb) {
        let store = db.store().await;
        fill(&store, &db).await;
        let now = Utc::now();
        let everything = RetentionCutoffs {
            jobs: now,
            webhook_events: now,
            schedule_ticks: now,
            queue_tasks: now,
            oauth_states: now,
            operator_sessions: now,
        };
        store.prune_retained(&everything).await.expect("prune");
        let left = remaining(&store, &db).await;
        assert_eq!(left[0], ["old-queued", "old-retrying", "old-running"], "{db}");
        assert_eq!(left[1], ["ev-in-window"], "{db}: inside HubSpot's 24-hour redelivery window");
        assert_eq!(left[2], ["a:3", "b:1"], "{db}");
        assert_eq!(left[3], ["t-failed-retry", "t-pending"], "{db}");
        assert_eq!(left[4], ["st-live"], "{db}");
        assert_eq!(left[5], ["se-live"], "{db}");
        assert_eq!(left[6], ["old-retrying:104", "old-running:103"], "{db}");
        assert_eq!(left[7], ["old-queued:2"], "{db}");
    }

    async fn processes_pruning_at_once_all_succeed_and_delete_each_row_once(db: TestDb) {
        let store = db.store().await;
        fill(&store, &db).await;
        let rounds = futures_join(&store).await;
        let mut total = 0;
        for outcome in rounds {
            match outcome.expect("no round fails") {
                PruneOutcome::Pruned(p) => total += p.total(),
                PruneOutcome::Busy => {}
            }
        }
        assert_eq!(total, 16, "{db}");
        let again = store.prune_retained(&cutoffs()).await.expect("prune");
        assert_eq!(again, PruneOutcome::Pruned(Pruned::default()), "{db}");
    }

    async fn serve_and_worker_prune_at_start(db: TestDb) {
        let store = db.store().await;
        for command in ["worker", "serve"] {
            let id = format!("old-{command}");
            job(&store, &db, &id, "succeeded", Some(40)).await;
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cmd = crm_sync(dir.path());
            cmd.arg(command)
                .env("CRM_SYNC__DATABASE__URL", db.url())
                .env("CRM_SYNC__SERVER__BIND", format!("127.0.0.1:{}", free_port()));
            let mut running = Running::start(cmd, dir.path());
            let started = std::time::Instant::now();
            while column(&store, "SELECT id FROM sync_jobs").await.contains(&id) {
                if let Some(status) = running.child().try_wait().expect("poll") {
                    panic!("{command} exited with {status}: {:?}", running.output());
                }
                assert!(started.elapsed() < STARTUP_LIMIT, "{command} did not prune: {:?}", running.output());
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            running.kill();
        }
    }
}

/// Four pruning rounds started together, as four processes would.
async fn futures_join(store: &Store) -> Vec<Result<PruneOutcome, crm_sync::store::StoreError>> {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.prune_retained(&cutoffs()).await })
        })
        .collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("joined"));
    }
    out
}
