//! What crosses between nodes: keys that mean the same on every node, and
//! the batches of the exchange.
//!
//! Atom and local pid words are this VM's own, so nothing built from them
//! can be compared on another node. Keys are built instead from what is
//! the same everywhere: an atom's external term format ([`name_key`]), a
//! pid's ([`etf_key`]: its node, number, serial and creation, whichever
//! node encodes it) and a node's name ([`node_key`]). Messages are keyed by
//! their `phash2` (see [`super`]).
//!
//! A node hands another its sends as one [`SendBatch`] and gets back the
//! [`LinkBack`]s of those that found their receive, both as compact byte
//! strings: the distribution copies every byte several times, and at 40
//! bytes a send the copies cost more than the matching.

use std::hash::Hasher;

use crate::hash::{WordHasher, WordMap};
use crate::payload::{tag, varint};

/// Key of an atom, from its external term format.
pub fn name_key(etf: &[u8]) -> u64 {
    key(tag::ATOM, etf)
}

/// Key of a pid or reference, from its external term format bytes.
pub fn etf_key(etf: &[u8]) -> u64 {
    key(tag::EXTERNAL, etf)
}

/// Key of a node, from its name as it appears in external term format.
pub fn node_key(name: &[u8]) -> u64 {
    key(tag::TUPLE, name)
}

/// A hash of `bytes`, apart from the other kinds of keys by `kind`.
fn key(kind: u8, bytes: &[u8]) -> u64 {
    let mut h = WordHasher::default();
    h.write_u8(kind);
    h.write(bytes);
    h.write_usize(bytes.len());
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

/// A send to another node, as its node hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendHalf {
    pub id: u64,
    /// The sender's [`etf_key`].
    pub sender: u64,
    pub to: To,
    /// The message's `phash2`.
    pub fingerprint: u32,
}

/// A receive's link back to its send: the send's node patches `send` with
/// `{:received_by, {receiving node, receive}}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkBack {
    pub send: u64,
    pub receive: u64,
}

/// Sends for one node, encoded as they are pushed: `count`, the senders'
/// and destinations' keys once each, then per send the id's difference to
/// the last one (zigzag), the sender's index, 0 for the node or 1 + the
/// destination's index, and the fingerprint (4 bytes). About 7 bytes a
/// send where its fields would take 33. A batch is cleared once encoded
/// and keeps its buffers for the next round's sends.
#[derive(Default)]
pub struct SendBatch {
    count: u64,
    senders: Keyed<u64>,
    targets: Keyed<(u8, u64)>,
    last_id: u64,
    body: Vec<u8>,
}

/// Keys numbered in order of first use; runs of one key (a process
/// sending to one other) skip the map.
struct Keyed<K> {
    keys: Vec<K>,
    index: WordMap<K, u64>,
    last: Option<(K, u64)>,
}

impl<K> Default for Keyed<K> {
    fn default() -> Self {
        Keyed {
            keys: Vec::new(),
            index: WordMap::default(),
            last: None,
        }
    }
}

impl<K: Copy + Eq + std::hash::Hash> Keyed<K> {
    fn index(&mut self, k: K) -> u64 {
        if let Some((last, i)) = self.last {
            if last == k {
                return i;
            }
        }
        let keys = &mut self.keys;
        let i = *self.index.entry(k).or_insert_with(|| {
            keys.push(k);
            keys.len() as u64 - 1
        });
        self.last = Some((k, i));
        i
    }

    fn clear(&mut self) {
        self.keys.clear();
        self.index.clear();
        self.last = None;
    }
}

impl SendBatch {
    pub fn push(&mut self, s: &SendHalf) {
        self.count += 1;
        varint::push(
            &mut self.body,
            varint::zigzag(s.id.wrapping_sub(self.last_id) as i64),
        );
        self.last_id = s.id;
        let sender = self.senders.index(s.sender);
        varint::push(&mut self.body, sender);
        let to = match s.to {
            To::Node => 0,
            To::Pid(k) => 1 + self.targets.index((1, k)),
            To::Name(k) => 1 + self.targets.index((2, k)),
        };
        varint::push(&mut self.body, to);
        self.body.extend_from_slice(&s.fingerprint.to_le_bytes());
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.count = 0;
        self.senders.clear();
        self.targets.clear();
        self.last_id = 0;
        self.body.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many sends the batch holds.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// The batch's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (mut head, body) = self.parts();
        head.extend_from_slice(body);
        head
    }

