//! Request and answer shapes, spelled as HubSpot spells them (camelCase).
//!
//! Answers are parsed leniently where HubSpot is loose (property values may be null or
//! numbers; timestamps may be absent) and strictly where the sync depends on a field (`id`).

use crate::ids::{CompanyId, HsObjectId, PortalId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// HubSpot's maximum (and this client's default) page size for `GET /crm/v3/objects/contacts`.
pub const MAX_PAGE_LIMIT: u32 = 100;
/// HubSpot's maximum page size for search.
pub const MAX_SEARCH_LIMIT: u32 = 200;

/// A HubSpot contact record (`SimplePublicObject`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// The record id (`hs_object_id`).
    pub id: HsObjectId,
    /// Property values; HubSpot sends strings, and may send null for an empty value.
    #[serde(default, deserialize_with = "lenient_values")]
    pub properties: BTreeMap<String, Option<String>>,
    /// When the record was created.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// When the record last changed.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// Whether the record is in the recycle bin.
    #[serde(default)]
    pub archived: bool,
    /// When it was archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<DateTime<Utc>>,
    /// The trace id of the batch input that wrote it, when HubSpot echoes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_write_trace_id: Option<String>,
}

impl Contact {
    /// A property's value; `None` when absent, null or empty.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .get(name)
            .and_then(|v| v.as_deref())
            .filter(|v| !v.is_empty())
    }

    /// The `email` property.
    pub fn email(&self) -> Option<&str> {
        self.property("email")
    }
}

/// A record from batch upsert: the contact and whether HubSpot created it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct UpsertedContact {
    /// The record as it is now.
    #[serde(flatten)]
    pub contact: Contact,
    /// True when the upsert created the record. A retried upsert whose first attempt was
    /// applied reports `false` for a record that attempt created.
    pub new: bool,
}

/// One page of results and the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The records of this page.
    pub results: Vec<T>,
    /// `paging.next.after`; `None` on the last page.
    pub next_after: Option<String>,
}

/// One page of search results (contacts unless said otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage<R = Contact> {
    /// How many records match in all (HubSpot serves at most 10,000 of them).
    pub total: u64,
    /// The records of this page.
    pub results: Vec<R>,
    /// `paging.next.after`; `None` on the last page.
    pub next_after: Option<String>,
}

/// A HubSpot company record (`SimplePublicObject` of object type `0-2`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    /// The record id.
    pub id: CompanyId,
    /// Property values; HubSpot sends strings, and may send null for an empty value.
    #[serde(default, deserialize_with = "lenient_values")]
    pub properties: BTreeMap<String, Option<String>>,
    /// When the record was created.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// When the record last changed.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// Whether the record is in the recycle bin.
    #[serde(default)]
    pub archived: bool,
    /// When it was archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<DateTime<Utc>>,
    /// The trace id of the batch input that wrote it, when HubSpot echoes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_write_trace_id: Option<String>,
}

impl Company {
    /// A property's value; `None` when absent, null or empty.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .get(name)
            .and_then(|v| v.as_deref())
            .filter(|v| !v.is_empty())
    }

    /// The `domain` property (not unique in HubSpot: several companies may share one).
    pub fn domain(&self) -> Option<&str> {
        self.property("domain")
    }

    /// The `name` property.
    pub fn name(&self) -> Option<&str> {
        self.property("name")
    }

    /// The ids merged into this company (`hs_merged_object_ids`, `;`-separated).
    pub fn merged_ids(&self) -> Vec<CompanyId> {
        self.property("hs_merged_object_ids")
            .into_iter()
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(CompanyId::from)
            .collect()
    }
}

/// A record from a company batch upsert: the company and whether HubSpot created it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct UpsertedCompany {
    /// The record as it is now.
    #[serde(flatten)]
    pub company: Company,
    /// True when the upsert created the record.
    pub new: bool,
}

/// `GET /crm/v3/objects/{contacts|companies}` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListObjects {
    /// Page size, 1..=100 (clamped); 100 by default (HubSpot's own default is 10).
    pub limit: u32,
    /// The cursor from the previous page.
    pub after: Option<String>,
    /// Properties to return (HubSpot's default set when empty: for companies `name` and
    /// `domain`).
    pub properties: Vec<String>,
    /// True lists only archived records.
    pub archived: bool,
}

