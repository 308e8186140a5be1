//! `POST /webhooks/hubspot`: HubSpot's webhook deliveries.
//!
//! The v3 signature is checked over `server.public_url` + the request's raw path and query
//! (INTERFACE §4.2) before anything else: an unsigned, badly signed or stale request is a 401
//! and changes nothing. Events about another HubSpot account than the connected one are
//! acknowledged and ignored (counted in `crm_sync_webhook_events_ignored_total`). A verified batch is deduplicated and its deletions and merges applied
//! ([`crate::webhooks::process_events`]); the records it names are recorded durably as pending
//! pulls, and a webhook pull job (trigger `webhook`, [`crate::sync::webhook_pull`]) is made
//! sure to be active (one insert-if-absent) to read just those records, so the answer is quick
//! and the HubSpot reads happen in the job. Echoes need no read ([`crate::webhooks::echo_of`]).
//! A failure before the answer is a 5xx, and the batch's events are forgotten again so that
//! HubSpot's redelivery is processed in full.

use chrono::Utc;
use poem::Request;
use poem::http::StatusCode;
use poem_openapi::Object;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::metrics::{IgnoredReason, RejectedReason};
use crate::jobs::queue;
use crate::jobs::{Job, QueueError};
use crate::oauth::account::{AccountError, connected_account};
use crate::store::Store;
use crate::webhooks::{
    BatchError, BatchOutcome, PendingObject, SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookEvent,
    count_own_echoes, parse_batch, process_events, record_pending, verify_v3,
};

/// The path HubSpot posts to.
pub const WEBHOOK_PATH: &str = "/webhooks/hubspot";

/// What a delivery did; HubSpot ignores the body, it helps whoever debugs a delivery.
#[derive(Debug, Object)]
pub struct WebhookAnswer {
    /// Events in the request.
    pub received: usize,
    /// Events about another HubSpot account than the connected one (or arriving while none
    /// is connected): acknowledged, never applied.
    pub ignored: usize,
    /// Events seen for the first time.
    pub new_events: usize,
    /// Redelivered events, ignored.
    pub duplicates: usize,
    /// Elements of the array that were not usable events (skipped).
    pub malformed: usize,
    /// Local contacts unlinked because HubSpot deleted their record.
    pub unlinked: usize,
    /// Merges applied.
    pub merges: usize,
    /// HubSpot contacts queued for a pull.
    pub to_pull: usize,
    /// HubSpot companies queued for a pull (created, changed or restored by others, not
    /// linked locally).
    pub companies_to_pull: usize,
    /// HubSpot contacts whose company associations are queued for a read.
    pub associations_to_read: usize,
    /// Creations and property changes that need no read: echoes of this app's own writes, or
    /// changes the local rows already hold (docs/webhooks.md).
    pub echoes: usize,
    /// The webhook pull that will read them: queued now, or the one already active (at most
    /// one is). Null when there is nothing to read.
    #[oai(nullable)]
    pub job_id: Option<String>,
}

/// `POST /webhooks/hubspot`.
pub(crate) async fn hubspot_webhook(
    req: &Request,
    state: &AppState,
    body: Vec<u8>,
) -> Result<WebhookAnswer, ApiError> {
    let Some(secret) = &state.oauth.client_secret else {
        state
            .metrics
            .webhooks()
            .record_rejected(RejectedReason::NoSecret);
        tracing::warn!("a webhook arrived but hubspot.client_secret is not set to verify it");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidSignature,
            "webhook signatures cannot be checked: hubspot.client_secret is not set",
        ));
    };
    let uri = signed_uri(state, req);
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    if let Err(e) = verify_v3(
        req.method().as_str(),
        &uri,
        &body,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        secret,
        Utc::now(),
    ) {
        state
            .metrics
            .webhooks()
            .record_rejected(RejectedReason::BadSignature);
        tracing::warn!(reason = %e, "webhook refused");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidSignature,
            e.to_string(),
        ));
    }
    // The API's rule for bad input: not JSON is a 400, JSON of the wrong shape a 422.
    // Most deliveries during a push: echoes of its own writes only, answered in one pass.
    if let Some(echoes) = count_own_echoes(&body) {
        state.metrics.webhooks().record_batch(echoes, 0);
        tracing::info!(received = echoes, echoes, "webhook batch processed");
        return Ok(WebhookAnswer {
            received: echoes,
            ignored: 0,
            new_events: 0,
            duplicates: 0,
            malformed: 0,
            unlinked: 0,
            merges: 0,
            to_pull: 0,
            companies_to_pull: 0,
            associations_to_read: 0,
            echoes,
            job_id: None,
        });
    }
    let batch = parse_batch(&body).map_err(|e| match e {
        BatchError::NotJson(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBody,
            e.to_string(),
        ),
        BatchError::NotAnArray => ApiError::invalid_request(e.to_string()),
    })?;
    for skipped in &batch.malformed {
        tracing::warn!(index = skipped.index, reason = %skipped.reason, "webhook event skipped");
    }
    let received = batch.events.len() + batch.malformed.len();
    let (events, ignored) = of_connected_account(state, batch.events).await?;
    let outcome = process_events(&state.store, &events)
        .await
        .map_err(|e| ApiError::from_store("processing webhook events", &e))?;
    if let Err(e) = record_reads(&state.store, &outcome).await {
        forget(&state.store, &events).await;
        return Err(ApiError::from_store("recording webhook pulls", &e));
    }
    let job = if outcome.to_pull.is_empty()
        && outcome.companies_changed.is_empty()
        && outcome.associations_to_read.is_empty()
    {
        None
    } else {
        match enqueue_webhook_pull(&state.store).await {
            Ok(job) => Some(job),
            Err(e) => {
                // The ids are recorded, but no job may read them: have HubSpot redeliver, so
                // that the redelivery enqueues one (its effects are idempotent).
                tracing::warn!(error = %e, "cannot enqueue the pull for webhook events");
                forget(&state.store, &events).await;
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::ServiceUnavailable,
                    format!("the pull for these events could not be queued: {e}"),
                ));
            }
        }
    };
    state
        .metrics
        .webhooks()
        .record_batch(received, outcome.duplicates);
    tracing::info!(
        received,
        ignored,
        new = outcome.new_events,
        duplicates = outcome.duplicates,
        to_pull = outcome.to_pull.len(),
        echoes = outcome.echoes,
        companies_unlinked = outcome.companies_unlinked.len(),
        company_merges = outcome.company_merges.len(),
        companies_to_pull = outcome.companies_changed.len(),
        associations_to_read = outcome.associations_to_read.len(),
        "webhook batch processed"
    );
    Ok(WebhookAnswer {
        received,
        ignored,
        new_events: outcome.new_events,
        duplicates: outcome.duplicates,
        malformed: batch.malformed.len(),
        unlinked: outcome.unlinked.len(),
        merges: outcome.merges.len(),
        to_pull: outcome.to_pull.len(),
        companies_to_pull: outcome.companies_changed.len(),
        associations_to_read: outcome.associations_to_read.len(),
        echoes: outcome.echoes,
        job_id: job.map(|j| j.id.to_string()),
    })
}

