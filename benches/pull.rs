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

use crm_sync::hubspot::{Auth, ClientConfig, HubSpotClient};
use crm_sync::ids::JobId;
use crm_sync::jobs::model::{Counts, Job, JobSpec, PullMode, Trigger};
use crm_sync::jobs::queue::SyncTask;
use crm_sync::jobs::worker::{RetryPolicy, process};
use crm_sync::jobs::{EnqueueRequest, JobRunner, enqueue};
use crm_sync::secret::Secret;
use crm_sync::store::Store;
use crm_sync::sync::{SyncContext, SyncRunner};
use sqlx::Connection;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::{BoxError, peak_rss_mb};

const TOKEN: &str = "pat-na1-bench";

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
        let sandbox = SandboxProcess::start(contacts)?;
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
    let client = HubSpotClient::new(config, Auth::PrivateApp(Secret::new(TOKEN)))?;
    let mut ctx = SyncContext::new(client.clone());
    ctx.pull.lookback = Duration::ZERO;
    let runner: Arc<dyn JobRunner> = Arc::new(SyncRunner::new(ctx));
    let full = JobSpec::Pull {
        mode: PullMode::Upsert,
        incremental: false,
    };
    let incremental = JobSpec::Pull {
        mode: PullMode::Upsert,
        incremental: true,
    };
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

/// `crm-sync sandbox` as a child process; killed when dropped.
struct SandboxProcess {
    child: Child,
    base_url: String,
}

impl SandboxProcess {
    fn start(contacts: usize) -> Result<Self, BoxError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
            .args(["sandbox", "--port", &port.to_string()])
            .args(["--contacts", &contacts.to_string()])
            .args(["--requests-per-10s", "0", "--search-per-second", "0"])
            .args(["--rng-seed", "1", "--access-token", TOKEN])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no sandbox stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("HubSpot sandbox at ") {
            let _ = child.kill();
            return Err(format!("the sandbox did not start: {line:?}").into());
        }
        Ok(Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A database of its own for one backend's run.
struct BenchDb {
    url: String,
    pg: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl BenchDb {
    async fn create(backend: &str) -> Result<Option<Self>, BoxError> {
        match backend {
            "sqlite" => {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("bench.db").display());
                Ok(Some(Self {
                    url,
                    pg: None,
                    _dir: Some(dir),
                }))
            }
            "postgres" => {
                let admin = std::env::var("TEST_DATABASE_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
                let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await else {
                    println!("postgres: skipped (cannot connect to {admin})");
                    return Ok(None);
                };
                let name = format!(
                    "crm_sync_bench_{}",
                    ulid::Ulid::generate().to_string().to_lowercase()
                );
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .execute(&mut conn)
                    .await?;
                let _ = conn.close().await;
                let mut url = url::Url::parse(&admin)?;
                url.set_path(&format!("/{name}"));
                Ok(Some(Self {
                    url: url.to_string(),
                    pg: Some((admin, name)),
                    _dir: None,
                }))
            }
            other => Err(format!("unknown backend {other:?}: expected postgres or sqlite").into()),
        }
    }

    async fn drop_it(self) {
        let Some((admin, name)) = &self.pg else {
            return;
        };
        if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
            let _ = conn.close().await;
        }
    }
}
