//! Store NIFs: create, query, clean up, write directly.

use std::sync::Arc;

use rustler::{Encoder, Env, NifResult, ResourceArc, Term};

use elixir_scope_core::correlator::CorrelatorConfig;
use elixir_scope_core::event::EventView;
use elixir_scope_core::store::{Attempt, Hit, Order, Select, SharedStore, StoreConfig};
use parking_lot::Mutex;

use crate::atoms;
use crate::codec::event::{decode_list, link_term, StructEncoder};
use crate::codec::word;
use crate::resources::{CursorRes, StoreRes};

/// The correlation part of `ElixirScope.Config.Layer2`.
#[derive(rustler::NifMap)]
struct CorrelationConfig {
    ttl_seconds: u64,
    cleanup_interval_ms: u64,
    max_correlation_depth: usize,
    max_entries: usize,
}

impl CorrelationConfig {
    fn to_core(&self) -> CorrelatorConfig {
        CorrelatorConfig {
            ttl_ns: (self.ttl_seconds as i64).saturating_mul(1_000_000_000),
            cleanup_interval_ns: (self.cleanup_interval_ms as i64).saturating_mul(1_000_000),
            max_depth: self.max_correlation_depth,
            max_entries: self.max_entries,
        }
    }
}

#[rustler::nif]
fn store_new(max_events: usize, correlation: CorrelationConfig) -> ResourceArc<StoreRes> {
    ResourceArc::new(StoreRes(Arc::new(SharedStore::with_correlator(
        StoreConfig { max_events },
        correlation.to_core(),
    ))))
}

#[rustler::nif]
fn store_set_correlation(
    store: ResourceArc<StoreRes>,
    correlation: CorrelationConfig,
) -> rustler::Atom {
    store.0.correlator().set_config(correlation.to_core());
    atoms::ok()
}

#[rustler::nif]
fn store_set_max_events(store: ResourceArc<StoreRes>, max_events: usize) -> rustler::Atom {
    store.0.lock().set_max_events(max_events);
    atoms::ok()
}

#[rustler::nif]
fn store_stats(env: Env, store: ResourceArc<StoreRes>) -> Term {
    let s = store.0.read().stats();
    crate::atom_map!(env, {
        "stored" => s.stored,
        "retained" => s.retained,
        "evicted" => s.evicted,
        "removed" => s.removed,
        "memory_bytes" => s.memory_bytes,
        "max_events" => s.max_events,
        "assigned_ids" => store.0.assigned(),
    })
}

pub(crate) fn order(t: Term) -> Order {
    if t.as_c_arg() == atoms::desc().as_c_arg() {
        Order::Desc
    } else {
        Order::Asc
    }
}

/// Events read per hold of the store's read lock when building a result:
/// a large result never keeps the workers from writing for long.
const READ_CHUNK: usize = 4096;

/// The events of `hits` still held, as a list of `%CorrelatedEvent{}`.
pub(crate) fn read<'a>(env: Env<'a>, store: &SharedStore, hits: &[Hit]) -> Term<'a> {
    read_as(env, store, hits, StructEncoder::stored)
}

/// The events of `hits` still held, each built by `build`.
fn read_as<'a>(
    env: Env<'a>,
    store: &SharedStore,
    hits: &[Hit],
    build: impl for<'v> Fn(&StructEncoder<'a>, &EventView<'v>) -> Term<'a>,
) -> Term<'a> {
    let encoder = StructEncoder::new(env);
    let mut terms = Vec::with_capacity(hits.len());
    for chunk in hits.chunks(READ_CHUNK) {
        store
            .read()
            .visit(chunk, |v| terms.push(build(&encoder, &v)));
    }
    encoder.list(terms.into_iter())
}

fn select(store: &SharedStore, what: Select, limit: usize, ord: Term) -> Vec<Hit> {
    store.read().select(what, limit, order(ord))
}

