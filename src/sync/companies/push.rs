//! Company push: local companies → HubSpot, page by page, each page committed with its
//! checkpoint in one transaction (as the contact push does).
//!
//! A candidate is a company with no `hs_object_id`, or a linked one changed locally since its
//! last push; never a tombstoned one. For each page of 100:
//!
//! 1. Linked companies are updated by HubSpot id (name and domain; the local database owns
//!    them). One HubSpot no longer has is `skipped` and its row tombstoned: it is never
//!    created again. One the answer leaves out without a word is read on its own first
//!    (`settle_omitted_update`): silence is not deletion, and a merged-away company follows
//!    its survivor.
//! 2. `link` mode: the unlinked ones are first read by their external key (one batch read):
//!    a company found so was created by an earlier attempt whose commit was lost (a kill -9,
//!    a lost answer), and is linked to it, never created twice. The key, not the domain
//!    search, finds our own writes: search lags writes by seconds. The rest with a domain are
//!    looked up by domain (one search, `EQ`/`IN`, on the search budget): exactly one live
//!    company with that domain → `linked` (its properties are left alone); several → a failed
//!    record naming every candidate, never a guess; none → created with the key. A company
//!    that carries another local company's key is that company's, never a candidate.
//! 3. `upsert` mode: the unlinked ones are upserted by their external key (one call) — never
//!    by domain, which HubSpot refuses as not unique and which would merge distinct companies.
//!
//! # HubSpot calls per 100 companies
//!
//! | page | link | upsert |
//! |---|---|---|
//! | new companies with a domain | 3 (read by key, search, create) | 1 |
//! | new companies without a domain | 2 (read by key, create) | 1 |
//! | linked companies changed locally | 1 (update) | 1 |
//! | nothing changed | 0 | 0 |
//!
//! A job adds one property read (plus one create, the very first time) before its first
//! write. A search page holds 200 companies; a domain many companies share adds pages.

use super::lookup::{CompanyFate, look_up_companies, read_one};
use super::{
    COMPANY_KEY, companies_by_domain, company_error, ensure_key_property, key_property_exists,
    read_properties, refusal_reason,
};
use crate::hubspot::{
    Batch, Company, CompanyCreate, CompanyUpdate, CompanyUpsert, HubSpotClient, HubSpotError,
    MAX_BATCH,
};
use crate::ids::{CompanyId, LocalCompanyId};
use crate::jobs::model::{
    Counts, Job, JobAction, Plan, PlannedAction, PlannedKind, PushCounts, PushMode, PushOutcome,
    RecordError,
};
use crate::jobs::{BoxFuture, JobRunner, Page, Progress, RunError, RunFailure};
use crate::store::{CompanyCandidate, CompanyLink, CompanyLinkClash, TombstoneReason};
use crate::sync::dry_notes;
use crate::sync::keys::ExternalKeys;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Lost create answers in a row after which a page gives up (transient: the job retries, and
/// its read by key finds what the lost creates made).
const MAX_LOST_ANSWERS: u32 = 8;

/// Runs company push jobs.
#[derive(Debug, Clone)]
pub struct CompanyPusher {
    client: HubSpotClient,
    page_size: u32,
}

/// Where a company push resumes: after this company id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    after: LocalCompanyId,
}

/// How one company of a page ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resolution {
    /// A new HubSpot company holds the local values (or one an earlier attempt created).
    Created(CompanyId),
    /// An existing HubSpot company was linked; `in_sync`: its values may count as pushed.
    Linked { id: CompanyId, in_sync: bool },
    /// An existing HubSpot company now holds the local values.
    Updated(CompanyId),
    /// HubSpot no longer has the linked company: skipped, and its row tombstoned.
    Gone,
    /// Refused, or ambiguous.
    Failed {
        id: Option<CompanyId>,
        reason: String,
    },
}

impl Resolution {
    fn outcome(&self) -> PushOutcome {
        match self {
            Self::Created(_) => PushOutcome::Created,
            Self::Linked { .. } => PushOutcome::Linked,
            Self::Updated(_) => PushOutcome::Updated,
            Self::Gone => PushOutcome::Skipped,
            Self::Failed { .. } => PushOutcome::Failed,
        }
    }

    fn refused(error: &HubSpotError) -> Self {
        Self::Failed {
            id: None,
            reason: refusal_reason(error),
        }
    }
}

impl CompanyPusher {
    /// A company push engine calling HubSpot through `client`, 100 companies a page.
    pub fn new(client: HubSpotClient) -> Self {
        Self {
            client,
            page_size: MAX_BATCH as u32,
        }
    }

    /// The same with smaller pages (1..=100), for tests that need several.
    pub fn with_page_size(client: HubSpotClient, page_size: u32) -> Self {
        Self {
            client,
            page_size: page_size.clamp(1, MAX_BATCH as u32),
        }
    }

    /// Runs one company push in `mode`, from its checkpoint (see the module docs).
    pub async fn run(&self, mode: PushMode, progress: &Progress) -> Result<(), RunError> {
        self.run_as(mode, false, progress).await
    }

