//! Per-client rate limits for the public routes (install page, OAuth callbacks, webhooks):
//! a token bucket per client address, refused requests answered 429 with `Retry-After`.
//!
//! A hand-written bucket rather than a crate: it is a few lines, needs no timer, and keeps
//! the dependency tree lean. Limits are per process; behind several processes each keeps its
//! own budget, which only makes the limit proportionally looser.
//!
//! The client address is the TCP peer, or behind one of `server.trusted_proxies` the address
//! those proxies forwarded ([`super::client_ip`]); without that setting every request through a
//! reverse proxy would share the proxy's bucket.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

use super::client_ip::TrustedProxies;
use super::error::{ApiError, ErrorCode};
use super::html::Page;

/// How many requests a client may make: `burst` at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests allowed back to back.
    pub burst: u32,
    /// Requests regained per minute.
    pub per_minute: u32,
}

/// The budgets of the public routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Install page and OAuth callbacks: a person clicks these a few times.
    pub pages: Quota,
    /// Webhooks: spent only by requests that fail the signature check ([`Charge::Unauthorized`]);
    /// HubSpot's own deliveries (up to 10 concurrent requests per account) are never limited.
    pub webhooks: Quota,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            pages: Quota {
                burst: 20,
                per_minute: 30,
            },
            webhooks: Quota {
                burst: 200,
                per_minute: 1200,
            },
        }
    }
}

/// Above this many tracked clients, buckets that are full again are forgotten.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// One token bucket per client address.
#[derive(Debug)]
pub struct KeyedLimiter {
    quota: Quota,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl KeyedLimiter {
    /// A limiter with `quota` for every client.
    pub fn new(quota: Quota) -> Self {
        Self {
            quota,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill_per_sec(&self) -> f64 {
        f64::from(self.quota.per_minute) / 60.0
    }

    /// Takes one request from `client`'s budget; `Err` says how long until one is available.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        self.spend(client, now, true)
    }

    /// Whether `client` has a request left in its budget, without taking it; `Err` says how
    /// long until it has.
    pub fn peek(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        self.spend(client, now, false)
    }

    fn spend(&self, client: IpAddr, now: Instant, take: bool) -> Result<(), Duration> {
        let burst = f64::from(self.quota.burst.max(1));
        let rate = self.refill_per_sec();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, b| {
                b.tokens + rate * now.saturating_duration_since(b.updated).as_secs_f64() < burst
            });
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + rate * elapsed).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            if take {
                bucket.tokens -= 1.0;
            }
            return Ok(());
        }
        if rate <= 0.0 {
            return Err(Duration::from_secs(60));
        }
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
    }
}

/// The key of a client: its IPv4 address, or the /64 of its IPv6 address (one host usually
/// owns a whole /64).
fn client_key(client: Option<IpAddr>) -> IpAddr {
    match client {
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        Some(v4) => v4,
        // Not a TCP peer (tests, unix sockets): one shared budget.
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// How a refusal is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An HTML page (install page, callbacks).
    Html,
    /// The JSON error envelope (webhooks).
    Json,
}

/// Which requests spend a client's budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// Every request (pages a person clicks).
    Every,
    /// Only requests answered 401 (webhooks): HubSpot's correctly signed deliveries are never
    /// limited, however fast a push makes it send them (up to 10 requests at once, 100 events
    /// each); a client whose requests keep failing the signature check is refused up front,
    /// before its body is read, once its budget is spent.
    Unauthorized,
}

/// Middleware: refuses a client over its budget with 429.
pub struct RateLimit {
    limiter: Arc<KeyedLimiter>,
    refusal: Refusal,
    charge: Charge,
    proxies: Arc<TrustedProxies>,
}

impl RateLimit {
    /// Limits every request with `limiter` (shared between the routes that share a budget),
    /// telling clients apart through `proxies`.
    pub fn new(limiter: Arc<KeyedLimiter>, refusal: Refusal, proxies: Arc<TrustedProxies>) -> Self {
        Self {
            limiter,
            refusal,
            charge: Charge::Every,
            proxies,
        }
    }

    /// Spends the budget only on the requests `charge` names.
    pub fn charging(mut self, charge: Charge) -> Self {
        self.charge = charge;
        self
    }
}

impl<E: Endpoint> Middleware<E> for RateLimit {
    type Output = RateLimitEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RateLimitEndpoint {
            inner,
            limiter: self.limiter.clone(),
            refusal: self.refusal,
            charge: self.charge,
            proxies: self.proxies.clone(),
        }
    }
}

