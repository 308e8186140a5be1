//! The public routes that are not the JSON API, as operations of the OpenAPI document: the
//! install page, operator sign-in and sign-out, both OAuth callbacks (HTML pages and
//! redirects) and HubSpot's webhook deliveries (JSON, checked by signature).
//!
//! What they do lives in [`super::oauth_routes`], [`super::operator`] and
//! [`super::webhook_route`]; here they are only described. Their per-client rate limits are
//! applied around them by [`super::router`], exactly as before they were documented.

use std::marker::PhantomData;

use poem::{IntoResponse, Request, RequestBody, Response};
use poem_openapi::param::Query;
use poem_openapi::payload::{Form, Json};
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaRequest, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef,
    Registry,
};
use poem_openapi::types::Type;
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, Object, OpenApi,
    ResponseContent,
};
use serde::Deserialize;

use super::AppState;
use super::error::{ErrorBody, ErrorStatuses, Failure};
use super::params::inline_type;
use super::tags::ApiTags;
use super::{console, oauth_routes, operator, webhook_route};
use crate::oauth::install::CallbackParams;

/// What an answer of a page route carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// An HTML page.
    Html,
    /// A redirect (`Location`), no body.
    Redirect,
    /// The JSON error envelope.
    Json,
}

/// The answers a page route documents.
pub trait PageStatuses: Send + Sync + 'static {
    /// Status, shape and description of each answer.
    const STATUSES: &'static [(u16, Shape, &'static str)];
}

/// An answer of a page route, built by its handler, documented by `D`.
pub struct Answer<D>(Response, PhantomData<fn() -> D>);

impl<D> From<Response> for Answer<D> {
    fn from(resp: Response) -> Self {
        Self(resp, PhantomData)
    }
}

impl<D: PageStatuses> IntoResponse for Answer<D> {
    fn into_response(self) -> Response {
        self.0
    }
}

impl<D: PageStatuses> ApiResponse for Answer<D> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: D::STATUSES
                .iter()
                .map(|&(status, shape, description)| MetaResponse {
                    description,
                    status: Some(status),
                    status_range: None,
                    content: match shape {
                        Shape::Html => vec![MetaMediaType {
                            content_type: "text/html; charset=utf-8",
                            schema: String::schema_ref(),
                        }],
                        Shape::Redirect => vec![],
                        Shape::Json => <Json<ErrorBody> as ResponseContent>::media_types(),
                    },
                    headers: match shape {
                        Shape::Redirect => vec![MetaHeader {
                            name: "Location".to_owned(),
                            description: Some("Where the browser goes next.".to_owned()),
                            required: true,
                            deprecated: false,
                            schema: String::schema_ref(),
                        }],
                        _ => vec![],
                    },
                })
                .collect(),
        }
    }

    fn register(registry: &mut Registry) {
        <Json<ErrorBody> as ResponseContent>::register(registry);
    }
}

const TOO_MANY: (u16, Shape, &str) = (
    429,
    Shape::Html,
    "Too many requests from this client (`Retry-After` says when to try again)",
);
const FAILED: (u16, Shape, &str) = (
    500,
    Shape::Html,
    "The server could not complete the step (details in its log)",
);

/// `GET /api/install`.
pub struct InstallAnswers;

impl PageStatuses for InstallAnswers {
    const STATUSES: &'static [(u16, Shape, &'static str)] = &[
        (
            200,
            Shape::Html,
            "For the operator (bearer token or session): the install link, bound to this browser \
             by a cookie",
        ),
        (
            401,
            Shape::Html,
            "For anyone else: how the operator connects HubSpot; no usable link",
        ),
        TOO_MANY,
        FAILED,
        (
            503,
            Shape::Html,
            "The OAuth app is not configured, or a private-app token replaces OAuth",
        ),
    ];
}

/// `POST /login`.
pub struct LoginAnswers;

impl PageStatuses for LoginAnswers {
    const STATUSES: &'static [(u16, Shape, &'static str)] = &[
        (
            303,
            Shape::Redirect,
            "Signed in: the session cookie is set and the browser goes to `/`",
        ),
        (401, Shape::Html, "Not the API token: nothing is set"),
        (
            415,
            Shape::Json,
            "The body is not a form (code `unsupported_media_type`)",
        ),
        TOO_MANY,
        FAILED,
    ];
}

/// `POST /logout`.
pub struct LogoutAnswers;

impl PageStatuses for LogoutAnswers {
    const STATUSES: &'static [(u16, Shape, &'static str)] = &[
        (
            303,
            Shape::Redirect,
            "Signed out: the session is ended and its cookie cleared; the browser goes to `/`",
        ),
        TOO_MANY,
        FAILED,
    ];
}

