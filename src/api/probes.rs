//! The small HTTP listener of `crm-sync worker` (`worker.bind`): `/healthz`, `/readyz` and
//! `/metrics`, answered by the same code as the API's ([`super::health`],
//! [`super::Metrics::scrape`]), with the same error envelope and request metrics. Nothing
//! else: a worker has no API token and serves no data.

use std::future::Future;
use std::sync::Arc;

use poem::listener::TcpAcceptor;
use poem::web::Data;
use poem::{Endpoint, EndpointExt, IntoResponse, Response, Route, Server, get, handler};
use poem_openapi::payload::{Json, PlainText};

use super::allow::AllowedMethods;
use super::health::{MetricsPage, StatusBody, readiness};
use super::{Metrics, SHUTDOWN_GRACE, middleware};
use crate::store::Store;

/// What the probe routes read.
#[derive(Clone)]
struct ProbeState {
    store: Store,
    metrics: Arc<Metrics>,
}

#[handler]
fn healthz() -> Response {
    Json(StatusBody::ok()).into_response()
}

#[handler]
async fn readyz(state: Data<&ProbeState>) -> Response {
    readiness(&state.store).await.into_response()
}

#[handler]
async fn scrape(state: Data<&ProbeState>) -> Response {
    MetricsPage::Ok(PlainText(state.metrics.scrape(&state.store).await)).into_response()
}

/// The probe routes over `store`, counting into `metrics`.
pub fn probe_router(store: Store, metrics: Arc<Metrics>) -> impl Endpoint<Output = Response> {
    let state = ProbeState {
        store,
        metrics: metrics.clone(),
    };
    Route::new()
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/metrics", get(scrape))
        .data(state)
        .with(middleware::ErrorEnvelope::new(probe_methods()))
        .with(middleware::Observe::new(metrics))
}

/// The probe listener's paths, each answering GET only (named in a 405's `Allow`).
fn probe_methods() -> AllowedMethods {
    let mut allowed = AllowedMethods::default();
    for path in ["/healthz", "/readyz", "/metrics"] {
        allowed.add(path, poem::http::Method::GET);
    }
    allowed
}

/// Serves the probe routes on `listener` until `shutdown` resolves.
pub async fn serve_probes(
    listener: tokio::net::TcpListener,
    store: Store,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    Server::new_with_acceptor(acceptor)
        .name("crm-sync-worker")
        .run_with_graceful_shutdown(probe_router(store, metrics), shutdown, Some(SHUTDOWN_GRACE))
        .await
}
