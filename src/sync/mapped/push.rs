//! Push of a user's table: keyset pages of 100 rows in key order, each joined with its link
//! rows; the hash of a row's mapped push/both values (in HubSpot's format) is compared with the
//! hash last pushed, and only new or changed rows are candidates. A page with candidates is
//! resolved against HubSpot and committed with its links, counts, errors and checkpoint in one
//! transaction; a page without any costs its read and nothing else.
//!
//! Per candidate page: unlinked rows are read by their identity (email, a unique property,
//! or crm-sync's external key for companies; one batch read), then linked (mode `link`:
//! HubSpot's values are left alone; `upsert`: the local values are written, except a field
//! HubSpot owns) or created (one batch create, with the external key); in `link` mode a company
//! no identity found is first looked for by its domain (one search; exactly one live match is
//! linked, several fail the record naming them). Linked rows changed locally are updated (one
//! batch update, plus one batch read when a field HubSpot owns changed locally: it is sent only
//! when HubSpot's value has not changed since the last sync). A killed run's creates are found
//! again by identity by the next run, never made twice.
//!
//! An update HubSpot answers without a word for a record (an id merged away or deleted, which
//! it may leave out silently) is not taken as written: those ids are read once
//! ([`super::remote::Remote::look_up_counted`]); a deleted record marks its row, a merged one fails
//! the record and moves its link to the survivor, so the next push sends the change there.
//!
//! A **dry run** makes the same reads, sends no write (creates and updates are counted, linked
//! records are read by id instead of updated), and rolls back every page's link writes; it
//! commits only the job row with its counts and plan.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::associations::PlannedLinks;
use super::remote::{self, Record};
use super::values::{hash, outgoing, remote_value};
use super::{Identity, Mapped};
use crate::hubspot::{Batch, ContactCreate, ContactUpdate, HubSpotError};
use crate::ids::HsObjectId;
use crate::jobs::model::{
    Counts, Plan, PlannedAction, PlannedKind, PushCounts, PushMode, PushOutcome, RecordError,
};
use crate::jobs::{Page, Progress, RunError};
use crate::mapping::Owner;
use crate::store::{LinkHeld, LinkWrite, LocalRecord, ObjectLink, Store, Tx};
use crate::sync::companies::companies_by_domain;
use crate::sync::dry_notes;
use crate::sync::lookup::Fate;
use crate::sync::{SyncContext, hubspot_error};

/// The company property a `link` push searches by.
const DOMAIN: &str = "domain";

/// Rows per page (and per HubSpot batch).
const PAGE_SIZE: u32 = 100;

/// Where a push resumes: after this key (as text) of the user's table.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    after: String,
}

/// A row to push: its values, its link, and what push would send.
#[derive(Debug)]
struct Candidate {
    key: String,
    link: ObjectLink,
    /// The push/both properties in HubSpot's format, or the fields that cannot convert.
    outgoing: Result<BTreeMap<String, String>, String>,
}

impl Candidate {
    /// The value that finds its record again (its email, its unique property, or its
    /// external key).
    fn identity(&self, mapped: &Mapped) -> Option<String> {
        mapped.row_identity(&self.key, self.outgoing.as_ref().ok()?)
    }

    /// Its email, for job JSON (contacts only).
    fn email(&self, mapped: &Mapped) -> Option<String> {
        (mapped.identity_property() == "email")
            .then(|| self.identity(mapped))
            .flatten()
    }
}

/// A HubSpot record an unlinked row was found to have.
#[derive(Debug)]
struct Found {
    id: HsObjectId,
    /// Its values of the pushed properties, in HubSpot's format.
    remote: BTreeMap<String, String>,
    /// Found by crm-sync's external key: a record this push's earlier attempt created.
    ours: bool,
}

/// What happened to a candidate.
#[derive(Debug)]
enum Decision {
    /// Written, linked or left alone; the link to save (no id: a dry run's create).
    Done {
        outcome: PushOutcome,
        id: Option<HsObjectId>,
        synced: BTreeMap<String, String>,
    },
    /// HubSpot no longer has the linked record: marked, never created again.
    Gone(HsObjectId),
    /// HubSpot merged the linked record into `survivor`: the change was not written; the
    /// link moves to the survivor (the row stays a candidate).
    Merged {
        from: HsObjectId,
        survivor: HsObjectId,
    },
    /// The record failed; the rest of its page goes on.
    Failed {
        reason: String,
        id: Option<HsObjectId>,
    },
}

fn failed(reason: impl Into<String>, id: Option<HsObjectId>) -> Decision {
    Decision::Failed {
        reason: reason.into(),
        id,
    }
}

/// One push: its engine's context, and a dry run's plan not committed yet.
struct PushRun<'a> {
    ctx: &'a SyncContext,
    mapped: &'a Mapped,
    mode: PushMode,
    dry_run: bool,
    plan: Plan,
    /// What a dry run's pages would do to the rows the association phase meets (links,
    /// marks, moves), which it plans as the real run meets them, by every run of the job.
    planned: PlannedLinks,
    /// The HubSpot records those pages would link rows to, with the row's key: the real run's
    /// database refuses them to a later row.
    holders: HashMap<HsObjectId, String>,
    /// The pages a dry run saved.
    journal: dry_notes::Journal,
}

