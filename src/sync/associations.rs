//! Contact→company associations: `contacts.company_id` ↔ HubSpot's v4 associations, as the
//! last phase of a contact push and of a contact pull.
//!
//! The state is `contact_company_links` ([`crate::store::AssociationRow`]): per contact, the
//! HubSpot company last synced as its primary company. Types are written and matched by
//! number (279 unlabelled + 1 primary), never by label text; a write resends every type the
//! pair already has (a write replaces the pair's label list). Every call spends the
//! associations API's own 10-second budget.
//!
//! Push, per page of 100 candidates (contacts whose company's HubSpot id differs from the
//! one last synced): one batch read of their associations, one batch create (new primary
//! pairs), one batch archive (old pairs), then the state rows, counts and checkpoint in one
//! transaction. A pair already as wanted (a write whose commit a kill lost) is not written
//! again, and still counted: the count is what this job changed.
//!
//! A full pull, per page of 1,000 linked contacts: one batch read (plus one per further page of 500
//! companies of a contact), then the local company set from HubSpot's primary where HubSpot
//! changed it and the local side did not (see `docs/associations.md`). An incremental pull
//! applies the same rules to the contacts each of its pages read, and a webhook pull to the
//! contacts association webhooks named ([`read_for`], then [`apply_read`] in the page's
//! transaction).
//!
//! No HubSpot call is made while a pull's transaction is open: the associations, and the
//! HubSpot companies they name that no local company is linked to (a read-only query on the
//! pool says which), are read first; the transaction then reads the rows again, adopts those
//! companies with the company pull's matching (a company linked meanwhile by another writer
//! resolves to its row, never a second one), applies and commits.

use super::companies::pull::{Adoptable, AdoptionNotes, adopt, read_adoptable};
use super::hubspot_error;
use super::keys::ExternalKeys;
use crate::hubspot::{
    AssociatedRecord, AssociationArchive, AssociationInput, AssociationReadInput, AssociationSpec,
    AssociationTypeId, Batch, HubSpotClient, HubSpotError, MAX_ASSOCIATION_READ, MAX_BATCH,
    ObjectType,
};
use crate::ids::{CompanyId, ContactId, HsObjectId, LocalCompanyId};
use crate::jobs::model::{Counts, Plan, PullCounts, PushCounts, PushMode, RecordError};
use crate::jobs::{Page, Progress, RunError, RunFailure};
use crate::store::{AssociationRow, ContactCompanyChange, Store, Tx};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The checkpoint key that says where an association phase goes on (a contact id); it is
/// added to the contact engine's own checkpoint, which ignores it.
const AFTER_KEY: &str = "associations_after";

/// Contacts per association push page (one batch create and one archive at most).
const PUSH_PAGE: u32 = MAX_BATCH as u32;

/// Where an association phase resumes, from the job's checkpoint (`None`: from the start).
pub(crate) fn resume_after(progress: &Progress) -> Option<ContactId> {
    progress
        .checkpoint()
        .and_then(|c| c.get(AFTER_KEY).and_then(Value::as_i64))
        .map(ContactId)
}

/// `base` (the contact engine's checkpoint) with the association phase's position.
fn with_after(base: &Option<Value>, after: ContactId) -> Value {
    let mut value = base
        .clone()
        .unwrap_or_else(|| Value::Object(Default::default()));
    if let Value::Object(map) = &mut value {
        map.insert(AFTER_KEY.to_owned(), Value::from(after.0));
    }
    value
}

fn encode_error(e: crate::hubspot::BatchTooLarge) -> RunError {
    RunError::Fatal(RunFailure::caused_by("association page too large", e))
}

/// What [`read_companies`] read: each contact's companies, the contacts HubSpot reports not
/// found, and what the reading cost (a dry run counts it as the real run's).
#[derive(Debug, Default)]
pub(crate) struct ContactCompanies {
    /// Every company of each contact with the types between them.
    pub(crate) found: HashMap<String, Vec<AssociatedRecord>>,
    /// The contacts HubSpot reports not found (deleted or merged away since they were named).
    pub(crate) missing: HashSet<String>,
    /// The calls made.
    pub(crate) calls: u64,
    /// The contacts whose companies took more than one of HubSpot's pages, with how many
    /// more each took.
    pub(crate) further_pages: HashMap<String, u64>,
}

/// Every company of each contact with the types between them, following HubSpot's pages, and
/// the contacts HubSpot reports not found (deleted or merged away since they were named).
pub(crate) async fn read_companies(
    client: &HubSpotClient,
    contacts: &[HsObjectId],
) -> Result<ContactCompanies, RunError> {
    let mut read = ContactCompanies::default();
    let mut pending: Vec<AssociationReadInput> = contacts
        .iter()
        .map(|c| AssociationReadInput::first(c.0.clone()))
        .collect();
    while !pending.is_empty() {
        let rest = pending.split_off(pending.len().min(MAX_ASSOCIATION_READ));
        let page = client
            .read_associations(ObjectType::Contacts, ObjectType::Companies, &pending)
            .await
            .map_err(|e| hubspot_error("reading contacts' company associations", e))?;
        read.calls += 1;
        if let Some(error) = page.errors.into_iter().next() {
            return Err(hubspot_error(
                "reading contacts' company associations",
                error.error,
            ));
        }
        pending = rest;
        read.missing.extend(page.missing);
        for record in page.results {
            read.found
                .entry(record.from.clone())
                .or_default()
                .extend(record.to);
            if let Some(after) = record.next_after {
                *read.further_pages.entry(record.from.clone()).or_default() += 1;
                pending.push(AssociationReadInput {
                    id: record.from,
                    after: Some(after),
                });
            }
        }
    }
    Ok(read)
}

