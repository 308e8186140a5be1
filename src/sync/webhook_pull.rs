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
//! Besides contacts, the table names companies (created, changed or restored by others) and
//! contacts whose company associations changed. A company is read by id in a batch of up to
//! 100 and applied with the company pull's matching (`sync::companies::pull::apply`); a
//! contact's associations are read with the v4 batch read, up to 1,000 a call, and applied with
//! the full pull's rules (`sync::associations`). Each batch commits with the clearing of what
//! it read, like a contacts batch.
//!
//! The job has no checkpoint: the table is its cursor.

use super::SyncContext;
use super::associations;
use super::companies::pull::{Applied, apply as apply_companies, read_stale_links};
use super::companies::{company_error, read_properties};
use super::hubspot_error;
use super::keys::ExternalKeys;
use super::mapped::{self, Mapped};
use super::pull::{add_counts, page_error, read_ids, write_page};
use crate::hubspot::{Batch, Company, MAX_ASSOCIATION_READ, MAX_BATCH};
use crate::ids::{CompanyId, HsObjectId};
use crate::jobs::model::{Counts, Job, JobAction, PullCounts, PullMode, SyncObject};
use crate::jobs::{Page, Progress, RunError, RunFailure};
use crate::store::{PendingObject, PendingPull, TombstoneReason, Tx};

/// The most batch reads one webhook pull makes before it hands over to its successor.
pub const MAX_BATCHES: usize = 20;

/// One webhook pull's run: what every batch needs.
struct Drain<'a> {
    ctx: &'a SyncContext,
    job: &'a Job,
    progress: &'a Progress,
    keys: ExternalKeys,
    mode: PullMode,
    /// The mappings to users' own tables, whose batches their engine writes.
    mapped_contacts: Option<Mapped>,
    mapped_companies: Option<Mapped>,
}

/// Runs a webhook pull job until nothing is pending, or [`MAX_BATCHES`] batch reads.
///
/// Each batch reads one kind of pending record, in dependency order: companies first (a
/// contact's association may name one), then contacts, then contacts' associations (the
/// contacts they concern are linked by then).
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
    let drain = Drain {
        ctx,
        job,
        progress,
        keys: ExternalKeys::new(&store.installation().await?),
        mode,
        mapped_contacts: mapped::prepare_user(ctx, store, SyncObject::Contacts).await?,
        mapped_companies: mapped::prepare_user(ctx, store, SyncObject::Companies).await?,
    };
    let mut announced = None;
    for _ in 0..MAX_BATCHES {
        if progress.should_stop() {
            return Err(RunError::Interrupted);
        }
        // The bar: what was read plus the records still pending (webhooks may add to them);
        // association reads are not records read, so not in `total`.
        let total = counts.total
            + store.count_pending(PendingObject::Contact).await?
            + store.count_pending(PendingObject::Company).await?;
        if announced != Some(total) {
            progress.set_total(total).await?;
            announced = Some(total);
        }
        leave_budget_to_others(ctx, progress).await?;
        let Some(next) = drain.next_batch(counts).await? else {
            tracing::info!(job = %job.id, ?counts, "webhook pull done: nothing left pending");
            return Ok(());
        };
        counts = next;
    }
    tracing::info!(job = %job.id, ?counts, batches = MAX_BATCHES, "webhook pull done: the next one reads the rest");
    Ok(())
}

