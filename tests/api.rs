//! The HTTP API, specified through a real server on 127.0.0.1 and a real HTTP client.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::net::SocketAddr;

use common::TestDb;
use crm_sync::api::{self, AppState};
use crm_sync::secret::Secret;
use crm_sync::store::{NewContact, Store};
use crm_sync::webhooks::{WebhookEvent, process_events};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "test-api-token-3f9c2b7e";

/// Operations that are public on purpose (INTERFACE §4.1); every other one must require the token.
/// The install page and sign-in check the operator themselves, the callbacks the OAuth `state`,
/// the webhook route HubSpot's signature.
const PUBLIC_OPERATIONS: [(&str, &str); 11] = [
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/api/install"),
    ("post", "/login"),
    ("post", "/logout"),
    ("get", "/oauth-callback"),
    ("get", "/api/install/oauth-callback"),
    ("post", "/webhooks/hubspot"),
    ("get", "/"),
    ("post", "/disconnect"),
];

/// A running API server on a free loopback port.
struct TestServer {
    addr: SocketAddr,
    store: Store,
    http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    async fn start(db: &TestDb) -> TestServer {
        TestServer::start_with_token(db, TOKEN).await
    }

    async fn start_with_token(db: &TestDb, token: &str) -> TestServer {
        TestServer::start_with(db, token, Vec::new()).await
    }

    async fn start_with(db: &TestDb, token: &str, cors_origins: Vec<String>) -> TestServer {
        let store = db.store().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a free loopback port");
        let addr = listener.local_addr().expect("bound address");
        let state =
            AppState::new(store.clone(), Secret::new(token)).with_cors_origins(cors_origins);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(api::serve(listener, state, async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            store,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("HTTP client"),
            shutdown: Some(tx),
            task,
        }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// GET with the right token.
    async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(self.url(path_and_query))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request");
        json_of(resp).await
    }

    /// GET without any Authorization header.
    async fn get_anonymous(&self, path_and_query: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(self.url(path_and_query))
            .send()
            .await
            .expect("request");
        json_of(resp).await
    }

    async fn seed(&self, n: usize) {
        let rows: Vec<NewContact> = (0..n)
            .map(|i| NewContact {
                email: Some(format!("Person{i}@Example.com")),
                first_name: Some(format!("First{i}")),
                last_name: Some(format!("Last{i}")),
            })
            .collect();
        let inserted = self.store.insert_contacts(&rows).await.expect("seed");
        assert_eq!(inserted, n as u64);
    }

    /// Signals shutdown and waits for `serve` to return.
    async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.expect("serve task")
    }
}

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("a JSON body for {status}, got {text:?}: {e}"));
    (status, body)
}

/// Asserts the error envelope `{"error":{"code","message"}}` with a non-empty message.
fn assert_envelope(body: &Value, code: &str) -> String {
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("no `error` in {body}"));
    assert_eq!(error["code"], code, "{body}");
    let message = error["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {body}"));
    assert!(!message.is_empty(), "{body}");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only `error`: {body}"
    );
    message.to_owned()
}

fn ids_of(page: &Value) -> Vec<i64> {
    page["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {page}"))
        .iter()
        .map(|c| c["id"].as_i64().expect("integer id"))
        .collect()
}

fn next_after(page: &Value) -> Option<String> {
    page.get("paging").map(|p| {
        p["next"]["after"]
            .as_str()
            .unwrap_or_else(|| panic!("paging without next.after: {page}"))
            .to_owned()
    })
}

/// Sends raw bytes and reads the answer until the server closes: (status, body).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(request).await.expect("send");
    read_answer(&mut conn).await
}

