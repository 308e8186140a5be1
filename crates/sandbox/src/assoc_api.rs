//! Handlers of HubSpot's v4 associations API between contacts and companies: batch
//! associate-default, create (with types), read, archive and labels archive; and the calls on
//! one record (PUT default, PUT with types, DELETE, GET).
//!
//! Types are matched by number and category, never by label. A write with types replaces the
//! pair's label list (sending only 279 strips the primary label); `types: []` is accepted and
//! changes nothing (as reported for HubSpot). Records that are not live (unknown, archived,
//! merged away) fail their input alone with a 207 (HubSpot's category for this is
//! unconfirmed; the sandbox says `OBJECT_NOT_FOUND`).

use std::collections::BTreeMap;

use poem::Response;
use poem::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{ApiResult, Effects, Query, decode_after, encode_after, item_errors, no_content};
use super::associations::{AssocChange, AssocType, Direction, HUBSPOT_DEFINED};
use super::clock::{iso_millis, now_ms};
use super::crm::Crm;
use super::errors::ApiError;
use super::objects::CrmObject;
use super::routes::AssocOp;
use super::state::{State, lock};
use super::store::ItemError;
use super::variants::{EmptyValues, PrimaryLabel};
use super::wire::{CreateAssociation, IdValue, Inputs, json, parse_json};

/// Most inputs of one batch read (HubSpot refuses more since 2025-02-10).
pub(crate) const MAX_READ_INPUTS: usize = 1_000;

/// Most associated records per page of a read (batch read per input, and GET).
pub(crate) const PAGE_SIZE: usize = 500;

/// Runs one associations operation.
pub(crate) fn dispatch(
    state: &State,
    from: CrmObject,
    to: CrmObject,
    op: AssocOp,
    q: &Query,
    body: &[u8],
) -> ApiResult {
    let direction = Direction::new(from, to).ok_or_else(|| {
        ApiError::validation(format!(
            "The sandbox models associations between contacts and companies only, not {} to {}.",
            from.plural(),
            to.plural()
        ))
    })?;
    match op {
        AssocOp::BatchDefault => batch_default(state, direction, body),
        AssocOp::BatchCreate => batch_create(state, direction, body),
        AssocOp::BatchRead => batch_read(state, direction, body),
        AssocOp::BatchArchive => batch_archive(state, direction, body),
        AssocOp::BatchArchiveLabels => batch_archive_labels(state, direction, body),
        AssocOp::PutDefault(from_id, to_id) => put_default(state, direction, &from_id, &to_id),
        AssocOp::PutLabels(from_id, to_id) => put_labels(state, direction, &from_id, &to_id, body),
        AssocOp::DeletePair(from_id, to_id) => delete_pair(state, direction, &from_id, &to_id),
        AssocOp::List(from_id) => list(state, direction, &from_id, q),
    }
}

// ---- wire shapes ---------------------------------------------------------------------

/// `{"id": ".."}`
#[derive(Debug, Deserialize)]
struct ObjectId {
    id: IdValue,
}

/// `{"associationCategory": .., "associationTypeId": ..}`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct AssociationSpec {
    association_category: String,
    association_type_id: i64,
}

#[derive(Debug, Deserialize)]
struct PairInput {
    from: ObjectId,
    to: ObjectId,
}

#[derive(Debug, Deserialize)]
struct TypedPairInput {
    from: ObjectId,
    to: ObjectId,
    types: Vec<AssociationSpec>,
}

#[derive(Debug, Deserialize)]
struct ArchiveInput {
    from: ObjectId,
    to: Vec<ObjectId>,
}

#[derive(Debug, Deserialize)]
struct ReadInput {
    id: IdValue,
    #[serde(default)]
    after: Option<String>,
}

/// `PublicDefaultAssociation`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DefaultOut {
    from: IdOut,
    to: IdOut,
    association_spec: AssociationSpec,
}

#[derive(Debug, Serialize)]
struct IdOut {
    id: String,
}

/// `LabelsBetweenObjectPair`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LabelsOut {
    from_object_type_id: &'static str,
    from_object_id: String,
    to_object_type_id: &'static str,
    to_object_id: String,
    labels: Vec<String>,
}

/// `AssociationSpecWithLabel`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TypeOut {
    category: &'static str,
    type_id: i64,
    /// The unlabelled type has no label: left out, or `null` under `--empty-values null`
    /// (HubSpot's docs show `null`; its spec types the field as a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<Option<&'static str>>,
}

