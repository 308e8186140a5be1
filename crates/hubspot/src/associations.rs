//! Associations v4 (`/crm/v4/associations/{from}/{to}/batch/...`): batch read, create (with
//! types), archive and labels archive, and typed helpers for the pair the sync uses, contacts
//! and their companies.
//!
//! Types are matched by number, never by label: HubSpot renames labels ("Primary" became
//! "Contact with Primary Company"), not numbers. Writing types replaces the pair's label list,
//! so a write resends every type that must stay. These calls spend the associations API's own
//! 10-second budget ([`crate::Budget::Associations`]).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use super::batch::{Batch, BatchItemError, BatchOutcome, IndexedResult};
use super::client::HubSpotClient;
use super::error::{ApiErrorDetails, HubSpotError, classify};
use super::models::ObjectType;
use super::retry::Operation;
use crate::ids::{CompanyId, HsObjectId};

/// The most inputs one batch read takes (HubSpot refuses more since 2025-02-10).
pub const MAX_ASSOCIATION_READ: usize = 1_000;

/// An association type, known by its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AssociationTypeId {
    /// 279: contact → company, unlabelled.
    ContactToCompany,
    /// 1: contact → company, the contact's primary company.
    ContactToCompanyPrimary,
    /// 280: company → contact, unlabelled.
    CompanyToContact,
    /// 2: company → contact, the contact's primary company seen from the company.
    CompanyToContactPrimary,
    /// Any other type (custom labels, other objects).
    Other(i32),
}

impl AssociationTypeId {
    /// HubSpot's number.
    pub fn id(self) -> i32 {
        match self {
            Self::ContactToCompany => 279,
            Self::ContactToCompanyPrimary => 1,
            Self::CompanyToContact => 280,
            Self::CompanyToContactPrimary => 2,
            Self::Other(id) => id,
        }
    }

    /// The type a number names.
    pub fn from_id(id: i32) -> Self {
        match id {
            279 => Self::ContactToCompany,
            1 => Self::ContactToCompanyPrimary,
            280 => Self::CompanyToContact,
            2 => Self::CompanyToContactPrimary,
            other => Self::Other(other),
        }
    }

    /// Whether it marks the contact's primary company (1 or 2).
    pub fn is_primary(self) -> bool {
        matches!(
            self,
            Self::ContactToCompanyPrimary | Self::CompanyToContactPrimary
        )
    }

    /// The unlabelled type from `from` to `to`, when HubSpot defines one this client knows.
    pub fn unlabelled(from: ObjectType, to: ObjectType) -> Option<Self> {
        match (from, to) {
            (ObjectType::Contacts, ObjectType::Companies) => Some(Self::ContactToCompany),
            (ObjectType::Companies, ObjectType::Contacts) => Some(Self::CompanyToContact),
            _ => None,
        }
    }

    /// The primary type from `from` to `to`, when HubSpot defines one this client knows.
    pub fn primary(from: ObjectType, to: ObjectType) -> Option<Self> {
        match (from, to) {
            (ObjectType::Contacts, ObjectType::Companies) => Some(Self::ContactToCompanyPrimary),
            (ObjectType::Companies, ObjectType::Contacts) => Some(Self::CompanyToContactPrimary),
            _ => None,
        }
    }
}

impl Serialize for AssociationTypeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(self.id())
    }
}

impl<'de> Deserialize<'de> for AssociationTypeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        i32::deserialize(d).map(Self::from_id)
    }
}

/// Who defined an association type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AssociationCategory {
    /// HubSpot's own types (279, 280, 1, 2, ...).
    HubspotDefined,
    /// Labels an account's users defined.
    UserDefined,
    /// Labels an integrator defined.
    IntegratorDefined,
    /// Work associations.
    Work,
    /// A category this client does not know.
    #[serde(other)]
    Unknown,
}

/// A type to write: `{associationCategory, associationTypeId}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationSpec {
    /// The category.
    #[serde(rename = "associationCategory")]
    pub category: AssociationCategory,
    /// The type.
    #[serde(rename = "associationTypeId")]
    pub type_id: AssociationTypeId,
}

