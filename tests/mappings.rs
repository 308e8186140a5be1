//! Object mappings (`[[sync.objects]]`) against real databases and the sandbox: start-up
//! validation with a user's own tables and views on both backends, HubSpot properties checked
//! and created when a job starts, and `GET /api/objects`.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::TestDb;
use crm_sync::api::{self, AppState};
use crm_sync::config::Settings;
use crm_sync::hubspot::{Auth, Backoff, ClientConfig, HubSpotClient, ObjectType};
use crm_sync::mapping::properties::{PROPERTY_GROUP, PropertyError, ensure_properties};
use crm_sync::mapping::{CheckedMapping, MappingError, PropertyKind, check_mappings};
use crm_sync::sandbox::{Sandbox, SandboxArgs, SandboxHandle};
use crm_sync::secret::Secret;
use crm_sync::store::{Backend, ColumnKind, Relation, Store};
use serde_json::Value;

const TOKEN: &str = "objects-test-token-8c1e";

/// A user's own schema: a table with every convertible type and one that is not, a table
/// without a unique key, a push-only view and a view whose key repeats.
async fn users_schema(store: &Store) {
    let (last_seen, notes) = match store.backend() {
        Backend::Postgres => ("TIMESTAMPTZ", "JSONB"),
        Backend::Sqlite => ("TIMESTAMP", "BLOB"),
    };
    let statements = [
        format!(
            "CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT UNIQUE, full_name TEXT, \
             plan TEXT, seats INTEGER, balance NUMERIC(10,2), active BOOLEAN, signup DATE, \
             last_seen {last_seen}, notes {notes})"
        ),
        "INSERT INTO users (id, email, active) VALUES (1, 'ada@example.com', TRUE), \
         (2, 'bob@example.com', FALSE)"
            .to_owned(),
        "CREATE TABLE events (id BIGINT, email TEXT)".to_owned(),
        "CREATE VIEW active_users AS SELECT id, email, full_name FROM users WHERE active"
            .to_owned(),
        "CREATE VIEW doubled AS SELECT id, email FROM users UNION ALL SELECT id, email FROM users"
            .to_owned(),
    ];
    for sql in statements {
        exec(store, &sql).await;
    }
}

async fn exec(store: &Store, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pool), _) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        (_, Some(pool)) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        _ => unreachable!("a store has one pool"),
    }
    .unwrap_or_else(|e| panic!("{e}"));
}

/// The settings of `toml` (a `config/local.toml`) pointing at `db`.
fn settings(db: &TestDb, toml: &str) -> Settings {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config")).expect("mkdir");
    std::fs::write(dir.path().join("config/local.toml"), toml).expect("write");
    let env = [("CRM_SYNC__DATABASE__URL".to_owned(), db.url().to_owned())]
        .into_iter()
        .collect();
    Settings::load(dir.path(), &env).expect("settings load")
}

const USERS: &str = r#"
[[sync.objects]]
object = "contacts"
table = "users"
key_column = "id"
create_properties = true

[sync.objects.fields]
email = { property = "email", direction = "both", owner = "local" }
full_name = { property = "firstname", direction = "both", owner = "hubspot" }
plan = { property = "plan_tier", direction = "push" }
seats = { property = "seats", direction = "both", owner = "local" }
balance = { property = "balance", direction = "pull" }
active = { property = "is_active", direction = "push" }
signup = { property = "signup_date", direction = "push" }
last_seen = { property = "last_seen_at", direction = "push" }
"#;

const ACTIVE_VIEW: &str = r#"
[[sync.objects]]
object = "contacts"
table = "active_users"
key_column = "id"

[sync.objects.fields]
email = { property = "email", direction = "push" }
full_name = { property = "firstname", direction = "push" }
"#;

async fn check(
    db: &TestDb,
    store: &Store,
    toml: &str,
) -> Result<Vec<CheckedMapping>, MappingError> {
    check_mappings(store, &settings(db, toml).sync.objects).await
}

