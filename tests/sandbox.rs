//! The HubSpot sandbox, spoken to over real HTTP on 127.0.0.1 the way a HubSpot client would.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crm_sync::sandbox::{
    ConflictReport, EmptyValues, HubSpotProfile, MissingIds, ResultOrder, Sandbox, SandboxArgs,
    SandboxHandle, SearchModified, ValidationReport, Variants,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A sandbox without rate limits unless a test asks for them.
fn args() -> SandboxArgs {
    SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        rng_seed: Some(7),
        ..SandboxArgs::default()
    }
}

async fn start(args: SandboxArgs) -> SandboxHandle {
    Sandbox::start(args, loopback())
        .await
        .expect("sandbox starts")
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(sb: &SandboxHandle) -> Self {
        Self::with_token(sb, sb.access_token())
    }

    fn with_token(sb: &SandboxHandle, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: sb.base_url(),
            token: token.to_owned(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("answer");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, headers, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (s, _, v) = self.send(reqwest::Method::GET, path, None).await;
        (s, v)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self.send(reqwest::Method::POST, path, Some(body)).await;
        (s, v)
    }

    async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self.send(reqwest::Method::PATCH, path, Some(body)).await;
        (s, v)
    }

    async fn delete(&self, path: &str) -> StatusCode {
        self.send(reqwest::Method::DELETE, path, None).await.0
    }
}

const CONTACTS: &str = "/crm/v3/objects/contacts";

fn emails(n: usize, prefix: &str) -> Value {
    let inputs: Vec<Value> = (0..n)
        .map(|i| json!({"properties": {"email": format!("{prefix}{i}@example.com"), "firstname": format!("F{i}")}}))
        .collect();
    json!({ "inputs": inputs })
}

async fn batch_create(api: &Api, n: usize, prefix: &str) -> Vec<String> {
    let (status, body) = api
        .post(&format!("{CONTACTS}/batch/create"), emails(n, prefix))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

// ---- auth ------------------------------------------------------------------------------

#[tokio::test]
async fn a_request_without_a_valid_token_gets_hubspots_401() {
    let sb = start(args()).await;
    let api = Api::with_token(&sb, "pat-na1-wrong");
    let (status, headers, body) = api.send(reqwest::Method::GET, CONTACTS, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["category"], "INVALID_AUTHENTICATION");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Authentication credentials not found.")
    );
    assert!(body["correlationId"].is_string());
    assert!(headers.contains_key("x-hubspot-correlation-id"));
    let anonymous = reqwest::get(format!("{}{CONTACTS}", sb.base_url()))
        .await
        .expect("answer");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

// ---- list and single records -----------------------------------------------------------

#[tokio::test]
async fn list_pages_with_an_opaque_cursor_and_no_paging_on_the_last_page() {
    let sb = start(SandboxArgs {
        contacts: 25,
        ..args()
    })
    .await;
    let api = Api::new(&sb);
    let mut seen = Vec::new();
    let mut path = format!("{CONTACTS}?limit=10");
    loop {
        let (status, body) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        for r in body["results"].as_array().expect("results") {
            seen.push(r["id"].as_str().expect("id").to_owned());
            assert!(r["properties"]["email"].is_string());
            assert_eq!(r["properties"]["hs_object_id"], r["id"]);
        }
        match body["paging"]["next"]["after"].as_str() {
            Some(after) => path = format!("{CONTACTS}?limit=10&after={after}"),
            None => {
                assert!(
                    body.get("paging").is_none(),
                    "paging absent on the last page"
                );
                break;
            }
        }
    }
    assert_eq!(seen.len(), 25);
    let mut sorted = seen.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 25, "no record twice");
    let (status, body) = api.get(&format!("{CONTACTS}?limit=101")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["category"], "VALIDATION_ERROR");
}

