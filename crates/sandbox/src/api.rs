//! Handlers of HubSpot's CRM v3 records (contacts and companies), properties and
//! account-info operations; the v4 associations are in `assoc_api`.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use poem::Response;
use poem::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::assoc_api::{link_created, planned_links};
use super::associations::AssocChange;
use super::clock::{iso_millis, now_ms};
use super::crm::{Automatic, Crm};
use super::errors::{ApiError, standard_error};
use super::objects::CrmObject;
use super::properties::{
    PropertyDef, PropertyDefError, PropertyGroup, PropertyOption, PropertyPatch, PropertyType,
};
use super::routes::{ApiOp, PropertyOp, RecordOp};
use super::search::{SearchRequest, search};
use super::state::{State, lock};
use super::store::{
    Change, CreateInput, IdKey, ItemError, KeyUse, KeyedInput, WriteError, Written, not_found_item,
};
use super::variants::{EmptyValues, MissingIds};
use super::webhooks::Actor;
use super::wire::{
    BatchOut, BatchReadBody, CollectionOut, CreateItem, GdprBody, IdItem, Inputs, KeyedItem,
    MergeBody, NextPage, ObjectOut, Paging, Projection, PropertiesBody, json, parse_json,
    property_strings,
};

/// Most records per list page.
const MAX_LIST_LIMIT: usize = 100;

pub(crate) type ApiResult = Result<Response, ApiError>;

pub(crate) fn no_content() -> Response {
    Response::builder().status(StatusCode::NO_CONTENT).finish()
}

/// Runs one operation.
pub(crate) async fn dispatch(state: &Arc<State>, op: ApiOp, query: &str, body: &[u8]) -> ApiResult {
    let q = Query::parse(query);
    match op {
        ApiOp::Records(object, op) => records(state, object, op, &q, body),
        ApiOp::Properties(object, op) => properties(state, object, op, &q, body),
        ApiOp::Associations { from, to, op } => {
            super::assoc_api::dispatch(state, from, to, op, &q, body)
        }
        ApiOp::AccountDetails => Ok(json(StatusCode::OK, &account_details(state))),
        ApiOp::DailyUsage => Ok(json(StatusCode::OK, &daily_usage(state))),
    }
}

fn records(state: &State, object: CrmObject, op: RecordOp, q: &Query, body: &[u8]) -> ApiResult {
    match op {
        RecordOp::List => list(state, object, q),
        RecordOp::Create => create(state, object, body),
        RecordOp::Get(id) => get(state, object, &id, q),
        RecordOp::Update(id) => update(state, object, &id, q, body),
        RecordOp::Archive(id) => {
            let now = now_ms();
            let mut crm = lock(&state.store);
            let changes = crm
                .object_mut(object)
                .archive_one(&IdKey::ObjectId, &id, now);
            let effects = settle(state, &mut crm, object, changes, now);
            drop(crm);
            effects.publish(state);
            Ok(no_content())
        }
        RecordOp::BatchRead => batch_read(state, object, q, body),
        RecordOp::BatchCreate => batch_create(state, object, body),
        RecordOp::BatchUpdate => batch_keyed(state, object, body, false),
        RecordOp::BatchUpsert => batch_keyed(state, object, body, true),
        RecordOp::BatchArchive => batch_archive(state, object, body),
        RecordOp::Search => run_search(state, object, body),
        RecordOp::Merge => merge(state, object, body),
        RecordOp::GdprDelete => gdpr_delete(state, object, body),
    }
}

fn properties(
    state: &State,
    object: CrmObject,
    op: PropertyOp,
    q: &Query,
    body: &[u8],
) -> ApiResult {
    match op {
        PropertyOp::List => {
            let crm = lock(&state.store);
            let results: Vec<Value> = crm
                .object(object)
                .catalog
                .list(q.flag("archived"))
                .map(PropertyDef::to_json)
                .collect();
            Ok(json(StatusCode::OK, &json!({ "results": results })))
        }
        PropertyOp::Create => create_property(state, object, body),
        PropertyOp::Get(name) => {
            let crm = lock(&state.store);
            let def = crm
                .object(object)
                .catalog
                .get_any(&name)
                .filter(|d| d.archived_ms.is_some() == q.flag("archived"))
                .ok_or_else(|| property_not_found(object, &name))?;
            Ok(json(StatusCode::OK, &def.to_json()))
        }
        PropertyOp::Update(name) => update_property(state, object, &name, body),
        PropertyOp::Archive(name) => {
            lock(&state.store)
                .object_mut(object)
                .catalog
                .archive(&name, now_ms())
                .map_err(|e| property_error(object, e))?;
            Ok(no_content())
        }
        PropertyOp::ListGroups => {
            let crm = lock(&state.store);
            let results: Vec<Value> = crm
                .object(object)
                .catalog
                .groups()
                .map(PropertyGroup::to_json)
                .collect();
            Ok(json(StatusCode::OK, &json!({ "results": results })))
        }
        PropertyOp::CreateGroup => create_group(state, object, body),
        PropertyOp::GetGroup(name) => {
            let crm = lock(&state.store);
            let group = crm
                .object(object)
                .catalog
                .group(&name)
                .ok_or_else(|| group_not_found(object, &name))?;
            Ok(json(StatusCode::OK, &group.to_json()))
        }
    }
}

