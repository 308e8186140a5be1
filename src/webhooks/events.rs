//! The events HubSpot posts to a webhook: a JSON array, each element one event.
//!
//! Parsing is per event: an event of an unknown type is kept as [`EventKind::Other`], and an
//! element that is not a usable event is reported in [`ParsedBatch::malformed`]; neither
//! fails the batch. Ids are accepted as numbers or numeric strings.

use crate::ids::{HsObjectId, PortalId};
use crate::store::WebhookEventKey;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// One webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// HubSpot's `eventId` (not guaranteed unique on its own).
    pub event_id: u64,
    /// The subscription that fired.
    pub subscription_id: Option<u64>,
    /// The account the event is about.
    pub portal_id: PortalId,
    /// The app the subscription belongs to.
    pub app_id: Option<u64>,
    /// When the change happened, ms since the epoch.
    pub occurred_at_ms: i64,
    /// `subscriptionType` as sent, e.g. `contact.creation`.
    pub subscription_type: String,
    /// Delivery attempt, from 0; redeliveries of one event differ only here.
    pub attempt_number: u32,
    /// The record the event is about.
    pub object_id: Option<HsObjectId>,
    /// What made the change, when sent.
    pub change_source: Option<ChangeSource>,
    /// Who made it, when sent: the app id for `INTEGRATION`, `userId:<id>` for `CRM_UI`.
    pub source_id: Option<String>,
    /// `NEW`, `DELETED`, `MERGED`..., when sent.
    pub change_flag: Option<String>,
    /// What happened, with the fields of that type.
    pub kind: EventKind,
}

/// HubSpot's `changeSource`: what made a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeSource {
    /// `INTEGRATION`: an app's API call (`sourceId` is the app's id).
    Integration,
    /// `CRM_UI`: a person in HubSpot (`sourceId` is `userId:<id>`).
    CrmUi,
    /// Any other value (`IMPORT`, `FORM`, `API`, ...), as sent.
    Other(String),
}

impl From<String> for ChangeSource {
    fn from(value: String) -> Self {
        match value.as_str() {
            "INTEGRATION" => Self::Integration,
            "CRM_UI" => Self::CrmUi,
            _ => Self::Other(value),
        }
    }
}

/// What an event reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// `contact.creation`.
    ContactCreation,
    /// `contact.deletion` (also sent after a privacy deletion).
    ContactDeletion,
    /// `contact.privacyDeletion` (GDPR delete).
    ContactPrivacyDeletion,
    /// `contact.restore`: a deleted contact is back.
    ContactRestore,
    /// `contact.propertyChange`.
    ContactPropertyChange {
        /// The property, e.g. `email`.
        property_name: String,
        /// Its new value (`None` when cleared).
        property_value: Option<String>,
    },
    /// `contact.merge`.
    ContactMerge(Merge),
    /// `contact.associationChange`: an association of the contact was added or removed.
    ContactAssociationChange(AssociationChange),
    /// `company.creation`.
    CompanyCreation,
    /// `company.deletion`.
    CompanyDeletion,
    /// `company.restore`: a deleted company is back.
    CompanyRestore,
    /// `company.propertyChange`.
    CompanyPropertyChange {
        /// The property, e.g. `domain`.
        property_name: String,
        /// Its new value (`None` when cleared).
        property_value: Option<String>,
    },
    /// `company.merge` (the same fields as `contact.merge`, API-NOTES §13).
    CompanyMerge(Merge),
    /// `company.associationChange`: the company's side of an association change (HubSpot
    /// fires the contact's side too, API-NOTES §10.4).
    CompanyAssociationChange(AssociationChange),
    /// Any other type (other objects, new HubSpot types): kept, not acted on.
    Other,
}

