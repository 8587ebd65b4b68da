//! Store NIFs: create, query, clean up, write directly.

use std::sync::Arc;

use rustler::{Encoder, Env, ResourceArc, Term};

use elixir_scope_core::correlator::CorrelatorConfig;
use elixir_scope_core::store::{Order, SharedStore, StoreConfig};

use crate::atoms;
use crate::codec::event::{decode_list, encode_stored, encode_stored_list};
use crate::resources::StoreRes;

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

fn order(t: Term) -> Order {
    if t.as_c_arg() == atoms::desc().as_c_arg() {
        Order::Desc
    } else {
        Order::Asc
    }
}

#[rustler::nif]
fn store_get(env: Env, store: ResourceArc<StoreRes>, id: u64) -> Term {
    match store.0.read().get(id) {
        Some(s) => (atoms::ok(), encode_stored(env, &s)).encode(env),
        None => (atoms::error(), atoms::not_found()).encode(env),
    }
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_recent(env: Env, store: ResourceArc<StoreRes>, n: usize) -> Term {
    let events = store.0.read().recent(n);
    encode_stored_list(env, &events)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_by_pid<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    pid: Term<'a>,
    limit: usize,
    ord: Term<'a>,
) -> Term<'a> {
    let events = store
        .0
        .read()
        .by_pid(crate::codec::word(pid.as_c_arg()), limit, order(ord));
    encode_stored_list(env, &events)
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
    let (m, f) = (
        crate::codec::word(module.as_c_arg()),
        crate::codec::word(function.as_c_arg()),
    );
    let events = store.0.read().by_function(m, f, limit, order(ord));
    encode_stored_list(env, &events)
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
    let events = store.0.read().by_time(from, to, limit, order(ord));
    encode_stored_list(env, &events)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn store_by_correlation(env: Env, store: ResourceArc<StoreRes>, id: u64) -> Term {
    let events = store.0.read().by_correlation(id);
    encode_stored_list(env, &events)
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
