//! OAuth tokens at rest: encrypted in `hubspot_credentials` on every backend, refused clearly
//! under a wrong key or after tampering, rotated between keys, and marked broken when HubSpot
//! refuses the refresh token, after which jobs fail at once.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::oauth::approve;

use chrono::{DateTime, Duration, TimeZone, Utc};
use crm_sync::crypto::{CryptoError, EncryptionKey, TokenCipher};
use crm_sync::hubspot::{
    Auth, Backoff, ClientConfig, HubSpotClient, HubSpotError, OAuthApp, OAuthTokens, TokenStore,
};
use crm_sync::ids::PortalId;
use crm_sync::oauth::{
    ConnectionProblem, ConnectionStatus, CredentialError, DbTokenStore, TokenField,
};
use crm_sync::sandbox::{Sandbox, SandboxArgs, SandboxHandle};
use crm_sync::secret::Secret;
use crm_sync::store::{CredentialCiphers, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use url::Url;

const PORTAL: PortalId = PortalId(1_000_001);
/// A second account. Its id is lower, so that when both rows are written within the same
/// millisecond the tie-break of "the current connection" (highest portal id) still picks
/// [`PORTAL`], written last in every test.
const OTHER_PORTAL: PortalId = PortalId(999);

fn key(byte: u8) -> EncryptionKey {
    EncryptionKey::from_bytes([byte; 32])
}

fn cipher(current: u8, previous: &[u8]) -> Arc<TokenCipher> {
    let previous: Vec<_> = previous.iter().map(|b| key(*b)).collect();
    Arc::new(TokenCipher::new(&key(current), &previous))
}

/// Whole seconds, so that every backend stores the expiry exactly.
/// Half an hour after the test binary's first call, in whole seconds; one instant for the whole
/// run, so that tokens built at different moments of a test compare equal (a fresh `now()`
/// per call made them differ whenever a test crossed a second boundary).
fn in_half_an_hour() -> DateTime<Utc> {
    static AT: std::sync::LazyLock<DateTime<Utc>> = std::sync::LazyLock::new(|| {
        let t = Utc::now() + Duration::minutes(30);
        Utc.timestamp_opt(t.timestamp(), 0).unwrap()
    });
    *AT
}

fn tokens(portal: PortalId, tag: &str) -> OAuthTokens {
    OAuthTokens {
        access_token: Secret::new(format!("access-{tag}-CLEARTEXT-ACCESS")),
        refresh_token: Secret::new(format!("refresh-{tag}-CLEARTEXT-REFRESH")),
        expires_at: in_half_an_hour(),
        portal_id: Some(portal),
        scopes: vec!["crm.objects.contacts.read".into(), "oauth".into()],
    }
}

async fn ciphers_of(store: &Store, portal: PortalId) -> CredentialCiphers {
    store
        .list_credential_ciphers()
        .await
        .unwrap()
        .into_iter()
        .find(|row| row.portal_id == portal)
        .unwrap_or_else(|| panic!("no credentials for portal {portal}"))
}

/// Overwrites a row's ciphertexts with the user's own SQL, as someone with database access could.
async fn overwrite(store: &Store, portal: PortalId, access: &[u8], refresh: &[u8]) {
    const SQL: &str = "UPDATE hubspot_credentials
                          SET access_token_cipher = $2, refresh_token_cipher = $3
                        WHERE portal_id = $1";
    let changed = match (store.pg_pool(), store.sqlite_pool()) {
        (Some(pg), _) => sqlx::query(SQL)
            .bind(portal)
            .bind(access)
            .bind(refresh)
            .execute(pg)
            .await
            .map(|r| r.rows_affected()),
        (_, Some(lite)) => sqlx::query(SQL)
            .bind(portal)
            .bind(access)
            .bind(refresh)
            .execute(lite)
            .await
            .map(|r| r.rows_affected()),
        _ => unreachable!("a store has one pool"),
    };
    assert_eq!(changed.expect("raw update"), 1);
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Equal, but for the expiry's sub-millisecond digits that the database does not keep.
fn assert_same_tokens(stored: &OAuthTokens, expected: &OAuthTokens) {
    assert_eq!(stored.access_token.expose(), expected.access_token.expose());
    assert_eq!(
        stored.refresh_token.expose(),
        expected.refresh_token.expose()
    );
    assert_eq!(stored.portal_id, expected.portal_id);
    assert_eq!(stored.scopes, expected.scopes);
    let drift = (stored.expires_at - expected.expires_at).abs();
    assert!(
        drift < Duration::milliseconds(1),
        "expiry {} vs {}",
        stored.expires_at,
        expected.expires_at
    );
}

fn undecryptable(err: CredentialError) -> (TokenField, CryptoError) {
    match err {
        CredentialError::Undecryptable { field, source, .. } => (field, source),
        other => panic!("expected an undecryptable token, got {other:?}"),
    }
}

/// Tokens as comparable plain values: `Secret` has no `==` on purpose.
type TokensView = (String, String, DateTime<Utc>, Option<PortalId>, Vec<String>);

fn seen(tokens: Option<OAuthTokens>) -> Option<TokensView> {
    tokens.map(|t| {
        (
            t.access_token.expose().to_owned(),
            t.refresh_token.expose().to_owned(),
            t.expires_at,
            t.portal_id,
            t.scopes,
        )
    })
}

backend_tests! {
    async fn tokens_round_trip_through_the_database_and_are_stored_encrypted(db: TestDb) {
        let store = db.store().await;
        let tokens_store = DbTokenStore::new(store.clone(), cipher(1, &[]));
        assert!(tokens_store.load_tokens().await.unwrap().is_none(), "nothing stored yet");
        assert_eq!(tokens_store.status().await.unwrap(), ConnectionStatus::NotConnected);

        let saved = tokens(PORTAL, "a");
        tokens_store.save_tokens(&saved).await.unwrap();

        assert_eq!(seen(tokens_store.load_tokens().await.unwrap()), seen(Some(saved.clone())), "{db}");
        let row = ciphers_of(&store, PORTAL).await;
        let refresh = row.refresh_token_cipher.expect("refresh token stored");
        for bytes in [&row.access_token_cipher, &refresh] {
            assert!(!contains(bytes, "CLEARTEXT"), "a token is readable in the database");
            assert!(!contains(bytes, "access-a") && !contains(bytes, "refresh-a"));
        }
        assert_eq!(
            tokens_store.status().await.unwrap(),
            ConnectionStatus::Connected {
                portal_id: PORTAL,
                expires_at: saved.expires_at,
                scopes: saved.scopes.clone(),
            }
        );
        // The same through the trait the HubSpot client uses.
        let as_trait: Arc<dyn TokenStore> = Arc::new(tokens_store);
        assert_eq!(seen(as_trait.load().await.unwrap()), seen(Some(saved)));
    }

    async fn a_wrong_key_is_a_clear_error_never_garbage(db: TestDb) {
        let store = db.store().await;
        DbTokenStore::new(store.clone(), cipher(1, &[]))
            .save_tokens(&tokens(PORTAL, "a"))
            .await
            .unwrap();

        let wrong = DbTokenStore::new(store.clone(), cipher(2, &[]));
        let err = wrong.load_tokens().await.unwrap_err();
        let message = err.to_string();
        let (field, source) = undecryptable(err);
        assert_eq!(field, TokenField::AccessToken);
        assert!(
            matches!(&source, CryptoError::UnknownKey { key_id, .. } if *key_id == key(1).id()),
            "{source:?}"
        );
        assert!(message.contains(&key(1).id().to_string()), "names the key: {message}");
        assert!(message.contains("security.encryption_key"), "says what to set: {message}");

        // The client sees the same message, and a job can tell it will not pass by retrying.
        let through_client = HubSpotError::TokenStore(wrong.load().await.unwrap_err());
        assert_eq!(ConnectionProblem::of(&through_client), Some(ConnectionProblem::Unreadable));
    }

    async fn a_tampered_or_moved_ciphertext_is_refused(db: TestDb) {
        let store = db.store().await;
        let tokens_store = DbTokenStore::new(store.clone(), cipher(1, &[]));
        tokens_store.save_tokens(&tokens(OTHER_PORTAL, "other")).await.unwrap();
        tokens_store.save_tokens(&tokens(PORTAL, "a")).await.unwrap();
        let original = ciphers_of(&store, PORTAL).await;
        let refresh = original.refresh_token_cipher.clone().unwrap();

        // One flipped bit in the access token.
        let mut flipped = original.access_token_cipher.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        overwrite(&store, PORTAL, &flipped, &refresh).await;
        let (field, source) = undecryptable(tokens_store.load_tokens().await.unwrap_err());
        assert_eq!(field, TokenField::AccessToken);
        assert!(matches!(source, CryptoError::Tampered { .. }), "{source:?}");

        // The two tokens of a row swapped.
        overwrite(&store, PORTAL, &refresh, &original.access_token_cipher).await;
        let (_, source) = undecryptable(tokens_store.load_tokens().await.unwrap_err());
        assert!(matches!(source, CryptoError::Tampered { .. }), "{source:?}");

        // Another portal's tokens copied into this row.
        let other = ciphers_of(&store, OTHER_PORTAL).await;
        overwrite(&store, PORTAL, &other.access_token_cipher, &other.refresh_token_cipher.unwrap()).await;
        let (_, source) = undecryptable(tokens_store.load_tokens().await.unwrap_err());
        assert!(matches!(source, CryptoError::Tampered { .. }), "{source:?}");

        // Put back, it opens again.
        overwrite(&store, PORTAL, &original.access_token_cipher, &refresh).await;
        assert_eq!(seen(tokens_store.load_tokens().await.unwrap()), seen(Some(tokens(PORTAL, "a"))));
    }

    async fn a_refused_refresh_breaks_the_connection_until_the_app_is_installed_again(db: TestDb) {
        let store = db.store().await;
        let tokens_store = DbTokenStore::new(store.clone(), cipher(1, &[]));
        tokens_store.save_tokens(&tokens(PORTAL, "a")).await.unwrap();
        tokens_store.load_tokens().await.unwrap();

        assert_eq!(tokens_store.mark_refresh_refused().await.unwrap(), Some(PORTAL));

        let err = tokens_store.load_tokens().await.unwrap_err();
        assert!(matches!(err, CredentialError::Broken { portal_id } if portal_id == PORTAL), "{err:?}");
        assert!(err.to_string().contains("/api/install"), "says how to fix it: {err}");
        let through_client = HubSpotError::TokenStore(tokens_store.load().await.unwrap_err());
        assert_eq!(ConnectionProblem::of(&through_client), Some(ConnectionProblem::Broken));
        assert!(matches!(
            tokens_store.status().await.unwrap(),
            ConnectionStatus::Broken { portal_id, .. } if portal_id == PORTAL
        ));

        // Installing again stores new tokens and the connection works again.
        tokens_store.save_tokens(&tokens(PORTAL, "b")).await.unwrap();
        assert_eq!(seen(tokens_store.load_tokens().await.unwrap()), seen(Some(tokens(PORTAL, "b"))));
        assert!(matches!(tokens_store.status().await.unwrap(), ConnectionStatus::Connected { .. }));
    }

    async fn a_refusal_of_old_tokens_does_not_break_a_newer_installation(db: TestDb) {
        let store = db.store().await;
        let tokens_store = DbTokenStore::new(store.clone(), cipher(1, &[]));
        tokens_store.save_tokens(&tokens(PORTAL, "old")).await.unwrap();
        tokens_store.load_tokens().await.unwrap();
        // The app is installed again while a refresh of the old tokens is under way.
        tokens_store.save_tokens(&tokens(PORTAL, "new")).await.unwrap();

        assert!(tokens_store.mark_refresh_refused().await.unwrap().is_none());
        assert_eq!(seen(tokens_store.load_tokens().await.unwrap()), seen(Some(tokens(PORTAL, "new"))));
    }

    async fn rotating_the_key_reads_old_tokens_and_reencrypts_them(db: TestDb) {
        let store = db.store().await;
        let before = DbTokenStore::new(store.clone(), cipher(1, &[]));
        before.save_tokens(&tokens(OTHER_PORTAL, "other")).await.unwrap();
        before.save_tokens(&tokens(PORTAL, "a")).await.unwrap();

        // Step 1: the new key is current, the old one is listed as previous.
        let rotating = DbTokenStore::new(store.clone(), cipher(2, &[1]));
        assert_eq!(seen(rotating.load_tokens().await.unwrap()), seen(Some(tokens(PORTAL, "a"))));
        let report = rotating.reencrypt_stale().await.unwrap();
        assert_eq!(report.reencrypted, vec![OTHER_PORTAL, PORTAL], "by portal id");
        assert!(report.unreadable.is_empty());
        assert_eq!(rotating.reencrypt_stale().await.unwrap().current, 2, "nothing left to do");
        assert_eq!(
            rotating.status().await.unwrap(),
            ConnectionStatus::Connected {
                portal_id: PORTAL,
                expires_at: tokens(PORTAL, "a").expires_at,
                scopes: tokens(PORTAL, "a").scopes,
            },
            "re-encrypting does not change which connection is current"
        );

        // Step 2: the old key is dropped; everything still opens.
        let after = DbTokenStore::new(store.clone(), cipher(2, &[]));
        assert_eq!(seen(after.load_tokens().await.unwrap()), seen(Some(tokens(PORTAL, "a"))));
        assert_eq!(after.reencrypt_stale().await.unwrap().current, 2);

        // The old key alone no longer opens anything.
        let (_, source) = undecryptable(before.load_tokens().await.unwrap_err());
        assert!(matches!(source, CryptoError::UnknownKey { .. }), "{source:?}");
    }

    async fn tokens_without_a_portal_are_not_stored(db: TestDb) {
        let store = db.store().await;
        let tokens_store = DbTokenStore::new(store.clone(), cipher(1, &[]));
        let mut anonymous = tokens(PORTAL, "a");
        anonymous.portal_id = None;
        let err = tokens_store.save_tokens(&anonymous).await.unwrap_err();
        assert!(matches!(err, CredentialError::NoPortalId), "{err:?}");
        assert!(tokens_store.load_tokens().await.unwrap().is_none());
    }
}

// ---- with the HubSpot client, against the sandbox over HTTP --------------------------------

const REDIRECT: &str = "http://localhost:3001/oauth-callback";

async fn sandbox() -> SandboxHandle {
    let args = SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        rng_seed: Some(11),
        ..SandboxArgs::default()
    };
    Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("sandbox starts")
}

fn client(sb: &SandboxHandle, tokens: DbTokenStore) -> HubSpotClient {
    let mut config = ClientConfig::new(Url::parse(&sb.base_url()).expect("sandbox url"));
    config.backoff = Backoff {
        base: std::time::Duration::from_millis(5),
        max: std::time::Duration::from_millis(50),
    };
    let app = OAuthApp {
        client_id: sb.client_id().to_owned(),
        client_secret: Secret::new(sb.client_secret()),
        authorize_url: Url::parse(&sb.authorize_url()).expect("authorize url"),
        redirect_uri: Url::parse(REDIRECT).expect("redirect"),
        scopes: vec!["crm.objects.contacts.read".into()],
        optional_scopes: Vec::new(),
    };
    let auth = Auth::OAuth {
        app,
        tokens: Arc::new(tokens),
    };
    HubSpotClient::new(config, auth).expect("client")
}

backend_tests! {
    async fn many_callers_with_an_expired_token_share_one_refresh_saved_encrypted(db: TestDb) {
        let sb = sandbox().await;
        let store = db.store().await;
        let tokens_store = DbTokenStore::new(store.clone(), cipher(1, &[]));
        let installer = client(&sb, tokens_store.clone());
        let code = approve(&installer, "state-1").await;
        let installed = installer.connect(&code).await.expect("code exchange");
        assert_eq!(installed.portal_id, Some(PortalId(sb.portal_id())));
        assert_same_tokens(&tokens_store.load_tokens().await.unwrap().expect("stored"), &installed);

        // The stored access token has expired; a fresh process (empty cache) starts 20 jobs.
        let mut expired = installed.clone();
        expired.expires_at = Utc::now() - Duration::seconds(5);
        tokens_store.save_tokens(&expired).await.unwrap();
        let worker = client(&sb, tokens_store.clone());
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let worker = worker.clone();
                tokio::spawn(async move { worker.account_details().await })
            })
            .collect();
        for call in calls {
            call.await.expect("task").expect("call succeeds");
        }
        assert_eq!(worker.metrics().token_refreshes(), 1, "one refresh for twenty callers");
        let stored = tokens_store.load_tokens().await.unwrap().expect("still connected");
        assert!(stored.expires_at > Utc::now(), "the refreshed token was saved");
        assert_ne!(stored.access_token.expose(), installed.access_token.expose());
        let row = ciphers_of(&store, PortalId(sb.portal_id())).await;
        assert!(!contains(&row.access_token_cipher, stored.access_token.expose()));
    }

    async fn after_hubspot_refuses_the_refresh_token_jobs_fail_fast_without_calling_it(db: TestDb) {
        let sb = sandbox().await;
        let store = db.store().await;
        let tokens_store = DbTokenStore::new(store.clone(), cipher(1, &[]));
        // What an uninstalled app leaves behind: an expired access token, a revoked refresh token.
        let revoked = OAuthTokens {
            access_token: Secret::new("expired-access"),
            refresh_token: Secret::new("revoked-refresh"),
            expires_at: Utc::now() - Duration::seconds(1),
            portal_id: Some(PortalId(sb.portal_id())),
            scopes: Vec::new(),
        };
        tokens_store.save_tokens(&revoked).await.unwrap();
        let worker = client(&sb, tokens_store.clone());

        let first = worker.account_details().await.unwrap_err();
        assert!(matches!(first, HubSpotError::RefreshRefused { .. }), "{first:?}");
        assert_eq!(ConnectionProblem::of(&first), Some(ConnectionProblem::Broken));
        tokens_store.note_client_error(&first).await.unwrap();
        assert!(matches!(tokens_store.status().await.unwrap(), ConnectionStatus::Broken { .. }));

        let requests_before = sb.stats().requests;
        for _ in 0..3 {
            let err = worker.account_details().await.unwrap_err();
            assert_eq!(ConnectionProblem::of(&err), Some(ConnectionProblem::Broken), "{err:?}");
            assert!(err.to_string().contains("/api/install"), "{err}");
        }
        assert_eq!(sb.stats().requests, requests_before, "HubSpot was not called again");
    }
}
