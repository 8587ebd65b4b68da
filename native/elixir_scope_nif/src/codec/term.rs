//! Term codec: Erlang term <-> the compact payload format of
//! `elixir_scope_core::payload::tag`.
//!
//! Encoding writes into the event's payload in place: inline up to 22
//! bytes, spilling to the heap past that. Flat terms (an immediate, or a
//! short tuple or list of immediates: most arguments and messages) take
//! one pass with no buffer ([`encode_flat_into`]); any other term is
//! walked iteratively (an explicit stack, so a deep term cannot overflow a
//! scheduler's stack) in pre-order, writing runs of immediates as it meets
//! them ([`encode_into`]). Both give the same bytes. Atoms and local pids
//! are copied as raw term words: on ERTS both are immediates that stay valid
//! in any environment for the life of the VM (atoms are never collected), so
//! they need no lookup on either side. Types without a native tag (refs,
//! funs, ports, remote pids, bignums, bitstrings) fall back to the external
//! term format.
//!
//! Bounds: once the encoding passes `limit` bytes, bytes stop being written
//! and only counted; the payload becomes `{:truncated, size, hint}`. Terms
//! deeper than [`MAX_DEPTH`] or larger than [`MAX_NODES`] terms are truncated
//! too (their size is then a lower bound). Decoding recurses, which is safe
//! because encoded payloads are never deeper than `MAX_DEPTH`.

use rustler::sys::{
    enif_get_double, enif_get_int64, enif_get_local_pid, enif_inspect_binary, enif_make_double,
    enif_make_int64, enif_make_list_cell, enif_make_new_binary, enif_make_tuple_from_array,
    enif_term_type, ErlNifBinary, ErlNifPid, ErlNifTerm, ErlNifTermType,
};
use rustler::{Encoder, Env, Term};

use elixir_scope_core::payload::{tag, varint, Payload, INLINE_CAP};

use super::layout::{self, flatmap, immediate, list_cell, tuple_slice, Direct, Immediate};
use super::{from_word, map_from_words, word};
use crate::atoms;

/// Deepest nesting kept; deeper terms are truncated.
pub const MAX_DEPTH: u32 = 256;
/// Most terms visited for one payload (bounds the time spent on huge terms).
pub const MAX_NODES: usize = 1_000_000;

/// Where encoded bytes go: a payload-sized array while they fit, then
/// `spill`. Past `limit` bytes nothing is written, only counted.
struct Sink<'o> {
    small: &'o mut [u8; INLINE_CAP],
    len: usize,
    spilled: bool,
    spill: &'o mut Vec<u8>,
    limit: usize,
    size: usize,
}

impl Sink<'_> {
    /// Appends bytes already counted within the limit.
    #[inline]
    fn append(&mut self, bytes: &[u8]) {
        if !self.spilled && self.len + bytes.len() <= INLINE_CAP {
            self.small[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
            return;
        }
        if !self.spilled {
            self.spill.clear();
            self.spill.extend_from_slice(&self.small[..self.len]);
            self.spilled = true;
        }
        self.spill.extend_from_slice(bytes);
    }

    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.size += bytes.len();
        if self.size <= self.limit {
            self.append(bytes);
        }
    }

    /// A tag and a varint, the shape of every non-float node.
    #[inline(always)]
    fn put_tag(&mut self, t: u8, v: u64) {
        let n = tag_len(v);
        self.size += n;
        if self.size > self.limit {
            return;
        }
        if !self.spilled && self.len + n <= INLINE_CAP {
            // The common case: straight into the inline buffer.
            write_tag(&mut self.small[self.len..self.len + n], t, v);
            self.len += n;
            return;
        }
        let mut bytes = [0; 1 + varint::MAX_LEN];
        write_tag(&mut bytes[..n], t, v);
        self.append(&bytes[..n]);
    }

    fn overflowed(&self) -> bool {
        self.size > self.limit
    }
}

/// Deferred work of the encoding walk.
#[derive(Clone, Copy)]
enum Node {
    /// A term, at a nesting depth.
    Term(ErlNifTerm, u32),
    /// Tuple elements still to encode: a slice of a live term (pointer
    /// and length), and their depth.
    Elems(*const ErlNifTerm, usize, u32),
    /// The rest of a list whose length is already written: more cells,
    /// then the tail (`[]`, or an improper tail).
    ListRest(ErlNifTerm, u32),
}

