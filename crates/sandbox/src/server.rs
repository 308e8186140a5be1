//! The request pipeline: route, admin or OAuth or API; for the API authenticate, check the
//! scope, count against the limits, draw faults, run the operation, maybe drop the
//! connection; stamp correlation ids and rate-limit headers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use poem::http::{HeaderMap, HeaderValue, StatusCode};
use poem::{Endpoint, Request, Response};

use super::RecordedRequest;
use super::api;
use super::clock::{iso_millis, now_ms};
use super::errors::{ApiError, uuid_v4};
use super::faults::Fault;
use super::limits::{AppKey, Budget, Refusal};
use super::oauth::{Authorize, TokenCheck, parse_params, refused_page};
use super::routes::{ApiOp, Bucket, OAuthOp, OpKind, Target, route};
use super::state::{PERSON_OP, State, lock};
use super::wire::json;

/// Largest request body read (HubSpot's batch bodies are far smaller).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Who is calling.
struct Principal {
    app: AppKey,
    token: String,
    /// None for the private app (all scopes).
    scopes: Option<Vec<String>>,
}

/// The poem endpoint that serves everything.
pub(crate) struct SandboxEndpoint {
    /// Shared state.
    pub state: Arc<State>,
}

impl Endpoint for SandboxEndpoint {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        Ok(handle(&self.state, req).await)
    }
}

async fn handle(state: &Arc<State>, mut req: Request) -> Response {
    let correlation = uuid_v4();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let peer = req.remote_addr().as_socket_addr().copied();
    let target = route(&method, &path);
    // Refused writes count too: a save that finds nothing new costs little.
    let changes_state = target.may_change_state();
    let body = match req.take_body().into_bytes_limit(MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            let resp = ApiError::validation(format!("Could not read the request body: {e}"))
                .into_response(&correlation);
            return finish(state, None, resp, &correlation);
        }
    };
    if let Target::Admin(op) = target {
        let resp = super::admin::handle(state, op, peer, &body).await;
        if changes_state {
            state.changed();
        }
        return finish(state, Some("admin"), resp, &correlation);
    }
    record(state, &req, &path, &query, &body);
    if !state.cfg.latency.is_zero() {
        tokio::time::sleep(state.cfg.latency).await;
    }
    let (op_name, resp) = match target {
        Target::OAuth(op) => (Some("oauth"), oauth(state, op, &query, &body, &correlation)),
        Target::Api(op) => {
            // A person's action in HubSpot's UI is no call of the app's: counted apart.
            let name = match super::webhooks::Actor::of(req.headers()) {
                super::webhooks::Actor::App => op.name(),
                super::webhooks::Actor::User(_) | super::webhooks::Actor::HubSpot => PERSON_OP,
            };
            (
                Some(name),
                api_call(state, op, req.headers(), peer, &query, &body, &correlation).await,
            )
        }
        Target::MethodNotAllowed => (
            None,
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "VALIDATION_ERROR",
                format!("{method} is not supported on {path}"),
            )
            .into_response(&correlation),
        ),
        Target::NotFound | Target::Admin(_) => (
            None,
            ApiError::new(
                StatusCode::NOT_FOUND,
                "OBJECT_NOT_FOUND",
                format!("No route for {method} {path}"),
            )
            .into_response(&correlation),
        ),
    };
    if changes_state {
        state.changed();
    }
    finish(state, op_name, resp, &correlation)
}

fn finish(
    state: &State,
    op: Option<&'static str>,
    mut resp: Response,
    correlation: &str,
) -> Response {
    if let Ok(v) = HeaderValue::from_str(correlation) {
        resp.headers_mut().insert("X-HubSpot-Correlation-Id", v);
    }
    state.stats.count(op, resp.status());
    resp
}

fn record(state: &State, req: &Request, path: &str, query: &str, body: &[u8]) {
    let mut recorder = lock(&state.recorder);
    if let Some(list) = recorder.as_mut() {
        list.push(RecordedRequest {
            method: req.method().to_string(),
            path: path.to_owned(),
            query: query.to_owned(),
            content_type: req.header("content-type").map(str::to_owned),
            body: body.to_vec(),
        });
    }
}

fn oauth(state: &State, op: OAuthOp, query: &str, body: &[u8], correlation: &str) -> Response {
    let now = now_ms();
    let result = match op {
        OAuthOp::Authorize => {
            return match state.oauth.authorize(&parse_params(query.as_bytes()), now) {
                Authorize::Redirect(url) => Response::builder()
                    .status(StatusCode::FOUND)
                    .header("Location", url)
                    .finish(),
                Authorize::Refused(reason) => Response::builder()
                    .status(StatusCode::BAD_REQUEST)
                    .content_type("text/html; charset=utf-8")
                    .body(refused_page(&reason)),
            };
        }
        OAuthOp::Token => {
            // v1 also takes parameters in the query; the form body wins.
            let mut params = parse_params(query.as_bytes());
            params.extend(parse_params(body));
            state.oauth.token(&params, now)
        }
        OAuthOp::Introspect => state.oauth.introspect(&parse_params(body), now),
        OAuthOp::Revoke => state
            .oauth
            .revoke(&parse_params(body))
            .map(|()| serde_json::Value::Null),
        OAuthOp::AccessTokenInfo(t) => state.oauth.access_token_info(&t, now),
        OAuthOp::RefreshTokenInfo(t) => state.oauth.refresh_token_info(&t),
        OAuthOp::DeleteRefreshToken(t) => {
            state.oauth.delete_refresh(&t);
            return Response::builder().status(StatusCode::NO_CONTENT).finish();
        }
    };
    match result {
        Ok(serde_json::Value::Null) => Response::builder().status(StatusCode::OK).finish(),
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => e.into_response(correlation),
    }
}

