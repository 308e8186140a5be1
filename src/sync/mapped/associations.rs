//! The primary company of the rows of a user's contacts table (`company_column`), synced with
//! HubSpot's contact→company associations as the built-in `contacts.company_id` is
//! ([`crate::sync::associations`], whose HubSpot-side helpers this reuses): types 279 + 1, a
//! write resending the pair's other types, the old pair archived, on the associations budget.
//!
//! The column holds the *local key* of the company; a [`CompanyResolver`] turns it into a
//! HubSpot company id and back: crm-sync's own `companies` table (its `hs_object_id`; a
//! tombstoned company has none), or a companies table mapped to the user's own (its links in
//! `object_links`, object `companies`).
//!
//! The state is the HubSpot company both sides last agreed on, kept on the row's link
//! (`object_links.company_hs_id`): the local company's HubSpot id differing from it is a local
//! change (push writes it), HubSpot's primary differing from it a HubSpot change (pull takes
//! it, unless the local side changed too and owns the association).
//!
//! - Push, after the rows: keyset pages of 100 linked rows; a page whose rows all agree costs
//!   its read only. The companies a page's rows name that have no HubSpot company yet are
//!   linked first ([`CompanyLinker`]), as the built-in contacts push links its contacts'. Candidates: one batch read of their associations, one batch create, one
//!   batch archive; then their state, counts and checkpoint in one transaction. A dry run
//!   makes the reads, sends no write and saves no state.
//! - Pull (full), after the rows: pages of 1,000 linked rows, one association read each; the
//!   HubSpot companies to set that no local company holds are read before the page's
//!   transaction, which re-reads the rows (a row changed locally meanwhile is left to push),
//!   writes the company column (an `UPDATE` of that column only) and the state.
//! - Incremental and webhook pulls: the same, for the linked rows of each page's contacts, read
//!   before the page's transaction and applied in it ([`read_page`], [`apply_page`]); and the
//!   contacts `contact.associationChange` webhooks named ([`webhook_batch`]).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{Mapped, user_mapping};
use crate::hubspot::{AssociatedRecord, HubSpotClient, MAX_ASSOCIATION_READ};
use crate::ids::{CompanyId, ContactId, HsObjectId, LocalCompanyId};
use crate::jobs::model::{Counts, Plan, PullCounts, PushCounts, PushMode, RecordError, SyncObject};
use crate::jobs::{Page, Progress, RunError};
use crate::mapping::{CheckedMapping, ColumnName, Flow, ObjectType, Owner};
use crate::store::{
    ColumnKind, CompanyKeyState, CompanyLinkRow, KeyKind, PendingObject, PendingPull, Store,
    StoreError, Tx,
};
use crate::sync::SyncContext;
use crate::sync::associations::{
    ContactCompanies, PullPlan, PushPlan, Wanted, archive_pairs, archives, primary_of,
    pull_decision, read_companies, write_pairs, writes,
};
use crate::sync::companies::lookup::LookUpCalls;
use crate::sync::companies::pull::{Adoptable, adopt, read_adoptable};
use crate::sync::companies::push::{LinkingCalls, resolve_for_associations};
use crate::sync::keys::ExternalKeys;

/// The checkpoint key where an association phase of a mapped table goes on (a row key, as
/// text); added to the row phase's checkpoint, which ignores it.
const AFTER_KEY: &str = "company_associations_after";

/// Rows per association push page (one batch create and one archive at most).
const PUSH_PAGE: u32 = 100;

/// Where companies' local keys are linked to HubSpot companies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CompanyResolver {
    /// crm-sync's own `companies` table: the key is `companies.id`, its HubSpot id
    /// `companies.hs_object_id` (none once HubSpot deleted it: a tombstone).
    BuiltIn,
    /// A companies table mapped to the user's own: the key is its key column's value, the
    /// HubSpot id that of its `object_links` row of this object.
    Mapped {
        /// The link rows' object (`companies`).
        object: &'static str,
    },
}

/// What a company's local key resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// The linked HubSpot company.
    Linked(CompanyId),
    /// None: why (no such company, not pushed yet, deleted in HubSpot).
    Unlinked(String),
}

impl CompanyResolver {
    /// The resolver of the mappings in effect: a companies table mapped to the user's own when
    /// there is one, else crm-sync's own.
    pub(crate) fn for_mappings(mappings: &[CheckedMapping]) -> Self {
        if mappings
            .iter()
            .any(|m| m.mapping.object == ObjectType::Companies)
        {
            Self::Mapped {
                object: ObjectType::Companies.path_name(),
            }
        } else {
            Self::BuiltIn
        }
    }

    /// The HubSpot company each of `keys` names (pool reads, before any transaction).
    pub(crate) async fn to_hubspot(
        &self,
        store: &Store,
        keys: &[String],
    ) -> Result<HashMap<String, Resolved>, StoreError> {
        let mut out = HashMap::new();
        let states = match self {
            Self::BuiltIn => {
                let mut ids = Vec::new();
                for key in keys {
                    match key.trim().parse::<i64>() {
                        Ok(id) => ids.push(id),
                        Err(_) => {
                            out.insert(
                                key.clone(),
                                Resolved::Unlinked(format!(
                                    "its company key {key:?} is not the id of a local company"
                                )),
                            );
                        }
                    }
                }
                store.builtin_company_keys(&ids).await?
            }
            Self::Mapped { object } => store.linked_company_keys(object, keys).await?,
        };
        let by_key: HashMap<String, CompanyKeyState> =
            states.into_iter().map(|s| (s.key.clone(), s)).collect();
        for key in keys {
            if out.contains_key(key) {
                continue;
            }
            let lookup = match self {
                Self::BuiltIn => key.trim().parse::<i64>().map(|i| i.to_string()).ok(),
                Self::Mapped { .. } => Some(key.clone()),
            };
            let state = lookup.and_then(|k| by_key.get(&k));
            let resolved = match state {
                None => Resolved::Unlinked(format!(
                    "its company {key} is not linked to a HubSpot company (no such local \
                     company)"
                )),
                Some(s) if s.deleted => {
                    Resolved::Unlinked(format!("its company {key} was deleted in HubSpot"))
                }
                Some(CompanyKeyState {
                    hs_object_id: Some(id),
                    ..
                }) => Resolved::Linked(id.clone()),
                Some(_) => Resolved::Unlinked(format!(
                    "its company {key} is not linked to a HubSpot company yet"
                )),
            };
            out.insert(key.clone(), resolved);
        }
        Ok(out)
    }

