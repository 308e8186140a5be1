//! A dry run's plan names every HubSpot call the real run that follows it makes, by operation
//! and number: the companies a contacts push links first (found by key, searched by domain,
//! created), the properties and the property group it creates, the contacts and their
//! associations. Against the sandbox, on both backends and under both sandbox profiles, with
//! more companies than one page holds.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::mapped::{MappedEnv, orgs_mapping, pull_action, push_action};
use common::watch::{calls_between, sync_calls};
use crm_sync::hubspot::{AssociationInput, AssociationSpec, AssociationTypeId};
use crm_sync::ids::{CompanyId, ContactId, HsObjectId, LocalCompanyId};
use crm_sync::jobs::model::{Counts, Job, JobAction, JobSpec, PushMode, SyncObject};
use crm_sync::store::Backend;
use crm_sync::sync::companies::COMPANY_KEY;
use std::collections::BTreeMap;

/// Runs a dry push and then the real one with nothing changed in between; checks that their
/// counts agree and that the plan's calls are exactly those HubSpot answered the real run.
async fn dry_then_real_push(env: &MappedEnv) -> Counts {
    dry_then_real(env, JobSpec::from(push_action())).await
}

/// [`dry_then_real_push`] for any job.
async fn dry_then_real(env: &MappedEnv, spec: JobSpec) -> Counts {
    dry_and_real(env, spec, None).await.compared().real.counts
}

/// [`dry_then_real`], the dry run stopped at its `checks`-th stop check (after a committed
/// page, as a shutdown does) and resumed to its end.
async fn dry_stopped_then_real(env: &MappedEnv, spec: JobSpec, checks: usize) -> Counts {
    dry_and_real(env, spec, Some(checks))
        .await
        .compared()
        .real
        .counts
}

/// A dry run and the real run that followed it, with the calls HubSpot answered the latter.
struct DryAndReal {
    planned: Job,
    real: Job,
    made: BTreeMap<String, u64>,
}

impl DryAndReal {
    /// Checks that the counts agree.
    fn counts_agree(self) -> Self {
        assert_eq!(
            self.planned.counts, self.real.counts,
            "the dry run's counts are the real run's"
        );
        self
    }

    /// Checks that the counts agree and that the plan's calls are exactly those HubSpot
    /// answered the real run.
    fn compared(self) -> Self {
        let this = self.counts_agree();
        let plan = this.planned.plan.as_ref().expect("a dry run has a plan");
        assert_eq!(plan.calls, this.made, "the plan names the real run's calls");
        this
    }

    /// Checks that the dry run foresaw the real run's failures, row and reason.
    fn failures_agree(self) -> Self {
        assert_eq!(
            failures(&self.planned),
            failures(&self.real),
            "the dry run foresees the real failures"
        );
        self
    }
}

/// Runs `spec` as a dry run (stopped at its `stop`-th stop check and resumed, when given), then
/// for real with nothing changed in between.
async fn dry_and_real(env: &MappedEnv, spec: JobSpec, stop: Option<usize>) -> DryAndReal {
    let dry = spec.with_dry_run(true).expect("the object has dry runs");
    let planned = match stop {
        Some(checks) => env.run_spec_stopped(dry, checks).await,
        None => env.run_spec(dry).await,
    };
    let before = sync_calls(&env.hubspot);
    let real = env.run_spec(spec).await;
    let made = calls_between(&before, &sync_calls(&env.hubspot));
    DryAndReal {
        planned,
        real,
        made,
    }
}

/// `n` rows numbered from 1, as `WITH RECURSIVE` (both backends).
fn numbers(n: u32) -> String {
    format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})")
}

/// 250 organisations of the user's own, none in HubSpot yet (three pages of companies), and
/// 600 users naming them, mapped with a property HubSpot does not have yet.
fn own_tables() -> String {
    format!(
        "CREATE TABLE orgs (id BIGINT PRIMARY KEY, name TEXT NOT NULL, domain TEXT); \
         CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT UNIQUE, plan TEXT, org_id BIGINT); \
         {} INSERT INTO orgs SELECT i, 'Org ' || i, 'org' || i || '.example.com' FROM n; \
         {} INSERT INTO users SELECT i, 'user' || i || '@example.com', 'pro', 1 + i % 250 FROM n",
        numbers(250),
        numbers(600)
    )
}

