//! crm-sync's own `companies` table: listing, inserting, seeding, and the reads and writes of
//! the company push and pull.
//!
//! A company's `domain` is not unique, here as in HubSpot; its identity is its local id, its
//! `hs_object_id` once linked (unique when set), and the external key push writes to HubSpot.
//! Change tracking is the contacts' clock-free one: `local_version` rises when `name` or
//! `domain` changes (a trigger), push saves the version it read as `pushed_version`.
//!
//! Page statements are set-based: a page travels as arrays (PostgreSQL `UNNEST`) or as one
//! JSON document (SQLite `json_each`), never one statement per company.

use super::link_rule::{Link, changing_ids, split_clashes, with_earlier};
use super::time::DbTime;
use super::tombstones::{Tombstone, TombstoneReason};
use super::{Store, StoreError, Tx, on_pool, on_tx};
use crate::ids::{CompanyId, LocalCompanyId};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::types::Json;
use std::collections::HashMap;

/// The `sync_state` key of the incremental company pull's bookmark.
const BOOKMARK_KEY: &str = "pull.companies.bookmark";

/// The columns every company query returns, in [`CompanyRow`] order.
macro_rules! company_columns {
    () => {
        "id, name, domain, hs_object_id, created_at, updated_at, \
         hubspot_deleted_at, hubspot_deleted_reason, hubspot_deleted_id"
    };
}

/// What makes a company a push candidate: not linked yet, or linked and changed locally since
/// its last push; never one HubSpot deleted (tombstoned) until a user restores it.
macro_rules! company_candidate_filter {
    () => {
        "(hs_object_id IS NULL OR local_version > pushed_version) \
         AND hubspot_deleted_at IS NULL"
    };
}

/// A company as stored locally.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LocalCompany {
    /// Local primary key.
    pub id: LocalCompanyId,
    /// The company's name.
    pub name: Option<String>,
    /// Its primary web domain, trimmed and lower-case; not unique.
    pub domain: Option<String>,
    /// The HubSpot company once linked.
    pub hs_object_id: Option<CompanyId>,
    /// When the row was inserted.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// Set when HubSpot deleted the company: push leaves it alone until a user restores it.
    pub hubspot_deleted: Option<Tombstone>,
}

#[derive(sqlx::FromRow)]
struct CompanyRow {
    id: LocalCompanyId,
    name: Option<String>,
    domain: Option<String>,
    hs_object_id: Option<CompanyId>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    hubspot_deleted_at: Option<DateTime<Utc>>,
    hubspot_deleted_reason: Option<String>,
    hubspot_deleted_id: Option<String>,
}

impl TryFrom<CompanyRow> for LocalCompany {
    type Error = StoreError;

    fn try_from(row: CompanyRow) -> Result<Self, StoreError> {
        let hubspot_deleted = match (row.hubspot_deleted_at, row.hubspot_deleted_reason) {
            (Some(at), Some(reason)) => Some(Tombstone {
                at,
                reason: TombstoneReason::parse(&reason)?,
                hs_object_id: row.hubspot_deleted_id.map(crate::ids::HsObjectId),
            }),
            _ => None,
        };
        Ok(LocalCompany {
            id: row.id,
            name: row.name,
            domain: row.domain,
            hs_object_id: row.hs_object_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
            hubspot_deleted,
        })
    }
}

/// A company to insert; the domain is normalised by the database.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct NewCompany {
    /// The company's name.
    pub name: Option<String>,
    /// Its web domain, any case; blank means none.
    pub domain: Option<String>,
}

/// A local company a push considers, as read at the start of its page.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CompanyCandidate {
    /// Local primary key (also the value of the company external key in HubSpot).
    pub id: LocalCompanyId,
    /// The company's name.
    pub name: Option<String>,
    /// Its domain, trimmed and lower-case.
    pub domain: Option<String>,
    /// The HubSpot company this row is linked to, if any.
    pub hs_object_id: Option<CompanyId>,
    /// The row's version when it was read; saved as `pushed_version` once pushed.
    pub local_version: i64,
}

