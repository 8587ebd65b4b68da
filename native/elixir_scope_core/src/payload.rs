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
/// Integers are little-endian. Atoms, local pids and local ports are stored
/// as their raw term word: on ERTS these are immediates that stay valid in
/// every environment for the life of the VM (the atom table is never
/// collected), so they cost one copy and no lookup.
pub mod tag {
    /// `[]`.
    pub const NIL: u8 = 0;
    /// Atom: raw term word (u64).
    pub const ATOM: u8 = 1;
    /// Integer that fits i64: i64.
    pub const INT: u8 = 2;
    /// Float: f64 bits.
    pub const FLOAT: u8 = 3;
    /// Binary: u32 length, bytes.
    pub const BINARY: u8 = 4;
    /// Tuple: u32 arity, then the elements.
    pub const TUPLE: u8 = 5;
    /// List: u32 length, the elements, then the tail (NIL when proper).
    pub const LIST: u8 = 6;
    /// Map: u32 size, then key, value pairs.
    pub const MAP: u8 = 7;
    /// Local pid: raw term word (u64).
    pub const PID: u8 = 8;
    /// Anything else (refs, funs, ports, remote pids, bignums, bitstrings):
    /// u32 length, external term format bytes.
    pub const EXTERNAL: u8 = 9;
    /// A term too large or too deep to keep: u64 encoded size, u32 hint
    /// length, hint bytes (UTF-8). Decodes to `{:truncated, size, hint}`.
    pub const TRUNCATED: u8 = 10;
}

const INLINE_CAP: usize = 22;

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

    /// A payload holding one local pid.
    pub fn pid(raw: u64) -> Self {
        let mut bytes = [0u8; 9];
        bytes[0] = tag::PID;
        bytes[1..].copy_from_slice(&raw.to_le_bytes());
        Self::from_bytes(&bytes)
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
        match self.as_bytes() {
            [tag::PID, rest @ ..] if rest.len() == 8 => {
                Some(u64::from_le_bytes(rest.try_into().ok()?))
            }
            _ => None,
        }
    }
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
    fn pid_payload_round_trips() {
        let p = Payload::pid(0xdead_beef);
        assert_eq!(p.as_pid(), Some(0xdead_beef));
        assert_eq!(Payload::from_bytes(&[tag::ATOM, 0, 0]).as_pid(), None);
    }
}
