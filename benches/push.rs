//! Push throughput against the HubSpot sandbox running in a separate process:
//! `cargo bench --bench push` (release).
//!
//! For each backend (PostgreSQL from `TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, skipped when unreachable; SQLite in a
//! temporary folder) and each mode: a first push of `PUSH_BENCH_CONTACTS` (default 100,000)
//! contacts into an empty, unthrottled sandbox, then a no-change re-run. Then, on PostgreSQL,
//! first pushes of `PUSH_BENCH_LIMITED_CONTACTS` (default 20,000) against a sandbox that allows
//! 100 requests per 10 s — into an empty portal, and into one that has every 5th contact
//! already — compared with the ceiling that limit sets for the calls each push made.
//! Prints contacts/s, HubSpot calls and this process's peak RSS (the sandbox's is its own).
//!
//! Targets: first push ≥ 10,000 contacts/s unthrottled on PostgreSQL; ≥ 90 % of the ceiling
//! when rate-limited.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use crm_sync::hubspot::{Auth, ClientConfig, HubSpotClient};
use crm_sync::jobs::model::{Counts, JobAction, JobSpec, PushMode, Trigger};
use crm_sync::jobs::worker::{Settled, run_job_here};
use crm_sync::jobs::{EnqueueRequest, JobRunner, RetryPolicy, enqueue};
use crm_sync::secret::Secret;
use crm_sync::store::{NewContact, Store};
use crm_sync::sync::push::{PushConfig, Pusher};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::{BenchDb, BoxError, SANDBOX_TOKEN, SandboxProcess, peak_rss_mb};

fn main() {
    support::run_to_exit(run());
}

/// A sandbox allowing `limit` requests per 10 s (0: unthrottled).
fn sandbox(limit: u32) -> Result<SandboxProcess, BoxError> {
    SandboxProcess::start(&["--requests-per-10s".to_owned(), limit.to_string()])
}

/// Puts every `every`-th benchmark contact with an email into HubSpot beforehand (through the
/// sandbox's admin route, which counts against no limit).
async fn insert_known(sandbox: &SandboxProcess, n: usize, every: usize) -> Result<(), BoxError> {
    let contacts: Vec<serde_json::Value> = (0..n)
        .filter(|i| i % every == 0 && i % 10 != 9)
        .map(|i| {
            serde_json::json!({"properties": {
                "email": format!("bench{i}@acme.io"), "firstname": "Known", "lastname": "Before"
            }})
        })
        .collect();
    sandbox.insert(&contacts).await?;
    Ok(())
}

