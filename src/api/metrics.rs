//! `/metrics` in the Prometheus text format: one `prometheus-client` registry per process
//! holding the HTTP API's families, the webhook route's, the job workers'
//! ([`crate::jobs::metrics`]), the HubSpot client's ([`Metrics::register_client`]), the build
//! info, and gauges read from the database at each scrape ([`Metrics::scrape`]): the queue by
//! status, the last successful sync per direction, the webhook backlog, tombstones and the
//! pool's connections. `serve` serves it on its API; `crm-sync worker` on `worker.bind`.
//!
//! The database gauges are what every process of a deployment reports alike; a scrape that
//! cannot read them says so in `crm_sync_database_up 0` and leaves them out, never failing the
//! page (the process's own counters are still worth having).
//!
//! Labels are the matched route pattern, the method and the status, never raw paths, queries
//! or headers: the page is public (for scrapers) and must reveal nothing sensitive.

use std::sync::RwLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::Utc;

use poem::http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::hubspot::ClientMetrics;
use crate::store::{PoolUsage, QueueGauges, Store, StoreError, TombstoneReason};

/// The route label of requests that matched no route (their paths are not labels: unbounded).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Upper bounds of the HTTP latency histogram, in seconds.
const HTTP_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The process-wide registry behind `/metrics`; shared through [`super::AppState`].
pub struct Metrics {
    registry: RwLock<Registry>,
    http: HttpMetrics,
    webhooks: WebhookMetrics,
    tombstones: Family<ReasonLabels, Gauge>,
    database: DatabaseGauges,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("in_flight", &self.http.in_flight())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the HTTP, webhook, job, build and database families.
    pub fn new() -> Self {
        let http = HttpMetrics::default();
        let webhooks = WebhookMetrics::default();
        let tombstones = Family::<ReasonLabels, Gauge>::default();
        let database = DatabaseGauges::default();
        let mut registry = Registry::default();
        registry.register(
            "crm_sync_build",
            "The running build: its version (always 1)",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        http.register(&mut registry);
        webhooks.register(&mut registry);
        crate::jobs::metrics::register(&mut registry);
        registry.register(
            "crm_sync_contacts_hubspot_deleted",
            "Local contacts deleted in HubSpot (tombstoned; never pushed again until restored), by reason",
            tombstones.clone(),
        );
        database.register(&mut registry);
        Self {
            registry: RwLock::new(registry),
            http,
            webhooks,
            tombstones,
            database,
        }
    }

    /// Adds the HubSpot client's families to the page.
    pub fn register_client(&self, client: &ClientMetrics) {
        client.register(
            &mut self
                .registry
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    }

    /// The HTTP counters.
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// The webhook route's counters.
    pub fn webhooks(&self) -> &WebhookMetrics {
        &self.webhooks
    }

    /// Sets the tombstone gauge to `counts` (read from the database just before a scrape, so
    /// that every process of a deployment reports the same).
    pub fn set_tombstones(&self, counts: &[(TombstoneReason, i64)]) {
        self.tombstones.clear();
        for (reason, n) in counts {
            self.tombstones
                .get_or_create(&ReasonLabels {
                    reason: reason.to_string(),
                })
                .set(*n);
        }
    }

    /// Reads the database gauges from `store`, then renders the page. A database error is
    /// logged and shown as `crm_sync_database_up 0`, with the gauges it would have set left
    /// out; the page itself never fails.
    pub async fn scrape(&self, store: &Store) -> String {
        self.database.set_pool(store.pool_usage());
        let read = async {
            let queue = store.queue_gauges().await?;
            let tombstones = store.count_tombstones().await?;
            Ok::<_, StoreError>((queue, tombstones))
        };
        match read.await {
            Ok((queue, tombstones)) => {
                self.database.set_queue(&queue);
                self.set_tombstones(&tombstones);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the database gauges for /metrics");
                self.database.set_down();
                self.tombstones.clear();
            }
        }
        self.render()
    }

    /// The whole page.
    pub fn render(&self) -> String {
        let registry = self
            .registry
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// The gauges set from the database at each scrape.
#[derive(Debug, Default)]
struct DatabaseGauges {
    up: Gauge,
    queue: Family<StatusLabels, Gauge>,
    last_success: Family<DirectionLabels, Gauge<f64, AtomicU64>>,
    pending_pulls: Gauge,
    oldest_pending_pull_age: Gauge<f64, AtomicU64>,
    connections: Family<StateLabels, Gauge>,
}

impl DatabaseGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "crm_sync_database_up",
            "1 when this scrape could read the database gauges, else 0",
            self.up.clone(),
        );
        registry.register(
            "crm_sync_queue_jobs",
            "Jobs not finished, by status (queued, running, retrying), from the database",
            self.queue.clone(),
        );
        registry.register(
            "crm_sync_last_success_timestamp_seconds",
            "When the newest successful push or pull finished (webhook pulls aside), by \
             direction; absent until one succeeds",
            self.last_success.clone(),
        );
        registry.register(
            "crm_sync_webhook_pending_pulls",
            "HubSpot records webhooks named that still wait for their pull",
            self.pending_pulls.clone(),
        );
        registry.register(
            "crm_sync_webhook_oldest_pending_pull_age_seconds",
            "How long the oldest record still waiting for its webhook pull has waited (0: none \
             waits)",
            self.oldest_pending_pull_age.clone(),
        );
        registry.register(
            "crm_sync_db_connections",
            "This process's database pool connections, by state (in_use, idle)",
            self.connections.clone(),
        );
    }

    fn set_queue(&self, gauges: &QueueGauges) {
        self.up.set(1);
        for (status, n) in &gauges.jobs {
            self.queue
                .get_or_create(&StatusLabels {
                    status: status.as_str(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.last_success.clear();
        for (direction, at) in &gauges.last_success {
            self.last_success
                .get_or_create(&DirectionLabels {
                    direction: direction.as_str(),
                })
                .set(epoch_seconds(*at));
        }
        self.pending_pulls
            .set(i64::try_from(gauges.pending_webhook_pulls).unwrap_or(i64::MAX));
        let age = gauges
            .oldest_pending_webhook_pull
            .map_or(0.0, |at| (Utc::now() - at).as_seconds_f64().max(0.0));
        self.oldest_pending_pull_age.set(age);
    }

    /// What a failed read leaves: no series that could be stale, zeros where a gauge has no
    /// labels to drop (`crm_sync_database_up 0` says they are unknown).
    fn set_down(&self) {
        self.up.set(0);
        self.queue.clear();
        self.last_success.clear();
        self.pending_pulls.set(0);
        self.oldest_pending_pull_age.set(0.0);
    }

    fn set_pool(&self, usage: PoolUsage) {
        for (state, n) in [("in_use", usage.in_use), ("idle", usage.idle)] {
            self.connections
                .get_or_create(&StateLabels { state })
                .set(i64::from(n));
        }
    }
}

/// Seconds since the Unix epoch, with milliseconds.
fn epoch_seconds(at: chrono::DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// Why verified webhook events were acknowledged without being applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoredReason {
    /// About another HubSpot account than the connected one.
    OtherPortal,
    /// No account is connected.
    NotConnected,
}

impl IgnoredReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OtherPortal => "other_portal",
            Self::NotConnected => "not_connected",
        }
    }
}

/// Why webhook requests were refused before any of their events was read (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectedReason {
    /// Unsigned, badly signed or stale.
    BadSignature,
    /// `hubspot.client_secret` is not set, so no signature can be checked.
    NoSecret,
}

impl RejectedReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::NoSecret => "no_secret",
        }
    }
}

