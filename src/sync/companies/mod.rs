//! Companies: crm-sync's own `companies` table ↔ HubSpot companies.
//!
//! HubSpot has no unique key for a company of its own: `domain` is shared freely (a create
//! with a domain that exists makes a second company) and HubSpot refuses it as an
//! `idProperty`. So a company's identity is its HubSpot id once linked, plus crm-sync's own
//! unique external-key property [`COMPANY_KEY`] (`<installation>:<local id>`, namespaced per
//! database like the contacts' key, [`crate::sync::keys`]). Domain search is only ever used
//! by push's `link` mode to find a company someone else made, and only an exact single match
//! links ([`push`]); pull matches by HubSpot id, then key, then a unique local domain
//! ([`pull`]).

pub(crate) mod lookup;
pub mod pull;
pub mod push;

use super::hubspot_error;
use crate::hubspot::{
    Company, HubSpotClient, HubSpotError, ObjectType, PropertyCreate, SearchRequest,
};
use crate::jobs::{RunError, RunFailure};
use std::collections::HashMap;

/// The unique custom company property that holds the external key in HubSpot. It makes a
/// retried create find the company an earlier attempt made (by key, not by search, which lags
/// writes) and so never create it twice.
pub const COMPANY_KEY: &str = "crm_sync_company_id";

/// The properties every company read asks for.
pub(crate) fn read_properties() -> Vec<String> {
    ["name", "domain", "hs_merged_object_ids", COMPANY_KEY]
        .map(str::to_owned)
        .to_vec()
}

/// Makes sure the company property [`COMPANY_KEY`] exists with unique values: reads it,
/// creates it when HubSpot has none (a 409 means another worker created it meanwhile).
pub(crate) async fn ensure_key_property(client: &HubSpotClient) -> Result<(), RunError> {
    if key_property_exists(client).await? {
        Ok(())
    } else {
        create_key_property(client).await
    }
}

/// Whether the company property [`COMPANY_KEY`] exists, read without creating it; one without
/// unique values fails the job, since crm-sync cannot use it as its external key.
pub(crate) async fn key_property_exists(client: &HubSpotClient) -> Result<bool, RunError> {
    match client
        .get_object_property(ObjectType::Companies, COMPANY_KEY)
        .await
    {
        Ok(property) if property.has_unique_value => Ok(true),
        Ok(_) => Err(RunError::fatal(format!(
            "the HubSpot company property {COMPANY_KEY} exists but does not require unique \
             values, so crm-sync cannot use it as its external key; delete it in HubSpot \
             (Settings > Properties) and run the push again"
        ))),
        Err(HubSpotError::NotFound { .. }) => Ok(false),
        Err(e) => Err(company_error(
            "reading the company external key property",
            e,
        )),
    }
}

async fn create_key_property(client: &HubSpotClient) -> Result<(), RunError> {
    let definition = PropertyCreate {
        name: COMPANY_KEY.to_owned(),
        label: "crm-sync company id".to_owned(),
        property_type: "string".to_owned(),
        field_type: "text".to_owned(),
        group_name: "companyinformation".to_owned(),
        description: Some(
            "The id of the local company crm-sync pushes this company from. crm-sync uses it to \
             find the company again and never to create it twice; do not edit it."
                .to_owned(),
        ),
        has_unique_value: true,
        options: Vec::new(),
        form_field: Some(false),
    };
    match client
        .create_object_property(ObjectType::Companies, &definition)
        .await
    {
        Ok(_) | Err(HubSpotError::Conflict { .. }) => Ok(()),
        Err(e @ HubSpotError::Validation { .. }) => Err(RunError::fatal(format!(
            "HubSpot refused to create the company property {COMPANY_KEY} that crm-sync needs as \
             its external key (an account has at most 10 unique properties per object): {e}"
        ))),
        Err(e) => Err(company_error(
            "creating the company external key property",
            e,
        )),
    }
}

