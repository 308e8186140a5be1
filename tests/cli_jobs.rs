//! `crm-sync sync` and `crm-sync jobs` as users run them: the built binary in a temporary
//! working directory, on SQLite and PostgreSQL.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use common::TestDb;
use common::process::Running;
use crm_sync::sandbox::{Sandbox, SandboxArgs, SandboxHandle};
use crm_sync::store::NewContact;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

backend_tests!(
    fixture = common::same_db;
    sync_enqueues_once_and_jobs_lists_and_shows_it,
    invalid_sync_flags_fail_with_one_line_naming_the_choices,
    sync_wait_exits_0_only_when_every_record_went_through,
    cancel_stops_an_active_job_and_refuses_unknown_and_ended_ones,
    a_wait_timeout_leaves_the_job_going_and_names_it,
    sync_job_follows_an_existing_job_without_enqueueing,
    the_wait_bar_is_never_drawn_full_before_anything_is_counted,
    a_dry_run_is_its_own_job_and_reports_without_writing,
);

/// Runs `crm-sync ARGS` against `db` with nothing inherited but PATH and HOME.
fn crm_sync(dir: &Path, db: &TestDb, args: &[&str]) -> Output {
    crm_sync_command(dir, db, args)
        .output()
        .expect("run crm-sync")
}

/// `crm-sync ARGS` against `db` with nothing inherited but PATH and HOME, not yet run.
fn crm_sync_command(dir: &Path, db: &TestDb, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crm-sync"));
    cmd.current_dir(dir)
        .env_clear()
        .stdin(Stdio::null())
        .env("CRM_SYNC__DATABASE__URL", db.url())
        // PostgreSQL needs a configured key; one for every backend keeps the runs alike.
        .env(
            "CRM_SYNC__SECURITY__ENCRYPTION_KEY",
            "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        )
        .args(args);
    for var in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    cmd
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The single `error: ` line of a failed run (exit status 1).
fn error_line(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_owned()
}

async fn sync_enqueues_once_and_jobs_lists_and_shows_it(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let first = stdout(&crm_sync(
        dir.path(),
        db,
        &["sync", "push", "--mode", "upsert"],
    ));
    assert!(first.starts_with("enqueued push job "), "{first}");
    let id = first.split_whitespace().nth(3).unwrap().to_owned();

    let again = stdout(&crm_sync(dir.path(), db, &["sync", "push"]));
    assert!(
        again.contains("already queued") && again.contains(&id),
        "{again}"
    );

    let table = stdout(&crm_sync(dir.path(), db, &["jobs"]));
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("the job is listed");
    for word in ["push", "upsert", "cli", "queued"] {
        assert!(row.split_whitespace().any(|w| w == word), "{word}: {row}");
    }

    let shown = stdout(&crm_sync(dir.path(), db, &["jobs", &id]));
    let job: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["trigger"], "cli");
    assert_eq!(job["counts"]["skipped"], 0);

    let unknown = error_line(&crm_sync(dir.path(), db, &["jobs", "no-such-job"]));
    assert!(
        unknown.contains("no job with id \"no-such-job\""),
        "{unknown}"
    );
}

async fn invalid_sync_flags_fail_with_one_line_naming_the_choices(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let line = error_line(&crm_sync(
        dir.path(),
        db,
        &["sync", "pull", "--mode", "link"],
    ));
    assert!(line.contains("\"upsert\" or \"verbose\""), "{line}");
    let line = error_line(&crm_sync(
        dir.path(),
        db,
        &["sync", "push", "--incremental"],
    ));
    assert!(line.contains("pull only"), "{line}");
    let usage = crm_sync(dir.path(), db, &["sync", "sideways"]);
    assert_eq!(usage.status.code(), Some(2), "a usage error: {usage:?}");
}

/// `sync --wait` run as a child process without blocking the test's runtime (the in-process
/// sandbox answers on it).
async fn sync_wait(dir: &Path, db: &TestDb) -> Output {
    let mut cmd = tokio::process::Command::from(crm_sync_command(dir, db, &[]));
    cmd.args(["sync", "push", "--wait"]);
    cmd.output().await.expect("run crm-sync sync push --wait")
}

/// A `crm-sync worker` on `db` that reaches `hubspot` with `token`.
fn worker(dir: &Path, db: &TestDb, hubspot: &SandboxHandle, token: &str) -> Running {
    let mut cmd = crm_sync_command(dir, db, &["worker"]);
    cmd.env("CRM_SYNC__HUBSPOT__API_BASE_URL", hubspot.base_url())
        .env("CRM_SYNC__HUBSPOT__ACCESS_TOKEN", token);
    Running::start(cmd, dir)
}

fn people(emails: &[&str]) -> Vec<NewContact> {
    emails
        .iter()
        .map(|e| NewContact {
            email: Some((*e).to_owned()),
            first_name: Some("Ada".to_owned()),
            last_name: Some("Lovelace".to_owned()),
        })
        .collect()
}

fn exit_and_error(out: &Output) -> (Option<i32>, String) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect::<Vec<_>>()
        .join("\n");
    (out.status.code(), error)
}

