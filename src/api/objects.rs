//! `GET /api/objects`: the object mappings in effect (`[[sync.objects]]` and the built-in
//! contacts default), as checked against the database at start-up. Protected by the bearer
//! token.

use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};

use super::AppState;
use super::auth::ApiToken;
use super::error::{Failure, NoInput};
use super::tags::ApiTags;
use crate::mapping::{
    CheckedField, CheckedMapping, DEFAULT_CONTACTS_KEY, Direction, Flow, HubSpotIdStore,
    ObjectType, Owner,
};
use crate::store::Relation;

/// A HubSpot object a mapping syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "MappedObject", rename_all = "lowercase")]
pub enum MappedObjectView {
    /// Contacts.
    Contacts,
    /// Companies.
    Companies,
}

impl From<ObjectType> for MappedObjectView {
    fn from(object: ObjectType) -> Self {
        match object {
            ObjectType::Contacts => Self::Contacts,
            ObjectType::Companies => Self::Companies,
        }
    }
}

/// Whether a mapping's local relation is a table or a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "MappedRelation", rename_all = "lowercase")]
pub enum RelationView {
    /// A table: pull may write it.
    Table,
    /// A view: push only.
    View,
}

/// Which way a field travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "FieldDirection", rename_all = "lowercase")]
pub enum FieldDirectionView {
    /// Local to HubSpot only.
    Push,
    /// HubSpot to local only.
    Pull,
    /// Both ways; the owner wins a conflict.
    Both,
}

/// The side that wins a conflict on a field syncing both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "FieldOwner", rename_all = "lowercase")]
pub enum FieldOwnerView {
    /// The local database.
    Local,
    /// HubSpot.
    HubSpot,
}

/// Where a mapping keeps the HubSpot id of its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "HubSpotIdStore", rename_all = "snake_case")]
pub enum HubSpotIdStoreView {
    /// crm-sync's own link table (the user's table gets no column).
    LinkTable,
    /// A column of the mapped table (`hubspot_id_column`).
    Column,
}

/// One mapped field.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename = "MappedField")]
pub struct FieldView {
    /// The local column.
    pub column: String,
    /// The column's type as crm-sync converts it: `text`, `integer`, `decimal`, `float`,
    /// `boolean`, `date` or `timestamp`.
    pub column_type: String,
    /// The HubSpot property's internal name.
    pub property: String,
    /// Which way it travels.
    pub direction: FieldDirectionView,
    /// The side that wins a conflict; null unless `direction` is `both`.
    #[oai(nullable)]
    pub owner: Option<FieldOwnerView>,
    /// The HubSpot type the property is created with when missing, as declared; null: derived
    /// from the column's type.
    #[oai(rename = "type", nullable)]
    pub property_type: Option<String>,
    /// The HubSpot field type it is created with, as declared; null: derived.
    #[oai(nullable)]
    pub field_type: Option<String>,
}

/// A contacts mapping's sync of each row's primary company (`company_column`).
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename = "MappedCompanyAssociation")]
pub struct CompanyAssociationView {
    /// The column holding the local key of the row's company.
    pub column: String,
    /// Which way the association travels (`company_direction`).
    pub direction: FieldDirectionView,
    /// The side that wins when both changed (`company_owner`); null unless `direction` is
    /// `both`.
    #[oai(nullable)]
    pub owner: Option<FieldOwnerView>,
}

