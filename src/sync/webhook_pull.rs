//! The webhook pull: a pull job with trigger `webhook` reads exactly the HubSpot records that
//! webhooks named (table `webhook_pulls`, see [`crate::webhooks::take_pending_pulls`]) by id,
//! never a list or a search.
//!
//! It drains the table: it claims up to 100 pending ids (oldest request first; one atomic
//! claim, so no id is read by two runs), reads them with one batch read, and writes them like a
//! page of any pull (same matching, same counts); the same transaction clears the ids it read
//! and commits the job's counts, so a crash loses nothing and counts nothing twice (the ids are
//! still pending, and read again, until the page that read them commits). It stops when
//! nothing is pending or after [`MAX_BATCHES`] batch reads: a steady stream of webhooks never
//! holds the drain forever, and the worker queues the next drain in the transaction that ends
//! this one when ids are still pending (`jobs::worker`). One webhook pull is active at a time
//! (the database enforces it).
//!
//! HubSpot's answers are taken as it really gives them (see `sync::lookup`): an id it reports
//! not found (or finds archived) was deleted since the webhook: like a `contact.deletion`, the
//! local row linked to it is unlinked; such ids are not HubSpot contacts read, so they are not
//! in `counts` (a log line at info names them). An id merely left out of the batch read's
//! results, with no error naming it, is not taken for deleted: it is read once more on its own,
//! and a 404 unlinks, a record under another id is the survivor of a merge (written, with the
//! row linked to the id following it, as after a `contact.merge`), the same id is written as
//! any. A batch HubSpot refuses whole (one malformed id) is halved until the refused id is
//! alone; that id, and any id HubSpot refuses to read, is a failed record with a reason,
//! cleared too (reading it again would fail again), and never holds up the others.
//!
//! The job has no checkpoint: the table is its cursor.

use super::SyncContext;
use super::hubspot_error;
use super::keys::ExternalKeys;
use super::pull::{add_counts, page_error, read_ids, write_page};
use crate::hubspot::MAX_BATCH;
use crate::ids::HsObjectId;
use crate::jobs::model::{Counts, Job, JobAction};
use crate::jobs::{Page, Progress, RunError};
use crate::store::TombstoneReason;

/// The most batch reads one webhook pull makes before it hands over to its successor.
pub const MAX_BATCHES: usize = 20;

/// Runs a webhook pull job until no record is pending, or [`MAX_BATCHES`] batch reads.
pub async fn run(ctx: &SyncContext, job: &Job, progress: &Progress) -> Result<(), RunError> {
    let JobAction::Pull { mode, .. } = job.spec.action else {
        return Err(RunError::fatal(format!(
            "the webhook pull was given a {} job",
            job.direction()
        )));
    };
    let Counts::Pull(mut counts) = progress.counts() else {
        return Err(RunError::fatal("a pull job carries push counts"));
    };
    let store = progress.store();
    let keys = ExternalKeys::new(&store.installation().await?);
    let mut announced = None;
    for _ in 0..MAX_BATCHES {
        if progress.should_stop() {
            return Err(RunError::Interrupted);
        }
        // The bar: what was read plus what is still pending (webhooks may add to it).
        let total = counts.total + store.count_pending_pulls().await?;
        if announced != Some(total) {
            progress.set_total(total).await?;
            announced = Some(total);
        }
        leave_budget_to_others(ctx, progress).await?;
        let taken = store
            .claim_pending_pulls(job.id, progress.lease(), MAX_BATCH as u32)
            .await?;
        if taken.is_empty() {
            tracing::info!(job = %job.id, ?counts, "webhook pull done: nothing left pending");
            return Ok(());
        }
        let ids: Vec<HsObjectId> = taken.iter().map(|p| p.hs_object_id.clone()).collect();
        let read = read_ids(&ctx.hubspot, &ids, &keys)
            .await
            .map_err(|e| hubspot_error("reading the contacts webhooks named", e))?;
        let (mut tx, written) = write_page(&ctx.hubspot, store, mode, &read.pulled)
            .await
            .map_err(page_error)?;
        let unlinked = tx
            .tombstone_hs_objects(&read.missing, TombstoneReason::Deleted)
            .await?;
        if !read.missing.is_empty() {
            tracing::info!(
                job = %job.id,
                missing = ?read.missing,
                unlinked = ?unlinked,
                "HubSpot no longer has records a webhook named; local rows linked to them are tombstoned"
            );
        }
        tx.clear_pulled(&taken).await?;
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
    tracing::info!(job = %job.id, ?counts, batches = MAX_BATCHES, "webhook pull done: the next one reads the rest");
    Ok(())
}

/// How often a webhook pull looks again whether the rate budget has room.
const BUDGET_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Waits until the rate budget has room for background reads: not while a push or pull of
/// this process runs, and only with half of the 10-second budget free (a job of another
/// process shows in HubSpot's rate-limit headers). The user's job keeps the pace the limit
/// allows for its own calls; the drain reads right after it. The ids wait in the table
/// meanwhile; nothing is claimed yet.
async fn leave_budget_to_others(ctx: &SyncContext, progress: &Progress) -> Result<(), RunError> {
    while !ctx.hubspot.has_spare_budget() {
        if progress.should_stop() {
            return Err(RunError::Interrupted);
        }
        tokio::time::sleep(BUDGET_POLL).await;
    }
    Ok(())
}
