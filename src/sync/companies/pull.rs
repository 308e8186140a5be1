//! Company pull: HubSpot companies → crm-sync's `companies` table, page by page, each page
//! committed with its checkpoint in one transaction.
//!
//! - A full pull lists every company (100 per call); an incremental one searches those whose
//!   `hs_lastmodifieddate` is at or after the bookmark minus the lookback (200 per call),
//!   oldest first, going on from the last modification time seen rather than by offset, so
//!   that a company changed during the run shifts nothing. With no bookmark it is a full pull.
//! - A HubSpot company matches a local row by `hs_object_id`, then by this database's
//!   external key ([`super::COMPANY_KEY`]), then by domain — only when exactly one unlinked
//!   local row has that domain (several: a failed record naming them, never a guess). The
//!   rest are created locally: companies HubSpot made on its own (the auto-association
//!   setting) are accepted like any other.
//! - Pull never changes a local company's own fields (name, domain): it only sets
//!   `hs_object_id`. A company carrying the key of a tombstoned row is left alone (no second
//!   row): restoring the row is a user's decision. A row whose link names a company HubSpot no longer has (deleted, merged
//!   away) is re-linked to the company that carries its key, counted `linked`.
//! - After a full list, the linked rows whose company the list did not show are read by id;
//!   those HubSpot no longer has are tombstoned (`unlinked`), so no push creates them again.
//!   An id the batch read leaves out without a word is read on its own before it counts as
//!   gone (the `lookup` module).
//! - No HubSpot call is made while a page's transaction is open: what the matching needs from
//!   HubSpot (stale links, companies to adopt) is read first, on rows read outside any
//!   transaction ([`read_stale_links`], [`read_adoptable`]); the transaction reads the rows
//!   again and decides with those answers ([`decide`], [`adopt`]).
//!
//! Costs: one list call per 100 companies (full) or one search call per 200 changed ones
//! (incremental), one search call per job for the progress bar's total, and one batch read per
//! 100 linked rows a full list did not show (and per page with stale links).
//!
//! Counts have the pull shape: `created_without_email` is always 0 (a company has no email),
//! `upserted` counts the rows written (created or linked) in mode `upsert`, and stays 0 in mode
//! `verbose`, whose breakdown is in `created` and `linked` alone (as in the contacts pull). A
//! company pull writes the same way in both modes: it has one matching, and only the counts
//! differ.

use super::lookup::{CompanyFate, LookUpCalls, look_up_companies, look_up_companies_noting};
use super::{COMPANY_KEY, company_error, read_properties};
use crate::hubspot::{
    Company, HubSpotClient, ListCompanies, MAX_BATCH, MAX_SEARCH_LIMIT, ObjectType, SearchRequest,
};
use crate::ids::{CompanyId, LocalCompanyId};
use crate::jobs::model::{
    Counts, Plan, PlannedAction, PlannedKind, PullCounts, PullMode, PullOutcome, RecordError,
};
use crate::jobs::{Page, Progress, RunError, RunFailure};
use crate::store::{CompanyLink, CompanyMatch, PulledCompany, Store, TombstoneReason, Tx};
use crate::sync::PullSettings;
use crate::sync::keys::ExternalKeys;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// A company pull's checkpoint: where to go on, and when its first run started (the bookmark
/// it leaves when it succeeds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    started_at: DateTime<Utc>,
    position: Position,
}

/// Where a company pull goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
enum Position {
    /// Listing every company; `after` is the next page's cursor.
    List { after: Option<String> },
    /// Searching companies modified at or after `since_ms`; `seen` were written already (at
    /// exactly `since_ms`); `offset` pages through more than a page of ties.
    Search {
        since_ms: i64,
        seen: Vec<CompanyId>,
        offset: Option<String>,
    },
    /// Checking, by row id after `after`, the linked rows the full list did not show.
    Sweep { after: LocalCompanyId },
    /// Every page is written.
    Done,
}

/// Runs a company pull (full, or incremental from the bookmark), from its checkpoint.
///
/// A dry run (`dry_run`) reads the same pages and matches them with the same code, in a
/// transaction that is rolled back: it counts what the real pull would do, and leaves the
/// local rows, tombstones and bookmark as they were.
pub async fn run(
    client: &HubSpotClient,
    settings: &PullSettings,
    mode: PullMode,
    incremental: bool,
    dry_run: bool,
    progress: &Progress,
) -> Result<(), RunError> {
    let Counts::Pull(counts) = progress.counts() else {
        return Err(RunError::fatal("a pull job carries push counts"));
    };
    let cursor = match progress.checkpoint_as::<Cursor>()? {
        Some(cursor) => cursor,
        None => {
            let cursor = start(settings, progress, incremental).await?;
            announce_total(client, progress, &cursor.position).await?;
            cursor
        }
    };
    let keys = ExternalKeys::new(&progress.store().installation().await?);
    let mut run = PullRun {
        client,
        keys,
        progress,
        started_at: cursor.started_at,
        counts,
        verbose: mode == PullMode::Verbose,
        dry_run,
        plan: Plan::default(),
    };
    let mut position = cursor.position;
    loop {
        if progress.should_stop() {
            return Err(RunError::Interrupted);
        }
        position = match position {
            Position::List { after } => run.list_page(after).await?,
            Position::Search {
                since_ms,
                seen,
                offset,
            } => run.search_page(since_ms, seen, offset).await?,
            Position::Sweep { after } => run.sweep_page(after).await?,
            Position::Done => return Ok(()),
        };
    }
}

