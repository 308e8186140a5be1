//! Property values as HubSpot writes and reads them: every value travels as a string, and
//! the format depends on the property's type.
//!
//! - `date`: `YYYY-MM-DD` or epoch milliseconds at exactly midnight UTC; other times of day
//!   are refused by HubSpot ("… is at HH:MM:SS UTC, not midnight!").
//! - `datetime`: ISO 8601 in UTC (`YYYY-MM-DDThh:mm:ss.sssZ`) or epoch milliseconds.
//! - `bool`: `true` / `false`.
//! - `enumeration`: the options' internal values; several (multi-select) joined with `;`
//!   without spaces. A leading `;` would append to the existing values, so it is never sent.
//! - `number`: digits with at most one decimal point; commas and currency signs are refused.
//! - An empty string clears a value.

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, TimeZone, Utc};

use super::models::PropertyKind;

/// A value that cannot be written in the format its property's type needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A `date` given as a time of day other than midnight UTC.
    #[error("{0} is not at midnight UTC, which a HubSpot date property requires")]
    DateNotMidnight(String),
    /// Not a date.
    #[error("{0:?} is not a date (YYYY-MM-DD or epoch milliseconds at midnight UTC)")]
    InvalidDate(String),
    /// Not an instant.
    #[error("{0:?} is not a date-time (ISO 8601 or epoch milliseconds)")]
    InvalidDatetime(String),
    /// Not `true` or `false`.
    #[error("{0:?} is not a boolean (true or false)")]
    InvalidBool(String),
    /// Not a plain decimal number.
    #[error(
        "{0:?} is not a number HubSpot accepts (digits, one decimal point, no commas or currency)"
    )]
    InvalidNumber(String),
    /// An enumeration value that is empty or contains the `;` separator.
    #[error("{0:?} cannot be an enumeration value (empty, or it contains ';')")]
    InvalidOption(String),
}

/// A value of a known type, to be written to HubSpot.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    /// `string`, `phone_number`: as is.
    Text(String),
    /// `number`: a decimal in text, checked.
    Number(String),
    /// `bool`.
    Bool(bool),
    /// `date`.
    Date(NaiveDate),
    /// `datetime`.
    DateTime(DateTime<Utc>),
    /// `enumeration`: one or more option values.
    Enumeration(Vec<String>),
    /// No value (clears it).
    Clear,
}

impl PropertyValue {
    /// The string HubSpot takes for this value.
    pub fn to_hubspot(&self) -> Result<String, ValueError> {
        match self {
            Self::Text(text) => Ok(text.clone()),
            Self::Number(raw) => number_to_hubspot(raw),
            Self::Bool(b) => Ok(b.to_string()),
            Self::Date(date) => Ok(date_to_hubspot(*date)),
            Self::DateTime(at) => Ok(datetime_to_hubspot(*at)),
            Self::Enumeration(values) => enumeration_to_hubspot(values),
            Self::Clear => Ok(String::new()),
        }
    }
}

/// A value given as text (as a database column reads) in the form a property of `kind` takes:
/// dates from `YYYY-MM-DD` or a midnight instant, date-times from ISO 8601 or epoch ms,
/// booleans also from `1`/`0`, `t`/`f`, `yes`/`no`, enumerations from `;`-separated values.
/// An empty text clears the value.
pub fn convert(kind: PropertyKind, raw: &str) -> Result<String, ValueError> {
    if raw.trim().is_empty() {
        return Ok(String::new());
    }
    match kind {
        PropertyKind::String | PropertyKind::PhoneNumber => Ok(raw.to_owned()),
        PropertyKind::Number => number_to_hubspot(raw),
        PropertyKind::Bool => bool_from_text(raw).map(|b| b.to_string()),
        PropertyKind::Date => date_from_hubspot(raw).map(date_to_hubspot),
        PropertyKind::Datetime => datetime_from_hubspot(raw).map(datetime_to_hubspot),
        PropertyKind::Enumeration => enumeration_to_hubspot(&enumeration_from_hubspot(raw)),
    }
}

