//! `GET /`: a small server-rendered page — whether HubSpot is connected (and to which
//! account), the install link when it is not, and the recent jobs with their counts.
//!
//! Public like the install page: it shows no token, no contact and no job errors (those name
//! contacts), only states and counts; and the operator's sign-in form (`POST /login`).

use std::fmt::Write as _;

use std::sync::Arc;

use poem::http::{Method, StatusCode};
use poem::{Endpoint, IntoResponse, PathPattern, Request, Response};

use super::AppState;
use super::html::{Page, escape};
use super::operator::{Operator, operator_of};
use crate::jobs::{Counts, Job};
use crate::oauth::ConnectionStatus;
use crate::store::TombstoneReason;

/// How many jobs the page lists.
const RECENT_JOBS: u32 = 10;

/// Answers `GET /` with the status page and passes every other request to `next`.
///
/// A wrapper rather than a route: the OpenAPI service is nested at `/`, and poem's nest at
/// `/` takes the root path for itself.
pub async fn serve_root<E: Endpoint<Output = Response>>(
    next: Arc<E>,
    req: Request,
) -> poem::Result<Response> {
    let is_root = req.uri().path() == "/" && matches!(*req.method(), Method::GET | Method::HEAD);
    let state = req.data::<AppState>().cloned();
    match state {
        Some(state) if is_root => {
            let operator = operator_of(&req, &state).await;
            let mut resp = status_page(&state, operator).await;
            resp.set_data(PathPattern(Arc::from("/")));
            Ok(resp)
        }
        _ => next.call(req).await,
    }
}

/// The page of `GET /`; `operator` says whether the visitor is signed in (a sign-in form for
/// anyone else).
pub async fn status_page(state: &AppState, operator: Option<Operator>) -> Response {
    let connection = match connection_status(state).await {
        Ok(status) => status,
        Err(()) => {
            return Page::new("crm-sync")
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .para("The database does not answer; the details are in the server log.")
                .into_response();
        }
    };
    let jobs = match state.store.list_jobs(None, RECENT_JOBS).await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list jobs for the status page");
            Vec::new()
        }
    };
    let deleted = match state.store.count_tombstones().await {
        Ok(counts) => counts,
        Err(e) => {
            tracing::warn!(error = %e, "cannot count contacts deleted in HubSpot for the status page");
            Vec::new()
        }
    };
    Page::new("crm-sync")
        .raw(&connection_html(state, &connection))
        .raw(&deleted_html(&deleted))
        .raw(&jobs_html(&jobs))
        .raw(operator_html(operator))
        .into_response()
}

/// How many local contacts carry a tombstone (HubSpot deleted them), privacy deletions apart.
fn deleted_html(counts: &[(TombstoneReason, i64)]) -> String {
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let private: i64 = counts
        .iter()
        .filter(|(r, _)| *r == TombstoneReason::PrivacyDeletion)
        .map(|(_, n)| n)
        .sum();
    format!(
        "<p id=\"hubspot-deleted\">Contacts deleted in HubSpot, kept here and never pushed again \
         until restored: {total} (privacy deletions: {private}).</p>"
    )
}

/// The connection as the page shows it; `Err` when the database does not answer.
pub(crate) async fn connection_status(state: &AppState) -> Result<ConnectionStatus, ()> {
    match state.store.current_credentials().await {
        Ok(row) => Ok(row.map_or(ConnectionStatus::NotConnected, ConnectionStatus::from)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the HubSpot connection");
            Err(())
        }
    }
}

fn connection_html(state: &AppState, connection: &ConnectionStatus) -> String {
    let private_app = state.hubspot.as_ref().is_some_and(|c| c.oauth().is_none());
    match connection {
        ConnectionStatus::Connected { portal_id, .. } => format!(
            "<p class=\"ok\" id=\"connection\">HubSpot is connected to account \
             <strong>{}</strong>.</p>",
            escape(&portal_id.to_string())
        ),
        ConnectionStatus::Broken { portal_id, since } => format!(
            "<p class=\"bad\" id=\"connection\">The connection to HubSpot account \
             <strong>{}</strong> is broken: HubSpot refused its refresh token on {} (the app \
             was probably uninstalled). Sync jobs fail until you \
             <a href=\"/api/install\">reinstall the app</a>.</p>",
            escape(&portal_id.to_string()),
            escape(&since.format("%Y-%m-%d %H:%M UTC").to_string()),
        ),
        ConnectionStatus::NotConnected if private_app => {
            "<p class=\"ok\" id=\"connection\">HubSpot is connected with a private-app token.</p>"
                .to_owned()
        }
        ConnectionStatus::NotConnected => "<p class=\"bad\" id=\"connection\">HubSpot is not \
             connected. <a class=\"button\" href=\"/api/install\">Connect HubSpot</a></p>"
            .to_owned(),
    }
}

/// The operator's sign-in form (the API token, posted to `/login`), or the sign-out button.
fn operator_html(operator: Option<Operator>) -> &'static str {
    match operator {
        Some(_) => {
            "<h2>Operator</h2><form method=\"post\" action=\"/logout\" id=\"logout\">\
             <p>You are signed in as the operator. <button type=\"submit\">Sign out</button></p>\
             </form>"
        }
        None => {
            "<h2>Operator</h2><form method=\"post\" action=\"/login\" id=\"login\">\
             <p><label>API token <input type=\"password\" name=\"token\" \
             autocomplete=\"current-password\" required></label> \
             <button type=\"submit\">Sign in</button></p></form>"
        }
    }
}

fn jobs_html(jobs: &[Job]) -> String {
    if jobs.is_empty() {
        return "<h2>Recent jobs</h2><p>No sync job has run yet.</p>".to_owned();
    }
    let mut rows = String::new();
    for job in jobs {
        let _ = write!(
            rows,
            "<tr><td><code>{id}</code></td><td>{direction} ({mode})</td><td>{trigger}</td>\
             <td>{status}</td><td>{created}</td><td>{counts}</td></tr>",
            id = escape(&job.id.to_string()),
            direction = escape(&job.direction().to_string()),
            mode = escape(job.spec.mode_str()),
            trigger = escape(&job.trigger.to_string()),
            status = escape(&job.status.to_string()),
            created = escape(&job.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
            counts = escape(&counts_text(&job.counts)),
        );
    }
    format!(
        "<h2>Recent jobs</h2><table id=\"jobs\"><thead><tr><th>Job</th><th>What</th>\
         <th>Trigger</th><th>Status</th><th>Created</th><th>Counts</th></tr></thead>\
         <tbody>{rows}</tbody></table>"
    )
}

fn counts_text(counts: &Counts) -> String {
    match counts {
        Counts::Push(c) => format!(
            "total {}, created {}, linked {}, updated {}, failed {}, skipped {}",
            c.total, c.created, c.linked, c.updated, c.failed, c.skipped
        ),
        Counts::Pull(c) => format!(
            "total {}, created {}, linked {}, unchanged {}, failed {}",
            c.total, c.created, c.linked, c.unchanged, c.failed
        ),
    }
}
