//! Term layout: direct reads of term words on 64-bit ERTS, checked at load.
//!
//! Each `enif_*` accessor is a call through a function pointer (and a key
//! search for maps); on the ingest and tracer hot paths these calls cost
//! more than the work. On 64-bit ERTS the layout (stable since OTP 17) is:
//!
//! * the 2 low bits of a term are its primary tag: `01` a pointer to a list
//!   cell `[head, tail]`, `10` a pointer to a boxed term, `11` an immediate;
//! * a boxed term starts with a header word: a tuple's is `arity << 6`
//!   (low 6 bits 0) followed by its elements; a flatmap's (a map of at most
//!   32 keys) is `0x13C`, followed by its size, the tuple of its sorted keys
//!   and the values in key order;
//! * immediates: small integer `...1111` (value in the upper 60 bits), local
//!   pid `...0011`, atom `..00_1011`, `[]` exactly `0x3B`.
//!
//! Invariant: the direct readers are used only after [`check`] built terms
//! of every kind through the NIF API and found each direct read equal to the
//! API's answer; otherwise every function here falls back to the API. A
//! direct read follows a pointer only after its tag (and header) says what
//! it points to, and only for terms of a live environment, whose memory the
//! VM does not move during a NIF call.

use std::sync::atomic::{AtomicBool, Ordering};

use rustler::sys::{
    enif_get_list_cell, enif_get_list_length, enif_get_local_pid, enif_get_map_value,
    enif_get_tuple, ErlNifPid, ErlNifTerm,
};
use rustler::{Encoder, Env, Term};

use super::{map_from_words, word};
use crate::atoms;

static DIRECT: AtomicBool = AtomicBool::new(false);

#[inline]
fn direct() -> bool {
    DIRECT.load(Ordering::Relaxed)
}

/// Proof that direct reads are on: its readers skip the flag check, so a
/// hot loop checks the flag once ([`direct_reads`]).
#[derive(Clone, Copy)]
pub struct Direct(());

/// `Some` when [`check`] enabled direct reads.
#[inline(always)]
pub fn direct_reads() -> Option<Direct> {
    direct().then_some(Direct(()))
}

impl Direct {
    /// The immediate `t` is, by its tag bits; `None` for anything else.
    #[inline(always)]
    pub fn immediate(self, t: ErlNifTerm) -> Option<Immediate> {
        tag_bits(t)
    }

    /// `(head, tail)` of a list cell; `None` for `[]` and non-lists.
    #[inline(always)]
    pub fn list_cell(self, t: ErlNifTerm) -> Option<(ErlNifTerm, ErlNifTerm)> {
        let w = word(t);
        if w & 3 != LIST {
            return None;
        }
        // SAFETY: a list-tagged word of a live term points to its cell
        // (callers only pass terms of a live environment).
        let cell = (w - LIST) as *const ErlNifTerm;
        Some(unsafe { (*cell, *cell.add(1)) })
    }

    /// A tuple's elements; `None` if `t` is not a tuple.
    #[inline(always)]
    pub fn tuple<'a>(self, t: Term<'a>) -> Option<&'a [ErlNifTerm]> {
        let ptr = boxed(t.as_c_arg())?;
        // SAFETY: a boxed word of a live term points to its header; a tuple
        // header is followed by `arity` elements that live as long as `t`.
        let header = unsafe { *ptr };
        (header & 0x3F == 0).then(|| unsafe {
            std::slice::from_raw_parts(ptr.add(1) as *const ErlNifTerm, (header >> 6) as usize)
        })
    }
}

/// How terms are read: `:direct` when [`check`] enabled direct reads,
/// `:nif_api` otherwise (for the debug view).
#[rustler::nif]
fn term_reads() -> rustler::Atom {
    match direct() {
        true => atoms::direct(),
        false => atoms::nif_api(),
    }
}

/// An immediate recognized by its tag bits.
#[derive(Debug, PartialEq)]
pub enum Immediate {
    Small(i64),
    Atom,
    Nil,
    LocalPid,
}

/// The immediate `t` is, by its tag bits; `None` for anything else or when
/// direct reads are off.
#[inline]
pub fn immediate(t: ErlNifTerm) -> Option<Immediate> {
    direct_reads()?.immediate(t)
}

#[inline]
fn tag_bits(t: ErlNifTerm) -> Option<Immediate> {
    let w = word(t);
    if w & 0xF == 0xF {
        Some(Immediate::Small((w as i64) >> 4))
    } else if w & 0x3F == 0x0B {
        Some(Immediate::Atom)
    } else if w == 0x3B {
        Some(Immediate::Nil)
    } else if w & 0xF == 0x3 {
        Some(Immediate::LocalPid)
    } else {
        None
    }
}

const LIST: u64 = 1;
const BOXED: u64 = 2;
/// `_TAG_HEADER_MAP` (0x3C) with the flatmap subtag 0 and header arity 1.
const FLATMAP_HEADER: u64 = 0x13C;

