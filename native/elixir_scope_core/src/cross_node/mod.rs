//! Messages between nodes: the halves the local matcher cannot pair.
//!
//! A send to a process on another node (a remote pid, `{name, node}`, a
//! remote process alias) and a receive from another node (the tracer
//! records the sender's node, or its pid when known) have their other half
//! in another node's store. Once the store knows its node
//! ([`LocalNode`]), the correlator sets such halves aside ([`Collected`],
//! ids only: the events are stored as any other) instead of letting them
//! wait in the local matcher, where they would never pair and could take
//! a local send with the same message by mistake.
//!
//! The cluster layer then exchanges them in batches: each node canonicalizes
//! its sends (keys that mean the same on every node, see [`wire`]) into one
//! outbox per destination node, each receiving node takes its share from
//! every other node, pairs it with its own receives ([`matcher`]), links
//! its receives and hands each sending node back its send-side links.
//!
//! Invariant: [`Collected`] holds at most `MAX_COLLECTED` ids per kind;
//! beyond, the oldest go and are counted (they stay stored, unlinked).

pub mod matcher;
pub mod wire;

use crate::event::{Event, EventKind};
use crate::hash::WordMap;
use crate::payload::{tag, varint};

/// Most ids of each kind waiting to be exchanged.
const MAX_COLLECTED: usize = 1 << 22;

/// This node: its name's atom word and the name's bytes (as they appear in
/// the external term format of its pids and references).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalNode {
    pub atom: u64,
    pub name: Vec<u8>,
}

/// Which half of a message crossing nodes an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crossing {
    /// A send to another node.
    Out,
    /// A receive from another node.
    In,
}

impl LocalNode {
    /// Whether the message event `e` crossed between this node and
    /// another, and which half it is.
    pub fn crossing(&self, e: &Event) -> Option<Crossing> {
        let peer = e.peer.as_bytes();
        match e.kind {
            EventKind::MessageSend if self.is_remote_destination(peer) => Some(Crossing::Out),
            EventKind::MessageReceive if self.is_remote_sender(peer) => Some(Crossing::In),
            _ => None,
        }
    }

    /// A remote pid or reference, or `{name, other_node}`.
    fn is_remote_destination(&self, peer: &[u8]) -> bool {
        match peer.first() {
            Some(&tag::EXTERNAL) => self.is_remote_external(peer),
            Some(&tag::TUPLE) => match tuple_of_two_atoms(peer) {
                Some((_, node)) => node != self.atom,
                None => false,
            },
            _ => false,
        }
    }

    /// Another node's atom (what the tracer records for a remote sender),
    /// or a remote pid.
    fn is_remote_sender(&self, peer: &[u8]) -> bool {
        match peer.first() {
            Some(&tag::ATOM) => {
                let mut at = 1;
                varint::decode(peer, &mut at).is_some_and(|w| w != self.atom && at == peer.len())
            }
            Some(&tag::EXTERNAL) => self.is_remote_external(peer),
            _ => false,
        }
    }

    fn is_remote_external(&self, peer: &[u8]) -> bool {
        external_bytes(peer)
            .and_then(etf_node)
            .is_some_and(|node| node != self.name.as_slice())
    }
}

/// The external term format bytes of a payload that is one `EXTERNAL` term.
pub fn external_bytes(payload: &[u8]) -> Option<&[u8]> {
    let mut at = 1;
    let n = usize::try_from(varint::decode(payload, &mut at)?).ok()?;
    (payload.first() == Some(&tag::EXTERNAL) && at + n == payload.len()).then(|| &payload[at..])
}

/// The atom words of a payload that is `{atom, atom}`.
pub fn tuple_of_two_atoms(payload: &[u8]) -> Option<(u64, u64)> {
    let mut at = 1;
    if payload.first() != Some(&tag::TUPLE) || varint::decode(payload, &mut at)? != 2 {
        return None;
    }
    let mut atom = || {
        (payload.get(at) == Some(&tag::ATOM)).then_some(())?;
        at += 1;
        varint::decode(payload, &mut at)
    };
    let (a, b) = (atom()?, atom()?);
    (at == payload.len()).then_some((a, b))
}

