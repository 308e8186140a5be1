//! Values of a user's table as the engine compares them: every value in HubSpot's format
//! (what [`to_hubspot`] sends), so that a local value, a HubSpot value and the value last
//! agreed on compare as text.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use crate::mapping::convert::{
    ConversionError, ConversionProblem, LocalValue, RecordError, TypedField, from_hubspot,
    record_to_hubspot, to_hubspot,
};
use crate::store::{ColumnKind, ColumnValue};

/// A column's value read as text (how the store reads every mapped column) typed by the
/// column's kind. Dates and times stay text: the converter reads both databases' text forms.
pub(crate) fn local_value(text: Option<&str>, kind: &ColumnKind) -> LocalValue {
    let Some(text) = text else {
        return LocalValue::Null;
    };
    match kind {
        ColumnKind::Integer => text
            .trim()
            .parse()
            .map_or_else(|_| LocalValue::Text(text.to_owned()), LocalValue::Integer),
        ColumnKind::Decimal => LocalValue::Decimal(text.trim().to_owned()),
        ColumnKind::Float => text
            .trim()
            .parse()
            .map_or_else(|_| LocalValue::Text(text.to_owned()), LocalValue::Float),
        ColumnKind::Boolean => match text.trim() {
            "true" | "t" | "1" => LocalValue::Bool(true),
            "false" | "f" | "0" => LocalValue::Bool(false),
            other => LocalValue::Text(other.to_owned()),
        },
        ColumnKind::Text | ColumnKind::Date | ColumnKind::Timestamp | ColumnKind::Other(_) => {
            LocalValue::Text(text.to_owned())
        }
    }
}

/// A row's values by column, as [`record_to_hubspot`] takes them.
pub(crate) fn row_values(
    fields: &[TypedField],
    texts: &[Option<String>],
) -> HashMap<String, LocalValue> {
    fields
        .iter()
        .zip(texts)
        .map(|(f, text)| {
            (
                f.field.column.as_str().to_owned(),
                local_value(text.as_deref(), &f.column),
            )
        })
        .collect()
}

/// The properties push sends for a row (push and both fields), in HubSpot's format.
pub(crate) fn outgoing(
    fields: &[TypedField],
    texts: &[Option<String>],
) -> Result<BTreeMap<String, String>, RecordError> {
    record_to_hubspot(fields, &row_values(fields, texts))
}

/// A local value of `field` in HubSpot's format.
pub(crate) fn local_canonical(
    field: &TypedField,
    text: Option<&str>,
) -> Result<String, ConversionProblem> {
    to_hubspot(
        &local_value(text, &field.column),
        &field.column,
        field.property,
    )
}

/// HubSpot's value of `field` as the column would hold it, and that value in HubSpot's format
/// again (`5.0` and `5` compare equal for an integer column).
pub(crate) fn remote_value(
    field: &TypedField,
    raw: Option<&str>,
) -> Result<(LocalValue, String), ConversionError> {
    let failed = |problem| ConversionError {
        column: field.field.column.as_str().to_owned(),
        property: field.field.property.as_str().to_owned(),
        problem,
    };
    let value = from_hubspot(raw, field.property, &field.column).map_err(failed)?;
    let canonical = to_hubspot(&value, &field.column, field.property).map_err(failed)?;
    Ok((value, canonical))
}

/// The hash of the values push sends for a row: what `object_links.pushed_hash` holds.
pub(crate) fn hash(values: &BTreeMap<String, String>) -> String {
    let mut digest = Sha256::new();
    for (property, value) in values {
        // Lengths first, so that no two different maps write the same bytes.
        digest.update((property.len() as u64).to_be_bytes());
        digest.update(property.as_bytes());
        digest.update((value.len() as u64).to_be_bytes());
        digest.update(value.as_bytes());
    }
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A converted value as the store writes it into its column.
pub(crate) fn column_value(value: LocalValue) -> ColumnValue {
    match value {
        LocalValue::Null => ColumnValue::Null,
        LocalValue::Text(t) => ColumnValue::Text(t),
        LocalValue::Integer(i) => ColumnValue::Integer(i),
        LocalValue::Decimal(d) => ColumnValue::Decimal(d),
        LocalValue::Float(f) => ColumnValue::Float(f),
        LocalValue::Bool(b) => ColumnValue::Bool(b),
        LocalValue::Date(d) => ColumnValue::Date(d),
        LocalValue::Timestamp(at) => ColumnValue::Timestamp(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_text_reads_as_its_columns_type() {
        assert_eq!(
            local_value(Some("42"), &ColumnKind::Integer),
            LocalValue::Integer(42)
        );
        assert_eq!(
            local_value(Some("t"), &ColumnKind::Boolean),
            LocalValue::Bool(true)
        );
        assert_eq!(
            local_value(Some("0"), &ColumnKind::Boolean),
            LocalValue::Bool(false)
        );
        assert_eq!(local_value(None, &ColumnKind::Text), LocalValue::Null);
        assert_eq!(
            local_value(Some("2026-01-02"), &ColumnKind::Date),
            LocalValue::Text("2026-01-02".to_owned())
        );
    }

    #[test]
    fn the_hash_tells_apart_what_concatenation_would_not() {
        let one: BTreeMap<String, String> =
            [("a".to_owned(), "bc".to_owned())].into_iter().collect();
        let two: BTreeMap<String, String> =
            [("ab".to_owned(), "c".to_owned())].into_iter().collect();
        assert_ne!(hash(&one), hash(&two));
        assert_eq!(hash(&one), hash(&one.clone()));
    }
}
