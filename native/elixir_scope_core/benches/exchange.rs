//! Exchange bench: a cluster link round's native cost against the drain's,
//! two nodes in one process, without the VM and its noise.
//!
//! Run: `./setup.sh bench-exchange` (or `cargo bench -p elixir_scope_core
//! --bench exchange`). Env: `EXCHANGE_CALLS` (calls per round, default
//! 50_000), `EXCHANGE_ROUNDS` (default 7; medians are printed).
//!
//! The workload of `bench/cluster.exs`: a process on node A calls a
//! server on node B (`GenServer.call`: the request to B's pid, the reply
//! to a process alias on A), every message distinct; four message events
//! per call, all crossing nodes. A writer thread stores them into each
//! node's store (correlate, set the crossing halves aside, index, store)
//! in batches of 100, as a worker does: that is the drain, timed. Then
//! the round runs on this thread, reading what the writer wrote, as the
//! exchange's NIFs do: each node takes its sends for the other
//! (`take`), each links its receives (`link`), each applies its link
//! backs (`back`). Keys come from maps (`round::MapKeys`), not the VM,
//! and no byte crosses a distribution: the figure is the round's native
//! work, to set against the drain's. Stores are the default (1M events),
//! so after a few rounds they are full and recycle their memory, as a
//! traced node's does.
//!
//! Three runs: one round after each round's traffic, as at a session's
//! stop; then periodic rounds as a session runs them, each taking only
//! the halves older than its cutoff while the traffic of the last rounds
//! stays set aside (the default `link_every: 1000` against the one-second
//! settling time: one round's traffic; `link_every: 200`: five rounds').
//! Last, the drain alone outside cluster sessions, on nodes that know
//! their name (as from a trace session's start) and on nodes that do not.

use std::time::{Duration, Instant};

use elixir_scope_core::cross_node::round::{self, MapKeys};
use elixir_scope_core::cross_node::wire::{etf_key, node_key, LinkBack, LinkBackBatch};
use elixir_scope_core::cross_node::{external_bytes, LocalNode};
use elixir_scope_core::event::{Event, EventKind};
use elixir_scope_core::hash::WordMap;
use elixir_scope_core::payload::{tag, varint, Payload};
use elixir_scope_core::store::{SharedStore, StoreConfig};

const A: u64 = 0x40b;
const B: u64 = 0x50b;
const CALLER: u64 = 0x103;
const SERVER: u64 = 0x203;

/// An `EXTERNAL` payload: a pid (or a reference, a process alias) of
/// node `name`, told apart by `n`.
fn external(name: &[u8], reference: bool, n: u32) -> Payload {
    let mut etf = vec![131];
    etf.extend_from_slice(if reference { &[90, 0, 3] } else { &[88] });
    etf.extend_from_slice(&[119, name.len() as u8]);
    etf.extend_from_slice(name);
    etf.extend_from_slice(&n.to_be_bytes());
    // A pid's serial and creation; a reference's creation and ids.
    etf.extend_from_slice(if reference { &[0; 12] } else { &[0; 8] });
    let mut p = vec![tag::EXTERNAL];
    varint::push(&mut p, etf.len() as u64);
    p.extend(etf);
    Payload::from_bytes(&p)
}

fn atom(word: u64) -> Payload {
    let mut p = vec![tag::ATOM];
    varint::push(&mut p, word);
    Payload::from_bytes(&p)
}

/// `{:req, n}`.
fn request(n: u64) -> Payload {
    let mut b = vec![tag::TUPLE, 2, tag::ATOM];
    varint::push(&mut b, 0x60b);
    b.push(tag::INT);
    varint::push(&mut b, varint::zigzag(n as i64));
    Payload::from_bytes(&b)
}

fn message(id: u64, pid: u64, kind: EventKind, peer: Payload, n: u64) -> Event {
    Event {
        id,
        timestamp: id as i64,
        wall_time: id as i64,
        pid,
        module: 0,
        function: 0,
        arity: u8::MAX,
        kind,
        ingest_stamped: true,
        data: request(n),
        peer,
        // A distinct phash2 per message, as the tracer takes it.
        fingerprint: (n as u32).wrapping_mul(0x9E37_79B1).max(1),
    }
}

