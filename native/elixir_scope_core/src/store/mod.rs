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

use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, RwLock};

use crate::correlator::{step_back, Change, Correlator, CorrelatorConfig, Patch};
use crate::event::{Event, Link, LinkKind, StoredEvent};

/// True when an event's correlation id names another event.
fn joins_another(s: &StoredEvent) -> bool {
    let c = s.correlation.correlation_id;
    c != 0 && c != s.event.id
}
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
        self.index_correlation(&stored);
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

    /// Evicts the oldest slots once over `max_events`, in chunks of up to
    /// 1/64 of it (at most [`EVICT_CHUNK`]), and prunes each index key the
    /// chunk touched once rather than once per event.
    fn enforce_bound(&mut self) {
        let max = self.config.max_events;
        if self.slots.len() <= max {
            return;
        }
        let target = max - (max / 64).min(EVICT_CHUNK);
        let (mut pids, mut functions, mut correlations) = (Vec::new(), Vec::new(), Vec::new());
        while self.slots.len() > target {
            self.base += 1;
            if let Some(old) = self.slots.pop_front().flatten() {
                self.evicted += 1;
                self.retained -= 1;
                self.heap_bytes -= old.heap_bytes();
                pids.push(old.event.pid);
                functions.push((old.event.module, old.event.function));
                if joins_another(&old) {
                    correlations.push(old.correlation.correlation_id);
                }
            }
        }
        self.timeline.advance_to(self.base);
        let (base, slots) = (self.base, &self.slots);
        let live = |id: u64| id >= base && slots.get((id - base) as usize).is_some();
        for key in distinct(pids) {
            self.by_pid.prune(key, live);
        }
        for key in distinct(functions) {
            self.by_function.prune(key, live);
        }
        for key in distinct(correlations) {
            self.by_correlation.prune(key, live);
        }
    }

    /// Drops `old` (removed from its slot) from the indexes.
    fn unindex(&mut self, old: &StoredEvent) {
        self.heap_bytes -= old.heap_bytes();
        let (base, slots) = (self.base, &self.slots);
        let live = |id: u64| id >= base && slots.get((id - base) as usize).is_some();
        self.by_pid.prune(old.event.pid, live);
        self.by_function
            .prune((old.event.module, old.event.function), live);
        if joins_another(old) {
            self.by_correlation
                .prune(old.correlation.correlation_id, live);
        }
    }

    /// Indexes an event under a correlation id other than its own (an event
    /// whose correlation id is its own id is found by `get`).
    fn index_correlation(&mut self, stored: &StoredEvent) {
        if joins_another(stored) {
            self.by_correlation
                .insert(stored.correlation.correlation_id, stored.event.id);
        }
    }

    /// Applies a correlator patch to a stored event; false when the event
    /// is not in the store (evicted, or never written here).
    pub fn patch(&mut self, id: u64, change: &Change) -> bool {
        if id < self.base {
            return false;
        }
        let Some(Some(stored)) = self.slots.slot_mut((id - self.base) as usize) else {
            return false;
        };
        let (before, heap_before) = (stored.correlation.correlation_id, stored.heap_bytes());
        change.apply(&mut stored.correlation);
        self.heap_bytes = self.heap_bytes - heap_before + stored.heap_bytes();
        let joined = stored.correlation.correlation_id;
        if joined != before && joins_another(stored) {
            self.by_correlation.insert(joined, id);
        }
        true
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

    /// All events with this correlation id (the event of that id, e.g. a
    /// call or a send, and its partners), oldest first.
    pub fn by_correlation(&self, correlation_id: u64) -> Vec<StoredEvent> {
        let ids = std::iter::once(correlation_id).chain(self.by_correlation.ids(&correlation_id));
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
///
/// The store's [`Correlator`] correlates every event written, under the
/// store's write lock (lock order: store, then correlator), so a patch
/// always finds its target already written and readers never see a pair
/// half-patched.
pub struct SharedStore {
    /// Taken by producers on every ingest: on its own cache line, away from
    /// the lock words the workers write.
    next_id: CachePadded<AtomicU64>,
    store: RwLock<Store>,
    correlator: Mutex<Correlator>,
    /// Patches whose target was not in the store.
    missed_patches: AtomicU64,
}

impl SharedStore {
    pub fn new(config: StoreConfig) -> Self {
        Self::with_correlator(config, CorrelatorConfig::default())
    }

    pub fn with_correlator(config: StoreConfig, correlation: CorrelatorConfig) -> Self {
        SharedStore {
            next_id: CachePadded::new(AtomicU64::new(1)),
            store: RwLock::new(Store::new(config)),
            correlator: Mutex::new(Correlator::new(correlation)),
            missed_patches: AtomicU64::new(0),
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

    /// True while a write holds the store (a worker then has better things
    /// to do than queue behind it).
    pub fn is_writing(&self) -> bool {
        self.store.is_locked_exclusive()
    }

    /// Correlates and writes a batch, assigning ids to events that have
    /// none; `now` (monotonic ns) stamps the correlations.
    pub fn write(&self, batch: impl Iterator<Item = Event>, now: i64) {
        self.correlate_each(batch, now, |store, stored, patches| {
            store.insert(stored);
            patches
                .drain(..)
                .filter(|p| !store.patch(p.id, &p.change))
                .count() as u64
        });
    }

    /// Correlates events without storing them (for callers that keep their
    /// own); patches to events in the store are applied.
    pub fn correlate_only(&self, events: Vec<Event>, now: i64) -> Vec<StoredEvent> {
        let mut out: Vec<StoredEvent> = Vec::with_capacity(events.len());
        self.correlate_each(events.into_iter(), now, |store, stored, patches| {
            out.push(stored);
            let mut missed = 0;
            for p in patches.drain(..) {
                // A patch may also target an event of this same call.
                match out.iter_mut().find(|s| s.event.id == p.id) {
                    Some(s) => p.change.apply(&mut s.correlation),
                    None => missed += u64::from(!store.patch(p.id, &p.change)),
                }
            }
            missed
        });
        out
    }

    /// The one correlation loop, under both locks: gives each event an id
    /// when it has none, correlates it, and hands it with its patches to
    /// `keep`, which returns how many patches found no target (counted).
    fn correlate_each(
        &self,
        events: impl Iterator<Item = Event>,
        now: i64,
        mut keep: impl FnMut(&mut Store, StoredEvent, &mut Vec<Patch>) -> u64,
    ) {
        let mut store = self.store.write();
        let mut correlator = self.correlator.lock();
        let mut patches = Vec::new();
        let mut missed = 0;
        for mut event in events {
            if event.id == 0 {
                event.id = self.next_ids(1);
            }
            let correlation = correlator.correlate(&event, now, &mut patches);
            missed += keep(&mut store, StoredEvent { event, correlation }, &mut patches);
        }
        if missed > 0 {
            self.missed_patches.fetch_add(missed, Ordering::Relaxed);
        }
    }

    pub fn correlator(&self) -> parking_lot::MutexGuard<'_, Correlator> {
        self.correlator.lock()
    }

    pub fn missed_patches(&self) -> u64 {
        self.missed_patches.load(Ordering::Relaxed)
    }

    /// The chain of events leading to `id`, root first (see
    /// [`crate::correlator::step_back`]); empty when `id` is not stored.
    pub fn chain(&self, id: u64) -> Vec<StoredEvent> {
        const MAX_CHAIN: usize = 10_000;
        let store = self.store.read();
        let mut chain: Vec<StoredEvent> = Vec::new();
        let mut next = Some(id);
        while let Some(at) = next {
            let Some(s) = store.get(at) else { break };
            if chain.len() == MAX_CHAIN || chain.iter().any(|c| c.event.id == at) {
                break;
            }
            next = step_back(&s.correlation, at);
            chain.push(s.clone());
        }
        chain.reverse();
        chain
    }

    /// Adds a link from `from` to `to`; false when `from` is not stored.
    pub fn link(&self, from: u64, kind: LinkKind, to: u64) -> bool {
        self.store
            .write()
            .patch(from, &Change::Link(Link { kind, target: to }))
    }

    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, Store> {
        self.store.read()
    }

    pub fn lock(&self) -> parking_lot::RwLockWriteGuard<'_, Store> {
        self.store.write()
    }
}

/// Most slots evicted at once (see `Store::enforce_bound`).
const EVICT_CHUNK: usize = 1024;

fn distinct<K: Ord>(mut keys: Vec<K>) -> Vec<K> {
    keys.sort_unstable();
    keys.dedup();
    keys
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
    fn large_stores_evict_in_chunks_and_prune_every_index() {
        // max 6400: chunks of 100; pids 1..=4 and two functions interleaved.
        let mut store = Store::new(StoreConfig { max_events: 6400 });
        for id in 1..=10_000u64 {
            let mut e = event(id % 4 + 1, id as i64);
            e.id = id;
            e.function = id % 2;
            store.insert(StoredEvent::uncorrelated(e));
        }
        let s = store.stats();
        assert!((6300..=6400).contains(&s.retained), "{s:?}");
        assert_eq!(s.retained + s.evicted, 10_000);
        let oldest = 10_000 - s.retained + 1;
        let by_pid: usize = (1..=4).map(|p| store.by_pid.ids(&p).count()).sum();
        assert_eq!(
            by_pid as u64, s.retained,
            "no evicted id left in the pid index"
        );
        let by_fun: usize = (0..=1)
            .map(|f| store.by_function.ids(&(0x10b, f)).count())
            .sum();
        assert_eq!(by_fun as u64, s.retained);
        let first = store.by_pid(oldest % 4 + 1, 1, Order::Asc);
        assert_eq!(ids(&first), vec![oldest]);
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
        shared.write([a, event(1, 2)].into_iter(), 0);
        let store = shared.read();
        assert_eq!(ids(&store.recent(10)), vec![3, 1]);
        assert_eq!(shared.assigned(), 3);
    }

    #[test]
    fn writes_are_correlated_patched_and_chained() {
        let shared = SharedStore::new(StoreConfig::default());
        let mut call = event(7, 1);
        let mut ret = event(7, 2);
        ret.kind = crate::event::EventKind::FunctionReturn;
        (call.id, ret.id) = (1, 2);
        shared.write([call, ret].into_iter(), 5);
        let pair = shared.read().by_correlation(1);
        assert_eq!(ids(&pair), vec![1, 2]);
        assert_eq!(pair[1].correlation.correlated_at, 5);
        assert_eq!(ids(&shared.chain(2)), vec![1, 2]);
        assert!(shared.link(1, LinkKind::CausedBy, 2));
        assert!(!shared.link(99, LinkKind::CausedBy, 2));
        let linked = shared.read().get(1).unwrap().correlation.links.clone();
        assert!(linked.contains(&Link {
            kind: LinkKind::CausedBy,
            target: 2
        }));
    }
}
