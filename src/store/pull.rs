//! Pull's writes: one page of HubSpot contacts into `contacts`, set-based, inside the page's
//! transaction; and the incremental pull's bookmark in `sync_state`.
//!
//! # How a page is written
//!
//! A handful of statements per page, never one per contact:
//!
//! 1. one `SELECT` finds the local rows that hold one of the page's HubSpot ids (or ids merged
//!    into its contacts) or emails, or whose id a contact carries in push's external key
//!    (`crm_sync_contact_id`, when it is this installation's: see [`crate::sync::keys`]);
//! 2. the page is classified in memory ([`classify`]): a contact whose `hs_object_id` a row
//!    holds is `unchanged` (even when its email changed in HubSpot: the link stays); one whose
//!    external key names a row without HubSpot id is linked to that row (push created it from
//!    that row and has not saved the link yet); one whose email a row without HubSpot id holds
//!    is linked to that row; a row linked to a contact HubSpot merged into this one follows
//!    it; one whose email a row linked to another HubSpot contact holds is re-linked when
//!    HubSpot no longer has that contact and fails when it does (the caller asks HubSpot,
//!    [`PageWrite::clashes`], only for pages that have such clashes); the rest are created;
//! 3. the writes, by mode:
//!    - `upsert`: one `INSERT … ON CONFLICT (email) DO UPDATE SET hs_object_id` for every
//!      contact with an email, one `INSERT … ON CONFLICT DO NOTHING` for those without;
//!    - `verbose`: one `INSERT … ON CONFLICT DO NOTHING` for every new contact, one `UPDATE`
//!      for every link.
//!
//!    In both modes links by external key are one `UPDATE` by row id.
//!
//! Every write re-checks what the classification assumed (the upsert only links a row that
//! still has no HubSpot id, the update only a row whose email and id are still as read, the
//! inserts skip any unique clash). A contact whose write did not take — a concurrent insert of
//! the same email, a concurrent link — is classified again against the rows as they are now,
//! a few rounds at most; so a race ends as the right outcome, not as an error or a duplicate.
//!
//! Pull never changes a row's own fields (email, names): it only sets `hs_object_id`. Rows it
//! creates start with `pushed_version = local_version` (they came from HubSpot, so there is
//! nothing to push), and a row it links from "no HubSpot id" gets `pushed_version =
//! local_version` too: linking is not a local change, exactly as push's `link` mode leaves the
//! HubSpot side alone. A row re-linked after a HubSpot merge keeps its `pushed_version`, so a
//! local change still waiting to be pushed is pushed to the surviving contact.

use super::time::DbTime;
use super::{Backend, Store, StoreError, Tx, on_pool, on_tx};
use crate::ids::{ContactId, Email, HsObjectId};
use crate::model::{PullCounts, PullMode, PullOutcome, RecordError};
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::types::Json;
use std::collections::{HashMap, HashSet};

/// How many times a contact whose write raced a concurrent change is classified again before
/// it is reported as failed.
const MAX_ROUNDS: usize = 3;

/// The `sync_state` key of the incremental pull's bookmark.
const BOOKMARK_KEY: &str = "pull.contacts.bookmark";

/// Serialises pull page writes on PostgreSQL (a full pull and targeted pulls of the same
/// contacts could otherwise clash on the `hs_object_id` unique index). The value is "crmpull".
const PG_PULL_LOCK: i64 = 0x0063_726d_7075_6c6c;

/// One HubSpot contact, checked and normalised, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledContact {
    /// The HubSpot record id.
    pub hs_object_id: HsObjectId,
    /// Trimmed and lower-cased; `None` when HubSpot has none.
    pub email: Option<Email>,
    /// `firstname`.
    pub first_name: Option<String>,
    /// `lastname`.
    pub last_name: Option<String>,
    /// `hs_merged_object_ids`: contacts HubSpot merged into this one.
    pub merged_ids: Vec<HsObjectId>,
    /// `crm_sync_contact_id`: the local row push created this contact from, when this
    /// installation's push did (another installation's key is `None`, see
    /// [`crate::sync::keys`]).
    pub external_key: Option<ContactId>,
}

/// What writing one page did: this page's counts (not cumulative) and failed records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageWrite {
    /// Counts of this page alone (contacts in `clashes` are not counted yet).
    pub counts: PullCounts,
    /// One entry per failed record.
    pub errors: Vec<RecordError>,
    /// What became of each counted record, by its index in the page (a dry run reports them).
    pub outcomes: Vec<(usize, PullOutcome)>,
    /// Contacts not written, nor counted, because their email is held by a row linked to
    /// another HubSpot contact that the page does not list and `checked` says nothing of:
    /// ask HubSpot about those contacts and write the page again (see [`classify`]).
    pub clashes: Vec<Clash>,
    /// The HubSpot ids rows were linked to before the page linked them to the contacts it
    /// lists (a stale link re-linked, a merged-away id followed): a dry run, which rolls the
    /// page back, marks them seen, so that its sweep does not check rows the real page moved.
    pub relinked: Vec<HsObjectId>,
}

impl PageWrite {
    /// Counts the clashes as failed records with `reason` (when they cannot be settled).
    pub fn fail_clashes(&mut self, records: &[PulledContact], reason: &str) {
        for clash in std::mem::take(&mut self.clashes) {
            let record = &records[clash.index];
            self.counts.add(PullOutcome::Failed);
            self.outcomes.push((clash.index, PullOutcome::Failed));
            self.errors.push(RecordError {
                contact_id: Some(clash.row),
                company_id: None,
                email: record.email.clone().map(Email::into_string),
                hs_object_id: Some(record.hs_object_id.clone()),
                reason: format!(
                    "its email is used by local contact {}, linked to HubSpot contact {}: {reason}",
                    clash.row, clash.linked
                ),
            });
        }
    }
}

