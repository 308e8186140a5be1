//! The HubSpot side of a mapping, checked when a job starts: every mapped property must exist
//! on the object with a type its column can hold. A missing one is created in the `crm_sync`
//! property group (created too when missing) when the mapping's `create_properties` allows,
//! with the declared type or the one derived from the column; otherwise the job fails with one
//! line naming the property and the configuration key.

use super::convert::{TypedField, compatible, derived_type};
use super::parse::PROPERTY_KINDS;
use super::{
    CheckedField, CheckedMapping, DeclaredType, MatchKey, ObjectType, PropertyKind, PropertyName,
};
use crate::hubspot::{HubSpotClient, HubSpotError, Property, PropertyCreate, PropertyGroupCreate};
use crate::jobs::RunError;
use std::collections::BTreeSet;

/// The property group the properties crm-sync creates go in.
pub const PROPERTY_GROUP: &str = "crm_sync";

/// Why a mapping's properties are not usable.
#[derive(Debug, thiserror::Error)]
pub enum PropertyError {
    /// The property does not exist and the mapping does not allow creating it.
    #[error(
        "the HubSpot {object} property \"{property}\" ({key}) does not exist: create it in \
         HubSpot, or set {mapping_key}.create_properties = true to let crm-sync create it"
    )]
    Missing {
        /// `contacts` or `companies`.
        object: &'static str,
        /// The property.
        property: PropertyName,
        /// The field's configuration key.
        key: String,
        /// The mapping's configuration key.
        mapping_key: String,
    },
    /// The property's type cannot hold the column's values (or is one crm-sync does not know).
    #[error(
        "the HubSpot {object} property \"{property}\" ({key}) has type {found}, which a {column} \
         column cannot hold; map another column or property"
    )]
    Incompatible {
        /// `contacts` or `companies`.
        object: &'static str,
        /// The property.
        property: PropertyName,
        /// The field's configuration key.
        key: String,
        /// The property's type in HubSpot.
        found: String,
        /// The column's type.
        column: String,
    },
    /// A company match key property whose values HubSpot does not keep unique.
    #[error(
        "the HubSpot {object} property \"{property}\" ({key}) does not require unique values, so \
         it cannot be the match key; use a property created with unique values, or \
         match_key = \"external_key\""
    )]
    NotUnique {
        /// `contacts` or `companies`.
        object: &'static str,
        /// The property.
        property: PropertyName,
        /// The mapping's `match_key` key.
        key: String,
    },
    /// HubSpot refused to create the property or its group.
    #[error("HubSpot refused to create the {object} {what} ({key}): {source}")]
    CreateRefused {
        /// `contacts` or `companies`.
        object: &'static str,
        /// e.g. `property "plan"`.
        what: String,
        /// The configuration key it was created for.
        key: String,
        /// HubSpot's answer.
        source: HubSpotError,
    },
    /// A HubSpot call failed (possibly for a while: rate limits, network).
    #[error("{context}: {source}")]
    HubSpot {
        /// What was being done.
        context: String,
        /// Why.
        source: HubSpotError,
    },
}

impl PropertyError {
    /// How the job ends: a HubSpot failure as [`crate::sync::hubspot_error`] classes it (it may
    /// be retried); a property that does not fit is fatal (only a person can fix it).
    pub fn into_run_error(self) -> RunError {
        let message = self.to_string();
        match self {
            Self::HubSpot { context, source } => crate::sync::hubspot_error(&context, source),
            Self::CreateRefused {
                object,
                what,
                key,
                source,
            } if !matches!(source, HubSpotError::Validation { .. }) => {
                crate::sync::hubspot_error(&format!("creating the {object} {what} ({key})"), source)
            }
            _ => RunError::fatal(message),
        }
    }
}

/// A mapping whose properties exist in HubSpot, with each field's property type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyMapping {
    /// Its fields with both types known, in the mapping's order.
    pub fields: Vec<TypedField>,
    /// The properties this call created (a dry run: would have created).
    pub created: Vec<PropertyName>,
    /// Calls made on the `crm_sync` property group: reads, and creates (a dry run: the
    /// real run's, the create counted when it would make it).
    pub group_calls: (u64, u64),
}

