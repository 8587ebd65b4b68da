//! Messages between nodes: the halves the local matcher cannot pair.
//!
//! A send to a process on another node (a remote pid, `{name, node}`, a
//! remote process alias) and a receive from another node (the tracer
//! records the sender's node, or its pid when known) have their other half
//! in another node's store. Once the store knows its node
//! ([`LocalNode`], named by each trace session), the correlator never lets
//! such halves wait in the local matcher, where they would never pair and
//! could take a local send with the same message by mistake: it counts
//! them, and while a cluster session collects, sets them aside
//! ([`Collected`]: the event's id, pid, fingerprint and where it went or
//! came from, read while the event is at hand).
//!
//! The fingerprint is the message's `phash2`, which the tracer takes as it
//! captures a message crossing nodes: `phash2` is the same for the same
//! term on every node (atoms by name, pids and references by node, number
//! and creation), which no hash of this VM's term words is. Events that
//! come without one (ingested from Elixir) get it when they are exchanged.
//!
//! The cluster layer then exchanges the halves in batches: each node
//! hands its sends to each destination node as records with keys that mean
//! the same on every node ([`wire`]), each receiving node pairs them with
//! its own receives ([`matcher`]), links its receives and hands each
//! sending node back its send-side links. During a session a round takes
//! only the halves older than a cutoff (a second before the round, see
//! the matcher); younger ones stay set aside, in order, for a later round,
//! so a half is read, exchanged and indexed once.
//!
//! Invariant: [`Collected`] holds at most `MAX_COLLECTED` halves per kind;
//! beyond, the oldest go and are counted (they stay stored, unlinked).

mod buckets;
mod held;
pub mod matcher;
pub mod round;
pub mod wire;

pub use held::{Aside, Held, Taken};

use crate::event::{Event, EventKind};
use crate::hash::WordMap;
use crate::payload::{tag, varint};

/// Most halves of each kind waiting to be exchanged.
const MAX_COLLECTED: usize = 1 << 20;

/// This node: its name's atom word and the name's bytes (as they appear in
/// the external term format of its pids and references).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalNode {
    pub atom: u64,
    pub name: Vec<u8>,
}

/// Where a send crossing nodes went. Nodes named in external term format
/// are given by the [`wire::node_key`] of their name, others by atom word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A pid (its [`wire::etf_key`]).
    Pid { key: u64, node: u64 },
    /// A process alias (or port) there.
    Alias { node: u64 },
    /// `{name, node}`, both atom words.
    Named { name: u64, node: u64 },
}

/// Where a receive crossing nodes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A node (its atom word): the tracer's record of a remote sender.
    Node(u64),
    /// A pid (its [`wire::etf_key`]) on the node with that [`wire::node_key`].
    Pid { key: u64, node: u64 },
}

/// A send to another node, set aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutHalf {
    pub id: u64,
    /// The send's timestamp.
    pub at: i64,
    /// The sender's pid word.
    pub sender: u64,
    pub to: Destination,
    /// The event's fingerprint (0: to be taken from the stored message).
    pub fingerprint: u32,
}

/// A receive from another node, set aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InHalf {
    pub id: u64,
    /// The receive's timestamp.
    pub at: i64,
    /// The receiver's pid word.
    pub receiver: u64,
    pub from: Origin,
    pub fingerprint: u32,
}

/// A message event crossing nodes, as set aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    Out(OutHalf),
    In(InHalf),
}

impl LocalNode {
    /// The node with atom word `atom` and name `name` (its atom's text).
    pub fn new(atom: u64, name: &[u8]) -> Self {
        LocalNode {
            atom,
            name: name.to_vec(),
        }
    }

    /// The half of a message crossing between this node and another that
    /// the event `e` is, if it is one.
    pub fn half(&self, e: &Event) -> Option<Half> {
        let peer = e.peer.as_bytes();
        match e.kind {
            EventKind::MessageSend => Some(Half::Out(OutHalf {
                id: e.id,
                at: e.timestamp,
                sender: e.pid,
                to: self.remote_destination(peer)?,
                fingerprint: e.fingerprint,
            })),
            EventKind::MessageReceive => Some(Half::In(InHalf {
                id: e.id,
                at: e.timestamp,
                receiver: e.pid,
                from: self.remote_origin(peer)?,
                fingerprint: e.fingerprint,
            })),
            _ => None,
        }
    }

