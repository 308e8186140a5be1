//! What operators watch: `/metrics` of `crm-sync serve` and of `crm-sync worker` (its
//! `worker.bind` listener), run as real processes against the HubSpot sandbox on SQLite and
//! PostgreSQL; and the deploy files (`deploy/prometheus/alerts.yml`, the Grafana dashboard),
//! every metric of which must be one the service exports.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::TestDb;
use common::process::{JOB_PATIENCE, Serve, Worker, scrape};
use crm_sync::api::Metrics;
use crm_sync::jobs::{EnqueueRequest, enqueue};
use crm_sync::model::{Job, JobSpec, JobStatus, Trigger};
use crm_sync::sandbox::{Sandbox, SandboxArgs, SandboxHandle};
use crm_sync::store::{NewContact, Store};

backend_tests!(
    fixture = common::same_db;
    every_metric_the_dashboard_and_the_alerts_name_is_exported_by_serve,
    a_worker_serves_probes_and_counts_each_retry_of_its_jobs,
    a_database_that_fails_at_scrape_time_leaves_a_page_saying_so,
    a_job_that_meets_a_429_shows_the_wait_it_imposed,
);

/// Prometheus' own series about a target, which alerts may use beside the service's.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];

const PRIVATE_APP_TOKEN: &str = "pat-monitoring-test";

