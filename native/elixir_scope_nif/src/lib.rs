//! elixir_scope_nif: the thin NIF layer over `elixir_scope_core`.
//!
//! Decode terms, call the core, encode the answer. Every NIF is wrapped by
//! rustler in `catch_unwind`, so a panic becomes an Erlang error, never a
//! VM crash. List-returning queries run on dirty CPU schedulers.

mod atoms;
mod clock;
mod codec;
mod lean_nif;
mod native_logs;
mod nif_correlator;
mod nif_cross_node;
mod nif_pipeline;
mod nif_query;
mod nif_ring;
mod nif_store;
mod nif_tracefile;
mod resources;
mod tracer;

fn load(env: rustler::Env, info: rustler::Term) -> bool {
    // The fast path is an optimization: a VM with another term layout just
    // does without it.
    clock::init();
    elixir_scope_core::logs::install();
    codec::layout::check(env, info);
    codec::structs::check(env);
    codec::event::init_struct_layout(env);
    tracer::handle::open(env)
}

rustler::init!("Elixir.ElixirScope.Native", load = load);