    /// Reads from HubSpot, before a pull page's transaction, what [`CompanyResolver::to_local`]
    /// needs to give HubSpot companies no local company holds a local row: crm-sync's own
    /// table adopts them by the company pull's rules; a mapped table does not (pull never
    /// inserts into a user's table).
    async fn read_unknown(
        &self,
        client: &HubSpotClient,
        keys: &ExternalKeys,
        store: &Store,
        ids: &[CompanyId],
    ) -> Result<Adoptable, RunError> {
        match self {
            Self::BuiltIn => read_adoptable(client, keys, store, ids).await,
            Self::Mapped { .. } => Ok(Adoptable::default()),
        }
    }

    /// The local key of each HubSpot company of `ids`, in `tx` (no HubSpot call), or why it
    /// has none.
    async fn to_local(
        &self,
        keys: &ExternalKeys,
        tx: &mut Tx,
        ids: &[CompanyId],
        read: &Adoptable,
    ) -> Result<HashMap<CompanyId, Result<String, String>>, RunError> {
        match self {
            Self::BuiltIn => Ok(adopt(keys, tx, ids, read)
                .await?
                .into_iter()
                .map(|(id, local)| (id, local.map(|l| l.0.to_string())))
                .collect()),
            Self::Mapped { object } => {
                let held: HashMap<CompanyId, String> = tx
                    .company_link_holders(object, ids)
                    .await?
                    .into_iter()
                    .map(|(key, id)| (id, key))
                    .collect();
                Ok(ids
                    .iter()
                    .map(|id| {
                        let local = held.get(id).cloned().ok_or_else(|| {
                            "no row of the mapped companies table is linked to it (pull \
                             companies first)"
                                .to_owned()
                        });
                        (id.clone(), local)
                    })
                    .collect())
            }
        }
    }
}

/// A mapping's company association, ready for a job.
#[derive(Debug, Clone)]
pub(crate) struct MappedCompany {
    /// The column holding the company's local key.
    pub column: ColumnName,
    /// How the column takes a key.
    pub kind: KeyKind,
    /// Which way the association travels, and who wins.
    pub flow: Flow,
    /// Where the keys are linked.
    pub resolver: CompanyResolver,
}

impl MappedCompany {
    /// The association of `checked`, if it has one (start-up checked the column; a column
    /// dropped since fails the job naming the key).
    pub(crate) async fn of(
        store: &Store,
        checked: &CheckedMapping,
        mappings: &[CheckedMapping],
    ) -> Result<Option<Self>, RunError> {
        let Some(company) = &checked.mapping.company else {
            return Ok(None);
        };
        let info = store.table_info(&checked.mapping.table).await?;
        let kind = match info
            .as_ref()
            .and_then(|i| i.column(&company.column))
            .map(|c| c.kind.clone())
        {
            Some(ColumnKind::Integer) => KeyKind::Integer,
            Some(ColumnKind::Text) => KeyKind::Text,
            _ => {
                return Err(RunError::fatal(format!(
                    "{}: column \"{}\" of {} is missing or holds neither text nor whole numbers",
                    checked.mapping.company_key(),
                    company.column,
                    checked.mapping.table
                )));
            }
        };
        Ok(Some(Self {
            column: company.column.clone(),
            kind,
            flow: company.flow,
            resolver: CompanyResolver::for_mappings(mappings),
        }))
    }

    /// Whether HubSpot's side wins when both changed: it owns a both-way association, and a
    /// pull-only one always takes HubSpot's.
    fn hubspot_owns(&self) -> bool {
        matches!(self.flow, Flow::Pull | Flow::Both(Owner::HubSpot))
    }
}

/// Whether the job's checkpoint is in its association phase (a run stopped there).
pub(crate) fn resumed(progress: &Progress) -> bool {
    resume_after(progress).is_some()
}

/// Where an association phase resumes (a row key; `None`: from the first row).
fn resume_after(progress: &Progress) -> Option<String> {
    progress
        .checkpoint()
        .and_then(|c| c.get(AFTER_KEY).and_then(Value::as_str).map(str::to_owned))
}

/// `base` (the row phase's checkpoint) with the association phase's position.
fn with_after(base: &Option<Value>, after: &str) -> Value {
    let mut value = base
        .clone()
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Default::default()));
    if let Value::Object(map) = &mut value {
        map.insert(AFTER_KEY.to_owned(), Value::from(after));
    }
    value
}

/// [`with_after`] for a push, whose row phase needs its own `after` to resume: one that
/// committed nothing left none, and its rows are done, so it resumes after this key too.
fn push_checkpoint(base: &Option<Value>, after: &str) -> Value {
    let mut value = with_after(base, after);
    if let Value::Object(map) = &mut value {
        map.entry("after").or_insert_with(|| Value::from(after));
    }
    value
}