async fn read_answer(conn: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.expect("read answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------- health

#[tokio::test]
async fn healthz_answers_ok_without_a_token() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    let (status, body) = server.get_anonymous("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}

backend_tests! {
    async fn readyz_is_200_while_the_database_answers_and_503_when_it_does_not(db: TestDb) {
        let server = TestServer::start(&db).await;
        let (status, body) = server.get_anonymous("/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "ok");

        server.store.close().await;
        let (status, body) = server.get_anonymous("/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_envelope(&body, "database_unavailable");
        // Liveness does not depend on the database.
        assert_eq!(server.get_anonymous("/healthz").await.0, StatusCode::OK);
    }

    async fn contacts_answer_503_without_details_when_the_database_is_gone(db: TestDb) {
        let server = TestServer::start(&db).await;
        server.store.close().await;
        let (status, body) = server.get("/contacts").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let message = assert_envelope(&body, "database_unavailable");
        for leak in ["pool", "sqlx", "sqlite", "postgres", "SELECT"] {
            assert!(!message.to_lowercase().contains(&leak.to_lowercase()), "{message}");
        }
    }
}

// ---------------------------------------------------------------- contacts deleted in HubSpot

impl TestServer {
    /// POST with the right token.
    async fn post(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request");
        json_of(resp).await
    }

    /// The page at `path` as text, with the right token.
    async fn text(&self, path: &str) -> String {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("request");
        resp.text().await.expect("body")
    }

    /// Links the row with `email` to `hs` with the user's own SQL (as a sync would have).
    async fn link(&self, email: &str, hs: &str) {
        const SQL: &str = "UPDATE contacts SET hs_object_id = $1 WHERE email = $2";
        if let Some(pool) = self.store.pg_pool() {
            sqlx::query(SQL)
                .bind(hs)
                .bind(email)
                .execute(pool)
                .await
                .expect("link");
        } else {
            let pool = self.store.sqlite_pool().expect("a pool");
            sqlx::query(SQL)
                .bind(hs)
                .bind(email)
                .execute(pool)
                .await
                .expect("link");
        }
    }
}

/// A HubSpot webhook event deleting `object_id` (`kind`: `contact.deletion` or
/// `contact.privacyDeletion`).
fn deletion(event_id: u64, kind: &str, object_id: u64) -> WebhookEvent {
    WebhookEvent::from_json(serde_json::json!({
        "eventId": event_id, "subscriptionId": 1, "portalId": 1, "occurredAt": 1_700_000_000_000_i64,
        "subscriptionType": kind, "attemptNumber": 0, "objectId": object_id, "appId": 1,
    }))
    .expect("an event")
}

backend_tests! {
    async fn contacts_deleted_in_hubspot_are_marked_listed_counted_and_restored_only_on_request(db: TestDb) {
        let server = TestServer::start(&db).await;
        server.seed(3).await;
        server.link("person0@example.com", "101").await;
        server.link("person1@example.com", "102").await;
        process_events(
            &server.store,
            &[deletion(1, "contact.deletion", 101), deletion(2, "contact.privacyDeletion", 102)],
        )
        .await
        .expect("the deletion webhooks");

        let (_, all) = server.get("/contacts").await;
        let gone = &all["results"][0];
        assert_eq!(gone["hs_object_id"], Value::Null, "the link is cleared");
        assert_eq!(gone["email"], "person0@example.com", "the row's own data stays");
        assert_eq!(gone["hubspot_deleted"]["reason"], "deleted");
        assert_eq!(gone["hubspot_deleted"]["hs_object_id"], "101");
        let at = gone["hubspot_deleted"]["at"].as_str().expect("a time");
        assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
        assert_eq!(all["results"][1]["hubspot_deleted"]["reason"], "privacy_deletion");
        assert_eq!(all["results"][2]["hubspot_deleted"], Value::Null);
        let ids = ids_of(&all);
        let (_, deleted) = server.get("/contacts?hubspot_deleted=true").await;
        assert_eq!(ids_of(&deleted), ids[..2]);
        let (_, live) = server.get("/contacts?hubspot_deleted=false").await;
        assert_eq!(ids_of(&live), ids[2..]);

        let metrics = server.text("/metrics").await;
        assert!(metrics.contains("# TYPE crm_sync_contacts_hubspot_deleted gauge"), "{metrics}");
        assert!(metrics.contains("crm_sync_contacts_hubspot_deleted{reason=\"deleted\"} 1\n"), "{metrics}");
        assert!(metrics.contains("crm_sync_contacts_hubspot_deleted{reason=\"privacy_deletion\"} 1\n"), "{metrics}");
        let status = server.text("/").await;
        assert!(status.contains("id=\"contacts-tombstoned\">2<"), "{status}");
        assert!(status.contains("never pushed again until restored (privacy deletions: 1)"), "{status}");

        let (status, restored) = server.post(&format!("/api/contacts/{}/restore", ids[0])).await;
        assert_eq!(status, StatusCode::OK, "{restored}");
        assert_eq!(restored["id"], ids[0]);
        assert_eq!(restored["hubspot_deleted"], Value::Null);
        let (_, deleted) = server.get("/contacts?hubspot_deleted=true").await;
        assert_eq!(ids_of(&deleted), ids[1..2], "only the other stays marked");

        let (status, again) = server.post(&format!("/api/contacts/{}/restore", ids[0])).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_envelope(&again, "conflict");
        let (status, unknown) = server.post("/api/contacts/999999/restore").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_envelope(&unknown, "not_found");
        assert_refused(&server, "post", &format!("/api/contacts/{}/restore", ids[1])).await;
        let (_, deleted) = server.get("/contacts?hubspot_deleted=true").await;
        assert_eq!(ids_of(&deleted), ids[1..2], "a refused request restores nothing");
    }
}

// ---------------------------------------------------------------- contacts paging

backend_tests! {
    async fn an_empty_table_is_one_page_without_paging(db: TestDb) {
        let server = TestServer::start(&db).await;
        let (status, page) = server.get("/contacts").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page, serde_json::json!({"results": []}));
    }

    async fn a_page_filled_exactly_is_the_last_page(db: TestDb) {
        let server = TestServer::start(&db).await;
        server.seed(5).await;
        let (status, page) = server.get("/contacts?limit=5").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids_of(&page).len(), 5);
        assert_eq!(next_after(&page), None, "no empty page after a full one: {page}");
    }

    async fn one_row_more_than_the_limit_makes_exactly_one_next_page(db: TestDb) {
        let server = TestServer::start(&db).await;
        server.seed(6).await;
        let (_, first) = server.get("/contacts?limit=5").await;
        assert_eq!(ids_of(&first).len(), 5);
        let after = next_after(&first).expect("a next page");
        let (status, second) = server.get(&format!("/contacts?limit=5&after={after}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids_of(&second).len(), 1);
        assert_eq!(next_after(&second), None);
        assert!(ids_of(&first).iter().all(|id| *id < ids_of(&second)[0]));
    }

    async fn walking_1000_contacts_by_100_visits_each_exactly_once(db: TestDb) {
        let server = TestServer::start(&db).await;
        server.seed(1000).await;
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let query = match &after {
                Some(a) => format!("/contacts?limit=100&after={a}"),
                None => "/contacts?limit=100".to_owned(),
            };
            let (status, page) = server.get(&query).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            pages += 1;
            seen.extend(ids_of(&page));
            after = next_after(&page);
            if after.is_none() {
                break;
            }
            assert!(pages < 20, "paging does not end");
        }
        assert_eq!(pages, 10);
        assert_eq!(seen.len(), 1000);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "ascending, no repeats");

        // The edges of the allowed range on the same data.
        let (_, all) = server.get("/contacts?limit=1000").await;
        assert_eq!(ids_of(&all), seen);
        assert_eq!(next_after(&all), None);
        let (_, one) = server.get("/contacts?limit=1").await;
        assert_eq!(ids_of(&one), vec![seen[0]]);
        let (_, next) = server.get(&format!("/contacts?limit=1&after={}", next_after(&one).unwrap())).await;
        assert_eq!(ids_of(&next), vec![seen[1]]);
        // Without a limit, a page has 100 contacts.
        let (_, default) = server.get("/contacts").await;
        assert_eq!(ids_of(&default), seen[..100].to_vec());
    }

    async fn a_contact_has_the_documented_fields(db: TestDb) {
        let server = TestServer::start(&db).await;
        server.seed(1).await;
        let (_, page) = server.get("/contacts").await;
        let contact = &page["results"][0];
        let mut keys: Vec<&str> = contact.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["created_at", "email", "first_name", "hs_object_id", "hubspot_deleted", "id", "last_name", "updated_at"]
        );
        assert_eq!(contact["hubspot_deleted"], Value::Null, "not deleted in HubSpot");
        assert_eq!(contact["email"], "person0@example.com");
        assert_eq!(contact["first_name"], "First0");
        assert_eq!(contact["hs_object_id"], Value::Null);
        let created = contact["created_at"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(created).is_ok(), "{created}");
    }
}

#[tokio::test]
async fn a_limit_outside_1_to_1000_or_not_a_number_is_a_422_that_says_so() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    for bad in ["0", "1001", "abc", "-1", "", "1.5", "99999999999"] {
        let (status, body) = server.get(&format!("/contacts?limit={bad}")).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit={bad}: {body}"
        );
        let message = assert_envelope(&body, "invalid_parameter");
        assert!(message.contains("`limit`"), "limit={bad}: {message}");
        assert!(message.contains("from 1 to 1000"), "limit={bad}: {message}");
    }
}

