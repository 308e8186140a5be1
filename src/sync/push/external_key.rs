//! The external key property: created in HubSpot on first use, checked once per job run.

use super::errors::from_hubspot;
use super::outcome::EXTERNAL_KEY;
use crate::hubspot::{HubSpotClient, HubSpotError, PropertyCreate};
use crate::jobs::RunError;

/// Makes sure the contact property [`EXTERNAL_KEY`] exists with unique values: reads it, creates
/// it when HubSpot has none. A 409 on create means another worker created it meanwhile, which
/// is just as good.
pub(super) async fn ensure(client: &HubSpotClient) -> Result<(), RunError> {
    match client.get_property(EXTERNAL_KEY).await {
        Ok(property) if property.has_unique_value => Ok(()),
        Ok(_) => Err(not_unique()),
        Err(HubSpotError::NotFound { .. }) => create(client).await,
        Err(e) => Err(from_hubspot(e)),
    }
}

/// Whether the property exists, without creating it (a dry run's view: a missing property is
/// what the real run would create, so nothing can be found by it yet).
pub(super) async fn exists(client: &HubSpotClient) -> Result<bool, RunError> {
    match client.get_property(EXTERNAL_KEY).await {
        Ok(property) if property.has_unique_value => Ok(true),
        Ok(_) => Err(not_unique()),
        Err(HubSpotError::NotFound { .. }) => Ok(false),
        Err(e) => Err(from_hubspot(e)),
    }
}

async fn create(client: &HubSpotClient) -> Result<(), RunError> {
    let definition = PropertyCreate {
        name: EXTERNAL_KEY.to_owned(),
        label: "crm-sync contact id".to_owned(),
        property_type: "string".to_owned(),
        field_type: "text".to_owned(),
        group_name: "contactinformation".to_owned(),
        description: Some(
            "The id of the local contact crm-sync pushes this contact from. crm-sync uses it to \
             find the contact again and never to create it twice; do not edit it."
                .to_owned(),
        ),
        has_unique_value: true,
        options: Vec::new(),
        form_field: Some(false),
    };
    match client.create_property(&definition).await {
        Ok(_) | Err(HubSpotError::Conflict { .. }) => Ok(()),
        Err(e @ HubSpotError::Validation { .. }) => Err(RunError::fatal(format!(
            "HubSpot refused to create the contact property {EXTERNAL_KEY} that crm-sync needs as \
             its external key (an account has at most 10 unique properties per object): {e}"
        ))),
        Err(e) => Err(from_hubspot(e)),
    }
}

fn not_unique() -> RunError {
    RunError::fatal(format!(
        "the HubSpot contact property {EXTERNAL_KEY} exists but does not require unique values, \
         so crm-sync cannot use it as its external key; delete it in HubSpot (Settings > \
         Properties) and run the push again"
    ))
}