impl Default for ListObjects {
    fn default() -> Self {
        Self {
            limit: MAX_PAGE_LIMIT,
            after: None,
            properties: Vec::new(),
            archived: false,
        }
    }
}

/// One record to create: contacts need at least one of `email`, `firstname`, `lastname`;
/// companies at least `name` or `domain`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectCreate {
    /// Property values.
    pub properties: BTreeMap<String, String>,
}

/// One record to update by id, or by a unique property (never a company's `domain`, which
/// HubSpot refuses as not unique).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUpdate {
    /// The record id, or the value of `id_property`.
    pub id: String,
    /// A unique property to find the record by; `None` = record id.
    pub id_property: Option<String>,
    /// New values; an empty string clears a value.
    pub properties: BTreeMap<String, String>,
}

/// One record to create or update, found by a unique property: a contact's `email`, or a
/// custom property with `hasUniqueValue` (HubSpot refuses a company's `domain`: "Unable to
/// perform update/upsert by non-unique 0-2 property domain").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUpsert {
    /// The value of `id_property`, e.g. the email.
    pub id: String,
    /// The unique property.
    pub id_property: String,
    /// Values to write.
    pub properties: BTreeMap<String, String>,
}

/// Contacts' list parameters.
pub type ListContacts = ListObjects;
/// Companies' list parameters.
pub type ListCompanies = ListObjects;
/// A contact to create.
pub type ContactCreate = ObjectCreate;
/// A company to create.
pub type CompanyCreate = ObjectCreate;
/// A contact to update.
pub type ContactUpdate = ObjectUpdate;
/// A company to update.
pub type CompanyUpdate = ObjectUpdate;
/// A contact to upsert.
pub type ContactUpsert = ObjectUpsert;
/// A company to upsert.
pub type CompanyUpsert = ObjectUpsert;

/// `POST /crm/v3/objects/contacts/search` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchRequest {
    /// Groups are ORed, filters within a group ANDed.
    pub filter_groups: Vec<FilterGroup>,
    /// Sort rules (HubSpot honours one).
    pub sorts: Vec<Sort>,
    /// Free-text query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Properties to return.
    pub properties: Vec<String>,
    /// Page size, 1..=200 (clamped when sent).
    pub limit: u32,
    /// The cursor from the previous page; `None` is the first page, sent as `"0"` because
    /// HubSpot's spec requires `after` (search cursors are offsets in string form).
    #[serde(serialize_with = "first_page_when_none")]
    pub after: Option<String>,
}

fn first_page_when_none<S: serde::Serializer>(
    after: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(after.as_deref().unwrap_or("0"))
}

impl SearchRequest {
    /// Companies whose `domain` is one of `domains` (`EQ` for one, `IN` for several, in
    /// lower case as HubSpot wants `IN` values), oldest first. Several companies may share a
    /// domain, and search lags writes by seconds: the caller decides what 0, 1 or many
    /// matches mean.
    pub fn companies_with_domains(domains: &[String], properties: Vec<String>) -> Self {
        let lower: Vec<String> = domains.iter().map(|d| d.trim().to_lowercase()).collect();
        let filter = match lower.as_slice() {
            [one] => Filter::new("domain", FilterOperator::Eq, one.clone()),
            _ => Filter::in_list("domain", lower),
        };
        Self {
            filter_groups: vec![FilterGroup {
                filters: vec![filter],
            }],
            sorts: vec![Sort {
                property_name: "createdate".to_owned(),
                direction: SortDirection::Ascending,
            }],
            properties,
            ..Self::default()
        }
    }

    /// Records of `object` changed at or after `since`, oldest change first: the query of
    /// an incremental pull (contacts keep their change in `lastmodifieddate`, other objects
    /// in `hs_lastmodifieddate`).
    pub fn modified_since(
        object: ObjectType,
        since: DateTime<Utc>,
        properties: Vec<String>,
    ) -> Self {
        let name = object.modified_property();
        Self {
            filter_groups: vec![FilterGroup {
                filters: vec![Filter::new(
                    name,
                    FilterOperator::Gte,
                    since.timestamp_millis().to_string(),
                )],
            }],
            sorts: vec![Sort {
                property_name: name.to_owned(),
                direction: SortDirection::Ascending,
            }],
            properties,
            ..Self::default()
        }
    }
}

