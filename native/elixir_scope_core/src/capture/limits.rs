//! Safety limits of a trace session, checked on every trace event.
//!
//! Algorithm: a session is live until the first limit trips; from then on
//! every event is refused. Limits are an event count (`max_events`), a rate
//! (`n` events per fixed window of `window_ns`; the event that would exceed
//! `n` trips it) and a deadline (monotonic ns). An explicit [`Limits::stop`]
//! (owner down, requested) ends the session the same way.
//!
//! The rate window counts from the `admitted` total at its start, so an
//! admitted event costs one atomic add. At a window's start, an event on
//! another thread that races the new window's base still counts from the
//! old one: it can trip the limit a few nanoseconds early, and only if the
//! previous window was already near `n`.
//!
//! Invariants: `stopped` goes from 0 to a reason exactly once (the first
//! stopper wins and is the one told [`Admit::trip`]); `admitted` never
//! exceeds `max_events` (an overshoot by a racing thread is taken back);
//! every event offered is either admitted or counted in `refused`.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};

use crossbeam_utils::CachePadded;

/// Why a session stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    MaxEvents = 1,
    RateLimit = 2,
    Duration = 3,
    OwnerDown = 4,
    Requested = 5,
}

impl StopReason {
    fn from_u8(v: u8) -> Option<StopReason> {
        Some(match v {
            1 => StopReason::MaxEvents,
            2 => StopReason::RateLimit,
            3 => StopReason::Duration,
            4 => StopReason::OwnerDown,
            5 => StopReason::Requested,
            _ => return None,
        })
    }
}

/// The limits of one session.
#[derive(Clone, Copy, Debug)]
pub struct LimitsConfig {
    pub max_events: u64,
    /// At most `.0` events per window of `.1` ns.
    pub rate: Option<(u64, i64)>,
    /// Monotonic ns after which the session stops.
    pub deadline: i64,
}

/// The verdict on one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admit {
    /// Record the event.
    pub record: bool,
    /// Events admitted so far, this one included (0 when refused).
    pub count: u64,
    /// This event stopped the session (the caller tells the owner).
    pub trip: Option<StopReason>,
}

pub struct Limits {
    config: LimitsConfig,
    stopped: AtomicU8,
    /// Written on every event, from every traced scheduler: on its own
    /// cache line, away from the read-mostly fields above.
    admitted: CachePadded<AtomicU64>,
    refused: AtomicU64,
    window_start: AtomicI64,
    /// `admitted` when the current rate window started.
    window_base: AtomicU64,
}

impl Limits {
    pub fn new(config: LimitsConfig, now: i64) -> Limits {
        Limits {
            config,
            stopped: AtomicU8::new(0),
            admitted: CachePadded::new(AtomicU64::new(0)),
            refused: AtomicU64::new(0),
            window_start: AtomicI64::new(now),
            window_base: AtomicU64::new(0),
        }
    }

