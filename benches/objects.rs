//! Object sync throughput against the HubSpot sandbox running as its own `crm-sync sandbox`
//! process: `cargo bench --bench objects` (release).
//!
//! Two data sets, each in a database of its own and a fresh sandbox, per backend and per rate
//! regime:
//!
//! - **mapped contacts**: a user's own table `bench_users` of `OBJECTS_BENCH_CONTACTS` rows
//!   (default 100,000) synced through a `[[sync.objects]]` mapping of ten fields — text, number
//!   (integer and decimal), date, datetime, bool and enumeration — pushed (link mode, into an
//!   empty portal), then pulled back (a full pull that finds every record unchanged);
//! - **companies and associations**: `OBJECTS_BENCH_COMPANIES` (default 10,000) companies in
//!   crm-sync's `companies` table and `OBJECTS_BENCH_CONTACTS` built-in contacts, each linked
//!   to one of them (`contacts.company_id`): a companies push (link mode: by key, by domain
//!   search, then create), a contacts push (contacts, then one primary association each), a
//!   companies full pull and a contacts full pull (contacts, then every contact's companies).
//!
//! Rate regimes (`OBJECTS_BENCH_LIMITS`, default `off,hubspot`): `off` — no limit on either
//! side; `hubspot` — HubSpot's documented limits for a private app on Free/Starter, on the
//! sandbox and on the client alike: 100 requests per 10 s (general), 5 searches per second,
//! 100 association batch calls per 10 s (API-NOTES §12). The steps of a data set run back to
//! back against one sandbox, so each starts with whatever its predecessor left of the rolling
//! windows; a step whose calls fit in one window's burst (the association reads of a full pull:
//! one call per 1,000 contacts) runs at nearly unthrottled speed.
//!
//! For each step: records, duration, records/s, HubSpot calls per 100 records by bucket
//! (general, search, associations; from the sandbox's own stats, 429 answers included and
//! counted apart) and this process's peak RSS so far (the sandbox's memory is its own). The
//! association phase of a contacts push or pull is timed from the commit of the job's last
//! contact page to the job's end (the job's progress, polled every 20 ms).
//!
//! At full size the `hubspot` regime is bound by the limits: about 13 minutes per backend
//! (some 7,700 calls, nearly all at 10 per second); the `off` regime takes a few minutes per
//! backend in a release build, most of it the mapped push on PostgreSQL and the data set-up.
//!
//! Environment: `OBJECTS_BENCH_CONTACTS`, `OBJECTS_BENCH_COMPANIES`, `OBJECTS_BENCH_BACKENDS`
//! (default `postgres,sqlite`), `OBJECTS_BENCH_LIMITS`, `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`; PostgreSQL is skipped when unreachable).

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use crm_sync::config::Settings;
use crm_sync::hubspot::{
    Auth, ClientConfig, HubSpotClient, ObjectType, PropertyCreate, PropertyOption,
};
use crm_sync::ids::JobId;
use crm_sync::jobs::model::{
    Counts, Job, JobAction, JobSpec, PullMode, PushMode, SyncObject, Trigger,
};
use crm_sync::jobs::{EnqueueRequest, JobRunner, enqueue};
use crm_sync::mapping::check_mappings;
use crm_sync::secret::Secret;
use crm_sync::store::{Backend, NewCompany, NewContact, Store};
use crm_sync::sync::{SyncContext, SyncRunner};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod support;

use support::{BenchDb, BoxError, SANDBOX_TOKEN, SandboxProcess, peak_rss_mb, run_job};

fn main() {
    support::run_to_exit(run());
}

/// The mapping of the user's table: ten fields, every value type HubSpot converts.
const MAPPING: &str = r#"
[[sync.objects]]
object = "contacts"
table = "bench_users"
key_column = "id"
create_properties = true

[sync.objects.fields]
email = { property = "email", direction = "both", owner = "local" }
first_name = { property = "firstname", direction = "both", owner = "local" }
last_name = { property = "lastname", direction = "both", owner = "hubspot" }
job_title = { property = "jobtitle", direction = "push" }
plan = { property = "bench_plan", direction = "both", owner = "local" }
seats = { property = "bench_seats", direction = "both", owner = "local" }
mrr = { property = "bench_mrr", direction = "both", owner = "local" }
signup_date = { property = "bench_signup_date", direction = "push" }
last_login_at = { property = "bench_last_login", direction = "both", owner = "hubspot" }
active = { property = "bench_active", direction = "both", owner = "local" }
"#;

/// The plans of `bench_users.plan` (an enumeration's options must exist in HubSpot).
const PLANS: [&str; 4] = ["free", "starter", "pro", "enterprise"];