/// A CRM object type this client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    /// Contacts, `0-1`.
    Contacts,
    /// Companies, `0-2`.
    Companies,
}

impl ObjectType {
    /// The name in paths (`contacts`, `companies`).
    pub fn path_name(self) -> &'static str {
        match self {
            Self::Contacts => "contacts",
            Self::Companies => "companies",
        }
    }

    /// HubSpot's object type id (`0-1`, `0-2`).
    pub fn type_id(self) -> &'static str {
        match self {
            Self::Contacts => "0-1",
            Self::Companies => "0-2",
        }
    }

    /// The type an object type id or path name names.
    pub fn from_type_id(id: &str) -> Option<Self> {
        [Self::Contacts, Self::Companies]
            .into_iter()
            .find(|o| o.type_id() == id || o.path_name() == id)
    }

    /// The property that holds a record's last change.
    pub fn modified_property(self) -> &'static str {
        match self {
            Self::Contacts => "lastmodifieddate",
            Self::Companies => "hs_lastmodifieddate",
        }
    }
}

impl Default for SearchRequest {
    fn default() -> Self {
        Self {
            filter_groups: Vec::new(),
            sorts: Vec::new(),
            query: None,
            properties: Vec::new(),
            limit: MAX_SEARCH_LIMIT,
            after: None,
        }
    }
}

/// Filters that must all match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterGroup {
    /// The filters.
    pub filters: Vec<Filter>,
}

/// One search condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// The property, e.g. `lastmodifieddate`.
    pub property_name: String,
    /// The comparison.
    pub operator: FilterOperator,
    /// The value for single-value operators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The values for `IN` / `NOT_IN` (lower-case for strings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// The upper bound for `BETWEEN`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_value: Option<String>,
}

impl Filter {
    /// `property <op> value`.
    pub fn new(
        property_name: impl Into<String>,
        operator: FilterOperator,
        value: impl Into<String>,
    ) -> Self {
        Self {
            property_name: property_name.into(),
            operator,
            value: Some(value.into()),
            values: None,
            high_value: None,
        }
    }

    /// `property IN (values)`.
    pub fn in_list(property_name: impl Into<String>, values: Vec<String>) -> Self {
        Self {
            property_name: property_name.into(),
            operator: FilterOperator::In,
            value: None,
            values: Some(values),
            high_value: None,
        }
    }
}

/// Search comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FilterOperator {
    /// Equal (case-insensitive except enumerations).
    Eq,
    /// Not equal.
    Neq,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Between `value` and `highValue`.
    Between,
    /// One of `values`.
    In,
    /// None of `values`.
    NotIn,
    /// Has any value.
    HasProperty,
    /// Has no value.
    NotHasProperty,
    /// Contains the word.
    ContainsToken,
    /// Does not contain the word.
    NotContainsToken,
}

/// One sort rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sort {
    /// The property to sort by.
    pub property_name: String,
    /// The direction.
    pub direction: SortDirection,
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SortDirection {
    /// Smallest first.
    Ascending,
    /// Largest first.
    Descending,
}

/// `POST /crm/v3/properties/contacts` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyCreate {
    /// Internal name, e.g. `crm_sync_id`.
    pub name: String,
    /// Display label.
    pub label: String,
    /// Data type: `string`, `number`, `enumeration`, `bool`, `date`, `datetime`, `phone_number`.
    #[serde(rename = "type")]
    pub property_type: String,
    /// Form control: `text`, `number`, `select`, `booleancheckbox`, ...
    pub field_type: String,
    /// Property group, e.g. `contactinformation`.
    pub group_name: String,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Unique values; makes it usable as `idProperty`. Cannot be changed later.
    pub has_unique_value: bool,
    /// Options of an enumeration.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<PropertyOption>,
    /// Whether it shows on forms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form_field: Option<bool>,
}

/// A property's data type (`type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PropertyKind {
    /// `string`
    String,
    /// `number`
    Number,
    /// `bool`
    Bool,
    /// `enumeration` (options required, except for multi-select `checkbox`)
    Enumeration,
    /// `date`: a day, written as epoch ms at midnight UTC
    Date,
    /// `datetime`: an instant
    Datetime,
    /// `phone_number`
    PhoneNumber,
}

