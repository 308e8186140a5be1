//! A contacts mapping to the user's own table, synced both ways against the sandbox on both
//! backends: `users(id, email, full_name, plan, seats, signup_date, active)` with text,
//! enumeration, number, date and boolean fields. The sync state lives in crm-sync's own
//! tables: the user's table keeps its schema. Every spec runs under both sandbox profiles
//! (HubSpot's documented answers and the alternative ones).

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::collections::BTreeMap;

use common::TestDb;
use common::mapped::MappedEnv;
use common::user_table::{exec, texts};
use crm_sync::hubspot::{HubSpotError, ObjectType, PropertyCreate, PropertyOption};
use crm_sync::ids::HsObjectId;
use crm_sync::jobs::model::{
    Counts, Job, JobAction, JobSpec, JobStatus, PullCounts, PullMode, PushCounts, PushMode,
};
use crm_sync::sandbox::HubSpotProfile;
use crm_sync::store::{Backend, Store};
use crm_sync::webhooks::{WebhookEvent, process_events};

const USERS: &str = r#"
[[sync.objects]]
object = "contacts"
table = "users"
key_column = "id"
create_properties = true

[sync.objects.fields]
email = { property = "email", direction = "both", owner = "local" }
full_name = { property = "firstname", direction = "both", owner = "hubspot" }
plan = { property = "plan_tier", direction = "both", owner = "local" }
seats = { property = "seats", direction = "both", owner = "local" }
signup_date = { property = "signup_date", direction = "push" }
active = { property = "is_active", direction = "pull" }
"#;

/// The mapped table's world ([`MappedEnv`]) with this suite's table and steps.
struct Env(MappedEnv);

impl std::ops::Deref for Env {
    type Target = MappedEnv;
    fn deref(&self) -> &MappedEnv {
        &self.0
    }
}

/// The user's table as the test reads it: `(id, full_name, plan, seats, active)` as text.
async fn users(store: &Store) -> Vec<Vec<Option<String>>> {
    texts(
        store,
        "SELECT CAST(id AS TEXT), full_name, plan, CAST(seats AS TEXT), \
         CASE WHEN active THEN 'yes' WHEN NOT active THEN 'no' END FROM users ORDER BY id",
    )
    .await
}

/// The user's table's columns and the database's triggers, to show the schema is untouched.
async fn schema(store: &Store) -> Vec<Vec<Option<String>>> {
    let sql = match store.backend() {
        Backend::Postgres => {
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_name = 'users' UNION ALL \
             SELECT trigger_name::text, event_object_table::text FROM information_schema.triggers \
             ORDER BY 1"
        }
        Backend::Sqlite => {
            "SELECT name, type FROM pragma_table_info('users') UNION ALL \
             SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' ORDER BY 1"
        }
    };
    texts(store, sql).await
}

/// [`USERS`] with the HubSpot id also written into the table's `hs_id` column.
fn users_with_id_column() -> String {
    USERS.replace(
        "key_column = \"id\"",
        "key_column = \"id\"\nhubspot_id_column = \"hs_id\"",
    )
}

impl Env {
    /// A sandbox playing `profile` with the `plan_tier` enumeration (HubSpot needs its
    /// options, so the user creates it), and the user's table with `rows` (`id, email,
    /// full_name, plan, seats, signup_date` as SQL values). Incremental pulls read from the
    /// bookmark itself (no lookback), so that what they read is exactly what changed.
    async fn new(db: TestDb, profile: HubSpotProfile, rows: &[&str]) -> Env {
        Env::with(db, profile, rows, USERS).await
    }

    /// [`Env::new`] with [`users_with_id_column`]: the table has an `hs_id` text column.
    async fn with_id_column(db: TestDb, profile: HubSpotProfile, rows: &[&str]) -> Env {
        Env::with(db, profile, rows, &users_with_id_column()).await
    }

