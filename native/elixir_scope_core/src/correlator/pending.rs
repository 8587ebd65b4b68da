//! Pending message halves, as the message strategy keeps them by key: a
//! channel's (receiver, fingerprint) and a sender's (sender, fingerprint).
//!
//! Almost every entry holds one half while it waits for its other (every
//! message distinct, as `GenServer.call`s are), and a traced process whose
//! peers are not traced leaves such entries by the million: their inserts
//! into a map far larger than the caches are most of the matcher's time,
//! paid per byte of the slot written and moved. So an [`Entry`] starts as
//! the half alone (32 bytes in the slot, against 136 for a full channel)
//! and becomes full (boxed) when anything else must be kept: a second
//! half, a blind match to remember, a second sender.
//!
//! Invariant: a lone half stands for exactly the full entry
//! [`Full::of_send`] / [`Full::of_receive`] make of it: that half alone,
//! last seen at its timestamp, its sender (if known) the only sender seen,
//! no blind match. A lone entry is never idle; a full one is never made
//! lone again (it is forgotten once idle).

use std::collections::hash_map;

use super::queue::Queue;
use super::{Change, Patch};
use crate::event::Event;
use crate::hash::WordMap;

/// Blind matches remembered per channel for a later downgrade.
const MAX_BLIND: usize = 1024;

/// A half waiting in a channel.
#[derive(Clone, Copy)]
pub(super) struct Half {
    pub id: u64,
    /// Sender pid; 0 when a receive does not know it.
    pub sender: u64,
    pub at: i64,
}

impl Half {
    /// A send waiting for its receive.
    pub fn send(e: &Event) -> Half {
        Half {
            id: e.id,
            sender: e.pid,
            at: e.timestamp,
        }
    }
}

/// A receive waiting by (sender, fingerprint), with its receiver so its
/// channel entry can be found.
#[derive(Clone, Copy)]
pub(super) struct Addressed {
    pub id: u64,
    pub receiver: u64,
    pub at: i64,
}

/// A waiting half's timestamp.
pub(super) trait Stamped: Copy {
    fn at(&self) -> i64;
}

impl Stamped for Half {
    fn at(&self) -> i64 {
        self.at
    }
}

impl Stamped for Addressed {
    fn at(&self) -> i64 {
        self.at
    }
}

/// The halves waiting on one key, in arrival order, and when the key was
/// last seen.
pub(super) struct Waiting<R> {
    pub sends: Queue<Half>,
    pub receives: Queue<R>,
    pub seen_at: i64,
}

impl<R> Default for Waiting<R> {
    fn default() -> Self {
        Waiting {
            sends: Queue::default(),
            receives: Queue::default(),
            seen_at: 0,
        }
    }
}

impl<R: Stamped> Waiting<R> {
    fn of_send(send: Half) -> Self {
        let mut w = Waiting {
            seen_at: send.at,
            ..Waiting::default()
        };
        w.sends.push_back(send);
        w
    }

    fn of_receive(receive: R) -> Self {
        let mut w = Waiting {
            seen_at: receive.at(),
            ..Waiting::default()
        };
        w.receives.push_back(receive);
        w
    }

    fn is_empty(&self) -> bool {
        self.sends.is_empty() && self.receives.is_empty()
    }

    fn heap_bytes(&self) -> usize {
        self.sends.heap_capacity() * std::mem::size_of::<Half>()
            + self.receives.heap_capacity() * std::mem::size_of::<R>()
    }
}

/// Unaddressed sends and sender-known receives of one (sender, fingerprint).
pub(super) type BySender = Waiting<Addressed>;

/// What one (receiver, fingerprint) holds.
#[derive(Default)]
pub(super) struct Channel {
    pub waiting: Waiting<Half>,
    senders: Queue<u64>,
    blind: Queue<u64>,
}