    /// The batch's bytes in two parts: a header built here, and the body
    /// as pushed (a caller copies it once, to where it goes).
    pub fn parts(&self) -> (Vec<u8>, &[u8]) {
        let (senders, targets) = (&self.senders.keys, &self.targets.keys);
        let mut head = Vec::with_capacity(8 * senders.len() + 9 * targets.len() + 30);
        varint::push(&mut head, self.count);
        varint::push(&mut head, senders.len() as u64);
        senders
            .iter()
            .for_each(|k| head.extend_from_slice(&k.to_le_bytes()));
        varint::push(&mut head, targets.len() as u64);
        for &(kind, k) in targets {
            head.push(kind);
            head.extend_from_slice(&k.to_le_bytes());
        }
        (head, &self.body)
    }

    /// The sends of a batch's bytes, read as they are iterated (see
    /// [`SendHalves::is_whole`]).
    pub fn decode(bytes: &[u8]) -> SendHalves<'_> {
        let mut r = Reader { bytes, at: 0 };
        let mut header = || {
            let count = r.varint()?;
            let senders: Vec<u64> = (0..r.varint()?).map(|_| r.u64()).collect::<Option<_>>()?;
            let targets: Vec<To> = (0..r.varint()?)
                .map(|_| match (r.u8()?, r.u64()?) {
                    (1, k) => Some(To::Pid(k)),
                    (2, k) => Some(To::Name(k)),
                    _ => None,
                })
                .collect::<Option<_>>()?;
            Some((count, senders, targets))
        };
        let (left, senders, targets, malformed) = match header() {
            Some((count, senders, targets)) => (count, senders, targets, false),
            None => (0, Vec::new(), Vec::new(), true),
        };
        SendHalves {
            r,
            left,
            senders,
            targets,
            id: 0,
            malformed,
        }
    }
}

/// The sends of a [`SendBatch`]'s bytes, read one at a time.
pub struct SendHalves<'a> {
    r: Reader<'a>,
    left: u64,
    senders: Vec<u64>,
    targets: Vec<To>,
    id: u64,
    malformed: bool,
}

impl SendHalves<'_> {
    /// Whether all of the bytes were read and well-formed: a malformed
    /// batch ends the iteration where it goes wrong.
    pub fn is_whole(&self) -> bool {
        !self.malformed && self.left == 0 && self.r.at == self.r.bytes.len()
    }

    fn read(&mut self) -> Option<SendHalf> {
        let r = &mut self.r;
        let id = self.id.wrapping_add(varint::unzigzag(r.varint()?) as u64);
        let sender = *self.senders.get(usize::try_from(r.varint()?).ok()?)?;
        let to = match r.varint()? {
            0 => To::Node,
            i => *self.targets.get(usize::try_from(i - 1).ok()?)?,
        };
        let fingerprint = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
        self.id = id;
        Some(SendHalf {
            id,
            sender,
            to,
            fingerprint,
        })
    }
}

impl Iterator for SendHalves<'_> {
    type Item = SendHalf;

    /// At most the count left, and at least as many as the bytes left can
    /// hold (a send takes 7 of them at least): what a vector extended with
    /// the sends reserves, even for a batch whose count lies.
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.left).unwrap_or(usize::MAX);
        let fit = (self.r.bytes.len() - self.r.at) / 7;
        (left.min(fit), Some(left))
    }

    fn next(&mut self) -> Option<SendHalf> {
        if self.left == 0 || self.malformed {
            return None;
        }
        let half = self.read();
        match half {
            Some(_) => self.left -= 1,
            None => self.malformed = true,
        }
        half
    }
}

/// Link backs for one node, encoded as they are pushed: their count, then
/// the zigzag differences of each pair's ids to the previous pair's (2 to
/// 4 bytes a pair).
#[derive(Default)]
pub struct LinkBackBatch {
    count: u64,
    last: LinkBack,
    body: Vec<u8>,
}

impl LinkBackBatch {
    pub fn push(&mut self, b: LinkBack) {
        self.count += 1;
        let (send, receive) = (
            b.send.wrapping_sub(self.last.send),
            b.receive.wrapping_sub(self.last.receive),
        );
        varint::push(&mut self.body, varint::zigzag(send as i64));
        varint::push(&mut self.body, varint::zigzag(receive as i64));
        self.last = b;
    }

    /// The batch's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (mut head, body) = self.parts();
        head.extend_from_slice(body);
        head
    }

    /// The batch's bytes in two parts (see [`SendBatch::parts`]).
    pub fn parts(&self) -> (Vec<u8>, &[u8]) {
        let mut head = Vec::with_capacity(10);
        varint::push(&mut head, self.count);
        (head, &self.body)
    }
}

