//! Ring: a bounded, lock-free multi-producer ring with an overflow policy.
//!
//! Algorithm (after crossbeam's `ArrayQueue`, with plain u64 sequences so that
//! positions are exact and never wrap in practice): `tail` is the next
//! sequence to write, `head` the next to read. Sequence `s` lives in slot
//! `s & mask`, whose `stamp` says what the slot holds:
//!
//! * `stamp == s`       — empty, free for the writer of `s`;
//! * `stamp == s + 1`   — holds the event of `s`, ready to read;
//! * after reading `s`, `stamp = s + capacity` (free for the next lap).
//!
//! A writer claims `s` by CAS on `tail`, writes in place, then publishes the
//! stamp; a reader claims by CAS on `head`. The ring is full when
//! `tail == head + capacity`. On full, [`Overflow::DropNewest`] rejects the
//! new event and [`Overflow::DropOldest`] pops the oldest event and retries;
//! either way the drop is counted. Producers never wait on a lock.
//!
//! Invariants: `head <= tail <= head + capacity`; `writes - reads - dropped
//! overwritten == len` once writers are quiescent; every event pushed is
//! read, overwritten or still held (never lost without a count).

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crossbeam_utils::{Backoff, CachePadded};

/// What a full ring does with one more event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Keep what is queued; reject (and count) the new event.
    DropNewest,
    /// Discard (and count) the oldest queued event to make room.
    DropOldest,
}

/// Result of a push.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Stored at this sequence, displacing `overwritten` older events.
    Stored { seq: u64, overwritten: u64 },
    /// Rejected: the ring was full (drop-newest).
    Rejected,
}

/// Result of a pop.
#[derive(Debug, PartialEq, Eq)]
pub enum Popped<T> {
    Item(u64, T),
    /// Nothing queued; `head` is the read position.
    Empty(u64),
    /// The event at `head` is claimed by a writer that has not finished.
    Pending(u64),
}

/// Cache-line aligned, so a writer filling one slot and a reader emptying
/// its neighbour never contend for the same line.
#[repr(align(64))]
struct Slot<T> {
    stamp: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

pub struct Ring<T> {
    head: CachePadded<AtomicU64>,
    tail: CachePadded<AtomicU64>,
    slots: Box<[Slot<T>]>,
    mask: u64,
    overflow: Overflow,
    reads: CachePadded<AtomicU64>,
    rejected: AtomicU64,
    overwritten: AtomicU64,
}

// SAFETY: a slot's value is only touched by the single thread that won the
// CAS for its sequence, and publication goes through the stamp (Release /
// Acquire), exactly as in crossbeam's ArrayQueue.
unsafe impl<T: Send> Send for Ring<T> {}
unsafe impl<T: Send> Sync for Ring<T> {}

/// Asks the CPU to bring `slot` (its first and last cache line) into this
/// core's cache for writing. A hint only: no effect on correctness.
#[inline(always)]
fn prefetch_for_write<T>(slot: &Slot<T>) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
        let first = slot as *const Slot<T> as *const i8;
        let last = first.wrapping_add(std::mem::size_of::<Slot<T>>() - 1);
        // SAFETY: prefetching never faults, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_ET0>(first);
            _mm_prefetch::<_MM_HINT_ET0>(last);
        }
    }
}

/// Why a ring could not be created.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum RingError {
    /// Size 0 or larger than 2^30.
    InvalidSize,
    SizeMustBePowerOf2,
}

/// Largest ring accepted (2^30 slots).
pub const MAX_RING_SIZE: usize = 1 << 30;

/// A consistent-enough snapshot of a ring's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingStats {
    pub size: u64,
    pub write_position: u64,
    pub read_position: u64,
    pub available: u64,
    pub total_writes: u64,
    pub total_reads: u64,
    pub rejected: u64,
    pub overwritten: u64,
    /// The slots' memory (allocated whole at creation).
    pub memory_bytes: u64,
}

impl RingStats {
    pub fn dropped_events(&self) -> u64 {
        self.rejected + self.overwritten
    }

    pub fn utilization(&self) -> f64 {
        self.available as f64 / self.size as f64
    }
}