impl EventKind {
    /// Whether it reports a record created or changed: the record must be read (unless the
    /// change is this app's own echo).
    pub fn needs_read(&self) -> bool {
        matches!(
            self,
            Self::ContactCreation
                | Self::ContactPropertyChange { .. }
                | Self::CompanyCreation
                | Self::CompanyPropertyChange { .. }
        )
    }
}

impl EventKind {
    /// Whether it reports an association added or removed (either side).
    pub fn is_association_change(&self) -> bool {
        matches!(
            self,
            Self::ContactAssociationChange(_) | Self::CompanyAssociationChange(_)
        )
    }
}

/// The fields of a `contact.associationChange` or `company.associationChange` event
/// (API-NOTES §10.4); each is optional on the wire and kept as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssociationChange {
    /// `associationType`, e.g. `CONTACT_TO_COMPANY`.
    pub association_type: Option<String>,
    /// `fromObjectId`: the record on the event's own side.
    pub from_object_id: Option<HsObjectId>,
    /// `toObjectId`: the record on the other side.
    pub to_object_id: Option<HsObjectId>,
    /// `associationRemoved`: removed rather than added.
    pub removed: Option<bool>,
    /// `isPrimaryAssociation`: the primary type changed rather than the unlabelled one.
    pub primary: Option<bool>,
}

impl AssociationChange {
    /// `associationType` of a contact→company change.
    pub const CONTACT_TO_COMPANY: &'static str = "CONTACT_TO_COMPANY";

    /// Whether it may be a contact→company change: the type says so, or is not sent (a read
    /// too many costs one call; a change missed would stay wrong until a full pull).
    pub fn may_be_contact_to_company(&self) -> bool {
        self.association_type
            .as_deref()
            .is_none_or(|t| t.trim().eq_ignore_ascii_case(Self::CONTACT_TO_COMPANY))
    }
}

/// The fields of a `contact.merge` or `company.merge` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The record that won the merge.
    pub primary_object_id: HsObjectId,
    /// The records merged into it.
    pub merged_object_ids: Vec<HsObjectId>,
    /// The id of the resulting record, when HubSpot created a new one.
    pub new_object_id: Option<HsObjectId>,
}

impl Merge {
    /// The id that exists after the merge: the new record's, else the primary's.
    pub fn survivor(&self) -> &HsObjectId {
        self.new_object_id
            .as_ref()
            .unwrap_or(&self.primary_object_id)
    }

    /// The ids that no longer exist, the primary first (its local row is the one to keep).
    pub fn merged_away(&self) -> Vec<HsObjectId> {
        let survivor = self.survivor();
        let mut ids: Vec<HsObjectId> = Vec::with_capacity(self.merged_object_ids.len() + 1);
        for id in std::iter::once(&self.primary_object_id).chain(&self.merged_object_ids) {
            if id != survivor && !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids
    }
}

/// An element of the array that is not a usable event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedEvent {
    /// Its position in the array.
    pub index: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// A parsed request body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedBatch {
    /// The usable events, in the order received.
    pub events: Vec<WebhookEvent>,
    /// The elements that were skipped.
    pub malformed: Vec<MalformedEvent>,
}

/// The body is not a JSON array at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Not JSON.
    #[error("the webhook body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an array of events.
    #[error("the webhook body is JSON but not an array of events")]
    NotAnArray,
}

/// Parses a webhook request body.
pub fn parse_batch(body: &[u8]) -> Result<ParsedBatch, BatchError> {
    // The elements as slices of the body, then each straight into its event: one pass over
    // the text instead of a `Value` tree and a second conversion (a 100,000-contact push sends
    // 1,000 such batches while it runs).
    let items: Vec<&RawValue> = match serde_json::from_slice(body) {
        Ok(items) => items,
        Err(e) => {
            return Err(match serde_json::from_slice::<&RawValue>(body) {
                Ok(_) => BatchError::NotAnArray,
                Err(_) => BatchError::NotJson(e.to_string()),
            });
        }
    };
    let mut batch = ParsedBatch::default();
    for (index, item) in items.into_iter().enumerate() {
        let parsed = serde_json::from_str::<RawEvent>(item.get())
            .map_err(|e| e.to_string())
            .and_then(WebhookEvent::try_from);
        match parsed {
            Ok(event) => batch.events.push(event),
            Err(reason) => batch.malformed.push(MalformedEvent { index, reason }),
        }
    }
    Ok(batch)
}

