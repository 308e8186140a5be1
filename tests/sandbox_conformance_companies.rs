//! The sandbox's companies, property groups and v4 associations against HubSpot's published
//! OpenAPI specs: every implemented operation's answers (successes and errors) validate against
//! the response schemas, and the requests sent to it against the request schemas, under each
//! profile (except the `null` answers the specs do not allow, as for contacts).

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support_openapi;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crm_sync::sandbox::{
    EmptyValues, HubSpotProfile, MissingIds, Sandbox, SandboxArgs, SandboxHandle, SearchModified,
};
use reqwest::Method;
use serde_json::{Value, json};
use support_openapi::{OpenApiSpecs, WireRequest, validate_requests};

/// The specs of the operations exercised here (contacts for the contacts associated).
pub const FILES: [&str; 5] = [
    "crm-companies-v3.json",
    "crm-companies-2026-03.json",
    "crm-contacts-v3.json",
    "crm-properties-v3.json",
    "crm-associations-v4.json",
];

const CO: &str = "/crm/v3/objects/companies";
const CT: &str = "/crm/v3/objects/contacts";
const TO_CO: &str = "/crm/v4/associations/contacts/companies";
const TO_CT: &str = "/crm/v4/associations/companies/contacts";

/// Every spec operation of companies, groups and associations the sandbox serves.
const EXPECTED: [(&str, &str); 27] = [
    ("GET", "/crm/v3/objects/companies"),
    ("POST", "/crm/v3/objects/companies"),
    ("GET", "/crm/v3/objects/companies/{companyId}"),
    ("PATCH", "/crm/v3/objects/companies/{companyId}"),
    ("DELETE", "/crm/v3/objects/companies/{companyId}"),
    ("POST", "/crm/v3/objects/companies/batch/read"),
    ("POST", "/crm/v3/objects/companies/batch/create"),
    ("POST", "/crm/v3/objects/companies/batch/update"),
    ("POST", "/crm/v3/objects/companies/batch/upsert"),
    ("POST", "/crm/v3/objects/companies/batch/archive"),
    ("POST", "/crm/v3/objects/companies/search"),
    ("POST", "/crm/v3/objects/companies/merge"),
    ("GET", "/crm/objects/2026-03/companies"),
    ("POST", "/crm/objects/2026-03/companies/batch/read"),
    ("GET", "/crm/v3/properties/{objectType}/groups"),
    ("POST", "/crm/v3/properties/{objectType}/groups"),
    ("GET", "/crm/v3/properties/{objectType}/groups/{groupName}"),
    ("POST", "/crm/v3/properties/{objectType}"),
    (
        "POST",
        "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/associate/default",
    ),
    (
        "POST",
        "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/create",
    ),
    (
        "POST",
        "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read",
    ),
    (
        "POST",
        "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/archive",
    ),
    (
        "POST",
        "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/labels/archive",
    ),
    (
        "PUT",
        "/crm/v4/objects/{fromObjectType}/{fromObjectId}/associations/default/{toObjectType}/{toObjectId}",
    ),
    (
        "PUT",
        "/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}/{toObjectId}",
    ),
    (
        "DELETE",
        "/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}/{toObjectId}",
    ),
    (
        "GET",
        "/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}",
    ),
];

struct Checker<'a> {
    specs: &'a OpenApiSpecs,
    sb: &'a SandboxHandle,
    http: reqwest::Client,
    failures: Vec<String>,
    covered: BTreeSet<(String, String)>,
}

impl Checker<'_> {
    /// Sends a request with the private-app token and validates the answer.
    async fn call(&mut self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.sb.base_url()))
            .bearer_auth(self.sb.access_token());
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the sandbox answers");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body").to_vec();
        let bare = path.split('?').next().unwrap_or(path);
        if let Some(op) = self.specs.find(method.as_str(), bare) {
            self.covered
                .insert((op.method.clone(), op.template.clone()));
        }
        if let Err(e) = self
            .specs
            .validate_response(method.as_str(), bare, status, &bytes)
        {
            self.failures.push(e);
        }
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn expect(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let (got, value) = self.call(method.clone(), path, body).await;
        if got != status {
            self.failures.push(format!(
                "{method} {path}: expected {status}, got {got}: {value}"
            ));
        }
        value
    }
}

