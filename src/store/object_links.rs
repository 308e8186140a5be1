//! Records of a table crm-sync does not own (a `[[sync.objects]]` mapping to a user's table),
//! and their sync state in crm-sync's own `object_links` table: the linked HubSpot id, the hash
//! of the mapped values last pushed, the values both sides last agreed on, and whether HubSpot
//! deleted the record. The user's table is only read, and written only by an `UPDATE` of its
//! mapped columns (pull): never a trigger, a column or an insert.
//!
//! Identifiers are built into the SQL text: they come from a checked mapping, whose names are
//! plain SQL names ([`ColumnName`], [`TableRef`]), and are always quoted. Values are always
//! bound.
//!
//! A page of the user's table is read in key order (keyset: `key > cursor`) joined with its link
//! rows in the same statement, so change detection costs one read per page and no write for an
//! unchanged row.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};

use super::time::DbTime;
use super::{Store, StoreError, Tx, on_pool, on_tx};
use crate::ids::HsObjectId;
use crate::mapping::{ColumnName, TableRef};

/// A user's table as the sync engine reads it: which object it maps, its key column and the
/// mapped columns to read (in this order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTable {
    /// The HubSpot object (`contacts`), the link rows' namespace.
    pub object: &'static str,
    /// The table or view.
    pub table: TableRef,
    /// Its unique key column.
    pub key: ColumnName,
    /// How its keys compare: as whole numbers or as text.
    pub key_kind: KeyKind,
    /// The mapped columns read with each record.
    pub columns: Vec<ColumnName>,
}

/// How a key column's values order and bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A whole-number key (its text form is parsed back to bind it).
    Integer,
    /// A text key.
    Text,
}

/// A key value bound as its column's type, so that comparisons use the column's index.
#[derive(Debug, Clone)]
enum KeyBind {
    Integer(i64),
    Text(String),
}

impl KeyBind {
    fn integer(&self) -> Option<i64> {
        match self {
            Self::Integer(i) => Some(*i),
            Self::Text(_) => None,
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Self::Text(t) => Some(t.clone()),
            Self::Integer(_) => None,
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Self::Integer(i) => serde_json::json!(i),
            Self::Text(t) => serde_json::json!(t),
        }
    }
}

/// `value` bound as a column of `kind` takes it.
fn bind_as(kind: KeyKind, value: &str, column: &ColumnName) -> Result<KeyBind, StoreError> {
    match kind {
        KeyKind::Text => Ok(KeyBind::Text(value.to_owned())),
        KeyKind::Integer => value.parse().map(KeyBind::Integer).map_err(|_| {
            StoreError::InvalidData(format!(
                "{value:?} for column {column} is not a whole number"
            ))
        }),
    }
}

impl LocalTable {
    fn bind_key(&self, key: &str) -> Result<KeyBind, StoreError> {
        match self.key_kind {
            KeyKind::Text => Ok(KeyBind::Text(key.to_owned())),
            KeyKind::Integer => key.parse().map(KeyBind::Integer).map_err(|_| {
                StoreError::InvalidData(format!(
                    "key {key:?} of table {} is not a whole number",
                    self.table
                ))
            }),
        }
    }

    /// The `sync_state` key of this table's incremental pull bookmark: one per object and
    /// table, so that each mapping (and the built-in contacts table) keeps its own.
    fn bookmark_key(&self) -> String {
        format!("pull.{}.table.{}.bookmark", self.object, self.table)
    }

    /// `SELECT` list: the key and each mapped column as text, then the link's columns.
    fn select_list(&self) -> String {
        let mut list = format!("CAST(u.{} AS TEXT)", self.key.quoted());
        for column in &self.columns {
            list.push_str(&format!(", CAST(u.{} AS TEXT)", column.quoted()));
        }
        list.push_str(
            ", l.hs_object_id, l.pushed_hash, l.synced_values, \
             (l.hubspot_deleted_at IS NOT NULL) AS deleted, (l.local_key IS NOT NULL) AS linked",
        );
        list
    }

    fn joined_links(&self) -> String {
        format!(
            "{table} u LEFT JOIN object_links l ON l.object = $1 AND l.local_key = CAST(u.{key} AS TEXT)",
            table = self.table.quoted(),
            key = self.key.quoted(),
        )
    }
}

/// crm-sync's sync state of one local record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectLink {
    /// The linked HubSpot record (kept here when the mapping has no id column).
    pub hs_object_id: Option<HsObjectId>,
    /// The hash of the mapped values last pushed.
    pub pushed_hash: Option<String>,
    /// Property → the value both sides last agreed on, in HubSpot's format.
    pub synced: BTreeMap<String, String>,
    /// HubSpot deleted the record: push never creates it again.
    pub deleted: bool,
}

/// One row of a user's table with its sync state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRecord {
    /// The key, as text.
    pub key: String,
    /// The mapped columns' values as text (NULL: `None`), in [`LocalTable::columns`] order.
    pub values: Vec<Option<String>>,
    /// Its link row, when it has one.
    pub link: Option<ObjectLink>,
}

