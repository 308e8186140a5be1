//! The HubSpot client's calls on companies, property groups and v4 associations, against the
//! in-process sandbox over real HTTP on 127.0.0.1: what the caller sees and what the sandbox
//! ends up holding, and the budgets those calls spend.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod sandbox_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use crm_sync::hubspot::ids::{CompanyId, HsObjectId};
use crm_sync::hubspot::{
    AssociationArchive, AssociationInput, AssociationReadInput, AssociationSpec, AssociationTypeId,
    Auth, Backoff, Batch, ClientConfig, CompanyCreate, CompanyUpdate, CompanyUpsert,
    ContactCompanyLink, HubSpotClient, HubSpotError, ListCompanies, ObjectType, Operation,
    PropertyCreate, PropertyGroupCreate, SearchRequest,
};
use crm_sync::sandbox::{HubSpotProfile, SandboxArgs, SandboxHandle};
use crm_sync::secret::Secret;
use sandbox_support::{Api, args, start};
use serde_json::json;
use url::Url;

fn client(sb: &SandboxHandle) -> HubSpotClient {
    client_with(sb, |_| {})
}

fn client_with(sb: &SandboxHandle, adjust: impl FnOnce(&mut ClientConfig)) -> HubSpotClient {
    let mut config = ClientConfig::new(Url::parse(&sb.base_url()).expect("sandbox url"));
    config.requests_per_10s = 0;
    config.search_per_second = 0;
    config.associations_per_10s = 0;
    config.backoff = Backoff {
        base: Duration::from_millis(5),
        max: Duration::from_millis(50),
    };
    adjust(&mut config);
    HubSpotClient::new(config, Auth::PrivateApp(Secret::new(sb.access_token()))).expect("client")
}

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn company(pairs: &[(&str, &str)]) -> CompanyCreate {
    CompanyCreate {
        properties: props(pairs),
    }
}

#[tokio::test]
async fn companies_are_created_read_updated_listed_merged_and_archived() {
    let sb = start(args()).await;
    let hs = client(&sb);
    let created = hs
        .create_company(&company(&[("name", "Acme"), ("domain", "acme.io")]))
        .await
        .unwrap();
    assert_eq!(created.domain(), Some("acme.io"));
    let batch = hs
        .batch_create_companies(
            &Batch::new(vec![
                company(&[("name", "Acme again"), ("domain", "acme.io")]),
                company(&[("name", "Bad"), ("numberofemployees", "lots")]),
            ])
            .unwrap(),
        )
        .await
        .unwrap();
    let again = batch
        .result_for(0)
        .expect("a second company for the same domain");
    assert_ne!(again.id, created.id);
    let Some(HubSpotError::Validation { invalid, .. }) = batch.error_for(1) else {
        panic!("the bad number fails alone: {:?}", batch.errors);
    };
    assert_eq!(invalid[0].name, "numberofemployees");

    let read = hs
        .get_company(&created.id.0, None, &["industry".to_owned()])
        .await
        .unwrap();
    assert_eq!(read.id, created.id);
    let updated = hs
        .batch_update_companies(
            &Batch::new(vec![CompanyUpdate {
                id: created.id.0.clone(),
                id_property: None,
                properties: props(&[("industry", "Tools")]),
            }])
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        updated.results[0].record.property("industry"),
        Some("Tools")
    );
    hs.update_company(&again.id, &props(&[("city", "Ghent")]))
        .await
        .unwrap();

    let page = hs
        .list_companies(&ListCompanies {
            limit: 1,
            ..ListCompanies::default()
        })
        .await
        .unwrap();
    assert_eq!(page.results.len(), 1);
    assert!(page.next_after.is_some());

    let merged = hs.merge_companies(&created.id, &again.id).await.unwrap();
    assert!(merged.merged_ids().contains(&again.id));
    let read = hs
        .batch_read_companies(
            &Batch::new(vec![again.id.0.clone(), "999".to_owned()]).unwrap(),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        read.results[0].id, merged.id,
        "the merged-away id reads as the result"
    );
    assert_eq!(read.missing, ["999"]);

    hs.archive_company(&merged.id).await.unwrap();
    hs.batch_archive_companies(&Batch::new(vec![CompanyId::from("424242")]).unwrap())
        .await
        .unwrap();
    assert!(sb.companies().is_empty());
}