/// One row of a company page to link: its HubSpot company, and when its values are in
/// HubSpot, the version that holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyLink {
    /// The local row.
    pub id: LocalCompanyId,
    /// `hs_object_id` as it was read; the row is left alone if it changed meanwhile.
    pub read_hs_object_id: Option<CompanyId>,
    /// The HubSpot company the row is linked to now.
    pub hs_object_id: CompanyId,
    /// `Some(version)`: `pushed_version` becomes that version. `None`: only the link is
    /// saved.
    pub pushed_version: Option<i64>,
}

/// A link not saved because another local row holds that HubSpot company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyLinkClash {
    /// The row that was to be linked.
    pub id: LocalCompanyId,
    /// The HubSpot company it was to be linked to.
    pub hs_object_id: CompanyId,
    /// The local row that holds it already.
    pub holder: LocalCompanyId,
}

/// A company read from HubSpot that exists only there: the local row a pull creates for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledCompany {
    /// The HubSpot company.
    pub hs_object_id: CompanyId,
    /// Its name.
    pub name: Option<String>,
    /// Its domain (normalised by the database).
    pub domain: Option<String>,
}

/// A local row as a pull's matching sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CompanyMatch {
    /// The row.
    pub id: LocalCompanyId,
    /// Its HubSpot company, if linked.
    pub hs_object_id: Option<CompanyId>,
    /// Its domain.
    pub domain: Option<String>,
    /// Whether HubSpot deleted its company (a tombstoned row is never re-linked by domain).
    pub tombstoned: bool,
    /// Its version now (a row linked from no link counts as pushed at it).
    pub local_version: i64,
}

impl Store {
    /// Inserts companies in one transaction and returns their ids, in input order.
    pub async fn insert_companies(
        &self,
        batch: &[NewCompany],
    ) -> Result<Vec<LocalCompanyId>, StoreError> {
        const SQL: &str = "INSERT INTO companies (name, domain) VALUES ($1, $2) RETURNING id";
        let mut tx = Tx::begin(self).await?;
        let mut ids = Vec::with_capacity(batch.len());
        for company in batch {
            let id: LocalCompanyId = on_tx!(&mut tx, c => {
                sqlx::query_scalar(SQL)
                    .bind(company.name.as_deref())
                    .bind(company.domain.as_deref())
                    .fetch_one(c)
                    .await?
            });
            ids.push(id);
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Inserts the companies no row has yet (same name and same normalised domain), so that
    /// seeding twice adds none twice. Returns how many were inserted.
    pub async fn insert_missing_companies(&self, batch: &[NewCompany]) -> Result<u64, StoreError> {
        const SQL: &str = "
            INSERT INTO companies (name, domain)
            SELECT CAST($1 AS TEXT), CAST($2 AS TEXT) WHERE NOT EXISTS (
                SELECT 1 FROM companies
                 WHERE name IS NOT DISTINCT FROM CAST($1 AS TEXT)
                   AND domain IS NOT DISTINCT FROM NULLIF(lower(trim(CAST($2 AS TEXT))), ''))";
        let mut tx = Tx::begin(self).await?;
        let mut inserted = 0;
        for company in batch {
            inserted += on_tx!(&mut tx, c => {
                sqlx::query(SQL)
                    .bind(company.name.as_deref())
                    .bind(company.domain.as_deref())
                    .execute(c)
                    .await?
                    .rows_affected()
            });
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Gives every contact without a company the company whose domain is its email's domain,
    /// when exactly one company has that domain (two would be a guess). Returns how many
    /// contacts were linked. The company is not one of a contact's own fields, so this is not
    /// a local change for push.
    pub async fn link_contacts_to_companies_by_email_domain(&self) -> Result<u64, StoreError> {
        const PG: &str = "
            UPDATE contacts AS c SET company_id = m.company_id
              FROM (SELECT domain, min(id) AS company_id FROM companies
                     WHERE domain IS NOT NULL GROUP BY domain HAVING count(*) = 1) AS m
             WHERE c.company_id IS NULL AND c.email IS NOT NULL
               AND split_part(c.email, '@', 2) = m.domain";
        const SQLITE: &str = "
            UPDATE contacts SET company_id = m.company_id
              FROM (SELECT domain, min(id) AS company_id FROM companies
                     WHERE domain IS NOT NULL GROUP BY domain HAVING count(*) = 1) AS m
             WHERE contacts.company_id IS NULL AND contacts.email IS NOT NULL
               AND substr(contacts.email, instr(contacts.email, '@') + 1) = m.domain";
        let sql = on_pool!(self, _pool => postgres: PG, sqlite: SQLITE);
        let done = on_pool!(self, pool => sqlx::query(sql).execute(pool).await.map(|d| d.rows_affected()))?;
        Ok(done)
    }

    /// Keyset page ordered by id ascending, ids > after.
    pub async fn list_companies(
        &self,
        after: Option<LocalCompanyId>,
        limit: u32,
    ) -> Result<Vec<LocalCompany>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            company_columns!(),
            " FROM companies WHERE id > $1 ORDER BY id LIMIT $2"
        );
        let after = after.unwrap_or(LocalCompanyId(i64::MIN));
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, CompanyRow>(SQL)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        rows.into_iter().map(LocalCompany::try_from).collect()
    }

    /// One company by its local id.
    pub async fn get_company(
        &self,
        id: LocalCompanyId,
    ) -> Result<Option<LocalCompany>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            company_columns!(),
            " FROM companies WHERE id = $1"
        );
        let row = on_pool!(self, pool => {
            sqlx::query_as::<_, CompanyRow>(SQL).bind(id).fetch_optional(pool).await
        })?;
        row.map(LocalCompany::try_from).transpose()
    }