impl AssociationSpec {
    /// One of HubSpot's own types.
    pub fn hubspot(type_id: AssociationTypeId) -> Self {
        Self {
            category: AssociationCategory::HubspotDefined,
            type_id,
        }
    }
}

/// A type a read found on a pair, with the label HubSpot shows today (informative only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationLabel {
    /// The category.
    pub category: AssociationCategory,
    /// The type, by number.
    pub type_id: AssociationTypeId,
    /// Its label text (absent or null for the unlabelled type); never match on it.
    #[serde(default)]
    pub label: Option<String>,
}

/// A record associated with the record read, and the types between them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociatedRecord {
    /// The other record's id (HubSpot's spec says string; numbers are accepted too).
    #[serde(rename = "toObjectId", deserialize_with = "id_text")]
    pub id: String,
    /// The types between the two.
    #[serde(rename = "associationTypes", default)]
    pub types: Vec<AssociationLabel>,
}

impl AssociatedRecord {
    /// Whether one of the types is a primary one (1 or 2).
    pub fn is_primary(&self) -> bool {
        self.types.iter().any(|t| t.type_id.is_primary())
    }
}

/// One input of a batch read: a record and, for later pages, the cursor of its next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssociationReadInput {
    /// The record whose associations to read.
    pub id: String,
    /// `paging.next.after` of the previous page of this record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl AssociationReadInput {
    /// The first page of `id`'s associations.
    pub fn first(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            after: None,
        }
    }
}

/// One record's page of a batch read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordAssociations {
    /// The record read.
    pub from: String,
    /// The records associated with it on this page.
    pub to: Vec<AssociatedRecord>,
    /// The cursor of the next page of this record, when there is one.
    pub next_after: Option<String>,
}

/// The answer to a batch read.
#[derive(Debug, Clone)]
pub struct AssociationReadOutcome {
    /// One entry per record found.
    pub results: Vec<RecordAssociations>,
    /// Records HubSpot reports as not found (unknown, archived, merged away).
    pub missing: Vec<String>,
    /// Any other per-input errors.
    pub errors: Vec<BatchItemError>,
}

/// A pair to write, with the types it must have afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationInput {
    /// The `from` record.
    pub from: String,
    /// The `to` record.
    pub to: String,
    /// Every type the pair keeps (a write replaces the pair's label list).
    pub types: Vec<AssociationSpec>,
}

/// A pair's labels after a write (`LabelsBetweenObjectPair`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationLabels {
    /// The `from` record.
    #[serde(deserialize_with = "id_text")]
    pub from_object_id: String,
    /// The `to` record.
    #[serde(deserialize_with = "id_text")]
    pub to_object_id: String,
    /// The label texts (informative only).
    #[serde(default)]
    pub labels: Vec<String>,
}

/// Pairs to remove entirely: every type between `from` and each of `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationArchive {
    /// The `from` record.
    pub from: String,
    /// The records to dissociate from it.
    pub to: Vec<String>,
}

/// A contact and one of its companies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompanyLink {
    /// The company.
    pub company: CompanyId,
    /// Whether it is the contact's primary company.
    pub primary: bool,
}

/// A contact→company association to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactCompanyLink {
    /// The contact.
    pub contact: HsObjectId,
    /// The company.
    pub company: CompanyId,
    /// Make it the contact's primary company (HubSpot demotes the previous one); false writes
    /// only the unlabelled type, which removes a primary label the pair had.
    pub primary: bool,
}

