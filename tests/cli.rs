//! The `crm-sync` binary as users run it: a temporary working directory, a clean environment
//! (only PATH and HOME, plus what each test sets), exit statuses and one-line errors.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::TestDb;
use common::process::{Running, STARTUP_LIMIT, crm_sync, free_port};
use crm_sync::ids::{ContactId, HsObjectId};
use crm_sync::sandbox::{Sandbox, SandboxArgs, SandboxHandle};
use crm_sync::store::{NewContact, Store, TombstoneReason};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a finished run printed.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(cmd: &mut Command) -> Run {
        let out = cmd.output().expect("start crm-sync");
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    fn ok(&self) -> &str {
        assert!(
            self.status.success(),
            "expected success, got {}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts exit status 1 with exactly one `error: ` line, last on stderr, and no panic;
    /// returns that line.
    fn error_line(&self) -> &str {
        assert_eq!(self.status.code(), Some(1), "stderr: {}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .collect();
        assert_eq!(errors.len(), 1, "one error line expected: {}", self.stderr);
        assert_eq!(
            self.stderr.lines().last(),
            Some(errors[0]),
            "{}",
            self.stderr
        );
        assert!(errors[0].starts_with("error: "), "{}", errors[0]);
        errors[0]
    }
}

/// Links a row to a HubSpot id with the user's own SQL.
async fn link_by_hand(store: &Store, id: ContactId, hs: &str) {
    const SQL: &str = "UPDATE contacts SET hs_object_id = $1 WHERE id = $2";
    if let Some(pool) = store.pg_pool() {
        sqlx::query(SQL)
            .bind(hs)
            .bind(id.0)
            .execute(pool)
            .await
            .expect("link");
    } else {
        let pool = store.sqlite_pool().expect("a pool");
        sqlx::query(SQL)
            .bind(hs)
            .bind(id.0)
            .execute(pool)
            .await
            .expect("link");
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary working directory")
}

fn write(path: PathBuf, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a parent folder")).expect("mkdir");
    std::fs::write(path, text).expect("write file");
}

async fn count_contacts(url: &str) -> i64 {
    let store = Store::connect(url).await.expect("connect to count");
    let n = store.count_contacts().await.expect("count contacts");
    store.close().await;
    n
}

/// Follows `paging.next.after` from the first page to the last; returns every contact id.
async fn page_through_contacts(base: &str, token: &str) -> Vec<i64> {
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{base}/contacts?limit=100");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let resp = http.get(&url).bearer_auth(token).send().await.expect("GET");
        assert_eq!(resp.status(), 200, "{url}");
        let page: serde_json::Value = resp.json().await.expect("JSON page");
        let results = page["results"].as_array().expect("results array");
        ids.extend(
            results
                .iter()
                .map(|c| c["id"].as_i64().expect("numeric id")),
        );
        match page["paging"]["next"]["after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return ids,
        }
    }
}

#[test]
fn migrate_creates_the_default_sqlite_database_in_the_working_directory() {
    let dir = tempdir();
    let out = Run::of(crm_sync(dir.path()).arg("migrate"));
    assert!(
        out.ok().contains("sqlite://data/crm-sync.db"),
        "{}",
        out.stdout
    );
    assert!(dir.path().join("data/crm-sync.db").is_file());
    // Migrating again is harmless.
    Run::of(crm_sync(dir.path()).arg("migrate")).ok();
}

#[test]
fn the_shipped_default_toml_changes_nothing() {
    let dir = tempdir();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let text = std::fs::read_to_string(shipped).expect("read config/default.toml");
    write(dir.path().join("config/default.toml"), &text);
    let out = Run::of(crm_sync(dir.path()).arg("migrate"));
    assert!(
        out.ok().contains("sqlite://data/crm-sync.db"),
        "{}",
        out.stdout
    );
}

/// Polls `check` every 100 ms until it yields a value; fails naming `what` after
/// [`STARTUP_LIMIT`] (generous: the machine may be loaded).
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            started.elapsed() < STARTUP_LIMIT,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET `url` with the API token; the answer's JSON.
async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> serde_json::Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("JSON from {url}: {e}"))
}

backend_tests! {
    async fn serve_with_the_sandbox_connects_through_oauth_and_receives_its_webhooks(db: TestDb) {
        let dir = tempdir();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut cmd = crm_sync(dir.path());
        cmd.args(["serve", "--sandbox"])
            .env("DATABASE_URL", db.url())
            .env("CRM_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("CRM_SYNC__SERVER__PUBLIC_URL", &base);
        let mut server = Running::start(cmd, dir.path());
        server.wait_healthy(&base).await;
        let token = std::fs::read_to_string(dir.path().join("data/api-token")).expect("api token");
        let token = token.trim();
        let http = reqwest::Client::new();

        // No click: the service installs itself in the sandbox through the OAuth flow.
        eventually("the service connected to the sandbox portal", async || {
            let page = reqwest::get(format!("{base}/")).await.expect("GET /").text().await.unwrap();
            page.contains("HubSpot is connected to account <strong>1000001</strong>").then_some(())
        })
        .await;
        let access = get_json(&http, &format!("{base}/api/access-token"), token).await;
        assert_eq!(access["portal_id"], 1_000_001, "{access}");
        let access_token = access["access_token"].as_str().expect("an OAuth token").to_owned();
        let store = Store::connect(db.url()).await.expect("connect");
        let stored = store.current_credentials().await.unwrap().expect("stored credentials");
        assert!(
            !stored
                .access_token_cipher
                .windows(access_token.len())
                .any(|w| w == access_token.as_bytes()),
            "the token is stored encrypted"
        );
        let install = http.get(format!("{base}/api/install")).bearer_auth(token).send().await.expect("install page");
        assert_eq!(install.status(), 200, "the install link still works for the operator");
        let anonymous = reqwest::get(format!("{base}/api/install")).await.expect("install page");
        assert_eq!(anonymous.status(), 401, "and for no one else");

        // Someone adds a contact in HubSpot: its webhook brings it here.
        let (_, stderr) = server.output();
        let sandbox = stderr
            .split_whitespace()
            .find_map(|w| w.strip_prefix("sandbox="))
            .expect("the sandbox's address is logged")
            .to_owned();
        let created = http
            .post(format!("{sandbox}/crm/v3/objects/contacts"))
            .bearer_auth(&access_token)
            // A person's change in HubSpot, not this app's own write (an echo, never read).
            .header("x-sandbox-user-id", "7")
            .json(&serde_json::json!({"properties": {"email": "ada@example.com"}}))
            .send()
            .await
            .expect("create in the sandbox");
        assert_eq!(created.status(), 201);
        let ids = eventually("the contact arrives", async || {
            Some(page_through_contacts(&base, token).await).filter(|ids| !ids.is_empty())
        })
        .await;
        assert_eq!(ids.len(), 1, "only the changed contact is pulled");
        let jobs = get_json(&http, &format!("{base}/api/jobs"), token).await;
        assert_eq!(jobs["results"][0]["trigger"], "webhook", "{jobs}");
        assert_eq!(jobs["results"][0]["portal_id"], 1_000_001, "the job names its account: {jobs}");
        assert!(server.terminate().success());

        // A restart resumes the same sandbox account (kept in data/): a pull finds its 250
        // demo contacts and, unchanged, the one the webhook brought.
        let mut cmd = crm_sync(dir.path());
        cmd.args(["serve", "--sandbox"])
            .env("DATABASE_URL", db.url())
            .env("CRM_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("CRM_SYNC__SERVER__PUBLIC_URL", &base);
        let mut server = Running::start(cmd, dir.path());
        server.wait_healthy(&base).await;
        let job: serde_json::Value = http
            .post(format!("{base}/api/jobs"))
            .bearer_auth(token)
            .json(&serde_json::json!({"direction": "pull"}))
            .send()
            .await
            .expect("POST /api/jobs")
            .json()
            .await
            .expect("JSON");
        let id = job["id"].as_str().expect("a job id").to_owned();
        let done = eventually("the pull ends", async || {
            let job = get_json(&http, &format!("{base}/api/jobs/{id}"), token).await;
            let status = job["status"].as_str().unwrap_or_default();
            ["succeeded", "failed", "cancelled"].contains(&status).then_some(job)
        })
        .await;
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_eq!(done["counts"]["total"], 251, "the same sandbox's contacts: {done}");
        assert_eq!(done["counts"]["unchanged"], 1, "{done}");
        store.close().await;
        assert!(server.terminate().success());
    }

    async fn migrate_applies_the_migrations_of_the_configured_database(db: TestDb) {
        let dir = tempdir();
        let out = Run::of(
            crm_sync(dir.path())
                .arg("migrate")
                .env("CRM_SYNC__DATABASE__URL", db.url()),
        );
        assert!(out.ok().contains(&db.backend().to_string()), "{}", out.stdout);
        assert_eq!(count_contacts(db.url()).await, 0, "{db}");
    }

    async fn restore_removes_the_mark_of_a_contact_hubspot_deleted_and_refuses_anything_else(db: TestDb) {
        let dir = tempdir();
        let store = db.store().await;
        store
            .insert_contacts(&[NewContact { email: Some("gone@acme.io".into()), ..NewContact::default() }])
            .await
            .expect("insert");
        let id = store.list_contacts(None, 1).await.expect("list")[0].id;
        // As the deletion webhook leaves it.
        link_by_hand(&store, id, "101").await;
        store.tombstone_hs_objects(&[HsObjectId::from("101")], TombstoneReason::Deleted).await.expect("tombstone");
        let restore = |id: i64| {
            Run::of(
                crm_sync(dir.path())
                    .args(["restore", &id.to_string()])
                    .env("CRM_SYNC__DATABASE__URL", db.url()),
            )
        };

        let done = restore(id.0);

        assert!(done.ok().contains(&format!("restored contact {id}")), "{}", done.stdout);
        let contact = store.get_contact(id).await.expect("read").expect("row");
        assert_eq!(contact.hubspot_deleted, None);
        assert_eq!(contact.email.as_deref(), Some("gone@acme.io"), "the row itself is untouched");
        let again = restore(id.0);
        assert!(again.error_line().contains("not marked deleted"), "{}", again.stderr);
        let unknown = restore(id.0 + 1000);
        assert!(unknown.error_line().contains("no contact with id"), "{}", unknown.stderr);
        store.close().await;
    }

    async fn seed_inserts_exactly_the_requested_count_and_a_second_run_adds(db: TestDb) {
        let dir = tempdir();
        let seed = |count: &str| {
            Run::of(
                crm_sync(dir.path())
                    .args(["seed", "--industry", "saas", "--count", count])
                    .env("CRM_SYNC__DATABASE__URL", db.url()),
            )
        };
        let first = seed("1000");
        assert!(first.ok().contains("inserted 1000 saas contacts"), "{}", first.stdout);
        assert!(first.stdout.contains("--rng-seed "), "the seed is printed: {}", first.stdout);
        assert_eq!(count_contacts(db.url()).await, 1000, "{db}");
        seed("25").ok();
        assert_eq!(count_contacts(db.url()).await, 1025, "{db}");
    }

    async fn seeding_with_the_same_rng_seed_into_fresh_databases_gives_the_same_contacts(db: TestDb) {
        let other = match db.backend() {
            crm_sync::store::Backend::Sqlite => TestDb::sqlite().await,
            crm_sync::store::Backend::Postgres => TestDb::postgres().await,
        };
        let dir = tempdir();
        for target in [&db, &other] {
            Run::of(
                crm_sync(dir.path())
                    .args(["seed", "--industry", "retail", "--count", "50", "--rng-seed", "42"])
                    .env("CRM_SYNC__DATABASE__URL", target.url()),
            )
            .ok();
        }
        let emails = |store: Store| async move {
            let page = store.list_contacts(None, 100).await.expect("list");
            page.into_iter().map(|c| c.email).collect::<Vec<_>>()
        };
        assert_eq!(emails(db.store().await).await, emails(other.store().await).await);
    }

    async fn serve_pages_through_every_seeded_contact_with_the_generated_token(db: TestDb) {
        let dir = tempdir();
        // The sample app's variable, as the issue's "done" criterion uses it.
        Run::of(
            crm_sync(dir.path())
                .args(["seed", "--industry", "saas", "--count", "1000"])
                .env("DATABASE_URL", db.url()),
        )
        .ok();
        let port = free_port();
        let mut cmd = crm_sync(dir.path());
        cmd.arg("serve")
            .env("DATABASE_URL", db.url())
            .env("CRM_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"));
        let mut server = Running::start(cmd, dir.path());
        let base = format!("http://127.0.0.1:{port}");
        server.wait_healthy(&base).await;

        let token_file = dir.path().join("data/api-token");
        let token = std::fs::read_to_string(&token_file).expect("data/api-token was generated");
        let token = token.trim();
        let (stdout, stderr) = server.output();
        assert!(stdout.contains(&base) && stdout.contains("data/api-token"), "{stdout}");
        assert!(!stdout.contains(token) && !stderr.contains(token), "the token is never printed");

        let unauthorized = reqwest::get(format!("{base}/contacts")).await.expect("GET");
        assert_eq!(unauthorized.status(), 401);
        let mut ids = page_through_contacts(&base, token).await;
        assert_eq!(ids.len(), 1000);
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 1000, "no contact appears twice");

        let status = server.terminate();
        assert!(status.success(), "SIGTERM ends serve with 0, got {status}");
    }

    async fn connect_prints_a_one_time_link_and_disconnect_removes_the_connection(db: TestDb) {
        let sandbox = start_sandbox(SandboxArgs::default()).await;
        let dir = tempdir();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let oauth_env = |cmd: &mut Command| {
            cmd.env("DATABASE_URL", db.url())
                .env("CRM_SYNC__API__TOKEN", OPERATOR_TOKEN)
                // PostgreSQL refuses to start without a configured key.
                .env("CRM_SYNC__SECURITY__ENCRYPTION_KEY", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=")
                .env("CRM_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"))
                .env("CRM_SYNC__SERVER__PUBLIC_URL", &base)
                .env("CRM_SYNC__HUBSPOT__API_BASE_URL", sandbox.base_url())
                .env("CRM_SYNC__HUBSPOT__AUTHORIZE_URL", sandbox.authorize_url())
                .env("CLIENT_ID", sandbox.client_id())
                .env("CLIENT_SECRET", sandbox.client_secret());
        };
        let mut cmd = crm_sync(dir.path());
        cmd.arg("serve");
        oauth_env(&mut cmd);
        let mut server = Running::start(cmd, dir.path());
        server.wait_healthy(&base).await;

        let mut cmd = crm_sync(dir.path());
        cmd.arg("connect");
        oauth_env(&mut cmd);
        let printed = Run::of(&mut cmd);
        let link = printed
            .ok()
            .split_whitespace()
            .find(|w| w.starts_with(&sandbox.authorize_url()))
            .unwrap_or_else(|| panic!("an install link: {}", printed.stdout))
            .to_owned();

        // Any browser completes it, no cookie needed; but only once.
        let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let approved = browser.get(&link).send().await.expect("authorize");
        let callback = approved.headers()["location"].to_str().unwrap().to_owned();
        assert!(callback.starts_with(&format!("{base}/oauth-callback?")), "{callback}");
        let done = browser.get(&callback).send().await.expect("callback");
        assert_eq!(done.status(), 302, "{}", done.text().await.unwrap_or_default());
        let access = get_json(&browser, &format!("{base}/api/access-token"), OPERATOR_TOKEN).await;
        assert_eq!(access["portal_id"], sandbox.portal_id(), "{access}");
        let replayed = browser.get(&callback).send().await.expect("callback again");
        assert_eq!(replayed.status(), 400, "a printed link works once");

        let mut cmd = crm_sync(dir.path());
        cmd.arg("disconnect");
        oauth_env(&mut cmd);
        let out = Run::of(&mut cmd);
        assert!(out.ok().contains(&format!("disconnected HubSpot account {}", sandbox.portal_id())), "{}", out.stdout);
        let access = get_json(&browser, &format!("{base}/api/access-token"), OPERATOR_TOKEN).await;
        assert_eq!(access["error"]["code"], "not_connected", "the running server sees it: {access}");
        let store = Store::connect(db.url()).await.expect("connect");
        assert!(store.current_credentials().await.unwrap().is_none(), "tokens removed");
        store.close().await;
        assert!(server.terminate().success());
    }
}

/// The API token of the tests that run the operator's commands.
const OPERATOR_TOKEN: &str = "operator-token-7f3a";

async fn start_sandbox(args: SandboxArgs) -> SandboxHandle {
    Sandbox::start(args, std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("sandbox starts")
}

// Several threads: the binary asks the in-process sandbox while this test waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_app_token_of_another_account_than_the_configured_one_stops_serve_and_worker() {
    let sandbox = start_sandbox(SandboxArgs::default()).await;
    for command in ["serve", "worker"] {
        let dir = tempdir();
        let mut cmd = crm_sync(dir.path());
        cmd.arg(command)
            .env(
                "CRM_SYNC__SERVER__BIND",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("CRM_SYNC__HUBSPOT__API_BASE_URL", sandbox.base_url())
            .env("CRM_SYNC__HUBSPOT__ACCESS_TOKEN", sandbox.access_token())
            .env("CRM_SYNC__HUBSPOT__PORTAL_ID", "42");
        let out = Run::of(&mut cmd);
        let line = out.error_line();
        assert!(
            line.contains("hubspot.portal_id is 42"),
            "{command}: {line}"
        );
        assert!(
            line.contains(&format!("HubSpot account {}", sandbox.portal_id())),
            "{command}: {line}"
        );
        assert!(
            !line.contains(sandbox.access_token()),
            "{command}: the token is not shown"
        );
    }
    // The right account starts.
    let dir = tempdir();
    let port = free_port();
    let mut cmd = crm_sync(dir.path());
    cmd.arg("serve")
        .env("CRM_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("CRM_SYNC__HUBSPOT__API_BASE_URL", sandbox.base_url())
        .env("CRM_SYNC__HUBSPOT__ACCESS_TOKEN", sandbox.access_token())
        .env(
            "CRM_SYNC__HUBSPOT__PORTAL_ID",
            sandbox.portal_id().to_string(),
        );
    let mut server = Running::start(cmd, dir.path());
    server
        .wait_healthy(&format!("http://127.0.0.1:{port}"))
        .await;
    assert!(server.terminate().success());
}

/// A user's table mapped with `plan` to a property HubSpot does not have (`plan_tier`).
fn users_mapping(create_properties: bool) -> String {
    format!(
        r#"
[[sync.objects]]
object = "contacts"
table = "users"
key_column = "id"
create_properties = {create_properties}

[sync.objects.fields]
email = {{ property = "email", direction = "push" }}
plan = {{ property = "plan_tier", direction = "push" }}
"#
    )
}

// Several threads: the binary asks the in-process sandbox while this test waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_property_missing_in_hubspot_stops_serve_and_worker_naming_its_key() {
    use sqlx::Connection;
    let sandbox = start_sandbox(SandboxArgs::default()).await;
    let dir = tempdir();
    let url = format!("sqlite://{}", dir.path().join("app.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
        .await
        .expect("create the app's database");
    sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, plan TEXT)")
        .execute(&mut conn)
        .await
        .expect("create users");
    conn.close().await.expect("close");
    let command = |name: &str, port: u16| {
        let mut cmd = crm_sync(dir.path());
        cmd.arg(name)
            .env("CRM_SYNC__DATABASE__URL", &url)
            .env("CRM_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"))
            .env("CRM_SYNC__HUBSPOT__API_BASE_URL", sandbox.base_url())
            .env("CRM_SYNC__HUBSPOT__ACCESS_TOKEN", sandbox.access_token());
        cmd
    };

    write(dir.path().join("config/local.toml"), &users_mapping(false));
    for name in ["serve", "worker"] {
        let out = Run::of(&mut command(name, free_port()));
        let line = out.error_line();
        assert!(line.contains("\"plan_tier\""), "{name}: {line}");
        assert!(
            line.contains("sync.objects[0].fields.plan"),
            "{name}: {line}"
        );
        assert!(
            line.contains("sync.objects[0].create_properties = true"),
            "{name}: {line}"
        );
    }

    // Allowed to create it, the service starts; the property is created by the first job.
    write(dir.path().join("config/local.toml"), &users_mapping(true));
    let port = free_port();
    let mut server = Running::start(command("serve", port), dir.path());
    server
        .wait_healthy(&format!("http://127.0.0.1:{port}"))
        .await;
    assert!(server.terminate().success());
}

#[test]
fn an_unknown_industry_is_refused_with_the_valid_ones() {
    let dir = tempdir();
    let out = Run::of(crm_sync(dir.path()).args(["seed", "--industry", "pottery", "--count", "5"]));
    let line = out.error_line();
    assert!(line.contains("pottery"), "{line}");
    for valid in ["saas", "retail", "healthcare"] {
        assert!(line.contains(valid), "{line}");
    }
}

#[test]
fn a_missing_industry_without_a_terminal_names_the_flag_and_the_choices() {
    let dir = tempdir();
    let out = Run::of(crm_sync(dir.path()).args(["seed", "--count", "5"]));
    let line = out.error_line();
    assert!(
        line.contains("--industry") && line.contains("saas"),
        "{line}"
    );
}

#[test]
fn a_zero_count_is_a_usage_error_naming_the_flag() {
    let dir = tempdir();
    let out = Run::of(crm_sync(dir.path()).args(["seed", "--industry", "saas", "--count", "0"]));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--count"), "{}", out.stderr);
}

#[test]
fn an_unknown_key_in_local_toml_is_named() {
    let dir = tempdir();
    write(
        dir.path().join("config/local.toml"),
        "[server]\nbindd = \"127.0.0.1:1\"\n",
    );
    let out = Run::of(crm_sync(dir.path()).arg("migrate"));
    assert!(out.error_line().contains("bindd"), "{}", out.stderr);
}

#[test]
fn a_bad_pull_lookback_stops_the_binary_naming_the_key() {
    let dir = tempdir();
    let out = Run::of(
        crm_sync(dir.path())
            .arg("worker")
            .env("CRM_SYNC__SYNC__PULL_LOOKBACK", "a while"),
    );
    assert!(!out.status.success());
    let line = out.error_line();
    assert!(line.contains("sync.pull_lookback"), "{line}");
}

#[test]
fn the_configured_pull_lookback_reaches_the_sync_engine() {
    use crm_sync::config::Settings;
    use crm_sync::hubspot::{Auth, ClientConfig, HubSpotClient};
    use crm_sync::secret::Secret;

    let dir = tempdir();
    write(
        dir.path().join("config/local.toml"),
        "[sync]\npull_lookback = \"90s\"\n",
    );
    let settings = Settings::load(dir.path(), &Default::default()).expect("settings");
    let client = HubSpotClient::new(
        ClientConfig::new("http://127.0.0.1:9".parse().expect("url")),
        Auth::PrivateApp(Secret::new("pat")),
    )
    .expect("client");
    let ctx = crm_sync::startup::sync_context(&settings, client).expect("context");
    assert_eq!(ctx.pull.lookback, Duration::from_secs(90));
}

#[test]
fn a_database_url_with_an_unknown_scheme_names_database_url() {
    let dir = tempdir();
    let out = Run::of(
        crm_sync(dir.path())
            .arg("migrate")
            .env("CRM_SYNC__DATABASE__URL", "mysql://root@127.0.0.1/app"),
    );
    let line = out.error_line();
    assert!(
        line.contains("database.url") && line.contains("mysql"),
        "{line}"
    );
}

#[test]
fn a_bad_bind_address_names_server_bind() {
    let dir = tempdir();
    let out = Run::of(
        crm_sync(dir.path())
            .arg("serve")
            .env("CRM_SYNC__SERVER__BIND", "localhost"),
    );
    assert!(out.error_line().contains("server.bind"));

    let taken = TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let addr = taken.local_addr().expect("its address");
    let out = Run::of(
        crm_sync(dir.path())
            .arg("serve")
            .env("CRM_SYNC__SERVER__BIND", addr.to_string()),
    );
    let line = out.error_line();
    assert!(
        line.contains("server.bind") && line.contains(&addr.to_string()),
        "{line}"
    );
}

#[test]
fn an_unreachable_postgres_is_one_clear_line_without_its_password() {
    let dir = tempdir();
    let out = Run::of(
        crm_sync(dir.path())
            .arg("migrate")
            .env("DATABASE_URL", "postgres://postgres:hunter2@127.0.0.1:1/x"),
    );
    let line = out.error_line();
    assert!(line.contains("cannot connect to PostgreSQL"), "{line}");
    assert!(line.contains("is PostgreSQL running"), "{line}");
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
}

#[test]
fn postgres_without_an_encryption_key_stops_serve_and_worker_saying_how_to_make_one() {
    for command in ["serve", "worker"] {
        let dir = tempdir();
        // Refused before connecting: nothing needs to answer at this address.
        let out = Run::of(
            crm_sync(dir.path())
                .arg(command)
                .env_remove("CRM_SYNC__SECURITY__ENCRYPTION_KEY")
                .env("DATABASE_URL", "postgres://postgres:hunter2@127.0.0.1:1/x"),
        );
        let line = out.error_line();
        assert!(
            line.contains("security.encryption_key"),
            "{command}: {line}"
        );
        assert!(line.contains("crm-sync keygen"), "{command}: {line}");
        assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
        assert!(
            !dir.path().join("data/encryption-key").exists(),
            "{command}: no per-host key generated"
        );
    }
}

#[test]
fn keygen_prints_a_fresh_base64_key_of_32_bytes_without_any_configuration() {
    use base64::Engine as _;
    let dir = tempdir();
    let keys: Vec<String> = (0..2)
        .map(|_| {
            let out = Run::of(
                crm_sync(dir.path())
                    .arg("keygen")
                    .env_remove("CRM_SYNC__SECURITY__ENCRYPTION_KEY")
                    .env("DATABASE_URL", "postgres://u@127.0.0.1:1/x"),
            );
            out.ok().trim().to_owned()
        })
        .collect();
    for key in &keys {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key)
            .expect("base64");
        assert_eq!(bytes.len(), 32, "{key}");
    }
    assert_ne!(keys[0], keys[1]);
    assert!(!dir.path().join("data").exists(), "keygen writes nothing");
}

#[tokio::test]
async fn sqlite_without_an_encryption_key_generates_one_and_serves() {
    let dir = tempdir();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = crm_sync(dir.path());
    cmd.arg("serve")
        .env_remove("CRM_SYNC__SECURITY__ENCRYPTION_KEY")
        .env("CRM_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"));
    let mut server = Running::start(cmd, dir.path());
    server.wait_healthy(&base).await;
    let key = std::fs::read_to_string(dir.path().join("data/encryption-key")).expect("key file");
    assert_eq!(key.trim().len(), 44, "base64 of 32 bytes");
}

