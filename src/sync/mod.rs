//! The sync engine: runs push and pull jobs for the queue.
//!
//! [`SyncRunner`] is the [`JobRunner`] the workers use. It dispatches a job by direction to
//! [`push::Pusher::run`] or [`pull::run`] — or, for a pull with trigger `webhook`, to
//! [`webhook_pull::run`], which reads only the records webhooks named; a pull has the shape
//!
//! ```ignore
//! pub async fn run(ctx: &SyncContext, job: &Job, progress: &Progress) -> Result<(), RunError>
//! ```
//!
//! and both report HubSpot failures through [`hubspot_error`], so that the queue treats them
//! alike (retry what may pass, fail what will not).

mod associations;
pub mod companies;
mod dry_notes;
pub mod keys;
mod lookup;
pub mod mapped;
pub mod pull;
pub mod push;
pub mod webhook_pull;

use crate::hubspot::{HubSpotClient, HubSpotError};
use crate::ids::PortalId;
use crate::jobs::model::{Job, JobAction, JobSpec, SpecError, SyncObject, Trigger};
use crate::jobs::{BoxFuture, JobRunner, Progress, RunError, RunFailure};
use crate::mapping::CheckedMapping;
use crate::oauth::ConnectionProblem;
use crate::store::LinkPortal;
use std::sync::Arc;
use std::time::Duration;

/// The properties a pull reads; push's external key lets a contact push created be matched to
/// its row before push has saved the link (HubSpot ignores it before push first creates it).
pub(crate) const PROPERTIES: [&str; 5] = [
    "email",
    "firstname",
    "lastname",
    "hs_merged_object_ids",
    push::EXTERNAL_KEY,
];

/// What every sync run needs besides its job: the HubSpot client and the tunables.
///
/// Build it with [`SyncContext::new`] (fields may be added; a struct literal would break).
#[derive(Debug, Clone)]
pub struct SyncContext {
    /// The HubSpot client (cheap to clone; shares its rate budget and metrics).
    pub hubspot: HubSpotClient,
    /// Pull settings.
    pub pull: PullSettings,
    /// The object mappings in effect, checked against the database at start-up; a run calls
    /// [`crate::mapping::properties::ensure_properties`] on its object's before writing.
    pub objects: Arc<Vec<CheckedMapping>>,
}

impl SyncContext {
    /// A context with default settings.
    pub fn new(hubspot: HubSpotClient) -> Self {
        Self {
            hubspot,
            pull: PullSettings::default(),
            objects: Arc::new(Vec::new()),
        }
    }
}

/// Tunables of the pull engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullSettings {
    /// How far before its bookmark an incremental pull starts reading (see
    /// [`crate::defaults::PULL_LOOKBACK`]): it covers HubSpot's search-index lag and clock skew
    /// between this host and HubSpot.
    pub lookback: Duration,
}

impl Default for PullSettings {
    fn default() -> Self {
        Self {
            lookback: crate::defaults::PULL_LOOKBACK,
        }
    }
}

/// The sync engine as the queue sees it.
#[derive(Debug, Clone)]
pub struct SyncRunner {
    ctx: SyncContext,
}

impl SyncRunner {
    /// A runner that syncs through `ctx`.
    pub fn new(ctx: SyncContext) -> Self {
        Self { ctx }
    }

    /// The context it runs with.
    pub fn context(&self) -> &SyncContext {
        &self.ctx
    }
}

impl JobRunner for SyncRunner {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        progress: &'a Progress,
    ) -> BoxFuture<'a, Result<(), RunError>> {
        Box::pin(async move {
            // A job this engine cannot run as asked (a row written by another version, or by
            // hand) fails before any HubSpot call rather than running as a different job.
            refuse_unrunnable(&job.spec)?;
            // A broken or missing connection fails the job before any HubSpot call.
            self.ctx
                .hubspot
                .check_connection()
                .await
                .map_err(|e| hubspot_error("checking the HubSpot connection", e))?;
            // Before any HubSpot write: the account this run would write to must be the one
            // the local links were made with.
            let portal = self.ctx.hubspot.learn_portal_id().await.map_err(|e| {
                hubspot_error("learning which HubSpot account the job syncs with", e)
            })?;
            progress.set_portal(portal).await?;
            check_link_portal(progress, portal, job.spec.dry_run).await?;
            // A push or a pull the user (or a schedule) asked for keeps the whole rate budget;
            // the webhook drain waits for it (`HubSpotClient::has_spare_budget`).
            let _foreground =
                (job.trigger != Trigger::Webhook).then(|| self.ctx.hubspot.foreground());
            // A mapping to the user's own table has its own engine; the built-in contacts
            // mapping keeps the engines below.
            if let Some(checked) = mapped::user_mapping(&self.ctx, job.spec.object) {
                return mapped::run(&self.ctx, checked, job, progress).await;
            }
            if job.spec.object == SyncObject::Companies {
                return companies::CompanyRunner::new(self.ctx.hubspot.clone(), self.ctx.pull)
                    .run_job(job, progress)
                    .await;
            }
            match job.spec.action {
                JobAction::Push { mode } => {
                    let pusher =
                        push::Pusher::new(self.ctx.hubspot.clone(), push::PushConfig::default());
                    if job.spec.dry_run {
                        pusher.run_dry(mode, progress).await
                    } else {
                        pusher.run(mode, progress).await
                    }
                }
                // A webhook's pull reads the records webhooks named, by id.
                JobAction::Pull { .. } if job.trigger == Trigger::Webhook => {
                    webhook_pull::run(&self.ctx, job, progress).await
                }
                JobAction::Pull { .. } => pull::run(&self.ctx, job, progress).await,
            }
        })
    }
}

