//! Property definitions and groups of contacts and companies: HubSpot's defaults plus the
//! custom ones a user creates, and the value checks HubSpot applies on every write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::clock::iso_millis;
use super::objects::CrmObject;

/// The most custom properties with `hasUniqueValue` HubSpot allows per object.
pub(crate) const MAX_UNIQUE_PROPERTIES: usize = 10;

/// A property's data type (HubSpot's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PropertyType {
    /// `bool`
    Bool,
    /// `date` (midnight UTC, milliseconds)
    Date,
    /// `datetime`
    Datetime,
    /// `enumeration`
    Enumeration,
    /// `number`
    Number,
    /// `phone_number`
    PhoneNumber,
    /// `string`
    String,
}

impl PropertyType {
    /// Whether values compare as instants (search filters and sorts).
    pub(crate) fn is_temporal(self) -> bool {
        matches!(self, Self::Date | Self::Datetime)
    }
}

/// One option of an enumeration property.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PropertyOption {
    /// Shown in HubSpot.
    pub label: String,
    /// What the API reads and writes.
    pub value: String,
    /// Order in the UI.
    #[serde(default)]
    pub display_order: i32,
    /// Hidden in the UI.
    #[serde(default)]
    pub hidden: bool,
    /// Help text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A property definition as the properties API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PropertyDef {
    /// Internal name.
    pub name: String,
    /// UI label.
    pub label: String,
    /// Data type.
    pub kind: PropertyType,
    /// UI field type (`text`, `select`, ...).
    pub field_type: String,
    /// Property group.
    pub group_name: String,
    /// Help text.
    pub description: String,
    /// Options of an enumeration.
    pub options: Vec<PropertyOption>,
    /// Values must be unique across contacts.
    pub has_unique_value: bool,
    /// Built into HubSpot.
    pub hubspot_defined: bool,
    /// Written only by HubSpot itself.
    pub read_only_value: bool,
    /// Shown in forms.
    pub form_field: bool,
    /// Hidden in the UI.
    pub hidden: bool,
    /// UI order.
    pub display_order: i32,
    /// Creation time (ms).
    pub created_ms: i64,
    /// Last change (ms).
    pub updated_ms: i64,
    /// Archive time (ms) once archived.
    pub archived_ms: Option<i64>,
}

impl PropertyDef {
    fn builtin(name: &str, label: &str, kind: PropertyType, field_type: &str) -> Self {
        Self {
            name: name.to_owned(),
            label: label.to_owned(),
            kind,
            field_type: field_type.to_owned(),
            group_name: "contactinformation".to_owned(),
            description: String::new(),
            options: Vec::new(),
            has_unique_value: false,
            hubspot_defined: true,
            read_only_value: false,
            form_field: true,
            hidden: false,
            display_order: -1,
            created_ms: 0,
            updated_ms: 0,
            archived_ms: None,
        }
    }

    fn in_group(mut self, group: &str) -> Self {
        group.clone_into(&mut self.group_name);
        self
    }

    fn read_only(mut self) -> Self {
        self.read_only_value = true;
        self.form_field = false;
        self
    }

    /// The JSON the properties API answers with (schema `Property`).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "name": self.name,
            "label": self.label,
            "type": self.kind,
            "fieldType": self.field_type,
            "groupName": self.group_name,
            "description": self.description,
            "options": self.options,
            "hasUniqueValue": self.has_unique_value,
            "hubspotDefined": self.hubspot_defined,
            "formField": self.form_field,
            "hidden": self.hidden,
            "displayOrder": self.display_order,
            "calculated": false,
            "externalOptions": false,
            "archived": self.archived_ms.is_some(),
            "createdAt": iso_millis(self.created_ms),
            "updatedAt": iso_millis(self.updated_ms),
            "modificationMetadata": {
                "archivable": !self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only_value,
            },
        });
        if let (Some(at), Some(obj)) = (self.archived_ms, v.as_object_mut()) {
            obj.insert("archivedAt".into(), iso_millis(at).into());
        }
        v
    }
}

/// Why a property value was refused; serialised into HubSpot's
/// `Property values were not valid: [...]` message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PropertyProblem {
    /// Always false.
    pub is_valid: bool,
    /// English explanation.
    pub message: String,
    /// HubSpot's code, e.g. `INVALID_EMAIL`.
    pub error: String,
    /// The property.
    pub name: String,
    /// Same text as `message` (HubSpot localises it).
    pub localized_error_message: String,
}

