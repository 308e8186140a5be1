//! Webhook delivery: contact, company and association changes become HubSpot v3-signed event
//! batches, POSTed to the configured URL by a background task so that writes never wait for
//! the receiver.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use hmac::{KeyInit, Mac};
use serde::Serialize;
use tokio::sync::mpsc;

use super::associations::{AssocChange, AssocType};
use super::clock::now_ms;
use super::objects::CrmObject;
use super::store::Change;
use crate::credential::Credential;

/// HubSpot sends fewer than 100 events per request.
pub(crate) const MAX_EVENTS_PER_REQUEST: usize = 99;

/// How long the sender waits for more events before sending a partial batch.
const BATCH_WINDOW: Duration = Duration::from_millis(25);

/// Delivery attempts per batch (HubSpot retries for a day; the sandbox keeps it short).
const MAX_ATTEMPTS: u32 = 4;

/// A request header that makes the sandbox report a call's writes as a person's changes in
/// HubSpot's UI (`CRM_UI`, `userId:<value>`) instead of the app's own (`INTEGRATION`): how
/// tests and demos stand in for a user editing a contact.
pub const USER_HEADER: &str = "x-sandbox-user-id";

/// Who made the changes of the API call being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Actor {
    /// The app, through its token (private-app or OAuth): `INTEGRATION` with the app id.
    App,
    /// A person in HubSpot's UI: `CRM_UI` with `userId:<id>`.
    User(String),
    /// HubSpot's own automation (companies it creates and associates from email domains):
    /// `COMPANY_INSIGHTS` without a `sourceId` (HubSpot's exact values are unconfirmed).
    HubSpot,
}

impl Actor {
    /// `changeSource` and `sourceId` of this actor's changes, for an app `app_id`.
    fn source(&self, app_id: i64) -> (&'static str, Option<String>) {
        match self {
            Self::App => ("INTEGRATION", Some(app_id.to_string())),
            Self::User(user) => ("CRM_UI", Some(format!("userId:{user}"))),
            Self::HubSpot => ("COMPANY_INSIGHTS", None),
        }
    }
}

impl Actor {
    /// The actor a request's headers name ([`USER_HEADER`]), the app by default.
    pub(crate) fn of(headers: &poem::http::HeaderMap) -> Self {
        headers
            .get(USER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map_or(Self::App, |user| Self::User(user.to_owned()))
    }
}

tokio::task_local! {
    /// The actor of the API call being served; events published outside one are the app's.
    pub static ACTOR: Actor;
}

/// The v3 signature: base64(HMAC-SHA256(secret, method + uri + body + timestamp)).
pub fn sign_v3(secret: &str, method: &str, uri: &str, body: &[u8], timestamp_ms: i64) -> String {
    type HmacSha256 = hmac::Hmac<sha2::Sha256>;
    // HMAC takes keys of any length, so this cannot fail; fall back to an empty MAC anyway.
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(method.as_bytes());
    mac.update(uri.as_bytes());
    mac.update(body);
    mac.update(timestamp_ms.to_string().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// One event as HubSpot sends it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Event {
    /// Event id.
    pub event_id: u64,
    /// Subscription id (one per type in the sandbox).
    pub subscription_id: u64,
    /// Account.
    pub portal_id: i64,
    /// App.
    pub app_id: i64,
    /// When, ms.
    pub occurred_at: i64,
    /// `contact.creation`, `company.associationChange`, ...
    pub subscription_type: &'static str,
    /// Delivery attempt, from 0.
    pub attempt_number: u32,
    /// The contact or company.
    pub object_id: u64,
    /// `INTEGRATION` (the app's API calls), `CRM_UI` (a person, see [`USER_HEADER`]) or
    /// `COMPANY_INSIGHTS` (HubSpot's automation).
    pub change_source: &'static str,
    /// The app id for `INTEGRATION`, `userId:<id>` for `CRM_UI` (as HubSpot sends them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// `NEW`, `DELETED`, `MERGED` or absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_flag: Option<&'static str>,
    /// Property change: the property.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property_name: Option<String>,
    /// Property change: its new value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property_value: Option<String>,
    /// Merge: the survivor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_object_id: Option<u64>,
    /// Merge: the ids merged into it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_object_ids: Option<Vec<u64>>,
    /// Merge: the resulting id (the survivor's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_object_id: Option<u64>,
    /// Merge: how many values moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_of_properties_moved: Option<u32>,
    /// Association change: `CONTACT_TO_COMPANY` or `COMPANY_TO_CONTACT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub association_type: Option<&'static str>,
    /// Association change: the side the event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_object_id: Option<u64>,
    /// Association change: the other side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_object_id: Option<u64>,
    /// Association change: removed rather than added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub association_removed: Option<bool>,
    /// Association change: the primary type changed (rather than the unlabelled one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_primary_association: Option<bool>,
}

/// Properties whose changes are not sent (HubSpot does not allow subscribing to them).
const UNSUBSCRIBABLE: [&str; 3] = [
    "lastmodifieddate",
    "hs_lastmodifieddate",
    "num_unique_conversion_events",
];

/// Counters of the sender.
#[derive(Debug, Default)]
pub(crate) struct WebhookStats {
    /// Events delivered.
    pub delivered: AtomicU64,
    /// Requests that failed for good.
    pub failed: AtomicU64,
    /// Attempts that failed and were retried: refused, or not answered within HubSpot's 5 s.
    pub retried: AtomicU64,
    /// The slowest answer to a delivered request, in milliseconds (HubSpot gives up at 5 s).
    pub slowest_ms: AtomicU64,
}

/// The sending side handed to request handlers.
#[derive(Debug, Clone)]
pub(crate) struct Webhooks {
    tx: mpsc::UnboundedSender<Event>,
    portal_id: i64,
    app_id: i64,
    next_id: Arc<AtomicU64>,
    /// Delivery counters.
    pub stats: Arc<WebhookStats>,
}

impl Webhooks {
    /// Starts the background sender for `url`, signing with `secret`.
    pub(crate) fn start(url: String, secret: Credential, portal_id: i64, app_id: i64) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WebhookStats::default());
        tokio::spawn(run_sender(url, secret, rx, stats.clone()));
        Self {
            tx,
            portal_id,
            app_id,
            next_id: Arc::new(AtomicU64::new(1)),
            stats,
        }
    }

