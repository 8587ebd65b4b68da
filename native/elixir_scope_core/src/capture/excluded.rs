//! The processes a trace session never traces (the pipeline's own), as raw
//! pid words, checked on every `enabled/3` call of the session.
//!
//! Layout: the first [`INLINE`] pids live inside the session (read-mostly
//! memory) and are compared branch-free; the rest, if any, in a vector. A
//! separate heap buffer for the common few shared a cache line with other
//! threads' hot data and missed on most calls.
//!
//! Invariant: unused inline entries are 0, which is never a pid word (a
//! term word of 0 does not exist), so they match nothing.

/// Pids kept inline.
pub const INLINE: usize = 16;

pub struct Excluded {
    inline: [u64; INLINE],
    rest: Vec<u64>,
}

impl Excluded {
    pub fn new(pids: impl IntoIterator<Item = u64>) -> Excluded {
        let mut inline = [0; INLINE];
        let mut rest = Vec::new();
        for (i, pid) in pids.into_iter().enumerate() {
            match inline.get_mut(i) {
                Some(slot) => *slot = pid,
                None => rest.push(pid),
            }
        }
        Excluded { inline, rest }
    }

    #[inline]
    pub fn contains(&self, pid: u64) -> bool {
        self.inline.iter().fold(false, |hit, &p| hit | (p == pid))
            || (!self.rest.is_empty() && self.rest.contains(&pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_pid_inline_or_not_and_nothing_else() {
        let pids: Vec<u64> = (1..=40).map(|i| (i << 4) | 3).collect();
        let excluded = Excluded::new(pids.iter().copied());
        assert!(pids.iter().all(|&p| excluded.contains(p)));
        assert!(!excluded.contains((41 << 4) | 3));

        let few = Excluded::new([(7 << 4) | 3]);
        assert!(few.contains((7 << 4) | 3));
        assert!(!few.contains((8 << 4) | 3));
        assert!(!Excluded::new([]).contains((7 << 4) | 3));
    }
}
