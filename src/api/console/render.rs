//! The console's HTML: the document around the live part, the live part itself (which the
//! page's script fetches again every few seconds), and the small formatters they share.
//!
//! Every interpolated value goes through [`escape`]; numbers and times are formatted here so
//! that the page reads the same everywhere (UTC, thousands separators, "5 min ago").

use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};

use super::snapshot::{DirectionPanel, Failure, RECENT_JOBS, Snapshot, WEBHOOK_WINDOW};
use crate::api::html::escape;
use crate::api::operator::Operator;
use crate::jobs::model::{Counts, Direction, Job, JobStatus};
use crate::oauth::ConnectionStatus;
use crate::store::TombstoneReason;

/// Seconds between two refreshes of the live part.
pub(super) const REFRESH_SECONDS: u32 = 5;

/// The id of the element whose content the script replaces.
pub(super) const LIVE_ID: &str = "live";

/// The page's only script: it fetches the live part again every [`REFRESH_SECONDS`] while the
/// tab is visible and swaps it in. Without it the page is complete, only static.
pub(super) const SCRIPT: &str = "(function(){var live=document.getElementById('live');\
if(!live||!window.fetch){return;}var every=Number(live.dataset.refresh||5)*1000;\
function later(){setTimeout(tick,every);}\
function tick(){if(document.hidden){return later();}\
fetch('/?fragment=live',{credentials:'same-origin',headers:{'Accept':'text/html'}})\
.then(function(r){if(!r.ok){throw new Error(String(r.status));}return r.text();})\
.then(function(html){live.innerHTML=html;})\
.catch(function(){var s=document.getElementById('stamp');\
if(s){s.textContent='Refresh failed; retrying.';}})\
.then(later);}later();})();";

const STYLE: &str = "\
*{box-sizing:border-box}\
body{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f5f7fa;line-height:1.45}\
header{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:baseline;padding:.8rem 1.5rem;\
background:#213343;color:#fff}\
header h1{font-size:1.25rem;margin:0}header nav a{color:#ffd1c4;margin-right:1rem}\
main{padding:1rem 1.5rem;max-width:110rem;margin:0 auto}\
h2{font-size:1.05rem;margin:0 0 .5rem}\
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(17rem,1fr));gap:1rem}\
.card,section.block{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:.9rem 1rem}\
section.block{margin-top:1rem}\
.card p{margin:.3rem 0}\
dl.figures{display:grid;grid-template-columns:1fr auto;gap:.15rem 1rem;margin:0}\
dl.figures dd{margin:0;text-align:right;font-variant-numeric:tabular-nums;font-weight:600}\
.ok{color:#176f2c}.bad{color:#a11}.muted{color:#5c6b7a}.stamp{font-size:.85rem}\
a.button,button{display:inline-block;padding:.35rem .8rem;background:#ff7a59;color:#fff;\
border:0;border-radius:4px;text-decoration:none;font:inherit;cursor:pointer}\
button.quiet{background:#5c6b7a}\
progress{width:100%;height:.9rem}\
table{border-collapse:collapse;width:100%}\
th,td{border-bottom:1px solid #e6eaef;padding:.35rem .5rem;text-align:left;vertical-align:top}\
th{font-size:.85rem;color:#5c6b7a;font-weight:600}\
td.num{font-variant-numeric:tabular-nums}td.nowrap,th{white-space:nowrap}\
.status{display:inline-block;padding:0 .45rem;border-radius:9px;font-size:.85rem;white-space:nowrap}\
.s-succeeded{background:#dff3e4;color:#176f2c}.s-failed{background:#fbe1e1;color:#a11}\
.s-running{background:#dde9fb;color:#1c4f9c}.s-queued,.s-retrying{background:#fdf0d5;color:#8a5a00}\
.s-cancelled{background:#eceff2;color:#5c6b7a}\
code{background:#eef1f5;padding:0 .2rem;border-radius:3px}\
@media (max-width:44rem){main{padding:.75rem}header{padding:.75rem}\
table.stack thead{display:none}table.stack tr{display:block;border-bottom:1px solid #dde3ea;\
padding:.4rem 0}table.stack td{display:flex;gap:1rem;justify-content:space-between;border:0;\
padding:.1rem 0}table.stack td::before{content:attr(data-label);color:#5c6b7a;font-size:.85rem}}";