/// What a write changed, published once the store's lock is released.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    object: Option<CrmObject>,
    records: Vec<Change>,
    associations: Vec<AssocChange>,
    automatic: Automatic,
}

impl Effects {
    /// Association changes alone (the v4 calls).
    pub(crate) fn associations(associations: Vec<AssocChange>) -> Self {
        Self {
            associations,
            ..Self::default()
        }
    }

    /// Sends the webhooks: the caller's changes, then HubSpot's own automation.
    pub(crate) fn publish(&self, state: &State) {
        let Some(w) = &state.webhooks else {
            return;
        };
        if let Some(object) = self.object {
            w.publish(object, &self.records);
        }
        w.publish_associations(None, &self.associations);
        w.publish_as(
            &Actor::HubSpot,
            CrmObject::Companies,
            &self.automatic.companies,
        );
        w.publish_associations(Some(&Actor::HubSpot), &self.automatic.associations);
    }
}

/// The consequences of record changes of `object` beyond the records themselves: merged
/// records' associations move to the survivor, and contacts may be associated with their
/// email domain's company when the account says so.
fn settle(
    state: &State,
    crm: &mut Crm,
    object: CrmObject,
    records: Vec<Change>,
    now: i64,
) -> Effects {
    let associations = crm.follow(object, &records);
    let automatic = if object == CrmObject::Contacts && state.auto_associates() {
        crm.auto_associate(&records, now)
    } else {
        Automatic::default()
    };
    Effects {
        object: Some(object),
        records,
        associations,
        automatic,
    }
}

/// Query parameters, with HubSpot's comma-separated and repeated lists.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(raw: &str) -> Self {
        Self(
            url::form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn list(&self, key: &str) -> Option<Vec<String>> {
        let items: Vec<String> = self
            .0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(',').map(|s| s.trim().to_owned()))
            .filter(|s| !s.is_empty())
            .collect();
        (!items.is_empty()).then_some(items)
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

pub(crate) fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::Invalid(message) => ApiError::validation(message),
        WriteError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "CONFLICT", message),
        WriteError::DuplicateIds(ids) => ApiError::validation(format!(
            "Duplicate IDs found in batch input: [{}]. IDs must be unique",
            ids.join(", ")
        ))
        .context("ids", ids),
        WriteError::TooLarge(n) => ApiError::validation(format!(
            "Batch input has {n} inputs; the limit is {}.",
            super::store::MAX_BATCH
        )),
        WriteError::BadIdProperty(message) => ApiError::validation(message),
        WriteError::NotFound(id) => ApiError::object_not_found(&id),
    }
}

pub(crate) fn item_errors(errors: &[ItemError]) -> Vec<Value> {
    errors
        .iter()
        .map(|e| standard_error(e.category, &e.message, &e.context))
        .collect()
}

// ---- list / single record ------------------------------------------------------------

pub(crate) fn encode_after(id: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.to_string())
}

pub(crate) fn decode_after(raw: &str) -> Option<u64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .ok()?;
    String::from_utf8(bytes).ok()?.trim().parse().ok()
}