/// Tells the job how many companies it will read (one search call: the account's companies
/// for a full pull, the changed ones for an incremental one), so that clients can show a bar.
/// Best effort: a failure only costs the bar.
async fn announce_total(
    client: &HubSpotClient,
    progress: &Progress,
    position: &Position,
) -> Result<(), RunError> {
    let mut request = match position {
        Position::Search { since_ms, .. } => SearchRequest::modified_since(
            ObjectType::Companies,
            DateTime::from_timestamp_millis(*since_ms).unwrap_or(DateTime::UNIX_EPOCH),
            vec!["name".to_owned()],
        ),
        _ => SearchRequest {
            properties: vec!["name".to_owned()],
            ..SearchRequest::default()
        },
    };
    request.limit = 1;
    match client.search_companies(&request).await {
        Ok(page) => progress.set_total(page.total).await,
        Err(e) => {
            tracing::debug!(error = %e, "could not learn how many companies the pull reads");
            Ok(())
        }
    }
}

/// Where a job's first run starts: the list, or a search from the bookmark minus the
/// lookback when incremental and a company pull has succeeded before.
async fn start(
    settings: &PullSettings,
    progress: &Progress,
    incremental: bool,
) -> Result<Cursor, RunError> {
    let started_at = Utc::now();
    let bookmark = if incremental {
        progress.store().company_pull_bookmark().await?
    } else {
        None
    };
    let position = match bookmark {
        None => {
            progress.store().forget_stale_pull_seen().await?;
            Position::List { after: None }
        }
        Some(bookmark) => {
            let lookback = chrono::Duration::from_std(settings.lookback)
                .unwrap_or_else(|_| chrono::Duration::days(1));
            Position::Search {
                since_ms: (bookmark - lookback).timestamp_millis(),
                seen: Vec::new(),
                offset: None,
            }
        }
    };
    Ok(Cursor {
        started_at,
        position,
    })
}

struct PullRun<'a> {
    client: &'a HubSpotClient,
    keys: ExternalKeys,
    progress: &'a Progress,
    started_at: DateTime<Utc>,
    counts: PullCounts,
    /// Mode `verbose`: `upserted` stays 0, the breakdown says it all.
    verbose: bool,
    /// Roll each page back, and keep a plan instead.
    dry_run: bool,
    /// A dry run's plan of the page being read (calls and actions), committed with it.
    plan: Plan,
}

/// What a page's matching decided for one company.
pub(crate) enum Decision {
    Unchanged,
    Link(CompanyLink),
    Create(PulledCompany),
    Failed(String),
}