/// The keys the rows name, once each.
fn company_keys(rows: &[CompanyLinkRow]) -> Vec<String> {
    let mut keys: Vec<String> = rows
        .iter()
        .filter_map(|r| r.company_key.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    keys.sort();
    keys
}

/// What the local side wants as a row's primary company.
fn wanted(row: &CompanyLinkRow, resolved: &HashMap<String, Resolved>) -> Wanted {
    match &row.company_key {
        None => Wanted::Nothing,
        Some(key) => match resolved.get(key) {
            Some(Resolved::Linked(id)) => Wanted::Company(id.clone()),
            Some(Resolved::Unlinked(reason)) => Wanted::Unlinked(reason.clone()),
            None => Wanted::Unlinked(format!("its company {key} was not looked up")),
        },
    }
}

/// Whether the row's company differs from the one last agreed (an unlinked company always
/// does: it fails at each push until it is linked, as the built-in table's does).
fn changed_locally(row: &CompanyLinkRow, resolved: &HashMap<String, Resolved>) -> bool {
    match wanted(row, resolved) {
        Wanted::Nothing => row.synced.is_some(),
        Wanted::Company(id) => row.synced.as_ref() != Some(&id),
        Wanted::Unlinked(_) => true,
    }
}

fn record_error(mapped: &Mapped, row: &CompanyLinkRow, reason: String) -> RecordError {
    RecordError {
        contact_id: row.key.parse().ok().map(ContactId),
        company_id: row
            .company_key
            .as_deref()
            .and_then(|k| k.trim().parse().ok())
            .map(LocalCompanyId),
        email: None,
        // A dry run's contact it would create has no id yet.
        hs_object_id: (!row.hs_object_id.0.is_empty()).then(|| row.hs_object_id.clone()),
        reason: format!("{}: {reason}", mapped.label(&row.key)),
    }
}

/// What a dry push's row phase would do to the rows its association phase meets (nothing for
/// a real push, whose row phase has done it). Each page's share is saved with the page
/// (`dry_run_notes`), so that a dry push stopped and resumed knows what every run of it did.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct PlannedLinks {
    /// The rows it would link (to this HubSpot id) or create (`None`).
    pub(crate) links: Vec<(String, Option<HsObjectId>)>,
    /// The linked rows whose HubSpot record is gone, which it would mark deleted.
    pub(crate) gone: Vec<String>,
    /// The linked rows it would move to the survivor of a merge.
    pub(crate) moves: Vec<(String, HsObjectId)>,
}

impl PlannedLinks {
    /// Keeps, for a dry run's association phase, the rows a page would mark deleted and those
    /// it would move to a survivor (not those whose survivor another row holds, `held`: the
    /// real run leaves their link as it was).
    pub(crate) fn plan_marks_and_moves(
        &mut self,
        gone: &[String],
        moves: &[(String, HsObjectId)],
        held: &[crate::store::LinkHeld],
    ) {
        self.gone.extend(gone.iter().cloned());
        self.moves.extend(
            moves
                .iter()
                .filter(|(key, _)| !held.iter().any(|h| h.key == *key))
                .cloned(),
        );
    }

    /// Adds what a later page would do.
    pub(crate) fn extend(&mut self, page: PlannedLinks) {
        self.links.extend(page.links);
        self.gone.extend(page.gone);
        self.moves.extend(page.moves);
    }

    /// The HubSpot records these pages would link or move rows to, each with its row's key.
    pub(crate) fn holders(&self) -> impl Iterator<Item = (HsObjectId, String)> + '_ {
        self.links
            .iter()
            .filter_map(|(key, id)| id.clone().map(|id| (id, key.clone())))
            .chain(self.moves.iter().map(|(key, id)| (id.clone(), key.clone())))
    }
}

/// The association phase of a push of `mapped`: every linked row whose company changed since
/// the last agreed one, page by page after the checkpoint; returns the counts. A dry run's
/// pages are the real run's as its row phase leaves them (`planned`): with the rows it would
/// link or create, without those it would mark deleted, a merged one at its survivor.
pub(crate) async fn push(
    ctx: &SyncContext,
    mapped: &Mapped,
    mode: PushMode,
    dry_run: bool,
    progress: &Progress,
    mut counts: PushCounts,
    planned: &PlannedLinks,
) -> Result<PushCounts, RunError> {
    let Some(company) = mapped
        .company
        .as_ref()
        .filter(|c| c.flow.direction().writes_to_hubspot())
    else {
        return Ok(counts);
    };
    let mut linker = CompanyLinker::new(ctx, progress.store(), company, mode, dry_run).await?;
    let page = PushPage {
        client: &ctx.hubspot,
        mapped,
        company,
        dry_run,
        progress,
    };
    let base = progress.checkpoint();
    let mut after = resume_after(progress);
    let mut planned = PlannedRows::new(progress.store(), mapped, planned).await?;
    if dry_run && let Some(stop) = &after {
        replay_dry_pages(progress.store(), company, &mut planned, &mut linker, stop).await?;
    }
    loop {
        if progress.should_stop() {
            return Err(RunError::Interrupted);
        }
        let rows = planned
            .page(progress.store(), company, after.as_deref())
            .await?;
        let Some(last) = rows.last().map(|r| r.key.clone()) else {
            break;
        };
        let full = rows.len() == PUSH_PAGE as usize;
        let checkpoint = push_checkpoint(&base, &last);
        counts = page
            .plan_and_run(&mut linker, rows, counts, checkpoint)
            .await?;
        after = Some(last);
        if !full {
            break;
        }
    }
    Ok(counts)
}

