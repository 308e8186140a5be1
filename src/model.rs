//! The sync job as clients see it (INTERFACE §4.3): what it does, where it stands, what it counted.
//!
//! The `sync_jobs` row is the source of truth for all of this; the Apalis task only delivers
//! the job id to a worker.

use crate::ids::{ContactId, HsObjectId, JobId, LocalCompanyId, PortalId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which way records flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Local contacts → HubSpot.
    Push,
    /// HubSpot contacts → local database.
    Pull,
}

/// How a push treats contacts that already exist in HubSpot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushMode {
    /// Link to the existing HubSpot contact and leave its properties alone (the default).
    #[default]
    Link,
    /// Overwrite HubSpot's properties with the local values.
    Upsert,
}

/// How a pull writes HubSpot contacts locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullMode {
    /// Write each page through one upsert (the default).
    #[default]
    Upsert,
    /// Match and write contact by contact, explaining every decision.
    Verbose,
}

/// Which HubSpot object a job syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncObject {
    /// HubSpot contacts and the local `contacts` table.
    #[default]
    Contacts,
    /// HubSpot companies and the local `companies` table.
    Companies,
}

impl SyncObject {
    /// Every object, in the order messages list them.
    pub const ALL: [SyncObject; 2] = [Self::Contacts, Self::Companies];

    /// Whether this version has an engine that syncs the object. Jobs of an object without
    /// one are refused before they are enqueued, never run as another object's job.
    pub fn is_available(self) -> bool {
        matches!(self, Self::Contacts | Self::Companies)
    }

    /// Whether its engine can run a dry run. A dry run it cannot run is refused, never run
    /// for real.
    pub fn has_dry_run(self) -> bool {
        matches!(self, Self::Contacts | Self::Companies)
    }
}

/// Which way a job goes and how: its direction with a mode valid for that direction.
///
/// Invalid combinations (a pull in `link` mode, an incremental push) cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobAction {
    /// A push.
    Push {
        /// Its mode.
        mode: PushMode,
    },
    /// A pull.
    Pull {
        /// Its mode.
        mode: PullMode,
        /// Read only what changed since the last successful pull.
        incremental: bool,
    },
}

/// What a job does: the object it syncs, its [`JobAction`], and whether it is a dry run (reads,
/// and reports what it would write, writing nothing but the job row).
///
/// The three together are a job's slot: at most one unforced job per (object, direction,
/// dry run) is active, so that a dry run never stands in for, nor blocks, a real job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "JobSpecRepr", into = "JobSpecRepr")]
pub struct JobSpec {
    /// The object it syncs.
    pub object: SyncObject,
    /// Direction and mode.
    pub action: JobAction,
    /// Only report what the job would do.
    pub dry_run: bool,
}

/// Why a direction/mode combination was refused; the message names the valid choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No direction given.
    #[error("\"direction\" is required: \"push\" or \"pull\"")]
    MissingDirection,
    /// Neither `push` nor `pull`.
    #[error("unknown direction {0:?}: expected \"push\" or \"pull\"")]
    UnknownDirection(String),
    /// Neither `contacts` nor `companies`.
    #[error("unknown object {0:?}: expected \"contacts\" or \"companies\"")]
    UnknownObject(String),
    /// A mode the direction does not have.
    #[error("mode {mode:?} is not valid for {direction}: expected {expected}")]
    InvalidMode {
        /// The direction asked for.
        direction: Direction,
        /// The mode asked for.
        mode: String,
        /// The valid modes, for the message.
        expected: &'static str,
    },
    /// `incremental` asked of a push (a push only ever considers what changed).
    #[error(
        "\"incremental\" applies to pull only: a push always considers only new and changed contacts"
    )]
    IncrementalPush,
    /// An object this version has no sync engine for: refused rather than run as another.
    #[error(
        "{0} sync is not available yet: nothing was enqueued; \"object\" \"contacts\" is what this version syncs"
    )]
    ObjectUnavailable(SyncObject),
    /// A dry run asked of an object whose engine cannot run one yet: refused rather than run
    /// for real.
    #[error(
        "dry runs of {0} are not available in this version: nothing was enqueued; send \"dry_run\": false or leave it out"
    )]
    DryRunUnavailable(SyncObject),
}

