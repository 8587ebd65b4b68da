//! RingBuffer NIFs: standalone rings that a pipeline can drain.

use std::sync::Arc;

use rustler::{Atom, Encoder, Env, ResourceArc, Term};

use elixir_scope_core::event::Event;
use elixir_scope_core::ring::{Overflow, Popped, Pushed, Ring, RingError};

use crate::atoms;
use crate::codec::event::{Decoder, StructEncoder};
use crate::resources::RingRes;

pub fn overflow_of(t: Atom) -> Option<Overflow> {
    if t == atoms::drop_oldest() {
        Some(Overflow::DropOldest)
    } else if t == atoms::drop_newest() {
        Some(Overflow::DropNewest)
    } else {
        None
    }
}

pub fn ring_error(e: RingError) -> Atom {
    match e {
        RingError::InvalidSize => atoms::invalid_size(),
        RingError::SizeMustBePowerOf2 => atoms::size_must_be_power_of_2(),
    }
}

#[rustler::nif]
fn ring_new(env: Env, size: usize, overflow: Atom) -> Term {
    let Some(overflow) = overflow_of(overflow) else {
        return (atoms::error(), atoms::invalid_overflow_strategy()).encode(env);
    };
    match Ring::<Event>::new(size, overflow) {
        Ok(ring) => (atoms::ok(), ResourceArc::new(RingRes(Arc::new(ring)))).encode(env),
        Err(e) => (atoms::error(), ring_error(e)).encode(env),
    }
}

#[rustler::nif]
fn ring_write<'a>(env: Env<'a>, ring: &RingRes, event: Term<'a>, max_payload: usize) -> Term<'a> {
    match Decoder::new(max_payload).event(event) {
        Ok(e) => match ring.0.push(e) {
            Pushed::Stored { .. } => atoms::ok().encode(env),
            Pushed::Rejected => (atoms::error(), atoms::buffer_full()).encode(env),
        },
        Err(why) => (atoms::error(), (atoms::invalid_event(), why)).encode(env),
    }
}

/// Consumes up to `count` events; returns `{events, new_position}`.
#[rustler::nif(schedule = "DirtyCpu")]
fn ring_read_batch(env: Env, ring: ResourceArc<RingRes>, position: u64, count: usize) -> Term {
    let encoder = StructEncoder::new(env);
    let mut events = Vec::new();
    let mut at = ring.0.read_position().max(position);
    while events.len() < count {
        match ring.0.pop() {
            Popped::Item(seq, e) => {
                events.push(encoder.event(&e));
                at = seq + 1;
            }
            Popped::Empty(h) | Popped::Pending(h) => {
                at = at.max(h);
                break;
            }
        }
    }
    (events, at).encode(env)
}

#[rustler::nif]
fn ring_stats(env: Env, ring: ResourceArc<RingRes>) -> Term {
    let s = ring.0.stats();
    crate::atom_map!(env, {
        "size" => s.size,
        "write_position" => s.write_position,
        "read_position" => s.read_position,
        "available" => s.available,
        "total_writes" => s.total_writes,
        "total_reads" => s.total_reads,
        "dropped_events" => s.dropped_events(),
        "utilization" => s.utilization(),
    })
}
