//! Held: the halves of one kind a node's workers set aside for the
//! exchange, in the order they were stored, until a round takes them.
//!
//! A take hands over a prefix: every half up to the last one older than
//! its cutoff (halves come about in time order, so what stays is the young
//! tail; a young half among older ones goes along). During a session the
//! tail is what a second of traffic set aside (the rounds' settling time),
//! as much as a round takes or more, so a take must cost neither what
//! stays nor a copy of what goes:
//!
//! - Halves are kept in chunks of `CHUNK`, each with its least timestamp.
//!   The last half older than a cutoff is in the last chunk whose least
//!   timestamp is older than the cutoff: found by reading the young
//!   chunks' minimums, then that chunk.
//! - The chunks before it move to the taker whole ([`Taken`]); of that
//!   chunk, the part that goes is copied out (at most a chunk).
//! - A taker's chunks come back with its next take, emptied, for the
//!   workers to fill: in steady state nothing is allocated.
//! - `floor`: no half held is older; a take with a cutoff at or below it
//!   (another node's take in the same round, a round early in a session)
//!   returns at once.
//!
//! Invariants: each chunk holds 1..=`CHUNK` halves (pushes go to the
//! last); its minimum is the least timestamp of its halves; `len` counts
//! the halves of all chunks.

use std::collections::VecDeque;

/// What [`Held`] and a round read of a half set aside, of either kind.
pub trait Aside: Copy {
    /// Its event's id.
    fn id(&self) -> u64;
    /// Its timestamp.
    fn at(&self) -> i64;
    /// Its fingerprint (0: none taken).
    fn fingerprint(&self) -> u32;
}

/// Halves per chunk.
const CHUNK: usize = 1024;

/// A chunk of halves and their least timestamp.
#[derive(Debug)]
struct Chunk<T> {
    halves: Vec<T>,
    min: i64,
}

/// Halves of one kind set aside, in the order they were stored.
#[derive(Debug)]
pub struct Held<T> {
    chunks: VecDeque<Chunk<T>>,
    /// Emptied chunks' vectors (capacity `CHUNK`), for reuse.
    spare: Vec<Vec<T>>,
    len: usize,
    /// Whether a half set aside since the last take came without a
    /// fingerprint (one ingested from Elixir).
    bare: bool,
    /// No half held is older.
    floor: i64,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held {
            chunks: VecDeque::new(),
            spare: Vec::new(),
            len: 0,
            bare: false,
            floor: i64::MIN,
        }
    }
}

/// Halves a take handed over, in order, in the chunks they were held in.
#[derive(Debug)]
pub struct Taken<T> {
    chunks: Vec<Vec<T>>,
}

impl<T> Default for Taken<T> {
    fn default() -> Self {
        Taken { chunks: Vec::new() }
    }
}

impl<T> Taken<T> {
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

impl<T: Aside> Held<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The halves held, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flat_map(|c| &c.halves)
    }

    /// Bytes the halves take (their chunks' capacity, spare ones too).
    pub fn memory_bytes(&self) -> usize {
        let chunks = self.chunks.iter().map(|c| c.halves.capacity());
        let spare = self.spare.iter().map(Vec::capacity);
        chunks.chain(spare).sum::<usize>() * std::mem::size_of::<T>()
    }

    /// Forgets every half (they were counted where they went).
    pub fn clear(&mut self) {
        while let Some(c) = self.chunks.pop_front() {
            self.recycle(c.halves);
        }
        self.len = 0;
        self.bare = false;
    }

    /// Sets `half` aside; past `most` held, the older half of them goes
    /// first, counted in `dropped`.
    pub fn push(&mut self, half: T, most: usize, dropped: &mut u64) {
        if self.len == most {
            // Rare (no exchange for millions of messages).
            self.drop_oldest(most / 2);
            *dropped += (most / 2) as u64;
        }
        let at = half.at();
        self.bare |= half.fingerprint() == 0;
        self.floor = self.floor.min(at);
        self.len += 1;
        match self.chunks.back_mut() {
            Some(c) if c.halves.len() < CHUNK => {
                c.min = c.min.min(at);
                c.halves.push(half);
            }
            _ => {
                let mut halves = self.spare.pop().unwrap_or_default();
                halves.reserve_exact(CHUNK);
                halves.push(half);
                self.chunks.push_back(Chunk { halves, min: at });
            }
        }
    }

    /// Hands the halves up to the last one older than `before` over to
    /// `into`, in order (what `into` held comes back emptied, for reuse);
    /// the younger ones after it stay. `bare` stays set while halves stay
    /// (it may be one of them that lacks a fingerprint). True when one of
    /// those handed over may lack its fingerprint.
    pub fn take_before(&mut self, before: i64, into: &mut Taken<T>) -> bool {
        for halves in into.chunks.drain(..) {
            self.recycle(halves);
        }
        if before <= self.floor {
            return false;
        }
        // Every half left is `before` or younger.
        self.floor = before;
        let Some((last, end)) = self.last_before(before) else {
            return false;
        };
        let was_bare = self.bare;
        for _ in 0..last {
            let c = self.chunks.pop_front().expect("counted");
            self.len -= c.halves.len();
            into.chunks.push(c.halves);
        }
        let c = &mut self.chunks[0];
        if end == c.halves.len() {
            let c = self.chunks.pop_front().expect("there");
            self.len -= c.halves.len();
            into.chunks.push(c.halves);
        } else {
            let mut going = self.spare.pop().unwrap_or_default();
            going.extend(c.halves.drain(..end));
            c.min = least(&c.halves);
            self.len -= going.len();
            into.chunks.push(going);
        }
        self.bare = was_bare && !self.is_empty();
        was_bare
    }

    /// The chunk holding the last half older than `before`, and the
    /// position after that half in it.
    fn last_before(&self, before: i64) -> Option<(usize, usize)> {
        (0..self.chunks.len())
            .rev()
            .filter(|&k| self.chunks[k].min < before)
            .find_map(|k| {
                let halves = &self.chunks[k].halves;
                Some((k, halves.iter().rposition(|h| h.at() < before)? + 1))
            })
    }

    fn drop_oldest(&mut self, mut n: usize) {
        self.len -= n;
        while let Some(c) = self.chunks.front_mut() {
            if c.halves.len() > n {
                c.halves.drain(..n);
                c.min = least(&c.halves);
                return;
            }
            n -= c.halves.len();
            let c = self.chunks.pop_front().expect("there");
            self.recycle(c.halves);
        }
    }

    fn recycle(&mut self, mut halves: Vec<T>) {
        halves.clear();
        self.spare.push(halves);
    }
}