impl PullRun<'_> {
    async fn list_page(&mut self, after: Option<String>) -> Result<Position, RunError> {
        let params = ListCompanies {
            after,
            properties: read_properties(),
            ..ListCompanies::default()
        };
        let page = self
            .client
            .list_companies(&params)
            .await
            .map_err(|e| company_error("listing HubSpot companies", e))?;
        let next = match page.next_after {
            Some(after) => Position::List { after: Some(after) },
            None => Position::Sweep {
                after: LocalCompanyId(i64::MIN),
            },
        };
        self.plan.call("list", 1);
        let seen: Vec<String> = page.results.iter().map(|c| c.id.0.clone()).collect();
        self.write(page.results, &seen, next).await
    }

    async fn search_page(
        &mut self,
        since_ms: i64,
        mut seen: Vec<CompanyId>,
        offset: Option<String>,
    ) -> Result<Position, RunError> {
        let since = DateTime::from_timestamp_millis(since_ms).unwrap_or(DateTime::UNIX_EPOCH);
        let mut request =
            SearchRequest::modified_since(ObjectType::Companies, since, read_properties());
        request.limit = MAX_SEARCH_LIMIT;
        request.after = offset;
        let page = self
            .client
            .search_companies(&request)
            .await
            .map_err(|e| company_error("searching changed HubSpot companies", e))?;
        let latest = page
            .results
            .iter()
            .filter_map(|c| c.updated_at.map(|t| t.timestamp_millis()))
            .max();
        let fresh: Vec<Company> = page
            .results
            .iter()
            .filter(|c| !seen.contains(&c.id))
            .cloned()
            .collect();
        let next = match (page.next_after, latest) {
            (None, _) => Position::Done,
            (Some(_), Some(latest)) if latest > since_ms => Position::Search {
                since_ms: latest,
                seen: page
                    .results
                    .iter()
                    .filter(|c| c.updated_at.map(|t| t.timestamp_millis()) == Some(latest))
                    .map(|c| c.id.clone())
                    .collect(),
                offset: None,
            },
            // A whole page at one time: go on by offset within it.
            (Some(after), _) => {
                seen.extend(page.results.iter().map(|c| c.id.clone()));
                Position::Search {
                    since_ms,
                    seen,
                    offset: Some(after),
                }
            }
        };
        self.plan.call("search", 1);
        self.write(fresh, &[], next).await
    }

    /// Matches a page against the local rows, writes it and commits it with the counts and
    /// the checkpoint `next`; the page that ends the reading stores the bookmark. What the
    /// matching needs from HubSpot is read before the page's transaction opens.
    async fn write(
        &mut self,
        companies: Vec<Company>,
        seen: &[String],
        next: Position,
    ) -> Result<Position, RunError> {
        let companies: Vec<Company> = companies.into_iter().filter(|c| !c.archived).collect();
        let stale =
            read_stale_links(self.client, &self.keys, self.progress.store(), &companies).await?;
        let mut tx = self.progress.begin().await?;
        let Applied {
            mut counts,
            errors,
            links,
            creates,
            created,
        } = apply(&self.keys, &mut tx, &companies, self.counts, &stale).await?;
        if self.verbose {
            // Verbose counts the breakdown alone: `upserted` keeps its value from before the page.
            counts.upserted = self.counts.upserted;
        }
        if self.dry_run {
            self.plan_page(&links, &creates, &created, &errors);
            // The real code decided; the dry run keeps its counts, never its writes.
            tx.rollback().await?;
            tx = self.progress.begin().await?;
        }
        // What a full list saw, for its sweep for deletions (a dry run's too: its sweep counts).
        if !seen.is_empty() {
            let seen: Vec<&str> = seen.iter().map(String::as_str).collect();
            tx.mark_pull_seen(&self.job_key(), &seen).await?;
        }
        if !self.dry_run && matches!(next, Position::Done | Position::Sweep { .. }) {
            tx.set_company_pull_bookmark(self.started_at).await?;
        }
        self.commit(tx, counts, next.clone(), errors).await?;
        Ok(next)
    }

    /// After a full list: the linked rows whose company the list did not show, 100 at a time
    /// by row id, are read by id; those HubSpot no longer has are tombstoned.
    async fn sweep_page(&mut self, after: LocalCompanyId) -> Result<Position, RunError> {
        let job = self.job_key();
        if after == LocalCompanyId(i64::MIN) {
            self.progress
                .store()
                .refresh_sweep_statistics(crate::store::SweepTable::Companies)
                .await?;
        }
        let rows = self
            .progress
            .store()
            .companies_linked_unseen(&job, after, MAX_BATCH as u32)
            .await?;
        let Some(last) = rows.last().map(|(id, _)| *id) else {
            let mut tx = self.progress.begin().await?;
            tx.forget_pull_seen(&job).await?;
            self.commit(tx, self.counts, Position::Done, Vec::new())
                .await?;
            return Ok(Position::Done);
        };
        let ids: Vec<CompanyId> = rows.into_iter().map(|(_, hs)| hs).collect();
        self.plan.call("batch_read", 1);
        let gone: Vec<CompanyId> = self.gone_of(&ids).await?.into_iter().collect();
        let mut tx = self.progress.begin().await?;
        let unlinked = if self.dry_run {
            // Each id is one linked row's (the sweep read them from the rows).
            for id in &gone {
                self.plan.actions.push(PlannedAction {
                    action: PlannedKind::Skip,
                    contact_id: None,
                    email: None,
                    hs_object_id: Some(crate::ids::HsObjectId(id.0.clone())),
                    reason: "HubSpot no longer has this company: its local row would be marked \
                             deleted"
                        .to_owned(),
                });
            }
            gone.len()
        } else {
            tx.tombstone_companies(&gone, TombstoneReason::Deleted)
                .await?
                .len()
        };
        let mut counts = self.counts;
        counts.unlinked += unlinked as u64;
        let next = Position::Sweep { after: last };
        self.commit(tx, counts, next.clone(), Vec::new()).await?;
        Ok(next)
    }

    /// Which of `ids` (at most 100) HubSpot no longer has.
    async fn gone_of(&self, ids: &[CompanyId]) -> Result<HashSet<CompanyId>, RunError> {
        gone_of(self.client, ids).await
    }

    async fn commit(
        &mut self,
        tx: Tx,
        counts: PullCounts,
        next: Position,
        errors: Vec<RecordError>,
    ) -> Result<(), RunError> {
        let checkpoint = serde_json::to_value(Cursor {
            started_at: self.started_at,
            position: next,
        })
        .map_err(|e| {
            RunError::Fatal(RunFailure::caused_by(
                "cannot encode the company pull checkpoint",
                e,
            ))
        })?;
        let page = Page {
            counts: Counts::Pull(counts),
            checkpoint,
            errors,
        };
        if self.dry_run {
            let plan = std::mem::take(&mut self.plan);
            self.progress.commit_planned(tx, page, Some(plan)).await?;
        } else {
            self.progress.commit(tx, page).await?;
        }
        self.counts = counts;
        Ok(())
    }

    /// A dry run's actions for a page: what it would link, create and fail.
    fn plan_page(
        &mut self,
        links: &[(&Company, CompanyLink)],
        creates: &[PulledCompany],
        created: &[CompanyId],
        errors: &[RecordError],
    ) {
        let action = |kind, id: &CompanyId, reason: String| PlannedAction {
            action: kind,
            contact_id: None,
            email: None,
            hs_object_id: Some(crate::ids::HsObjectId(id.0.clone())),
            reason,
        };
        for (company, link) in links {
            self.plan.actions.push(action(
                PlannedKind::Link,
                &company.id,
                format!("local company {} would be linked to it", link.id),
            ));
        }
        for row in creates.iter().filter(|r| created.contains(&r.hs_object_id)) {
            self.plan.actions.push(action(
                PlannedKind::Create,
                &row.hs_object_id,
                "a local company would be created for it".to_owned(),
            ));
        }
        for error in errors {
            self.plan.actions.push(PlannedAction {
                action: PlannedKind::Fail,
                contact_id: None,
                email: None,
                hs_object_id: error.hs_object_id.clone(),
                reason: error.reason.clone(),
            });
        }
    }

    fn job_key(&self) -> String {
        self.progress.job_id().to_string()
    }
}

