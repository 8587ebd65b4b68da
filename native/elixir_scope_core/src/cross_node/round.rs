//! Round: a node's native steps in an exchange round, apart from the VM.
//!
//! [`take_sends`] hands another node the sends set aside for it, as one
//! [`SendBatch`]; [`link`] adds the sends other nodes handed over, pairs
//! this node's receives with them ([`super::matcher`]), links the
//! receives and returns each sending node's [`LinkBack`]s; [`link_back`]
//! applies those on the sending node. Each step first moves the sends set
//! aside (older than the round's cutoff) into the outbox of their node.
//!
//! What only the VM knows comes through [`Keys`]: the node-independent
//! keys of this VM's pid and atom words, and the `phash2` of a stored
//! message for halves set aside without a fingerprint (ingested from
//! Elixir). The NIF implements it; tests and benches use [`MapKeys`].
//! Each step adds the time it took to [`Exchange::busy_ns`] (the
//! exchange's cost to the node, set against the workers' busy time).
//!
//! Invariant: a half is either handed on (in a batch, the matcher or a
//! link) or counted in [`Exchange::skipped`]; a malformed batch loses only
//! its own sends, counted, and the call fails.

use super::matcher::{Matched, ReceiveHalf};
use super::wire::{LinkBack, LinkBackBatch, SendBatch, SendHalf, To};
use super::{Aside, Destination, Exchange, InHalf, Origin, OutHalf, Taken};
use crate::event::LinkKind;
use crate::hash::WordMap;
use crate::store::SharedStore;
use std::time::Instant;

/// Node-independent keys of this VM's words (see [`super::wire`]).
pub trait Keys {
    /// The `etf_key` of a local pid word.
    fn pid(&mut self, word: u64) -> u64;
    /// The `name_key` of an atom word.
    fn name(&mut self, word: u64) -> u64;
    /// The `node_key` of a node's atom word.
    fn node(&mut self, word: u64) -> u64;
    /// The `phash2` of the stored message of each of `ids` that is still
    /// stored.
    fn stored_fingerprints(&mut self, store: &SharedStore, ids: &[u64]) -> WordMap<u64, u32>;
}

/// [`Keys`] from maps, for code without a VM (tests, benches): a pid or
/// atom word keys as mapped, else as itself (a name's key is its word);
/// a stored message fingerprints as `stored` (`None`: unknown, as for an
/// event no longer stored). The last pid is remembered, as the NIF's
/// keys do.
#[derive(Default)]
pub struct MapKeys {
    pids: WordMap<u64, u64>,
    atoms: WordMap<u64, u64>,
    pub stored: Option<u32>,
    last: (u64, u64),
}

impl MapKeys {
    /// Keys with `atoms` and `pids` mapped (word, key), stored messages
    /// unknown.
    pub fn new(
        atoms: impl IntoIterator<Item = (u64, u64)>,
        pids: impl IntoIterator<Item = (u64, u64)>,
    ) -> Self {
        MapKeys {
            pids: pids.into_iter().collect(),
            atoms: atoms.into_iter().collect(),
            ..MapKeys::default()
        }
    }
}

impl Keys for MapKeys {
    fn pid(&mut self, w: u64) -> u64 {
        if self.last.0 != w {
            self.last = (w, *self.pids.get(&w).unwrap_or(&w));
        }
        self.last.1
    }

    fn name(&mut self, w: u64) -> u64 {
        w
    }

    fn node(&mut self, w: u64) -> u64 {
        *self.atoms.get(&w).unwrap_or(&w)
    }

    fn stored_fingerprints(&mut self, _: &SharedStore, ids: &[u64]) -> WordMap<u64, u32> {
        match self.stored {
            Some(fp) => ids.iter().map(|&id| (id, fp)).collect(),
            None => WordMap::default(),
        }
    }
}

/// A batch's bytes in two parts (see [`SendBatch::parts`]).
pub type Parts<'a> = (Vec<u8>, &'a [u8]);

/// What [`link`] did: each sending node's link backs (by its atom word),
/// how many receives it linked, and how many wait (see
/// [`super::Collected::waiting_receives`]).
pub struct Linked {
    pub backs: Vec<(u64, LinkBackBatch)>,
    pub linked: usize,
    pub waiting: u64,
}

/// A batch was malformed (its well-formed part was used or counted).
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

