//! History: which worker wrote each stored event, and when.
//!
//! A batch's events take consecutive log positions, so the store keeps one
//! 24-byte [`Batch`] per write (a hundred events or so) instead of a field
//! per event, and a position finds its batch by binary search. Batches are
//! dropped once the log's front has passed them.
//!
//! Invariants: batches are in position order; a batch covers the positions
//! from its `first` up to the next batch's `first`.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Log position of the batch's first event.
    pub first: u64,
    /// The worker that wrote it (0: a direct write, not a worker).
    pub writer: u32,
    /// Monotonic ns when it was written.
    pub stored_at: i64,
}

#[derive(Default)]
pub struct History {
    batches: VecDeque<Batch>,
}

impl History {
    /// A batch starting at position `first` (a previous batch that stored
    /// nothing is replaced).
    pub fn begin(&mut self, first: u64, writer: u32, stored_at: i64) {
        let batch = Batch {
            first,
            writer,
            stored_at,
        };
        match self.batches.back_mut() {
            Some(last) if last.first == first => *last = batch,
            _ => self.batches.push_back(batch),
        }
    }

    /// The batch that wrote position `pos`.
    pub fn find(&self, pos: u64) -> Option<&Batch> {
        let at = self.batches.partition_point(|b| b.first <= pos);
        at.checked_sub(1).map(|i| &self.batches[i])
    }

    /// Drops batches whose every position is below `front`.
    pub fn trim(&mut self, front: u64) {
        while self.batches.len() >= 2 && self.batches[1].first <= front {
            self.batches.pop_front();
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.batches.capacity() * std::mem::size_of::<Batch>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_batch_of_a_position_and_trims_passed_ones() {
        let mut h = History::default();
        h.begin(0, 1, 10);
        h.begin(0, 2, 11); // the first stored nothing
        h.begin(100, 1, 20);
        h.begin(250, 3, 30);
        assert_eq!(h.find(0).map(|b| b.writer), Some(2));
        assert_eq!(h.find(99).map(|b| b.stored_at), Some(11));
        assert_eq!(h.find(100).map(|b| b.writer), Some(1));
        assert_eq!(h.find(10_000).map(|b| b.writer), Some(3));
        h.trim(150);
        assert_eq!(h.find(120).map(|b| b.writer), Some(1));
        assert!(h.find(50).is_none(), "older positions are gone");
        h.trim(300);
        assert_eq!(h.batches.len(), 1);
    }
}