fn list(state: &State, object: CrmObject, q: &Query) -> ApiResult {
    let limit = match q.get("limit") {
        None => 10,
        Some(raw) => match raw.parse::<usize>() {
            Ok(0) => 10,
            Ok(n) if n <= MAX_LIST_LIMIT => n,
            _ => {
                return Err(ApiError::validation(format!(
                    "limit must be between 1 and {MAX_LIST_LIMIT}, got {raw}"
                )));
            }
        },
    };
    let after = match q.get("after").filter(|a| !a.is_empty()) {
        None => 0,
        Some(raw) => decode_after(raw).ok_or_else(|| {
            ApiError::validation(format!(
                "after must be a paging cursor from a previous page, got {raw}"
            ))
        })?,
    };
    let empty = state.variants().empty_values;
    let history = q.list("propertiesWithHistory");
    let (page, projection) = {
        let crm = lock(&state.store);
        let store = crm.object(object);
        let projection = Projection::from_list(q.list("properties")).known(&store.catalog);
        (store.list(after, limit, q.flag("archived")), projection)
    };
    let results = page
        .records
        .iter()
        .map(|c| {
            ObjectOut::from_record(object, c, &projection, empty).with_history(c, history.as_ref())
        })
        .collect();
    let paging = page.next.map(|id| {
        let after = encode_after(id);
        Paging {
            next: NextPage {
                link: format!("?after={after}"),
                after,
            },
        }
    });
    Ok(json(
        StatusCode::OK,
        &CollectionOut {
            total: None,
            results,
            paging,
        },
    ))
}

/// How reads may name records by `idProperty`.
fn read_key(state: &State) -> KeyUse {
    KeyUse::Read(state.company_variants().domain_lookup)
}

fn get(state: &State, object: CrmObject, id: &str, q: &Query) -> ApiResult {
    let crm = lock(&state.store);
    let store = crm.object(object);
    let key = store
        .id_key(q.get("idProperty"), read_key(state))
        .map_err(write_error)?;
    let contact = store
        .resolve_for_read(&key, id, q.flag("archived"))
        .ok_or_else(|| ApiError::object_not_found(id))?;
    // A merged-away id reads as its survivor in every variant (only batch read may leave it
    // out): a single GET has no way to say "left out".
    let projection = Projection::from_list(q.list("properties")).known(&store.catalog);
    let out = ObjectOut::from_record(object, contact, &projection, state.variants().empty_values)
        .with_history(contact, q.list("propertiesWithHistory").as_ref());
    Ok(json(StatusCode::OK, &out))
}

fn create(state: &State, object: CrmObject, body: &[u8]) -> ApiResult {
    let v = state.variants();
    let input: PropertiesBody = parse_json(body)?;
    let values = property_strings(input.properties)?;
    let written = Projection::Written(values.keys().cloned().collect());
    let now = now_ms();
    let mut crm = lock(&state.store);
    let links = planned_links(&crm, object, &input.associations)?;
    let (record, changes) = crm
        .object_mut(object)
        .create_one(values, now, v.validation)
        .map_err(write_error)?;
    let linked = link_created(&mut crm, object, record.id, &links);
    let mut effects = settle(state, &mut crm, object, changes, now);
    effects.associations.extend(linked);
    drop(crm);
    effects.publish(state);
    Ok(json(
        StatusCode::CREATED,
        &ObjectOut::from_record(object, &record, &written, v.empty_values),
    ))
}

fn update(state: &State, object: CrmObject, id: &str, q: &Query, body: &[u8]) -> ApiResult {
    let v = state.variants();
    let input: PropertiesBody = parse_json(body)?;
    let values = property_strings(input.properties)?;
    let written = Projection::Written(values.keys().cloned().collect());
    let now = now_ms();
    let mut crm = lock(&state.store);
    let store = crm.object_mut(object);
    let key = store
        .id_key(q.get("idProperty"), read_key(state))
        .map_err(write_error)?;
    let (record, changes) = store
        .update_one(&key, id, values, now, v.validation)
        .map_err(write_error)?;
    let effects = settle(state, &mut crm, object, changes, now);
    drop(crm);
    effects.publish(state);
    Ok(json(
        StatusCode::OK,
        &ObjectOut::from_record(object, &record, &written, v.empty_values),
    ))
}

// ---- batches -------------------------------------------------------------------------

fn batch_read(state: &State, object: CrmObject, q: &Query, body: &[u8]) -> ApiResult {
    let started = now_ms();
    let v = state.variants();
    let input: BatchReadBody = parse_json(body)?;
    let ids: Vec<String> = input.inputs.iter().map(|i| i.id.text()).collect();
    let (mut results, missing) = {
        let crm = lock(&state.store);
        let store = crm.object(object);
        let projection = Projection::from_list(input.properties).known(&store.catalog);
        let key = store
            .id_key(input.id_property.as_deref(), read_key(state))
            .map_err(write_error)?;
        let (found, missing) = store
            .batch_read(&key, &ids, q.flag("archived"), v.missing_ids)
            .map_err(write_error)?;
        let results: Vec<ObjectOut> = found
            .iter()
            .map(|c| {
                ObjectOut::from_record(object, c, &projection, v.empty_values)
                    .with_history(c, input.properties_with_history.as_ref())
            })
            .collect();
        (results, missing)
    };
    let errors = if missing.is_empty() || v.missing_ids == MissingIds::Omitted {
        Vec::new()
    } else {
        item_errors(&[not_found_item(object, &missing, None)])
    };
    state.shuffler.arrange(v.result_order, &mut results);
    batch_answer(
        BatchOut::new(results, errors, started, now_ms()),
        StatusCode::OK,
    )
}