    /// Runs one dry-run company push: the same candidates and reads as [`Self::run`] (linked
    /// companies are read by id instead of updated), no write to HubSpot — the external key
    /// property included — nor to the local rows; each page commits the job's counts and plan.
    pub async fn run_dry(&self, mode: PushMode, progress: &Progress) -> Result<(), RunError> {
        self.run_as(mode, true, progress).await
    }

    async fn run_as(
        &self,
        mode: PushMode,
        dry_run: bool,
        progress: &Progress,
    ) -> Result<(), RunError> {
        let Counts::Push(mut counts) = progress.counts() else {
            return Err(RunError::fatal("a push job holds pull counts"));
        };
        let mut after = progress
            .checkpoint_as::<Checkpoint>()?
            .map_or(LocalCompanyId(i64::MIN), |c| c.after);
        let left = progress
            .store()
            .count_company_push_candidates(after)
            .await?;
        progress.set_total(counts.total + left).await?;
        if left == 0 {
            return Ok(());
        }
        let mut setup = Plan::default();
        let mut earlier = if dry_run {
            DryLinks::saved(progress).await?
        } else {
            DryLinks::default()
        };
        let key_exists = if dry_run {
            let exists = key_property_exists(&self.client).await?;
            // The real run's property calls, in the first page's plan of the job.
            if earlier.journal.is_empty() {
                setup.call("property_read", 1);
                if !exists {
                    setup.call("property_create", 1);
                }
            }
            exists
        } else {
            ensure_key_property(&self.client).await?;
            true
        };
        let keys = ExternalKeys::new(&progress.store().installation().await?);
        let page = PageRun {
            client: &self.client,
            keys: &keys,
            mode,
            dry_run: dry_run.then(|| DryRun {
                key_exists,
                plan: Mutex::new(setup),
            }),
        };
        loop {
            if progress.should_stop() {
                return Err(RunError::Interrupted);
            }
            let candidates = progress
                .store()
                .company_push_candidates(after, self.page_size)
                .await?;
            let Some(last) = candidates.last().map(|c| c.id) else {
                break;
            };
            let short = candidates.len() < self.page_size as usize;
            let resolutions = page.resolve(&candidates).await?;
            counts = match &page.dry_run {
                Some(dry) => {
                    let resolutions = earlier
                        .refuse_clashes(progress.store(), &candidates, resolutions)
                        .await?;
                    let plan = dry.take_plan(&candidates, &resolutions);
                    let planned = PlannedPage {
                        candidates: &candidates,
                        resolutions,
                        last,
                        plan,
                    };
                    commit_planned(progress, counts, planned, &mut earlier).await?
                }
                None => commit(progress, counts, &candidates, resolutions, last).await?,
            };
            after = last;
            if short {
                break;
            }
        }
        if dry_run {
            // The plan is complete.
            let mut tx = progress.begin().await?;
            dry_notes::forget(&mut tx, &progress.job_id().to_string()).await?;
            tx.commit().await?;
        }
        progress.set_total(counts.total).await?;
        tracing::info!(job = %progress.job_id(), ?mode, ?counts, "company push finished");
        Ok(())
    }
}

impl JobRunner for CompanyPusher {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), RunError>> {
        Box::pin(async move {
            match job.spec.action {
                JobAction::Push { mode } if job.spec.dry_run => {
                    CompanyPusher::run_dry(self, mode, progress).await
                }
                JobAction::Push { mode } => CompanyPusher::run(self, mode, progress).await,
                JobAction::Pull { .. } => Err(RunError::fatal(
                    "the company push engine was handed a pull job",
                )),
            }
        })
    }
}

/// Saves a page: links, tombstones, counts, failed records and the checkpoint, in one
/// transaction. Returns the job's counts after it.
async fn commit(
    progress: &Progress,
    mut counts: PushCounts,
    candidates: &[CompanyCandidate],
    mut resolutions: Vec<Resolution>,
    last: LocalCompanyId,
) -> Result<PushCounts, RunError> {
    let links = company_links(candidates, &resolutions);
    let gone: Vec<CompanyId> = candidates
        .iter()
        .zip(&resolutions)
        .filter(|(_, r)| **r == Resolution::Gone)
        .filter_map(|(c, _)| c.hs_object_id.clone())
        .collect();
    let mut tx = progress.begin().await?;
    tx.tombstone_companies(&gone, TombstoneReason::Deleted)
        .await?;
    refuse(
        candidates,
        &mut resolutions,
        tx.link_companies(&links).await?,
    );
    let mut errors = Vec::new();
    for (company, resolution) in candidates.iter().zip(resolutions) {
        counts.add(resolution.outcome());
        if let Resolution::Failed { id, reason } = resolution {
            errors.push(failed_record(company, id, reason));
        }
    }
    let checkpoint = checkpoint_after(last)?;
    progress
        .commit(
            tx,
            Page {
                counts: Counts::Push(counts),
                checkpoint,
                errors,
            },
        )
        .await?;
    Ok(counts)
}

