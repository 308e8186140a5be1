//! Recurring jobs from `[[sync.schedules]]`, fired by apalis-cron.
//!
//! Every `serve` and `worker` process runs every schedule, and apalis-cron does not coordinate
//! them: each process sees each tick. The tick is therefore claimed in the database
//! (`schedule_ticks`, keyed by schedule and tick time): one process wins and acts, in the same
//! transaction — it enqueues a job with trigger `schedule`, or records the tick `skipped` when a
//! job of that direction is still queued or running.

use crate::ids::JobId;
use crate::jobs::model::{Direction, JobSpec, SpecError, SyncObject, Trigger};
use crate::jobs::queue::{self, EnqueueRequest, QueueError};
use crate::store::jobs::{TickOutcome, TickRecord, Tx};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::str::FromStr;
use std::sync::Arc;

/// A schedule from the configuration is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("schedule {expr:?}: invalid cron expression: {reason}")]
    Cron {
        /// The expression.
        expr: String,
        /// Why.
        reason: String,
    },
    /// Direction or mode are invalid.
    #[error("schedule {expr:?}: {source}")]
    Spec {
        /// The expression.
        expr: String,
        /// Why.
        source: SpecError,
    },
}

/// One recurring job.
#[derive(Debug, Clone)]
pub struct Schedule {
    key: String,
    expr: String,
    cron: cron::Schedule,
    spec: JobSpec,
}

impl Schedule {
    /// Builds a schedule from its configuration: a cron expression (5 fields, minute first, or
    /// 6–7 fields, second first; UTC), a direction, a mode (the direction's default when
    /// `None`) and `incremental` (default: true for pulls, which is what a recurring pull
    /// wants; pushes are always incremental).
    pub fn new(
        cron_expr: &str,
        direction: &str,
        mode: Option<&str>,
        incremental: Option<bool>,
    ) -> Result<Self, ScheduleError> {
        let spec_err = |source| ScheduleError::Spec {
            expr: cron_expr.trim().to_owned(),
            source,
        };
        let direction: Direction = direction.parse().map_err(spec_err)?;
        let incremental = incremental.unwrap_or(direction == Direction::Pull);
        let spec = JobSpec::new(direction, mode, incremental).map_err(spec_err)?;
        Self::of(cron_expr, spec)
    }

    /// A schedule that enqueues `spec` at every tick of `cron_expr` (as in [`Schedule::new`]).
    pub fn of(cron_expr: &str, spec: JobSpec) -> Result<Self, ScheduleError> {
        let expr = cron_expr.trim().to_owned();
        // The cron crate wants seconds first; a classic 5-field line means second 0.
        let full = if expr.split_whitespace().count() == 5 {
            format!("0 {expr}")
        } else {
            expr.clone()
        };
        let cron = cron::Schedule::from_str(&full).map_err(|e| ScheduleError::Cron {
            expr: expr.clone(),
            reason: e.to_string(),
        })?;
        // Contacts keep the keys they had before jobs named their object, so that their
        // recorded ticks still count.
        let object = match spec.object {
            SyncObject::Contacts => String::new(),
            other => format!("{other}:"),
        };
        let key = format!(
            "{object}{}:{}:{}{}@{}",
            spec.direction(),
            spec.mode_str(),
            if spec.incremental() {
                "incremental"
            } else {
                "full"
            },
            if spec.dry_run { ":dry-run" } else { "" },
            expr
        );
        Ok(Self {
            key,
            expr,
            cron,
            spec,
        })
    }

    /// Builds a schedule from a `[[sync.schedules]]` entry.
    pub fn from_config(config: &crate::config::ScheduleConfig) -> Result<Self, ScheduleError> {
        let contacts = Self::new(
            &config.cron,
            &config.direction,
            config.mode.as_deref(),
            config.incremental,
        )?;
        let spec_err = |source| ScheduleError::Spec {
            expr: contacts.expr.clone(),
            source,
        };
        let object = match config.object.as_deref() {
            None => SyncObject::Contacts,
            Some(name) => name
                .parse()
                .map_err(|_| spec_err(SpecError::UnknownObject(name.to_owned())))?,
        };
        let spec = contacts
            .spec
            .for_object(object)
            .and_then(|s| s.with_dry_run(config.dry_run.unwrap_or(false)))
            .map_err(spec_err)?;
        Self::of(&config.cron, spec)
    }

    /// Every `[[sync.schedules]]` entry of the settings, in order.
    pub fn all_from(settings: &crate::config::Settings) -> Result<Vec<Self>, ScheduleError> {
        settings
            .sync
            .schedules
            .iter()
            .map(Self::from_config)
            .collect()
    }

    /// The key its ticks are recorded under (same in every process with the same config).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The cron expression as configured.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The parsed expression.
    pub fn cron(&self) -> &cron::Schedule {
        &self.cron
    }

    /// The job it enqueues.
    pub fn spec(&self) -> JobSpec {
        self.spec
    }