/// What [`apply`] did with a page of companies.
pub(crate) struct Applied<'a> {
    /// The counts, the page's outcomes added.
    pub counts: PullCounts,
    /// The page's failed companies.
    pub errors: Vec<RecordError>,
    /// The links it made (or tried: a clash is a failed record).
    pub links: Vec<(&'a Company, CompanyLink)>,
    /// The local companies it meant to create.
    pub creates: Vec<PulledCompany>,
    /// The HubSpot companies of those it created.
    pub created: Vec<CompanyId>,
}

/// Matches a page of live HubSpot companies against the local rows in `tx` and writes the
/// links and new rows (see the module docs), adding the outcomes to `counts`: a company pull's
/// page, and a webhook pull's batch of the companies webhooks named. It makes no HubSpot call:
/// `stale` is what [`read_stale_links`] read before `tx` opened.
pub(crate) async fn apply<'a>(
    keys: &ExternalKeys,
    tx: &mut Tx,
    companies: &'a [Company],
    mut counts: PullCounts,
    stale: &StaleLinks,
) -> Result<Applied<'a>, RunError> {
    let decisions = decide(keys, tx, companies, stale).await?;
    let mut errors = Vec::new();
    let mut links = Vec::new();
    let mut creates = Vec::new();
    for (company, decision) in companies.iter().zip(decisions) {
        match decision {
            Decision::Unchanged => counts.add(PullOutcome::Unchanged),
            Decision::Link(link) => links.push((company, link)),
            Decision::Create(row) => creates.push(row),
            Decision::Failed(reason) => {
                counts.add(PullOutcome::Failed);
                errors.push(failure(company, None, reason));
            }
        }
    }
    let rows: Vec<CompanyLink> = links.iter().map(|(_, l)| l.clone()).collect();
    let clashes = tx.link_companies(&rows).await?;
    for (company, link) in &links {
        match clashes.iter().find(|c| c.id == link.id) {
            Some(clash) => {
                counts.add(PullOutcome::Failed);
                errors.push(failure(
                    company,
                    Some(link.id),
                    format!(
                        "HubSpot company {} is already linked to local company {}",
                        clash.hs_object_id, clash.holder
                    ),
                ));
            }
            None => {
                counts.add(PullOutcome::Linked);
                counts.upserted += 1;
            }
        }
    }
    let created = tx.insert_pulled_companies(&creates).await?;
    for row in &creates {
        if created.contains(&row.hs_object_id) {
            counts.add(PullOutcome::Created { with_email: true });
            counts.upserted += 1;
        } else {
            // Linked meanwhile by a concurrent writer: nothing left to do here.
            counts.add(PullOutcome::Unchanged);
        }
    }
    Ok(Applied {
        counts,
        errors,
        links,
        creates,
        created,
    })
}

/// What HubSpot said, before a page's transaction opened, about the companies local rows
/// were linked to when the page's external keys named those rows with another company (a
/// stale link, re-linked only if HubSpot no longer has it). Read then, so that no HubSpot call
/// is made while the transaction (on SQLite, the database's one write lock) is open.
#[derive(Debug, Default, Clone)]
pub(crate) struct StaleLinks {
    /// The linked companies HubSpot was asked about.
    checked: HashSet<CompanyId>,
    /// Those of them HubSpot no longer has.
    gone: HashSet<CompanyId>,
    /// The calls asking made.
    calls: LookUpCalls,
    /// The stale link each company's key names, by the company's id.
    named: HashMap<CompanyId, CompanyId>,
    /// Those of `checked` HubSpot's batch read left out, read on their own.
    alone: HashSet<CompanyId>,
}

/// The companies rows are linked to that `companies`' keys name as stale, by the naming
/// company's id: the link of the row a company's key names, when it is another company and no
/// row holds the company itself.
fn stale_links(
    keys: &ExternalKeys,
    companies: &[Company],
    held: &HashSet<CompanyId>,
    rows: &HashMap<LocalCompanyId, CompanyMatch>,
) -> HashMap<CompanyId, CompanyId> {
    companies
        .iter()
        .filter_map(|c| {
            let row = rows.get(&keys.parse_company(c.property(COMPANY_KEY)?)?)?;
            row.hs_object_id
                .clone()
                .filter(|hs| *hs != c.id && !held.contains(&c.id))
                .map(|hs| (c.id.clone(), hs))
        })
        .collect()
}