/// A dry run resumed in its association phase: the pages an earlier run of it planned, up to
/// the one that ended at `stop`, made again and their companies looked up again without a
/// commit, so that `planned` and `linker` stand where they stood (the rows taken in, the
/// companies it would have linked, the property calls made): the pages after them then plan
/// what the real run does, and the calls of those pages are not counted twice.
async fn replay_dry_pages(
    store: &Store,
    company: &MappedCompany,
    planned: &mut PlannedRows<'_>,
    linker: &mut CompanyLinker<'_>,
    stop: &str,
) -> Result<(), RunError> {
    let mut after: Option<String> = None;
    loop {
        let rows = planned.page(store, company, after.as_deref()).await?;
        let Some(last) = rows.last().map(|r| r.key.clone()) else {
            break;
        };
        let full = rows.len() == PUSH_PAGE as usize;
        let mut resolved = company
            .resolver
            .to_hubspot(store, &company_keys(&rows))
            .await?;
        linker.link(store, &mut resolved).await?;
        if last == stop || !full {
            break;
        }
        after = Some(last);
    }
    // Those calls are in the job's plan already.
    linker.take_calls();
    Ok(())
}

/// The rows a dry push would link or create, mark deleted or move (none for a real push), as
/// the real run's pages meet them after its row phase: those it links among the linked rows in
/// key order, those it marks deleted no longer linked, a moved one at its survivor.
struct PlannedRows<'a> {
    mapped: &'a Mapped,
    /// Keys of the rows it would link or create in the table's key order, those not taken in
    /// yet.
    keys: std::collections::VecDeque<String>,
    /// The HubSpot id each would be linked to (`None`: one it would create).
    ids: HashMap<String, Option<HsObjectId>>,
    /// The linked rows it would mark deleted.
    gone: HashSet<String>,
    /// The survivor each moved row would be linked to.
    moved: HashMap<String, HsObjectId>,
}

impl<'a> PlannedRows<'a> {
    async fn new(
        store: &Store,
        mapped: &'a Mapped,
        planned: &PlannedLinks,
    ) -> Result<Self, RunError> {
        let ids: HashMap<String, Option<HsObjectId>> = planned.links.iter().cloned().collect();
        let keys: Vec<String> = planned.links.iter().map(|(key, _)| key.clone()).collect();
        Ok(Self {
            mapped,
            keys: store.keys_in_order(&mapped.table, &keys).await?.into(),
            ids,
            gone: planned.gone.iter().cloned().collect(),
            moved: planned.moves.iter().cloned().collect(),
        })
    }

    /// The real run's next page of rows after `after`: the linked ones and the planned ones.
    async fn page(
        &mut self,
        store: &Store,
        company: &MappedCompany,
        after: Option<&str>,
    ) -> Result<Vec<CompanyLinkRow>, RunError> {
        let mut rows = Vec::new();
        let mut after = after.map(str::to_owned);
        // The real page's rows of 100 leave out the rows marked deleted: reading on past them
        // keeps the pages (and so their reads) the real run's.
        while rows.len() < PUSH_PAGE as usize {
            let want = PUSH_PAGE - rows.len() as u32;
            let read = self.read(store, company, after.as_deref(), want).await?;
            let Some(last) = read.last().map(|r| r.key.clone()) else {
                break;
            };
            let short = read.len() < want as usize;
            rows.extend(read.into_iter().filter(|r| !self.gone.contains(&r.key)));
            after = Some(last);
            if short {
                break;
            }
        }
        for row in &mut rows {
            if let Some(survivor) = self.moved.get(&row.key) {
                row.hs_object_id = survivor.clone();
            }
        }
        Ok(rows)
    }

    /// Up to `limit` linked rows after `after`, with the planned rows among them taken in.
    async fn read(
        &mut self,
        store: &Store,
        company: &MappedCompany,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CompanyLinkRow>, RunError> {
        let (table, column) = (&self.mapped.table, &company.column);
        if self.keys.is_empty() {
            return Ok(store.company_link_page(table, column, after, limit).await?);
        }
        // A page takes in at most a page of them, the next ones in key order.
        let next: Vec<String> = self.keys.iter().take(limit as usize).cloned().collect();
        let mut rows = store
            .company_link_page_with(table, column, after, limit, &next)
            .await?;
        for row in &mut rows {
            if let Some(id) = self.ids.get(&row.key) {
                row.hs_object_id = id.clone().unwrap_or_else(|| HsObjectId(String::new()));
                self.keys.pop_front();
            }
        }
        Ok(rows)
    }
}

/// `pairs` (a row's key and the HubSpot contact it is, or would be, linked to) as association
/// rows with nothing agreed yet, their company column read from the table; keys without a row
/// are left out.
async fn rows_not_agreed(
    store: &Store,
    mapped: &Mapped,
    company: &MappedCompany,
    pairs: &[(String, HsObjectId)],
) -> Result<Vec<CompanyLinkRow>, RunError> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let mut table = mapped.table.clone();
    table.columns = vec![company.column.clone()];
    let keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    let values: HashMap<String, Option<String>> = store
        .local_records(&table, &keys)
        .await?
        .into_iter()
        .map(|r| (r.key, r.values.into_iter().next().flatten()))
        .collect();
    Ok(pairs
        .iter()
        .filter_map(|(key, contact)| {
            Some(CompanyLinkRow {
                key: key.clone(),
                hs_object_id: contact.clone(),
                company_key: values.get(key)?.clone(),
                synced: None,
            })
        })
        .collect())
}