fn least<T: Aside>(halves: &[T]) -> i64 {
    halves.iter().map(Aside::at).min().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    struct H {
        id: u64,
        at: i64,
    }

    impl Aside for H {
        fn id(&self) -> u64 {
            self.id
        }
        fn at(&self) -> i64 {
            self.at
        }
        fn fingerprint(&self) -> u32 {
            (self.id % 7) as u32
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Push halves, each this far from the last one's timestamp (some
        /// go back in time).
        Push(Vec<i64>),
        /// Take with a cutoff this far behind the newest timestamp.
        Take(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            prop::collection::vec(-3i64..10, 0..3000).prop_map(Op::Push),
            (-5i64..4000).prop_map(Op::Take),
        ]
    }

    proptest! {
        /// Held takes what the plain rule takes (every half up to the last
        /// one older than the cutoff), pushes and takes interleaved, with
        /// young halves among old ones and the bound in between.
        #[test]
        fn takes_what_a_scan_of_every_half_takes(ops in prop::collection::vec(op(), 1..30)) {
            const MOST: usize = 7000;
            let mut held = Held::default();
            let (mut model, mut model_dropped) = (Vec::<H>::new(), 0);
            let (mut dropped, mut id, mut at) = (0, 0, 0);
            let mut taken = Taken::default();
            for op in ops {
                match op {
                    Op::Push(drifts) => for d in drifts {
                        (id, at) = (id + 1, at + d);
                        let h = H { id, at };
                        held.push(h, MOST, &mut dropped);
                        if model.len() == MOST {
                            model.drain(..MOST / 2);
                            model_dropped += MOST / 2;
                        }
                        model.push(h);
                    },
                    Op::Take(behind) => {
                        let before = at - behind;
                        held.take_before(before, &mut taken);
                        let end = model.iter().rposition(|h| h.at < before).map_or(0, |i| i + 1);
                        let expected: Vec<H> = model.drain(..end).collect();
                        // (A cutoff at or below the floor takes nothing:
                        // no half held is older.)
                        prop_assert_eq!(taken.iter().copied().collect::<Vec<_>>(), expected);
                        prop_assert_eq!(taken.len(), end);
                    }
                }
                prop_assert_eq!(held.iter().copied().collect::<Vec<_>>(), model.clone());
                prop_assert_eq!((held.len(), dropped), (model.len(), model_dropped as u64));
            }
        }
    }

    #[test]
    fn a_take_moves_chunks_and_copies_at_most_one() {
        let mut held = Held::default();
        let mut dropped = 0;
        for id in 0..4 * CHUNK as u64 {
            held.push(H { id, at: id as i64 }, usize::MAX, &mut dropped);
        }
        let second = held.chunks[1].halves.as_ptr();
        let mut taken = Taken::default();
        held.take_before(CHUNK as i64 + 10, &mut taken);
        assert_eq!(taken.len(), CHUNK + 10);
        assert_eq!(taken.chunks[1].len(), 10, "the boundary chunk's part");
        assert_eq!(held.chunks[0].halves.as_ptr(), second, "stays in place");
        assert_eq!(held.chunks[0].min, CHUNK as i64 + 10);
        held.take_before(2 * CHUNK as i64, &mut taken);
        assert_eq!(taken.len(), CHUNK - 10);
        assert_eq!(taken.chunks[0].as_ptr(), second, "moved whole");
        assert_eq!(held.spare.len(), 2, "the first take's chunks came back");
        for id in 0..CHUNK as u64 {
            held.push(H { id, at: 0 }, usize::MAX, &mut dropped);
        }
        assert_eq!(held.spare.len(), 1, "a spare chunk was filled");
    }
}