#[tokio::test]
async fn upserts_go_by_a_unique_property_and_never_by_domain() {
    let sb = start(args()).await;
    let hs = client(&sb);
    let property = PropertyCreate {
        name: "crm_sync_key".to_owned(),
        label: "crm-sync key".to_owned(),
        property_type: "string".to_owned(),
        field_type: "text".to_owned(),
        group_name: "crm_sync".to_owned(),
        description: None,
        has_unique_value: true,
        options: Vec::new(),
        form_field: None,
    };
    let group = PropertyGroupCreate {
        name: "crm_sync".to_owned(),
        label: "crm-sync".to_owned(),
        display_order: None,
    };
    hs.create_property_group(ObjectType::Companies, &group)
        .await
        .unwrap();
    assert!(matches!(
        hs.create_property_group(ObjectType::Companies, &group)
            .await,
        Err(HubSpotError::Conflict { .. })
    ));
    assert_eq!(
        hs.get_property_group(ObjectType::Companies, "crm_sync")
            .await
            .unwrap()
            .label,
        "crm-sync"
    );
    assert!(matches!(
        hs.get_property_group(ObjectType::Contacts, "crm_sync")
            .await,
        Err(HubSpotError::NotFound { .. })
    ));
    hs.create_object_property(ObjectType::Companies, &property)
        .await
        .unwrap();
    assert!(
        hs.get_object_property(ObjectType::Companies, "crm_sync_key")
            .await
            .unwrap()
            .has_unique_value
    );

    let upsert = |id_property: &str, name: &str| {
        Batch::new(vec![CompanyUpsert {
            id: "k-1".to_owned(),
            id_property: id_property.to_owned(),
            properties: props(&[("name", name), ("domain", "acme.io")]),
        }])
        .unwrap()
    };
    let first = hs
        .batch_upsert_companies(&upsert("crm_sync_key", "Acme"))
        .await
        .unwrap();
    assert!(first.results[0].record.new);
    let second = hs
        .batch_upsert_companies(&upsert("crm_sync_key", "Acme Inc"))
        .await
        .unwrap();
    assert!(!second.results[0].record.new);
    let by_key = hs
        .get_company("k-1", Some("crm_sync_key"), &[])
        .await
        .unwrap();
    assert_eq!(by_key.name(), Some("Acme Inc"));

    let refused = hs
        .batch_upsert_companies(&upsert("domain", "Nope"))
        .await
        .unwrap_err();
    let HubSpotError::Validation { details, .. } = &refused else {
        panic!("a 400: {refused:?}");
    };
    assert_eq!(
        details.message,
        "Unable to perform update/upsert by non-unique 0-2 property domain"
    );
}

#[tokio::test]
async fn search_matches_domains_and_pages_changes_since_a_time() {
    let sb = start(args()).await;
    let hs = client(&sb);
    let api = Api::new(&sb);
    let ids = api
        .create_companies(&[
            json!({"domain": "a.io"}),
            json!({"domain": "b.io"}),
            json!({"domain": "a.io"}),
        ])
        .await;
    let one = hs
        .search_companies(&SearchRequest::companies_with_domains(
            &["A.IO".to_owned()],
            vec!["domain".to_owned()],
        ))
        .await
        .unwrap();
    assert_eq!(
        one.total, 2,
        "two companies share a.io: the caller must decide"
    );
    assert_eq!(one.results[0].id.0, ids[0], "oldest first");
    let both = hs
        .search_companies(&SearchRequest::companies_with_domains(
            &["a.io".to_owned(), "B.io".to_owned()],
            Vec::new(),
        ))
        .await
        .unwrap();
    assert_eq!(both.total, 3);

    let since = Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    hs.update_company(&CompanyId(ids[1].clone()), &props(&[("industry", "x")]))
        .await
        .unwrap();
    let changed = hs
        .search_companies(&SearchRequest::modified_since(
            ObjectType::Companies,
            since,
            Vec::new(),
        ))
        .await
        .unwrap();
    assert_eq!(changed.results.len(), 1);
    assert_eq!(changed.results[0].id.0, ids[1]);
    assert_eq!(
        hs.metrics().requests(Operation::SearchCompanies, "2xx"),
        3,
        "counted as company searches"
    );
}

