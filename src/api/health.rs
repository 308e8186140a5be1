//! Public operational routes: liveness, readiness and metrics.

use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use poem::http::StatusCode;

use super::AppState;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::tags::ApiTags;
use crate::store::{CredentialStatus, Store};

/// `{"status":"ok"}`.
#[derive(Debug, Object)]
pub struct StatusBody {
    /// Always `ok`.
    pub status: String,
}

impl StatusBody {
    pub(crate) fn ok() -> Self {
        Self {
            status: "ok".into(),
        }
    }
}

/// The answers of `GET /readyz`.
#[derive(ApiResponse)]
pub enum Readiness {
    /// The database answers.
    #[oai(status = 200)]
    Ready(Json<StatusBody>),
    /// The database does not answer (code `database_unavailable`), or HubSpot refused the
    /// connection's refresh token and the app must be installed again (code
    /// `hubspot_connection_broken`).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

/// The answer of `GET /metrics`.
#[derive(ApiResponse)]
pub enum MetricsPage {
    /// Prometheus text exposition format.
    #[oai(
        status = 200,
        content_type = "text/plain; version=0.0.4; charset=utf-8"
    )]
    Ok(PlainText<String>),
}

/// Liveness, readiness and metrics; public (no token), they reveal nothing sensitive.
pub struct HealthApi {
    pub(super) state: AppState,
}

#[OpenApi(tag = "ApiTags::Operations")]
impl HealthApi {
    /// Liveness: 200 whenever the process serves HTTP.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Json<StatusBody> {
        Json(StatusBody::ok())
    }

    /// Readiness: 200 when the database answers and the HubSpot connection (if any) is not
    /// broken; else 503 saying which. A service with no HubSpot account connected yet is
    /// ready (it serves the install page).
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> Readiness {
        readiness(&self.state.store).await
    }

    /// Counters in the Prometheus text format (HTTP requests by route and status, HubSpot
    /// client calls, contacts deleted in HubSpot by reason, ...).
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self) -> MetricsPage {
        MetricsPage::Ok(PlainText(
            self.state.metrics.scrape(&self.state.store).await,
        ))
    }
}

/// Whether a process on `store` is ready: the database answers and the HubSpot connection (if
/// any) is not broken. `/readyz` of the API and of the worker's listener.
pub(crate) async fn readiness(store: &Store) -> Readiness {
    if let Err(e) = store.ping().await {
        return Readiness::Unavailable(Json(ApiError::database_unavailable(&e).body()));
    }
    match store.current_credentials().await {
        Ok(Some(row)) if row.status == CredentialStatus::Broken => Readiness::Unavailable(Json(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::HubspotConnectionBroken,
                format!(
                    "HubSpot refused the refresh token of account {} (the app was probably \
                     uninstalled): install the app again at /api/install",
                    row.portal_id
                ),
            )
            .body(),
        )),
        Ok(_) => Readiness::Ready(Json(StatusBody::ok())),
        Err(e) => Readiness::Unavailable(Json(ApiError::database_unavailable(&e).body())),
    }
}
