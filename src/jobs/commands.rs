//! The bodies of `crm-sync sync push|pull`, `crm-sync jobs [ID]` and `crm-sync worker`; the CLI
//! parses flags and calls these. Output goes to the writer given (stdout in the binary), the
//! progress bar to stderr (hidden when stderr is not a terminal).

use crate::ids::JobId;
use crate::jobs::model::{
    Counts, Job, JobProgress, JobSpec, JobStatus, SpecError, SyncObject, Trigger,
};
use crate::jobs::queue::{EnqueueRequest, QueueError, enqueue};
use crate::store::{Store, StoreError};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::time::Duration;

/// `crm-sync sync push|pull [--object O] [--mode M] [--incremental] [--dry-run] [--force]
/// [--wait] [--timeout D]`, or `crm-sync sync --job ID [--timeout D]`.
#[derive(Debug, Clone, clap::Args)]
#[command(group = clap::ArgGroup::new("follow").args(["wait", "job"]).multiple(true))]
pub struct SyncArgs {
    /// Which way: `push` (local → HubSpot) or `pull` (HubSpot → local).
    #[arg(
        value_parser = clap::builder::PossibleValuesParser::new(["push", "pull"]),
        required_unless_present = "job",
        conflicts_with = "job"
    )]
    pub direction: Option<String>,
    /// What to sync: `contacts` (the default) or `companies`.
    #[arg(
        long,
        value_name = "O",
        value_parser = clap::builder::PossibleValuesParser::new(["contacts", "companies"]),
        conflicts_with = "job"
    )]
    pub object: Option<String>,
    /// push: `link` (default) or `upsert`; pull: `upsert` (default) or `verbose`.
    #[arg(long, value_name = "M", conflicts_with = "job")]
    pub mode: Option<String>,
    /// pull only: read only what changed since the last successful pull.
    #[arg(long, conflicts_with = "job")]
    pub incremental: bool,
    /// Only report what the job would do: it reads, and writes nothing to HubSpot or to the
    /// local tables.
    #[arg(long, conflicts_with = "job")]
    pub dry_run: bool,
    /// Enqueue even while a job of this object and direction (a dry run: another dry run) is
    /// queued or running.
    #[arg(long, conflicts_with = "job")]
    pub force: bool,
    /// Follow the job with a progress bar and print its counts; the exit status says whether
    /// it succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Follow this existing job as --wait does, instead of enqueueing one (never creates a
    /// database).
    #[arg(long, value_name = "ID")]
    pub job: Option<String>,
    /// With --wait or --job: stop waiting after this long (e.g. 90, 90s, 5m, 1h30m); the job
    /// itself keeps going.
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = crate::args::timeout,
        requires = "follow"
    )]
    pub timeout: Option<Duration>,
}

/// What a `sync` command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncRequest {
    /// Enqueue a job (or find the active one), and follow it when `wait` is set.
    Enqueue {
        /// The job.
        spec: JobSpec,
        /// Enqueue even while a job of this slot is active.
        force: bool,
        /// Follow it to its end.
        wait: bool,
    },
    /// Follow an existing job (`--job ID`), as the user wrote its id.
    Follow(String),
}

impl SyncArgs {
    /// The request these flags make; the error names the flag and the valid choices.
    pub fn request(&self) -> Result<SyncRequest, SyncFlagsError> {
        if let Some(id) = &self.job {
            return Ok(SyncRequest::Follow(id.clone()));
        }
        // clap requires a direction unless --job is given.
        let direction = self.direction.as_deref().unwrap_or_default();
        let mut spec = JobSpec::parse(direction, self.mode.as_deref(), Some(self.incremental))?;
        if let Some(name) = &self.object {
            // clap let only the possible values through.
            let object: SyncObject = name
                .parse()
                .map_err(|_| SpecError::UnknownObject(name.clone()))?;
            spec = spec
                .for_object(object)
                .map_err(|source| SyncFlagsError::Flag {
                    flag: "--object",
                    source,
                })?;
        }
        let spec = spec
            .with_dry_run(self.dry_run)
            .map_err(|source| SyncFlagsError::Flag {
                flag: "--dry-run",
                source,
            })?;
        Ok(SyncRequest::Enqueue {
            spec,
            force: self.force,
            wait: self.wait,
        })
    }
}

