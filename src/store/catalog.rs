//! What the database's catalog says about a table or view a mapping names: whether it exists
//! and is a table or a view, its columns and their types, and which columns are unique on
//! their own. PostgreSQL answers from `pg_catalog` (`to_regclass` resolves the name with the
//! search path, or the schema given); SQLite from `sqlite_master`, `pragma_table_info` and
//! `pragma_index_list` / `pragma_index_info`.

use super::{Store, StoreError, on_pool};
use crate::mapping::{ColumnName, TableRef};

/// Whether a relation is a table (pull may write it) or a view (read only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// A table (PostgreSQL: also a partitioned or foreign table).
    Table,
    /// A view (PostgreSQL: also a materialized view).
    View,
}

/// A column's type, as far as converting values to and from HubSpot cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// Text of any length (SQLite: also a column declared without a type).
    Text,
    /// A whole number.
    Integer,
    /// An exact decimal (`numeric`, `decimal`).
    Decimal,
    /// A floating-point number (`real`, `double precision`).
    Float,
    /// `boolean`.
    Boolean,
    /// A day without a time.
    Date,
    /// An instant or a date and time (a time without zone is read as UTC).
    Timestamp,
    /// A type crm-sync cannot convert (its name as the database spells it).
    Other(String),
}

impl ColumnKind {
    /// A PostgreSQL type as `format_type` spells it (domains resolved to their base type).
    fn of_postgres(spelled: &str) -> Self {
        let base = spelled.split('(').next().unwrap_or(spelled).trim();
        match base {
            "text" | "character varying" | "character" | "uuid" | "citext" | "name" => Self::Text,
            "smallint" | "integer" | "bigint" => Self::Integer,
            "numeric" => Self::Decimal,
            "real" | "double precision" => Self::Float,
            "boolean" => Self::Boolean,
            "date" => Self::Date,
            _ if spelled.starts_with("timestamp") && !spelled.ends_with("[]") => Self::Timestamp,
            _ => Self::Other(spelled.to_owned()),
        }
    }

    /// A SQLite declared type, by the names people declare (SQLite itself only knows
    /// affinities, so `BOOLEAN`, `DATE` and `TIMESTAMP` are conventions this follows).
    fn of_sqlite(declared: &str) -> Self {
        let upper = declared.trim().to_ascii_uppercase();
        let has = |word: &str| upper.contains(word);
        if upper.is_empty() {
            Self::Text
        } else if has("BOOL") {
            Self::Boolean
        } else if upper == "DATE" {
            Self::Date
        } else if has("DATETIME") || has("TIMESTAMP") {
            Self::Timestamp
        } else if has("INT") {
            Self::Integer
        } else if has("CHAR") || has("CLOB") || has("TEXT") {
            Self::Text
        } else if has("REAL") || has("FLOA") || has("DOUB") {
            Self::Float
        } else if has("NUMERIC") || has("DECIMAL") {
            Self::Decimal
        } else {
            Self::Other(declared.to_owned())
        }
    }

    /// The word used in messages and the API.
    pub fn describe(&self) -> &str {
        match self {
            Self::Text => "text",
            Self::Integer => "integer",
            Self::Decimal => "decimal",
            Self::Float => "float",
            Self::Boolean => "boolean",
            Self::Date => "date",
            Self::Timestamp => "timestamp",
            Self::Other(spelled) => spelled,
        }
    }
}

/// One column of a relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Its name as the catalog spells it.
    pub name: String,
    /// Its type.
    pub kind: ColumnKind,
}

/// What the catalog says about one table or view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Table or view.
    pub relation: Relation,
    /// Its columns, in order.
    pub columns: Vec<ColumnInfo>,
    /// The columns unique on their own: a one-column primary key, or a one-column unique
    /// index without a predicate or expression.
    pub unique_columns: Vec<String>,
    /// Whether names compare without case (SQLite's rule; PostgreSQL's quoted names are exact).
    case_insensitive: bool,
}

