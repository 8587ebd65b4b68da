//! Portable: a stored event with its atoms and pids as file-table indices.
//!
//! Saving, [`SaveTables`] numbers each distinct atom and pid word in the
//! order first met and rewrites fields and payloads with the numbers; the
//! caller writes the names of the words it added ([`SaveTables::take_new`])
//! before the events that use them. Loading, [`LoadTables`] holds the words
//! this VM gave to the file's names ([`HOLE`] for a name it could not
//! make) and rewrites back; an index outside the tables or naming a hole
//! (a corrupt file, a lost table frame) refuses the event.

use super::columns::{ColumnsBuilder, Row, RowLinks};
use crate::event::{Correlation, Event, EventKind, EventView, Link, LinkKind, StoredEvent};
use crate::hash::WordMap;
use crate::links::{Links, MAX_TARGET};
use crate::payload::{map_words, tag, Payload};
use crate::remote;

/// A table entry this VM could not make.
pub const HOLE: u64 = u64::MAX;

#[derive(Default)]
pub struct SaveTables {
    atoms: WordMap<u64, u32>,
    pids: WordMap<u64, u32>,
    new_atoms: Vec<u64>,
    new_pids: Vec<u64>,
    data: Vec<u8>,
    peer: Vec<u8>,
}

/// Table number `word` has in `table`, numbering it (and noting it in
/// `new`) when first met.
fn number(table: &mut WordMap<u64, u32>, new: &mut Vec<u64>, word: u64) -> u32 {
    let next = table.len() as u32;
    *table.entry(word).or_insert_with(|| {
        new.push(word);
        next
    })
}

impl SaveTables {
    fn atom(&mut self, word: u64) -> u32 {
        number(&mut self.atoms, &mut self.new_atoms, word)
    }

    /// The pid number of `word` in the file.
    pub fn pid(&mut self, word: u64) -> u32 {
        number(&mut self.pids, &mut self.new_pids, word)
    }

    /// Appends `v` in the file's terms to `b`.
    pub fn push(&mut self, b: &mut ColumnsBuilder, v: &EventView) {
        let field = |t: &mut Self, w: u64| if w == 0 { 0 } else { t.atom(w) + 1 };
        let (module, function, pid) = (
            field(self, v.module),
            field(self, v.function),
            self.pid(v.pid),
        );
        let (mut data, mut peer) = (
            std::mem::take(&mut self.data),
            std::mem::take(&mut self.peer),
        );
        self.payload(v.data, &mut data);
        self.payload(v.peer, &mut peer);
        let row = Row {
            id: v.id,
            timestamp: v.timestamp,
            wall_time: v.wall_time,
            pid,
            module,
            function,
            arity: v.arity,
            kind: v.kind as u8,
            ingest_stamped: v.ingest_stamped,
            correlated: v.correlation_type.is_some(),
            data: &data,
            peer: &peer,
            correlation_id: v.correlation_id,
            parent_id: v.parent_id,
            root_id: v.root_id,
            correlated_at: v.correlated_at,
            confidence: v.confidence,
        };
        let links: Vec<(u8, u64)> = v
            .links
            .iter()
            .filter_map(|l| Some((l.kind as u8, self.link_target(l)?)))
            .collect();
        b.push(&row, links);
        (self.data, self.peer) = (data, peer);
    }

    /// A link's target in the file: an id, or for a link to another node
    /// its node as an atom table index (`index << ID_BITS | id`).
    fn link_target(&mut self, l: Link) -> Option<u64> {
        if !l.kind.is_remote() {
            return Some(l.target);
        }
        let (node, id) = remote::split(l.target)?;
        Some(u64::from(self.atom(node)) << remote::ID_BITS | id)
    }

    fn payload(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let (atoms, pids) = (&mut self.atoms, &mut self.pids);
        let (new_atoms, new_pids) = (&mut self.new_atoms, &mut self.new_pids);
        let mapped = map_words(bytes, out, |t, w| {
            Some(u64::from(if t == tag::ATOM {
                number(atoms, new_atoms, w)
            } else {
                number(pids, new_pids, w)
            }))
        });
        // Payloads come from this crate's encoder; one that cannot be read
        // is saved as no payload rather than as words no VM can read.
        if mapped.is_none() {
            out.clear();
        }
    }