    /// A remote pid or reference, or `{name, other_node}`.
    fn remote_destination(&self, peer: &[u8]) -> Option<Destination> {
        match peer.first() {
            Some(&tag::EXTERNAL) => {
                let etf = external_bytes(peer)?;
                let node = self.remote_etf_node(etf)?;
                Some(match etf.get(1) {
                    Some(&(etf::NEW_PID | etf::PID)) => Destination::Pid {
                        key: wire::etf_key(etf),
                        node,
                    },
                    _ => Destination::Alias { node },
                })
            }
            Some(&tag::TUPLE) => {
                let (name, node) = tuple_of_two_atoms(peer)?;
                (node != self.atom).then_some(Destination::Named { name, node })
            }
            _ => None,
        }
    }

    /// Another node's atom (what the tracer records for a remote sender),
    /// or a remote pid.
    fn remote_origin(&self, peer: &[u8]) -> Option<Origin> {
        match peer.first() {
            Some(&tag::ATOM) => {
                let mut at = 1;
                let w = varint::decode(peer, &mut at)?;
                (w != self.atom && at == peer.len()).then_some(Origin::Node(w))
            }
            Some(&tag::EXTERNAL) => {
                let etf = external_bytes(peer)?;
                let node = self.remote_etf_node(etf)?;
                matches!(etf.get(1), Some(&(etf::NEW_PID | etf::PID))).then(|| Origin::Pid {
                    key: wire::etf_key(etf),
                    node,
                })
            }
            _ => None,
        }
    }

    /// The [`wire::node_key`] of the node of an external pid, port or
    /// reference, when it is not this node.
    fn remote_etf_node(&self, etf: &[u8]) -> Option<u64> {
        let node = etf_node(etf)?;
        (node != self.name.as_slice()).then(|| wire::node_key(node))
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
    match crate::payload::word_pair(payload)? {
        [(tag::ATOM, a), (tag::ATOM, b)] => Some((a, b)),
        _ => None,
    }
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
    /// Sends waiting to be taken, by the [`wire::node_key`] of their
    /// destination node.
    pub outbox: WordMap<u64, wire::SendBatch>,
    /// Atom words of the nodes sends were taken from, by `node_key`.
    pub nodes: WordMap<u64, u64>,
    /// This node's receives from other nodes and the sends taken for them.
    pub matcher: matcher::Matcher,
    /// Crossing halves skipped: no longer stored when read, malformed, or
    /// left over from an earlier session.
    pub skipped: u64,
    /// Time the rounds' native steps took on this node, in ns (see
    /// [`round`]).
    pub busy_ns: u64,
    pub scratch: Scratch,
}

/// Buffers every round reuses, keeping their capacity: fresh pages cost a
/// round more than its pairing does, so in steady state a round asks the
/// allocator for next to nothing.
#[derive(Default)]
pub struct Scratch {
    /// The halves a round took (see [`Collected::take_sends`]); their
    /// chunks go back to the correlator with the next take.
    pub sends: Taken<OutHalf>,
    pub receives: Taken<InHalf>,
    pub matched: Vec<matcher::Matched>,
}

impl Exchange {
    /// Forgets what waits (a new session starts: one runs at a time per
    /// node, and the last one's halves were exchanged when it stopped);
    /// `collected` halves set aside but never read are counted with the
    /// rest as dropped.
    pub fn reset(&mut self, collected: usize) {
        let records: u64 = self.outbox.values().map(wire::SendBatch::len).sum();
        self.skipped += records + collected as u64;
        self.outbox.values_mut().for_each(wire::SendBatch::clear);
        self.matcher.clear();
    }
}

/// The crossing halves stored since the last exchange, oldest first.
#[derive(Debug, Default)]
pub struct Collected {
    pub sends: Held<OutHalf>,
    pub receives: Held<InHalf>,
    /// Halves that went past `MAX_COLLECTED` (left unlinked).
    pub dropped: u64,
}

impl Collected {
    /// Bytes the halves take (their chunks' capacity).
    pub fn memory_bytes(&self) -> usize {
        self.sends.memory_bytes() + self.receives.memory_bytes()
    }

