//! Values between a local column and a HubSpot property, by the column's type and the
//! property's type, built on the client's formats ([`crate::hubspot::values`]):
//!
//! - numbers as plain decimals (no exponent, no commas; NaN and infinities refused);
//! - booleans as `true` / `false` (an integer column holds 1 / 0);
//! - `date` as epoch milliseconds at midnight UTC (a timestamp that is not at midnight is
//!   refused, never truncated);
//! - `datetime` as ISO 8601 in UTC with milliseconds (HubSpot's ISO or epoch ms are read);
//! - enumerations as their option values joined with `;`;
//! - an empty or missing value clears (HubSpot `""`, local NULL).
//!
//! A value that cannot convert is a [`ConversionError`] of that one field;
//! [`record_to_hubspot`] gathers a record's into one [`RecordError`], so that a bad value fails
//! its record and never its batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};

use super::{DeclaredType, FieldMapping, FieldType, PropertyKind};
use crate::hubspot::values::{self, ValueError};
use crate::store::ColumnKind;

/// A local column's value, typed as the database holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalValue {
    /// NULL.
    Null,
    /// Text (also what a column of another type reads as when cast to text).
    Text(String),
    /// A whole number.
    Integer(i64),
    /// An exact decimal, as text (`numeric` columns; never through a float).
    Decimal(String),
    /// A floating-point number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A day.
    Date(NaiveDate),
    /// An instant.
    Timestamp(DateTime<Utc>),
}

/// Why one value cannot convert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionProblem {
    /// HubSpot's format refuses it (not a number, a date not at midnight, ...).
    #[error(transparent)]
    Value(#[from] ValueError),
    /// NaN or an infinity.
    #[error("{0} is not a finite number")]
    NotFinite(String),
    /// A number too large for the column.
    #[error("{value} does not fit a {column} column")]
    OutOfRange {
        /// The value as HubSpot sent it.
        value: String,
        /// The column's type.
        column: String,
    },
    /// A number with a fraction for a whole-number column.
    #[error("{0} is not a whole number")]
    NotWhole(String),
    /// A column type and a property type that cannot hold each other's values.
    #[error("a {column} column cannot hold a HubSpot {property} property's values")]
    Unsupported {
        /// The column's type.
        column: String,
        /// The property's type.
        property: &'static str,
    },
    /// The record has no value for a mapped column.
    #[error("the record has no value for this column")]
    Missing,
    /// A value an enumeration does not list (HubSpot refuses it).
    #[error("{value:?} is not one of the property's options ({options})")]
    NotAnOption {
        /// The value.
        value: String,
        /// The options HubSpot lists, comma-separated.
        options: String,
    },
}

/// A value of one field that cannot convert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{column} → {property}: {problem}")]
pub struct ConversionError {
    /// The local column.
    pub column: String,
    /// The HubSpot property.
    pub property: String,
    /// Why.
    pub problem: ConversionProblem,
}

/// Every field of one record that cannot convert: the record fails, the rest of its batch
/// goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError(pub Vec<ConversionError>);

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for RecordError {}

/// A mapped field with both types known: the column's from the catalog, the property's from
/// HubSpot (see [`super::properties::ensure_properties`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedField {
    /// The mapping.
    pub field: FieldMapping,
    /// The column's type.
    pub column: ColumnKind,
    /// The property's type in HubSpot.
    pub property: PropertyKind,
    /// An enumeration's option values as HubSpot lists them (`None`: not an enumeration, or
    /// none listed): HubSpot refuses any other value, so push fails the record itself.
    pub options: Option<BTreeSet<String>>,
}

