//! The JSON error envelope `{"error":{"code":"...","message":"..."}}` (INTERFACE §4.2) and the
//! translation of every other error (poem's own router, extractor and body errors) into it.

use poem::error::{MethodNotAllowedError, NotFoundError, ResponseError};
use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaResponse, MetaResponses, Registry};
use poem_openapi::{ApiResponse, Enum, Object, ResponseContent, payload::Json};

use crate::store::StoreError;

/// Machine-readable error codes; clients branch on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 401: no, a malformed or a wrong bearer token.
    Unauthorized,
    /// 404: no such route or resource.
    NotFound,
    /// 405: the route exists, but not for this method.
    MethodNotAllowed,
    /// 422: a query or path parameter is not of its type, out of range or not one of its
    /// choices.
    InvalidParameter,
    /// 400: the request body could not be read as JSON at all.
    InvalidBody,
    /// 422: the JSON body does not fit its schema (unknown, missing or wrongly typed field, a
    /// value that is not one of its choices), or asks for something this version cannot do.
    InvalidRequest,
    /// 409: the request conflicts with the resource's state (e.g. cancelling a finished job).
    Conflict,
    /// 413: the request body is larger than the server accepts.
    PayloadTooLarge,
    /// 415: the request body has a content type the route does not accept.
    UnsupportedMediaType,
    /// 503: the database does not answer.
    DatabaseUnavailable,
    /// 503: the service cannot answer right now.
    ServiceUnavailable,
    /// 429: the client sent too many requests; `Retry-After` says when to try again.
    RateLimited,
    /// 401: a webhook's `X-HubSpot-Signature-v3` is missing, wrong or stale.
    InvalidSignature,
    /// 404: no HubSpot account is connected (install the app at `/api/install`).
    NotConnected,
    /// 409 or 503: HubSpot refused the refresh token (the app was uninstalled); install again.
    HubspotConnectionBroken,
    /// 503: the stored HubSpot tokens do not decrypt with the configured keys.
    HubspotTokensUnreadable,
    /// 502: HubSpot did not answer usably.
    HubspotUnavailable,
    /// 500: a fault on the server's side; details are in the server log only.
    InternalError,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::InvalidParameter => "invalid_parameter",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::InvalidSignature => "invalid_signature",
            ErrorCode::NotConnected => "not_connected",
            ErrorCode::HubspotConnectionBroken => "hubspot_connection_broken",
            ErrorCode::HubspotTokensUnreadable => "hubspot_tokens_unreadable",
            ErrorCode::HubspotUnavailable => "hubspot_unavailable",
            ErrorCode::InternalError => "internal_error",
        }
    }

    /// The code for an error that carries nothing but its status.
    fn for_status(status: StatusCode) -> ErrorCode {
        match status {
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::CONFLICT => ErrorCode::Conflict,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::ServiceUnavailable,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            s if s.is_client_error() => ErrorCode::InvalidRequest,
            _ => ErrorCode::InternalError,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inner object of [`ErrorBody`].
#[derive(Debug, Clone, Object)]
pub struct ErrorDetail {
    /// Stable, machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation, safe to show (never SQL, paths or secrets).
    pub message: String,
}

/// The message of every 5xx answer: details stay in the server log.
const INTERNAL_MESSAGE: &str = "internal server error; the details are in the server log";

/// An error answer of the API: status, code and message, rendered as the JSON envelope.
///
/// Handlers return `Result<_, ApiError>`; poem-openapi turns it into a `poem::Error` that the
/// envelope layer recognises and passes through unchanged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl ApiError {
    /// An error with an explicit status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 422 `invalid_parameter`: `message` should name the parameter and what is accepted.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidParameter,
            message,
        )
    }

    /// 422 `invalid_request`: `message` should name the body field(s) and what is accepted.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidRequest,
            message,
        )
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 503 `database_unavailable`; `cause` goes to the log only.
    pub fn database_unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "the database does not answer");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DatabaseUnavailable,
            "the database does not answer",
        )
    }

    /// 500 `internal_error` with a generic message; `what` and `cause` go to the log only.
    pub fn internal(what: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "{what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            INTERNAL_MESSAGE,
        )
    }

    /// 503 when the database cannot be reached, else 500; `what` and the cause go to the log.
    pub fn from_store(what: &str, err: &StoreError) -> Self {
        let unreachable = matches!(
            err,
            StoreError::Unreachable { .. }
                | StoreError::Query(
                    sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Io(_)
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::WorkerCrashed
                )
        );
        if unreachable {
            Self::database_unavailable(&format_args!("{what}: {err}"))
        } else {
            Self::internal(what, err)
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The envelope this error is rendered as.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.as_response()
    }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        self.status
    }

    fn as_response(&self) -> Response {
        let mut resp = Json(self.body()).into_response();
        resp.set_status(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: tell the client which scheme the resource expects.
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The error statuses an operation documents besides those its success type documents (a
/// 404 or 409 it answers with a body of its own).
pub trait ErrorStatuses: Send + Sync + 'static {
    /// Status and description of each error answer.
    const STATUSES: &'static [(u16, &'static str)];
}

