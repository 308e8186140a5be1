//! The properties API of any object type: property definitions and property groups (e.g. a
//! `crm_sync` group that holds the properties the sync creates).

use super::client::HubSpotClient;
use super::error::HubSpotError;
use super::models::{ObjectType, Property, PropertyCreate, PropertyGroup, PropertyGroupCreate};
use super::retry::Operation;

impl HubSpotClient {
    /// Creates a property of `object` (201). A name that exists is [`HubSpotError::Conflict`]
    /// (`OBJECT_ALREADY_EXISTS`), which also makes a repeated create harmless.
    pub async fn create_object_property(
        &self,
        object: ObjectType,
        property: &PropertyCreate,
    ) -> Result<Property, HubSpotError> {
        let call = self.post(
            Operation::CreateProperty,
            self.endpoint(&properties_path(object), None)?,
            property,
        )?;
        self.call_json(call).await
    }

    /// Reads a property of `object`; [`HubSpotError::NotFound`] when it does not exist.
    pub async fn get_object_property(
        &self,
        object: ObjectType,
        name: &str,
    ) -> Result<Property, HubSpotError> {
        let url = self.endpoint(&properties_path(object), Some(name))?;
        self.call_json(self.get(Operation::GetProperty, url)).await
    }

    /// Creates a property group of `object` (201); a group of that name is
    /// [`HubSpotError::Conflict`], so a repeated create is harmless.
    pub async fn create_property_group(
        &self,
        object: ObjectType,
        group: &PropertyGroupCreate,
    ) -> Result<PropertyGroup, HubSpotError> {
        let url = self.endpoint(&format!("{}/groups", properties_path(object)), None)?;
        let call = self.post(Operation::CreatePropertyGroup, url, group)?;
        self.call_json(call).await
    }

    /// Reads a property group of `object`; [`HubSpotError::NotFound`] when it does not exist.
    pub async fn get_property_group(
        &self,
        object: ObjectType,
        name: &str,
    ) -> Result<PropertyGroup, HubSpotError> {
        let url = self.endpoint(&format!("{}/groups", properties_path(object)), Some(name))?;
        self.call_json(self.get(Operation::GetPropertyGroup, url))
            .await
    }
}

fn properties_path(object: ObjectType) -> String {
    format!("/crm/v3/properties/{}", object.path_name())
}
