//! The primary company of the rows of a user's own contacts table (`company_column`), synced
//! with HubSpot's contact→company associations against the sandbox, on both backends and under
//! both sandbox profiles: `users(id, email, full_name, company_id)` whose `company_id` names
//! crm-sync's own companies. The association state lives on crm-sync's link rows; the user's
//! table is written only in its `company_id` column.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::collections::BTreeMap;

use common::TestDb;
use common::mapped::{
    DOMAIN_BOTH_WAYS, MappedEnv, load_settings, orgs_mapping, pull_action, push_action,
};
use common::user_table::{exec, texts};
use common::watch::{association_calls_of, calls_between, sync_calls};
use crm_sync::hubspot::{
    AssociationArchive, AssociationInput, AssociationSpec, AssociationTypeId, Batch, ObjectType,
};
use crm_sync::ids::{CompanyId, HsObjectId};
use crm_sync::jobs::model::{Counts, JobAction, JobSpec, PushCounts, SyncObject};
use crm_sync::mapping::check_mappings;
use crm_sync::sandbox::HubSpotProfile;
use crm_sync::store::{PendingObject, Tx};
use crm_sync::sync::mapped::check_runnable;

const MAPPING: &str = r#"
[[sync.objects]]
object = "contacts"
table = "users"
key_column = "id"
company_column = "company_id"

[sync.objects.fields]
email = { property = "email", direction = "both", owner = "local" }
full_name = { property = "firstname", direction = "both", owner = "local" }
"#;

const TABLE: &str = "CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT UNIQUE, \
                     full_name TEXT, company_id BIGINT, signup DATE)";

/// The world of a spec: the mapped table, and three companies (local ids 1, 2, 3) linked to
/// HubSpot companies of their own.
struct World {
    env: MappedEnv,
    /// The HubSpot ids of local companies 1, 2 and 3.
    companies: [String; 3],
}

impl World {
    async fn new(db: TestDb, profile: HubSpotProfile, users: &[&str]) -> World {
        World::with(db, profile, users, MAPPING).await
    }

    async fn with(db: TestDb, profile: HubSpotProfile, users: &[&str], mapping: &str) -> World {
        let mut setup = format!("{TABLE};");
        for row in users {
            setup.push_str(&format!(
                "INSERT INTO users (id, email, full_name, company_id) VALUES ({row});"
            ));
        }
        let env = MappedEnv::start(db, profile, &setup, mapping).await;
        let ids = env.hubspot.insert_companies(
            ["acme", "globex", "initech"]
                .iter()
                .map(|name| {
                    [
                        ("name".to_owned(), (*name).to_owned()),
                        ("domain".to_owned(), format!("{name}.example")),
                    ]
                    .into_iter()
                    .collect()
                })
                .collect(),
        );
        for (i, id) in ids.iter().enumerate() {
            let n = i + 1;
            exec(
                &env.store,
                // A fresh database numbers them 1, 2, 3 (its own sequence stays in step).
                &format!(
                    "INSERT INTO companies (name, domain, hs_object_id) \
                     VALUES ('company {n}', 'c{n}.example', '{id}')"
                ),
            )
            .await;
        }
        let numbered = texts(
            &env.store,
            "SELECT CAST(id AS TEXT) FROM companies ORDER BY id",
        )
        .await;
        assert_eq!(
            numbered,
            vec![row(&[Some("1")]), row(&[Some("2")]), row(&[Some("3")])]
        );
        World {
            env,
            companies: [ids[0].clone(), ids[1].clone(), ids[2].clone()],
        }
    }

    /// The HubSpot id of local company `n` (1-based).
    fn company(&self, n: usize) -> String {
        self.companies[n - 1].clone()
    }

    /// The HubSpot contact with `email`.
    fn contact(&self, email: &str) -> String {
        self.env.hubspot_contact(email).id
    }

    /// The companies of the contact with `email` in HubSpot: (HubSpot id, primary).
    fn companies_of(&self, email: &str) -> Vec<(String, bool)> {
        self.env
            .hubspot
            .companies_of_contact(&self.contact(email))
            .into_iter()
            .map(|a| (a.id, a.primary))
            .collect()
    }

    /// `users.company_id` by id, as text.
    async fn columns(&self) -> Vec<Vec<Option<String>>> {
        texts(
            &self.env.store,
            "SELECT CAST(id AS TEXT), CAST(company_id AS TEXT) FROM users ORDER BY id",
        )
        .await
    }

    /// In HubSpot, as a person would: the contact's primary company becomes `to` (`None`:
    /// none), its old pair removed.
    async fn move_in_hubspot(&self, email: &str, from: Option<String>, to: Option<String>) {
        let contact = self.contact(email);
        if let Some(from) = from {
            let batch = Batch::new(vec![AssociationArchive {
                from: contact.clone(),
                to: vec![from],
            }])
            .unwrap();
            self.env
                .client
                .archive_associations(ObjectType::Contacts, ObjectType::Companies, &batch)
                .await
                .expect("archived in HubSpot");
        }
        if let Some(to) = to {
            let batch = Batch::new(vec![AssociationInput {
                from: contact,
                to,
                types: vec![
                    AssociationSpec::hubspot(AssociationTypeId::ContactToCompany),
                    AssociationSpec::hubspot(AssociationTypeId::ContactToCompanyPrimary),
                ],
            }])
            .unwrap();
            let outcome = self
                .env
                .client
                .create_associations(ObjectType::Contacts, ObjectType::Companies, &batch)
                .await
                .expect("associated in HubSpot");
            assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        }
    }

    /// In HubSpot: each contact of `emails` gets a new company of its own as its primary
    /// (none of them known locally); returns their HubSpot ids.
    async fn new_primaries(&self, emails: &[String]) -> Vec<String> {
        let made = self.env.hubspot.insert_companies(
            (0..emails.len())
                .map(|i| {
                    BTreeMap::from([
                        ("name".to_owned(), format!("new {i}")),
                        ("domain".to_owned(), format!("new{i}.example")),
                    ])
                })
                .collect(),
        );
        let inputs: Vec<AssociationInput> = emails
            .iter()
            .zip(&made)
            .map(|(email, company)| AssociationInput {
                from: self.contact(email),
                to: company.clone(),
                types: vec![
                    AssociationSpec::hubspot(AssociationTypeId::ContactToCompany),
                    AssociationSpec::hubspot(AssociationTypeId::ContactToCompanyPrimary),
                ],
            })
            .collect();
        self.associate_in_hubspot(&inputs).await;
        made
    }

