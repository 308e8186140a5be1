//! The job routes' request and response types for poem-openapi (so that the OpenAPI document
//! describes them), and the checks of their input. The routes themselves live in `api::jobs`.
//!
//! The jobs layer knows nothing of HTTP: these types mirror its model under the schema names
//! the document has always used. [`JobView`] renders exactly the serde JSON of [`Job`]
//! (INTERFACE §4.3); a test keeps the two in step.

use super::params::inline_type;
use crate::jobs::model::{
    Direction, Job, JobAction, JobSpec, JobStatus, Plan, PlannedKind, PullCounts, PullMode,
    PushCounts, PushMode, RecordError, SyncObject, Trigger, rfc3339,
};
use crate::jobs::schedule::ScheduleView;
use poem_openapi::registry::MetaSchema;
use poem_openapi::types::{ParseError, ParseFromParameter, ParseResult};
use poem_openapi::{Enum, Object, Union};

/// Jobs `GET /api/jobs` lists when no `limit` is given.
pub const DEFAULT_LIST_LIMIT: u32 = 20;
/// The largest `limit` `GET /api/jobs` accepts.
pub const MAX_LIST_LIMIT: u32 = 500;

/// Which way records flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum)]
#[oai(rename = "Direction", rename_all = "lowercase")]
pub enum DirectionView {
    /// Local contacts → HubSpot.
    Push,
    /// HubSpot contacts → local database.
    Pull,
}

impl From<Direction> for DirectionView {
    fn from(direction: Direction) -> Self {
        match direction {
            Direction::Push => Self::Push,
            Direction::Pull => Self::Pull,
        }
    }
}

/// What started a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum)]
#[oai(rename = "Trigger", rename_all = "lowercase")]
pub enum TriggerView {
    /// `POST /api/jobs` or the sample's GET routes.
    Api,
    /// A `[[sync.schedules]]` entry.
    Schedule,
    /// A HubSpot webhook; such a pull reads only the records webhooks named
    /// (`crate::sync::webhook_pull`).
    Webhook,
    /// `crm-sync sync ...`.
    Cli,
}

impl From<Trigger> for TriggerView {
    fn from(trigger: Trigger) -> Self {
        match trigger {
            Trigger::Api => Self::Api,
            Trigger::Schedule => Self::Schedule,
            Trigger::Webhook => Self::Webhook,
            Trigger::Cli => Self::Cli,
        }
    }
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum)]
#[oai(rename = "JobStatus", rename_all = "lowercase")]
pub enum JobStatusView {
    /// Waiting for a worker.
    Queued,
    /// A worker is on it.
    Running,
    /// Waiting to retry after a transient failure.
    Retrying,
    /// Finished (some records may have failed: see `counts.failed`).
    Succeeded,
    /// The job itself could not finish; `error` says why.
    Failed,
    /// Stopped on request.
    Cancelled,
}

/// The `status` parameter of `GET /api/jobs`: one of the job statuses, or empty for every
/// status (as an HTML form sends an unset field). Parsed with a message that lists the
/// statuses (poem-openapi's own says only "a valid enumeration value").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusParam(pub Option<JobStatus>);

inline_type!(StatusParam, "status_filter", || {
    let mut schema = MetaSchema::new("string");
    schema.enum_items = std::iter::once("")
        .chain(JobStatus::ALL.map(JobStatus::as_str))
        .map(serde_json::Value::from)
        .collect();
    schema
});

impl ParseFromParameter for StatusParam {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        if value.is_empty() {
            return Ok(Self(None));
        }
        value
            .parse::<JobStatus>()
            .map(|s| Self(Some(s)))
            .map_err(|_| {
                ParseError::custom(format!(
                    "{value:?} is not a job status: expected one of {} (or empty for all)",
                    JobStatus::ALL.map(JobStatus::as_str).join(", ")
                ))
            })
    }
}