/// Runs one push of `mapped` from the job's checkpoint; a dry run writes nothing but the job
/// row.
pub(crate) async fn run(
    ctx: &SyncContext,
    mapped: &Mapped,
    mode: PushMode,
    dry_run: bool,
    progress: &Progress,
) -> Result<(), RunError> {
    let Counts::Push(mut counts) = progress.counts() else {
        return Err(RunError::fatal("a push job holds pull counts"));
    };
    let mut cursor = progress.checkpoint_as::<Checkpoint>()?.map(|c| c.after);
    let mut run = PushRun {
        ctx,
        mapped,
        mode,
        dry_run,
        plan: if cursor.is_none() {
            mapped.property_plan.clone()
        } else {
            Plan::default()
        },
        planned: PlannedLinks::default(),
        holders: HashMap::new(),
        journal: dry_notes::Journal::default(),
    };
    if dry_run {
        run.resume_dry(progress).await?;
    }
    let mut committed = false;
    loop {
        if progress.should_stop() {
            return Err(RunError::Interrupted);
        }
        let page = progress
            .store()
            .local_page(&mapped.table, cursor.as_deref(), PAGE_SIZE)
            .await?;
        let Some(last) = page.last().map(|r| r.key.clone()) else {
            break;
        };
        let full = page.len() == PAGE_SIZE as usize;
        // Linked rows whose `hubspot_id_column` does not hold their link's id (the column was
        // just configured, or someone changed it): corrected with the page, no HubSpot call.
        let drifted: Vec<(String, Option<HsObjectId>)> = page
            .iter()
            .filter_map(|r| mapped.id_drift(r).map(|id| (r.key.clone(), id)))
            .collect();
        let candidates = candidates(mapped, page);
        if !candidates.is_empty() || !drifted.is_empty() {
            let decisions = run.resolve(&candidates).await?;
            counts = run
                .commit(progress, counts, &candidates, decisions, &drifted, &last)
                .await?;
            committed = true;
        }
        cursor = Some(last);
        if !full {
            break;
        }
    }
    // (Not when resumed in the association phase: its checkpoint stays.)
    if dry_run && !committed && !super::associations::resumed(progress) {
        // A dry run always leaves a plan, even with nothing to push.
        run.commit(
            progress,
            counts,
            &[],
            Vec::new(),
            &[],
            cursor.as_deref().unwrap_or(""),
        )
        .await?;
    }
    // Associations after the rows, as the built-in push does (docs/associations.md).
    let counts =
        super::associations::push(ctx, mapped, mode, dry_run, progress, counts, &run.planned)
            .await?;
    if dry_run {
        // The plan is complete.
        let mut tx = progress.begin().await?;
        dry_notes::forget(&mut tx, &progress.job_id().to_string()).await?;
        tx.commit().await?;
    }
    progress.set_total(counts.total).await?;
    tracing::info!(job = %progress.job_id(), key = %mapped.checked.mapping.key, ?counts, "push of a mapped table finished");
    Ok(())
}

/// Links (finds or creates in HubSpot) the unlinked rows with these keys of `mapped` (a
/// companies table of the user's own) exactly as a page of its push does, and saves their
/// links on their own, outside the calling job's counts: the companies a contacts push's
/// associations need, linked before them. Answers the HubSpot id each row is now linked to, or
/// why it is not; a dry run (`dry`: where the calls the real run would make are added) makes
/// the same reads, writes nothing, and answers an empty id for a row it would create. Rows
/// already linked, marked deleted or missing are not answered.
pub(crate) async fn link_rows(
    ctx: &SyncContext,
    mapped: &Mapped,
    mode: PushMode,
    dry: Option<DryLinking<'_>>,
    store: &Store,
    keys: &[String],
) -> Result<HashMap<String, Result<HsObjectId, String>>, RunError> {
    let dry_run = dry.is_some();
    let records = store.local_records(&mapped.table, keys).await?;
    let unlinked: Vec<Candidate> = candidates(mapped, records)
        .into_iter()
        .filter(|c| c.link.hs_object_id.is_none())
        .collect();
    let mut out = HashMap::new();
    if unlinked.is_empty() {
        return Ok(out);
    }
    let mut run = PushRun {
        ctx,
        mapped,
        mode,
        dry_run,
        plan: Plan::default(),
        planned: PlannedLinks::default(),
        holders: HashMap::new(),
        journal: dry_notes::Journal::default(),
    };
    let decisions = run.resolve(&unlinked).await?;
    let mut links = Vec::new();
    for (c, decision) in unlinked.iter().zip(decisions) {
        let answer = match decision {
            Some(Decision::Done { id, synced, .. }) => {
                if let Some(id) = &id {
                    links.push(LinkWrite {
                        key: c.key.clone(),
                        hs_object_id: Some(id.clone()),
                        pushed_hash: c.outgoing.as_ref().ok().map(hash),
                        synced,
                    });
                }
                Ok(id.unwrap_or_else(|| HsObjectId(String::new())))
            }
            Some(Decision::Failed { reason, .. }) => Err(reason),
            Some(Decision::Gone(_) | Decision::Merged { .. }) | None => {
                Err("the push could not link it".to_owned())
            }
        };
        out.insert(c.key.clone(), answer);
    }
    let mut tx = Tx::begin(store).await?;
    let mut held = tx.save_object_links(mapped.table.object, &links).await?;
    if let Some(dry) = &dry {
        // What earlier calls of the same dry run would have linked is held by then.
        held.extend(held_by(dry.earlier, &links, &held));
    }
    for h in &held {
        out.insert(
            h.key.clone(),
            Err(format!(
                "HubSpot {} {} is already linked to {}",
                mapped.remote_noun(),
                h.hs_object_id,
                mapped.label(&h.holder)
            )),
        );
    }
    if let Some(dry) = dry {
        tx.rollback().await?;
        dry.calls.merge(std::mem::take(&mut run.plan));
        return Ok(out);
    }
    let ids: Vec<(String, Option<HsObjectId>)> = links
        .iter()
        .filter(|l| !held.iter().any(|h| h.key == l.key))
        .map(|l| (l.key.clone(), l.hs_object_id.clone()))
        .collect();
    mapped.write_ids(&mut tx, &ids).await?;
    tx.commit().await?;
    Ok(out)
}

