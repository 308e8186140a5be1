//! The CRM object types the sandbox serves (contacts and companies) and what differs between
//! them: names in paths and messages, the default and always-returned properties, the
//! last-modified property, scopes, and the words a free-text search looks in.

use serde::{Deserialize, Serialize};

/// A CRM object type.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CrmObject {
    /// `contacts`, object type `0-1`.
    #[default]
    Contacts,
    /// `companies`, object type `0-2`.
    Companies,
}

impl CrmObject {
    /// Both types, contacts first.
    pub(crate) const ALL: [Self; 2] = [Self::Contacts, Self::Companies];

    /// The name in paths, e.g. `contacts`.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Self::Contacts => "contacts",
            Self::Companies => "companies",
        }
    }

    /// The singular name (paths of the v4 associations API accept it, webhooks use it).
    pub(crate) fn singular(self) -> &'static str {
        match self {
            Self::Contacts => "contact",
            Self::Companies => "company",
        }
    }

    /// HubSpot's object type id, e.g. `0-1`.
    pub(crate) fn type_id(self) -> &'static str {
        match self {
            Self::Contacts => "0-1",
            Self::Companies => "0-2",
        }
    }

    /// The upper-case name HubSpot's messages use (`CONTACT`, `COMPANY`).
    pub(crate) fn upper(self) -> &'static str {
        match self {
            Self::Contacts => "CONTACT",
            Self::Companies => "COMPANY",
        }
    }

    /// The capitalised name of conflict messages (`Contact already exists.`).
    pub(crate) fn title(self) -> &'static str {
        match self {
            Self::Contacts => "Contact",
            Self::Companies => "Company",
        }
    }

    /// The type a path segment names: plural, singular or type id.
    pub(crate) fn from_path(segment: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|o| segment == o.plural() || segment == o.singular() || segment == o.type_id())
    }

    /// The property that holds the last change: contacts keep the legacy name.
    pub(crate) fn modified_property(self) -> &'static str {
        match self {
            Self::Contacts => "lastmodifieddate",
            Self::Companies => "hs_lastmodifieddate",
        }
    }

    /// Properties a record always carries in answers, whatever was asked for.
    pub(crate) fn always_returned(self) -> [&'static str; 3] {
        ["hs_object_id", "createdate", self.modified_property()]
    }

    /// Properties returned when a read names none.
    pub(crate) fn default_returned(self) -> &'static [&'static str] {
        match self {
            Self::Contacts => &[
                "email",
                "firstname",
                "lastname",
                "hs_object_id",
                "createdate",
                "lastmodifieddate",
            ],
            Self::Companies => &[
                "name",
                "domain",
                "hs_object_id",
                "createdate",
                "hs_lastmodifieddate",
            ],
        }
    }

    /// Properties that a free-text search `query` looks in.
    pub(crate) fn query_properties(self) -> &'static [&'static str] {
        match self {
            Self::Contacts => &[
                "firstname",
                "lastname",
                "email",
                "phone",
                "company",
                "website",
            ],
            Self::Companies => &["name", "domain", "website", "phone"],
        }
    }

    /// The OAuth scope for reads of records.
    pub(crate) fn read_scope(self) -> &'static str {
        match self {
            Self::Contacts => "crm.objects.contacts.read",
            Self::Companies => "crm.objects.companies.read",
        }
    }

    /// The OAuth scope for writes of records.
    pub(crate) fn write_scope(self) -> &'static str {
        match self {
            Self::Contacts => "crm.objects.contacts.write",
            Self::Companies => "crm.objects.companies.write",
        }
    }

    /// The OAuth scope for reading property definitions.
    pub(crate) fn schema_read_scope(self) -> &'static str {
        match self {
            Self::Contacts => "crm.schemas.contacts.read",
            Self::Companies => "crm.schemas.companies.read",
        }
    }

    /// The OAuth scope for changing property definitions.
    pub(crate) fn schema_write_scope(self) -> &'static str {
        match self {
            Self::Contacts => "crm.schemas.contacts.write",
            Self::Companies => "crm.schemas.companies.write",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_a_type_by_plural_singular_or_type_id() {
        for segment in ["companies", "company", "0-2"] {
            assert_eq!(CrmObject::from_path(segment), Some(CrmObject::Companies));
        }
        assert_eq!(CrmObject::from_path("0-1"), Some(CrmObject::Contacts));
        assert_eq!(CrmObject::from_path("deals"), None);
    }

    #[test]
    fn companies_keep_their_last_change_in_hs_lastmodifieddate() {
        assert_eq!(
            CrmObject::Companies.always_returned(),
            ["hs_object_id", "createdate", "hs_lastmodifieddate"]
        );
        assert!(
            CrmObject::Contacts
                .default_returned()
                .contains(&"lastmodifieddate")
        );
    }
}
