//! CallStat: counts and times of calls per key, as erlang_doctor's
//! `tr:call_stat/2` computes them, natively in one pass over the log.
//!
//! Each process's calls and returns are replayed in order on a stack of
//! its own (a return closes the call it completes, by the correlator's
//! link; calls above it that never returned are dropped uncounted). A
//! completed call whose call event passes the filter counts once for its
//! key; its own time is its duration less its direct children's; its
//! accumulated time is its duration, except for a call nested in an open
//! call of the same key (recursion), whose time the outer one already
//! holds. So the own times of a tree sum to its root's accumulated time.

use crate::hash::WordMap;

use super::query::Filter;
use super::{Record, Store, NONE};
use crate::event::EventKind;

/// What calls are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatKey {
    /// {module, function, arity}
    Mfa,
    Module,
    Pid,
}

/// A key's figures (times in ns).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallStat {
    pub count: u64,
    pub acc_time: i64,
    pub own_time: i64,
}

/// A key as words: (module, function, arity) for `Mfa`, (module, 0, 0)
/// for `Module`, (pid, 0, 0) for `Pid`.
pub type Key = (u64, u64, u8);

struct Frame {
    call_id: u64,
    key: Key,
    at: i64,
    children: i64,
    counted: bool,
    nested_in_same_key: bool,
}

/// A process's open calls, and how many counted ones each key has open
/// (so a deep recursion checks its nesting in O(1), not by a stack walk).
#[derive(Default)]
struct Stack {
    frames: Vec<Frame>,
    open: WordMap<Key, u32>,
}

impl Stack {
    fn pop(&mut self) -> Option<Frame> {
        let frame = self.frames.pop()?;
        if frame.counted {
            if let Some(n) = self.open.get_mut(&frame.key) {
                *n -= 1;
            }
        }
        Some(frame)
    }
}

impl Store {
    /// Call statistics of the completed calls `filter` matches, by `key`.
    pub fn call_stat(&self, filter: &Filter, key: StatKey) -> Vec<(Key, CallStat)> {
        // Pid keys are small dense numbers: a process's stack by index.
        let mut stacks: Vec<Stack> = Vec::new();
        let mut stats: WordMap<Key, CallStat> = WordMap::default();
        let calls = Filter {
            kinds: 0,
            ..filter.clone()
        }
        .kind(EventKind::FunctionCall);
        for pos in self.log.front()..self.log.end() {
            let Some(r) = self.log.record(pos).filter(|r| r.is_live()) else {
                continue;
            };
            match r.kind {
                EventKind::FunctionCall => {
                    let key = self.key_of(r, key);
                    let at = r.pid_key as usize;
                    if stacks.len() <= at {
                        stacks.resize_with(at + 1, Stack::default);
                    }
                    let stack = &mut stacks[at];
                    let counted = self.matches(&calls, r, pos);
                    let open = stack.open.entry(key).or_default();
                    let nested_in_same_key = *open > 0;
                    *open += u32::from(counted);
                    stack.frames.push(Frame {
                        call_id: r.id,
                        key,
                        at: r.timestamp,
                        children: 0,
                        counted,
                        nested_in_same_key,
                    });
                }
                EventKind::FunctionReturn | EventKind::FunctionException => {
                    let Some(stack) = stacks.get_mut(r.pid_key as usize) else {
                        continue;
                    };
                    let Some(at) = stack
                        .frames
                        .iter()
                        .rposition(|f| f.call_id == r.correlation_id)
                    else {
                        continue;
                    };
                    while stack.frames.len() > at + 1 {
                        stack.pop();
                    }
                    let frame = stack.pop().expect("frame `at` exists");
                    let took = r.timestamp - frame.at;
                    if frame.counted {
                        let s = stats.entry(frame.key).or_default();
                        s.count += 1;
                        s.own_time += took - frame.children;
                        if !frame.nested_in_same_key {
                            s.acc_time += took;
                        }
                    }
                    if let Some(parent) = stack.frames.last_mut() {
                        parent.children += took;
                    }
                }
                _ => {}
            }
        }
        let mut out: Vec<(Key, CallStat)> = stats.into_iter().collect();
        out.sort_unstable_by_key(|&(k, _)| k);
        out
    }

    fn key_of(&self, r: &Record, key: StatKey) -> Key {
        let (module, function) = if r.fun_key == NONE {
            (0, 0)
        } else {
            self.functions.key(r.fun_key)
        };
        match key {
            StatKey::Mfa => (module, function, r.arity),
            StatKey::Module => (module, 0, 0),
            StatKey::Pid => (self.pids.key(r.pid_key), 0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_support::event;
    use crate::store::{SharedStore, StoreConfig};

    /// `n` in the payload encoding.
    fn int(n: u8) -> Vec<u8> {
        use crate::payload::{tag, varint};
        let mut b = vec![tag::INT];
        varint::push(&mut b, varint::zigzag(n as i64));
        b
    }

    /// fib(n) on one process: a call at t, its recursive calls, its return.
    fn fib(events: &mut Vec<crate::event::Event>, t: &mut i64, n: u8) {
        let mut call = event(7, *t);
        (call.function, call.arity) = (0x30b, 1);
        call.data = crate::payload::Payload::from_bytes(&int(n));
        events.push(call);
        *t += 1;
        if n >= 2 {
            fib(events, t, n - 1);
            fib(events, t, n - 2);
        }
        let mut ret = event(7, *t);
        (ret.kind, ret.function, ret.arity) = (EventKind::FunctionReturn, 0x30b, 1);
        events.push(ret);
        *t += 1;
    }

    #[test]
    fn recursion_counts_every_call_and_accumulates_the_outermost() {
        let shared = SharedStore::new(StoreConfig::default());
        let (mut events, mut t) = (Vec::new(), 0);
        fib(&mut events, &mut t, 10);
        shared.write(events.into_iter(), 0);
        let store = shared.read();
        let stats = store.call_stat(&Filter::default(), StatKey::Mfa);
        assert_eq!(stats.len(), 1);
        let (key, s) = stats[0];
        assert_eq!(key, (0x10b, 0x30b, 1));
        // fib(10) makes 177 calls; the root spans the whole run.
        assert_eq!(s.count, 177);
        assert_eq!(s.acc_time, t - 1, "only the outermost call accumulates");
        assert_eq!(s.own_time, s.acc_time, "own times sum to the root's time");
        let by_pid = store.call_stat(&Filter::default(), StatKey::Pid);
        assert_eq!(by_pid[0].0, (7, 0, 0));
        let only_small = Filter {
            data: Some(int(1)),
            ..Filter::default()
        };
        let small = store.call_stat(&only_small, StatKey::Mfa);
        assert_eq!(
            small[0].1.count, 55,
            "fib(1) calls: the filter picks the counted calls"
        );
    }
}
