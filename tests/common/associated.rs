//! What every contacts push with companies must leave behind, whatever happened on the way:
//! each local company linked to a HubSpot company of its own (found by its domain, or created
//! with its external key), no company in HubSpot twice, and each contact associated with
//! exactly its local company, as primary (types 279 + 1), and with no other company.

use crm_sync::hubspot::{AssociationReadInput, HubSpotClient, MAX_ASSOCIATION_READ, ObjectType};
use crm_sync::ids::LocalCompanyId;
use crm_sync::sandbox::SandboxCompany;
use crm_sync::store::Store;
use crm_sync::sync::companies::COMPANY_KEY;
use crm_sync::sync::keys::ExternalKeys;
use std::collections::{BTreeSet, HashMap, HashSet};

/// A local company and its link, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LinkedCompany {
    pub id: i64,
    pub domain: Option<String>,
    pub hs_object_id: Option<String>,
}

/// A local contact, its link and the link of its local company, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ContactWithCompany {
    pub id: i64,
    pub hs_object_id: Option<String>,
    pub company_hs_object_id: Option<String>,
}

/// Every local company with its link, in id order.
pub async fn linked_companies(store: &Store) -> Vec<LinkedCompany> {
    const SQL: &str = "SELECT id, domain, hs_object_id FROM companies ORDER BY id";
    if let Some(pool) = store.pg_pool() {
        sqlx::query_as(SQL)
            .fetch_all(pool)
            .await
            .expect("companies")
    } else {
        let pool = store.sqlite_pool().expect("a pool");
        sqlx::query_as(SQL)
            .fetch_all(pool)
            .await
            .expect("companies")
    }
}

/// Every local contact that has a company, with both links, in id order.
pub async fn contacts_with_companies(store: &Store) -> Vec<ContactWithCompany> {
    const SQL: &str = "
        SELECT ct.id, ct.hs_object_id, co.hs_object_id AS company_hs_object_id
          FROM contacts ct JOIN companies co ON co.id = ct.company_id
         ORDER BY ct.id";
    if let Some(pool) = store.pg_pool() {
        sqlx::query_as(SQL).fetch_all(pool).await.expect("contacts")
    } else {
        let pool = store.sqlite_pool().expect("a pool");
        sqlx::query_as(SQL).fetch_all(pool).await.expect("contacts")
    }
}

/// Every local company is linked to a HubSpot company of its own holding its domain; those
/// crm-sync created carry the company's external key; HubSpot holds no key and no domain twice
/// (a domain twice would be a company created beside the one a domain search should have
/// found), and no company that is not one of the local ones.
pub fn assert_one_hubspot_company_per_local_company(
    local: &[LinkedCompany],
    hubspot: &[SandboxCompany],
    keys: &ExternalKeys,
) {
    let by_id: HashMap<&str, &SandboxCompany> =
        hubspot.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut seen = HashSet::new();
    for company in local {
        let id = company
            .hs_object_id
            .as_deref()
            .unwrap_or_else(|| panic!("company {} is not linked: {company:?}", company.id));
        assert!(
            seen.insert(id),
            "two local companies link to HubSpot company {id}"
        );
        let record = by_id
            .get(id)
            .unwrap_or_else(|| panic!("company {} links to missing company {id}", company.id));
        assert_eq!(record.domain(), company.domain.as_deref(), "{company:?}");
        if let Some(key) = record.properties.get(COMPANY_KEY) {
            assert_eq!(
                key,
                &keys.company_key(LocalCompanyId(company.id)),
                "{company:?}"
            );
        }
    }
    assert_eq!(
        hubspot.len(),
        local.len(),
        "HubSpot holds exactly the local companies"
    );
    let company_keys: Vec<&String> = hubspot
        .iter()
        .filter_map(|c| c.properties.get(COMPANY_KEY))
        .collect();
    let distinct: HashSet<&&String> = company_keys.iter().collect();
    assert_eq!(
        company_keys.len(),
        distinct.len(),
        "a company key is used twice"
    );
    let domains: Vec<&str> = hubspot.iter().filter_map(|c| c.domain()).collect();
    let distinct: HashSet<&&str> = domains.iter().collect();
    assert_eq!(domains.len(), distinct.len(), "a domain is used twice");
}

/// Each contact in HubSpot has exactly one company, its local company's, with exactly the
/// types 279 (unlabelled) and 1 (primary) — read through HubSpot's v4 batch read, by number.
pub async fn assert_each_contact_has_only_its_company_as_primary(
    client: &HubSpotClient,
    contacts: &[ContactWithCompany],
) {
    let mut found: HashMap<String, Vec<(String, BTreeSet<i32>)>> = HashMap::new();
    for chunk in contacts.chunks(MAX_ASSOCIATION_READ) {
        let inputs: Vec<AssociationReadInput> = chunk
            .iter()
            .map(|c| AssociationReadInput::first(c.hs_object_id.clone().expect("a linked contact")))
            .collect();
        let page = client
            .read_associations(ObjectType::Contacts, ObjectType::Companies, &inputs)
            .await
            .expect("read the contacts' companies");
        assert!(page.errors.is_empty(), "{:?}", page.errors);
        for record in page.results {
            assert!(record.next_after.is_none(), "one page of companies each");
            found.entry(record.from).or_default().extend(
                record
                    .to
                    .into_iter()
                    .map(|to| (to.id, to.types.iter().map(|t| t.type_id.id()).collect())),
            );
        }
    }
    for contact in contacts {
        let hs_id = contact.hs_object_id.as_deref().expect("a linked contact");
        let company = contact
            .company_hs_object_id
            .clone()
            .expect("a linked company");
        assert_eq!(
            found.get(hs_id).map(Vec::as_slice),
            Some(&[(company, BTreeSet::from([1, 279]))][..]),
            "contact {contact:?}: its own company, primary, and no other"
        );
    }
}
