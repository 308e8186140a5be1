//! The store, specified against every available backend (see `tests/common`).

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use chrono::{TimeZone, Utc};
use crm_sync::ids::{ContactId, HsObjectId, PortalId};
use crm_sync::store::{Backend, CredentialStatus, NewContact, NewCredentials, Store, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn contact(email: Option<&str>, first: &str, last: &str) -> NewContact {
    NewContact {
        email: email.map(str::to_owned),
        first_name: Some(first.to_owned()),
        last_name: Some(last.to_owned()),
    }
}

fn people(n: usize, prefix: &str) -> Vec<NewContact> {
    (0..n)
        .map(|i| {
            contact(
                Some(&format!("{prefix}{i}@example.com")),
                "First",
                &format!("Last{i}"),
            )
        })
        .collect()
}

/// Runs the user's own SQL (the same text on both backends), as a script or tool would.
async fn raw_exec(store: &Store, sql: &'static str) -> Result<u64, sqlx::Error> {
    match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pg), _) => sqlx::query(sql)
            .execute(pg)
            .await
            .map(|r| r.rows_affected()),
        (_, Some(lite)) => sqlx::query(sql)
            .execute(lite)
            .await
            .map(|r| r.rows_affected()),
        _ => unreachable!("a store has one pool"),
    }
}

/// Reads one integer with the user's own SQL.
async fn raw_i64(store: &Store, sql: &'static str) -> i64 {
    let got = match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pg), _) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pg).await,
        (_, Some(lite)) => sqlx::query_scalar::<_, i64>(sql).fetch_one(lite).await,
        _ => unreachable!("a store has one pool"),
    };
    got.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn emails(store: &Store) -> Vec<Option<String>> {
    let all = store.list_contacts(None, 1000).await.unwrap();
    all.into_iter().map(|c| c.email).collect()
}