#[test]
fn crm_sync_variables_win_over_database_url() {
    let dir = tempdir();
    Run::of(
        crm_sync(dir.path())
            .arg("migrate")
            .env("DATABASE_URL", "sqlite://compat.db")
            .env("CRM_SYNC__DATABASE__URL", "sqlite://own.db"),
    )
    .ok();
    assert!(dir.path().join("own.db").is_file());
    assert!(!dir.path().join("compat.db").exists());
}

#[test]
fn dot_env_is_read_but_a_real_variable_wins() {
    let dir = tempdir();
    write(
        dir.path().join(".env"),
        "DATABASE_URL=sqlite://dotenv.db\nRUST_LOG=warn\n",
    );
    let quiet = Run::of(crm_sync(dir.path()).args(["seed", "--industry", "saas", "--count", "2"]));
    quiet.ok();
    assert!(dir.path().join("dotenv.db").is_file());
    assert!(
        !quiet.stderr.contains("seeding contacts"),
        "RUST_LOG from .env filters the logs: {}",
        quiet.stderr
    );

    Run::of(
        crm_sync(dir.path())
            .arg("migrate")
            .env("DATABASE_URL", "sqlite://real.db"),
    )
    .ok();
    assert!(dir.path().join("real.db").is_file());
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempdir();
    let out = Run::of(crm_sync(dir.path()).args([
        "--log-format",
        "json",
        "seed",
        "--industry",
        "saas",
        "--count",
        "3",
    ]));
    out.ok();
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(!lines.is_empty(), "seed logs what it does");
    for line in lines {
        let parsed: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
        assert!(parsed["level"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn configured_secrets_never_reach_the_output() {
    let dir = tempdir();
    let port = free_port();
    let secrets = [
        ("CRM_SYNC__API__TOKEN", "api-token-c0ffee"),
        ("CRM_SYNC__HUBSPOT__ACCESS_TOKEN", "pat-na1-5ecret"),
        ("CLIENT_SECRET", "client-secret-b33f"),
    ];
    let mut cmd = crm_sync(dir.path());
    cmd.arg("serve")
        .env("RUST_LOG", "debug")
        .env("CRM_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"))
        .envs(secrets);
    let mut server = Running::start(cmd, dir.path());
    let base = format!("http://127.0.0.1:{port}");
    server.wait_healthy(&base).await;
    let resp = reqwest::Client::new()
        .get(format!("{base}/contacts"))
        .bearer_auth("api-token-c0ffee")
        .send()
        .await
        .expect("GET /contacts");
    assert_eq!(resp.status(), 200);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("hubspot_"),
        "the HubSpot client's metrics are registered"
    );
    assert!(server.terminate().success());
    let output = {
        let (out, err) = (
            std::fs::read_to_string(dir.path().join("stdout.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default(),
        );
        out + &err
    };
    assert!(output.contains("configured api.token"), "{output}");
    for (_, secret) in secrets {
        assert!(!output.contains(secret), "{secret} leaked: {output}");
    }
}

#[tokio::test]
async fn the_standalone_sandbox_prints_its_one_line() {
    let dir = tempdir();
    let port = free_port();
    let mut cmd = crm_sync(dir.path());
    cmd.args(["sandbox", "--port", &port.to_string()]);
    let mut sandbox = Running::start(cmd, dir.path());
    let line = sandbox.first_stdout_line().await;
    assert!(
        line.starts_with(&format!("HubSpot sandbox at http://127.0.0.1:{port}")),
        "{line}"
    );
    assert!(line.contains("private-app token"), "{line}");
    assert!(sandbox.terminate().success());
}

/// Runs `crm-sync seed --count 5` on a pseudo-terminal (util-linux `script`), waits for the
/// industry prompt, presses ↓ and Enter, and returns everything the terminal showed.
fn seed_on_a_terminal(dir: &Path) -> Option<(ExitStatus, String)> {
    use std::io::{Read as _, Write as _};
    use std::sync::mpsc;

    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return None;
    }
    let command = format!("{} seed --count 5", env!("CARGO_BIN_EXE_crm-sync"));
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn script");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut answered = false;
    loop {
        match rx.recv_timeout(STARTUP_LIMIT) {
            Ok(chunk) => seen.extend(chunk),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("no progress: {}", String::from_utf8_lossy(&seen));
            }
        }
        if !answered && String::from_utf8_lossy(&seen).contains("Industry to seed") {
            stdin.write_all(b"\x1b[B\r").expect("press down and enter");
            stdin.flush().expect("flush keys");
            answered = true;
        }
    }
    let status = child.wait().expect("wait for script");
    Some((status, String::from_utf8_lossy(&seen).into_owned()))
}

#[test]
fn on_a_terminal_a_missing_industry_is_chosen_from_a_list() {
    let dir = tempdir();
    let Some((status, screen)) = seed_on_a_terminal(dir.path()) else {
        return;
    };
    assert!(status.success(), "{screen}");
    // The list is sorted (education, finance, ...): one step down picks finance.
    assert!(screen.contains("inserted 5 finance contacts"), "{screen}");
}

// ---- the sandbox keeps its HubSpot ------------------------------------------------------

/// The sandbox's state file under `serve --sandbox`, relative to the working directory.
const SANDBOX_STATE: &str = "data/sandbox-state.json";

/// `crm-sync serve --sandbox` in `dir` on its default SQLite database, the API on `port`,
/// plus `extra` flags.
fn serve_sandbox(dir: &Path, port: u16, extra: &[&str]) -> Command {
    let mut cmd = crm_sync(dir);
    cmd.args(["serve", "--sandbox"])
        .args(extra)
        .env("CRM_SYNC__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env(
            "CRM_SYNC__SERVER__PUBLIC_URL",
            format!("http://127.0.0.1:{port}"),
        );
    cmd
}

/// Runs `cmd` to its end, failing (rather than hanging) when it still runs after `limit`.
fn run_within(mut cmd: Command, limit: Duration) -> Run {
    let dir = tempdir();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start crm-sync");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll crm-sync") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "crm-sync still ran after {limit:?}: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Run {
        status,
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    }
}

