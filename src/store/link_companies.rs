//! The primary company of rows of a user's contacts table (`company_column`): the rows'
//! company keys read with their links, the HubSpot company each link last agreed on
//! (`object_links.company_hs_id`), and the lookups between a company's local key and its
//! HubSpot id, for crm-sync's own `companies` table and for a companies table mapped to the
//! user's own (whose links are `object_links` rows of object `companies`).
//!
//! Identifiers are built into the SQL text from a checked mapping (plain SQL names, always
//! quoted); values are always bound. Page writes are set-based (PostgreSQL `UNNEST`, SQLite
//! `json_each`), never one statement per row.

use sqlx::query::QueryAs;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Database, Encode, Type};

use super::{KeyKind, LocalTable, Store, StoreError, Tx, on_pool, on_tx};
use crate::ids::{CompanyId, HsObjectId};
use crate::mapping::ColumnName;

/// A linked row of a user's contacts table with its company key and the company last agreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyLinkRow {
    /// The row's key, as text.
    pub key: String,
    /// Its HubSpot contact.
    pub hs_object_id: HsObjectId,
    /// The company column's value, as text (`None`: no company).
    pub company_key: Option<String>,
    /// The HubSpot company both sides last agreed on as the contact's primary (`None`: none).
    pub synced: Option<CompanyId>,
}

/// What a company's local key names: its HubSpot id, if linked, and whether HubSpot deleted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyKeyState {
    /// The local key, as text.
    pub key: String,
    /// The linked HubSpot company.
    pub hs_object_id: Option<CompanyId>,
    /// Whether HubSpot deleted the company (a tombstone, or a link marked deleted).
    pub deleted: bool,
}

type RawRow = (Option<String>, Option<String>, String, Option<String>);

fn decode(rows: Vec<RawRow>) -> Vec<CompanyLinkRow> {
    rows.into_iter()
        .map(|(key, company_key, id, synced)| CompanyLinkRow {
            key: key.unwrap_or_default(),
            hs_object_id: HsObjectId(id),
            company_key,
            synced: synced.map(CompanyId),
        })
        .collect()
}

/// `SELECT … FROM` the table joined with its live links: (key, company key, HubSpot id, company
/// last agreed).
fn select(table: &LocalTable, column: &ColumnName) -> String {
    format!(
        "SELECT CAST(u.{key} AS TEXT), CAST(u.{column} AS TEXT), l.hs_object_id, l.company_hs_id \
           FROM {table} u JOIN object_links l \
             ON l.object = $1 AND l.local_key = CAST(u.{key} AS TEXT) \
          WHERE l.hs_object_id IS NOT NULL AND l.hubspot_deleted_at IS NULL",
        key = table.key.quoted(),
        column = column.quoted(),
        table = table.table.quoted(),
    )
}

/// A page's cursor: the key after which it starts, bound as its column compares (`Ok`: a whole
/// number).
fn cursor(
    table: &LocalTable,
    after: Option<&str>,
) -> Result<Option<Result<i64, String>>, StoreError> {
    Ok(match (after, table.key_kind) {
        (None, _) => None,
        (Some(a), KeyKind::Text) => Some(Err(a.to_owned())),
        (Some(a), KeyKind::Integer) => Some(Ok(a.parse::<i64>().map_err(|_| {
            StoreError::InvalidData(format!(
                "key {a:?} of table {} is not a whole number",
                table.table
            ))
        })?)),
    })
}

/// `query` with the page's cursor, if any, bound as its last parameter.
fn bind_cursor<'q, DB: Database, O>(
    query: QueryAs<'q, DB, O, DB::Arguments>,
    cursor: &Option<Result<i64, String>>,
) -> QueryAs<'q, DB, O, DB::Arguments>
where
    i64: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
{
    match cursor {
        Some(Ok(i)) => query.bind(*i),
        Some(Err(t)) => query.bind(t.clone()),
        None => query,
    }
}

