//! `crm-sync sync` and `crm-sync jobs` as users run them: the built binary in a temporary
//! working directory, on SQLite and PostgreSQL.

mod common;

use common::TestDb;
use std::path::Path;
use std::process::{Command, Output, Stdio};

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&super::TestDb::sqlite().await).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = super::TestDb::postgres_if_available().await else {
                        return;
                    };
                    super::$name(&db).await
                }
            )*
        }
    };
}

on_both_backends!(
    sync_enqueues_once_and_jobs_lists_and_shows_it,
    invalid_sync_flags_fail_with_one_line_naming_the_choices,
);

/// Runs `crm-sync ARGS` against `db` with nothing inherited but PATH and HOME.
fn crm_sync(dir: &Path, db: &TestDb, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crm-sync"));
    cmd.current_dir(dir)
        .env_clear()
        .stdin(Stdio::null())
        .env("CRM_SYNC__DATABASE__URL", db.url())
        .args(args);
    for var in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    cmd.output().expect("run crm-sync")
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