/// The calls [`read_companies`] makes for contacts read 1,000 at a time (a full pull's
/// association phase), given how many further pages each contact's companies take, in the
/// order the contacts are read: per 1,000, one call, then one per further page of the
/// contact that has the most (its further pages are read with the others' in one call each).
pub(crate) fn reads_of_full_pull(further_pages: impl IntoIterator<Item = u64>) -> u64 {
    let mut calls = 0;
    let mut in_call = 0;
    let mut most = 0;
    for pages in further_pages {
        if in_call == MAX_ASSOCIATION_READ {
            calls += 1 + most;
            (in_call, most) = (0, 0);
        }
        in_call += 1;
        most = most.max(pages);
    }
    if in_call > 0 {
        calls += 1 + most;
    }
    calls
}

/// The primary company among a contact's companies (by type number).
pub(crate) fn primary_of(records: Option<&Vec<AssociatedRecord>>) -> Option<CompanyId> {
    records?
        .iter()
        .find(|r| r.is_primary())
        .map(|r| CompanyId(r.id.clone()))
}

/// What a push page does for one candidate.
pub(crate) enum PushPlan {
    /// Make the pair primary (`types`: those it must have afterwards; `None`: it is already,
    /// nothing to write), then remove the old pair if any.
    Write {
        company: CompanyId,
        types: Option<Vec<AssociationSpec>>,
        remove: Option<Stale>,
    },
    /// Remove the old pair only (the local company was cleared).
    Remove(Stale),
    /// The contact's company has no HubSpot id.
    Failed(String),
    /// Nothing differs.
    Nothing,
}

/// The company last synced, which the contact no longer has locally.
pub(crate) struct Stale {
    company: CompanyId,
    /// Whether HubSpot still has the pair (a run a kill cut short may have removed it; it
    /// is counted removed all the same, as this job's change).
    in_hubspot: bool,
}

impl Stale {
    /// Whether HubSpot still has the old pair (so it is archived).
    pub(crate) fn in_hubspot(&self) -> bool {
        self.in_hubspot
    }
}

/// The primary company a contact should have, as its local side says.
pub(crate) enum Wanted {
    /// None (the local company is empty).
    Nothing,
    /// This HubSpot company.
    Company(CompanyId),
    /// A company that has no HubSpot id: the association fails, for this reason.
    Unlinked(String),
}

/// What a dry push's contact phase would do to the contacts its association phase meets. Each
/// page's share is saved with the page (`dry_run_notes`), so that a dry push stopped and resumed
/// knows what every run of it would have linked.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PlannedContacts {
    /// The contacts it would link (to this HubSpot id) or create (`None`).
    pub(crate) links: Vec<(ContactId, Option<HsObjectId>)>,
    /// The linked contacts HubSpot no longer has, which it would mark deleted.
    pub(crate) gone: Vec<ContactId>,
}

impl PlannedContacts {
    /// Adds what a later page would do.
    pub(crate) fn extend(&mut self, page: PlannedContacts) {
        self.links.extend(page.links);
        self.gone.extend(page.gone);
    }

    /// The HubSpot ids these pages would link, each with the contact that would hold it.
    pub(crate) fn holders(&self) -> HashMap<HsObjectId, ContactId> {
        self.links
            .iter()
            .filter_map(|(contact, id)| id.clone().map(|id| (id, *contact)))
            .collect()
    }
}

/// The association phase of a contact push: links the unlinked companies contacts name
/// (before any association needs their ids), then writes the associations page by page.
pub(crate) struct AssociationPush<'a> {
    /// The client.
    pub client: &'a HubSpotClient,
    /// The job's progress.
    pub progress: &'a Progress,
    /// The push mode (how unlinked companies are linked).
    pub mode: PushMode,
}

