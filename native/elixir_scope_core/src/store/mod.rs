//! Store: the bounded, indexed, in-memory event store.
//!
//! Layout: ids are dense per store (assigned by [`SharedStore::next_ids`] at
//! ingest), so events live in [`Slots`], a chunked deque addressed by
//! `id - base` (growing never copies stored events). An
//! event may arrive before older ids that are still in flight in another
//! shard: the gap stays `None` until they arrive. Indexes: [`KeyIndex`] by
//! pid, by {module, function} and by correlation id; [`Timeline`] by time.
//!
//! Bounds: at most `max_events` slots. Writing past that evicts from the
//! front (oldest ids), unindexing each event; an event that arrives after
//! its slot was evicted is counted as stored and evicted at once.
//!
//! Invariants: `retained` = number of `Some` slots; `stored` counts every
//! event ever written; `stored == retained + evicted + removed`.

mod index;
mod slots;
mod timeline;

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::event::StoredEvent;
pub use index::KeyIndex;
pub use slots::Slots;
pub use timeline::Timeline;

/// Bounds of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    pub max_events: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_events: 1_000_000,
        }
    }
}

/// Result order of queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// Counters of a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub stored: u64,
    pub retained: u64,
    pub evicted: u64,
    pub removed: u64,
    pub memory_bytes: u64,
    pub max_events: u64,
}

pub struct Store {
    config: StoreConfig,
    base: u64,
    slots: Slots<StoredEvent>,
    by_pid: KeyIndex<u64>,
    by_function: KeyIndex<(u64, u64)>,
    by_correlation: KeyIndex<u64>,
    timeline: Timeline,
    retained: u64,
    stored: u64,
    evicted: u64,
    removed: u64,
    heap_bytes: usize,
}

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        Store {
            config,
            base: 1,
            slots: Slots::default(),
            by_pid: KeyIndex::default(),
            by_function: KeyIndex::default(),
            by_correlation: KeyIndex::default(),
            timeline: Timeline::new(1),
            retained: 0,
            stored: 0,
            evicted: 0,
            removed: 0,
            heap_bytes: 0,
        }
    }

    pub fn config(&self) -> StoreConfig {
        self.config
    }

    pub fn set_max_events(&mut self, max_events: usize) {
        self.config.max_events = max_events;
        self.enforce_bound();
    }

    /// Writes one event; its `event.id` must be assigned (non-zero).
    pub fn insert(&mut self, stored: StoredEvent) {
        let id = stored.event.id;
        debug_assert!(id != 0, "ids are assigned before insert");
        self.stored += 1;
        if id < self.base {
            // Its slot was evicted while the event was in flight.
            self.evicted += 1;
            return;
        }
        let at = (id - self.base) as usize;
        self.slots.extend_to(at + 1);
        let ev = &stored.event;
        self.by_pid.insert(ev.pid, id);
        if ev.module != 0 || ev.function != 0 {
            self.by_function.insert((ev.module, ev.function), id);
        }
        if stored.correlation.correlation_id != 0 {
            self.by_correlation
                .insert(stored.correlation.correlation_id, id);
        }
        self.timeline.record(id, ev.timestamp);
        self.heap_bytes += stored.heap_bytes();
        let slot = self.slots.slot_mut(at).expect("extended above");
        if let Some(old) = slot.replace(stored) {
            // Same id written twice (only through direct writes): keep the newest.
            self.heap_bytes -= old.heap_bytes();
            self.retained -= 1;
            self.removed += 1;
        }
        self.retained += 1;
        self.enforce_bound();
    }

    pub fn insert_batch(&mut self, batch: impl IntoIterator<Item = StoredEvent>) {
        for stored in batch {
            self.insert(stored);
        }
    }

    fn enforce_bound(&mut self) {
        while self.slots.len() > self.config.max_events {
            self.pop_front_slot();
        }
    }

    fn pop_front_slot(&mut self) {
        let slot = self.slots.pop_front().flatten();
        self.base += 1;
        self.timeline.advance_to(self.base);
        if let Some(old) = slot {
            self.evicted += 1;
            self.retained -= 1;
            self.unindex(&old);
        }
    }

    fn unindex(&mut self, old: &StoredEvent) {
        self.heap_bytes -= old.heap_bytes();
        let (base, slots) = (self.base, &self.slots);
        let live = |id: u64| id >= base && slots.get((id - base) as usize).is_some();
        self.by_pid.prune(old.event.pid, live);
        self.by_function
            .prune((old.event.module, old.event.function), live);
        if old.correlation.correlation_id != 0 {
            self.by_correlation
                .prune(old.correlation.correlation_id, live);
        }
    }

    pub fn get(&self, id: u64) -> Option<&StoredEvent> {
        if id < self.base {
            return None;
        }
        self.slots.get((id - self.base) as usize)
    }

    /// The `n` newest events, newest first.
    pub fn recent(&self, n: usize) -> Vec<StoredEvent> {
        self.slots.iter_rev().take(n).cloned().collect()
    }

    pub fn by_pid(&self, pid: u64, limit: usize, order: Order) -> Vec<StoredEvent> {
        let ids = self.by_pid.ids(&pid);
        self.collect(ids, order, limit, |s| s.event.pid == pid)
    }

    pub fn by_function(
        &self,
        module: u64,
        function: u64,
        limit: usize,
        order: Order,
    ) -> Vec<StoredEvent> {
        let ids = self.by_function.ids(&(module, function));
        self.collect(ids, order, limit, |s| {
            s.event.module == module && s.event.function == function
        })
    }

    /// All events with this correlation id, oldest first.
    pub fn by_correlation(&self, correlation_id: u64) -> Vec<StoredEvent> {
        let ids = self.by_correlation.ids(&correlation_id);
        self.collect(ids, Order::Asc, usize::MAX, |s| {
            s.correlation.correlation_id == correlation_id
        })
    }

    fn collect(
        &self,
        ids: impl DoubleEndedIterator<Item = u64>,
        order: Order,
        limit: usize,
        matches: impl Fn(&StoredEvent) -> bool,
    ) -> Vec<StoredEvent> {
        let ids: Box<dyn Iterator<Item = u64>> = match order {
            Order::Asc => Box::new(ids),
            Order::Desc => Box::new(ids.rev()),
        };
        ids.filter_map(|id| self.get(id))
            .filter(|s| matches(s))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Events with `from <= timestamp <= to`, ordered by (timestamp, id).
    pub fn by_time(&self, from: i64, to: i64, limit: usize, order: Order) -> Vec<StoredEvent> {
        let mut hits: Vec<(i64, u64)> = Vec::new();
        for (start, end) in self.timeline.candidates(from, to) {
            for id in start.max(self.base)..end {
                match self.get(id) {
                    Some(s) if s.event.timestamp >= from && s.event.timestamp <= to => {
                        hits.push((s.event.timestamp, id))
                    }
                    _ => {}
                }
            }
        }
        hits.sort_unstable();
        if order == Order::Desc {
            hits.reverse();
        }
        hits.into_iter()
            .take(limit)
            .filter_map(|(_, id)| self.get(id).cloned())
            .collect()
    }

    /// Removes every event with `timestamp < before`; returns how many.
    pub fn remove_before(&mut self, before: i64) -> u64 {
        let candidates: Vec<(u64, u64)> = self.timeline.candidates(i64::MIN, before - 1).collect();
        let mut removed = 0;
        let mut last_removed = 0;
        for (start, end) in candidates {
            for id in start.max(self.base)..end {
                let at = (id - self.base) as usize;
                let old = match self.slots.slot_mut(at) {
                    Some(slot) if slot.as_ref().is_some_and(|s| s.event.timestamp < before) => {
                        slot.take()
                    }
                    _ => continue,
                };
                if let Some(old) = old {
                    self.unindex(&old);
                    removed += 1;
                    last_removed = id;
                }
            }
        }
        self.retained -= removed;
        self.removed += removed;
        // Release leading empty slots up to the newest removed id; later gaps
        // may be events still in flight.
        while self.base <= last_removed && matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        self.timeline.advance_to(self.base);
        removed
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            stored: self.stored,
            retained: self.retained,
            evicted: self.evicted,
            removed: self.removed,
            memory_bytes: self.memory_bytes() as u64,
            max_events: self.config.max_events as u64,
        }
    }

    /// Bytes held: slots, payload heap, indexes.
    pub fn memory_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Option<StoredEvent>>()
            + self.heap_bytes
            + self.by_pid.memory_bytes()
            + self.by_function.memory_bytes()
            + self.by_correlation.memory_bytes()
            + self.timeline.memory_bytes()
    }
}

