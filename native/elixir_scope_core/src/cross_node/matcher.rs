//! Matcher: pairs this node's receives from other nodes with the sends
//! those nodes handed over, one exchange round at a time.
//!
//! Sends are keyed by (fingerprint, sending node). A receive looks under
//! its own message's fingerprint and its sender's node (the VM names a
//! remote sender only by its node) and takes the first send addressed to
//! its pid, else to its node (a process alias), from its sender when it
//! knows the sender's pid. A send to a registered name counts as one to
//! the pid holding the name here (to the node when no process holds it).
//! The BEAM keeps order per sender and receiver, so the k-th such receive
//! from a process takes that process's k-th send: the match is certain
//! (confidence 1.0) when the candidates come from one process, else
//! `1 / n` for `n` sending processes, as the local matcher rates a blind
//! receive. The ambiguity is remembered while sends of that (fingerprint,
//! node) wait, so the last of several identical messages, which finds one
//! candidate left, is not called certain either.
//!
//! A round during a session pairs only the receives stored before a
//! settling time: an identical send from another process of the node, one
//! that would make the match uncertain, was sent before the receive, so
//! once its node has stored it too it is among the sends a round gets.
//! Younger receives wait for a later round; the round after the session
//! stopped pairs them all. (The cluster layer takes from each node only
//! the halves older than the settling time, fixed on the receiving node
//! before it asks the others for their sends: so few halves wait here.)
//!
//! The sends handed over are added after those still waiting from earlier
//! rounds, in one vector the matcher keeps (its capacity serves every
//! round); their fingerprints, and each node's sends in order (a track),
//! are listed beside it as they are added. A round indexes them by
//! fingerprint (see `buckets`, in arrival order within a bucket) and marks
//! the sends receives take; the vector is then compacted in place to the
//! sends left, and the lists made anew for them.
//!
//! A node's receives mostly come in the order their sends were handed
//! over, so a receive first looks at a few sends from the one after its
//! node's last match on (then a few just before it): a send there with
//! its fingerprint, one no other send of the round shares, is the only
//! candidate, and taking it is what the index would give. Any other case
//! (a message sent several times, a send further off, an ambiguity
//! remembered) goes to the index. Sends that never find their receive (to
//! a process not traced) fall behind the track's cursor and cost the
//! lookups nothing.
//!
//! What is left waits for later rounds (a send whose receive was not
//! stored yet, a receive whose send was not handed over yet). Bound: at
//! most `MAX_WAITING` of each wait; past it, those that have already
//! waited a whole round (their other half was most likely not traced) are
//! dropped and counted.
//!
//! Invariant: `fingerprints[i]` is the fingerprint of `sends[i]`, and the
//! tracks list every index of `sends` once, under its node, in order.

use super::buckets::Buckets;
use super::wire::{SendHalf, To};
use crate::hash::WordMap;

const MAX_WAITING: usize = 1 << 20;

/// A receive from another node, with keys as [`super::wire`] builds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiveHalf {
    pub id: u64,
    /// Its timestamp.
    pub at: i64,
    /// The receiver's `etf_key`.
    pub receiver: u64,
    /// The sender's node (its `node_key`), and its pid's `etf_key` when the
    /// receive knows it (0: unknown).
    pub node: u64,
    pub sender: u64,
    pub fingerprint: u32,
}

/// A receive paired with its send on `node` (its `node_key`).
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

/// A send as the matcher holds it, in 32 bytes (a round writes tens of
/// thousands and reads them back out of cache): the name it went to
/// resolved, its node as its track's index; its fingerprint is listed
/// beside it.
#[derive(Clone, Copy)]
struct Sent {
    id: u64,
    sender: u64,
    /// The pid it went to (its `etf_key`), unless `to_node`.
    to: u64,
    track: u32,
    /// Sent to the node: a process alias, or a name no process holds.
    to_node: bool,
}

impl Sent {
    fn to(&self) -> To {
        match self.to_node {
            true => To::Node,
            false => To::Pid(self.to),
        }
    }
}

/// Where a receive looks in its node's track: at this many sends not
/// taken from the one after the last match on, then at this many before.
const TRACK_WINDOW: usize = 12;
const TRACK_BACK: usize = 4;

