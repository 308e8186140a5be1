//! The sandbox's own JSON shapes for HubSpot's CRM v3 objects API (kept apart from the
//! crate's HubSpot client on purpose: two independent readings of the same API).

use poem::Response;
use poem::http::StatusCode;
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::clock::iso_millis;
use super::errors::ApiError;
use super::objects::CrmObject;
use super::properties::PropertyCatalog;
use super::store::{Record, SearchRecord};
use super::variants::{EmptyValues, SearchModified};

/// Parses a JSON body, answering HubSpot's "Invalid input JSON" 400 when it does not fit.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::validation(format!(
            "Invalid input JSON on line {}, column {}: {}",
            e.line(),
            e.column(),
            e
        ))
    })
}

/// A record id sent as a string or a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum IdValue {
    /// `"123"`
    Text(String),
    /// `123`
    Number(serde_json::Number),
}

impl IdValue {
    /// The id as text.
    pub(crate) fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number(n) => n.to_string(),
        }
    }
}

/// Property values as sent: strings, numbers, booleans; `null` clears like `""`.
pub(crate) type RawProperties = BTreeMap<String, Value>;

/// Turns sent values into the strings HubSpot stores; objects and arrays are refused.
pub(crate) fn property_strings(raw: RawProperties) -> Result<BTreeMap<String, String>, ApiError> {
    raw.into_iter()
        .map(|(name, value)| {
            let text = match value {
                Value::String(s) => s,
                Value::Null => String::new(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(ApiError::validation(format!(
                        "Property \"{name}\" must be a string, number or boolean, got {other}"
                    )));
                }
            };
            Ok((name, text))
        })
        .collect()
}

/// `{"properties": {...}}` of a single create or update.
#[derive(Debug, Deserialize)]
pub(crate) struct PropertiesBody {
    /// The values.
    #[serde(default)]
    pub properties: RawProperties,
    /// Creates only: records to associate the new one with.
    #[serde(default)]
    pub associations: Vec<CreateAssociation>,
}

/// One association a create carries: `{"to": {"id": ..}, "types": [..]}`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CreateAssociation {
    /// The other record.
    pub to: IdItem,
    /// The types, `{associationCategory, associationTypeId}`.
    #[serde(default)]
    pub types: Vec<TypeItem>,
}

/// `{"associationCategory": .., "associationTypeId": ..}` as sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TypeItem {
    /// The category.
    pub association_category: String,
    /// The type id.
    pub association_type_id: i64,
}

/// One input of batch create.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateItem {
    /// The values.
    #[serde(default)]
    pub properties: RawProperties,
    /// Records to associate the new one with.
    #[serde(default)]
    pub associations: Vec<CreateAssociation>,
    /// Caller's trace id.
    #[serde(default)]
    pub object_write_trace_id: Option<String>,
}

/// One input of batch update or upsert.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyedItem {
    /// Record id or unique value.
    pub id: IdValue,
    /// Which property `id` is.
    #[serde(default)]
    pub id_property: Option<String>,
    /// The values.
    #[serde(default)]
    pub properties: RawProperties,
    /// Caller's trace id.
    #[serde(default)]
    pub object_write_trace_id: Option<String>,
}

/// `{"id": ..}`
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IdItem {
    /// The id.
    pub id: IdValue,
}

/// `{"inputs": [...]}`
#[derive(Debug, Deserialize)]
pub(crate) struct Inputs<T> {
    /// The inputs.
    pub inputs: Vec<T>,
}

/// The body of batch read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchReadBody {
    /// Ids to read.
    pub inputs: Vec<IdItem>,
    /// Properties to return.
    #[serde(default)]
    pub properties: Option<Vec<String>>,
    /// Properties to return with history.
    #[serde(default)]
    pub properties_with_history: Option<Vec<String>>,
    /// Which property the ids are.
    #[serde(default)]
    pub id_property: Option<String>,
}