    async fn with(db: TestDb, profile: HubSpotProfile, rows: &[&str], mapping: &str) -> Env {
        let id_column = if mapping.contains("hubspot_id_column") {
            ", hs_id TEXT"
        } else {
            ""
        };
        let mut setup = format!(
            "CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT UNIQUE, full_name TEXT, \
             plan TEXT, seats INTEGER, signup_date DATE, active BOOLEAN{id_column});"
        );
        for row in rows {
            setup.push_str(&format!(
                "INSERT INTO users (id, email, full_name, plan, seats, signup_date) VALUES ({row});"
            ));
        }
        let env = MappedEnv::start(db, profile, &setup, mapping).await;
        let option = |v: &str| PropertyOption {
            label: v.to_owned(),
            value: v.to_owned(),
            hidden: false,
            display_order: None,
            description: None,
        };
        env.client
            .create_object_property(
                ObjectType::Contacts,
                &PropertyCreate {
                    name: "plan_tier".to_owned(),
                    label: "Plan".to_owned(),
                    property_type: "enumeration".to_owned(),
                    field_type: "select".to_owned(),
                    group_name: "contactinformation".to_owned(),
                    description: None,
                    has_unique_value: false,
                    options: vec![option("free"), option("pro"), option("team")],
                    form_field: None,
                },
            )
            .await
            .expect("plan_tier created");
        Env(env)
    }

    async fn run(&self, action: JobAction) -> Job {
        self.run_spec(JobSpec::from(action)).await
    }

    async fn push(&self, mode: PushMode) -> (PushCounts, Job) {
        let job = self.run(JobAction::Push { mode }).await;
        let Counts::Push(counts) = job.counts else {
            panic!("push counts")
        };
        (counts, job)
    }

    async fn pull(&self) -> (PullCounts, Job) {
        self.pull_in(false).await
    }

    async fn pull_incremental(&self) -> (PullCounts, Job) {
        self.pull_in(true).await
    }

    async fn pull_in(&self, incremental: bool) -> (PullCounts, Job) {
        let job = self.run(pull_action(incremental)).await;
        let Counts::Pull(counts) = job.counts else {
            panic!("pull counts")
        };
        (counts, job)
    }

    /// The HubSpot id of the contact with `email`.
    fn id_of(&self, email: &str) -> HsObjectId {
        HsObjectId::from(self.hubspot_contact(email).id.as_str())
    }

    /// crm-sync's link rows: `(local_key, hs_object_id, deleted, updated_at)`.
    async fn links(&self) -> Vec<Vec<Option<String>>> {
        texts(
            &self.store,
            "SELECT local_key, hs_object_id, \
             CASE WHEN hubspot_deleted_at IS NULL THEN 'live' ELSE 'deleted' END, \
             CAST(updated_at AS TEXT) FROM object_links ORDER BY local_key",
        )
        .await
    }

    /// Everything a dry run must leave as it was: the user's table, crm-sync's link rows, its
    /// bookmarks and scratch rows, and HubSpot's live contacts.
    async fn snapshot(&self) -> String {
        let state = texts(
            &self.store,
            "SELECT key, value FROM sync_state UNION ALL \
             SELECT job_id, hs_object_id FROM pull_seen ORDER BY 1, 2",
        )
        .await;
        let contacts: BTreeMap<String, BTreeMap<String, String>> = self
            .hubspot
            .contacts()
            .into_iter()
            .map(|c| (c.id, c.properties))
            .collect();
        format!(
            "{:?}\n{:?}\n{state:?}\n{contacts:?}",
            users(&self.store).await,
            self.links().await
        )
    }

    /// Runs `action` as a dry run, checks it changed nothing, runs it for real and checks the
    /// counts agree; returns the dry run.
    async fn dry_then_real(&self, action: JobAction) -> Job {
        let before = self.snapshot().await;
        let spec = JobSpec::from(action)
            .with_dry_run(true)
            .expect("contacts have dry runs");
        let planned = self.run_spec(spec).await;
        assert_eq!(
            self.snapshot().await,
            before,
            "a dry run writes nothing: {planned:#?}"
        );
        let real = self.run(action).await;
        assert_eq!(
            planned.counts, real.counts,
            "the dry run's counts are the real run's: {planned:#?}"
        );
        let plan = planned.plan.clone().expect("a dry run has a plan");
        let unlinked = match planned.counts {
            Counts::Pull(c) => c.unlinked,
            Counts::Push(_) => 0,
        };
        assert_eq!(
            plan.actions.len() as u64,
            planned.counts.total() + unlinked,
            "one planned action per record: {plan:#?}"
        );
        assert_eq!(planned.errors.len() as u64, planned.counts.failed());
        assert!(real.plan.is_none(), "a real job has no plan");
        planned
    }

    /// HubSpot's properties of the contact with `email`.
    fn contact(&self, email: &str) -> BTreeMap<String, String> {
        self.hubspot_contact(email).properties
    }

