//! The sandbox's v4 associations between contacts and companies, over real HTTP on
//! 127.0.0.1: type ids 279/1 (contact→company) and 280/2 (company→contact) matched by number,
//! writes with types replacing a pair's label list, one primary company per contact, both
//! sides always agreeing, batch read limits and paging, archived records dropping out of
//! reads, association webhooks on each side, and the associations' own rate budget.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod sandbox_support;

use crm_sync::sandbox::{HubSpotProfile, SandboxArgs, SandboxHandle};
use reqwest::StatusCode;
use sandbox_support::{
    Api, COMPANIES, COMPANY_TO_CONTACT, CONTACT_TO_COMPANY, CONTACTS, Hooks, args, of_type, start,
};
use serde_json::{Value, json};

fn spec(type_id: i64) -> Value {
    json!({"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id})
}

fn typed(from: &str, to: &str, types: &[i64]) -> Value {
    json!({"from": {"id": from}, "to": {"id": to}, "types": types.iter().map(|t| spec(*t)).collect::<Vec<_>>()})
}

/// `(to id, sorted type ids)` of each record a batch read answers for its first input.
fn read_types(body: &Value) -> Vec<(String, Vec<i64>)> {
    body["results"][0]["to"]
        .as_array()
        .expect("to")
        .iter()
        .map(|t| {
            let mut types: Vec<i64> = t["associationTypes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["typeId"].as_i64().unwrap())
                .collect();
            types.sort_unstable();
            (t["toObjectId"].as_str().unwrap().to_owned(), types)
        })
        .collect()
}

async fn read(api: &Api, path: &str, id: &str) -> Vec<(String, Vec<i64>)> {
    let (status, body) = api
        .post(
            &format!("{path}/batch/read"),
            json!({"inputs": [{"id": id}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    read_types(&body)
}

/// A sandbox with two companies and two contacts.
async fn world(args: SandboxArgs) -> (SandboxHandle, Vec<String>, Vec<String>) {
    let sb = start(args).await;
    let api = Api::new(&sb);
    let companies = api
        .create_companies(&[json!({"domain": "a.io"}), json!({"domain": "b.io"})])
        .await;
    let contacts = api.create_contacts(&["ada@a.io", "bob@b.io"]).await;
    (sb, companies, contacts)
}

#[tokio::test]
async fn a_default_association_reads_as_279_from_the_contact_and_280_from_the_company() {
    let (sb, companies, contacts) = world(args()).await;
    let api = Api::new(&sb);
    let (status, body) = api
        .post(
            &format!("{CONTACT_TO_COMPANY}/batch/associate/default"),
            json!({"inputs": [{"from": {"id": contacts[0]}, "to": {"id": companies[0]}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["results"][0]["associationSpec"]["associationTypeId"],
        279
    );
    assert_eq!(
        read(&api, CONTACT_TO_COMPANY, &contacts[0]).await,
        [(companies[0].clone(), vec![279])]
    );
    assert_eq!(
        read(&api, COMPANY_TO_CONTACT, &companies[0]).await,
        [(contacts[0].clone(), vec![280])],
        "the same pair from the other side"
    );
}

#[tokio::test]
async fn types_replace_the_label_list_and_a_contact_has_one_primary_company() {
    let (sb, companies, contacts) = world(args()).await;
    let api = Api::new(&sb);
    let create = |inputs: Vec<Value>| {
        let api = &api;
        async move {
            let (status, body) = api
                .post(
                    &format!("{CONTACT_TO_COMPANY}/batch/create"),
                    json!({ "inputs": inputs }),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            body
        }
    };
    let body = create(vec![typed(&contacts[0], &companies[0], &[1])]).await;
    assert_eq!(body["results"][0]["fromObjectTypeId"], "0-1");
    assert_eq!(body["results"][0]["toObjectTypeId"], "0-2");
    assert_eq!(body["results"][0]["labels"], json!(["Primary"]));
    assert_eq!(
        read(&api, CONTACT_TO_COMPANY, &contacts[0]).await,
        [(companies[0].clone(), vec![1, 279])],
        "a primary association brings the unlabelled one"
    );
    assert_eq!(
        read(&api, COMPANY_TO_CONTACT, &companies[0]).await,
        [(contacts[0].clone(), vec![2, 280])]
    );

    create(vec![typed(&contacts[0], &companies[1], &[1, 279])]).await;
    assert_eq!(
        read(&api, CONTACT_TO_COMPANY, &contacts[0]).await,
        [
            (companies[0].clone(), vec![279]),
            (companies[1].clone(), vec![1, 279])
        ],
        "the new primary demotes the old one, which stays associated"
    );

    create(vec![typed(&contacts[0], &companies[1], &[279])]).await;
    assert_eq!(
        read(&api, CONTACT_TO_COMPANY, &contacts[0]).await,
        [
            (companies[0].clone(), vec![279]),
            (companies[1].clone(), vec![279])
        ],
        "writing only 279 strips the primary label"
    );

    // From the company's side, type 2 makes it the contact's primary company.
    let (status, body) = api
        .post(
            &format!("{COMPANY_TO_CONTACT}/batch/create"),
            json!({"inputs": [typed(&companies[0], &contacts[0], &[2])]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let primary: Vec<_> = sb
        .companies_of_contact(&contacts[0])
        .into_iter()
        .filter(|l| l.primary)
        .collect();
    assert_eq!(primary.len(), 1);
    assert_eq!(primary[0].id, companies[0]);

    let (status, _) = api
        .post(
            &format!("{CONTACT_TO_COMPANY}/batch/create"),
            json!({"inputs": [typed(&contacts[1], &companies[0], &[])]}),
        )
        .await;
    assert!(status.is_success());
    assert!(
        sb.companies_of_contact(&contacts[1]).is_empty(),
        "no types create nothing"
    );
}

#[tokio::test]
async fn unknown_records_and_wrong_type_ids_fail_their_input_alone() {
    let (sb, companies, contacts) = world(args()).await;
    let api = Api::new(&sb);
    let (status, body) = api
        .post(
            &format!("{CONTACT_TO_COMPANY}/batch/create"),
            json!({"inputs": [
                typed(&contacts[0], &companies[0], &[279]),
                typed(&contacts[0], "999", &[279]),
                typed(&contacts[1], &companies[1], &[280]),
                {"from": {"id": contacts[1]}, "to": {"id": companies[1]},
                 "types": [{"associationCategory": "USER_DEFINED", "associationTypeId": 1}]},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 1);
    assert_eq!(body["numErrors"], 3);
    let categories: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["category"].as_str().unwrap())
        .collect();
    assert_eq!(
        categories,
        ["OBJECT_NOT_FOUND", "VALIDATION_ERROR", "VALIDATION_ERROR"],
        "280 is the company→contact type; a USER_DEFINED 1 is no HubSpot type"
    );
    assert!(sb.companies_of_contact(&contacts[1]).is_empty());

    let (status, err) = api
        .post(
            "/crm/v4/associations/contacts/contacts/batch/read",
            json!({"inputs": [{"id": contacts[0]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
}

#[tokio::test]
async fn batch_read_takes_at_most_1000_inputs_reports_unknown_ids_and_pages_by_500() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let company = api.create_companies(&[json!({"domain": "big.io"})]).await;
    let mut contacts = Vec::new();
    for chunk in 0..6 {
        let emails: Vec<String> = (0..100).map(|i| format!("p{chunk}-{i}@big.io")).collect();
        let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
        contacts.extend(api.create_contacts(&refs).await);
    }
    let inputs: Vec<Value> = contacts
        .iter()
        .map(|c| json!({"from": {"id": c}, "to": {"id": company[0]}}))
        .collect();
    let (status, _) = api
        .post(
            &format!("{CONTACT_TO_COMPANY}/batch/associate/default"),
            json!({ "inputs": inputs }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, first) = api
        .post(
            &format!("{COMPANY_TO_CONTACT}/batch/read"),
            json!({"inputs": [{"id": company[0]}, {"id": "424242"}]}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::MULTI_STATUS,
        "an unknown id is reported"
    );
    assert_eq!(first["errors"][0]["context"]["ids"], json!(["424242"]));
    assert_eq!(first["results"][0]["to"].as_array().unwrap().len(), 500);
    let after = first["results"][0]["paging"]["next"]["after"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, second) = api
        .post(
            &format!("{COMPANY_TO_CONTACT}/batch/read"),
            json!({"inputs": [{"id": company[0], "after": after}]}),
        )
        .await;
    assert_eq!(second["results"][0]["to"].as_array().unwrap().len(), 100);
    assert!(
        second["results"][0].get("paging").is_none(),
        "the last page"
    );

    let too_many: Vec<Value> = (0..1001).map(|i| json!({"id": i.to_string()})).collect();
    let (status, err) = api
        .post(
            &format!("{CONTACT_TO_COMPANY}/batch/read"),
            json!({ "inputs": too_many }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
}

#[tokio::test]
async fn archives_remove_pairs_or_only_their_labels() {
    let (sb, companies, contacts) = world(args()).await;
    let api = Api::new(&sb);
    api.post(
        &format!("{CONTACT_TO_COMPANY}/batch/create"),
        json!({"inputs": [typed(&contacts[0], &companies[0], &[1]), typed(&contacts[0], &companies[1], &[279])]}),
    )
    .await;
    let (status, _) = api
        .post(
            &format!("{CONTACT_TO_COMPANY}/batch/labels/archive"),
            json!({"inputs": [typed(&contacts[0], &companies[0], &[1])]}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        read(&api, CONTACT_TO_COMPANY, &contacts[0]).await,
        [
            (companies[0].clone(), vec![279]),
            (companies[1].clone(), vec![279])
        ],
        "removing the primary label keeps the pair"
    );
    api.post(
        &format!("{CONTACT_TO_COMPANY}/batch/labels/archive"),
        json!({"inputs": [typed(&contacts[0], &companies[1], &[279])]}),
    )
    .await;
    let (status, _) = api
        .post(
            &format!("{COMPANY_TO_CONTACT}/batch/archive"),
            json!({"inputs": [{"from": {"id": companies[0]}, "to": [{"id": contacts[0]}, {"id": "999"}]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        sb.companies_of_contact(&contacts[0]).is_empty(),
        "removing 279 removes the pair; archive works from either side"
    );
}

#[tokio::test]
async fn single_record_calls_put_read_and_delete_one_pair() {
    let (sb, companies, contacts) = world(args()).await;
    let api = Api::new(&sb);
    let pair = format!(
        "/crm/v4/objects/contacts/{}/associations/companies/{}",
        contacts[0], companies[0]
    );
    let (status, body) = api.put(&pair, Some(json!([spec(1)]))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["labels"], json!(["Primary"]));
    let (status, body) = api
        .put(
            &format!(
                "/crm/v4/objects/company/{}/associations/default/contact/{}",
                companies[1], contacts[0]
            ),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["results"][0]["associationSpec"]["associationTypeId"],
        280
    );

    let (status, listed) = api
        .get(&format!(
            "/crm/v4/objects/0-1/{}/associations/0-2?limit=1",
            contacts[0]
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["results"][0]["toObjectId"], companies[0].as_str());
    let after = listed["paging"]["next"]["after"].as_str().expect("more");
    let (_, rest) = api
        .get(&format!(
            "/crm/v4/objects/contacts/{}/associations/companies?after={after}",
            contacts[0]
        ))
        .await;
    assert_eq!(rest["results"][0]["toObjectId"], companies[1].as_str());

    assert_eq!(api.delete(&pair).await, StatusCode::NO_CONTENT);
    let left = sb.companies_of_contact(&contacts[0]);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, companies[1]);
    let (status, _) = api
        .put(
            &format!(
                "/crm/v4/objects/contacts/{}/associations/companies/999",
                contacts[0]
            ),
            Some(json!([spec(279)])),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn archived_records_drop_out_of_reads_and_merged_contacts_hand_over_their_companies() {
    let (sb, companies, contacts) = world(args()).await;
    let api = Api::new(&sb);
    api.post(
        &format!("{CONTACT_TO_COMPANY}/batch/create"),
        json!({"inputs": [typed(&contacts[0], &companies[0], &[1]), typed(&contacts[1], &companies[1], &[1])]}),
    )
    .await;
    api.delete(&format!("{COMPANIES}/{}", companies[0])).await;
    assert!(
        read(&api, CONTACT_TO_COMPANY, &contacts[0])
            .await
            .is_empty(),
        "an archived company is no longer associated in reads"
    );
    let (status, body) = api
        .post(
            &format!("{COMPANY_TO_CONTACT}/batch/read"),
            json!({"inputs": [{"id": companies[0]}]}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::MULTI_STATUS,
        "an archived record is not found: {body}"
    );
    sb.restore_company(&companies[0], "1").unwrap();
    assert_eq!(
        sb.companies_of_contact(&contacts[0]).len(),
        1,
        "back with its company"
    );

    let (status, _) = api
        .post(
            &format!("{CONTACTS}/merge"),
            json!({"primaryObjectId": contacts[0], "objectIdToMerge": contacts[1]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let linked = sb.companies_of_contact(&contacts[0]);
    assert_eq!(linked.len(), 2, "the survivor has both companies");
    assert!(
        linked
            .iter()
            .find(|l| l.id == companies[0])
            .unwrap()
            .primary
    );
    assert!(
        !linked
            .iter()
            .find(|l| l.id == companies[1])
            .unwrap()
            .primary,
        "the survivor keeps its own primary company"
    );
    assert_eq!(sb.contacts_of_company(&companies[1])[0].id, contacts[0]);
}

#[tokio::test]
async fn association_changes_fire_one_webhook_per_side_and_type() {
    let mut hooks = Hooks::start().await;
    let (sb, companies, contacts) = world(SandboxArgs {
        webhook_url: Some(hooks.url.clone()),
        ..args()
    })
    .await;
    let api = Api::new(&sb);
    api.put(
        &format!(
            "/crm/v4/objects/contacts/{}/associations/companies/{}",
            contacts[0], companies[0]
        ),
        Some(json!([spec(1)])),
    )
    .await;
    api.delete(&format!(
        "/crm/v4/objects/companies/{}/associations/contacts/{}",
        companies[0], contacts[0]
    ))
    .await;
    let events = hooks
        .until(|e| of_type(e, "company.associationChange").len() >= 4)
        .await;
    let app = events[0]["appId"].as_i64().unwrap().to_string();
    let on_contact = of_type(events, "contact.associationChange");
    let on_company = of_type(events, "company.associationChange");
    assert_eq!(
        on_contact.len(),
        4,
        "added and removed, unlabelled and primary"
    );
    for e in &on_contact {
        assert_eq!(e["associationType"], "CONTACT_TO_COMPANY");
        assert_eq!(e["fromObjectId"].to_string(), contacts[0]);
        assert_eq!(e["toObjectId"].to_string(), companies[0]);
        assert_eq!(e["changeSource"], "INTEGRATION");
        assert_eq!(e["sourceId"], app.as_str());
    }
    for e in &on_company {
        assert_eq!(e["associationType"], "COMPANY_TO_CONTACT");
        assert_eq!(e["objectId"].to_string(), companies[0]);
    }
    let flags = |events: &[&Value]| -> Vec<(bool, bool)> {
        let mut f: Vec<(bool, bool)> = events
            .iter()
            .map(|e| {
                (
                    e["associationRemoved"].as_bool().unwrap(),
                    e["isPrimaryAssociation"].as_bool().unwrap(),
                )
            })
            .collect();
        f.sort_unstable();
        f
    };
    let expected = vec![(false, false), (false, true), (true, false), (true, true)];
    assert_eq!(flags(&on_contact), expected);
    assert_eq!(flags(&on_company), expected);
}

#[tokio::test]
async fn associations_spend_a_ten_second_budget_of_their_own() {
    let sb = start(SandboxArgs {
        requests_per_10s: 3,
        associations_per_10s: 2,
        ..args()
    })
    .await;
    let api = Api::new(&sb);
    let company = api.create_companies(&[json!({"domain": "a.io"})]).await;
    let contact = api.create_contacts(&["ada@a.io"]).await;
    let (status, _) = api.get(&format!("{COMPANIES}/{}", company[0])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.get(&format!("{COMPANIES}/{}", company[0])).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the general budget is spent"
    );

    let path = format!("{CONTACT_TO_COMPANY}/batch/read");
    let read = || {
        api.send(
            reqwest::Method::POST,
            &path,
            Some(json!({"inputs": [{"id": contact[0]}]})),
        )
    };
    let first = read().await;
    assert_eq!(
        first.status,
        StatusCode::OK,
        "associations have their own budget"
    );
    assert_eq!(first.headers["x-hubspot-ratelimit-max"], "2");
    assert_eq!(first.headers["x-hubspot-ratelimit-remaining"], "1");
    assert_eq!(read().await.status, StatusCode::OK);
    let third = read().await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.body["policyName"], "TEN_SECONDLY_ROLLING");
}

#[tokio::test]
async fn the_alternative_profile_renames_the_primary_label_but_keeps_the_numbers() {
    let (sb, companies, contacts) = world(args().with_profile(HubSpotProfile::Alternative)).await;
    let api = Api::new(&sb);
    let (_, body) = api
        .post(
            &format!("{CONTACT_TO_COMPANY}/batch/create"),
            json!({"inputs": [typed(&contacts[0], &companies[0], &[1])]}),
        )
        .await;
    assert_eq!(
        body["results"][0]["labels"],
        json!(["Contact with Primary Company"])
    );
    let (_, read) = api
        .post(
            &format!("{CONTACT_TO_COMPANY}/batch/read"),
            json!({"inputs": [{"id": contacts[0]}]}),
        )
        .await;
    let types = &read["results"][0]["to"][0]["associationTypes"];
    let unlabelled = types
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["typeId"] == 279)
        .expect("279");
    assert!(
        unlabelled["label"].is_null() && unlabelled.get("label").is_some(),
        "the unlabelled type's label is null under --empty-values null: {types}"
    );
}

#[tokio::test]
async fn a_create_may_carry_its_associations() {
    let (sb, companies, contacts) = world(args()).await;
    let api = Api::new(&sb);
    let (status, body) = api
        .post(
            COMPANIES,
            json!({"properties": {"name": "With people"},
                   "associations": [{"to": {"id": contacts[0]}, "types": [spec(280)]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let company = body["id"].as_str().unwrap().to_owned();
    assert_eq!(sb.contacts_of_company(&company)[0].id, contacts[0]);

    let (status, body) = api
        .post(
            &format!("{CONTACTS}/batch/create"),
            json!({"inputs": [
                {"properties": {"email": "cy@a.io"},
                 "associations": [{"to": {"id": companies[0]}, "types": [spec(279), spec(1)]}]},
                {"properties": {"email": "dee@a.io"}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let cy = body["results"][0]["id"].as_str().unwrap();
    let linked = sb.companies_of_contact(cy);
    assert_eq!(linked.len(), 1);
    assert!(linked[0].primary);

    let before = sb.contact_count();
    let (status, err) = api
        .post(
            &format!("{CONTACTS}/batch/create"),
            json!({"inputs": [
                {"properties": {"email": "eve@a.io"}},
                {"properties": {"email": "fay@a.io"},
                 "associations": [{"to": {"id": "424242"}, "types": [spec(279)]}]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(
        sb.contact_count(),
        before,
        "a bad association refuses the whole batch"
    );
}

#[tokio::test]
async fn a_contact_id_sent_as_a_company_id_names_nothing() {
    let (sb, companies, contacts) = world(args()).await;
    let api = Api::new(&sb);
    assert!(
        contacts.iter().all(|c| !companies.contains(c)),
        "ids of the two types never coincide"
    );
    let (status, body) = api
        .post(
            &format!("{CONTACT_TO_COMPANY}/batch/create"),
            json!({"inputs": [typed(&companies[0], &contacts[0], &[279])]}),
        )
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "swapped ids fail: {body}");
    assert!(sb.companies_of_contact(&contacts[0]).is_empty());
}

#[tokio::test]
async fn a_persons_batch_writes_fire_association_webhooks_on_each_side_as_the_person() {
    let mut hooks = Hooks::start().await;
    let (sb, companies, contacts) = world(SandboxArgs {
        webhook_url: Some(hooks.url.clone()),
        ..args()
    })
    .await;
    let person = Api::as_person(&sb, "42");
    let (status, body) = person
        .post(
            &format!("{CONTACT_TO_COMPANY}/batch/create"),
            json!({"inputs": [typed(&contacts[1], &companies[0], &[279, 1])]}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (status, body) = person
        .post(
            &format!("{CONTACT_TO_COMPANY}/batch/archive"),
            json!({"inputs": [{"from": {"id": contacts[1]}, "to": [{"id": companies[0]}]}]}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let events = hooks
        .until(|e| of_type(e, "company.associationChange").len() >= 4)
        .await;
    let on_contact = of_type(events, "contact.associationChange");
    assert_eq!(
        on_contact.len(),
        4,
        "added and removed, unlabelled and primary"
    );
    for e in on_contact {
        assert_eq!(
            e["objectId"].to_string(),
            contacts[1],
            "the contact's own side"
        );
        assert_eq!(e["associationType"], "CONTACT_TO_COMPANY");
        assert_eq!(e["fromObjectId"].to_string(), contacts[1]);
        assert_eq!(e["toObjectId"].to_string(), companies[0]);
        assert_eq!(
            e["changeSource"], "CRM_UI",
            "a person's change, not the app's"
        );
        assert_eq!(e["sourceId"], "userId:42");
    }
    for e in of_type(events, "company.associationChange") {
        assert_eq!(e["associationType"], "COMPANY_TO_CONTACT");
        assert_eq!(e["fromObjectId"].to_string(), companies[0]);
        assert_eq!(e["changeSource"], "CRM_UI");
    }
}