/// Hands `emit` the sends to the node with `node_key` `to` that were set
/// aside before `before` and not taken yet (an empty batch if none).
pub fn take_sends<R>(
    keys: &mut impl Keys,
    store: &SharedStore,
    to: u64,
    before: i64,
    emit: impl FnOnce(Parts) -> R,
) -> R {
    let started = Instant::now();
    let mut ex = store.exchange();
    absorb_sends(keys, store, &mut ex, before);
    let out = match ex.outbox.get_mut(&to) {
        Some(batch) => {
            let out = emit(batch.parts());
            batch.clear();
            out
        }
        None => emit(SendBatch::default().parts()),
    };
    ex.busy_ns += elapsed_ns(started);
    out
}

/// Pairs this node's receives from other nodes set aside before
/// `settled` (younger ones stay) with the sends taken from them
/// (`inbound`: each sending node's atom word and batch) and links the
/// receives; `holders` gives the `etf_key` of the process holding a
/// registered name here, by the name's `name_key`. This node's own sends
/// before `settled` go to the outbox. A malformed batch fails the call:
/// the batches before it stay for the next round, its own sends are
/// counted as skipped.
pub fn link(
    keys: &mut impl Keys,
    store: &SharedStore,
    inbound: &[(u64, &[u8])],
    holders: &WordMap<u64, u64>,
    settled: i64,
) -> Result<Linked, Malformed> {
    let started = Instant::now();
    let mut ex = store.exchange();
    absorb_sends(keys, store, &mut ex, settled);
    let Exchange {
        nodes,
        matcher,
        skipped,
        busy_ns,
        scratch,
        ..
    } = &mut *ex;
    let holder = |n| holders.get(&n).copied();
    for &(atom, bytes) in inbound {
        let node = keys.node(atom);
        nodes.insert(node, atom);
        let mark = matcher.sends_held();
        let mut halves = SendBatch::decode(bytes);
        matcher.add_sends(node, &mut halves, holder);
        if !halves.is_whole() {
            *skipped += matcher.forget_sends_from(mark);
            *busy_ns += elapsed_ns(started);
            return Err(Malformed);
        }
    }
    let receives = &mut scratch.receives;
    let bare = store
        .correlator()
        .crossing()
        .take_receives(settled, receives);
    let fingerprint = fingerprints(keys, store, receives, bare);
    let mut unread = 0;
    let halves = receives
        .iter()
        .filter_map(|h| match fingerprint(h.id, h.fingerprint) {
            Some(fp) => Some(receive_half(keys, h, fp)),
            None => {
                unread += 1;
                None
            }
        });
    let matched = &mut scratch.matched;
    matched.clear();
    matcher.run(halves, settled, matched);
    *skipped += unread;
    // Each match is linked here and goes back to its send's node (its
    // sends all came from `inbound` nodes, this round or before).
    // (Matches come in runs from one node.)
    let mut last = (0, None);
    let mut node_atom = |m: &Matched| {
        if last.0 != m.node {
            last = (m.node, nodes.get(&m.node).copied());
        }
        last.1
    };
    let links = matched.iter().filter_map(|m| {
        let atom = node_atom(m)?;
        let confidence = Some(m.confidence);
        Some((
            m.receive,
            LinkKind::RemoteReceives,
            atom,
            m.send,
            confidence,
        ))
    });
    store.link_remote_all(links);
    let mut backs: Vec<(u64, LinkBackBatch)> = Vec::new();
    for m in matched.iter() {
        let Some(atom) = node_atom(m) else { continue };
        let at = match backs.iter().position(|(n, _)| *n == atom) {
            Some(at) => at,
            None => {
                backs.push((atom, LinkBackBatch::default()));
                backs.len() - 1
            }
        };
        backs[at].1.push(LinkBack {
            send: m.send,
            receive: m.receive,
        });
    }
    let waiting = (store.correlator().crossing()).waiting_receives(&matcher.stats());
    *busy_ns += elapsed_ns(started);
    Ok(Linked {
        backs,
        linked: matched.len(),
        waiting,
    })
}