/// A link row to write: `pushed_hash` `None` keeps the stored one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkWrite {
    /// The local key.
    pub key: String,
    /// The HubSpot record it is linked to.
    pub hs_object_id: Option<HsObjectId>,
    /// The new hash of the pushed values, or `None` to keep the stored one.
    pub pushed_hash: Option<String>,
    /// The values both sides now agree on (replaces the stored ones).
    pub synced: BTreeMap<String, String>,
}

/// A local link the database refused because another local key holds that HubSpot record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkHeld {
    /// The key that asked for the link.
    pub key: String,
    /// The HubSpot record.
    pub hs_object_id: HsObjectId,
    /// The local key that holds it.
    pub holder: String,
}

/// A value written into a user's column, typed as the column takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValue {
    /// NULL.
    Null,
    /// Text.
    Text(String),
    /// A whole number.
    Integer(i64),
    /// An exact decimal, as text (cast to `NUMERIC` by the statement).
    Decimal(String),
    /// A floating-point number.
    Float(f64),
    /// A boolean (SQLite stores 1 / 0).
    Bool(bool),
    /// A day.
    Date(NaiveDate),
    /// An instant.
    Timestamp(DateTime<Utc>),
}

/// A row of a key and `columns` values, all as text.
fn row_values<R>(row: &R, columns: usize) -> Result<(String, Vec<Option<String>>), sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let key: String = row.try_get(0)?;
    let values = (0..columns)
        .map(|i| row.try_get::<Option<String>, _>(i + 1))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((key, values))
}

fn decode_record<R>(row: &R, columns: usize) -> Result<LocalRecord, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let key: Option<String> = row.try_get(0)?;
    let mut values = Vec::with_capacity(columns);
    for i in 0..columns {
        values.push(row.try_get::<Option<String>, _>(i + 1)?);
    }
    let at = columns + 1;
    let linked: bool = row.try_get(at + 4)?;
    let link = if linked {
        let synced: Option<String> = row.try_get(at + 2)?;
        Some(ObjectLink {
            hs_object_id: row.try_get::<Option<String>, _>(at)?.map(HsObjectId),
            pushed_hash: row.try_get(at + 1)?,
            synced: synced
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default(),
            deleted: row.try_get(at + 3)?,
        })
    } else {
        None
    };
    Ok(LocalRecord {
        key: key.unwrap_or_default(),
        values,
        link,
    })
}

