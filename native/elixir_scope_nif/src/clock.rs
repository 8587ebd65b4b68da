//! Clocks: the BEAM's monotonic time and the OS wall time, in ns, cheaply
//! and from any thread.
//!
//! `enif_monotonic_time` costs about 50 ns and answers only on scheduler
//! threads. So events are stamped with the OS monotonic clock (read from
//! the TSC where the kernel trusts it, see `elixir_scope_core::tsc_clock`)
//! plus an offset to the BEAM's, and the wall time is that plus an
//! offset to the OS wall clock. [`calibrate`] measures both offsets on a
//! scheduler: at load, at every pipeline start and stats call (each
//! pipeline manager asks every check interval) and at every trace session
//! start, so the clocks never drift apart for long.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use elixir_scope_core::tsc_clock;

use rustler::sys::{enif_monotonic_time, ErlNifTimeUnit};

/// Both offsets, on one cache line (every stamp reads both).
#[repr(align(64))]
struct Offsets {
    /// BEAM monotonic minus local monotonic.
    mono: AtomicI64,
    /// OS wall clock minus BEAM monotonic.
    wall: AtomicI64,
}

static OFFSETS: Offsets = Offsets {
    mono: AtomicI64::new(0),
    wall: AtomicI64::new(0),
};

/// The BEAM's monotonic time (ns).
#[inline]
pub fn monotonic_ns() -> i64 {
    tsc_clock::now_ns() + OFFSETS.mono.load(Ordering::Relaxed)
}

/// Turns on TSC reads when the kernel itself trusts the TSC (it is then
/// invariant and synchronized across cores), then calibrates. Call at load.
pub fn init() {
    if tsc_clock::kernel_uses_tsc() {
        tsc_clock::enable();
    }
    calibrate();
}

/// The OS wall time (ns since the Unix epoch) at BEAM monotonic `mono`.
pub fn wall_ns(mono: i64) -> i64 {
    mono + OFFSETS.wall.load(Ordering::Relaxed)
}

/// Measures both offsets; call on a scheduler thread.
pub fn calibrate() {
    let local = tsc_clock::os_monotonic_ns();
    // SAFETY: a plain clock read, on a scheduler thread.
    let beam = unsafe { enif_monotonic_time(ErlNifTimeUnit::ERL_NIF_NSEC) };
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    OFFSETS.mono.store(beam - local, Ordering::Relaxed);
    OFFSETS.wall.store(wall - beam, Ordering::Relaxed);
}
