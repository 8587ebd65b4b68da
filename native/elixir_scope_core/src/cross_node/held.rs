//! Held: the halves of one kind a node's workers set aside for the
//! exchange, in the order they were stored, until a round takes them.
//!
//! A take hands over a prefix: every half up to the last one older than
//! its cutoff (halves come about in time order, so what stays is the young
//! tail; a young half among older ones goes along). During a session the
//! tail is what a second of traffic set aside (the rounds' settling time),
//! often more than a round takes, so a take must cost what it takes, not
//! what stays:
//!
//! - The halves left start at `head`: a take copies out what it takes and
//!   moves `head`, or, when the tail is the shorter part, swaps the vectors
//!   and copies the tail back. The taken front is reclaimed (the tail
//!   moved down) once it is at least half the vector, so each half moves a
//!   bounded number of times.
//! - Each block of `BLOCK` halves keeps its least timestamp: the last half
//!   older than a cutoff is in the last block whose least timestamp is,
//!   found by reading the young blocks' minimums, then that block.
//! - `floor`: no half held is older; a take with a cutoff at or below it
//!   (another node's take in the same round, a round early in a session)
//!   returns at once.
//!
//! Invariants: `head <= halves.len()`; `mins[k]` is at most the timestamp
//! of each half in `halves[k * BLOCK..][..BLOCK]` (exactly their least
//! while no half of the block was taken); `mins.len()` is the number of
//! blocks `halves` spans.

/// What [`Held`] and a round read of a half set aside, of either kind.
pub trait Aside: Copy {
    /// Its event's id.
    fn id(&self) -> u64;
    /// Its timestamp.
    fn at(&self) -> i64;
    /// Its fingerprint (0: none taken).
    fn fingerprint(&self) -> u32;
}

/// Halves per block whose least timestamp is kept.
const BLOCK: usize = 64;

/// Halves of one kind set aside, in the order they were stored (read as
/// a slice).
#[derive(Debug)]
pub struct Held<T> {
    halves: Vec<T>,
    /// The halves before it were taken.
    head: usize,
    /// The least timestamp of each block of `halves`.
    mins: Vec<i64>,
    /// Whether a half set aside since the last take came without a
    /// fingerprint (one ingested from Elixir).
    bare: bool,
    /// No half held is older.
    floor: i64,
}

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held {
            halves: Vec::new(),
            head: 0,
            mins: Vec::new(),
            bare: false,
            floor: i64::MIN,
        }
    }
}

impl<T> std::ops::Deref for Held<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.halves[self.head..]
    }
}

impl<T: Aside> Held<T> {
    /// Bytes the halves take (their vectors' capacity).
    pub fn memory_bytes(&self) -> usize {
        self.halves.capacity() * std::mem::size_of::<T>()
            + self.mins.capacity() * std::mem::size_of::<i64>()
    }

    /// Forgets every half (they were counted where they went).
    pub fn clear(&mut self) {
        self.halves.clear();
        self.mins.clear();
        self.head = 0;
        self.bare = false;
    }

    /// Sets `half` aside; past `most` held, the older half of them goes
    /// first, counted in `dropped`.
    pub fn push(&mut self, half: T, most: usize, dropped: &mut u64) {
        if self.len() == most {
            // Rare (no exchange for millions of messages).
            self.head += most / 2;
            *dropped += (most / 2) as u64;
            self.reclaim();
        }
        let at = half.at();
        self.bare |= half.fingerprint() == 0;
        self.floor = self.floor.min(at);
        match self.mins.last_mut() {
            Some(min) if !self.halves.len().is_multiple_of(BLOCK) => *min = (*min).min(at),
            _ => self.mins.push(at),
        }
        self.halves.push(half);
    }

