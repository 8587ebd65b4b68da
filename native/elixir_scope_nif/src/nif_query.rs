//! Query NIFs: filtered selections read through a cursor, and call
//! statistics (`ElixirScope.Query`).

use parking_lot::Mutex;
use rustler::{Atom, Encoder, Env, NifMap, NifResult, ResourceArc, Term};

use elixir_scope_core::event::{EventKind, NO_ARITY};
use elixir_scope_core::store::{Filter, StatKey};

use crate::atoms;
use crate::codec::event::{kind_atom, Decoder};
use crate::codec::{from_word, word};
use crate::nif_store::{order, read};
use crate::resources::{CursorRes, StoreRes};

/// A filter as `ElixirScope.Query` hands it over (checked there): `nil`
/// for an absent condition, `data` wrapped as `{:data, term}`.
#[derive(NifMap)]
pub struct FilterMap<'a> {
    pid: Term<'a>,
    kinds: Vec<Atom>,
    module: Term<'a>,
    function: Term<'a>,
    arity: Option<u8>,
    from: Option<i64>,
    to: Option<i64>,
    data: Term<'a>,
    after: Option<u64>,
    before: Option<u64>,
}

fn nil_or<'a, T>(t: Term<'a>, f: impl FnOnce(Term<'a>) -> T) -> Option<T> {
    (t.as_c_arg() != atoms::nil().as_c_arg()).then(|| f(t))
}

pub fn filter(f: FilterMap) -> NifResult<Filter> {
    let mut kinds = 0u16;
    for k in &f.kinds {
        let kind = EventKind::ALL
            .into_iter()
            .find(|&e| kind_atom(e) == *k)
            .ok_or(rustler::Error::BadArg)?;
        kinds |= 1 << kind as u8;
    }
    let data = nil_or(f.data, |t| -> NifResult<Vec<u8>> {
        let (_, needle) = t.decode::<(Atom, Term)>()?;
        // The encoding the store's payloads use, never truncated here.
        Ok(Decoder::new(1 << 30).payload(needle).as_bytes().to_vec())
    })
    .transpose()?;
    Ok(Filter {
        pid: nil_or(f.pid, |t| word(t.as_c_arg())),
        kinds,
        module: nil_or(f.module, |t| word(t.as_c_arg())),
        function: nil_or(f.function, |t| word(t.as_c_arg())),
        arity: f.arity,
        from: f.from,
        to: f.to,
        data,
        after: f.after,
        before: f.before,
    })
}

/// Selects the events a filter matches, for reading with `cursor_next`.
#[rustler::nif(schedule = "DirtyCpu")]
fn store_query<'a>(
    store: ResourceArc<StoreRes>,
    f: FilterMap<'a>,
    limit: usize,
    ord: Term<'a>,
) -> NifResult<ResourceArc<CursorRes>> {
    let f = filter(f)?;
    let hits = store.0.read().query(&f, limit, order(ord));
    Ok(ResourceArc::new(CursorRes {
        store: store.0.clone(),
        hits: Mutex::new((hits, 0)),
    }))
}

/// `[{key, count, acc_time_ns, own_time_ns}]` of the completed calls the
/// filter matches, by `:mfa`, `:module` or `:pid`.
#[rustler::nif(schedule = "DirtyCpu")]
fn store_call_stat<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    f: FilterMap<'a>,
    key: Atom,
) -> NifResult<Term<'a>> {
    let by = if key == atoms::mfa() {
        StatKey::Mfa
    } else if key == atoms::module() {
        StatKey::Module
    } else if key == atoms::pid() {
        StatKey::Pid
    } else {
        return Err(rustler::Error::BadArg);
    };
    let stats = store.0.read().call_stat(&filter(f)?, by);
    // SAFETY (below): atom and local pid words are environment-independent.
    let word_term = |w: u64| unsafe { Term::new(env, from_word(w)) };
    let nil = atoms::nil().encode(env);
    let atom_or_nil = |w: u64| if w == 0 { nil } else { word_term(w) };
    let rows: Vec<Term> = stats
        .into_iter()
        .map(|((a, b, arity), s)| {
            let key = match by {
                StatKey::Mfa => {
                    let arity = if arity == NO_ARITY {
                        nil
                    } else {
                        arity.encode(env)
                    };
                    (atom_or_nil(a), atom_or_nil(b), arity).encode(env)
                }
                StatKey::Module => atom_or_nil(a),
                StatKey::Pid => word_term(a),
            };
            (key, s.count, s.acc_time, s.own_time).encode(env)
        })
        .collect();
    Ok(rows.encode(env))
}

/// `[{complete?, [event]}]`: the ranges of the calls the filter matches.
#[rustler::nif(schedule = "DirtyCpu")]
fn store_ranges<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    f: FilterMap<'a>,
    max_depth: usize,
    limit: usize,
) -> NifResult<Term<'a>> {
    let ranges = store.0.read().ranges(&filter(f)?, max_depth, limit);
    let out: Vec<Term> = ranges
        .iter()
        .map(|(hits, complete)| (*complete, read(env, &store.0, hits)).encode(env))
        .collect();
    Ok(out.encode(env))
}

/// `[[call]]`: the tracebacks of the events the filter matches, root first.
#[rustler::nif(schedule = "DirtyCpu")]
fn store_tracebacks<'a>(
    env: Env<'a>,
    store: ResourceArc<StoreRes>,
    f: FilterMap<'a>,
    across: bool,
    limit: usize,
) -> NifResult<Term<'a>> {
    let tracebacks = store.0.read().tracebacks(&filter(f)?, across, limit);
    let out: Vec<Term> = tracebacks
        .iter()
        .map(|hits| read(env, &store.0, hits))
        .collect();
    Ok(out.encode(env))
}
