//! Handlers of HubSpot's CRM contacts, properties and account-info operations.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use poem::Response;
use poem::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::clock::{iso_millis, now_ms};
use super::errors::{ApiError, standard_error};
use super::properties::{
    PropertyDef, PropertyDefError, PropertyOption, PropertyPatch, PropertyType,
};
use super::routes::ApiOp;
use super::search::{SearchRequest, search};
use super::state::{State, lock};
use super::store::{
    Change, CreateInput, IdKey, ItemError, KeyedInput, WriteError, Written, not_found_item,
};
use super::variants::{EmptyValues, MissingIds};
use super::wire::{
    BatchOut, BatchReadBody, CollectionOut, CreateItem, GdprBody, IdItem, Inputs, KeyedItem,
    MergeBody, NextPage, ObjectOut, Paging, Projection, PropertiesBody, json, parse_json,
    property_strings,
};

/// Most records per list page.
const MAX_LIST_LIMIT: usize = 100;

type ApiResult = Result<Response, ApiError>;

fn no_content() -> Response {
    Response::builder().status(StatusCode::NO_CONTENT).finish()
}

/// Runs one operation.
pub(crate) async fn dispatch(state: &Arc<State>, op: ApiOp, query: &str, body: &[u8]) -> ApiResult {
    let q = Query::parse(query);
    match op {
        ApiOp::List => list(state, &q),
        ApiOp::Create => create(state, body),
        ApiOp::Get(id) => get(state, &id, &q),
        ApiOp::Update(id) => update(state, &id, &q, body),
        ApiOp::Archive(id) => {
            let changes = lock(&state.store).archive_one(&IdKey::ObjectId, &id, now_ms());
            publish(state, &changes);
            Ok(no_content())
        }
        ApiOp::BatchRead => batch_read(state, &q, body),
        ApiOp::BatchCreate => batch_create(state, body),
        ApiOp::BatchUpdate => batch_keyed(state, body, false),
        ApiOp::BatchUpsert => batch_keyed(state, body, true),
        ApiOp::BatchArchive => batch_archive(state, body),
        ApiOp::Search => run_search(state, body),
        ApiOp::Merge => merge(state, body),
        ApiOp::GdprDelete => gdpr_delete(state, body),
        ApiOp::ListProperties => {
            let store = lock(&state.store);
            let results: Vec<Value> = store
                .catalog
                .list(q.flag("archived"))
                .map(PropertyDef::to_json)
                .collect();
            Ok(json(StatusCode::OK, &json!({ "results": results })))
        }
        ApiOp::CreateProperty => create_property(state, body),
        ApiOp::GetProperty(name) => {
            let store = lock(&state.store);
            let def = store
                .catalog
                .get_any(&name)
                .filter(|d| d.archived_ms.is_some() == q.flag("archived"))
                .ok_or_else(|| property_not_found(&name))?;
            Ok(json(StatusCode::OK, &def.to_json()))
        }
        ApiOp::UpdateProperty(name) => update_property(state, &name, body),
        ApiOp::ArchiveProperty(name) => {
            lock(&state.store)
                .catalog
                .archive(&name, now_ms())
                .map_err(property_error)?;
            Ok(no_content())
        }
        ApiOp::AccountDetails => Ok(json(StatusCode::OK, &account_details(state))),
        ApiOp::DailyUsage => Ok(json(StatusCode::OK, &daily_usage(state))),
    }
}

fn publish(state: &State, changes: &[Change]) {
    if let Some(w) = &state.webhooks
        && !changes.is_empty()
    {
        w.publish(changes);
    }
}