impl Store {
    /// Up to `limit` rows of `table` after the key `after` (from the start when `None`), in key
    /// order, each with its link row: one statement.
    pub async fn local_page(
        &self,
        table: &LocalTable,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<LocalRecord>, StoreError> {
        let cursor = after.map(|k| table.bind_key(k)).transpose()?;
        let key = table.key.quoted();
        let sql = format!(
            "SELECT {list} FROM {from} WHERE u.{key} IS NOT NULL{after} ORDER BY u.{key} LIMIT $2",
            list = table.select_list(),
            from = table.joined_links(),
            after = if cursor.is_some() {
                format!(" AND u.{key} > $3")
            } else {
                String::new()
            },
        );
        let n = table.columns.len();
        let records = on_pool!(self, pool => {
            let query = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(table.object)
                .bind(i64::from(limit));
            let query = match &cursor {
                Some(KeyBind::Integer(i)) => query.bind(*i),
                Some(KeyBind::Text(t)) => query.bind(t.clone()),
                None => query,
            };
            let rows = query.fetch_all(pool).await?;
            rows.iter().map(|r| decode_record(r, n)).collect::<Result<Vec<_>, _>>()?
        });
        Ok(records)
    }

    /// The rows of `table` with these keys, each with its link row.
    pub async fn local_records(
        &self,
        table: &LocalTable,
        keys: &[String],
    ) -> Result<Vec<LocalRecord>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let key = table.key.quoted();
        let (pg_in, array) = match table.key_kind {
            KeyKind::Integer => ("ANY($2::bigint[])", keys_json(table, keys)?),
            KeyKind::Text => ("ANY($2::text[])", serde_json::json!(keys)),
        };
        let pg = format!(
            "SELECT {} FROM {} WHERE u.{key} = {pg_in}",
            table.select_list(),
            table.joined_links()
        );
        let sqlite = format!(
            "SELECT {} FROM {} WHERE u.{key} IN (SELECT value FROM json_each($2))",
            table.select_list(),
            table.joined_links()
        );
        let n = table.columns.len();
        let records = on_pool!(self, pool => postgres: {
            let query = sqlx::query(AssertSqlSafe(pg)).bind(table.object);
            let query = match table.key_kind {
                KeyKind::Integer => query.bind(integers(&array)),
                KeyKind::Text => query.bind(keys.to_vec()),
            };
            let rows = query.fetch_all(pool).await?;
            rows.iter().map(|r| decode_record(r, n)).collect::<Result<Vec<_>, _>>()?
        }, sqlite: {
            let rows = sqlx::query(AssertSqlSafe(sqlite))
                .bind(table.object)
                .bind(array.to_string())
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| decode_record(r, n)).collect::<Result<Vec<_>, _>>()?
        });
        Ok(records)
    }

    /// The keys of the rows of `table` whose `email` column is one of `emails` (compared
    /// without case), as (lower-case email, key).
    pub async fn local_keys_by_email(
        &self,
        table: &LocalTable,
        email: &ColumnName,
        emails: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        if emails.is_empty() {
            return Ok(Vec::new());
        }
        let lowered: Vec<String> = emails.iter().map(|e| e.trim().to_lowercase()).collect();
        let select = format!(
            "SELECT lower({email}), CAST({key} AS TEXT) FROM {table} WHERE lower({email})",
            email = email.quoted(),
            key = table.key.quoted(),
            table = table.table.quoted(),
        );
        let pairs: Vec<(String, String)> = on_pool!(self, pool => postgres: {
            sqlx::query_as(AssertSqlSafe(format!("{select} = ANY($1::text[])")))
                .bind(lowered.clone())
                .fetch_all(pool)
                .await?
        }, sqlite: {
            sqlx::query_as(AssertSqlSafe(format!(
                "{select} IN (SELECT value FROM json_each($1))"
            )))
            .bind(serde_json::json!(lowered).to_string())
            .fetch_all(pool)
            .await?
        });
        Ok(pairs)
    }

    /// The keys of the rows of `table` whose `column`, as text, is one of `values` (exactly),
    /// as (value, key): the rows a unique HubSpot property other than email names.
    pub async fn local_keys_by_text(
        &self,
        table: &LocalTable,
        column: &ColumnName,
        values: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let select = format!(
            "SELECT CAST({column} AS TEXT), CAST({key} AS TEXT) FROM {table} \
             WHERE CAST({column} AS TEXT)",
            column = column.quoted(),
            key = table.key.quoted(),
            table = table.table.quoted(),
        );
        let pairs: Vec<(String, String)> = on_pool!(self, pool => postgres: {
            sqlx::query_as(AssertSqlSafe(format!("{select} = ANY($1::text[])")))
                .bind(values.to_vec())
                .fetch_all(pool)
                .await?
        }, sqlite: {
            sqlx::query_as(AssertSqlSafe(format!(
                "{select} IN (SELECT value FROM json_each($1))"
            )))
            .bind(serde_json::json!(values).to_string())
            .fetch_all(pool)
            .await?
        });
        Ok(pairs)
    }

    /// The local keys linked to any of these HubSpot records of `object`, as (key, id).
    pub async fn links_by_hubspot_ids(
        &self,
        object: &str,
        ids: &[HsObjectId],
    ) -> Result<Vec<(String, HsObjectId)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let texts: Vec<String> = ids.iter().map(|i| i.0.clone()).collect();
        let pairs: Vec<(String, String)> = on_pool!(self, pool => postgres: {
            sqlx::query_as(
                "SELECT local_key, hs_object_id FROM object_links \
                 WHERE object = $1 AND hs_object_id = ANY($2::text[])",
            )
            .bind(object)
            .bind(texts.clone())
            .fetch_all(pool)
            .await?
        }, sqlite: {
            sqlx::query_as(
                "SELECT local_key, hs_object_id FROM object_links \
                 WHERE object = $1 AND hs_object_id IN (SELECT value FROM json_each($2))",
            )
            .bind(object)
            .bind(serde_json::json!(texts).to_string())
            .fetch_all(pool)
            .await?
        });
        Ok(pairs
            .into_iter()
            .map(|(k, id)| (k, HsObjectId(id)))
            .collect())
    }
}

impl Store {
    /// The next `limit` link rows of `object`, by local key after `after` (from the first when
    /// `None`), linked to a HubSpot id the full pull `job` did not read: one keyset anti-join
    /// over `object_links` and `pull_seen`, as (local key, HubSpot id).
    pub async fn object_links_unseen(
        &self,
        object: &str,
        job: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, HsObjectId)>, StoreError> {
        let sql = format!(
            "SELECT l.local_key, l.hs_object_id FROM object_links l \
             WHERE l.object = $1 AND l.hs_object_id IS NOT NULL{after} \
               AND NOT EXISTS (SELECT 1 FROM pull_seen s \
                                WHERE s.job_id = $2 AND s.hs_object_id = l.hs_object_id) \
             ORDER BY l.local_key LIMIT $3",
            after = if after.is_some() {
                " AND l.local_key > $4"
            } else {
                ""
            },
        );
        let rows: Vec<(String, String)> = on_pool!(self, pool => {
            let query = sqlx::query_as(AssertSqlSafe(sql.clone()))
                .bind(object)
                .bind(job)
                .bind(i64::from(limit));
            let query = match after {
                Some(key) => query.bind(key.to_owned()),
                None => query,
            };
            query.fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|(key, id)| (key, HsObjectId(id)))
            .collect())
    }

