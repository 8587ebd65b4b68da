//! State strategy: a `:state_change` is caused by what its pid was handling.
//!
//! That is the pid's latest receive when there is one (a GenServer changes
//! state while handling a message), else its innermost open call; the event
//! also sits in the pid's call stack (parent = innermost open call, root =
//! outermost), so a chain can be walked back either way.

use super::{function, Context};
use crate::event::{Correlation, Link, LinkKind};

pub fn change(ctx: &Context, c: &mut Correlation) {
    function::within_stack(ctx, c);
    let cause = if ctx.last_receive != 0 {
        ctx.last_receive
    } else {
        c.parent_id
    };
    if cause != 0 {
        c.links = Box::new([Link {
            kind: LinkKind::CausedBy,
            target: cause,
        }]);
    }
}
