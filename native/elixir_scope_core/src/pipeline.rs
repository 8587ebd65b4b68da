//! Pipeline: ring shards + worker pool + a store, and their accounting.
//!
//! Routing: an ingested event goes to ingest shard `mix(pid) % shards`, so
//! all events of one pid share a shard and keep their order. Rings handed in
//! by the user (`attach`) are extra shards written directly by their owner.
//!
//! Leases: a shard is drained only by the worker holding its `lease`
//! (`try_lock`, never waited on). A batch taken from the ring stays under
//! the lease until every event of it is written (a failed or panicking
//! write leaves the rest for the next try), so per shard, events reach the
//! store in ring order, exactly once. An idle worker simply drains
//! whichever shard is free; a worker that finds a store write in progress
//! backs off rather than queue on the store's lock (writes are serialized).
//! Store writes pass a circuit breaker ([`crate::breaker`]).
//!
//! Flush: `completed` is the ring position below which every event is either
//! stored or counted as dropped. `flush_targets` samples the write positions;
//! the pipeline is flushed up to them once every `completed` reaches them.
//!
//! Accounting invariant (exact when quiescent, checked by tests):
//! `ingested = stored + dropped + queued`, where
//! `ingested = invalid + shed + Σ ring writes + Σ ring rejections`,
//! `dropped = invalid + shed + rejected + overwritten + lost_in_panic` and
//! `queued = Σ ring len + in_flight`. Shed events (see [`crate::shedding`])
//! never reach a ring.

use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

use crate::breaker::{Breaker, BreakerState, BreakerStats};
use crate::dead_letters::{DeadLetter, DeadLetters};
use crate::event::{Event, EventHeader};
use crate::faults::{Fault, Faults};
use crate::hash::mix;
use crate::histogram::Snapshot;
use crate::metrics::{Totals, Window, Windows};
use crate::pool::{Pool, PoolError, WorkerStats, WorkerStatsSnapshot};
use crate::ring::{check_size, Overflow, Pushed, Ring, RingError, RingStats};
use crate::shedding::Shedder;
use crate::store::SharedStore;
use crate::wakeup::Wakeup;

/// Malformed events kept (the newest) for `Debug.Layer2.dead_letters`.
pub const DEAD_LETTERS: usize = 1000;

/// Metric windows summed into the "recent" figures.
pub const METRIC_WINDOWS: usize = 10;

/// Monotonic clock in ns, the BEAM's in production.
pub type Clock = fn() -> i64;

#[derive(Clone, Debug, PartialEq)]
pub struct PipelineConfig {
    /// Ingest shards (rings owned by the pipeline).
    pub shards: usize,
    /// Slots per ingest ring (power of 2).
    pub ring_size: usize,
    pub overflow: Overflow,
    /// Most events a worker takes from a shard per batch.
    pub batch_size: usize,
    pub min_workers: usize,
    pub max_workers: usize,
    /// Workers started with the pipeline.
    pub workers: usize,
    /// Longest sleep of an idle worker.
    pub max_idle_sleep: Duration,
    /// Failed store writes in a row that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before a probe write.
    pub breaker_timeout: Duration,
}

impl PipelineConfig {
    fn breaker_timeout_ns(&self) -> i64 {
        self.breaker_timeout.as_nanos().min(i64::MAX as u128) as i64
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            shards: 8,
            ring_size: 32_768,
            overflow: Overflow::DropNewest,
            batch_size: 1000,
            min_workers: 2,
            max_workers: 16,
            workers: 2,
            max_idle_sleep: Duration::from_millis(10),
            breaker_threshold: 5,
            breaker_timeout: Duration::from_secs(60),
        }
    }
}

/// Why a pipeline could not be built or changed.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum ConfigError {
    Ring(RingError),
    NoShards,
    BadWorkerBounds,
    BadBatchSize,
    /// Shard count, ring size and overflow policy cannot change while running.
    FixedAtStart,
}

pub(crate) struct Shard {
    /// Read by producers on every push.
    ring: Arc<Ring<Event>>,
    /// Written by workers (on every event written): on cache lines of its
    /// own, so producers reading `ring` never miss because of it.
    state: CachePadded<ShardState>,
}

struct ShardState {
    /// The lease; it guards the batch taken from the ring and not yet
    /// (fully) written, which is retried before anything newer.
    lease: Mutex<Taken>,
    completed: AtomicU64,
}