/// The links a page's resolutions make (created, linked, updated), each with the version it
/// may count as pushed.
fn company_links(candidates: &[CompanyCandidate], resolutions: &[Resolution]) -> Vec<CompanyLink> {
    candidates
        .iter()
        .zip(resolutions)
        .filter_map(|(c, r)| {
            let (id, pushed) = match r {
                Resolution::Created(id) | Resolution::Updated(id) => (id, true),
                Resolution::Linked { id, in_sync } => (id, *in_sync),
                Resolution::Gone | Resolution::Failed { .. } => return None,
            };
            Some(CompanyLink {
                id: c.id,
                read_hs_object_id: c.hs_object_id.clone(),
                hs_object_id: id.clone(),
                pushed_version: pushed.then_some(c.local_version),
            })
        })
        .collect()
}

/// [`company_links`] of a dry run: those to an existing HubSpot company (a company it would
/// create has no id yet, and no other row can hold it).
fn dry_links(candidates: &[CompanyCandidate], resolutions: &[Resolution]) -> Vec<CompanyLink> {
    let mut links = company_links(candidates, resolutions);
    links.retain(|l| !l.hs_object_id.0.is_empty());
    links
}

/// Fails the companies whose link the database refuses (another row holds the HubSpot
/// company), naming the holder.
fn refuse(
    candidates: &[CompanyCandidate],
    resolutions: &mut [Resolution],
    clashes: Vec<CompanyLinkClash>,
) {
    for clash in clashes {
        if let Some(pos) = candidates.iter().position(|c| c.id == clash.id) {
            resolutions[pos] = Resolution::Failed {
                reason: clash_reason(&clash),
                id: Some(clash.hs_object_id),
            };
        }
    }
}

/// Why a company whose link the database refuses fails.
fn clash_reason(clash: &CompanyLinkClash) -> String {
    format!(
        "HubSpot company {} is already linked to local company {}; two local companies cannot \
         share one HubSpot company",
        clash.hs_object_id, clash.holder
    )
}

/// A dry run's page, planned: its companies, what would become of each, and its plan.
struct PlannedPage<'a> {
    candidates: &'a [CompanyCandidate],
    resolutions: Vec<Resolution>,
    last: LocalCompanyId,
    plan: Plan,
}

/// Saves a dry run's page: only the job's counts, failed records, plan and checkpoint, and the
/// links it would make (its notes, for the pages after it).
async fn commit_planned(
    progress: &Progress,
    mut counts: PushCounts,
    page: PlannedPage<'_>,
    earlier: &mut DryLinks,
) -> Result<PushCounts, RunError> {
    let links = earlier.hold(page.candidates, &page.resolutions);
    let mut errors = Vec::new();
    for (company, resolution) in page.candidates.iter().zip(page.resolutions) {
        counts.add(resolution.outcome());
        if let Resolution::Failed { id, reason } = resolution {
            errors.push(failed_record(company, id, reason));
        }
    }
    let checkpoint = checkpoint_after(page.last)?;
    let mut tx = progress.begin().await?;
    earlier.save(&mut tx, progress, &links).await?;
    progress
        .commit_planned(
            tx,
            Page {
                counts: Counts::Push(counts),
                checkpoint,
                errors,
            },
            Some(page.plan),
        )
        .await?;
    Ok(counts)
}

/// The HubSpot companies a dry run's pages would link, by every run of the job, each with the
/// local company that would hold it: the real run's database refuses them to a later row.
#[derive(Debug, Default)]
struct DryLinks {
    holders: HashMap<CompanyId, LocalCompanyId>,
    /// The pages saved.
    journal: dry_notes::Journal,
}

impl DryLinks {
    /// What the earlier runs of the dry job saved.
    async fn saved(progress: &Progress) -> Result<Self, RunError> {
        let (journal, pages) =
            dry_notes::Journal::open::<Vec<(LocalCompanyId, CompanyId)>>(progress).await?;
        let holders = pages
            .into_iter()
            .flatten()
            .map(|(local, hs)| (hs, local))
            .collect();
        Ok(Self { holders, journal })
    }

    /// `resolutions` with the links the real run's database would refuse failed: a company
    /// another row holds, an earlier row of the page took, or an earlier page would link.
    async fn refuse_clashes(
        &self,
        store: &crate::store::Store,
        candidates: &[CompanyCandidate],
        mut resolutions: Vec<Resolution>,
    ) -> Result<Vec<Resolution>, RunError> {
        let links = dry_links(candidates, &resolutions);
        let clashes = store
            .dry_company_link_clashes(&links, &self.holders)
            .await?;
        refuse(candidates, &mut resolutions, clashes);
        Ok(resolutions)
    }

    /// Holds the links `resolutions` make (to existing HubSpot companies), as the real run's
    /// database does once the page is written; returns them.
    fn hold(
        &mut self,
        candidates: &[CompanyCandidate],
        resolutions: &[Resolution],
    ) -> Vec<(LocalCompanyId, CompanyId)> {
        let links: Vec<(LocalCompanyId, CompanyId)> = dry_links(candidates, resolutions)
            .into_iter()
            .map(|l| (l.id, l.hs_object_id))
            .collect();
        self.holders
            .extend(links.iter().map(|(local, hs)| (hs.clone(), *local)));
        links
    }