impl PropertyKind {
    /// HubSpot's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Bool => "bool",
            Self::Enumeration => "enumeration",
            Self::Date => "date",
            Self::Datetime => "datetime",
            Self::PhoneNumber => "phone_number",
        }
    }

    /// The form controls HubSpot allows for this type (its docs' table, Jan 2025; the
    /// `phone_number` pairing is unconfirmed). The first is the plain choice.
    pub fn field_types(self) -> &'static [FieldType] {
        use FieldType as F;
        match self {
            Self::String => &[
                F::Text,
                F::Textarea,
                F::Html,
                F::PhoneNumber,
                F::File,
                F::CalculationEquation,
            ],
            Self::Number => &[F::Number, F::CalculationEquation],
            Self::Bool => &[F::BooleanCheckbox, F::CalculationEquation],
            Self::Enumeration => &[
                F::Select,
                F::Radio,
                F::Checkbox,
                F::BooleanCheckbox,
                F::CalculationEquation,
            ],
            Self::Date | Self::Datetime => &[F::Date],
            Self::PhoneNumber => &[F::PhoneNumber, F::Text],
        }
    }
}

/// A property's form control (`fieldType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// `text`
    Text,
    /// `textarea`
    Textarea,
    /// `html`
    Html,
    /// `phonenumber`
    #[serde(rename = "phonenumber")]
    PhoneNumber,
    /// `file`
    File,
    /// `number`
    Number,
    /// `booleancheckbox`
    #[serde(rename = "booleancheckbox")]
    BooleanCheckbox,
    /// `select`
    Select,
    /// `radio`
    Radio,
    /// `checkbox` (multi-select)
    Checkbox,
    /// `date`
    Date,
    /// `calculation_equation`
    CalculationEquation,
}

impl FieldType {
    /// HubSpot's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Textarea => "textarea",
            Self::Html => "html",
            Self::PhoneNumber => "phonenumber",
            Self::File => "file",
            Self::Number => "number",
            Self::BooleanCheckbox => "booleancheckbox",
            Self::Select => "select",
            Self::Radio => "radio",
            Self::Checkbox => "checkbox",
            Self::Date => "date",
            Self::CalculationEquation => "calculation_equation",
        }
    }
}

/// A `type` / `fieldType` pair HubSpot refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {} property cannot use the {} field type", kind.as_str(), field.as_str())]
pub struct InvalidFieldType {
    /// The type.
    pub kind: PropertyKind,
    /// The field type.
    pub field: FieldType,
}

impl PropertyCreate {
    /// A property of `kind` shown as `field` in `group`, refused when HubSpot does not allow
    /// the pair.
    pub fn typed(
        name: impl Into<String>,
        label: impl Into<String>,
        kind: PropertyKind,
        field: FieldType,
        group: impl Into<String>,
    ) -> Result<Self, InvalidFieldType> {
        if !kind.field_types().contains(&field) {
            return Err(InvalidFieldType { kind, field });
        }
        Ok(Self {
            name: name.into(),
            label: label.into(),
            property_type: kind.as_str().to_owned(),
            field_type: field.as_str().to_owned(),
            group_name: group.into(),
            description: None,
            has_unique_value: false,
            options: Vec::new(),
            form_field: None,
        })
    }
}

/// A property definition as HubSpot returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Property {
    /// Internal name.
    pub name: String,
    /// Display label.
    #[serde(default)]
    pub label: String,
    /// Data type.
    #[serde(rename = "type", default)]
    pub property_type: String,
    /// Form control.
    #[serde(default)]
    pub field_type: String,
    /// Property group.
    #[serde(default)]
    pub group_name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether values are unique.
    #[serde(default)]
    pub has_unique_value: bool,
    /// Whether HubSpot defines it.
    #[serde(default)]
    pub hubspot_defined: Option<bool>,
    /// Enumeration options.
    #[serde(default)]
    pub options: Vec<PropertyOption>,
    /// Whether it is archived.
    #[serde(default)]
    pub archived: bool,
}