/// The one-line error `toml` gets, asserting it names `key`.
async fn refused(db: &TestDb, store: &Store, toml: &str, key: &str, words: &str) {
    let e = check(db, store, toml)
        .await
        .expect_err("must be refused")
        .to_string();
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    assert!(e.contains(&format!("{key}: ")), "{key} in: {e} ({db})");
    assert!(e.contains(words), "{words:?} in: {e} ({db})");
}

fn client(sb: &SandboxHandle) -> HubSpotClient {
    let mut config = ClientConfig::new(url::Url::parse(&sb.base_url()).expect("sandbox url"));
    config.requests_per_10s = 0;
    config.search_per_second = 0;
    config.associations_per_10s = 0;
    config.backoff = Backoff {
        base: Duration::from_millis(5),
        max: Duration::from_millis(50),
    };
    HubSpotClient::new(config, Auth::PrivateApp(Secret::new(sb.access_token()))).expect("client")
}

async fn sandbox() -> SandboxHandle {
    let args = SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        associations_per_10s: 0,
        rng_seed: Some(11),
        ..SandboxArgs::default()
    };
    Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("sandbox starts")
}

backend_tests! {
    async fn a_users_own_table_and_a_push_only_view_fit(db: TestDb) {
        let store = db.store().await;
        users_schema(&store).await;
        let users = check(&db, &store, USERS).await.expect("fits");
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].relation, Relation::Table);
        let kinds: Vec<(&str, &ColumnKind)> = users[0]
            .fields
            .iter()
            .map(|f| (f.field.column.as_str(), &f.column))
            .collect();
        assert_eq!(
            kinds,
            [
                ("active", &ColumnKind::Boolean),
                ("balance", &ColumnKind::Decimal),
                ("email", &ColumnKind::Text),
                ("full_name", &ColumnKind::Text),
                ("last_seen", &ColumnKind::Timestamp),
                ("plan", &ColumnKind::Text),
                ("seats", &ColumnKind::Integer),
                ("signup", &ColumnKind::Date),
            ],
            "{db}"
        );
        let view = check(&db, &store, ACTIVE_VIEW).await.expect("a push-only view fits");
        assert_eq!(view[0].relation, Relation::View);
    }

    async fn the_shipped_default_fits_the_migrated_contacts_table(db: TestDb) {
        let store = db.store().await;
        let checked = check(&db, &store, "").await.expect("the default fits");
        assert_eq!(checked.len(), 1);
        assert_eq!(checked[0].mapping.table.to_string(), "contacts");
    }

    async fn a_mapping_the_database_contradicts_is_refused_naming_its_key(db: TestDb) {
        let store = db.store().await;
        users_schema(&store).await;
        refused(&db, &store, &USERS.replace("\"users\"", "\"customers\""),
            "sync.objects[0].table", "no table or view \"customers\" exists").await;
        refused(&db, &store, &format!("{USERS}tier = {{ property = \"tier\", direction = \"push\" }}\n"),
            "sync.objects[0].fields.tier", "column \"tier\" does not exist in table \"users\"").await;
        refused(&db, &store, &USERS.replace("key_column = \"id\"", "key_column = \"plan\""),
            "sync.objects[0].key_column", "column \"plan\" of table \"users\" is not unique").await;
        refused(&db, &store, &USERS.replace("\"users\"", "\"events\""),
            "sync.objects[0].key_column", "is not unique").await;
        refused(&db, &store, &format!("{USERS}notes = {{ property = \"notes\", direction = \"push\" }}\n"),
            "sync.objects[0].fields.notes", "which crm-sync cannot convert").await;
        refused(&db, &store, &USERS.replace(
            "active = { property = \"is_active\", direction = \"push\" }",
            "active = { property = \"is_active\", direction = \"push\", type = \"date\" }",
        ), "sync.objects[0].fields.active.type", "a boolean column cannot hold a HubSpot date").await;
        refused(&db, &store, &ACTIVE_VIEW.replace(
            "full_name = { property = \"firstname\", direction = \"push\" }",
            "full_name = { property = \"firstname\", direction = \"both\", owner = \"hubspot\" }",
        ), "sync.objects[0].fields.full_name.direction", "is a view, which pull cannot write").await;
        refused(&db, &store, &ACTIVE_VIEW.replace(
            "key_column = \"id\"", "key_column = \"id\"\nhubspot_id_column = \"full_name\"",
        ).replace("full_name = { property = \"firstname\", direction = \"push\" }\n", ""),
            "sync.objects[0].hubspot_id_column", "is a view").await;
        // The HubSpot id column (crm-sync writes it) must exist and hold text or whole
        // numbers; one a field maps is refused when the settings load (src/mapping/parse.rs).
        let with_id = |column: &str| USERS.replace(
            "key_column = \"id\"", &format!("key_column = \"id\"\nhubspot_id_column = \"{column}\""));
        refused(&db, &store, &with_id("hs_id"),
            "sync.objects[0].hubspot_id_column", "column \"hs_id\" does not exist in table \"users\"").await;
        refused(&db, &store, &with_id("notes"),
            "sync.objects[0].hubspot_id_column", "a HubSpot id needs a text or integer column").await;
        refused(&db, &store, &ACTIVE_VIEW.replace("active_users", "doubled")
            .replace("full_name = { property = \"firstname\", direction = \"push\" }\n", ""),
            "sync.objects[0].key_column", "several rows with the same \"id\"").await;
    }

    async fn missing_properties_are_created_in_the_crm_sync_group_once(db: TestDb) {
        let store = db.store().await;
        users_schema(&store).await;
        let sb = sandbox().await;
        let hs = client(&sb);
        let users = check(&db, &store, USERS).await.expect("fits").remove(0);
        let ready = ensure_properties(&hs, &users).await.expect("properties ready");
        let mut created: Vec<&str> = ready.created.iter().map(|p| p.as_str()).collect();
        created.sort_unstable();
        assert_eq!(
            created,
            ["balance", "is_active", "last_seen_at", "plan_tier", "seats", "signup_date"],
            "email and firstname are HubSpot's own"
        );
        for (name, kind, field) in [
            ("plan_tier", "string", "text"),
            ("seats", "number", "number"),
            ("balance", "number", "number"),
            ("is_active", "bool", "booleancheckbox"),
            ("signup_date", "date", "date"),
            ("last_seen_at", "datetime", "date"),
        ] {
            let property = hs.get_object_property(ObjectType::Contacts, name).await.unwrap();
            assert_eq!(
                (property.property_type.as_str(), property.field_type.as_str(), property.group_name.as_str()),
                (kind, field, PROPERTY_GROUP),
                "{name}"
            );
        }
        hs.get_property_group(ObjectType::Contacts, PROPERTY_GROUP).await.expect("group created");
        let kinds: Vec<PropertyKind> = ready.fields.iter().map(|f| f.property).collect();
        assert!(kinds.contains(&PropertyKind::Datetime) && kinds.contains(&PropertyKind::Bool));
        let again = ensure_properties(&hs, &users).await.expect("still ready");
        assert!(again.created.is_empty(), "nothing created twice: {:?}", again.created);
        sb.shutdown().await.expect("sandbox stops");
    }

    async fn a_missing_property_without_permission_fails_naming_it_and_its_key(db: TestDb) {
        let store = db.store().await;
        users_schema(&store).await;
        let sb = sandbox().await;
        let hs = client(&sb);
        let toml = USERS.replace("create_properties = true", "create_properties = false");
        let users = check(&db, &store, &toml).await.expect("fits").remove(0);
        // Fields are checked by column name, so `active` is the first missing one.
        let e = ensure_properties(&hs, &users).await.expect_err("is_active is missing");
        assert!(matches!(e, PropertyError::Missing { .. }), "{e:?}");
        let line = e.to_string();
        assert!(line.contains("\"is_active\"") && line.contains("sync.objects[0].fields.active"), "{line}");
        assert!(line.contains("sync.objects[0].create_properties = true"), "{line}");
        let mismatched = USERS.replace(
            "seats = { property = \"seats\"",
            "seats = { property = \"lastmodifieddate\"",
        );
        let users = check(&db, &store, &mismatched).await.expect("fits").remove(0);
        let e = ensure_properties(&hs, &users).await.expect_err("a datetime cannot fill an integer");
        assert!(e.to_string().contains("sync.objects[0].fields.seats"), "{e}");
        assert!(matches!(e, PropertyError::Incompatible { .. }), "{e:?}");
        sb.shutdown().await.expect("sandbox stops");
    }

    async fn get_api_objects_lists_the_mappings_with_their_fields(db: TestDb) {
        let store = db.store().await;
        users_schema(&store).await;
        // The contacts mapping also syncs each row's company, from `seats` for the test.
        let users_with_company = USERS
            .replace("seats = { property = \"seats\", direction = \"both\", owner = \"local\" }\n", "")
            .replace("create_properties = true\n", "create_properties = true\ncompany_column = \"seats\"\ncompany_direction = \"push\"\n");
        let objects = check(&db, &store, &format!("{users_with_company}\n{}", r#"
[[sync.objects]]
object = "companies"
table = "active_users"
key_column = "id"
[sync.objects.fields]
full_name = { property = "name", direction = "push" }
"#)).await.expect("fits");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = AppState::new(store.clone(), Secret::new(TOKEN)).with_objects(Arc::new(objects));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(api::serve(listener, state, async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        let url = format!("http://{addr}/api/objects");
        let anonymous = http.get(&url).send().await.unwrap();
        assert_eq!(anonymous.status(), 401);
        let answer = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.unwrap();
        let results = body["results"].as_array().expect("results");
        assert_eq!(results.len(), 2, "{body}");
        let users = &results[0];
        assert_eq!(users["object"], "contacts");
        assert_eq!(users["table"], "users");
        assert_eq!(users["relation"], "table");
        assert_eq!(users["key_column"], "id");
        assert_eq!(users["match_key"], "email");
        assert_eq!(users["hubspot_id_store"], "link_table");
        assert_eq!(users["hubspot_id_column"], Value::Null);
        assert_eq!(users["create_properties"], true);
        assert_eq!(users["built_in"], false);
        assert_eq!(users["config_key"], "sync.objects[0]");
        let name = users["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["column"] == "full_name")
            .expect("full_name");
        assert_eq!(name["property"], "firstname");
        assert_eq!(name["direction"], "both");
        assert_eq!(name["owner"], "hubspot");
        assert_eq!(name["column_type"], "text");
        assert_eq!(
            users["company"],
            serde_json::json!({"column": "seats", "direction": "push", "owner": null}),
            "{body}"
        );
        let companies = &results[1];
        assert_eq!(companies["object"], "companies");
        assert_eq!(companies["relation"], "view");
        assert_eq!(companies["match_key"], "external_key");
        assert_eq!(companies["fields"][0]["owner"], Value::Null);
        assert_eq!(companies["company"], Value::Null);
        let spec: Value = http
            .get(format!("http://{addr}/api-docs/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(spec["paths"]["/api/objects"]["get"].is_object(), "documented");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_schema_qualified_table_is_found_on_postgres() {
    let Some(db) = TestDb::postgres_if_available().await else {
        return;
    };
    let store = db.store().await;
    exec(&store, "CREATE SCHEMA crm").await;
    exec(
        &store,
        "CREATE TABLE crm.accounts (id BIGINT PRIMARY KEY, email TEXT)",
    )
    .await;
    let toml = ACTIVE_VIEW.replace("active_users", "crm.accounts").replace(
        "full_name = { property = \"firstname\", direction = \"push\" }\n",
        "",
    );
    let checked = check(&db, &store, &toml).await.expect("fits");
    assert_eq!(checked[0].mapping.table.to_string(), "crm.accounts");
    refused(
        &db,
        &store,
        &toml.replace("crm.accounts", "sales.accounts"),
        "sync.objects[0].table",
        "no table or view \"sales.accounts\"",
    )
    .await;
}