backend_tests! {
    async fn each_database_has_one_installation_id_kept_across_restarts(db: TestDb) {
        let store = db.store().await;
        let first = store.installation().await.expect("installation");
        assert_eq!(first.id.len(), 16, "{first:?}");
        assert!(first.id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{first:?}");
        assert_eq!(first.legacy_keys_through, None, "a fresh database claims no bare key");
        store.close().await;
        // Another process, migrating again: the same id.
        let again = db.store().await;
        assert_eq!(again.installation().await.expect("installation"), first);
        // Another database: another id.
        let other = common::TestDb::sqlite().await;
        let other_store = other.store().await;
        assert_ne!(other_store.installation().await.expect("installation").id, first.id);
        // The row deleted by hand: readers racing to recreate it all get the one that won.
        raw_exec(&again, "DELETE FROM installation").await.expect("delete");
        let (a, b) = tokio::join!(again.installation(), again.installation());
        let (a, b) = (a.expect("recreated"), b.expect("recreated"));
        assert_eq!(a, b);
        assert_ne!(a.id, first.id);
        assert_eq!(a.legacy_keys_through, None);
        assert_eq!(again.installation().await.expect("installation"), a);
    }

    async fn migrating_twice_and_after_a_restart_changes_nothing(db: TestDb) {
        let store = db.store().await;
        store.migrate().await.expect("second migrate on the same store");
        let restarted = Store::connect(db.url()).await.expect("reconnect");
        restarted.migrate().await.expect("migrate after a restart");
        restarted.ping().await.expect("ping");
        assert_eq!(restarted.count_contacts().await.unwrap(), 0);
        // The apalis storage tables are created by the same migrate call.
        let apalis_jobs = match db.backend() {
            Backend::Postgres => raw_i64(&restarted, "SELECT COUNT(*) FROM apalis.jobs").await,
            Backend::Sqlite => raw_i64(&restarted, "SELECT COUNT(*) FROM Jobs").await,
        };
        assert_eq!(apalis_jobs, 0);
    }

    async fn the_store_reports_its_backend_and_pool(db: TestDb) {
        let store = db.store().await;
        assert_eq!(store.backend(), db.backend());
        match db.backend() {
            Backend::Postgres => assert!(store.pg_pool().is_some() && store.sqlite_pool().is_none()),
            Backend::Sqlite => assert!(store.sqlite_pool().is_some() && store.pg_pool().is_none()),
        }
    }

    async fn inserted_emails_are_trimmed_lower_cased_and_blank_becomes_null(db: TestDb) {
        let store = db.store().await;
        let batch = vec![
            contact(Some("  Ada.Lovelace@Example.COM \t"), "Ada", "Lovelace"),
            contact(Some(""), "Empty", "Email"),
            contact(Some("   "), "Blank", "Email"),
            contact(None, "No", "Email"),
        ];
        assert_eq!(store.insert_contacts(&batch).await.unwrap(), 4);
        assert_eq!(
            emails(&store).await,
            vec![Some("ada.lovelace@example.com".to_owned()), None, None, None]
        );
    }

    async fn an_email_that_exists_in_another_case_is_skipped_not_an_error(db: TestDb) {
        let store = db.store().await;
        assert_eq!(store.insert_contacts(&[contact(Some("a@x.com"), "A", "One")]).await.unwrap(), 1);
        let batch = vec![
            contact(Some("A@X.COM"), "A", "Again"),
            contact(Some("b@x.com"), "B", "One"),
            contact(Some(" B@x.com "), "B", "Again in the same batch"),
            contact(None, "No", "Email"),
            contact(None, "Also no", "Email"),
        ];
        assert_eq!(store.insert_contacts(&batch).await.unwrap(), 3);
        assert_eq!(store.count_contacts().await.unwrap(), 4);
        let b = store.list_contacts(None, 10).await.unwrap().remove(1);
        assert_eq!(b.last_name.as_deref(), Some("One"), "the first occurrence wins");
    }

    async fn an_empty_batch_inserts_nothing(db: TestDb) {
        let store = db.store().await;
        assert_eq!(store.insert_contacts(&[]).await.unwrap(), 0);
        assert_eq!(store.count_contacts().await.unwrap(), 0);
    }

    async fn batches_larger_than_one_statement_keep_input_order(db: TestDb) {
        let store = db.store().await;
        let mut batch = people(12_001, "p");
        batch.push(contact(Some("P0@Example.com"), "Dup", "Of first"));
        assert_eq!(store.insert_contacts(&batch).await.unwrap(), 12_001);
        assert_eq!(store.count_contacts().await.unwrap(), 12_001);
        let all = store.list_contacts(None, 20_000).await.unwrap();
        assert_eq!(all[0].email.as_deref(), Some("p0@example.com"));
        assert_eq!(all[12_000].email.as_deref(), Some("p12000@example.com"));
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    }

    async fn a_row_inserted_by_hand_with_only_email_and_names_is_valid_and_normalised(db: TestDb) {
        let store = db.store().await;
        raw_exec(
            &store,
            "INSERT INTO contacts (email, first_name, last_name) VALUES ('  Grace@Example.COM ', 'Grace', 'Hopper')",
        )
        .await
        .expect("a minimal hand-written row is accepted");
        let grace = store.list_contacts(None, 10).await.unwrap().remove(0);
        assert_eq!(grace.email.as_deref(), Some("grace@example.com"));
        assert_eq!(grace.hs_object_id, None);
        assert_eq!(grace.created_at, grace.updated_at);
        assert_eq!(raw_i64(&store, "SELECT local_version FROM contacts").await, 1);
        assert_eq!(raw_i64(&store, "SELECT pushed_version FROM contacts").await, 0);

        raw_exec(&store, "INSERT INTO contacts (email, first_name, last_name) VALUES ('  ', 'Blank', 'Email')")
            .await
            .expect("a blank email is accepted as no email");
        assert_eq!(
            raw_i64(&store, "SELECT COUNT(*) FROM contacts WHERE email IS NULL").await,
            1
        );
    }

    async fn a_mixed_case_duplicate_written_by_hand_is_refused(db: TestDb) {
        let store = db.store().await;
        store.insert_contacts(&[contact(Some("grace@example.com"), "Grace", "Hopper")]).await.unwrap();
        let second = raw_exec(
            &store,
            "INSERT INTO contacts (email, first_name, last_name) VALUES ('GRACE@Example.com', 'Other', 'Grace')",
        )
        .await;
        assert!(second.is_err(), "a second identity was created: {second:?}");
        let renamed = raw_exec(&store, "UPDATE contacts SET email = ' Grace@EXAMPLE.com' WHERE first_name = 'Grace'").await;
        assert_eq!(renamed.expect("a case-only rewrite of the same email"), 1);
        assert_eq!(emails(&store).await, vec![Some("grace@example.com".to_owned())]);
    }

    async fn emails_written_by_hand_are_lower_cased_in_unicode_as_in_rust_whatever_the_locale(db: TestDb) {
        let store = db.store().await;
        if db.backend() == Backend::Postgres {
            // What a database created with the C locale gives the column: under it lower()
            // folds ASCII only.
            raw_exec(&store, r#"ALTER TABLE contacts ALTER COLUMN email TYPE text COLLATE "C""#)
                .await
                .expect("the email column takes the C collation");
        }
        raw_exec(
            &store,
            "INSERT INTO contacts (email) VALUES ('ÉLODIE@example.com'), ('ÅSA@Example.com'), \
             ('STRASSE@example.com'), ('straße@example.com')",
        )
        .await
        .expect("hand-written rows are accepted");
        raw_exec(&store, "INSERT INTO contacts (email) VALUES ('\u{a0}ÖLA@Example.com\u{3000}')")
            .await
            .expect("Unicode whitespace around an email is trimmed, as Rust trims it");

        let mut stored: Vec<String> = emails(&store).await.into_iter().flatten().collect();
        stored.sort();
        let mut expected: Vec<String> = [
            "ÉLODIE@example.com",
            "ÅSA@Example.com",
            "STRASSE@example.com",
            "straße@example.com",
            "\u{a0}ÖLA@Example.com\u{3000}",
        ]
        .iter()
        .filter_map(|e| crm_sync::ids::Email::parse(e).map(crm_sync::ids::Email::into_string))
        .collect();
        expected.sort();
        assert_eq!(stored, expected, "stored exactly as the service normalises in Rust");
        assert!(stored.contains(&"élodie@example.com".to_owned()), "{stored:?}");
        assert!(
            stored.contains(&"strasse@example.com".to_owned()) && stored.contains(&"straße@example.com".to_owned()),
            "lower-cased, not case-folded: STRASSE and straße stay two emails: {stored:?}"
        );
        let again = raw_exec(&store, "INSERT INTO contacts (email) VALUES ('Élodie@EXAMPLE.com')").await;
        assert!(again.is_err(), "the same email in other (non-ASCII) case is a second identity: {again:?}");
    }

    async fn hs_object_id_is_unique_but_many_rows_may_lack_one(db: TestDb) {
        let store = db.store().await;
        store.insert_contacts(&people(3, "h")).await.unwrap();
        raw_exec(&store, "UPDATE contacts SET hs_object_id = '101' WHERE email = 'h0@example.com'")
            .await
            .expect("first link");
        let twice = raw_exec(&store, "UPDATE contacts SET hs_object_id = '101' WHERE email = 'h1@example.com'").await;
        assert!(twice.is_err(), "two contacts linked to one HubSpot record: {twice:?}");
        let linked = store.list_contacts(None, 10).await.unwrap();
        assert_eq!(linked[0].hs_object_id, Some(HsObjectId::from("101")));
        assert_eq!(linked[1].hs_object_id, None);
        assert_eq!(linked[2].hs_object_id, None);
    }

    async fn local_version_rises_only_when_owned_fields_really_change(db: TestDb) {
        let store = db.store().await;
        store.insert_contacts(&[contact(Some("v@example.com"), "Vera", "Rubin")]).await.unwrap();
        let version = || raw_i64(&store, "SELECT local_version FROM contacts");
        assert_eq!(version().await, 1);
        raw_exec(&store, "UPDATE contacts SET hs_object_id = '7'").await.unwrap();
        assert_eq!(version().await, 1, "linking is not a local change");
        raw_exec(&store, "UPDATE contacts SET pushed_version = 1").await.unwrap();
        assert_eq!(version().await, 1, "recording a push is not a local change");
        raw_exec(&store, "UPDATE contacts SET email = 'V@Example.com '").await.unwrap();
        assert_eq!(version().await, 1, "the same email in another case is not a change");
        raw_exec(&store, "UPDATE contacts SET first_name = 'Vera C.'").await.unwrap();
        assert_eq!(version().await, 2);
        raw_exec(&store, "UPDATE contacts SET email = 'vera@example.com', last_name = 'Cooper Rubin'").await.unwrap();
        assert_eq!(version().await, 3);
        let row = store.list_contacts(None, 1).await.unwrap().remove(0);
        assert_eq!(row.email.as_deref(), Some("vera@example.com"));
        assert!(row.updated_at >= row.created_at);
    }

    async fn pages_follow_ids_with_no_gaps_or_repeats(db: TestDb) {
        let store = db.store().await;
        assert!(store.list_contacts(None, 3).await.unwrap().is_empty(), "empty table");

        store.insert_contacts(&people(6, "k")).await.unwrap();
        let first = store.list_contacts(None, 3).await.unwrap();
        assert_eq!(first.len(), 3);
        let second = store.list_contacts(Some(first[2].id), 3).await.unwrap();
        assert_eq!(second.len(), 3, "exactly one more full page");
        assert!(first[2].id < second[0].id);
        let third = store.list_contacts(Some(second[2].id), 3).await.unwrap();
        assert!(third.is_empty(), "after the last id there is nothing");
        assert!(store.list_contacts(Some(ContactId(i64::MAX)), 3).await.unwrap().is_empty());
        assert!(store.list_contacts(None, 0).await.unwrap().is_empty());

        let all = store.list_contacts(None, 100).await.unwrap();
        let paged: Vec<_> = first.iter().chain(&second).map(|c| c.id).collect();
        assert_eq!(paged, all.iter().map(|c| c.id).collect::<Vec<_>>());
        let in_input_order: Vec<_> = all.iter().map(|c| c.email.clone().unwrap()).collect();
        assert_eq!(in_input_order[0], "k0@example.com");
        assert_eq!(in_input_order[5], "k5@example.com");
    }

    async fn count_and_get_see_what_was_inserted(db: TestDb) {
        let store = db.store().await;
        assert_eq!(store.count_contacts().await.unwrap(), 0);
        store.insert_contacts(&people(5, "c")).await.unwrap();
        assert_eq!(store.count_contacts().await.unwrap(), 5);
        let listed = store.list_contacts(None, 5).await.unwrap();
        let got = store.get_contact(listed[3].id).await.unwrap();
        assert_eq!(got.as_ref(), Some(&listed[3]));
        assert_eq!(got.unwrap().last_name.as_deref(), Some("Last3"));
        assert_eq!(store.get_contact(ContactId(i64::MAX)).await.unwrap(), None);
    }

    async fn credentials_are_upserted_per_portal_and_the_latest_is_current(db: TestDb) {
        let store = db.store().await;
        assert_eq!(store.current_credentials().await.unwrap(), None);
        assert_eq!(store.get_credentials(PortalId(1)).await.unwrap(), None);

        let expires = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::milliseconds(678);
        let first = NewCredentials {
            portal_id: PortalId(1),
            access_token_cipher: vec![0, 1, 2, 255],
            refresh_token_cipher: Some(vec![9, 9, 9]),
            expires_at: expires,
            scopes: vec!["oauth".into(), "crm.objects.contacts.read".into()],
        };
        let stored = store.upsert_credentials(&first).await.unwrap();
        assert_eq!(stored.portal_id, PortalId(1));
        assert_eq!(stored.access_token_cipher, vec![0, 1, 2, 255]);
        assert_eq!(stored.refresh_token_cipher, Some(vec![9, 9, 9]));
        assert_eq!(stored.expires_at, expires);
        assert_eq!(stored.scopes, first.scopes);
        assert_eq!(stored.status, CredentialStatus::Connected);
        assert_eq!(store.get_credentials(PortalId(1)).await.unwrap(), Some(stored.clone()));

        assert!(store.set_credentials_status(PortalId(1), CredentialStatus::Broken).await.unwrap());
        assert_eq!(store.get_credentials(PortalId(1)).await.unwrap().unwrap().status, CredentialStatus::Broken);
        assert!(!store.set_credentials_status(PortalId(404), CredentialStatus::Broken).await.unwrap());

        let refreshed = NewCredentials {
            access_token_cipher: vec![7],
            refresh_token_cipher: None,
            ..first.clone()
        };
        let again = store.upsert_credentials(&refreshed).await.unwrap();
        assert_eq!(again.access_token_cipher, vec![7]);
        assert_eq!(again.refresh_token_cipher, Some(vec![9, 9, 9]), "no new refresh token keeps the old one");
        assert_eq!(again.status, CredentialStatus::Connected, "a new token reconnects");
        assert_eq!(again.created_at, stored.created_at);

        let other = NewCredentials { portal_id: PortalId(2), scopes: vec![], ..first };
        store.upsert_credentials(&other).await.unwrap();
        let current = store.current_credentials().await.unwrap().unwrap();
        assert_eq!(current.portal_id, PortalId(2));
        assert!(current.scopes.is_empty());
    }

    async fn an_installation_is_stored_only_while_no_other_account_is(db: TestDb) {
        let store = db.store().await;
        let install = |portal: i64| NewCredentials {
            portal_id: PortalId(portal),
            access_token_cipher: vec![portal as u8],
            refresh_token_cipher: Some(vec![1]),
            expires_at: Utc::now(),
            scopes: vec![],
        };
        let first = store.install_credentials(&install(1)).await.unwrap();
        assert_eq!(first.map(|c| c.portal_id), Some(PortalId(1)), "an empty table takes any account");
        let again = store.install_credentials(&NewCredentials { access_token_cipher: vec![42], ..install(1) }).await.unwrap();
        assert_eq!(again.map(|c| c.access_token_cipher), Some(vec![42]), "the same account is replaced");
        assert_eq!(store.install_credentials(&install(2)).await.unwrap(), None, "another account is not");
        assert_eq!(store.get_credentials(PortalId(2)).await.unwrap(), None, "nothing was written");

        // Two installations racing for different accounts on an empty table: exactly one wins,
        // every time.
        for round in 0..20 {
            store.delete_credentials().await.unwrap();
            let (ten, twenty) = (install(10), install(20));
            let (a, b) = tokio::join!(store.install_credentials(&ten), store.install_credentials(&twenty));
            let stored = [a, b].into_iter().filter(|r| matches!(r, Ok(Some(_)))).count();
            let rows = store.delete_credentials().await.unwrap();
            assert_eq!(rows.len(), 1, "round {round}: one account stored, not {rows:?}");
            assert!(stored <= 1, "round {round}: {stored} installs reported success");
        }
    }

    async fn at_most_one_unforced_job_per_direction_is_active(db: TestDb) {
        let store = db.store().await;
        raw_exec(&store, "INSERT INTO sync_jobs (id, direction, mode, triggered_by) VALUES ('01A', 'push', 'link', 'api')")
            .await
            .expect("first queued push");
        let second = raw_exec(&store, "INSERT INTO sync_jobs (id, direction, mode, triggered_by) VALUES ('01B', 'push', 'upsert', 'cli')").await;
        assert!(second.is_err(), "two active unforced pushes: {second:?}");
        raw_exec(&store, "INSERT INTO sync_jobs (id, direction, mode, triggered_by, exclusive) VALUES ('01C', 'push', 'link', 'api', FALSE)")
            .await
            .expect("a forced push runs beside it");
        raw_exec(&store, "INSERT INTO sync_jobs (id, direction, mode, triggered_by) VALUES ('01D', 'pull', 'upsert', 'schedule')")
            .await
            .expect("a pull is independent of pushes");
        raw_exec(&store, "UPDATE sync_jobs SET status = 'succeeded' WHERE id = '01A'").await.unwrap();
        raw_exec(&store, "INSERT INTO sync_jobs (id, direction, mode, triggered_by) VALUES ('01E', 'push', 'link', 'api')")
            .await
            .expect("a finished job no longer blocks");
        let bad_mode = raw_exec(&store, "INSERT INTO sync_jobs (id, direction, mode, triggered_by, exclusive) VALUES ('01F', 'pull', 'link', 'api', FALSE)").await;
        assert!(bad_mode.is_err(), "link is a push mode only");
        assert_eq!(raw_i64(&store, "SELECT COUNT(*) FROM sync_jobs WHERE counts IS NOT NULL AND errors IS NOT NULL").await, 4);
    }

    async fn concurrent_writers_all_succeed(db: TestDb) {
        let store = db.store().await;
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for round in 0..10 {
                        let batch = people(50, &format!("w{w}r{round}x"));
                        store.insert_contacts(&batch).await?;
                        store.count_contacts().await?;
                    }
                    Ok::<(), StoreError>(())
                })
            })
            .collect();
        for writer in writers {
            writer.await.expect("writer task").expect("no writer fails (no 'database is locked')");
        }
        assert_eq!(store.count_contacts().await.unwrap(), 8 * 10 * 50);
    }
}