#[tokio::test]
async fn associations_are_written_read_and_removed_by_type_number() {
    let sb = start(args().with_profile(HubSpotProfile::Alternative)).await;
    let hs = client(&sb);
    let api = Api::new(&sb);
    let companies = api
        .create_companies(&[json!({"domain": "a.io"}), json!({"domain": "b.io"})])
        .await;
    let contacts = api.create_contacts(&["ada@a.io", "bob@b.io"]).await;
    let link = |contact: &str, company: &str, primary: bool| ContactCompanyLink {
        contact: HsObjectId::from(contact),
        company: CompanyId::from(company),
        primary,
    };
    let written = hs
        .link_contacts_to_companies(
            &Batch::new(vec![
                link(&contacts[0], &companies[0], true),
                link(&contacts[0], &companies[1], false),
                link(&contacts[1], "999", false),
            ])
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(written.results.len(), 2);
    assert_eq!(
        written.failed_indices().into_iter().collect::<Vec<_>>(),
        vec![2],
        "the unknown company fails alone"
    );

    let (found, missing) = hs
        .companies_of_contacts(&[
            HsObjectId::from(contacts[0].as_str()),
            HsObjectId::from("424242"),
        ])
        .await
        .unwrap();
    let ada = &found[&HsObjectId::from(contacts[0].as_str())];
    assert_eq!(ada.len(), 2);
    let primary: Vec<&CompanyId> = ada
        .iter()
        .filter(|l| l.primary)
        .map(|l| &l.company)
        .collect();
    assert_eq!(
        primary,
        [&CompanyId::from(companies[0].as_str())],
        "primary by type number although the label reads 'Contact with Primary Company'"
    );
    assert_eq!(missing, [HsObjectId::from("424242")]);

    let from_company = hs
        .read_associations(
            ObjectType::Companies,
            ObjectType::Contacts,
            &[AssociationReadInput::first(companies[0].clone())],
        )
        .await
        .unwrap();
    let types: Vec<AssociationTypeId> = from_company.results[0].to[0]
        .types
        .iter()
        .map(|t| t.type_id)
        .collect();
    assert!(types.contains(&AssociationTypeId::CompanyToContactPrimary));
    assert!(types.contains(&AssociationTypeId::CompanyToContact));

    hs.archive_association_labels(
        ObjectType::Contacts,
        ObjectType::Companies,
        &Batch::new(vec![AssociationInput {
            from: contacts[0].clone(),
            to: companies[0].clone(),
            types: vec![AssociationSpec::hubspot(
                AssociationTypeId::ContactToCompanyPrimary,
            )],
        }])
        .unwrap(),
    )
    .await
    .unwrap();
    assert!(
        sb.companies_of_contact(&contacts[0])
            .iter()
            .all(|l| !l.primary)
    );
    hs.archive_associations(
        ObjectType::Companies,
        ObjectType::Contacts,
        &Batch::new(vec![AssociationArchive {
            from: companies[1].clone(),
            to: vec![contacts[0].clone()],
        }])
        .unwrap(),
    )
    .await
    .unwrap();
    let left = sb.companies_of_contact(&contacts[0]);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, companies[0]);

    let too_many: Vec<AssociationReadInput> = (0..1001)
        .map(|i| AssociationReadInput::first(i.to_string()))
        .collect();
    assert!(matches!(
        hs.read_associations(ObjectType::Contacts, ObjectType::Companies, &too_many)
            .await,
        Err(HubSpotError::InvalidRequest(_))
    ));
}

