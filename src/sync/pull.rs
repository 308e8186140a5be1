//! Pull: HubSpot contacts → local rows, page by page, resumable.
//!
//! # Full pull
//!
//! Pages through `GET /crm/v3/objects/contacts` (100 per page, `email`, `firstname`,
//! `lastname`, `hs_merged_object_ids`, `crm_sync_contact_id`). Each page is written in one transaction together
//! with the job's counts and a checkpoint holding the cursor of the next page
//! ([`crate::store::pull`] has the matching rules and the set-based SQL). While one page is
//! written, the next is already being fetched, so HubSpot and the database work at the same
//! time; never more than two pages are in memory.
//!
//! # Incremental pull
//!
//! Reads only contacts modified since the bookmark (minus [`PullSettings::lookback`]) through
//! the search API, sorted by `lastmodifieddate` ascending, 200 per call. Search's `after` is an
//! offset (a contact changed during the run shifts every later offset, losing one contact) and
//! stops at 10,000 results, so pages are not read by offset: every call is a new query
//! starting at the last `lastmodifieddate` seen (keyset paging). The contacts of the previous
//! page that carry exactly that value are skipped, so nothing is read twice; when many
//! contacts share one value (an import), they are read by `hs_object_id` instead
//! (`lastmodifieddate = T AND hs_object_id > last`), then the range continues after `T`.
//! The search limit (5 per second) is the client's to respect.
//!
//! A successful pull of either kind stores, in its last page's transaction, the bookmark: the
//! time its first run started. Every change after it is read by the next incremental pull;
//! changes made while the job ran are read again (the writes are idempotent). The lookback,
//! applied when reading, covers HubSpot's search-index lag (a change shows up in search a
//! few seconds late, with its earlier timestamp) and clock skew between this host and
//! HubSpot. An incremental pull with no bookmark is a full pull.
//!
//! # Targeted pull
//!
//! [`pull_ids`] pulls given HubSpot ids (webhook events) with batch reads, 100 per call,
//! through the same page write, outside any job.
//!
//! # Costs (HubSpot calls)
//!
//! Full pull: one list call per 100 contacts, plus one search call per job (the total, for
//! the progress bar). Any page whose contacts clash with stale links: one batch read more
//! ([`write_page`]). Incremental: one search call per 200 changed contacts (plus one for the
//! end); a re-run with nothing changed costs one call, plus one per 200 contacts changed
//! within the lookback before the previous run started. Associations: a full pull reads every
//! linked contact's, one call per 1,000, once its pages are written; an incremental pull reads
//! those of each page's contacts (one call per page, none for an empty page) and applies them in
//! the page's transaction (`sync::associations`), on the associations' own budget.

use super::PROPERTIES;
use super::associations::PhaseNotes;
use super::companies::lookup::LookUpCalls;
use super::keys::ExternalKeys;
use super::lookup::{self, Fate};
use super::push::EXTERNAL_KEY;
use super::{PullSettings, SyncContext, hubspot_error};
use crate::hubspot::{
    Batch, Contact, Filter, FilterGroup, FilterOperator, HubSpotClient, HubSpotError, ListContacts,
    MAX_BATCH, MAX_PAGE_LIMIT, MAX_SEARCH_LIMIT, Page as ListPage, SearchPage, SearchRequest, Sort,
    SortDirection,
};
use crate::ids::{CompanyId, ContactId, Email, HsObjectId};
use crate::jobs::model::{
    Counts, Job, JobAction, Plan, PlannedAction, PlannedKind, PullCounts, PullMode, PullOutcome,
    RecordError,
};
use crate::jobs::{Page, Progress, RunError, RunFailure};
use crate::store::jobs::Tx;
use crate::store::pull::{CheckedLinks, Clash, LinkedContact, PageWrite, PulledContact};
use crate::store::{Store, StoreError, TombstoneReason};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// The property incremental pulls filter and sort on (contacts; other objects use
/// `hs_lastmodifieddate`).
pub(crate) const MODIFIED: &str = "lastmodifieddate";

/// When more than this many contacts of a full search page share its last timestamp, they
/// are read by id rather than by re-querying from that timestamp.
const TIE_THRESHOLD: usize = MAX_SEARCH_LIMIT as usize / 2;

/// Runs a pull job (full or incremental), from its checkpoint when it has one.
pub async fn run(ctx: &SyncContext, job: &Job, progress: &Progress) -> Result<(), RunError> {
    let JobAction::Pull { mode, incremental } = job.spec.action else {
        return Err(RunError::fatal(format!(
            "the pull engine was given a {} job",
            job.direction()
        )));
    };
    let Counts::Pull(counts) = progress.counts() else {
        return Err(RunError::fatal("a pull job carries push counts"));
    };
    let (cursor, fresh) = match progress.checkpoint_as::<Cursor>()? {
        Some(cursor) => (cursor, false),
        None => (Cursor::start(&ctx.pull, progress, incremental).await?, true),
    };
    tracing::info!(job = %job.id, mode = ?mode, incremental, fresh, "pull starting");
    let keys = ExternalKeys::new(&progress.store().installation().await?);
    let mut run = PullRun {
        client: &ctx.hubspot,
        keys,
        progress,
        mode,
        started_at: cursor.started_at,
        counts,
        dry_run: job.spec.dry_run,
        incremental,
        notes: PhaseNotes::default(),
        ahead: Plan::default(),
        pages: dry_pages(progress, job.spec.dry_run && !incremental).await?,
        dry_adopted: HashSet::new(),
    };
    match cursor.position {
        Position::List { after } => run.list_from(after, fresh).await?,
        Position::Search { keyset } => run.search_from(keyset, fresh).await?,
        Position::Sweep { after } => run.sweep_from(after).await?,
        Position::Done => {}
    }
    // Then the contacts' companies, once every contact page is written. A full pull reads
    // every linked contact's; an incremental one has read those of the contacts it read, page
    // by page (an association change does not reliably move a contact's modification time:
    // the association webhooks cover the rest, docs/associations.md). A dry full pull has
    // read them page by page, as an incremental one does: its pages' links are rolled back,
    // so a phase after them would not see the contacts they link. Its plan counts this phase's
    // reads, not its own (`PullRun::note_reads`).
    if !incremental && !job.spec.dry_run {
        let counts =
            super::associations::pull(&ctx.hubspot, &run.keys, progress, run.counts).await?;
        tracing::info!(job = %job.id, ?counts, "pull finished");
    }
    Ok(())
}

/// A pull job's checkpoint: where to go on, and when the job's first run started (the
/// bookmark it leaves when it succeeds). The contacts pull and the pull of a mapped table share
/// it; `K` is the key its sweep goes on from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PullCursor<K> {
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) position: PullPosition<K>,
}

/// Where a pull goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub(crate) enum PullPosition<K> {
    /// Listing every contact; `after` is the next page's cursor (`None`: the first page).
    List { after: Option<String> },
    /// Searching for changed contacts.
    Search { keyset: Keyset },
    /// A full list was read to its end: checking, by local key after `after`, the links whose
    /// HubSpot id it did not see (contacts deleted without a webhook).
    Sweep { after: K },
    /// Every page is written.
    Done,
}

