//! Matcher: pairs this node's receives from other nodes with the sends
//! those nodes handed over, one exchange round at a time.
//!
//! Sends wait by (fingerprint, sending node), in their node's id order. A
//! receive looks under its own message's fingerprint and its sender's node
//! (the VM names a remote sender only by its node) and takes the first
//! send addressed to its pid, else to its node (a process alias), from its
//! sender when it knows the sender's pid. A send to a registered name
//! counts as one to the pid holding the name when the sends are added
//! (to the node when no process holds it).
//! The BEAM keeps order per sender and receiver, so the k-th such receive
//! from a process takes that process's k-th send: the match is certain
//! (confidence 1.0) when the candidates come from one process, else
//! `1 / n` for `n` sending processes, as the local matcher rates a blind
//! receive. The ambiguity is remembered while sends of that (fingerprint,
//! node) wait, so the last of several identical messages, which finds one
//! candidate left, is not called certain either.
//!
//! A receive whose send has not arrived waits for later rounds (its send
//! may have been stored after its node handed over its sends), as does a
//! send without its receive. Bound: at most `MAX_WAITING` of each wait;
//! past it, those that have already waited a whole round (their other
//! half was most likely not traced) are dropped and counted.

use std::collections::VecDeque;

use super::wire::{SendHalf, To};
use crate::correlator::queue::Queue;
use crate::hash::WordMap;

const MAX_WAITING: usize = 1 << 20;

/// A receive from another node, with keys as [`super::wire`] builds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiveHalf {
    pub id: u64,
    /// The receiver's `etf_key`.
    pub receiver: u64,
    /// The sender's node (its atom word here), and its pid's `etf_key`
    /// when the receive knows it (0: unknown).
    pub node: u64,
    pub sender: u64,
    pub fingerprint: u64,
}

/// A receive paired with its send on `node`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Matched {
    pub receive: u64,
    pub node: u64,
    pub send: u64,
    pub confidence: f32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatcherStats {
    pub linked: u64,
    pub ambiguous: u64,
    /// Halves dropped past the bound.
    pub dropped: u64,
    pub waiting_sends: u64,
    pub waiting_receives: u64,
}

#[derive(Clone, Copy)]
struct Waiting<T> {
    half: T,
    round: u64,
}

#[derive(Default)]
pub struct Matcher {
    sends: WordMap<(u64, u64), Queue<Waiting<SendHalf>>>,
    /// The lowest confidence a blind match under a key of `sends` got,
    /// while the key has sends waiting.
    ambiguity: WordMap<(u64, u64), f32>,
    waiting_sends: usize,
    receives: VecDeque<Waiting<ReceiveHalf>>,
    round: u64,
    stats: MatcherStats,
}

impl Matcher {
    /// Adds the sends `node` handed over, in its id order; `holder` gives
    /// the `etf_key` of the process holding a registered name (by its
    /// `name_key`) here.
    pub fn add_sends(
        &mut self,
        node: u64,
        sends: &[SendHalf],
        holder: impl Fn(u64) -> Option<u64>,
    ) {
        self.sends.reserve(sends.len());
        for &half in sends {
            let to = match half.to {
                To::Name(name) => holder(name).map_or(To::Node, To::Pid),
                to => to,
            };
            let half = SendHalf { to, ..half };
            let key = (half.fingerprint, node);
            let round = self.round;
            self.sends
                .entry(key)
                .or_default()
                .push_back(Waiting { half, round });
        }
        self.waiting_sends += sends.len();
    }

    /// Adds this node's receives from other nodes, in id order.
    pub fn add_receives(&mut self, receives: impl IntoIterator<Item = ReceiveHalf>) {
        let round = self.round;
        self.receives
            .extend(receives.into_iter().map(|half| Waiting { half, round }));
    }

    /// Pairs every waiting receive it can, in id order; ends the round.
    pub fn run(&mut self, out: &mut Vec<Matched>) {
        let waiting = std::mem::take(&mut self.receives);
        for r in waiting {
            match self.take(&r.half) {
                Some(m) => out.push(m),
                None => self.receives.push_back(r),
            }
        }
        self.bound();
        self.round += 1;
    }

