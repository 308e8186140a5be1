//! The sandbox's whole CRM: contacts, companies and the associations between them, and the
//! rules that span them: merges hand associations to the survivor, a GDPR delete forgets
//! them, reads leave out records in the recycle bin, and HubSpot's "Create and associate
//! companies with contacts" setting links contacts to the company of their email domain.

use std::collections::BTreeMap;

use super::associations::{AssocChange, Associations, Direction};
use super::objects::CrmObject;
use super::store::{Change, Found, IdKey, Store};

/// Email domains of free-mail providers: HubSpot does not match them to a company (it tries
/// the contact's website instead).
const FREE_MAIL: [&str; 16] = [
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "msn.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "gmx.com",
    "gmx.de",
    "web.de",
    "proton.me",
    "protonmail.com",
    "mail.com",
];

/// What HubSpot's own automation changed (companies it created, pairs it linked).
#[derive(Debug, Default)]
pub(crate) struct Automatic {
    /// Companies created.
    pub companies: Vec<Change>,
    /// Pairs linked.
    pub associations: Vec<AssocChange>,
}

/// All CRM data of the sandbox.
#[derive(Debug, Clone)]
pub(crate) struct Crm {
    /// Contacts.
    pub contacts: Store,
    /// Companies.
    pub companies: Store,
    /// Contact–company pairs.
    pub associations: Associations,
}

impl Crm {
    /// An empty CRM whose writes reach search after `search_delay_ms`.
    pub(crate) fn new(search_delay_ms: u64) -> Self {
        Self {
            contacts: Store::new(CrmObject::Contacts, search_delay_ms),
            companies: Store::new(CrmObject::Companies, search_delay_ms),
            associations: Associations::default(),
        }
    }

    /// The records of `object`.
    pub(crate) fn object(&self, object: CrmObject) -> &Store {
        match object {
            CrmObject::Contacts => &self.contacts,
            CrmObject::Companies => &self.companies,
        }
    }

    /// The records of `object`, to change.
    pub(crate) fn object_mut(&mut self, object: CrmObject) -> &mut Store {
        match object {
            CrmObject::Contacts => &mut self.contacts,
            CrmObject::Companies => &mut self.companies,
        }
    }

    /// Makes every pending write visible to search at once.
    pub(crate) fn flush_search_index(&mut self) {
        self.contacts.flush_search_index();
        self.companies.flush_search_index();
    }

    /// The live record an association call names by id (merged-away and archived ids name
    /// none).
    pub(crate) fn live_id(&self, object: CrmObject, raw: &str) -> Option<u64> {
        match self.object(object).find(&IdKey::ObjectId, raw) {
            Found::Live(id) => Some(id),
            _ => None,
        }
    }

    /// The live records associated with the live record `from` (`None` when it is not
    /// live), in id order, with the primary flag.
    pub(crate) fn associated(&self, direction: Direction, from: u64) -> Option<Vec<(u64, bool)>> {
        self.object(direction.from).get(from)?;
        let to = self.object(direction.to);
        let pairs: Vec<(u64, bool)> = match direction.from {
            CrmObject::Contacts => self.associations.companies_of(from).collect(),
            CrmObject::Companies => self.associations.contacts_of(from).collect(),
        };
        Some(
            pairs
                .into_iter()
                .filter(|(id, _)| to.get(*id).is_some())
                .collect(),
        )
    }

    /// The association changes that follow record changes of `object`: merges hand the merged
    /// records' pairs to the survivor.
    pub(crate) fn follow(&mut self, object: CrmObject, changes: &[Change]) -> Vec<AssocChange> {
        let mut out = Vec::new();
        for change in changes {
            if let Change::Merged {
                primary,
                merged,
                survivor,
            } = change
            {
                out.extend(self.associations.move_to(object, *merged, *survivor));
                if survivor != primary {
                    out.extend(self.associations.move_to(object, *primary, *survivor));
                }
            }
        }
        out
    }

