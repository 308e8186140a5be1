//! The HubSpot side of a mapped table, whichever object it maps: one set of calls (list,
//! search, batch read, create and update, and the reads that tell a deleted id from a
//! merged one) that the push and the pull make alike for contacts and companies.
//!
//! HubSpot answers both objects with the same record shape (`SimplePublicObject`: an id,
//! properties, times, the archived flag); the client's contact type is that shape, so a
//! company travels through the engine in it, its id as the `hs_object_id` HubSpot gives every
//! object. Only the calls differ, and the property that holds the last modification time.

use std::collections::HashMap;

use crate::hubspot::{
    Batch, BatchOutcome, BatchReadOutcome, Company, Contact, HubSpotClient, HubSpotError,
    IndexedResult, ListObjects, MAX_PAGE_LIMIT, ObjectCreate, ObjectType, ObjectUpdate, Page,
    SearchPage, SearchRequest,
};
use crate::ids::{CompanyId, HsObjectId};
use crate::jobs::RunError;
use crate::sync::companies::lookup::{CompanyFate, look_up_companies_counted};
use crate::sync::hubspot_error;
use crate::sync::lookup::{self, Fate};

/// A HubSpot record of the mapped object, in the shape HubSpot sends for every object.
pub(crate) type Record = Contact;

/// The HubSpot calls of one mapped object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Remote<'a> {
    client: &'a HubSpotClient,
    object: ObjectType,
}

/// The property holding the last modification time of `object`'s records.
pub(crate) fn modified_property(object: ObjectType) -> &'static str {
    match object {
        ObjectType::Contacts => crate::sync::pull::MODIFIED,
        ObjectType::Companies => "hs_lastmodifieddate",
    }
}

/// A company in the engine's record shape.
pub(crate) fn record(company: Company) -> Record {
    Record {
        id: HsObjectId(company.id.0),
        properties: company.properties,
        created_at: company.created_at,
        updated_at: company.updated_at,
        archived: company.archived,
        archived_at: company.archived_at,
        object_write_trace_id: company.object_write_trace_id,
    }
}

fn records(outcome: BatchOutcome<Company>) -> BatchOutcome<Record> {
    BatchOutcome {
        results: outcome
            .results
            .into_iter()
            .map(|r| IndexedResult {
                input_index: r.input_index,
                record: record(r.record),
            })
            .collect(),
        errors: outcome.errors,
    }
}

impl<'a> Remote<'a> {
    /// The calls of `object` through `client`.
    pub(crate) fn new(client: &'a HubSpotClient, object: ObjectType) -> Self {
        Self { client, object }
    }

    /// The object, plural, for messages.
    pub(crate) fn nouns(&self) -> &'static str {
        match self.object {
            ObjectType::Contacts => "contacts",
            ObjectType::Companies => "companies",
        }
    }

    /// The property holding a record's last modification time, which incremental pulls search
    /// and sort by.
    pub(crate) fn modified(&self) -> &'static str {
        modified_property(self.object)
    }

    /// One page of the full list (100 records).
    pub(crate) async fn list(
        &self,
        after: Option<String>,
        properties: Vec<String>,
    ) -> Result<Page<Record>, HubSpotError> {
        let params = ListObjects {
            limit: MAX_PAGE_LIMIT,
            after,
            properties,
            archived: false,
        };
        match self.object {
            ObjectType::Contacts => self.client.list_contacts(&params).await,
            ObjectType::Companies => {
                let page = self.client.list_companies(&params).await?;
                Ok(Page {
                    results: page.results.into_iter().map(record).collect(),
                    next_after: page.next_after,
                })
            }
        }
    }

    /// One page of a search.
    pub(crate) async fn search(
        &self,
        request: &SearchRequest,
    ) -> Result<SearchPage<Record>, HubSpotError> {
        match self.object {
            ObjectType::Contacts => self.client.search_contacts(request).await,
            ObjectType::Companies => {
                let page = self.client.search_companies(request).await?;
                Ok(SearchPage {
                    total: page.total,
                    results: page.results.into_iter().map(record).collect(),
                    next_after: page.next_after,
                })
            }
        }
    }

    /// A batch read by id, or by the unique property `id_property`.
    pub(crate) async fn batch_read(
        &self,
        ids: &Batch<String>,
        id_property: Option<&str>,
        properties: &[String],
    ) -> Result<BatchReadOutcome<Record>, HubSpotError> {
        match self.object {
            ObjectType::Contacts => self.client.batch_read(ids, id_property, properties).await,
            ObjectType::Companies => {
                let read = self
                    .client
                    .batch_read_companies(ids, id_property, properties)
                    .await?;
                Ok(BatchReadOutcome {
                    results: read.results.into_iter().map(record).collect(),
                    missing: read.missing,
                    errors: read.errors,
                })
            }
        }
    }

    /// A batch create.
    pub(crate) async fn batch_create(
        &self,
        inputs: &Batch<ObjectCreate>,
    ) -> Result<BatchOutcome<Record>, HubSpotError> {
        match self.object {
            ObjectType::Contacts => self.client.batch_create(inputs).await,
            ObjectType::Companies => Ok(records(self.client.batch_create_companies(inputs).await?)),
        }
    }

    /// A batch update by id.
    pub(crate) async fn batch_update(
        &self,
        inputs: &Batch<ObjectUpdate>,
    ) -> Result<BatchOutcome<Record>, HubSpotError> {
        match self.object {
            ObjectType::Contacts => self.client.batch_update(inputs).await,
            ObjectType::Companies => Ok(records(self.client.batch_update_companies(inputs).await?)),
        }
    }

    /// What HubSpot says about `ids` (at most 100): live, merged into another record, or
    /// gone. One batch read, plus one read per id it leaves out without a word (silence is
    /// not deletion); `context` says what the read was for in errors. Also answers how many ids
    /// it read on their own (a dry run plans those calls).
    pub(crate) async fn look_up_counted(
        &self,
        ids: &[HsObjectId],
        context: &str,
    ) -> Result<(HashMap<HsObjectId, Fate>, u64), RunError> {
        match self.object {
            ObjectType::Contacts => lookup::look_up_counted(self.client, ids)
                .await
                .map_err(|e| hubspot_error(context, e)),
            ObjectType::Companies => {
                let ids: Vec<CompanyId> = ids.iter().map(|id| CompanyId(id.0.clone())).collect();
                let (fates, gets) = look_up_companies_counted(self.client, &ids, context).await?;
                let fates = fates
                    .into_iter()
                    .map(|(id, fate)| {
                        let fate = match fate {
                            CompanyFate::Live(c) => Fate::Live(record(c)),
                            CompanyFate::MergedInto(c) => Fate::MergedInto(record(c)),
                            CompanyFate::Gone => Fate::Gone,
                        };
                        (HsObjectId(id.0), fate)
                    })
                    .collect();
                Ok((fates, gets))
            }
        }
    }
}