/// One node's sends in a round: their indices in order, and the position
/// after the last one taken.
#[derive(Default)]
struct Track {
    node: u64,
    at: Vec<u32>,
    next: usize,
}

#[derive(Default)]
pub struct Matcher {
    /// The sends waiting from earlier rounds, then those added since.
    sends: Vec<Sent>,
    /// How many of `sends` waited from earlier rounds.
    waited: usize,
    receives: Vec<Waiting<ReceiveHalf>>,
    /// The receives that waited into a round, emptied (for its capacity).
    spare_receives: Vec<Waiting<ReceiveHalf>>,
    /// The lowest confidence a blind match under a key got, while the key
    /// has sends waiting.
    ambiguity: WordMap<(u64, u64), f32>,
    round: u64,
    stats: MatcherStats,
    /// The fingerprint of each send, and each node's track (the indices of
    /// its sends, in order), kept as sends are added.
    fingerprints: Vec<u32>,
    tracks: Vec<Track>,
    // A round's index of its sends, those whose fingerprint another send
    // of the round has, and those taken (kept for their capacity).
    buckets: Buckets,
    shared: Vec<bool>,
    taken: Vec<bool>,
    /// Every receive goes to the index (to test the tracks against it).
    #[cfg(test)]
    no_tracks: bool,
}

impl Matcher {
    /// Adds the sends `node` (its `node_key`) handed over, in its id
    /// order, to those the next round pairs; `holder` gives the `etf_key`
    /// of the process holding a registered name (by its `name_key`) here:
    /// a send to a name counts as one to that process (to the node when
    /// no process holds it).
    pub fn add_sends(
        &mut self,
        node: u64,
        sends: impl IntoIterator<Item = SendHalf>,
        holder: impl Fn(u64) -> Option<u64>,
    ) {
        let track = self.track(node);
        for half in sends {
            let to = match half.to {
                To::Name(name) => holder(name).map_or(To::Node, To::Pid),
                to => to,
            };
            let (to, to_node) = match to {
                To::Pid(key) => (key, false),
                _ => (0, true),
            };
            self.tracks[track].at.push(self.sends.len() as u32);
            self.fingerprints.push(half.fingerprint);
            self.sends.push(Sent {
                id: half.id,
                sender: half.sender,
                to,
                track: track as u32,
                to_node,
            });
        }
    }

    /// The index of `node`'s track (a new one for a new node).
    fn track(&mut self, node: u64) -> usize {
        match self.tracks.iter().position(|t| t.node == node) {
            Some(t) => t,
            None => {
                self.tracks.push(Track {
                    node,
                    ..Track::default()
                });
                self.tracks.len() - 1
            }
        }
    }

    /// Lists the tracks anew, after some sends went.
    fn retrack(&mut self) {
        self.tracks.iter_mut().for_each(|t| t.at.clear());
        for (i, s) in self.sends.iter().enumerate() {
            self.tracks[s.track as usize].at.push(i as u32);
        }
    }

    /// How many sends are held (waiting and added): a mark for
    /// [`Matcher::forget_sends_from`].
    pub fn sends_held(&self) -> usize {
        self.sends.len()
    }

    /// Forgets the sends added after `mark` (a batch that turned out
    /// malformed); returns how many.
    pub fn forget_sends_from(&mut self, mark: usize) -> u64 {
        let mark = mark.max(self.waited).min(self.sends.len());
        let forgotten = self.sends.len() - mark;
        self.sends.truncate(mark);
        self.fingerprints.truncate(mark);
        self.retrack();
        forgotten as u64
    }

    /// One round: pairs the receives still waiting, then `receives` (this
    /// node's new ones, in id order), those stored before `settled`, with
    /// the sends waiting and added. The pairs go to `out`.
    pub fn run(
        &mut self,
        receives: impl IntoIterator<Item = ReceiveHalf>,
        settled: i64,
        out: &mut Vec<Matched>,
    ) {
        self.index();
        let round = self.round;
        let mut waiting = std::mem::take(&mut self.spare_receives);
        std::mem::swap(&mut waiting, &mut self.receives);
        let all =
            (waiting.drain(..)).chain(receives.into_iter().map(|half| Waiting { half, round }));
        for r in all {
            let matched = (r.half.at < settled).then(|| self.take(&r.half)).flatten();
            match matched {
                Some(m) => out.push(m),
                None => self.receives.push(r),
            }
        }
        self.spare_receives = waiting;
        if !self.ambiguity.is_empty() {
            let mut ambiguity = std::mem::take(&mut self.ambiguity);
            ambiguity.retain(|&key, _| self.waits(key));
            self.ambiguity = ambiguity;
        }
        // The sends left, in order, those that waited before first.
        let (mut kept, mut kept_earlier) = (0, 0);
        for i in 0..self.sends.len() {
            if !self.taken[i] {
                self.sends[kept] = self.sends[i];
                self.fingerprints[kept] = self.fingerprints[i];
                kept_earlier += usize::from(i < self.waited);
                kept += 1;
            }
        }
        self.sends.truncate(kept);
        self.fingerprints.truncate(kept);
        self.bound(kept_earlier);
        self.retrack();
        self.waited = self.sends.len();
        self.round += 1;
    }

