//! The HubSpot client against the in-process HubSpot sandbox, over real HTTP on 127.0.0.1:
//! what the caller sees, and what the sandbox ends up holding.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::log_capture::capture_this_thread;
use common::oauth::approve;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use crm_sync::hubspot::{
    Auth, Backoff, Batch, ClientConfig, ContactCreate, ContactUpdate, ContactUpsert, Filter,
    FilterGroup, FilterOperator, HubSpotClient, HubSpotError, ListContacts, MemoryTokenStore,
    OAuthApp, OAuthTokens, Operation, PropertyCreate, RetryReason, SearchRequest, TokenStore,
};
use crm_sync::ids::{HsObjectId, PortalId};
use crm_sync::sandbox::{Sandbox, SandboxArgs, SandboxHandle};
use crm_sync::secret::Secret;
use url::Url;

const REDIRECT: &str = "http://localhost:3001/oauth-callback";
const SCOPES: [&str; 4] = [
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.schemas.contacts.read",
    "crm.schemas.contacts.write",
];

/// A sandbox without limits or faults unless a test asks for them.
fn args() -> SandboxArgs {
    SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        rng_seed: Some(7),
        ..SandboxArgs::default()
    }
}

async fn start(args: SandboxArgs) -> SandboxHandle {
    Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("sandbox starts")
}

/// HubSpot's defaults, pointed at the sandbox, with short backoff steps so tests stay quick.
fn config(sb: &SandboxHandle) -> ClientConfig {
    let mut config = ClientConfig::new(Url::parse(&sb.base_url()).expect("sandbox url"));
    config.backoff = Backoff {
        base: Duration::from_millis(5),
        max: Duration::from_millis(50),
    };
    config.max_retries = 8;
    config
}

fn private_client(sb: &SandboxHandle, config: ClientConfig) -> HubSpotClient {
    HubSpotClient::new(config, Auth::PrivateApp(Secret::new(sb.access_token()))).expect("client")
}

fn app(sb: &SandboxHandle, scopes: &[&str]) -> OAuthApp {
    OAuthApp {
        client_id: sb.client_id().to_owned(),
        client_secret: Secret::new(sb.client_secret()),
        authorize_url: Url::parse(&sb.authorize_url()).expect("authorize url"),
        redirect_uri: Url::parse(REDIRECT).expect("redirect"),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        optional_scopes: Vec::new(),
    }
}

fn oauth_client(
    sb: &SandboxHandle,
    config: ClientConfig,
    scopes: &[&str],
    store: Arc<MemoryTokenStore>,
) -> HubSpotClient {
    let auth = Auth::OAuth {
        app: app(sb, scopes),
        tokens: store,
    };
    HubSpotClient::new(config, auth).expect("client")
}

/// An installed OAuth client: authorize, exchange, store.
async fn installed(
    sb: &SandboxHandle,
    config: ClientConfig,
    scopes: &[&str],
) -> (HubSpotClient, Arc<MemoryTokenStore>) {
    let store = Arc::new(MemoryTokenStore::default());
    let client = oauth_client(sb, config, scopes, store.clone());
    let code = approve(&client, "state-1").await;
    client.connect(&code).await.expect("code exchange");
    (client, store)
}

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn create(email: &str, first: &str) -> ContactCreate {
    ContactCreate {
        properties: props(&[("email", email), ("firstname", first)]),
    }
}

// ---- reading ----------------------------------------------------------------------------

#[tokio::test]
async fn paging_through_10000_contacts_sees_every_contact_once_within_the_budget() {
    let sb = start(SandboxArgs {
        contacts: 10_000,
        requests_per_10s: 100,
        ..args()
    })
    .await;
    let client = private_client(&sb, config(&sb));
    let mut seen = Vec::new();
    let mut params = ListContacts {
        properties: vec!["email".into(), "firstname".into()],
        ..ListContacts::default()
    };
    loop {
        let page = client.list_contacts(&params).await.expect("a page");
        assert!(page.results.len() <= 100);
        seen.extend(page.results.into_iter().map(|c| c.id));
        match page.next_after {
            Some(after) => params.after = Some(after),
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), 10_000, "every contact once");
    assert_eq!(unique.len(), 10_000);
    let held: HashSet<HsObjectId> = sb
        .contacts()
        .into_iter()
        .map(|c| HsObjectId(c.id))
        .collect();
    assert_eq!(unique, held);
    assert_eq!(
        client.metrics().requests(Operation::ListContacts, "2xx"),
        100,
        "pages of 100"
    );
    assert_eq!(
        sb.stats().rate_limited,
        0,
        "100 pages fit the 100-per-10 s budget"
    );
}

