//! Native diagnostics reach the log queue from the threads they happen on
//! (a binary of its own: the queue is the process's global subscriber).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::clock;

use elixir_scope_core::capture::limits::{Limits, LimitsConfig, StopReason};
use elixir_scope_core::faults::Fault;
use elixir_scope_core::logs::{self, LogRecord};
use elixir_scope_core::pipeline::{Pipeline, PipelineConfig};
use elixir_scope_core::store::{SharedStore, StoreConfig};

/// Waits for a record with `message`, gathering what comes before it.
fn wait_for(seen: &mut Vec<LogRecord>, message: &str) -> LogRecord {
    let queue = logs::install().expect("the first subscriber of this binary");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        seen.extend(queue.take(100));
        if let Some(r) = seen.iter().find(|r| r.message.starts_with(message)) {
            return r.clone();
        }
        assert!(Instant::now() < deadline, "no {message:?} in {seen:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn field<'r>(r: &'r LogRecord, name: &str) -> &'r str {
    &r.fields.iter().find(|(k, _)| *k == name).expect("field").1
}

#[test]
fn breaker_trips_shedding_worker_panics_and_trace_stops_are_logged() {
    logs::install().expect("installed");
    let mut seen = Vec::new();
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let config = PipelineConfig {
        breaker_threshold: 1,
        breaker_timeout: Duration::from_millis(20),
        ..Default::default()
    };
    let p = Pipeline::start(config, store, vec![], clock).unwrap();

    p.inject_fault(Fault::Fail { batches: 1 });
    p.ingest(vec![common::event(0x13, 1)]);
    let opened = wait_for(&mut seen, "store circuit breaker opened");
    assert_eq!(opened.level, tracing::Level::WARN);
    assert_eq!(field(&opened, "trips"), "1");
    wait_for(&mut seen, "store circuit breaker closed");

    p.set_shedding(0.5);
    let started = wait_for(&mut seen, "load shedding started");
    assert_eq!(field(&started, "fraction"), "0.5");
    p.set_shedding(0.0);
    wait_for(&mut seen, "load shedding stopped");

    p.inject_fault(Fault::PanicAt { batches: 1, at: 0 });
    p.ingest(vec![common::event(0x13, 2)]);
    let panicked = wait_for(&mut seen, "a store write panicked");
    assert_eq!(panicked.level, tracing::Level::ERROR);

    let config = LimitsConfig {
        max_events: 10,
        rate: None,
        deadline: i64::MAX,
    };
    let limits = Limits::new(config, 0);
    limits.stop(StopReason::MaxEvents);
    let stopped = wait_for(&mut seen, "trace session stopped");
    assert_eq!(field(&stopped, "reason"), "MaxEvents");
}
