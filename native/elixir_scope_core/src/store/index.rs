//! KeyIndex: key -> ids of the events with that key, sorted.
//!
//! Ids of one key reach the store nearly in order: each shard is drained in
//! ring order, but shards interleave, so an id may land up to a few batches
//! behind the newest one (thousands of ids on a hot key such as one
//! function). A single sorted array would move every id behind the
//! insertion point, which is quadratic on hot keys. So a key's ids live in
//! an [`IdList`] of sorted blocks of at most [`BLOCK`] ids: an insertion
//! finds its block by binary search and moves at most one block's worth.
//!
//! Removal is lazy: the store calls [`KeyIndex::prune`] for a key when one of
//! its events leaves, which drops ids from the front that are no longer
//! live; a dead id behind a live one is skipped by readers and dropped once
//! it reaches the front. So every key's ids stay sorted, and an index never
//! holds more ids than the store has slots.

use std::collections::hash_map::Entry;
use std::collections::VecDeque;
use std::hash::Hash;

use crate::hash::BuildWordHasher;

/// Most ids in one block of an [`IdList`].
pub const BLOCK: usize = 256;

/// Sorted ids of one key. A key with one id (most correlation keys: a
/// call's return) costs no allocation, a key with a few ids one small
/// deque; past [`BLOCK`] ids the list splits into blocks.
///
/// Invariants: every block is sorted and non-empty, blocks are in order (a
/// block's last id <= the next block's first id), a block holds at most
/// `BLOCK` ids.
pub enum IdList {
    Single(u64),
    One(VecDeque<u64>),
    Blocks(VecDeque<VecDeque<u64>>),
}

impl IdList {
    fn blocks(&self) -> (&[VecDeque<u64>], &[VecDeque<u64>]) {
        match self {
            IdList::Single(_) => (&[], &[]),
            IdList::One(ids) => (std::slice::from_ref(ids), &[]),
            IdList::Blocks(blocks) => blocks.as_slices(),
        }
    }

    /// Inserts `id`; returns the change in heap bytes.
    pub fn insert(&mut self, id: u64) -> isize {
        match self {
            IdList::Single(first) => {
                let mut ids = VecDeque::with_capacity(2);
                ids.push_back(*first);
                insert_sorted(&mut ids, id);
                *self = IdList::One(ids);
                self.memory_bytes() as isize
            }
            IdList::One(_) => {
                let before = self.memory_bytes();
                let IdList::One(ids) = self else {
                    unreachable!("matched above")
                };
                insert_sorted(ids, id);
                if ids.len() > BLOCK {
                    let tail = ids.split_off(ids.len() / 2);
                    let head = std::mem::take(ids);
                    *self = IdList::Blocks(VecDeque::from([head, tail]));
                }
                self.memory_bytes() as isize - before as isize
            }
            IdList::Blocks(blocks) => {
                let outer = blocks.capacity();
                // The last block whose first id is <= id (or the first block).
                let at = blocks
                    .partition_point(|b| b.front().is_some_and(|&f| f <= id))
                    .saturating_sub(1);
                let block = &mut blocks[at];
                let inner = block.capacity();
                let mut added = 0;
                if block.len() == BLOCK && block.back().is_some_and(|&last| last <= id) {
                    // Appending to a full block: start the next one.
                    let next = VecDeque::from([id]);
                    added = next.capacity();
                    blocks.insert(at + 1, next);
                } else {
                    insert_sorted(block, id);
                    if block.len() > BLOCK {
                        let tail = block.split_off(BLOCK / 2);
                        added = tail.capacity();
                        blocks.insert(at + 1, tail);
                    }
                }
                let ids = (blocks[at].capacity() + added) as isize - inner as isize;
                let outer = (blocks.capacity() - outer) * std::mem::size_of::<VecDeque<u64>>();
                ids * 8 + outer as isize
            }
        }
    }

    /// Drops ids from the front while `is_live` says they are dead; returns
    /// the change in heap bytes.
    pub fn prune_front(&mut self, is_live: impl Fn(u64) -> bool) -> isize {
        match self {
            IdList::Single(id) => {
                if !is_live(*id) {
                    *self = IdList::One(VecDeque::new());
                }
                0
            }
            IdList::One(ids) => {
                pop_dead(ids, &is_live);
                0
            }
            IdList::Blocks(blocks) => {
                let mut freed = 0;
                while let Some(front) = blocks.front_mut() {
                    pop_dead(front, &is_live);
                    if !front.is_empty() {
                        break;
                    }
                    freed += front.capacity() * 8;
                    blocks.pop_front();
                }
                -(freed as isize)
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            IdList::Single(_) => false,
            IdList::One(ids) => ids.is_empty(),
            IdList::Blocks(blocks) => blocks.is_empty(),
        }
    }

    /// Ids oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = u64> + '_ {
        let single = match self {
            IdList::Single(id) => Some(*id),
            _ => None,
        };
        let (a, b) = self.blocks();
        single
            .into_iter()
            .chain(a.iter().chain(b).flat_map(|block| block.iter().copied()))
    }