/// Links the companies a page's rows name that have no HubSpot company yet, before their
/// associations need one, as the built-in contacts push links the companies its contacts name
/// (docs/associations.md): crm-sync's own companies exactly as a company push page does, or
/// the rows of a companies table of the user's own exactly as its push does. Their links
/// commit on their own, outside the job's counts; a dry run makes the same reads and writes
/// nothing.
struct CompanyLinker<'a> {
    ctx: &'a SyncContext,
    mode: PushMode,
    dry_run: bool,
    resolver: &'a CompanyResolver,
    /// The companies table of the user's own, ready for its push (its properties checked).
    companies: Option<Mapped>,
    /// A dry run's memory of the companies earlier pages would have linked: the real run
    /// finds them linked and makes no call for them again.
    dry_linked: HashMap<String, CompanyId>,
    /// The same, by HubSpot company (a company it would create left out): the real run's
    /// database refuses them to another row.
    dry_holders: HashMap<HsObjectId, String>,
    /// A dry run's calls of linking companies not yet in the job's plan.
    dry_calls: LinkingCalls,
}

impl<'a> CompanyLinker<'a> {
    async fn new(
        ctx: &'a SyncContext,
        store: &Store,
        company: &'a MappedCompany,
        mode: PushMode,
        dry_run: bool,
    ) -> Result<Self, RunError> {
        let companies = match (&company.resolver, user_mapping(ctx, SyncObject::Companies)) {
            (CompanyResolver::Mapped { .. }, Some(checked)) => {
                Some(Mapped::prepare(ctx, store, checked, dry_run).await?)
            }
            _ => None,
        };
        let mut dry_calls = LinkingCalls::default();
        if dry_run && let Some(companies) = &companies {
            // The real run checks the companies table's properties once, here.
            dry_calls.calls.merge(companies.property_plan.clone());
        }
        Ok(Self {
            ctx,
            mode,
            dry_run,
            resolver: &company.resolver,
            companies,
            dry_linked: HashMap::new(),
            dry_holders: HashMap::new(),
            dry_calls,
        })
    }

    /// A dry run's linking calls since the last time they were taken.
    fn take_calls(&mut self) -> Plan {
        std::mem::take(&mut self.dry_calls.calls)
    }

    /// Links the unlinked companies among `resolved` and answers for them again: linked, or
    /// why not (a dry run answers an empty id for a company it would create).
    async fn link(
        &mut self,
        store: &Store,
        resolved: &mut HashMap<String, Resolved>,
    ) -> Result<(), RunError> {
        let mut keys: Vec<String> = resolved
            .iter()
            .filter(|(_, r)| matches!(r, Resolved::Unlinked(_)))
            .map(|(k, _)| k.clone())
            .collect();
        keys.retain(|k| match self.dry_linked.get(k) {
            Some(id) => {
                resolved.insert(k.clone(), Resolved::Linked(id.clone()));
                false
            }
            None => true,
        });
        if keys.is_empty() {
            return Ok(());
        }
        let dry = self.dry_run.then_some(&mut self.dry_calls);
        let answers: HashMap<String, Result<CompanyId, String>> = match self.resolver {
            CompanyResolver::BuiltIn => {
                let ids: Vec<i64> = keys.iter().filter_map(|k| k.trim().parse().ok()).collect();
                let candidates = store.unlinked_companies_by_ids(&ids).await?;
                let by_id =
                    resolve_for_associations(&self.ctx.hubspot, store, self.mode, &candidates, dry)
                        .await?;
                keys.iter()
                    .filter_map(|k| {
                        let id = LocalCompanyId(k.trim().parse().ok()?);
                        Some((k.clone(), by_id.get(&id)?.clone()))
                    })
                    .collect()
            }
            CompanyResolver::Mapped { .. } => match &self.companies {
                Some(companies) => super::push::link_rows(
                    self.ctx,
                    companies,
                    self.mode,
                    dry.map(|d| super::push::DryLinking {
                        calls: &mut d.calls,
                        earlier: &self.dry_holders,
                    }),
                    store,
                    &keys,
                )
                .await?
                .into_iter()
                .map(|(k, answer)| (k, answer.map(|id| CompanyId(id.0))))
                .collect(),
                None => HashMap::new(),
            },
        };
        for (key, answer) in answers {
            let now = match answer {
                Ok(id) => {
                    if self.dry_run {
                        self.dry_linked.insert(key.clone(), id.clone());
                        if !id.0.is_empty() {
                            self.dry_holders
                                .insert(HsObjectId(id.0.clone()), key.clone());
                        }
                    }
                    Resolved::Linked(id)
                }
                Err(reason) => {
                    Resolved::Unlinked(format!("its company could not be linked: {reason}"))
                }
            };
            resolved.insert(key, now);
        }
        Ok(())
    }
}

/// One page of candidates of the association push.
struct PushPage<'a> {
    client: &'a HubSpotClient,
    mapped: &'a Mapped,
    company: &'a MappedCompany,
    dry_run: bool,
    progress: &'a Progress,
}