impl PropertyProblem {
    fn new(name: &str, error: &str, message: String) -> Self {
        Self {
            is_valid: false,
            localized_error_message: message.clone(),
            message,
            error: error.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The problem of an invalid email.
    pub(crate) fn invalid_email(value: &str) -> Self {
        Self::new(
            "email",
            "INVALID_EMAIL",
            format!("Email address {value} is invalid"),
        )
    }

    /// HubSpot's message for a list of problems.
    pub(crate) fn summary(problems: &[PropertyProblem]) -> String {
        let list = serde_json::to_string(problems).unwrap_or_else(|_| "[]".to_owned());
        format!("Property values were not valid: {list}")
    }
}

/// A property group (HubSpot's `PropertyGroup`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PropertyGroup {
    /// Internal name.
    pub name: String,
    /// UI label.
    pub label: String,
    /// UI order.
    pub display_order: i32,
    /// Archived flag.
    #[serde(default)]
    pub archived: bool,
}

impl PropertyGroup {
    /// The JSON the properties API answers with (schema `PropertyGroup`).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "label": self.label,
            "displayOrder": self.display_order,
            "archived": self.archived,
        })
    }
}

/// All property definitions and groups of one object type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PropertyCatalog {
    defs: BTreeMap<String, PropertyDef>,
    /// Groups by name, the built-in one included (older state files have none saved).
    #[serde(default)]
    groups: BTreeMap<String, PropertyGroup>,
}

impl PropertyCatalog {
    /// HubSpot's default properties and group of `object`.
    pub(crate) fn for_object(object: CrmObject) -> Self {
        let defs = match object {
            CrmObject::Contacts => contact_properties(),
            CrmObject::Companies => company_properties(),
        };
        let mut catalog = Self {
            defs: defs.into_iter().map(|d| (d.name.clone(), d)).collect(),
            groups: BTreeMap::new(),
        };
        catalog.add_builtin_group(object);
        catalog
    }

    /// Adds the built-in group of `object` when it is missing (state files of before groups).
    pub(crate) fn add_builtin_group(&mut self, object: CrmObject) {
        let (name, label) = builtin_group(object);
        self.groups
            .entry(name.to_owned())
            .or_insert_with(|| PropertyGroup {
                name: name.to_owned(),
                label: label.to_owned(),
                display_order: -1,
                archived: false,
            });
    }

    /// Live groups by name.
    pub(crate) fn groups(&self) -> impl Iterator<Item = &PropertyGroup> {
        self.groups.values().filter(|g| !g.archived)
    }

    /// A live group.
    pub(crate) fn group(&self, name: &str) -> Option<&PropertyGroup> {
        self.groups.get(name).filter(|g| !g.archived)
    }

    /// Adds a group; a live group of that name is a conflict.
    pub(crate) fn create_group(
        &mut self,
        group: PropertyGroup,
    ) -> Result<&PropertyGroup, PropertyDefError> {
        if self.group(&group.name).is_some() {
            return Err(PropertyDefError::AlreadyExists(group.name));
        }
        if !valid_property_name(&group.name) {
            return Err(PropertyDefError::Invalid(format!(
                "Property group name '{}' is invalid: use lower-case letters, digits and underscores, starting with a letter.",
                group.name
            )));
        }
        let name = group.name.clone();
        self.groups.insert(name.clone(), group);
        self.groups
            .get(&name)
            .ok_or(PropertyDefError::NotFound(name))
    }
}

/// The group HubSpot's own properties of `object` are in.
fn builtin_group(object: CrmObject) -> (&'static str, &'static str) {
    match object {
        CrmObject::Contacts => ("contactinformation", "Contact information"),
        CrmObject::Companies => ("companyinformation", "Company information"),
    }
}

fn lifecycle_stage(group: &str) -> PropertyDef {
    let lifecycle = [
        "subscriber",
        "lead",
        "marketingqualifiedlead",
        "salesqualifiedlead",
        "opportunity",
        "customer",
        "evangelist",
        "other",
    ];
    let mut stage = PropertyDef::builtin(
        "lifecyclestage",
        "Lifecycle Stage",
        PropertyType::Enumeration,
        "radio",
    )
    .in_group(group);
    stage.options = lifecycle
        .iter()
        .enumerate()
        .map(|(i, v)| PropertyOption {
            label: (*v).to_owned(),
            value: (*v).to_owned(),
            display_order: i32::try_from(i).unwrap_or(i32::MAX),
            hidden: false,
            description: None,
        })
        .collect();
    stage
}