/// [`own_tables`] mapped: the orgs, and the users with their org as their company.
fn own_mapping() -> String {
    let domain = r#"{ property = "domain", direction = "push" }"#;
    format!("{}{OWN_USERS_MAPPING}", orgs_mapping(domain, ""))
}

const OWN_USERS_MAPPING: &str = r#"
[[sync.objects]]
object = "contacts"
table = "users"
key_column = "id"
create_properties = true
company_column = "org_id"

[sync.objects.fields]
email = { property = "email", direction = "both", owner = "local" }
plan = { property = "plan_tier", direction = "push" }
"#;

/// A table of the user's own, 600 users, whose `org_id` names crm-sync's own 250 companies,
/// none in HubSpot yet.
fn users_of_crm_syncs_companies() -> String {
    format!(
        "CREATE TABLE users (id BIGINT PRIMARY KEY, email TEXT UNIQUE, org_id BIGINT); \
         {} INSERT INTO companies (name, domain) SELECT 'Org ' || i, 'org' || i || '.example.com' FROM n; \
         {} INSERT INTO users SELECT i, 'user' || i || '@example.com', 1 + i % 250 FROM n",
        numbers(250),
        numbers(600)
    )
}

/// A contacts mapping of `table` keyed by `key_column`: its email, and its company in
/// `org_id`.
fn email_and_company_mapping(table: &str, key_column: &str) -> String {
    format!(
        r#"
[[sync.objects]]
object = "contacts"
table = "{table}"
key_column = "{key_column}"
company_column = "org_id"

[sync.objects.fields]
email = {{ property = "email", direction = "both", owner = "local" }}
"#
    )
}

/// A table of the user's own keyed by text its key column orders by a collation that is not
/// byte order (PostgreSQL: ICU's root collation; SQLite: `NOCASE`): `A`, `b10001` … `b11000`,
/// `C` (byte order puts `A` and `C` before every `b`).
fn members(backend: Backend) -> String {
    let collation = match backend {
        Backend::Postgres => r#"COLLATE "und-x-icu" PRIMARY KEY"#,
        Backend::Sqlite => "PRIMARY KEY COLLATE NOCASE",
    };
    format!(
        "CREATE TABLE members (handle TEXT {collation}, email TEXT UNIQUE, org_id BIGINT); \
         INSERT INTO members VALUES ('A', 'big-a@example.com', NULL), ('C', 'big-c@example.com', NULL); \
         {} INSERT INTO members SELECT 'b' || (10000 + i), 'member' || i || '@example.com', NULL FROM n",
        numbers(1_000)
    )
}

/// Gives the HubSpot contact with `email` `n` companies made for it (not primary): more than
/// one of HubSpot's association read pages (500) holds once `n` passes 500.
async fn give_companies(env: &MappedEnv, email: &str, n: usize) {
    let contact = env.hubspot_contact(email);
    let made = env.hubspot.insert_companies(
        (0..n)
            .map(|i| {
                BTreeMap::from([
                    ("name".to_owned(), format!("{email} {i}")),
                    (
                        "domain".to_owned(),
                        format!("c{i}.{email}").replace('@', "-"),
                    ),
                ])
            })
            .collect(),
    );
    let inputs: Vec<AssociationInput> = made
        .into_iter()
        .map(|to| AssociationInput {
            from: contact.id.clone(),
            to,
            types: vec![AssociationSpec::hubspot(
                AssociationTypeId::ContactToCompany,
            )],
        })
        .collect();
    env.associate_in_hubspot(&inputs).await;
}

/// crm-sync's own tables: 250 companies, none in HubSpot yet, and 600 contacts naming them.
fn built_in_tables() -> String {
    built_in_tables_with(600)
}

/// [`built_in_tables`] with `contacts` contacts (user `i` works at Org `1 + i % 250`).
fn built_in_tables_with(contacts: u32) -> String {
    format!(
        "{} INSERT INTO companies (name, domain) SELECT 'Org ' || i, 'org' || i || '.example.com' FROM n; \
         {} INSERT INTO contacts (email, first_name, company_id) \
            SELECT 'user' || i || '@example.com', 'User', 1 + i % 250 FROM n",
        numbers(250),
        numbers(contacts)
    )
}

/// People add 150 contacts in HubSpot, none with a company.
fn people_add_contacts_in_hubspot(env: &MappedEnv) {
    let people: Vec<BTreeMap<String, String>> = (1..=150)
        .map(|i| BTreeMap::from([("email".to_owned(), format!("person{i}@example.com"))]))
        .collect();
    env.hubspot.insert_contacts(people);
}

