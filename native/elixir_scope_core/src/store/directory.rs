//! Directory: event id -> log position.
//!
//! Ids are unique and assigned in ingest order, and events reach the store
//! nearly in id order (a shard drains in ring order; shards interleave), so
//! a window of ids maps to a deque of 4-byte entries: entry `i` names id
//! `base + i`. An entry holds the low 32 bits of the position; the log
//! never holds more than 2^32 positions, so they resolve against its front
//! unambiguously. Ids with no event (never arrived, evicted, refused by a
//! full ring before the store saw them) hold [`EMPTY`] while inside the
//! window, and the window's front moves past them as the log evicts, so
//! the directory is bounded by the id span of the events held. An event
//! arriving with an id below the window extends it at the front.
//!
//! A lookup is checked against the record it finds (same id, still held),
//! so a stale entry never yields the wrong event.

use std::collections::VecDeque;

pub const EMPTY: u32 = u32::MAX;

#[derive(Default)]
pub struct Directory {
    base: u64,
    entries: VecDeque<u32>,
}

/// The full position a 32-bit entry names, given the log's front.
pub fn widen(pos32: u32, front: u64) -> u64 {
    front + u64::from(pos32.wrapping_sub(front as u32))
}

impl Directory {
    pub fn set(&mut self, id: u64, pos: u64) {
        if self.entries.is_empty() {
            self.base = id;
        }
        while id < self.base {
            self.entries.push_front(EMPTY);
            self.base -= 1;
        }
        let at = (id - self.base) as usize;
        if at >= self.entries.len() {
            self.entries.resize(at + 1, EMPTY);
        }
        self.entries[at] = pos as u32;
    }

    /// The 32-bit position recorded for `id` (unchecked), if any.
    pub fn get(&self, id: u64) -> Option<u32> {
        let at = id.checked_sub(self.base)?;
        let pos = *self.entries.get(at as usize)?;
        (pos != EMPTY).then_some(pos)
    }

    /// Forgets leading ids for which `is_held` is false.
    pub fn trim_front(&mut self, is_held: impl Fn(u64, u32) -> bool) {
        while let Some(&pos) = self.entries.front() {
            if pos != EMPTY && is_held(self.base, pos) {
                break;
            }
            self.entries.pop_front();
            self.base += 1;
        }
    }

    /// Ids in the window, newest first, with their 32-bit positions.
    pub fn iter_rev(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        let base = self.base;
        self.entries
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, &pos)| pos != EMPTY)
            .map(move |(i, &pos)| (base + i as u64, pos))
    }

    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_ids_in_any_order_and_trims_the_front() {
        let mut d = Directory::default();
        for (id, pos) in [(10, 0), (12, 1), (11, 2), (8, 3)] {
            d.set(id, pos);
        }
        assert_eq!(
            [8, 9, 10, 11, 12, 13].map(|id| d.get(id)),
            [Some(3), None, Some(0), Some(2), Some(1), None]
        );
        assert_eq!(d.get(7), None);
        d.trim_front(|id, _| id >= 11);
        assert_eq!((d.get(10), d.get(11)), (None, Some(2)));
        assert_eq!(d.iter_rev().map(|(id, _)| id).collect::<Vec<_>>(), [12, 11]);
        d.trim_front(|_, _| false);
        assert!(d.get(12).is_none());
        d.set(5, 7);
        assert_eq!(d.get(5), Some(7));
    }

    #[test]
    fn positions_widen_across_the_32_bit_boundary() {
        let front = u32::MAX as u64 - 10;
        assert_eq!(widen((front + 20) as u32, front), front + 20);
        assert_eq!(widen(front as u32, front), front);
    }
}