impl TypedField {
    /// The value HubSpot takes for `value`, or why not: a value of an enumeration must be
    /// one of its options (each of a multi-select's `;`-separated values).
    fn to_hubspot(&self, value: &LocalValue) -> Result<String, ConversionProblem> {
        let text = to_hubspot(value, &self.column, self.property)?;
        if let Some(options) = &self.options
            && !text.is_empty()
            && let Some(bad) = text.split(';').find(|v| !options.contains(*v))
        {
            return Err(ConversionProblem::NotAnOption {
                value: bad.to_owned(),
                options: options.iter().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        Ok(text)
    }
}

/// Whether a column of `column`'s type and a property of `property`'s type can hold each
/// other's values (text holds anything; a number never holds a date).
pub fn compatible(column: &ColumnKind, property: PropertyKind) -> bool {
    use PropertyKind as P;
    match column {
        ColumnKind::Text => true,
        ColumnKind::Integer => matches!(
            property,
            P::Number | P::String | P::PhoneNumber | P::Enumeration | P::Bool
        ),
        ColumnKind::Decimal | ColumnKind::Float => {
            matches!(property, P::Number | P::String | P::Enumeration)
        }
        ColumnKind::Boolean => matches!(property, P::Bool | P::String | P::Enumeration),
        ColumnKind::Date | ColumnKind::Timestamp => {
            matches!(property, P::Date | P::Datetime | P::String)
        }
        ColumnKind::Other(_) => false,
    }
}

/// The property type crm-sync creates for a column of this type when the mapping declares
/// none: text → string/text, numbers → number/number, boolean → bool/booleancheckbox,
/// date → date/date, timestamp → datetime/date.
pub fn derived_type(column: &ColumnKind) -> Option<DeclaredType> {
    let (kind, field) = match column {
        ColumnKind::Text => (PropertyKind::String, FieldType::Text),
        ColumnKind::Integer | ColumnKind::Decimal | ColumnKind::Float => {
            (PropertyKind::Number, FieldType::Number)
        }
        ColumnKind::Boolean => (PropertyKind::Bool, FieldType::BooleanCheckbox),
        ColumnKind::Date => (PropertyKind::Date, FieldType::Date),
        ColumnKind::Timestamp => (PropertyKind::Datetime, FieldType::Date),
        ColumnKind::Other(_) => return None,
    };
    Some(DeclaredType { kind, field })
}

fn unsupported(column: &ColumnKind, property: PropertyKind) -> ConversionProblem {
    ConversionProblem::Unsupported {
        column: column.describe().to_owned(),
        property: property.as_str(),
    }
}

/// The string HubSpot takes for a local value of a `column` column, for a property of type
/// `property` (`""` clears).
pub fn to_hubspot(
    value: &LocalValue,
    column: &ColumnKind,
    property: PropertyKind,
) -> Result<String, ConversionProblem> {
    if !compatible(column, property) {
        return Err(unsupported(column, property));
    }
    use PropertyKind as P;
    let text = match (value, property) {
        (LocalValue::Null, _) => return Ok(String::new()),
        (LocalValue::Float(f), _) if !f.is_finite() => {
            return Err(ConversionProblem::NotFinite(f.to_string()));
        }
        // Rust prints floats as plain decimals, never with an exponent.
        (LocalValue::Float(f), _) => f.to_string(),
        (LocalValue::Bool(b), P::Number) => u8::from(*b).to_string(),
        (LocalValue::Bool(b), _) => b.to_string(),
        (LocalValue::Integer(i), _) => i.to_string(),
        (LocalValue::Decimal(d), _) => d.clone(),
        (LocalValue::Date(d), P::Datetime) => values::datetime_to_hubspot(midnight(*d)),
        (LocalValue::Date(d), _) => d.format("%Y-%m-%d").to_string(),
        (LocalValue::Timestamp(at), _) => at.to_rfc3339_opts(SecondsFormat::Millis, true),
        (LocalValue::Text(text), P::Date | P::Datetime) => {
            return temporal_text_to_hubspot(text, property);
        }
        (LocalValue::Text(text), _) => text.clone(),
    };
    Ok(values::convert(property, &text)?)
}

/// A date or date-time written as text by a database (`2026-12-06 15:04:05+00`, PostgreSQL's
/// text of a timestamp, or `2026-12-06 15:04:05`, SQLite's `CURRENT_TIMESTAMP`, read as UTC)
/// or as HubSpot takes it.
fn temporal_text_to_hubspot(
    text: &str,
    property: PropertyKind,
) -> Result<String, ConversionProblem> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if let Some(at) = database_instant(trimmed) {
        return Ok(match property {
            PropertyKind::Date if at.time() != NaiveTime::MIN => {
                return Err(ValueError::DateNotMidnight(text.to_owned()).into());
            }
            PropertyKind::Date => values::date_to_hubspot(at.date_naive()),
            _ => values::datetime_to_hubspot(at),
        });
    }
    if property == PropertyKind::Datetime
        && let Ok(day) = NaiveDate::parse_from_str(trimmed, "%Y-%m-%d")
    {
        return Ok(values::datetime_to_hubspot(midnight(day)));
    }
    Ok(values::convert(property, text)?)
}

/// An instant in one of the text forms databases print that HubSpot's ISO 8601 parser does
/// not take: a space between date and time, an offset of hours only, or no offset (UTC).
fn database_instant(text: &str) -> Option<DateTime<Utc>> {
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(at) = DateTime::parse_from_str(text, format) {
            return Some(at.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Some(at.and_utc());
        }
    }
    None
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

/// The local value of a HubSpot property value (`None` or empty: NULL) for a `column` column.
pub fn from_hubspot(
    raw: Option<&str>,
    property: PropertyKind,
    column: &ColumnKind,
) -> Result<LocalValue, ConversionProblem> {
    if !compatible(column, property) {
        return Err(unsupported(column, property));
    }
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(LocalValue::Null);
    };
    use PropertyKind as P;
    match property {
        P::Date => {
            let day = values::date_from_hubspot(raw)?;
            Ok(match column {
                ColumnKind::Timestamp => LocalValue::Timestamp(midnight(day)),
                ColumnKind::Text => LocalValue::Text(day.format("%Y-%m-%d").to_string()),
                _ => LocalValue::Date(day),
            })
        }
        P::Datetime => {
            let at = values::datetime_from_hubspot(raw)?;
            match column {
                ColumnKind::Date if at.time() != NaiveTime::MIN => {
                    Err(ValueError::DateNotMidnight(raw.to_owned()).into())
                }
                ColumnKind::Date => Ok(LocalValue::Date(at.date_naive())),
                ColumnKind::Text => Ok(LocalValue::Text(values::datetime_to_hubspot(at))),
                _ => Ok(LocalValue::Timestamp(at)),
            }
        }
        P::Bool => {
            let b = values::bool_from_hubspot(raw)?;
            Ok(match column {
                ColumnKind::Integer => LocalValue::Integer(i64::from(b)),
                ColumnKind::Text => LocalValue::Text(b.to_string()),
                _ => LocalValue::Bool(b),
            })
        }
        P::Enumeration => {
            let joined = values::enumeration_from_hubspot(raw).join(";");
            text_into(column, &joined)
        }
        P::Number => {
            let number = values::number_to_hubspot(raw)?;
            text_into(column, &number)
        }
        P::String | P::PhoneNumber => match column {
            // Text keeps HubSpot's value exactly, spaces included.
            ColumnKind::Text => Ok(LocalValue::Text(raw.to_owned())),
            _ => text_into(column, raw.trim()),
        },
    }
}

/// Text read into a column of `column`'s type.
fn text_into(column: &ColumnKind, text: &str) -> Result<LocalValue, ConversionProblem> {
    match column {
        ColumnKind::Text => Ok(LocalValue::Text(text.to_owned())),
        ColumnKind::Integer => whole_number(text).map(LocalValue::Integer),
        ColumnKind::Decimal => Ok(LocalValue::Decimal(values::number_to_hubspot(text)?)),
        ColumnKind::Float => {
            let checked = values::number_to_hubspot(text)?;
            match checked.parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(LocalValue::Float(f)),
                _ => Err(ConversionProblem::OutOfRange {
                    value: text.to_owned(),
                    column: column.describe().to_owned(),
                }),
            }
        }
        ColumnKind::Boolean => {
            let word = values::convert(PropertyKind::Bool, text)?;
            Ok(LocalValue::Bool(word == "true"))
        }
        ColumnKind::Date => Ok(LocalValue::Date(values::date_from_hubspot(text)?)),
        ColumnKind::Timestamp => {
            if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                return Ok(LocalValue::Timestamp(midnight(day)));
            }
            match database_instant(text) {
                Some(at) => Ok(LocalValue::Timestamp(at)),
                None => Ok(LocalValue::Timestamp(values::datetime_from_hubspot(text)?)),
            }
        }
        ColumnKind::Other(_) => Err(unsupported(column, PropertyKind::String)),
    }
}

