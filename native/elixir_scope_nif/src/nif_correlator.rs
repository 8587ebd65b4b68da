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

/// Drops pending state older than `older_than_ns` (0: all of it) now.
#[rustler::nif]
fn correlator_force_cleanup(store: ResourceArc<StoreRes>, older_than_ns: u64) -> u64 {
    crate::clock::calibrate();
    let now = crate::clock::monotonic_ns();
    let cutoff = now.saturating_sub(older_than_ns.min(i64::MAX as u64) as i64);
    // A cutoff past `now` takes what was recorded up to now, whatever its clock.
    let cutoff = if older_than_ns == 0 { i64::MAX } else { cutoff };
    store.0.correlator().force_cleanup(cutoff)
}

/// `%{open_calls: [{pid, depth}], pending_sends_by_age: [..4], ...}`.
#[rustler::nif]
fn correlator_dump(env: Env, store: ResourceArc<StoreRes>) -> Term {
    crate::clock::calibrate();
    let d = store.0.correlator().dump(crate::clock::monotonic_ns());
    let open_calls: Vec<Term> = d
        .open_calls
        .iter()
        .map(|&(pid, depth)| {
            // SAFETY: a local pid's word (an environment-independent immediate).
            (unsafe { Term::new(env, from_word(pid)) }, depth).encode(env)
        })
        .collect();
    crate::atom_map!(env, {
        "open_calls" => open_calls,
        "pending_sends_by_age" => d.pending_sends_by_age.to_vec(),
        "pending_receives_by_age" => d.pending_receives_by_age.to_vec(),
        "process_tree_edges" => d.tree_edges,
        "tracked_processes" => d.contexts,
    })
}

#[rustler::nif]
fn correlator_stats(env: Env, store: ResourceArc<StoreRes>) -> Term {
    // The exchange's lock comes before the correlator's.
    let (m, skipped, busy_ns) = {
        let ex = store.0.exchange();
        (ex.matcher.stats(), ex.skipped, ex.busy_ns)
    };
    let (s, set_aside_dropped, waiting_receives) = {
        let mut c = store.0.correlator();
        let s = c.stats();
        let crossing = c.crossing();
        (s, crossing.dropped, crossing.waiting_receives(&m))
    };
    let cross_node = crate::atom_map!(env, {
        "sends" => s.cross_node_sends,
        "receives" => s.cross_node_receives,
        "linked" => m.linked,
        "ambiguous" => m.ambiguous,
        "waiting_sends" => m.waiting_sends,
        "waiting_receives" => waiting_receives,
        "dropped" => set_aside_dropped + m.dropped + skipped,
        "busy_ns" => busy_ns,
    });
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
        "cross_node" => cross_node,
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
