//! The webhook pull job (a pull with trigger `webhook`), on SQLite and PostgreSQL: it reads
//! exactly the records webhooks named (`webhook_pulls`) from the in-process sandbox over real
//! HTTP — one batch read per 100 ids, never a list or a search — writes them like any pull,
//! counts them exactly, and leaves nothing pending.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::TestDb;
use common::world::{World, unlimited_sandbox};
use crm_sync::ids::HsObjectId;
use crm_sync::jobs::EnqueueRequest;
use crm_sync::jobs::model::{Counts, Job, JobAction, JobSpec, JobStatus, PullMode, Trigger};
use crm_sync::sandbox::HubSpotProfile;
use crm_sync::store::NewContact;
use crm_sync::store::jobs::Tx;
use crm_sync::webhooks::{
    clear_pulled, count_pending_pulls, pending_pulls, record_pending_pulls, take_pending_pulls,
};
use std::collections::BTreeMap;

/// A world answering as `profile` says HubSpot does.
async fn world(db: TestDb, profile: HubSpotProfile) -> World {
    World::start(db, unlimited_sandbox(profile, 11)).await
}

/// What a webhook-pull spec needs of the shared [`World`] beyond it.
trait WebhookPullWorld {
    fn add_hubspot(&self, emails: &[&str]) -> Vec<HsObjectId>;
    fn calls(&self, operation: &str) -> u64;
    async fn webhook_pull(&self) -> Job;
    async fn rows(&self) -> Vec<(Option<String>, Option<String>)>;
}

impl WebhookPullWorld for World {
    /// HubSpot contacts inserted directly (no webhooks); their ids.
    fn add_hubspot(&self, emails: &[&str]) -> Vec<HsObjectId> {
        self.sandbox
            .insert_contacts(
                emails
                    .iter()
                    .map(|email| BTreeMap::from([("email".to_owned(), (*email).to_owned())]))
                    .collect(),
            )
            .into_iter()
            .map(HsObjectId)
            .collect()
    }