impl AssociationPush<'_> {
    /// Links (finds or creates in HubSpot) every unlinked company a contact names; returns
    /// why each one that could not be linked was not.
    pub(crate) async fn link_companies(&self) -> Result<HashMap<LocalCompanyId, String>, RunError> {
        let mut reasons = HashMap::new();
        let mut after = LocalCompanyId(i64::MIN);
        loop {
            let page = self
                .progress
                .store()
                .companies_named_by_contacts(after, MAX_BATCH as u32)
                .await?;
            let Some(last) = page.last().map(|c| c.id) else {
                return Ok(reasons);
            };
            reasons.extend(
                super::companies::push::link_for_associations(
                    self.client,
                    self.progress.store(),
                    self.mode,
                    &page,
                )
                .await?,
            );
            after = last;
        }
    }

    /// A dry run's association phase: what [`AssociationPush::link_companies`] and
    /// [`AssociationPush::run`] would do, with no write. The companies contacts name are looked
    /// up as the real run would link them; the linked contacts whose company changed and the
    /// contacts the dry run's contact phase would link or create (`planned`, with the HubSpot
    /// id each would get; those it would mark deleted left out) are planned against HubSpot's
    /// associations in the real run's pages (it links them first, then walks them all in
    /// contact-id order); each page commits only the job's counts and plan.
    pub(crate) async fn run_dry(
        &self,
        mut counts: PushCounts,
        planned: &PlannedContacts,
    ) -> Result<PushCounts, RunError> {
        // Where a run stopped in this phase left off: its pages (the same again, made from the
        // same rows and notes) are not counted twice, nor are the company look-ups' calls.
        let resume = resume_after(self.progress);
        let base = self.progress.checkpoint();
        let (companies, calls) = self.resolve_companies_dry().await?;
        if resume.is_none() {
            let checkpoint = with_after(&base, ContactId(i64::MIN));
            self.commit_calls(counts, calls, checkpoint).await?;
        }
        let reasons: HashMap<LocalCompanyId, String> = companies
            .iter()
            .filter_map(|(id, r)| r.as_ref().err().map(|e| (*id, e.clone())))
            .collect();
        let mut pages = DryCandidates {
            store: self.progress.store(),
            companies: &companies,
            planned: planned.links.iter().cloned().collect(),
            gone: planned.gone.iter().copied().collect(),
            after: ContactId(i64::MIN),
            ready: Vec::new(),
            done: false,
        };
        while let Some(rows) = pages.next_page().await? {
            if self.progress.should_stop() {
                return Err(RunError::Interrupted);
            }
            let Some(last) = rows.last().map(|r| r.contact_id) else {
                continue;
            };
            if resume.is_some_and(|after| last <= after) {
                continue;
            }
            let checkpoint = with_after(&base, last);
            counts = self.dry_page(&rows, counts, &reasons, checkpoint).await?;
        }
        // The plan is complete: the contact phase's notes go, and the checkpoint says so.
        let mut tx = self.progress.begin().await?;
        super::dry_notes::forget(&mut tx, &self.progress.job_id().to_string()).await?;
        let page = Page {
            counts: Counts::Push(counts),
            checkpoint: with_after(&base, ContactId(i64::MAX)),
            errors: Vec::new(),
        };
        self.progress.commit_planned(tx, page, None).await?;
        Ok(counts)
    }

    /// What each unlinked company contacts name would be linked to by
    /// [`AssociationPush::link_companies`] (its HubSpot id, empty for one it would create), or
    /// why it would not be, with the calls that linking makes; nothing written.
    async fn resolve_companies_dry(
        &self,
    ) -> Result<(HashMap<LocalCompanyId, Result<CompanyId, String>>, Plan), RunError> {
        let store = self.progress.store();
        let mut companies = HashMap::new();
        let mut linking = super::companies::push::LinkingCalls::default();
        let mut after = LocalCompanyId(i64::MIN);
        loop {
            let page = store
                .companies_named_by_contacts(after, MAX_BATCH as u32)
                .await?;
            let Some(last) = page.last().map(|c| c.id) else {
                return Ok((companies, linking.calls));
            };
            companies.extend(
                super::companies::push::resolve_for_associations(
                    self.client,
                    store,
                    self.mode,
                    &page,
                    Some(&mut linking),
                )
                .await?,
            );
            after = last;
        }
    }

    /// Adds `calls` to a dry run's plan, the counts unchanged, with `checkpoint`.
    async fn commit_calls(
        &self,
        counts: PushCounts,
        calls: Plan,
        checkpoint: Value,
    ) -> Result<(), RunError> {
        let tx = self.progress.begin().await?;
        let page = Page {
            counts: Counts::Push(counts),
            checkpoint,
            errors: Vec::new(),
        };
        self.progress.commit_planned(tx, page, Some(calls)).await
    }

    /// One dry page of [`AssociationPush::run_dry`]: the real page's reads and plan, its counts
    /// and failures committed with the job's plan, nothing written.
    async fn dry_page(
        &self,
        rows: &[AssociationRow],
        mut counts: PushCounts,
        company_reasons: &HashMap<LocalCompanyId, String>,
        checkpoint: Value,
    ) -> Result<PushCounts, RunError> {
        // A contact the dry run would create has no id, and no associations yet.
        let readable: Vec<HsObjectId> = rows
            .iter()
            .map(|r| r.hs_object_id.clone())
            .filter(|id| !id.0.is_empty())
            .collect();
        let read = if readable.is_empty() {
            ContactCompanies::default()
        } else {
            read_companies(self.client, &readable).await?
        };
        let plans: Vec<PushPlan> = rows
            .iter()
            .map(|row| plan(row, read.found.get(&row.hs_object_id.0), company_reasons))
            .collect();
        let mut calls = Plan::default();
        // The real page reads every row, created ones too (they add no further page).
        calls.call("association_read", read.calls.max(1));
        calls.call("association_create", u64::from(plans.iter().any(writes)));
        calls.call("association_archive", u64::from(plans.iter().any(archives)));
        let mut errors = Vec::new();
        for (row, plan) in rows.iter().zip(&plans) {
            match plan {
                PushPlan::Failed(reason) => {
                    counts.associations_failed += 1;
                    errors.push(RecordError {
                        contact_id: Some(row.contact_id),
                        company_id: row.company_id,
                        email: row.email.clone(),
                        hs_object_id: (!row.hs_object_id.0.is_empty())
                            .then(|| row.hs_object_id.clone()),
                        reason: reason.clone(),
                    });
                }
                PushPlan::Write { remove, .. } => {
                    counts.associations_created += 1;
                    counts.associations_removed += u64::from(remove.is_some());
                }
                PushPlan::Remove(_) => counts.associations_removed += 1,
                PushPlan::Nothing => {}
            }
        }
        let tx = self.progress.begin().await?;
        let page = Page {
            counts: Counts::Push(counts),
            checkpoint,
            errors,
        };
        self.progress.commit_planned(tx, page, Some(calls)).await?;
        Ok(counts)
    }

    /// Writes every changed association after the checkpoint, page by page; `company_reasons`
    /// says why companies could not be linked.
    /// `base` is the contact phase's checkpoint, which the pages keep.
    pub(crate) async fn run(
        &self,
        mut counts: PushCounts,
        company_reasons: &HashMap<LocalCompanyId, String>,
        base: Option<Value>,
    ) -> Result<PushCounts, RunError> {
        let mut after = resume_after(self.progress).unwrap_or(ContactId(i64::MIN));
        loop {
            if self.progress.should_stop() {
                return Err(RunError::Interrupted);
            }
            let rows = self
                .progress
                .store()
                .association_push_candidates(after, PUSH_PAGE)
                .await?;
            let Some(last) = rows.last().map(|r| r.contact_id) else {
                return Ok(counts);
            };
            counts = self.page(&rows, counts, company_reasons, &base).await?;
            after = last;
        }
    }

    async fn page(
        &self,
        rows: &[AssociationRow],
        mut counts: PushCounts,
        company_reasons: &HashMap<LocalCompanyId, String>,
        base: &Option<Value>,
    ) -> Result<PushCounts, RunError> {
        let ids: Vec<HsObjectId> = rows.iter().map(|r| r.hs_object_id.clone()).collect();
        let current = read_companies(self.client, &ids).await?.found;
        let plans: Vec<PushPlan> = rows
            .iter()
            .map(|row| plan(row, current.get(&row.hs_object_id.0), company_reasons))
            .collect();
        let refused = write_pairs(self.client, &ids, &plans).await?;
        archive_pairs(self.client, &ids, &plans).await?;
        let mut synced = Vec::new();
        let mut errors = Vec::new();
        for (i, (row, plan)) in rows.iter().zip(&plans).enumerate() {
            let reason = match plan {
                PushPlan::Failed(reason) => Some(reason.clone()),
                _ => refused.get(&i).cloned(),
            };
            if let Some(reason) = reason {
                counts.associations_failed += 1;
                errors.push(RecordError {
                    contact_id: Some(row.contact_id),
                    company_id: row.company_id,
                    email: row.email.clone(),
                    hs_object_id: Some(row.hs_object_id.clone()),
                    reason,
                });
                continue;
            }
            match plan {
                PushPlan::Write {
                    company, remove, ..
                } => {
                    counts.associations_created += 1;
                    counts.associations_removed += u64::from(remove.is_some());
                    synced.push((row.contact_id, Some(company.clone())));
                }
                PushPlan::Remove(_) => {
                    counts.associations_removed += 1;
                    synced.push((row.contact_id, None));
                }
                PushPlan::Failed(_) | PushPlan::Nothing => {}
            }
        }
        let mut tx = self.progress.begin().await?;
        tx.save_synced_companies(&synced).await?;
        let last = rows.last().map_or(ContactId(i64::MIN), |r| r.contact_id);
        self.progress
            .commit(
                tx,
                Page {
                    counts: Counts::Push(counts),
                    checkpoint: with_after(base, last),
                    errors,
                },
            )
            .await?;
        Ok(counts)
    }
}