/// The whole document: header, live part, the operator's sign-in or sign-out, the script.
pub(super) fn document(snapshot: &Snapshot) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>crm-sync · console</title><style>{STYLE}</style></head><body>\
         <header><h1>crm-sync</h1><nav><a href=\"/api-docs\">API docs</a>\
         <a href=\"/metrics\">Metrics</a><a href=\"/api-docs/openapi.json\">OpenAPI</a></nav>\
         </header><main><div id=\"{LIVE_ID}\" data-refresh=\"{REFRESH_SECONDS}\">{live}</div>\
         {operator}</main><script>{SCRIPT}</script></body></html>",
        live = live(snapshot),
        operator = operator_html(snapshot.operator),
    )
}

/// The part that refreshes: the four cards, the recent jobs and the failed records.
pub(super) fn live(s: &Snapshot) -> String {
    format!(
        "<p class=\"stamp muted\" id=\"stamp\">Updated {at} UTC; refreshes every \
         {REFRESH_SECONDS} s.</p><div class=\"cards\">{connection}{contacts}{push}{pull}{companies}\
         </div>{jobs}{failures}",
        at = s.now.format("%H:%M:%S"),
        connection = connection_card(s),
        contacts = contacts_card(s),
        push = direction_card(s, Direction::Push, &s.push),
        pull = direction_card(s, Direction::Pull, &s.pull),
        companies = companies_card(s),
        jobs = recent_jobs(s),
        failures = failures_block(s),
    )
}

fn connection_card(s: &Snapshot) -> String {
    let operator = s.operator.is_some();
    let body = match &s.connection {
        ConnectionStatus::Connected {
            portal_id,
            expires_at,
            scopes,
        } => {
            let token = if *expires_at > s.now {
                format!(
                    "Access token valid for {}; renewed automatically.",
                    escape(&span(*expires_at - s.now))
                )
            } else {
                "Access token expired; the next HubSpot call renews it.".to_owned()
            };
            format!(
                "<p class=\"ok\" id=\"connection\">HubSpot is connected to account \
                 <strong>{portal}</strong>.</p><p class=\"muted\">{token} {n} scopes granted.</p>{control}",
                portal = escape(&portal_id.to_string()),
                n = scopes.len(),
                control = if operator { DISCONNECT_FORM } else { "" },
            )
        }
        ConnectionStatus::Broken { portal_id, since } => format!(
            "<p class=\"bad\" id=\"connection\">The connection to HubSpot account \
             <strong>{portal}</strong> is broken: HubSpot refused its refresh token {ago} (the \
             app was probably uninstalled). Sync jobs fail until the app is installed again.</p>\
             {hint}",
            portal = escape(&portal_id.to_string()),
            ago = time(s.now, *since),
            hint = if operator {
                "<p><a class=\"button\" href=\"/api/install\">Reconnect HubSpot</a></p>"
            } else {
                "<p class=\"muted\">The operator signs in below to reconnect it.</p>"
            },
        ),
        ConnectionStatus::NotConnected if s.private_app => {
            "<p class=\"ok\" id=\"connection\">HubSpot is connected with a private-app \
             token.</p>"
                .to_owned()
        }
        ConnectionStatus::NotConnected if operator => {
            "<p class=\"bad\" id=\"connection\">HubSpot is not connected.</p>\
             <p><a class=\"button\" href=\"/api/install\">Connect HubSpot</a></p>"
                .to_owned()
        }
        ConnectionStatus::NotConnected => "<p class=\"bad\" id=\"connection\">HubSpot is not \
             connected.</p><p class=\"muted\">Connecting is the operator's act: sign in below \
             with the API token.</p>"
            .to_owned(),
    };
    format!("<article class=\"card\" id=\"connection-card\"><h2>HubSpot</h2>{body}</article>")
}