/// The events about the connected account, and how many others were dropped (counted in
/// `crm_sync_webhook_events_ignored_total`). The app's signature proves an event comes from
/// HubSpot, not that it is about this service's account: anyone can install a public app in
/// their own account, and its events would otherwise unlink or relink local contacts whose
/// HubSpot ids happen to match.
async fn of_connected_account(
    state: &AppState,
    events: Vec<WebhookEvent>,
) -> Result<(Vec<WebhookEvent>, usize), ApiError> {
    // Echoes of this app's own writes change nothing whichever account they are about, and
    // make up nearly every delivery while a push runs: answer them without a database read.
    if events.iter().all(WebhookEvent::is_own_echo) {
        return Ok((events, 0));
    }
    let connected = connected_account(&state.store, state.oauth.portal_id, state.hubspot.as_ref())
        .await
        .map_err(|e| match e {
            AccountError::Store(e) => ApiError::from_store("reading the HubSpot connection", &e),
            // HubSpot redelivers after a 5xx: better late than applied to the wrong account.
            AccountError::HubSpot(_) => {
                tracing::warn!(error = %e, "webhook batch postponed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::ServiceUnavailable,
                    "the connected HubSpot account cannot be determined right now",
                )
            }
        })?;
    let total = events.len();
    let (kept, reason): (Vec<WebhookEvent>, IgnoredReason) = match connected {
        Some(portal) => (
            events
                .into_iter()
                .filter(|e| e.portal_id == portal)
                .collect(),
            IgnoredReason::OtherPortal,
        ),
        None => (Vec::new(), IgnoredReason::NotConnected),
    };
    let ignored = total - kept.len();
    if ignored > 0 {
        state
            .metrics
            .webhooks()
            .record_ignored(reason, ignored as u64);
        tracing::warn!(
            ignored,
            reason = reason.as_str(),
            connected = ?connected.map(|p| p.0),
            "webhook events ignored: not about the connected HubSpot account"
        );
    }
    Ok((kept, ignored))
}

/// The URI HubSpot signed: the configured public URL (where HubSpot was told to send
/// webhooks) followed by the path and query exactly as received.
fn signed_uri(state: &AppState, req: &Request) -> String {
    let base = state.oauth.public_url.as_str().trim_end_matches('/');
    let original = req.original_uri();
    let path_and_query = original
        .path_and_query()
        .map_or_else(|| original.path(), |pq| pq.as_str());
    format!("{base}{path_and_query}")
}

/// Records what the webhook pull must read — contacts, companies, contacts' associations —
/// durably, before the answer (a failure forgets the batch, and HubSpot redelivers it).
async fn record_reads(
    store: &Store,
    outcome: &BatchOutcome,
) -> Result<(), crate::store::StoreError> {
    for (object, ids) in [
        (PendingObject::Company, &outcome.companies_changed),
        (PendingObject::Contact, &outcome.to_pull),
        (
            PendingObject::ContactAssociations,
            &outcome.associations_to_read,
        ),
    ] {
        record_pending(store, object, ids).await?;
    }
    Ok(())
}

/// Forgets a batch's events after a failure, so that HubSpot's redelivery is processed again
/// (effects are idempotent, so events that were applied may safely be applied twice).
async fn forget(store: &Store, events: &[WebhookEvent]) {
    let keys: Vec<String> = events.iter().map(|e| e.key().dedupe_key).collect();
    if let Err(e) = store.forget_events(&keys).await {
        tracing::error!(error = %e, "cannot forget webhook events after a failure");
    }
}

/// Makes sure a webhook pull (which drains `webhook_pulls`) runs after this batch was
/// recorded: inserts one unless one is active, as one insert-if-absent the database settles
/// (index `sync_jobs_one_active_webhook_pull`), however many deliveries and processes race.
/// An active drain reads the new ids, or, if it has already looked for the last time, queues
/// its successor in the transaction that ends it (see docs/webhooks.md for why no id is left
/// behind on either backend).
async fn enqueue_webhook_pull(store: &Store) -> Result<Job, QueueError> {
    Ok(queue::enqueue_webhook_pull(store).await?.job)
}
