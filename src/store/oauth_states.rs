//! The `oauth_states` table: hashes of the OAuth `state` values the operator was issued (see
//! `crate::oauth::state` for what they mean). Every time comparison uses the database's
//! clock, so that processes with skewed clocks agree.

use super::{Store, StoreError, on_pool};

/// What `browser_hash` holds for a state issued on the command line: not a SHA-256 hex digest,
/// so no cookie can ever match it (such a state is not bound to a browser at all).
const UNBOUND: &str = "-";

/// Who may complete the callback of a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateBinding<'a> {
    /// Only the browser whose nonce hashes to this value (the install page's states).
    Browser(&'a str),
    /// Whoever opens the link (`crm-sync connect`: the operator prints it on their terminal).
    Unbound,
}

/// What the database says about a state that could not be consumed.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct StateFacts {
    /// The state was issued to this browser, or to no browser in particular.
    pub browser_matches: bool,
    /// Its lifetime is over.
    pub expired: bool,
    /// A callback consumed it already.
    pub used: bool,
}

impl Store {
    /// Stores a state hash valid for `lifetime_secs`, and prunes states that expired more than
    /// `prune_after_secs` ago.
    pub async fn insert_oauth_state(
        &self,
        state_hash: &str,
        binding: StateBinding<'_>,
        lifetime_secs: i64,
        prune_after_secs: i64,
    ) -> Result<(), StoreError> {
        let (browser_hash, bound) = match binding {
            StateBinding::Browser(hash) => (hash, true),
            StateBinding::Unbound => (UNBOUND, false),
        };
        const PG_INSERT: &str =
            "INSERT INTO oauth_states (state_hash, browser_hash, browser_bound, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4))";
        const PG_PRUNE: &str =
            "DELETE FROM oauth_states WHERE expires_at < now() - make_interval(secs => $1)";
        const SQLITE_INSERT: &str =
            "INSERT INTO oauth_states (state_hash, browser_hash, browser_bound, expires_at)
             VALUES ($1, $2, $3, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || $4 || ' seconds'))";
        const SQLITE_PRUNE: &str = "DELETE FROM oauth_states
              WHERE expires_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || $1 || ' seconds')";
        on_pool!(self, pool =>
            postgres: {
                sqlx::query(PG_INSERT)
                    .bind(state_hash)
                    .bind(browser_hash)
                    .bind(bound)
                    .bind(lifetime_secs as f64)
                    .execute(pool)
                    .await?;
                sqlx::query(PG_PRUNE)
                    .bind(prune_after_secs as f64)
                    .execute(pool)
                    .await?;
            },
            sqlite: {
                sqlx::query(SQLITE_INSERT)
                    .bind(state_hash)
                    .bind(browser_hash)
                    .bind(bound)
                    .bind(lifetime_secs)
                    .execute(pool)
                    .await?;
                sqlx::query(SQLITE_PRUNE)
                    .bind(prune_after_secs)
                    .execute(pool)
                    .await?;
            },
        );
        Ok(())
    }

    /// Marks the state used when it is unused, unexpired, and either issued to the browser
    /// whose nonce hashes to `browser_hash` or not bound to a browser. One conditional
    /// `UPDATE ... RETURNING`, so two racing callbacks cannot both get `true`.
    pub async fn consume_oauth_state(
        &self,
        state_hash: &str,
        browser_hash: &str,
    ) -> Result<bool, StoreError> {
        const PG: &str = "UPDATE oauth_states SET used_at = now()
              WHERE state_hash = $1 AND (browser_hash = $2 OR NOT browser_bound)
                AND used_at IS NULL AND expires_at > now()
             RETURNING state_hash";
        const SQLITE: &str =
            "UPDATE oauth_states SET used_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
              WHERE state_hash = $1 AND (browser_hash = $2 OR NOT browser_bound)
                AND used_at IS NULL
                AND expires_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
             RETURNING state_hash";
        let sql = on_pool!(self, _pool => postgres: PG, sqlite: SQLITE);
        let consumed: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar(sql)
                .bind(state_hash)
                .bind(browser_hash)
                .fetch_optional(pool)
                .await?
        });
        Ok(consumed.is_some())
    }

    /// Why a state was not consumed; `None` when it was never issued (or pruned long ago).
    pub async fn oauth_state_facts(
        &self,
        state_hash: &str,
        browser_hash: &str,
    ) -> Result<Option<StateFacts>, StoreError> {
        const PG: &str = "SELECT (browser_hash = $2 OR NOT browser_bound) AS browser_matches,
                    expires_at <= now() AS expired, used_at IS NOT NULL AS used
               FROM oauth_states WHERE state_hash = $1";
        const SQLITE: &str = "SELECT (browser_hash = $2 OR NOT browser_bound) AS browser_matches,
                    expires_at <= strftime('%Y-%m-%dT%H:%M:%fZ', 'now') AS expired,
                    used_at IS NOT NULL AS used
               FROM oauth_states WHERE state_hash = $1";
        let sql = on_pool!(self, _pool => postgres: PG, sqlite: SQLITE);
        let facts = on_pool!(self, pool => {
            sqlx::query_as(sql)
                .bind(state_hash)
                .bind(browser_hash)
                .fetch_optional(pool)
                .await?
        });
        Ok(facts)
    }
}
