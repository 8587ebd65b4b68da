//! Term codec: Erlang term <-> the compact payload format of
//! `elixir_scope_core::payload::tag`.
//!
//! Encoding walks the term iteratively (an explicit stack, so a deep term
//! cannot overflow a scheduler's stack) in pre-order. Atoms and local pids
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
    enif_make_int64, enif_make_list_cell, enif_make_map_from_arrays, enif_make_new_binary,
    enif_make_tuple_from_array, enif_term_type, ErlNifBinary, ErlNifPid, ErlNifTerm,
    ErlNifTermType,
};
use rustler::{Encoder, Env, Term};

use elixir_scope_core::payload::{tag, varint};

use super::layout::{immediate, list_cell, tuple_slice, Immediate};
use super::{from_word, word};
use crate::atoms;

/// The length of the list an encoding starts with, read from its header:
/// `Some(0)` for `[]`, `None` when it is not a list or was truncated.
pub fn encoded_list_length(bytes: &[u8]) -> Option<usize> {
    match *bytes.first()? {
        tag::NIL => Some(0),
        tag::LIST => {
            let mut pos = 1;
            varint::decode(bytes, &mut pos).map(|n| n as usize)
        }
        _ => None,
    }
}

/// Deepest nesting kept; deeper terms are truncated.
pub const MAX_DEPTH: u32 = 256;
/// Most terms visited for one payload (bounds the time spent on huge terms).
pub const MAX_NODES: usize = 1_000_000;

struct Sink<'o> {
    out: &'o mut Vec<u8>,
    limit: usize,
    size: usize,
}

impl Sink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.size += bytes.len();
        if self.size <= self.limit {
            self.out.extend_from_slice(bytes);
        }
    }

    /// A tag and a varint, the shape of every non-float node.
    fn put_tag(&mut self, t: u8, v: u64) {
        let start = self.out.len();
        self.out.push(t);
        varint::push(self.out, v);
        let n = self.out.len() - start;
        self.size += n;
        if self.size > self.limit {
            self.out.truncate(start);
        }
    }

    fn overflowed(&self) -> bool {
        self.size > self.limit
    }
}

/// Scratch buffers reused across encodes (no allocation per event).
#[derive(Default)]
pub struct Scratch {
    stack: Vec<(ErlNifTerm, u32)>,
    list: Vec<ErlNifTerm>,
}

impl Scratch {
    pub fn heap_bytes(&self) -> usize {
        self.stack.capacity() * std::mem::size_of::<(ErlNifTerm, u32)>()
            + self.list.capacity() * std::mem::size_of::<ErlNifTerm>()
    }
}

/// Appends the encoding of `term` to `out`, at most `limit` bytes of it.
pub fn encode(term: Term, limit: usize, out: &mut Vec<u8>, scratch: &mut Scratch) {
    let env = term.get_env();
    let raw_env = env.as_c_arg();
    let start = out.len();
    let mut sink = Sink {
        out,
        limit: limit.max(1),
        size: 0,
    };
    let Scratch {
        stack,
        list: scratch,
    } = scratch;
    stack.clear();
    stack.push((term.as_c_arg(), 0));
    let mut nodes = 0usize;
    let mut cut: Option<&str> = None;
    while let Some((t, depth)) = stack.pop() {
        nodes += 1;
        match immediate(t) {
            Some(Immediate::Small(i)) => {
                sink.put_tag(tag::INT, varint::zigzag(i));
                continue;
            }
            Some(Immediate::Atom) => {
                sink.put_tag(tag::ATOM, word(t));
                continue;
            }
            Some(Immediate::Nil) => {
                sink.put(&[tag::NIL]);
                continue;
            }
            Some(Immediate::LocalPid) => {
                sink.put_tag(tag::PID, word(t));
                continue;
            }
            None => {}
        }
        if nodes > MAX_NODES {
            cut = Some(", size counted up to 1000000 terms");
            break;
        }
        if depth > MAX_DEPTH {
            cut = Some(", nested deeper than 256 levels");
            break;
        }
        // SAFETY (all calls below): `t` is a live term of `env`, and every
        // out-pointer is a local of the right type.
        unsafe {
            match enif_term_type(raw_env, t) {
                ErlNifTermType::ERL_NIF_TERM_TYPE_ATOM => sink.put_tag(tag::ATOM, word(t)),
                ErlNifTermType::ERL_NIF_TERM_TYPE_INTEGER => {
                    let mut i = 0i64;
                    if enif_get_int64(raw_env, t, &mut i) != 0 {
                        sink.put_tag(tag::INT, varint::zigzag(i));
                    } else {
                        put_external(&mut sink, env, t);
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
                        put_external(&mut sink, env, t);
                    }
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_TUPLE => {
                    let elems = tuple_slice(Term::new(env, t)).unwrap_or_default();
                    sink.put_tag(tag::TUPLE, elems.len() as u64);
                    stack.extend(elems.iter().rev().map(|&e| (e, depth + 1)));
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_LIST => {
                    scratch.clear();
                    let mut cell = t;
                    while let Some((head, tail)) = list_cell(env, cell) {
                        scratch.push(head);
                        cell = tail;
                        if scratch.len() > MAX_NODES {
                            break;
                        }
                    }
                    if scratch.is_empty() {
                        sink.put(&[tag::NIL]);
                    } else {
                        sink.put_tag(tag::LIST, scratch.len() as u64);
                        stack.push((cell, depth + 1));
                        stack.extend(scratch.iter().rev().map(|&e| (e, depth + 1)));
                    }
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_MAP => {
                    let map = Term::new(env, t);
                    let size = map.map_size().unwrap_or(0);
                    sink.put_tag(tag::MAP, size as u64);
                    let pairs: Vec<(Term, Term)> = rustler::MapIterator::new(map)
                        .map(|it| it.collect())
                        .unwrap_or_default();
                    for (k, v) in pairs.into_iter().rev() {
                        stack.push((v.as_c_arg(), depth + 1));
                        stack.push((k.as_c_arg(), depth + 1));
                    }
                }
                ErlNifTermType::ERL_NIF_TERM_TYPE_PID => {
                    let mut pid: ErlNifPid = std::mem::zeroed();
                    if enif_get_local_pid(raw_env, t, &mut pid) != 0 {
                        sink.put_tag(tag::PID, word(t));
                    } else {
                        put_external(&mut sink, env, t);
                    }
                }
                _ => put_external(&mut sink, env, t),
            }
        }
        if sink.overflowed() && nodes > MAX_NODES / 4 && cut.is_none() {
            // Already truncated: counting the exact size of a huge term is
            // not worth more scheduler time.
            cut = Some(", size counted up to 250000 terms");
            break;
        }
    }
    if sink.overflowed() || cut.is_some() {
        let size = sink.size as u64;
        sink.out.truncate(start);
        let hint = format!("{}{}", describe(term), cut.unwrap_or(""));
        put_truncated(sink.out, size, &hint);
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
                    let mut map = ErlNifTerm::default();
                    enif_make_map_from_arrays(e, keys.as_ptr(), values.as_ptr(), n, &mut map);
                    Term::new(env, map)
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