/// `MultiAssociatedObjectWithLabel`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ToOut {
    to_object_id: String,
    association_types: Vec<TypeOut>,
}

/// `PublicAssociationMultiWithLabel`.
#[derive(Debug, Serialize)]
struct ReadOut {
    from: IdOut,
    to: Vec<ToOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    paging: Option<PagingOut>,
}

#[derive(Debug, Serialize)]
struct PagingOut {
    next: NextOut,
}

#[derive(Debug, Serialize)]
struct NextOut {
    after: String,
}

/// A batch answer of the associations API.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchOut<T> {
    status: &'static str,
    results: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_errors: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<Vec<Value>>,
    started_at: String,
    completed_at: String,
}

/// The batch answer: `ok` without errors, 207 with them (or `ok` where the spec documents
/// no 207, as for associate-default).
fn batch_answer<T: Serialize>(
    results: Vec<T>,
    errors: &[ItemError],
    started: i64,
    ok: StatusCode,
    multi_status: bool,
) -> Response {
    let status = if !errors.is_empty() && multi_status {
        StatusCode::MULTI_STATUS
    } else {
        ok
    };
    let errors = (!errors.is_empty()).then(|| item_errors(errors));
    json(
        status,
        &BatchOut {
            status: "COMPLETE",
            num_errors: errors.as_ref().map(Vec::len),
            errors,
            results,
            started_at: iso_millis(started),
            completed_at: iso_millis(now_ms()),
        },
    )
}

// ---- shared rules --------------------------------------------------------------------

/// The live `(contact, company)` pair an input names, or the error of that input.
fn live_pair(
    crm: &Crm,
    direction: Direction,
    from: &str,
    to: &str,
) -> Result<(u64, u64), ItemError> {
    let missing: Vec<String> = [(direction.from, from), (direction.to, to)]
        .into_iter()
        .filter(|(object, raw)| crm.live_id(*object, raw).is_none())
        .map(|(object, raw)| format!("{} {raw}", object.singular()))
        .collect();
    match (
        crm.live_id(direction.from, from),
        crm.live_id(direction.to, to),
    ) {
        (Some(f), Some(t)) => Ok(direction.pair(f, t)),
        _ => Err(ItemError {
            category: "OBJECT_NOT_FOUND",
            message: format!(
                "No live record for the association {} {from} → {} {to}: {} not found.",
                direction.from.singular(),
                direction.to.singular(),
                missing.join(", ")
            ),
            context: BTreeMap::from([
                ("fromObjectId".to_owned(), vec![from.to_owned()]),
                ("toObjectId".to_owned(), vec![to.to_owned()]),
            ]),
        }),
    }
}

/// The types a list of specs names, or the error naming the first it does not know.
fn types_of(direction: Direction, specs: &[AssociationSpec]) -> Result<Vec<AssocType>, String> {
    specs
        .iter()
        .map(|s| {
            direction
                .type_of(&s.association_category, s.association_type_id)
                .ok_or_else(|| {
                    format!(
                        "associationTypeId {} ({}) is not an association type from {} to {}: use {} or {} ({HUBSPOT_DEFINED}).",
                        s.association_type_id,
                        s.association_category,
                        direction.from.singular(),
                        direction.to.singular(),
                        direction.type_id(AssocType::Unlabelled),
                        direction.type_id(AssocType::Primary),
                    )
                })
        })
        .collect()
}

fn invalid_types(message: String, from: &str, to: &str) -> ItemError {
    ItemError {
        category: "VALIDATION_ERROR",
        message,
        context: BTreeMap::from([
            ("fromObjectId".to_owned(), vec![from.to_owned()]),
            ("toObjectId".to_owned(), vec![to.to_owned()]),
        ]),
    }
}

/// The labels a pair shows from `direction.from`'s side.
fn labels(
    crm: &Crm,
    direction: Direction,
    contact: u64,
    company: u64,
    label: PrimaryLabel,
) -> Vec<String> {
    match crm.associations.get(contact, company) {
        Some(true) => vec![label.text(direction.starts_at_contact()).to_owned()],
        _ => Vec::new(),
    }
}

