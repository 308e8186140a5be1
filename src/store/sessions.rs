//! The `operator_sessions` table: the signed-in operator's browser sessions, kept as SHA-256
//! hashes of the cookie value. A session is live until it expires or is ended at logout;
//! time comparisons use the database's clock.

use super::{Store, StoreError, on_pool};

/// Sessions are deleted this long after they expired or ended.
const PRUNE_AFTER_SECS: i64 = 24 * 60 * 60;

impl Store {
    /// Records a new session valid for `lifetime_secs`, and prunes old ones.
    pub async fn open_operator_session(
        &self,
        session_hash: &str,
        lifetime_secs: i64,
    ) -> Result<(), StoreError> {
        const PG_OPEN: &str = "INSERT INTO operator_sessions (session_hash, expires_at)
             VALUES ($1, now() + make_interval(secs => $2))";
        const PG_PRUNE: &str = "DELETE FROM operator_sessions
              WHERE COALESCE(ended_at, expires_at) < now() - make_interval(secs => $1)";
        const SQLITE_OPEN: &str = "INSERT INTO operator_sessions (session_hash, expires_at)
             VALUES ($1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || $2 || ' seconds'))";
        const SQLITE_PRUNE: &str = "DELETE FROM operator_sessions
              WHERE COALESCE(ended_at, expires_at)
                    < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || $1 || ' seconds')";
        on_pool!(self, pool =>
            postgres: {
                sqlx::query(PG_OPEN)
                    .bind(session_hash)
                    .bind(lifetime_secs as f64)
                    .execute(pool)
                    .await?;
                sqlx::query(PG_PRUNE)
                    .bind(PRUNE_AFTER_SECS as f64)
                    .execute(pool)
                    .await?;
            },
            sqlite: {
                sqlx::query(SQLITE_OPEN)
                    .bind(session_hash)
                    .bind(lifetime_secs)
                    .execute(pool)
                    .await?;
                sqlx::query(SQLITE_PRUNE)
                    .bind(PRUNE_AFTER_SECS)
                    .execute(pool)
                    .await?;
            },
        );
        Ok(())
    }

    /// Whether the session is live: issued, not ended, not expired.
    pub async fn operator_session_is_live(&self, session_hash: &str) -> Result<bool, StoreError> {
        const PG: &str = "SELECT session_hash FROM operator_sessions
              WHERE session_hash = $1 AND ended_at IS NULL AND expires_at > now()";
        const SQLITE: &str = "SELECT session_hash FROM operator_sessions
              WHERE session_hash = $1 AND ended_at IS NULL
                AND expires_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";
        let live: Option<String> = on_pool!(self, pool =>
            postgres: sqlx::query_scalar(PG).bind(session_hash).fetch_optional(pool).await?,
            sqlite: sqlx::query_scalar(SQLITE).bind(session_hash).fetch_optional(pool).await?,
        );
        Ok(live.is_some())
    }

    /// Ends a session, so that its cookie is refused from now on even if replayed; `false`
    /// when no live session had that hash.
    pub async fn end_operator_session(&self, session_hash: &str) -> Result<bool, StoreError> {
        const PG: &str = "UPDATE operator_sessions SET ended_at = now()
              WHERE session_hash = $1 AND ended_at IS NULL";
        const SQLITE: &str =
            "UPDATE operator_sessions SET ended_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
              WHERE session_hash = $1 AND ended_at IS NULL";
        let ended = on_pool!(self, pool =>
            postgres: sqlx::query(PG).bind(session_hash).execute(pool).await?.rows_affected(),
            sqlite: sqlx::query(SQLITE).bind(session_hash).execute(pool).await?.rows_affected(),
        );
        Ok(ended > 0)
    }
}
