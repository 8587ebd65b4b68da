//! Load shedding by whole process.
//!
//! Algorithm: while shedding a fraction `f` of the load, an event is dropped
//! when a hash of its pid falls below `f` of the hash space. The decision
//! depends on the pid only, so a process is either kept whole or dropped
//! whole: the processes that are kept still have complete causal chains.
//! The hash bits used are independent of those that route pids to shards,
//! so shedding thins every shard alike.
//!
//! Invariants: `fraction` is in 0..=SCALE (0 = off, one relaxed load on the
//! hot path); every shed event is counted.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::hash::mix;

/// Fractions are stored in 1/65536 steps.
const SCALE: u32 = 1 << 16;

#[derive(Default)]
pub struct Shedder {
    fraction: AtomicU32,
    shed: AtomicU64,
}

impl Shedder {
    /// Sheds `fraction` (clamped to 0..=1) of the processes; 0 stops.
    pub fn set(&self, fraction: f64) {
        let f = (fraction.clamp(0.0, 1.0) * SCALE as f64).round() as u32;
        let was = self.fraction.swap(f, Ordering::Relaxed);
        let fraction = f as f64 / SCALE as f64;
        match (was, f) {
            (0, f) if f > 0 => tracing::warn!(fraction, "load shedding started"),
            (w, 0) if w > 0 => tracing::info!(shed = self.shed(), "load shedding stopped"),
            _ => {}
        }
    }

    pub fn fraction(&self) -> f64 {
        self.fraction.load(Ordering::Relaxed) as f64 / SCALE as f64
    }

    /// True (and counted) when `pid`'s events are being shed.
    #[inline]
    pub fn sheds(&self, pid: u64) -> bool {
        let f = self.fraction.load(Ordering::Relaxed);
        // The low bits of the mix; shard routing uses the high ones.
        let shed = f != 0 && ((mix(pid) & (SCALE as u64 - 1)) as u32) < f;
        if shed {
            self.shed.fetch_add(1, Ordering::Relaxed);
        }
        shed
    }

    /// Events shed so far.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_whole_processes_in_about_the_asked_share() {
        let s = Shedder::default();
        assert!(!(0..1000u64).any(|p| s.sheds(p * 8 + 3)), "off by default");
        s.set(0.25);
        let pids: Vec<u64> = (0..10_000u64).map(|p| p * 8 + 3).collect();
        let shed: Vec<bool> = pids.iter().map(|&p| s.sheds(p)).collect();
        let share = shed.iter().filter(|&&x| x).count() as f64 / pids.len() as f64;
        assert!((0.2..0.3).contains(&share), "share {share}");
        // The same pid always gets the same answer.
        assert!(pids.iter().zip(&shed).all(|(&p, &was)| s.sheds(p) == was));
        assert_eq!(s.shed(), 2 * shed.iter().filter(|&&x| x).count() as u64);
        s.set(0.0);
        assert!(!pids.iter().any(|&p| s.sheds(p)));
        s.set(1.0);
        assert!(pids.iter().all(|&p| s.sheds(p)));
    }
}
