//! How the client is built: where it sends requests, its budgets, timeouts and retry bounds.

use std::time::Duration;
use url::Url;

/// Settings of a [`HubSpotClient`](super::HubSpotClient). `new` gives HubSpot's defaults.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `hubspot.api_base_url`: every call, OAuth token calls included, goes here.
    pub api_base_url: Url,
    /// `hubspot.requests_per_10s`: the client-side budget for the 10-second rolling window
    /// (0 turns the client-side limit off).
    pub requests_per_10s: u32,
    /// Searches per second (HubSpot allows 5 per token; 0 turns the limit off).
    pub search_per_second: u32,
    /// Batch association calls per 10 seconds: a budget of their own, apart from
    /// `requests_per_10s` (HubSpot: 100 Free/Starter, 150 Professional/Enterprise; 0 turns the
    /// limit off).
    pub associations_per_10s: u32,
    /// Connect and total timeouts.
    pub timeouts: Timeouts,
    /// Retries after 5xx answers, timeouts and dropped connections (not counting the first try).
    pub max_retries: u32,
    /// Retries after 429 answers (each waits as HubSpot's answer says).
    pub max_rate_limit_retries: u32,
    /// Exponential backoff for 5xx and network failures.
    pub backoff: Backoff,
    /// Refresh an OAuth access token this long before it expires.
    pub refresh_ahead: Duration,
    /// `User-Agent` of every request.
    pub user_agent: String,
}

/// Connection and request timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Opening a TCP+TLS connection.
    pub connect: Duration,
    /// A whole request, from sending to the last byte of the answer.
    pub request: Duration,
}

/// Exponential backoff with jitter: retry n waits between half and all of `base * 2^(n-1)`,
/// never more than `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first step.
    pub base: Duration,
    /// The cap.
    pub max: Duration,
}

impl ClientConfig {
    /// HubSpot's defaults: 100 requests per 10 s, 5 searches per second, 100 batch association
    /// calls per 10 s, 10 s connect and 30 s total timeouts, 4 retries for failures and 6 for
    /// 429s.
    pub fn new(api_base_url: Url) -> Self {
        Self {
            api_base_url,
            requests_per_10s: 100,
            search_per_second: 5,
            associations_per_10s: 100,
            timeouts: Timeouts {
                connect: Duration::from_secs(10),
                request: Duration::from_secs(30),
            },
            max_retries: 4,
            max_rate_limit_retries: 6,
            backoff: Backoff {
                base: Duration::from_millis(250),
                max: Duration::from_secs(10),
            },
            refresh_ahead: Duration::from_secs(300),
            user_agent: concat!("crm-sync/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}
