//! What happened to each contact of a page, the HubSpot properties a contact is sent with, and
//! the reasons a person reads in the job's errors.

use crate::hubspot::{Contact, HubSpotError};
use crate::ids::HsObjectId;
use crate::jobs::model::PushOutcome;
use crate::store::TombstoneReason;
use crate::store::push::PushCandidate;
use crate::sync::keys::ExternalKeys;
use std::collections::BTreeMap;

/// The unique custom contact property that holds the external key in HubSpot,
/// `<installation>:<local id>` ([`crate::sync::keys`]): it makes creating a contact idempotent
/// (HubSpot refuses a second record with the same value) and lets a contact without email be
/// found again, by the database that pushed it and no other.
pub const EXTERNAL_KEY: &str = "crm_sync_contact_id";

/// The properties every read asks for: enough to match a record to a local contact (by email,
/// secondary email or external key) and to tell whether it holds the local values.
pub(super) fn read_properties() -> Vec<String> {
    [
        "email",
        "firstname",
        "lastname",
        "hs_additional_emails",
        EXTERNAL_KEY,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// How one contact of a page ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Resolution {
    /// A new HubSpot contact holds the local values.
    Created(HsObjectId),
    /// An existing HubSpot contact was linked. `in_sync`: its values may count as pushed (link
    /// mode leaves a matched contact's properties alone by design); when false only the link
    /// is saved and the next push updates the contact.
    Linked { id: HsObjectId, in_sync: bool },
    /// An existing HubSpot contact now holds the local values.
    Updated(HsObjectId),
    /// HubSpot no longer has the linked record: the contact is not pushed (never created
    /// again) and its row is tombstoned for this reason.
    Gone(TombstoneReason),
    /// HubSpot (or the local database) refused the record.
    Failed {
        /// The HubSpot record concerned, when there is one.
        id: Option<HsObjectId>,
        /// Why, in words a person can act on.
        reason: String,
    },
}

impl Resolution {
    /// The job count this resolution adds to.
    pub(super) fn outcome(&self) -> PushOutcome {
        match self {
            Self::Created(_) => PushOutcome::Created,
            Self::Linked { .. } => PushOutcome::Linked,
            Self::Updated(_) => PushOutcome::Updated,
            Self::Failed { .. } => PushOutcome::Failed,
            Self::Gone(_) => PushOutcome::Skipped,
        }
    }

    /// A failure for `error`, HubSpot's per-input or whole-batch refusal of the record.
    pub(super) fn refused(error: &HubSpotError) -> Self {
        Self::Failed {
            id: None,
            reason: refusal_reason(error),
        }
    }
}

/// Properties of a create or an upsert: the values the contact has, and its external key
/// (always this installation's namespaced one: a record found by a bare key an earlier version
/// wrote gets the new form when it is written over). An absent local value is left out, so
/// that the first push of a contact never erases a value HubSpot has.
pub(super) fn write_properties(
    contact: &PushCandidate,
    keys: &ExternalKeys,
) -> BTreeMap<String, String> {
    let mut properties = present_values(contact);
    properties.insert(EXTERNAL_KEY.to_owned(), keys.key(contact.id));
    properties
}

/// Properties of an update of a linked contact changed locally: all three owned fields, an
/// absent value as the empty string, which clears it in HubSpot (the local database owns them).
pub(super) fn update_properties(contact: &PushCandidate) -> BTreeMap<String, String> {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    BTreeMap::from([
        ("email".to_owned(), value(&contact.email)),
        ("firstname".to_owned(), value(&contact.first_name)),
        ("lastname".to_owned(), value(&contact.last_name)),
    ])
}

fn present_values(contact: &PushCandidate) -> BTreeMap<String, String> {
    [
        ("email", &contact.email),
        ("firstname", &contact.first_name),
        ("lastname", &contact.last_name),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        let value = value.as_deref().filter(|v| !v.trim().is_empty())?;
        Some((name.to_owned(), value.to_owned()))
    })
    .collect()
}

/// Whether a HubSpot record holds the contact's email and names (emails compared
/// case-insensitively, an absent value equal to an empty one).
pub(super) fn holds_local_values(contact: &PushCandidate, record: &Contact) -> bool {
    let same = |local: &Option<String>, remote: Option<&str>| {
        local.as_deref().unwrap_or("").trim() == remote.unwrap_or("").trim()
    };
    let email_matches = contact.email.as_deref().unwrap_or("").trim().to_lowercase()
        == record.email().unwrap_or("").trim().to_lowercase();
    email_matches
        && same(&contact.first_name, record.property("firstname"))
        && same(&contact.last_name, record.property("lastname"))
}