/// Releases the account; the checkbox keeps a stray click from disconnecting.
const DISCONNECT_FORM: &str = "<form method=\"post\" action=\"/disconnect\" id=\"disconnect\">\
     <p><label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required> \
     Stop syncing with this account</label> <button class=\"quiet\" type=\"submit\">\
     Disconnect</button></p></form>";

/// crm-sync's companies: their figures, and how their last push and pull ended.
fn companies_card(s: &Snapshot) -> String {
    let Some(c) = s.companies else {
        return "<article class=\"card\" id=\"companies\"><h2>Companies</h2>\
                <p class=\"bad\">The companies cannot be counted now; see the server log.</p>\
                </article>"
            .to_owned();
    };
    let figure = |label: &str, id: &str, value: String| {
        format!("<dt>{label}</dt><dd id=\"{id}\">{value}</dd>")
    };
    let last = |direction: Direction, panel: &DirectionPanel| match (
        &panel.active,
        &panel.last_finished,
    ) {
        (Some(job), _) => format!(
            "<p>A companies {direction} is {}.</p>",
            escape(&job.status.to_string())
        ),
        (None, Some(job)) => format!(
            "<p>Last companies {direction} {} {}: {}</p>",
            escape(&job.status.to_string()),
            time(s.now, job.finished_at.unwrap_or(job.created_at)),
            escape(&counts_text(&job.counts)),
        ),
        (None, None) => format!("<p class=\"muted\">No companies {direction} yet.</p>"),
    };
    format!(
        "<article class=\"card\" id=\"companies\"><h2>Companies</h2><dl class=\"figures\">\
         {}{}{}{}{}</dl>{}{}</article>",
        figure("Total", "companies-total", count(c.total)),
        figure("Linked to HubSpot", "companies-linked", count(c.linked)),
        figure(
            "Not yet pushed",
            "companies-not-pushed",
            count(c.not_pushed)
        ),
        figure(
            "Changed since last push",
            "companies-changed",
            count(c.changed)
        ),
        figure(
            "Deleted in HubSpot",
            "companies-tombstoned",
            count(c.tombstoned)
        ),
        last(Direction::Push, &s.company_push),
        last(Direction::Pull, &s.company_pull),
    )
}

fn contacts_card(s: &Snapshot) -> String {
    let Some(c) = s.contacts else {
        return "<article class=\"card\" id=\"contacts\"><h2>Contacts</h2>\
                <p class=\"bad\">The contacts cannot be counted now; see the server log.</p>\
                </article>"
            .to_owned();
    };
    let failed = s
        .push
        .last_finished
        .as_ref()
        .map_or("–".to_owned(), |j| thousands(j.counts.failed()));
    let privacy: i64 = s
        .tombstones
        .iter()
        .filter(|(r, _)| *r == TombstoneReason::PrivacyDeletion)
        .map(|(_, n)| n)
        .sum();
    let figure = |label: &str, id: &str, value: String| {
        format!("<dt>{label}</dt><dd id=\"{id}\">{value}</dd>")
    };
    format!(
        "<article class=\"card\" id=\"contacts\"><h2>Contacts</h2><dl class=\"figures\">\
         {}{}{}{}{}{}</dl>{}</article>",
        figure("Total", "contacts-total", count(c.total)),
        figure("Linked to HubSpot", "contacts-linked", count(c.linked)),
        figure("Not yet pushed", "contacts-not-pushed", count(c.not_pushed)),
        figure(
            "Changed since last push",
            "contacts-changed",
            count(c.changed)
        ),
        figure("Failed in the last push", "contacts-failed", failed),
        figure(
            "Deleted in HubSpot",
            "contacts-tombstoned",
            count(c.tombstoned)
        ),
        if c.tombstoned > 0 {
            format!(
                "<p class=\"muted\" id=\"hubspot-deleted\">Contacts deleted in HubSpot stay \
                 here and are never pushed again until restored (privacy deletions: {}).</p>",
                count(privacy)
            )
        } else {
            String::new()
        },
    )
}

