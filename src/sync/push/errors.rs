//! How failures that stop a push page map to the queue's [`RunError`].
//!
//! Transient (the queue retries the job from its checkpoint): HubSpot 5xx and network failures
//! after the client's own retries, 429s the client could not get past, a write whose answer was
//! lost and stayed ambiguous after re-reading, answers HubSpot does not document (a proxy's
//! error page), an access token still expired after the client's refresh, and database blips.
//! Fatal (the job fails with the reason): refused credentials
//! or scopes, a broken OAuth connection, the account's daily limit (it resets at midnight in
//! the account's time zone, far beyond the queue's retries; the next job pushes the rest), and
//! whole-request refusals that repeating cannot fix.

use crate::hubspot::{HubSpotError, RateLimitPolicy};
use crate::jobs::RunError;
use crate::store::StoreError;
use crate::store::jobs::is_transient;

/// A HubSpot failure that ends the run.
pub(super) fn from_hubspot(error: HubSpotError) -> RunError {
    match error {
        HubSpotError::RateLimited {
            policy: RateLimitPolicy::Daily,
            ..
        } => RunError::Fatal(format!(
            "HubSpot's daily API limit is reached; the contacts not pushed yet stay candidates \
             for the next push after the limit resets: {error}"
        )),
        // An access token that expired again right after its refresh (a refresh is the cure,
        // and the next run makes one); a token HubSpot does not know at all is fatal below.
        HubSpotError::Unauthorized { expired: true, .. }
        | HubSpotError::RateLimited { .. }
        | HubSpotError::Transient { .. }
        | HubSpotError::Ambiguous { .. }
        | HubSpotError::UnexpectedResponse { .. }
        | HubSpotError::TokenStore(_) => RunError::Transient(error.to_string()),
        HubSpotError::Unauthorized { .. }
        | HubSpotError::Forbidden { .. }
        | HubSpotError::RefreshRefused { .. }
        | HubSpotError::NotConnected
        | HubSpotError::InvalidRequest(_)
        | HubSpotError::Conflict { .. }
        | HubSpotError::Validation { .. }
        | HubSpotError::NotFound { .. }
        | HubSpotError::Other { .. } => RunError::Fatal(error.to_string()),
    }
}

/// A database failure while saving a page. A unique violation here means another writer linked
/// a row to the same HubSpot contact between the page's check and its update: the page is
/// rolled back and the job retried, when the check sees that writer's row.
pub(super) fn from_store(error: StoreError) -> RunError {
    if is_unique_violation(&error) {
        return RunError::Transient(format!(
            "another writer linked a contact concurrently; the page will be saved again: {error}"
        ));
    }
    if is_transient(&error) {
        RunError::Transient(error.to_string())
    } else {
        RunError::Fatal(error.to_string())
    }
}

fn is_unique_violation(error: &StoreError) -> bool {
    match error {
        StoreError::Query(sqlx::Error::Database(db)) => {
            // PostgreSQL 23505; SQLite 2067 (SQLITE_CONSTRAINT_UNIQUE) and 1555 (primary key).
            matches!(db.code().as_deref(), Some("23505" | "2067" | "1555"))
        }
        _ => false,
    }
}