    /// Decides on one event seen at `now` (monotonic ns). One atomic
    /// read-modify-write per admitted event: the rate window counts from
    /// the `admitted` count at its start.
    pub fn admit(&self, now: i64) -> Admit {
        if self.stopped.load(Ordering::Relaxed) != 0 {
            return self.refuse(None);
        }
        if now >= self.config.deadline {
            return self.refuse(Some(StopReason::Duration));
        }
        let before = self.admitted.fetch_add(1, Ordering::Relaxed);
        if before >= self.config.max_events {
            self.admitted.fetch_sub(1, Ordering::Relaxed);
            return self.refuse(Some(StopReason::MaxEvents));
        }
        if let Some((n, window)) = self.config.rate {
            let start = self.window_start.load(Ordering::Relaxed);
            if now - start >= window
                && self
                    .window_start
                    .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.window_base.store(before, Ordering::Relaxed);
            }
            let in_window = before.saturating_sub(self.window_base.load(Ordering::Relaxed));
            if in_window >= n {
                self.admitted.fetch_sub(1, Ordering::Relaxed);
                return self.refuse(Some(StopReason::RateLimit));
            }
        }
        let last = before + 1 == self.config.max_events;
        Admit {
            record: true,
            count: before + 1,
            trip: (last && self.stop(StopReason::MaxEvents)).then_some(StopReason::MaxEvents),
        }
    }

    fn refuse(&self, reason: Option<StopReason>) -> Admit {
        self.refused.fetch_add(1, Ordering::Relaxed);
        Admit {
            record: false,
            count: 0,
            trip: reason.filter(|&r| self.stop(r)),
        }
    }

    /// Stops the session; true if this call stopped it (first reason wins).
    pub fn stop(&self, reason: StopReason) -> bool {
        let stopped = self
            .stopped
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if stopped {
            tracing::info!(reason = ?reason, admitted = self.admitted(), "trace session stopped");
        }
        stopped
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed) != 0
    }

    pub fn stopped_because(&self) -> Option<StopReason> {
        StopReason::from_u8(self.stopped.load(Ordering::Acquire))
    }

    /// Events admitted so far.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// Events refused so far (after a stop, or the one that tripped a limit).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_events: u64, rate: Option<(u64, i64)>, deadline: i64) -> Limits {
        Limits::new(
            LimitsConfig {
                max_events,
                rate,
                deadline,
            },
            0,
        )
    }

    /// Offers `per_thread` events (at times 0, 1, ...) from each of
    /// `threads` threads at once; counts the verdicts `counted` picks.
    fn on_threads(
        l: &std::sync::Arc<Limits>,
        threads: usize,
        per_thread: i64,
        counted: fn(Admit) -> bool,
    ) -> u64 {
        (0..threads)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    (0..per_thread).filter(|&t| counted(l.admit(t))).count() as u64
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum()
    }

    #[test]
    fn max_events_admits_exactly_n_and_trips_on_the_last() {
        let l = limits(3, None, i64::MAX);
        let verdicts: Vec<Admit> = (0..5).map(|t| l.admit(t)).collect();
        assert!(verdicts[..3].iter().all(|a| a.record));
        assert_eq!(
            verdicts.iter().map(|a| a.count).collect::<Vec<_>>(),
            [1, 2, 3, 0, 0]
        );
        assert_eq!(verdicts[2].trip, Some(StopReason::MaxEvents));
        assert!(verdicts[..2].iter().all(|a| a.trip.is_none()));
        assert!(verdicts[3..].iter().all(|a| !a.record && a.trip.is_none()));
        assert_eq!((l.admitted(), l.refused()), (3, 2));
        assert_eq!(l.stopped_because(), Some(StopReason::MaxEvents));
    }

    #[test]
    fn the_rate_limit_trips_on_the_event_over_n_within_a_window() {
        let l = limits(u64::MAX, Some((2, 100)), i64::MAX);
        assert!(l.admit(0).record && l.admit(50).record);
        // A new window starts at 100: two more fit.
        assert!(l.admit(100).record && l.admit(150).record);
        let over = l.admit(160);
        assert_eq!(
            over,
            Admit {
                record: false,
                count: 0,
                trip: Some(StopReason::RateLimit)
            }
        );
        assert!(!l.admit(1_000).record, "stays stopped");
        assert_eq!((l.admitted(), l.refused()), (4, 2));
    }

    #[test]
    fn the_deadline_trips_once() {
        let l = limits(u64::MAX, None, 10);
        assert!(l.admit(9).record);
        assert_eq!(l.admit(10).trip, Some(StopReason::Duration));
        assert_eq!(l.admit(11).trip, None);
        assert_eq!(l.stopped_because(), Some(StopReason::Duration));
    }

    #[test]
    fn the_first_stop_wins() {
        let l = limits(u64::MAX, None, i64::MAX);
        assert!(l.stop(StopReason::OwnerDown));
        assert!(!l.stop(StopReason::Requested));
        assert_eq!(l.stopped_because(), Some(StopReason::OwnerDown));
        assert!(!l.admit(0).record);
    }

    #[test]
    fn concurrent_admits_never_exceed_max_events() {
        let l = std::sync::Arc::new(limits(10_000, None, i64::MAX));
        let trips = on_threads(&l, 4, 5_000, |a| a.trip.is_some());
        assert_eq!(trips, 1);
        assert_eq!(l.admitted(), 10_000);
        assert_eq!(l.admitted() + l.refused(), 20_000);
    }

    #[test]
    fn concurrent_admits_never_exceed_the_rate() {
        let l = std::sync::Arc::new(limits(u64::MAX, Some((1_000, i64::MAX)), i64::MAX));
        let admitted = on_threads(&l, 4, 1_000, |a| a.record);
        assert_eq!(admitted, 1_000);
        assert_eq!(l.admitted(), 1_000);
        assert_eq!(l.admitted() + l.refused(), 4_000);
        assert_eq!(l.stopped_because(), Some(StopReason::RateLimit));
    }
}
