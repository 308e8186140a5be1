//! The push's reads and writes of `contacts`: the candidates of a push job, page by page, and
//! the saving of a page's results in the job's page transaction.
//!
//! A candidate is a contact with no `hs_object_id`, or a linked one changed locally since its
//! last successful push (`local_version > pushed_version`), never one HubSpot deleted (a
//! tombstoned row, see [`super::Tombstone`]). Saving a page sets `hs_object_id`
//! on created and linked rows and `pushed_version` to the version that was *read* (not the
//! current one), so a local edit made while the page was in flight is pushed by the next job.
//!
//! Both statements of a page are set-based: the page travels as arrays (PostgreSQL `UNNEST`) or
//! as one JSON document (SQLite `json_each`), never one statement per contact.

use super::link_rule::{Link, changing_ids, split_clashes, with_earlier};
use super::{Store, StoreError, Tx, on_pool, on_tx};
use crate::ids::{ContactId, HsObjectId};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use std::collections::HashMap;

/// What makes a contact a push candidate (written once for every query). A contact HubSpot
/// deleted (tombstoned) never is, until a user restores it.
macro_rules! candidate_filter {
    () => {
        "(hs_object_id IS NULL OR local_version > pushed_version) \
         AND hubspot_deleted_at IS NULL"
    };
}

/// A local contact a push considers, as read at the start of its page.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PushCandidate {
    /// Local primary key (also the value of the external key property in HubSpot).
    pub id: ContactId,
    /// Trimmed, lower-case; `None` when the contact has no email.
    pub email: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// The HubSpot record this row is linked to, if any.
    pub hs_object_id: Option<HsObjectId>,
    /// The row's version when it was read; saved as `pushed_version` once pushed.
    pub local_version: i64,
}

/// One row of a page to save: its link and, when it was pushed, the version that was pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedRow {
    /// The local row.
    pub id: ContactId,
    /// `hs_object_id` as it was read; the row is left alone if it changed meanwhile (someone
    /// else linked or unlinked it while HubSpot was answering).
    pub read_hs_object_id: Option<HsObjectId>,
    /// The HubSpot record the row is linked to now.
    pub hs_object_id: HsObjectId,
    /// `Some(version)`: the row's values as of `version` are in HubSpot, so `pushed_version`
    /// becomes that version. `None`: only the link is saved (HubSpot may hold other values,
    /// and the next push updates them).
    pub pushed_version: Option<i64>,
}

/// A row whose link was not saved because another local row already holds that HubSpot id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClash {
    /// The row that was to be linked.
    pub id: ContactId,
    /// The HubSpot record it was to be linked to.
    pub hs_object_id: HsObjectId,
    /// The local row that holds that HubSpot id already.
    pub holder: ContactId,
}

/// The two groups a push goes through one after the other, so that each page holds one kind of
/// contact (an upsert page then needs one call: by email, or by external key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateGroup {
    /// Contacts with an email (first).
    #[default]
    WithEmail,
    /// Contacts without one (then).
    WithoutEmail,
}

impl CandidateGroup {
    /// The group after this one, if any.
    pub fn next(self) -> Option<Self> {
        match self {
            Self::WithEmail => Some(Self::WithoutEmail),
            Self::WithoutEmail => None,
        }
    }
}

impl Store {
    /// How many contacts a push would consider now, from `after` (by id) in `group` on, the
    /// later groups included.
    pub async fn count_push_candidates(
        &self,
        group: CandidateGroup,
        after: ContactId,
    ) -> Result<u64, StoreError> {
        // Candidates after `after` in `group`, plus every candidate of the later group.
        const FROM_WITH_EMAIL: &str = concat!(
            "SELECT COUNT(*) FROM contacts WHERE ",
            candidate_filter!(),
            " AND (email IS NULL OR id > $1)"
        );
        const FROM_WITHOUT_EMAIL: &str = concat!(
            "SELECT COUNT(*) FROM contacts WHERE ",
            candidate_filter!(),
            " AND email IS NULL AND id > $1"
        );
        let sql = match group {
            CandidateGroup::WithEmail => FROM_WITH_EMAIL,
            CandidateGroup::WithoutEmail => FROM_WITHOUT_EMAIL,
        };
        let n = on_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>(sql).bind(after).fetch_one(pool).await
        })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The next `limit` candidates of `group` after `after`, in id order (a keyset page).
    pub async fn push_candidates(
        &self,
        group: CandidateGroup,
        after: ContactId,
        limit: u32,
    ) -> Result<Vec<PushCandidate>, StoreError> {
        const WITH_EMAIL: &str = concat!(
            "SELECT id, email, first_name, last_name, hs_object_id, local_version FROM contacts \
             WHERE ",
            candidate_filter!(),
            " AND email IS NOT NULL AND id > $1 ORDER BY id LIMIT $2"
        );
        const WITHOUT_EMAIL: &str = concat!(
            "SELECT id, email, first_name, last_name, hs_object_id, local_version FROM contacts \
             WHERE ",
            candidate_filter!(),
            " AND email IS NULL AND id > $1 ORDER BY id LIMIT $2"
        );
        let sql = match group {
            CandidateGroup::WithEmail => WITH_EMAIL,
            CandidateGroup::WithoutEmail => WITHOUT_EMAIL,
        };
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, PushCandidate>(sql)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }
}