    fn take(&mut self, r: &ReceiveHalf) -> Option<Matched> {
        let key = (r.fingerprint, r.node);
        let queue = self.sends.get_mut(&key)?;
        let sent_by = |s: &SendHalf| r.sender == 0 || s.sender == r.sender;
        for to in [To::Pid(r.receiver), To::Node] {
            let candidates = || queue.iter().filter(|w| w.half.to == to && sent_by(&w.half));
            let Some(first) = candidates().next() else {
                continue;
            };
            let senders = distinct_senders(candidates().map(|w| w.half.sender), first.half.sender);
            let i = queue.iter().position(|w| w.half.id == first.half.id)?;
            let send = queue.remove(i)?.half;
            let emptied = queue.is_empty();
            let mut confidence = 1.0 / senders as f32;
            if r.sender == 0 {
                if let Some(&earlier) = self.ambiguity.get(&key) {
                    confidence = confidence.min(earlier);
                }
                if confidence < 1.0 && !emptied {
                    self.ambiguity.insert(key, confidence);
                }
            }
            if emptied {
                self.sends.remove(&key);
                self.ambiguity.remove(&key);
            }
            self.waiting_sends -= 1;
            self.stats.linked += 1;
            self.stats.ambiguous += u64::from(confidence < 1.0);
            return Some(Matched {
                receive: r.id,
                node: r.node,
                send: send.id,
                confidence,
            });
        }
        None
    }

    /// Past `MAX_WAITING`, drops what waited since an earlier round.
    fn bound(&mut self) {
        let round = self.round;
        if self.receives.len() > MAX_WAITING {
            let before = self.receives.len();
            self.receives.retain(|w| w.round == round);
            self.stats.dropped += (before - self.receives.len()) as u64;
        }
        if self.waiting_sends > MAX_WAITING {
            let mut left = 0;
            let ambiguity = &mut self.ambiguity;
            self.sends.retain(|key, q| {
                q.retain(|w| w.round == round);
                left += q.len();
                if q.is_empty() {
                    ambiguity.remove(key);
                }
                !q.is_empty()
            });
            self.stats.dropped += (self.waiting_sends - left) as u64;
            self.waiting_sends = left;
        }
    }

    /// Forgets every waiting half (counted as dropped).
    pub fn clear(&mut self) {
        self.stats.dropped += (self.waiting_sends + self.receives.len()) as u64;
        self.sends.clear();
        self.ambiguity.clear();
        self.receives.clear();
        self.waiting_sends = 0;
    }

    pub fn stats(&self) -> MatcherStats {
        MatcherStats {
            waiting_sends: self.waiting_sends as u64,
            waiting_receives: self.receives.len() as u64,
            ..self.stats
        }
    }
}