/// A pusher whose client allows itself `budget` requests per 10 s (0: unthrottled).
fn pusher(sandbox: &SandboxProcess, budget: u32) -> Result<Pusher, BoxError> {
    let mut config = ClientConfig::new(sandbox.base_url.parse()?);
    config.requests_per_10s = budget;
    let client = HubSpotClient::new(config, Auth::PrivateApp(Secret::new(SANDBOX_TOKEN)))?;
    Ok(Pusher::new(client, PushConfig::default()))
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run() -> Result<(), BoxError> {
    let contacts = env_count("PUSH_BENCH_CONTACTS", 100_000);
    let limited = env_count("PUSH_BENCH_LIMITED_CONTACTS", 20_000);
    println!("push benchmark: {contacts} contacts (rate-limited run: {limited})");

    for backend in ["postgres", "sqlite"] {
        for mode in [PushMode::Link, PushMode::Upsert] {
            let Some(db) = BenchDb::create(backend).await? else {
                break;
            };
            let result = unthrottled(backend, &db.url, mode, contacts).await;
            db.drop_it().await;
            result?;
        }
    }
    rate_limited(limited).await?;
    println!(
        "peak RSS of the pushing process: {} MB",
        peak_rss_mb().map_or("?".to_owned(), |m| m.to_string())
    );
    Ok(())
}

async fn unthrottled(backend: &str, url: &str, mode: PushMode, n: usize) -> Result<(), BoxError> {
    let store = prepared_store(url, n).await?;
    let sandbox = sandbox(0)?;
    let pusher = Arc::new(pusher(&sandbox, 0)?);
    let first = push(&store, &pusher, mode).await?;
    println!(
        "{backend} {mode:?} first push: {} contacts in {:.2} s = {:.0} contacts/s, {} HubSpot calls ({:.2} per 100)",
        first.contacts,
        first.seconds,
        first.rate(),
        first.calls,
        first.calls_per_100()
    );
    let rerun = push(&store, &pusher, mode).await?;
    println!(
        "{backend} {mode:?} no-change re-run: {} contacts in {:.3} s, {} HubSpot calls",
        rerun.contacts, rerun.seconds, rerun.calls
    );
    store.close().await;
    Ok(())
}

/// Rate-limited first pushes in link mode: into an empty portal (1 call per 100), and into one
/// that has every 5th contact already (read by email, then create: 2 calls per 100).
async fn rate_limited(n: usize) -> Result<(), BoxError> {
    for known_every in [0, 5] {
        let Some(db) = BenchDb::create("postgres").await? else {
            return Ok(());
        };
        let store = prepared_store(&db.url, n).await?;
        let sandbox = sandbox(100)?;
        if known_every > 0 {
            insert_known(&sandbox, n, known_every).await?;
        }
        let pusher = Arc::new(pusher(&sandbox, 100)?);
        let run = push(&store, &pusher, PushMode::Link).await?;
        // The fastest schedule 100 requests per rolling 10 s allows for these calls: 100 at
        // once, the next 100 when the first leave the window, and so on. The steady-state
        // ceiling is 10 requests per second, i.e. 1,000 / (calls per 100) contacts per second.
        let fastest = 10.0 * ((run.calls.max(1) - 1) / 100) as f64;
        let steady = 1000.0 / run.calls_per_100();
        let portal = if known_every > 0 {
            format!("1 in {known_every} contacts already in HubSpot")
        } else {
            "empty portal".to_owned()
        };
        println!(
            "postgres Link first push at 100 requests/10 s, {portal}: {} contacts in {:.1} s = {:.0} contacts/s, {} calls ({:.2} per 100; steady-state ceiling {steady:.0} contacts/s), {} answered 429; the limit allows these calls in {fastest:.0} s at best: {:.1} % of that pace",
            run.contacts,
            run.seconds,
            run.rate(),
            run.calls,
            run.calls_per_100(),
            pusher.client().metrics().rate_limited_total(),
            100.0 * fastest / run.seconds
        );
        store.close().await;
        db.drop_it().await;
    }
    Ok(())
}

async fn prepared_store(url: &str, n: usize) -> Result<Store, BoxError> {
    let store = Store::connect(url).await?;
    store.migrate().await?;
    let batch: Vec<NewContact> = (0..n)
        .map(|i| NewContact {
            // Every 10th contact has no email, as in real product databases.
            email: (i % 10 != 9).then(|| format!("bench{i}@acme.io")),
            first_name: Some(format!("First{i}")),
            last_name: Some(format!("Last{i}")),
        })
        .collect();
    store.insert_contacts(&batch).await?;
    Ok(store)
}

struct Run {
    contacts: u64,
    seconds: f64,
    calls: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.contacts as f64 / self.seconds
    }

    fn calls_per_100(&self) -> f64 {
        100.0 * self.calls as f64 / (self.contacts.max(1)) as f64
    }
}

async fn push(store: &Store, pusher: &Arc<Pusher>, mode: PushMode) -> Result<Run, BoxError> {
    let enqueued = enqueue(
        store,
        EnqueueRequest {
            spec: JobSpec::from(JobAction::Push { mode }),
            trigger: Trigger::Cli,
            force: false,
        },
    )
    .await?;
    let runner: Arc<dyn JobRunner> = pusher.clone();
    let calls_before = pusher.client().metrics().requests_total();
    let started = Instant::now();
    let settled = run_job_here(store, &runner, RetryPolicy::default(), enqueued.job.id).await?;
    let seconds = started.elapsed().as_secs_f64();
    let job = store
        .get_job(enqueued.job.id)
        .await?
        .ok_or("the job vanished")?;
    if !matches!(settled, Settled::Finished(_)) || job.error.is_some() {
        return Err(format!("the push did not finish: {settled}, {:?}", job.error).into());
    }
    let Counts::Push(counts) = job.counts else {
        return Err("not a push".into());
    };
    if counts.failed > 0 {
        return Err(format!(
            "{} contacts failed: {:?}",
            counts.failed,
            job.errors.first()
        )
        .into());
    }
    Ok(Run {
        contacts: counts.total,
        seconds: seconds.max(Duration::from_micros(1).as_secs_f64()),
        calls: pusher.client().metrics().requests_total() - calls_before,
    })
}