fn node(atom: u64, name: &str) -> SharedStore {
    let store = SharedStore::new(StoreConfig::default());
    (store.correlator()).collect_crossing_as(LocalNode::new(atom, name.as_bytes()));
    store
}

/// The events of `calls` calls from `first` on: A's (call sent, reply
/// received) and B's (call received, reply sent), ids interleaved as one
/// id space would give them.
fn workload(first: u64, calls: u64, server: &Payload) -> (Vec<Event>, Vec<Event>) {
    use EventKind::*;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..calls {
        let (id, n) = (first + 4 * i, first / 4 + i);
        let alias = external(b"a@h", true, n as u32);
        a.push(message(id, CALLER, MessageSend, server.clone(), 2 * n));
        b.push(message(id + 1, SERVER, MessageReceive, atom(A), 2 * n));
        b.push(message(id + 2, SERVER, MessageSend, alias, 2 * n + 1));
        a.push(message(id + 3, CALLER, MessageReceive, atom(B), 2 * n + 1));
    }
    (a, b)
}

/// Stores `events` into `store` in batches of 100, on another thread.
fn drain(store: &SharedStore, events: Vec<Event>) -> Duration {
    std::thread::scope(|s| {
        s.spawn(|| {
            let started = Instant::now();
            let mut events = events.into_iter().peekable();
            while events.peek().is_some() {
                store.write(events.by_ref().take(100), 0);
            }
            started.elapsed()
        })
        .join()
        .expect("the writer")
    })
}

struct Figures {
    drain: Duration,
    take: Duration,
    link: Duration,
    back: Duration,
}

