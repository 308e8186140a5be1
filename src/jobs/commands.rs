//! The bodies of `crm-sync sync push|pull`, `crm-sync jobs [ID]` and `crm-sync worker`; the CLI
//! parses flags and calls these. Output goes to the writer given (stdout in the binary), the
//! progress bar to stderr (hidden when stderr is not a terminal).

use crate::ids::JobId;
use crate::jobs::model::{Counts, Job, JobSpec, JobStatus, SpecError, Trigger};
use crate::jobs::queue::{EnqueueRequest, QueueError, enqueue};
use crate::store::{Store, StoreError};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::time::Duration;

/// `crm-sync sync push|pull [--mode M] [--incremental] [--force] [--wait]`.
#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// Which way: `push` (local → HubSpot) or `pull` (HubSpot → local).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(["push", "pull"]))]
    pub direction: String,
    /// push: `link` (default) or `upsert`; pull: `upsert` (default) or `verbose`.
    #[arg(long, value_name = "M")]
    pub mode: Option<String>,
    /// pull only: read only what changed since the last successful pull.
    #[arg(long)]
    pub incremental: bool,
    /// Enqueue even while a job of this direction is queued or running.
    #[arg(long)]
    pub force: bool,
    /// Follow the job with a progress bar and print its counts; the exit status says whether
    /// it succeeded.
    #[arg(long)]
    pub wait: bool,
}

impl SyncArgs {
    /// The job these flags ask for; the error names the valid choices.
    pub fn spec(&self) -> Result<JobSpec, SpecError> {
        JobSpec::parse(
            &self.direction,
            self.mode.as_deref(),
            Some(self.incremental),
        )
    }
}

/// `crm-sync jobs [ID]`.
#[derive(Debug, Clone, clap::Args)]
pub struct JobsArgs {
    /// Show this job (as JSON) instead of the list of recent ones.
    pub id: Option<String>,
    /// How many recent jobs to list.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
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
        let Self::Finished(job) = self else {
            return None;
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
        (failed > 0).then(|| {
            let line = format!(
                "job {} succeeded, but {failed} of {} records failed (`crm-sync jobs {}` lists why)",
                job.id,
                job.counts.total(),
                job.id
            );
            (JobShortfall::RecordsFailed, line)
        })
    }
}

/// Why a job followed with `--wait` was not a full success (each has its own exit status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobShortfall {
    /// The job ended `failed` or `cancelled`.
    JobFailed,
    /// The job ended `succeeded`, but some of its records failed.
    RecordsFailed,
}

/// `crm-sync sync push|pull`: enqueues the job with trigger `cli` (or finds the active one);
/// with `wait`, follows it with a progress bar and prints its final counts.
pub async fn sync(
    store: &Store,
    spec: JobSpec,
    force: bool,
    wait: bool,
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
            job.direction(),
            job.id,
            job.spec.mode_str()
        )?;
    } else {
        writeln!(
            out,
            "a {} job is already {}: {} (use --force to start another)",
            job.direction(),
            job.status,
            job.id
        )?;
    }
    if !wait {
        return Ok(SyncOutcome::Enqueued(job));
    }
    let done = follow(store, job.id).await?;
    print_summary(&done, out)?;
    Ok(SyncOutcome::Finished(done))
}

/// Polls the job until it ends, drawing its progress.
async fn follow(store: &Store, id: JobId) -> Result<Job, CommandError> {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let since = std::time::Instant::now();
    loop {
        let job = store
            .get_job(id)
            .await?
            .ok_or_else(|| CommandError::NotFound(id.to_string()))?;
        let message = match job.status {
            // Nothing runs jobs unless `serve` or `worker` is up: say so rather than spin.
            JobStatus::Queued if since.elapsed() > Duration::from_secs(5) => {
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
        };
        bar.set_message(message);
        bar.set_length(job.progress.total.unwrap_or(job.progress.processed));
        bar.set_position(job.progress.processed);
        if job.status.is_terminal() {
            bar.finish_and_clear();
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
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
        "job {} {}/{} {} (attempts {}{took})",
        job.id,
        job.direction(),
        job.spec.mode_str(),
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
            let job = match raw.trim().parse::<JobId>() {
                Ok(id) => store.get_job(id).await?,
                Err(_) => None,
            }
            .ok_or_else(|| CommandError::NotFound(raw.to_owned()))?;
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

    #[test]
    fn sync_flags_become_a_job_spec() {
        let a = sync_args(&["pull", "--mode", "verbose", "--incremental", "--wait"]).unwrap();
        let spec = a.spec().unwrap();
        assert_eq!((spec.mode_str(), spec.incremental()), ("verbose", true));
        assert!(a.wait && !a.force);
        assert_eq!(
            sync_args(&["push"]).unwrap().spec().unwrap(),
            JobSpec::push()
        );
        assert!(sync_args(&["sideways"]).is_err());
        let err = sync_args(&["push", "--mode", "verbose"])
            .unwrap()
            .spec()
            .unwrap_err();
        assert!(err.to_string().contains("\"link\" or \"upsert\""), "{err}");
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
        assert!(parse(&["crm-sync", "jobs", "--limit", "0"]).is_err());
    }
}