fn batch_answer(out: BatchOut, ok: StatusCode) -> ApiResult {
    let status = if out.is_partial() {
        StatusCode::MULTI_STATUS
    } else {
        ok
    };
    Ok(json(status, &out))
}

fn batch_create(state: &State, object: CrmObject, body: &[u8]) -> ApiResult {
    let started = now_ms();
    let input: Inputs<CreateItem> = parse_json(body)?;
    let mut links = Vec::with_capacity(input.inputs.len());
    let mut inputs = Vec::with_capacity(input.inputs.len());
    for i in input.inputs {
        links.push(i.associations);
        inputs.push(CreateInput {
            values: property_strings(i.properties)?,
            trace: i.object_write_trace_id,
        });
    }
    let v = state.variants();
    let mut crm = lock(&state.store);
    // Checked before anything is created: a bad association refuses the whole batch.
    let links = links
        .iter()
        .map(|l| planned_links(&crm, object, l))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let mut outcome = crm
        .object_mut(object)
        .batch_create(inputs, started, &v)
        .map_err(write_error)?;
    let linked: Vec<AssocChange> = outcome
        .written
        .iter()
        .flat_map(|w| {
            let planned = links.get(w.input).map_or(&[][..], Vec::as_slice);
            link_created(&mut crm, object, w.contact.id, planned)
        })
        .collect();
    let mut effects = settle(
        state,
        &mut crm,
        object,
        std::mem::take(&mut outcome.changes),
        started,
    );
    effects.associations.extend(linked);
    drop(crm);
    effects.publish(state);
    let mut results = written_out(object, &outcome.written, false, v.empty_values);
    state.shuffler.arrange(v.result_order, &mut results);
    batch_answer(
        BatchOut::new(results, item_errors(&outcome.errors), started, now_ms()),
        StatusCode::CREATED,
    )
}

