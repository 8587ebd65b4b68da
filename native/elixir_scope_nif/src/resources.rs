//! NIF resources: handles the Elixir side holds on native objects.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use elixir_scope_core::event::Event;
use elixir_scope_core::pipeline::Pipeline;
use elixir_scope_core::ring::Ring;
use elixir_scope_core::store::{Hit, SharedStore};
use parking_lot::Mutex;

pub struct StoreRes(pub Arc<SharedStore>);

#[rustler::resource_impl]
impl rustler::Resource for StoreRes {}

pub struct RingRes(pub Arc<Ring<Event>>);

#[rustler::resource_impl]
impl rustler::Resource for RingRes {}

/// A pipeline and its ingest settings. Dropping it stops the workers.
pub struct PipelineRes {
    pub pipeline: Pipeline,
    pub max_payload: AtomicUsize,
}

#[rustler::resource_impl]
impl rustler::Resource for PipelineRes {}

/// A query's result being read in chunks: the events it matched (id and
/// log position, in result order) and how many were handed out.
pub struct CursorRes {
    pub store: Arc<SharedStore>,
    pub hits: Mutex<(Vec<Hit>, usize)>,
}

#[rustler::resource_impl]
impl rustler::Resource for CursorRes {}

// NIF results must be unwind-safe. Every native object behind these handles
// keeps its invariants at each lock release and atomic step (parking_lot
// locks do not poison), so observing one after a caught panic is sound.
impl std::panic::RefUnwindSafe for StoreRes {}
impl std::panic::RefUnwindSafe for RingRes {}
impl std::panic::RefUnwindSafe for PipelineRes {}
impl std::panic::RefUnwindSafe for CursorRes {}