    /// What the sandbox has answered, per operation.
    fn calls(&self, operation: &str) -> u64 {
        self.sandbox
            .stats()
            .by_operation
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Enqueues a webhook pull (as the webhook route does) and runs it to its end.
    async fn webhook_pull(&self) -> Job {
        self.enqueue_and_drive(EnqueueRequest {
            spec: JobSpec::from(JobAction::Pull {
                mode: PullMode::Upsert,
                incremental: false,
            }),
            trigger: Trigger::Webhook,
            force: false,
        })
        .await
    }

    /// Local rows as (email, hs_object_id).
    async fn rows(&self) -> Vec<(Option<String>, Option<String>)> {
        self.store
            .list_contacts(None, 10_000)
            .await
            .expect("list")
            .into_iter()
            .map(|c| (c.email, c.hs_object_id.map(|h| h.0)))
            .collect()
    }
}

fn counts(job: &Job) -> crm_sync::jobs::model::PullCounts {
    match job.counts {
        Counts::Pull(c) => c,
        Counts::Push(_) => panic!("a pull has pull counts"),
    }
}

backend_tests! {
    async fn a_webhook_pull_reads_only_the_named_records_one_batch_read_per_100(db: TestDb, profile: HubSpotProfile) {
        let w = world(db, profile).await;
        let emails: Vec<String> = (0..300).map(|i| format!("c{i}@acme.io")).collect();
        let ids = w.add_hubspot(&emails.iter().map(String::as_str).collect::<Vec<_>>());
        // Webhooks named 250 of the 300, some of them several times.
        let named = &ids[..250];
        record_pending_pulls(&w.store, named).await.unwrap();
        record_pending_pulls(&w.store, &named[..40]).await.unwrap();
        assert_eq!(count_pending_pulls(&w.store).await.unwrap(), 250);

        let job = w.webhook_pull().await;

        assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
        assert_eq!(job.trigger, Trigger::Webhook);
        let c = counts(&job);
        assert_eq!(c.total, 250, "each named record read once: {c:?}");
        assert_eq!(c.created, 250);
        assert!(c.is_consistent());
        assert_eq!(job.progress.processed, 250);
        assert_eq!(job.progress.total, Some(250));
        assert_eq!(w.calls("contacts.batch_read"), 3, "250 ids: three batch reads");
        assert_eq!(w.calls("contacts.list"), 0, "no full scan");
        assert_eq!(w.calls("contacts.search"), 0, "no search");
        assert_eq!(w.rows().await.len(), 250, "only the named records arrive");
        assert_eq!(count_pending_pulls(&w.store).await.unwrap(), 0, "webhook_pulls is empty");

        // Nothing pending: the next webhook pull reads nothing.
        let again = w.webhook_pull().await;
        assert_eq!(again.status, JobStatus::Succeeded);
        assert_eq!(counts(&again).total, 0);
        assert_eq!(w.calls("contacts.batch_read"), 3);
    }

    async fn a_webhook_pull_links_a_changed_record_and_leaves_local_fields_alone(db: TestDb, profile: HubSpotProfile) {
        let w = world(db, profile).await;
        w.store
            .insert_contacts(&[NewContact {
                email: Some("ann@acme.io".to_owned()),
                first_name: Some("Ann".to_owned()),
                ..NewContact::default()
            }])
            .await
            .unwrap();
        let ids = w.add_hubspot(&["ann@acme.io"]);
        record_pending_pulls(&w.store, &ids).await.unwrap();

        let job = w.webhook_pull().await;

        let c = counts(&job);
        assert_eq!((c.total, c.linked, c.created), (1, 1, 0), "{c:?}");
        assert_eq!(w.rows().await, [(Some("ann@acme.io".to_owned()), Some(ids[0].0.clone()))]);
    }

    async fn records_hubspot_no_longer_has_are_unlinked_and_not_counted(db: TestDb, profile: HubSpotProfile) {
        let w = world(db, profile).await;
        w.store
            .insert_contacts(&[NewContact {
                email: Some("gone@acme.io".to_owned()),
                ..NewContact::default()
            }])
            .await
            .unwrap();
        const SQL: &str = "UPDATE contacts SET hs_object_id = '987654321'";
        if let Some(p) = w.store.pg_pool() {
            sqlx::query(SQL).execute(p).await.unwrap();
        } else if let Some(p) = w.store.sqlite_pool() {
            sqlx::query(SQL).execute(p).await.unwrap();
        }
        let present = w.add_hubspot(&["here@acme.io"]);
        record_pending_pulls(&w.store, &[HsObjectId::from("987654321"), present[0].clone()])
            .await
            .unwrap();

        let job = w.webhook_pull().await;

        assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
        let c = counts(&job);
        assert_eq!((c.total, c.created, c.failed), (1, 1, 0), "the missing id is not a contact read: {c:?}");
        let mut rows = w.rows().await;
        rows.sort();
        assert_eq!(
            rows,
            [
                (Some("gone@acme.io".to_owned()), None),
                (Some("here@acme.io".to_owned()), Some(present[0].0.clone())),
            ],
            "the row linked to the deleted record is unlinked, as a deletion event would"
        );
        assert_eq!(count_pending_pulls(&w.store).await.unwrap(), 0);
    }

    async fn a_batch_hubspot_refuses_whole_is_halved_and_the_records_in_it_still_arrive(db: TestDb, profile: HubSpotProfile) {
        let w = world(db, profile).await;
        let present = w.add_hubspot(&["here@acme.io"]);
        // Ids so long that one batch read of them all is over HubSpot's request size: the
        // sandbox refuses the whole batch with a 400 (it answers a non-numeric id with a 207
        // "not found", so that is not the way to reach a 400 there).
        let long: Vec<HsObjectId> = (0..99)
            .map(|i| HsObjectId(format!("{i:02}{}", "9".repeat(172_000))))
            .collect();
        record_pending_pulls(&w.store, &long).await.unwrap();
        record_pending_pulls(&w.store, &present).await.unwrap();

        let job = w.webhook_pull().await;

        assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
        let c = counts(&job);
        assert_eq!((c.total, c.created, c.failed), (1, 1, 0), "{c:?}");
        // The refused request fails before the sandbox knows its operation: it is counted
        // among requests only.
        let stats = w.sandbox.stats();
        let known: u64 = stats.by_operation.values().sum();
        assert_eq!(
            (stats.requests - known, w.calls("contacts.batch_read")),
            (1, 2),
            "refused whole, then read in two halves"
        );
        assert_eq!(w.rows().await, [(Some("here@acme.io".to_owned()), Some(present[0].0.clone()))]);
        assert_eq!(count_pending_pulls(&w.store).await.unwrap(), 0, "nothing is left pending");
    }

    async fn a_record_merged_into_another_follows_its_survivor_and_is_never_taken_for_deleted(db: TestDb, profile: HubSpotProfile) {
        let w = world(db, profile).await;
        w.store
            .insert_contacts(&[NewContact {
                email: Some("ann@acme.io".to_owned()),
                first_name: Some("Ann".to_owned()),
                ..NewContact::default()
            }])
            .await
            .unwrap();
        let ann = w.add_hubspot(&["ann@acme.io"]);
        record_pending_pulls(&w.store, &ann).await.unwrap();
        assert_eq!(counts(&w.webhook_pull().await).linked, 1);
        // HubSpot merges Ann's contact into one that keeps its own email. Its batch read leaves
        // Ann's id out of its results without an error (it answers with the survivor).
        let survivor = w.add_hubspot(&["annie@acme.io"]);
        w.ctx.hubspot.merge_contacts(&survivor[0], &ann[0]).await.expect("merge");
        record_pending_pulls(&w.store, &ann).await.unwrap();
        let gets = w.calls("contacts.get");

        let job = w.webhook_pull().await;

        assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
        let c = counts(&job);
        assert_eq!((c.total, c.linked, c.created, c.failed), (1, 1, 0, 0), "{c:?}");
        assert_eq!(w.calls("contacts.get"), gets + 1, "the id left out is read once on its own");
        assert_eq!(
            w.rows().await,
            [(Some("ann@acme.io".to_owned()), Some(survivor[0].0.clone()))],
            "the row follows the survivor, as after a merge event; no second row for it"
        );
        assert_eq!(count_pending_pulls(&w.store).await.unwrap(), 0);
    }
}

// ---- the pending table alone (no HubSpot) --------------------------------------------

backend_tests! {
    async fn a_record_named_again_while_it_was_read_stays_pending(db: TestDb) {
        let store = db.store().await;
        let ids = [HsObjectId::from("1"), HsObjectId::from("2")];
        record_pending_pulls(&store, &ids).await.unwrap();
        let taken = take_pending_pulls(&store, 100).await.unwrap();
        assert_eq!(taken.len(), 2);
        // A webhook names "2" again while the pull reads the batch.
        record_pending_pulls(&store, &ids[1..]).await.unwrap();

        let mut tx = Tx::begin(&store).await.unwrap();
        assert_eq!(clear_pulled(&mut tx, &taken).await.unwrap(), 1);
        tx.commit().await.unwrap();

        assert_eq!(
            pending_pulls(&store, 100).await.unwrap(),
            [HsObjectId::from("2")],
            "the change announced during the read is read again"
        );
    }

    async fn clearing_rolls_back_with_the_page(db: TestDb) {
        let store = db.store().await;
        record_pending_pulls(&store, &[HsObjectId::from("7")]).await.unwrap();
        let taken = take_pending_pulls(&store, 100).await.unwrap();
        let mut tx = Tx::begin(&store).await.unwrap();
        clear_pulled(&mut tx, &taken).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(count_pending_pulls(&store).await.unwrap(), 1, "a page that did not commit clears nothing");
    }
}
