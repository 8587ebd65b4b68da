//! Message strategy: match each receive to its send.
//!
//! A *channel* is (receiver pid, fingerprint of the message bytes). The BEAM
//! keeps order per sender -> receiver pair, and each pid's events arrive in
//! order, so within a channel the k-th receive from a sender is that
//! sender's k-th send: both halves wait in FIFO queues until the other
//! arrives, whichever comes first. A receive that knows its sender matches
//! only that sender's sends (confidence 1.0). A *blind* receive (sender
//! unknown) takes the oldest pending send; it is certain only while the
//! channel has seen a single sender, so its confidence is `1 / senders seen`.
//! When a new sender shows up on a channel later, the recent blind matches
//! of that channel are patched down to the new `1 / senders` (so a link made
//! before the ambiguity was visible is never left at 1.0).
//!
//! A send to a registered name counts as one to the pid holding it when
//! the event says which (the tracer records `{name, pid}`). A send not
//! addressed to a pid (a name alone, a process alias as in a
//! `GenServer.call` reply, a port) has no channel. It waits by (sender,
//! fingerprint) instead, where receives that know their sender also wait
//! when their channel had nothing for them; a receive registered in both
//! places leaves both when it is matched. Its confidence is `1 / n` when `n`
//! candidates were waiting on the other side, else 1.0.
//!
//! A matched receive takes the send's id as correlation id and links
//! `{:receives, send}`; until then it has correlation id 0, confidence 0.
//!
//! A channel or by-sender entry left with nothing waiting (and, for a
//! channel, no blind match to downgrade) is forgotten at once, so the maps
//! hold what waits, not every distinct message seen within the TTL. A
//! later blind receive on a forgotten channel can then only match sends
//! still pending, and if an older sender's send arrives late it downgrades
//! that match as usual.

use std::hash::Hasher;

use super::pending::{
    entry_or_wait, wait_receive, Addressed, BySender, Channel, Entry, Half, Pending,
};
use super::queue::Queue;
use super::{Change, CorrelatorStats, Patch};
use crate::event::{Correlation, Event, Link, LinkKind};
use crate::hash::WordHasher;
use crate::links::Links;

#[derive(Default)]
pub struct Messages {
    channels: Pending<Channel>,
    by_sender: Pending<BySender>,
    /// Sends waiting in a channel or by sender.
    pending_sends: usize,
    /// Receives waiting in a channel (some also wait by sender).
    pending_receives: usize,
}

/// Fingerprint of a message's encoded bytes.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = WordHasher::default();
    h.write(bytes);
    h.write_usize(bytes.len());
    h.finish()
}

/// Removes the entry with `id`; both queues of a receive keep arrival
/// order, so it is almost always the front one (O(1)).
fn take_by_id<T>(queue: &mut Queue<T>, id: u64, id_of: impl Fn(&T) -> u64) {
    let at = queue.iter().position(|t| id_of(t) == id);
    if let Some(i) = at {
        queue.remove(i);
    }
}

/// Links a receive, as it is correlated, to its send.
fn links_to(c: &mut Correlation, send_id: u64, confidence: f32, stats: &mut CorrelatorStats) {
    if confidence < 1.0 {
        stats.ambiguous_matches += 1;
    }
    stats.linked += 1;
    c.confidence = confidence;
    c.correlation_id = send_id;
    c.links = Links::one(receives_link(send_id));
}

/// Links a waiting receive to the send that just arrived.
fn matched(
    receive_id: u64,
    send_id: u64,
    confidence: f32,
    stats: &mut CorrelatorStats,
    patches: &mut Vec<Patch>,
) {
    if confidence < 1.0 {
        stats.ambiguous_matches += 1;
    }
    stats.linked += 1;
    patches.push(Patch {
        id: receive_id,
        change: Change::Matched {
            link: receives_link(send_id),
            correlation_id: send_id,
            confidence,
        },
    });
}

fn receives_link(send_id: u64) -> Link {
    Link {
        kind: LinkKind::Receives,
        target: send_id,
    }
}

