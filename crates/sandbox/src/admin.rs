//! The sandbox's own endpoints under `/_sandbox/`: seed, dump, reset, stats, the variants in
//! force (`config`), and test helpers. They need no HubSpot token but answer only loopback callers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use poem::Response;
use poem::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::associations::Direction;
use super::clock::now_ms;
use super::crm::Crm;
use super::objects::CrmObject;
use super::routes::AdminOp;
use super::state::{State, lock};
use super::store::Store;
use super::variants::{DomainLookup, EmptyValues, MergeIds, PrimaryLabel, VariantsPatch};
use super::wire::json;
use super::wire::{ObjectOut, Projection, RawProperties, parse_json, property_strings};

/// Most contacts one seed call generates.
const MAX_SEED: usize = 1_000_000;

#[derive(Debug, Deserialize)]
struct SeedBody {
    count: usize,
}

#[derive(Debug, Deserialize)]
struct InsertItem {
    #[serde(default)]
    properties: RawProperties,
}

#[derive(Debug, Deserialize)]
struct InsertBody {
    contacts: Vec<InsertItem>,
}

#[derive(Debug, Deserialize)]
struct InsertCompaniesBody {
    companies: Vec<InsertItem>,
}

/// The body of `PUT /_sandbox/config/companies`: the company variants to change and the
/// auto-association setting; unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompanyConfigPatch {
    #[serde(default)]
    domain_lookup: Option<DomainLookup>,
    #[serde(default)]
    merge_ids: Option<MergeIds>,
    #[serde(default)]
    primary_label: Option<PrimaryLabel>,
    #[serde(default)]
    auto_associate_companies: Option<bool>,
}

/// Serves one admin request.
pub(crate) async fn handle(
    state: &Arc<State>,
    op: AdminOp,
    peer: Option<SocketAddr>,
    body: &[u8],
) -> Response {
    if !peer.is_some_and(|p| p.ip().is_loopback()) {
        return admin_error(
            StatusCode::FORBIDDEN,
            "The sandbox admin endpoints answer only loopback callers.",
        );
    }
    match run(state, op, body) {
        Ok(v) => json(StatusCode::OK, &v),
        Err(message) => admin_error(StatusCode::BAD_REQUEST, &message),
    }
}

fn admin_error(status: StatusCode, message: &str) -> Response {
    json(
        status,
        &json!({ "error": { "code": "sandbox_admin", "message": message } }),
    )
}

fn run(state: &State, op: AdminOp, body: &[u8]) -> Result<Value, String> {
    match op {
        AdminOp::Stats => Ok(stats(state)),
        AdminOp::Dump => Ok(dump(&lock(&state.store).contacts)),
        AdminOp::Insert => {
            let input: InsertBody = parse_json(body)
                .map_err(|_| "body must be {\"contacts\":[{\"properties\":{..}}]}".to_owned())?;
            let records = input
                .contacts
                .into_iter()
                .map(|c| {
                    property_strings(c.properties)
                        .map_err(|_| "property values must be strings".to_owned())
                })
                .collect::<Result<Vec<_>, _>>()?;
            let ids = lock(&state.store)
                .contacts
                .insert_unchecked(records, now_ms());
            Ok(json!({ "ids": ids.iter().map(u64::to_string).collect::<Vec<_>>() }))
        }
        AdminOp::Seed => {
            let input: SeedBody =
                parse_json(body).map_err(|_| "body must be {\"count\": N}".to_owned())?;
            if input.count > MAX_SEED {
                return Err(format!("count must be at most {MAX_SEED}"));
            }
            let ids = seed(state, input.count);
            Ok(json!({ "created": ids.len() }))
        }
        AdminOp::Reset => {
            *lock(&state.store) = Crm::new(state.cfg.search_delay_ms);
            state.limits.reset();
            state.stats.reset();
            Ok(json!({ "reset": true }))
        }
        AdminOp::ExpireTokens => {
            state.oauth.expire_all(now_ms());
            Ok(json!({ "expired": true }))
        }
        AdminOp::FlushSearch => {
            lock(&state.store).flush_search_index();
            Ok(json!({ "flushed": true }))
        }
        AdminOp::GetConfig => config_json(state),
        AdminOp::DumpCompanies => Ok(dump_companies(&lock(&state.store).companies)),
        AdminOp::InsertCompanies => {
            let input: InsertCompaniesBody = parse_json(body)
                .map_err(|_| "body must be {\"companies\":[{\"properties\":{..}}]}".to_owned())?;
            let records = input
                .companies
                .into_iter()
                .map(|c| {
                    property_strings(c.properties)
                        .map_err(|_| "property values must be strings".to_owned())
                })
                .collect::<Result<Vec<_>, _>>()?;
            let ids = lock(&state.store)
                .companies
                .insert_unchecked(records, now_ms());
            Ok(json!({ "ids": ids.iter().map(u64::to_string).collect::<Vec<_>>() }))
        }
        AdminOp::DumpAssociations => Ok(dump_associations(&lock(&state.store))),
        AdminOp::GetCompanyConfig => company_config_json(state),
        AdminOp::SetCompanyConfig => {
            let patch: CompanyConfigPatch = serde_json::from_slice(body)
                .map_err(|e| format!("body must be a JSON object of company config fields: {e}"))?;
            {
                let mut v = lock(&state.company_variants);
                v.domain_lookup = patch.domain_lookup.unwrap_or(v.domain_lookup);
                v.merge_ids = patch.merge_ids.unwrap_or(v.merge_ids);
                v.primary_label = patch.primary_label.unwrap_or(v.primary_label);
            }
            if let Some(on) = patch.auto_associate_companies {
                state
                    .auto_associate
                    .store(on, std::sync::atomic::Ordering::Relaxed);
            }
            company_config_json(state)
        }
        AdminOp::SetConfig => {
            let patch: VariantsPatch = serde_json::from_slice(body)
                .map_err(|e| format!("body must be a JSON object of variant fields: {e}"))?;
            {
                let mut variants = lock(&state.variants);
                *variants = variants.patched(patch);
            }
            config_json(state)
        }
    }
}