#[tokio::test]
async fn a_malformed_after_cursor_is_a_422_that_says_so() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    server.seed(3).await;
    for bad in ["abc", "-5", "1e3", "%20"] {
        let (status, body) = server.get(&format!("/contacts?after={bad}")).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "after={bad}: {body}"
        );
        let message = assert_envelope(&body, "invalid_parameter");
        assert!(message.contains("after"), "after={bad}: {message}");
    }
    // An empty cursor is the first page; digits beyond every id are past the last one.
    let (status, page) = server.get("/contacts?after=").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids_of(&page).len(), 3);
    let (status, page) = server.get("/contacts?after=99999999999999999999999").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids_of(&page), Vec::<i64>::new());
    assert!(page.get("paging").is_none(), "{page}");
}

// ---------------------------------------------------------------- auth

/// Sends `method path` with the given Authorization header value (or none).
async fn call_with_auth(
    server: &TestServer,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
    let mut req = server.http.request(method.clone(), server.url(path));
    if let Some(value) = authorization {
        req = req.header(reqwest::header::AUTHORIZATION, value);
    }
    if method == reqwest::Method::POST || method == reqwest::Method::PUT {
        req = req.json(&serde_json::json!({}));
    }
    req.send().await.expect("request")
}

/// The Authorization values that must all be refused.
fn refused_credentials() -> [(Option<String>, &'static str); 6] {
    [
        (None, "missing"),
        (Some("Bearer wrong-token".into()), "wrong token"),
        (Some(format!("Bearer {TOKEN}x")), "token with a suffix"),
        (
            Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
            "token prefix",
        ),
        (Some(format!("Basic {TOKEN}")), "wrong scheme"),
        (Some("Bearer ".into()), "empty token"),
    ]
}

async fn assert_refused(server: &TestServer, method: &str, path: &str) {
    for (authorization, what) in refused_credentials() {
        let resp = call_with_auth(server, method, path, authorization.as_deref()).await;
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap()),
            Some("Bearer"),
            "{method} {path} ({what})"
        );
        let (status, body) = json_of(resp).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} ({what}): {body}"
        );
        assert_envelope(&body, "unauthorized");
    }
}