/// The walk's stack, reused across encodes (no allocation per event).
#[derive(Default)]
pub struct Scratch {
    stack: Vec<Node>,
}

impl Scratch {
    pub fn heap_bytes(&self) -> usize {
        self.stack.capacity() * std::mem::size_of::<Node>()
    }
}

/// Immediates are written inline while walking a tuple or a list, up to
/// this many nodes; past it every node goes through the bound checks.
const INLINE_RUN_NODES: usize = MAX_NODES / 4;

/// Encodes `term` into `out`, in place when it fits inline: at most
/// `limit` bytes of it (`{:truncated, size, hint}` past that). `spill`
/// holds encodings too large to be inline on their way to the heap.
///
/// The walk writes runs of immediates (the common leaves) as it meets
/// them, and defers only the rest of a container when it descends into a
/// compound element.
pub fn encode_into(
    term: Term,
    limit: usize,
    spill: &mut Vec<u8>,
    scratch: &mut Scratch,
    out: &mut Payload,
) {
    let env = term.get_env();
    let (out_len, small) = out.inline_parts();
    let mut sink = Sink {
        small,
        len: 0,
        spilled: false,
        spill,
        limit: limit.max(1),
        size: 0,
    };
    let stack = &mut scratch.stack;
    stack.clear();
    let mut nodes = 0usize;
    let mut cut: Option<&str> = None;
    let mut next = Some((term.as_c_arg(), 0));
    loop {
        let (t, depth) = match next.take() {
            Some(n) => n,
            None => match stack.pop() {
                None => break,
                Some(Node::Term(t, depth)) => (t, depth),
                Some(Node::Elems(ptr, len, depth)) => {
                    // SAFETY: a slice of a live term of `env`, pushed below.
                    let elems = unsafe { std::slice::from_raw_parts(ptr, len) };
                    let done = put_immediates(&mut sink, &mut nodes, elems);
                    if let Some((&first, rest)) = elems[done..].split_first() {
                        if !rest.is_empty() {
                            stack.push(Node::Elems(rest.as_ptr(), rest.len(), depth));
                        }
                        next = Some((first, depth));
                    }
                    continue;
                }
                Some(Node::ListRest(mut cell, depth)) => {
                    while let Some((head, tail)) = list_cell(env, cell) {
                        cell = tail;
                        if put_immediates(&mut sink, &mut nodes, &[head]) == 0 {
                            stack.push(Node::ListRest(tail, depth));
                            next = Some((head, depth));
                            break;
                        }
                    }
                    if next.is_none() {
                        next = Some((cell, depth)); // the tail
                    }
                    continue;
                }
            },
        };
        nodes += 1;
        let leaf = put_immediate(&mut sink, t);
        if nodes > MAX_NODES {
            cut = Some(", size counted up to 1000000 terms");
            break;
        }
        if sink.overflowed() && nodes > MAX_NODES / 4 {
            // Already truncated: counting the exact size of a huge term is
            // not worth more scheduler time.
            cut = Some(", size counted up to 250000 terms");
            break;
        }
        if leaf {
            continue;
        }
        if depth > MAX_DEPTH {
            cut = Some(", nested deeper than 256 levels");
            break;
        }
        // SAFETY: `t` is a live term of `env`.
        if let Some(elems) = tuple_slice(unsafe { Term::new(env, t) }) {
            sink.put_tag(tag::TUPLE, elems.len() as u64);
            if !elems.is_empty() {
                stack.push(Node::Elems(elems.as_ptr(), elems.len(), depth + 1));
            }
        } else if let Some(len) = list_cell(env, t).map(|_| count_cells(env, t)) {
            sink.put_tag(tag::LIST, len as u64);
            stack.push(Node::ListRest(t, depth + 1));
        } else {
            // SAFETY (all calls below): `t` is a live term of `env`, and
            // every out-pointer is a local of the right type.
            unsafe { put_other(&mut sink, stack, env, t, depth) };
        }
    }
    if sink.overflowed() || cut.is_some() {
        let size = sink.size as u64;
        let hint = format!("{}{}", describe(term), cut.unwrap_or(""));
        let bytes = sink.spill;
        bytes.clear();
        put_truncated(bytes, size, &hint);
        *out = Payload::from_bytes(bytes);
    } else if sink.spilled {
        *out = Payload::from_bytes(sink.spill);
    } else {
        *out_len = sink.len as u8;
    }
}