fn contact_properties() -> Vec<PropertyDef> {
    use PropertyType as T;
    vec![
        PropertyDef::builtin("email", "Email", T::String, "text"),
        PropertyDef::builtin("firstname", "First Name", T::String, "text"),
        PropertyDef::builtin("lastname", "Last Name", T::String, "text"),
        PropertyDef::builtin("phone", "Phone Number", T::String, "phonenumber"),
        PropertyDef::builtin(
            "mobilephone",
            "Mobile Phone Number",
            T::String,
            "phonenumber",
        ),
        PropertyDef::builtin("company", "Company Name", T::String, "text"),
        PropertyDef::builtin("website", "Website URL", T::String, "text"),
        PropertyDef::builtin("jobtitle", "Job Title", T::String, "text"),
        PropertyDef::builtin("address", "Street Address", T::String, "text"),
        PropertyDef::builtin("city", "City", T::String, "text"),
        PropertyDef::builtin("state", "State/Region", T::String, "text"),
        PropertyDef::builtin("zip", "Postal Code", T::String, "text"),
        PropertyDef::builtin("country", "Country/Region", T::String, "text"),
        PropertyDef::builtin("industry", "Industry", T::String, "text"),
        lifecycle_stage("contactinformation"),
        PropertyDef::builtin("hs_object_id", "Record ID", T::Number, "number").read_only(),
        PropertyDef::builtin("createdate", "Create Date", T::Datetime, "date").read_only(),
        PropertyDef::builtin(
            "lastmodifieddate",
            "Last Modified Date",
            T::Datetime,
            "date",
        )
        .read_only(),
        PropertyDef::builtin(
            "hs_merged_object_ids",
            "Merged Contact IDs",
            T::Enumeration,
            "checkbox",
        )
        .read_only(),
        PropertyDef::builtin(
            "hs_additional_emails",
            "Additional email addresses",
            T::Enumeration,
            "checkbox",
        )
        .read_only(),
    ]
}

fn company_properties() -> Vec<PropertyDef> {
    use PropertyType as T;
    let group = "companyinformation";
    let def =
        |name, label, kind, field| PropertyDef::builtin(name, label, kind, field).in_group(group);
    vec![
        def("name", "Company name", T::String, "text"),
        def("domain", "Company Domain Name", T::String, "text"),
        // `;`-separated; domain matching (auto-association) also looks here.
        def(
            "hs_additional_domains",
            "Additional Domains",
            T::String,
            "text",
        ),
        def("website", "Website URL", T::String, "text"),
        def("phone", "Phone Number", T::String, "phonenumber"),
        def("industry", "Industry", T::String, "text"),
        def("description", "Description", T::String, "textarea"),
        def("city", "City", T::String, "text"),
        def("state", "State/Region", T::String, "text"),
        def("zip", "Postal Code", T::String, "text"),
        def("country", "Country/Region", T::String, "text"),
        def(
            "numberofemployees",
            "Number of Employees",
            T::Number,
            "number",
        ),
        def("annualrevenue", "Annual Revenue", T::Number, "number"),
        def("founded_year", "Year Founded", T::String, "text"),
        lifecycle_stage(group),
        def("hs_object_id", "Record ID", T::Number, "number").read_only(),
        def("createdate", "Create Date", T::Datetime, "date").read_only(),
        def(
            "hs_lastmodifieddate",
            "Last Modified Date",
            T::Datetime,
            "date",
        )
        .read_only(),
        def(
            "hs_merged_object_ids",
            "Merged Company IDs",
            T::Enumeration,
            "checkbox",
        )
        .read_only(),
    ]
}

/// Why a property definition could not be created or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PropertyDefError {
    /// A live property of that name exists.
    AlreadyExists(String),
    /// No such property.
    NotFound(String),
    /// The request breaks a rule (message says which).
    Invalid(String),
}

impl PropertyCatalog {
    /// A live (not archived) property.
    pub(crate) fn get(&self, name: &str) -> Option<&PropertyDef> {
        self.defs.get(name).filter(|d| d.archived_ms.is_none())
    }

