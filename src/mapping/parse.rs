//! `[[sync.objects]]` as written in configuration, and its parsing into [`ObjectMapping`]s:
//! everything that can be checked without a database is checked here, and a problem is a
//! [`ConfigError`] naming its key (`sync.objects[1].fields.plan.owner`).

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::{
    ColumnName, CompanyAssociation, DeclaredType, EXTERNAL_KEY_WORD, FieldMapping, FieldType, Flow,
    HubSpotIdStore, MatchKey, ObjectMapping, ObjectType, Owner, PropertyKind, PropertyName,
    TableRef, with_defaults,
};
use crate::config::{ConfigError, DatabaseKind, invalid};

/// One `[[sync.objects]]` entry as written; [`parse_all`] checks it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawObjectMapping {
    /// `contacts` or `companies`.
    object: String,
    /// `table`, or `schema.table` on PostgreSQL.
    table: String,
    /// The local unique key column.
    key_column: String,
    /// The property that matches records on both sides (contacts: `email`; companies:
    /// `external_key`, the default, or a mapped property with unique values).
    #[serde(default)]
    match_key: Option<String>,
    /// A column of the table holding the HubSpot id; absent: crm-sync's own link table.
    #[serde(default)]
    hubspot_id_column: Option<String>,
    /// Whether missing HubSpot properties are created.
    #[serde(default)]
    create_properties: bool,
    /// A contacts mapping's column holding the local key of the contact's primary company.
    #[serde(default)]
    company_column: Option<String>,
    /// `push`, `pull` or `both` (the default) for `company_column`.
    #[serde(default)]
    company_direction: Option<String>,
    /// `local` (the default) or `hubspot`, with `company_direction = "both"` only.
    #[serde(default)]
    company_owner: Option<String>,
    /// Column → field.
    #[serde(default)]
    fields: BTreeMap<String, RawField>,
}

/// One `[sync.objects.fields]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    /// The HubSpot property's internal name.
    property: String,
    /// `push`, `pull` or `both`.
    direction: String,
    /// `local` or `hubspot`; required with `both`, refused otherwise.
    #[serde(default)]
    owner: Option<String>,
    /// The HubSpot `type` to create the property with.
    #[serde(default, rename = "type")]
    kind: Option<String>,
    /// The HubSpot `fieldType` to create the property with.
    #[serde(default)]
    field_type: Option<String>,
}

/// Every property type HubSpot lets an integration create.
pub(crate) const PROPERTY_KINDS: [PropertyKind; 7] = [
    PropertyKind::String,
    PropertyKind::Number,
    PropertyKind::Bool,
    PropertyKind::Enumeration,
    PropertyKind::Date,
    PropertyKind::Datetime,
    PropertyKind::PhoneNumber,
];

/// Every form control HubSpot knows.
const FIELD_TYPES: [FieldType; 12] = [
    FieldType::Text,
    FieldType::Textarea,
    FieldType::Html,
    FieldType::PhoneNumber,
    FieldType::File,
    FieldType::Number,
    FieldType::BooleanCheckbox,
    FieldType::Select,
    FieldType::Radio,
    FieldType::Checkbox,
    FieldType::Date,
    FieldType::CalculationEquation,
];

/// The mappings in effect: every configured entry checked (the first problem is the error),
/// then the built-in default of each object left unmapped ([`with_defaults`]).
pub fn parse_all(
    raw: &[RawObjectMapping],
    database: DatabaseKind,
) -> Result<Vec<ObjectMapping>, ConfigError> {
    let mut mapped: HashMap<ObjectType, String> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, entry) in raw.iter().enumerate() {
        let key = format!("sync.objects[{i}]");
        let mapping = entry.parse(&key, database)?;
        if let Some(first) = mapped.get(&mapping.object) {
            return Err(invalid(
                &format!("{key}.object"),
                format!(
                    "{} is already mapped by {first}; map each object once",
                    mapping.object.path_name()
                ),
            ));
        }
        mapped.insert(mapping.object, key);
        out.push(mapping);
    }
    Ok(with_defaults(out))
}