/// A store shared by pipelines and queries, with its id counter.
///
/// The id counter sits outside the lock so producers can assign ids at
/// ingest without touching the store.
pub struct SharedStore {
    next_id: AtomicU64,
    store: RwLock<Store>,
}

impl SharedStore {
    pub fn new(config: StoreConfig) -> Self {
        SharedStore {
            next_id: AtomicU64::new(1),
            store: RwLock::new(Store::new(config)),
        }
    }

    /// Reserves `n` consecutive ids; returns the first.
    pub fn next_ids(&self, n: u64) -> u64 {
        self.next_id.fetch_add(n, Ordering::Relaxed)
    }

    /// Ids assigned so far.
    pub fn assigned(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed) - 1
    }

    /// Writes a batch, assigning ids to events that have none.
    pub fn write(&self, batch: impl ExactSizeIterator<Item = StoredEvent>) {
        let mut store = self.store.write();
        for mut stored in batch {
            if stored.event.id == 0 {
                stored.event.id = self.next_ids(1);
            }
            store.insert(stored);
        }
    }

    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, Store> {
        self.store.read()
    }

    pub fn lock(&self) -> parking_lot::RwLockWriteGuard<'_, Store> {
        self.store.write()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_support::event;

    fn store_with(max: usize, events: impl IntoIterator<Item = (u64, u64, i64)>) -> Store {
        let mut store = Store::new(StoreConfig { max_events: max });
        for (id, pid, ts) in events {
            let mut e = event(pid, ts);
            e.id = id;
            store.insert(StoredEvent::uncorrelated(e));
        }
        store
    }

    fn ids(events: &[StoredEvent]) -> Vec<u64> {
        events.iter().map(|s| s.event.id).collect()
    }

    #[test]
    fn indexes_by_id_pid_function_and_time() {
        let store = store_with(100, (1..=10).map(|i| (i, 100 + i % 2, i as i64 * 10)));
        assert_eq!(store.get(3).unwrap().event.id, 3);
        assert!(store.get(11).is_none());
        assert_eq!(ids(&store.recent(3)), vec![10, 9, 8]);
        assert_eq!(
            ids(&store.by_pid(101, 100, Order::Asc)),
            vec![1, 3, 5, 7, 9]
        );
        assert_eq!(ids(&store.by_pid(100, 2, Order::Desc)), vec![10, 8]);
        assert_eq!(
            ids(&store.by_function(0x10b, 0x20b, 3, Order::Asc)),
            vec![1, 2, 3]
        );
        assert!(store.by_function(0x10b, 0x999, 3, Order::Asc).is_empty());
        assert_eq!(ids(&store.by_time(30, 50, 100, Order::Asc)), vec![3, 4, 5]);
        assert_eq!(ids(&store.by_time(30, 50, 2, Order::Desc)), vec![5, 4]);
    }

    #[test]
    fn out_of_order_arrival_fills_gaps() {
        let store = store_with(100, [(5, 1, 50), (2, 1, 20), (4, 1, 40), (1, 1, 10)]);
        assert_eq!(ids(&store.recent(10)), vec![5, 4, 2, 1]);
        assert_eq!(ids(&store.by_pid(1, 10, Order::Asc)), vec![1, 2, 4, 5]);
        assert_eq!(store.stats().retained, 4);
    }

    #[test]
    fn evicts_oldest_beyond_max_events_and_unindexes() {
        let store = store_with(5, (1..=12).map(|i| (i, 7, i as i64)));
        let s = store.stats();
        assert_eq!((s.stored, s.retained, s.evicted), (12, 5, 7));
        assert_eq!(ids(&store.recent(100)), vec![12, 11, 10, 9, 8]);
        assert_eq!(
            ids(&store.by_pid(7, 100, Order::Asc)),
            vec![8, 9, 10, 11, 12]
        );
        assert_eq!(store.by_pid.ids(&7).count(), 5, "index pruned");
        assert_eq!(
            ids(&store.by_time(0, 100, 100, Order::Asc)),
            vec![8, 9, 10, 11, 12]
        );
        assert!(store.get(7).is_none());
    }

    #[test]
    fn late_arrival_after_eviction_is_counted() {
        let mut store = store_with(3, (2..=6).map(|i| (i, 7, i as i64)));
        let mut late = event(7, 1);
        late.id = 1;
        store.insert(StoredEvent::uncorrelated(late));
        let s = store.stats();
        assert_eq!(s.stored, s.retained + s.evicted + s.removed);
        assert_eq!(s.retained, 3);
    }

    #[test]
    fn remove_before_drops_old_events_and_keeps_in_flight_gaps() {
        // ids 1..=6 at ts 10..60; id 7 still in flight; id 8 arrived.
        let mut store = store_with(100, (1..=6).chain([8]).map(|i| (i, 1, i as i64 * 10)));
        assert_eq!(store.remove_before(35), 3);
        assert_eq!(ids(&store.recent(100)), vec![8, 6, 5, 4]);
        assert_eq!(ids(&store.by_pid(1, 100, Order::Asc)), vec![4, 5, 6, 8]);
        let mut e = event(1, 70);
        e.id = 7;
        store.insert(StoredEvent::uncorrelated(e));
        assert_eq!(ids(&store.recent(100)), vec![8, 7, 6, 5, 4]);
        let s = store.stats();
        assert_eq!((s.retained, s.removed, s.stored), (5, 3, 8));
    }

    #[test]
    fn memory_per_small_event_is_bounded() {
        let n = 100_000u64;
        let store = store_with(n as usize, (1..=n).map(|i| (i, i % 64, i as i64)));
        let per_event = store.memory_bytes() as f64 / n as f64;
        assert!(per_event <= 200.0, "{per_event} bytes per event");
        eprintln!("store memory: {per_event:.1} bytes per event");
    }

    #[test]
    fn shared_store_assigns_missing_ids() {
        let shared = SharedStore::new(StoreConfig::default());
        let first = shared.next_ids(2);
        let mut a = event(1, 1);
        a.id = first;
        shared.write(
            [
                StoredEvent::uncorrelated(a),
                StoredEvent::uncorrelated(event(1, 2)),
            ]
            .into_iter(),
        );
        let store = shared.read();
        assert_eq!(ids(&store.recent(10)), vec![3, 1]);
        assert_eq!(shared.assigned(), 3);
    }
}