    /// Saves `links` as the next page's notes, in `tx` with the page.
    async fn save(
        &mut self,
        tx: &mut crate::store::Tx,
        progress: &Progress,
        links: &[(LocalCompanyId, CompanyId)],
    ) -> Result<(), RunError> {
        self.journal.append(tx, progress, &links).await
    }
}

/// The checkpoint a page commits: the push resumes after `last`.
fn checkpoint_after(last: LocalCompanyId) -> Result<serde_json::Value, RunError> {
    serde_json::to_value(Checkpoint { after: last }).map_err(|e| {
        RunError::Fatal(RunFailure::caused_by(
            "cannot encode the company push checkpoint",
            e,
        ))
    })
}

/// The failed record of `company`.
fn failed_record(company: &CompanyCandidate, id: Option<CompanyId>, reason: String) -> RecordError {
    RecordError {
        contact_id: None,
        company_id: Some(company.id),
        email: None,
        hs_object_id: id
            .or_else(|| company.hs_object_id.clone())
            .map(|id| crate::ids::HsObjectId(id.0)),
        reason,
    }
}

/// What a dry run keeps beside the page: whether the key property exists (without it no
/// company carries a key yet), and the calls the real run would make.
struct DryRun {
    key_exists: bool,
    plan: Mutex<Plan>,
}

impl DryRun {
    fn call(&self, operation: &str, n: u64) {
        if let Ok(mut plan) = self.plan.lock() {
            plan.call(operation, n);
        }
    }

    /// The page's plan: the calls counted so far and one action per company.
    fn take_plan(&self, page: &[CompanyCandidate], resolutions: &[Resolution]) -> Plan {
        let mut plan = self
            .plan
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        for (company, resolution) in page.iter().zip(resolutions) {
            let (action, id, reason) = match resolution {
                Resolution::Created(_) => (
                    PlannedKind::Create,
                    None,
                    format!("local company {} would be created in HubSpot", company.id),
                ),
                Resolution::Linked { id, .. } => (
                    PlannedKind::Link,
                    Some(id),
                    format!(
                        "local company {} would be linked to HubSpot company {id}",
                        company.id
                    ),
                ),
                Resolution::Updated(id) => (
                    PlannedKind::Update,
                    Some(id),
                    format!(
                        "HubSpot company {id} would get local company {}'s values",
                        company.id
                    ),
                ),
                Resolution::Gone => (
                    PlannedKind::Skip,
                    company.hs_object_id.as_ref(),
                    "HubSpot no longer has the linked company: it would be marked deleted"
                        .to_owned(),
                ),
                Resolution::Failed { id, reason } => {
                    (PlannedKind::Fail, id.as_ref(), reason.clone())
                }
            };
            plan.actions.push(PlannedAction {
                action,
                contact_id: None,
                email: None,
                hs_object_id: id.map(|id| crate::ids::HsObjectId(id.0.clone())),
                reason,
            });
        }
        plan
    }
}

/// What every page of one run shares.
struct PageRun<'a> {
    client: &'a HubSpotClient,
    keys: &'a ExternalKeys,
    mode: PushMode,
    /// Set for a dry run: reads only, and the plan of the calls.
    dry_run: Option<DryRun>,
}