/// External term format tags (erts' external.h) this module reads.
mod etf {
    pub const VERSION: u8 = 131;
    pub const NEW_PID: u8 = 88;
    pub const PID: u8 = 103;
    pub const NEW_PORT: u8 = 89;
    pub const V4_PORT: u8 = 120;
    pub const PORT: u8 = 102;
    pub const NEWER_REFERENCE: u8 = 90;
    pub const NEW_REFERENCE: u8 = 114;
    pub const ATOM: u8 = 100;
    pub const SMALL_ATOM: u8 = 115;
    pub const ATOM_UTF8: u8 = 118;
    pub const SMALL_ATOM_UTF8: u8 = 119;
}

/// The node name of a pid, port or reference in the external term format
/// (`131` first), or `None` for any other term.
pub fn etf_node(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.first() != Some(&etf::VERSION) {
        return None;
    }
    // A reference's node follows its 2-byte id count.
    let at = match *bytes.get(1)? {
        etf::NEW_PID | etf::PID | etf::NEW_PORT | etf::V4_PORT | etf::PORT => 2,
        etf::NEWER_REFERENCE | etf::NEW_REFERENCE => 4,
        _ => return None,
    };
    let (len, start) = match *bytes.get(at)? {
        etf::SMALL_ATOM_UTF8 | etf::SMALL_ATOM => (*bytes.get(at + 1)? as usize, at + 2),
        etf::ATOM_UTF8 | etf::ATOM => {
            let b = bytes.get(at + 1..at + 3)?;
            (u16::from_be_bytes([b[0], b[1]]) as usize, at + 3)
        }
        _ => return None,
    };
    bytes.get(start..start + len)
}

/// A store's side of the exchange.
#[derive(Default)]
pub struct Exchange {
    /// Canonicalized sends ([`wire::SendHalf`] records) waiting to be
    /// taken, by destination node (its atom word here).
    pub outbox: WordMap<u64, Vec<u8>>,
    /// This node's receives from other nodes and the sends taken for them.
    pub matcher: matcher::Matcher,
    /// Crossing halves skipped: no longer stored when read, malformed, or
    /// left over from an earlier session.
    pub skipped: u64,
}

impl Exchange {
    /// Forgets what waits (a new session starts: one runs at a time per
    /// node, and the last one's halves were exchanged when it stopped);
    /// `collected` ids set aside but never read are counted with the rest
    /// as dropped.
    pub fn reset(&mut self, collected: usize) {
        let records: usize = self
            .outbox
            .values()
            .map(|b| b.len() / wire::SEND_HALF_BYTES)
            .sum();
        self.skipped += (records + collected) as u64;
        self.outbox.clear();
        self.matcher.clear();
    }
}

/// Ids of the crossing halves stored since the last exchange, oldest first.
#[derive(Debug, Default)]
pub struct Collected {
    pub sends: Vec<u64>,
    pub receives: Vec<u64>,
    /// Ids that went past `MAX_COLLECTED` (left unlinked).
    pub dropped: u64,
}

impl Collected {
    pub fn push(&mut self, crossing: Crossing, id: u64) {
        let ids = match crossing {
            Crossing::Out => &mut self.sends,
            Crossing::In => &mut self.receives,
        };
        if ids.len() == MAX_COLLECTED {
            // Rare (no exchange for millions of messages): drop the older half.
            ids.drain(..MAX_COLLECTED / 2);
            self.dropped += (MAX_COLLECTED / 2) as u64;
        }
        ids.push(id);
    }

