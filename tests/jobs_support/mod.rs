//! Shared helpers for the job tests, including THE TEST RUNNER: a real [`JobRunner`] that
//! stands in for the sync engine. It works through rows of a `test_items` table page by page,
//! writing each page and its checkpoint in one transaction exactly as the sync code must, so
//! that the queue's durability (resume, retry, shutdown) can be checked record by record.
#![allow(dead_code)]

use crm_sync::ids::JobId;
use crm_sync::jobs::model::{Counts, Job, JobStatus, PushCounts, PushOutcome, RecordError};
use crm_sync::jobs::{BoxFuture, JobRunner, Page, Progress, RunError};
use crm_sync::store::{Connection, Store};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

/// A migrated test database with its store (the database is removed on drop).
pub struct JobsDb {
    pub store: Store,
    pub url: String,
    _db: crate::common::TestDb,
}

impl JobsDb {
    pub async fn new(db: crate::common::TestDb) -> Self {
        Self {
            store: db.store().await,
            url: db.url().to_owned(),
            _db: db,
        }
    }
}

/// Creates `test_items` with `n` rows, all not yet processed.
pub async fn create_items(store: &Store, n: i64) {
    if let Some(p) = store.pg_pool() {
        sqlx::query(
            "CREATE TABLE test_items (id BIGINT PRIMARY KEY, done INTEGER NOT NULL DEFAULT 0)",
        )
        .execute(p)
        .await
        .unwrap();
        sqlx::query("INSERT INTO test_items (id) SELECT generate_series(1, $1)")
            .bind(n)
            .execute(p)
            .await
            .unwrap();
    } else if let Some(p) = store.sqlite_pool() {
        sqlx::query(
            "CREATE TABLE test_items (id INTEGER PRIMARY KEY, done INTEGER NOT NULL DEFAULT 0)",
        )
        .execute(p)
        .await
        .unwrap();
        sqlx::query(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $1) \
             INSERT INTO test_items (id) SELECT i FROM s",
        )
        .bind(n)
        .execute(p)
        .await
        .unwrap();
    }
}

/// How many times each item was processed, in id order.
pub async fn item_counts(store: &Store) -> Vec<i64> {
    const SQL: &str = "SELECT CAST(done AS BIGINT) FROM test_items ORDER BY id";
    if let Some(p) = store.pg_pool() {
        sqlx::query_scalar(SQL).fetch_all(p).await.unwrap()
    } else {
        let p = store.sqlite_pool().unwrap();
        sqlx::query_scalar(SQL).fetch_all(p).await.unwrap()
    }
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    after: i64,
}

/// THE TEST RUNNER (not the sync engine). Processes `test_items` in pages of `page_size`,
/// counting each item as a pushed contact (`created`; every `fail_every`-th as a failed record
/// with an error entry), sleeping `page_delay` per page, and ending the way its knobs say.
pub struct PageRunner {
    pub page_size: i64,
    pub page_delay: Duration,
    /// The first this-many runs fail transiently after their first page.
    pub transient_failures: AtomicU32,
    /// Every run fails transiently after its first page.
    pub always_transient: bool,
    /// Every run fails fatally at once.
    pub fatal: bool,
    /// Every run panics at once.
    pub panics: bool,
    /// Every `fail_every`-th item is a failed record (0: none).
    pub fail_every: i64,
    /// Runs started.
    pub runs: AtomicUsize,
    /// While set, runs wait before their next page (writing nothing).
    pub paused: AtomicBool,
    /// Whether a run is waiting because of `paused`.
    pub parked: AtomicBool,
}

impl PageRunner {
    pub fn new(page_size: i64, page_delay: Duration) -> Self {
        Self {
            page_size,
            page_delay,
            transient_failures: AtomicU32::new(0),
            always_transient: false,
            fatal: false,
            panics: false,
            fail_every: 0,
            runs: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            parked: AtomicBool::new(false),
        }
    }

    pub fn arc(self) -> Arc<dyn JobRunner> {
        Arc::new(self)
    }