/// [`select`] with the rows whose keys are `$3` (an array), linked or not: a row not linked
/// (or whose link HubSpot deleted) has an empty HubSpot id and nothing agreed.
fn select_also(table: &LocalTable, column: &ColumnName, postgres: bool) -> String {
    let live = "(l.hs_object_id IS NOT NULL AND l.hubspot_deleted_at IS NULL)";
    let also = if postgres {
        "= ANY($3::text[])"
    } else {
        "IN (SELECT value FROM json_each($3))"
    };
    format!(
        "SELECT CAST(u.{key} AS TEXT), CAST(u.{column} AS TEXT), \
                CASE WHEN {live} THEN l.hs_object_id ELSE '' END, \
                CASE WHEN {live} THEN l.company_hs_id END \
           FROM {table} u LEFT JOIN object_links l \
             ON l.object = $1 AND l.local_key = CAST(u.{key} AS TEXT) \
          WHERE ({live} OR CAST(u.{key} AS TEXT) {also})",
        key = table.key.quoted(),
        column = column.quoted(),
        table = table.table.quoted(),
    )
}

/// The rows with these HubSpot ids (`$2`), PostgreSQL and SQLite forms.
fn of_ids(table: &LocalTable, column: &ColumnName) -> (String, String) {
    let base = select(table, column);
    let key = table.key.quoted();
    (
        format!("{base} AND l.hs_object_id = ANY($2::text[]) ORDER BY u.{key}"),
        format!("{base} AND l.hs_object_id IN (SELECT value FROM json_each($2)) ORDER BY u.{key}"),
    )
}

fn texts(ids: &[HsObjectId]) -> Vec<String> {
    ids.iter().map(|i| i.0.clone()).collect()
}

/// SQLite: the link state of these keys (`$2`, a JSON array) of `object` (`$1`).
pub(super) const SQLITE_KEY_STATES: &str = "SELECT local_key, hs_object_id, \
            hubspot_deleted_at IS NOT NULL \
       FROM object_links \
      WHERE object = $1 AND local_key IN (SELECT value FROM json_each($2))";

/// SQLite: the link rows of `object` (`$1`) holding these HubSpot ids (`$2`, a JSON array).
pub(super) const SQLITE_COMPANY_HOLDERS: &str = "SELECT local_key, hs_object_id FROM object_links \
      WHERE object = $1 AND hs_object_id IN (SELECT value FROM json_each($2))";

/// SQLite: sets the agreed company of these keys of `object` (`$1`) from one JSON array of
/// `[key, company]` (`$2`). Not `UPDATE … FROM json_each`: SQLite then searches every link row
/// of the object for each page (2 s a page at 20,000 rows, holding the write lock); the key
/// list lets it find the page's rows by the primary key.
pub(super) const SQLITE_SAVE_COMPANIES: &str = "UPDATE object_links \
        SET company_hs_id = (SELECT json_extract(value, '$[1]') FROM json_each($2) \
                              WHERE json_extract(value, '$[0]') = object_links.local_key) \
      WHERE object = $1 \
        AND local_key IN (SELECT json_extract(value, '$[0]') FROM json_each($2))";