impl From<JobStatusView> for JobStatus {
    fn from(status: JobStatusView) -> Self {
        match status {
            JobStatusView::Queued => Self::Queued,
            JobStatusView::Running => Self::Running,
            JobStatusView::Retrying => Self::Retrying,
            JobStatusView::Succeeded => Self::Succeeded,
            JobStatusView::Failed => Self::Failed,
            JobStatusView::Cancelled => Self::Cancelled,
        }
    }
}

impl From<JobStatus> for JobStatusView {
    fn from(status: JobStatus) -> Self {
        match status {
            JobStatus::Queued => Self::Queued,
            JobStatus::Running => Self::Running,
            JobStatus::Retrying => Self::Retrying,
            JobStatus::Succeeded => Self::Succeeded,
            JobStatus::Failed => Self::Failed,
            JobStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// Which HubSpot object a job syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum)]
#[oai(rename = "SyncObject", rename_all = "lowercase")]
pub enum SyncObjectView {
    /// HubSpot contacts and the local `contacts` table.
    Contacts,
    /// HubSpot companies and the local `companies` table.
    Companies,
}

impl From<SyncObject> for SyncObjectView {
    fn from(object: SyncObject) -> Self {
        match object {
            SyncObject::Contacts => Self::Contacts,
            SyncObject::Companies => Self::Companies,
        }
    }
}

impl From<SyncObjectView> for SyncObject {
    fn from(object: SyncObjectView) -> Self {
        match object {
            SyncObjectView::Contacts => Self::Contacts,
            SyncObjectView::Companies => Self::Companies,
        }
    }
}

/// A job's mode: push `link` or `upsert`, pull `upsert` or `verbose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum)]
#[oai(rename = "JobMode", rename_all = "lowercase")]
pub enum JobModeView {
    /// Push: link to existing HubSpot contacts, leave their properties alone.
    Link,
    /// Push: overwrite HubSpot's properties; pull: one upsert per page.
    Upsert,
    /// Pull: contact by contact, explaining every decision.
    Verbose,
}

impl From<&JobSpec> for JobModeView {
    fn from(spec: &JobSpec) -> Self {
        match spec.action {
            JobAction::Push {
                mode: PushMode::Link,
            } => Self::Link,
            JobAction::Push {
                mode: PushMode::Upsert,
            }
            | JobAction::Pull {
                mode: PullMode::Upsert,
                ..
            } => Self::Upsert,
            JobAction::Pull {
                mode: PullMode::Verbose,
                ..
            } => Self::Verbose,
        }
    }
}

/// A sync job (INTERFACE §4.3).
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "Job")]
pub struct JobView {
    /// Opaque id (a ULID).
    pub id: String,
    /// `push` or `pull`.
    pub direction: DirectionView,
    /// What it syncs: `contacts` or `companies`.
    pub object: SyncObjectView,
    /// push: `link` or `upsert`; pull: `upsert` or `verbose`.
    pub mode: JobModeView,
    /// pull: reads only what changed since the last successful pull (false for a webhook
    /// pull, which reads only the records webhooks named).
    pub incremental: bool,
    /// Whether it only reports what it would do, writing nothing but the job row.
    pub dry_run: bool,
    /// `api`, `schedule`, `webhook` or `cli`. A pull with trigger `webhook` reads the records
    /// HubSpot's webhooks named, by id (100 per batch read), not a list or a search.
    pub trigger: TriggerView,
    /// `queued`, `running`, `retrying`, then `succeeded`, `failed` or `cancelled`.
    pub status: JobStatusView,
    /// Runs started so far.
    pub attempts: u32,
    /// When it was enqueued (RFC 3339, UTC).
    pub created_at: String,
    /// When its first run started; null before then.
    #[oai(nullable)]
    pub started_at: Option<String>,
    /// When it ended; null while it has not.
    #[oai(nullable)]
    pub finished_at: Option<String>,
    /// Exact per-record counts; every key of the direction is present.
    pub counts: CountsView,
    /// One entry per failed record (capped; `counts.failed` stays exact).
    pub errors: Vec<RecordErrorView>,
    /// Records handled so far, and in all when known.
    pub progress: ProgressView,
    /// Why the job failed, or the last transient error while it is retrying; null otherwise.
    #[oai(nullable)]
    pub error: Option<String>,
    /// While retrying: when the next attempt is due; null otherwise.
    #[oai(nullable)]
    pub next_attempt_at: Option<String>,
    /// Enqueued with `force` past an active job of its direction (always, for a
    /// webhook pull: it runs beside any other pull).
    pub forced: bool,
    /// The HubSpot account (portal id) the job synced with; recorded when a run starts, null
    /// before then.
    #[oai(nullable)]
    pub portal_id: Option<i64>,
    /// A dry run's plan: the HubSpot calls the real run would make and what it would do to
    /// each record. Absent for real jobs.
    #[oai(skip_serializing_if_is_none)]
    pub plan: Option<PlanView>,
}

/// What a dry run would do to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Enum)]
#[oai(rename = "PlannedKind", rename_all = "lowercase")]
pub enum PlannedKindView {
    /// A new record would be made.
    Create,
    /// An existing record would be linked.
    Link,
    /// An existing record would be overwritten.
    Update,
    /// Nothing to change.
    Unchanged,
    /// Left alone.
    Skip,
    /// The record would fail.
    Fail,
}

/// One record of a dry run's plan.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "PlannedAction")]
pub struct PlannedActionView {
    /// What would be done.
    pub action: PlannedKindView,
    /// The local contact, when there is one.
    #[oai(skip_serializing_if_is_none)]
    pub contact_id: Option<i64>,
    /// Its email, when it has one.
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    /// The HubSpot record, when one is known.
    #[oai(skip_serializing_if_is_none)]
    pub hs_object_id: Option<String>,
    /// Why.
    pub reason: String,
}

/// A dry run's plan.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "Plan")]
pub struct PlanView {
    /// HubSpot calls the real run would make, by operation (`batch_read`, `batch_create`,
    /// `batch_update`, `batch_upsert`, `list`, `search`, `property_read`, `property_create`).
    pub calls: std::collections::BTreeMap<String, u64>,
    /// What would be done to each record, in order (capped; `counts` stay exact).
    pub actions: Vec<PlannedActionView>,
}

impl From<&Plan> for PlanView {
    fn from(plan: &Plan) -> Self {
        Self {
            calls: plan.calls.clone(),
            actions: plan
                .actions
                .iter()
                .map(|a| PlannedActionView {
                    action: match a.action {
                        PlannedKind::Create => PlannedKindView::Create,
                        PlannedKind::Link => PlannedKindView::Link,
                        PlannedKind::Update => PlannedKindView::Update,
                        PlannedKind::Unchanged => PlannedKindView::Unchanged,
                        PlannedKind::Skip => PlannedKindView::Skip,
                        PlannedKind::Fail => PlannedKindView::Fail,
                    },
                    contact_id: a.contact_id.map(|c| c.0),
                    email: a.email.clone(),
                    hs_object_id: a.hs_object_id.as_ref().map(|h| h.0.clone()),
                    reason: a.reason.clone(),
                })
                .collect(),
        }
    }
}

/// Counts of a push or of a pull.
#[derive(Debug, Clone, PartialEq, Union)]
#[oai(one_of)]
pub enum CountsView {
    /// A push's counts.
    Push(PushCountsView),
    /// A pull's counts.
    Pull(PullCountsView),
}

/// Push counts: `total = created + linked + updated + failed + skipped`.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "PushCounts")]
pub struct PushCountsView {
    /// Local contacts considered.
    pub total: u64,
    /// New HubSpot contacts.
    pub created: u64,
    /// Existing HubSpot contacts whose id was saved locally.
    pub linked: u64,
    /// Existing HubSpot contacts whose properties were changed.
    pub updated: u64,
    /// Rejected records.
    pub failed: u64,
    /// Records left alone.
    pub skipped: u64,
    /// Contact→company associations written (not part of `total`).
    pub associations_created: u64,
    /// Contact→company associations removed (not part of `total`).
    pub associations_removed: u64,
    /// Contacts whose company association could not be synced (not part of `total`).
    pub associations_failed: u64,
}

/// Pull counts: `total = created + linked + unchanged + failed`.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "PullCounts")]
pub struct PullCountsView {
    /// HubSpot contacts read.
    pub total: u64,
    /// New local rows.
    pub created: u64,
    /// The subset of `created` with no email.
    pub created_without_email: u64,
    /// Existing local rows (matched by email) whose `hs_object_id` was set or changed.
    pub linked: u64,
    /// Mode `upsert`: rows written through the upsert, with email.
    pub upserted: u64,
    /// Rows already up to date.
    pub unchanged: u64,
    /// Records that could not be written.
    pub failed: u64,
    /// Local rows whose HubSpot contact a full pull found deleted (not part of `total`).
    pub unlinked: u64,
    /// Contact→company associations written (not part of `total`).
    pub associations_created: u64,
    /// Contact→company associations removed (not part of `total`).
    pub associations_removed: u64,
    /// Contacts whose company association could not be synced (not part of `total`).
    pub associations_failed: u64,
}

/// One failed record.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "RecordError")]
pub struct RecordErrorView {
    /// The local contact, when there is one.
    #[oai(skip_serializing_if_is_none)]
    pub contact_id: Option<i64>,
    /// The local company, for a company job's record.
    #[oai(skip_serializing_if_is_none)]
    pub company_id: Option<i64>,
    /// Its email, when it has one.
    #[oai(skip_serializing_if_is_none)]
    pub email: Option<String>,
    /// The HubSpot record, when there is one.
    #[oai(skip_serializing_if_is_none)]
    pub hs_object_id: Option<String>,
    /// What went wrong.
    pub reason: String,
}

/// Progress of a job.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "JobProgress")]
pub struct ProgressView {
    /// Records handled so far.
    pub processed: u64,
    /// Records in all, when known; null until then.
    #[oai(nullable)]
    pub total: Option<u64>,
}

/// `{"results": [job...]}`, newest first.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "JobList")]
pub struct JobListView {
    /// The jobs.
    pub results: Vec<JobView>,
}

impl From<&PushCounts> for PushCountsView {
    fn from(c: &PushCounts) -> Self {
        Self {
            total: c.total,
            created: c.created,
            linked: c.linked,
            updated: c.updated,
            failed: c.failed,
            skipped: c.skipped,
            associations_created: c.associations_created,
            associations_removed: c.associations_removed,
            associations_failed: c.associations_failed,
        }
    }
}

impl From<&PullCounts> for PullCountsView {
    fn from(c: &PullCounts) -> Self {
        Self {
            total: c.total,
            created: c.created,
            created_without_email: c.created_without_email,
            linked: c.linked,
            upserted: c.upserted,
            unchanged: c.unchanged,
            failed: c.failed,
            unlinked: c.unlinked,
            associations_created: c.associations_created,
            associations_removed: c.associations_removed,
            associations_failed: c.associations_failed,
        }
    }
}

impl From<&RecordError> for RecordErrorView {
    fn from(e: &RecordError) -> Self {
        Self {
            contact_id: e.contact_id.map(|c| c.0),
            company_id: e.company_id.map(|c| c.0),
            email: e.email.clone(),
            hs_object_id: e.hs_object_id.as_ref().map(|h| h.0.clone()),
            reason: e.reason.clone(),
        }
    }
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> Self {
        Self {
            id: j.id.to_string(),
            direction: j.direction().into(),
            object: j.spec.object().into(),
            mode: JobModeView::from(&j.spec),
            incremental: j.spec.incremental(),
            dry_run: j.spec.dry_run,
            trigger: j.trigger.into(),
            status: j.status.into(),
            attempts: j.attempts,
            created_at: rfc3339::format(&j.created_at),
            started_at: j.started_at.as_ref().map(rfc3339::format),
            finished_at: j.finished_at.as_ref().map(rfc3339::format),
            counts: match &j.counts {
                crate::jobs::model::Counts::Push(c) => CountsView::Push(c.into()),
                crate::jobs::model::Counts::Pull(c) => CountsView::Pull(c.into()),
            },
            errors: j.errors.iter().map(RecordErrorView::from).collect(),
            progress: ProgressView {
                processed: j.progress.processed,
                total: j.progress.total,
            },
            error: j.error.clone(),
            next_attempt_at: j.next_attempt_at.as_ref().map(rfc3339::format),
            forced: j.forced,
            portal_id: j.portal_id.map(|p| p.0),
            plan: j.plan.as_ref().map(PlanView::from),
        }
    }
}

/// The last tick of a schedule.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "ScheduleTick")]
pub struct TickView {
    /// The tick's time (RFC 3339, UTC).
    pub at: String,
    /// `queued`, or `skipped` because a job of the direction was still active.
    pub outcome: String,
    /// The job it enqueued, or the active job it found; null when there is none.
    #[oai(nullable)]
    pub job_id: Option<String>,
}

/// A configured schedule (`[[sync.schedules]]`).
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "Schedule")]
pub struct ScheduleItemView {
    /// The key its ticks are recorded under.
    pub key: String,
    /// The cron expression (UTC; 5 fields minute-first, or 6–7 second-first).
    pub cron: String,
    /// `push` or `pull`.
    pub direction: DirectionView,
    /// What its jobs sync.
    pub object: SyncObjectView,
    /// The jobs' mode.
    pub mode: JobModeView,
    /// Whether its pulls are incremental.
    pub incremental: bool,
    /// Whether its jobs are dry runs.
    pub dry_run: bool,
    /// The next tick (RFC 3339, UTC); null when the expression has no future tick.
    #[oai(nullable)]
    pub next_run: Option<String>,
    /// The last tick and what it did; null before the first.
    #[oai(nullable)]
    pub last_tick: Option<TickView>,
}

