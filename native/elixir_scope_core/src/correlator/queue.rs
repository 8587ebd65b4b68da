//! Queue: a FIFO that holds its first element inline.
//!
//! The message strategy keeps a few small queues per channel (pending
//! sends, pending receives, senders seen). Almost every channel holds one
//! element at a time (a message waiting for its other half) before it is
//! forgotten, so a `VecDeque` would allocate and free once per message; this
//! queue allocates only when a second element waits behind the first. The
//! rest lives behind a pointer: a channel is a hash map slot, and the
//! slots of a million waiting messages are written and moved (inserts,
//! resizes, evictions) at the cost of their size.
//!
//! Invariant: `rest` is empty (or absent) whenever `first` is `None`; the
//! order is `first` then `rest`.

use std::collections::VecDeque;

#[derive(Clone, Debug)]
pub struct Queue<T> {
    first: Option<T>,
    /// Allocated for a second element, and kept. (Boxed: 8 bytes in the
    /// slot instead of a `VecDeque`'s 32.)
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<T>>>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            first: None,
            rest: None,
        }
    }
}

impl<T> Queue<T> {
    pub fn push_back(&mut self, x: T) {
        if self.first.is_none() {
            self.first = Some(x);
        } else {
            self.rest.get_or_insert_default().push_back(x);
        }
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let front = self.first.take();
        self.first = self.rest.as_mut().and_then(|r| r.pop_front());
        front
    }

    /// Removes and returns the element at `i`.
    pub fn remove(&mut self, i: usize) -> Option<T> {
        match i {
            0 => self.pop_front(),
            _ => self.rest.as_mut()?.remove(i - 1),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.first
            .iter()
            .chain(self.rest.iter().flat_map(|r| r.iter()))
    }

    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |r| r.len())
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let Some(rest) = self.rest.as_mut() else {
            self.first = self.first.take().filter(|x| keep(x));
            return;
        };
        if let Some(first) = self.first.take() {
            rest.push_front(first);
        }
        rest.retain(|x| keep(x));
        self.first = rest.pop_front();
    }

    /// Elements held on the heap (for memory accounting; the first is inline).
    pub fn heap_capacity(&self) -> usize {
        self.rest.as_ref().map_or(0, |r| r.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_fifo_order_and_allocates_only_behind_the_first() {
        let mut q = Queue::default();
        q.push_back(1);
        assert_eq!((q.len(), q.heap_capacity()), (1, 0));
        for x in 2..=5 {
            q.push_back(x);
        }
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(q.remove(2), Some(3));
        assert_eq!(q.pop_front(), Some(1));
        assert_eq!(q.remove(0), Some(2));
        q.retain(|&x| x != 4);
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), [5]);
        assert_eq!(q.pop_front(), Some(5));
        assert!(q.is_empty() && q.pop_front().is_none() && q.remove(3).is_none());
        let mut one = Queue::default();
        one.push_back(7);
        one.retain(|&x| x == 7);
        assert_eq!((one.len(), one.heap_capacity()), (1, 0), "kept inline");
        one.retain(|&x| x != 7);
        assert!(one.is_empty());
    }
}
