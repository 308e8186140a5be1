//! Associations between contacts and companies (HubSpot's v4 associations API).
//!
//! A pair has the unlabelled type (279 contact→company, 280 company→contact) and maybe the
//! primary one (1 / 2): one fact seen from either side, so the two sides can never disagree.
//! A contact has at most one primary company. Pairs stay stored while a record is in the
//! recycle bin; reads leave out pairs whose other side is not live (see `crm`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::objects::CrmObject;

/// Contact → company, unlabelled.
pub(crate) const CONTACT_TO_COMPANY: i64 = 279;
/// Contact → company, the contact's primary company.
pub(crate) const CONTACT_TO_COMPANY_PRIMARY: i64 = 1;
/// Company → contact, unlabelled.
pub(crate) const COMPANY_TO_CONTACT: i64 = 280;
/// Company → contact, the contact's primary company seen from the company.
pub(crate) const COMPANY_TO_CONTACT_PRIMARY: i64 = 2;

/// The category of every type the sandbox knows.
pub(crate) const HUBSPOT_DEFINED: &str = "HUBSPOT_DEFINED";

/// The direction of a request: which object type the `from` ids are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Direction {
    /// The `from` side.
    pub from: CrmObject,
    /// The `to` side.
    pub to: CrmObject,
}

/// One of the two types a pair can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AssocType {
    /// 279 / 280: every associated pair has it.
    Unlabelled,
    /// 1 / 2: the contact's primary company.
    Primary,
}

impl Direction {
    /// Contacts → companies or companies → contacts; `None` for any other pair of types (the
    /// sandbox models no others).
    pub(crate) fn new(from: CrmObject, to: CrmObject) -> Option<Self> {
        (from != to).then_some(Self { from, to })
    }

    /// Whether the `from` ids are contacts.
    pub(crate) fn starts_at_contact(self) -> bool {
        self.from == CrmObject::Contacts
    }

    /// `(contact, company)` of a `(from, to)` pair.
    pub(crate) fn pair(self, from: u64, to: u64) -> (u64, u64) {
        if self.starts_at_contact() {
            (from, to)
        } else {
            (to, from)
        }
    }

    /// The type id of `kind` in this direction.
    pub(crate) fn type_id(self, kind: AssocType) -> i64 {
        match (self.starts_at_contact(), kind) {
            (true, AssocType::Unlabelled) => CONTACT_TO_COMPANY,
            (true, AssocType::Primary) => CONTACT_TO_COMPANY_PRIMARY,
            (false, AssocType::Unlabelled) => COMPANY_TO_CONTACT,
            (false, AssocType::Primary) => COMPANY_TO_CONTACT_PRIMARY,
        }
    }

    /// The type a `{associationCategory, associationTypeId}` names in this direction, matched
    /// by number and category (labels change; numbers do not).
    pub(crate) fn type_of(self, category: &str, type_id: i64) -> Option<AssocType> {
        if category != HUBSPOT_DEFINED {
            return None;
        }
        [AssocType::Unlabelled, AssocType::Primary]
            .into_iter()
            .find(|kind| self.type_id(*kind) == type_id)
    }
}

/// A type added to or removed from a pair, for webhooks (one event per side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AssocChange {
    /// The contact.
    pub contact: u64,
    /// The company.
    pub company: u64,
    /// Which type changed.
    pub kind: AssocType,
    /// Removed rather than added.
    pub removed: bool,
}

/// Every contact–company pair.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Associations {
    /// contact → company → whether it is the contact's primary company.
    by_contact: BTreeMap<u64, BTreeMap<u64, bool>>,
    /// company → its contacts (the same pairs from the other side).
    by_company: BTreeMap<u64, BTreeSet<u64>>,
}

impl Associations {
    /// Whether the pair is associated, and if so whether as primary.
    pub(crate) fn get(&self, contact: u64, company: u64) -> Option<bool> {
        self.by_contact.get(&contact)?.get(&company).copied()
    }

