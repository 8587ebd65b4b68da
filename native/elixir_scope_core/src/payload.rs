//! Payload: the bytes of one encoded Erlang term, stored inline when small.
//!
//! The NIF crate encodes event payloads (arguments, return values, messages)
//! with the format described in [`tag`]; the core only stores the bytes and
//! can read a few things out of them (a pid, a fingerprint) without the BEAM.
//!
//! Invariants: `Inline.len <= INLINE_CAP`; an empty payload means "no term"
//! (Elixir `nil` for the optional `peer` field). Payloads up to 22 bytes
//! (atoms, small integers, pids, short argument lists) cost no allocation,
//! which keeps the ingest hot path allocation-free for typical events.

/// Tags of the term encoding, one byte each, written in pre-order.
///
/// Lengths and counts are LEB128 varints; integers are zigzag varints, so
/// small values take one byte. Atoms and local pids are stored as the varint
/// of their raw term word: on ERTS these are immediates that stay valid in
/// every environment for the life of the VM (the atom table is never
/// collected), so they cost no lookup on either side. A typical argument
/// list such as `[42, :ok]` takes about 10 bytes and stays inline.
pub mod tag {
    /// `[]`.
    pub const NIL: u8 = 0;
    /// Atom: varint raw term word.
    pub const ATOM: u8 = 1;
    /// Integer that fits i64: zigzag varint.
    pub const INT: u8 = 2;
    /// Float: f64 bits, 8 bytes little-endian.
    pub const FLOAT: u8 = 3;
    /// Binary: varint length, bytes.
    pub const BINARY: u8 = 4;
    /// Tuple: varint arity, then the elements.
    pub const TUPLE: u8 = 5;
    /// List: varint length, the elements, then the tail (NIL when proper).
    pub const LIST: u8 = 6;
    /// Map: varint size, then key, value pairs.
    pub const MAP: u8 = 7;
    /// Local pid: varint raw term word.
    pub const PID: u8 = 8;
    /// Anything else (refs, funs, ports, remote pids, bignums, bitstrings):
    /// varint length, external term format bytes.
    pub const EXTERNAL: u8 = 9;
    /// A term too large or too deep to keep: varint encoded size, varint
    /// hint length, hint bytes (UTF-8). Decodes to `{:truncated, size, hint}`.
    pub const TRUNCATED: u8 = 10;
}

/// LEB128 varints (7 bits a byte, low groups first).
pub mod varint {
    /// Longest encoding of a u64.
    pub const MAX_LEN: usize = 10;

    /// Appends `v` to `out` (byte by byte: 1 to 10 bytes, where a memcpy
    /// call would cost more).
    pub fn push(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// Reads a varint at `*pos`, advancing it; `None` when malformed.
    pub fn decode(bytes: &[u8], pos: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *bytes.get(*pos)?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    pub fn zigzag(i: i64) -> u64 {
        ((i << 1) ^ (i >> 63)) as u64
    }

    pub fn unzigzag(u: u64) -> i64 {
        ((u >> 1) as i64) ^ -((u & 1) as i64)
    }
}

/// Bytes a payload holds without an allocation.
pub const INLINE_CAP: usize = 22;

/// The encoded bytes of one term (or nothing).
#[derive(Clone, PartialEq, Eq)]
pub enum Payload {
    Inline { len: u8, buf: [u8; INLINE_CAP] },
    Heap(Box<[u8]>),
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Inline {
            len: 0,
            buf: [0; INLINE_CAP],
        }
    }
}

impl Payload {
    /// The empty payload ("no term").
    pub fn empty() -> Self {
        Self::default()
    }

