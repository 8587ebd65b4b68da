//! Slots: a deque of optional values addressed by position, stored in
//! fixed-size chunks.
//!
//! Why chunks: a store grows to millions of ~160-byte slots. A `VecDeque`
//! doubles by reallocating and copying everything it holds (hundreds of MB
//! at a time, on the worker's critical path); chunks never move, so growing
//! costs one allocation per [`CHUNK`] slots and evicting frees (or recycles)
//! whole chunks.
//!
//! Invariants: position `i` lives at `chunks[(head + i) / CHUNK]`, offset
//! `(head + i) % CHUNK`; `head < CHUNK` whenever a chunk exists; slots
//! outside `head..head + len` are `None`; at most one spare chunk is kept
//! for reuse.

use std::collections::VecDeque;

/// Slots per chunk (a power of two).
pub const CHUNK: usize = 1024;

pub struct Slots<T> {
    chunks: VecDeque<Box<[Option<T>]>>,
    head: usize,
    len: usize,
    spare: Option<Box<[Option<T>]>>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            chunks: VecDeque::new(),
            head: 0,
            len: 0,
            spare: None,
        }
    }
}

impl<T> Slots<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots allocated (for memory accounting).
    pub fn capacity(&self) -> usize {
        (self.chunks.len() + self.spare.is_some() as usize) * CHUNK
    }

    fn locate(&self, i: usize) -> (usize, usize) {
        let at = self.head + i;
        (at / CHUNK, at % CHUNK)
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let (c, o) = self.locate(i);
        self.chunks[c][o].as_ref()
    }

    /// The slot at `i` (`None` past the end).
    pub fn slot_mut(&mut self, i: usize) -> Option<&mut Option<T>> {
        if i >= self.len {
            return None;
        }
        let (c, o) = self.locate(i);
        Some(&mut self.chunks[c][o])
    }

    /// Extends to `len` empty slots (no-op when already that long).
    pub fn extend_to(&mut self, len: usize) {
        if len <= self.len {
            return;
        }
        let needed = (self.head + len).div_ceil(CHUNK);
        while self.chunks.len() < needed {
            let chunk = self
                .spare
                .take()
                .unwrap_or_else(|| (0..CHUNK).map(|_| None).collect());
            self.chunks.push_back(chunk);
        }
        self.len = len;
    }

    /// Removes the front slot and returns its value.
    pub fn pop_front(&mut self) -> Option<Option<T>> {
        if self.len == 0 {
            return None;
        }
        let value = self.chunks[0][self.head].take();
        self.head += 1;
        self.len -= 1;
        if self.head == CHUNK || self.len == 0 {
            self.release_front();
        }
        Some(value)
    }

    /// Drops the first chunk (every slot of it is `None` by now) and resets
    /// `head`, keeping the chunk as the spare.
    fn release_front(&mut self) {
        if self.len == 0 {
            // Whatever is left holds only `None`: keep one chunk as spare.
            self.spare = self.chunks.pop_front().or(self.spare.take());
            self.chunks.clear();
            self.head = 0;
        } else if let Some(chunk) = self.chunks.pop_front() {
            self.spare = Some(chunk);
            self.head = 0;
        }
    }

    /// The front slot's value (outer `None` when empty).
    pub fn front(&self) -> Option<&Option<T>> {
        (self.len > 0).then(|| &self.chunks[0][self.head])
    }

    /// Filled slots from newest to oldest.
    pub fn iter_rev(&self) -> impl Iterator<Item = &T> + '_ {
        (0..self.len).rev().filter_map(move |i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_pops_and_recycles_chunks() {
        let mut s = Slots::<u64>::default();
        s.extend_to(3 * CHUNK + 5);
        for i in 0..s.len() {
            *s.slot_mut(i).unwrap() = Some(i as u64);
        }
        assert_eq!(s.get(CHUNK + 7), Some(&(CHUNK as u64 + 7)));
        assert_eq!(s.capacity(), 4 * CHUNK);
        for i in 0..CHUNK + 2 {
            assert_eq!(s.pop_front(), Some(Some(i as u64)));
        }
        assert_eq!(s.len(), 2 * CHUNK + 3);
        assert_eq!(s.get(0), Some(&(CHUNK as u64 + 2)));
        assert_eq!(s.capacity(), 4 * CHUNK, "first chunk kept as spare");
        s.extend_to(s.len() + CHUNK);
        assert_eq!(s.capacity(), 4 * CHUNK, "spare reused");
        assert_eq!(s.iter_rev().next(), Some(&(3 * CHUNK as u64 + 4)));
        while s.pop_front().is_some() {}
        assert!(s.is_empty());
        assert!(s.front().is_none());
        assert_eq!(s.capacity(), CHUNK);
        s.extend_to(2);
        assert_eq!(s.get(1), None, "recycled slots are empty");
    }
}