#[rustler::nif]
fn store_get(env: Env, store: ResourceArc<StoreRes>, id: u64) -> Term {
    match store.0.read().get(id) {
        Some(s) => (atoms::ok(), StructEncoder::new(env).stored(&s.view())).encode(env),
        None => (atoms::error(), atoms::not_found()).encode(env),
    }
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_recent(env: Env, store: ResourceArc<StoreRes>, n: usize) -> Term {
    let hits = store.0.read().select(Select::Recent, n, Order::Desc);
    read(env, &store.0, &hits)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_by_pid<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    pid: Term<'a>,
    limit: usize,
    ord: Term<'a>,
) -> Term<'a> {
    let hits = select(&store.0, Select::Pid(word(pid.as_c_arg())), limit, ord);
    read(env, &store.0, &hits)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_by_function<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    module: rustler::Atom,
    function: rustler::Atom,
    limit: usize,
    ord: Term<'a>,
) -> Term<'a> {
    let what = Select::Function(word(module.as_c_arg()), word(function.as_c_arg()));
    let hits = select(&store.0, what, limit, ord);
    read(env, &store.0, &hits)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_by_time<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    from: i64,
    to: i64,
    limit: usize,
    ord: Term<'a>,
) -> Term<'a> {
    let hits = select(&store.0, Select::Time { from, to }, limit, ord);
    read(env, &store.0, &hits)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_by_correlation(env: Env, store: ResourceArc<StoreRes>, id: u64) -> Term {
    let hits = store
        .0
        .read()
        .select(Select::Correlation(id), usize::MAX, Order::Asc);
    read(env, &store.0, &hits)
}

/// `Debug.Layer2.trace_event/2`: the event's way through the pipeline.
#[rustler::nif]
fn store_trace_event(env: Env, store: ResourceArc<StoreRes>, id: u64) -> Term {
    crate::clock::calibrate();
    let Some(t) = store.0.trace(id, crate::clock::monotonic_ns()) else {
        return (atoms::error(), atoms::not_found()).encode(env);
    };
    let nil = atoms::nil().encode(env);
    let attempts: Vec<Term> = t
        .attempts
        .iter()
        .map(|a| match *a {
            Attempt::NoPartnerExpected => atoms::no_partner_expected().encode(env),
            Attempt::MatchedAtOnce(id) => (atoms::matched_at_once(), id).encode(env),
            Attempt::WaitedAsPending => atoms::waited_as_pending().encode(env),
            Attempt::PatchedLater(0) => atoms::patched_later().encode(env),
            Attempt::PatchedLater(id) => (atoms::patched_later(), id).encode(env),
            Attempt::StillPending => atoms::still_pending().encode(env),
            Attempt::Expired => atoms::expired().encode(env),
            Attempt::Orphaned => atoms::orphaned().encode(env),
        })
        .collect();
    let links: Vec<Term> = t.links.iter().map(|&l| link_term(env, l)).collect();
    let worker = match t.writer {
        0 => atoms::direct().encode(env),
        w => w.encode(env),
    };
    let trace = crate::atom_map!(env, {
        "ingestion_time" => t.ingestion_time.map_or(nil, |ts| ts.encode(env)),
        "processing_worker" => worker,
        "storage_time" => t.storage_time,
        "correlated_at" => t.correlated_at,
        "correlation_attempts" => attempts,
        "final_correlations" => crate::atom_map!(env, {
            "correlation_id" => t.correlation_id,
            "partner" => t.partner.map_or(nil, |p| p.encode(env)),
            "confidence" => t.confidence as f64,
            "links" => links,
        }),
    });
    (atoms::ok(), trace).encode(env)
}

/// What `DataAccess.stream/1` selects: `:recent`, `{:pid, pid}`,
/// `{:function, m, f}` or `{:time, from, to}` (checked on the Elixir side).
fn selection(t: Term) -> NifResult<Select> {
    if t.as_c_arg() == atoms::recent().as_c_arg() {
        return Ok(Select::Recent);
    }
    if let Ok((tag, pid)) = t.decode::<(rustler::Atom, Term)>() {
        if tag == atoms::pid() {
            return Ok(Select::Pid(word(pid.as_c_arg())));
        }
    }
    if let Ok((tag, m, f)) = t.decode::<(rustler::Atom, rustler::Atom, rustler::Atom)>() {
        if tag == atoms::function() {
            return Ok(Select::Function(word(m.as_c_arg()), word(f.as_c_arg())));
        }
    }
    if let Ok((tag, from, to)) = t.decode::<(rustler::Atom, i64, i64)>() {
        if tag == atoms::time() {
            return Ok(Select::Time { from, to });
        }
    }
    Err(rustler::Error::BadArg)
}