    /// Indexes the sends by fingerprint; none taken yet, each track
    /// from its start.
    fn index(&mut self) {
        self.buckets.build(&self.fingerprints, &mut self.shared);
        self.taken.clear();
        self.taken.resize(self.sends.len(), false);
        self.tracks.iter_mut().for_each(|t| t.next = 0);
    }

    /// Moves the track of send `i` past it (just taken).
    fn passed(&mut self, i: usize) {
        let t = &mut self.tracks[self.sends[i].track as usize];
        if let Ok(p) = t.at.binary_search(&(i as u32)) {
            t.next = p + 1;
        }
    }

    /// The node (its `node_key`) send `i` came from.
    fn node_of(&self, i: usize) -> u64 {
        self.tracks[self.sends[i].track as usize].node
    }

    /// Whether a send of `key` (fingerprint, node) is left.
    fn waits(&self, (fingerprint, node): (u64, u64)) -> bool {
        (self.buckets.get(fingerprint as u32)).any(|i| !self.taken[i] && self.node_of(i) == node)
    }

    /// The pair the index would give `r`, found on its node's track, if
    /// the track settles it: `Some(None)` when the track's send with `r`'s
    /// fingerprint, the only one of the round, is not for `r`.
    fn take_on_track(&mut self, r: &ReceiveHalf) -> Option<Option<Matched>> {
        #[cfg(test)]
        if self.no_tracks {
            return None;
        }
        if !self.ambiguity.is_empty() {
            return None;
        }
        let t = self.tracks.iter_mut().find(|t| t.node == r.node)?;
        let (taken, fingerprints) = (&self.taken, &self.fingerprints);
        // Ahead first (receives mostly come in order), then just behind.
        let ahead = (t.next..t.at.len()).filter(|&p| !taken[t.at[p] as usize]);
        let behind = (t.next.saturating_sub(TRACK_BACK)..t.next).rev();
        let (p, i) = (ahead.take(TRACK_WINDOW).chain(behind))
            .map(|p| (p, t.at[p] as usize))
            .find(|&(_, i)| !taken[i] && fingerprints[i] == r.fingerprint)?;
        if self.shared[i] {
            return None;
        }
        let s = self.sends[i];
        let addressed = s.to_node || s.to == r.receiver;
        if !addressed || (r.sender != 0 && s.sender != r.sender) {
            return Some(None);
        }
        t.next = p + 1;
        self.taken[i] = true;
        let key = (r.fingerprint.into(), r.node);
        let confidence = self.confidence(key, 1, r.sender != 0, true);
        Some(Some(Matched {
            receive: r.id,
            node: r.node,
            send: s.id,
            confidence,
        }))
    }

    fn take(&mut self, r: &ReceiveHalf) -> Option<Matched> {
        if let Some(settled) = self.take_on_track(r) {
            return settled;
        }
        let key = (r.fingerprint.into(), r.node);
        let sent_by = |s: &Sent| r.sender == 0 || s.sender == r.sender;
        for to in [To::Pid(r.receiver), To::Node] {
            // The first candidate, and how many processes sent them.
            let (mut first, mut sender, mut others) = (None, 0, Vec::new());
            for i in self.buckets.get(r.fingerprint) {
                if self.taken[i] {
                    continue;
                }
                let s = &self.sends[i];
                let candidate = self.node_of(i) == r.node && s.to() == to && sent_by(s);
                if !candidate {
                    continue;
                }
                if first.is_none() {
                    (first, sender) = (Some(i), s.sender);
                } else if s.sender != sender && !others.contains(&s.sender) {
                    others.push(s.sender);
                }
            }
            let Some(first) = first else { continue };
            self.taken[first] = true;
            self.passed(first);
            let emptied = !self.waits(key);
            let send = self.sends[first];
            let confidence = self.confidence(key, 1 + others.len(), r.sender != 0, emptied);
            return Some(Matched {
                receive: r.id,
                node: r.node,
                send: send.id,
                confidence,
            });
        }
        None
    }