/// What a page's matching looks up locally: its HubSpot ids, and the local rows its
/// companies' external keys name (this database's keys only).
fn page_keys<'a>(
    keys: &ExternalKeys,
    companies: &'a [Company],
) -> (Vec<&'a str>, Vec<LocalCompanyId>) {
    let ids = companies.iter().map(|c| c.id.0.as_str()).collect();
    let keyed = companies
        .iter()
        .filter_map(|c| c.property(COMPANY_KEY).and_then(|k| keys.parse_company(k)))
        .collect();
    (ids, keyed)
}

/// Reads from HubSpot, before a page's transaction opens, what [`decide`] will need about
/// `companies`: whether the stale links their keys name (as the committed rows show them, read
/// on the pool) are gone. [`decide`] reads the rows again under its transaction.
pub(crate) async fn read_stale_links(
    client: &HubSpotClient,
    keys: &ExternalKeys,
    store: &Store,
    companies: &[Company],
) -> Result<StaleLinks, RunError> {
    let (ids, keyed) = page_keys(keys, companies);
    let held: HashSet<CompanyId> = store
        .company_holders_now(&ids)
        .await?
        .into_iter()
        .map(|(_, hs)| hs)
        .collect();
    let rows: HashMap<LocalCompanyId, _> = store
        .companies_by_ids_now(&keyed)
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let named = stale_links(keys, companies, &held, &rows);
    let mut checked: Vec<CompanyId> = named.values().cloned().collect();
    checked.sort();
    checked.dedup();
    let mut gone = HashSet::new();
    let mut alone = HashSet::new();
    let mut calls = LookUpCalls::default();
    for chunk in checked.chunks(MAX_BATCH) {
        let (fates, read_alone) =
            look_up_companies_noting(client, chunk, "checking linked companies").await?;
        calls.add(read_alone.len() as u64);
        alone.extend(read_alone);
        gone.extend(gone_in(fates));
    }
    Ok(StaleLinks {
        checked: checked.into_iter().collect(),
        gone,
        calls,
        named,
        alone,
    })
}

/// Decides, for each company of the page, what the pull does (see the module docs), with the
/// rows as `tx` sees them and HubSpot's answers read before it opened (`stale`).
pub(crate) async fn decide(
    keys: &ExternalKeys,
    tx: &mut Tx,
    companies: &[Company],
    stale: &StaleLinks,
) -> Result<Vec<Decision>, RunError> {
    let (ids, keyed) = page_keys(keys, companies);
    let held: HashSet<CompanyId> = tx
        .company_holders(&ids)
        .await?
        .into_iter()
        .map(|(_, hs)| hs)
        .collect();
    let rows: HashMap<LocalCompanyId, _> = tx
        .companies_by_ids(&keyed)
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let domains: Vec<String> = companies
        .iter()
        .filter_map(|c| c.domain().map(|d| d.trim().to_lowercase()))
        .collect();
    let domain_refs: Vec<&str> = domains.iter().map(String::as_str).collect();
    let mut by_domain: HashMap<String, Vec<_>> = HashMap::new();
    for row in tx.unlinked_companies_with_domains(&domain_refs).await? {
        if let Some(domain) = row.domain.clone() {
            by_domain.entry(domain).or_default().push(row);
        }
    }
    let mut claimed: HashSet<LocalCompanyId> = HashSet::new();
    let mut decisions = Vec::with_capacity(companies.len());
    for company in companies {
        if held.contains(&company.id) {
            decisions.push(Decision::Unchanged);
            continue;
        }
        let by_key = company
            .property(COMPANY_KEY)
            .and_then(|k| keys.parse_company(k))
            .and_then(|id| rows.get(&id));
        if by_key.is_some_and(|r| r.tombstoned) {
            // Its row is marked deleted: a user's restore decides, not a second row.
            decisions.push(Decision::Unchanged);
            continue;
        }
        if let Some(row) = by_key {
            let decision = match &row.hs_object_id {
                // Linked meanwhile by another writer to a company HubSpot was not asked about.
                Some(current) if !stale.checked.contains(current) => Decision::Failed(format!(
                    "it carries the key of local company {}, linked to HubSpot company \
                     {current} while HubSpot was read; the next pull retries it",
                    row.id
                )),
                Some(current) if !stale.gone.contains(current) => Decision::Failed(format!(
                    "it carries the key of local company {}, which is linked to HubSpot \
                     company {current}, still in HubSpot",
                    row.id
                )),
                _ if !claimed.insert(row.id) => Decision::Unchanged,
                current => Decision::Link(CompanyLink {
                    id: row.id,
                    read_hs_object_id: current.clone(),
                    hs_object_id: company.id.clone(),
                    pushed_version: None,
                }),
            };
            decisions.push(decision);
            continue;
        }
        let domain = company.domain().map(|d| d.trim().to_lowercase());
        let local = domain.as_ref().and_then(|d| by_domain.get(d));
        let decision = match local.map(Vec::as_slice) {
            Some([one]) if claimed.insert(one.id) => Decision::Link(CompanyLink {
                id: one.id,
                read_hs_object_id: None,
                hs_object_id: company.id.clone(),
                // Linking is not a local change: the row counts as pushed as it is.
                pushed_version: Some(one.local_version),
            }),
            Some(several) if several.len() > 1 => {
                let ids: Vec<String> = several.iter().map(|r| r.id.to_string()).collect();
                Decision::Failed(format!(
                    "{} local companies have its domain {:?} ({}); crm-sync links only when \
                     exactly one does",
                    ids.len(),
                    domain.unwrap_or_default(),
                    ids.join(", ")
                ))
            }
            _ => Decision::Create(PulledCompany {
                hs_object_id: company.id.clone(),
                name: company.name().map(str::to_owned),
                domain: company.domain().map(str::to_owned),
            }),
        };
        decisions.push(decision);
    }
    Ok(decisions)
}