/// One object mapping.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename = "ObjectMapping")]
pub struct ObjectView {
    /// The HubSpot object.
    pub object: MappedObjectView,
    /// The local table or view (`schema.table` when qualified).
    pub table: String,
    /// Whether it is a table or a view.
    pub relation: RelationView,
    /// The local unique key column.
    pub key_column: String,
    /// What matches records on both sides: a property (contacts: `email`) or `external_key`
    /// (crm-sync's own unique property, companies' default).
    pub match_key: String,
    /// Where the HubSpot id is kept.
    pub hubspot_id_store: HubSpotIdStoreView,
    /// The column holding the HubSpot id; null with the link table.
    #[oai(nullable)]
    pub hubspot_id_column: Option<String>,
    /// Whether missing HubSpot properties are created (in the `crm_sync` group).
    pub create_properties: bool,
    /// Whether the mapping is the built-in default (no `[[sync.objects]]` entry maps the
    /// object) rather than configured.
    pub built_in: bool,
    /// The configuration key errors about it name, e.g. `sync.objects[0]`.
    pub config_key: String,
    /// The mapped fields, by column name.
    pub fields: Vec<FieldView>,
    /// The row's primary company, when a contacts mapping syncs it (`company_column`); null
    /// otherwise.
    #[oai(nullable)]
    pub company: Option<CompanyAssociationView>,
}

/// `{"results": [mapping...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename = "ObjectMappingList")]
pub struct ObjectListView {
    /// The mappings in effect, in configuration order (a built-in default first).
    pub results: Vec<ObjectView>,
}

/// A flow's direction and owner as the API shows them.
fn flow_view(flow: Flow) -> (FieldDirectionView, Option<FieldOwnerView>) {
    let direction = match flow.direction() {
        Direction::Push => FieldDirectionView::Push,
        Direction::Pull => FieldDirectionView::Pull,
        Direction::Both => FieldDirectionView::Both,
    };
    let owner = flow.owner().map(|owner| match owner {
        Owner::Local => FieldOwnerView::Local,
        Owner::HubSpot => FieldOwnerView::HubSpot,
    });
    (direction, owner)
}

impl From<&CheckedField> for FieldView {
    fn from(checked: &CheckedField) -> Self {
        let field = &checked.field;
        let (direction, owner) = flow_view(field.flow);
        Self {
            column: field.column.to_string(),
            column_type: checked.column.describe().to_owned(),
            property: field.property.to_string(),
            direction,
            owner,
            property_type: field.declared.map(|d| d.kind.as_str().to_owned()),
            field_type: field.declared.map(|d| d.field.as_str().to_owned()),
        }
    }
}

impl From<&CheckedMapping> for ObjectView {
    fn from(checked: &CheckedMapping) -> Self {
        let mapping = &checked.mapping;
        let (hubspot_id_store, hubspot_id_column) = match &mapping.hubspot_id {
            HubSpotIdStore::LinkTable => (HubSpotIdStoreView::LinkTable, None),
            HubSpotIdStore::Column(column) => {
                (HubSpotIdStoreView::Column, Some(column.to_string()))
            }
        };
        Self {
            object: mapping.object.into(),
            table: mapping.table.to_string(),
            relation: match checked.relation {
                Relation::Table => RelationView::Table,
                Relation::View => RelationView::View,
            },
            key_column: mapping.key_column.to_string(),
            match_key: mapping.match_key.as_str().to_owned(),
            hubspot_id_store,
            hubspot_id_column,
            create_properties: mapping.create_properties,
            built_in: mapping.key == DEFAULT_CONTACTS_KEY,
            config_key: mapping.key.clone(),
            fields: checked.fields.iter().map(FieldView::from).collect(),
            company: mapping.company.as_ref().map(|company| {
                let (direction, owner) = flow_view(company.flow);
                CompanyAssociationView {
                    column: company.column.to_string(),
                    direction,
                    owner,
                }
            }),
        }
    }
}

/// The object mappings; every operation takes [`ApiToken`] first.
pub struct ObjectsApi {
    pub(super) state: AppState,
}

#[OpenApi(tag = "ApiTags::Objects")]
impl ObjectsApi {
    /// The object mappings in effect: for each HubSpot object its local table or view, key
    /// column, match key, where HubSpot ids are kept, and its fields with their directions
    /// and owners.
    #[oai(path = "/api/objects", method = "get", operation_id = "listObjects")]
    async fn list_objects(
        &self,
        _auth: ApiToken,
    ) -> Result<Json<ObjectListView>, Failure<NoInput>> {
        Ok(Json(ObjectListView {
            results: self.state.objects.iter().map(ObjectView::from).collect(),
        }))
    }
}