const UNAUTHORIZED: (u16, &str) = (401, "Missing or wrong bearer token (code `unauthorized`)");
const INTERNAL: (u16, &str) = (500, "Internal error (details in the server log)");
const UNAVAILABLE: (u16, &str) = (
    503,
    "The database does not answer (code `database_unavailable`)",
);
const INVALID_PARAMETER: (u16, &str) = (
    422,
    "A query or path parameter is not of its type, out of range or not one of its choices \
     (code `invalid_parameter`)",
);

/// A protected operation that takes no input that could be malformed.
pub struct NoInput;

impl ErrorStatuses for NoInput {
    const STATUSES: &'static [(u16, &'static str)] = &[UNAUTHORIZED, INTERNAL, UNAVAILABLE];
}

/// A protected operation with query or path parameters that may not parse.
pub struct ParamInput;

impl ErrorStatuses for ParamInput {
    const STATUSES: &'static [(u16, &'static str)] =
        &[UNAUTHORIZED, INVALID_PARAMETER, INTERNAL, UNAVAILABLE];
}

/// A protected operation with a JSON body ([`super::json_body::JsonBody`]).
pub struct JsonInput;

impl ErrorStatuses for JsonInput {
    const STATUSES: &'static [(u16, &'static str)] = &[
        (400, "The body is not JSON at all (code `invalid_body`)"),
        UNAUTHORIZED,
        (
            415,
            "No `Content-Type: application/json` (code `unsupported_media_type`)",
        ),
        (
            422,
            "The JSON does not fit: unknown, missing or wrongly typed field, or a value that is \
             not one of its choices; the message names the field(s) (code `invalid_request`)",
        ),
        INTERNAL,
        UNAVAILABLE,
    ];
}

/// An [`ApiError`] answered by an operation that documents the statuses of `D`.
///
/// The statuses are documented per kind of operation so that the OpenAPI document lists what
/// each one can really answer (and nothing it cannot).
pub struct Failure<D>(ApiError, std::marker::PhantomData<fn() -> D>);

impl<D> Failure<D> {
    /// The error answered.
    pub fn error(&self) -> &ApiError {
        &self.0
    }
}

impl<D> std::fmt::Debug for Failure<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<D> From<ApiError> for Failure<D> {
    fn from(error: ApiError) -> Self {
        Self(error, std::marker::PhantomData)
    }
}

impl<D> From<Failure<D>> for poem::Error {
    fn from(failure: Failure<D>) -> Self {
        poem::Error::from(failure.0)
    }
}

impl<D: ErrorStatuses> ApiResponse for Failure<D> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: D::STATUSES
                .iter()
                .map(|&(status, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: <Json<ErrorBody> as ResponseContent>::media_types(),
                    headers: vec![],
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        <Json<ErrorBody> as ResponseContent>::register(registry);
    }
}

/// What the request carried in its `Authorization` header; only its kind, never its value,
/// so that a 401 can say what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PresentedCredentials {
    /// No `Authorization` header.
    None,
    /// A header with another scheme than `Bearer`.
    OtherScheme,
    /// A bearer token (which was then refused).
    Bearer,
}

