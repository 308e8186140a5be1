//! Pull into a user's table: HubSpot's records (contacts or companies) with the mapped
//! properties, matched to rows by the HubSpot id of their link, then by a merged-away id a link
//! names (HubSpot merged that record into this one: the link moves to the survivor), then by
//! identity (email, a unique property, or the row an external key names; never a company's
//! domain); the mapped `pull` and `both` columns of a matched row are written by one `UPDATE`
//! of those columns. "Contact" below stands for either object.
//!
//! - A **full** pull lists every contact (100 per call). After the list, the links whose
//!   HubSpot record it did not show are read by id, 100 per batch ([`lookup::look_up`]):
//!   records HubSpot no longer has are marked deleted in `object_links` (counted `unlinked`,
//!   never created again by a push); records merged into another move their link to the
//!   survivor. Silence is not deletion: only a record the read reports gone is marked.
//! - An **incremental** pull searches the contacts modified since the mapping's own bookmark
//!   (minus the lookback), with the same keyset paging as the built-in contacts pull
//!   ([`crate::sync::pull`]); with no bookmark it is a full pull. A successful pull of either
//!   kind stores the bookmark (when its first run started) in its last page's transaction.
//! - A **dry run** writes each page through the same code in a transaction it rolls back,
//!   then commits only the job row (counts and plan) and, for a full list, which ids it saw.
//!
//! A `both` field is written only when HubSpot's value changed since the last sync and the
//! local one did not, or both changed and HubSpot owns the field. A pull never inserts a row
//! (it cannot know the table's other columns): a HubSpot-only contact is counted `unchanged`,
//! and so is a contact whose email a row marked deleted has (a restore is the user's act).
//! Counts: `total` contacts read = `linked` (rows linked by this pull) + `unchanged` (rows
//! already linked, and HubSpot-only contacts) + `failed`; `upserted` counts the rows whose
//! columns this pull wrote (linked or not); `unlinked` the rows marked deleted (not in `total`).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::Mapped;
use super::associations::{self, ReadCompanies};
use super::remote::Record as Contact;
use super::values::{column_value, hash, local_canonical, remote_value};
use crate::hubspot::{Batch, MAX_BATCH};
use crate::ids::{CompanyId, HsObjectId};
use crate::jobs::model::{
    Counts, Plan, PlannedAction, PlannedKind, PullCounts, PullOutcome, RecordError,
};
use crate::jobs::{Page, Progress, RunError, RunFailure};
use crate::mapping::ColumnName;
use crate::mapping::convert::RecordError as ConversionErrors;
use crate::mapping::{Flow, Owner};
use crate::store::{
    ColumnValue, KeyKind, LinkWrite, LocalRecord, PendingObject, PendingPull, Store, Tx,
};
use crate::sync::associations::PhaseNotes;
use crate::sync::lookup::Fate;
use crate::sync::pull::{Keyset, PullCursor, PullPosition, advance_on, search_request_on};
use crate::sync::{SyncContext, hubspot_error};

/// The property listing the ids HubSpot merged into a contact (`;`-separated).
const MERGED_IDS: &str = "hs_merged_object_ids";

/// A mapped pull's checkpoint (the contacts pull's shape): its sweep goes on by local key.
type Cursor = PullCursor<Option<String>>;
/// Where a mapped pull goes on; its sweep checks, by local key after `after`, the links whose
/// record the full list did not show.
type Position = PullPosition<Option<String>>;

/// A checkpoint as stored: today's, or one a full pull wrote before pulls had positions (the
/// list's cursor alone).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stored {
    Cursor(Cursor),
    Legacy { after: Option<String> },
}

/// Runs one pull of `mapped` (full, or incremental from the mapping's bookmark) from the job's
/// checkpoint; a dry run writes nothing but the job row.
pub(crate) async fn run(
    ctx: &SyncContext,
    mapped: &Mapped,
    incremental: bool,
    dry_run: bool,
    progress: &Progress,
) -> Result<(), RunError> {
    let Counts::Pull(counts) = progress.counts() else {
        return Err(RunError::fatal("a pull job holds push counts"));
    };
    let cursor = match progress.checkpoint_as::<Stored>()? {
        Some(Stored::Cursor(cursor)) => cursor,
        Some(Stored::Legacy { after }) => Cursor {
            started_at: Utc::now(),
            position: Position::List { after },
        },
        None => start(ctx, mapped, progress, incremental).await?,
    };
    // A fresh dry run's plan starts with the property calls.
    let plan = if progress.checkpoint().is_none() {
        mapped.property_plan.clone()
    } else {
        Plan::default()
    };
    let mut run = PullRun {
        ctx,
        mapped,
        progress,
        started_at: cursor.started_at,
        counts,
        dry_run,
        plan,
        notes: PhaseNotes::default(),
        pages: crate::sync::pull::dry_pages(progress, dry_run && !incremental).await?,
        dry_adopted: HashSet::new(),
    };
    let mut position = cursor.position;
    while position != Position::Done {
        if progress.should_stop() {
            return Err(RunError::Interrupted);
        }
        position = match position {
            Position::List { after } => run.list_page(after).await?,
            Position::Search { keyset } => run.search_page(keyset).await?,
            Position::Sweep { after } => run.sweep_page(after).await?,
            Position::Done => Position::Done,
        };
    }
    if !incremental && !dry_run {
        // A full pull ends with the rows' primary companies (docs/associations.md); a dry one
        // read them with its pages.
        run.counts = super::associations::pull(&ctx.hubspot, mapped, progress, run.counts).await?;
    }
    progress.set_total(run.counts.total).await?;
    tracing::info!(job = %progress.job_id(), key = %mapped.checked.mapping.key, counts = ?run.counts, incremental, dry_run, "pull into a mapped table finished");
    Ok(())
}

