//! Recurring jobs from `[[sync.schedules]]`, fired by apalis-cron.
//!
//! Every `serve` and `worker` process runs every schedule, and apalis-cron does not coordinate
//! them: each process sees each tick. The tick is therefore claimed in the database
//! (`schedule_ticks`, keyed by schedule and tick time): one process wins and acts, in the same
//! transaction — it enqueues a job with trigger `schedule`, or records the tick `skipped` when a
//! job of that direction is still queued or running.

use crate::ids::JobId;
use crate::jobs::model::{Direction, JobSpec, SpecError, Trigger};
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
        let expr = cron_expr.trim().to_owned();
        let spec_err = |source| ScheduleError::Spec {
            expr: expr.clone(),
            source,
        };
        let direction: Direction = direction.parse().map_err(spec_err)?;
        let incremental = incremental.unwrap_or(direction == Direction::Pull);
        let spec = JobSpec::new(direction, mode, incremental).map_err(spec_err)?;
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
        let key = format!(
            "{}:{}:{}@{}",
            spec.direction(),
            spec.mode_str(),
            if spec.incremental() {
                "incremental"
            } else {
                "full"
            },
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
        Self::new(
            &config.cron,
            &config.direction,
            config.mode.as_deref(),
            config.incremental,
        )
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
    /// This process won the tick; the direction's active job made it skip.
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
                "tick skipped: a job of this direction is still active"),
            _ => tracing::info!(schedule = schedule.key(), "tick enqueued a job"),
        }
        return Ok(fired);
    }
    Err(QueueError::Push(format!(
        "schedule {}: the {} slot kept changing hands",
        schedule.key(),
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
    /// What its jobs do: direction, mode and whether pulls are incremental.
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