    /// The confidence of a match among sends from `senders` processes,
    /// remembering an ambiguity while sends of `key` wait; counts it.
    fn confidence(&mut self, key: (u64, u64), senders: usize, known: bool, emptied: bool) -> f32 {
        let mut confidence = 1.0 / senders as f32;
        if !known && (confidence < 1.0 || !self.ambiguity.is_empty()) {
            if let Some(&earlier) = self.ambiguity.get(&key) {
                confidence = confidence.min(earlier);
            }
            if confidence < 1.0 && !emptied {
                self.ambiguity.insert(key, confidence);
            }
        }
        if emptied && !self.ambiguity.is_empty() {
            self.ambiguity.remove(&key);
        }
        self.stats.linked += 1;
        self.stats.ambiguous += u64::from(confidence < 1.0);
        confidence
    }

    /// Past `MAX_WAITING`, drops what waited since an earlier round (the
    /// first `sends_earlier` sends).
    fn bound(&mut self, sends_earlier: usize) {
        let round = self.round;
        if self.receives.len() > MAX_WAITING {
            let before = self.receives.len();
            self.receives.retain(|w| w.round == round);
            self.stats.dropped += (before - self.receives.len()) as u64;
        }
        if self.sends.len() > MAX_WAITING {
            self.sends.drain(..sends_earlier);
            self.fingerprints.drain(..sends_earlier);
            self.stats.dropped += sends_earlier as u64;
        }
    }

    /// Forgets every waiting half (counted as dropped).
    pub fn clear(&mut self) {
        self.stats.dropped += (self.sends.len() + self.receives.len()) as u64;
        self.sends.clear();
        self.fingerprints.clear();
        self.retrack();
        self.waited = 0;
        self.receives.clear();
        self.ambiguity.clear();
    }

