//! The states GenServer callbacks were entered with, per process.
//!
//! Algorithm: a `handle_call/3`, `handle_cast/2` or `handle_info/2` call
//! pushes its last argument (the old state) on its pid's stack; the matching
//! return pops it and pairs it with the new state from the return value
//! (an exception pops and discards it). A stack, not a slot, because a
//! callback may run another server module's callback in the same process.
//!
//! Invariants: at most `max_pids` processes and `MAX_DEPTH` entries per
//! process are remembered; an entry that does not fit is not remembered and
//! is counted in `untracked` (its return then yields no state change). A
//! process's entries are freed when it exits.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::hash::WordMap;
use crate::payload::Payload;

/// Deepest nesting of server callbacks remembered per process.
pub const MAX_DEPTH: usize = 16;

pub struct ServerStates {
    stacks: Mutex<WordMap<u64, Vec<Payload>>>,
    max_pids: usize,
    untracked: AtomicU64,
}

impl ServerStates {
    pub fn new(max_pids: usize) -> ServerStates {
        ServerStates {
            stacks: Mutex::new(WordMap::default()),
            max_pids,
            untracked: AtomicU64::new(0),
        }
    }

    /// A callback of `pid` was entered with state `old`.
    pub fn enter(&self, pid: u64, old: Payload) {
        let mut stacks = self.stacks.lock();
        let room = stacks.len() < self.max_pids || stacks.contains_key(&pid);
        let stack = room.then(|| stacks.entry(pid).or_default());
        match stack {
            Some(stack) if stack.len() < MAX_DEPTH => stack.push(old),
            _ => {
                self.untracked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The innermost callback of `pid` left; its old state, if remembered.
    pub fn leave(&self, pid: u64) -> Option<Payload> {
        let mut stacks = self.stacks.lock();
        let stack = stacks.get_mut(&pid)?;
        let old = stack.pop();
        if stack.is_empty() {
            stacks.remove(&pid);
        }
        old
    }

    /// `pid` exited: forget its entries.
    pub fn forget(&self, pid: u64) {
        self.stacks.lock().remove(&pid);
    }

    /// Callbacks entered but not remembered (over a bound).
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Processes with a callback in progress.
    pub fn len(&self) -> usize {
        self.stacks.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(b: u8) -> Payload {
        Payload::from_bytes(&[b])
    }

    #[test]
    fn nested_callbacks_pair_innermost_first() {
        let s = ServerStates::new(10);
        s.enter(1, state(1));
        s.enter(1, state(2));
        s.enter(2, state(9));
        assert_eq!(s.leave(1), Some(state(2)));
        assert_eq!(s.leave(1), Some(state(1)));
        assert_eq!(s.leave(1), None);
        assert_eq!(s.leave(2), Some(state(9)));
        assert!(s.is_empty());
    }

    #[test]
    fn bounds_count_what_they_refuse() {
        let s = ServerStates::new(1);
        s.enter(1, state(1));
        s.enter(2, state(2));
        assert_eq!((s.untracked(), s.len()), (1, 1));
        assert_eq!(s.leave(2), None);
        for _ in 0..MAX_DEPTH {
            s.enter(1, state(3));
        }
        assert_eq!(s.untracked(), 2);
        s.forget(1);
        assert!(s.is_empty());
    }
}
