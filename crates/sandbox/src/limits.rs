//! HubSpot's rate limits: a rolling 10-second budget per app (the private-app token, or all
//! OAuth tokens of one client), a per-second budget per token for search, a rolling 10-second
//! budget per app of its own for the associations API's batch calls (the spec exempts those
//! from the general one), and the daily counter reported in headers.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The daily allowance of a Free/Starter private app.
pub(crate) const DAILY_LIMIT: u64 = 250_000;

const TEN_SECONDS: Duration = Duration::from_secs(10);
const ONE_SECOND: Duration = Duration::from_secs(1);

/// Who a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum AppKey {
    /// The private app behind the static token.
    PrivateApp,
    /// An OAuth app, by client id.
    OAuthClient(String),
}

/// The numbers behind the `X-HubSpot-RateLimit-*` headers of an allowed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// Requests per 10 s (0 when the limit is off).
    pub max: u32,
    /// Left in the current window.
    pub remaining: u32,
    /// Requests per second derived from the 10 s budget (HubSpot's deprecated header).
    pub secondly: u32,
    /// Left this second.
    pub secondly_remaining: u32,
    /// Private apps only: used today.
    pub daily_used: Option<u64>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The rolling 10-second budget.
    TenSecondly,
    /// The search budget.
    Secondly,
    /// The daily budget.
    Daily,
}

/// Rolling-window counters.
#[derive(Debug)]
pub(crate) struct Limits {
    per_10s: u32,
    search_per_s: u32,
    associations_per_10s: u32,
    windows: Mutex<HashMap<AppKey, VecDeque<Instant>>>,
    association_windows: Mutex<HashMap<AppKey, VecDeque<Instant>>>,
    search: Mutex<HashMap<String, VecDeque<Instant>>>,
    daily: Mutex<HashMap<AppKey, u64>>,
}

impl Limits {
    /// Limits with these budgets; 0 turns one off.
    pub(crate) fn new(per_10s: u32, search_per_s: u32, associations_per_10s: u32) -> Self {
        Self {
            per_10s,
            search_per_s,
            associations_per_10s,
            windows: Mutex::new(HashMap::new()),
            association_windows: Mutex::new(HashMap::new()),
            search: Mutex::new(HashMap::new()),
            daily: Mutex::new(HashMap::new()),
        }
    }

    /// The 10-second budget (0 = off).
    pub(crate) fn per_10s(&self) -> u32 {
        self.per_10s
    }

    /// The associations API's 10-second budget (0 = off).
    pub(crate) fn associations_per_10s(&self) -> u32 {
        self.associations_per_10s
    }

    /// Counts a request that is neither a search nor an associations call, or says which
    /// limit it hit.
    pub(crate) fn admit(&self, app: &AppKey, now: Instant) -> Result<Budget, Refusal> {
        let daily_used = self.count_daily(app)?;
        let daily_used = matches!(app, AppKey::PrivateApp).then_some(daily_used);
        admit_window(&self.windows, self.per_10s, app, now, daily_used)
    }

    /// Counts an associations call against the associations' own 10-second budget (the
    /// associations API has daily limits of its own, which the sandbox does not model).
    pub(crate) fn admit_associations(&self, app: &AppKey, now: Instant) -> Result<Budget, Refusal> {
        admit_window(
            &self.association_windows,
            self.associations_per_10s,
            app,
            now,
            None,
        )
    }

    /// Counts a search request against the token's per-second budget.
    pub(crate) fn admit_search(&self, token: &str, now: Instant) -> Result<(), Refusal> {
        if self.search_per_s == 0 {
            return Ok(());
        }
        let mut all = self.search.lock().unwrap_or_else(|p| p.into_inner());
        let window = all.entry(token.to_owned()).or_default();
        prune(window, now, ONE_SECOND);
        if window.len() >= self.search_per_s as usize {
            return Err(Refusal::Secondly);
        }
        window.push_back(now);
        Ok(())
    }

    /// Requests counted today for the private app.
    pub(crate) fn daily_used(&self) -> u64 {
        let daily = self.daily.lock().unwrap_or_else(|p| p.into_inner());
        daily.get(&AppKey::PrivateApp).copied().unwrap_or(0)
    }