/// Which of `ids` (at most 100) HubSpot no longer has: missing or archived. A company
/// merged into another stands as the survivor and is not gone; an id HubSpot leaves out of its
/// answer without a word is read on its own before it counts as gone.
async fn gone_of(
    client: &HubSpotClient,
    ids: &[CompanyId],
) -> Result<HashSet<CompanyId>, RunError> {
    Ok(gone_in(
        look_up_companies(client, ids, "checking linked companies").await?,
    ))
}

/// The companies of `fates` HubSpot no longer has.
fn gone_in(fates: HashMap<CompanyId, CompanyFate>) -> HashSet<CompanyId> {
    fates
        .into_iter()
        .filter(|(_, fate)| matches!(fate, CompanyFate::Gone))
        .map(|(id, _)| id)
        .collect()
}

fn failure(company: &Company, local: Option<LocalCompanyId>, reason: String) -> RecordError {
    RecordError {
        contact_id: None,
        company_id: local,
        email: None,
        hs_object_id: Some(crate::ids::HsObjectId(company.id.0.clone())),
        reason,
    }
}

/// What HubSpot said, before a transaction opened, about companies a pull may adopt: those
/// no local company was linked to when it looked (by id: found, merged into a survivor, or
/// gone), and what their matching needs ([`StaleLinks`]).
#[derive(Debug, Default)]
pub(crate) struct Adoptable {
    /// HubSpot's answer for each id no local company held.
    fates: HashMap<CompanyId, CompanyFate>,
    /// The stale links the records' keys name.
    stale: StaleLinks,
    /// Each batch of ids read, with the calls reading it made.
    batches: Vec<(Vec<CompanyId>, LookUpCalls)>,
    /// The ids the batch reads left out, read on their own.
    alone: HashSet<CompanyId>,
}

impl Adoptable {
    /// The calls reading them made, as a run that holds the companies `adopted` already makes
    /// them (a dry run counts them as the real run's): an earlier page of a dry incremental
    /// pull adopted them in a transaction it rolled back, so this page read them again, but the
    /// real run's page finds them held and reads a batch only when it has another company in
    /// it. With nothing `adopted`, every call made.
    pub(crate) fn calls_beyond(&self, adopted: &HashSet<CompanyId>) -> LookUpCalls {
        let mut calls = self.stale.calls;
        for (ids, batch) in &self.batches {
            if ids.iter().any(|id| !adopted.contains(id)) {
                calls.merge(*batch);
            }
        }
        calls
    }

    /// The companies the page adopts (HubSpot has them under their ids).
    pub(crate) fn adopted(&self) -> impl Iterator<Item = &CompanyId> {
        self.fates
            .iter()
            .filter(|(_, fate)| matches!(fate, CompanyFate::Live(_)))
            .map(|(id, _)| id)
    }
}

/// What a dry full pull's pages learned about the companies its association phase would adopt,
/// to count that phase's company reads ([`AdoptionNotes::calls_of_full_pull`]): the real phase
/// reads them per 1,000 contacts after the pages, which a dry run cannot do (its pages' links
/// are rolled back), so each dry page notes what its own reads found.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AdoptionNotes {
    /// Each company no local company held, by id.
    companies: HashMap<CompanyId, NotedCompany>,
    /// Each stale link a company's external key names, by the company's id, with whether
    /// checking it took a read of its own.
    stale: HashMap<CompanyId, NotedLink>,
}

/// What reading a company no local company held found ([`AdoptionNotes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NotedCompany {
    /// The record standing for it: itself, or the survivor of its merge (none: gone).
    record: Option<CompanyId>,
    /// HubSpot's batch read left it out: it is read on its own.
    alone: bool,
}

/// A stale link a company's key names ([`AdoptionNotes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct NotedLink {
    /// The company the named row is linked to.
    linked: CompanyId,
    /// HubSpot's batch read left it out: it is read on its own.
    alone: bool,
}

impl AdoptionNotes {
    /// Notes what a page's [`read_adoptable`] found.
    pub(crate) fn note(&mut self, read: &Adoptable) {
        for (id, fate) in &read.fates {
            self.companies.insert(
                id.clone(),
                NotedCompany {
                    record: fate.record().map(|c| c.id.clone()),
                    alone: read.alone.contains(id),
                },
            );
        }
        for (company, linked) in &read.stale.named {
            self.stale.insert(
                company.clone(),
                NotedLink {
                    linked: linked.clone(),
                    alone: read.stale.alone.contains(linked),
                },
            );
        }
    }