impl Store {
    /// Up to `limit` linked (and not deleted) rows of `table` after the key `after`, in key
    /// order, with the company column's value and the company last agreed: one statement.
    pub async fn company_link_page(
        &self,
        table: &LocalTable,
        column: &ColumnName,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<CompanyLinkRow>, StoreError> {
        self.link_page(table, column, after, limit, None).await
    }

    /// [`Store::company_link_page`] with the rows of the keys `also` too, linked or not (one not
    /// linked with an empty HubSpot id and nothing agreed): a dry push's pages, with the rows
    /// the dry run would link where the real run, which links them first, meets them.
    pub async fn company_link_page_with(
        &self,
        table: &LocalTable,
        column: &ColumnName,
        after: Option<&str>,
        limit: u32,
        also: &[String],
    ) -> Result<Vec<CompanyLinkRow>, StoreError> {
        self.link_page(table, column, after, limit, Some(also))
            .await
    }

    /// The reader of both pages (`also`: [`Store::company_link_page_with`]'s keys). Each page
    /// keeps its own statement, a plain one the inner join of [`select`] rather than
    /// [`select_also`] with an empty list, so that sharing the reader changes neither's plan.
    async fn link_page(
        &self,
        table: &LocalTable,
        column: &ColumnName,
        after: Option<&str>,
        limit: u32,
        also: Option<&[String]>,
    ) -> Result<Vec<CompanyLinkRow>, StoreError> {
        let key = table.key.quoted();
        let cursor = cursor(table, after)?;
        let postgres = self.pg_pool().is_some();
        let (base, cursor_at) = match also {
            None => (select(table, column), 3),
            Some(_) => (select_also(table, column, postgres), 4),
        };
        let sql = format!(
            "{base}{after} ORDER BY u.{key} LIMIT $2",
            after = if cursor.is_some() {
                format!(" AND u.{key} > ${cursor_at}")
            } else {
                String::new()
            },
        );
        let rows: Vec<RawRow> = on_pool!(self, pool => postgres: {
            let query = sqlx::query_as(AssertSqlSafe(sql.clone()))
                .bind(table.object)
                .bind(i64::from(limit));
            let query = match also {
                Some(also) => query.bind(also),
                None => query,
            };
            bind_cursor(query, &cursor).fetch_all(pool).await?
        }, sqlite: {
            let query = sqlx::query_as(AssertSqlSafe(sql.clone()))
                .bind(table.object)
                .bind(i64::from(limit));
            let query = match also {
                Some(also) => query.bind(Json(also)),
                None => query,
            };
            bind_cursor(query, &cursor).fetch_all(pool).await?
        });
        Ok(decode(rows))
    }

    /// `keys` that are rows of `table`, in the table's key order (the database's, text keys
    /// by its collation). Ordered by the qualified column: PostgreSQL would sort an unqualified
    /// name by the output column of the same name, the key as text.
    pub async fn keys_in_order(
        &self,
        table: &LocalTable,
        keys: &[String],
    ) -> Result<Vec<String>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (pg, sqlite) = (
            format!(
                "SELECT CAST(u.{key} AS TEXT) FROM {table} u \
                  WHERE CAST(u.{key} AS TEXT) = ANY($1::text[]) ORDER BY u.{key}",
                key = table.key.quoted(),
                table = table.table.quoted(),
            ),
            format!(
                "SELECT CAST(u.{key} AS TEXT) FROM {table} u \
                  WHERE CAST(u.{key} AS TEXT) IN (SELECT value FROM json_each($1)) ORDER BY u.{key}",
                key = table.key.quoted(),
                table = table.table.quoted(),
            ),
        );
        let rows: Vec<String> = on_pool!(self, pool => postgres: {
            sqlx::query_scalar(AssertSqlSafe(pg)).bind(keys).fetch_all(pool).await?
        }, sqlite: {
            sqlx::query_scalar(AssertSqlSafe(sqlite)).bind(Json(keys)).fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// The linked rows of `table` whose HubSpot ids are `ids`, as [`Store::company_link_page`]
    /// reads them (before a page's transaction opens).
    pub async fn company_link_rows_now(
        &self,
        table: &LocalTable,
        column: &ColumnName,
        ids: &[HsObjectId],
    ) -> Result<Vec<CompanyLinkRow>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (pg, sqlite) = of_ids(table, column);
        let texts = texts(ids);
        let rows: Vec<RawRow> = on_pool!(self, pool => postgres: {
            sqlx::query_as(AssertSqlSafe(pg))
                .bind(table.object)
                .bind(texts)
                .fetch_all(pool)
                .await?
        }, sqlite: {
            sqlx::query_as(AssertSqlSafe(sqlite))
                .bind(table.object)
                .bind(Json(texts))
                .fetch_all(pool)
                .await?
        });
        Ok(decode(rows))
    }

    /// crm-sync's own companies with these local ids: their HubSpot ids and tombstones.
    pub async fn builtin_company_keys(
        &self,
        ids: &[i64],
    ) -> Result<Vec<CompanyKeyState>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        const PG: &str = "SELECT CAST(id AS TEXT), hs_object_id, hubspot_deleted_at IS NOT NULL \
                            FROM companies WHERE id = ANY($1::bigint[])";
        const SQLITE: &str = "SELECT CAST(id AS TEXT), hs_object_id, hubspot_deleted_at IS NOT NULL \
                                FROM companies WHERE id IN (SELECT value FROM json_each($1))";
        let rows: Vec<(String, Option<String>, bool)> = on_pool!(self, pool =>
            postgres: sqlx::query_as(PG).bind(ids).fetch_all(pool).await?,
            sqlite: sqlx::query_as(SQLITE).bind(Json(ids)).fetch_all(pool).await?,
        );
        Ok(key_states(rows))
    }

    /// The link rows of `object` (a mapped companies table) with these local keys: their
    /// HubSpot ids and deletion marks.
    pub async fn linked_company_keys(
        &self,
        object: &str,
        keys: &[String],
    ) -> Result<Vec<CompanyKeyState>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        const PG: &str = "SELECT local_key, hs_object_id, hubspot_deleted_at IS NOT NULL \
                            FROM object_links WHERE object = $1 AND local_key = ANY($2::text[])";
        let rows: Vec<(String, Option<String>, bool)> = on_pool!(self, pool =>
            postgres: sqlx::query_as(PG).bind(object).bind(keys).fetch_all(pool).await?,
            sqlite: sqlx::query_as(SQLITE_KEY_STATES).bind(object).bind(Json(keys)).fetch_all(pool).await?,
        );
        Ok(key_states(rows))
    }
}

