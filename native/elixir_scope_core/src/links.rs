//! An event's causal links, without an allocation for the common case.
//!
//! Most correlated events have exactly one link (`{:called_from, call}`,
//! `{:completes, call}`, `{:receives, send}`, ...), so one link is kept
//! inline, packed into a word (kind in the top byte, target id below);
//! only events with several links (a first root call both caused by a
//! receive and spawned) box them. The enum is as small as a boxed slice.
//!
//! Invariants: `One` and `Many` never hold a link twice (`push` skips a
//! link already present); `Many` holds at least two links; targets fit in
//! 56 bits (event ids are dense from 1).

use crate::event::{Link, LinkKind};

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Packed(u64);

const TARGET_BITS: u32 = 56;
/// The largest link target a `Links` holds.
pub const MAX_TARGET: u64 = (1 << TARGET_BITS) - 1;

impl Packed {
    /// No link (an invalid kind).
    pub const NONE: Packed = Packed(u64::MAX);

    pub fn new(link: Link) -> Packed {
        debug_assert!(link.target < 1 << TARGET_BITS);
        Packed((link.kind as u64) << TARGET_BITS | link.target)
    }

    pub fn get(self) -> Link {
        Link {
            kind: LinkKind::from_u8((self.0 >> TARGET_BITS) as u8),
            target: self.0 & ((1 << TARGET_BITS) - 1),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Default)]
pub enum Links {
    #[default]
    None,
    One(Packed),
    Many(Box<Vec<Packed>>),
}

impl Links {
    pub fn one(link: Link) -> Links {
        Links::One(Packed::new(link))
    }

    /// Adds `link` unless it is already there.
    pub fn push(&mut self, link: Link) {
        if self.contains(&link) {
            return;
        }
        let packed = Packed::new(link);
        *self = match std::mem::take(self) {
            Links::None => Links::One(packed),
            Links::One(first) => Links::Many(Box::new(vec![first, packed])),
            Links::Many(mut all) => {
                all.push(packed);
                Links::Many(all)
            }
        };
    }

    pub fn contains(&self, link: &Link) -> bool {
        self.iter().any(|l| l == *link)
    }

    pub fn iter(&self) -> impl Iterator<Item = Link> + '_ {
        let packed: &[Packed] = match self {
            Links::None => &[],
            Links::One(one) => std::slice::from_ref(one),
            Links::Many(all) => all,
        };
        packed.iter().map(|p| p.get())
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Links::None)
    }

    /// Heap bytes owned (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Links::Many(all) => {
                std::mem::size_of::<Vec<Packed>>() + all.capacity() * std::mem::size_of::<Packed>()
            }
            _ => 0,
        }
    }
}

/// An event's links as read in place: those its record holds, and the one
/// the store keeps beside it (the link of a message crossing nodes to its
/// other half).
#[derive(Clone, Copy, Debug)]
pub struct LinksView<'a> {
    pub held: &'a Links,
    pub beside: Option<Link>,
}

impl<'a> LinksView<'a> {
    pub fn iter(&self) -> impl Iterator<Item = Link> + 'a {
        self.held.iter().chain(self.beside)
    }

    /// The caller's own copy.
    pub fn to_links(&self) -> Links {
        let mut links = self.held.clone();
        if let Some(link) = self.beside {
            links.push(link);
        }
        links
    }
}

impl<'a> From<&'a Links> for LinksView<'a> {
    fn from(held: &'a Links) -> Self {
        LinksView { held, beside: None }
    }
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<Link> for Links {
    fn from_iter<I: IntoIterator<Item = Link>>(iter: I) -> Links {
        let mut links = Links::None;
        for link in iter {
            links.push(link);
        }
        links
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(kind: LinkKind, target: u64) -> Link {
        Link { kind, target }
    }

    #[test]
    fn one_link_is_inline_more_are_boxed_and_duplicates_are_skipped() {
        assert_eq!(std::mem::size_of::<Links>(), 16);
        let mut links = Links::one(link(LinkKind::CausedBy, (1 << 56) - 1));
        assert_eq!(links.heap_bytes(), 0);
        links.push(link(LinkKind::CausedBy, (1 << 56) - 1));
        assert_eq!(links.len(), 1);
        links.push(link(LinkKind::SpawnedBy, 7));
        assert_eq!(
            links.iter().collect::<Vec<_>>(),
            vec![
                link(LinkKind::CausedBy, (1 << 56) - 1),
                link(LinkKind::SpawnedBy, 7)
            ]
        );
        assert!(links.heap_bytes() > 0);
        for kind in [
            LinkKind::CalledFrom,
            LinkKind::Completes,
            LinkKind::Receives,
            LinkKind::SpawnedBy,
            LinkKind::CausedBy,
        ] {
            assert_eq!(
                Links::one(link(kind, 42)).iter().next(),
                Some(link(kind, 42))
            );
        }
        assert!(Links::default().is_empty() && Links::default().iter().next().is_none());
    }
}