fn ids(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn typed(from: &str, to: &str, type_id: i64) -> Value {
    json!({"from": {"id": from}, "to": {"id": to},
           "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}]})
}

/// `missing` is the status of a batch read or update naming unknown ids (200 when the profile
/// leaves them out).
async fn exercise(ck: &mut Checker<'_>, missing: u16) {
    use Method as M;
    // Companies.
    let one = ck
        .expect(
            M::POST,
            CO,
            Some(json!({"properties": {"name": "Acme", "domain": "acme.io"}, "associations": []})),
            201,
        )
        .await;
    let id = one["id"].as_str().unwrap_or_default().to_owned();
    ck.expect(
        M::GET,
        &format!("{CO}/{id}?properties=name,domain"),
        None,
        200,
    )
    .await;
    ck.expect(M::GET, &format!("{CO}/424242"), None, 404).await;
    ck.expect(
        M::PATCH,
        &format!("{CO}/{id}"),
        Some(json!({"properties": {"industry": "Tools"}})),
        200,
    )
    .await;
    let created = ck
        .expect(
            M::POST,
            &format!("{CO}/batch/create"),
            Some(json!({"inputs": [
                {"properties": {"name": "Two", "domain": "acme.io"}, "associations": [], "objectWriteTraceId": "t1"},
                {"properties": {"numberofemployees": "many"}, "associations": [], "objectWriteTraceId": "t2"}]})),
            207,
        )
        .await;
    let two = ids(&created).first().cloned().unwrap_or_default();
    ck.expect(
        M::POST,
        &format!("{CO}/batch/create"),
        Some(json!({"inputs": [{"properties": {"name": "Three"}, "associations": []}]})),
        201,
    )
    .await;
    ck.expect(M::GET, &format!("{CO}?limit=2"), None, 200).await;
    ck.expect(M::GET, "/crm/objects/2026-03/companies?limit=1", None, 200)
        .await;
    let read = json!({"inputs": [{"id": id}], "properties": ["name"], "propertiesWithHistory": []});
    ck.expect(
        M::POST,
        &format!("{CO}/batch/read"),
        Some(read.clone()),
        200,
    )
    .await;
    ck.expect(
        M::POST,
        "/crm/objects/2026-03/companies/batch/read",
        Some(read),
        200,
    )
    .await;
    ck.expect(
        M::POST,
        &format!("{CO}/batch/read"),
        Some(json!({"inputs": [{"id": id}, {"id": "424242"}], "properties": [], "propertiesWithHistory": []})),
        missing,
    )
    .await;
    ck.expect(
        M::POST,
        &format!("{CO}/batch/update"),
        Some(json!({"inputs": [{"id": id, "properties": {"city": "Ghent"}}]})),
        200,
    )
    .await;
    ck.expect(
        M::POST,
        &format!("{CO}/batch/update"),
        Some(json!({"inputs": [{"id": "424242", "properties": {"city": "Ghent"}, "objectWriteTraceId": "u1"}]})),
        missing,
    )
    .await;
    ck.expect(
        M::POST,
        "/crm/v3/properties/companies",
        Some(
            json!({"name": "crm_sync_key", "label": "key", "type": "string", "fieldType": "text",
                     "groupName": "companyinformation", "hasUniqueValue": true}),
        ),
        201,
    )
    .await;
    ck.expect(
        M::POST,
        &format!("{CO}/batch/upsert"),
        Some(json!({"inputs": [{"id": "k1", "idProperty": "crm_sync_key", "properties": {"name": "Keyed"}}]})),
        200,
    )
    .await;
    ck.expect(
        M::POST,
        &format!("{CO}/batch/upsert"),
        Some(json!({"inputs": [{"id": "acme.io", "idProperty": "domain", "properties": {"name": "X"}}]})),
        400,
    )
    .await;
    let search = json!({"filterGroups": [{"filters": [{"propertyName": "domain", "operator": "EQ", "value": "acme.io"}]}],
                        "sorts": ["hs_lastmodifieddate"], "properties": ["domain"], "limit": 1, "after": "0"});
    ck.expect(M::POST, &format!("{CO}/search"), Some(search), 200)
        .await;
    ck.expect(
        M::POST,
        &format!("{CO}/search"),
        Some(
            json!({"filterGroups": [], "sorts": [], "properties": [], "limit": 500, "after": "0"}),
        ),
        400,
    )
    .await;
    let merged = ck
        .expect(
            M::POST,
            &format!("{CO}/merge"),
            Some(json!({"primaryObjectId": id, "objectIdToMerge": two})),
            200,
        )
        .await;
    let company = merged["id"].as_str().unwrap_or_default().to_owned();

    // Property groups.
    ck.expect(
        M::POST,
        "/crm/v3/properties/companies/groups",
        Some(json!({"name": "crm_sync", "label": "crm-sync", "displayOrder": 1})),
        201,
    )
    .await;
    ck.expect(M::GET, "/crm/v3/properties/companies/groups", None, 200)
        .await;
    ck.expect(
        M::GET,
        "/crm/v3/properties/companies/groups/crm_sync",
        None,
        200,
    )
    .await;
    ck.expect(
        M::GET,
        "/crm/v3/properties/companies/groups/nope",
        None,
        404,
    )
    .await;

    // Associations.
    let contacts = ck
        .expect(
            M::POST,
            &format!("{CT}/batch/create"),
            Some(json!({"inputs": [
                {"properties": {"email": "ada@acme.io"}, "associations": []},
                {"properties": {"email": "bob@acme.io"}, "associations": []}]})),
            201,
        )
        .await;
    let (ada, bob) = match ids(&contacts).as_slice() {
        [a, b] => (a.clone(), b.clone()),
        _ => (String::new(), String::new()),
    };
    ck.expect(
        M::POST,
        &format!("{TO_CO}/batch/associate/default"),
        Some(json!({"inputs": [{"from": {"id": bob}, "to": {"id": company}}]})),
        200,
    )
    .await;
    ck.expect(
        M::POST,
        &format!("{TO_CO}/batch/create"),
        Some(json!({"inputs": [typed(&ada, &company, 1)]})),
        201,
    )
    .await;
    ck.expect(
        M::POST,
        &format!("{TO_CO}/batch/create"),
        Some(json!({"inputs": [typed(&ada, &company, 279), typed(&ada, "424242", 279), typed(&bob, &company, 280)]})),
        207,
    )
    .await;
    ck.expect(
        M::POST,
        &format!("{TO_CT}/batch/read"),
        Some(json!({"inputs": [{"id": company}]})),
        200,
    )
    .await;
    ck.expect(
        M::POST,
        &format!("{TO_CO}/batch/read"),
        Some(json!({"inputs": [{"id": ada}, {"id": "424242"}]})),
        207,
    )
    .await;
    let too_many: Vec<Value> = (0..1001).map(|i| json!({"id": i.to_string()})).collect();
    ck.expect(
        M::POST,
        &format!("{TO_CO}/batch/read"),
        Some(json!({ "inputs": too_many })),
        400,
    )
    .await;
    ck.expect(
        M::PUT,
        &format!("/crm/v4/objects/companies/{company}/associations/default/contacts/{bob}"),
        None,
        200,
    )
    .await;
    ck.expect(
        M::PUT,
        &format!("/crm/v4/objects/contacts/{bob}/associations/companies/{company}"),
        Some(json!([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}])),
        201,
    )
    .await;
    ck.expect(
        M::PUT,
        &format!("/crm/v4/objects/contacts/{bob}/associations/companies/424242"),
        Some(json!([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}])),
        404,
    )
    .await;
    ck.expect(
        M::GET,
        &format!("/crm/v4/objects/contacts/{ada}/associations/companies?limit=1"),
        None,
        200,
    )
    .await;
    ck.expect(
        M::POST,
        &format!("{TO_CO}/batch/labels/archive"),
        Some(json!({"inputs": [typed(&ada, &company, 1)]})),
        204,
    )
    .await;
    ck.expect(
        M::POST,
        &format!("{TO_CT}/batch/archive"),
        Some(json!({"inputs": [{"from": {"id": company}, "to": [{"id": ada}]}]})),
        204,
    )
    .await;
    ck.expect(
        M::DELETE,
        &format!("/crm/v4/objects/contacts/{bob}/associations/companies/{company}"),
        None,
        204,
    )
    .await;

    ck.expect(
        M::POST,
        CO,
        Some(
            json!({"properties": {"name": "With Ada"}, "associations": [{"to": {"id": ada},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 280}]}]}),
        ),
        201,
    )
    .await;
    ck.expect(
        M::POST,
        &format!("{CO}/batch/archive"),
        Some(json!({"inputs": [{"id": company}]})),
        204,
    )
    .await;
    ck.expect(M::DELETE, &format!("{CO}/424242"), None, 204)
        .await;
}

