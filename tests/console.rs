//! The operator's console (`GET /`), specified through the real service: what anyone sees,
//! what only the operator sees, that every value is escaped, that a running job shows its
//! progress, that the live part can be fetched alone, and the store figures behind it — on
//! SQLite and PostgreSQL. `.ci/console-check` looks at the same page in a real browser.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::net::SocketAddr;

use base64::Engine as _;
use chrono::{Duration, Utc};
use common::process::{SERVE_API_TOKEN, Serve};
use crm_sync::jobs::model::{JobSpec, Trigger};
use crm_sync::jobs::queue::{EnqueueRequest, enqueue};
use crm_sync::sandbox::{Sandbox, SandboxArgs, SandboxHandle};
use crm_sync::store::{ContactOverview, NewCompany, NewContact, Store};
use sha2::{Digest, Sha256};

/// An email HubSpot refuses, written so that an unescaped page would render it as markup.
const MARKUP_EMAIL: &str = "<b>bold</b>@example.com";

backend_tests! {
    async fn anyone_sees_states_and_counts_and_only_the_operator_sees_the_failed_records(db: TestDb) {
        let store = db.store().await;
        insert(&store, &[Some(MARKUP_EMAIL)]).await;
        insert_people(&store, 0..40).await;
        let hubspot = hubspot(0).await;
        let dir = tempfile::tempdir().unwrap();
        let serve = Serve::start(dir.path(), db.url(), &hubspot.base_url(), hubspot.access_token()).await;
        let push = serve.enqueue_push().await["id"].as_str().unwrap().to_owned();
        let done = serve.wait_for(&push, "the push to end", |j| j["status"] == "succeeded").await;
        assert_eq!(done["counts"]["failed"], 1, "{done:#}");

        let anonymous = page(&serve, "/", None).await;
        assert!(anonymous.contains("connected with a private-app token"), "{anonymous}");
        assert!(anonymous.contains("id=\"contacts-total\">41<"), "{anonymous}");
        assert!(anonymous.contains("id=\"contacts-linked\">40<"), "{anonymous}");
        assert!(anonymous.contains("id=\"contacts-not-pushed\">1<"), "{anonymous}");
        assert!(anonymous.contains("id=\"contacts-failed\">1<"), "{anonymous}");
        assert!(anonymous.contains(&format!("id=\"job-{push}\"")), "the push is listed");
        assert!(anonymous.contains("41 total · 40 created · 1 failed"), "{anonymous}");
        assert!(!anonymous.contains("bold"), "an anonymous visitor sees no contact: {anonymous}");
        assert!(anonymous.contains("sign in as the operator"), "{anonymous}");
        assert!(!anonymous.contains("action=\"/disconnect\""), "nor the connection's controls");

        let operator = page(&serve, "/", Some(SERVE_API_TOKEN)).await;
        assert!(
            operator.contains("&lt;b&gt;bold&lt;/b&gt;@example.com"),
            "the operator sees the failed record, escaped: {operator}"
        );
        assert!(!operator.contains(MARKUP_EMAIL), "never as markup");
        assert!(operator.contains(&format!("href=\"#job-{push}\"")), "linked to its job");
        assert!(operator.contains("You are signed in as the operator"), "{operator}");

        // A dry run and a companies push are listed, and change neither contacts panel.
        let dry = serve.enqueue(serde_json::json!({"direction": "push", "dry_run": true})).await;
        let dry = dry["id"].as_str().unwrap().to_owned();
        serve.wait_for(&dry, "the dry run to end", |j| j["status"] == "succeeded").await;
        let companies = serve.enqueue(serde_json::json!({"direction": "push", "object": "companies"})).await;
        let companies = companies["id"].as_str().unwrap().to_owned();
        serve.wait_for(&companies, "the companies push to end", |j| j["status"] == "succeeded").await;
        let live = page(&serve, "/?fragment=live", None).await;
        assert!(live.contains("contacts · push · link · dry run"), "{live}");
        assert!(live.contains("companies · push · link"), "{live}");
        let card = live.split("id=\"push-card\"").nth(1).expect("a push card");
        let card = card.split("</article>").next().unwrap();
        assert!(card.contains("41 total · 40 created · 1 failed"), "the real contacts push: {card}");
        let card = live.split("id=\"companies\"").nth(1).expect("a companies card");
        let card = card.split("</article>").next().unwrap();
        assert!(card.contains("id=\"companies-total\">0<"), "{card}");
        assert!(card.contains("Last companies push succeeded"), "{card}");
    }

    async fn a_running_push_shows_its_progress_and_the_live_part_refreshes_alone(db: TestDb) {
        let store = db.store().await;
        insert_people(&store, 0..600).await;
        // Each HubSpot answer takes a while: the push is still running when the page is read.
        let hubspot = hubspot(400).await;
        let dir = tempfile::tempdir().unwrap();
        let serve = Serve::start(dir.path(), db.url(), &hubspot.base_url(), hubspot.access_token()).await;
        let push = serve.enqueue_push().await["id"].as_str().unwrap().to_owned();
        serve
            .wait_for(&push, "a first page committed", |j| {
                j["status"] == "running" && j["progress"]["processed"].as_u64() >= Some(100)
            })
            .await;

        let live = page(&serve, "/?fragment=live", None).await;
        assert!(!live.contains("<html"), "only the live part: {live}");
        assert!(live.contains("id=\"stamp\""), "{live}");
        let card = live.split("id=\"push-card\"").nth(1).expect("a push card");
        let card = card.split("</article>").next().unwrap();
        assert!(card.contains("s-running\">running<"), "{card}");
        assert!(card.contains("<progress max=\"600\" value=\""), "{card}");
        assert!(card.contains(" of 600 ("), "{card}");

        serve.wait_for(&push, "the push to end", |j| j["status"] == "succeeded").await;
        let after = page(&serve, "/?fragment=live", None).await;
        let card = after.split("id=\"push-card\"").nth(1).unwrap().split("</article>").next().unwrap();
        assert!(card.contains("No push running."), "{card}");
        assert!(card.contains("Last success"), "{card}");
        assert!(card.contains("600 total · 600 created"), "{card}");
    }

    async fn the_page_runs_only_its_own_script_and_refuses_unknown_fragments(db: TestDb) {
        let hubspot = hubspot(0).await;
        let dir = tempfile::tempdir().unwrap();
        let serve = Serve::start(dir.path(), db.url(), &hubspot.base_url(), hubspot.access_token()).await;
        let resp = reqwest::get(serve.url("/")).await.unwrap();
        assert_eq!(resp.status(), 200);
        let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
        let body = resp.text().await.unwrap();
        let script = body.split("<script>").nth(1).unwrap().split("</script>").next().unwrap();
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
        assert!(csp.contains(&format!("script-src 'sha256-{hash}'")), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert_eq!(body.matches("<script").count(), 1, "one script, inline, allowed by hash");

        let bogus = reqwest::get(serve.url("/?fragment=everything")).await.unwrap();
        assert!(bogus.status().is_client_error(), "{}", bogus.status());
    }

    async fn only_the_operator_may_disconnect_from_the_console_and_only_when_confirmed(db: TestDb) {
        let hubspot = hubspot(0).await;
        let dir = tempfile::tempdir().unwrap();
        let serve = Serve::start(dir.path(), db.url(), &hubspot.base_url(), hubspot.access_token()).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let post = |token: Option<&'static str>, form: &'static [(&'static str, &'static str)]| {
            let mut req = http.post(serve.url("/disconnect")).form(form);
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            req.send()
        };
        assert_eq!(post(None, &[("confirm", "yes")]).await.unwrap().status(), 401);
        assert_eq!(post(Some("not-the-token"), &[("confirm", "yes")]).await.unwrap().status(), 401);
        assert_eq!(post(Some(SERVE_API_TOKEN), &[]).await.unwrap().status(), 422);
        let done = post(Some(SERVE_API_TOKEN), &[("confirm", "yes")]).await.unwrap();
        assert_eq!(done.status(), 303);
        assert_eq!(done.headers()["location"], "/");
    }

    async fn the_contact_figures_tell_linked_unpushed_changed_and_tombstoned_rows_apart(db: TestDb) {
        let store = db.store().await;
        insert_people(&store, 0..5).await;
        for sql in [
            "UPDATE contacts SET hs_object_id = '101', pushed_version = local_version WHERE id = 1",
            "UPDATE contacts SET hs_object_id = '102', local_version = 3, pushed_version = 1 WHERE id = 2",
            "UPDATE contacts SET hs_object_id = '103', hubspot_deleted_at = CURRENT_TIMESTAMP, \
             hubspot_deleted_reason = 'deleted', hubspot_deleted_id = '103' WHERE id = 3",
        ] {
            execute(&store, sql).await;
        }
        let overview = store.contact_overview().await.unwrap();
        assert_eq!(
            overview,
            ContactOverview { total: 5, linked: 2, not_pushed: 2, changed: 1, tombstoned: 1 }
        );

        // The companies' figures are read the same way from their own table.
        store
            .insert_companies(&[NewCompany { name: Some("A".into()), domain: None }, NewCompany::default()])
            .await
            .unwrap();
        execute(&store, "UPDATE companies SET hs_object_id = '201', local_version = 2, pushed_version = 1 WHERE name = 'A'").await;
        assert_eq!(
            store.company_overview().await.unwrap(),
            ContactOverview { total: 2, linked: 1, not_pushed: 1, changed: 1, tombstoned: 0 }
        );
    }

    async fn webhook_pulls_are_summed_apart_from_the_users_jobs(db: TestDb) {
        let store = db.store().await;
        let push = enqueue(&store, EnqueueRequest { spec: JobSpec::push(), trigger: Trigger::Api, force: false })
            .await
            .unwrap()
            .job;
        let webhook = enqueue(&store, EnqueueRequest { spec: JobSpec::pull(), trigger: Trigger::Webhook, force: false })
            .await
            .unwrap()
            .job;

        let recent = store.recent_jobs_without_webhooks(10).await.unwrap();
        assert_eq!(recent.iter().map(|j| j.id).collect::<Vec<_>>(), vec![push.id]);
        let (summary, active) = store.webhook_pulls_since(Utc::now() - Duration::hours(1)).await.unwrap();
        assert_eq!(summary.runs, 1);
        assert_eq!(summary.read, 0);
        assert_eq!(active.map(|j| j.id), Some(webhook.id), "the queued webhook pull is active");
        let (later, _) = store.webhook_pulls_since(Utc::now() + Duration::minutes(1)).await.unwrap();
        assert_eq!(later.runs, 0, "outside the window");
    }
}

/// A sandbox without limits whose every answer takes `latency_ms`.
async fn hubspot(latency_ms: u64) -> SandboxHandle {
    let args = SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        latency_ms,
        rng_seed: Some(11),
        ..SandboxArgs::default()
    };
    Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the sandbox starts")
}

/// The body of `GET path`, anonymous or with the API token; it must answer 200.
async fn page(serve: &Serve, path: &str, token: Option<&str>) -> String {
    let mut req = reqwest::Client::new().get(serve.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.text().await.unwrap()
}

async fn insert(store: &Store, emails: &[Option<&str>]) {
    let batch: Vec<NewContact> = emails
        .iter()
        .map(|email| NewContact {
            email: email.map(str::to_owned),
            first_name: Some("Console".into()),
            last_name: Some("Test".into()),
        })
        .collect();
    store.insert_contacts(&batch).await.unwrap();
}

async fn insert_people(store: &Store, range: std::ops::Range<u32>) {
    let emails: Vec<String> = range.map(|i| format!("person{i}@example.com")).collect();
    let emails: Vec<Option<&str>> = emails.iter().map(|e| Some(e.as_str())).collect();
    insert(store, &emails).await;
}

async fn execute(store: &Store, sql: &str) {
    if let Some(pool) = store.pg_pool() {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .unwrap();
    } else {
        let pool = store.sqlite_pool().unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(pool)
            .await
            .unwrap();
    }
}
