//! One page of candidates against HubSpot: what becomes of each contact.
//!
//! - Linked contacts changed locally are updated by HubSpot id. One that HubSpot no longer
//!   has (not found, or archived on re-read) is gone: it is never created again (INTERFACE
//!   §4.4), counts as `skipped`, and its row is tombstoned when the page commits, as the
//!   `contact.deletion` webhook does. A merged-away contact follows its survivor.
//! - Link mode: contacts found by email are linked; the rest are created with their external
//!   key. While no existing contact has turned up in this job, pages create at once (HubSpot's
//!   unique email and external key refuse a contact that exists, nothing is applied, and the
//!   refused batch is then matched by batch read); once existing contacts turn up, the next
//!   pages read by email first, so that a page of mostly known contacts costs two calls, not
//!   four.
//! - Upsert mode: one batch upsert by email, and one by external key for contacts without one.
//! - A whole batch refused (HubSpot's 409 names only the first clash, a 400 names nothing) is
//!   re-read to link what exists, then split in halves until each refusal concerns one contact.
//! - A conflict is never a failure by itself, whether HubSpot refuses the whole batch or reports
//!   it per input in a 207: a clash on the external key is an earlier attempt's create, a clash
//!   on the email is the contact HubSpot already has. The record is found again (by key, by
//!   email, or by the id the conflict names when it holds the contact's key or email), linked,
//!   and in upsert mode overwritten with the local values. Only a conflict whose record cannot
//!   be found again fails, with HubSpot's reason.
//! - Silence is not deletion: a linked contact HubSpot leaves out of its update answer without
//!   an error is read again on its own before anything is decided (see
//!   `settle_omitted_update`).
//! - A create whose answer was lost is re-read by external key: what exists was created by it,
//!   the rest is created again. HubSpot refuses a second contact with the same external key,
//!   so no path can create a duplicate.
//! - Keys are this installation's (`<installation>:<local id>`, [`crate::sync::keys`]): a record
//!   holding another installation's key is never found by key, only by email like any other.
//!   Unlinked contacts of rows old enough to have been pushed with a bare key by an earlier
//!   version are first looked for by that key (`link_legacy`).

use super::errors::from_hubspot;
use super::external_key;
use super::outcome::{
    EXTERNAL_KEY, Resolution, holds_local_values, read_properties, record_emails,
    update_properties, write_properties,
};
use crate::hubspot::{
    Batch, BatchOutcome, Contact, ContactCreate, ContactUpdate, ContactUpsert, HubSpotClient,
    HubSpotError, UpsertedContact,
};
use crate::ids::HsObjectId;
use crate::jobs::model::{Plan, PlannedAction, PlannedKind, PushMode};
use crate::jobs::{RunError, RunFailure};
use crate::store::TombstoneReason;
use crate::store::push::PushCandidate;
use crate::sync::keys::ExternalKeys;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::OnceCell;

/// Pages that read by email before creating, after a page met contacts that already exist.
const READ_FIRST_PAGES: u32 = 16;

/// What every page of one run shares.
pub(super) struct RunContext {
    /// The HubSpot client.
    pub client: HubSpotClient,
    /// The job's mode.
    pub mode: PushMode,
    /// Lost create answers in a row after which the page gives up (transient: the job retries).
    pub max_lost_answers: u32,
    /// This database's external keys.
    pub keys: ExternalKeys,
    /// Set once the external key property is known to exist (checked lazily, once per run).
    key_ready: OnceCell<()>,
    /// A dry run: nothing is written, the external key property included.
    pub dry_run: bool,
    /// Dry run: whether the external key property exists (read once, never created).
    key_present: OnceCell<bool>,
    /// Dry run: whether the property calls were already put in the plan.
    key_calls_planned: std::sync::atomic::AtomicBool,
    /// Link mode: how many more pages read by email before creating.
    read_first_pages: AtomicU32,
}

impl RunContext {
    /// A context for one run.
    pub(super) fn new(
        client: HubSpotClient,
        mode: PushMode,
        max_lost_answers: u32,
        keys: ExternalKeys,
        dry_run: bool,
    ) -> Self {
        Self {
            client,
            mode,
            max_lost_answers,
            keys,
            key_ready: OnceCell::new(),
            dry_run,
            key_present: OnceCell::new(),
            key_calls_planned: std::sync::atomic::AtomicBool::new(false),
            read_first_pages: AtomicU32::new(0),
        }
    }

    /// Dry run: whether the external key property exists (never creates it).
    async fn key_present(&self) -> Result<bool, RunError> {
        self.key_present
            .get_or_try_init(|| external_key::exists(&self.client))
            .await
            .copied()
    }

    /// Dry run: an earlier run of the job planned the property calls.
    pub(super) fn key_calls_planned_earlier(&self) {
        self.key_calls_planned.store(true, Ordering::Relaxed);
    }

    /// Dry run: the property calls the real run makes before its first write, once per job.
    async fn plan_key_calls(&self, plan: &mut Plan) -> Result<(), RunError> {
        if self.key_calls_planned.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        plan.call("property_read", 1);
        if !self.key_present().await? {
            plan.call("property_create", 1);
        }
        Ok(())
    }

    async fn ensure_key(&self) -> Result<(), RunError> {
        self.key_ready
            .get_or_try_init(|| external_key::ensure(&self.client))
            .await
            .map(|_| ())
    }