    pub fn stats(&self) -> MatcherStats {
        MatcherStats {
            waiting_sends: self.sends.len() as u64,
            waiting_receives: self.receives.len() as u64,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 0xa0b;
    const B: u64 = 0xb0b;

    fn send(id: u64, sender: u64, to: To, fingerprint: u32) -> SendHalf {
        SendHalf {
            id,
            sender,
            to,
            fingerprint,
        }
    }

    fn receive(id: u64, receiver: u64, node: u64, fingerprint: u32) -> ReceiveHalf {
        ReceiveHalf {
            id,
            at: id as i64,
            receiver,
            node,
            sender: 0,
            fingerprint,
        }
    }

    fn no_names(_: u64) -> Option<u64> {
        None
    }

    /// One round's input: each node's sends, and this node's receives.
    struct Round {
        inbound: Vec<(u64, Vec<SendHalf>)>,
        receives: Vec<ReceiveHalf>,
        settled: i64,
    }

    impl Default for Round {
        fn default() -> Self {
            Round {
                inbound: Vec::new(),
                receives: Vec::new(),
                settled: i64::MAX,
            }
        }
    }

    impl Round {
        fn sends(mut self, node: u64, sends: &[SendHalf]) -> Self {
            self.inbound.push((node, sends.to_vec()));
            self
        }

        fn receives(mut self, receives: impl IntoIterator<Item = ReceiveHalf>) -> Self {
            self.receives.extend(receives);
            self
        }

        fn settled(mut self, before: i64) -> Self {
            self.settled = before;
            self
        }

        fn run(
            self,
            m: &mut Matcher,
            holder: impl Fn(u64) -> Option<u64>,
        ) -> Vec<(u64, u64, u64, f32)> {
            for (node, sends) in self.inbound {
                m.add_sends(node, sends, &holder);
            }
            let mut out = Vec::new();
            m.run(self.receives, self.settled, &mut out);
            out.iter()
                .map(|x| (x.receive, x.node, x.send, x.confidence))
                .collect()
        }
    }

    fn round() -> Round {
        Round::default()
    }

    #[test]
    fn identical_messages_from_two_nodes_each_find_their_own_nodes_send() {
        let mut m = Matcher::default();
        let matched = round()
            .sends(A, &[send(10, 1, To::Pid(9), 7)])
            .sends(B, &[send(20, 2, To::Pid(9), 7)])
            .receives([receive(1, 9, B, 7), receive(2, 9, A, 7)])
            .run(&mut m, no_names);
        assert_eq!(matched, [(1, B, 20, 1.0), (2, A, 10, 1.0)]);
        assert_eq!(m.stats().linked, 2);
    }

    #[test]
    fn one_senders_messages_pair_in_order_two_senders_are_ambiguous() {
        let mut m = Matcher::default();
        let same = [send(10, 1, To::Pid(9), 7), send(11, 1, To::Pid(9), 7)];
        let matched = round()
            .sends(A, &same)
            .receives([receive(1, 9, A, 7), receive(2, 9, A, 7)])
            .run(&mut m, no_names);
        assert_eq!(matched, [(1, A, 10, 1.0), (2, A, 11, 1.0)]);

        let two = [send(12, 1, To::Pid(9), 7), send(13, 2, To::Pid(9), 7)];
        let matched = round()
            .sends(A, &two)
            .receives([receive(3, 9, A, 7)])
            .run(&mut m, no_names);
        assert_eq!(matched, [(3, A, 12, 0.5)]);
        assert_eq!(m.stats().ambiguous, 1);
        // The other one, left alone and waiting to a later round, is as
        // uncertain.
        let matched = round()
            .receives([receive(4, 9, A, 7)])
            .run(&mut m, no_names);
        assert_eq!(matched, [(4, A, 13, 0.5)]);

        // A receive that knows its sender's pid takes that sender's send.
        let two = [send(14, 1, To::Pid(9), 7), send(15, 2, To::Pid(9), 7)];
        let known = ReceiveHalf {
            sender: 2,
            ..receive(5, 9, A, 7)
        };
        let matched = round()
            .sends(A, &two)
            .receives([known])
            .run(&mut m, no_names);
        assert_eq!(matched, [(5, A, 15, 1.0)]);
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
        let receives = [1, 2, 3, 4].map(|fp| receive(fp.into(), 9, A, fp));
        let matched = round()
            .sends(A, &sends)
            .receives(receives)
            .run(&mut m, holder);
        // A name no process holds counts as the node.
        assert_eq!(matched, [(1, A, 10, 1.0), (2, A, 11, 1.0), (4, A, 12, 1.0)]);
        // Another receiver's pid is not this receive's.
        let other = [send(13, 1, To::Pid(8), 3), send(14, 1, To::Name(5), 3)];
        assert_eq!(round().sends(A, &other).run(&mut m, |_| Some(8)), []);
        assert_eq!(m.stats().waiting_receives, 1);
        assert_eq!(m.stats().waiting_sends, 2);
    }

    #[test]
    fn during_a_session_only_receives_stored_before_the_settling_time_are_paired() {
        let mut m = Matcher::default();
        // Receive 2 is recent: the identical send from process 2 may still
        // be on its way into node A's store.
        let matched = round()
            .sends(A, &[send(10, 1, To::Pid(9), 7)])
            .receives([receive(1, 9, A, 6), receive(2, 9, A, 7)])
            .settled(2)
            .run(&mut m, no_names);
        assert_eq!(matched, []);
        assert_eq!(m.stats().waiting_receives, 2);
        let matched = round()
            .sends(A, &[send(11, 2, To::Pid(9), 7)])
            .run(&mut m, no_names);
        assert_eq!(matched, [(2, A, 10, 0.5)]);
        assert_eq!(m.stats().waiting_receives, 1);
    }

    #[test]
    fn halves_wait_for_their_other_half_in_a_later_round() {
        let mut m = Matcher::default();
        let r = round().receives([receive(1, 9, A, 7)]);
        assert_eq!(r.run(&mut m, no_names), []);
        let s = round().sends(A, &[send(10, 1, To::Pid(9), 7)]);
        assert_eq!(s.run(&mut m, no_names), [(1, A, 10, 1.0)]);

        let s = round().sends(A, &[send(11, 1, To::Pid(9), 8)]);
        assert_eq!(s.run(&mut m, no_names), []);
        let r = round().receives([receive(2, 9, A, 8)]);
        assert_eq!(r.run(&mut m, no_names), [(2, A, 11, 1.0)]);
        assert_eq!(m.stats().waiting_receives, 0);
        assert_eq!(m.stats().waiting_sends, 0);

        let both = round()
            .receives([receive(3, 9, A, 7)])
            .sends(A, &[send(12, 1, To::Pid(8), 7)]);
        assert_eq!(both.run(&mut m, no_names), []);
        m.clear();
        let s = m.stats();
        assert_eq!((s.waiting_sends, s.waiting_receives, s.dropped), (0, 0, 2));
    }

    /// A small xorshift generator (tests only need variety, not quality).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Random rounds (a few message kinds sent many times, several nodes
    /// and senders, receives out of order, receives of sends never handed
    /// over, receives not yet settled): the tracks pair exactly as the index
    /// alone does.
    #[test]
    fn tracks_pair_as_the_index_would() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..300 {
            let (mut fast, mut slow) = (Matcher::default(), Matcher::default());
            slow.no_tracks = true;
            let kinds = 1 + rng.below(if case % 2 == 0 { 4 } else { 1000 });
            let mut next_id = 1;
            for n in 0..3 {
                let mut inbound = Vec::new();
                let mut receives = Vec::new();
                for node in [A, B] {
                    let mut sends = Vec::new();
                    for _ in 0..rng.below(40) {
                        let to = match rng.below(5) {
                            0 => To::Node,
                            1 => To::Name(1),
                            r => To::Pid(8 + r),
                        };
                        let (sender, fp) = (1 + rng.below(3), 1 + rng.below(kinds) as u32);
                        sends.push(send(next_id, sender, to, fp));
                        let receiver = match to {
                            To::Pid(p) => p,
                            _ => 8 + rng.below(4),
                        };
                        let mut r = receive(next_id + 1, receiver, node, fp);
                        r.at = rng.below(4) as i64;
                        if rng.below(2) == 0 {
                            r.sender = sender;
                        }
                        if rng.below(8) != 0 {
                            receives.push(r);
                        }
                        next_id += 2;
                    }
                    if rng.below(6) != 0 {
                        inbound.push((node, sends));
                    }
                }
                // Neighbours swapped: receives mostly in their sends' order.
                for i in 1..receives.len() {
                    if rng.below(3) == 0 {
                        receives.swap(i - 1, i);
                    }
                }
                let settled = if n == 2 { i64::MAX } else { 3 };
                let pairs = |m: &mut Matcher| {
                    let mut r = round().receives(receives.clone()).settled(settled);
                    for (node, sends) in &inbound {
                        r = r.sends(*node, sends);
                    }
                    r.run(m, |name| (name == 1).then_some(9))
                };
                assert_eq!(pairs(&mut fast), pairs(&mut slow), "case {case} round {n}");
                assert_eq!(fast.stats(), slow.stats(), "case {case} round {n}");
            }
        }
    }

    #[test]
    fn past_the_bound_halves_from_earlier_rounds_are_dropped_and_counted() {
        let mut m = Matcher::default();
        let many = (0..MAX_WAITING as u64).map(|id| receive(id, 9, A, 1));
        round().receives(many).run(&mut m, no_names);
        round()
            .receives([receive(u64::MAX, 9, A, 2)])
            .run(&mut m, no_names);
        let s = m.stats();
        assert_eq!((s.dropped, s.waiting_receives), (MAX_WAITING as u64, 1));

        let mut m = Matcher::default();
        let many: Vec<SendHalf> = (0..MAX_WAITING as u64)
            .map(|id| send(id, 1, To::Pid(9), 1))
            .collect();
        round().sends(A, &many).run(&mut m, no_names);
        let last = send(u64::MAX, 1, To::Pid(9), 2);
        round().sends(A, &[last]).run(&mut m, no_names);
        let s = m.stats();
        assert_eq!((s.dropped, s.waiting_sends), (MAX_WAITING as u64, 1));
        let matched = round()
            .receives([receive(7, 9, A, 2)])
            .run(&mut m, no_names);
        assert_eq!(
            matched,
            [(7, A, u64::MAX, 1.0)],
            "the send kept is the new one"
        );
    }
}
