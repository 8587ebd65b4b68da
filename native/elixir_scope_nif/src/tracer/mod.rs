//! The erl_tracer callbacks and trace-session NIFs.
//!
//! The VM calls `enabled/3` and `trace/5` of the tracer module named in
//! `{:tracer, ElixirScope.Native, session}`; one `.so` has one NIF module,
//! so `ElixirScope.Native` is that module. Both callbacks run on the traced
//! process's scheduler and must be quick: see [`session`].

pub mod handle;
mod session;
mod translate;

use std::sync::Arc;

use rustler::{Atom, Env, LocalPid, NifResult, ResourceArc, Term};

use crate::atoms;
use crate::lean_nif::lean_nif;
use crate::resources::PipelineRes;
use session::{reason_of, SessionConfig, TraceSession};

lean_nif!("enabled", 3, enabled);
fn enabled<'a>(env: Env<'a>, [tag, state, tracee]: [Term<'a>; 3]) -> NifResult<Term<'a>> {
    Ok(match handle::get(state) {
        Some(session) => session.enabled(tag, tracee),
        None => atoms::remove(),
    }
    .to_term(env))
}

lean_nif!("trace", 5, trace);
fn trace<'a>(
    env: Env<'a>,
    [tag, state, tracee, message, opts]: [Term<'a>; 5],
) -> NifResult<Term<'a>> {
    if let Some(session) = handle::get(state) {
        session.record(env, tag, tracee, message, opts);
    }
    Ok(atoms::ok().to_term(env))
}

#[rustler::nif]
fn trace_session_new<'a>(
    env: Env<'a>,
    pipeline: ResourceArc<PipelineRes>,
    owner: LocalPid,
    config: SessionConfig,
) -> Term<'a> {
    // The correlator tells messages with other nodes apart by this node's
    // name, as it is now.
    let node = crate::nif_cross_node::this_node(env);
    pipeline.pipeline.store().correlator().set_local_node(node);
    handle::make(env, Arc::new(TraceSession::new(pipeline, owner, config)))
}

/// Stops the session for `reason`; false if it had already stopped.
#[rustler::nif]
fn trace_session_stop(session: Term, reason: Atom) -> NifResult<bool> {
    let session = handle::get(session).ok_or(rustler::Error::BadArg)?;
    let reason = reason_of(reason).ok_or(rustler::Error::BadArg)?;
    Ok(session.stop(reason))
}

#[rustler::nif]
fn trace_session_info<'a>(env: Env<'a>, session: Term<'a>) -> NifResult<Term<'a>> {
    let session = handle::get(session).ok_or(rustler::Error::BadArg)?;
    Ok(session.info(env))
}
