//! Correlator NIFs: synchronous correlation, chains, manual links, cleanup,
//! stats and the process tree of a store's correlator.

use rustler::{Encoder, Env, ResourceArc, Term};

use crate::atoms;
use crate::codec::event::{decode_list, link_kind_of, StructEncoder};
use crate::codec::from_word;
use crate::resources::StoreRes;

/// Correlates events (ids assigned when missing) without storing them.
#[rustler::nif(schedule = "DirtyCpu")]
fn correlator_correlate<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    events: Term<'a>,
    max_payload: usize,
) -> Term<'a> {
    let Some((good, bad)) = decode_list(events, max_payload) else {
        return (atoms::error(), atoms::not_a_list()).encode(env);
    };
    if !bad.is_empty() {
        return (atoms::error(), (atoms::invalid_events(), 0, bad)).encode(env);
    }
    let correlated = store.0.correlate_only(good, crate::clock::monotonic_ns());
    (
        atoms::ok(),
        StructEncoder::new(env).stored_list(&correlated),
    )
        .encode(env)
}

#[rustler::nif(schedule = "DirtyCpu")]
fn correlator_chain(env: Env, store: ResourceArc<StoreRes>, id: u64) -> Term {
    StructEncoder::new(env).stored_list(&store.0.chain(id))
}

#[rustler::nif]
fn correlator_link<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    from: u64,
    to: u64,
    kind: Term<'a>,
) -> Term<'a> {
    let Some(kind) = link_kind_of(kind) else {
        return (atoms::error(), atoms::invalid_link_type()).encode(env);
    };
    if store.0.link(from, kind, to) {
        atoms::ok().encode(env)
    } else {
        (atoms::error(), atoms::not_found()).encode(env)
    }
}

#[rustler::nif]
fn correlator_cleanup(store: ResourceArc<StoreRes>) -> u64 {
    crate::clock::calibrate();
    store.0.correlator().cleanup(crate::clock::monotonic_ns())
}

#[rustler::nif]
fn correlator_stats(env: Env, store: ResourceArc<StoreRes>) -> Term {
    let s = store.0.correlator().stats();
    crate::atom_map!(env, {
        "correlated" => s.correlated,
        "linkable" => s.linkable,
        "linked" => s.linked,
        "success_rate" => s.success_rate(),
        "orphaned_events" => s.orphaned_returns,
        "unfinished_calls" => s.unfinished_calls,
        "ambiguous_matches" => s.ambiguous_matches,
        "depth_overflows" => s.depth_overflows,
        "unaddressed_sends" => s.unaddressed_sends,
        "expired" => s.expired,
        "evicted" => s.evicted,
        "pending_sends" => s.pending_sends,
        "pending_receives" => s.pending_receives,
        "active_correlations" => s.pending_sends + s.pending_receives + s.contexts,
        "tracked_processes" => s.contexts,
        "missed_patches" => store.0.missed_patches(),
        "memory_bytes" => s.memory_bytes,
    })
}

/// `[{parent, child, spawn_event_id}]`, oldest spawn first.
#[rustler::nif]
fn correlator_process_tree(env: Env, store: ResourceArc<StoreRes>) -> Term {
    let edges = store.0.correlator().process_tree();
    edges
        .into_iter()
        .map(|(parent, child, spawn)| {
            // SAFETY: the words are local pids recorded from live terms;
            // local pids are environment-independent immediates.
            let (p, c) = unsafe {
                (
                    Term::new(env, from_word(parent)),
                    Term::new(env, from_word(child)),
                )
            };
            (p, c, spawn).encode(env)
        })
        .collect::<Vec<_>>()
        .encode(env)
}