/// Makes sure every property `checked` maps exists on its object with a type its column can
/// hold, creating the missing ones when the mapping allows. One read per property, plus a
/// group read and one create per missing property; creating what another worker created
/// meanwhile is harmless (its 409 is read as "exists").
pub async fn ensure_properties(
    client: &HubSpotClient,
    checked: &CheckedMapping,
) -> Result<ReadyMapping, PropertyError> {
    ready_mapping(client, checked, false).await
}

/// [`ensure_properties`] for a dry run: the same reads, and a missing property the mapping
/// may create is taken with the type it would be created with, never created (it is listed
/// in [`ReadyMapping::created`]).
pub async fn check_properties(
    client: &HubSpotClient,
    checked: &CheckedMapping,
) -> Result<ReadyMapping, PropertyError> {
    ready_mapping(client, checked, true).await
}

async fn ready_mapping(
    client: &HubSpotClient,
    checked: &CheckedMapping,
    dry_run: bool,
) -> Result<ReadyMapping, PropertyError> {
    let mut ensurer = Ensurer {
        client,
        checked,
        group_ready: false,
        group_calls: (0, 0),
        created: Vec::new(),
        dry_run,
    };
    let mut fields = Vec::with_capacity(checked.fields.len());
    for field in &checked.fields {
        let (kind, options) = ensurer.property(field).await?;
        fields.push(TypedField {
            field: field.field.clone(),
            column: field.column.clone(),
            property: kind,
            options,
        });
    }
    Ok(ReadyMapping {
        fields,
        created: ensurer.created,
        group_calls: ensurer.group_calls,
    })
}

struct Ensurer<'a> {
    client: &'a HubSpotClient,
    checked: &'a CheckedMapping,
    group_ready: bool,
    /// Reads and creates of the property group so far.
    group_calls: (u64, u64),
    created: Vec<PropertyName>,
    /// Only say what would be created.
    dry_run: bool,
}

