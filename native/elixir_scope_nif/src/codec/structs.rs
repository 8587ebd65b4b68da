//! Struct terms that share one key tuple per NIF call.
//!
//! `enif_make_map_from_arrays` gives every map a key tuple of its own and
//! sorts its keys: for a list of a million `%CorrelatedEvent{}`s that is
//! most of the words allocated and a good share of the time. A flatmap's
//! key tuple can be shared (maps built by Elixir's `%{s | k: v}` do), and
//! `enif_make_map_update` of a flatmap copies its header and values but
//! keeps its key tuple. So a [`Template`] is a map of the struct's keys to a
//! placeholder, built once per call; each struct is one update of the
//! template (a new map, as its first value differs from the placeholder)
//! whose other values are then written into the new map's value words, in
//! key order, before any other code sees it.
//!
//! Invariant: the in-place writes are used only after [`check`] built a
//! struct both ways and read back every value through the NIF API; each
//! build also checks that the update shared the template's key tuple, and
//! falls back to `enif_make_map_from_arrays` otherwise. The layout is the
//! flatmap's of [`super::layout`]: header, size, key tuple, values.

use std::sync::atomic::{AtomicBool, Ordering};

use rustler::sys::{enif_get_map_value, enif_make_map_update, ErlNifTerm};
use rustler::{Atom, Encoder, Env, Term};

use super::layout::{direct_reads, flatmap};
use super::{map_from_words, word};
use crate::atoms;

static WRITES: AtomicBool = AtomicBool::new(false);

/// A struct's keys (in the order callers give values) and its template.
pub struct Template<'a, const N: usize> {
    env: Env<'a>,
    keys: [ErlNifTerm; N],
    /// The template map, its key tuple word, and each key's value index
    /// in key order; `None` when in-place writes are off.
    direct: Option<(ErlNifTerm, u64, [usize; N])>,
}

impl<'a, const N: usize> Template<'a, N> {
    pub fn new(env: Env<'a>, keys: [Atom; N]) -> Self {
        let keys = keys.map(|k| k.as_c_arg());
        let direct = WRITES
            .load(Ordering::Relaxed)
            .then(|| Self::template(env, &keys))
            .flatten();
        Template { env, keys, direct }
    }

    fn template(env: Env<'a>, keys: &[ErlNifTerm; N]) -> Option<(ErlNifTerm, u64, [usize; N])> {
        let placeholder = [atoms::elixir_scope_template().as_c_arg(); N];
        // SAFETY: atoms only.
        let map = unsafe { map_from_words(env, keys, &placeholder) }?;
        let (sorted, _) = flatmap(map)?;
        let mut slots = [0; N];
        for (slot, key) in slots.iter_mut().zip(keys) {
            *slot = sorted.iter().position(|k| k == key)?;
        }
        // SAFETY: a flatmap: header, size, then its key tuple word.
        let keys_word = unsafe { *map_words(map.as_c_arg()).add(2) };
        Some((map.as_c_arg(), keys_word, slots))
    }

    /// The struct with `values` (in the order of the keys given to `new`;
    /// `values[0]` must differ from the placeholder, as a struct's module does).
    pub fn build(&self, values: [ErlNifTerm; N]) -> Term<'a> {
        if let Some((template, keys_word, slots)) = self.direct {
            let mut out = ErlNifTerm::default();
            // SAFETY: a live map of this env, an atom key it holds, a live value.
            let updated = unsafe {
                enif_make_map_update(
                    self.env.as_c_arg(),
                    template,
                    self.keys[0],
                    values[0],
                    &mut out,
                )
            } != 0;
            let words = map_words(out);
            // SAFETY: `out` is a map of this env (the update succeeded).
            if updated && out != template && unsafe { *words.add(2) } == keys_word {
                for (value, &slot) in values.iter().zip(&slots).skip(1) {
                    // SAFETY: the map was made by this call and is seen by no
                    // one else yet; `slot` < its size (checked at load).
                    unsafe { *(words.add(3 + slot) as *mut ErlNifTerm) = *value };
                }
                // SAFETY: a live term of this env.
                return unsafe { Term::new(self.env, out) };
            }
        }
        // SAFETY: equal-length arrays of atoms and live terms of `env`.
        unsafe { map_from_words(self.env, &self.keys, &values) }.expect("distinct struct keys")
    }
}

fn map_words(map: ErlNifTerm) -> *const u64 {
    (word(map) - 2) as *const u64
}

/// Enables in-place writes if a struct built with them reads back, through
/// the NIF API, exactly as built (needs direct reads, checked before).
pub fn check<'a>(env: Env<'a>) -> bool {
    WRITES.store(direct_reads().is_some(), Ordering::Relaxed);
    let keys = [
        atoms::__struct__(),
        atoms::id(),
        atoms::pid(),
        atoms::data(),
    ];
    let values: [Term; 4] = [
        atoms::event_struct().encode(env),
        42.encode(env),
        (1, 2).encode(env),
        vec![1.5f64].encode(env),
    ];
    let template = Template::new(env, keys);
    let first = template.build(values.map(|v| v.as_c_arg()));
    let second =
        template.build([values[0], 7.encode(env), values[2], values[3]].map(|v| v.as_c_arg()));
    let reads_back = |map: Term<'a>, expect: &[Term<'a>; 4]| {
        keys.iter().zip(expect).all(|(k, v)| {
            let mut got = ErlNifTerm::default();
            // SAFETY: live terms of `env`; the out-pointer is a local.
            let found = unsafe {
                enif_get_map_value(env.as_c_arg(), map.as_c_arg(), k.as_c_arg(), &mut got)
            } != 0;
            found && unsafe { Term::new(env, got) }.eq(v)
        })
    };
    let ok = template.direct.is_some()
        && reads_back(first, &values)
        && reads_back(second, &[values[0], 7.encode(env), values[2], values[3]])
        && first.eq(&values_map(env, &keys, &values));
    WRITES.store(ok, Ordering::Relaxed);
    ok
}

fn values_map<'a>(env: Env<'a>, keys: &[Atom; 4], values: &[Term<'a>; 4]) -> Term<'a> {
    let keys = keys.map(|k| k.as_c_arg());
    let values = values.map(|v| v.as_c_arg());
    // SAFETY: atoms and live terms of `env`.
    unsafe { map_from_words(env, &keys, &values) }.expect("distinct keys")
}

/// How structs are built: `:shared_keys` when [`check`] enabled in-place
/// writes, `:nif_api` otherwise (for the debug view).
#[rustler::nif]
fn struct_builds() -> Atom {
    match WRITES.load(Ordering::Relaxed) {
        true => atoms::shared_keys(),
        false => atoms::nif_api(),
    }
}
