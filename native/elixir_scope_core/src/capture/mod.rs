//! Native trace capture: the parts of an erl_tracer session that do not
//! need the BEAM.
//!
//! [`limits::Limits`] decides, per trace event and lock-free, whether a
//! session may record it and which safety limit stops the session.
//! [`server_states::ServerStates`] remembers the state a GenServer callback
//! was entered with, so its return can be turned into a `:state_change`.
//! [`excluded::Excluded`] holds the processes a session never traces.

pub mod excluded;
pub mod limits;
pub mod server_states;