/// An option of an enumeration property.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyOption {
    /// Display label.
    pub label: String,
    /// Stored value.
    pub value: String,
    /// Hidden on forms.
    #[serde(default)]
    pub hidden: bool,
    /// Position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i32>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `GET /account-info/v3/details`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountDetails {
    /// The account id.
    pub portal_id: PortalId,
    /// `STANDARD`, `DEVELOPER_TEST`, `SANDBOX`, `APP_DEVELOPER`.
    #[serde(default)]
    pub account_type: Option<String>,
    /// The account's time zone (the daily limit resets at its midnight).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Main currency.
    #[serde(default)]
    pub company_currency: Option<String>,
    /// Other currencies.
    #[serde(default)]
    pub additional_currencies: Vec<String>,
    /// e.g. `+01:00`.
    #[serde(default)]
    pub utc_offset: Option<String>,
    /// The offset in milliseconds.
    #[serde(default)]
    pub utc_offset_milliseconds: Option<i64>,
    /// e.g. `app.hubspot.com`.
    #[serde(default)]
    pub ui_domain: Option<String>,
    /// e.g. `na1`.
    #[serde(default)]
    pub data_hosting_location: Option<String>,
}

/// One entry of `GET /account-info/v3/api-usage/daily/private-apps`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiUsage {
    /// The limit's name.
    pub name: String,
    /// Calls allowed per day.
    #[serde(default)]
    pub usage_limit: Option<i64>,
    /// Calls made today.
    #[serde(default)]
    pub current_usage: Option<i64>,
    /// When HubSpot last counted.
    #[serde(default)]
    pub collected_at: Option<DateTime<Utc>>,
    /// `SUCCESS`, `CACHED`, ...
    #[serde(default)]
    pub fetch_status: Option<String>,
    /// When the counter resets.
    #[serde(default)]
    pub resets_at: Option<DateTime<Utc>>,
}

/// `POST /crm/v3/properties/{object}/groups` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyGroupCreate {
    /// Internal name, e.g. `crm_sync`.
    pub name: String,
    /// Display label.
    pub label: String,
    /// Position among the groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i32>,
}

/// A property group as HubSpot returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyGroup {
    /// Internal name.
    pub name: String,
    /// Display label.
    #[serde(default)]
    pub label: String,
    /// Position among the groups.
    #[serde(default)]
    pub display_order: Option<i32>,
    /// Whether it is archived.
    #[serde(default)]
    pub archived: bool,
}

/// `{results, paging}` as HubSpot sends lists.
#[derive(Debug, Deserialize)]
pub(crate) struct Collection<T> {
    pub results: Vec<T>,
    #[serde(default)]
    pub paging: Option<Paging>,
    #[serde(default)]
    pub total: Option<u64>,
}

impl<T> Collection<T> {
    pub(crate) fn into_page(self) -> Page<T> {
        Page {
            next_after: self.paging.and_then(|p| p.next).map(|n| n.after),
            results: self.results,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Paging {
    #[serde(default)]
    pub next: Option<NextPage>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct NextPage {
    #[serde(deserialize_with = "string_or_number")]
    pub after: String,
}

/// Property values: strings, with null as no value and numbers/bools as their text.
fn lenient_values<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Option<String>>, D::Error> {
    let raw = Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)?.unwrap_or_default();
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let value = match v {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s),
                other => Some(other.to_string()),
            };
            (k, value)
        })
        .collect())
}