fn direction_card(s: &Snapshot, direction: Direction, panel: &DirectionPanel) -> String {
    let mut body = String::new();
    match &panel.active {
        Some(job) => body.push_str(&active_job(s.now, job)),
        None => {
            let _ = write!(body, "<p class=\"muted\">No {direction} running.</p>");
        }
    }
    if let (Direction::Pull, Some(job)) = (direction, &s.webhook_active) {
        let _ = write!(
            body,
            "<p>A webhook pull is reading the records HubSpot announced ({} so far).</p>",
            thousands(job.progress.processed)
        );
    }
    match &panel.last_success {
        Some(job) => {
            let _ = write!(
                body,
                "<p>Last success {ago}{took}: {counts}</p>",
                ago = time(s.now, job.finished_at.unwrap_or(job.created_at)),
                took = duration_of(job).map_or(String::new(), |d| format!(", took {}", span(d))),
                counts = escape(&counts_text(&job.counts)),
            );
        }
        None => {
            let _ = write!(
                body,
                "<p class=\"muted\">No {direction} has succeeded yet.</p>"
            );
        }
    }
    if let Some(job) = panel
        .last_finished
        .as_ref()
        .filter(|j| j.status != JobStatus::Succeeded)
    {
        let _ = write!(
            body,
            "<p class=\"bad\">The last {direction} {status} {ago}{why}.</p>",
            status = escape(&job.status.to_string()),
            ago = time(s.now, job.finished_at.unwrap_or(job.created_at)),
            why = job
                .error
                .as_deref()
                .map_or(String::new(), |e| format!(": {}", escape(e))),
        );
    }
    match &panel.next_run {
        Some((at, cron)) => {
            let _ = write!(
                body,
                "<p>Next scheduled {} <span class=\"muted\">(<code>{}</code>)</span></p>",
                time(s.now, *at),
                escape(cron)
            );
        }
        None => body.push_str("<p class=\"muted\">No schedule configured.</p>"),
    }
    let title = match direction {
        Direction::Push => "Push to HubSpot",
        Direction::Pull => "Pull from HubSpot",
    };
    format!("<article class=\"card\" id=\"{direction}-card\"><h2>{title}</h2>{body}</article>")
}

/// A queued, running or retrying job with its progress, rate and time left.
fn active_job(now: DateTime<Utc>, job: &Job) -> String {
    let id = escape(&job.id.to_string());
    match job.status {
        JobStatus::Running => {
            let done = job.progress.processed;
            let elapsed = job.started_at.map(|t| now - t).unwrap_or_default();
            let rate = per_second(done, elapsed);
            let (bar, of) = match job.progress.total {
                Some(total) if total > 0 => (
                    format!(
                        "<progress max=\"{total}\" value=\"{}\"></progress>",
                        done.min(total)
                    ),
                    format!(
                        "{} of {} ({} %)",
                        thousands(done),
                        thousands(total),
                        done.min(total) * 100 / total
                    ),
                ),
                Some(_) => (String::new(), "nothing to do".to_owned()),
                None => (
                    "<progress></progress>".to_owned(),
                    format!("{} so far", thousands(done)),
                ),
            };
            let eta = match (job.progress.total, rate) {
                (Some(total), Some(rate)) if total > done && rate > 0.0 => {
                    let left = ((total - done) as f64 / rate).ceil() as i64;
                    format!(", about {} left", span(Duration::seconds(left)))
                }
                _ => String::new(),
            };
            let rate = rate.map_or(String::new(), |r| {
                format!(", {} a second", thousands(r as u64))
            });
            format!(
                "<div class=\"running\" data-job=\"{id}\"><p><span class=\"status s-running\">\
                 running</span> <a href=\"#job-{id}\"><code>{short}</code></a> started {ago}</p>\
                 {bar}<p class=\"progress-text\">{of}{rate}{eta}</p></div>",
                short = escape(&short_id(job)),
                ago = time(now, job.started_at.unwrap_or(job.created_at)),
            )
        }
        JobStatus::Retrying => format!(
            "<p><span class=\"status s-retrying\">retrying</span> <code>{short}</code> after \
             attempt {n}{at}{why}</p>",
            short = escape(&short_id(job)),
            n = job.attempts,
            at = job.next_attempt_at.map_or(String::new(), |t| format!(
                ", next attempt {}",
                time(now, t)
            )),
            why = job
                .error
                .as_deref()
                .map_or(String::new(), |e| format!(": {}", escape(e))),
        ),
        _ => format!(
            "<p><span class=\"status s-queued\">queued</span> <code>{short}</code> {ago}, \
             waiting for a worker</p>",
            short = escape(&short_id(job)),
            ago = time(now, job.created_at),
        ),
    }
}

