//! The layers around the routes: request body limit, error envelope, and per-request tracing
//! and metrics.

use std::sync::Arc;
use std::time::Instant;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, PathPattern, Request, Response};
use tracing::Instrument;

use super::allow::AllowedMethods;
use super::error::{
    ApiError, ErrorCode, PresentedCredentials, RequestFacts, ensure_json_error, error_to_response,
};
use super::metrics::{Metrics, UNMATCHED_ROUTE};

/// Refuses request bodies above a size with 413.
///
/// poem's own `SizeLimit` is not used: it answers 411 to every request without a
/// `Content-Length`, GETs included, and does not bound chunked bodies.
pub struct BodyLimit {
    max_bytes: usize,
}

impl BodyLimit {
    /// Bodies of up to `max_bytes` pass.
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes }
    }
}

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitEndpoint {
            inner,
            max_bytes: self.max_bytes,
        }
    }
}

/// The endpoint made by [`BodyLimit`].
pub struct BodyLimitEndpoint<E> {
    inner: E,
    max_bytes: usize,
}

impl<E: Endpoint> BodyLimitEndpoint<E> {
    fn too_large(&self) -> poem::Error {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!(
                "the request body is larger than the {} bytes this server accepts",
                self.max_bytes
            ),
        )
        .into()
    }
}

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, mut req: Request) -> poem::Result<Self::Output> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_bytes as u64) {
            // Refuse before reading a byte of it.
            return Err(self.too_large());
        }
        let body = req.take_body();
        if body.is_empty() {
            req.set_body(body);
        } else {
            // Chunked or declared-small bodies: read them under the limit, so no route can be
            // made to buffer more than `max_bytes`.
            let bytes = body
                .into_bytes_limit(self.max_bytes)
                .await
                .map_err(|e| match e {
                    poem::error::ReadBodyError::PayloadTooLarge => self.too_large(),
                    other => ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::InvalidBody,
                        format!("the request body could not be read: {other}"),
                    )
                    .into(),
                })?;
            req.set_body(bytes);
        }
        self.inner.call(req).await
    }
}

/// Answers every error, and every non-JSON error response, with the JSON envelope; a 405
/// with the `Allow` header listing the path's methods.
pub struct ErrorEnvelope {
    allowed: Arc<AllowedMethods>,
}

impl ErrorEnvelope {
    /// Envelopes errors; 405s name the methods `allowed` lists for their path.
    pub fn new(allowed: AllowedMethods) -> Self {
        Self {
            allowed: Arc::new(allowed),
        }
    }
}

impl<E: Endpoint> Middleware<E> for ErrorEnvelope {
    type Output = ErrorEnvelopeEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        ErrorEnvelopeEndpoint {
            inner,
            allowed: self.allowed.clone(),
        }
    }
}

/// The endpoint made by [`ErrorEnvelope`].
pub struct ErrorEnvelopeEndpoint<E> {
    inner: E,
    allowed: Arc<AllowedMethods>,
}

impl<E: Endpoint> Endpoint for ErrorEnvelopeEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let facts = RequestFacts {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            credentials: PresentedCredentials::of(&req),
        };
        let mut resp = match self.inner.call(req).await {
            Ok(out) => ensure_json_error(out.into_response(), &facts),
            Err(err) => error_to_response(err, &facts),
        };
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED
            && !resp.headers().contains_key(header::ALLOW)
            && let Some(allow) = self.allowed.for_path(&facts.path)
            && let Ok(value) = HeaderValue::from_str(&allow)
        {
            resp.headers_mut().insert(header::ALLOW, value);
        }
        Ok(resp)
    }
}

/// Logs each request (method, path without query, status, latency; never headers) and counts
/// it in the metrics.
pub struct Observe {
    metrics: Arc<Metrics>,
}

impl Observe {
    /// Counts into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<E: Endpoint> Middleware<E> for Observe {
    type Output = ObserveEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        ObserveEndpoint {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The endpoint made by [`Observe`].
pub struct ObserveEndpoint<E> {
    inner: E,
    metrics: Arc<Metrics>,
}

/// Routes polled by probes and scrapers: logged at debug level when they succeed.
const QUIET_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

impl<E: Endpoint> Endpoint for ObserveEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let method = req.method().clone();
        // The query stays out of logs: OAuth callbacks carry codes and states in it.
        let path = req.uri().path().to_owned();
        let span = tracing::info_span!("http_request", method = %method, path = %path);
        let _in_flight = self.metrics.http().start();
        let started = Instant::now();
        let resp = match self.inner.call(req).instrument(span.clone()).await {
            Ok(out) => out.into_response(),
            Err(err) => err.into_response(),
        };
        let elapsed = started.elapsed();
        let status = resp.status();
        let route = resp
            .data::<PathPattern>()
            .map(|p| p.0.to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
        self.metrics
            .http()
            .record(&route, &method, status.as_u16(), elapsed);
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if status.is_success() && QUIET_PATHS.contains(&path.as_str()) {
            tracing::debug!(parent: &span, status = status.as_u16(), latency_ms, "request answered");
        } else {
            tracing::info!(parent: &span, status = status.as_u16(), latency_ms, "request answered");
        }
        Ok(resp)
    }
}
