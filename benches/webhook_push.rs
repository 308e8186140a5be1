//! A push with HubSpot's webhooks delivered: `cargo bench --bench webhook_push` (release).
//!
//! `WEBHOOK_BENCH_CONTACTS` (default 100,000) new contacts are pushed through the wiring of
//! `crm-sync serve` in this process — the HTTP API with its webhook route, and the job workers —
//! against the sandbox in a process of its own, which sends a v3-signed webhook for every change
//! it makes (a `contact.creation` and a `contact.propertyChange` per property set). For each
//! backend (PostgreSQL from `TEST_DATABASE_URL`, skipped when unreachable; SQLite in a temporary
//! folder), at HubSpot's 100 requests / 10 s and unthrottled, the same push runs with webhooks
//! off and on. `WEBHOOK_BENCH_LIMITS` picks the limits (default `100,0`).
//!
//! Reported per run: push duration, HubSpot calls by kind, webhook events delivered (and
//! deliveries that failed for good), webhook pulls run and the most running at once, the most
//! ids pending at once (sampled every 20 ms) and the ids webhook pulls read, time from the push's end until no id is pending and no
//! webhook pull is active, and "database is locked" seen in any log line or answer.
//!
//! Targets: with webhooks, push duration within 10 % and HubSpot calls ≤ 1.05 × the run without;
//! at most one webhook pull running at any moment; nothing pending 10 s after the push; no
//! "database is locked".

use crm_sync::api::{self, AppState, OAuthSettings};
use crm_sync::hubspot::{Auth, ClientConfig, HubSpotClient};
use crm_sync::jobs::model::{Counts, Job, JobSpec, JobStatus, Trigger};
use crm_sync::jobs::worker::{WorkerConfig, run_workers};
use crm_sync::jobs::{EnqueueRequest, enqueue};
use crm_sync::sandbox::{Sandbox, SandboxArgs};
use crm_sync::secret::Secret;
use crm_sync::store::{NewContact, Store};
use crm_sync::sync::{SyncContext, SyncRunner};
use crm_sync::webhooks::count_pending_pulls;
use serde_json::Value;
use sqlx::Connection;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use url::Url;

mod support;

use support::BoxError;

/// Set in the child process that runs the sandbox: `<limit> <webhook url or ->`.
const SANDBOX_ROLE: &str = "WEBHOOK_BENCH_SANDBOX";
const CLIENT_ID: &str = "bench-client";
const CLIENT_SECRET: &str = "bench-client-secret";

fn main() {
    match std::env::var(SANDBOX_ROLE) {
        Ok(role) => support::run_to_exit(async move { serve_sandbox(&role).await }),
        Err(_) => support::run_to_exit(run()),
    }
}

/// The child: a sandbox on a free port; prints `READY <base url> <token>`, stops when stdin
/// closes.
async fn serve_sandbox(role: &str) -> Result<(), BoxError> {
    let (limit, webhook) = role.split_once(' ').ok_or("bad sandbox role")?;
    let args = SandboxArgs {
        requests_per_10s: limit.parse()?,
        search_per_second: 0,
        rng_seed: Some(1),
        client_id: Some(CLIENT_ID.to_owned()),
        client_secret: Some(CLIENT_SECRET.to_owned()),
        webhook_url: (webhook != "-").then(|| webhook.to_owned()),
        ..SandboxArgs::default()
    };
    let sandbox = Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    println!("READY {} {}", sandbox.base_url(), sandbox.access_token());
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await?;
    Ok(())
}

struct SandboxProcess {
    child: Child,
    base_url: String,
    token: String,
}

