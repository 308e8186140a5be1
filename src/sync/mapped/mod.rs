//! The engine of a mapping to a table crm-sync does not own (`[[sync.objects]]` naming the
//! user's own table): contacts pushed from and pulled into that table through the mapped
//! fields, with the sync state in crm-sync's `object_links` table (see
//! [`crate::store::LocalTable`]) — the user's table gets no trigger and no column.
//!
//! - [`push`]: keyset pages of the table joined with their links; a row is a candidate when
//!   unlinked or when the hash of its mapped push/both values differs from the one last pushed.
//! - [`pull`]: HubSpot's records written into the mapped pull/both columns of matched rows;
//!   full (then links whose record HubSpot deleted are marked, merged ones follow the
//!   survivor), incremental from the mapping's own bookmark, or the ids webhooks named.
//!
//! Both have dry runs (the same reads, no write but the job row), and both keep an opt-in
//! `hubspot_id_column` of the user's table in step with the links.
//!
//! For a field syncing both ways, the value both sides last agreed on (kept per property in
//! the link) says which side changed since: only the side that changed wins, and when both
//! did, the field's owner.
//!
//! The built-in contacts mapping keeps its own engine ([`crate::sync::push`],
//! [`crate::sync::pull`]); [`user_mapping`] tells them apart.

pub mod pull;
pub mod push;
mod values;

use crate::hubspot::ObjectType;
use crate::ids::HsObjectId;
use crate::jobs::model::{Job, JobAction, Plan, SyncObject, Trigger};
use crate::jobs::{Progress, RunError};
use crate::mapping::convert::TypedField;
use crate::mapping::properties::{check_properties, ensure_properties};
use crate::mapping::{
    CheckedMapping, ColumnName, HubSpotIdStore, MappingError, ObjectMapping, PropertyName,
};
use crate::store::{
    ColumnKind, ColumnValue, KeyKind, LocalRecord, LocalTable, Store, StoreError, Tx,
};
use crate::sync::SyncContext;

/// The mapping of `object` when it is one this engine runs (not the built-in contacts one).
pub fn user_mapping(ctx: &SyncContext, object: SyncObject) -> Option<&CheckedMapping> {
    let object = match object {
        SyncObject::Contacts => ObjectType::Contacts,
        _ => return None,
    };
    ctx.objects
        .iter()
        .find(|m| m.mapping.object == object && !is_built_in(&m.mapping))
}

/// Whether `mapping` is the built-in contacts mapping (whatever its configuration key says).
pub fn is_built_in(mapping: &ObjectMapping) -> bool {
    let built_in = ObjectMapping::default_contacts();
    mapping.object == built_in.object
        && mapping.table == built_in.table
        && mapping.key_column == built_in.key_column
        && mapping.match_key == built_in.match_key
        && mapping.hubspot_id == built_in.hubspot_id
        && mapping.fields == built_in.fields
}

/// Refuses at start-up, with one line naming the key, every mapping crm-sync cannot run yet,
/// so that none is silently ignored.
pub async fn check_runnable(
    store: &Store,
    mappings: &[CheckedMapping],
) -> Result<(), MappingError> {
    for checked in mappings {
        let mapping = &checked.mapping;
        if mapping.object == ObjectType::Companies {
            // The company engine syncs crm-sync's own `companies` table (name, domain) only.
            return Err(MappingError::Mismatch {
                key: format!("{}.object", mapping.key),
                problem: "mapping companies is not supported yet: crm-sync syncs its own \
                          `companies` table (name and domain) with HubSpot's companies; remove \
                          this entry"
                    .to_owned(),
            });
        }
        if mapping.object != ObjectType::Contacts || is_built_in(mapping) {
            continue;
        }
        key_kind(store, mapping).await?;
    }
    Ok(())
}

/// How the key column of `mapping`'s table compares, or why it cannot be a key here.
async fn key_kind(store: &Store, mapping: &ObjectMapping) -> Result<KeyKind, MappingError> {
    let key = format!("{}.key_column", mapping.key);
    let info = store
        .table_info(&mapping.table)
        .await
        .map_err(|source| MappingError::Store {
            key: mapping.key.clone(),
            source,
        })?;
    let kind = info
        .as_ref()
        .and_then(|i| i.column(&mapping.key_column))
        .map(|c| c.kind.clone());
    match kind {
        Some(ColumnKind::Integer) => Ok(KeyKind::Integer),
        Some(ColumnKind::Text) => Ok(KeyKind::Text),
        other => Err(MappingError::Mismatch {
            key,
            problem: format!(
                "the key column \"{}\" is {}; crm-sync syncs tables keyed by a whole number or \
                 text (cast it in a view)",
                mapping.key_column,
                other.map_or("missing".to_owned(), |k| format!(
                    "of type {}",
                    k.describe()
                ))
            ),
        }),
    }
}

