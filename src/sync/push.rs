//! The push engine: local contacts → HubSpot, page by page, each page committed with its
//! checkpoint in one transaction.
//!
//! # A run
//!
//! 1. Resume after the checkpoint (the group and last contact id of the last committed page),
//!    count the candidates left and report the total.
//! 2. Read candidates in keyset pages of 100 (`id > cursor`): first the contacts with an email,
//!    then those without, so that each page holds one kind (an upsert page is then one call,
//!    not two). Each page is resolved against HubSpot in a task of its own (see [`resolve`]);
//!    up to `pages_in_flight` pages are with HubSpot at once, so the database and HubSpot work
//!    side by side and a rate-limited client always has the next request waiting.
//! 3. Pages are committed strictly in order: the page's rows (`hs_object_id`, `pushed_version`),
//!    its counts, its failed records and the new checkpoint in one transaction. A page that
//!    never committed is resolved again by the next run; every HubSpot write it made is then
//!    found again (by email or external key), never made twice.
//!
//! # HubSpot calls per 100 contacts
//!
//! | page | link mode | upsert mode |
//! |---|---|---|
//! | new contacts, no existing one met recently | 1 (create) | 1 (upsert) |
//! | new contacts after existing ones turned up | 2 (read by email, create) | 1 |
//! | contacts that all exist in HubSpot | 1 (read by email) | 1 (upsert) |
//! | contacts without email | 1 (create by external key) | 1 (upsert by external key) |
//! | linked contacts changed locally | 1 (update) | 1 (update) |
//! | nothing changed | 0 | 0 |
//!
//! A page mixing linked-and-changed with unlinked contacts adds their calls.
//! A job adds one property read (plus one create, the very first time) before its first write.
//! A page with unlinked rows old enough to have been pushed with a bare key by an earlier
//! version adds one read by those keys ([`crate::sync::keys`]).
//! Refusals and lost answers add reads and smaller batches, never a second contact.
//!
//! Failed records are counted and listed in the job's errors, and are not marked pushed: they
//! stay candidates for the next job, while the cursor of this one moves past them.

mod errors;
mod external_key;
mod outcome;
mod resolve;

pub use outcome::EXTERNAL_KEY;

use crate::hubspot::{HubSpotClient, MAX_BATCH};
use crate::ids::{ContactId, HsObjectId};
use crate::jobs::model::{
    Counts, Job, JobAction, PlannedKind, PushCounts, PushMode, PushOutcome, RecordError,
};
use crate::jobs::{BoxFuture, JobRunner, Page, Progress, RunError, RunFailure};
use crate::store::TombstoneReason;
use crate::store::jobs::Tx;
use crate::store::push::{CandidateGroup, LinkClash, PushCandidate, PushedRow};
use crate::sync::associations::{AssociationPush, PlannedContacts, resume_after};
use crate::sync::keys::ExternalKeys;
use errors::from_store;
use outcome::Resolution;
use resolve::{PlannedPage, ResolvedPage, RunContext, plan_page, resolve_page};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// How the push engine works; [`PushConfig::default`] is what the service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushConfig {
    /// Candidates per page and per HubSpot batch (1..=100).
    pub page_size: u32,
    /// Pages with HubSpot at once (at least 1). Commits stay in page order.
    pub pages_in_flight: usize,
    /// Lost create answers in a row after which a page gives up with a transient error.
    pub max_lost_answers: u32,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            page_size: 100,
            pages_in_flight: 4,
            max_lost_answers: 8,
        }
    }
}

/// Runs push jobs. `crate::sync`'s runner hands it the push jobs; on its own (in tests and
/// tools) it is a [`JobRunner`] that refuses pulls.
#[derive(Debug, Clone)]
pub struct Pusher {
    client: HubSpotClient,
    config: PushConfig,
}

/// Where a push resumes: after this contact id of this group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    group: CandidateGroup,
    after: ContactId,
}

impl Checkpoint {
    /// Before the first candidate.
    const START: Checkpoint = Checkpoint {
        group: CandidateGroup::WithEmail,
        after: ContactId(i64::MIN),
    };
}

impl Pusher {
    /// A push engine calling HubSpot through `client`.
    pub fn new(client: HubSpotClient, config: PushConfig) -> Self {
        let config = PushConfig {
            page_size: config.page_size.clamp(1, MAX_BATCH as u32),
            pages_in_flight: config.pages_in_flight.max(1),
            ..config
        };
        Self { client, config }
    }