    /// How many companies there are.
    pub async fn count_companies(&self) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM companies";
        let n = on_pool!(self, pool => sqlx::query_scalar::<_, i64>(SQL).fetch_one(pool).await)?;
        Ok(n)
    }

    /// The company of a contact, by the contact's local id (`None`: no contact, or no company).
    pub async fn company_of_contact(
        &self,
        contact: crate::ids::ContactId,
    ) -> Result<Option<LocalCompanyId>, StoreError> {
        const SQL: &str = "SELECT company_id FROM contacts WHERE id = $1";
        let id: Option<Option<LocalCompanyId>> = on_pool!(self, pool => {
            sqlx::query_scalar(SQL).bind(contact).fetch_optional(pool).await
        })?;
        Ok(id.flatten())
    }

    /// How many companies a push would consider now, after `after` (by id).
    pub async fn count_company_push_candidates(
        &self,
        after: LocalCompanyId,
    ) -> Result<u64, StoreError> {
        const SQL: &str = concat!(
            "SELECT COUNT(*) FROM companies WHERE ",
            company_candidate_filter!(),
            " AND id > $1"
        );
        let n = on_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>(SQL).bind(after).fetch_one(pool).await
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The next `limit` push candidates after `after`, in id order (a keyset page).
    pub async fn company_push_candidates(
        &self,
        after: LocalCompanyId,
        limit: u32,
    ) -> Result<Vec<CompanyCandidate>, StoreError> {
        const SQL: &str = concat!(
            "SELECT id, name, domain, hs_object_id, local_version FROM companies WHERE ",
            company_candidate_filter!(),
            " AND id > $1 ORDER BY id LIMIT $2"
        );
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, CompanyCandidate>(SQL)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }

    /// The incremental company pull's bookmark: every HubSpot company change before it has
    /// been pulled. `None` until a company pull has succeeded.
    pub async fn company_pull_bookmark(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        const SQL: &str = "SELECT value FROM sync_state WHERE key = $1";
        let value: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar(SQL).bind(BOOKMARK_KEY).fetch_optional(pool).await?
        });
        value
            .map(|v| {
                DateTime::parse_from_rfc3339(&v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| {
                        StoreError::InvalidData(format!("sync_state {BOOKMARK_KEY} {v:?}: {e}"))
                    })
            })
            .transpose()
    }

    /// The next `limit` rows, by id after `after`, linked to a HubSpot company the full
    /// company pull `job` did not read.
    pub async fn companies_linked_unseen(
        &self,
        job: &str,
        after: LocalCompanyId,
        limit: u32,
    ) -> Result<Vec<(LocalCompanyId, CompanyId)>, StoreError> {
        const SQL: &str = "SELECT c.id, c.hs_object_id FROM companies c
                            WHERE c.hs_object_id IS NOT NULL AND c.id > $2
                              AND NOT EXISTS (SELECT 1 FROM pull_seen s
                                               WHERE s.job_id = $1
                                                 AND s.hs_object_id = c.hs_object_id)
                            ORDER BY c.id LIMIT $3";
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, (LocalCompanyId, CompanyId)>(SQL)
                .bind(job)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }
}