/// Selects a query's events (ids and positions only) for reading in
/// chunks with [`cursor_next`].
#[rustler::nif(schedule = "DirtyCpu")]
fn store_select<'a>(
    store: ResourceArc<StoreRes>,
    what: Term<'a>,
    limit: usize,
    ord: Term<'a>,
) -> NifResult<ResourceArc<CursorRes>> {
    let hits = select(&store.0, selection(what)?, limit, ord);
    Ok(ResourceArc::new(CursorRes {
        store: store.0.clone(),
        hits: Mutex::new((hits, 0)),
    }))
}

/// The next `n` selected events still held (`[]` once all were read).
#[rustler::nif(schedule = "DirtyCpu")]
fn cursor_next(env: Env, cursor: ResourceArc<CursorRes>, n: usize) -> Term {
    next_chunk(env, &cursor, n, StructEncoder::stored)
}

/// As `cursor_next/2`, each event as a flat tuple (see
/// `StructEncoder::compact`), for `ElixirScope.Cluster` to send.
#[rustler::nif(schedule = "DirtyCpu")]
fn cursor_next_compact(env: Env, cursor: ResourceArc<CursorRes>, n: usize) -> Term {
    next_chunk(env, &cursor, n, StructEncoder::compact)
}

/// `[{node, %CorrelatedEvent{}}]` of the tuples `cursor_next_compact/2`
/// made on `node`, their timestamps moved by `-offset` (onto the calling
/// node's clock).
#[rustler::nif(schedule = "DirtyCpu")]
fn expand_compact<'a>(
    env: Env<'a>,
    compact: Vec<Term<'a>>,
    node: rustler::Atom,
    offset: i64,
) -> NifResult<Term<'a>> {
    let encoder = StructEncoder::new(env);
    let node = node.encode(env);
    let events = compact
        .into_iter()
        .map(|t| {
            let event = encoder.expand(t, offset).ok_or(rustler::Error::BadArg)?;
            Ok((node, event).encode(env))
        })
        .collect::<NifResult<Vec<_>>>()?;
    Ok(encoder.list(events.into_iter()))
}

fn next_chunk<'a>(
    env: Env<'a>,
    cursor: &CursorRes,
    n: usize,
    build: impl for<'v> Fn(&StructEncoder<'a>, &EventView<'v>) -> Term<'a> + Copy,
) -> Term<'a> {
    let mut guard = cursor.hits.lock();
    let (hits, at) = &mut *guard;
    loop {
        let end = (*at + n.max(1)).min(hits.len());
        let chunk = &hits[*at..end];
        *at = end;
        let events = read_as(env, &cursor.store, chunk, build);
        // A chunk whose events were all evicted since is skipped, so `[]`
        // means the end.
        if !events.is_empty_list() || *at == hits.len() {
            return events;
        }
    }
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_remove_before(store: ResourceArc<StoreRes>, before: i64) -> u64 {
    store.0.lock().remove_before(before)
}

/// Writes events straight into the store (ids assigned here).
#[rustler::nif(schedule = "DirtyCpu")]
fn store_write<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    events: Term<'a>,
    max_payload: usize,
) -> Term<'a> {
    let Some((good, bad)) = decode_list(events, max_payload) else {
        return (atoms::error(), atoms::not_a_list()).encode(env);
    };
    let n = good.len();
    store
        .0
        .write(good.into_iter(), crate::clock::monotonic_ns());
    if bad.is_empty() {
        (atoms::ok(), n).encode(env)
    } else {
        (atoms::error(), (atoms::invalid_events(), n, bad)).encode(env)
    }
}