fn labels_out(
    crm: &Crm,
    direction: Direction,
    (contact, company): (u64, u64),
    label: PrimaryLabel,
) -> LabelsOut {
    let (from, to) = if direction.starts_at_contact() {
        (contact, company)
    } else {
        (company, contact)
    };
    LabelsOut {
        from_object_type_id: direction.from.type_id(),
        from_object_id: from.to_string(),
        to_object_type_id: direction.to.type_id(),
        to_object_id: to.to_string(),
        labels: labels(crm, direction, contact, company, label),
    }
}

fn default_out(direction: Direction, from: &str, to: &str) -> DefaultOut {
    DefaultOut {
        from: IdOut {
            id: from.to_owned(),
        },
        to: IdOut { id: to.to_owned() },
        association_spec: AssociationSpec {
            association_category: HUBSPOT_DEFINED.to_owned(),
            association_type_id: direction.type_id(AssocType::Unlabelled),
        },
    }
}

/// The associations a create carries, checked before anything is written: the other side
/// must be a live record of the other object type and the types HubSpot's for the direction.
/// The error is the create's 400.
pub(crate) fn planned_links(
    crm: &Crm,
    object: CrmObject,
    links: &[CreateAssociation],
) -> Result<Vec<(u64, Vec<AssocType>)>, ApiError> {
    let other = match object {
        CrmObject::Contacts => CrmObject::Companies,
        CrmObject::Companies => CrmObject::Contacts,
    };
    let direction = Direction::new(object, other).ok_or_else(|| {
        ApiError::validation("The sandbox associates contacts and companies only.")
    })?;
    links
        .iter()
        .map(|link| {
            let raw = link.to.id.text();
            let to = crm.live_id(other, &raw).ok_or_else(|| {
                ApiError::validation(format!(
                    "Cannot associate with {} {raw}: no such live record.",
                    other.singular()
                ))
            })?;
            let specs: Vec<AssociationSpec> = link
                .types
                .iter()
                .map(|t| AssociationSpec {
                    association_category: t.association_category.clone(),
                    association_type_id: t.association_type_id,
                })
                .collect();
            let types = types_of(direction, &specs).map_err(ApiError::validation)?;
            Ok((to, types))
        })
        .collect()
}

/// Writes the associations a create carried for the new record `id` of `object`.
pub(crate) fn link_created(
    crm: &mut Crm,
    object: CrmObject,
    id: u64,
    links: &[(u64, Vec<AssocType>)],
) -> Vec<AssocChange> {
    links
        .iter()
        .flat_map(|(to, types)| {
            let pair = match object {
                CrmObject::Contacts => (id, *to),
                CrmObject::Companies => (*to, id),
            };
            write_types(crm, pair, types)
        })
        .collect()
}

/// Writes `types` to a pair: the pair's types become exactly these (the unlabelled one
/// included); no types change nothing.
fn write_types(
    crm: &mut Crm,
    (contact, company): (u64, u64),
    types: &[AssocType],
) -> Vec<AssocChange> {
    if types.is_empty() {
        return Vec::new();
    }
    let primary = types.contains(&AssocType::Primary);
    crm.associations.set(contact, company, primary)
}

fn publish(state: &State, changes: Vec<AssocChange>) {
    Effects::associations(changes).publish(state);
}

// ---- batch calls ---------------------------------------------------------------------

fn batch_default(state: &State, direction: Direction, body: &[u8]) -> ApiResult {
    let started = now_ms();
    let input: Inputs<PairInput> = parse_json(body)?;
    let mut crm = lock(&state.store);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let mut changes = Vec::new();
    for i in input.inputs {
        let (from, to) = (i.from.id.text(), i.to.id.text());
        match live_pair(&crm, direction, &from, &to) {
            Ok((contact, company)) => {
                changes.extend(crm.associations.add_default(contact, company));
                results.push(default_out(direction, &from, &to));
            }
            Err(e) => errors.push(e),
        }
    }
    drop(crm);
    publish(state, changes);
    Ok(batch_answer(
        results,
        &errors,
        started,
        StatusCode::OK,
        false,
    ))
}

