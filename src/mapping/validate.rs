//! The mappings checked against the database's catalog at start-up: the table or view exists,
//! every named column exists with a type crm-sync converts, the key column is unique, nothing
//! pull would write is on a view. The first problem is a [`MappingError`] naming its key, e.g.
//! `sync.objects[1].fields.plan: column "plan" does not exist in table "users"`.

use super::convert::{compatible, derived_type};
use super::{FieldMapping, HubSpotIdStore, ObjectMapping};
use crate::store::{ColumnKind, Relation, Store, StoreError, TableInfo};

/// Why the configured mappings do not fit the database.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The database contradicts a mapping.
    #[error("invalid configuration: {key}: {problem}")]
    Mismatch {
        /// The configuration key at fault.
        key: String,
        /// What the database says and what to do.
        problem: String,
    },
    /// The catalog could not be read.
    #[error("cannot check {key} against the database: {source}")]
    Store {
        /// The mapping being checked.
        key: String,
        /// Why.
        source: StoreError,
    },
}

fn mismatch(key: impl Into<String>, problem: impl Into<String>) -> MappingError {
    MappingError::Mismatch {
        key: key.into(),
        problem: problem.into(),
    }
}

/// A mapped field whose column the catalog knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedField {
    /// The mapping.
    pub field: FieldMapping,
    /// The column's type.
    pub column: ColumnKind,
    /// The field's configuration key, e.g. `sync.objects[1].fields.plan`.
    pub key: String,
}

/// A mapping that fits the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedMapping {
    /// The mapping.
    pub mapping: ObjectMapping,
    /// Whether its table is a table or a view.
    pub relation: Relation,
    /// Its fields, in the mapping's order, with their column types.
    pub fields: Vec<CheckedField>,
}

/// Checks every mapping against the database; the first problem found is the error.
pub async fn check_mappings(
    store: &Store,
    mappings: &[ObjectMapping],
) -> Result<Vec<CheckedMapping>, MappingError> {
    let mut checked = Vec::with_capacity(mappings.len());
    for mapping in mappings {
        checked.push(check_mapping(store, mapping).await?);
    }
    Ok(checked)
}

/// Checks one mapping against the database.
pub async fn check_mapping(
    store: &Store,
    mapping: &ObjectMapping,
) -> Result<CheckedMapping, MappingError> {
    let key = &mapping.key;
    let store_error = |source| MappingError::Store {
        key: key.clone(),
        source,
    };
    let info = store
        .table_info(&mapping.table)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            mismatch(
                format!("{key}.table"),
                format!("no table or view \"{}\" exists", mapping.table),
            )
        })?;
    let checker = Checker {
        mapping,
        info: &info,
    };
    checker.key_column()?;
    if info.relation == Relation::View {
        // A view has no index to vouch for its key: its rows are asked once.
        let duplicated = store
            .has_duplicate_values(&mapping.table, &mapping.key_column)
            .await
            .map_err(store_error)?;
        if duplicated {
            return Err(mismatch(
                format!("{key}.key_column"),
                format!(
                    "view \"{}\" has several rows with the same \"{}\", so it cannot be the key",
                    mapping.table, mapping.key_column
                ),
            ));
        }
    }
    checker.hubspot_id_column()?;
    checker.company_column()?;
    let fields = mapping
        .fields
        .iter()
        .map(|field| checker.field(field))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CheckedMapping {
        mapping: mapping.clone(),
        relation: info.relation,
        fields,
    })
}

/// One mapping next to what the catalog says about its table.
struct Checker<'a> {
    mapping: &'a ObjectMapping,
    info: &'a TableInfo,
}

