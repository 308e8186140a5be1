//! The typed calls: contacts (page, single, batch, search), properties and account info.

use super::batch::{
    Batch, BatchItemError, BatchOutcome, BatchReadOutcome, RawBatchResponse, TraceIds, map_outcome,
};
use super::client::{Call, HubSpotClient};
use super::error::HubSpotError;
use super::models::{
    AccountDetails, ApiUsage, Collection, Contact, ContactCreate, ContactUpdate, ContactUpsert,
    ListContacts, MAX_PAGE_LIMIT, MAX_SEARCH_LIMIT, ObjectType, Page, Property, PropertyCreate,
    SearchPage, SearchRequest, UpsertedContact,
};
use super::retry::Operation;
use crate::ids::HsObjectId;
use reqwest::Method;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;

const CONTACTS: &str = "/crm/v3/objects/contacts";

impl HubSpotClient {
    /// One page of contacts (`GET /crm/v3/objects/contacts`, 100 per page unless asked less).
    pub async fn list_contacts(
        &self,
        params: &ListContacts,
    ) -> Result<Page<Contact>, HubSpotError> {
        let mut url = self.endpoint(CONTACTS, None)?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &params.limit.clamp(1, MAX_PAGE_LIMIT).to_string());
            if let Some(after) = &params.after {
                query.append_pair("after", after);
            }
            if !params.properties.is_empty() {
                query.append_pair("properties", &params.properties.join(","));
            }
            if params.archived {
                query.append_pair("archived", "true");
            }
        }
        let page: Collection<Contact> = self
            .call_json(self.get(Operation::ListContacts, url))
            .await?;
        Ok(page.into_page())
    }

    /// One contact by record id, or by a unique property (`id_property`, e.g. `email`).
    pub async fn get_contact(
        &self,
        id: &str,
        id_property: Option<&str>,
        properties: &[String],
    ) -> Result<Contact, HubSpotError> {
        let mut url = self.endpoint(CONTACTS, Some(id))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(id_property) = id_property {
                query.append_pair("idProperty", id_property);
            }
            if !properties.is_empty() {
                query.append_pair("properties", &properties.join(","));
            }
        }
        self.call_json(self.get(Operation::GetContact, url)).await
    }

    /// Creates one contact (201). Not retried after a lost answer: see [`HubSpotError::Ambiguous`].
    pub async fn create_contact(&self, input: &ContactCreate) -> Result<Contact, HubSpotError> {
        let body = json!({ "properties": input.properties, "associations": [] });
        let call = self.post(
            Operation::CreateContact,
            self.endpoint(CONTACTS, None)?,
            &body,
        )?;
        self.call_json(call).await
    }

    /// Changes properties of one contact (`PATCH`; an empty string clears a value).
    pub async fn update_contact(
        &self,
        id: &HsObjectId,
        properties: &BTreeMap<String, String>,
    ) -> Result<Contact, HubSpotError> {
        let body = json!({ "properties": properties });
        let mut call = self.post(
            Operation::UpdateContact,
            self.endpoint(CONTACTS, Some(&id.0))?,
            &body,
        )?;
        call.method = Method::PATCH;
        self.call_json(call).await
    }

    /// Moves one contact to the recycle bin (204; HubSpot also answers 204 for unknown ids).
    pub async fn archive_contact(&self, id: &HsObjectId) -> Result<(), HubSpotError> {
        let mut call = self.get(
            Operation::ArchiveContact,
            self.endpoint(CONTACTS, Some(&id.0))?,
        );
        call.method = Method::DELETE;
        self.call_empty(call).await
    }

    /// Merges `merged` into `primary`; answers the surviving record. Not retried after a lost answer.
    pub async fn merge_contacts(
        &self,
        primary: &HsObjectId,
        merged: &HsObjectId,
    ) -> Result<Contact, HubSpotError> {
        let body = json!({ "primaryObjectId": primary.0, "objectIdToMerge": merged.0 });
        let call = self.post(
            Operation::MergeContacts,
            self.endpoint(&format!("{CONTACTS}/merge"), None)?,
            &body,
        )?;
        self.call_json(call).await
    }

    /// Reads up to 100 contacts by id or by a unique property (`id_property`, e.g. `email`).
    /// Ids HubSpot does not find are listed in `missing` (its 207), not an error.
    pub async fn batch_read(
        &self,
        ids: &Batch<String>,
        id_property: Option<&str>,
        properties: &[String],
    ) -> Result<BatchReadOutcome, HubSpotError> {
        if ids.is_empty() {
            return Ok(BatchReadOutcome {
                results: Vec::new(),
                missing: Vec::new(),
                errors: Vec::new(),
            });
        }
        let mut body = json!({
            "inputs": ids.items().iter().map(|id| json!({ "id": id })).collect::<Vec<_>>(),
            "properties": properties,
            "propertiesWithHistory": [],
        });
        if let Some(id_property) = id_property {
            body["idProperty"] = json!(id_property);
        }
        let call = self.post(
            Operation::BatchRead,
            self.endpoint(&format!("{CONTACTS}/batch/read"), None)?,
            &body,
        )?;
        let raw: RawBatchResponse<Contact> = self.call_json(call).await?;
        // Trace ids are a write feature; reads map errors by the ids in their context.
        let outcome = map_outcome(raw, &TraceIds::new(0), ids.items(), |_| None);
        let (not_found, errors): (Vec<BatchItemError>, Vec<BatchItemError>) = outcome
            .errors
            .into_iter()
            .partition(|e| matches!(e.error, HubSpotError::NotFound { .. }));
        let missing = not_found
            .into_iter()
            .flat_map(|e| match e.error {
                HubSpotError::NotFound { ids, .. } => ids,
                _ => Vec::new(),
            })
            .collect();
        Ok(BatchReadOutcome {
            results: outcome.results.into_iter().map(|r| r.record).collect(),
            missing,
            errors,
        })
    }

    /// Creates up to 100 contacts. Each input carries a unique `objectWriteTraceId`, so invalid
    /// inputs come back as per-input errors (207) while valid ones are created. An email that
    /// exists fails the whole request with [`HubSpotError::Conflict`]. Not retried after a lost
    /// answer: [`HubSpotError::Ambiguous`] means "re-read by email before trying again".
    pub async fn batch_create(
        &self,
        inputs: &Batch<ContactCreate>,
    ) -> Result<BatchOutcome<Contact>, HubSpotError> {
        let traces = TraceIds::new(inputs.len());
        let items = inputs.items().iter().enumerate().map(|(i, input)| {
            json!({ "properties": input.properties, "associations": [], "objectWriteTraceId": traces.id(i) })
        });
        let outcome = self
            .batch_write(
                Operation::BatchCreate,
                "create",
                items.collect(),
                &traces,
                &[],
            )
            .await?;
        Ok(with_values(outcome, |i| {
            inputs.items().get(i).map(|input| &input.properties)
        }))
    }

    /// Updates up to 100 contacts by id (or by a unique `id_property`). Missing ids and invalid
    /// values come back as per-input errors.
    pub async fn batch_update(
        &self,
        inputs: &Batch<ContactUpdate>,
    ) -> Result<BatchOutcome<Contact>, HubSpotError> {
        let traces = TraceIds::new(inputs.len());
        let items = inputs.items().iter().enumerate().map(|(i, input)| {
            let mut item = json!({ "id": input.id, "properties": input.properties, "objectWriteTraceId": traces.id(i) });
            if let Some(id_property) = &input.id_property {
                item["idProperty"] = json!(id_property);
            }
            item
        });
        let ids: Vec<String> = inputs
            .items()
            .iter()
            .map(|input| input.id.clone())
            .collect();
        let outcome = self
            .batch_write(
                Operation::BatchUpdate,
                "update",
                items.collect(),
                &traces,
                &ids,
            )
            .await?;
        Ok(with_values(outcome, |i| {
            inputs.items().get(i).map(|input| &input.properties)
        }))
    }

    /// Creates or updates up to 100 contacts found by a unique property (usually `email`);
    /// each result says whether it was created (`new`).
    pub async fn batch_upsert(
        &self,
        inputs: &Batch<ContactUpsert>,
    ) -> Result<BatchOutcome<UpsertedContact>, HubSpotError> {
        if inputs.is_empty() {
            return Ok(empty_outcome());
        }
        let traces = TraceIds::new(inputs.len());
        let items: Vec<_> = inputs
            .items()
            .iter()
            .enumerate()
            .map(|(i, input)| {
                json!({ "id": input.id, "idProperty": input.id_property, "properties": input.properties, "objectWriteTraceId": traces.id(i) })
            })
            .collect();
        let ids: Vec<String> = inputs
            .items()
            .iter()
            .map(|input| input.id.clone())
            .collect();
        let url = self.endpoint(&format!("{CONTACTS}/batch/upsert"), None)?;
        let call = self.post(Operation::BatchUpsert, url, &json!({ "inputs": items }))?;
        let raw: RawBatchResponse<UpsertedContact> = self.call_json(call).await?;
        let outcome = map_outcome(raw, &traces, &ids, |r| {
            r.contact.object_write_trace_id.as_deref()
        });
        Ok(with_values(outcome, |i| {
            inputs.items().get(i).map(|input| &input.properties)
        }))
    }

    /// Moves up to 100 contacts to the recycle bin (204).
    pub async fn batch_archive(&self, ids: &Batch<HsObjectId>) -> Result<(), HubSpotError> {
        if ids.is_empty() {
            return Ok(());
        }
        let body = json!({ "inputs": ids.items().iter().map(|id| json!({ "id": id.0 })).collect::<Vec<_>>() });
        let call = self.post(
            Operation::BatchArchive,
            self.endpoint(&format!("{CONTACTS}/batch/archive"), None)?,
            &body,
        )?;
        self.call_empty(call).await
    }

    /// One page of a search (at most 200 per page, 10,000 per query; counts against the
    /// search budget only). HubSpot's index lags writes by a few seconds.
    pub async fn search_contacts(
        &self,
        request: &SearchRequest,
    ) -> Result<SearchPage, HubSpotError> {
        let mut request = request.clone();
        request.limit = request.limit.clamp(1, MAX_SEARCH_LIMIT);
        let call = self.post(
            Operation::Search,
            self.endpoint(&format!("{CONTACTS}/search"), None)?,
            &request,
        )?;
        let page: Collection<Contact> = self.call_json(call).await?;
        let total = page.total.ok_or_else(|| HubSpotError::UnexpectedResponse {
            operation: Operation::Search,
            status: 200,
            problem: "the search answer has no total".to_owned(),
        })?;
        let page = page.into_page();
        Ok(SearchPage {
            total,
            results: page.results,
            next_after: page.next_after,
        })
    }

    /// Creates a contact property (201). A name that exists is [`HubSpotError::Conflict`]
    /// (`OBJECT_ALREADY_EXISTS`), which also makes a repeated create harmless.
    pub async fn create_property(
        &self,
        property: &PropertyCreate,
    ) -> Result<Property, HubSpotError> {
        self.create_object_property(ObjectType::Contacts, property)
            .await
    }

    /// Reads a contact property's definition; [`HubSpotError::NotFound`] when it does not exist.
    pub async fn get_property(&self, name: &str) -> Result<Property, HubSpotError> {
        self.get_object_property(ObjectType::Contacts, name).await
    }

    /// The account's details (`GET /account-info/v3/details`): its portal id, time zone...
    pub async fn account_details(&self) -> Result<AccountDetails, HubSpotError> {
        let url = self.endpoint("/account-info/v3/details", None)?;
        self.call_json(self.get(Operation::AccountDetails, url))
            .await
    }

    /// Today's API usage of the account's private apps.
    pub async fn daily_usage(&self) -> Result<Vec<ApiUsage>, HubSpotError> {
        let url = self.endpoint("/account-info/v3/api-usage/daily/private-apps", None)?;
        let usage: Collection<ApiUsage> =
            self.call_json(self.get(Operation::DailyUsage, url)).await?;
        Ok(usage.results)
    }

    async fn batch_write(
        &self,
        op: Operation,
        action: &str,
        items: Vec<serde_json::Value>,
        traces: &TraceIds,
        ids: &[String],
    ) -> Result<BatchOutcome<Contact>, HubSpotError> {
        if items.is_empty() {
            return Ok(empty_outcome());
        }
        let url = self.endpoint(&format!("{CONTACTS}/batch/{action}"), None)?;
        let call = self.post(op, url, &json!({ "inputs": items }))?;
        let raw: RawBatchResponse<Contact> = self.call_json(call).await?;
        Ok(map_outcome(raw, traces, ids, |c| {
            c.object_write_trace_id.as_deref()
        }))
    }

    pub(crate) fn get(&self, op: Operation, url: url::Url) -> Call {
        Call {
            op,
            method: Method::GET,
            url,
            body: None,
            token: None,
        }
    }

    pub(crate) fn post(
        &self,
        op: Operation,
        url: url::Url,
        body: &impl Serialize,
    ) -> Result<Call, HubSpotError> {
        let body = serde_json::to_vec(body).map_err(|e| {
            HubSpotError::InvalidRequest(format!("cannot encode the {op} body: {e}"))
        })?;
        Ok(Call {
            op,
            method: Method::POST,
            url,
            body: Some(body),
            token: None,
        })
    }
}

pub(crate) fn empty_outcome<R>() -> BatchOutcome<R> {
    BatchOutcome {
        results: Vec::new(),
        errors: Vec::new(),
    }
}

/// Fills the refused value of a validation error from the input it concerns, when HubSpot's
/// message names only the property.
pub(crate) fn with_values<'a, R>(
    mut outcome: BatchOutcome<R>,
    properties_of: impl Fn(usize) -> Option<&'a BTreeMap<String, String>>,
) -> BatchOutcome<R> {
    for item in &mut outcome.errors {
        let [index] = item.input_indices[..] else {
            continue;
        };
        if let HubSpotError::Validation { invalid, .. } = &mut item.error {
            for property in invalid.iter_mut().filter(|p| p.value.is_none()) {
                property.value =
                    properties_of(index).and_then(|props| props.get(&property.name).cloned());
            }
        }
    }
    outcome
}