/// A pulled contact whose email is held by a row linked to another HubSpot contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clash {
    /// The contact's index in the page.
    pub index: usize,
    /// The row holding its email.
    pub row: ContactId,
    /// The HubSpot id the row is linked to.
    pub linked: HsObjectId,
}

/// What HubSpot said about the contact a clashing row is linked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkedContact {
    /// HubSpot no longer has it (deleted, archived, never existed in this portal).
    Gone,
    /// HubSpot merged it into this contact.
    MergedInto(HsObjectId),
    /// HubSpot still has it.
    Alive,
    /// HubSpot would not say (it refused to read the id): why.
    Unknown(String),
}

/// What HubSpot said about the contacts clashing rows are linked to, by their id.
pub type CheckedLinks = HashMap<HsObjectId, LinkedContact>;

/// A local row as the classification sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LocalRow {
    /// Local id.
    pub id: ContactId,
    /// Stored (normalised) email.
    pub email: Option<String>,
    /// The HubSpot id it is linked to.
    pub hs_object_id: Option<HsObjectId>,
}

/// What to do with one pulled contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A row holds its HubSpot id already (or it repeats an earlier contact of the page).
    Unchanged,
    /// No row matches: insert one.
    Create,
    /// The row with its external key (or else its email) gets its HubSpot id.
    Link {
        /// The row.
        row: ContactId,
        /// The HubSpot id the row holds now: `None`, or the id of a contact HubSpot merged
        /// into this one.
        previous: Option<HsObjectId>,
        /// What matched the row.
        via: LinkVia,
    },
    /// Cannot be written.
    Fail {
        /// The local row in the way, if any.
        row: Option<ContactId>,
        /// Why, for the job's error list.
        reason: String,
    },
    /// Its email is held by a row linked to another HubSpot contact that this page does not
    /// list: re-linked if HubSpot no longer has that contact, failed if it does.
    Clash {
        /// The row.
        row: ContactId,
        /// The HubSpot id the row holds.
        linked: HsObjectId,
    },
}

/// What matched a HubSpot contact to the local row it links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkVia {
    /// Its `crm_sync_contact_id` is this installation's key of the row: push created it from
    /// that row.
    ExternalKey,
    /// The row holds the id of a contact HubSpot merged into it (`hs_merged_object_ids`).
    MergedId,
    /// Its email is the row's.
    Email,
}

impl LinkVia {
    /// Whether the link is written by row id alone (the row's email may differ from the
    /// contact's), rather than by email.
    fn by_row_id(self) -> bool {
        self != LinkVia::Email
    }
}

/// Decides, for each contact of a page, what to write, given the local rows that hold one of
/// the page's HubSpot ids or emails, and what HubSpot said of the contacts some of those rows
/// are linked to (`checked`). Pure: the rules of INTERFACE §4.4 in one place.
pub fn classify(
    records: &[&PulledContact],
    rows: &[LocalRow],
    checked: &CheckedLinks,
) -> Vec<Plan> {
    let by_hs: HashMap<&str, &LocalRow> = rows
        .iter()
        .filter_map(|r| r.hs_object_id.as_ref().map(|h| (h.0.as_str(), r)))
        .collect();
    let by_email: HashMap<&str, &LocalRow> = rows
        .iter()
        .filter_map(|r| r.email.as_deref().map(|e| (e, r)))
        .collect();
    let by_id: HashMap<ContactId, &LocalRow> = rows.iter().map(|r| (r.id, r)).collect();
    let page_ids: HashSet<&str> = records.iter().map(|r| r.hs_object_id.0.as_str()).collect();
    let mut seen_ids: HashSet<&str> = HashSet::new();
    // Rows some earlier contact of this page links by external key.
    let mut keyed: HashSet<ContactId> = HashSet::new();
    // Emails some earlier contact of this page creates or links, with that contact's id.
    let mut claimed: HashMap<&str, &HsObjectId> = HashMap::new();
    records
        .iter()
        .map(|record| {
            let id = record.hs_object_id.0.as_str();
            if !seen_ids.insert(id) || by_hs.contains_key(id) {
                return Plan::Unchanged;
            }
            if let Some(plan) = by_external_key(record, &by_id, &page_ids)
                && let Plan::Link { row, .. } = &plan
                && keyed.insert(*row)
            {
                return plan;
            }
            if let Some(plan) = by_merged_id(record, &by_hs, &page_ids)
                && let Plan::Link { row, .. } = &plan
                && keyed.insert(*row)
            {
                return plan;
            }
            let Some(email) = record.email.as_ref().map(Email::as_str) else {
                return Plan::Create;
            };
            if let Some(other) = claimed.get(email) {
                return Plan::Fail {
                    row: None,
                    reason: format!(
                        "HubSpot contact {other} in the same page has the same email; only one \
                         HubSpot contact can own a local email"
                    ),
                };
            }
            let plan = match by_email.get(email) {
                None => Plan::Create,
                Some(row) => match &row.hs_object_id {
                    None => Plan::Link {
                        row: row.id,
                        previous: None,
                        via: LinkVia::Email,
                    },
                    Some(linked) if follows_merge(record, linked, &page_ids) => Plan::Link {
                        row: row.id,
                        previous: Some(linked.clone()),
                        via: LinkVia::Email,
                    },
                    // HubSpot lists the other contact in this very page: it is alive.
                    Some(linked) if page_ids.contains(linked.0.as_str()) => Plan::Fail {
                        row: Some(row.id),
                        reason: live_link_reason(row.id, linked, &record.hs_object_id),
                    },
                    Some(linked) => by_checked_link(record, row.id, linked, checked),
                },
            };
            if !matches!(plan, Plan::Fail { .. }) {
                claimed.insert(email, &record.hs_object_id);
            }
            plan
        })
        .collect()
}

