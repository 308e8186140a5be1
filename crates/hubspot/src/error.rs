//! The one error type of the HubSpot client, and the parsing of HubSpot's error bodies.
//!
//! HubSpot's error bodies vary by endpoint and age, so every field is parsed as optional and
//! leniently (a context value may be an array, a string or a number).

use super::retry::Operation;
use crate::ids::HsObjectId;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A token store failed. The kind tells a caller whether waiting can help: a broken or
/// unreadable connection stays so until the operator acts, a failed store may recover.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenStoreError {
    /// The stored connection cannot be used (HubSpot refused its refresh token earlier, or
    /// it has none): only installing the app again helps. The message says so.
    #[error("{0}")]
    Broken(String),
    /// The stored tokens do not decrypt with the configured keys.
    #[error("{0}")]
    Unreadable(String),
    /// The store itself failed (database down, a token that cannot be sealed...).
    #[error("{0}")]
    Failed(String),
}

impl TokenStoreError {
    /// A failure of the store itself, with `error`'s message.
    pub fn failed(error: impl fmt::Display) -> Self {
        Self::Failed(error.to_string())
    }
}

/// What HubSpot said about an error: its category, message, context and correlation id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiErrorDetails {
    /// The HTTP status of the answer (absent for per-input errors inside a 207).
    pub http_status: Option<u16>,
    /// `category`, e.g. `VALIDATION_ERROR`, `CONFLICT` (`errorType` on 429 bodies).
    pub category: Option<String>,
    /// `subCategory`, when HubSpot sends one.
    pub sub_category: Option<String>,
    /// `message`; empty when HubSpot sent none.
    pub message: String,
    /// `context`: lists of strings by key (e.g. `ids`, `objectWriteTraceId`).
    pub context: BTreeMap<String, Vec<String>>,
    /// `correlationId` (or the `X-HubSpot-Correlation-Id` header), for support tickets.
    pub correlation_id: Option<String>,
    /// `errors[]`: the details HubSpot lists under the main error.
    pub errors: Vec<ErrorDetail>,
    /// `policyName` of a 429 body (`DAILY`, `SECONDLY`, `TEN_SECONDLY_ROLLING`).
    pub policy_name: Option<String>,
}

/// One entry of an error body's `errors[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorDetail {
    /// `message`.
    pub message: String,
    /// `code`, when present.
    pub code: Option<String>,
    /// `subCategory`, when present.
    pub sub_category: Option<String>,
    /// `in`: the field the error is about, when present.
    pub field: Option<String>,
    /// `context`, e.g. `requiredScopes`.
    pub context: BTreeMap<String, Vec<String>>,
}

/// A property value HubSpot refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvalidProperty {
    /// The property name, e.g. `email`.
    pub name: String,
    /// The refused value, when known (HubSpot's message or the input that was sent).
    pub value: Option<String>,
    /// HubSpot's code, e.g. `INVALID_EMAIL`.
    pub error: Option<String>,
    /// HubSpot's (possibly localized) explanation.
    pub message: Option<String>,
}

/// Which HubSpot limit a 429 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitPolicy {
    /// The per-app 10-second rolling burst limit.
    TenSecondlyRolling,
    /// A per-second limit (the search endpoints' 5 per second).
    Secondly,
    /// The account's daily limit: waiting minutes does not help.
    Daily,
    /// The answer did not say.
    Unspecified,
}

impl RateLimitPolicy {
    /// Reads `policyName`, falling back to the wording of `message`.
    pub fn from_details(details: &ApiErrorDetails) -> Self {
        match details.policy_name.as_deref() {
            Some("TEN_SECONDLY_ROLLING") => return Self::TenSecondlyRolling,
            Some("SECONDLY") => return Self::Secondly,
            Some("DAILY") => return Self::Daily,
            _ => {}
        }
        let message = details.message.to_ascii_lowercase();
        if message.contains("daily limit") {
            Self::Daily
        } else if message.contains("ten_secondly") || message.contains("ten secondly") {
            Self::TenSecondlyRolling
        } else if message.contains("secondly limit") {
            Self::Secondly
        } else {
            Self::Unspecified
        }
    }
}