impl PresentedCredentials {
    /// Classifies the request's `Authorization` header.
    pub(crate) fn of(req: &poem::Request) -> Self {
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return Self::None;
        };
        let is_bearer = value
            .as_bytes()
            .get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer "));
        if is_bearer {
            Self::Bearer
        } else {
            Self::OtherScheme
        }
    }

    fn unauthorized_message(self) -> &'static str {
        match self {
            Self::None => {
                "this route requires an `Authorization: Bearer <api token>` header (the api.token setting)"
            }
            Self::OtherScheme => "the Authorization header must use the Bearer scheme",
            Self::Bearer => "the bearer token is not valid",
        }
    }
}

/// What the envelope layer knows about the request whose error it translates.
pub(crate) struct RequestFacts {
    /// The request method.
    pub method: poem::http::Method,
    /// The request path, without the query (which may carry OAuth codes and states).
    pub path: String,
    /// The kind of credentials sent.
    pub credentials: PresentedCredentials,
}

/// Turns any error that reached the top of the app into the JSON envelope.
pub(crate) fn error_to_response(err: poem::Error, facts: &RequestFacts) -> Response {
    if err.is::<ApiError>() {
        return err.into_response();
    }
    let api = translate(&err, facts);
    let mut resp = api.into_response();
    // Keep the matched route for the metrics layer, except on "no such route", whose
    // pattern would be the catch-all of the nest and mislabel every unknown path.
    if !err.is::<NotFoundError>()
        && let Some(pattern) = err.data::<poem::PathPattern>()
    {
        resp.set_data(pattern.clone());
    }
    resp
}

fn translate(err: &poem::Error, facts: &RequestFacts) -> ApiError {
    use poem_openapi::error::{
        AuthorizationError, ContentTypeError, ParseMultipartError, ParseParamError, ParsePathError,
        ParseRequestPayloadError,
    };
    let status = err.status();
    if err.is::<NotFoundError>() {
        return ApiError::new(
            status,
            ErrorCode::NotFound,
            format!("no route for {} {}", facts.method, facts.path),
        );
    }
    if err.is::<MethodNotAllowedError>() {
        return ApiError::new(
            status,
            ErrorCode::MethodNotAllowed,
            format!("{} is not allowed on {}", facts.method, facts.path),
        );
    }
    if err.is::<AuthorizationError>() || status == StatusCode::UNAUTHORIZED {
        return ApiError::unauthorized(facts.credentials.unauthorized_message());
    }
    // The one rule for bad input (docs/api.md): a parameter that was read but does not fit is
    // a 422, like a JSON body that does not fit; 400 is only for a body that is not JSON.
    if let Some(param) = err.downcast_ref::<ParseParamError>() {
        return ApiError::invalid_parameter(format!(
            "invalid `{}`: {}",
            param.name,
            without_type_prefix(&param.reason)
        ));
    }
    if let Some(param) = err.downcast_ref::<ParsePathError>() {
        return ApiError::invalid_parameter(format!(
            "invalid `{}` in the path: {}",
            param.name,
            without_type_prefix(&param.reason)
        ));
    }
    if err.is::<ParseRequestPayloadError>()
        || err.is::<ParseMultipartError>()
        || err.is::<poem::error::ParseJsonError>()
    {
        return ApiError::new(status, ErrorCode::InvalidBody, err.to_string());
    }
    if err.is::<ContentTypeError>() {
        return ApiError::new(status, ErrorCode::UnsupportedMediaType, err.to_string());
    }
    let code = ErrorCode::for_status(status);
    if status.is_server_error() {
        tracing::error!(error = %err, status = status.as_u16(), "request failed");
        return ApiError::new(status, code, INTERNAL_MESSAGE);
    }
    ApiError::new(status, code, client_message(err, status))
}

/// poem-openapi wraps parse errors in `failed to parse "<type>": ... (occurred while parsing
/// "<type>")`; the internal type names mean nothing to a client, the middle is the useful part.
fn without_type_prefix(reason: &str) -> &str {
    let reason = reason
        .strip_prefix("failed to parse \"")
        .and_then(|rest| rest.split_once("\": "))
        .map_or(reason, |(_, message)| message);
    reason
        .split_once(" (occurred while parsing \"")
        .map_or(reason, |(message, _)| message)
}

/// A 4xx message from poem's error text, or from the status when the text says nothing.
fn client_message(err: &poem::Error, status: StatusCode) -> String {
    let text = err.to_string();
    if text.is_empty() || Some(text.as_str()) == status.canonical_reason() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_lowercase()
    } else {
        text
    }
}