impl JobAction {
    /// Builds an action for a known direction; `mode` `None` means the direction's default
    /// (`link` for push, `upsert` for pull).
    pub fn new(
        direction: Direction,
        mode: Option<&str>,
        incremental: bool,
    ) -> Result<Self, SpecError> {
        let invalid = |expected| SpecError::InvalidMode {
            direction,
            mode: mode.unwrap_or_default().to_owned(),
            expected,
        };
        match direction {
            Direction::Push => {
                if incremental {
                    return Err(SpecError::IncrementalPush);
                }
                let mode = match mode.map(str::trim) {
                    None | Some("link") => PushMode::Link,
                    Some("upsert") => PushMode::Upsert,
                    Some(_) => return Err(invalid("\"link\" or \"upsert\"")),
                };
                Ok(Self::Push { mode })
            }
            Direction::Pull => {
                let mode = match mode.map(str::trim) {
                    None | Some("upsert") => PullMode::Upsert,
                    Some("verbose") => PullMode::Verbose,
                    Some(_) => return Err(invalid("\"upsert\" or \"verbose\"")),
                };
                Ok(Self::Pull { mode, incremental })
            }
        }
    }

    /// The direction.
    pub fn direction(&self) -> Direction {
        match self {
            Self::Push { .. } => Direction::Push,
            Self::Pull { .. } => Direction::Pull,
        }
    }

    /// The mode's wire name (`link`, `upsert`, `verbose`).
    pub fn mode_str(&self) -> &'static str {
        match self {
            Self::Push {
                mode: PushMode::Link,
            } => "link",
            Self::Push {
                mode: PushMode::Upsert,
            } => "upsert",
            Self::Pull {
                mode: PullMode::Upsert,
                ..
            } => "upsert",
            Self::Pull {
                mode: PullMode::Verbose,
                ..
            } => "verbose",
        }
    }

    /// Whether the job reads only what changed since the last successful pull.
    pub fn incremental(&self) -> bool {
        matches!(
            self,
            Self::Pull {
                incremental: true,
                ..
            }
        )
    }
}

/// A real contacts job of `action`.
impl From<JobAction> for JobSpec {
    fn from(action: JobAction) -> Self {
        Self {
            object: SyncObject::Contacts,
            action,
            dry_run: false,
        }
    }
}

impl JobSpec {
    /// Builds a real contacts job from loosely typed input (API body, CLI flags, config), with
    /// defaults: mode `link` for push, `upsert` for pull; `incremental` false.
    pub fn parse(
        direction: &str,
        mode: Option<&str>,
        incremental: Option<bool>,
    ) -> Result<Self, SpecError> {
        let direction: Direction = direction.parse()?;
        Self::new(direction, mode, incremental.unwrap_or(false))
    }

    /// Builds a real contacts job for a known direction; `mode` `None` means the direction's
    /// default.
    pub fn new(
        direction: Direction,
        mode: Option<&str>,
        incremental: bool,
    ) -> Result<Self, SpecError> {
        JobAction::new(direction, mode, incremental).map(Self::from)
    }

    /// The same job for `object`, refused when this version cannot sync it.
    pub fn for_object(self, object: SyncObject) -> Result<Self, SpecError> {
        if !object.is_available() {
            return Err(SpecError::ObjectUnavailable(object));
        }
        Ok(Self { object, ..self })
    }

    /// The same job as a dry run (`true`) or a real one; a dry run is refused when the
    /// object's engine cannot run one.
    pub fn with_dry_run(self, dry_run: bool) -> Result<Self, SpecError> {
        if dry_run && !self.object.has_dry_run() {
            return Err(SpecError::DryRunUnavailable(self.object));
        }
        Ok(Self { dry_run, ..self })
    }

    /// The default push (`link`) of contacts.
    pub fn push() -> Self {
        JobAction::Push {
            mode: PushMode::Link,
        }
        .into()
    }

    /// The default pull (`upsert`, full) of contacts.
    pub fn pull() -> Self {
        JobAction::Pull {
            mode: PullMode::Upsert,
            incremental: false,
        }
        .into()
    }

    /// The direction.
    pub fn direction(&self) -> Direction {
        self.action.direction()
    }