/// How many distinct senders `senders` holds (`first` among them); almost
/// always one, found without allocating.
fn distinct_senders(senders: impl Iterator<Item = u64>, first: u64) -> usize {
    let mut seen: Vec<u64> = Vec::new();
    for s in senders.filter(|&s| s != first) {
        if !seen.contains(&s) {
            seen.push(s);
        }
    }
    1 + seen.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 0xa0b;
    const B: u64 = 0xb0b;

    fn send(id: u64, sender: u64, to: To, fingerprint: u64) -> SendHalf {
        SendHalf {
            id,
            sender,
            to,
            fingerprint,
        }
    }

    fn receive(id: u64, receiver: u64, node: u64, fingerprint: u64) -> ReceiveHalf {
        ReceiveHalf {
            id,
            receiver,
            node,
            sender: 0,
            fingerprint,
        }
    }

    fn no_names(_: u64) -> Option<u64> {
        None
    }

    fn run(m: &mut Matcher) -> Vec<(u64, u64, u64, f32)> {
        let mut out = Vec::new();
        m.run(&mut out);
        out.iter()
            .map(|x| (x.receive, x.node, x.send, x.confidence))
            .collect()
    }

    #[test]
    fn identical_messages_from_two_nodes_each_find_their_own_nodes_send() {
        let mut m = Matcher::default();
        m.add_sends(A, &[send(10, 1, To::Pid(9), 7)], no_names);
        m.add_sends(B, &[send(20, 2, To::Pid(9), 7)], no_names);
        m.add_receives([receive(1, 9, B, 7), receive(2, 9, A, 7)]);
        assert_eq!(run(&mut m), [(1, B, 20, 1.0), (2, A, 10, 1.0)]);
        assert_eq!(m.stats().linked, 2);
    }

    #[test]
    fn one_senders_messages_pair_in_order_two_senders_are_ambiguous() {
        let mut m = Matcher::default();
        m.add_sends(
            A,
            &[send(10, 1, To::Pid(9), 7), send(11, 1, To::Pid(9), 7)],
            no_names,
        );
        m.add_receives([receive(1, 9, A, 7), receive(2, 9, A, 7)]);
        assert_eq!(run(&mut m), [(1, A, 10, 1.0), (2, A, 11, 1.0)]);

        m.add_sends(
            A,
            &[send(12, 1, To::Pid(9), 7), send(13, 2, To::Pid(9), 7)],
            no_names,
        );
        m.add_receives([receive(3, 9, A, 7)]);
        assert_eq!(run(&mut m), [(3, A, 12, 0.5)]);
        assert_eq!(m.stats().ambiguous, 1);
        // The other one, alone in the queue now, is as uncertain.
        m.add_receives([receive(4, 9, A, 7)]);
        assert_eq!(run(&mut m), [(4, A, 13, 0.5)]);

        // A receive that knows its sender's pid takes that sender's send.
        let two = [send(14, 1, To::Pid(9), 7), send(15, 2, To::Pid(9), 7)];
        m.add_sends(A, &two, no_names);
        m.add_receives([ReceiveHalf {
            sender: 2,
            ..receive(5, 9, A, 7)
        }]);
        assert_eq!(run(&mut m), [(5, A, 15, 1.0)]);
    }

    #[test]
    fn sends_to_a_name_or_an_alias_are_found_by_the_names_holder_then_node() {
        let mut m = Matcher::default();
        let holder = |name| (name == 5).then_some(9);
        let sends = [
            send(10, 1, To::Name(5), 1),
            send(11, 1, To::Node, 2),
            send(12, 1, To::Name(6), 4),
        ];
        m.add_sends(A, &sends, holder);
        m.add_receives([
            receive(1, 9, A, 1),
            receive(2, 9, A, 2),
            receive(3, 9, A, 3),
            receive(4, 9, A, 4),
        ]);
        // A name no process holds counts as the node.
        assert_eq!(
            run(&mut m),
            [(1, A, 10, 1.0), (2, A, 11, 1.0), (4, A, 12, 1.0)]
        );
        // Another receiver's pid is not this receive's.
        m.add_sends(
            A,
            &[send(13, 1, To::Pid(8), 3), send(14, 1, To::Name(5), 3)],
            |_| Some(8),
        );
        assert_eq!(run(&mut m), []);
        assert_eq!(m.stats().waiting_receives, 1);
        assert_eq!(m.stats().waiting_sends, 2);
    }

    #[test]
    fn a_receive_waits_for_a_send_handed_over_in_a_later_round() {
        let mut m = Matcher::default();
        m.add_receives([receive(1, 9, A, 7)]);
        assert_eq!(run(&mut m), []);
        m.add_sends(A, &[send(10, 1, To::Pid(9), 7)], no_names);
        assert_eq!(run(&mut m), [(1, A, 10, 1.0)]);
        assert_eq!(m.stats().waiting_receives, 0);
        assert_eq!(m.stats().waiting_sends, 0);

        m.add_receives([receive(2, 9, A, 7)]);
        m.add_sends(A, &[send(11, 1, To::Pid(8), 7)], no_names);
        run(&mut m);
        m.clear();
        let s = m.stats();
        assert_eq!((s.waiting_sends, s.waiting_receives, s.dropped), (0, 0, 2));
    }

    #[test]
    fn past_the_bound_halves_from_earlier_rounds_are_dropped_and_counted() {
        let mut m = Matcher::default();
        m.add_receives((0..MAX_WAITING as u64).map(|id| receive(id, 9, A, 1)));
        run(&mut m);
        m.add_receives([receive(u64::MAX, 9, A, 2)]);
        run(&mut m);
        let s = m.stats();
        assert_eq!((s.dropped, s.waiting_receives), (MAX_WAITING as u64, 1));
    }
}
