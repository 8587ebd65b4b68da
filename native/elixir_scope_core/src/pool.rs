//! Pool: the native worker threads of a pipeline.
//!
//! Each worker loops: sweep every shard once (starting at a shard of its own
//! so workers spread out), taking any free shard's lease; if the sweep found
//! nothing, park until a producer queues work ([`crate::wakeup`]: woken when
//! no worker is awake), at most for an exponential backoff (20 µs doubling
//! up to the pipeline's `max_idle_sleep`); if it found only a trickle
//! (fewer than `FULL_SWEEP` events, and no shard gave a whole batch),
//! sleep `FIRST_IDLE_SLEEP` so events gather into batches instead of the
//! worker chasing producers event by event (which bounces ring cache lines
//! and takes CPU from the schedulers); else sweep again at once. A whole
//! batch means more is queued: one busy process fills one shard, and pausing
//! after each of its batches halved what a worker stored. An idle pipeline
//! therefore costs a wake-up per worker every `max_idle_sleep`, not a spin,
//! and stores a trickle of events within a wake-up's latency.
//! `wake_all` cuts a sleep short (used by flush). Workers run `nice` +5
//! below the VM's threads (Linux): on a contended core the traced code runs
//! first and the rings absorb the wait.
//!
//! A panic inside a sweep is caught; the worker counts it, drops its batch
//! buffers and carries on (a fresh start of its loop), so a bad batch never
//! kills the pool. Stopping is cooperative: a stop flag plus an unpark; the
//! thread ends after its current sweep and owns nothing the pool still needs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use parking_lot::Mutex;

use crate::histogram::{Histogram, Snapshot};
use crate::pipeline::{Buffers, Core};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum PoolError {
    MaxWorkersReached,
    NotFound,
    /// A worker count outside `1..=max_workers`.
    OutOfBounds,
    /// The OS refused a thread.
    SpawnFailed,
}

/// Per-worker counters (written by the worker only).
#[derive(Default)]
pub struct WorkerStats {
    events_processed: AtomicU64,
    batches: AtomicU64,
    current_batch_size: AtomicU64,
    processing_time_ns: AtomicU64,
    panics: AtomicU64,
    pub(crate) latency: Histogram,
}