    /// Whether this page should read by email before creating (and counts the page).
    fn take_read_first(&self) -> bool {
        self.read_first_pages
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Existing contacts turned up: read before creating for a while.
    fn saw_existing(&self) {
        self.read_first_pages
            .fetch_max(READ_FIRST_PAGES, Ordering::Relaxed);
    }
}

/// A page with the resolution of each of its contacts, in the same order.
#[derive(Debug)]
pub(super) struct ResolvedPage {
    /// The candidates as read.
    pub contacts: Vec<PushCandidate>,
    /// What became of each.
    pub resolutions: Vec<Resolution>,
}

/// How a HubSpot record was matched to a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Email,
    Key,
}

/// Resolves one page (see the module docs).
pub(super) async fn resolve_page(
    ctx: &RunContext,
    contacts: Vec<PushCandidate>,
) -> Result<ResolvedPage, RunError> {
    let mut page = PageWork {
        ctx,
        out: vec![None; contacts.len()],
        contacts,
    };
    let (linked, unlinked): (Vec<usize>, Vec<usize>) =
        (0..page.contacts.len()).partition(|&i| page.contacts[i].hs_object_id.is_some());
    page.update_linked(linked).await?;
    page.link_legacy(&unlinked).await?;
    let unlinked = page.unresolved(&unlinked);
    match ctx.mode {
        PushMode::Link => page.link_or_create(unlinked).await?,
        PushMode::Upsert => page.upsert(unlinked).await?,
    }
    let resolutions = page
        .out
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| Resolution::Failed {
                id: None,
                reason: "HubSpot did not say what became of this contact".to_owned(),
            })
        })
        .collect();
    Ok(ResolvedPage {
        contacts: page.contacts,
        resolutions,
    })
}

/// One page being resolved: contacts are referred to by their index in `contacts`.
struct PageWork<'a> {
    ctx: &'a RunContext,
    contacts: Vec<PushCandidate>,
    out: Vec<Option<Resolution>>,
}

/// Why a linked record re-read on its own is gone, if it is: archived under its own id, or
/// merged into a survivor that is itself archived (nothing left to link to).
fn gone_on_reread(id: &HsObjectId, record: &Contact) -> Option<TombstoneReason> {
    match (record.archived, record.id == *id) {
        (false, _) => None,
        (true, true) => Some(TombstoneReason::Archived),
        (true, false) => Some(TombstoneReason::MergedAwayWithoutSurvivor),
    }
}

/// A whole batch refused for its content (409 or 400): split it to find the culprits.
fn is_batch_refusal(error: &HubSpotError) -> bool {
    matches!(
        error,
        HubSpotError::Conflict { .. } | HubSpotError::Validation { .. }
    )
}

fn batch<T>(items: Vec<T>) -> Result<Batch<T>, RunError> {
    Batch::new(items).map_err(|e| RunError::Fatal(RunFailure::caused_by("push page too large", e)))
}

fn halves(mut set: Vec<usize>) -> [Vec<usize>; 2] {
    let second = set.split_off(set.len() / 2);
    [set, second]
}