/// Links this node's sends to their receives on the node with atom word
/// `node` (the bytes of its link backs); how many took. What comes before
/// a malformed part is linked (it is well-formed).
pub fn link_back(store: &SharedStore, node: u64, bytes: &[u8]) -> Result<usize, Malformed> {
    let started = Instant::now();
    let mut backs = LinkBack::decode(bytes);
    let links = (&mut backs).map(|b| (b.send, LinkKind::RemoteReceivedBy, node, b.receive, None));
    let applied = store.link_remote_all(links);
    store.exchange().busy_ns += elapsed_ns(started);
    match backs.is_whole() {
        true => Ok(applied),
        false => Err(Malformed),
    }
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Moves the sends set aside with a timestamp before `before` into the
/// outbox of their node.
fn absorb_sends(keys: &mut impl Keys, store: &SharedStore, ex: &mut Exchange, before: i64) {
    let sends = &mut ex.scratch.sends;
    let bare = store.correlator().crossing().take_sends(before, sends);
    let fingerprint = fingerprints(keys, store, sends, bare);
    for h in sends.iter() {
        let Some(fp) = fingerprint(h.id, h.fingerprint) else {
            ex.skipped += 1;
            continue;
        };
        let (node, half) = send_half(keys, h, fp);
        ex.outbox.entry(node).or_default().push(&half);
    }
}

/// Each half's fingerprint, as taken or from its stored message (`bare`:
/// some halves may have none; `None`: no longer stored).
fn fingerprints(
    keys: &mut impl Keys,
    store: &SharedStore,
    halves: &Taken<impl Aside>,
    bare: bool,
) -> impl Fn(u64, u32) -> Option<u32> {
    let missing: Vec<u64> = match bare {
        true => (halves.iter())
            .filter(|h| h.fingerprint() == 0)
            .map(|h| h.id())
            .collect(),
        false => Vec::new(),
    };
    let stored = match missing.is_empty() {
        true => WordMap::default(),
        false => keys.stored_fingerprints(store, &missing),
    };
    move |id, taken| match taken {
        0 => stored.get(&id).copied(),
        fp => Some(fp),
    }
}

/// A send's destination node (its `node_key`) and record.
fn send_half(keys: &mut impl Keys, h: &OutHalf, fingerprint: u32) -> (u64, SendHalf) {
    let (node, to) = match h.to {
        Destination::Pid { key, node } => (node, To::Pid(key)),
        Destination::Alias { node } => (node, To::Node),
        Destination::Named { name, node } => (keys.node(node), To::Name(keys.name(name))),
    };
    let half = SendHalf {
        id: h.id,
        sender: keys.pid(h.sender),
        to,
        fingerprint,
    };
    (node, half)
}

fn receive_half(keys: &mut impl Keys, h: &InHalf, fingerprint: u32) -> ReceiveHalf {
    let (node, sender) = match h.from {
        Origin::Node(atom) => (keys.node(atom), 0),
        Origin::Pid { key, node } => (node, key),
    };
    ReceiveHalf {
        id: h.id,
        at: h.at,
        receiver: keys.pid(h.receiver),
        node,
        sender,
        fingerprint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cross_node::test_support::{atom, external, named_peer};
    use crate::cross_node::wire::{etf_key, node_key};
    use crate::cross_node::{external_bytes, LocalNode};
    use crate::event::test_support::event;
    use crate::event::{Event, EventKind};
    use crate::payload::Payload;
    use crate::store::StoreConfig;

    const A: u64 = 0x40b;
    const B: u64 = 0x50b;
    const SERVER: u64 = 0x80b;

    /// Keys for nodes A and B: their atoms key as their names do.
    fn keys() -> MapKeys {
        let atoms = [(A, node_key(b"a@h")), (B, node_key(b"b@h"))];
        MapKeys {
            stored: Some(77),
            ..MapKeys::new(atoms, [])
        }
    }

    fn node(atom: u64, name: &str) -> SharedStore {
        let store = SharedStore::new(StoreConfig::default());
        (store.correlator()).collect_crossing_as(LocalNode::new(atom, name.as_bytes()));
        store
    }

    fn message(id: u64, pid: u64, kind: EventKind, peer: Payload, fingerprint: u32) -> Event {
        Event {
            id,
            kind,
            peer,
            fingerprint,
            ..event(pid, id as i64)
        }
    }

    fn remote_links(store: &SharedStore, id: u64) -> Vec<(LinkKind, u64, u64)> {
        let s = store.read();
        let e = s.get(id).expect("stored");
        (e.correlation.links.iter())
            .filter(|l| l.kind.is_remote())
            .map(|l| {
                let (node, remote) = crate::remote::split(l.target).unwrap();
                (l.kind, node, remote)
            })
            .collect()
    }

    fn bytes((head, body): Parts) -> Vec<u8> {
        [head.as_slice(), body].concat()
    }

    /// A sends three messages to a pid on B, one to a name there (one of
    /// them ingested without a fingerprint); B receives them, and the
    /// last one's message once more elsewhere. One round: each receive is
    /// linked to its send and each send back to its receive, on both
    /// stores; the send to the name goes to the name's holder.
    #[test]
    fn a_round_links_both_sides_of_messages_between_two_stores() {
        let (a, b) = (node(A, "a@h"), node(B, "b@h"));
        let (sender, receiver, server) = (0x103, 0x203, 0x303);
        let to_receiver = external("b@h", false, 1);
        let mut keys_b = keys();
        (keys_b.pids).insert(
            receiver,
            etf_key(external_bytes(to_receiver.as_bytes()).unwrap()),
        );
        let sends = [
            (1, to_receiver.clone(), 11),
            (2, to_receiver.clone(), 12),
            (3, to_receiver, 0),
            (4, named_peer(SERVER, B), 14),
        ];
        let sends = (sends.into_iter())
            .map(|(id, peer, fp)| message(id, sender, EventKind::MessageSend, peer, fp));
        a.write(sends, 0);
        // 4 has the message sent to the name, but not the name: it waits.
        let receives = [
            (1, receiver, 11),
            (2, receiver, 12),
            (3, receiver, 77),
            (4, receiver, 14),
            (5, server, 14),
        ];
        let receives = (receives.into_iter())
            .map(|(id, pid, fp)| message(id, pid, EventKind::MessageReceive, atom(A), fp));
        b.write(receives, 0);

        let mut keys_a = keys();
        let batch = take_sends(&mut keys_a, &a, node_key(b"b@h"), i64::MAX, bytes);
        let holders: WordMap<u64, u64> = [(keys_b.name(SERVER), server)].into_iter().collect();
        let round = link(&mut keys_b, &b, &[(A, &batch)], &holders, i64::MAX).unwrap();
        assert_eq!((round.linked, round.waiting), (4, 1));
        assert_eq!(round.backs.len(), 1);
        let (to, backs) = &round.backs[0];
        assert_eq!(*to, A);
        assert_eq!(link_back(&a, B, &backs.encode()), Ok(4));

        for (send, receive) in [(1, 1), (2, 2), (3, 3), (4, 5)] {
            assert_eq!(
                remote_links(&b, receive),
                [(LinkKind::RemoteReceives, A, send)]
            );
            assert_eq!(
                remote_links(&a, send),
                [(LinkKind::RemoteReceivedBy, B, receive)]
            );
        }
        assert_eq!(remote_links(&b, 4), []);
        assert_eq!(b.exchange().skipped + a.exchange().skipped, 0);
        assert!(a.exchange().busy_ns > 0 && b.exchange().busy_ns > 0);
        let again = take_sends(&mut keys_a, &a, node_key(b"b@h"), i64::MAX, bytes);
        assert_eq!(SendBatch::decode(&again).count(), 0, "each send goes once");
    }

    /// A malformed batch fails the call; the sends of the batches before
    /// it wait for the next round, its own are counted.
    #[test]
    fn a_malformed_batch_fails_the_call_and_counts_its_sends() {
        let b = node(B, "b@h");
        let mut keys = keys();
        let mut good = SendBatch::default();
        let half = |id| SendHalf {
            id,
            sender: 1,
            to: To::Node,
            fingerprint: 5,
        };
        good.push(&half(1));
        good.push(&half(2));
        let good = good.encode();
        let mut bad = good.clone();
        bad.push(4);
        let batches: [(u64, &[u8]); 2] = [(A, &good), (0x60b, &bad)];
        let failed = link(&mut keys, &b, &batches, &WordMap::default(), i64::MAX);
        assert_eq!(failed.err(), Some(Malformed));
        let ex = b.exchange();
        assert_eq!((ex.matcher.stats().waiting_sends, ex.skipped), (2, 2));
        drop(ex);
        assert_eq!(link_back(&b, A, &[2, 1]), Err(Malformed));
    }
}