/// PostgreSQL: the local rows that hold any of these HubSpot ids.
const PG_HOLDERS: &str =
    "SELECT id, hs_object_id FROM contacts WHERE hs_object_id = ANY($1::text[])";

/// PostgreSQL: one statement for the whole page. Rows whose link changed since they were read
/// are skipped by the WHERE clause. `GREATEST` keeps a concurrent push of a newer version from
/// being undone by this one.
const PG_SAVE: &str = "
    UPDATE contacts AS c
       SET hs_object_id = v.hs_object_id,
           pushed_version = CASE WHEN v.pushed_version IS NULL THEN c.pushed_version
                                 ELSE GREATEST(c.pushed_version, v.pushed_version) END
      FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[])
           AS v(id, read_hs_object_id, hs_object_id, pushed_version)
     WHERE c.id = v.id
       AND c.hs_object_id IS NOT DISTINCT FROM v.read_hs_object_id";

/// SQLite: the local rows that hold any of these HubSpot ids (`$1`: a JSON array of ids).
pub(super) const SQLITE_HOLDERS: &str =
    "SELECT id, hs_object_id FROM contacts WHERE hs_object_id IN (SELECT value FROM json_each($1))";

/// SQLite (3.33+ has UPDATE ... FROM): the page as one JSON array of
/// `[id, read_hs_object_id, hs_object_id, pushed_version]`.
pub(super) const SQLITE_SAVE: &str = "
    UPDATE contacts
       SET hs_object_id = v.hs_object_id,
           pushed_version = CASE WHEN v.pushed_version IS NULL THEN contacts.pushed_version
                                 ELSE MAX(contacts.pushed_version, v.pushed_version) END
      FROM (SELECT json_extract(value, '$[0]') AS id,
                   json_extract(value, '$[1]') AS read_hs_object_id,
                   json_extract(value, '$[2]') AS hs_object_id,
                   json_extract(value, '$[3]') AS pushed_version
              FROM json_each($1)) AS v
     WHERE contacts.id = v.id
       AND contacts.hs_object_id IS v.read_hs_object_id";

/// A [`PushedRow`] as SQLite's JSON input.
#[derive(Serialize)]
struct SqliteRow<'a>(i64, Option<&'a str>, &'a str, Option<i64>);