impl PushPage<'_> {
    /// Resolves the companies of `rows` (linking those not linked yet) and runs the page of
    /// those whose company changed; a page without any costs nothing more.
    async fn plan_and_run(
        &self,
        linker: &mut CompanyLinker<'_>,
        rows: Vec<CompanyLinkRow>,
        counts: PushCounts,
        checkpoint: Value,
    ) -> Result<PushCounts, RunError> {
        let store = self.progress.store();
        let mut resolved = self
            .company
            .resolver
            .to_hubspot(store, &company_keys(&rows))
            .await?;
        linker.link(store, &mut resolved).await?;
        let linking = linker.take_calls();
        let candidates: Vec<CompanyLinkRow> = rows
            .into_iter()
            .filter(|r| changed_locally(r, &resolved))
            .collect();

        if candidates.is_empty() {
            if !linking.calls.is_empty() {
                self.commit_calls(counts, checkpoint, linking).await?;
            }
            return Ok(counts);
        }
        self.run(&candidates, &resolved, counts, checkpoint, linking)
            .await
    }

    /// Adds a dry run's `calls` to its plan, the counts unchanged.
    async fn commit_calls(
        &self,
        counts: PushCounts,
        checkpoint: Value,
        calls: Plan,
    ) -> Result<(), RunError> {
        let tx = self.progress.begin().await?;
        let page = Page {
            counts: Counts::Push(counts),
            checkpoint,
            errors: Vec::new(),
        };
        self.progress.commit_planned(tx, page, Some(calls)).await
    }

    async fn run(
        &self,
        rows: &[CompanyLinkRow],
        resolved: &HashMap<String, Resolved>,
        mut counts: PushCounts,
        checkpoint: Value,
        linking: Plan,
    ) -> Result<PushCounts, RunError> {
        let ids: Vec<HsObjectId> = rows.iter().map(|r| r.hs_object_id.clone()).collect();
        // A dry run's contact it would create has no id, and no associations yet.
        let readable: Vec<HsObjectId> = ids.iter().filter(|i| !i.0.is_empty()).cloned().collect();
        let read = if readable.is_empty() {
            ContactCompanies::default()
        } else {
            read_companies(self.client, &readable).await?
        };
        let current = read.found;
        let plans: Vec<PushPlan> = rows
            .iter()
            .map(|row| {
                let records = current.get(&row.hs_object_id.0);
                let wanted = wanted(row, resolved);
                // HubSpot owns the association and changed it too: pull takes HubSpot's.
                if self.company.hubspot_owns()
                    && !matches!(wanted, Wanted::Unlinked(_))
                    && primary_of(records) != row.synced
                {
                    return PushPlan::Nothing;
                }
                crate::sync::associations::plan_pair(wanted, row.synced.as_ref(), records)
            })
            .collect();
        // The companies this page linked first, then its own calls.
        let mut plan = linking;
        // The real page reads every row, created ones too (they add no further page).
        plan.call("association_read", read.calls.max(1));
        let refused = if self.dry_run {
            plan.call("association_create", u64::from(plans.iter().any(writes)));
            plan.call("association_archive", u64::from(plans.iter().any(archives)));
            HashMap::new()
        } else {
            let refused = write_pairs(self.client, &ids, &plans).await?;
            archive_pairs(self.client, &ids, &plans).await?;
            refused
        };
        let mut agreed = Vec::new();
        let mut errors = Vec::new();
        for (i, (row, plan)) in rows.iter().zip(&plans).enumerate() {
            let reason = match plan {
                PushPlan::Failed(reason) => Some(reason.clone()),
                _ => refused.get(&i).cloned(),
            };
            if let Some(reason) = reason {
                counts.associations_failed += 1;
                errors.push(record_error(self.mapped, row, reason));
                continue;
            }
            match plan {
                PushPlan::Write {
                    company, remove, ..
                } => {
                    counts.associations_created += 1;
                    counts.associations_removed += u64::from(remove.is_some());
                    agreed.push((row.key.clone(), Some(company.clone())));
                }
                PushPlan::Remove(_) => {
                    counts.associations_removed += 1;
                    agreed.push((row.key.clone(), None));
                }
                PushPlan::Failed(_) | PushPlan::Nothing => {}
            }
        }
        let mut tx = self.progress.begin().await?;
        let page = Page {
            counts: Counts::Push(counts),
            checkpoint,
            errors,
        };
        if self.dry_run {
            self.progress.commit_planned(tx, page, Some(plan)).await?;
        } else {
            tx.save_link_companies(self.mapped.table.object, &agreed)
                .await?;
            self.progress.commit(tx, page).await?;
        }
        Ok(counts)
    }
}

/// HubSpot's associations of some rows' contacts and what their application needs, read
/// before the transaction that applies them ([`apply`]).
#[derive(Debug, Default)]
pub(crate) struct ReadCompanies {
    /// The rows as read before the transaction.
    rows: Vec<CompanyLinkRow>,
    /// What each local company key of the rows resolves to.
    resolved: HashMap<String, Resolved>,
    /// The companies of each contact with the types between them.
    current: HashMap<String, Vec<AssociatedRecord>>,
    /// The contacts HubSpot reports not found: nothing is applied to them.
    missing: HashSet<String>,
    /// The HubSpot companies to set that no local company held, read for adoption.
    unknown: Adoptable,
    /// This database's external keys, when anything was read (adoption needs them).
    keys: Option<ExternalKeys>,
    /// The association reads made.
    calls: u64,
    /// The contacts whose companies took more than one of HubSpot's pages, with how many more.
    further_pages: HashMap<String, u64>,
}

impl ReadCompanies {
    /// The association reads made (a dry run counts them as the real run's).
    pub(crate) fn calls(&self) -> u64 {
        self.calls
    }

    /// The company reads made to adopt companies, as a run holding the companies `adopted`
    /// makes them ([`Adoptable::calls_beyond`]; a dry run counts them as the real run's).
    pub(crate) fn company_calls_beyond(&self, adopted: &HashSet<CompanyId>) -> LookUpCalls {
        self.unknown.calls_beyond(adopted)
    }

    /// The companies the page adopts.
    pub(crate) fn adopted(&self) -> impl Iterator<Item = &CompanyId> {
        self.unknown.adopted()
    }

    /// What was read of the companies to set that no local company held.
    pub(crate) fn adoption(&self) -> &Adoptable {
        &self.unknown
    }