fn batch_create(state: &State, direction: Direction, body: &[u8]) -> ApiResult {
    let started = now_ms();
    let input: Inputs<TypedPairInput> = parse_json(body)?;
    let label = state.company_variants().primary_label;
    let mut crm = lock(&state.store);
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let mut changes = Vec::new();
    for i in input.inputs {
        let (from, to) = (i.from.id.text(), i.to.id.text());
        let types = match types_of(direction, &i.types) {
            Ok(t) => t,
            Err(message) => {
                errors.push(invalid_types(message, &from, &to));
                continue;
            }
        };
        match live_pair(&crm, direction, &from, &to) {
            Ok(pair) => {
                changes.extend(write_types(&mut crm, pair, &types));
                if !types.is_empty() {
                    results.push(labels_out(&crm, direction, pair, label));
                }
            }
            Err(e) => errors.push(e),
        }
    }
    drop(crm);
    publish(state, changes);
    Ok(batch_answer(
        results,
        &errors,
        started,
        StatusCode::CREATED,
        true,
    ))
}

fn batch_read(state: &State, direction: Direction, body: &[u8]) -> ApiResult {
    let started = now_ms();
    let input: Inputs<ReadInput> = parse_json(body)?;
    if input.inputs.len() > MAX_READ_INPUTS {
        return Err(ApiError::validation(format!(
            "Batch read of associations takes at most {MAX_READ_INPUTS} inputs, got {}.",
            input.inputs.len()
        )));
    }
    let v = state.variants();
    let label = state.company_variants().primary_label;
    let crm = lock(&state.store);
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for i in input.inputs {
        let raw = i.id.text();
        let after = match i.after.as_deref().filter(|a| !a.is_empty()) {
            None => 0,
            Some(a) => decode_after(a).ok_or_else(|| {
                ApiError::validation(format!(
                    "after must be a paging cursor from a previous page, got {a}"
                ))
            })?,
        };
        let Some(from) = crm.live_id(direction.from, &raw) else {
            missing.push(raw);
            continue;
        };
        let all = crm.associated(direction, from).unwrap_or_default();
        let (to, next) = page(&all, after, PAGE_SIZE);
        results.push(ReadOut {
            from: IdOut { id: raw },
            to: to
                .iter()
                .map(|(id, primary)| to_out(direction, *id, *primary, label, v.empty_values))
                .collect(),
            paging: next.map(|n| PagingOut {
                next: NextOut {
                    after: encode_after(n),
                },
            }),
        });
    }
    drop(crm);
    let errors: Vec<ItemError> = if missing.is_empty() {
        Vec::new()
    } else {
        vec![ItemError {
            category: "OBJECT_NOT_FOUND",
            message: format!(
                "Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.",
                direction.from.upper()
            ),
            context: BTreeMap::from([("ids".to_owned(), missing)]),
        }]
    };
    Ok(batch_answer(
        results,
        &errors,
        started,
        StatusCode::OK,
        true,
    ))
}

/// The records from `after` on (ids in order), at most `size`, and the id the next page
/// starts at.
fn page(all: &[(u64, bool)], after: u64, size: usize) -> (Vec<(u64, bool)>, Option<u64>) {
    let mut rest = all.iter().filter(|(id, _)| *id >= after).copied();
    let taken: Vec<(u64, bool)> = rest.by_ref().take(size).collect();
    (taken, rest.next().map(|(id, _)| id))
}

fn to_out(
    direction: Direction,
    to: u64,
    primary: bool,
    label: PrimaryLabel,
    empty: EmptyValues,
) -> ToOut {
    let mut types = vec![TypeOut {
        category: HUBSPOT_DEFINED,
        type_id: direction.type_id(AssocType::Unlabelled),
        label: (empty == EmptyValues::Null).then_some(None),
    }];
    if primary {
        types.push(TypeOut {
            category: HUBSPOT_DEFINED,
            type_id: direction.type_id(AssocType::Primary),
            label: Some(Some(label.text(direction.starts_at_contact()))),
        });
    }
    ToOut {
        to_object_id: to.to_string(),
        association_types: types,
    }
}

fn batch_archive(state: &State, direction: Direction, body: &[u8]) -> ApiResult {
    let input: Inputs<ArchiveInput> = parse_json(body)?;
    let mut crm = lock(&state.store);
    let mut changes = Vec::new();
    for i in input.inputs {
        let from = i.from.id.text();
        for to in i.to {
            // Unknown pairs are not an error: the answer is a 204 without a body either way.
            if let Ok((contact, company)) = live_pair(&crm, direction, &from, &to.id.text()) {
                changes.extend(
                    crm.associations
                        .remove(contact, company, AssocType::Unlabelled),
                );
            }
        }
    }
    drop(crm);
    publish(state, changes);
    Ok(no_content())
}