impl Messages {
    pub fn send(&mut self, e: &Event, stats: &mut CorrelatorStats, patches: &mut Vec<Patch>) {
        let fp = fingerprint(e.data.as_bytes());
        match e.peer.destination_pid() {
            Some(receiver) => self.addressed_send(e, receiver, fp, stats, patches),
            None => self.unaddressed_send(e, fp, stats, patches),
        }
    }

    /// Forgets a channel and a by-sender entry that hold nothing pending
    /// (and, for a channel, no blind match a new sender could make
    /// ambiguous): with every message distinct, as `GenServer.call`s are,
    /// the maps then hold only what waits, not every message ever seen.
    /// Called on the full entries an event touched (a lone one is never
    /// idle, and the paths that empty one remove it).
    fn forget_idle(&mut self, channel: Option<(u64, u64)>, by_sender: Option<(u64, u64)>) {
        if let Some(key) = channel {
            if self.channels.get(&key).is_some_and(Entry::is_idle) {
                self.channels.remove(&key);
            }
        }
        if let Some(key) = by_sender {
            if self.by_sender.get(&key).is_some_and(Entry::is_idle) {
                self.by_sender.remove(&key);
            }
        }
    }

    fn addressed_send(
        &mut self,
        e: &Event,
        receiver: u64,
        fp: u64,
        stats: &mut CorrelatorStats,
        patches: &mut Vec<Patch>,
    ) {
        let key = (receiver, fp);
        let Some(entry) = entry_or_wait(&mut self.channels, key, Half::send(e)) else {
            self.pending_sends += 1;
            return;
        };
        // A receive from this sender waiting alone: the pair, certain; the
        // channel is left idle.
        if let Entry::Receive(r) = *entry {
            if r.sender != 0 && r.sender == e.pid {
                self.channels.remove(&key);
                self.pending_receives -= 1;
                self.unwait_by_sender((r.sender, fp), r.id);
                matched(r.id, e.id, 1.0, stats, patches);
                return;
            }
        }
        let ch = entry.full();
        ch.waiting.seen_at = ch.waiting.seen_at.max(e.timestamp);
        ch.saw_sender(e.pid, patches);
        let waiting = (ch.waiting.receives.iter()).position(|r| r.sender == e.pid || r.sender == 0);
        match waiting.and_then(|i| ch.waiting.receives.remove(i)) {
            Some(r) => {
                self.pending_receives -= 1;
                let confidence = if r.sender == 0 {
                    ch.remember_blind(r.id);
                    ch.blind_confidence()
                } else {
                    1.0
                };
                if r.sender != 0 {
                    self.unwait_by_sender((r.sender, fp), r.id);
                }
                matched(r.id, e.id, confidence, stats, patches);
            }
            None => {
                self.pending_sends += 1;
                ch.waiting.sends.push_back(Half::send(e));
            }
        }
        self.forget_idle(Some(key), None);
    }

    /// The receive `id`, matched, no longer waits by its sender.
    fn unwait_by_sender(&mut self, key: (u64, u64), id: u64) {
        match self.by_sender.get_mut(&key) {
            Some(Entry::Receive(r)) if r.id == id => {
                self.by_sender.remove(&key);
            }
            Some(Entry::Full(bs)) => {
                take_by_id(&mut bs.receives, id, |w| w.id);
                self.forget_idle(None, Some(key));
            }
            _ => {}
        }
    }

    /// The receive `id`, matched by sender, no longer waits in its channel.
    fn unwait_in_channel(&mut self, key: (u64, u64), id: u64) {
        match self.channels.get_mut(&key) {
            Some(Entry::Receive(r)) if r.id == id => {
                self.channels.remove(&key);
            }
            Some(Entry::Full(ch)) => {
                take_by_id(&mut ch.waiting.receives, id, |w| w.id);
                self.forget_idle(Some(key), None);
            }
            _ => {}
        }
    }