#[derive(Debug, Deserialize)]
struct RawRead {
    #[serde(default)]
    results: Vec<RawRecordAssociations>,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct RawRecordAssociations {
    from: RawId,
    #[serde(default)]
    to: Vec<AssociatedRecord>,
    #[serde(default)]
    paging: Option<RawPaging>,
}

#[derive(Debug, Deserialize)]
struct RawId {
    #[serde(deserialize_with = "id_text")]
    id: String,
}

#[derive(Debug, Deserialize)]
struct RawPaging {
    #[serde(default)]
    next: Option<RawNext>,
}

#[derive(Debug, Deserialize)]
struct RawNext {
    #[serde(deserialize_with = "id_text")]
    after: String,
}

#[derive(Debug, Deserialize)]
struct RawLabels {
    #[serde(default)]
    results: Vec<AssociationLabels>,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

/// Ids as text, whether HubSpot sends them as strings or numbers.
fn id_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "an id is {other}, expected a string or a number"
        ))),
    }
}

fn batch_path(from: ObjectType, to: ObjectType, action: &str) -> String {
    format!(
        "/crm/v4/associations/{}/{}/batch/{action}",
        from.path_name(),
        to.path_name()
    )
}

impl HubSpotClient {
    /// One page of associations of up to 1,000 records (`batch/read`); records HubSpot does
    /// not find are listed in `missing`. More than 1,000 inputs is refused before sending.
    pub async fn read_associations(
        &self,
        from: ObjectType,
        to: ObjectType,
        inputs: &[AssociationReadInput],
    ) -> Result<AssociationReadOutcome, HubSpotError> {
        if inputs.len() > MAX_ASSOCIATION_READ {
            return Err(HubSpotError::InvalidRequest(format!(
                "an association batch read takes at most {MAX_ASSOCIATION_READ} inputs, got {}",
                inputs.len()
            )));
        }
        if inputs.is_empty() {
            return Ok(AssociationReadOutcome {
                results: Vec::new(),
                missing: Vec::new(),
                errors: Vec::new(),
            });
        }
        let url = self.endpoint(&batch_path(from, to, "read"), None)?;
        let call = self.post(
            Operation::ReadAssociations,
            url,
            &json!({ "inputs": inputs }),
        )?;
        let raw: RawRead = self.call_json(call).await?;
        let (missing, errors) = split_not_found(&raw.errors);
        Ok(AssociationReadOutcome {
            results: raw
                .results
                .into_iter()
                .map(|r| RecordAssociations {
                    from: r.from.id,
                    to: r.to,
                    next_after: r.paging.and_then(|p| p.next).map(|n| n.after),
                })
                .collect(),
            missing,
            errors,
        })
    }

    /// Writes up to 100 pairs with their types (`batch/create`); each pair's types become
    /// exactly those given. A pair that fails (a record that is not live, a type HubSpot does
    /// not know for the direction) fails alone.
    pub async fn create_associations(
        &self,
        from: ObjectType,
        to: ObjectType,
        inputs: &Batch<AssociationInput>,
    ) -> Result<BatchOutcome<AssociationLabels>, HubSpotError> {
        if inputs.is_empty() {
            return Ok(BatchOutcome {
                results: Vec::new(),
                errors: Vec::new(),
            });
        }
        let body = json!({ "inputs": inputs.items().iter().map(typed_input).collect::<Vec<_>>() });
        let url = self.endpoint(&batch_path(from, to, "create"), None)?;
        let call = self.post(Operation::CreateAssociations, url, &body)?;
        let raw: RawLabels = self.call_json(call).await?;
        Ok(map_pairs(raw, inputs.items()))
    }

    /// Removes every type between each `from` and its `to` records (`batch/archive`, 204).
    pub async fn archive_associations(
        &self,
        from: ObjectType,
        to: ObjectType,
        inputs: &Batch<AssociationArchive>,
    ) -> Result<(), HubSpotError> {
        if inputs.is_empty() {
            return Ok(());
        }
        let items: Vec<_> = inputs
            .items()
            .iter()
            .map(|i| {
                json!({ "from": { "id": i.from }, "to": i.to.iter().map(|t| json!({ "id": t })).collect::<Vec<_>>() })
            })
            .collect();
        let url = self.endpoint(&batch_path(from, to, "archive"), None)?;
        let call = self.post(
            Operation::ArchiveAssociations,
            url,
            &json!({ "inputs": items }),
        )?;
        self.call_empty(call).await
    }