async fn every_metric_the_dashboard_and_the_alerts_name_is_exported_by_serve(db: &TestDb) {
    let store = db.store().await;
    insert_people(&store, 2).await;
    let hubspot = sandbox(0).await;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), db.url(), &hubspot.base_url(), PRIVATE_APP_TOKEN).await;
    let id = serve.enqueue_push().await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = serve
        .wait_for(&id, "the push to end", |job| {
            job["status"] != "queued" && job["status"] != "running"
        })
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let refused = reqwest::Client::new()
        .post(format!("{}/webhooks/hubspot", serve.base()))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);

    let page = scrape(serve.base()).await;
    let value = |series: &str| sample(&page, series);
    assert_eq!(
        value(r#"crm_sync_job_runs_total{direction="push",outcome="succeeded"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(r#"crm_sync_job_runs_started_total{direction="push"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(r#"crm_sync_contacts_processed_total{direction="push",outcome="created"}"#),
        Some(2.0),
        "{page}"
    );
    assert_eq!(
        value(r#"crm_sync_job_run_duration_seconds_count{direction="push"}"#),
        Some(1.0)
    );
    assert_eq!(value(r#"crm_sync_queue_jobs{status="queued"}"#), Some(0.0));
    assert_eq!(value("crm_sync_database_up"), Some(1.0));
    assert_eq!(value("crm_sync_webhook_pending_pulls"), Some(0.0));
    let finished =
        chrono::DateTime::parse_from_rfc3339(done["finished_at"].as_str().unwrap()).unwrap();
    let last = value(r#"crm_sync_last_success_timestamp_seconds{direction="push"}"#).unwrap();
    assert!(
        (last - finished.timestamp_millis() as f64 / 1000.0).abs() < 0.01,
        "{last} vs {finished}"
    );
    assert_eq!(
        value(r#"crm_sync_last_success_timestamp_seconds{direction="pull"}"#),
        None,
        "never pulled"
    );
    assert!(
        value(r#"crm_sync_db_connections{state="idle"}"#).is_some(),
        "{page}"
    );
    assert_eq!(
        value(&format!(
            r#"crm_sync_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        Some(1.0)
    );
    assert!(
        page.contains(r#"crm_sync_webhook_requests_rejected_total{reason="#),
        "{page}"
    );
    assert!(
        value(r#"http_request_duration_seconds_bucket{route="/api/jobs",method="POST",le="+Inf"}"#)
            >= Some(1.0)
    );

    let exported = exported_names(&page);
    let named = names_in_deploy_files();
    assert!(
        named.len() >= 15,
        "the deploy files name metrics: {named:?}"
    );
    let missing: Vec<_> = named
        .iter()
        .filter(|n| !exported.contains(*n) && !PROMETHEUS_SERIES.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exported: {missing:?}\n{page}"
    );
    assert!(serve.process.terminate().success());
}

async fn a_worker_serves_probes_and_counts_each_retry_of_its_jobs(db: &TestDb) {
    // HubSpot is down when the job first runs: the client's own retries fail, the job waits in
    // `retrying`, and HubSpot comes back for the second attempt. The job runs in the worker
    // process, so only the worker's page can show the retry: before `worker.bind` it had none,
    // and a deployment's retries went uncounted.
    let store = db.store().await;
    insert_people(&store, 3).await;
    let first = sandbox(0).await;
    let addr = first.addr();
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(dir.path(), db.url(), &first.base_url(), PRIVATE_APP_TOKEN).await;
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("{}/readyz", worker.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "the database answers");
    let other = http
        .get(format!("{}/api/jobs", worker.base))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404, "the worker serves no API");
    first.shutdown().await.unwrap();

    let job = enqueue(
        &store,
        EnqueueRequest {
            spec: JobSpec::push(),
            trigger: Trigger::Cli,
            force: false,
        },
    )
    .await
    .unwrap()
    .job;
    wait_for(&store, &job, "the job to wait for its retry", |j| {
        j.status == JobStatus::Retrying
    })
    .await;
    let _second = sandbox(addr.port()).await;
    let done = wait_for(&store, &job, "the job to end", |j| j.status.is_terminal()).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:#?}");
    assert_eq!(done.attempts, 2, "{done:#?}");

    let page = scrape(&worker.base).await;
    let value =
        |series: &str| sample(&page, series).unwrap_or_else(|| panic!("{series} in {page}"));
    let retries = value(r#"crm_sync_job_runs_total{direction="push",outcome="retrying"}"#);
    assert_eq!(
        retries,
        f64::from(done.attempts - 1),
        "one retry per attempt after the first"
    );
    assert_eq!(
        value(r#"crm_sync_job_runs_started_total{direction="push"}"#),
        f64::from(done.attempts)
    );
    assert_eq!(
        value(r#"crm_sync_job_runs_total{direction="push",outcome="succeeded"}"#),
        1.0
    );
    assert_eq!(
        value(r#"crm_sync_job_runs_total{direction="push",outcome="abandoned"}"#),
        0.0
    );
    assert_eq!(
        value(r#"crm_sync_contacts_processed_total{direction="push",outcome="created"}"#),
        3.0
    );
    assert!(
        page.contains(r#"hubspot_retries_total{operation="#)
            && page.contains(r#"reason="network"}"#),
        "{page}"
    );
    assert_eq!(value("crm_sync_database_up"), 1.0);
    assert!(
        worker.process.terminate().success(),
        "SIGTERM ends the worker and its listener"
    );
}

async fn a_database_that_fails_at_scrape_time_leaves_a_page_saying_so(db: &TestDb) {
    let store = db.store().await;
    let metrics = Metrics::new();
    let page = metrics.scrape(&store).await;
    assert_eq!(sample(&page, "crm_sync_database_up"), Some(1.0));
    assert_eq!(
        sample(&page, r#"crm_sync_queue_jobs{status="running"}"#),
        Some(0.0)
    );

    store.close().await;
    let page = metrics.scrape(&store).await;
    assert_eq!(sample(&page, "crm_sync_database_up"), Some(0.0), "{page}");
    assert!(
        !page.contains("crm_sync_queue_jobs{"),
        "no stale queue series: {page}"
    );
    assert!(
        page.contains("# TYPE crm_sync_job_runs_total counter"),
        "the process's own counters stay"
    );
}

async fn a_job_that_meets_a_429_shows_the_wait_it_imposed(db: &TestDb) {
    // Another app spends the account's 10-second budget just before the push starts (the
    // service cannot know), so the push's first call meets a 429 with no Retry-After: its retry
    // waits until the window frees. That wait used to be logged as 0 and counted nowhere.
    let store = db.store().await;
    insert_people(&store, 2).await;
    let hubspot = Sandbox::start(
        SandboxArgs {
            access_token: Some(PRIVATE_APP_TOKEN.to_owned()),
            requests_per_10s: 3,
            search_per_second: 0,
            rng_seed: Some(12),
            ..SandboxArgs::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), db.url(), &hubspot.base_url(), PRIVATE_APP_TOKEN).await;
    let other_app = reqwest::Client::new();
    loop {
        let answer = other_app
            .get(format!(
                "{}/crm/v3/objects/contacts?limit=1",
                hubspot.base_url()
            ))
            .bearer_auth(PRIVATE_APP_TOKEN)
            .send()
            .await
            .unwrap();
        if answer.status() == 429 {
            break;
        }
    }
    let spent_by_others = hubspot.stats().rate_limited;
    let id = serve.enqueue_push().await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = serve
        .wait_for(&id, "the push to end", |job| {
            job["status"] != "queued" && job["status"] != "running"
        })
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        done["attempts"], 1,
        "the client waited; the job did not fail: {done:#}"
    );

    let page = scrape(serve.base()).await;
    let limited = sample(
        &page,
        r#"hubspot_rate_limited_total{policy="TEN_SECONDLY_ROLLING"}"#,
    )
    .unwrap();
    assert_eq!(
        limited as u64,
        hubspot.stats().rate_limited - spent_by_others,
        "{page}"
    );
    assert!(limited >= 1.0, "the push met the limit: {page}");
    let waited = sample(
        &page,
        r#"hubspot_retry_wait_seconds_total{reason="rate_limited"}"#,
    )
    .unwrap();
    assert!(
        waited >= 1.0,
        "the wait the budget imposed is counted: {waited} s\n{page}"
    );
    assert!(serve.process.terminate().success());
}

#[test]
fn metric_names_are_read_from_promql_without_functions_labels_or_keywords() {
    let names = |e: &str| promql_metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.95, sum by (le, route) (rate(http_request_duration_seconds_bucket{route!~"x(y)",a='}'}[$__rate_interval])))"#
        ),
        ["http_request_duration_seconds_bucket"]
    );
    assert_eq!(
        names("time() - max by (direction) (crm_sync_last_success_timestamp_seconds) > 6 * 3600"),
        ["crm_sync_last_success_timestamp_seconds"]
    );
    assert_eq!(
        names(
            "max(a_total) > 1000 or on(job) max without (instance) (b:rate5m offset 5m) unless bool c"
        ),
        ["a_total", "b:rate5m", "c"]
    );
    assert_eq!(names(r#"{__name__="ignored"}"#), Vec::<String>::new());
}

// ---- fixtures -------------------------------------------------------------------------------

/// A sandbox on loopback without limits or faults, accepting [`PRIVATE_APP_TOKEN`], on `port`
/// (0: any free port).
async fn sandbox(port: u16) -> SandboxHandle {
    let args = SandboxArgs {
        access_token: Some(PRIVATE_APP_TOKEN.to_owned()),
        requests_per_10s: 0,
        search_per_second: 0,
        rng_seed: Some(11),
        ..SandboxArgs::default()
    };
    Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("the sandbox starts")
}

async fn insert_people(store: &Store, n: u64) {
    let batch: Vec<NewContact> = (1..=n)
        .map(|i| NewContact {
            email: Some(format!("watched{i}@acme.io")),
            first_name: Some(format!("First{i}")),
            last_name: None,
        })
        .collect();
    assert_eq!(store.insert_contacts(&batch).await.unwrap(), n);
}

async fn wait_for(store: &Store, job: &Job, what: &str, done: impl Fn(&Job) -> bool) -> Job {
    let started = Instant::now();
    loop {
        let now = store.get_job(job.id).await.unwrap().unwrap();
        if done(&now) {
            return now;
        }
        assert!(
            started.elapsed() < JOB_PATIENCE,
            "waited for {what}: {now:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one series (name and labels exactly as rendered) on a page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Every sample name a page can have: those with samples, and for families without any yet,
/// the names their type gives (histograms: `_bucket`, `_sum`, `_count`).
fn exported_names(page: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in page.lines() {
        if let Some(typed) = line.strip_prefix("# TYPE ") {
            let mut parts = typed.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The metric names of the alert rules' and the dashboard's expressions.
fn names_in_deploy_files() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let rules = std::fs::read_to_string(root.join("prometheus/alerts.yml")).unwrap();
    let mut exprs: Vec<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| {
            let e = e.trim();
            assert!(
                !matches!(e.chars().next(), Some('|' | '>')),
                "keep each rule's expr on one line: {e}"
            );
            e.to_owned()
        })
        .collect();
    let alerts = rules
        .lines()
        .filter(|l| l.trim().starts_with("- alert:"))
        .count();
    assert_eq!(exprs.len(), alerts, "one expr per alert");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/dashboards/crm-sync.json")).unwrap(),
    )
    .unwrap();
    collect_exprs(&dashboard, &mut exprs);
    exprs.iter().flat_map(|e| promql_metric_names(e)).collect()
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// PromQL's aggregation operators and keywords: identifiers that are never metric names.
const PROMQL_WORDS: [&str; 24] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "inf",
];

/// Clauses whose parentheses hold label names, not expressions.
const LABEL_LIST_WORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names an expression selects: identifiers that are not functions (followed by
/// `(`), keywords or aggregations, outside strings, label matchers (`{..}`), ranges (`[..]`),
/// label lists (`by (..)`) and Grafana variables (`$..`).
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_group(&chars, i, '{', '}'),
            '[' => i = skip_group(&chars, i, '[', ']'),
            '$' => {
                i += 1;
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let call = chars.get(next) == Some(&'(');
                if LABEL_LIST_WORDS.contains(&word.as_str()) {
                    if call {
                        i = skip_group(&chars, next, '(', ')');
                    }
                } else if !call
                    && !PROMQL_WORDS.contains(&word.to_lowercase().as_str())
                    && word != "nan"
                {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The index after the string starting at `i` (escapes honoured).
fn skip_string(chars: &[char], mut i: usize) -> usize {
    let quote = chars[i];
    i += 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The index after the group opened at `i`, strings inside it skipped.
fn skip_group(chars: &[char], mut i: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}
