//! What the operator's console (`GET /`) reads: the contacts at a glance, the user's own recent
//! jobs apart from webhook pulls, and the webhook pulls of a recent window summed up.
//!
//! Each is one set-based statement, cheap enough for a page that refreshes every few seconds:
//! the contact figures are one pass over `contacts` (about 10 ms per 100,000 rows), the job
//! lists read the newest rows through the primary key.

use chrono::{DateTime, Utc};

use super::jobs::{COLUMNS, JobRow, record};
use super::time::DbTime;
use super::{Store, StoreError, on_pool};
use crate::jobs::model::{Counts, Job};

/// The local contacts as the console shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct ContactOverview {
    /// Every local row, tombstoned ones included.
    pub total: i64,
    /// Rows linked to a live HubSpot contact (`hs_object_id` set, no tombstone).
    pub linked: i64,
    /// Rows a push would create or link: no `hs_object_id`, no tombstone.
    pub not_pushed: i64,
    /// Linked rows changed locally since the push that last sent them.
    pub changed: i64,
    /// Rows whose HubSpot contact was deleted (never pushed again until restored).
    pub tombstoned: i64,
}

/// The webhook pulls of a window, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookPullSummary {
    /// How many webhook pulls were created in the window.
    pub runs: u64,
    /// HubSpot contacts they read.
    pub read: u64,
    /// Records they failed.
    pub failed: u64,
    /// When the newest of them was created.
    pub newest_at: Option<DateTime<Utc>>,
}

/// The sums both overviews share (the two tables track links, changes and tombstones alike).
macro_rules! overview_sums {
    () => {
        "SELECT CAST(COUNT(*) AS BIGINT) AS total,
       CAST(COALESCE(SUM(CASE WHEN hubspot_deleted_at IS NULL AND hs_object_id IS NOT NULL
                              THEN 1 ELSE 0 END), 0) AS BIGINT) AS linked,
       CAST(COALESCE(SUM(CASE WHEN hubspot_deleted_at IS NULL AND hs_object_id IS NULL
                              THEN 1 ELSE 0 END), 0) AS BIGINT) AS not_pushed,
       CAST(COALESCE(SUM(CASE WHEN hubspot_deleted_at IS NULL AND hs_object_id IS NOT NULL
                               AND local_version > pushed_version
                              THEN 1 ELSE 0 END), 0) AS BIGINT) AS changed,
       CAST(COALESCE(SUM(CASE WHEN hubspot_deleted_at IS NOT NULL
                              THEN 1 ELSE 0 END), 0) AS BIGINT) AS tombstoned"
    };
}

/// One pass over `contacts`; `CAST` keeps the sums `BIGINT` on PostgreSQL (SQLite's are
/// integers already). `companies` has the same tracking columns ([`COMPANY_OVERVIEW`]).
const OVERVIEW: &str = concat!(overview_sums!(), " FROM contacts");

/// The same figures over crm-sync's own `companies`.
const COMPANY_OVERVIEW: &str = concat!(overview_sums!(), " FROM companies");

/// The most webhook pulls a summary reads; a window with more is summed over its newest ones.
const WEBHOOK_SUMMARY_CAP: i64 = 10_000;

impl Store {
    /// The contacts at a glance.
    pub async fn contact_overview(&self) -> Result<ContactOverview, StoreError> {
        let overview = on_pool!(self, pool => {
            sqlx::query_as::<_, ContactOverview>(OVERVIEW).fetch_one(pool).await?
        });
        Ok(overview)
    }

    /// crm-sync's own companies at a glance (the same figures as [`Self::contact_overview`]).
    pub async fn company_overview(&self) -> Result<ContactOverview, StoreError> {
        let overview = on_pool!(self, pool => {
            sqlx::query_as::<_, ContactOverview>(COMPANY_OVERVIEW).fetch_one(pool).await?
        });
        Ok(overview)
    }

    /// The newest `limit` jobs that a webhook did not start (the user's, the schedules' and
    /// the CLI's), newest first.
    pub async fn recent_jobs_without_webhooks(&self, limit: u32) -> Result<Vec<Job>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sync_jobs WHERE triggered_by <> 'webhook' \
             ORDER BY id DESC LIMIT $1"
        );
        let rows: Vec<JobRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(|r| record(r).map(|r| r.job)).collect()
    }

    /// The webhook pulls created since `since`, summed, and the active one if any.
    pub async fn webhook_pulls_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<(WebhookPullSummary, Option<Job>), StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM sync_jobs WHERE triggered_by = 'webhook' AND created_at >= $1 \
             ORDER BY id DESC LIMIT $2"
        );
        let rows: Vec<JobRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(DbTime(since))
                .bind(WEBHOOK_SUMMARY_CAP)
                .fetch_all(pool)
                .await?
        });
        let mut summary = WebhookPullSummary::default();
        let mut active = None;
        for row in rows {
            let job = record(row)?.job;
            summary.runs += 1;
            summary.newest_at = summary.newest_at.max(Some(job.created_at));
            if let Counts::Pull(c) = job.counts {
                summary.read += c.total;
                summary.failed += c.failed;
            }
            if job.status.is_active() && active.is_none() {
                active = Some(job);
            }
        }
        Ok((summary, active))
    }
}
