//! The webhook pull: a pull job with trigger `webhook` reads exactly the HubSpot records that
//! webhooks named (table `webhook_pulls`, see [`crate::webhooks::take_pending_pulls`]) by id,
//! never a list or a search.
//!
//! It drains the table: it takes up to 100 pending ids (oldest request first), reads them
//! with one batch read, and writes them like a page of any pull (same matching, same counts);
//! the same transaction clears the ids it read and commits the job's counts, so a crash loses
//! nothing and counts nothing twice (the ids are still pending, and read again, until the
//! page that read them commits). It goes on until nothing is pending, so ids recorded while it
//! runs are read by it too.
//!
//! Ids HubSpot reports missing were deleted since the webhook (or merged away without a
//! survivor in the answer): like a `contact.deletion`, the local row linked to one is
//! unlinked; they are not HubSpot contacts read, so they are not in `counts` (a log line at
//! info names them). Ids HubSpot refuses to read are failed records with a reason, and are
//! cleared too (reading them again would fail again).
//!
//! The job has no checkpoint: the table is its cursor.

use super::SyncContext;
use super::hubspot_error;
use super::pull::{add_counts, read_ids, write_error};
use crate::hubspot::{Batch, MAX_BATCH};
use crate::jobs::model::{Counts, Job, JobSpec};
use crate::jobs::{Page, Progress, RunError};
use crate::webhooks::{clear_pulled, count_pending_pulls, take_pending_pulls};

/// Runs a webhook pull job until no record is pending.
pub async fn run(ctx: &SyncContext, job: &Job, progress: &Progress) -> Result<(), RunError> {
    let JobSpec::Pull { mode, .. } = job.spec else {
        return Err(RunError::Fatal(format!(
            "the webhook pull was given a {} job",
            job.direction()
        )));
    };
    let Counts::Pull(mut counts) = progress.counts() else {
        return Err(RunError::Fatal("a pull job carries push counts".to_owned()));
    };
    let store = progress.store();
    let mut announced = None;
    loop {
        if progress.should_stop() {
            return Err(RunError::Interrupted);
        }
        // The bar: what was read plus what is still pending (webhooks may add to it).
        let total = counts.total + count_pending_pulls(store).await?;
        if announced != Some(total) {
            progress.set_total(total).await?;
            announced = Some(total);
        }
        let taken = take_pending_pulls(store, MAX_BATCH as u32).await?;
        if taken.is_empty() {
            tracing::info!(job = %job.id, ?counts, "webhook pull done: nothing left pending");
            return Ok(());
        }
        let batch = Batch::new(taken.iter().map(|p| p.hs_object_id.0.clone()).collect())
            .map_err(|e| RunError::Fatal(e.to_string()))?;
        let read = read_ids(&ctx.hubspot, &batch)
            .await
            .map_err(|e| hubspot_error("reading the contacts webhooks named", e))?;
        let mut tx = progress.begin().await?;
        let written = tx
            .write_pull_page(mode, &read.pulled)
            .await
            .map_err(write_error)?;
        let unlinked = tx.unlink_hs_objects(&read.missing).await?;
        if !read.missing.is_empty() {
            tracing::info!(
                job = %job.id,
                missing = ?read.missing,
                unlinked = ?unlinked,
                "HubSpot no longer has records a webhook named; local rows linked to them are unlinked"
            );
        }
        clear_pulled(&mut tx, &taken).await?;
        counts = add_counts(add_counts(counts, read.counts), written.counts);
        let mut errors = read.errors;
        errors.extend(written.errors);
        progress
            .commit(
                tx,
                Page {
                    counts: Counts::Pull(counts),
                    checkpoint: serde_json::Value::Null,
                    errors,
                },
            )
            .await?;
    }
}
