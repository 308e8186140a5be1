//! `/metrics` in the Prometheus text format: the HTTP API's own counters plus whatever other
//! modules register (the HubSpot client, later the workers). Hand-written because a handful of
//! counters does not justify a metrics crate.
//!
//! Labels are the matched route pattern, the method and the status, never raw paths, queries
//! or headers: the page is public (for scrapers) and must reveal nothing sensitive.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use poem::http::Method;

/// The route label of requests that matched no route (their paths are not labels: unbounded).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Something that appends its own metrics, in Prometheus text format, to the `/metrics` page.
pub trait MetricsSource: Send + Sync {
    /// Appends `# HELP`/`# TYPE` headers and samples to `out`.
    fn render_prometheus(&self, out: &mut String);
}

/// Any `Fn(&mut String)` is a source, e.g.
/// `move |out: &mut String| client.metrics().render_prometheus(out)`.
impl<F: Fn(&mut String) + Send + Sync> MetricsSource for F {
    fn render_prometheus(&self, out: &mut String) {
        self(out)
    }
}

/// The process-wide registry behind `/metrics`; shared through [`super::AppState`].
#[derive(Default)]
pub struct Metrics {
    http: HttpMetrics,
    webhooks: WebhookMetrics,
    sources: RwLock<Vec<Arc<dyn MetricsSource>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("in_flight", &self.http.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds another module's metrics to the page (rendered after the HTTP metrics, in
    /// registration order).
    pub fn register(&self, source: Arc<dyn MetricsSource>) {
        self.sources
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(source);
    }

    /// The HTTP counters.
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// The webhook route's counters.
    pub fn webhooks(&self) -> &WebhookMetrics {
        &self.webhooks
    }

    /// The whole page.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.http.render_prometheus(&mut out);
        self.webhooks.render_prometheus(&mut out);
        let sources = self
            .sources
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for source in sources.iter() {
            source.render_prometheus(&mut out);
        }
        out
    }
}

/// Why a verified webhook event was acknowledged but not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoredReason {
    /// It is about another HubSpot account than the connected one.
    OtherPortal,
    /// No HubSpot account is connected, so no event can be about it.
    NotConnected,
}

impl IgnoredReason {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OtherPortal => "other_portal",
            Self::NotConnected => "not_connected",
        }
    }
}

/// Counters of the webhook route.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    other_portal: std::sync::atomic::AtomicU64,
    not_connected: std::sync::atomic::AtomicU64,
}

impl WebhookMetrics {
    fn counter(&self, reason: IgnoredReason) -> &std::sync::atomic::AtomicU64 {
        match reason {
            IgnoredReason::OtherPortal => &self.other_portal,
            IgnoredReason::NotConnected => &self.not_connected,
        }
    }

    /// Counts `n` events ignored for `reason`.
    pub fn record_ignored(&self, reason: IgnoredReason, n: u64) {
        self.counter(reason).fetch_add(n, Ordering::Relaxed);
    }

    /// Events ignored for `reason` so far.
    pub fn ignored(&self, reason: IgnoredReason) -> u64 {
        self.counter(reason).load(Ordering::Relaxed)
    }

    /// Appends `crm_sync_webhook_events_ignored_total` to `out`.
    pub fn render_prometheus(&self, out: &mut String) {
        out.push_str(
            "# HELP crm_sync_webhook_events_ignored_total Verified webhook events acknowledged \
             but not applied, by reason.\n\
             # TYPE crm_sync_webhook_events_ignored_total counter\n",
        );
        for reason in [IgnoredReason::OtherPortal, IgnoredReason::NotConnected] {
            let _ = writeln!(
                out,
                "crm_sync_webhook_events_ignored_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.ignored(reason)
            );
        }
    }
}

/// Series key: route pattern, method, status.
type RequestKey = (String, &'static str, u16);

#[derive(Debug, Default, Clone, Copy)]
struct RequestStats {
    count: u64,
    duration_sum: Duration,
}

/// Counters of the HTTP API.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<RequestKey, RequestStats>>,
    in_flight: AtomicI64,
}