    /// The association write calls HubSpot received since recording started.
    fn association_writes(&self) -> Vec<String> {
        self.env
            .hubspot
            .take_recorded_requests()
            .into_iter()
            .filter(|r| {
                r.path.contains("associations")
                    && (r.path.ends_with("/batch/create") || r.path.ends_with("/batch/archive"))
            })
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// Writes `inputs` to HubSpot as an integration would, 100 pairs a call.
    async fn associate_in_hubspot(&self, inputs: &[AssociationInput]) {
        self.env.associate_in_hubspot(inputs).await;
    }

    /// Gives the HubSpot contact with `email` `n` more companies (made for it, not primary):
    /// more than one of the sandbox's read pages (500) holds once `n` reaches 500.
    async fn more_companies(&self, email: &str, n: usize) {
        let contact = self.contact(email);
        let made = self.env.hubspot.insert_companies(
            (0..n)
                .map(|i| {
                    BTreeMap::from([
                        ("name".to_owned(), format!("extra {i}")),
                        ("domain".to_owned(), format!("extra{i}.example")),
                    ])
                })
                .collect(),
        );
        let inputs: Vec<AssociationInput> = made
            .into_iter()
            .map(|to| AssociationInput {
                from: contact.clone(),
                to,
                types: vec![AssociationSpec::hubspot(
                    AssociationTypeId::ContactToCompany,
                )],
            })
            .collect();
        self.associate_in_hubspot(&inputs).await;
    }

    /// [`World::dry_then_real`], and the calls the dry run's plan counts, all of them, are the
    /// ones HubSpot answers the real run: returns the association calls among them (reads,
    /// creates, archives).
    async fn dry_then_real_calls(&self, action: JobAction) -> [u64; 3] {
        association_calls_of(&self.dry_then_real_made(action).await)
    }

    /// [`World::dry_then_real_calls`], returning every call of the real run by operation.
    async fn dry_then_real_made(&self, action: JobAction) -> BTreeMap<String, u64> {
        let spec = JobSpec::from(action)
            .with_dry_run(true)
            .expect("contacts have dry runs");
        let planned = self.env.run_spec(spec).await;
        let before = sync_calls(&self.env.hubspot);
        let real = self.env.run_spec(JobSpec::from(action)).await;
        let made = calls_between(&before, &sync_calls(&self.env.hubspot));
        assert_eq!(
            planned.counts, real.counts,
            "the dry run's counts are the real run's: {planned:#?}"
        );
        let plan = planned.plan.as_ref().expect("a dry run has a plan");
        assert_eq!(plan.calls, made, "the plan's calls are the real run's");
        made
    }

    /// What a dry run must leave as it was: the user's table, crm-sync's link rows with their
    /// companies, the local companies, and HubSpot's associations of every contact.
    async fn snapshot(&self) -> String {
        let local = texts(
            &self.env.store,
            "SELECT CAST(id AS TEXT), CAST(company_id AS TEXT), full_name FROM users UNION ALL \
             SELECT local_key, hs_object_id, company_hs_id FROM object_links UNION ALL \
             SELECT CAST(id AS TEXT), hs_object_id, name FROM companies ORDER BY 1, 2",
        )
        .await;
        let hubspot: BTreeMap<String, Vec<(String, bool)>> = self
            .env
            .hubspot
            .contacts()
            .into_iter()
            .map(|c| {
                let id = c.id.as_str().to_owned();
                let companies = self
                    .env
                    .hubspot
                    .companies_of_contact(&id)
                    .into_iter()
                    .map(|a| (a.id, a.primary))
                    .collect();
                (id, companies)
            })
            .collect();
        format!("{local:?}\n{hubspot:?}")
    }

    /// Runs `action` as a dry run, checks it changed nothing, then for real, and checks the
    /// counts agree; returns both counts.
    async fn dry_then_real(&self, action: JobAction) -> (Counts, Counts) {
        let before = self.snapshot().await;
        let spec = JobSpec::from(action)
            .with_dry_run(true)
            .expect("contacts have dry runs");
        let planned = self.env.run_spec(spec).await;
        assert_eq!(
            self.snapshot().await,
            before,
            "a dry run writes nothing: {planned:#?}"
        );
        let real = self.env.run_spec(JobSpec::from(action)).await;
        assert_eq!(
            planned.counts, real.counts,
            "the dry run's counts are the real run's: {planned:#?}"
        );
        assert_eq!(planned.errors, real.errors, "the same records fail");
        (planned.counts, real.counts)
    }
}

/// Push counts of rows and associations.
fn pushed(created: u64, skipped: u64, associations: (u64, u64, u64)) -> PushCounts {
    PushCounts {
        total: created + skipped,
        created,
        skipped,
        associations_created: associations.0,
        associations_removed: associations.1,
        associations_failed: associations.2,
        ..PushCounts::default()
    }
}

/// The association counts of a push.
fn associations(counts: &PushCounts) -> (u64, u64, u64) {
    (
        counts.associations_created,
        counts.associations_removed,
        counts.associations_failed,
    )
}

const ADA: &str = "1, 'ada@example.com', 'Ada', 1";
const BOB: &str = "2, 'bob@example.com', 'Bob', 2";
const CAROL: &str = "3, 'carol@example.com', 'Carol', NULL";

fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
    values.iter().map(|v| v.map(str::to_owned)).collect()
}