/// The column of `mapping`'s table that also receives the HubSpot id, with how it takes one
/// (start-up checked that it exists on a table, holds text or whole numbers, and is no
/// mapped field's).
async fn id_column(
    store: &Store,
    mapping: &ObjectMapping,
) -> Result<Option<(ColumnName, KeyKind)>, RunError> {
    let HubSpotIdStore::Column(column) = &mapping.hubspot_id else {
        return Ok(None);
    };
    let info = store.table_info(&mapping.table).await?;
    let kind = info
        .as_ref()
        .and_then(|i| i.column(column))
        .map(|c| c.kind.clone());
    match kind {
        Some(ColumnKind::Integer) => Ok(Some((column.clone(), KeyKind::Integer))),
        Some(ColumnKind::Text) => Ok(Some((column.clone(), KeyKind::Text))),
        _ => Err(RunError::fatal(format!(
            "{}.hubspot_id_column: column \"{column}\" of {} is missing or holds neither text nor \
             whole numbers",
            mapping.key, mapping.table
        ))),
    }
}

/// A user mapping ready for a job: its properties exist in HubSpot and each field knows both
/// its types.
#[derive(Debug, Clone)]
pub(crate) struct Mapped {
    /// The mapping.
    pub checked: CheckedMapping,
    /// The fields, in the mapping's order (= [`LocalTable::columns`] order; the id column,
    /// when there is one, comes after them).
    pub fields: Vec<TypedField>,
    /// The table as the store reads it.
    pub table: LocalTable,
    /// The position of the field mapped to `email` in [`Mapped::fields`].
    pub email: usize,
    /// The column that also receives each row's HubSpot id (`hubspot_id_column`), and how it
    /// takes one; `None`: the id is kept in `object_links` only.
    pub id_column: Option<(ColumnName, KeyKind)>,
    /// The property calls preparing it made (and, in a dry run, the creates it would make),
    /// for a dry run's plan.
    pub property_plan: Plan,
}

impl Mapped {
    /// Checks the properties (creating them when allowed; a dry run only says it would) and
    /// the key column.
    async fn prepare(
        ctx: &SyncContext,
        store: &Store,
        checked: &CheckedMapping,
        dry_run: bool,
    ) -> Result<Self, RunError> {
        let ready = if dry_run {
            check_properties(&ctx.hubspot, checked).await
        } else {
            ensure_properties(&ctx.hubspot, checked).await
        }
        .map_err(|e| e.into_run_error())?;
        for created in &ready.created {
            if dry_run {
                tracing::info!(property = %created, key = %checked.mapping.key, "a dry run: the real run creates this HubSpot property");
            } else {
                tracing::info!(property = %created, key = %checked.mapping.key, "created a HubSpot property");
            }
        }
        let key_kind = key_kind(store, &checked.mapping)
            .await
            .map_err(|e| RunError::fatal(e.to_string()))?;
        let id_column = id_column(store, &checked.mapping).await?;
        let email = ready
            .fields
            .iter()
            .position(|f| f.field.property.as_str() == "email")
            .ok_or_else(|| {
                RunError::fatal(format!(
                    "{}.fields: a contacts mapping must map the property \"email\"",
                    checked.mapping.key
                ))
            })?;
        // The id column is read last, after the fields (whose values keep their positions).
        let columns: Vec<ColumnName> = ready
            .fields
            .iter()
            .map(|f| f.field.column.clone())
            .chain(id_column.iter().map(|(c, _)| c.clone()))
            .collect();
        Ok(Self {
            table: LocalTable {
                object: ObjectType::Contacts.path_name(),
                table: checked.mapping.table.clone(),
                key: checked.mapping.key_column.clone(),
                key_kind,
                columns,
            },
            checked: checked.clone(),
            property_plan: property_plan(checked, &ready.created),
            id_column,
            fields: ready.fields,
            email,
        })
    }