impl RawObjectMapping {
    fn parse(&self, key: &str, database: DatabaseKind) -> Result<ObjectMapping, ConfigError> {
        let object = parse_object(&format!("{key}.object"), &self.object)?;
        let table = parse_table(&format!("{key}.table"), &self.table, database)?;
        let key_column = ColumnName::parse(&self.key_column)
            .map_err(|e| invalid(&format!("{key}.key_column"), e.to_string()))?;
        let fields = self.parse_fields(key)?;
        let match_key = parse_match_key(key, object, self.match_key.as_deref(), &fields)?;
        let hubspot_id = match &self.hubspot_id_column {
            None => HubSpotIdStore::LinkTable,
            Some(text) => {
                let id_key = format!("{key}.hubspot_id_column");
                let column =
                    ColumnName::parse(text).map_err(|e| invalid(&id_key, e.to_string()))?;
                if let Some(field) = fields.iter().find(|f| f.column == column) {
                    return Err(invalid(
                        &id_key,
                        format!(
                            "column \"{column}\" is also mapped to the property \"{}\"; the \
                             HubSpot id column is crm-sync's to write",
                            field.property
                        ),
                    ));
                }
                HubSpotIdStore::Column(column)
            }
        };
        let company = self.company(key, object, &key_column, &hubspot_id, &fields)?;
        Ok(ObjectMapping {
            object,
            table,
            key_column,
            match_key,
            hubspot_id,
            create_properties: self.create_properties,
            fields,
            company,
            key: key.to_owned(),
        })
    }

    /// `company_column` with its direction and owner: a contacts mapping's only, on a column
    /// that is neither the key, the HubSpot id column nor a mapped field's (each is written by
    /// something else).
    fn company(
        &self,
        key: &str,
        object: ObjectType,
        key_column: &ColumnName,
        hubspot_id: &HubSpotIdStore,
        fields: &[FieldMapping],
    ) -> Result<Option<CompanyAssociation>, ConfigError> {
        let column_key = format!("{key}.company_column");
        let Some(text) = &self.company_column else {
            for (name, set) in [
                ("company_direction", self.company_direction.is_some()),
                ("company_owner", self.company_owner.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        &format!("{key}.{name}"),
                        "applies to company_column, which is not set",
                    ));
                }
            }
            return Ok(None);
        };
        if object != ObjectType::Contacts {
            return Err(invalid(
                &column_key,
                "only a contacts mapping has a company column (a contact's primary company)",
            ));
        }
        let column = ColumnName::parse(text).map_err(|e| invalid(&column_key, e.to_string()))?;
        if let Some(field) = fields.iter().find(|f| f.column == column) {
            return Err(invalid(
                &column_key,
                format!(
                    "column \"{column}\" is also mapped to the property \"{}\"; the company \
                     column holds a company's local key, which crm-sync writes as an association",
                    field.property
                ),
            ));
        }
        if column == *key_column || *hubspot_id == HubSpotIdStore::Column(column.clone()) {
            return Err(invalid(
                &column_key,
                format!(
                    "column \"{column}\" is the table's key or HubSpot id column; name the \
                     column holding the company's local key"
                ),
            ));
        }
        let owner_key = format!("{key}.company_owner");
        let owner = self
            .company_owner
            .as_deref()
            .map(|text| match text.trim() {
                "local" => Ok(Owner::Local),
                "hubspot" => Ok(Owner::HubSpot),
                other => Err(invalid(
                    &owner_key,
                    format!("{other:?} is neither \"local\" nor \"hubspot\""),
                )),
            })
            .transpose()?;
        let one_way = |flow: Flow| match owner {
            None => Ok(flow),
            Some(_) => Err(invalid(
                &owner_key,
                "only company_direction = \"both\" has an owner; remove company_owner",
            )),
        };
        let flow = match self.company_direction.as_deref().map(str::trim) {
            Some("push") => one_way(Flow::Push)?,
            Some("pull") => one_way(Flow::Pull)?,
            // The local side wins by default, as for the built-in `contacts.company_id`.
            None | Some("both") => Flow::Both(owner.unwrap_or(Owner::Local)),
            Some(other) => {
                return Err(invalid(
                    &format!("{key}.company_direction"),
                    format!("{other:?} is not \"push\", \"pull\" or \"both\""),
                ));
            }
        };
        Ok(Some(CompanyAssociation { column, flow }))
    }

    /// The fields, sorted by column; two fields mapped to one property are refused.
    fn parse_fields(&self, key: &str) -> Result<Vec<FieldMapping>, ConfigError> {
        if self.fields.is_empty() {
            return Err(invalid(
                &format!("{key}.fields"),
                "maps no column; add at least one, e.g. email = { property = \"email\", \
                 direction = \"both\", owner = \"local\" }",
            ));
        }
        let mut fields: Vec<FieldMapping> = Vec::with_capacity(self.fields.len());
        for (column, raw) in &self.fields {
            let field_key = format!("{key}.fields.{column}");
            let field = raw.parse(&field_key, column)?;
            if let Some(earlier) = fields.iter().find(|f| f.property == field.property) {
                return Err(invalid(
                    &format!("{field_key}.property"),
                    format!(
                        "the property \"{}\" is already mapped from column \"{}\"; map each \
                         property once",
                        field.property, earlier.column
                    ),
                ));
            }
            fields.push(field);
        }
        Ok(fields)
    }
}