/// The contacts pull's checkpoint: its sweep goes on by row id.
type Cursor = PullCursor<ContactId>;
/// Where the contacts pull goes on.
type Position = PullPosition<ContactId>;

/// The next search query of an incremental pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub(crate) enum Keyset {
    /// Contacts modified at or after `since_ms` (after it, when `strict`), oldest first;
    /// `seen` are contacts at exactly `since_ms` already written.
    Range {
        since_ms: i64,
        strict: bool,
        seen: Vec<HsObjectId>,
    },
    /// Contacts modified exactly at `at_ms`, by id, after `after_id`; `seen` are contacts at
    /// `at_ms` already written.
    Tie {
        at_ms: i64,
        after_id: Option<HsObjectId>,
        seen: Vec<HsObjectId>,
    },
    /// Every contact modified at or after `since_ms` (after it, when `strict`), by id, after
    /// `after_id`; `seen` were written already. Used when a whole page had no readable
    /// modification time, so the range could not go on by time.
    Scan {
        since_ms: i64,
        strict: bool,
        after_id: Option<HsObjectId>,
        seen: Vec<HsObjectId>,
    },
}

impl Cursor {
    /// Where a job's first run starts: the list for a full pull or when there is no
    /// bookmark yet, else a search from the bookmark minus the lookback.
    async fn start(
        settings: &PullSettings,
        progress: &Progress,
        incremental: bool,
    ) -> Result<Self, RunError> {
        let started_at = Utc::now();
        let bookmark = if incremental {
            progress.store().pull_bookmark().await?
        } else {
            None
        };
        let position = match bookmark {
            None => Position::List { after: None },
            Some(bookmark) => {
                let lookback = chrono::Duration::from_std(settings.lookback)
                    .unwrap_or_else(|_| chrono::Duration::days(1));
                Position::Search {
                    keyset: Keyset::Range {
                        since_ms: (bookmark - lookback).timestamp_millis(),
                        strict: false,
                        seen: Vec::new(),
                    },
                }
            }
        };
        Ok(Self {
            started_at,
            position,
        })
    }
}

/// One run of a pull job.
struct PullRun<'a> {
    client: &'a HubSpotClient,
    /// This database's external keys.
    keys: ExternalKeys,
    progress: &'a Progress,
    mode: PullMode,
    started_at: DateTime<Utc>,
    /// Cumulative counts as last committed.
    counts: PullCounts,
    /// A dry run: every page's writes are rolled back, and only the job row is saved.
    dry_run: bool,
    /// An incremental job: each page also reads its contacts' company associations (a full
    /// pull reads every linked contact's once its pages are written).
    incremental: bool,
    /// What a dry full pull's page notes for planning the real pull's association phase, which
    /// reads the contacts' companies after the pages, in [`ReadOrder`]; saved with the page.
    notes: PhaseNotes<ReadOrder>,
    /// A dry run's calls made before its next page (the total's search), planned with it.
    ahead: Plan,
    /// The pages written so far (by every run of a dry full pull, which numbers its notes by
    /// them; by this run otherwise).
    pages: u64,
    /// The companies earlier pages of a dry incremental pull adopted (and rolled back), which
    /// the real run holds by then.
    dry_adopted: HashSet<CompanyId>,
}

/// Where a linked contact comes in the association phase of the real full pull, which reads
/// them by row id: the rows that were there before the pull, by id, then those its pages
/// create, page by page (a new row's id is above every older one's; the ids a dry page gives
/// are rolled back with it, so they order rows within that page only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum ReadOrder {
    /// A row there before the pull.
    Existing(ContactId),
    /// A row the pull's `page` creates, with the id the dry page gave it.
    Created { page: u64, id: ContactId },
}