/// Bytes of a tag and the varint of `v`.
#[inline(always)]
fn tag_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    1 + bits.div_ceil(7)
}

/// Writes a tag and the varint of `v` into `out`, exactly `tag_len(v)`
/// bytes long.
#[inline(always)]
fn write_tag(out: &mut [u8], t: u8, mut v: u64) {
    let (last, body) = out.split_last_mut().expect("tag_len(v) bytes");
    body[0] = t;
    for b in &mut body[1..] {
        *b = (v as u8) | 0x80;
        v >>= 7;
    }
    *last = v as u8;
}

/// Encodes `term` into `out` in one pass, with no buffer, when it is flat
/// (see [`encode_flat`]) and fits inline within `limit`; false (and `out`
/// unspecified) otherwise: then use [`encode_into`]. Either gives the same
/// bytes.
#[inline(always)]
pub fn encode_flat_into(term: Term, limit: usize, out: &mut Payload) -> bool {
    let Some(d) = layout::direct_reads().filter(|_| limit >= INLINE_CAP) else {
        return false;
    };
    let (out_len, small) = out.inline_parts();
    match encode_flat(d, term, small) {
        Some(n) => {
            *out_len = n as u8;
            true
        }
        None => false,
    }
}

/// Longest list or tuple [`encode_flat`] takes (its length varint is then
/// one byte).
const FLAT_MAX: usize = 64;

/// Encodes a flat term — an immediate, or a tuple or list (tail included)
/// of at most [`FLAT_MAX`] immediates, the shape of most argument lists and
/// messages — into `buf` in one pass; its length, or `None` (and `buf`
/// holds garbage) for any other term or when it does not fit.
#[inline(always)]
fn encode_flat(d: Direct, term: Term, buf: &mut [u8; INLINE_CAP]) -> Option<usize> {
    let mut w = FlatWriter { d, buf, len: 0 };
    let t = term.as_c_arg();
    if w.leaf(t).is_some() {
        return Some(w.len);
    }
    if let Some(elems) = d.tuple(term) {
        if elems.len() > FLAT_MAX {
            return None;
        }
        w.put(tag::TUPLE, elems.len() as u64)?;
        elems.iter().try_for_each(|&e| w.leaf(e))?;
        return Some(w.len);
    }
    // A list: its length is patched in once known (one byte: <= FLAT_MAX).
    d.list_cell(t)?;
    w.put(tag::LIST, 0)?;
    let count_at = w.len - 1;
    let (mut n, mut cell) = (0, t);
    while let Some((head, tail)) = d.list_cell(cell) {
        if n == FLAT_MAX {
            return None;
        }
        w.leaf(head)?;
        n += 1;
        cell = tail;
    }
    w.leaf(cell)?;
    w.buf[count_at] = n as u8;
    Some(w.len)
}

/// [`encode_flat`]'s output: bytes go straight into the inline buffer.
struct FlatWriter<'b> {
    d: Direct,
    buf: &'b mut [u8; INLINE_CAP],
    len: usize,
}

impl FlatWriter<'_> {
    #[inline(always)]
    fn put(&mut self, t: u8, v: u64) -> Option<()> {
        let n = tag_len(v);
        write_tag(self.buf.get_mut(self.len..self.len + n)?, t, v);
        self.len += n;
        Some(())
    }

    /// Writes `t` if it is an immediate and fits.
    #[inline(always)]
    fn leaf(&mut self, t: ErlNifTerm) -> Option<()> {
        match immediate_encoding(t, self.d.immediate(t)?) {
            (tag, Some(v)) => self.put(tag, v),
            (tag, None) => {
                *self.buf.get_mut(self.len)? = tag;
                self.len += 1;
                Some(())
            }
        }
    }
}

/// Writes `t` if it is an immediate (recognized by its tag bits); false
/// otherwise.
#[inline(always)]
fn put_immediate(sink: &mut Sink, t: ErlNifTerm) -> bool {
    let Some(i) = immediate(t) else {
        return false;
    };
    match immediate_encoding(t, i) {
        (tag, Some(v)) => sink.put_tag(tag, v),
        (tag, None) => sink.put(&[tag]),
    }
    true
}

/// How immediate `t` (of kind `i`) is encoded: its tag, and the varint
/// after it (none for `[]`). Both encoders write immediates this way.
#[inline(always)]
fn immediate_encoding(t: ErlNifTerm, i: Immediate) -> (u8, Option<u64>) {
    match i {
        Immediate::Small(i) => (tag::INT, Some(varint::zigzag(i))),
        Immediate::Atom => (tag::ATOM, Some(word(t))),
        Immediate::Nil => (tag::NIL, None),
        Immediate::LocalPid => (tag::PID, Some(word(t))),
    }
}

