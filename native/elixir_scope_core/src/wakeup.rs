//! Wakeup: idle workers park until work arrives, and producers wake one.
//!
//! Workers count themselves `awake` while they sweep or pause briefly
//! between sweeps. A worker whose sweep found nothing leaves the count,
//! looks once more for work ([`Wakeup::idle`]'s `has_work`) and parks, for
//! at most its backoff. A producer that queued events wakes a parked worker
//! only when no worker is awake ([`Wakeup::work_queued`]): an awake worker
//! reaches every shard within its short pause, so a busy pipeline pays one
//! load per ingest and no system call, and an idle one stores new events
//! within a wake-up's latency instead of a backoff's.
//!
//! No lost wake-up: the worker leaves the count then reads the rings; the
//! producer writes a ring then reads the count (all SeqCst), so at least one
//! of them sees the other. An unpark that comes before the park makes the
//! park return at once.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::thread::Thread;
use std::time::Duration;

use parking_lot::Mutex;

#[derive(Default)]
pub struct Wakeup {
    awake: AtomicUsize,
    parked: Mutex<Vec<Thread>>,
}

impl Wakeup {
    /// A worker starts its loop.
    pub fn started(&self) {
        self.awake.fetch_add(1, SeqCst);
    }

    /// A worker ends its loop.
    pub fn stopped(&self) {
        self.awake.fetch_sub(1, SeqCst);
    }

    /// Parks the calling worker for at most `timeout` unless `has_work`.
    pub fn idle(&self, timeout: Duration, has_work: impl FnOnce() -> bool) {
        let me = std::thread::current();
        self.parked.lock().push(me.clone());
        self.awake.fetch_sub(1, SeqCst);
        if !has_work() {
            std::thread::park_timeout(timeout);
        }
        self.awake.fetch_add(1, SeqCst);
        let mut parked = self.parked.lock();
        if let Some(at) = parked.iter().position(|t| t.id() == me.id()) {
            parked.swap_remove(at);
        }
    }

    /// Events were queued: wakes a parked worker if none is awake.
    #[inline]
    pub fn work_queued(&self) {
        if self.awake.load(SeqCst) == 0 {
            self.wake_one();
        }
    }

    #[cold]
    fn wake_one(&self) {
        let parked = self.parked.lock().pop();
        if let Some(thread) = parked {
            thread.unpark();
        }
    }

    /// Workers awake now.
    pub fn awake(&self) -> usize {
        self.awake.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_parked_worker_is_woken_by_queued_work_not_by_its_timeout() {
        let wakeup = Arc::new(Wakeup::default());
        let work = Arc::new(AtomicBool::new(false));
        let (w, flag) = (wakeup.clone(), work.clone());
        let worker = std::thread::spawn(move || {
            w.started();
            let started = Instant::now();
            while !flag.load(SeqCst) {
                w.idle(Duration::from_secs(10), || flag.load(SeqCst));
            }
            w.stopped();
            started.elapsed()
        });
        while wakeup.parked.lock().is_empty() || wakeup.awake() != 0 {
            std::thread::yield_now();
        }
        work.store(true, SeqCst);
        wakeup.work_queued();
        let waited = worker.join().unwrap();
        assert!(waited < Duration::from_secs(5), "woken after {waited:?}");
        assert_eq!(wakeup.awake(), 0);
        assert!(wakeup.parked.lock().is_empty());
    }

    #[test]
    fn an_awake_worker_is_not_woken() {
        let wakeup = Wakeup::default();
        wakeup.started();
        wakeup.parked.lock().push(std::thread::current());
        wakeup.work_queued();
        assert_eq!(
            wakeup.parked.lock().len(),
            1,
            "nobody taken off the parked list"
        );
    }
}
