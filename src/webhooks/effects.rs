//! What a verified batch of events does locally, before any call to HubSpot: redeliveries are
//! dropped, deletions tombstone the linked row (its `hs_object_id` is cleared and push never
//! creates the contact again, INTERFACE §4.4), merges re-link `contacts.hs_object_id` — and
//! the links of a mapping to the user's own table in `object_links` alike — and the records
//! that need a targeted pull are listed for the sync engine.

use std::collections::HashMap;

use super::echoes::echo_of;
use super::events::{EventKind, WebhookEvent};
use crate::hubspot::ObjectType;
use crate::ids::{CompanyId, ContactId, HsObjectId, LocalCompanyId};
use crate::store::{LinkedRow, MergeOutcome, Store, StoreError, TombstoneReason, Tx};
use crate::sync::keys::ExternalKeys;

/// What [`process_events`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events seen for the first time.
    pub new_events: usize,
    /// Redeliveries (or repeats within the batch), ignored.
    pub duplicates: usize,
    /// Local rows unlinked and tombstoned because HubSpot deleted their record.
    pub unlinked: Vec<ContactId>,
    /// One entry per merge event applied.
    pub merges: Vec<MergeOutcome>,
    /// Records to pull from HubSpot (created, changed, restored, merge survivors), each once,
    /// in the order first seen, without those the batch deleted afterwards.
    pub to_pull: Vec<HsObjectId>,
    /// Creations and property changes that need no read (see [`super::echoes`]).
    pub echoes: usize,
    /// Local companies unlinked and tombstoned because HubSpot deleted their company.
    pub companies_unlinked: Vec<LocalCompanyId>,
    /// One entry per `company.merge` applied.
    pub company_merges: Vec<MergeOutcome<LocalCompanyId>>,
    /// Companies created, changed or restored by others and not linked locally: each is read
    /// by the webhook pull, once, in the order first seen (a linked company needs no read: a
    /// pull never changes a linked company's own fields).
    pub companies_changed: Vec<HsObjectId>,
    /// Contacts whose company associations changed (the contact's side of a contact→company
    /// change, not this app's own write): the webhook pull reads their associations, once.
    pub associations_to_read: Vec<HsObjectId>,
}

/// Records the events, then applies those not seen before, oldest first: deletions tombstone
/// the linked row (clearing its `hs_object_id`), merges re-link to the surviving id — for
/// contacts and for crm-sync's companies alike. When applying fails, the events
/// are forgotten again, so that HubSpot's redelivery (after a 5xx answer) gets another try.
///
/// Echoes of this app's own writes are counted and go no further: they need no read, and no
/// row either, since a redelivery is dropped again the same way. During a push that is nearly
/// every event, so the route writes nothing for them (on SQLite, the push keeps the writer).
pub async fn process_events(
    store: &Store,
    events: &[WebhookEvent],
) -> Result<BatchOutcome, StoreError> {
    let (own, events): (Vec<&WebhookEvent>, Vec<&WebhookEvent>) =
        events.iter().partition(|event| event.is_own_echo());
    let keys: Vec<_> = events.iter().map(|event| event.key()).collect();
    let new_flags = store.record_new_events(&keys).await?;
    let mut fresh: Vec<&WebhookEvent> = events
        .iter()
        .copied()
        .zip(&new_flags)
        .filter_map(|(event, new)| new.then_some(event))
        .collect();
    // HubSpot does not deliver in order; a stable sort keeps equal times in received order.
    fresh.sort_by_key(|event| event.occurred_at_ms);
    let mut outcome = BatchOutcome {
        new_events: fresh.len(),
        duplicates: events.len() - fresh.len(),
        echoes: own.len(),
        ..BatchOutcome::default()
    };
    // A batch of echoes only (most of a push's) has nothing to apply: no database call at all.
    if fresh.is_empty() {
        return Ok(outcome);
    }
    if let Err(e) = apply(store, &fresh, &mut outcome).await {
        let fresh_keys: Vec<String> = fresh.iter().map(|event| event.key().dedupe_key).collect();
        if let Err(forget) = store.forget_events(&fresh_keys).await {
            tracing::error!(error = %forget, "cannot forget webhook events after a failure; their redelivery will be ignored");
        }
        return Err(e);
    }
    Ok(outcome)
}

