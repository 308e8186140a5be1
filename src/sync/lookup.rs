//! What HubSpot says about given contact ids, under each way it really answers a batch read.
//!
//! - A batch read answers the ids it found in `results`, and those it does not have in one
//!   `OBJECT_NOT_FOUND` error (a 207): those are [`Fate::Gone`].
//! - It may refuse the whole batch for one id it finds malformed (a 400): the batch is
//!   halved until the refused id is alone, and that one is [`Fate::Refused`], with the reason
//!   logged; it never blocks the others (as push's reads do).
//! - It may leave an id out of `results` with no error at all (a merged-away id, a missing
//!   one): silence is not deletion. Each id left out is read once more on its own (`GET` by
//!   id): a 404 is [`Fate::Gone`]; a record under another id means HubSpot merged the id into
//!   that record ([`Fate::MergedInto`]); the same id is [`Fate::Live`].
//!
//! An archived record (in the recycle bin) counts as gone.

use super::PROPERTIES;
use crate::hubspot::{Batch, Contact, HubSpotClient, HubSpotError};
use crate::ids::HsObjectId;
use std::collections::{HashMap, HashSet};

/// What HubSpot says about one id.
#[derive(Debug, Clone)]
pub(crate) enum Fate {
    /// HubSpot has it, under that id.
    Live(Contact),
    /// HubSpot merged it into this record.
    MergedInto(Contact),
    /// HubSpot no longer has it (deleted, archived, never existed in this portal).
    Gone,
    /// HubSpot refused to read it (e.g. a malformed id): why.
    Refused(String),
}

/// Asks HubSpot about `ids` (at most 100): one batch read, more only when HubSpot refuses the
/// batch whole, plus one `GET` per id the batch read left out without a word.
pub(crate) async fn look_up(
    client: &HubSpotClient,
    ids: &[HsObjectId],
) -> Result<HashMap<HsObjectId, Fate>, HubSpotError> {
    Ok(look_up_counted(client, ids).await?.0)
}

/// [`look_up`], with how many ids it read on their own (a dry run plans those calls).
pub(crate) async fn look_up_counted(
    client: &HubSpotClient,
    ids: &[HsObjectId],
) -> Result<(HashMap<HsObjectId, Fate>, u64), HubSpotError> {
    let mut fates = read_split(client, ids).await?;
    let mut gets = 0;
    for id in ids {
        if !fates.contains_key(id) {
            let fate = read_one(client, id).await?;
            fates.insert(id.clone(), fate);
            gets += 1;
        }
    }
    Ok((fates, gets))
}

/// Batch reads `ids`, halving a batch HubSpot refuses whole until the refused id is alone.
/// Ids the answers say nothing about are left out of the map.
async fn read_split(
    client: &HubSpotClient,
    ids: &[HsObjectId],
) -> Result<HashMap<HsObjectId, Fate>, HubSpotError> {
    let properties: Vec<String> = PROPERTIES.iter().map(|p| (*p).to_owned()).collect();
    let mut fates = HashMap::new();
    let mut work: Vec<Vec<String>> = vec![ids.iter().map(|id| id.0.clone()).collect()];
    while let Some(part) = work.pop() {
        if part.is_empty() {
            continue;
        }
        let batch = Batch::new(part).map_err(|e| HubSpotError::InvalidRequest(e.to_string()))?;
        match client.batch_read(&batch, None, &properties).await {
            Ok(read) => {
                for contact in read.results {
                    // A record under an id not asked for is a survivor of a merge: the id it
                    // answers for is left out below, and read on its own.
                    let id = contact.id.clone();
                    let fate = if contact.archived {
                        Fate::Gone
                    } else {
                        Fate::Live(contact)
                    };
                    fates.insert(id, fate);
                }
                for id in read.missing {
                    fates.insert(HsObjectId::from(id.as_str()), Fate::Gone);
                }
                for refused in read.errors {
                    for &i in &refused.input_indices {
                        if let Some(id) = batch.items().get(i) {
                            let fate = Fate::Refused(format!(
                                "HubSpot refused to read it: {}",
                                refused.error
                            ));
                            fates.insert(HsObjectId::from(id.as_str()), fate);
                        }
                    }
                }
            }
            Err(e @ HubSpotError::Validation { .. }) if batch.len() == 1 => {
                let id = HsObjectId::from(batch.items()[0].as_str());
                tracing::warn!(%id, error = %e, "HubSpot refuses to read this id; it is dropped");
                fates.insert(
                    id,
                    Fate::Refused(format!("HubSpot refused to read it: {e}")),
                );
            }
            Err(HubSpotError::Validation { .. }) => {
                let mut first = batch.into_inner();
                let second = first.split_off(first.len() / 2);
                work.push(first);
                work.push(second);
            }
            Err(e) => return Err(e),
        }
    }
    let asked: HashSet<&HsObjectId> = ids.iter().collect();
    fates.retain(|id, _| asked.contains(id));
    Ok(fates)
}

/// Reads one id on its own, after a batch read left it out without a word.
async fn read_one(client: &HubSpotClient, id: &HsObjectId) -> Result<Fate, HubSpotError> {
    let properties: Vec<String> = PROPERTIES.iter().map(|p| (*p).to_owned()).collect();
    match client.get_contact(&id.0, None, &properties).await {
        Ok(contact) if contact.archived => Ok(Fate::Gone),
        Ok(contact) if contact.id == *id => Ok(Fate::Live(contact)),
        Ok(survivor) => Ok(Fate::MergedInto(survivor)),
        Err(HubSpotError::NotFound { .. }) => Ok(Fate::Gone),
        // An id that cannot even be put into a URL names no record HubSpot has: gone, as a
        // batch read reports such an id when it is short enough to be sent.
        Err(e @ HubSpotError::InvalidRequest(_)) => {
            tracing::warn!(%id, error = %e, "this id cannot be read on its own; taken as gone");
            Ok(Fate::Gone)
        }
        Err(e @ HubSpotError::Validation { .. }) => {
            tracing::warn!(%id, error = %e, "HubSpot refuses to read this id; it is dropped");
            Ok(Fate::Refused(format!("HubSpot refused to read it: {e}")))
        }
        Err(e) => Err(e),
    }
}