/// The words a boxed term points to, `None` when `t` is not boxed.
#[inline]
fn boxed(t: ErlNifTerm) -> Option<*const u64> {
    let w = word(t);
    (w & 3 == BOXED).then_some((w - BOXED) as *const u64)
}

/// True if `t` is an atom.
#[inline]
pub fn is_atom(t: Term) -> bool {
    match direct() {
        true => tag_bits(t.as_c_arg()) == Some(Immediate::Atom),
        false => t.is_atom(),
    }
}

/// True if `t` is a pid of this node.
#[inline]
pub fn is_local_pid(t: Term) -> bool {
    if direct() {
        return tag_bits(t.as_c_arg()) == Some(Immediate::LocalPid);
    }
    // SAFETY: `t` is live; the out-pointer is a local.
    let mut pid: ErlNifPid = unsafe { std::mem::zeroed() };
    unsafe { enif_get_local_pid(t.get_env().as_c_arg(), t.as_c_arg(), &mut pid) != 0 }
}

/// A non-negative small integer.
#[inline]
pub fn small_usize(t: Term) -> Option<usize> {
    match direct() {
        true => match tag_bits(t.as_c_arg()) {
            Some(Immediate::Small(i)) => usize::try_from(i).ok(),
            _ => None,
        },
        false => t.decode::<usize>().ok(),
    }
}

/// `(head, tail)` of a list cell; `None` for `[]` and non-lists.
#[inline]
pub fn list_cell(env: Env, t: ErlNifTerm) -> Option<(ErlNifTerm, ErlNifTerm)> {
    if let Some(d) = direct_reads() {
        return d.list_cell(t);
    }
    let (mut head, mut tail) = (ErlNifTerm::default(), ErlNifTerm::default());
    // SAFETY: `t` is live; out-pointers are locals.
    (unsafe { enif_get_list_cell(env.as_c_arg(), t, &mut head, &mut tail) } != 0)
        .then_some((head, tail))
}

/// The length of a proper list; `None` otherwise.
pub fn list_length(t: Term) -> Option<usize> {
    if direct() {
        let (mut cell, mut len) = (t.as_c_arg(), 0);
        while let Some((_, tail)) = list_cell(t.get_env(), cell) {
            cell = tail;
            len += 1;
        }
        return (tag_bits(cell) == Some(Immediate::Nil)).then_some(len);
    }
    let mut len = 0;
    // SAFETY: `t` is live; `len` is a local.
    (unsafe { enif_get_list_length(t.get_env().as_c_arg(), t.as_c_arg(), &mut len) } != 0)
        .then_some(len as usize)
}

/// A tuple's elements, borrowed from the term heap; `None` if not a tuple.
#[inline]
pub fn tuple_slice<'a>(t: Term<'a>) -> Option<&'a [ErlNifTerm]> {
    if let Some(d) = direct_reads() {
        return d.tuple(t);
    }
    let mut arity = 0;
    let mut elems: *const ErlNifTerm = std::ptr::null();
    // SAFETY: `t` is live; out-pointers are locals; the VM gave `arity`
    // elements that live as long as the term's environment.
    (unsafe { enif_get_tuple(t.get_env().as_c_arg(), t.as_c_arg(), &mut arity, &mut elems) } != 0)
        .then(|| unsafe { std::slice::from_raw_parts(elems, arity as usize) })
}

/// The sorted keys and the values of a flatmap (a map of at most 32 keys);
/// `None` for other terms, larger maps, or when direct reads are off.
#[inline]
pub fn flatmap<'a>(t: Term<'a>) -> Option<(&'a [ErlNifTerm], &'a [ErlNifTerm])> {
    if !direct() {
        return None;
    }
    let ptr = boxed(t.as_c_arg())?;
    // SAFETY: a boxed word of a live term points to its header; a flatmap
    // header is followed by its size, its keys tuple and `size` values.
    unsafe {
        if *ptr != FLATMAP_HEADER {
            return None;
        }
        let size = *ptr.add(1) as usize;
        let keys = tuple_slice(Term::new(t.get_env(), *(ptr.add(2) as *const ErlNifTerm)))?;
        let values = std::slice::from_raw_parts(ptr.add(3) as *const ErlNifTerm, size);
        (keys.len() == size).then_some((keys, values))
    }
}

/// The value of `key` in map `t`; `None` when absent or not a map.
#[inline]
pub fn map_get<'a>(t: Term<'a>, key: rustler::Atom) -> Option<Term<'a>> {
    let key = key.as_c_arg();
    if let Some((keys, values)) = flatmap(t) {
        let i = keys.iter().position(|&k| k == key)?;
        // SAFETY: a value of the live map `t`.
        return Some(unsafe { Term::new(t.get_env(), values[i]) });
    }
    let mut v = ErlNifTerm::default();
    // SAFETY: `t` is live; a non-map simply fails the lookup.
    (unsafe { enif_get_map_value(t.get_env().as_c_arg(), t.as_c_arg(), key, &mut v) } != 0)
        .then(|| unsafe { Term::new(t.get_env(), v) })
}