    /// A contact's companies in id order, with the primary flag.
    pub(crate) fn companies_of(&self, contact: u64) -> impl Iterator<Item = (u64, bool)> + '_ {
        self.by_contact
            .get(&contact)
            .into_iter()
            .flat_map(|m| m.iter().map(|(k, p)| (*k, *p)))
    }

    /// A company's contacts in id order, with the primary flag.
    pub(crate) fn contacts_of(&self, company: u64) -> impl Iterator<Item = (u64, bool)> + '_ {
        self.by_company
            .get(&company)
            .into_iter()
            .flatten()
            .map(move |c| (*c, self.get(*c, company).unwrap_or(false)))
    }

    /// Gives the pair exactly these types (the unlabelled one always; `primary` or not), as
    /// HubSpot's labelled PUT and batch create do: a write replaces the pair's label list.
    /// Making it primary demotes the contact's other primary company.
    pub(crate) fn set(&mut self, contact: u64, company: u64, primary: bool) -> Vec<AssocChange> {
        let mut changes = Vec::new();
        let before = self.get(contact, company);
        if before.is_none() {
            changes.push(change(contact, company, AssocType::Unlabelled, false));
        }
        if primary && before != Some(true) {
            changes.extend(self.demote_others(contact, company));
            changes.push(change(contact, company, AssocType::Primary, false));
        }
        if !primary && before == Some(true) {
            changes.push(change(contact, company, AssocType::Primary, true));
        }
        self.by_contact
            .entry(contact)
            .or_default()
            .insert(company, primary);
        self.by_company.entry(company).or_default().insert(contact);
        changes
    }

    /// Adds the unlabelled type, keeping a primary one (the default-association calls).
    pub(crate) fn add_default(&mut self, contact: u64, company: u64) -> Vec<AssocChange> {
        match self.get(contact, company) {
            Some(_) => Vec::new(),
            None => self.set(contact, company, false),
        }
    }

    /// Removes one type: removing the unlabelled one removes the pair.
    pub(crate) fn remove(
        &mut self,
        contact: u64,
        company: u64,
        kind: AssocType,
    ) -> Vec<AssocChange> {
        match (kind, self.get(contact, company)) {
            (_, None) => Vec::new(),
            (AssocType::Primary, Some(false)) => Vec::new(),
            (AssocType::Primary, Some(true)) => self.set(contact, company, false),
            (AssocType::Unlabelled, Some(primary)) => {
                self.unlink(contact, company);
                let mut changes = Vec::new();
                if primary {
                    changes.push(change(contact, company, AssocType::Primary, true));
                }
                changes.push(change(contact, company, AssocType::Unlabelled, true));
                changes
            }
        }
    }

    /// Forgets every pair of a record deleted for good (GDPR delete).
    pub(crate) fn forget(&mut self, object: CrmObject, id: u64) -> Vec<AssocChange> {
        let pairs: Vec<(u64, u64)> = self.pairs_of(object, id);
        pairs
            .into_iter()
            .flat_map(|(contact, company)| self.remove(contact, company, AssocType::Unlabelled))
            .collect()
    }

    /// Moves the pairs of a record merged away to the survivor (HubSpot keeps the associations
    /// of both records on the result). The survivor keeps its own primary company; a merged
    /// contact's primary moves over only when the survivor has none.
    pub(crate) fn move_to(
        &mut self,
        object: CrmObject,
        gone: u64,
        survivor: u64,
    ) -> Vec<AssocChange> {
        let mut changes = Vec::new();
        for (contact, company) in self.pairs_of(object, gone) {
            let primary = self.get(contact, company).unwrap_or(false);
            changes.extend(self.remove(contact, company, AssocType::Unlabelled));
            let (contact, company) = match object {
                CrmObject::Contacts => (survivor, company),
                CrmObject::Companies => (contact, survivor),
            };
            let has_primary = self.companies_of(contact).any(|(_, p)| p);
            let keep_primary = primary && !has_primary;
            if self.get(contact, company).is_some() {
                if keep_primary {
                    changes.extend(self.set(contact, company, true));
                }
            } else {
                changes.extend(self.set(contact, company, keep_primary));
            }
        }
        changes
    }

    fn pairs_of(&self, object: CrmObject, id: u64) -> Vec<(u64, u64)> {
        match object {
            CrmObject::Contacts => self.companies_of(id).map(|(k, _)| (id, k)).collect(),
            CrmObject::Companies => self.contacts_of(id).map(|(c, _)| (c, id)).collect(),
        }
    }

    fn demote_others(&mut self, contact: u64, keep: u64) -> Vec<AssocChange> {
        let others: Vec<u64> = self
            .companies_of(contact)
            .filter(|(k, primary)| *primary && *k != keep)
            .map(|(k, _)| k)
            .collect();
        others
            .into_iter()
            .flat_map(|k| self.set(contact, k, false))
            .collect()
    }

    fn unlink(&mut self, contact: u64, company: u64) {
        if let Some(m) = self.by_contact.get_mut(&contact) {
            m.remove(&company);
            if m.is_empty() {
                self.by_contact.remove(&contact);
            }
        }
        if let Some(s) = self.by_company.get_mut(&company) {
            s.remove(&contact);
            if s.is_empty() {
                self.by_company.remove(&company);
            }
        }
    }
}