/// Fails a job whose object or dry run this engine cannot run (fatal: retrying cannot help).
fn refuse_unrunnable(spec: &JobSpec) -> Result<(), RunError> {
    if !spec.object.is_available() {
        return Err(RunError::Fatal(RunFailure::from_error(
            SpecError::ObjectUnavailable(spec.object),
        )));
    }
    if spec.dry_run && !spec.object.has_dry_run() {
        return Err(RunError::Fatal(RunFailure::from_error(
            SpecError::DryRunUnavailable(spec.object),
        )));
    }
    Ok(())
}

/// Refuses the run (fatal: retrying cannot help) when the local links were made with another
/// HubSpot account than `portal`; the first run that knows its account records it. A
/// contact's `hs_object_id` is a record id of one account: used against another account it
/// would update or link that account's unrelated records.
///
/// A dry run only reads: it refuses an account the links were not made with, and claims none.
async fn check_link_portal(
    progress: &Progress,
    portal: PortalId,
    dry_run: bool,
) -> Result<(), RunError> {
    let found = if dry_run {
        match progress.store().link_portal().await? {
            Some(linked) if linked != portal => LinkPortal::Other(linked),
            _ => LinkPortal::Same,
        }
    } else {
        progress.store().claim_link_portal(portal).await?
    };
    match found {
        LinkPortal::Claimed => {
            tracing::info!(portal_id = %portal, "local links now belong to this HubSpot account");
            Ok(())
        }
        LinkPortal::Same => Ok(()),
        LinkPortal::Other(linked) => Err(RunError::fatal(format!(
            "this job would sync with HubSpot account {portal}, but the local contacts were \
             linked with HubSpot account {linked} (their hs_object_id values are that \
             account's record ids); nothing was sent to HubSpot. Connect account {linked} \
             again (crm-sync disconnect, then crm-sync connect and install in account \
             {linked}), or use a database whose contacts were never linked to sync with \
             account {portal}"
        ))),
    }
}

/// How a HubSpot failure ends a run: [`RunError::Transient`] for what may pass by itself
/// (rate limits, 5xx and network failures after the client's own retries, a write whose
/// answer was lost, an answer that could not be read, a token store blip),
/// [`RunError::Fatal`] for what needs a person (credentials refused or missing, scopes,
/// a request HubSpot rejects as invalid).
///
/// A broken connection (HubSpot refused the refresh token, now or in an earlier call) is
/// fatal with the remedy in the message: retrying cannot help until the app is installed
/// again, and the token store then answers without calling HubSpot, so the next job fails at
/// once too.
pub fn hubspot_error(context: &str, e: HubSpotError) -> RunError {
    match ConnectionProblem::of(&e) {
        Some(ConnectionProblem::Broken) => {
            return RunError::Fatal(RunFailure::caused_by(
                format!(
                    "{context}: the HubSpot connection is broken; reinstall the app at /api/install"
                ),
                e,
            ));
        }
        Some(_) => return RunError::Fatal(RunFailure::caused_by(context, e)),
        None => {}
    }
    let transient = matches!(
        e,
        HubSpotError::RateLimited { .. }
            | HubSpotError::Transient { .. }
            | HubSpotError::Ambiguous { .. }
            | HubSpotError::UnexpectedResponse { .. }
            | HubSpotError::TokenStore(_)
    );
    let failure = RunFailure::caused_by(context, e);
    if transient {
        RunError::Transient(failure)
    } else {
        RunError::Fatal(failure)
    }
}