/// `{"results": [schedule...]}`.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "ScheduleList")]
pub struct ScheduleListView {
    /// The schedules, in configuration order.
    pub results: Vec<ScheduleItemView>,
}

impl From<&ScheduleView> for ScheduleItemView {
    fn from(s: &ScheduleView) -> Self {
        Self {
            key: s.key.clone(),
            cron: s.cron.clone(),
            direction: s.spec.direction().into(),
            object: s.spec.object.into(),
            mode: JobModeView::from(&s.spec),
            incremental: s.spec.incremental(),
            dry_run: s.spec.dry_run,
            next_run: s.next_run.as_ref().map(rfc3339::format),
            last_tick: s.last_tick.as_ref().map(|t| TickView {
                at: rfc3339::format(&t.at),
                outcome: t.outcome.clone(),
                job_id: t.job_id.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ContactId, JobId, PortalId};
    use crate::jobs::model::{Counts, JobProgress, PushOutcome};
    use chrono::Utc;
    use poem_openapi::types::ToJSON;

    fn sample_job() -> Job {
        let mut counts = PushCounts::default();
        counts.add(PushOutcome::Created);
        counts.add(PushOutcome::Failed);
        Job {
            id: JobId::generate(),
            spec: JobSpec::push(),
            trigger: Trigger::Api,
            status: JobStatus::Running,
            attempts: 1,
            created_at: Utc::now(),
            started_at: Some(Utc::now()),
            finished_at: None,
            counts: Counts::Push(counts),
            errors: vec![RecordError {
                contact_id: Some(ContactId(17)),
                company_id: None,
                email: Some("bad@".into()),
                hs_object_id: None,
                reason: "HubSpot rejected the email as invalid".into(),
            }],
            progress: JobProgress {
                processed: 2,
                total: Some(10),
            },
            error: None,
            next_attempt_at: None,
            forced: false,
            portal_id: Some(PortalId(1000001)),
            plan: None,
        }
    }

    #[test]
    fn the_documented_job_renders_exactly_the_model_json() {
        let job = sample_job();
        let view = JobView::from(&job).to_json().unwrap();
        assert_eq!(view, serde_json::to_value(&job).unwrap());
    }
}