#[tokio::test]
async fn reading_the_companies_of_a_contact_follows_the_pages() {
    let sb = start(args()).await;
    let hs = client(&sb);
    let api = Api::new(&sb);
    let contact = api.create_contacts(&["ada@a.io"]).await;
    let mut companies = Vec::new();
    for chunk in 0..6 {
        let inputs: Vec<serde_json::Value> = (0..100)
            .map(|i| json!({"domain": format!("c{chunk}-{i}.io")}))
            .collect();
        companies.extend(api.create_companies(&inputs).await);
    }
    for chunk in companies.chunks(100) {
        let links = chunk
            .iter()
            .map(|c| ContactCompanyLink {
                contact: HsObjectId::from(contact[0].as_str()),
                company: CompanyId::from(c.as_str()),
                primary: false,
            })
            .collect();
        hs.link_contacts_to_companies(&Batch::new(links).unwrap())
            .await
            .unwrap();
    }
    let (found, _) = hs
        .companies_of_contacts(&[HsObjectId::from(contact[0].as_str())])
        .await
        .unwrap();
    assert_eq!(
        found.values().next().unwrap().len(),
        600,
        "500 and then 100"
    );
    assert_eq!(hs.metrics().requests(Operation::ReadAssociations, "2xx"), 2);
}

#[tokio::test]
async fn association_batches_spend_their_own_budget_not_the_general_one() {
    let sb = start(SandboxArgs {
        associations_per_10s: 100,
        ..args()
    })
    .await;
    let hs = client_with(&sb, |c| {
        c.requests_per_10s = 1;
        c.associations_per_10s = 100;
    });
    let contact = Api::new(&sb).create_contacts(&["ada@a.io"]).await;
    hs.get_contact(&contact[0], None, &[]).await.unwrap();
    // The general budget is spent for 10 s; association reads do not wait for it.
    let started = Instant::now();
    for _ in 0..3 {
        hs.read_associations(
            ObjectType::Contacts,
            ObjectType::Companies,
            &[AssociationReadInput::first(contact[0].clone())],
        )
        .await
        .unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "association calls waited for the general budget: {:?}",
        started.elapsed()
    );
    assert_eq!(
        sb.stats().by_operation["associations.batch_read"],
        3,
        "all three reached HubSpot"
    );
}

#[tokio::test]
async fn a_value_hubspot_refuses_fails_its_record_not_the_batch() {
    use crm_sync::hubspot::values::convert;
    use crm_sync::hubspot::{FieldType, PropertyKind};
    let sb = start(args()).await;
    let hs = client(&sb);
    let renewal = PropertyCreate::typed(
        "renewal",
        "Renewal",
        PropertyKind::Date,
        FieldType::Date,
        "companyinformation",
    )
    .unwrap();
    hs.create_object_property(ObjectType::Companies, &renewal)
        .await
        .unwrap();
    let on_time = convert(PropertyKind::Date, "2027-01-31").unwrap();
    let outcome = hs
        .batch_create_companies(
            &Batch::new(vec![
                company(&[("name", "Converted"), ("renewal", &on_time)]),
                // Raw milliseconds at 10:00 UTC: HubSpot wants midnight.
                company(&[("name", "Raw"), ("renewal", "1485856800000")]),
            ])
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        outcome.results[0].record.property("renewal"),
        Some(on_time.as_str())
    );
    let Some(HubSpotError::Validation { invalid, .. }) = outcome.error_for(1) else {
        panic!("the raw value fails alone: {:?}", outcome.errors);
    };
    assert_eq!(invalid[0].name, "renewal");
    assert_eq!(sb.companies().len(), 1);
}