/// A whole number from a decimal text: `42`, `-7`, `3.000`; a fraction or a value beyond
/// 64 bits is refused.
fn whole_number(text: &str) -> Result<i64, ConversionProblem> {
    let checked = values::number_to_hubspot(text)?;
    let (whole, fraction) = checked.split_once('.').unwrap_or((&checked, ""));
    if fraction.chars().any(|c| c != '0') {
        return Err(ConversionProblem::NotWhole(text.to_owned()));
    }
    let whole = match whole {
        "" | "-" => "0",
        w => w,
    };
    whole.parse().map_err(|_| ConversionProblem::OutOfRange {
        value: text.to_owned(),
        column: ColumnKind::Integer.describe().to_owned(),
    })
}

/// The HubSpot properties of one record from its column values, for every field that push
/// sends; every field that cannot convert is named in the record's error.
pub fn record_to_hubspot(
    fields: &[TypedField],
    row: &HashMap<String, LocalValue>,
) -> Result<BTreeMap<String, String>, RecordError> {
    let mut properties = BTreeMap::new();
    let mut failures = Vec::new();
    for typed in fields
        .iter()
        .filter(|t| t.field.flow.direction().writes_to_hubspot())
    {
        let converted = match row.get(typed.field.column.as_str()) {
            None => Err(ConversionProblem::Missing),
            Some(value) => typed.to_hubspot(value),
        };
        match converted {
            Ok(text) => {
                properties.insert(typed.field.property.as_str().to_owned(), text);
            }
            Err(problem) => failures.push(ConversionError {
                column: typed.field.column.as_str().to_owned(),
                property: typed.field.property.as_str().to_owned(),
                problem,
            }),
        }
    }
    if failures.is_empty() {
        Ok(properties)
    } else {
        Err(RecordError(failures))
    }
}

