//! Circuit breaker around the store write path (guide §6.3).
//!
//! States: *closed* (writes go through; `threshold` failures in a row open
//! it), *open* (no write is tried: workers leave events in the rings, which
//! are bounded and count what they refuse, so nothing is lost silently;
//! after `timeout` it half-opens), *half-open* (one probe write is let
//! through: success closes, failure opens again).
//!
//! Invariants: at most one probe is in flight while half-open; `trips`
//! counts every closed/half-open -> open transition.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

pub struct Breaker {
    state: AtomicU8,
    failures: AtomicU32,
    opened_at: AtomicI64,
    threshold: AtomicU32,
    timeout_ns: AtomicI64,
    trips: AtomicU64,
}

/// A snapshot for stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerStats {
    pub state: BreakerState,
    pub consecutive_failures: u32,
    pub trips: u64,
}

impl Breaker {
    pub fn new(threshold: u32, timeout_ns: i64) -> Breaker {
        Breaker {
            state: AtomicU8::new(BreakerState::Closed as u8),
            failures: AtomicU32::new(0),
            opened_at: AtomicI64::new(0),
            threshold: AtomicU32::new(threshold.max(1)),
            timeout_ns: AtomicI64::new(timeout_ns),
            trips: AtomicU64::new(0),
        }
    }

    pub fn configure(&self, threshold: u32, timeout_ns: i64) {
        self.threshold.store(threshold.max(1), Ordering::Relaxed);
        self.timeout_ns.store(timeout_ns, Ordering::Relaxed);
    }

    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// May a write be tried now (`now()` is read only when open)? Turns
    /// open into half-open (one probe) once the timeout has passed.
    pub fn allow(&self, now: impl FnOnce() -> i64) -> bool {
        match self.state() {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => false,
            BreakerState::Open => {
                let waited = now() - self.opened_at.load(Ordering::Acquire);
                waited >= self.timeout_ns.load(Ordering::Relaxed)
                    && self
                        .state
                        .compare_exchange(
                            BreakerState::Open as u8,
                            BreakerState::HalfOpen as u8,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_ok()
            }
        }
    }

    /// A probe that found nothing to write: open again, so the next
    /// `allow` probes at once.
    pub fn abandon_probe(&self) {
        // Checked first: this is called on every empty drain, and a failed
        // compare-exchange still takes the cache line.
        if self.state() != BreakerState::HalfOpen {
            return;
        }
        let _ = self.state.compare_exchange(
            BreakerState::HalfOpen as u8,
            BreakerState::Open as u8,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// A write succeeded. Closes a half-open breaker (the probe passed); an
    /// open one stays open, as the write was let through before the trip
    /// (another worker's) and proves nothing. Writes nothing when already
    /// closed and clean, so workers do not bounce the breaker's cache line
    /// on every batch.
    pub fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.state() == BreakerState::HalfOpen
            && self
                .state
                .compare_exchange(
                    BreakerState::HalfOpen as u8,
                    BreakerState::Closed as u8,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            tracing::info!("store circuit breaker closed: the probe write succeeded");
        }
    }

    pub fn failure(&self, now: i64) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let probe_failed = self.state() == BreakerState::HalfOpen;
        if probe_failed || failures >= self.threshold.load(Ordering::Relaxed) {
            self.opened_at.store(now, Ordering::Release);
            if self.state.swap(BreakerState::Open as u8, Ordering::AcqRel)
                != BreakerState::Open as u8
            {
                let trips = self.trips.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    trips,
                    failures,
                    probe_failed,
                    "store circuit breaker opened: events wait in the rings"
                );
            }
        }
    }

    pub fn stats(&self) -> BreakerStats {
        BreakerStats {
            state: self.state(),
            consecutive_failures: self.failures.load(Ordering::Relaxed),
            trips: self.trips.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_half_opens_after_timeout_and_closes_on_success() {
        let b = Breaker::new(3, 100);
        assert!(b.allow(|| 0));
        b.failure(1);
        b.failure(2);
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure(3);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(|| 50), "open: no writes");
        assert!(b.allow(|| 103), "timeout passed: one probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(|| 104), "one probe at a time");
        b.failure(105);
        assert_eq!(b.state(), BreakerState::Open, "a failed probe opens again");
        assert!(!b.allow(|| 150));
        assert!(b.allow(|| 205));
        b.abandon_probe();
        assert!(
            b.allow(|| 206),
            "an empty probe does not hold the breaker half-open"
        );
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow(|| 206));
        assert_eq!(
            b.stats(),
            BreakerStats {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                trips: 2
            }
        );
    }

    #[test]
    fn a_write_let_through_before_the_trip_does_not_close_it() {
        let b = Breaker::new(1, 100);
        assert!(b.allow(|| 0), "worker B's write starts");
        b.failure(10); // worker A's write fails: open
        b.success(); // worker B's write, started before, succeeds
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(|| 50));
        assert!(b.allow(|| 110), "the probe");
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = Breaker::new(2, 100);
        b.failure(0);
        b.success();
        b.failure(1);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