    /// Queues the events for these changes of `object` records, made by the actor of the
    /// call being served.
    pub(crate) fn publish(&self, object: CrmObject, changes: &[Change]) {
        self.publish_as(&current_actor(), object, changes);
    }

    /// Queues the events for these record changes, made by `actor`.
    pub(crate) fn publish_as(&self, actor: &Actor, object: CrmObject, changes: &[Change]) {
        let at = now_ms();
        for change in changes {
            if let Some(event) = self.event_for(actor, object, change, at) {
                self.send(event);
            }
        }
    }

    /// Queues the events for these association changes, one per side, made by `actor` (the
    /// actor of the call being served when `None`).
    pub(crate) fn publish_associations(&self, actor: Option<&Actor>, changes: &[AssocChange]) {
        let actor = actor.cloned().unwrap_or_else(current_actor);
        let at = now_ms();
        for change in changes {
            for from_contact in [true, false] {
                self.send(self.association_event(&actor, change, from_contact, at));
            }
        }
    }

    fn send(&self, event: Event) {
        // A closed channel means the sandbox is shutting down; nothing to do.
        let _ = self.tx.send(event);
    }

    fn blank(&self, actor: &Actor, at: i64) -> Event {
        let (change_source, source_id) = actor.source(self.app_id);
        Event {
            event_id: self.next_id.fetch_add(1, Ordering::Relaxed),
            subscription_id: 0,
            portal_id: self.portal_id,
            app_id: self.app_id,
            occurred_at: at,
            subscription_type: "",
            attempt_number: 0,
            object_id: 0,
            change_source,
            source_id,
            change_flag: None,
            property_name: None,
            property_value: None,
            primary_object_id: None,
            merged_object_ids: None,
            new_object_id: None,
            number_of_properties_moved: None,
            association_type: None,
            from_object_id: None,
            to_object_id: None,
            association_removed: None,
            is_primary_association: None,
        }
    }

    fn event_for(
        &self,
        actor: &Actor,
        object: CrmObject,
        change: &Change,
        at: i64,
    ) -> Option<Event> {
        let mut e = self.blank(actor, at);
        let types = SubscriptionTypes::of(object);
        match change {
            Change::Created(id) => {
                (e.subscription_type, e.subscription_id) = types.creation;
                e.object_id = *id;
                e.change_flag = Some("NEW");
            }
            Change::PropertyChanged { id, name, value } => {
                if UNSUBSCRIBABLE.contains(&name.as_str()) {
                    return None;
                }
                (e.subscription_type, e.subscription_id) = types.property_change;
                e.object_id = *id;
                e.property_name = Some(name.clone());
                e.property_value = Some(value.clone());
            }
            Change::Deleted(id) => {
                (e.subscription_type, e.subscription_id) = types.deletion;
                e.object_id = *id;
                e.change_flag = Some("DELETED");
            }
            Change::Merged {
                primary,
                merged,
                survivor,
            } => {
                (e.subscription_type, e.subscription_id) = types.merge;
                e.object_id = *survivor;
                e.change_flag = Some("MERGED");
                e.primary_object_id = Some(*primary);
                e.merged_object_ids = Some(vec![*merged]);
                e.new_object_id = Some(*survivor);
                e.number_of_properties_moved = Some(0);
            }
            Change::Restored(id) => {
                (e.subscription_type, e.subscription_id) = types.restore;
                e.object_id = *id;
                e.change_flag = Some("RESTORED");
            }
        }
        Some(e)
    }