/// Org 1's HubSpot company is deleted in HubSpot and made again there carrying Org 1's
/// external key (as an import of an old export would), and becomes the first user's primary
/// company: a full pull adopts it, after checking that the company Org 1 is linked to is gone.
async fn org_one_is_made_again_in_hubspot_as_the_first_users_company(env: &MappedEnv) -> CompanyId {
    let org_one = env
        .hubspot
        .companies()
        .into_iter()
        .find(|c| c.properties.get("domain").map(String::as_str) == Some("org1.example.com"))
        .expect("Org 1 was pushed");
    env.client
        .archive_company(&CompanyId(org_one.id.clone()))
        .await
        .expect("deleted in HubSpot");
    let again = env.hubspot.insert_companies(vec![BTreeMap::from([
        ("name".to_owned(), "Org 1".to_owned()),
        ("domain".to_owned(), "org1.example.com".to_owned()),
        (
            COMPANY_KEY.to_owned(),
            org_one.properties[COMPANY_KEY].clone(),
        ),
    ])]);
    let user = env.hubspot_contact("user1@example.com");
    let input = AssociationInput {
        from: user.id.clone(),
        to: again[0].clone(),
        types: vec![AssociationSpec::hubspot(
            AssociationTypeId::ContactToCompanyPrimary,
        )],
    };
    env.associate_in_hubspot(&[input]).await;
    CompanyId(again[0].clone())
}

/// Pushes, makes Org 1 again in HubSpot as the first user's company, then runs a dry full pull
/// and the real one ([`dry_then_real`]): the real pull adopts the company made again.
async fn pull_adopting_org_one_made_again(env: &MappedEnv) {
    env.push().await;
    let again = org_one_is_made_again_in_hubspot_as_the_first_users_company(env).await;
    let Counts::Pull(counts) = dry_then_real(env, JobSpec::from(pull_action(false))).await else {
        panic!("pull counts")
    };
    assert_eq!((counts.total, counts.associations_created), (600, 1));
    let org_one = env
        .store
        .get_company(LocalCompanyId(1))
        .await
        .unwrap()
        .expect("Org 1");
    assert_eq!(
        org_one.hs_object_id,
        Some(again),
        "Org 1 is linked to the company made again"
    );
}

/// [`pull_adopting_org_one_made_again`], the dry run stopped after its first page (which
/// reads the first user and the company to adopt) and resumed.
async fn stopped_pull_adopting_org_one_made_again(env: &MappedEnv) {
    env.push().await;
    org_one_is_made_again_in_hubspot_as_the_first_users_company(env).await;
    let spec = JobSpec::from(pull_action(false));
    let Counts::Pull(counts) = dry_stopped_then_real(env, spec, 3).await else {
        panic!("pull counts")
    };
    assert_eq!((counts.total, counts.associations_created), (600, 1));
}

/// HubSpot has one contact for the first user whose additional emails are those of the users
/// `aliases` (people merged their contacts into it): HubSpot's look-up by email finds that
/// contact for each of them too, and the real push's database refuses every link to it after
/// the first.
async fn the_first_user_has_aliases_in_hubspot(env: &MappedEnv, aliases: &[u32]) {
    let emails: Vec<BTreeMap<String, String>> = std::iter::once(1)
        .chain(aliases.iter().copied())
        .map(|i| BTreeMap::from([("email".to_owned(), format!("user{i}@example.com"))]))
        .collect();
    let made = env.hubspot.insert_contacts(emails);
    for merged in &made[1..] {
        env.client
            .merge_contacts(
                &HsObjectId::from(made[0].as_str()),
                &HsObjectId::from(merged.as_str()),
            )
            .await
            .expect("merged");
    }
}