fn one_round(
    a: &SharedStore,
    b: &SharedStore,
    first: u64,
    calls: u64,
    before: i64,
    expect: usize,
) -> Figures {
    let server = external(b"b@h", false, 1);
    let (events_a, events_b) = workload(first, calls, &server);
    let drain = drain(a, events_a) + drain(b, events_b);
    let server_key = etf_key(external_bytes(server.as_bytes()).expect("external"));
    let atoms = [(A, node_key(b"a@h")), (B, node_key(b"b@h"))];
    let mut keys_a = MapKeys::new(atoms, []);
    // B's server keys as the external form of its pid that A sends to.
    let mut keys_b = MapKeys::new(atoms, [(SERVER, server_key)]);
    let concat = |(head, body): round::Parts| [head.as_slice(), body].concat();

    let started = Instant::now();
    let to_b = round::take_sends(&mut keys_a, a, node_key(b"b@h"), before, concat);
    let to_a = round::take_sends(&mut keys_b, b, node_key(b"a@h"), before, concat);
    let take = started.elapsed();

    let started = Instant::now();
    let none = WordMap::default();
    let on_b = round::link(&mut keys_b, b, &[(A, &to_b)], &none, before).expect("whole");
    let on_a = round::link(&mut keys_a, a, &[(B, &to_a)], &none, before).expect("whole");
    let link = started.elapsed();
    assert_eq!((on_a.linked, on_b.linked), (expect, expect));
    let backs = |l: &round::Linked| {
        l.backs
            .first()
            .map_or_else(|| LinkBackBatch::default().encode(), |b| b.1.encode())
    };
    let (back_to_a, back_to_b) = (backs(&on_b), backs(&on_a));

    let started = Instant::now();
    let applied = round::link_back(a, B, &back_to_a).expect("whole")
        + round::link_back(b, A, &back_to_b).expect("whole");
    let back = started.elapsed();
    assert_eq!(applied, 2 * expect);
    assert_eq!(LinkBack::decode(&back_to_a).count(), expect);
    Figures {
        drain,
        take,
        link,
        back,
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `rounds` measured rounds of `calls` calls each on two new nodes,
/// with the halves of the last `settle` rounds left set aside (younger
/// than each round's cutoff), and prints their medians under `label`.
fn run(label: &str, calls: u64, rounds: usize, settle: u64) {
    let events = 4 * calls;
    let (a, b) = (node(A, "a@h"), node(B, "b@h"));
    let first = |r: u64| 1 + r * events;
    // The first `settle` rounds take nothing: their halves are young.
    let runs: Vec<Figures> = (0..rounds as u64 + settle)
        .map(|r| match r.checked_sub(settle) {
            Some(old) => {
                let before = first(old + 1) as i64;
                one_round(&a, &b, first(r), calls, before, calls as usize)
            }
            None => one_round(&a, &b, first(r), calls, 0, 0),
        })
        .skip(settle as usize)
        .collect();
    let per_event = |f: fn(&Figures) -> Duration| {
        let mut ns: Vec<f64> = runs
            .iter()
            .map(|r| f(r).as_nanos() as f64 / events as f64)
            .collect();
        ns.sort_by(f64::total_cmp);
        ns[rounds / 2]
    };
    let drain = per_event(|r| r.drain);
    let (take, link, back) = (
        per_event(|r| r.take),
        per_event(|r| r.link),
        per_event(|r| r.back),
    );
    let total = per_event(|r| r.take + r.link + r.back);
    // What the exchange gave up, as EventCorrelator.metrics/1 counts it.
    let dropped: u64 = [&a, &b]
        .iter()
        .map(|s| {
            let ex = s.exchange();
            ex.skipped + ex.matcher.stats().dropped + s.correlator().crossing().dropped
        })
        .sum();
    let linked: u64 = [&a, &b]
        .iter()
        .map(|s| s.exchange().matcher.stats().linked)
        .sum();
    println!("{label}:");
    println!("  drain (correlate, set aside, index, store): {drain:.1} ns per event");
    println!(
        "  link round, native: {total:.1} ns per event = {:.1}% of the drain \
         (take {take:.1}, link {link:.1}, link backs {back:.1})",
        100.0 * total / drain
    );
    println!(
        "  linked {linked} of {} messages, dropped {dropped}",
        2 * calls * rounds as u64
    );
}

/// The drain alone, outside a cluster session (nothing set aside), on
/// stores that know their node (`named`, as after a trace session's
/// start) or not: its median per event.
fn drain_outside_sessions(calls: u64, rounds: usize, named: bool) -> f64 {
    let events = 4 * calls;
    let store = |atom, name: &str| {
        let store = SharedStore::new(StoreConfig::default());
        if named {
            let node = LocalNode::new(atom, name.as_bytes());
            store.correlator().set_local_node(Some(node));
        }
        store
    };
    let (a, b) = (store(A, "a@h"), store(B, "b@h"));
    let server = external(b"b@h", false, 1);
    let mut ns: Vec<f64> = (0..rounds as u64)
        .map(|r| {
            let (events_a, events_b) = workload(1 + r * events, calls, &server);
            let drain = drain(&a, events_a) + drain(&b, events_b);
            drain.as_nanos() as f64 / events as f64
        })
        .collect();
    ns.sort_by(f64::total_cmp);
    ns[rounds / 2]
}

fn main() {
    let calls = env("EXCHANGE_CALLS", 50_000);
    let rounds = env("EXCHANGE_ROUNDS", 7) as usize;
    println!(
        "exchange bench: {calls} calls from node A to a server on node B per round \
         ({} message events, all crossing nodes), medians of {rounds} rounds",
        4 * calls
    );
    run(
        "one round after the traffic (as at a session's stop)",
        calls,
        rounds,
        0,
    );
    run(
        "periodic rounds, a round's traffic younger than the cutoff (link_every: 1000, the default)",
        calls,
        rounds,
        1,
    );
    run(
        "periodic rounds, five rounds' traffic younger than the cutoff (link_every: 200)",
        calls / 5,
        rounds,
        5,
    );
    println!(
        "outside cluster sessions, the drain alone: {:.1} ns per event on nodes named \
         (by a trace session: their messages with the other node counted, none kept); \
         {:.1} on nodes not named (each such half waits in the local matcher for good)",
        drain_outside_sessions(calls, rounds, true),
        drain_outside_sessions(calls, rounds, false),
    );
}
