//! Operation groups in the OpenAPI document and Swagger UI.

use poem_openapi::Tags;

/// The groups operations are listed under.
#[derive(Tags)]
pub(super) enum ApiTags {
    /// Health, readiness and metrics (public).
    Operations,
    /// The operator's console, an HTML page (public; more for the signed-in operator).
    Console,
    /// Local contacts (bearer token required).
    Contacts,
    /// Local companies (bearer token required).
    Companies,
    /// Sync jobs and schedules (bearer token required).
    Jobs,
    /// The object mappings in effect (bearer token required).
    Objects,
    /// The HubSpot connection (bearer token required).
    #[oai(rename = "HubSpot")]
    HubSpot,
    /// The install page, operator sign-in and the OAuth callbacks: HTML pages and redirects
    /// (public; each checks the operator or the OAuth `state` itself).
    Pages,
    /// HubSpot's webhook deliveries (public; checked by their v3 signature).
    Webhooks,
}