impl PageRun<'_> {
    /// What becomes of each company of the page, in page order.
    async fn resolve(&self, page: &[CompanyCandidate]) -> Result<Vec<Resolution>, RunError> {
        let mut out: Vec<Option<Resolution>> = vec![None; page.len()];
        let (linked, unlinked): (Vec<usize>, Vec<usize>) =
            (0..page.len()).partition(|&i| page[i].hs_object_id.is_some());
        self.update_linked(page, &linked, &mut out).await?;
        match self.mode {
            PushMode::Link => self.link_or_create(page, &unlinked, &mut out).await?,
            PushMode::Upsert => self.upsert(page, &unlinked, &mut out).await?,
        }
        Ok(out
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Resolution::Failed {
                    id: None,
                    reason: "HubSpot did not say what became of this company; the next push \
                             tries again"
                        .to_owned(),
                })
            })
            .collect())
    }

    /// Updates linked companies changed locally, by HubSpot id.
    async fn update_linked(
        &self,
        page: &[CompanyCandidate],
        which: &[usize],
        out: &mut [Option<Resolution>],
    ) -> Result<(), RunError> {
        if which.is_empty() {
            return Ok(());
        }
        if let Some(dry) = &self.dry_run {
            dry.call("batch_update", 1);
            return self.read_linked(page, which, out).await;
        }
        let inputs: Vec<CompanyUpdate> = which
            .iter()
            .filter_map(|&i| {
                let id = page[i].hs_object_id.as_ref()?;
                Some(CompanyUpdate {
                    id: id.0.clone(),
                    id_property: None,
                    properties: update_properties(&page[i]),
                })
            })
            .collect();
        let outcome = self
            .client
            .batch_update_companies(&batch(inputs)?)
            .await
            .map_err(|e| company_error("updating linked companies", e))?;
        let by_id: HashMap<&str, usize> = which
            .iter()
            .filter_map(|&i| Some((page[i].hs_object_id.as_ref()?.0.as_str(), i)))
            .collect();
        for result in &outcome.results {
            let index = result
                .input_index
                .and_then(|n| which.get(n).copied())
                .or_else(|| by_id.get(result.record.id.0.as_str()).copied());
            if let Some(i) = index {
                out[i] = Some(Resolution::Updated(result.record.id.clone()));
            }
        }
        for error in &outcome.errors {
            for &n in &error.input_indices {
                let Some(&i) = which.get(n) else { continue };
                out[i] = Some(match error.error {
                    HubSpotError::NotFound { .. } => Resolution::Gone,
                    ref other => Resolution::refused(other),
                });
            }
        }
        for &i in which {
            if out[i].is_none() {
                out[i] = Some(self.settle_omitted_update(&page[i]).await?);
            }
        }
        Ok(())
    }

    /// A linked company HubSpot left out of its update answer without saying why. Silence is
    /// not deletion (HubSpot leaves merged-away ids out, too): the company is read again on
    /// its own. Gone → tombstoned, never created again. Merged into another (the read answers
    /// with the survivor, whose id may be new) → re-linked to the survivor without writing to
    /// it, so that a survivor another local row holds is refused before anything is
    /// overwritten; the next push updates it. Still there → updated on its own.
    async fn settle_omitted_update(
        &self,
        company: &CompanyCandidate,
    ) -> Result<Resolution, RunError> {
        let Some(id) = &company.hs_object_id else {
            return Ok(Resolution::Failed {
                id: None,
                reason: "the company has no HubSpot id to update".to_owned(),
            });
        };
        Ok(
            match read_one(self.client, id, "re-reading a linked company").await? {
                CompanyFate::Gone => Resolution::Gone,
                CompanyFate::MergedInto(survivor) => Resolution::Linked {
                    in_sync: holds_local_values(company, &survivor),
                    id: survivor.id,
                },
                CompanyFate::Live(_) => {
                    match self
                        .client
                        .update_company(id, &update_properties(company))
                        .await
                    {
                        Ok(record) => Resolution::Updated(record.id),
                        Err(HubSpotError::NotFound { .. }) => Resolution::Gone,
                        Err(
                            e @ (HubSpotError::Conflict { .. } | HubSpotError::Validation { .. }),
                        ) => Resolution::refused(&e),
                        Err(e) => return Err(company_error("updating a linked company", e)),
                    }
                }
            },
        )
    }

    /// A dry run's stand-in for the update: the linked companies read by id (an id left out
    /// read again on its own, as the real run's update does); those HubSpot still has would
    /// be updated, those merged away re-linked to their survivor, the others are gone.
    async fn read_linked(
        &self,
        page: &[CompanyCandidate],
        which: &[usize],
        out: &mut [Option<Resolution>],
    ) -> Result<(), RunError> {
        let ids: Vec<CompanyId> = which
            .iter()
            .filter_map(|&i| page[i].hs_object_id.clone())
            .collect();
        let fates = look_up_companies(self.client, &ids, "reading linked companies").await?;
        for &i in which {
            let Some(id) = &page[i].hs_object_id else {
                continue;
            };
            out[i] = Some(match fates.get(id) {
                Some(CompanyFate::Live(_)) => Resolution::Updated(id.clone()),
                Some(CompanyFate::MergedInto(survivor)) => Resolution::Linked {
                    id: survivor.id.clone(),
                    in_sync: holds_local_values(&page[i], survivor),
                },
                Some(CompanyFate::Gone) | None => Resolution::Gone,
            });
        }
        Ok(())
    }

    /// Link mode for unlinked companies (see the module docs).
    async fn link_or_create(
        &self,
        page: &[CompanyCandidate],
        which: &[usize],
        out: &mut [Option<Resolution>],
    ) -> Result<(), RunError> {
        if which.is_empty() {
            return Ok(());
        }
        self.find_by_key(page, which, out).await?;
        let left: Vec<usize> = which
            .iter()
            .copied()
            .filter(|&i| out[i].is_none())
            .collect();
        let (with_domain, without): (Vec<usize>, Vec<usize>) =
            left.iter().partition(|&&i| page[i].domain.is_some());
        let mut to_create = without;
        let matches = self.search_domains(page, &with_domain).await?;
        for i in with_domain {
            let domain = page[i].domain.as_deref().unwrap_or_default();
            let found = matches.get(domain).map(Vec::as_slice).unwrap_or_default();
            let candidates: Vec<&Company> = found
                .iter()
                .filter(|c| {
                    // A company carrying another local company's key is that one's.
                    c.property(COMPANY_KEY)
                        .and_then(|k| self.keys.parse_company(k))
                        .is_none_or(|owner| owner == page[i].id)
                })
                .collect();
            match candidates.as_slice() {
                [] => to_create.push(i),
                [one] => {
                    out[i] = Some(Resolution::Linked {
                        id: one.id.clone(),
                        in_sync: true,
                    });
                }
                several => {
                    let ids: Vec<&str> = several.iter().map(|c| c.id.0.as_str()).collect();
                    out[i] = Some(Resolution::Failed {
                        id: None,
                        reason: format!(
                            "{} HubSpot companies have the domain {domain:?} ({}); crm-sync \
                             links only when exactly one does. Merge them in HubSpot, or link \
                             the local company by setting its hs_object_id",
                            ids.len(),
                            ids.join(", ")
                        ),
                    });
                }
            }
        }
        to_create.sort_unstable();
        self.create(page, &to_create, out).await
    }

    /// Reads the unlinked companies by their external key: what an earlier attempt created.
    async fn find_by_key(
        &self,
        page: &[CompanyCandidate],
        which: &[usize],
        out: &mut [Option<Resolution>],
    ) -> Result<(), RunError> {
        if let Some(dry) = &self.dry_run {
            // The real run reads, also when it has just created the property.
            dry.call("batch_read", 1);
            if !dry.key_exists {
                // Without the property no company carries a key: nothing to find.
                return Ok(());
            }
        }
        for (i, record) in self.read_by_key(page, which).await? {
            out[i] = Some(if holds_local_values(&page[i], &record) {
                Resolution::Created(record.id.clone())
            } else {
                // Only the link: the next push updates it with the local values.
                Resolution::Linked {
                    id: record.id.clone(),
                    in_sync: false,
                }
            });
        }
        Ok(())
    }

    /// The live HubSpot companies carrying the external key of one of `which`, with the
    /// position of that company in `page` (one batch read).
    async fn read_by_key(
        &self,
        page: &[CompanyCandidate],
        which: &[usize],
    ) -> Result<Vec<(usize, Company)>, RunError> {
        let by_key: HashMap<String, usize> = which
            .iter()
            .map(|&i| (self.keys.company_key(page[i].id), i))
            .collect();
        let keys: Vec<String> = which
            .iter()
            .map(|&i| self.keys.company_key(page[i].id))
            .collect();
        let found = self
            .client
            .batch_read_companies(&batch(keys)?, Some(COMPANY_KEY), &read_properties())
            .await
            .map_err(|e| company_error("reading companies by their external key", e))?;
        Ok(found
            .results
            .into_iter()
            .filter(|r| !r.archived)
            .filter_map(|r| Some((*by_key.get(r.property(COMPANY_KEY)?)?, r)))
            .collect())
    }

    /// The live HubSpot companies of each domain (lower-case), every search page read.
    async fn search_domains(
        &self,
        page: &[CompanyCandidate],
        which: &[usize],
    ) -> Result<HashMap<String, Vec<Company>>, RunError> {
        let mut domains: Vec<String> = which
            .iter()
            .filter_map(|&i| page[i].domain.clone())
            .collect();
        domains.sort();
        domains.dedup();
        companies_by_domain(self.client, &domains, read_properties(), || {
            if let Some(dry) = &self.dry_run {
                dry.call("search", 1);
            }
        })
        .await
    }

    /// Creates companies with their external key. A lost answer is settled by reading the
    /// keys again (what exists was created by it) before creating the rest again.
    async fn create(
        &self,
        page: &[CompanyCandidate],
        which: &[usize],
        out: &mut [Option<Resolution>],
    ) -> Result<(), RunError> {
        if let Some(dry) = &self.dry_run {
            if !which.is_empty() {
                dry.call("batch_create", 1);
            }
            for &i in which {
                out[i] = Some(Resolution::Created(CompanyId(String::new())));
            }
            return Ok(());
        }
        let mut left: Vec<usize> = which.to_vec();
        let mut lost = 0;
        while !left.is_empty() {
            let inputs: Vec<CompanyCreate> = left
                .iter()
                .map(|&i| CompanyCreate {
                    properties: write_properties(&page[i], self.keys),
                })
                .collect();
            match self.client.batch_create_companies(&batch(inputs)?).await {
                Ok(outcome) => {
                    let by_key: HashMap<String, usize> = left
                        .iter()
                        .map(|&i| (self.keys.company_key(page[i].id), i))
                        .collect();
                    for result in &outcome.results {
                        let index = result
                            .input_index
                            .and_then(|n| left.get(n).copied())
                            .or_else(|| {
                                let key = result.record.property(COMPANY_KEY)?;
                                by_key.get(key).copied()
                            });
                        if let Some(i) = index {
                            out[i] = Some(Resolution::Created(result.record.id.clone()));
                        }
                    }
                    let mut conflicts = Vec::new();
                    for error in &outcome.errors {
                        for &n in &error.input_indices {
                            let Some(&i) = left.get(n) else { continue };
                            if matches!(error.error, HubSpotError::Conflict { .. }) {
                                // Our key exists: another attempt created it meanwhile.
                                conflicts.push(i);
                            } else {
                                out[i] = Some(Resolution::refused(&error.error));
                            }
                        }
                    }
                    if !conflicts.is_empty() {
                        self.find_by_key(page, &conflicts, out).await?;
                    }
                    return Ok(());
                }
                Err(HubSpotError::Ambiguous { .. }) if lost < MAX_LOST_ANSWERS => {
                    lost += 1;
                    self.find_by_key(page, &left, out).await?;
                    left.retain(|&i| out[i].is_none());
                }
                Err(e @ (HubSpotError::Conflict { .. } | HubSpotError::Validation { .. }))
                    if left.len() > 1 =>
                {
                    // The whole batch refused for one input's sake: one at a time finds it.
                    tracing::debug!(error = %e, "company batch refused; creating one by one");
                    self.find_by_key(page, &left, out).await?;
                    let single: Vec<usize> =
                        left.iter().copied().filter(|&i| out[i].is_none()).collect();
                    for i in single {
                        Box::pin(self.create(page, &[i], out)).await?;
                    }
                    return Ok(());
                }
                Err(e @ (HubSpotError::Conflict { .. } | HubSpotError::Validation { .. })) => {
                    self.find_by_key(page, &left, out).await?;
                    for &i in &left {
                        if out[i].is_none() {
                            out[i] = Some(Resolution::refused(&e));
                        }
                    }
                    return Ok(());
                }
                Err(e) => return Err(company_error("creating companies", e)),
            }
        }
        Ok(())
    }

    /// A dry run's stand-in for the upsert: the companies read by their key; those found would
    /// be updated, the others created.
    async fn plan_upsert(
        &self,
        page: &[CompanyCandidate],
        which: &[usize],
        out: &mut [Option<Resolution>],
    ) -> Result<(), RunError> {
        for &i in which {
            out[i] = Some(Resolution::Created(CompanyId(String::new())));
        }
        if self.dry_run.as_ref().is_some_and(|d| d.key_exists) {
            for (i, record) in self.read_by_key(page, which).await? {
                out[i] = Some(Resolution::Updated(record.id));
            }
        }
        Ok(())
    }

    /// Upsert mode for unlinked companies: one batch upsert by external key.
    async fn upsert(
        &self,
        page: &[CompanyCandidate],
        which: &[usize],
        out: &mut [Option<Resolution>],
    ) -> Result<(), RunError> {
        if which.is_empty() {
            return Ok(());
        }
        if let Some(dry) = &self.dry_run {
            dry.call("batch_upsert", 1);
            return self.plan_upsert(page, which, out).await;
        }
        let inputs: Vec<CompanyUpsert> = which
            .iter()
            .map(|&i| CompanyUpsert {
                id: self.keys.company_key(page[i].id),
                id_property: COMPANY_KEY.to_owned(),
                properties: write_properties(&page[i], self.keys),
            })
            .collect();
        let outcome = self
            .client
            .batch_upsert_companies(&batch(inputs)?)
            .await
            .map_err(|e| company_error("upserting companies by their external key", e))?;
        let by_key: HashMap<String, usize> = which
            .iter()
            .map(|&i| (self.keys.company_key(page[i].id), i))
            .collect();
        for result in &outcome.results {
            let index = result
                .input_index
                .and_then(|n| which.get(n).copied())
                .or_else(|| {
                    let key = result.record.company.property(COMPANY_KEY)?;
                    by_key.get(key).copied()
                });
            if let Some(i) = index {
                let id = result.record.company.id.clone();
                out[i] = Some(if result.record.new {
                    Resolution::Created(id)
                } else {
                    Resolution::Updated(id)
                });
            }
        }
        for error in &outcome.errors {
            for &n in &error.input_indices {
                if let Some(&i) = which.get(n) {
                    out[i] = Some(Resolution::refused(&error.error));
                }
            }
        }
        Ok(())
    }
}