    /// Marks deleted in HubSpot the links of `object` to these records (a deletion webhook),
    /// in one transaction; returns the local keys marked.
    pub async fn mark_links_deleted(
        &self,
        object: &str,
        ids: &[HsObjectId],
    ) -> Result<Vec<String>, StoreError> {
        let keys: Vec<String> = self
            .links_by_hubspot_ids(object, ids)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        if keys.is_empty() {
            return Ok(keys);
        }
        let mut tx = Tx::begin(self).await?;
        tx.mark_deleted_in_hubspot(object, &keys).await?;
        tx.commit().await?;
        Ok(keys)
    }

    /// Moves the links of `object` to records merged away onto `survivor` (a merge webhook),
    /// in one transaction; returns the local keys moved. A survivor another key holds already
    /// is not taken (that link stays as it was, and push reports the merge when it writes).
    pub async fn relink_links_merged(
        &self,
        object: &str,
        survivor: &HsObjectId,
        merged: &[HsObjectId],
    ) -> Result<Vec<String>, StoreError> {
        let moves: Vec<(String, HsObjectId)> = self
            .links_by_hubspot_ids(object, merged)
            .await?
            .into_iter()
            .map(|(key, _)| (key, survivor.clone()))
            .collect();
        if moves.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = Tx::begin(self).await?;
        let held = tx.relink_objects(object, &moves).await?;
        tx.commit().await?;
        Ok(moves
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| !held.iter().any(|h| h.key == *key))
            .collect())
    }

    /// The incremental pull bookmark of `table`'s mapping: every HubSpot change before it has
    /// been pulled into that table. `None` until a pull of it has succeeded.
    pub async fn mapped_pull_bookmark(
        &self,
        table: &LocalTable,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        const SQL: &str = "SELECT value FROM sync_state WHERE key = $1";
        let key = table.bookmark_key();
        let value: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar(SQL).bind(&key).fetch_optional(pool).await?
        });
        value
            .map(|v| {
                DateTime::parse_from_rfc3339(&v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| StoreError::InvalidData(format!("sync_state {key} {v:?}: {e}")))
            })
            .transpose()
    }
}

fn keys_json(table: &LocalTable, keys: &[String]) -> Result<serde_json::Value, StoreError> {
    let mut numbers = Vec::with_capacity(keys.len());
    for key in keys {
        match table.bind_key(key)? {
            KeyBind::Integer(i) => numbers.push(i),
            KeyBind::Text(_) => {}
        }
    }
    Ok(serde_json::json!(numbers))
}

fn integers(array: &serde_json::Value) -> Vec<i64> {
    array
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_i64).collect())
        .unwrap_or_default()
}

/// Who holds which HubSpot id among the link rows a page's writes touch, as those writes
/// change it: the page's writes are decided against it in their order (so a page that asks
/// twice for one id gets the first asker linked and the second reported), then written in one
/// statement.
#[derive(Debug, Default)]
struct Holders {
    /// HubSpot id → the local key holding it.
    by_id: HashMap<String, String>,
    /// Local key → its HubSpot id, for every key with a link row.
    by_key: HashMap<String, Option<String>>,
    /// The HubSpot id each key held before the page (the keys with a link row).
    before: HashMap<String, Option<String>>,
}

impl Holders {
    fn new(rows: Vec<(String, Option<String>)>) -> Self {
        let mut holders = Self::default();
        for (key, id) in rows {
            if let Some(id) = &id {
                holders.by_id.insert(id.clone(), key.clone());
            }
            holders.by_key.insert(key.clone(), id.clone());
            holders.before.insert(key, id);
        }
        holders
    }

    /// The other local key holding `id`, if any.
    fn other_holder(&self, id: &str, key: &str) -> Option<&String> {
        self.by_id.get(id).filter(|holder| *holder != key)
    }

    /// Whether `key` has a link row.
    fn has_row(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// Links `key` to `id` (`None`: to nothing), releasing what it held.
    fn link(&mut self, key: &str, id: Option<&str>) {
        let old = self.by_key.insert(key.to_owned(), id.map(str::to_owned));
        if let Some(Some(old)) = old
            && self.by_id.get(&old).is_some_and(|holder| holder == key)
        {
            self.by_id.remove(&old);
        }
        if let Some(id) = id {
            self.by_id.insert(id.to_owned(), key.to_owned());
        }
    }

    /// The keys among `written` that held, before the page, an id another key of `written`
    /// ends up with. The unique index is checked row by row as one statement writes, so these
    /// let go of their id first; otherwise the page's write could collide with itself.
    fn to_release<'k>(&self, written: impl Iterator<Item = &'k String> + Clone) -> Vec<String> {
        written
            .clone()
            .filter(|key| {
                let Some(Some(old)) = self.before.get(*key) else {
                    return false;
                };
                written.clone().any(|other| {
                    other != *key
                        && self
                            .by_key
                            .get(other)
                            .is_some_and(|id| id.as_deref() == Some(old.as_str()))
                })
            })
            .cloned()
            .collect()
    }
}

/// One link row to upsert: the last write of its key in the page.
#[derive(Debug, Serialize)]
struct LinkRow {
    key: String,
    hs_object_id: Option<String>,
    pushed_hash: Option<String>,
    synced: String,
}