/// A batch taken from a shard's ring, reversed (the next event to write is
/// the last), and the ring position just past it.
#[derive(Default)]
struct Taken {
    events: Vec<Event>,
    position: u64,
}

pub(crate) struct Core {
    shards: Vec<Shard>,
    ingest_shards: usize,
    store: Arc<SharedStore>,
    clock: Clock,
    batch_size: AtomicUsize,
    max_idle_sleep_us: AtomicU64,
    invalid: AtomicU64,
    stored: AtomicU64,
    in_flight: AtomicU64,
    lost_in_panic: AtomicU64,
    batches: AtomicU64,
    /// Read by producers on every push: kept off the lines the workers'
    /// counters above are written on.
    shedder: CachePadded<Shedder>,
    breaker: Breaker,
    faults: Faults,
    pub(crate) wakeup: Wakeup,
}

/// A worker's id (recorded with each batch it writes) and reusable buffer:
/// ingest timestamps of the events it wrote.
#[derive(Default)]
pub(crate) struct Buffers {
    worker: u32,
    stamps: Vec<i64>,
}

impl Buffers {
    pub(crate) fn for_worker(id: u64) -> Buffers {
        Buffers {
            worker: id as u32,
            stamps: Vec::new(),
        }
    }
}

/// What one sweep over the shards did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Events stored.
    pub stored: u64,
    /// A shard gave a whole batch (or a batch left from a failed write), so
    /// more may be queued behind it: sweep again without a pause.
    pub backlog: bool,
}

impl Core {
    /// One pass over all shards from `start`.
    pub(crate) fn sweep(&self, start: usize, buffers: &mut Buffers, stats: &WorkerStats) -> Swept {
        let n = self.shards.len();
        (0..n).fold(Swept::default(), |acc, i| {
            let s = self.drain(&self.shards[(start + i) % n], buffers, stats);
            Swept {
                stored: acc.stored + s.stored,
                backlog: acc.backlog || s.backlog,
            }
        })
    }

    /// Writes the shard's unwritten batch, or a new one from its ring, while
    /// holding its lease (so per shard, events reach the store in order).
    fn drain(&self, shard: &Shard, buffers: &mut Buffers, stats: &WorkerStats) -> Swept {
        let Some(mut taken) = shard.state.lease.try_lock() else {
            return Swept::default();
        };
        if self.store.is_writing() {
            // Writes are serialized: another worker is writing and drains
            // every shard in turn; waiting on the lock would only cost
            // context switches. (Checked before the breaker, so a half-open
            // probe is never taken and then left unused.)
            return Swept::default();
        }
        if !self.breaker.allow(self.clock) {
            // Open: events wait in the (bounded, counting) rings.
            return Swept::default();
        }
        // A batch left from a failed write is backlog too.
        let mut backlog = !taken.events.is_empty();
        if taken.events.is_empty() {
            let batch_size = self.batch_size.load(Ordering::Relaxed);
            taken.position = shard.ring.pop_batch(batch_size, &mut taken.events);
            if taken.events.is_empty() {
                shard
                    .state
                    .completed
                    .fetch_max(taken.position, Ordering::Release);
                self.breaker.abandon_probe();
                return Swept::default();
            }
            backlog = taken.events.len() == batch_size;
            self.in_flight
                .fetch_add(taken.events.len() as u64, Ordering::Relaxed);
            taken.events.reverse();
        }
        let started = Instant::now();
        let stored = self.write(&mut taken.events, buffers, stats);
        if taken.events.is_empty() {
            shard
                .state
                .completed
                .fetch_max(taken.position, Ordering::Release);
            self.batches.fetch_add(1, Ordering::Relaxed);
        }
        if stored > 0 {
            stats.record_batch(stored, started.elapsed());
        }
        Swept { stored, backlog }
    }