    /// A send to a name, alias or port: match a sender-known receive waiting
    /// by sender, or wait there.
    fn unaddressed_send(
        &mut self,
        e: &Event,
        fp: u64,
        stats: &mut CorrelatorStats,
        patches: &mut Vec<Patch>,
    ) {
        stats.unaddressed_sends += 1;
        let key = (e.pid, fp);
        let Some(entry) = entry_or_wait(&mut self.by_sender, key, Half::send(e)) else {
            self.pending_sends += 1;
            return;
        };
        let (r, candidates) = match *entry {
            Entry::Receive(r) => {
                self.by_sender.remove(&key);
                (r, 1)
            }
            _ => {
                let bs = entry.full();
                bs.seen_at = bs.seen_at.max(e.timestamp);
                let candidates = bs.receives.len();
                let Some(r) = bs.receives.pop_front() else {
                    self.pending_sends += 1;
                    bs.sends.push_back(Half::send(e));
                    return;
                };
                self.forget_idle(None, Some(key));
                (r, candidates)
            }
        };
        self.unwait_in_channel((r.receiver, fp), r.id);
        self.pending_receives -= 1;
        matched(r.id, e.id, 1.0 / candidates as f32, stats, patches);
    }

    pub fn receive(
        &mut self,
        e: &Event,
        c: &mut Correlation,
        stats: &mut CorrelatorStats,
        patches: &mut Vec<Patch>,
    ) {
        stats.linkable += 1;
        let sender = e.peer.as_pid().unwrap_or(0);
        let fp = fingerprint(e.data.as_bytes());
        self.match_receive(e, sender, fp, c, stats, patches);
    }

    /// Matches a receive with a send waiting in its channel, else by its
    /// sender, else leaves it waiting in both places.
    fn match_receive(
        &mut self,
        e: &Event,
        sender: u64,
        fp: u64,
        c: &mut Correlation,
        stats: &mut CorrelatorStats,
        patches: &mut Vec<Patch>,
    ) {
        let key = (e.pid, fp);
        let in_channel = self.match_in_channel(key, e, sender, c, stats, patches);
        if in_channel == Some(true) {
            return;
        }
        if sender != 0 && self.match_by_sender((sender, fp), c, stats) {
            if in_channel.is_some() {
                self.forget_idle(Some(key), None);
            }
            return;
        }
        self.pending_receives += 1;
        c.correlation_id = 0;
        c.confidence = 0.0;
        let half = Half {
            id: e.id,
            sender,
            at: e.timestamp,
        };
        wait_receive(&mut self.channels, key, half);
        if sender != 0 {
            let waiting = Addressed {
                id: e.id,
                receiver: e.pid,
                at: e.timestamp,
            };
            wait_receive(&mut self.by_sender, (sender, fp), waiting);
        }
    }

    /// Links a receive to a send waiting in its channel `key`: `None` if
    /// there is no such channel, else whether it linked.
    fn match_in_channel(
        &mut self,
        key: (u64, u64),
        e: &Event,
        sender: u64,
        c: &mut Correlation,
        stats: &mut CorrelatorStats,
        patches: &mut Vec<Patch>,
    ) -> Option<bool> {
        let entry = self.channels.get_mut(&key)?;
        // A send from this sender waiting alone: the pair, certain; the
        // channel is left idle.
        if let Entry::Send(s) = *entry {
            if sender != 0 && s.sender == sender {
                self.channels.remove(&key);
                self.pending_sends -= 1;
                links_to(c, s.id, 1.0, stats);
                return Some(true);
            }
        }
        let ch = entry.full();
        ch.waiting.seen_at = ch.waiting.seen_at.max(e.timestamp);
        ch.saw_sender(sender, patches);
        let waiting = (ch.waiting.sends.iter()).position(|s| sender == 0 || s.sender == sender);
        let Some(s) = waiting.and_then(|i| ch.waiting.sends.remove(i)) else {
            return Some(false);
        };
        self.pending_sends -= 1;
        let confidence = if sender == 0 {
            ch.remember_blind(e.id);
            ch.blind_confidence()
        } else {
            1.0
        };
        links_to(c, s.id, confidence, stats);
        self.forget_idle(Some(key), None);
        Some(true)
    }

