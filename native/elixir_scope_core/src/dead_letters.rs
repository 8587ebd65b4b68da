//! Dead letters: the most recent malformed events, kept with the reason.
//!
//! Algorithm: a bounded FIFO under a mutex (only the refusal path, never the
//! hot path, touches it); when full, the oldest letter is evicted.
//!
//! Invariants: at most `capacity` letters are held; `total` counts every
//! letter ever received, so `total - len` were evicted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::payload::Payload;

/// A refused event: when (monotonic ns), why and what (both encoded terms).
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub at: i64,
    pub reason: Payload,
    pub event: Payload,
}

pub struct DeadLetters {
    queue: Mutex<VecDeque<DeadLetter>>,
    capacity: usize,
    total: AtomicU64,
}

impl DeadLetters {
    pub fn new(capacity: usize) -> DeadLetters {
        DeadLetters {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            total: AtomicU64::new(0),
        }
    }

    pub fn push(&self, letter: DeadLetter) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut q = self.queue.lock();
        if q.len() == self.capacity {
            q.pop_front();
        }
        q.push_back(letter);
    }

    /// The newest `n` letters, newest first.
    pub fn latest(&self, n: usize) -> Vec<DeadLetter> {
        self.queue.lock().iter().rev().take(n).cloned().collect()
    }

    /// Letters ever received.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Letters evicted to stay within capacity.
    pub fn evicted(&self) -> u64 {
        self.total() - self.queue.lock().len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(i: u8) -> DeadLetter {
        DeadLetter {
            at: i as i64,
            reason: Payload::from_bytes(&[i]),
            event: Payload::empty(),
        }
    }

    #[test]
    fn keeps_the_newest_within_capacity_and_counts_the_rest() {
        let d = DeadLetters::new(3);
        for i in 0..5 {
            d.push(letter(i));
        }
        assert_eq!(d.latest(10), vec![letter(4), letter(3), letter(2)]);
        assert_eq!(d.latest(1), vec![letter(4)]);
        assert_eq!((d.total(), d.evicted()), (5, 2));
    }
}
