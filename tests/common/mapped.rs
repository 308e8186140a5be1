//! A contacts mapping to a user's own table, run against a sandbox on one backend: the store,
//! the sandbox, a client and a runner whose mappings are the configuration's, and helpers to
//! run jobs to their end (or stop them after a number of stop checks, as a shutdown does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crm_sync::config::{ConfigError, Settings};
use crm_sync::hubspot::{
    AssociationInput, Auth, Backoff, Batch, ClientConfig, HubSpotClient, ObjectType,
};
use crm_sync::ids::JobId;
use crm_sync::jobs::model::{
    Counts, Job, JobAction, JobSpec, PullCounts, PullMode, PushCounts, PushMode, Trigger,
};
use crm_sync::jobs::queue::SyncTask;
use crm_sync::jobs::worker::{Settled, process};
use crm_sync::jobs::{EnqueueRequest, JobRunner, RetryPolicy, enqueue};
use crm_sync::mapping::check_mappings;
use crm_sync::sandbox::{HubSpotProfile, Sandbox, SandboxArgs, SandboxContact, SandboxHandle};
use crm_sync::secret::Secret;
use crm_sync::store::Store;
use crm_sync::sync::{SyncContext, SyncRunner};

use super::TestDb;

use super::user_table::exec;

/// The settings of `db` with `toml` as the local configuration file.
pub fn load_settings(db: &TestDb, toml: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
    std::fs::write(dir.path().join("config/local.toml"), toml).expect("write");
    let env = [("CRM_SYNC__DATABASE__URL".to_owned(), db.url().to_owned())]
        .into_iter()
        .collect();
    Settings::load(dir.path(), &env)
}

/// A mapped table's world: its store, a sandbox playing a profile, a client and a runner.
pub struct MappedEnv {
    pub store: Store,
    pub hubspot: SandboxHandle,
    pub client: HubSpotClient,
    pub runner: Arc<dyn JobRunner>,
    pub db: TestDb,
}

impl MappedEnv {
    /// Runs `setup` (the user's tables and rows) on a fresh database, starts an unthrottled
    /// sandbox playing `profile`, and checks `mapping` against the database.
    pub async fn start(db: TestDb, profile: HubSpotProfile, setup: &str, mapping: &str) -> Self {
        let store = db.store().await;
        exec(&store, setup).await;
        let hubspot = Sandbox::start(
            SandboxArgs {
                requests_per_10s: 0,
                search_per_second: 0,
                associations_per_10s: 0,
                rng_seed: Some(7),
                ..SandboxArgs::default()
            }
            .with_profile(profile),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("sandbox starts");
        let mut config = ClientConfig::new(hubspot.base_url().parse().expect("sandbox url"));
        config.requests_per_10s = 0;
        config.search_per_second = 0;
        config.associations_per_10s = 0;
        config.backoff = Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(50),
        };
        let client = HubSpotClient::new(
            config,
            Auth::PrivateApp(Secret::new(hubspot.access_token())),
        )
        .expect("client");
        let settings = load_settings(&db, mapping).expect("the mapping loads");
        let objects = check_mappings(&store, &settings.sync.objects)
            .await
            .expect("the mapping fits");
        let mut ctx = SyncContext::new(client.clone());
        ctx.objects = Arc::new(objects);
        ctx.pull.lookback = Duration::ZERO;
        MappedEnv {
            store,
            hubspot,
            client,
            runner: Arc::new(SyncRunner::new(ctx)),
            db,
        }
    }

    /// Enqueues `spec` and runs it to its end.
    pub async fn run_spec(&self, spec: JobSpec) -> Job {
        let id = self.enqueue(spec).await;
        self.run_to_end(id).await
    }

    async fn enqueue(&self, spec: JobSpec) -> JobId {
        enqueue(
            &self.store,
            EnqueueRequest {
                spec,
                trigger: Trigger::Cli,
                force: false,
            },
        )
        .await
        .expect("enqueue")
        .job
        .id
    }

    async fn task(&self, id: JobId) -> SyncTask {
        let record = self
            .store
            .get_job_record(id)
            .await
            .expect("read job")
            .expect("job exists");
        SyncTask {
            job_id: id,
            delivery: record.delivery.expect("a delivery"),
        }
    }