/// Rows per `INSERT` statement when filling the user's table.
const INSERT_ROWS: usize = 500;

/// How often the job's progress is read to split its phases.
const PHASE_POLL: Duration = Duration::from_millis(20);

/// Which rate limits HubSpot (the sandbox) and the client keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limits {
    /// None on either side.
    Off,
    /// HubSpot's documented ones for a private app on Free/Starter.
    HubSpot,
}

impl Limits {
    fn parse(name: &str) -> Result<Self, BoxError> {
        match name {
            "off" => Ok(Self::Off),
            "hubspot" => Ok(Self::HubSpot),
            other => Err(format!("unknown limits {other:?}: expected off or hubspot").into()),
        }
    }

    /// (general per 10 s, searches per second, association batch calls per 10 s); 0 is none.
    fn budgets(self) -> (u32, u32, u32) {
        match self {
            Self::Off => (0, 0, 0),
            Self::HubSpot => (100, 5, 100),
        }
    }

    fn sandbox(self) -> Result<SandboxProcess, BoxError> {
        let (general, search, associations) = self.budgets();
        SandboxProcess::start(&[
            "--requests-per-10s".to_owned(),
            general.to_string(),
            "--search-per-second".to_owned(),
            search.to_string(),
            "--associations-per-10s".to_owned(),
            associations.to_string(),
        ])
    }

    /// A client keeping the same budgets as the sandbox, as the service would be configured.
    fn client(self, sandbox: &SandboxProcess) -> Result<HubSpotClient, BoxError> {
        let (general, search, associations) = self.budgets();
        let mut config = ClientConfig::new(sandbox.base_url.parse()?);
        config.requests_per_10s = general;
        config.search_per_second = search;
        config.associations_per_10s = associations;
        Ok(HubSpotClient::new(
            config,
            Auth::PrivateApp(Secret::new(SANDBOX_TOKEN)),
        )?)
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "unthrottled",
            Self::HubSpot => "HubSpot limits",
        })
    }
}

/// HubSpot calls by rate bucket, from the sandbox's stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Calls {
    general: u64,
    search: u64,
    associations: u64,
    /// Answered 429 (part of the buckets' figures).
    rate_limited: u64,
}

impl Calls {
    /// The sandbox's counts so far, sorted into its buckets: searches, association batch
    /// calls, and everything else the app called (its own admin routes excluded).
    async fn now(sandbox: &SandboxProcess) -> Result<Self, BoxError> {
        let stats = sandbox.stats().await?;
        let requests = &stats["requests"];
        let mut calls = Calls {
            rate_limited: requests["rate_limited"].as_u64().unwrap_or(0),
            ..Calls::default()
        };
        let ops = requests["by_operation"]
            .as_object()
            .ok_or("no by_operation in the sandbox's stats")?;
        for (op, n) in ops {
            let n = n.as_u64().unwrap_or(0);
            if op == "admin" {
                continue;
            } else if op.ends_with(".search") {
                calls.search += n;
            } else if op.starts_with("associations.batch_") {
                calls.associations += n;
            } else {
                calls.general += n;
            }
        }
        Ok(calls)
    }

    fn since(self, before: Calls) -> Calls {
        Calls {
            general: self.general - before.general,
            search: self.search - before.search,
            associations: self.associations - before.associations,
            rate_limited: self.rate_limited - before.rate_limited,
        }
    }

    /// Only the association bucket (the association phase of a contacts job).
    fn associations_only(self) -> Calls {
        Calls {
            associations: self.associations,
            ..Calls::default()
        }
    }

    /// Every bucket but associations (the contact phase of a contacts job).
    fn without_associations(self) -> Calls {
        Calls {
            associations: 0,
            ..self
        }
    }
}

/// One measured step: a table row.
struct Row {
    backend: String,
    limits: Limits,
    step: &'static str,
    records: u64,
    seconds: f64,
    calls: Calls,
}

impl Row {
    fn print_header() {
        println!(
            "{:<8} | {:<14} | {:<38} | {:>8} | {:>9} | {:>10} | {:>7} {:>7} {:>7} | {:>5} | {:>8}",
            "backend",
            "limits",
            "step",
            "records",
            "seconds",
            "records/s",
            "general",
            "search",
            "assoc",
            "429s",
            "peak RSS"
        );
        println!(
            "{:<8} | {:<14} | {:<38} | {:>8} | {:>9} | {:>10} | {:>23} | {:>5} | {:>8}",
            "", "", "", "", "", "", "calls per 100 records", "", "MB"
        );
    }

