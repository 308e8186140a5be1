//! HubSpot's error answers: `{status, message, correlationId, category, ...}` bodies and the
//! `X-HubSpot-Correlation-Id` header.

use std::collections::BTreeMap;

use poem::Response;
use poem::http::StatusCode;
use serde_json::{Map, Value, json};

/// The message HubSpot sends with a missing or unknown token.
pub(crate) const INVALID_AUTH_MESSAGE: &str = "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview";

/// An error answer under construction.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: Map<String, Value>,
    headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// `{"status":"error","message":..,"category":..}` with the given HTTP status.
    pub(crate) fn new(status: StatusCode, category: &str, message: impl Into<String>) -> Self {
        let mut body = Map::new();
        body.insert("status".into(), "error".into());
        body.insert("message".into(), message.into().into());
        body.insert("category".into(), category.into());
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// 400 `VALIDATION_ERROR`.
    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    /// 404 `OBJECT_NOT_FOUND` for a record id.
    pub(crate) fn object_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "Object not found.  objectId are usually numeric.",
        )
        .context("id", vec![id.to_owned()])
    }

    /// 401 `INVALID_AUTHENTICATION`.
    pub(crate) fn invalid_authentication() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_AUTHENTICATION",
            INVALID_AUTH_MESSAGE,
        )
        .header("X-HubSpot-Auth-Failure", "401 Unauthorized")
    }

    /// 401 `EXPIRED_AUTHENTICATION` for an OAuth token that expired `ago_secs` ago.
    pub(crate) fn expired_authentication(ago_secs: i64, expired_at_iso: String) -> Self {
        let (n, unit) = humanise(ago_secs.max(0));
        Self::new(
            StatusCode::UNAUTHORIZED,
            "EXPIRED_AUTHENTICATION",
            format!("The OAuth token used to make this call expired {n} {unit}(s) ago."),
        )
        .context("expire time", vec![expired_at_iso])
        .header("X-HubSpot-Auth-Failure", "401 Unauthorized")
    }

    /// 403 `MISSING_SCOPES`.
    pub(crate) fn missing_scopes(required: &[&str]) -> Self {
        let mut e = Self::new(
            StatusCode::FORBIDDEN,
            "MISSING_SCOPES",
            "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
        );
        e.body.insert(
            "errors".into(),
            json!([{"message": "One or more of the following scopes are required.",
                    "context": {"requiredScopes": required}}]),
        );
        e.body.insert(
            "links".into(),
            json!({"scopes": "https://developers.hubspot.com/scopes"}),
        );
        e
    }

    /// Adds a `context` entry.
    pub(crate) fn context(mut self, key: &str, values: Vec<String>) -> Self {
        let ctx = self
            .body
            .entry("context")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(map) = ctx {
            map.insert(key.to_owned(), values.into());
        }
        self
    }

    /// Sets any top-level body field.
    pub(crate) fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.body.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a response header.
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The answer, stamped with the request's correlation id.
    pub(crate) fn into_response(mut self, correlation_id: &str) -> Response {
        self.body
            .insert("correlationId".into(), correlation_id.into());
        let mut builder = Response::builder()
            .status(self.status)
            .content_type("application/json;charset=utf-8");
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder.body(serde_json::to_vec(&Value::Object(self.body)).unwrap_or_default())
    }
}

/// `(5, "second")`, `(2, "minute")`, ... as HubSpot words expiry.
fn humanise(secs: i64) -> (i64, &'static str) {
    match secs {
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    }
}

/// A `StandardError` inside a batch 207 body.
pub(crate) fn standard_error(
    category: &str,
    message: &str,
    context: &BTreeMap<String, Vec<String>>,
) -> Value {
    json!({
        "status": "error",
        "category": category,
        "message": message,
        "context": context,
        "errors": [],
        "links": {},
    })
}

/// A fresh random UUID v4 string.
pub(crate) fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_worded_like_hubspot() {
        assert_eq!(humanise(5), (5, "second"));
        assert_eq!(humanise(7200), (2, "hour"));
    }

    #[test]
    fn uuids_have_the_v4_shape() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
