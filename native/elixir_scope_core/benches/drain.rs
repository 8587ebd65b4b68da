//! Drain bench: how fast one worker thread moves events from the rings into
//! the store (correlate + index + store), with nothing else running.
//!
//! Run: `./setup.sh bench-drain` (or `cargo bench -p elixir_scope_core --bench drain`).
//! Env: `DRAIN_EVENTS` (events per round, default 1_000_000), `DRAIN_ROUNDS`
//! (default 5; the median is printed), `DRAIN_ONLY` (one workload, by
//! name).
//!
//! Each round fills the rings of a pipeline whose workers are stopped, then
//! starts one worker and times it until every event is stored. Pipeline and
//! store use the default config but for the ring size, which is raised so
//! the rings hold the whole round (8 shards x 256k slots): the figure is the
//! worker's, not the producer's. Two figures per workload: into an empty
//! store (which grows, its fresh memory paged in as it fills), and into a
//! full one (a tracer that has run a while: the round evicts as many events
//! as it stores, and the store's memory is recycled). Workloads, over 100
//! processes:
//!
//! * calls: call + return pairs, two levels deep;
//! * mixed: a request/reply between process pairs (send, receive with its
//!   sender known, a call and its return inside the handler, the reply's
//!   send and receive), every message distinct, as `GenServer.call`s are;
//! * one-sided: servers traced without their callers (a request received,
//!   a call and its return, the reply sent): no message finds its other
//!   half, so the correlator holds a million pending halves and evicts.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use elixir_scope_core::event::{Event, EventKind};
use elixir_scope_core::payload::{tag, varint, Payload};
use elixir_scope_core::pipeline::{Pipeline, PipelineConfig};
use elixir_scope_core::store::{SharedStore, StoreConfig};

const PIDS: u64 = 100;

fn clock() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as i64
}

fn pid(n: u64) -> u64 {
    (n + 1) << 4 | 0x3
}

fn atom(n: u64) -> u64 {
    (n + 1) << 6 | 0xb
}

/// `[i, :ok]` in the payload encoding.
fn args(i: u64) -> Payload {
    let mut b = vec![tag::LIST];
    varint::push(&mut b, 2);
    b.push(tag::INT);
    varint::push(&mut b, varint::zigzag(i as i64));
    b.push(tag::ATOM);
    varint::push(&mut b, atom(1));
    b.push(tag::NIL);
    Payload::from_bytes(&b)
}

/// `{:req, n}`: a distinct message.
fn message(n: u64) -> Payload {
    let mut b = vec![tag::TUPLE];
    varint::push(&mut b, 2);
    b.push(tag::ATOM);
    varint::push(&mut b, atom(2));
    b.push(tag::INT);
    varint::push(&mut b, varint::zigzag(n as i64));
    Payload::from_bytes(&b)
}

fn event(kind: EventKind, p: u64, function: u64, data: Payload, peer: Payload) -> Event {
    let call = matches!(
        kind,
        EventKind::FunctionCall | EventKind::FunctionReturn | EventKind::FunctionException
    );
    let now = clock();
    Event {
        id: 0,
        timestamp: now,
        wall_time: now,
        pid: pid(p),
        module: if call { atom(10) } else { 0 },
        function: if call { atom(20 + function) } else { 0 },
        arity: if call { 1 } else { u8::MAX },
        kind,
        ingest_stamped: true,
        data,
        peer,
        fingerprint: 0,
    }
}

/// Call + return pairs, two deep, 4 events per process turn.
fn calls(n: usize) -> Vec<Event> {
    use EventKind::*;
    let mut out = Vec::with_capacity(n);
    let mut i = 0u64;
    while out.len() < n {
        let p = i % PIDS;
        out.push(event(FunctionCall, p, 0, args(i), Payload::empty()));
        out.push(event(FunctionCall, p, 1, args(i), Payload::empty()));
        out.push(event(FunctionReturn, p, 1, args(i), Payload::empty()));
        out.push(event(FunctionReturn, p, 0, args(i), Payload::empty()));
        i += 1;
    }
    out.truncate(n);
    out
}

/// Request/reply between process pairs, 10 events per exchange.
fn mixed(n: usize) -> Vec<Event> {
    use EventKind::*;
    let mut out = Vec::with_capacity(n);
    let mut i = 0u64;
    while out.len() < n {
        let (a, b) = (i % PIDS, (i + 1) % PIDS);
        let (req, rep) = (message(2 * i), message(2 * i + 1));
        let none = Payload::empty;
        out.push(event(FunctionCall, a, 0, args(i), none()));
        out.push(event(MessageSend, a, 0, req.clone(), Payload::pid(pid(b))));
        out.push(event(MessageReceive, b, 0, req, Payload::pid(pid(a))));
        out.push(event(FunctionCall, b, 1, args(i), none()));
        out.push(event(FunctionCall, b, 2, args(i), none()));
        out.push(event(FunctionReturn, b, 2, args(i), none()));
        out.push(event(FunctionReturn, b, 1, args(i), none()));
        out.push(event(MessageSend, b, 0, rep.clone(), Payload::pid(pid(a))));
        out.push(event(MessageReceive, a, 0, rep, Payload::pid(pid(b))));
        out.push(event(FunctionReturn, a, 0, args(i), none()));
        i += 1;
    }
    out.truncate(n);
    out
}

