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
//! A send not addressed to a pid (a registered name, a process alias as in
//! a `GenServer.call` reply, a port) has no channel. It waits by (sender,
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

use super::queue::Queue;
use super::{Change, CorrelatorStats, Patch};
use crate::event::{Correlation, Event, Link, LinkKind};
use crate::hash::{WordHasher, WordMap};
use crate::links::Links;

/// Blind matches remembered per channel for a later downgrade.
const MAX_BLIND: usize = 1024;

#[derive(Clone, Copy)]
struct Half {
    id: u64,
    /// Sender pid; 0 when a receive does not know it.
    sender: u64,
    at: i64,
}

impl Half {
    /// A send waiting for its receive.
    fn send(e: &Event) -> Half {
        Half {
            id: e.id,
            sender: e.pid,
            at: e.timestamp,
        }
    }
}

#[derive(Default)]
struct Channel {
    senders: Queue<u64>,
    sends: Queue<Half>,
    receives: Queue<Half>,
    blind: Queue<u64>,
    seen_at: i64,
}

impl Channel {
    /// Notes a sender; when it is new and the channel becomes ambiguous,
    /// lowers the confidence of the recent blind matches.
    fn saw_sender(&mut self, sender: u64, patches: &mut Vec<Patch>) {
        if sender == 0 || self.senders.iter().any(|&s| s == sender) {
            return;
        }
        self.senders.push_back(sender);
        if self.senders.len() > 1 {
            let confidence = self.blind_confidence();
            patches.extend(self.blind.iter().map(|&id| Patch {
                id,
                change: Change::Confidence(confidence),
            }));
        }
    }

    fn blind_confidence(&self) -> f32 {
        1.0 / self.senders.len().max(1) as f32
    }

    fn is_idle(&self) -> bool {
        self.sends.is_empty() && self.receives.is_empty() && self.blind.is_empty()
    }

    fn remember_blind(&mut self, receive_id: u64) {
        if self.blind.len() == MAX_BLIND {
            self.blind.pop_front();
        }
        self.blind.push_back(receive_id);
    }
}

impl BySender {
    fn is_idle(&self) -> bool {
        self.sends.is_empty() && self.receives.is_empty()
    }
}

/// A receive waiting by (sender, fingerprint), with its receiver so its
/// channel entry can be found.
#[derive(Clone, Copy)]
struct Addressed {
    id: u64,
    receiver: u64,
    at: i64,
}

/// Unaddressed sends and sender-known receives of one (sender, fingerprint).
#[derive(Default)]
struct BySender {
    sends: Queue<Half>,
    receives: Queue<Addressed>,
    seen_at: i64,
}