    /// Adds the notes of `other` (another page of the same dry job).
    pub(crate) fn merge(&mut self, other: AdoptionNotes) {
        self.companies.extend(other.companies);
        self.stale.extend(other.stale);
    }

    /// The company reads a full pull's association phase makes to adopt companies, as
    /// [`read_adoptable`] makes them: per 1,000 contacts (`sets`: the company each sets, in the
    /// order the phase reads them), the companies they set, sorted, 100 a batch read for each
    /// 100 with a company no local company holds, plus a read of its own for each the batch
    /// left out; then the stale links the records' keys name, 100 a batch read, the same way.
    /// A company adopted (its record: itself, or the survivor of its merge) is held from the
    /// next 1,000 on.
    pub(crate) fn calls_of_full_pull(
        &self,
        sets: impl IntoIterator<Item = Option<CompanyId>>,
    ) -> LookUpCalls {
        let sets: Vec<Option<CompanyId>> = sets.into_iter().collect();
        let mut held: HashSet<&CompanyId> = HashSet::new();
        let mut calls = LookUpCalls::default();
        for call in sets.chunks(crate::hubspot::MAX_ASSOCIATION_READ) {
            let mut wanted: Vec<&CompanyId> = call.iter().flatten().collect();
            wanted.sort();
            wanted.dedup();
            let mut records: Vec<&CompanyId> = Vec::new();
            for chunk in wanted.chunks(MAX_BATCH) {
                let unread: Vec<&NotedCompany> = chunk
                    .iter()
                    .filter(|c| !held.contains(**c))
                    .filter_map(|c| self.companies.get(*c))
                    .collect();
                if unread.is_empty() {
                    continue;
                }
                calls.add(unread.iter().filter(|c| c.alone).count() as u64);
                records.extend(unread.iter().filter_map(|c| c.record.as_ref()));
            }
            records.sort();
            records.dedup();
            let mut stale: Vec<&NotedLink> = records
                .iter()
                .filter(|r| !held.contains(**r))
                .filter_map(|r| self.stale.get(*r))
                .collect();
            stale.sort_by(|a, b| a.linked.cmp(&b.linked));
            stale.dedup_by(|a, b| a.linked == b.linked);
            for chunk in stale.chunks(MAX_BATCH) {
                calls.add(chunk.iter().filter(|l| l.alone).count() as u64);
            }
            held.extend(records);
        }
        calls
    }
}

/// Reads from HubSpot, before the transaction that adopts them ([`adopt`]), the companies of
/// `ids` no local company is linked to (a read-only query on the pool says which), and what
/// their matching needs.
pub(crate) async fn read_adoptable(
    client: &HubSpotClient,
    keys: &ExternalKeys,
    store: &Store,
    ids: &[CompanyId],
) -> Result<Adoptable, RunError> {
    let mut fates = HashMap::new();
    let mut batches = Vec::new();
    let mut alone = HashSet::new();
    for chunk in ids.chunks(MAX_BATCH) {
        let refs: Vec<&str> = chunk.iter().map(|c| c.0.as_str()).collect();
        let held: HashSet<CompanyId> = store
            .company_holders_now(&refs)
            .await?
            .into_iter()
            .map(|(_, hs)| hs)
            .collect();
        let unknown: Vec<CompanyId> = chunk
            .iter()
            .filter(|c| !held.contains(*c))
            .cloned()
            .collect();
        if unknown.is_empty() {
            continue;
        }
        let (read, read_alone) =
            look_up_companies_noting(client, &unknown, "reading associated HubSpot companies")
                .await?;
        let mut batch = LookUpCalls::default();
        batch.add(read_alone.len() as u64);
        batches.push((unknown, batch));
        alone.extend(read_alone);
        fates.extend(read);
    }
    let mut records: Vec<Company> = Vec::new();
    for record in fates.values().filter_map(CompanyFate::record) {
        if records.iter().all(|c| c.id != record.id) {
            records.push(record.clone());
        }
    }
    let stale = read_stale_links(client, keys, store, &records).await?;
    Ok(Adoptable {
        fates,
        stale,
        batches,
        alone,
    })
}

