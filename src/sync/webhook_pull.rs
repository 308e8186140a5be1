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
use super::pull::{add_counts, page_error, read_ids, write_page};
use crate::hubspot::MAX_BATCH;
use crate::ids::HsObjectId;
use crate::jobs::model::{Counts, Job, JobSpec};
use crate::jobs::{Page, Progress, RunError};
use crate::store::TombstoneReason;
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
        let ids: Vec<HsObjectId> = taken.iter().map(|p| p.hs_object_id.clone()).collect();
        let read = read_ids(&ctx.hubspot, &ids)
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
