//! Ranges and tracebacks: the two call-structure answers of erlang_doctor
//! (`tr:ranges/2`, `tr:tracebacks/2`), read off the correlator's links.
//!
//! A call's range is its process's events from the call to its return or
//! exception, inclusive: the call's record names its return (`partner`),
//! and the process's posting list gives the events between, in order.
//! A traceback is the stack of calls an event ran in: its own call (or
//! the enclosing one) and each `parent_id` up to the root. Across
//! processes, a root call caused by a receive continues at the call that
//! sent that message (receive -> send -> the sender's enclosing call).

use super::query::Filter;
use super::{directory, Hit, Order, Store, NONE};
use crate::event::{EventKind, LinkKind};

/// Longest traceback followed (a guard against link cycles).
const MAX_TRACEBACK: usize = 10_000;

impl Store {
    /// The ranges of the calls `filter` matches (at most `limit`), each
    /// with whether it reached its return: events deeper than `max_depth`
    /// levels below the call are left out.
    pub fn ranges(&self, filter: &Filter, max_depth: usize, limit: usize) -> Vec<(Vec<Hit>, bool)> {
        let calls = Filter {
            kinds: 0,
            ..filter.clone()
        }
        .kind(EventKind::FunctionCall);
        self.query(&calls, limit, Order::Asc)
            .into_iter()
            .map(|call| self.range(call, max_depth))
            .collect()
    }

    fn range(&self, call: Hit, max_depth: usize) -> (Vec<Hit>, bool) {
        let front = self.log.front();
        let Some(r) = self.log.record(call.pos) else {
            return (Vec::new(), false);
        };
        let end = Some(r.partner)
            .filter(|&p| p != NONE)
            .map(|p| directory::widen(p, front))
            .filter(|&p| {
                self.log
                    .record(p)
                    .is_some_and(|e| e.is_live() && e.correlation_id == call.id)
            });
        let Some((_, list)) = self.pids.positions(&self.pids.key(r.pid_key)) else {
            return (vec![call], false);
        };
        let start = list.partition_point(|&p| directory::widen(p, front) < call.pos);
        let mut out = Vec::new();
        let mut depth = 0usize;
        for &p in list.range(start..) {
            let pos = directory::widen(p, front);
            if end.is_some_and(|e| pos > e) {
                break;
            }
            let Some(e) = self
                .log
                .record(pos)
                .filter(|e| e.is_live() && e.pid_key == r.pid_key)
            else {
                continue;
            };
            let level = match e.kind {
                EventKind::FunctionCall => {
                    depth += 1;
                    depth
                }
                EventKind::FunctionReturn | EventKind::FunctionException => {
                    depth = depth.saturating_sub(1);
                    depth + 1
                }
                _ => depth + 1,
            };
            if level <= max_depth.saturating_add(1) {
                out.push(Hit { id: e.id, pos });
            }
        }
        (out, end.is_some())
    }

    /// The tracebacks of the events `filter` matches (at most `limit`):
    /// each the stack of call events it ran in, root first, its own call
    /// (or the enclosing one) last; `across` continues through the message
    /// that caused a root call into the sender's calls.
    pub fn tracebacks(&self, filter: &Filter, across: bool, limit: usize) -> Vec<Vec<Hit>> {
        self.query(filter, limit, Order::Asc)
            .into_iter()
            .map(|hit| self.traceback(hit, across))
            .collect()
    }

    fn traceback(&self, hit: Hit, across: bool) -> Vec<Hit> {
        let mut stack = Vec::new();
        let own = self.log.record(hit.pos).map(|r| match r.kind {
            EventKind::FunctionCall => r.id,
            // A return's own call is the one it completes.
            EventKind::FunctionReturn | EventKind::FunctionException
                if r.correlation_id != r.id =>
            {
                r.correlation_id
            }
            _ => r.parent_id,
        });
        let mut next = own.filter(|&id| id != 0);
        while let Some(id) = next {
            if stack.len() == MAX_TRACEBACK || stack.iter().any(|h: &Hit| h.id == id) {
                break;
            }
            let Some(pos) = self.position(id) else { break };
            let r = self.log.record(pos).expect("position just resolved");
            stack.push(Hit { id, pos });
            next = match r.parent_id {
                0 if across => self.sender_call(r.links.iter()),
                0 => None,
                parent => Some(parent),
            };
        }
        stack.reverse();
        stack
    }