impl Ensurer<'_> {
    fn object(&self) -> ObjectType {
        self.checked.mapping.object
    }

    fn object_word(&self) -> &'static str {
        self.object().path_name()
    }

    /// Whether `field`'s property is the mapping's match key (created with unique values,
    /// required to have them).
    fn is_match_key(&self, field: &CheckedField) -> bool {
        self.object() == ObjectType::Companies
            && matches!(&self.checked.mapping.match_key, MatchKey::Property(p) if *p == field.field.property)
    }

    /// The type of `field`'s property, created first when missing and allowed, with an
    /// enumeration's option values.
    async fn property(
        &mut self,
        field: &CheckedField,
    ) -> Result<(PropertyKind, Option<BTreeSet<String>>), PropertyError> {
        let name = field.field.property.as_str();
        let found = match self.client.get_object_property(self.object(), name).await {
            Ok(property) => property,
            Err(HubSpotError::NotFound { .. })
                if self.checked.mapping.create_properties && self.dry_run =>
            {
                self.ensure_group(&field.key).await?;
                let declared = self.declared(field)?;
                self.created.push(field.field.property.clone());
                return Ok((declared.kind, None));
            }
            Err(HubSpotError::NotFound { .. }) if self.checked.mapping.create_properties => {
                self.create(field).await?
            }
            Err(HubSpotError::NotFound { .. }) => {
                return Err(PropertyError::Missing {
                    object: self.object_word(),
                    property: field.field.property.clone(),
                    key: field.key.clone(),
                    mapping_key: self.checked.mapping.key.clone(),
                });
            }
            Err(source) => {
                return Err(PropertyError::HubSpot {
                    context: format!(
                        "reading the HubSpot {} property \"{name}\" ({})",
                        self.object_word(),
                        field.key
                    ),
                    source,
                });
            }
        };
        let kind = self.fits(field, &found)?;
        let options: BTreeSet<String> = found.options.iter().map(|o| o.value.clone()).collect();
        let options = (kind == PropertyKind::Enumeration && !options.is_empty()).then_some(options);
        Ok((kind, options))
    }

    /// The property's type, when its column can hold its values (and, for a match key, when
    /// HubSpot keeps its values unique).
    fn fits(&self, field: &CheckedField, found: &Property) -> Result<PropertyKind, PropertyError> {
        let kind = PROPERTY_KINDS
            .into_iter()
            .find(|k| k.as_str() == found.property_type)
            .filter(|k| compatible(&field.column, *k))
            .ok_or_else(|| PropertyError::Incompatible {
                object: self.object_word(),
                property: field.field.property.clone(),
                key: field.key.clone(),
                found: found.property_type.clone(),
                column: field.column.describe().to_owned(),
            })?;
        if self.is_match_key(field) && !found.has_unique_value {
            return Err(PropertyError::NotUnique {
                object: self.object_word(),
                property: field.field.property.clone(),
                key: format!("{}.match_key", self.checked.mapping.key),
            });
        }
        Ok(kind)
    }

    /// Creates `field`'s property in the `crm_sync` group; a 409 (created meanwhile) reads it.
    async fn create(&mut self, field: &CheckedField) -> Result<Property, PropertyError> {
        self.ensure_group(&field.key).await?;
        let name = field.field.property.as_str();
        let declared = self.declared(field)?;
        let refused = |source| PropertyError::CreateRefused {
            object: self.object_word(),
            what: format!("property \"{name}\""),
            key: field.key.clone(),
            source,
        };
        let mut definition = PropertyCreate::typed(
            name,
            label_of(field.field.column.as_str()),
            declared.kind,
            declared.field,
            PROPERTY_GROUP,
        )
        .map_err(|e| refused(HubSpotError::InvalidRequest(e.to_string())))?;
        definition.description = Some(format!(
            "Synced by crm-sync with column {} of {} ({}).",
            field.field.column, self.checked.mapping.table, field.key
        ));
        definition.has_unique_value = self.is_match_key(field);
        match self
            .client
            .create_object_property(self.object(), &definition)
            .await
        {
            Ok(property) => {
                tracing::info!(
                    object = self.object_word(),
                    property = name,
                    key = %field.key,
                    "created a HubSpot property"
                );
                self.created.push(field.field.property.clone());
                Ok(property)
            }
            Err(HubSpotError::Conflict { .. }) => self
                .client
                .get_object_property(self.object(), name)
                .await
                .map_err(|source| PropertyError::HubSpot {
                    context: format!(
                        "reading the HubSpot {} property \"{name}\" created meanwhile",
                        self.object_word()
                    ),
                    source,
                }),
            Err(e) => Err(refused(e)),
        }
    }

    /// The type `field`'s property is created with: declared in the mapping, or derived from
    /// its column.
    fn declared(&self, field: &CheckedField) -> Result<DeclaredType, PropertyError> {
        field
            .field
            .declared
            .or_else(|| derived_type(&field.column))
            .ok_or_else(|| PropertyError::Incompatible {
                object: self.object_word(),
                property: field.field.property.clone(),
                key: field.key.clone(),
                found: "none".to_owned(),
                column: field.column.describe().to_owned(),
            })
    }

    /// Creates the `crm_sync` group once per run when HubSpot has none.
    async fn ensure_group(&mut self, key: &str) -> Result<(), PropertyError> {
        if self.group_ready {
            return Ok(());
        }
        self.group_calls.0 += 1;
        match self
            .client
            .get_property_group(self.object(), PROPERTY_GROUP)
            .await
        {
            Ok(_) => {}
            Err(HubSpotError::NotFound { .. }) if self.dry_run => self.group_calls.1 += 1,
            Err(HubSpotError::NotFound { .. }) => {
                self.group_calls.1 += 1;
                let group = PropertyGroupCreate {
                    name: PROPERTY_GROUP.to_owned(),
                    label: "crm-sync".to_owned(),
                    display_order: None,
                };
                match self
                    .client
                    .create_property_group(self.object(), &group)
                    .await
                {
                    Ok(_) | Err(HubSpotError::Conflict { .. }) => {}
                    Err(source) => {
                        return Err(PropertyError::CreateRefused {
                            object: self.object_word(),
                            what: format!("property group \"{PROPERTY_GROUP}\""),
                            key: key.to_owned(),
                            source,
                        });
                    }
                }
            }
            Err(source) => {
                return Err(PropertyError::HubSpot {
                    context: format!(
                        "reading the HubSpot {} property group \"{PROPERTY_GROUP}\"",
                        self.object_word()
                    ),
                    source,
                });
            }
        }
        self.group_ready = true;
        Ok(())
    }
}

/// A label from a column name: `plan_tier` → `Plan tier`.
fn label_of(column: &str) -> String {
    let spaced = column.trim_matches('_').replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => column.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::label_of;

    #[test]
    fn labels_read_like_words() {
        assert_eq!(label_of("plan_tier"), "Plan tier");
        assert_eq!(label_of("_x"), "X");
        assert_eq!(label_of("__"), "__");
    }
}