#[tokio::test]
async fn a_sqlite_file_and_its_folders_are_created_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nested").join("deeper").join("crm-sync.db");
    let store = Store::connect(&format!("sqlite://{}", file.display()))
        .await
        .expect("connect");
    assert!(file.exists(), "the file exists after connecting");
    store.migrate().await.expect("migrate the new file");
    store.insert_contacts(&people(2, "f")).await.unwrap();
    store.close().await;

    let reopened = Store::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    assert_eq!(
        reopened.count_contacts().await.unwrap(),
        2,
        "data survives a reconnect"
    );
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(reopened.sqlite_pool().unwrap())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let fks: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(reopened.sqlite_pool().unwrap())
        .await
        .unwrap();
    assert_eq!(fks, 1);
}

#[tokio::test]
async fn an_unreachable_postgres_fails_with_a_clear_password_free_error() {
    // Port 1 on loopback: nothing listens, so the connection is refused at once.
    let err = Store::connect("postgres://app:hunter2@127.0.0.1:1/crm")
        .await
        .expect_err("nothing listens on port 1");
    assert!(
        matches!(
            err,
            StoreError::PostgresConnect {
                failure: crm_sync::store::PgConnectFailure::Refused { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("127.0.0.1:1/crm"),
        "names the database: {message}"
    );
    assert!(
        !message.contains("hunter2"),
        "leaks the password: {message}"
    );
    assert!(
        !format!("{err:?}").contains("hunter2"),
        "Debug leaks the password: {err:?}"
    );
}

#[tokio::test]
async fn unsupported_urls_are_refused_with_a_hint() {
    for url in [
        "mysql://u:secret@localhost/db",
        "sqlite::memory:",
        "sqlite://",
        "data/crm.db",
    ] {
        let err = Store::connect(url).await.expect_err(url);
        assert!(
            matches!(err, StoreError::UnsupportedUrl { .. }),
            "{url}: {err:?}"
        );
        assert!(!err.to_string().contains("secret"), "{url}: {err}");
    }
}

#[tokio::test]
async fn a_postgres_url_without_a_user_is_refused_with_a_hint() {
    if std::env::var_os("PGUSER").is_some() {
        eprintln!("skipped: PGUSER is set, so a URL without a user is fine");
        return;
    }
    let err = Store::connect("postgres://127.0.0.1:1/crm")
        .await
        .expect_err("no user");
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err:?}");
    assert!(err.to_string().contains("USER@HOST"), "{err}");
}

// ---- a transaction abandoned while it begins -------------------------------------------

/// A loopback TCP relay to PostgreSQL that can hold back the server's answer to a `BEGIN`, so
/// that a test can give up on a `BEGIN` while it is on the wire (and only then: the pool's own
/// checks of the connection pass at full speed).
struct SlowLink {
    port: u16,
    /// Milliseconds to hold the answer to the next `BEGIN` (0: none).
    hold_begin_ms: Arc<AtomicU64>,
}

impl SlowLink {
    async fn to(url: &str) -> SlowLink {
        let target = url::Url::parse(url).expect("a URL");
        let server = format!(
            "{}:{}",
            target.host_str().expect("a host"),
            target.port().unwrap_or(5432)
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold_begin_ms = Arc::new(AtomicU64::new(0));
        let armed = hold_begin_ms.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = tokio::net::TcpStream::connect(&server).await.unwrap();
                let (from_client, to_client) = client.into_split();
                let (from_server, to_server) = upstream.into_split();
                let held = Arc::new(AtomicU64::new(0));
                tokio::spawn(relay(
                    from_client,
                    to_server,
                    armed.clone(),
                    held.clone(),
                    true,
                ));
                tokio::spawn(relay(from_server, to_client, armed.clone(), held, false));
            }
        });
        SlowLink {
            port,
            hold_begin_ms,
        }
    }

    /// `url` with its host and port replaced by this relay's.
    fn url(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).expect("a URL");
        parsed.set_host(Some("127.0.0.1")).unwrap();
        parsed.set_port(Some(self.port)).unwrap();
        parsed.to_string()
    }

    /// Holds the answer to the next `BEGIN` for `ms` milliseconds.
    fn hold_next_begin(&self, ms: u64) {
        self.hold_begin_ms.store(ms, Ordering::SeqCst);
    }
}