/// The endpoint made by [`RateLimit`].
pub struct RateLimitEndpoint<E> {
    inner: E,
    limiter: Arc<KeyedLimiter>,
    refusal: Refusal,
    charge: Charge,
    proxies: Arc<TrustedProxies>,
}

impl<E: Endpoint> Endpoint for RateLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let client = client_key(self.proxies.client_of(&req));
        let now = Instant::now();
        let allowed = match self.charge {
            Charge::Every => self.limiter.check(client, now),
            Charge::Unauthorized => self.limiter.peek(client, now),
        };
        if let Err(wait) = allowed {
            tracing::warn!(%client, path = %req.uri().path(), "rate limit exceeded");
            return Ok(too_many(self.refusal, wait));
        }
        let answer = self.inner.call(req).await.map(IntoResponse::into_response);
        if self.charge == Charge::Unauthorized {
            let status = match &answer {
                Ok(resp) => resp.status(),
                Err(error) => error.status(),
            };
            if status == StatusCode::UNAUTHORIZED {
                // Spent now; a request over the budget was already refused above.
                let _ = self.limiter.check(client, Instant::now());
            }
        }
        answer
    }
}

fn too_many(refusal: Refusal, wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let message = format!("too many requests from your address; try again in {secs} s");
    let mut resp = match refusal {
        Refusal::Html => Page::new("Too many requests")
            .status(StatusCode::TOO_MANY_REQUESTS)
            .para(&message)
            .into_response(),
        Refusal::Json => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            message,
        )
        .into_response(),
    };
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_waits_for_the_refill() {
        let limiter = KeyedLimiter::new(Quota {
            burst: 2,
            per_minute: 60,
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(limiter.check(a, t0).is_ok());
        assert!(limiter.check(a, t0).is_ok());
        let wait = limiter.check(a, t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        assert!(limiter.check(b, t0).is_ok(), "budgets are per client");
        assert!(limiter.check(a, t0 + Duration::from_secs(1)).is_ok());
    }

    /// Serves one rate-limited route (burst 2, no refill) on a real socket; its base URL.
    async fn serve_limited(proxies: TrustedProxies) -> String {
        use poem::EndpointExt as _;
        let limiter = Arc::new(KeyedLimiter::new(Quota {
            burst: 2,
            per_minute: 0,
        }));
        let app = poem::Route::new().at(
            "/",
            poem::endpoint::make_sync(|_| "ok").with(RateLimit::new(
                limiter,
                Refusal::Json,
                Arc::new(proxies),
            )),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let acceptor = poem::listener::TcpAcceptor::from_tokio(listener).expect("acceptor");
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(app));
        format!("http://{addr}/")
    }

    /// The statuses of `n` requests to `url`, each with `forwarded_for` as X-Forwarded-For.
    async fn statuses(url: &str, forwarded_for: &[&str]) -> Vec<u16> {
        let http = reqwest::Client::new();
        let mut out = Vec::new();
        for value in forwarded_for {
            let resp = http
                .get(url)
                .header("x-forwarded-for", *value)
                .send()
                .await
                .expect("request");
            out.push(resp.status().as_u16());
        }
        out
    }

    #[tokio::test]
    async fn clients_behind_a_trusted_proxy_get_buckets_of_their_own() {
        let trusted = TrustedProxies::new(vec!["127.0.0.1".parse().expect("cidr")]);
        let url = serve_limited(trusted).await;
        // The left entry is whatever the client claimed; the proxy appended the right one.
        let a = "203.0.113.99, 198.51.100.1";
        assert_eq!(statuses(&url, &[a, a, a]).await, [200, 200, 429]);
        let b = "203.0.113.99, 198.51.100.2";
        assert_eq!(statuses(&url, &[b, b]).await, [200, 200], "another client");
        let forged = "198.51.100.3, 198.51.100.1";
        assert_eq!(
            statuses(&url, &[forged]).await,
            [429],
            "a forged left entry does not escape the bucket"
        );
    }

    #[tokio::test]
    async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let url = serve_limited(TrustedProxies::default()).await;
        let spoofed = ["198.51.100.1", "198.51.100.2", "198.51.100.3"];
        assert_eq!(statuses(&url, &spoofed).await, [200, 200, 429]);
    }
}