    /// Hands events to the store, from the end of `events`, until it is
    /// empty or a write fails. A panic in the store costs at most the event
    /// being written (counted as lost unless it was stored); the rest stays
    /// in `events` for the next attempt, so nothing is written twice.
    /// Returns events stored.
    fn write(&self, events: &mut Vec<Event>, buffers: &mut Buffers, stats: &WorkerStats) -> u64 {
        let before = events.len();
        let writer = buffers.worker;
        let stamps = &mut buffers.stamps;
        stamps.clear();
        let mut current = 0u64;
        let panic_at = self.faults.take_panic();
        let fail = self.faults.take_failure();
        let result = catch_unwind(AssertUnwindSafe(|| {
            if fail {
                return Err(());
            }
            let mut i = 0;
            let batch = std::iter::from_fn(|| {
                if panic_at == Some(i) {
                    // Unwinds like a panic, without the panic hook's report.
                    std::panic::resume_unwind(Box::new("injected worker panic"));
                }
                let mut e = events.pop()?;
                if e.id == 0 {
                    e.id = self.store.next_ids(1);
                }
                current = e.id;
                i += 1;
                if e.ingest_stamped {
                    stamps.push(e.timestamp);
                }
                Some(e)
            });
            self.store.write_as(writer, batch, (self.clock)());
            Ok(())
        }));
        let now = (self.clock)();
        let taken = (before - events.len()) as u64;
        let mut lost = 0;
        match result {
            Ok(Ok(())) => self.breaker.success(),
            Ok(Err(())) => self.breaker.failure(now),
            Err(_) => {
                stats.record_panic();
                self.breaker.failure(now);
                lost = u64::from(taken > 0 && self.store.read().get(current).is_none());
                tracing::error!(
                    event_id = current,
                    lost,
                    "a store write panicked; the rest of its batch is retried"
                );
            }
        }
        self.in_flight.fetch_sub(taken, Ordering::Relaxed);
        self.lost_in_panic.fetch_add(lost, Ordering::Relaxed);
        self.stored.fetch_add(taken - lost, Ordering::Relaxed);
        stats
            .latency
            .record_all(stamps.iter().map(|&ts| (now - ts).max(0) as u64));
        taken - lost
    }

    /// True when a sweep now could store something: the store is not being
    /// written by another worker, the breaker is closed, and some shard
    /// with queued events is free to lease.
    pub(crate) fn has_work(&self) -> bool {
        !self.store.is_writing()
            && self.breaker.state() == BreakerState::Closed
            && self
                .shards
                .iter()
                .any(|s| !s.ring.is_empty() && !s.state.lease.is_locked())
    }

    pub(crate) fn max_idle_sleep(&self) -> Duration {
        Duration::from_micros(self.max_idle_sleep_us.load(Ordering::Relaxed))
    }
}

/// A running pipeline. Dropping it stops its workers.
pub struct Pipeline {
    core: Arc<Core>,
    pool: Pool,
    config: Mutex<PipelineConfig>,
    windows: Mutex<Windows>,
    dead_letters: DeadLetters,
}

/// An ingest in progress; see [`Pipeline::begin_ingest`]. Dropping it (or
/// [`finish`](IngestBatch::finish)) gives back the ids it reserved and did
/// not use, when no other ingest reserved ids since, and wakes a worker if
/// all are parked.
pub struct IngestBatch<'p> {
    pipeline: &'p Pipeline,
    /// Next reserved id, and the end of the reservation.
    next: u64,
    end: u64,
    waiting: bool,
    out: Ingested,
}

impl IngestBatch<'_> {
    /// Gives `event` the next id and queues it on its pid's shard; returns
    /// the id, or why it was refused (shard full under drop-newest, or its
    /// process shed).
    pub fn push(&mut self, event: Event) -> Result<u64, Refused> {
        self.queue(event.pid, |slot, id| {
            slot.write(Event { id, ..event });
        })
    }

    /// [`push`](Self::push) of the event `header` describes, with `fill`
    /// encoding its payloads in its ring slot once the slot is claimed (so
    /// their bytes are written once). A panic in `fill` is caught; the
    /// event keeps the (valid, possibly partial) payloads it had, and the
    /// ring stays usable.
    #[inline(always)]
    pub fn push_with(
        &mut self,
        header: EventHeader,
        fill: impl FnOnce(&mut Event),
    ) -> Result<u64, Refused> {
        self.queue(header.pid, |slot, id| {
            let event = slot.write(header.into_event(id));
            let _ = catch_unwind(AssertUnwindSafe(|| fill(event)));
        })
    }

    /// Makes this the ingest of a producer that waits for room rather than
    /// lose events: it is never shed, and a full shard refuses its event
    /// (`Refused::Full`, whatever the overflow policy) without counting a
    /// drop, for the producer to offer it again.
    pub fn waiting(mut self) -> Self {
        self.waiting = true;
        self
    }

    /// Queues on `pid`'s shard the event `write` initializes in its slot,
    /// with the next id (taken once the slot is claimed, so an event the
    /// ring refuses takes no id). `write` must not panic.
    #[inline(always)]
    fn queue(
        &mut self,
        pid: u64,
        write: impl FnOnce(&mut MaybeUninit<Event>, u64),
    ) -> Result<u64, Refused> {
        if !self.waiting && self.pipeline.core.shedder.sheds(pid) {
            self.out.shed += 1;
            return Err(Refused::Shed);
        }
        let ring = &self.pipeline.shard_for(pid).ring;
        let (next, end, store) = (&mut self.next, &mut self.end, &self.pipeline.core.store);
        let mut id = 0;
        let fill = |slot: &mut MaybeUninit<Event>| {
            if *next == *end {
                // More events than expected: reserve one more id.
                *next = store.next_ids(1);
                *end = *next + 1;
            }
            id = *next;
            *next += 1;
            write(slot, id)
        };
        let pushed = if self.waiting {
            ring.try_push_with(fill)
        } else {
            ring.push_with(fill)
        };
        match pushed {
            Pushed::Stored { overwritten, .. } => {
                self.out.accepted += 1;
                self.out.overwritten += overwritten;
                Ok(id)
            }
            Pushed::Rejected => {
                self.out.rejected += u64::from(!self.waiting);
                Err(Refused::Full)
            }
        }
    }

    pub fn finish(self) -> Ingested {
        self.out
    }
}