    /// Any property, archived ones included.
    pub(crate) fn get_any(&self, name: &str) -> Option<&PropertyDef> {
        self.defs.get(name)
    }

    /// Live or archived properties, by name.
    pub(crate) fn list(&self, archived: bool) -> impl Iterator<Item = &PropertyDef> {
        self.defs
            .values()
            .filter(move |d| d.archived_ms.is_some() == archived)
    }

    /// Names of the live custom properties whose values must be unique.
    pub(crate) fn unique_names(&self) -> Vec<String> {
        self.list(false)
            .filter(|d| d.has_unique_value)
            .map(|d| d.name.clone())
            .collect()
    }

    /// Adds a custom property.
    pub(crate) fn create(
        &mut self,
        mut def: PropertyDef,
        now_ms: i64,
    ) -> Result<&PropertyDef, PropertyDefError> {
        if self
            .defs
            .get(&def.name)
            .is_some_and(|d| d.archived_ms.is_none())
        {
            return Err(PropertyDefError::AlreadyExists(def.name));
        }
        if !valid_property_name(&def.name) {
            return Err(PropertyDefError::Invalid(format!(
                "Property name '{}' is invalid: use lower-case letters, digits and underscores, starting with a letter.",
                def.name
            )));
        }
        if def.has_unique_value && self.unique_names().len() >= MAX_UNIQUE_PROPERTIES {
            return Err(PropertyDefError::Invalid(format!(
                "Cannot create more than {MAX_UNIQUE_PROPERTIES} unique value properties for this object."
            )));
        }
        check_field_type(def.kind, &def.field_type)?;
        if def.kind == PropertyType::Enumeration
            && def.options.is_empty()
            && def.field_type != "checkbox"
        {
            return Err(PropertyDefError::Invalid(
                "Enumeration properties require at least one option.".to_owned(),
            ));
        }
        def.created_ms = now_ms;
        def.updated_ms = now_ms;
        def.hubspot_defined = false;
        def.archived_ms = None;
        let name = def.name.clone();
        self.defs.insert(name.clone(), def);
        self.defs.get(&name).ok_or(PropertyDefError::NotFound(name))
    }

    /// Changes a custom property's label, description, options, group, field type or visibility.
    pub(crate) fn update(
        &mut self,
        name: &str,
        patch: PropertyPatch,
        now_ms: i64,
    ) -> Result<&PropertyDef, PropertyDefError> {
        let def = self
            .defs
            .get_mut(name)
            .filter(|d| d.archived_ms.is_none())
            .ok_or_else(|| PropertyDefError::NotFound(name.to_owned()))?;
        if def.hubspot_defined {
            return Err(PropertyDefError::Invalid(format!(
                "The property '{name}' is a HubSpot default property; its definition cannot be changed."
            )));
        }
        // A refused change leaves the definition as it was.
        let before = def.clone();
        if let Some(v) = patch.label {
            def.label = v;
        }
        if let Some(v) = patch.description {
            def.description = v;
        }
        if let Some(v) = patch.group_name {
            def.group_name = v;
        }
        if let Some(v) = patch.field_type {
            def.field_type = v;
        }
        if let Some(v) = patch.options {
            def.options = v;
        }
        if let Some(v) = patch.hidden {
            def.hidden = v;
        }
        if let Some(v) = patch.form_field {
            def.form_field = v;
        }
        if let Some(v) = patch.display_order {
            def.display_order = v;
        }
        if let Some(v) = patch.kind {
            def.kind = v;
        }
        if let Err(e) = check_field_type(def.kind, &def.field_type) {
            *def = before;
            return Err(e);
        }
        def.updated_ms = now_ms;
        Ok(def)
    }

    /// Archives a custom property (HubSpot's DELETE).
    pub(crate) fn archive(&mut self, name: &str, now_ms: i64) -> Result<(), PropertyDefError> {
        let def = self
            .defs
            .get_mut(name)
            .filter(|d| d.archived_ms.is_none())
            .ok_or_else(|| PropertyDefError::NotFound(name.to_owned()))?;
        if def.hubspot_defined {
            return Err(PropertyDefError::Invalid(format!(
                "The property '{name}' is a HubSpot default property and cannot be archived."
            )));
        }
        def.archived_ms = Some(now_ms);
        Ok(())
    }

    /// Checks one write's property values; the first problem per property.
    pub(crate) fn check_values(&self, values: &BTreeMap<String, String>) -> Vec<PropertyProblem> {
        values
            .iter()
            .filter_map(|(name, value)| self.check_value(name, value))
            .collect()
    }