#[tokio::test]
async fn account_details_search_and_single_reads() {
    let sb = start(args()).await;
    let client = private_client(&sb, config(&sb));
    let details = client.account_details().await.expect("account details");
    assert_eq!(details.portal_id, PortalId(sb.portal_id()));

    let created = client
        .create_contact(&create("Ada@Example.com", "Ada"))
        .await
        .expect("created");
    let by_email = client
        .get_contact("ada@example.com", Some("email"), &["firstname".into()])
        .await
        .expect("read by email");
    assert_eq!(by_email.id, created.id);
    assert_eq!(by_email.property("firstname"), Some("Ada"));

    sb.flush_search_index();
    let request = SearchRequest {
        filter_groups: vec![FilterGroup {
            filters: vec![Filter::new("email", FilterOperator::Eq, "ada@example.com")],
        }],
        properties: vec!["email".into()],
        ..SearchRequest::default()
    };
    let page = client.search_contacts(&request).await.expect("search");
    assert_eq!(page.total, 1);
    assert_eq!(page.results[0].id, created.id);
    assert_eq!(page.next_after, None);
}

#[tokio::test]
async fn a_request_that_cannot_be_built_fails_at_once_and_is_never_retried() {
    let sb = start(args()).await;
    let client = private_client(&sb, config(&sb));
    // An id far too long for a URI: the HTTP stack refuses the request before sending it.
    let id = "9".repeat(200_000);

    let err = client
        .get_contact(&id, None, &[])
        .await
        .expect_err("cannot be sent");

    assert!(matches!(err, HubSpotError::InvalidRequest(_)), "{err:?}");
    assert_eq!(client.metrics().requests_total(), 1, "one try, no retries");
    assert_eq!(sb.stats().requests, 0, "nothing reached HubSpot");
}

// ---- batches -----------------------------------------------------------------------------

#[tokio::test]
async fn each_batch_operation_does_what_it_says_and_maps_answers_to_inputs() {
    let sb = start(args()).await;
    let client = private_client(&sb, config(&sb));

    // create: 150 inputs in two batches of at most 100
    let inputs: Vec<_> = (0..150)
        .map(|i| create(&format!("c{i}@example.com"), &format!("C{i}")))
        .collect();
    let mut ids = Vec::new();
    for batch in Batch::chunked(inputs) {
        let outcome = client.batch_create(&batch).await.expect("batch create");
        assert!(outcome.errors.is_empty());
        for (i, input) in batch.items().iter().enumerate() {
            let record = outcome
                .result_for(i)
                .expect("every input maps to its record");
            assert_eq!(
                record.email(),
                input.properties.get("email").map(String::as_str)
            );
            ids.push(record.id.clone());
        }
    }
    assert_eq!(sb.contact_count(), 150);

    // read: by email, one of them unknown
    let emails = Batch::new(vec![
        "c1@example.com".into(),
        "c2@example.com".into(),
        "nobody@example.com".into(),
    ])
    .expect("3 inputs");
    let read = client
        .batch_read(&emails, Some("email"), &["email".into()])
        .await
        .expect("batch read");
    assert_eq!(read.results.len(), 2);
    assert_eq!(read.missing, vec!["nobody@example.com".to_owned()]);

    // update: two known ids and an unknown one
    let updates = Batch::new(vec![
        ContactUpdate {
            id: ids[0].0.clone(),
            id_property: None,
            properties: props(&[("firstname", "Zero")]),
        },
        ContactUpdate {
            id: "99999999".into(),
            id_property: None,
            properties: props(&[("firstname", "Ghost")]),
        },
        ContactUpdate {
            id: ids[1].0.clone(),
            id_property: None,
            properties: props(&[("firstname", "One")]),
        },
    ])
    .expect("3 inputs");
    let updated = client.batch_update(&updates).await.expect("batch update");
    assert_eq!(
        updated.failed_indices().into_iter().collect::<Vec<_>>(),
        vec![1]
    );
    assert!(matches!(
        updated.error_for(1),
        Some(HubSpotError::NotFound { .. })
    ));
    assert_eq!(updated.results.len(), 2);
    let held = sb.contact(&ids[0].0).expect("still there");
    assert_eq!(
        held.properties.get("firstname").map(String::as_str),
        Some("Zero")
    );

    // upsert: one existing email, one new
    let upserts = Batch::new(vec![
        ContactUpsert {
            id: "c5@example.com".into(),
            id_property: "email".into(),
            properties: props(&[("lastname", "Five")]),
        },
        ContactUpsert {
            id: "new@example.com".into(),
            id_property: "email".into(),
            properties: props(&[("email", "new@example.com"), ("lastname", "New")]),
        },
    ])
    .expect("2 inputs");
    let upserted = client.batch_upsert(&upserts).await.expect("batch upsert");
    assert!(upserted.errors.is_empty());
    let flags: BTreeMap<Option<String>, bool> = upserted
        .results
        .iter()
        .map(|r| (r.record.contact.email().map(str::to_owned), r.record.new))
        .collect();
    assert_eq!(flags.get(&Some("c5@example.com".into())), Some(&false));
    assert_eq!(flags.get(&Some("new@example.com".into())), Some(&true));
    assert_eq!(sb.contact_count(), 151);

    // archive: two records leave the live set
    let archive = Batch::new(vec![ids[10].clone(), ids[11].clone()]).expect("2 inputs");
    client.batch_archive(&archive).await.expect("batch archive");
    assert_eq!(sb.contact_count(), 149);
    assert!(sb.contact(&ids[10].0).is_none());
    assert_eq!(sb.archived_contacts().len(), 2);
}