/// `sync` flags that make no job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncFlagsError {
    /// Direction, mode and `--incremental` do not fit (the message names the choices).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A flag asks for what this version cannot run.
    #[error("{flag}: {source}")]
    Flag {
        /// The flag at fault.
        flag: &'static str,
        /// Why.
        source: SpecError,
    },
}

/// `crm-sync jobs [ID]`.
#[derive(Debug, Clone, clap::Args)]
pub struct JobsArgs {
    /// Show this job (as JSON) instead of the list of recent ones.
    pub id: Option<String>,
    /// How many recent jobs to list (1 to 500).
    #[arg(
        long,
        default_value_t = 20,
        allow_negative_numbers = true,
        value_parser = crate::args::number_up_to(500)
    )]
    pub limit: u32,
}

/// Errors of the job commands, each a one-line message for stderr.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The job could not be enqueued.
    #[error("could not enqueue the job: {0}")]
    Enqueue(#[from] QueueError),
    /// The database failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// No job has this id.
    #[error("no job with id {0:?} (see `crm-sync jobs` for recent ones)")]
    NotFound(String),
    /// The job to cancel had already ended (its status says how).
    #[error("job {} has already ended ({}); there is nothing to cancel", .0.id, .0.status)]
    AlreadyFinished(Box<Job>),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// How the `sync` command ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOutcome {
    /// Enqueued (or found active) and not waited for.
    Enqueued(Job),
    /// Waited for; the job ended like this.
    Finished(Job),
    /// Waited for until `--timeout`; the job was still active, as shown, and keeps going.
    StillActive {
        /// The job as last seen.
        job: Job,
        /// How long the command waited.
        waited: Duration,
    },
}

impl SyncOutcome {
    /// Whether the command succeeded: enqueued, or waited for, `succeeded` and with no failed
    /// record.
    pub fn is_success(&self) -> bool {
        self.failure().is_none()
    }

    /// How a waited-for job fell short, with the line that says so: the job itself did not
    /// succeed, or it succeeded with records that failed. `None` when every record went through
    /// (or the job was not waited for).
    pub fn failure(&self) -> Option<(JobShortfall, String)> {
        let job = match self {
            Self::Enqueued(_) => return None,
            Self::Finished(job) => job,
            Self::StillActive { job, waited } => {
                let line = format!(
                    "job {id} is still {status} after {secs} s, and keeps going: nothing was \
                     cancelled (follow it with `crm-sync sync --job {id}`, or stop it with \
                     `crm-sync cancel {id}`)",
                    id = job.id,
                    status = job.status,
                    secs = waited.as_secs()
                );
                return Some((JobShortfall::TimedOut, line));
            }
        };
        if job.status != JobStatus::Succeeded {
            let line = format!(
                "job {} {}{}",
                job.id,
                job.status,
                job.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
            return Some((JobShortfall::JobFailed, line));
        }
        let failed = job.counts.failed();
        let associations = job.counts.associations_failed();
        let line = match (failed, associations) {
            (0, 0) => return None,
            (_, 0) => format!(
                "job {} succeeded, but {failed} of {} records failed (`crm-sync jobs {}` lists why)",
                job.id,
                job.counts.total(),
                job.id
            ),
            (0, _) => format!(
                "job {} succeeded, but {associations} contact→company associations failed \
                 (`crm-sync jobs {}` lists why)",
                job.id, job.id
            ),
            _ => format!(
                "job {} succeeded, but {failed} of {} records and {associations} contact→company \
                 associations failed (`crm-sync jobs {}` lists why)",
                job.id,
                job.counts.total(),
                job.id
            ),
        };
        Some((JobShortfall::RecordsFailed, line))
    }
}

/// Why a job followed with `--wait` was not a full success (each has its own exit status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobShortfall {
    /// The job ended `failed` or `cancelled`.
    JobFailed,
    /// The job ended `succeeded`, but some of its records failed.
    RecordsFailed,
    /// `--timeout` passed while the job was still queued, running or retrying.
    TimedOut,
}

