//! Defaults that the settings and the engines both need: kept here so that the settings do
//! not depend on the sync engine for a number, nor the engine on the settings.

use std::time::Duration;

/// How far before its bookmark an incremental pull starts reading, by default
/// (`sync.pull_lookback`): far more than HubSpot's search index lags behind writes (seconds)
/// plus any sane clock skew.
pub const PULL_LOOKBACK: Duration = Duration::from_secs(5 * 60);