#[tokio::test]
async fn a_partly_invalid_batch_create_reports_the_bad_input_and_creates_the_rest() {
    let sb = start(args()).await;
    let client = private_client(&sb, config(&sb));
    let batch = Batch::new(vec![
        create("good1@example.com", "G1"),
        create("bad@", "Bad"),
        create("good2@example.com", "G2"),
    ])
    .expect("3 inputs");
    let outcome = client
        .batch_create(&batch)
        .await
        .expect("a 207 is an answer");
    assert_eq!(
        outcome.failed_indices().into_iter().collect::<Vec<_>>(),
        vec![1]
    );
    let Some(HubSpotError::Validation { invalid, details }) = outcome.error_for(1) else {
        panic!("input 1 should be a validation error: {:?}", outcome.errors);
    };
    assert_eq!(invalid[0].name, "email");
    assert_eq!(invalid[0].value.as_deref(), Some("bad@"));
    assert!(details.category.is_some());
    assert!(outcome.result_for(0).is_some() && outcome.result_for(2).is_some());
    let held: BTreeSet<String> = sb
        .contacts()
        .iter()
        .filter_map(|c| c.email().map(str::to_owned))
        .collect();
    assert_eq!(
        held,
        BTreeSet::from([
            "good1@example.com".to_owned(),
            "good2@example.com".to_owned()
        ])
    );
}

// ---- error classes ----------------------------------------------------------------------

#[tokio::test]
async fn each_error_class_is_its_own_variant_with_hubspots_details() {
    let sb = start(args()).await;
    let client = private_client(&sb, config(&sb));
    let first = client
        .create_contact(&create("taken@example.com", "T"))
        .await
        .expect("created");

    let conflict = client
        .create_contact(&create("taken@example.com", "Again"))
        .await
        .unwrap_err();
    let HubSpotError::Conflict { existing_id, .. } = &conflict else {
        panic!("{conflict:?}")
    };
    assert_eq!(existing_id.as_ref(), Some(&first.id));
    assert!(
        conflict.correlation_id().is_some(),
        "every HubSpot error carries its correlation id"
    );

    let batch = Batch::new(vec![
        create("fresh@example.com", "F"),
        create("taken@example.com", "T2"),
    ])
    .expect("2");
    let batch_conflict = client.batch_create(&batch).await.unwrap_err();
    assert!(
        matches!(&batch_conflict, HubSpotError::Conflict { existing_id: Some(id), .. } if *id == first.id),
        "{batch_conflict:?}"
    );

    let invalid = client
        .create_contact(&create("not-an-email", "X"))
        .await
        .unwrap_err();
    let HubSpotError::Validation { invalid: props, .. } = &invalid else {
        panic!("{invalid:?}")
    };
    assert_eq!(props[0].name, "email");

    let missing = client
        .get_contact("987654321", None, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, HubSpotError::NotFound { .. }),
        "{missing:?}"
    );
    assert_eq!(missing.category(), Some("OBJECT_NOT_FOUND"));

    let property = PropertyCreate {
        name: "crm_sync_id".into(),
        label: "crm-sync id".into(),
        property_type: "string".into(),
        field_type: "text".into(),
        group_name: "contactinformation".into(),
        description: None,
        has_unique_value: true,
        options: Vec::new(),
        form_field: None,
    };
    let made = client
        .create_property(&property)
        .await
        .expect("property created");
    assert!(made.has_unique_value);
    assert_eq!(
        client
            .get_property("crm_sync_id")
            .await
            .expect("read back")
            .name,
        "crm_sync_id"
    );
    let again = client.create_property(&property).await.unwrap_err();
    assert!(
        matches!(
            &again,
            HubSpotError::Conflict {
                existing_id: None,
                ..
            }
        ),
        "{again:?}"
    );
    let unknown = client.get_property("no_such_property").await.unwrap_err();
    assert!(
        matches!(unknown, HubSpotError::NotFound { .. }),
        "{unknown:?}"
    );

    let stranger = HubSpotClient::new(config(&sb), Auth::PrivateApp(Secret::new("pat-wrong")))
        .expect("client");
    let refused = stranger.account_details().await.unwrap_err();
    assert!(
        matches!(refused, HubSpotError::Unauthorized { expired: false, .. }),
        "{refused:?}"
    );
    assert_eq!(
        sb.contact_count(),
        1,
        "none of the refused calls wrote anything"
    );
}