    /// Forgets all counts.
    pub(crate) fn reset(&self) {
        for windows in [&self.windows, &self.association_windows] {
            windows.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        self.search
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.daily.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn count_daily(&self, app: &AppKey) -> Result<u64, Refusal> {
        let mut daily = self.daily.lock().unwrap_or_else(|p| p.into_inner());
        let used = daily.entry(app.clone()).or_default();
        // OAuth apps carry no daily cap; the cap only applies while limits are on at all.
        if self.per_10s > 0 && matches!(app, AppKey::PrivateApp) && *used >= DAILY_LIMIT {
            return Err(Refusal::Daily);
        }
        *used += 1;
        Ok(*used)
    }
}

/// Counts a request in `app`'s rolling 10-second window of `windows` (`limit` 0 = off).
fn admit_window(
    windows: &Mutex<HashMap<AppKey, VecDeque<Instant>>>,
    limit: u32,
    app: &AppKey,
    now: Instant,
    daily_used: Option<u64>,
) -> Result<Budget, Refusal> {
    if limit == 0 {
        return Ok(Budget {
            max: 0,
            remaining: 0,
            secondly: 0,
            secondly_remaining: 0,
            daily_used,
        });
    }
    let mut windows = windows.lock().unwrap_or_else(|p| p.into_inner());
    let window = windows.entry(app.clone()).or_default();
    prune(window, now, TEN_SECONDS);
    let used = u32::try_from(window.len()).unwrap_or(u32::MAX);
    if used >= limit {
        return Err(Refusal::TenSecondly);
    }
    window.push_back(now);
    let secondly = limit.div_ceil(10);
    let last_second = window
        .iter()
        .rev()
        .take_while(|t| now.duration_since(**t) < ONE_SECOND)
        .count();
    Ok(Budget {
        max: limit,
        remaining: limit - used - 1,
        secondly,
        secondly_remaining: secondly.saturating_sub(u32::try_from(last_second).unwrap_or(u32::MAX)),
        daily_used,
    })
}

fn prune(window: &mut VecDeque<Instant>, now: Instant, span: Duration) {
    while window
        .front()
        .is_some_and(|t| now.duration_since(*t) >= span)
    {
        window.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ten_second_budget_is_per_app_and_rolls() {
        let limits = Limits::new(2, 0, 0);
        let t0 = Instant::now();
        let oauth = AppKey::OAuthClient("c".into());
        assert_eq!(
            limits.admit(&AppKey::PrivateApp, t0).map(|b| b.remaining),
            Ok(1)
        );
        assert_eq!(
            limits.admit(&AppKey::PrivateApp, t0).map(|b| b.remaining),
            Ok(0)
        );
        assert_eq!(
            limits.admit(&AppKey::PrivateApp, t0),
            Err(Refusal::TenSecondly)
        );
        assert!(
            limits.admit(&oauth, t0).is_ok(),
            "another app has its own budget"
        );
        assert!(limits.admit(&AppKey::PrivateApp, t0 + TEN_SECONDS).is_ok());
    }

    #[test]
    fn associations_have_their_own_ten_second_budget() {
        let limits = Limits::new(1, 0, 2);
        let t0 = Instant::now();
        assert!(limits.admit(&AppKey::PrivateApp, t0).is_ok());
        assert_eq!(
            limits.admit(&AppKey::PrivateApp, t0),
            Err(Refusal::TenSecondly)
        );
        let first = limits.admit_associations(&AppKey::PrivateApp, t0);
        assert_eq!(first.map(|b| (b.max, b.remaining)), Ok((2, 1)));
        assert!(limits.admit_associations(&AppKey::PrivateApp, t0).is_ok());
        assert_eq!(
            limits.admit_associations(&AppKey::PrivateApp, t0),
            Err(Refusal::TenSecondly)
        );
        assert!(
            limits
                .admit_associations(&AppKey::PrivateApp, t0 + TEN_SECONDS)
                .is_ok()
        );
    }

    #[test]
    fn search_has_its_own_per_second_budget() {
        let limits = Limits::new(1, 1, 0);
        let t0 = Instant::now();
        assert!(limits.admit_search("tok", t0).is_ok());
        assert_eq!(limits.admit_search("tok", t0), Err(Refusal::Secondly));
        assert!(
            limits.admit(&AppKey::PrivateApp, t0).is_ok(),
            "searches left the 10 s budget alone"
        );
        assert!(limits.admit_search("tok", t0 + ONE_SECOND).is_ok());
    }
}
