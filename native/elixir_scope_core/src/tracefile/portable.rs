//! Portable: a stored event with its atoms and pids as file-table indices.
//!
//! Saving, [`SaveTables`] numbers each distinct atom and pid word in the
//! order first met and rewrites fields and payloads with the numbers; the
//! caller writes the names of the words it added ([`SaveTables::take_new`])
//! before the events that use them. Loading, [`LoadTables`] holds the words
//! this VM gave to the file's names and rewrites back; an index outside
//! the tables (a corrupt file) refuses the event.

use super::SavedEvent;
use crate::event::{Correlation, Event, EventKind, Link, LinkKind, StoredEvent};
use crate::hash::WordMap;
use crate::links::Links;
use crate::payload::{map_words, tag, Payload};

#[derive(Default)]
pub struct SaveTables {
    atoms: WordMap<u64, u32>,
    pids: WordMap<u64, u32>,
    new_atoms: Vec<u64>,
    new_pids: Vec<u64>,
}

impl SaveTables {
    fn atom(&mut self, word: u64) -> u32 {
        let next = self.atoms.len() as u32;
        *self.atoms.entry(word).or_insert_with(|| {
            self.new_atoms.push(word);
            next
        })
    }

    fn pid(&mut self, word: u64) -> u32 {
        let next = self.pids.len() as u32;
        *self.pids.entry(word).or_insert_with(|| {
            self.new_pids.push(word);
            next
        })
    }

    fn payload(&mut self, bytes: &[u8]) -> Vec<u8> {
        map_words(bytes, |t, w| {
            Some(u64::from(if t == tag::ATOM {
                self.atom(w)
            } else {
                self.pid(w)
            }))
        })
        // Payloads come from this crate's encoder; one that cannot be read
        // is saved as no payload rather than as words no VM can read.
        .unwrap_or_default()
    }

    /// The event in the file's terms.
    pub fn saved(&mut self, s: &StoredEvent) -> SavedEvent {
        let (e, c) = (&s.event, &s.correlation);
        let field = |t: &mut Self, w: u64| if w == 0 { 0 } else { t.atom(w) + 1 };
        SavedEvent {
            id: e.id,
            timestamp: e.timestamp,
            wall_time: e.wall_time,
            pid: self.pid(e.pid),
            module: field(self, e.module),
            function: field(self, e.function),
            arity: e.arity,
            kind: e.kind as u8,
            ingest_stamped: e.ingest_stamped,
            correlated: c.correlation_type.is_some(),
            data: self.payload(e.data.as_bytes()),
            peer: self.payload(e.peer.as_bytes()),
            correlation_id: c.correlation_id,
            parent_id: c.parent_id,
            root_id: c.root_id,
            links: c.links.iter().map(|l| (l.kind as u8, l.target)).collect(),
            correlated_at: c.correlated_at,
            confidence: c.confidence,
        }
    }

    /// The pid number of `word` in the file.
    pub fn pid_index(&mut self, word: u64) -> u32 {
        self.pid(word)
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
}

impl LoadTables {
    fn payload(&self, bytes: &[u8]) -> Option<Payload> {
        if bytes.is_empty() {
            return Some(Payload::empty());
        }
        let words = map_words(bytes, |t, i| {
            let table = if t == tag::ATOM {
                &self.atoms
            } else {
                &self.pids
            };
            table.get(usize::try_from(i).ok()?).copied()
        })?;
        Some(Payload::from_bytes(&words))
    }

    fn field(&self, n: u32) -> Option<u64> {
        match n {
            0 => Some(0),
            n => self.atoms.get(n as usize - 1).copied(),
        }
    }

    /// The event in this VM's terms; `None` when it names a table entry
    /// the file did not give, or an unknown kind.
    pub fn stored(&self, e: SavedEvent) -> Option<StoredEvent> {
        let kind = *EventKind::ALL.get(e.kind as usize)?;
        let links: Links = e
            .links
            .iter()
            .map(|&(k, target)| Link {
                kind: LinkKind::from_u8(k),
                target,
            })
            .collect();
        Some(StoredEvent {
            event: Event {
                id: e.id,
                timestamp: e.timestamp,
                wall_time: e.wall_time,
                pid: *self.pids.get(e.pid as usize)?,
                module: self.field(e.module)?,
                function: self.field(e.function)?,
                arity: e.arity,
                kind,
                ingest_stamped: e.ingest_stamped,
                data: self.payload(&e.data)?,
                peer: self.payload(&e.peer)?,
            },
            correlation: Correlation {
                correlation_id: e.correlation_id,
                parent_id: e.parent_id,
                root_id: e.root_id,
                links,
                correlation_type: e.correlated.then_some(kind),
                correlated_at: e.correlated_at,
                confidence: e.confidence,
            },
        })
    }
}
