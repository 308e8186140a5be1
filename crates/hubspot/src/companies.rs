//! The typed calls on companies (`/crm/v3/objects/companies`): page, single, batch, search,
//! merge. Companies have no unique key of HubSpot's own: `domain` is shared freely, so batch
//! writes go by record id or by a unique custom property, and matching by domain is a search.

use super::batch::{
    Batch, BatchItemError, BatchOutcome, BatchReadOutcome, RawBatchResponse, TraceIds, map_outcome,
};
use super::client::HubSpotClient;
use super::contacts::{empty_outcome, with_values};
use super::error::HubSpotError;
use super::models::{
    Collection, Company, CompanyCreate, CompanyUpdate, CompanyUpsert, ListCompanies,
    MAX_PAGE_LIMIT, MAX_SEARCH_LIMIT, Page, SearchPage, SearchRequest, UpsertedCompany,
};
use super::retry::Operation;
use crate::ids::CompanyId;
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeMap;

const COMPANIES: &str = "/crm/v3/objects/companies";

impl HubSpotClient {
    /// One page of companies (`GET /crm/v3/objects/companies`, 100 per page unless asked less).
    pub async fn list_companies(
        &self,
        params: &ListCompanies,
    ) -> Result<Page<Company>, HubSpotError> {
        let mut url = self.endpoint(COMPANIES, None)?;
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
        let page: Collection<Company> = self
            .call_json(self.get(Operation::ListCompanies, url))
            .await?;
        Ok(page.into_page())
    }

