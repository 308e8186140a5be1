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
    Counts, Job, JobAction, PlannedAction, PlannedKind, PushCounts, PushMode, PushOutcome,
    RecordError,
};
use crate::jobs::{BoxFuture, JobRunner, Page, Progress, RunError, RunFailure};
use crate::store::TombstoneReason;
use crate::store::jobs::Tx;
use crate::store::push::{CandidateGroup, LinkClash, PushCandidate, PushedRow};
use crate::sync::associations::{AssociationPush, PlannedContacts, resume_after};
use crate::sync::dry_notes;
use crate::sync::keys::ExternalKeys;
use errors::from_store;
use outcome::Resolution;
use resolve::{PlannedPage, ResolvedPage, RunContext, plan_page, resolve_page};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
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
            // it would link and the contacts it would link or create (by every run of the job)
            // included, nothing written.
            let earlier = DryPages::saved(progress).await?;
            let (counts, planned) = if resume_after(progress).is_some() {
                // The contacts were planned before the run that planned associations stopped.
                (counts, earlier.planned)
            } else {
                self.push_contacts(mode, Some(earlier), progress, counts, start)
                    .await?
            };
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
            self.push_contacts(mode, None, progress, counts, start)
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
    /// dry run (`dry`: what its earlier runs' pages would do) would do to the contacts its
    /// association phase meets.
    async fn push_contacts(
        &self,
        mode: PushMode,
        dry: Option<DryPages>,
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
            return Ok((counts, dry.map(|d| d.planned).unwrap_or_default()));
        }
        let dry_run = dry.is_some();
        let installation = progress.store().installation().await.map_err(from_store)?;
        let ctx = Arc::new(RunContext::new(
            self.client.clone(),
            mode,
            self.config.max_lost_answers,
            ExternalKeys::new(&installation),
            dry_run,
        ));
        if dry.as_ref().is_some_and(|d| d.key_planned) {
            // An earlier run of this dry job planned them.
            ctx.key_calls_planned_earlier();
        }
        let mut pipeline = Pipeline {
            ctx,
            progress,
            config: self.config,
            counts,
            cursor: Some(start),
            in_flight: VecDeque::new(),
            dry: dry.unwrap_or_default(),
        };
        pipeline.run().await?;
        let total = pipeline.counts.total;
        if total != counts.total + left {
            // Contacts added or changed while the job ran: let the progress end at 100 %.
            progress.set_total(total).await?;
        }
        Ok((pipeline.counts, pipeline.dry.planned))
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
    /// A dry run's pages so far (nothing for a real run).
    dry: DryPages,
}

/// What a dry run's pages would do, by every run of the job: the contacts they would link,
/// create or mark deleted, and the HubSpot ids those links would hold (which the real run's
/// database then refuses to a later row).
#[derive(Debug, Default)]
struct DryPages {
    planned: PlannedContacts,
    holders: HashMap<HsObjectId, ContactId>,
    /// Whether a saved page planned the external key property's calls (once per job).
    key_planned: bool,
    /// The pages saved.
    journal: dry_notes::Journal,
}

/// What a dry run's page saves for the pages after it ([`DryPages`]).
#[derive(Debug, Serialize, Deserialize)]
struct PageNotes {
    #[serde(flatten)]
    planned: PlannedContacts,
    /// The page planned the external key property's calls.
    #[serde(default)]
    key_planned: bool,
}

impl DryPages {
    /// What the earlier runs of the dry job saved.
    async fn saved(progress: &Progress) -> Result<Self, RunError> {
        let (journal, pages) = dry_notes::Journal::open::<PageNotes>(progress).await?;
        let mut planned = PlannedContacts::default();
        let mut key_planned = false;
        for page in pages {
            key_planned |= page.key_planned;
            planned.extend(page.planned);
        }
        Ok(Self {
            holders: planned.holders(),
            planned,
            key_planned,
            journal,
        })
    }

    /// Adds a page's notes, saved in `tx` with the page.
    async fn add(
        &mut self,
        tx: &mut Tx,
        progress: &Progress,
        page: PageNotes,
    ) -> Result<(), RunError> {
        self.journal.append(tx, progress, &page).await?;
        self.holders.extend(page.planned.holders());
        self.key_planned |= page.key_planned;
        self.planned.extend(page.planned);
        Ok(())
    }
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

    /// Saves a dry run's page: its counts, the failures it foresees, its plan and what it would
    /// link (its notes), with the checkpoint — and nothing else. A link the real run's database
    /// would refuse (another row holds the HubSpot id, or would by then) fails, as it would.
    async fn commit_planned(
        &mut self,
        mut page: PlannedPage,
        checkpoint: Checkpoint,
    ) -> Result<(), RunError> {
        let rows: Vec<PushedRow> = page
            .actions
            .iter()
            .zip(&page.read)
            .filter_map(|(action, read)| planned_row(action, read))
            .collect();
        let clashes = self
            .progress
            .store()
            .dry_link_clashes(&rows, &self.dry.holders)
            .await
            .map_err(from_store)?;
        for clash in clashes {
            if let Some(action) = page
                .actions
                .iter_mut()
                .find(|a| a.contact_id == Some(clash.id))
            {
                action.action = PlannedKind::Fail;
                action.reason = clash_reason(&clash);
                action.hs_object_id = Some(clash.hs_object_id);
            }
        }
        let mut counts = self.counts;
        let mut errors = Vec::new();
        let mut links = PlannedContacts::default();
        for (action, read) in page.actions.iter().zip(&page.read) {
            counts.add(planned_outcome(action.action));
            match (action.action, action.contact_id) {
                (PlannedKind::Create, Some(id)) => links.links.push((id, None)),
                (PlannedKind::Link, Some(id)) => {
                    links.links.push((id, action.hs_object_id.clone()));
                }
                // An upsert of an unlinked contact found in HubSpot links it too.
                (PlannedKind::Update, Some(id)) if read.is_none() => {
                    links.links.push((id, action.hs_object_id.clone()));
                }
                // The real run marks it deleted: no association phase reads it.
                (PlannedKind::Skip, Some(id)) => links.gone.push(id),
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
        let notes = PageNotes {
            planned: links,
            key_planned: page.calls.calls.contains_key("property_read"),
        };
        let mut plan = page.calls;
        plan.actions = page.actions;
        let mut tx = self.progress.begin().await?;
        self.dry.add(&mut tx, self.progress, notes).await?;
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

/// The row a planned action would save (its version left out: a dry run checks links only).
fn planned_row(action: &PlannedAction, read: &Option<HsObjectId>) -> Option<PushedRow> {
    match action.action {
        PlannedKind::Link | PlannedKind::Update => Some(PushedRow {
            id: action.contact_id?,
            read_hs_object_id: read.clone(),
            hs_object_id: action.hs_object_id.clone()?,
            pushed_version: None,
        }),
        _ => None,
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
            reason: clash_reason(&clash),
            id: Some(clash.hs_object_id),
        };
    }
}

/// Why a contact whose link the database refuses fails.
fn clash_reason(clash: &LinkClash) -> String {
    format!(
        "HubSpot contact {} is already linked to local contact {}; two local contacts cannot \
         share one HubSpot contact",
        clash.hs_object_id, clash.holder
    )
}