/// A boolean from the texts databases and people use for one.
fn bool_from_text(raw: &str) -> Result<bool, ValueError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "yes" | "y" | "on" => Ok(true),
        "0" | "f" | "no" | "n" | "off" => Ok(false),
        _ => bool_from_hubspot(raw),
    }
}

/// A date as epoch milliseconds at midnight UTC, the form every HubSpot API version takes.
pub fn date_to_hubspot(date: NaiveDate) -> String {
    date.and_time(NaiveTime::MIN)
        .and_utc()
        .timestamp_millis()
        .to_string()
}

/// A date HubSpot sent or a user wrote: `YYYY-MM-DD`, an ISO date-time at midnight UTC, or
/// epoch milliseconds at midnight UTC.
pub fn date_from_hubspot(raw: &str) -> Result<NaiveDate, ValueError> {
    let text = raw.trim();
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date);
    }
    let at = instant(text).ok_or_else(|| ValueError::InvalidDate(raw.to_owned()))?;
    if at.time() != NaiveTime::MIN {
        return Err(ValueError::DateNotMidnight(raw.to_owned()));
    }
    Ok(at.date_naive())
}

/// A date-time as ISO 8601 in UTC with milliseconds (`2026-12-06T15:04:05.000Z`).
pub fn datetime_to_hubspot(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A date-time HubSpot sent: ISO 8601 (any offset) or epoch milliseconds.
pub fn datetime_from_hubspot(raw: &str) -> Result<DateTime<Utc>, ValueError> {
    instant(raw.trim()).ok_or_else(|| ValueError::InvalidDatetime(raw.to_owned()))
}

/// `true` / `false` (case-insensitive, as checkboxes are sometimes written).
pub fn bool_from_hubspot(raw: &str) -> Result<bool, ValueError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ValueError::InvalidBool(raw.to_owned())),
    }
}

/// A number as HubSpot accepts it: an optional minus, digits, at most one decimal point.
pub fn number_to_hubspot(raw: &str) -> Result<String, ValueError> {
    let text = raw.trim();
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let valid = !digits.is_empty()
        && digits != "."
        && all_digits(whole)
        && all_digits(fraction)
        && (!whole.is_empty() || !fraction.is_empty());
    if valid {
        Ok(text.to_owned())
    } else {
        Err(ValueError::InvalidNumber(raw.to_owned()))
    }
}

/// Option values joined with `;` (no spaces, no leading `;`, which would append).
pub fn enumeration_to_hubspot<S: AsRef<str>>(values: &[S]) -> Result<String, ValueError> {
    let mut parts = Vec::with_capacity(values.len());
    for value in values {
        let value = value.as_ref().trim();
        if value.is_empty() || value.contains(';') {
            return Err(ValueError::InvalidOption(value.to_owned()));
        }
        parts.push(value);
    }
    Ok(parts.join(";"))
}