/// The link a contact's external key asks for: the row with that id, when it has no HubSpot
/// id or holds one HubSpot merged into this contact. A key naming no row (deleted locally, or
/// from another database) or a row linked to another contact is not trusted: `None`, and the
/// email rules decide.
fn by_external_key(
    record: &PulledContact,
    by_id: &HashMap<ContactId, &LocalRow>,
    page_ids: &HashSet<&str>,
) -> Option<Plan> {
    let row = by_id.get(&record.external_key?)?;
    match &row.hs_object_id {
        None => Some(Plan::Link {
            row: row.id,
            previous: None,
            via: LinkVia::ExternalKey,
        }),
        Some(linked) if follows_merge(record, linked, page_ids) => Some(Plan::Link {
            row: row.id,
            previous: Some(linked.clone()),
            via: LinkVia::ExternalKey,
        }),
        Some(_) => None,
    }
}

/// The link a contact's merged ids ask for: the row holding the id of a contact HubSpot merged
/// into this one (whatever its email), unless HubSpot still lists that id in the page.
fn by_merged_id(
    record: &PulledContact,
    by_hs: &HashMap<&str, &LocalRow>,
    page_ids: &HashSet<&str>,
) -> Option<Plan> {
    record
        .merged_ids
        .iter()
        .filter(|merged| !page_ids.contains(merged.0.as_str()))
        .find_map(|merged| by_hs.get(merged.0.as_str()))
        .map(|row| Plan::Link {
            row: row.id,
            previous: row.hs_object_id.clone(),
            via: LinkVia::MergedId,
        })
}

/// The plan for a contact whose email `row` holds while linked to `linked`, a contact the
/// page does not list: re-link the row when HubSpot no longer has `linked` (deleted, merged
/// into this very contact, another portal's), fail when it still has it, and leave it to the
/// caller to ask HubSpot ([`Plan::Clash`]) when `checked` does not say.
fn by_checked_link(
    record: &PulledContact,
    row: ContactId,
    linked: &HsObjectId,
    checked: &CheckedLinks,
) -> Plan {
    let contact = &record.hs_object_id;
    let fail = |reason: String| Plan::Fail {
        row: Some(row),
        reason,
    };
    match checked.get(linked) {
        None => Plan::Clash {
            row,
            linked: linked.clone(),
        },
        Some(LinkedContact::Gone) => Plan::Link {
            row,
            previous: Some(linked.clone()),
            via: LinkVia::Email,
        },
        Some(LinkedContact::MergedInto(survivor)) if survivor == contact => Plan::Link {
            row,
            previous: Some(linked.clone()),
            via: LinkVia::Email,
        },
        Some(LinkedContact::MergedInto(survivor)) => fail(format!(
            "the email of HubSpot contact {contact} is already used by local contact {row}, \
             which is linked to HubSpot contact {linked}; HubSpot merged that contact into \
             {survivor}, not into {contact}, so the link is not moved"
        )),
        Some(LinkedContact::Alive) => fail(live_link_reason(row, linked, contact)),
        Some(LinkedContact::Unknown(why)) => fail(format!(
            "the email of HubSpot contact {contact} is already used by local contact {row}, \
             which is linked to HubSpot contact {linked}; whether HubSpot still has that \
             contact could not be checked ({why})"
        )),
    }
}

/// Why a contact fails when its email is held by a row linked to a contact HubSpot still has.
pub fn live_link_reason(row: ContactId, linked: &HsObjectId, contact: &HsObjectId) -> String {
    format!(
        "the email of HubSpot contact {contact} is already used by local contact {row}, which is \
         linked to HubSpot contact {linked}, and HubSpot still has that contact (with another \
         email); a link to a live contact is never moved by pull"
    )
}

/// Whether a row linked to `linked` follows `record`: HubSpot merged `linked` into it (and
/// `linked` is not itself in the page, i.e. HubSpot still lists it).
fn follows_merge(record: &PulledContact, linked: &HsObjectId, page_ids: &HashSet<&str>) -> bool {
    record.merged_ids.contains(linked) && !page_ids.contains(linked.0.as_str())
}

/// The final outcome of one contact of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Created {
        with_email: bool,
    },
    Linked,
    Unchanged,
    Failed {
        row: Option<ContactId>,
        reason: String,
    },
    /// Left to the caller: see [`PageWrite::clashes`].
    Clash {
        row: ContactId,
        linked: HsObjectId,
    },
}

/// A row an insert, upsert or update wrote.
#[derive(Debug, sqlx::FromRow)]
struct Written {
    id: ContactId,
    hs_object_id: HsObjectId,
    /// PostgreSQL's upsert says whether it inserted (`xmax = 0`); elsewhere unused.
    inserted: bool,
}

/// SQLite: the contacts that hold any of a page's HubSpot ids (`$1`), emails (`$2`) or row
/// ids (`$3`), each a JSON array. One indexed lookup per list: SQLite plans an `OR` of
/// `IN`-subqueries as a scan.
pub(super) const SQLITE_HOLDERS: &str = "\
    SELECT id, email, hs_object_id FROM contacts \
     WHERE hs_object_id IN (SELECT value FROM json_each($1)) \
    UNION \
    SELECT id, email, hs_object_id FROM contacts \
     WHERE email IN (SELECT value FROM json_each($2)) \
    UNION \
    SELECT id, email, hs_object_id FROM contacts \
     WHERE id IN (SELECT value FROM json_each($3))";

