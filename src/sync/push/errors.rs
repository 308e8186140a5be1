//! How failures that stop a push page map to the queue's [`RunError`].
//!
//! HubSpot failures go through the sync engine's shared rule ([`hubspot_error`]: transient for
//! 429s the client could not get past, 5xx and network failures after its retries, lost write
//! answers, unreadable answers; fatal for refused credentials or scopes and refused requests),
//! with two cases the push decides differently:
//! - the account's daily limit is fatal: it resets at midnight in the account's time zone,
//!   far beyond the queue's retries, and the contacts not pushed yet stay candidates for the
//!   next job;
//! - an access token still expired after the client's own refresh is transient: a refresh is
//!   the cure and the next run makes one (a token HubSpot does not know stays fatal).
//!
//! Database failures: blips are transient, and so is a unique violation while saving a page
//! (see [`from_store`]); anything else is fatal.

use crate::hubspot::{HubSpotError, RateLimitPolicy};
use crate::jobs::{RunError, RunFailure};
use crate::store::StoreError;
use crate::sync::hubspot_error;

/// A HubSpot failure that ends the run.
pub(super) fn from_hubspot(error: HubSpotError) -> RunError {
    match error {
        HubSpotError::RateLimited {
            policy: RateLimitPolicy::Daily,
            ..
        } => RunError::Fatal(RunFailure::caused_by(
            "HubSpot's daily API limit is reached; the contacts not pushed yet stay candidates \
             for the next push after the limit resets",
            error,
        )),
        HubSpotError::Unauthorized { expired: true, .. } => {
            RunError::Transient(RunFailure::caused_by("pushing contacts", error))
        }
        other => hubspot_error("pushing contacts", other),
    }
}

/// A database failure while saving a page. A unique violation here means another writer linked
/// a row to the same HubSpot contact between the page's check and its update: the page is
/// rolled back and the job retried, when the check sees that writer's row.
pub(super) fn from_store(error: StoreError) -> RunError {
    if is_unique_violation(&error) {
        return RunError::Transient(RunFailure::caused_by(
            "another writer linked a contact concurrently; the page will be saved again",
            error,
        ));
    }
    error.into()
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