async fn api_call(
    state: &Arc<State>,
    op: ApiOp,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    query: &str,
    body: &[u8],
    correlation: &str,
) -> Response {
    let principal = match authenticate(state, headers) {
        Ok(p) => p,
        Err(e) => {
            state.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            return e.into_response(correlation);
        }
    };
    let scopes = op.required_scopes();
    if principal
        .scopes
        .as_ref()
        .is_some_and(|s| !s.iter().any(|x| scopes.contains(&x.as_str())))
    {
        return ApiError::missing_scopes(&scopes).into_response(correlation);
    }
    let kind = op.kind();
    let now = Instant::now();
    let actor = super::webhooks::Actor::of(headers);
    let bucket = op.bucket();
    let budget = if actor != super::webhooks::Actor::App {
        // HubSpot's limits are the app's: what a person does in the UI spends none of them.
        None
    } else {
        let admitted = match bucket {
            Bucket::Search => state
                .limits
                .admit_search(&principal.token, now)
                .map(|()| None),
            Bucket::General => state.limits.admit(&principal.app, now).map(Some),
            Bucket::Associations => state
                .limits
                .admit_associations(&principal.app, now)
                .map(Some),
        };
        match admitted {
            Ok(b) => b,
            Err(refusal) => return too_many(state, refusal, bucket, correlation),
        }
    };
    let fault = state.faults.draw(kind == OpKind::Write);
    let mut resp = if let Fault::ServerError(code) = fault {
        state.stats.faults_5xx.fetch_add(1, Ordering::Relaxed);
        ApiError::new(
            code,
            "INTERNAL_ERROR",
            "The sandbox injected a server error (--fault-5xx); nothing was applied.",
        )
        .into_response(correlation)
    } else {
        match super::webhooks::ACTOR
            .scope(actor, api::dispatch(state, op, query, body))
            .await
        {
            Ok(r) => r,
            Err(e) => e.into_response(correlation),
        }
    };
    // An applied write the dice spared may still lose its answer to the schedule.
    let fault =
        if kind == OpKind::Write && resp.status().is_success() && state.faults.scheduled_drop() {
            Fault::DropAfterWrite
        } else {
            fault
        };
    if matches!(fault, Fault::DropAfterWrite | Fault::DropRead)
        && resp.status().is_success()
        && let Some(peer) = peer
        && state.connections.kill(&peer)
    {
        let counter = if fault == Fault::DropRead {
            &state.stats.dropped_reads
        } else {
            &state.stats.dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(b) = budget {
        add_budget_headers(resp.headers_mut(), &b);
    }
    resp
}

fn authenticate(state: &State, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_owned())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(ApiError::invalid_authentication)?;
    if state.cfg.access_token.matches(&token) {
        return Ok(Principal {
            app: AppKey::PrivateApp,
            token,
            scopes: None,
        });
    }
    let now = now_ms();
    match state.oauth.check(&token, now) {
        TokenCheck::Valid(scopes) => Ok(Principal {
            app: AppKey::OAuthClient(state.cfg.client_id.clone()),
            token,
            scopes: Some(scopes),
        }),
        TokenCheck::Expired(at) => Err(ApiError::expired_authentication(
            (now - at) / 1000,
            iso_millis(at),
        )),
        TokenCheck::Unknown => Err(ApiError::invalid_authentication()),
    }
}

fn too_many(state: &State, refusal: Refusal, bucket: Bucket, correlation: &str) -> Response {
    state.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
    let (message, policy) = match refusal {
        Refusal::TenSecondly => (
            "You have reached your ten_secondly_rolling limit.",
            "TEN_SECONDLY_ROLLING",
        ),
        Refusal::Secondly => ("You have reached your secondly limit.", "SECONDLY"),
        Refusal::Daily => ("You have reached your daily limit.", "DAILY"),
    };
    let mut resp = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITS", message)
        .field("errorType", "RATE_LIMIT")
        .field("policyName", policy)
        .field("requestId", uuid_v4())
        .into_response(correlation);
    if refusal == Refusal::TenSecondly {
        let max = match bucket {
            Bucket::Associations => state.limits.associations_per_10s(),
            Bucket::General | Bucket::Search => state.limits.per_10s(),
        };
        let b = Budget {
            max,
            remaining: 0,
            secondly: max.div_ceil(10),
            secondly_remaining: 0,
            daily_used: None,
        };
        add_budget_headers(resp.headers_mut(), &b);
    }
    resp
}

fn add_budget_headers(headers: &mut HeaderMap, b: &Budget) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    if let Some(used) = b.daily_used {
        put(
            "X-HubSpot-RateLimit-Daily",
            super::limits::DAILY_LIMIT.to_string(),
        );
        put(
            "X-HubSpot-RateLimit-Daily-Remaining",
            super::limits::DAILY_LIMIT.saturating_sub(used).to_string(),
        );
    }
    if b.max > 0 {
        put(
            "X-HubSpot-RateLimit-Interval-Milliseconds",
            "10000".to_owned(),
        );
        put("X-HubSpot-RateLimit-Max", b.max.to_string());
        put("X-HubSpot-RateLimit-Remaining", b.remaining.to_string());
        put("X-HubSpot-RateLimit-Secondly", b.secondly.to_string());
        put(
            "X-HubSpot-RateLimit-Secondly-Remaining",
            b.secondly_remaining.to_string(),
        );
    }
}