    fn check_value(&self, name: &str, value: &str) -> Option<PropertyProblem> {
        let Some(def) = self.get(name) else {
            return Some(PropertyProblem::new(
                name,
                "PROPERTY_DOESNT_EXIST",
                format!("Property \"{name}\" does not exist"),
            ));
        };
        if def.read_only_value {
            return Some(PropertyProblem::new(
                name,
                "READ_ONLY_VALUE",
                format!("\"{name}\" is a read only property; its value cannot be set."),
            ));
        }
        if value.is_empty() {
            return None; // an empty string clears the value
        }
        if name == "email" && !is_valid_email(value) {
            return Some(PropertyProblem::invalid_email(value));
        }
        match def.kind {
            PropertyType::Number if value.trim().parse::<f64>().is_err() => {
                Some(PropertyProblem::new(
                    name,
                    "INVALID_LONG",
                    format!("{value} was not a valid number."),
                ))
            }
            PropertyType::Bool if !matches!(value, "true" | "false") => Some(PropertyProblem::new(
                name,
                "INVALID_BOOLEAN",
                format!("{value} was not a valid boolean (true or false)."),
            )),
            PropertyType::Date | PropertyType::Datetime if parse_instant_ms(value).is_none() => {
                Some(PropertyProblem::new(
                    name,
                    "INVALID_DATE",
                    format!(
                        "{value} was not a valid date: use milliseconds since the epoch or ISO 8601."
                    ),
                ))
            }
            PropertyType::Date => not_midnight(name, value),
            PropertyType::Enumeration => self.check_options(def, value),
            _ => None,
        }
    }

    fn check_options(&self, def: &PropertyDef, value: &str) -> Option<PropertyProblem> {
        // Multi-select (checkbox) values are `;`-separated.
        let bad = value
            .split(';')
            .find(|part| !def.options.iter().any(|o| o.value == *part))?;
        let allowed: Vec<&str> = def.options.iter().map(|o| o.value.as_str()).collect();
        Some(PropertyProblem::new(
            &def.name,
            "INVALID_OPTION",
            format!(
                "{bad} was not one of the allowed options: [{}]",
                allowed.join(", ")
            ),
        ))
    }
}

/// The fields of a property PATCH.
#[derive(Debug, Clone, Default)]
pub(crate) struct PropertyPatch {
    /// New label.
    pub label: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New group.
    pub group_name: Option<String>,
    /// New field type.
    pub field_type: Option<String>,
    /// New options.
    pub options: Option<Vec<PropertyOption>>,
    /// New visibility.
    pub hidden: Option<bool>,
    /// New form flag.
    pub form_field: Option<bool>,
    /// New order.
    pub display_order: Option<i32>,
    /// New type.
    pub kind: Option<PropertyType>,
}

/// The `fieldType`s each `type` allows (HubSpot's docs, Jan 2025); `phone_number`'s pairing is
/// unconfirmed, so it takes the phone and text controls.
fn allowed_field_types(kind: PropertyType) -> &'static [&'static str] {
    match kind {
        PropertyType::String => &[
            "text",
            "textarea",
            "html",
            "phonenumber",
            "file",
            "calculation_equation",
        ],
        PropertyType::Number => &["number", "calculation_equation"],
        PropertyType::Bool => &["booleancheckbox", "calculation_equation"],
        PropertyType::Enumeration => &[
            "select",
            "radio",
            "checkbox",
            "booleancheckbox",
            "calculation_equation",
        ],
        PropertyType::Date | PropertyType::Datetime => &["date"],
        PropertyType::PhoneNumber => &["phonenumber", "text"],
    }
}

fn check_field_type(kind: PropertyType, field_type: &str) -> Result<(), PropertyDefError> {
    let allowed = allowed_field_types(kind);
    if allowed.contains(&field_type) {
        Ok(())
    } else {
        let kind = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Err(PropertyDefError::Invalid(format!(
            "fieldType '{field_type}' is not valid for a property of type '{kind}': use one of {}.",
            allowed.join(", ")
        )))
    }
}