/// Where a job's first run starts: the list for a full pull or when the mapping has no
/// bookmark yet, else a search from the bookmark minus the lookback.
async fn start(
    ctx: &SyncContext,
    mapped: &Mapped,
    progress: &Progress,
    incremental: bool,
) -> Result<Cursor, RunError> {
    let started_at = Utc::now();
    let bookmark = if incremental {
        progress.store().mapped_pull_bookmark(&mapped.table).await?
    } else {
        None
    };
    let position = match bookmark {
        None => {
            progress.store().forget_stale_pull_seen().await?;
            Position::List { after: None }
        }
        Some(bookmark) => {
            let lookback = chrono::Duration::from_std(ctx.pull.lookback)
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
    Ok(Cursor {
        started_at,
        position,
    })
}

/// One run of a pull job of a mapped table.
struct PullRun<'a> {
    ctx: &'a SyncContext,
    mapped: &'a Mapped,
    progress: &'a Progress,
    started_at: DateTime<Utc>,
    /// Cumulative counts as last committed.
    counts: PullCounts,
    /// Roll each page back and keep a plan instead.
    dry_run: bool,
    /// A dry run's plan not committed yet.
    plan: Plan,
    /// What a dry full pull's page notes for planning the real pull's association phase, which
    /// reads the rows' companies after the pages, by key in its order; saved with the page.
    notes: PhaseNotes<ReadOrder>,
    /// The pages a dry full pull has written (by every run of it), which number its notes.
    pages: u64,
    /// The companies earlier pages of a dry incremental pull adopted (and rolled back), which
    /// the real run holds by then.
    dry_adopted: HashSet<CompanyId>,
}

impl PullRun<'_> {
    /// Reads and writes one page of the full list.
    async fn list_page(&mut self, after: Option<String>) -> Result<Position, RunError> {
        let remote = self.mapped.remote(&self.ctx.hubspot);
        let page = remote
            .list(after, read_properties(self.mapped))
            .await
            .map_err(|e| hubspot_error(&format!("listing HubSpot {}", remote.nouns()), e))?;
        let next = match page.next_after {
            Some(after) => Position::List { after: Some(after) },
            None => Position::Sweep { after: None },
        };
        self.write(page.results, "list", true, next).await
    }

    /// Reads and writes one page of the contacts changed since the bookmark.
    async fn search_page(&mut self, keyset: Keyset) -> Result<Position, RunError> {
        let remote = self.mapped.remote(&self.ctx.hubspot);
        let request = search_request_on(&keyset, read_properties(self.mapped), remote.modified());
        let page = remote.search(&request).await.map_err(|e| {
            hubspot_error(
                &format!("searching HubSpot for changed {}", remote.nouns()),
                e,
            )
        })?;
        let (records, next) = advance_on(&keyset, page, remote.modified())?;
        let next = next.map_or(Position::Done, |keyset| Position::Search { keyset });
        self.write(records, "search", false, next).await
    }

    /// Writes one page read by `call`, committed with the checkpoint `next`; a list page
    /// records which ids it saw (for the sweep), and the page that ends the reading stores
    /// the bookmark (never in a dry run).
    async fn write(
        &mut self,
        contacts: Vec<Contact>,
        call: &str,
        list: bool,
        next: Position,
    ) -> Result<Position, RunError> {
        let seen: Vec<String> = if list {
            contacts.iter().map(|c| c.id.0.clone()).collect()
        } else {
            Vec::new()
        };
        let ends = matches!(next, Position::Done | Position::Sweep { .. });
        // A full pull reads the rows' companies after its pages; a dry one cannot (its pages'
        // links are rolled back), so it reads them with each page, as an incremental pull does.
        let companies = if list && !self.dry_run {
            ReadCompanies::default()
        } else {
            let store = self.progress.store();
            let ids: Vec<HsObjectId> = contacts.iter().map(|c| c.id.clone()).collect();
            let new = linked_by_the_page(store, self.mapped, &contacts).await?;
            associations::read_page(&self.ctx.hubspot, self.mapped, store, &ids, &new).await?
        };
        if list {
            // The real full pull reads them 1,000 a call after its pages: counted at its end.
            self.note_reads(&companies);
        } else {
            self.plan.call("association_read", companies.calls());
            companies
                .company_calls_beyond(&self.dry_adopted)
                .plan(&mut self.plan);
            if self.dry_run {
                self.dry_adopted.extend(companies.adopted().cloned());
            }
        }
        let notes = if list && self.dry_run {
            self.pages += 1;
            Some((std::mem::take(&mut self.notes), self.pages))
        } else {
            None
        };
        let end = PageEnd {
            notes,
            checkpoint: self.checkpoint(&next)?,
            answered: (PendingObject::Contact, &[]),
            seen_by: list.then(|| self.job_key()),
            seen,
            bookmark: (ends && !self.dry_run).then_some(self.started_at),
            dry_run: self.dry_run,
            call,
            plan: std::mem::take(&mut self.plan),
            companies,
        };
        self.counts = pull_page(self.progress, self.mapped, self.counts, contacts, end).await?;
        Ok(next)
    }

    /// After a full list: the links whose record the list did not show, 100 at a time by
    /// local key, read by id. Records HubSpot no longer has are marked deleted (`unlinked`);
    /// records merged into another move their link to the survivor. The last batch forgets
    /// what the job saw.
    async fn sweep_page(&mut self, after: Option<String>) -> Result<Position, RunError> {
        let job = self.job_key();
        if after.is_none() {
            self.progress
                .store()
                .refresh_sweep_statistics(crate::store::SweepTable::ObjectLinks)
                .await?;
        }
        let object = self.mapped.table.object;
        let rows = self
            .progress
            .store()
            .object_links_unseen(object, &job, after.as_deref(), MAX_BATCH as u32)
            .await?;
        let mut plan = std::mem::take(&mut self.plan);
        let Some(last) = rows.last().map(|(key, _)| key.clone()) else {
            let mut tx = self.progress.begin().await?;
            tx.forget_pull_seen(&job).await?;
            if self.dry_run {
                self.plan_association_phase(&mut tx, &mut plan).await?;
            }
            self.commit(tx, self.counts, &Position::Done, plan).await?;
            return Ok(Position::Done);
        };
        let ids: Vec<HsObjectId> = rows.iter().map(|(_, id)| id.clone()).collect();
        let (mut fates, gets) = self
            .mapped
            .remote(&self.ctx.hubspot)
            .look_up_counted(&ids, "checking records a full pull did not see")
            .await?;
        plan.call("batch_read", 1);
        plan.call("get", gets);
        let mut gone = Vec::new();
        let mut moves = Vec::new();
        for (key, id) in &rows {
            match fates.remove(id) {
                Some(Fate::Gone) | None => gone.push(key.clone()),
                Some(Fate::MergedInto(survivor)) => moves.push((key.clone(), survivor.id)),
                // Alive (created or changed after the list passed it), or unreadable: left
                // alone, the next full pull asks again.
                Some(Fate::Live(_) | Fate::Refused(_)) => {}
            }
        }
        let mut tx = self.progress.begin().await?;
        if self.dry_run {
            // The rows left linked are read by the real association phase too (their
            // companies were not read here: counted as one page).
            for (key, _) in rows.iter().filter(|(key, _)| !gone.contains(key)) {
                let order = self.read_order(key);
                self.notes.read(order, 0);
            }
            self.pages += 1;
            std::mem::take(&mut self.notes)
                .save(&mut tx, &job, self.pages)
                .await?;
            for key in &gone {
                plan.actions.push(PlannedAction {
                    action: PlannedKind::Skip,
                    contact_id: self.mapped.contact_id(key),
                    email: None,
                    hs_object_id: None,
                    reason: format!(
                        "{}: HubSpot no longer has its {}: the row would be marked deleted and \
                         never created again",
                        self.mapped.label(key),
                        self.mapped.remote_noun()
                    ),
                });
            }
        } else {
            tx.mark_deleted_in_hubspot(object, &gone).await?;
            let held = tx.relink_objects(object, &moves).await?;
            let mut ids: Vec<(String, Option<HsObjectId>)> =
                gone.iter().map(|key| (key.clone(), None)).collect();
            ids.extend(
                moves
                    .iter()
                    .filter(|(key, _)| !held.iter().any(|h| h.key == *key))
                    .map(|(key, survivor)| (key.clone(), Some(survivor.clone()))),
            );
            self.mapped.write_ids(&mut tx, &ids).await?;
            if !gone.is_empty() || !moves.is_empty() {
                tracing::info!(job = %job, deleted = ?gone, merged = ?moves, "full pull of a mapped table: links checked with HubSpot");
            }
            for h in held {
                tracing::warn!(key = %h.key, survivor = %h.hs_object_id, holder = %h.holder, "the survivor of a merge is linked to another row; the link is left as it was");
            }
        }
        let mut counts = self.counts;
        counts.unlinked += gone.len() as u64;
        let next = Position::Sweep { after: Some(last) };
        self.commit(tx, counts, &next, plan).await?;
        Ok(next)
    }

    /// Commits `tx` with the job's counts and checkpoint `next` (and a dry run's plan).
    async fn commit(
        &mut self,
        tx: Tx,
        counts: PullCounts,
        next: &Position,
        plan: Plan,
    ) -> Result<(), RunError> {
        let page = Page {
            counts: Counts::Pull(counts),
            checkpoint: self.checkpoint(next)?,
            errors: Vec::new(),
        };
        if self.dry_run {
            self.progress.commit_planned(tx, page, Some(plan)).await?;
        } else {
            self.progress.commit(tx, page).await?;
        }
        self.counts = counts;
        Ok(())
    }

    fn checkpoint(&self, next: &Position) -> Result<serde_json::Value, RunError> {
        serde_json::to_value(Cursor {
            started_at: self.started_at,
            position: next.clone(),
        })
        .map_err(|e| {
            RunError::Fatal(RunFailure::caused_by(
                "cannot encode the pull checkpoint",
                e,
            ))
        })
    }

    /// The job's key in `pull_seen`.
    fn job_key(&self) -> String {
        self.progress.job_id().to_string()
    }

    /// Notes what the real full pull's association phase reads for a dry page's rows: the
    /// further pages of their companies, and the companies it sets that it has to adopt.
    fn note_reads(&mut self, companies: &ReadCompanies) {
        for (key, pages) in companies.further_pages() {
            let order = self.read_order(key);
            self.notes.read(order, pages);
        }
        if let Some(company) = associations::pulled(self.mapped) {
            for (key, id) in companies.sets(company) {
                let order = self.read_order(key);
                self.notes.set(order, id);
            }
        }
        self.notes.adoption(companies.adoption());
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
        let rows = self.in_table_order(phase.rows()).await?;
        phase.plan(rows, plan);
        Ok(())
    }

    /// `rows` in the order the real association phase reads them: the table's key order. Whole
    /// numbers sort by value here; text keys are sorted by the database, as the key column's
    /// collation orders them (byte order is only one of them), and a key the table no longer
    /// has goes last.
    async fn in_table_order<'k>(
        &self,
        rows: impl Iterator<Item = &'k ReadOrder>,
    ) -> Result<Vec<&'k ReadOrder>, RunError> {
        let rows: Vec<&ReadOrder> = rows.collect();
        if self.mapped.table.key_kind == KeyKind::Integer {
            return Ok(rows);
        }
        let keys: Vec<String> = rows.iter().map(|(_, key)| key.clone()).collect();
        let ordered = self
            .progress
            .store()
            .keys_in_order(&self.mapped.table, &keys)
            .await?;
        let by_key: HashMap<&str, &ReadOrder> =
            rows.iter().map(|row| (row.1.as_str(), *row)).collect();
        let mut out: Vec<&ReadOrder> = ordered
            .iter()
            .filter_map(|key| by_key.get(key.as_str()).copied())
            .collect();
        let listed: HashSet<&str> = ordered.iter().map(String::as_str).collect();
        out.extend(rows.iter().filter(|row| !listed.contains(row.1.as_str())));
        Ok(out)
    }

    /// Where the row `key` comes in the real association phase: whole numbers by value; text
    /// keys are put in the table's order when the plan is made ([`PullRun::in_table_order`]).
    fn read_order(&self, key: &str) -> ReadOrder {
        match (self.mapped.table.key_kind, key.parse::<i64>()) {
            (KeyKind::Integer, Ok(n)) => (n, String::new()),
            _ => (0, key.to_owned()),
        }
    }
}