    /// The HubSpot client it calls (its metrics count the calls).
    pub fn client(&self) -> &HubSpotClient {
        &self.client
    }

    /// Runs one push job in `mode`, from its checkpoint (see the module docs).
    pub async fn run(&self, mode: PushMode, progress: &Progress) -> Result<(), RunError> {
        self.run_as(mode, false, progress).await
    }

    /// Runs one dry-run push job in `mode`: the same candidates and the same reads as
    /// [`Pusher::run`], and no write — neither to HubSpot (the external key property included)
    /// nor to the local rows; each page commits only the job's counts and plan.
    pub async fn run_dry(&self, mode: PushMode, progress: &Progress) -> Result<(), RunError> {
        self.run_as(mode, true, progress).await
    }

    async fn run_as(
        &self,
        mode: PushMode,
        dry_run: bool,
        progress: &Progress,
    ) -> Result<(), RunError> {
        let Counts::Push(counts) = progress.counts() else {
            return Err(RunError::fatal("a push job holds pull counts"));
        };
        let start = progress
            .checkpoint_as::<Checkpoint>()?
            .unwrap_or(Checkpoint::START);
        if dry_run {
            // The contacts, then the associations as the real run writes them: the companies
            // it would link and the contacts it would link or create included, nothing written.
            let (counts, planned) = self
                .push_contacts(mode, dry_run, progress, counts, start)
                .await?;
            let associations = AssociationPush {
                client: &self.client,
                progress,
                mode,
            };
            let counts = associations.run_dry(counts, &planned).await?;
            tracing::info!(job = %progress.job_id(), ?mode, ?counts, "dry-run push finished");
            return Ok(());
        }
        // Companies first: an association needs its company's HubSpot id.
        let associations = AssociationPush {
            client: &self.client,
            progress,
            mode,
        };
        let company_reasons = associations.link_companies().await?;
        let counts = if resume_after(progress).is_some() {
            // The contacts were pushed before the run that wrote associations stopped.
            counts
        } else {
            self.push_contacts(mode, dry_run, progress, counts, start)
                .await?
                .0
        };
        let base = progress
            .checkpoint()
            .or_else(|| serde_json::to_value(Checkpoint::START).ok());
        let counts = associations.run(counts, &company_reasons, base).await?;
        tracing::info!(job = %progress.job_id(), ?mode, ?counts, "push finished");
        Ok(())
    }

    /// The contact phase: every candidate after `start`, page by page; with the counts, what a
    /// dry run would do to the contacts its association phase meets.
    async fn push_contacts(
        &self,
        mode: PushMode,
        dry_run: bool,
        progress: &Progress,
        counts: PushCounts,
        start: Checkpoint,
    ) -> Result<(PushCounts, PlannedContacts), RunError> {
        let left = progress
            .store()
            .count_push_candidates(start.group, start.after)
            .await
            .map_err(from_store)?;
        progress.set_total(counts.total + left).await?;
        if left == 0 {
            return Ok((counts, PlannedContacts::default()));
        }
        let installation = progress.store().installation().await.map_err(from_store)?;
        let ctx = Arc::new(RunContext::new(
            self.client.clone(),
            mode,
            self.config.max_lost_answers,
            ExternalKeys::new(&installation),
            dry_run,
        ));
        let mut pipeline = Pipeline {
            ctx,
            progress,
            config: self.config,
            counts,
            cursor: Some(start),
            in_flight: VecDeque::new(),
            planned: PlannedContacts::default(),
        };
        pipeline.run().await?;
        let total = pipeline.counts.total;
        if total != counts.total + left {
            // Contacts added or changed while the job ran: let the progress end at 100 %.
            progress.set_total(total).await?;
        }
        Ok((pipeline.counts, pipeline.planned))
    }
}

impl JobRunner for Pusher {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), RunError>> {
        Box::pin(async move {
            match job.spec.action {
                JobAction::Push { mode } if job.spec.dry_run => {
                    Pusher::run_dry(self, mode, progress).await
                }
                JobAction::Push { mode } => Pusher::run(self, mode, progress).await,
                JobAction::Pull { .. } => {
                    Err(RunError::fatal("the push engine was handed a pull job"))
                }
            }
        })
    }
}

/// A page with HubSpot, in its own task, and the checkpoint its commit saves. Dropping it (the
/// run failed, or was itself dropped like a killed worker) stops the task, whose work the next
/// run redoes safely.
struct PageTask {
    task: JoinHandle<Result<PageWork, RunError>>,
    checkpoint: Checkpoint,
}