impl RawField {
    fn parse(&self, key: &str, column: &str) -> Result<FieldMapping, ConfigError> {
        let column = ColumnName::parse(column).map_err(|e| invalid(key, e.to_string()))?;
        let property = PropertyName::parse(&self.property)
            .map_err(|e| invalid(&format!("{key}.property"), e.to_string()))?;
        let flow = self.flow(key)?;
        let declared = self.declared(key)?;
        Ok(FieldMapping {
            column,
            property,
            flow,
            declared,
        })
    }

    /// `direction` and `owner` together: an owner is required both ways and refused one way.
    fn flow(&self, key: &str) -> Result<Flow, ConfigError> {
        let owner_key = format!("{key}.owner");
        let owner = self
            .owner
            .as_deref()
            .map(|text| match text.trim() {
                "local" => Ok(Owner::Local),
                "hubspot" => Ok(Owner::HubSpot),
                other => Err(invalid(
                    &owner_key,
                    format!("{other:?} is neither \"local\" nor \"hubspot\""),
                )),
            })
            .transpose()?;
        let one_way = |direction: &str, flow: Flow| match owner {
            None => Ok(flow),
            Some(_) => Err(invalid(
                &owner_key,
                format!(
                    "only a field with direction \"both\" has an owner; a {direction} field \
                     always takes the value of its source, so remove owner"
                ),
            )),
        };
        match self.direction.trim() {
            "push" => one_way("push", Flow::Push),
            "pull" => one_way("pull", Flow::Pull),
            "both" => owner.map(Flow::Both).ok_or_else(|| {
                invalid(
                    &owner_key,
                    "is required with direction \"both\": say which side wins when both \
                     changed, \"local\" or \"hubspot\"",
                )
            }),
            other => Err(invalid(
                &format!("{key}.direction"),
                format!("{other:?} is not \"push\", \"pull\" or \"both\""),
            )),
        }
    }

    /// `type` and `field_type`, checked as a pair HubSpot allows.
    fn declared(&self, key: &str) -> Result<Option<DeclaredType>, ConfigError> {
        let field = self
            .field_type
            .as_deref()
            .map(|text| {
                FIELD_TYPES
                    .into_iter()
                    .find(|f| f.as_str() == text.trim())
                    .ok_or_else(|| {
                        invalid(
                            &format!("{key}.field_type"),
                            format!(
                                "{text:?} is not a HubSpot field type; use one of {}",
                                names(FIELD_TYPES.iter().map(|f| f.as_str()))
                            ),
                        )
                    })
            })
            .transpose()?;
        let Some(text) = self.kind.as_deref() else {
            return match field {
                None => Ok(None),
                Some(_) => Err(invalid(
                    &format!("{key}.field_type"),
                    "needs a type next to it (e.g. type = \"string\")",
                )),
            };
        };
        let kind = PROPERTY_KINDS
            .into_iter()
            .find(|k| k.as_str() == text.trim())
            .ok_or_else(|| {
                invalid(
                    &format!("{key}.type"),
                    format!(
                        "{text:?} is not a HubSpot property type; use one of {}",
                        names(PROPERTY_KINDS.iter().map(|k| k.as_str()))
                    ),
                )
            })?;
        let allowed = kind.field_types();
        let field = match field {
            None => allowed[0],
            Some(field) if allowed.contains(&field) => field,
            Some(field) => {
                return Err(invalid(
                    &format!("{key}.field_type"),
                    format!(
                        "a {} property cannot use the {} field type; use one of {}",
                        kind.as_str(),
                        field.as_str(),
                        names(allowed.iter().map(|f| f.as_str()))
                    ),
                ));
            }
        };
        Ok(Some(DeclaredType { kind, field }))
    }
}

