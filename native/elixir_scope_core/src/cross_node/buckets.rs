//! Buckets: a round's sends indexed by fingerprint, without a hash table.
//!
//! The matcher looks sends up by fingerprint, once per receive, in a
//! round that holds tens of thousands of them: a hash table's random
//! probes into megabytes of entries cost more than the pairing itself. A
//! stable counting sort of the send indices by the low bits of their
//! fingerprint (a hash already, `phash2`) costs two sequential passes, and
//! its two arrays, a bucket's end and the (fingerprint, index) pairs in
//! order, stay small enough for the cache. A lookup compares fingerprints
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
    order: Vec<(u32, u32)>,
    mask: u32,
}

impl Buckets {
    /// Indexes `fingerprints` (of indices `0..`).
    pub fn build(&mut self, fingerprints: impl Iterator<Item = u32> + Clone) {
        let n = fingerprints.clone().count();
        let buckets = n.next_power_of_two().max(16);
        self.mask = (buckets - 1) as u32;
        self.ends.clear();
        self.ends.resize(buckets, 0);
        // Counts per bucket, then each bucket's start, which placing the
        // indices moves on to the bucket's end.
        for fp in fingerprints.clone() {
            self.ends[(fp & self.mask) as usize] += 1;
        }
        let mut start = 0;
        for e in &mut self.ends {
            (*e, start) = (start, start + *e);
        }
        self.order.clear();
        self.order.resize(n, (0, 0));
        for (i, fp) in fingerprints.enumerate() {
            let at = &mut self.ends[(fp & self.mask) as usize];
            self.order[*at as usize] = (fp, i as u32);
            *at += 1;
        }
    }

    /// Marks in `shared` (one flag per index) the indices whose
    /// fingerprint another index has too; in a crowded bucket (many
    /// sends of one message) all of them.
    pub fn mark_shared(&self, shared: &mut Vec<bool>) {
        const CROWDED: usize = 16;
        shared.clear();
        shared.resize(self.order.len(), false);
        let mut start = 0;
        for &end in &self.ends {
            let bucket = &self.order[start..end as usize];
            start = end as usize;
            if bucket.len() < 2 {
                continue;
            }
            for (k, &(fp, i)) in bucket.iter().enumerate() {
                shared[i as usize] = bucket.len() > CROWDED
                    || bucket
                        .iter()
                        .enumerate()
                        .any(|(j, &(other, _))| j != k && other == fp);
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
        let get = |b: &Buckets, fp| b.get(fp).collect::<Vec<_>>();
        b.build([].into_iter());
        assert_eq!(get(&b, 7), []);
        // 300 fingerprints in 7 buckets (their low bits).
        let fps: Vec<u32> = (0..1000u32).map(|i| ((i % 300) << 16) | (i % 7)).collect();
        b.build(fps.iter().copied());
        for &fp in &fps {
            let expected: Vec<usize> = (0..fps.len()).filter(|&j| fps[j] == fp).collect();
            assert_eq!(get(&b, fp), expected);
        }
        assert_eq!(
            get(&b, (299 << 16) | 6),
            [],
            "no i < 1000 is 299 mod 300, 6 mod 7"
        );
        let mut shared = Vec::new();
        b.mark_shared(&mut shared);
        assert!(
            shared.iter().all(|&s| s),
            "every fingerprint comes 3 or 4 times"
        );
        b.build([5, 9, 5, 5, 21].into_iter());
        assert_eq!(get(&b, 5), [0, 2, 3]);
        assert_eq!(get(&b, 9), [1]);
        assert_eq!(get(&b, 6), []);
        b.mark_shared(&mut shared);
        assert_eq!(
            shared,
            [true, false, true, true, false],
            "21 shares 5's bucket only"
        );
        b.build((0..40).map(|i| 1 + (i << 8)));
        b.mark_shared(&mut shared);
        assert!(shared.iter().all(|&s| s), "a crowded bucket is all shared");
    }
}