impl PullRun<'_> {
    /// Lists every contact from `after`, writing page by page while fetching the next.
    async fn list_from(&mut self, after: Option<String>, fresh: bool) -> Result<(), RunError> {
        if fresh {
            self.announce_total().await?;
            self.ahead.call("search", 1);
            self.progress
                .store()
                .forget_stale_pull_seen()
                .await
                .map_err(write_error)?;
        }
        let mut page = list_page(self.client, after).await?;
        loop {
            if self.progress.should_stop() {
                return Err(RunError::Interrupted);
            }
            let ListPage {
                results,
                next_after,
            } = page;
            let Some(after) = next_after else {
                self.write(results, Position::Sweep { after: SWEEP_START })
                    .await?;
                return self.sweep_from(SWEEP_START).await;
            };
            let position = Position::List {
                after: Some(after.clone()),
            };
            let (fetched, written) = tokio::join!(
                list_page(self.client, Some(after)),
                self.write(results, position)
            );
            written?;
            page = fetched?;
        }
    }

    /// Searches for changed contacts from `keyset`, writing page by page while fetching the
    /// next.
    async fn search_from(&mut self, mut keyset: Keyset, fresh: bool) -> Result<(), RunError> {
        let mut page = search_page(self.client, &keyset).await?;
        if fresh {
            self.progress
                .set_total(self.counts.total + page.total)
                .await?;
        }
        loop {
            if self.progress.should_stop() {
                return Err(RunError::Interrupted);
            }
            let (records, next) = advance(&keyset, page)?;
            let Some(next) = next else {
                return self.write(records, Position::Done).await;
            };
            let position = Position::Search {
                keyset: next.clone(),
            };
            let (fetched, written) = tokio::join!(
                search_page(self.client, &next),
                self.write(records, position)
            );
            written?;
            page = fetched?;
            keyset = next;
        }
    }

    /// Tells the job how many contacts the account has (one search call), so that clients
    /// can show a bar. Best effort: a failure only costs the bar.
    async fn announce_total(&self) -> Result<(), RunError> {
        let request = SearchRequest {
            limit: 1,
            properties: vec!["email".to_owned()],
            ..SearchRequest::default()
        };
        match self.client.search_contacts(&request).await {
            Ok(page) => self.progress.set_total(page.total).await,
            Err(e) => {
                tracing::debug!(error = %e, "could not learn the number of HubSpot contacts");
                Ok(())
            }
        }
    }

    /// Writes one page and commits it with the counts and the checkpoint `next`; the page
    /// that ends the job also stores the bookmark.
    ///
    /// A dry run writes the page through the very same code, so that its counts are the real
    /// ones, and rolls it back; it then commits only what the job's own bookkeeping needs
    /// (which ids the list showed, for the sweep) with its counts and plan — never the
    /// bookmark.
    async fn write(&mut self, contacts: Vec<Contact>, next: Position) -> Result<(), RunError> {
        let mut counts = self.counts;
        let mut errors = Vec::new();
        let mut pulled = Vec::with_capacity(contacts.len());
        let mut plan = std::mem::take(&mut self.ahead);
        plan.call(
            if matches!(next, Position::Search { .. } | Position::Done) {
                "search"
            } else {
                "list"
            },
            1,
        );
        for contact in &contacts {
            match pulled_contact(contact, &self.keys) {
                Ok(p) => pulled.push(p),
                Err(e) => {
                    counts.add(PullOutcome::Failed);
                    plan.actions.push(PlannedAction {
                        action: PlannedKind::Fail,
                        contact_id: None,
                        email: e.email.clone(),
                        hs_object_id: e.hs_object_id.clone(),
                        reason: e.reason.clone(),
                    });
                    errors.push(e);
                }
            }
        }
        // Read before the page's transaction opens; applied in it, so a kill loses neither. A
        // dry run reads them with every page (a full pull reads them after its pages, whose
        // links a dry run rolls back) and applies them in the page's rolled-back transaction.
        let associations = if self.incremental || self.dry_run {
            let ids = pulled.iter().map(|p| p.hs_object_id.clone()).collect();
            super::associations::read_for(
                self.client,
                &self.keys,
                self.progress.store(),
                ids,
                super::associations::Unlinked::LinkedByThePage,
            )
            .await?
        } else {
            super::associations::ReadAssociations::default()
        };
        let (mut tx, written, checks) =
            write_page_counted(self.client, self.progress.store(), self.mode, &pulled)
                .await
                .map_err(page_error)?;
        checks.plan(&mut plan);
        // What the real full pull's association phase sets, before this page applies it.
        let sets = if self.dry_run && !self.incremental {
            super::associations::companies_to_set(&mut tx, &associations).await?
        } else {
            HashMap::new()
        };
        errors.extend(
            super::associations::apply_read(&self.keys, &mut tx, &associations, &mut counts)
                .await?,
        );
        self.pages += 1;
        if self.incremental {
            plan.call("association_read", associations.calls());
            let companies = associations.companies();
            companies.calls_beyond(&self.dry_adopted).plan(&mut plan);
            if self.dry_run {
                self.dry_adopted.extend(companies.adopted().cloned());
            }
        } else if self.dry_run {
            // The real full pull reads them after its pages, 1,000 a call: counted at its end.
            self.note_reads(&mut tx, &pulled, &written, &associations, &sets)
                .await?;
        }
        if self.dry_run {
            tx.rollback().await?;
            tx = self.progress.begin().await?;
            plan.actions.extend(planned_actions(&pulled, &written));
            if !self.incremental {
                self.save_notes(&mut tx).await?;
            }
        }
        if matches!(next, Position::List { .. } | Position::Sweep { .. }) {
            let mut seen: Vec<&str> = contacts.iter().map(|c| c.id.0.as_str()).collect();
            // The ids the page's links moved rows from: the real page's rows hold the listed
            // ids now, so its sweep never meets them; the dry page's rows, rolled back, do.
            if self.dry_run {
                seen.extend(written.relinked.iter().map(|id| id.0.as_str()));
            }
            tx.mark_pull_seen(&self.job_key(), &seen)
                .await
                .map_err(write_error)?;
        }
        drop(contacts);
        if !self.dry_run && matches!(next, Position::Done | Position::Sweep { .. }) {
            tx.set_pull_bookmark(self.started_at)
                .await
                .map_err(write_error)?;
        }
        counts = add_counts(counts, written.counts);
        errors.extend(written.errors);
        self.commit_with(tx, counts, next, errors, Some(plan)).await
    }

    /// Notes, for a dry full pull, the contacts linked once the page is written (in `tx`) and
    /// the further pages of their companies (as `read` found them): those its association
    /// phase would read.
    async fn note_reads(
        &mut self,
        tx: &mut Tx,
        pulled: &[PulledContact],
        written: &PageWrite,
        read: &super::associations::ReadAssociations,
        sets: &HashMap<ContactId, CompanyId>,
    ) -> Result<(), RunError> {
        let created: HashSet<&HsObjectId> = written
            .outcomes
            .iter()
            .filter(|(_, outcome)| matches!(outcome, PullOutcome::Created { .. }))
            .map(|(index, _)| &pulled[*index].hs_object_id)
            .collect();
        let ids: Vec<HsObjectId> = pulled.iter().map(|p| p.hs_object_id.clone()).collect();
        for row in tx.association_rows_of(&ids).await? {
            let order = if created.contains(&row.hs_object_id) {
                ReadOrder::Created {
                    page: self.pages,
                    id: row.contact_id,
                }
            } else {
                ReadOrder::Existing(row.contact_id)
            };
            self.notes
                .read(order, read.further_pages(&row.hs_object_id));
            if let Some(company) = sets.get(&row.contact_id) {
                self.notes.set(order, company.clone());
            }
        }
        self.notes.adoption(read.companies());
        Ok(())
    }

    /// Saves, in `tx`, what a dry full pull's page noted, numbered by the page.
    async fn save_notes(&mut self, tx: &mut Tx) -> Result<(), RunError> {
        std::mem::take(&mut self.notes)
            .save(tx, &self.job_key(), self.pages)
            .await
    }

    /// Counts in `plan` the calls of the real full pull's association phase, from what every
    /// dry page noted (those of earlier runs of the job too), and forgets the notes in `tx`:
    /// its association reads, and its company reads to adopt companies.
    async fn plan_association_phase(
        &mut self,
        tx: &mut Tx,
        plan: &mut Plan,
    ) -> Result<(), RunError> {
        let job = self.job_key();
        let phase = PhaseNotes::<ReadOrder>::take_saved(self.progress.store(), tx, &job).await?;
        phase.plan(phase.rows(), plan);
        Ok(())
    }

    /// Commits a page's transaction with the job's counts, errors and checkpoint `next`, and a
    /// dry run's plan of the page (ignored for a real job).
    async fn commit_with(
        &mut self,
        tx: Tx,
        counts: PullCounts,
        next: Position,
        errors: Vec<RecordError>,
        plan: Option<Plan>,
    ) -> Result<(), RunError> {
        let checkpoint = Cursor {
            started_at: self.started_at,
            position: next,
        };
        let checkpoint = serde_json::to_value(&checkpoint).map_err(|e| {
            RunError::Fatal(RunFailure::caused_by(
                "cannot encode the pull checkpoint",
                e,
            ))
        })?;
        let page = Page {
            counts: Counts::Pull(counts),
            checkpoint,
            errors,
        };
        if self.dry_run {
            self.progress.commit_planned(tx, page, plan).await?;
        } else {
            self.progress.commit(tx, page).await?;
        }
        self.counts = counts;
        Ok(())
    }

    /// The job's key in `pull_seen`.
    fn job_key(&self) -> String {
        self.progress.job_id().to_string()
    }

    /// After a full list: the linked rows whose HubSpot id the list did not show, 100 at a
    /// time by row id, are confirmed with one batch read each ([`lookup::look_up`]); those
    /// HubSpot no longer has are tombstoned and counted `unlinked`. Each batch commits with its
    /// checkpoint; the last one forgets what the job saw. Silence is not deletion: only an
    /// id the read reports gone is tombstoned (one merged into another record, or that HubSpot
    /// refuses to read, is left alone).
    async fn sweep_from(&mut self, mut after: ContactId) -> Result<(), RunError> {
        let job = self.job_key();
        if after == SWEEP_START {
            self.progress
                .store()
                .refresh_sweep_statistics(crate::store::SweepTable::Contacts)
                .await?;
        }
        loop {
            if self.progress.should_stop() {
                return Err(RunError::Interrupted);
            }
            let rows = self
                .progress
                .store()
                .linked_unseen(&job, after, MAX_BATCH as u32)
                .await
                .map_err(write_error)?;
            let Some(last) = rows.last().map(|(id, _)| *id) else {
                let mut tx = self.progress.begin().await?;
                tx.forget_pull_seen(&job).await.map_err(write_error)?;
                let mut plan = Plan::default();
                if self.dry_run {
                    self.plan_association_phase(&mut tx, &mut plan).await?;
                }
                return self
                    .commit_with(tx, self.counts, Position::Done, Vec::new(), Some(plan))
                    .await;
            };
            let ids: Vec<HsObjectId> = rows.iter().map(|(_, hs)| hs.clone()).collect();
            let (gone, gets) = self.gone_of(&ids).await?;
            let mut tx = self.progress.begin().await?;
            if self.dry_run {
                // The rows left linked are read by the real association phase too (their
                // companies were not read here: counted as one page).
                for (id, _) in rows.iter().filter(|(_, hs)| !gone.contains(hs)) {
                    self.notes.read(ReadOrder::Existing(*id), 0);
                }
                self.pages += 1;
                self.save_notes(&mut tx).await?;
            }
            let mut plan = Plan::default();
            plan.call("batch_read", 1);
            plan.call("get", gets);
            let unlinked = if self.dry_run {
                // The rows the real run would tombstone: one per id (links are unique).
                plan.actions.extend(gone.iter().map(|id| {
                    PlannedAction {
                        action: PlannedKind::Skip,
                        contact_id: None,
                        email: None,
                        hs_object_id: Some(id.clone()),
                        reason: "HubSpot no longer has this contact: its local row would be \
                             unlinked and marked deleted"
                            .to_owned(),
                    }
                }));
                gone.len()
            } else {
                let tombstoned = tx
                    .tombstone_hs_objects(&gone, TombstoneReason::Deleted)
                    .await
                    .map_err(write_error)?;
                if !tombstoned.is_empty() {
                    tracing::info!(job = %job, rows = ?tombstoned, "HubSpot no longer has the contacts of these rows; they are tombstoned");
                }
                tombstoned.len()
            };
            let mut counts = self.counts;
            counts.unlinked += unlinked as u64;
            self.commit_with(
                tx,
                counts,
                Position::Sweep { after: last },
                Vec::new(),
                Some(plan),
            )
            .await?;
            after = last;
        }
    }

    /// The ids (at most 100) HubSpot reports gone.
    async fn gone_of(&self, ids: &[HsObjectId]) -> Result<(Vec<HsObjectId>, u64), RunError> {
        let (fates, gets) = lookup::look_up_counted(self.client, ids)
            .await
            .map_err(|e| hubspot_error("checking contacts a full pull did not see", e))?;
        let gone = ids
            .iter()
            .filter(|id| matches!(fates.get(*id), Some(Fate::Gone)))
            .cloned()
            .collect();
        Ok((gone, gets))
    }
}