/// A dry push in `mode` and the real one that follows, 300 contacts in three pages, the first
/// user's HubSpot contact also named by the 2nd (same page) and 250th (third page) user's
/// emails: one link, two failures naming the row that holds it; the dry run stopped after its
/// first page and resumed when `stop_after_first_page`. An upsert's plan names the real run's
/// calls ([`dry_then_real`]); a link push's real run first creates, and HubSpot refuses the
/// batch that holds an existing contact, which costs calls no dry run can know without writing
/// (docs/dry-run.md), so there the counts and the failures are compared.
async fn push_where_the_first_users_contact_has_aliases(
    env: &MappedEnv,
    mode: PushMode,
    stop_after_first_page: bool,
) {
    the_first_user_has_aliases_in_hubspot(env, &[2, 250]).await;
    let spec = JobSpec::from(JobAction::Push { mode });
    let runs = dry_and_real(env, spec, stop_after_first_page.then_some(2)).await;
    let runs = match mode {
        PushMode::Upsert => runs.compared(),
        PushMode::Link => runs.counts_agree(),
    }
    .failures_agree();
    let real = runs.real;
    for (failed, _, reason) in failures(&real) {
        assert!(
            [Some(ContactId(2)), Some(ContactId(250))].contains(&failed)
                && reason.contains("already linked to local contact 1"),
            "{failed:?}: {reason}"
        );
    }
    let Counts::Push(counts) = real.counts else {
        panic!("push counts")
    };
    let (linked, updated) = match mode {
        PushMode::Link => (1, 0),
        PushMode::Upsert => (0, 1),
    };
    assert_eq!(
        (counts.created, counts.linked, counts.updated, counts.failed),
        (297, linked, updated, 2),
        "{counts:?}"
    );
    assert_eq!(counts.associations_created, 298, "{counts:?}");
}

/// [`built_in_tables`] where Org 1 and Org 150 (on the first and second page of a companies
/// push) share one domain, which one HubSpot company has: a link push links Org 1 to it, and
/// the real run's database refuses it to Org 150.
async fn orgs_on_two_pages_share_a_hubspot_companys_domain(env: &MappedEnv) {
    env.hubspot.insert_companies(vec![BTreeMap::from([
        ("name".to_owned(), "Shared".to_owned()),
        ("domain".to_owned(), "shared.example.com".to_owned()),
    ])]);
}

/// Setup SQL for [`orgs_on_two_pages_share_a_hubspot_companys_domain`].
fn built_in_tables_with_a_shared_domain() -> String {
    format!(
        "{}; UPDATE companies SET domain = 'shared.example.com' WHERE id IN (1, 150)",
        built_in_tables()
    )
}

/// The failures of a job: which local row (contact or company), and why.
fn failures(job: &Job) -> Vec<(Option<ContactId>, Option<LocalCompanyId>, String)> {
    job.errors
        .iter()
        .map(|e| (e.contact_id, e.company_id, e.reason.clone()))
        .collect()
}

/// A dry companies push (stopped after its first page and resumed when `stopped`) and the real
/// one, where Org 1 and Org 150 share a HubSpot company's domain: the plan names the real run's
/// calls, and both fail Org 150 naming Org 1.
async fn companies_push_where_orgs_share_a_domain(env: &MappedEnv, stopped: bool) {
    orgs_on_two_pages_share_a_hubspot_companys_domain(env).await;
    let spec = JobSpec::from(push_action())
        .for_object(SyncObject::Companies)
        .expect("companies");
    let real = dry_and_real(env, spec, stopped.then_some(2))
        .await
        .compared()
        .failures_agree()
        .real;
    let Counts::Push(counts) = real.counts else {
        panic!("push counts")
    };
    assert_eq!(
        (counts.linked, counts.created, counts.failed),
        (1, 248, 1),
        "{counts:?}"
    );
    assert_eq!(real.errors[0].company_id, Some(LocalCompanyId(150)));
    assert!(
        real.errors[0]
            .reason
            .contains("already linked to local company 1"),
        "{:?}",
        real.errors
    );
}

/// A dry push of a users table of your own (600 users naming crm-sync's companies) and the real
/// one (the dry run stopped after its first page and resumed when `stopped`), the first user's
/// HubSpot contact also named by the 2nd (same page) and 250th (third page) user's emails: one
/// link, two failures naming the row that holds it, and the plan names the real run's calls.
async fn own_table_push_where_the_first_users_contact_has_aliases(env: &MappedEnv, stopped: bool) {
    the_first_user_has_aliases_in_hubspot(env, &[2, 250]).await;
    let spec = JobSpec::from(push_action());
    let Counts::Push(counts) = (if stopped {
        dry_stopped_then_real(env, spec, 2).await
    } else {
        dry_then_real(env, spec).await
    }) else {
        panic!("push counts")
    };
    assert_eq!(
        (
            counts.created,
            counts.linked,
            counts.failed,
            counts.associations_created
        ),
        (597, 1, 2, 598),
        "{counts:?}"
    );
}