backend_tests! {
    async fn companies_page_by_id_like_contacts_and_show_their_link(db: TestDb) {
        let server = TestServer::start(&db).await;
        let batch: Vec<crm_sync::store::NewCompany> = (1..=3)
            .map(|i| crm_sync::store::NewCompany {
                name: Some(format!("Company {i}")),
                domain: Some(format!(" Company{i}.IO ")),
            })
            .collect();
        server.store.insert_companies(&batch).await.unwrap();
        let (status, first) = server.get("/companies?limit=2").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids_of(&first).len(), 2);
        assert_eq!(first["results"][0]["name"], "Company 1");
        assert_eq!(first["results"][0]["domain"], "company1.io");
        assert_eq!(first["results"][0]["hs_object_id"], Value::Null);
        assert_eq!(first["results"][0]["hubspot_deleted"], Value::Null);
        let after = next_after(&first).expect("a next page");
        let (_, second) = server.get(&format!("/companies?limit=2&after={after}")).await;
        assert_eq!(ids_of(&second).len(), 1);
        assert_eq!(next_after(&second), None, "the last page has no paging: {second}");
        let (status, body) = server.get("/companies?limit=0").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_envelope(&body, "invalid_parameter");
        let (status, body) = server.get("/companies?after=abc").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
}