/// Writes the leading immediates of `terms` (while the walk is within
/// [`INLINE_RUN_NODES`]); returns how many it wrote.
#[inline]
fn put_immediates(sink: &mut Sink, nodes: &mut usize, terms: &[ErlNifTerm]) -> usize {
    let mut done = 0;
    while done < terms.len() && *nodes < INLINE_RUN_NODES && put_immediate(sink, terms[done]) {
        *nodes += 1;
        done += 1;
    }
    done
}

/// The number of cells of a list (proper or not), counting at most
/// `MAX_NODES + 1`: a longer list is cut by the node bound anyway.
fn count_cells(env: Env, mut cell: ErlNifTerm) -> usize {
    let mut n = 0;
    while let Some((_, tail)) = list_cell(env, cell) {
        n += 1;
        cell = tail;
        if n > MAX_NODES {
            break;
        }
    }
    n
}

/// Encodes a term that is not an immediate, tuple or list.
///
/// # Safety
/// `t` must be a live term of `env`.
unsafe fn put_other(sink: &mut Sink, stack: &mut Vec<Node>, env: Env, t: ErlNifTerm, depth: u32) {
    let raw_env = env.as_c_arg();
    match enif_term_type(raw_env, t) {
        ErlNifTermType::ERL_NIF_TERM_TYPE_ATOM => sink.put_tag(tag::ATOM, word(t)),
        ErlNifTermType::ERL_NIF_TERM_TYPE_INTEGER => {
            let mut i = 0i64;
            if enif_get_int64(raw_env, t, &mut i) != 0 {
                sink.put_tag(tag::INT, varint::zigzag(i));
            } else {
                put_external(sink, env, t);
            }
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_FLOAT => {
            let mut d = 0f64;
            enif_get_double(raw_env, t, &mut d);
            let mut b = [tag::FLOAT; 9];
            b[1..].copy_from_slice(&d.to_bits().to_le_bytes());
            sink.put(&b);
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_BITSTRING => {
            let mut bin: ErlNifBinary = std::mem::zeroed();
            if enif_inspect_binary(raw_env, t, &mut bin) != 0 {
                sink.put_tag(tag::BINARY, bin.size as u64);
                if sink.size + bin.size <= sink.limit {
                    sink.put(std::slice::from_raw_parts(bin.data, bin.size));
                } else {
                    sink.size += bin.size;
                }
            } else {
                put_external(sink, env, t);
            }
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_MAP => {
            let map = Term::new(env, t);
            let size = map.map_size().unwrap_or(0);
            sink.put_tag(tag::MAP, size as u64);
            if let Some((keys, values)) = flatmap(map) {
                for (&k, &v) in keys.iter().zip(values).rev() {
                    stack.push(Node::Term(v, depth + 1));
                    stack.push(Node::Term(k, depth + 1));
                }
            } else {
                let pairs: Vec<(Term, Term)> = rustler::MapIterator::new(map)
                    .map(|it| it.collect())
                    .unwrap_or_default();
                for (k, v) in pairs.into_iter().rev() {
                    stack.push(Node::Term(v.as_c_arg(), depth + 1));
                    stack.push(Node::Term(k.as_c_arg(), depth + 1));
                }
            }
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_PID => {
            let mut pid: ErlNifPid = std::mem::zeroed();
            if enif_get_local_pid(raw_env, t, &mut pid) != 0 {
                sink.put_tag(tag::PID, word(t));
            } else {
                put_external(sink, env, t);
            }
        }
        _ => put_external(sink, env, t),
    }
}

/// Appends a map from atoms to already encoded values (used to build a
/// `%{old: ..., new: ...}` from two payloads without their terms).
pub fn encode_atom_map(pairs: &[(rustler::Atom, &[u8])], out: &mut Vec<u8>) {
    out.push(tag::MAP);
    varint::push(out, pairs.len() as u64);
    for (key, value) in pairs {
        out.push(tag::ATOM);
        varint::push(out, word(key.as_c_arg()));
        out.extend_from_slice(value);
    }
}

fn put_external(sink: &mut Sink, env: Env, t: ErlNifTerm) {
    // SAFETY: `t` is a live term of `env`.
    let bin = unsafe { Term::new(env, t) }.to_binary();
    sink.put_tag(tag::EXTERNAL, bin.len() as u64);
    sink.put(&bin);
}

fn put_truncated(out: &mut Vec<u8>, size: u64, hint: &str) {
    out.push(tag::TRUNCATED);
    varint::push(out, size);
    varint::push(out, hint.len() as u64);
    out.extend_from_slice(hint.as_bytes());
}

/// A short description of a term's shape, for truncation hints.
fn describe(term: Term) -> String {
    use rustler::TermType;
    match term.get_type() {
        TermType::Binary => format!(
            "binary of {} bytes",
            term.decode_as_binary().map_or(0, |b| b.len())
        ),
        TermType::List => "list".to_string(),
        TermType::Map => format!("map of {} keys", term.map_size().unwrap_or(0)),
        TermType::Tuple => format!(
            "tuple of {} elements",
            rustler::types::tuple::get_tuple(term).map_or(0, |t| t.len())
        ),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Decodes a payload; empty bytes decode to `nil`.
pub fn decode<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    if bytes.is_empty() {
        return atoms::nil().encode(env);
    }
    let mut r = Reader { bytes, pos: 0 };
    r.term(env)
}

struct Reader<'b> {
    bytes: &'b [u8],
    pos: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> &'b [u8] {
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        s
    }

    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }

    fn varint(&mut self) -> u64 {
        varint::decode(self.bytes, &mut self.pos).expect("payloads come from our encoder")
    }

    fn len(&mut self) -> usize {
        self.varint() as usize
    }

    fn term<'a>(&mut self, env: Env<'a>) -> Term<'a> {
        let e = env.as_c_arg();
        // SAFETY: raw words come from our encoder (atoms / local pids, which
        // are environment-independent immediates); arrays passed to the
        // enif_make_* calls hold `n` live terms of `env`.
        unsafe {
            match self.u8() {
                tag::NIL => Term::list_new_empty(env),
                tag::ATOM | tag::PID => Term::new(env, from_word(self.varint())),
                tag::INT => Term::new(env, enif_make_int64(e, varint::unzigzag(self.varint()))),
                tag::FLOAT => {
                    let bits = u64::from_le_bytes(self.take(8).try_into().expect("8 bytes"));
                    Term::new(env, enif_make_double(e, f64::from_bits(bits)))
                }
                tag::BINARY => {
                    let n = self.len();
                    let src = self.take(n);
                    let mut out = ErlNifTerm::default();
                    let dst = enif_make_new_binary(e, n, &mut out);
                    std::ptr::copy_nonoverlapping(src.as_ptr(), dst, n);
                    Term::new(env, out)
                }
                tag::TUPLE => {
                    let n = self.len();
                    let elems: Vec<ErlNifTerm> =
                        (0..n).map(|_| self.term(env).as_c_arg()).collect();
                    Term::new(env, enif_make_tuple_from_array(e, elems.as_ptr(), n as u32))
                }
                tag::LIST => {
                    let n = self.len();
                    let elems: Vec<ErlNifTerm> =
                        (0..n).map(|_| self.term(env).as_c_arg()).collect();
                    let mut list = self.term(env).as_c_arg();
                    for &h in elems.iter().rev() {
                        list = enif_make_list_cell(e, h, list);
                    }
                    Term::new(env, list)
                }
                tag::MAP => {
                    let n = self.len();
                    let mut keys = Vec::with_capacity(n);
                    let mut values = Vec::with_capacity(n);
                    for _ in 0..n {
                        keys.push(self.term(env).as_c_arg());
                        values.push(self.term(env).as_c_arg());
                    }
                    // Keys come from one encoded map: distinct.
                    map_from_words(env, &keys, &values)
                        .unwrap_or_else(|| atoms::undefined().encode(env))
                }
                tag::EXTERNAL => {
                    let n = self.len();
                    let bytes = self.take(n);
                    env.binary_to_term(bytes)
                        .map(|(t, _)| t)
                        .unwrap_or_else(|| atoms::undefined().encode(env))
                }
                tag::TRUNCATED => {
                    let size = self.varint();
                    let n = self.len();
                    let hint = std::str::from_utf8(self.take(n)).unwrap_or("");
                    (atoms::truncated(), size, hint).encode(env)
                }
                other => (atoms::undecodable(), other).encode(env),
            }
        }
    }
}