#[tokio::test]
async fn a_token_without_the_write_scope_is_forbidden_with_the_scope_named() {
    let sb = start(args()).await;
    let (client, _) = installed(&sb, config(&sb), &["crm.objects.contacts.read"]).await;
    let err = client
        .create_contact(&create("a@example.com", "A"))
        .await
        .unwrap_err();
    let HubSpotError::Forbidden {
        required_scopes, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(
        required_scopes,
        &vec!["crm.objects.contacts.write".to_owned()]
    );
    assert_eq!(sb.contact_count(), 0);
}

// ---- OAuth -------------------------------------------------------------------------------

#[tokio::test]
async fn installing_stores_tokens_with_the_portal_and_the_client_uses_them() {
    let sb = start(args()).await;
    let (client, store) = installed(&sb, config(&sb), &SCOPES).await;
    let stored = store.current().expect("tokens saved");
    assert_eq!(stored.portal_id, Some(PortalId(sb.portal_id())));
    assert!(stored.scopes.contains(&"oauth".to_owned()));
    assert!(stored.expires_at > Utc::now());
    let info = client.access_token().await.expect("current token");
    assert_eq!(info.access_token.expose(), stored.access_token.expose());
    client
        .create_contact(&create("o@example.com", "O"))
        .await
        .expect("OAuth call");
    assert_eq!(sb.contact_count(), 1);
}

#[tokio::test]
async fn a_short_lived_token_is_refreshed_in_the_middle_of_a_run_before_it_expires() {
    let sb = start(SandboxArgs {
        token_lifetime_secs: 2,
        contacts: 60,
        ..args()
    })
    .await;
    let (client, store) = installed(&sb, config(&sb), &SCOPES).await;
    let first_token = store.current().expect("stored").access_token;
    let mut params = ListContacts {
        limit: 10,
        ..ListContacts::default()
    };
    let mut read = 0;
    loop {
        let page = client
            .list_contacts(&params)
            .await
            .expect("every page succeeds");
        read += page.results.len();
        let Some(after) = page.next_after else { break };
        params.after = Some(after);
        // Spread the run over several token lifetimes.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(read, 60);
    assert!(
        client.metrics().token_refreshes() >= 1,
        "refreshed during the run"
    );
    let last = store.current().expect("stored");
    assert_ne!(
        last.access_token.expose(),
        first_token.expose(),
        "the refreshed token was saved"
    );
    assert_eq!(
        client.metrics().requests(Operation::ListContacts, "4xx"),
        0,
        "refreshed from expires_in, not after a 401"
    );
}

#[tokio::test]
async fn an_expired_token_answer_triggers_one_refresh_as_a_safety_net() {
    let sb = start(args()).await;
    let (client, store) = installed(&sb, config(&sb), &SCOPES).await;
    let before = store.save_count();
    sb.expire_access_tokens();
    let details = client
        .account_details()
        .await
        .expect("refreshed and retried");
    assert_eq!(details.portal_id, PortalId(sb.portal_id()));
    assert_eq!(client.metrics().token_refreshes(), 1);
    assert_eq!(store.save_count(), before + 1);
    assert_eq!(
        client.metrics().requests(Operation::AccountDetails, "4xx"),
        1,
        "one 401, then success"
    );
}

#[tokio::test]
async fn concurrent_callers_with_an_expired_token_share_one_refresh() {
    let sb = start(args()).await;
    let (installer, store) = installed(&sb, config(&sb), &SCOPES).await;
    drop(installer);
    let mut expired = store.current().expect("stored");
    expired.expires_at = Utc::now() - chrono::Duration::seconds(5);
    let stale_store = Arc::new(MemoryTokenStore::new(Some(expired)));
    let client = oauth_client(&sb, config(&sb), &SCOPES, stale_store.clone());
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.account_details().await })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("call succeeds");
    }
    assert_eq!(
        client.metrics().token_refreshes(),
        1,
        "one refresh for twenty callers"
    );
    assert_eq!(stale_store.save_count(), 1);
    assert!(stale_store.current().expect("stored").expires_at > Utc::now());
}

