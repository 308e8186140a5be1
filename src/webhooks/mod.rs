//! HubSpot webhooks, without the HTTP route: the v3 signature check, the event model, and the
//! local effects of a batch (dedupe of redeliveries, deletions, merges).
//!
//! The route (`POST /webhooks/hubspot`) is expected to: rebuild the URI from
//! `server.public_url` + path and query, call [`verify_v3`] (401 on any error, nothing
//! recorded), [`parse_batch`] the body, [`process_events`], answer 200, and hand what the
//! outcome names — [`BatchOutcome::to_pull`] (contacts), `companies_changed` (companies) and
//! `associations_to_read` (contacts whose associations changed) — to the sync engine as
//! targeted reads (recorded durably through [`record_pending`], each with its
//! [`PendingObject`], until the webhook pull job, `crate::sync::webhook_pull`, reads and
//! clears them).

mod echoes;
mod effects;
mod events;
mod pending;
mod signature;

pub use echoes::{Echo, echo_of};
pub use effects::{BatchOutcome, process_events};
pub use events::{
    AssociationChange, BatchError, ChangeSource, EventKind, MalformedEvent, Merge, ParsedBatch,
    WebhookEvent, count_own_echoes, parse_batch,
};
pub use pending::{
    PendingObject, PendingPull, clear_pending_pulls, clear_pulled, count_pending_pulls,
    pending_pulls, record_pending, record_pending_pulls, take_pending_pulls,
};
pub use signature::{
    MAX_SKEW_MS, SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER, canonical_uri, sign_v3,
    verify_v3,
};
