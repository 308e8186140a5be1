//! A dry job's notes, page by page (`dry_run_notes`): what each page learned that a later page,
//! or the plan made at the end, needs, and that the page's rolled-back writes cannot leave in
//! the database. Each page's notes are committed with its checkpoint, so that a dry job stopped
//! and resumed knows what every run of it did.

use crate::jobs::{Progress, RunError, RunFailure};
use crate::store::{Store, Tx};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Saves `notes` as page `page` of the dry job `job`, in `tx` (the page's commit; a page
/// committed again after a crash replaces its notes).
pub(crate) async fn save<T: Serialize>(
    tx: &mut Tx,
    job: &str,
    page: u64,
    notes: &T,
) -> Result<(), RunError> {
    let notes = serde_json::to_string(notes).map_err(|e| {
        RunError::Fatal(RunFailure::caused_by("cannot encode a dry run's notes", e))
    })?;
    let page = i64::try_from(page)
        .map_err(|e| RunError::Fatal(RunFailure::caused_by("too many dry pages", e)))?;
    tx.save_dry_notes(job, page, &notes).await?;
    Ok(())
}

/// Every page's notes the dry job `job` saved, in page order.
pub(crate) async fn saved<T: DeserializeOwned>(
    store: &Store,
    job: &str,
) -> Result<Vec<T>, RunError> {
    let mut pages = Vec::new();
    for raw in store.dry_notes(job).await? {
        pages.push(serde_json::from_str(&raw).map_err(|e| {
            RunError::Fatal(RunFailure::caused_by("cannot read a dry run's notes", e))
        })?);
    }
    Ok(pages)
}

/// The last page the dry job `job` saved notes for (0: none): a resumed run numbers its pages
/// on from there.
pub(crate) async fn last_page(store: &Store, job: &str) -> Result<u64, RunError> {
    let last = store.last_dry_page(job).await?;
    Ok(last.and_then(|p| u64::try_from(p).ok()).unwrap_or(0))
}

/// Forgets the notes of the dry job `job` in `tx` (the transaction that completes its plan).
pub(crate) async fn forget(tx: &mut Tx, job: &str) -> Result<(), RunError> {
    tx.forget_dry_notes(job).await?;
    Ok(())
}

/// Where a dry push's pages of notes stand: how many its runs have saved, so that the next page
/// is numbered on from the last (a resumed run's too).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Journal {
    last: u64,
}

impl Journal {
    /// The journal of the dry job `progress` runs, with the notes of every page its earlier
    /// runs saved, in page order.
    pub(crate) async fn open<T: DeserializeOwned>(
        progress: &Progress,
    ) -> Result<(Self, Vec<T>), RunError> {
        let job = progress.job_id().to_string();
        let pages = saved(progress.store(), &job).await?;
        let last = last_page(progress.store(), &job).await?;
        Ok((Self { last }, pages))
    }

    /// Whether no run of the job has saved a page yet.
    pub(crate) fn is_empty(self) -> bool {
        self.last == 0
    }

    /// Saves `notes` as the next page of the job `progress` runs, in `tx` (the page's commit).
    pub(crate) async fn append<T: Serialize>(
        &mut self,
        tx: &mut Tx,
        progress: &Progress,
        notes: &T,
    ) -> Result<(), RunError> {
        self.last += 1;
        save(tx, &progress.job_id().to_string(), self.last, notes).await
    }
}