    /// The mode's wire name (`link`, `upsert`, `verbose`).
    pub fn mode_str(&self) -> &'static str {
        self.action.mode_str()
    }

    /// Whether the job reads only what changed since the last successful pull.
    pub fn incremental(&self) -> bool {
        self.action.incremental()
    }

    /// The HubSpot object it syncs.
    pub fn object(&self) -> SyncObject {
        self.object
    }

    /// What kind of job this is, in words for messages: `push`, `companies pull`,
    /// `dry-run push`; contacts go unnamed, as they did before jobs named their object.
    pub fn kind(&self) -> String {
        let mut words = Vec::with_capacity(3);
        if self.dry_run {
            words.push("dry-run");
        }
        if self.object != SyncObject::Contacts {
            words.push(self.object.as_str());
        }
        words.push(self.direction().as_str());
        words.join(" ")
    }

    /// Zeroed counts of this direction's shape.
    pub fn empty_counts(&self) -> Counts {
        match self.direction() {
            Direction::Push => Counts::Push(PushCounts::default()),
            Direction::Pull => Counts::Pull(PullCounts::default()),
        }
    }
}

/// The flat wire form of [`JobSpec`]: `direction`, `object`, `mode`, `incremental` and
/// `dry_run` side by side (INTERFACE §4.3); rows and documents written before `object` and
/// `dry_run` existed read as contacts, not a dry run.
#[derive(Serialize, Deserialize)]
struct JobSpecRepr {
    direction: Direction,
    #[serde(default)]
    object: SyncObject,
    mode: Option<String>,
    #[serde(default)]
    incremental: bool,
    #[serde(default)]
    dry_run: bool,
}

impl TryFrom<JobSpecRepr> for JobSpec {
    type Error = SpecError;
    fn try_from(r: JobSpecRepr) -> Result<Self, SpecError> {
        Ok(Self {
            object: r.object,
            action: JobAction::new(r.direction, r.mode.as_deref(), r.incremental)?,
            dry_run: r.dry_run,
        })
    }
}

impl From<JobSpec> for JobSpecRepr {
    fn from(s: JobSpec) -> Self {
        Self {
            direction: s.direction(),
            object: s.object,
            mode: Some(s.mode_str().to_owned()),
            incremental: s.incremental(),
            dry_run: s.dry_run,
        }
    }
}

/// What started a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
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

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
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

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 6] = [
        Self::Queued,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Queued, running or retrying: the job still holds its direction's slot.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::Running | Self::Retrying)
    }

    /// Succeeded, failed or cancelled: nothing will change it again.
    pub fn is_terminal(self) -> bool {
        !self.is_active()
    }
}

/// Push counts. `total = created + linked + updated + failed + skipped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PushCounts {
    /// Local contacts considered.
    pub total: u64,
    /// New HubSpot contacts.
    pub created: u64,
    /// Contacts that already existed in HubSpot and got their `hs_object_id` saved.
    pub linked: u64,
    /// Existing HubSpot contacts whose properties were changed.
    pub updated: u64,
    /// Records HubSpot rejected.
    pub failed: u64,
    /// Records considered and deliberately left alone.
    pub skipped: u64,
    /// Contact→company associations written (a contact's primary company set or moved);
    /// not part of `total`. Absent in jobs stored before it existed.
    #[serde(default)]
    pub associations_created: u64,
    /// Contact→company associations removed (the local company changed or was cleared).
    #[serde(default)]
    pub associations_removed: u64,
    /// Contacts whose company association could not be synced (listed in the errors).
    #[serde(default)]
    pub associations_failed: u64,
}

/// What happened to one pushed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Created in HubSpot.
    Created,
    /// Linked to an existing HubSpot contact.
    Linked,
    /// An existing HubSpot contact was updated.
    Updated,
    /// Rejected.
    Failed,
    /// Left alone.
    Skipped,
}

impl PushCounts {
    /// Counts one record: its outcome and the total together, so the invariant holds.
    pub fn add(&mut self, outcome: PushOutcome) {
        self.total += 1;
        match outcome {
            PushOutcome::Created => self.created += 1,
            PushOutcome::Linked => self.linked += 1,
            PushOutcome::Updated => self.updated += 1,
            PushOutcome::Failed => self.failed += 1,
            PushOutcome::Skipped => self.skipped += 1,
        }
    }

