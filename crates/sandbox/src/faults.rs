//! Fault injection driven by one seeded RNG, so that a failing run can be replayed: every
//! request that reaches the fault stage draws the same three numbers in arrival order (so a
//! run without read drops draws exactly as before they existed).
//!
//! Arrival order is only repeatable for a client that sends one request at a time: when
//! requests run concurrently, which of them draws a drop depends on timing, and a run may see
//! none. `--fault-drop-first-writes` adds a schedule that depends on no order: the first N
//! applied writes lose their answer, whichever they are.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use poem::http::StatusCode;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

/// What the dice decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Answer normally.
    None,
    /// Fail with this 5xx before applying anything.
    ServerError(StatusCode),
    /// Apply the write, then drop the connection without an answer.
    DropAfterWrite,
    /// Answer a read by dropping the connection (nothing is sent back).
    DropRead,
}

const SERVER_ERRORS: [StatusCode; 4] = [
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
];

/// The fault knobs and their RNG.
#[derive(Debug)]
pub(crate) struct Faults {
    p_5xx: f64,
    p_drop: f64,
    p_drop_read: f64,
    rng: Mutex<ChaCha8Rng>,
    /// How many of the first applied writes lose their answer whatever the dice say.
    drop_first_writes: u64,
    /// Applied writes so far (counted only while a schedule is set).
    applied_writes: AtomicU64,
}

impl Faults {
    /// Faults with these probabilities (0..=1): a 5xx, a write dropped after it is applied, a
    /// read dropped; seeded.
    pub(crate) fn new(p_5xx: f64, p_drop: f64, p_drop_read: f64, seed: u64) -> Self {
        Self {
            p_5xx,
            p_drop,
            p_drop_read,
            // A stream of its own, apart from the one that generates contacts.
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0xFA17_5EED_0000_0001)),
            drop_first_writes: 0,
            applied_writes: AtomicU64::new(0),
        }
    }

    /// The same faults, with the answers of the first `n` applied writes dropped as well.
    pub(crate) fn dropping_first_writes(mut self, n: u64) -> Self {
        self.drop_first_writes = n;
        self
    }

    /// Called once for each write that was applied (answered with a 2xx): whether the
    /// schedule of `--fault-drop-first-writes` drops its answer. Draws no dice.
    pub(crate) fn scheduled_drop(&self) -> bool {
        self.drop_first_writes > 0
            && self.applied_writes.fetch_add(1, Ordering::Relaxed) < self.drop_first_writes
    }

    /// Whether any fault can happen at all.
    pub(crate) fn enabled(&self) -> bool {
        self.p_5xx > 0.0 || self.p_drop > 0.0 || self.p_drop_read > 0.0
    }

    /// Draws the fate of one request; `is_write` says which kind of drop applies to it.
    pub(crate) fn draw(&self, is_write: bool) -> Fault {
        if !self.enabled() {
            return Fault::None;
        }
        let (a, b, pick) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            (
                rng.random::<f64>(),
                rng.random::<f64>(),
                rng.random_range(0..SERVER_ERRORS.len()),
            )
        };
        if a < self.p_5xx {
            Fault::ServerError(SERVER_ERRORS[pick])
        } else if is_write && b < self.p_drop {
            Fault::DropAfterWrite
        } else if !is_write && b < self.p_drop_read {
            Fault::DropRead
        } else {
            Fault::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_replays_the_same_faults() {
        let a = Faults::new(0.3, 0.3, 0.3, 42);
        let b = Faults::new(0.3, 0.3, 0.3, 42);
        let seq_a: Vec<Fault> = (0..50).map(|i| a.draw(i % 2 == 0)).collect();
        let seq_b: Vec<Fault> = (0..50).map(|i| b.draw(i % 2 == 0)).collect();
        assert_eq!(seq_a, seq_b);
        assert!(seq_a.iter().any(|f| matches!(f, Fault::ServerError(_))));
        assert!(seq_a.contains(&Fault::DropAfterWrite));
        assert!(seq_a.contains(&Fault::DropRead));
    }

    #[test]
    fn read_drops_change_nothing_else_in_the_sequence() {
        let with = Faults::new(0.3, 0.3, 0.3, 42);
        let without = Faults::new(0.3, 0.3, 0.0, 42);
        for i in 0..100 {
            let (a, b) = (with.draw(i % 2 == 0), without.draw(i % 2 == 0));
            if a != Fault::DropRead {
                assert_eq!(a, b, "request {i}");
            } else {
                assert_eq!(b, Fault::None, "request {i}");
            }
        }
    }

    #[test]
    fn the_first_writes_applied_lose_their_answer_without_moving_the_dice() {
        let scheduled = Faults::new(0.3, 0.3, 0.0, 42).dropping_first_writes(2);
        let plain = Faults::new(0.3, 0.3, 0.0, 42);
        assert_eq!(
            (0..3)
                .map(|_| scheduled.scheduled_drop())
                .collect::<Vec<_>>(),
            [true, true, false]
        );
        for i in 0..50 {
            assert_eq!(
                scheduled.draw(i % 2 == 0),
                plain.draw(i % 2 == 0),
                "request {i}"
            );
        }
        assert!(!plain.scheduled_drop(), "no schedule, no drop");
    }

    #[test]
    fn no_probability_means_no_fault() {
        let f = Faults::new(0.0, 0.0, 0.0, 1);
        assert!((0..100).all(|_| f.draw(true) == Fault::None));
    }
}