async fn apply(
    store: &Store,
    events: &[&WebhookEvent],
    outcome: &mut BatchOutcome,
) -> Result<(), StoreError> {
    let linked = linked_rows(store, events).await?;
    let keys = ExternalKeys::new(&store.installation().await?);
    let mut company_events: Vec<HsObjectId> = Vec::new();
    for event in events {
        match (&event.kind, &event.object_id) {
            (EventKind::ContactDeletion | EventKind::ContactPrivacyDeletion, Some(id)) => {
                let reason = deletion_reason(&event.kind);
                let unlinked = store
                    .tombstone_hs_objects(std::slice::from_ref(id), reason)
                    .await?;
                outcome.unlinked.extend(unlinked);
                // A row of a mapping to the user's own table is marked in `object_links`.
                let marked = store
                    .mark_links_deleted(ObjectType::Contacts.path_name(), std::slice::from_ref(id))
                    .await?;
                if !marked.is_empty() {
                    tracing::info!(%id, keys = ?marked, "HubSpot deleted the contact of these rows of a mapped table; they are marked");
                }
                outcome.to_pull.retain(|pending| pending != id);
                outcome.associations_to_read.retain(|pending| pending != id);
            }
            (EventKind::ContactMerge(merge), _) => {
                let merged_away = merge.merged_away();
                let applied = store.relink_merged(merge.survivor(), &merged_away).await?;
                if !applied.unlinked.is_empty() {
                    tracing::warn!(
                        survivor = %applied.survivor,
                        kept = ?applied.linked,
                        unlinked = ?applied.unlinked,
                        "HubSpot merged records linked to several local contacts; one keeps the link"
                    );
                }
                outcome.merges.push(applied);
                let moved = store
                    .relink_links_merged(
                        ObjectType::Contacts.path_name(),
                        merge.survivor(),
                        &merged_away,
                    )
                    .await?;
                if !moved.is_empty() {
                    tracing::info!(survivor = %merge.survivor(), keys = ?moved, "rows of a mapped table follow a merge");
                }
                outcome
                    .to_pull
                    .retain(|pending| !merged_away.contains(pending));
                outcome
                    .associations_to_read
                    .retain(|pending| !merged_away.contains(pending));
                push_once(&mut outcome.to_pull, merge.survivor());
            }
            (EventKind::ContactCreation | EventKind::ContactPropertyChange { .. }, Some(id)) => {
                match echo_of(event, linked.get(id), &keys) {
                    Some(echo) => {
                        tracing::debug!(object = %id, ?echo, "webhook event needs no read");
                        outcome.echoes += 1;
                    }
                    None => push_once(&mut outcome.to_pull, id),
                }
            }
            (EventKind::ContactRestore, Some(id)) => push_once(&mut outcome.to_pull, id),
            (EventKind::CompanyDeletion, Some(id)) => {
                let mut tx = Tx::begin(store).await?;
                let unlinked = tx
                    .tombstone_companies(&[CompanyId(id.0.clone())], TombstoneReason::Deleted)
                    .await?;
                tx.commit().await?;
                outcome.companies_unlinked.extend(unlinked);
                // A row of a companies mapping to the user's own table is marked.
                let marked = store
                    .mark_links_deleted(ObjectType::Companies.path_name(), std::slice::from_ref(id))
                    .await?;
                if !marked.is_empty() {
                    tracing::info!(%id, keys = ?marked, "HubSpot deleted the company of these rows of a mapped table; they are marked");
                }
                outcome.companies_changed.retain(|pending| pending != id);
            }
            (EventKind::CompanyMerge(merge), _) => {
                let merged_away = merge.merged_away();
                let applied = store
                    .relink_merged_companies(merge.survivor(), &merged_away)
                    .await?;
                outcome.company_merges.push(applied);
                let moved = store
                    .relink_links_merged(
                        ObjectType::Companies.path_name(),
                        merge.survivor(),
                        &merged_away,
                    )
                    .await?;
                if !moved.is_empty() {
                    tracing::info!(survivor = %merge.survivor(), keys = ?moved, "rows of a mapped companies table follow a merge");
                }
                outcome
                    .companies_changed
                    .retain(|pending| !merged_away.contains(pending));
            }
            (
                EventKind::CompanyCreation
                | EventKind::CompanyPropertyChange { .. }
                | EventKind::CompanyRestore,
                Some(id),
            ) if !event.is_own_write() => {
                company_events.push(id.clone());
                push_once(&mut outcome.companies_changed, id);
            }
            (EventKind::ContactAssociationChange(change), _)
                if change.may_be_contact_to_company() && !event.is_own_write() =>
            {
                // `fromObjectId` is the contact on its own side; `objectId` says the same.
                if let Some(contact) = change.from_object_id.as_ref().or(event.object_id.as_ref()) {
                    push_once(&mut outcome.associations_to_read, contact);
                }
            }
            // Nothing else needs anything here: `company.associationChange` is the company's
            // side of a change the contact's side reports too (HubSpot fires both, API-NOTES
            // §10.4), so reading it would read the same pair twice; other pairs and objects
            // are not synced.
            _ => {}
        }
    }
    // Events about companies linked here need no read: counted as echoes, per event.
    let linked = store
        .companies_linked_among(&outcome.companies_changed)
        .await?;
    if !linked.is_empty() {
        outcome.echoes += company_events
            .iter()
            .filter(|id| linked.contains(id))
            .count();
        outcome.companies_changed.retain(|id| !linked.contains(id));
    }
    outcome.unlinked.sort();
    outcome.unlinked.dedup();
    outcome.companies_unlinked.sort();
    outcome.companies_unlinked.dedup();
    Ok(())
}

/// The local rows linked to the records the batch's creations and property changes name, as
/// they stand before the batch (one query; own writes need none).
async fn linked_rows(
    store: &Store,
    events: &[&WebhookEvent],
) -> Result<HashMap<HsObjectId, LinkedRow>, StoreError> {
    let mut ids: Vec<HsObjectId> = Vec::new();
    for event in events {
        let readable = matches!(
            event.kind,
            EventKind::ContactCreation | EventKind::ContactPropertyChange { .. }
        );
        if let (true, false, Some(id)) = (readable, event.is_own_write(), &event.object_id) {
            push_once(&mut ids, id);
        }
    }
    let rows = store.linked_rows(&ids).await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.hs_object_id.clone(), row))
        .collect())
}

/// Why a deletion event's contact is gone: a privacy deletion is remembered as such, because
/// it is never undone automatically.
fn deletion_reason(kind: &EventKind) -> TombstoneReason {
    match kind {
        EventKind::ContactPrivacyDeletion => TombstoneReason::PrivacyDeletion,
        _ => TombstoneReason::Deleted,
    }
}

fn push_once(list: &mut Vec<HsObjectId>, id: &HsObjectId) {
    if !list.contains(id) {
        list.push(id.clone());
    }
}
