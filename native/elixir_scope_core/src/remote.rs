//! Remote link targets: events on other nodes, named `{node, id}`.
//!
//! A link of a remote kind ([`LinkKind::is_remote`]) packs its target as
//! `node index << ID_BITS | id`: the index of the node's atom word in one
//! table for the whole VM (atom words are the same in every store), ids
//! below 2^40. The table only grows, by one entry per node ever linked to,
//! and holds at most 2^15 nodes, so a target fits the 56 bits a link has.
//!
//! [`LinkKind::is_remote`]: crate::event::LinkKind::is_remote

use std::sync::RwLock;

pub const ID_BITS: u32 = 40;
const MAX_NODES: usize = 1 << 15;

static NODES: RwLock<Vec<u64>> = RwLock::new(Vec::new());

/// The target naming event `id` on the node whose atom word is `node`;
/// `None` when the id is too large or the node table is full.
pub fn target(node: u64, id: u64) -> Option<u64> {
    if id >> ID_BITS != 0 {
        return None;
    }
    let index = {
        let known = NODES.read().unwrap_or_else(|e| e.into_inner());
        known.iter().position(|&n| n == node)
    };
    let index = match index {
        Some(i) => i,
        None => {
            let mut nodes = NODES.write().unwrap_or_else(|e| e.into_inner());
            match nodes.iter().position(|&n| n == node) {
                Some(i) => i,
                None if nodes.len() < MAX_NODES => {
                    nodes.push(node);
                    nodes.len() - 1
                }
                None => return None,
            }
        }
    };
    Some((index as u64) << ID_BITS | id)
}

/// [`target`] with the last node's index kept: a batch of links to one
/// node reads the node table once.
#[derive(Default)]
pub struct Targets {
    last: Option<(u64, u64)>,
}

impl Targets {
    pub fn target(&mut self, node: u64, id: u64) -> Option<u64> {
        if id >> ID_BITS != 0 {
            return None;
        }
        match self.last {
            Some((n, base)) if n == node => Some(base | id),
            _ => {
                let t = target(node, id)?;
                self.last = Some((node, t & !((1 << ID_BITS) - 1)));
                Some(t)
            }
        }
    }
}

/// The node's atom word and the id a remote target names.
pub fn split(target: u64) -> Option<(u64, u64)> {
    let index = (target >> ID_BITS) as usize;
    let node = *NODES.read().unwrap_or_else(|e| e.into_inner()).get(index)?;
    Some((node, target & ((1 << ID_BITS) - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip_and_refuse_ids_past_40_bits() {
        let a = target(0x1234b, 7).unwrap();
        let b = target(0x5678b, 7).unwrap();
        assert_ne!(a, b);
        assert_eq!(target(0x1234b, 9).unwrap() >> ID_BITS, a >> ID_BITS);
        assert_eq!(split(a), Some((0x1234b, 7)));
        assert_eq!(split(b), Some((0x5678b, 7)));
        assert!(target(0x1234b, 1 << ID_BITS).is_none());
        assert!(a < 1 << 56);
        let mut batch = Targets::default();
        assert_eq!(batch.target(0x5678b, 7), Some(b));
        assert_eq!(batch.target(0x5678b, 9), Some(b - 7 + 9));
        assert_eq!(batch.target(0x1234b, 7), Some(a));
        assert_eq!(batch.target(0x1234b, 1 << ID_BITS), None);
    }
}