    /// Whether `total` is the sum of the outcomes.
    pub fn is_consistent(&self) -> bool {
        self.total == self.created + self.linked + self.updated + self.failed + self.skipped
    }
}

/// Pull counts. `total = created + linked + unchanged + failed`;
/// `created_without_email <= created`; `unlinked` stands apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PullCounts {
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
    /// Local rows whose HubSpot contact a full pull found deleted (tombstoned); not part of
    /// `total`, since these are not contacts read. Absent in jobs stored before it existed.
    #[serde(default)]
    pub unlinked: u64,
    /// Contact→company associations written (a local contact's company set from HubSpot's primary);
    /// not part of `total`. Absent in jobs stored before it existed.
    #[serde(default)]
    pub associations_created: u64,
    /// Contact→company associations removed (HubSpot no longer has a primary company).
    #[serde(default)]
    pub associations_removed: u64,
    /// Contacts whose company association could not be synced (listed in the errors).
    #[serde(default)]
    pub associations_failed: u64,
}

/// What happened to one pulled record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullOutcome {
    /// A new local row; `with_email` false counts it in `created_without_email` too.
    Created {
        /// Whether the new row has an email.
        with_email: bool,
    },
    /// An existing row got its `hs_object_id`.
    Linked,
    /// Nothing to change.
    Unchanged,
    /// Could not be written.
    Failed,
}

impl PullCounts {
    /// Counts one record: its outcome and the total together, so the invariant holds.
    /// (`upserted` is counted separately by the upsert path.)
    pub fn add(&mut self, outcome: PullOutcome) {
        self.total += 1;
        match outcome {
            PullOutcome::Created { with_email } => {
                self.created += 1;
                if !with_email {
                    self.created_without_email += 1;
                }
            }
            PullOutcome::Linked => self.linked += 1,
            PullOutcome::Unchanged => self.unchanged += 1,
            PullOutcome::Failed => self.failed += 1,
        }
    }

    /// Whether the §4.3 invariants hold.
    pub fn is_consistent(&self) -> bool {
        self.total == self.created + self.linked + self.unchanged + self.failed
            && self.created_without_email <= self.created
    }
}

/// A job's counts, shaped by its direction; serialized as the bare object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Counts {
    /// Counts of a push.
    Push(PushCounts),
    /// Counts of a pull.
    Pull(PullCounts),
}

impl Counts {
    /// Records considered so far (`total`).
    pub fn total(&self) -> u64 {
        match self {
            Self::Push(c) => c.total,
            Self::Pull(c) => c.total,
        }
    }

    /// Records that failed so far.
    pub fn failed(&self) -> u64 {
        match self {
            Self::Push(c) => c.failed,
            Self::Pull(c) => c.failed,
        }
    }

    /// Contact→company associations that failed so far (apart from [`Self::failed`]).
    pub fn associations_failed(&self) -> u64 {
        match self {
            Self::Push(c) => c.associations_failed,
            Self::Pull(c) => c.associations_failed,
        }
    }

    /// Whether the direction's invariants hold.
    pub fn is_consistent(&self) -> bool {
        match self {
            Self::Push(c) => c.is_consistent(),
            Self::Pull(c) => c.is_consistent(),
        }
    }

    /// The direction these counts belong to.
    pub fn direction(&self) -> Direction {
        match self {
            Self::Push(_) => Direction::Push,
            Self::Pull(_) => Direction::Pull,
        }
    }

    /// Parses stored counts of a known direction.
    pub fn from_json(direction: Direction, value: serde_json::Value) -> serde_json::Result<Self> {
        Ok(match direction {
            Direction::Push => Self::Push(serde_json::from_value(value)?),
            Direction::Pull => Self::Pull(serde_json::from_value(value)?),
        })
    }
}

/// One failed record: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    /// The local row, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<ContactId>,
    /// The local company, for a company job's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_id: Option<LocalCompanyId>,
    /// The record's email, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The HubSpot record, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs_object_id: Option<HsObjectId>,
    /// What went wrong, in words a person can act on.
    pub reason: String,
}