/// Replaces a non-JSON error answer (from an endpoint that answered `Ok` with an error status)
/// by the envelope, so that no error leaves the app as plain text.
pub(crate) fn ensure_json_error(resp: Response, facts: &RequestFacts) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    // Deliberate HTML pages (a refused OAuth callback explains itself to a person) stay.
    if is_json || resp.data::<super::html::HtmlPage>().is_some() {
        return resp;
    }
    let pattern = resp.data::<poem::PathPattern>().cloned();
    let err = poem::Error::from_status(status);
    let mut rewritten = translate(&err, facts).into_response();
    if let Some(pattern) = pattern {
        rewritten.set_data(pattern);
    }
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::Method;

    fn facts(credentials: PresentedCredentials) -> RequestFacts {
        RequestFacts {
            method: Method::POST,
            path: "/api/jobs".into(),
            credentials,
        }
    }

    async fn envelope(resp: Response) -> (StatusCode, serde_json::Value) {
        let status = resp.status();
        let body = resp.into_body().into_bytes().await.expect("body");
        (status, serde_json::from_slice(&body).expect("a JSON body"))
    }

    #[tokio::test]
    async fn a_body_that_is_not_json_is_a_400_invalid_body() {
        let err: poem::Error = poem_openapi::error::ParseRequestPayloadError {
            reason: "expected value at line 1 column 1".into(),
        }
        .into();
        let (status, body) =
            envelope(error_to_response(err, &facts(PresentedCredentials::Bearer))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_body");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expected value")
        );
    }

    #[tokio::test]
    async fn a_wrong_content_type_is_a_415() {
        let err: poem::Error = poem_openapi::error::ContentTypeError::NotSupported {
            content_type: "text/plain".into(),
        }
        .into();
        let (status, body) =
            envelope(error_to_response(err, &facts(PresentedCredentials::Bearer))).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(body["error"]["code"], "unsupported_media_type");
    }

    #[tokio::test]
    async fn a_server_error_never_shows_its_cause() {
        let err = poem::Error::from_string(
            "error returned from database: relation \"contacts\" does not exist",
            StatusCode::INTERNAL_SERVER_ERROR,
        );
        let (status, body) =
            envelope(error_to_response(err, &facts(PresentedCredentials::Bearer))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal_error");
        assert!(!body.to_string().contains("relation"));
    }

    #[test]
    fn parse_reasons_lose_poem_openapi_type_names() {
        assert_eq!(
            without_type_prefix(
                "failed to parse \"page_size_1000\": must be 1 to 1000 (occurred while parsing \"optional_page_size_1000\")"
            ),
            "must be 1 to 1000"
        );
        assert_eq!(without_type_prefix("plain reason"), "plain reason");
    }

    #[test]
    fn the_401_message_says_what_to_fix() {
        assert!(
            PresentedCredentials::None
                .unauthorized_message()
                .contains("Bearer")
        );
        assert!(
            PresentedCredentials::OtherScheme
                .unauthorized_message()
                .contains("Bearer scheme")
        );
        assert!(
            PresentedCredentials::Bearer
                .unauthorized_message()
                .contains("not valid")
        );
    }

    #[test]
    fn every_code_has_its_snake_case_wire_name() {
        // The Enum derive (OpenAPI document, JSON) and as_str (logs) must agree.
        for code in [
            ErrorCode::Unauthorized,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::InvalidParameter,
            ErrorCode::InvalidBody,
            ErrorCode::InvalidRequest,
            ErrorCode::Conflict,
            ErrorCode::PayloadTooLarge,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::DatabaseUnavailable,
            ErrorCode::ServiceUnavailable,
            ErrorCode::RateLimited,
            ErrorCode::InvalidSignature,
            ErrorCode::NotConnected,
            ErrorCode::HubspotConnectionBroken,
            ErrorCode::HubspotTokensUnreadable,
            ErrorCode::HubspotUnavailable,
            ErrorCode::InternalError,
        ] {
            let wire = poem_openapi::types::ToJSON::to_json(&code);
            assert_eq!(wire, Some(serde_json::Value::from(code.as_str())));
        }
    }
}
