//! The world a sync spec runs in: a migrated database, an in-process HubSpot sandbox over real
//! HTTP, and the service's sync runner pointed at it, with jobs driven through the worker's
//! own `process` as the queue would hand them out.

use super::TestDb;
use crm_sync::hubspot::{Auth, Backoff, ClientConfig, HubSpotClient};
use crm_sync::ids::JobId;
use crm_sync::jobs::model::Job;
use crm_sync::jobs::queue::SyncTask;
use crm_sync::jobs::runner::StopCheck;
use crm_sync::jobs::worker::{RetryPolicy, process};
use crm_sync::jobs::{EnqueueRequest, JobRunner, enqueue};
use crm_sync::sandbox::{HubSpotProfile, Sandbox, SandboxArgs, SandboxHandle};
use crm_sync::secret::Secret;
use crm_sync::store::Store;
use crm_sync::sync::{SyncContext, SyncRunner};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A sandbox without rate limits or faults, answering every open question the way `profile`
/// says HubSpot does (companies and associations included); `rng_seed` makes its faults and
/// shuffles repeatable.
pub fn unlimited_sandbox(profile: HubSpotProfile, rng_seed: u64) -> SandboxArgs {
    SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        associations_per_10s: 0,
        rng_seed: Some(rng_seed),
        ..SandboxArgs::default()
    }
    .with_profile(profile)
}

/// A sandbox on loopback that takes `latency_ms` to answer each call, the way `profile` says,
/// but never limits, refuses or fails: in the kill specs, the only thing interrupting a job
/// is the kill, and each page lasts long enough to kill it at a chosen moment.
pub async fn slow_sandbox(
    profile: HubSpotProfile,
    latency_ms: u64,
    rng_seed: u64,
) -> SandboxHandle {
    let args = SandboxArgs {
        latency_ms,
        ..unlimited_sandbox(profile, rng_seed)
    };
    Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the sandbox starts")
}

/// A database, a sandbox, and the sync context whose client talks to that sandbox.
pub struct World {
    /// The migrated store of the test's database.
    pub store: Store,
    /// The in-process HubSpot.
    pub sandbox: SandboxHandle,
    /// What the runner syncs with; its client shares metrics with every clone.
    pub ctx: SyncContext,
    _db: TestDb,
}

impl World {
    /// Starts a sandbox with `args` and points a client with quick retries at it.
    pub async fn start(db: TestDb, args: SandboxArgs) -> World {
        let sandbox = Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("sandbox starts");
        let mut config = ClientConfig::new(sandbox.base_url().parse().expect("sandbox URL"));
        config.requests_per_10s = 0;
        config.search_per_second = 0;
        config.backoff = Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(50),
        };
        let client = HubSpotClient::new(
            config,
            Auth::PrivateApp(Secret::new(sandbox.access_token())),
        )
        .expect("client");
        World {
            store: db.store().await,
            sandbox,
            ctx: SyncContext::new(client),
            _db: db,
        }
    }

    /// The test's database (for a connection of the test's own, e.g. a `WriteHold`).
    pub fn db(&self) -> &TestDb {
        &self._db
    }

    /// Enqueues a job as `request` says and drives it to its end.
    pub async fn enqueue_and_drive(&self, request: EnqueueRequest) -> Job {
        let job = enqueue(&self.store, request).await.expect("enqueue").job;
        self.drive(job.id).await
    }

    /// Hands the job's deliveries to the worker's `process` until the job ends (a retried or
    /// requeued run is resumed by the next delivery, as the queue would).
    pub async fn drive(&self, id: JobId) -> Job {
        let runner: Arc<dyn JobRunner> = Arc::new(SyncRunner::new(self.ctx.clone()));
        let retry = RetryPolicy {
            max_attempts: 20,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        for _ in 0..50 {
            let record = self
                .store
                .get_job_record(id)
                .await
                .expect("read job")
                .expect("job exists");
            if record.job.status.is_terminal() {
                return record.job;
            }
            let task = SyncTask {
                job_id: id,
                delivery: record.delivery.expect("an active job has a delivery"),
            };
            let never: StopCheck = Arc::new(|| false);
            process(&self.store, &runner, retry, &task, "test-worker", never)
                .await
                .expect("the delivery is settled");
        }
        panic!("job {id} did not end");
    }
}
