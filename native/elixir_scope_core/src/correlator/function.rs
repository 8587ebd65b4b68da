//! Function strategy: a call stack per pid.
//!
//! A call takes its own id as correlation id, the enclosing open call as
//! parent (`{:called_from, parent}`) and the outermost one as root. A root
//! call that directly follows a receive on its pid is `{:caused_by,
//! receive}`; a pid's first root call is `{:spawned_by, spawn}` once the
//! spawn is known.
//!
//! A return or exception completes the innermost open call with the same
//! {module, function, arity} (any call when the return names none): it takes
//! that call's correlation id and links `{:completes, call}`. Open calls
//! above it are closed too, their return never having been seen (tail calls,
//! missed returns): they are patched to confidence [`UNFINISHED`] and
//! counted. A return matching no open call is an orphan: confidence 0,
//! counted. Stacks are bounded by `max_depth`; calls past it are not pushed
//! (counted), so their returns become orphans rather than corrupting the
//! stack.

use super::{Change, Context, CorrelatorStats, Patch, UNFINISHED};
use crate::event::{Correlation, Event, Link, LinkKind, NO_ARITY};
use crate::links::Links;

/// One open call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub id: u64,
    pub module: u64,
    pub function: u64,
    pub arity: u8,
}

impl Frame {
    fn completed_by(&self, e: &Event) -> bool {
        (e.module == 0 && e.function == 0)
            || (self.module == e.module
                && self.function == e.function
                && (e.arity == NO_ARITY || self.arity == NO_ARITY || self.arity == e.arity))
    }
}

pub fn call(
    ctx: &mut Context,
    e: &Event,
    max_depth: usize,
    c: &mut Correlation,
    stats: &mut CorrelatorStats,
) {
    let mut links = Links::None;
    match ctx.frames.last() {
        Some(parent) => {
            c.parent_id = parent.id;
            c.root_id = ctx.frames[0].id;
            links.push(Link {
                kind: LinkKind::CalledFrom,
                target: parent.id,
            });
        }
        None => {
            c.root_id = e.id;
            ctx.root_cause = ctx.just_received;
            if ctx.just_received != 0 {
                links.push(Link {
                    kind: LinkKind::CausedBy,
                    target: ctx.just_received,
                });
            }
            if ctx.first_root_call == 0 {
                ctx.first_root_call = e.id;
                if ctx.spawned_by != 0 {
                    links.push(Link {
                        kind: LinkKind::SpawnedBy,
                        target: ctx.spawned_by,
                    });
                }
            }
        }
    }
    c.links = links;
    if ctx.frames.len() < max_depth {
        ctx.frames.push(Frame {
            id: e.id,
            module: e.module,
            function: e.function,
            arity: e.arity,
        });
    } else {
        stats.depth_overflows += 1;
    }
}

pub fn complete(
    ctx: &mut Context,
    e: &Event,
    c: &mut Correlation,
    stats: &mut CorrelatorStats,
    patches: &mut Vec<Patch>,
) {
    stats.linkable += 1;
    let Some(at) = ctx.frames.iter().rposition(|f| f.completed_by(e)) else {
        stats.orphaned_returns += 1;
        c.confidence = 0.0;
        within_stack(ctx, c);
        return;
    };
    stats.linked += 1;
    for open in ctx.frames.drain(at + 1..) {
        stats.unfinished_calls += 1;
        patches.push(Patch {
            id: open.id,
            change: Change::Confidence(UNFINISHED),
        });
    }
    let call = ctx.frames.pop().expect("frame `at` exists");
    c.correlation_id = call.id;
    c.parent_id = ctx.frames.last().map_or(0, |f| f.id);
    c.root_id = ctx.frames.first().map_or(call.id, |f| f.id);
    c.links = Links::one(Link {
        kind: LinkKind::Completes,
        target: call.id,
    });
}

/// Places a non-call event inside the pid's current call: parent = the
/// innermost open call, root = the outermost.
pub fn within_stack(ctx: &Context, c: &mut Correlation) {
    if let (Some(first), Some(last)) = (ctx.frames.first(), ctx.frames.last()) {
        c.parent_id = last.id;
        c.root_id = first.id;
    }
}

/// A pid exited: its open calls will never return.
pub fn close_all(ctx: &Context, stats: &mut CorrelatorStats, patches: &mut Vec<Patch>) {
    for open in &ctx.frames {
        stats.unfinished_calls += 1;
        patches.push(Patch {
            id: open.id,
            change: Change::Confidence(UNFINISHED),
        });
    }
}