/// The body of merge.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MergeBody {
    /// Survivor.
    pub primary_object_id: IdValue,
    /// Merged away.
    pub object_id_to_merge: IdValue,
}

/// The body of GDPR delete.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GdprBody {
    /// Id or unique value.
    pub object_id: IdValue,
    /// Which property `objectId` is.
    #[serde(default)]
    pub id_property: Option<String>,
}

/// Which properties an answer shows.
#[derive(Debug, Clone)]
pub(crate) enum Projection {
    /// `email`, `firstname`, `lastname` and the always-present ones.
    Default,
    /// The named ones (those with values) and the always-present ones.
    Named(Vec<String>),
    /// Every value (merge answers, the admin dump); counts as asking for the default ones.
    All,
    /// Every value, and the named properties a write set (write answers).
    Written(Vec<String>),
}

/// Property values as an answer shows them: `None` is a requested property without a value
/// (serialised as `null`).
pub(crate) type ShownProperties = BTreeMap<String, Option<String>>;

impl Projection {
    /// From a `properties` list; empty means default.
    pub(crate) fn from_list(list: Option<Vec<String>>) -> Self {
        match list {
            Some(l) if l.iter().any(|p| !p.trim().is_empty()) => {
                Self::Named(l.into_iter().map(|p| p.trim().to_owned()).collect())
            }
            _ => Self::Default,
        }
    }

    /// Drops named properties that do not exist: HubSpot ignores them, so they never show,
    /// not even as `null`.
    pub(crate) fn known(self, catalog: &PropertyCatalog) -> Self {
        match self {
            Self::Named(names) => Self::Named(
                names
                    .into_iter()
                    .filter(|n| catalog.get_any(n).is_some())
                    .collect(),
            ),
            other => other,
        }
    }

    /// The properties asked for of an `object` record.
    fn requested(&self, object: CrmObject) -> Vec<&str> {
        match self {
            Self::Default | Self::All => object.default_returned().to_vec(),
            Self::Named(names) => names
                .iter()
                .map(String::as_str)
                .chain(object.always_returned())
                .collect(),
            Self::Written(names) => object
                .default_returned()
                .iter()
                .copied()
                .chain(names.iter().map(String::as_str))
                .collect(),
        }
    }

    /// The values of an `object` record to show; requested properties without a value as
    /// `empty` says.
    pub(crate) fn pick(
        &self,
        object: CrmObject,
        values: &BTreeMap<String, String>,
        empty: EmptyValues,
    ) -> ShownProperties {
        let requested = self.requested(object);
        let mut shown: ShownProperties = match self {
            Self::All | Self::Written(_) => values
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
            Self::Default | Self::Named(_) => requested
                .iter()
                .filter_map(|n| values.get(*n).map(|v| ((*n).to_owned(), Some(v.clone()))))
                .collect(),
        };
        if empty == EmptyValues::Null {
            for name in requested {
                shown.entry(name.to_owned()).or_insert(None);
            }
        }
        shown
    }
}

/// One entry of `propertiesWithHistory` (the sandbox keeps only the current value).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ValueWithTimestamp {
    /// The value.
    pub value: String,
    /// When it was set.
    pub timestamp: String,
    /// Where it came from.
    pub source_type: &'static str,
}

/// A record in an answer (HubSpot's `SimplePublicObject` and relatives).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectOut {
    /// Record id.
    pub id: String,
    /// Values.
    pub properties: ShownProperties,
    /// Values with history, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties_with_history: Option<BTreeMap<String, Vec<ValueWithTimestamp>>>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Archived flag.
    pub archived: bool,
    /// Archive time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<String>,
    /// Upsert: whether the record was created.
    #[serde(rename = "new", skip_serializing_if = "Option::is_none")]
    pub new: Option<bool>,
    /// The input's trace id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_write_trace_id: Option<String>,
}