/// `POST /disconnect`.
pub struct DisconnectAnswers;

impl PageStatuses for DisconnectAnswers {
    const STATUSES: &'static [(u16, Shape, &'static str)] = &[
        (
            303,
            Shape::Redirect,
            "Disconnected (or nothing was connected): the stored tokens are removed and the \
             browser goes to `/`",
        ),
        (401, Shape::Html, "Not the operator: nothing changes"),
        (
            415,
            Shape::Json,
            "The body is not a form (code `unsupported_media_type`)",
        ),
        (
            422,
            Shape::Html,
            "The confirmation box was not ticked: nothing changes",
        ),
        TOO_MANY,
        (
            503,
            Shape::Html,
            "The database did not answer: nothing changes (details in the server log)",
        ),
    ];
}

/// The console's disconnect form: `confirm=yes` when the operator ticked the confirmation box.
///
/// The schema says exactly that (a required field whose one value is `yes`); parsing takes any
/// value or none, so that an unticked form is answered, like every value that is not one of its
/// choices, with 422 (a form that does not parse as a form is the 400).
#[derive(Debug, Default, Deserialize)]
pub struct DisconnectForm {
    /// The confirmation box's value (empty when absent).
    #[serde(default)]
    pub confirm: String,
}

impl DisconnectForm {
    /// Whether the box was ticked.
    pub fn confirmed(&self) -> bool {
        self.confirm == "yes"
    }
}

inline_type!(DisconnectForm, "DisconnectForm", || {
    let mut confirm = MetaSchema::new("string");
    confirm.enum_items = vec![serde_json::Value::from("yes")];
    confirm.description = Some("The confirmation box, ticked");
    let mut form = MetaSchema::new("object");
    form.properties = vec![("confirm", MetaSchemaRef::Inline(Box::new(confirm)))];
    form.required = vec!["confirm"];
    form
});

/// The OAuth callbacks.
pub struct CallbackAnswers;

impl PageStatuses for CallbackAnswers {
    const STATUSES: &'static [(u16, Shape, &'static str)] = &[
        (
            302,
            Shape::Redirect,
            "HubSpot is connected: the browser goes to `/`",
        ),
        (
            400,
            Shape::Html,
            "Refused, nothing stored: a missing, unknown, expired or reused `state`, no `code`, \
             an installation HubSpot declined, or another account than the connected one",
        ),
        TOO_MANY,
        FAILED,
        (502, Shape::Html, "HubSpot did not answer the code exchange"),
        (503, Shape::Html, "The OAuth app is not configured"),
    ];
}

/// What `POST /webhooks/hubspot` answers besides its 200.
pub struct WebhookErrors;

impl ErrorStatuses for WebhookErrors {
    const STATUSES: &'static [(u16, &'static str)] = &[
        (400, "The body is not JSON (code `invalid_body`)"),
        (
            401,
            "Missing, wrong or stale `X-HubSpot-Signature-v3`, or no client secret to check it \
             (code `invalid_signature`); nothing is changed",
        ),
        (
            422,
            "Signed JSON that is not an array of events (code `invalid_request`)",
        ),
        (
            429,
            "Too many badly signed requests from this client (code `rate_limited`)",
        ),
        (500, "Internal error (details in the server log)"),
        (
            503,
            "The events could not be recorded or their pull queued; HubSpot delivers them again",
        ),
    ];
}

/// The sign-in form.
#[derive(Debug, Deserialize, Object)]
pub struct LoginForm {
    /// The API token (`api.token`).
    pub token: Option<String>,
}

/// A webhook delivery's raw bytes, read whatever their content type: the signature is checked
/// over them before anything else, so an unsigned request is a 401 whatever it carries.
pub struct WebhookBody(Vec<u8>);

impl<'a> ApiExtractor<'a> for WebhookBody {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn request_meta() -> Option<MetaRequest> {
        let mut events = MetaSchema::new("array");
        events.description = Some(
            "HubSpot's webhook events (v3 signature over `server.public_url` + path and query, \
             in `X-HubSpot-Signature-v3` and `X-HubSpot-Request-Timestamp`)",
        );
        events.items = Some(Box::new(MetaSchemaRef::Inline(Box::new(MetaSchema::new(
            "object",
        )))));
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: MetaSchemaRef::Inline(Box::new(events)),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let bytes = <Vec<u8> as poem::FromRequest>::from_request(request, body).await?;
        Ok(Self(bytes))
    }
}