fn recent_jobs(s: &Snapshot) -> String {
    let webhooks = webhook_line(s);
    let Some(jobs) = &s.recent else {
        return format!(
            "<section class=\"block\" id=\"recent\"><h2>Recent jobs</h2>{webhooks}\
             <p class=\"bad\">The jobs cannot be listed now; see the server log.</p></section>"
        );
    };
    if jobs.is_empty() {
        return format!(
            "<section class=\"block\" id=\"recent\"><h2>Recent jobs</h2>{webhooks}\
             <p class=\"muted\">No sync job has run yet.</p></section>"
        );
    }
    let mut rows = String::new();
    for job in jobs {
        rows.push_str(&job_row(s.now, job));
    }
    format!(
        "<section class=\"block\" id=\"recent\"><h2>Recent jobs <span class=\"muted\">(the \
         newest {RECENT_JOBS}, webhook pulls apart)</span></h2>{webhooks}\
         <table id=\"jobs\" class=\"stack\"><thead><tr><th>Job</th><th>What</th>\
         <th>Trigger</th><th>Status</th><th>Created</th><th>Duration</th><th>Counts</th>\
         </tr></thead><tbody>{rows}</tbody></table></section>"
    )
}

fn job_row(now: DateTime<Utc>, job: &Job) -> String {
    let id = escape(&job.id.to_string());
    let status = escape(&job.status.to_string());
    let mut what = format!(
        "{} · {} · {}",
        job.spec.object,
        job.direction(),
        job.spec.mode_str()
    );
    if job.spec.incremental() {
        what.push_str(" · incremental");
    }
    if job.spec.dry_run {
        what.push_str(" · dry run");
    }
    let took = match (duration_of(job), job.status) {
        (Some(d), _) => span(d),
        (None, status) if status.is_active() => "…".to_owned(),
        _ => "–".to_owned(),
    };
    format!(
        "<tr id=\"job-{id}\"><td data-label=\"Job\" class=\"nowrap\" title=\"{id}\">\
         <code>{short}</code></td><td data-label=\"What\" class=\"nowrap\">{what}</td>\
         <td data-label=\"Trigger\">{trigger}</td><td data-label=\"Status\">\
         <span class=\"status s-{status}\">{status}</span></td><td data-label=\"Created\" \
         class=\"nowrap\">{created}</td><td data-label=\"Duration\" class=\"nowrap num\">{took}</td>\
         <td data-label=\"Counts\" class=\"num\">{counts}</td></tr>",
        short = escape(&short_id(job)),
        what = escape(&what),
        trigger = escape(&job.trigger.to_string()),
        created = time(now, job.created_at),
        took = escape(&took),
        counts = escape(&counts_text(&job.counts)),
    )
}