impl SandboxProcess {
    fn start(limit: u32, webhook_url: Option<&str>) -> Result<Self, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .env(
                SANDBOX_ROLE,
                format!("{limit} {}", webhook_url.unwrap_or("-")),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let (Some("READY"), Some(base_url), Some(token)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("the sandbox said {line:?}").into());
        };
        Ok(Self {
            base_url: base_url.to_owned(),
            token: token.to_owned(),
            child,
        })
    }

    async fn stats(&self) -> Result<Value, BoxError> {
        Ok(reqwest::get(format!("{}/_sandbox/stats", self.base_url))
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

impl Drop for SandboxProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts log lines that say "database is locked" (at any level), and ERROR lines.
#[derive(Default)]
struct LogCounter {
    locked: AtomicU64,
    errors: AtomicU64,
}

struct CountingWriter(Arc<LogCounter>);

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf);
        if line.contains("database is locked") {
            self.0.locked.fetch_add(1, Ordering::Relaxed);
        }
        if line.contains("ERROR") {
            self.0.errors.fetch_add(1, Ordering::Relaxed);
            eprint!("{line}");
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn run() -> Result<(), BoxError> {
    let logs = Arc::new(LogCounter::default());
    let writer_logs = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_ansi(false)
        .with_writer(move || CountingWriter(writer_logs.clone()))
        .init();
    let n = env_usize("WEBHOOK_BENCH_CONTACTS", 100_000);
    let limits: Vec<u32> = std::env::var("WEBHOOK_BENCH_LIMITS")
        .unwrap_or_else(|_| "100,0".to_owned())
        .split(',')
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    println!("webhook push benchmark: {n} new contacts, limits {limits:?} (0 = unthrottled)");
    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let pg = match sqlx::PgConnection::connect(&admin).await {
        Ok(conn) => {
            let _ = conn.close().await;
            true
        }
        Err(_) => {
            println!("postgres: skipped (cannot connect to {admin})");
            false
        }
    };
    for backend in ["postgres", "sqlite"] {
        if backend == "postgres" && !pg {
            continue;
        }
        for &limit in &limits {
            let off = one_run(backend, &admin, n, limit, false, &logs).await?;
            let on = one_run(backend, &admin, n, limit, true, &logs).await?;
            println!(
                "{backend} limit {}: push {:.1} s with webhooks vs {:.1} s without ({:+.1} %); HubSpot calls {} vs {} ({:.3}×)",
                limit_name(limit),
                on.push_secs,
                off.push_secs,
                100.0 * (on.push_secs / off.push_secs - 1.0),
                on.calls,
                off.calls,
                on.calls as f64 / off.calls.max(1) as f64
            );
        }
    }
    Ok(())
}

fn limit_name(limit: u32) -> String {
    if limit == 0 {
        "unthrottled".to_owned()
    } else {
        format!("{limit}/10 s")
    }
}

struct Outcome {
    push_secs: f64,
    calls: u64,
}

/// A database of its own for one run; dropped afterwards.
enum Db {
    Postgres {
        admin: String,
        name: String,
    },
    /// The folder is deleted when this is dropped.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
}

impl Db {
    async fn create(backend: &str, admin: &str) -> Result<(Self, String), BoxError> {
        if backend == "sqlite" {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            return Ok((Db::Sqlite(dir), url));
        }
        let name = format!(
            "crm_sync_bench_{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        let mut conn = sqlx::PgConnection::connect(admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        let mut url = Url::parse(admin)?;
        url.set_path(&format!("/{name}"));
        Ok((
            Db::Postgres {
                admin: admin.to_owned(),
                name,
            },
            url.to_string(),
        ))
    }

    async fn drop_it(self) -> Result<(), BoxError> {
        if let Db::Postgres { admin, name } = self {
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await?;
            let _ = conn.close().await;
        }
        Ok(())
    }
}

async fn one_run(
    backend: &str,
    admin: &str,
    n: usize,
    limit: u32,
    webhooks: bool,
    logs: &LogCounter,
) -> Result<Outcome, BoxError> {
    let locked_before = logs.locked.load(Ordering::Relaxed);
    let (db, url) = Db::create(backend, admin).await?;
    let store = Store::connect(&url).await?;
    store.migrate().await?;
    let contacts: Vec<NewContact> = (0..n)
        .map(|i| NewContact {
            email: (i % 10 != 9).then(|| format!("bench{i}@acme.io")),
            first_name: Some(format!("First{i}")),
            last_name: Some(format!("Last{i}")),
        })
        .collect();
    for chunk in contacts.chunks(10_000) {
        store.insert_contacts(chunk).await?;
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let public_url = Url::parse(&format!("http://{addr}"))?;
    let hook = format!("{public_url}webhooks/hubspot");
    let sandbox = SandboxProcess::start(limit, webhooks.then_some(hook.as_str()))?;
    let mut config = ClientConfig::new(Url::parse(&sandbox.base_url)?);
    config.requests_per_10s = limit;
    let client = HubSpotClient::new(config, Auth::PrivateApp(Secret::new(sandbox.token.clone())))?;
    let oauth = OAuthSettings {
        client_id: Some(CLIENT_ID.to_owned()),
        client_secret: Some(Secret::new(CLIENT_SECRET)),
        public_url,
        authorize_url: Url::parse(&format!("{}/oauth/authorize", sandbox.base_url))?,
        portal_id: None,
    };
    // `serve`'s wiring: the API with its default limits, and the workers, in one process.
    let state = AppState::new(store.clone(), Secret::new("bench-api-token"))
        .with_oauth(oauth)
        .with_hubspot(client.clone(), None);
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api = tokio::spawn(api::serve(listener, state, async {
        let _ = api_stopped.await;
    }));
    let (stop_workers, workers_stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = Arc::new(SyncRunner::new(SyncContext::new(client.clone())));
    let workers = tokio::spawn(run_workers(
        store.clone(),
        runner,
        vec![],
        WorkerConfig {
            role: "bench".to_owned(),
            ..WorkerConfig::default()
        },
        async {
            let _ = workers_stopped.await;
        },
    ));

    let push = enqueue(
        &store,
        EnqueueRequest {
            spec: JobSpec::push(),
            trigger: Trigger::Cli,
            force: false,
        },
    )
    .await?
    .job;
    let started = Instant::now();
    let mut most_running = 0;
    let mut most_pending = 0;
    let push_done = loop {
        most_running = most_running.max(running_webhook_pulls(&store).await?);
        most_pending = most_pending.max(count_pending_pulls(&store).await?);
        let job = store.get_job(push.id).await?.ok_or("the push vanished")?;
        if job.status.is_terminal() {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let push_secs = started.elapsed().as_secs_f64();
    if push_done.status != JobStatus::Succeeded {
        return Err(format!("the push ended {}: {:?}", push_done.status, push_done.error).into());
    }
    let pushed_at = Instant::now();
    // Settled: the sandbox has sent everything, nothing is pending, no webhook pull is active.
    let mut last_delivered = u64::MAX;
    let mut drained_secs = None;
    let settled_secs = loop {
        most_running = most_running.max(running_webhook_pulls(&store).await?);
        let stats = sandbox.stats().await?;
        let delivered = stats["webhooks"]["delivered"].as_u64().unwrap_or(0);
        let pending = count_pending_pulls(&store).await?;
        most_pending = most_pending.max(pending);
        let active = store
            .active_job_records()
            .await?
            .iter()
            .any(|r| r.job.trigger == Trigger::Webhook);
        if pending == 0 && !active {
            drained_secs.get_or_insert(pushed_at.elapsed().as_secs_f64());
        } else {
            drained_secs = None;
        }
        if delivered == last_delivered && pending == 0 && !active {
            break pushed_at.elapsed().as_secs_f64();
        }
        last_delivered = delivered;
        if pushed_at.elapsed() > Duration::from_secs(600) {
            return Err(format!("still {pending} ids pending 600 s after the push").into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let stats = sandbox.stats().await?;
    let jobs = store.list_jobs(None, 10_000).await?;
    let pulls: Vec<&Job> = jobs
        .iter()
        .filter(|j| j.trigger == Trigger::Webhook)
        .collect();
    let ids_read: u64 = pulls
        .iter()
        .map(|j| match j.counts {
            Counts::Pull(c) => c.total,
            Counts::Push(_) => 0,
        })
        .sum();
    let failed_pulls = pulls
        .iter()
        .filter(|j| j.status != JobStatus::Succeeded)
        .count();
    let mut by_op: BTreeMap<String, u64> =
        serde_json::from_value(stats["requests"]["by_operation"].clone())?;
    // The benchmark's own look at the sandbox's counters is no HubSpot call.
    by_op.remove("admin");
    let calls: u64 = by_op.values().sum();
    let Counts::Push(counts) = push_done.counts else {
        return Err("not a push".into());
    };
    println!(
        "{backend} limit {} webhooks {}: push of {} ({} created, {} failed) in {push_secs:.1} s; HubSpot calls {calls} {by_op:?}, {} answered 429",
        limit_name(limit),
        if webhooks { "on" } else { "off" },
        counts.total,
        counts.created,
        counts.failed,
        stats["requests"]["rate_limited"],
    );
    if webhooks {
        println!(
            "    webhook events delivered {}, deliveries failed for good {}; webhook pulls {} ({} not succeeded), most running at once {most_running}, most active at once {}; most ids pending at once (sampled) {most_pending}, ids read {ids_read} ({}); no id pending and no webhook pull active {:.1} s after the push (and since), last webhook delivered by {settled_secs:.1} s after it; \"database is locked\" {}",
            stats["webhooks"]["delivered"],
            stats["webhooks"]["failed_requests"],
            pulls.len(),
            failed_pulls,
            most_overlapping(&pulls),
            if ids_read == 0 {
                "no id read".to_owned()
            } else {
                format!(
                    "at most {:.2} reads per id pending",
                    ids_read as f64 / most_pending.max(1) as f64
                )
            },
            drained_secs.unwrap_or(settled_secs),
            logs.locked.load(Ordering::Relaxed) - locked_before,
        );
    }
    let _ = stop_workers.send(());
    let _ = workers.await;
    let _ = stop_api.send(());
    let _ = api.await;
    store.close().await;
    drop(sandbox);
    db.drop_it().await?;
    Ok(Outcome { push_secs, calls })
}

async fn running_webhook_pulls(store: &Store) -> Result<usize, BoxError> {
    Ok(store
        .list_jobs(Some(JobStatus::Running), 100)
        .await?
        .iter()
        .filter(|j| j.trigger == Trigger::Webhook)
        .count())
}

/// The most webhook pulls whose run spans (start to finish) overlap at one moment.
fn most_overlapping(pulls: &[&Job]) -> usize {
    let mut edges: Vec<(chrono::DateTime<chrono::Utc>, i32)> = Vec::new();
    for job in pulls {
        if let (Some(s), Some(f)) = (job.started_at, job.finished_at) {
            edges.push((s, 1));
            edges.push((f, -1));
        }
    }
    // A finish and a start at the same instant do not overlap.
    edges.sort_by_key(|(t, d)| (*t, *d));
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}
