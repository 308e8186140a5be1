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
