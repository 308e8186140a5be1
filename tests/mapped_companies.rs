//! A companies mapping to the user's own table, synced both ways against the sandbox on both
//! backends and under both HubSpot profiles: `orgs(id, name, domain, size, notes)` with text,
//! number and pull-only fields. A company's identity is its HubSpot id plus crm-sync's
//! external key (`<installation>:orgs:<id>`), never its domain; `link` mode links the one
//! live company with the row's domain and refuses to guess between several.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestDb;
use common::mapped::{DOMAIN_BOTH_WAYS, orgs_mapping};
use common::user_table::{exec, texts};
use common::world::{World, unlimited_sandbox};
use crm_sync::ids::CompanyId;
use crm_sync::jobs::EnqueueRequest;
use crm_sync::jobs::model::{
    Counts, Job, JobAction, JobSpec, JobStatus, PullCounts, PullMode, PushCounts, PushMode,
    SyncObject, Trigger,
};
use crm_sync::sandbox::SandboxArgs;
use crm_sync::store::PendingObject;
use crm_sync::sync::companies::COMPANY_KEY;
use crm_sync::sync::keys::ExternalKeys;
use crm_sync::webhooks::{WebhookEvent, process_events};

/// The mapping of `orgs`: text, number and pull-only fields.
fn orgs_mapped() -> String {
    orgs_mapping(
        DOMAIN_BOTH_WAYS,
        r#"size = { property = "org_size", direction = "both", owner = "hubspot" }
notes = { property = "org_notes", direction = "pull" }
"#,
    )
}

/// A world whose database has `orgs` with `rows` (`id, name, domain, size` as SQL values),
/// mapped by [`orgs_mapped`]; incremental pulls read from the bookmark itself (no lookback).
async fn world(db: TestDb, args: SandboxArgs, rows: &[&str]) -> World {
    let mut world = World::start(db, args).await;
    exec(
        &world.store,
        "CREATE TABLE orgs (id BIGINT PRIMARY KEY, name TEXT, domain TEXT, size INTEGER, \
         notes TEXT)",
    )
    .await;
    for row in rows {
        exec(
            &world.store,
            &format!("INSERT INTO orgs (id, name, domain, size) VALUES ({row})"),
        )
        .await;
    }
    world.map(&orgs_mapped()).await;
    world.ctx.pull.lookback = Duration::ZERO;
    world
}

async fn run(world: &World, action: JobAction, dry_run: bool) -> Job {
    let mut spec = JobSpec::from(action);
    spec.object = SyncObject::Companies;
    spec.dry_run = dry_run;
    let job = world
        .enqueue_and_drive(EnqueueRequest {
            spec,
            trigger: Trigger::Cli,
            force: false,
        })
        .await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    job
}

async fn push(world: &World, mode: PushMode) -> PushCounts {
    match run(world, JobAction::Push { mode }, false).await.counts {
        Counts::Push(counts) => counts,
        other => panic!("push counts, not {other:?}"),
    }
}

async fn pull(world: &World, incremental: bool) -> PullCounts {
    let action = JobAction::Pull {
        mode: PullMode::Upsert,
        incremental,
    };
    match run(world, action, false).await.counts {
        Counts::Pull(counts) => counts,
        other => panic!("pull counts, not {other:?}"),
    }
}

fn pushed(created: u64, linked: u64, failed: u64) -> PushCounts {
    PushCounts {
        total: created + linked + failed,
        created,
        linked,
        failed,
        ..PushCounts::default()
    }
}

/// crm-sync's external key of the row `id` of `orgs`.
async fn key_of(world: &World, id: u32) -> String {
    let keys = ExternalKeys::new(&world.store.installation().await.unwrap());
    format!("{}:orgs:{id}", keys.installation())
}

/// The sandbox's live companies as (name, domain, external key), sorted.
fn companies(world: &World) -> Vec<(String, String, String)> {
    let mut all: Vec<(String, String, String)> = world
        .sandbox
        .companies()
        .into_iter()
        .map(|c| {
            let get = |p: &str| c.properties.get(p).cloned().unwrap_or_default();
            (get("name"), get("domain"), get(COMPANY_KEY))
        })
        .collect();
    all.sort();
    all
}

/// The HubSpot company linked to the row `id`.
async fn linked_id(world: &World, id: u32) -> CompanyId {
    let rows = texts(
        &world.store,
        &format!(
            "SELECT hs_object_id FROM object_links WHERE object = 'companies' AND local_key = '{id}'"
        ),
    )
    .await;
    CompanyId(
        rows.first()
            .and_then(|r| r[0].clone())
            .unwrap_or_else(|| panic!("row {id} is linked")),
    )
}