async fn sync_wait_exits_0_only_when_every_record_went_through(db: &TestDb) {
    let store = db.store().await;
    let args = SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        rng_seed: Some(3),
        ..SandboxArgs::default()
    };
    let hubspot = Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the sandbox starts");
    let dir = tempfile::tempdir().unwrap();
    let good = worker(dir.path(), db, &hubspot, hubspot.access_token());

    store
        .insert_contacts(&people(&["ada@acme.io", "grace@acme.io"]))
        .await
        .unwrap();
    let out = sync_wait(dir.path(), db).await;
    assert_eq!(exit_and_error(&out), (Some(0), String::new()), "{out:?}");

    // HubSpot refuses all seven emails: the job succeeds, its records do not.
    let invalid: Vec<String> = (1..=7).map(|i| format!("nobody{i}@")).collect();
    let invalid: Vec<&str> = invalid.iter().map(String::as_str).collect();
    store.insert_contacts(&people(&invalid)).await.unwrap();
    let out = sync_wait(dir.path(), db).await;
    let (code, error) = exit_and_error(&out);
    assert_eq!(code, Some(4), "{out:?}");
    assert!(
        error.contains("succeeded, but 7 of 7 records failed"),
        "{error}"
    );
    let counts = String::from_utf8_lossy(&out.stdout);
    assert!(
        counts
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["failed", "7"]),
        "the counts are printed: {counts}"
    );
    drop(good);

    // A worker whose token HubSpot refuses: the job itself fails.
    let _refused = worker(dir.path(), db, &hubspot, "pat-na1-not-a-token");
    store
        .insert_contacts(&people(&["alan@acme.io"]))
        .await
        .unwrap();
    let out = sync_wait(dir.path(), db).await;
    let (code, error) = exit_and_error(&out);
    assert_eq!(code, Some(3), "{out:?}");
    assert!(error.contains(" failed"), "{error}");

    let help = crm_sync(dir.path(), db, &["sync", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for line in [
        "0  the job was enqueued",
        "3  with --wait",
        "4  with --wait",
    ] {
        assert!(
            help.contains(line),
            "--help documents the exit status: {help}"
        );
    }
}

/// The id in `enqueued push job ID (mode)`.
fn enqueued_id(dir: &Path, db: &TestDb) -> String {
    let line = stdout(&crm_sync(dir, db, &["sync", "push"]));
    assert!(line.starts_with("enqueued push job "), "{line}");
    line.split_whitespace().nth(3).unwrap().to_owned()
}

/// The job's `status` as `crm-sync jobs ID` shows it.
fn status_of(dir: &Path, db: &TestDb, id: &str) -> String {
    let shown = stdout(&crm_sync(dir, db, &["jobs", id]));
    let job: serde_json::Value = serde_json::from_str(&shown).unwrap();
    job["status"].as_str().unwrap().to_owned()
}

async fn cancel_stops_an_active_job_and_refuses_unknown_and_ended_ones(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let id = enqueued_id(dir.path(), db);

    let out = stdout(&crm_sync(dir.path(), db, &["cancel", &id]));
    assert_eq!(
        out.trim(),
        format!("cancelled push job {id} (it was queued)")
    );
    assert_eq!(status_of(dir.path(), db, &id), "cancelled");

    let again = crm_sync(dir.path(), db, &["cancel", &id]);
    let (code, error) = exit_and_error(&again);
    assert_eq!(code, Some(6), "{again:?}");
    assert_eq!(
        error,
        format!("error: job {id} has already ended (cancelled); there is nothing to cancel")
    );

    let unknown = error_line(&crm_sync(
        dir.path(),
        db,
        &["cancel", "01JF0000000000000000000000"],
    ));
    assert!(
        unknown.contains("no job with id \"01JF0000000000000000000000\""),
        "{unknown}"
    );
    let help = String::from_utf8_lossy(&crm_sync(dir.path(), db, &["cancel", "--help"]).stdout)
        .into_owned();
    assert!(help.contains("6  the job had already ended"), "{help}");
}

async fn a_wait_timeout_leaves_the_job_going_and_names_it(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    // No worker runs: the job stays queued.
    let out = crm_sync(
        dir.path(),
        db,
        &["sync", "push", "--wait", "--timeout", "1s"],
    );
    let (code, error) = exit_and_error(&out);
    assert_eq!(code, Some(5), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_owned();
    assert!(
        error.contains(&format!("job {id} is still queued")),
        "{error}"
    );
    assert!(error.contains("nothing was cancelled"), "{error}");
    assert!(error.contains(&format!("crm-sync cancel {id}")), "{error}");
    assert_eq!(status_of(dir.path(), db, &id), "queued", "not cancelled");

    let usage = crm_sync(
        dir.path(),
        db,
        &["sync", "push", "--wait", "--timeout", "soon"],
    );
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
    let without_wait = crm_sync(dir.path(), db, &["sync", "push", "--timeout", "1s"]);
    assert_eq!(
        without_wait.status.code(),
        Some(2),
        "a usage error: {without_wait:?}"
    );
    assert!(
        String::from_utf8_lossy(&without_wait.stderr).contains("--wait"),
        "{without_wait:?}"
    );
}

async fn sync_job_follows_an_existing_job_without_enqueueing(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let id = enqueued_id(dir.path(), db);
    let out = crm_sync(dir.path(), db, &["sync", "--job", &id, "--timeout", "1s"]);
    let (code, error) = exit_and_error(&out);
    assert_eq!(code, Some(5), "{out:?}");
    assert!(
        error.contains(&format!("job {id} is still queued")),
        "{error}"
    );
    let table = stdout(&crm_sync(dir.path(), db, &["jobs"]));
    assert_eq!(
        table.lines().count(),
        2,
        "a header and the one job, nothing enqueued: {table}"
    );

    stdout(&crm_sync(dir.path(), db, &["cancel", &id]));
    let out = crm_sync(dir.path(), db, &["sync", "--job", &id]);
    let (code, error) = exit_and_error(&out);
    assert_eq!(code, Some(3), "an ended job is reported at once: {out:?}");
    assert!(error.contains(&format!("job {id} cancelled")), "{error}");
    let unknown = error_line(&crm_sync(dir.path(), db, &["sync", "--job", "nope"]));
    assert!(unknown.contains("no job with id \"nope\""), "{unknown}");
}

/// Runs `crm-sync ARGS` on a pseudo-terminal (util-linux `script`), so that the progress line
/// is drawn; returns the exit status and everything the terminal showed.
fn on_a_terminal(dir: &Path, db: &TestDb, args: &[&str]) -> Option<(Option<i32>, String)> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return None;
    }
    let command = std::iter::once(env!("CARGO_BIN_EXE_crm-sync"))
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    // `script` runs the command line itself, in crm_sync_command's environment.
    let env = crm_sync_command(dir, db, &[]);
    let mut script = Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .env_clear()
        .envs(env.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("TERM", "xterm")
        .stdin(Stdio::null());
    let out = script.output().expect("run script");
    Some((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

async fn the_wait_bar_is_never_drawn_full_before_anything_is_counted(db: &TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let Some((code, screen)) = on_a_terminal(
        dir.path(),
        db,
        &["sync", "push", "--wait", "--timeout", "2s"],
    ) else {
        return;
    };
    assert_eq!(code, Some(5), "{screen}");
    // "queued (0s)": the spinner's status and time waited, with no count and no bar.
    assert!(
        screen.contains("queued (0s)"),
        "the progress line was drawn: {screen}"
    );
    assert!(!screen.contains("0/0"), "{screen}");
    assert!(!screen.contains("[="), "no bar without a total: {screen}");
}

async fn a_dry_run_is_its_own_job_and_reports_without_writing(db: &TestDb) {
    let store = db.store().await;
    store
        .insert_contacts(&people(&["ada@acme.io", "grace@acme.io"]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // No worker yet: the real push waits, and a dry run asked meanwhile is a job of its own.
    let real = stdout(&crm_sync(dir.path(), db, &["sync", "push"]));
    let real_id = real.split_whitespace().nth(3).unwrap().to_owned();
    let planned = stdout(&crm_sync(dir.path(), db, &["sync", "push", "--dry-run"]));
    assert!(
        planned.starts_with("enqueued dry-run push job "),
        "{planned}"
    );
    let dry_id = planned.split_whitespace().nth(4).unwrap().to_owned();
    assert_ne!(dry_id, real_id);
    crm_sync(dir.path(), db, &["cancel", &real_id]);

    let args = SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        rng_seed: Some(3),
        ..SandboxArgs::default()
    };
    let hubspot = Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("the sandbox starts");
    let _worker = worker(dir.path(), db, &hubspot, hubspot.access_token());
    let mut follow = tokio::process::Command::from(crm_sync_command(
        dir.path(),
        db,
        &["sync", "--job", &dry_id],
    ));
    let out = follow.output().await.expect("run crm-sync sync --job");
    assert_eq!(exit_and_error(&out), (Some(0), String::new()), "{out:?}");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("push/link dry run succeeded"), "{summary}");
    assert!(
        summary
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["created", "2"]),
        "{summary}"
    );
    assert_eq!(hubspot.contact_count(), 0, "a dry run creates nothing");

    let shown = stdout(&crm_sync(dir.path(), db, &["jobs", &dry_id]));
    let job: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(job["dry_run"], true);
    assert_eq!(job["plan"]["calls"]["batch_create"], 1, "{job}");
    assert_eq!(job["plan"]["actions"][0]["action"], "create", "{job}");
}
