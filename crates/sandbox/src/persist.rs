//! The sandbox's memory across restarts: like a HubSpot account, a sandbox with a state file
//! keeps its contacts, companies, associations, properties, OAuth app, issued tokens, id counter and portal id.
//!
//! The whole state is one JSON snapshot, replaced atomically (written to a temporary file in
//! the same folder, synced, renamed over the old one, folder synced), so that a crash leaves
//! either the previous snapshot or the new one, never half of one. Writes are debounced: the
//! first change arms a timer of [`DEBOUNCE`], and everything changed until it fires goes into
//! one snapshot, so a 100,000-contact push rewrites the file a few times a second at most, not
//! once per batch. A graceful stop saves what is left. docs/sandbox.md gives the figures.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::SandboxError;
use super::associations::Associations;
use super::crm::Crm;
use super::oauth::Tokens;
use super::objects::CrmObject;
use super::state::{State, lock};
use super::store::Store;
use super::variants::{CompanyVariants, Variants};

/// How long after a change the snapshot is written (changes meanwhile join it).
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(200);

/// The snapshot format this build writes and reads.
const FORMAT: u32 = 1;

/// How far a sandbox resumed after a crash moves its id counters on: further than it can have
/// issued in the changes a crash loses (one debounce and two saves, about a second, at most a
/// few hundred thousand creates), so that no id a client already holds is issued again for
/// another record. HubSpot never reuses an id; a sandbox that did would have clients link
/// their records to strangers.
pub(crate) const CRASH_ID_GAP: u64 = 1_000_000;

/// Portal ids a fresh sandbox draws from when the previous one's is unreadable.
const FRESH_PORTAL_RANGE: std::ops::Range<i64> = 2_000_001..9_000_000;

/// Whether a start resumes the state file or replaces it with a new account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum StartMode {
    /// Resume the file's account; a missing file starts a new one.
    #[default]
    Resume,
    /// A new account with another portal id; the old file is kept beside as `*.previous`.
    Fresh,
}

/// The account's identity: what a client stores and expects to find again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Account {
    /// The portal (account) id.
    pub portal_id: i64,
    /// The private-app token.
    pub access_token: String,
    /// The OAuth app's client id.
    pub client_id: String,
    /// The OAuth app's client secret.
    pub client_secret: String,
    /// The seed of generated contacts and faults.
    pub rng_seed: u64,
    /// How many contacts the generator made (a resumed one goes on from there).
    pub generated: u64,
}

/// A saved sandbox, as read back.
#[derive(Debug, Deserialize)]
pub(crate) struct Snapshot {
    format: u32,
    /// Who the account is.
    pub account: Account,
    /// The variants in force when it was saved.
    pub variants: Variants,
    /// Codes and tokens issued.
    pub oauth: Tokens,
    /// Contacts, properties, indexes, the id counter.
    pub store: Store,
    /// Companies (absent in files written before the sandbox had them).
    #[serde(default)]
    pub companies: Option<Store>,
    /// Contact–company pairs (absent in older files).
    #[serde(default)]
    pub associations: Associations,
    /// The company and association variants in force when it was saved.
    #[serde(default)]
    pub company_variants: CompanyVariants,
    /// Written by a graceful stop's last save; false (and absent in older files) when the
    /// process may have died with changes the file does not hold.
    #[serde(default)]
    pub stopped_cleanly: bool,
}

impl Snapshot {
    /// The CRM this snapshot holds, with the index lag of this run.
    pub(crate) fn crm(
        store: Store,
        companies: Option<Store>,
        associations: Associations,
        search_delay_ms: u64,
    ) -> Crm {
        let companies = match companies {
            Some(c) => c.with_search_delay(search_delay_ms),
            None => Store::new(CrmObject::Companies, search_delay_ms),
        };
        let mut contacts = store.with_search_delay(search_delay_ms);
        // Files of before property groups hold none; the built-in one always exists.
        contacts.catalog.add_builtin_group(CrmObject::Contacts);
        Crm {
            contacts,
            companies,
            associations,
        }
    }
}