impl fmt::Display for RateLimitPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TenSecondlyRolling => "TEN_SECONDLY_ROLLING",
            Self::Secondly => "SECONDLY",
            Self::Daily => "DAILY",
            Self::Unspecified => "unspecified",
        })
    }
}

impl fmt::Display for ApiErrorDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str("(no message)")?;
        } else {
            f.write_str(&self.message)?;
        }
        if let Some(category) = &self.category {
            write!(f, " [category {category}]")?;
        }
        if let Some(id) = &self.correlation_id {
            write!(f, " [correlationId {id}]")?;
        }
        Ok(())
    }
}

/// Everything a HubSpot call can fail with. Sync code matches on the variant.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HubSpotError {
    /// A 429 that retries did not get past, or a daily limit (never retried).
    #[error("HubSpot rate limit {policy} reached: {details}")]
    RateLimited {
        /// The limit HubSpot named.
        policy: RateLimitPolicy,
        /// HubSpot's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// HubSpot's error body.
        details: Box<ApiErrorDetails>,
    },
    /// 401: the token is missing, wrong, or expired (and a refresh did not help).
    #[error("HubSpot refused the credentials: {details}")]
    Unauthorized {
        /// True when HubSpot said the token had expired (`EXPIRED_AUTHENTICATION`).
        expired: bool,
        /// HubSpot's error body.
        details: Box<ApiErrorDetails>,
    },
    /// 403: usually `MISSING_SCOPES`.
    #[error("HubSpot refused the call (scopes {required_scopes:?}): {details}")]
    Forbidden {
        /// The scopes HubSpot says are required, when it lists them.
        required_scopes: Vec<String>,
        /// HubSpot's error body.
        details: Box<ApiErrorDetails>,
    },
    /// 409: the record exists (contacts: `Existing ID: N`) or the property name is taken.
    #[error("HubSpot reports a conflict (existing id {existing_id:?}): {details}")]
    Conflict {
        /// The id HubSpot names in `Contact already exists. Existing ID: N`.
        existing_id: Option<HsObjectId>,
        /// HubSpot's error body.
        details: Box<ApiErrorDetails>,
    },
    /// 400 / `VALIDATION_ERROR`: the input was refused.
    #[error("HubSpot refused the input ({invalid:?}): {details}")]
    Validation {
        /// The offending properties, as far as HubSpot's message names them.
        invalid: Vec<InvalidProperty>,
        /// HubSpot's error body.
        details: Box<ApiErrorDetails>,
    },
    /// 404 / `OBJECT_NOT_FOUND`.
    #[error("HubSpot found no such record ({ids:?}): {details}")]
    NotFound {
        /// The ids HubSpot lists in `context.id` / `context.ids`.
        ids: Vec<String>,
        /// HubSpot's error body.
        details: Box<ApiErrorDetails>,
    },
    /// 5xx, timeouts or connection failures, still failing after the bounded retries.
    #[error("HubSpot {operation} kept failing after {attempts} attempts: {cause}")]
    Transient {
        /// The call.
        operation: Operation,
        /// How many requests were sent.
        attempts: u32,
        /// The last failure.
        cause: String,
        /// HubSpot's last error body, when it answered.
        details: Option<Box<ApiErrorDetails>>,
    },
    /// A non-idempotent write (create, merge) whose answer was lost after the request may
    /// have been applied. Not retried: re-read (e.g. batch read by email) before trying again.
    #[error("HubSpot {operation} may or may not have been applied: {cause}")]
    Ambiguous {
        /// The call.
        operation: Operation,
        /// What went wrong (timeout, dropped connection, gateway error).
        cause: String,
    },
    /// HubSpot refused the refresh token (`BAD_REFRESH_TOKEN` / `invalid_grant`): the
    /// connection is broken until someone installs the app again.
    #[error("HubSpot refused the refresh token: {details}")]
    RefreshRefused {
        /// HubSpot's error body.
        details: Box<ApiErrorDetails>,
    },
    /// OAuth is configured but the token store holds no tokens (the app was never installed).
    #[error("HubSpot is not connected: no OAuth tokens are stored")]
    NotConnected,
    /// The token store failed to load or save tokens.
    #[error("token store failed: {0}")]
    TokenStore(TokenStoreError),
    /// HubSpot answered something it does not document (bad JSON, a missing field).
    #[error("HubSpot {operation} answered {status} with an unexpected body: {problem}")]
    UnexpectedResponse {
        /// The call.
        operation: Operation,
        /// HTTP status of the answer.
        status: u16,
        /// What was wrong with it.
        problem: String,
    },
    /// The call was not sent because its input is invalid (e.g. a bad page token).
    #[error("invalid HubSpot request: {0}")]
    InvalidRequest(String),
    /// Any other refusal.
    #[error("HubSpot refused the call: {details}")]
    Other {
        /// HubSpot's error body.
        details: Box<ApiErrorDetails>,
    },
}

