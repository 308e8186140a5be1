//! The HubSpot HTTP client: typed calls for contacts, companies, associations (v4),
//! properties and property groups, account info and OAuth,
//! with client-side rate limits, retries that never duplicate a write, token refresh and
//! metrics.
//!
//! Entry point: [`HubSpotClient::new`] with a [`ClientConfig`] and an [`Auth`]. The client is
//! cheap to clone; all clones share one connection pool, one rate budget, one token cache
//! and one set of [`ClientMetrics`].
//!
//! Retry rules (see [`Operation::retry_class`]):
//! - every call is retried after a 429 (as HubSpot's answer says), a 423 or 477, a 5xx that
//!   HubSpot itself refused with, and a connection that could not be opened;
//! - reads and idempotent writes (batch update/upsert/archive, property create) are also
//!   retried after timeouts, dropped connections and gateway errors (502/504);
//! - creates and merges are not: when the answer is lost after the request may have been
//!   applied, the call fails with [`HubSpotError::Ambiguous`] so the caller can re-read first.
//!
//! The crate depends on nothing else of crm-sync; the service, its tests and its benchmarks
//! use it as `crm_sync::hubspot`. With the `sqlx` feature, [`ids::HsObjectId`] and
//! [`ids::PortalId`] are SQL values.
//!
//! ```no_run
//! use crm_sync_hubspot::secret::Secret;
//! use crm_sync_hubspot::{Auth, Batch, ClientConfig, HubSpotClient};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = ClientConfig::new("https://api.hubapi.com".parse()?);
//! config.requests_per_10s = 100; // the app's budget, shared by every clone
//! let client = HubSpotClient::new(config, Auth::PrivateApp(Secret::new("pat-na1-…")))?;
//! let account = client.account_details().await?;
//! println!("connected to portal {}", account.portal_id);
//! let ids = Batch::new(vec!["101".to_owned(), "102".to_owned()])?;
//! let wanted = ["email".to_owned(), "firstname".to_owned()];
//! let read = client.batch_read(&ids, None, &wanted).await?;
//! println!("{} contacts read, {} not found", read.results.len(), read.missing.len());
//! # Ok(())
//! # }
//! ```

mod associations;
mod auth;
mod batch;
mod client;
mod companies;
mod config;
mod contacts;
mod error;
pub mod ids;
mod metrics;
mod models;
mod oauth;
mod properties;
mod ratelimit;
mod retry;
pub mod secret;
pub mod values;

pub use associations::{
    AssociatedRecord, AssociationArchive, AssociationCategory, AssociationInput, AssociationLabel,
    AssociationLabels, AssociationReadInput, AssociationReadOutcome, AssociationSpec,
    AssociationTypeId, CompanyLink, ContactCompanyLink, MAX_ASSOCIATION_READ, RecordAssociations,
};
pub use auth::{AccessTokenInfo, Auth, MemoryTokenStore, StoreFuture, TokenStore};
pub use batch::{
    Batch, BatchItemError, BatchOutcome, BatchReadOutcome, BatchTooLarge, IndexedResult, MAX_BATCH,
};
pub use client::{ForegroundWork, HubSpotClient};
pub use config::{Backoff, ClientConfig, Timeouts};
pub use error::{
    ApiErrorDetails, ErrorDetail, HubSpotError, InvalidProperty, RateLimitPolicy, TokenStoreError,
};
pub use metrics::{ClientMetrics, RetryReason};
pub use models::{
    AccountDetails, ApiUsage, Company, CompanyCreate, CompanyUpdate, CompanyUpsert, Contact,
    ContactCreate, ContactUpdate, ContactUpsert, FieldType, Filter, FilterGroup, FilterOperator,
    InvalidFieldType, ListCompanies, ListContacts, ListObjects, MAX_PAGE_LIMIT, MAX_SEARCH_LIMIT,
    ObjectCreate, ObjectType, ObjectUpdate, ObjectUpsert, Page, Property, PropertyCreate,
    PropertyGroup, PropertyGroupCreate, PropertyKind, PropertyOption, SearchPage, SearchRequest,
    Sort, SortDirection, UpsertedCompany, UpsertedContact,
};
pub use oauth::{OAuthApp, OAuthFlow, OAuthTokens, TOKEN_PATH};
pub use ratelimit::SlidingWindow;
pub use retry::{Budget, Operation, RetryClass};