    /// Links a receive to the oldest send waiting by its (sender,
    /// fingerprint), `1 / n` sure when `n` waited; false if none did.
    fn match_by_sender(
        &mut self,
        key: (u64, u64),
        c: &mut Correlation,
        stats: &mut CorrelatorStats,
    ) -> bool {
        let (send, candidates) = match self.by_sender.get_mut(&key) {
            Some(&mut Entry::Send(s)) => {
                self.by_sender.remove(&key);
                (s, 1)
            }
            Some(Entry::Full(bs)) if !bs.sends.is_empty() => {
                let candidates = bs.sends.len();
                let send = bs.sends.pop_front().expect("not empty");
                self.forget_idle(None, Some(key));
                (send, candidates)
            }
            _ => return false,
        };
        self.pending_sends -= 1;
        links_to(c, send.id, 1.0 / candidates as f32, stats);
        true
    }

    /// Pending halves and channels (what the entry bound counts).
    pub fn entries(&self) -> usize {
        self.pending_sends + self.pending_receives + self.channels.len() + self.by_sender.len()
    }

    pub fn pending_sends(&self) -> usize {
        self.pending_sends
    }

    pub fn pending_receives(&self) -> usize {
        self.pending_receives
    }

    /// Counts in `ages` each entry [`Messages::entries`] counts: a pending
    /// half by its timestamp, a channel or by-sender entry by the last it
    /// saw (it goes once its halves are gone and it is idle that long).
    /// (A receive waiting by sender also waits in its channel, where it
    /// is counted.)
    pub(crate) fn count_ages(&self, now: i64, ages: &mut super::Ages) {
        for ch in self.channels.values() {
            ages.add(now, ch.seen_at());
            (ch.sends().chain(ch.receives())).for_each(|h| ages.add(now, h.at));
        }
        for bs in self.by_sender.values() {
            ages.add(now, bs.seen_at());
            bs.sends().for_each(|h| ages.add(now, h.at));
        }
    }

    /// Drops pending halves older than `cutoff` and channels idle since;
    /// returns how many pending halves went.
    pub fn drop_older_than(&mut self, cutoff: i64) -> u64 {
        let (mut before, mut sends, mut receives) = (0, 0, 0);
        self.channels.retain(|_, ch| {
            let (s, r) = ch.waiting();
            before += s + r;
            let keep = ch.retain_since(cutoff);
            if keep {
                let (s, r) = ch.waiting();
                (sends, receives) = (sends + s, receives + r);
            }
            keep
        });
        self.by_sender.retain(|_, bs| {
            before += bs.waiting().0;
            let keep = bs.retain_since(cutoff);
            if keep {
                sends += bs.waiting().0;
            }
            keep
        });
        self.pending_sends = sends;
        self.pending_receives = receives;
        (before - sends - receives) as u64
    }

    /// Pending sends and receives per age bucket at `now` (see
    /// [`super::AGE_BOUNDS_NS`]).
    pub fn pending_by_age(&self, now: i64) -> ([u64; 4], [u64; 4]) {
        let bucket = |at: i64| {
            super::AGE_BOUNDS_NS
                .iter()
                .position(|&b| now - at < b)
                .unwrap_or(3)
        };
        let (mut sends, mut receives) = ([0u64; 4], [0u64; 4]);
        for ch in self.channels.values() {
            ch.sends().for_each(|h| sends[bucket(h.at)] += 1);
            ch.receives().for_each(|h| receives[bucket(h.at)] += 1);
        }
        for bs in self.by_sender.values() {
            bs.sends().for_each(|h| sends[bucket(h.at)] += 1);
        }
        (sends, receives)
    }

    pub fn memory_bytes(&self) -> usize {
        fn of<F: super::pending::Full>(map: &Pending<F>) -> usize {
            map.capacity() * (std::mem::size_of::<((u64, u64), Entry<F>)>() + 1)
                + map.values().map(Entry::heap_bytes).sum::<usize>()
        }
        of(&self.channels) + of(&self.by_sender)
    }
}