backend_tests! {
    async fn a_push_associates_each_row_with_its_company_and_a_rerun_writes_nothing(db: TestDb, profile: HubSpotProfile) {
        let world = World::new(db, profile, &[ADA, BOB, CAROL, "4, 'dan@example.com', 'Dan', 9"]).await;

        let (counts, job) = world.env.push().await;
        assert_eq!(counts, pushed(4, 0, (2, 0, 1)), "{job:#?}");
        assert_eq!(world.companies_of("ada@example.com"), vec![(world.company(1), true)]);
        assert_eq!(world.companies_of("bob@example.com"), vec![(world.company(2), true)]);
        assert_eq!(world.companies_of("carol@example.com"), vec![]);
        assert_eq!(world.companies_of("dan@example.com"), vec![]);
        assert_eq!(job.errors.len(), 1, "{job:#?}");
        let error = &job.errors[0];
        assert!(error.reason.starts_with("users.id=4: its company 9 is not linked"), "{error:?}");
        assert_eq!(error.company_id.map(|c| c.0), Some(9));

        world.env.hubspot.set_recording(true);
        let (again, job) = world.env.push().await;
        // The unlinked company fails again (as the built-in table's does); nothing is written.
        assert_eq!(again, pushed(0, 0, (0, 0, 1)), "{job:#?}");
        assert_eq!(world.association_writes(), Vec::<String>::new(), "no association write");
    }

    async fn a_changed_company_moves_the_primary_and_a_cleared_one_removes_it(db: TestDb, profile: HubSpotProfile) {
        let world = World::new(db, profile, &[ADA, BOB, CAROL]).await;
        let (first, _) = world.env.push().await;
        assert_eq!(associations(&first), (2, 0, 0));

        exec(&world.env.store, "UPDATE users SET company_id = 2 WHERE id = 1; \
                                UPDATE users SET company_id = NULL WHERE id = 2; \
                                UPDATE users SET company_id = 3 WHERE id = 3").await;
        let (counts, job) = world.env.push().await;
        // Ada moved (one created, one removed), Bob cleared (removed), Carol new (created).
        assert_eq!(counts, pushed(0, 0, (2, 2, 0)), "{job:#?}");
        assert_eq!(world.companies_of("ada@example.com"), vec![(world.company(2), true)], "the old pair is gone");
        assert_eq!(world.companies_of("bob@example.com"), vec![]);
        assert_eq!(world.companies_of("carol@example.com"), vec![(world.company(3), true)]);

        let (again, _) = world.env.push().await;
        assert_eq!(again, pushed(0, 0, (0, 0, 0)));
    }

    async fn a_change_in_hubspot_is_pulled_into_the_company_column(db: TestDb, profile: HubSpotProfile) {
        let world = World::new(db, profile, &[ADA, BOB, CAROL]).await;
        world.env.push().await;
        world.move_in_hubspot("ada@example.com", Some(world.company(1)), Some(world.company(3))).await;
        world.move_in_hubspot("bob@example.com", Some(world.company(2)), None).await;
        // A company HubSpot has and no local row does: adopted, as the built-in pull does.
        let fresh = world.env.hubspot.insert_companies(vec![
            [("name".to_owned(), "Umbrella".to_owned()), ("domain".to_owned(), "umbrella.example".to_owned())]
                .into_iter().collect(),
        ]);
        world.move_in_hubspot("carol@example.com", None, Some(fresh[0].clone())).await;

        let (counts, job) = world.env.pull(false).await;
        assert_eq!((counts.associations_created, counts.associations_removed, counts.associations_failed), (2, 1, 0), "{job:#?}");
        let adopted = texts(&world.env.store, &format!(
            "SELECT CAST(id AS TEXT) FROM companies WHERE hs_object_id = '{}'", fresh[0])).await;
        assert_eq!(adopted.len(), 1, "the new company is a local company once");
        let carol_company = adopted[0][0].as_deref();
        assert_eq!(world.columns().await, vec![
            row(&[Some("1"), Some("3")]),
            row(&[Some("2"), None]),
            row(&[Some("3"), carol_company]),
        ]);

        world.env.hubspot.set_recording(true);
        let (push, _) = world.env.push().await;
        assert_eq!(associations(&push), (0, 0, 0), "what pull took is agreed: nothing to push back");
        assert_eq!(world.association_writes(), Vec::<String>::new());
        let (again, _) = world.env.pull(false).await;
        assert_eq!((again.associations_created, again.associations_removed), (0, 0));
    }

    async fn an_incremental_pull_takes_the_company_of_each_changed_contact(db: TestDb, profile: HubSpotProfile) {
        let world = World::new(db, profile, &[ADA, BOB]).await;
        world.env.push().await;
        world.env.pull(false).await; // The mapping's bookmark.
        world.move_in_hubspot("ada@example.com", Some(world.company(1)), Some(world.company(3))).await;
        // HubSpot does not always move a contact's modification time on an association change:
        // Ada is also edited, so that the search finds her; Bob's move stays unseen.
        world.move_in_hubspot("bob@example.com", Some(world.company(2)), Some(world.company(1))).await;
        let ada = world.contact("ada@example.com");
        let name = [("firstname".to_owned(), "Ada L.".to_owned())].into_iter().collect();
        world.env.client.update_contact(&ada.as_str().into(), &name).await.expect("edited");

        let (counts, job) = world.env.pull(true).await;
        assert_eq!((counts.associations_created, counts.associations_removed, counts.associations_failed), (1, 0, 0), "{job:#?}");
        let columns = world.columns().await;
        assert_eq!(columns[0], row(&[Some("1"), Some("3")]), "ada's company pulled with her page");
        let (full, _) = world.env.pull(false).await;
        assert_eq!(full.associations_created, 1, "bob's move is read by the next full pull");
        assert_eq!(world.columns().await[1], row(&[Some("2"), Some("1")]));
    }

    async fn an_association_webhook_pulls_the_named_contacts_company(db: TestDb, profile: HubSpotProfile) {
        let world = World::new(db, profile, &[ADA, BOB]).await;
        world.env.push().await;
        world.move_in_hubspot("bob@example.com", Some(world.company(2)), None).await;
        let bob = world.contact("bob@example.com");
        world.env.store
            .record_pending(PendingObject::ContactAssociations, &[bob.as_str().into()])
            .await
            .expect("pending");
        let id = crm_sync::jobs::queue::enqueue_webhook_pull(&world.env.store)
            .await
            .expect("enqueued")
            .job
            .id;
        let job = world.env.run_to_end(id).await;
        let Counts::Pull(counts) = job.counts else { panic!("pull counts") };
        assert_eq!((counts.associations_created, counts.associations_removed, counts.associations_failed), (0, 1, 0), "{job:#?}");
        assert_eq!(world.columns().await, vec![row(&[Some("1"), Some("1")]), row(&[Some("2"), None])]);
        assert_eq!(world.env.store.count_pending_pulls().await.expect("count"), 0, "drained");
    }

    async fn when_both_sides_changed_the_local_company_wins_by_default(db: TestDb, profile: HubSpotProfile) {
        let world = World::new(db, profile, &[ADA]).await;
        world.env.push().await;
        exec(&world.env.store, "UPDATE users SET company_id = 2 WHERE id = 1").await;
        world.move_in_hubspot("ada@example.com", Some(world.company(1)), Some(world.company(3))).await;

        let (pulled, job) = world.env.pull(false).await;
        assert_eq!((pulled.associations_created, pulled.associations_removed), (0, 0), "{job:#?}");
        assert_eq!(world.columns().await, vec![row(&[Some("1"), Some("2")])], "the local company stays");

        let (pushed_counts, job) = world.env.push().await;
        // The pair agreed last (company 1) counts removed, as the built-in push counts it.
        assert_eq!(associations(&pushed_counts), (1, 1, 0), "{job:#?}");
        let mut companies = world.companies_of("ada@example.com");
        companies.sort();
        // HubSpot's own pair to company 3 (never synced) loses its primary flag to company 2.
        assert!(companies.contains(&(world.company(2), true)), "{companies:?}");
        assert_eq!(companies.iter().filter(|(_, primary)| *primary).count(), 1, "one primary: {companies:?}");
    }

    async fn when_both_sides_changed_hubspot_wins_when_it_owns_the_association(db: TestDb, profile: HubSpotProfile) {
        let mapping = MAPPING.replace(
            "company_column = \"company_id\"",
            "company_column = \"company_id\"\ncompany_owner = \"hubspot\"",
        );
        let world = World::with(db, profile, &[ADA], &mapping).await;
        world.env.push().await;
        exec(&world.env.store, "UPDATE users SET company_id = 2 WHERE id = 1").await;
        world.move_in_hubspot("ada@example.com", Some(world.company(1)), Some(world.company(3))).await;

        world.env.hubspot.set_recording(true);
        let (pushed_counts, job) = world.env.push().await;
        assert_eq!(associations(&pushed_counts), (0, 0, 0), "push leaves HubSpot's change: {job:#?}");
        assert_eq!(world.association_writes(), Vec::<String>::new());

        let (pulled, job) = world.env.pull(false).await;
        assert_eq!((pulled.associations_created, pulled.associations_removed), (1, 0), "{job:#?}");
        assert_eq!(world.columns().await, vec![row(&[Some("1"), Some("3")])], "HubSpot's company wins");
        assert_eq!(world.companies_of("ada@example.com"), vec![(world.company(3), true)]);
    }

    async fn a_page_whose_commit_was_lost_is_counted_again_and_not_written_again(db: TestDb, profile: HubSpotProfile) {
        let world = World::new(db, profile, &[ADA, BOB]).await;
        world.env.push().await;
        exec(&world.env.store, "UPDATE users SET company_id = 3 WHERE id = 2").await;
        world.env.push().await;
        // As if a kill lost the local commit of both pages after HubSpot applied them: the
        // state is what it was before the first push.
        exec(&world.env.store, "UPDATE object_links SET company_hs_id = NULL WHERE local_key = '1'; \
                                UPDATE object_links SET company_hs_id = (SELECT hs_object_id FROM companies WHERE id = 2) \
                                 WHERE local_key = '2'").await;

        world.env.hubspot.set_recording(true);
        let (counts, job) = world.env.push().await;
        // Ada's pair is already primary; Bob's old pair is already gone: both count, as in the
        // uninterrupted run, and nothing is written again.
        assert_eq!(counts, pushed(0, 0, (2, 1, 0)), "{job:#?}");
        assert_eq!(world.association_writes(), Vec::<String>::new());
        assert_eq!(world.companies_of("ada@example.com"), vec![(world.company(1), true)]);
        assert_eq!(world.companies_of("bob@example.com"), vec![(world.company(3), true)]);
    }

        async fn a_company_column_names_rows_of_a_companies_table_of_your_own(db: TestDb, profile: HubSpotProfile) {
        // Companies mapped to `orgs`: the column holds an org's key, resolved through its link.
        let mapping = format!("{}{MAPPING}", orgs_mapping(DOMAIN_BOTH_WAYS, ""));
        let setup = format!(
            "CREATE TABLE orgs (id BIGINT PRIMARY KEY, name TEXT, domain TEXT); \
             INSERT INTO orgs VALUES (10, 'Acme', 'acme.example'), (20, 'Globex', 'globex.example'); \
             {TABLE}; INSERT INTO users (id, email, full_name, company_id) VALUES \
             (1, 'ada@example.com', 'Ada', 10), (2, 'bob@example.com', 'Bob', 20)"
        );
        let env = MappedEnv::start(db, profile, &setup, &mapping).await;
        let mut companies_push = JobSpec::from(push_action());
        companies_push.object = SyncObject::Companies;
        let orgs = env.run_spec(companies_push).await;
        assert_eq!(orgs.errors, vec![], "{orgs:#?}");
        let linked = texts(
            &env.store,
            "SELECT hs_object_id FROM object_links WHERE object = 'companies' ORDER BY local_key",
        )
        .await;
        let (acme, globex) = (linked[0][0].clone().expect("org 10 linked"), linked[1][0].clone().expect("org 20 linked"));
        let world = World { env, companies: [acme.clone(), globex.clone(), String::new()] };

        let (counts, job) = world.env.push().await;
        assert_eq!(associations(&counts), (2, 0, 0), "{job:#?}");
        assert_eq!(world.companies_of("ada@example.com"), vec![(acme.clone(), true)]);
        assert_eq!(world.companies_of("bob@example.com"), vec![(globex.clone(), true)]);

        // In HubSpot, Ada moves to Globex, and Bob to a company no org is linked to.
        world.move_in_hubspot("ada@example.com", Some(acme), Some(globex)).await;
        let stranger = world.env.hubspot.insert_companies(vec![
            [("name".to_owned(), "Stranger".to_owned())].into_iter().collect(),
        ]);
        world.move_in_hubspot("bob@example.com", Some(world.company(2)), Some(stranger[0].clone())).await;
        let (pulled, job) = world.env.pull(false).await;
        assert_eq!((pulled.associations_created, pulled.associations_removed, pulled.associations_failed), (1, 0, 1), "{job:#?}");
        assert_eq!(world.columns().await, vec![row(&[Some("1"), Some("20")]), row(&[Some("2"), Some("20")])],
            "Ada follows; Bob's column is left as it is");
        let failure = job.errors.iter().find(|e| e.reason.contains(&stranger[0])).expect("Bob's company is listed");
        assert!(failure.reason.starts_with("users.id=2: its primary HubSpot company"), "{failure:?}");
        assert_eq!(texts(&world.env.store, "SELECT CAST(COUNT(*) AS TEXT) FROM orgs").await, vec![row(&[Some("2")])], "never inserted");
    }

        async fn a_pull_only_company_column_takes_hubspots_company_and_push_leaves_it(db: TestDb, profile: HubSpotProfile) {
        let mapping = MAPPING.replace(
            "company_column = \"company_id\"",
            "company_column = \"company_id\"\ncompany_direction = \"pull\"",
        );
        let world = World::with(db, profile, &[ADA, BOB], &mapping).await;
        let (pushed_counts, job) = world.env.push().await;
        assert_eq!(pushed_counts, pushed(2, 0, (0, 0, 0)), "no association is pushed: {job:#?}");
        assert_eq!(world.companies_of("ada@example.com"), vec![]);
        world.move_in_hubspot("ada@example.com", None, Some(world.company(3))).await;

        let (pulled, job) = world.env.pull(false).await;
        // Ada takes HubSpot's company although her column held another; Bob, with none in
        // HubSpot and none agreed, keeps his.
        assert_eq!((pulled.associations_created, pulled.associations_removed), (1, 0), "{job:#?}");
        assert_eq!(world.columns().await, vec![row(&[Some("1"), Some("3")]), row(&[Some("2"), Some("2")])]);
    }

        async fn a_dry_run_counts_what_the_real_run_then_does_and_writes_nothing(db: TestDb, profile: HubSpotProfile) {
        let world = World::new(db, profile, &[ADA, BOB, CAROL]).await;
        world.env.push().await;
        exec(&world.env.store, "UPDATE users SET company_id = 3 WHERE id = 1; \
                                UPDATE users SET company_id = NULL WHERE id = 2; \
                                UPDATE users SET company_id = 8 WHERE id = 3").await;
        let (counts, _) = world.dry_then_real(push_action()).await;
        let Counts::Push(counts) = counts else { panic!("push counts") };
        assert_eq!(associations(&counts), (1, 2, 1));

        world.move_in_hubspot("ada@example.com", Some(world.company(3)), Some(world.company(2))).await;
        world.move_in_hubspot("bob@example.com", None, Some(world.company(1))).await;
        let (counts, _) = world.dry_then_real(pull_action(false)).await;
        let Counts::Pull(counts) = counts else { panic!("pull counts") };
        assert_eq!((counts.associations_created, counts.associations_removed), (2, 0));
        assert_eq!(world.columns().await, vec![
            row(&[Some("1"), Some("2")]),
            row(&[Some("2"), Some("1")]),
            row(&[Some("3"), Some("8")]),
        ]);
    }

    async fn a_push_stopped_between_association_pages_resumes_and_counts_each_row_once(db: TestDb, profile: HubSpotProfile) {
        let rows: Vec<String> = (1..=250)
            .map(|i| format!("{i}, 'user{i}@example.com', 'User {i}', {}", 1 + i % 3))
            .collect();
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        let world = World::new(db, profile, &rows).await;
        // Three row pages, then the association pages: the fifth check stops the job after the
        // first association page committed.
        let job = world.env.run_stopped(push_action(), 5).await;
        let Counts::Push(counts) = job.counts else { panic!("push counts") };
        assert_eq!(counts, pushed(250, 0, (250, 0, 0)), "{job:#?}");
        for i in [1, 100, 101, 250] {
            let email = format!("user{i}@example.com");
            assert_eq!(world.companies_of(&email), vec![(world.company(1 + i % 3), true)], "{email}");
        }
        let (again, _) = world.env.push().await;
        assert_eq!(again, pushed(0, 0, (0, 0, 0)));
    }

    async fn a_dry_run_of_a_first_push_counts_the_associations_of_the_rows_it_would_create(db: TestDb, profile: HubSpotProfile) {
        let world = World::new(db, profile, &[ADA, BOB, CAROL, "4, 'dan@example.com', 'Dan', 4"]).await;
        // Dan's company 4 is not in HubSpot yet: the push creates it before the association.
        exec(&world.env.store, "INSERT INTO companies (name, domain) VALUES ('Hooli', 'hooli.example')").await;
        let (counts, _) = world.dry_then_real(push_action()).await;
        let Counts::Push(counts) = counts else { panic!("push counts") };
        assert_eq!(counts, pushed(4, 0, (3, 0, 0)));
        assert_eq!(world.companies_of("ada@example.com"), vec![(world.company(1), true)]);
    }

    async fn a_pull_sets_the_company_of_a_row_it_links_by_email_at_once_and_its_dry_run_counts_it(db: TestDb, profile: HubSpotProfile) {
        let world = World::new(db, profile, &[ADA, "5, 'eve@example.com', 'Eve', NULL", "6, 'fay@example.com', 'Fay', NULL"]).await;
        world.env.push().await;
        // Eve and Fay are not linked (deleted from HubSpot's view): new contacts with their
        // emails and a primary company appear in HubSpot.
        exec(&world.env.store, "DELETE FROM object_links WHERE local_key IN ('5', '6')").await;
        for email in ["eve@example.com", "fay@example.com"] {
            let old = world.contact(email);
            world.env.client.archive_contact(&HsObjectId::from(old.as_str())).await.expect("archived");
            world.env.hubspot.insert_contacts(vec![BTreeMap::from([("email".to_owned(), email.to_owned())])]);
        }
        world.move_in_hubspot("eve@example.com", None, Some(world.company(3))).await;
        let (counts, _) = world.dry_then_real(pull_action(false)).await;
        let Counts::Pull(counts) = counts else { panic!("pull counts") };
        assert_eq!((counts.linked, counts.associations_created), (2, 1), "{counts:?}");
        let columns = world.columns().await;
        assert_eq!(columns[1], row(&[Some("5"), Some("3")]), "Eve linked and her company set by one pull");
        // An incremental pull does the same for a row one of its pages links.
        exec(&world.env.store, "DELETE FROM object_links WHERE local_key = '6'").await;
        world.move_in_hubspot("fay@example.com", None, Some(world.company(2))).await;
        // An association does not move the contact's modification time: a change does.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let fay = HsObjectId::from(world.contact("fay@example.com").as_str());
        let changes = BTreeMap::from([("firstname".to_owned(), "Fay".to_owned())]);
        world.env.client.update_contact(&fay, &changes).await.expect("changed");
        let (counts, _) = world.dry_then_real(pull_action(true)).await;
        let Counts::Pull(counts) = counts else { panic!("pull counts") };
        assert_eq!(counts.associations_created, 1, "{counts:?}");
        assert_eq!(world.columns().await[2], row(&[Some("6"), Some("2")]));
    }

    async fn a_push_links_the_local_companies_its_rows_name_before_their_associations(db: TestDb, profile: HubSpotProfile) {
        let world = World::new(db, profile, &[ADA, "2, 'bob@example.com', 'Bob', 4"]).await;
        // Company 4 was never pushed: the contacts push creates it first, as the built-in
        // contacts push does for the companies its contacts name.
        exec(&world.env.store, "INSERT INTO companies (name, domain) VALUES ('Hooli', 'hooli.example')").await;
        let (counts, job) = world.env.push().await;
        assert_eq!(counts, pushed(2, 0, (2, 0, 0)), "{job:#?}");
        let hooli = texts(&world.env.store, "SELECT hs_object_id FROM companies WHERE id = 4").await;
        let hooli = hooli[0][0].clone().expect("company 4 is linked");
        assert_eq!(world.companies_of("bob@example.com"), vec![(hooli.clone(), true)]);
        let in_hubspot = world.env.hubspot.company(&hooli).expect("created in HubSpot");
        assert_eq!(in_hubspot.properties.get("name").map(String::as_str), Some("Hooli"));
        assert_eq!(world.env.hubspot.companies().len(), 4, "only Hooli was created");
        let (again, _) = world.env.push().await;
        assert_eq!(again, pushed(0, 0, (0, 0, 0)));

        // A dry run counts the same for a company it would create: Ada moves to company 5.
        exec(&world.env.store, "INSERT INTO companies (name, domain) VALUES ('Initrode', 'initrode.example'); \
                                UPDATE users SET company_id = 5 WHERE id = 1").await;
        let (counts, _) = world.dry_then_real(push_action()).await;
        let Counts::Push(counts) = counts else { panic!("push counts") };
        assert_eq!(associations(&counts), (1, 1, 0));
        assert_eq!(world.env.hubspot.companies().len(), 5);
    }

    async fn a_push_links_the_rows_of_a_companies_table_of_your_own_before_their_associations(db: TestDb, profile: HubSpotProfile) {
        let mapping = format!("{}{MAPPING}", orgs_mapping(DOMAIN_BOTH_WAYS, ""));
        let setup = format!(
            "CREATE TABLE orgs (id BIGINT PRIMARY KEY, name TEXT, domain TEXT); \
             INSERT INTO orgs VALUES (10, 'Acme', 'acme.example'), (20, 'Globex', 'globex.example'); \
             {TABLE}; INSERT INTO users (id, email, full_name, company_id) VALUES \
             (1, 'ada@example.com', 'Ada', 10), (2, 'bob@example.com', 'Bob', 20)"
        );
        let env = MappedEnv::start(db, profile, &setup, &mapping).await;
        // Globex is in HubSpot already, made by someone else: linked by its domain, not made
        // twice; Acme is created. The orgs were never pushed on their own.
        let globex = env.hubspot.insert_companies(vec![
            [("name".to_owned(), "Globex Corp".to_owned()), ("domain".to_owned(), "globex.example".to_owned())]
                .into_iter()
                .collect(),
        ]);
        let world = World { env, companies: [String::new(), globex[0].clone(), String::new()] };
        let (counts, job) = world.env.push().await;
        assert_eq!(counts, pushed(2, 0, (2, 0, 0)), "{job:#?}");
        let linked = texts(
            &world.env.store,
            "SELECT local_key, hs_object_id FROM object_links WHERE object = 'companies' ORDER BY local_key",
        )
        .await;
        let acme = linked[0][1].clone().expect("org 10 linked");
        assert_eq!(linked[1][1].as_deref(), Some(globex[0].as_str()), "org 20 linked by its domain");
        assert_eq!(world.companies_of("ada@example.com"), vec![(acme, true)]);
        assert_eq!(world.companies_of("bob@example.com"), vec![(globex[0].clone(), true)]);
        assert_eq!(world.env.hubspot.companies().len(), 2, "only Acme was created");
        // The orgs the contacts push linked are not pushed again by the companies push.
        let mut companies_push = JobSpec::from(push_action());
        companies_push.object = SyncObject::Companies;
        let orgs = world.env.run_spec(companies_push).await;
        let Counts::Push(orgs) = orgs.counts else { panic!("push counts") };
        assert_eq!(orgs.total, 0, "{orgs:?}");

        // A dry run counts the same for an org it would create: Ada moves to org 30.
        exec(&world.env.store, "INSERT INTO orgs VALUES (30, 'Initech', 'initech.example'); \
                                UPDATE users SET company_id = 30 WHERE id = 1").await;
        let (counts, _) = world.dry_then_real(push_action()).await;
        let Counts::Push(counts) = counts else { panic!("push counts") };
        assert_eq!(associations(&counts), (1, 1, 0));
        assert_eq!(world.env.hubspot.companies().len(), 3);
    }

    async fn a_dry_push_plans_the_association_calls_of_the_real_runs_pages(db: TestDb, profile: HubSpotProfile) {
        let world = World::new(db, profile, &[ADA, BOB, CAROL]).await;
        world.env.push().await;
        // Ada (linked) moves to company 3, and Dan, a new row with company 2, is to be created:
        // the real run links Dan first, then writes both associations in one page. Ada also
        // has more companies in HubSpot than a read page holds: her read goes on once.
        exec(&world.env.store, "UPDATE users SET company_id = 3 WHERE id = 1; \
                                INSERT INTO users (id, email, full_name, company_id) \
                                VALUES (4, 'dan@example.com', 'Dan', 2)").await;
        world.more_companies("ada@example.com", 500).await;
        let made = world.dry_then_real_calls(push_action()).await;
        assert_eq!(made, [2, 1, 1], "one page: Ada's read goes on, one create, one archive");
        assert_eq!(world.companies_of("dan@example.com"), vec![(world.company(2), true)]);
    }

    async fn a_dry_push_plans_without_rows_hubspot_deleted_and_reads_a_merged_one_at_its_survivor(db: TestDb, profile: HubSpotProfile) {
        let world = World::new(db, profile, &[ADA, BOB, CAROL, "4, 'dan@example.com', 'Dan', 1"]).await;
        world.env.push().await;
        // Ada's contact is deleted in HubSpot and Bob's merged into another: the real push
        // marks Ada's row deleted and moves Bob's link to the survivor before its association
        // phase, which then leaves Ada out and reads Bob at the survivor. Both rows changed
        // (so the row phase meets them) and name company 3; Carol's row moves to company 2.
        let ada = world.contact("ada@example.com");
        world.env.client.archive_contact(&HsObjectId::from(ada.as_str())).await.expect("deleted in HubSpot");
        let bob = world.contact("bob@example.com");
        let work = world.env.hubspot.insert_contacts(vec![
            [("email".to_owned(), "bob.work@example.com".to_owned())].into_iter().collect(),
        ]);
        let survivor = world
            .env
            .client
            .merge_contacts(&HsObjectId::from(work[0].as_str()), &HsObjectId::from(bob.as_str()))
            .await
            .expect("merged")
            .id;
        exec(&world.env.store, "UPDATE users SET full_name = full_name || ' B.', company_id = 3 WHERE id IN (1, 2); \
                                UPDATE users SET company_id = 2 WHERE id = 3").await;
        let made = world.dry_then_real_calls(push_action()).await;
        assert_eq!(made, [1, 1, 1], "one page: one read, one create, one archive");
        assert_eq!(world.env.hubspot.companies_of_contact(&survivor.0).into_iter().map(|a| (a.id, a.primary)).collect::<Vec<_>>(), vec![(world.company(3), true)]);
        assert_eq!(world.companies_of("carol@example.com"), vec![(world.company(2), true)]);
    }

    async fn a_dry_pull_plans_the_company_reads_the_real_pull_makes_to_adopt_companies(db: TestDb, profile: HubSpotProfile) {
        let rows: Vec<String> = (1..=250)
            .map(|i| format!("{i}, 'user{i}@example.com', 'User {i}', NULL"))
            .collect();
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        let world = World::new(db, profile, &rows).await;
        world.env.push().await;
        // Each row's contact gets a primary company no local company holds in HubSpot: the real
        // full pull adopts the 250 after its three pages, reading them in three calls of 100
        // (a read with each page would make them too, but planned none).
        let emails: Vec<String> = (1..=250).map(|i| format!("user{i}@example.com")).collect();
        world.new_primaries(&emails).await;
        let made = world.dry_then_real_made(pull_action(false)).await;
        assert_eq!(made.get("batch_read"), Some(&3), "{made:?}");
        assert_eq!(world.columns().await[0][1].as_deref().map(|c| c.parse::<i64>().is_ok()), Some(true));

        // An incremental pull reads them with its page: a row edited in HubSpot (so the search
        // finds it) with a new primary company.
        world.new_primaries(&emails[..1]).await;
        let ada = world.contact("user1@example.com");
        let name = [("firstname".to_owned(), "User 1 L.".to_owned())].into_iter().collect();
        world.env.client.update_contact(&ada.as_str().into(), &name).await.expect("edited");
        let made = world.dry_then_real_made(pull_action(true)).await;
        assert_eq!(made.get("batch_read"), Some(&1), "{made:?}");

        // Every row's contact takes one new company as its primary and is edited: the search
        // finds them in two pages; the real run adopts the company on the first and holds it
        // on the second; the dry run, whose first page is rolled back, plans one read.
        let shared = world.env.hubspot.insert_companies(vec![BTreeMap::from([
            ("name".to_owned(), "Shared".to_owned()),
            ("domain".to_owned(), "shared.example".to_owned()),
        ])]);
        let inputs: Vec<AssociationInput> = emails
            .iter()
            .map(|email| AssociationInput {
                from: world.contact(email),
                to: shared[0].clone(),
                types: vec![
                    AssociationSpec::hubspot(AssociationTypeId::ContactToCompany),
                    AssociationSpec::hubspot(AssociationTypeId::ContactToCompanyPrimary),
                ],
            })
            .collect();
        world.associate_in_hubspot(&inputs).await;
        for email in &emails {
            let name = [("firstname".to_owned(), format!("{email} again"))].into_iter().collect();
            world.env.client.update_contact(&world.contact(email).as_str().into(), &name).await.expect("edited");
        }
        let made = world.dry_then_real_made(pull_action(true)).await;
        assert_eq!(made.get("batch_read"), Some(&1), "{made:?}");
    }

    async fn a_dry_full_pull_plans_the_association_reads_of_the_real_pulls_phase(db: TestDb, profile: HubSpotProfile) {
        let rows: Vec<String> = (1..=250)
            .map(|i| format!("{i}, 'user{i}@example.com', 'User {i}', {}", 1 + i % 3))
            .collect();
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        let world = World::new(db, profile, &rows).await;
        world.env.push().await;
        // The real pull reads the 250 rows' companies after its three pages, in one call and
        // one more for the row whose companies take two of HubSpot's pages.
        world.more_companies("user1@example.com", 500).await;
        let made = world.dry_then_real_calls(pull_action(false)).await;
        assert_eq!(made, [2, 0, 0]);
    }
}