    fn print(&self) {
        let per_100 = |n: u64| 100.0 * n as f64 / self.records.max(1) as f64;
        println!(
            "{:<8} | {:<14} | {:<38} | {:>8} | {:>9.2} | {:>10.0} | {:>7.2} {:>7.2} {:>7.2} | {:>5} | {:>8}",
            self.backend,
            self.limits.to_string(),
            self.step,
            self.records,
            self.seconds,
            self.records as f64 / self.seconds.max(1e-9),
            per_100(self.calls.general),
            per_100(self.calls.search),
            per_100(self.calls.associations),
            self.calls.rate_limited,
            peak_rss_mb().map_or("?".to_owned(), |m| m.to_string()),
        );
    }
}

fn env_count(name: &str, default: usize) -> Result<usize, BoxError> {
    match std::env::var(name) {
        Ok(v) => Ok(v
            .parse()
            .map_err(|e| format!("{name}={v:?} is not a count: {e}"))?),
        Err(_) => Ok(default),
    }
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

async fn run() -> Result<(), BoxError> {
    let contacts = env_count("OBJECTS_BENCH_CONTACTS", 100_000)?;
    let companies = env_count("OBJECTS_BENCH_COMPANIES", 10_000)?;
    if companies == 0 {
        return Err("OBJECTS_BENCH_COMPANIES must be at least 1".into());
    }
    let backends = env_list("OBJECTS_BENCH_BACKENDS", "postgres,sqlite");
    let limits: Vec<Limits> = env_list("OBJECTS_BENCH_LIMITS", "off,hubspot")
        .iter()
        .map(|l| Limits::parse(l))
        .collect::<Result<_, _>>()?;
    println!(
        "objects benchmark: {contacts} contacts with 10 mapped fields; {companies} companies and \
         {contacts} contacts each linked to one; sandbox in its own process"
    );
    Row::print_header();
    for backend in &backends {
        for &limit in &limits {
            mapped_contacts(backend, limit, contacts).await?;
            companies_and_associations(backend, limit, companies, contacts).await?;
        }
    }
    Ok(())
}

/// The user's table through the ten-field mapping: a push into an empty portal, then a full
/// pull of the same records.
async fn mapped_contacts(backend: &str, limits: Limits, n: usize) -> Result<(), BoxError> {
    let Some(db) = BenchDb::create(backend).await? else {
        return Ok(());
    };
    let result = async {
        let store = Store::connect(&db.url).await?;
        store.migrate().await?;
        fill_users(&store, n).await?;
        let sandbox = limits.sandbox()?;
        let client = limits.client(&sandbox)?;
        create_plan_property(&client).await?;
        let mut ctx = SyncContext::new(client);
        ctx.objects = Arc::new(check_mappings(&store, &mapping(&db.url)?.sync.objects).await?);
        ctx.pull.lookback = Duration::ZERO;
        let runner: Arc<dyn JobRunner> = Arc::new(SyncRunner::new(ctx));
        let bench = Bench {
            store: &store,
            sandbox: &sandbox,
            runner: &runner,
            backend,
            limits,
        };
        bench
            .step("mapped contacts push (10 fields)", contacts(push()))
            .await?;
        bench
            .step("mapped contacts pull (10 fields)", contacts(full_pull()))
            .await?;
        store.close().await;
        Ok::<(), BoxError>(())
    }
    .await;
    db.drop_it().await;
    result
}

/// Companies and contacts linked to them: companies push, contacts push (with the
/// associations), companies pull, contacts pull (with the associations).
async fn companies_and_associations(
    backend: &str,
    limits: Limits,
    companies: usize,
    contacts_n: usize,
) -> Result<(), BoxError> {
    let Some(db) = BenchDb::create(backend).await? else {
        return Ok(());
    };
    let result = async {
        let store = Store::connect(&db.url).await?;
        store.migrate().await?;
        fill_companies_and_contacts(&store, companies, contacts_n).await?;
        let sandbox = limits.sandbox()?;
        let mut ctx = SyncContext::new(limits.client(&sandbox)?);
        ctx.pull.lookback = Duration::ZERO;
        let runner: Arc<dyn JobRunner> = Arc::new(SyncRunner::new(ctx));
        let bench = Bench {
            store: &store,
            sandbox: &sandbox,
            runner: &runner,
            backend,
            limits,
        };
        bench.step("companies push", companies_job(push())).await?;
        bench
            .phased(
                contacts(push()),
                ("contacts push: contacts", "contacts push: associations"),
            )
            .await?;
        bench
            .step("companies pull", companies_job(full_pull()))
            .await?;
        bench
            .phased(
                contacts(full_pull()),
                (
                    "contacts pull: contacts",
                    "contacts pull: associations read",
                ),
            )
            .await?;
        store.close().await;
        Ok::<(), BoxError>(())
    }
    .await;
    db.drop_it().await;
    result
}

fn push() -> JobAction {
    JobAction::Push {
        mode: PushMode::Link,
    }
}

fn full_pull() -> JobAction {
    JobAction::Pull {
        mode: PullMode::Upsert,
        incremental: false,
    }
}

fn contacts(action: JobAction) -> JobSpec {
    JobSpec::from(action)
}

fn companies_job(action: JobAction) -> JobSpec {
    JobSpec {
        object: SyncObject::Companies,
        ..JobSpec::from(action)
    }
}

/// What every step of one data set shares.
struct Bench<'a> {
    store: &'a Store,
    sandbox: &'a SandboxProcess,
    runner: &'a Arc<dyn JobRunner>,
    backend: &'a str,
    limits: Limits,
}