impl LinkBack {
    /// The link backs of a [`LinkBackBatch`]'s bytes, read as they are
    /// iterated (see [`LinkBacks::is_whole`]).
    pub fn decode(bytes: &[u8]) -> LinkBacks<'_> {
        let mut r = Reader { bytes, at: 0 };
        let (left, malformed) = match r.varint() {
            Some(count) => (count, false),
            None => (0, true),
        };
        LinkBacks {
            r,
            left,
            last: LinkBack::default(),
            malformed,
        }
    }
}

/// Link backs read from their bytes, one at a time (a round's are not
/// copied into a vector first).
pub struct LinkBacks<'a> {
    r: Reader<'a>,
    left: u64,
    last: LinkBack,
    malformed: bool,
}

impl LinkBacks<'_> {
    /// Whether all of the bytes were read and well-formed: a malformed
    /// batch ends the iteration where it goes wrong.
    pub fn is_whole(&self) -> bool {
        !self.malformed && self.left == 0 && self.r.at == self.r.bytes.len()
    }
}

impl Iterator for LinkBacks<'_> {
    type Item = LinkBack;

    fn next(&mut self) -> Option<LinkBack> {
        if self.left == 0 || self.malformed {
            return None;
        }
        let (Some(send), Some(receive)) = (self.r.varint(), self.r.varint()) else {
            self.malformed = true;
            return None;
        };
        self.left -= 1;
        self.last = LinkBack {
            send: self.last.send.wrapping_add(varint::unzigzag(send) as u64),
            receive: self
                .last
                .receive
                .wrapping_add(varint::unzigzag(receive) as u64),
        };
        Some(self.last)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Option<u64> {
        varint::decode(self.bytes, &mut self.at)
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let b = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(b)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_refuse_what_is_malformed() {
        let sends = [
            SendHalf {
                id: 7,
                sender: 1,
                to: To::Pid(9),
                fingerprint: 3,
            },
            SendHalf {
                id: 5,
                sender: 1,
                to: To::Name(5),
                fingerprint: 4,
            },
            SendHalf {
                id: 900,
                sender: 2,
                to: To::Node,
                fingerprint: u32::MAX,
            },
            SendHalf {
                id: 901,
                sender: 1,
                to: To::Pid(9),
                fingerprint: 4,
            },
        ];
        let mut batch = SendBatch::default();
        assert!(batch.is_empty());
        sends.iter().for_each(|s| batch.push(s));
        let bytes = batch.encode();
        let mut read = SendBatch::decode(&bytes);
        assert_eq!(read.by_ref().collect::<Vec<_>>(), sends);
        assert!(read.is_whole());
        batch.clear();
        assert!(batch.is_empty());
        sends.iter().for_each(|s| batch.push(s));
        assert_eq!(batch.encode(), bytes, "a cleared batch starts afresh");
        // Two senders and two destinations, each written once.
        assert!(
            bytes.len() < 1 + 2 * 8 + 1 + 2 * 9 + 1 + 4 * 8,
            "{} bytes",
            bytes.len()
        );
        let whole = |bytes: &[u8]| {
            let mut read = SendBatch::decode(bytes);
            read.by_ref().count();
            read.is_whole()
        };
        for cut in 0..bytes.len() {
            assert!(!whole(&bytes[..cut]));
        }
        let mut bad = bytes.clone();
        bad[1 + 1 + 2 * 8 + 1] = 7;
        assert!(!whole(&bad), "unknown destination kind");
        let mut bad = bytes.clone();
        bad[bytes.len() - 5] = 9;
        assert!(!whole(&bad), "a destination index past the table");

        let backs = [
            LinkBack {
                send: 10,
                receive: 3,
            },
            LinkBack {
                send: 8,
                receive: 1 << 40,
            },
        ];
        let mut batch = LinkBackBatch::default();
        backs.iter().for_each(|&b| batch.push(b));
        let bytes = batch.encode();
        let mut read = LinkBack::decode(&bytes);
        assert_eq!(read.by_ref().collect::<Vec<_>>(), backs);
        assert!(read.is_whole());
        for cut in 0..bytes.len() {
            let mut read = LinkBack::decode(&bytes[..cut]);
            assert!(read.by_ref().count() < backs.len() && !read.is_whole());
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        let mut read = LinkBack::decode(&trailing);
        assert_eq!(read.by_ref().count(), backs.len());
        assert!(!read.is_whole(), "bytes left over");
        let empty = LinkBackBatch::default().encode();
        let mut read = LinkBack::decode(&empty);
        assert!(read.next().is_none() && read.is_whole());
    }
}
