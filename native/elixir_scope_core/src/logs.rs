//! Logs: native diagnostics (`tracing` events) kept in a bounded queue.
//!
//! Worker panics, breaker trips, shedding starting or stopping and trace
//! sessions stopping are `tracing` events where they happen. [`install`]
//! makes a [`LogQueue`] the process's global subscriber: each event at INFO
//! or above becomes a [`LogRecord`] (level, message, fields as text) in a
//! queue that the BEAM side drains into Elixir's `Logger`. Recording never
//! blocks the thread that logs (a worker, a traced process's scheduler):
//! when the queue is full or another thread holds it for the instant, the
//! record is dropped and counted.
//!
//! Invariants: the queue holds at most `capacity` records; `dropped`
//! counts every record not queued.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Records the global queue holds before it drops.
pub const CAPACITY: usize = 1024;

/// One native log event.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    pub level: Level,
    pub target: &'static str,
    pub message: String,
    pub fields: Vec<(&'static str, String)>,
}

pub struct LogQueue {
    queue: Mutex<VecDeque<LogRecord>>,
    capacity: usize,
    dropped: AtomicU64,
}

impl LogQueue {
    pub fn new(capacity: usize) -> Self {
        LogQueue {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            dropped: AtomicU64::new(0),
        }
    }

    fn push(&self, record: LogRecord) {
        match self.queue.try_lock() {
            Some(mut q) if q.len() < self.capacity => q.push_back(record),
            _ => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes up to `max` records, oldest first.
    pub fn take(&self, max: usize) -> Vec<LogRecord> {
        let mut q = self.queue.lock();
        let n = max.min(q.len());
        q.drain(..n).collect()
    }

    /// Records dropped so far (queue full or busy).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.fields.push((field.name(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields.push((field.name(), value.to_string()));
    }
}

/// The subscriber: events at INFO and above go to the queue; spans are not
/// used by this crate and are ignored.
struct Forward(&'static LogQueue);

impl Subscriber for Forward {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::INFO
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        self.0.push(LogRecord {
            level: *metadata.level(),
            target: metadata.target(),
            message: fields.message,
            fields: fields.fields,
        });
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

static QUEUE: OnceLock<LogQueue> = OnceLock::new();

/// The global queue, installed as the process's `tracing` subscriber on
/// first call; `None` when another subscriber was installed first.
pub fn install() -> Option<&'static LogQueue> {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| LogQueue::new(CAPACITY));
    let ok =
        *INSTALLED.get_or_init(|| tracing::subscriber::set_global_default(Forward(queue)).is_ok());
    ok.then_some(queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_and_take_drains_in_order() {
        static Q: OnceLock<LogQueue> = OnceLock::new();
        let q = Q.get_or_init(|| LogQueue::new(2));
        tracing::subscriber::with_default(Forward(q), || {
            tracing::warn!(n = 1, "one");
            tracing::debug!("below INFO: not recorded");
            tracing::error!(n = 2, who = "me", "two");
            tracing::info!("three");
        });
        assert_eq!(q.dropped(), 1);
        let records = q.take(10);
        assert_eq!(
            records
                .iter()
                .map(|r| r.message.as_str())
                .collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert_eq!(records[1].level, Level::ERROR);
        assert_eq!(
            records[1].fields,
            [("n", "2".to_string()), ("who", "me".to_string())]
        );
        assert!(q.take(10).is_empty());
    }
}