    /// The atom and pid words numbered since the last call, in order.
    pub fn take_new(&mut self) -> (Vec<u64>, Vec<u64>) {
        (
            std::mem::take(&mut self.new_atoms),
            std::mem::take(&mut self.new_pids),
        )
    }
}

#[derive(Default)]
pub struct LoadTables {
    pub atoms: Vec<u64>,
    pub pids: Vec<u64>,
    scratch: Vec<u8>,
}

fn entry(table: &[u64], i: u64) -> Option<u64> {
    table
        .get(usize::try_from(i).ok()?)
        .copied()
        .filter(|&w| w != HOLE)
}

impl LoadTables {
    fn payload(&mut self, bytes: &[u8]) -> Option<Payload> {
        if bytes.is_empty() {
            return Some(Payload::empty());
        }
        let mut out = std::mem::take(&mut self.scratch);
        let mapped = map_words(bytes, &mut out, |t, i| {
            entry(
                if t == tag::ATOM {
                    &self.atoms
                } else {
                    &self.pids
                },
                i,
            )
        })
        .map(|_| Payload::from_bytes(&out));
        self.scratch = out;
        mapped
    }

    fn field(&self, n: u32) -> Option<u64> {
        match n {
            0 => Some(0),
            n => entry(&self.atoms, u64::from(n) - 1),
        }
    }

    /// The event in this VM's terms; `None` when it names a table entry
    /// the file did not give (or a hole), an unknown kind or a link target
    /// out of range.
    pub fn stored(&mut self, r: &Row, links: &RowLinks) -> Option<StoredEvent> {
        let kind = *EventKind::ALL.get(r.kind as usize)?;
        let mut out = Links::default();
        for (k, target) in links.iter() {
            let kind = LinkKind::from_u8(k);
            let target = if kind.is_remote() {
                let node = entry(&self.atoms, target >> remote::ID_BITS)?;
                remote::target(node, target & ((1 << remote::ID_BITS) - 1))?
            } else {
                target
            };
            if target > MAX_TARGET {
                return None;
            }
            out.push(Link { kind, target });
        }
        Some(StoredEvent {
            event: Event {
                id: r.id,
                timestamp: r.timestamp,
                wall_time: r.wall_time,
                pid: entry(&self.pids, u64::from(r.pid))?,
                module: self.field(r.module)?,
                function: self.field(r.function)?,
                arity: r.arity,
                kind,
                ingest_stamped: r.ingest_stamped,
                data: self.payload(r.data)?,
                peer: self.payload(r.peer)?,
                fingerprint: 0,
            },
            correlation: Correlation {
                correlation_id: r.correlation_id,
                parent_id: r.parent_id,
                root_id: r.root_id,
                links: out,
                correlation_type: r.correlated.then_some(kind),
                correlated_at: r.correlated_at,
                confidence: r.confidence,
            },
        })
    }
}

/// The largest span of event ids one load takes: the store's id directory
/// holds 4 bytes per id of span, so 1 GiB at most.
pub const MAX_ID_SPAN: u64 = 1 << 28;

/// The ids a load takes: saved traces list events in ascending id order,
/// so an id not above the last one taken, zero, or more than
/// [`MAX_ID_SPAN`] past the first is refused (a crafted file cannot make
/// the store's directory huge or its ids repeat).
#[derive(Default)]
pub struct IdOrder {
    first: Option<u64>,
    last: u64,
}

impl IdOrder {
    pub fn accepts(&self, id: u64) -> bool {
        let first = self.first.unwrap_or(id);
        id > self.last && id.checked_sub(first).is_some_and(|d| d <= MAX_ID_SPAN)
    }

    /// Notes `id` (one [`accepts`](Self::accepts) allowed) as taken.
    pub fn take(&mut self, id: u64) {
        self.first.get_or_insert(id);
        self.last = id;
    }

    /// The highest id taken (0 if none).
    pub fn last(&self) -> u64 {
        self.last
    }
}