/// Search cursors are integers in string form; accept a bare number too.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "paging.next.after is {other}, expected a string"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_page_parses_with_null_values_and_the_next_cursor() {
        let body = r#"{"results":[{"id":"101","properties":{"email":"a@example.com","firstname":null,"hs_object_id":"101","num":3},
            "createdAt":"2026-01-01T00:00:00.000Z","updatedAt":"2026-01-02T00:00:00Z","archived":false}],
            "paging":{"next":{"after":"NTI1Cg%3D%3D","link":"https://api.hubapi.com/..."}}}"#;
        let page = serde_json::from_str::<Collection<Contact>>(body)
            .expect("valid page")
            .into_page();
        assert_eq!(page.next_after.as_deref(), Some("NTI1Cg%3D%3D"));
        let contact = &page.results[0];
        assert_eq!(contact.id, HsObjectId::from("101"));
        assert_eq!(contact.email(), Some("a@example.com"));
        assert_eq!(contact.property("firstname"), None);
        assert_eq!(contact.property("num"), Some("3"));
    }

    #[test]
    fn a_null_property_value_reads_exactly_like_an_absent_one() {
        let with_nulls: Contact = serde_json::from_str(
            r#"{"id":"7","properties":{"email":null,"firstname":null,"lastmodifieddate":null,
                "hs_merged_object_ids":null},"createdAt":null,"updatedAt":null}"#,
        )
        .expect("null is accepted for any property value and timestamp");
        let without: Contact =
            serde_json::from_str(r#"{"id":"7","properties":{}}"#).expect("valid");
        for name in [
            "email",
            "firstname",
            "lastmodifieddate",
            "hs_merged_object_ids",
        ] {
            assert_eq!(with_nulls.property(name), without.property(name), "{name}");
        }
        assert_eq!(with_nulls.email(), None);
        assert_eq!((with_nulls.created_at, with_nulls.updated_at), (None, None));
        let no_map: Contact =
            serde_json::from_str(r#"{"id":"7","properties":null}"#).expect("null properties");
        assert!(no_map.properties.is_empty());
    }

    #[test]
    fn the_last_page_has_no_cursor_and_a_record_without_id_is_refused() {
        let page = serde_json::from_str::<Collection<Contact>>(r#"{"results":[]}"#)
            .expect("valid")
            .into_page();
        assert_eq!(page.next_after, None);
        assert!(
            serde_json::from_str::<Collection<Contact>>(r#"{"results":[{"properties":{}}]}"#)
                .is_err()
        );
    }

    #[test]
    fn a_typed_property_keeps_to_the_pairs_hubspot_allows() {
        let date = PropertyCreate::typed(
            "renewal",
            "Renewal",
            PropertyKind::Date,
            FieldType::Date,
            "crm_sync",
        )
        .expect("date/date");
        assert_eq!(
            (date.property_type.as_str(), date.field_type.as_str()),
            ("date", "date")
        );
        assert_eq!(
            PropertyCreate::typed("x", "X", PropertyKind::Number, FieldType::Text, "g"),
            Err(InvalidFieldType {
                kind: PropertyKind::Number,
                field: FieldType::Text
            })
        );
        for kind in [
            PropertyKind::String,
            PropertyKind::Number,
            PropertyKind::Bool,
            PropertyKind::Enumeration,
            PropertyKind::Date,
            PropertyKind::Datetime,
            PropertyKind::PhoneNumber,
        ] {
            let field = kind.field_types()[0];
            assert_eq!(
                serde_json::to_value(field).expect("serialises"),
                serde_json::json!(field.as_str())
            );
            assert_eq!(
                serde_json::to_value(kind).expect("serialises"),
                serde_json::json!(kind.as_str())
            );
        }
    }

    #[test]
    fn an_upsert_result_carries_new() {
        let r: UpsertedContact = serde_json::from_str(
            r#"{"id":"7","properties":{"email":"x@y.io"},"new":true,"archived":false}"#,
        )
        .expect("valid");
        assert!(r.new);
        assert_eq!(r.contact.id, HsObjectId::from("7"));
    }

    #[test]
    fn a_search_request_is_spelled_as_hubspot_expects() {
        let request = SearchRequest {
            filter_groups: vec![FilterGroup {
                filters: vec![Filter::new(
                    "lastmodifieddate",
                    FilterOperator::Gte,
                    "1700000000000",
                )],
            }],
            sorts: vec![Sort {
                property_name: "lastmodifieddate".into(),
                direction: SortDirection::Ascending,
            }],
            properties: vec!["email".into()],
            ..SearchRequest::default()
        };
        let json = serde_json::to_value(&request).expect("serializable");
        assert_eq!(
            json,
            serde_json::json!({
                "filterGroups":[{"filters":[{"propertyName":"lastmodifieddate","operator":"GTE","value":"1700000000000"}]}],
                "sorts":[{"propertyName":"lastmodifieddate","direction":"ASCENDING"}],
                "properties":["email"],
                "limit":200,
                "after":"0"
            })
        );
        let next = SearchRequest {
            after: Some("200".into()),
            ..request
        };
        let json = serde_json::to_value(&next).expect("serializable");
        assert_eq!(json["after"], "200");
    }
}
