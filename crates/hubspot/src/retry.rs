//! Which calls may be repeated after which failures, and how long to wait between attempts.

use super::config::Backoff;
use std::fmt;
use std::time::Duration;

/// Every call the client makes; used for retry rules and as the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `GET /crm/v3/objects/contacts` (one page).
    ListContacts,
    /// `GET /crm/v3/objects/contacts/{id}`.
    GetContact,
    /// `POST /crm/v3/objects/contacts`.
    CreateContact,
    /// `PATCH /crm/v3/objects/contacts/{id}`.
    UpdateContact,
    /// `DELETE /crm/v3/objects/contacts/{id}`.
    ArchiveContact,
    /// `POST /crm/v3/objects/contacts/merge`.
    MergeContacts,
    /// `POST /crm/v3/objects/contacts/batch/read`.
    BatchRead,
    /// `POST /crm/v3/objects/contacts/batch/create`.
    BatchCreate,
    /// `POST /crm/v3/objects/contacts/batch/update`.
    BatchUpdate,
    /// `POST /crm/v3/objects/contacts/batch/upsert`.
    BatchUpsert,
    /// `POST /crm/v3/objects/contacts/batch/archive`.
    BatchArchive,
    /// `POST /crm/v3/objects/contacts/search`.
    Search,
    /// `POST /crm/v3/properties/contacts`.
    CreateProperty,
    /// `GET /crm/v3/properties/contacts/{name}`.
    GetProperty,
    /// `GET /account-info/v3/details`.
    AccountDetails,
    /// `GET /account-info/v3/api-usage/daily/private-apps`.
    DailyUsage,
    /// `POST` to the OAuth token endpoint (code exchange or refresh).
    OAuthToken,
    /// `GET /crm/v3/objects/companies` (one page).
    ListCompanies,
    /// `GET /crm/v3/objects/companies/{id}`.
    GetCompany,
    /// `POST /crm/v3/objects/companies`.
    CreateCompany,
    /// `PATCH /crm/v3/objects/companies/{id}`.
    UpdateCompany,
    /// `DELETE /crm/v3/objects/companies/{id}`.
    ArchiveCompany,
    /// `POST /crm/v3/objects/companies/merge`.
    MergeCompanies,
    /// `POST /crm/v3/objects/companies/batch/read`.
    BatchReadCompanies,
    /// `POST /crm/v3/objects/companies/batch/create`.
    BatchCreateCompanies,
    /// `POST /crm/v3/objects/companies/batch/update`.
    BatchUpdateCompanies,
    /// `POST /crm/v3/objects/companies/batch/upsert`.
    BatchUpsertCompanies,
    /// `POST /crm/v3/objects/companies/batch/archive`.
    BatchArchiveCompanies,
    /// `POST /crm/v3/objects/companies/search`.
    SearchCompanies,
    /// `POST /crm/v3/properties/{object}/groups`.
    CreatePropertyGroup,
    /// `GET /crm/v3/properties/{object}/groups/{name}`.
    GetPropertyGroup,
    /// `POST /crm/v4/associations/{from}/{to}/batch/read`.
    ReadAssociations,
    /// `POST /crm/v4/associations/{from}/{to}/batch/create`.
    CreateAssociations,
    /// `POST /crm/v4/associations/{from}/{to}/batch/archive`.
    ArchiveAssociations,
    /// `POST /crm/v4/associations/{from}/{to}/batch/labels/archive`.
    ArchiveAssociationLabels,
}

/// Which of HubSpot's rate budgets a call spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// The app's rolling 10-second budget.
    TenSecondly,
    /// The token's per-second search budget (searches are exempt from the 10-second one).
    Search,
    /// The associations API's own 10-second budget (its batch calls are exempt from the
    /// general one).
    Associations,
}

/// Whether a call may be sent again when its answer was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Repeating it cannot change the outcome: reads, updates, upserts, archives, and
    /// property creation (a repeat is refused with 409, never a second property).
    Safe,
    /// Repeating it may apply it twice (creates, merges): a lost answer is
    /// [`HubSpotError::Ambiguous`](super::HubSpotError::Ambiguous).
    NotIdempotent,
}

impl Operation {
    /// The operations of contacts, properties, account info and OAuth, in metrics order;
    /// [`Operation::COMPANIES`] lists those of companies, property groups and associations,
    /// and [`Operation::every`] both.
    pub const ALL: [Operation; 17] = [
        Self::ListContacts,
        Self::GetContact,
        Self::CreateContact,
        Self::UpdateContact,
        Self::ArchiveContact,
        Self::MergeContacts,
        Self::BatchRead,
        Self::BatchCreate,
        Self::BatchUpdate,
        Self::BatchUpsert,
        Self::BatchArchive,
        Self::Search,
        Self::CreateProperty,
        Self::GetProperty,
        Self::AccountDetails,
        Self::DailyUsage,
        Self::OAuthToken,
    ];

    /// The operations of companies, property groups and associations, in metrics order.
    pub const COMPANIES: [Operation; 18] = [
        Self::ListCompanies,
        Self::GetCompany,
        Self::CreateCompany,
        Self::UpdateCompany,
        Self::ArchiveCompany,
        Self::MergeCompanies,
        Self::BatchReadCompanies,
        Self::BatchCreateCompanies,
        Self::BatchUpdateCompanies,
        Self::BatchUpsertCompanies,
        Self::BatchArchiveCompanies,
        Self::SearchCompanies,
        Self::CreatePropertyGroup,
        Self::GetPropertyGroup,
        Self::ReadAssociations,
        Self::CreateAssociations,
        Self::ArchiveAssociations,
        Self::ArchiveAssociationLabels,
    ];

