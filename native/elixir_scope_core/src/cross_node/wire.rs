//! What crosses between nodes: keys that mean the same on every node, and
//! the fixed-size records of the exchange.
//!
//! Atom and local pid words are this VM's own, so nothing built from them
//! can be compared on another node. Keys are built instead from what is
//! the same everywhere: an atom's external term format ([`name_key`]), a
//! pid's ([`etf_key`]: its node, number, serial and creation, whichever
//! node encodes it) and a node's name ([`node_key`]). Messages are keyed by
//! their `phash2` (see [`super`]).
//!
//! Records are little-endian u64s: a [`SendHalf`] takes 5 words, a
//! [`LinkBack`] 2.

use std::hash::Hasher;

use crate::hash::WordHasher;
use crate::payload::tag;

/// Key of an atom, from its external term format.
pub fn name_key(name: &[u8]) -> u64 {
    let mut h = WordHasher::default();
    h.write_u8(tag::ATOM);
    h.write(name);
    h.write_usize(name.len());
    h.finish()
}

/// Key of a pid or reference, from its external term format bytes.
pub fn etf_key(etf: &[u8]) -> u64 {
    let mut h = WordHasher::default();
    h.write_u8(tag::EXTERNAL);
    h.write(etf);
    h.write_usize(etf.len());
    h.finish()
}

/// Key of a node, from its name as it appears in external term format.
pub fn node_key(name: &[u8]) -> u64 {
    let mut h = WordHasher::default();
    h.write_u8(tag::TUPLE);
    h.write(name);
    h.write_usize(name.len());
    h.finish()
}

/// Where a send went, as the receiving node can recognize it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum To {
    /// A pid (its [`etf_key`]).
    Pid(u64),
    /// A registered name there (its [`name_key`]).
    Name(u64),
    /// Anything else addressed to the node: a process alias, such as a
    /// `GenServer.call` reply.
    Node,
}

/// Bytes of a [`SendHalf`] record.
pub const SEND_HALF_BYTES: usize = 40;

/// A send to another node, as its node hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendHalf {
    pub id: u64,
    /// The sender's [`etf_key`].
    pub sender: u64,
    pub to: To,
    pub fingerprint: u64,
}

/// A receive's link back to its send: the send's node patches `send` with
/// `{:received_by, {receiving node, receive}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkBack {
    pub send: u64,
    pub receive: u64,
}

fn put(out: &mut Vec<u8>, words: &[u64]) {
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

fn words<const N: usize>(bytes: &[u8]) -> Option<impl Iterator<Item = [u64; N]> + '_> {
    bytes.len().is_multiple_of(8 * N).then(|| {
        bytes.chunks_exact(8 * N).map(|c| {
            std::array::from_fn(|i| u64::from_le_bytes(c[8 * i..8 * i + 8].try_into().unwrap()))
        })
    })
}

impl SendHalf {
    pub fn write(&self, out: &mut Vec<u8>) {
        let (kind, key) = match self.to {
            To::Pid(k) => (1, k),
            To::Name(k) => (2, k),
            To::Node => (0, 0),
        };
        put(out, &[self.id, self.sender, kind, key, self.fingerprint]);
    }

    fn from_words([id, sender, kind, key, fingerprint]: [u64; 5]) -> Option<SendHalf> {
        let to = match kind {
            0 => To::Node,
            1 => To::Pid(key),
            2 => To::Name(key),
            _ => return None,
        };
        Some(SendHalf {
            id,
            sender,
            to,
            fingerprint,
        })
    }
}

/// The [`SendHalf`] records of a byte string, read in place.
#[derive(Clone, Copy, Debug)]
pub struct SendRecords<'a>(&'a [u8]);

impl<'a> SendRecords<'a> {
    /// `None` when `bytes` is not a whole number of well-formed records.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        words::<5>(bytes)?
            .all(|w| SendHalf::from_words(w).is_some())
            .then_some(SendRecords(bytes))
    }

    pub fn len(&self) -> usize {
        self.0.len() / SEND_HALF_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Record `i` (< `len()`).
    #[inline]
    pub fn get(&self, i: usize) -> SendHalf {
        let record = &self.0[i * SEND_HALF_BYTES..(i + 1) * SEND_HALF_BYTES];
        let word = |k: usize| u64::from_le_bytes(record[8 * k..8 * k + 8].try_into().unwrap());
        let to = match word(2) {
            1 => To::Pid(word(3)),
            2 => To::Name(word(3)),
            // 0, as `new` checked.
            _ => To::Node,
        };
        SendHalf {
            id: word(0),
            sender: word(1),
            to,
            fingerprint: word(4),
        }
    }
}

impl LinkBack {
    pub fn write(&self, out: &mut Vec<u8>) {
        put(out, &[self.send, self.receive]);
    }

    pub fn read_all(bytes: &[u8]) -> Option<Vec<LinkBack>> {
        Some(
            words::<2>(bytes)?
                .map(|[send, receive]| LinkBack { send, receive })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_partial_or_unknown_ones() {
        let sends = [
            SendHalf {
                id: 7,
                sender: 1,
                to: To::Pid(9),
                fingerprint: 3,
            },
            SendHalf {
                id: 8,
                sender: 1,
                to: To::Name(5),
                fingerprint: 4,
            },
            SendHalf {
                id: 9,
                sender: 2,
                to: To::Node,
                fingerprint: 4,
            },
        ];
        let mut bytes = Vec::new();
        sends.iter().for_each(|s| s.write(&mut bytes));
        assert_eq!(bytes.len(), 3 * SEND_HALF_BYTES);
        let records = SendRecords::new(&bytes).unwrap();
        let read: Vec<_> = (0..records.len()).map(|i| records.get(i)).collect();
        assert_eq!(read, sends);
        assert!(SendRecords::new(&bytes[..39]).is_none());
        bytes[16] = 7;
        assert!(
            SendRecords::new(&bytes).is_none(),
            "unknown destination kind"
        );

        let mut back = Vec::new();
        LinkBack {
            send: 1,
            receive: 2,
        }
        .write(&mut back);
        assert_eq!(
            LinkBack::read_all(&back).unwrap(),
            [LinkBack {
                send: 1,
                receive: 2
            }]
        );
        assert!(LinkBack::read_all(&back[..15]).is_none());
    }
}