/// SQLite: links rows to the pulled contacts (`$1`: a JSON array of `[row id, HubSpot id,
/// email, HubSpot id as read]`; `$2`: matched by our key, so the email need not agree).
pub(super) const SQLITE_LINK_ROWS: &str = "
    UPDATE contacts
       SET hs_object_id = json_extract(u.value, '$[1]'),
           pushed_version = CASE WHEN contacts.hs_object_id IS NULL AND NOT $2
                                 THEN contacts.local_version
                                 ELSE contacts.pushed_version END
      FROM json_each($1) AS u
     WHERE contacts.id = json_extract(u.value, '$[0]')
       AND ($2 OR contacts.email = json_extract(u.value, '$[2]'))
       AND contacts.hs_object_id IS json_extract(u.value, '$[3]')
    RETURNING id, hs_object_id, false AS inserted";

impl Tx {
    /// Writes one page of pulled contacts in this transaction (see the module docs) and says
    /// what became of each. Contacts that cannot be written are counted as failed with a
    /// reason; only database failures are errors.
    pub async fn write_pull_page(
        &mut self,
        mode: PullMode,
        records: &[PulledContact],
        checked: &CheckedLinks,
    ) -> Result<PageWrite, StoreError> {
        on_tx!(&mut *self, c =>
            postgres: {
            // One writer of pulled rows at a time. The page's commit need not wait for the
            // disk: if the server crashes before it is flushed, the page and its checkpoint
            // are lost together and the resumed job writes the page again; the job's final
            // status is a synchronous commit later in the same log, which flushes this one.
            // Custom plans only: a pull starts on an empty table, where a cached generic plan
            // (a sequential scan) looks as cheap as any, and then keeps scanning a table that
            // has grown to millions of rows. And index probes priced as on an SSD or in cache:
            // with the default (spinning-disk) cost, 200 unique-index probes look dearer than
            // scanning a table of tens of thousands of rows, which takes ten times longer.
            const SQL: &str = "SELECT set_config('synchronous_commit', 'off', true), \
                 set_config('plan_cache_mode', 'force_custom_plan', true), \
                 set_config('random_page_cost', '1.1', true), \
                 pg_advisory_xact_lock($1)";
            sqlx::query(SQL).bind(PG_PULL_LOCK).execute(c).await?;
        },
            // SQLite has one writer at a time anyway.
            sqlite: (),
        );
        let mut outcomes: Vec<Option<Outcome>> = vec![None; records.len()];
        let mut relinked = Vec::new();
        let mut pending: Vec<usize> = (0..records.len()).collect();
        for _ in 0..MAX_ROUNDS {
            if pending.is_empty() {
                break;
            }
            pending = self
                .write_round(
                    mode,
                    records,
                    &pending,
                    checked,
                    &mut outcomes,
                    &mut relinked,
                )
                .await?;
        }
        for i in pending {
            outcomes[i] = Some(Outcome::Failed {
                row: None,
                reason: "the matching local rows kept changing while this contact was written; \
                         the next pull will retry it"
                    .to_owned(),
            });
        }
        let outcomes = outcomes.into_iter().enumerate().map(|(i, outcome)| {
            let outcome = outcome.unwrap_or(Outcome::Failed {
                row: None,
                reason: "not written (internal error: no outcome)".to_owned(),
            });
            (i, outcome)
        });
        let mut page = tally(mode, records, outcomes);
        page.relinked = relinked;
        Ok(page)
    }

    /// One round: classify `pending` against the rows as they are now, write, and return the
    /// contacts whose write did not take.
    async fn write_round(
        &mut self,
        mode: PullMode,
        records: &[PulledContact],
        pending: &[usize],
        checked: &CheckedLinks,
        outcomes: &mut [Option<Outcome>],
        relinked: &mut Vec<HsObjectId>,
    ) -> Result<Vec<usize>, StoreError> {
        let batch: Vec<&PulledContact> = pending.iter().map(|&i| &records[i]).collect();
        let rows = self.matching_rows(&batch).await?;
        let plans = classify(&batch, &rows, checked);
        let mut creates_with_email = Vec::new();
        let mut creates_without_email = Vec::new();
        let mut links: Vec<Link> = Vec::new();
        let mut key_links: Vec<Link> = Vec::new();
        for (&i, plan) in pending.iter().zip(plans) {
            match plan {
                Plan::Unchanged => outcomes[i] = Some(Outcome::Unchanged),
                Plan::Fail { row, reason } => outcomes[i] = Some(Outcome::Failed { row, reason }),
                Plan::Clash { row, linked } => outcomes[i] = Some(Outcome::Clash { row, linked }),
                Plan::Create if records[i].email.is_some() => creates_with_email.push(i),
                Plan::Create => creates_without_email.push(i),
                Plan::Link {
                    row,
                    previous,
                    via: LinkVia::Email,
                } => links.push((i, row, previous)),
                Plan::Link {
                    row,
                    previous,
                    via: LinkVia::ExternalKey | LinkVia::MergedId,
                } => key_links.push((i, row, previous)),
            }
        }
        // Links by external key or merged id are updates by row id in both modes (the upsert
        // goes by email, which such a contact may lack or hold differently).
        let mut retry = Vec::new();
        let written = self
            .link_rows(records, &key_links, LinkVia::ExternalKey)
            .await?;
        for (i, _, previous) in key_links {
            if written.contains_key(&records[i].hs_object_id) {
                outcomes[i] = Some(Outcome::Linked);
                relinked.extend(previous);
            } else {
                retry.push(i);
            }
        }
        match mode {
            PullMode::Upsert => {
                let mut upserts = creates_with_email;
                upserts.extend(links.iter().map(|(i, _, _)| *i));
                let relinks: Vec<ContactId> = links
                    .iter()
                    .filter(|(_, _, previous)| previous.is_some())
                    .map(|(_, row, _)| *row)
                    .collect();
                let previous: HashMap<usize, &HsObjectId> = links
                    .iter()
                    .filter_map(|(i, _, previous)| previous.as_ref().map(|p| (*i, p)))
                    .collect();
                // PostgreSQL says which rows its upsert inserted; on SQLite, whose writer holds
                // the database alone, a row that was not among the matches is a new one.
                let on_sqlite = self.backend() == Backend::Sqlite;
                let existing: HashSet<ContactId> = rows.iter().map(|r| r.id).collect();
                let written = self.upsert_by_email(records, &upserts, &relinks).await?;
                for i in upserts {
                    let Some(w) = written.get(&records[i].hs_object_id) else {
                        retry.push(i);
                        continue;
                    };
                    let inserted = if on_sqlite {
                        !existing.contains(&w.id)
                    } else {
                        w.inserted
                    };
                    outcomes[i] = Some(if inserted {
                        Outcome::Created { with_email: true }
                    } else {
                        relinked.extend(previous.get(&i).map(|p| (*p).clone()));
                        Outcome::Linked
                    });
                }
                let written = self.insert_new(records, &creates_without_email).await?;
                for i in creates_without_email {
                    if written.contains_key(&records[i].hs_object_id) {
                        outcomes[i] = Some(Outcome::Created { with_email: false });
                    } else {
                        retry.push(i);
                    }
                }
            }
            PullMode::Verbose => {
                let mut creates = creates_with_email;
                creates.extend(creates_without_email);
                let written = self.insert_new(records, &creates).await?;
                for i in creates {
                    if written.contains_key(&records[i].hs_object_id) {
                        let with_email = records[i].email.is_some();
                        outcomes[i] = Some(Outcome::Created { with_email });
                    } else {
                        // Most likely its email was inserted meanwhile: the next round links it.
                        retry.push(i);
                    }
                }
                let written = self.link_rows(records, &links, LinkVia::Email).await?;
                for (i, _, previous) in links {
                    if written.contains_key(&records[i].hs_object_id) {
                        outcomes[i] = Some(Outcome::Linked);
                        relinked.extend(previous);
                    } else {
                        retry.push(i);
                    }
                }
            }
        }
        Ok(retry)
    }

