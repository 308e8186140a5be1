//! Timestamps written by the service in the same form on both backends.
//!
//! PostgreSQL stores `TIMESTAMPTZ`. SQLite has no time type: columns hold TEXT in one fixed
//! RFC 3339 UTC format with milliseconds (what the migrations' defaults produce), so that text
//! order is time order. sqlx would bind a `DateTime` as `+00:00` with nanoseconds, which sorts
//! differently; binding through [`DbTime`] keeps one format.

use chrono::{DateTime, Utc};
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo};
use sqlx::{Postgres, Sqlite, Type};

/// The format of every SQLite time column, as `strftime('%Y-%m-%dT%H:%M:%fZ', 'now')` writes it.
const SQLITE_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// A point in time bound as a query parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DbTime(pub DateTime<Utc>);

impl Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for DbTime {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Postgres>::encode_by_ref(&self.0, buf)
    }
}

impl Type<Sqlite> for DbTime {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
}

impl Encode<'_, Sqlite> for DbTime {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        Encode::<Sqlite>::encode(self.0.format(SQLITE_FORMAT).to_string(), buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn sqlite_format_matches_the_column_defaults() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 14, 3, 0).unwrap();
        assert_eq!(
            t.format(SQLITE_FORMAT).to_string(),
            "2026-11-28T14:03:00.000Z"
        );
    }
}