/// Servers traced without their callers (a `GenServer` traced alone):
/// each receives a request from a process not traced, calls and returns,
/// and replies to it; every message distinct. No half finds its other:
/// each waits in the correlator until its bound evicts it.
fn one_sided(n: usize) -> Vec<Event> {
    use EventKind::*;
    let mut out = Vec::with_capacity(n);
    let mut i = 0u64;
    while out.len() < n {
        let (server, caller) = (i % PIDS, PIDS + i % 1000);
        let (req, rep) = (message(2 * i), message(2 * i + 1));
        let none = Payload::empty;
        out.push(event(
            MessageReceive,
            server,
            0,
            req,
            Payload::pid(pid(caller)),
        ));
        out.push(event(FunctionCall, server, 1, args(i), none()));
        out.push(event(FunctionReturn, server, 1, args(i), none()));
        out.push(event(
            MessageSend,
            server,
            0,
            rep,
            Payload::pid(pid(caller)),
        ));
        i += 1;
    }
    out.truncate(n);
    out
}

/// Events/s of one worker draining `events` queued while it was stopped.
fn drain_once(pipeline: &Pipeline, events: Vec<Event>) -> f64 {
    let n = events.len() as u64;
    let stored_before = pipeline.stats().stored;
    pipeline.stop();
    let queued = pipeline.ingest(events);
    assert_eq!(queued.accepted, n, "the rings hold the whole round");
    let targets = pipeline.flush_targets();
    let started = Instant::now();
    pipeline.spawn_worker().expect("one worker");
    while !pipeline.is_flushed(&targets) {
        std::thread::sleep(Duration::from_micros(100));
    }
    let took = started.elapsed();
    assert_eq!(pipeline.stats().stored - stored_before, n);
    n as f64 / took.as_secs_f64()
}

/// One round: the drain rate into an empty store, then into the full
/// store; the retained count and bytes per held event at the end.
fn drain(build: fn(usize) -> Vec<Event>, n: usize) -> (f64, f64, u64, u64) {
    let store = Arc::new(SharedStore::new(StoreConfig::default()));
    let config = PipelineConfig {
        ring_size: 1 << 18,
        // The application's default (`processing.batch_size`).
        batch_size: 100,
        workers: 1,
        min_workers: 1,
        ..PipelineConfig::default()
    };
    let pipeline = Pipeline::start(config, store.clone(), vec![], clock).expect("valid config");
    let empty = drain_once(&pipeline, build(n));
    let full = drain_once(&pipeline, build(n));
    let s = store.read().stats();
    (empty, full, s.retained, s.memory_bytes / s.retained.max(1))
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = env("DRAIN_EVENTS", 1_000_000);
    let rounds = env("DRAIN_ROUNDS", 5);
    println!("drain bench: one worker, {n} events per round, median of {rounds} rounds");
    // Issue 12's target is for calls and mixed; one-sided has none.
    for (name, build, target) in [
        ("calls", calls as fn(usize) -> Vec<Event>, " (target >= 4)"),
        ("mixed", mixed, " (target >= 4)"),
        ("one-sided", one_sided, ""),
    ] {
        if std::env::var("DRAIN_ONLY").is_ok_and(|only| only != name) {
            continue;
        }
        let runs: Vec<(f64, f64, u64, u64)> = (0..rounds).map(|_| drain(build, n)).collect();
        let (_, _, retained, bytes) = runs[0];
        for (label, rate_of) in [
            (
                "into an empty store",
                (|r| r.0) as fn(&(f64, f64, u64, u64)) -> f64,
            ),
            ("into a full store", |r| r.1),
        ] {
            let mut rates: Vec<f64> = runs.iter().map(rate_of).collect();
            rates.sort_by(f64::total_cmp);
            let spread: Vec<String> = rates.iter().map(|r| format!("{:.2}", r / 1e6)).collect();
            println!(
                "  {name}, {label}: {:.2} M events/s{target}, dropped 0   rounds [{}]",
                rates[rounds / 2] / 1e6,
                spread.join(", ")
            );
        }
        println!("  {name}: retained {retained}, {bytes} bytes per held event");
    }
}