/// HubSpot's refusal of a `date` value that is not at midnight UTC (reported text).
fn not_midnight(name: &str, value: &str) -> Option<PropertyProblem> {
    let ms = parse_instant_ms(value)?;
    let day = 86_400_000;
    let into_day = ms.rem_euclid(day);
    (into_day != 0).then(|| {
        let secs = into_day / 1000;
        PropertyProblem::new(
            name,
            "INVALID_DATE",
            format!(
                "{value} is at {:02}:{:02}:{:02} UTC, not midnight!",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            ),
        )
    })
}

fn valid_property_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 100
}

/// Top-level domains that IANA reserves and never delegates: HubSpot requires a real TLD.
const RESERVED_TLDS: &[&str] = &[
    "test",
    "invalid",
    "localhost",
    "local",
    "example",
    "internal",
];

/// HubSpot's email rule as far as it is known: one `@`, no quotes or spaces, a dotted domain
/// ending in a letters-only top-level domain that IANA delegates.
pub(crate) fn is_valid_email(value: &str) -> bool {
    let Some((local, domain)) = value.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    let tld_ok = labels.last().is_some_and(|tld| {
        tld.len() >= 2
            && tld.chars().all(|c| c.is_ascii_alphabetic())
            && !RESERVED_TLDS.contains(&tld.to_ascii_lowercase().as_str())
    });
    local_ok && domain_ok && tld_ok
}

/// Milliseconds since the epoch from either a millisecond count or an ISO 8601 date/datetime.
pub(crate) fn parse_instant_ms(value: &str) -> Option<i64> {
    let v = value.trim();
    if let Ok(ms) = v.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(dt.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_need_a_real_top_level_domain_and_no_quotes() {
        assert!(is_valid_email("ada@example.com"));
        assert!(is_valid_email("a.b+tag@mail.example.co.uk"));
        assert!(!is_valid_email("bad@"));
        assert!(!is_valid_email("no-at-sign.com"));
        assert!(!is_valid_email("\"quoted\"@example.com"));
        assert!(!is_valid_email("a@localhost"));
        assert!(!is_valid_email("a@host.test"));
        assert!(!is_valid_email("a@host.c0m"));
        assert!(!is_valid_email("a b@example.com"));
    }

    #[test]
    fn unknown_and_read_only_properties_are_refused() {
        let catalog = PropertyCatalog::for_object(CrmObject::Contacts);
        let mut values = BTreeMap::new();
        values.insert("favorite_food".to_owned(), "pizza".to_owned());
        values.insert("hs_object_id".to_owned(), "5".to_owned());
        values.insert("email".to_owned(), "bad@".to_owned());
        let errors: Vec<String> = catalog
            .check_values(&values)
            .into_iter()
            .map(|p| p.error)
            .collect();
        assert_eq!(
            errors,
            ["INVALID_EMAIL", "PROPERTY_DOESNT_EXIST", "READ_ONLY_VALUE"]
        );
    }

    #[test]
    fn dates_must_be_at_midnight_utc_and_field_types_fit_their_type() {
        let mut catalog = PropertyCatalog::for_object(CrmObject::Companies);
        let def = |name: &str, kind, field: &str| PropertyDef {
            field_type: field.to_owned(),
            hubspot_defined: false,
            ..PropertyDef::builtin(name, name, kind, field)
        };
        assert!(matches!(
            catalog.create(def("founded", PropertyType::Date, "text"), 1),
            Err(PropertyDefError::Invalid(_))
        ));
        catalog
            .create(def("founded", PropertyType::Date, "date"), 1)
            .expect("a date with the date control");
        let check = |value: &str| {
            let values = BTreeMap::from([("founded".to_owned(), value.to_owned())]);
            catalog.check_values(&values)
        };
        assert!(check("1430438400000").is_empty(), "2015-05-01, midnight");
        assert!(check("2015-05-01").is_empty());
        let late = check("1430438400001");
        assert_eq!(late[0].error, "INVALID_DATE");
        assert_eq!(
            late[0].message,
            "1430438400001 is at 00:00:00 UTC, not midnight!"
        );
        assert!(
            check("2015-05-01T13:30:00Z")[0]
                .message
                .contains("13:30:00 UTC")
        );
    }

    #[test]
    fn instants_parse_from_millis_and_iso() {
        assert_eq!(parse_instant_ms("1000"), Some(1000));
        assert_eq!(parse_instant_ms("1970-01-01T00:00:01.000Z"), Some(1000));
        assert_eq!(parse_instant_ms("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_instant_ms("yesterday"), None);
    }
}