fn key_states(rows: Vec<(String, Option<String>, bool)>) -> Vec<CompanyKeyState> {
    rows.into_iter()
        .map(|(key, id, deleted)| CompanyKeyState {
            key,
            hs_object_id: id.map(CompanyId),
            deleted,
        })
        .collect()
}

impl Tx {
    /// [`Store::company_link_rows_now`] in this transaction (the rows a page applies to),
    /// locked until it ends: the page writes the company column of the rows whose value it
    /// read here, so no other session may change them in between (on PostgreSQL the rows are
    /// locked `FOR UPDATE`; on SQLite the transaction already holds the one write lock).
    pub async fn company_link_rows(
        &mut self,
        table: &LocalTable,
        column: &ColumnName,
        ids: &[HsObjectId],
    ) -> Result<Vec<CompanyLinkRow>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (pg, sqlite) = of_ids(table, column);
        let pg = format!("{pg} FOR UPDATE OF u");
        let texts = texts(ids);
        let rows: Vec<RawRow> = on_tx!(self, c => postgres: {
            sqlx::query_as(AssertSqlSafe(pg))
                .bind(table.object)
                .bind(texts)
                .fetch_all(c)
                .await?
        }, sqlite: {
            sqlx::query_as(AssertSqlSafe(sqlite))
                .bind(table.object)
                .bind(Json(texts))
                .fetch_all(c)
                .await?
        });
        Ok(decode(rows))
    }

    /// The local keys of the link rows of `object` (a mapped companies table) holding these
    /// HubSpot ids, as (key, HubSpot id).
    pub async fn company_link_holders(
        &mut self,
        object: &str,
        ids: &[CompanyId],
    ) -> Result<Vec<(String, CompanyId)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        const PG: &str = "SELECT local_key, hs_object_id FROM object_links \
                           WHERE object = $1 AND hs_object_id = ANY($2::text[])";
        let texts: Vec<String> = ids.iter().map(|i| i.0.clone()).collect();
        let rows: Vec<(String, String)> = on_tx!(self, c =>
            postgres: sqlx::query_as(PG).bind(object).bind(texts).fetch_all(c).await?,
            sqlite: sqlx::query_as(SQLITE_COMPANY_HOLDERS).bind(object).bind(Json(texts)).fetch_all(c).await?,
        );
        Ok(rows
            .into_iter()
            .map(|(key, id)| (key, CompanyId(id)))
            .collect())
    }

    /// Records, per local key of `object`, the HubSpot company both sides now agree on as the
    /// contact's primary (`None`: none), on the key's link row: one statement.
    pub async fn save_link_companies(
        &mut self,
        object: &str,
        agreed: &[(String, Option<CompanyId>)],
    ) -> Result<(), StoreError> {
        if agreed.is_empty() {
            return Ok(());
        }
        const PG: &str = "UPDATE object_links l SET company_hs_id = v.company \
                            FROM UNNEST($2::text[], $3::text[]) AS v(local_key, company) \
                           WHERE l.object = $1 AND l.local_key = v.local_key";
        let keys: Vec<&str> = agreed.iter().map(|(k, _)| k.as_str()).collect();
        let companies: Vec<Option<&str>> = agreed
            .iter()
            .map(|(_, c)| c.as_ref().map(|c| c.0.as_str()))
            .collect();
        on_tx!(self, c => postgres: {
            sqlx::query(PG)
                .bind(object)
                .bind(&keys)
                .bind(&companies)
                .execute(c)
                .await?;
        }, sqlite: {
            let pairs: Vec<(&str, Option<&str>)> =
                keys.iter().copied().zip(companies.iter().copied()).collect();
            sqlx::query(SQLITE_SAVE_COMPANIES)
                .bind(object)
                .bind(Json(pairs))
                .execute(c)
                .await?;
        });
        Ok(())
    }
}
