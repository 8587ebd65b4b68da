//! Timeline: a block-range index (BRIN) over event timestamps.
//!
//! Ids are grouped in blocks of [`BLOCK`] consecutive ids; each block keeps
//! the min and max timestamp of the events ever written to it. A time-range
//! query visits only blocks whose [min, max] overlaps the range. Timestamps
//! grow with ids in practice, so a range touches few blocks; out-of-order
//! timestamps widen a block but never make a query miss an event. Costs 16
//! bytes per 1024 events, against ~16 per event for a tree index.
//!
//! Invariant: block `i` of `blocks` covers ids `[(first + i) * BLOCK,
//! (first + i + 1) * BLOCK)`; a block's range contains every timestamp of
//! its live events (it may be wider after removals).

use std::collections::VecDeque;

pub const BLOCK: u64 = 1024;

#[derive(Default)]
pub struct Timeline {
    first: u64,
    blocks: VecDeque<(i64, i64)>,
}

const EMPTY: (i64, i64) = (i64::MAX, i64::MIN);

impl Timeline {
    pub fn new(first_id: u64) -> Self {
        Timeline {
            first: first_id / BLOCK,
            blocks: VecDeque::new(),
        }
    }

    pub fn record(&mut self, id: u64, timestamp: i64) {
        let block = id / BLOCK;
        if block < self.first {
            return;
        }
        let at = (block - self.first) as usize;
        while self.blocks.len() <= at {
            self.blocks.push_back(EMPTY);
        }
        let (min, max) = &mut self.blocks[at];
        *min = (*min).min(timestamp);
        *max = (*max).max(timestamp);
    }

    /// Forgets blocks that end at or before `base_id`.
    pub fn advance_to(&mut self, base_id: u64) {
        while (self.first + 1) * BLOCK <= base_id {
            self.blocks.pop_front();
            self.first += 1;
        }
    }

    /// Id ranges `[start, end)` whose blocks may hold timestamps in `[from, to]`,
    /// oldest first.
    pub fn candidates(&self, from: i64, to: i64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.blocks
            .iter()
            .enumerate()
            .filter(move |(_, &(min, max))| min <= to && max >= from)
            .map(move |(i, _)| {
                let block = self.first + i as u64;
                (block * BLOCK, (block + 1) * BLOCK)
            })
    }

    pub fn memory_bytes(&self) -> usize {
        self.blocks.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_overlapping_blocks() {
        let mut t = Timeline::new(1);
        for id in 1..5000u64 {
            t.record(id, id as i64 * 10);
        }
        let c: Vec<_> = t.candidates(10_500, 10_600).collect();
        assert_eq!(c, vec![(1024, 2048)]);
        assert_eq!(t.candidates(0, i64::MAX).count(), 5);
        // An out-of-order timestamp widens its block and is still found.
        t.record(10, 49_000);
        assert_eq!(t.candidates(49_000, 49_000).next(), Some((0, 1024)));
        t.advance_to(2048);
        assert_eq!(t.candidates(0, i64::MAX).next(), Some((2048, 3072)));
    }
}