#[tokio::test]
async fn companies_require_the_bearer_token() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    assert_refused(&server, "get", "/companies").await;
}

#[tokio::test]
async fn contacts_require_the_bearer_token() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    assert_refused(&server, "get", "/contacts").await;
    let resp = call_with_auth(
        &server,
        "get",
        "/contacts",
        Some(&format!("Bearer {TOKEN}")),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_401_says_whether_the_token_is_missing_or_wrong() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    let (_, missing) = server.get_anonymous("/contacts").await;
    assert!(assert_envelope(&missing, "unauthorized").contains("Authorization: Bearer"));
    let resp = call_with_auth(&server, "get", "/contacts", Some("Bearer nope")).await;
    let (_, wrong) = json_of(resp).await;
    assert!(assert_envelope(&wrong, "unauthorized").contains("not valid"));
    let resp = call_with_auth(&server, "get", "/contacts", Some("Basic dTpw")).await;
    let (_, scheme) = json_of(resp).await;
    assert!(assert_envelope(&scheme, "unauthorized").contains("Bearer scheme"));
}

#[tokio::test]
async fn an_empty_configured_token_opens_nothing() {
    let server = TestServer::start_with_token(&TestDb::sqlite().await, "").await;
    for authorization in [None, Some("Bearer "), Some("Bearer"), Some("Bearer \"\"")] {
        let resp = call_with_auth(&server, "get", "/contacts", authorization).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{authorization:?}");
    }
}

#[tokio::test]
async fn auth_is_checked_before_parameters() {
    // An anonymous caller learns nothing about the parameters of a protected route.
    let server = TestServer::start(&TestDb::sqlite().await).await;
    let (status, body) = server.get_anonymous("/contacts?limit=abc").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_envelope(&body, "unauthorized");
}

#[tokio::test]
async fn every_operation_of_the_served_document_is_public_by_name_or_refuses_a_missing_or_wrong_token()
 {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    let (status, doc) = server.get_anonymous("/api-docs/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    let mut protected = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let secured = op
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty());
            if secured {
                protected += 1;
                // Path parameters get a placeholder: auth is checked before them.
                let concrete = path.replace(['{', '}'], "");
                assert_refused(&server, method, &concrete).await;
            } else {
                assert!(
                    PUBLIC_OPERATIONS.contains(&(method.as_str(), path.as_str())),
                    "{method} {path} has no security requirement and is not on the public list"
                );
            }
        }
    }
    assert!(protected >= 1, "the document lists no protected operation");
}

// ---------------------------------------------------------------- errors

#[tokio::test]
async fn an_unknown_route_is_a_404_envelope() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    for path in [
        "/nope",
        "/api/nope",
        "/contacts/extra",
        "/api-docs/nope.json",
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        let message = assert_envelope(&body, "not_found");
        assert!(message.contains(path), "{message}");
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_405_envelope() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    for (method, path) in [
        ("post", "/contacts"),
        ("delete", "/contacts"),
        ("post", "/healthz"),
        ("put", "/readyz"),
    ] {
        let resp = call_with_auth(&server, method, path, Some(&format!("Bearer {TOKEN}"))).await;
        let (status, body) = json_of(resp).await;
        assert_eq!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {body}"
        );
        assert_envelope(&body, "method_not_allowed");
    }
}