/// What a dry run's [`link_rows`] needs: where to add the calls the real run would make, and
/// the HubSpot records earlier calls of the same dry run would have linked, with the row's key
/// (the real run's database holds them by then).
pub(crate) struct DryLinking<'a> {
    /// The plan the calls are added to.
    pub calls: &'a mut Plan,
    /// HubSpot record → the key of the row an earlier call would link to it.
    pub earlier: &'a HashMap<HsObjectId, String>,
}

/// The links of `links` whose HubSpot record `earlier` gives to another row (those `held`
/// already left out).
fn held_by(
    earlier: &HashMap<HsObjectId, String>,
    links: &[LinkWrite],
    held: &[LinkHeld],
) -> Vec<LinkHeld> {
    links
        .iter()
        .filter(|l| !held.iter().any(|h| h.key == l.key))
        .filter_map(|l| {
            let id = l.hs_object_id.as_ref()?;
            let holder = earlier.get(id).filter(|holder| **holder != l.key)?;
            Some(LinkHeld {
                key: l.key.clone(),
                hs_object_id: id.clone(),
                holder: holder.clone(),
            })
        })
        .collect()
}

/// The rows of a page that are new or changed since their last push; rows HubSpot deleted are
/// never candidates.
fn candidates(mapped: &Mapped, page: Vec<LocalRecord>) -> Vec<Candidate> {
    page.into_iter()
        .filter_map(|record| {
            let link = record.link.unwrap_or_default();
            if link.deleted {
                return None;
            }
            let outgoing = outgoing(&mapped.fields, &record.values).map_err(|e| e.to_string());
            if let Ok(values) = &outgoing
                && link.hs_object_id.is_some()
                && link.pushed_hash.as_deref() == Some(hash(values).as_str())
            {
                return None;
            }
            Some(Candidate {
                key: record.key,
                link,
                outgoing,
            })
        })
        .collect()
}

impl PushRun<'_> {
    /// Resolves a page's candidates against HubSpot.
    async fn resolve(
        &mut self,
        candidates: &[Candidate],
    ) -> Result<Vec<Option<Decision>>, RunError> {
        let mode = self.mode;
        let mut decisions: Vec<Option<Decision>> = candidates.iter().map(|_| None).collect();
        let mut linked = Vec::new();
        let mut unlinked = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            match (&c.outgoing, &c.link.hs_object_id) {
                (Err(reason), id) => decisions[i] = Some(failed(reason.clone(), id.clone())),
                (Ok(_), Some(_)) => linked.push(i),
                (Ok(_), None) => unlinked.push(i),
            }
        }
        self.update_linked(candidates, &linked, &mut decisions)
            .await?;
        self.push_unlinked(mode, candidates, &unlinked, &mut decisions)
            .await?;
        Ok(decisions)
    }
}

/// The properties to send for a linked row changed locally: those whose local value differs
/// from the one last agreed on, except a field HubSpot owns whose HubSpot value changed too.
fn changed_properties(
    mapped: &Mapped,
    candidate: &Candidate,
    remote: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let Ok(values) = &candidate.outgoing else {
        return BTreeMap::new();
    };
    values
        .iter()
        .filter(|(property, value)| candidate.link.synced.get(*property) != Some(*value))
        .filter(|(property, _)| {
            if !hubspot_owned(mapped, property) {
                return true;
            }
            let last = candidate.link.synced.get(*property);
            // Sent only when HubSpot still holds the value last agreed on.
            remote.and_then(|r| r.get(*property)) == last && last.is_some()
        })
        .map(|(p, v)| (p.clone(), v.clone()))
        .collect()
}

fn hubspot_owned(mapped: &Mapped, property: &str) -> bool {
    mapped.fields.iter().any(|f| {
        f.field.property.as_str() == property && f.field.flow.owner() == Some(Owner::HubSpot)
    })
}

