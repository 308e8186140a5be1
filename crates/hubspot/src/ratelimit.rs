//! A client-side rolling-window limiter.
//!
//! HubSpot counts requests in a rolling window (100–250 per 10 s, 5 searches per second).
//! A GCRA limiter (e.g. `governor`) smooths requests to an even rate, which is stricter than
//! HubSpot at the start of a burst and does not model "N in any window" exactly; a log of the
//! grant times in the window is exact, small (at most N instants) and needs nothing beyond
//! tokio.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// At most `capacity` grants in any `window`, shared by every caller; callers are served in
/// arrival order.
#[derive(Debug)]
pub struct SlidingWindow {
    window: Duration,
    /// 0 = no limit.
    configured: u32,
    state: Mutex<WindowState>,
    /// Held by the caller whose turn it is, while it waits; tokio's mutex is fair (FIFO).
    turn: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct WindowState {
    capacity: u32,
    /// Times of the grants still inside the window, oldest first.
    grants: VecDeque<Instant>,
    /// Nobody is granted before this (a `Retry-After`, a secondly 429).
    paused_until: Option<Instant>,
}

impl WindowState {
    fn purge(&mut self, now: Instant, window: Duration) {
        while self.grants.front().is_some_and(|t| *t + window <= now) {
            self.grants.pop_front();
        }
    }

    fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.grants.len() as u32)
    }
}

