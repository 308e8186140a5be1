//! Time as HubSpot shows it: milliseconds since the epoch, ISO 8601 with milliseconds.

use chrono::{SecondsFormat, TimeZone, Utc};

/// Now, in milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `2024-05-01T12:00:00.000Z` for a millisecond instant.
pub(crate) fn iso_millis(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_has_milliseconds_and_z() {
        assert_eq!(iso_millis(1_564_113_600_000), "2019-07-26T04:00:00.000Z");
    }
}
