//! The OAuth install flow over real HTTP, on SQLite and PostgreSQL: the install page, the
//! sandbox's authorize page, the callbacks and every way they refuse, the stored encrypted
//! tokens, `GET /api/access-token`, a push job that syncs with the installed app's token, the
//! status page and readiness once HubSpot refuses the refresh token, jobs once it does, and the
//! rate limit of the public pages.
//!
//! And who may connect: only the operator (bearer token, or a session from `POST /login`)
//! gets an install link; once connected the account is pinned (another account's callback is
//! refused, nothing stored) until the operator disconnects; `hubspot.portal_id` pins it from
//! configuration; and a sync against another account than the local links were made with
//! refuses to run.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;
mod routes_support;

use chrono::{Duration, Utc};
use common::TestDb;
use crm_sync::api::ratelimit::{Quota, RateLimits};
use crm_sync::ids::PortalId;
use crm_sync::jobs::model::{Counts, Job, JobAction, JobSpec, JobStatus, PushMode, Trigger};
use crm_sync::jobs::queue::SyncTask;
use crm_sync::jobs::runner::StopCheck;
use crm_sync::jobs::worker::{RetryPolicy, WorkerConfig, process, run_workers};
use crm_sync::jobs::{EnqueueRequest, JobRunner, enqueue};
use crm_sync::sandbox::{SandboxArgs, SandboxHandle};
use crm_sync::startup::HUBSPOT_SCOPES;
use crm_sync::store::{NewContact, Store};
use crm_sync::sync::{SyncContext, SyncRunner};
use reqwest::StatusCode;
use routes_support::{
    Browser, CLIENT_ID, Options, Server, TOKEN, assert_security_headers, bind, install_link_of,
    oauth_calls, query_of, sandbox_args, start_sandbox, with_param,
};
use serde_json::Value;
use std::sync::Arc;
use url::Url;

async fn world(db: &TestDb, options: Options) -> (SandboxHandle, Server) {
    let sandbox = start_sandbox(sandbox_args()).await;
    let server = Server::start(bind().await, db.store().await, &sandbox, options).await;
    (sandbox, server)
}

/// Another HubSpot account: a sandbox of the same app reporting `portal_id`, and a server on
/// `store` whose client talks to it (as after pointing the service at another account).
async fn other_account(store: &Store, portal_id: i64) -> (SandboxHandle, Server) {
    let sandbox = start_sandbox(SandboxArgs {
        portal_id,
        ..sandbox_args()
    })
    .await;
    let server = Server::start(bind().await, store.clone(), &sandbox, Options::default()).await;
    (sandbox, server)
}

/// Rows in `table` (a fixed name from the test itself).
async fn count_rows(store: &Store, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    if let Some(pool) = store.pg_pool() {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .expect("count")
    } else if let Some(pool) = store.sqlite_pool() {
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .expect("count")
    } else {
        unreachable!("a store has a pool")
    }
}

async fn post_json(server: &Server, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().post(server.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.expect("a JSON body"))
}

/// Asserts the install page as an anonymous visitor sees it: how to connect, and nothing that
/// could start an installation (no link, no state, no cookie).
fn assert_no_install_link(page: &routes_support::Answer) {
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(page.body.contains("Sign in"), "{}", page.body);
    assert!(page.body.contains("crm-sync connect"), "{}", page.body);
    assert!(install_link_of(&page.body).is_none(), "{}", page.body);
    assert!(!page.body.contains("state="), "{}", page.body);
    assert!(!page.body.contains("oauth/authorize"), "{}", page.body);
    assert!(
        page.header("set-cookie").is_empty(),
        "no cookie for an anonymous visitor"
    );
    assert_security_headers(page);
}

/// Completes an installation like a user would; returns the callback URL that was used.
async fn install(browser: &mut Browser, server: &Server) -> Url {
    let link = browser.install_link(server).await;
    let callback = browser.authorize(&link).await;
    let done = browser.get(callback.as_str()).await;
    assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    assert_eq!(done.header("location"), "/");
    callback
}

async fn get_json(server: &Server, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().get(server.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.expect("a JSON body"))
}

