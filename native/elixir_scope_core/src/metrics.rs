//! Rolling metric windows: rates and recent latency from cumulative counters.
//!
//! Algorithm: each [`Windows::tick`] takes the pipeline's cumulative
//! [`Totals`] (events stored, batches, correlations, worker busy time, the
//! latency histogram) and turns the difference to the previous tick into a
//! [`Window`]. The last `keep` windows are kept; `recent` is their sum, so
//! rates and percentiles cover about `keep` ticks while the last window
//! reacts at once.
//!
//! Invariants: windows never count anything twice or negative (counters
//! only grow; a counter that went back, e.g. a removed worker's busy time,
//! yields 0 for that window); at most `keep` windows are held.

use std::collections::VecDeque;

use crate::histogram::Snapshot;

/// Cumulative figures at one instant.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Monotonic ns.
    pub at: i64,
    pub stored: u64,
    pub batches: u64,
    pub correlated: u64,
    pub busy_ns: u64,
    pub latency: Snapshot,
}

/// What happened between two ticks (or over several, for `recent`).
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub elapsed_ns: u64,
    pub stored: u64,
    pub batches: u64,
    pub correlated: u64,
    pub busy_ns: u64,
    /// Ring-to-store latencies recorded in the window.
    pub latency: Snapshot,
}

impl Window {
    fn between(then: &Totals, now: &Totals) -> Window {
        Window {
            elapsed_ns: now.at.saturating_sub(then.at).max(0) as u64,
            stored: now.stored.saturating_sub(then.stored),
            batches: now.batches.saturating_sub(then.batches),
            correlated: now.correlated.saturating_sub(then.correlated),
            busy_ns: now.busy_ns.saturating_sub(then.busy_ns),
            latency: now.latency.since(&then.latency),
        }
    }

    fn add(&mut self, other: &Window) {
        self.elapsed_ns += other.elapsed_ns;
        self.stored += other.stored;
        self.batches += other.batches;
        self.correlated += other.correlated;
        self.busy_ns += other.busy_ns;
        self.latency.add(&other.latency);
    }

    /// `n` per second over the window (0 for an empty window).
    pub fn per_second(&self, n: u64) -> f64 {
        match self.elapsed_ns {
            0 => 0.0,
            ns => n as f64 * 1e9 / ns as f64,
        }
    }
}

pub struct Windows {
    previous: Option<Totals>,
    history: VecDeque<Window>,
    keep: usize,
}

impl Windows {
    pub fn new(keep: usize) -> Windows {
        Windows {
            previous: None,
            history: VecDeque::with_capacity(keep),
            keep: keep.max(1),
        }
    }

    /// Closes the current window at `now`; returns it and the sum of the
    /// last `keep` windows. The first tick only opens a window.
    pub fn tick(&mut self, now: Totals) -> (Window, Window) {
        let last = match &self.previous {
            Some(then) => Window::between(then, &now),
            None => Window::default(),
        };
        self.previous = Some(now);
        if self.history.len() == self.keep {
            self.history.pop_front();
        }
        self.history.push_back(last.clone());
        let mut recent = Window::default();
        for w in &self.history {
            recent.add(w);
        }
        (last, recent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Histogram;

    fn totals(at: i64, stored: u64, latencies: &Histogram) -> Totals {
        let mut latency = Snapshot::default();
        latencies.merge_into(&mut latency);
        Totals {
            at,
            stored,
            batches: stored / 10,
            correlated: stored,
            busy_ns: stored * 100,
            latency,
        }
    }

    #[test]
    fn windows_hold_differences_and_recent_sums_the_last_ones() {
        let h = Histogram::default();
        let mut w = Windows::new(2);
        let (first, _) = w.tick(totals(0, 0, &h));
        assert_eq!(first.stored, 0);
        h.record_n(1_000, 10);
        let (last, recent) = w.tick(totals(1_000_000_000, 100, &h));
        assert_eq!((last.stored, last.latency.total()), (100, 10));
        assert_eq!(last.per_second(last.stored), 100.0);
        h.record_n(1_000_000, 30);
        let (last, recent2) = w.tick(totals(2_000_000_000, 400, &h));
        assert_eq!((last.stored, last.latency.total()), (300, 30));
        assert!(last.latency.quantile(0.5) >= 1_000_000);
        assert_eq!(recent.stored, 100);
        assert_eq!((recent2.stored, recent2.elapsed_ns), (400, 2_000_000_000));
        // Only `keep` windows are summed.
        let (_, recent3) = w.tick(totals(3_000_000_000, 400, &h));
        assert_eq!(recent3.stored, 300);
    }

    #[test]
    fn a_counter_going_back_counts_zero() {
        let h = Histogram::default();
        let mut w = Windows::new(4);
        w.tick(totals(0, 100, &h));
        let (last, _) = w.tick(totals(10, 50, &h));
        assert_eq!((last.stored, last.busy_ns), (0, 0));
    }
}
