//! HubSpot webhooks without the HTTP route: the v3 signature (HubSpot's vectors, the ways a
//! request must fail, and the sandbox's real deliveries), the event model, redelivery dedupe
//! and the local effects of deletions and merges on every backend.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use crm_sync::hubspot::{Auth, ClientConfig, ContactCreate, HubSpotClient};
use crm_sync::ids::{ContactId, HsObjectId, LocalCompanyId, PortalId};
use crm_sync::sandbox::{self, Sandbox, SandboxArgs};
use crm_sync::secret::Secret;
use crm_sync::store::{MergeOutcome, NewCompany, NewContact, Store, Tombstone, TombstoneReason};
use crm_sync::webhooks::{
    AssociationChange, BatchError, EventKind, SignatureError, WebhookEvent, parse_batch,
    process_events, sign_v3, verify_v3,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;

const SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
const URI: &str = "https://www.example.com/webhook_uri";
/// The body of HubSpot's v1 example, also signed with v3 in API-NOTES §7.1.
const V1_BODY: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
const V1_TIMESTAMP: i64 = 1_564_113_600_000;
const V1_SIGNATURE_V3: &str = "DxmVAjFNa2xfF3YgQjdZP6TNcok9k1oaH7UXombPtvw=";

fn secret() -> Secret {
    Secret::new(SECRET)
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).unwrap()
}

/// Checks the v1-body request as received `after_ms` after it was signed.
fn check(
    method: &str,
    uri: &str,
    body: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    secret: &Secret,
    after_ms: i64,
) -> Result<(), SignatureError> {
    verify_v3(
        method,
        uri,
        body.as_bytes(),
        timestamp,
        signature,
        secret,
        at_ms(V1_TIMESTAMP + after_ms),
    )
}

// ---- signatures: what must pass ----------------------------------------------------------

#[test]
fn hubspots_published_v3_vector_passes() {
    let timestamp = 1_693_657_560_000_i64;
    let result = verify_v3(
        "POST",
        URI,
        b"{'example_field':'example_value'}",
        Some("1693657560000"),
        Some("K36dawei4A+QBNolUOqo7s91KQDWQ5MXZ/QufNYuk/Y="),
        &secret(),
        at_ms(timestamp + 1_000),
    );
    assert_eq!(result, Ok(()));
}

#[test]
fn the_v3_vector_over_hubspots_example_event_passes() {
    let ts = V1_TIMESTAMP.to_string();
    assert_eq!(
        check(
            "POST",
            URI,
            V1_BODY,
            Some(&ts),
            Some(V1_SIGNATURE_V3),
            &secret(),
            2_000
        ),
        Ok(())
    );
    assert_eq!(
        sign_v3("POST", URI, V1_BODY.as_bytes(), V1_TIMESTAMP, &secret()),
        V1_SIGNATURE_V3
    );
}

#[test]
fn a_request_exactly_five_minutes_old_still_passes() {
    let ts = V1_TIMESTAMP.to_string();
    assert_eq!(
        check(
            "POST",
            URI,
            V1_BODY,
            Some(&ts),
            Some(V1_SIGNATURE_V3),
            &secret(),
            300_000
        ),
        Ok(())
    );
}

#[test]
fn the_uri_is_signed_with_hubspots_listed_sequences_decoded() {
    // HubSpot signs `?email=a@b.c&tag=(x)`; the request line carries it percent-encoded.
    let signed_uri = "https://crm.example.com/webhooks/hubspot?email=a@b.c&tag=(x)";
    let received_uri = "https://crm.example.com/webhooks/hubspot?email=a%40b.c&tag=%28x%29";
    let signature = sandbox::sign_v3(SECRET, "POST", signed_uri, V1_BODY.as_bytes(), V1_TIMESTAMP);
    let ts = V1_TIMESTAMP.to_string();
    assert_eq!(
        check(
            "POST",
            received_uri,
            V1_BODY,
            Some(&ts),
            Some(&signature),
            &secret(),
            0
        ),
        Ok(())
    );
    // A sequence HubSpot does not list (%20) is signed as it is.
    let spaced = "https://crm.example.com/webhooks/hubspot?name=a%20b";
    let signature = sandbox::sign_v3(SECRET, "POST", spaced, V1_BODY.as_bytes(), V1_TIMESTAMP);
    assert_eq!(
        check(
            "POST",
            spaced,
            V1_BODY,
            Some(&ts),
            Some(&signature),
            &secret(),
            0
        ),
        Ok(())
    );
}