    async fn run_pages(&self, progress: &Progress) -> Result<(), RunError> {
        let mut after = progress
            .checkpoint_as::<Cursor>()?
            .map(|c| c.after)
            .unwrap_or(0);
        let Counts::Push(mut counts) = progress.counts() else {
            return Err(RunError::Fatal("the test runner only pushes".into()));
        };
        let total: i64 = count_items(progress.store()).await?;
        progress
            .set_total(u64::try_from(total).unwrap_or(0))
            .await?;
        let mut pages_this_run = 0;
        loop {
            if progress.should_stop() {
                return Err(RunError::Interrupted);
            }
            if pages_this_run == 1 {
                if self.always_transient {
                    return Err(RunError::Transient("HubSpot answered 503".into()));
                }
                let left = self.transient_failures.load(Ordering::SeqCst);
                if left > 0 {
                    self.transient_failures.store(left - 1, Ordering::SeqCst);
                    return Err(RunError::Transient("HubSpot answered 503".into()));
                }
            }
            while self.paused.load(Ordering::SeqCst) {
                self.parked.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.parked.store(false, Ordering::SeqCst);
            let upto = (after + self.page_size).min(total);
            if upto <= after {
                return Ok(());
            }
            tokio::time::sleep(self.page_delay).await;
            let mut tx = progress.begin().await?;
            const MARK: &str = "UPDATE test_items SET done = done + 1 WHERE id > $1 AND id <= $2";
            match tx.connection() {
                Connection::Postgres(c) => {
                    sqlx::query(MARK).bind(after).bind(upto).execute(c).await?;
                }
                Connection::Sqlite(c) => {
                    sqlx::query(MARK).bind(after).bind(upto).execute(c).await?;
                }
            }
            let mut errors = Vec::new();
            for id in after + 1..=upto {
                if self.fail_every > 0 && id % self.fail_every == 0 {
                    counts.add(PushOutcome::Failed);
                    errors.push(RecordError {
                        contact_id: Some(crm_sync::ids::ContactId(id)),
                        company_id: None,
                        email: None,
                        hs_object_id: None,
                        reason: format!("item {id} refused"),
                    });
                } else {
                    counts.add(PushOutcome::Created);
                }
            }
            let page = Page {
                counts: Counts::Push(counts),
                checkpoint: serde_json::to_value(Cursor { after: upto }).unwrap(),
                errors,
            };
            progress.commit(tx, page).await?;
            after = upto;
            pages_this_run += 1;
        }
    }
}

async fn count_items(store: &Store) -> Result<i64, RunError> {
    const SQL: &str = "SELECT CAST(COUNT(*) AS BIGINT) FROM test_items";
    Ok(if let Some(p) = store.pg_pool() {
        sqlx::query_scalar(SQL).fetch_one(p).await?
    } else {
        let p = store.sqlite_pool().unwrap();
        sqlx::query_scalar(SQL).fetch_one(p).await?
    })
}

impl JobRunner for PageRunner {
    fn run<'a>(
        &'a self,
        _job: &'a Job,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), RunError>> {
        Box::pin(async move {
            self.runs.fetch_add(1, Ordering::SeqCst);
            if self.panics {
                panic!("the test runner was told to panic");
            }
            if self.fatal {
                return Err(RunError::Fatal("the HubSpot token was revoked".into()));
            }
            self.run_pages(progress).await
        })
    }
}

/// A shared runner handle that also implements [`JobRunner`], so a test keeps a view of it.
pub struct Shared(pub Arc<PageRunner>);

impl JobRunner for Shared {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), RunError>> {
        self.0.run(job, progress)
    }
}

/// Polls the job until `done` says so (or panics after `timeout`), returning every distinct
/// status seen on the way, in order.
pub async fn wait_for(
    store: &Store,
    id: JobId,
    timeout: Duration,
    done: impl Fn(&Job) -> bool,
) -> (Job, Vec<JobStatus>) {
    let start = std::time::Instant::now();
    let mut seen: Vec<JobStatus> = Vec::new();
    loop {
        let job = store.get_job(id).await.unwrap().expect("job exists");
        if seen.last() != Some(&job.status) {
            seen.push(job.status);
        }
        if done(&job) {
            return (job, seen);
        }
        assert!(
            start.elapsed() < timeout,
            "job did not get there in {timeout:?}; last seen {job:#?}, statuses {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Push counts of a job.
pub fn push_counts(job: &Job) -> PushCounts {
    match job.counts {
        Counts::Push(c) => c,
        Counts::Pull(_) => panic!("not a push"),
    }
}