fn batch_keyed(state: &State, object: CrmObject, body: &[u8], upsert: bool) -> ApiResult {
    let started = now_ms();
    let input: Inputs<KeyedItem> = parse_json(body)?;
    let inputs = input
        .inputs
        .into_iter()
        .map(|i| {
            Ok(KeyedInput {
                id: i.id.text(),
                id_property: i.id_property,
                values: property_strings(i.properties)?,
                trace: i.object_write_trace_id,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let v = state.variants();
    let mut crm = lock(&state.store);
    let store = crm.object_mut(object);
    let mut outcome = if upsert {
        store.batch_upsert(inputs, started, &v)
    } else {
        store.batch_update(inputs, started, &v)
    }
    .map_err(write_error)?;
    let effects = settle(
        state,
        &mut crm,
        object,
        std::mem::take(&mut outcome.changes),
        started,
    );
    drop(crm);
    effects.publish(state);
    let mut results = written_out(object, &outcome.written, upsert, v.empty_values);
    state.shuffler.arrange(v.result_order, &mut results);
    batch_answer(
        BatchOut::new(results, item_errors(&outcome.errors), started, now_ms()),
        StatusCode::OK,
    )
}

fn written_out(
    object: CrmObject,
    written: &[Written],
    with_new: bool,
    empty: EmptyValues,
) -> Vec<ObjectOut> {
    written
        .iter()
        .map(|w| {
            let projection = Projection::Written(w.names.clone());
            let mut out = ObjectOut::from_record(object, &w.contact, &projection, empty);
            out.object_write_trace_id = w.trace.clone();
            out.new = with_new.then_some(w.new);
            out
        })
        .collect()
}

fn batch_archive(state: &State, object: CrmObject, body: &[u8]) -> ApiResult {
    let input: Inputs<IdItem> = parse_json(body)?;
    let ids: Vec<String> = input.inputs.iter().map(|i| i.id.text()).collect();
    let now = now_ms();
    let mut crm = lock(&state.store);
    let changes = crm
        .object_mut(object)
        .batch_archive(&ids, now)
        .map_err(write_error)?;
    let effects = settle(state, &mut crm, object, changes, now);
    drop(crm);
    effects.publish(state);
    Ok(no_content())
}

fn run_search(state: &State, object: CrmObject, body: &[u8]) -> ApiResult {
    let v = state.variants();
    let req: SearchRequest = parse_json(body)?;
    let crm = lock(&state.store);
    let store = crm.object(object);
    let projection = Projection::from_list(req.properties.clone()).known(&store.catalog);
    let page = search(store, &req, now_ms()).map_err(ApiError::validation)?;
    let results = page
        .records
        .iter()
        .map(|r| ObjectOut::from_search(object, r, &projection, v.empty_values, v.search_modified))
        .collect();
    let paging = page.next_after.map(|n| Paging {
        next: NextPage {
            after: n.to_string(),
            link: format!("?after={n}"),
        },
    });
    let out = CollectionOut {
        total: Some(page.total),
        results,
        paging,
    };
    drop(crm);
    Ok(json(StatusCode::OK, &out))
}

fn merge(state: &State, object: CrmObject, body: &[u8]) -> ApiResult {
    let input: MergeBody = parse_json(body)?;
    let now = now_ms();
    let mut crm = lock(&state.store);
    let (record, changes) = crm
        .object_mut(object)
        .merge(
            &input.primary_object_id.text(),
            &input.object_id_to_merge.text(),
            now,
            state.company_variants().merge_ids,
        )
        .map_err(write_error)?;
    let effects = settle(state, &mut crm, object, changes, now);
    drop(crm);
    effects.publish(state);
    Ok(json(
        StatusCode::OK,
        &ObjectOut::from_record(
            object,
            &record,
            &Projection::All,
            state.variants().empty_values,
        ),
    ))
}

fn gdpr_delete(state: &State, object: CrmObject, body: &[u8]) -> ApiResult {
    let input: GdprBody = parse_json(body)?;
    let now = now_ms();
    let mut crm = lock(&state.store);
    let store = crm.object_mut(object);
    let key = store
        .id_key(input.id_property.as_deref(), read_key(state))
        .map_err(write_error)?;
    let changes = store
        .purge(&key, &input.object_id.text())
        .map_err(write_error)?;
    // Deleted for good: its associations go too, not only out of reads.
    let forgotten: Vec<AssocChange> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Deleted(id) => Some(*id),
            _ => None,
        })
        .flat_map(|id| crm.associations.forget(object, id))
        .collect();
    let mut effects = settle(state, &mut crm, object, changes, now);
    effects.associations.extend(forgotten);
    drop(crm);
    effects.publish(state);
    Ok(no_content())
}

// ---- properties ----------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PropertyCreateBody {
    name: String,
    label: String,
    #[serde(rename = "type")]
    kind: PropertyType,
    field_type: String,
    group_name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    options: Vec<PropertyOption>,
    #[serde(default)]
    has_unique_value: bool,
    #[serde(default)]
    hidden: bool,
    #[serde(default)]
    form_field: Option<bool>,
    #[serde(default)]
    display_order: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PropertyUpdateBody {
    label: Option<String>,
    description: Option<String>,
    group_name: Option<String>,
    field_type: Option<String>,
    options: Option<Vec<PropertyOption>>,
    hidden: Option<bool>,
    form_field: Option<bool>,
    display_order: Option<i32>,
    #[serde(rename = "type")]
    kind: Option<PropertyType>,
    has_unique_value: Option<bool>,
}

fn create_property(state: &State, object: CrmObject, body: &[u8]) -> ApiResult {
    let b: PropertyCreateBody = parse_json(body)?;
    let def = PropertyDef {
        name: b.name,
        label: b.label,
        kind: b.kind,
        field_type: b.field_type,
        group_name: b.group_name,
        description: b.description.unwrap_or_default(),
        options: b.options,
        has_unique_value: b.has_unique_value,
        hubspot_defined: false,
        read_only_value: false,
        form_field: b.form_field.unwrap_or(false),
        hidden: b.hidden,
        display_order: b.display_order.unwrap_or(-1),
        created_ms: 0,
        updated_ms: 0,
        archived_ms: None,
    };
    let mut crm = lock(&state.store);
    let created = crm
        .object_mut(object)
        .catalog
        .create(def, now_ms())
        .map_err(|e| property_error(object, e))?;
    let location = format!("/crm/v3/properties/{}/{}", object.plural(), created.name);
    let mut resp = json(StatusCode::CREATED, &created.to_json());
    if let Ok(v) = poem::http::HeaderValue::from_str(&location) {
        resp.headers_mut().insert("Location", v);
    }
    Ok(resp)
}

fn update_property(state: &State, object: CrmObject, name: &str, body: &[u8]) -> ApiResult {
    let b: PropertyUpdateBody = parse_json(body)?;
    if b.has_unique_value.is_some() {
        return Err(ApiError::validation(
            "hasUniqueValue cannot be changed after a property is created.",
        ));
    }
    let patch = PropertyPatch {
        label: b.label,
        description: b.description,
        group_name: b.group_name,
        field_type: b.field_type,
        options: b.options,
        hidden: b.hidden,
        form_field: b.form_field,
        display_order: b.display_order,
        kind: b.kind,
    };
    let mut crm = lock(&state.store);
    let def = crm
        .object_mut(object)
        .catalog
        .update(name, patch, now_ms())
        .map_err(|e| property_error(object, e))?;
    Ok(json(StatusCode::OK, &def.to_json()))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupCreateBody {
    name: String,
    label: String,
    #[serde(default)]
    display_order: Option<i32>,
}

fn create_group(state: &State, object: CrmObject, body: &[u8]) -> ApiResult {
    let b: GroupCreateBody = parse_json(body)?;
    let group = PropertyGroup {
        name: b.name,
        label: b.label,
        display_order: b.display_order.unwrap_or(-1),
        archived: false,
    };
    let mut crm = lock(&state.store);
    let created = crm
        .object_mut(object)
        .catalog
        .create_group(group)
        .map_err(|e| match e {
            PropertyDefError::AlreadyExists(name) => ApiError::new(
                StatusCode::CONFLICT,
                "OBJECT_ALREADY_EXISTS",
                format!("A property group named '{name}' already exists."),
            ),
            PropertyDefError::NotFound(name) => group_not_found(object, &name),
            PropertyDefError::Invalid(message) => ApiError::validation(message),
        })?;
    Ok(json(StatusCode::CREATED, &created.to_json()))
}

fn group_not_found(object: CrmObject, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        format!(
            "Unable to find property group {name} for object type {}",
            object.plural()
        ),
    )
}

fn property_not_found(object: CrmObject, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        format!(
            "Unable to find property {name} for object type {}",
            object.plural()
        ),
    )
}

fn property_error(object: CrmObject, e: PropertyDefError) -> ApiError {
    match e {
        PropertyDefError::AlreadyExists(name) => ApiError::new(
            StatusCode::CONFLICT,
            "OBJECT_ALREADY_EXISTS",
            format!("A property named '{name}' already exists."),
        )
        .field("subCategory", "Properties.PROPERTY_WITH_NAME_EXISTS"),
        PropertyDefError::NotFound(name) => property_not_found(object, &name),
        PropertyDefError::Invalid(message) => ApiError::validation(message),
    }
}

// ---- account ---------------------------------------------------------------------------

fn account_details(state: &State) -> Value {
    json!({
        "portalId": state.cfg.portal_id,
        "accountType": "DEVELOPER_TEST",
        "timeZone": "UTC",
        "companyCurrency": "USD",
        "additionalCurrencies": [],
        "utcOffset": "+00:00",
        "utcOffsetMilliseconds": 0,
        "uiDomain": "app.hubspot.com",
        "dataHostingLocation": "na1",
        "portalName": "crm-sync sandbox",
    })
}

fn daily_usage(state: &State) -> Value {
    let now = now_ms();
    let day = 86_400_000;
    let resets = (now / day + 1) * day;
    let mut usage = BTreeMap::new();
    usage.insert("name", json!("private-apps-api-calls-daily"));
    usage.insert("usageLimit", json!(super::limits::DAILY_LIMIT));
    usage.insert("currentUsage", json!(state.limits.daily_used()));
    usage.insert("collectedAt", json!(iso_millis(now)));
    usage.insert("fetchStatus", json!("SUCCESS"));
    usage.insert("resetsAt", json!(iso_millis(resets)));
    json!({ "results": [usage] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_cursors_round_trip_and_are_opaque() {
        let c = encode_after(10_000_000_042);
        assert!(!c.contains("10000000042"));
        assert_eq!(decode_after(&c), Some(10_000_000_042));
        assert_eq!(decode_after("not a cursor!"), None);
    }
}