impl Drop for IngestBatch<'_> {
    fn drop(&mut self) {
        let core = &self.pipeline.core;
        if self.next != self.end {
            core.store.release_ids(self.next, self.end);
        }
        if self.out.accepted > 0 {
            core.wakeup.work_queued();
        }
    }
}

/// Why an event was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its shard was full (drop-newest).
    Full,
    /// Its process is being shed.
    Shed,
}

/// Outcome of an ingest call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Events now queued.
    pub accepted: u64,
    /// Events rejected because their shard was full (drop-newest).
    pub rejected: u64,
    /// Older events displaced to make room (drop-oldest).
    pub overwritten: u64,
    /// Events of shed processes.
    pub shed: u64,
}

/// Counters and gauges of a pipeline.
#[derive(Clone, Debug, Default)]
pub struct PipelineStats {
    pub ingested: u64,
    pub stored: u64,
    pub queued: u64,
    pub in_flight: u64,
    pub invalid: u64,
    pub rejected: u64,
    pub overwritten: u64,
    pub lost_in_panic: u64,
    pub shed: u64,
    /// Share of processes being shed (0 = not shedding).
    pub shedding: f64,
    pub batches: u64,
    pub workers: usize,
    pub worker_panics: u64,
    /// Fullest shard's utilization (0..=1).
    pub buffer_utilization: f64,
    pub shard_utilization: Vec<f64>,
    pub ring_memory_bytes: u64,
    /// Ring-to-store latency (ns) of events stamped at ingest.
    pub latency: Snapshot,
    /// Time workers spent draining batches (ns), over the pipeline's life.
    pub busy_ns: u64,
}

impl PipelineStats {
    pub fn dropped(&self) -> u64 {
        self.invalid + self.rejected + self.overwritten + self.lost_in_panic + self.shed
    }
}

impl Pipeline {
    /// Builds the pipeline and starts `config.workers` workers. `attached`
    /// rings are drained too (their owners write to them directly).
    pub fn start(
        config: PipelineConfig,
        store: Arc<SharedStore>,
        attached: Vec<Arc<Ring<Event>>>,
        clock: Clock,
    ) -> Result<Pipeline, ConfigError> {
        validate(&config)?;
        let mut rings = Vec::with_capacity(config.shards + attached.len());
        for _ in 0..config.shards {
            rings.push(Arc::new(
                Ring::new(config.ring_size, config.overflow).map_err(ConfigError::Ring)?,
            ));
        }
        rings.extend(attached);
        let shards = rings
            .into_iter()
            .map(|ring| Shard {
                state: CachePadded::new(ShardState {
                    completed: AtomicU64::new(ring.read_position()),
                    lease: Mutex::new(Taken::default()),
                }),
                ring,
            })
            .collect();
        let core = Arc::new(Core {
            shards,
            ingest_shards: config.shards,
            store,
            clock,
            batch_size: AtomicUsize::new(config.batch_size),
            max_idle_sleep_us: AtomicU64::new(config.max_idle_sleep.as_micros() as u64),
            invalid: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            lost_in_panic: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            shedder: CachePadded::new(Shedder::default()),
            breaker: Breaker::new(config.breaker_threshold, config.breaker_timeout_ns()),
            faults: Faults::default(),
            wakeup: Wakeup::default(),
        });
        let pool = Pool::new(config.max_workers);
        for _ in 0..config.workers {
            pool.spawn(&core)
                .expect("workers <= max_workers was validated");
        }
        Ok(Pipeline {
            core,
            pool,
            config: Mutex::new(config),
            windows: Mutex::new(Windows::new(METRIC_WINDOWS)),
            dead_letters: DeadLetters::new(DEAD_LETTERS),
        })
    }

