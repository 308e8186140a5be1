//! The sandbox against HubSpot's official OpenAPI specs: every implemented operation's
//! answers (successes and documented errors) validate against the response schemas, and
//! the requests sent to it validate against the request schemas.

// A failed expectation panics, and fixtures are shared between test files as `pub` items.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support_openapi;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use crm_sync::sandbox::{
    EmptyValues, MissingIds, Sandbox, SandboxArgs, SandboxHandle, SearchModified, Variants,
};
use reqwest::Method;
use serde_json::{Value, json};
use support_openapi::{OpenApiSpecs, WireRequest, validate_requests};

struct Checker<'a> {
    specs: &'a OpenApiSpecs,
    sb: &'a SandboxHandle,
    http: reqwest::Client,
    failures: Vec<String>,
    covered: BTreeSet<(String, String)>,
}

impl<'a> Checker<'a> {
    /// A checker of `sb`'s answers against `specs`, with nothing checked yet.
    fn new(specs: &'a OpenApiSpecs, sb: &'a SandboxHandle) -> Self {
        Self {
            specs,
            sb,
            http: reqwest::Client::new(),
            failures: Vec::new(),
            covered: BTreeSet::new(),
        }
    }

    /// Fails the test with every conformance failure found, if any.
    fn assert_no_failures(&self) {
        assert!(
            self.failures.is_empty(),
            "{} conformance failures:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }

    /// Sends a request and validates the answer; returns status and JSON body.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Body,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.sb.base_url());
        let mut req = self.http.request(method.clone(), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Body::None => req,
            Body::Json(v) => req.json(&v),
            Body::Form(f) => req.form(&f),
        };
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

    async fn api(&mut self, method: Method, path: &str, body: Body) -> (u16, Value) {
        let token = self.sb.access_token().to_owned();
        self.call(method, path, Some(&token), body).await
    }
}

enum Body {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
}

fn form(pairs: &[(&str, &str)]) -> Body {
    Body::Form(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

const C: &str = "/crm/v3/objects/contacts";

fn search_body(filters: Value, after: &str) -> Body {
    Body::Json(
        json!({"filterGroups": [{"filters": filters}], "sorts": ["-createdate"], "properties": ["email"], "limit": 2, "after": after}),
    )
}

#[tokio::test]
async fn sandbox_answers_and_requests_validate_against_hubspots_specs() {
    let Some(specs) = OpenApiSpecs::load_or_skip("sandbox_conformance") else {
        return;
    };
    let args = SandboxArgs {
        requests_per_10s: 1000,
        search_per_second: 0,
        rng_seed: Some(1),
        ..SandboxArgs::default()
    };
    let sb = Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("starts");
    sb.set_recording(true);
    let mut ck = Checker::new(&specs, &sb);
    exercise_contacts(&mut ck).await;
    exercise_properties(&mut ck).await;
    exercise_oauth_and_account(&mut ck).await;

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
    assert!(recorded.len() > 40, "requests were recorded");
    ck.failures.extend(validate_requests(&specs, &recorded));

    let expected_ops = [
        ("GET", "/crm/v3/objects/contacts"),
        ("POST", "/crm/v3/objects/contacts"),
        ("GET", "/crm/v3/objects/contacts/{contactId}"),
        ("PATCH", "/crm/v3/objects/contacts/{contactId}"),
        ("DELETE", "/crm/v3/objects/contacts/{contactId}"),
        ("POST", "/crm/v3/objects/contacts/batch/read"),
        ("POST", "/crm/v3/objects/contacts/batch/create"),
        ("POST", "/crm/v3/objects/contacts/batch/update"),
        ("POST", "/crm/v3/objects/contacts/batch/upsert"),
        ("POST", "/crm/v3/objects/contacts/batch/archive"),
        ("POST", "/crm/v3/objects/contacts/search"),
        ("POST", "/crm/v3/objects/contacts/merge"),
        ("POST", "/crm/v3/objects/contacts/gdpr-delete"),
        ("GET", "/crm/objects/2026-03/contacts"),
        ("POST", "/crm/objects/2026-03/contacts/batch/read"),
        ("GET", "/crm/v3/properties/{objectType}"),
        ("POST", "/crm/v3/properties/{objectType}"),
        ("GET", "/crm/v3/properties/{objectType}/{propertyName}"),
        ("PATCH", "/crm/v3/properties/{objectType}/{propertyName}"),
        ("DELETE", "/crm/v3/properties/{objectType}/{propertyName}"),
        ("POST", "/oauth/v1/token"),
        ("GET", "/oauth/v1/access-tokens/{token}"),
        ("GET", "/oauth/v1/refresh-tokens/{token}"),
        ("DELETE", "/oauth/v1/refresh-tokens/{token}"),
        ("POST", "/oauth/v3/token"),
        ("POST", "/oauth/v3/token/introspect"),
        ("POST", "/oauth/v3/token/revoke"),
        ("POST", "/oauth/2026-03/token"),
        ("POST", "/oauth/2026-03/token/introspect"),
        ("POST", "/oauth/2026-03/token/revoke"),
        ("GET", "/account-info/v3/details"),
        ("GET", "/account-info/v3/api-usage/daily/private-apps"),
    ];
    for (m, t) in expected_ops {
        if !ck.covered.contains(&(m.to_owned(), t.to_owned())) {
            ck.failures.push(format!(
                "{m} {t}: implemented but not exercised against the spec"
            ));
        }
    }
    ck.assert_no_failures();
}

async fn exercise_contacts(ck: &mut Checker<'_>) {
    let create = |email: &str, trace: Option<&str>| {
        let mut input = json!({"properties": {"email": email, "firstname": "Ada", "lastname": "Lovelace"}, "associations": []});
        if let Some(t) = trace {
            input["objectWriteTraceId"] = json!(t);
        }
        input
    };
    let (s, out) = ck
        .api(Method::POST, &format!("{C}/batch/create"), Body::Json(json!({"inputs": [create("a@example.com", None), create("b@example.com", None), create("c@example.com", None)]})))
        .await;
    assert_eq!(s, 201, "{out}");
    let ids: Vec<String> = out["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or("").to_owned())
        .collect();
    // 409, 400 and 207 answers of batch create.
    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/create"),
            Body::Json(json!({"inputs": [create("A@example.com", None)]})),
        )
        .await;
    assert_eq!(s, 409);
    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/create"),
            Body::Json(json!({"inputs": [create("bad@", None)]})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = ck
        .api(Method::POST, &format!("{C}/batch/create"), Body::Json(json!({"inputs": [create("d@example.com", Some("t1")), create("bad@", Some("t2"))]})))
        .await;
    assert_eq!(s, 207);

    let (s, single) = ck
        .api(
            Method::POST,
            C,
            Body::Json(json!({"properties": {"email": "single@example.com"}, "associations": []})),
        )
        .await;
    assert_eq!(s, 201);
    let single_id = single["id"].as_str().unwrap_or("").to_owned();
    let (s, _) = ck
        .api(
            Method::POST,
            C,
            Body::Json(json!({"properties": {"email": "single@example.com"}, "associations": []})),
        )
        .await;
    assert_eq!(s, 409);

    let (s, _) = ck
        .api(
            Method::GET,
            &format!("{C}?limit=2&properties=email,firstname"),
            Body::None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = ck
        .api(
            Method::GET,
            "/crm/objects/2026-03/contacts?limit=2",
            Body::None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = ck
        .api(
            Method::GET,
            &format!("{C}/{}?propertiesWithHistory=email", ids[0]),
            Body::None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = ck.api(Method::GET, &format!("{C}/999"), Body::None).await;
    assert_eq!(s, 404);
    let (s, _) = ck
        .call(Method::GET, C, Some("wrong-token"), Body::None)
        .await;
    assert_eq!(s, 401);

    let (s, _) = ck
        .api(
            Method::PATCH,
            &format!("{C}/{single_id}"),
            Body::Json(json!({"properties": {"lastname": "Hopper"}})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = ck
        .api(
            Method::PATCH,
            &format!("{C}/{single_id}"),
            Body::Json(json!({"properties": {"nope": "x"}})),
        )
        .await;
    assert_eq!(s, 400);

    let read = |id_list: Vec<&str>| {
        let inputs: Vec<Value> = id_list.into_iter().map(|i| json!({"id": i})).collect();
        Body::Json(json!({"inputs": inputs, "properties": ["email"], "propertiesWithHistory": []}))
    };
    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/read"),
            read(vec![&ids[0], &ids[1]]),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/read"),
            read(vec![&ids[0], "1"]),
        )
        .await;
    assert_eq!(s, 207);
    let (s, _) = ck
        .api(
            Method::POST,
            "/crm/objects/2026-03/contacts/batch/read",
            read(vec![&ids[0]]),
        )
        .await;
    assert_eq!(s, 200);

    let update = |id: &str, trace: &str| json!({"id": id, "properties": {"firstname": "Changed"}, "objectWriteTraceId": trace});
    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/update"),
            Body::Json(json!({"inputs": [update(&ids[0], "u1")]})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/update"),
            Body::Json(json!({"inputs": [update(&ids[0], "u1"), update("77", "u2")]})),
        )
        .await;
    assert_eq!(s, 207);
    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/update"),
            Body::Json(json!({"inputs": [update(&ids[0], "u1"), update(&ids[0], "u2")]})),
        )
        .await;
    assert_eq!(s, 400);

    let upsert =
        |id: &str| json!({"idProperty": "email", "id": id, "properties": {"lastname": "Up"}});
    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/upsert"),
            Body::Json(json!({"inputs": [upsert("a@example.com"), upsert("new@example.com")]})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/upsert"),
            Body::Json(json!({"inputs": [upsert("e@example.com"), upsert("broken@")]})),
        )
        .await;
    assert_eq!(s, 207);

    let filters =
        json!([{"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "*@example.com"}]);
    let (s, page) = ck
        .api(
            Method::POST,
            &format!("{C}/search"),
            search_body(filters.clone(), "0"),
        )
        .await;
    assert_eq!(s, 200);
    assert!(page["paging"]["next"]["after"].is_string());
    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/search"),
            search_body(filters, "10000"),
        )
        .await;
    assert_eq!(s, 400);

    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/merge"),
            Body::Json(json!({"primaryObjectId": ids[0], "objectIdToMerge": ids[1]})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/merge"),
            Body::Json(json!({"primaryObjectId": ids[0], "objectIdToMerge": "5"})),
        )
        .await;
    assert_eq!(s, 404);

    let (s, _) = ck
        .api(Method::DELETE, &format!("{C}/{single_id}"), Body::None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/archive"),
            Body::Json(json!({"inputs": [{"id": ids[2]}]})),
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = ck
        .api(
            Method::POST,
            &format!("{C}/gdpr-delete"),
            Body::Json(json!({"objectId": ids[0]})),
        )
        .await;
    assert_eq!(s, 204);
}

async fn exercise_properties(ck: &mut Checker<'_>) {
    let p = "/crm/v3/properties/contacts";
    let def = json!({"name": "favorite_color", "label": "Favorite color", "type": "enumeration", "fieldType": "select",
                     "groupName": "contactinformation", "hasUniqueValue": false,
                     "options": [{"label": "Red", "value": "red", "hidden": false, "displayOrder": 1}]});
    let (s, _) = ck.api(Method::POST, p, Body::Json(def.clone())).await;
    assert_eq!(s, 201);
    let (s, _) = ck.api(Method::POST, p, Body::Json(def)).await;
    assert_eq!(s, 409);
    let (s, _) = ck.api(Method::GET, p, Body::None).await;
    assert_eq!(s, 200);
    let (s, _) = ck
        .api(Method::GET, &format!("{p}/favorite_color"), Body::None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = ck
        .api(Method::GET, &format!("{p}/no_such"), Body::None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = ck
        .api(
            Method::PATCH,
            &format!("{p}/favorite_color"),
            Body::Json(json!({"label": "Colour"})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = ck
        .api(Method::DELETE, &format!("{p}/favorite_color"), Body::None)
        .await;
    assert_eq!(s, 204);
}

async fn exercise_oauth_and_account(ck: &mut Checker<'_>) {
    let redirect = "http://localhost:3001/oauth-callback";
    let auth = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(ck.sb.authorize_url())
        .query(&[
            ("client_id", ck.sb.client_id()),
            ("redirect_uri", redirect),
            ("scope", "crm.objects.contacts.read"),
            ("state", "s"),
        ])
        .send()
        .await
        .expect("answer");
    let location = auth.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let code = reqwest::Url::parse(&location)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code");
    let (client_id, secret) = (
        ck.sb.client_id().to_owned(),
        ck.sb.client_secret().to_owned(),
    );
    let exchange = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
        ("redirect_uri", redirect),
        ("code", code.as_str()),
    ];
    let (s, tokens) = ck
        .call(Method::POST, "/oauth/v1/token", None, form(&exchange))
        .await;
    assert_eq!(s, 200, "{tokens}");
    let (s, _) = ck
        .call(Method::POST, "/oauth/v1/token", None, form(&exchange))
        .await;
    assert_eq!(s, 400, "a used code");
    let access = tokens["access_token"].as_str().unwrap_or("").to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap_or("").to_owned();
    let refresh_form = [
        ("grant_type", "refresh_token"),
        ("client_id", client_id.as_str()),
        ("client_secret", secret.as_str()),
        ("refresh_token", refresh.as_str()),
    ];
    for path in ["/oauth/v3/token", "/oauth/2026-03/token"] {
        let (s, _) = ck.call(Method::POST, path, None, form(&refresh_form)).await;
        assert_eq!(s, 200);
    }
    let (s, _) = ck
        .call(
            Method::GET,
            &format!("/oauth/v1/access-tokens/{access}"),
            None,
            Body::None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = ck
        .call(
            Method::GET,
            &format!("/oauth/v1/refresh-tokens/{refresh}"),
            None,
            Body::None,
        )
        .await;
    assert_eq!(s, 200);
    for path in [
        "/oauth/v3/token/introspect",
        "/oauth/2026-03/token/introspect",
    ] {
        for (tok, hint) in [
            (access.as_str(), "access_token"),
            (refresh.as_str(), "refresh_token"),
        ] {
            let f = [
                ("client_id", client_id.as_str()),
                ("client_secret", secret.as_str()),
                ("token", tok),
                ("token_type_hint", hint),
            ];
            let (s, _) = ck.call(Method::POST, path, None, form(&f)).await;
            assert_eq!(s, 200);
        }
    }
    let (s, _) = ck
        .call(
            Method::GET,
            "/account-info/v3/details",
            Some(&access),
            Body::None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = ck
        .api(
            Method::GET,
            "/account-info/v3/api-usage/daily/private-apps",
            Body::None,
        )
        .await;
    assert_eq!(s, 200);
    ck.sb.expire_access_tokens();
    let (s, _) = ck.call(Method::GET, C, Some(&access), Body::None).await;
    assert_eq!(s, 401, "expired");
    for path in ["/oauth/v3/token/revoke", "/oauth/2026-03/token/revoke"] {
        let f = [
            ("client_id", client_id.as_str()),
            ("client_secret", secret.as_str()),
            ("token", access.as_str()),
        ];
        let (s, _) = ck.call(Method::POST, path, None, form(&f)).await;
        assert_eq!(s, 200);
    }
    let (s, _) = ck
        .call(
            Method::DELETE,
            &format!("/oauth/v1/refresh-tokens/{refresh}"),
            None,
            Body::None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, _) = ck
        .call(Method::POST, "/oauth/v1/token", None, form(&refresh_form))
        .await;
    assert_eq!(s, 400, "a deleted refresh token");
}

/// The alternative answers whose shapes the specs can judge: a `null` property value breaks
/// the spec's `additionalProperties: {type: string}` by design (HubSpot is reported to send
/// one anyway), so those two variants stay at their defaults here.
fn spec_shaped_alternative() -> Variants {
    Variants {
        empty_values: EmptyValues::Omitted,
        search_modified: SearchModified::Returned,
        ..Variants::alternative()
    }
}

#[tokio::test]
async fn the_alternative_answers_validate_against_hubspots_specs() {
    let Some(specs) = OpenApiSpecs::load_or_skip("sandbox_conformance variants") else {
        return;
    };
    let args = SandboxArgs {
        requests_per_10s: 0,
        search_per_second: 0,
        rng_seed: Some(2),
        ..SandboxArgs::default()
    }
    .with_variants(spec_shaped_alternative());
    let sb = Sandbox::start(args, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("starts");
    let mut ck = Checker::new(&specs, &sb);
    exercise_variants(&mut ck).await;
    ck.assert_no_failures();
}

async fn exercise_variants(ck: &mut Checker<'_>) {
    let input = |email: &str, trace: &str| json!({"properties": {"email": email}, "objectWriteTraceId": trace});
    let create = format!("{C}/batch/create");
    let inputs = json!({"inputs": [input("a@example.com", "t0"), input("b@example.com", "t1"), input("c@example.com", "t2")]});
    let (s, out) = ck.api(Method::POST, &create, Body::Json(inputs)).await;
    assert_eq!(s, 201, "{out}");
    let mut ids: Vec<String> = out["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or("").to_owned())
        .collect();
    ids.sort();
    // Per-input conflicts: an existing email and a twin inside the batch.
    let clashing = json!({"inputs": [input("d@example.com", "t0"), input("a@example.com", "t1"), input("d@example.com", "t2")]});
    let (s, out) = ck.api(Method::POST, &create, Body::Json(clashing)).await;
    assert_eq!(s, 207, "{out}");
    let update = json!({"inputs": [
        {"id": ids[0], "properties": {"email": "b@example.com"}, "objectWriteTraceId": "u0"},
        {"id": ids[2], "properties": {"firstname": "Kept"}, "objectWriteTraceId": "u1"},
    ]});
    let (s, out) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/update"),
            Body::Json(update),
        )
        .await;
    assert_eq!(s, 207, "{out}");
    let upsert = json!({"inputs": [
        {"idProperty": "email", "id": "e@example.com", "properties": {}, "objectWriteTraceId": "s0"},
        {"idProperty": "email", "id": "c@example.com", "properties": {"email": "a@example.com"}, "objectWriteTraceId": "s1"},
    ]});
    let (s, out) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/upsert"),
            Body::Json(upsert),
        )
        .await;
    assert_eq!(s, 207, "{out}");
    // Missing ids left out: a 200 without errors.
    let read = json!({"inputs": [{"id": ids[0]}, {"id": "1"}], "properties": ["email"], "propertiesWithHistory": []});
    let (s, out) = ck
        .api(Method::POST, &format!("{C}/batch/read"), Body::Json(read))
        .await;
    assert_eq!(s, 200, "{out}");
    let missing = json!({"inputs": [{"id": "1", "properties": {"firstname": "X"}, "objectWriteTraceId": "m"}]});
    let (s, out) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/update"),
            Body::Json(missing.clone()),
        )
        .await;
    assert_eq!(s, 200, "{out}");
    // ... or reported, merged-away ids included.
    ck.sb.set_variants(Variants {
        missing_ids: MissingIds::AllReported,
        ..spec_shaped_alternative()
    });
    let (s, out) = ck
        .api(
            Method::POST,
            &format!("{C}/merge"),
            Body::Json(json!({"primaryObjectId": ids[1], "objectIdToMerge": ids[2]})),
        )
        .await;
    assert_eq!(s, 200, "{out}");
    let merged = json!({"inputs": [{"id": ids[2], "properties": {"firstname": "X"}, "objectWriteTraceId": "m"}]});
    let (s, out) = ck
        .api(
            Method::POST,
            &format!("{C}/batch/update"),
            Body::Json(merged),
        )
        .await;
    assert_eq!(s, 207, "{out}");
    // A validation 400 naming only the first bad value.
    let (s, out) = ck
        .api(
            Method::POST,
            C,
            Body::Json(json!({"properties": {"email": "bad@", "nope": "x"}})),
        )
        .await;
    assert_eq!(s, 400, "{out}");
}

#[test]
fn the_oracle_rejects_bodies_that_break_the_schema() {
    let Some(specs) = OpenApiSpecs::load_or_skip("sandbox_conformance oracle") else {
        return;
    };
    let missing_id = br#"{"properties":{},"createdAt":"2024-01-01T00:00:00.000Z","updatedAt":"2024-01-01T00:00:00.000Z","archived":false}"#;
    assert!(specs.validate_response("POST", C, 201, missing_id).is_err());
    let bad_date = br#"{"id":"1","properties":{},"createdAt":"yesterday","updatedAt":"2024-01-01T00:00:00.000Z","archived":false}"#;
    assert!(
        specs.validate_response("POST", C, 201, bad_date).is_err(),
        "formats are checked"
    );
    let number_value = br#"{"id":"1","properties":{"n":1},"createdAt":"2024-01-01T00:00:00.000Z","updatedAt":"2024-01-01T00:00:00.000Z","archived":false}"#;
    assert!(
        specs
            .validate_response("POST", C, 201, number_value)
            .is_err(),
        "property values are strings"
    );
    let no_category = br#"{"status":"error","message":"x","correlationId":"aeb5f871-7f07-4993-9211-075dc63e7cbf"}"#;
    assert!(
        specs
            .validate_response("POST", C, 409, no_category)
            .is_err()
    );
    let null_value = br#"{"id":"1","properties":{"phone":null},"createdAt":"2024-01-01T00:00:00.000Z","updatedAt":"2024-01-01T00:00:00.000Z","archived":false}"#;
    assert!(
        specs.validate_response("POST", C, 201, null_value).is_err(),
        "the specs type property values as non-null strings (why the null variant is not checked)"
    );
    let search_without_required = br#"{"filterGroups":[]}"#;
    assert!(
        specs
            .validate_request(
                "POST",
                "/crm/v3/objects/contacts/search",
                Some("application/json"),
                search_without_required
            )
            .is_err()
    );
}
