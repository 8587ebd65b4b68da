//! The tracer state term: a raw NIF resource holding an `Arc<TraceSession>`.
//!
//! The VM passes this term to both tracer callbacks on every trace event.
//! rustler's typed resources find their type through a hash map on each
//! lookup; this type is opened once at load and kept in a static, so a
//! lookup is one `enif_get_resource` call. The resource owns one strong
//! count of the session, given back by the destructor.

use std::ffi::c_void;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use rustler::sys::{
    enif_alloc_resource, enif_get_resource, enif_make_resource, enif_open_resource_type,
    enif_release_resource, ErlNifEnv, ErlNifResourceFlags, ErlNifResourceType,
};
use rustler::{Env, Term};

use super::session::TraceSession;

static TYPE: AtomicPtr<ErlNifResourceType> = AtomicPtr::new(std::ptr::null_mut());

unsafe extern "C" fn destroy(_env: *mut ErlNifEnv, obj: *mut c_void) {
    // SAFETY: `obj` holds the pointer `make` stored, whose strong count the
    // resource owns; the VM calls this once, when the last reference goes.
    drop(Arc::from_raw(*(obj as *const *const TraceSession)));
}

/// Opens the resource type; call from the NIF `load` callback.
pub fn open(env: Env) -> bool {
    let mut tried = ErlNifResourceFlags::ERL_NIF_RT_CREATE;
    // SAFETY: called during load with the load environment; the name is a
    // NUL-terminated literal.
    let t = unsafe {
        enif_open_resource_type(
            env.as_c_arg(),
            std::ptr::null(),
            c"ElixirScopeTraceSession".as_ptr(),
            Some(destroy),
            ErlNifResourceFlags::ERL_NIF_RT_CREATE,
            &mut tried,
        )
    };
    TYPE.store(t as *mut _, Ordering::Release);
    !t.is_null()
}

/// A new tracer state term owning `session`.
pub fn make<'a>(env: Env<'a>, session: Arc<TraceSession>) -> Term<'a> {
    let t = TYPE.load(Ordering::Acquire);
    assert!(!t.is_null(), "trace session resource type not opened");
    // SAFETY: `t` is our opened type; the object is sized for one pointer
    // and initialized before the term is made; releasing our reference
    // leaves the term as the owner.
    unsafe {
        let obj = enif_alloc_resource(t, std::mem::size_of::<*const TraceSession>());
        *(obj as *mut *const TraceSession) = Arc::into_raw(session);
        let term = enif_make_resource(env.as_c_arg(), obj);
        enif_release_resource(obj);
        Term::new(env, term)
    }
}

/// The session behind a tracer state term, if it is one.
pub fn get<'a>(term: Term<'a>) -> Option<&'a TraceSession> {
    let t = TYPE.load(Ordering::Relaxed);
    let mut obj: *const c_void = std::ptr::null();
    // SAFETY: a failed lookup (other term, or type not opened) returns 0;
    // on success the object holds a live session pointer, kept alive by the
    // term for the environment's lifetime 'a.
    unsafe {
        (!t.is_null()
            && enif_get_resource(term.get_env().as_c_arg(), term.as_c_arg(), t, &mut obj) != 0)
            .then(|| &**(obj as *const *const TraceSession))
    }
}
