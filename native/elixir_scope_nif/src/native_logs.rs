//! Native log NIF: drains the `tracing` events the core queued (see
//! `elixir_scope_core::logs`) for `ElixirScope.NativeLog` to hand to Logger.

use rustler::{Atom, Encoder, Env, Term};

use elixir_scope_core::logs;
use tracing::Level;

use crate::atoms;

fn level(l: Level) -> Atom {
    match l {
        Level::ERROR => atoms::error(),
        Level::WARN => atoms::warning(),
        _ => atoms::info(),
    }
}

/// `{[{level, target, message, [{field, value}]}], dropped}`: up to `max`
/// records, oldest first, and how many were dropped since the start.
#[rustler::nif]
fn native_logs_take(env: Env, max: usize) -> Term {
    let Some(queue) = logs::install() else {
        return (Vec::<Term>::new(), 0u64).encode(env);
    };
    let records: Vec<Term> = queue
        .take(max)
        .into_iter()
        .map(|r| (level(r.level), r.target, r.message, r.fields).encode(env))
        .collect();
    (records, queue.dropped()).encode(env)
}
