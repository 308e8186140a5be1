//! Everything the console shows, read from the database in one go.
//!
//! Each part is read on its own: a part that cannot be read is shown as unavailable (and
//! logged) instead of failing the page, except the connection, without which the page says
//! only that the database does not answer.

use chrono::{DateTime, Duration, Utc};

use crate::api::AppState;
use crate::api::operator::Operator;
use crate::ids::JobId;
use crate::jobs::model::{Direction, Job, JobStatus, RecordError, SyncObject, Trigger};
use crate::oauth::ConnectionStatus;
use crate::store::{ContactOverview, TombstoneReason, WebhookPullSummary};

/// How many of the user's own jobs the console reads (and lists).
pub(super) const RECENT_JOBS: u32 = 15;

/// The window of the webhook pull summary.
pub(super) const WEBHOOK_WINDOW: Duration = Duration::hours(1);

/// How many failed records the console lists.
pub(super) const FAILED_RECORDS: usize = 10;

/// The console's facts at one moment.
#[derive(Debug)]
pub(super) struct Snapshot {
    /// When they were read.
    pub now: DateTime<Utc>,
    /// Who is looking: failed records and the connection's controls are the operator's only.
    pub operator: Option<Operator>,
    /// The HubSpot connection.
    pub connection: ConnectionStatus,
    /// The service talks to HubSpot with a private-app token (no OAuth connection to show).
    pub private_app: bool,
    /// The contacts at a glance (`None`: could not be read).
    pub contacts: Option<ContactOverview>,
    /// Tombstones by reason (privacy deletions are told apart).
    pub tombstones: Vec<(TombstoneReason, i64)>,
    /// The contacts' push side (real jobs: dry runs and companies apart).
    pub push: DirectionPanel,
    /// The contacts' pull side (real jobs: dry runs and companies apart).
    pub pull: DirectionPanel,
    /// crm-sync's companies at a glance (`None`: could not be read).
    pub companies: Option<ContactOverview>,
    /// The companies' push side.
    pub company_push: DirectionPanel,
    /// The companies' pull side.
    pub company_pull: DirectionPanel,
    /// The user's, schedules' and CLI's recent jobs, newest first (`None`: could not be read).
    pub recent: Option<Vec<Job>>,
    /// Webhook pulls of the last [`WEBHOOK_WINDOW`].
    pub webhooks: WebhookPullSummary,
    /// The webhook pull under way, if any.
    pub webhook_active: Option<Job>,
    /// The latest failed records, newest job first (operator only; empty for anyone else).
    pub failures: Vec<Failure>,
}

/// One direction's running job, last success and next scheduled run.
#[derive(Debug, Default)]
pub(super) struct DirectionPanel {
    /// The queued, running or retrying job (webhook pulls apart).
    pub active: Option<Job>,
    /// The newest job that succeeded.
    pub last_success: Option<Job>,
    /// The newest job that ended, however it ended.
    pub last_finished: Option<Job>,
    /// The next tick of the direction's schedules and its cron expression.
    pub next_run: Option<(DateTime<Utc>, String)>,
}

/// A failed record with the job that reported it.
#[derive(Debug)]
pub(super) struct Failure {
    /// The job.
    pub job: JobId,
    /// Its direction.
    pub direction: Direction,
    /// When the job finished (or was created, while it runs).
    pub at: DateTime<Utc>,
    /// The record and its reason.
    pub record: RecordError,
}

impl Snapshot {
    /// Reads the console's facts; `Err` when the database does not answer at all.
    pub(super) async fn read(state: &AppState, operator: Option<Operator>) -> Result<Self, ()> {
        let now = Utc::now();
        let connection = super::connection_status(state).await?;
        let store = &state.store;
        let contacts = logged(store.contact_overview().await, "count the contacts");
        let companies = logged(store.company_overview().await, "count the companies");
        let tombstones =
            logged(store.count_tombstones().await, "count tombstoned contacts").unwrap_or_default();
        let recent = logged(
            store.recent_jobs_without_webhooks(RECENT_JOBS).await,
            "list the recent jobs",
        );
        let (webhooks, webhook_active) = logged(
            store.webhook_pulls_since(now - WEBHOOK_WINDOW).await,
            "sum up the webhook pulls",
        )
        .unwrap_or_default();
        let jobs = recent.as_deref().unwrap_or_default();
        let failures = match operator {
            Some(_) => failures(jobs),
            None => Vec::new(),
        };
        Ok(Self {
            now,
            operator,
            private_app: state.hubspot.as_ref().is_some_and(|c| c.oauth().is_none()),
            connection,
            contacts,
            tombstones,
            push: DirectionPanel::of(SyncObject::Contacts, Direction::Push, jobs, state),
            pull: DirectionPanel::of(SyncObject::Contacts, Direction::Pull, jobs, state),
            companies,
            company_push: DirectionPanel::of(SyncObject::Companies, Direction::Push, jobs, state),
            company_pull: DirectionPanel::of(SyncObject::Companies, Direction::Pull, jobs, state),
            webhooks,
            webhook_active,
            failures,
            recent,
        })
    }
}

impl DirectionPanel {
    /// The panel of `object`'s real jobs of `direction` (dry runs change nothing, so they
    /// are listed with the recent jobs only) from the recent jobs (newest first) and the
    /// schedules.
    fn of(object: SyncObject, direction: Direction, jobs: &[Job], state: &AppState) -> Self {
        let of_direction = || {
            jobs.iter().filter(move |j| {
                j.direction() == direction && j.spec.object == object && !j.spec.dry_run
            })
        };
        let next_run = state
            .schedules
            .iter()
            .filter(|s| {
                let spec = s.spec();
                spec.direction() == direction && spec.object == object && !spec.dry_run
            })
            .filter_map(|s| s.next_run().map(|at| (at, s.expr().to_owned())))
            .min_by_key(|(at, _)| *at);
        Self {
            // The oldest active job is the one that runs first.
            active: of_direction().rfind(|j| j.status.is_active()).cloned(),
            last_success: of_direction()
                .find(|j| j.status == JobStatus::Succeeded)
                .cloned(),
            last_finished: of_direction().find(|j| j.status.is_terminal()).cloned(),
            next_run,
        }
    }
}

/// The newest [`FAILED_RECORDS`] failed records of `jobs` (newest first).
fn failures(jobs: &[Job]) -> Vec<Failure> {
    jobs.iter()
        .filter(|j| j.trigger != Trigger::Webhook)
        .flat_map(|job| {
            job.errors.iter().map(move |record| Failure {
                job: job.id,
                direction: job.direction(),
                at: job.finished_at.unwrap_or(job.created_at),
                record: record.clone(),
            })
        })
        .take(FAILED_RECORDS)
        .collect()
}

/// The value, or `None` after logging what could not be read.
fn logged<T>(result: Result<T, crate::store::StoreError>, what: &str) -> Option<T> {
    result
        .inspect_err(|e| tracing::warn!(error = %e, "the console cannot {what}"))
        .ok()
}
