//! [`JsonBody`]: a JSON request body read under the API's one rule for bad input
//! (docs/api.md, "Bad input"):
//!
//! - 415 `unsupported_media_type`: no `Content-Type`, or not a JSON one;
//! - 400 `invalid_body`: the bytes are not JSON at all (empty, truncated, not UTF-8, ...);
//! - 422 `invalid_request`: JSON that does not fit: not an object, an unknown field, a missing
//!   or wrongly typed field, a value outside its choices. The message names the field(s).
//!
//! poem-openapi's own `Json` answers all of these with one error whose message names internal
//! type names but not the field; clients need to know which field to fix.

use poem::http::StatusCode;
use poem::{Request, RequestBody};
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaMediaType, MetaRequest, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde_json::Value;

use super::error::{ApiError, ErrorCode};

/// A body type that checks its own JSON, so that every refusal names what is wrong.
pub trait FromJsonBody: Type + Sized {
    /// The value the parsed JSON describes; the error is the 422 message, naming the field(s)
    /// and what they accept.
    fn from_json_body(value: Value) -> Result<Self, String>;
}

/// A JSON request body of type `T` (see the module docs for its answers to bad input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonBody<T>(pub T);

impl<T: FromJsonBody> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        // `application/json` with any parameters, or any `application/...+json` type.
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype == "json" || subtype.ends_with("+json"))
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: FromJsonBody> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(_request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let bytes = body.take()?.into_vec().await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidBody,
                format!("the request body could not be read: {e}"),
            )
        })?;
        let value = parse_json(&bytes)?;
        T::from_json_body(value)
            .map(JsonBody)
            .map_err(|message| ApiError::invalid_request(message).into())
    }
}

/// The body's JSON, or the 400 saying why it is not JSON.
fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBody,
            "the request body is empty: send a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidBody,
            format!("the request body is not valid JSON: {e}"),
        )
    })
}

impl<'a, T: FromJsonBody> ApiExtractor<'a> for JsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <Self as Payload>::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: <Self as Payload>::CONTENT_TYPE,
                schema: <Self as Payload>::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        match request.content_type() {
            Some(content_type) if Self::check_content_type(content_type) => {
                <Self as ParsePayload>::from_request(request, body).await
            }
            Some(content_type) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                format!("the body must be JSON (Content-Type: application/json), not {content_type:?}"),
            )
            .into()),
            None => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "the request has no Content-Type header: send the body as JSON with Content-Type: application/json",
            )
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_with_parameters_or_suffixes_are_json() {
        type Body = JsonBody<crate::api::job_request::JobRequestBody>;
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "application/merge-patch+json",
        ] {
            assert!(Body::check_content_type(ok), "{ok}");
        }
        for refused in ["text/plain", "application/x-www-form-urlencoded", "json"] {
            assert!(!Body::check_content_type(refused), "{refused}");
        }
    }

    #[test]
    fn bytes_that_are_not_json_are_a_400_that_says_so() {
        for bad in [&b""[..], b"  ", b"{not json", b"{\"a\":", b"\xff"] {
            let err = parse_json(bad).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert_eq!(err.code(), ErrorCode::InvalidBody);
        }
        assert_eq!(parse_json(b"{}").unwrap(), serde_json::json!({}));
    }
}