impl Drain<'_> {
    /// Claims and reads one batch of the first kind that has any pending; returns the
    /// counts after it, or `None` when nothing is pending.
    async fn next_batch(&self, counts: PullCounts) -> Result<Option<PullCounts>, RunError> {
        for object in [
            PendingObject::Company,
            PendingObject::Contact,
            PendingObject::ContactAssociations,
        ] {
            let limit = match object {
                PendingObject::ContactAssociations => MAX_ASSOCIATION_READ,
                PendingObject::Contact | PendingObject::Company => MAX_BATCH,
            };
            let taken = self
                .progress
                .store()
                .claim_pending(object, self.job.id, self.progress.lease(), limit as u32)
                .await?;
            if taken.is_empty() {
                continue;
            }
            let counts = match object {
                PendingObject::Company => self.companies(&taken, counts).await?,
                PendingObject::Contact => self.contacts(&taken, counts).await?,
                PendingObject::ContactAssociations => self.associations(&taken, counts).await?,
            };
            return Ok(Some(counts));
        }
        Ok(None)
    }

    /// Commits a batch's writes with the job's counts and clears what it read.
    async fn commit(
        &self,
        mut tx: Tx,
        object: PendingObject,
        taken: &[PendingPull],
        counts: PullCounts,
        errors: Vec<crate::jobs::model::RecordError>,
    ) -> Result<(), RunError> {
        tx.clear_read(object, taken).await?;
        self.progress
            .commit(
                tx,
                Page {
                    counts: Counts::Pull(counts),
                    checkpoint: serde_json::Value::Null,
                    errors,
                },
            )
            .await?;
        Ok(())
    }

    /// Reads the contacts webhooks named with one batch read and writes them like a pull page.
    async fn contacts(
        &self,
        taken: &[PendingPull],
        counts: PullCounts,
    ) -> Result<PullCounts, RunError> {
        if let Some(mapped) = &self.mapped_contacts {
            return mapped::pull::webhook_batch(
                self.ctx,
                mapped,
                self.progress,
                taken,
                PendingObject::Contact,
                counts,
            )
            .await;
        }
        let ids: Vec<HsObjectId> = taken.iter().map(|p| p.hs_object_id.clone()).collect();
        let read = read_ids(&self.ctx.hubspot, &ids, &self.keys)
            .await
            .map_err(|e| hubspot_error("reading the contacts webhooks named", e))?;
        let store = self.progress.store();
        let (mut tx, written) = write_page(&self.ctx.hubspot, store, self.mode, &read.pulled)
            .await
            .map_err(page_error)?;
        let unlinked = tx
            .tombstone_hs_objects(&read.missing, TombstoneReason::Deleted)
            .await?;
        if !read.missing.is_empty() {
            tracing::info!(
                job = %self.job.id,
                missing = ?read.missing,
                unlinked = ?unlinked,
                "HubSpot no longer has records a webhook named; local rows linked to them are tombstoned"
            );
        }
        let counts = add_counts(add_counts(counts, read.counts), written.counts);
        let mut errors = read.errors;
        errors.extend(written.errors);
        self.commit(tx, PendingObject::Contact, taken, counts, errors)
            .await?;
        Ok(counts)
    }

    /// Reads the companies webhooks named with one batch read and applies them with the
    /// company pull's matching (linked, created or unchanged, never duplicated); a company
    /// HubSpot no longer has tombstones the local company linked to it, as a
    /// `company.deletion` does.
    async fn companies(
        &self,
        taken: &[PendingPull],
        counts: PullCounts,
    ) -> Result<PullCounts, RunError> {
        if let Some(mapped) = &self.mapped_companies {
            return mapped::pull::webhook_batch(
                self.ctx,
                mapped,
                self.progress,
                taken,
                PendingObject::Company,
                counts,
            )
            .await;
        }
        let ids: Vec<String> = taken.iter().map(|p| p.hs_object_id.0.clone()).collect();
        let batch = Batch::new(ids)
            .map_err(|e| RunError::Fatal(RunFailure::caused_by("company batch too large", e)))?;
        let read = self
            .ctx
            .hubspot
            .batch_read_companies(&batch, None, &read_properties())
            .await
            .map_err(|e| company_error("reading the companies webhooks named", e))?;
        let (live, archived): (Vec<Company>, Vec<Company>) =
            read.results.into_iter().partition(|c| !c.archived);
        let gone: Vec<CompanyId> = read
            .missing
            .into_iter()
            .map(CompanyId)
            .chain(archived.into_iter().map(|c| c.id))
            .collect();
        // What the matching needs from HubSpot, read before the transaction opens.
        let stale =
            read_stale_links(&self.ctx.hubspot, &self.keys, self.progress.store(), &live).await?;
        let mut tx = self.progress.begin().await?;
        let unlinked = tx
            .tombstone_companies(&gone, TombstoneReason::Deleted)
            .await?;
        if !gone.is_empty() {
            tracing::info!(
                job = %self.job.id,
                missing = ?gone,
                unlinked = ?unlinked,
                "HubSpot no longer has companies a webhook named; local companies linked to them are tombstoned"
            );
        }
        let Applied { counts, errors, .. } =
            apply_companies(&self.keys, &mut tx, &live, counts, &stale).await?;
        self.commit(tx, PendingObject::Company, taken, counts, errors)
            .await?;
        Ok(counts)
    }

    /// Reads the company associations of the contacts association webhooks named (one call
    /// per 1,000) and applies them with the full pull's rules.
    async fn associations(
        &self,
        taken: &[PendingPull],
        mut counts: PullCounts,
    ) -> Result<PullCounts, RunError> {
        if let Some(mapped) = &self.mapped_contacts {
            // The contacts live in a table of your own: its `company_column`, if any.
            return mapped::associations::webhook_batch(
                &self.ctx.hubspot,
                mapped,
                self.progress,
                taken,
                counts,
            )
            .await;
        }
        let ids: Vec<HsObjectId> = taken.iter().map(|p| p.hs_object_id.clone()).collect();
        let read = associations::read_for(
            &self.ctx.hubspot,
            &self.keys,
            self.progress.store(),
            ids,
            associations::Unlinked::Skip,
        )
        .await?;
        let mut tx = self.progress.begin().await?;
        let errors = associations::apply_read(&self.keys, &mut tx, &read, &mut counts).await?;
        self.commit(
            tx,
            PendingObject::ContactAssociations,
            taken,
            counts,
            errors,
        )
        .await?;
        Ok(counts)
    }
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
