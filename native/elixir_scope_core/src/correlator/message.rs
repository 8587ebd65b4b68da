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
//! before the ambiguity was visible is never left at 1.0). A send to a name
//! rather than a pid cannot be routed to a channel and is counted.
//!
//! A matched receive takes the send's id as correlation id and links
//! `{:receives, send}`; until then it has correlation id 0, confidence 0.

use std::collections::VecDeque;
use std::hash::Hasher;

use super::{Change, CorrelatorStats, Patch};
use crate::event::{Correlation, Event, Link, LinkKind};
use crate::hash::{WordHasher, WordMap};

/// Blind matches remembered per channel for a later downgrade.
const MAX_BLIND: usize = 1024;

#[derive(Clone, Copy)]
struct Half {
    id: u64,
    /// Sender pid; 0 when a receive does not know it.
    sender: u64,
    at: i64,
}

#[derive(Default)]
struct Channel {
    senders: Vec<u64>,
    sends: VecDeque<Half>,
    receives: VecDeque<Half>,
    blind: VecDeque<u64>,
    seen_at: i64,
}

impl Channel {
    /// Notes a sender; when it is new and the channel becomes ambiguous,
    /// lowers the confidence of the recent blind matches.
    fn saw_sender(&mut self, sender: u64, patches: &mut Vec<Patch>) {
        if sender == 0 || self.senders.contains(&sender) {
            return;
        }
        self.senders.push(sender);
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

    fn remember_blind(&mut self, receive_id: u64) {
        if self.blind.len() == MAX_BLIND {
            self.blind.pop_front();
        }
        self.blind.push_back(receive_id);
    }
}

#[derive(Default)]
pub struct Messages {
    channels: WordMap<(u64, u64), Channel>,
    pending_sends: usize,
    pending_receives: usize,
}

/// Fingerprint of a message's encoded bytes.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = WordHasher::default();
    h.write(bytes);
    h.write_usize(bytes.len());
    h.finish()
}

fn receives_link(send_id: u64) -> Link {
    Link {
        kind: LinkKind::Receives,
        target: send_id,
    }
}

impl Messages {
    pub fn send(&mut self, e: &Event, stats: &mut CorrelatorStats, patches: &mut Vec<Patch>) {
        let Some(receiver) = e.peer.as_pid() else {
            stats.unroutable_sends += 1;
            return;
        };
        let ch = self
            .channels
            .entry((receiver, fingerprint(e.data.as_bytes())))
            .or_default();
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
                if confidence < 1.0 {
                    stats.ambiguous_matches += 1;
                }
                stats.linked += 1;
                patches.push(Patch {
                    id: r.id,
                    change: Change::Matched {
                        link: receives_link(e.id),
                        correlation_id: e.id,
                        confidence,
                    },
                });
            }
            None => {
                self.pending_sends += 1;
                ch.sends.push_back(Half {
                    id: e.id,
                    sender: e.pid,
                    at: e.timestamp,
                });
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
        let ch = self
            .channels
            .entry((e.pid, fingerprint(e.data.as_bytes())))
            .or_default();
        ch.seen_at = ch.seen_at.max(e.timestamp);
        ch.saw_sender(sender, patches);
        let waiting = ch
            .sends
            .iter()
            .position(|s| sender == 0 || s.sender == sender);
        match waiting.and_then(|i| ch.sends.remove(i)) {
            Some(s) => {
                self.pending_sends -= 1;
                c.confidence = if sender == 0 {
                    ch.remember_blind(e.id);
                    ch.blind_confidence()
                } else {
                    1.0
                };
                if c.confidence < 1.0 {
                    stats.ambiguous_matches += 1;
                }
                stats.linked += 1;
                c.correlation_id = s.id;
                c.links = Box::new([receives_link(s.id)]);
            }
            None => {
                self.pending_receives += 1;
                c.correlation_id = 0;
                c.confidence = 0.0;
                ch.receives.push_back(Half {
                    id: e.id,
                    sender,
                    at: e.timestamp,
                });
            }
        }
    }

    /// Pending halves and channels (what the entry bound counts).
    pub fn entries(&self) -> usize {
        self.pending_sends + self.pending_receives + self.channels.len()
    }

    pub fn pending_sends(&self) -> usize {
        self.pending_sends
    }

    pub fn pending_receives(&self) -> usize {
        self.pending_receives
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
        self.pending_sends = sends;
        self.pending_receives = receives;
        dropped
    }

    pub fn memory_bytes(&self) -> usize {
        let per_channel = std::mem::size_of::<((u64, u64), Channel)>() + 1;
        self.channels.capacity() * per_channel
            + self
                .channels
                .values()
                .map(|ch| {
                    ch.senders.capacity() * 8
                        + (ch.sends.capacity() + ch.receives.capacity())
                            * std::mem::size_of::<Half>()
                        + ch.blind.capacity() * 8
                })
                .sum::<usize>()
    }
}