/// Where a row comes in the real association phase, which reads rows in key order: whole
/// numbers by value, text keys as text.
type ReadOrder = (i64, String);

/// The properties a pull reads: the mapped pull/both ones, the identity, the merged ids and
/// the modification time.
fn read_properties(mapped: &Mapped) -> Vec<String> {
    let mut properties = mapped.properties(false);
    for extra in [
        mapped.identity_property(),
        MERGED_IDS,
        mapped.modified_property(),
    ] {
        if !properties.iter().any(|p| p == extra) {
            properties.push(extra.to_owned());
        }
    }
    properties
}

/// What a page does to one matched row.
struct RowWrite {
    key: String,
    contact: HsObjectId,
    /// The id `hubspot_id_column` takes (when the mapping has one and it changes).
    id: Option<Option<HsObjectId>>,
    columns: Vec<(ColumnName, ColumnValue)>,
    link: Option<LinkWrite>,
    outcome: PullOutcome,
}

/// How a page ends: its checkpoint, the pending webhook ids it answers (cleared with it),
/// the ids a full list saw (recorded for the sweep), the bookmark to store, and whether it is
/// a dry run's (rolled back, with a plan).
struct PageEnd<'a> {
    /// A dry full pull's notes of the page, with its number, saved with it.
    notes: Option<(PhaseNotes<ReadOrder>, u64)>,
    checkpoint: serde_json::Value,
    answered: (PendingObject, &'a [PendingPull]),
    seen_by: Option<String>,
    seen: Vec<String>,
    bookmark: Option<DateTime<Utc>>,
    dry_run: bool,
    call: &'a str,
    /// A dry run's plan so far, which this page's entries join.
    plan: Plan,
    /// The companies of the page's linked contacts, read before its transaction (incremental
    /// and webhook pages; a full pull reads them in its own phase).
    companies: ReadCompanies,
}

