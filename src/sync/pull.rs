//! Pull: HubSpot contacts → local rows.

use super::SyncContext;
use crate::jobs::model::Job;
use crate::jobs::{Progress, RunError};
use std::time::Duration;

/// How far before its bookmark an incremental pull starts reading, by default.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(5 * 60);

/// Runs a pull job (full or incremental) from its checkpoint.
pub async fn run(_ctx: &SyncContext, _job: &Job, _progress: &Progress) -> Result<(), RunError> {
    Err(RunError::Fatal("pull is being built".to_owned()))
}