/// The webhook route's counters: events of verified requests (received, duplicates, ignored
/// by reason) and requests refused by reason.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    received: Counter,
    duplicates: Counter,
    ignored: Family<ReasonLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
}

impl WebhookMetrics {
    fn register(&self, registry: &mut Registry) {
        for reason in [IgnoredReason::OtherPortal, IgnoredReason::NotConnected] {
            self.counter(reason);
        }
        for reason in [RejectedReason::BadSignature, RejectedReason::NoSecret] {
            self.rejected_counter(reason);
        }
        registry.register(
            "crm_sync_webhook_events_received",
            "Events in webhook requests whose signature checked out (malformed elements included)",
            self.received.clone(),
        );
        registry.register(
            "crm_sync_webhook_events_duplicate",
            "Webhook events already seen (HubSpot redeliveries), skipped",
            self.duplicates.clone(),
        );
        registry.register(
            "crm_sync_webhook_events_ignored",
            "Verified webhook events acknowledged but not applied, by reason (other_portal: \
             about another HubSpot account)",
            self.ignored.clone(),
        );
        registry.register(
            "crm_sync_webhook_requests_rejected",
            "Webhook requests refused with 401 before any event was read, by reason",
            self.rejected.clone(),
        );
    }

    fn counter(&self, reason: IgnoredReason) -> Counter {
        self.ignored.get_or_create_owned(&ReasonLabels {
            reason: reason.as_str().to_owned(),
        })
    }