/// The configuration refusal of `toml` (at load, or against the catalog, or as a mapping
/// crm-sync cannot run), as one line.
async fn refusal(db: &TestDb, store: &crm_sync::store::Store, toml: &str) -> String {
    let settings = match load_settings(db, toml) {
        Ok(settings) => settings,
        Err(e) => return e.to_string(),
    };
    let checked = match check_mappings(store, &settings.sync.objects).await {
        Ok(checked) => checked,
        Err(e) => return e.to_string(),
    };
    match check_runnable(store, &checked).await {
        Ok(()) => "accepted".to_owned(),
        Err(e) => e.to_string(),
    }
}

backend_tests! {
    async fn a_companies_table_of_your_own_resolves_through_its_link_rows(db: TestDb) {
        // The resolver of a companies table mapped to the user's own reads these statements;
        // no configuration maps companies yet, so they are checked on the store.
        let store = db.store().await;
        exec(&store, "INSERT INTO object_links (object, local_key, hs_object_id) VALUES \
                      ('companies', 'acme', '111'), ('contacts', '1', '900'); \
                      INSERT INTO object_links (object, local_key, hubspot_deleted_at) VALUES \
                      ('companies', 'gone', '2026-01-01T00:00:00Z')").await;
        let mut states = store
            .linked_company_keys("companies", &["acme".to_owned(), "gone".to_owned(), "nope".to_owned()])
            .await
            .expect("read");
        states.sort_by(|a, b| a.key.cmp(&b.key));
        let states: Vec<(String, Option<String>, bool)> =
            states.into_iter().map(|s| (s.key, s.hs_object_id.map(|i| i.0), s.deleted)).collect();
        assert_eq!(states, vec![
            ("acme".to_owned(), Some("111".to_owned()), false),
            ("gone".to_owned(), None, true),
        ]);

        let mut tx = Tx::begin(&store).await.expect("begin");
        let holders = tx
            .company_link_holders("companies", &[CompanyId::from("111"), CompanyId::from("333")])
            .await
            .expect("holders");
        assert_eq!(holders, vec![("acme".to_owned(), CompanyId::from("111"))]);
        tx.save_link_companies("contacts", &[("1".to_owned(), Some(CompanyId::from("111")))])
            .await
            .expect("saved");
        tx.commit().await.expect("commit");
        let agreed = texts(&store, "SELECT object, local_key, company_hs_id FROM object_links ORDER BY object, local_key").await;
        assert_eq!(agreed, vec![
            row(&[Some("companies"), Some("acme"), None]),
            row(&[Some("companies"), Some("gone"), None]),
            row(&[Some("contacts"), Some("1"), Some("111")]),
        ], "only the named link records its company");
    }

    async fn start_up_refuses_a_bad_company_column_naming_its_key(db: TestDb) {
        let store = db.store().await;
        exec(&store, &format!("{TABLE}; CREATE VIEW users_v AS SELECT id, email, full_name, company_id FROM users")).await;
        let with = |extra: &str| MAPPING.replace("company_column = \"company_id\"", extra);
        for (toml, key, words) in [
            (with("company_column = \"employer\""), "sync.objects[0].company_column", "does not exist"),
            (with("company_column = \"full_name\""), "sync.objects[0].company_column", "also mapped"),
            (with("company_column = \"id\""), "sync.objects[0].company_column", "key"),
            (with("company_column = \"signup\""), "sync.objects[0].company_column", "whole-number or text"),
            (with("company_direction = \"push\""), "sync.objects[0].company_direction", "company_column"),
            (with("company_column = \"company_id\"\ncompany_direction = \"sideways\""), "sync.objects[0].company_direction", "sideways"),
            (with("company_column = \"company_id\"\ncompany_direction = \"push\"\ncompany_owner = \"local\""), "sync.objects[0].company_owner", "owner"),
            (MAPPING.replace("table = \"users\"", "table = \"users_v\""), "sync.objects[0].company_direction", "view"),
            (
                "[[sync.objects]]\nobject = \"contacts\"\ntable = \"contacts\"\nkey_column = \"id\"\nhubspot_id_column = \"hs_object_id\"\ncompany_column = \"company_id\"\n[sync.objects.fields]\nemail = { property = \"email\", direction = \"both\", owner = \"local\" }\nfirst_name = { property = \"firstname\", direction = \"both\", owner = \"local\" }\nlast_name = { property = \"lastname\", direction = \"both\", owner = \"local\" }\n".to_owned(),
                "sync.objects[0].company_column",
                "built-in",
            ),
        ] {
            let error = refusal(&db, &store, &toml).await;
            assert!(error.contains(key) && error.contains(words), "{toml}\n=> {error}");
            assert_eq!(error.lines().count(), 1, "one line: {error}");
        }
        // A push-only association may read a view (whose fields are push-only too).
        let view = MAPPING
            .replace("table = \"users\"", "table = \"users_v\"")
            .replace("direction = \"both\", owner = \"local\"", "direction = \"push\"")
            .replace("company_column = \"company_id\"", "company_column = \"company_id\"\ncompany_direction = \"push\"");
        assert_eq!(refusal(&db, &store, &view).await, "accepted");
        assert_eq!(refusal(&db, &store, MAPPING).await, "accepted");
    }
}