/// Checks a ring size without building a ring.
pub fn check_size(size: usize) -> Result<(), RingError> {
    if size == 0 || size > MAX_RING_SIZE {
        return Err(RingError::InvalidSize);
    }
    if !size.is_power_of_two() {
        return Err(RingError::SizeMustBePowerOf2);
    }
    Ok(())
}

impl<T> Ring<T> {
    pub fn new(size: usize, overflow: Overflow) -> Result<Self, RingError> {
        check_size(size)?;
        let slots = (0..size as u64)
            .map(|i| Slot {
                stamp: AtomicU64::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Ok(Ring {
            head: CachePadded::new(AtomicU64::new(0)),
            tail: CachePadded::new(AtomicU64::new(0)),
            slots,
            mask: size as u64 - 1,
            overflow,
            reads: CachePadded::new(AtomicU64::new(0)),
            rejected: AtomicU64::new(0),
            overwritten: AtomicU64::new(0),
        })
    }

    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    pub fn overflow(&self) -> Overflow {
        self.overflow
    }

    /// Pushes with the ring's overflow policy.
    pub fn push(&self, value: T) -> Pushed {
        self.push_with(|slot| {
            slot.write(value);
        })
    }

    /// Pushes a value that `write` initializes in place, in the slot it
    /// will be read from (no copy of a value built elsewhere). `write` runs
    /// only once a slot is claimed, so a rejected push never calls it.
    /// It must initialize the slot and must not panic: until it returns the
    /// slot is claimed but not readable, and a panic would leave the shard
    /// stuck there (memory stays safe: `Drop` skips unpublished slots).
    /// Crate-private for that reason; `IngestBatch::push_with` catches
    /// panics in the part that may fail.
    pub(crate) fn push_with(&self, write: impl FnOnce(&mut MaybeUninit<T>)) -> Pushed {
        let mut overwritten = 0;
        let seq = loop {
            if let Some(seq) = self.claim() {
                break seq;
            }
            match self.overflow {
                Overflow::DropNewest => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    return Pushed::Rejected;
                }
                Overflow::DropOldest => {
                    if let Popped::Item(_, old) = self.take() {
                        drop(old);
                        self.overwritten.fetch_add(1, Ordering::Relaxed);
                        overwritten += 1;
                    }
                }
            }
        };
        self.fill(seq, write);
        Pushed::Stored { seq, overwritten }
    }

    /// [`push_with`](Self::push_with) for a producer that waits for room:
    /// when the ring is full it refuses, whatever the overflow policy, and
    /// counts nothing (the producer offers the event again).
    pub(crate) fn try_push_with(&self, write: impl FnOnce(&mut MaybeUninit<T>)) -> Pushed {
        match self.claim() {
            Some(seq) => {
                self.fill(seq, write);
                Pushed::Stored {
                    seq,
                    overwritten: 0,
                }
            }
            None => Pushed::Rejected,
        }
    }

    /// Writes the claimed sequence `seq` and publishes it.
    #[inline(always)]
    fn fill(&self, seq: u64, write: impl FnOnce(&mut MaybeUninit<T>)) {
        let slot = &self.slots[(seq & self.mask) as usize];
        // The next push here will write the next slot, which a reader on
        // another core freed last: fetch it for writing meanwhile.
        prefetch_for_write(&self.slots[((seq + 1) & self.mask) as usize]);
        // SAFETY: we own sequence `seq` until its stamp is published.
        write(unsafe { &mut *slot.value.get() });
        slot.stamp.store(seq + 1, Ordering::Release);
    }

    /// Claims the next sequence for writing; `None` when the ring is full.
    fn claim(&self) -> Option<u64> {
        let backoff = Backoff::new();
        let cap = self.capacity();
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[(tail & self.mask) as usize];
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == tail {
                match self.tail.compare_exchange_weak(
                    tail,
                    tail + 1,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(tail),
                    Err(t) => {
                        tail = t;
                        backoff.spin();
                    }
                }
            } else if stamp + cap == tail + 1 {
                // The slot still holds sequence tail - cap.
                fence(Ordering::SeqCst);
                if self.head.load(Ordering::Relaxed) + cap == tail {
                    return None;
                }
                // A reader has claimed it and is finishing: retry.
                backoff.spin();
                tail = self.tail.load(Ordering::Relaxed);
            } else {
                backoff.snooze();
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Pops the oldest event (counted as a read).
    pub fn pop(&self) -> Popped<T> {
        let popped = self.take();
        if let Popped::Item(..) = popped {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        popped
    }

    /// Takes the oldest event without counting it.
    fn take(&self) -> Popped<T> {
        let backoff = Backoff::new();
        let cap = self.capacity();
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[(head & self.mask) as usize];
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == head + 1 {
                match self.head.compare_exchange_weak(
                    head,
                    head + 1,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the stamp says the value of `head` is written,
                        // and the CAS made us its only reader.
                        let value = unsafe { (*slot.value.get()).assume_init_read() };
                        slot.stamp.store(head + cap, Ordering::Release);
                        return Popped::Item(head, value);
                    }
                    Err(h) => {
                        head = h;
                        backoff.spin();
                    }
                }
            } else if stamp == head {
                fence(Ordering::SeqCst);
                if self.tail.load(Ordering::Relaxed) == head {
                    return Popped::Empty(head);
                }
                return Popped::Pending(head);
            } else {
                backoff.snooze();
                head = self.head.load(Ordering::Relaxed);
            }
        }
    }

    /// Pops up to `max` events into `out`; returns the read position after
    /// the last event taken (or the position where reading stopped).
    pub fn pop_batch(&self, max: usize, out: &mut Vec<T>) -> u64 {
        let mut position = self.head.load(Ordering::Relaxed);
        for _ in 0..max {
            match self.pop() {
                Popped::Item(seq, v) => {
                    out.push(v);
                    position = seq + 1;
                }
                Popped::Empty(h) | Popped::Pending(h) => return h,
            }
        }
        position
    }

    /// Events queued now.
    pub fn len(&self) -> u64 {
        loop {
            let tail = self.tail.load(Ordering::SeqCst);
            let head = self.head.load(Ordering::SeqCst);
            if self.tail.load(Ordering::SeqCst) == tail {
                return tail.saturating_sub(head);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequence of the next write (= events ever accepted).
    pub fn write_position(&self) -> u64 {
        self.tail.load(Ordering::SeqCst)
    }

    /// Sequence of the next read (= events read or overwritten).
    pub fn read_position(&self) -> u64 {
        self.head.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> RingStats {
        let read_position = self.read_position();
        let write_position = self.write_position().max(read_position);
        RingStats {
            size: self.capacity(),
            write_position,
            read_position,
            available: write_position - read_position,
            total_writes: write_position,
            total_reads: self.reads.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            overwritten: self.overwritten.load(Ordering::Relaxed),
            memory_bytes: self.capacity() * std::mem::size_of::<Slot<T>>() as u64,
        }
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        let head = *self.head.get_mut();
        let tail = *self.tail.get_mut();
        for seq in head..tail {
            let slot = &mut self.slots[(seq & self.mask) as usize];
            if *slot.stamp.get_mut() == seq + 1 {
                // SAFETY: exclusive access; the stamp says the value is written.
                unsafe { slot.value.get_mut().assume_init_drop() };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn slots_are_whole_cache_lines_and_counted_as_such() {
        let ring = Ring::<u64>::new(1024, Overflow::DropNewest).unwrap();
        // A stamp and a u64 fill one 64-byte line.
        assert_eq!(ring.stats().memory_bytes, 1024 * 64);
        let first = &ring.slots[0] as *const Slot<u64> as usize;
        let second = &ring.slots[1] as *const Slot<u64> as usize;
        assert_eq!((first % 64, second - first), (0, 64));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!(
            Ring::<u8>::new(0, Overflow::DropNewest).err(),
            Some(RingError::InvalidSize)
        );
        assert_eq!(
            Ring::<u8>::new(1000, Overflow::DropNewest).err(),
            Some(RingError::SizeMustBePowerOf2)
        );
        assert!(Ring::<u8>::new(1, Overflow::DropNewest).is_ok());
    }

    #[test]
    fn fifo_across_many_wraparounds() {
        let ring = Ring::new(4, Overflow::DropNewest).unwrap();
        let mut next_out = 0u64;
        for i in 0..1000u64 {
            assert_eq!(
                ring.push(i),
                Pushed::Stored {
                    seq: i,
                    overwritten: 0
                }
            );
            if i % 3 == 2 {
                while let Popped::Item(seq, v) = ring.pop() {
                    assert_eq!((seq, v), (next_out, next_out));
                    next_out += 1;
                }
            }
        }
        let s = ring.stats();
        assert_eq!(s.total_writes, 1000);
        assert_eq!(s.total_reads + s.available, 1000);
        assert_eq!(s.dropped_events(), 0);
    }

    #[test]
    fn drop_newest_keeps_the_oldest_and_counts() {
        let ring = Ring::new(8, Overflow::DropNewest).unwrap();
        for i in 0..20 {
            ring.push(i);
        }
        let s = ring.stats();
        assert_eq!((s.available, s.rejected, s.overwritten), (8, 12, 0));
        assert_eq!(s.utilization(), 1.0);
        let mut out = vec![];
        ring.pop_batch(100, &mut out);
        assert_eq!(out, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts() {
        let ring = Ring::new(8, Overflow::DropOldest).unwrap();
        for i in 0..20 {
            ring.push(i);
        }
        let s = ring.stats();
        assert_eq!((s.available, s.rejected, s.overwritten), (8, 0, 12));
        assert_eq!(s.total_reads, 0);
        assert_eq!(s.read_position, 12);
        let mut out = vec![];
        let pos = ring.pop_batch(100, &mut out);
        assert_eq!(out, (12..20).collect::<Vec<_>>());
        assert_eq!(pos, 20);
    }

    #[test]
    fn pop_on_empty_reports_position() {
        let ring: Ring<u32> = Ring::new(2, Overflow::DropNewest).unwrap();
        assert_eq!(ring.pop(), Popped::Empty(0));
        ring.push(7);
        ring.pop();
        assert_eq!(ring.pop(), Popped::Empty(1));
    }

    #[test]
    fn drops_values_left_in_the_ring() {
        let marker = Arc::new(());
        {
            let ring = Ring::new(4, Overflow::DropOldest).unwrap();
            for _ in 0..6 {
                ring.push(marker.clone());
            }
            assert_eq!(Arc::strong_count(&marker), 5);
        }
        assert_eq!(Arc::strong_count(&marker), 1);
    }

    fn concurrent(overflow: Overflow) {
        const PRODUCERS: u64 = 4;
        const PER: u64 = 50_000;
        let ring = Arc::new(Ring::new(256, overflow).unwrap());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let consumer = {
            let (ring, done) = (ring.clone(), done.clone());
            std::thread::spawn(move || {
                let mut last = [None::<u64>; PRODUCERS as usize];
                let mut got = 0u64;
                let mut buf = Vec::new();
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    buf.clear();
                    ring.pop_batch(64, &mut buf);
                    for &(p, i) in &buf {
                        // Per-producer order is kept.
                        if let Some(prev) = last[p as usize] {
                            assert!(i > prev, "producer {p}: {i} after {prev}");
                        }
                        last[p as usize] = Some(i);
                    }
                    got += buf.len() as u64;
                    if finished && buf.is_empty() && ring.is_empty() {
                        return got;
                    }
                }
            })
        };
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for i in 0..PER {
                        ring.push((p, i));
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        let got = consumer.join().unwrap();
        let s = ring.stats();
        assert_eq!(got, s.total_reads);
        assert_eq!(
            PRODUCERS * PER,
            got + s.dropped_events(),
            "every push is read or counted as dropped"
        );
        assert_eq!(s.write_position, PRODUCERS * PER - s.rejected);
    }

    #[test]
    fn concurrent_producers_drop_newest() {
        concurrent(Overflow::DropNewest);
    }

    #[test]
    fn concurrent_producers_drop_oldest() {
        concurrent(Overflow::DropOldest);
    }
}