    /// Moves the halves up to the last one older than `before` into
    /// `into` (emptied first), in order; the younger ones after it stay.
    /// `bare` stays set while halves stay (it may be one of them that
    /// lacks a fingerprint). True when one of those handed over may lack
    /// its fingerprint.
    pub fn take_before(&mut self, before: i64, into: &mut Vec<T>) -> bool {
        into.clear();
        if before <= self.floor {
            return false;
        }
        // Every half left is `before` or younger.
        self.floor = before;
        let Some(end) = self.end_before(before) else {
            return false;
        };
        let was_bare = self.bare;
        if self.halves.len() - end <= end - self.head {
            // The tail is the shorter part: the correlator goes on filling
            // `into`'s old capacity.
            std::mem::swap(&mut self.halves, into);
            self.halves.extend_from_slice(&into[end..]);
            into.truncate(end);
            into.drain(..self.head);
            self.head = 0;
            self.rebuild_mins();
        } else {
            into.extend_from_slice(&self.halves[self.head..end]);
            self.head = end;
            self.reclaim();
        }
        self.bare = was_bare && !self.is_empty();
        was_bare
    }

    /// The position after the last half held older than `before`.
    fn end_before(&self, before: i64) -> Option<usize> {
        let first = self.head / BLOCK;
        (first..self.mins.len())
            .rev()
            .filter(|&k| self.mins[k] < before)
            .find_map(|k| {
                let from = (k * BLOCK).max(self.head);
                let block = &self.halves[from..self.halves.len().min((k + 1) * BLOCK)];
                let last = block.iter().rposition(|h| h.at() < before)?;
                Some(from + last + 1)
            })
    }

    /// Moves the halves left to the front once the taken ones are at
    /// least half the vector.
    fn reclaim(&mut self) {
        if self.head > 0 && 2 * self.head >= self.halves.len() {
            self.halves.drain(..self.head);
            self.head = 0;
            self.rebuild_mins();
        }
    }

    fn rebuild_mins(&mut self) {
        self.mins.clear();
        let least = |block: &[T]| block.iter().map(Aside::at).min().unwrap_or(i64::MAX);
        self.mins.extend(self.halves.chunks(BLOCK).map(least));
    }
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
        /// Push this many halves, each `drift` from the last timestamp
        /// (some go back in time).
        Push(Vec<i64>),
        /// Take with a cutoff this far behind the newest timestamp.
        Take(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            prop::collection::vec(-3i64..10, 0..300).prop_map(Op::Push),
            (-5i64..400).prop_map(Op::Take),
        ]
    }

    proptest! {
        /// Held takes what the plain rule takes (every half up to the last
        /// one older than the cutoff), pushes and takes interleaved, with
        /// young halves among old ones and the bound in between.
        #[test]
        fn takes_what_a_scan_of_every_half_takes(ops in prop::collection::vec(op(), 1..40)) {
            const MOST: usize = 700;
            let mut held = Held::default();
            let (mut model, mut model_dropped) = (Vec::<H>::new(), 0);
            let (mut dropped, mut id, mut at) = (0, 0, 0);
            let mut taken = Vec::new();
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
                        // A cutoff at or below the floor takes nothing: no
                        // half held is older.
                        prop_assert_eq!(&taken, &expected);
                    }
                }
                prop_assert_eq!(&held[..], &model[..]);
                prop_assert_eq!(dropped, model_dropped as u64);
            }
        }
    }

    #[test]
    fn a_take_moves_what_it_takes_and_leaves_the_tail_in_place() {
        let mut held = Held::default();
        let mut dropped = 0;
        for id in 0..1000 {
            held.push(H { id, at: id as i64 }, usize::MAX, &mut dropped);
        }
        let tail = held.halves.as_ptr();
        let mut taken = Vec::new();
        held.take_before(100, &mut taken);
        assert_eq!((taken.len(), held.len()), (100, 900));
        assert_eq!(held.halves.as_ptr(), tail, "the tail stays where it is");
        held.take_before(700, &mut taken);
        assert_eq!((taken[0].id, taken.len(), held[0].id), (100, 600, 700));
        assert_eq!(held.head, 0, "the taken front was reclaimed");
        assert_eq!(held.mins.len(), 300usize.div_ceil(BLOCK));
    }
}