#[tokio::test]
async fn a_refused_refresh_token_and_a_missing_connection_are_distinct_errors() {
    let sb = start(args()).await;
    let broken = OAuthTokens {
        access_token: Secret::new("expired-access"),
        refresh_token: Secret::new("revoked-refresh"),
        expires_at: Utc::now() - chrono::Duration::seconds(1),
        portal_id: Some(PortalId(sb.portal_id())),
        scopes: Vec::new(),
    };
    let store = Arc::new(MemoryTokenStore::new(Some(broken)));
    let client = oauth_client(&sb, config(&sb), &SCOPES, store);
    let err = client.account_details().await.unwrap_err();
    assert!(
        matches!(err, HubSpotError::RefreshRefused { .. }),
        "{err:?}"
    );

    let store = Arc::new(MemoryTokenStore::default());
    let empty = oauth_client(&sb, config(&sb), &SCOPES, store.clone());
    let err = empty.account_details().await.unwrap_err();
    assert!(matches!(err, HubSpotError::NotConnected), "{err:?}");
    assert!(empty.access_token().await.is_err());

    let err = empty.connect("not-a-code").await.unwrap_err();
    assert!(
        matches!(err, HubSpotError::Validation { .. }),
        "a refused code: {err:?}"
    );
    assert!(store.current().is_none(), "nothing stored");
}

#[tokio::test]
async fn a_token_store_is_usable_through_the_trait_object() {
    let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::default());
    assert!(store.load().await.expect("load").is_none());
    let tokens = OAuthTokens {
        access_token: Secret::new("a"),
        refresh_token: Secret::new("r"),
        expires_at: Utc::now(),
        portal_id: None,
        scopes: vec!["oauth".into()],
    };
    store.save(&tokens).await.expect("save");
    let loaded = store.load().await.expect("load").expect("saved");
    assert_eq!(loaded.access_token.expose(), tokens.access_token.expose());
    assert_eq!(loaded.refresh_token.expose(), tokens.refresh_token.expose());
    assert_eq!(
        (loaded.expires_at, loaded.portal_id, loaded.scopes),
        (tokens.expires_at, tokens.portal_id, tokens.scopes)
    );
}

// ---- limits and faults -------------------------------------------------------------------

#[tokio::test]
async fn a_429_storm_is_waited_out_and_every_call_succeeds() {
    let sb = start(SandboxArgs {
        requests_per_10s: 5,
        contacts: 30,
        ..args()
    })
    .await;
    // The client believes it may send 100 per 10 s; HubSpot (the sandbox) allows 5.
    let client = private_client(&sb, config(&sb));
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .list_contacts(&ListContacts {
                        limit: 5,
                        ..ListContacts::default()
                    })
                    .await
            })
        })
        .collect();
    for call in calls {
        let page = call
            .await
            .expect("task")
            .expect("each call gets through eventually");
        assert_eq!(page.results.len(), 5);
    }
    let storm = sb.stats().rate_limited;
    assert!(storm >= 1, "the burst met HubSpot's limit");
    assert_eq!(client.metrics().rate_limited_total(), storm);
    assert!(
        storm <= 12,
        "after a 429 the client waits instead of hammering ({storm} 429s)"
    );
}

