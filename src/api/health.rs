//! Public operational routes: liveness, readiness and metrics.

use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::tags::ApiTags;

/// `{"status":"ok"}`.
#[derive(Debug, Object)]
pub struct StatusBody {
    /// Always `ok`.
    pub status: String,
}

impl StatusBody {
    fn ok() -> Self {
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
    /// The database does not answer (code `database_unavailable`).
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

    /// Readiness: 200 only when the database answers, else 503.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> Readiness {
        match self.state.store.ping().await {
            Ok(()) => Readiness::Ready(Json(StatusBody::ok())),
            Err(e) => Readiness::Unavailable(Json(ApiError::database_unavailable(&e).body())),
        }
    }

    /// Counters in the Prometheus text format (HTTP requests by route and status, HubSpot
    /// client calls, ...).
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(&self) -> MetricsPage {
        MetricsPage::Ok(PlainText(self.state.metrics.render()))
    }
}