    /// The rows that hold one of the contacts' HubSpot ids or emails, or whose id one of them
    /// carries as external key.
    async fn matching_rows(
        &mut self,
        batch: &[&PulledContact],
    ) -> Result<Vec<LocalRow>, StoreError> {
        // Merged ids too: a row linked to a contact HubSpot merged into one of these follows it.
        let ids: Vec<&str> = batch
            .iter()
            .flat_map(|r| std::iter::once(&r.hs_object_id).chain(&r.merged_ids))
            .map(|id| id.0.as_str())
            .collect();
        let emails: Vec<&str> = batch
            .iter()
            .filter_map(|r| r.email.as_ref().map(Email::as_str))
            .collect();
        let keys: Vec<i64> = batch
            .iter()
            .filter_map(|r| r.external_key.map(|k| k.0))
            .collect();
        on_tx!(&mut *self, c =>
            postgres: {
            const SQL: &str = "SELECT id, email, hs_object_id FROM contacts \
                 WHERE hs_object_id = ANY($1) OR email = ANY($2) OR id = ANY($3)";
            Ok(sqlx::query_as(SQL)
                .bind(&ids)
                .bind(&emails)
                .bind(&keys)
                .fetch_all(c)
                .await?)
        },
            sqlite: {
            Ok(sqlx::query_as(SQLITE_HOLDERS)
                .bind(Json(&ids))
                .bind(Json(&emails))
                .bind(Json(&keys))
                .fetch_all(c)
                .await?)
        },
        )
    }

    /// Upsert by email: inserts the new contacts, and gives the existing row of each email its
    /// HubSpot id — only a row that has none, or one in `relinks` (after a HubSpot merge).
    async fn upsert_by_email(
        &mut self,
        records: &[PulledContact],
        which: &[usize],
        relinks: &[ContactId],
    ) -> Result<HashMap<HsObjectId, Written>, StoreError> {
        if which.is_empty() {
            return Ok(HashMap::new());
        }
        let relinks: Vec<i64> = relinks.iter().map(|r| r.0).collect();
        let rows: Vec<Written> = on_tx!(&mut *self, c =>
            postgres: {
            const SQL: &str = "
                INSERT INTO contacts AS c
                       (email, first_name, last_name, hs_object_id, local_version, pushed_version)
                SELECT t.email, t.first_name, t.last_name, t.hs, 1, 1
                  FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
                       WITH ORDINALITY AS t(email, first_name, last_name, hs, n)
                 ORDER BY t.n
                ON CONFLICT (email) DO UPDATE
                   SET hs_object_id = excluded.hs_object_id,
                       pushed_version = CASE WHEN c.hs_object_id IS NULL
                                             THEN c.local_version ELSE c.pushed_version END
                 WHERE c.hs_object_id IS NULL OR c.id = ANY($5)
                RETURNING c.id, c.hs_object_id, (c.xmax = 0) AS inserted";
            let cols = Columns::of(records, which);
            sqlx::query_as(SQL)
                .bind(&cols.emails)
                .bind(&cols.first_names)
                .bind(&cols.last_names)
                .bind(&cols.ids)
                .bind(&relinks)
                .fetch_all(c)
                .await?
        },
            sqlite: {
            const SQL: &str = "
                INSERT INTO contacts
                       (email, first_name, last_name, hs_object_id, local_version, pushed_version)
                SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                       json_extract(value, '$[2]'), json_extract(value, '$[3]'), 1, 1
                  FROM json_each($1)
                 WHERE true
                 ORDER BY key
                ON CONFLICT (email) DO UPDATE
                   SET hs_object_id = excluded.hs_object_id,
                       pushed_version = CASE WHEN contacts.hs_object_id IS NULL
                                             THEN contacts.local_version
                                             ELSE contacts.pushed_version END
                 WHERE contacts.hs_object_id IS NULL
                    OR contacts.id IN (SELECT value FROM json_each($2))
                RETURNING id, hs_object_id, false AS inserted";
            sqlx::query_as(SQL)
                .bind(Json(json_rows(records, which)))
                .bind(Json(&relinks))
                .fetch_all(c)
                .await?
        },
        );
        Ok(by_hs_id(rows))
    }