#[tokio::test]
async fn a_429_retry_logs_and_counts_the_wait_the_budget_imposes() {
    // The sandbox allows 2 calls per 10 s and sends no Retry-After (as HubSpot's 10-second
    // limit); the client believes it has 100, so of three calls sent together one meets a 429,
    // and its retry waits until the first calls leave the window. That wait used to be logged as `wait=0ns`
    // (the limiter did the waiting) and was counted nowhere.
    let sb = start(SandboxArgs {
        requests_per_10s: 2,
        contacts: 3,
        ..args()
    })
    .await;
    let client = private_client(&sb, config(&sb));
    let log = capture_this_thread();
    let started = std::time::Instant::now();
    let everyone = ListContacts::default();
    let call = || client.list_contacts(&everyone);
    let (a, b, c) = tokio::join!(call(), call(), call());
    for page in [a, b, c] {
        page.expect("every call gets through");
    }
    let elapsed = started.elapsed();
    assert_eq!(sb.stats().rate_limited, 1, "one call met the limit, once");
    let waited = client
        .metrics()
        .retry_wait_seconds(RetryReason::RateLimited);
    assert!(
        (5.0..=10.5).contains(&waited),
        "the retry waited for the oldest call to leave the 10-second window: {waited} s"
    );
    assert!(
        elapsed.as_secs_f64() >= waited - 0.1,
        "the recorded wait is the wait that happened ({elapsed:?} in all)"
    );
    let text = log.text();
    let line = text
        .lines()
        .find(|l| l.contains("retrying a HubSpot call"))
        .unwrap_or_else(|| panic!("a retry is logged: {text}"));
    assert!(
        line.contains("wait=") && !line.contains("wait=0ns"),
        "{line}"
    );
}

#[tokio::test]
async fn searches_wait_out_the_secondly_limit() {
    let sb = start(SandboxArgs {
        search_per_second: 1,
        ..args()
    })
    .await;
    let mut config = config(&sb);
    config.search_per_second = 5; // more than the sandbox allows
    let client = private_client(&sb, config);
    for _ in 0..4 {
        let page = client
            .search_contacts(&SearchRequest::default())
            .await
            .expect("search gets through");
        assert_eq!(page.total, 0);
    }
    assert!(sb.stats().rate_limited >= 1);
    assert_eq!(
        client.metrics().rate_limited_total(),
        sb.stats().rate_limited
    );
}

#[tokio::test]
async fn a_5xx_burst_is_retried_for_reads_and_idempotent_writes() {
    let sb = start(SandboxArgs {
        fault_5xx: 0.3,
        contacts: 300,
        rng_seed: Some(11),
        ..args()
    })
    .await;
    let client = private_client(&sb, config(&sb));
    let mut params = ListContacts::default();
    let mut ids = Vec::new();
    loop {
        let page = client
            .list_contacts(&params)
            .await
            .expect("pages survive 5xx");
        ids.extend(page.results.into_iter().map(|c| c.id));
        let Some(after) = page.next_after else { break };
        params.after = Some(after);
    }
    assert_eq!(ids.len(), 300);
    let updates: Vec<_> = ids
        .iter()
        .map(|id| ContactUpdate {
            id: id.0.clone(),
            id_property: None,
            properties: props(&[("lastname", "Retried")]),
        })
        .collect();
    for batch in Batch::chunked(updates) {
        let outcome = client
            .batch_update(&batch)
            .await
            .expect("updates survive 5xx");
        assert!(outcome.errors.is_empty());
    }
    assert!(sb.stats().faults_5xx >= 1, "the burst happened");
    assert!(client.metrics().retries_total() >= sb.stats().faults_5xx);
    assert!(
        sb.contacts()
            .iter()
            .all(|c| c.properties.get("lastname").map(String::as_str) == Some("Retried")),
        "every update applied"
    );
}