/// The pages earlier runs of a dry full pull saved notes for (0 for any other job): a resumed
/// dry run numbers its pages on from there.
pub(crate) async fn dry_pages(progress: &Progress, dry_full: bool) -> Result<u64, RunError> {
    if !dry_full {
        return Ok(0);
    }
    super::dry_notes::last_page(progress.store(), &progress.job_id().to_string()).await
}

/// A dry run's plan of a page the real write path wrote (and the dry run rolled back).
fn planned_actions<'a>(
    pulled: &'a [PulledContact],
    written: &'a PageWrite,
) -> impl Iterator<Item = PlannedAction> + 'a {
    written.outcomes.iter().map(move |(index, outcome)| {
        let record = &pulled[*index];
        let (action, reason) = match outcome {
            PullOutcome::Created { .. } => (
                PlannedKind::Create,
                "only in HubSpot: a local row would be created".to_owned(),
            ),
            PullOutcome::Linked => (
                PlannedKind::Link,
                "a local row with its email would be linked to it".to_owned(),
            ),
            PullOutcome::Unchanged => (PlannedKind::Unchanged, "already up to date".to_owned()),
            PullOutcome::Failed => (
                PlannedKind::Fail,
                written
                    .errors
                    .iter()
                    .find(|e| e.hs_object_id.as_ref() == Some(&record.hs_object_id))
                    .map_or_else(|| "would fail".to_owned(), |e| e.reason.clone()),
            ),
        };
        PlannedAction {
            action,
            contact_id: None,
            email: record.email.clone().map(|e| e.into_string()),
            hs_object_id: Some(record.hs_object_id.clone()),
            reason,
        }
    })
}

/// Where a sweep starts: before the first row.
const SWEEP_START: ContactId = ContactId(i64::MIN);

/// What a targeted pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetedPull {
    /// Counts over all the ids asked for that HubSpot returned.
    pub counts: PullCounts,
    /// One entry per contact that could not be written.
    pub errors: Vec<RecordError>,
    /// Ids HubSpot does not know (deleted, or never existed).
    pub missing: Vec<HsObjectId>,
}