    /// Copies `bytes` into a payload, inline when it fits.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE_CAP {
            let mut buf = [0; INLINE_CAP];
            buf[..bytes.len()].copy_from_slice(bytes);
            Payload::Inline {
                len: bytes.len() as u8,
                buf,
            }
        } else {
            Payload::Heap(bytes.into())
        }
    }

    /// Makes the payload empty and inline, and lends its length and buffer
    /// to an encoder that fills it in place (writing the length last).
    pub fn inline_parts(&mut self) -> (&mut u8, &mut [u8; INLINE_CAP]) {
        if let Payload::Heap(_) = self {
            *self = Payload::empty();
        }
        match self {
            Payload::Inline { len, buf } => {
                *len = 0;
                (len, buf)
            }
            Payload::Heap(_) => unreachable!("made inline above"),
        }
    }

    /// A payload holding one local pid (built in place: no allocation).
    pub fn pid(raw: u64) -> Self {
        let mut buf = [0; INLINE_CAP];
        buf[0] = tag::PID;
        let (mut v, mut len) = (raw, 1);
        while v >= 0x80 {
            buf[len] = (v as u8) | 0x80;
            v >>= 7;
            len += 1;
        }
        buf[len] = v as u8;
        Payload::Inline {
            len: len as u8 + 1,
            buf,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Inline { len, buf } => &buf[..*len as usize],
            Payload::Heap(b) => b,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// Heap bytes owned beyond the struct itself (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Payload::Inline { .. } => 0,
            Payload::Heap(b) => b.len(),
        }
    }

    /// The raw pid word when the payload is exactly one local pid.
    pub fn as_pid(&self) -> Option<u64> {
        let bytes = self.as_bytes();
        let mut pos = 1;
        match bytes.first() {
            Some(&tag::PID) => varint::decode(bytes, &mut pos).filter(|_| pos == bytes.len()),
            _ => None,
        }
    }

    /// The local pid a message went to, by a send's `peer`: a pid, or
    /// `{name, pid}` (a registered name and its holder at the send, as the
    /// tracer records a send to a name).
    pub fn destination_pid(&self) -> Option<u64> {
        match word_pair(self.as_bytes()) {
            Some([(tag::ATOM, _), (tag::PID, pid)]) => Some(pid),
            _ => self.as_pid(),
        }
    }
}

/// The elements of an encoded 2-tuple of one-word terms (atoms, local
/// pids), each as (tag, word).
pub fn word_pair(bytes: &[u8]) -> Option<[(u8, u64); 2]> {
    let mut at = 1;
    if bytes.first() != Some(&tag::TUPLE) || varint::decode(bytes, &mut at)? != 2 {
        return None;
    }
    let mut word = || {
        let t = *bytes
            .get(at)
            .filter(|&&t| t == tag::ATOM || t == tag::PID)?;
        at += 1;
        Some((t, varint::decode(bytes, &mut at)?))
    };
    let pair = [word()?, word()?];
    (at == bytes.len()).then_some(pair)
}

/// True when the encoded term `needle` is `haystack` or one of its
/// subterms (a tuple's or list's element, a map's key or value, at any
/// depth), as `tr:contains_data/2` searches a trace's data. Both are
/// encodings of the format of [`tag`]; a subterm matches when its encoded
/// bytes are `needle`'s (the encoding of a term is canonical).
pub fn contains_term(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return false;
    }
    let mut pos = 0;
    while pos < haystack.len() {
        // `pos` is always at a subterm's start: a pre-order walk.
        if haystack[pos..].starts_with(needle) && end_of(haystack, pos) == Some(pos + needle.len())
        {
            return true;
        }
        match step(haystack, pos) {
            Some(next) => pos = next,
            None => return false,
        }
    }
    false
}

/// Writes to `out` (cleared first) `bytes` re-encoded with every atom and
/// pid word `w` (tagged [`tag::ATOM`] or [`tag::PID`]) replaced by
/// `map(tag, w)`; `None` when `bytes` is malformed or `map` refuses a
/// word. Used to write payloads in a form another VM can read (atoms and
/// pids as table indices) and back.
pub fn map_words(
    bytes: &[u8],
    out: &mut Vec<u8>,
    mut map: impl FnMut(u8, u64) -> Option<u64>,
) -> Option<()> {
    out.clear();
    let mut pos = 0;
    while pos < bytes.len() {
        let (next, _) = header(bytes, pos)?;
        match bytes[pos] {
            t @ (tag::ATOM | tag::PID) => {
                let mut at = pos + 1;
                let word = varint::decode(bytes, &mut at)?;
                out.push(t);
                varint::push(out, map(t, word)?);
            }
            _ => out.extend_from_slice(&bytes[pos..next]),
        }
        pos = next;
    }
    Some(())
}

/// The position just past the subterm starting at `pos`.
fn end_of(bytes: &[u8], pos: usize) -> Option<usize> {
    let mut at = pos;
    let mut pending = 1u64;
    while pending > 0 {
        let (next, children) = header(bytes, at)?;
        at = next;
        pending = pending - 1 + children;
    }
    Some(at)
}