/// The column values of one record from HubSpot's properties, for every field that pull
/// writes (an absent property clears its column); every field that cannot convert is named
/// in the record's error.
pub fn record_from_hubspot(
    fields: &[TypedField],
    properties: &BTreeMap<String, Option<String>>,
) -> Result<BTreeMap<String, LocalValue>, RecordError> {
    let mut row = BTreeMap::new();
    let mut failures = Vec::new();
    for typed in fields
        .iter()
        .filter(|t| t.field.flow.direction().writes_locally())
    {
        let raw = properties
            .get(typed.field.property.as_str())
            .and_then(Option::as_deref);
        match from_hubspot(raw, typed.property, &typed.column) {
            Ok(value) => {
                row.insert(typed.field.column.as_str().to_owned(), value);
            }
            Err(problem) => failures.push(ConversionError {
                column: typed.field.column.as_str().to_owned(),
                property: typed.field.property.as_str().to_owned(),
                problem,
            }),
        }
    }
    if failures.is_empty() {
        Ok(row)
    } else {
        Err(RecordError(failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{ColumnName, Flow, Owner, PropertyName};
    use chrono::TimeZone;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("a valid date")
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid")
    }

    #[test]
    fn dates_go_as_midnight_milliseconds_and_other_times_are_refused() {
        let date = |v: LocalValue, c: ColumnKind| to_hubspot(&v, &c, PropertyKind::Date);
        assert_eq!(
            date(LocalValue::Date(day(2015, 5, 1)), ColumnKind::Date),
            Ok("1430438400000".to_owned())
        );
        assert_eq!(
            date(
                LocalValue::Timestamp(at(2015, 5, 1, 0, 0, 0)),
                ColumnKind::Timestamp
            ),
            Ok("1430438400000".to_owned())
        );
        assert!(matches!(
            date(
                LocalValue::Timestamp(at(2015, 5, 1, 10, 0, 0)),
                ColumnKind::Timestamp
            ),
            Err(ConversionProblem::Value(ValueError::DateNotMidnight(_)))
        ));
        // PostgreSQL's text of a timestamptz, and SQLite's CURRENT_TIMESTAMP (UTC).
        assert_eq!(
            date(
                LocalValue::Text("2015-05-01 00:00:00+00".into()),
                ColumnKind::Text
            ),
            Ok("1430438400000".to_owned())
        );
        assert!(matches!(
            date(
                LocalValue::Text("2015-05-01 09:30:00".into()),
                ColumnKind::Text
            ),
            Err(ConversionProblem::Value(ValueError::DateNotMidnight(_)))
        ));
        assert!(date(LocalValue::Text("May 1st".into()), ColumnKind::Text).is_err());
    }

    #[test]
    fn datetimes_go_as_iso_utc_from_any_local_form() {
        let dt = |v: LocalValue, c: ColumnKind| to_hubspot(&v, &c, PropertyKind::Datetime);
        let expected = Ok("2026-12-06T15:04:05.000Z".to_owned());
        assert_eq!(
            dt(
                LocalValue::Timestamp(at(2026, 12, 6, 15, 4, 5)),
                ColumnKind::Timestamp
            ),
            expected
        );
        assert_eq!(
            dt(
                LocalValue::Text("2026-12-06 16:04:05+01".into()),
                ColumnKind::Text
            ),
            expected
        );
        assert_eq!(
            dt(
                LocalValue::Text("2026-12-06 15:04:05".into()),
                ColumnKind::Timestamp
            ),
            expected
        );
        assert_eq!(
            dt(LocalValue::Date(day(2026, 12, 6)), ColumnKind::Date),
            Ok("2026-12-06T00:00:00.000Z".to_owned())
        );
    }

    #[test]
    fn numbers_are_plain_decimals_and_nan_or_infinity_are_refused() {
        let num = |v: LocalValue, c: ColumnKind| to_hubspot(&v, &c, PropertyKind::Number);
        assert_eq!(
            num(LocalValue::Integer(-42), ColumnKind::Integer),
            Ok("-42".into())
        );
        assert_eq!(
            num(LocalValue::Float(2.5), ColumnKind::Float),
            Ok("2.5".into())
        );
        assert_eq!(
            num(LocalValue::Float(1e21), ColumnKind::Float),
            Ok("1000000000000000000000".into()),
            "never an exponent"
        );
        assert_eq!(
            num(LocalValue::Decimal("12.50".into()), ColumnKind::Decimal),
            Ok("12.50".into())
        );
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                num(LocalValue::Float(bad), ColumnKind::Float),
                Err(ConversionProblem::NotFinite(_))
            ));
        }
        assert!(num(LocalValue::Text("1,000".into()), ColumnKind::Text).is_err());
        assert_eq!(
            num(LocalValue::Bool(true), ColumnKind::Integer),
            Ok("1".into())
        );
    }

    #[test]
    fn empty_values_clear_on_both_sides() {
        for kind in [
            PropertyKind::Number,
            PropertyKind::Date,
            PropertyKind::String,
        ] {
            assert_eq!(
                to_hubspot(&LocalValue::Null, &ColumnKind::Text, kind),
                Ok(String::new())
            );
            assert_eq!(
                to_hubspot(&LocalValue::Text("  ".into()), &ColumnKind::Text, kind),
                Ok(String::new())
            );
            assert_eq!(
                from_hubspot(None, kind, &ColumnKind::Text),
                Ok(LocalValue::Null)
            );
            assert_eq!(
                from_hubspot(Some(""), kind, &ColumnKind::Text),
                Ok(LocalValue::Null)
            );
        }
    }

    #[test]
    fn booleans_and_enumerations_keep_hubspots_words() {
        assert_eq!(
            to_hubspot(
                &LocalValue::Bool(false),
                &ColumnKind::Boolean,
                PropertyKind::Bool
            ),
            Ok("false".into())
        );
        assert_eq!(
            to_hubspot(
                &LocalValue::Integer(1),
                &ColumnKind::Integer,
                PropertyKind::Bool
            ),
            Ok("true".into())
        );
        assert!(
            to_hubspot(
                &LocalValue::Integer(2),
                &ColumnKind::Integer,
                PropertyKind::Bool
            )
            .is_err()
        );
        assert_eq!(
            to_hubspot(
                &LocalValue::Text("gold; silver".into()),
                &ColumnKind::Text,
                PropertyKind::Enumeration
            ),
            Ok("gold;silver".into())
        );
        assert_eq!(
            from_hubspot(
                Some("gold;silver;"),
                PropertyKind::Enumeration,
                &ColumnKind::Text
            ),
            Ok(LocalValue::Text("gold;silver".into()))
        );
        assert_eq!(
            from_hubspot(Some("true"), PropertyKind::Bool, &ColumnKind::Integer),
            Ok(LocalValue::Integer(1))
        );
        assert!(from_hubspot(Some("yes"), PropertyKind::Bool, &ColumnKind::Boolean).is_err());
    }

    #[test]
    fn hubspot_values_read_into_the_columns_type_or_fail_out_of_range() {
        let read = |raw: &str, kind: PropertyKind, column: ColumnKind| {
            from_hubspot(Some(raw), kind, &column)
        };
        assert_eq!(
            read("42", PropertyKind::Number, ColumnKind::Integer),
            Ok(LocalValue::Integer(42))
        );
        assert_eq!(
            read("3.000", PropertyKind::Number, ColumnKind::Integer),
            Ok(LocalValue::Integer(3))
        );
        assert!(matches!(
            read("3.5", PropertyKind::Number, ColumnKind::Integer),
            Err(ConversionProblem::NotWhole(_))
        ));
        assert!(matches!(
            read(
                "99999999999999999999",
                PropertyKind::Number,
                ColumnKind::Integer
            ),
            Err(ConversionProblem::OutOfRange { .. })
        ));
        assert!(matches!(
            read(
                &format!("1{}", "0".repeat(400)),
                PropertyKind::Number,
                ColumnKind::Float
            ),
            Err(ConversionProblem::OutOfRange { .. })
        ));
        assert_eq!(
            read("12.50", PropertyKind::Number, ColumnKind::Decimal),
            Ok(LocalValue::Decimal("12.50".into()))
        );
        assert_eq!(
            read("2015-05-01T00:00:00Z", PropertyKind::Date, ColumnKind::Date),
            Ok(LocalValue::Date(day(2015, 5, 1)))
        );
        assert_eq!(
            read("1430438400000", PropertyKind::Date, ColumnKind::Text),
            Ok(LocalValue::Text("2015-05-01".into()))
        );
        assert!(matches!(
            read(
                "2015-05-01T10:00:00Z",
                PropertyKind::Datetime,
                ColumnKind::Date
            ),
            Err(ConversionProblem::Value(ValueError::DateNotMidnight(_)))
        ));
        assert!(matches!(
            read(
                "99999999999999999",
                PropertyKind::Datetime,
                ColumnKind::Timestamp
            ),
            Err(ConversionProblem::Value(ValueError::InvalidDatetime(_)))
        ));
        assert_eq!(
            read(
                "2026-12-06T16:04:05+01:00",
                PropertyKind::Datetime,
                ColumnKind::Timestamp
            ),
            Ok(LocalValue::Timestamp(at(2026, 12, 6, 15, 4, 5)))
        );
        assert_eq!(
            read(" keep  spaces ", PropertyKind::String, ColumnKind::Text),
            Ok(LocalValue::Text(" keep  spaces ".into()))
        );
    }

    #[test]
    fn a_column_and_property_that_cannot_hold_each_other_are_refused() {
        assert!(matches!(
            to_hubspot(
                &LocalValue::Bool(true),
                &ColumnKind::Boolean,
                PropertyKind::Date
            ),
            Err(ConversionProblem::Unsupported { .. })
        ));
        assert!(matches!(
            from_hubspot(Some("2020-01-01"), PropertyKind::Date, &ColumnKind::Integer),
            Err(ConversionProblem::Unsupported { .. })
        ));
    }

    fn typed(
        column: &str,
        property: &str,
        flow: Flow,
        kind: ColumnKind,
        prop: PropertyKind,
    ) -> TypedField {
        TypedField {
            field: FieldMapping {
                column: ColumnName::parse(column).unwrap(),
                property: PropertyName::parse(property).unwrap(),
                flow,
                declared: None,
            },
            column: kind,
            property: prop,
            options: None,
        }
    }

    #[test]
    fn a_value_an_enumeration_does_not_list_fails_its_record_and_a_listed_one_goes_through() {
        let mut plan = typed(
            "plan",
            "plan_tier",
            Flow::Push,
            ColumnKind::Text,
            PropertyKind::Enumeration,
        );
        plan.options = Some(["free", "pro"].map(str::to_owned).into());
        let row = |v: &str| HashMap::from([("plan".to_owned(), LocalValue::Text(v.to_owned()))]);
        let fields = [plan];
        assert_eq!(
            record_to_hubspot(&fields, &row("pro"))
                .unwrap()
                .get("plan_tier")
                .map(String::as_str),
            Some("pro")
        );
        assert!(record_to_hubspot(&fields, &row("")).is_ok(), "empty clears");
        assert!(
            record_to_hubspot(&fields, &row("free;pro")).is_ok(),
            "multi-select values"
        );
        for refused in ["platinum", "Pro", "pro;gold"] {
            let error = record_to_hubspot(&fields, &row(refused))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("is not one of the property's options (free, pro)"),
                "{refused}: {error}"
            );
        }
    }

    #[test]
    fn a_record_fails_alone_naming_every_field_that_cannot_convert() {
        let fields = [
            typed(
                "email",
                "email",
                Flow::Both(Owner::Local),
                ColumnKind::Text,
                PropertyKind::String,
            ),
            typed(
                "seats",
                "seats",
                Flow::Push,
                ColumnKind::Float,
                PropertyKind::Number,
            ),
            typed(
                "signup",
                "signup_date",
                Flow::Push,
                ColumnKind::Timestamp,
                PropertyKind::Date,
            ),
            typed(
                "score",
                "score",
                Flow::Pull,
                ColumnKind::Integer,
                PropertyKind::Number,
            ),
        ];
        let good: HashMap<String, LocalValue> = [
            ("email", LocalValue::Text("ada@example.com".into())),
            ("seats", LocalValue::Float(3.0)),
            ("signup", LocalValue::Timestamp(at(2026, 1, 2, 0, 0, 0))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let sent = record_to_hubspot(&fields, &good).expect("converts");
        assert_eq!(sent.len(), 3, "the pull-only field is not sent: {sent:?}");
        assert_eq!(sent["seats"], "3");
        assert_eq!(sent["signup_date"], "1767312000000");
        let mut bad = good.clone();
        bad.insert("seats".into(), LocalValue::Float(f64::NAN));
        bad.insert(
            "signup".into(),
            LocalValue::Timestamp(at(2026, 1, 2, 8, 0, 0)),
        );
        let error = record_to_hubspot(&fields, &bad).expect_err("fails");
        assert_eq!(error.0.len(), 2, "{error}");
        let text = error.to_string();
        assert!(
            text.contains("seats → seats") && text.contains("signup → signup_date"),
            "{text}"
        );

        let read: BTreeMap<String, Option<String>> = [
            ("score".to_owned(), Some("7".to_owned())),
            ("email".to_owned(), None),
        ]
        .into_iter()
        .collect();
        let row = record_from_hubspot(&fields, &read).expect("reads");
        assert_eq!(row["score"], LocalValue::Integer(7));
        assert_eq!(row["email"], LocalValue::Null, "an absent property clears");
        assert!(
            !row.contains_key("seats"),
            "push-only columns are never written"
        );
    }
}
