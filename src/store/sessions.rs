//! The `operator_sessions` table: the signed-in operator's browser sessions, kept as SHA-256
//! hashes of the cookie value. A session is live until it expires or is ended at logout;
//! time comparisons use the database's clock.

use super::{Store, StoreError};

/// Sessions are deleted this long after they expired or ended.
const PRUNE_AFTER_SECS: i64 = 24 * 60 * 60;

impl Store {
    /// Records a new session valid for `lifetime_secs`, and prunes old ones.
    pub async fn open_operator_session(
        &self,
        session_hash: &str,
        lifetime_secs: i64,
    ) -> Result<(), StoreError> {
        if let Some(pool) = self.pg_pool() {
            sqlx::query(
                "INSERT INTO operator_sessions (session_hash, expires_at)
                 VALUES ($1, now() + make_interval(secs => $2))",
            )
            .bind(session_hash)
            .bind(lifetime_secs as f64)
            .execute(pool)
            .await?;
            sqlx::query(
                "DELETE FROM operator_sessions
                  WHERE COALESCE(ended_at, expires_at) < now() - make_interval(secs => $1)",
            )
            .bind(PRUNE_AFTER_SECS as f64)
            .execute(pool)
            .await?;
        } else if let Some(pool) = self.sqlite_pool() {
            sqlx::query(
                "INSERT INTO operator_sessions (session_hash, expires_at)
                 VALUES ($1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || $2 || ' seconds'))",
            )
            .bind(session_hash)
            .bind(lifetime_secs)
            .execute(pool)
            .await?;
            sqlx::query(
                "DELETE FROM operator_sessions
                  WHERE COALESCE(ended_at, expires_at)
                        < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-' || $1 || ' seconds')",
            )
            .bind(PRUNE_AFTER_SECS)
            .execute(pool)
            .await?;
        }
        Ok(())
    }

    /// Whether the session is live: issued, not ended, not expired.
    pub async fn operator_session_is_live(&self, session_hash: &str) -> Result<bool, StoreError> {
        let live: Option<String> = if let Some(pool) = self.pg_pool() {
            sqlx::query_scalar(
                "SELECT session_hash FROM operator_sessions
                  WHERE session_hash = $1 AND ended_at IS NULL AND expires_at > now()",
            )
            .bind(session_hash)
            .fetch_optional(pool)
            .await?
        } else if let Some(pool) = self.sqlite_pool() {
            sqlx::query_scalar(
                "SELECT session_hash FROM operator_sessions
                  WHERE session_hash = $1 AND ended_at IS NULL
                    AND expires_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            )
            .bind(session_hash)
            .fetch_optional(pool)
            .await?
        } else {
            None
        };
        Ok(live.is_some())
    }

    /// Ends a session, so that its cookie is refused from now on even if replayed; `false`
    /// when no live session had that hash.
    pub async fn end_operator_session(&self, session_hash: &str) -> Result<bool, StoreError> {
        let ended = if let Some(pool) = self.pg_pool() {
            sqlx::query(
                "UPDATE operator_sessions SET ended_at = now()
                  WHERE session_hash = $1 AND ended_at IS NULL",
            )
            .bind(session_hash)
            .execute(pool)
            .await?
            .rows_affected()
        } else if let Some(pool) = self.sqlite_pool() {
            sqlx::query(
                "UPDATE operator_sessions SET ended_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                  WHERE session_hash = $1 AND ended_at IS NULL",
            )
            .bind(session_hash)
            .execute(pool)
            .await?
            .rows_affected()
        } else {
            0
        };
        Ok(ended > 0)
    }
}
