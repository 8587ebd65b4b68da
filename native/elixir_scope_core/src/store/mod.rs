//! Store: the bounded, indexed, in-memory event store.
//!
//! Layout: events are kept in arrival order in a [`Log`] of compact
//! [`Record`]s (payload bytes in per-chunk arenas), addressed by position;
//! a [`Directory`] maps ids to positions; [`Keys`] index positions by pid
//! and by {module, function} (posting lists appended in arrival order); the
//! log's chunks carry their min/max timestamp for time queries. A call's
//! return and a send's receive are found from the call or send through its
//! record's `partner` position, not through an index with a key per pair.
//!
//! Bounds: at most `max_events` events are held (`retained`), whatever
//! happened to the ids in between: an id that never reached the store (a
//! dropped event) costs no record, only a directory entry while it lies
//! between held ids. Writing past `max_events` evicts the oldest arrivals
//! (once per batch); the index keys they touched are pruned once a chunk's
//! worth of evictions has gathered.
//!
//! Invariants: `retained` = live records in the log; `stored` counts every
//! event ever written; `stored == retained + evicted + removed`; every live
//! record's position is in its pid's and its function's posting list; a
//! list holds at most `PRUNE_AFTER` entries of evicted events (plus those
//! of removed ones, skipped by readers).

mod call_stat;
mod directory;
mod history;
mod keys;
mod log;
mod query;
mod ranges;
mod record;
mod trace;

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, RwLock};

use crate::correlator::{step_back, Change, Correlator, CorrelatorConfig, Patch};
use crate::cross_node::Exchange;
use crate::event::{Correlation, Event, EventKind, EventView, Link, LinkKind, StoredEvent};
use crate::links::Packed;

pub use call_stat::{CallStat, StatKey};
pub use directory::Directory;
pub use history::{Batch, History};
pub use keys::Keys;
pub use log::{Entry, Log, CHUNK};
pub use query::Filter;
pub use record::{flag, Record, NONE};
pub use trace::{Attempt, EventTrace};

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

/// One event a query matched: its id and its position in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub id: u64,
    pub pos: u64,
}

/// What a query selects (see [`Store::select`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// The newest events by id.
    Recent,
    Pid(u64),
    /// {module, function}, any arity.
    Function(u64, u64),
    /// `from <= timestamp <= to`.
    Time {
        from: i64,
        to: i64,
    },
    /// The event of that id and the event that joined it.
    Correlation(u64),
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
    log: Log,
    directory: Directory,
    pids: Keys<u64>,
    functions: Keys<(u64, u64)>,
    retained: u64,
    stored: u64,
    evicted: u64,
    removed: u64,
    /// Heap bytes of records' boxed links (events with several links).
    links_heap: usize,
    /// Pid and function keys of events evicted since the last prune.
    unpruned: (Vec<u32>, Vec<u32>),
    history: History,
}

/// The largest bound a store takes (a larger `max_events` acts as this):
/// positions kept as 32 bits (see `directory::widen`) need the log to
/// span less than 2^32 of them, and the log spans at most twice the bound.
pub const MAX_EVENTS: usize = 1 << 30;

/// Evictions gathered before the index keys they touched are pruned.
const PRUNE_AFTER: usize = CHUNK;