/// PostgreSQL: the link rows of `object` (`$1`) with these keys (`$2`) or HubSpot ids (`$3`).
/// Two index lookups joined by `UNION`: one `OR` of the two `ANY`s is planned as a scan of the
/// whole table once the statement's plan is generic, which made a 100,000-row push quadratic.
const PG_HOLDERS: &str = "SELECT local_key, hs_object_id FROM object_links \
     WHERE object = $1 AND local_key = ANY($2::text[]) \
     UNION SELECT local_key, hs_object_id FROM object_links \
     WHERE object = $1 AND hs_object_id = ANY($3::text[])";
/// SQLite: the same from JSON arrays, also by `UNION`: SQLite plans the `OR` as a search of
/// every link row of the object.
pub(super) const SQLITE_HOLDERS: &str = "SELECT local_key, hs_object_id FROM object_links \
     WHERE object = $1 AND local_key IN (SELECT value FROM json_each($2)) \
     UNION SELECT local_key, hs_object_id FROM object_links \
     WHERE object = $1 AND hs_object_id IN (SELECT value FROM json_each($3))";

/// PostgreSQL: unlinks these keys (`$2`) of `object` (`$1`) before they take other ids.
const PG_RELEASE: &str = "UPDATE object_links SET hs_object_id = NULL \
     WHERE object = $1 AND local_key = ANY($2::text[])";
/// SQLite: the same from a JSON array.
pub(super) const SQLITE_RELEASE: &str = "UPDATE object_links SET hs_object_id = NULL \
     WHERE object = $1 AND local_key IN (SELECT value FROM json_each($2))";

/// PostgreSQL: upserts link rows of `object` (`$1`) from arrays of keys, ids, hashes (NULL
/// keeps the stored one) and synced values, at `$6`.
const PG_SAVE_LINKS: &str = "
    INSERT INTO object_links
        (object, local_key, hs_object_id, pushed_hash, synced_values, updated_at)
    SELECT $1, v.local_key, v.hs_object_id, v.pushed_hash, v.synced_values, $6
      FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[])
        AS v(local_key, hs_object_id, pushed_hash, synced_values)
    ON CONFLICT (object, local_key) DO UPDATE SET
        hs_object_id = excluded.hs_object_id,
        pushed_hash = COALESCE(excluded.pushed_hash, object_links.pushed_hash),
        synced_values = excluded.synced_values,
        updated_at = excluded.updated_at";
/// SQLite: the same from one JSON array of objects (`WHERE true` lets SQLite parse the upsert
/// after a SELECT).
pub(super) const SQLITE_SAVE_LINKS: &str = "
    INSERT INTO object_links
        (object, local_key, hs_object_id, pushed_hash, synced_values, updated_at)
    SELECT $1, json_extract(value, '$.key'), json_extract(value, '$.hs_object_id'),
           json_extract(value, '$.pushed_hash'), json_extract(value, '$.synced'), $3
      FROM json_each($2) WHERE true
    ON CONFLICT (object, local_key) DO UPDATE SET
        hs_object_id = excluded.hs_object_id,
        pushed_hash = COALESCE(excluded.pushed_hash, object_links.pushed_hash),
        synced_values = excluded.synced_values,
        updated_at = excluded.updated_at";

/// PostgreSQL: marks these keys (`$2`) of `object` (`$1`) deleted in HubSpot at `$3`.
const PG_MARK_DELETED: &str = "
    INSERT INTO object_links (object, local_key, hubspot_deleted_at, updated_at)
    SELECT $1, k, $3, $3 FROM UNNEST($2::text[]) AS k
    ON CONFLICT (object, local_key) DO UPDATE SET
        hs_object_id = NULL,
        hubspot_deleted_at = excluded.hubspot_deleted_at,
        updated_at = excluded.updated_at";
/// SQLite: the same from a JSON array.
pub(super) const SQLITE_MARK_DELETED: &str = "
    INSERT INTO object_links (object, local_key, hubspot_deleted_at, updated_at)
    SELECT $1, value, $3, $3 FROM json_each($2) WHERE true
    ON CONFLICT (object, local_key) DO UPDATE SET
        hs_object_id = NULL,
        hubspot_deleted_at = excluded.hubspot_deleted_at,
        updated_at = excluded.updated_at";

/// PostgreSQL: moves the link rows of `object` (`$1`) with keys `$2` to the ids `$3`, at `$4`.
const PG_RELINK: &str = "
    UPDATE object_links l SET hs_object_id = v.hs_object_id, updated_at = $4
      FROM UNNEST($2::text[], $3::text[]) AS v(local_key, hs_object_id)
     WHERE l.object = $1 AND l.local_key = v.local_key";
/// SQLite: the same from one JSON array of `[key, id]`; the rows found by the key list through
/// the primary key (an `UPDATE … FROM json_each` scans every link row of the object).
pub(super) const SQLITE_RELINK: &str = "
    UPDATE object_links
       SET hs_object_id = (SELECT json_extract(value, '$[1]') FROM json_each($2)
                            WHERE json_extract(value, '$[0]') = object_links.local_key),
           updated_at = $3
     WHERE object = $1
       AND local_key IN (SELECT json_extract(value, '$[0]') FROM json_each($2))";

