//! Buckets: a round's sends indexed by fingerprint, without a hash table.
//!
//! The matcher looks sends up by fingerprint, once per receive, in a
//! round that holds tens of thousands of them: a hash table's random
//! probes into megabytes of entries cost more than the pairing itself. A
//! stable counting sort of the send indices by the low bits of their
//! fingerprint (a hash already, `phash2`) costs two sequential passes, and
//! its arrays, a bucket's start and end and the (fingerprint, index) pairs
//! in order, stay small enough for the cache. A lookup compares fingerprints
//! in the bucket, so a send is only visited when its fingerprint is the
//! one looked up.
//!
//! Invariants after [`Buckets::build`]: bucket `b` holds, in increasing
//! order of index, the pairs `(fingerprint(i), i)` with
//! `fingerprint(i) & mask == b`, as `order[end(b - 1)..end(b)]`
//! (`end(-1)` = 0); there are at least as many buckets as indices.

#[derive(Default)]
pub struct Buckets {
    /// The end of each bucket in `order`.
    ends: Vec<u32>,
    /// While building: the start of each bucket, then `order`'s length.
    starts: Vec<u32>,
    order: Vec<(u32, u32)>,
    mask: u32,
}

impl Buckets {
    /// Indexes `fingerprints` (of indices `0..`), and marks in `shared`
    /// (one flag per index) the indices whose fingerprint another index
    /// has too; in a crowded bucket (many sends of one message) all of
    /// them. An index is compared, as it is placed, with those placed in
    /// its bucket before it: buckets hold one index on average.
    pub fn build(&mut self, fingerprints: &[u32], shared: &mut Vec<bool>) {
        const CROWDED: u32 = 16;
        let n = fingerprints.len();
        let buckets = n.next_power_of_two().max(16);
        self.mask = (buckets - 1) as u32;
        self.ends.clear();
        self.ends.resize(buckets, 0);
        // Counts per bucket, then each bucket's start, which placing the
        // indices moves on to the bucket's end.
        for &fp in fingerprints {
            self.ends[(fp & self.mask) as usize] += 1;
        }
        let mut start = 0;
        for e in &mut self.ends {
            (*e, start) = (start, start + *e);
        }
        self.starts.clone_from(&self.ends);
        self.starts.push(n as u32);
        self.order.clear();
        self.order.resize(n, (0, 0));
        shared.clear();
        shared.resize(n, false);
        for (i, &fp) in fingerprints.iter().enumerate() {
            let b = (fp & self.mask) as usize;
            let (start, at) = (self.starts[b], self.ends[b]);
            self.order[at as usize] = (fp, i as u32);
            self.ends[b] += 1;
            if self.starts[b + 1] - start > CROWDED {
                shared[i] = true;
                continue;
            }
            for &(other, j) in &self.order[start as usize..at as usize] {
                if other == fp {
                    (shared[i], shared[j as usize]) = (true, true);
                }
            }
        }
    }

    /// The indices with fingerprint `fingerprint`, in increasing order.
    pub fn get(&self, fingerprint: u32) -> impl Iterator<Item = usize> + '_ {
        let b = (fingerprint & self.mask) as usize;
        let start = if b == 0 { 0 } else { self.ends[b - 1] };
        let bucket = &self.order[start as usize..self.ends[b] as usize];
        (bucket.iter())
            .filter(move |&&(fp, _)| fp == fingerprint)
            .map(|&(_, i)| i as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_index_is_in_its_fingerprints_bucket_in_order() {
        let mut b = Buckets::default();
        let mut shared = Vec::new();
        let get = |b: &Buckets, fp| b.get(fp).collect::<Vec<_>>();
        b.build(&[], &mut shared);
        assert_eq!(get(&b, 7), []);
        // 300 fingerprints in 7 buckets (their low bits).
        let fps: Vec<u32> = (0..1000u32).map(|i| ((i % 300) << 16) | (i % 7)).collect();
        b.build(&fps, &mut shared);
        for &fp in &fps {
            let expected: Vec<usize> = (0..fps.len()).filter(|&j| fps[j] == fp).collect();
            assert_eq!(get(&b, fp), expected);
        }
        assert_eq!(
            get(&b, (299 << 16) | 6),
            [],
            "no i < 1000 is 299 mod 300, 6 mod 7"
        );
        assert!(
            shared.iter().all(|&s| s),
            "every fingerprint comes 3 or 4 times"
        );
        b.build(&[5, 9, 5, 5, 21], &mut shared);
        assert_eq!(get(&b, 5), [0, 2, 3]);
        assert_eq!(get(&b, 9), [1]);
        assert_eq!(get(&b, 6), []);
        assert_eq!(
            shared,
            [true, false, true, true, false],
            "21 shares 5's bucket only"
        );
        let crowded: Vec<u32> = (0..40).map(|i| 1 + (i << 8)).collect();
        b.build(&crowded, &mut shared);
        assert!(shared.iter().all(|&s| s), "a crowded bucket is all shared");
    }
}
