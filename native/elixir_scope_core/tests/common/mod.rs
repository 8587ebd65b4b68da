//! Helpers shared by the integration tests: a monotonic clock and events
//! whose payload carries a sequence number.

use std::sync::OnceLock;
use std::time::Instant;

use elixir_scope_core::event::{Event, EventKind, NO_ARITY};
use elixir_scope_core::payload::Payload;

pub fn clock() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as i64
}

/// A custom event of `pid` carrying `seq`.
pub fn event(pid: u64, seq: u64) -> Event {
    Event {
        id: 0,
        timestamp: clock(),
        wall_time: 0,
        pid,
        module: 0,
        function: 0,
        arity: NO_ARITY,
        kind: EventKind::Custom,
        ingest_stamped: true,
        data: Payload::from_bytes(&seq.to_le_bytes()),
        peer: Payload::empty(),
        fingerprint: 0,
    }
}

/// The sequence number `event` put in the payload.
#[allow(dead_code)] // not every test binary reads it back
pub fn seq_of(e: &Event) -> u64 {
    u64::from_le_bytes(e.data.as_bytes().try_into().unwrap())
}