fn batch<T>(items: Vec<T>) -> Result<Batch<T>, RunError> {
    Batch::new(items)
        .map_err(|e| RunError::Fatal(RunFailure::caused_by("company page too large", e)))
}

/// Properties of a create or an upsert: the values the company has (an absent one left out,
/// so that a first push never erases what HubSpot has) and its external key.
fn write_properties(company: &CompanyCandidate, keys: &ExternalKeys) -> BTreeMap<String, String> {
    let mut properties: BTreeMap<String, String> =
        [("name", &company.name), ("domain", &company.domain)]
            .into_iter()
            .filter_map(|(name, value)| {
                let value = value.as_deref().filter(|v| !v.trim().is_empty())?;
                Some((name.to_owned(), value.to_owned()))
            })
            .collect();
    properties.insert(COMPANY_KEY.to_owned(), keys.company_key(company.id));
    properties
}

/// Properties of an update of a linked company changed locally: both owned fields, an absent
/// value as the empty string, which clears it in HubSpot (the local database owns them).
fn update_properties(company: &CompanyCandidate) -> BTreeMap<String, String> {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    BTreeMap::from([
        ("name".to_owned(), value(&company.name)),
        ("domain".to_owned(), value(&company.domain)),
    ])
}

/// Whether a HubSpot company holds the local name and domain (domains compared
/// case-insensitively, an absent value equal to an empty one).
fn holds_local_values(company: &CompanyCandidate, record: &Company) -> bool {
    let norm = |v: Option<&str>| v.unwrap_or("").trim().to_lowercase();
    company.name.as_deref().unwrap_or("").trim() == record.name().unwrap_or("").trim()
        && norm(company.domain.as_deref()) == norm(record.domain())
}

