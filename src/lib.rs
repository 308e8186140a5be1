//! crm-sync keeps a product database's contacts in sync with HubSpot.
//!
//! The path of the data: an API request or schedule ([`api`], [`jobs`]) enqueues a job,
//! a worker runs it ([`sync`]) through the HubSpot client ([`hubspot`]) page by page, and
//! writes rows and per-job counts through the [`store`]. `docs/architecture.md` draws the
//! crates and modules.
//!
//! The binary wires these together (`crm-sync serve`); the library is what it and the tests
//! use. Queueing a push by hand, on an SQLite file:
//!
//! ```
//! use crm_sync::jobs::model::{JobSpec, JobStatus, Trigger};
//! use crm_sync::jobs::queue::{EnqueueRequest, enqueue};
//! use crm_sync::store::{NewContact, Store};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = Store::connect(&format!("sqlite://{}", dir.path().join("crm.db").display())).await?;
//! store.migrate().await?;
//! let ada = NewContact {
//!     email: Some("ada@example.com".to_owned()),
//!     first_name: Some("Ada".to_owned()),
//!     last_name: Some("Lovelace".to_owned()),
//! };
//! store.insert_contacts(&[ada]).await?;
//! let request = EnqueueRequest { spec: JobSpec::push(), trigger: Trigger::Cli, force: false };
//! let job = enqueue(&store, request).await?.job;
//! // A worker (`crm-sync serve` or `crm-sync worker`) picks it up from here.
//! assert_eq!(job.status, JobStatus::Queued);
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod args;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod defaults;
pub mod ids;
pub mod jobs;
pub mod mapping;
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