    /// Enqueues `action`, stops it at its `checks`-th stop check (after the last committed
    /// page, as a shutdown does), then runs it to its end.
    pub async fn run_stopped(&self, action: JobAction, checks: usize) -> Job {
        self.run_spec_stopped(JobSpec::from(action), checks).await
    }

    /// [`MappedEnv::run_stopped`] for any job.
    pub async fn run_spec_stopped(&self, spec: JobSpec, checks: usize) -> Job {
        let id = self.enqueue(spec).await;
        let task = self.task(id).await;
        let seen = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(move || seen.fetch_add(1, Ordering::SeqCst) + 1 >= checks);
        let settled = process(
            &self.store,
            &self.runner,
            RetryPolicy::default(),
            &task,
            "test",
            stop,
        )
        .await
        .expect("settle");
        assert!(
            matches!(settled, Settled::Requeued),
            "stopped, not {settled}"
        );
        self.run_to_end(id).await
    }

    /// Runs the job until it is finished (retries included).
    pub async fn run_to_end(&self, id: JobId) -> Job {
        for _ in 0..10 {
            let task = self.task(id).await;
            let retry = RetryPolicy {
                max_attempts: 10,
                base_delay: Duration::ZERO,
                max_delay: Duration::ZERO,
            };
            match process(
                &self.store,
                &self.runner,
                retry,
                &task,
                "test",
                Arc::new(|| false),
            )
            .await
            .expect("settle")
            {
                Settled::Finished(_) => break,
                Settled::Retrying | Settled::Requeued => continue,
                other => panic!("unexpected settlement {other}"),
            }
        }
        let job = self.store.get_job(id).await.expect("job").expect("exists");
        assert!(job.status.is_terminal(), "{job:#?}");
        job
    }

    /// The live HubSpot contact with `email` in the sandbox; panics when there is none.
    pub fn hubspot_contact(&self, email: &str) -> SandboxContact {
        self.hubspot
            .contacts()
            .into_iter()
            .find(|c| c.email() == Some(email))
            .unwrap_or_else(|| panic!("{email} is in HubSpot"))
    }

    /// Writes contact→company `inputs` to HubSpot as an integration would, 100 pairs a call.
    pub async fn associate_in_hubspot(&self, inputs: &[AssociationInput]) {
        for chunk in inputs.chunks(100) {
            let outcome = self
                .client
                .create_associations(
                    ObjectType::Contacts,
                    ObjectType::Companies,
                    &Batch::new(chunk.to_vec()).unwrap(),
                )
                .await
                .expect("associated in HubSpot");
            assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        }
    }

    /// A real push in `link` mode.
    pub async fn push(&self) -> (PushCounts, Job) {
        let job = self.run_spec(JobSpec::from(push_action())).await;
        let Counts::Push(counts) = job.counts else {
            panic!("push counts")
        };
        (counts, job)
    }

    /// A real pull (full, or incremental).
    pub async fn pull(&self, incremental: bool) -> (PullCounts, Job) {
        let job = self.run_spec(JobSpec::from(pull_action(incremental))).await;
        let Counts::Pull(counts) = job.counts else {
            panic!("pull counts")
        };
        (counts, job)
    }
}

/// A push in `link` mode.
pub fn push_action() -> JobAction {
    JobAction::Push {
        mode: PushMode::Link,
    }
}

/// A pull in `upsert` mode.
pub fn pull_action(incremental: bool) -> JobAction {
    JobAction::Pull {
        mode: PullMode::Upsert,
        incremental,
    }
}

/// The `domain` field of an [`orgs_mapping`] synced both ways, the local value winning.
pub const DOMAIN_BOTH_WAYS: &str =
    r#"{ property = "domain", direction = "both", owner = "local" }"#;

/// A companies mapping of the user's own `orgs` table (key `id`, properties created as
/// needed): `name` synced both ways and owned locally, `domain` as `domain` maps it (a TOML
/// inline table), then `extra_fields`, more lines of `[sync.objects.fields]` (each ending in a
/// newline). It ends in a newline, so another `[[sync.objects]]` may follow it.
pub fn orgs_mapping(domain: &str, extra_fields: &str) -> String {
    format!(
        r#"
[[sync.objects]]
object = "companies"
table = "orgs"
key_column = "id"
create_properties = true

[sync.objects.fields]
name = {{ property = "name", direction = "both", owner = "local" }}
domain = {domain}
{extra_fields}"#
    )
}