impl TableInfo {
    fn same(&self, a: &str, b: &str) -> bool {
        if self.case_insensitive {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }

    /// The column of that name.
    pub fn column(&self, name: &ColumnName) -> Option<&ColumnInfo> {
        self.columns
            .iter()
            .find(|c| self.same(&c.name, name.as_str()))
    }

    /// Whether the column is unique on its own.
    pub fn is_unique(&self, name: &ColumnName) -> bool {
        self.unique_columns
            .iter()
            .any(|c| self.same(c, name.as_str()))
    }
}

const PG_RELKIND: &str = "SELECT c.relkind::text FROM pg_catalog.pg_class c \
     WHERE c.oid = to_regclass($1::text)";
const PG_COLUMNS: &str = "SELECT a.attname::text, \
            format_type(COALESCE(NULLIF(t.typbasetype, 0), a.atttypid), NULL) \
       FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
      WHERE a.attrelid = to_regclass($1::text) AND a.attnum > 0 AND NOT a.attisdropped \
      ORDER BY a.attnum";
const PG_UNIQUE: &str = "SELECT a.attname::text \
       FROM pg_catalog.pg_index i \
       JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
      WHERE i.indrelid = to_regclass($1::text) AND i.indisunique AND i.indnkeyatts = 1 \
        AND i.indpred IS NULL AND i.indexprs IS NULL";

const SQLITE_RELKIND: &str = "SELECT type FROM sqlite_master \
     WHERE type IN ('table', 'view') AND name = $1 COLLATE NOCASE";
const SQLITE_COLUMNS: &str = "SELECT name, type, pk FROM pragma_table_info($1) ORDER BY cid";
const SQLITE_UNIQUE: &str = "SELECT min(ii.name) \
       FROM pragma_index_list($1) AS il JOIN pragma_index_info(il.name) AS ii \
      WHERE il.\"unique\" = 1 AND il.partial = 0 \
      GROUP BY il.name HAVING count(*) = 1 AND min(ii.name) IS NOT NULL";

impl Store {
    /// What the catalog says about `table`; `None` when no table or view has that name.
    pub async fn table_info(&self, table: &TableRef) -> Result<Option<TableInfo>, StoreError> {
        on_pool!(self, pool => postgres: {
            // Quoted, so that the name is matched exactly as written (plain names need no
            // escaping: TableRef checked them).
            let name = table.quoted();
            let kind: Option<String> = sqlx::query_scalar(PG_RELKIND)
                .bind(&name)
                .fetch_optional(pool)
                .await?;
            let relation = match kind.as_deref() {
                None => return Ok(None),
                Some("v" | "m") => Relation::View,
                Some(_) => Relation::Table,
            };
            let columns: Vec<(String, String)> = sqlx::query_as(PG_COLUMNS)
                .bind(&name)
                .fetch_all(pool)
                .await?;
            let unique_columns: Vec<String> = sqlx::query_scalar(PG_UNIQUE)
                .bind(&name)
                .fetch_all(pool)
                .await?;
            Ok(Some(TableInfo {
                relation,
                columns: columns
                    .into_iter()
                    .map(|(name, spelled)| ColumnInfo {
                        name,
                        kind: ColumnKind::of_postgres(&spelled),
                    })
                    .collect(),
                unique_columns,
                case_insensitive: false,
            }))
        }, sqlite: {
            let kind: Option<String> = sqlx::query_scalar(SQLITE_RELKIND)
                .bind(&table.name)
                .fetch_optional(pool)
                .await?;
            let relation = match kind.as_deref() {
                None => return Ok(None),
                Some("view") => Relation::View,
                Some(_) => Relation::Table,
            };
            let columns: Vec<(String, String, i64)> = sqlx::query_as(SQLITE_COLUMNS)
                .bind(&table.name)
                .fetch_all(pool)
                .await?;
            let mut unique_columns: Vec<String> = sqlx::query_scalar(SQLITE_UNIQUE)
                .bind(&table.name)
                .fetch_all(pool)
                .await?;
            // A one-column primary key (an INTEGER PRIMARY KEY has no index to list).
            let pk: Vec<&String> = columns.iter().filter(|c| c.2 > 0).map(|c| &c.0).collect();
            if let [only] = pk.as_slice() {
                unique_columns.push((*only).clone());
            }
            Ok(Some(TableInfo {
                relation,
                columns: columns
                    .iter()
                    .map(|(name, declared, _)| ColumnInfo {
                        name: name.clone(),
                        kind: ColumnKind::of_sqlite(declared),
                    })
                    .collect(),
                unique_columns,
                case_insensitive: true,
            }))
        })
    }

    /// Whether two rows of `table` share a non-null `column` value: how a view's key column
    /// is checked, since a view has no index to say so. Reads the whole view once.
    pub async fn has_duplicate_values(
        &self,
        table: &TableRef,
        column: &ColumnName,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {table} WHERE {column} IS NOT NULL \
             GROUP BY {column} HAVING count(*) > 1)",
            table = table.quoted(),
            column = column.quoted(),
        );
        let duplicated: bool = on_pool!(self, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_one(pool)
            .await?);
        Ok(duplicated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_types_are_classified_by_their_base_name() {
        assert_eq!(
            ColumnKind::of_postgres("character varying(80)"),
            ColumnKind::Text
        );
        assert_eq!(ColumnKind::of_postgres("bigint"), ColumnKind::Integer);
        assert_eq!(
            ColumnKind::of_postgres("numeric(10,2)"),
            ColumnKind::Decimal
        );
        assert_eq!(
            ColumnKind::of_postgres("timestamp(3) with time zone"),
            ColumnKind::Timestamp
        );
        assert_eq!(
            ColumnKind::of_postgres("timestamp with time zone[]"),
            ColumnKind::Other("timestamp with time zone[]".to_owned())
        );
        assert_eq!(
            ColumnKind::of_postgres("jsonb"),
            ColumnKind::Other("jsonb".to_owned())
        );
    }

    #[test]
    fn sqlite_types_follow_the_names_people_declare() {
        for (declared, kind) in [
            ("INTEGER", ColumnKind::Integer),
            ("varchar(20)", ColumnKind::Text),
            ("", ColumnKind::Text),
            ("BOOLEAN", ColumnKind::Boolean),
            ("DATE", ColumnKind::Date),
            ("DATETIME", ColumnKind::Timestamp),
            ("timestamp", ColumnKind::Timestamp),
            ("REAL", ColumnKind::Float),
            ("DECIMAL(10,2)", ColumnKind::Decimal),
            ("BLOB", ColumnKind::Other("BLOB".to_owned())),
        ] {
            assert_eq!(ColumnKind::of_sqlite(declared), kind, "{declared}");
        }
    }
}