/// PostgreSQL: links rows whose link is still as read; `GREATEST` keeps a concurrent push of
/// a newer version from being undone.
const PG_LINK: &str = "
    UPDATE companies AS c
       SET hs_object_id = v.hs_object_id,
           pushed_version = CASE WHEN v.pushed_version IS NULL THEN c.pushed_version
                                 ELSE GREATEST(c.pushed_version, v.pushed_version) END
      FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[])
           AS v(id, read_hs_object_id, hs_object_id, pushed_version)
     WHERE c.id = v.id
       AND c.hs_object_id IS NOT DISTINCT FROM v.read_hs_object_id";

/// SQLite: the same, the rows as one JSON array of
/// `[id, read_hs_object_id, hs_object_id, pushed_version]`.
pub(super) const SQLITE_LINK: &str = "
    UPDATE companies
       SET hs_object_id = v.hs_object_id,
           pushed_version = CASE WHEN v.pushed_version IS NULL THEN companies.pushed_version
                                 ELSE MAX(companies.pushed_version, v.pushed_version) END
      FROM (SELECT json_extract(value, '$[0]') AS id,
                   json_extract(value, '$[1]') AS read_hs_object_id,
                   json_extract(value, '$[2]') AS hs_object_id,
                   json_extract(value, '$[3]') AS pushed_version
              FROM json_each($1)) AS v
     WHERE companies.id = v.id
       AND companies.hs_object_id IS v.read_hs_object_id";

/// A [`CompanyLink`] as SQLite's JSON input.
#[derive(Serialize)]
struct SqliteLink<'a>(i64, Option<&'a str>, &'a str, Option<i64>);

/// PostgreSQL: `(local id, hs_object_id)` of the rows linked to any of the ids `$1` (read
/// under a page's transaction and, before it opens, on the pool).
const PG_HOLDERS: &str =
    "SELECT id, hs_object_id FROM companies WHERE hs_object_id = ANY($1::text[])";
/// SQLite: the same from a JSON array.
pub(super) const SQLITE_HOLDERS: &str = "SELECT id, hs_object_id FROM companies
                               WHERE hs_object_id IN (SELECT value FROM json_each($1))";
/// PostgreSQL: the rows with the local ids `$1`, as a pull's matching sees them.
const PG_BY_IDS: &str =
    "SELECT id, hs_object_id, domain, hubspot_deleted_at IS NOT NULL AS tombstoned, local_version
                            FROM companies WHERE id = ANY($1::bigint[])";
/// SQLite: the same from a JSON array.
pub(super) const SQLITE_BY_IDS: &str =
    "SELECT id, hs_object_id, domain, hubspot_deleted_at IS NOT NULL AS tombstoned, local_version
                                FROM companies WHERE id IN (SELECT value FROM json_each($1))";