/// The install page, sign-in, the OAuth callbacks and the webhook route; public (each checks
/// what it needs itself: the operator, the `state`, the signature).
pub struct PagesApi {
    pub(super) state: AppState,
}

#[OpenApi]
impl PagesApi {
    /// The install page: for the operator, the HubSpot install link (`client_id`,
    /// `redirect_uri`, `scope`, `state`); for anyone else, how to connect, without a link.
    #[oai(
        path = "/api/install",
        method = "get",
        operation_id = "installPage",
        tag = "ApiTags::Pages"
    )]
    async fn install(&self, req: &Request) -> Answer<InstallAnswers> {
        oauth_routes::install(req, &self.state).await.into()
    }

    /// Operator sign-in with the API token: opens a session (cookie HttpOnly, SameSite, Secure
    /// when `server.public_url` is https).
    #[oai(
        path = "/login",
        method = "post",
        operation_id = "login",
        tag = "ApiTags::Pages"
    )]
    async fn login(&self, form: Form<LoginForm>) -> Answer<LoginAnswers> {
        operator::login(&self.state, form.0.token.as_deref())
            .await
            .into()
    }

    /// Operator sign-out: ends the session and clears its cookie.
    #[oai(
        path = "/logout",
        method = "post",
        operation_id = "logout",
        tag = "ApiTags::Pages"
    )]
    async fn logout(&self, req: &Request) -> Answer<LogoutAnswers> {
        operator::logout(req, &self.state).await.into()
    }

    /// The console's disconnect button: for the operator (session or bearer token), with the
    /// confirmation box ticked, removes the stored HubSpot connection, as
    /// `POST /api/connection/disconnect` does.
    #[oai(
        path = "/disconnect",
        method = "post",
        operation_id = "disconnectPage",
        tag = "ApiTags::Pages"
    )]
    async fn disconnect(
        &self,
        req: &Request,
        form: Form<DisconnectForm>,
    ) -> Answer<DisconnectAnswers> {
        console::disconnect(req, &self.state, form.0.confirmed())
            .await
            .into()
    }

    /// Where HubSpot sends the browser after an installation: checks `state`, exchanges `code`
    /// for tokens and stores them.
    #[oai(
        path = "/oauth-callback",
        method = "get",
        operation_id = "oauthCallback",
        tag = "ApiTags::Pages"
    )]
    async fn callback(
        &self,
        req: &Request,
        /// The authorization code.
        code: Query<Option<String>>,
        /// The value the install page issued.
        state: Query<Option<String>>,
        /// Set by HubSpot when the installation was not authorized.
        error: Query<Option<String>>,
        /// HubSpot's explanation of `error`.
        error_description: Query<Option<String>>,
    ) -> Answer<CallbackAnswers> {
        self.callback_answer(req, code, state, error, error_description)
            .await
    }

    /// The same callback under the install page's path, as the original sample app had it.
    #[oai(
        path = "/api/install/oauth-callback",
        method = "get",
        operation_id = "installOauthCallback",
        tag = "ApiTags::Pages"
    )]
    async fn install_callback(
        &self,
        req: &Request,
        /// The authorization code.
        code: Query<Option<String>>,
        /// The value the install page issued.
        state: Query<Option<String>>,
        /// Set by HubSpot when the installation was not authorized.
        error: Query<Option<String>>,
        /// HubSpot's explanation of `error`.
        error_description: Query<Option<String>>,
    ) -> Answer<CallbackAnswers> {
        self.callback_answer(req, code, state, error, error_description)
            .await
    }

    /// HubSpot's webhook deliveries, checked with the v3 signature before anything else;
    /// events about another account are acknowledged and ignored.
    #[oai(
        path = "/webhooks/hubspot",
        method = "post",
        operation_id = "hubspotWebhook",
        tag = "ApiTags::Webhooks"
    )]
    async fn webhook(
        &self,
        req: &Request,
        body: WebhookBody,
    ) -> Result<Json<webhook_route::WebhookAnswer>, Failure<WebhookErrors>> {
        Ok(Json(
            webhook_route::hubspot_webhook(req, &self.state, body.0).await?,
        ))
    }
}

impl PagesApi {
    /// Both callback paths: the same exchange of the same parameters.
    async fn callback_answer(
        &self,
        req: &Request,
        code: Query<Option<String>>,
        state: Query<Option<String>>,
        error: Query<Option<String>>,
        error_description: Query<Option<String>>,
    ) -> Answer<CallbackAnswers> {
        let params = CallbackParams::new(code.0, state.0, error.0, error_description.0);
        oauth_routes::callback(req, &self.state, params)
            .await
            .into()
    }
}
