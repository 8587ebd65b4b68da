//! KeyIndex: key -> ids of the events with that key, oldest first.
//!
//! Ids are appended in store-arrival order, which is id order for the events
//! of one key in practice (one pid is drained from one shard, in order); an
//! out-of-order id is inserted at its sorted place from the back. Removal is
//! lazy: the store calls [`KeyIndex::prune`] for a key when one of its events
//! leaves, which drops ids from the front that are no longer live; a dead id
//! behind a live one is skipped by readers and dropped once it reaches the
//! front. So every key's ids stay sorted, and an index never holds more ids
//! than the store has slots.

use std::collections::VecDeque;
use std::hash::Hash;

use crate::hash::BuildWordHasher;

pub struct KeyIndex<K> {
    map: std::collections::HashMap<K, VecDeque<u64>, BuildWordHasher>,
}

impl<K: Hash + Eq + Copy> Default for KeyIndex<K> {
    fn default() -> Self {
        KeyIndex {
            map: Default::default(),
        }
    }
}

impl<K: Hash + Eq + Copy> KeyIndex<K> {
    pub fn insert(&mut self, key: K, id: u64) {
        let ids = self.map.entry(key).or_default();
        match ids.back() {
            Some(&last) if last > id => {
                let at = ids.partition_point(|&x| x < id);
                ids.insert(at, id);
            }
            _ => ids.push_back(id),
        }
    }

    /// Drops dead ids from the front of `key`'s list (and the key when empty).
    pub fn prune(&mut self, key: K, is_live: impl Fn(u64) -> bool) {
        if let Some(ids) = self.map.get_mut(&key) {
            while let Some(&front) = ids.front() {
                if is_live(front) {
                    break;
                }
                ids.pop_front();
            }
            if ids.is_empty() {
                self.map.remove(&key);
            }
        }
    }

    /// Ids of `key`, oldest first (may include dead ids: callers filter).
    pub fn ids(&self, key: &K) -> impl DoubleEndedIterator<Item = u64> + '_ {
        self.map
            .get(key)
            .into_iter()
            .flat_map(|ids| ids.iter().copied())
    }

    pub fn keys(&self) -> usize {
        self.map.len()
    }

    /// Bytes held by the index (deque buffers and map entries).
    pub fn memory_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(K, VecDeque<u64>)>() + 1;
        self.map.capacity() * entry + self.map.values().map(|d| d.capacity() * 8).sum::<usize>()
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
    }
}