/// HubSpot's values, in HubSpot's format, of the record's mapped properties.
fn remote_values(
    mapped: &Mapped,
    properties: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, String> {
    mapped
        .fields
        .iter()
        .filter(|f| f.field.flow.direction().writes_to_hubspot())
        .filter_map(|f| {
            let raw = properties
                .get(f.field.property.as_str())
                .and_then(Option::as_deref);
            remote_value(f, raw)
                .ok()
                .map(|(_, canonical)| (f.field.property.as_str().to_owned(), canonical))
        })
        .collect()
}

impl PushRun<'_> {
    /// Linked rows changed locally: read HubSpot's values of the fields it owns when needed, then
    /// one batch update of what changed (a dry run reads the records by id instead).
    async fn update_linked(
        &mut self,
        candidates: &[Candidate],
        linked: &[usize],
        decisions: &mut [Option<Decision>],
    ) -> Result<(), RunError> {
        let (ctx, mapped) = (self.ctx, self.mapped);
        if linked.is_empty() {
            return Ok(());
        }
        let owned: Vec<String> = mapped
            .fields
            .iter()
            .filter(|f| f.field.flow.owner() == Some(Owner::HubSpot))
            .map(|f| f.field.property.as_str().to_owned())
            .collect();
        let needs_remote: Vec<usize> = linked
            .iter()
            .copied()
            .filter(|&i| {
                let c = &candidates[i];
                c.outgoing.as_ref().is_ok_and(|values| {
                    owned
                        .iter()
                        .any(|p| values.get(p).is_some() && values.get(p) != c.link.synced.get(p))
                })
            })
            .collect();
        let mut remote: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        if !needs_remote.is_empty() {
            let ids: Vec<String> = needs_remote
                .iter()
                .filter_map(|&i| {
                    candidates[i]
                        .link
                        .hs_object_id
                        .as_ref()
                        .map(|id| id.0.clone())
                })
                .collect();
            let batch = Batch::new(ids).map_err(|e| RunError::fatal(e.to_string()))?;
            self.plan.call("batch_read", 1);
            let read = mapped
                .remote(&ctx.hubspot)
                .batch_read(&batch, None, &owned)
                .await
                .map_err(|e| hubspot_error("reading linked HubSpot records", e))?;
            for record in read.results {
                remote.insert(
                    record.id.0.clone(),
                    remote_values(mapped, &record.properties),
                );
            }
            for &i in &needs_remote {
                let id = candidates[i].link.hs_object_id.clone();
                if let Some(id) = id.filter(|id| read.missing.contains(&id.0)) {
                    decisions[i] = Some(Decision::Gone(id));
                }
            }
        }
        let mut updates = Vec::new();
        let mut positions = Vec::new();
        for &i in linked {
            if decisions[i].is_some() {
                continue;
            }
            let c = &candidates[i];
            let Some(id) = c.link.hs_object_id.clone() else {
                continue;
            };
            let send = changed_properties(mapped, c, remote.get(&id.0));
            if send.is_empty() {
                decisions[i] = Some(Decision::Done {
                    outcome: PushOutcome::Skipped,
                    id: Some(id),
                    synced: c.link.synced.clone(),
                });
                continue;
            }
            updates.push(ContactUpdate {
                id: id.0.clone(),
                id_property: None,
                properties: send,
            });
            positions.push(i);
        }
        if updates.is_empty() {
            return Ok(());
        }
        let sent: Vec<BTreeMap<String, String>> =
            updates.iter().map(|u| u.properties.clone()).collect();
        let ids: Vec<HsObjectId> = updates.iter().map(|u| HsObjectId(u.id.clone())).collect();
        self.plan.call("batch_update", 1);
        // The positions (in `updates`) HubSpot answered for; the others are asked about below.
        let mut answered: Vec<bool> = vec![false; updates.len()];
        if !self.dry_run {
            let batch = Batch::new(updates).map_err(|e| RunError::fatal(e.to_string()))?;
            let outcome = mapped
                .remote(&ctx.hubspot)
                .batch_update(&batch)
                .await
                .map_err(|e| hubspot_error("updating HubSpot records", e))?;
            for error in &outcome.errors {
                for &at in &error.input_indices {
                    let Some(&i) = positions.get(at) else {
                        continue;
                    };
                    answered[at] = true;
                    let id = candidates[i].link.hs_object_id.clone();
                    decisions[i] = Some(match (&error.error, id) {
                        (HubSpotError::NotFound { .. }, Some(id)) => Decision::Gone(id),
                        (e, id) => failed(format!("HubSpot refused the update: {e}"), id),
                    });
                }
            }
            for result in &outcome.results {
                let at = result
                    .input_index
                    .or_else(|| ids.iter().position(|id| *id == result.record.id));
                if let Some(at) = at.filter(|&at| at < answered.len()) {
                    answered[at] = true;
                }
            }
        }
        // Ids the update did not answer for (a dry run's: all), read once: HubSpot may leave a
        // deleted or merged-away id out without a word.
        let unanswered: Vec<HsObjectId> = ids
            .iter()
            .zip(&answered)
            .filter(|(_, a)| !**a)
            .map(|(id, _)| id.clone())
            .collect();
        let (fates, gets) = if unanswered.is_empty() {
            (HashMap::new(), 0)
        } else {
            mapped
                .remote(&ctx.hubspot)
                .look_up_counted(&unanswered, "reading HubSpot records an update left out")
                .await?
        };
        if self.dry_run && gets > 0 {
            // The real update leaves out without a word the ids a batch read leaves out (merged
            // away, or deleted under some accounts): it looks those up, one read and a get each.
            self.plan.call("batch_read", 1);
            self.plan.call("get", gets);
        }
        for (at, &i) in positions.iter().enumerate() {
            if decisions[i].is_some() {
                continue;
            }
            let c = &candidates[i];
            let id = ids[at].clone();
            let decision = if answered[at] {
                None
            } else {
                match fates.get(&id) {
                    // Still there under its id: written (a dry run: would be).
                    Some(Fate::Live(_)) => None,
                    Some(Fate::MergedInto(survivor)) => Some(Decision::Merged {
                        from: id.clone(),
                        survivor: survivor.id.clone(),
                    }),
                    Some(Fate::Refused(reason)) => Some(failed(reason.clone(), Some(id.clone()))),
                    Some(Fate::Gone) | None => Some(Decision::Gone(id.clone())),
                }
            };
            if let Some(decision) = decision {
                decisions[i] = Some(decision);
                continue;
            }
            let mut synced = c.link.synced.clone();
            synced.extend(sent[at].clone());
            decisions[i] = Some(Decision::Done {
                outcome: PushOutcome::Updated,
                id: Some(id),
                synced,
            });
        }
        Ok(())
    }

    /// Unlinked rows: read by their identity (email, unique property or external key), then
    /// linked (and in `upsert` mode written) or created; companies not found so are first
    /// looked for by domain in `link` mode.
    async fn push_unlinked(
        &mut self,
        mode: PushMode,
        candidates: &[Candidate],
        unlinked: &[usize],
        decisions: &mut [Option<Decision>],
    ) -> Result<(), RunError> {
        let mapped = self.mapped;
        let mut with_identity = Vec::new();
        for &i in unlinked {
            match candidates[i].identity(mapped) {
                Some(identity) => with_identity.push((i, identity)),
                None => {
                    let column = mapped
                        .identity_column()
                        .map_or_else(String::new, ToString::to_string);
                    decisions[i] = Some(failed(
                        format!(
                            "{} has no {column}: a record without {} cannot be found again, so \
                             it is not pushed",
                            mapped.label(&candidates[i].key),
                            mapped.identity_property(),
                        ),
                        None,
                    ));
                }
            }
        }
        if with_identity.is_empty() {
            return Ok(());
        }
        let mut found = self.read_by_identity(&with_identity).await?;
        let unfound: Vec<usize> = with_identity
            .iter()
            .filter(|(_, identity)| !found.contains_key(identity))
            .map(|(i, _)| *i)
            .collect();
        let by_domain = self
            .link_by_domain(mode, candidates, &unfound, decisions)
            .await?;
        for (i, (id, remote)) in by_domain {
            if let Some((_, identity)) = with_identity.iter().find(|(at, _)| *at == i) {
                found.insert(
                    identity.clone(),
                    Found {
                        id,
                        remote,
                        ours: false,
                    },
                );
            }
        }
        let pending: Vec<(usize, String)> = with_identity
            .into_iter()
            .filter(|(i, _)| decisions[*i].is_none())
            .collect();
        let mut creates = Vec::new();
        let mut create_positions = Vec::new();
        let mut upserts = Vec::new();
        let mut upsert_positions = Vec::new();
        for (i, identity) in &pending {
            let c = &candidates[*i];
            let Ok(values) = &c.outgoing else { continue };
            match found.get(identity) {
                None => {
                    creates.push(ContactCreate {
                        properties: values
                            .clone()
                            .into_iter()
                            .chain(mapped.create_extras(&c.key))
                            .collect(),
                    });
                    create_positions.push(*i);
                }
                Some(Found { id, remote, ours }) => {
                    let send: BTreeMap<String, String> = match mode {
                        // Linking leaves HubSpot's values alone.
                        PushMode::Link => BTreeMap::new(),
                        // Never synced: a field HubSpot owns keeps HubSpot's value.
                        PushMode::Upsert => values
                            .iter()
                            .filter(|(p, v)| {
                                !hubspot_owned(mapped, p) && remote.get(*p) != Some(*v)
                            })
                            .map(|(p, v)| (p.clone(), v.clone()))
                            .collect(),
                    };
                    let mut synced = remote.clone();
                    synced.extend(send.clone());
                    // An earlier attempt's create holding the local values counts as created,
                    // as it would have without the loss.
                    let outcome = if *ours && values.iter().all(|(p, v)| remote.get(p) == Some(v)) {
                        PushOutcome::Created
                    } else {
                        PushOutcome::Linked
                    };
                    decisions[*i] = Some(Decision::Done {
                        outcome,
                        id: Some(id.clone()),
                        synced,
                    });
                    if !send.is_empty() {
                        upserts.push(ContactUpdate {
                            id: id.0.clone(),
                            id_property: None,
                            properties: send,
                        });
                        upsert_positions.push(*i);
                    }
                }
            }
        }
        self.write_found(candidates, upserts, &upsert_positions, decisions)
            .await?;
        self.create(candidates, creates, &create_positions, decisions)
            .await
    }

    /// HubSpot's live records carrying these identities (one batch read by the identity
    /// property), by identity, with their values in HubSpot's format.
    async fn read_by_identity(
        &mut self,
        with_identity: &[(usize, String)],
    ) -> Result<HashMap<String, Found>, RunError> {
        let mapped = self.mapped;
        let mut found = HashMap::new();
        // The real run reads, also when it has just created the external key property.
        self.plan.call("batch_read", 1);
        if !mapped.identity_exists {
            // A dry run before the external key exists: nothing carries one yet.
            return Ok(found);
        }
        let identity = mapped.identity_property().to_owned();
        let mut properties = mapped.properties(true);
        if !properties.contains(&identity) {
            properties.push(identity.clone());
        }
        if mapped.answers_to_additional_emails() {
            properties.push(super::ADDITIONAL_EMAILS.to_owned());
        }
        let values: Vec<String> = with_identity.iter().map(|(_, v)| v.clone()).collect();
        let batch = Batch::new(values).map_err(|e| RunError::fatal(e.to_string()))?;
        let read = mapped
            .remote(&self.ctx.hubspot)
            .batch_read(&batch, Some(&identity), &properties)
            .await
            .map_err(|e| hubspot_error(&format!("reading HubSpot records by {identity}"), e))?;
        let live: Vec<_> = read.results.into_iter().filter(|r| !r.archived).collect();
        let found_of = |record: &Record| Found {
            id: record.id.clone(),
            remote: remote_values(mapped, &record.properties),
            // Only crm-sync writes its external key, so a record carrying this row's was
            // created by an earlier attempt whose answer or commit was lost.
            ours: matches!(mapped.identity, Identity::ExternalKey { .. }),
        };
        // A record's own identity first: another record's additional email never hides it.
        for record in &live {
            if let Some(value) = mapped.record_identity(record) {
                found.entry(value).or_insert_with(|| found_of(record));
            }
        }
        for record in &live {
            for value in mapped.additional_identities(record) {
                found.entry(value).or_insert_with(|| found_of(record));
            }
        }
        Ok(found)
    }

    /// `link` mode, companies with a pushed `domain` that nothing found by identity: the one
    /// live HubSpot company with that domain is linked (one search per page, on the search
    /// budget). Several are a failed record naming them, never a guess; a company carrying
    /// another record's identity is that record's. Returns what was found, by position.
    async fn link_by_domain(
        &mut self,
        mode: PushMode,
        candidates: &[Candidate],
        unfound: &[usize],
        decisions: &mut [Option<Decision>],
    ) -> Result<Vec<(usize, (HsObjectId, BTreeMap<String, String>))>, RunError> {
        let mapped = self.mapped;
        let searches = mode == PushMode::Link
            && mapped.checked.mapping.object == crate::hubspot::ObjectType::Companies
            && mapped.properties(true).iter().any(|p| p == DOMAIN);
        if !searches || unfound.is_empty() {
            return Ok(Vec::new());
        }
        let domain_of = |i: usize| {
            candidates[i]
                .outgoing
                .as_ref()
                .ok()
                .and_then(|v| v.get(DOMAIN))
                .map(|d| d.trim().to_lowercase())
                .filter(|d| !d.is_empty())
        };
        let mut domains: Vec<String> = unfound.iter().filter_map(|&i| domain_of(i)).collect();
        domains.sort();
        domains.dedup();
        let mut properties = mapped.properties(true);
        properties.push(mapped.identity_property().to_owned());
        let mut calls = 0;
        let matches =
            companies_by_domain(&self.ctx.hubspot, &domains, properties, || calls += 1).await?;
        self.plan.call("search", calls);
        let mut linked = Vec::new();
        for &i in unfound {
            let Some(domain) = domain_of(i) else { continue };
            let own = candidates[i].identity(mapped);
            let found: Vec<Record> = matches
                .get(&domain)
                .into_iter()
                .flatten()
                .cloned()
                .map(remote::record)
                .filter(|c| mapped.record_identity(c).is_none_or(|v| Some(v) == own))
                .collect();
            match found.as_slice() {
                [] => {}
                [one] => linked.push((i, (one.id.clone(), remote_values(mapped, &one.properties)))),
                several => {
                    let ids: Vec<&str> = several.iter().map(|c| c.id.0.as_str()).collect();
                    decisions[i] = Some(failed(
                        format!(
                            "{} HubSpot companies have the domain {domain:?} ({}); crm-sync links \
                             only when exactly one does. Merge them in HubSpot, or give the row's \
                             company its {} in HubSpot",
                            ids.len(),
                            ids.join(", "),
                            mapped.identity_property()
                        ),
                        None,
                    ));
                }
            }
        }
        Ok(linked)
    }

    /// `upsert` mode: the local values of rows just linked, in one batch update (a dry run
    /// counts the call and sends nothing).
    async fn write_found(
        &mut self,
        candidates: &[Candidate],
        updates: Vec<ContactUpdate>,
        positions: &[usize],
        decisions: &mut [Option<Decision>],
    ) -> Result<(), RunError> {
        let ctx = self.ctx;
        if updates.is_empty() {
            return Ok(());
        }
        self.plan.call("batch_update", 1);
        if self.dry_run {
            return Ok(());
        }
        let batch = Batch::new(updates).map_err(|e| RunError::fatal(e.to_string()))?;
        let outcome = self
            .mapped
            .remote(&ctx.hubspot)
            .batch_update(&batch)
            .await
            .map_err(|e| hubspot_error("writing local values to HubSpot records", e))?;
        for error in &outcome.errors {
            for &at in &error.input_indices {
                let Some(&i) = positions.get(at) else {
                    continue;
                };
                let id = match &decisions[i] {
                    Some(Decision::Done { id, .. }) => id.clone(),
                    _ => None,
                };
                let _ = &candidates[i];
                decisions[i] = Some(failed(
                    format!("HubSpot refused the update: {}", error.error),
                    id,
                ));
            }
        }
        Ok(())
    }

    /// Rows HubSpot does not have, in one batch create (a dry run counts them, sends nothing).
    async fn create(
        &mut self,
        candidates: &[Candidate],
        creates: Vec<ContactCreate>,
        positions: &[usize],
        decisions: &mut [Option<Decision>],
    ) -> Result<(), RunError> {
        let ctx = self.ctx;
        if creates.is_empty() {
            return Ok(());
        }
        // What both sides agree on: the mapped values, not the external key a create adds.
        let sent: Vec<BTreeMap<String, String>> = positions
            .iter()
            .map(|&i| candidates[i].outgoing.clone().unwrap_or_default())
            .collect();
        self.plan.call("batch_create", 1);
        if self.dry_run {
            for (at, &i) in positions.iter().enumerate() {
                decisions[i] = Some(Decision::Done {
                    outcome: PushOutcome::Created,
                    id: None,
                    synced: sent[at].clone(),
                });
            }
            return Ok(());
        }
        let batch = Batch::new(creates).map_err(|e| RunError::fatal(e.to_string()))?;
        let outcome = match self.mapped.remote(&ctx.hubspot).batch_create(&batch).await {
            Ok(outcome) => outcome,
            // A record with one of these unique values appeared since the read: read the page
            // again.
            Err(HubSpotError::Conflict { .. }) => {
                return Err(RunError::transient(
                    "a HubSpot record with one of the page's unique values appeared while it was \
                     pushed; the page is read again",
                ));
            }
            Err(e) => return Err(hubspot_error("creating HubSpot records", e)),
        };
        for error in &outcome.errors {
            for &at in &error.input_indices {
                if let Some(&i) = positions.get(at) {
                    decisions[i] = Some(failed(
                        format!("HubSpot refused the record: {}", error.error),
                        None,
                    ));
                }
            }
        }
        for result in outcome.results {
            let Some(at) = result.input_index else {
                continue;
            };
            let Some(&i) = positions.get(at) else {
                continue;
            };
            if decisions[i].is_none() {
                decisions[i] = Some(Decision::Done {
                    outcome: PushOutcome::Created,
                    id: Some(result.record.id.clone()),
                    synced: sent[at].clone(),
                });
            }
        }
        for &i in positions {
            if decisions[i].is_none() {
                decisions[i] = Some(failed(
                    format!(
                        "HubSpot's answer did not mention the record of key {}",
                        candidates[i].key
                    ),
                    None,
                ));
            }
        }
        Ok(())
    }

    /// A dry run's pages so far, by every run of the job (a resumed one reads what the
    /// earlier runs saved).
    async fn resume_dry(&mut self, progress: &Progress) -> Result<(), RunError> {
        let (journal, pages) = dry_notes::Journal::open::<PlannedLinks>(progress).await?;
        for page in pages {
            self.holders.extend(page.holders());
            self.planned.extend(page);
        }
        self.journal = journal;
        Ok(())
    }

    /// The links of `links` the real run's database would refuse because an earlier page of
    /// this dry run would have linked their HubSpot record to another row (those `held`
    /// already left out).
    fn held_earlier(&self, links: &[LinkWrite], held: &[LinkHeld]) -> Vec<LinkHeld> {
        held_by(&self.holders, links, held)
    }

    /// Saves a page's links, marks and counts with its checkpoint in one transaction; a dry run
    /// makes the same writes, rolls them back, and commits only the job row with its plan.
    async fn commit(
        &mut self,
        progress: &Progress,
        mut counts: PushCounts,
        candidates: &[Candidate],
        decisions: Vec<Option<Decision>>,
        drifted: &[(String, Option<HsObjectId>)],
        last: &str,
    ) -> Result<PushCounts, RunError> {
        let mapped = self.mapped;
        let object = mapped.table.object;
        let mut links = Vec::new();
        let mut gone = Vec::new();
        let mut moves = Vec::new();
        for (c, d) in candidates.iter().zip(&decisions) {
            match d {
                Some(Decision::Done { id, synced, .. }) => links.push(LinkWrite {
                    key: c.key.clone(),
                    hs_object_id: id.clone(),
                    pushed_hash: c.outgoing.as_ref().ok().map(hash),
                    synced: synced.clone(),
                }),
                Some(Decision::Gone(_)) => gone.push(c.key.clone()),
                Some(Decision::Merged { survivor, .. }) => {
                    moves.push((c.key.clone(), survivor.clone()))
                }
                _ => {}
            }
        }
        let mut tx = progress.begin().await?;
        let mut held = tx.save_object_links(object, &links).await?;
        let mut share = PlannedLinks::default();
        if self.dry_run {
            // What earlier pages would have linked is held by then in the real run.
            held.extend(self.held_earlier(&links, &held));
            // Rows unlinked until now that this page links or creates.
            share.links.extend(
                links
                    .iter()
                    .filter(|l| !held.iter().any(|h| h.key == l.key))
                    .filter(|l| {
                        candidates
                            .iter()
                            .any(|c| c.key == l.key && c.link.hs_object_id.is_none())
                    })
                    .map(|l| (l.key.clone(), l.hs_object_id.clone())),
            );
        }
        tx.mark_deleted_in_hubspot(object, &gone).await?;
        let mut moved_held = tx.relink_objects(object, &moves).await?;
        if self.dry_run {
            let moving: Vec<LinkWrite> = moves
                .iter()
                .map(|(key, survivor)| LinkWrite {
                    key: key.clone(),
                    hs_object_id: Some(survivor.clone()),
                    pushed_hash: None,
                    synced: BTreeMap::new(),
                })
                .collect();
            moved_held.extend(self.held_earlier(&moving, &moved_held));
            share.plan_marks_and_moves(&gone, &moves, &moved_held);
        }
        for h in &moved_held {
            tracing::warn!(key = %h.key, survivor = %h.hs_object_id, holder = %h.holder, "the survivor of a merge is linked to another row; the link is left as it was");
        }
        // `hubspot_id_column`: the drifted rows corrected, then the rows whose HubSpot id is
        // new, moved or gone (written last, so theirs wins).
        let mut ids: Vec<(String, Option<HsObjectId>)> = drifted.to_vec();
        ids.extend(
            links
                .iter()
                .filter(|l| l.hs_object_id.is_some() && !held.iter().any(|h| h.key == l.key))
                .filter(|l| {
                    candidates
                        .iter()
                        .find(|c| c.key == l.key)
                        .is_none_or(|c| c.link.hs_object_id != l.hs_object_id)
                })
                .map(|l| (l.key.clone(), l.hs_object_id.clone())),
        );
        ids.extend(gone.iter().map(|key| (key.clone(), None)));
        ids.extend(
            moves
                .iter()
                .filter(|(key, _)| !moved_held.iter().any(|h| h.key == *key))
                .map(|(key, survivor)| (key.clone(), Some(survivor.clone()))),
        );
        mapped.write_ids(&mut tx, &ids).await?;
        let mut errors = Vec::new();
        let noun = mapped.remote_noun();
        for (c, d) in candidates.iter().zip(decisions) {
            let d = match held.iter().find(|h| h.key == c.key) {
                Some(h) => failed(
                    format!(
                        "HubSpot {noun} {} is already linked to {}; two local rows cannot share \
                     one HubSpot {noun}",
                        h.hs_object_id,
                        mapped.label(&h.holder)
                    ),
                    Some(h.hs_object_id.clone()),
                ),
                None => d.unwrap_or_else(|| failed("the push left this record undecided", None)),
            };
            let (outcome, failure) = match d {
                Decision::Done { outcome, .. } => (outcome, None),
                Decision::Gone(id) => (
                    PushOutcome::Failed,
                    Some((
                        format!(
                            "the linked HubSpot {noun} was deleted; the row is marked and never \
                         created again"
                        ),
                        Some(id),
                    )),
                ),
                Decision::Merged { from, survivor } => (
                    PushOutcome::Failed,
                    Some((
                        format!(
                            "HubSpot merged the linked {noun} {from} into {survivor}; the row is \
                         linked to {survivor} and its change is sent by the next push"
                        ),
                        Some(from),
                    )),
                ),
                Decision::Failed { reason, id } => (PushOutcome::Failed, Some((reason, id))),
            };
            counts.add(outcome);
            self.plan.actions.push(planned(
                mapped,
                c,
                outcome,
                failure.as_ref().map(|(r, _)| r.as_str()),
            ));
            if let Some((reason, id)) = failure {
                errors.push(record_error(mapped, c, reason, id));
            }
        }
        let checkpoint = serde_json::to_value(Checkpoint {
            after: last.to_owned(),
        })
        .map_err(|e| RunError::fatal(format!("cannot encode the push checkpoint: {e}")))?;
        let page = Page {
            counts: Counts::Push(counts),
            checkpoint,
            errors,
        };
        if self.dry_run {
            tx.rollback().await?;
            let mut tx = progress.begin().await?;
            self.journal.append(&mut tx, progress, &share).await?;
            let plan = std::mem::take(&mut self.plan);
            progress.commit_planned(tx, page, Some(plan)).await?;
            self.holders.extend(share.holders());
            self.planned.extend(share);
        } else {
            self.plan = Plan::default();
            progress.commit(tx, page).await?;
        }
        Ok(counts)
    }
}