    /// Inserts new rows; any unique clash (email or HubSpot id taken meanwhile) skips the row.
    async fn insert_new(
        &mut self,
        records: &[PulledContact],
        which: &[usize],
    ) -> Result<HashMap<HsObjectId, Written>, StoreError> {
        if which.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<Written> = on_tx!(&mut *self, c =>
            postgres: {
            const SQL: &str = "
                INSERT INTO contacts
                       (email, first_name, last_name, hs_object_id, local_version, pushed_version)
                SELECT t.email, t.first_name, t.last_name, t.hs, 1, 1
                  FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
                       WITH ORDINALITY AS t(email, first_name, last_name, hs, n)
                 ORDER BY t.n
                ON CONFLICT DO NOTHING
                RETURNING id, hs_object_id, true AS inserted";
            let cols = Columns::of(records, which);
            sqlx::query_as(SQL)
                .bind(&cols.emails)
                .bind(&cols.first_names)
                .bind(&cols.last_names)
                .bind(&cols.ids)
                .fetch_all(c)
                .await?
        },
            sqlite: {
            const SQL: &str = "
                INSERT INTO contacts
                       (email, first_name, last_name, hs_object_id, local_version, pushed_version)
                SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                       json_extract(value, '$[2]'), json_extract(value, '$[3]'), 1, 1
                  FROM json_each($1)
                 WHERE true
                 ORDER BY key
                ON CONFLICT DO NOTHING
                RETURNING id, hs_object_id, true AS inserted";
            sqlx::query_as(SQL)
                .bind(Json(json_rows(records, which)))
                .fetch_all(c)
                .await?
        },
        );
        Ok(by_hs_id(rows))
    }

    /// Gives rows their HubSpot id, each only while its current HubSpot id (and, for a link
    /// by email, its email) is still the one the classification saw. A row linked by email
    /// from no HubSpot id counts as pushed (linking is not a local change); one linked by
    /// external key keeps its `pushed_version`, so a local change made after push created the
    /// contact is pushed to it by the next push.
    async fn link_rows(
        &mut self,
        records: &[PulledContact],
        links: &[Link],
        via: LinkVia,
    ) -> Result<HashMap<HsObjectId, Written>, StoreError> {
        if links.is_empty() {
            return Ok(HashMap::new());
        }
        let by_key = via.by_row_id();
        let rows: Vec<Written> = on_tx!(&mut *self, c =>
            postgres: {
            const SQL: &str = "
                UPDATE contacts AS c
                   SET hs_object_id = u.hs,
                       pushed_version = CASE WHEN c.hs_object_id IS NULL AND NOT $5
                                             THEN c.local_version ELSE c.pushed_version END
                  FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[])
                       AS u(id, hs, email, previous)
                 WHERE c.id = u.id
                   AND ($5 OR c.email = u.email)
                   AND c.hs_object_id IS NOT DISTINCT FROM u.previous
                RETURNING c.id, c.hs_object_id, false AS inserted";
            let row_ids: Vec<i64> = links.iter().map(|(_, row, _)| row.0).collect();
            let hs: Vec<&str> = links
                .iter()
                .map(|(i, _, _)| records[*i].hs_object_id.0.as_str())
                .collect();
            let emails: Vec<Option<&str>> = links
                .iter()
                .map(|(i, _, _)| records[*i].email.as_ref().map(Email::as_str))
                .collect();
            let previous: Vec<Option<&str>> = links
                .iter()
                .map(|(_, _, p)| p.as_ref().map(|p| p.0.as_str()))
                .collect();
            sqlx::query_as(SQL)
                .bind(&row_ids)
                .bind(&hs)
                .bind(&emails)
                .bind(&previous)
                .bind(by_key)
                .fetch_all(c)
                .await?
        },
            sqlite: {
            let input: Vec<(i64, &str, Option<&str>, Option<&str>)> = links
                .iter()
                .map(|(i, row, previous)| {
                    (
                        row.0,
                        records[*i].hs_object_id.0.as_str(),
                        records[*i].email.as_ref().map(Email::as_str),
                        previous.as_ref().map(|p| p.0.as_str()),
                    )
                })
                .collect();
            sqlx::query_as(SQLITE_LINK_ROWS)
                .bind(Json(input))
                .bind(by_key)
                .fetch_all(c)
                .await?
        },
        );
        Ok(by_hs_id(rows))
    }

    /// Records, in this transaction, that every HubSpot change before `at` has been pulled.
    pub async fn set_pull_bookmark(&mut self, at: DateTime<Utc>) -> Result<(), StoreError> {
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

impl Store {
    /// The incremental pull's bookmark: every HubSpot change before it has been pulled.
    /// `None` until a pull has succeeded.
    pub async fn pull_bookmark(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
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

    /// Forgets the bookmark, so that the next incremental pull reads everything.
    pub async fn clear_pull_bookmark(&self) -> Result<(), StoreError> {
        const SQL: &str = "DELETE FROM sync_state WHERE key = $1";
        on_pool!(self, pool => sqlx::query(SQL).bind(BOOKMARK_KEY).execute(pool).await.map(drop))?;
        Ok(())
    }
}

/// One link to write: the contact's index in the page, the row, the row's HubSpot id as read.
type Link = (usize, ContactId, Option<HsObjectId>);

/// The page's columns for PostgreSQL's `UNNEST`.
struct Columns<'a> {
    emails: Vec<Option<&'a str>>,
    first_names: Vec<Option<&'a str>>,
    last_names: Vec<Option<&'a str>>,
    ids: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn of(records: &'a [PulledContact], which: &[usize]) -> Self {
        let picked = || which.iter().map(|&i| &records[i]);
        Self {
            emails: picked()
                .map(|r| r.email.as_ref().map(Email::as_str))
                .collect(),
            first_names: picked().map(|r| r.first_name.as_deref()).collect(),
            last_names: picked().map(|r| r.last_name.as_deref()).collect(),
            ids: picked().map(|r| r.hs_object_id.0.as_str()).collect(),
        }
    }
}

/// The page's rows for SQLite's `json_each`: `[email, first, last, hs_object_id]`.
type JsonRow<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str);

