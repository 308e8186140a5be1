//! Pull into a user's table: HubSpot's contacts, listed 100 at a time with the mapped
//! properties, matched to rows by the HubSpot id of their link, then by email; the mapped
//! `pull` and `both` columns of a matched row are written by one `UPDATE` of those columns.
//!
//! A `both` field is written only when HubSpot's value changed since the last sync and the
//! local one did not, or both changed and HubSpot owns the field. A pull never inserts a row
//! (it cannot know the table's other columns): a HubSpot-only contact is counted `unchanged`.
//! Counts: `total` contacts read = `linked` (rows linked by this pull) + `unchanged` (rows
//! already linked, and HubSpot-only contacts) + `failed`; `upserted` counts the rows whose
//! columns this pull wrote (linked or not).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::Mapped;
use super::values::{column_value, hash, local_canonical, remote_value};
use crate::hubspot::{Batch, Contact, ListContacts, MAX_BATCH, MAX_PAGE_LIMIT};
use crate::ids::{ContactId, HsObjectId};
use crate::jobs::model::{Counts, PullCounts, PullOutcome, RecordError};
use crate::jobs::{Page, Progress, RunError};
use crate::mapping::ColumnName;
use crate::mapping::convert::RecordError as ConversionErrors;
use crate::mapping::{Flow, Owner};
use crate::store::{ColumnValue, LinkWrite, LocalRecord, PendingPull};
use crate::sync::{SyncContext, hubspot_error};

/// Where a pull resumes: HubSpot's list cursor after the last committed page.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    after: Option<String>,
}