/// What a page task hands back: a page resolved against HubSpot, or a dry run's plan of it.
enum PageWork {
    Resolved(ResolvedPage),
    Planned(PlannedPage),
}

impl Drop for PageTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The run's state: the read cursor, the pages in flight (oldest first), the committed counts.
struct Pipeline<'a> {
    ctx: Arc<RunContext>,
    progress: &'a Progress,
    config: PushConfig,
    counts: PushCounts,
    /// Where the next page starts; `None` once every group was read to its end.
    cursor: Option<Checkpoint>,
    in_flight: VecDeque<PageTask>,
    /// What a dry run would do to the contacts its association phase meets.
    planned: PlannedContacts,
}

impl Pipeline<'_> {
    async fn run(&mut self) -> Result<(), RunError> {
        let mut stopping = false;
        loop {
            while !stopping
                && self.cursor.is_some()
                && self.in_flight.len() < self.config.pages_in_flight
            {
                if self.progress.should_stop() {
                    stopping = true;
                } else {
                    self.start_next_page().await?;
                }
            }
            let Some(mut task) = self.in_flight.pop_front() else {
                break;
            };
            let page = match (&mut task.task).await {
                Ok(page) => page?,
                Err(e) if e.is_panic() => {
                    return Err(RunError::fatal(format!("a push page panicked: {e}")));
                }
                Err(_) => return Err(RunError::Interrupted),
            };
            match page {
                PageWork::Resolved(page) => self.commit(page, task.checkpoint).await?,
                PageWork::Planned(page) => self.commit_planned(page, task.checkpoint).await?,
            }
            // Pages already with HubSpot are still committed, so that their work is kept.
            stopping = stopping || self.progress.should_stop();
        }
        if stopping {
            Err(RunError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Reads the next page of candidates and hands it to HubSpot (or, at the end of a group,
    /// moves the cursor to the next group).
    async fn start_next_page(&mut self) -> Result<(), RunError> {
        let Some(cursor) = self.cursor else {
            return Ok(());
        };
        let size = self.config.page_size;
        let page = self
            .progress
            .store()
            .push_candidates(cursor.group, cursor.after, size)
            .await
            .map_err(from_store)?;
        let next_group = cursor.group.next().map(|group| Checkpoint {
            group,
            ..Checkpoint::START
        });
        let Some(last) = page.last().map(|c| c.id) else {
            self.cursor = next_group;
            return Ok(());
        };
        let checkpoint = Checkpoint {
            group: cursor.group,
            after: last,
        };
        // A short page was the group's end when it was read; later arrivals are the next job's.
        self.cursor = if page.len() < size as usize {
            next_group
        } else {
            Some(checkpoint)
        };
        let ctx = self.ctx.clone();
        self.in_flight.push_back(PageTask {
            task: tokio::spawn(async move {
                if ctx.dry_run {
                    plan_page(&ctx, page).await.map(PageWork::Planned)
                } else {
                    resolve_page(&ctx, page).await.map(PageWork::Resolved)
                }
            }),
            checkpoint,
        });
        Ok(())
    }

    /// Saves a dry run's page: its counts, the failures it foresees and its plan, with the
    /// checkpoint — and nothing else.
    async fn commit_planned(
        &mut self,
        page: PlannedPage,
        checkpoint: Checkpoint,
    ) -> Result<(), RunError> {
        let mut counts = self.counts;
        let mut errors = Vec::new();
        for action in &page.actions {
            counts.add(planned_outcome(action.action));
            match (action.action, action.contact_id) {
                (PlannedKind::Create, Some(id)) => self.planned.links.push((id, None)),
                (PlannedKind::Link, Some(id)) => {
                    self.planned.links.push((id, action.hs_object_id.clone()));
                }
                // The real run marks it deleted: no association phase reads it.
                (PlannedKind::Skip, Some(id)) => self.planned.gone.push(id),
                _ => {}
            }
            if action.action == PlannedKind::Fail {
                errors.push(RecordError {
                    contact_id: action.contact_id,
                    company_id: None,
                    email: action.email.clone(),
                    hs_object_id: action.hs_object_id.clone(),
                    reason: action.reason.clone(),
                });
            }
        }
        let mut plan = page.calls;
        plan.actions = page.actions;
        let tx = self.progress.begin().await?;
        self.progress
            .commit_planned(
                tx,
                Page {
                    counts: Counts::Push(counts),
                    checkpoint: encode(checkpoint)?,
                    errors,
                },
                Some(plan),
            )
            .await?;
        self.counts = counts;
        Ok(())
    }

    /// Saves one resolved page with its counts, errors and checkpoint in one transaction.
    async fn commit(&mut self, page: ResolvedPage, checkpoint: Checkpoint) -> Result<(), RunError> {
        let ResolvedPage {
            contacts,
            mut resolutions,
        } = page;
        let rows: Vec<PushedRow> = contacts
            .iter()
            .zip(&resolutions)
            .filter_map(|(c, r)| pushed_row(c, r))
            .collect();
        let mut tx = self.progress.begin().await?;
        tombstone_gone(&mut tx, &contacts, &resolutions).await?;
        let clashes = tx.save_pushed(&rows).await.map_err(from_store)?;
        apply_clashes(&contacts, &mut resolutions, clashes);
        let mut counts = self.counts;
        let mut errors = Vec::new();
        for (contact, resolution) in contacts.iter().zip(resolutions) {
            counts.add(resolution.outcome());
            if let Resolution::Failed { id, reason } = resolution {
                errors.push(RecordError {
                    contact_id: Some(contact.id),
                    company_id: None,
                    email: contact.email.clone(),
                    hs_object_id: id.or_else(|| contact.hs_object_id.clone()),
                    reason,
                });
            }
        }
        let checkpoint = encode(checkpoint)?;
        self.progress
            .commit(
                tx,
                Page {
                    counts: Counts::Push(counts),
                    checkpoint,
                    errors,
                },
            )
            .await?;
        self.counts = counts;
        Ok(())
    }
}

fn encode(checkpoint: Checkpoint) -> Result<serde_json::Value, RunError> {
    serde_json::to_value(checkpoint).map_err(|e| {
        RunError::Fatal(RunFailure::caused_by(
            "cannot encode the push checkpoint",
            e,
        ))
    })
}

/// The count a planned action adds to, as the real run would count it.
fn planned_outcome(kind: PlannedKind) -> PushOutcome {
    match kind {
        PlannedKind::Create => PushOutcome::Created,
        PlannedKind::Link => PushOutcome::Linked,
        PlannedKind::Update => PushOutcome::Updated,
        PlannedKind::Unchanged | PlannedKind::Skip => PushOutcome::Skipped,
        PlannedKind::Fail => PushOutcome::Failed,
    }
}

/// The row to save for a pushed contact: its link, and its version unless only the link
/// may be saved. `None` for a failed contact (it stays a candidate).
fn pushed_row(contact: &PushCandidate, resolution: &Resolution) -> Option<PushedRow> {
    let (id, pushed): (&HsObjectId, bool) = match resolution {
        Resolution::Created(id) | Resolution::Updated(id) => (id, true),
        Resolution::Linked { id, in_sync } => (id, *in_sync),
        Resolution::Failed { .. } | Resolution::Gone(_) => return None,
    };
    Some(PushedRow {
        id: contact.id,
        read_hs_object_id: contact.hs_object_id.clone(),
        hs_object_id: id.clone(),
        pushed_version: pushed.then_some(contact.local_version),
    })
}

/// Tombstones, in the page's transaction, the rows of the contacts HubSpot no longer has (one
/// statement per reason met), so that no later push creates them again.
async fn tombstone_gone(
    tx: &mut Tx,
    contacts: &[PushCandidate],
    resolutions: &[Resolution],
) -> Result<(), RunError> {
    for reason in TombstoneReason::ALL {
        let ids: Vec<HsObjectId> = contacts
            .iter()
            .zip(resolutions)
            .filter(|(_, r)| **r == Resolution::Gone(reason))
            .filter_map(|(c, _)| c.hs_object_id.clone())
            .collect();
        if !ids.is_empty() {
            tx.tombstone_hs_objects(&ids, reason)
                .await
                .map_err(from_store)?;
        }
    }
    Ok(())
}

/// Contacts whose link the database refused (another local row holds that HubSpot contact)
/// fail, with the holder named.
fn apply_clashes(
    contacts: &[PushCandidate],
    resolutions: &mut [Resolution],
    clashes: Vec<LinkClash>,
) {
    for clash in clashes {
        let Some(pos) = contacts.iter().position(|c| c.id == clash.id) else {
            continue;
        };
        resolutions[pos] = Resolution::Failed {
            reason: format!(
                "HubSpot contact {} is already linked to local contact {}; two local contacts \
                 cannot share one HubSpot contact",
                clash.hs_object_id, clash.holder
            ),
            id: Some(clash.hs_object_id),
        };
    }
}