impl Channel {
    /// Notes a sender; when it is new and the channel becomes ambiguous,
    /// lowers the confidence of the recent blind matches.
    pub fn saw_sender(&mut self, sender: u64, patches: &mut Vec<Patch>) {
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

    pub fn blind_confidence(&self) -> f32 {
        1.0 / self.senders.len().max(1) as f32
    }

    pub fn remember_blind(&mut self, receive_id: u64) {
        if self.blind.len() == MAX_BLIND {
            self.blind.pop_front();
        }
        self.blind.push_back(receive_id);
    }
}

/// A full entry of either kind.
pub(super) trait Full {
    type Receive: Stamped;
    fn waiting(&self) -> &Waiting<Self::Receive>;
    fn waiting_mut(&mut self) -> &mut Waiting<Self::Receive>;
    /// Nothing waits, nor any blind match a new sender could downgrade.
    fn is_idle(&self) -> bool;
    fn heap_bytes(&self) -> usize;
    /// The entry a lone send stands for.
    fn of_send(send: Half) -> Self;
    /// The entry a lone receive stands for.
    fn of_receive(receive: Self::Receive) -> Self;
}

impl Full for BySender {
    type Receive = Addressed;

    fn waiting(&self) -> &Self {
        self
    }

    fn waiting_mut(&mut self) -> &mut Self {
        self
    }

    fn is_idle(&self) -> bool {
        self.is_empty()
    }

    fn heap_bytes(&self) -> usize {
        Waiting::heap_bytes(self)
    }

    fn of_send(send: Half) -> Self {
        Waiting::of_send(send)
    }

    fn of_receive(receive: Addressed) -> Self {
        Waiting::of_receive(receive)
    }
}

impl Full for Channel {
    type Receive = Half;

    fn waiting(&self) -> &Waiting<Half> {
        &self.waiting
    }

    fn waiting_mut(&mut self) -> &mut Waiting<Half> {
        &mut self.waiting
    }

    fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.blind.is_empty()
    }

    fn heap_bytes(&self) -> usize {
        self.waiting.heap_bytes() + (self.senders.heap_capacity() + self.blind.heap_capacity()) * 8
    }

    fn of_send(send: Half) -> Self {
        Channel::holding(Waiting::of_send(send), send.sender)
    }

    fn of_receive(receive: Half) -> Self {
        Channel::holding(Waiting::of_receive(receive), receive.sender)
    }
}

impl Channel {
    /// A channel with `waiting`, its half's `sender` seen as
    /// [`Channel::saw_sender`] notes one (none when 0).
    fn holding(waiting: Waiting<Half>, sender: u64) -> Self {
        let mut ch = Channel {
            waiting,
            ..Channel::default()
        };
        ch.saw_sender(sender, &mut Vec::new());
        ch
    }
}

/// Entries by key: a channel's (receiver, fingerprint), a sender's
/// (sender, fingerprint).
pub(super) type Pending<F> = WordMap<(u64, u64), Entry<F>>;

/// The entry at `key`; `None` when there was none, and `send` now waits
/// there alone.
pub(super) fn entry_or_wait<F: Full>(
    map: &mut Pending<F>,
    key: (u64, u64),
    send: Half,
) -> Option<&mut Entry<F>> {
    match map.entry(key) {
        hash_map::Entry::Occupied(o) => Some(o.into_mut()),
        hash_map::Entry::Vacant(v) => {
            v.insert(Entry::Send(send));
            None
        }
    }
}

/// Leaves `receive` waiting at `key`, after what waits there.
pub(super) fn wait_receive<F: Full>(map: &mut Pending<F>, key: (u64, u64), receive: F::Receive) {
    match map.entry(key) {
        hash_map::Entry::Occupied(o) => {
            let w = o.into_mut().full().waiting_mut();
            w.seen_at = w.seen_at.max(receive.at());
            w.receives.push_back(receive);
        }
        hash_map::Entry::Vacant(v) => {
            v.insert(Entry::Receive(receive));
        }
    }
}

/// A map entry: one waiting half, or the full entry.
pub(super) enum Entry<F: Full> {
    Send(Half),
    Receive(F::Receive),
    Full(Box<F>),
}

impl<F: Full> Entry<F> {
    /// The full entry, made of the lone half if it is one.
    pub fn full(&mut self) -> &mut F {
        let lone = match *self {
            Entry::Send(send) => Some(F::of_send(send)),
            Entry::Receive(receive) => Some(F::of_receive(receive)),
            Entry::Full(_) => None,
        };
        if let Some(full) = lone {
            *self = Entry::Full(Box::new(full));
        }
        match self {
            Entry::Full(full) => full,
            _ => unreachable!("made full above"),
        }
    }

