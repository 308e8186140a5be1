//! Counters of the client for `/metrics`: requests by operation and status class, retries,
//! 429s, ambiguous writes, token refreshes and latency histograms, as `prometheus-client`
//! families that the service registers on its one registry ([`ClientMetrics::register`]).

use super::error::RateLimitPolicy;
use super::retry::Operation;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

const STATUS_CLASSES: [&str; 6] = ["2xx", "3xx", "4xx", "429", "5xx", "network"];
const BUCKETS: [f64; 9] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Why a request was sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// A 5xx (or 423/477) answer.
    ServerError,
    /// No answer.
    Network,
    /// A 429.
    RateLimited,
    /// An expired OAuth access token (refreshed, then sent again).
    ExpiredToken,
}

impl RetryReason {
    fn label(self) -> &'static str {
        match self {
            Self::ServerError => "server_error",
            Self::Network => "network",
            Self::RateLimited => "rate_limited",
            Self::ExpiredToken => "expired_token",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RetryLabels {
    operation: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PolicyLabels {
    policy: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// The client's counters, shared by every clone of a client. Cheap to clone: clones count
/// into the same series.
#[derive(Debug, Clone)]
pub struct ClientMetrics {
    requests: Family<RequestLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
    rate_limited: Family<PolicyLabels, Counter>,
    ambiguous: Family<OperationLabels, Counter>,
    token_refreshes: Counter,
    latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
    retry_waits: Family<ReasonLabels, Counter<f64, AtomicU64>>,
}

const RETRY_REASONS: [RetryReason; 4] = [
    RetryReason::ServerError,
    RetryReason::Network,
    RetryReason::RateLimited,
    RetryReason::ExpiredToken,
];

const POLICIES: [RateLimitPolicy; 4] = [
    RateLimitPolicy::TenSecondlyRolling,
    RateLimitPolicy::Secondly,
    RateLimitPolicy::Daily,
    RateLimitPolicy::Unspecified,
];

impl Default for ClientMetrics {
    fn default() -> Self {
        let metrics = Self {
            requests: Family::default(),
            retries: Family::default(),
            rate_limited: Family::default(),
            ambiguous: Family::default(),
            token_refreshes: Counter::default(),
            latency: Family::new_with_constructor(latency_histogram),
            retry_waits: Family::default(),
        };
        // Zeros from the start, so that rates and alerts over them have a series to work on
        // before the first 429 or retry.
        for policy in POLICIES {
            let _ = metrics.rate_limited.get_or_create(&PolicyLabels {
                policy: policy_label(policy),
            });
        }
        for reason in RETRY_REASONS {
            let _ = metrics.retry_waits.get_or_create(&ReasonLabels {
                reason: reason.label(),
            });
        }
        metrics
    }
}

fn status_class(status: Option<u16>) -> &'static str {
    match status {
        None => "network",
        Some(429) => "429",
        Some(s) if s < 300 => "2xx",
        Some(s) if s < 400 => "3xx",
        Some(s) if s < 500 => "4xx",
        Some(_) => "5xx",
    }
}

fn policy_label(policy: RateLimitPolicy) -> &'static str {
    match policy {
        RateLimitPolicy::TenSecondlyRolling => "TEN_SECONDLY_ROLLING",
        RateLimitPolicy::Secondly => "SECONDLY",
        RateLimitPolicy::Daily => "DAILY",
        RateLimitPolicy::Unspecified => "unspecified",
    }
}

impl ClientMetrics {
    /// Registers the client's families on `registry` (the service's `/metrics` page).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "hubspot_requests",
            "HubSpot requests by operation and status class (network = no answer)",
            self.requests.clone(),
        );
        registry.register(
            "hubspot_retries",
            "HubSpot requests sent again, by reason",
            self.retries.clone(),
        );
        registry.register(
            "hubspot_rate_limited",
            "429 answers from HubSpot by policy",
            self.rate_limited.clone(),
        );
        registry.register(
            "hubspot_ambiguous_writes",
            "Non-idempotent writes whose answer was lost (may or may not be applied)",
            self.ambiguous.clone(),
        );
        registry.register(
            "hubspot_token_refreshes",
            "OAuth access-token refreshes",
            self.token_refreshes.clone(),
        );
        registry.register(
            "hubspot_request_duration_seconds",
            "Time from sending a HubSpot request to its full answer",
            self.latency.clone(),
        );
        registry.register(
            "hubspot_retry_wait_seconds",
            "Seconds HubSpot retries waited before they were sent, by reason (after a 429: how \
             long the rate budget held every caller back)",
            self.retry_waits.clone(),
        );
    }

