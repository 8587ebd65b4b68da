//! State strategy: a `:state_change` is caused by what its pid was handling.
//!
//! That is the receive that started the current root call (a GenServer
//! callback handling a message; replies received inside it, from nested
//! calls, are not the cause), else the pid's latest receive, else its
//! innermost open call; the event
//! also sits in the pid's call stack (parent = innermost open call, root =
//! outermost), so a chain can be walked back either way.

use super::{function, Context};
use crate::event::{Correlation, Link, LinkKind};
use crate::links::Links;

pub fn change(ctx: &Context, c: &mut Correlation) {
    function::within_stack(ctx, c);
    let cause = [
        if ctx.frames.is_empty() {
            0
        } else {
            ctx.root_cause
        },
        ctx.last_receive,
        c.parent_id,
    ]
    .into_iter()
    .find(|&id| id != 0)
    .unwrap_or(0);
    if cause != 0 {
        c.links = Links::one(Link {
            kind: LinkKind::CausedBy,
            target: cause,
        });
    }
}