/// A correlation id that names another event.
fn joined(id: u64, correlation_id: u64) -> Option<u64> {
    (correlation_id != 0 && correlation_id != id).then_some(correlation_id)
}

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        Store {
            config,
            log: Log::default(),
            directory: Directory::default(),
            pids: Keys::default(),
            functions: Keys::default(),
            retained: 0,
            stored: 0,
            evicted: 0,
            removed: 0,
            links_heap: 0,
            unpruned: (Vec::new(), Vec::new()),
            history: History::default(),
        }
    }

    /// Starts a batch written by `writer` (a worker's id, 0 for a direct
    /// write) at `now`: the events appended next belong to it.
    pub fn begin_batch(&mut self, writer: u32, now: i64) {
        self.history.begin(self.log.end(), writer, now);
    }

    /// Marks the event just stored at `pos` as pending when it still
    /// waits for its partner (a receive with no send, a send with no
    /// receive), once its batch step's patches are applied.
    pub fn settle(&mut self, pos: u64) {
        if let Some(r) = self.log.record_mut(pos) {
            let waits = match r.kind {
                EventKind::MessageReceive => r.correlation_id == 0,
                EventKind::MessageSend => r.partner == NONE,
                _ => false,
            };
            if waits {
                r.flags |= flag::PENDING;
            }
        }
    }

    pub fn config(&self) -> StoreConfig {
        self.config
    }

    /// The bound in force: `max_events`, at most [`MAX_EVENTS`].
    fn max_events(&self) -> usize {
        self.config.max_events.min(MAX_EVENTS)
    }

    pub fn set_max_events(&mut self, max_events: usize) {
        self.config.max_events = max_events;
        self.enforce_bound();
    }

    /// Writes one event (its `event.id` must be assigned) and enforces the
    /// bound.
    pub fn insert(&mut self, stored: StoredEvent) {
        self.append(&stored.event, stored.correlation);
        self.enforce_bound();
    }

    /// Appends one event without enforcing the bound (a batch writer calls
    /// [`Store::enforce_bound`] once at its end); returns its position.
    pub fn append(&mut self, e: &Event, c: Correlation) -> u64 {
        let id = e.id;
        debug_assert!(id != 0, "ids are assigned before insert");
        debug_assert!(c.correlation_type.is_none_or(|k| k == e.kind));
        self.stored += 1;
        if let Some(pos) = self.position(id) {
            // Same id written twice (only through direct writes): keep the newest.
            self.mark_removed(pos);
        }
        let pos = self.log.end();
        let pid_key = self.pids.push(e.pid, pos);
        let fun_key = if e.module != 0 || e.function != 0 {
            self.functions.push((e.module, e.function), pos)
        } else {
            NONE
        };
        let mut flags = 0;
        if e.ingest_stamped {
            flags |= flag::INGEST_STAMPED;
        }
        if c.correlation_type.is_some() {
            flags |= flag::CORRELATED;
        }
        self.links_heap += c.links.heap_bytes();
        let record = Record {
            id,
            timestamp: e.timestamp,
            wall_time: e.wall_time,
            correlation_id: c.correlation_id,
            parent_id: c.parent_id,
            root_id: c.root_id,
            correlated_at: c.correlated_at,
            links: c.links,
            pid_key,
            fun_key,
            payload_at: 0,
            partner: NONE,
            confidence: c.confidence,
            kind: e.kind,
            arity: e.arity,
            flags,
        };
        self.log.push(record, e.data.as_bytes(), e.peer.as_bytes());
        self.directory.set(id, pos);
        self.retained += 1;
        if let Some(target) = joined(id, c.correlation_id) {
            self.set_partner(target, pos);
        }
        pos
    }

    /// Tells the event `target` that the event at `pos` joined it (a
    /// pending one is then marked patched: its partner came later).
    fn set_partner(&mut self, target: u64, pos: u64) {
        if let Some(at) = self.position(target) {
            if let Some(r) = self.log.record_mut(at) {
                r.partner = pos as u32;
                if r.has(flag::PENDING) {
                    r.flags |= flag::PATCHED;
                }
            }
        }
    }

    /// The position of the live event `id`.
    fn position(&self, id: u64) -> Option<u64> {
        let pos = directory::widen(self.directory.get(id)?, self.log.front());
        let r = self.log.record(pos)?;
        (r.id == id && r.is_live()).then_some(pos)
    }

    fn mark_removed(&mut self, pos: u64) {
        if let Some(r) = self.log.record_mut(pos) {
            r.flags |= flag::REMOVED;
            self.links_heap -= r.links.heap_bytes();
            self.retained -= 1;
            self.removed += 1;
        }
    }

    /// Evicts the oldest arrivals while more than `max_events` are held. The
    /// index keys they touched are pruned once `PRUNE_AFTER` evictions
    /// have gathered, each key once (readers skip the dead entries until
    /// then).
    pub fn enforce_bound(&mut self) {
        let max = self.max_events() as u64;
        // Records removed from the middle of the log (`remove_before` with
        // out-of-order timestamps) still take their place until the front
        // passes them: the log is also kept within twice the bound.
        let over = |retained: u64, len: u64| retained > max || len > 2 * max;
        let (pids, functions) = &mut self.unpruned;
        let (mut evicted, mut links_heap) = (0, 0);
        while over(self.retained - evicted, self.log.len()) {
            let popped = self.log.pop_front(|r| {
                pids.push(r.pid_key);
                if r.fun_key != NONE {
                    functions.push(r.fun_key);
                }
                if r.is_live() {
                    evicted += 1;
                    links_heap += r.links.heap_bytes();
                }
            });
            if !popped {
                break;
            }
        }
        self.retained -= evicted;
        self.evicted += evicted;
        self.links_heap -= links_heap;
        if self.unpruned.0.len() >= PRUNE_AFTER {
            self.prune_front();
        }
    }

    /// Drops dead entries from the front of the lists of the keys whose
    /// events left the log since the last prune, and from the directory.
    fn prune_front(&mut self) {
        let (pids, functions) = &mut self.unpruned;
        let log = &self.log;
        let dead = |pos32: u32| {
            log.record(directory::widen(pos32, log.front()))
                .is_none_or(|r| !r.is_live())
        };
        for keys in [&mut *pids, &mut *functions] {
            keys.sort_unstable();
            keys.dedup();
        }
        for &n in pids.iter() {
            self.pids.prune(n, dead);
        }
        for &n in functions.iter() {
            self.functions.prune(n, dead);
        }
        pids.clear();
        functions.clear();
        self.history.trim(log.front());
        self.directory.trim_front(|id, pos32| {
            log.record(directory::widen(pos32, log.front()))
                .is_some_and(|r| r.id == id && r.is_live())
        });
    }

    /// Applies a correlator patch to a stored event; false when the event
    /// is not in the store (evicted, or never written here).
    pub fn patch(&mut self, id: u64, change: &Change) -> bool {
        let Some(pos) = self.position(id) else {
            return false;
        };
        let r = self.log.record_mut(pos).expect("position just resolved");
        let before = r.correlation_id;
        let heap_before = r.links.heap_bytes();
        let mut c = Correlation {
            correlation_id: r.correlation_id,
            parent_id: r.parent_id,
            root_id: r.root_id,
            links: std::mem::take(&mut r.links),
            correlation_type: None,
            correlated_at: r.correlated_at,
            confidence: r.confidence,
        };
        change.apply(&mut c);
        r.flags |= flag::PATCHED;
        r.correlation_id = c.correlation_id;
        r.confidence = c.confidence;
        r.links = c.links;
        self.links_heap = self.links_heap + r.links.heap_bytes() - heap_before;
        if r.correlation_id != before {
            if let Some(target) = joined(id, r.correlation_id) {
                self.set_partner(target, pos);
            }
        }
        true
    }

    /// Keeps `link` beside the stored event `id` (see [`log`]), with the
    /// confidence if given; false when the event is not held. The record
    /// is not visited: it is long out of cache when a remote link comes.
    fn set_side_link(&mut self, id: u64, link: Link, confidence: Option<f32>) -> bool {
        let Some(pos32) = self.directory.get(id) else {
            return false;
        };
        let pos = directory::widen(pos32, self.log.front());
        let confidence = confidence.unwrap_or(f32::NAN);
        self.log
            .set_side_link(pos, id, Packed::new(link), confidence)
    }

    /// A stored event read in place.
    fn view<'s>(&'s self, e: Entry<'s>) -> EventView<'s> {
        let r = e.record;
        let (module, function) = if r.fun_key == NONE {
            (0, 0)
        } else {
            self.functions.key(r.fun_key)
        };
        EventView {
            id: r.id,
            timestamp: r.timestamp,
            wall_time: r.wall_time,
            pid: self.pids.key(r.pid_key),
            module,
            function,
            arity: r.arity,
            kind: r.kind,
            ingest_stamped: r.has(flag::INGEST_STAMPED),
            data: e.data,
            peer: e.peer,
            correlation_id: r.correlation_id,
            parent_id: r.parent_id,
            root_id: r.root_id,
            links: e.links(),
            correlation_type: r.has(flag::CORRELATED).then_some(r.kind),
            correlated_at: r.correlated_at,
            confidence: e.confidence(),
        }
    }

    /// The live event at `pos`, if it passes `keep`.
    fn live_at(&self, pos: u64, keep: impl Fn(&Record) -> bool) -> Option<Entry<'_>> {
        self.log
            .get(pos)
            .filter(|e| e.record.is_live() && keep(e.record))
    }

    /// The hits of the events `ids` still held, in the order given.
    pub fn hits_of(&self, ids: &[u64]) -> Vec<Hit> {
        ids.iter()
            .filter_map(|&id| {
                Some(Hit {
                    id,
                    pos: self.position(id)?,
                })
            })
            .collect()
    }

    pub fn get(&self, id: u64) -> Option<StoredEvent> {
        let pos = self.position(id)?;
        self.log.get(pos).map(|e| self.view(e).to_stored())
    }

    /// The way the live event `id` went through the pipeline (see
    /// the `trace` module), at `now` with the correlation TTL `ttl_ns`.
    pub fn trace(&self, id: u64, now: i64, ttl_ns: i64) -> Option<EventTrace> {
        let pos = self.position(id)?;
        let e = self.log.get(pos)?;
        let r = e.record;
        let batch = self.history.find(pos);
        let partner = Some(r.partner)
            .filter(|&p| p != NONE)
            .and_then(|p| self.log.record(directory::widen(p, self.log.front())))
            .filter(|p| p.is_live() && p.correlation_id == id)
            .map(|p| p.id);
        Some(EventTrace {
            id,
            ingestion_time: r.has(flag::INGEST_STAMPED).then_some(r.timestamp),
            writer: batch.map_or(0, |b| b.writer),
            storage_time: batch.map_or(r.correlated_at, |b| b.stored_at),
            correlated_at: r.correlated_at,
            attempts: trace::attempts(r, partner, now, ttl_ns),
            correlation_id: r.correlation_id,
            partner,
            confidence: e.confidence(),
            links: e.links().iter().collect(),
        })
    }

    /// The correlation id of the live event `id` (no copy of the event).
    pub fn correlation_id(&self, id: u64) -> Option<u64> {
        let pos = self.position(id)?;
        self.log.record(pos).map(|r| r.correlation_id)
    }

    /// The `n` newest events by id, newest first.
    pub fn recent(&self, n: usize) -> Vec<StoredEvent> {
        self.fetch(&self.select(Select::Recent, n, Order::Desc))
    }

    pub fn by_pid(&self, pid: u64, limit: usize, order: Order) -> Vec<StoredEvent> {
        self.fetch(&self.select(Select::Pid(pid), limit, order))
    }

    pub fn by_function(
        &self,
        module: u64,
        function: u64,
        limit: usize,
        order: Order,
    ) -> Vec<StoredEvent> {
        self.fetch(&self.select(Select::Function(module, function), limit, order))
    }

    /// All events with this correlation id (the event of that id, e.g. a
    /// call or a send, and its partner), oldest first.
    pub fn by_correlation(&self, correlation_id: u64) -> Vec<StoredEvent> {
        self.fetch(&self.select(Select::Correlation(correlation_id), usize::MAX, Order::Asc))
    }

    /// Events with `from <= timestamp <= to`, ordered by (timestamp, id).
    pub fn by_time(&self, from: i64, to: i64, limit: usize, order: Order) -> Vec<StoredEvent> {
        self.fetch(&self.select(Select::Time { from, to }, limit, order))
    }

    /// The events a query matches, as (id, position) pairs in result
    /// order, at most `limit`: by id for every query but time ranges,
    /// which go by (timestamp, id). [`Store::fetch`] reads them, so a large
    /// result can be read in chunks, the store's lock taken per chunk.
    pub fn select(&self, what: Select, limit: usize, order: Order) -> Vec<Hit> {
        let front = self.log.front();
        let hit = |pos: u64, keep: &dyn Fn(&Record) -> bool| {
            self.log
                .record(pos)
                .filter(|r| r.is_live() && keep(r))
                .map(|r| Hit { id: r.id, pos })
        };
        let mut hits: Vec<Hit> = match what {
            Select::Recent => {
                // The directory is in id order: newest first without a sort.
                let mut newest = self
                    .directory
                    .iter_rev()
                    .filter_map(|(id, pos32)| hit(directory::widen(pos32, front), &|r| r.id == id));
                let hits = match order {
                    Order::Desc => newest.by_ref().take(limit).collect(),
                    Order::Asc => {
                        let mut all: Vec<Hit> = newest.collect();
                        all.reverse();
                        all.truncate(limit);
                        all
                    }
                };
                return hits;
            }
            Select::Pid(pid) => match self.pids.positions(&pid) {
                Some((n, list)) => posting_hits(&self.log, list, limit, order, |p| {
                    hit(p, &|r| r.pid_key == n)
                }),
                None => Vec::new(),
            },
            Select::Function(module, function) => {
                match self.functions.positions(&(module, function)) {
                    Some((n, list)) => posting_hits(&self.log, list, limit, order, |p| {
                        hit(p, &|r| r.fun_key == n)
                    }),
                    None => Vec::new(),
                }
            }
            Select::Correlation(id) => {
                let target = self
                    .position(id)
                    .and_then(|pos| hit(pos, &|r| r.correlation_id == id));
                let partner = self
                    .position(id)
                    .and_then(|pos| self.log.record(pos))
                    .map(|r| r.partner)
                    .filter(|&p| p != NONE)
                    .and_then(|p| hit(directory::widen(p, front), &|r| r.correlation_id == id));
                target.into_iter().chain(partner).collect()
            }
            Select::Time { from, to } => {
                let mut timed: Vec<(i64, Hit)> = Vec::new();
                for (start, end) in self.log.time_candidates(from, to) {
                    for pos in start..end {
                        let in_range = |r: &Record| r.timestamp >= from && r.timestamp <= to;
                        if let Some(h) = hit(pos, &in_range) {
                            let ts = self.log.record(pos).map_or(0, |r| r.timestamp);
                            timed.push((ts, h));
                        }
                    }
                }
                if !timed.is_sorted_by_key(|&(ts, h)| (ts, h.id)) {
                    timed.sort_unstable_by_key(|&(ts, h)| (ts, h.id));
                }
                if order == Order::Desc {
                    timed.reverse();
                }
                timed.truncate(limit);
                return timed.into_iter().map(|(_, h)| h).collect();
            }
        };
        sort_by_id(&mut hits, order);
        hits
    }

    /// The events of `hits` still held, in the order given (an event
    /// evicted or removed since the selection is skipped).
    pub fn fetch(&self, hits: &[Hit]) -> Vec<StoredEvent> {
        let mut out = Vec::with_capacity(hits.len());
        self.visit(hits, |v| out.push(v.to_stored()));
        out
    }

    /// Calls `f` with each event of `hits` still held, read in place, in
    /// the order given. Records a few hits ahead are prefetched: a result
    /// spread over the log is bound by memory latency, not by the work.
    pub fn visit<'s>(&'s self, hits: &[Hit], mut f: impl FnMut(EventView<'s>)) {
        const AHEAD: usize = 6;
        for (i, h) in hits.iter().enumerate() {
            if let Some(next) = hits.get(i + AHEAD) {
                self.log.prefetch(next.pos);
            }
            if let Some(e) = self
                .log
                .get(h.pos)
                .filter(|e| e.record.is_live() && e.record.id == h.id)
            {
                f(self.view(e));
            }
        }
    }

    /// Removes every event with `timestamp < before`; returns how many.
    pub fn remove_before(&mut self, before: i64) -> u64 {
        let candidates: Vec<(u64, u64)> = self.log.time_candidates(i64::MIN, before - 1).collect();
        let removed_before = self.removed;
        for (start, end) in candidates {
            for pos in start..end {
                if self.live_at(pos, |r| r.timestamp < before).is_some() {
                    self.mark_removed(pos);
                }
            }
        }
        // Release the removed records at the front.
        let (pids, functions) = &mut self.unpruned;
        while self
            .log
            .record(self.log.front())
            .is_some_and(|r| !r.is_live())
        {
            self.log.pop_front(|r| {
                pids.push(r.pid_key);
                if r.fun_key != NONE {
                    functions.push(r.fun_key);
                }
            });
        }
        self.prune_front();
        self.removed - removed_before
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

    /// Bytes held: records and payload arenas, directory, indexes, boxed links.
    pub fn memory_bytes(&self) -> usize {
        self.log.memory_bytes()
            + self.directory.memory_bytes()
            + self.pids.memory_bytes()
            + self.functions.memory_bytes()
            + self.links_heap
            + self.history.memory_bytes()
    }
}