    /// The next tick after now.
    pub fn next_run(&self) -> Option<DateTime<Utc>> {
        self.cron.upcoming(Utc).next()
    }
}

/// What a tick did in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// This process won the tick and enqueued the job.
    Queued(JobId),
    /// This process won the tick; the active job of its slot made it skip.
    Skipped(JobId),
    /// Another process had already claimed the tick.
    ClaimedElsewhere,
}

/// The cron handler's shared state.
pub(crate) struct TickCtx {
    pub(crate) store: Store,
    pub(crate) schedule: Arc<Schedule>,
}

/// Acts on the tick at `tick_at` (epoch seconds) of `schedule`, once across all processes.
pub async fn fire(store: &Store, schedule: &Schedule, tick_at: i64) -> Result<Fired, QueueError> {
    for _ in 0..5 {
        let mut tx = Tx::begin(store).await?;
        if !tx.claim_schedule_tick(schedule.key(), tick_at).await? {
            tx.rollback().await?;
            return Ok(Fired::ClaimedElsewhere);
        }
        let request = EnqueueRequest {
            spec: schedule.spec(),
            trigger: Trigger::Schedule,
            force: false,
        };
        let Some(enqueued) = queue::enqueue_in(&mut tx, request, Some(schedule.key())).await?
        else {
            tx.rollback().await?;
            continue;
        };
        let (outcome, fired) = if enqueued.created {
            (TickOutcome::Queued, Fired::Queued(enqueued.job.id))
        } else {
            (TickOutcome::Skipped, Fired::Skipped(enqueued.job.id))
        };
        tx.set_schedule_tick_outcome(schedule.key(), tick_at, outcome, enqueued.job.id)
            .await?;
        tx.commit().await?;
        match fired {
            Fired::Skipped(active) => tracing::info!(schedule = schedule.key(), %active,
                "tick skipped: a job of this slot is still active"),
            _ => tracing::info!(schedule = schedule.key(), "tick enqueued a job"),
        }
        return Ok(fired);
    }
    Err(QueueError::Push(format!(
        "schedule {}: the {} {} slot kept changing hands",
        schedule.key(),
        schedule.spec().object,
        schedule.spec().direction()
    )))
}

/// A schedule as `GET /api/schedules` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleView {
    /// The key its ticks are recorded under.
    pub key: String,
    /// The cron expression (UTC).
    pub cron: String,
    /// What its jobs do: object, direction, mode, whether pulls are incremental, dry run.
    #[serde(flatten)]
    pub spec: JobSpec,
    /// The next tick.
    #[serde(with = "crate::jobs::model::rfc3339::option")]
    pub next_run: Option<DateTime<Utc>>,
    /// The last recorded tick: `queued` (with the job) or `skipped` (with the active job).
    pub last_tick: Option<TickRecord>,
}

/// Describes the schedules with their next run and last outcome.
pub async fn describe(
    store: &Store,
    schedules: &[Schedule],
) -> Result<Vec<ScheduleView>, StoreError> {
    let mut views = Vec::with_capacity(schedules.len());
    for s in schedules {
        let last_tick = store.recent_schedule_ticks(s.key(), 1).await?.pop();
        views.push(ScheduleView {
            key: s.key.clone(),
            cron: s.expr.clone(),
            spec: s.spec,
            next_run: s.next_run(),
            last_tick,
        });
    }
    Ok(views)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_five_field_line_means_second_zero_and_pulls_default_to_incremental() {
        let s = Schedule::new("*/15 * * * *", "pull", None, None).unwrap();
        assert!(s.spec().incremental());
        assert_eq!(s.key(), "pull:upsert:incremental@*/15 * * * *");
        let next = s.next_run().unwrap();
        assert_eq!(next.timestamp() % (15 * 60), 0);
    }

    #[test]
    fn contacts_keep_their_keys_and_other_slots_get_their_own() {
        let contacts = Schedule::new("0 * * * *", "push", None, None).unwrap();
        assert_eq!(contacts.key(), "push:link:full@0 * * * *");
        let dry = JobSpec {
            dry_run: true,
            ..JobSpec::push()
        };
        let companies = JobSpec {
            object: SyncObject::Companies,
            ..JobSpec::push()
        };
        assert_eq!(
            Schedule::of("0 * * * *", dry).unwrap().key(),
            "push:link:full:dry-run@0 * * * *"
        );
        assert_eq!(
            Schedule::of("0 * * * *", companies).unwrap().key(),
            "companies:push:link:full@0 * * * *"
        );
    }

    #[test]
    fn bad_expressions_and_modes_are_refused_with_the_reason() {
        assert!(matches!(
            Schedule::new("every tuesday", "push", None, None),
            Err(ScheduleError::Cron { .. })
        ));
        let err = Schedule::new("0 * * * *", "push", Some("verbose"), None).unwrap_err();
        assert!(
            err.to_string().contains("expected \"link\" or \"upsert\""),
            "{err}"
        );
    }
}