impl SlidingWindow {
    /// A limiter of `capacity` per `window`; capacity 0 means unlimited.
    pub fn new(capacity: u32, window: Duration) -> Self {
        Self {
            window,
            configured: capacity,
            state: Mutex::new(WindowState {
                capacity,
                grants: VecDeque::with_capacity(capacity as usize),
                paused_until: None,
            }),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits until a request may be sent, and counts it.
    pub async fn acquire(&self) {
        let _turn = self.turn.lock().await;
        loop {
            let wake_at = {
                let mut state = self.lock_state();
                let now = Instant::now();
                state.purge(now, self.window);
                let paused_until = state.paused_until;
                match paused_until {
                    Some(until) if until > now => until,
                    _ if self.configured == 0 => return,
                    _ if state.free() > 0 => {
                        state.grants.push_back(now);
                        return;
                    }
                    // Full: the oldest grant leaves the window first.
                    _ => state
                        .grants
                        .front()
                        .map_or(now, |oldest| *oldest + self.window),
                }
            };
            tokio::time::sleep_until(wake_at).await;
        }
    }

    /// Takes HubSpot's view from `X-HubSpot-RateLimit-Remaining` / `-Max`: when HubSpot has
    /// fewer requests left than this limiter thinks (other processes share the app's budget),
    /// the difference is counted as used now.
    pub fn observe(&self, remaining: u32, max: Option<u32>) {
        if self.configured == 0 {
            return;
        }
        let mut state = self.lock_state();
        let now = Instant::now();
        state.purge(now, self.window);
        if let Some(max) = max.filter(|m| *m > 0) {
            state.capacity = self.configured.min(max);
        }
        while state.free() > remaining {
            state.grants.push_back(now);
        }
    }

    /// After a 429 for this window: counts the window as full, so the next grant waits until
    /// the oldest request leaves it (a whole window when unlimited).
    pub fn saturate(&self) {
        if self.configured == 0 {
            // No local budget to fill: hold everyone back for a whole window instead.
            self.pause_for(self.window);
            return;
        }
        let mut state = self.lock_state();
        let now = Instant::now();
        state.purge(now, self.window);
        while state.free() > 0 {
            state.grants.push_back(now);
        }
    }

    /// Grants nothing for `duration` (HubSpot's `Retry-After`, a secondly 429).
    pub fn pause_for(&self, duration: Duration) {
        let mut state = self.lock_state();
        let until = Instant::now() + duration;
        state.paused_until = Some(state.paused_until.map_or(until, |u| u.max(until)));
    }

    /// How long a request arriving now would wait for its grant (not counting callers already
    /// queued ahead of it): until a pause ends, or until the oldest grant leaves a full window.
    pub fn wait_ahead(&self) -> Duration {
        let mut state = self.lock_state();
        let now = Instant::now();
        state.purge(now, self.window);
        let paused = state
            .paused_until
            .filter(|until| *until > now)
            .map_or(Duration::ZERO, |until| until - now);
        let full = if self.configured != 0 && state.free() == 0 {
            state
                .grants
                .front()
                .map_or(Duration::ZERO, |oldest| (*oldest + self.window) - now)
        } else {
            Duration::ZERO
        };
        paused.max(full)
    }

    /// Whether at least half of the window's budget is free now (always, when unlimited): what
    /// background work waits for, so that the user's jobs get the calls they can use.
    pub fn half_free(&self) -> bool {
        if self.configured == 0 {
            return true;
        }
        let mut state = self.lock_state();
        let now = Instant::now();
        state.purge(now, self.window);
        let paused = state.paused_until.is_some_and(|until| until > now);
        !paused && state.free() * 2 >= state.capacity
    }

    /// How many requests could be sent now without waiting (`u32::MAX` when unlimited).
    pub fn available(&self) -> u32 {
        if self.configured == 0 {
            return u32::MAX;
        }
        let mut state = self.lock_state();
        state.purge(Instant::now(), self.window);
        state.free()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, WindowState> {
        // The state is a plain log of instants: it stays consistent even if a holder panicked.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const TEN_S: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_full_window_waits_until_the_oldest_request_leaves_it() {
        let limiter = SlidingWindow::new(3, TEN_S);
        let start = Instant::now();
        for _ in 0..3 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now(), start, "the first three go at once");
        tokio::time::advance(Duration::from_secs(4)).await;
        limiter.acquire().await;
        assert_eq!(
            Instant::now() - start,
            TEN_S,
            "the fourth waits for the first to expire"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_rolls_rather_than_resetting() {
        let limiter = SlidingWindow::new(2, TEN_S);
        let start = Instant::now();
        limiter.acquire().await; // t=0
        tokio::time::advance(Duration::from_secs(6)).await;
        limiter.acquire().await; // t=6
        limiter.acquire().await; // waits for t=0 to leave: t=10
        assert_eq!(Instant::now() - start, TEN_S);
        limiter.acquire().await; // waits for t=6 to leave: t=16
        assert_eq!(Instant::now() - start, Duration::from_secs(16));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_never_exceed_the_budget_in_any_window() {
        let limiter = Arc::new(SlidingWindow::new(5, TEN_S));
        let start = Instant::now();
        let tasks: Vec<_> = (0..23)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    limiter.acquire().await;
                    Instant::now() - start
                })
            })
            .collect();
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.expect("task runs"));
        }
        times.sort();
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().take_while(|u| **u < *t + TEN_S).count();
            assert!(in_window <= 5, "{in_window} grants within 10 s of {t:?}");
        }
        assert_eq!(*times.last().expect("23 grants"), Duration::from_secs(40));
    }

    #[tokio::test(start_paused = true)]
    async fn fewer_remaining_on_hubspot_makes_the_limiter_wait() {
        let limiter = SlidingWindow::new(100, TEN_S);
        limiter.acquire().await;
        limiter.observe(2, Some(100));
        assert_eq!(limiter.available(), 2);
        let start = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, TEN_S);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_max_from_hubspot_lowers_the_budget() {
        let limiter = SlidingWindow::new(100, TEN_S);
        limiter.observe(10, Some(10));
        assert_eq!(limiter.available(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn saturate_and_pause_hold_every_caller_back() {
        let limiter = SlidingWindow::new(10, TEN_S);
        let start = Instant::now();
        limiter.acquire().await;
        limiter.saturate();
        assert_eq!(limiter.available(), 0);
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, TEN_S);

        let search = SlidingWindow::new(5, Duration::from_secs(1));
        let start = Instant::now();
        search.pause_for(Duration::from_secs(3));
        search.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_ahead_says_how_long_the_next_request_waits() {
        let limiter = SlidingWindow::new(2, TEN_S);
        assert_eq!(limiter.wait_ahead(), Duration::ZERO);
        limiter.acquire().await;
        tokio::time::advance(Duration::from_secs(3)).await;
        limiter.saturate();
        assert_eq!(
            limiter.wait_ahead(),
            Duration::from_secs(7),
            "the oldest leaves at 10 s"
        );
        limiter.pause_for(Duration::from_secs(9));
        assert_eq!(
            limiter.wait_ahead(),
            Duration::from_secs(9),
            "the longer of the two"
        );
        let start = Instant::now();
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_zero_is_unlimited_but_still_honours_a_pause() {
        let limiter = SlidingWindow::new(0, TEN_S);
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now(), start);
        limiter.pause_for(Duration::from_secs(2));
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }
}