impl HubSpotError {
    /// HubSpot's error body, when the error came from an answer.
    pub fn details(&self) -> Option<&ApiErrorDetails> {
        match self {
            Self::RateLimited { details, .. }
            | Self::Unauthorized { details, .. }
            | Self::Forbidden { details, .. }
            | Self::Conflict { details, .. }
            | Self::Validation { details, .. }
            | Self::NotFound { details, .. }
            | Self::RefreshRefused { details }
            | Self::Other { details } => Some(details),
            Self::Transient { details, .. } => details.as_deref(),
            _ => None,
        }
    }

    /// HubSpot's category, when it sent one.
    pub fn category(&self) -> Option<&str> {
        self.details().and_then(|d| d.category.as_deref())
    }

    /// HubSpot's correlation id, when it sent one.
    pub fn correlation_id(&self) -> Option<&str> {
        self.details().and_then(|d| d.correlation_id.as_deref())
    }

    /// True for a daily-limit 429.
    pub fn is_daily_limit(&self) -> bool {
        matches!(
            self,
            Self::RateLimited {
                policy: RateLimitPolicy::Daily,
                ..
            }
        )
    }

    /// True when the same call may succeed later without a change of input or credentials
    /// (a job can be retried): rate limits, transient failures and ambiguous writes (after a
    /// re-read).
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Transient { .. } | Self::Ambiguous { .. }
        )
    }
}

impl ApiErrorDetails {
    /// Parses an error body. A body that is not a JSON object still gives details whose
    /// message quotes the start of the body.
    pub fn parse(http_status: Option<u16>, correlation_header: Option<&str>, body: &[u8]) -> Self {
        let mut details = match serde_json::from_slice::<Value>(body) {
            Ok(value @ Value::Object(_)) => Self::from_json(&value),
            _ => Self {
                message: format!("(not a JSON error body) {}", snippet(body)),
                ..Self::default()
            },
        };
        details.http_status = http_status;
        if details.correlation_id.is_none() {
            details.correlation_id = correlation_header.map(str::to_owned);
        }
        details
    }

    /// Reads the fields of one JSON error object (top-level body or an item of `errors[]`).
    pub fn from_json(value: &Value) -> Self {
        Self {
            http_status: None,
            category: text(value.get("category")).or_else(|| text(value.get("errorType"))),
            sub_category: text(value.get("subCategory")),
            message: text(value.get("message")).unwrap_or_default(),
            context: string_lists(value.get("context")),
            correlation_id: text(value.get("correlationId")),
            errors: value
                .get("errors")
                .and_then(Value::as_array)
                .map(|items| items.iter().map(ErrorDetail::from_json).collect())
                .unwrap_or_default(),
            policy_name: text(value.get("policyName")),
        }
    }