impl WorkerStats {
    pub(crate) fn record_panic(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_batch(&self, n: u64, took: Duration) {
        self.events_processed.fetch_add(n, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.current_batch_size.store(n, Ordering::Relaxed);
        self.processing_time_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerStatsSnapshot {
    pub id: u64,
    pub events_processed: u64,
    pub batches: u64,
    pub current_batch_size: u64,
    pub processing_time_us: u64,
    pub panics: u64,
}

struct Worker {
    id: u64,
    stop: AtomicBool,
    thread: OnceLock<Thread>,
    stats: WorkerStats,
}

impl Worker {
    fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

pub struct Pool {
    workers: Mutex<Vec<Arc<Worker>>>,
    next_id: AtomicU64,
    max_workers: AtomicUsize,
    /// Panics, latencies and busy time of workers since removed.
    retired_panics: AtomicU64,
    retired_latency: Histogram,
    retired_busy_ns: AtomicU64,
}

/// Cumulative figures of every worker the pool ever had.
pub(crate) struct PoolTotals {
    pub latency: Snapshot,
    pub panics: u64,
    /// Time spent processing batches, summed over workers.
    pub busy_ns: u64,
}

impl Pool {
    pub(crate) fn new(max_workers: usize) -> Pool {
        Pool {
            workers: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            max_workers: AtomicUsize::new(max_workers),
            retired_panics: AtomicU64::new(0),
            retired_latency: Histogram::default(),
            retired_busy_ns: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_max_workers(&self, max: usize) {
        self.max_workers.store(max, Ordering::Relaxed);
    }

    pub(crate) fn spawn(&self, core: &Arc<Core>) -> Result<u64, PoolError> {
        let mut workers = self.workers.lock();
        if workers.len() >= self.max_workers.load(Ordering::Relaxed) {
            return Err(PoolError::MaxWorkersReached);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let worker = Arc::new(Worker {
            id,
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
            stats: WorkerStats::default(),
        });
        let (core, me) = (core.clone(), worker.clone());
        let handle = std::thread::Builder::new()
            .name(format!("elixir_scope_worker_{id}"))
            .spawn(move || run(core, me))
            .map_err(|_| PoolError::SpawnFailed)?;
        let _ = worker.thread.set(handle.thread().clone());
        workers.push(worker);
        Ok(id)
    }

    pub(crate) fn remove(&self, id: u64) -> Result<(), PoolError> {
        let mut workers = self.workers.lock();
        let at = workers
            .iter()
            .position(|w| w.id == id)
            .ok_or(PoolError::NotFound)?;
        let worker = workers.remove(at);
        self.retire(&worker);
        Ok(())
    }

    fn retire(&self, worker: &Worker) {
        worker.stop.store(true, Ordering::Release);
        worker.wake();
        let s = &worker.stats;
        self.retired_panics
            .fetch_add(s.panics.load(Ordering::Relaxed), Ordering::Relaxed);
        self.retired_busy_ns.fetch_add(
            s.processing_time_ns.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        // A batch the worker finishes after this is missing from the
        // latency figures (not from the store).
        self.retired_latency.absorb(&s.latency);
    }

    pub(crate) fn scale_to(&self, core: &Arc<Core>, n: usize) -> Result<(), PoolError> {
        while self.len() < n {
            self.spawn(core)?;
        }
        while self.len() > n {
            let newest = self.workers.lock().last().map(|w| w.id);
            if let Some(id) = newest {
                self.remove(id)?;
            }
        }
        Ok(())
    }

    pub(crate) fn stop_all(&self) {
        for worker in self.workers.lock().drain(..) {
            self.retire(&worker);
        }
    }

    pub(crate) fn wake_all(&self) {
        for worker in self.workers.lock().iter() {
            worker.wake();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.workers.lock().len()
    }

    pub(crate) fn ids(&self) -> Vec<u64> {
        self.workers.lock().iter().map(|w| w.id).collect()
    }

    pub(crate) fn stats(&self, id: u64) -> Option<WorkerStatsSnapshot> {
        let workers = self.workers.lock();
        let w = workers.iter().find(|w| w.id == id)?;
        let s = &w.stats;
        Some(WorkerStatsSnapshot {
            id,
            events_processed: s.events_processed.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            current_batch_size: s.current_batch_size.load(Ordering::Relaxed),
            processing_time_us: s.processing_time_ns.load(Ordering::Relaxed) / 1000,
            panics: s.panics.load(Ordering::Relaxed),
        })
    }

    /// Merged latency histogram and panic count of all workers, past and present.
    pub(crate) fn totals(&self) -> PoolTotals {
        let mut t = PoolTotals {
            latency: Snapshot::default(),
            panics: self.retired_panics.load(Ordering::Relaxed),
            busy_ns: self.retired_busy_ns.load(Ordering::Relaxed),
        };
        self.retired_latency.merge_into(&mut t.latency);
        for w in self.workers.lock().iter() {
            w.stats.latency.merge_into(&mut t.latency);
            t.panics += w.stats.panics.load(Ordering::Relaxed);
            t.busy_ns += w.stats.processing_time_ns.load(Ordering::Relaxed);
        }
        t
    }
}

const FIRST_IDLE_SLEEP: Duration = Duration::from_micros(20);
/// Events in one sweep from which a worker sweeps again without a pause.
const FULL_SWEEP: u64 = 256;

/// How much lower than the VM's threads workers run (`nice` steps).
const WORKER_NICE: i32 = 5;

/// Lowers the calling thread's OS priority by [`WORKER_NICE`], so that
/// when the schedulers and the workers want the same core, the traced
/// code wins and the rings absorb the wait. Linux only (elsewhere, and if
/// the call fails, the thread keeps its priority).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            fn getpriority(which: i32, who: u32) -> i32;
            fn setpriority(which: i32, who: u32, prio: i32) -> i32;
        }
        const PRIO_PROCESS: i32 = 0;
        // On Linux the nice value is per thread, and `who` 0 is the
        // calling thread.
        const CALLING_THREAD: u32 = 0;
        // SAFETY: plain syscalls on the calling thread.
        unsafe {
            let nice = getpriority(PRIO_PROCESS, CALLING_THREAD);
            setpriority(PRIO_PROCESS, CALLING_THREAD, (nice + WORKER_NICE).min(19));
        }
    }
}

fn run(core: Arc<Core>, me: Arc<Worker>) {
    lower_priority();
    core.wakeup.started();
    let fresh = || Buffers::for_worker(me.id);
    let mut buffers = fresh();
    let mut idle = FIRST_IDLE_SLEEP;
    let start = me.id as usize;
    while !me.stop.load(Ordering::Acquire) {
        match catch_unwind(AssertUnwindSafe(|| {
            core.sweep(start, &mut buffers, &me.stats)
        })) {
            Ok(swept) if swept.stored == 0 => {
                core.wakeup
                    .idle(idle, || me.stop.load(Ordering::Acquire) || core.has_work());
                idle = (idle * 2).min(core.max_idle_sleep().max(FIRST_IDLE_SLEEP));
            }
            Ok(swept) => {
                idle = FIRST_IDLE_SLEEP;
                if !swept.backlog && swept.stored < FULL_SWEEP {
                    std::thread::park_timeout(idle);
                }
            }
            Err(_) => {
                // Outside a store write (those are caught in `Core::write`):
                // nothing in flight is lost, the loop starts afresh.
                me.stats.record_panic();
                tracing::error!(worker = me.id, "a worker panicked; its loop starts afresh");
                buffers = fresh();
            }
        }
    }
    core.wakeup.stopped();
}