    /// Every operation, in metrics order.
    pub fn every() -> impl Iterator<Item = Operation> {
        Self::ALL.into_iter().chain(Self::COMPANIES)
    }

    /// A stable snake_case name (metrics label, logs).
    pub fn name(self) -> &'static str {
        match self {
            Self::ListContacts => "list_contacts",
            Self::GetContact => "get_contact",
            Self::CreateContact => "create_contact",
            Self::UpdateContact => "update_contact",
            Self::ArchiveContact => "archive_contact",
            Self::MergeContacts => "merge_contacts",
            Self::BatchRead => "batch_read",
            Self::BatchCreate => "batch_create",
            Self::BatchUpdate => "batch_update",
            Self::BatchUpsert => "batch_upsert",
            Self::BatchArchive => "batch_archive",
            Self::Search => "search",
            Self::CreateProperty => "create_property",
            Self::GetProperty => "get_property",
            Self::AccountDetails => "account_details",
            Self::DailyUsage => "daily_usage",
            Self::OAuthToken => "oauth_token",
            Self::ListCompanies => "list_companies",
            Self::GetCompany => "get_company",
            Self::CreateCompany => "create_company",
            Self::UpdateCompany => "update_company",
            Self::ArchiveCompany => "archive_company",
            Self::MergeCompanies => "merge_companies",
            Self::BatchReadCompanies => "batch_read_companies",
            Self::BatchCreateCompanies => "batch_create_companies",
            Self::BatchUpdateCompanies => "batch_update_companies",
            Self::BatchUpsertCompanies => "batch_upsert_companies",
            Self::BatchArchiveCompanies => "batch_archive_companies",
            Self::SearchCompanies => "search_companies",
            Self::CreatePropertyGroup => "create_property_group",
            Self::GetPropertyGroup => "get_property_group",
            Self::ReadAssociations => "read_associations",
            Self::CreateAssociations => "create_associations",
            Self::ArchiveAssociations => "archive_associations",
            Self::ArchiveAssociationLabels => "archive_association_labels",
        }
    }

    /// Whether the call may be repeated after a lost answer.
    pub fn retry_class(self) -> RetryClass {
        match self {
            Self::CreateContact
            | Self::MergeContacts
            | Self::BatchCreate
            | Self::CreateCompany
            | Self::MergeCompanies
            | Self::BatchCreateCompanies => RetryClass::NotIdempotent,
            // Writing association types sets the pair's labels to the same list again, and
            // a repeated group create is refused with 409: repeats change nothing.
            _ => RetryClass::Safe,
        }
    }

    /// Search calls count against the search limit only.
    pub fn is_search(self) -> bool {
        self.budget() == Budget::Search
    }

    /// The budget the call spends.
    pub fn budget(self) -> Budget {
        match self {
            Self::Search | Self::SearchCompanies => Budget::Search,
            Self::ReadAssociations
            | Self::CreateAssociations
            | Self::ArchiveAssociations
            | Self::ArchiveAssociationLabels => Budget::Associations,
            _ => Budget::TenSecondly,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The wait before retry number `retry` (1-based): exponential from `base`, capped at `max`,
/// with jitter so that many callers do not come back in step.
pub(crate) fn backoff_delay(backoff: &Backoff, retry: u32) -> Duration {
    let exponent = retry.saturating_sub(1).min(16);
    let full = backoff
        .base
        .saturating_mul(1u32 << exponent)
        .min(backoff.max);
    // "Equal jitter": at least half the step, so retries still slow down under failure.
    full.mul_f64(rand::random_range(0.5..=1.0))
}

/// `Retry-After` as seconds or as an HTTP date.
pub(crate) fn parse_retry_after(
    value: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn only_creates_and_merges_are_not_idempotent() {
        let not_idempotent: Vec<_> = Operation::every()
            .filter(|op| op.retry_class() == RetryClass::NotIdempotent)
            .collect();
        assert_eq!(
            not_idempotent,
            vec![
                Operation::CreateContact,
                Operation::MergeContacts,
                Operation::BatchCreate,
                Operation::CreateCompany,
                Operation::MergeCompanies,
                Operation::BatchCreateCompanies,
            ]
        );
    }

    #[test]
    fn every_operation_has_a_name_of_its_own() {
        let names: std::collections::BTreeSet<&str> =
            Operation::every().map(|op| op.name()).collect();
        assert_eq!(
            names.len(),
            Operation::every().count(),
            "metric labels never collide"
        );
    }

    #[test]
    fn searches_and_association_batches_spend_budgets_of_their_own() {
        assert_eq!(Operation::SearchCompanies.budget(), Budget::Search);
        assert!(Operation::Search.is_search());
        assert_eq!(Operation::ReadAssociations.budget(), Budget::Associations);
        assert_eq!(
            Operation::BatchCreateCompanies.budget(),
            Budget::TenSecondly
        );
    }

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_stays_capped() {
        let backoff = Backoff {
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        };
        for _ in 0..50 {
            let first = backoff_delay(&backoff, 1);
            assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
            let third = backoff_delay(&backoff, 3);
            assert!(third >= Duration::from_millis(400) && third <= Duration::from_millis(800));
            let late = backoff_delay(&backoff, 30);
            assert!(late >= Duration::from_millis(2500) && late <= Duration::from_secs(5));
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 11, 28, 10, 0, 0)
            .unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sat, 28 Nov 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sat, 28 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
