//! Pickup latency of sync jobs: the time from the commit of an enqueue to the start of the run
//! on an idle worker, on SQLite and PostgreSQL, with the default worker settings.
//! `cargo bench --bench job_pickup` (PostgreSQL from `TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`; skipped when unreachable). Target: ≤ 500 ms.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use crm_sync::jobs::model::{Job, JobSpec, Trigger};
use crm_sync::jobs::{
    BoxFuture, EnqueueRequest, JobRunner, Progress, RunError, WorkerConfig, enqueue, run_workers,
};
use crm_sync::store::Store;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

mod support;

const SAMPLES: usize = 20;

/// Reports when each run starts, and does nothing else.
struct StartSignal(mpsc::UnboundedSender<Instant>);

impl JobRunner for StartSignal {
    fn run<'a>(&'a self, _: &'a Job, _: &'a Progress) -> BoxFuture<'a, Result<(), RunError>> {
        let _ = self.0.send(Instant::now());
        Box::pin(async { Ok(()) })
    }
}

fn main() {
    support::run_to_exit(run());
}

async fn run() -> Result<(), support::BoxError> {
    for backend in ["sqlite", "postgres"] {
        let Some(db) = support::BenchDb::create(backend).await? else {
            continue;
        };
        let result = measure(backend, &db.url).await;
        db.drop_it().await;
        result?;
    }
    Ok(())
}

async fn measure(backend: &str, url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::connect(url).await?;
    store.migrate().await?;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let workers = tokio::spawn(run_workers(
        store.clone(),
        Arc::new(StartSignal(started_tx)),
        vec![],
        WorkerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    tokio::time::sleep(Duration::from_secs(2)).await; // let the worker go idle

    let mut latencies = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        // Land at different points of the poll cycle.
        tokio::time::sleep(Duration::from_millis(300 + 97 * (i as u64 % 11))).await;
        let enqueued = enqueue(
            &store,
            EnqueueRequest {
                spec: JobSpec::push(),
                trigger: Trigger::Cli,
                force: false,
            },
        )
        .await?;
        let committed = Instant::now();
        let began = tokio::time::timeout(Duration::from_secs(60), started.recv())
            .await?
            .ok_or("the worker stopped")?;
        latencies.push(began.saturating_duration_since(committed));
        // Wait for the job to end so the next one is not deduplicated into it.
        while !store
            .get_job(enqueued.job.id)
            .await?
            .is_some_and(|j| j.status.is_terminal())
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let _ = stop.send(());
    workers.await??;

    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{backend}: pickup over {SAMPLES} jobs: min {:.0} ms, median {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        ms(latencies[0]),
        ms(latencies[SAMPLES / 2]),
        ms(latencies[SAMPLES * 95 / 100]),
        ms(latencies[SAMPLES - 1]),
    );
    Ok(())
}