/// Why a targeted pull stopped.
#[derive(Debug, thiserror::Error)]
pub enum TargetedPullError {
    /// Reading the contacts from HubSpot failed (after the client's retries).
    #[error("reading contacts from HubSpot failed: {0}")]
    HubSpot(#[from] HubSpotError),
    /// Writing them failed.
    #[error("writing pulled contacts failed: {0}")]
    Store(#[from] StoreError),
}

/// Pulls the HubSpot contacts `ids` now (e.g. those a webhook named): one batch read per 100
/// ids, each batch written like a page of a pull (same matching, same counts) in its own
/// transaction. A merged-away id brings its surviving contact.
pub async fn pull_ids(
    ctx: &SyncContext,
    store: &Store,
    ids: &[HsObjectId],
    mode: PullMode,
) -> Result<TargetedPull, TargetedPullError> {
    let mut done = TargetedPull::default();
    let keys = ExternalKeys::new(&store.installation().await?);
    for batch in Batch::chunked(ids.to_vec()) {
        let read = read_ids(&ctx.hubspot, batch.items(), &keys).await?;
        let (tx, written) = write_page(&ctx.hubspot, store, mode, &read.pulled).await?;
        tx.commit().await?;
        done.counts = add_counts(add_counts(done.counts, read.counts), written.counts);
        done.errors.extend(read.errors);
        done.errors.extend(written.errors);
        done.missing.extend(read.missing);
    }
    Ok(done)
}

/// One batch of contacts read by id, ready to write.
#[derive(Debug, Default)]
pub(crate) struct ReadIds {
    /// The contacts to write.
    pub pulled: Vec<PulledContact>,
    /// Counts of the contacts that already failed (HubSpot refused to read them, or the
    /// database could not hold them).
    pub counts: PullCounts,
    /// One entry per such failure.
    pub errors: Vec<RecordError>,
    /// Ids HubSpot does not know (deleted, or never existed).
    pub missing: Vec<HsObjectId>,
}

/// Reads contacts by id (at most 100), as HubSpot really answers ([`lookup`]): one batch
/// read, plus one `GET` per id it leaves out without a word. An id merged into another
/// contact brings that contact, which then lists the id among its merged ids (so the row
/// linked to the id follows the merge); an id refused alone is a failed record.
pub(crate) async fn read_ids(
    client: &HubSpotClient,
    ids: &[HsObjectId],
    keys: &ExternalKeys,
) -> Result<ReadIds, HubSpotError> {
    let mut fates = lookup::look_up(client, ids).await?;
    let mut done = ReadIds::default();
    let mut contacts: Vec<Contact> = Vec::new();
    let mut merged: HashMap<HsObjectId, Vec<HsObjectId>> = HashMap::new();
    let mut taken: HashSet<HsObjectId> = HashSet::new();
    for id in ids {
        match fates.remove(id).unwrap_or(Fate::Gone) {
            Fate::Live(contact) => {
                if taken.insert(contact.id.clone()) {
                    contacts.push(contact);
                }
            }
            Fate::MergedInto(survivor) => {
                merged
                    .entry(survivor.id.clone())
                    .or_default()
                    .push(id.clone());
                if taken.insert(survivor.id.clone()) {
                    contacts.push(survivor);
                }
            }
            Fate::Gone => done.missing.push(id.clone()),
            Fate::Refused(reason) => {
                done.counts.add(PullOutcome::Failed);
                done.errors.push(RecordError {
                    contact_id: None,
                    company_id: None,
                    email: None,
                    hs_object_id: Some(id.clone()),
                    reason,
                });
            }
        }
    }
    done.pulled.reserve(contacts.len());
    for contact in &contacts {
        match pulled_contact(contact, keys) {
            Ok(mut p) => {
                for id in merged.remove(&p.hs_object_id).unwrap_or_default() {
                    if !p.merged_ids.contains(&id) {
                        p.merged_ids.push(id);
                    }
                }
                done.pulled.push(p);
            }
            Err(e) => {
                done.counts.add(PullOutcome::Failed);
                done.errors.push(e);
            }
        }
    }
    Ok(done)
}

/// Writes one page in a transaction of its own and hands it back uncommitted, with what the
/// page did (the caller adds its own writes and commits).
///
/// A contact whose email is held by a row linked to another HubSpot contact, one the page
/// does not list, is a clash: that contact may be gone (deleted, merged away, another
/// portal's), and then the row is re-linked; or alive, and then the contact fails. Only a page
/// with clashes pays for asking: its transaction is rolled back (no lock is held while
/// HubSpot answers), one batch read asks about every clashing link of the page
/// ([`lookup::look_up`]), and the page is written again knowing the answers. A clash the
/// second write still finds (a row re-linked meanwhile) fails, and the next pull retries it.
pub(crate) async fn write_page(
    client: &HubSpotClient,
    store: &Store,
    mode: PullMode,
    records: &[PulledContact],
) -> Result<(Tx, PageWrite), TargetedPullError> {
    let (tx, written, _) = write_page_counted(client, store, mode, records).await?;
    Ok((tx, written))
}

/// [`write_page`], with the calls asking HubSpot about the page's clashes made (a dry run
/// plans them).
async fn write_page_counted(
    client: &HubSpotClient,
    store: &Store,
    mode: PullMode,
    records: &[PulledContact],
) -> Result<(Tx, PageWrite, LookUpCalls), TargetedPullError> {
    let mut tx = Tx::begin(store).await?;
    let written = tx
        .write_pull_page(mode, records, &CheckedLinks::new())
        .await?;
    if written.clashes.is_empty() {
        clear_restored(&mut tx, records, &written).await?;
        return Ok((tx, written, LookUpCalls::default()));
    }
    tx.rollback().await?;
    let (checked, calls) = check_links(client, &written.clashes).await?;
    let mut tx = Tx::begin(store).await?;
    let mut written = tx.write_pull_page(mode, records, &checked).await?;
    written.fail_clashes(
        records,
        "the rows changed while HubSpot was asked about that contact; the next pull retries it",
    );
    clear_restored(&mut tx, records, &written).await?;
    Ok((tx, written, calls))
}

/// A row the page linked again to the record it was tombstoned for (HubSpot restored it)
/// loses its mark, unless it was a privacy deletion. Only a page that linked rows can have
/// one (a tombstoned row has no `hs_object_id`), so other pages pay nothing.
async fn clear_restored(
    tx: &mut Tx,
    records: &[PulledContact],
    written: &PageWrite,
) -> Result<(), StoreError> {
    if written.counts.linked == 0 {
        return Ok(());
    }
    let ids: Vec<&str> = records.iter().map(|r| r.hs_object_id.0.as_str()).collect();
    tx.clear_restored_tombstones(&ids).await?;
    Ok(())
}

/// What HubSpot says about the contacts clashing rows are linked to.
async fn check_links(
    client: &HubSpotClient,
    clashes: &[Clash],
) -> Result<(CheckedLinks, LookUpCalls), HubSpotError> {
    let linked: Vec<HsObjectId> = clashes
        .iter()
        .map(|c| c.linked.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut checked = CheckedLinks::new();
    let mut calls = LookUpCalls::default();
    for batch in Batch::chunked(linked) {
        let (fates, gets) = lookup::look_up_counted(client, batch.items()).await?;
        calls.add(gets);
        for (id, fate) in fates {
            let said = match fate {
                Fate::Live(_) => LinkedContact::Alive,
                Fate::MergedInto(survivor) => LinkedContact::MergedInto(survivor.id),
                Fate::Gone => LinkedContact::Gone,
                Fate::Refused(reason) => LinkedContact::Unknown(reason),
            };
            checked.insert(id, said);
        }
    }
    Ok((checked, calls))
}

/// A page write that failed, as a run error.
pub(crate) fn page_error(e: TargetedPullError) -> RunError {
    match e {
        TargetedPullError::Store(e) => write_error(e),
        TargetedPullError::HubSpot(e) => {
            hubspot_error("asking HubSpot about contacts local rows are linked to", e)
        }
    }
}

/// One page of the contact list.
async fn list_page(
    client: &HubSpotClient,
    after: Option<String>,
) -> Result<ListPage<Contact>, RunError> {
    let params = ListContacts {
        limit: MAX_PAGE_LIMIT,
        after,
        properties: PROPERTIES.iter().map(|p| (*p).to_owned()).collect(),
        archived: false,
    };
    client
        .list_contacts(&params)
        .await
        .map_err(|e| hubspot_error("listing HubSpot contacts", e))
}

/// One search page for `keyset`.
async fn search_page(client: &HubSpotClient, keyset: &Keyset) -> Result<SearchPage, RunError> {
    client
        .search_contacts(&search_request(keyset))
        .await
        .map_err(|e| hubspot_error("searching HubSpot for changed contacts", e))
}

/// The search query of `keyset`, with the built-in contacts' properties.
fn search_request(keyset: &Keyset) -> SearchRequest {
    search_request_for(keyset, PROPERTIES.iter().map(|p| (*p).to_owned()).collect())
}

/// The search query of `keyset`, reading `properties` (and the modification time, which the
/// keyset goes on from): the one query shape every incremental contacts pull uses.
pub(crate) fn search_request_for(keyset: &Keyset, properties: Vec<String>) -> SearchRequest {
    search_request_on(keyset, properties, MODIFIED)
}

/// [`search_request_for`] for an object whose modification time is the property `modified`
/// (contacts: `lastmodifieddate`; companies: `hs_lastmodifieddate`).
pub(crate) fn search_request_on(
    keyset: &Keyset,
    mut properties: Vec<String>,
    modified: &str,
) -> SearchRequest {
    let since = |since_ms: &i64, strict: bool| {
        let op = if strict {
            FilterOperator::Gt
        } else {
            FilterOperator::Gte
        };
        Filter::new(modified, op, since_ms.to_string())
    };
    let after = |after_id: &Option<HsObjectId>| {
        after_id
            .as_ref()
            .map(|id| Filter::new("hs_object_id", FilterOperator::Gt, id.0.clone()))
    };
    let (filters, sort_by) = match keyset {
        Keyset::Range {
            since_ms, strict, ..
        } => (vec![since(since_ms, *strict)], modified),
        Keyset::Scan {
            since_ms,
            strict,
            after_id,
            ..
        } => {
            let mut filters = vec![since(since_ms, *strict)];
            filters.extend(after(after_id));
            (filters, "hs_object_id")
        }
        Keyset::Tie {
            at_ms, after_id, ..
        } => {
            let mut filters = vec![Filter::new(modified, FilterOperator::Eq, at_ms.to_string())];
            filters.extend(after(after_id));
            (filters, "hs_object_id")
        }
    };
    if !properties.iter().any(|p| p == modified) {
        properties.push(modified.to_owned());
    }
    SearchRequest {
        filter_groups: vec![FilterGroup { filters }],
        sorts: vec![Sort {
            property_name: sort_by.to_owned(),
            direction: SortDirection::Ascending,
        }],
        query: None,
        properties,
        limit: MAX_SEARCH_LIMIT,
        after: None,
    }
}

/// Splits a search page into the contacts to write (those not written before) and the next
/// query (`None`: this was the last page).
///
/// A contact whose modification time is missing or null (HubSpot may send a requested
/// property as `null`) is taken as changed now: it is written, and it never moves the cursor.
/// That is safe because the page is sorted by that time: every contact not read yet sorts
/// after the page's last one, so the largest time the page does show is still a lower bound
/// of all of them, and the range goes on from it as from any page. A page that shows no time
/// at all gives no bound; the rest of the range is then read in id order ([`Keyset::Scan`]),
/// which ends because each query starts after the last id read. So the cursor never passes
/// an unread contact and never stands still: every query starts strictly later (in time or
/// in id) than the one before, except the one that turns a stuck range into a tie or a scan.
pub(crate) fn advance(
    keyset: &Keyset,
    page: SearchPage,
) -> Result<(Vec<Contact>, Option<Keyset>), RunError> {
    advance_on(keyset, page, MODIFIED)
}

/// [`advance`] for records whose modification time is the property `modified`.
pub(crate) fn advance_on(
    keyset: &Keyset,
    page: SearchPage,
    modified: &str,
) -> Result<(Vec<Contact>, Option<Keyset>), RunError> {
    let more = page.next_after.is_some() && !page.results.is_empty();
    let stamped: Vec<(Option<i64>, Contact)> = page
        .results
        .into_iter()
        .map(|contact| (modified_ms(&contact, modified), contact))
        .collect();
    match keyset {
        Keyset::Range {
            since_ms,
            strict,
            seen,
        } => {
            let seen_set: HashSet<&HsObjectId> = seen.iter().collect();
            let last_ms = stamped.iter().filter_map(|(ms, _)| *ms).max();
            let at_last: Vec<HsObjectId> = stamped
                .iter()
                .filter(|(ms, _)| ms.is_some() && *ms == last_ms)
                .map(|(_, c)| c.id.clone())
                .collect();
            let next = match last_ms {
                None if more => Some(Keyset::Scan {
                    since_ms: *since_ms,
                    strict: *strict,
                    after_id: None,
                    seen: seen
                        .iter()
                        .cloned()
                        .chain(stamped.iter().map(|(_, c)| c.id.clone()))
                        .collect(),
                }),
                Some(last) if more => {
                    let stuck = last == *since_ms && !*strict;
                    if stuck || at_last.len() > TIE_THRESHOLD {
                        let mut tie_seen = at_last;
                        if stuck {
                            tie_seen.extend(seen.iter().cloned());
                        }
                        Some(Keyset::Tie {
                            at_ms: last,
                            after_id: None,
                            seen: tie_seen,
                        })
                    } else {
                        Some(Keyset::Range {
                            since_ms: last,
                            strict: false,
                            seen: at_last,
                        })
                    }
                }
                _ => None,
            };
            let records = stamped
                .into_iter()
                .filter(|(ms, c)| !(*ms == Some(*since_ms) && seen_set.contains(&c.id)))
                .map(|(_, c)| c)
                .collect();
            Ok((records, next))
        }
        Keyset::Scan {
            since_ms,
            strict,
            seen,
            ..
        } => {
            let next = match stamped.last() {
                Some((_, last)) if more => Some(Keyset::Scan {
                    since_ms: *since_ms,
                    strict: *strict,
                    after_id: Some(last.id.clone()),
                    seen: seen.clone(),
                }),
                // Every contact of the range is read.
                _ => None,
            };
            let seen: HashSet<&HsObjectId> = seen.iter().collect();
            let records = stamped
                .into_iter()
                .filter(|(_, c)| !seen.contains(&c.id))
                .map(|(_, c)| c)
                .collect();
            Ok((records, next))
        }
        Keyset::Tie { at_ms, seen, .. } => {
            let last_id = stamped.last().map(|(_, c)| c.id.clone());
            let next = match last_id {
                Some(last_id) if more => {
                    let last_n = numeric(&last_id);
                    Some(Keyset::Tie {
                        at_ms: *at_ms,
                        seen: seen
                            .iter()
                            .filter(|id| numeric(id).is_none_or(|n| Some(n) > last_n))
                            .cloned()
                            .collect(),
                        after_id: Some(last_id),
                    })
                }
                // Every contact of this instant is read: go on after it.
                _ => Some(Keyset::Range {
                    since_ms: *at_ms,
                    strict: true,
                    seen: Vec::new(),
                }),
            };
            let seen: HashSet<&HsObjectId> = seen.iter().collect();
            let records = stamped
                .into_iter()
                .filter(|(_, c)| !seen.contains(&c.id))
                .map(|(_, c)| c)
                .collect();
            Ok((records, next))
        }
    }
}

fn numeric(id: &HsObjectId) -> Option<u64> {
    id.0.parse().ok()
}

/// A record's modification time (`modified`: `lastmodifieddate` for contacts) in
/// milliseconds (ISO 8601 or epoch milliseconds), else its `updatedAt`.
fn modified_ms(contact: &Contact, modified: &str) -> Option<i64> {
    let from_property = contact.property(modified).and_then(|v| {
        v.parse::<i64>().ok().or_else(|| {
            DateTime::parse_from_rfc3339(v)
                .ok()
                .map(|t| t.timestamp_millis())
        })
    });
    from_property.or_else(|| contact.updated_at.map(|t| t.timestamp_millis()))
}

/// Checks and normalises one HubSpot contact; what the database cannot hold is a failed
/// record, never a failed page.
pub fn pulled_contact(
    contact: &Contact,
    keys: &ExternalKeys,
) -> Result<PulledContact, RecordError> {
    let email = contact.email().and_then(Email::parse);
    let fail = |reason: String| RecordError {
        contact_id: None,
        company_id: None,
        email: email.clone().map(Email::into_string),
        hs_object_id: Some(contact.id.clone()),
        reason,
    };
    let id = contact.id.0.trim();
    if id.is_empty() {
        return Err(fail("HubSpot sent a contact with an empty id".to_owned()));
    }
    let first_name = contact.property("firstname").map(str::to_owned);
    let last_name = contact.property("lastname").map(str::to_owned);
    for (name, value) in [
        ("id", Some(id)),
        ("email", email.as_ref().map(Email::as_str)),
        ("firstname", first_name.as_deref()),
        ("lastname", last_name.as_deref()),
    ] {
        if value.is_some_and(|v| v.contains('\0')) {
            return Err(fail(format!(
                "its {name} contains a NUL character, which the database cannot store"
            )));
        }
    }
    let merged_ids = contact
        .property("hs_merged_object_ids")
        .map(|ids| {
            ids.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(HsObjectId::from)
                .collect()
        })
        .unwrap_or_default();
    // A value that is not this installation's key (another database pushed the contact, or
    // someone set it by hand) matches nothing here: the contact is matched by id and email as
    // any other.
    let external_key = contact.property(EXTERNAL_KEY).and_then(|k| keys.parse(k));
    Ok(PulledContact {
        hs_object_id: HsObjectId::from(id),
        email,
        first_name,
        last_name,
        merged_ids,
        external_key,
    })
}

/// A page write that failed: a unique clash means a concurrent writer got in between (the
/// job retries the page from its checkpoint); anything else as the store classifies it.
pub(crate) fn write_error(e: StoreError) -> RunError {
    if let StoreError::Query(sqlx::Error::Database(db)) = &e
        && db.is_unique_violation()
    {
        return RunError::Transient(RunFailure::caused_by(
            "a concurrent write clashed with this page",
            e,
        ));
    }
    e.into()
}

/// `a + b`, field by field.
pub(crate) fn add_counts(a: PullCounts, b: PullCounts) -> PullCounts {
    PullCounts {
        total: a.total + b.total,
        created: a.created + b.created,
        created_without_email: a.created_without_email + b.created_without_email,
        linked: a.linked + b.linked,
        upserted: a.upserted + b.upserted,
        unchanged: a.unchanged + b.unchanged,
        failed: a.failed + b.failed,
        unlinked: a.unlinked + b.unlinked,
        associations_created: a.associations_created + b.associations_created,
        associations_removed: a.associations_removed + b.associations_removed,
        associations_failed: a.associations_failed + b.associations_failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Installation;
    use std::collections::BTreeMap;

    /// Keys of an installation that wrote bare keys up to row 100.
    fn keys() -> ExternalKeys {
        ExternalKeys::new(&Installation {
            id: "0123456789abcdef".to_owned(),
            legacy_keys_through: Some(ContactId(100)),
        })
    }

    fn at(id: &str, ms: i64) -> Contact {
        let mut properties = BTreeMap::new();
        properties.insert(
            MODIFIED.to_owned(),
            Some(
                DateTime::from_timestamp_millis(ms)
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
        );
        Contact {
            id: HsObjectId::from(id),
            properties,
            created_at: None,
            updated_at: None,
            archived: false,
            archived_at: None,
            object_write_trace_id: None,
        }
    }

    fn page(results: Vec<Contact>, more: bool) -> SearchPage {
        SearchPage {
            total: 0,
            results,
            next_after: more.then(|| "200".to_owned()),
        }
    }

    fn ids(records: &[Contact]) -> Vec<&str> {
        records.iter().map(|c| c.id.0.as_str()).collect()
    }

    fn range(since_ms: i64, strict: bool, seen: &[&str]) -> Keyset {
        Keyset::Range {
            since_ms,
            strict,
            seen: seen.iter().map(|s| HsObjectId::from(*s)).collect(),
        }
    }

    #[test]
    fn the_next_query_starts_at_the_last_timestamp_and_skips_what_was_written_there() {
        let start = range(10, false, &[]);
        let (records, next) = advance(
            &start,
            page(vec![at("1", 10), at("2", 20), at("3", 20)], true),
        )
        .unwrap();
        assert_eq!(ids(&records), ["1", "2", "3"]);
        assert_eq!(next, Some(range(20, false, &["2", "3"])));

        let (records, next) = advance(
            &range(20, false, &["2", "3"]),
            page(vec![at("3", 20), at("4", 20), at("5", 30)], false),
        )
        .unwrap();
        assert_eq!(
            ids(&records),
            ["4", "5"],
            "3 was written by the previous page"
        );
        assert_eq!(next, None, "the last page ends the pull");
    }

    #[test]
    fn a_contact_changed_again_after_being_written_is_written_again() {
        let (records, _) =
            advance(&range(20, false, &["2"]), page(vec![at("2", 25)], false)).unwrap();
        assert_eq!(ids(&records), ["2"]);
    }

    #[test]
    fn a_full_page_of_one_instant_is_read_by_id_then_the_range_goes_on_after_it() {
        let same: Vec<Contact> = (1..=3).map(|i| at(&i.to_string(), 50)).collect();
        let (records, next) = advance(&range(50, false, &[]), page(same, true)).unwrap();
        assert_eq!(records.len(), 3);
        let Some(Keyset::Tie {
            at_ms: 50,
            after_id: None,
            seen,
        }) = &next
        else {
            panic!("expected the tie phase, got {next:?}");
        };
        assert_eq!(seen.len(), 3);

        let tie = next.unwrap();
        let (records, next) = advance(&tie, page(vec![at("1", 50), at("4", 50)], true)).unwrap();
        assert_eq!(ids(&records), ["4"]);
        assert!(matches!(
            &next,
            Some(Keyset::Tie { after_id: Some(id), .. }) if id.0 == "4"
        ));

        let (records, next) = advance(&next.unwrap(), page(vec![at("9", 50)], false)).unwrap();
        assert_eq!(ids(&records), ["9"]);
        assert_eq!(next, Some(range(50, true, &[])));
    }

    /// A search result as HubSpot may send it: the modification time requested, but `null`
    /// (or left out, when `with_property` is false), and no `updatedAt`.
    fn untimed(id: &str, with_property: bool) -> Contact {
        let properties = if with_property {
            serde_json::json!({ "email": null, MODIFIED: null })
        } else {
            serde_json::json!({})
        };
        serde_json::from_value(serde_json::json!({ "id": id, "properties": properties }))
            .expect("HubSpot's shape")
    }

    #[test]
    fn a_contact_without_a_modification_time_is_written_and_the_range_goes_on_from_the_others() {
        let (records, next) = advance(
            &range(10, false, &[]),
            page(
                vec![
                    at("1", 10),
                    untimed("2", true),
                    at("3", 20),
                    untimed("4", false),
                ],
                true,
            ),
        )
        .expect("a missing time does not fail the pull");
        assert_eq!(ids(&records), ["1", "2", "3", "4"], "all four are written");
        assert_eq!(
            next,
            Some(range(20, false, &["3"])),
            "the cursor stays at the largest time shown, a lower bound of every unread contact"
        );

        let (records, next) = advance(
            &range(20, false, &["3"]),
            page(vec![at("3", 20), untimed("4", true), at("5", 30)], false),
        )
        .unwrap();
        assert_eq!(
            ids(&records),
            ["4", "5"],
            "an untimed contact is never skipped as seen"
        );
        assert_eq!(next, None);
    }

    #[test]
    fn a_page_without_any_modification_time_goes_on_in_id_order_until_the_range_ends() {
        let (records, next) = advance(
            &range(10, true, &[]),
            page(vec![untimed("5", true), untimed("6", false)], true),
        )
        .unwrap();
        assert_eq!(ids(&records), ["5", "6"]);
        let scan = Keyset::Scan {
            since_ms: 10,
            strict: true,
            after_id: None,
            seen: vec![HsObjectId::from("5"), HsObjectId::from("6")],
        };
        assert_eq!(next.as_ref(), Some(&scan), "no time to go on from: by id");
        let q = serde_json::to_value(search_request(&scan)).unwrap();
        assert_eq!(q["filterGroups"][0]["filters"][0]["operator"], "GT");
        assert_eq!(q["sorts"][0]["propertyName"], "hs_object_id");

        let (records, next) =
            advance(&scan, page(vec![untimed("5", true), at("7", 30)], true)).unwrap();
        assert_eq!(ids(&records), ["7"], "5 was written by the previous page");
        let Some(Keyset::Scan {
            after_id: Some(after),
            ..
        }) = &next
        else {
            panic!("the scan goes on after the last id: {next:?}");
        };
        assert_eq!(after.0, "7");
        let q = serde_json::to_value(search_request(next.as_ref().unwrap())).unwrap();
        assert_eq!(
            q["filterGroups"][0]["filters"][1],
            serde_json::json!({"propertyName": "hs_object_id", "operator": "GT", "value": "7"})
        );

        let (records, next) = advance(&next.unwrap(), page(vec![at("9", 40)], false)).unwrap();
        assert_eq!(ids(&records), ["9"]);
        assert_eq!(next, None, "the scan read the whole range: the pull ends");
    }

    #[test]
    fn a_null_property_is_read_exactly_as_an_absent_one() {
        let mut absent = untimed("8", false);
        absent.updated_at = None;
        let with_nulls: Contact = serde_json::from_value(serde_json::json!({
            "id": "8",
            "properties": {
                "email": null, "firstname": null, "lastname": null,
                "hs_merged_object_ids": null, EXTERNAL_KEY: null, MODIFIED: null
            },
            "updatedAt": null, "createdAt": null, "archivedAt": null
        }))
        .expect("null is accepted for any property value");
        for name in PROPERTIES.iter().chain(&[MODIFIED]) {
            assert_eq!(with_nulls.property(name), None, "{name}");
        }
        assert_eq!(
            pulled_contact(&with_nulls, &keys()),
            pulled_contact(&absent, &keys())
        );
        assert_eq!(
            modified_ms(&with_nulls, MODIFIED),
            modified_ms(&absent, MODIFIED)
        );
    }

    #[test]
    fn the_search_query_filters_and_sorts_on_the_modification_time_then_on_the_id() {
        let q = serde_json::to_value(search_request(&range(1_000, true, &[]))).unwrap();
        assert_eq!(q["filterGroups"][0]["filters"][0]["operator"], "GT");
        assert_eq!(q["filterGroups"][0]["filters"][0]["value"], "1000");
        assert_eq!(q["sorts"][0]["propertyName"], MODIFIED);
        assert_eq!(q["limit"], 200);

        let tie = Keyset::Tie {
            at_ms: 7,
            after_id: Some(HsObjectId::from("42")),
            seen: vec![],
        };
        let q = serde_json::to_value(search_request(&tie)).unwrap();
        assert_eq!(q["filterGroups"][0]["filters"][0]["operator"], "EQ");
        assert_eq!(
            q["filterGroups"][0]["filters"][1]["propertyName"],
            "hs_object_id"
        );
        assert_eq!(q["filterGroups"][0]["filters"][1]["value"], "42");
        assert_eq!(q["sorts"][0]["propertyName"], "hs_object_id");
    }

    #[test]
    fn a_nul_character_fails_the_record_with_a_reason() {
        let mut c = at("5", 1);
        c.properties
            .insert("firstname".to_owned(), Some("A\0B".to_owned()));
        let err = pulled_contact(&c, &keys()).unwrap_err();
        assert_eq!(err.hs_object_id, Some(HsObjectId::from("5")));
        assert!(err.reason.contains("firstname"), "{}", err.reason);
    }

    #[test]
    fn emails_are_normalised_and_merged_ids_split() {
        let mut c = at("5", 1);
        c.properties
            .insert("email".to_owned(), Some("  Ann@Acme.COM ".to_owned()));
        c.properties
            .insert("hs_merged_object_ids".to_owned(), Some("3;4".to_owned()));
        let p = pulled_contact(&c, &keys()).unwrap();
        assert_eq!(p.email.as_ref().map(Email::as_str), Some("ann@acme.com"));
        assert_eq!(
            p.merged_ids,
            vec![HsObjectId::from("3"), HsObjectId::from("4")]
        );
    }

    #[test]
    fn the_external_key_is_read_when_it_is_this_installations() {
        let mut c = at("5", 1);
        let mut key = |value: &str| {
            c.properties
                .insert(EXTERNAL_KEY.to_owned(), Some(value.to_owned()));
            pulled_contact(&c, &keys()).unwrap().external_key
        };
        assert_eq!(key(" 0123456789abcdef:42 "), Some(ContactId(42)));
        assert_eq!(key("0123456789abcdef:420"), Some(ContactId(420)));
        assert_eq!(
            key("42"),
            Some(ContactId(42)),
            "a bare key it wrote earlier"
        );
        assert_eq!(key("420"), None, "a bare key of a row created since");
        assert_eq!(key("fedcba9876543210:42"), None, "another installation's");
        assert_eq!(key("vip"), None);
    }

    #[test]
    fn the_checkpoint_reads_back_as_written() {
        let cursor = Cursor {
            started_at: Utc::now(),
            position: Position::Search {
                keyset: range(5, false, &["1"]),
            },
        };
        let json = serde_json::to_value(&cursor).unwrap();
        assert_eq!(json["position"]["source"], "search");
        assert_eq!(json["position"]["keyset"]["phase"], "range");
        assert_eq!(serde_json::from_value::<Cursor>(json).unwrap(), cursor);
    }
}
