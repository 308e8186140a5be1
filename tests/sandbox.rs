//! The HubSpot sandbox, spoken to over real HTTP on 127.0.0.1 the way a HubSpot client would.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crm_sync::sandbox::{Sandbox, SandboxArgs, SandboxHandle};
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