/// A dry run's entry for one candidate.
fn planned(
    mapped: &Mapped,
    c: &Candidate,
    outcome: PushOutcome,
    failure: Option<&str>,
) -> PlannedAction {
    let label = mapped.label(&c.key);
    let (action, reason) = match (outcome, failure) {
        (_, Some(reason)) => (PlannedKind::Fail, format!("{label}: {reason}")),
        (PushOutcome::Created, _) => (
            PlannedKind::Create,
            format!(
                "{label}: no HubSpot {} has its {}; one would be created",
                mapped.remote_noun(),
                mapped.identity_property()
            ),
        ),
        (PushOutcome::Linked, _) => (
            PlannedKind::Link,
            format!(
                "{label}: the HubSpot {} found by its {} would be linked",
                mapped.remote_noun(),
                mapped.identity_property()
            ),
        ),
        (PushOutcome::Updated, _) => (
            PlannedKind::Update,
            format!("{label}: its changed values would be sent"),
        ),
        _ => (
            PlannedKind::Unchanged,
            format!("{label}: nothing to send: what changed is HubSpot's to keep"),
        ),
    };
    PlannedAction {
        action,
        contact_id: mapped.contact_id(&c.key),
        email: c.email(mapped),
        hs_object_id: c.link.hs_object_id.clone(),
        reason,
    }
}

fn record_error(
    mapped: &Mapped,
    c: &Candidate,
    reason: String,
    id: Option<HsObjectId>,
) -> RecordError {
    RecordError {
        contact_id: mapped.contact_id(&c.key),
        company_id: None,
        email: c.email(mapped),
        hs_object_id: id,
        reason: format!("{}: {reason}", mapped.label(&c.key)),
    }
}