fn change(contact: u64, company: u64, kind: AssocType, removed: bool) -> AssocChange {
    AssocChange {
        contact,
        company,
        kind,
        removed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_primary_pair_adds_both_types_and_demotes_the_old_primary() {
        let mut a = Associations::default();
        assert_eq!(
            a.set(1, 10, true),
            vec![
                change(1, 10, AssocType::Unlabelled, false),
                change(1, 10, AssocType::Primary, false)
            ]
        );
        let changes = a.set(1, 11, true);
        assert_eq!(
            changes,
            vec![
                change(1, 11, AssocType::Unlabelled, false),
                change(1, 10, AssocType::Primary, true),
                change(1, 11, AssocType::Primary, false)
            ]
        );
        assert_eq!(
            a.get(1, 10),
            Some(false),
            "the old primary stays associated"
        );
        assert_eq!(a.contacts_of(11).collect::<Vec<_>>(), vec![(1, true)]);
    }

    #[test]
    fn writing_only_the_unlabelled_type_strips_the_primary_label() {
        let mut a = Associations::default();
        a.set(1, 10, true);
        assert_eq!(
            a.set(1, 10, false),
            vec![change(1, 10, AssocType::Primary, true)]
        );
        assert!(a.add_default(1, 10).is_empty(), "already associated");
    }

    #[test]
    fn removing_the_unlabelled_type_removes_the_pair_from_both_sides() {
        let mut a = Associations::default();
        a.set(1, 10, true);
        let changes = a.remove(1, 10, AssocType::Unlabelled);
        assert_eq!(changes.len(), 2);
        assert_eq!(a.get(1, 10), None);
        assert_eq!(a.contacts_of(10).count(), 0);
        assert_eq!(a.companies_of(1).count(), 0);
    }

    #[test]
    fn types_are_matched_by_number_and_direction() {
        let to_company = Direction::new(CrmObject::Contacts, CrmObject::Companies).expect("pair");
        let to_contact = Direction::new(CrmObject::Companies, CrmObject::Contacts).expect("pair");
        assert_eq!(
            to_company.type_of(HUBSPOT_DEFINED, 1),
            Some(AssocType::Primary)
        );
        assert_eq!(to_company.type_of(HUBSPOT_DEFINED, 280), None);
        assert_eq!(
            to_contact.type_of(HUBSPOT_DEFINED, 280),
            Some(AssocType::Unlabelled)
        );
        assert_eq!(to_contact.type_of("USER_DEFINED", 2), None);
        assert_eq!(to_contact.pair(10, 1), (1, 10));
        assert!(Direction::new(CrmObject::Contacts, CrmObject::Contacts).is_none());
    }

    #[test]
    fn a_merged_company_hands_its_contacts_to_the_survivor() {
        let mut a = Associations::default();
        a.set(1, 10, true);
        a.set(2, 10, false);
        a.set(2, 11, true);
        a.move_to(CrmObject::Companies, 10, 11);
        assert_eq!(a.get(1, 11), Some(true), "contact 1 had no other primary");
        assert_eq!(a.get(2, 11), Some(true), "contact 2 keeps its primary");
        assert_eq!(a.contacts_of(10).count(), 0);
    }
}
