//! Histogram: a lock-free, log-bucketed latency histogram (HDR-lite).
//!
//! A value v (ns) falls in bucket `(e, m)` where `e = floor(log2 v)` and `m`
//! is the next `SUB_BITS` bits below the leading one: 8 sub-buckets per
//! power of two, so a reported percentile is within 12.5% of the true value.
//! Recording is one relaxed `fetch_add`; each worker owns a histogram, so
//! there is no shared cache line on the hot path. Snapshots merge them.

use std::sync::atomic::{AtomicU64, Ordering};

const SUB_BITS: u32 = 3;
const SUBS: usize = 1 << SUB_BITS;
const BUCKETS: usize = 64 * SUBS;

pub struct Histogram {
    counts: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUBS as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let m = (v >> (e - SUB_BITS)) as usize & (SUBS - 1);
    (e as usize - SUB_BITS as usize + 1) * SUBS + m
}

/// Upper bound of a bucket's values.
fn bucket_high(b: usize) -> u64 {
    if b < SUBS {
        return b as u64;
    }
    let e = (b / SUBS) as u32 + SUB_BITS - 1;
    let m = (b % SUBS) as u128;
    let high = ((SUBS as u128 + m + 1) << (e - SUB_BITS)) - 1;
    high.min(u64::MAX as u128) as u64
}

impl Histogram {
    pub fn record(&self, v: u64) {
        self.counts[bucket_of(v)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_n(&self, v: u64, n: u64) {
        self.counts[bucket_of(v)].fetch_add(n, Ordering::Relaxed);
    }

    /// Records every value, with one `fetch_add` per run of values that
    /// fall in the same bucket (a batch's latencies mostly do).
    pub fn record_all(&self, values: impl IntoIterator<Item = u64>) {
        let mut run: Option<(usize, u64)> = None;
        for v in values {
            let b = bucket_of(v);
            run = match run {
                Some((bucket, n)) if bucket == b => Some((bucket, n + 1)),
                Some((bucket, n)) => {
                    self.counts[bucket].fetch_add(n, Ordering::Relaxed);
                    Some((b, 1))
                }
                None => Some((b, 1)),
            };
        }
        if let Some((bucket, n)) = run {
            self.counts[bucket].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Adds `other`'s counts into this histogram.
    pub fn absorb(&self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter().zip(other.counts.iter()) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Adds this histogram's counts into `into`.
    pub fn merge_into(&self, into: &mut Snapshot) {
        for (acc, c) in into.counts.iter_mut().zip(self.counts.iter()) {
            *acc += c.load(Ordering::Relaxed);
        }
    }
}

/// Plain counts, for percentiles.
#[derive(Clone)]
pub struct Snapshot {
    counts: Vec<u64>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            counts: vec![0; BUCKETS],
        }
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Snapshot {{ n: {}, p50: {}, p99: {} }}",
            self.total(),
            self.quantile(0.5),
            self.quantile(0.99)
        )
    }
}

impl Snapshot {
    /// The counts recorded after `earlier` (a snapshot of the same source).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
        }
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Snapshot) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Value at quantile `q` in [0, 1] (upper bound of its bucket); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.total();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(b);
            }
        }
        bucket_high(BUCKETS - 1)
    }

    /// For each of the ascending `bounds`, how many values fell in buckets
    /// whose upper bound is at most it: cumulative counts as Prometheus
    /// `le` buckets read them (a log bucket straddling a bound counts at the
    /// next bound, so each count errs low by at most that bucket).
    pub fn cumulative(&self, bounds: &[u64]) -> Vec<u64> {
        let mut out = Vec::with_capacity(bounds.len());
        let (mut b, mut seen) = (0, 0);
        for &bound in bounds {
            while b < BUCKETS && bucket_high(b) <= bound {
                seen += self.counts[b];
                b += 1;
            }
            out.push(seen);
        }
        out
    }

    /// Sum of the values, from bucket upper bounds (as [`Snapshot::mean`]).
    pub fn sum(&self) -> f64 {
        self.mean() * self.total() as f64
    }

    /// Mean from bucket upper bounds (an overestimate within 12.5%).
    pub fn mean(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let sum: f64 = self
            .counts
            .iter()
            .enumerate()
            .map(|(b, &c)| c as f64 * bucket_high(b) as f64)
            .sum();
        sum / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..1_000_000u64)
            .step_by(37)
            .chain([u64::MAX / 2, u64::MAX])
        {
            let b = bucket_of(v);
            assert!(b >= last);
            last = b;
            let high = bucket_high(b);
            assert!(high >= v, "{v} above its bucket {high}");
            assert!(high as f64 <= v as f64 * 1.125 + 1.0, "{v} -> {high}");
        }
    }

    #[test]
    fn quantiles_are_within_bucket_error() {
        let h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let mut s = Snapshot::default();
        h.merge_into(&mut s);
        for (q, expect) in [(0.5, 5_000_000.0), (0.99, 9_900_000.0)] {
            let got = s.quantile(q) as f64;
            assert!(got >= expect && got <= expect * 1.13, "q{q}: {got}");
        }
        assert_eq!(Snapshot::default().quantile(0.5), 0);
    }

    #[test]
    fn cumulative_counts_grow_with_their_bounds() {
        let h = Histogram::default();
        for v in [5u64, 900, 1_000, 70_000, 2_000_000] {
            h.record(v);
        }
        let mut s = Snapshot::default();
        h.merge_into(&mut s);
        assert_eq!(
            s.cumulative(&[1, 10, 1_200, 100_000, u64::MAX]),
            [0, 1, 3, 4, 5]
        );
        assert!((s.sum() - s.mean() * 5.0).abs() < 1e-6);
    }

    #[test]
    fn recording_runs_at_once_counts_like_one_by_one() {
        let values: Vec<u64> = [5u64, 5, 6, 900, 900, 901, 5, 70_000, 70_001, 0]
            .into_iter()
            .cycle()
            .take(1000)
            .collect();
        let (one, all) = (Histogram::default(), Histogram::default());
        values.iter().for_each(|&v| one.record(v));
        all.record_all(values.iter().copied());
        all.record_all([]);
        let counts = |h: &Histogram| {
            h.counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&one), counts(&all));
    }
}