impl PageWork<'_> {
    fn unresolved(&self, set: &[usize]) -> Vec<usize> {
        set.iter()
            .copied()
            .filter(|&i| self.out[i].is_none())
            .collect()
    }

    fn resolve(&mut self, i: usize, resolution: Resolution) {
        self.out[i] = Some(resolution);
    }

    fn link(&mut self, i: usize, record: &Contact, matched: Match) {
        let contact = &self.contacts[i];
        // A contact matched by email that was never linked is someone else's record: link mode
        // leaves its properties alone, so the contact counts as pushed. A match by external key
        // (a contact an earlier attempt created), or a re-link after HubSpot lost the linked
        // record, counts as pushed only if HubSpot holds the local values.
        let in_sync = (matched == Match::Email && contact.hs_object_id.is_none())
            || holds_local_values(contact, record);
        self.resolve(
            i,
            Resolution::Linked {
                id: record.id.clone(),
                in_sync,
            },
        );
    }

    /// Updates linked contacts by HubSpot id. Those HubSpot no longer has are gone: never
    /// created again (INTERFACE §4.4), their rows are tombstoned when the page commits.
    async fn update_linked(&mut self, linked: Vec<usize>) -> Result<(), RunError> {
        let mut omitted = Vec::new();
        let mut work = vec![linked];
        while let Some(set) = work.pop() {
            if set.is_empty() {
                continue;
            }
            let inputs = set
                .iter()
                .map(|&i| {
                    let c = &self.contacts[i];
                    ContactUpdate {
                        id: c
                            .hs_object_id
                            .as_ref()
                            .map(|h| h.0.clone())
                            .unwrap_or_default(),
                        id_property: None,
                        properties: update_properties(c),
                    }
                })
                .collect();
            match self.ctx.client.batch_update(&batch(inputs)?).await {
                Ok(outcome) => {
                    let results = assign(&outcome, &set, |i, r: &Contact| {
                        self.contacts[i].hs_object_id.as_ref() == Some(&r.id)
                    });
                    for (pos, &i) in set.iter().enumerate() {
                        match (results[pos], outcome.error_for(pos)) {
                            (Some(record), _) => {
                                self.resolve(i, Resolution::Updated(record.id.clone()))
                            }
                            (None, Some(HubSpotError::NotFound { .. })) => {
                                self.resolve(i, Resolution::Gone(TombstoneReason::Deleted))
                            }
                            (None, Some(error)) => self.resolve(i, Resolution::refused(error)),
                            (None, None) => omitted.push(i),
                        }
                    }
                }
                Err(e) if is_batch_refusal(&e) => self.split_or_fail(set, &e, &mut work),
                Err(e) => return Err(from_hubspot(e)),
            }
        }
        for i in omitted {
            self.settle_omitted_update(i).await?;
        }
        Ok(())
    }

    /// A linked contact HubSpot left out of its update answer without saying why. Silence is
    /// not deletion (HubSpot leaves merged-away ids out, too): the record is read again on its
    /// own. Gone (404, or archived) → tombstoned, never created again. Merged into another
    /// record (the read answers with the survivor) → re-linked to the survivor without writing
    /// to it, so that a survivor another local row holds is refused by the database before
    /// anything is overwritten; the next push updates it. A survivor that is itself archived
    /// cannot take the contact: `merged_away_without_survivor`. Still there → updated on its own.
    async fn settle_omitted_update(&mut self, i: usize) -> Result<(), RunError> {
        let Some(id) = self.contacts[i].hs_object_id.clone() else {
            return Ok(());
        };
        let record = match self
            .ctx
            .client
            .get_contact(&id.0, None, &read_properties())
            .await
        {
            Ok(record) => record,
            Err(HubSpotError::NotFound { .. }) => {
                self.resolve(i, Resolution::Gone(TombstoneReason::Deleted));
                return Ok(());
            }
            Err(e) => return Err(from_hubspot(e)),
        };
        if let Some(reason) = gone_on_reread(&id, &record) {
            self.resolve(i, Resolution::Gone(reason));
            return Ok(());
        }
        if record.id != id {
            let in_sync = holds_local_values(&self.contacts[i], &record);
            self.resolve(
                i,
                Resolution::Linked {
                    id: record.id,
                    in_sync,
                },
            );
            return Ok(());
        }
        let properties = update_properties(&self.contacts[i]);
        match self.ctx.client.update_contact(&id, &properties).await {
            Ok(record) => self.resolve(i, Resolution::Updated(record.id)),
            Err(HubSpotError::NotFound { .. }) => {
                self.resolve(i, Resolution::Gone(TombstoneReason::Deleted))
            }
            Err(e) if is_batch_refusal(&e) => self.resolve(i, Resolution::refused(&e)),
            Err(e) => return Err(from_hubspot(e)),
        }
        Ok(())
    }

    /// A refused batch: halves go back to the work list; a single contact fails with the reason.
    fn split_or_fail(&mut self, set: Vec<usize>, error: &HubSpotError, work: &mut Vec<Vec<usize>>) {
        if let [i] = set[..] {
            self.resolve(i, Resolution::refused(error));
        } else {
            work.extend(halves(set));
        }
    }

    /// Link mode for contacts without a (live) link.
    async fn link_or_create(&mut self, unlinked: Vec<usize>) -> Result<(), RunError> {
        if unlinked.is_empty() {
            return Ok(());
        }
        if self.ctx.take_read_first() {
            let with_email: Vec<usize> = unlinked
                .iter()
                .copied()
                .filter(|&i| self.contacts[i].email.is_some())
                .collect();
            let found = self.read_by_email(&with_email).await?;
            if !found.is_empty() {
                self.ctx.saw_existing();
            }
            for (i, record) in found {
                self.link(i, &record, Match::Email);
            }
        }
        let rest = self.unresolved(&unlinked);
        self.create(rest).await
    }

    /// Creates contacts with their external key (see the module docs for refusals and lost
    /// answers). Work items carry how many answers in a row were lost for them.
    async fn create(&mut self, set: Vec<usize>) -> Result<(), RunError> {
        if set.is_empty() {
            return Ok(());
        }
        self.ctx.ensure_key().await?;
        let mut work: Vec<(Vec<usize>, u32)> = vec![(set, 0)];
        while let Some((set, lost)) = work.pop() {
            if set.is_empty() {
                continue;
            }
            let inputs = set
                .iter()
                .map(|&i| ContactCreate {
                    properties: write_properties(&self.contacts[i], &self.ctx.keys),
                })
                .collect();
            match self.ctx.client.batch_create(&batch(inputs)?).await {
                Ok(outcome) => {
                    let results = assign(&outcome, &set, |i, r: &Contact| {
                        self.ctx
                            .keys
                            .names(r.property(EXTERNAL_KEY), self.contacts[i].id)
                    });
                    let mut unaccounted = Vec::new();
                    let mut conflicts = Vec::new();
                    for (pos, &i) in set.iter().enumerate() {
                        match (results[pos], outcome.error_for(pos)) {
                            (Some(record), _) => {
                                self.resolve(i, Resolution::Created(record.id.clone()))
                            }
                            (None, Some(error @ HubSpotError::Conflict { .. })) => {
                                conflicts.push((i, error.clone()))
                            }
                            (None, Some(error)) => self.resolve(i, Resolution::refused(error)),
                            (None, None) => unaccounted.push(i),
                        }
                    }
                    self.settle_conflicts(conflicts).await?;
                    // An answer that leaves inputs out is as good as lost for them.
                    if !unaccounted.is_empty() {
                        self.after_lost_answer(unaccounted, lost + 1, &mut work)
                            .await?;
                    }
                }
                Err(HubSpotError::Ambiguous { .. }) => {
                    self.after_lost_answer(set, lost + 1, &mut work).await?;
                }
                Err(e @ HubSpotError::Conflict { .. }) if set.len() == 1 => {
                    self.settle_conflicts(vec![(set[0], e)]).await?;
                }
                Err(e @ HubSpotError::Conflict { .. }) => {
                    self.ctx.saw_existing();
                    for (i, record, matched) in self.read_matches(&set).await? {
                        self.link(i, &record, matched);
                    }
                    let rest = self.unresolved(&set);
                    if rest.len() < set.len() {
                        work.push((rest, lost));
                    } else {
                        let mut halves_work = Vec::new();
                        self.split_or_fail(rest, &e, &mut halves_work);
                        work.extend(halves_work.into_iter().map(|h| (h, lost)));
                    }
                }
                Err(e @ HubSpotError::Validation { .. }) => {
                    let mut halves_work = Vec::new();
                    self.split_or_fail(set, &e, &mut halves_work);
                    work.extend(halves_work.into_iter().map(|h| (h, lost)));
                }
                Err(e) => return Err(from_hubspot(e)),
            }
        }
        Ok(())
    }

    /// Inputs HubSpot refused one by one as duplicates (a 207 `CONFLICT`: the email, or the
    /// external key, is already held). Such a record is no failure: a clash on the external key
    /// is an earlier attempt's create, a clash on the email the contact HubSpot already has. Both
    /// are found again (by key, then email, then the id HubSpot names) and linked; in upsert mode
    /// the local values are then written over them. A conflict whose record cannot be found
    /// again fails with HubSpot's reason.
    async fn settle_conflicts(
        &mut self,
        conflicts: Vec<(usize, HubSpotError)>,
    ) -> Result<(), RunError> {
        if conflicts.is_empty() {
            return Ok(());
        }
        self.ctx.saw_existing();
        let set: Vec<usize> = conflicts.iter().map(|(i, _)| *i).collect();
        let mut found = self.read_matches(&set).await?;
        let named = self.read_named(&conflicts, &found).await?;
        found.extend(named);
        let mut stale = Vec::new();
        for (i, record, matched) in &found {
            self.link(*i, record, *matched);
            if self.ctx.mode == PushMode::Upsert && !holds_local_values(&self.contacts[*i], record)
            {
                // Not pushed until the local values are written over it.
                let id = record.id.clone();
                self.resolve(
                    *i,
                    Resolution::Linked {
                        id: id.clone(),
                        in_sync: false,
                    },
                );
                stale.push((*i, id));
            }
        }
        self.overwrite(stale).await?;
        for (i, error) in conflicts {
            if self.out[i].is_none() {
                self.resolve(i, Resolution::refused(&error));
            }
        }
        Ok(())
    }

    /// The records a conflict names (`Existing ID: N`) for inputs not found by key or email,
    /// when they are the contact's own: the same external key or one of its emails. Anything
    /// else is another person's record and is never linked.
    async fn read_named(
        &self,
        conflicts: &[(usize, HubSpotError)],
        found: &[(usize, Contact, Match)],
    ) -> Result<Vec<(usize, Contact, Match)>, RunError> {
        let named: Vec<(usize, HsObjectId)> = conflicts
            .iter()
            .filter(|(i, _)| !found.iter().any(|(f, _, _)| f == i))
            .filter_map(|(i, e)| match e {
                HubSpotError::Conflict {
                    existing_id: Some(id),
                    ..
                } => Some((*i, id.clone())),
                _ => None,
            })
            .collect();
        if named.is_empty() {
            return Ok(Vec::new());
        }
        let ids = named.iter().map(|(_, id)| id.0.clone()).collect();
        let records = self.read(ids, None).await?;
        Ok(named
            .into_iter()
            .filter_map(|(i, id)| {
                let record = records.iter().find(|r| r.id == id)?;
                let contact = &self.contacts[i];
                if self
                    .ctx
                    .keys
                    .names(record.property(EXTERNAL_KEY), contact.id)
                {
                    return Some((i, record.clone(), Match::Key));
                }
                let email = contact.email.as_deref()?.trim().to_lowercase();
                record_emails(record)
                    .any(|e| e == email)
                    .then(|| (i, record.clone(), Match::Email))
            })
            .collect())
    }

    /// Upsert mode: contacts just linked to a record that does not hold their values get them
    /// written over it, as an upsert would have.
    async fn overwrite(&mut self, targets: Vec<(usize, HsObjectId)>) -> Result<(), RunError> {
        if targets.is_empty() {
            return Ok(());
        }
        let inputs = targets
            .iter()
            .map(|(i, id)| ContactUpdate {
                id: id.0.clone(),
                id_property: None,
                properties: write_properties(&self.contacts[*i], &self.ctx.keys),
            })
            .collect();
        match self.ctx.client.batch_update(&batch(inputs)?).await {
            Ok(outcome) => {
                let set: Vec<usize> = targets.iter().map(|(i, _)| *i).collect();
                let results = assign(&outcome, &set, |i, r: &Contact| {
                    targets.iter().any(|(t, id)| *t == i && *id == r.id)
                });
                for (pos, (i, _)) in targets.iter().enumerate() {
                    match (results[pos], outcome.error_for(pos)) {
                        (Some(record), _) => {
                            self.resolve(*i, Resolution::Updated(record.id.clone()))
                        }
                        (None, Some(error)) => self.resolve(*i, Resolution::refused(error)),
                        // Left linked, not pushed: the next push updates it.
                        (None, None) => {}
                    }
                }
                Ok(())
            }
            // Refused whole: the links stay and the next push updates each contact on its own.
            Err(e) if is_batch_refusal(&e) => Ok(()),
            Err(e) => Err(from_hubspot(e)),
        }
    }

    /// After a create whose answer was lost: what exists under the external key was created by
    /// it; the rest goes back to the work list.
    async fn after_lost_answer(
        &mut self,
        set: Vec<usize>,
        lost: u32,
        work: &mut Vec<(Vec<usize>, u32)>,
    ) -> Result<(), RunError> {
        if lost > self.ctx.max_lost_answers {
            return Err(RunError::transient(format!(
                "HubSpot's answers to creating contacts were lost {lost} times in a row; the \
                 job will continue from its checkpoint"
            )));
        }
        for (i, record) in self.read_by_key(&set).await? {
            // Usually the lost create itself. If HubSpot holds other values, the record is an
            // earlier attempt's and the lost call was refused: link it, the next push updates it.
            if holds_local_values(&self.contacts[i], &record) {
                self.resolve(i, Resolution::Created(record.id.clone()));
            } else {
                self.link(i, &record, Match::Key);
            }
        }
        work.push((self.unresolved(&set), lost));
        Ok(())
    }

    /// Existing HubSpot records for contacts of a refused batch: by external key first (a record
    /// an earlier attempt created), then by email.
    async fn read_matches(
        &mut self,
        set: &[usize],
    ) -> Result<Vec<(usize, Contact, Match)>, RunError> {
        let mut found: Vec<(usize, Contact, Match)> = self
            .read_by_key(set)
            .await?
            .into_iter()
            .map(|(i, r)| (i, r, Match::Key))
            .collect();
        let by_key: Vec<usize> = found.iter().map(|(i, _, _)| *i).collect();
        let with_email: Vec<usize> = set
            .iter()
            .copied()
            .filter(|i| !by_key.contains(i) && self.contacts[*i].email.is_some())
            .collect();
        found.extend(
            self.read_by_email(&with_email)
                .await?
                .into_iter()
                .map(|(i, r)| (i, r, Match::Email)),
        );
        Ok(found)
    }

    /// Batch read by email (a secondary email finds its contact too).
    async fn read_by_email(&self, set: &[usize]) -> Result<Vec<(usize, Contact)>, RunError> {
        if set.is_empty() {
            return Ok(Vec::new());
        }
        let emails: Vec<String> = set
            .iter()
            .filter_map(|&i| self.contacts[i].email.clone())
            .collect();
        let records = self.read(emails, Some("email")).await?;
        let mut by_email: HashMap<String, &Contact> = HashMap::new();
        for record in &records {
            for email in record_emails(record) {
                by_email.entry(email).or_insert(record);
            }
        }
        Ok(set
            .iter()
            .filter_map(|&i| {
                let email = self.contacts[i].email.as_deref()?.trim().to_lowercase();
                by_email.get(&email).map(|r| (i, (*r).clone()))
            })
            .collect())
    }

    /// Batch read by external key (this installation's).
    async fn read_by_key(&self, set: &[usize]) -> Result<Vec<(usize, Contact)>, RunError> {
        self.read_keyed(set, |keys, contact| Some(keys.key(contact.id)))
            .await
    }

    /// Batch read by the bare key an earlier version wrote, for the contacts whose rows may
    /// have one ([`ExternalKeys::legacy_key`]).
    async fn read_by_legacy_key(&self, set: &[usize]) -> Result<Vec<(usize, Contact)>, RunError> {
        self.read_keyed(set, |keys, contact| keys.legacy_key(contact.id))
            .await
    }

    /// Batch read by the external key values `key_of` gives (contacts without one are left
    /// out); a record is found for the contact whose value it holds.
    async fn read_keyed(
        &self,
        set: &[usize],
        key_of: impl Fn(&ExternalKeys, &PushCandidate) -> Option<String>,
    ) -> Result<Vec<(usize, Contact)>, RunError> {
        let keyed: Vec<(usize, String)> = set
            .iter()
            .filter_map(|&i| Some((i, key_of(&self.ctx.keys, &self.contacts[i])?)))
            .collect();
        if keyed.is_empty() {
            return Ok(Vec::new());
        }
        if self.ctx.dry_run {
            // A dry run never creates the property; without it, nothing holds a key yet.
            if !self.ctx.key_present().await? {
                return Ok(Vec::new());
            }
        } else {
            self.ctx.ensure_key().await?;
        }
        let values = keyed.iter().map(|(_, key)| key.clone()).collect();
        let records = self.read(values, Some(EXTERNAL_KEY)).await?;
        let by_key: HashMap<&str, &Contact> = records
            .iter()
            .filter_map(|r| Some((r.property(EXTERNAL_KEY)?.trim(), r)))
            .collect();
        Ok(keyed
            .iter()
            .filter_map(|(i, key)| by_key.get(key.as_str()).map(|r| (*i, (*r).clone())))
            .collect())
    }

    /// Unlinked contacts of rows that existed when this database stopped writing bare keys
    /// may have a HubSpot record an earlier version created under the bare local id (its
    /// commit lost, or the database restored from before it). Without this read a contact
    /// without email would be created a second time under its new key. One batch read per
    /// page that has such contacts; a record found is linked as one found by key, and in
    /// upsert mode written over (which also gives it the namespaced key).
    async fn link_legacy(&mut self, unlinked: &[usize]) -> Result<(), RunError> {
        let found = self.read_by_legacy_key(unlinked).await?;
        let mut stale = Vec::new();
        for (i, record) in found {
            self.link(i, &record, Match::Key);
            if self.ctx.mode == PushMode::Upsert {
                stale.push((i, record.id.clone()));
            }
        }
        self.overwrite(stale).await
    }

    /// Batch read by `id_property` (record ids when `None`). A read HubSpot refuses whole (a value it finds malformed)
    /// is split until the refused value is alone, and that one counts as not found: the write
    /// that follows reports the record's own error.
    async fn read(
        &self,
        ids: Vec<String>,
        id_property: Option<&str>,
    ) -> Result<Vec<Contact>, RunError> {
        let mut records = Vec::new();
        let mut work = vec![ids];
        while let Some(ids) = work.pop() {
            if ids.is_empty() {
                continue;
            }
            let ids = batch(ids)?;
            match self
                .ctx
                .client
                .batch_read(&ids, id_property, &read_properties())
                .await
            {
                Ok(outcome) => records.extend(outcome.results),
                Err(HubSpotError::Validation { .. }) if ids.len() == 1 => {}
                Err(HubSpotError::Validation { .. }) => {
                    let mut first = ids.into_inner();
                    let second = first.split_off(first.len() / 2);
                    work.push(first);
                    work.push(second);
                }
                Err(e) => return Err(from_hubspot(e)),
            }
        }
        Ok(records)
    }

    /// Upsert mode for contacts without a (live) link: by email, and by external key for those
    /// without one.
    async fn upsert(&mut self, unlinked: Vec<usize>) -> Result<(), RunError> {
        if unlinked.is_empty() {
            return Ok(());
        }
        self.ctx.ensure_key().await?;
        let (with_email, without): (Vec<usize>, Vec<usize>) = unlinked
            .into_iter()
            .partition(|&i| self.contacts[i].email.is_some());
        self.upsert_by(with_email, UpsertKey::Email).await?;
        self.upsert_by(without, UpsertKey::External).await
    }

    /// One kind of upsert, splitting refused batches. `new: false` counts as `updated`: the
    /// local values were written over HubSpot's.
    async fn upsert_by(&mut self, set: Vec<usize>, key: UpsertKey) -> Result<(), RunError> {
        let mut work = vec![set];
        while let Some(set) = work.pop() {
            if set.is_empty() {
                continue;
            }
            let inputs = set
                .iter()
                .map(|&i| {
                    let c = &self.contacts[i];
                    ContactUpsert {
                        id: key.value(c, &self.ctx.keys),
                        id_property: key.property().to_owned(),
                        properties: write_properties(c, &self.ctx.keys),
                    }
                })
                .collect();
            match self.ctx.client.batch_upsert(&batch(inputs)?).await {
                Ok(outcome) => {
                    let results = assign(&outcome, &set, |i, r: &UpsertedContact| {
                        key.matches(&self.contacts[i], &r.contact, &self.ctx.keys)
                    });
                    let mut conflicts = Vec::new();
                    for (pos, &i) in set.iter().enumerate() {
                        let resolution = match (results[pos], outcome.error_for(pos)) {
                            (Some(r), _) if r.new => Resolution::Created(r.contact.id.clone()),
                            (Some(r), _) => Resolution::Updated(r.contact.id.clone()),
                            (None, Some(error @ HubSpotError::Conflict { .. })) => {
                                conflicts.push((i, error.clone()));
                                continue;
                            }
                            (None, Some(error)) => Resolution::refused(error),
                            (None, None) => Resolution::Failed {
                                id: None,
                                reason: "HubSpot's upsert answer did not mention this contact"
                                    .to_owned(),
                            },
                        };
                        self.resolve(i, resolution);
                    }
                    self.settle_conflicts(conflicts).await?;
                }
                Err(e @ HubSpotError::Conflict { .. }) if set.len() == 1 => {
                    self.settle_conflicts(vec![(set[0], e)]).await?;
                }
                Err(e) if is_batch_refusal(&e) => self.split_or_fail(set, &e, &mut work),
                Err(e) => return Err(from_hubspot(e)),
            }
        }
        Ok(())
    }
}