/// What tells an echo of this app's own write, borrowed from the body (no allocation): a
/// string with escapes, an id sent as text or any other surprise fails the probe, and the
/// batch then takes the full path of [`parse_batch`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EchoProbe<'a> {
    #[serde(borrow)]
    subscription_type: Option<&'a str>,
    #[serde(borrow)]
    event_type: Option<&'a str>,
    event_id: Option<u64>,
    portal_id: Option<u64>,
    app_id: Option<u64>,
    object_id: Option<u64>,
    occurred_at: Option<i64>,
    #[serde(borrow)]
    change_source: Option<&'a str>,
    #[serde(borrow)]
    source_id: Option<&'a str>,
    #[serde(borrow)]
    property_name: Option<&'a str>,
}

impl EchoProbe<'_> {
    /// Whether [`parse_batch`] would make of it a valid event for which
    /// [`WebhookEvent::is_own_echo`] holds.
    fn is_own_echo(&self) -> bool {
        let readable = match self.subscription_type.or(self.event_type) {
            Some("contact.creation" | "company.creation") => true,
            Some("contact.propertyChange" | "company.propertyChange") => {
                self.property_name.is_some()
            }
            Some("contact.associationChange" | "company.associationChange") => true,
            _ => false,
        };
        let valid = self.event_id.is_some()
            && self.object_id.is_some()
            && self.occurred_at.is_some()
            && self.portal_id.is_some_and(|p| i64::try_from(p).is_ok());
        readable
            && valid
            && self.change_source == Some("INTEGRATION")
            && self
                .app_id
                .zip(self.source_id)
                .is_some_and(|(app, source)| source.trim() == app.to_string())
    }
}

/// How many events the body holds when every one of them is an echo of this app's own write
/// (creations, property changes and association changes it made,
/// [`WebhookEvent::is_own_echo`]); `None` otherwise.
///
/// While a push runs, nearly every delivery is such a batch, and it changes nothing: this
/// answers it in one pass over the body without building its events. Any other body — or a
/// surprise in this one — goes through [`parse_batch`], which decides exactly as before.
pub fn count_own_echoes(body: &[u8]) -> Option<usize> {
    let probes: Vec<EchoProbe<'_>> = serde_json::from_slice(body).ok()?;
    (!probes.is_empty() && probes.iter().all(EchoProbe::is_own_echo)).then_some(probes.len())
}

impl WebhookEvent {
    /// One event from its JSON object; the error says what is missing or wrong.
    pub fn from_json(value: Value) -> Result<Self, String> {
        let raw: RawEvent = serde_json::from_value(value).map_err(|e| e.to_string())?;
        raw.try_into()
    }

    /// Whether this event reports a write this app made itself (API-NOTES §13): `changeSource`
    /// `INTEGRATION` with `sourceId` equal to the event's own `appId`, the app the subscription
    /// belongs to. `INTEGRATION` alone is another app's write.
    pub fn is_own_write(&self) -> bool {
        self.change_source == Some(ChangeSource::Integration)
            && self
                .app_id
                .zip(self.source_id.as_deref())
                .is_some_and(|(app, source)| source.trim() == app.to_string())
    }

    /// Whether this is a creation, property change or association change that this app made
    /// itself: such an event needs no read and changes nothing here (see
    /// [`Self::is_own_write`]).
    pub fn is_own_echo(&self) -> bool {
        (self.kind.needs_read() || self.kind.is_association_change()) && self.is_own_write()
    }

