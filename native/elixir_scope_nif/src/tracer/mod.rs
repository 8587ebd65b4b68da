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
use crate::resources::PipelineRes;
use session::{reason_of, SessionConfig, TraceSession};

#[rustler::nif(name = "enabled")]
fn enabled<'a>(tag: Term<'a>, state: Term<'a>, tracee: Term<'a>) -> Atom {
    match handle::get(state) {
        Some(session) => session.enabled(tag, tracee),
        None => atoms::remove(),
    }
}

#[rustler::nif(name = "trace")]
fn trace<'a>(
    env: Env<'a>,
    tag: Term<'a>,
    state: Term<'a>,
    tracee: Term<'a>,
    message: Term<'a>,
    opts: Term<'a>,
) -> Atom {
    if let Some(session) = handle::get(state) {
        session.record(env, tag, tracee, message, opts);
    }
    atoms::ok()
}

#[rustler::nif]
fn trace_session_new<'a>(
    env: Env<'a>,
    pipeline: ResourceArc<PipelineRes>,
    owner: LocalPid,
    config: SessionConfig,
) -> Term<'a> {
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
