//! Clocks: the BEAM's monotonic time and the OS wall time, in ns, cheaply
//! and from any thread.
//!
//! `enif_monotonic_time` costs about 50 ns and answers only on scheduler
//! threads. So events are stamped with the OS monotonic clock (a vDSO
//! read) plus an offset to the BEAM's, and the wall time is that plus an
//! offset to the OS wall clock. [`calibrate`] measures both offsets on a
//! scheduler: at load, at every pipeline start and stats call (each
//! pipeline manager asks every check interval) and at every trace session
//! start, so the clocks never drift apart for long.

use std::sync::atomic::{AtomicI64, Ordering};
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
use std::sync::LazyLock;
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
use std::time::Instant;
use std::time::{SystemTime, UNIX_EPOCH};

use rustler::sys::{enif_monotonic_time, ErlNifTimeUnit};

/// BEAM monotonic minus local monotonic.
static MONO_OFFSET: AtomicI64 = AtomicI64::new(0);
/// OS wall clock minus BEAM monotonic.
static WALL_OFFSET: AtomicI64 = AtomicI64::new(0);

/// The BEAM's monotonic time (ns).
#[inline]
pub fn monotonic_ns() -> i64 {
    local_ns() + MONO_OFFSET.load(Ordering::Relaxed)
}

/// The OS monotonic clock in ns: one `clock_gettime` (a vDSO read) on
/// 64-bit Linux, without `Instant`'s 128-bit arithmetic.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[inline]
fn local_ns() -> i64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_MONOTONIC: i32 = 1;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
    ts.sec * 1_000_000_000 + ts.nsec
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn local_ns() -> i64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    EPOCH.elapsed().as_nanos() as i64
}

/// The OS wall time (ns since the Unix epoch) at BEAM monotonic `mono`.
pub fn wall_ns(mono: i64) -> i64 {
    mono + WALL_OFFSET.load(Ordering::Relaxed)
}

/// Measures both offsets; call on a scheduler thread.
pub fn calibrate() {
    let local = local_ns();
    // SAFETY: a plain clock read, on a scheduler thread.
    let beam = unsafe { enif_monotonic_time(ErlNifTimeUnit::ERL_NIF_NSEC) };
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    MONO_OFFSET.store(beam - local, Ordering::Relaxed);
    WALL_OFFSET.store(wall - beam, Ordering::Relaxed);
}