    pub(crate) fn record_request(&self, op: Operation, status: Option<u16>, elapsed: Duration) {
        let operation = op.name();
        // The retry series of an operation start at zero with its first request (creating
        // every operation's up front would fill the page with series never used).
        for reason in RETRY_REASONS {
            let labels = RetryLabels {
                operation,
                reason: reason.label(),
            };
            if self.retries.get(&labels).is_none() {
                let _ = self.retries.get_or_create(&labels);
            }
        }
        self.requests
            .get_or_create(&RequestLabels {
                operation,
                status: status_class(status),
            })
            .inc();
        self.latency
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn record_retry(&self, op: Operation, reason: RetryReason, wait: Duration) {
        self.retries
            .get_or_create(&RetryLabels {
                operation: op.name(),
                reason: reason.label(),
            })
            .inc();
        self.retry_waits
            .get_or_create(&ReasonLabels {
                reason: reason.label(),
            })
            .inc_by(wait.as_secs_f64());
    }

    /// Seconds the retries for `reason` waited so far, in all.
    pub fn retry_wait_seconds(&self, reason: RetryReason) -> f64 {
        self.retry_waits
            .get(&ReasonLabels {
                reason: reason.label(),
            })
            .map_or(0.0, |c| c.get())
    }

    pub(crate) fn record_429(&self, policy: RateLimitPolicy) {
        self.rate_limited
            .get_or_create(&PolicyLabels {
                policy: policy_label(policy),
            })
            .inc();
    }

    pub(crate) fn record_ambiguous(&self, op: Operation) {
        self.ambiguous
            .get_or_create(&OperationLabels {
                operation: op.name(),
            })
            .inc();
    }

    pub(crate) fn record_refresh(&self) {
        self.token_refreshes.inc();
    }

    /// Requests of `op` answered with `class` (`2xx`, `3xx`, `4xx`, `429`, `5xx`, `network`).
    pub fn requests(&self, op: Operation, class: &str) -> u64 {
        STATUS_CLASSES
            .iter()
            .find(|c| **c == class)
            .and_then(|status| {
                self.requests.get(&RequestLabels {
                    operation: op.name(),
                    status,
                })
            })
            .map_or(0, |c| c.get())
    }

    /// Requests sent, of every operation and answer.
    pub fn requests_total(&self) -> u64 {
        Operation::every()
            .flat_map(|op| STATUS_CLASSES.iter().map(move |c| self.requests(op, c)))
            .sum()
    }

    /// Requests sent again, for any reason.
    pub fn retries_total(&self) -> u64 {
        Operation::every()
            .flat_map(|op| RETRY_REASONS.iter().map(move |r| (op, r)))
            .filter_map(|(op, reason)| {
                self.retries.get(&RetryLabels {
                    operation: op.name(),
                    reason: reason.label(),
                })
            })
            .map(|c| c.get())
            .sum()
    }

    /// 429 answers, of every policy.
    pub fn rate_limited_total(&self) -> u64 {
        POLICIES
            .into_iter()
            .filter_map(|p| {
                self.rate_limited.get(&PolicyLabels {
                    policy: policy_label(p),
                })
            })
            .map(|c| c.get())
            .sum()
    }

    /// OAuth access-token refreshes.
    pub fn token_refreshes(&self) -> u64 {
        self.token_refreshes.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_requests_retries_429s_and_a_cumulative_histogram() {
        let m = ClientMetrics::default();
        m.record_request(
            Operation::ListContacts,
            Some(200),
            Duration::from_millis(80),
        );
        m.record_request(
            Operation::ListContacts,
            Some(429),
            Duration::from_millis(20),
        );
        m.record_request(Operation::BatchCreate, None, Duration::from_secs(31));
        m.record_retry(
            Operation::ListContacts,
            RetryReason::RateLimited,
            Duration::from_secs(3),
        );
        m.record_429(RateLimitPolicy::TenSecondlyRolling);
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("hubspot_requests_total{operation=\"list_contacts\",status=\"2xx\"} 1")
        );
        assert!(
            out.contains("hubspot_requests_total{operation=\"list_contacts\",status=\"429\"} 1")
        );
        assert!(
            out.contains("hubspot_requests_total{operation=\"batch_create\",status=\"network\"} 1")
        );
        assert!(out.contains(
            "hubspot_retries_total{operation=\"list_contacts\",reason=\"rate_limited\"} 1"
        ));
        assert!(out.contains("hubspot_rate_limited_total{policy=\"TEN_SECONDLY_ROLLING\"} 1"));
        assert!(out.contains(
            "hubspot_request_duration_seconds_bucket{operation=\"list_contacts\",le=\"0.05\"} 1"
        ));
        assert!(out.contains(
            "hubspot_request_duration_seconds_bucket{operation=\"list_contacts\",le=\"0.1\"} 2"
        ));
        assert!(out.contains(
            "hubspot_request_duration_seconds_bucket{operation=\"batch_create\",le=\"30\"} 0"
        ));
        assert!(out.contains(
            "hubspot_request_duration_seconds_bucket{operation=\"batch_create\",le=\"+Inf\"} 1"
        ));
        assert!(
            out.contains("hubspot_request_duration_seconds_count{operation=\"list_contacts\"} 2")
        );
        assert!(
            out.contains("hubspot_retry_wait_seconds_total{reason=\"rate_limited\"} 3.0"),
            "{out}"
        );
        assert_eq!(m.retry_wait_seconds(RetryReason::RateLimited), 3.0);
        assert_eq!(m.requests_total(), 3);
        assert_eq!(m.requests(Operation::ListContacts, "429"), 1);
    }
}
