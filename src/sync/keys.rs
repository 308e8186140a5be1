//! The external key's value: which local row a HubSpot contact was pushed from, and by which
//! database.
//!
//! Push writes `<installation>:<local id>` into [`EXTERNAL_KEY`](super::push::EXTERNAL_KEY),
//! the installation being this database's random id ([`Installation`]). A value only ever
//! names a row of the database that wrote it: two databases pushing to one portal (staging
//! and production, a second install) hold different installation ids, so neither links,
//! overwrites or pulls into its rows the other's contacts by key (docs/security.md).
//!
//! Versions before the installation id wrote the bare local id. Such a value is this
//! database's own only when its migration found it had pushed before, and only for rows that
//! existed then ([`Installation::legacy_keys_through`]); a fresh database never claims a bare
//! key. Anything else (another installation's key, a value set by hand) names no row here.

use crate::ids::{ContactId, LocalCompanyId};
use crate::store::Installation;

/// This database's reading and writing of external keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalKeys {
    installation: String,
    legacy_through: Option<ContactId>,
}

impl ExternalKeys {
    /// The keys of `installation`.
    pub fn new(installation: &Installation) -> Self {
        Self {
            installation: installation.id.clone(),
            legacy_through: installation.legacy_keys_through,
        }
    }

    /// This database's installation id.
    pub fn installation(&self) -> &str {
        &self.installation
    }

    /// The value push writes for the row `id`: `<installation>:<id>`.
    pub fn key(&self, id: ContactId) -> String {
        format!("{}:{}", self.installation, id.0)
    }

    /// The bare value an earlier version wrote for the row `id`, when such a value is this
    /// database's own (the row existed when the database stopped writing bare keys).
    pub fn legacy_key(&self, id: ContactId) -> Option<String> {
        self.is_legacy(id).then(|| id.0.to_string())
    }

    /// The local row a value names, when it is this database's: its own namespaced key, or a
    /// bare key it wrote before the installation id. `None` for another installation's key,
    /// a bare key this database never wrote, or anything else.
    pub fn parse(&self, value: &str) -> Option<ContactId> {
        let value = value.trim();
        match value.split_once(':') {
            Some((installation, id)) if installation == self.installation => local_id(id),
            Some(_) => None,
            None => local_id(value).filter(|id| self.is_legacy(*id)),
        }
    }

    /// Whether `value` is this database's key of the row `id`.
    pub fn names(&self, value: Option<&str>, id: ContactId) -> bool {
        value.and_then(|v| self.parse(v)) == Some(id)
    }

    /// The value company push writes for the company row `id`: `<installation>:<id>`, in its
    /// own property (`crm_sync_company_id`), so it never meets a contact's key.
    pub fn company_key(&self, id: LocalCompanyId) -> String {
        format!("{}:{}", self.installation, id.0)
    }

    /// The local company a company key names, when it is this database's. Companies were
    /// never pushed with bare keys, so a bare value names no company here.
    pub fn parse_company(&self, value: &str) -> Option<LocalCompanyId> {
        match value.trim().split_once(':') {
            Some((installation, id)) if installation == self.installation => {
                local_id(id).map(|id| LocalCompanyId(id.0))
            }
            _ => None,
        }
    }

    fn is_legacy(&self, id: ContactId) -> bool {
        self.legacy_through.is_some_and(|last| id <= last)
    }
}

/// A local id written by push: digits only (no sign, no spaces), fitting an `i64`.
fn local_id(s: &str) -> Option<ContactId> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().map(ContactId)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(legacy_through: Option<i64>) -> ExternalKeys {
        ExternalKeys::new(&Installation {
            id: "0123456789abcdef".to_owned(),
            legacy_keys_through: legacy_through.map(ContactId),
        })
    }

    #[test]
    fn a_key_is_the_installation_and_the_local_id() {
        let keys = keys(None);
        assert_eq!(keys.key(ContactId(42)), "0123456789abcdef:42");
        assert_eq!(keys.parse("0123456789abcdef:42"), Some(ContactId(42)));
        assert_eq!(keys.parse(" 0123456789abcdef:42 "), Some(ContactId(42)));
        assert!(keys.names(Some("0123456789abcdef:42"), ContactId(42)));
        assert!(!keys.names(Some("0123456789abcdef:42"), ContactId(43)));
        assert!(!keys.names(None, ContactId(42)));
    }

    #[test]
    fn a_company_key_is_namespaced_and_never_bare() {
        let keys = keys(Some(100));
        assert_eq!(keys.company_key(LocalCompanyId(7)), "0123456789abcdef:7");
        assert_eq!(
            keys.parse_company(" 0123456789abcdef:7 "),
            Some(LocalCompanyId(7))
        );
        assert_eq!(keys.parse_company("7"), None, "no company had a bare key");
        assert_eq!(keys.parse_company("fedcba9876543210:7"), None);
        assert_eq!(keys.parse_company("0123456789abcdef:x"), None);
    }

    #[test]
    fn another_installations_key_names_no_row() {
        let keys = keys(Some(100));
        assert_eq!(keys.parse("fedcba9876543210:42"), None);
        assert_eq!(keys.parse("0123456789abcdeF:42"), None);
        assert_eq!(keys.parse(":42"), None);
        assert!(!keys.names(Some("fedcba9876543210:42"), ContactId(42)));
    }

    #[test]
    fn a_malformed_value_names_no_row() {
        let keys = keys(Some(100));
        for value in [
            "",
            "vip",
            "0123456789abcdef:",
            "0123456789abcdef:x",
            "0123456789abcdef:-4",
            "0123456789abcdef:+4",
            "0123456789abcdef:4:5",
            "0123456789abcdef: 4",
            "-4",
            "99999999999999999999",
        ] {
            assert_eq!(keys.parse(value), None, "{value:?}");
        }
    }

    #[test]
    fn a_bare_key_is_ours_only_for_rows_that_existed_when_bare_keys_were_written() {
        let old = keys(Some(100));
        assert_eq!(old.parse(" 42 "), Some(ContactId(42)));
        assert_eq!(old.parse("100"), Some(ContactId(100)));
        assert_eq!(old.parse("101"), None, "a row created since");
        assert_eq!(old.legacy_key(ContactId(42)).as_deref(), Some("42"));
        assert_eq!(old.legacy_key(ContactId(101)), None);
        let fresh = keys(None);
        assert_eq!(
            fresh.parse("42"),
            None,
            "a fresh database claims no bare key"
        );
        assert_eq!(fresh.legacy_key(ContactId(42)), None);
    }
}
