//! Lean NIF registration for the hot paths (ingest, tracer callbacks).
//!
//! `#[rustler::nif]` collects each call's arguments into a `Vec` (a malloc
//! and a free per call, about 25 ns), which is more than some of our NIFs
//! cost. [`lean_nif!`] registers a function taking its arguments as an
//! array instead, with the same safety net: a panic is caught and raised as
//! an Erlang error (`rustler`'s `handle_nif_result`), never a VM crash.

use rustler::codegen_runtime::handle_nif_result;
use rustler::sys::{ErlNifEnv, ErlNifTerm};
use rustler::{Env, NifResult, Term};

/// The body of a lean NIF of arity `N`.
pub type LeanFn<const N: usize> = for<'a> fn(Env<'a>, [Term<'a>; N]) -> NifResult<Term<'a>>;

/// Calls `f` with the VM's arguments, catching panics.
///
/// # Safety
/// `env` and `argv` must be the arguments the VM passed to a NIF
/// registered with arity `N`.
pub unsafe fn call<const N: usize>(
    env: *mut ErlNifEnv,
    argv: *const ErlNifTerm,
    f: LeanFn<N>,
) -> ErlNifTerm {
    let lifetime = ();
    let env = Env::new(&lifetime, env);
    let args: [Term; N] = std::array::from_fn(|i| Term::new(env, *argv.add(i)));
    let result = std::panic::catch_unwind(move || f(env, args));
    handle_nif_result(result, env).apply(env)
}

/// Registers `$func` (a [`LeanFn`]) as NIF `$name/$arity` of the module.
macro_rules! lean_nif {
    ($name:literal, $arity:literal, $func:path) => {
        rustler::codegen_runtime::inventory::submit!(rustler::Nif {
            name: concat!($name, "\0").as_ptr() as *const rustler::codegen_runtime::c_char,
            arity: $arity,
            flags: 0,
            raw_func: {
                unsafe extern "C" fn nif_func(
                    env: *mut rustler::sys::ErlNifEnv,
                    _argc: rustler::codegen_runtime::c_int,
                    argv: *const rustler::sys::ErlNifTerm,
                ) -> rustler::sys::ErlNifTerm {
                    $crate::lean_nif::call::<$arity>(env, argv, $func)
                }
                nif_func
            },
        });
    };
}
pub(crate) use lean_nif;