/// Copies one direction of a relayed connection. Client to server: a `BEGIN` while armed
/// moves the hold onto this connection (before the server sees it). Server to client: a held
/// connection waits before passing the answer on.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    armed: Arc<AtomicU64>,
    held: Arc<AtomicU64>,
    from_client: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if from_client {
            if chunk.windows(5).any(|w| w == b"BEGIN") {
                held.store(armed.swap(0, Ordering::SeqCst), Ordering::SeqCst);
            }
        } else {
            let ms = held.swap(0, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
}

/// Waits until the pool holds its connections idle again (the abandoned `BEGIN` was answered
/// and its connection handed back).
async fn wait_until_every_connection_is_idle(store: &Store) {
    let idle = || match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pg), _) => pg.num_idle() == pg.size() as usize,
        (_, Some(lite)) => lite.num_idle() == lite.size() as usize,
        _ => unreachable!("a store has one pool"),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !idle() {
        assert!(
            std::time::Instant::now() < deadline,
            "the connection came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Takes every connection of the store's pool at once and inserts one contact through each
/// with a plain (autocommit) statement; returns how many it inserted.
async fn insert_through_every_connection(store: &Store) -> i64 {
    const SQL: &str = "INSERT INTO contacts (email) VALUES ($1)";
    let mut n = 0;
    if let Some(pool) = store.pg_pool() {
        let mut held = Vec::new();
        for _ in 0..pool.size() {
            held.push(pool.acquire().await.expect("a connection"));
        }
        for conn in &mut held {
            n += 1;
            let email = format!("after{n}@example.com");
            sqlx::query(SQL)
                .bind(email)
                .execute(&mut **conn)
                .await
                .expect("insert");
        }
    } else if let Some(pool) = store.sqlite_pool() {
        let mut held = Vec::new();
        for _ in 0..pool.size() {
            held.push(pool.acquire().await.expect("a connection"));
        }
        for conn in &mut held {
            n += 1;
            let email = format!("after{n}@example.com");
            sqlx::query(SQL)
                .bind(email)
                .execute(&mut **conn)
                .await
                .expect("insert");
        }
    }
    n
}

/// What keeps a `BEGIN` from being answered for a while: on PostgreSQL the relay holds back
/// the server's answers; on SQLite another connection holds the write lock `BEGIN IMMEDIATE`
/// waits for.
enum Stall {
    Postgres(SlowLink),
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

backend_tests! {
    async fn a_transaction_abandoned_while_it_begins_leaves_no_transaction_open_behind(db: TestDb) {
        use crm_sync::store::jobs::Tx;
        let direct = db.store().await;
        let (store, stall) = match db.backend() {
            Backend::Postgres => {
                let link = SlowLink::to(db.url()).await;
                let store = Store::connect(&link.url(db.url())).await.expect("connect");
                (store, Stall::Postgres(link))
            }
            Backend::Sqlite => {
                let store = Store::connect(db.url()).await.expect("connect");
                let lock = direct.sqlite_pool().unwrap().begin_with("BEGIN IMMEDIATE").await;
                (store, Stall::Sqlite(lock.expect("hold the write lock")))
            }
        };
        store.ping().await.expect("the pool has its first connection");
        if let Stall::Postgres(link) = &stall {
            link.hold_next_begin(1500);
        }

        // The caller gives up (a dropped handler, an aborted run) while BEGIN is unanswered.
        let begun = tokio::time::timeout(Duration::from_millis(300), Tx::begin(&store)).await;
        assert!(begun.is_err(), "BEGIN was still unanswered when the caller gave up");
        match stall {
            Stall::Postgres(_) => {} // the relay passes the answer on by itself
            Stall::Sqlite(lock) => lock.rollback().await.expect("release the write lock"),
        }
        wait_until_every_connection_is_idle(&store).await;

        // Every connection the pool hands out afterwards commits what it runs: none is left
        // inside a transaction the abandoned caller opened.
        let inserted = insert_through_every_connection(&store).await;
        let seen = raw_i64(&direct, "SELECT COUNT(*) FROM contacts").await;
        assert_eq!(seen, inserted, "another connection sees every committed row");
        store.close().await;
    }
}
