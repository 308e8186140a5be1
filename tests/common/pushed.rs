//! What every push must leave behind, whatever happened on the way: each local row linked to a
//! HubSpot contact of its own, found by the row's email or (without one) by its external key
//! (`<installation>:<id>`), and no contact in HubSpot twice.

use crm_sync::hubspot::{HubSpotClient, PropertyCreate};
use crm_sync::ids::ContactId;
use crm_sync::sandbox::SandboxContact;
use crm_sync::store::Store;
use crm_sync::sync::keys::ExternalKeys;
use crm_sync::sync::push::EXTERNAL_KEY;
use std::collections::{HashMap, HashSet};

/// A local row and its link, as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LinkedRow {
    pub id: i64,
    pub email: Option<String>,
    pub hs_object_id: Option<String>,
}

/// Every local contact with its link, in id order.
pub async fn linked_rows(store: &Store) -> Vec<LinkedRow> {
    const SQL: &str = "SELECT id, email, hs_object_id FROM contacts ORDER BY id";
    if let Some(pool) = store.pg_pool() {
        sqlx::query_as(SQL).fetch_all(pool).await.expect("rows")
    } else {
        let pool = store.sqlite_pool().expect("a pool");
        sqlx::query_as(SQL).fetch_all(pool).await.expect("rows")
    }
}

/// Every row is linked to its own HubSpot contact, which holds the row's email (or, without
/// one, the row's external key), and HubSpot holds no email and no external key twice.
pub fn assert_one_hubspot_contact_per_row(
    rows: &[LinkedRow],
    hubspot: &[SandboxContact],
    keys: &ExternalKeys,
) {
    let by_id: HashMap<&str, &SandboxContact> =
        hubspot.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut seen = HashSet::new();
    for row in rows {
        let id = row
            .hs_object_id
            .as_deref()
            .unwrap_or_else(|| panic!("row {} is not linked: {row:?}", row.id));
        assert!(seen.insert(id), "two rows link to HubSpot contact {id}");
        let contact = by_id
            .get(id)
            .unwrap_or_else(|| panic!("row {} links to missing contact {id}", row.id));
        match &row.email {
            Some(email) => assert_eq!(contact.email(), Some(email.as_str()), "{row:?}"),
            None => assert_eq!(
                contact.properties.get(EXTERNAL_KEY),
                Some(&keys.key(ContactId(row.id))),
                "{row:?}"
            ),
        }
    }
    let keys: Vec<&String> = hubspot
        .iter()
        .filter_map(|c| c.properties.get(EXTERNAL_KEY))
        .collect();
    let distinct: HashSet<&&String> = keys.iter().collect();
    assert_eq!(keys.len(), distinct.len(), "an external key is used twice");
    let emails: Vec<&str> = hubspot.iter().filter_map(|c| c.email()).collect();
    let distinct: HashSet<&&str> = emails.iter().collect();
    assert_eq!(emails.len(), distinct.len(), "an email is used twice");
}

/// Creates the external key property in HubSpot, as an earlier push did.
pub async fn create_key_property(client: &HubSpotClient) {
    client
        .create_property(&PropertyCreate {
            name: EXTERNAL_KEY.to_owned(),
            label: "crm-sync contact id".to_owned(),
            property_type: "string".to_owned(),
            field_type: "text".to_owned(),
            group_name: "contactinformation".to_owned(),
            description: None,
            has_unique_value: true,
            options: Vec::new(),
            form_field: Some(false),
        })
        .await
        .expect("the key property an earlier push created");
}