/// One batch of a webhook pull of `mapped`: the records webhooks named (`taken`, claimed by
/// the drain, [`crate::sync::webhook_pull`]) read by id with the mapped properties, written
/// like a page of the full pull, and cleared (as reads of `object`) in the page's
/// transaction. Ids HubSpot no longer has are cleared and logged (the next full pull marks
/// their rows; a deletion webhook already has).
pub(crate) async fn webhook_batch(
    ctx: &SyncContext,
    mapped: &Mapped,
    progress: &Progress,
    taken: &[PendingPull],
    object: PendingObject,
    counts: PullCounts,
) -> Result<PullCounts, RunError> {
    let ids: Vec<String> = taken.iter().map(|p| p.hs_object_id.0.clone()).collect();
    let batch = Batch::new(ids)
        .map_err(|e| RunError::fatal(format!("webhook ids do not fit a batch: {e}")))?;
    let read = mapped
        .remote(&ctx.hubspot)
        .batch_read(&batch, None, &read_properties(mapped))
        .await
        .map_err(|e| hubspot_error("reading the records webhooks named", e))?;
    if !read.missing.is_empty() || !read.errors.is_empty() {
        tracing::info!(
            job = %progress.job_id(),
            missing = ?read.missing,
            refused = read.errors.len(),
            "webhook pull of a mapped table: HubSpot did not return every record named"
        );
    }
    let live: Vec<Contact> = read.results.into_iter().filter(|r| !r.archived).collect();
    let ids: Vec<HsObjectId> = live.iter().map(|c| c.id.clone()).collect();
    let new = linked_by_the_page(progress.store(), mapped, &live).await?;
    let companies =
        associations::read_page(&ctx.hubspot, mapped, progress.store(), &ids, &new).await?;
    let end = PageEnd {
        notes: None,
        checkpoint: serde_json::Value::Null,
        answered: (object, taken),
        seen_by: None,
        seen: Vec::new(),
        bookmark: None,
        dry_run: false,
        call: "batch_read",
        plan: Plan::default(),
        companies,
    };
    pull_page(progress, mapped, counts, live, end).await
}