/// SQLite: sets `column` of a user's table from one JSON array of `[key, value]` (`$1`).
pub(super) fn sqlite_set_column(table: &LocalTable, column: &ColumnName) -> String {
    format!(
        "UPDATE {table} AS u SET {column} = v.value \
           FROM (SELECT json_extract(value, '$[0]') AS key, json_extract(value, '$[1]') AS value \
                   FROM json_each($1)) AS v \
          WHERE u.{key} = v.key",
        table = table.table.quoted(),
        column = column.quoted(),
        key = table.key.quoted(),
    )
}

fn json_text<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::InvalidData(format!("cannot encode a page of links: {e}")))
}

impl Tx {
    /// The mapped columns (as text, in [`LocalTable::columns`] order) of the rows of `table`
    /// with these keys, locked until the transaction ends: a pull decides from values it read
    /// before its transaction, and writes a row only if they are still these (on PostgreSQL
    /// the rows are locked `FOR UPDATE`, so nothing changes them before the write; SQLite's
    /// transaction holds the one write lock already).
    pub async fn local_values_locked(
        &mut self,
        table: &LocalTable,
        keys: &[String],
    ) -> Result<Vec<(String, Vec<Option<String>>)>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let key = table.key.quoted();
        let mut list = format!("CAST(u.{key} AS TEXT)");
        for column in &table.columns {
            list.push_str(&format!(", CAST(u.{} AS TEXT)", column.quoted()));
        }
        let from = table.table.quoted();
        let (pg_in, array) = match table.key_kind {
            KeyKind::Integer => ("ANY($1::bigint[])", keys_json(table, keys)?),
            KeyKind::Text => ("ANY($1::text[])", serde_json::json!(keys)),
        };
        let pg = format!(
            "SELECT {list} FROM {from} u WHERE u.{key} = {pg_in} ORDER BY u.{key} FOR UPDATE"
        );
        let sqlite = format!(
            "SELECT {list} FROM {from} u WHERE u.{key} IN (SELECT value FROM json_each($1))"
        );
        let n = table.columns.len();
        let values = on_tx!(self, c => postgres: {
            let query = sqlx::query(AssertSqlSafe(pg));
            let query = match table.key_kind {
                KeyKind::Integer => query.bind(integers(&array)),
                KeyKind::Text => query.bind(keys.to_vec()),
            };
            let rows = query.fetch_all(&mut *c).await?;
            rows.iter()
                .map(|r| row_values(r, n))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        }, sqlite: {
            let rows = sqlx::query(AssertSqlSafe(sqlite))
                .bind(array.to_string())
                .fetch_all(&mut *c)
                .await?;
            rows.iter()
                .map(|r| row_values(r, n))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(values)
    }

    /// Writes link rows of `object` (insert or replace; see [`LinkWrite`]). A link whose HubSpot
    /// record another local key holds is not written and is returned instead: a failure of
    /// that record, never of the page. The links are decided in their order (a key written
    /// twice keeps its last write) and written set-based: a read of the rows involved, then
    /// one upsert (and, when a key takes the id another key of the page lets go, an unlink of
    /// the latter first).
    pub async fn save_object_links(
        &mut self,
        object: &str,
        links: &[LinkWrite],
    ) -> Result<Vec<LinkHeld>, StoreError> {
        if links.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = links.iter().map(|l| l.key.clone()).collect();
        let ids: Vec<String> = links
            .iter()
            .filter_map(|l| l.hs_object_id.as_ref().map(|i| i.0.clone()))
            .collect();
        let mut holders = Holders::new(self.object_link_holders(object, &keys, &ids).await?);
        let mut held = Vec::new();
        // Key → its row, in the order keys were first written.
        let mut rows: Vec<LinkRow> = Vec::new();
        for link in links {
            if let Some(id) = &link.hs_object_id
                && let Some(holder) = holders.other_holder(&id.0, &link.key)
            {
                held.push(LinkHeld {
                    key: link.key.clone(),
                    hs_object_id: id.clone(),
                    holder: holder.clone(),
                });
                continue;
            }
            let id = link.hs_object_id.as_ref().map(|i| i.0.as_str());
            holders.link(&link.key, id);
            let row = LinkRow {
                key: link.key.clone(),
                hs_object_id: id.map(str::to_owned),
                pushed_hash: link.pushed_hash.clone(),
                synced: json_text(&link.synced)?,
            };
            match rows.iter_mut().find(|r| r.key == link.key) {
                // A second write of a key replaces the first, which stored its hash.
                Some(earlier) => {
                    let pushed_hash = row.pushed_hash.clone().or(earlier.pushed_hash.take());
                    *earlier = LinkRow { pushed_hash, ..row };
                }
                None => rows.push(row),
            }
        }
        if rows.is_empty() {
            return Ok(held);
        }
        let release = holders.to_release(rows.iter().map(|r| &r.key));
        self.release_links(object, &release).await?;
        let now = DbTime(Utc::now());
        on_tx!(self, c => postgres: {
            sqlx::query(PG_SAVE_LINKS)
                .bind(object)
                .bind(rows.iter().map(|r| r.key.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.hs_object_id.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.pushed_hash.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.synced.clone()).collect::<Vec<_>>())
                .bind(now)
                .execute(&mut *c)
                .await?;
        }, sqlite: {
            sqlx::query(SQLITE_SAVE_LINKS)
                .bind(object)
                .bind(json_text(&rows)?)
                .bind(now)
                .execute(&mut *c)
                .await?;
        });
        Ok(held)
    }

    /// The link rows of `object` with one of these keys or HubSpot ids, as (key, id).
    async fn object_link_holders(
        &mut self,
        object: &str,
        keys: &[String],
        ids: &[String],
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let rows = on_tx!(self, c => postgres: {
            sqlx::query_as(PG_HOLDERS)
                .bind(object)
                .bind(keys.to_vec())
                .bind(ids.to_vec())
                .fetch_all(&mut *c)
                .await?
        }, sqlite: {
            sqlx::query_as(SQLITE_HOLDERS)
                .bind(object)
                .bind(json_text(&keys)?)
                .bind(json_text(&ids)?)
                .fetch_all(&mut *c)
                .await?
        });
        Ok(rows)
    }

    /// Unlinks these keys of `object` (they take another id in the same write).
    async fn release_links(&mut self, object: &str, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        on_tx!(self, c => postgres: {
            sqlx::query(PG_RELEASE)
                .bind(object)
                .bind(keys.to_vec())
                .execute(&mut *c)
                .await?;
        }, sqlite: {
            sqlx::query(SQLITE_RELEASE)
                .bind(object)
                .bind(json_text(&keys)?)
                .execute(&mut *c)
                .await?;
        });
        Ok(())
    }

    /// Marks the records of `object` with these local keys deleted in HubSpot: push never
    /// creates them again. Their link to the deleted id is dropped. One statement.
    pub async fn mark_deleted_in_hubspot(
        &mut self,
        object: &str,
        keys: &[String],
    ) -> Result<(), StoreError> {
        // An upsert may touch a row once: each key once.
        let keys: Vec<String> = keys
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let now = DbTime(Utc::now());
        on_tx!(self, c => postgres: {
            sqlx::query(PG_MARK_DELETED)
                .bind(object)
                .bind(keys.clone())
                .bind(now)
                .execute(&mut *c)
                .await?;
        }, sqlite: {
            sqlx::query(SQLITE_MARK_DELETED)
                .bind(object)
                .bind(json_text(&keys)?)
                .bind(now)
                .execute(&mut *c)
                .await?;
        });
        Ok(())
    }

    /// Moves the links of these local keys of `object` to a surviving HubSpot record (their
    /// record was merged into it), keeping what was last synced. A survivor another local key
    /// already holds is not taken and is returned instead; a key without a link row is left
    /// without one. Decided in order, written set-based like [`Tx::save_object_links`].
    pub async fn relink_objects(
        &mut self,
        object: &str,
        moves: &[(String, HsObjectId)],
    ) -> Result<Vec<LinkHeld>, StoreError> {
        if moves.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = moves.iter().map(|(key, _)| key.clone()).collect();
        let ids: Vec<String> = moves.iter().map(|(_, id)| id.0.clone()).collect();
        let mut holders = Holders::new(self.object_link_holders(object, &keys, &ids).await?);
        let mut held = Vec::new();
        let mut rows: Vec<(String, String)> = Vec::new();
        for (key, survivor) in moves {
            if let Some(holder) = holders.other_holder(&survivor.0, key) {
                held.push(LinkHeld {
                    key: key.clone(),
                    hs_object_id: survivor.clone(),
                    holder: holder.clone(),
                });
                continue;
            }
            // Only an existing row moves (an `UPDATE`): it then holds the survivor.
            if !holders.has_row(key) {
                continue;
            }
            holders.link(key, Some(&survivor.0));
            match rows.iter_mut().find(|(k, _)| k == key) {
                Some(earlier) => earlier.1 = survivor.0.clone(),
                None => rows.push((key.clone(), survivor.0.clone())),
            }
        }
        if rows.is_empty() {
            return Ok(held);
        }
        let release = holders.to_release(rows.iter().map(|(key, _)| key));
        self.release_links(object, &release).await?;
        let now = DbTime(Utc::now());
        on_tx!(self, c => postgres: {
            sqlx::query(PG_RELINK)
                .bind(object)
                .bind(rows.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>())
                .bind(rows.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>())
                .bind(now)
                .execute(&mut *c)
                .await?;
        }, sqlite: {
            sqlx::query(SQLITE_RELINK)
                .bind(object)
                .bind(json_text(&rows)?)
                .bind(now)
                .execute(&mut *c)
                .await?;
        });
        Ok(held)
    }

    /// Stores, in this transaction, the incremental pull bookmark of `table`'s mapping.
    pub async fn set_mapped_pull_bookmark(
        &mut self,
        table: &LocalTable,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO sync_state (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";
        let value = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let key = table.bookmark_key();
        on_tx!(self, c => sqlx::query(SQL)
            .bind(&key)
            .bind(&value)
            .bind(DbTime(Utc::now()))
            .execute(&mut *c)
            .await
            .map(drop)?);
        Ok(())
    }

    /// Writes one column of many rows of `table` (an `UPDATE` of that column only), in one
    /// statement: each key's value as text (`None`: NULL), parsed when `kind` says the column
    /// holds whole numbers. A key given twice takes its last value, as separate writes would.
    pub async fn update_local_column(
        &mut self,
        table: &LocalTable,
        column: &ColumnName,
        kind: KeyKind,
        values: &[(String, Option<String>)],
    ) -> Result<(), StoreError> {
        let mut last: Vec<(KeyBind, Option<KeyBind>)> = Vec::with_capacity(values.len());
        let mut at: HashMap<&str, usize> = HashMap::new();
        for (key, value) in values {
            let key_bind = table.bind_key(key)?;
            let value = value
                .as_deref()
                .map(|v| bind_as(kind, v, column))
                .transpose()?;
            match at.get(key.as_str()) {
                Some(&i) => last[i].1 = value,
                None => {
                    at.insert(key, last.len());
                    last.push((key_bind, value));
                }
            }
        }
        if last.is_empty() {
            return Ok(());
        }
        let sql_type = |kind| match kind {
            KeyKind::Integer => "bigint",
            KeyKind::Text => "text",
        };
        let pg = format!(
            "UPDATE {table} AS u SET {column} = v.value \
               FROM UNNEST($1::{key_type}[], $2::{value_type}[]) AS v(key, value) \
              WHERE u.{key} = v.key",
            table = table.table.quoted(),
            column = column.quoted(),
            key = table.key.quoted(),
            key_type = sql_type(table.key_kind),
            value_type = sql_type(kind),
        );
        let sqlite = sqlite_set_column(table, column);
        on_tx!(self, c => postgres: {
            let query = sqlx::query(AssertSqlSafe(pg));
            let query = match table.key_kind {
                KeyKind::Integer => query.bind(last.iter().map(|(k, _)| k.integer()).collect::<Vec<_>>()),
                KeyKind::Text => query.bind(last.iter().map(|(k, _)| k.text()).collect::<Vec<_>>()),
            };
            let query = match kind {
                KeyKind::Integer => query.bind(
                    last.iter().map(|(_, v)| v.as_ref().and_then(KeyBind::integer)).collect::<Vec<_>>(),
                ),
                KeyKind::Text => query.bind(
                    last.iter().map(|(_, v)| v.as_ref().and_then(KeyBind::text)).collect::<Vec<_>>(),
                ),
            };
            query.execute(&mut *c).await?;
        }, sqlite: {
            let pairs: Vec<serde_json::Value> = last
                .iter()
                .map(|(k, v)| serde_json::json!([k.json(), v.as_ref().map(KeyBind::json)]))
                .collect();
            sqlx::query(AssertSqlSafe(sqlite))
                .bind(json_text(&pairs)?)
                .execute(&mut *c)
                .await?;
        });
        Ok(())
    }

    /// Writes mapped columns of one row of `table` (an `UPDATE` of those columns only).
    pub async fn update_local_row(
        &mut self,
        table: &LocalTable,
        key: &str,
        values: &[(ColumnName, ColumnValue)],
    ) -> Result<(), StoreError> {
        if values.is_empty() {
            return Ok(());
        }
        let key_bind = table.bind_key(key)?;
        let mut sets = Vec::with_capacity(values.len());
        let mut binds = Vec::new();
        for (column, value) in values {
            let placeholder = format!("${}", binds.len() + 2);
            let expression = match value {
                ColumnValue::Null => "NULL".to_owned(),
                ColumnValue::Decimal(_) => format!("CAST({placeholder} AS NUMERIC)"),
                _ => placeholder,
            };
            if !matches!(value, ColumnValue::Null) {
                binds.push(value.clone());
            }
            sets.push(format!("{} = {expression}", column.quoted()));
        }
        let sql = format!(
            "UPDATE {} SET {} WHERE {} = $1",
            table.table.quoted(),
            sets.join(", "),
            table.key.quoted()
        );
        on_tx!(self, c => {
            let query = sqlx::query(AssertSqlSafe(sql.clone()));
            let mut query = match &key_bind {
                KeyBind::Integer(i) => query.bind(*i),
                KeyBind::Text(t) => query.bind(t.clone()),
            };
            for value in &binds {
                query = match value {
                    ColumnValue::Null => query,
                    ColumnValue::Text(t) | ColumnValue::Decimal(t) => query.bind(t.clone()),
                    ColumnValue::Integer(i) => query.bind(*i),
                    ColumnValue::Float(f) => query.bind(*f),
                    ColumnValue::Bool(b) => query.bind(*b),
                    ColumnValue::Date(d) => query.bind(*d),
                    ColumnValue::Timestamp(at) => query.bind(DbTime(*at)),
                };
            }
            query.execute(&mut *c).await?;
        });
        Ok(())
    }
}