/// A saved sandbox, as written (borrowing the live state under its locks).
#[derive(Serialize)]
struct SnapshotRef<'a> {
    format: u32,
    account: &'a Account,
    variants: Variants,
    oauth: &'a Tokens,
    store: &'a Store,
    companies: &'a Store,
    associations: &'a Associations,
    company_variants: CompanyVariants,
    stopped_cleanly: bool,
}

/// Just the account of a snapshot (to pick a different portal id for a fresh start).
#[derive(Deserialize)]
struct AccountOnly {
    account: PortalOnly,
}

#[derive(Deserialize)]
struct PortalOnly {
    portal_id: i64,
}

/// What a start begins with.
#[derive(Debug)]
pub(crate) enum Origin {
    /// A new account with this portal id.
    New {
        /// The portal id.
        portal_id: i64,
    },
    /// The account saved in the file.
    Resumed(Box<Snapshot>),
}

/// Reads the state file as `mode` says. `default_portal` is a new account's portal id when
/// there is no previous one to differ from; `fresh_flag` is named in errors.
pub(crate) fn open(
    path: &Path,
    mode: StartMode,
    default_portal: i64,
    fresh_flag: &'static str,
) -> Result<Origin, SandboxError> {
    match mode {
        StartMode::Resume => match read(path) {
            Ok(None) => Ok(Origin::New {
                portal_id: default_portal,
            }),
            Ok(Some(snapshot)) => Ok(Origin::Resumed(Box::new(snapshot))),
            Err(problem) => Err(SandboxError::State {
                path: path.to_owned(),
                problem,
                fresh_flag,
            }),
        },
        StartMode::Fresh => Ok(Origin::New {
            portal_id: fresh_portal(path, default_portal)?,
        }),
    }
}

/// The snapshot in `path`; `None` when there is no file.
fn read(path: &Path) -> Result<Option<Snapshot>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let snapshot: Snapshot =
        serde_json::from_slice(&bytes).map_err(|e| format!("not a sandbox state file ({e})"))?;
    if snapshot.format != FORMAT {
        return Err(format!(
            "format {} is not the format {FORMAT} this crm-sync reads",
            snapshot.format
        ));
    }
    Ok(Some(snapshot))
}

/// A portal id other than the previous account's: the next one when the old file names it,
/// a random one when it is unreadable. The old file is kept as `*.previous`.
fn fresh_portal(path: &Path, default_portal: i64) -> Result<i64, SandboxError> {
    let previous = match std::fs::read(path) {
        Ok(bytes) => Some(
            serde_json::from_slice::<AccountOnly>(&bytes)
                .map(|a| a.account.portal_id)
                .ok(),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(write_error(path, source)),
    };
    let portal = match previous {
        None => default_portal,
        Some(Some(id)) => id + 1,
        // Unreadable: whatever it was, a random id is all but certainly another.
        Some(None) => rand::random_range(FRESH_PORTAL_RANGE),
    };
    if previous.is_some() {
        std::fs::rename(path, previous_path(path)).map_err(|e| write_error(path, e))?;
    }
    Ok(portal)
}

/// Where a fresh start keeps the replaced state file.
pub(crate) fn previous_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".previous");
    path.with_file_name(name)
}

fn write_error(path: &Path, source: std::io::Error) -> SandboxError {
    SandboxError::StateWrite {
        path: path.to_owned(),
        source,
    }
}

/// When a save happens, which decides whether it is written without changes and what it
/// says about the stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaveAt {
    /// While serving: only when something changed.
    Running,
    /// At start, before the first answer: always, saying the process is running, so that a
    /// crash from now on is known at the next start.
    Start,
    /// A graceful stop's last save: always, saying the stop was clean.
    Stop,
}

/// Writes the state now if it changed since the last save (blocking: serialises and syncs).
pub(crate) fn save_now(state: &State) -> Result<(), SandboxError> {
    save(state, SaveAt::Running)
}