#[tokio::test]
async fn creates_are_retried_after_a_refusing_5xx_but_not_after_a_gateway_error() {
    let sb = start(SandboxArgs {
        fault_5xx: 0.3,
        rng_seed: Some(3),
        ..args()
    })
    .await;
    let client = private_client(&sb, config(&sb));
    let mut answered = 0;
    let mut gateway_errors = 0;
    for b in 0..10 {
        let inputs = (0..10)
            .map(|i| ContactCreate {
                properties: props(&[("firstname", &format!("G{b}-{i}"))]),
            })
            .collect();
        match client
            .batch_create(&Batch::new(inputs).expect("10 inputs"))
            .await
        {
            Ok(_) => answered += 1,
            // 502/504: a gateway lost the answer, the write may have been applied.
            Err(HubSpotError::Ambiguous { cause, .. }) => {
                assert!(cause.contains("502") || cause.contains("504"), "{cause}");
                gateway_errors += 1;
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert!(sb.stats().faults_5xx >= 1, "the burst happened");
    assert!(answered >= 1);
    // The sandbox's 5xx apply nothing, so exactly the answered batches are held, once each.
    let names: HashSet<String> = sb
        .contacts()
        .iter()
        .filter_map(|c| c.properties.get("firstname").cloned())
        .collect();
    assert_eq!(
        sb.contact_count(),
        10 * answered,
        "{gateway_errors} batches reported ambiguous"
    );
    assert_eq!(names.len(), 10 * answered, "no duplicates");
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_reported_ambiguous_and_never_duplicated() {
    let sb = start(SandboxArgs {
        fault_drop_after_write: 0.5,
        rng_seed: Some(9),
        ..args()
    })
    .await;
    let client = private_client(&sb, config(&sb));
    // No emails: HubSpot could not catch a repeated create by email, so a blind retry would
    // duplicate these.
    let mut answered = 0;
    let mut ambiguous = 0;
    for b in 0..10 {
        let inputs = (0..10)
            .map(|i| ContactCreate {
                properties: props(&[("firstname", &format!("N{b}-{i}"))]),
            })
            .collect();
        match client
            .batch_create(&Batch::new(inputs).expect("10 inputs"))
            .await
        {
            Ok(outcome) => {
                assert_eq!(outcome.results.len(), 10);
                answered += 1;
            }
            Err(HubSpotError::Ambiguous { operation, .. }) => {
                assert_eq!(operation, Operation::BatchCreate);
                ambiguous += 1;
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert!(ambiguous >= 1, "some answers were lost");
    assert_eq!(
        ambiguous,
        sb.stats().dropped_after_write,
        "each lost answer is reported"
    );
    let names: Vec<String> = sb
        .contacts()
        .iter()
        .filter_map(|c| c.properties.get("firstname").cloned())
        .collect();
    let unique: HashSet<&String> = names.iter().collect();
    assert_eq!(
        names.len(),
        100,
        "every batch applied exactly once ({answered} answered)"
    );
    assert_eq!(unique.len(), 100, "no duplicates");
}

#[tokio::test]
async fn idempotent_writes_whose_answer_is_lost_are_retried_to_an_answer() {
    let sb = start(SandboxArgs {
        fault_drop_after_write: 0.5,
        rng_seed: Some(5),
        contacts: 50,
        ..args()
    })
    .await;
    let client = private_client(&sb, config(&sb));
    let ids: Vec<HsObjectId> = sb
        .contacts()
        .into_iter()
        .map(|c| HsObjectId(c.id))
        .collect();
    let updates: Vec<ContactUpdate> = ids
        .iter()
        .map(|id| ContactUpdate {
            id: id.0.clone(),
            id_property: None,
            properties: props(&[("lastname", "Dropped")]),
        })
        .collect();
    for _ in 0..5 {
        client
            .batch_update(&Batch::new(updates.clone()).expect("50 inputs"))
            .await
            .expect("updates are retried until answered");
    }
    client
        .batch_archive(&Batch::new(ids[..5].to_vec()).expect("5 inputs"))
        .await
        .expect("archive is retried until answered");
    assert!(sb.stats().dropped_after_write >= 1);
    assert_eq!(sb.contact_count(), 45);
    assert!(
        sb.contacts()
            .iter()
            .all(|c| c.properties.get("lastname").map(String::as_str) == Some("Dropped"))
    );
}

#[tokio::test]
async fn metrics_render_what_happened() {
    let sb = start(args()).await;
    let client = private_client(&sb, config(&sb));
    client.account_details().await.expect("details");
    let _ = client.get_contact("424242", None, &[]).await;
    let mut registry = prometheus_client::registry::Registry::default();
    client.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("hubspot_requests_total{operation=\"account_details\",status=\"2xx\"} 1")
    );
    assert!(text.contains("hubspot_requests_total{operation=\"get_contact\",status=\"4xx\"} 1"));
    assert!(
        text.contains("hubspot_request_duration_seconds_count{operation=\"account_details\"} 1")
    );
}