/// PostgreSQL: the synced HubSpot companies in `$column` of `$table` follow their company's
/// moved link, the moves as arrays (`$1` old HubSpot ids, `$2` new ones, `$3` the local
/// companies): only the moves that took place (the local company holds the new id now), and of
/// those the first for each old id, in the page's order (as one move after the other would
/// leave it).
macro_rules! pg_relink {
    ($table:literal, $column:literal) => {
        concat!(
            "UPDATE ",
            $table,
            " AS l SET ",
            $column,
            " = v.new_id
               FROM (SELECT DISTINCT ON (m.old_id) m.old_id, m.new_id
                       FROM UNNEST($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY
                            AS m(old_id, new_id, company, n)
                       JOIN companies c ON c.id = m.company AND c.hs_object_id = m.new_id
                      ORDER BY m.old_id, m.n) AS v
              WHERE l.",
            $column,
            " = v.old_id"
        )
    };
}

/// SQLite: the same as [`pg_relink`], the moves as one JSON array of `[old, new, company]`:
/// each row's new id is that of the first move of its old id that took place, in the array's
/// order. The rows are found by the old ids through the table's index (an `UPDATE … FROM` a
/// JSON list may scan the table instead).
macro_rules! sqlite_relink {
    ($table:literal, $column:literal) => {
        concat!(
            "UPDATE ",
            $table,
            "
                SET ",
            $column,
            " =
                    (SELECT json_extract(value, '$[1]') FROM json_each($1)
                       JOIN companies c ON c.id = json_extract(value, '$[2]')
                                       AND c.hs_object_id = json_extract(value, '$[1]')
                      WHERE json_extract(value, '$[0]') = ",
            $table,
            ".",
            $column,
            "
                      ORDER BY key LIMIT 1)
              WHERE ",
            $column,
            " IN
                    (SELECT json_extract(value, '$[0]') FROM json_each($1)
                       JOIN companies c ON c.id = json_extract(value, '$[2]')
                                       AND c.hs_object_id = json_extract(value, '$[1]'))"
        )
    };
}

/// PostgreSQL: the contacts' synced associations follow their company's moved link.
const PG_RELINK_CONTACTS: &str = pg_relink!("contact_company_links", "hs_company_id");
/// PostgreSQL: the mapped links' synced companies follow their company's moved link.
const PG_RELINK_MAPPED: &str = pg_relink!("object_links", "company_hs_id");
/// SQLite: the contacts' synced associations follow their company's moved link.
pub(super) const SQLITE_RELINK_CONTACTS: &str =
    sqlite_relink!("contact_company_links", "hs_company_id");
/// SQLite: the mapped links' synced companies follow their company's moved link.
pub(super) const SQLITE_RELINK_MAPPED: &str = sqlite_relink!("object_links", "company_hs_id");

/// A local company's link that a page moved from one HubSpot company to another.
struct CompanyMove<'a> {
    /// The HubSpot company the link was read with.
    old: &'a str,
    /// The one it was saved with.
    new: &'a str,
    /// The local company.
    company: i64,
}