/// Compares every direct read with the NIF API on terms built by the VM
/// (and `pid`, a local pid given at load), and enables direct reads only if
/// all agree. Call once at load.
pub fn check(env: Env, pid: Term) -> bool {
    let ok = immediates_agree(env, pid) && containers_agree(env);
    DIRECT.store(ok, Ordering::Relaxed);
    ok
}

fn immediates_agree(env: Env, pid: Term) -> bool {
    let smalls = [0i64, 1, -1, 42, -(1 << 40), (1 << 59) - 1, -(1 << 59)];
    // SAFETY: the out-pointer is a local.
    let mut p: ErlNifPid = unsafe { std::mem::zeroed() };
    let local = unsafe { enif_get_local_pid(env.as_c_arg(), pid.as_c_arg(), &mut p) } != 0;
    local
        && tag_bits(pid.as_c_arg()) == Some(Immediate::LocalPid)
        && smalls
            .iter()
            .all(|&i| tag_bits(i.encode(env).as_c_arg()) == Some(Immediate::Small(i)))
        && [atoms::ok(), atoms::nil(), atoms::error()]
            .iter()
            .all(|a| tag_bits(a.as_c_arg()) == Some(Immediate::Atom))
        && tag_bits(Term::list_new_empty(env).as_c_arg()) == Some(Immediate::Nil)
        && [
            (1i64 << 60).encode(env),
            (1.5f64).encode(env),
            "binary".encode(env),
            (1, 2).encode(env),
            vec![1].encode(env),
        ]
        .iter()
        .all(|t| tag_bits(t.as_c_arg()).is_none())
}

fn containers_agree(env: Env) -> bool {
    DIRECT.store(true, Ordering::Relaxed);
    let ok = lists_and_tuples_agree(env) && maps_agree(env);
    DIRECT.store(false, Ordering::Relaxed);
    ok
}

fn lists_and_tuples_agree(env: Env) -> bool {
    let list = vec![1i64, 2, 3].encode(env);
    let mut api = Vec::new();
    let mut cell = list.as_c_arg();
    let (mut head, mut tail) = (ErlNifTerm::default(), ErlNifTerm::default());
    // SAFETY: live terms; out-pointers are locals.
    while unsafe { enif_get_list_cell(env.as_c_arg(), cell, &mut head, &mut tail) } != 0 {
        api.push((head, tail));
        cell = tail;
    }
    let mut direct = Vec::new();
    let mut cell = list.as_c_arg();
    while let Some((head, tail)) = list_cell(env, cell) {
        direct.push((head, tail));
        cell = tail;
    }
    let tuple = (7i64, atoms::ok(), "x").encode(env);
    let elems: Vec<ErlNifTerm> = tuple
        .decode::<(Term, Term, Term)>()
        .map_or(Vec::new(), |t| {
            vec![t.0.as_c_arg(), t.1.as_c_arg(), t.2.as_c_arg()]
        });
    api.len() == 3
        && api == direct
        && list_length(list) == Some(3)
        && list_length((1, 2).encode(env)).is_none()
        && tuple_slice(tuple) == Some(&elems[..])
        && tuple_slice(list).is_none()
        && tuple_slice(rustler::types::tuple::make_tuple(env, &[])) == Some(&[][..])
}

fn maps_agree(env: Env) -> bool {
    // Keys given unsorted: the VM sorts them.
    let keys = [atoms::pid(), atoms::data(), atoms::arity(), atoms::r#type()];
    let values: Vec<Term> = (10i64..14).map(|i| i.encode(env)).collect();
    let raw_keys: Vec<ErlNifTerm> = keys.iter().map(|k| k.as_c_arg()).collect();
    let raw_values: Vec<ErlNifTerm> = values.iter().map(|v| v.as_c_arg()).collect();
    // SAFETY: equal-length arrays of atoms and small integers.
    let Some(map) = (unsafe { map_from_words(env, &raw_keys, &raw_values) }) else {
        return false;
    };
    flatmap(map).is_some_and(|(k, _)| k.len() == keys.len())
        && keys.iter().zip(&values).all(|(&k, v)| {
            let mut api = ErlNifTerm::default();
            // SAFETY: live terms; the out-pointer is a local.
            let found = unsafe {
                enif_get_map_value(env.as_c_arg(), map.as_c_arg(), k.as_c_arg(), &mut api)
            } != 0;
            found && api == v.as_c_arg() && map_get(map, k).map(|t| t.as_c_arg()) == Some(api)
        })
        && flatmap(vec![1].encode(env)).is_none()
        && flatmap((1, 2).encode(env)).is_none()
}