#[tokio::test]
async fn single_create_get_update_archive() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let (status, created) = api
        .post(
            CONTACTS,
            json!({"properties": {"email": "Ada@Example.com", "firstname": "Ada"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(
        created["properties"]["email"], "ada@example.com",
        "emails are stored lower-case"
    );
    assert!(created["properties"]["createdate"].is_string());

    let (status, again) = api
        .post(
            CONTACTS,
            json!({"properties": {"email": "ADA@example.com"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        again["message"],
        format!("Contact already exists. Existing ID: {id}")
    );
    assert_eq!(again["category"], "CONFLICT");

    let (status, by_email) = api
        .get(&format!("{CONTACTS}/ADA%40example.com?idProperty=email"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_email["id"], id.as_str());

    let (status, updated) = api
        .patch(
            &format!("{CONTACTS}/{id}"),
            json!({"properties": {"lastname": "Lovelace", "firstname": ""}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["properties"]["lastname"], "Lovelace");
    assert!(
        updated["properties"].get("firstname").is_none(),
        "an empty string clears"
    );
    assert!(updated["updatedAt"].as_str() >= created["updatedAt"].as_str());

    let (status, unknown) = api
        .patch(
            &format!("{CONTACTS}/{id}"),
            json!({"properties": {"favorite_food": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        unknown["message"]
            .as_str()
            .unwrap_or("")
            .contains("PROPERTY_DOESNT_EXIST")
    );

    assert_eq!(
        api.delete(&format!("{CONTACTS}/{id}")).await,
        StatusCode::NO_CONTENT
    );
    let (status, gone) = api.get(&format!("{CONTACTS}/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(gone["category"], "OBJECT_NOT_FOUND");
    let (status, archived) = api.get(&format!("{CONTACTS}/{id}?archived=true")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(archived["archived"], true);
    assert_eq!(
        api.delete(&format!("{CONTACTS}/999")).await,
        StatusCode::NO_CONTENT,
        "unknown ids too"
    );
}

// ---- batches ---------------------------------------------------------------------------

#[tokio::test]
async fn batch_create_with_an_existing_email_refuses_the_batch_naming_the_first_existing_id() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 3, "x").await;
    let body = json!({"inputs": [
        {"properties": {"email": "fresh@example.com"}},
        {"properties": {"email": "X1@example.com"}},
        {"properties": {"email": "x2@example.com"}},
    ]});
    let (status, err) = api.post(&format!("{CONTACTS}/batch/create"), body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        err["message"],
        format!("Contact already exists. Existing ID: {}", ids[1])
    );
    assert!(err.get("results").is_none());
    assert_eq!(
        sb.contact_count(),
        3,
        "nothing of the refused batch was created"
    );
}

#[tokio::test]
async fn an_invalid_email_refuses_the_batch_unless_every_input_has_a_trace_id() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let plain = json!({"inputs": [
        {"properties": {"email": "good@example.com"}},
        {"properties": {"email": "bad@"}},
    ]});
    let (status, err) = api.post(&format!("{CONTACTS}/batch/create"), plain).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["category"], "VALIDATION_ERROR");
    let message = err["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("Property values were not valid: ["),
        "{message}"
    );
    assert!(message.contains("\"error\":\"INVALID_EMAIL\""));
    assert_eq!(sb.contact_count(), 0);

    let traced = json!({"inputs": [
        {"properties": {"email": "good@example.com"}, "objectWriteTraceId": "t1"},
        {"properties": {"email": "bad@"}, "objectWriteTraceId": "t2"},
    ]});
    let (status, partial) = api.post(&format!("{CONTACTS}/batch/create"), traced).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{partial}");
    assert_eq!(partial["numErrors"], 1);
    assert_eq!(
        partial["errors"][0]["context"]["objectWriteTraceId"],
        json!(["t2"])
    );
    assert_eq!(
        partial["results"][0]["properties"]["email"],
        "good@example.com"
    );
    assert_eq!(partial["results"][0]["objectWriteTraceId"], "t1");
    assert_eq!(sb.contact_count(), 1);
}

#[tokio::test]
async fn batch_read_answers_207_for_missing_ids_and_reads_by_email() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 2, "r").await;
    let body = json!({"inputs": [{"id": ids[0]}, {"id": "1"}, {"id": ids[1]}], "properties": ["firstname"], "propertiesWithHistory": []});
    let (status, read) = api.post(&format!("{CONTACTS}/batch/read"), body).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{read}");
    assert_eq!(read["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(read["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(read["errors"][0]["context"]["ids"], json!(["1"]));
    assert_eq!(read["results"][0]["properties"]["firstname"], "F0");
    assert!(
        read["results"][0]["properties"].get("email").is_none(),
        "only what was asked, plus the fixed three"
    );

    let by_email = json!({"idProperty": "email", "inputs": [{"id": "R1@EXAMPLE.COM"}], "properties": [], "propertiesWithHistory": []});
    let (status, read) = api.post(&format!("{CONTACTS}/batch/read"), by_email).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["results"][0]["id"], ids[1].as_str());
    assert_eq!(read["status"], "COMPLETE");
}

#[tokio::test]
async fn batch_update_refuses_duplicate_ids_and_reports_unknown_ones() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 2, "u").await;
    let dup = json!({"inputs": [
        {"id": ids[0], "properties": {"firstname": "A"}},
        {"id": ids[0], "properties": {"firstname": "B"}},
    ]});
    let (status, err) = api.post(&format!("{CONTACTS}/batch/update"), dup).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        err["message"],
        format!(
            "Duplicate IDs found in batch input: [{}]. IDs must be unique",
            ids[0]
        )
    );
    assert_eq!(err["context"]["ids"], json!([ids[0]]));

    let body = json!({"inputs": [
        {"id": ids[0], "properties": {"firstname": "Changed"}},
        {"id": "42", "properties": {"firstname": "Nobody"}, "objectWriteTraceId": "t-42"},
    ]});
    let (status, out) = api.post(&format!("{CONTACTS}/batch/update"), body).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{out}");
    assert_eq!(out["results"][0]["properties"]["firstname"], "Changed");
    assert_eq!(out["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(
        out["errors"][0]["context"]["objectWriteTraceId"],
        json!(["t-42"])
    );

    let all_ok = json!({"inputs": [{"id": ids[1], "properties": {"lastname": "L"}}]});
    let (status, out) = api.post(&format!("{CONTACTS}/batch/update"), all_ok).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out["results"][0]["properties"]["lastname"], "L");
}

#[tokio::test]
async fn batch_upsert_flags_new_records_and_matches_emails_case_insensitively() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 1, "up").await;
    let body = json!({"inputs": [
        {"idProperty": "email", "id": "UP0@example.com", "properties": {"lastname": "Existing"}},
        {"idProperty": "email", "id": "brand-new@example.com", "properties": {"lastname": "New"}},
    ]});
    let (status, out) = api.post(&format!("{CONTACTS}/batch/upsert"), body).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let results = out["results"].as_array().expect("results");
    assert_eq!(results[0]["id"], ids[0].as_str());
    assert_eq!(results[0]["new"], false);
    assert_eq!(results[1]["new"], true);
    assert_eq!(results[1]["properties"]["email"], "brand-new@example.com");
    assert_eq!(sb.contact_count(), 2);

    let dup = json!({"inputs": [
        {"idProperty": "email", "id": "a@example.com", "properties": {}},
        {"idProperty": "email", "id": "A@example.com", "properties": {}},
    ]});
    let (status, err) = api.post(&format!("{CONTACTS}/batch/upsert"), dup).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Duplicate IDs found in batch input")
    );

    let invalid = json!({"inputs": [
        {"idProperty": "email", "id": "fine@example.com", "properties": {}},
        {"idProperty": "email", "id": "broken@", "properties": {}},
    ]});
    let (status, out) = api.post(&format!("{CONTACTS}/batch/upsert"), invalid).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{out}");
    assert_eq!(out["numErrors"], 1);
    assert_eq!(out["results"][0]["new"], true);
}

#[tokio::test]
async fn a_unique_custom_property_is_enforced_and_serves_as_id_property() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let prop = json!({"name": "local_id", "label": "Local id", "type": "string", "fieldType": "text",
                      "groupName": "contactinformation", "hasUniqueValue": true});
    let (status, created) = api.post("/crm/v3/properties/contacts", prop.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["hasUniqueValue"], true);
    let (status, again) = api.post("/crm/v3/properties/contacts", prop).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(again["category"], "OBJECT_ALREADY_EXISTS");
    assert_eq!(
        again["message"],
        "A property named 'local_id' already exists."
    );

    let upsert = json!({"inputs": [{"idProperty": "local_id", "id": "17", "properties": {"email": "l17@example.com"}}]});
    let (status, out) = api
        .post(&format!("{CONTACTS}/batch/upsert"), upsert.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["results"][0]["new"], true);
    assert_eq!(out["results"][0]["properties"]["local_id"], "17");
    let (status, out) = api.post(&format!("{CONTACTS}/batch/upsert"), upsert).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        out["results"][0]["new"], false,
        "the second upsert finds the record by its unique value"
    );

    let clash = json!({"properties": {"email": "other@example.com", "local_id": "17"}});
    let (status, err) = api.post(CONTACTS, clash).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");

    let read = json!({"idProperty": "local_id", "inputs": [{"id": "17"}], "properties": ["local_id"], "propertiesWithHistory": []});
    let (status, out) = api.post(&format!("{CONTACTS}/batch/read"), read).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(out["results"][0]["properties"]["local_id"], "17");

    let (status, list) = api.get("/crm/v3/properties/contacts").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        list["results"]
            .as_array()
            .expect("results")
            .iter()
            .any(|p| p["name"] == "local_id")
    );
}

#[tokio::test]
async fn batch_archive_removes_records_from_reads_and_lists() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 3, "arch").await;
    let body = json!({"inputs": [{"id": ids[0]}, {"id": "12345"}]});
    let (status, _) = api.post(&format!("{CONTACTS}/batch/archive"), body).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(sb.contact_count(), 2);
    let (_, list) = api.get(&format!("{CONTACTS}?limit=100")).await;
    assert!(
        list["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|r| r["id"] != ids[0].as_str())
    );
    let (_, archived) = api.get(&format!("{CONTACTS}?archived=true")).await;
    assert_eq!(archived["results"][0]["id"], ids[0].as_str());
}

#[tokio::test]
async fn merge_lists_the_merged_id_and_reads_of_it_resolve_to_the_survivor() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 2, "m").await;
    let (status, merged) = api
        .post(
            &format!("{CONTACTS}/merge"),
            json!({"primaryObjectId": ids[0], "objectIdToMerge": ids[1]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    assert_eq!(merged["id"], ids[0].as_str());
    assert_eq!(
        merged["properties"]["hs_merged_object_ids"],
        ids[1].as_str()
    );
    let (status, read) = api.get(&format!("{CONTACTS}/{}", ids[1])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["id"], ids[0].as_str());
    assert_eq!(sb.contact_count(), 1);
}

#[tokio::test]
async fn malformed_json_gets_hubspots_invalid_input_answer() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    let resp = api
        .http
        .post(format!("{}{CONTACTS}/batch/create", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body("{\"inputs\": [")
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("Invalid input JSON on line 1")
    );
}

#[tokio::test]
async fn handle_gives_direct_access_to_the_data() {
    let sb = start(args()).await;
    let mut values = BTreeMap::new();
    values.insert("email".to_owned(), "Direct@Example.com".to_owned());
    let ids = sb.insert_contacts(vec![values]);
    assert_eq!(ids.len(), 1);
    let c = sb.contact(&ids[0]).expect("stored");
    assert_eq!(c.email(), Some("direct@example.com"));
    assert_eq!(sb.contacts().len(), 1);
    sb.reset();
    assert_eq!(sb.contact_count(), 0);
    sb.shutdown().await.expect("stops cleanly");
}

// ---- search ----------------------------------------------------------------------------

const SEARCH: &str = "/crm/v3/objects/contacts/search";

async fn search(api: &Api, body: Value) -> (StatusCode, Value) {
    api.post(SEARCH, body).await
}

fn ids_of(body: &Value) -> Vec<String> {
    body["results"].as_array().map_or_else(Vec::new, |r| {
        r.iter()
            .map(|x| x["properties"]["email"].as_str().unwrap_or("").to_owned())
            .collect()
    })
}

async fn search_fixture(api: &Api) {
    let prop = json!({"name": "score", "label": "Score", "type": "number", "fieldType": "number", "groupName": "contactinformation"});
    assert_eq!(
        api.post("/crm/v3/properties/contacts", prop).await.0,
        StatusCode::CREATED
    );
    let people = [
        ("ada@example.com", "Ada", "Lovelace", Some("90")),
        ("alan@example.org", "Alan", "Turing", Some("70")),
        ("grace@example.org", "Grace", "Hopper", Some("80")),
        ("linus@example.net", "Linus", "Torvalds", None),
    ];
    let inputs: Vec<Value> = people
        .iter()
        .map(|(email, first, last, score)| {
            let mut p = json!({"email": email, "firstname": first, "lastname": last});
            if let Some(s) = score {
                p["score"] = json!(s);
            }
            json!({"properties": p})
        })
        .collect();
    let (status, body) = api
        .post(
            &format!("{CONTACTS}/batch/create"),
            json!({"inputs": inputs}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn filter(property: &str, operator: &str, value: Value) -> Value {
    let mut f = json!({"propertyName": property, "operator": operator});
    match value {
        Value::Array(values) => f["values"] = Value::Array(values),
        Value::Null => {}
        other => f["value"] = other,
    }
    json!({"filterGroups": [{"filters": [f]}], "sorts": ["email"], "properties": ["email"], "limit": 100, "after": "0"})
}

#[tokio::test]
async fn search_supports_hubspots_filter_operators() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    search_fixture(&api).await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            filter("email", "EQ", json!("ADA@example.com")),
            vec!["ada@example.com"],
        ),
        (
            filter("firstname", "NEQ", json!("ada")),
            vec!["alan@example.org", "grace@example.org", "linus@example.net"],
        ),
        (
            filter("score", "GT", json!("75")),
            vec!["ada@example.com", "grace@example.org"],
        ),
        (
            filter("score", "LTE", json!("80")),
            vec!["alan@example.org", "grace@example.org"],
        ),
        (filter("score", "LT", json!(71)), vec!["alan@example.org"]),
        (filter("score", "GTE", json!("90")), vec!["ada@example.com"]),
        (
            {
                let mut b = filter("score", "BETWEEN", json!("70"));
                b["filterGroups"][0]["filters"][0]["highValue"] = json!("80");
                b
            },
            vec!["alan@example.org", "grace@example.org"],
        ),
        (
            filter("lastname", "IN", json!(["hopper", "turing"])),
            vec!["alan@example.org", "grace@example.org"],
        ),
        (filter("lastname", "IN", json!(["HOPPER"])), vec![]),
        (
            filter("lastname", "NOT_IN", json!(["hopper", "turing"])),
            vec!["ada@example.com", "linus@example.net"],
        ),
        (
            filter("score", "HAS_PROPERTY", Value::Null),
            vec!["ada@example.com", "alan@example.org", "grace@example.org"],
        ),
        (
            filter("score", "NOT_HAS_PROPERTY", Value::Null),
            vec!["linus@example.net"],
        ),
        (
            filter("email", "CONTAINS_TOKEN", json!("*@example.org")),
            vec!["alan@example.org", "grace@example.org"],
        ),
        (
            filter("email", "NOT_CONTAINS_TOKEN", json!("*@example.org")),
            vec!["ada@example.com", "linus@example.net"],
        ),
    ];
    for (body, expected) in cases {
        let (status, out) = search(&api, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body} -> {out}");
        assert_eq!(ids_of(&out), expected, "{body}");
        assert_eq!(out["total"], expected.len());
    }
    let or_groups = json!({"filterGroups": [
        {"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "Ada"}]},
        {"filters": [{"propertyName": "lastname", "operator": "EQ", "value": "Torvalds"},
                     {"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "*.net"}]}
    ], "sorts": ["email"], "properties": [], "limit": 10, "after": "0"});
    let (_, out) = search(&api, or_groups).await;
    assert_eq!(
        ids_of(&out),
        ["ada@example.com", "linus@example.net"],
        "groups are OR, filters in a group AND"
    );
    let (_, out) = search(&api, json!({"query": "gra", "filterGroups": [], "sorts": [], "properties": [], "limit": 10, "after": "0"})).await;
    assert_eq!(ids_of(&out), ["grace@example.org"]);
}

#[tokio::test]
async fn search_sorts_pages_and_refuses_bad_requests() {
    let sb = start(args()).await;
    let api = Api::new(&sb);
    search_fixture(&api).await;
    let by_score = |sort: Value| {
        json!({"filterGroups": [{"filters": [{"propertyName": "score", "operator": "HAS_PROPERTY"}]}],
                                         "sorts": [sort], "properties": ["score", "email"], "limit": 2, "after": "0"})
    };
    let (_, desc) = search(
        &api,
        by_score(json!({"propertyName": "score", "direction": "DESCENDING"})),
    )
    .await;
    assert_eq!(ids_of(&desc), ["ada@example.com", "grace@example.org"]);
    assert_eq!(desc["paging"]["next"]["after"], "2");
    assert_eq!(desc["total"], 3);
    let (_, desc_text) = search(&api, by_score(json!("-score"))).await;
    assert_eq!(
        ids_of(&desc_text),
        ids_of(&desc),
        "the spec's string form sorts the same"
    );
    let mut page2 = by_score(json!("-score"));
    page2["after"] = json!("2");
    let (_, last) = search(&api, page2).await;
    assert_eq!(ids_of(&last), ["alan@example.org"]);
    assert!(last.get("paging").is_none());

    let (status, err) = search(
        &api,
        json!({"filterGroups": [], "sorts": [], "properties": [], "limit": 201, "after": "0"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["category"], "VALIDATION_ERROR");
    let (status, _) = search(
        &api,
        json!({"filterGroups": [], "sorts": [], "properties": [], "limit": 200, "after": "0"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let groups: Vec<Value> = (0..6)
        .map(|_| json!({"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}))
        .collect();
    let (status, _) = search(
        &api,
        json!({"filterGroups": groups, "sorts": [], "properties": [], "limit": 10, "after": "0"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "at most 5 filter groups");
    let (status, _) = search(&api, filter("no_such_property", "EQ", json!("x"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn search_stops_at_ten_thousand_results() {
    let sb = start(args()).await;
    sb.seed_contacts(10_050);
    let api = Api::new(&sb);
    let page = |after: &str| json!({"filterGroups": [], "sorts": [], "properties": [], "limit": 200, "after": after});
    let (status, near_end) = search(&api, page("9900")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(near_end["total"], 10_050, "total counts every match");
    assert_eq!(
        near_end["results"].as_array().map(Vec::len),
        Some(100),
        "nothing past the 10,000th result"
    );
    assert_eq!(near_end["paging"]["next"]["after"], "10000");
    let (status, past) = search(&api, page("10000")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{past}");
    assert_eq!(past["category"], "VALIDATION_ERROR");
}

#[tokio::test]
async fn search_sees_writes_only_after_the_index_delay() {
    let sb = start(SandboxArgs {
        search_delay_ms: 300,
        ..args()
    })
    .await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 1, "lag").await;
    let find = json!({"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": "lag0@example.com"}]}],
                      "sorts": [], "properties": ["firstname"], "limit": 10, "after": "0"});
    let (_, now) = search(&api, find.clone()).await;
    assert_eq!(now["total"], 0, "a new record is not searchable at once");
    let (status, direct) = api.get(&format!("{CONTACTS}/{}", ids[0])).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "reads by id are immediate: {direct}"
    );
    let found = poll_search(&api, &find, |b| b["total"] == 1).await;
    assert_eq!(found["results"][0]["properties"]["firstname"], "F0");

    api.patch(
        &format!("{CONTACTS}/{}", ids[0]),
        json!({"properties": {"firstname": "Renamed"}}),
    )
    .await;
    let (_, stale) = search(&api, find.clone()).await;
    assert_eq!(
        stale["results"][0]["properties"]["firstname"], "F0",
        "search shows the old version meanwhile"
    );
    poll_search(&api, &find, |b| {
        b["results"][0]["properties"]["firstname"] == "Renamed"
    })
    .await;

    api.delete(&format!("{CONTACTS}/{}", ids[0])).await;
    let (_, gone) = search(&api, find).await;
    assert_eq!(gone["total"], 0, "archived records never appear");
}

async fn poll_search(api: &Api, body: &Value, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let (_, out) = search(api, body.clone()).await;
        if done(&out) {
            return out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("search never caught up");
}

// ---- OAuth -----------------------------------------------------------------------------

const REDIRECT: &str = "http://localhost:3001/oauth-callback";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Walks the authorize page and returns the code it hands to the redirect URI.
async fn authorize(sb: &SandboxHandle, scope: &str, state: &str) -> String {
    let resp = no_redirects()
        .get(sb.authorize_url())
        .query(&[
            ("client_id", sb.client_id()),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("state", state),
        ])
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(location.starts_with(REDIRECT), "{location}");
    let url = reqwest::Url::parse(&location).expect("url");
    let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(
        q.get("state").map(String::as_str),
        Some(state),
        "state comes back unchanged"
    );
    q["code"].clone()
}

async fn token(sb: &SandboxHandle, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", sb.base_url()))
        .form(form)
        .send()
        .await
        .expect("answer");
    (resp.status(), resp.json().await.expect("json"))
}

async fn exchange(sb: &SandboxHandle, code: &str) -> (StatusCode, Value) {
    token(
        sb,
        "/oauth/v1/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", sb.client_id()),
            ("client_secret", sb.client_secret()),
            ("redirect_uri", REDIRECT),
            ("code", code),
        ],
    )
    .await
}

const SCOPES: &str = "crm.objects.contacts.read crm.objects.contacts.write";

#[tokio::test]
async fn the_authorize_page_approves_known_clients_and_refuses_others() {
    let sb = start(args()).await;
    let code = authorize(&sb, SCOPES, "st-1").await;
    assert!(!code.is_empty());
    let unknown = no_redirects()
        .get(sb.authorize_url())
        .query(&[
            ("client_id", "nope"),
            ("redirect_uri", REDIRECT),
            ("scope", SCOPES),
        ])
        .send()
        .await
        .expect("answer");
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(
        unknown
            .text()
            .await
            .unwrap_or_default()
            .contains("Unknown client_id")
    );
    let plain_http = no_redirects()
        .get(sb.authorize_url())
        .query(&[
            ("client_id", sb.client_id()),
            ("redirect_uri", "http://example.com/cb"),
            ("scope", SCOPES),
        ])
        .send()
        .await
        .expect("answer");
    assert_eq!(
        plain_http.status(),
        StatusCode::BAD_REQUEST,
        "http only on loopback"
    );
}

#[tokio::test]
async fn a_code_is_single_use_bound_to_its_redirect_uri_and_grants_the_scopes_plus_oauth() {
    let sb = start(SandboxArgs {
        token_lifetime_secs: 60,
        ..args()
    })
    .await;
    let code = authorize(&sb, SCOPES, "s").await;
    let (status, wrong_uri) = token(
        &sb,
        "/oauth/v3/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", sb.client_id()),
            ("client_secret", sb.client_secret()),
            ("redirect_uri", "http://localhost:9999/elsewhere"),
            ("code", &code),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(wrong_uri["error"], "invalid_grant");

    let (status, tokens) = exchange(&sb, &code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 60);
    assert_eq!(tokens["hub_id"], sb.portal_id());
    assert_eq!(
        tokens["scopes"],
        json!([
            "crm.objects.contacts.read",
            "crm.objects.contacts.write",
            "oauth"
        ])
    );

    let (status, reused) = exchange(&sb, &code).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reused["status"], "BAD_AUTH_CODE");
    assert_eq!(reused["message"], "missing or unknown auth code");

    let (status, bad_client) = token(
        &sb,
        "/oauth/2026-03/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "other"),
            ("client_secret", "x"),
            ("refresh_token", "r"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_client["status"], "BAD_CLIENT_ID");
}

#[tokio::test]
async fn oauth_tokens_call_the_api_expire_and_refresh() {
    let sb = start(args()).await;
    let code = authorize(&sb, SCOPES, "s").await;
    let (_, tokens) = exchange(&sb, &code).await;
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let api = Api::with_token(&sb, &access);
    assert_eq!(api.get(CONTACTS).await.0, StatusCode::OK);
    let (status, denied) = api.get("/crm/v3/properties/contacts").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "schemas scope was not granted"
    );
    assert_eq!(denied["category"], "MISSING_SCOPES");
    let (status, details) = api.get("/account-info/v3/details").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(details["portalId"], sb.portal_id());

    let (status, info) = api.get(&format!("/oauth/v1/access-tokens/{access}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["hub_id"], sb.portal_id());
    assert_eq!(info["token"], access.as_str());

    sb.expire_access_tokens();
    let (status, expired) = api.get(CONTACTS).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired["category"], "EXPIRED_AUTHENTICATION");
    let message = expired["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("The OAuth token used to make this call expired "),
        "{message}"
    );
    assert!(expired["context"]["expire time"].is_array());

    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", sb.client_id()),
        ("client_secret", sb.client_secret()),
        ("refresh_token", refresh.as_str()),
    ];
    let (status, renewed) = token(&sb, "/oauth/v3/token", &form).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert_eq!(
        renewed["refresh_token"],
        refresh.as_str(),
        "the refresh token stays the same"
    );
    let fresh = renewed["access_token"].as_str().expect("access");
    assert_ne!(fresh, access);
    assert_eq!(
        Api::with_token(&sb, fresh).get(CONTACTS).await.0,
        StatusCode::OK
    );

    let (status, bad) = token(
        &sb,
        "/oauth/v1/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", sb.client_id()),
            ("client_secret", sb.client_secret()),
            ("refresh_token", "na1-nope"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(bad["status"], "BAD_REFRESH_TOKEN");
}

#[tokio::test]
async fn introspect_and_revoke_on_the_new_endpoints() {
    let sb = start(args()).await;
    let (_, tokens) = exchange(&sb, &authorize(&sb, SCOPES, "s").await).await;
    let access = tokens["access_token"].as_str().expect("access");
    let refresh = tokens["refresh_token"].as_str().expect("refresh");
    let creds = |t: &'static str, tok: &str| -> Vec<(String, String)> {
        vec![
            ("client_id".into(), sb.client_id().into()),
            ("client_secret".into(), sb.client_secret().into()),
            ("token".into(), tok.into()),
            ("token_type_hint".into(), t.into()),
        ]
    };
    let post = |path: &'static str, form: Vec<(String, String)>| {
        let url = format!("{}{path}", sb.base_url());
        async move {
            reqwest::Client::new()
                .post(url)
                .form(&form)
                .send()
                .await
                .expect("answer")
        }
    };
    let info: Value = post(
        "/oauth/2026-03/token/introspect",
        creds("access_token", access),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(info["active"], true);
    assert_eq!(info["token_use"], "access_token");
    assert_eq!(info["client_id"], sb.client_id());
    let info: Value = post(
        "/oauth/v3/token/introspect",
        creds("refresh_token", refresh),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(info["token_use"], "refresh_token");
    assert_eq!(
        post("/oauth/v3/token/revoke", creds("refresh_token", refresh))
            .await
            .status(),
        StatusCode::OK
    );
    let info: Value = post(
        "/oauth/v3/token/introspect",
        creds("refresh_token", refresh),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(info["active"], false);
}

// ---- limits and faults -----------------------------------------------------------------

#[tokio::test]
async fn the_ten_second_budget_answers_429_with_hubspots_body_and_headers() {
    let sb = start(SandboxArgs {
        requests_per_10s: 3,
        search_per_second: 0,
        ..args()
    })
    .await;
    let api = Api::new(&sb);
    for _ in 0..3 {
        let (status, _) = search(
            &api,
            json!({"filterGroups": [], "sorts": [], "properties": [], "limit": 1, "after": "0"}),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "searches do not use the 10-second budget"
        );
    }
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let (status, headers, _) = api.send(reqwest::Method::GET, CONTACTS, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-hubspot-ratelimit-max"], "3");
        assert_eq!(
            headers["x-hubspot-ratelimit-interval-milliseconds"],
            "10000"
        );
        assert!(
            headers.contains_key("x-hubspot-ratelimit-daily-remaining"),
            "private apps see the daily budget"
        );
        remaining.push(
            headers["x-hubspot-ratelimit-remaining"]
                .to_str()
                .unwrap_or("")
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let (status, headers, body) = api.send(reqwest::Method::GET, CONTACTS, None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    assert_eq!(body["errorType"], "RATE_LIMIT");
    assert_eq!(body["status"], "error");
    assert!(body["correlationId"].is_string());
    assert_eq!(headers["x-hubspot-ratelimit-remaining"], "0");
    assert_eq!(sb.stats().rate_limited, 1);
}

#[tokio::test]
async fn searches_have_their_own_per_second_limit() {
    let sb = start(SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 1,
        ..args()
    })
    .await;
    let api = Api::new(&sb);
    let mut limited = None;
    for _ in 0..5 {
        let (status, headers, body) =
            api.send(reqwest::Method::POST, SEARCH, Some(json!({"filterGroups": [], "sorts": [], "properties": [], "limit": 1, "after": "0"}))).await;
        assert!(
            !headers.contains_key("x-hubspot-ratelimit-max"),
            "search answers carry no limit headers"
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(body);
            break;
        }
    }
    let body = limited.expect("five searches in a row exceed one per second");
    assert_eq!(body["message"], "You have reached your secondly limit.");
    assert_eq!(body["policyName"], "SECONDLY");
}

async fn fault_run(seed: u64) -> (Vec<u16>, usize) {
    let sb = start(SandboxArgs {
        fault_5xx: 0.4,
        rng_seed: Some(seed),
        ..args()
    })
    .await;
    let api = Api::new(&sb);
    let mut statuses = Vec::new();
    for i in 0..30 {
        let (status, _) = api
            .post(
                CONTACTS,
                json!({"properties": {"email": format!("f{i}@example.com")}}),
            )
            .await;
        statuses.push(status.as_u16());
    }
    (statuses, sb.contact_count())
}

#[tokio::test]
async fn injected_5xx_apply_nothing_and_replay_with_the_same_seed() {
    let (first, count) = fault_run(42).await;
    let (second, _) = fault_run(42).await;
    assert_eq!(first, second, "same seed, same requests: same faults");
    assert!(
        first.iter().any(|s| *s >= 500) && first.contains(&201),
        "{first:?}"
    );
    assert_eq!(
        count,
        first.iter().filter(|s| **s == 201).count(),
        "a 5xx applied nothing"
    );
}

async fn drop_run(seed: u64) -> (Vec<bool>, usize, u64) {
    let sb = start(SandboxArgs {
        fault_drop_after_write: 0.5,
        rng_seed: Some(seed),
        ..args()
    })
    .await;
    let http = reqwest::Client::new();
    let mut answered = Vec::new();
    for i in 0..12 {
        let sent = http
            .post(format!("{}{CONTACTS}", sb.base_url()))
            .bearer_auth(sb.access_token())
            .json(&json!({"properties": {"email": format!("d{i}@example.com")}}))
            .send()
            .await;
        match sent {
            Ok(resp) => {
                assert_eq!(resp.status(), StatusCode::CREATED);
                answered.push(true);
            }
            Err(e) => {
                assert!(
                    !e.is_status() && !e.is_timeout(),
                    "a connection error, not an HTTP answer: {e}"
                );
                answered.push(false);
            }
        }
    }
    let dropped = sb.stats().dropped_after_write;
    (answered, sb.contact_count(), dropped)
}

#[tokio::test]
async fn drop_after_write_applies_the_write_then_kills_the_connection() {
    let (first, count, dropped) = drop_run(9).await;
    assert!(first.contains(&false) && first.contains(&true), "{first:?}");
    assert_eq!(count, 12, "every write was applied, answered or not");
    assert_eq!(dropped as usize, first.iter().filter(|a| !**a).count());
    let (second, _, _) = drop_run(9).await;
    assert_eq!(first, second, "the same seed drops the same requests");
}

#[tokio::test]
async fn the_same_seed_generates_the_same_contacts() {
    let a = start(SandboxArgs {
        contacts: 30,
        rng_seed: Some(5),
        ..args()
    })
    .await;
    let b = start(SandboxArgs {
        contacts: 30,
        rng_seed: Some(5),
        ..args()
    })
    .await;
    let strip = |sb: &SandboxHandle| -> Vec<(String, Option<String>, Option<String>)> {
        sb.contacts()
            .into_iter()
            .map(|c| {
                (
                    c.id.clone(),
                    c.email().map(str::to_owned),
                    c.properties.get("firstname").cloned(),
                )
            })
            .collect()
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(a.contact_count(), 30);
}

// ---- webhooks ----------------------------------------------------------------------------

struct Delivery {
    signature: String,
    timestamp: String,
    body: Vec<u8>,
}

async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Delivery>) {
    use poem::{Route, Server, handler, listener::TcpListener as PoemListener, post, web::Data};
    #[handler]
    async fn hook(
        req: &poem::Request,
        body: Vec<u8>,
        tx: Data<&tokio::sync::mpsc::UnboundedSender<Delivery>>,
    ) -> &'static str {
        let header = |n: &str| req.header(n).unwrap_or("").to_owned();
        let _ = tx.send(Delivery {
            signature: header("x-hubspot-signature-v3"),
            timestamp: header("x-hubspot-request-timestamp"),
            body,
        });
        "ok"
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = poem::EndpointExt::data(Route::new().at("/hook", post(hook)), tx);
    tokio::spawn(Server::new(PoemListener::bind(addr.to_string())).run(app));
    (format!("http://{addr}/hook"), rx)
}

fn expected_signature(secret: &str, url: &str, body: &[u8], timestamp: &str) -> String {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(b"POST");
    mac.update(url.as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn contact_changes_are_sent_as_v3_signed_webhooks() {
    let (url, mut deliveries) = receiver().await;
    let sb = start(SandboxArgs {
        webhook_url: Some(url.clone()),
        ..args()
    })
    .await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 2, "wh").await;
    api.patch(
        &format!("{CONTACTS}/{}", ids[0]),
        json!({"properties": {"lastname": "Hooked"}}),
    )
    .await;
    api.post(
        &format!("{CONTACTS}/merge"),
        json!({"primaryObjectId": ids[0], "objectIdToMerge": ids[1]}),
    )
    .await;
    api.delete(&format!("{CONTACTS}/{}", ids[0])).await;

    let mut events: Vec<Value> = Vec::new();
    let wanted = [
        "contact.creation",
        "contact.propertyChange",
        "contact.merge",
        "contact.deletion",
    ];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !wanted
        .iter()
        .all(|w| events.iter().any(|e| e["subscriptionType"] == *w))
    {
        let d = tokio::time::timeout_at(deadline, deliveries.recv())
            .await
            .expect("webhooks arrive")
            .expect("open");
        assert_eq!(
            d.signature,
            expected_signature(sb.client_secret(), &url, &d.body, &d.timestamp)
        );
        let batch: Vec<Value> = serde_json::from_slice(&d.body).expect("a JSON array");
        assert!(!batch.is_empty() && batch.len() < 100);
        events.extend(batch);
    }
    let change = events
        .iter()
        .find(|e| {
            e["subscriptionType"] == "contact.propertyChange" && e["propertyName"] == "lastname"
        })
        .expect("lastname change");
    assert_eq!(change["propertyValue"], "Hooked");
    assert_eq!(change["objectId"].to_string(), ids[0]);
    assert_eq!(change["portalId"], sb.portal_id());
    let merge = events
        .iter()
        .find(|e| e["subscriptionType"] == "contact.merge")
        .expect("merge");
    assert_eq!(merge["primaryObjectId"].to_string(), ids[0]);
    assert_eq!(merge["mergedObjectIds"][0].to_string(), ids[1]);
    assert!(
        events
            .iter()
            .all(|e| e["occurredAt"].is_i64() && e["attemptNumber"] == 0 && e["appId"].is_i64())
    );
}

#[tokio::test]
async fn admin_endpoints_seed_dump_and_reset() {
    let sb = start(args()).await;
    let http = reqwest::Client::new();
    let admin = |p: &str| format!("{}/_sandbox/{p}", sb.base_url());
    let seeded: Value = http
        .post(admin("seed"))
        .json(&json!({"count": 5}))
        .send()
        .await
        .expect("seed")
        .json()
        .await
        .expect("json");
    assert_eq!(seeded["created"], 5);
    let dump: Value = http
        .get(admin("contacts"))
        .send()
        .await
        .expect("dump")
        .json()
        .await
        .expect("json");
    assert_eq!(dump["contacts"].as_array().map(Vec::len), Some(5));
    let stats: Value = http
        .get(admin("stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["contacts"], 5);
    assert!(stats["requests"]["total"].as_u64().unwrap_or(0) >= 2);
    let reset = http.post(admin("reset")).send().await.expect("reset");
    assert_eq!(reset.status(), StatusCode::OK);
    assert_eq!(sb.contact_count(), 0);
    let hubspot_path_needs_auth = http
        .get(format!("{}{CONTACTS}", sb.base_url()))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        hubspot_path_needs_auth.status(),
        StatusCode::UNAUTHORIZED,
        "admin never opens HubSpot's paths"
    );
}

// ---- variants of HubSpot's answers ---------------------------------------------------------

/// A sandbox playing the given variants.
async fn start_with(variants: Variants) -> SandboxHandle {
    start(args().with_variants(variants)).await
}

/// Batch inputs with trace ids `t0`, `t1`, ... (HubSpot's multi-status mode).
fn traced(properties: &[Value]) -> Value {
    let inputs: Vec<Value> = properties
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"properties": p, "objectWriteTraceId": format!("t{i}")}))
        .collect();
    json!({ "inputs": inputs })
}

fn result_ids(body: &Value) -> Vec<String> {
    body["results"].as_array().map_or_else(Vec::new, |r| {
        r.iter()
            .map(|x| x["id"].as_str().unwrap_or("").to_owned())
            .collect()
    })
}

fn read_body(ids: &[&str], properties: Value) -> Value {
    let inputs: Vec<Value> = ids.iter().map(|i| json!({"id": i})).collect();
    json!({"inputs": inputs, "properties": properties, "propertiesWithHistory": []})
}

async fn unique_property(api: &Api, name: &str) {
    let prop = json!({"name": name, "label": name, "type": "string", "fieldType": "text",
                      "groupName": "contactinformation", "hasUniqueValue": true});
    let (status, body) = api.post("/crm/v3/properties/contacts", prop).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Merges `ids[1]` into `ids[0]`.
async fn merge_second_into_first(api: &Api, ids: &[String]) {
    let (status, body) = api
        .post(
            &format!("{CONTACTS}/merge"),
            json!({"primaryObjectId": ids[0], "objectIdToMerge": ids[1]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn by_default_a_conflict_refuses_the_whole_batch_even_when_every_input_is_traced() {
    let sb = start_with(Variants::default()).await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 1, "c").await;
    let body = traced(&[
        json!({"email": "fresh@example.com"}),
        json!({"email": "c0@example.com"}),
    ]);
    let (status, err) = api.post(&format!("{CONTACTS}/batch/create"), body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(
        err["message"],
        format!("Contact already exists. Existing ID: {}", ids[0])
    );
    assert_eq!(sb.contact_count(), 1, "nothing of the batch was created");
}

#[tokio::test]
async fn per_input_conflicts_fail_alone_in_a_207_and_the_valid_inputs_are_created() {
    let sb = start_with(Variants {
        conflicts: ConflictReport::PerInput,
        ..Variants::default()
    })
    .await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 1, "c").await;
    let body = traced(&[
        json!({"email": "fresh@example.com"}),
        json!({"email": "C0@example.com"}),
        json!({"email": "fresh@example.com", "firstname": "Twin"}),
    ]);
    let (status, out) = api.post(&format!("{CONTACTS}/batch/create"), body).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{out}");
    assert_eq!(out["results"].as_array().map(Vec::len), Some(1));
    assert_eq!(out["results"][0]["objectWriteTraceId"], "t0");
    let fresh_id = out["results"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(out["numErrors"], 2);
    let existing = &out["errors"][0];
    assert_eq!(existing["status"], "error");
    assert_eq!(existing["category"], "CONFLICT");
    assert_eq!(
        existing["message"],
        format!("Contact already exists. Existing ID: {}", ids[0])
    );
    assert_eq!(existing["context"]["objectWriteTraceId"], json!(["t1"]));
    let twin = &out["errors"][1];
    assert_eq!(
        twin["message"],
        format!("Contact already exists. Existing ID: {fresh_id}"),
        "the later of two clashing inputs names the earlier one's new id"
    );
    assert_eq!(twin["context"]["objectWriteTraceId"], json!(["t2"]));
    assert_eq!(sb.contact_count(), 2);

    let untraced = json!({"inputs": [{"properties": {"email": "c0@example.com"}}]});
    let (status, _) = api
        .post(&format!("{CONTACTS}/batch/create"), untraced)
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "without trace ids the whole batch is still refused"
    );
}

#[tokio::test]
async fn a_per_input_conflict_on_a_unique_property_names_the_property_and_value() {
    let sb = start_with(Variants {
        conflicts: ConflictReport::PerInput,
        ..Variants::default()
    })
    .await;
    let api = Api::new(&sb);
    unique_property(&api, "crm_sync_contact_id").await;
    let (status, first) = api
        .post(
            CONTACTS,
            json!({"properties": {"email": "u17@example.com", "crm_sync_contact_id": "17"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let body = traced(&[
        json!({"email": "other@example.com", "crm_sync_contact_id": "17"}),
        json!({"email": "u18@example.com", "crm_sync_contact_id": "18"}),
    ]);
    let (status, out) = api.post(&format!("{CONTACTS}/batch/create"), body).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{out}");
    assert_eq!(
        out["errors"][0]["message"],
        format!(
            "A contact with the value \"17\" for the unique property \"crm_sync_contact_id\" already exists. Existing ID: {}",
            first["id"].as_str().expect("id")
        )
    );
    assert_eq!(
        out["errors"][0]["context"]["objectWriteTraceId"],
        json!(["t0"])
    );
    assert_eq!(out["results"][0]["properties"]["crm_sync_contact_id"], "18");
}

#[tokio::test]
async fn per_input_conflicts_in_batch_update_and_upsert_leave_the_other_inputs_applied() {
    let sb = start_with(Variants {
        conflicts: ConflictReport::PerInput,
        ..Variants::default()
    })
    .await;
    let api = Api::new(&sb);
    unique_property(&api, "local_id").await;
    let ids = batch_create(&api, 3, "p").await;
    let update = json!({"inputs": [
        {"id": ids[0], "properties": {"email": "p1@example.com"}, "objectWriteTraceId": "u0"},
        {"id": ids[1], "properties": {"firstname": "Kept"}, "objectWriteTraceId": "u1"},
        {"id": ids[2], "properties": {"local_id": "9"}, "objectWriteTraceId": "u2"},
    ]});
    let (status, out) = api.post(&format!("{CONTACTS}/batch/update"), update).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{out}");
    assert_eq!(
        out["errors"][0]["message"],
        format!("Contact already exists. Existing ID: {}", ids[1])
    );
    assert_eq!(
        out["errors"][0]["context"]["objectWriteTraceId"],
        json!(["u0"])
    );
    assert_eq!(result_ids(&out), [ids[1].clone(), ids[2].clone()]);
    assert_eq!(
        sb.contact(&ids[0]).expect("kept").email(),
        Some("p0@example.com"),
        "the clashing input changed nothing"
    );

    let upsert = json!({"inputs": [
        {"idProperty": "local_id", "id": "10", "properties": {"email": "p2@example.com"}, "objectWriteTraceId": "s0"},
        {"idProperty": "local_id", "id": "9", "properties": {"lastname": "Upserted"}, "objectWriteTraceId": "s1"},
        {"idProperty": "local_id", "id": "11", "properties": {"email": "new@example.com"}, "objectWriteTraceId": "s2"},
    ]});
    let (status, out) = api.post(&format!("{CONTACTS}/batch/upsert"), upsert).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{out}");
    assert_eq!(out["numErrors"], 1);
    assert_eq!(
        out["errors"][0]["message"],
        format!("Contact already exists. Existing ID: {}", ids[2])
    );
    assert_eq!(
        out["errors"][0]["context"]["objectWriteTraceId"],
        json!(["s0"])
    );
    let results = out["results"].as_array().expect("results");
    assert_eq!(results[0]["id"], ids[2].as_str());
    assert_eq!(results[0]["new"], false);
    assert_eq!(results[1]["new"], true);
    assert_eq!(sb.contact_count(), 4);
}

#[tokio::test]
async fn by_default_batch_read_reports_missing_ids_and_reads_merged_ones_as_the_survivor() {
    let sb = start_with(Variants::default()).await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 3, "d").await;
    merge_second_into_first(&api, &ids).await;
    assert_eq!(
        api.delete(&format!("{CONTACTS}/{}", ids[2])).await,
        StatusCode::NO_CONTENT
    );
    let body = read_body(&[&ids[1], "1", &ids[2]], json!(["email"]));
    let (status, out) = api.post(&format!("{CONTACTS}/batch/read"), body).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{out}");
    assert_eq!(
        result_ids(&out),
        [ids[0].clone()],
        "merged-away id reads as the survivor"
    );
    assert_eq!(out["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(out["errors"][0]["context"]["ids"], json!(["1", ids[2]]));

    let update = json!({"inputs": [
        {"id": ids[1], "properties": {"firstname": "Gone"}, "objectWriteTraceId": "m"},
    ]});
    let (status, out) = api.post(&format!("{CONTACTS}/batch/update"), update).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        out["results"],
        json!([]),
        "batch update leaves a merged-away id out silently"
    );
}

#[tokio::test]
async fn omitted_missing_ids_leave_unknown_archived_and_merged_ids_out_without_an_error() {
    let sb = start_with(Variants {
        missing_ids: MissingIds::Omitted,
        ..Variants::default()
    })
    .await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 4, "o").await;
    merge_second_into_first(&api, &ids).await;
    assert_eq!(
        api.delete(&format!("{CONTACTS}/{}", ids[2])).await,
        StatusCode::NO_CONTENT
    );
    let body = read_body(&[&ids[0], &ids[1], "1", &ids[2], &ids[3]], json!(["email"]));
    let (status, out) = api.post(&format!("{CONTACTS}/batch/read"), body).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(result_ids(&out), [ids[0].clone(), ids[3].clone()]);
    assert!(out.get("errors").is_none() && out.get("numErrors").is_none());

    let update = json!({"inputs": [
        {"id": ids[1], "properties": {"firstname": "X"}, "objectWriteTraceId": "merged"},
        {"id": "1", "properties": {"firstname": "X"}, "objectWriteTraceId": "unknown"},
        {"id": ids[2], "properties": {"firstname": "X"}, "objectWriteTraceId": "archived"},
        {"id": ids[3], "properties": {"firstname": "Changed"}, "objectWriteTraceId": "live"},
    ]});
    let (status, out) = api.post(&format!("{CONTACTS}/batch/update"), update).await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(result_ids(&out), [ids[3].clone()]);
    assert!(out.get("errors").is_none());

    let (status, single) = api.get(&format!("{CONTACTS}/{}", ids[1])).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a single GET still reads the survivor"
    );
    assert_eq!(single["id"], ids[0].as_str());
}

#[tokio::test]
async fn all_reported_missing_ids_report_a_merged_away_id_in_batch_update() {
    let sb = start_with(Variants {
        missing_ids: MissingIds::AllReported,
        ..Variants::default()
    })
    .await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 2, "a").await;
    merge_second_into_first(&api, &ids).await;
    let update = json!({"inputs": [
        {"id": ids[1], "properties": {"firstname": "X"}, "objectWriteTraceId": "merged"},
    ]});
    let (status, out) = api.post(&format!("{CONTACTS}/batch/update"), update).await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{out}");
    assert_eq!(out["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(out["errors"][0]["context"]["ids"], json!([ids[1]]));
    assert_eq!(
        out["errors"][0]["context"]["objectWriteTraceId"],
        json!(["merged"])
    );
}

fn problems_named(message: &Value) -> usize {
    message
        .as_str()
        .unwrap_or("")
        .matches("\"isValid\":false")
        .count()
}

#[tokio::test]
async fn a_validation_error_names_every_bad_value_by_default_or_only_the_first() {
    for (how, expected) in [(ValidationReport::Every, 2), (ValidationReport::First, 1)] {
        let sb = start_with(Variants {
            validation: how,
            ..Variants::default()
        })
        .await;
        let api = Api::new(&sb);
        let bad = json!({"properties": {"email": "bad@", "favorite_food": "pizza"}});
        let (status, err) = api.post(CONTACTS, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(err["category"], "VALIDATION_ERROR");
        assert_eq!(problems_named(&err["message"]), expected, "{how:?}: {err}");
        assert!(
            err["message"]
                .as_str()
                .unwrap_or("")
                .contains("INVALID_EMAIL")
        );

        let batch = json!({"inputs": [
            {"properties": {"email": "one@"}},
            {"properties": {"email": "two@"}},
        ]});
        let (status, err) = api.post(&format!("{CONTACTS}/batch/create"), batch).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(problems_named(&err["message"]), expected, "{how:?}: {err}");
        assert!(err["message"].as_str().unwrap_or("").contains("one@"));

        let dup = json!({"inputs": [
            {"id": "1", "properties": {}}, {"id": "1", "properties": {}},
            {"id": "2", "properties": {}}, {"id": "2", "properties": {}},
        ]});
        let (status, err) = api.post(&format!("{CONTACTS}/batch/update"), dup).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let named = err["context"]["ids"].as_array().map_or(0, Vec::len);
        assert_eq!(named, expected, "duplicate ids named: {err}");
    }
}

#[tokio::test]
async fn requested_properties_without_a_value_are_omitted_by_default() {
    let sb = start_with(Variants::default()).await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 1, "e").await;
    let (_, one) = api
        .get(&format!("{CONTACTS}/{}?properties=email,phone", ids[0]))
        .await;
    assert!(one["properties"].get("phone").is_none(), "{one}");
    assert_eq!(one["properties"]["email"], "e0@example.com");
}

#[tokio::test]
async fn null_empty_values_show_every_requested_property_without_a_value_as_null() {
    let sb = start_with(Variants {
        empty_values: EmptyValues::Null,
        ..Variants::default()
    })
    .await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 2, "n").await;
    let (status, one) = api
        .get(&format!(
            "{CONTACTS}/{}?properties=email,phone,no_such_property",
            ids[0]
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["properties"]["phone"], Value::Null);
    assert!(
        one["properties"]
            .as_object()
            .is_some_and(|p| p.contains_key("phone"))
    );
    assert!(
        one["properties"].get("no_such_property").is_none(),
        "properties that do not exist are ignored, not null"
    );
    assert_eq!(one["properties"]["email"], "n0@example.com");

    let (_, list) = api.get(&format!("{CONTACTS}?limit=1")).await;
    assert_eq!(list["results"][0]["properties"]["lastname"], Value::Null);

    let (_, read) = api
        .post(
            &format!("{CONTACTS}/batch/read"),
            read_body(&[&ids[0]], json!(["company"])),
        )
        .await;
    assert_eq!(read["results"][0]["properties"]["company"], Value::Null);

    let (_, updated) = api
        .post(
            &format!("{CONTACTS}/batch/update"),
            json!({"inputs": [{"id": ids[0], "properties": {"firstname": ""}}]}),
        )
        .await;
    assert_eq!(
        updated["results"][0]["properties"]["firstname"],
        Value::Null,
        "{updated}"
    );

    let (_, found) = search(&api, json!({"properties": ["jobtitle"], "limit": 1})).await;
    assert_eq!(
        found["results"][0]["properties"]["jobtitle"],
        Value::Null,
        "{found}"
    );

    let (_, merged) = api
        .post(
            &format!("{CONTACTS}/merge"),
            json!({"primaryObjectId": ids[0], "objectIdToMerge": ids[1]}),
        )
        .await;
    assert_eq!(merged["properties"]["lastname"], Value::Null, "{merged}");
}

#[tokio::test]
async fn search_results_can_lack_lastmodifieddate_while_still_sorting_on_it() {
    for (modified, expect_key) in [
        (SearchModified::Returned, true),
        (SearchModified::Null, true),
        (SearchModified::Omitted, false),
    ] {
        let sb = start_with(Variants {
            search_modified: modified,
            ..Variants::default()
        })
        .await;
        let api = Api::new(&sb);
        let ids = batch_create(&api, 2, "s").await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        api.patch(
            &format!("{CONTACTS}/{}", ids[0]),
            json!({"properties": {"lastname": "Later"}}),
        )
        .await;
        let body = json!({
            "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GT", "value": "0"}]}],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}],
            "properties": ["email", "lastmodifieddate"], "limit": 10,
        });
        let (status, out) = search(&api, body).await;
        assert_eq!(status, StatusCode::OK, "{out}");
        assert_eq!(
            result_ids(&out),
            [ids[0].clone(), ids[1].clone()],
            "{modified:?}"
        );
        let props = out["results"][0]["properties"]
            .as_object()
            .expect("properties");
        assert_eq!(
            props.contains_key("lastmodifieddate"),
            expect_key,
            "{modified:?}"
        );
        let value_present = props.get("lastmodifieddate").is_some_and(Value::is_string);
        assert_eq!(value_present, modified == SearchModified::Returned);
        let (_, single) = api.get(&format!("{CONTACTS}/{}", ids[0])).await;
        assert!(
            single["properties"]["lastmodifieddate"].is_string(),
            "only search answers lose it"
        );
    }
}

/// Batch-reads 20 records through a sandbox with `order` and 5xx faults; returns the ids in
/// answer order of every answered call and the status of every call.
async fn ordered_run(order: ResultOrder, seed: u64) -> (Vec<Vec<String>>, Vec<u16>, Vec<String>) {
    let sb = start(
        SandboxArgs {
            fault_5xx: 0.3,
            rng_seed: Some(seed),
            ..args()
        }
        .with_variants(Variants {
            result_order: order,
            ..Variants::default()
        }),
    )
    .await;
    let api = Api::new(&sb);
    let ids = sb.seed_contacts(20);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut orders = Vec::new();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let (status, out) = api
            .post(
                &format!("{CONTACTS}/batch/read"),
                read_body(&refs, json!(["email"])),
            )
            .await;
        statuses.push(status.as_u16());
        if status == StatusCode::OK {
            orders.push(result_ids(&out));
        }
    }
    (orders, statuses, ids)
}

#[tokio::test]
async fn batch_results_come_in_input_order_by_default_or_shuffled_repeatably() {
    let (in_order, statuses, ids) = ordered_run(ResultOrder::Input, 11).await;
    assert!(in_order.iter().all(|o| *o == ids), "input order by default");
    let (shuffled, shuffled_statuses, _) = ordered_run(ResultOrder::Shuffled, 11).await;
    assert_eq!(
        statuses, shuffled_statuses,
        "shuffling draws from its own stream: the same faults hit the same requests"
    );
    assert!(shuffled.iter().any(|o| *o != ids), "{shuffled:?}");
    for o in &shuffled {
        let mut sorted = o.clone();
        sorted.sort();
        assert_eq!(sorted, ids, "a permutation of the found records");
    }
    let (again, _, _) = ordered_run(ResultOrder::Shuffled, 11).await;
    assert_eq!(shuffled, again, "the same seed shuffles the same way");
}

#[tokio::test]
async fn shuffled_results_apply_to_batch_writes_too() {
    let sb = start_with(Variants {
        result_order: ResultOrder::Shuffled,
        ..Variants::default()
    })
    .await;
    let api = Api::new(&sb);
    let (status, out) = api
        .post(&format!("{CONTACTS}/batch/create"), emails(30, "w"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let answered = result_ids(&out);
    let mut stored: Vec<String> = sb.contacts().into_iter().map(|c| c.id).collect();
    assert_ne!(answered, stored, "not in input (= id) order");
    let mut sorted = answered.clone();
    sorted.sort();
    stored.sort();
    assert_eq!(sorted, stored);
}

async fn put_config(sb: &SandboxHandle, body: Value) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .put(format!("{}/_sandbox/config", sb.base_url()))
        .json(&body)
        .send()
        .await
        .expect("answer");
    let status = resp.status();
    (status, resp.json().await.expect("json"))
}

async fn get_config(sb: &SandboxHandle) -> Value {
    reqwest::get(format!("{}/_sandbox/config", sb.base_url()))
        .await
        .expect("answer")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn the_admin_config_shows_and_changes_the_variants_at_run_time() {
    let sb = start(args()).await;
    assert_eq!(
        get_config(&sb).await,
        json!({"conflicts": "whole-batch", "missing_ids": "reported", "validation": "every",
               "empty_values": "omitted", "search_modified": "returned", "result_order": "input"})
    );
    let (status, now) = put_config(&sb, json!({"missing_ids": "omitted"})).await;
    assert_eq!(status, StatusCode::OK, "{now}");
    assert_eq!(now["missing_ids"], "omitted");
    assert_eq!(
        now["conflicts"], "whole-batch",
        "a partial update keeps the rest"
    );
    assert_eq!(sb.variants().missing_ids, MissingIds::Omitted);
    let api = Api::new(&sb);
    let (status, out) = api
        .post(
            &format!("{CONTACTS}/batch/read"),
            read_body(&["1"], json!([])),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "applies from the next request: {out}"
    );

    let (status, err) = put_config(&sb, json!({"colour": "red"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = err["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("unknown field `colour`"), "{message}");
    let (status, err) = put_config(&sb, json!({"conflicts": "sometimes"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = err["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("per-input"),
        "names the allowed values: {message}"
    );
    assert_eq!(
        sb.variants().conflicts,
        ConflictReport::WholeBatch,
        "a refused change changes nothing"
    );

    sb.set_variants(Variants::alternative());
    assert_eq!(get_config(&sb).await["result_order"], "shuffled");
    sb.reset();
    assert_eq!(
        sb.variants(),
        Variants::alternative(),
        "a reset keeps the variants"
    );
}

#[test]
fn the_sandbox_command_takes_a_flag_per_variant() {
    use clap::Parser;
    use crm_sync::cli::{Cli, Command};
    let parse = |flags: &[&str]| -> Variants {
        let argv = ["crm-sync", "sandbox"].iter().chain(flags).copied();
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Sandbox { args } => args.variants,
            other => panic!("not the sandbox command: {other:?}"),
        }
    };
    assert_eq!(parse(&[]), Variants::default());
    let all = parse(&[
        "--conflicts",
        "per-input",
        "--missing-ids",
        "omitted",
        "--validation",
        "first",
        "--empty-values",
        "null",
        "--search-modified",
        "null",
        "--result-order",
        "shuffled",
    ]);
    assert_eq!(all, Variants::alternative());
    assert_eq!(
        parse(&["--missing-ids", "all-reported"]).missing_ids,
        MissingIds::AllReported
    );
    assert!(Cli::try_parse_from(["crm-sync", "sandbox", "--conflicts", "never"]).is_err());
}

#[tokio::test]
async fn every_profile_creates_and_reads_back_a_batch() {
    for profile in HubSpotProfile::all() {
        let sb = start(args().with_variants(profile.variants())).await;
        assert_eq!(sb.variants(), profile.variants());
        let api = Api::new(&sb);
        let mut ids = batch_create(&api, 5, "pr").await;
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let (status, out) = api
            .post(
                &format!("{CONTACTS}/batch/read"),
                read_body(&refs, json!(["email"])),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{}: {out}", profile.name());
        let mut read = result_ids(&out);
        read.sort();
        ids.sort();
        assert_eq!(read, ids, "{}", profile.name());
    }
    assert_eq!(HubSpotProfile::Documented.variants(), Variants::default());
    assert_eq!(
        HubSpotProfile::Alternative.variants(),
        Variants::alternative()
    );
}

// ---- state across restarts ---------------------------------------------------------------

#[tokio::test]
async fn a_resumed_sandbox_keeps_merges_archives_and_the_variants_in_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with_state = || SandboxArgs {
        state_file: Some(dir.path().join("state.json")),
        ..args()
    };
    let sb = start(with_state()).await;
    let api = Api::new(&sb);
    let ids = batch_create(&api, 3, "kept").await;
    let (status, _) = api
        .post(
            &format!("{CONTACTS}/merge"),
            json!({"primaryObjectId": ids[0], "objectIdToMerge": ids[1]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        api.delete(&format!("{CONTACTS}/{}", ids[2])).await,
        StatusCode::NO_CONTENT
    );
    let (status, _) = put_config(&sb, json!({"missing_ids": "omitted"})).await;
    assert_eq!(status, StatusCode::OK);
    let token = sb.access_token().to_owned();
    sb.shutdown().await.expect("stops and saves");

    let sb = start(with_state()).await;
    assert!(sb.resumed());
    assert_eq!(sb.access_token(), token);
    let api = Api::new(&sb);
    let (status, read) = api.get(&format!("{CONTACTS}/{}", ids[1])).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(
        read["id"],
        ids[0].as_str(),
        "the merged-away id resolves to the survivor"
    );
    let archived: Vec<String> = sb.archived_contacts().into_iter().map(|c| c.id).collect();
    assert_eq!(archived, vec![ids[2].clone()]);
    let (status, found) = api
        .get(&format!("{CONTACTS}/kept1@example.com?idProperty=email"))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the merged email still finds the survivor"
    );
    assert_eq!(found["id"], ids[0].as_str());
    assert_eq!(get_config(&sb).await["missing_ids"], "omitted");
    sb.shutdown().await.expect("stops");
}

#[tokio::test]
async fn a_sandbox_saves_a_change_within_the_debounce_without_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let sb = start(SandboxArgs {
        state_file: Some(path.clone()),
        ..args()
    })
    .await;
    let before = std::fs::read_to_string(&path).expect("a new account is saved at start");
    batch_create(&Api::new(&sb), 1, "soon").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let after = std::fs::read_to_string(&path).expect("state file");
    assert!(
        !before.contains("soon0@example.com") && after.contains("soon0@example.com"),
        "saved while running (as a kill -9 would find it)"
    );
    // Kept from view: it holds the app's secret.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    drop(sb);
}

#[tokio::test]
async fn after_a_crash_a_resumed_sandbox_never_issues_an_id_again_and_after_a_clean_stop_goes_on_exactly()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.json");
    let with_state = || SandboxArgs {
        state_file: Some(path.clone()),
        ..args()
    };
    let sb = start(with_state()).await;
    let kept = batch_create(&Api::new(&sb), 3, "kept").await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // What a kill -9 leaves on disk: the last save, without the moment before the crash.
    let on_disk = std::fs::read(&path).expect("saved while running");
    let lost = batch_create(&Api::new(&sb), 2, "lost").await;
    drop(sb);
    // The dropped sandbox's saver writes the lost changes within its debounce; the crash
    // is that they never reached the disk.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    std::fs::write(&path, &on_disk).expect("the file as the crash left it");

    let sb = start(with_state()).await;
    assert!(sb.resumed());
    let api = Api::new(&sb);
    for id in &kept {
        assert_eq!(api.get(&format!("{CONTACTS}/{id}")).await.0, StatusCode::OK);
    }
    let new = batch_create(&api, 2, "new").await;
    let number = |id: &String| id.parse::<u64>().expect("a numeric id");
    for id in &new {
        assert!(
            !lost.contains(id),
            "{id} was issued before the crash to another contact"
        );
        assert!(
            lost.iter().all(|l| number(id) > number(l)),
            "new ids go on after every id issued before the crash: {new:?} after {lost:?}"
        );
    }

    // A graceful stop loses nothing, and its ids go on without a gap.
    sb.shutdown().await.expect("stops and saves");
    let sb = start(with_state()).await;
    let next = batch_create(&Api::new(&sb), 1, "next").await;
    assert_eq!(
        number(&next[0]),
        number(&new[1]) + 1,
        "{next:?} after {new:?}"
    );
    sb.shutdown().await.expect("stops");
}