/// Marks one request in flight until dropped (also when its future is dropped mid-way).
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HttpMetrics {
    /// Counts a request as started; it stays in flight until the guard is dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.in_flight)
    }

    /// Counts a finished request. `route` is the matched pattern or [`UNMATCHED_ROUTE`].
    pub fn record(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let key = (route.to_owned(), method_label(method), status);
        let mut requests = self.lock();
        let stats = requests.entry(key).or_default();
        stats.count += 1;
        stats.duration_sum += elapsed;
    }

    /// Requests now being served.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Finished requests of `route` (any method) answered with `status`.
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        self.lock()
            .iter()
            .filter(|((r, _, s), _)| r == route && *s == status)
            .map(|(_, stats)| stats.count)
            .sum()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<RequestKey, RequestStats>> {
        // A counter map is still valid after a panic elsewhere; keep counting.
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends the HTTP metrics to `out`.
    pub fn render_prometheus(&self, out: &mut String) {
        let requests = self.lock().clone();
        header(
            out,
            "http_requests_total",
            "counter",
            "HTTP requests answered, by route pattern, method and status.",
        );
        for ((route, method, status), stats) in &requests {
            let _ = writeln!(
                out,
                "http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {}",
                escape_label(route),
                stats.count
            );
        }
        header(
            out,
            "http_request_duration_seconds",
            "summary",
            "Time to answer HTTP requests, by route pattern and method.",
        );
        let mut durations: BTreeMap<(&str, &str), RequestStats> = BTreeMap::new();
        for ((route, method, _), stats) in &requests {
            let total = durations.entry((route, method)).or_default();
            total.count += stats.count;
            total.duration_sum += stats.duration_sum;
        }
        for ((route, method), stats) in &durations {
            let labels = format!("route=\"{}\",method=\"{method}\"", escape_label(route));
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{{labels}}} {}",
                stats.duration_sum.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{{labels}}} {}",
                stats.count
            );
        }
        header(
            out,
            "http_requests_in_flight",
            "gauge",
            "HTTP requests being served now.",
        );
        let _ = writeln!(out, "http_requests_in_flight {}", self.in_flight());
    }
}

/// A bounded label for the method: clients may send any token as a method.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::TRACE, "TRACE"),
        (Method::CONNECT, "CONNECT"),
    ];
    KNOWN
        .iter()
        .find(|(m, _)| m == method)
        .map_or("OTHER", |(_, label)| label)
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value as the text format requires (backslash, double quote, newline).
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_method_and_status() {
        let m = Metrics::new();
        m.http()
            .record("/contacts", &Method::GET, 200, Duration::from_millis(3));
        m.http()
            .record("/contacts", &Method::GET, 200, Duration::from_millis(5));
        m.http()
            .record(UNMATCHED_ROUTE, &Method::GET, 404, Duration::ZERO);
        let page = m.render();
        assert!(page.contains(
            "http_requests_total{route=\"/contacts\",method=\"GET\",status=\"200\"} 2\n"
        ));
        assert!(page.contains(
            "http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1\n"
        ));
        assert!(page.contains(
            "http_request_duration_seconds_count{route=\"/contacts\",method=\"GET\"} 2\n"
        ));
        assert_eq!(m.http().requests("/contacts", 200), 2);
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let m = Metrics::new();
        let odd = Method::from_bytes(b"BREW").unwrap();
        m.http().record(UNMATCHED_ROUTE, &odd, 405, Duration::ZERO);
        assert!(m.render().contains("method=\"OTHER\""));
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let m = Metrics::new();
        let guard = m.http().start();
        assert!(m.render().contains("http_requests_in_flight 1\n"));
        drop(guard);
        assert_eq!(m.http().in_flight(), 0);
    }

    #[test]
    fn registered_sources_are_appended() {
        let m = Metrics::new();
        m.register(Arc::new(|out: &mut String| {
            out.push_str("hubspot_requests_total 7\n")
        }));
        let page = m.render();
        let http = page.find("http_requests_in_flight").unwrap();
        let other = page.find("hubspot_requests_total 7").unwrap();
        assert!(http < other);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