/// `crm-sync sync push|pull`: enqueues the job with trigger `cli` (or finds the active one);
/// with `wait`, follows it with a progress bar (for at most `timeout`) and prints its final
/// counts.
pub async fn sync(
    store: &Store,
    spec: JobSpec,
    force: bool,
    wait: bool,
    timeout: Option<Duration>,
    out: &mut (dyn Write + Send),
) -> Result<SyncOutcome, CommandError> {
    let enqueued = enqueue(
        store,
        EnqueueRequest {
            spec,
            trigger: Trigger::Cli,
            force,
        },
    )
    .await?;
    let job = enqueued.job;
    if enqueued.created {
        writeln!(
            out,
            "enqueued {} job {} ({})",
            job.spec.kind(),
            job.id,
            job.spec.mode_str()
        )?;
    } else {
        writeln!(
            out,
            "a {} job is already {}: {} (use --force to start another)",
            job.spec.kind(),
            job.status,
            job.id
        )?;
    }
    if !wait {
        return Ok(SyncOutcome::Enqueued(job));
    }
    follow_and_summarise(store, job.id, timeout, out).await
}

/// `crm-sync sync --job ID`: follows an existing job as `--wait` does, changing nothing.
pub async fn follow_existing(
    store: &Store,
    raw_id: &str,
    timeout: Option<Duration>,
    out: &mut (dyn Write + Send),
) -> Result<SyncOutcome, CommandError> {
    let job = find_job(store, raw_id).await?;
    writeln!(
        out,
        "following {} job {} ({}, {})",
        job.spec.kind(),
        job.id,
        job.spec.mode_str(),
        job.status
    )?;
    follow_and_summarise(store, job.id, timeout, out).await
}

async fn follow_and_summarise(
    store: &Store,
    id: JobId,
    timeout: Option<Duration>,
    out: &mut (dyn Write + Send),
) -> Result<SyncOutcome, CommandError> {
    let started = std::time::Instant::now();
    let job = follow(store, id, timeout).await?;
    if !job.status.is_terminal() {
        return Ok(SyncOutcome::StillActive {
            job,
            waited: started.elapsed(),
        });
    }
    print_summary(&job, out)?;
    Ok(SyncOutcome::Finished(job))
}

/// The job `raw` names; [`CommandError::NotFound`] when it is not an id or no job has it.
async fn find_job(store: &Store, raw: &str) -> Result<Job, CommandError> {
    match raw.trim().parse::<JobId>() {
        Ok(id) => store.get_job(id).await?,
        Err(_) => None,
    }
    .ok_or_else(|| CommandError::NotFound(raw.to_owned()))
}

/// `crm-sync cancel ID`: cancels a queued, running or retrying job, as
/// `POST /api/jobs/{id}/cancel` does (a running one stops at its next page); a job that had
/// already ended is [`CommandError::AlreadyFinished`].
pub async fn cancel(
    store: &Store,
    raw_id: &str,
    out: &mut (dyn Write + Send),
) -> Result<Job, CommandError> {
    let job = find_job(store, raw_id).await?;
    let Some(cancelled) = store.cancel_job(job.id).await? else {
        // It ended between the two reads: report how, as read now.
        let ended = find_job(store, raw_id).await?;
        return Err(CommandError::AlreadyFinished(Box::new(ended)));
    };
    let stops = match job.status {
        JobStatus::Running => "; it stops at its next page",
        _ => "",
    };
    writeln!(
        out,
        "cancelled {} job {} (it was {}){stops}",
        cancelled.direction(),
        cancelled.id,
        job.status
    )?;
    Ok(cancelled)
}