/// Moves every issued state's expiry into the past, as 10 minutes of waiting would.
async fn expire_states(store: &Store) {
    if let Some(pool) = store.pg_pool() {
        sqlx::query("UPDATE oauth_states SET expires_at = now() - interval '1 second'")
            .execute(pool)
            .await
            .expect("expire states");
    } else if let Some(pool) = store.sqlite_pool() {
        sqlx::query(
            "UPDATE oauth_states SET expires_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 seconds')",
        )
        .execute(pool)
        .await
        .expect("expire states");
    }
}

/// Asserts a refused callback: a 400 HTML page that says `why` and how to start again, and
/// no call to HubSpot's token endpoint.
async fn assert_refused(browser: &mut Browser, sandbox: &SandboxHandle, callback: &Url, why: &str) {
    let calls = oauth_calls(sandbox);
    let page = browser.get(callback.as_str()).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(page.body.contains(why), "{why:?} not in {}", page.body);
    assert!(page.body.contains("href=\"/api/install\""), "{}", page.body);
    assert_security_headers(&page);
    assert_eq!(oauth_calls(sandbox), calls, "no token call was made");
}

/// Enqueues a job and hands its first delivery to the worker's `process`, as a worker would;
/// the job as it is afterwards.
async fn run_once(store: &Store, runner: &Arc<dyn JobRunner>, spec: JobSpec) -> Job {
    let request = EnqueueRequest {
        spec,
        trigger: Trigger::Cli,
        force: false,
    };
    let job = enqueue(store, request).await.expect("enqueue").job;
    let record = store
        .get_job_record(job.id)
        .await
        .expect("read")
        .expect("job");
    let task = SyncTask {
        job_id: job.id,
        delivery: record.delivery.expect("a delivery"),
    };
    let retry = RetryPolicy {
        max_attempts: 5,
        base_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(1),
    };
    let never: StopCheck = Arc::new(|| false);
    process(store, runner, retry, &task, "test-worker", never)
        .await
        .expect("settled");
    store.get_job(job.id).await.expect("read").expect("job")
}

