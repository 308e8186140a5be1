//! What HubSpot says about given company ids, under each way it really answers a batch read
//! (as [`crate::sync::lookup`] does for contacts).
//!
//! - A batch read answers the ids it found in `results`, and those it does not have in one
//!   `OBJECT_NOT_FOUND` error (a 207): those are [`CompanyFate::Gone`].
//! - It may leave an id out of `results` with no error at all (a missing id, or one merged
//!   away, which under HubSpot's newer merges gets a new id): silence is not deletion. Each id
//!   left out is read once more on its own (`GET` by id): a 404 is [`CompanyFate::Gone`]; a
//!   record under another id means HubSpot merged the id into that record
//!   ([`CompanyFate::MergedInto`]); the same id is [`CompanyFate::Live`].
//! - A record answered under an id nobody asked for is a merge's survivor: the id it stands
//!   for is one left out, and is read on its own like any other.
//!
//! An archived record (in the recycle bin) counts as gone.

use super::{company_error, read_properties};
use crate::hubspot::{Batch, Company, HubSpotClient, HubSpotError};
use crate::ids::CompanyId;
use crate::jobs::{RunError, RunFailure};
use std::collections::{HashMap, HashSet};

/// What HubSpot says about one company id.
#[derive(Debug, Clone)]
pub(crate) enum CompanyFate {
    /// HubSpot has it, under that id.
    Live(Company),
    /// HubSpot merged it into this record (whose id may be new).
    MergedInto(Company),
    /// HubSpot no longer has it (deleted, archived, never existed in this portal).
    Gone,
}

impl CompanyFate {
    /// The record that now stands for the id, if any: itself, or the survivor of its merge.
    pub(crate) fn record(&self) -> Option<&Company> {
        match self {
            Self::Live(company) | Self::MergedInto(company) => Some(company),
            Self::Gone => None,
        }
    }
}

/// The calls some company look-ups made ([`look_up_companies_counted`]): a dry run plans them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LookUpCalls {
    /// Batch reads.
    pub(crate) reads: u64,
    /// Reads of one id on its own.
    pub(crate) gets: u64,
}

impl LookUpCalls {
    /// Counts one look-up that read `gets` ids on their own.
    pub(crate) fn add(&mut self, gets: u64) {
        self.reads += 1;
        self.gets += gets;
    }

    /// Adds `more`.
    pub(crate) fn merge(&mut self, more: LookUpCalls) {
        self.reads += more.reads;
        self.gets += more.gets;
    }

    /// Counts them in `plan` (`batch_read`, `get`).
    pub(crate) fn plan(&self, plan: &mut crate::jobs::model::Plan) {
        plan.call("batch_read", self.reads);
        plan.call("get", self.gets);
    }
}

/// Asks HubSpot about `ids` (at most 100): one batch read, plus one `GET` per id the batch
/// read left out without a word. `context` names the step in an error.
pub(crate) async fn look_up_companies(
    client: &HubSpotClient,
    ids: &[CompanyId],
    context: &str,
) -> Result<HashMap<CompanyId, CompanyFate>, RunError> {
    Ok(look_up_companies_counted(client, ids, context).await?.0)
}

/// [`look_up_companies`], with how many ids it read on their own (a dry run plans those calls).
pub(crate) async fn look_up_companies_counted(
    client: &HubSpotClient,
    ids: &[CompanyId],
    context: &str,
) -> Result<(HashMap<CompanyId, CompanyFate>, u64), RunError> {
    let (fates, alone) = look_up_companies_noting(client, ids, context).await?;
    Ok((fates, alone.len() as u64))
}

/// [`look_up_companies`], with the ids it read on their own (the batch read left them out
/// without a word): a dry full pull plans those reads for when its association phase meets
/// the ids again.
pub(crate) async fn look_up_companies_noting(
    client: &HubSpotClient,
    ids: &[CompanyId],
    context: &str,
) -> Result<(HashMap<CompanyId, CompanyFate>, HashSet<CompanyId>), RunError> {
    if ids.is_empty() {
        return Ok((HashMap::new(), HashSet::new()));
    }
    let raw: Vec<String> = ids.iter().map(|id| id.0.clone()).collect();
    let batch = Batch::new(raw)
        .map_err(|e| RunError::Fatal(RunFailure::caused_by("company page too large", e)))?;
    let read = client
        .batch_read_companies(&batch, None, &read_properties())
        .await
        .map_err(|e| company_error(context, e))?;
    let mut fates: HashMap<CompanyId, CompanyFate> = HashMap::new();
    for id in read.missing {
        fates.insert(CompanyId(id), CompanyFate::Gone);
    }
    for company in read.results {
        let fate = if company.archived {
            CompanyFate::Gone
        } else {
            CompanyFate::Live(company.clone())
        };
        fates.insert(company.id, fate);
    }
    let mut answered = HashMap::with_capacity(ids.len());
    for id in ids {
        let fate = match fates.get(id) {
            Some(fate) => fate.clone(),
            None => read_one(client, id, context).await?,
        };
        answered.insert(id.clone(), fate);
    }
    let alone = ids
        .iter()
        .filter(|id| !fates.contains_key(*id))
        .cloned()
        .collect();
    Ok((answered, alone))
}

/// Reads one id on its own (after a batch read or update left it out without a word).
pub(crate) async fn read_one(
    client: &HubSpotClient,
    id: &CompanyId,
    context: &str,
) -> Result<CompanyFate, RunError> {
    match client.get_company(&id.0, None, &read_properties()).await {
        Ok(company) if company.archived => Ok(CompanyFate::Gone),
        Ok(company) if company.id == *id => Ok(CompanyFate::Live(company)),
        Ok(survivor) => Ok(CompanyFate::MergedInto(survivor)),
        Err(HubSpotError::NotFound { .. }) => Ok(CompanyFate::Gone),
        Err(e) => Err(company_error(context, e)),
    }
}