/// A dry run's page: what would become of each contact, and the HubSpot calls the real run
/// would make for it when no batch is refused.
#[derive(Debug)]
pub(super) struct PlannedPage {
    /// What would be done to each, in the same order.
    pub actions: Vec<PlannedAction>,
    /// Each one's link as it was read, in the same order.
    pub read: Vec<Option<HsObjectId>>,
    /// The page's calls (its planned actions are in `actions`).
    pub calls: Plan,
}

/// Plans one page of a dry run: the same reads the real run makes to decide (by id for
/// linked contacts, by email, by external key when the property exists), and no write. What
/// the real run would learn only from a write is predicted where HubSpot's rule is documented
/// (an invalid email); a record the real run would find by its write alone (one created
/// between this read and that write) cannot be foreseen.
pub(super) async fn plan_page(
    ctx: &RunContext,
    contacts: Vec<PushCandidate>,
) -> Result<PlannedPage, RunError> {
    let page = PageWork {
        ctx,
        out: vec![None; contacts.len()],
        contacts,
    };
    let mut calls = Plan::default();
    let (linked, unlinked): (Vec<usize>, Vec<usize>) =
        (0..page.contacts.len()).partition(|&i| page.contacts[i].hs_object_id.is_some());
    let mut planned: Vec<Option<(PlannedKind, Option<HsObjectId>, String)>> =
        vec![None; page.contacts.len()];
    page.plan_linked(&linked, &mut planned, &mut calls).await?;
    // The same legacy-key read the real run makes first.
    if unlinked
        .iter()
        .any(|&i| ctx.keys.legacy_key(page.contacts[i].id).is_some())
        && (!ctx.dry_run || ctx.key_present().await?)
    {
        calls.call("batch_read", 1);
    }
    for (i, record) in page.read_by_legacy_key(&unlinked).await? {
        planned[i] = Some(match ctx.mode {
            PushMode::Link => (
                PlannedKind::Link,
                Some(record.id),
                "found in HubSpot by the key an earlier version wrote".to_owned(),
            ),
            PushMode::Upsert => {
                calls.call("batch_update", 1);
                (
                    PlannedKind::Update,
                    Some(record.id),
                    "found by the key an earlier version wrote; the local values would be \
                     written over it"
                        .to_owned(),
                )
            }
        });
    }
    let rest: Vec<usize> = unlinked
        .into_iter()
        .filter(|&i| planned[i].is_none())
        .collect();
    page.plan_unlinked(&rest, &mut planned, &mut calls).await?;
    let actions = page
        .contacts
        .iter()
        .zip(planned)
        .map(|(contact, plan)| {
            let (action, id, reason) = plan.unwrap_or((
                PlannedKind::Fail,
                None,
                "no plan was made for this contact".to_owned(),
            ));
            PlannedAction {
                action,
                contact_id: Some(contact.id),
                email: contact.email.clone(),
                hs_object_id: id.or_else(|| contact.hs_object_id.clone()),
                reason,
            }
        })
        .collect();
    let read = page
        .contacts
        .iter()
        .map(|c| c.hs_object_id.clone())
        .collect();
    Ok(PlannedPage {
        actions,
        read,
        calls,
    })
}