    /// Takes the ids collected so far (sends, receives).
    pub fn take(&mut self) -> (Vec<u64>, Vec<u64>) {
        (
            std::mem::take(&mut self.sends),
            std::mem::take(&mut self.receives),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_support::event;
    use crate::payload::Payload;

    fn atom_name(name: &str) -> Vec<u8> {
        let mut b = vec![etf::SMALL_ATOM_UTF8, name.len() as u8];
        b.extend_from_slice(name.as_bytes());
        b
    }

    /// `EXTERNAL` payload of a pid (or, with `reference`, a ref) of `node`.
    fn external(node: &str, reference: bool) -> Payload {
        let mut etf_bytes = vec![etf::VERSION];
        if reference {
            etf_bytes.extend_from_slice(&[etf::NEWER_REFERENCE, 0, 3]);
            etf_bytes.extend(atom_name(node));
            etf_bytes.extend_from_slice(&[0; 16]);
        } else {
            etf_bytes.push(etf::NEW_PID);
            etf_bytes.extend(atom_name(node));
            etf_bytes.extend_from_slice(&[0; 12]);
        }
        let mut p = vec![tag::EXTERNAL];
        varint::push(&mut p, etf_bytes.len() as u64);
        p.extend(etf_bytes);
        Payload::from_bytes(&p)
    }

    fn atom(word: u64) -> Payload {
        let mut p = vec![tag::ATOM];
        varint::push(&mut p, word);
        Payload::from_bytes(&p)
    }

    fn named(name: u64, node: u64) -> Payload {
        let mut p = vec![tag::TUPLE, 2, tag::ATOM];
        varint::push(&mut p, name);
        p.push(tag::ATOM);
        varint::push(&mut p, node);
        Payload::from_bytes(&p)
    }

    fn with_peer(kind: EventKind, peer: Payload) -> Event {
        Event {
            kind,
            peer,
            ..event(0x103, 0)
        }
    }

    #[test]
    fn sends_and_receives_crossing_nodes_are_told_from_local_ones() {
        let here = LocalNode {
            atom: 0x40b,
            name: b"a@h".to_vec(),
        };
        let send = |peer| here.crossing(&with_peer(EventKind::MessageSend, peer));
        let receive = |peer| here.crossing(&with_peer(EventKind::MessageReceive, peer));

        assert_eq!(send(external("b@h", false)), Some(Crossing::Out));
        assert_eq!(send(external("b@h", true)), Some(Crossing::Out));
        assert_eq!(send(named(0x80b, 0x50b)), Some(Crossing::Out));
        assert_eq!(send(external("a@h", true)), None, "a local alias");
        assert_eq!(send(named(0x80b, 0x40b)), None, "{{name, node()}}");
        assert_eq!(send(Payload::pid(0x203)), None);
        assert_eq!(send(atom(0x80b)), None, "a registered name");

        assert_eq!(receive(atom(0x50b)), Some(Crossing::In));
        assert_eq!(receive(external("b@h", false)), Some(Crossing::In));
        assert_eq!(receive(atom(0x40b)), None);
        assert_eq!(receive(Payload::pid(0x203)), None);
        assert_eq!(receive(Payload::empty()), None);
    }

    #[test]
    fn etf_node_reads_pids_ports_and_references_only() {
        let pid = external("b@h", false);
        let reference = external("c@h", true);
        assert_eq!(
            etf_node(external_bytes(pid.as_bytes()).unwrap()),
            Some(&b"b@h"[..])
        );
        assert_eq!(
            etf_node(external_bytes(reference.as_bytes()).unwrap()),
            Some(&b"c@h"[..])
        );
        assert_eq!(etf_node(&[etf::VERSION, 97, 1]), None, "a small integer");
        assert_eq!(
            etf_node(&[etf::VERSION, etf::NEW_PID, etf::SMALL_ATOM_UTF8, 9, b'x']),
            None
        );
    }

    #[test]
    fn collected_ids_are_bounded_and_counted() {
        let mut c = Collected::default();
        for id in 0..(MAX_COLLECTED as u64 + 1) {
            c.push(Crossing::In, id);
        }
        assert_eq!(c.dropped, (MAX_COLLECTED / 2) as u64);
        let (sends, receives) = c.take();
        assert!(sends.is_empty());
        assert_eq!(receives.first(), Some(&((MAX_COLLECTED / 2) as u64)));
        assert_eq!(receives.len(), MAX_COLLECTED / 2 + 1);
        assert!(c.receives.is_empty());
    }
}