/// Runs one pull of `mapped` from the job's checkpoint. An incremental pull is refused: this
/// engine reads the whole list.
pub(crate) async fn run(
    ctx: &SyncContext,
    mapped: &Mapped,
    incremental: bool,
    progress: &Progress,
) -> Result<(), RunError> {
    if incremental {
        return Err(RunError::fatal(format!(
            "an incremental pull of {} (a mapping to your own table \"{}\") is not supported \
             yet; run a full pull",
            mapped.checked.mapping.key, mapped.checked.mapping.table
        )));
    }
    let Counts::Pull(mut counts) = progress.counts() else {
        return Err(RunError::fatal("a pull job holds push counts"));
    };
    let mut properties = mapped.properties(false);
    let email = mapped.email_property().as_str().to_owned();
    if !properties.contains(&email) {
        properties.push(email);
    }
    let mut after = progress
        .checkpoint_as::<Checkpoint>()?
        .and_then(|c| c.after);
    loop {
        if progress.should_stop() {
            return Err(RunError::Interrupted);
        }
        let page = ctx
            .hubspot
            .list_contacts(&ListContacts {
                limit: MAX_PAGE_LIMIT,
                after: after.clone(),
                properties: properties.clone(),
                archived: false,
            })
            .await
            .map_err(|e| hubspot_error("listing HubSpot contacts", e))?;
        let next = page.next_after.clone();
        let checkpoint = Some(Checkpoint {
            after: next.clone(),
        });
        counts = pull_page(progress, mapped, counts, page.results, checkpoint, &[]).await?;
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    progress.set_total(counts.total).await?;
    tracing::info!(job = %progress.job_id(), key = %mapped.checked.mapping.key, ?counts, "pull into a mapped table finished");
    Ok(())
}

/// What a page does to one matched row.
struct RowWrite {
    key: String,
    columns: Vec<(ColumnName, ColumnValue)>,
    link: Option<LinkWrite>,
    outcome: PullOutcome,
}

/// Runs a webhook pull of `mapped`: it drains the ids webhooks named (see
/// [`crate::sync::webhook_pull`]) by batch reads with the mapped properties, each page written
/// like a page of the full pull, and clears the ids it read in the page's transaction. Ids
/// HubSpot no longer has are cleared and logged (a full pull does not mark them either).
pub(crate) async fn run_webhook(
    ctx: &SyncContext,
    mapped: &Mapped,
    progress: &Progress,
) -> Result<(), RunError> {
    let Counts::Pull(mut counts) = progress.counts() else {
        return Err(RunError::fatal("a pull job holds push counts"));
    };
    let mut properties = mapped.properties(false);
    let email = mapped.email_property().as_str().to_owned();
    if !properties.contains(&email) {
        properties.push(email);
    }
    let store = progress.store();
    for _ in 0..crate::sync::webhook_pull::MAX_BATCHES {
        if progress.should_stop() {
            return Err(RunError::Interrupted);
        }
        let taken = store
            .claim_pending_pulls(progress.job_id(), progress.lease(), MAX_BATCH as u32)
            .await?;
        if taken.is_empty() {
            break;
        }
        let ids: Vec<String> = taken.iter().map(|p| p.hs_object_id.0.clone()).collect();
        let batch = Batch::new(ids)
            .map_err(|e| RunError::fatal(format!("webhook ids do not fit a batch: {e}")))?;
        let read = ctx
            .hubspot
            .batch_read(&batch, None, &properties)
            .await
            .map_err(|e| hubspot_error("reading the contacts webhooks named", e))?;
        if !read.missing.is_empty() || !read.errors.is_empty() {
            tracing::info!(
                job = %progress.job_id(),
                missing = ?read.missing,
                refused = read.errors.len(),
                "webhook pull of a mapped table: HubSpot did not return every contact named"
            );
        }
        counts = pull_page(progress, mapped, counts, read.results, None, &taken).await?;
    }
    progress.set_total(counts.total).await?;
    Ok(())
}

/// Matches, decides and commits one page of HubSpot contacts, with the checkpoint to resume
/// after it (`None` keeps none) and the pending webhook ids it answers (cleared with it).
async fn pull_page(
    progress: &Progress,
    mapped: &Mapped,
    mut counts: PullCounts,
    contacts: Vec<Contact>,
    checkpoint: Option<Checkpoint>,
    answered: &[PendingPull],
) -> Result<PullCounts, RunError> {
    let store = progress.store();
    let object = mapped.table.object;
    let ids: Vec<HsObjectId> = contacts.iter().map(|c| c.id.clone()).collect();
    let by_id: HashMap<HsObjectId, String> = store
        .links_by_hubspot_ids(object, &ids)
        .await?
        .into_iter()
        .map(|(key, id)| (id, key))
        .collect();
    let emails: Vec<String> = contacts
        .iter()
        .filter(|c| !by_id.contains_key(&c.id))
        .filter_map(|c| contact_email(mapped, c))
        .collect();
    let by_email: HashMap<String, String> = store
        .local_keys_by_email(&mapped.table, mapped.email_column(), &emails)
        .await?
        .into_iter()
        .collect();
    let mut keys: Vec<String> = by_id.values().cloned().collect();
    keys.extend(by_email.values().cloned());
    let rows: HashMap<String, LocalRecord> = store
        .local_records(&mapped.table, &keys)
        .await?
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    let mut writes = Vec::new();
    let mut errors = Vec::new();
    for contact in &contacts {
        let (key, newly) = match by_id.get(&contact.id) {
            Some(key) => (Some(key), false),
            None => (
                contact_email(mapped, contact).and_then(|e| by_email.get(&e)),
                true,
            ),
        };
        let Some(row) = key.and_then(|k| rows.get(k)) else {
            // Only in HubSpot: pull does not insert rows into a table it does not own.
            counts.add(PullOutcome::Unchanged);
            continue;
        };
        let link_id = row.link.as_ref().and_then(|l| l.hs_object_id.as_ref());
        if newly && link_id.is_some_and(|id| *id != contact.id) {
            // The row is linked to another HubSpot contact: this one is not its record.
            counts.add(PullOutcome::Unchanged);
            continue;
        }
        match decide(mapped, row, contact, newly) {
            Ok(write) => writes.push(write),
            Err(problem) => {
                counts.add(PullOutcome::Failed);
                errors.push(RecordError {
                    contact_id: row.key.parse().ok().map(ContactId),
                    company_id: None,
                    email: contact_email(mapped, contact),
                    hs_object_id: Some(contact.id.clone()),
                    reason: format!(
                        "{}: HubSpot's values do not fit the table: {problem}",
                        mapped.label(&row.key)
                    ),
                });
            }
        }
    }
    let mut tx = progress.begin().await?;
    let links: Vec<LinkWrite> = writes.iter().filter_map(|w| w.link.clone()).collect();
    let held = tx.save_object_links(object, &links).await?;
    for write in &writes {
        if let Some(h) = held.iter().find(|h| h.key == write.key) {
            counts.add(PullOutcome::Failed);
            errors.push(RecordError {
                contact_id: write.key.parse().ok().map(ContactId),
                company_id: None,
                email: None,
                hs_object_id: Some(h.hs_object_id.clone()),
                reason: format!(
                    "{}: HubSpot contact {} is already linked to {}",
                    mapped.label(&write.key),
                    h.hs_object_id,
                    mapped.label(&h.holder)
                ),
            });
            continue;
        }
        tx.update_local_row(&mapped.table, &write.key, &write.columns)
            .await?;
        if !write.columns.is_empty() {
            counts.upserted += 1;
        }
        counts.add(write.outcome);
    }
    tx.clear_pulled(answered).await?;
    let checkpoint = match checkpoint {
        Some(c) => serde_json::to_value(c)
            .map_err(|e| RunError::fatal(format!("cannot encode the pull checkpoint: {e}")))?,
        None => serde_json::Value::Null,
    };
    progress
        .commit(
            tx,
            Page {
                counts: Counts::Pull(counts),
                checkpoint,
                errors,
            },
        )
        .await?;
    Ok(counts)
}

/// The contact's email, trimmed and lower-case.
fn contact_email(mapped: &Mapped, contact: &Contact) -> Option<String> {
    contact
        .properties
        .get(mapped.email_property().as_str())
        .and_then(Option::as_deref)
        .map(|e| e.trim().to_lowercase())
        .filter(|e| !e.is_empty())
}

/// Which columns of `row` take HubSpot's values, the values both sides now agree on, and the
/// new push hash when the row is in sync with them.
fn decide(
    mapped: &Mapped,
    row: &LocalRecord,
    contact: &Contact,
    newly: bool,
) -> Result<RowWrite, ConversionErrors> {
    let old = row.link.clone().unwrap_or_default();
    let mut synced = old.synced.clone();
    let mut columns = Vec::new();
    let mut failures = Vec::new();
    // Every push/both field's local value after this pull, in HubSpot's format.
    let mut after: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (i, field) in mapped.fields.iter().enumerate() {
        let property = field.field.property.as_str().to_owned();
        let local = local_canonical(field, row.values[i].as_deref()).ok();
        if !field.field.flow.direction().writes_locally() {
            after.insert(property, local);
            continue;
        }
        let raw = contact.properties.get(&property).and_then(Option::as_deref);
        let (value, remote) = match remote_value(field, raw) {
            Ok(v) => v,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let last = old.synced.get(&property);
        let take_remote = match field.field.flow {
            _ if local.as_ref() == Some(&remote) => false,
            Flow::Pull => true,
            Flow::Push => false,
            // HubSpot did not change it: the local change (if any) is push's to send.
            Flow::Both(_) if last == Some(&remote) => false,
            // Only HubSpot changed it.
            Flow::Both(_) if last.is_some() && local.as_ref() == last => true,
            // Both changed (or never synced): the owner wins.
            Flow::Both(owner) => owner == Owner::HubSpot,
        };
        let agreed = local.as_ref() == Some(&remote) || take_remote;
        if take_remote {
            columns.push((field.field.column.clone(), column_value(value)));
        }
        if agreed {
            synced.insert(property.clone(), remote.clone());
        }
        if field.field.flow.direction().writes_to_hubspot() {
            after.insert(property, if take_remote { Some(remote) } else { local });
        }
    }
    if !failures.is_empty() {
        return Err(ConversionErrors(failures));
    }
    // In sync when every sent value is the one both sides agree on: the row is then not a
    // push candidate until it changes.
    let in_sync: Option<BTreeMap<String, String>> = after
        .iter()
        .filter(|(p, _)| {
            mapped.fields.iter().any(|f| {
                f.field.property.as_str() == p.as_str()
                    && f.field.flow.direction().writes_to_hubspot()
            })
        })
        .map(|(p, v)| match (v, synced.get(p)) {
            (Some(v), Some(s)) if v == s => Some((p.clone(), v.clone())),
            _ => None,
        })
        .collect();
    let pushed_hash = in_sync.as_ref().map(hash);
    let unchanged_link =
        !newly && synced == old.synced && (pushed_hash.is_none() || pushed_hash == old.pushed_hash);
    let link = (!unchanged_link).then(|| LinkWrite {
        key: row.key.clone(),
        hs_object_id: Some(contact.id.clone()),
        pushed_hash,
        synced,
    });
    Ok(RowWrite {
        key: row.key.clone(),
        columns,
        link,
        outcome: if newly {
            PullOutcome::Linked
        } else {
            PullOutcome::Unchanged
        },
    })
}