/// Links (finds or creates in HubSpot) `candidates`, companies the associations of a contact
/// push need, exactly as a company push page does, and saves their links on their own
/// (outside the contact job's counts); returns why each one that could not be linked was
/// not.
pub(crate) async fn link_for_associations(
    client: &HubSpotClient,
    store: &crate::store::Store,
    mode: PushMode,
    candidates: &[CompanyCandidate],
) -> Result<HashMap<LocalCompanyId, String>, RunError> {
    let resolved = resolve_for_associations(client, store, mode, candidates, None).await?;
    Ok(resolved
        .into_iter()
        .filter_map(|(id, r)| r.err().map(|reason| (id, reason)))
        .collect())
}

/// The calls a dry run's linking of companies would make, gathered over its pages.
#[derive(Debug, Default)]
pub(crate) struct LinkingCalls {
    /// The calls so far, by operation.
    pub(crate) calls: Plan,
    /// Whether the creation of the external key property is counted (the real run creates it
    /// at its first page and finds it at the others).
    key_created: bool,
    /// The HubSpot companies earlier pages would link, and to which local company.
    holders: DryLinks,
}

/// [`link_for_associations`], answering the HubSpot company each candidate is now linked to
/// (or why none). A dry run (`dry`: where the calls the real run would make are added) makes
/// the same reads, writes nothing, and answers an empty id for a company it would create.
pub(crate) async fn resolve_for_associations(
    client: &HubSpotClient,
    store: &crate::store::Store,
    mode: PushMode,
    candidates: &[CompanyCandidate],
    mut dry: Option<&mut LinkingCalls>,
) -> Result<HashMap<LocalCompanyId, Result<CompanyId, String>>, RunError> {
    let mut out = HashMap::new();
    if candidates.is_empty() {
        return Ok(out);
    }
    let dry_run = match dry.as_deref_mut() {
        Some(linking) => {
            let key_exists = key_property_exists(client).await?;
            linking.calls.call("property_read", 1);
            if !key_exists && !linking.key_created {
                linking.calls.call("property_create", 1);
                linking.key_created = true;
            }
            Some(DryRun {
                key_exists,
                plan: Mutex::new(Plan::default()),
            })
        }
        None => {
            ensure_key_property(client).await?;
            None
        }
    };
    let writes = dry_run.is_none();
    let keys = ExternalKeys::new(&store.installation().await?);
    let page = PageRun {
        client,
        keys: &keys,
        mode,
        dry_run,
    };
    let resolutions = page.resolve(candidates).await?;
    if let (Some(linking), Some(dry_run)) = (dry.as_deref_mut(), page.dry_run) {
        // The calls only: the job's actions are its own records'.
        for (operation, n) in dry_run.plan.into_inner().unwrap_or_default().calls {
            linking.calls.call(&operation, n);
        }
    }
    let resolutions = match dry {
        // The real run's database refuses a company another row holds (or would by then), and
        // holds the links this page makes from then on.
        Some(linking) => {
            let resolutions = linking
                .holders
                .refuse_clashes(store, candidates, resolutions)
                .await?;
            linking.holders.hold(candidates, &resolutions);
            resolutions
        }
        None => resolutions,
    };
    let mut links = Vec::new();
    for (company, resolution) in candidates.iter().zip(resolutions) {
        let (id, pushed_version) = match resolution {
            Resolution::Created(id) | Resolution::Linked { id, in_sync: true } => {
                (id, Some(company.local_version))
            }
            Resolution::Linked { id, in_sync: false } | Resolution::Updated(id) => (id, None),
            Resolution::Gone => {
                out.insert(
                    company.id,
                    Err("HubSpot no longer has the company".to_owned()),
                );
                continue;
            }
            Resolution::Failed { reason, .. } => {
                out.insert(company.id, Err(reason));
                continue;
            }
        };
        out.insert(company.id, Ok(id.clone()));
        links.push(CompanyLink {
            id: company.id,
            read_hs_object_id: None,
            hs_object_id: id,
            pushed_version,
        });
    }
    if !writes {
        return Ok(out);
    }
    let mut tx = crate::store::Tx::begin(store).await?;
    for clash in tx.link_companies(&links).await? {
        out.insert(clash.id, Err(clash_reason(&clash)));
    }
    tx.commit().await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Installation;

    fn keys() -> ExternalKeys {
        ExternalKeys::new(&Installation {
            id: "0123456789abcdef".to_owned(),
            legacy_keys_through: None,
        })
    }

    fn company(name: Option<&str>, domain: Option<&str>) -> CompanyCandidate {
        CompanyCandidate {
            id: LocalCompanyId(5),
            name: name.map(str::to_owned),
            domain: domain.map(str::to_owned),
            hs_object_id: None,
            local_version: 2,
        }
    }

    #[test]
    fn a_new_company_carries_its_key_and_no_empty_values() {
        let props = write_properties(&company(Some("Acme"), None), &keys());
        assert_eq!(
            props,
            BTreeMap::from([
                ("name".to_owned(), "Acme".to_owned()),
                (COMPANY_KEY.to_owned(), "0123456789abcdef:5".to_owned()),
            ])
        );
    }

    #[test]
    fn an_update_clears_what_the_local_row_no_longer_has_and_never_sends_the_key() {
        let props = update_properties(&company(None, Some("acme.io")));
        assert_eq!(props["name"], "");
        assert_eq!(props["domain"], "acme.io");
        assert!(!props.contains_key(COMPANY_KEY));
    }
}
