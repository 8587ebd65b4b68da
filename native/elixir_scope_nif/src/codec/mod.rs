//! Conversions between Erlang terms and core types.

pub mod event;
pub mod term;

use rustler::sys::{enif_get_list_cell, enif_get_list_length, enif_get_tuple, ErlNifTerm};
use rustler::Term;

/// The raw word of a term (atoms and local pids are stored this way).
pub fn word(t: ErlNifTerm) -> u64 {
    // SAFETY: ErlNifTerm is #[repr(transparent)] over usize.
    unsafe { std::mem::transmute::<ErlNifTerm, usize>(t) as u64 }
}

/// A term from its raw word.
///
/// # Safety
/// `w` must be the word of an environment-independent term (an atom or a
/// local pid) or of a live term of the environment it is used in.
pub unsafe fn from_word(w: u64) -> ErlNifTerm {
    std::mem::transmute::<usize, ErlNifTerm>(w as usize)
}

/// A tuple's elements, borrowed from the term heap; `None` if not a tuple.
pub fn tuple_slice<'a>(t: Term<'a>) -> Option<&'a [ErlNifTerm]> {
    let mut arity = 0;
    let mut elems: *const ErlNifTerm = std::ptr::null();
    // SAFETY: `t` is live; out-pointers are locals; the VM gave `arity`
    // elements that live as long as the term's environment.
    (unsafe { enif_get_tuple(t.get_env().as_c_arg(), t.as_c_arg(), &mut arity, &mut elems) } != 0)
        .then(|| unsafe { std::slice::from_raw_parts(elems, arity as usize) })
}

/// The elements of a tuple of exactly `N` elements.
pub fn tuple<const N: usize>(t: Term) -> Option<[Term; N]> {
    let elems = tuple_slice(t).filter(|e| e.len() == N)?;
    // SAFETY: elements of a live tuple of `t`'s environment.
    Some(std::array::from_fn(|i| unsafe {
        Term::new(t.get_env(), elems[i])
    }))
}

/// The length of a proper list; `None` otherwise.
pub fn list_length(t: Term) -> Option<usize> {
    let mut len = 0;
    // SAFETY: `t` is live; `len` is a local.
    (unsafe { enif_get_list_length(t.get_env().as_c_arg(), t.as_c_arg(), &mut len) } != 0)
        .then_some(len as usize)
}

/// Calls `f(index, element)` for each element of a proper list; `Err(())`
/// when `t` is not a proper list (nothing is called past the bad tail).
pub fn each_in_list<'a>(t: Term<'a>, mut f: impl FnMut(usize, Term<'a>)) -> Result<(), ()> {
    let env = t.get_env();
    let mut cell = t.as_c_arg();
    let (mut head, mut tail) = (ErlNifTerm::default(), ErlNifTerm::default());
    let mut i = 0;
    // SAFETY: `cell` is always a live term of `env`; out-pointers are locals.
    while unsafe { enif_get_list_cell(env.as_c_arg(), cell, &mut head, &mut tail) } != 0 {
        f(i, unsafe { Term::new(env, head) });
        cell = tail;
        i += 1;
    }
    if unsafe { Term::new(env, cell) }.is_empty_list() {
        Ok(())
    } else {
        Err(())
    }
}

/// A map with atom keys, for stats: `atom_map!(env, {"size" => 1})`.
#[macro_export]
macro_rules! atom_map {
    ($env:expr, { $($key:literal => $value:expr),* $(,)? }) => {{
        let env = $env;
        $crate::codec::map_of(env, &[$(($key, rustler::Encoder::encode(&$value, env))),*])
    }};
}

pub fn map_of<'a>(env: rustler::Env<'a>, pairs: &[(&str, Term<'a>)]) -> Term<'a> {
    let keys: Vec<Term> = pairs
        .iter()
        .map(|(k, _)| rustler::Encoder::encode(&rustler::Atom::from_str(env, k).unwrap(), env))
        .collect();
    let values: Vec<Term> = pairs.iter().map(|(_, v)| *v).collect();
    Term::map_from_term_arrays(env, &keys, &values).expect("distinct keys")
}
