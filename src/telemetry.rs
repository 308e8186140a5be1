//! Logs: tracing-subscriber to stderr, readable text on a terminal or JSON lines for
//! collectors, filtered by `RUST_LOG`.
//!
//! Secrets stay out of logs by construction: every secret is a [`crate::secret::Secret`]
//! (redacted `Debug`/`Display`) and database URLs are logged only through
//! [`crate::secret::redact_url`].

use std::io::IsTerminal as _;
use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is unset: the service's own info lines, only warnings from sqlx
/// (which otherwise logs every slow statement).
pub const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. A second call (several commands in one test process)
/// keeps the first subscriber.
pub fn init(format: LogFormat) {
    let (filter, bad_filter) = filter_from_env();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    if installed.is_ok()
        && let Some(problem) = bad_filter
    {
        tracing::warn!(
            "ignoring RUST_LOG ({problem}); using \"{DEFAULT_FILTER}\". \
             Example: RUST_LOG=debug or RUST_LOG=info,crm_sync=debug"
        );
    }
}

/// `RUST_LOG` when set and valid, else [`DEFAULT_FILTER`] (with the reason when it was invalid).
fn filter_from_env() -> (EnvFilter, Option<String>) {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(raw) if !raw.trim().is_empty() => match EnvFilter::try_new(&raw) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(e.to_string())),
        },
        _ => (EnvFilter::new(DEFAULT_FILTER), None),
    }
}
