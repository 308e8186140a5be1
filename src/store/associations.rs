//! The contact→company association state: `contact_company_links` (per contact, the HubSpot
//! company crm-sync last synced as its primary company) and the reads and writes of the
//! association phases of the contact push and pull.
//!
//! A contact's association is "in sync" when the HubSpot id of its local company
//! (`contacts.company_id` → `companies.hs_object_id`) equals its link row's `hs_company_id`
//! (both absent counts as equal). Push considers the contacts where they differ; pull compares
//! HubSpot's primary company with the same row to tell a HubSpot-side change from a local one.
//!
//! The page writes are set-based, as push's are: the page travels as arrays (PostgreSQL
//! `UNNEST`) or as one JSON document (SQLite `json_each`), never one statement per contact.

use super::{Store, StoreError, Tx, on_pool, on_tx};
use crate::ids::{CompanyId, ContactId, HsObjectId, LocalCompanyId};
use sqlx::types::Json;
use std::collections::HashSet;

/// A linked contact with its local company and the association last synced, as the
/// association phases read it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AssociationRow {
    /// The local contact.
    pub contact_id: ContactId,
    /// Its HubSpot contact.
    pub hs_object_id: HsObjectId,
    /// Its email, for failed records.
    pub email: Option<String>,
    /// Its local company (`contacts.company_id`).
    pub company_id: Option<LocalCompanyId>,
    /// That company's HubSpot id, once the company is linked.
    pub company_hs_id: Option<CompanyId>,
    /// The HubSpot company crm-sync last synced as the contact's primary (`None`: none).
    pub synced_hs_id: Option<CompanyId>,
}

impl AssociationRow {
    /// Whether the local company differs from what was last synced (push's candidates).
    pub fn changed_locally(&self) -> bool {
        self.company_hs_id != self.synced_hs_id || self.unlinked_company()
    }

    /// Whether the contact names a local company that has no HubSpot id (yet).
    pub fn unlinked_company(&self) -> bool {
        self.company_id.is_some() && self.company_hs_id.is_none()
    }
}

/// The columns and joins every association read uses, in [`AssociationRow`] order.
macro_rules! association_select {
    () => {
        "SELECT ct.id AS contact_id, ct.hs_object_id, ct.email, ct.company_id,
                co.hs_object_id AS company_hs_id, l.hs_company_id AS synced_hs_id
           FROM contacts ct
           LEFT JOIN companies co ON co.id = ct.company_id
           LEFT JOIN contact_company_links l ON l.contact_id = ct.id
          WHERE ct.hs_object_id IS NOT NULL AND ct.hubspot_deleted_at IS NULL AND ct.id > $1"
    };
}

/// A push candidate: the local company's HubSpot id differs from the one last synced, or the
/// local company is not linked. (`IS DISTINCT FROM` is spelled `IS NOT` in SQLite.)
const PG_PUSH_CANDIDATES: &str = concat!(
    association_select!(),
    " AND (co.hs_object_id IS DISTINCT FROM l.hs_company_id
           OR (ct.company_id IS NOT NULL AND co.hs_object_id IS NULL))
      ORDER BY ct.id LIMIT $2"
);
const SQLITE_PUSH_CANDIDATES: &str = concat!(
    association_select!(),
    " AND (co.hs_object_id IS NOT l.hs_company_id
           OR (ct.company_id IS NOT NULL AND co.hs_object_id IS NULL))
      ORDER BY ct.id LIMIT $2"
);
const ALL_LINKED: &str = concat!(association_select!(), " ORDER BY ct.id LIMIT $2");
/// The linked contacts among given HubSpot ids (`$2`), as [`AssociationRow`]s.
const PG_OF_IDS: &str = concat!(
    association_select!(),
    " AND ct.hs_object_id = ANY($2) ORDER BY ct.id"
);
pub(super) const SQLITE_OF_IDS: &str = concat!(
    association_select!(),
    " AND ct.hs_object_id IN (SELECT value FROM json_each($2)) ORDER BY ct.id"
);

/// Contacts by local id (`$1`), linked or not, as [`AssociationRow`]s (`hs_object_id` empty
/// while unlinked): the contacts a dry run would link or create.
const PG_OF_CONTACTS: &str =
    "SELECT ct.id AS contact_id, COALESCE(ct.hs_object_id, '') AS hs_object_id,
        ct.email, ct.company_id, co.hs_object_id AS company_hs_id, l.hs_company_id AS synced_hs_id
   FROM contacts ct
   LEFT JOIN companies co ON co.id = ct.company_id
   LEFT JOIN contact_company_links l ON l.contact_id = ct.id
  WHERE ct.id = ANY($1) ORDER BY ct.id";