/// The local companies of these HubSpot companies, in `tx`: the rows already linked to them,
/// and for the others a row found or made by the company pull's own matching (external key,
/// a single unlinked row with the domain, else a new row) — so a company HubSpot created and
/// associated on its own is accepted once, never duplicated. Returns the local id of each
/// company, or why it has none (HubSpot no longer has it, or the matching refused it).
///
/// It makes no HubSpot call: `read` is what [`read_adoptable`] read before `tx` opened. The
/// links are read again under `tx`, so a company another writer linked meanwhile resolves to
/// that row, never to a second one.
pub(crate) async fn adopt(
    keys: &ExternalKeys,
    tx: &mut Tx,
    ids: &[CompanyId],
    read: &Adoptable,
) -> Result<HashMap<CompanyId, Result<LocalCompanyId, String>>, RunError> {
    let mut out: HashMap<CompanyId, Result<LocalCompanyId, String>> = HashMap::new();
    for chunk in ids.chunks(MAX_BATCH) {
        let refs: Vec<&str> = chunk.iter().map(|c| c.0.as_str()).collect();
        for (local, hs) in tx.company_holders(&refs).await? {
            out.insert(hs, Ok(local));
        }
        let unknown: Vec<CompanyId> = chunk
            .iter()
            .filter(|c| !out.contains_key(*c))
            .cloned()
            .collect();
        if unknown.is_empty() {
            continue;
        }
        // The records standing for the ids (a merged-away id stands as its survivor), once each.
        let mut companies: Vec<Company> = Vec::new();
        for id in &unknown {
            match read.fates.get(id).map(CompanyFate::record) {
                None => {
                    // Held by a local company when HubSpot was read, and unlinked since.
                    out.insert(
                        id.clone(),
                        Err(
                            "its local company was unlinked while HubSpot was read; the next \
                             pull retries it"
                                .to_owned(),
                        ),
                    );
                }
                Some(None) => {
                    out.insert(
                        id.clone(),
                        Err("HubSpot no longer has the company".to_owned()),
                    );
                }
                Some(Some(record)) if companies.iter().all(|c| c.id != record.id) => {
                    companies.push(record.clone());
                }
                Some(Some(_)) => {}
            }
        }
        let decisions = decide(keys, tx, &companies, &read.stale).await?;
        let mut links = Vec::new();
        let mut creates = Vec::new();
        for (company, decision) in companies.iter().zip(decisions) {
            match decision {
                Decision::Unchanged => {}
                Decision::Link(link) => links.push(link),
                Decision::Create(row) => creates.push(row),
                Decision::Failed(reason) => {
                    out.insert(company.id.clone(), Err(reason));
                }
            }
        }
        tx.link_companies(&links).await?;
        tx.insert_pulled_companies(&creates).await?;
        let refs: Vec<&str> = companies.iter().map(|c| c.id.0.as_str()).collect();
        for (local, hs) in tx.company_holders(&refs).await? {
            out.insert(hs, Ok(local));
        }
        // A merged-away id ends where its survivor did.
        for id in &unknown {
            let Some(survivor) = read.fates.get(id).and_then(CompanyFate::record) else {
                continue;
            };
            if survivor.id != *id
                && let Some(end) = out.get(&survivor.id).cloned()
            {
                out.insert(id.clone(), end);
            }
        }
    }
    for id in ids {
        out.entry(id.clone()).or_insert_with(|| {
            Err("crm-sync could not match the company to a local one".to_owned())
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> CompanyId {
        CompanyId(format!("{n:05}"))
    }

    fn company(record: Option<u32>, alone: bool) -> NotedCompany {
        NotedCompany {
            record: record.map(id),
            alone,
        }
    }

    /// `n` contacts that set `company`, as the phase reads them.
    fn setting(company: u32, n: usize) -> Vec<Option<CompanyId>> {
        vec![Some(id(company)); n]
    }

    #[test]
    fn a_company_merged_away_is_read_on_its_own_in_every_thousand_that_sets_it() {
        // 7 was merged into 8: the batch read leaves it out (a read of its own each time), and
        // it stays unheld; 8 is held once adopted through it.
        let notes = AdoptionNotes {
            companies: HashMap::from([(id(7), company(Some(8), true))]),
            stale: HashMap::new(),
        };
        let mut sets = setting(7, 1_000);
        sets.extend(setting(7, 10));
        let calls = notes.calls_of_full_pull(sets);
        assert_eq!((calls.reads, calls.gets), (2, 2));
    }

    #[test]
    fn a_company_adopted_is_held_from_the_next_thousand_on() {
        let notes = AdoptionNotes {
            companies: HashMap::from([(id(3), company(Some(3), false))]),
            stale: HashMap::new(),
        };
        let mut sets = setting(3, 1_000);
        sets.extend(setting(3, 1_000));
        let calls = notes.calls_of_full_pull(sets);
        assert_eq!((calls.reads, calls.gets), (1, 0));
    }

    #[test]
    fn the_stale_links_of_a_thousand_are_checked_a_hundred_a_read_once_each() {
        // 150 companies no local company holds, each naming a row linked to a company HubSpot
        // deleted (two name the same one, which its batch read leaves out).
        let companies = (1..=150).map(|n| (id(n), company(Some(n), false)));
        let mut stale: HashMap<CompanyId, NotedLink> = (1..=150)
            .map(|n| {
                let linked = NotedLink {
                    linked: id(1_000 + n),
                    alone: false,
                };
                (id(n), linked)
            })
            .collect();
        for n in [1, 2] {
            stale.insert(
                id(n),
                NotedLink {
                    linked: id(999),
                    alone: true,
                },
            );
        }
        let notes = AdoptionNotes {
            companies: companies.collect(),
            stale,
        };
        let sets: Vec<Option<CompanyId>> = (1..=150).map(|n| Some(id(n))).collect();
        let calls = notes.calls_of_full_pull(sets);
        // Two reads of the 150 companies, two of the 149 stale links, the shared one alone.
        assert_eq!((calls.reads, calls.gets), (4, 1));
    }
}
