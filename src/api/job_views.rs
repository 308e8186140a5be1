//! The job routes' request and response types for poem-openapi (so that the OpenAPI document
//! describes them), and the checks of their input. The routes themselves live in `api::jobs`.
//!
//! The jobs layer knows nothing of HTTP: these types mirror its model under the schema names
//! the document has always used. [`JobView`] renders exactly the serde JSON of [`Job`]
//! (INTERFACE §4.3); a test keeps the two in step.

use crate::jobs::model::{
    Direction, Job, JobSpec, JobStatus, PullCounts, PushCounts, RecordError, SpecError, Trigger,
    rfc3339,
};
use crate::jobs::queue::EnqueueRequest;
use crate::jobs::schedule::ScheduleView;
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

/// The body of `POST /api/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename = "JobRequest")]
pub struct JobRequestBody {
    /// `push` or `pull` (required).
    pub direction: Option<String>,
    /// push: `link` (default) or `upsert`; pull: `upsert` (default) or `verbose`.
    pub mode: Option<String>,
    /// pull only: read only what changed since the last successful pull (default false).
    pub incremental: Option<bool>,
    /// Enqueue even while a job of this direction is queued or running (default false).
    pub force: Option<bool>,
}

impl JobRequestBody {
    /// The enqueue request this body asks for; an invalid direction or mode is a
    /// [`SpecError`] whose message names the valid choices (answer 422).
    pub fn to_request(&self, trigger: Trigger) -> Result<EnqueueRequest, SpecError> {
        let direction = self
            .direction
            .as_deref()
            .ok_or(SpecError::MissingDirection)?;
        let spec = JobSpec::parse(direction, self.mode.as_deref(), self.incremental)?;
        Ok(EnqueueRequest {
            spec,
            trigger,
            force: self.force.unwrap_or(false),
        })
    }
}

/// Checks the `status` parameter of `GET /api/jobs`: one of the six statuses, or absent. The
/// error names the statuses (answer 400).
pub fn parse_status(status: Option<&str>) -> Result<Option<JobStatus>, String> {
    match status.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s.parse::<JobStatus>().map(Some).map_err(|_| {
            format!(
                "status {s:?} is not a job status: expected one of {}",
                JobStatus::ALL.map(JobStatus::as_str).join(", ")
            )
        }),
    }
}

/// Checks `GET /api/jobs` parameters: `status` one of the six statuses, `limit` 1 to
/// [`MAX_LIST_LIMIT`]. The error names the parameter and what it accepts (answer 400).
pub fn list_params(
    status: Option<&str>,
    limit: Option<&str>,
) -> Result<(Option<JobStatus>, u32), String> {
    let status = parse_status(status)?;
    let limit = match limit.map(str::trim).filter(|s| !s.is_empty()) {
        None => DEFAULT_LIST_LIMIT,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIST_LIMIT).contains(n))
            .ok_or_else(|| {
                format!("limit {raw:?} must be a whole number from 1 to {MAX_LIST_LIMIT}")
            })?,
    };
    Ok((status, limit))
}

/// A sync job (INTERFACE §4.3).
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "Job")]
pub struct JobView {
    /// Opaque id (a ULID).
    pub id: String,
    /// `push` or `pull`.
    pub direction: DirectionView,
    /// push: `link` or `upsert`; pull: `upsert` or `verbose`.
    pub mode: String,
    /// pull: reads only what changed since the last successful pull (false for a webhook
    /// pull, which reads only the records webhooks named).
    pub incremental: bool,
    /// `api`, `schedule`, `webhook` or `cli`. A pull with trigger `webhook` reads the records
    /// HubSpot's webhooks named, by id (100 per batch read), not a list or a search.
    pub trigger: TriggerView,
    /// `queued`, `running`, `retrying`, then `succeeded`, `failed` or `cancelled`.
    pub status: JobStatusView,
    /// Runs started so far.
    pub attempts: u32,
    /// When it was enqueued (RFC 3339, UTC).
    pub created_at: String,
    /// When its first run started.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Exact per-record counts; every key of the direction is present.
    pub counts: CountsView,
    /// One entry per failed record (capped; `counts.failed` stays exact).
    pub errors: Vec<RecordErrorView>,
    /// Records handled so far, and in all when known.
    pub progress: ProgressView,
    /// Why the job failed, or the last transient error while it is retrying.
    pub error: Option<String>,
    /// While retrying: when the next attempt is due.
    pub next_attempt_at: Option<String>,
    /// Enqueued with `force` past an active job of its direction (always, for a
    /// webhook pull: it runs beside any other pull).
    pub forced: bool,
    /// The HubSpot account (portal id) the job synced with; recorded when a run starts, null
    /// before then.
    pub portal_id: Option<i64>,
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
}

/// One failed record.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename = "RecordError")]
pub struct RecordErrorView {
    /// The local contact, when there is one.
    #[oai(skip_serializing_if_is_none)]
    pub contact_id: Option<i64>,
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
    /// Records in all, when known.
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
        }
    }
}

impl From<&RecordError> for RecordErrorView {
    fn from(e: &RecordError) -> Self {
        Self {
            contact_id: e.contact_id.map(|c| c.0),
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
            mode: j.spec.mode_str().to_owned(),
            incremental: j.spec.incremental(),
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
    /// The job it enqueued, or the active job it found.
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
    /// The jobs' mode.
    pub mode: String,
    /// Whether its pulls are incremental.
    pub incremental: bool,
    /// The next tick (RFC 3339, UTC).
    pub next_run: Option<String>,
    /// The last tick and what it did.
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
            direction: s.direction.into(),
            mode: s.mode.to_owned(),
            incremental: s.incremental,
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
        }
    }

    #[test]
    fn the_documented_job_renders_exactly_the_model_json() {
        let job = sample_job();
        let view = JobView::from(&job).to_json().unwrap();
        assert_eq!(view, serde_json::to_value(&job).unwrap());
    }

    #[test]
    fn a_request_body_is_checked_into_a_spec_with_defaults() {
        let body = JobRequestBody {
            direction: Some("pull".into()),
            mode: None,
            incremental: Some(true),
            force: None,
        };
        let req = body.to_request(Trigger::Api).unwrap();
        assert_eq!(req.spec.mode_str(), "upsert");
        assert!(req.spec.incremental() && !req.force);
        let bad = JobRequestBody {
            direction: Some("push".into()),
            mode: Some("verbose".into()),
            incremental: None,
            force: None,
        };
        assert!(bad.to_request(Trigger::Api).is_err());
    }

    #[test]
    fn list_parameters_are_checked_with_messages_that_say_what_is_accepted() {
        assert_eq!(list_params(None, None), Ok((None, DEFAULT_LIST_LIMIT)));
        assert_eq!(
            list_params(Some("failed"), Some("5")),
            Ok((Some(JobStatus::Failed), 5))
        );
        assert!(
            list_params(Some("done"), None)
                .unwrap_err()
                .contains("queued")
        );
        assert!(list_params(None, Some("0")).unwrap_err().contains("limit"));
        assert!(list_params(None, Some("lots")).is_err());
    }
}