fn batch_archive_labels(state: &State, direction: Direction, body: &[u8]) -> ApiResult {
    let input: Inputs<TypedPairInput> = parse_json(body)?;
    let mut crm = lock(&state.store);
    let mut changes = Vec::new();
    for i in input.inputs {
        let (from, to) = (i.from.id.text(), i.to.id.text());
        let types = types_of(direction, &i.types).map_err(ApiError::validation)?;
        let Ok((contact, company)) = live_pair(&crm, direction, &from, &to) else {
            continue;
        };
        // Removing the unlabelled type removes every label of the pair (HubSpot's docs).
        for kind in types {
            changes.extend(crm.associations.remove(contact, company, kind));
        }
    }
    drop(crm);
    publish(state, changes);
    Ok(no_content())
}

// ---- one record ------------------------------------------------------------------------

/// The pair of a single-record call, or its 404.
fn single_pair(
    crm: &Crm,
    direction: Direction,
    from: &str,
    to: &str,
) -> Result<(u64, u64), ApiError> {
    live_pair(crm, direction, from, to).map_err(|e| {
        ApiError::new(StatusCode::NOT_FOUND, e.category, e.message)
            .context("fromObjectId", vec![from.to_owned()])
            .context("toObjectId", vec![to.to_owned()])
    })
}

fn put_default(state: &State, direction: Direction, from: &str, to: &str) -> ApiResult {
    let started = now_ms();
    let mut crm = lock(&state.store);
    let (contact, company) = single_pair(&crm, direction, from, to)?;
    let changes = crm.associations.add_default(contact, company);
    drop(crm);
    publish(state, changes);
    Ok(batch_answer(
        vec![default_out(direction, from, to)],
        &[],
        started,
        StatusCode::OK,
        false,
    ))
}

fn put_labels(state: &State, direction: Direction, from: &str, to: &str, body: &[u8]) -> ApiResult {
    let specs: Vec<AssociationSpec> = parse_json(body)?;
    let types = types_of(direction, &specs).map_err(ApiError::validation)?;
    let label = state.company_variants().primary_label;
    let mut crm = lock(&state.store);
    let pair = single_pair(&crm, direction, from, to)?;
    let changes = write_types(&mut crm, pair, &types);
    let out = labels_out(&crm, direction, pair, label);
    drop(crm);
    publish(state, changes);
    Ok(json(StatusCode::CREATED, &out))
}

fn delete_pair(state: &State, direction: Direction, from: &str, to: &str) -> ApiResult {
    let mut crm = lock(&state.store);
    let changes = match live_pair(&crm, direction, from, to) {
        Ok((contact, company)) => crm
            .associations
            .remove(contact, company, AssocType::Unlabelled),
        Err(_) => Vec::new(),
    };
    drop(crm);
    publish(state, changes);
    Ok(no_content())
}

fn list(state: &State, direction: Direction, from: &str, q: &Query) -> ApiResult {
    let limit = match q.get("limit") {
        None => PAGE_SIZE,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=PAGE_SIZE).contains(&n) => n,
            _ => {
                return Err(ApiError::validation(format!(
                    "limit must be between 1 and {PAGE_SIZE}, got {raw}"
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
    let v = state.variants();
    let label = state.company_variants().primary_label;
    let crm = lock(&state.store);
    let id = crm
        .live_id(direction.from, from)
        .ok_or_else(|| ApiError::object_not_found(from))?;
    let all = crm.associated(direction, id).unwrap_or_default();
    drop(crm);
    let (to, next) = page(&all, after, limit);
    let results: Vec<ToOut> = to
        .iter()
        .map(|(id, primary)| to_out(direction, *id, *primary, label, v.empty_values))
        .collect();
    let mut out = serde_json::json!({ "results": results });
    if let Some(n) = next {
        out["paging"] = serde_json::json!({ "next": { "after": encode_after(n) } });
    }
    Ok(json(StatusCode::OK, &out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_start_at_the_cursor_and_name_the_next_id() {
        let all: Vec<(u64, bool)> = (1..=5).map(|i| (i * 10, i == 2)).collect();
        let (first, next) = page(&all, 0, 2);
        assert_eq!(first, vec![(10, false), (20, true)]);
        assert_eq!(next, Some(30));
        let (last, next) = page(&all, 30, 5);
        assert_eq!(last.len(), 3);
        assert_eq!(next, None);
    }
}