/// The option values of an enumeration value HubSpot sent.
pub fn enumeration_from_hubspot(raw: &str) -> Vec<String> {
    raw.split(';')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An instant from epoch milliseconds or an ISO 8601 date-time.
fn instant(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(ms) = text.parse::<i64>() {
        return Utc.timestamp_millis_opt(ms).single();
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("a valid date")
    }

    #[test]
    fn dates_are_written_as_midnight_utc_milliseconds() {
        // HubSpot's own example: 1430438400000 is 2015-05-01.
        assert_eq!(date_to_hubspot(day(2015, 5, 1)), "1430438400000");
        assert_eq!(
            PropertyValue::Date(day(1969, 12, 31)).to_hubspot(),
            Ok("-86400000".to_owned())
        );
    }

    #[test]
    fn dates_are_read_from_iso_or_midnight_milliseconds_and_other_times_are_refused() {
        assert_eq!(date_from_hubspot("2015-05-01"), Ok(day(2015, 5, 1)));
        assert_eq!(date_from_hubspot("1430438400000"), Ok(day(2015, 5, 1)));
        assert_eq!(
            date_from_hubspot("2015-05-01T00:00:00.000Z"),
            Ok(day(2015, 5, 1))
        );
        assert_eq!(
            date_from_hubspot("1430438400001"),
            Err(ValueError::DateNotMidnight("1430438400001".to_owned()))
        );
        assert!(matches!(
            date_from_hubspot("May 1st"),
            Err(ValueError::InvalidDate(_))
        ));
    }

    #[test]
    fn datetimes_are_iso_in_utc_with_milliseconds_and_read_from_either_form() {
        let at = Utc
            .with_ymd_and_hms(2026, 12, 6, 15, 4, 5)
            .single()
            .expect("valid");
        assert_eq!(datetime_to_hubspot(at), "2026-12-06T15:04:05.000Z");
        assert_eq!(
            datetime_from_hubspot("2026-12-06T16:04:05+01:00"),
            Ok(at),
            "any offset reads as the same instant"
        );
        assert_eq!(
            datetime_from_hubspot(&at.timestamp_millis().to_string()),
            Ok(at)
        );
        assert!(datetime_from_hubspot("soon").is_err());
    }

    #[test]
    fn booleans_are_true_or_false() {
        assert_eq!(
            PropertyValue::Bool(true).to_hubspot(),
            Ok("true".to_owned())
        );
        assert_eq!(bool_from_hubspot("FALSE"), Ok(false));
        assert_eq!(
            bool_from_hubspot("yes"),
            Err(ValueError::InvalidBool("yes".to_owned()))
        );
    }

    #[test]
    fn enumerations_join_with_semicolons_and_never_start_with_one() {
        assert_eq!(
            enumeration_to_hubspot(&["red", "green"]),
            Ok("red;green".to_owned())
        );
        assert!(enumeration_to_hubspot(&["a;b"]).is_err());
        assert!(
            enumeration_to_hubspot(&[""]).is_err(),
            "a leading ';' would append"
        );
        assert_eq!(enumeration_from_hubspot("red;green;"), ["red", "green"]);
    }

    #[test]
    fn text_converts_by_the_propertys_type() {
        assert_eq!(
            convert(PropertyKind::Date, "2015-05-01"),
            Ok("1430438400000".to_owned())
        );
        assert_eq!(
            convert(PropertyKind::Date, "2015-05-01T10:00:00Z"),
            Err(ValueError::DateNotMidnight(
                "2015-05-01T10:00:00Z".to_owned()
            ))
        );
        assert_eq!(
            convert(PropertyKind::Datetime, "0"),
            Ok("1970-01-01T00:00:00.000Z".to_owned())
        );
        assert_eq!(convert(PropertyKind::Bool, "t"), Ok("true".to_owned()));
        assert_eq!(convert(PropertyKind::Bool, "0"), Ok("false".to_owned()));
        assert!(convert(PropertyKind::Bool, "maybe").is_err());
        assert_eq!(
            convert(PropertyKind::Enumeration, "a; b"),
            Ok("a;b".to_owned())
        );
        assert!(convert(PropertyKind::Number, "1,5").is_err());
        assert_eq!(
            convert(PropertyKind::Number, " "),
            Ok(String::new()),
            "clears"
        );
        assert_eq!(
            convert(PropertyKind::String, "as is "),
            Ok("as is ".to_owned())
        );
    }

    #[test]
    fn numbers_are_plain_decimals() {
        for ok in ["42", "-3.5", "0.25", ".5", "7."] {
            assert_eq!(number_to_hubspot(ok), Ok(ok.to_owned()), "{ok}");
        }
        for bad in ["1,000", "$5", "1.2.3", "", "-", ".", "1e3"] {
            assert!(number_to_hubspot(bad).is_err(), "{bad}");
        }
        assert_eq!(PropertyValue::Clear.to_hubspot(), Ok(String::new()));
    }
}