/// The rows of `orgs` as text: (id, name, size, notes).
async fn orgs(world: &World) -> Vec<Vec<Option<String>>> {
    texts(
        &world.store,
        "SELECT CAST(id AS TEXT), name, CAST(size AS TEXT), notes FROM orgs ORDER BY id",
    )
    .await
}

fn row(values: [Option<&str>; 4]) -> Vec<Option<String>> {
    values.iter().map(|v| v.map(str::to_owned)).collect()
}

fn company(properties: &[(&str, &str)]) -> BTreeMap<String, String> {
    properties
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

backend_tests! {
    async fn a_push_creates_each_company_with_its_external_key_and_a_second_push_sends_nothing(
        db: TestDb,
        profile: HubSpotProfile
    ) {
        let world = world(
            db,
            unlimited_sandbox(profile, 3),
            &["1, 'Acme', 'acme.test', 10", "2, 'Globex', 'globex.test', 20", "3, 'Initech', NULL, NULL"],
        )
        .await;
        assert_eq!(push(&world, PushMode::Link).await, pushed(3, 0, 0));
        assert_eq!(
            companies(&world),
            vec![
                ("Acme".to_owned(), "acme.test".to_owned(), key_of(&world, 1).await),
                ("Globex".to_owned(), "globex.test".to_owned(), key_of(&world, 2).await),
                ("Initech".to_owned(), String::new(), key_of(&world, 3).await),
            ]
        );
        let acme = world.sandbox.company(&linked_id(&world, 1).await.0).unwrap();
        assert_eq!(acme.properties.get("org_size").map(String::as_str), Some("10"));
        let again = push(&world, PushMode::Link).await;
        assert_eq!(again.total, 0, "nothing changed: {again:?}");
    }

    async fn a_lost_create_answer_is_found_again_by_its_key_and_counted_as_created(
        db: TestDb,
        profile: HubSpotProfile
    ) {
        let args = SandboxArgs {
            fault_drop_first_writes: 1,
            ..unlimited_sandbox(profile, 4)
        };
        let world = world(db, args, &["1, 'Acme', 'acme.test', 10", "2, 'Globex', 'globex.test', 20"]).await;
        assert_eq!(push(&world, PushMode::Link).await, pushed(2, 0, 0));
        assert!(world.sandbox.stats().dropped_after_write > 0, "an answer was lost");
        assert_eq!(companies(&world).len(), 2, "no company twice: {:?}", companies(&world));
    }

    async fn a_lost_commit_links_what_the_earlier_attempt_created_and_creates_nothing_twice(
        db: TestDb,
        profile: HubSpotProfile
    ) {
        let world = world(db, unlimited_sandbox(profile, 5), &["1, 'Acme', 'acme.test', 10", "2, 'Globex', 'globex.test', 20"]).await;
        assert_eq!(push(&world, PushMode::Link).await, pushed(2, 0, 0));
        // As if the page's commit had been lost to a kill -9 after HubSpot applied it.
        exec(&world.store, "DELETE FROM object_links WHERE object = 'companies'").await;
        assert_eq!(push(&world, PushMode::Link).await, pushed(2, 0, 0));
        assert_eq!(companies(&world).len(), 2, "{:?}", companies(&world));
        assert_eq!(push(&world, PushMode::Link).await.total, 0);
    }

    async fn link_mode_links_the_one_company_with_the_domain_and_never_guesses_between_several(
        db: TestDb,
        profile: HubSpotProfile
    ) {
        let world = world(
            db,
            unlimited_sandbox(profile, 6),
            &["1, 'Acme', 'acme.test', 10", "2, 'Globex', 'globex.test', 20", "3, 'Initech', 'initech.test', 30"],
        )
        .await;
        let existing = world.sandbox.insert_companies(vec![
            company(&[("name", "Acme Corp"), ("domain", "acme.test")]),
            company(&[("name", "Globex East"), ("domain", "globex.test")]),
            company(&[("name", "Globex West"), ("domain", "globex.test")]),
        ]);
        let job = run(&world, JobAction::Push { mode: PushMode::Link }, false).await;
        assert_eq!(job.counts, Counts::Push(pushed(1, 1, 1)));
        assert_eq!(linked_id(&world, 1).await.0, existing[0]);
        // Linking leaves HubSpot's values alone.
        let acme = world.sandbox.company(&existing[0]).unwrap();
        assert_eq!(acme.properties.get("name").map(String::as_str), Some("Acme Corp"));
        let failure = job.errors.iter().find(|e| e.reason.contains("orgs.id=2"));
        let reason = &failure.expect("the ambiguous row is listed").reason;
        assert!(
            reason.contains(&existing[1]) && reason.contains(&existing[2]),
            "names both candidates: {reason}"
        );
        assert_eq!(world.sandbox.companies().len(), 4, "only Initech was created");
    }

    async fn a_full_pull_takes_hubspot_changes_by_owner_and_marks_deleted_companies(
        db: TestDb,
        profile: HubSpotProfile
    ) {
        let world = world(
            db,
            unlimited_sandbox(profile, 7),
            &["1, 'Acme', 'acme.test', 10", "2, 'Globex', 'globex.test', 20", "3, 'Initech', NULL, 30"],
        )
        .await;
        assert_eq!(push(&world, PushMode::Link).await, pushed(3, 0, 0));
        let client = world.ctx.hubspot.clone();
        let acme = linked_id(&world, 1).await;
        let changes = company(&[("org_size", "11"), ("org_notes", "key account"), ("name", "ACME")]);
        client.update_company(&acme, &changes).await.unwrap();
        // Changed on both sides: `name` is owned locally, `org_size` by HubSpot.
        exec(&world.store, "UPDATE orgs SET name = 'Acme Inc', size = 12 WHERE id = 1").await;
        client.archive_company(&linked_id(&world, 2).await).await.unwrap();
        let counts = pull(&world, false).await;
        assert_eq!((counts.total, counts.upserted, counts.unlinked), (2, 1, 1), "{counts:?}");
        assert_eq!(
            orgs(&world).await,
            vec![
                row([Some("1"), Some("Acme Inc"), Some("11"), Some("key account")]),
                row([Some("2"), Some("Globex"), Some("20"), None]),
                row([Some("3"), Some("Initech"), Some("30"), None]),
            ]
        );
        // The local name wins in HubSpot at the next push; the deleted company never comes back.
        exec(&world.store, "UPDATE orgs SET name = 'Globex 2' WHERE id = 2").await;
        let counts = push(&world, PushMode::Link).await;
        assert_eq!((counts.updated, counts.created), (1, 0), "{counts:?}");
        let acme = world.sandbox.company(&acme.0).unwrap();
        assert_eq!(acme.properties.get("name").map(String::as_str), Some("Acme Inc"));
        assert_eq!(world.sandbox.companies().len(), 2);
    }

    async fn an_incremental_pull_reads_only_the_companies_changed_since_the_last_pull(
        db: TestDb,
        profile: HubSpotProfile
    ) {
        let world = world(
            db,
            unlimited_sandbox(profile, 8),
            &["1, 'Acme', 'acme.test', 10", "2, 'Globex', 'globex.test', 20"],
        )
        .await;
        assert_eq!(push(&world, PushMode::Link).await, pushed(2, 0, 0));
        assert_eq!(pull(&world, false).await.total, 2);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let globex = linked_id(&world, 2).await;
        world
            .ctx
            .hubspot
            .update_company(&globex, &company(&[("org_notes", "renewal due")]))
            .await
            .unwrap();
        let counts = pull(&world, true).await;
        assert_eq!((counts.total, counts.upserted), (1, 1), "{counts:?}");
        assert_eq!(
            orgs(&world).await[1],
            row([Some("2"), Some("Globex"), Some("20"), Some("renewal due")])
        );
    }

    async fn a_dry_run_counts_what_the_real_run_then_does_and_writes_nothing(
        db: TestDb,
        profile: HubSpotProfile
    ) {
        let world = world(
            db,
            unlimited_sandbox(profile, 9),
            &["1, 'Acme', 'acme.test', 10", "2, 'Globex', 'globex.test', 20", "3, 'Initech', 'initech.test', 30"],
        )
        .await;
        world.sandbox.insert_companies(vec![
            company(&[("name", "Acme Corp"), ("domain", "acme.test")]),
            company(&[("name", "Globex East"), ("domain", "globex.test")]),
            company(&[("name", "Globex West"), ("domain", "globex.test")]),
        ]);
        let action = JobAction::Push { mode: PushMode::Link };
        let dry = run(&world, action, true).await;
        assert_eq!(world.sandbox.companies().len(), 3, "a dry run creates nothing");
        assert!(texts(&world.store, "SELECT local_key FROM object_links").await.is_empty());
        let real = run(&world, action, false).await;
        assert_eq!(dry.counts, real.counts);
        assert_eq!(real.counts, Counts::Push(pushed(1, 1, 1)));
    }

    async fn company_webhooks_pull_what_others_changed_and_mark_what_they_deleted(
        db: TestDb,
        profile: HubSpotProfile
    ) {
        let world = world(
            db,
            unlimited_sandbox(profile, 10),
            &["1, 'Acme', 'acme.test', 10", "2, 'Globex', 'globex.test', 20"],
        )
        .await;
        assert_eq!(push(&world, PushMode::Link).await, pushed(2, 0, 0));
        let acme = linked_id(&world, 1).await;
        let globex = linked_id(&world, 2).await;
        world
            .ctx
            .hubspot
            .update_company(&acme, &company(&[("org_notes", "churn risk")]))
            .await
            .unwrap();
        world.ctx.hubspot.archive_company(&globex).await.unwrap();
        let number = |id: &CompanyId| id.0.parse::<u64>().expect("a numeric id");
        let event = |event_id: u64, kind: &str, object: u64| {
            let mut value = serde_json::json!({
                "eventId": event_id, "subscriptionId": 7, "portalId": 62515, "appId": 54321,
                "occurredAt": 1, "subscriptionType": kind, "attemptNumber": 0,
                "objectId": object, "changeSource": "CRM"
            });
            if kind == "company.propertyChange" {
                value["propertyName"] = serde_json::json!("org_notes");
                value["propertyValue"] = serde_json::json!("churn risk");
            }
            WebhookEvent::from_json(value).expect("an event")
        };
        let outcome = process_events(
            &world.store,
            &[
                event(1, "company.propertyChange", number(&acme)),
                event(2, "company.deletion", number(&globex)),
            ],
        )
        .await
        .expect("applied");
        // What the webhook route records for the drain.
        world
            .store
            .record_pending(PendingObject::Company, &outcome.companies_changed)
            .await
            .expect("recorded");
        let marked = texts(
            &world.store,
            "SELECT local_key FROM object_links WHERE object = 'companies' \
             AND hubspot_deleted_at IS NOT NULL",
        )
        .await;
        assert_eq!(marked, vec![vec![Some("2".to_owned())]], "globex's row is marked");

        let id = crm_sync::jobs::queue::enqueue_webhook_pull(&world.store)
            .await
            .expect("enqueued")
            .job
            .id;
        let job = world.drive(id).await;
        let Counts::Pull(counts) = job.counts else { panic!("pull counts") };
        assert_eq!((counts.total, counts.upserted, counts.failed), (1, 1, 0), "{job:#?}");
        assert_eq!(
            orgs(&world).await[0],
            row([Some("1"), Some("Acme"), Some("10"), Some("churn risk")])
        );
        exec(&world.store, "UPDATE orgs SET name = 'Globex 2' WHERE id = 2").await;
        assert_eq!(push(&world, PushMode::Link).await.total, 0, "globex is never created again");
        assert_eq!(world.sandbox.companies().len(), 1);
    }

    async fn a_unique_property_as_match_key_finds_companies_again_on_both_sides(
        db: TestDb,
        profile: HubSpotProfile
    ) {
        let mut world = world(
            db,
            unlimited_sandbox(profile, 11),
            &["1, 'Acme', 'acme.test', 10", "2, 'Globex', 'globex.test', 20"],
        )
        .await;
        exec(&world.store, "ALTER TABLE orgs ADD COLUMN account TEXT").await;
        exec(&world.store, "UPDATE orgs SET account = 'acct-' || CAST(id AS TEXT)").await;
        let mapping = orgs_mapped()
            .replace("key_column = \"id\"", "key_column = \"id\"\nmatch_key = \"account_id\"")
            .replace(
                "[sync.objects.fields]",
                "[sync.objects.fields]\naccount = { property = \"account_id\", direction = \"push\" }",
            );
        world.map(&mapping).await;
        assert_eq!(push(&world, PushMode::Link).await, pushed(2, 0, 0));
        let property = world
            .ctx
            .hubspot
            .get_object_property(crm_sync::hubspot::ObjectType::Companies, "account_id")
            .await
            .unwrap();
        assert!(property.has_unique_value, "crm-sync creates its match key with unique values");
        // The links lost: the push finds both companies by their account id, the pull too.
        exec(&world.store, "DELETE FROM object_links WHERE object = 'companies'").await;
        let counts = pull(&world, false).await;
        assert_eq!((counts.total, counts.linked), (2, 2), "{counts:?}");
        exec(&world.store, "DELETE FROM object_links WHERE object = 'companies'").await;
        assert_eq!(push(&world, PushMode::Link).await, pushed(0, 2, 0));
        assert_eq!(world.sandbox.companies().len(), 2, "nothing created twice");
    }
}