#[tokio::test]
async fn companies_groups_and_associations_validate_against_hubspots_specs() {
    let Some(specs) = OpenApiSpecs::load_files_or_skip("sandbox_conformance_companies", &FILES)
    else {
        return;
    };
    for profile in HubSpotProfile::all() {
        let mut variants = profile.variants();
        // The specs type values and labels as non-null strings (as for contacts).
        variants.empty_values = EmptyValues::Omitted;
        variants.search_modified = SearchModified::Returned;
        let args = SandboxArgs {
            requests_per_10s: 0,
            search_per_second: 0,
            associations_per_10s: 0,
            rng_seed: Some(3),
            variants,
            company_variants: profile.company_variants(),
            ..SandboxArgs::default()
        };
        let sb = Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("starts");
        sb.set_recording(true);
        let mut ck = Checker {
            specs: &specs,
            sb: &sb,
            http: reqwest::Client::new(),
            failures: Vec::new(),
            covered: BTreeSet::new(),
        };
        let missing = match variants.missing_ids {
            MissingIds::Omitted => 200,
            MissingIds::Reported | MissingIds::AllReported => 207,
        };
        exercise(&mut ck, missing).await;
        let recorded: Vec<WireRequest> = sb
            .take_recorded_requests()
            .into_iter()
            .map(|r| WireRequest {
                method: r.method,
                path: r.path,
                content_type: r.content_type,
                body: r.body,
            })
            .collect();
        ck.failures.extend(validate_requests(&specs, &recorded));
        for (m, t) in EXPECTED {
            if !ck.covered.contains(&(m.to_owned(), t.to_owned())) {
                ck.failures.push(format!(
                    "{m} {t}: implemented but not exercised against the spec"
                ));
            }
        }
        assert!(
            ck.failures.is_empty(),
            "{}: {} conformance failures:\n{}",
            profile.name(),
            ck.failures.len(),
            ck.failures.join("\n")
        );
    }
}