/// Enqueues a job through the API and returns it once it ended.
async fn run_job(base: &str, token: &str, direction: &str) -> serde_json::Value {
    let http = reqwest::Client::new();
    let job: serde_json::Value = http
        .post(format!("{base}/api/jobs"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "direction": direction }))
        .send()
        .await
        .expect("POST /api/jobs")
        .json()
        .await
        .expect("JSON");
    let id = job["id"].as_str().expect("a job id").to_owned();
    eventually("the job ends", async || {
        let job = get_json(&http, &format!("{base}/api/jobs/{id}"), token).await;
        let status = job["status"].as_str().unwrap_or_default();
        ["succeeded", "failed", "cancelled"]
            .contains(&status)
            .then_some(job)
    })
    .await
}

/// The sandbox's address, from `serve`'s second line.
async fn sandbox_url(server: &mut Running) -> String {
    eventually("serve prints where the sandbox is", async || {
        let (stdout, _) = server.output();
        let line = stdout
            .lines()
            .find(|l| l.starts_with("HubSpot sandbox at "))?;
        line.split_whitespace().nth(3).map(str::to_owned)
    })
    .await
}

/// Every live contact of the sandbox at `sandbox` (its admin dump): id → properties.
async fn sandbox_contacts(sandbox: &str) -> BTreeMap<String, serde_json::Value> {
    let dump: serde_json::Value = reqwest::get(format!("{sandbox}/_sandbox/contacts"))
        .await
        .expect("GET /_sandbox/contacts")
        .json()
        .await
        .expect("JSON dump");
    dump["contacts"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_owned(),
                c["properties"].clone(),
            )
        })
        .collect()
}

