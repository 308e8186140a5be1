//! Events that need no HubSpot read: echoes of this app's own writes, and changes the local
//! database already reflects.
//!
//! During a push HubSpot sends a `contact.creation` and a `contact.propertyChange` per property
//! for every contact the push creates; reading them back would cost more calls than the push.
//! What is dropped, and why nothing is lost (docs/webhooks.md, "Echoes"):
//!
//! - an event whose `changeSource` is `INTEGRATION` and whose `sourceId` is the event's own
//!   `appId` (API-NOTES §13): this app wrote it, so it holds what it wrote — the page that
//!   created or updated the record commits the link, and a page that never committed is pushed
//!   again and found through its external key;
//! - a `contact.creation` for a record already linked locally: the row exists and is linked,
//!   and a pull never changes a linked row's own fields;
//! - a `contact.propertyChange` of a property no pull reads: reading it changes nothing;
//! - a `contact.propertyChange` whose value the linked row already holds.

use super::events::{EventKind, WebhookEvent};
use crate::ids::Email;
use crate::store::LinkedRow;
use crate::sync::PROPERTIES;
use crate::sync::keys::ExternalKeys;

/// Why an event needs no read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// This app's own write (`INTEGRATION` from its own app id).
    OwnWrite,
    /// A creation of a record already linked locally.
    AlreadyLinked,
    /// A change of a property no pull reads.
    UnreadProperty,
    /// A change to the value the linked row already holds.
    ValueHeld,
}

/// Why `event` needs no read, given the local row linked to its record and this database's
/// external keys; `None` when it does. Only creations and property changes can be echoes: a
/// restore or a merge is always read.
pub fn echo_of(
    event: &WebhookEvent,
    linked: Option<&LinkedRow>,
    keys: &ExternalKeys,
) -> Option<Echo> {
    let readable = matches!(
        event.kind,
        EventKind::ContactCreation | EventKind::ContactPropertyChange { .. }
    );
    if !readable {
        return None;
    }
    if event.is_own_write() {
        return Some(Echo::OwnWrite);
    }
    match (&event.kind, linked) {
        (EventKind::ContactCreation, Some(_)) => Some(Echo::AlreadyLinked),
        (
            EventKind::ContactPropertyChange {
                property_name,
                property_value,
            },
            linked,
        ) => property_echo(property_name, property_value.as_deref(), linked, keys),
        _ => None,
    }
}

fn property_echo(
    name: &str,
    value: Option<&str>,
    linked: Option<&LinkedRow>,
    keys: &ExternalKeys,
) -> Option<Echo> {
    if !PROPERTIES.contains(&name) {
        return Some(Echo::UnreadProperty);
    }
    let row = linked?;
    let held = match name {
        "email" => {
            Some(row.email.as_deref() == value.and_then(Email::parse).as_ref().map(Email::as_str))
        }
        "firstname" => Some(same(row.first_name.as_deref(), value)),
        "lastname" => Some(same(row.last_name.as_deref(), value)),
        // The row's own key (namespaced, or bare as an earlier version wrote it); another
        // installation's key is read, like any value set by someone else.
        crate::sync::push::EXTERNAL_KEY => Some(keys.names(value, row.id)),
        _ => None,
    };
    held.filter(|h| *h).map(|_| Echo::ValueHeld)
}

/// Equal, an empty value being no value (HubSpot sends `""` for a cleared property).
fn same(local: Option<&str>, sent: Option<&str>) -> bool {
    local.filter(|v| !v.is_empty()) == sent.filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ContactId, HsObjectId, PortalId};
    use crate::store::Installation;
    use crate::webhooks::ChangeSource;

    fn event(
        kind: EventKind,
        source: Option<ChangeSource>,
        source_id: Option<&str>,
    ) -> WebhookEvent {
        WebhookEvent {
            event_id: 1,
            subscription_id: None,
            portal_id: PortalId(1),
            app_id: Some(77),
            occurred_at_ms: 0,
            subscription_type: String::new(),
            attempt_number: 0,
            object_id: Some(HsObjectId::from("5")),
            change_source: source,
            source_id: source_id.map(str::to_owned),
            change_flag: None,
            kind,
        }
    }

    fn change(name: &str, value: &str) -> EventKind {
        EventKind::ContactPropertyChange {
            property_name: name.to_owned(),
            property_value: Some(value.to_owned()),
        }
    }

    /// Keys of an installation that wrote bare keys up to row 100.
    fn keys() -> ExternalKeys {
        ExternalKeys::new(&Installation {
            id: "0123456789abcdef".to_owned(),
            legacy_keys_through: Some(ContactId(100)),
        })
    }

    fn row() -> LinkedRow {
        LinkedRow {
            hs_object_id: HsObjectId::from("5"),
            id: ContactId(9),
            email: Some("ada@x.io".to_owned()),
            first_name: Some("Ada".to_owned()),
            last_name: None,
        }
    }

    #[test]
    fn an_integration_write_from_this_app_is_an_echo_and_from_another_app_is_not() {
        let own = event(
            EventKind::ContactCreation,
            Some(ChangeSource::Integration),
            Some("77"),
        );
        assert_eq!(echo_of(&own, None, &keys()), Some(Echo::OwnWrite));
        let other = event(
            EventKind::ContactCreation,
            Some(ChangeSource::Integration),
            Some("78"),
        );
        assert_eq!(echo_of(&other, None, &keys()), None);
        let user = event(
            EventKind::ContactCreation,
            Some(ChangeSource::CrmUi),
            Some("userId:77"),
        );
        assert_eq!(echo_of(&user, None, &keys()), None);
    }

    #[test]
    fn a_creation_of_a_linked_record_is_an_echo() {
        let e = event(EventKind::ContactCreation, None, None);
        assert_eq!(
            echo_of(&e, Some(&row()), &keys()),
            Some(Echo::AlreadyLinked)
        );
        assert_eq!(echo_of(&e, None, &keys()), None);
    }

    #[test]
    fn a_property_change_is_read_only_when_it_may_change_something() {
        let user = |kind| event(kind, Some(ChangeSource::CrmUi), Some("userId:1"));
        let r = row();
        assert_eq!(
            echo_of(&user(change("phone", "1")), Some(&r), &keys()),
            Some(Echo::UnreadProperty)
        );
        assert_eq!(
            echo_of(&user(change("email", " ADA@x.io")), Some(&r), &keys()),
            Some(Echo::ValueHeld)
        );
        assert_eq!(
            echo_of(&user(change("firstname", "Ada")), Some(&r), &keys()),
            Some(Echo::ValueHeld)
        );
        assert_eq!(
            echo_of(&user(change("lastname", "")), Some(&r), &keys()),
            Some(Echo::ValueHeld)
        );
        for own in ["0123456789abcdef:9", "9"] {
            assert_eq!(
                echo_of(&user(change("crm_sync_contact_id", own)), Some(&r), &keys()),
                Some(Echo::ValueHeld),
                "{own}"
            );
        }
        assert_eq!(
            echo_of(
                &user(change("crm_sync_contact_id", "fedcba9876543210:9")),
                Some(&r),
                &keys()
            ),
            None,
            "another installation's key on a linked record is read"
        );
        assert_eq!(
            echo_of(&user(change("email", "new@x.io")), Some(&r), &keys()),
            None
        );
        assert_eq!(
            echo_of(&user(change("email", "ada@x.io")), None, &keys()),
            None,
            "not linked: read"
        );
        assert_eq!(
            echo_of(&user(EventKind::ContactRestore), Some(&r), &keys()),
            None
        );
    }
}