fn names<'a>(words: impl Iterator<Item = &'a str>) -> String {
    words.collect::<Vec<_>>().join(", ")
}

fn parse_object(key: &str, text: &str) -> Result<ObjectType, ConfigError> {
    match text.trim() {
        "contacts" => Ok(ObjectType::Contacts),
        "companies" => Ok(ObjectType::Companies),
        other => Err(invalid(
            key,
            format!("{other:?} is not an object crm-sync syncs; use \"contacts\" or \"companies\""),
        )),
    }
}

fn parse_table(key: &str, text: &str, database: DatabaseKind) -> Result<TableRef, ConfigError> {
    let table = TableRef::parse(text).map_err(|e| invalid(key, e.to_string()))?;
    if table.schema.is_some() && database == DatabaseKind::Sqlite {
        return Err(invalid(
            key,
            format!("{text:?} names a schema, which only PostgreSQL has; write the table alone"),
        ));
    }
    Ok(table)
}

/// `match_key`: contacts match by `email`; companies by crm-sync's external key (the default)
/// or a mapped property with unique values, never by `domain` (not unique in HubSpot).
fn parse_match_key(
    key: &str,
    object: ObjectType,
    text: Option<&str>,
    fields: &[FieldMapping],
) -> Result<MatchKey, ConfigError> {
    let match_key = format!("{key}.match_key");
    let text = text.map(str::trim);
    match (object, text) {
        (ObjectType::Contacts, None | Some("email")) => {
            if !fields.iter().any(|f| f.property.as_str() == "email") {
                return Err(invalid(
                    &match_key,
                    "contacts match by \"email\", so one field must map to the property \"email\"",
                ));
            }
            Ok(MatchKey::Property(PropertyName::trusted("email")))
        }
        (ObjectType::Contacts, Some(other)) => Err(invalid(
            &match_key,
            format!(
                "{other:?}: contacts match by \"email\", the one contact property HubSpot keeps \
                 unique"
            ),
        )),
        (ObjectType::Companies, None) => Ok(MatchKey::ExternalKey),
        (ObjectType::Companies, Some(EXTERNAL_KEY_WORD)) => Ok(MatchKey::ExternalKey),
        (ObjectType::Companies, Some(refused @ ("domain" | "name"))) => Err(invalid(
            &match_key,
            format!(
                "{refused:?} is not unique in HubSpot (creating a company with an existing \
                 domain makes a second one, and upsert by domain is refused); companies match \
                 by crm-sync's external key (\"{EXTERNAL_KEY_WORD}\", the default) or by a \
                 mapped property with unique values"
            ),
        )),
        (ObjectType::Companies, Some(property)) => {
            match fields.iter().find(|f| f.property.as_str() == property) {
                Some(field) => Ok(MatchKey::Property(field.property.clone())),
                None => Err(invalid(
                    &match_key,
                    format!(
                        "{property:?} is not the property of any field; map a column to it, or \
                         use \"{EXTERNAL_KEY_WORD}\""
                    ),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;
    use crate::config::tests::{dir_with, env};
    use crate::mapping::{
        DEFAULT_CONTACTS_KEY, Direction, FieldType, Flow, HubSpotIdStore, MatchKey, ObjectMapping,
        ObjectType, Owner, PropertyKind,
    };

    fn objects_of(toml: Option<&str>) -> Vec<ObjectMapping> {
        let dir = dir_with(toml);
        Settings::load(dir.path(), &env(&[]))
            .expect("settings load")
            .sync
            .objects
    }

    fn error_of(toml: &str) -> String {
        let dir = dir_with(Some(toml));
        let e = Settings::load(dir.path(), &env(&[]))
            .expect_err("must be refused")
            .to_string();
        assert_eq!(e.lines().count(), 1, "one line: {e}");
        e
    }

    const USERS: &str = r#"
[[sync.objects]]
object = "contacts"
table = "users"
key_column = "id"
create_properties = true

[sync.objects.fields]
email = { property = "email", direction = "both", owner = "local" }
full_name = { property = "firstname", direction = "push" }
plan = { property = "plan_tier", direction = "both", owner = "hubspot", type = "enumeration", field_type = "checkbox" }
score = { property = "score", direction = "pull", type = "number" }
"#;

    #[test]
    fn without_entries_contacts_map_to_todays_table_exactly() {
        let objects = objects_of(None);
        assert_eq!(objects, [ObjectMapping::default_contacts()]);
        let contacts = &objects[0];
        assert_eq!(contacts.table.to_string(), "contacts");
        assert_eq!(contacts.key_column.as_str(), "id");
        assert_eq!(
            contacts.hubspot_id,
            HubSpotIdStore::Column(crate::mapping::ColumnName::parse("hs_object_id").unwrap())
        );
        let pairs: Vec<(&str, &str, Flow)> = contacts
            .fields
            .iter()
            .map(|f| (f.column.as_str(), f.property.as_str(), f.flow))
            .collect();
        assert_eq!(
            pairs,
            [
                ("email", "email", Flow::Both(Owner::Local)),
                ("first_name", "firstname", Flow::Both(Owner::Local)),
                ("last_name", "lastname", Flow::Both(Owner::Local)),
            ]
        );
        assert_eq!(contacts.key, DEFAULT_CONTACTS_KEY);
    }

    #[test]
    fn the_shipped_default_file_changes_nothing() {
        let dir = dir_with(None);
        let shipped = include_str!("../../config/default.toml");
        std::fs::write(dir.path().join("config/default.toml"), shipped)
            .or_else(|_| {
                std::fs::create_dir_all(dir.path().join("config"))?;
                std::fs::write(dir.path().join("config/default.toml"), shipped)
            })
            .expect("write");
        let objects = Settings::load(dir.path(), &env(&[])).unwrap().sync.objects;
        assert_eq!(objects, [ObjectMapping::default_contacts()]);
    }

    #[test]
    fn a_company_column_syncs_both_ways_owned_locally_unless_configured() {
        let with = |extra: &str| {
            USERS.replace(
                "key_column = \"id\"",
                &format!("key_column = \"id\"\n{extra}"),
            )
        };
        let company = |toml: &str| objects_of(Some(toml))[0].company.clone();
        assert_eq!(company(USERS), None);
        let column = crate::mapping::ColumnName::parse("company_id").unwrap();
        assert_eq!(
            company(&with("company_column = \"company_id\"")),
            Some(super::CompanyAssociation {
                column: column.clone(),
                flow: Flow::Both(super::Owner::Local),
            })
        );
        assert_eq!(
            company(&with(
                "company_column = \"company_id\"\ncompany_owner = \"hubspot\""
            ))
            .map(|c| c.flow),
            Some(Flow::Both(super::Owner::HubSpot))
        );
        assert_eq!(
            company(&with(
                "company_column = \"company_id\"\ncompany_direction = \"push\""
            ))
            .map(|c| c.flow),
            Some(Flow::Push)
        );
    }

    #[test]
    fn an_entry_maps_a_users_own_table_with_typed_fields() {
        let objects = objects_of(Some(USERS));
        assert_eq!(
            objects.len(),
            1,
            "contacts are mapped, so no default is added"
        );
        let users = &objects[0];
        assert_eq!(users.object, ObjectType::Contacts);
        assert_eq!(users.key, "sync.objects[0]");
        assert_eq!(users.hubspot_id, HubSpotIdStore::LinkTable);
        assert_eq!(
            users.match_key,
            MatchKey::Property(crate::mapping::PropertyName::parse("email").unwrap())
        );
        assert!(users.create_properties);
        let plan = users.field_for("plan_tier").expect("plan");
        assert_eq!(plan.flow, Flow::Both(Owner::HubSpot));
        let declared = plan.declared.expect("declared");
        assert_eq!(
            (declared.kind, declared.field),
            (PropertyKind::Enumeration, FieldType::Checkbox)
        );
        let score = users.field_for("score").expect("score");
        assert_eq!(score.flow.direction(), Direction::Pull);
        assert_eq!(
            score.declared.map(|d| d.field),
            Some(FieldType::Number),
            "the plain field type of the declared type"
        );
    }

    #[test]
    fn companies_match_by_the_external_key_and_contacts_keep_their_default() {
        let objects = objects_of(Some(
            r#"
[[sync.objects]]
object = "companies"
table = "accounts"
key_column = "id"
fields.name = { property = "name", direction = "both", owner = "local" }
fields.domain = { property = "domain", direction = "push" }
"#,
        ));
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0], ObjectMapping::default_contacts());
        assert_eq!(objects[1].match_key, MatchKey::ExternalKey);
    }

    #[test]
    fn each_bad_entry_is_refused_naming_its_key() {
        let entry = |object: &str, extra: &str, fields: &str| {
            format!(
                "[[sync.objects]]\nobject = \"{object}\"\ntable = \"users\"\nkey_column = \"id\"\n{extra}\n[sync.objects.fields]\n{fields}\n"
            )
        };
        let email = "email = { property = \"email\", direction = \"both\", owner = \"local\" }\n";
        for (toml, key, words) in [
            (
                entry("deals", "", email),
                "sync.objects[0].object",
                "\"deals\"",
            ),
            (
                entry(
                    "contacts",
                    "",
                    &format!("{email}plan = {{ property = \"plan\", direction = \"both\" }}"),
                ),
                "sync.objects[0].fields.plan.owner",
                "is required with direction \"both\"",
            ),
            (
                entry(
                    "contacts",
                    "",
                    &format!(
                        "{email}plan = {{ property = \"plan\", direction = \"push\", owner = \"local\" }}"
                    ),
                ),
                "sync.objects[0].fields.plan.owner",
                "only a field with direction \"both\" has an owner",
            ),
            (
                entry(
                    "contacts",
                    "",
                    &format!("{email}plan = {{ property = \"plan\", direction = \"sideways\" }}"),
                ),
                "sync.objects[0].fields.plan.direction",
                "\"sideways\"",
            ),
            (
                entry(
                    "contacts",
                    "",
                    &format!(
                        "{email}name = {{ property = \"firstname\", direction = \"push\" }}\nfirst = {{ property = \"firstname\", direction = \"push\" }}"
                    ),
                ),
                "sync.objects[0].fields.name.property",
                "already mapped from column \"first\"",
            ),
            (
                entry(
                    "contacts",
                    "",
                    &format!("{email}plan = {{ property = \"Plan Tier\", direction = \"push\" }}"),
                ),
                "sync.objects[0].fields.plan.property",
                "internal name",
            ),
            (
                entry(
                    "contacts",
                    "",
                    &format!(
                        "{email}plan = {{ property = \"plan\", direction = \"push\", type = \"number\", field_type = \"text\" }}"
                    ),
                ),
                "sync.objects[0].fields.plan.field_type",
                "a number property cannot use the text field type",
            ),
            (
                entry(
                    "contacts",
                    "",
                    &format!(
                        "{email}plan = {{ property = \"plan\", direction = \"push\", type = \"money\" }}"
                    ),
                ),
                "sync.objects[0].fields.plan.type",
                "\"money\"",
            ),
            (
                entry(
                    "contacts",
                    "",
                    &format!(
                        "{email}plan = {{ property = \"plan\", direction = \"push\", field_type = \"text\" }}"
                    ),
                ),
                "sync.objects[0].fields.plan.field_type",
                "needs a type",
            ),
            (
                entry(
                    "contacts",
                    "",
                    "name = { property = \"firstname\", direction = \"push\" }",
                ),
                "sync.objects[0].match_key",
                "\"email\"",
            ),
            (
                entry(
                    "companies",
                    "match_key = \"domain\"",
                    "domain = { property = \"domain\", direction = \"push\" }",
                ),
                "sync.objects[0].match_key",
                "not unique in HubSpot",
            ),
            (
                entry(
                    "companies",
                    "match_key = \"account_id\"",
                    "domain = { property = \"domain\", direction = \"push\" }",
                ),
                "sync.objects[0].match_key",
                "not the property of any field",
            ),
            (
                entry("contacts", "hubspot_id_column = \"email\"", email),
                "sync.objects[0].hubspot_id_column",
                "also mapped",
            ),
            (
                entry("contacts", "", ""),
                "sync.objects[0].fields",
                "maps no column",
            ),
            (
                entry(
                    "contacts",
                    "",
                    &format!(
                        "{email}\"full name\" = {{ property = \"firstname\", direction = \"push\" }}"
                    ),
                ),
                "sync.objects[0].fields.full name",
                "not a plain SQL name",
            ),
            (
                format!(
                    "{}{}",
                    entry("contacts", "", email),
                    entry("contacts", "", email)
                ),
                "sync.objects[1].object",
                "contacts is already mapped by sync.objects[0]",
            ),
            (
                entry("contacts", "", email).replace("\"users\"", "\"crm.users\""),
                "sync.objects[0].table",
                "only PostgreSQL",
            ),
        ] {
            let e = error_of(&toml);
            assert!(e.contains(&format!("{key}: ")), "{key} in: {e}");
            assert!(e.contains(words), "{words:?} in: {e}");
        }
    }
}
