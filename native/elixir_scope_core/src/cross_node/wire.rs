//! What crosses between nodes: keys that mean the same on every node, and
//! the fixed-size records of the exchange.
//!
//! Atom and local pid words are this VM's own, so nothing built from them
//! can be compared on another node. Keys are built instead from what is
//! the same everywhere: an atom's name ([`name_key`]) and a pid's or
//! reference's external term format bytes ([`etf_key`]), which name its
//! node, number, serial and creation whichever node encodes it. A
//! message's [`fingerprint`] walks its payload and hashes every atom and
//! local pid through those keys (the NIF maps words to them), every
//! `EXTERNAL` term through [`etf_key`] and the rest as encoded. A truncated
//! term hashes as its tag alone: its size depends on the encoding's words.
//!
//! Records are little-endian u64s: a [`SendHalf`] takes 5 words, a
//! [`LinkBack`] 2.

use std::hash::Hasher;

use crate::hash::WordHasher;
use crate::payload::{step, tag, varint};

/// Key of an atom, from its name.
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

/// The fingerprint of an encoded message that is the same on every node;
/// `key(tag, word)` gives the [`name_key`] of an atom word (tag `ATOM`) or
/// the [`etf_key`] of a local pid word (tag `PID`). `None` when the
/// payload is malformed or `key` refuses a word.
pub fn fingerprint(payload: &[u8], mut key: impl FnMut(u8, u64) -> Option<u64>) -> Option<u64> {
    let mut h = WordHasher::default();
    let mut pos = 0;
    while pos < payload.len() {
        let next = step(payload, pos)?;
        match payload[pos] {
            t @ (tag::ATOM | tag::PID) => {
                let mut at = pos + 1;
                h.write_u64(key(t, varint::decode(payload, &mut at)?)?);
            }
            tag::EXTERNAL => h.write_u64(etf_key(super::external_bytes(&payload[pos..next])?)),
            tag::TRUNCATED => h.write_u8(tag::TRUNCATED),
            _ => {
                h.write(&payload[pos..next]);
                h.write_usize(next - pos);
            }
        }
        pos = next;
    }
    Some(h.finish())
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

    /// The records of `bytes`; `None` when it is not a whole number of
    /// well-formed records.
    pub fn read_all(bytes: &[u8]) -> Option<Vec<SendHalf>> {
        words::<5>(bytes)?
            .map(|[id, sender, kind, key, fingerprint]| {
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
            })
            .collect()
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
        assert_eq!(SendHalf::read_all(&bytes).unwrap(), sends);
        assert!(SendHalf::read_all(&bytes[..39]).is_none());
        bytes[16] = 7;
        assert!(
            SendHalf::read_all(&bytes).is_none(),
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

    #[test]
    fn a_fingerprint_sees_atoms_and_pids_through_their_keys() {
        // {:ok, pid}: the same message on two VMs with different words.
        let msg = |atom: u64, pid_tag: u8, pid: &[u8]| {
            let mut p = vec![tag::TUPLE, 2, tag::ATOM];
            varint::push(&mut p, atom);
            p.push(pid_tag);
            p.extend_from_slice(pid);
            p
        };
        let etf = [131u8, 88, 119, 3, b'a', b'@', b'h', 0, 0, 0, 1];
        let mut external = vec![etf.len() as u8];
        external.extend_from_slice(&etf);
        let here = msg(0x40b, tag::PID, &[0x83, 0x02]);
        let there = msg(0x90b, tag::EXTERNAL, &external);
        let key_here = |t: u8, w: u64| match (t, w) {
            (tag::ATOM, 0x40b) => Some(name_key(b"ok")),
            (tag::PID, 0x103) => Some(etf_key(&etf)),
            _ => None,
        };
        let key_there = |t: u8, w: u64| (t == tag::ATOM && w == 0x90b).then(|| name_key(b"ok"));
        let a = fingerprint(&here, key_here).unwrap();
        assert_eq!(a, fingerprint(&there, key_there).unwrap());

        let other = msg(0x90b, tag::EXTERNAL, &{
            let mut e = external.clone();
            *e.last_mut().unwrap() = 2;
            e
        });
        assert_ne!(a, fingerprint(&other, key_there).unwrap());
        assert!(fingerprint(&here, |_, _| None).is_none());
        assert!(
            fingerprint(&[tag::BINARY, 5, 1], key_here).is_none(),
            "malformed"
        );
    }
}
