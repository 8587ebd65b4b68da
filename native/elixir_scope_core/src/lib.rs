//! elixir_scope_core: the native side of elixir_scope without the BEAM.
//!
//! Data flow: producers push [`event::Event`]s into [`ring::Ring`] shards;
//! [`pool`] worker threads lease a shard at a time, drain it in batches and
//! write the batch into a [`store::Store`] through its [`correlator`] (causal
//! links, patched in place when the late half of a pair arrives); the store
//! indexes events by id, time, pid, {module, function} and correlation id
//! within fixed bounds.
//! [`pipeline::Pipeline`] ties rings, workers and a store together.

pub mod breaker;
pub mod capture;
pub mod correlator;
pub mod cross_node;
pub mod dead_letters;
pub mod event;
pub mod faults;
pub mod hash;
pub mod histogram;
pub mod links;
pub mod logs;
pub mod metrics;
pub mod payload;
pub mod pipeline;
pub mod pool;
pub mod remote;
pub mod ring;
pub mod shedding;
pub mod store;
pub mod tracefile;
pub mod tsc_clock;
pub mod wakeup;