/// What a dry run would do to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlannedKind {
    /// A new record would be made (in HubSpot by a push, locally by a pull).
    Create,
    /// An existing record would be linked (its id saved).
    Link,
    /// An existing record would be overwritten with the other side's values.
    Update,
    /// Nothing to change.
    Unchanged,
    /// Left alone (push: HubSpot no longer has the linked contact).
    Skip,
    /// The record would fail; `reason` says why.
    Fail,
}

/// One record of a dry run's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAction {
    /// What would be done.
    pub action: PlannedKind,
    /// The local row, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<ContactId>,
    /// The record's email, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The HubSpot record, when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hs_object_id: Option<HsObjectId>,
    /// Why, in words a person can act on.
    pub reason: String,
}

/// What a dry run found: the HubSpot calls the real run would make, by operation (reads the
/// dry run itself made are among them), and what it would do to each record (capped like
/// `errors`; the job's `counts` stay exact).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Calls by operation (`batch_read`, `batch_create`, `batch_update`, `batch_upsert`,
    /// `list`, `search`, `property_read`, `property_create`).
    pub calls: std::collections::BTreeMap<String, u64>,
    /// One entry per record, in the order they were met, up to [`MAX_RECORD_ERRORS`].
    pub actions: Vec<PlannedAction>,
}

impl Plan {
    /// Counts `n` calls of `operation`.
    pub fn call(&mut self, operation: &str, n: u64) {
        if n > 0 {
            *self.calls.entry(operation.to_owned()).or_default() += n;
        }
    }

    /// Adds what `more` found (its actions as far as the cap allows).
    pub fn merge(&mut self, more: Plan) {
        for (operation, n) in more.calls {
            self.call(&operation, n);
        }
        let room = MAX_RECORD_ERRORS.saturating_sub(self.actions.len());
        self.actions.extend(more.actions.into_iter().take(room));
    }
}

/// How far a running job has got: `processed` records so far, `total` once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobProgress {
    /// Records handled so far.
    pub processed: u64,
    /// Records the job will handle, when the source says so.
    pub total: Option<u64>,
}

/// A sync job, as `GET /api/jobs/{id}` answers it (INTERFACE §4.3 plus `progress`, `error`,
/// `next_attempt_at`, `forced`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job id (a ULID; also the first Apalis task id).
    pub id: JobId,
    /// Direction, mode and `incremental`, flattened into the object.
    #[serde(flatten)]
    pub spec: JobSpec,
    /// What started it.
    pub trigger: Trigger,
    /// Where it stands.
    pub status: JobStatus,
    /// Runs started so far (a run stopped by a graceful shutdown does not count).
    pub attempts: u32,
    /// When it was enqueued.
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When its first run started.
    #[serde(with = "rfc3339::option")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    #[serde(with = "rfc3339::option")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Exact per-record counts.
    pub counts: Counts,
    /// One entry per failed record, capped (see [`MAX_RECORD_ERRORS`]); `counts` stays exact.
    pub errors: Vec<RecordError>,
    /// Progress while it runs.
    pub progress: JobProgress,
    /// Why the job failed, or the last transient error while it is retrying.
    pub error: Option<String>,
    /// While retrying: when the next attempt is due.
    #[serde(with = "rfc3339::option")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Whether it was enqueued with `force` past an active job of its direction (always, for a
    /// webhook pull: it runs beside any other pull).
    pub forced: bool,
    /// The HubSpot account it synced with, recorded when a run starts (`None` until then, or
    /// when the credentials do not say), so that rows need no migration once several accounts
    /// are served.
    #[serde(default)]
    pub portal_id: Option<PortalId>,
    /// A dry run's plan (absent for real jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}

/// Times on the wire: RFC 3339 in UTC with milliseconds and `Z` (`2026-11-28T14:03:00.123Z`),
/// the same in every answer whatever the backend stored.
pub mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Formats a time.
    pub fn format(t: &DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Serializes a time.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    /// Deserializes a time in any RFC 3339 form.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    /// The same for optional times (`null` when absent).
    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        /// Serializes an optional time.
        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::format(t)),
                None => s.serialize_none(),
            }
        }

        /// Deserializes an optional time.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| {
                    DateTime::parse_from_rfc3339(&text)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(serde::de::Error::custom)
                })
                .transpose()
        }
    }
}