    /// All values of `context[key]` in this body and in its `errors[]` items.
    pub fn context_values(&self, key: &str) -> Vec<String> {
        let own = self.context.get(key).into_iter().flatten();
        let nested = self
            .errors
            .iter()
            .filter_map(|e| e.context.get(key))
            .flatten();
        own.chain(nested).cloned().collect()
    }
}

impl ErrorDetail {
    fn from_json(value: &Value) -> Self {
        Self {
            message: text(value.get("message")).unwrap_or_default(),
            code: text(value.get("code")),
            sub_category: text(value.get("subCategory")),
            field: text(value.get("in")),
            context: string_lists(value.get("context")),
        }
    }
}

/// Maps an error (a non-2xx answer, or one entry of a 207's `errors[]`) to its variant.
/// 429s are handled by the retry loop; this maps one only when asked.
pub(crate) fn classify(details: ApiErrorDetails) -> HubSpotError {
    let details = Box::new(details);
    let category = details.category.clone().unwrap_or_default();
    match (category.as_str(), details.http_status) {
        ("EXPIRED_AUTHENTICATION", _) => HubSpotError::Unauthorized {
            expired: true,
            details,
        },
        ("INVALID_AUTHENTICATION", _) | (_, Some(401)) => HubSpotError::Unauthorized {
            expired: false,
            details,
        },
        ("MISSING_SCOPES", _) | (_, Some(403)) => HubSpotError::Forbidden {
            required_scopes: required_scopes(&details),
            details,
        },
        ("OBJECT_NOT_FOUND", _) | (_, Some(404)) => HubSpotError::NotFound {
            ids: not_found_ids(&details),
            details,
        },
        ("CONFLICT" | "OBJECT_ALREADY_EXISTS", _) | (_, Some(409)) => HubSpotError::Conflict {
            existing_id: existing_id(&details.message),
            details,
        },
        ("RATE_LIMIT" | "RATE_LIMITS", _) | (_, Some(429)) => HubSpotError::RateLimited {
            policy: RateLimitPolicy::from_details(&details),
            retry_after: None,
            details,
        },
        ("VALIDATION_ERROR" | "INVALID_EMAIL" | "PROPERTY_DOESNT_EXIST", _)
        | (_, Some(400 | 422)) => HubSpotError::Validation {
            invalid: invalid_properties(&details),
            details,
        },
        _ => HubSpotError::Other { details },
    }
}

/// The id in `Contact already exists. Existing ID: 37765128953`.
pub(crate) fn existing_id(message: &str) -> Option<HsObjectId> {
    let (_, rest) = message.split_once("Existing ID:")?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then_some(HsObjectId(digits))
}