/// A finished job, with when its last record page committed.
struct Finished {
    job: Job,
    seconds: f64,
    /// Seconds from the start to the commit that brought `processed` to its final value.
    records_done: f64,
    calls: Calls,
}

impl Bench<'_> {
    /// Runs the job to its end; refuses one that failed, or failed any record.
    async fn finish(&self, spec: JobSpec) -> Result<Finished, BoxError> {
        let id = enqueue(
            self.store,
            EnqueueRequest {
                spec,
                trigger: Trigger::Cli,
                force: false,
            },
        )
        .await?
        .job
        .id;
        let before = Calls::now(self.sandbox).await?;
        let started = Instant::now();
        let done = Arc::new(AtomicBool::new(false));
        let watcher = tokio::spawn(records_done(self.store.clone(), id, started, done.clone()));
        let job = run_job(self.store, self.runner, id).await;
        let seconds = started.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        let records_done = watcher.await??.unwrap_or(seconds);
        let job = job?;
        let calls = Calls::now(self.sandbox).await?.since(before);
        if job.error.is_some() || job.counts.failed() > 0 || job.counts.associations_failed() > 0 {
            return Err(format!(
                "{:?} {} did not sync cleanly: {:?}, {:?}, first error {:?}",
                job.spec.object,
                job.direction(),
                job.error,
                job.counts,
                job.errors.first()
            )
            .into());
        }
        Ok(Finished {
            job,
            seconds,
            records_done,
            calls,
        })
    }

    /// One job, one row.
    async fn step(&self, label: &'static str, spec: JobSpec) -> Result<(), BoxError> {
        let run = self.finish(spec).await?;
        self.row(label, run.job.counts.total(), run.seconds, run.calls);
        Ok(())
    }

    /// A contacts job, as two rows: its contact pages, then its association phase (every
    /// contact's primary company written, or read).
    async fn phased(
        &self,
        spec: JobSpec,
        (records_label, associations_label): (&'static str, &'static str),
    ) -> Result<(), BoxError> {
        let run = self.finish(spec).await?;
        let total = run.job.counts.total();
        self.row(
            records_label,
            total,
            run.records_done,
            run.calls.without_associations(),
        );
        let associations = match run.job.counts {
            Counts::Push(c) => c.associations_created,
            // A full pull reads the companies of every linked contact it listed.
            Counts::Pull(_) => total,
        };
        self.row(
            associations_label,
            associations,
            run.seconds - run.records_done,
            run.calls.associations_only(),
        );
        Ok(())
    }

    fn row(&self, step: &'static str, records: u64, seconds: f64, calls: Calls) {
        Row {
            backend: self.backend.to_owned(),
            limits: self.limits,
            step,
            records,
            seconds,
            calls,
        }
        .print();
    }
}

/// Polls the job until `done`: the seconds since `started` at which `progress.processed` last
/// changed (the commit of its last record page), `None` when it never moved.
async fn records_done(
    store: Store,
    id: JobId,
    started: Instant,
    done: Arc<AtomicBool>,
) -> Result<Option<f64>, crm_sync::store::StoreError> {
    let mut processed = 0;
    let mut changed_at = None;
    while !done.load(Ordering::Relaxed) {
        if let Some(job) = store.get_job(id).await?
            && job.progress.processed != processed
        {
            processed = job.progress.processed;
            changed_at = Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(PHASE_POLL).await;
    }
    Ok(changed_at)
}

/// The configuration with [`MAPPING`], loaded and validated as the service loads it.
fn mapping(db_url: &str) -> Result<Settings, BoxError> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("config"))?;
    std::fs::write(dir.path().join("config/local.toml"), MAPPING)?;
    let env = [("CRM_SYNC__DATABASE__URL".to_owned(), db_url.to_owned())]
        .into_iter()
        .collect();
    Ok(Settings::load(dir.path(), &env)?)
}