/// At most this many [`RecordError`]s are kept per job.
pub const MAX_RECORD_ERRORS: usize = 1_000;

impl Job {
    /// The job's direction.
    pub fn direction(&self) -> Direction {
        self.spec.direction()
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Direction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Pull => "pull",
        }
    }
}

impl FromStr for Direction {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match s.trim() {
            "push" => Ok(Self::Push),
            "pull" => Ok(Self::Pull),
            other => Err(SpecError::UnknownDirection(other.to_owned())),
        }
    }
}

/// A stored enum value that is not one of ours (a corrupt or future row).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownValue {
    /// What was being parsed.
    pub kind: &'static str,
    /// The text found.
    pub value: String,
}

macro_rules! wire_names {
    ($ty:ident, $kind:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s.trim() {
                    $($name => Ok(Self::$variant),)+
                    other => Err(UnknownValue { kind: $kind, value: other.to_owned() }),
                }
            }
        }
    };
}

wire_names!(SyncObject, "object", { Contacts => "contacts", Companies => "companies" });
wire_names!(Trigger, "trigger", { Api => "api", Schedule => "schedule", Webhook => "webhook", Cli => "cli" });
wire_names!(JobStatus, "status", {
    Queued => "queued", Running => "running", Retrying => "retrying",
    Succeeded => "succeeded", Failed => "failed", Cancelled => "cancelled",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_link_for_push_and_upsert_for_pull() {
        assert_eq!(JobSpec::parse("push", None, None), Ok(JobSpec::push()));
        assert_eq!(JobSpec::parse("pull", None, None), Ok(JobSpec::pull()));
    }

    #[test]
    fn a_mode_of_the_other_direction_is_refused_with_the_valid_choices() {
        let err = JobSpec::parse("pull", Some("link"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "mode \"link\" is not valid for pull: expected \"upsert\" or \"verbose\""
        );
        assert!(JobSpec::parse("push", Some("verbose"), None).is_err());
        assert!(JobSpec::parse("sideways", None, None).is_err());
        assert_eq!(
            JobSpec::parse("push", None, Some(true)),
            Err(SpecError::IncrementalPush)
        );
    }

    #[test]
    fn a_job_serializes_with_flat_spec_and_every_count_key() {
        let job = Job {
            id: JobId::generate(),
            spec: JobAction::Pull {
                mode: PullMode::Verbose,
                incremental: true,
            }
            .into(),
            trigger: Trigger::Schedule,
            status: JobStatus::Queued,
            attempts: 0,
            // The wire carries milliseconds.
            created_at: chrono::SubsecRound::trunc_subsecs(Utc::now(), 3),
            started_at: None,
            finished_at: None,
            counts: JobSpec::pull().empty_counts(),
            errors: vec![],
            progress: JobProgress::default(),
            error: None,
            next_attempt_at: None,
            forced: false,
            portal_id: None,
            plan: None,
        };
        let v = serde_json::to_value(&job).unwrap();
        assert_eq!(v["direction"], "pull");
        assert_eq!(v["mode"], "verbose");
        assert_eq!(v["incremental"], true);
        assert_eq!(v["object"], "contacts");
        assert_eq!(v["dry_run"], false);
        assert_eq!(v["trigger"], "schedule");
        assert_eq!(v["status"], "queued");
        let counts = v["counts"].as_object().unwrap();
        for key in [
            "total",
            "created",
            "created_without_email",
            "linked",
            "upserted",
            "unchanged",
            "failed",
        ] {
            assert_eq!(counts[key], 0, "{key}");
        }
        let back: Job = serde_json::from_value(v).unwrap();
        assert_eq!(back, job);
    }

    #[test]
    fn counting_by_outcome_keeps_the_invariants() {
        let mut push = PushCounts::default();
        for o in [
            PushOutcome::Created,
            PushOutcome::Linked,
            PushOutcome::Failed,
            PushOutcome::Skipped,
        ] {
            push.add(o);
        }
        assert!(push.is_consistent());
        assert_eq!(push.total, 4);
        let mut pull = PullCounts::default();
        pull.add(PullOutcome::Created { with_email: false });
        pull.add(PullOutcome::Unchanged);
        assert!(pull.is_consistent());
        assert_eq!(pull.created_without_email, 1);
    }
}