#[tokio::test]
async fn a_405_lists_the_methods_of_the_path_in_allow() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    for (method, path, allow) in [
        ("delete", "/contacts", "GET, HEAD"),
        ("trace", "/readyz", "GET, HEAD"),
        ("put", "/api/jobs", "GET, HEAD, POST"),
        ("get", "/api/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/cancel", "POST"),
        ("patch", "/api/install", "GET, HEAD"),
        ("get", "/login", "POST"),
        ("get", "/webhooks/hubspot", "POST"),
        ("post", "/api-docs/openapi.json", "GET, HEAD"),
    ] {
        let resp = call_with_auth(&server, method, path, Some(&format!("Bearer {TOKEN}"))).await;
        assert_eq!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let header = resp
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header.as_deref(), Some(allow), "{method} {path}");
    }
}

// Bad JSON bodies (400, 415, 422) are specified on `POST /api/jobs`, the API's JSON-body
// route, in tests/api_jobs.rs.

#[tokio::test]
async fn a_body_declared_larger_than_1_mib_is_refused_with_413_before_it_is_sent() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    let request = format!(
        "POST /contacts HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        server.addr,
        2 * 1024 * 1024
    );
    let (status, body) = raw_exchange(server.addr, request.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_envelope(&body, "payload_too_large");
}

#[tokio::test]
async fn a_chunked_body_over_1_mib_is_refused_with_413() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    let mut request = format!(
        "POST /healthz HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.addr
    )
    .into_bytes();
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..(api::MAX_BODY_BYTES / chunk.len() + 1) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_exchange(server.addr, &request).await;
    assert_eq!(status, 413, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_envelope(&body, "payload_too_large");
}

// ---------------------------------------------------------------- docs and metrics

#[tokio::test]
async fn the_openapi_document_lists_contacts_with_bearer_auth() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    let (status, doc) = server.get_anonymous("/api-docs/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let list = &doc["paths"]["/contacts"]["get"];
    assert!(list.is_object(), "GET /contacts is documented");
    assert_eq!(list["security"][0]["ApiToken"], serde_json::json!([]));
    assert_eq!(
        doc["components"]["securitySchemes"]["ApiToken"]["scheme"],
        "bearer"
    );
    let params: Vec<&str> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["limit", "after", "hubspot_deleted"]);
    let restore = &doc["paths"]["/api/contacts/{id}/restore"]["post"];
    assert_eq!(restore["security"][0]["ApiToken"], serde_json::json!([]));
    assert_eq!(doc["servers"][0]["url"], "/");
}