backend_tests! {
    async fn the_install_page_links_to_hubspot_with_the_app_scopes_and_a_browser_bound_state(db: TestDb) {
        let (sandbox, server) = world(&db, Options::default()).await;
        let mut browser = Browser::operator();
        let page = browser.get(&server.url("/api/install")).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_security_headers(&page);

        let link = install_link_of(&page.body).expect("install link");
        assert_eq!(link.as_str().split('?').next(), Some(sandbox.authorize_url().as_str()));
        let q = query_of(&link);
        assert_eq!(q["client_id"], CLIENT_ID);
        assert_eq!(q["redirect_uri"], server.url("/oauth-callback"));
        let scopes: Vec<&str> = q["scope"].split(' ').collect();
        assert_eq!(scopes, HUBSPOT_SCOPES.to_vec());
        assert_eq!(q["state"].len(), 43, "256 random bits, base64url");

        let cookie = page.header("set-cookie");
        assert!(cookie.starts_with("crm_sync_oauth="), "{cookie}");
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"] {
            assert!(cookie.contains(attribute), "{attribute} missing from {cookie}");
        }
        assert!(!cookie.contains("Secure"), "plain http public_url: no Secure flag");

        // Every visit gets a fresh state; the browser keeps its nonce.
        let first_cookie = browser.cookie.clone();
        let again = browser.install_link(&server).await;
        assert_ne!(query_of(&again)["state"], q["state"]);
        assert_eq!(browser.cookie, first_cookie);
    }

    async fn installing_stores_encrypted_tokens_and_serves_them_through_the_access_token_route(db: TestDb) {
        let (sandbox, server) = world(&db, Options::default()).await;
        let mut browser = Browser::operator();
        let before = get_json(&server, "/api/access-token", Some(TOKEN)).await;
        assert_eq!(before.0, StatusCode::NOT_FOUND);
        assert_eq!(before.1["error"]["code"], "not_connected");

        install(&mut browser, &server).await;

        let stored = server.tokens.load_tokens().await.unwrap().expect("tokens stored");
        assert_eq!(stored.portal_id, Some(PortalId(sandbox.portal_id())));
        let row = server.store.list_credential_ciphers().await.unwrap().remove(0);
        for token in [stored.access_token.expose(), stored.refresh_token.expose()] {
            let leaked = |bytes: &[u8]| bytes.windows(token.len()).any(|w| w == token.as_bytes());
            assert!(!leaked(&row.access_token_cipher), "access token stored in clear");
            assert!(!leaked(row.refresh_token_cipher.as_deref().unwrap_or_default()));
        }

        let (status, body) = get_json(&server, "/api/access-token", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["access_token"], stored.access_token.expose());
        assert_eq!(body["portal_id"], sandbox.portal_id());
        assert!(body["expires_at"].as_str().is_some_and(|t| t.parse::<chrono::DateTime<Utc>>().is_ok()));

        // The token works against HubSpot.
        let contacts = reqwest::Client::new()
            .get(format!("{}/crm/v3/objects/contacts?limit=1", sandbox.base_url()))
            .bearer_auth(body["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(contacts.status(), StatusCode::OK);

        let home = browser.get(&server.url("/")).await;
        assert_eq!(home.status, StatusCode::OK);
        assert_security_headers(&home);
        assert!(home.body.contains(&format!("connected to account <strong>{}</strong>", sandbox.portal_id())), "{}", home.body);
        assert!(!home.body.contains(stored.access_token.expose()));
        let (ready, _) = get_json(&server, "/readyz", None).await;
        assert_eq!(ready, StatusCode::OK);
    }

    async fn a_push_after_installing_syncs_with_the_stored_token(db: TestDb) {
        let (sandbox, server) = world(&db, Options::default()).await;
        install(&mut Browser::operator(), &server).await;
        server
            .store
            .insert_contacts(&[
                NewContact { email: Some("ann@acme.io".to_owned()), ..NewContact::default() },
                NewContact { email: Some("bob@acme.io".to_owned()), ..NewContact::default() },
            ])
            .await
            .unwrap();
        let job = enqueue(&server.store, EnqueueRequest {
            spec: JobSpec::push(),
            trigger: Trigger::Api,
            force: false,
        })
        .await
        .unwrap()
        .job;

        // The real workers, with the server's HubSpot client: OAuth only, no private-app token.
        let runner = Arc::new(SyncRunner::new(SyncContext::new(server.client.clone())));
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let config = WorkerConfig {
            role: "test".to_owned(),
            sqlite_poll_interval: std::time::Duration::from_millis(50),
            postgres_poll_interval: std::time::Duration::from_millis(200),
            ..WorkerConfig::default()
        };
        let workers = tokio::spawn(run_workers(server.store.clone(), runner, vec![], config, async move {
            let _ = stop_rx.await;
        }));
        let started = std::time::Instant::now();
        let done = loop {
            let job = server.store.get_job(job.id).await.unwrap().unwrap();
            if job.status.is_terminal() {
                break job;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(60), "the push ends: {job:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let _ = stop.send(());
        workers.await.unwrap().unwrap();

        assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
        let Counts::Push(counts) = done.counts else { panic!("push counts") };
        assert_eq!((counts.total, counts.created), (2, 2), "{counts:?}");
        let mut in_hubspot: Vec<String> = sandbox.contacts().iter().filter_map(|c| c.email().map(str::to_owned)).collect();
        in_hubspot.sort();
        assert_eq!(in_hubspot, ["ann@acme.io", "bob@acme.io"]);
        let stored = server.tokens.load_tokens().await.unwrap();
        assert!(stored.is_some(), "the connection is still stored");
    }

    async fn the_install_callback_under_the_install_path_works_too(db: TestDb) {
        let (_sandbox, server) = world(&db, Options::default()).await;
        let mut browser = Browser::operator();
        let link = browser.install_link(&server).await;
        let mut callback = browser.authorize(&link).await;
        callback.set_path("/api/install/oauth-callback");
        let done = browser.get(callback.as_str()).await;
        assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
        assert!(server.tokens.load_tokens().await.unwrap().is_some());
    }

    async fn a_callback_without_a_state_is_refused(db: TestDb) {
        let (sandbox, server) = world(&db, Options::default()).await;
        let mut browser = Browser::operator();
        let link = browser.install_link(&server).await;
        let callback = browser.authorize(&link).await;
        let without = with_param(&callback, "state", None);
        assert_refused(&mut browser, &sandbox, &without, "no state parameter").await;
        assert!(server.tokens.load_tokens().await.unwrap().is_none());
    }

    async fn a_callback_with_an_unknown_state_is_refused(db: TestDb) {
        let (sandbox, server) = world(&db, Options::default()).await;
        let mut browser = Browser::operator();
        let link = browser.install_link(&server).await;
        let callback = browser.authorize(&link).await;
        let forged = with_param(&callback, "state", Some(&"A".repeat(43)));
        assert_refused(&mut browser, &sandbox, &forged, "not issued by this service").await;
        let garbage = with_param(&callback, "state", Some("<script>"));
        assert_refused(&mut browser, &sandbox, &garbage, "not issued by this service").await;
    }

    async fn a_callback_with_an_expired_state_is_refused(db: TestDb) {
        let (sandbox, server) = world(&db, Options::default()).await;
        let mut browser = Browser::operator();
        let link = browser.install_link(&server).await;
        let callback = browser.authorize(&link).await;
        expire_states(&server.store).await;
        assert_refused(&mut browser, &sandbox, &callback, "more than 10 minutes old").await;
    }

    async fn a_state_completes_one_installation_only(db: TestDb) {
        let (sandbox, server) = world(&db, Options::default()).await;
        let mut browser = Browser::operator();
        let callback = install(&mut browser, &server).await;
        assert_refused(&mut browser, &sandbox, &callback, "already used once").await;
    }

    async fn a_state_only_completes_in_the_browser_that_asked_for_it(db: TestDb) {
        let (sandbox, server) = world(&db, Options::default()).await;
        let mut victim = Browser::operator();
        let link = victim.install_link(&server).await;
        let callback = victim.authorize(&link).await;

        let mut no_cookie = Browser::new();
        assert_refused(&mut no_cookie, &sandbox, &callback, "started in another browser").await;
        let mut other = Browser::operator();
        other.install_link(&server).await;
        assert_refused(&mut other, &sandbox, &callback, "started in another browser").await;

        // The attempts did not burn the state: its own browser still completes.
        let done = victim.get(callback.as_str()).await;
        assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
    }

    async fn a_declined_consent_says_so_and_offers_to_retry(db: TestDb) {
        let (sandbox, server) = world(&db, Options::default()).await;
        let mut browser = Browser::operator();
        let link = browser.install_link(&server).await;
        let callback = browser.authorize(&link).await;
        let declined = with_param(&with_param(&callback, "code", None), "error", Some("access_denied"));
        assert_refused(&mut browser, &sandbox, &declined, "declined").await;
        assert!(server.tokens.load_tokens().await.unwrap().is_none());
    }

    async fn a_code_hubspot_refuses_ends_on_a_page_that_says_so(db: TestDb) {
        let (_sandbox, server) = world(&db, Options::default()).await;
        let mut browser = Browser::operator();
        let link = browser.install_link(&server).await;
        let callback = browser.authorize(&link).await;
        let bad = with_param(&callback, "code", Some("not-a-code"));
        let page = browser.get(bad.as_str()).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
        assert!(page.body.contains("refused the authorization code"), "{}", page.body);
        assert!(page.body.contains("href=\"/api/install\""));
        assert_security_headers(&page);
        assert!(server.tokens.load_tokens().await.unwrap().is_none());
    }

    async fn a_revoked_refresh_token_marks_the_connection_broken_everywhere(db: TestDb) {
        let sandbox = start_sandbox(sandbox_args()).await;
        let store = db.store().await;
        let server = Server::start(bind().await, store.clone(), &sandbox, Options::default()).await;
        let mut browser = Browser::operator();
        install(&mut browser, &server).await;
        server.stop().await;

        // The app is uninstalled: HubSpot forgets the refresh token; the access token expires.
        let mut tokens = routes_support::cipher_store(&store).load_tokens().await.unwrap().unwrap();
        let revoked = reqwest::Client::new()
            .delete(format!("{}/oauth/v1/refresh-tokens/{}", sandbox.base_url(), tokens.refresh_token.expose()))
            .send()
            .await
            .unwrap();
        assert!(revoked.status().is_success(), "{}", revoked.status());
        tokens.expires_at = Utc::now() - Duration::seconds(1);
        routes_support::cipher_store(&store).save_tokens(&tokens).await.unwrap();

        let server = Server::start(bind().await, store, &sandbox, Options::default()).await;
        let (status, body) = get_json(&server, "/api/access-token", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "hubspot_connection_broken");
        assert!(body["error"]["message"].as_str().unwrap().contains("/api/install"));

        let (ready, body) = get_json(&server, "/readyz", None).await;
        assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "hubspot_connection_broken");

        let home = browser.get(&server.url("/")).await;
        assert!(home.body.contains("is broken"), "{}", home.body);
        assert!(home.body.contains("until the app is installed again"), "{}", home.body);
        let operator = operator_home(&server).await;
        assert!(operator.contains("href=\"/api/install\">Reconnect HubSpot<"), "{operator}");

        // Installing again repairs it.
        install(&mut browser, &server).await;
        let (ready, _) = get_json(&server, "/readyz", None).await;
        assert_eq!(ready, StatusCode::OK);
    }

    async fn a_job_whose_refresh_hubspot_refuses_fails_at_once_and_the_next_one_never_calls_hubspot(db: TestDb) {
        let sandbox = start_sandbox(sandbox_args()).await;
        sandbox.seed_contacts(5);
        let store = db.store().await;
        let server = Server::start(bind().await, store.clone(), &sandbox, Options::default()).await;
        let mut browser = Browser::operator();
        install(&mut browser, &server).await;
        // The service's one client (the API's and the jobs') now holds fresh tokens.
        let runner: Arc<dyn JobRunner> =
            Arc::new(SyncRunner::new(SyncContext::new(server.client.clone())));

        // The app is uninstalled: HubSpot forgets the refresh token; the access token expires.
        let tokens = server.tokens.load_tokens().await.unwrap().unwrap();
        let revoked = reqwest::Client::new()
            .delete(format!("{}/oauth/v1/refresh-tokens/{}", sandbox.base_url(), tokens.refresh_token.expose()))
            .send()
            .await
            .unwrap();
        assert!(revoked.status().is_success(), "{}", revoked.status());
        sandbox.expire_access_tokens();

        let pull = run_once(&store, &runner, JobSpec::pull()).await;
        assert_eq!(pull.status, JobStatus::Failed, "{pull:#?}");
        assert_eq!(pull.attempts, 1, "not retried: {pull:#?}");
        let reason = pull.error.as_deref().unwrap_or_default();
        assert!(reason.contains("refused the refresh token") && reason.contains("reinstall the app at /api/install"),
            "{reason}");

        let (ready, body) = get_json(&server, "/readyz", None).await;
        assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "hubspot_connection_broken");
        let home = browser.get(&server.url("/")).await;
        assert!(home.body.contains("is broken"), "{}", home.body);

        let calls = sandbox.stats().requests;
        let oauth = oauth_calls(&sandbox);
        for spec in [JobSpec::from(JobAction::Push { mode: PushMode::Link }), JobSpec::pull()] {
            let job = run_once(&store, &runner, spec).await;
            assert_eq!(job.status, JobStatus::Failed, "{job:#?}");
            assert_eq!(job.attempts, 1, "{job:#?}");
            let reason = job.error.as_deref().unwrap_or_default();
            assert!(reason.contains("broken") && reason.contains("/api/install"), "{reason}");
        }
        assert_eq!(sandbox.stats().requests, calls, "no HubSpot call once the connection is broken");
        assert_eq!(oauth_calls(&sandbox), oauth, "not even a refresh");

        // Installing again repairs it, and jobs run again.
        install(&mut browser, &server).await;
        let pull = run_once(&store, &runner, JobSpec::pull()).await;
        assert_eq!(pull.status, JobStatus::Succeeded, "{pull:#?}");
        server.stop().await;
    }

    async fn the_install_pages_are_rate_limited_per_client(db: TestDb) {
        let options = Options {
            rate_limits: RateLimits {
                pages: Quota { burst: 3, per_minute: 1 },
                ..Options::default().rate_limits
            },
            ..Options::default()
        };
        let (_sandbox, server) = world(&db, options).await;
        let mut browser = Browser::operator();
        for _ in 0..3 {
            assert_eq!(browser.get(&server.url("/api/install")).await.status, StatusCode::OK);
        }
        let refused = browser.get(&server.url("/oauth-callback")).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1));
        assert_security_headers(&refused);
        // Protected and operational routes are not part of that budget.
        let (ready, _) = get_json(&server, "/readyz", None).await;
        assert_eq!(ready, StatusCode::OK);
    }

    async fn an_anonymous_visitor_gets_no_install_link_and_no_state(db: TestDb) {
        let (sandbox, server) = world(&db, Options::default()).await;
        let calls = oauth_calls(&sandbox);
        assert_no_install_link(&Browser::new().get(&server.url("/api/install")).await);

        let mut wrong = Browser::new();
        wrong.bearer = Some("not-the-token".to_owned());
        assert_no_install_link(&wrong.get(&server.url("/api/install")).await);

        assert_eq!(count_rows(&server.store, "oauth_states").await, 0, "no state was issued");
        assert_eq!(oauth_calls(&sandbox), calls);
        // The status page says how to sign in.
        let home = Browser::new().get(&server.url("/")).await;
        assert!(home.body.contains("action=\"/login\""), "{}", home.body);
        assert!(home.body.contains("name=\"token\""), "{}", home.body);
    }

    async fn signing_in_with_the_api_token_opens_a_session_that_shows_the_install_link(db: TestDb) {
        let (_sandbox, server) = world(&db, Options::default()).await;
        let mut browser = Browser::new();

        let refused = browser.sign_in(&server, "not-the-token").await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
        assert!(refused.header("set-cookie").is_empty(), "a wrong token sets nothing");
        assert_eq!(count_rows(&server.store, "operator_sessions").await, 0);
        assert_no_install_link(&browser.get(&server.url("/api/install")).await);

        let signed_in = browser.sign_in(&server, TOKEN).await;
        assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{}", signed_in.body);
        assert_eq!(signed_in.header("location"), "/");
        let cookie = signed_in.header("set-cookie");
        assert!(cookie.starts_with("crm_sync_session="), "{cookie}");
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(cookie.contains(attribute), "{attribute} missing from {cookie}");
        }
        assert!(!cookie.contains("Secure"), "plain http public_url: no Secure flag");
        let session = browser.session.clone().expect("a session cookie");
        let stored: Vec<String> = if let Some(pool) = server.store.pg_pool() {
            sqlx::query_scalar("SELECT session_hash FROM operator_sessions").fetch_all(pool).await.unwrap()
        } else {
            sqlx::query_scalar("SELECT session_hash FROM operator_sessions")
                .fetch_all(server.store.sqlite_pool().unwrap()).await.unwrap()
        };
        assert_eq!(stored.len(), 1);
        assert_ne!(stored[0], session, "only a hash of the session is stored");

        let link = browser.install_link(&server).await;
        assert_eq!(query_of(&link)["client_id"], CLIENT_ID);
        let home = browser.get(&server.url("/")).await;
        assert!(home.body.contains("action=\"/logout\""), "{}", home.body);
        // The session completes an installation like the bearer token does.
        let callback = browser.authorize(&link).await;
        let done = browser.get(callback.as_str()).await;
        assert_eq!(done.status, StatusCode::FOUND, "{}", done.body);
        assert!(server.tokens.load_tokens().await.unwrap().is_some());
    }

    async fn logging_out_ends_the_session_even_for_a_replayed_cookie(db: TestDb) {
        let (_sandbox, server) = world(&db, Options::default()).await;
        let mut browser = Browser::new();
        browser.sign_in(&server, TOKEN).await;
        let session = browser.session.clone().expect("signed in");
        browser.install_link(&server).await;

        let out = browser.post_form(&server.url("/logout"), &[]).await;
        assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
        let cleared = out.header("set-cookie");
        assert!(cleared.starts_with("crm_sync_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
        assert_eq!(browser.session, None);

        let mut replay = Browser::new();
        replay.session = Some(session);
        assert_no_install_link(&replay.get(&server.url("/api/install")).await);
        let home = replay.get(&server.url("/")).await;
        assert!(home.body.contains("action=\"/login\""), "signed out: {}", home.body);
    }

    async fn the_session_cookie_is_secure_when_the_public_url_is_https(db: TestDb) {
        let options = Options { public_url: Some("https://crm.example.com".to_owned()), ..Options::default() };
        let (_sandbox, server) = world(&db, options).await;
        let signed_in = Browser::new().sign_in(&server, TOKEN).await;
        assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{}", signed_in.body);
        let cookie = signed_in.header("set-cookie");
        assert!(cookie.contains("; Secure"), "{cookie}");
    }

    async fn login_is_rate_limited_like_the_other_public_pages(db: TestDb) {
        let options = Options {
            rate_limits: RateLimits {
                pages: Quota { burst: 3, per_minute: 1 },
                ..Options::default().rate_limits
            },
            ..Options::default()
        };
        let (_sandbox, server) = world(&db, options).await;
        let mut guesser = Browser::new();
        for _ in 0..3 {
            let answer = guesser.sign_in(&server, "guess").await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        }
        let limited = guesser.sign_in(&server, TOKEN).await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.body);
        assert!(limited.header("set-cookie").is_empty(), "not even the right token gets through");
    }

    async fn a_callback_for_another_account_is_refused_and_nothing_is_stored(db: TestDb) {
        let store = db.store().await;
        let (sandbox, server) = world(&db, Options::default()).await;
        install(&mut Browser::operator(), &server).await;
        server.stop().await;
        let connected = PortalId(sandbox.portal_id());
        let before = store.list_credential_ciphers().await.unwrap();

        let (_other, server) = other_account(&store, 4_242_424).await;
        let mut browser = Browser::operator();
        let page = browser.get(&server.url("/api/install")).await;
        assert!(
            page.body.contains(&format!("tied to the connected HubSpot account {connected}")),
            "the operator is told before approving: {}",
            page.body
        );
        let link = browser.install_link(&server).await;
        let callback = browser.authorize(&link).await;
        let page = browser.get(callback.as_str()).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
        assert!(page.body.contains("4242424"), "names the offered account: {}", page.body);
        assert!(page.body.contains(&connected.to_string()), "names the connected one: {}", page.body);
        assert!(page.body.contains("disconnect"), "says what to do: {}", page.body);
        assert_security_headers(&page);

        assert_eq!(store.list_credential_ciphers().await.unwrap(), before, "nothing stored");
        let (status, body) = get_json(&server, "/api/access-token", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["portal_id"], connected.0, "still the first account");
    }

    async fn after_disconnecting_the_operator_can_connect_another_account(db: TestDb) {
        let store = db.store().await;
        let (sandbox, server) = world(&db, Options::default()).await;
        install(&mut Browser::operator(), &server).await;

        let (status, body) = post_json(&server, "/api/connection/disconnect", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, body) = post_json(&server, "/api/connection/disconnect", Some("wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(server.tokens.load_tokens().await.unwrap().is_some(), "still connected");

        let (status, body) = post_json(&server, "/api/connection/disconnect", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["disconnected"], true);
        assert_eq!(body["portal_ids"], serde_json::json!([sandbox.portal_id()]));
        assert!(server.tokens.load_tokens().await.unwrap().is_none(), "tokens removed");
        let (status, body) = get_json(&server, "/api/access-token", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "the server forgot the tokens too: {body}");
        assert_eq!(body["error"]["code"], "not_connected");
        server.stop().await;

        let (other, server) = other_account(&store, 4_242_424).await;
        install(&mut Browser::operator(), &server).await;
        let (status, body) = get_json(&server, "/api/access-token", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["portal_id"], other.portal_id());
        let home = Browser::new().get(&server.url("/")).await;
        assert!(home.body.contains("connected to account <strong>4242424</strong>"), "{}", home.body);
    }

    async fn a_configured_portal_id_refuses_other_accounts_even_before_any_connection(db: TestDb) {
        let options = Options { portal_id: Some(777), ..Options::default() };
        let (sandbox, server) = world(&db, options).await;
        let mut browser = Browser::operator();
        let link = browser.install_link(&server).await;
        let callback = browser.authorize(&link).await;
        let page = browser.get(callback.as_str()).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
        assert!(page.body.contains("777") && page.body.contains("hubspot.portal_id"), "{}", page.body);
        assert!(page.body.contains(&sandbox.portal_id().to_string()), "{}", page.body);
        assert!(server.tokens.load_tokens().await.unwrap().is_none(), "nothing stored");
        assert_eq!(count_rows(&server.store, "hubspot_credentials").await, 0);
    }

    async fn a_sync_against_another_account_than_the_links_refuses_before_writing(db: TestDb) {
        let store = db.store().await;
        let (first, server) = world(&db, Options::default()).await;
        install(&mut Browser::operator(), &server).await;
        store
            .insert_contacts(&[NewContact { email: Some("ann@acme.io".to_owned()), ..NewContact::default() }])
            .await
            .unwrap();
        let runner: Arc<dyn JobRunner> = Arc::new(SyncRunner::new(SyncContext::new(server.client.clone())));
        let push = run_once(&store, &runner, JobSpec::push()).await;
        assert_eq!(push.status, JobStatus::Succeeded, "{push:#?}");
        assert_eq!(push.portal_id, Some(PortalId(first.portal_id())));
        let (status, _) = post_json(&server, "/api/connection/disconnect", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        server.stop().await;

        // The operator connects another account; the local row still holds the first one's id.
        let (second, server) = other_account(&store, 4_242_424).await;
        install(&mut Browser::operator(), &server).await;
        store
            .insert_contacts(&[NewContact { email: Some("bob@acme.io".to_owned()), ..NewContact::default() }])
            .await
            .unwrap();
        let links_before: Vec<_> = store.list_contacts(None, 10).await.unwrap().into_iter().map(|c| c.hs_object_id).collect();
        let runner: Arc<dyn JobRunner> = Arc::new(SyncRunner::new(SyncContext::new(server.client.clone())));
        for spec in [JobSpec::push(), JobSpec::pull()] {
            let job = run_once(&store, &runner, spec).await;
            assert_eq!(job.status, JobStatus::Failed, "{job:#?}");
            assert_eq!(job.attempts, 1, "not retried: {job:#?}");
            let reason = job.error.as_deref().unwrap_or_default();
            assert!(reason.contains("4242424") && reason.contains(&first.portal_id().to_string()),
                "names both accounts: {reason}");
            assert!(reason.contains("crm-sync connect"), "says what to do: {reason}");
        }
        assert!(second.contacts().is_empty(), "nothing was written to the other account");
        let links_after: Vec<_> = store.list_contacts(None, 10).await.unwrap().into_iter().map(|c| c.hs_object_id).collect();
        assert_eq!(links_after, links_before, "no local row was linked to the other account");
    }
}

#[tokio::test]
async fn without_client_credentials_the_install_page_says_what_to_set() {
    let db = TestDb::sqlite().await;
    let (_sandbox, server) = world(
        &db,
        Options {
            credentials: false,
            ..Options::default()
        },
    )
    .await;
    let page = Browser::new().get(&server.url("/api/install")).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_security_headers(&page);
    for needed in [
        "hubspot.client_id",
        "hubspot.client_secret",
        "CRM_SYNC__HUBSPOT__CLIENT_ID",
        "CLIENT_SECRET",
    ] {
        assert!(page.body.contains(needed), "{needed} not in {}", page.body);
    }
    assert!(install_link_of(&page.body).is_none(), "no broken link");
    let home = Browser::new().get(&server.url("/")).await;
    assert!(home.body.contains("not connected"), "{}", home.body);
    assert!(
        !home.body.contains("href=\"/api/install\""),
        "connecting is the operator's act"
    );
    assert!(home.body.contains("sign in below"), "{}", home.body);
    let operator = operator_home(&server).await;
    assert!(
        operator.contains("href=\"/api/install\">Connect HubSpot<"),
        "{operator}"
    );
}

/// The console as the operator sees it (bearer token).
async fn operator_home(server: &Server) -> String {
    let resp = reqwest::Client::new()
        .get(server.url("/"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.expect("a page")
}
