//! Conversions between Erlang terms and core types.

pub mod event;
pub mod layout;
pub mod structs;
pub mod term;

pub use layout::{list_length, tuple_slice};
use rustler::sys::{enif_make_map_from_arrays, ErlNifTerm};
use rustler::{Env, Term};

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

/// The map of `keys` to `values`; `None` when the VM refuses them (a key
/// repeated).
///
/// # Safety
/// `keys` and `values` must have equal lengths and hold terms of `env` or
/// environment-independent ones (atoms, local pids, small integers).
pub unsafe fn map_from_words<'a>(
    env: Env<'a>,
    keys: &[ErlNifTerm],
    values: &[ErlNifTerm],
) -> Option<Term<'a>> {
    debug_assert_eq!(keys.len(), values.len());
    let mut map = ErlNifTerm::default();
    let env_raw = env.as_c_arg();
    (enif_make_map_from_arrays(
        env_raw,
        keys.as_ptr(),
        values.as_ptr(),
        keys.len(),
        &mut map,
    ) != 0)
        .then(|| Term::new(env, map))
}

/// The elements of a tuple of exactly `N` elements.
pub fn tuple<const N: usize>(t: Term) -> Option<[Term; N]> {
    let elems = tuple_slice(t).filter(|e| e.len() == N)?;
    // SAFETY: elements of a live tuple of `t`'s environment.
    Some(std::array::from_fn(|i| unsafe {
        Term::new(t.get_env(), elems[i])
    }))
}

/// Calls `f(index, element)` for each element of a proper list; `Err(())`
/// when `t` is not a proper list (nothing is called past the bad tail).
pub fn each_in_list<'a>(t: Term<'a>, mut f: impl FnMut(usize, Term<'a>)) -> Result<(), ()> {
    let env = t.get_env();
    let mut cell = t.as_c_arg();
    let mut i = 0;
    while let Some((head, tail)) = layout::list_cell(env, cell) {
        // SAFETY: `head` and `tail` are live terms of `env`.
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