pub(super) const SQLITE_OF_CONTACTS: &str =
    "SELECT ct.id AS contact_id, COALESCE(ct.hs_object_id, '') AS hs_object_id,
        ct.email, ct.company_id, co.hs_object_id AS company_hs_id, l.hs_company_id AS synced_hs_id
   FROM contacts ct
   LEFT JOIN companies co ON co.id = ct.company_id
   LEFT JOIN contact_company_links l ON l.contact_id = ct.id
  WHERE ct.id IN (SELECT value FROM json_each($1)) ORDER BY ct.id";

impl Store {
    /// These contacts with their association state, linked or not (`hs_object_id` empty while
    /// unlinked): a dry run plans the associations of the contacts it would link or create.
    pub async fn association_rows_of_contacts(
        &self,
        ids: &[ContactId],
    ) -> Result<Vec<AssociationRow>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = ids.iter().map(|id| id.0).collect();
        let rows = on_pool!(self, pool =>
            postgres: sqlx::query_as::<_, AssociationRow>(PG_OF_CONTACTS)
                .bind(&ids)
                .fetch_all(pool)
                .await?,
            sqlite: sqlx::query_as::<_, AssociationRow>(SQLITE_OF_CONTACTS)
                .bind(Json(&ids))
                .fetch_all(pool)
                .await?,
        );
        Ok(rows)
    }

    /// The next `limit` linked contacts after `after` whose company association differs from
    /// what was last synced, in id order.
    pub async fn association_push_candidates(
        &self,
        after: ContactId,
        limit: u32,
    ) -> Result<Vec<AssociationRow>, StoreError> {
        let sql =
            on_pool!(self, _pool => postgres: PG_PUSH_CANDIDATES, sqlite: SQLITE_PUSH_CANDIDATES);
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, AssociationRow>(sql)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }

    /// The next `limit` linked contacts after `after`, in id order, with their association
    /// state (pull reads their associations).
    pub async fn association_rows(
        &self,
        after: ContactId,
        limit: u32,
    ) -> Result<Vec<AssociationRow>, StoreError> {
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, AssociationRow>(ALL_LINKED)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }

    /// The next `limit` unlinked, untombstoned companies after `after` that a linked or
    /// still-to-push contact names: those a contact push links before its associations.
    pub async fn companies_named_by_contacts(
        &self,
        after: LocalCompanyId,
        limit: u32,
    ) -> Result<Vec<super::CompanyCandidate>, StoreError> {
        const SQL: &str = "
            SELECT co.id, co.name, co.domain, co.hs_object_id, co.local_version
              FROM companies co
             WHERE co.hs_object_id IS NULL AND co.hubspot_deleted_at IS NULL AND co.id > $1
               AND EXISTS (SELECT 1 FROM contacts ct
                            WHERE ct.company_id = co.id AND ct.hubspot_deleted_at IS NULL)
             ORDER BY co.id LIMIT $2";
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, super::CompanyCandidate>(SQL)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }

    /// crm-sync's own companies with these ids that have no HubSpot company yet and were not
    /// deleted in HubSpot, by id: the companies a mapped table's rows name that its push links
    /// before their associations.
    pub async fn unlinked_companies_by_ids(
        &self,
        ids: &[i64],
    ) -> Result<Vec<super::CompanyCandidate>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        const PG: &str = "SELECT id, name, domain, hs_object_id, local_version FROM companies \
             WHERE hs_object_id IS NULL AND hubspot_deleted_at IS NULL \
               AND id = ANY($1::bigint[]) ORDER BY id";
        const SQLITE: &str = "SELECT id, name, domain, hs_object_id, local_version FROM companies \
             WHERE hs_object_id IS NULL AND hubspot_deleted_at IS NULL \
               AND id IN (SELECT value FROM json_each($1)) ORDER BY id";
        let rows = on_pool!(self, pool => postgres: {
            sqlx::query_as::<_, super::CompanyCandidate>(PG)
                .bind(ids)
                .fetch_all(pool)
                .await
        }, sqlite: {
            sqlx::query_as::<_, super::CompanyCandidate>(SQLITE)
                .bind(Json(ids))
                .fetch_all(pool)
                .await
        })?;
        Ok(rows)
    }

    /// The HubSpot company last synced as `contact`'s primary, if any.
    pub async fn synced_company_of_contact(
        &self,
        contact: ContactId,
    ) -> Result<Option<CompanyId>, StoreError> {
        const SQL: &str = "SELECT hs_company_id FROM contact_company_links WHERE contact_id = $1";
        let id: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar(SQL).bind(contact).fetch_optional(pool).await
        })?;
        Ok(id.map(CompanyId))
    }
}