impl Tx {
    /// Saves a page's links (push or pull) and returns those *not* saved because another local
    /// row holds that HubSpot company — a per-record failure, never a reason to abort the
    /// page. Within the page the first row claiming a company wins.
    pub async fn link_companies(
        &mut self,
        rows: &[CompanyLink],
    ) -> Result<Vec<CompanyLinkClash>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let holders = self.company_holders(&changing_ids(rows)).await?;
        let (keep, clashes) = split_clashes(rows, holders);
        if keep.is_empty() {
            return Ok(clashes);
        }
        on_tx!(self, c =>
            postgres: {
                let ids: Vec<i64> = keep.iter().map(|r| r.id.0).collect();
                let read: Vec<Option<&str>> = keep
                    .iter()
                    .map(|r| r.read_hs_object_id.as_ref().map(|h| h.0.as_str()))
                    .collect();
                let linked: Vec<&str> = keep.iter().map(|r| r.hs_object_id.0.as_str()).collect();
                let versions: Vec<Option<i64>> = keep.iter().map(|r| r.pushed_version).collect();
                sqlx::query(PG_LINK)
                    .bind(&ids)
                    .bind(&read)
                    .bind(&linked)
                    .bind(&versions)
                    .execute(c)
                    .await?;
            },
            sqlite: {
                let json: Vec<SqliteLink<'_>> = keep
                    .iter()
                    .map(|r| {
                        SqliteLink(
                            r.id.0,
                            r.read_hs_object_id.as_ref().map(|h| h.0.as_str()),
                            r.hs_object_id.0.as_str(),
                            r.pushed_version,
                        )
                    })
                    .collect();
                sqlx::query(SQLITE_LINK).bind(Json(json)).execute(c).await?;
            },
        );
        let moved: Vec<CompanyMove<'_>> = keep
            .iter()
            .filter_map(|row| {
                let old = row.read_hs_object_id.as_ref()?;
                (*old != row.hs_object_id).then_some(CompanyMove {
                    old: old.0.as_str(),
                    new: row.hs_object_id.0.as_str(),
                    company: row.id.0,
                })
            })
            .collect();
        self.follow_company_relinks(&moved).await?;
        Ok(clashes)
    }

    /// Local companies' links moved, each from `old` to `new` (HubSpot merged `old` into
    /// `new`, or deleted it and `new` carries the company's external key): the contacts whose
    /// association was last synced with `old` were synced with that local company, so their
    /// state follows it to `new`. Otherwise a pull would take the moved link for a local change
    /// of each contact's company, and would decide differently for the contacts it met before
    /// the move than for those after. Only where the link did move (the link write leaves a row
    /// changed meanwhile); one statement per table for all the moves.
    async fn follow_company_relinks(
        &mut self,
        moved: &[CompanyMove<'_>],
    ) -> Result<(), StoreError> {
        if moved.is_empty() {
            return Ok(());
        }
        on_tx!(self, c =>
            postgres: {
                let old: Vec<&str> = moved.iter().map(|m| m.old).collect();
                let new: Vec<&str> = moved.iter().map(|m| m.new).collect();
                let company: Vec<i64> = moved.iter().map(|m| m.company).collect();
                for sql in [PG_RELINK_CONTACTS, PG_RELINK_MAPPED] {
                    sqlx::query(sql)
                        .bind(&old)
                        .bind(&new)
                        .bind(&company)
                        .execute(&mut *c)
                        .await?;
                }
            },
            sqlite: {
                let json: Vec<(&str, &str, i64)> =
                    moved.iter().map(|m| (m.old, m.new, m.company)).collect();
                for sql in [SQLITE_RELINK_CONTACTS, SQLITE_RELINK_MAPPED] {
                    sqlx::query(sql).bind(Json(&json)).execute(&mut *c).await?;
                }
            },
        );
        Ok(())
    }

    /// `(local id, hs_object_id)` of the rows linked to any of `ids`.
    pub async fn company_holders(
        &mut self,
        ids: &[&str],
    ) -> Result<Vec<(LocalCompanyId, CompanyId)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = on_tx!(self, c =>
            postgres: sqlx::query_as(PG_HOLDERS).bind(ids).fetch_all(c).await?,
            sqlite: sqlx::query_as(SQLITE_HOLDERS).bind(Json(ids)).fetch_all(c).await?,
        );
        Ok(rows)
    }

    /// The rows with these local ids (those that exist), as a pull's matching sees them.
    pub async fn companies_by_ids(
        &mut self,
        ids: &[LocalCompanyId],
    ) -> Result<Vec<CompanyMatch>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<i64> = ids.iter().map(|id| id.0).collect();
        let rows = on_tx!(self, c =>
            postgres: sqlx::query_as(PG_BY_IDS).bind(&raw).fetch_all(c).await?,
            sqlite: sqlx::query_as(SQLITE_BY_IDS).bind(Json(&raw)).fetch_all(c).await?,
        );
        Ok(rows)
    }

    /// The unlinked, untombstoned rows whose domain is one of `domains` (normalised).
    pub async fn unlinked_companies_with_domains(
        &mut self,
        domains: &[&str],
    ) -> Result<Vec<CompanyMatch>, StoreError> {
        const PG: &str =
            "SELECT id, hs_object_id, domain, false AS tombstoned, local_version FROM companies
                           WHERE hs_object_id IS NULL AND hubspot_deleted_at IS NULL
                             AND domain = ANY($1::text[])";
        const SQLITE: &str =
            "SELECT id, hs_object_id, domain, false AS tombstoned, local_version FROM companies
                               WHERE hs_object_id IS NULL AND hubspot_deleted_at IS NULL
                                 AND domain IN (SELECT value FROM json_each($1))";
        if domains.is_empty() {
            return Ok(Vec::new());
        }
        let rows = on_tx!(self, c =>
            postgres: sqlx::query_as(PG).bind(domains).fetch_all(c).await?,
            sqlite: sqlx::query_as(SQLITE).bind(Json(domains)).fetch_all(c).await?,
        );
        Ok(rows)
    }

    /// Creates local rows for companies that exist only in HubSpot, already linked and counted
    /// as pushed (they came from HubSpot: nothing to push). A company some row holds already
    /// is skipped. Returns the HubSpot ids of the rows created.
    pub async fn insert_pulled_companies(
        &mut self,
        companies: &[PulledCompany],
    ) -> Result<Vec<CompanyId>, StoreError> {
        const PG: &str = "
            INSERT INTO companies (name, domain, hs_object_id, local_version, pushed_version)
            SELECT name, domain, hs, 1, 1
              FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS t(name, domain, hs, n)
             ORDER BY n
            ON CONFLICT (hs_object_id) DO NOTHING
            RETURNING hs_object_id";
        const SQLITE: &str = "
            INSERT INTO companies (name, domain, hs_object_id, local_version, pushed_version)
            SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                   json_extract(value, '$[2]'), 1, 1
              FROM json_each($1) WHERE true ORDER BY key
            ON CONFLICT (hs_object_id) DO NOTHING
            RETURNING hs_object_id";
        if companies.is_empty() {
            return Ok(Vec::new());
        }
        let created = on_tx!(self, c =>
            postgres: {
                let names: Vec<Option<&str>> = companies.iter().map(|p| p.name.as_deref()).collect();
                let domains: Vec<Option<&str>> =
                    companies.iter().map(|p| p.domain.as_deref()).collect();
                let ids: Vec<&str> = companies.iter().map(|p| p.hs_object_id.0.as_str()).collect();
                sqlx::query_scalar(PG)
                    .bind(&names)
                    .bind(&domains)
                    .bind(&ids)
                    .fetch_all(c)
                    .await?
            },
            sqlite: {
                let rows: Vec<(Option<&str>, Option<&str>, &str)> = companies
                    .iter()
                    .map(|p| (p.name.as_deref(), p.domain.as_deref(), p.hs_object_id.0.as_str()))
                    .collect();
                sqlx::query_scalar(SQLITE).bind(Json(rows)).fetch_all(c).await?
            },
        );
        Ok(created)
    }

    /// Stores the incremental company pull's bookmark (in the last page's transaction).
    pub async fn set_company_pull_bookmark(&mut self, at: DateTime<Utc>) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO sync_state (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";
        let value = at.to_rfc3339_opts(SecondsFormat::Millis, true);
        on_tx!(self, c => {
            sqlx::query(SQL)
                .bind(BOOKMARK_KEY)
                .bind(&value)
                .bind(DbTime(Utc::now()))
                .execute(c)
                .await
                .map(drop)?
        });
        Ok(())
    }
}