/// The position of the next subterm in pre-order after the one at `pos`
/// (its first child, or what follows it).
fn step(bytes: &[u8], pos: usize) -> Option<usize> {
    header(bytes, pos).map(|(next, _)| next)
}

/// Reads the tag and fixed part of the subterm at `pos`: the position of
/// what follows that part, and how many child subterms come after it.
fn header(bytes: &[u8], pos: usize) -> Option<(usize, u64)> {
    let mut at = pos + 1;
    let skip = |at: &mut usize, n: u64| -> Option<()> {
        *at = at.checked_add(usize::try_from(n).ok()?)?;
        (*at <= bytes.len()).then_some(())
    };
    let children = match *bytes.get(pos)? {
        tag::NIL => 0,
        tag::ATOM | tag::INT | tag::PID => {
            varint::decode(bytes, &mut at)?;
            0
        }
        tag::FLOAT => {
            skip(&mut at, 8)?;
            0
        }
        tag::BINARY | tag::EXTERNAL => {
            let n = varint::decode(bytes, &mut at)?;
            skip(&mut at, n)?;
            0
        }
        tag::TUPLE => varint::decode(bytes, &mut at)?,
        // The elements, then the tail.
        tag::LIST => varint::decode(bytes, &mut at)?.checked_add(1)?,
        tag::MAP => varint::decode(bytes, &mut at)?.checked_mul(2)?,
        tag::TRUNCATED => {
            varint::decode(bytes, &mut at)?;
            let n = varint::decode(bytes, &mut at)?;
            skip(&mut at, n)?;
            0
        }
        _ => return None,
    };
    Some((at, children))
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({:02x?})", self.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_goes_to_a_pid_or_to_a_name_with_its_holder() {
        let encoded = |elements: &[(u8, u64)]| {
            let mut b = vec![tag::TUPLE, elements.len() as u8];
            for &(t, w) in elements {
                b.push(t);
                varint::push(&mut b, w);
            }
            Payload::from_bytes(&b)
        };
        let (name, pid) = (0x80b, 0x1_2343);
        assert_eq!(Payload::pid(pid).destination_pid(), Some(pid));
        let named = encoded(&[(tag::ATOM, name), (tag::PID, pid)]);
        assert_eq!(named.destination_pid(), Some(pid));
        assert_eq!(named.as_pid(), None, "not a pid itself");
        assert_eq!(
            word_pair(named.as_bytes()),
            Some([(tag::ATOM, name), (tag::PID, pid)])
        );
        // A name alone, `{name, node}`, a pid first, a longer tuple: no pid.
        for peer in [
            encoded(&[]),
            encoded(&[(tag::ATOM, name), (tag::ATOM, 0x50b)]),
            encoded(&[(tag::PID, pid), (tag::ATOM, name)]),
            encoded(&[(tag::ATOM, name), (tag::PID, pid), (tag::PID, pid)]),
        ] {
            assert_eq!(peer.destination_pid(), None, "{:?}", peer.as_bytes());
        }
        let mut cut = named.as_bytes().to_vec();
        cut.pop();
        assert_eq!(Payload::from_bytes(&cut).destination_pid(), None);
    }

    #[test]
    fn small_payloads_stay_inline_and_large_go_to_heap() {
        let small = Payload::from_bytes(&[1, 2, 3]);
        assert!(matches!(small, Payload::Inline { len: 3, .. }));
        assert_eq!(small.as_bytes(), &[1, 2, 3]);
        assert_eq!(small.heap_bytes(), 0);

        let big_bytes: Vec<u8> = (0..100).collect();
        let big = Payload::from_bytes(&big_bytes);
        assert!(matches!(big, Payload::Heap(_)));
        assert_eq!(big.as_bytes(), &big_bytes[..]);
        assert_eq!(big.heap_bytes(), 100);
    }

    #[test]
    fn payload_is_24_bytes_and_empty_by_default() {
        assert_eq!(std::mem::size_of::<Payload>(), 24);
        assert!(Payload::empty().is_empty());
    }

    #[test]
    fn contains_term_finds_subterms_at_any_depth_and_nothing_else() {
        let atom = |w: u64| {
            let mut b = vec![tag::ATOM];
            varint::push(&mut b, w);
            b
        };
        let int = |i: i64| {
            let mut b = vec![tag::INT];
            varint::push(&mut b, varint::zigzag(i));
            b
        };
        // {:ok, [1, {:deep, 300}], "bin"}
        let deep: Vec<u8> = [vec![tag::TUPLE, 2], atom(7), int(300)].concat();
        let list: Vec<u8> = [vec![tag::LIST, 2], int(1), deep.clone(), vec![tag::NIL]].concat();
        let bin = vec![tag::BINARY, 3, b'b', b'i', b'n'];
        let term: Vec<u8> = [vec![tag::TUPLE, 3], atom(5), list.clone(), bin.clone()].concat();
        for needle in [
            &term,
            &atom(5),
            &list,
            &deep,
            &int(300),
            &int(1),
            &bin,
            &atom(7),
        ] {
            assert!(contains_term(&term, needle), "{needle:?}");
        }
        for needle in [
            atom(6),
            int(2),
            int(30),
            vec![tag::TUPLE, 2],
            vec![],
            vec![tag::NIL, 0],
        ] {
            assert!(!contains_term(&term, &needle), "{needle:?}");
        }
        // A prefix of a subterm is not a subterm.
        assert!(!contains_term(&term, &deep[..deep.len() - 1]));
        assert!(
            !contains_term(&[tag::LIST, 9], &int(1)),
            "malformed: no match, no panic"
        );
    }

    #[test]
    fn map_words_rewrites_atoms_and_pids_and_keeps_the_rest() {
        let mut b = vec![tag::TUPLE, 3, tag::ATOM];
        varint::push(&mut b, 0x1234b);
        b.extend([tag::LIST, 2, tag::PID]);
        varint::push(&mut b, 0x5673);
        b.extend([tag::BINARY, 2, 0xAA, 0xBB, tag::NIL, tag::INT, 4]);
        let (mut mapped, mut back) = (Vec::new(), Vec::new());
        map_words(&b, &mut mapped, |t, w| {
            Some(if t == tag::ATOM { 1 } else { w + 1 })
        })
        .unwrap();
        map_words(&mapped, &mut back, |t, w| {
            Some(if t == tag::ATOM { 0x1234b } else { w - 1 })
        })
        .unwrap();
        assert_eq!(back, b);
        assert_eq!(&mapped[..4], &[tag::TUPLE, 3, tag::ATOM, 1]);
        assert!(
            map_words(&b, &mut back, |_, _| None).is_none(),
            "a refused word"
        );
        assert!(
            map_words(&b[..5], &mut back, |_, w| Some(w)).is_none(),
            "malformed"
        );
    }

    #[test]
    fn pid_payload_round_trips() {
        let p = Payload::pid(0xdead_beef);
        assert_eq!(p.as_pid(), Some(0xdead_beef));
        assert_eq!(Payload::from_bytes(&[tag::ATOM, 0, 0]).as_pid(), None);
        assert_eq!(Payload::from_bytes(&[tag::PID, 0x80]).as_pid(), None);
    }

    #[test]
    fn varints_round_trip_and_stay_short() {
        let encoded = |v| {
            let mut buf = Vec::new();
            varint::push(&mut buf, v);
            buf
        };
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let buf = encoded(v);
            let mut pos = 0;
            assert_eq!(varint::decode(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
        }
        assert_eq!(encoded(127).len(), 1);
        assert_eq!(encoded(u64::MAX).len(), varint::MAX_LEN);
        for i in [0i64, -1, 1, -64, 63, i64::MIN, i64::MAX] {
            assert_eq!(varint::unzigzag(varint::zigzag(i)), i);
        }
        assert_eq!(varint::zigzag(-1), 1);
        for raw in [0, 0x7f, 0x80, 0x1234_5678_9abc_def3, u64::MAX] {
            let mut bytes = vec![tag::PID];
            varint::push(&mut bytes, raw);
            assert_eq!(Payload::pid(raw).as_bytes(), &bytes[..]);
            assert_eq!(Payload::pid(raw).as_pid(), Some(raw));
        }
        let mut pos = 0;
        assert_eq!(varint::decode(&[0x80, 0x80], &mut pos), None, "cut short");
    }
}