/// The `bench_plan` enumeration with [`PLANS`] (HubSpot needs an enumeration's options, which
/// a column cannot declare, so the user creates it; the other properties crm-sync creates).
async fn create_plan_property(client: &HubSpotClient) -> Result<(), BoxError> {
    let options = PLANS
        .iter()
        .enumerate()
        .map(|(i, plan)| PropertyOption {
            label: plan.to_string(),
            value: plan.to_string(),
            hidden: false,
            display_order: Some(i as i32),
            description: None,
        })
        .collect();
    client
        .create_object_property(
            ObjectType::Contacts,
            &PropertyCreate {
                name: "bench_plan".to_owned(),
                label: "Plan".to_owned(),
                property_type: "enumeration".to_owned(),
                field_type: "select".to_owned(),
                group_name: "contactinformation".to_owned(),
                description: None,
                has_unique_value: false,
                options,
                form_field: None,
            },
        )
        .await?;
    Ok(())
}

/// The user's own table, `n` rows with every mapped column filled.
async fn fill_users(store: &Store, n: usize) -> Result<(), BoxError> {
    exec(
        store,
        "CREATE TABLE bench_users (
            id BIGINT PRIMARY KEY,
            email TEXT NOT NULL UNIQUE,
            first_name TEXT,
            last_name TEXT,
            job_title TEXT,
            plan TEXT,
            seats INTEGER,
            mrr NUMERIC(12, 2),
            signup_date DATE,
            last_login_at TIMESTAMPTZ,
            active BOOLEAN
        )",
    )
    .await?;
    // SQLite keeps timestamps as UTC text without an offset; PostgreSQL takes one.
    let offset = match store.backend() {
        Backend::Postgres => "+00",
        Backend::Sqlite => "",
    };
    let rows: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "({i}, 'user{i}@bench{}.io', 'First{i}', 'Last{i}', 'Engineer {}', '{}', {}, \
                 {}.{:02}, '2026-{:02}-{:02}', '2026-11-{:02} {:02}:{:02}:{:02}{offset}', {})",
                i % 1000,
                i % 7,
                PLANS[i % PLANS.len()],
                1 + i % 50,
                i % 10_000,
                i % 100,
                1 + i % 12,
                1 + i % 28,
                1 + i % 28,
                i % 24,
                i % 60,
                (i / 60) % 60,
                if i % 3 == 0 { "FALSE" } else { "TRUE" },
            )
        })
        .collect();
    for chunk in rows.chunks(INSERT_ROWS) {
        exec(
            store,
            &format!(
                "INSERT INTO bench_users (id, email, first_name, last_name, job_title, plan, \
                 seats, mrr, signup_date, last_login_at, active) VALUES {}",
                chunk.join(", ")
            ),
        )
        .await?;
    }
    Ok(())
}

/// `companies` companies `Company {i}` at `co{i}.io`, and `contacts` built-in contacts
/// `bench{j}@co{j mod companies}.io`, each given the company of its email's domain.
async fn fill_companies_and_contacts(
    store: &Store,
    companies: usize,
    contacts: usize,
) -> Result<(), BoxError> {
    let batch: Vec<NewCompany> = (0..companies)
        .map(|i| NewCompany {
            name: Some(format!("Company {i}")),
            domain: Some(format!("co{i}.io")),
        })
        .collect();
    store.insert_companies(&batch).await?;
    let batch: Vec<NewContact> = (0..contacts)
        .map(|j| NewContact {
            email: Some(format!("bench{j}@co{}.io", j % companies)),
            first_name: Some(format!("First{j}")),
            last_name: Some(format!("Last{j}")),
        })
        .collect();
    store.insert_contacts(&batch).await?;
    // As `seed` does it: each contact gets the one company with its email's domain.
    let linked = store.link_contacts_to_companies_by_email_domain().await?;
    if linked != contacts as u64 {
        return Err(format!("{linked} of {contacts} contacts got a company").into());
    }
    Ok(())
}

/// Runs `sql` (one or more statements the benchmark wrote itself) on the store's pool.
async fn exec(store: &Store, sql: &str) -> Result<(), BoxError> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pool), _) => sqlx::raw_sql(sql).execute(pool).await.map(drop)?,
        (_, Some(pool)) => sqlx::raw_sql(sql).execute(pool).await.map(drop)?,
        _ => return Err("a store without a pool".into()),
    }
    Ok(())
}