impl ObjectOut {
    /// A stored `object` record.
    pub(crate) fn from_record(
        object: CrmObject,
        c: &Record,
        projection: &Projection,
        empty: EmptyValues,
    ) -> Self {
        Self {
            id: c.id.to_string(),
            properties: projection.pick(object, &c.properties, empty),
            properties_with_history: None,
            created_at: iso_millis(c.created_ms),
            updated_at: iso_millis(c.updated_ms),
            archived: c.archived_ms.is_some(),
            archived_at: c.archived_ms.map(iso_millis),
            new: None,
            object_write_trace_id: None,
        }
    }

    /// A search hit; the last-modified property as `modified` says (search still filters and
    /// sorts on the indexed value).
    pub(crate) fn from_search(
        object: CrmObject,
        r: &SearchRecord<'_>,
        projection: &Projection,
        empty: EmptyValues,
        modified: SearchModified,
    ) -> Self {
        let mut properties = projection.pick(object, r.properties, empty);
        let name = object.modified_property();
        match modified {
            SearchModified::Returned => {}
            SearchModified::Null => {
                properties.insert(name.to_owned(), None);
            }
            SearchModified::Omitted => {
                properties.remove(name);
            }
        }
        Self {
            id: r.id.to_string(),
            properties,
            properties_with_history: None,
            created_at: iso_millis(r.created_ms),
            updated_at: iso_millis(r.updated_ms),
            archived: false,
            archived_at: None,
            new: None,
            object_write_trace_id: None,
        }
    }

    /// Adds `propertiesWithHistory` for the named properties.
    pub(crate) fn with_history(mut self, c: &Record, names: Option<&Vec<String>>) -> Self {
        let Some(names) = names.filter(|n| !n.is_empty()) else {
            return self;
        };
        let history = names
            .iter()
            .filter_map(|n| {
                c.properties.get(n).map(|v| {
                    (
                        n.clone(),
                        vec![ValueWithTimestamp {
                            value: v.clone(),
                            timestamp: iso_millis(c.updated_ms),
                            source_type: "API",
                        }],
                    )
                })
            })
            .collect();
        self.properties_with_history = Some(history);
        self
    }
}

/// A batch answer: `{status, results, startedAt, completedAt, [numErrors, errors]}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchOut {
    /// Always `COMPLETE`.
    pub status: &'static str,
    /// Records.
    pub results: Vec<ObjectOut>,
    /// Error count, when there are errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_errors: Option<usize>,
    /// Errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<Value>>,
    /// Start.
    pub started_at: String,
    /// End.
    pub completed_at: String,
}

impl BatchOut {
    /// A complete batch; errors (if any) make it a 207.
    pub(crate) fn new(
        results: Vec<ObjectOut>,
        errors: Vec<Value>,
        started_ms: i64,
        completed_ms: i64,
    ) -> Self {
        let has_errors = !errors.is_empty();
        Self {
            status: "COMPLETE",
            results,
            num_errors: has_errors.then_some(errors.len()),
            errors: has_errors.then_some(errors),
            started_at: iso_millis(started_ms),
            completed_at: iso_millis(completed_ms),
        }
    }

    /// Whether the answer is a 207.
    pub(crate) fn is_partial(&self) -> bool {
        self.num_errors.is_some()
    }
}

/// `paging.next` of list and search answers.
#[derive(Debug, Serialize)]
pub(crate) struct Paging {
    /// The next page.
    pub next: NextPage,
}

/// A next-page cursor.
#[derive(Debug, Serialize)]
pub(crate) struct NextPage {
    /// The cursor.
    pub after: String,
    /// A relative link to it.
    pub link: String,
}

/// A page of records.
#[derive(Debug, Serialize)]
pub(crate) struct CollectionOut {
    /// Search: all matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<usize>,
    /// Records.
    pub results: Vec<ObjectOut>,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

/// A JSON answer.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json;charset=utf-8")
        .body(serde_json::to_vec(body).unwrap_or_default())
}