#[derive(Default)]
pub struct Messages {
    channels: WordMap<(u64, u64), Channel>,
    by_sender: WordMap<(u64, u64), BySender>,
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
        let receiver = match e.peer.as_pid() {
            Some(receiver) => {
                self.addressed_send(e, receiver, fp, stats, patches);
                Some(receiver)
            }
            None => self.unaddressed_send(e, fp, stats, patches),
        };
        self.forget_idle(receiver.map(|r| (r, fp)), Some((e.pid, fp)));
    }

    /// Forgets a channel and a by-sender entry that hold nothing pending
    /// (and, for a channel, no blind match a new sender could make
    /// ambiguous): with every message distinct, as `GenServer.call`s are,
    /// the maps then hold only what waits, not every message ever seen.
    fn forget_idle(&mut self, channel: Option<(u64, u64)>, by_sender: Option<(u64, u64)>) {
        if let Some(key) = channel {
            if self.channels.get(&key).is_some_and(Channel::is_idle) {
                self.channels.remove(&key);
            }
        }
        if let Some(key) = by_sender {
            if self.by_sender.get(&key).is_some_and(BySender::is_idle) {
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
        let ch = self.channels.entry((receiver, fp)).or_default();
        ch.seen_at = ch.seen_at.max(e.timestamp);
        ch.saw_sender(e.pid, patches);
        let waiting = ch
            .receives
            .iter()
            .position(|r| r.sender == e.pid || r.sender == 0);
        match waiting.and_then(|i| ch.receives.remove(i)) {
            Some(r) => {
                self.pending_receives -= 1;
                let confidence = if r.sender == 0 {
                    ch.remember_blind(r.id);
                    ch.blind_confidence()
                } else {
                    1.0
                };
                if r.sender != 0 {
                    if let Some(bs) = self.by_sender.get_mut(&(r.sender, fp)) {
                        take_by_id(&mut bs.receives, r.id, |w| w.id);
                    }
                }
                matched(r.id, e.id, confidence, stats, patches);
            }
            None => {
                self.pending_sends += 1;
                ch.sends.push_back(Half::send(e));
            }
        }
    }

    /// A send to a name, alias or port: match a sender-known receive waiting
    /// by sender (returns its receiver), or wait there.
    fn unaddressed_send(
        &mut self,
        e: &Event,
        fp: u64,
        stats: &mut CorrelatorStats,
        patches: &mut Vec<Patch>,
    ) -> Option<u64> {
        stats.unaddressed_sends += 1;
        let bs = self.by_sender.entry((e.pid, fp)).or_default();
        bs.seen_at = bs.seen_at.max(e.timestamp);
        let candidates = bs.receives.len();
        match bs.receives.pop_front() {
            Some(r) => {
                if let Some(ch) = self.channels.get_mut(&(r.receiver, fp)) {
                    take_by_id(&mut ch.receives, r.id, |w| w.id);
                }
                self.pending_receives -= 1;
                matched(r.id, e.id, 1.0 / candidates as f32, stats, patches);
                Some(r.receiver)
            }
            None => {
                self.pending_sends += 1;
                bs.sends.push_back(Half::send(e));
                None
            }
        }
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
        self.forget_idle(Some((e.pid, fp)), (sender != 0).then_some((sender, fp)));
    }

    fn match_receive(
        &mut self,
        e: &Event,
        sender: u64,
        fp: u64,
        c: &mut Correlation,
        stats: &mut CorrelatorStats,
        patches: &mut Vec<Patch>,
    ) {
        let ch = self.channels.entry((e.pid, fp)).or_default();
        ch.seen_at = ch.seen_at.max(e.timestamp);
        ch.saw_sender(sender, patches);
        let waiting = ch
            .sends
            .iter()
            .position(|s| sender == 0 || s.sender == sender);
        match waiting.and_then(|i| ch.sends.remove(i)) {
            Some(s) => {
                self.pending_sends -= 1;
                let confidence = if sender == 0 {
                    ch.remember_blind(e.id);
                    ch.blind_confidence()
                } else {
                    1.0
                };
                links_to(c, s.id, confidence, stats);
            }
            None => {
                let by_sender = (sender != 0)
                    .then(|| self.by_sender.get_mut(&(sender, fp)))
                    .flatten()
                    .filter(|bs| !bs.sends.is_empty());
                if let Some(bs) = by_sender {
                    let candidates = bs.sends.len();
                    let s = bs.sends.pop_front().expect("not empty");
                    self.pending_sends -= 1;
                    links_to(c, s.id, 1.0 / candidates as f32, stats);
                    return;
                }
                self.pending_receives += 1;
                c.correlation_id = 0;
                c.confidence = 0.0;
                ch.receives.push_back(Half {
                    id: e.id,
                    sender,
                    at: e.timestamp,
                });
                if sender != 0 {
                    let bs = self.by_sender.entry((sender, fp)).or_default();
                    bs.seen_at = bs.seen_at.max(e.timestamp);
                    bs.receives.push_back(Addressed {
                        id: e.id,
                        receiver: e.pid,
                        at: e.timestamp,
                    });
                }
            }
        }
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
    pub(crate) fn count_ages(&self, now: i64, ages: &mut super::Ages) {
        for ch in self.channels.values() {
            ages.add(now, ch.seen_at);
            (ch.sends.iter().chain(ch.receives.iter())).for_each(|h| ages.add(now, h.at));
        }
        for bs in self.by_sender.values() {
            ages.add(now, bs.seen_at);
            bs.sends.iter().for_each(|h| ages.add(now, h.at));
        }
    }

    /// Drops pending halves older than `cutoff` and channels idle since;
    /// returns how many pending halves went.
    pub fn drop_older_than(&mut self, cutoff: i64) -> u64 {
        let mut dropped = 0;
        let (mut sends, mut receives) = (0, 0);
        self.channels.retain(|_, ch| {
            let before = ch.sends.len() + ch.receives.len();
            ch.sends.retain(|h| h.at >= cutoff);
            ch.receives.retain(|h| h.at >= cutoff);
            dropped += (before - ch.sends.len() - ch.receives.len()) as u64;
            sends += ch.sends.len();
            receives += ch.receives.len();
            ch.seen_at >= cutoff || !ch.sends.is_empty() || !ch.receives.is_empty()
        });
        self.by_sender.retain(|_, bs| {
            let before = bs.sends.len();
            bs.sends.retain(|h| h.at >= cutoff);
            bs.receives.retain(|h| h.at >= cutoff);
            dropped += (before - bs.sends.len()) as u64;
            sends += bs.sends.len();
            bs.seen_at >= cutoff || !bs.sends.is_empty() || !bs.receives.is_empty()
        });
        self.pending_sends = sends;
        self.pending_receives = receives;
        dropped
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
            ch.sends.iter().for_each(|h| sends[bucket(h.at)] += 1);
            ch.receives.iter().for_each(|h| receives[bucket(h.at)] += 1);
        }
        for bs in self.by_sender.values() {
            bs.sends.iter().for_each(|h| sends[bucket(h.at)] += 1);
        }
        (sends, receives)
    }

    pub fn memory_bytes(&self) -> usize {
        let per_channel = std::mem::size_of::<((u64, u64), Channel)>() + 1;
        self.channels.capacity() * per_channel
            + self
                .channels
                .values()
                .map(|ch| {
                    ch.senders.heap_capacity() * 8
                        + (ch.sends.heap_capacity() + ch.receives.heap_capacity())
                            * std::mem::size_of::<Half>()
                        + ch.blind.heap_capacity() * 8
                })
                .sum::<usize>()
            + self.by_sender.capacity() * (std::mem::size_of::<((u64, u64), BySender)>() + 1)
            + self
                .by_sender
                .values()
                .map(|bs| {
                    bs.sends.heap_capacity() * std::mem::size_of::<Half>()
                        + bs.receives.heap_capacity() * std::mem::size_of::<Addressed>()
                })
                .sum::<usize>()
    }
}