/// The candidates of a dry association push in the real run's pages: the linked contacts
/// whose company changed and the contacts the dry run would link or create, merged in
/// contact-id order, as the real run finds them once its contact phase linked them.
struct DryCandidates<'a> {
    store: &'a Store,
    /// What each unlinked company would be linked to ([`AssociationPush::resolve_companies_dry`]).
    companies: &'a HashMap<LocalCompanyId, Result<CompanyId, String>>,
    /// The contacts the contact phase would link (to this HubSpot id) or create (`None`).
    planned: std::collections::BTreeMap<ContactId, Option<HsObjectId>>,
    /// The linked contacts the contact phase would mark deleted.
    gone: HashSet<ContactId>,
    /// The last linked candidate read from the database.
    after: ContactId,
    /// Candidates merged, not handed out yet, in contact-id order.
    ready: Vec<AssociationRow>,
    /// The linked candidates were read to their end.
    done: bool,
}

impl DryCandidates<'_> {
    /// The next page of the real run, `None` after the last.
    async fn next_page(&mut self) -> Result<Option<Vec<AssociationRow>>, RunError> {
        while !self.done && self.ready.len() < PUSH_PAGE as usize {
            self.read_more().await?;
        }
        if self.ready.is_empty() {
            return Ok(None);
        }
        let rest = self
            .ready
            .split_off(self.ready.len().min(PUSH_PAGE as usize));
        Ok(Some(std::mem::replace(&mut self.ready, rest)))
    }

    /// Reads the next page of linked candidates, and the planned contacts up to its last one
    /// (all that are left after the last page), into `ready`.
    async fn read_more(&mut self) -> Result<(), RunError> {
        let linked = self
            .store
            .association_push_candidates(self.after, PUSH_PAGE)
            .await?;
        let upto = match linked.last() {
            Some(last) => last.contact_id,
            None => {
                self.done = true;
                ContactId(i64::MAX)
            }
        };
        self.after = upto;
        let ids: Vec<ContactId> = self.planned.range(..=upto).map(|(id, _)| *id).collect();
        let mut rows = self.store.association_rows_of_contacts(&ids).await?;
        // A contact linked already is among the linked candidates when its company changed.
        rows.retain(|r| r.hs_object_id.0.is_empty());
        rows.extend(
            linked
                .into_iter()
                .filter(|r| !self.gone.contains(&r.contact_id)),
        );
        rows.sort_by_key(|r| r.contact_id);
        for mut row in rows {
            if let Some(Some(id)) = self.planned.get(&row.contact_id) {
                // Linked by the contact phase (or moved to the survivor of a merge).
                row.hs_object_id = id.clone();
            }
            // A company the real run links first has its HubSpot id (empty: one it creates).
            if row.company_hs_id.is_none()
                && let Some(Ok(id)) = row.company_id.and_then(|c| self.companies.get(&c))
            {
                row.company_hs_id = Some(id.clone());
            }
            if row.changed_locally() {
                self.ready.push(row);
            }
        }
        self.planned = match upto.0.checked_add(1) {
            Some(next) if !self.done => self.planned.split_off(&ContactId(next)),
            _ => Default::default(),
        };
        Ok(())
    }
}