    /// Stops all workers now (queued events stay in the rings).
    pub fn stop(&self) {
        self.pool.stop_all();
    }

    pub fn store(&self) -> &Arc<SharedStore> {
        &self.core.store
    }

    pub fn config(&self) -> PipelineConfig {
        self.config.lock().clone()
    }

    fn shard_for(&self, pid: u64) -> &Shard {
        // Multiply-shift maps the hash onto 0..shards without a division.
        let n = self.core.ingest_shards as u128;
        &self.core.shards[((mix(pid) as u128 * n) >> 64) as usize]
    }

    /// Starts an ingest of about `expected` events: reserves that many ids
    /// up front (one atomic add), then [`IngestBatch::push`] queues events in
    /// order. Ids go only to events a ring took; reserved ids left unused
    /// are given back unless another ingest reserved ids meanwhile, in which
    /// case they stay as gaps: ids are unique and increasing, not dense.
    pub fn begin_ingest(&self, expected: usize) -> IngestBatch<'_> {
        let next = self.core.store.next_ids(expected as u64);
        IngestBatch {
            pipeline: self,
            next,
            end: next + expected as u64,
            waiting: false,
            out: Ingested::default(),
        }
    }

    /// Assigns ids (in order) and queues the events on their pid's shard.
    pub fn ingest(&self, events: Vec<Event>) -> Ingested {
        let mut batch = self.begin_ingest(events.len());
        for event in events {
            let _ = batch.push(event); // counted in the outcome
        }
        batch.finish()
    }

    /// Refuses a malformed event: counted as invalid, kept as a dead letter.
    pub fn refuse(&self, letter: DeadLetter) {
        self.core.invalid.fetch_add(1, Ordering::Relaxed);
        self.dead_letters.push(letter);
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }

    /// Write positions of every shard now; see [`Pipeline::is_flushed`].
    pub fn flush_targets(&self) -> Vec<u64> {
        self.pool.wake_all();
        self.core
            .shards
            .iter()
            .map(|s| s.ring.write_position())
            .collect()
    }

    /// True once every event queued before `targets` was taken is stored
    /// (or counted as dropped).
    pub fn is_flushed(&self, targets: &[u64]) -> bool {
        let done = self
            .core
            .shards
            .iter()
            .zip(targets)
            .all(|(s, &t)| s.state.completed.load(Ordering::Acquire) >= t);
        if !done {
            self.pool.wake_all();
        }
        done
    }

    pub fn spawn_worker(&self) -> Result<u64, PoolError> {
        self.pool.spawn(&self.core)
    }

    pub fn remove_worker(&self, id: u64) -> Result<(), PoolError> {
        self.pool.remove(id)
    }

    /// Starts or stops workers until there are `n`.
    pub fn scale_workers(&self, n: usize) -> Result<(), PoolError> {
        let config = self.config.lock();
        if n < 1 || n > config.max_workers {
            return Err(PoolError::OutOfBounds);
        }
        self.pool.scale_to(&self.core, n)
    }

    pub fn worker_ids(&self) -> Vec<u64> {
        self.pool.ids()
    }

    pub fn worker_stats(&self, id: u64) -> Option<WorkerStatsSnapshot> {
        self.pool.stats(id)
    }

    /// Applies the live-changeable settings: batch size, idle sleep, worker
    /// bounds (shard count, ring size and overflow are fixed at start).
    pub fn update(&self, change: impl FnOnce(&mut PipelineConfig)) -> Result<(), ConfigError> {
        let mut config = self.config.lock();
        let mut next = config.clone();
        change(&mut next);
        validate(&next)?;
        if (next.shards, next.ring_size, next.overflow)
            != (config.shards, config.ring_size, config.overflow)
        {
            return Err(ConfigError::FixedAtStart);
        }
        self.core
            .batch_size
            .store(next.batch_size, Ordering::Relaxed);
        self.core
            .max_idle_sleep_us
            .store(next.max_idle_sleep.as_micros() as u64, Ordering::Relaxed);
        self.pool.set_max_workers(next.max_workers);
        self.core
            .breaker
            .configure(next.breaker_threshold, next.breaker_timeout_ns());
        *config = next;
        Ok(())
    }

    pub fn ring_stats(&self) -> Vec<RingStats> {
        self.core.shards.iter().map(|s| s.ring.stats()).collect()
    }

    pub fn stats(&self) -> PipelineStats {
        let c = &self.core;
        // Read what comes later in the flow first, so a concurrent batch is
        // never counted twice.
        let stored = c.stored.load(Ordering::SeqCst);
        let in_flight = c.in_flight.load(Ordering::SeqCst);
        let rings = self.ring_stats();
        let mut s = PipelineStats {
            stored,
            in_flight,
            invalid: c.invalid.load(Ordering::Relaxed),
            lost_in_panic: c.lost_in_panic.load(Ordering::Relaxed),
            shed: c.shedder.shed(),
            shedding: c.shedder.fraction(),
            batches: c.batches.load(Ordering::Relaxed),
            workers: self.pool.len(),
            ..Default::default()
        };
        for r in &rings {
            s.rejected += r.rejected;
            s.overwritten += r.overwritten;
            s.queued += r.available;
            s.ingested += r.total_writes + r.rejected;
            s.shard_utilization.push(r.utilization());
            s.ring_memory_bytes += r.memory_bytes;
        }
        s.ingested += s.invalid + s.shed;
        s.queued += in_flight;
        s.buffer_utilization = s.shard_utilization.iter().cloned().fold(0.0, f64::max);
        let totals = self.pool.totals();
        s.latency = totals.latency;
        s.worker_panics = totals.panics;
        s.busy_ns = totals.busy_ns;
        s
    }

    /// The store write path's circuit breaker.
    pub fn breaker(&self) -> BreakerStats {
        self.core.breaker.stats()
    }

    /// Test hook: makes the next store writes panic or fail.
    #[doc(hidden)]
    pub fn inject_fault(&self, fault: Fault) {
        self.core.faults.arm(fault);
    }

    /// Sheds `fraction` (0..=1) of the processes from now on; 0 stops.
    pub fn set_shedding(&self, fraction: f64) {
        self.core.shedder.set(fraction);
    }

    /// Closes the current metrics window; returns it and the sum of the
    /// last [`METRIC_WINDOWS`] windows (see [`crate::metrics`]).
    pub fn metrics_tick(&self) -> (Window, Window) {
        let pool = self.pool.totals();
        let now = Totals {
            at: (self.core.clock)(),
            stored: self.core.stored.load(Ordering::Relaxed),
            batches: self.core.batches.load(Ordering::Relaxed),
            correlated: self.core.store.correlator().correlated(),
            busy_ns: pool.busy_ns,
            latency: pool.latency,
        };
        self.windows.lock().tick(now)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.pool.stop_all();
    }
}

