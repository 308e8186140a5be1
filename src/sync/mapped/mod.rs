//! The engine of a mapping to a table crm-sync does not own (`[[sync.objects]]` naming the
//! user's own table): contacts or companies pushed from and pulled into that table through the
//! mapped fields ([`remote`] makes the calls of either object), with the sync state in
//! crm-sync's `object_links` table (see [`crate::store::LocalTable`]) — the user's table gets
//! no trigger and no column. A record is found again by its [`Identity`].
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
//! A contacts mapping may name a `company_column`: `associations` syncs each row's company
//! with HubSpot's primary company, after the rows of a push and of a full pull, and with each
//! page of an incremental or webhook pull.
//!
//! For a field syncing both ways, the value both sides last agreed on (kept per property in
//! the link) says which side changed since: only the side that changed wins, and when both
//! did, the field's owner.
//!
//! The built-in contacts mapping keeps its own engine ([`crate::sync::push`],
//! [`crate::sync::pull`]), and crm-sync's own `companies` table the company engine
//! ([`crate::sync::companies`]); [`user_mapping`] tells them apart.

pub(crate) mod associations;
pub mod pull;
pub mod push;
mod remote;
mod values;

use std::collections::{BTreeMap, HashMap};

use crate::hubspot::{HubSpotClient, ObjectType};
use crate::ids::{ContactId, HsObjectId};
use crate::jobs::model::{Job, JobAction, Plan, SyncObject, Trigger};
use crate::jobs::{Progress, RunError};
use crate::mapping::convert::TypedField;
use crate::mapping::properties::{ReadyMapping, check_properties, ensure_properties};
use crate::mapping::{
    CheckedMapping, ColumnName, HubSpotIdStore, MappingError, MatchKey, ObjectMapping,
};
use crate::store::{
    ColumnKind, ColumnValue, KeyKind, LocalRecord, LocalTable, Store, StoreError, Tx,
};
use crate::sync::SyncContext;
use crate::sync::companies::COMPANY_KEY;
use crate::sync::keys::ExternalKeys;
use remote::{Record, Remote};

/// Contacts' identity property.
const EMAIL: &str = "email";

/// HubSpot's read-only list of a contact's other emails (`;`-separated), which its look-up by
/// email answers to as well.
const ADDITIONAL_EMAILS: &str = "hs_additional_emails";