/// Whether the plan writes a pair.
pub(crate) fn writes(plan: &PushPlan) -> bool {
    matches!(plan, PushPlan::Write { types: Some(_), .. })
}

/// Whether the plan archives an old pair HubSpot still has.
pub(crate) fn archives(plan: &PushPlan) -> bool {
    match plan {
        PushPlan::Write {
            remove: Some(old), ..
        }
        | PushPlan::Remove(old) => old.in_hubspot(),
        _ => false,
    }
}

/// Writes the pairs of `contacts` (by position) their plans make primary and that are not
/// already; returns the refused ones (by position).
pub(crate) async fn write_pairs(
    client: &HubSpotClient,
    contacts: &[HsObjectId],
    plans: &[PushPlan],
) -> Result<HashMap<usize, String>, RunError> {
    let mut which = Vec::new();
    let mut inputs = Vec::new();
    for (i, (contact, plan)) in contacts.iter().zip(plans).enumerate() {
        if let PushPlan::Write {
            company,
            types: Some(types),
            ..
        } = plan
        {
            which.push(i);
            inputs.push(AssociationInput {
                from: contact.0.clone(),
                to: company.0.clone(),
                types: types.clone(),
            });
        }
    }
    let mut refused = HashMap::new();
    if inputs.is_empty() {
        return Ok(refused);
    }
    let batch = Batch::new(inputs).map_err(encode_error)?;
    let outcome = client
        .create_associations(ObjectType::Contacts, ObjectType::Companies, &batch)
        .await
        .map_err(|e| hubspot_error("writing contact→company associations", e))?;
    for error in &outcome.errors {
        let indices = if error.input_indices.is_empty() {
            // HubSpot did not say which pair: none of the unconfirmed ones counts.
            (0..which.len())
                .filter(|n| !outcome.results.iter().any(|r| r.input_index == Some(*n)))
                .collect()
        } else {
            error.input_indices.clone()
        };
        for n in indices {
            if let Some(&i) = which.get(n) {
                refused.insert(i, refusal(&error.error));
            }
        }
    }
    Ok(refused)
}

/// Removes the old pairs of `contacts` (by position) whose company changed or was cleared and
/// that HubSpot still has.
pub(crate) async fn archive_pairs(
    client: &HubSpotClient,
    contacts: &[HsObjectId],
    plans: &[PushPlan],
) -> Result<(), RunError> {
    let inputs: Vec<AssociationArchive> = contacts
        .iter()
        .zip(plans)
        .filter_map(|(contact, plan)| {
            let old = match plan {
                PushPlan::Write {
                    remove: Some(old), ..
                }
                | PushPlan::Remove(old) => old,
                _ => return None,
            };
            old.in_hubspot.then(|| AssociationArchive {
                from: contact.0.clone(),
                to: vec![old.company.0.clone()],
            })
        })
        .collect();
    if inputs.is_empty() {
        return Ok(());
    }
    let batch = Batch::new(inputs).map_err(encode_error)?;
    client
        .archive_associations(ObjectType::Contacts, ObjectType::Companies, &batch)
        .await
        .map_err(|e| hubspot_error("removing old contact→company associations", e))
}

/// What to do for one candidate, given the contact's associations in HubSpot now.
fn plan(
    row: &AssociationRow,
    current: Option<&Vec<AssociatedRecord>>,
    company_reasons: &HashMap<LocalCompanyId, String>,
) -> PushPlan {
    let wanted = match (&row.company_id, &row.company_hs_id) {
        (Some(local), None) => Wanted::Unlinked(match company_reasons.get(local) {
            Some(reason) => format!(
                "its company (local company {local}) could not be linked to HubSpot: {reason}"
            ),
            None => format!(
                "its company (local company {local}) is not linked to a HubSpot company (deleted in HubSpot, or not pushed)"
            ),
        }),
        (_, Some(company)) => Wanted::Company(company.clone()),
        (None, None) => Wanted::Nothing,
    };
    plan_pair(wanted, row.synced_hs_id.as_ref(), current)
}