fn sort_by_id(hits: &mut [Hit], order: Order) {
    let sorted = match order {
        Order::Asc => hits.is_sorted_by_key(|h| h.id),
        Order::Desc => hits.is_sorted_by_key(|h| std::cmp::Reverse(h.id)),
    };
    if !sorted {
        match order {
            Order::Asc => hits.sort_unstable_by_key(|h| h.id),
            Order::Desc => hits.sort_unstable_by_key(|h| std::cmp::Reverse(h.id)),
        }
    }
}

/// The first (or last) `limit` hits of a posting list, by arrival (the
/// records a few entries ahead prefetched).
fn posting_hits(
    log: &Log,
    list: &std::collections::VecDeque<u32>,
    limit: usize,
    order: Order,
    hit: impl Fn(u64) -> Option<Hit>,
) -> Vec<Hit> {
    const AHEAD: usize = 6;
    let front = log.front();
    let n = list.len();
    let at = |i: usize| {
        if let Some(&ahead) = list.get(i + AHEAD) {
            log.prefetch(directory::widen(ahead, front));
        }
        hit(directory::widen(list[i], front))
    };
    match order {
        Order::Asc => (0..n).filter_map(at).take(limit).collect(),
        Order::Desc => (0..n)
            .rev()
            .filter_map(|i| {
                if let Some(ahead) = i.checked_sub(AHEAD) {
                    log.prefetch(directory::widen(list[ahead], front));
                }
                hit(directory::widen(list[i], front))
            })
            .take(limit)
            .collect(),
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
    /// Taken before `store` and `correlator` when both are needed.
    exchange: Mutex<Exchange>,
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
            exchange: Mutex::new(Exchange::default()),
        }
    }

    /// Reserves `n` consecutive ids; returns the first.
    pub fn next_ids(&self, n: u64) -> u64 {
        self.next_id.fetch_add(n, Ordering::Relaxed)
    }

    /// Gives back the reserved ids `start..end` if they are the newest
    /// reservation (no one reserved since); otherwise they stay unused.
    pub fn release_ids(&self, start: u64, end: u64) {
        let _ = self
            .next_id
            .compare_exchange(end, start, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Makes the next id assigned greater than `id` (a store filled from a
    /// saved trace).
    pub fn assign_after(&self, id: u64) {
        self.next_id.fetch_max(id + 1, Ordering::Relaxed);
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
        self.write_as(0, batch, now);
    }

    /// [`write`](Self::write) by worker `writer` (recorded for
    /// [`SharedStore::trace`]).
    pub fn write_as(&self, writer: u32, batch: impl Iterator<Item = Event>, now: i64) {
        self.correlate_each(
            Some(writer),
            batch,
            now,
            |store, event, correlation, patches| {
                let pos = store.append(&event, correlation);
                let missed = patches
                    .drain(..)
                    .filter(|p| !store.patch(p.id, &p.change))
                    .count() as u64;
                store.settle(pos);
                missed
            },
        );
    }

    /// The way the event `id` went through the pipeline; `None` when it
    /// is not stored. `now` is monotonic ns.
    pub fn trace(&self, id: u64, now: i64) -> Option<EventTrace> {
        let ttl = self.correlator.lock().config().ttl_ns;
        self.store.read().trace(id, now, ttl)
    }

    /// Correlates events without storing them (for callers that keep their
    /// own); patches to events in the store are applied.
    pub fn correlate_only(&self, events: Vec<Event>, now: i64) -> Vec<StoredEvent> {
        let mut out: Vec<StoredEvent> = Vec::with_capacity(events.len());
        self.correlate_each(
            None,
            events.into_iter(),
            now,
            |store, event, correlation, patches| {
                out.push(StoredEvent { event, correlation });
                let mut missed = 0;
                for p in patches.drain(..) {
                    // A patch may also target an event of this same call.
                    match out.iter_mut().find(|s| s.event.id == p.id) {
                        Some(s) => p.change.apply(&mut s.correlation),
                        None => missed += u64::from(!store.patch(p.id, &p.change)),
                    }
                }
                missed
            },
        );
        out
    }

    /// The one correlation loop, under both locks (a `writer`'s batch is
    /// recorded in the store's history): gives each event an id
    /// when it has none, correlates it, and hands it with its patches to
    /// `keep`, which returns how many patches found no target (counted).
    fn correlate_each(
        &self,
        writer: Option<u32>,
        events: impl Iterator<Item = Event>,
        now: i64,
        mut keep: impl FnMut(&mut Store, Event, Correlation, &mut Vec<Patch>) -> u64,
    ) {
        let mut store = self.store.write();
        if let Some(writer) = writer {
            store.begin_batch(writer, now);
        }
        let mut correlator = self.correlator.lock();
        let mut patches = Vec::new();
        let mut missed = 0;
        for mut event in events {
            if event.id == 0 {
                event.id = self.next_ids(1);
            }
            let correlation = correlator.correlate(&event, now, &mut patches);
            missed += keep(&mut store, event, correlation, &mut patches);
        }
        store.enforce_bound();
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
            chain.push(s);
        }
        chain.reverse();
        chain
    }

    /// Applies links to events on other nodes, `LINK_CHUNK` at a time
    /// under the write lock (the workers, who store under it, wait at most
    /// that long for a round's links): each `(id, kind, node, remote_id,
    /// confidence)` links `id` to event `remote_id` on the node whose atom
    /// word is `node` (kind `RemoteReceives` or `RemoteReceivedBy`),
    /// setting the confidence if given. Returns how many took: not those
    /// whose `id` is no longer stored or whose target cannot be packed
    /// (see [`crate::remote`]).
    pub fn link_remote_all(
        &self,
        links: impl IntoIterator<Item = (u64, LinkKind, u64, u64, Option<f32>)>,
    ) -> usize {
        const LINK_CHUNK: usize = 1024;
        let mut links = links.into_iter().peekable();
        let mut applied = 0;
        let mut targets = crate::remote::Targets::default();
        while links.peek().is_some() {
            let mut store = self.store.write();
            for (id, kind, node, remote_id, confidence) in links.by_ref().take(LINK_CHUNK) {
                let Some(target) = targets.target(node, remote_id) else {
                    continue;
                };
                let link = Link { kind, target };
                applied += usize::from(store.set_side_link(id, link, confidence));
            }
        }
        applied
    }

    /// This store's side of the cluster exchange (see [`crate::cross_node`]).
    pub fn exchange(&self) -> parking_lot::MutexGuard<'_, Exchange> {
        self.exchange.lock()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_support::event;
    use crate::payload::Payload;

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
        let mut store = store_with(5, (1..=12).map(|i| (i, 7, i as i64)));
        let s = store.stats();
        assert_eq!((s.stored, s.retained, s.evicted), (12, 5, 7));
        assert_eq!(ids(&store.recent(100)), vec![12, 11, 10, 9, 8]);
        assert_eq!(
            ids(&store.by_pid(7, 100, Order::Asc)),
            vec![8, 9, 10, 11, 12]
        );
        // Evicted entries wait for the next prune (after PRUNE_AFTER evictions).
        assert_eq!(store.pids.positions(&7).unwrap().1.len(), 12);
        store.prune_front();
        assert_eq!(store.pids.positions(&7).unwrap().1.len(), 5, "index pruned");
        assert_eq!(
            ids(&store.by_time(0, 100, 100, Order::Asc)),
            vec![8, 9, 10, 11, 12]
        );
        assert!(store.get(7).is_none());
    }

    #[test]
    fn large_stores_evict_exactly_and_prune_every_index() {
        // pids 1..=4 and two functions interleaved.
        let mut store = Store::new(StoreConfig { max_events: 6400 });
        for id in 1..=10_000u64 {
            let mut e = event(id % 4 + 1, id as i64);
            e.id = id;
            e.function = id % 2;
            store.insert(StoredEvent::uncorrelated(e));
        }
        let s = store.stats();
        assert_eq!((s.retained, s.evicted), (6400, 3600), "{s:?}");
        let oldest = 10_000 - s.retained + 1;
        let listed = |store: &Store| -> usize {
            (1..=4)
                .map(|p| store.pids.positions(&p).unwrap().1.len())
                .sum()
        };
        assert!(
            listed(&store) < 6400 + PRUNE_AFTER,
            "pruned every PRUNE_AFTER evictions"
        );
        store.prune_front();
        let by_pid: usize = (1..=4)
            .map(|p| store.pids.positions(&p).unwrap().1.len())
            .sum();
        assert_eq!(
            by_pid as u64, s.retained,
            "no evicted event left in the pid index"
        );
        let by_fun: usize = (0..=1)
            .map(|f| store.functions.positions(&(0x10b, f)).unwrap().1.len())
            .sum();
        assert_eq!(by_fun as u64, s.retained);
        let first = store.by_pid(oldest % 4 + 1, 1, Order::Asc);
        assert_eq!(ids(&first), vec![oldest]);
    }

    #[test]
    fn late_arrival_is_held_and_the_oldest_arrival_goes() {
        let mut store = store_with(3, (2..=6).map(|i| (i, 7, i as i64)));
        let mut late = event(7, 1);
        late.id = 1;
        store.insert(StoredEvent::uncorrelated(late));
        let s = store.stats();
        assert_eq!(s.stored, s.retained + s.evicted + s.removed);
        assert_eq!(s.retained, 3);
        assert_eq!(ids(&store.recent(10)), vec![6, 5, 1]);
        assert_eq!(store.get(1).unwrap().event.timestamp, 1);
    }

    #[test]
    fn removals_in_the_middle_keep_the_log_within_twice_the_bound() {
        let mut store = Store::new(StoreConfig { max_events: 100 });
        for id in 1..=10_000u64 {
            // The first event is recent and stays; every later one carries
            // an old timestamp and is removed at once, its record left
            // behind the first.
            let mut e = event(id % 7, if id == 1 { 1_000 } else { 1 });
            e.id = id;
            store.insert(StoredEvent::uncorrelated(e));
            store.remove_before(2);
            assert!(store.log.len() <= 200, "{} positions held", store.log.len());
        }
        let s = store.stats();
        assert_eq!(s.stored, s.retained + s.evicted + s.removed);
        assert_eq!(
            (s.retained, s.evicted),
            (0, 1),
            "the first went to make room"
        );
    }

    #[test]
    fn the_bound_counts_events_held_not_ids_assigned() {
        // Three of every four ids never arrive (dropped before the store).
        let n = 40_000u64;
        let store = store_with(10_000, (1..=n).map(|i| (4 * i, i % 100, i as i64)));
        let s = store.stats();
        assert_eq!((s.retained, s.evicted), (10_000, n - 10_000));
        assert_eq!(store.get(4 * n).unwrap().event.id, 4 * n);
        assert!(store.get(4 * n - 1).is_none());
        assert!(store.get(4 * (n - 10_000)).is_none(), "evicted");
        let below = store_with(30_000, (1..=30_000u64).map(|i| (i, i % 100, i as i64)));
        let (gappy, dense) = (
            s.memory_bytes as f64,
            below.stats().memory_bytes as f64 / 3.0,
        );
        assert!(
            gappy < dense * 1.3,
            "gaps cost little: {gappy} bytes vs {dense} for as many dense events"
        );
    }

    #[test]
    fn a_trace_tells_the_writer_the_time_and_what_the_correlator_did() {
        use crate::event::EventKind as K;
        let config = CorrelatorConfig {
            ttl_ns: 1_000,
            ..CorrelatorConfig::default()
        };
        let shared = SharedStore::with_correlator(StoreConfig::default(), config);
        let (server, client) = (0x103, 0x203);
        let message = |kind, pid, peer, body: u8, id| {
            let mut e = event(pid, 1);
            (e.kind, e.id, e.data, e.peer) =
                (kind, id, Payload::from_bytes(&[body]), Payload::pid(peer));
            e
        };
        let mut call = event(client, 1);
        let mut ret = event(client, 2);
        ret.kind = K::FunctionReturn;
        (call.id, ret.id) = (1, 2);
        shared.write_as(3, [call, ret].into_iter(), 100);
        // A receive stored before its send; a send never received.
        shared.write_as(
            4,
            [message(K::MessageReceive, server, client, 7, 4)].into_iter(),
            200,
        );
        shared.write_as(
            5,
            [
                message(K::MessageSend, client, server, 7, 3),
                message(K::MessageSend, client, server, 8, 5),
            ]
            .into_iter(),
            300,
        );
        let trace = |id, now| shared.trace(id, now).unwrap();
        let t = trace(2, 400);
        assert_eq!(
            (t.writer, t.storage_time, t.ingestion_time),
            (3, 100, Some(2))
        );
        assert_eq!(t.attempts, [Attempt::MatchedAtOnce(1)]);
        assert_eq!(trace(1, 400).partner, Some(2));
        assert_eq!(trace(1, 400).attempts, [Attempt::NoPartnerExpected]);
        let receive = trace(4, 400);
        assert_eq!(receive.writer, 4);
        assert_eq!(
            receive.attempts,
            [Attempt::WaitedAsPending, Attempt::PatchedLater(3)]
        );
        assert_eq!(trace(3, 400).attempts, [Attempt::MatchedAtOnce(4)]);
        assert_eq!(
            trace(5, 400).attempts,
            [Attempt::WaitedAsPending, Attempt::StillPending]
        );
        assert_eq!(
            trace(5, 300 + 2_000).attempts,
            [Attempt::WaitedAsPending, Attempt::Expired]
        );
        assert!(shared.trace(99, 400).is_none());
    }

    #[test]
    fn a_pair_is_found_from_either_half_whatever_the_arrival_order() {
        let shared = SharedStore::new(StoreConfig::default());
        let (server, client) = (0x103, 0x203);
        let msg = Payload::from_bytes(&[5, 1, 2]);
        let mut receive = event(server, 2);
        receive.kind = crate::event::EventKind::MessageReceive;
        receive.data = msg.clone();
        receive.peer = Payload::pid(client);
        let mut send = event(client, 1);
        send.kind = crate::event::EventKind::MessageSend;
        send.data = msg;
        send.peer = Payload::pid(server);
        (send.id, receive.id) = (1, 2);
        // The receive is stored first (another shard), then patched.
        shared.write([receive].into_iter(), 0);
        assert!(shared.read().by_correlation(1).is_empty());
        shared.write([send].into_iter(), 0);
        let pair = shared.read().by_correlation(1);
        assert_eq!(ids(&pair), vec![1, 2]);
        assert_eq!(pair[1].correlation.correlation_id, 1);
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

    /// A round's links are written a chunk at a time under the lock:
    /// every one of thousands takes, across the chunks' edges.
    #[test]
    fn remote_links_past_one_lock_chunk_all_take() {
        let shared = SharedStore::new(StoreConfig { max_events: 5000 });
        let mut events: Vec<Event> = (1..=3000).map(|ts| event(1, ts)).collect();
        for (i, e) in events.iter_mut().enumerate() {
            e.id = i as u64 + 1;
        }
        shared.write(events.into_iter(), 0);
        let node = 0x77b;
        let links = (1..=3001).map(|id| (id, LinkKind::RemoteReceives, node, id + 7, None));
        assert_eq!(shared.link_remote_all(links), 3000, "3001 is not stored");
        let s = shared.read();
        for id in [1, 1024, 1025, 2048, 2049, 3000] {
            let target = crate::remote::target(node, id + 7).unwrap();
            let link = Link {
                kind: LinkKind::RemoteReceives,
                target,
            };
            assert!(s.get(id).unwrap().correlation.links.contains(&link), "{id}");
        }
    }

    #[test]
    fn remote_links_are_kept_beside_their_events_and_read_with_them() {
        let shared = SharedStore::new(StoreConfig { max_events: 4 });
        let mut events: Vec<Event> = (1..=3).map(|ts| event(1, ts)).collect();
        for (i, e) in events.iter_mut().enumerate() {
            e.id = i as u64 + 1;
        }
        shared.write(events.into_iter(), 0);
        let node = 0x77b;
        let applied = shared.link_remote_all([
            (1, LinkKind::RemoteReceivedBy, node, 5, None),
            (2, LinkKind::RemoteReceives, node, 4, Some(0.5)),
            (99, LinkKind::RemoteReceives, node, 4, Some(1.0)),
        ]);
        assert_eq!(applied, 2, "event 99 is not stored");
        let remote = |kind, id| Link {
            kind,
            target: crate::remote::target(node, id).unwrap(),
        };
        let s = shared.read();
        let (one, two) = (s.get(1).unwrap(), s.get(2).unwrap());
        let sent = remote(LinkKind::RemoteReceivedBy, 5);
        assert!(one.correlation.links.contains(&sent));
        assert_eq!(
            one.correlation.confidence,
            s.get(3).unwrap().correlation.confidence
        );
        assert!(two
            .correlation
            .links
            .contains(&remote(LinkKind::RemoteReceives, 4)));
        assert_eq!(two.correlation.confidence, 0.5);
        assert!(s.trace(1, 0, 1).unwrap().links.contains(&sent));
        drop(s);
        // Evicted with its event.
        let mut more: Vec<Event> = (4..=9).map(|ts| event(1, ts)).collect();
        for (i, e) in more.iter_mut().enumerate() {
            e.id = i as u64 + 4;
        }
        shared.write(more.into_iter(), 0);
        assert!(shared.read().get(1).is_none());
        assert_eq!(
            shared.link_remote_all([(1, LinkKind::RemoteReceives, node, 4, None)]),
            0
        );
    }

    #[test]
    fn memory_per_small_event_is_bounded() {
        let n = 100_000u64;
        let store = store_with(n as usize, (1..=n).map(|i| (i, i % 64, i as i64)));
        let per_event = store.memory_bytes() as f64 / n as f64;
        assert!(per_event <= 128.0, "{per_event} bytes per event");
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