/// The mapping of `object` when it is one this engine runs (not the built-in contacts one).
pub fn user_mapping(ctx: &SyncContext, object: SyncObject) -> Option<&CheckedMapping> {
    let object = match object {
        SyncObject::Contacts => ObjectType::Contacts,
        SyncObject::Companies => ObjectType::Companies,
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
        if is_built_in(mapping) {
            if mapping.company.is_some() {
                // Its engine syncs `contacts.company_id` already; a second column would be
                // silently ignored.
                return Err(MappingError::Mismatch {
                    key: mapping.company_key(),
                    problem: "the built-in contacts table syncs its company (contacts.company_id) \
                              on its own; remove company_column"
                        .to_owned(),
                });
            }
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

/// What finds a row's HubSpot record again besides its id (after a lost answer, a kill, or
/// for a row never linked): a value HubSpot keeps unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    /// A mapped field whose property HubSpot keeps unique (contacts' `email`, a company
    /// property created with unique values), at this position of [`Mapped::fields`];
    /// `fold_case`: compared without case (email).
    Field { at: usize, fold_case: bool },
    /// crm-sync's own unique external-key property of companies ([`COMPANY_KEY`]), holding
    /// `<prefix><local key>`; the prefix names the installation and the table, so that no
    /// other database or table claims the record.
    ExternalKey { prefix: String },
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
    /// What finds a row's record again.
    pub identity: Identity,
    /// The column that also receives each row's HubSpot id (`hubspot_id_column`), and how it
    /// takes one; `None`: the id is kept in `object_links` only.
    pub id_column: Option<(ColumnName, KeyKind)>,
    /// The contact's primary company (`company_column`), when the mapping syncs it.
    pub company: Option<associations::MappedCompany>,
    /// The property calls preparing it made (and, in a dry run, the creates it would make),
    /// for a dry run's plan.
    pub property_plan: Plan,
    /// Whether the external-key property exists in HubSpot (a dry run does not create it:
    /// until it exists, nothing can be found by it). Always true for a field identity.
    pub identity_exists: bool,
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
        let mapping = &checked.mapping;
        let key_kind = key_kind(store, mapping)
            .await
            .map_err(|e| RunError::fatal(e.to_string()))?;
        let id_column = id_column(store, mapping).await?;
        let company = associations::MappedCompany::of(store, checked, &ctx.objects).await?;
        let mut property_plan = property_plan(checked, &ready);
        let (identity, identity_exists) = match &mapping.match_key {
            MatchKey::Property(property) => {
                let at = ready
                    .fields
                    .iter()
                    .position(|f| f.field.property == *property)
                    .ok_or_else(|| {
                        RunError::fatal(format!(
                            "{}.match_key: the match key \"{property}\" must be one of the \
                             mapping's fields",
                            mapping.key
                        ))
                    })?;
                let fold_case = property.as_str() == "email";
                (Identity::Field { at, fold_case }, true)
            }
            MatchKey::ExternalKey => {
                let exists = external_key_property(ctx, dry_run, &mut property_plan).await?;
                let keys = ExternalKeys::new(&store.installation().await?);
                let prefix = format!("{}:{}:", keys.installation(), mapping.table);
                (Identity::ExternalKey { prefix }, exists)
            }
        };
        // The id column is read last, after the fields (whose values keep their positions).
        let columns: Vec<ColumnName> = ready
            .fields
            .iter()
            .map(|f| f.field.column.clone())
            .chain(id_column.iter().map(|(c, _)| c.clone()))
            .collect();
        Ok(Self {
            table: LocalTable {
                object: mapping.object.path_name(),
                table: mapping.table.clone(),
                key: mapping.key_column.clone(),
                key_kind,
                columns,
            },
            checked: checked.clone(),
            property_plan,
            id_column,
            company,
            fields: ready.fields,
            identity,
            identity_exists,
        })
    }

    /// The mapped object, singular, for messages: `contact`, `company`.
    fn remote_noun(&self) -> &'static str {
        match self.checked.mapping.object {
            ObjectType::Contacts => "contact",
            ObjectType::Companies => "company",
        }
    }

    /// The property holding the last modification time of the mapped object's records.
    fn modified_property(&self) -> &'static str {
        remote::modified_property(self.checked.mapping.object)
    }

    /// The HubSpot calls of the mapped object.
    fn remote<'a>(&self, client: &'a HubSpotClient) -> Remote<'a> {
        Remote::new(client, self.checked.mapping.object)
    }

    /// The property that finds a record again (`email`, a unique property, or crm-sync's
    /// external key).
    fn identity_property(&self) -> &str {
        match &self.identity {
            Identity::Field { at, .. } => self.fields[*at].field.property.as_str(),
            Identity::ExternalKey { .. } => COMPANY_KEY,
        }
    }

    /// An identity value as compared: trimmed, and without case for email.
    fn normalize(&self, value: &str) -> Option<String> {
        let value = value.trim();
        let value = match &self.identity {
            Identity::Field {
                fold_case: true, ..
            } => value.to_lowercase(),
            _ => value.to_owned(),
        };
        (!value.is_empty()).then_some(value)
    }

    /// The identity of the row `key` whose outgoing values are `values`.
    fn row_identity(&self, key: &str, values: &BTreeMap<String, String>) -> Option<String> {
        match &self.identity {
            Identity::Field { .. } => values
                .get(self.identity_property())
                .and_then(|v| self.normalize(v)),
            Identity::ExternalKey { prefix } => Some(format!("{prefix}{key}")),
        }
    }

    /// The identity a HubSpot record carries.
    fn record_identity(&self, record: &Record) -> Option<String> {
        record
            .property(self.identity_property())
            .and_then(|v| self.normalize(v))
    }

    /// Whether a record looked up by its identity answers to its additional emails too:
    /// contacts by email (HubSpot's look-up by email finds a contact by any of them, and
    /// refuses to create another with one).
    fn answers_to_additional_emails(&self) -> bool {
        self.checked.mapping.object == ObjectType::Contacts && self.identity_property() == EMAIL
    }

    /// The identities a record answers to besides its own ([`Mapped::record_identity`]): its
    /// additional emails, when [`Mapped::answers_to_additional_emails`].
    fn additional_identities(&self, record: &Record) -> Vec<String> {
        if !self.answers_to_additional_emails() {
            return Vec::new();
        }
        record
            .property(ADDITIONAL_EMAILS)
            .into_iter()
            .flat_map(|v| v.split(';'))
            .filter_map(|v| self.normalize(v))
            .collect()
    }

    /// Properties a create adds to the row's values: the external key (a field identity is
    /// among the values already).
    fn create_extras(&self, key: &str) -> Option<(String, String)> {
        match &self.identity {
            Identity::ExternalKey { prefix } => {
                Some((COMPANY_KEY.to_owned(), format!("{prefix}{key}")))
            }
            Identity::Field { .. } => None,
        }
    }

    /// The local keys of the rows with these identities, by identity. An external key names
    /// its row itself (whether that row still exists is read with the rows).
    async fn keys_by_identity(
        &self,
        store: &Store,
        identities: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        Ok(match &self.identity {
            Identity::Field { at, fold_case } => {
                let column = &self.fields[*at].field.column;
                let pairs = if *fold_case {
                    store
                        .local_keys_by_email(&self.table, column, identities)
                        .await?
                } else {
                    store
                        .local_keys_by_text(&self.table, column, identities)
                        .await?
                };
                pairs.into_iter().collect()
            }
            Identity::ExternalKey { prefix } => identities
                .iter()
                .filter_map(|v| {
                    v.strip_prefix(prefix.as_str())
                        .map(|k| (v.clone(), k.to_owned()))
                })
                .collect(),
        })
    }

    /// The local contact id for job JSON, when the mapping is of contacts and the key is a
    /// number.
    fn contact_id(&self, key: &str) -> Option<ContactId> {
        (self.checked.mapping.object == ObjectType::Contacts)
            .then(|| key.parse().ok().map(ContactId))
            .flatten()
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

    /// The column of a field identity (`None`: the external key, which needs no column).
    fn identity_column(&self) -> Option<&ColumnName> {
        match &self.identity {
            Identity::Field { at, .. } => Some(&self.fields[*at].field.column),
            Identity::ExternalKey { .. } => None,
        }
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

/// Makes sure crm-sync's company external-key property exists (a dry run only reads it and
/// counts the create the real run would make); whether it exists now.
async fn external_key_property(
    ctx: &SyncContext,
    dry_run: bool,
    plan: &mut Plan,
) -> Result<bool, RunError> {
    plan.call("property_read", 1);
    if dry_run {
        let exists = crate::sync::companies::key_property_exists(&ctx.hubspot).await?;
        if !exists {
            plan.call("property_create", 1);
        }
        Ok(exists)
    } else {
        crate::sync::companies::ensure_key_property(&ctx.hubspot).await?;
        Ok(true)
    }
}

/// The property calls of preparing `checked`: one read per field, one create per property
/// made (or, in a dry run, that would be), and the property group's read and create.
fn property_plan(checked: &CheckedMapping, ready: &ReadyMapping) -> Plan {
    let mut plan = Plan::default();
    // The property group's read and create count as property calls.
    let (group_reads, group_creates) = ready.group_calls;
    plan.call("property_read", checked.fields.len() as u64 + group_reads);
    plan.call(
        "property_create",
        ready.created.len() as u64 + group_creates,
    );
    plan
}

/// The user mapping of `object` ready for a webhook pull's batches, when it has one.
pub(crate) async fn prepare_user(
    ctx: &SyncContext,
    store: &Store,
    object: SyncObject,
) -> Result<Option<Mapped>, RunError> {
    match user_mapping(ctx, object) {
        Some(checked) => Ok(Some(Mapped::prepare(ctx, store, checked, false).await?)),
        None => Ok(None),
    }
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
        // A webhook's pull drains what webhooks named, of every object, through the drain
        // that hands each mapped object's batches back here.
        JobAction::Pull { .. } if job.trigger == Trigger::Webhook => {
            crate::sync::webhook_pull::run(ctx, job, progress).await
        }
        JobAction::Pull { incremental, .. } => {
            pull::run(ctx, &mapped, incremental, job.spec.dry_run, progress).await
        }
    }
}