    /// One company by record id, or by a unique custom property (`id_property`).
    pub async fn get_company(
        &self,
        id: &str,
        id_property: Option<&str>,
        properties: &[String],
    ) -> Result<Company, HubSpotError> {
        let mut url = self.endpoint(COMPANIES, Some(id))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(id_property) = id_property {
                query.append_pair("idProperty", id_property);
            }
            if !properties.is_empty() {
                query.append_pair("properties", &properties.join(","));
            }
        }
        self.call_json(self.get(Operation::GetCompany, url)).await
    }

    /// Creates one company (201). HubSpot never refuses a domain that exists: it makes a
    /// second company. Not retried after a lost answer ([`HubSpotError::Ambiguous`]).
    pub async fn create_company(&self, input: &CompanyCreate) -> Result<Company, HubSpotError> {
        let body = json!({ "properties": input.properties, "associations": [] });
        let call = self.post(
            Operation::CreateCompany,
            self.endpoint(COMPANIES, None)?,
            &body,
        )?;
        self.call_json(call).await
    }

    /// Changes properties of one company (`PATCH`; an empty string clears a value).
    pub async fn update_company(
        &self,
        id: &CompanyId,
        properties: &BTreeMap<String, String>,
    ) -> Result<Company, HubSpotError> {
        let body = json!({ "properties": properties });
        let mut call = self.post(
            Operation::UpdateCompany,
            self.endpoint(COMPANIES, Some(&id.0))?,
            &body,
        )?;
        call.method = Method::PATCH;
        self.call_json(call).await
    }

    /// Moves one company to the recycle bin (204, also for unknown ids).
    pub async fn archive_company(&self, id: &CompanyId) -> Result<(), HubSpotError> {
        let mut call = self.get(
            Operation::ArchiveCompany,
            self.endpoint(COMPANIES, Some(&id.0))?,
        );
        call.method = Method::DELETE;
        self.call_empty(call).await
    }

    /// Merges `merged` into `primary`; answers the result, whose id may be new (HubSpot's
    /// merge webhook names it `newObjectId`): read the returned id, never assume `primary`.
    /// Not retried after a lost answer.
    pub async fn merge_companies(
        &self,
        primary: &CompanyId,
        merged: &CompanyId,
    ) -> Result<Company, HubSpotError> {
        let body = json!({ "primaryObjectId": primary.0, "objectIdToMerge": merged.0 });
        let call = self.post(
            Operation::MergeCompanies,
            self.endpoint(&format!("{COMPANIES}/merge"), None)?,
            &body,
        )?;
        self.call_json(call).await
    }

    /// Reads up to 100 companies by id or by a unique custom property (`id_property`; not
    /// `domain`). Ids HubSpot does not find are listed in `missing`, not an error.
    pub async fn batch_read_companies(
        &self,
        ids: &Batch<String>,
        id_property: Option<&str>,
        properties: &[String],
    ) -> Result<BatchReadOutcome<Company>, HubSpotError> {
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
            Operation::BatchReadCompanies,
            self.endpoint(&format!("{COMPANIES}/batch/read"), None)?,
            &body,
        )?;
        let raw: RawBatchResponse<Company> = self.call_json(call).await?;
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

    /// Creates up to 100 companies; each input carries a unique `objectWriteTraceId`, so an
    /// invalid input fails alone (207). A unique custom value that exists fails as
    /// [`HubSpotError::Conflict`]. Not retried after a lost answer: [`HubSpotError::Ambiguous`]
    /// means "look the companies up by their unique key before trying again".
    pub async fn batch_create_companies(
        &self,
        inputs: &Batch<CompanyCreate>,
    ) -> Result<BatchOutcome<Company>, HubSpotError> {
        let traces = TraceIds::new(inputs.len());
        let items = inputs.items().iter().enumerate().map(|(i, input)| {
            json!({ "properties": input.properties, "associations": [], "objectWriteTraceId": traces.id(i) })
        });
        let outcome = self
            .company_batch_write(
                Operation::BatchCreateCompanies,
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

    /// Updates up to 100 companies by id (or by a unique custom `id_property`). Missing ids
    /// and invalid values come back as per-input errors.
    pub async fn batch_update_companies(
        &self,
        inputs: &Batch<CompanyUpdate>,
    ) -> Result<BatchOutcome<Company>, HubSpotError> {
        let traces = TraceIds::new(inputs.len());
        let items = inputs.items().iter().enumerate().map(|(i, input)| {
            let mut item = json!({ "id": input.id, "properties": input.properties, "objectWriteTraceId": traces.id(i) });
            if let Some(id_property) = &input.id_property {
                item["idProperty"] = json!(id_property);
            }
            item
        });
        let ids: Vec<String> = inputs.items().iter().map(|i| i.id.clone()).collect();
        let outcome = self
            .company_batch_write(
                Operation::BatchUpdateCompanies,
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

    /// Creates or updates up to 100 companies found by a unique custom property; each result
    /// says whether it was created (`new`).
    pub async fn batch_upsert_companies(
        &self,
        inputs: &Batch<CompanyUpsert>,
    ) -> Result<BatchOutcome<UpsertedCompany>, HubSpotError> {
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
        let ids: Vec<String> = inputs.items().iter().map(|i| i.id.clone()).collect();
        let url = self.endpoint(&format!("{COMPANIES}/batch/upsert"), None)?;
        let call = self.post(
            Operation::BatchUpsertCompanies,
            url,
            &json!({ "inputs": items }),
        )?;
        let raw: RawBatchResponse<UpsertedCompany> = self.call_json(call).await?;
        let outcome = map_outcome(raw, &traces, &ids, |r| {
            r.company.object_write_trace_id.as_deref()
        });
        Ok(with_values(outcome, |i| {
            inputs.items().get(i).map(|input| &input.properties)
        }))
    }

    /// Moves up to 100 companies to the recycle bin (204).
    pub async fn batch_archive_companies(
        &self,
        ids: &Batch<CompanyId>,
    ) -> Result<(), HubSpotError> {
        if ids.is_empty() {
            return Ok(());
        }
        let body = json!({ "inputs": ids.items().iter().map(|id| json!({ "id": id.0 })).collect::<Vec<_>>() });
        let call = self.post(
            Operation::BatchArchiveCompanies,
            self.endpoint(&format!("{COMPANIES}/batch/archive"), None)?,
            &body,
        )?;
        self.call_empty(call).await
    }

    /// One page of a company search (at most 200 per page, 10,000 per query; counts against
    /// the search budget only). See [`SearchRequest::companies_with_domains`] and
    /// [`SearchRequest::modified_since`]. HubSpot's index lags writes by a few seconds.
    pub async fn search_companies(
        &self,
        request: &SearchRequest,
    ) -> Result<SearchPage<Company>, HubSpotError> {
        let mut request = request.clone();
        request.limit = request.limit.clamp(1, MAX_SEARCH_LIMIT);
        let call = self.post(
            Operation::SearchCompanies,
            self.endpoint(&format!("{COMPANIES}/search"), None)?,
            &request,
        )?;
        let page: Collection<Company> = self.call_json(call).await?;
        let total = page.total.ok_or_else(|| HubSpotError::UnexpectedResponse {
            operation: Operation::SearchCompanies,
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

    async fn company_batch_write(
        &self,
        op: Operation,
        action: &str,
        items: Vec<serde_json::Value>,
        traces: &TraceIds,
        ids: &[String],
    ) -> Result<BatchOutcome<Company>, HubSpotError> {
        if items.is_empty() {
            return Ok(empty_outcome());
        }
        let url = self.endpoint(&format!("{COMPANIES}/batch/{action}"), None)?;
        let call = self.post(op, url, &json!({ "inputs": items }))?;
        let raw: RawBatchResponse<Company> = self.call_json(call).await?;
        Ok(map_outcome(raw, traces, ids, |c| {
            c.object_write_trace_id.as_deref()
        }))
    }
}