    async fn change_in_hubspot(&self, email: &str, properties: &[(&str, &str)]) {
        let id = self.hubspot_contact(email).id;
        let properties = properties
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.client
            .update_contact(&id.as_str().into(), &properties)
            .await
            .expect("changed in HubSpot");
    }
}

fn pull_action(incremental: bool) -> JobAction {
    JobAction::Pull {
        mode: PullMode::Upsert,
        incremental,
    }
}

fn push(created: u64, linked: u64, updated: u64, failed: u64, skipped: u64) -> PushCounts {
    PushCounts {
        total: created + linked + updated + failed + skipped,
        created,
        linked,
        updated,
        failed,
        skipped,
        ..PushCounts::default()
    }
}

const ADA: &str = "1, 'ada@example.com', 'Ada', 'pro', 3, '2026-01-05'";
const BOB: &str = "2, 'bob@example.com', 'Bob', 'free', 1, '2026-02-01'";

fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
    values.iter().map(|v| v.map(str::to_owned)).collect()
}

backend_tests! {
    async fn push_creates_and_links_and_a_rerun_writes_nothing(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[ADA, BOB]).await;
        let before = schema(&env.store).await;
        env.hubspot.insert_contacts(vec![
            [("email".to_owned(), "bob@example.com".to_owned()), ("firstname".to_owned(), "Robert".to_owned())]
                .into_iter().collect(),
        ]);

        let (counts, job) = env.push(PushMode::Link).await;
        assert_eq!(counts, push(1, 1, 0, 0, 0), "{job:#?}");
        let ada = env.contact("ada@example.com");
        assert_eq!(ada.get("firstname").map(String::as_str), Some("Ada"));
        assert_eq!(ada.get("plan_tier").map(String::as_str), Some("pro"));
        assert_eq!(ada.get("seats").map(String::as_str), Some("3"));
        assert_eq!(ada.get("signup_date").map(String::as_str), Some("1767571200000"));
        // Linking leaves HubSpot's values alone.
        assert_eq!(env.contact("bob@example.com").get("firstname").map(String::as_str), Some("Robert"));
        // The properties were created on first use, in crm-sync's group.
        for name in ["seats", "signup_date", "is_active"] {
            env.client.get_property(name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }

        env.hubspot.set_recording(true);
        let (again, _) = env.push(PushMode::Link).await;
        assert_eq!(again, push(0, 0, 0, 0, 0));
        let writes: Vec<String> = env.hubspot.take_recorded_requests().into_iter()
            .filter(|r| r.method == "PATCH" || r.path.ends_with("/batch/create")
                || r.path.ends_with("/batch/update") || r.path.ends_with("/batch/upsert"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(writes.is_empty(), "no write call: {writes:?}");
        assert_eq!(env.hubspot.contacts().len(), 2, "no duplicate");
        assert_eq!(schema(&env.store).await, before, "the user's table keeps its schema");
    }

    async fn a_local_change_is_pushed_and_a_hubspot_change_is_pulled(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[ADA, BOB]).await;
        env.push(PushMode::Link).await;

        exec(&env.store, "UPDATE users SET seats = 5, plan = 'team' WHERE id = 1").await;
        let (counts, job) = env.push(PushMode::Link).await;
        assert_eq!(counts, push(0, 0, 1, 0, 0), "{job:#?}");
        let ada = env.contact("ada@example.com");
        assert_eq!(ada.get("seats").map(String::as_str), Some("5"));
        assert_eq!(ada.get("plan_tier").map(String::as_str), Some("team"));

        env.change_in_hubspot("bob@example.com", &[("seats", "7"), ("is_active", "true")]).await;
        let (pulled, job) = env.pull().await;
        assert_eq!((pulled.total, pulled.linked, pulled.unchanged, pulled.failed), (2, 0, 2, 0), "{job:#?}");
        assert_eq!(pulled.upserted, 1, "only bob's row changed in HubSpot");
        assert_eq!(users(&env.store).await, vec![
            row(&[Some("1"), Some("Ada"), Some("team"), Some("5"), None]),
            row(&[Some("2"), Some("Bob"), Some("free"), Some("7"), Some("yes")]),
        ]);
        // What the pull wrote is in sync: the next push has nothing to do.
        let (after, _) = env.push(PushMode::Link).await;
        assert_eq!(after, push(0, 0, 0, 0, 0));
    }

    async fn a_webhook_pull_reads_only_the_named_contacts_and_drains_them(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[ADA, BOB]).await;
        env.push(PushMode::Link).await;
        env.change_in_hubspot("bob@example.com", &[("seats", "9")]).await;
        let bob = env.hubspot_contact("bob@example.com").id;
        env.store
            .record_pending_pulls(&[bob.as_str().into()])
            .await
            .expect("pending");
        let id = crm_sync::jobs::queue::enqueue_webhook_pull(&env.store)
            .await
            .expect("enqueued")
            .job
            .id;
        let job = env.run_to_end(id).await;
        let Counts::Pull(counts) = job.counts else { panic!("pull counts") };
        assert_eq!((counts.total, counts.unchanged, counts.upserted, counts.failed), (1, 1, 1, 0), "{job:#?}");
        assert_eq!(env.store.count_pending_pulls().await.expect("count"), 0, "drained, so no endless re-run");
        assert_eq!(users(&env.store).await[1][3].as_deref(), Some("9"), "bob's seats pulled");
    }

    async fn a_conflict_on_a_locally_owned_field_keeps_the_local_value(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[ADA]).await;
        env.push(PushMode::Link).await;
        exec(&env.store, "UPDATE users SET plan = 'team' WHERE id = 1").await;
        env.change_in_hubspot("ada@example.com", &[("plan_tier", "free")]).await;

        let (pulled, _) = env.pull().await;
        assert_eq!(pulled.upserted, 0, "nothing to write: the owner's value stays");
        assert_eq!(users(&env.store).await[0][2].as_deref(), Some("team"), "the owner's value stays");
        let (counts, job) = env.push(PushMode::Link).await;
        assert_eq!(counts, push(0, 0, 1, 0, 0), "{job:#?}");
        assert_eq!(env.contact("ada@example.com").get("plan_tier").map(String::as_str), Some("team"));
    }

    async fn a_conflict_on_a_hubspot_owned_field_takes_hubspots_value(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[ADA]).await;
        env.push(PushMode::Link).await;
        exec(&env.store, "UPDATE users SET full_name = 'Local Ada' WHERE id = 1").await;
        env.change_in_hubspot("ada@example.com", &[("firstname", "HubSpot Ada")]).await;

        // Push does not overwrite the owner's changed value...
        let (counts, job) = env.push(PushMode::Link).await;
        assert_eq!(counts, push(0, 0, 0, 0, 1), "{job:#?}");
        assert_eq!(env.contact("ada@example.com").get("firstname").map(String::as_str), Some("HubSpot Ada"));
        // ...and pull brings it into the table.
        env.pull().await;
        assert_eq!(users(&env.store).await[0][1].as_deref(), Some("HubSpot Ada"));
    }

    async fn a_value_refused_fails_only_its_record(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[ADA, BOB, "3, 'cy@example.com', 'Cy', 'platinum', 2, '2026-03-01'"]).await;
        let (counts, job) = env.push(PushMode::Link).await;
        assert_eq!(counts, push(2, 0, 0, 1, 0), "{job:#?}");
        assert!(job.errors[0].reason.contains("users.id=3"), "{:?}", job.errors);
        assert!(job.errors[0].reason.contains("platinum"), "{:?}", job.errors);

        // HubSpot's 2.5 seats cannot fill an integer column: that record fails, not the pull.
        env.change_in_hubspot("bob@example.com", &[("seats", "2.5")]).await;
        let (pulled, job) = env.pull().await;
        assert_eq!((pulled.total, pulled.unchanged, pulled.failed), (2, 1, 1), "{job:#?}");
        assert!(job.errors[0].reason.contains("seats"), "{:?}", job.errors);
        env.change_in_hubspot("ada@example.com", &[("is_active", "false")]).await;
        let (pulled, job) = env.pull().await;
        assert_eq!((pulled.upserted, pulled.failed), (1, 1), "{job:#?}");
        assert_eq!(users(&env.store).await[0][4].as_deref(), Some("no"), "ada's row was written");
    }

    async fn a_full_pull_marks_rows_whose_contact_hubspot_deleted_and_no_push_creates_them_again(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[ADA, BOB]).await;
        env.push(PushMode::Link).await;
        env.client.archive_contact(&env.id_of("ada@example.com")).await.expect("deleted in HubSpot");

        let (pulled, job) = env.pull().await;
        assert_eq!((pulled.total, pulled.unchanged, pulled.failed), (1, 1, 0), "{job:#?}");
        assert_eq!(pulled.unlinked, 1, "ada's row is marked: {job:#?}");
        let links = env.links().await;
        assert_eq!((links[0][0].as_deref(), links[0][1].as_deref(), links[0][2].as_deref()), (Some("1"), None, Some("deleted")));
        assert_eq!(links[1][2].as_deref(), Some("live"));

        // A local change to the row is not pushed: HubSpot deleted it, crm-sync does not bring it back.
        exec(&env.store, "UPDATE users SET seats = 9 WHERE id = 1").await;
        let (counts, job) = env.push(PushMode::Link).await;
        assert_eq!(counts, push(0, 0, 0, 0, 0), "{job:#?}");
        assert_eq!(env.hubspot.contacts().len(), 1, "not created again");

        // Marked once; and a new HubSpot contact with its email does not take the row either.
        env.hubspot.insert_contacts(vec![
            [("email".to_owned(), "ada@example.com".to_owned())].into_iter().collect(),
        ]);
        let (again, job) = env.pull().await;
        assert_eq!((again.total, again.linked, again.unchanged, again.unlinked), (2, 0, 2, 0), "{job:#?}");
        assert_eq!(env.links().await[0][2].as_deref(), Some("deleted"));
        let (counts, _) = env.push(PushMode::Upsert).await;
        assert_eq!(counts, push(0, 0, 0, 0, 0));
        assert_eq!(users(&env.store).await[0][3].as_deref(), Some("9"), "the row's own data stays");
    }

    async fn a_row_whose_contact_hubspot_merged_away_follows_the_survivor(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[ADA]).await;
        env.push(PushMode::Link).await;
        let ada = env.id_of("ada@example.com");
        let work = env.hubspot.insert_contacts(vec![
            [("email".to_owned(), "ada.work@example.com".to_owned())].into_iter().collect(),
        ]);
        let survivor = env
            .client
            .merge_contacts(&HsObjectId::from(work[0].as_str()), &ada)
            .await
            .expect("merged")
            .id;

        let (pulled, job) = env.pull().await;
        assert_eq!((pulled.total, pulled.linked, pulled.unlinked, pulled.failed), (1, 1, 0, 0), "{job:#?}");
        assert_eq!(env.links().await[0][1].as_deref(), Some(survivor.0.as_str()), "linked to the survivor");

        exec(&env.store, "UPDATE users SET seats = 4 WHERE id = 1").await;
        let (counts, job) = env.push(PushMode::Link).await;
        assert_eq!(counts, push(0, 0, 1, 0, 0), "{job:#?}");
        let seats = env.hubspot.contact(&survivor.0).expect("survivor").properties.get("seats").cloned();
        assert_eq!(seats.as_deref(), Some("4"), "the change went to the survivor");
        assert_eq!(env.hubspot.contacts().len(), 1, "nothing created");
    }

    async fn a_push_to_a_contact_merged_away_since_moves_the_row_and_sends_the_change_next_time(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[ADA]).await;
        env.push(PushMode::Link).await;
        let ada = env.id_of("ada@example.com");
        let work = env.hubspot.insert_contacts(vec![
            [("email".to_owned(), "ada.work@example.com".to_owned())].into_iter().collect(),
        ]);
        let survivor = env
            .client
            .merge_contacts(&HsObjectId::from(work[0].as_str()), &ada)
            .await
            .expect("merged")
            .id;

        exec(&env.store, "UPDATE users SET seats = 6 WHERE id = 1").await;
        let (counts, job) = env.push(PushMode::Link).await;
        assert_eq!(counts, push(0, 0, 0, 1, 0), "HubSpot did not take the update: {job:#?}");
        assert!(job.errors[0].reason.contains("merged"), "{:?}", job.errors);
        assert_eq!(env.links().await[0][1].as_deref(), Some(survivor.0.as_str()));

        let (counts, job) = env.push(PushMode::Link).await;
        assert_eq!(counts, push(0, 0, 1, 0, 0), "{job:#?}");
        let seats = env.hubspot.contact(&survivor.0).expect("survivor").properties.get("seats").cloned();
        assert_eq!(seats.as_deref(), Some("6"));
    }

    async fn an_incremental_pull_reads_only_what_changed_since_the_mappings_last_pull(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[ADA, BOB]).await;
        env.push(PushMode::Link).await;
        // No bookmark yet: the first incremental pull reads everything.
        let (first, job) = env.pull_incremental().await;
        assert_eq!((first.total, first.unchanged, first.upserted), (2, 2, 0), "{job:#?}");
        assert_eq!(env.store.pull_bookmark().await.expect("bookmark read"), None,
            "the mapping keeps its own bookmark, not the built-in contacts table's");

        let (quiet, job) = env.pull_incremental().await;
        assert_eq!((quiet.total, quiet.upserted), (0, 0), "nothing changed: {job:#?}");

        env.change_in_hubspot("bob@example.com", &[("seats", "7")]).await;
        // A change to a property the mapping does not read: the record is read, nothing written.
        env.change_in_hubspot("ada@example.com", &[("lastname", "Lovelace")]).await;
        let before = env.links().await;
        let (changed, job) = env.pull_incremental().await;
        assert_eq!((changed.total, changed.unchanged, changed.upserted, changed.failed), (2, 2, 1, 0), "{job:#?}");
        assert_eq!(users(&env.store).await[1][3].as_deref(), Some("7"), "bob's change arrived");
        let after = env.links().await;
        assert_eq!(after[0], before[0], "an unchanged record costs no write, not even of its link");
        assert_ne!(after[1], before[1], "bob's link holds the value both sides now agree on");

        let (quiet, _) = env.pull_incremental().await;
        assert_eq!(quiet.total, 0, "the bookmark moved past what was read");
        let (counts, _) = env.push(PushMode::Link).await;
        assert_eq!(counts, push(0, 0, 0, 0, 0), "what the pull wrote is in sync");
    }

    async fn a_dry_run_writes_nothing_and_counts_what_the_real_run_then_does(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[ADA, BOB, "3, 'cy@example.com', 'Cy', 'team', 2, '2026-03-01'"]).await;
        let first = env.dry_then_real(JobAction::Push { mode: PushMode::Link }).await;
        assert_eq!(first.counts, Counts::Push(push(3, 0, 0, 0, 0)));
        let plan = first.plan.expect("a plan");
        assert_eq!(plan.calls.get("property_create"), Some(&4), "seats, signup_date, is_active and their group: {plan:#?}");
        assert_eq!(plan.calls.get("batch_create"), Some(&1), "{plan:#?}");

        exec(&env.store, "UPDATE users SET seats = 5 WHERE id = 1").await;
        exec(&env.store, "INSERT INTO users (id, email, full_name, plan, seats) VALUES (4, 'dan@example.com', 'Dan', 'free', 1)").await;
        env.hubspot.insert_contacts(vec![
            [("email".to_owned(), "dan@example.com".to_owned())].into_iter().collect(),
            [("email".to_owned(), "eve@example.com".to_owned())].into_iter().collect(),
        ]);
        let push_both = env.dry_then_real(JobAction::Push { mode: PushMode::Upsert }).await;
        assert_eq!(push_both.counts, Counts::Push(push(0, 1, 1, 0, 0)), "dan linked, ada updated");

        env.change_in_hubspot("bob@example.com", &[("seats", "7")]).await;
        env.client.archive_contact(&env.id_of("cy@example.com")).await.expect("deleted");
        let pulled = env.dry_then_real(pull_action(false)).await;
        let Counts::Pull(c) = pulled.counts else { panic!("pull counts") };
        assert_eq!((c.total, c.unchanged, c.upserted, c.unlinked), (4, 4, 1, 1), "{pulled:#?}");

        env.change_in_hubspot("ada@example.com", &[("is_active", "true")]).await;
        let incremental = env.dry_then_real(pull_action(true)).await;
        let Counts::Pull(c) = incremental.counts else { panic!("pull counts") };
        assert_eq!((c.total, c.upserted), (1, 1), "{incremental:#?}");
        assert!(incremental.plan.expect("a plan").calls.contains_key("search"));

        // The property the dry run did not create was created by the real run.
        match env.client.get_property("seats").await {
            Ok(_) => {}
            Err(HubSpotError::NotFound { .. }) => panic!("the real push creates seats"),
            Err(e) => panic!("{e}"),
        }
    }

    async fn a_hubspot_id_column_receives_each_rows_hubspot_id_when_the_mapping_asks(db: TestDb, profile: HubSpotProfile) {
        let env = Env::with_id_column(db, profile, &[ADA, BOB]).await;
        env.hubspot.insert_contacts(vec![
            [("email".to_owned(), "bob@example.com".to_owned())].into_iter().collect(),
        ]);
        let hs_ids = || async {
            texts(&env.store, "SELECT hs_id FROM users ORDER BY id").await.into_iter().map(|r| r[0].clone()).collect::<Vec<_>>()
        };

        let (counts, job) = env.push(PushMode::Link).await;
        assert_eq!(counts, push(1, 1, 0, 0, 0), "{job:#?}");
        let ada = env.id_of("ada@example.com");
        let bob = env.id_of("bob@example.com");
        assert_eq!(hs_ids().await, vec![Some(ada.0.clone()), Some(bob.0.clone())], "created and linked rows get their id");

        // Someone clears a row's id: the next push puts it back, with no HubSpot write.
        exec(&env.store, "UPDATE users SET hs_id = NULL WHERE id = 2").await;
        env.hubspot.set_recording(true);
        let (again, job) = env.push(PushMode::Link).await;
        assert_eq!(again, push(0, 0, 0, 0, 0), "the id is not a mapped value: {job:#?}");
        let writes = env.hubspot.take_recorded_requests().into_iter()
            .filter(|r| r.method != "GET" && !r.path.ends_with("/batch/read") && !r.path.ends_with("/search"))
            .count();
        assert_eq!(writes, 0, "no HubSpot write");
        assert_eq!(hs_ids().await[1].as_deref(), Some(bob.0.as_str()));

        // A pull that links a row writes its id; one HubSpot deleted is cleared.
        exec(&env.store, "INSERT INTO users (id, email, full_name, plan, seats) VALUES (3, 'cy@example.com', 'Cy', 'free', 1)").await;
        let cy = env.hubspot.insert_contacts(vec![
            [("email".to_owned(), "cy@example.com".to_owned())].into_iter().collect(),
        ]);
        env.client.archive_contact(&ada).await.expect("deleted in HubSpot");
        let (pulled, job) = env.pull().await;
        assert_eq!((pulled.linked, pulled.unlinked), (1, 1), "{job:#?}");
        assert_eq!(hs_ids().await, vec![None, Some(bob.0.clone()), Some(cy[0].clone())]);
        assert_eq!(users(&env.store).await.len(), 3, "the rows stay");
    }

    async fn a_push_and_a_pull_stopped_between_pages_resume_and_count_each_record_once(db: TestDb, profile: HubSpotProfile) {
        let rows: Vec<String> = (1..=250)
            .map(|i| format!("{i}, 'u{i}@example.com', 'U{i}', 'free', 1, '2026-01-01'"))
            .collect();
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        let env = Env::new(db, profile, &rows).await;

        let job = env.run_stopped(JobAction::Push { mode: PushMode::Link }, 2).await;
        let Counts::Push(counts) = job.counts else { panic!("push counts") };
        assert_eq!(counts, push(250, 0, 0, 0, 0), "{job:#?}");
        assert_eq!(env.hubspot.contacts().len(), 250, "no contact created twice");

        env.client.archive_contact(&env.id_of("u7@example.com")).await.expect("deleted");
        // Stopped within the sweep for deletions (3 list pages, then its first batch), then
        // after the first list page.
        for checks in [5, 2] {
            let job = env.run_stopped(pull_action(false), checks).await;
            let Counts::Pull(c) = job.counts else { panic!("pull counts") };
            let unlinked = u64::from(checks == 5);
            assert_eq!((c.total, c.unchanged, c.failed, c.unlinked), (249, 249, 0, unlinked), "stopped at check {checks}: {job:#?}");
        }
        assert_eq!(env.links().await.iter().filter(|l| l[2].as_deref() == Some("deleted")).count(), 1);
    }

    async fn deletion_and_merge_webhooks_move_the_links_of_a_mapped_table(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[ADA, BOB]).await;
        env.push(PushMode::Link).await;
        let ada = env.id_of("ada@example.com");
        let bob = env.id_of("bob@example.com");
        let work = env.hubspot.insert_contacts(vec![
            [("email".to_owned(), "ada.work@example.com".to_owned())].into_iter().collect(),
        ]);
        let survivor = env
            .client
            .merge_contacts(&HsObjectId::from(work[0].as_str()), &ada)
            .await
            .expect("merged")
            .id;
        env.client.archive_contact(&bob).await.expect("deleted");
        let number = |id: &HsObjectId| id.0.parse::<u64>().expect("a numeric id");
        let event = |value: serde_json::Value| WebhookEvent::from_json(value).expect("an event");
        let base = |event_id: u64, kind: &str, object: u64| serde_json::json!({
            "eventId": event_id, "subscriptionId": 7, "portalId": 62515, "appId": 54321,
            "occurredAt": 1, "subscriptionType": kind, "attemptNumber": 0,
            "objectId": object, "changeSource": "CRM"
        });
        let mut merge = base(1, "contact.merge", number(&survivor));
        merge["primaryObjectId"] = serde_json::json!(number(&survivor));
        merge["mergedObjectIds"] = serde_json::json!([number(&ada)]);
        process_events(&env.store, &[event(base(2, "contact.deletion", number(&bob))), event(merge)])
            .await
            .expect("applied");

        let links = env.links().await;
        assert_eq!((links[0][1].as_deref(), links[0][2].as_deref()), (Some(survivor.0.as_str()), Some("live")), "ada follows the merge");
        assert_eq!((links[1][1].as_deref(), links[1][2].as_deref()), (None, Some("deleted")), "bob is marked");

        exec(&env.store, "UPDATE users SET seats = 8").await;
        let (counts, job) = env.push(PushMode::Link).await;
        assert_eq!(counts, push(0, 0, 1, 0, 0), "ada's change goes to the survivor, bob's nowhere: {job:#?}");
        let seats = env.hubspot.contact(&survivor.0).expect("survivor").properties.get("seats").cloned();
        assert_eq!(seats.as_deref(), Some("8"));
        assert_eq!(env.hubspot.contacts().len(), 1, "bob is not created again");
    }
    async fn a_row_whose_email_is_a_hubspot_contacts_additional_email_is_linked_to_that_contact(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[BOB]).await;
        // Bob's email was merged into Robert's contact: HubSpot finds that contact by it, and
        // refuses to create another with it.
        let made = env.hubspot.insert_contacts(vec![
            [("email".to_owned(), "robert@example.com".to_owned())].into_iter().collect(),
            [("email".to_owned(), "bob@example.com".to_owned())].into_iter().collect(),
        ]);
        let robert = env
            .client
            .merge_contacts(&HsObjectId::from(made[0].as_str()), &HsObjectId::from(made[1].as_str()))
            .await
            .expect("merged")
            .id;

        for mode in [PushMode::Link, PushMode::Upsert] {
            exec(&env.store, "UPDATE users SET seats = seats + 1").await;
            let (counts, job) = env.push(mode).await;
            assert_eq!(job.status, JobStatus::Succeeded, "{mode:?}: {job:#?}");
            let expected = match mode {
                PushMode::Link => push(0, 1, 0, 0, 0),
                PushMode::Upsert => push(0, 0, 1, 0, 0),
            };
            assert_eq!(counts, expected, "{mode:?}: {job:#?}");
            assert_eq!(env.links().await[0][1].as_deref(), Some(robert.0.as_str()));
        }
        assert_eq!(env.hubspot.contacts().len(), 1, "nothing created");
    }
    async fn a_dry_run_foresees_a_value_an_enumeration_does_not_list_and_the_push_sends_none(db: TestDb, profile: HubSpotProfile) {
        let env = Env::new(db, profile, &[ADA, BOB, "3, 'cy@example.com', 'Cy', 'platinum', 2, '2026-03-01'"]).await;
        env.hubspot.set_recording(true);
        let planned = env.dry_then_real(JobAction::Push { mode: PushMode::Link }).await;
        assert_eq!(planned.counts, Counts::Push(push(2, 0, 0, 1, 0)), "{planned:#?}");
        assert!(planned.errors[0].reason.contains("\"platinum\" is not one of the property's options"), "{:?}", planned.errors);
        // The real push never offered HubSpot the value: its create held Ada and Bob only.
        let sent: Vec<String> = env.hubspot.take_recorded_requests().into_iter()
            .filter(|r| r.path.ends_with("/batch/create"))
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        assert!(!sent.is_empty() && sent.iter().all(|b| !b.contains("platinum")), "{sent:?}");
    }
}