/// Query parameters, with HubSpot's comma-separated and repeated lists.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Self {
        Self(
            url::form_urlencoded::parse(raw.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
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

fn write_error(e: WriteError) -> ApiError {
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

fn item_errors(errors: &[ItemError]) -> Vec<Value> {
    errors
        .iter()
        .map(|e| standard_error(e.category, &e.message, &e.context))
        .collect()
}

// ---- list / single record ------------------------------------------------------------

fn encode_after(id: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.to_string())
}

fn decode_after(raw: &str) -> Option<u64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .ok()?;
    String::from_utf8(bytes).ok()?.trim().parse().ok()
}

fn list(state: &State, q: &Query) -> ApiResult {
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
        let store = lock(&state.store);
        let projection = Projection::from_list(q.list("properties")).known(&store.catalog);
        (store.list(after, limit, q.flag("archived")), projection)
    };
    let results = page
        .records
        .iter()
        .map(|c| ObjectOut::from_contact(c, &projection, empty).with_history(c, history.as_ref()))
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

fn get(state: &State, id: &str, q: &Query) -> ApiResult {
    let store = lock(&state.store);
    let key = store
        .id_key(q.get("idProperty"), false)
        .map_err(write_error)?;
    let contact = store
        .resolve_for_read(&key, id, q.flag("archived"))
        .ok_or_else(|| ApiError::object_not_found(id))?;
    // A merged-away id reads as its survivor in every variant (only batch read may leave it
    // out): a single GET has no way to say "left out".
    let projection = Projection::from_list(q.list("properties")).known(&store.catalog);
    let out = ObjectOut::from_contact(contact, &projection, state.variants().empty_values)
        .with_history(contact, q.list("propertiesWithHistory").as_ref());
    Ok(json(StatusCode::OK, &out))
}

fn create(state: &State, body: &[u8]) -> ApiResult {
    let v = state.variants();
    let input: PropertiesBody = parse_json(body)?;
    let values = property_strings(input.properties)?;
    let written = Projection::Written(values.keys().cloned().collect());
    let (contact, changes) = lock(&state.store)
        .create_one(values, now_ms(), v.validation)
        .map_err(write_error)?;
    publish(state, &changes);
    Ok(json(
        StatusCode::CREATED,
        &ObjectOut::from_contact(&contact, &written, v.empty_values),
    ))
}

fn update(state: &State, id: &str, q: &Query, body: &[u8]) -> ApiResult {
    let v = state.variants();
    let input: PropertiesBody = parse_json(body)?;
    let values = property_strings(input.properties)?;
    let written = Projection::Written(values.keys().cloned().collect());
    let (contact, changes) = {
        let mut store = lock(&state.store);
        let key = store
            .id_key(q.get("idProperty"), false)
            .map_err(write_error)?;
        store
            .update_one(&key, id, values, now_ms(), v.validation)
            .map_err(write_error)?
    };
    publish(state, &changes);
    Ok(json(
        StatusCode::OK,
        &ObjectOut::from_contact(&contact, &written, v.empty_values),
    ))
}

// ---- batches -------------------------------------------------------------------------

fn batch_read(state: &State, q: &Query, body: &[u8]) -> ApiResult {
    let started = now_ms();
    let v = state.variants();
    let input: BatchReadBody = parse_json(body)?;
    let ids: Vec<String> = input.inputs.iter().map(|i| i.id.text()).collect();
    let (mut results, missing) = {
        let store = lock(&state.store);
        let projection = Projection::from_list(input.properties).known(&store.catalog);
        let key = store
            .id_key(input.id_property.as_deref(), false)
            .map_err(write_error)?;
        let (found, missing) = store
            .batch_read(&key, &ids, q.flag("archived"), v.missing_ids)
            .map_err(write_error)?;
        let results: Vec<ObjectOut> = found
            .iter()
            .map(|c| {
                ObjectOut::from_contact(c, &projection, v.empty_values)
                    .with_history(c, input.properties_with_history.as_ref())
            })
            .collect();
        (results, missing)
    };
    let errors = if missing.is_empty() || v.missing_ids == MissingIds::Omitted {
        Vec::new()
    } else {
        item_errors(&[not_found_item(&missing, None)])
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

fn batch_create(state: &State, body: &[u8]) -> ApiResult {
    let started = now_ms();
    let input: Inputs<CreateItem> = parse_json(body)?;
    let inputs = input
        .inputs
        .into_iter()
        .map(|i| {
            Ok(CreateInput {
                values: property_strings(i.properties)?,
                trace: i.object_write_trace_id,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let v = state.variants();
    let outcome = lock(&state.store)
        .batch_create(inputs, started, &v)
        .map_err(write_error)?;
    publish(state, &outcome.changes);
    let mut results = written_out(&outcome.written, false, v.empty_values);
    state.shuffler.arrange(v.result_order, &mut results);
    batch_answer(
        BatchOut::new(results, item_errors(&outcome.errors), started, now_ms()),
        StatusCode::CREATED,
    )
}

fn batch_keyed(state: &State, body: &[u8], upsert: bool) -> ApiResult {
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
    let outcome = {
        let mut store = lock(&state.store);
        if upsert {
            store.batch_upsert(inputs, started, &v)
        } else {
            store.batch_update(inputs, started, &v)
        }
    }
    .map_err(write_error)?;
    publish(state, &outcome.changes);
    let mut results = written_out(&outcome.written, upsert, v.empty_values);
    state.shuffler.arrange(v.result_order, &mut results);
    batch_answer(
        BatchOut::new(results, item_errors(&outcome.errors), started, now_ms()),
        StatusCode::OK,
    )
}

fn written_out(written: &[Written], with_new: bool, empty: EmptyValues) -> Vec<ObjectOut> {
    written
        .iter()
        .map(|w| {
            let projection = Projection::Written(w.names.clone());
            let mut out = ObjectOut::from_contact(&w.contact, &projection, empty);
            out.object_write_trace_id = w.trace.clone();
            out.new = with_new.then_some(w.new);
            out
        })
        .collect()
}

fn batch_archive(state: &State, body: &[u8]) -> ApiResult {
    let input: Inputs<IdItem> = parse_json(body)?;
    let ids: Vec<String> = input.inputs.iter().map(|i| i.id.text()).collect();
    let changes = lock(&state.store)
        .batch_archive(&ids, now_ms())
        .map_err(write_error)?;
    publish(state, &changes);
    Ok(no_content())
}

fn run_search(state: &State, body: &[u8]) -> ApiResult {
    let v = state.variants();
    let req: SearchRequest = parse_json(body)?;
    let store = lock(&state.store);
    let projection = Projection::from_list(req.properties.clone()).known(&store.catalog);
    let page = search(&store, &req, now_ms()).map_err(ApiError::validation)?;
    let results = page
        .records
        .iter()
        .map(|r| ObjectOut::from_search(r, &projection, v.empty_values, v.search_modified))
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
    drop(store);
    Ok(json(StatusCode::OK, &out))
}

fn merge(state: &State, body: &[u8]) -> ApiResult {
    let input: MergeBody = parse_json(body)?;
    let (contact, changes) = lock(&state.store)
        .merge(
            &input.primary_object_id.text(),
            &input.object_id_to_merge.text(),
            now_ms(),
        )
        .map_err(write_error)?;
    publish(state, &changes);
    Ok(json(
        StatusCode::OK,
        &ObjectOut::from_contact(&contact, &Projection::All, state.variants().empty_values),
    ))
}

fn gdpr_delete(state: &State, body: &[u8]) -> ApiResult {
    let input: GdprBody = parse_json(body)?;
    let changes = {
        let mut store = lock(&state.store);
        let key = store
            .id_key(input.id_property.as_deref(), false)
            .map_err(write_error)?;
        store
            .purge(&key, &input.object_id.text())
            .map_err(write_error)?
    };
    publish(state, &changes);
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

fn create_property(state: &State, body: &[u8]) -> ApiResult {
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
    let mut store = lock(&state.store);
    let created = store
        .catalog
        .create(def, now_ms())
        .map_err(property_error)?;
    let location = format!("/crm/v3/properties/contacts/{}", created.name);
    let mut resp = json(StatusCode::CREATED, &created.to_json());
    if let Ok(v) = poem::http::HeaderValue::from_str(&location) {
        resp.headers_mut().insert("Location", v);
    }
    Ok(resp)
}

fn update_property(state: &State, name: &str, body: &[u8]) -> ApiResult {
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
    let mut store = lock(&state.store);
    let def = store
        .catalog
        .update(name, patch, now_ms())
        .map_err(property_error)?;
    Ok(json(StatusCode::OK, &def.to_json()))
}

fn property_not_found(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        format!("Unable to find property {name} for object type contacts"),
    )
}

fn property_error(e: PropertyDefError) -> ApiError {
    match e {
        PropertyDefError::AlreadyExists(name) => ApiError::new(
            StatusCode::CONFLICT,
            "OBJECT_ALREADY_EXISTS",
            format!("A property named '{name}' already exists."),
        )
        .field("subCategory", "Properties.PROPERTY_WITH_NAME_EXISTS"),
        PropertyDefError::NotFound(name) => property_not_found(&name),
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