/// The stop check at which a dry push of [`built_in_tables`] has planned its six contact pages and
/// three of its six association pages.
const AMID_THE_ASSOCIATION_PAGES: usize = 18;

/// The stop check at which a dry push of [`users_of_crm_syncs_companies`] mapped with its
/// companies has planned its six row pages and two of its six association pages.
const OWN_AMID_THE_ASSOCIATION_PAGES: usize = 10;

backend_tests! {
    async fn a_dry_push_of_a_table_of_your_own_plans_every_call_of_the_real_run(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &own_tables(), &own_mapping()).await;
        let Counts::Push(counts) = dry_then_real_push(&env).await else { panic!("push counts") };
        assert_eq!((counts.created, counts.associations_created), (600, 600));
    }

    async fn a_dry_push_of_crm_syncs_own_contacts_plans_every_call_of_the_real_run(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables(), "").await;
        let Counts::Push(counts) = dry_then_real_push(&env).await else { panic!("push counts") };
        assert_eq!((counts.created, counts.associations_created), (600, 600));
    }

    async fn a_dry_push_of_a_companies_table_of_your_own_plans_every_call_of_the_real_run(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &own_tables(), &own_mapping()).await;
        let spec = JobSpec::from(push_action()).for_object(SyncObject::Companies).expect("companies");
        let Counts::Push(counts) = dry_then_real(&env, spec).await else { panic!("push counts") };
        assert_eq!(counts.created, 250);
    }

    async fn a_dry_push_of_crm_syncs_own_companies_plans_every_call_of_the_real_run(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables(), "").await;
        let spec = JobSpec::from(push_action()).for_object(SyncObject::Companies).expect("companies");
        let Counts::Push(counts) = dry_then_real(&env, spec).await else { panic!("push counts") };
        assert_eq!(counts.created, 250);
    }

    async fn a_dry_full_pull_of_crm_syncs_own_contacts_plans_every_call_of_the_real_run(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables(), "").await;
        env.push().await;
        people_add_contacts_in_hubspot(&env);
        let Counts::Pull(counts) = dry_then_real(&env, JobSpec::from(pull_action(false))).await else {
            panic!("pull counts")
        };
        assert_eq!((counts.total, counts.created), (750, 150));
    }

    async fn a_dry_full_pull_of_a_table_of_your_own_plans_every_call_of_the_real_run(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &own_tables(), &own_mapping()).await;
        env.push().await;
        people_add_contacts_in_hubspot(&env);
        let Counts::Pull(counts) = dry_then_real(&env, JobSpec::from(pull_action(false))).await else {
            panic!("pull counts")
        };
        // A pull never adds rows to a table of the user's own.
        assert_eq!((counts.total, counts.unchanged), (750, 750));
    }

    async fn a_dry_full_pull_plans_the_check_of_the_stale_link_an_adopted_companys_key_names(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables(), "").await;
        pull_adopting_org_one_made_again(&env).await;
    }

    async fn a_dry_full_pull_of_a_table_of_your_own_plans_the_company_reads_to_adopt_companies(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &users_of_crm_syncs_companies(), &email_and_company_mapping("users", "id")).await;
        pull_adopting_org_one_made_again(&env).await;
    }

    async fn a_dry_full_pull_stopped_and_resumed_plans_what_every_run_of_it_read(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables(), "").await;
        stopped_pull_adopting_org_one_made_again(&env).await;
    }

    async fn a_dry_full_pull_of_a_table_of_your_own_stopped_and_resumed_plans_what_every_run_of_it_read(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &users_of_crm_syncs_companies(), &email_and_company_mapping("users", "id")).await;
        stopped_pull_adopting_org_one_made_again(&env).await;
    }

    async fn a_dry_full_pull_reads_text_keys_in_the_order_of_the_key_columns_collation(db: TestDb, profile: HubSpotProfile) {
        let backend = db.backend();
        let env = MappedEnv::start(db, profile, &members(backend), &email_and_company_mapping("members", "handle")).await;
        env.push().await;
        // Two members whose companies take two of HubSpot's pages each: the real pull reads
        // `A` with the first 999 `b…` rows and `C` with the last, two further pages.
        give_companies(&env, "big-a@example.com", 501).await;
        give_companies(&env, "big-c@example.com", 501).await;
        let Counts::Pull(counts) = dry_then_real(&env, JobSpec::from(pull_action(false))).await else {
            panic!("pull counts")
        };
        assert_eq!(counts.total, 1_002);
    }

    async fn a_full_pull_decides_alike_for_the_contacts_of_a_company_it_relinks_before_and_after_the_relink(db: TestDb, profile: HubSpotProfile) {
        // Org 1's contacts are users 250, 500, 750, 1,000 (read in the first 1,000, with the
        // first user, whose new company relinks Org 1) and 1,250 (read after the relink).
        let env = MappedEnv::start(db, profile, &built_in_tables_with(1_300), "").await;
        env.push().await;
        let again = org_one_is_made_again_in_hubspot_as_the_first_users_company(&env).await;
        let Counts::Pull(counts) = dry_then_real(&env, JobSpec::from(pull_action(false))).await else {
            panic!("pull counts")
        };
        // HubSpot dropped the five contacts' company with the company it deleted: all five lose
        // it, the relink notwithstanding (their company's link moved, not their company).
        assert_eq!((counts.associations_created, counts.associations_removed), (1, 5));
        for user in [250, 500, 750, 1_000, 1_250] {
            let company = env.store.company_of_contact(ContactId(user)).await.unwrap();
            assert_eq!(company, None, "user {user}");
        }
        let first = env.store.company_of_contact(ContactId(1)).await.unwrap();
        assert_eq!(first, Some(LocalCompanyId(1)));
        let org_one = env.store.get_company(LocalCompanyId(1)).await.unwrap().expect("Org 1");
        assert_eq!(org_one.hs_object_id, Some(again));
    }

    async fn a_dry_full_pull_does_not_sweep_a_row_an_earlier_page_relinked(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables(), "").await;
        env.push().await;
        // The fifth user's HubSpot contact is deleted and made again (an import): the pull's
        // page re-links the row to the new contact; the sweep then has nothing to check.
        let old = env.hubspot_contact("user5@example.com");
        env.client
            .archive_contact(&HsObjectId::from(old.id.as_str()))
            .await
            .expect("deleted in HubSpot");
        env.hubspot.insert_contacts(vec![BTreeMap::from([(
            "email".to_owned(),
            "user5@example.com".to_owned(),
        )])]);
        let Counts::Pull(counts) = dry_then_real(&env, JobSpec::from(pull_action(false))).await else {
            panic!("pull counts")
        };
        assert_eq!((counts.total, counts.linked, counts.unlinked), (600, 1, 0));
    }

    async fn a_dry_full_pull_of_a_table_of_your_own_does_not_sweep_a_row_an_earlier_page_moved(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &users_of_crm_syncs_companies(), &email_and_company_mapping("users", "id")).await;
        env.push().await;
        // The fifth user's HubSpot contact is merged into one a person made: the pull's page
        // follows the row's link to the survivor; the sweep then has nothing to check.
        let fifth = env.hubspot_contact("user5@example.com");
        let made = env.hubspot.insert_contacts(vec![BTreeMap::from([(
            "email".to_owned(),
            "person@example.com".to_owned(),
        )])]);
        env.client
            .merge_contacts(&HsObjectId::from(made[0].as_str()), &HsObjectId::from(fifth.id.as_str()))
            .await
            .expect("merged");
        let Counts::Pull(counts) = dry_then_real(&env, JobSpec::from(pull_action(false))).await else {
            panic!("pull counts")
        };
        assert_eq!((counts.total, counts.unlinked), (600, 0));
    }
    async fn a_dry_push_fails_the_links_the_real_push_refuses_to_a_contact_an_earlier_row_took(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables_with(300), "").await;
        push_where_the_first_users_contact_has_aliases(&env, PushMode::Link, false).await;
    }

    async fn a_dry_push_stopped_and_resumed_fails_the_links_an_earlier_run_of_it_would_make(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables_with(300), "").await;
        push_where_the_first_users_contact_has_aliases(&env, PushMode::Link, true).await;
    }

    async fn a_dry_upsert_push_fails_the_links_the_real_push_refuses_and_plans_the_associations_of_those_it_makes(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables_with(300), "").await;
        push_where_the_first_users_contact_has_aliases(&env, PushMode::Upsert, false).await;
    }

    async fn a_dry_upsert_push_stopped_and_resumed_fails_the_links_an_earlier_run_of_it_would_make(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables_with(300), "").await;
        push_where_the_first_users_contact_has_aliases(&env, PushMode::Upsert, true).await;
    }
    async fn a_dry_push_stopped_in_its_association_phase_and_resumed_counts_each_page_once(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables(), "").await;
        // 600 contacts: six contact pages, then six association pages; stopped among the latter.
        let spec = JobSpec::from(push_action());
        let Counts::Push(counts) = dry_stopped_then_real(&env, spec, AMID_THE_ASSOCIATION_PAGES).await else {
            panic!("push counts")
        };
        assert_eq!((counts.created, counts.associations_created), (600, 600));
    }
    async fn a_dry_companies_push_fails_the_link_the_real_push_refuses_to_a_company_an_earlier_page_took(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables_with_a_shared_domain(), "").await;
        companies_push_where_orgs_share_a_domain(&env, false).await;
    }

    async fn a_dry_companies_push_stopped_and_resumed_fails_the_link_an_earlier_run_of_it_would_make(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables_with_a_shared_domain(), "").await;
        companies_push_where_orgs_share_a_domain(&env, true).await;
    }

    async fn a_dry_contacts_push_fails_the_associations_of_a_company_the_real_run_cannot_link(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &built_in_tables_with_a_shared_domain(), "").await;
        orgs_on_two_pages_share_a_hubspot_companys_domain(&env).await;
        let Counts::Push(counts) = dry_then_real_push(&env).await else { panic!("push counts") };
        // Org 150's contacts (user 149, 399) cannot be associated with it.
        assert_eq!((counts.associations_created, counts.associations_failed), (598, 2), "{counts:?}");
    }
    async fn a_dry_push_of_a_table_of_your_own_fails_the_links_the_real_push_refuses_to_a_contact_an_earlier_row_took(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &users_of_crm_syncs_companies(), &email_and_company_mapping("users", "id")).await;
        own_table_push_where_the_first_users_contact_has_aliases(&env, false).await;
    }

    async fn a_dry_push_of_a_table_of_your_own_stopped_and_resumed_fails_the_links_an_earlier_run_of_it_would_make(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &users_of_crm_syncs_companies(), &email_and_company_mapping("users", "id")).await;
        own_table_push_where_the_first_users_contact_has_aliases(&env, true).await;
    }
    async fn a_dry_push_of_a_table_of_your_own_stopped_in_its_association_phase_and_resumed_counts_each_page_once(db: TestDb, profile: HubSpotProfile) {
        let env = MappedEnv::start(db, profile, &users_of_crm_syncs_companies(), &email_and_company_mapping("users", "id")).await;
        let spec = JobSpec::from(push_action());
        let Counts::Push(counts) = dry_stopped_then_real(&env, spec, OWN_AMID_THE_ASSOCIATION_PAGES).await else {
            panic!("push counts")
        };
        assert_eq!((counts.created, counts.associations_created), (600, 600));
    }
    async fn a_dry_push_of_a_table_of_your_own_fails_the_associations_of_an_org_the_real_run_cannot_link(db: TestDb, profile: HubSpotProfile) {
        // Org 2 and Org 150 (named by the first and second association pages' users) share a
        // domain one HubSpot company has: the real run links Org 2 to it, and its database
        // refuses it to Org 150, whose two users' associations fail.
        let setup = format!("{}; UPDATE orgs SET domain = 'shared.example.com' WHERE id IN (2, 150)", own_tables());
        let env = MappedEnv::start(db, profile, &setup, &own_mapping()).await;
        orgs_on_two_pages_share_a_hubspot_companys_domain(&env).await;
        let Counts::Push(counts) = dry_then_real_push(&env).await else { panic!("push counts") };
        assert_eq!((counts.associations_created, counts.associations_failed), (598, 2), "{counts:?}");
    }
    async fn a_dry_push_of_a_companies_table_of_your_own_fails_the_link_the_real_push_refuses_to_an_org_an_earlier_page_took(db: TestDb, profile: HubSpotProfile) {
        let setup = format!("{}; UPDATE orgs SET domain = 'shared.example.com' WHERE id IN (2, 150)", own_tables());
        let env = MappedEnv::start(db, profile, &setup, &own_mapping()).await;
        orgs_on_two_pages_share_a_hubspot_companys_domain(&env).await;
        let spec = JobSpec::from(push_action()).for_object(SyncObject::Companies).expect("companies");
        let Counts::Push(counts) = dry_then_real(&env, spec).await else { panic!("push counts") };
        assert_eq!((counts.linked, counts.created, counts.failed), (1, 248, 1), "{counts:?}");
    }
}