    /// The HubSpot company each row (by key) would have set as its local company.
    pub(crate) fn sets<'r>(
        &'r self,
        company: &'r MappedCompany,
    ) -> impl Iterator<Item = (&'r str, CompanyId)> {
        self.rows
            .iter()
            .filter(|r| !self.missing.contains(&r.hs_object_id.0))
            .filter_map(move |r| match decide(company, self, r) {
                PullPlan::Set(id) => Some((r.key.as_str(), id)),
                _ => None,
            })
    }

    /// The rows read, each with how many more of HubSpot's pages its contact's companies took
    /// than the first.
    pub(crate) fn further_pages(&self) -> impl Iterator<Item = (&str, u64)> {
        self.rows.iter().map(|r| {
            let more = self.further_pages.get(&r.hs_object_id.0).copied();
            (r.key.as_str(), more.unwrap_or(0))
        })
    }
}

/// The rows a page will link (`linked_by_the_page`: key and the contact it links) as
/// association rows with nothing agreed yet, as they stand once the page's transaction linked
/// them (its re-read then finds them so); those among `known` are left out.
async fn new_rows(
    store: &Store,
    mapped: &Mapped,
    company: &MappedCompany,
    linked_by_the_page: &[(String, HsObjectId)],
    known: &[CompanyLinkRow],
) -> Result<Vec<CompanyLinkRow>, RunError> {
    let fresh: Vec<(String, HsObjectId)> = linked_by_the_page
        .iter()
        .filter(|(key, _)| !known.iter().any(|r| r.key == *key))
        .cloned()
        .collect();
    rows_not_agreed(store, mapped, company, &fresh).await
}

/// Reads, before a page's transaction, HubSpot's primary companies of `rows`' contacts (one
/// call per 1,000, on the associations budget) and what applying them needs.
async fn read(
    client: &HubSpotClient,
    keys: &ExternalKeys,
    store: &Store,
    company: &MappedCompany,
    rows: Vec<CompanyLinkRow>,
) -> Result<ReadCompanies, RunError> {
    if rows.is_empty() {
        return Ok(ReadCompanies::default());
    }
    let ids: Vec<HsObjectId> = rows.iter().map(|r| r.hs_object_id.clone()).collect();
    let companies = read_companies(client, &ids).await?;
    let resolved = company
        .resolver
        .to_hubspot(store, &company_keys(&rows))
        .await?;
    let mut read = ReadCompanies {
        rows,
        resolved,
        current: companies.found,
        missing: companies.missing,
        unknown: Adoptable::default(),
        keys: Some(keys.clone()),
        calls: companies.calls,
        further_pages: companies.further_pages,
    };
    let to_set = to_set(company, &read);
    read.unknown = company
        .resolver
        .read_unknown(client, keys, store, &to_set)
        .await?;
    Ok(read)
}

/// Who wins for one row, by the built-in table's rules and the association's owner.
fn decide(company: &MappedCompany, read: &ReadCompanies, row: &CompanyLinkRow) -> PullPlan {
    let primary = primary_of(read.current.get(&row.hs_object_id.0));
    let wanted = wanted(row, &read.resolved);
    // The HubSpot id of the local company; `None`: a company with no HubSpot id.
    let local = match &wanted {
        Wanted::Nothing => Some(None),
        Wanted::Company(id) => Some(Some(id)),
        Wanted::Unlinked(_) => None,
    };
    pull_decision(local, row.synced.as_ref(), primary, company.hubspot_owns())
}