    pub fn is_idle(&self) -> bool {
        matches!(self, Entry::Full(full) if full.is_idle())
    }

    pub fn seen_at(&self) -> i64 {
        match self {
            Entry::Send(send) => send.at,
            Entry::Receive(receive) => receive.at(),
            Entry::Full(full) => full.waiting().seen_at,
        }
    }

    pub fn sends(&self) -> impl Iterator<Item = &Half> + '_ {
        let (lone, full) = match self {
            Entry::Send(send) => (Some(send), None),
            Entry::Receive(_) => (None, None),
            Entry::Full(full) => (None, Some(full.waiting())),
        };
        lone.into_iter()
            .chain(full.into_iter().flat_map(|w| w.sends.iter()))
    }

    pub fn receives(&self) -> impl Iterator<Item = &F::Receive> + '_ {
        let (lone, full) = match self {
            Entry::Receive(receive) => (Some(receive), None),
            Entry::Send(_) => (None, None),
            Entry::Full(full) => (None, Some(full.waiting())),
        };
        lone.into_iter()
            .chain(full.into_iter().flat_map(|w| w.receives.iter()))
    }

    /// How many sends and receives wait here.
    pub fn waiting(&self) -> (usize, usize) {
        match self {
            Entry::Send(_) => (1, 0),
            Entry::Receive(_) => (0, 1),
            Entry::Full(full) => {
                let w = full.waiting();
                (w.sends.len(), w.receives.len())
            }
        }
    }

    /// Drops the halves older than `cutoff`; whether the entry stays
    /// (something waits, or it was seen since).
    pub fn retain_since(&mut self, cutoff: i64) -> bool {
        match self {
            Entry::Send(_) | Entry::Receive(_) => self.seen_at() >= cutoff,
            Entry::Full(full) => {
                let w = full.waiting_mut();
                w.sends.retain(|h| h.at >= cutoff);
                w.receives.retain(|h| h.at() >= cutoff);
                w.seen_at >= cutoff || !w.is_empty()
            }
        }
    }

    /// Bytes this entry holds outside its map slot.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Entry::Full(full) => std::mem::size_of::<F>() + full.heap_bytes(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(id: u64, sender: u64, at: i64) -> Half {
        Half { id, sender, at }
    }

    #[test]
    fn a_lone_half_fits_a_small_slot_and_becomes_the_full_entry_it_stands_for() {
        assert_eq!(std::mem::size_of::<Entry<Channel>>(), 32);
        assert_eq!(std::mem::size_of::<Entry<BySender>>(), 32);

        let mut send: Entry<Channel> = Entry::Send(half(1, 7, 10));
        let mut blind: Entry<Channel> = Entry::Receive(half(2, 0, 20));
        assert!(!send.is_idle() && !blind.is_idle());
        let ch = send.full();
        assert_eq!(ch.waiting.seen_at, 10);
        assert_eq!(
            ch.waiting.sends.iter().map(|h| h.id).collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(ch.blind_confidence(), 1.0);
        // Its sender was already seen: a second one makes it ambiguous.
        let mut patches = Vec::new();
        ch.saw_sender(7, &mut patches);
        ch.remember_blind(9);
        ch.saw_sender(8, &mut patches);
        assert_eq!(ch.blind_confidence(), 0.5);
        assert_eq!(patches.len(), 1);
        // A blind receive names no sender.
        assert_eq!(blind.full().blind_confidence(), 1.0);
        assert_eq!(blind.receives().map(|h| h.id).collect::<Vec<_>>(), [2]);
        assert_eq!(blind.sends().count(), 0);
    }

    #[test]
    fn retain_since_keeps_what_waits_or_was_seen_since_the_cutoff() {
        let mut lone: Entry<BySender> = Entry::Send(half(1, 7, 10));
        assert!(lone.retain_since(10) && !lone.retain_since(11));
        let mut full = Entry::<BySender>::Send(half(1, 7, 10));
        full.full().receives.push_back(Addressed {
            id: 2,
            receiver: 3,
            at: 30,
        });
        assert!(full.retain_since(20));
        assert_eq!((full.sends().count(), full.receives().count()), (0, 1));
        assert!(full.heap_bytes() >= std::mem::size_of::<BySender>());
    }
}
