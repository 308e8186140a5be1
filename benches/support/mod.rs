//! What every benchmark shares: a runtime around its async body that turns a failure into one
//! error line and exit status 1, the peak-RSS reading the figures quote, the sandbox as a child
//! process ([`SandboxProcess`]) and a database of its own per run ([`BenchDb`]).

// Each benchmark is its own crate and uses only part of this module.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crm_sync::ids::JobId;
use crm_sync::jobs::JobRunner;
use crm_sync::jobs::model::Job;
use crm_sync::jobs::queue::SyncTask;
use crm_sync::jobs::worker::{RetryPolicy, process};
use crm_sync::store::Store;
use serde_json::Value;
use sqlx::Connection;
use std::sync::Arc;

/// Any benchmark failure; printed as one line.
pub type BoxError = Box<dyn std::error::Error>;

/// Runs `bench` on a multi-threaded runtime; prints its error and exits 1 when it fails, so a
/// broken benchmark is never mistaken for a finished one.
pub fn run_to_exit(bench: impl Future<Output = Result<(), BoxError>>) {
    if let Err(e) = pin_from_env("BENCH_SERVICE_CPUS", std::process::id()) {
        eprintln!("cannot pin the benchmark: {e}");
        std::process::exit(1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(bench) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

/// This process's peak resident set so far (Linux `VmHWM`), in MB; `None` where the kernel does
/// not say.
pub fn peak_rss_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// CPU seconds (user + system) a process has used so far, from Linux `/proc/<pid>/stat`
/// (`self` for this one); `None` where the kernel does not say.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; the kernel
    // counts them in clock ticks of 1/100 s on Linux.
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// The private-app token the benchmarks' sandboxes accept.
pub const SANDBOX_TOKEN: &str = "pat-na1-bench";
/// The OAuth app of the benchmarks' sandboxes (its secret signs the webhooks).
pub const CLIENT_ID: &str = "bench-client";
/// See [`CLIENT_ID`].
pub const CLIENT_SECRET: &str = "bench-client-secret";

/// `crm-sync sandbox` in a process of its own (so that its work does not share this process's
/// runtime), on a free loopback port, with a fixed seed, token and OAuth app and no search
/// limit (unless `--search-per-second` is among the flags); killed when dropped.
pub struct SandboxProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
}

impl SandboxProcess {
    /// Starts it with `flags` added (`--requests-per-10s`, `--search-per-second`, `--contacts`,
    /// `--webhook-url`, ...);
    /// returns once it listens.
    pub fn start(flags: &[String]) -> Result<Self, BoxError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // `BENCH_SANDBOX_CPUS` (e.g. `1`, with `BENCH_SERVICE_CPUS=0`) gives HubSpot's side
        // its own core: on a small machine its work (building, signing and sending webhooks)
        // would otherwise be charged to the service it serves, which real HubSpot's is not.
        // No search limit unless the flags set one (the sandbox takes each flag once).
        let search_limit = if flags.iter().any(|f| f == "--search-per-second") {
            &[][..]
        } else {
            &["--search-per-second", "0"][..]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
            .args(["sandbox", "--port", &port.to_string(), "--rng-seed", "1"])
            .args(["--access-token", SANDBOX_TOKEN])
            .args(search_limit)
            .args(["--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET])
            .args(flags)
            // Its log lines would drown the figures; warnings and errors still show.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        if let Err(e) = pin_from_env("BENCH_SANDBOX_CPUS", child.id()) {
            let _ = child.kill();
            return Err(e);
        }
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

    /// CPU seconds the sandbox process has used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(&self.child.id().to_string())
    }

    /// Its admin stats (`GET /_sandbox/stats`).
    pub async fn stats(&self) -> Result<Value, BoxError> {
        Ok(reqwest::get(format!("{}/_sandbox/stats", self.base_url))
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Puts `contacts` (`{"properties": {..}}` each) into HubSpot directly, through the admin
    /// route: no webhook, no rate limit. Their HubSpot ids, in order.
    pub async fn insert(&self, contacts: &[Value]) -> Result<Vec<String>, BoxError> {
        let mut ids = Vec::with_capacity(contacts.len());
        for chunk in contacts.chunks(1_000) {
            let answer: Value = reqwest::Client::new()
                .post(format!("{}/_sandbox/contacts", self.base_url))
                .json(&serde_json::json!({ "contacts": chunk }))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let chunk_ids = answer["ids"].as_array().ok_or("no ids in the answer")?;
            ids.extend(
                chunk_ids
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned)),
            );
        }
        Ok(ids)
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PostgreSQL server the benchmarks create their databases on: `TEST_DATABASE_URL`, or the
/// local one.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own for one run: a new PostgreSQL database (dropped by
/// [`BenchDb::drop_it`]) or an SQLite file in a temporary folder (deleted with it).
pub struct BenchDb {
    /// Its URL.
    pub url: String,
    /// The server's admin URL and the database's name, on PostgreSQL.
    pg: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl BenchDb {
    /// A database on `backend` (`postgres` or `sqlite`); `None` (and a line saying so) when
    /// PostgreSQL does not answer.
    pub async fn create(backend: &str) -> Result<Option<Self>, BoxError> {
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
                let admin = postgres_admin_url();
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

    /// Drops the PostgreSQL database (the SQLite folder goes with `self`).
    pub async fn drop_it(self) {
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

/// Pins every thread of process `pid` to the CPUs the variable `var` lists (`taskset` syntax,
/// e.g. `0` or `0,1`); nothing when it is unset.
pub fn pin_from_env(var: &str, pid: u32) -> Result<(), BoxError> {
    let Ok(cpus) = std::env::var(var) else {
        return Ok(());
    };
    let status = Command::new("taskset")
        .args([
            "--all-tasks",
            "--pid",
            "--cpu-list",
            &cpus,
            &pid.to_string(),
        ])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("taskset {cpus} for {var} failed: {status}").into());
    }
    Ok(())
}

/// Hands job `id`'s deliveries to the worker's `process`, as a worker would, until the job
/// ends (a transient failure is retried by the next delivery); the job as it ended.
pub async fn run_job(
    store: &Store,
    runner: &Arc<dyn JobRunner>,
    id: JobId,
) -> Result<Job, BoxError> {
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
