//! Names a mapping holds: local tables and columns, HubSpot properties. Each is checked once
//! when configuration is parsed, so that later code can quote them into SQL or send them to
//! HubSpot without checking again.

use std::fmt;

/// The longest identifier PostgreSQL keeps (longer ones are silently truncated there).
const MAX_IDENTIFIER_LEN: usize = 63;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty.
    #[error("is empty")]
    Empty,
    /// Characters other than ASCII letters, digits and `_`, or a leading digit.
    #[error(
        "{0:?} is not a plain SQL name (letters, digits and _, not starting with a digit; map a \
         view to reach other names)"
    )]
    NotPlain(String),
    /// Longer than PostgreSQL keeps.
    #[error("{0:?} is longer than {MAX_IDENTIFIER_LEN} characters")]
    TooLong(String),
    /// Not a HubSpot internal property name.
    #[error(
        "{0:?} is not a HubSpot property's internal name (lower-case letters, digits and _, \
         starting with a letter)"
    )]
    NotProperty(String),
    /// A name with more than one dot.
    #[error("{0:?} has more than one dot; write table or schema.table")]
    TooManyParts(String),
}

/// Checks a plain SQL identifier: ASCII letters, digits, `_`, not starting with a digit. Such
/// names need no escaping inside double quotes, which is how SQL is built from them.
fn plain_identifier(text: &str) -> Result<String, NameError> {
    let mut chars = text.chars();
    let Some(first) = chars.next() else {
        return Err(NameError::Empty);
    };
    let plain = (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain {
        return Err(NameError::NotPlain(text.to_owned()));
    }
    if text.len() > MAX_IDENTIFIER_LEN {
        return Err(NameError::TooLong(text.to_owned()));
    }
    Ok(text.to_owned())
}

/// A local column's name, a plain SQL identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColumnName(String);

impl ColumnName {
    /// A checked column name.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        plain_identifier(text.trim()).map(Self)
    }

    /// A name known to be plain (built-in defaults).
    pub(crate) fn trusted(text: &str) -> Self {
        Self(text.to_owned())
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, quoted for SQL (`"first_name"`); safe because the name is plain.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for ColumnName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A table or view, optionally schema-qualified (`schema.table`; PostgreSQL only).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// The schema, when qualified.
    pub schema: Option<String>,
    /// The table or view.
    pub name: String,
}

impl TableRef {
    /// A checked `table` or `schema.table`.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let text = text.trim();
        let parts: Vec<&str> = text.split('.').collect();
        match parts.as_slice() {
            [name] => Ok(Self {
                schema: None,
                name: plain_identifier(name)?,
            }),
            [schema, name] => Ok(Self {
                schema: Some(plain_identifier(schema)?),
                name: plain_identifier(name)?,
            }),
            _ => Err(NameError::TooManyParts(text.to_owned())),
        }
    }

    /// A table in the default schema.
    pub(crate) fn unqualified(name: String) -> Self {
        Self { schema: None, name }
    }

    /// The name quoted for SQL (`"crm"."users"`).
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{}\"", self.name),
            None => format!("\"{}\"", self.name),
        }
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A HubSpot property's internal name (`firstname`, `plan_tier`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PropertyName(String);

impl PropertyName {
    /// A checked internal name: lower-case ASCII letters, digits and `_`, starting with a
    /// letter (what HubSpot generates from a label, and accepts on create).
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let text = text.trim();
        let mut chars = text.chars();
        let Some(first) = chars.next() else {
            return Err(NameError::Empty);
        };
        let valid = first.is_ascii_lowercase()
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(NameError::NotProperty(text.to_owned()))
        }
    }

    /// A name known to be valid (built-in defaults).
    pub(crate) fn trusted(text: &str) -> Self {
        Self(text.to_owned())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PropertyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_plain_identifiers() {
        assert_eq!(
            ColumnName::parse("first_name").unwrap().quoted(),
            "\"first_name\""
        );
        assert_eq!(ColumnName::parse("_x1").unwrap().as_str(), "_x1");
        for bad in ["", "1st", "a b", "a\"b", "a;drop", "naïve"] {
            assert!(ColumnName::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            ColumnName::parse(&"a".repeat(64)),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn tables_may_name_their_schema() {
        let t = TableRef::parse("crm.users").unwrap();
        assert_eq!(t.schema.as_deref(), Some("crm"));
        assert_eq!(t.quoted(), "\"crm\".\"users\"");
        assert_eq!(t.to_string(), "crm.users");
        assert_eq!(TableRef::parse("users").unwrap().quoted(), "\"users\"");
        assert!(matches!(
            TableRef::parse("a.b.c"),
            Err(NameError::TooManyParts(_))
        ));
        assert!(TableRef::parse("crm.").is_err());
    }

    #[test]
    fn properties_are_lower_case_internal_names() {
        assert_eq!(
            PropertyName::parse("plan_tier2").unwrap().as_str(),
            "plan_tier2"
        );
        for bad in ["", "Plan", "2plan", "plan-tier", "_plan"] {
            assert!(PropertyName::parse(bad).is_err(), "{bad}");
        }
    }
}