/// A plan entry while a page is planned: what, the HubSpot record when known, why.
type Planned = Option<(PlannedKind, Option<HsObjectId>, String)>;

/// HubSpot's documented email rule (one `@`, no quotes or spaces, a dotted domain ending in a
/// delegated letters-only top-level domain): `Some(reason)` when HubSpot would refuse it.
fn invalid_email(email: &str) -> Option<String> {
    const RESERVED: [&str; 6] = [
        "test",
        "invalid",
        "localhost",
        "local",
        "example",
        "internal",
    ];
    let refused = || {
        Some(format!(
            "HubSpot would refuse the email {email:?} as invalid"
        ))
    };
    let Some((local, domain)) = email.rsplit_once('@') else {
        return refused();
    };
    let bad_local = local.is_empty()
        || local.len() > 64
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let bad_domain = labels.len() < 2
        || labels.iter().any(|l| {
            l.is_empty()
                || l.len() > 63
                || l.starts_with('-')
                || l.ends_with('-')
                || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    let bad_tld = labels.last().is_none_or(|tld| {
        tld.len() < 2
            || !tld.chars().all(|c| c.is_ascii_alphabetic())
            || RESERVED.contains(&tld.to_ascii_lowercase().as_str())
    });
    if bad_local || bad_domain || bad_tld {
        refused()
    } else {
        None
    }
}

impl PageWork<'_> {
    /// The email HubSpot would refuse, for a contact whose write would send it.
    fn refused_email(&self, i: usize) -> Option<String> {
        self.contacts[i].email.as_deref().and_then(invalid_email)
    }

    /// Dry run, linked contacts: read by id; alive → would be updated, merged → would be
    /// re-linked to the survivor, gone → left alone (and tombstoned).
    async fn plan_linked(
        &self,
        linked: &[usize],
        planned: &mut [Planned],
        calls: &mut Plan,
    ) -> Result<(), RunError> {
        if linked.is_empty() {
            return Ok(());
        }
        calls.call("batch_update", 1);
        let ids: Vec<HsObjectId> = linked
            .iter()
            .filter_map(|&i| self.contacts[i].hs_object_id.clone())
            .collect();
        let fates = super::super::lookup::look_up(&self.ctx.client, &ids)
            .await
            .map_err(from_hubspot)?;
        for &i in linked {
            let Some(id) = self.contacts[i].hs_object_id.clone() else {
                continue;
            };
            use super::super::lookup::Fate;
            planned[i] = Some(match fates.get(&id) {
                Some(Fate::Live(record)) => match self.refused_email(i) {
                    Some(reason) => (PlannedKind::Fail, Some(record.id.clone()), reason),
                    None => (
                        PlannedKind::Update,
                        Some(record.id.clone()),
                        "changed locally since its last push; HubSpot's values would be \
                         overwritten"
                            .to_owned(),
                    ),
                },
                Some(Fate::MergedInto(survivor)) => (
                    PlannedKind::Link,
                    Some(survivor.id.clone()),
                    format!(
                        "HubSpot merged {id} into {}: it would be linked to it",
                        survivor.id
                    ),
                ),
                Some(Fate::Gone) | None => (
                    PlannedKind::Skip,
                    Some(id.clone()),
                    "HubSpot no longer has the linked contact: it would be marked deleted and \
                     never created again"
                        .to_owned(),
                ),
                Some(Fate::Refused(reason)) => {
                    (PlannedKind::Fail, Some(id.clone()), reason.clone())
                }
            });
        }
        Ok(())
    }

    /// Dry run, contacts without a link: found by email or by this installation's key →
    /// linked (link mode) or overwritten (upsert mode); else created.
    async fn plan_unlinked(
        &self,
        set: &[usize],
        planned: &mut [Planned],
        calls: &mut Plan,
    ) -> Result<(), RunError> {
        if set.is_empty() {
            return Ok(());
        }
        self.ctx.plan_key_calls(calls).await?;
        let with_email: Vec<usize> = set
            .iter()
            .copied()
            .filter(|&i| self.contacts[i].email.is_some())
            .collect();
        let mut found: HashMap<usize, (Contact, Match)> = HashMap::new();
        for (i, record) in self.read_by_key(set).await? {
            found.insert(i, (record, Match::Key));
        }
        let by_email: Vec<usize> = with_email
            .iter()
            .copied()
            .filter(|i| !found.contains_key(i))
            .collect();
        for (i, record) in self.read_by_email(&by_email).await? {
            found.insert(i, (record, Match::Email));
        }
        let (mut creates, mut upserts) = (false, [false, false]);
        let mut existing = false;
        for &i in set {
            let group = usize::from(self.contacts[i].email.is_none());
            planned[i] = Some(match (found.remove(&i), self.ctx.mode) {
                (Some((record, matched)), PushMode::Link) => {
                    existing = true;
                    let how = match matched {
                        Match::Email => "by email",
                        Match::Key => "by its external key (an earlier attempt created it)",
                    };
                    (
                        PlannedKind::Link,
                        Some(record.id),
                        format!("exists in HubSpot, found {how}: it would be linked"),
                    )
                }
                (Some((record, _)), PushMode::Upsert) => match self.refused_email(i) {
                    Some(reason) => (PlannedKind::Fail, Some(record.id), reason),
                    None => {
                        upserts[group] = true;
                        (
                            PlannedKind::Update,
                            Some(record.id),
                            "exists in HubSpot: the upsert would write the local values over it"
                                .to_owned(),
                        )
                    }
                },
                (None, mode) => match self.refused_email(i) {
                    Some(reason) => (PlannedKind::Fail, None, reason),
                    None => {
                        match mode {
                            PushMode::Link => creates = true,
                            PushMode::Upsert => upserts[group] = true,
                        }
                        (
                            PlannedKind::Create,
                            None,
                            "not in HubSpot: it would be created".to_owned(),
                        )
                    }
                },
            });
        }
        calls.call("batch_read", u64::from(existing));
        calls.call("batch_create", u64::from(creates));
        calls.call(
            "batch_upsert",
            upserts.iter().filter(|u| **u).count() as u64,
        );
        Ok(())
    }
}

/// What an upsert finds records by.
#[derive(Debug, Clone, Copy)]
enum UpsertKey {
    Email,
    External,
}

impl UpsertKey {
    fn property(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::External => EXTERNAL_KEY,
        }
    }

    fn value(self, contact: &PushCandidate, keys: &ExternalKeys) -> String {
        match self {
            Self::Email => contact.email.clone().unwrap_or_default(),
            Self::External => keys.key(contact.id),
        }
    }

    fn matches(self, contact: &PushCandidate, record: &Contact, keys: &ExternalKeys) -> bool {
        match self {
            Self::Email => contact
                .email
                .as_deref()
                .is_some_and(|e| record_emails(record).any(|r| r == e.trim().to_lowercase())),
            Self::External => keys.names(record.property(EXTERNAL_KEY), contact.id),
        }
    }
}