/// The live HubSpot companies of each of `domains` (keyed lower-case), every search page read
/// (`EQ`/`IN` on `domain`, on the search budget; `on_call` runs before each call). A domain
/// is not unique in HubSpot: a list may hold several companies.
pub(crate) async fn companies_by_domain(
    client: &HubSpotClient,
    domains: &[String],
    properties: Vec<String>,
    mut on_call: impl FnMut(),
) -> Result<HashMap<String, Vec<Company>>, RunError> {
    let mut found: HashMap<String, Vec<Company>> = HashMap::new();
    if domains.is_empty() {
        return Ok(found);
    }
    let mut request = SearchRequest::companies_with_domains(domains, properties);
    loop {
        on_call();
        let result = client
            .search_companies(&request)
            .await
            .map_err(|e| company_error("searching companies by domain", e))?;
        for company in result.results.into_iter().filter(|c| !c.archived) {
            if let Some(domain) = company.domain().map(|d| d.trim().to_lowercase()) {
                found.entry(domain).or_default().push(company);
            }
        }
        match result.next_after {
            Some(after) => request.after = Some(after),
            None => return Ok(found),
        }
    }
}

/// How a HubSpot failure ends a company run: as [`hubspot_error`] does, with the remedy named
/// when the connection lacks a company scope (an app installed before companies were synced
/// was granted contact scopes only): connect again to grant them.
pub(crate) fn company_error(context: &str, e: HubSpotError) -> RunError {
    if matches!(e, HubSpotError::Forbidden { .. }) {
        return RunError::Fatal(RunFailure::caused_by(
            format!(
                "{context}: the HubSpot connection lacks a company scope \
                 (crm.objects.companies.read/write, crm.schemas.companies.read/write); connect \
                 again (crm-sync connect, or /api/install) to grant them"
            ),
            e,
        ));
    }
    hubspot_error(context, e)
}

/// HubSpot's refusal of one company, as a person would want to read it.
pub(crate) fn refusal_reason(error: &HubSpotError) -> String {
    match error {
        HubSpotError::NotFound { details, .. } => {
            format!("HubSpot no longer has the company: {}", details.message)
        }
        other => match other.details() {
            Some(details) => format!("HubSpot refused the company: {details}"),
            None => format!("HubSpot refused the company: {other}"),
        },
    }
}

/// Runs company jobs: a push through [`push::CompanyPusher`], a pull through [`pull::run`].
/// The service's runner hands it the jobs whose object is companies; on its own (in tests and
/// tools) it runs any job as a company job.
#[derive(Debug, Clone)]
pub struct CompanyRunner {
    client: HubSpotClient,
    pull: super::PullSettings,
}

impl CompanyRunner {
    /// A runner calling HubSpot through `client`, with these pull settings.
    pub fn new(client: HubSpotClient, pull: super::PullSettings) -> Self {
        Self { client, pull }
    }

    /// The HubSpot client it calls (its metrics count the calls).
    pub fn client(&self) -> &HubSpotClient {
        &self.client
    }

    /// Runs `job` as a company job, from its checkpoint.
    pub async fn run_job(
        &self,
        job: &crate::jobs::model::Job,
        progress: &crate::jobs::Progress,
    ) -> Result<(), RunError> {
        use crate::jobs::model::JobAction;
        match job.spec.action {
            JobAction::Push { mode } if job.spec.dry_run => {
                push::CompanyPusher::new(self.client.clone())
                    .run_dry(mode, progress)
                    .await
            }
            JobAction::Push { mode } => {
                push::CompanyPusher::new(self.client.clone())
                    .run(mode, progress)
                    .await
            }
            JobAction::Pull { mode, incremental } => {
                pull::run(
                    &self.client,
                    &self.pull,
                    mode,
                    incremental,
                    job.spec.dry_run,
                    progress,
                )
                .await
            }
        }
    }
}

impl crate::jobs::JobRunner for CompanyRunner {
    fn run<'a>(
        &'a self,
        job: &'a crate::jobs::model::Job,
        progress: &'a crate::jobs::Progress,
    ) -> crate::jobs::BoxFuture<'a, Result<(), RunError>> {
        Box::pin(self.run_job(job, progress))
    }
}