    /// Heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        let (a, b) = self.blocks();
        let ids: usize = a.iter().chain(b).map(|d| d.capacity() * 8).sum();
        match self {
            IdList::Single(_) | IdList::One(_) => ids,
            IdList::Blocks(blocks) => {
                ids + blocks.capacity() * std::mem::size_of::<VecDeque<u64>>()
            }
        }
    }
}

fn insert_sorted(ids: &mut VecDeque<u64>, id: u64) {
    match ids.back() {
        Some(&last) if last > id => {
            let at = ids.partition_point(|&x| x < id);
            ids.insert(at, id);
        }
        _ => ids.push_back(id),
    }
}

fn pop_dead(ids: &mut VecDeque<u64>, is_live: &impl Fn(u64) -> bool) {
    while let Some(&front) = ids.front() {
        if is_live(front) {
            break;
        }
        ids.pop_front();
    }
}

pub struct KeyIndex<K> {
    map: std::collections::HashMap<K, IdList, BuildWordHasher>,
    /// Heap bytes of every list, kept as they change (so reading it is O(1)).
    lists_heap: usize,
}

impl<K: Hash + Eq + Copy> Default for KeyIndex<K> {
    fn default() -> Self {
        KeyIndex {
            map: Default::default(),
            lists_heap: 0,
        }
    }
}

impl<K: Hash + Eq + Copy> KeyIndex<K> {
    pub fn insert(&mut self, key: K, id: u64) {
        match self.map.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(IdList::Single(id));
            }
            Entry::Occupied(list) => {
                let delta = list.into_mut().insert(id);
                self.lists_heap = self.lists_heap.wrapping_add_signed(delta);
            }
        }
    }

    /// Drops dead ids from the front of `key`'s list (and the key when empty).
    pub fn prune(&mut self, key: K, is_live: impl Fn(u64) -> bool) {
        if let Some(ids) = self.map.get_mut(&key) {
            let delta = ids.prune_front(is_live);
            self.lists_heap = self.lists_heap.wrapping_add_signed(delta);
            if ids.is_empty() {
                self.lists_heap -= ids.memory_bytes();
                self.map.remove(&key);
            }
        }
    }

    /// Ids of `key`, oldest first (may include dead ids: callers filter).
    pub fn ids(&self, key: &K) -> impl DoubleEndedIterator<Item = u64> + '_ {
        self.map.get(key).into_iter().flat_map(|ids| ids.iter())
    }

    pub fn keys(&self) -> usize {
        self.map.len()
    }

    /// Bytes held by the index (id blocks and map entries), in O(1).
    pub fn memory_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(K, IdList)>() + 1;
        self.map.capacity() * entry + self.lists_heap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_ids_sorted_and_prunes_from_front() {
        let mut index = KeyIndex::<u64>::default();
        for id in [1, 2, 5, 4, 3, 6] {
            index.insert(7, id);
        }
        assert_eq!(index.ids(&7).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
        index.prune(7, |id| id >= 3);
        assert_eq!(index.ids(&7).collect::<Vec<_>>(), vec![3, 4, 5, 6]);
        index.prune(7, |_| false);
        assert_eq!(index.keys(), 0);
        assert_eq!(index.ids(&7).count(), 0);
        assert_eq!(index.lists_heap, 0, "heap accounting returns to zero");
    }

    #[test]
    fn heap_accounting_matches_a_full_walk() {
        let mut index = KeyIndex::<u64>::default();
        let walk = |i: &KeyIndex<u64>| i.map.values().map(IdList::memory_bytes).sum::<usize>();
        // Interleaved arrivals on a hot key and a few cold ones, then pruning.
        for run in 0..40u64 {
            for shard in 0..8 {
                for k in 0..50 {
                    let id = run * 400 + k * 8 + shard;
                    index.insert(id % 5, id);
                    assert_eq!(index.lists_heap, walk(&index));
                }
            }
        }
        for cut in [1_000u64, 9_000, 16_000] {
            for key in 0..5 {
                index.prune(key, |id| id >= cut);
                assert_eq!(index.lists_heap, walk(&index));
            }
        }
    }

    #[test]
    fn hot_key_with_interleaved_arrivals_stays_sorted_across_blocks() {
        // Eight "shards" of ids arriving round-robin in runs, as from a
        // pipeline whose producer ran far ahead of its workers.
        let mut list = IdList::Single(0);
        let n = 20_000u64;
        for run in 0..n / 800 {
            for shard in 0..8 {
                for k in 0..100 {
                    if run + shard + k == 0 {
                        continue; // id 0 is the list's first
                    }
                    list.insert(run * 800 + k * 8 + shard);
                }
            }
        }
        let ids: Vec<u64> = list.iter().collect();
        assert_eq!(ids, (0..n).collect::<Vec<_>>());
        let IdList::Blocks(blocks) = &list else {
            panic!("a hot key splits into blocks");
        };
        assert!(blocks.iter().all(|b| !b.is_empty() && b.len() <= BLOCK));
        assert_eq!(list.iter().next_back(), Some(n - 1));

        list.prune_front(|id| id >= 1000);
        assert_eq!(list.iter().next(), Some(1000));
        assert_eq!(list.iter().count(), (n - 1000) as usize);
    }
}
