//! Fault injection for tests: make the next store writes panic or fail.
//!
//! Armed only through `Pipeline::inject_fault` (hidden from the docs, used
//! by the fault tests); when nothing is armed the check is one relaxed load.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next `batches` batch writes panic just before their event at
    /// index `at` (a worker panic mid-batch).
    PanicAt { batches: u32, at: usize },
    /// The next `batches` batch writes fail before writing anything.
    Fail { batches: u32 },
}

#[derive(Default)]
pub struct Faults {
    panics: AtomicU32,
    panic_at: AtomicUsize,
    failures: AtomicU32,
}

impl Faults {
    pub fn arm(&self, fault: Fault) {
        match fault {
            Fault::PanicAt { batches, at } => {
                self.panic_at.store(at, Ordering::Relaxed);
                self.panics.store(batches, Ordering::Release);
            }
            Fault::Fail { batches } => self.failures.store(batches, Ordering::Release),
        }
    }

    fn take(counter: &AtomicU32) -> bool {
        counter.load(Ordering::Relaxed) > 0
            && counter
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
    }

    /// Whether this batch write must fail.
    pub fn take_failure(&self) -> bool {
        Self::take(&self.failures)
    }

    /// The index before which this batch write must panic, if any.
    pub fn take_panic(&self) -> Option<usize> {
        Self::take(&self.panics).then(|| self.panic_at.load(Ordering::Relaxed))
    }
}