    /// HubSpot's "Create and associate companies with contacts": each contact created, or
    /// whose email or website changed, and that has no live company yet, is associated (as
    /// its primary company) with the oldest live company of its email domain (its website's
    /// for free-mail addresses), which is created when none exists. An existing association
    /// is never replaced.
    pub(crate) fn auto_associate(&mut self, contact_changes: &[Change], now_ms: i64) -> Automatic {
        let mut automatic = Automatic::default();
        let mut touched: Vec<u64> = contact_changes
            .iter()
            .filter_map(|c| match c {
                Change::Created(id) | Change::Restored(id) => Some(*id),
                Change::PropertyChanged { id, name, .. }
                    if name == "email" || name == "website" =>
                {
                    Some(*id)
                }
                _ => None,
            })
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let to_companies = Direction {
            from: CrmObject::Contacts,
            to: CrmObject::Companies,
        };
        for contact in touched {
            let has_company = self
                .associated(to_companies, contact)
                .is_some_and(|c| !c.is_empty());
            if has_company {
                continue;
            }
            let Some(domain) = self.contacts.get(contact).and_then(contact_domain) else {
                continue;
            };
            let company = match self.company_with_domain(&domain) {
                Some(id) => id,
                None => {
                    let id = self
                        .companies
                        .insert_automatic(company_for(&domain), now_ms);
                    automatic.companies.push(Change::Created(id));
                    id
                }
            };
            automatic
                .associations
                .extend(self.associations.set(contact, company, true));
        }
        automatic
    }

    /// The oldest live company whose domain or additional domains include `domain`.
    fn company_with_domain(&self, domain: &str) -> Option<u64> {
        self.companies.live().find_map(|c| {
            let own = c.properties.get("domain").map(|d| bare_domain(d));
            let extra = c
                .properties
                .get("hs_additional_domains")
                .into_iter()
                .flat_map(|v| v.split(';'))
                .map(bare_domain);
            own.into_iter()
                .chain(extra)
                .any(|d| d == domain)
                .then_some(c.id)
        })
    }
}

/// The domain HubSpot matches a contact by: its email's, or its website's for free mail.
fn contact_domain(contact: &super::store::Record) -> Option<String> {
    let email_domain = contact
        .email()
        .and_then(|e| e.rsplit_once('@'))
        .map(|(_, d)| bare_domain(d));
    match email_domain {
        Some(d) if !FREE_MAIL.contains(&d.as_str()) => Some(d),
        _ => contact
            .properties
            .get("website")
            .map(|w| bare_domain(w))
            .filter(|d| d.contains('.')),
    }
}

/// `https://www.Example.com/path` → `example.com`.
fn bare_domain(raw: &str) -> String {
    let lower = raw.trim().to_lowercase();
    let no_scheme = lower
        .split_once("://")
        .map_or(lower.as_str(), |(_, rest)| rest);
    let host = no_scheme.split(['/', '?', '#']).next().unwrap_or("");
    host.strip_prefix("www.").unwrap_or(host).to_owned()
}

/// The values HubSpot fills in for a company it creates for `domain` (from "its own data":
/// the sandbox knows only the domain).
fn company_for(domain: &str) -> BTreeMap<String, String> {
    let first = domain.split('.').next().unwrap_or(domain);
    let mut name: String = first.chars().take(1).flat_map(char::to_uppercase).collect();
    name.extend(first.chars().skip(1));
    BTreeMap::from([
        ("domain".to_owned(), domain.to_owned()),
        ("name".to_owned(), name),
        ("website".to_owned(), format!("https://{domain}")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CreateInput;
    use crate::variants::Variants;

    fn contact(crm: &mut Crm, email: &str) -> (u64, Vec<Change>) {
        let out = crm
            .contacts
            .batch_create(
                vec![CreateInput {
                    values: BTreeMap::from([("email".to_owned(), email.to_owned())]),
                    trace: None,
                }],
                1,
                &Variants::default(),
            )
            .expect("created");
        (out.written[0].contact.id, out.changes)
    }

    #[test]
    fn a_contact_is_linked_to_the_company_of_its_email_domain_which_is_created_once() {
        let mut crm = Crm::new(0);
        let (ada, changes) = contact(&mut crm, "ada@acme.io");
        let first = crm.auto_associate(&changes, 2);
        assert_eq!(first.companies.len(), 1, "no company had the domain");
        let (bob, changes) = contact(&mut crm, "bob@ACME.io");
        let second = crm.auto_associate(&changes, 3);
        assert!(second.companies.is_empty(), "the company exists now");
        let company = crm.companies.live().next().expect("one company").id;
        assert_eq!(crm.associations.get(ada, company), Some(true));
        assert_eq!(crm.associations.get(bob, company), Some(true));
        assert_eq!(
            crm.companies.get(company).expect("live").properties["name"],
            "Acme"
        );
    }

    #[test]
    fn free_mail_and_existing_associations_are_left_alone() {
        let mut crm = Crm::new(0);
        let (_, changes) = contact(&mut crm, "someone@gmail.com");
        assert!(crm.auto_associate(&changes, 2).associations.is_empty());
        assert_eq!(bare_domain("https://www.Example.com/about"), "example.com");
    }
}