    /// Removes the given types from each pair (`batch/labels/archive`, 204); removing the
    /// unlabelled type removes the pair.
    pub async fn archive_association_labels(
        &self,
        from: ObjectType,
        to: ObjectType,
        inputs: &Batch<AssociationInput>,
    ) -> Result<(), HubSpotError> {
        if inputs.is_empty() {
            return Ok(());
        }
        let body = json!({ "inputs": inputs.items().iter().map(typed_input).collect::<Vec<_>>() });
        let url = self.endpoint(&batch_path(from, to, "labels/archive"), None)?;
        let call = self.post(Operation::ArchiveAssociationLabels, url, &body)?;
        self.call_empty(call).await
    }

    /// Every company of each contact, following HubSpot's pages (1,000 contacts per call).
    /// Contacts HubSpot does not find are left out of the map and listed in the second value.
    pub async fn companies_of_contacts(
        &self,
        contacts: &[HsObjectId],
    ) -> Result<(BTreeMap<HsObjectId, Vec<CompanyLink>>, Vec<HsObjectId>), HubSpotError> {
        let mut found: BTreeMap<HsObjectId, Vec<CompanyLink>> = BTreeMap::new();
        let mut missing = Vec::new();
        let mut pending: Vec<AssociationReadInput> = contacts
            .iter()
            .map(|c| AssociationReadInput::first(c.0.clone()))
            .collect();
        while !pending.is_empty() {
            let rest = pending.split_off(pending.len().min(MAX_ASSOCIATION_READ));
            let page = self
                .read_associations(ObjectType::Contacts, ObjectType::Companies, &pending)
                .await?;
            if let Some(error) = page.errors.into_iter().next() {
                return Err(error.error);
            }
            missing.extend(page.missing.into_iter().map(HsObjectId));
            pending = rest;
            for record in page.results {
                let links = found.entry(HsObjectId(record.from.clone())).or_default();
                links.extend(record.to.iter().map(|t| CompanyLink {
                    company: CompanyId(t.id.clone()),
                    primary: t.is_primary(),
                }));
                if let Some(after) = record.next_after {
                    pending.push(AssociationReadInput {
                        id: record.from,
                        after: Some(after),
                    });
                }
            }
        }
        Ok((found, missing))
    }

    /// Associates up to 100 contacts with companies: `primary` writes types 279 and 1 (the
    /// contact's primary company; HubSpot demotes the previous one), otherwise 279 alone.
    pub async fn link_contacts_to_companies(
        &self,
        links: &Batch<ContactCompanyLink>,
    ) -> Result<BatchOutcome<AssociationLabels>, HubSpotError> {
        let inputs: Vec<AssociationInput> = links
            .items()
            .iter()
            .map(|l| {
                let mut types = vec![AssociationSpec::hubspot(
                    AssociationTypeId::ContactToCompany,
                )];
                if l.primary {
                    types.push(AssociationSpec::hubspot(
                        AssociationTypeId::ContactToCompanyPrimary,
                    ));
                }
                AssociationInput {
                    from: l.contact.0.clone(),
                    to: l.company.0.clone(),
                    types,
                }
            })
            .collect();
        let batch = Batch::new(inputs).map_err(|e| HubSpotError::InvalidRequest(e.to_string()))?;
        self.create_associations(ObjectType::Contacts, ObjectType::Companies, &batch)
            .await
    }
}

fn typed_input(i: &AssociationInput) -> serde_json::Value {
    json!({ "from": { "id": i.from }, "to": { "id": i.to }, "types": i.types })
}

/// The ids of `OBJECT_NOT_FOUND` errors, and every other error.
fn split_not_found(errors: &[serde_json::Value]) -> (Vec<String>, Vec<BatchItemError>) {
    let mut missing = Vec::new();
    let mut other = Vec::new();
    for value in errors {
        let details = ApiErrorDetails::from_json(value);
        let ids = details.context_values("ids");
        match classify(details) {
            HubSpotError::NotFound { .. } if !ids.is_empty() => missing.extend(ids),
            error => other.push(BatchItemError {
                input_indices: Vec::new(),
                error,
            }),
        }
    }
    (missing, other)
}