    /// Hands the sends set aside over to `into` (what it held comes back
    /// for reuse), in order, up to the last one with a timestamp before
    /// `before`; the younger ones after it stay. True when one of those
    /// handed over may lack its fingerprint.
    pub fn take_sends(&mut self, before: i64, into: &mut Taken<OutHalf>) -> bool {
        self.sends.take_before(before, into)
    }

    /// [`Collected::take_sends`] for the receives.
    pub fn take_receives(&mut self, before: i64, into: &mut Taken<InHalf>) -> bool {
        self.receives.take_before(before, into)
    }

    /// This node's receives from other nodes not linked yet: waiting in
    /// the matcher for their send, or still set aside here (younger than
    /// the last round's cutoff).
    pub fn waiting_receives(&self, matcher: &matcher::MatcherStats) -> u64 {
        matcher.waiting_receives + self.receives.len() as u64
    }

    pub fn push(&mut self, half: Half) {
        match half {
            Half::Out(h) => self.sends.push(h, MAX_COLLECTED, &mut self.dropped),
            Half::In(h) => self.receives.push(h, MAX_COLLECTED, &mut self.dropped),
        }
    }
}

/// Both kinds of half read as [`Aside`] through their fields of that name.
macro_rules! aside_by_fields {
    ($($half:ty),*) => {$(
        impl Aside for $half {
            fn id(&self) -> u64 {
                self.id
            }
            fn at(&self) -> i64 {
                self.at
            }
            fn fingerprint(&self) -> u32 {
                self.fingerprint
            }
        }
    )*};
}

aside_by_fields!(OutHalf, InHalf);

/// Payloads of peers crossing nodes, for tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::etf;
    use crate::payload::{tag, varint, Payload};

    fn atom_name(name: &str) -> Vec<u8> {
        let mut b = vec![etf::SMALL_ATOM_UTF8, name.len() as u8];
        b.extend_from_slice(name.as_bytes());
        b
    }

    /// `EXTERNAL` payload of a pid (or, with `reference`, a ref) of `node`,
    /// told apart from others of the node by `n`.
    pub fn external(node: &str, reference: bool, n: u8) -> Payload {
        let mut etf_bytes = vec![etf::VERSION];
        if reference {
            etf_bytes.extend_from_slice(&[etf::NEWER_REFERENCE, 0, 3]);
            etf_bytes.extend(atom_name(node));
            etf_bytes.extend_from_slice(&[n; 16]);
        } else {
            etf_bytes.push(etf::NEW_PID);
            etf_bytes.extend(atom_name(node));
            etf_bytes.extend_from_slice(&[n; 12]);
        }
        let mut p = vec![tag::EXTERNAL];
        varint::push(&mut p, etf_bytes.len() as u64);
        p.extend(etf_bytes);
        Payload::from_bytes(&p)
    }

    pub fn atom(word: u64) -> Payload {
        let mut p = vec![tag::ATOM];
        varint::push(&mut p, word);
        Payload::from_bytes(&p)
    }

    pub fn named_peer(name: u64, node: u64) -> Payload {
        let mut p = vec![tag::TUPLE, 2, tag::ATOM];
        varint::push(&mut p, name);
        p.push(tag::ATOM);
        varint::push(&mut p, node);
        Payload::from_bytes(&p)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{atom, external, named_peer};
    use super::*;
    use crate::event::test_support::event;
    use crate::payload::Payload;

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
        let to = |peer| match here.half(&with_peer(EventKind::MessageSend, peer)) {
            Some(Half::Out(h)) => Some(h.to),
            _ => None,
        };
        let from = |peer| match here.half(&with_peer(EventKind::MessageReceive, peer)) {
            Some(Half::In(h)) => Some(h.from),
            _ => None,
        };
        let b_pid = external("b@h", false, 0);
        let pid_key = wire::etf_key(external_bytes(b_pid.as_bytes()).unwrap());
        let b = wire::node_key(b"b@h");

        assert_eq!(
            to(b_pid.clone()),
            Some(Destination::Pid {
                key: pid_key,
                node: b
            })
        );
        assert_eq!(
            to(external("b@h", true, 0)),
            Some(Destination::Alias { node: b })
        );
        let named = Destination::Named {
            name: 0x80b,
            node: 0x50b,
        };
        assert_eq!(to(named_peer(0x80b, 0x50b)), Some(named));
        assert_eq!(to(external("a@h", true, 0)), None, "a local alias");
        assert_eq!(to(named_peer(0x80b, 0x40b)), None, "{{name, node()}}");
        assert_eq!(to(Payload::pid(0x203)), None);
        assert_eq!(to(atom(0x80b)), None, "a registered name");

        assert_eq!(from(atom(0x50b)), Some(Origin::Node(0x50b)));
        assert_eq!(
            from(b_pid),
            Some(Origin::Pid {
                key: pid_key,
                node: b
            })
        );
        assert_eq!(
            from(external("b@h", true, 0)),
            None,
            "a reference is no sender"
        );
        assert_eq!(from(atom(0x40b)), None);
        assert_eq!(from(Payload::pid(0x203)), None);
        assert_eq!(from(Payload::empty()), None);

        let mut e = with_peer(EventKind::MessageSend, external("b@h", true, 0));
        (e.id, e.fingerprint) = (7, 99);
        let expected = OutHalf {
            id: 7,
            at: e.timestamp,
            sender: 0x103,
            to: Destination::Alias { node: b },
            fingerprint: 99,
        };
        assert_eq!(here.half(&e), Some(Half::Out(expected)));
    }