/// The HubSpot companies the rows' plans set, sorted, once each.
fn to_set(company: &MappedCompany, read: &ReadCompanies) -> Vec<CompanyId> {
    let mut ids: Vec<CompanyId> = read.sets(company).map(|(_, id)| id).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Applies `read` in `tx`: re-reads the rows (one changed locally meanwhile is left as it is,
/// for push), writes the company column of those HubSpot changed (one `UPDATE` of that column)
/// and the agreed companies; counts into `counts` and returns the failed associations. No
/// HubSpot call.
async fn apply(
    mapped: &Mapped,
    company: &MappedCompany,
    keys: &ExternalKeys,
    tx: &mut Tx,
    read: &ReadCompanies,
    counts: &mut PullCounts,
) -> Result<Vec<RecordError>, RunError> {
    if read.rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<HsObjectId> = read.rows.iter().map(|r| r.hs_object_id.clone()).collect();
    let now: HashMap<String, CompanyLinkRow> = tx
        .company_link_rows(&mapped.table, &company.column, &ids)
        .await?
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    let to_set = to_set(company, read);
    let locals = company
        .resolver
        .to_local(keys, tx, &to_set, &read.unknown)
        .await?;
    let mut column = Vec::new();
    let mut agreed = Vec::new();
    let mut errors = Vec::new();
    for row in &read.rows {
        if read.missing.contains(&row.hs_object_id.0) || now.get(&row.key) != Some(row) {
            continue;
        }
        match decide(company, read, row) {
            PullPlan::Keep => {}
            PullPlan::Record(state) => agreed.push((row.key.clone(), state)),
            PullPlan::Clear => {
                counts.associations_removed += 1;
                column.push((row.key.clone(), None));
                agreed.push((row.key.clone(), None));
            }
            PullPlan::Set(id) => match locals.get(&id).cloned().map(|l| fits(company, l)) {
                Some(Ok(local)) => {
                    counts.associations_created += 1;
                    column.push((row.key.clone(), Some(local)));
                    agreed.push((row.key.clone(), Some(id)));
                }
                Some(Err(reason)) => {
                    counts.associations_failed += 1;
                    errors.push(record_error(
                        mapped,
                        row,
                        format!(
                            "its primary HubSpot company {id} has no local company: {reason}; \
                             {} is left as it is",
                            company.column
                        ),
                    ));
                }
                None => {}
            },
        }
    }
    tx.update_local_column(&mapped.table, &company.column, company.kind, &column)
        .await?;
    tx.save_link_companies(mapped.table.object, &agreed).await?;
    Ok(errors)
}

/// A local key the company column can hold, or why not.
fn fits(company: &MappedCompany, local: Result<String, String>) -> Result<String, String> {
    let local = local?;
    match company.kind {
        KeyKind::Integer if local.parse::<i64>().is_err() => Err(format!(
            "its local key {local:?} is not a whole number, which column {} holds",
            company.column
        )),
        _ => Ok(local),
    }
}

/// Whether pulls write `mapped`'s company column.
pub(crate) fn pulls_companies(mapped: &Mapped) -> bool {
    pulled(mapped).is_some()
}

/// The mapping's company association when pull writes it.
pub(crate) fn pulled(mapped: &Mapped) -> Option<&MappedCompany> {
    mapped
        .company
        .as_ref()
        .filter(|c| c.flow.direction().writes_locally())
}

/// Reads, before a pull page's transaction, the primary companies of the page's `contacts`
/// that are linked rows (one call per 1,000 on the associations budget; none when none is,
/// or when the mapping does not pull companies): an incremental or webhook pull's page. Rows
/// the page itself links are not read; the next full pull reads them.
pub(crate) async fn read_page(
    client: &HubSpotClient,
    mapped: &Mapped,
    store: &Store,
    contacts: &[HsObjectId],
    linked_by_the_page: &[(String, HsObjectId)],
) -> Result<ReadCompanies, RunError> {
    let Some(company) = pulled(mapped) else {
        return Ok(ReadCompanies::default());
    };
    let mut rows = store
        .company_link_rows_now(&mapped.table, &company.column, contacts)
        .await?;
    rows.extend(new_rows(store, mapped, company, linked_by_the_page, &rows).await?);
    if rows.is_empty() {
        return Ok(ReadCompanies::default());
    }
    let keys = ExternalKeys::new(&store.installation().await?);
    read(client, &keys, store, company, rows).await
}

/// Applies what [`read_page`] read, in the page's transaction `tx` (no HubSpot call); returns
/// the failed associations.
pub(crate) async fn apply_page(
    mapped: &Mapped,
    tx: &mut Tx,
    read: &ReadCompanies,
    counts: &mut PullCounts,
) -> Result<Vec<RecordError>, RunError> {
    match (pulled(mapped), &read.keys) {
        (Some(company), Some(keys)) => apply(mapped, company, keys, tx, read, counts).await,
        _ => Ok(Vec::new()),
    }
}

/// One batch of a webhook pull's association reads for `mapped`: the contacts
/// `contact.associationChange` webhooks named (`taken`, claimed by the drain,
/// [`crate::sync::webhook_pull`]), the linked rows' companies applied and the batch cleared in
/// one transaction (one association read per 1,000; none when the mapping does not pull
/// companies, whose batch is cleared unread, as the built-in table's unlinked contacts are).
pub(crate) async fn webhook_batch(
    client: &HubSpotClient,
    mapped: &Mapped,
    progress: &Progress,
    taken: &[PendingPull],
    mut counts: PullCounts,
) -> Result<PullCounts, RunError> {
    let ids: Vec<HsObjectId> = taken.iter().map(|p| p.hs_object_id.clone()).collect();
    let read = read_page(client, mapped, progress.store(), &ids, &[]).await?;
    let mut tx = progress.begin().await?;
    let errors = apply_page(mapped, &mut tx, &read, &mut counts).await?;
    tx.clear_read(PendingObject::ContactAssociations, taken)
        .await?;
    progress
        .commit(
            tx,
            Page {
                counts: Counts::Pull(counts),
                checkpoint: Value::Null,
                errors,
            },
        )
        .await?;
    Ok(counts)
}

/// The association phase of a full pull of `mapped`: every linked row's primary company,
/// 1,000 rows a page (one association read each, and one per further page of a row's
/// companies), each page committed with its checkpoint. A dry full pull has none: it reads the
/// companies with its pages.
pub(crate) async fn pull(
    client: &HubSpotClient,
    mapped: &Mapped,
    progress: &Progress,
    mut counts: PullCounts,
) -> Result<PullCounts, RunError> {
    let Some(company) = pulled(mapped) else {
        return Ok(counts);
    };
    let keys = ExternalKeys::new(&progress.store().installation().await?);
    let base = progress.checkpoint();
    let mut after = resume_after(progress);
    loop {
        if progress.should_stop() {
            return Err(RunError::Interrupted);
        }
        let rows = progress
            .store()
            .company_link_page(
                &mapped.table,
                &company.column,
                after.as_deref(),
                MAX_ASSOCIATION_READ as u32,
            )
            .await?;
        let Some(last) = rows.last().map(|r| r.key.clone()) else {
            return Ok(counts);
        };
        let full = rows.len() == MAX_ASSOCIATION_READ;
        let read = read(client, &keys, progress.store(), company, rows).await?;
        let mut tx = progress.begin().await?;
        let errors = apply(mapped, company, &keys, &mut tx, &read, &mut counts).await?;
        let page = Page {
            counts: Counts::Pull(counts),
            checkpoint: with_after(&base, &last),
            errors,
        };
        progress.commit(tx, page).await?;
        after = Some(last);
        if !full {
            return Ok(counts);
        }
    }
}