    /// The key that identifies this event across redeliveries, for `webhook_events`.
    pub fn key(&self) -> WebhookEventKey {
        WebhookEventKey {
            dedupe_key: self.dedupe_key(),
            portal_id: self.portal_id,
            event_id: self.event_id.to_string(),
            subscription_type: self.subscription_type.clone(),
            object_id: self.object_id.clone(),
            occurred_at_ms: self.occurred_at_ms,
        }
    }

    /// SHA-256 (hex) over everything that identifies the event except `attemptNumber`, so a
    /// redelivery has the same key and two events sharing an `eventId` do not.
    fn dedupe_key(&self) -> String {
        let (property, merge) = match &self.kind {
            EventKind::ContactPropertyChange {
                property_name,
                property_value,
            }
            | EventKind::CompanyPropertyChange {
                property_name,
                property_value,
            } => (
                serde_json::json!([property_name, property_value]),
                Value::Null,
            ),
            EventKind::ContactMerge(m) | EventKind::CompanyMerge(m) => (
                Value::Null,
                serde_json::json!([m.primary_object_id, m.merged_object_ids, m.new_object_id]),
            ),
            EventKind::ContactAssociationChange(a) | EventKind::CompanyAssociationChange(a) => (
                Value::Null,
                serde_json::json!([
                    a.association_type,
                    a.from_object_id,
                    a.to_object_id,
                    a.removed,
                    a.primary
                ]),
            ),
            _ => (Value::Null, Value::Null),
        };
        let identity = serde_json::json!([
            self.portal_id,
            self.event_id,
            self.subscription_id,
            self.app_id,
            self.subscription_type,
            self.object_id,
            self.occurred_at_ms,
            property,
            merge,
        ]);
        let digest = Sha256::digest(identity.to_string().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// An id as HubSpot may send it: a number or a numeric string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawId {
    Number(u64),
    Text(String),
}

impl RawId {
    fn to_u64(&self, field: &str) -> Result<u64, String> {
        match self {
            RawId::Number(n) => Ok(*n),
            RawId::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("{field} is not a number: {s:?}")),
        }
    }

    fn to_object_id(&self, field: &str) -> Result<HsObjectId, String> {
        self.to_u64(field).map(|n| HsObjectId(n.to_string()))
    }
}

/// The wire form, every field optional so that the checks below can say what is missing.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    event_id: Option<RawId>,
    subscription_id: Option<RawId>,
    portal_id: Option<RawId>,
    app_id: Option<RawId>,
    occurred_at: Option<i64>,
    subscription_type: Option<String>,
    /// The name HubSpot's docs table uses for `subscriptionType`.
    event_type: Option<String>,
    attempt_number: Option<u32>,
    object_id: Option<RawId>,
    change_source: Option<String>,
    source_id: Option<Value>,
    change_flag: Option<String>,
    property_name: Option<String>,
    property_value: Option<Value>,
    primary_object_id: Option<RawId>,
    merged_object_ids: Option<Vec<RawId>>,
    new_object_id: Option<RawId>,
    association_type: Option<String>,
    from_object_id: Option<RawId>,
    to_object_id: Option<RawId>,
    association_removed: Option<bool>,
    is_primary_association: Option<bool>,
}

/// The association fields of the wire form.
struct RawAssociation {
    association_type: Option<String>,
    from_object_id: Option<RawId>,
    to_object_id: Option<RawId>,
    association_removed: Option<bool>,
    is_primary_association: Option<bool>,
}

