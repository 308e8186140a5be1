//! The shipped documentation keeps up with the code: `config/default.toml` documents every key
//! the settings accept, and the README lists every table the service creates, on both backends.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use crm_sync::config::Settings;
use std::collections::BTreeSet;
use std::path::Path;

fn shipped(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The keys a table of the settings accepts, as the settings themselves name them: the
/// refusal of an unknown key lists every valid one ("expected one of `a`, `b`, ...").
fn accepted_keys(section: Option<&str>) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    let probe = match section {
        Some(table) if table.ends_with(']') => format!("{table}\nzz_not_a_key = 1\n"),
        Some(table) => format!("[{table}]\nzz_not_a_key = 1\n"),
        None => "zz_not_a_key = 1\n".to_owned(),
    };
    std::fs::write(dir.path().join("config/local.toml"), probe).unwrap();
    let error = Settings::load(dir.path(), &Default::default())
        .expect_err("an unknown key is refused")
        .to_string();
    let (_, expected) = error
        .split_once("expected")
        .unwrap_or_else(|| panic!("{section:?}: the refusal lists the keys: {error}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Every `key = ...` line of `default.toml`, commented out or not, as `section.key`.
fn documented_keys(toml: &str) -> BTreeSet<String> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in toml.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(table) = line.strip_prefix('[') {
            section = table.trim_matches(|c| c == '[' || c == ']').to_owned();
        } else if let Some((key, _)) = line.split_once(" = ")
            && !key.contains(' ')
        {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

#[test]
fn default_toml_documents_every_key_the_settings_accept() {
    let documented = documented_keys(&shipped("config/default.toml"));
    let sections = accepted_keys(None);
    assert!(
        sections.contains("database") && sections.contains("sync"),
        "{sections:?}"
    );
    let mut missing = Vec::new();
    for section in &sections {
        for key in accepted_keys(Some(section)) {
            let dotted = format!("{section}.{key}");
            if dotted == "sync.schedules" || dotted == "sync.objects" {
                // Lists of tables, documented by their entries' keys below.
                continue;
            }
            if !documented.contains(&dotted) {
                missing.push(dotted);
            }
        }
    }
    for list in ["schedules", "objects"] {
        for key in accepted_keys(Some(&format!("[[sync.{list}]]"))) {
            let dotted = format!("sync.{list}.{key}");
            // An entry's fields are a table of its own, documented by its header.
            let header = format!("sync.{list}.{key}.");
            if !documented.contains(&dotted) && !documented.iter().any(|d| d.starts_with(&header)) {
                missing.push(dotted);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "config/default.toml does not document {missing:?}"
    );
}

/// The README's "Tables" section: from its heading to the next one.
fn readme_tables_section() -> String {
    let readme = shipped("README.md");
    let start = readme
        .find("### Tables")
        .expect("the README has a Tables section");
    let rest = &readme[start + 1..];
    let end = rest.find("\n#").map_or(rest.len(), |i| i + 1);
    rest[..end].to_owned()
}

backend_tests! {
    async fn the_readme_lists_every_table_the_service_creates(db: TestDb) {
        let store = db.store().await;
        let tables: Vec<String> = if let Some(pool) = store.pg_pool() {
            sqlx::query_scalar(
                "SELECT CASE table_schema WHEN 'public' THEN table_name \
                 ELSE table_schema || '.' || table_name END \
                 FROM information_schema.tables \
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
                 AND table_type = 'BASE TABLE'",
            )
            .fetch_all(pool)
            .await
            .unwrap()
        } else {
            sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(store.sqlite_pool().unwrap())
            .await
            .unwrap()
        };
        assert!(tables.len() > 10, "{db}: {tables:?}");
        let section = readme_tables_section();
        let missing: Vec<&String> = tables
            .iter()
            .filter(|t| !section.contains(&format!("`{t}`")))
            .collect();
        assert!(missing.is_empty(), "{db}: the README does not list {missing:?}");
        store.close().await;
    }
}