/// Writes the state as `at` says (blocking: serialises and syncs).
pub(crate) fn save(state: &State, at: SaveAt) -> Result<(), SandboxError> {
    let Some(persist) = state.persist.as_ref() else {
        return Ok(());
    };
    let _one_at_a_time = lock(&persist.saving);
    let changes = persist.changes.load(Ordering::Acquire);
    if at == SaveAt::Running && changes == persist.saved.load(Ordering::Acquire) {
        return Ok(());
    }
    let bytes = serialise(state, at == SaveAt::Stop).map_err(|e| write_error(&persist.path, e))?;
    write_atomically(&persist.path, &bytes).map_err(|e| write_error(&persist.path, e))?;
    persist.saved.fetch_max(changes, Ordering::AcqRel);
    Ok(())
}

/// The state as JSON, each part read under its own lock.
fn serialise(state: &State, stopped_cleanly: bool) -> std::io::Result<Vec<u8>> {
    let account = Account {
        portal_id: state.cfg.portal_id,
        access_token: state.cfg.access_token.expose().to_owned(),
        client_id: state.cfg.client_id.clone(),
        client_secret: state.cfg.client_secret.expose().to_owned(),
        rng_seed: state.cfg.rng_seed,
        generated: lock(&state.generator).made(),
    };
    let variants = state.variants();
    let company_variants = state.company_variants();
    let crm = lock(&state.store);
    state.oauth.with_issued(|oauth| {
        serde_json::to_vec(&SnapshotRef {
            format: FORMAT,
            account: &account,
            variants,
            oauth,
            store: &crm.contacts,
            companies: &crm.companies,
            associations: &crm.associations,
            company_variants,
            stopped_cleanly,
        })
        .map_err(std::io::Error::other)
    })
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new file whole; the
/// file is readable by its owner only (it holds the app's secret and tokens).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    // Unique per save, not only per process: two sandboxes of one process (a test's crashed
    // one whose saver still runs, and its successor) must never rename each other's file.
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let save = SAVES.fetch_add(1, Ordering::Relaxed);
    name.push(format!(".{}.{save}.tmp", std::process::id()));
    let tmp = dir.join(name);
    let written = write_private(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    // The rename itself is durable only once the folder is synced.
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Saves after changes (debounced) until `stop`, then once more; runs beside the server.
pub(crate) async fn keep_saved(state: Arc<State>, mut stop: oneshot::Receiver<()>) {
    let Some(persist) = state.persist.as_ref() else {
        return;
    };
    loop {
        tokio::select! {
            () = persist.wake.notified() => {}
            _ = &mut stop => break,
        }
        tokio::select! {
            () = tokio::time::sleep(DEBOUNCE) => {}
            _ = &mut stop => break,
        }
        if !save_in_background(&state, SaveAt::Running).await {
            // Retry after the next debounce rather than forget the change.
            persist.wake.notify_one();
        }
    }
    save_in_background(&state, SaveAt::Stop).await;
}

/// Saves off the runtime's worker threads; false (and logged) when it failed.
async fn save_in_background(state: &Arc<State>, at: SaveAt) -> bool {
    let state = state.clone();
    let saved = tokio::task::spawn_blocking(move || save(&state, at)).await;
    match saved {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "the sandbox could not save its state");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "the sandbox's state save stopped");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_file_sits_beside_the_state_file() {
        assert_eq!(
            previous_path(Path::new("data/sandbox-state.json")),
            Path::new("data/sandbox-state.json.previous")
        );
    }

    #[test]
    fn a_fresh_start_takes_the_next_portal_id_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, r#"{"format":1,"account":{"portal_id":41}}"#).expect("write");
        let portal = fresh_portal(&path, 7).expect("fresh");
        assert_eq!(portal, 42);
        assert!(!path.exists());
        assert!(previous_path(&path).exists());
        assert_eq!(
            fresh_portal(&path, 7).expect("fresh"),
            7,
            "no file: the default"
        );
    }

    #[test]
    fn a_fresh_start_over_an_unreadable_file_draws_a_portal_id_from_its_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, "not json").expect("write");
        let portal = fresh_portal(&path, 7).expect("fresh");
        assert!(FRESH_PORTAL_RANGE.contains(&portal), "{portal}");
    }
}