/// PostgreSQL: records the page's synced companies (`$1` contacts, `$2` HubSpot companies).
const PG_SAVE_SYNCED: &str = "
    INSERT INTO contact_company_links (contact_id, hs_company_id)
    SELECT contact_id, hs_company_id FROM UNNEST($1::bigint[], $2::text[])
        AS v(contact_id, hs_company_id)
    ON CONFLICT (contact_id) DO UPDATE
       SET hs_company_id = excluded.hs_company_id, synced_at = excluded.synced_at";
/// SQLite: the same from one JSON array of `[contact, hs_company_id]` (`WHERE true` lets
/// SQLite parse the upsert after a SELECT).
pub(super) const SQLITE_SAVE_SYNCED: &str = "
    INSERT INTO contact_company_links (contact_id, hs_company_id)
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each($1) WHERE true
    ON CONFLICT (contact_id) DO UPDATE
       SET hs_company_id = excluded.hs_company_id, synced_at = excluded.synced_at";
/// PostgreSQL: forgets the page's contacts that have no synced association any more.
const PG_FORGET_SYNCED: &str =
    "DELETE FROM contact_company_links WHERE contact_id = ANY($1::bigint[])";
/// SQLite: the same from a JSON array of contact ids.
pub(super) const SQLITE_FORGET_SYNCED: &str =
    "DELETE FROM contact_company_links WHERE contact_id IN (SELECT value FROM json_each($1))";

/// PostgreSQL: sets the page's local companies where each is still the one read
/// (`$1` contacts, `$2` new companies, `$3` companies as read); returns the contacts changed.
const PG_SET_COMPANIES: &str = "
    UPDATE contacts c SET company_id = v.company_id
      FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, company_id, expected)
     WHERE c.id = v.id AND c.company_id IS NOT DISTINCT FROM v.expected
    RETURNING c.id";
/// SQLite: the same from one JSON array of `[contact, company, expected]` (`IS` is SQLite's
/// `IS NOT DISTINCT FROM`).
pub(super) const SQLITE_SET_COMPANIES: &str = "
    UPDATE contacts SET company_id = v.company_id
      FROM (SELECT json_extract(value, '$[0]') AS id,
                   json_extract(value, '$[1]') AS company_id,
                   json_extract(value, '$[2]') AS expected
              FROM json_each($1)) AS v
     WHERE contacts.id = v.id AND contacts.company_id IS v.expected
    RETURNING contacts.id";

impl Tx {
    /// The linked, untombstoned contacts among these HubSpot contacts, in id order, with their
    /// association state as this transaction sees it (an incremental or webhook pull applies
    /// the associations of the contacts it read, some of them linked in this transaction).
    pub async fn association_rows_of(
        &mut self,
        hs_ids: &[HsObjectId],
    ) -> Result<Vec<AssociationRow>, StoreError> {
        if hs_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = hs_ids.iter().map(|id| id.0.as_str()).collect();
        let rows = on_tx!(self, c =>
            postgres: sqlx::query_as::<_, AssociationRow>(PG_OF_IDS)
                .bind(ContactId(i64::MIN))
                .bind(&ids)
                .fetch_all(c)
                .await?,
            sqlite: sqlx::query_as::<_, AssociationRow>(SQLITE_OF_IDS)
                .bind(ContactId(i64::MIN))
                .bind(sqlx::types::Json(&ids))
                .fetch_all(c)
                .await?,
        );
        Ok(rows)
    }

    /// Records, per contact, the HubSpot company now synced as its primary (`None`: the
    /// contact has no synced association any more). Set-based: at most one upsert and one
    /// deletion for the whole page. A contact named twice ends as its last mention says.
    pub async fn save_synced_companies(
        &mut self,
        rows: &[(ContactId, Option<CompanyId>)],
    ) -> Result<(), StoreError> {
        let last = last_mention_each(rows);
        let (kept, forgotten): (Vec<_>, Vec<_>) =
            last.into_iter().partition(|(_, company)| company.is_some());
        if !kept.is_empty() {
            let contacts: Vec<i64> = kept.iter().map(|(contact, _)| contact.0).collect();
            let companies: Vec<&str> = kept
                .iter()
                .filter_map(|(_, company)| company.map(|c| c.0.as_str()))
                .collect();
            on_tx!(&mut *self, c =>
                postgres: {
                    sqlx::query(PG_SAVE_SYNCED)
                        .bind(&contacts)
                        .bind(&companies)
                        .execute(c)
                        .await?;
                },
                sqlite: {
                    let pairs: Vec<(i64, &str)> =
                        contacts.iter().copied().zip(companies.iter().copied()).collect();
                    sqlx::query(SQLITE_SAVE_SYNCED).bind(Json(&pairs)).execute(c).await?;
                },
            );
        }
        if !forgotten.is_empty() {
            let contacts: Vec<i64> = forgotten.iter().map(|(contact, _)| contact.0).collect();
            on_tx!(&mut *self, c =>
                postgres: {
                    sqlx::query(PG_FORGET_SYNCED).bind(&contacts).execute(c).await?;
                },
                sqlite: {
                    sqlx::query(SQLITE_FORGET_SYNCED).bind(Json(&contacts)).execute(c).await?;
                },
            );
        }
        Ok(())
    }