    #[test]
    fn etf_node_reads_pids_ports_and_references_only() {
        let pid = external("b@h", false, 0);
        let reference = external("c@h", true, 0);
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
    fn halves_are_taken_up_to_the_last_one_older_than_the_cutoff() {
        let mut c = Collected::default();
        let half = |id, at, fingerprint| InHalf {
            id,
            at,
            receiver: 1,
            from: Origin::Node(2),
            fingerprint,
        };
        for (id, at) in [(1, 10), (2, 30), (3, 20), (4, 40), (5, 50)] {
            c.push(Half::In(half(id, at, if id == 4 { 0 } else { 5 })));
        }
        let mut taken = Taken::default();
        let ids = |v: &Taken<InHalf>| v.iter().map(|h| h.id).collect::<Vec<_>>();
        let held = |c: &Collected| c.receives.iter().map(|h| h.id).collect::<Vec<_>>();
        assert!(
            c.take_receives(25, &mut taken),
            "4 came without a fingerprint"
        );
        assert_eq!(ids(&taken), [1, 2, 3], "2 is younger, but goes along");
        assert_eq!(held(&c), [4, 5]);
        assert!(!c.take_receives(35, &mut taken), "none goes");
        assert_eq!(ids(&taken), []);
        assert!(!c.take_receives(20, &mut taken), "an earlier cutoff");
        assert_eq!((ids(&taken), held(&c)), (vec![], vec![4, 5]));
        assert!(c.take_receives(45, &mut taken));
        assert_eq!((ids(&taken), held(&c)), (vec![4], vec![5]));
        assert!(c.take_receives(i64::MAX, &mut taken), "set while 5 stayed");
        assert_eq!((ids(&taken), c.receives.len()), (vec![5], 0));
        c.push(Half::In(half(6, 60, 5)));
        assert!(!c.take_receives(i64::MAX, &mut taken));
        assert_eq!(ids(&taken), [6]);
        c.push(Half::In(half(7, 70, 5)));
        c.take_receives(65, &mut taken);
        assert_eq!((ids(&taken), held(&c)), (vec![], vec![7]));
        c.push(Half::In(half(8, 61, 5)));
        c.take_receives(65, &mut taken);
        assert_eq!(ids(&taken), [7, 8], "an older half stored late is taken");
    }

    #[test]
    fn collected_halves_are_bounded_and_counted() {
        let mut c = Collected::default();
        let half = |id| InHalf {
            id,
            at: 0,
            receiver: 1,
            from: Origin::Node(2),
            fingerprint: 3,
        };
        for id in 0..(MAX_COLLECTED as u64 + 1) {
            c.push(Half::In(half(id)));
        }
        assert_eq!(c.dropped, (MAX_COLLECTED / 2) as u64);
        assert!(c.sends.is_empty());
        assert_eq!(
            c.receives.iter().next(),
            Some(&half((MAX_COLLECTED / 2) as u64))
        );
        assert_eq!(c.receives.len(), MAX_COLLECTED / 2 + 1);
    }
}