impl Tx {
    /// Saves a page's pushed rows (see the module docs) and returns the rows that were *not*
    /// linked because another local row holds their HubSpot id (two local contacts claiming one
    /// HubSpot contact) — a per-record failure, not a reason to abort the page. Within the page,
    /// the first row claiming a HubSpot id wins.
    pub async fn save_pushed(&mut self, rows: &[PushedRow]) -> Result<Vec<LinkClash>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let changing = changing_ids(rows);
        let holders = if changing.is_empty() {
            Vec::new()
        } else {
            self.link_holders(&changing).await?
        };
        let (keep, clashes) = split_clashes(rows, holders);
        if keep.is_empty() {
            return Ok(clashes);
        }
        on_tx!(self, c =>
            postgres: {
                let mut ids = Vec::with_capacity(keep.len());
                let mut read = Vec::with_capacity(keep.len());
                let mut linked = Vec::with_capacity(keep.len());
                let mut versions = Vec::with_capacity(keep.len());
                for row in &keep {
                    ids.push(row.id.0);
                    read.push(row.read_hs_object_id.as_ref().map(|h| h.0.as_str()));
                    linked.push(row.hs_object_id.0.as_str());
                    versions.push(row.pushed_version);
                }
                sqlx::query(PG_SAVE)
                    .bind(&ids)
                    .bind(&read)
                    .bind(&linked)
                    .bind(&versions)
                    .execute(c)
                    .await?;
            },
            sqlite: {
                let json: Vec<SqliteRow<'_>> = keep
                    .iter()
                    .map(|r| {
                        SqliteRow(
                            r.id.0,
                            r.read_hs_object_id.as_ref().map(|h| h.0.as_str()),
                            r.hs_object_id.0.as_str(),
                            r.pushed_version,
                        )
                    })
                    .collect();
                sqlx::query(SQLITE_SAVE)
                    .bind(Json(json))
                    .execute(c)
                    .await?;
            },
        );
        Ok(clashes)
    }

    /// `(local id, hs_object_id)` of the rows holding any of `ids`.
    async fn link_holders(
        &mut self,
        ids: &[&str],
    ) -> Result<Vec<(ContactId, HsObjectId)>, StoreError> {
        let rows = on_tx!(self, c =>
            postgres: sqlx::query_as(PG_HOLDERS).bind(ids).fetch_all(c).await?,
            sqlite: sqlx::query_as(SQLITE_HOLDERS).bind(Json(ids)).fetch_all(c).await?,
        );
        Ok(rows)
    }
}

impl Store {
    /// The rows of a dry run's page that [`Tx::save_pushed`] would refuse, with nothing
    /// written: held by another row of the table, by an earlier row of the page, or by the row
    /// an earlier page of the same dry run would have linked to that id (`earlier`, HubSpot id
    /// → row; the real run's database holds those links by then).
    pub async fn dry_link_clashes(
        &self,
        rows: &[PushedRow],
        earlier: &HashMap<HsObjectId, ContactId>,
    ) -> Result<Vec<LinkClash>, StoreError> {
        let ids = changing_ids(rows);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let holders: Vec<(ContactId, HsObjectId)> = on_pool!(self, pool =>
            postgres: sqlx::query_as(PG_HOLDERS).bind(&ids).fetch_all(pool).await?,
            sqlite: sqlx::query_as(SQLITE_HOLDERS).bind(Json(&ids)).fetch_all(pool).await?,
        );
        Ok(split_clashes(rows, with_earlier(rows, holders, earlier)).1)
    }
}

impl Link for PushedRow {
    type Local = ContactId;
    type Remote = HsObjectId;
    type Clash = LinkClash;

    fn local(&self) -> ContactId {
        self.id
    }
    fn remote(&self) -> &HsObjectId {
        &self.hs_object_id
    }
    fn remote_text(&self) -> &str {
        &self.hs_object_id.0
    }
    fn changes(&self) -> bool {
        self.read_hs_object_id.as_ref() != Some(&self.hs_object_id)
    }
    fn clash(&self, holder: ContactId) -> LinkClash {
        LinkClash {
            id: self.id,
            hs_object_id: self.hs_object_id.clone(),
            holder,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, read: Option<&str>, hs: &str) -> PushedRow {
        PushedRow {
            id: ContactId(id),
            read_hs_object_id: read.map(HsObjectId::from),
            hs_object_id: HsObjectId::from(hs),
            pushed_version: Some(1),
        }
    }

    #[test]
    fn a_hubspot_id_held_by_another_row_or_claimed_earlier_in_the_page_clashes() {
        let rows = [
            row(1, None, "100"),
            row(2, None, "200"),
            row(3, None, "100"),
            row(4, Some("400"), "400"),
        ];
        let holders = vec![
            (ContactId(9), HsObjectId::from("200")),
            (ContactId(4), HsObjectId::from("400")),
        ];
        let (keep, clashes) = split_clashes(&rows, holders);
        assert_eq!(
            keep.iter().map(|r| r.id.0).collect::<Vec<_>>(),
            vec![1, 4],
            "a row may keep the id it holds itself"
        );
        assert_eq!(
            clashes,
            vec![
                LinkClash {
                    id: ContactId(2),
                    hs_object_id: HsObjectId::from("200"),
                    holder: ContactId(9)
                },
                LinkClash {
                    id: ContactId(3),
                    hs_object_id: HsObjectId::from("100"),
                    holder: ContactId(1)
                },
            ]
        );
    }
}