fn json_rows<'a>(records: &'a [PulledContact], which: &[usize]) -> Vec<JsonRow<'a>> {
    which
        .iter()
        .map(|&i| {
            let r = &records[i];
            (
                r.email.as_ref().map(Email::as_str),
                r.first_name.as_deref(),
                r.last_name.as_deref(),
                r.hs_object_id.0.as_str(),
            )
        })
        .collect()
}

fn by_hs_id(rows: Vec<Written>) -> HashMap<HsObjectId, Written> {
    rows.into_iter()
        .map(|w| (w.hs_object_id.clone(), w))
        .collect()
}

/// Turns outcomes (by the contact's index in `records`) into counts and error entries; clashes
/// are listed, not counted.
fn tally(
    mode: PullMode,
    records: &[PulledContact],
    outcomes: impl Iterator<Item = (usize, Outcome)>,
) -> PageWrite {
    let mut page = PageWrite::default();
    for (index, outcome) in outcomes {
        let record = &records[index];
        let counted = match outcome {
            Outcome::Created { with_email } => PullOutcome::Created { with_email },
            Outcome::Linked => PullOutcome::Linked,
            Outcome::Unchanged => PullOutcome::Unchanged,
            Outcome::Failed { row, reason } => {
                page.errors.push(RecordError {
                    contact_id: row,
                    company_id: None,
                    email: record.email.clone().map(Email::into_string),
                    hs_object_id: Some(record.hs_object_id.clone()),
                    reason,
                });
                PullOutcome::Failed
            }
            Outcome::Clash { row, linked } => {
                page.clashes.push(Clash { index, row, linked });
                continue;
            }
        };
        if mode == PullMode::Upsert
            && matches!(
                counted,
                PullOutcome::Created { with_email: true } | PullOutcome::Linked
            )
        {
            page.counts.upserted += 1;
        }
        page.counts.add(counted);
        page.outcomes.push((index, counted));
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(id: &str, email: Option<&str>) -> PulledContact {
        PulledContact {
            hs_object_id: HsObjectId::from(id),
            email: email.and_then(Email::parse),
            first_name: None,
            last_name: None,
            merged_ids: Vec::new(),
            external_key: None,
        }
    }

    fn keyed(id: &str, email: Option<&str>, key: i64) -> PulledContact {
        PulledContact {
            external_key: Some(ContactId(key)),
            ..contact(id, email)
        }
    }

    fn row(id: i64, email: Option<&str>, hs: Option<&str>) -> LocalRow {
        LocalRow {
            id: ContactId(id),
            email: email.map(str::to_owned),
            hs_object_id: hs.map(HsObjectId::from),
        }
    }

    fn plans(records: &[PulledContact], rows: &[LocalRow]) -> Vec<Plan> {
        checked_plans(records, rows, &CheckedLinks::new())
    }

    fn checked_plans(
        records: &[PulledContact],
        rows: &[LocalRow],
        checked: &CheckedLinks,
    ) -> Vec<Plan> {
        let refs: Vec<&PulledContact> = records.iter().collect();
        classify(&refs, rows, checked)
    }

    #[test]
    fn a_contact_whose_id_a_row_holds_is_unchanged_whatever_its_email() {
        let records = [contact("100", Some("new@acme.com"))];
        let rows = [
            row(1, Some("old@acme.com"), Some("100")),
            row(2, Some("new@acme.com"), None),
        ];
        assert_eq!(plans(&records, &rows), vec![Plan::Unchanged]);
    }

    #[test]
    fn a_contact_whose_email_an_unlinked_row_holds_links_that_row() {
        let records = [contact("100", Some("ann@acme.com"))];
        let rows = [row(7, Some("ann@acme.com"), None)];
        assert_eq!(
            plans(&records, &rows),
            vec![Plan::Link {
                row: ContactId(7),
                previous: None,
                via: LinkVia::Email,
            }]
        );
    }

    #[test]
    fn an_email_held_by_a_row_linked_to_a_contact_not_in_the_page_asks_whether_it_lives() {
        let records = [contact("200", Some("ann@acme.com"))];
        let rows = [row(7, Some("ann@acme.com"), Some("100"))];
        assert_eq!(
            plans(&records, &rows),
            vec![Plan::Clash {
                row: ContactId(7),
                linked: HsObjectId::from("100"),
            }]
        );
    }

    #[test]
    fn a_row_linked_to_a_contact_hubspot_no_longer_has_is_relinked_by_email() {
        let records = [contact("200", Some("ann@acme.com"))];
        let rows = [row(7, Some("ann@acme.com"), Some("100"))];
        let relink = vec![Plan::Link {
            row: ContactId(7),
            previous: Some(HsObjectId::from("100")),
            via: LinkVia::Email,
        }];
        for gone in [
            LinkedContact::Gone,
            LinkedContact::MergedInto(HsObjectId::from("200")),
        ] {
            let checked = CheckedLinks::from([(HsObjectId::from("100"), gone.clone())]);
            assert_eq!(checked_plans(&records, &rows, &checked), relink, "{gone:?}");
        }
    }

    #[test]
    fn an_email_held_by_a_row_linked_to_a_live_contact_fails_naming_the_row_and_both_contacts() {
        let records = [contact("200", Some("ann@acme.com"))];
        let rows = [row(7, Some("ann@acme.com"), Some("100"))];
        for alive in [
            LinkedContact::Alive,
            LinkedContact::MergedInto(HsObjectId::from("300")),
            LinkedContact::Unknown("refused".to_owned()),
        ] {
            let checked = CheckedLinks::from([(HsObjectId::from("100"), alive.clone())]);
            let [Plan::Fail { row, reason }] = &checked_plans(&records, &rows, &checked)[..] else {
                panic!("expected a failure for {alive:?}");
            };
            assert_eq!(*row, Some(ContactId(7)));
            for named in ["7", "100", "200"] {
                assert!(reason.contains(named), "{alive:?}: {reason}");
            }
        }
    }

    #[test]
    fn a_row_linked_to_a_contact_the_page_lists_too_fails_without_asking() {
        let records = [
            contact("100", Some("bob@acme.com")),
            contact("200", Some("ann@acme.com")),
        ];
        let rows = [row(7, Some("ann@acme.com"), Some("100"))];
        let got = plans(&records, &rows);
        assert_eq!(got[0], Plan::Unchanged);
        assert!(
            matches!(&got[1], Plan::Fail { row: Some(ContactId(7)), reason } if reason.contains("100")),
            "{got:?}"
        );
    }

    #[test]
    fn a_row_linked_to_a_contact_merged_into_this_one_follows_the_merge_whatever_its_email() {
        let mut survivor = contact("200", Some("ann@acme.com"));
        survivor.merged_ids = vec![HsObjectId::from("100")];
        for email in ["ann@acme.com", "old-ann@acme.com"] {
            let rows = [row(7, Some(email), Some("100"))];
            assert_eq!(
                plans(std::slice::from_ref(&survivor), &rows),
                vec![Plan::Link {
                    row: ContactId(7),
                    previous: Some(HsObjectId::from("100")),
                    via: LinkVia::MergedId,
                }],
                "{email}"
            );
        }
    }

    #[test]
    fn unknown_contacts_are_created_with_or_without_email() {
        let records = [contact("1", Some("a@acme.com")), contact("2", None)];
        assert_eq!(plans(&records, &[]), vec![Plan::Create, Plan::Create]);
    }

    #[test]
    fn two_contacts_of_one_page_with_one_email_the_second_fails() {
        let records = [
            contact("1", Some("a@acme.com")),
            contact("2", Some("a@acme.com")),
        ];
        let got = plans(&records, &[]);
        assert_eq!(got[0], Plan::Create);
        assert!(matches!(&got[1], Plan::Fail { row: None, reason } if reason.contains('1')));
    }

    #[test]
    fn a_contact_carrying_an_unlinked_rows_id_as_external_key_links_that_row() {
        let records = [keyed("100", None, 7), keyed("101", Some("bo@acme.com"), 8)];
        let rows = [
            row(7, None, None),
            row(8, Some("bob@acme.com"), None),
            row(9, Some("bo@acme.com"), None),
        ];
        assert_eq!(
            plans(&records, &rows),
            vec![
                Plan::Link {
                    row: ContactId(7),
                    previous: None,
                    via: LinkVia::ExternalKey,
                },
                Plan::Link {
                    row: ContactId(8),
                    previous: None,
                    via: LinkVia::ExternalKey,
                },
            ],
            "the key wins over the email: push created the contact from that row"
        );
    }

    #[test]
    fn an_external_key_naming_no_row_or_a_row_linked_elsewhere_is_not_trusted() {
        let records = [
            keyed("100", None, 404),
            keyed("101", Some("ann@acme.com"), 7),
            keyed("102", None, 7),
        ];
        let rows = [
            row(7, Some("old@acme.com"), Some("55")),
            row(8, Some("ann@acme.com"), None),
        ];
        assert_eq!(
            plans(&records, &rows),
            vec![
                Plan::Create,
                Plan::Link {
                    row: ContactId(8),
                    previous: None,
                    via: LinkVia::Email,
                },
                Plan::Create,
            ]
        );
    }

    #[test]
    fn a_keyed_row_linked_to_a_contact_merged_into_this_one_follows_the_merge() {
        let mut survivor = keyed("200", None, 7);
        survivor.merged_ids = vec![HsObjectId::from("100")];
        let rows = [row(7, None, Some("100"))];
        assert_eq!(
            plans(&[survivor], &rows),
            vec![Plan::Link {
                row: ContactId(7),
                previous: Some(HsObjectId::from("100")),
                via: LinkVia::ExternalKey,
            }]
        );
    }

    #[test]
    fn two_contacts_of_one_page_with_one_external_key_link_it_once() {
        let records = [keyed("1", None, 7), keyed("2", None, 7)];
        let rows = [row(7, None, None)];
        let got = plans(&records, &rows);
        assert!(matches!(
            got[0],
            Plan::Link {
                row: ContactId(7),
                ..
            }
        ));
        assert_eq!(got[1], Plan::Create);
    }

    #[test]
    fn a_repeated_id_in_one_page_is_written_once() {
        let records = [contact("1", None), contact("1", None)];
        assert_eq!(plans(&records, &[]), vec![Plan::Create, Plan::Unchanged]);
    }
}