/// `propertyValue` as text: HubSpot sends strings, but a number or boolean is kept as written.
fn property_value(value: Option<Value>) -> Option<String> {
    value.and_then(|v| match v {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("{field} is missing"))
}

impl TryFrom<RawEvent> for WebhookEvent {
    type Error = String;

    fn try_from(raw: RawEvent) -> Result<Self, String> {
        let subscription_type = raw
            .subscription_type
            .or(raw.event_type)
            .ok_or("subscriptionType is missing")?;
        let portal = required(raw.portal_id, "portalId")?.to_u64("portalId")?;
        let portal_id = i64::try_from(portal)
            .map(PortalId)
            .map_err(|_| format!("portalId {portal} is out of range"))?;
        let object_id = raw
            .object_id
            .map(|id| id.to_object_id("objectId"))
            .transpose()?;
        let needs_object = || {
            object_id
                .clone()
                .ok_or_else(|| format!("objectId is missing for {subscription_type}"))
        };
        let association = RawAssociation {
            association_type: raw.association_type,
            from_object_id: raw.from_object_id,
            to_object_id: raw.to_object_id,
            association_removed: raw.association_removed,
            is_primary_association: raw.is_primary_association,
        };
        let kind = match subscription_type.as_str() {
            "contact.creation" => needs_object().map(|_| EventKind::ContactCreation)?,
            "contact.deletion" => needs_object().map(|_| EventKind::ContactDeletion)?,
            "contact.privacyDeletion" => {
                needs_object().map(|_| EventKind::ContactPrivacyDeletion)?
            }
            "contact.restore" => needs_object().map(|_| EventKind::ContactRestore)?,
            "contact.associationChange" => {
                EventKind::ContactAssociationChange(association_fields(association)?)
            }
            "contact.propertyChange" => {
                needs_object()?;
                EventKind::ContactPropertyChange {
                    property_name: required(raw.property_name, "propertyName")?,
                    property_value: property_value(raw.property_value),
                }
            }
            "contact.merge" => EventKind::ContactMerge(merge_fields(
                raw.primary_object_id,
                raw.merged_object_ids,
                raw.new_object_id,
            )?),
            "company.creation" => needs_object().map(|_| EventKind::CompanyCreation)?,
            "company.deletion" => needs_object().map(|_| EventKind::CompanyDeletion)?,
            "company.restore" => needs_object().map(|_| EventKind::CompanyRestore)?,
            "company.associationChange" => {
                EventKind::CompanyAssociationChange(association_fields(association)?)
            }
            "company.propertyChange" => {
                needs_object()?;
                EventKind::CompanyPropertyChange {
                    property_name: required(raw.property_name, "propertyName")?,
                    property_value: property_value(raw.property_value),
                }
            }
            "company.merge" => EventKind::CompanyMerge(merge_fields(
                raw.primary_object_id,
                raw.merged_object_ids,
                raw.new_object_id,
            )?),
            _ => EventKind::Other,
        };
        Ok(WebhookEvent {
            event_id: required(raw.event_id, "eventId")?.to_u64("eventId")?,
            subscription_id: raw
                .subscription_id
                .map(|id| id.to_u64("subscriptionId"))
                .transpose()?,
            portal_id,
            app_id: raw.app_id.map(|id| id.to_u64("appId")).transpose()?,
            occurred_at_ms: required(raw.occurred_at, "occurredAt")?,
            subscription_type,
            attempt_number: raw.attempt_number.unwrap_or(0),
            object_id,
            change_source: raw.change_source.map(ChangeSource::from),
            source_id: raw.source_id.and_then(|v| match v {
                Value::Null => None,
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            }),
            change_flag: raw.change_flag,
            kind,
        })
    }
}

fn association_fields(raw: RawAssociation) -> Result<AssociationChange, String> {
    Ok(AssociationChange {
        association_type: raw.association_type,
        from_object_id: raw
            .from_object_id
            .map(|id| id.to_object_id("fromObjectId"))
            .transpose()?,
        to_object_id: raw
            .to_object_id
            .map(|id| id.to_object_id("toObjectId"))
            .transpose()?,
        removed: raw.association_removed,
        primary: raw.is_primary_association,
    })
}

fn merge_fields(
    primary: Option<RawId>,
    merged: Option<Vec<RawId>>,
    new: Option<RawId>,
) -> Result<Merge, String> {
    Ok(Merge {
        primary_object_id: required(primary, "primaryObjectId")?.to_object_id("primaryObjectId")?,
        merged_object_ids: merged
            .unwrap_or_default()
            .iter()
            .map(|id| id.to_object_id("mergedObjectIds"))
            .collect::<Result<_, _>>()?,
        new_object_id: new.map(|id| id.to_object_id("newObjectId")).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the full parse says of a body: the number of events when all are own echoes.
    fn by_full_parse(body: &str) -> Option<usize> {
        let batch = parse_batch(body.as_bytes()).ok()?;
        let all = batch.malformed.is_empty()
            && !batch.events.is_empty()
            && batch.events.iter().all(WebhookEvent::is_own_echo);
        all.then_some(batch.events.len())
    }

    fn event(fields: &str) -> String {
        format!(
            r#"{{"eventId":1,"subscriptionId":2,"portalId":3,"appId":77,"occurredAt":1700000000000,"attemptNumber":0,"objectId":123,{fields}}}"#
        )
    }

    #[test]
    fn the_one_pass_echo_count_agrees_with_the_full_parse() {
        let own_creation = event(
            r#""subscriptionType":"contact.creation","changeSource":"INTEGRATION","sourceId":"77""#,
        );
        let own_change = event(
            r#""subscriptionType":"contact.propertyChange","propertyName":"email","propertyValue":"a@b.co","changeSource":"INTEGRATION","sourceId":" 77 ""#,
        );
        let bodies = [
            format!("[{own_creation},{own_change}]"),
            // another app's write, a person's, a deletion, a change without its property
            format!(
                "[{own_creation},{}]",
                event(r#""subscriptionType":"contact.creation","changeSource":"INTEGRATION","sourceId":"78""#)
            ),
            format!(
                "[{}]",
                event(r#""subscriptionType":"contact.creation","changeSource":"CRM_UI","sourceId":"userId:5""#)
            ),
            format!(
                "[{}]",
                event(r#""subscriptionType":"contact.deletion","changeSource":"INTEGRATION","sourceId":"77""#)
            ),
            format!(
                "[{}]",
                event(r#""subscriptionType":"contact.propertyChange","changeSource":"INTEGRATION","sourceId":"77""#)
            ),
            // an escaped string and an id as text: the probe gives way to the full parse
            format!(
                "[{}]",
                event(r#""subscriptionType":"contact.propertyChange","propertyName":"firstname","propertyValue":"A\"da","changeSource":"INTEGRATION","sourceId":"77""#)
            ),
            r#"[{"eventId":"1","portalId":3,"appId":77,"occurredAt":1,"objectId":"9","subscriptionType":"contact.creation","changeSource":"INTEGRATION","sourceId":"77"}]"#.to_owned(),
            // an own write missing its eventId is malformed, not an echo
            r#"[{"portalId":3,"appId":77,"occurredAt":1,"objectId":9,"subscriptionType":"contact.creation","changeSource":"INTEGRATION","sourceId":"77"}]"#.to_owned(),
            "[]".to_owned(),
            "{}".to_owned(),
            "not json".to_owned(),
        ];
        for body in &bodies {
            let fast = count_own_echoes(body.as_bytes());
            if let Some(n) = fast {
                assert_eq!(Some(n), by_full_parse(body), "{body}");
            }
            assert!(
                fast.is_some()
                    || by_full_parse(body).is_none()
                    || body.contains("\\\"")
                    || body.contains("\"eventId\":\"1\""),
                "the one pass missed a batch of own echoes: {body}"
            );
        }
        assert_eq!(
            count_own_echoes(bodies[0].as_bytes()),
            Some(2),
            "the push's echoes take the one pass"
        );
        assert_eq!(
            by_full_parse(&bodies[6]),
            Some(1),
            "text ids are echoes too, by the full parse"
        );
    }
}