/// The properties named in `Property values were not valid: [{...}]`, or else in `errors[].in`.
pub(crate) fn invalid_properties(details: &ApiErrorDetails) -> Vec<InvalidProperty> {
    let from_message = details
        .message
        .find('[')
        .and_then(|start| {
            serde_json::Deserializer::from_str(&details.message[start..])
                .into_iter::<Value>()
                .next()
                .and_then(Result::ok)
        })
        .and_then(|value| value.as_array().cloned())
        .map(|items| {
            items
                .iter()
                .filter_map(invalid_property)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !from_message.is_empty() {
        return from_message;
    }
    details
        .errors
        .iter()
        .filter_map(|e| {
            let name = e
                .field
                .clone()
                .or_else(|| e.context.get("propertyName")?.first().cloned())?;
            Some(InvalidProperty {
                name,
                value: e
                    .context
                    .get("propertyValue")
                    .and_then(|v| v.first().cloned()),
                error: e.code.clone(),
                message: Some(e.message.clone()).filter(|m| !m.is_empty()),
            })
        })
        .collect()
}

fn invalid_property(item: &Value) -> Option<InvalidProperty> {
    Some(InvalidProperty {
        name: text(item.get("name"))?,
        value: text(item.get("value")).or_else(|| text(item.get("propertyValue"))),
        error: text(item.get("error")),
        message: text(item.get("message")),
    })
}

fn required_scopes(details: &ApiErrorDetails) -> Vec<String> {
    let mut scopes = details.context_values("requiredScopes");
    scopes.extend(details.context_values("missingScopes"));
    scopes.dedup();
    scopes
}

fn not_found_ids(details: &ApiErrorDetails) -> Vec<String> {
    let mut ids = details.context_values("ids");
    ids.extend(details.context_values("id"));
    ids
}

/// A JSON value as text: strings as they are, numbers and objects in JSON form, null as none.
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// `{"k": ["a", "b"], "n": "c"}` as lists of strings, whatever the shape of each value.
fn string_lists(value: Option<&Value>) -> BTreeMap<String, Vec<String>> {
    let Some(Value::Object(map)) = value else {
        return BTreeMap::new();
    };
    map.iter()
        .map(|(key, value)| {
            let values = match value {
                Value::Array(items) => items.iter().filter_map(|v| text(Some(v))).collect(),
                other => text(Some(other)).into_iter().collect(),
            };
            (key.clone(), values)
        })
        .collect()
}

/// The first 200 characters of a body, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(status: u16, body: &str) -> HubSpotError {
        classify(ApiErrorDetails::parse(Some(status), None, body.as_bytes()))
    }

    #[test]
    fn a_contact_conflict_names_the_existing_id() {
        let err = parse(
            409,
            r#"{"status":"error","message":"Contact already exists. Existing ID: 37765128953","correlationId":"c-1","category":"CONFLICT"}"#,
        );
        let HubSpotError::Conflict {
            existing_id,
            details,
        } = err
        else {
            panic!("not a conflict: {err:?}")
        };
        assert_eq!(existing_id, Some(HsObjectId::from("37765128953")));
        assert_eq!(details.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(details.category.as_deref(), Some("CONFLICT"));
    }

    #[test]
    fn a_property_name_conflict_has_no_existing_id() {
        let err = parse(
            409,
            r#"{"status":"error","message":"A property named 'crm_sync_id' already exists.","category":"OBJECT_ALREADY_EXISTS","subCategory":"Properties.PROPERTY_WITH_NAME_EXISTS"}"#,
        );
        let HubSpotError::Conflict {
            existing_id,
            details,
        } = err
        else {
            panic!("not a conflict")
        };
        assert_eq!(existing_id, None);
        assert_eq!(
            details.sub_category.as_deref(),
            Some("Properties.PROPERTY_WITH_NAME_EXISTS")
        );
    }

    #[test]
    fn a_validation_error_names_the_property_from_the_message_json() {
        let err = parse(
            400,
            r#"{"status":"error","message":"Property values were not valid: [{\"isValid\":false,\"message\":\"Email address bad@ is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"}]","correlationId":"c-2","category":"VALIDATION_ERROR"}"#,
        );
        let HubSpotError::Validation { invalid, .. } = err else {
            panic!("not a validation error")
        };
        assert_eq!(invalid.len(), 1);
        assert_eq!(invalid[0].name, "email");
        assert_eq!(invalid[0].error.as_deref(), Some("INVALID_EMAIL"));
        assert_eq!(
            invalid[0].message.as_deref(),
            Some("Email address bad@ is invalid")
        );
    }

    #[test]
    fn malformed_json_input_is_a_validation_error_without_properties() {
        let err = parse(
            400,
            r#"{"status":"error","message":"Invalid input JSON on line 1, column 2: Unexpected character","correlationId":"c-3"}"#,
        );
        let HubSpotError::Validation { invalid, details } = err else {
            panic!("not a validation error")
        };
        assert!(invalid.is_empty());
        assert!(details.message.starts_with("Invalid input JSON"));
    }

    #[test]
    fn an_expired_token_is_unauthorized_and_expired() {
        let err = parse(
            401,
            r#"{"status":"error","message":"The OAuth token used to make this call expired 2 second(s) ago.","correlationId":"c-4","category":"EXPIRED_AUTHENTICATION","context":{"expire time":["2026-11-28T10:00:00Z"]}}"#,
        );
        assert!(matches!(
            err,
            HubSpotError::Unauthorized { expired: true, .. }
        ));
        let err = parse(
            401,
            r#"{"status":"error","message":"Authentication credentials not found.","category":"INVALID_AUTHENTICATION"}"#,
        );
        assert!(matches!(
            err,
            HubSpotError::Unauthorized { expired: false, .. }
        ));
    }

    #[test]
    fn missing_scopes_lists_the_required_scopes() {
        let err = parse(
            403,
            r#"{"status":"error","message":"This app hasn't been granted all required scopes to make this call.","correlationId":"c-5","category":"MISSING_SCOPES","errors":[{"message":"One or more of the following scopes are required.","context":{"requiredScopes":["crm.objects.contacts.write"]}}],"links":{"scopes":"https://developers.hubspot.com/scopes"}}"#,
        );
        let HubSpotError::Forbidden {
            required_scopes,
            details,
        } = err
        else {
            panic!("not forbidden")
        };
        assert_eq!(
            required_scopes,
            vec!["crm.objects.contacts.write".to_owned()]
        );
        assert_eq!(details.errors.len(), 1);
    }

    #[test]
    fn not_found_lists_the_ids() {
        let err = parse(
            404,
            r#"{"status":"error","message":"Object not found.  objectId are usually numeric.","correlationId":"c-6","context":{"id":["abc"]},"category":"OBJECT_NOT_FOUND"}"#,
        );
        let HubSpotError::NotFound { ids, .. } = err else {
            panic!("not a not-found")
        };
        assert_eq!(ids, vec!["abc".to_owned()]);
    }

    #[test]
    fn a_body_that_is_not_json_still_gives_a_clear_error() {
        let details =
            ApiErrorDetails::parse(Some(502), Some("corr-h"), b"<html>Bad Gateway</html>");
        assert!(details.message.contains("Bad Gateway"));
        assert_eq!(details.correlation_id.as_deref(), Some("corr-h"));
        assert!(matches!(classify(details), HubSpotError::Other { .. }));
    }

    #[test]
    fn odd_shapes_in_context_do_not_break_parsing() {
        let details = ApiErrorDetails::parse(
            Some(400),
            None,
            br#"{"message":7,"context":{"ids":"12","n":[1,null,"x"]},"subCategory":{"a":1},"errors":"nope"}"#,
        );
        assert_eq!(details.message, "7");
        assert_eq!(details.context["ids"], vec!["12".to_owned()]);
        assert_eq!(details.context["n"], vec!["1".to_owned(), "x".to_owned()]);
        assert_eq!(details.sub_category.as_deref(), Some(r#"{"a":1}"#));
        assert!(details.errors.is_empty());
    }

    #[test]
    fn the_429_policy_comes_from_policy_name_or_message() {
        let daily = ApiErrorDetails::parse(
            Some(429),
            None,
            br#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","correlationId":"c","policyName":"DAILY","requestId":"r"}"#,
        );
        assert_eq!(
            RateLimitPolicy::from_details(&daily),
            RateLimitPolicy::Daily
        );
        assert_eq!(daily.category.as_deref(), Some("RATE_LIMIT"));
        let secondly = ApiErrorDetails::parse(
            Some(429),
            None,
            br#"{"message":"You have reached your secondly limit."}"#,
        );
        assert_eq!(
            RateLimitPolicy::from_details(&secondly),
            RateLimitPolicy::Secondly
        );
        let rolling = ApiErrorDetails::parse(
            Some(429),
            None,
            br#"{"message":"You have reached your ten_secondly_rolling limit.","policyName":"TEN_SECONDLY_ROLLING"}"#,
        );
        assert_eq!(
            RateLimitPolicy::from_details(&rolling),
            RateLimitPolicy::TenSecondlyRolling
        );
        let bare = ApiErrorDetails::parse(Some(429), None, b"");
        assert_eq!(
            RateLimitPolicy::from_details(&bare),
            RateLimitPolicy::Unspecified
        );
    }
}