/// Polls the job until it ends or `timeout` passes, drawing its progress; returns it as last
/// read.
async fn follow(store: &Store, id: JobId, timeout: Option<Duration>) -> Result<Job, CommandError> {
    let mut line = ProgressLine::new();
    let since = std::time::Instant::now();
    loop {
        let job = store
            .get_job(id)
            .await?
            .ok_or_else(|| CommandError::NotFound(id.to_string()))?;
        line.show(&job, since.elapsed());
        let timed_out = timeout.is_some_and(|limit| since.elapsed() >= limit);
        if job.status.is_terminal() || timed_out {
            line.clear();
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the progress line draws for a job's progress. A bar needs a known, non-zero total:
/// a bar drawn at `0/0` would look full before anything happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressView {
    /// Nothing counted yet: a spinner and the status.
    Waiting,
    /// Records counted, total unknown: the count without a bar.
    Counting {
        /// Records handled so far.
        processed: u64,
    },
    /// A bar of `processed` out of `total` (never more than `total`).
    Bar {
        /// Records handled so far.
        processed: u64,
        /// Records the job will handle (at least 1).
        total: u64,
    },
}

impl ProgressView {
    /// The view of `progress`.
    pub fn of(progress: &JobProgress) -> ProgressView {
        match (progress.processed, progress.total) {
            (processed, Some(total)) if total > 0 => ProgressView::Bar {
                processed: processed.min(total),
                total,
            },
            (0, _) => ProgressView::Waiting,
            (processed, _) => ProgressView::Counting { processed },
        }
    }
}

/// The spinner line on stderr that `--wait` draws (hidden when stderr is not a terminal).
struct ProgressLine {
    bar: ProgressBar,
    /// The kind of view drawn, so that the style changes only when the kind does.
    kind: Option<std::mem::Discriminant<ProgressView>>,
}

impl ProgressLine {
    fn new() -> Self {
        let bar = ProgressBar::new_spinner();
        let waiting = ProgressView::Waiting;
        bar.set_style(style_for(waiting));
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            kind: Some(std::mem::discriminant(&waiting)),
        }
    }

    fn show(&mut self, job: &Job, waited: Duration) {
        let view = ProgressView::of(&job.progress);
        let kind = std::mem::discriminant(&view);
        if self.kind != Some(kind) {
            self.bar.set_style(style_for(view));
            self.kind = Some(kind);
        }
        match view {
            ProgressView::Waiting => {}
            ProgressView::Counting { processed } => self.bar.set_position(processed),
            ProgressView::Bar { processed, total } => {
                self.bar.set_length(total);
                self.bar.set_position(processed);
            }
        }
        self.bar.set_message(status_message(job, waited));
    }

    fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// The indicatif template of each view.
fn style_for(view: ProgressView) -> ProgressStyle {
    let template = match view {
        ProgressView::Waiting => "{spinner} {msg} ({elapsed})",
        ProgressView::Counting { .. } => "{spinner} {msg} {pos} processed ({elapsed})",
        ProgressView::Bar { .. } => "{spinner} {msg} [{bar:30}] {pos}/{len} ({elapsed})",
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .progress_chars("=> ")
}

/// The words next to the spinner: the status, and why a job is not moving when that is known.
fn status_message(job: &Job, waited: Duration) -> String {
    match job.status {
        // Nothing runs jobs unless `serve` or `worker` is up: say so rather than spin.
        JobStatus::Queued if waited > Duration::from_secs(5) => {
            "queued: waiting for a worker (is `crm-sync serve` or `crm-sync worker` running?)"
                .to_owned()
        }
        JobStatus::Retrying => match job.next_attempt_at {
            Some(at) => format!(
                "retrying at {} after: {}",
                at.format("%H:%M:%S"),
                job.error.as_deref().unwrap_or("a transient error")
            ),
            None => "retrying".to_owned(),
        },
        status => status.to_string(),
    }
}

/// The counts of a job as `key value` rows, in §4.3 order.
pub fn count_rows(counts: &Counts) -> Vec<(&'static str, u64)> {
    match counts {
        Counts::Push(c) => vec![
            ("total", c.total),
            ("created", c.created),
            ("linked", c.linked),
            ("updated", c.updated),
            ("failed", c.failed),
            ("skipped", c.skipped),
        ],
        Counts::Pull(c) => vec![
            ("total", c.total),
            ("created", c.created),
            ("created_without_email", c.created_without_email),
            ("linked", c.linked),
            ("upserted", c.upserted),
            ("unchanged", c.unchanged),
            ("failed", c.failed),
            ("unlinked", c.unlinked),
        ],
    }
}

/// How many record errors the summary lists.
const SHOWN_ERRORS: usize = 10;

/// Prints a finished job: status line, a table of counts, the first record errors.
pub fn print_summary(job: &Job, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    let took = match (job.started_at, job.finished_at) {
        (Some(s), Some(f)) => format!(", {:.1} s", (f - s).num_milliseconds() as f64 / 1000.0),
        _ => String::new(),
    };
    writeln!(
        out,
        "job {} {}/{}{} {} (attempts {}{took})",
        job.id,
        job.direction(),
        job.spec.mode_str(),
        if job.spec.dry_run { " dry run" } else { "" },
        job.status,
        job.attempts
    )?;
    if let Some(error) = &job.error {
        writeln!(out, "  error: {error}")?;
    }
    let rows = count_rows(&job.counts);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        writeln!(out, "  {key:<width$}  {value:>8}")?;
    }
    if !job.errors.is_empty() {
        writeln!(
            out,
            "record errors (first {} of {} failed):",
            job.errors.len().min(SHOWN_ERRORS),
            job.counts.failed()
        )?;
        for e in job.errors.iter().take(SHOWN_ERRORS) {
            let who = match (&e.contact_id, &e.email, &e.hs_object_id) {
                (None, _, _) if let Some(company) = e.company_id => format!("company {company}"),
                (Some(id), Some(email), _) => format!("contact {id} <{email}>"),
                (Some(id), None, _) => format!("contact {id}"),
                (None, Some(email), _) => format!("<{email}>"),
                (None, None, Some(hs)) => format!("HubSpot {hs}"),
                (None, None, None) => "record".to_owned(),
            };
            writeln!(out, "  {who}: {}", e.reason)?;
        }
    }
    Ok(())
}

/// `crm-sync jobs [ID]`: one job as JSON, or a table of the most recent ones.
pub async fn jobs(
    store: &Store,
    id: Option<&str>,
    limit: u32,
    out: &mut (dyn Write + Send),
) -> Result<(), CommandError> {
    match id {
        Some(raw) => {
            let job = find_job(store, raw).await?;
            let json = serde_json::to_string_pretty(&job).map_err(std::io::Error::other)?;
            writeln!(out, "{json}")?;
        }
        None => {
            let recent = store.list_jobs(None, limit).await?;
            print_table(&recent, out)?;
        }
    }
    Ok(())
}

/// A table of jobs, one line each.
pub fn print_table(jobs: &[Job], out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    if jobs.is_empty() {
        return writeln!(
            out,
            "no jobs yet (start one with `crm-sync sync push` or `pull`)"
        );
    }
    writeln!(
        out,
        "{:<26}  {:<4}  {:<7}  {:<8}  {:<9}  {:>3}  {:>9}  {:>7}  {:<20}",
        "ID", "DIR", "MODE", "TRIGGER", "STATUS", "TRY", "PROCESSED", "FAILED", "CREATED"
    )?;
    for j in jobs {
        writeln!(
            out,
            "{:<26}  {:<4}  {:<7}  {:<8}  {:<9}  {:>3}  {:>9}  {:>7}  {:<20}",
            j.id.to_string(),
            j.direction().as_str(),
            j.spec.mode_str(),
            j.trigger.as_str(),
            j.status.as_str(),
            j.attempts,
            j.progress.processed,
            j.counts.failed(),
            j.created_at.format("%Y-%m-%d %H:%M:%S"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::model::{JobProgress, PushCounts};
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Command {
        Sync(SyncArgs),
        Jobs(JobsArgs),
    }

    fn sync_args(args: &[&str]) -> Result<SyncArgs, clap::Error> {
        let mut argv = vec!["crm-sync", "sync"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Sync(a) => Ok(a),
            Command::Jobs(_) => unreachable!(),
        }
    }

    fn spec_of(args: &[&str]) -> JobSpec {
        match sync_args(args).unwrap().request().unwrap() {
            SyncRequest::Enqueue { spec, .. } => spec,
            other => panic!("{other:?}"),
        }
    }

    fn finished_push(counts: PushCounts) -> SyncOutcome {
        SyncOutcome::Finished(Job {
            id: JobId::generate(),
            spec: JobSpec::push(),
            trigger: Trigger::Cli,
            status: JobStatus::Succeeded,
            attempts: 1,
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            counts: Counts::Push(counts),
            errors: Vec::new(),
            progress: JobProgress::default(),
            error: None,
            next_attempt_at: None,
            forced: false,
            portal_id: None,
            plan: None,
        })
    }

    #[test]
    fn failed_associations_alone_are_a_shortfall_of_a_waited_job() {
        let clean = finished_push(PushCounts {
            total: 3,
            created: 3,
            associations_created: 3,
            ..PushCounts::default()
        });
        assert_eq!(clean.failure(), None);
        let (why, line) = finished_push(PushCounts {
            total: 3,
            created: 3,
            associations_created: 1,
            associations_failed: 2,
            ..PushCounts::default()
        })
        .failure()
        .expect("a shortfall");
        assert_eq!(why, JobShortfall::RecordsFailed);
        assert!(
            line.contains("2 contact→company associations failed"),
            "{line}"
        );
    }

    #[test]
    fn sync_flags_become_a_job_spec() {
        let a = sync_args(&["pull", "--mode", "verbose", "--incremental", "--wait"]).unwrap();
        assert!(a.wait && !a.force);
        let spec = spec_of(&["pull", "--mode", "verbose", "--incremental", "--wait"]);
        assert_eq!((spec.mode_str(), spec.incremental()), ("verbose", true));
        assert_eq!(spec_of(&["push"]), JobSpec::push());
        assert!(sync_args(&["sideways"]).is_err());
        let err = sync_args(&["push", "--mode", "verbose"])
            .unwrap()
            .request()
            .unwrap_err();
        assert!(err.to_string().contains("\"link\" or \"upsert\""), "{err}");
    }

    #[test]
    fn object_and_dry_run_flags_are_carried_or_refused_by_name() {
        let spec = spec_of(&["pull", "--object", "contacts"]);
        assert_eq!((spec.object, spec.dry_run), (SyncObject::Contacts, false));
        let spec = spec_of(&["push", "--object", "companies"]);
        assert_eq!(spec.object, SyncObject::Companies);
        let spec = spec_of(&["pull", "--object", "companies", "--mode", "verbose"]);
        assert_eq!(spec.object, SyncObject::Companies);
        assert!(sync_args(&["push", "--object", "deals"]).is_err());
        assert!(sync_args(&["--job", "01JOB", "--dry-run"]).is_err());
    }

    #[test]
    fn job_follows_an_existing_job_and_takes_no_job_flags() {
        let a = sync_args(&["--job", "01JOB", "--timeout", "5m"]).unwrap();
        assert_eq!(a.request().unwrap(), SyncRequest::Follow("01JOB".into()));
        assert_eq!(a.timeout, Some(Duration::from_secs(300)));
        assert!(sync_args(&["push", "--job", "01JOB"]).is_err());
        assert!(sync_args(&["--job", "01JOB", "--force"]).is_err());
        assert!(sync_args(&[]).is_err(), "a direction or --job is required");
    }

    #[test]
    fn a_timeout_needs_something_to_wait_for() {
        let err = sync_args(&["push", "--timeout", "30s"]).unwrap_err();
        assert!(err.to_string().contains("--wait"), "{err}");
        let a = sync_args(&["push", "--wait", "--timeout", "30s"]).unwrap();
        assert!(matches!(
            a.request(),
            Ok(SyncRequest::Enqueue { wait: true, .. })
        ));
        assert!(sync_args(&["push", "--wait", "--timeout", "soon"]).is_err());
    }

    #[test]
    fn the_progress_bar_is_drawn_only_against_a_known_nonzero_total() {
        let view = |processed, total| ProgressView::of(&JobProgress { processed, total });
        assert_eq!(view(0, Some(0)), ProgressView::Waiting, "0/0 is no bar");
        assert_eq!(view(0, None), ProgressView::Waiting);
        assert_eq!(view(7, None), ProgressView::Counting { processed: 7 });
        assert_eq!(view(7, Some(0)), ProgressView::Counting { processed: 7 });
        assert_eq!(
            view(0, Some(10)),
            ProgressView::Bar {
                processed: 0,
                total: 10
            }
        );
        assert_eq!(
            view(12, Some(10)),
            ProgressView::Bar {
                processed: 10,
                total: 10
            }
        );
    }

    #[test]
    fn jobs_takes_an_optional_id_and_a_bounded_limit() {
        let parse = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.command);
        let Ok(Command::Jobs(a)) = parse(&["crm-sync", "jobs"]) else {
            panic!()
        };
        assert_eq!((a.id, a.limit), (None, 20));
        let Ok(Command::Jobs(a)) = parse(&["crm-sync", "jobs", "01ABC", "--limit", "5"]) else {
            panic!()
        };
        assert_eq!(a.id.as_deref(), Some("01ABC"));
        for bad in ["0", "-5", "501"] {
            let err = parse(&["crm-sync", "jobs", "--limit", bad]).unwrap_err();
            assert!(
                err.to_string().contains("must be a number from 1 to 500"),
                "{bad}: {err}"
            );
        }
    }
}