/// What to do for one contact whose local side wants `wanted` as its primary company, given
/// the one last synced and its associations in HubSpot now.
pub(crate) fn plan_pair(
    wanted: Wanted,
    synced: Option<&CompanyId>,
    current: Option<&Vec<AssociatedRecord>>,
) -> PushPlan {
    let existing_pair = |company: &CompanyId| {
        current.and_then(|records| records.iter().find(|r| r.id == company.0))
    };
    let wanted_id = match &wanted {
        Wanted::Company(company) => Some(company),
        Wanted::Nothing | Wanted::Unlinked(_) => None,
    };
    // The old pair is removed only when HubSpot still has it (a kill may have removed it).
    let stale = synced
        .cloned()
        .filter(|old| Some(old) != wanted_id)
        .map(|company| Stale {
            in_hubspot: existing_pair(&company).is_some(),
            company,
        });
    match wanted {
        Wanted::Unlinked(reason) => PushPlan::Failed(reason),
        Wanted::Company(company) => {
            let company = &company;
            let pair = existing_pair(company);
            let types = match pair {
                Some(pair) if pair.is_primary() => None,
                // Resend the pair's other types: a write replaces its label list.
                _ => {
                    let mut ids: BTreeSet<i32> = pair
                        .map(|p| p.types.iter().map(|t| t.type_id.id()).collect())
                        .unwrap_or_default();
                    let mut types: Vec<AssociationSpec> = pair
                        .map(|p| {
                            p.types
                                .iter()
                                .map(|t| AssociationSpec {
                                    category: t.category,
                                    type_id: t.type_id,
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    for wanted in [
                        AssociationTypeId::ContactToCompany,
                        AssociationTypeId::ContactToCompanyPrimary,
                    ] {
                        if ids.insert(wanted.id()) {
                            types.push(AssociationSpec::hubspot(wanted));
                        }
                    }
                    Some(types)
                }
            };
            PushPlan::Write {
                company: company.clone(),
                types,
                remove: stale,
            }
        }
        Wanted::Nothing => match stale {
            Some(old) => PushPlan::Remove(old),
            None => PushPlan::Nothing,
        },
    }
}

/// HubSpot's refusal of one pair, as a person would want to read it.
fn refusal(error: &HubSpotError) -> String {
    match error.details() {
        Some(details) => format!("HubSpot refused the association: {details}"),
        None => format!("HubSpot refused the association: {error}"),
    }
}

/// What pull decides for one linked contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PullPlan {
    /// Nothing changed in HubSpot (or the local side changed too: local wins).
    Keep,
    /// Both sides agree on a new state: only the state row follows.
    Record(Option<CompanyId>),
    /// HubSpot's primary becomes the local company.
    Set(CompanyId),
    /// HubSpot has no primary company any more: the local company is cleared.
    Clear,
}

/// Who wins for a contact's primary company (see `docs/associations.md`).
fn pull_plan(row: &AssociationRow, primary: Option<CompanyId>) -> PullPlan {
    let local = (!row.unlinked_company()).then_some(row.company_hs_id.as_ref());
    pull_decision(local, row.synced_hs_id.as_ref(), primary, false)
}

/// Who wins for a contact's primary company: `local` is the HubSpot id of its local company
/// (`None`: a local company with no HubSpot id), `synced` the one last agreed, `primary`
/// HubSpot's now. When both sides changed, the local side wins unless `hubspot_owns`.
pub(crate) fn pull_decision(
    local: Option<Option<&CompanyId>>,
    synced: Option<&CompanyId>,
    primary: Option<CompanyId>,
    hubspot_owns: bool,
) -> PullPlan {
    if primary.as_ref() == synced {
        return PullPlan::Keep;
    }
    if let Some(local) = local
        && primary.as_ref() == local
    {
        return PullPlan::Record(primary);
    }
    let local_as_synced = local == Some(synced);
    match primary {
        Some(p) if local_as_synced || hubspot_owns => PullPlan::Set(p),
        None if local_as_synced || hubspot_owns => PullPlan::Clear,
        _ => PullPlan::Keep,
    }
}

/// The association phase of a full contact pull: every linked contact's primary company,
/// 1,000 contacts a page (one call per page, on the associations' own budget).
pub(crate) async fn pull(
    client: &HubSpotClient,
    keys: &ExternalKeys,
    progress: &Progress,
    mut counts: PullCounts,
) -> Result<PullCounts, RunError> {
    let base = progress.checkpoint();
    let mut after = resume_after(progress).unwrap_or(ContactId(i64::MIN));
    loop {
        if progress.should_stop() {
            return Err(RunError::Interrupted);
        }
        let rows = progress
            .store()
            .association_rows(after, MAX_ASSOCIATION_READ as u32)
            .await?;
        let Some(last) = rows.last().map(|r| r.contact_id) else {
            return Ok(counts);
        };
        let ids: Vec<HsObjectId> = rows.iter().map(|r| r.hs_object_id.clone()).collect();
        let read =
            read_with_rows(client, keys, progress.store(), ids, &rows, Unlinked::Skip).await?;
        let mut tx = progress.begin().await?;
        let errors = apply_primaries(keys, &mut tx, &rows, &read, &mut counts).await?;
        progress
            .commit(
                tx,
                Page {
                    counts: Counts::Pull(counts),
                    checkpoint: with_after(&base, last),
                    errors,
                },
            )
            .await?;
        after = last;
    }
}

/// HubSpot's company associations of some contacts, read before the transaction that applies
/// them ([`apply_read`]): an incremental pull reads those of each page of contacts, a webhook
/// pull those of the contacts association webhooks named.
#[derive(Debug, Default)]
pub(crate) struct ReadAssociations {
    /// The contacts whose associations were read.
    contacts: Vec<HsObjectId>,
    /// Their companies with the types between them, by contact.
    current: HashMap<String, Vec<AssociatedRecord>>,
    /// Those HubSpot reports not found: nothing is applied to them (the contact's deletion or
    /// merge is its own event, and losing a contact is no reason to clear its company).
    missing: HashSet<String>,
    /// The HubSpot companies the primaries to set name that no local company was linked to,
    /// read from HubSpot for [`adopt`].
    companies: Adoptable,
    /// The association reads made.
    calls: u64,
    /// The contacts whose companies took more than one of HubSpot's pages, with how many more.
    further_pages: HashMap<String, u64>,
}

impl ReadAssociations {
    /// The association reads made (a dry run counts them as the real run's).
    pub(crate) fn calls(&self) -> u64 {
        self.calls
    }

    /// How many more of HubSpot's pages `contact`'s companies took than the first.
    pub(crate) fn further_pages(&self, contact: &HsObjectId) -> u64 {
        self.further_pages.get(&contact.0).copied().unwrap_or(0)
    }

    /// The companies read to adopt them ([`Adoptable`]).
    pub(crate) fn companies(&self) -> &Adoptable {
        &self.companies
    }
}

/// The HubSpot company [`apply_read`] would set as each contact's local company, as `tx`
/// shows the rows now (a dry full pull notes them before applying: the real pull's
/// association phase adopts those no local company holds).
pub(crate) async fn companies_to_set(
    tx: &mut Tx,
    read: &ReadAssociations,
) -> Result<HashMap<ContactId, CompanyId>, RunError> {
    if read.contacts.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = tx.association_rows_of(&read.contacts).await?;
    let (rows, plans) = plans(&rows, read);
    Ok(rows
        .into_iter()
        .zip(plans)
        .filter_map(|(row, plan)| match plan {
            PullPlan::Set(company) => Some((row.contact_id, company)),
            _ => None,
        })
        .collect())
}

/// What a dry full pull's pages note for planning the calls of the real pull's association
/// phase, which reads every linked row's companies after the pages (a dry run cannot: its
/// pages' links are rolled back): the rows that phase reads, by `K` (where each comes in its
/// order), with how many more of HubSpot's pages their companies take, the company each sets,
/// and what reading the companies to adopt found. Each page's notes are saved with its
/// checkpoint ([`PhaseNotes::save`]), so that a dry job stopped and resumed plans what every
/// run of it read ([`PhaseNotes::take_saved`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "K: Serialize", deserialize = "K: DeserializeOwned"))]
pub(crate) struct PhaseNotes<K> {
    /// The rows read, with their further pages.
    reads: Vec<(K, u64)>,
    /// The rows that set a company, with it.
    sets: Vec<(K, CompanyId)>,
    /// What reading the companies to adopt found.
    adoption: AdoptionNotes,
}

impl<K> Default for PhaseNotes<K> {
    fn default() -> Self {
        Self {
            reads: Vec::new(),
            sets: Vec::new(),
            adoption: AdoptionNotes::default(),
        }
    }
}

impl<K: Ord + Serialize + DeserializeOwned> PhaseNotes<K> {
    /// Notes that the phase reads the row `order`'s companies, which take `further_pages` more
    /// of HubSpot's pages than the first (0 when unknown: the sweep's rows).
    pub(crate) fn read(&mut self, order: K, further_pages: u64) {
        self.reads.push((order, further_pages));
    }

    /// Notes that the phase sets `company` as the row `order`'s company.
    pub(crate) fn set(&mut self, order: K, company: CompanyId) {
        self.sets.push((order, company));
    }

    /// Notes what a page's reading of the companies to adopt found.
    pub(crate) fn adoption(&mut self, read: &Adoptable) {
        self.adoption.note(read);
    }

    /// Saves these notes, in `tx`, as page `page` of the dry job `job`.
    pub(crate) async fn save(self, tx: &mut Tx, job: &str, page: u64) -> Result<(), RunError> {
        super::dry_notes::save(tx, job, page, &self).await
    }

    /// Every page's notes the dry job `job` saved, merged ([`PhaseNotes::saved`]), forgotten
    /// in `tx` (the transaction that commits the plan made from them).
    pub(crate) async fn take_saved(
        store: &Store,
        tx: &mut Tx,
        job: &str,
    ) -> Result<PlannedPhase<K>, RunError> {
        let phase = Self::saved(store, job).await?;
        tx.forget_dry_notes(job).await?;
        Ok(phase)
    }

    /// Every page's notes the dry job `job` saved, merged: a row read by several pages keeps
    /// the most further pages noted.
    async fn saved(store: &Store, job: &str) -> Result<PlannedPhase<K>, RunError> {
        let mut phase = PlannedPhase {
            reads: BTreeMap::new(),
            sets: BTreeMap::new(),
            adoption: AdoptionNotes::default(),
        };
        for notes in super::dry_notes::saved::<PhaseNotes<K>>(store, job).await? {
            for (order, pages) in notes.reads {
                let most = phase.reads.entry(order).or_insert(0);
                *most = (*most).max(pages);
            }
            phase.sets.extend(notes.sets);
            phase.adoption.merge(notes.adoption);
        }
        Ok(phase)
    }
}

/// What every page of a dry full pull noted ([`PhaseNotes::saved`]).
#[derive(Debug)]
pub(crate) struct PlannedPhase<K> {
    /// The rows the phase reads, in the order `K` gives, with their further pages.
    reads: BTreeMap<K, u64>,
    /// The company each row sets.
    sets: BTreeMap<K, CompanyId>,
    /// What reading the companies to adopt found.
    adoption: AdoptionNotes,
}

impl<K: Ord> PlannedPhase<K> {
    /// The rows the phase reads, in `K`'s order.
    pub(crate) fn rows(&self) -> impl Iterator<Item = &K> {
        self.reads.keys()
    }

    /// Counts in `plan` the calls of the real phase, which reads the rows in the order `rows`
    /// gives (each once): its association reads, 1,000 rows a call, and its company reads to
    /// adopt companies.
    pub(crate) fn plan<'k>(&self, rows: impl IntoIterator<Item = &'k K>, plan: &mut Plan)
    where
        K: 'k,
    {
        let rows: Vec<&K> = rows.into_iter().collect();
        plan.call(
            "association_read",
            reads_of_full_pull(
                rows.iter()
                    .map(|k| self.reads.get(*k).copied().unwrap_or(0)),
            ),
        );
        self.adoption
            .calls_of_full_pull(rows.iter().map(|k| self.sets.get(*k).cloned()))
            .plan(plan);
    }
}

/// Which contacts not linked locally (when the associations are read) may still have a
/// primary company to set when the transaction applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unlinked {
    /// None: a contact not linked has nothing applied (a webhook pull's, a full pull's).
    Skip,
    /// Each: the page's own writes link them before the associations apply (an incremental
    /// pull's page), so their primary companies are read too.
    LinkedByThePage,
}

/// Reads the company associations of `contacts` (1,000 a call, on the associations' own
/// budget; none for no contact), and the companies their primaries name that a transaction
/// applying them would have to adopt, as the committed rows show them now (see [`Unlinked`]).
pub(crate) async fn read_for(
    client: &HubSpotClient,
    keys: &ExternalKeys,
    store: &Store,
    contacts: Vec<HsObjectId>,
    unlinked: Unlinked,
) -> Result<ReadAssociations, RunError> {
    let rows = store.association_rows_of_now(&contacts).await?;
    read_with_rows(client, keys, store, contacts, &rows, unlinked).await
}

/// [`read_for`] with the contacts' association rows already read.
async fn read_with_rows(
    client: &HubSpotClient,
    keys: &ExternalKeys,
    store: &Store,
    contacts: Vec<HsObjectId>,
    rows: &[AssociationRow],
    unlinked: Unlinked,
) -> Result<ReadAssociations, RunError> {
    if contacts.is_empty() {
        return Ok(ReadAssociations::default());
    }
    let read = read_companies(client, &contacts).await?;
    let mut read = ReadAssociations {
        contacts,
        current: read.found,
        missing: read.missing,
        companies: Adoptable::default(),
        calls: read.calls,
        further_pages: read.further_pages,
    };
    let mut wanted = to_set(rows, &read);
    if unlinked == Unlinked::LinkedByThePage {
        let known: HashSet<&str> = rows.iter().map(|r| r.hs_object_id.0.as_str()).collect();
        wanted.extend(
            read.contacts
                .iter()
                .filter(|c| !known.contains(c.0.as_str()) && !read.missing.contains(&c.0))
                .filter_map(|c| primary_of(read.current.get(&c.0))),
        );
    }
    wanted.sort();
    wanted.dedup();
    read.companies = read_adoptable(client, keys, store, &wanted).await?;
    Ok(read)
}

/// Applies what [`read_for`] read, in `tx`, with the full pull's rules, to the contacts linked
/// locally (a contact not linked here has nothing to apply); returns the failed associations.
/// It makes no HubSpot call.
pub(crate) async fn apply_read(
    keys: &ExternalKeys,
    tx: &mut Tx,
    read: &ReadAssociations,
    counts: &mut PullCounts,
) -> Result<Vec<RecordError>, RunError> {
    if read.contacts.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx.association_rows_of(&read.contacts).await?;
    apply_primaries(keys, tx, &rows, read, counts).await
}

/// The rows (but those HubSpot reports missing) with their plans, by [`pull_plan`].
fn plans<'r>(
    rows: &'r [AssociationRow],
    read: &ReadAssociations,
) -> (Vec<&'r AssociationRow>, Vec<PullPlan>) {
    let rows: Vec<&AssociationRow> = rows
        .iter()
        .filter(|r| !read.missing.contains(&r.hs_object_id.0))
        .collect();
    let plans = rows
        .iter()
        .map(|r| pull_plan(r, primary_of(read.current.get(&r.hs_object_id.0))))
        .collect();
    (rows, plans)
}

