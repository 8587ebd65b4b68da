//! A monotonic clock in ns read from the CPU's time-stamp counter and kept
//! on the OS monotonic clock: about 10 ns a read, where a vDSO
//! `clock_gettime` costs about 22 ns on our 2-core VMs. Every trace event
//! and every ingest call is stamped, so this is on the hot path.
//!
//! Algorithm: an anchor `(tsc, ns)` taken from the OS clock, and a rate
//! (ns per tick, 32.32 fixed point) measured from the first anchor to the
//! latest, so it sharpens as the process lives. A read interpolates from
//! the anchor; the first read that finds the anchor [`RE_ANCHOR_TICKS`] old
//! (about a millisecond) returns the OS clock and takes a new anchor. Until
//! a rate is known (the first [`MIN_BASELINE_NS`]), on CPUs without a TSC,
//! and until [`enable`] (called once the kernel is known to use the TSC as
//! its own clocksource), every read is an OS clock read.
//!
//! Invariants: the anchor and rate change only under a seqlock (`seq` odd
//! while written); a reader uses a consistent triple or the OS clock. An
//! anchor is taken only from a TSC read and an OS clock read made within a
//! few microseconds of each other (a preemption between them would skew
//! the anchor and the rate). An
//! interpolation spans at most `RE_ANCHOR_TICKS`, so its error is at most
//! the rate's error times a millisecond (nanoseconds once the rate is
//! measured over seconds). At a new anchor the clock may step back by that
//! error: never by more than a few tens of ns, far below the time between
//! two trace events of one process.

use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Interpolate at most this many ticks (about 1.4 ms at 3 GHz).
pub const RE_ANCHOR_TICKS: u64 = 1 << 22;
/// The rate is first measured over at least this long.
pub const MIN_BASELINE_NS: i64 = 10_000_000;
/// An anchor's two TSC reads around the OS clock read lie at most this
/// far apart (about 5 us at 3 GHz; undisturbed, they are ~100 ticks apart).
const MAX_PAIR_TICKS: u64 = 1 << 14;

/// The clock's state, on one cache line (every read touches it).
#[repr(align(64))]
struct State {
    enabled: AtomicBool,
    seq: AtomicU64,
    anchor_tsc: AtomicU64,
    anchor_ns: AtomicI64,
    /// ns per tick, 32.32 fixed point; 0 = not measured yet.
    rate: AtomicU64,
    first_tsc: AtomicU64,
    first_ns: AtomicI64,
}

static CLOCK: State = State {
    enabled: AtomicBool::new(false),
    seq: AtomicU64::new(0),
    anchor_tsc: AtomicU64::new(0),
    anchor_ns: AtomicI64::new(0),
    rate: AtomicU64::new(0),
    first_tsc: AtomicU64::new(0),
    first_ns: AtomicI64::new(0),
};

/// The OS monotonic clock in ns: one `clock_gettime` (a vDSO read) on
/// 64-bit Linux, without `Instant`'s 128-bit arithmetic.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[inline]
pub fn os_monotonic_ns() -> i64 {
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
pub fn os_monotonic_ns() -> i64 {
    static EPOCH: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    EPOCH.elapsed().as_nanos() as i64
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn ticks() -> Option<u64> {
    // SAFETY: RDTSC exists on every x86_64 CPU and has no side effects.
    Some(unsafe { std::arch::x86_64::_rdtsc() })
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn ticks() -> Option<u64> {
    None
}

/// Turns TSC reads on (on x86_64). Call when the TSC is known to be
/// invariant and synchronized across cores, e.g. when the kernel uses it
/// as its clocksource.
pub fn enable() {
    CLOCK.enabled.store(ticks().is_some(), Ordering::Relaxed);
}

/// True if the kernel's clocksource is the TSC (Linux; false elsewhere).
pub fn kernel_uses_tsc() -> bool {
    std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
        .is_ok_and(|s| s.trim() == "tsc")
}

/// The monotonic clock in ns (the OS clock's epoch).
#[inline]
pub fn now_ns() -> i64 {
    let Some(t) = ticks().filter(|_| CLOCK.enabled.load(Ordering::Relaxed)) else {
        return os_monotonic_ns();
    };
    let seq = CLOCK.seq.load(Ordering::Acquire);
    let (t0, n0, rate) = (
        CLOCK.anchor_tsc.load(Ordering::Relaxed),
        CLOCK.anchor_ns.load(Ordering::Relaxed),
        CLOCK.rate.load(Ordering::Relaxed),
    );
    fence(Ordering::Acquire);
    let dt = t.wrapping_sub(t0);
    if seq & 1 == 0 && CLOCK.seq.load(Ordering::Relaxed) == seq && rate != 0 && dt < RE_ANCHOR_TICKS
    {
        return n0 + ((dt as u128 * rate as u128) >> 32) as i64;
    }
    re_anchor(seq)
}

/// An OS clock read that also becomes the new anchor (unless another
/// thread is taking one), measuring the rate from the first anchor.
#[cold]
fn re_anchor(seq: u64) -> i64 {
    let t0 = ticks().unwrap_or(0);
    let now = os_monotonic_ns();
    let t1 = ticks().unwrap_or(0);
    // An anchor pairs a TSC reading with the OS time read at that moment:
    // if the thread was preempted between the reads, take none this time.
    let tight = t1.wrapping_sub(t0) < MAX_PAIR_TICKS;
    let t = t0 + t1.wrapping_sub(t0) / 2;
    let writer = tight
        && seq & 1 == 0
        && CLOCK
            .seq
            .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
    if !writer {
        return now;
    }
    fence(Ordering::Release);
    let (first_tsc, first_ns) = (
        CLOCK.first_tsc.load(Ordering::Relaxed),
        CLOCK.first_ns.load(Ordering::Relaxed),
    );
    if first_tsc == 0 {
        CLOCK.first_tsc.store(t, Ordering::Relaxed);
        CLOCK.first_ns.store(now, Ordering::Relaxed);
    } else if now - first_ns >= MIN_BASELINE_NS && t > first_tsc {
        let rate = ((((now - first_ns) as u128) << 32) / (t - first_tsc) as u128) as u64;
        CLOCK.rate.store(rate, Ordering::Relaxed);
    }
    CLOCK.anchor_tsc.store(t, Ordering::Relaxed);
    CLOCK.anchor_ns.store(now, Ordering::Relaxed);
    CLOCK.seq.store(seq + 2, Ordering::Release);
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_follow_the_os_clock_and_never_step_back_noticeably() {
        enable();
        let start = os_monotonic_ns();
        let mut last = now_ns();
        let mut worst_gap = 0i64;
        // 200 ms of reads: the rate gets measured, anchors are renewed.
        while os_monotonic_ns() - start < 200_000_000 {
            let before = os_monotonic_ns();
            let ours = now_ns();
            let after = os_monotonic_ns();
            // Within the OS reads around it, give or take 20 us (a rate
            // measured over 10 ms, interpolated over about a millisecond).
            assert!(
                ours >= before - 20_000 && ours <= after + 20_000,
                "{before} {ours} {after}"
            );
            worst_gap = worst_gap.max(last - ours);
            last = ours;
        }
        assert!(worst_gap < 20_000, "stepped back {worst_gap} ns");
        if ticks().is_some() {
            assert_ne!(CLOCK.rate.load(Ordering::Relaxed), 0, "rate measured");
        }
    }
}
