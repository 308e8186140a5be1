//! crm-sync keeps a product database's contacts in sync with HubSpot.
//!
//! The path of the data: an API request or schedule ([`api`], [`jobs`]) enqueues a job,
//! a worker runs it ([`sync`]) through the HubSpot client ([`hubspot`]) page by page, and
//! writes rows and per-job counts through the [`store`].

pub mod api;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod defaults;
pub mod ids;
pub mod jobs;
pub mod model;
pub mod oauth;
pub mod secret_files;
pub mod seed;
pub mod startup;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod webhooks;

/// The HubSpot client (crate `crm-sync-hubspot`).
pub use crm_sync_hubspot as hubspot;
/// Secrets that never reach a log line (from the HubSpot client crate).
pub use crm_sync_hubspot::secret;
/// The offline HubSpot (crate `crm-sync-sandbox`).
pub use crm_sync_sandbox as sandbox;