    /// Sets contacts' local company, only where it is still `expected` (as read): a local
    /// change made meanwhile wins. One statement for the whole page; a contact named twice is
    /// taken at its first mention. Returns the contacts changed, in the order given.
    pub async fn set_contact_companies(
        &mut self,
        rows: &[ContactCompanyChange],
    ) -> Result<Vec<ContactId>, StoreError> {
        let mut seen = HashSet::with_capacity(rows.len());
        let rows: Vec<&ContactCompanyChange> =
            rows.iter().filter(|r| seen.insert(r.contact)).collect();
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let id = |c: Option<LocalCompanyId>| c.map(|c| c.0);
        let changed: Vec<i64> = on_tx!(&mut *self, c =>
            postgres: {
                let contacts: Vec<i64> = rows.iter().map(|r| r.contact.0).collect();
                let companies: Vec<Option<i64>> = rows.iter().map(|r| id(r.company)).collect();
                let expected: Vec<Option<i64>> = rows.iter().map(|r| id(r.expected)).collect();
                sqlx::query_scalar(PG_SET_COMPANIES)
                    .bind(&contacts)
                    .bind(&companies)
                    .bind(&expected)
                    .fetch_all(c)
                    .await?
            },
            sqlite: {
                let json: Vec<(i64, Option<i64>, Option<i64>)> = rows
                    .iter()
                    .map(|r| (r.contact.0, id(r.company), id(r.expected)))
                    .collect();
                sqlx::query_scalar(SQLITE_SET_COMPANIES)
                    .bind(Json(&json))
                    .fetch_all(c)
                    .await?
            },
        );
        let changed: HashSet<i64> = changed.into_iter().collect();
        Ok(rows
            .iter()
            .map(|r| r.contact)
            .filter(|contact| changed.contains(&contact.0))
            .collect())
    }
}

/// Each contact once, as its last mention in `rows` says, in the order of those mentions.
fn last_mention_each(
    rows: &[(ContactId, Option<CompanyId>)],
) -> Vec<(ContactId, Option<&CompanyId>)> {
    let mut seen = HashSet::with_capacity(rows.len());
    let mut last: Vec<(ContactId, Option<&CompanyId>)> = rows
        .iter()
        .rev()
        .filter(|(contact, _)| seen.insert(*contact))
        .map(|(contact, company)| (*contact, company.as_ref()))
        .collect();
    last.reverse();
    last
}

/// A contact's local company as a pull sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactCompanyChange {
    /// The contact.
    pub contact: ContactId,
    /// Its company from now on (`None`: none).
    pub company: Option<LocalCompanyId>,
    /// Its company as read; the row is left alone if it changed meanwhile.
    pub expected: Option<LocalCompanyId>,
}

impl Store {
    /// [`Tx::association_rows_of`] outside any transaction, as committed now: what a pull
    /// decides its HubSpot reads with before the page's transaction opens (which reads again).
    pub async fn association_rows_of_now(
        &self,
        hs_ids: &[HsObjectId],
    ) -> Result<Vec<AssociationRow>, StoreError> {
        if hs_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = hs_ids.iter().map(|id| id.0.as_str()).collect();
        let rows = on_pool!(self, pool =>
            postgres: sqlx::query_as::<_, AssociationRow>(PG_OF_IDS)
                .bind(ContactId(i64::MIN))
                .bind(&ids)
                .fetch_all(pool)
                .await?,
            sqlite: sqlx::query_as::<_, AssociationRow>(SQLITE_OF_IDS)
                .bind(ContactId(i64::MIN))
                .bind(sqlx::types::Json(&ids))
                .fetch_all(pool)
                .await?,
        );
        Ok(rows)
    }
}
