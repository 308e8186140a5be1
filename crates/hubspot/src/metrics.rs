//! Counters of the client for `/metrics`: requests by operation and status class, retries,
//! 429s, token refreshes and latency histograms. Plain atomics, no registry.

use super::error::RateLimitPolicy;
use super::retry::Operation;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const OPS: usize = Operation::ALL.len();
const STATUS_CLASSES: [&str; 6] = ["2xx", "3xx", "4xx", "429", "5xx", "network"];
const RETRY_REASONS: [&str; 4] = ["server_error", "network", "rate_limited", "expired_token"];
const POLICIES: [&str; 4] = ["TEN_SECONDLY_ROLLING", "SECONDLY", "DAILY", "unspecified"];
/// Upper bounds (seconds) of the latency histogram buckets; +Inf is implied.
const BUCKETS: [f64; 9] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Why a request was sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryReason {
    ServerError = 0,
    Network = 1,
    RateLimited = 2,
    ExpiredToken = 3,
}

/// The client's counters; shared by all clones of a client.
#[derive(Debug)]
pub struct ClientMetrics {
    requests: [[AtomicU64; STATUS_CLASSES.len()]; OPS],
    retries: [[AtomicU64; RETRY_REASONS.len()]; OPS],
    rate_limited: [AtomicU64; POLICIES.len()],
    ambiguous: [AtomicU64; OPS],
    token_refreshes: AtomicU64,
    latency_buckets: [[AtomicU64; BUCKETS.len()]; OPS],
    latency_sum_micros: [AtomicU64; OPS],
    latency_count: [AtomicU64; OPS],
}

impl Default for ClientMetrics {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            retries: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            rate_limited: std::array::from_fn(|_| AtomicU64::new(0)),
            ambiguous: std::array::from_fn(|_| AtomicU64::new(0)),
            token_refreshes: AtomicU64::new(0),
            latency_buckets: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            latency_sum_micros: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_count: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

fn status_class(status: Option<u16>) -> usize {
    match status {
        None => 5,
        Some(429) => 3,
        Some(s) if s < 300 => 0,
        Some(s) if s < 400 => 1,
        Some(s) if s < 500 => 2,
        Some(_) => 4,
    }
}

fn policy_index(policy: RateLimitPolicy) -> usize {
    match policy {
        RateLimitPolicy::TenSecondlyRolling => 0,
        RateLimitPolicy::Secondly => 1,
        RateLimitPolicy::Daily => 2,
        RateLimitPolicy::Unspecified => 3,
    }
}

impl ClientMetrics {
    /// Counts one request; `status` is `None` when no answer arrived.
    pub(crate) fn record_request(&self, op: Operation, status: Option<u16>, elapsed: Duration) {
        let i = op.index();
        self.requests[i][status_class(status)].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        for (b, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.latency_buckets[i][b].fetch_add(1, Ordering::Relaxed);
            }
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros[i].fetch_add(micros, Ordering::Relaxed);
        self.latency_count[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_retry(&self, op: Operation, reason: RetryReason) {
        self.retries[op.index()][reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_429(&self, policy: RateLimitPolicy) {
        self.rate_limited[policy_index(policy)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_ambiguous(&self, op: Operation) {
        self.ambiguous[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_refresh(&self) {
        self.token_refreshes.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests of `op` answered with a status of `class` (`2xx`, `3xx`, `4xx`, `429`, `5xx`,
    /// or `network` for no answer).
    pub fn requests(&self, op: Operation, class: &str) -> u64 {
        STATUS_CLASSES
            .iter()
            .position(|c| *c == class)
            .map_or(0, |c| self.requests[op.index()][c].load(Ordering::Relaxed))
    }

    /// All requests sent, of every operation.
    pub fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .flatten()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// All retries, of every operation and reason.
    pub fn retries_total(&self) -> u64 {
        self.retries
            .iter()
            .flatten()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// All 429 answers received.
    pub fn rate_limited_total(&self) -> u64 {
        self.rate_limited
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Token refreshes made.
    pub fn token_refreshes(&self) -> u64 {
        self.token_refreshes.load(Ordering::Relaxed)
    }

    /// Writes the counters in Prometheus text format (appends to `out`).
    pub fn render_prometheus(&self, out: &mut String) {
        self.render_requests(out);
        self.render_retries(out);
        header(
            out,
            "hubspot_rate_limited_total",
            "counter",
            "429 answers from HubSpot by policy.",
        );
        for (p, policy) in POLICIES.iter().enumerate() {
            let n = self.rate_limited[p].load(Ordering::Relaxed);
            let _ = writeln!(out, "hubspot_rate_limited_total{{policy=\"{policy}\"}} {n}");
        }
        header(
            out,
            "hubspot_ambiguous_writes_total",
            "counter",
            "Non-idempotent writes whose answer was lost (may or may not be applied).",
        );
        for op in Operation::ALL {
            let n = self.ambiguous[op.index()].load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "hubspot_ambiguous_writes_total{{operation=\"{op}\"}} {n}"
                );
            }
        }
        header(
            out,
            "hubspot_token_refreshes_total",
            "counter",
            "OAuth access-token refreshes.",
        );
        let _ = writeln!(
            out,
            "hubspot_token_refreshes_total {}",
            self.token_refreshes()
        );
        self.render_latency(out);
    }

    fn render_requests(&self, out: &mut String) {
        header(
            out,
            "hubspot_requests_total",
            "counter",
            "HubSpot requests by operation and status class (network = no answer).",
        );
        for op in Operation::ALL {
            for (c, class) in STATUS_CLASSES.iter().enumerate() {
                let n = self.requests[op.index()][c].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "hubspot_requests_total{{operation=\"{op}\",status=\"{class}\"}} {n}"
                    );
                }
            }
        }
    }

    fn render_retries(&self, out: &mut String) {
        header(
            out,
            "hubspot_retries_total",
            "counter",
            "HubSpot requests sent again, by reason.",
        );
        for op in Operation::ALL {
            for (r, reason) in RETRY_REASONS.iter().enumerate() {
                let n = self.retries[op.index()][r].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "hubspot_retries_total{{operation=\"{op}\",reason=\"{reason}\"}} {n}"
                    );
                }
            }
        }
    }

    fn render_latency(&self, out: &mut String) {
        header(
            out,
            "hubspot_request_duration_seconds",
            "histogram",
            "Time from sending a HubSpot request to its full answer.",
        );
        for op in Operation::ALL {
            let i = op.index();
            let count = self.latency_count[i].load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            for (b, bound) in BUCKETS.iter().enumerate() {
                let n = self.latency_buckets[i][b].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "hubspot_request_duration_seconds_bucket{{operation=\"{op}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "hubspot_request_duration_seconds_bucket{{operation=\"{op}\",le=\"+Inf\"}} {count}"
            );
            let sum = self.latency_sum_micros[i].load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "hubspot_request_duration_seconds_sum{{operation=\"{op}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "hubspot_request_duration_seconds_count{{operation=\"{op}\"}} {count}"
            );
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
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
        m.record_retry(Operation::ListContacts, RetryReason::RateLimited);
        m.record_429(RateLimitPolicy::TenSecondlyRolling);
        let mut out = String::new();
        m.render_prometheus(&mut out);
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
        assert_eq!(m.requests_total(), 3);
        assert_eq!(m.requests(Operation::ListContacts, "429"), 1);
    }
}