/// The rows a page of `contacts` may link by identity (not linked to them yet), with the
/// contact each would link: their companies are read with the page, so that the page links a
/// row and sets its company at once. The page's own decision is final; a row it does not link
/// after all is found unchanged by nothing and left alone.
async fn linked_by_the_page(
    store: &Store,
    mapped: &Mapped,
    contacts: &[Contact],
) -> Result<Vec<(String, HsObjectId)>, RunError> {
    if !associations::pulls_companies(mapped) || contacts.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<HsObjectId> = contacts.iter().map(|c| c.id.clone()).collect();
    let linked: HashSet<HsObjectId> = store
        .links_by_hubspot_ids(mapped.table.object, &ids)
        .await?
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let unlinked: Vec<&Contact> = contacts
        .iter()
        .filter(|c| !linked.contains(&c.id))
        .collect();
    let identities: Vec<String> = unlinked
        .iter()
        .filter_map(|c| mapped.record_identity(c))
        .collect();
    let keys = mapped.keys_by_identity(store, &identities).await?;
    Ok(unlinked
        .into_iter()
        .filter_map(|c| {
            let key = keys.get(&mapped.record_identity(c)?)?;
            Some((key.clone(), c.id.clone()))
        })
        .collect())
}

/// What a contact of a page found its row by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    /// The row's link names the contact.
    Id,
    /// The row's link names a record HubSpot merged into the contact.
    MergedId,
    /// The row has the record's identity (email, unique property, external key).
    Identity,
}