impl Link for CompanyLink {
    type Local = LocalCompanyId;
    type Remote = CompanyId;
    type Clash = CompanyLinkClash;

    fn local(&self) -> LocalCompanyId {
        self.id
    }
    fn remote(&self) -> &CompanyId {
        &self.hs_object_id
    }
    fn remote_text(&self) -> &str {
        &self.hs_object_id.0
    }
    fn changes(&self) -> bool {
        self.read_hs_object_id.as_ref() != Some(&self.hs_object_id)
    }
    fn clash(&self, holder: LocalCompanyId) -> CompanyLinkClash {
        CompanyLinkClash {
            id: self.id,
            hs_object_id: self.hs_object_id.clone(),
            holder,
        }
    }
}

/// Reads outside any transaction, on the pool: a pull decides with them which HubSpot reads a
/// page needs before its write transaction opens (no lock is held while HubSpot answers); the
/// transaction then reads again what they said ([`Tx::company_holders`],
/// [`Tx::companies_by_ids`]).
impl Store {
    /// `(local id, hs_object_id)` of the rows linked to any of `ids`, as committed now.
    pub async fn company_holders_now(
        &self,
        ids: &[&str],
    ) -> Result<Vec<(LocalCompanyId, CompanyId)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = on_pool!(self, pool =>
            postgres: sqlx::query_as(PG_HOLDERS).bind(ids).fetch_all(pool).await?,
            sqlite: sqlx::query_as(SQLITE_HOLDERS).bind(Json(ids)).fetch_all(pool).await?,
        );
        Ok(rows)
    }

    /// The rows of a dry run's page that [`Tx::link_companies`] would refuse, with nothing
    /// written: held by another row of the table, by an earlier row of the page, or by the row
    /// an earlier page of the same dry run would have linked to that company (`earlier`,
    /// HubSpot company → row; the real run's database holds those links by then).
    pub async fn dry_company_link_clashes(
        &self,
        rows: &[CompanyLink],
        earlier: &HashMap<CompanyId, LocalCompanyId>,
    ) -> Result<Vec<CompanyLinkClash>, StoreError> {
        let holders = self.company_holders_now(&changing_ids(rows)).await?;
        Ok(split_clashes(rows, with_earlier(rows, holders, earlier)).1)
    }

    /// The rows with these local ids (those that exist), as committed now.
    pub async fn companies_by_ids_now(
        &self,
        ids: &[LocalCompanyId],
    ) -> Result<Vec<CompanyMatch>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<i64> = ids.iter().map(|id| id.0).collect();
        let rows = on_pool!(self, pool =>
            postgres: sqlx::query_as(PG_BY_IDS).bind(&raw).fetch_all(pool).await?,
            sqlite: sqlx::query_as(SQLITE_BY_IDS).bind(Json(&raw)).fetch_all(pool).await?,
        );
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: i64, read: Option<&str>, hs: &str) -> CompanyLink {
        CompanyLink {
            id: LocalCompanyId(id),
            read_hs_object_id: read.map(CompanyId::from),
            hs_object_id: CompanyId::from(hs),
            pushed_version: Some(1),
        }
    }

    #[test]
    fn a_company_held_by_another_row_or_claimed_earlier_in_the_page_clashes() {
        let rows = [
            link(1, None, "100"),
            link(2, None, "200"),
            link(3, None, "100"),
            link(4, Some("400"), "400"),
        ];
        let holders = vec![
            (LocalCompanyId(9), CompanyId::from("200")),
            (LocalCompanyId(4), CompanyId::from("400")),
        ];
        let (keep, clashes) = split_clashes(&rows, holders);
        assert_eq!(keep.iter().map(|r| r.id.0).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(
            clashes
                .iter()
                .map(|c| (c.id.0, c.holder.0))
                .collect::<Vec<_>>(),
            vec![(2, 9), (3, 1)]
        );
    }
}
