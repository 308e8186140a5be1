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
use crate::jobs::{Counts, Job, Trigger};
use crate::oauth::ConnectionStatus;
use crate::store::TombstoneReason;

/// How many rows the page lists.
const RECENT_ROWS: usize = 10;

/// How many jobs it reads to fill them (consecutive webhook pulls share one row).
const RECENT_JOBS: u32 = 200;

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
    for row in fold_webhook_pulls(jobs).into_iter().take(RECENT_ROWS) {
        let job = match row {
            Row::Job(job) => job,
            Row::WebhookPulls { newest, runs, read } => {
                let _ = write!(
                    rows,
                    "<tr class=\"folded\"><td><code>{id}</code></td><td>{runs} webhook pulls</td>\
                     <td>webhook</td><td>{status}</td><td>{created}</td><td>{read} read</td></tr>",
                    id = escape(&newest.id.to_string()),
                    status = escape(&newest.status.to_string()),
                    created = escape(
                        &newest
                            .created_at
                            .format("%Y-%m-%d %H:%M:%S UTC")
                            .to_string()
                    ),
                );
                continue;
            }
        };
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

/// A row of the recent-jobs table.
#[derive(Debug, PartialEq)]
enum Row<'a> {
    /// One job.
    Job(&'a Job),
    /// Several webhook pulls in a row (newest first), folded so that a stream of webhooks does
    /// not push the user's own jobs off the page.
    WebhookPulls {
        /// The newest of them (its id, status and time are shown).
        newest: &'a Job,
        /// How many.
        runs: usize,
        /// HubSpot contacts they read in all.
        read: u64,
    },
}

/// Folds each run of consecutive webhook pulls (two or more) into one row.
fn fold_webhook_pulls(jobs: &[Job]) -> Vec<Row<'_>> {
    let mut rows: Vec<Row<'_>> = Vec::new();
    for job in jobs {
        let read = match job.counts {
            Counts::Pull(c) => c.total,
            Counts::Push(_) => 0,
        };
        let webhook = job.trigger == Trigger::Webhook;
        match rows.last_mut() {
            Some(Row::WebhookPulls {
                runs, read: sum, ..
            }) if webhook => {
                *runs += 1;
                *sum += read;
            }
            Some(last)
                if webhook && matches!(&*last, Row::Job(p) if p.trigger == Trigger::Webhook) =>
            {
                if let Row::Job(newest) = *last {
                    let first = match newest.counts {
                        Counts::Pull(c) => c.total,
                        Counts::Push(_) => 0,
                    };
                    *last = Row::WebhookPulls {
                        newest,
                        runs: 2,
                        read: first + read,
                    };
                }
            }
            _ => rows.push(Row::Job(job)),
        }
    }
    rows
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobId;
    use crate::jobs::model::JobProgress;
    use crate::jobs::{JobSpec, JobStatus};

    fn job(trigger: Trigger) -> Job {
        let spec = JobSpec::pull();
        Job {
            id: JobId::generate(),
            spec,
            trigger,
            status: JobStatus::Queued,
            attempts: 0,
            created_at: chrono::Utc::now(),
            started_at: None,
            finished_at: None,
            counts: spec.empty_counts(),
            errors: Vec::new(),
            progress: JobProgress::default(),
            error: None,
            next_attempt_at: None,
            forced: trigger == Trigger::Webhook,
            portal_id: None,
        }
    }

    #[test]
    fn consecutive_webhook_pulls_share_a_row_and_the_users_jobs_keep_theirs() {
        let jobs = vec![
            job(Trigger::Webhook),
            job(Trigger::Webhook),
            job(Trigger::Webhook),
            job(Trigger::Cli),
            job(Trigger::Webhook),
            job(Trigger::Schedule),
        ];
        let rows = fold_webhook_pulls(&jobs);
        assert_eq!(rows.len(), 4, "{rows:?}");
        assert!(
            matches!(rows[0], Row::WebhookPulls { runs: 3, newest, .. } if newest.id == jobs[0].id)
        );
        assert_eq!(rows[1], Row::Job(&jobs[3]));
        assert_eq!(
            rows[2],
            Row::Job(&jobs[4]),
            "a lone webhook pull is shown as it is"
        );
        assert_eq!(rows[3], Row::Job(&jobs[5]));
        assert_eq!(jobs[0].status, JobStatus::Queued);
    }
}
