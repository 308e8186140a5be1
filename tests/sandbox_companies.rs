//! The sandbox's companies (CRM v3 `/crm/v3/objects/companies`), spoken to over real HTTP on
//! 127.0.0.1: `domain` is not a unique key, upserts by it are refused, unique custom
//! properties key companies instead, merges may give the result a new id, company webhooks
//! carry who made the change, and HubSpot's "Create and associate companies with contacts"
//! setting links contacts to the company of their email domain.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod sandbox_support;

use crm_sync::sandbox::{CompanyVariants, DomainLookup, HubSpotProfile, MergeIds, SandboxArgs};
use reqwest::StatusCode;
use sandbox_support::{Api, COMPANIES, CONTACTS, Hooks, args, ids, of_type, start};
use serde_json::{Value, json};

const DOMAIN_UPSERT_REFUSED: &str =
    "Unable to perform update/upsert by non-unique 0-2 property domain";

#[tokio::test]
async fn a_company_is_created_read_updated_and_archived_with_hs_lastmodifieddate() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let (status, created) = api
        .post(
            COMPANIES,
            json!({"properties": {"name": "Acme", "domain": "acme.io", "industry": "Tools"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, read) = api.get(&format!("{COMPANIES}/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let shown: Vec<&String> = read["properties"].as_object().unwrap().keys().collect();
    assert_eq!(
        shown,
        [
            "createdate",
            "domain",
            "hs_lastmodifieddate",
            "hs_object_id",
            "name"
        ],
        "name and domain by default, and the last change as hs_lastmodifieddate"
    );

    let (status, updated) = api
        .patch(
            &format!("{COMPANIES}/{id}"),
            json!({"properties": {"industry": "Hardware"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["properties"]["industry"], "Hardware");

    assert_eq!(
        api.delete(&format!("{COMPANIES}/{id}")).await,
        StatusCode::NO_CONTENT
    );
    let (status, _) = api.get(&format!("{COMPANIES}/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, archived) = api.get(&format!("{COMPANIES}?archived=true")).await;
    assert_eq!(ids(&archived), [id]);
    assert_eq!(sb.contact_count(), 0, "companies are no contacts");
}

#[tokio::test]
async fn a_second_company_with_an_existing_domain_is_created_not_refused() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let first = api
        .create_companies(&[json!({"name": "Acme", "domain": "acme.io"})])
        .await;
    let (status, second) = api
        .post(
            COMPANIES,
            json!({"properties": {"name": "Acme again", "domain": "acme.io"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "no 409 for a domain: {second}");
    let batch = api
        .create_companies(&[
            json!({"name": "Acme three", "domain": "acme.io"}),
            json!({"name": "Acme four", "domain": "ACME.io"}),
        ])
        .await;
    assert_eq!(
        batch.len(),
        2,
        "twice the same domain in one batch is fine too"
    );
    assert_eq!(sb.companies().len(), 4);
    assert_ne!(first[0], second["id"].as_str().unwrap());
}

#[tokio::test]
async fn upserts_and_updates_by_domain_are_refused_with_hubspots_400() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    api.create_companies(&[json!({"domain": "acme.io"})]).await;
    for path in ["batch/upsert", "batch/update"] {
        let (status, err) = api
            .post(
                &format!("{COMPANIES}/{path}"),
                json!({"inputs": [{"id": "acme.io", "idProperty": "domain", "properties": {"name": "X"}}]}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {err}");
        assert_eq!(err["message"], DOMAIN_UPSERT_REFUSED, "{path}");
        assert_eq!(err["category"], "VALIDATION_ERROR");
    }
    assert_eq!(sb.companies()[0].name(), None, "nothing was applied");
}

#[tokio::test]
async fn reads_by_domain_find_the_oldest_company_or_are_refused_as_the_profile_says() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let created = api
        .create_companies(&[
            json!({"name": "Older", "domain": "acme.io"}),
            json!({"name": "Newer", "domain": "acme.io"}),
        ])
        .await;
    let (status, found) = api
        .get(&format!("{COMPANIES}/ACME.io?idProperty=domain"))
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["id"], created[0].as_str(), "the oldest of the two");

    sb.set_company_variants(HubSpotProfile::Alternative.company_variants());
    assert_eq!(sb.company_variants().domain_lookup, DomainLookup::Refused);
    let (status, err) = api
        .get(&format!("{COMPANIES}/acme.io?idProperty=domain"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["message"], DOMAIN_UPSERT_REFUSED);
    let (status, _) = api
        .post(
            &format!("{COMPANIES}/batch/read"),
            json!({"inputs": [{"id": "acme.io"}], "idProperty": "domain", "properties": []}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_unique_custom_property_keys_companies_for_upsert_and_batch_read() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let (status, prop) = api
        .post(
            "/crm/v3/properties/companies",
            json!({"name": "crm_sync_key", "label": "crm-sync key", "type": "string",
                   "fieldType": "text", "groupName": "companyinformation", "hasUniqueValue": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{prop}");
    let upsert = |name: &str| json!({"inputs": [{"id": "k-1", "idProperty": "crm_sync_key", "properties": {"name": name, "domain": "acme.io"}}]});
    let (status, first) = api
        .post(&format!("{COMPANIES}/batch/upsert"), upsert("Acme"))
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["results"][0]["new"], true);
    let (_, second) = api
        .post(&format!("{COMPANIES}/batch/upsert"), upsert("Acme Inc"))
        .await;
    assert_eq!(second["results"][0]["new"], false);
    assert_eq!(second["results"][0]["id"], first["results"][0]["id"]);

    let (status, read) = api
        .post(
            &format!("{COMPANIES}/batch/read"),
            json!({"inputs": [{"id": "k-1"}, {"id": "k-2"}], "idProperty": "crm_sync_key", "properties": ["name", "crm_sync_key"]}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::MULTI_STATUS,
        "k-2 does not exist: {read}"
    );
    assert_eq!(read["results"][0]["properties"]["name"], "Acme Inc");
    assert_eq!(read["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert!(
        read["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("COMPANY objects")
    );

    let (status, clash) = api
        .post(
            COMPANIES,
            json!({"properties": {"name": "Other", "crm_sync_key": "k-1"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{clash}");
    assert!(
        clash["message"]
            .as_str()
            .unwrap()
            .starts_with("Company already exists.")
    );
    assert_eq!(sb.companies().len(), 1);
}

#[tokio::test]
async fn search_finds_companies_by_domain_and_by_last_change() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let created = api
        .create_companies(&[
            json!({"name": "A", "domain": "a.io"}),
            json!({"name": "B", "domain": "b.io"}),
            json!({"name": "A again", "domain": "a.io"}),
        ])
        .await;
    let search = |filters: Value| {
        json!({"filterGroups": [{"filters": filters}], "properties": ["domain"], "limit": 10,
               "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]})
    };
    let (status, eq) = api
        .post(
            &format!("{COMPANIES}/search"),
            search(json!([{"propertyName": "domain", "operator": "EQ", "value": "A.io"}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{eq}");
    assert_eq!(
        eq["total"], 2,
        "EQ is case-insensitive and finds every company of the domain"
    );
    let (_, within) = api
        .post(
            &format!("{COMPANIES}/search"),
            search(
                json!([{"propertyName": "domain", "operator": "IN", "values": ["a.io", "b.io"]}]),
            ),
        )
        .await;
    assert_eq!(within["total"], 3);

    let since = sb
        .company(&created[1])
        .unwrap()
        .updated_at
        .timestamp_millis();
    // The change lands in a later millisecond than the creations.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    api.patch(
        &format!("{COMPANIES}/{}", created[0]),
        json!({"properties": {"industry": "Later"}}),
    )
    .await;
    let (_, changed) = api
        .post(
            &format!("{COMPANIES}/search"),
            search(json!([{"propertyName": "hs_lastmodifieddate", "operator": "GT", "value": since.to_string()}])),
        )
        .await;
    assert_eq!(ids(&changed), [created[0].clone()], "{changed}");
    assert!(changed["results"][0]["properties"]["hs_lastmodifieddate"].is_string());
}

#[tokio::test]
async fn a_merge_keeps_the_primarys_id_or_gives_the_result_a_new_one() {
    for (variant, new_id) in [(MergeIds::KeepPrimary, false), (MergeIds::NewId, true)] {
        let sb = start(SandboxArgs {
            company_variants: CompanyVariants {
                merge_ids: variant,
                ..CompanyVariants::default()
            },
            ..args()
        })
        .await;
        let api = Api::new(&sb);
        let ids = api
            .create_companies(&[
                json!({"name": "Primary", "domain": "p.io"}),
                json!({"name": "Merged", "domain": "m.io", "industry": "Tools"}),
            ])
            .await;
        let (status, merged) = api
            .post(
                &format!("{COMPANIES}/merge"),
                json!({"primaryObjectId": ids[0], "objectIdToMerge": ids[1]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{merged}");
        let result = merged["id"].as_str().unwrap().to_owned();
        assert_eq!(result != ids[0], new_id, "{variant:?}");
        let props = &merged["properties"];
        assert_eq!(props["domain"], "p.io", "the primary keeps its domain");
        assert_eq!(props["industry"], "Tools", "values move over");
        assert!(
            props["hs_merged_object_ids"]
                .as_str()
                .unwrap()
                .contains(&ids[1])
        );
        for old in &ids {
            let (status, read) = api.get(&format!("{COMPANIES}/{old}")).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(read["id"], result.as_str(), "{variant:?}: {old} resolves");
        }
        assert_eq!(sb.companies().len(), 1);
    }
}

#[tokio::test]
async fn company_webhooks_say_who_made_each_change() {
    let mut hooks = Hooks::start().await;
    let sb = start(SandboxArgs {
        webhook_url: Some(hooks.url.clone()),
        company_variants: CompanyVariants {
            merge_ids: MergeIds::NewId,
            ..CompanyVariants::default()
        },
        ..args()
    })
    .await;
    let api = Api::new(&sb);
    let ids = api
        .create_companies(&[json!({"name": "A"}), json!({"name": "B"})])
        .await;
    Api::as_person(&sb, "76023669")
        .patch(
            &format!("{COMPANIES}/{}", ids[0]),
            json!({"properties": {"industry": "Tools"}}),
        )
        .await;
    let (_, merged) = api
        .post(
            &format!("{COMPANIES}/merge"),
            json!({"primaryObjectId": ids[0], "objectIdToMerge": ids[1]}),
        )
        .await;
    let survivor = merged["id"].as_str().unwrap().to_owned();
    api.delete(&format!("{COMPANIES}/{survivor}")).await;
    sb.restore_company(&survivor, "42").unwrap();

    let events = hooks
        .until(|e| !of_type(e, "company.restore").is_empty())
        .await;
    let app = sb_app_id(events);
    let creations = of_type(events, "company.creation");
    assert!(creations.len() >= 2);
    for e in &creations {
        assert_eq!(e["changeSource"], "INTEGRATION");
        assert_eq!(
            e["sourceId"],
            app.to_string(),
            "the app's own writes name the app"
        );
    }
    let by_person = of_type(events, "company.propertyChange")
        .into_iter()
        .find(|e| e["propertyName"] == "industry")
        .expect("industry change");
    assert_eq!(by_person["changeSource"], "CRM_UI");
    assert_eq!(by_person["sourceId"], "userId:76023669");
    let merge = of_type(events, "company.merge")[0];
    assert_eq!(merge["primaryObjectId"].to_string(), ids[0]);
    assert_eq!(merge["mergedObjectIds"][0].to_string(), ids[1]);
    assert_eq!(merge["newObjectId"].to_string(), survivor, "the new id");
    assert_eq!(
        of_type(events, "company.deletion")[0]["objectId"].to_string(),
        survivor
    );
    let restore = of_type(events, "company.restore")[0];
    assert_eq!(restore["objectId"].to_string(), survivor);
    assert_eq!(restore["sourceId"], "userId:42");
    assert!(sb.company(&survivor).is_some(), "restored");
}

fn sb_app_id(events: &[Value]) -> i64 {
    events[0]["appId"].as_i64().expect("appId")
}

#[tokio::test]
async fn the_auto_association_setting_links_contacts_to_their_email_domains_company() {
    let mut hooks = Hooks::start().await;
    let sb = start(SandboxArgs {
        webhook_url: Some(hooks.url.clone()),
        auto_associate_companies: true,
        ..args()
    })
    .await;
    let api = Api::new(&sb);
    let existing = api
        .create_companies(&[json!({"name": "Globex", "domain": "globex.com"})])
        .await;
    let contacts = api
        .create_contacts(&[
            "ada@acme.io",
            "bob@acme.io",
            "cy@globex.com",
            "dee@gmail.com",
        ])
        .await;

    let acme = sb
        .companies()
        .into_iter()
        .find(|c| c.domain() == Some("acme.io"))
        .expect("HubSpot created a company for acme.io");
    assert_eq!(acme.name(), Some("Acme"));
    assert_eq!(
        sb.companies().len(),
        2,
        "one new company for two acme.io contacts"
    );
    for contact in &contacts[..2] {
        let linked = sb.companies_of_contact(contact);
        assert_eq!(linked.len(), 1);
        assert_eq!(linked[0].id, acme.id);
        assert!(linked[0].primary, "the domain's company is the primary one");
    }
    assert_eq!(sb.companies_of_contact(&contacts[2])[0].id, existing[0]);
    assert!(
        sb.companies_of_contact(&contacts[3]).is_empty(),
        "free mail is left alone"
    );

    // A contact with a company keeps it when its email moves to another domain.
    api.patch(
        &format!("{CONTACTS}/{}", contacts[2]),
        json!({"properties": {"email": "cy@acme.io"}}),
    )
    .await;
    let kept = sb.companies_of_contact(&contacts[2]);
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0].id, existing[0],
        "never replaces an existing association"
    );

    let events = hooks
        .until(|e| of_type(e, "contact.associationChange").len() >= 6)
        .await;
    let automatic = of_type(events, "company.creation")
        .into_iter()
        .find(|e| e["objectId"].as_u64() == acme.id.parse().ok())
        .expect("the created company's event");
    assert_ne!(
        automatic["changeSource"], "INTEGRATION",
        "HubSpot's own automation is no echo of the app's writes"
    );
    assert!(automatic.get("sourceId").is_none());
}

#[tokio::test]
async fn without_the_setting_contacts_stay_without_companies() {
    let sb = start(args()).await;
    let contacts = Api::new(&sb).create_contacts(&["ada@acme.io"]).await;
    assert!(sb.companies().is_empty());
    assert!(sb.companies_of_contact(&contacts[0]).is_empty());
    sb.set_auto_associate_companies(true);
    Api::new(&sb).create_contacts(&["bob@acme.io"]).await;
    assert_eq!(sb.companies().len(), 1, "switched on at run time");
}

#[tokio::test]
async fn company_properties_and_groups_have_their_own_catalog() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let (status, group) = api
        .post(
            "/crm/v3/properties/companies/groups",
            json!({"name": "crm_sync", "label": "crm-sync"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let (status, _) = api
        .post(
            "/crm/v3/properties/companies/groups",
            json!({"name": "crm_sync", "label": "again"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, groups) = api.get("/crm/v3/properties/companies/groups").await;
    let names: Vec<&str> = groups["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["companyinformation", "crm_sync"]);
    let (status, _) = api.get("/crm/v3/properties/contacts/groups/crm_sync").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "contacts have their own groups"
    );

    let (status, _) = api.get("/crm/v3/properties/companies/domain").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.get("/crm/v3/properties/contacts/domain").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, err) = api
        .post(COMPANIES, json!({"properties": {"email": "a@acme.io"}}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "companies have no email: {err}"
    );
}

#[tokio::test]
async fn companies_and_associations_survive_a_restart_with_a_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("sandbox.json");
    let with_file = || SandboxArgs {
        state_file: Some(state_file.clone()),
        ..args()
    };
    let sb = start(with_file()).await;
    let api = Api::new(&sb);
    let company = api.create_companies(&[json!({"domain": "acme.io"})]).await;
    let contact = api.create_contacts(&["ada@acme.io"]).await;
    let (status, _) = api
        .put(
            &format!(
                "/crm/v4/objects/contacts/{}/associations/companies/{}",
                contact[0], company[0]
            ),
            Some(json!([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}])),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    sb.shutdown().await.unwrap();

    let again = start(with_file()).await;
    assert!(again.resumed());
    assert_eq!(
        again.company(&company[0]).unwrap().domain(),
        Some("acme.io")
    );
    let linked = again.companies_of_contact(&contact[0]);
    assert_eq!(linked.len(), 1);
    assert!(linked[0].primary);
    let next = Api::new(&again)
        .create_companies(&[json!({"domain": "next.io"})])
        .await;
    assert!(next[0] > company[0], "company ids go on after the old ones");
}

#[test]
fn the_sandbox_command_takes_the_company_and_association_flags() {
    use clap::Parser;
    use crm_sync::cli::{Cli, Command};
    let argv = [
        "crm-sync",
        "sandbox",
        "--auto-associate-companies",
        "--associations-per-10s",
        "150",
        "--domain-lookup",
        "refused",
        "--merge-ids",
        "new-id",
        "--primary-label",
        "renamed",
    ];
    let Command::Sandbox { args } = Cli::try_parse_from(argv).expect("parses").command else {
        panic!("not the sandbox command");
    };
    assert!(args.auto_associate_companies);
    assert_eq!(args.associations_per_10s, 150);
    assert_eq!(args.company_variants, CompanyVariants::alternative());
    let Command::Sandbox { args } = Cli::try_parse_from(["crm-sync", "sandbox"])
        .expect("parses")
        .command
    else {
        panic!("not the sandbox command");
    };
    assert!(!args.auto_associate_companies, "off by default");
    assert_eq!(args.company_variants, CompanyVariants::default());
}

#[tokio::test]
async fn admin_endpoints_insert_and_dump_companies_and_switch_their_settings() {
    let sb = start(args()).await;
    let http = reqwest::Client::new();
    let admin = |p: &str| format!("{}/_sandbox/{p}", sb.base_url());
    let inserted: Value = http
        .post(admin("companies"))
        .json(
            &json!({"companies": [{"properties": {"name": "Acme", "domain": "acme.io"}},
                                    {"properties": {"name": "Acme too", "domain": "acme.io"}}]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(inserted["ids"].as_array().unwrap().len(), 2, "{inserted}");

    let config: Value = http
        .put(admin("config/companies"))
        .json(&json!({"auto_associate_companies": true, "merge_ids": "new-id"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        config,
        json!({"domain_lookup": "oldest", "merge_ids": "new-id", "primary_label": "primary",
               "auto_associate_companies": true})
    );
    assert_eq!(sb.company_variants().merge_ids, MergeIds::NewId);
    let refused = http
        .put(admin("config/companies"))
        .json(&json!({"colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);

    let contact = Api::new(&sb).create_contacts(&["ada@acme.io"]).await;
    let pairs: Value = http
        .get(admin("associations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        pairs["associations"],
        json!([{"contact": contact[0], "company": inserted["ids"][0], "primary": true}]),
        "linked to the oldest company of its domain"
    );
    let dump: Value = http
        .get(admin("companies"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dump["companies"].as_array().unwrap().len(), 2);
    assert_eq!(dump["archived"], json!([]));
}

#[tokio::test]
async fn a_state_file_from_before_companies_resumes_with_none() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("sandbox.json");
    let with_file = || SandboxArgs {
        state_file: Some(state_file.clone()),
        ..args()
    };
    let sb = start(with_file()).await;
    let contact = Api::new(&sb).create_contacts(&["ada@acme.io"]).await;
    sb.shutdown().await.unwrap();
    // Take the file back to what a sandbox without companies wrote.
    let mut saved: Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let top = saved.as_object_mut().unwrap();
    for key in ["companies", "associations", "company_variants"] {
        assert!(top.remove(key).is_some(), "{key} is saved now");
    }
    let store = top["store"].as_object_mut().unwrap();
    store.remove("kind");
    store["catalog"].as_object_mut().unwrap().remove("groups");
    std::fs::write(&state_file, serde_json::to_vec(&saved).unwrap()).unwrap();

    let again = start(with_file()).await;
    assert!(again.resumed());
    assert!(again.contact(&contact[0]).is_some());
    assert!(again.companies().is_empty());
    let api = Api::new(&again);
    let (status, group) = api
        .get("/crm/v3/properties/contacts/groups/contactinformation")
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the built-in group is back: {group}"
    );
    let company = api.create_companies(&[json!({"domain": "acme.io"})]).await;
    assert_eq!(
        again.company(&company[0]).unwrap().domain(),
        Some("acme.io")
    );
}