/// Ties written pairs and per-pair errors back to their inputs by their ids.
fn map_pairs(raw: RawLabels, inputs: &[AssociationInput]) -> BatchOutcome<AssociationLabels> {
    let by_pair: HashMap<(&str, &str), usize> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| ((input.from.as_str(), input.to.as_str()), i))
        .collect();
    let results = raw
        .results
        .into_iter()
        .map(|record| IndexedResult {
            input_index: by_pair
                .get(&(record.from_object_id.as_str(), record.to_object_id.as_str()))
                .copied(),
            record,
        })
        .collect();
    let errors = raw
        .errors
        .iter()
        .map(|value| {
            let details = ApiErrorDetails::from_json(value);
            let froms = details.context_values("fromObjectId");
            let tos = details.context_values("toObjectId");
            let input_indices = froms
                .iter()
                .zip(&tos)
                .filter_map(|(f, t)| by_pair.get(&(f.as_str(), t.as_str())).copied())
                .collect();
            BatchItemError {
                input_indices,
                error: classify(details),
            }
        })
        .collect();
    BatchOutcome { results, errors }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_numbers_both_ways() {
        for id in [279, 1, 280, 2, 449] {
            assert_eq!(AssociationTypeId::from_id(id).id(), id);
        }
        assert_eq!(
            serde_json::to_value(AssociationSpec::hubspot(
                AssociationTypeId::ContactToCompanyPrimary
            ))
            .expect("serialises"),
            json!({"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1})
        );
        assert!(AssociationTypeId::CompanyToContactPrimary.is_primary());
        assert!(!AssociationTypeId::Other(13).is_primary());
    }

    #[test]
    fn a_read_matches_types_by_number_whatever_the_label_says() {
        let page: RawRead = serde_json::from_value(json!({
            "status": "COMPLETE",
            "results": [{"from": {"id": "7"}, "to": [
                {"toObjectId": 101, "associationTypes": [
                    {"category": "HUBSPOT_DEFINED", "typeId": 279, "label": null},
                    {"category": "HUBSPOT_DEFINED", "typeId": 1, "label": "Contact with Primary Company"}]},
                {"toObjectId": "102", "associationTypes": [
                    {"category": "USER_DEFINED", "typeId": 33, "label": "Primary"},
                    {"category": "NEW_KIND", "typeId": 279}]}
            ], "paging": {"next": {"after": "MTA="}}}],
            "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "x",
                        "context": {"ids": ["8"]}}]
        }))
        .expect("parses");
        let record = &page.results[0];
        assert_eq!(record.to[0].id, "101");
        assert!(record.to[0].is_primary());
        assert!(
            !record.to[1].is_primary(),
            "a label reading Primary is no primary type"
        );
        assert_eq!(record.to[1].types[1].category, AssociationCategory::Unknown);
        let (missing, other) = split_not_found(&page.errors);
        assert_eq!(missing, ["8"]);
        assert!(other.is_empty());
    }

    #[test]
    fn written_pairs_and_their_errors_map_back_to_the_inputs() {
        let input = |from: &str, to: &str| AssociationInput {
            from: from.to_owned(),
            to: to.to_owned(),
            types: vec![AssociationSpec::hubspot(
                AssociationTypeId::ContactToCompany,
            )],
        };
        let inputs = [input("1", "10"), input("2", "20")];
        let raw: RawLabels = serde_json::from_value(json!({
            "results": [{"fromObjectTypeId": "0-1", "fromObjectId": 2, "toObjectTypeId": "0-2",
                         "toObjectId": "20", "labels": []}],
            "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "gone",
                        "context": {"fromObjectId": ["1"], "toObjectId": ["10"]}}]
        }))
        .expect("parses");
        let outcome = map_pairs(raw, &inputs);
        assert_eq!(outcome.results[0].input_index, Some(1));
        assert_eq!(outcome.errors[0].input_indices, vec![0]);
    }
}