/// The HubSpot companies the plans of `rows` set as local companies, sorted, once each.
fn to_set(rows: &[AssociationRow], read: &ReadAssociations) -> Vec<CompanyId> {
    let (_, plans) = plans(rows, read);
    let mut wanted: Vec<CompanyId> = plans
        .into_iter()
        .filter_map(|p| match p {
            PullPlan::Set(c) => Some(c),
            _ => None,
        })
        .collect();
    wanted.sort();
    wanted.dedup();
    wanted
}

/// Sets, in `tx`, the local company of each row from HubSpot's primary company (as `read`) by
/// [`pull_plan`]'s rules, adopting HubSpot companies not known locally (from what `read` holds:
/// no HubSpot call), and records the state rows; counts into `counts` and returns the failed
/// associations.
async fn apply_primaries(
    keys: &ExternalKeys,
    tx: &mut Tx,
    rows: &[AssociationRow],
    read: &ReadAssociations,
    counts: &mut PullCounts,
) -> Result<Vec<RecordError>, RunError> {
    let wanted = to_set(rows, read);
    let (rows, plans) = plans(rows, read);
    let locals = adopt(keys, tx, &wanted, &read.companies).await?;
    let mut changes = Vec::new();
    let mut synced = Vec::new();
    let mut errors = Vec::new();
    for (row, plan) in rows.iter().zip(plans) {
        match plan {
            PullPlan::Keep => {}
            PullPlan::Record(state) => synced.push((row.contact_id, state)),
            PullPlan::Clear => {
                changes.push(ContactCompanyChange {
                    contact: row.contact_id,
                    company: None,
                    expected: row.company_id,
                });
                synced.push((row.contact_id, None));
            }
            PullPlan::Set(company) => match locals.get(&company) {
                Some(Ok(local)) => {
                    changes.push(ContactCompanyChange {
                        contact: row.contact_id,
                        company: Some(*local),
                        expected: row.company_id,
                    });
                    synced.push((row.contact_id, Some(company)));
                }
                Some(Err(reason)) => {
                    counts.associations_failed += 1;
                    errors.push(RecordError {
                        contact_id: Some(row.contact_id),
                        company_id: None,
                        email: row.email.clone(),
                        hs_object_id: Some(row.hs_object_id.clone()),
                        reason: format!(
                            "its primary HubSpot company {company} has no local company: {reason}"
                        ),
                    });
                }
                None => {}
            },
        }
    }
    let changed = tx.set_contact_companies(&changes).await?;
    for change in &changes {
        if changed.contains(&change.contact) {
            match change.company {
                Some(_) => counts.associations_created += 1,
                None => counts.associations_removed += 1,
            }
        }
    }
    // A contact changed locally meanwhile keeps its state row: push writes its company.
    synced.retain(|(contact, _)| {
        changed.contains(contact) || !changes.iter().any(|c| c.contact == *contact)
    });
    tx.save_synced_companies(&synced).await?;
    Ok(errors)
}
