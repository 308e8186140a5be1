//! What a verified batch of events does locally, before any call to HubSpot: redeliveries are
//! dropped, deletions tombstone the linked row (its `hs_object_id` is cleared and push never
//! creates the contact again, INTERFACE §4.4), merges re-link `contacts.hs_object_id`, and the
//! records that need a targeted pull are listed for the sync engine.

use super::events::{EventKind, WebhookEvent};
use crate::ids::{ContactId, HsObjectId};
use crate::store::{MergeOutcome, Store, StoreError, TombstoneReason};

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
}

/// Records the events, then applies those not seen before, oldest first: deletions tombstone
/// the linked row (clearing its `hs_object_id`), merges re-link to the surviving id. When applying fails, the events
/// are forgotten again, so that HubSpot's redelivery (after a 5xx answer) gets another try.
pub async fn process_events(
    store: &Store,
    events: &[WebhookEvent],
) -> Result<BatchOutcome, StoreError> {
    let keys: Vec<_> = events.iter().map(WebhookEvent::key).collect();
    let new_flags = store.record_new_events(&keys).await?;
    let mut fresh: Vec<&WebhookEvent> = events
        .iter()
        .zip(&new_flags)
        .filter_map(|(event, new)| new.then_some(event))
        .collect();
    // HubSpot does not deliver in order; a stable sort keeps equal times in received order.
    fresh.sort_by_key(|event| event.occurred_at_ms);
    let mut outcome = BatchOutcome {
        new_events: fresh.len(),
        duplicates: events.len() - fresh.len(),
        ..BatchOutcome::default()
    };
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
    for event in events {
        match (&event.kind, &event.object_id) {
            (EventKind::ContactDeletion | EventKind::ContactPrivacyDeletion, Some(id)) => {
                let reason = deletion_reason(&event.kind);
                let unlinked = store
                    .tombstone_hs_objects(std::slice::from_ref(id), reason)
                    .await?;
                outcome.unlinked.extend(unlinked);
                outcome.to_pull.retain(|pending| pending != id);
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
                outcome
                    .to_pull
                    .retain(|pending| !merged_away.contains(pending));
                push_once(&mut outcome.to_pull, merge.survivor());
            }
            (
                EventKind::ContactCreation
                | EventKind::ContactRestore
                | EventKind::ContactPropertyChange { .. },
                Some(id),
            ) => push_once(&mut outcome.to_pull, id),
            _ => {}
        }
    }
    outcome.unlinked.sort();
    outcome.unlinked.dedup();
    Ok(())
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