    fn rejected_counter(&self, reason: RejectedReason) -> Counter {
        self.rejected.get_or_create_owned(&ReasonLabels {
            reason: reason.as_str().to_owned(),
        })
    }

    /// Counts the events of a verified request: `received` in all, `duplicates` of them seen
    /// before.
    pub fn record_batch(&self, received: usize, duplicates: usize) {
        self.received.inc_by(received as u64);
        self.duplicates.inc_by(duplicates as u64);
    }

    /// Counts a request refused for `reason`.
    pub fn record_rejected(&self, reason: RejectedReason) {
        self.rejected_counter(reason).inc();
    }

    /// Counts `n` events ignored for `reason`.
    pub fn record_ignored(&self, reason: IgnoredReason, n: u64) {
        self.counter(reason).inc_by(n);
    }

    /// Events ignored for `reason` so far.
    pub fn ignored(&self, reason: IgnoredReason) -> u64 {
        self.counter(reason).get()
    }

    /// Requests refused for `reason` so far.
    pub fn rejected(&self, reason: RejectedReason) -> u64 {
        self.rejected_counter(reason).get()
    }

    /// Events received in verified requests so far, and how many of them were duplicates.
    pub fn events(&self) -> (u64, u64) {
        (self.received.get(), self.duplicates.get())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

/// The HTTP API's counters: requests by route pattern, method and status; latency by route
/// and method; requests in flight.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(http_histogram),
            in_flight: Gauge::default(),
        }
    }
}

/// A request being served; counted in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl HttpMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern, method and status",
            self.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by route pattern and method",
            self.durations.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being served now",
            self.in_flight.clone(),
        );
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Records an answered request.
    pub fn record(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method,
                status,
            })
            .inc();
        self.durations
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                method,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Requests being served now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// Requests to `route` answered with `status`, over all methods.
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        KNOWN_METHODS
            .iter()
            .map(|(_, method)| *method)
            .chain(["OTHER"])
            .filter_map(|method| {
                self.requests.get(&RequestLabels {
                    route: route.to_owned(),
                    method,
                    status,
                })
            })
            .map(|c| c.get())
            .sum()
    }
}

const KNOWN_METHODS: [(Method, &str); 9] = [
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

fn method_label(method: &Method) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|(m, _)| m == method)
        .map_or("OTHER", |(_, label)| label)
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
    fn the_hubspot_clients_families_join_the_page() {
        let m = Metrics::new();
        let client = ClientMetrics::default();
        m.register_client(&client);
        let page = m.render();
        assert!(page.contains("hubspot_token_refreshes_total 0\n"), "{page}");
        assert!(
            page.contains("# TYPE crm_sync_job_runs_total counter"),
            "{page}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.http()
            .record("/a\"b\\c\nd", &Method::GET, 200, Duration::ZERO);
        assert!(
            m.render().contains("route=\"/a\\\"b\\\\c\\nd\""),
            "{}",
            m.render()
        );
    }

    #[test]
    fn the_tombstone_gauge_shows_the_counts_it_was_given() {
        let m = Metrics::new();
        m.set_tombstones(&[(TombstoneReason::PrivacyDeletion, 3)]);
        assert!(
            m.render()
                .contains("crm_sync_contacts_hubspot_deleted{reason=\"privacy_deletion\"} 3\n")
        );
    }
}
