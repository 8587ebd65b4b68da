//! Keys: interned index keys (pids, {module, function}s), each with the
//! log positions of its events.
//!
//! A key gets a small dense number on first use; records carry that number
//! instead of the key, and the key's posting list is found by indexing,
//! not hashing. Positions are appended in arrival order, so a posting list
//! is sorted without any work and an insert is a push (the same key often
//! repeats within a batch, so the last key looked up is remembered).
//! Positions are kept as their low 32 bits (see [`super::directory::widen`]).
//!
//! Removal is lazy: the store prunes a key's list from the front when its
//! events leave; entries of removed events behind a live one are skipped
//! by readers. A key whose list empties is forgotten and its number reused,
//! so the table is bounded by the keys of the events held.

use std::collections::VecDeque;
use std::hash::Hash;

use crate::hash::WordMap;

struct Key<K> {
    key: K,
    positions: VecDeque<u32>,
}

pub struct Keys<K> {
    map: WordMap<K, u32>,
    keys: Vec<Key<K>>,
    free: Vec<u32>,
    last: Option<(K, u32)>,
    /// Bytes of every posting list, kept as they change.
    positions_bytes: usize,
}

impl<K: Hash + Eq + Copy> Default for Keys<K> {
    fn default() -> Self {
        Keys {
            map: WordMap::default(),
            keys: Vec::new(),
            free: Vec::new(),
            last: None,
            positions_bytes: 0,
        }
    }
}

impl<K: Hash + Eq + Copy> Keys<K> {
    /// Appends `pos` to `key`'s list; returns the key's number.
    pub fn push(&mut self, key: K, pos: u64) -> u32 {
        let n = match self.last {
            Some((k, n)) if k == key => n,
            _ => self.intern(key),
        };
        let list = &mut self.keys[n as usize].positions;
        let capacity = list.capacity();
        list.push_back(pos as u32);
        self.positions_bytes += (list.capacity() - capacity) * 4;
        n
    }

    fn intern(&mut self, key: K) -> u32 {
        let n = match self.map.get(&key) {
            Some(&n) => n,
            None => {
                let entry = Key {
                    key,
                    positions: VecDeque::new(),
                };
                let n = match self.free.pop() {
                    Some(n) => {
                        self.keys[n as usize] = entry;
                        n
                    }
                    None => {
                        self.keys.push(entry);
                        (self.keys.len() - 1) as u32
                    }
                };
                self.map.insert(key, n);
                n
            }
        };
        self.last = Some((key, n));
        n
    }

    /// The key numbered `n` (which must be live).
    pub fn key(&self, n: u32) -> K {
        self.keys[n as usize].key
    }

    /// `key`'s number and posting list (oldest first; may hold dead entries).
    pub fn positions(&self, key: &K) -> Option<(u32, &VecDeque<u32>)> {
        let n = *self.map.get(key)?;
        Some((n, &self.keys[n as usize].positions))
    }

    /// Drops entries from the front of key `n`'s list while `dead` says so;
    /// forgets the key when its list empties.
    pub fn prune(&mut self, n: u32, dead: impl Fn(u32) -> bool) {
        let entry = &mut self.keys[n as usize];
        while entry.positions.front().is_some_and(|&p| dead(p)) {
            entry.positions.pop_front();
        }
        if entry.positions.is_empty() {
            self.positions_bytes -= entry.positions.capacity() * 4;
            entry.positions = VecDeque::new();
            self.map.remove(&entry.key);
            self.free.push(n);
            if self.last.is_some_and(|(_, m)| m == n) {
                self.last = None;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn memory_bytes(&self) -> usize {
        self.map.capacity() * (std::mem::size_of::<(K, u32)>() + 1)
            + self.keys.capacity() * std::mem::size_of::<Key<K>>()
            + self.free.capacity() * 4
            + self.positions_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_appends_prunes_and_reuses_numbers() {
        let mut keys = Keys::<u64>::default();
        let a = keys.push(70, 0);
        let b = keys.push(80, 1);
        assert_eq!(keys.push(70, 2), a);
        assert_ne!(a, b);
        assert_eq!(keys.key(b), 80);
        let (n, list) = keys.positions(&70).unwrap();
        assert_eq!(
            (n, list.iter().copied().collect::<Vec<_>>()),
            (a, vec![0, 2])
        );
        keys.prune(a, |p| p < 1);
        assert_eq!(keys.positions(&70).unwrap().1.len(), 1);
        keys.prune(a, |_| true);
        assert!(keys.positions(&70).is_none());
        assert_eq!(keys.len(), 1);
        assert_eq!(keys.push(90, 3), a, "a forgotten key's number is reused");
        assert_eq!(keys.key(a), 90);
        keys.prune(a, |_| true);
        keys.prune(b, |_| true);
        assert!(keys.is_empty());
        assert_eq!(keys.positions_bytes, 0, "accounting returns to zero");
    }
}