fn validate(config: &PipelineConfig) -> Result<(), ConfigError> {
    if config.shards == 0 {
        return Err(ConfigError::NoShards);
    }
    if config.min_workers == 0
        || config.min_workers > config.max_workers
        || config.workers > config.max_workers
    {
        return Err(ConfigError::BadWorkerBounds);
    }
    if config.batch_size == 0 {
        return Err(ConfigError::BadBatchSize);
    }
    check_size(config.ring_size).map_err(ConfigError::Ring)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_support::event;
    use crate::store::StoreConfig;

    #[test]
    fn a_sweep_reports_backlog_while_a_shard_gives_whole_batches() {
        let config = PipelineConfig {
            batch_size: 10,
            min_workers: 1,
            workers: 1,
            ..PipelineConfig::default()
        };
        let store = Arc::new(SharedStore::new(StoreConfig::default()));
        let pipeline = Pipeline::start(config, store, vec![], || 0).unwrap();
        // Swept by hand from here.
        pipeline.stop();
        // One process: one shard, 25 events.
        pipeline.ingest((0..25).map(|t| event(7, t)).collect());
        let sweep = || {
            pipeline
                .core
                .sweep(0, &mut Buffers::default(), &WorkerStats::default())
        };
        let swept = |stored, backlog| Swept { stored, backlog };
        assert_eq!(sweep(), swept(10, true));
        assert_eq!(sweep(), swept(10, true));
        assert_eq!(sweep(), swept(5, false));
        assert_eq!(sweep(), swept(0, false));
        assert_eq!(pipeline.stats().stored, 25);
    }
}