/// The ids HubSpot merged into `contact`.
fn merged_ids(contact: &Contact) -> Vec<HsObjectId> {
    contact
        .properties
        .get(MERGED_IDS)
        .and_then(Option::as_deref)
        .map(|ids| {
            ids.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(HsObjectId::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Matches, decides and commits one page of HubSpot contacts (see [`PageEnd`]).
async fn pull_page(
    progress: &Progress,
    mapped: &Mapped,
    mut counts: PullCounts,
    contacts: Vec<Contact>,
    end: PageEnd<'_>,
) -> Result<PullCounts, RunError> {
    let store = progress.store();
    let object = mapped.table.object;
    let mut plan = end.plan;
    plan.call(end.call, 1);
    let mut ids: Vec<HsObjectId> = contacts.iter().map(|c| c.id.clone()).collect();
    ids.extend(contacts.iter().flat_map(merged_ids));
    let by_id: HashMap<HsObjectId, String> = store
        .links_by_hubspot_ids(object, &ids)
        .await?
        .into_iter()
        .map(|(key, id)| (id, key))
        .collect();
    let matched = |contact: &Contact| -> Option<(String, Match)> {
        if let Some(key) = by_id.get(&contact.id) {
            return Some((key.clone(), Match::Id));
        }
        merged_ids(contact)
            .iter()
            .find_map(|id| by_id.get(id))
            .map(|key| (key.clone(), Match::MergedId))
    };
    let identities: Vec<String> = contacts
        .iter()
        .filter(|c| matched(c).is_none())
        .filter_map(|c| mapped.record_identity(c))
        .collect();
    let by_email: HashMap<String, String> = mapped.keys_by_identity(store, &identities).await?;
    let mut keys: Vec<String> = contacts
        .iter()
        .filter_map(|c| matched(c).map(|m| m.0))
        .collect();
    keys.extend(by_email.values().cloned());
    let rows: HashMap<String, LocalRecord> = store
        .local_records(&mapped.table, &keys)
        .await?
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    let mut writes = Vec::new();
    let mut errors = Vec::new();
    for contact in &contacts {
        let found = matched(contact).or_else(|| {
            mapped
                .record_identity(contact)
                .and_then(|e| by_email.get(&e))
                .map(|key| (key.clone(), Match::Identity))
        });
        let Some((row, how)) = found.and_then(|(k, how)| rows.get(&k).map(|r| (r, how))) else {
            // Only in HubSpot: pull does not insert rows into a table it does not own.
            counts.add(PullOutcome::Unchanged);
            plan_action(
                &mut plan,
                mapped,
                contact,
                None,
                PlannedKind::Unchanged,
                "only in HubSpot: a pull does not insert rows into your table".to_owned(),
            );
            continue;
        };
        if how == Match::Identity {
            let link = row.link.as_ref();
            let reason = if link.is_some_and(|l| l.deleted) {
                // HubSpot deleted the row's record: a new record with its identity does not
                // bring it back.
                Some("its row is marked deleted in HubSpot; it is not linked again")
            } else if link
                .and_then(|l| l.hs_object_id.as_ref())
                .is_some_and(|id| *id != contact.id)
            {
                // The row is linked to another HubSpot contact: this one is not its record.
                Some("the row it names is linked to another HubSpot record")
            } else {
                None
            };
            if let Some(reason) = reason {
                counts.add(PullOutcome::Unchanged);
                plan_action(
                    &mut plan,
                    mapped,
                    contact,
                    Some(&row.key),
                    PlannedKind::Unchanged,
                    reason.to_owned(),
                );
                continue;
            }
        }
        match decide(mapped, row, contact, how != Match::Id) {
            Ok(write) => writes.push(write),
            Err(problem) => {
                counts.add(PullOutcome::Failed);
                let reason = format!(
                    "{}: HubSpot's values do not fit the table: {problem}",
                    mapped.label(&row.key)
                );
                plan_action(
                    &mut plan,
                    mapped,
                    contact,
                    Some(&row.key),
                    PlannedKind::Fail,
                    reason.clone(),
                );
                errors.push(RecordError {
                    contact_id: mapped.contact_id(&row.key),
                    company_id: None,
                    email: contact_email(mapped, contact),
                    hs_object_id: Some(contact.id.clone()),
                    reason,
                });
            }
        }
    }
    let mut tx = progress.begin().await?;
    // Each write was decided from the row as read before the transaction: a row changed
    // locally since is left for the next sync, never overwritten with what HubSpot had.
    let keys: Vec<String> = writes.iter().map(|w| w.key.clone()).collect();
    let now: HashMap<String, Vec<Option<String>>> = tx
        .local_values_locked(&mapped.table, &keys)
        .await?
        .into_iter()
        .collect();
    let (writes, changed): (Vec<RowWrite>, Vec<RowWrite>) = writes
        .into_iter()
        .partition(|w| rows.get(&w.key).map(|r| &r.values) == now.get(&w.key));
    for write in &changed {
        counts.add(PullOutcome::Unchanged);
        plan.actions.push(planned(
            mapped,
            PlannedKind::Unchanged,
            &write.key,
            &write.contact,
            format!(
                "{}: changed locally while it was pulled; left for the next sync",
                mapped.label(&write.key)
            ),
        ));
    }
    let links: Vec<LinkWrite> = writes.iter().filter_map(|w| w.link.clone()).collect();
    let held = tx.save_object_links(object, &links).await?;
    // The ids the page's links move rows from (a merged-away id followed to its survivor).
    let mut moved_from: Vec<&str> = Vec::new();
    for write in &writes {
        if let Some(h) = held.iter().find(|h| h.key == write.key) {
            counts.add(PullOutcome::Failed);
            let reason = format!(
                "{}: HubSpot {} {} is already linked to {}",
                mapped.label(&write.key),
                mapped.remote_noun(),
                h.hs_object_id,
                mapped.label(&h.holder)
            );
            plan.actions.push(planned(
                mapped,
                PlannedKind::Fail,
                &write.key,
                &write.contact,
                reason.clone(),
            ));
            errors.push(RecordError {
                contact_id: mapped.contact_id(&write.key),
                company_id: None,
                email: None,
                hs_object_id: Some(h.hs_object_id.clone()),
                reason,
            });
            continue;
        }
        moved_from.extend(
            rows.get(&write.key)
                .and_then(|r| r.link.as_ref())
                .and_then(|l| l.hs_object_id.as_ref())
                .filter(|previous| **previous != write.contact)
                .map(|previous| previous.0.as_str()),
        );
        let mut columns = write.columns.clone();
        if let Some(id) = &write.id {
            columns.extend(mapped.id_value(id.as_ref()));
        }
        tx.update_local_row(&mapped.table, &write.key, &columns)
            .await?;
        if !write.columns.is_empty() {
            counts.upserted += 1;
        }
        counts.add(write.outcome);
        plan.actions.push(planned_write(mapped, write));
    }
    errors.extend(associations::apply_page(mapped, &mut tx, &end.companies, &mut counts).await?);
    if end.dry_run {
        // The real code decided and wrote; a dry run keeps its counts, never its writes.
        tx.rollback().await?;
        tx = progress.begin().await?;
    }
    if let Some((notes, page)) = end.notes {
        notes
            .save(&mut tx, &progress.job_id().to_string(), page)
            .await?;
    }
    tx.clear_read(end.answered.0, end.answered.1).await?;
    if let Some(job) = &end.seen_by {
        let mut seen: Vec<&str> = end.seen.iter().map(String::as_str).collect();
        // The real page's rows hold the listed ids now, so its sweep never meets the ids they
        // moved from; the dry page's rows, rolled back, still do.
        if end.dry_run {
            seen.extend(moved_from);
        }
        tx.mark_pull_seen(job, &seen).await?;
    }
    if let Some(at) = end.bookmark {
        tx.set_mapped_pull_bookmark(&mapped.table, at).await?;
    }
    let page = Page {
        counts: Counts::Pull(counts),
        checkpoint: end.checkpoint,
        errors,
    };
    if end.dry_run {
        progress.commit_planned(tx, page, Some(plan)).await?;
    } else {
        progress.commit(tx, page).await?;
    }
    Ok(counts)
}

/// A dry run's entry for a contact that did not reach the write step.
fn plan_action(
    plan: &mut Plan,
    mapped: &Mapped,
    contact: &Contact,
    key: Option<&str>,
    action: PlannedKind,
    reason: String,
) {
    plan.actions.push(PlannedAction {
        action,
        contact_id: key.and_then(|k| mapped.contact_id(k)),
        email: contact_email(mapped, contact),
        hs_object_id: Some(contact.id.clone()),
        reason,
    });
}

fn planned(
    mapped: &Mapped,
    action: PlannedKind,
    key: &str,
    contact: &HsObjectId,
    reason: String,
) -> PlannedAction {
    PlannedAction {
        action,
        contact_id: mapped.contact_id(key),
        email: None,
        hs_object_id: Some(contact.clone()),
        reason,
    }
}

/// A dry run's entry for a row the page wrote (and rolled back).
fn planned_write(mapped: &Mapped, write: &RowWrite) -> PlannedAction {
    let label = mapped.label(&write.key);
    let columns: Vec<&str> = write.columns.iter().map(|(c, _)| c.as_str()).collect();
    let (action, reason) = match (write.outcome, columns.is_empty()) {
        (PullOutcome::Linked, true) => {
            (PlannedKind::Link, format!("{label} would be linked to it"))
        }
        (PullOutcome::Linked, false) => (
            PlannedKind::Link,
            format!(
                "{label} would be linked to it and take HubSpot's {}",
                columns.join(", ")
            ),
        ),
        (_, false) => (
            PlannedKind::Update,
            format!("{label} would take HubSpot's {}", columns.join(", ")),
        ),
        (_, true) => (PlannedKind::Unchanged, format!("{label} is up to date")),
    };
    planned(mapped, action, &write.key, &write.contact, reason)
}

/// The contact's email, trimmed and lower-case.
fn contact_email(mapped: &Mapped, contact: &Contact) -> Option<String> {
    (mapped.identity_property() == "email")
        .then(|| mapped.record_identity(contact))
        .flatten()
}

/// Which columns of `row` take HubSpot's values, the values both sides now agree on, and the
/// new push hash when the row is in sync with them.
fn decide(
    mapped: &Mapped,
    row: &LocalRecord,
    contact: &Contact,
    newly: bool,
) -> Result<RowWrite, ConversionErrors> {
    let old = row.link.clone().unwrap_or_default();
    let mut synced = old.synced.clone();
    let mut columns = Vec::new();
    let mut failures = Vec::new();
    // Every push/both field's local value after this pull, in HubSpot's format.
    let mut after: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (i, field) in mapped.fields.iter().enumerate() {
        let property = field.field.property.as_str().to_owned();
        let local = local_canonical(field, row.values[i].as_deref()).ok();
        if !field.field.flow.direction().writes_locally() {
            after.insert(property, local);
            continue;
        }
        let raw = contact.properties.get(&property).and_then(Option::as_deref);
        let (value, remote) = match remote_value(field, raw) {
            Ok(v) => v,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let last = old.synced.get(&property);
        let take_remote = match field.field.flow {
            _ if local.as_ref() == Some(&remote) => false,
            Flow::Pull => true,
            Flow::Push => false,
            // HubSpot did not change it: the local change (if any) is push's to send.
            Flow::Both(_) if last == Some(&remote) => false,
            // Only HubSpot changed it.
            Flow::Both(_) if last.is_some() && local.as_ref() == last => true,
            // Both changed (or never synced): the owner wins.
            Flow::Both(owner) => owner == Owner::HubSpot,
        };
        let agreed = local.as_ref() == Some(&remote) || take_remote;
        if take_remote {
            columns.push((field.field.column.clone(), column_value(value)));
        }
        if agreed {
            synced.insert(property.clone(), remote.clone());
        }
        if field.field.flow.direction().writes_to_hubspot() {
            after.insert(property, if take_remote { Some(remote) } else { local });
        }
    }
    if !failures.is_empty() {
        return Err(ConversionErrors(failures));
    }
    // In sync when every sent value is the one both sides agree on: the row is then not a
    // push candidate until it changes.
    let in_sync: Option<BTreeMap<String, String>> = after
        .iter()
        .filter(|(p, _)| {
            mapped.fields.iter().any(|f| {
                f.field.property.as_str() == p.as_str()
                    && f.field.flow.direction().writes_to_hubspot()
            })
        })
        .map(|(p, v)| match (v, synced.get(p)) {
            (Some(v), Some(s)) if v == s => Some((p.clone(), v.clone())),
            _ => None,
        })
        .collect();
    let pushed_hash = in_sync.as_ref().map(hash);
    let unchanged_link =
        !newly && synced == old.synced && (pushed_hash.is_none() || pushed_hash == old.pushed_hash);
    let link = (!unchanged_link).then(|| LinkWrite {
        key: row.key.clone(),
        hs_object_id: Some(contact.id.clone()),
        pushed_hash,
        synced,
    });
    let id = if newly {
        mapped.id_column.is_some().then(|| Some(contact.id.clone()))
    } else {
        mapped.id_drift(row)
    };
    Ok(RowWrite {
        key: row.key.clone(),
        contact: contact.id.clone(),
        id,
        columns,
        link,
        outcome: if newly {
            PullOutcome::Linked
        } else {
            PullOutcome::Unchanged
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_written_before_pulls_had_positions_resumes_the_list() {
        let old: Stored = serde_json::from_value(serde_json::json!({ "after": "abc" })).unwrap();
        assert!(matches!(old, Stored::Legacy { after: Some(ref a) } if a == "abc"));
        let first: Stored = serde_json::from_value(serde_json::json!({ "after": null })).unwrap();
        assert!(matches!(first, Stored::Legacy { after: None }));
    }

    #[test]
    fn the_checkpoint_reads_back_as_written() {
        let cursor = Cursor {
            started_at: Utc::now(),
            position: Position::Sweep {
                after: Some("7".to_owned()),
            },
        };
        let json = serde_json::to_value(&cursor).unwrap();
        assert_eq!(json["position"]["source"], "sweep");
        let back: Stored = serde_json::from_value(json).unwrap();
        assert!(matches!(back, Stored::Cursor(c) if c == cursor));
    }

    #[test]
    fn merged_ids_are_split_and_trimmed() {
        let contact: Contact = serde_json::from_value(serde_json::json!({
            "id": "9",
            "properties": { MERGED_IDS: " 3;4 ;;" }
        }))
        .unwrap();
        assert_eq!(
            merged_ids(&contact),
            vec![HsObjectId::from("3"), HsObjectId::from("4")]
        );
        let none: Contact = serde_json::from_value(
            serde_json::json!({ "id": "9", "properties": { MERGED_IDS: null } }),
        )
        .unwrap();
        assert!(merged_ids(&none).is_empty());
    }
}
