//! The erl_tracer callbacks and trace-session NIFs.
//!
//! The VM calls `enabled/3` and `trace/5` of the tracer module named in
//! `{:tracer, ElixirScope.Native, session}`; one `.so` has one NIF module,
//! so `ElixirScope.Native` is that module. Both callbacks run on the traced
//! process's scheduler and must be quick: see [`session`].

mod session;
mod translate;

use rustler::{Atom, Env, LocalPid, ResourceArc, Term};

use crate::atoms;
use crate::resources::PipelineRes;
use session::{reason_of, SessionConfig, TraceSession};

#[rustler::nif(name = "enabled")]
fn enabled<'a>(tag: Term<'a>, state: Term<'a>, tracee: Term<'a>) -> Atom {
    match state.try_get_resource::<TraceSession>() {
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
    if let Some(session) = state.try_get_resource::<TraceSession>() {
        session.record(env, tag, tracee, message, opts);
    }
    atoms::ok()
}

#[rustler::nif]
fn trace_session_new(
    pipeline: ResourceArc<PipelineRes>,
    owner: LocalPid,
    config: SessionConfig,
) -> ResourceArc<TraceSession> {
    ResourceArc::new(TraceSession::new(pipeline, owner, config))
}

/// Stops the session for `reason`; false if it had already stopped.
#[rustler::nif]
fn trace_session_stop(
    session: ResourceArc<TraceSession>,
    reason: Atom,
) -> rustler::NifResult<bool> {
    let reason = reason_of(reason).ok_or(rustler::Error::BadArg)?;
    Ok(session.stop(reason))
}

#[rustler::nif]
fn trace_session_info(env: Env, session: ResourceArc<TraceSession>) -> Term {
    session.info(env)
}