#[tokio::test]
async fn the_openapi_document_says_what_the_server_does() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    let (_, doc) = server.get_anonymous("/api-docs/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    let job = &schemas["Job"];
    for field in [
        "error",
        "next_attempt_at",
        "started_at",
        "finished_at",
        "portal_id",
    ] {
        assert_eq!(job["properties"][field]["nullable"], true, "Job.{field}");
    }
    assert_eq!(
        schemas["JobProgress"]["properties"]["total"]["nullable"],
        true
    );
    assert_eq!(schemas["Contact"]["properties"]["email"]["nullable"], true);
    for field in ["object", "dry_run", "mode", "status", "direction"] {
        assert!(
            job["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from(field)),
            "Job.{field} is always sent"
        );
    }
    // A described reference is written `allOf: [{$ref}, {description}]`.
    let mode = &job["properties"]["mode"];
    let mode_ref = mode.get("$ref").unwrap_or(&mode["allOf"][0]["$ref"]);
    assert_eq!(mode_ref, "#/components/schemas/JobMode");
    assert_eq!(
        schemas["JobMode"]["enum"],
        serde_json::json!(["link", "upsert", "verbose"])
    );

    // The request: one closed schema per direction, `direction` required in each.
    let request = &schemas["JobRequest"];
    assert_eq!(request["discriminator"]["propertyName"], "direction");
    for (name, direction) in [("PushJobRequest", "push"), ("PullJobRequest", "pull")] {
        let variant = &schemas[name];
        assert_eq!(variant["required"][0], "direction", "{name}");
        assert_eq!(
            variant["properties"]["direction"]["enum"],
            serde_json::json!([direction])
        );
        assert_eq!(
            variant["properties"]["dry_run"]["type"], "boolean",
            "{name}: dry_run is a flag"
        );
        assert!(
            variant["additionalProperties"].is_object(),
            "{name} is closed"
        );
    }

    let statuses = |method: &str, path: &str| -> Vec<String> {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    for status in ["202", "400", "401", "415", "422"] {
        assert!(
            statuses("post", "/api/jobs").contains(&status.to_owned()),
            "{status}"
        );
    }
    for (method, path) in [("get", "/api/jobs"), ("get", "/contacts")] {
        assert!(
            statuses(method, path).contains(&"422".to_owned()),
            "{method} {path}"
        );
        assert!(
            !statuses(method, path).contains(&"400".to_owned()),
            "{method} {path}"
        );
    }
    assert!(!statuses("get", "/api/schedules").contains(&"422".to_owned()));

    // The public pages, as they really answer: HTML, redirects, and the webhook's JSON.
    let install = &doc["paths"]["/api/install"]["get"]["responses"];
    assert!(install["200"]["content"]["text/html; charset=utf-8"].is_object());
    assert!(install["401"]["content"]["text/html; charset=utf-8"].is_object());
    let login = &doc["paths"]["/login"]["post"];
    assert!(login["requestBody"]["content"]["application/x-www-form-urlencoded"].is_object());
    assert!(login["responses"]["303"]["headers"]["Location"].is_object());
    for path in ["/oauth-callback", "/api/install/oauth-callback"] {
        let callback = &doc["paths"][path]["get"];
        assert!(
            callback["responses"]["302"]["headers"]["Location"].is_object(),
            "{path}"
        );
        assert!(callback["responses"]["400"].is_object(), "{path}");
    }
    let webhook = &doc["paths"]["/webhooks/hubspot"]["post"]["responses"];
    assert!(webhook["200"]["content"]["application/json; charset=utf-8"].is_object());
    assert!(webhook["401"].is_object());
}

#[tokio::test]
async fn swagger_ui_is_served_as_html() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    for path in ["/api-docs", "/api-docs/"] {
        let resp = server
            .http
            .get(server.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(resp.text().await.unwrap().contains("swagger"));
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_reveal_no_secrets() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    server.get("/contacts?limit=7").await;
    server.get_anonymous("/contacts").await;
    server.get_anonymous("/secret-looking-path-4711").await;
    let resp = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let page = resp.text().await.unwrap();
    assert!(
        page.contains(r#"http_requests_total{route="/contacts",method="GET",status="200"} 1"#),
        "{page}"
    );
    assert!(
        page.contains(r#"http_requests_total{route="/contacts",method="GET",status="401"} 1"#),
        "{page}"
    );
    assert!(
        page.contains(r#"http_requests_total{route="unmatched",method="GET",status="404"} 1"#),
        "{page}"
    );
    for secret in [TOKEN, "secret-looking-path", "limit=7"] {
        assert!(!page.contains(secret), "{secret} leaked into /metrics");
    }
}

#[tokio::test]
async fn a_rate_limited_page_is_counted_under_its_own_route() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    let install = server.http.get(server.url("/api/install")).send().await;
    let status = install.expect("request").status();
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no OAuth app configured"
    );
    let page = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"http_requests_total{route="/api/install",method="GET","#),
        "{page}"
    );
}

// ---------------------------------------------------------------- shutdown

/// Polls `/metrics` until `n` requests are in flight (the poll itself included).
async fn wait_for_in_flight(server: &TestServer, n: u32) {
    let wanted = format!("http_requests_in_flight {n}\n");
    for _ in 0..500 {
        let page = server
            .http
            .get(server.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        if page.contains(&wanted) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never saw {wanted:?} in /metrics");
}

#[tokio::test]
async fn shutdown_stops_accepting_but_lets_an_in_flight_request_finish() {
    let mut server = TestServer::start(&TestDb::sqlite().await).await;
    let addr = server.addr;

    // A request whose body is only half sent stays in flight inside the server.
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 10\r\nConnection: close\r\n\r\n12345"
    );
    slow.write_all(head.as_bytes()).await.expect("send half");
    wait_for_in_flight(&server, 2).await;

    let _ = server.shutdown.take().expect("not yet stopped").send(());

    // The listener goes away while the request is still in flight...
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "the server kept accepting connections after shutdown"
    );
    assert!(
        !server.task.is_finished(),
        "serve returned with a request in flight"
    );

    // ...and the request still gets its full answer.
    slow.write_all(b"67890").await.expect("send the rest");
    let (status, body) = read_answer(&mut slow).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({"status": "ok"})
    );

    server.stop().await.expect("serve ends cleanly");
}

#[tokio::test]
async fn serve_returns_once_the_shutdown_future_resolves() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    assert_eq!(server.get_anonymous("/healthz").await.0, StatusCode::OK);
    let addr = server.addr;
    server.stop().await.expect("serve ends cleanly");
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

/// A browser's preflight for a token-carrying GET of `/contacts` from `origin`.
async fn preflight(server: &TestServer, origin: &str) -> reqwest::Response {
    server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/contacts"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .expect("preflight")
}

#[tokio::test]
async fn without_configured_origins_the_api_sends_no_cors_headers() {
    let server = TestServer::start(&TestDb::sqlite().await).await;
    let resp = server
        .http
        .get(server.url("/contacts"))
        .header("Origin", "https://app.example.com")
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get("access-control-allow-origin").is_none(),
        "a browser keeps other sites' pages out: {:?}",
        resp.headers()
    );
    let resp = preflight(&server, "https://app.example.com").await;
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_configured_origin_may_call_the_api_and_others_are_refused() {
    let allowed = "https://app.example.com";
    let server = TestServer::start_with(&TestDb::sqlite().await, TOKEN, vec![allowed.into()]).await;

    let resp = preflight(&server, allowed).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let headers = resp.headers();
    assert_eq!(headers["access-control-allow-origin"], allowed);
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    assert!(
        headers.get("access-control-allow-credentials").is_none(),
        "the token travels in a header, never in cookies"
    );

    let resp = server
        .http
        .get(server.url("/contacts"))
        .header("Origin", allowed)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["access-control-allow-origin"], allowed);

    let resp = server
        .http
        .get(server.url("/contacts"))
        .header("Origin", "https://evil.example")
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET");
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let (status, body) = json_of(resp).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let message = assert_envelope(&body, "invalid_request");
    assert!(message.contains("origin"), "{message}");
}

#[cfg(unix)]
#[tokio::test]
async fn shutdown_signal_resolves_on_sigterm() {
    use tokio::signal::unix::{SignalKind, signal};
    // Our own listener installs tokio's handler first, so SIGTERM cannot end the test process.
    let _keep_handler = signal(SignalKind::terminate()).expect("listen for SIGTERM");
    let mut stopping = tokio::spawn(crm_sync::startup::shutdown_signal());
    let pid = std::process::id().to_string();
    // The spawned future registers its own listener when first polled: send until it hears one.
    for _ in 0..100 {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success());
        if let Ok(done) =
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut stopping).await
        {
            done.expect("shutdown_signal task");
            return;
        }
    }
    panic!("shutdown_signal never resolved on SIGTERM");
}