/// "12 webhook pulls in the last hour, 3,400 contacts read".
fn webhook_line(s: &Snapshot) -> String {
    let w = &s.webhooks;
    let hours = WEBHOOK_WINDOW.num_hours();
    let window = if hours == 1 {
        "the last hour".to_owned()
    } else {
        format!("the last {hours} hours")
    };
    if w.runs == 0 {
        return format!(
            "<p id=\"webhook-pulls\" class=\"muted\">No webhook pulls in {window}.</p>"
        );
    }
    format!(
        "<p id=\"webhook-pulls\">{runs} webhook pull{plural} in {window}, {read} contacts read\
         {failed}{newest}.</p>",
        runs = thousands(w.runs),
        plural = if w.runs == 1 { "" } else { "s" },
        read = thousands(w.read),
        failed = if w.failed > 0 {
            format!(", {} failed", thousands(w.failed))
        } else {
            String::new()
        },
        newest = w.newest_at.map_or(String::new(), |t| format!(
            "; the newest {}",
            time(s.now, t)
        )),
    )
}

fn failures_block(s: &Snapshot) -> String {
    if s.operator.is_none() {
        return "<section class=\"block\" id=\"failures\"><h2>Failed records</h2><p \
                class=\"muted\">Failed records name contacts: sign in as the operator to see \
                them.</p></section>"
            .to_owned();
    }
    if s.failures.is_empty() {
        return "<section class=\"block\" id=\"failures\"><h2>Failed records</h2><p \
                class=\"muted\">No failed records in the recent jobs.</p></section>"
            .to_owned();
    }
    let mut rows = String::new();
    for f in &s.failures {
        rows.push_str(&failure_row(s.now, f));
    }
    format!(
        "<section class=\"block\" id=\"failures\"><h2>Failed records <span class=\"muted\">\
         (the latest)</span></h2><table class=\"stack\"><thead><tr><th>Contact</th>\
         <th>Reason</th><th>Job</th><th>When</th></tr></thead><tbody>{rows}</tbody></table>\
         </section>"
    )
}

fn failure_row(now: DateTime<Utc>, f: &Failure) -> String {
    let r = &f.record;
    let mut who = Vec::new();
    if let Some(id) = r.contact_id {
        who.push(format!("#{id}"));
    }
    if let Some(email) = &r.email {
        who.push(email.clone());
    }
    if let Some(hs) = &r.hs_object_id {
        who.push(format!("HubSpot {hs}"));
    }
    let job = escape(&f.job.to_string());
    format!(
        "<tr><td data-label=\"Contact\">{who}</td><td data-label=\"Reason\">{reason}</td>\
         <td data-label=\"Job\" class=\"nowrap\"><a href=\"#job-{job}\" title=\"{job}\">\
         {direction} <code>{short}</code></a></td><td data-label=\"When\" class=\"nowrap\">{at}\
         </td></tr>",
        who = escape(&who.join(" · ")),
        reason = escape(&r.reason),
        direction = f.direction,
        short = escape(&short(&f.job.to_string())),
        at = time(now, f.at),
    )
}

/// The operator's sign-in form (the API token, posted to `/login`), or the sign-out button.
fn operator_html(operator: Option<Operator>) -> &'static str {
    match operator {
        Some(_) => {
            "<section class=\"block\" id=\"operator\"><h2>Operator</h2><form method=\"post\" \
             action=\"/logout\" id=\"logout\"><p>You are signed in as the operator. \
             <button class=\"quiet\" type=\"submit\">Sign out</button></p></form></section>"
        }
        None => {
            "<section class=\"block\" id=\"operator\"><h2>Operator</h2><form method=\"post\" \
             action=\"/login\" id=\"login\"><p><label>API token <input type=\"password\" \
             name=\"token\" autocomplete=\"current-password\" required></label> \
             <button type=\"submit\">Sign in</button></p></form></section>"
        }
    }
}