/// The result for each input of `set` (by position): by the echoed write trace id, else the
/// first unclaimed record that `belongs` to the input.
fn assign<'o, R>(
    outcome: &'o BatchOutcome<R>,
    set: &[usize],
    belongs: impl Fn(usize, &R) -> bool,
) -> Vec<Option<&'o R>> {
    let mut results: Vec<Option<&R>> = (0..set.len()).map(|pos| outcome.result_for(pos)).collect();
    for unindexed in outcome.results.iter().filter(|r| r.input_index.is_none()) {
        let slot = (0..set.len())
            .find(|&pos| results[pos].is_none() && belongs(set[pos], &unindexed.record));
        if let Some(pos) = slot {
            results[pos] = Some(&unindexed.record);
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hubspot::IndexedResult;

    #[test]
    fn results_map_by_trace_id_then_by_what_they_hold() {
        let outcome = BatchOutcome {
            results: vec![
                IndexedResult {
                    input_index: Some(1),
                    record: "b",
                },
                IndexedResult {
                    input_index: None,
                    record: "c",
                },
            ],
            errors: Vec::new(),
        };
        let names = ["a", "b", "c"];
        let assigned = assign(&outcome, &[0, 1, 2], |i, r: &&str| names[i] == *r);
        assert_eq!(assigned, vec![None, Some(&"b"), Some(&"c")]);
    }

    #[test]
    fn a_refused_batch_splits_in_halves() {
        assert_eq!(halves(vec![1, 2, 3]), [vec![1], vec![2, 3]]);
    }
}