    /// The event of an association change on the contact's side (`from_contact`) or the
    /// company's.
    fn association_event(
        &self,
        actor: &Actor,
        change: &AssocChange,
        from_contact: bool,
        at: i64,
    ) -> Event {
        let mut e = self.blank(actor, at);
        let (from, to, object, association_type) = if from_contact {
            (
                change.contact,
                change.company,
                CrmObject::Contacts,
                "CONTACT_TO_COMPANY",
            )
        } else {
            (
                change.company,
                change.contact,
                CrmObject::Companies,
                "COMPANY_TO_CONTACT",
            )
        };
        (e.subscription_type, e.subscription_id) = SubscriptionTypes::of(object).association_change;
        e.object_id = from;
        e.association_type = Some(association_type);
        e.from_object_id = Some(from);
        e.to_object_id = Some(to);
        e.association_removed = Some(change.removed);
        e.is_primary_association = Some(change.kind == AssocType::Primary);
        e
    }
}

/// The actor of the API call being served (the app outside one).
fn current_actor() -> Actor {
    ACTOR.try_with(Actor::clone).unwrap_or(Actor::App)
}

/// The subscription types (and the sandbox's subscription ids) of one object type.
struct SubscriptionTypes {
    creation: (&'static str, u64),
    property_change: (&'static str, u64),
    deletion: (&'static str, u64),
    merge: (&'static str, u64),
    restore: (&'static str, u64),
    association_change: (&'static str, u64),
}

impl SubscriptionTypes {
    fn of(object: CrmObject) -> Self {
        match object {
            CrmObject::Contacts => Self {
                creation: ("contact.creation", 1),
                property_change: ("contact.propertyChange", 2),
                deletion: ("contact.deletion", 3),
                merge: ("contact.merge", 4),
                restore: ("contact.restore", 5),
                association_change: ("contact.associationChange", 6),
            },
            CrmObject::Companies => Self {
                creation: ("company.creation", 11),
                property_change: ("company.propertyChange", 12),
                deletion: ("company.deletion", 13),
                merge: ("company.merge", 14),
                restore: ("company.restore", 15),
                association_change: ("company.associationChange", 16),
            },
        }
    }
}

async fn run_sender(
    url: String,
    secret: Credential,
    mut rx: mpsc::UnboundedReceiver<Event>,
    stats: Arc<WebhookStats>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "sandbox webhooks: cannot build an HTTP client; webhooks are off");
            return;
        }
    };
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_EVENTS_PER_REQUEST {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                Ok(None) | Err(_) => break,
            }
        }
        deliver(&client, &url, &secret, batch, &stats).await;
    }
}

async fn deliver(
    client: &reqwest::Client,
    url: &str,
    secret: &Credential,
    mut batch: Vec<Event>,
    stats: &WebhookStats,
) {
    for attempt in 0..MAX_ATTEMPTS {
        for e in &mut batch {
            e.attempt_number = attempt;
        }
        let Ok(body) = serde_json::to_vec(&batch) else {
            return;
        };
        let timestamp = now_ms();
        let signature = sign_v3(secret.expose(), "POST", url, &body, timestamp);
        let started = std::time::Instant::now();
        let sent = client
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-HubSpot-Signature-v3", signature)
            .header("X-HubSpot-Request-Timestamp", timestamp.to_string())
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                stats.slowest_ms.fetch_max(ms, Ordering::Relaxed);
                stats
                    .delivered
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                return;
            }
            Ok(r) => tracing::warn!(status = %r.status(), attempt, "sandbox webhook refused"),
            Err(e) => tracing::warn!(error = %e, attempt, "sandbox webhook delivery failed"),
        }
        stats.retried.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
    }
    stats.failed.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const URI: &str = "https://www.example.com/webhook_uri";

    #[test]
    fn signs_hubspots_published_v3_vector() {
        let body = b"{'example_field':'example_value'}";
        assert_eq!(
            sign_v3(SECRET, "POST", URI, body, 1_693_657_560_000),
            "K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="
        );
    }

    #[test]
    fn signs_the_derived_v3_vector() {
        let body = br#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
        assert_eq!(
            sign_v3(SECRET, "POST", URI, body, 1_564_113_600_000),
            "DxmVAjFNa2xfF3YgQjdZP6TNcok9k1oaH7UXombPtvw="
        );
    }
}