/// The local contacts as the API lists them: (email, hs_object_id).
async fn local_links(base: &str, token: &str) -> Vec<(Option<String>, Option<String>)> {
    let http = reqwest::Client::new();
    let page = get_json(&http, &format!("{base}/contacts?limit=100"), token).await;
    page["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|c| {
            (
                c["email"].as_str().map(str::to_owned),
                c["hs_object_id"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_restarted_serve_sandbox_keeps_its_contacts_and_links() {
    let dir = tempdir();
    Run::of(crm_sync(dir.path()).args(["seed", "--industry", "saas", "--count", "5"])).ok();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Running::start(serve_sandbox(dir.path(), port, &[]), dir.path());
    server.wait_healthy(&base).await;
    let sandbox = sandbox_url(&mut server).await;
    let token = std::fs::read_to_string(dir.path().join("data/api-token")).expect("api token");
    let token = token.trim();
    let pushed = run_job(&base, token, "push").await;
    assert_eq!(pushed["status"], "succeeded", "{pushed}");
    assert_eq!(pushed["counts"]["created"], 5, "{pushed}");
    let links = local_links(&base, token).await;
    let before = sandbox_contacts(&sandbox).await;
    assert_eq!(before.len(), 255, "250 demo contacts and the 5 pushed");
    let http = reqwest::Client::new();
    let access = get_json(&http, &format!("{base}/api/access-token"), token).await;
    let stored_token = access["access_token"]
        .as_str()
        .expect("an OAuth token")
        .to_owned();
    assert!(server.terminate().success());

    let mut server = Running::start(serve_sandbox(dir.path(), port, &[]), dir.path());
    server.wait_healthy(&base).await;
    let sandbox = sandbox_url(&mut server).await;
    let after = sandbox_contacts(&sandbox).await;
    for (email, link) in &links {
        let id = link.as_deref().expect("every local contact is linked");
        let now = after.get(id);
        assert!(now.is_some(), "{id} still names a contact");
        assert_eq!(
            now,
            before.get(id),
            "{id} names the same person, not a stranger"
        );
        if let (Some(email), Some(now)) = (email, now) {
            assert_eq!(now["email"], serde_json::json!(email), "{id}");
        }
    }
    assert_eq!(
        after, before,
        "the same contacts, ids and values; none seeded again"
    );
    let with_stored_token = http
        .get(format!("{sandbox}/crm/v3/objects/contacts?limit=1"))
        .bearer_auth(&stored_token)
        .send()
        .await
        .expect("GET with the token stored before the restart");
    assert_eq!(
        with_stored_token.status(),
        200,
        "the stored token is still valid"
    );
    let again = run_job(&base, token, "push").await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["counts"]["total"], 0, "nothing to push: {again}");
    assert_eq!(again["counts"]["created"], 0, "{again}");
    assert_eq!(sandbox_contacts(&sandbox).await.len(), 255);
    assert!(server.terminate().success());
}

#[tokio::test]
async fn serve_sandbox_fresh_starts_another_account_with_new_contacts() {
    let dir = tempdir();
    let (port, sandbox_port) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{port}");
    let sandbox = format!("http://127.0.0.1:{sandbox_port}");
    let sandbox_port = sandbox_port.to_string();
    let sandbox_flag = ["--sandbox-port", sandbox_port.as_str()];
    let mut server = Running::start(serve_sandbox(dir.path(), port, &sandbox_flag), dir.path());
    server.wait_healthy(&base).await;
    eventually("the service connected to the sandbox portal", async || {
        let page = reqwest::get(format!("{base}/"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        page.contains("HubSpot is connected to account <strong>1000001</strong>")
            .then_some(())
    })
    .await;
    let inserted = reqwest::Client::new()
        .post(format!("{sandbox}/_sandbox/contacts"))
        .json(&serde_json::json!({"contacts": [{"properties": {"email": "kept@example.com"}}]}))
        .send()
        .await
        .expect("insert into the sandbox");
    assert_eq!(inserted.status(), 200);
    assert!(server.terminate().success());

    let fresh_flags = [sandbox_flag[0], sandbox_flag[1], "--sandbox-fresh"];
    let fresh = serve_sandbox(dir.path(), port, &fresh_flags);
    let mut server = Running::start(fresh, dir.path());
    server.wait_healthy(&base).await;
    let (stdout, stderr) = server.output();
    assert!(
        stdout.contains("(portal 1000002)"),
        "another account: {stdout}"
    );
    let contacts = sandbox_contacts(&sandbox).await;
    assert_eq!(contacts.len(), 250, "a new account gets the demo contacts");
    assert!(
        !contacts.values().any(|p| p["email"] == "kept@example.com"),
        "nothing of the previous account"
    );
    assert!(
        stderr.contains("connected to another HubSpot account"),
        "the stored connection names the previous portal and is left alone: {stderr}"
    );
    assert!(
        dir.path()
            .join(format!("{SANDBOX_STATE}.previous"))
            .is_file()
    );
    assert!(server.terminate().success());

    // The next plain start resumes the fresh account, not the previous one.
    let mut server = Running::start(serve_sandbox(dir.path(), port, &sandbox_flag), dir.path());
    server.wait_healthy(&base).await;
    let (stdout, _) = server.output();
    assert!(stdout.contains("(portal 1000002)"), "{stdout}");
    assert_eq!(sandbox_contacts(&sandbox).await, contacts);
    assert!(server.terminate().success());
}

#[test]
fn an_unreadable_sandbox_state_stops_start_up_naming_the_file_and_the_fresh_flag() {
    let dir = tempdir();
    let state = dir.path().join(SANDBOX_STATE);
    write(state.clone(), "{\"format\": 1, \"account\": ");
    let out = run_within(serve_sandbox(dir.path(), free_port(), &[]), STARTUP_LIMIT);
    let line = out.error_line();
    assert!(line.contains(SANDBOX_STATE), "{line}");
    assert!(line.contains("--sandbox-fresh"), "{line}");
    assert_eq!(
        std::fs::read_to_string(&state).expect("still there"),
        "{\"format\": 1, \"account\": ",
        "the file is left as it was"
    );

    let mut standalone = crm_sync(dir.path());
    standalone.args(["sandbox", "--port", "0", "--state-file", "elsewhere.json"]);
    write(dir.path().join("elsewhere.json"), "not json");
    let out = run_within(standalone, STARTUP_LIMIT);
    let line = out.error_line();
    assert!(
        line.contains("elsewhere.json") && line.contains("--fresh"),
        "{line}"
    );
}

/// The standalone sandbox's line: (portal, private-app token, client id, client secret).
fn sandbox_identity(line: &str) -> (String, String, String, String) {
    let after = |mark: &str| {
        line.split(mark)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("{mark} in {line}"))
            .to_owned()
    };
    (
        after(" portal "),
        after("private-app token: "),
        after("client_id: "),
        after("client_secret: "),
    )
}

#[tokio::test]
async fn a_standalone_sandbox_with_a_state_file_resumes_contacts_properties_and_tokens() {
    let dir = tempdir();
    let port = free_port();
    let sandbox = format!("http://127.0.0.1:{port}");
    let start = || {
        let mut cmd = crm_sync(dir.path());
        cmd.args(["sandbox", "--port", &port.to_string(), "--contacts", "3"])
            .args(["--state-file", "state/sandbox.json"]);
        Running::start(cmd, dir.path())
    };
    let mut first = start();
    let identity = sandbox_identity(&first.first_stdout_line().await);
    let (_, _, client_id, client_secret) = identity.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let redirect = "http://localhost/cb";
    let approved = http
        .get(format!("{sandbox}/oauth/authorize"))
        .query(&[
            ("client_id", client_id.as_str()),
            ("redirect_uri", redirect),
            (
                "scope",
                "crm.objects.contacts.read crm.objects.contacts.write crm.schemas.contacts.write",
            ),
        ])
        .send()
        .await
        .expect("authorize");
    let location = url::Url::parse(approved.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .expect("a code")
        .1
        .into_owned();
    let form = |grant: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut f = vec![
            ("client_id".to_owned(), client_id.clone()),
            ("client_secret".to_owned(), client_secret.clone()),
        ];
        f.extend(
            grant
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        f
    };
    let tokens: serde_json::Value = http
        .post(format!("{sandbox}/oauth/v1/token"))
        .form(&form(&[
            ("grant_type", "authorization_code"),
            ("redirect_uri", redirect),
            ("code", &code),
        ]))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token JSON");
    let access = tokens["access_token"].as_str().expect("access").to_owned();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let post = async |path: &str, body: serde_json::Value| {
        let resp = http
            .post(format!("{sandbox}{path}"))
            .bearer_auth(&access)
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = resp.status().as_u16();
        (
            status,
            resp.json::<serde_json::Value>().await.expect("JSON"),
        )
    };
    let (status, _) = post(
        "/crm/v3/properties/contacts",
        serde_json::json!({"name": "local_id", "label": "Local id", "type": "string",
            "fieldType": "text", "groupName": "contactinformation", "hasUniqueValue": true}),
    )
    .await;
    assert_eq!(status, 201);
    let with_local_id =
        serde_json::json!({"properties": {"email": "ada@example.com", "local_id": "L-1"}});
    let (status, ada) = post("/crm/v3/objects/contacts", with_local_id).await;
    assert_eq!(status, 201, "{ada}");
    let ada_id: u64 = ada["id"].as_str().expect("id").parse().expect("numeric");
    let before = sandbox_contacts(&sandbox).await;
    assert_eq!(before.len(), 4);
    assert!(first.terminate().success());

    let mut second = start();
    let line = second.first_stdout_line().await;
    assert_eq!(
        sandbox_identity(&line),
        identity,
        "same portal and credentials"
    );
    assert_eq!(
        sandbox_contacts(&sandbox).await,
        before,
        "no contact seeded again"
    );
    // The token issued before the restart still works, and so does its refresh token.
    let clash =
        serde_json::json!({"properties": {"email": "other@example.com", "local_id": "L-1"}});
    let (status, body) = post("/crm/v3/objects/contacts", clash).await;
    assert_eq!(status, 409, "the unique index survived: {body}");
    let (status, grace) = post(
        "/crm/v3/objects/contacts",
        serde_json::json!({"properties": {"email": "grace@example.com"}}),
    )
    .await;
    assert_eq!(status, 201, "{grace}");
    assert_eq!(
        grace["id"],
        (ada_id + 1).to_string(),
        "ids go on after the old ones"
    );
    let refreshed = http
        .post(format!("{sandbox}/oauth/v1/token"))
        .form(&form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
        ]))
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.status(), 200, "the refresh token survived");
    assert!(second.terminate().success());
}

// ---- the CLI has no surprises (issue #13) -----------------------------------------------

/// A loopback port where nothing listens (bound, then released).
fn closed_port() -> u16 {
    free_port()
}

#[test]
fn a_refused_postgres_connection_is_reported_as_refused() {
    let dir = tempdir();
    let url = format!("postgres://postgres@127.0.0.1:{}/crm", closed_port());
    let out = Run::of(
        crm_sync(dir.path())
            .arg("migrate")
            .env("DATABASE_URL", &url),
    );
    let line = out.error_line();
    assert!(line.contains("connection refused"), "{line}");
    assert!(line.contains("database.url"), "says what to change: {line}");
    // The old message, after a 5 s wait, only said that nothing answered.
    assert!(!line.contains("no answer"), "{line}");
}

#[tokio::test]
async fn what_answers_on_the_port_but_is_not_postgres_is_named_as_such() {
    // An HTTP server's answer to PostgreSQL's start-up message.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 256];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let dir = tempdir();
    let mut cmd = tokio::process::Command::from({
        let mut cmd = crm_sync(dir.path());
        cmd.args(["jobs"]).env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{port}/crm"),
        );
        cmd
    });
    let out = cmd.output().await.unwrap();
    server.abort();
    let run = Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let line = run.error_line();
    assert!(
        line.contains(&format!("127.0.0.1:{port} is not PostgreSQL")),
        "{line}"
    );
    assert!(
        !line.contains("expected to read"),
        "no driver internals: {line}"
    );
}

#[tokio::test]
async fn a_missing_postgres_database_or_role_each_get_their_own_line() {
    let Some(db) = TestDb::postgres_if_available().await else {
        return;
    };
    let mut missing_db = url::Url::parse(db.url()).unwrap();
    missing_db.set_path("/crm_sync_no_such_database");
    let mut missing_role = url::Url::parse(db.url()).unwrap();
    missing_role.set_username("crm_sync_no_such_role").unwrap();
    for (url, expected) in [
        (
            missing_db.to_string(),
            "database \"crm_sync_no_such_database\" does not exist",
        ),
        (
            missing_role.to_string(),
            "role \"crm_sync_no_such_role\" does not exist",
        ),
    ] {
        let dir = tempdir();
        let out = Run::of(
            crm_sync(dir.path())
                .arg("migrate")
                .env("DATABASE_URL", &url),
        );
        let line = out.error_line();
        assert!(line.contains(expected), "{line}");
        assert!(line.contains("database.url"), "says what to change: {line}");
        assert!(!line.contains("at line"), "no driver internals: {line}");
    }
}

/// Every command that only reads or changes existing rows, with arguments.
const EXISTING_DATABASE_COMMANDS: &[&[&str]] = &[
    &["jobs"],
    &["jobs", "01JF0000000000000000000000"],
    &["sync", "--job", "01JF0000000000000000000000"],
    &["cancel", "01JF0000000000000000000000"],
    &["restore", "1"],
    &["disconnect"],
    &["connect"],
];

#[test]
fn read_only_commands_in_the_wrong_folder_create_no_database() {
    let dir = tempdir();
    for args in EXISTING_DATABASE_COMMANDS {
        let out = Run::of(
            crm_sync(dir.path())
                .args(*args)
                .env("CRM_SYNC__HUBSPOT__CLIENT_ID", "app")
                .env("CRM_SYNC__HUBSPOT__CLIENT_SECRET", "secret"),
        );
        let line = out.error_line();
        assert!(
            line.contains("no database at sqlite://data/crm-sync.db"),
            "{args:?}: {line}"
        );
        assert!(line.contains("crm-sync migrate"), "{args:?}: {line}");
        assert!(
            !dir.path().join("data").exists(),
            "{args:?} created the data folder"
        );
    }
}

#[tokio::test]
async fn read_only_commands_on_an_empty_postgres_database_neither_migrate_nor_write() {
    let Some(db) = TestDb::postgres_if_available().await else {
        return;
    };
    for args in EXISTING_DATABASE_COMMANDS {
        let dir = tempdir();
        let out = Run::of(
            crm_sync(dir.path())
                .args(*args)
                .env("DATABASE_URL", db.url())
                .env("CRM_SYNC__HUBSPOT__CLIENT_ID", "app")
                .env("CRM_SYNC__HUBSPOT__CLIENT_SECRET", "secret"),
        );
        let line = out.error_line();
        assert!(line.contains("has no crm-sync tables"), "{args:?}: {line}");
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 0, "nothing was migrated");
}

#[test]
fn a_negative_number_is_refused_as_a_number_in_a_short_usage_error() {
    let dir = tempdir();
    for (args, expected) in [
        (
            &["seed", "--industry", "saas", "--count", "-5"][..],
            "must be a positive number",
        ),
        (
            &["seed", "--industry", "saas", "--count", "0"][..],
            "must be a positive number",
        ),
        (
            &["jobs", "--limit", "-1"][..],
            "must be a number from 1 to 500",
        ),
        (&["restore", "-5"][..], "must be a positive number"),
    ] {
        let out = Run::of(crm_sync(dir.path()).args(args));
        assert_eq!(
            out.status.code(),
            Some(2),
            "a usage error: {args:?} {}",
            out.stderr
        );
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
        assert!(
            !out.stderr.contains("unexpected argument"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.lines().count() <= 5,
            "short: {args:?}: {}",
            out.stderr
        );
    }
    assert!(!dir.path().join("data").exists(), "nothing ran");
}

#[test]
fn a_variable_of_the_wrong_kind_names_its_key_and_the_expected_form() {
    let dir = tempdir();
    let out = Run::of(
        crm_sync(dir.path())
            .arg("migrate")
            .env("CRM_SYNC__HUBSPOT__REQUESTS_PER_10S", "lots"),
    );
    let line = out.error_line();
    assert_eq!(
        line,
        "error: invalid configuration: hubspot.requests_per_10s (environment variable \
         CRM_SYNC__HUBSPOT__REQUESTS_PER_10S) must be a whole number, got \"lots\""
    );

    write(
        dir.path().join("config/local.toml"),
        "[[sync.schedules]]\ncron = \"0 * * * * *\"\ndirection = \"pull\"\nincremental = \"maybe\"\n",
    );
    let out = Run::of(crm_sync(dir.path()).arg("migrate"));
    let line = out.error_line();
    assert!(
        line.contains("sync.schedules[0].incremental (in config/local.toml) must be true or false"),
        "{line}"
    );
    assert!(!line.contains("invalid type"), "not serde's words: {line}");
}

#[test]
fn log_format_is_described_once_in_the_top_level_help_only() {
    use clap::CommandFactory as _;
    let dir = tempdir();
    let top = Run::of(crm_sync(dir.path()).arg("--help"));
    assert_eq!(
        top.ok()
            .lines()
            .filter(|l| l.trim_start().starts_with("--log-format"))
            .count(),
        1,
        "{}",
        top.stdout
    );
    let cli = crm_sync::cli::Cli::command();
    let names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
    assert!(
        names.contains(&"serve") && names.contains(&"cancel"),
        "{names:?}"
    );
    for name in names {
        let help = Run::of(crm_sync(dir.path()).args([name, "--help"]));
        assert!(
            !help.ok().contains("--log-format"),
            "{name} --help: {}",
            help.stdout
        );
    }
    // Given before or after the command, it works.
    Run::of(crm_sync(dir.path()).args(["--log-format", "json", "migrate"])).ok();
    Run::of(crm_sync(dir.path()).args(["migrate", "--log-format", "json"])).ok();
}