/// The variants in force, as `GET /_sandbox/config` shows them.
fn config_json(state: &State) -> Result<Value, String> {
    serde_json::to_value(state.variants()).map_err(|e| e.to_string())
}

/// The company variants and the auto-association setting, as `GET /_sandbox/config/companies`
/// shows them.
fn company_config_json(state: &State) -> Result<Value, String> {
    let mut v = serde_json::to_value(state.company_variants()).map_err(|e| e.to_string())?;
    if let Some(map) = v.as_object_mut() {
        map.insert(
            "auto_associate_companies".to_owned(),
            Value::Bool(state.auto_associates()),
        );
    }
    Ok(v)
}

fn dump_companies(store: &Store) -> Value {
    let out = |c| ObjectOut::from_record(store.kind(), c, &Projection::All, EmptyValues::Omitted);
    let live: Vec<ObjectOut> = store.live().map(out).collect();
    let archived: Vec<ObjectOut> = store.archived().map(out).collect();
    json!({ "companies": live, "archived": archived })
}

/// Every pair whose records are both live, by contact.
fn dump_associations(crm: &Crm) -> Value {
    let to_companies = Direction {
        from: CrmObject::Contacts,
        to: CrmObject::Companies,
    };
    let pairs: Vec<Value> = crm
        .contacts
        .live()
        .flat_map(|c| {
            crm.associated(to_companies, c.id)
                .unwrap_or_default()
                .into_iter()
                .map(move |(company, primary)| {
                    json!({ "contact": c.id.to_string(), "company": company.to_string(), "primary": primary })
                })
        })
        .collect();
    json!({ "associations": pairs })
}

/// Generates and inserts `count` seeded contacts; returns their ids.
pub(crate) fn seed(state: &State, count: usize) -> Vec<u64> {
    let records = lock(&state.generator).take(count);
    lock(&state.store)
        .contacts
        .insert_unchecked(records, now_ms())
}

fn dump(store: &Store) -> Value {
    let live: Vec<ObjectOut> = store
        .live()
        .map(|c| ObjectOut::from_record(store.kind(), c, &Projection::All, EmptyValues::Omitted))
        .collect();
    let archived: Vec<ObjectOut> = store
        .archived()
        .map(|c| ObjectOut::from_record(store.kind(), c, &Projection::All, EmptyValues::Omitted))
        .collect();
    json!({ "contacts": live, "archived": archived })
}

/// The admin stats document.
pub(crate) fn stats(state: &State) -> Value {
    let counts = lock(&state.store).contacts.counts();
    let by_op: BTreeMap<&str, u64> = lock(&state.stats.by_op).clone();
    let by_status: BTreeMap<String, u64> = lock(&state.stats.by_status)
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let webhooks = state.webhooks.as_ref().map(|w| {
        json!({
            "delivered": w.stats.delivered.load(Ordering::Relaxed),
            "failed_requests": w.stats.failed.load(Ordering::Relaxed),
            "retried_requests": w.stats.retried.load(Ordering::Relaxed),
            "slowest_answer_ms": w.stats.slowest_ms.load(Ordering::Relaxed),
        })
    });
    json!({
        "contacts": counts.live,
        "archived": counts.archived,
        "merged": counts.merged,
        "requests": {
            "total": state.stats.requests.load(Ordering::Relaxed),
            "rate_limited": state.stats.rate_limited.load(Ordering::Relaxed),
            "faults_5xx": state.stats.faults_5xx.load(Ordering::Relaxed),
            "dropped_after_write": state.stats.dropped.load(Ordering::Relaxed),
            "dropped_reads": state.stats.dropped_reads.load(Ordering::Relaxed),
            "unauthorized": state.stats.unauthorized.load(Ordering::Relaxed),
            "by_operation": by_op,
            "by_status": by_status,
        },
        "webhooks": webhooks,
        "rng_seed": state.cfg.rng_seed,
    })
}