    /// The call that sent the message a root call was caused by.
    fn sender_call(&self, mut links: impl Iterator<Item = crate::event::Link>) -> Option<u64> {
        let receive = links.find(|l| l.kind == LinkKind::CausedBy)?.target;
        let send = self.log.record(self.position(receive)?)?.correlation_id;
        let sender = self.log.record(self.position(send)?)?;
        (sender.parent_id != 0).then_some(sender.parent_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_support::event;
    use crate::event::Event;
    use crate::payload::Payload;
    use crate::store::{SharedStore, StoreConfig};

    fn ev(id: u64, pid: u64, kind: EventKind, function: u64) -> Event {
        let mut e = event(pid, id as i64);
        (e.id, e.kind, e.function) = (id, kind, function);
        e
    }

    fn ids(hits: &[Hit]) -> Vec<u64> {
        hits.iter().map(|h| h.id).collect()
    }

    #[test]
    fn ranges_and_tracebacks_within_and_across_processes() {
        use EventKind::*;
        let (a, b, c) = (0x13, 0x23, 0x33);
        let shared = SharedStore::new(StoreConfig::default());
        let msg = |id, pid, kind, peer| {
            let mut e = ev(id, pid, kind, 0);
            (e.module, e.arity, e.data, e.peer) =
                (0, u8::MAX, Payload::from_bytes(&[0]), Payload::pid(peer));
            e
        };
        let events = vec![
            ev(1, a, FunctionCall, 0xf),
            ev(2, a, FunctionCall, 0x9),
            ev(3, a, FunctionReturn, 0x9),
            ev(4, a, FunctionReturn, 0xf),
            ev(5, c, FunctionCall, 0xf), // never returns
            // b's h sends to a; a's k handles the message.
            ev(10, b, FunctionCall, 0x8),
            msg(11, b, MessageSend, a),
            msg(12, a, MessageReceive, b),
        ];
        shared.write(events.into_iter(), 0);
        shared.write([ev(13, a, FunctionCall, 0x7)].into_iter(), 0);
        let store = shared.read();
        let f = Filter {
            function: Some(0xf),
            ..Filter::default()
        };
        let ranges = store.ranges(&f, usize::MAX, 10);
        assert_eq!(ranges.len(), 2);
        assert_eq!((ids(&ranges[0].0), ranges[0].1), (vec![1, 2, 3, 4], true));
        assert!(!ranges[1].1, "no return: incomplete");
        assert_eq!(
            ids(&store.ranges(&f, 0, 10)[0].0),
            [1, 4],
            "max_depth 0: the call alone"
        );

        let at = |id: u64| Filter {
            after: Some(id - 1),
            before: Some(id + 1),
            ..Filter::default()
        };
        assert_eq!(
            ids(&store.tracebacks(&at(3), false, 10)[0]),
            [1, 2],
            "a return: its call last"
        );
        assert_eq!(ids(&store.tracebacks(&at(2), false, 10)[0]), [1, 2]);
        // k (13) is a root call of `a`, caused by the receive 12 of b's send
        // 11, sent from within b's call h (10).
        assert_eq!(ids(&store.tracebacks(&at(13), false, 10)[0]), [13]);
        assert_eq!(ids(&store.tracebacks(&at(13), true, 10)[0]), [10, 13]);
        assert!(
            store.tracebacks(&at(12), false, 10)[0].is_empty(),
            "a receive outside calls"
        );
    }
}