/// Every email a record answers to, lower-cased: its email and its secondary emails (HubSpot
/// finds a contact by either).
pub(super) fn record_emails(record: &Contact) -> impl Iterator<Item = String> + '_ {
    let primary = record.email().map(str::to_owned);
    let secondary = record
        .property("hs_additional_emails")
        .into_iter()
        .flat_map(|list| list.split(';'))
        .map(str::to_owned);
    primary
        .into_iter()
        .chain(secondary)
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty())
}

/// HubSpot's refusal of one record, as a person would want to read it.
pub(super) fn refusal_reason(error: &HubSpotError) -> String {
    match error {
        HubSpotError::Validation { invalid, details } if !invalid.is_empty() => {
            let parts: Vec<String> = invalid
                .iter()
                .map(|p| {
                    let value = p
                        .value
                        .as_deref()
                        .map(|v| format!(" {v:?}"))
                        .unwrap_or_default();
                    let why = p
                        .message
                        .clone()
                        .or_else(|| p.error.clone())
                        .unwrap_or_else(|| details.message.clone());
                    match &p.error {
                        Some(code) if !why.contains(code.as_str()) => {
                            format!("{}{value}: {why} ({code})", p.name)
                        }
                        _ => format!("{}{value}: {why}", p.name),
                    }
                })
                .collect();
            format!("HubSpot rejected {}", parts.join("; "))
        }
        HubSpotError::Conflict {
            existing_id: Some(id),
            details,
        } => format!(
            "HubSpot refused it as a duplicate of its contact {id} (same email or external key): {}",
            details.message
        ),
        HubSpotError::NotFound { details, .. } => {
            format!("HubSpot no longer has the contact: {}", details.message)
        }
        other => match other.details() {
            Some(details) => format!("HubSpot refused it: {details}"),
            None => format!("HubSpot refused it: {other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hubspot::{ApiErrorDetails, InvalidProperty};
    use crate::ids::ContactId;
    use crate::store::Installation;

    fn contact(email: Option<&str>, first: Option<&str>, last: Option<&str>) -> PushCandidate {
        PushCandidate {
            id: ContactId(42),
            email: email.map(str::to_owned),
            first_name: first.map(str::to_owned),
            last_name: last.map(str::to_owned),
            hs_object_id: None,
            local_version: 3,
        }
    }

    fn record(props: &[(&str, &str)]) -> Contact {
        Contact {
            id: HsObjectId::from("7"),
            properties: props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
                .collect(),
            created_at: None,
            updated_at: None,
            archived: false,
            archived_at: None,
            object_write_trace_id: None,
        }
    }

    #[test]
    fn a_new_contact_carries_its_names_and_external_key_but_no_empty_values() {
        let keys = ExternalKeys::new(&Installation {
            id: "0123456789abcdef".to_owned(),
            legacy_keys_through: Some(ContactId(100)),
        });
        let props = write_properties(&contact(None, Some("Ada"), Some(" ")), &keys);
        assert_eq!(
            props,
            BTreeMap::from([
                ("firstname".to_owned(), "Ada".to_owned()),
                (EXTERNAL_KEY.to_owned(), "0123456789abcdef:42".to_owned()),
            ])
        );
    }

    #[test]
    fn an_update_clears_what_the_local_row_no_longer_has() {
        let props = update_properties(&contact(Some("a@b.io"), None, Some("Lovelace")));
        assert_eq!(props["email"], "a@b.io");
        assert_eq!(props["firstname"], "");
        assert_eq!(props["lastname"], "Lovelace");
        assert!(!props.contains_key(EXTERNAL_KEY));
    }

    #[test]
    fn local_values_compare_case_insensitively_for_email_and_absent_as_empty() {
        let local = contact(Some("ada@b.io"), Some("Ada"), None);
        assert!(holds_local_values(
            &local,
            &record(&[
                ("email", "ADA@b.io"),
                ("firstname", "Ada"),
                ("lastname", "")
            ])
        ));
        assert!(!holds_local_values(
            &local,
            &record(&[("email", "ada@b.io"), ("firstname", "Ida")])
        ));
    }

    #[test]
    fn a_record_answers_to_its_secondary_emails() {
        let r = record(&[
            ("email", "Main@b.io"),
            ("hs_additional_emails", "old@b.io;Other@b.io"),
        ]);
        assert_eq!(
            record_emails(&r).collect::<Vec<_>>(),
            vec!["main@b.io", "old@b.io", "other@b.io"]
        );
    }

    #[test]
    fn an_invalid_email_reason_names_the_value_and_hubspots_words() {
        let error = HubSpotError::Validation {
            invalid: vec![InvalidProperty {
                name: "email".into(),
                value: Some("bad@".into()),
                error: Some("INVALID_EMAIL".into()),
                message: Some("Email address bad@ is invalid".into()),
            }],
            details: Box::new(ApiErrorDetails::default()),
        };
        assert_eq!(
            refusal_reason(&error),
            "HubSpot rejected email \"bad@\": Email address bad@ is invalid (INVALID_EMAIL)"
        );
    }
}