/// "1,000 total · 950 created · 40 linked · 10 failed": the total, then the non-zero counts.
pub(super) fn counts_text(counts: &Counts) -> String {
    let parts: Vec<(&str, u64)> = match counts {
        Counts::Push(c) => vec![
            ("created", c.created),
            ("linked", c.linked),
            ("updated", c.updated),
            ("skipped", c.skipped),
            ("failed", c.failed),
        ],
        Counts::Pull(c) => vec![
            ("created", c.created),
            ("linked", c.linked),
            ("unchanged", c.unchanged),
            ("failed", c.failed),
            ("unlinked", c.unlinked),
        ],
    };
    let mut text = format!("{} total", thousands(counts.total()));
    for (label, n) in parts.into_iter().filter(|(_, n)| *n > 0) {
        let _ = write!(text, " · {} {label}", thousands(n));
    }
    text
}

/// A `<time>` saying how long ago (or in how long) `at` is, the exact time in its title.
fn time(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let words = if at > now + Duration::seconds(1) {
        format!("in {}", span(at - now))
    } else if now - at < Duration::seconds(5) {
        "just now".to_owned()
    } else {
        format!("{} ago", span(now - at))
    };
    format!(
        "<time datetime=\"{iso}\" title=\"{exact}\">{words}</time>",
        iso = escape(&at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        exact = escape(&at.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        words = escape(&words),
    )
}

/// A duration in the two largest units that matter: "850 ms", "42 s", "3 min 05 s",
/// "2 h 07 min", "3 days 4 h".
pub(super) fn span(d: Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        _ => format!(
            "{} day{} {} h",
            s / 86_400,
            if s / 86_400 == 1 { "" } else { "s" },
            s % 86_400 / 3600
        ),
    }
}

/// `12345678` as `12,345,678`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn count(n: i64) -> String {
    thousands(u64::try_from(n).unwrap_or(0))
}

/// Records a second over `elapsed`, once a second has passed.
fn per_second(done: u64, elapsed: Duration) -> Option<f64> {
    let ms = elapsed.num_milliseconds();
    (ms >= 1000 && done > 0).then(|| done as f64 * 1000.0 / ms as f64)
}

/// How long a job ran: to its end, or to its last update while it runs.
fn duration_of(job: &Job) -> Option<Duration> {
    Some(job.finished_at? - job.started_at?)
}

/// The last eight characters of a job id: ULIDs share their leading (time) characters.
fn short_id(job: &Job) -> String {
    short(&job.id.to_string())
}

fn short(id: &str) -> String {
    id.chars()
        .skip(id.chars().count().saturating_sub(8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_grouped_by_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(3_400), "3,400");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }

    #[test]
    fn spans_use_the_two_largest_units() {
        assert_eq!(span(Duration::milliseconds(850)), "850 ms");
        assert_eq!(span(Duration::seconds(42)), "42 s");
        assert_eq!(span(Duration::seconds(185)), "3 min 05 s");
        assert_eq!(span(Duration::seconds(2 * 3600 + 7 * 60 + 9)), "2 h 07 min");
        assert_eq!(span(Duration::days(3) + Duration::hours(4)), "3 days 4 h");
        assert_eq!(
            span(Duration::seconds(-5)),
            "0 ms",
            "a clock step back is not negative"
        );
    }

    #[test]
    fn times_read_as_ago_or_in_with_the_exact_time_in_the_title() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
            .unwrap()
            .to_utc();
        let html = time(now, now - Duration::minutes(5));
        assert!(html.contains(">5 min 00 s ago</time>"), "{html}");
        assert!(html.contains("title=\"2026-12-06 11:55:00 UTC\""), "{html}");
        assert!(time(now, now + Duration::minutes(12)).contains(">in 12 min 00 s<"));
        assert!(time(now, now).contains(">just now<"));
    }

    #[test]
    fn counts_show_the_total_then_what_happened() {
        let push = crate::jobs::model::PushCounts {
            total: 1000,
            created: 950,
            linked: 40,
            failed: 10,
            ..Default::default()
        };
        assert_eq!(
            counts_text(&Counts::Push(push)),
            "1,000 total · 950 created · 40 linked · 10 failed"
        );
    }
}