#[test]
fn signatures_agree_with_the_sandboxs_signer() {
    let bodies: [&[u8]; 3] = [b"", b"[]", "[{\"propertyValue\":\"Zoë 😀\"}]".as_bytes()];
    for body in bodies {
        for uri in [URI, "http://127.0.0.1:3001/webhooks/hubspot?x=1&y=2"] {
            let ours = sign_v3("POST", uri, body, V1_TIMESTAMP, &secret());
            let sandbox_signature = sandbox::sign_v3(SECRET, "POST", uri, body, V1_TIMESTAMP);
            assert_eq!(ours, sandbox_signature, "{uri}");
            let ts = V1_TIMESTAMP.to_string();
            let verified = verify_v3(
                "POST",
                uri,
                body,
                Some(&ts),
                Some(&sandbox_signature),
                &secret(),
                at_ms(V1_TIMESTAMP),
            );
            assert_eq!(verified, Ok(()), "{uri}");
        }
    }
}

// ---- signatures: what must fail ----------------------------------------------------------

#[test]
fn a_tampered_body_fails() {
    let ts = V1_TIMESTAMP.to_string();
    let tampered = V1_BODY.replace("\"objectId\":123", "\"objectId\":124");
    assert_eq!(
        check(
            "POST",
            URI,
            &tampered,
            Some(&ts),
            Some(V1_SIGNATURE_V3),
            &secret(),
            0
        ),
        Err(SignatureError::Mismatch)
    );
    let with_whitespace = format!("{V1_BODY}\n");
    assert_eq!(
        check(
            "POST",
            URI,
            &with_whitespace,
            Some(&ts),
            Some(V1_SIGNATURE_V3),
            &secret(),
            0
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_wrong_secret_fails() {
    let ts = V1_TIMESTAMP.to_string();
    let wrong = Secret::new("zzzzzzzz-yyyy-yyyy-yyyy-yyyyyyyyyyyy");
    assert_eq!(
        check(
            "POST",
            URI,
            V1_BODY,
            Some(&ts),
            Some(V1_SIGNATURE_V3),
            &wrong,
            0
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_wrong_uri_or_method_fails() {
    let ts = V1_TIMESTAMP.to_string();
    for uri in [
        "https://www.example.com/webhook_uri2",
        "http://www.example.com/webhook_uri",
        "https://evil.example.com/webhook_uri",
        "https://www.example.com/webhook_uri?x=1",
        // %5F (`_`) is not in HubSpot's list, so it is not decoded into the signed path.
        "https://www.example.com/webhook%5Furi",
    ] {
        assert_eq!(
            check(
                "POST",
                uri,
                V1_BODY,
                Some(&ts),
                Some(V1_SIGNATURE_V3),
                &secret(),
                0
            ),
            Err(SignatureError::Mismatch),
            "{uri}"
        );
    }
    assert_eq!(
        check(
            "PUT",
            URI,
            V1_BODY,
            Some(&ts),
            Some(V1_SIGNATURE_V3),
            &secret(),
            0
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_stale_or_future_timestamp_fails_even_with_a_valid_signature() {
    let ts = V1_TIMESTAMP.to_string();
    assert_eq!(
        check(
            "POST",
            URI,
            V1_BODY,
            Some(&ts),
            Some(V1_SIGNATURE_V3),
            &secret(),
            300_001
        ),
        Err(SignatureError::Stale { age_ms: 300_001 })
    );
    assert_eq!(
        check(
            "POST",
            URI,
            V1_BODY,
            Some(&ts),
            Some(V1_SIGNATURE_V3),
            &secret(),
            -300_001
        ),
        Err(SignatureError::FromTheFuture { ahead_ms: 300_001 })
    );
}

#[test]
fn a_timestamp_other_than_the_signed_one_fails() {
    // Fresh, but not the time that was signed: replaying an old signature with a new header.
    let later = (V1_TIMESTAMP + 1).to_string();
    assert_eq!(
        check(
            "POST",
            URI,
            V1_BODY,
            Some(&later),
            Some(V1_SIGNATURE_V3),
            &secret(),
            0
        ),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn missing_headers_fail_with_distinct_errors() {
    let ts = V1_TIMESTAMP.to_string();
    assert_eq!(
        check("POST", URI, V1_BODY, Some(&ts), None, &secret(), 0),
        Err(SignatureError::MissingSignature)
    );
    assert_eq!(
        check(
            "POST",
            URI,
            V1_BODY,
            None,
            Some(V1_SIGNATURE_V3),
            &secret(),
            0
        ),
        Err(SignatureError::MissingTimestamp)
    );
    assert_eq!(
        check(
            "POST",
            URI,
            V1_BODY,
            Some("yesterday"),
            Some(V1_SIGNATURE_V3),
            &secret(),
            0
        ),
        Err(SignatureError::InvalidTimestamp("yesterday".into()))
    );
}

#[test]
fn malformed_or_older_version_signatures_fail() {
    let ts = V1_TIMESTAMP.to_string();
    let v1_hex = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de";
    for signature in [
        v1_hex,
        "not base64 at all!",
        "",
        &V1_SIGNATURE_V3[..20],
        "DxmVAjFNa2xfF3YgQjdZP6TNcok9k1oaH7UXombPtvw",
    ] {
        assert_eq!(
            check(
                "POST",
                URI,
                V1_BODY,
                Some(&ts),
                Some(signature),
                &secret(),
                0
            ),
            Err(SignatureError::Mismatch),
            "{signature:?}"
        );
    }
}

// ---- the event model ---------------------------------------------------------------------

fn event(value: serde_json::Value) -> WebhookEvent {
    WebhookEvent::from_json(value).expect("a valid event")
}

fn base(event_id: u64, kind: &str, object_id: u64, occurred_at: i64) -> serde_json::Value {
    json!({
        "eventId": event_id, "subscriptionId": 7, "portalId": 62515, "appId": 54321,
        "occurredAt": occurred_at, "subscriptionType": kind, "attemptNumber": 0,
        "objectId": object_id, "changeSource": "CRM"
    })
}

fn with(mut value: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(map), serde_json::Value::Object(more)) = (value.as_object_mut(), extra) {
        map.extend(more);
    }
    value
}

#[test]
fn hubspots_example_body_parses() {
    let batch = parse_batch(V1_BODY.as_bytes()).expect("a batch");
    assert!(batch.malformed.is_empty());
    let [event] = batch.events.as_slice() else {
        panic!("one event: {batch:?}")
    };
    assert_eq!(event.event_id, 1);
    assert_eq!(event.portal_id, PortalId(62515));
    assert_eq!(event.app_id, Some(54321));
    assert_eq!(event.object_id, Some(HsObjectId::from("123")));
    assert_eq!(event.occurred_at_ms, V1_TIMESTAMP);
    assert_eq!(event.change_flag.as_deref(), Some("NEW"));
    assert_eq!(event.kind, EventKind::ContactCreation);
}

#[test]
fn every_contact_and_company_type_parses_and_unknown_types_are_kept() {
    let body = json!([
        with(
            base(1, "contact.propertyChange", 10, 1),
            json!({"propertyName": "email", "propertyValue": "a@x.io"})
        ),
        base(2, "contact.deletion", 11, 2),
        base(3, "contact.privacyDeletion", 12, 3),
        base(4, "contact.restore", 13, 4),
        with(
            base(5, "contact.merge", 20, 5),
            json!({"primaryObjectId": 20, "mergedObjectIds": [21, "22"], "newObjectId": 23, "numberOfPropertiesMoved": 4})
        ),
        with(
            base(6, "contact.associationChange", 14, 6),
            json!({"associationType": "CONTACT_TO_COMPANY", "fromObjectId": 14, "toObjectId": 99})
        ),
        base(7, "company.creation", 15, 7),
        base(8, "contact.someFutureType", 16, 8),
        // eventType is the name HubSpot's docs table uses; ids may arrive as strings.
        json!({"eventId": "9", "portalId": "62515", "occurredAt": 9, "eventType": "contact.creation", "objectId": "17"}),
    ]);
    let batch = parse_batch(body.to_string().as_bytes()).expect("a batch");
    assert!(batch.malformed.is_empty(), "{:?}", batch.malformed);
    let kinds: Vec<_> = batch.events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds[0],
        EventKind::ContactPropertyChange {
            property_name: "email".into(),
            property_value: Some("a@x.io".into()),
        }
    );
    assert_eq!(kinds[1], EventKind::ContactDeletion);
    assert_eq!(kinds[2], EventKind::ContactPrivacyDeletion);
    assert_eq!(kinds[3], EventKind::ContactRestore);
    let EventKind::ContactMerge(merge) = &kinds[4] else {
        panic!("a merge: {:?}", kinds[4])
    };
    assert_eq!(merge.survivor(), &HsObjectId::from("23"));
    assert_eq!(
        merge.merged_away(),
        vec![
            HsObjectId::from("20"),
            HsObjectId::from("21"),
            HsObjectId::from("22")
        ]
    );
    assert_eq!(
        kinds[5],
        EventKind::ContactAssociationChange(AssociationChange {
            association_type: Some("CONTACT_TO_COMPANY".into()),
            from_object_id: Some(HsObjectId::from("14")),
            to_object_id: Some(HsObjectId::from("99")),
            removed: None,
            primary: None,
        })
    );
    assert_eq!(kinds[6], EventKind::CompanyCreation);
    assert_eq!(batch.events[6].subscription_type, "company.creation");
    assert_eq!(kinds[7], EventKind::Other);
    assert_eq!(kinds[8], EventKind::ContactCreation);
    assert_eq!(batch.events[8].object_id, Some(HsObjectId::from("17")));
}

#[test]
fn a_broken_event_is_reported_without_losing_the_others() {
    let body = json!([
        base(1, "contact.creation", 10, 1),
        {"eventId": 2, "occurredAt": 2, "subscriptionType": "contact.creation", "objectId": 11},
        json!({"eventId": 3, "portalId": 62515, "occurredAt": 3, "subscriptionType": "contact.propertyChange", "objectId": 12}),
        "not an object",
        with(base(5, "contact.deletion", 13, 5), json!({"objectId": "thirteen"})),
        base(6, "contact.deletion", 14, 6),
    ]);
    let batch = parse_batch(body.to_string().as_bytes()).expect("a batch");
    let ids: Vec<u64> = batch.events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, vec![1, 6]);
    let skipped: Vec<usize> = batch.malformed.iter().map(|m| m.index).collect();
    assert_eq!(skipped, vec![1, 2, 3, 4]);
    assert!(
        batch.malformed[0].reason.contains("portalId"),
        "{:?}",
        batch.malformed[0]
    );
    assert!(
        batch.malformed[1].reason.contains("propertyName"),
        "{:?}",
        batch.malformed[1]
    );
    assert!(
        batch.malformed[3].reason.contains("objectId"),
        "{:?}",
        batch.malformed[3]
    );
}

#[test]
fn a_body_that_is_not_an_array_is_refused_whole() {
    assert!(matches!(
        parse_batch(b"{\"eventId\":1}"),
        Err(BatchError::NotAnArray)
    ));
    assert!(matches!(parse_batch(b"[{"), Err(BatchError::NotJson(_))));
    assert_eq!(parse_batch(b"[]").expect("empty batch").events, Vec::new());
}

#[test]
fn a_redelivery_has_the_same_key_and_different_events_do_not() {
    let first = event(base(1, "contact.creation", 10, 1));
    let mut again = base(1, "contact.creation", 10, 1);
    again["attemptNumber"] = json!(3);
    assert_eq!(first.key(), event(again).key());
    // HubSpot does not promise unique event ids: same id, another object or time.
    assert_ne!(
        first.key().dedupe_key,
        event(base(1, "contact.creation", 11, 1)).key().dedupe_key
    );
    assert_ne!(
        first.key().dedupe_key,
        event(base(1, "contact.creation", 10, 2)).key().dedupe_key
    );
    assert_ne!(
        first.key().dedupe_key,
        event(base(1, "contact.deletion", 10, 1)).key().dedupe_key
    );
    let change = |value: &str| {
        event(with(
            base(1, "contact.propertyChange", 10, 1),
            json!({"propertyName": "email", "propertyValue": value}),
        ))
    };
    assert_ne!(
        change("a@x.io").key().dedupe_key,
        change("b@x.io").key().dedupe_key
    );
}

// ---- the sandbox's real deliveries ---------------------------------------------------------

/// A loopback endpoint that hands every request it receives to the test and answers 200.
async fn receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(poem::http::HeaderMap, Vec<u8>)>,
) {
    use poem::{EndpointExt, Route, handler, post};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    #[handler]
    fn receive(
        headers: &poem::http::HeaderMap,
        body: Vec<u8>,
        tx: poem::web::Data<&tokio::sync::mpsc::UnboundedSender<(poem::http::HeaderMap, Vec<u8>)>>,
    ) {
        let _ = tx.send((headers.clone(), body));
    }
    let app = Route::new().at("/webhooks/hubspot", post(receive)).data(tx);
    let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).expect("acceptor");
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
    (format!("http://{addr}/webhooks/hubspot?source=sandbox"), rx)
}

#[tokio::test]
async fn the_sandboxs_signed_deliveries_verify_and_parse() {
    let (url, mut deliveries) = receiver().await;
    let sb = Sandbox::start(
        SandboxArgs {
            requests_per_10s: 0,
            search_per_second: 0,
            rng_seed: Some(3),
            webhook_url: Some(url.clone()),
            ..SandboxArgs::default()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("sandbox starts");
    let client = HubSpotClient::new(
        ClientConfig::new(url::Url::parse(&sb.base_url()).expect("url")),
        Auth::PrivateApp(Secret::new(sb.access_token())),
    )
    .expect("client");
    let created = client
        .create_contact(&ContactCreate {
            properties: BTreeMap::from([("email".to_owned(), "hook@example.com".to_owned())]),
        })
        .await
        .expect("contact created");

    let (headers, body) =
        tokio::time::timeout(std::time::Duration::from_secs(10), deliveries.recv())
            .await
            .expect("a delivery arrives")
            .expect("receiver open");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let client_secret = Secret::new(sb.client_secret());
    let verified = verify_v3(
        "POST",
        &url,
        &body,
        header("X-HubSpot-Request-Timestamp"),
        header("X-HubSpot-Signature-v3"),
        &client_secret,
        Utc::now(),
    );
    assert_eq!(verified, Ok(()));
    let wrong_secret = verify_v3(
        "POST",
        &url,
        &body,
        header("X-HubSpot-Request-Timestamp"),
        header("X-HubSpot-Signature-v3"),
        &Secret::new("another app's secret"),
        Utc::now(),
    );
    assert_eq!(wrong_secret, Err(SignatureError::Mismatch));

    let batch = parse_batch(&body).expect("a batch");
    assert!(batch.malformed.is_empty(), "{:?}", batch.malformed);
    let creation = batch
        .events
        .iter()
        .find(|e| e.kind == EventKind::ContactCreation)
        .expect("a creation event");
    assert_eq!(creation.object_id, Some(created.id.clone()));
    assert_eq!(creation.portal_id, PortalId(sb.portal_id()));
}

// ---- dedupe and local effects, on every backend --------------------------------------------

/// Links a contact to a HubSpot id with the user's own SQL.
async fn link(store: &Store, email: &str, hs_id: &str) {
    const SQL: &str = "UPDATE contacts SET hs_object_id = $2 WHERE email = $1";
    let changed = match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pg), _) => sqlx::query(SQL)
            .bind(email)
            .bind(hs_id)
            .execute(pg)
            .await
            .map(|r| r.rows_affected()),
        (_, Some(lite)) => sqlx::query(SQL)
            .bind(email)
            .bind(hs_id)
            .execute(lite)
            .await
            .map(|r| r.rows_affected()),
        _ => unreachable!("a store has one pool"),
    };
    assert_eq!(changed.expect("link"), 1, "{email}");
}

/// Inserts contacts and links each to the given HubSpot id; returns their local ids.
async fn linked_contacts(store: &Store, rows: &[(&str, &str)]) -> Vec<ContactId> {
    let new: Vec<NewContact> = rows
        .iter()
        .map(|(email, _)| NewContact {
            email: Some((*email).to_owned()),
            ..NewContact::default()
        })
        .collect();
    store.insert_contacts(&new).await.expect("insert");
    let mut ids = Vec::new();
    for (email, hs_id) in rows {
        link(store, email, hs_id).await;
        let all = store.list_contacts(None, 1000).await.expect("list");
        let row = all
            .iter()
            .find(|c| c.email.as_deref() == Some(*email))
            .expect("row");
        ids.push(row.id);
    }
    ids
}

async fn hs_id_of(store: &Store, id: ContactId) -> Option<String> {
    store
        .get_contact(id)
        .await
        .expect("get")
        .expect("row exists")
        .hs_object_id
        .map(|h| h.0)
}

async fn tombstone_of(store: &Store, id: ContactId) -> Option<Tombstone> {
    store
        .get_contact(id)
        .await
        .expect("get")
        .expect("row exists")
        .hubspot_deleted
}

fn merge_event(
    event_id: u64,
    primary: u64,
    merged: &[u64],
    new: Option<u64>,
    at: i64,
) -> WebhookEvent {
    let mut extra = json!({"primaryObjectId": primary, "mergedObjectIds": merged});
    if let Some(new) = new {
        extra["newObjectId"] = json!(new);
    }
    event(with(base(event_id, "contact.merge", primary, at), extra))
}

/// Inserts companies, each linked to the given HubSpot id; returns their local ids.
async fn linked_companies(store: &Store, hs_ids: &[&str]) -> Vec<LocalCompanyId> {
    const SQL: &str = "UPDATE companies SET hs_object_id = $2 WHERE id = $1";
    let new: Vec<NewCompany> = hs_ids
        .iter()
        .map(|hs| NewCompany {
            name: Some(format!("Company {hs}")),
            domain: Some(format!("c{hs}.example.com")),
        })
        .collect();
    let ids = store
        .insert_companies(&new)
        .await
        .expect("insert companies");
    for (id, hs) in ids.iter().zip(hs_ids) {
        let changed = match (store.pg_pool(), store.sqlite_pool()) {
            (Some(pg), _) => sqlx::query(SQL)
                .bind(id.0)
                .bind(*hs)
                .execute(pg)
                .await
                .map(|r| r.rows_affected()),
            (_, Some(lite)) => sqlx::query(SQL)
                .bind(id.0)
                .bind(*hs)
                .execute(lite)
                .await
                .map(|r| r.rows_affected()),
            _ => unreachable!("a store has one pool"),
        };
        assert_eq!(changed.expect("link"), 1);
    }
    ids
}

async fn company_link(
    store: &Store,
    id: LocalCompanyId,
) -> (Option<String>, Option<TombstoneReason>) {
    let company = store
        .get_company(id)
        .await
        .expect("get")
        .expect("row exists");
    (
        company.hs_object_id.map(|h| h.0),
        company.hubspot_deleted.map(|t| t.reason),
    )
}

backend_tests! {
    async fn events_are_recorded_once_and_redeliveries_are_recognised(db: TestDb) {
        let store = db.store().await;
        let a = event(base(1, "contact.creation", 10, 1));
        let b = event(base(2, "contact.creation", 11, 2));
        let mut redelivered = base(1, "contact.creation", 10, 1);
        redelivered["attemptNumber"] = json!(1);
        let a_again = event(redelivered);
        let keys = |events: &[&WebhookEvent]| events.iter().map(|e| e.key()).collect::<Vec<_>>();

        assert_eq!(store.record_new_events(&keys(&[&a, &b, &a_again])).await.unwrap(), vec![true, true, false]);
        let c = event(base(3, "contact.creation", 12, 3));
        assert_eq!(store.record_new_events(&keys(&[&a_again, &c, &b])).await.unwrap(), vec![false, true, false]);
        assert_eq!(store.record_new_events(&[]).await.unwrap(), Vec::<bool>::new());

        // Forgotten events (processing failed) count as new when HubSpot redelivers them.
        assert_eq!(store.forget_events(&[a.key().dedupe_key]).await.unwrap(), 1);
        assert_eq!(store.record_new_events(&keys(&[&a_again])).await.unwrap(), vec![true]);

        // Pruning removes what HubSpot can no longer redeliver.
        assert_eq!(store.prune_webhook_events(Utc::now() - Duration::hours(1)).await.unwrap(), 0);
        assert_eq!(store.prune_webhook_events(Utc::now() + Duration::minutes(1)).await.unwrap(), 3);
        assert_eq!(store.record_new_events(&keys(&[&b])).await.unwrap(), vec![true]);
    }

    async fn a_deletion_unlinks_and_tombstones_the_local_row_and_keeps_the_contact(db: TestDb) {
        let store = db.store().await;
        let ids = linked_contacts(&store, &[("a@example.com", "101"), ("b@example.com", "102")]).await;

        let outcome = process_events(&store, &[event(base(1, "contact.deletion", 101, 1))]).await.unwrap();
        assert_eq!(outcome.unlinked, vec![ids[0]]);
        assert_eq!(hs_id_of(&store, ids[0]).await, None);
        let tombstone = tombstone_of(&store, ids[0]).await.expect("marked deleted in HubSpot");
        assert_eq!((tombstone.reason, tombstone.hs_object_id), (TombstoneReason::Deleted, Some(HsObjectId::from("101"))));
        assert_eq!(hs_id_of(&store, ids[1]).await.as_deref(), Some("102"), "others untouched");
        assert_eq!(tombstone_of(&store, ids[1]).await, None);
        assert_eq!(store.count_contacts().await.unwrap(), 2, "the contact itself stays");
    }

    async fn a_privacy_deletion_is_remembered_as_one_even_after_a_plain_deletion(db: TestDb) {
        let store = db.store().await;
        let ids = linked_contacts(&store, &[("a@example.com", "101"), ("b@example.com", "102")]).await;
        // HubSpot may send both for one GDPR deletion, in either order.
        let events = [
            event(base(1, "contact.deletion", 101, 1)),
            event(base(2, "contact.privacyDeletion", 101, 2)),
            event(base(3, "contact.privacyDeletion", 102, 3)),
            event(base(4, "contact.deletion", 102, 4)),
        ];
        let outcome = process_events(&store, &events).await.unwrap();
        assert_eq!(outcome.unlinked, ids);
        for id in &ids {
            let tombstone = tombstone_of(&store, *id).await.expect("marked");
            assert_eq!(tombstone.reason, TombstoneReason::PrivacyDeletion, "{id}");
        }
    }

    async fn a_redelivered_deletion_is_processed_once(db: TestDb) {
        let store = db.store().await;
        let ids = linked_contacts(&store, &[("a@example.com", "101")]).await;
        let deletion = base(1, "contact.deletion", 101, 1);
        process_events(&store, &[event(deletion.clone())]).await.unwrap();
        // The record was restored and a pull linked it again; then HubSpot redelivers.
        link(&store, "a@example.com", "101").await;
        let mut redelivered = deletion;
        redelivered["attemptNumber"] = json!(1);
        let outcome = process_events(&store, &[event(redelivered)]).await.unwrap();
        assert_eq!((outcome.new_events, outcome.duplicates), (0, 1));
        assert!(outcome.unlinked.is_empty());
        assert_eq!(hs_id_of(&store, ids[0]).await.as_deref(), Some("101"));
    }

    async fn a_company_deletion_tombstones_the_linked_company_and_nothing_else(db: TestDb) {
        let store = db.store().await;
        let ids = linked_companies(&store, &["20000000001", "20000000002"]).await;
        let contacts = linked_contacts(&store, &[("a@example.com", "20000000001")]).await;
        let outcome = process_events(&store, &[event(base(1, "company.deletion", 20_000_000_001, 1))]).await.unwrap();
        assert_eq!(outcome.companies_unlinked, vec![ids[0]]);
        assert!(outcome.unlinked.is_empty(), "a contact with the same number is another record");
        assert_eq!(company_link(&store, ids[0]).await, (None, Some(TombstoneReason::Deleted)));
        assert_eq!(company_link(&store, ids[1]).await, (Some("20000000002".to_owned()), None));
        assert_eq!(hs_id_of(&store, contacts[0]).await.as_deref(), Some("20000000001"));
    }

    async fn a_company_merge_relinks_the_merged_away_company(db: TestDb) {
        let store = db.store().await;
        let ids = linked_companies(&store, &["20000000005"]).await;
        let merge = with(
            base(1, "company.merge", 20_000_000_004, 1),
            json!({"primaryObjectId": 20_000_000_004_u64, "mergedObjectIds": [20_000_000_005_u64]}),
        );
        let outcome = process_events(&store, &[event(merge)]).await.unwrap();
        assert_eq!(outcome.company_merges.len(), 1);
        assert_eq!(outcome.company_merges[0].linked, Some(ids[0]));
        assert_eq!(company_link(&store, ids[0]).await, (Some("20000000004".to_owned()), None));
        assert!(outcome.merges.is_empty() && outcome.to_pull.is_empty(), "no contact touched");
    }

    async fn company_echoes_are_answered_without_a_record_and_others_changes_are_noted(db: TestDb) {
        let store = db.store().await;
        let mut own = base(1, "company.creation", 20_000_000_007, 1);
        own["changeSource"] = json!("INTEGRATION");
        own["sourceId"] = json!("54321");
        let body = serde_json::to_vec(&json!([own.clone()])).unwrap();
        assert_eq!(crm_sync::webhooks::count_own_echoes(&body), Some(1), "the one-pass answer knows company echoes");
        let mut other = base(2, "company.propertyChange", 20_000_000_008, 2);
        other["propertyName"] = json!("name");
        other["propertyValue"] = json!("Renamed");
        let outcome = process_events(&store, &[event(own), event(other)]).await.unwrap();
        assert_eq!((outcome.echoes, outcome.new_events), (1, 1));
        assert_eq!(outcome.companies_changed, vec![HsObjectId::from("20000000008")]);
        assert!(outcome.to_pull.is_empty(), "a company is not a contact to pull");
    }

    async fn a_merge_relinks_the_row_of_a_merged_away_record(db: TestDb) {
        let store = db.store().await;
        let ids = linked_contacts(&store, &[("c@example.com", "302")]).await;
        let outcome = process_events(&store, &[merge_event(1, 301, &[302], None, 1)]).await.unwrap();
        assert_eq!(outcome.merges, vec![MergeOutcome {
            survivor: HsObjectId::from("301"),
            linked: Some(ids[0]),
            relinked: true,
            unlinked: Vec::new(),
        }]);
        assert_eq!(hs_id_of(&store, ids[0]).await.as_deref(), Some("301"));
        assert_eq!(outcome.to_pull, vec![HsObjectId::from("301")]);
    }

    async fn a_merge_keeps_the_existing_link_of_the_survivor_and_clears_the_other(db: TestDb) {
        let store = db.store().await;
        let ids = linked_contacts(&store, &[("a@example.com", "201"), ("b@example.com", "202")]).await;
        let outcome = process_events(&store, &[merge_event(1, 201, &[202], None, 1)]).await.unwrap();
        assert_eq!(outcome.merges, vec![MergeOutcome {
            survivor: HsObjectId::from("201"),
            linked: Some(ids[0]),
            relinked: false,
            unlinked: vec![ids[1]],
        }]);
        assert_eq!(hs_id_of(&store, ids[0]).await.as_deref(), Some("201"));
        assert_eq!(hs_id_of(&store, ids[1]).await, None);
    }

    async fn a_merge_into_a_new_record_prefers_the_primarys_row(db: TestDb) {
        let store = db.store().await;
        // The merged record's row was created first, so it has the lower local id.
        let ids = linked_contacts(&store, &[("e@example.com", "402"), ("d@example.com", "401")]).await;
        let outcome = process_events(&store, &[merge_event(1, 401, &[402], Some(400), 1)]).await.unwrap();
        let merge = &outcome.merges[0];
        assert_eq!(merge.survivor, HsObjectId::from("400"));
        assert_eq!(merge.linked, Some(ids[1]), "the primary's row keeps the link");
        assert_eq!(merge.unlinked, vec![ids[0]]);
        assert_eq!(hs_id_of(&store, ids[1]).await.as_deref(), Some("400"));
        assert_eq!(hs_id_of(&store, ids[0]).await, None);
    }

    async fn a_batch_is_applied_in_the_order_things_happened(db: TestDb) {
        let store = db.store().await;
        let ids = linked_contacts(&store, &[("a@example.com", "502")]).await;
        // Delivered out of order: the survivor's deletion (t=3) before the merge (t=2).
        let events = [
            event(base(3, "contact.deletion", 501, 3)),
            merge_event(2, 501, &[502], None, 2),
            event(base(1, "contact.creation", 600, 1)),
            event(with(base(4, "contact.propertyChange", 601, 4), json!({"propertyName": "firstname", "propertyValue": "Ada"}))),
            event(base(5, "company.creation", 700, 5)),
        ];
        let outcome = process_events(&store, &events).await.unwrap();
        assert_eq!(outcome.merges[0].linked, Some(ids[0]));
        assert_eq!(outcome.unlinked, vec![ids[0]], "merged, then the survivor was deleted");
        assert_eq!(hs_id_of(&store, ids[0]).await, None);
        assert_eq!(
            outcome.to_pull,
            vec![HsObjectId::from("600"), HsObjectId::from("601")],
            "the deleted survivor is not pulled; other object types are ignored"
        );
        assert_eq!((outcome.new_events, outcome.duplicates), (5, 0));
    }
    async fn a_contacts_association_change_by_someone_else_names_the_contact_once_and_echoes_nothing(db: TestDb) {
        let store = db.store().await;
        let association = |id: u64, kind: &str, from: u64, to: u64, assoc: &str| {
            event(with(
                base(id, kind, from, id as i64),
                json!({"associationType": assoc, "fromObjectId": from, "toObjectId": to,
                       "associationRemoved": false, "isPrimaryAssociation": true}),
            ))
        };
        let mut own = association(5, "contact.associationChange", 803, 900, "CONTACT_TO_COMPANY");
        own.change_source = Some(crm_sync::webhooks::ChangeSource::Integration);
        own.source_id = Some("54321".to_owned());
        assert!(own.is_own_echo(), "this app's own association write is an echo");
        let events = [
            association(1, "contact.associationChange", 801, 900, "CONTACT_TO_COMPANY"),
            // The same change seen from the company: not read a second time.
            association(2, "company.associationChange", 900, 801, "COMPANY_TO_CONTACT"),
            // Another unlabelled type of the same pair, at the same time.
            association(3, "contact.associationChange", 801, 900, "CONTACT_TO_COMPANY"),
            // Not a contact→company pair.
            association(4, "contact.associationChange", 802, 700, "CONTACT_TO_DEAL"),
            own,
        ];
        let outcome = process_events(&store, &events).await.unwrap();
        assert_eq!(outcome.associations_to_read, vec![HsObjectId::from("801")]);
        assert!(outcome.to_pull.is_empty() && outcome.companies_changed.is_empty());
        assert_eq!((outcome.new_events, outcome.echoes), (4, 1));

        let own_body = serde_json::to_vec(&json!([with(
            base(6, "company.associationChange", 900, 6),
            json!({"changeSource": "INTEGRATION", "sourceId": "54321", "associationType": "COMPANY_TO_CONTACT",
                   "fromObjectId": 900, "toObjectId": 801}),
        )])).unwrap();
        assert_eq!(crm_sync::webhooks::count_own_echoes(&own_body), Some(1), "the one-pass answer knows association echoes");
    }

    async fn a_change_to_a_company_linked_here_needs_no_read(db: TestDb) {
        let store = db.store().await;
        linked_companies(&store, &["20000000009"]).await;
        let mut change = base(1, "company.propertyChange", 20_000_000_009, 1);
        change["propertyName"] = json!("name");
        change["propertyValue"] = json!("Renamed");
        let creation = base(2, "company.creation", 20_000_000_010, 2);
        let outcome = process_events(&store, &[event(change), event(creation)]).await.unwrap();
        assert_eq!(outcome.companies_changed, vec![HsObjectId::from("20000000010")], "only the unlinked company is read");
        assert_eq!(outcome.echoes, 1);
    }
}