    /// The properties of the fields that travel in `direction`'s sense.
    fn properties(&self, sent: bool) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| {
                let d = f.field.flow.direction();
                if sent {
                    d.writes_to_hubspot()
                } else {
                    d.writes_locally()
                }
            })
            .map(|f| f.field.property.as_str().to_owned())
            .collect()
    }

    /// The `email` column.
    fn email_column(&self) -> &ColumnName {
        &self.fields[self.email].field.column
    }

    /// The `email` property.
    fn email_property(&self) -> &PropertyName {
        &self.fields[self.email].field.property
    }

    /// The `hubspot_id_column` value for `id` (`None`: cleared), when the mapping has one.
    fn id_value(&self, id: Option<&HsObjectId>) -> Option<(ColumnName, ColumnValue)> {
        let (column, kind) = self.id_column.as_ref()?;
        let value = match (id, kind) {
            (None, _) => ColumnValue::Null,
            (Some(id), KeyKind::Text) => ColumnValue::Text(id.0.clone()),
            (Some(id), KeyKind::Integer) => match id.0.parse() {
                Ok(n) => ColumnValue::Integer(n),
                Err(_) => {
                    // HubSpot's ids are numbers; one that is not cannot fill the column.
                    tracing::warn!(%id, %column, "a HubSpot id that is not a number leaves the id column empty");
                    ColumnValue::Null
                }
            },
        };
        Some((column.clone(), value))
    }

    /// The id `record`'s `hubspot_id_column` should hold when it holds another: its link's
    /// HubSpot id, or none once HubSpot deleted the record. Rows without a link are left as
    /// they are; `None` also when the mapping has no id column or the column is right.
    fn id_drift(&self, record: &LocalRecord) -> Option<Option<HsObjectId>> {
        self.id_column.as_ref()?;
        let link = record.link.as_ref()?;
        let held = record.values.get(self.fields.len()).cloned().flatten();
        let expected = if link.deleted {
            None
        } else {
            link.hs_object_id.clone()
        };
        (held.as_deref() != expected.as_ref().map(|id| id.0.as_str())).then_some(expected)
    }

    /// Writes each row's new HubSpot id (`None`: cleared) into `hubspot_id_column`, in `tx`;
    /// nothing when the mapping has none.
    async fn write_ids(
        &self,
        tx: &mut Tx,
        ids: &[(String, Option<HsObjectId>)],
    ) -> Result<(), StoreError> {
        let Some((column, kind)) = &self.id_column else {
            return Ok(());
        };
        let values: Vec<(String, Option<String>)> = ids
            .iter()
            .map(|(key, id)| {
                let value = match self.id_value(id.as_ref()) {
                    Some((_, ColumnValue::Text(t))) => Some(t),
                    Some((_, ColumnValue::Integer(n))) => Some(n.to_string()),
                    _ => None,
                };
                (key.clone(), value)
            })
            .collect();
        // One statement for the page, not one per row.
        tx.update_local_column(&self.table, column, *kind, &values)
            .await
    }

    /// The record's label in errors: `users.id=7`.
    fn label(&self, key: &str) -> String {
        format!("{}.{}={key}", self.table.table, self.table.key)
    }
}

/// The property calls of preparing `checked`: one read per field, one create per property
/// made (or, in a dry run, that would be).
fn property_plan(checked: &CheckedMapping, created: &[PropertyName]) -> Plan {
    let mut plan = Plan::default();
    plan.call("property_read", checked.fields.len() as u64);
    plan.call("property_create", created.len() as u64);
    plan
}

/// Runs `job` on the user mapping `checked`; a dry run makes the same reads and writes
/// nothing but the job row.
pub async fn run(
    ctx: &SyncContext,
    checked: &CheckedMapping,
    job: &Job,
    progress: &Progress,
) -> Result<(), RunError> {
    let mapped = Mapped::prepare(ctx, progress.store(), checked, job.spec.dry_run).await?;
    match job.spec.action {
        JobAction::Push { mode } => push::run(ctx, &mapped, mode, job.spec.dry_run, progress).await,
        // A webhook's pull reads the records webhooks named, as for the built-in table.
        JobAction::Pull { .. } if job.trigger == Trigger::Webhook => {
            pull::run_webhook(ctx, &mapped, progress).await
        }
        JobAction::Pull { incremental, .. } => {
            pull::run(ctx, &mapped, incremental, job.spec.dry_run, progress).await
        }
    }
}
