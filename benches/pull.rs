//! Pull throughput against the HubSpot sandbox running as its own `crm-sync sandbox` process
//! (limits off), on PostgreSQL and SQLite: a full pull of N contacts into an empty database, a
//! no-change full re-run, and a no-change incremental re-run, each with contacts/s, the HubSpot
//! calls it made and this process's peak RSS so far (the sandbox's memory is not counted).
//!
//! `cargo bench --bench pull`. Environment: `SYNC_BENCH_CONTACTS` (default 100000),
//! `SYNC_BENCH_BACKENDS` (default `postgres,sqlite`), `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; PostgreSQL is skipped when unreachable).
//! For the memory target: `SYNC_BENCH_CONTACTS=1000000 SYNC_BENCH_BACKENDS=postgres`.
//!
//! The incremental pull runs with a lookback of zero: the sandbox's search index has no lag
//! (`--search-delay-ms 0`), which is what the lookback covers. With the default five minutes, a
//! re-run within five minutes of the import would read the imported contacts again.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use crm_sync::hubspot::{Auth, ClientConfig, HubSpotClient};
use crm_sync::ids::JobId;
use crm_sync::jobs::model::{Counts, Job, JobAction, JobSpec, PullMode, Trigger};
use crm_sync::jobs::queue::SyncTask;
use crm_sync::jobs::worker::{RetryPolicy, process};
use crm_sync::jobs::{EnqueueRequest, JobRunner, enqueue};
use crm_sync::secret::Secret;
use crm_sync::store::Store;
use crm_sync::sync::{SyncContext, SyncRunner};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::{BenchDb, BoxError, SANDBOX_TOKEN, SandboxProcess, peak_rss_mb};

fn main() {
    support::run_to_exit(run());
}

async fn run() -> Result<(), BoxError> {
    let contacts: usize = std::env::var("SYNC_BENCH_CONTACTS")
        .ok()
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(100_000);
    let backends =
        std::env::var("SYNC_BENCH_BACKENDS").unwrap_or_else(|_| "postgres,sqlite".to_owned());
    println!("pull benchmark: {contacts} contacts, sandbox in its own process, limits off");
    for backend in backends.split(',').map(str::trim) {
        let Some(db) = BenchDb::create(backend).await? else {
            continue;
        };
        let sandbox = SandboxProcess::start(&[
            "--contacts".to_owned(),
            contacts.to_string(),
            "--requests-per-10s".to_owned(),
            "0".to_owned(),
        ])?;
        let result = pull_suite(&db.url, &sandbox.base_url, backend).await;
        drop(sandbox);
        db.drop_it().await;
        result?;
    }
    Ok(())
}

async fn pull_suite(db_url: &str, base_url: &str, backend: &str) -> Result<(), BoxError> {
    let store = Store::connect(db_url).await?;
    store.migrate().await?;
    let mut config = ClientConfig::new(url::Url::parse(base_url)?);
    config.requests_per_10s = 0;
    config.search_per_second = 0;
    let client = HubSpotClient::new(config, Auth::PrivateApp(Secret::new(SANDBOX_TOKEN)))?;
    let mut ctx = SyncContext::new(client.clone());
    ctx.pull.lookback = Duration::ZERO;
    let runner: Arc<dyn JobRunner> = Arc::new(SyncRunner::new(ctx));
    let full = JobSpec::from(JobAction::Pull {
        mode: PullMode::Upsert,
        incremental: false,
    });
    let incremental = JobSpec::from(JobAction::Pull {
        mode: PullMode::Upsert,
        incremental: true,
    });
    for (label, spec) in [
        ("pull, empty database", full),
        ("pull, no-change re-run", full),
        ("pull --incremental, no-change re-run", incremental),
    ] {
        let calls = client.metrics().requests_total();
        let started = Instant::now();
        let job = run_job(&store, &runner, spec).await?;
        let elapsed = started.elapsed();
        let Counts::Pull(counts) = job.counts else {
            return Err("a pull job reported push counts".into());
        };
        let per_second = counts.total as f64 / elapsed.as_secs_f64().max(1e-9);
        println!(
            "{backend:>8} | {label:<38} | {:>9} contacts | {:>8.2} s | {:>8.0} contacts/s | {:>5} HubSpot calls | peak RSS {} MB | {:?}",
            counts.total,
            elapsed.as_secs_f64(),
            per_second,
            client.metrics().requests_total() - calls,
            peak_rss_mb().map_or("?".to_owned(), |m| m.to_string()),
            job.status,
        );
    }
    store.close().await;
    Ok(())
}

/// Enqueues a job and hands its deliveries to the worker's `process` until it ends.
async fn run_job(
    store: &Store,
    runner: &Arc<dyn JobRunner>,
    spec: JobSpec,
) -> Result<Job, BoxError> {
    let job = enqueue(
        store,
        EnqueueRequest {
            spec,
            trigger: Trigger::Cli,
            force: false,
        },
    )
    .await?
    .job;
    drive(store, runner, job.id).await
}

async fn drive(store: &Store, runner: &Arc<dyn JobRunner>, id: JobId) -> Result<Job, BoxError> {
    loop {
        let record = store.get_job_record(id).await?.ok_or("the job vanished")?;
        if record.job.status.is_terminal() {
            return Ok(record.job);
        }
        let task = SyncTask {
            job_id: id,
            delivery: record.delivery.ok_or("an active job without a delivery")?,
        };
        process(
            store,
            runner,
            RetryPolicy::default(),
            &task,
            "bench",
            Arc::new(|| false),
        )
        .await?;
    }
}