impl Checker<'_> {
    fn relation_word(&self) -> &'static str {
        match self.info.relation {
            Relation::Table => "table",
            Relation::View => "view",
        }
    }

    fn no_column(&self, key: String, column: &str) -> MappingError {
        mismatch(
            key,
            format!(
                "column \"{column}\" does not exist in {} \"{}\"",
                self.relation_word(),
                self.mapping.table
            ),
        )
    }

    /// The key column exists and, on a table, is unique by its primary key or an index.
    fn key_column(&self) -> Result<(), MappingError> {
        let key = format!("{}.key_column", self.mapping.key);
        let column = &self.mapping.key_column;
        if self.info.column(column).is_none() {
            return Err(self.no_column(key, column.as_str()));
        }
        if self.info.relation == Relation::Table && !self.info.is_unique(column) {
            return Err(mismatch(
                key,
                format!(
                    "column \"{column}\" of table \"{}\" is not unique: make it the primary key \
                     or give it a unique index of its own",
                    self.mapping.table
                ),
            ));
        }
        Ok(())
    }

    /// The HubSpot id column, when configured, exists on a table and holds text or numbers.
    fn hubspot_id_column(&self) -> Result<(), MappingError> {
        let HubSpotIdStore::Column(column) = &self.mapping.hubspot_id else {
            return Ok(());
        };
        let key = format!("{}.hubspot_id_column", self.mapping.key);
        if self.info.relation == Relation::View {
            return Err(mismatch(
                key,
                format!(
                    "\"{}\" is a view, which crm-sync cannot write HubSpot ids to; leave \
                     hubspot_id_column unset to keep them in crm-sync's own link table",
                    self.mapping.table
                ),
            ));
        }
        let info = self
            .info
            .column(column)
            .ok_or_else(|| self.no_column(key.clone(), column.as_str()))?;
        if !matches!(info.kind, ColumnKind::Text | ColumnKind::Integer) {
            return Err(mismatch(
                key,
                format!(
                    "column \"{column}\" is {}, but a HubSpot id needs a text or integer column",
                    info.kind.describe()
                ),
            ));
        }
        Ok(())
    }

    /// The company column, when configured, exists, holds whole numbers or text (a company's
    /// local key), and is not on a view when pull may write it.
    fn company_column(&self) -> Result<(), MappingError> {
        let Some(company) = &self.mapping.company else {
            return Ok(());
        };
        let key = self.mapping.company_key();
        let info = self
            .info
            .column(&company.column)
            .ok_or_else(|| self.no_column(key.clone(), company.column.as_str()))?;
        if !matches!(info.kind, ColumnKind::Text | ColumnKind::Integer) {
            return Err(mismatch(
                key,
                format!(
                    "column \"{}\" is {}, but a company's local key needs a whole-number or \
                     text column",
                    company.column,
                    info.kind.describe()
                ),
            ));
        }
        let direction = company.flow.direction();
        if self.info.relation == Relation::View && direction.writes_locally() {
            return Err(mismatch(
                format!("{}.company_direction", self.mapping.key),
                format!(
                    "\"{}\" is a view, which pull cannot write; use company_direction = \
                     \"push\" (a {} association writes the column)",
                    self.mapping.table,
                    direction.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// A field's column exists with a type crm-sync converts, fits its declared property type,
    /// and is not written by pull on a view.
    fn field(&self, field: &FieldMapping) -> Result<super::CheckedField, MappingError> {
        let key = self.mapping.field_key(field);
        let info = self
            .info
            .column(&field.column)
            .ok_or_else(|| self.no_column(key.clone(), field.column.as_str()))?;
        if derived_type(&info.kind).is_none() {
            return Err(mismatch(
                key,
                format!(
                    "column \"{}\" has type {}, which crm-sync cannot convert; map text, \
                     number, boolean, date or timestamp columns (a view can cast it)",
                    field.column,
                    info.kind.describe()
                ),
            ));
        }
        if let Some(declared) = field.declared
            && !compatible(&info.kind, declared.kind)
        {
            return Err(mismatch(
                format!("{key}.type"),
                format!(
                    "a {} column cannot hold a HubSpot {} property's values",
                    info.kind.describe(),
                    declared.kind.as_str()
                ),
            ));
        }
        let direction = field.flow.direction();
        if self.info.relation == Relation::View && direction.writes_locally() {
            return Err(mismatch(
                format!("{key}.direction"),
                format!(
                    "\"{}\" is a view, which pull cannot write; use direction = \"push\" (a \
                     {} field writes the column)",
                    self.mapping.table,
                    direction.as_str()
                ),
            ));
        }
        Ok(super::CheckedField {
            field: field.clone(),
            column: info.kind.clone(),
            key,
        })
    }
}
